//! Milesight channel/type format (docs/codecs.md, "Milesight").
//!
//! A frame is a run of `[channel_id:1][channel_type:1][value:n]`; the (id, type) pair fixes
//! n; multi-byte values are little-endian. Every sensor reading carries its channel id as
//! `context_id` (docs/design.md: multi-channel formats). The fPort is ignored (85 by default).
//!
//! The model (codec alias) decides:
//! * the recType (docs/codecs.md, "Choosing a codec");
//! * the meaning of the ambiguous pairs `05 00` (PIR `presence` on AM307/308/319, `leak` on
//!   EM300-SLD/ZLD), `03 00` (PIR `presence` on WS202, `leak` on WS303, door `open` on
//!   WS301) and `04 00` (`daylight` on WS202, the `tamper` switch on WS301). On any other
//!   model, including the plain `milesight` id, these pairs are emitted as a raw
//!   `digital_input` state on their channel rather than guessed;
//! * the layout of history records (`20 CE`, and `21 CE` on the AM30x v2 with TVOC in
//!   µg/m³). Each record becomes a [`History`] of its own unix time, with the live field names
//!   and channels, apart from the live readings. Models without a documented history layout
//!   (WS series, plain `milesight`) report history as an unknown type.
//!
//! Device-information channels (`FF 01/08/09/0A/0B/0F/16/FE/FF`) are attributes, not
//! telemetry: skipped. (`FF 18`, sensor enable, is not among them: Milesight's AM107
//! decoders disagree on its length, 1 or 2 bytes, so it stays an unknown pair.) An unknown pair stops decoding (its length is unknown): the readings before it are
//! kept, as the vendor decoders do (`break`), and `Decoded::stopped` names the offset of the
//! type byte; with nothing before it the frame is `UnknownType`. A frame with nothing but
//! device information is `Invalid`.
use super::{rec_type, Bytes, CodecError, Decoded, Example, History, Reading};

const CODEC: &str = "milesight";

models! {
    /// `milesight`: the unambiguous channels only.
    Generic => "milesight",
    Em300Th => "milesight-em300-th",
    Em300Mcs => "milesight-em300-mcs",
    Em300Sld => "milesight-em300-sld",
    Em300Zld => "milesight-em300-zld",
    Am102 => "milesight-am102",
    Am307 => "milesight-am307",
    Am308 => "milesight-am308",
    Am319 => "milesight-am319",
    Ws101 => "milesight-ws101",
    Ws202 => "milesight-ws202",
    Ws303 => "milesight-ws303",
    /// WS301 magnetic door/window contact with a tamper switch.
    Ws301 => "milesight-ws301",
}

impl Model {
    /// docs/codecs.md, "Choosing a codec".
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Generic
            | Model::Em300Th
            | Model::Am102
            | Model::Am307
            | Model::Am308
            | Model::Am319 => rec_type::ENVIRONMENT,
            Model::Em300Mcs | Model::Ws301 => rec_type::OPENCLOSE,
            Model::Em300Sld | Model::Em300Zld | Model::Ws303 => rec_type::LEAK,
            Model::Ws101 => rec_type::FEEDBACK,
            Model::Ws202 => rec_type::MOTION,
        }
    }

    /// Milesight's default port is 85 (the format ignores it).
    pub fn example(self) -> Example {
        let hex = match self {
            Model::Generic => "017564036710ff046850",
            Model::Em300Th => "01756403670aff046850",
            Model::Em300Mcs => "01756403670a01046850060001",
            // A live frame, then one history record.
            Model::Em300Sld => "01756403670a0104685005000120ce00f15365f6ff6401",
            Model::Em300Zld => "01756403670a01046850050000",
            Model::Am102 => "0175550367f400046878",
            Model::Am307 => "0367f40004687805000106cb02077d5802087d2c0109738a27",
            Model::Am308 => "0367f40004687805000106cb02077d5802087d2c0109738a270b7d0c000c7d0d00",
            Model::Am319 => "077d580209738a270b7d0c00",
            Model::Ws101 => "017564ff2e01",
            Model::Ws202 => "017564030001040000",
            Model::Ws303 => "01755a030001",
            Model::Ws301 => "017564030001040001",
        };
        Example { fport: 85, hex }
    }

    pub fn decode(self, _fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        decode(self, p)
    }

    fn is_am30x(self) -> bool {
        matches!(self, Model::Am307 | Model::Am308 | Model::Am319)
    }

    /// Length of one history record after the 2-byte header, `None` when the model has no
    /// documented history layout.
    fn history_len(self) -> Option<usize> {
        Some(match self {
            Model::Em300Th | Model::Em300Mcs | Model::Em300Sld | Model::Em300Zld => 8,
            Model::Am102 => 7,
            Model::Am307 => 16,
            Model::Am308 => 20,
            Model::Am319 => 22,
            Model::Generic | Model::Ws101 | Model::Ws202 | Model::Ws303 | Model::Ws301 => {
                return None
            }
        })
    }
}

