//! Device payload codecs: FRMPayload bytes -> Microshare-style readings.
//!
//! A codec is chosen per device in the config (never guessed from the payload shape, see
//! docs/codecs.md: several formats collide). Decoding is pure and synchronous.

mod browan;
mod bytes;
mod cayenne;
mod dragino;
mod elsys;
mod milesight;
mod netvox;
mod smilio;

pub use elsys::Model as ElsysModel;
pub use milesight::Model as MilesightModel;
pub use netvox::Model as NetvoxModel;

use bytes::Bytes;
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
    /// When the value was measured (unix seconds), for values that are not from "now":
    /// Milesight history records, Dragino LHT65 datalog (ext type 9). `None` = the uplink time.
    pub time: Option<u64>,
}

impl Reading {
    pub fn new(field: &'static str, value: Value, unit: Option<&'static str>) -> Self {
        Reading {
            field,
            value,
            unit,
            context_id: None,
            time: None,
        }
    }

    /// Float value with a unit.
    pub fn num(field: &'static str, v: f64, unit: &'static str) -> Self {
        Reading::new(field, Value::Num(v), Some(unit))
    }

    /// Integer value, optionally with a unit (counts have none).
    pub fn int(field: &'static str, v: i64, unit: Option<&'static str>) -> Self {
        Reading::new(field, Value::Int(v), unit)
    }

    /// Boolean value (never has a unit).
    pub fn flag(field: &'static str, v: bool) -> Self {
        Reading::new(field, Value::Bool(v), None)
    }

    /// The same reading on channel `c`.
    pub fn ctx(mut self, c: u8) -> Self {
        self.context_id = Some(c);
        self
    }

