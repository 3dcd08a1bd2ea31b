//! Vendor JavaScript codecs, run sandboxed in QuickJS (docs/codecs.md, "JavaScript codecs").
//!
//! Each codec gets a QuickJS runtime of its own, kept and reused across calls: a memory
//! limit, a stack limit and a time limit per call (QuickJS's interrupt handler), no module
//! loader and no I/O (the engine has none without quickjs-libc, which is not built in).
//! Whatever the script does — throw, loop, exhaust its memory, return junk — the call returns
//! an error naming it; the uplink then goes out packed with that reason.
//!
//! The three forms vendors ship are recognised by the function the script defines:
//! `decodeUplink(input)` (The Things Network's Device Repository and ChirpStack v4; an
//! optional `normalizeUplink` is run on its data), `Decode(fPort, bytes, variables)`
//! (ChirpStack v3) and `Decoder(bytes, fPort)` (TTN v2).

pub mod dir;
// Without the `js` feature (32-bit ARM: QuickJS has no prebuilt bindings there) every codec
// fails to load with `JsError::NotBuilt`.
#[cfg_attr(not(feature = "js"), path = "engine_off.rs")]
mod engine;

pub use engine::*;

use std::time::Duration;

use serde_json::{Map, Value as Json};

/// Heap of one codec's runtime: a codec decoding a frame needs a few hundred KB at most.
pub const MEMORY_LIMIT: usize = 16 << 20;
/// Native stack a script may use (recursion), well inside the forwarder thread's.
pub const STACK_LIMIT: usize = 256 << 10;
/// CPU time one call may take; a decode normally takes tens of microseconds.
pub const TIME_LIMIT: Duration = Duration::from_millis(100);
/// Longest JSON a call may return (a frame holds at most 242 bytes).
pub const OUTPUT_LIMIT: usize = 64 << 10;

/// Why a codec could not be loaded or could not decode a payload. One line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JsError {
    #[error("does not define decodeUplink, Decode or Decoder")]
    NoEntryPoint,
    #[error("threw {0}")]
    Threw(String),
    #[error("ran longer than {} ms of CPU time", TIME_LIMIT.as_millis())]
    TimedOut,
    #[error("needed more than {} MiB", MEMORY_LIMIT >> 20)]
    OutOfMemory,
    #[error("returned {0}")]
    Junk(String),
    #[error("reported errors: {0}")]
    Reported(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("cannot run: this hubgate was built without JavaScript (cargo feature js)")]
    NotBuilt,
}

/// What a codec made of one payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    /// The codec's own fields (`data`).
    pub data: Map<String, Json>,
    /// `normalizeUplink`'s measurements, when the codec has one.
    pub normalized: Vec<Map<String, Json>>,
    pub warnings: Vec<String>,
}

#[cfg(all(test, feature = "js"))]
mod tests;