/// Value length of a live (id, type) pair; `None` = unknown pair (history handled apart).
fn live_len(id: u8, ty: u8) -> Option<usize> {
    Some(match (id, ty) {
        (0x01, 0x75) | (0x04, 0x68) => 1,
        (0x03, 0x67) => 2,
        (0x03..=0x06, 0x00) | (0x06, 0xCB) | (0x0E, 0x01) | (0xFF, 0x2E) => 1,
        (0x05, 0x6A) | (0x07..=0x0D, 0x7D) | (0x08, 0xE6) | (0x09, 0x73) => 2,
        // Device information: protocol version, hardware, firmware, power status, class,
        // reset event (sent after a restart, before the readings), serial number (8 bytes;
        // 6 as `FF 08` on the WS101/WS301), TSL version.
        (0xFF, 0x01 | 0x0B | 0x0F | 0xFE) => 1,
        (0xFF, 0x09 | 0x0A | 0xFF) => 2,
        (0xFF, 0x08) => 6,
        (0xFF, 0x16) => 8,
        _ => return None,
    })
}

/// One live value at `v` (all its bytes present). `d` receives it (battery goes to health).
fn live(
    model: Model,
    id: u8,
    ty: u8,
    b: &Bytes,
    v: usize,
    d: &mut Decoded,
) -> Result<(), CodecError> {
    let u16le = |at: usize| b.u16le(at).map(f64::from);
    let r = match (id, ty) {
        (0x01, 0x75) => {
            d.health
                .push(Reading::num("charge", f64::from(b.u8(v)?), "%"));
            return Ok(());
        }
        (0x03, 0x67) => Reading::num("temperature", f64::from(b.i16le(v)?) / 10.0, "°C"),
        (0x04, 0x68) => Reading::num("humidity", f64::from(b.u8(v)?) / 2.0, "%RH"),
        (0x05, 0x00) if model.is_am30x() => Reading::flag("presence", b.u8(v)? != 0),
        (0x05, 0x00) if matches!(model, Model::Em300Sld | Model::Em300Zld) => {
            Reading::flag("leak", b.u8(v)? != 0)
        }
        (0x03, 0x00) if model == Model::Ws202 => Reading::flag("presence", b.u8(v)? != 0),
        (0x03, 0x00) if model == Model::Ws303 => Reading::flag("leak", b.u8(v)? != 0),
        (0x03, 0x00) if model == Model::Ws301 => Reading::flag("open", b.u8(v)? != 0),
        // WS301: 1 = taken off its mounting (the tamper switch), 0 = installed.
        (0x04, 0x00) if model == Model::Ws301 => Reading::flag("tamper", b.u8(v)? != 0),
        (0x04, 0x00) if model == Model::Ws202 => Reading::flag("daylight", b.u8(v)? != 0),
        // Ambiguous pair on a model that does not define it: raw state, not a guess.
        (0x03..=0x05, 0x00) => Reading::int("digital_input", i64::from(b.u8(v)?), None),
        (0x06, 0x00) => Reading::flag("open", b.u8(v)? != 0),
        (0x06, 0xCB) => Reading::int("light_level", i64::from(b.u8(v)?), None),
        // PIR activity: movements counted over the reporting interval (AM104/AM107; the AM307
        // sends its PIR as `05 00`).
        (0x05, 0x6A) => Reading::int("activity", i64::from(b.u16le(v)?), None),
        (0x07, 0x7D) => Reading::num("co2", u16le(v)?, "ppm"),
        // v1 firmware sends a level, v2 an IAQ index × 100: kept raw (docs/codecs.md, "Milesight").
        (0x08, 0x7D) => Reading::int("tvoc_raw", i64::from(b.u16le(v)?), None),
        (0x08, 0xE6) => Reading::num("tvoc", u16le(v)?, "µg/m³"),
        (0x09, 0x73) => Reading::num("pressure", u16le(v)? / 10.0, "hPa"),
        // 0.01 mg/m³ steps, written in µg/m³ (Microshare's unit for gases): × 10.
        (0x0A, 0x7D) => Reading::num("formaldehyde", u16le(v)? * 10.0, "µg/m³"),
        (0x0B, 0x7D) => Reading::num("pm2_5", u16le(v)?, "µg/m³"),
        (0x0C, 0x7D) => Reading::num("pm10", u16le(v)?, "µg/m³"),
        // Kept in ppm: µg/m³ would take a temperature and pressure no source states.
        (0x0D, 0x7D) => Reading::num("ozone", u16le(v)? / 100.0, "ppm"),
        (0x0E, 0x01) => Reading::flag("buzzer", b.u8(v)? != 0),
        (0xFF, 0x2E) => {
            // WS101: 1 short, 2 long, 3 double press.
            d.readings.push(Reading::flag("push", true).ctx(id));
            Reading::int("press_type", i64::from(b.u8(v)?), None)
        }
        // Device information: not telemetry.
        _ => return Ok(()),
    };
    d.readings.push(r.ctx(id));
    Ok(())
}

