//! Device payload codecs: FRMPayload bytes -> Microshare-style readings.
//!
//! A codec is chosen per device in the config (never guessed from the payload shape, see
//! docs/codecs.md: several formats collide). Decoding is pure and synchronous.

/// A vendor's models in one list: declares its `Model` enum, `Model::ALL` and `Model::id`.
///
/// Each vendor module calls it once. Adding a model is one line here; the compiler then asks
/// for the model's arm in the vendor's `rec_type`, `example` and `decode` (docs/adding-a-codec.md).
macro_rules! models {
    ($($(#[$doc:meta])* $model:ident => $id:literal,)+) => {
        /// One model of this vendor, chosen by its codec id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Model {
            $($(#[$doc])* $model,)+
        }

        impl Model {
            /// Every model, in the order `hubgate codecs` lists them.
            pub const ALL: &'static [Model] = &[$(Model::$model,)+];

            /// The codec id (`[[device]] codec = "..."`, part of the command-line contract).
            pub const fn id(self) -> &'static str {
                match self {
                    $(Model::$model => $id,)+
                }
            }
        }
    };
}

mod browan;
mod bytes;
mod cayenne;
mod dragino;
mod elsys;
mod milesight;
mod netvox;
mod smilio;

use bytes::Bytes;
use std::fmt;

/// `Codec` from the vendor modules, each of which exports a `Model` made by [`models!`] with
/// `rec_type(self)`, `example(self)` and `decode(self, fport, payload)`: one variant per
/// vendor, `Codec::ALL` assembled from the vendors' `Model::ALL`, and every method a match
/// the compiler checks.
macro_rules! vendors {
    ($($vendor:ident($module:ident, $alias:ident),)+) => {
        $(pub use $module::Model as $alias;)+

        /// Every codec hubgate knows: a vendor and one of its models. Ids are part of the
        /// command-line contract (docs/design.md).
        ///
        /// Vendor formats shared by several models (Elsys, Milesight, Netvox R718) carry the
        /// model: it decides the recType and the meaning of ambiguous channels, and every
        /// model has its own id (an alias of the family format).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Codec {
            $($vendor($alias),)+
        }

        impl Codec {
            /// Every codec, vendor after vendor, each vendor's models in their order.
            pub const ALL: &'static [Codec] = &{
                const COUNT: usize = 0 $(+ $module::Model::ALL.len())+;
                // Any codec will do as the filler that the loops below overwrite.
                let mut all = [[$(Codec::$vendor($module::Model::ALL[0]),)+][0]; COUNT];
                let mut i = 0;
                $(
                    let mut j = 0;
                    while j < $module::Model::ALL.len() {
                        all[i] = Codec::$vendor($module::Model::ALL[j]);
                        i += 1;
                        j += 1;
                    }
                )+
                all
            };

            pub const fn id(self) -> &'static str {
                match self {
                    $(Codec::$vendor(m) => m.id(),)+
                }
            }

            pub fn from_id(id: &str) -> Option<Codec> {
                Codec::ALL.iter().copied().find(|c| c.id() == id)
            }

            /// The recType this codec's records are published under.
            ///
            /// `netvox-r718` (the family id) decides per frame from the device-type byte;
            /// this is its most common recType (R718A/AB, environment). `cayenne-lpp`
            /// decides per frame from the types it holds; this is its recType for a frame
            /// of no domain's type. Every other codec always returns exactly this recType.
            pub fn rec_type(self) -> &'static str {
                match self {
                    $(Codec::$vendor(m) => m.rec_type(),)+
                }
            }

            /// A real payload of this model (docs/codecs.md has most of them as worked
            /// examples): what `hubgate codecs` shows, the CLI test and the benchmark decode.
            pub fn example(self) -> Example {
                match self {
                    $(Codec::$vendor(m) => m.example(),)+
                }
            }

            /// Decode one application payload. `fport` is `None` when the transport did
            /// not say.
            pub fn decode(self, fport: Option<u8>, payload: &[u8]) -> Result<Decoded, CodecError> {
                if payload.is_empty() {
                    return Err(CodecError::Empty);
                }
                if payload.len() > MAX_PAYLOAD {
                    return Err(CodecError::TooLong(payload.len()));
                }
                match self {
                    $(Codec::$vendor(m) => m.decode(fport, payload),)+
                }
            }
        }
    };
}

