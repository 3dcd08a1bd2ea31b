//! Cayenne LPP (docs/codecs.md, "Cayenne LPP").
//!
//! A frame is a run of `[channel:1][type:1][value:n]`; the type fixes n, scaling and
//! signedness; multi-byte values are big-endian. Every reading carries its channel as
//! `context_id`. An unknown type aborts the frame (its length is unknown), a value cut
//! short is `Truncated`. fPort is not part of the format.
//!
//! The recType is chosen per frame from the fields it holds, by the rule that chooses a
//! decoded object's ([`crate::mapping::rec_type_of`]): presence (102) makes a motion record,
//! GPS (136) a gps one (a barometric altitude, 121, does not), temperature, humidity,
//! pressure or CO2 an environment one, illuminance alone a light one; a frame with none of
//! these (digital or analog I/O, switch, ...) is environment, [`Model::rec_type`]. One
//! recType per frame. As for a decoded object, only that default is in the hub plan:
//! another's hub is made on first use (docs/eventhubs.md).
use super::{rec_type, Bytes, CodecError, Decoded, Example, Reading, Value};

models! {
    /// Cayenne Low Power Payload, any device that speaks it.
    Lpp => "cayenne-lpp",
}

const CODEC: &str = Model::Lpp.id();

impl Model {
    /// The recType of a frame with no field of a domain (see the module doc).
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Lpp => rec_type::ENVIRONMENT,
        }
    }

    /// The port is not part of the format; 2 is a common choice.
    pub fn example(self) -> Example {
        let hex = match self {
            Model::Lpp => "0267ff3802688f0a73279f",
        };
        Example { fport: 2, hex }
    }

    pub fn decode(self, _fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        match self {
            Model::Lpp => decode(p),
        }
    }
}

/// How the raw integer of one value (or one component of a multi-axis value) becomes a
/// reading.
#[derive(Clone, Copy)]
enum Scale {
    /// Raw integer as is, no unit (digital I/O, generic sensor, ...).
    Int,
    /// Raw integer with a unit, kept integral (unix time).
    IntUnit(&'static str),
    /// Non-zero → true.
    Bool,
    /// raw / divisor in `unit` (divisor 1 for whole units).
    Num(f64, &'static str),
    /// raw / divisor without a unit (analog I/O: the unit is only known to the device).
    Plain(f64),
}

/// One LPP type: fields (one per component, each `width` bytes), signedness, scale.
struct Type {
    fields: &'static [&'static str],
    width: usize,
    signed: bool,
    scale: Scale,
}

const fn t(fields: &'static [&'static str], width: usize, signed: bool, scale: Scale) -> Type {
    Type {
        fields,
        width,
        signed,
        scale,
    }
}

/// The type table (IPSO object id − 3200). `None` for types hubgate does not know.
fn lookup(ty: u8) -> Option<Type> {
    use Scale::*;
    Some(match ty {
        0 => t(&["digital_input"], 1, false, Int),
        1 => t(&["digital_output"], 1, false, Int),
        2 => t(&["analog_input"], 2, true, Plain(100.0)),
        3 => t(&["analog_output"], 2, true, Plain(100.0)),
        100 => t(&["generic_sensor"], 4, false, Int),
        101 => t(&["illuminance"], 2, false, Num(1.0, "lx")),
        102 => t(&["presence"], 1, false, Bool),
        103 => t(&["temperature"], 2, true, Num(10.0, "°C")),
        104 => t(&["humidity"], 1, false, Num(2.0, "%RH")),
        113 => t(
            &["acceleration_x", "acceleration_y", "acceleration_z"],
            2,
            true,
            Num(1000.0, "g"),
        ),
        115 => t(&["pressure"], 2, false, Num(10.0, "hPa")),
        116 => t(&["voltage"], 2, false, Num(100.0, "V")),
        117 => t(&["current"], 2, false, Num(1000.0, "A")),
        118 => t(&["frequency"], 4, false, Num(1.0, "Hz")),
        120 => t(&["percentage"], 1, false, Num(1.0, "%")),
        121 => t(&["altitude"], 2, true, Num(1.0, "m")),
        125 => t(&["co2"], 2, false, Num(1.0, "ppm")),
        128 => t(&["power"], 2, false, Num(1.0, "W")),
        130 => t(&["distance"], 4, false, Num(1000.0, "m")),
        131 => t(&["energy"], 4, false, Num(1000.0, "kWh")),
        132 => t(&["direction"], 2, false, Num(1.0, "°")),
        133 => t(&["unix_time"], 4, false, IntUnit("s")),
        134 => t(
            &[
                "angular_velocity_x",
                "angular_velocity_y",
                "angular_velocity_z",
            ],
            2,
            true,
            Num(100.0, "°/s"),
        ),
        135 => t(&["colour_r", "colour_g", "colour_b"], 1, false, Int),
        // GPS components differ in scale; handled by `gps`.
        136 => t(&["lat", "lon", "altitude"], 3, true, Int),
        142 => t(&["switch"], 1, false, Bool),
        _ => return None,
    })
}