/// One history record at `v` (the bytes after the 2-byte header, all present). `tvoc_ugm3`
/// for `21 CE`.
fn history(
    model: Model,
    b: &Bytes,
    v: usize,
    tvoc_ugm3: bool,
    d: &mut Decoded,
) -> Result<(), CodecError> {
    let u16le = |at: usize| b.u16le(at).map(f64::from);
    let time = b.u32le(v)?;
    let temperature =
        Reading::num("temperature", f64::from(b.i16le(v + 4)?) / 10.0, "°C").ctx(0x03);
    let mut out = vec![temperature];
    match model {
        Model::Em300Th | Model::Em300Mcs | Model::Em300Sld | Model::Em300Zld | Model::Am102 => {
            out.push(Reading::num("humidity", f64::from(b.u8(v + 6)?) / 2.0, "%RH").ctx(0x04));
            match model {
                Model::Em300Mcs => out.push(Reading::flag("open", b.u8(v + 7)? != 0).ctx(0x06)),
                Model::Em300Sld | Model::Em300Zld => {
                    out.push(Reading::flag("leak", b.u8(v + 7)? != 0).ctx(0x05))
                }
                // EM300-TH byte 7 is reserved; AM102 records are 7 bytes.
                _ => {}
            }
        }
        _ => {
            // AM30x v2: humidity u16, pir, light level, co2, tvoc, pressure, then
            // pm2.5 + pm10 (AM308, AM319) and HCHO (AM319; the O3 variant sends O3 in the
            // same slot and cannot be told apart from the payload: decoded as HCHO).
            out.push(Reading::num("humidity", u16le(v + 6)? / 2.0, "%RH").ctx(0x04));
            out.push(Reading::flag("presence", b.u8(v + 8)? != 0).ctx(0x05));
            out.push(Reading::int("light_level", i64::from(b.u8(v + 9)?), None).ctx(0x06));
            out.push(Reading::num("co2", u16le(v + 10)?, "ppm").ctx(0x07));
            out.push(if tvoc_ugm3 {
                Reading::num("tvoc", u16le(v + 12)?, "µg/m³").ctx(0x08)
            } else {
                Reading::int("tvoc_raw", i64::from(b.u16le(v + 12)?), None).ctx(0x08)
            });
            out.push(Reading::num("pressure", u16le(v + 14)? / 10.0, "hPa").ctx(0x09));
            if matches!(model, Model::Am308 | Model::Am319) {
                out.push(Reading::num("pm2_5", u16le(v + 16)?, "µg/m³").ctx(0x0B));
                out.push(Reading::num("pm10", u16le(v + 18)?, "µg/m³").ctx(0x0C));
            }
            if model == Model::Am319 {
                out.push(Reading::num("formaldehyde", u16le(v + 20)? * 10.0, "µg/m³").ctx(0x0A));
            }
        }
    }
    d.history.push(History {
        time,
        readings: out,
    });
    Ok(())
}

