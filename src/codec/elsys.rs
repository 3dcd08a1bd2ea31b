//! Elsys TLV format (docs/codecs.md, "Elsys"), shared by every Elsys model.
//!
//! A frame is a run of `[type:1][data:n]`; the type fixes n; multi-byte values are
//! big-endian. A type may repeat (several probes on external input 2): every occurrence is
//! kept, in order. The fPort is not part of the format (the data port is configurable).
//!
//! Errors, decided once for the whole format:
//! * an unknown type byte makes the rest of the frame unparseable. Like Elsys' own decoder,
//!   decoding stops there and keeps what it had, with `Decoded::stopped` naming the offset
//!   (counted and logged); a frame whose first type is unknown is `UnknownType`;
//! * a record cut short by the end of the payload is `Truncated`;
//! * 0x3E (sensor settings) starts a configuration frame: decoding stops there, readings
//!   before it are kept; a frame with nothing before it is `Invalid` (not telemetry);
//! * a frame that yields no value at all (only debug records) is `Invalid` too.
//!
//! The model (codec alias) only decides the recType and, on the EMS Door, the field name of
//! the reed input (`contact`); the byte layout is the same for all.
use super::{rec_type, Bytes, CodecError, Decoded, Example, Reading};

const CODEC: &str = "elsys";

models! {
    /// `elsys`: any model, environment recType.
    Generic => "elsys",
    Ers => "elsys-ers",
    ErsCo2 => "elsys-ers-co2",
    ErsVoc => "elsys-ers-voc",
    ErsLite => "elsys-ers-lite",
    ErsSound => "elsys-ers-sound",
    ErsEye => "elsys-ers-eye",
    ErsDesk => "elsys-ers-desk",
    EmsDesk => "elsys-ems-desk",
    Ems => "elsys-ems",
    EmsDoor => "elsys-ems-door",
    EmsLeak => "elsys-ems-leak",
    Elt => "elsys-elt",
}

impl Model {
    /// docs/codecs.md, "Choosing a codec".
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Generic
            | Model::Ers
            | Model::ErsCo2
            | Model::ErsVoc
            | Model::ErsLite
            | Model::Ems
            | Model::Elt => rec_type::ENVIRONMENT,
            Model::ErsSound => rec_type::SOUND,
            Model::ErsEye | Model::ErsDesk | Model::EmsDesk => rec_type::OCCUPANCY,
            Model::EmsDoor => rec_type::OPENCLOSE,
            Model::EmsLeak => rec_type::LEAK,
        }
    }

    /// Elsys' default data port is 5 (the port does not matter to the format).
    pub fn example(self) -> Example {
        let hex = match self {
            Model::Generic => "0100e202290400270506060308070d62",
            Model::Ers => "01ff9c0250070e10",
            Model::ErsCo2 => "0100c8022d0401f40503060190070e42",
            Model::ErsVoc => "0100e202291c012c070e10",
            Model::ErsLite => "0100e20229070e10",
            Model::ErsSound => "0100e20229155a3c070e10",
            Model::ErsEye => "0100e202291102070e10",
            Model::ErsDesk => "0100e202291100070e10",
            Model::EmsDesk => "0100e202291101070e10",
            Model::Ems => "0100e202290300003f070e10",
            Model::EmsDoor => "0100e202290d01070e10",
            Model::EmsLeak => "0100e202291200070e10",
            Model::Elt => "0100e202290cff9c070e10",
        };
        Example { fport: 5, hex }
    }

    pub fn decode(self, _fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        decode(self, p)
    }
}

/// Record length (data bytes after the type byte) of every known type.
fn len(ty: u8) -> Option<usize> {
    Some(match ty {
        0x02 | 0x05 | 0x0D | 0x0F | 0x11 | 0x12 | 0x1A => 1,
        0x01 | 0x04 | 0x06 | 0x07 | 0x08 | 0x0A | 0x0C | 0x0E | 0x15 | 0x16 | 0x18 | 0x19
        | 0x1C => 2,
        0x03 => 3,
        0x0B | 0x10 | 0x14 | 0x17 | 0x1B | 0x3D => 4,
        0x09 => 6,
        0x13 => 65,
        _ => return None,
    })
}