fn reading(field: &'static str, value: Value, unit: Option<&'static str>, ch: u8) -> Reading {
    Reading::new(field, value, unit).ctx(ch)
}

fn scaled(field: &'static str, raw: i64, scale: Scale, ch: u8) -> Reading {
    match scale {
        Scale::Int => reading(field, Value::Int(raw), None, ch),
        Scale::IntUnit(u) => reading(field, Value::Int(raw), Some(u), ch),
        Scale::Bool => reading(field, Value::Bool(raw != 0), None, ch),
        // Divide (not multiply by 0.1...) so that e.g. 215 / 10 is exactly 21.5.
        Scale::Num(div, u) => reading(field, Value::Num(raw as f64 / div), Some(u), ch),
        Scale::Plain(div) => reading(field, Value::Num(raw as f64 / div), None, ch),
    }
}

/// GPS (136) at `at`: lat, lon s24 × 0.0001°, altitude s24 × 0.01 m.
///
/// A position off the globe (latitude beyond ±90°, longitude beyond ±180°; s24 reaches
/// ±838°) is `Invalid`: LPP has no fix flag to clear, and a corrupt or forged frame must not
/// put an impossible point on a map. The frame then goes out packed with the reason.
fn gps(b: &Bytes, at: usize, ch: u8, out: &mut Vec<Reading>) -> Result<(), CodecError> {
    const DEG: i64 = 10_000;
    let (lat, lon) = (b.int_be(at, 3)?, b.int_be(at + 3, 3)?);
    if lat.abs() > 90 * DEG || lon.abs() > 180 * DEG {
        return Err(CodecError::Invalid {
            codec: CODEC,
            offset: at,
            what: "GPS position off the globe",
        });
    }
    let comps = [
        ("lat", lat, DEG as f64, "°"),
        ("lon", lon, DEG as f64, "°"),
        ("altitude", b.int_be(at + 6, 3)?, 100.0, "m"),
    ];
    for (field, raw, div, unit) in comps {
        out.push(scaled(field, raw, Scale::Num(div, unit), ch));
    }
    Ok(())
}

/// Decode a Cayenne LPP frame with any number of channels.
pub fn decode(p: &[u8]) -> Result<Decoded, CodecError> {
    if p.is_empty() {
        return Err(CodecError::Empty);
    }
    let b = Bytes::new(CODEC, p);
    let mut readings = Vec::new();
    let mut off = 0;
    while off < b.len() {
        let ch = b.u8(off)?;
        let ty = b.u8(off + 1)?;
        let Some(spec) = lookup(ty) else {
            return Err(CodecError::UnknownType {
                codec: CODEC,
                offset: off + 1,
                byte: ty,
            });
        };
        let start = off + 2;
        let len = spec.width * spec.fields.len();
        b.slice(start, len)?;
        if ty == 136 {
            gps(&b, start, ch, &mut readings)?;
        } else {
            for (i, field) in spec.fields.iter().enumerate() {
                let at = start + i * spec.width;
                let raw = if spec.signed {
                    b.int_be(at, spec.width)?
                } else {
                    // At most 4 bytes: always fits.
                    b.uint_be(at, spec.width)? as i64
                };
                readings.push(scaled(field, raw, spec.scale, ch));
                // Presence sensors that count people send the count here: keep it beside
                // the true/false.
                if ty == 102 {
                    readings.push(reading("presence_count", Value::Int(raw), None, ch));
                }
            }
        }
        off = start + len;
    }
    Ok(Decoded {
        rec_type: crate::mapping::rec_type_of(domain_fields(&readings))
            .unwrap_or(Model::Lpp.rec_type()),
        readings,
        ..Decoded::default()
    })
}