/// Decode one Milesight frame for `model`.
pub fn decode(model: Model, p: &[u8]) -> Result<Decoded, CodecError> {
    let b = Bytes::new(CODEC, p);
    let mut d = Decoded {
        rec_type: model.rec_type(),
        ..Decoded::default()
    };
    let mut off = 0;
    while off < b.len() {
        let id = b.u8(off)?;
        let ty = b.u8(off + 1)?;
        let unknown = CodecError::UnknownType {
            codec: CODEC,
            offset: off + 1,
            byte: ty,
        };
        let is_history = matches!((id, ty), (0x20 | 0x21, 0xCE));
        let n = if is_history {
            // 21 CE (TVOC in µg/m³) exists on the AM30x v2 only.
            model
                .history_len()
                .filter(|_| id == 0x20 || model.is_am30x())
        } else {
            live_len(id, ty)
        };
        let Some(n) = n else {
            // The rest of the frame cannot be split: keep what came before, as the vendor's
            // decoders do.
            if d.is_empty() {
                return Err(unknown);
            }
            d.stopped = Some(unknown);
            break;
        };
        let v = off + 2;
        b.slice(v, n)?;
        if is_history {
            history(model, &b, v, id == 0x21, &mut d)?;
        } else {
            live(model, id, ty, &b, v, &mut d)?;
        }
        off = v + n;
    }
    if d.is_empty() {
        return Err(CodecError::Invalid {
            codec: CODEC,
            offset: 0,
            what: "device information only, not telemetry",
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;
    use crate::codec::Value;

    fn n(field: &'static str, v: f64, unit: &'static str, ch: u8) -> Reading {
        Reading::num(field, v, unit).ctx(ch)
    }

    fn flag(field: &'static str, v: bool, ch: u8) -> Reading {
        Reading::flag(field, v).ctx(ch)
    }

    // docs/codecs.md example 1: battery, negative temperature, half-percent humidity.
    #[test]
    fn em300_th_worked_example() {
        let d = decode(Model::Em300Th, &hex("01 75 64 03 67 0A FF 04 68 50")).unwrap();
        assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            d.readings,
            vec![
                n("temperature", -24.6, "°C", 3),
                n("humidity", 40.0, "%RH", 4)
            ]
        );
        assert_eq!(d.health, vec![Reading::num("charge", 100.0, "%")]);
        // The generic id decodes the same channels.
        assert_eq!(
            decode(Model::Generic, &hex("01 75 64 03 67 0A FF 04 68 50"))
                .unwrap()
                .readings,
            d.readings
        );
    }

    // docs/codecs.md example 2.
    #[test]
    fn am319_worked_example() {
        let d = decode(Model::Am319, &hex("07 7D 58 02 09 73 8A 27 0B 7D 0C 00")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("co2", 600.0, "ppm", 7),
                n("pressure", 1012.2, "hPa", 9),
                n("pm2_5", 12.0, "µg/m³", 11),
            ]
        );
    }

    // docs/codecs.md example 3.
    #[test]
    fn em300_mcs_worked_example() {
        let d = decode(Model::Em300Mcs, &hex("06 00 00")).unwrap();
        assert_eq!(d.rec_type, rec_type::OPENCLOSE);
        assert_eq!(d.readings, vec![flag("open", false, 6)]);
        let d = decode(Model::Em300Mcs, &hex("06 00 01")).unwrap();
        assert_eq!(d.readings, vec![flag("open", true, 6)]);
    }

    #[test]
    fn every_live_pair() {
        let frame = hex(concat!(
            "03 67 FF 7F", // 3276.7 °C (s16 max)
            "04 68 FF",    // 127.5 %
            "06 CB 05",    // light level 5
            "07 7D FF FF", // 65535 ppm
            "08 7D 2C 01", // tvoc raw 300
            "08 E6 10 00", // 16 µg/m³
            "09 73 FF FF", // 6553.5 hPa (unsigned)
            "0A 7D 05 00", // 0.05 mg/m³ = 50 µg/m³
            "0B 7D 0C 00", // 12
            "0C 7D 0D 00", // 13
            "0D 7D 0A 00", // 0.1 ppm
            "0E 01 01",    // buzzer
            "04 00 01",    // WS202 daylight or WS301 tamper: raw here
            "FF 01 01 FF 09 01 40 FF 0A 01 14 FF 0B FF FF 0F 00",
            "FF 16 67 46 C3 35 47 68 00 00 FF FF 01 00", // device info: skipped
        ));
        let d = decode(Model::Am308, &frame).unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("temperature", 3276.7, "°C", 3),
                n("humidity", 127.5, "%RH", 4),
                Reading::int("light_level", 5, None).ctx(6),
                n("co2", 65535.0, "ppm", 7),
                Reading::int("tvoc_raw", 300, None).ctx(8),
                n("tvoc", 16.0, "µg/m³", 8),
                n("pressure", 6553.5, "hPa", 9),
                n("formaldehyde", 50.0, "µg/m³", 10),
                n("pm2_5", 12.0, "µg/m³", 11),
                n("pm10", 13.0, "µg/m³", 12),
                n("ozone", 0.1, "ppm", 13),
                flag("buzzer", true, 14),
                Reading::int("digital_input", 1, None).ctx(4),
            ]
        );
        assert!(d.health.is_empty());
    }

    #[test]
    fn ambiguous_channels_follow_the_model() {
        let pir_or_leak = hex("05 00 01");
        let one = |m: Model, p: &[u8]| decode(m, p).unwrap().readings;
        assert_eq!(
            one(Model::Am307, &pir_or_leak),
            vec![flag("presence", true, 5)]
        );
        assert_eq!(
            one(Model::Am319, &pir_or_leak),
            vec![flag("presence", true, 5)]
        );
        assert_eq!(
            one(Model::Em300Sld, &pir_or_leak),
            vec![flag("leak", true, 5)]
        );
        assert_eq!(
            one(Model::Em300Zld, &pir_or_leak),
            vec![flag("leak", true, 5)]
        );
        assert_eq!(
            one(Model::Generic, &pir_or_leak),
            vec![Reading::int("digital_input", 1, None).ctx(5)]
        );
        let ch3 = hex("03 00 01 04 00 00");
        let d = decode(Model::Ws202, &ch3).unwrap();
        assert_eq!(d.rec_type, rec_type::MOTION);
        assert_eq!(
            d.readings,
            vec![flag("presence", true, 3), flag("daylight", false, 4)]
        );
        let d = decode(Model::Ws303, &hex("01 75 5A 03 00 01")).unwrap();
        assert_eq!(d.rec_type, rec_type::LEAK);
        assert_eq!(d.readings, vec![flag("leak", true, 3)]);
        assert_eq!(d.health, vec![Reading::num("charge", 90.0, "%")]);
        assert_eq!(
            one(Model::Generic, &hex("03 00 00")),
            vec![Reading::int("digital_input", 0, None).ctx(3)]
        );
    }

    #[test]
    fn ws101_button() {
        let d = decode(Model::Ws101, &hex("01 75 64 FF 2E 03")).unwrap();
        assert_eq!(d.rec_type, rec_type::FEEDBACK);
        assert_eq!(
            d.readings,
            vec![
                flag("push", true, 0xFF),
                Reading::int("press_type", 3, None).ctx(0xFF)
            ]
        );
    }

    #[test]
    fn em300_history_records() {
        // Two records: 1 700 000 000 (0x6553F100) −1.0 °C 50 % leak; then +600 s, 22.5 °C.
        let frame = hex(concat!(
            "20 CE 00 F1 53 65 F6 FF 64 01",
            "20 CE 58 F3 53 65 E1 00 50 00",
        ));
        let d = decode(Model::Em300Sld, &frame).unwrap();
        // Each record apart, at its own time; nothing is a reading of now.
        assert_eq!(d.readings, vec![]);
        assert_eq!(
            d.history,
            vec![
                History {
                    time: 1_700_000_000,
                    readings: vec![
                        n("temperature", -1.0, "°C", 3),
                        n("humidity", 50.0, "%RH", 4),
                        flag("leak", true, 5),
                    ],
                },
                History {
                    time: 1_700_000_600,
                    readings: vec![
                        n("temperature", 22.5, "°C", 3),
                        n("humidity", 40.0, "%RH", 4),
                        flag("leak", false, 5),
                    ],
                },
            ]
        );
        // Byte-identical MCS record means "door open" (docs/codecs.md, "Choosing a codec").
        let d = decode(Model::Em300Mcs, &frame[..10]).unwrap();
        assert_eq!(d.history[0].readings[2], flag("open", true, 6));
        // TH: byte 7 reserved.
        let d = decode(Model::Em300Th, &frame[..10]).unwrap();
        assert_eq!(d.history[0].readings.len(), 2);
        // AM102: 7-byte records, followed by a live value.
        let d = decode(Model::Am102, &hex("20 CE 00 F1 53 65 F6 FF 64 01 75 50")).unwrap();
        assert_eq!(d.history[0].readings.len(), 2);
        assert_eq!(d.readings, vec![]);
        assert_eq!(d.health, vec![Reading::num("charge", 80.0, "%")]);
        // A live frame with a record after it: the live readings stay live.
        let d = decode(
            Model::Em300Sld,
            &hex("03 67 0A 01 20 CE 00 F1 53 65 F6 FF 64 01"),
        )
        .unwrap();
        assert_eq!(d.readings, vec![n("temperature", 26.6, "°C", 3)]);
        assert_eq!(d.history.len(), 1);
        // A record, then a pair the model does not know: the record is kept, decoding stops.
        let d = decode(Model::Em300Sld, &hex("20 CE 00 F1 53 65 F6 FF 64 01 99 99")).unwrap();
        assert_eq!(d.history.len(), 1);
        assert!(d.stopped.is_some());
    }

    #[test]
    fn am30x_history_records() {
        let rec = concat!(
            "00 F1 53 65", // time
            "E1 00",       // 22.5 °C
            "51 00",       // 40.5 % (u16 / 2)
            "01 03",       // pir, light level 3
            "58 02",       // 600 ppm
            "2C 01",       // tvoc 300
            "8A 27",       // 1012.2 hPa
            "0C 00 0D 00", // pm2.5 12, pm10 13
            "19 00",       // hcho 0.25 mg/m³
        );
        let d = decode(Model::Am319, &hex(&format!("20 CE {rec}"))).unwrap();
        assert_eq!(d.readings, vec![]);
        assert_eq!(
            d.history,
            vec![History {
                time: 1_700_000_000,
                readings: vec![
                    n("temperature", 22.5, "°C", 3),
                    n("humidity", 40.5, "%RH", 4),
                    flag("presence", true, 5),
                    Reading::int("light_level", 3, None).ctx(6),
                    n("co2", 600.0, "ppm", 7),
                    Reading::int("tvoc_raw", 300, None).ctx(8),
                    n("pressure", 1012.2, "hPa", 9),
                    n("pm2_5", 12.0, "µg/m³", 11),
                    n("pm10", 13.0, "µg/m³", 12),
                    n("formaldehyde", 250.0, "µg/m³", 10),
                ],
            }]
        );
        let d = decode(Model::Am319, &hex(&format!("21 CE {rec}"))).unwrap();
        assert_eq!(d.history[0].readings[5], n("tvoc", 300.0, "µg/m³", 8));
        // AM307: 16 bytes, AM308: 20 bytes.
        let bytes = hex(&format!("20 CE {rec}"));
        let history_len = |model, bytes| decode(model, bytes).unwrap().history[0].readings.len();
        assert_eq!(history_len(Model::Am307, &bytes[..18]), 7);
        assert_eq!(history_len(Model::Am308, &bytes[..22]), 9);
        assert!(matches!(
            decode(Model::Am308, &bytes[..21]).unwrap_err(),
            CodecError::Truncated { need: 22, .. }
        ));
    }

    #[test]
    fn history_without_a_layout_is_unknown() {
        let d = decode(
            Model::Generic,
            &hex("01 75 64 20 CE 00 F1 53 65 F6 FF 64 01"),
        )
        .unwrap();
        assert_eq!(d.health, vec![Reading::num("charge", 100.0, "%")]);
        assert_eq!(
            d.stopped,
            Some(CodecError::UnknownType {
                codec: "milesight",
                offset: 4,
                byte: 0xCE
            })
        );
        assert!(decode(Model::Em300Th, &hex("21 CE 00 F1 53 65 F6 FF 64 01")).is_err());
    }

    /// docs/codecs.md, "Milesight", example 5: an AM104/AM107 frame (Milesight's AM107 decoder
    /// has `05 6A` activity, u16; its AM307 decoders have no such pair) decodes whole on the
    /// plain id, as these models have none of their own; a pair nobody knows keeps what came
    /// before it.
    #[test]
    fn am107_activity_and_an_unknown_pair() {
        let head = "01 75 5C 03 67 34 01 04 68 65";
        let kept = (
            vec![
                n("temperature", 30.8, "°C", 3),
                n("humidity", 50.5, "%RH", 4),
            ],
            vec![Reading::num("charge", 92.0, "%")],
        );
        let d = decode(Model::Generic, &hex(&format!("{head} 05 6A 49 01"))).unwrap();
        let mut readings = kept.0.clone();
        readings.push(Reading::int("activity", 329, None).ctx(5));
        assert_eq!(
            (d.readings, d.health, d.stopped),
            (readings, kept.1.clone(), None)
        );
        let d = decode(
            Model::Am307,
            &hex(&format!("{head} 0F 7F 01 02 03 67 10 00")),
        )
        .unwrap();
        assert_eq!((d.readings, d.health), kept);
        assert_eq!(
            d.stopped.unwrap().to_string(),
            "milesight: unknown type 0x7f at offset 11"
        );
    }

    #[test]
    fn unknown_pair_and_truncation() {
        let e = decode(Model::Em300Th, &hex("05 7D 01 00 03 67 0A 01")).unwrap_err();
        assert_eq!(
            e,
            CodecError::UnknownType {
                codec: "milesight",
                offset: 1,
                byte: 0x7D
            }
        );
        assert_eq!(e.to_string(), "milesight: unknown type 0x7d at offset 1");
        assert_eq!(
            decode(Model::Em300Th, &hex("03 67 0A")).unwrap_err(),
            CodecError::Truncated {
                codec: "milesight",
                need: 4,
                got: 3
            }
        );
        assert!(matches!(
            decode(Model::Em300Th, &hex("01 75 64 03")).unwrap_err(),
            CodecError::Truncated { need: 5, .. }
        ));
    }

    #[test]
    fn device_info_only_is_not_telemetry() {
        let e = decode(Model::Em300Th, &hex("FF 0B FF FF 01 01 FF 0F 00")).unwrap_err();
        assert!(matches!(e, CodecError::Invalid { .. }), "{e}");
        let d = decode(Model::Em300Th, &hex("FF 0B FF 01 75 00")).unwrap();
        assert_eq!(d.health, vec![Reading::num("charge", 0.0, "%")]);
        assert!(d.health.iter().all(|r| matches!(r.value, Value::Num(_))));
    }

    // docs/codecs.md, "Milesight", example 4 (Milesight's own WS301 example).
    #[test]
    fn ws301_door_and_tamper() {
        let d = decode(Model::Ws301, &hex("01 75 64 03 00 01 04 00 01")).unwrap();
        assert_eq!(d.rec_type, rec_type::OPENCLOSE);
        assert_eq!(
            d.readings,
            vec![flag("open", true, 3), flag("tamper", true, 4)]
        );
        assert_eq!(d.health, vec![Reading::num("charge", 100.0, "%")]);
        let d = decode(Model::Ws301, &hex("03 00 00 04 00 00")).unwrap();
        assert_eq!(
            d.readings,
            vec![flag("open", false, 3), flag("tamper", false, 4)]
        );
        // The same pairs keep their meaning on the other models.
        assert_eq!(
            decode(Model::Ws202, &hex("04 00 01")).unwrap().readings,
            vec![flag("daylight", true, 4)]
        );
        // No documented history layout.
        assert!(matches!(
            decode(Model::Ws301, &hex("20 CE 00 F1 53 65 F6 FF 64 01")).unwrap_err(),
            CodecError::UnknownType { offset: 1, .. }
        ));
    }

    /// Milesight's own decoders (Milesight-IoT/SensorDecoders: EM300-TH, EM300-MCS,
    /// EM300-SLD, AM102, AM107, WS101, WS202, WS301) read `FF FE` (reset event, 1 byte) as
    /// device information and go on with the rest of the frame; the WS301 decoder reads its
    /// serial number as `FF 08` (6 bytes). The readings after them are the device's.
    #[test]
    fn reset_event_and_six_byte_serial_are_device_information() {
        // Vendor: reset_event, battery 100, temperature -24.6.
        let d = decode(Model::Em300Th, &hex("FF FE 01 01 75 64 03 67 0A FF")).unwrap();
        assert_eq!(d.readings, vec![n("temperature", -24.6, "°C", 3)]);
        assert_eq!(d.health, vec![Reading::num("charge", 100.0, "%")]);
        assert_eq!(d.stopped, None);
        // Vendor: sn, battery 100, magnet_status open.
        let d = decode(
            Model::Ws301,
            &hex("FF 08 65 43 C4 01 23 45 01 75 64 03 00 01"),
        )
        .unwrap();
        assert_eq!(d.readings, vec![flag("open", true, 3)]);
        assert_eq!(d.stopped, None);
        // A frame of device information only is that, not an unknown type.
        for info in ["FF 0B FF FF FE 01", "FF 08 65 43 C4 01 23 45 FF FE 01"] {
            assert!(
                matches!(
                    decode(Model::Ws301, &hex(info)).unwrap_err(),
                    CodecError::Invalid { .. }
                ),
                "{info}"
            );
        }
    }

    /// `04 00` is daylight on the WS202 (WS202_Decoder.js: 0 dim, 1 bright) and the
    /// installation state on the WS301 (WS301_Decoder.js: 0 installed, 1 uninstalled). The
    /// plain `milesight` id is "the unambiguous channels only" and already emits `03 00` and
    /// `05 00` raw; a WS301 taken off its mounting must not read as daylight on it.
    #[test]
    fn generic_id_does_not_guess_the_04_00_pair() {
        // A WS301 frame: battery, door open, removed from its mounting.
        let d = decode(Model::Generic, &hex("01 75 64 03 00 01 04 00 01")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                Reading::int("digital_input", 1, None).ctx(3),
                Reading::int("digital_input", 1, None).ctx(4),
            ]
        );
        // Only the two models that define it read it.
        let pair = hex("04 00 00");
        assert_eq!(
            decode(Model::Ws202, &pair).unwrap().readings,
            vec![flag("daylight", false, 4)]
        );
        assert_eq!(
            decode(Model::Ws301, &pair).unwrap().readings,
            vec![flag("tamper", false, 4)]
        );
    }
}
