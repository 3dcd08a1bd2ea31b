//! Vendor JavaScript codecs, run in QuickJS in a worker process of their own (docs/codecs.md,
//! "JavaScript codecs").
//!
//! QuickJS cannot be made safe inside the agent: its interrupt handler is checked between
//! bytecodes and only in some C builtins, so others on a huge input
//! (`Array.prototype.reverse.call({length: 2**53-1})`) never return, and its C asserts can
//! abort the whole process. So the codecs run in `hubgate js-worker` ([`worker`]), the agent's
//! own binary started again, which talks to the agent over a socket ([`wire`]). The agent
//! ([`supervisor`]) gives every call a hard deadline, kills and replaces a worker that misses
//! it, dies or answers garbage; the decode stage quarantines a device or a codec that keeps
//! doing that and bounds the time a round of the forwarder spends in calls ([`guard`]). Inside
//! the worker each codec has a QuickJS runtime of its own ([`engine`]), kept across calls, with
//! a memory limit, a stack limit, a time limit per call, no module loader and no I/O; each call
//! runs the codec afresh in a context of its own, so no call sees what another left.
//!
//! The three forms vendors ship are recognised by the function the script defines:
//! `decodeUplink(input)` (The Things Network's Device Repository and ChirpStack v4; an
//! optional `normalizeUplink` is run on its data), `Decode(fPort, bytes, variables)`
//! (ChirpStack v3) and `Decoder(bytes, fPort)` (TTN v2).

pub mod dir;
// Without the `js` feature (ARMv6: rquickjs has no prebuilt bindings there) every codec
// fails to load with `JsError::NotBuilt`.
#[cfg_attr(not(feature = "js"), path = "engine_off.rs")]
mod engine;
pub mod guard;
mod output;
mod relay;
mod seccomp;
mod supervisor;
mod wire;
pub mod worker;

pub use supervisor::{JsCodec, Launcher, Worker};

use std::time::Duration;

use serde_json::{Map, Value as Json};

/// Heap of one codec's runtime: a codec decoding a frame needs a few hundred KB at most.
pub const MEMORY_LIMIT: usize = 16 << 20;
/// Memory of the whole worker process (RLIMIT_DATA: heap and private writable mappings),
/// every codec's runtime included. Measured with rquickjs 0.14 and a context per call (VmData,
/// docs/codecs.md): 0.6 MiB with the three example codecs loaded, 5.1 MiB with 100 (47 KiB
/// each: a runtime and its bytecode; a call's context is freed with the call), and a runtime
/// grown to its limit in a call adds up to 16.2 MiB (28 MiB fragmenting the heap on purpose).
/// Only the runtime in a call grows, so 64 MiB holds a runaway, which ends its worker at its
/// first refused allocation, beside hundreds of codecs: its own limit stops it, not the
/// worker's, which would refuse whichever codec allocates next. Two workers (one a reload's,
/// waiting for the next input) and the agent's worst case fit the unit's MemoryMax; past it,
/// the kernel ends a worker first.
pub const WORKER_MEMORY: u64 = 64 << 20;
/// Native stack a script may use (recursion), well inside the worker's.
pub const STACK_LIMIT: usize = 256 << 10;
/// CPU time one call may take, the codec's top level included; a decode normally takes tens
/// of microseconds.
pub const TIME_LIMIT: Duration = Duration::from_millis(100);
/// CPU time loading a codec (compiling it and running its top-level code once) may take: a
/// large vendor file on a slow gateway takes far longer than a call.
pub const LOAD_LIMIT: Duration = Duration::from_secs(2);
/// CPU time a codec's top level may take when it is loaded: every call runs it again, within
/// the call's [`TIME_LIMIT`], so one that takes longer is refused at load rather than loaded
/// to time out on every call (a strike each, every uplink packed). Half the call's limit: the
/// other half is the function's, the call's fresh context's and the run-to-run spread of CPU
/// time (the load's run is the first; a busy machine's shared caches and a slower clock make
/// the same code take longer). A vendor codec's top level (functions, lookup tables) takes
/// well under a millisecond.
pub const TOP_LEVEL_LIMIT: Duration = Duration::from_millis(50);
/// Longest JSON a call may return (a frame holds at most 242 bytes).
pub const OUTPUT_LIMIT: usize = 64 << 10;
/// Longest payload a codec is called with: a LoRaWAN FRMPayload has at most 242 bytes and a
/// serial frame 2 KiB. Only an MQTT message with `max_message` raised carries more; past the
/// worker's request limit (about 1 MiB) such a call took the worker down, and its retry the
/// next one, as a strike.
pub const PAYLOAD_LIMIT: usize = 64 << 10;

