//! Device payload codecs: FRMPayload bytes -> Microshare-style readings.
//!
//! A codec is chosen per device in the config (never guessed from the payload shape, see
//! reference/codecs.md: several formats collide). Decoding is pure and synchronous.

mod browan;
mod cayenne;

use std::fmt;

/// One measured value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Int(i64),
    Bool(bool),
}

/// One `{value, unit, context_id}` entry under a Microshare field name.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Microshare field name: `temperature`, `humidity`, `presence`, ...
    pub field: &'static str,
    pub value: Value,
    /// Microshare unit string (`°C`, `%RH`, `ppm`, `V`, `%`...); `None` for booleans and counts.
    pub unit: Option<&'static str>,
    /// Channel of multi-channel formats (Cayenne LPP: the channel number as a string).
    pub context_id: Option<u8>,
}

impl Reading {
    pub fn new(field: &'static str, value: Value, unit: Option<&'static str>) -> Self {
        Reading {
            field,
            value,
            unit,
            context_id: None,
        }
    }
}

/// What a codec made of one payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// Full recType, e.g. `io.microshare.environment.unpacked`.
    pub rec_type: &'static str,
    /// Sensor readings, placed directly under `data`.
    pub readings: Vec<Reading>,
    /// Device-domain values (battery voltage/charge, board temperature) under `data.device_health`.
    pub health: Vec<Reading>,
}

/// Why a payload could not be decoded. Display is one line naming what was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("payload too short: {codec} needs {need} bytes, got {got}")]
    Truncated {
        codec: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{codec} does not decode fPort {fport}")]
    WrongPort { codec: &'static str, fport: u8 },
    #[error("{codec}: unknown type 0x{byte:02x} at offset {offset}")]
    UnknownType {
        codec: &'static str,
        offset: usize,
        byte: u8,
    },
    #[error("{codec}: {what} at offset {offset}")]
    Invalid {
        codec: &'static str,
        offset: usize,
        what: &'static str,
    },
    #[error("empty payload")]
    Empty,
}

/// Every codec hubgate knows. Ids are the contract of DESIGN §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    BrowanTbhh100,
    BrowanTbhv110,
    BrowanTbms100,
    BrowanTbdw100,
    BrowanTbwl100,
    CayenneLpp,
}

impl Codec {
    pub const ALL: &'static [Codec] = &[
        Codec::BrowanTbhh100,
        Codec::BrowanTbhv110,
        Codec::BrowanTbms100,
        Codec::BrowanTbdw100,
        Codec::BrowanTbwl100,
        Codec::CayenneLpp,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Codec::BrowanTbhh100 => "browan-tbhh100",
            Codec::BrowanTbhv110 => "browan-tbhv110",
            Codec::BrowanTbms100 => "browan-tbms100",
            Codec::BrowanTbdw100 => "browan-tbdw100",
            Codec::BrowanTbwl100 => "browan-tbwl100",
            Codec::CayenneLpp => "cayenne-lpp",
        }
    }

    pub fn from_id(id: &str) -> Option<Codec> {
        Codec::ALL.iter().copied().find(|c| c.id() == id)
    }

    /// The recType this codec's records are published under.
    pub fn rec_type(self) -> &'static str {
        match self {
            Codec::BrowanTbhh100 | Codec::BrowanTbhv110 => rec_type::ENVIRONMENT,
            Codec::BrowanTbms100 => rec_type::MOTION,
            Codec::BrowanTbdw100 => rec_type::OPENCLOSE,
            Codec::BrowanTbwl100 => rec_type::LEAK,
            Codec::CayenneLpp => rec_type::ENVIRONMENT,
        }
    }

    /// Decode one application payload. `fport` is `None` when the transport did not say.
    pub fn decode(self, fport: Option<u8>, payload: &[u8]) -> Result<Decoded, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::Empty);
        }
        match self {
            Codec::BrowanTbhh100 => browan::tbhh100(fport, payload),
            Codec::BrowanTbhv110 => browan::tbhv110(fport, payload),
            Codec::BrowanTbms100 => browan::tbms100(fport, payload),
            Codec::BrowanTbdw100 => browan::tbdw100(fport, payload),
            Codec::BrowanTbwl100 => browan::tbwl100(fport, payload),
            Codec::CayenneLpp => cayenne::decode(payload),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Microshare recTypes hubgate emits.
pub mod rec_type {
    pub const ENVIRONMENT: &str = "io.microshare.environment.unpacked";
    pub const MOTION: &str = "io.microshare.motion.unpacked";
    pub const OPENCLOSE: &str = "io.microshare.openclose.unpacked";
    pub const LEAK: &str = "io.microshare.leak.unpacked";
    pub const FEEDBACK: &str = "io.microshare.feedback.unpacked";
    /// Gateway status reports (GWMP `stat`).
    pub const GATEWAY: &str = "io.microshare.gateway.unpacked";
    /// Default recType of frames hubgate cannot decode (raw hex payload).
    pub const PACKED: &str = "io.microshare.lorawan.packed";
}