vendors! {
    Browan(browan, BrowanModel),
    Cayenne(cayenne, CayenneModel),
    Elsys(elsys, ElsysModel),
    Milesight(milesight, MilesightModel),
    Dragino(dragino, DraginoModel),
    Netvox(netvox, NetvoxModel),
    Smilio(smilio, SmilioModel),
}

impl Codec {
    /// Every recType this codec's records can be published under: [`Codec::rec_type`], and
    /// for the family that decides per frame (`netvox-r718`) each of its models' too.
    /// `cayenne-lpp` chooses as a decoded object does, from the fields, and like a decoded
    /// object's the recTypes it may choose besides its own are not foreseen.
    pub fn rec_types(self) -> Vec<&'static str> {
        match self {
            Codec::Netvox(NetvoxModel::Family) => {
                NetvoxModel::ALL.iter().map(|m| m.rec_type()).collect()
            }
            c => vec![c.rec_type()],
        }
    }
}

/// An example payload of one model and the fPort it comes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    pub fport: u8,
    /// The payload in lower-case hex.
    pub hex: &'static str,
}

impl Example {
    pub fn payload(self) -> Vec<u8> {
        hex::decode(self.hex).expect("examples are valid hex (unit-tested)")
    }
}

/// One measured value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Int(i64),
    Bool(bool),
}

/// What a reading's `context_id` says: which of a device's like readings it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Context {
    /// Channel of multi-channel formats (Cayenne LPP, Milesight, Elsys inputs...), written as
    /// its number in a string (`"3"`).
    Channel(u8),
    /// A fixed name a format's readings are known by in Microshare's records (a Smilio
    /// Action's `Button #1, Upper Left`), written as it is.
    Name(&'static str),
}

/// One `{value, unit, context_id}` entry under a Microshare field name.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Microshare field name: `temperature`, `humidity`, `presence`, ...
    pub field: &'static str,
    pub value: Value,
    /// Microshare unit string (`°C`, `%RH`, `ppm`, `V`, `%`...); `None` for booleans and counts.
    pub unit: Option<&'static str>,
    /// Which of the device's like readings it is: a channel, or a name.
    pub context_id: Option<Context>,
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
        self.context_id = Some(Context::Channel(c));
        self
    }

    /// The same reading under the name `name`.
    pub fn named(mut self, name: &'static str) -> Self {
        self.context_id = Some(Context::Name(name));
        self
    }
}

/// Readings measured together at a time of their own, earlier than the uplink: a Milesight
/// history record, an entry of a Dragino LHT65 datalog reply. They make a record of their
/// own at that time, apart from the live readings, so a consumer never takes them for the
/// device's state now (docs/records.md).
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// When they were measured: unix seconds, by the device's clock.
    pub time: u32,
    pub readings: Vec<Reading>,
}

/// What a codec made of one payload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// Full recType, e.g. `io.microshare.environment.unpacked`.
    pub rec_type: &'static str,
    /// Sensor readings of now (the uplink's time), placed directly under `data`.
    pub readings: Vec<Reading>,
    /// Device-domain values (battery voltage/charge, board temperature) under `data.device_health`.
    pub health: Vec<Reading>,
    /// Readings of earlier times, in the payload's order: a record each ([`crate::record::build`]).
    pub history: Vec<History>,
    /// Why decoding stopped before the end of the payload, when it did: a run-of-records format
    /// (Milesight, Elsys) met a record it does not know after decoding some. The readings
    /// before it are kept, as the vendors' own decoders do; the stop is counted and logged.
    pub stopped: Option<CodecError>,
}

impl Decoded {
    /// Nothing decoded: no reading of now or of earlier, no device value.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.health.is_empty() && self.history.is_empty()
    }
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
    #[error(
        "a payload of {0} bytes, longer than a device of a built-in codec sends ({MAX_PAYLOAD})"
    )]
    TooLong(usize),
}