    /// The same reading measured at `t` (unix seconds).
    pub fn at(mut self, t: u64) -> Self {
        self.time = Some(t);
        self
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

/// Every codec hubgate knows. Ids are part of the command-line contract (docs/design.md).
///
/// Vendor formats shared by several models (Elsys, Milesight, Netvox R718) carry the model:
/// the model decides the recType and the meaning of ambiguous channels, and every model
/// has its own id (an alias of the family format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    BrowanTbhh100,
    BrowanTbhv110,
    BrowanTbms100,
    BrowanTbdw100,
    BrowanTbwl100,
    BrowanTbam100,
    BrowanTbsl100,
    BrowanTbpb100,
    BrowanTbol100,
    CayenneLpp,
    Elsys(ElsysModel),
    Milesight(MilesightModel),
    DraginoLht65,
    DraginoLht65n,
    NetvoxR718(NetvoxModel),
    SkiplySmilioAction,
}

impl Codec {
    pub const ALL: &'static [Codec] = &[
        Codec::BrowanTbhh100,
        Codec::BrowanTbhv110,
        Codec::BrowanTbms100,
        Codec::BrowanTbdw100,
        Codec::BrowanTbwl100,
        Codec::BrowanTbam100,
        Codec::BrowanTbsl100,
        Codec::BrowanTbpb100,
        Codec::BrowanTbol100,
        Codec::CayenneLpp,
        Codec::Elsys(ElsysModel::Generic),
        Codec::Elsys(ElsysModel::Ers),
        Codec::Elsys(ElsysModel::ErsCo2),
        Codec::Elsys(ElsysModel::ErsVoc),
        Codec::Elsys(ElsysModel::ErsLite),
        Codec::Elsys(ElsysModel::ErsSound),
        Codec::Elsys(ElsysModel::ErsEye),
        Codec::Elsys(ElsysModel::ErsDesk),
        Codec::Elsys(ElsysModel::EmsDesk),
        Codec::Elsys(ElsysModel::Ems),
        Codec::Elsys(ElsysModel::EmsDoor),
        Codec::Elsys(ElsysModel::EmsLeak),
        Codec::Elsys(ElsysModel::Elt),
        Codec::Milesight(MilesightModel::Generic),
        Codec::Milesight(MilesightModel::Em300Th),
        Codec::Milesight(MilesightModel::Em300Mcs),
        Codec::Milesight(MilesightModel::Em300Sld),
        Codec::Milesight(MilesightModel::Em300Zld),
        Codec::Milesight(MilesightModel::Am102),
        Codec::Milesight(MilesightModel::Am307),
        Codec::Milesight(MilesightModel::Am308),
        Codec::Milesight(MilesightModel::Am319),
        Codec::Milesight(MilesightModel::Ws101),
        Codec::Milesight(MilesightModel::Ws202),
        Codec::Milesight(MilesightModel::Ws303),
        Codec::DraginoLht65,
        Codec::DraginoLht65n,
        Codec::NetvoxR718(NetvoxModel::Family),
        Codec::NetvoxR718(NetvoxModel::R718a),
        Codec::NetvoxR718(NetvoxModel::R718ab),
        Codec::NetvoxR718(NetvoxModel::R718f),
        Codec::NetvoxR718(NetvoxModel::R718wa),
        Codec::SkiplySmilioAction,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Codec::BrowanTbhh100 => "browan-tbhh100",
            Codec::BrowanTbhv110 => "browan-tbhv110",
            Codec::BrowanTbms100 => "browan-tbms100",
            Codec::BrowanTbdw100 => "browan-tbdw100",
            Codec::BrowanTbwl100 => "browan-tbwl100",
            Codec::BrowanTbam100 => "browan-tbam100",
            Codec::BrowanTbsl100 => "browan-tbsl100",
            Codec::BrowanTbpb100 => "browan-tbpb100",
            Codec::BrowanTbol100 => "browan-tbol100",
            Codec::CayenneLpp => "cayenne-lpp",
            Codec::Elsys(m) => m.id(),
            Codec::Milesight(m) => m.id(),
            Codec::DraginoLht65 => "dragino-lht65",
            Codec::DraginoLht65n => "dragino-lht65n",
            Codec::NetvoxR718(m) => m.id(),
            Codec::SkiplySmilioAction => "skiply-smilio-action",
        }
    }

    pub fn from_id(id: &str) -> Option<Codec> {
        Codec::ALL.iter().copied().find(|c| c.id() == id)
    }

    /// The recType this codec's records are published under.
    ///
    /// `netvox-r718` (the family id) decides per frame from the device-type byte; this is
    /// its most common recType (R718A/AB, environment). Every other codec always returns
    /// exactly this recType.
    pub fn rec_type(self) -> &'static str {
        match self {
            Codec::BrowanTbhh100 | Codec::BrowanTbhv110 => rec_type::ENVIRONMENT,
            Codec::BrowanTbms100 => rec_type::MOTION,
            Codec::BrowanTbdw100 => rec_type::OPENCLOSE,
            Codec::BrowanTbwl100 => rec_type::LEAK,
            Codec::BrowanTbam100 => rec_type::LIGHT,
            Codec::BrowanTbsl100 => rec_type::SOUND,
            Codec::BrowanTbpb100 => rec_type::FEEDBACK,
            Codec::BrowanTbol100 => rec_type::GPS,
            Codec::CayenneLpp => rec_type::ENVIRONMENT,
            Codec::Elsys(m) => m.rec_type(),
            Codec::Milesight(m) => m.rec_type(),
            Codec::DraginoLht65 | Codec::DraginoLht65n => rec_type::ENVIRONMENT,
            Codec::NetvoxR718(m) => m.rec_type(),
            Codec::SkiplySmilioAction => rec_type::FEEDBACK,
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
            Codec::BrowanTbam100 => browan::tbam100(fport, payload),
            Codec::BrowanTbsl100 => browan::tbsl100(fport, payload),
            Codec::BrowanTbpb100 => browan::tbpb100(fport, payload),
            Codec::BrowanTbol100 => browan::tbol100(fport, payload),
            Codec::CayenneLpp => cayenne::decode(payload),
            Codec::Elsys(m) => elsys::decode(m, payload),
            Codec::Milesight(m) => milesight::decode(m, payload),
            Codec::DraginoLht65 => dragino::decode("dragino-lht65", fport, payload),
            Codec::DraginoLht65n => dragino::decode("dragino-lht65n", fport, payload),
            Codec::NetvoxR718(m) => netvox::decode(m, fport, payload),
            Codec::SkiplySmilioAction => smilio::decode(fport, payload),
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
    pub const OCCUPANCY: &str = "io.microshare.occupancy.unpacked";
    pub const LIGHT: &str = "io.microshare.light.unpacked";
    pub const SOUND: &str = "io.microshare.sound.unpacked";
    pub const GPS: &str = "io.microshare.gps.unpacked";
    /// Default recType of frames hubgate cannot decode (raw hex payload).
    pub const PACKED: &str = "io.microshare.lorawan.packed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &c in Codec::ALL {
            assert!(seen.insert(c.id()), "duplicate id {}", c.id());
            assert_eq!(Codec::from_id(c.id()), Some(c));
            assert_eq!(c.to_string(), c.id());
            assert!(c.rec_type().starts_with("io.microshare."));
        }
        for id in [
            "browan-tbam100",
            "browan-tbsl100",
            "browan-tbpb100",
            "browan-tbol100",
            "elsys",
            "elsys-ers",
            "elsys-ers-co2",
            "elsys-ers-sound",
            "elsys-ers-eye",
            "elsys-ems-door",
            "milesight",
            "milesight-em300-th",
            "milesight-em300-mcs",
            "milesight-em300-sld",
            "milesight-em300-zld",
            "milesight-am102",
            "milesight-am307",
            "milesight-am308",
            "milesight-am319",
            "milesight-ws101",
            "milesight-ws202",
            "milesight-ws303",
            "dragino-lht65",
            "dragino-lht65n",
            "netvox-r718",
            "netvox-r718a",
            "netvox-r718ab",
            "netvox-r718f",
            "netvox-r718wa",
            "skiply-smilio-action",
        ] {
            assert!(Codec::from_id(id).is_some(), "{id}");
        }
        assert_eq!(Codec::from_id("elsys-nope"), None);
    }

    #[test]
    fn rec_types_per_model() {
        let rt = |id: &str| Codec::from_id(id).unwrap().rec_type();
        assert_eq!(rt("browan-tbam100"), rec_type::LIGHT);
        assert_eq!(rt("browan-tbsl100"), rec_type::SOUND);
        assert_eq!(rt("browan-tbpb100"), rec_type::FEEDBACK);
        assert_eq!(rt("browan-tbol100"), rec_type::GPS);
        assert_eq!(rt("elsys"), rec_type::ENVIRONMENT);
        assert_eq!(rt("elsys-ers-co2"), rec_type::ENVIRONMENT);
        assert_eq!(rt("elsys-ers-sound"), rec_type::SOUND);
        assert_eq!(rt("elsys-ers-eye"), rec_type::OCCUPANCY);
        assert_eq!(rt("elsys-ems-desk"), rec_type::OCCUPANCY);
        assert_eq!(rt("elsys-ems-door"), rec_type::OPENCLOSE);
        assert_eq!(rt("elsys-ems-leak"), rec_type::LEAK);
        assert_eq!(rt("milesight-em300-th"), rec_type::ENVIRONMENT);
        assert_eq!(rt("milesight-am319"), rec_type::ENVIRONMENT);
        assert_eq!(rt("milesight-em300-mcs"), rec_type::OPENCLOSE);
        assert_eq!(rt("milesight-em300-sld"), rec_type::LEAK);
        assert_eq!(rt("milesight-ws303"), rec_type::LEAK);
        assert_eq!(rt("milesight-ws101"), rec_type::FEEDBACK);
        assert_eq!(rt("milesight-ws202"), rec_type::MOTION);
        assert_eq!(rt("dragino-lht65n"), rec_type::ENVIRONMENT);
        assert_eq!(rt("netvox-r718ab"), rec_type::ENVIRONMENT);
        assert_eq!(rt("netvox-r718f"), rec_type::OPENCLOSE);
        assert_eq!(rt("netvox-r718wa"), rec_type::LEAK);
        assert_eq!(rt("skiply-smilio-action"), rec_type::FEEDBACK);
    }
}