/// The field names of `readings` that place a frame in a domain: all but `altitude`, which
/// type 121 carries alone as a barometric altitude (the BMP280/BME280 sketches send it with
/// temperature, humidity and pressure) and which makes no position; a GPS fix (136) has its
/// `lat` and `lon` beside it.
fn domain_fields(readings: &[Reading]) -> impl Iterator<Item = &'static str> + Clone + '_ {
    readings
        .iter()
        .map(|r| r.field)
        .filter(|f| *f != "altitude")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    fn num(field: &'static str, v: f64, unit: &'static str, ch: u8) -> Reading {
        reading(field, Value::Num(v), Some(unit), ch)
    }

    fn ok(s: &str) -> Vec<Reading> {
        let d = decode(&hex(s)).unwrap();
        assert!(d.health.is_empty());
        d.readings
    }

    /// One recType per frame, the one a decoded object with these fields gets: the most
    /// specific domain any of its fields is in, environment when none is.
    #[test]
    fn rec_type_follows_the_types_present() {
        for (frame, want) in [
            ("02 67 FF 38 02 68 8F 0A 73 27 9F", rec_type::ENVIRONMENT),
            ("05 66 01 07 65 01 2C", rec_type::MOTION),
            ("01 67 00 FA 05 66 00", rec_type::MOTION),
            ("03 88 FA D5 00 17 12 9D 00 16 B2", rec_type::GPS),
            (
                "01 67 00 FA 03 88 FA D5 00 17 12 9D 00 16 B2",
                rec_type::GPS,
            ),
            ("01 79 00 64", rec_type::ENVIRONMENT),
            ("01 67 00 FA 02 79 00 64", rec_type::ENVIRONMENT),
            ("07 65 01 2C", rec_type::LIGHT),
            ("01 67 00 FA 07 65 01 2C", rec_type::ENVIRONMENT),
            ("01 7D 01 90", rec_type::ENVIRONMENT),
            ("01 00 01 02 8E 01 03 02 00 64", rec_type::ENVIRONMENT),
        ] {
            assert_eq!(decode(&hex(frame)).unwrap().rec_type, want, "{frame}");
        }
    }

    // docs/codecs.md example 1 (two channels, three values).
    #[test]
    fn worked_example_temperature_humidity_pressure() {
        assert_eq!(
            ok("02 67 FF 38 02 68 8F 0A 73 27 9F"),
            vec![
                num("temperature", -20.0, "°C", 2),
                num("humidity", 71.5, "%RH", 2),
                num("pressure", 1014.3, "hPa", 10),
            ]
        );
    }

    // docs/codecs.md example 2.
    #[test]
    fn worked_example_presence_illuminance() {
        assert_eq!(
            ok("05 66 01 07 65 01 2C"),
            vec![
                reading("presence", Value::Bool(true), None, 5),
                reading("presence_count", Value::Int(1), None, 5),
                num("illuminance", 300.0, "lx", 7),
            ]
        );
    }

    // docs/codecs.md example 3: GPS, sign-extended from bit 23.
    #[test]
    fn worked_example_gps() {
        assert_eq!(
            ok("03 88 FA D5 00 17 12 9D 00 16 B2"),
            vec![
                num("lat", -33.8688, "°", 3),
                num("lon", 151.2093, "°", 3),
                num("altitude", 58.1, "m", 3),
            ]
        );
    }

    #[test]
    fn gps_extremes() {
        // lat −90° (0xF2_4460), lon 180° (0x1B_7740), alt 0xFFFFFF = −1 → −0.01 m.
        assert_eq!(
            ok("01 88 F2 44 60 1B 77 40 FF FF FF"),
            vec![
                num("lat", -90.0, "°", 1),
                num("lon", 180.0, "°", 1),
                num("altitude", -0.01, "m", 1),
            ]
        );
        // Off the globe: a frame of the largest values (838.8607°, 838.8607°), lat 90.0001°
        // (0x0D_BBA1), lon −180.0001° (0xE4_88BF).
        let off_globe = |payload: &str| decode(&hex(payload)).unwrap_err();
        let invalid = CodecError::Invalid {
            codec: CODEC,
            offset: 2,
            what: "GPS position off the globe",
        };
        assert_eq!(off_globe("01 88 7F FF FF 7F FF FF 00 00 00"), invalid);
        assert_eq!(off_globe("01 88 0D BB A1 00 00 00 00 00 00"), invalid);
        assert_eq!(off_globe("01 88 00 00 00 E4 88 BF 00 00 00"), invalid);
    }

    #[test]
    fn temperature_resolution_is_exact() {
        // 0x00D7 = 215 → 21.5 exactly; 0x0110 = 272 → 27.2.
        assert_eq!(
            ok("03 67 00 D7 05 67 01 10"),
            vec![
                num("temperature", 21.5, "°C", 3),
                num("temperature", 27.2, "°C", 5)
            ]
        );
        assert_eq!(
            ok("01 67 80 00"),
            vec![num("temperature", -3276.8, "°C", 1)]
        );
        assert_eq!(ok("01 67 7F FF"), vec![num("temperature", 3276.7, "°C", 1)]);
    }

    #[test]
    fn unsigned_types_are_not_sign_extended() {
        assert_eq!(
            ok("01 80 FF FF 02 73 FF FF 03 74 FF FF 04 75 FF FF 05 65 FF FF 06 68 FF"),
            vec![
                num("power", 65_535.0, "W", 1),
                num("pressure", 6553.5, "hPa", 2),
                num("voltage", 655.35, "V", 3),
                num("current", 65.535, "A", 4),
                num("illuminance", 65_535.0, "lx", 5),
                num("humidity", 127.5, "%RH", 6),
            ]
        );
        assert_eq!(
            ok("01 76 FF FF FF FF 02 82 FF FF FF FF 03 83 FF FF FF FF 04 85 FF FF FF FF"),
            vec![
                num("frequency", 4_294_967_295.0, "Hz", 1),
                num("distance", 4_294_967.295, "m", 2),
                num("energy", 4_294_967.295, "kWh", 3),
                reading("unix_time", Value::Int(4_294_967_295), Some("s"), 4),
            ]
        );
        assert_eq!(
            ok("07 64 FF FF FF FF 08 84 FF FF 09 7D FF FF 0A 78 FF"),
            vec![
                reading("generic_sensor", Value::Int(4_294_967_295), None, 7),
                num("direction", 65_535.0, "°", 8),
                num("co2", 65_535.0, "ppm", 9),
                num("percentage", 255.0, "%", 10),
            ]
        );
    }

    #[test]
    fn signed_types() {
        assert_eq!(
            ok("01 02 FF 9C 02 03 00 64 03 79 FF FE"),
            vec![
                reading("analog_input", Value::Num(-1.0), None, 1),
                reading("analog_output", Value::Num(1.0), None, 2),
                num("altitude", -2.0, "m", 3),
            ]
        );
    }

    #[test]
    fn accelerometer_and_gyrometer() {
        assert_eq!(
            ok("06 71 04 D2 FB 2E 00 00 07 86 01 F4 FE 0C 80 00"),
            vec![
                num("acceleration_x", 1.234, "g", 6),
                num("acceleration_y", -1.234, "g", 6),
                num("acceleration_z", 0.0, "g", 6),
                num("angular_velocity_x", 5.0, "°/s", 7),
                num("angular_velocity_y", -5.0, "°/s", 7),
                num("angular_velocity_z", -327.68, "°/s", 7),
            ]
        );
    }

    #[test]
    fn digital_switch_colour() {
        assert_eq!(
            ok("01 00 01 02 01 FF 03 8E 01 04 8E 00 05 87 FF 80 00 06 66 00"),
            vec![
                reading("digital_input", Value::Int(1), None, 1),
                reading("digital_output", Value::Int(255), None, 2),
                reading("switch", Value::Bool(true), None, 3),
                reading("switch", Value::Bool(false), None, 4),
                reading("colour_r", Value::Int(255), None, 5),
                reading("colour_g", Value::Int(128), None, 5),
                reading("colour_b", Value::Int(0), None, 5),
                reading("presence", Value::Bool(false), None, 6),
                reading("presence_count", Value::Int(0), None, 6),
            ]
        );
        assert_eq!(
            ok("01 66 07"),
            vec![
                reading("presence", Value::Bool(true), None, 1),
                reading("presence_count", Value::Int(7), None, 1),
            ]
        );
    }

    #[test]
    fn unknown_type_reports_offset_of_type_byte() {
        assert_eq!(
            decode(&hex("02 67 00 D7 03 FF 01")).unwrap_err(),
            CodecError::UnknownType {
                codec: CODEC,
                offset: 5,
                byte: 0xFF
            }
        );
        // The old ElectronicCats codes 143/144 are not accepted.
        assert_eq!(
            decode(&hex("01 8F 01 90")).unwrap_err(),
            CodecError::UnknownType {
                codec: CODEC,
                offset: 1,
                byte: 0x8F
            }
        );
        let e = decode(&hex("01 7A 00 00 00")).unwrap_err();
        assert_eq!(e.to_string(), "cayenne-lpp: unknown type 0x7a at offset 1");
    }

    #[test]
    fn truncated() {
        // Value cut short.
        assert_eq!(
            decode(&hex("02 67 FF 38 02 68")).unwrap_err(),
            CodecError::Truncated {
                codec: CODEC,
                need: 7,
                got: 6
            }
        );
        assert_eq!(
            decode(&hex("03 88 FA D5 00 17 12 9D 00 16")).unwrap_err(),
            CodecError::Truncated {
                codec: CODEC,
                need: 11,
                got: 10
            }
        );
        // Channel without a type byte.
        assert_eq!(
            decode(&hex("02 67 FF 38 02")).unwrap_err(),
            CodecError::Truncated {
                codec: CODEC,
                need: 6,
                got: 5
            }
        );
        assert_eq!(decode(&[]).unwrap_err(), CodecError::Empty);
    }
}