/// The longest payload a built-in codec decodes: a serial frame's most (a LoRaWAN payload is
/// at most 242 bytes). A network server's message can say anything; a longer payload is sent
/// packed instead of being made into hundreds of history records, each a sink message.
pub const MAX_PAYLOAD: usize = 2048;

/// `WrongPort` when the transport gave an fPort that is not the format's (`None` passes).
fn check_port(codec: &'static str, fport: Option<u8>, port: u8) -> Result<(), CodecError> {
    match fport {
        Some(fport) if fport != port => Err(CodecError::WrongPort { codec, fport }),
        _ => Ok(()),
    }
}

/// `"01 0A"` → `[1, 10]`, for the vendors' unit tests.
#[cfg(test)]
pub(crate) fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
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
    /// Decoded objects none of whose mapped fields is of a Microshare domain (nothing mapped:
    /// all under `origin`; or only fields of no domain, see `mapping::DOMAINS`).
    pub const UNMAPPED: &str = "io.microshare.lorawan.unpacked";

    /// The recType constant equal to `r`, for what wants a `&'static str`; an operator's
    /// own recType (a mapping table's) is [`UNMAPPED`] there.
    pub fn known(r: &str) -> &'static str {
        [
            ENVIRONMENT,
            MOTION,
            OPENCLOSE,
            LEAK,
            FEEDBACK,
            OCCUPANCY,
            LIGHT,
            SOUND,
            GPS,
        ]
        .into_iter()
        .find(|k| *k == r)
        .unwrap_or(UNMAPPED)
    }

    /// Microshare's usecase code (`meta.usecase`) of the domains whose code it publishes:
    /// environment `SE09`, motion `SC03`, feedback `SF01`. Others have none unless configured.
    pub fn usecase(rec_type: &str) -> Option<&'static str> {
        match rec_type {
            ENVIRONMENT => Some("SE09"),
            MOTION => Some("SC03"),
            FEEDBACK => Some("SF01"),
            _ => None,
        }
    }
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
            "milesight-ws301",
            "dragino-lht65",
            "dragino-lht65n",
            "dragino-lds02",
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

    /// A payload no device of a built-in codec sends (a network server's message can hold
    /// anything) is refused: 2,048 bytes of history records would make 204 records.
    #[test]
    fn payloads_past_the_longest_are_refused() {
        let em300 = Codec::from_id("milesight-em300-th").unwrap();
        let record = hex("20 CE 00 F1 53 65 F6 FF 64 01");
        // 204 history records and two temperatures: 2,048 bytes exactly.
        let mut most = record.repeat(MAX_PAYLOAD / record.len());
        most.extend_from_slice(&hex("03 67 10 01 03 67 11 01"));
        assert_eq!(most.len(), MAX_PAYLOAD);
        let decoded = em300.decode(None, &most).unwrap();
        assert_eq!((decoded.history.len(), decoded.readings.len()), (204, 2));
        let mut over = most.clone();
        over.push(0x01);
        assert_eq!(em300.decode(None, &over), Err(CodecError::TooLong(2049)));
    }

    /// The examples are what `hubgate codecs` shows and the CLI test and the benchmark decode.
    #[test]
    fn every_example_decodes_on_its_port_with_its_rec_type() {
        for &c in Codec::ALL {
            let e = c.example();
            assert_eq!(e.hex, e.hex.to_lowercase(), "{c}");
            let d = c
                .decode(Some(e.fport), &e.payload())
                .unwrap_or_else(|err| panic!("{c}: {err}"));
            assert_eq!(d.rec_type, c.rec_type(), "{c}");
            assert!(!d.readings.is_empty(), "{c}: no reading");
        }
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
        assert_eq!(rt("dragino-lds02"), rec_type::OPENCLOSE);
        assert_eq!(rt("milesight-ws301"), rec_type::OPENCLOSE);
        assert_eq!(rt("netvox-r718ab"), rec_type::ENVIRONMENT);
        assert_eq!(rt("netvox-r718f"), rec_type::OPENCLOSE);
        assert_eq!(rt("netvox-r718wa"), rec_type::LEAK);
        assert_eq!(rt("skiply-smilio-action"), rec_type::FEEDBACK);
    }
}
