//! LoRaWAN 1.0.x frames, for when hubgate hears raw PHYPayloads (serial, UDP packet forwarder,
//! raw MQTT) and holds the session keys itself.
//!
//! * [`parse`] — structure only, no keys: MType, DevAddr, FCtrl, FCnt16, FOpts, FPort,
//!   FRMPayload, MIC; join request fields; join accept / proprietary / RFU identified.
//! * [`crypto`] — MIC check and FRMPayload decryption (the `lorawan` crate does the AES/CMAC
//!   and block layout; docs/codecs.md, "LoRaWAN 1.0.x frames", has it and a worked example).
//! * [`fcnt`] — 32-bit frame counter reconstruction and replay rejection.
//! * [`Decoder`] — the sessions of the configured devices: frame in, [`Uplink`](crate::uplink::Uplink) out.
//!
//! Nothing here panics on any input; every failure is a [`LorawanError`] with a one-line
//! message. Keys never reach `Debug` output or error messages.

pub mod crypto;
mod decoder;
pub mod fcnt;
pub mod frame;

use std::fmt;

use crate::ids::DevEui;

#[cfg(test)]
pub use decoder::accepted;
pub use decoder::{Accepted, Counters, Decoder, Session};
pub use fcnt::{FcntTracker, BLOCKS_AHEAD};
pub use frame::{parse, DataFrame, Direction, Frame, JoinRequest, MType};

/// What was wrong with a frame, or why it was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LorawanError {
    #[error("empty frame")]
    Empty,
    #[error("frame too long: {len} bytes, a LoRa PHYPayload has at most 255")]
    TooLong { len: usize },
    #[error("{mtype} frame too short: {len} bytes, need at least {need}")]
    TooShort {
        mtype: MType,
        len: usize,
        need: usize,
    },
    #[error("{mtype} frame has {len} bytes, expected {expected}")]
    BadLength {
        mtype: MType,
        len: usize,
        expected: &'static str,
    },
    #[error("bad FOptsLen {fopts_len}: FHDR and MIC do not fit in a {len}-byte frame")]
    BadFOptsLen { fopts_len: usize, len: usize },
    #[error("unsupported LoRaWAN major version {0} (only 0, LoRaWAN R1, is known)")]
    UnsupportedMajor(u8),
    #[error("{0} frame is not a data uplink")]
    NotUplink(MType),
    #[error("no session for DevAddr {0}")]
    UnknownDevAddr(DevAddr),
    #[error("MIC check failed for DevAddr {dev_addr} (FCnt {fcnt16} on air): wrong NwkSKey, counter out of range (a device first heard past 2^20 frames needs fcnt_from), or a damaged frame")]
    MicMismatch { dev_addr: DevAddr, fcnt16: u16 },
    #[error("replayed or old FCnt {fcnt} from DevAddr {dev_addr} (last accepted {last})")]
    Replay {
        dev_addr: DevAddr,
        fcnt: u32,
        last: u32,
    },
    #[error("FCnt {fcnt} from DevAddr {dev_addr} (DevEUI {dev_eui}) after {last}: the device very likely restarted its frame counter")]
    FcntReset {
        dev_addr: DevAddr,
        dev_eui: DevEui,
        fcnt: u32,
        last: u32,
    },
}

/// A device address, shown as usually written: big-endian lower-case hex (`26011bda`); it is
/// sent little-endian on air.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevAddr(pub u32);

impl DevAddr {
    /// 8 hex digits, big-endian (`"26011BDA"`).
    pub fn parse(s: &str) -> Result<DevAddr, String> {
        let mut b = [0u8; 4];
        hex::decode_to_slice(s.trim(), &mut b)
            .map_err(|_| format!("bad DevAddr {s:?}: expected 8 hex digits"))?;
        Ok(DevAddr(u32::from_be_bytes(b)))
    }
}

impl fmt::Display for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevAddr({:08x})", self.0)
    }
}

/// An AES-128 session key. `Debug` is masked and errors never quote the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub(crate) [u8; 16]);

/// Why a key string was refused (never contains the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected 32 hex digits (16 bytes), got {0} characters")]
    Length(usize),
    #[error("expected 32 hex digits (16 bytes), found a non-hex character")]
    NotHex,
}

impl Key {
    pub fn new(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    /// 32 hex digits, as LNS consoles show keys (most significant byte first); `:` or spaces
    /// between bytes are allowed.
    pub fn from_hex(s: &str) -> Result<Key, KeyError> {
        let clean: String = s
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        if !clean.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(KeyError::NotHex);
        }
        if clean.len() != 32 {
            return Err(KeyError::Length(clean.chars().count()));
        }
        let mut b = [0u8; 16];
        hex::decode_to_slice(&clean, &mut b).map_err(|_| KeyError::NotHex)?;
        Ok(Key(b))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

/// The two ABP/OTAA session keys of a LoRaWAN 1.0.x device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub nwk_s_key: Key,
    pub app_s_key: Key,
}

impl SessionKeys {
    /// Four bytes that change with the keys (of a SHA-256 over both; the keys cannot be
    /// told from them): a frame counter is kept with them, so new keys under the same
    /// DevAddr (a device provisioned again) do not go on from the old session's counter.
    pub fn print(&self) -> [u8; 4] {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"hubgate session keys");
        hash.update(self.nwk_s_key.0);
        hash.update(self.app_s_key.0);
        let digest = hash.finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    }
}

/// Also builds frames for the decode stage's tests.
#[cfg(test)]
pub(crate) mod tests;