/// Decode one Elsys frame.
pub fn decode(model: Model, p: &[u8]) -> Result<Decoded, CodecError> {
    let b = Bytes::new(CODEC, p);
    let mut d = Decoded {
        rec_type: model.rec_type(),
        ..Decoded::default()
    };
    // Occurrence index of type 0x19 (external temperature 2, one record per probe).
    let mut ext2 = 0u8;
    let mut off = 0;
    while off < b.len() {
        let ty = b.u8(off)?;
        if ty == 0x3E {
            if d.readings.is_empty() && d.health.is_empty() {
                return Err(CodecError::Invalid {
                    codec: CODEC,
                    offset: off,
                    what: "sensor settings frame, not telemetry",
                });
            }
            break;
        }
        let Some(n) = len(ty) else {
            let unknown = CodecError::UnknownType {
                codec: CODEC,
                offset: off,
                byte: ty,
            };
            if d.readings.is_empty() && d.health.is_empty() {
                return Err(unknown);
            }
            d.stopped = Some(unknown);
            break;
        };
        // `v`: offset of the record's data, all of it present from here on.
        let v = off + 1;
        b.slice(v, n)?;
        let r = &mut d.readings;
        let tenths = |at: usize| b.i16be(at).map(|x| f64::from(x) / 10.0);
        let milli = |at: usize| b.u16be(at).map(|x| f64::from(x) / 1000.0);
        match ty {
            0x01 => r.push(Reading::num("temperature", tenths(v)?, "°C")),
            0x02 => r.push(Reading::num("humidity", f64::from(b.u8(v)?), "%RH")),
            0x03 => {
                // Raw s8 per axis, 63 ≈ 1 g (not exact, so not converted).
                for (i, field) in [
                    "acceleration_x_raw",
                    "acceleration_y_raw",
                    "acceleration_z_raw",
                ]
                .into_iter()
                .enumerate()
                {
                    r.push(Reading::int(field, i64::from(b.i8(v + i)?), None));
                }
            }
            0x04 => r.push(Reading::num("illuminance", f64::from(b.u16be(v)?), "lx")),
            0x05 => r.push(Reading::int(
                "motions_since_transmit",
                i64::from(b.u8(v)?),
                None,
            )),
            0x06 => r.push(Reading::num("co2", f64::from(b.u16be(v)?), "ppm")),
            0x07 => d.health.push(Reading::num("voltage", milli(v)?, "V")),
            0x08 => r.push(Reading::num("analog_input", milli(v)?, "V").ctx(1)),
            // GPS: the byte order and signedness differ between Elsys' JS and other ports
            // (docs/codecs.md, "Elsys") and no device capture settles it: skipped rather
            // than guessed.
            0x09 => {}
            0x0A => {
                r.push(Reading::int("count_since_transmit", i64::from(b.u16be(v)?), None).ctx(1))
            }
            0x0B => r.push(Reading::int("count_since_reset", i64::from(b.u32be(v)?), None).ctx(1)),
            0x0C => r.push(Reading::num("ext_temperature", tenths(v)?, "°C")),
            // External digital input; on the EMS Door it is the reed switch, whose polarity
            // is unverified, so the raw state is emitted rather than open/closed.
            0x0D => {
                let field = if model == Model::EmsDoor {
                    "contact"
                } else {
                    "digital_input"
                };
                r.push(Reading::int(field, i64::from(b.u8(v)?), None).ctx(1));
            }
            0x0E => r.push(Reading::num("distance", milli(v)?, "m")),
            0x0F => r.push(Reading::int(
                "acc_motions_since_transmit",
                i64::from(b.u8(v)?),
                None,
            )),
            0x10 => {
                r.push(Reading::num("ir_internal_temperature", tenths(v)?, "°C"));
                r.push(Reading::num(
                    "ir_external_temperature",
                    tenths(v + 2)?,
                    "°C",
                ));
            }
            0x11 => {
                // 0 unoccupied, 1 pending (entering/leaving), 2 occupied.
                let state = b.u8(v)?;
                r.push(Reading::int("occupancy_state", i64::from(state), None));
                r.push(Reading::flag("presence", state == 2));
            }
            0x12 => {
                // A 0-255 level; any level above 0 is reported as a leak (a policy choice).
                let level = b.u8(v)?;
                r.push(Reading::int("leak_level", i64::from(level), None));
                r.push(Reading::flag("leak", level > 0));
            }
            0x13 => {
                // Grid-EYE 8×8: reference °C, pixel i = ref + b_i / 10 (context_id = i).
                let reference = f64::from(b.u8(v)?);
                r.push(Reading::num("grideye_reference", reference, "°C"));
                for (i, &px) in b.slice(v + 1, n - 1)?.iter().enumerate() {
                    let t = reference + f64::from(px) / 10.0;
                    r.push(Reading::num("grideye_temperature", t, "°C").ctx(i as u8));
                }
            }
            0x14 => r.push(Reading::num(
                "pressure",
                f64::from(b.u32be(v)?) / 1000.0,
                "hPa",
            )),
            0x15 => {
                r.push(Reading::num("loudness_peak", f64::from(b.u8(v)?), "dBA"));
                r.push(Reading::num("loudness", f64::from(b.u8(v + 1)?), "dBA"));
            }
            0x16 => {
                r.push(Reading::int("count_since_transmit", i64::from(b.u16be(v)?), None).ctx(2))
            }
            0x17 => r.push(Reading::int("count_since_reset", i64::from(b.u32be(v)?), None).ctx(2)),
            0x18 => r.push(Reading::num("analog_input", milli(v)?, "V").ctx(2)),
            0x19 => {
                // One record per probe on input 2: context_id = probe index, in frame order.
                r.push(Reading::num("ext_temperature2", tenths(v)?, "°C").ctx(ext2));
                ext2 = ext2.wrapping_add(1);
            }
            0x1A => r.push(Reading::int("digital_input", i64::from(b.u8(v)?), None).ctx(2)),
            0x1B => r.push(Reading::int(
                "analog_input_uv",
                i64::from(b.i32be(v)?),
                Some("µV"),
            )),
            0x1C => r.push(Reading::num("voc", f64::from(b.u16be(v)?), "ppb")),
            // 0x3D debug: ignored.
            _ => {}
        }
        off = v + n;
    }
    if d.readings.is_empty() && d.health.is_empty() {
        return Err(CodecError::Invalid {
            codec: CODEC,
            offset: 0,
            what: "no measurement in frame",
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;
    use crate::codec::{Context, Value};

    fn n(field: &'static str, v: f64, unit: &'static str) -> Reading {
        Reading::num(field, v, unit)
    }

    fn get<'a>(rs: &'a [Reading], field: &str) -> Vec<&'a Value> {
        rs.iter()
            .filter(|r| r.field == field)
            .map(|r| &r.value)
            .collect()
    }

    // docs/codecs.md example 1: negative temperature.
    #[test]
    fn worked_example_1() {
        let d = decode(Model::Ers, &hex("01 FF 9C 02 50 07 0E 10")).unwrap();
        assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            d.readings,
            vec![n("temperature", -10.0, "°C"), n("humidity", 80.0, "%RH")]
        );
        assert_eq!(d.health, vec![n("voltage", 3.6, "V")]);
    }

    // docs/codecs.md example 2 (ERS CO2).
    #[test]
    fn worked_example_2() {
        let d = decode(
            Model::ErsCo2,
            &hex("01 00 C8 02 2D 04 01 F4 05 03 06 01 90 07 0E 42"),
        )
        .unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("temperature", 20.0, "°C"),
                n("humidity", 45.0, "%RH"),
                n("illuminance", 500.0, "lx"),
                Reading::int("motions_since_transmit", 3, None),
                n("co2", 400.0, "ppm"),
            ]
        );
        assert_eq!(d.health, vec![n("voltage", 3.65, "V")]);
    }

    // docs/codecs.md example 3: repeated type, kept in order.
    #[test]
    fn worked_example_3_repeated_probes() {
        let d = decode(Model::Generic, &hex("19 00 64 19 FF 9C")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("ext_temperature2", 10.0, "°C").ctx(0),
                n("ext_temperature2", -10.0, "°C").ctx(1),
            ]
        );
    }

    #[test]
    fn every_type_decodes() {
        let frame = hex(concat!(
            "01 80 00",             // −3276.8 °C (s16 minimum)
            "02 FF",                // 255 %
            "03 3F C1 00",          // accel 63, −63, 0
            "04 FF FF",             // 65535 lx
            "05 FF",                // 255 motions
            "06 FF FF",             // 65535 ppm
            "07 FF FF",             // 65.535 V
            "08 0B B8",             // analog 1: 3 V
            "09 01 02 03 04 05 06", // GPS: skipped
            "0A 00 05",             // pulse 1 relative
            "0B FF FF FF FF",       // pulse 1 absolute, not sign-extended
            "0C FF 9C",             // ext temperature −10 °C
            "0D 01",                // digital input
            "0E 04 D2",             // 1234 mm
            "0F 07",                // acc motion
            "10 00 FA FF 38",       // IR 25.0 / −20.0 °C
            "11 02",                // occupied
            "12 00",                // no leak
            "14 00 0F 75 3C",       // 1013.052 hPa
            "15 5A 3C",             // sound peak 90, avg 60
            "16 00 02",             // pulse 2 relative
            "17 00 00 01 00",       // pulse 2 absolute
            "18 00 64",             // analog 2: 0.1 V
            "1A 00",                // digital input 2
            "1B FF FF FF FF",       // −1 µV
            "1C 01 2C",             // 300 ppb
            "3D 00 00 00 00",       // debug: ignored
        ));
        let d = decode(Model::Generic, &frame).unwrap();
        let r = &d.readings;
        assert_eq!(get(r, "temperature"), [&Value::Num(-3276.8)]);
        assert_eq!(get(r, "humidity"), [&Value::Num(255.0)]);
        assert_eq!(get(r, "acceleration_x_raw"), [&Value::Int(63)]);
        assert_eq!(get(r, "acceleration_y_raw"), [&Value::Int(-63)]);
        assert_eq!(get(r, "acceleration_z_raw"), [&Value::Int(0)]);
        assert_eq!(get(r, "illuminance"), [&Value::Num(65535.0)]);
        assert_eq!(get(r, "motions_since_transmit"), [&Value::Int(255)]);
        assert_eq!(get(r, "co2"), [&Value::Num(65535.0)]);
        assert_eq!(d.health, vec![n("voltage", 65.535, "V")]);
        assert_eq!(get(r, "analog_input"), [&Value::Num(3.0), &Value::Num(0.1)]);
        assert_eq!(
            get(r, "count_since_transmit"),
            [&Value::Int(5), &Value::Int(2)]
        );
        assert_eq!(
            get(r, "count_since_reset"),
            [&Value::Int(4_294_967_295), &Value::Int(256)]
        );
        assert_eq!(get(r, "ext_temperature"), [&Value::Num(-10.0)]);
        assert_eq!(get(r, "digital_input"), [&Value::Int(1), &Value::Int(0)]);
        assert_eq!(get(r, "distance"), [&Value::Num(1.234)]);
        assert_eq!(get(r, "acc_motions_since_transmit"), [&Value::Int(7)]);
        assert_eq!(get(r, "ir_internal_temperature"), [&Value::Num(25.0)]);
        assert_eq!(get(r, "ir_external_temperature"), [&Value::Num(-20.0)]);
        assert_eq!(get(r, "occupancy_state"), [&Value::Int(2)]);
        assert_eq!(get(r, "presence"), [&Value::Bool(true)]);
        assert_eq!(get(r, "leak"), [&Value::Bool(false)]);
        assert_eq!(get(r, "pressure"), [&Value::Num(1013.052)]);
        assert_eq!(get(r, "loudness_peak"), [&Value::Num(90.0)]);
        assert_eq!(get(r, "loudness"), [&Value::Num(60.0)]);
        assert_eq!(get(r, "analog_input_uv"), [&Value::Int(-1)]);
        assert_eq!(get(r, "voc"), [&Value::Num(300.0)]);
        // Channels: input 1 vs input 2.
        let ch: Vec<_> = r
            .iter()
            .filter(|x| x.field == "count_since_reset")
            .map(|x| x.context_id)
            .collect();
        assert_eq!(ch, [Some(Context::Channel(1)), Some(Context::Channel(2))]);
    }

    #[test]
    fn occupancy_leak_and_sound_models() {
        let d = decode(Model::ErsEye, &hex("11 01 01 00 E6")).unwrap();
        assert_eq!(d.rec_type, rec_type::OCCUPANCY);
        assert_eq!(get(&d.readings, "occupancy_state"), [&Value::Int(1)]);
        // Pending is not occupied.
        assert_eq!(get(&d.readings, "presence"), [&Value::Bool(false)]);
        let d = decode(Model::EmsLeak, &hex("12 C8")).unwrap();
        assert_eq!(d.rec_type, rec_type::LEAK);
        assert_eq!(
            d.readings,
            vec![
                Reading::int("leak_level", 200, None),
                Reading::flag("leak", true)
            ]
        );
        let d = decode(Model::ErsSound, &hex("15 FF 00")).unwrap();
        assert_eq!(d.rec_type, rec_type::SOUND);
        assert_eq!(get(&d.readings, "loudness"), [&Value::Num(0.0)]);
        let d = decode(Model::EmsDoor, &hex("0D 01")).unwrap();
        assert_eq!(d.rec_type, rec_type::OPENCLOSE);
        assert_eq!(d.readings, vec![Reading::int("contact", 1, None).ctx(1)]);
    }

    #[test]
    fn grideye() {
        let mut frame = vec![0x13, 20];
        frame.extend((0..64).map(|i| i as u8));
        let d = decode(Model::ErsEye, &frame).unwrap();
        assert_eq!(d.readings.len(), 65);
        assert_eq!(d.readings[0], n("grideye_reference", 20.0, "°C"));
        assert_eq!(d.readings[1], n("grideye_temperature", 20.0, "°C").ctx(0));
        assert_eq!(d.readings[64], n("grideye_temperature", 26.3, "°C").ctx(63));
        assert!(decode(Model::ErsEye, &frame[..60]).is_err());
    }

    /// Like Elsys' decoder: the readings before an unknown type are kept.
    #[test]
    fn unknown_type_keeps_what_came_before() {
        let d = decode(Model::Ers, &hex("01 00 C8 02 2D 42 00 07 0E 10")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("temperature", 20.0, "°C"),
                Reading::num("humidity", 45.0, "%RH")
            ]
        );
        assert!(d.health.is_empty());
        let e = d.stopped.unwrap();
        assert_eq!(
            e,
            CodecError::UnknownType {
                codec: "elsys",
                offset: 5,
                byte: 0x42
            }
        );
        assert_eq!(e.to_string(), "elsys: unknown type 0x42 at offset 5");
        assert!(matches!(
            decode(Model::Ers, &hex("00")).unwrap_err(),
            CodecError::UnknownType { offset: 0, .. }
        ));
    }

    #[test]
    fn truncated_record() {
        assert_eq!(
            decode(Model::Ers, &hex("01 00 C8 07 0E")).unwrap_err(),
            CodecError::Truncated {
                codec: "elsys",
                need: 6,
                got: 5
            }
        );
        assert!(decode(Model::Ers, &hex("01")).is_err());
    }

    #[test]
    fn settings_frame_and_empty_values() {
        // Readings before 0x3E are kept; a settings frame alone is not telemetry.
        let d = decode(Model::Ers, &hex("07 0E 10 3E 05 01 02 03")).unwrap();
        assert_eq!(d.health, vec![n("voltage", 3.6, "V")]);
        assert!(matches!(
            decode(Model::Ers, &hex("3E 05 01 02 03")).unwrap_err(),
            CodecError::Invalid { offset: 0, .. }
        ));
        assert!(decode(Model::Ers, &hex("3D 00 00 00 00")).is_err());
    }
}