/// Why a codec could not be loaded or could not decode a payload. One line.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum JsError {
    #[error("does not define decodeUplink, Decode or Decoder")]
    NoEntryPoint,
    #[error("threw {0}")]
    Threw(String),
    /// The time limit (QuickJS's interrupt) stopped the script after this many ms.
    #[error("ran longer than {0} ms of CPU time")]
    TimedOut(u64),
    /// Loading: its top level took this many µs of CPU time, more than [`TOP_LEVEL_LIMIT`].
    #[error(
        "its top level took {:.1} ms of CPU time: every call runs it again, and it may take \
         at most {} ms of a call's {} ms",
        *.0 as f64 / 1000.0,
        TOP_LEVEL_LIMIT.as_millis(),
        TIME_LIMIT.as_millis()
    )]
    SlowTopLevel(u64),
    #[error("needed more than {} MiB", MEMORY_LIMIT >> 20)]
    OutOfMemory,
    /// The worker's memory for all codecs ([`WORKER_MEMORY`]) refused an allocation, not the
    /// codec's own limit: the supervisor tries once more in a new worker, which holds only
    /// this codec at first, and only a refusal there is the codec's ([`JsError::OutOfMemory`]).
    #[error("its worker's memory for all codecs ({} MiB) was full", WORKER_MEMORY >> 20)]
    WorkerFull,
    #[error("returned {0}")]
    Junk(String),
    #[error("reported errors: {0}")]
    Reported(String),
    /// Not called: the payload has this many bytes, more than [`PAYLOAD_LIMIT`].
    #[error("not called: a payload of {0} bytes, more than the {PAYLOAD_LIMIT} a codec is given")]
    TooLong(usize),
    #[error("engine: {0}")]
    Engine(String),
    /// The worker did not answer in time (a builtin that never checks the time limit): it
    /// was killed.
    #[error("did not answer within {0} ms: its worker was killed")]
    Hung(u64),
    /// The worker died or answered garbage during the call.
    #[error("its worker died: {0}")]
    Crashed(String),
    /// [`guard`]: not called for any device.
    #[error(
        "quarantined for another {0} s after {n} calls within {w} s timed out, ran out of \
         memory, failed in the engine or took the worker down",
        n = guard::CODEC_STRIKES,
        w = guard::WINDOW.as_secs()
    )]
    Quarantined(u64),
    /// [`guard`]: not called for this device.
    #[error(
        "quarantined for this device for another {0} s after {n} of its calls timed out, ran out \
         of memory, failed in the engine or took the worker down (only a success {w} s or more \
         after the last of them forgets them)",
        n = guard::STRIKES,
        w = guard::WINDOW.as_secs()
    )]
    DeviceQuarantined(u64),
    /// [`guard`]: not called because this round's calls took this many ms. Only at a stop:
    /// the forwarder ends a round whose budget is spent.
    #[error("not called: this round's JavaScript calls took its budget ({0} ms)")]
    OverBudget(u64),
    #[error("cannot run: this hubgate was built without JavaScript (cargo feature js)")]
    NotBuilt,
}

impl JsError {
    /// The problem counter of this failure (`hubgate_problems_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            JsError::TimedOut(_) | JsError::Hung(_) => "js_timeout",
            JsError::OutOfMemory | JsError::WorkerFull => "js_oom",
            JsError::Crashed(_) => "js_crashed",
            JsError::Quarantined(_) | JsError::DeviceQuarantined(_) => "js_quarantined",
            JsError::OverBudget(_) => "js_budget",
            _ => "js_error",
        }
    }

    /// A failure after which the codec's runtime may be left half-way (an interrupted script,
    /// an engine failure) or may hold what QuickJS asserts on when it is freed (it ran out of
    /// memory): the worker answers it, then exits without freeing anything.
    pub fn retires(&self) -> bool {
        matches!(
            self,
            JsError::TimedOut(_) | JsError::OutOfMemory | JsError::WorkerFull | JsError::Engine(_)
        )
    }

    /// A failure that costs the gateway real time or a worker, so that a codec doing it on
    /// every frame is quarantined. An engine failure ends its worker as a timeout does
    /// ([`retires`](JsError::retires)): a payload that keeps causing one costs a new worker
    /// and the loading of every codec into it each time.
    fn strikes(&self) -> bool {
        matches!(
            self,
            JsError::TimedOut(_)
                | JsError::Hung(_)
                | JsError::OutOfMemory
                | JsError::Crashed(_)
                | JsError::Engine(_)
        )
    }
}

/// What a codec made of one payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    /// The codec's own fields (`data`).
    pub data: Map<String, Json>,
    /// `normalizeUplink`'s measurements, when the codec has one.
    pub normalized: Vec<Map<String, Json>>,
    pub warnings: Vec<String>,
    /// The call ran out of memory, caught it and returned: its result stands, but its runtime
    /// is in doubt and its worker ended (a new one loads every codec again), so it strikes
    /// as running out of memory does (`js_oom`) without being a success.
    pub retired: bool,
}

/// At most 200 characters on one line (a script's message is the outside world's text). It
/// goes into a record's `error` field, not a log line: escapes there would reach Microshare
/// as backslashes, so control characters become spaces; a log line quoting it cleans it
/// again ([`crate::logline::clean`]).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

#[cfg(all(test, feature = "js"))]
mod tests;
