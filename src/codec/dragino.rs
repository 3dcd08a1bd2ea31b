//! Dragino LHT65 / LHT65N temperature & humidity sensor (docs/codecs.md, "Dragino LHT65 / LHT65N").
//!
//! fPort 2, 11 bytes, big-endian. The 4 external-sensor bytes may be omitted when the
//! external type carries no value (LHT65N manual), so 7-byte frames are accepted then.
//!
//! * Bytes 0-1: battery status (bits 15..14) and battery mV (bits 13..0), except ext type 9.
//! * Bytes 2-3: internal temperature s16 × 0.01 °C (0x7FFF = no reading, as for the probe).
//! * Bytes 4-5: humidity, low 12 bits × 0.1 %RH.
//! * Byte 6: bits 3..0 external type, bit 7 external sensor not connected (then no external
//!   value is emitted, whatever the type).
//! * Ext type 9 (DS18B20 + timestamp): bytes 0-1 are the probe temperature, the battery
//!   status moves to byte 4 bits 7..6, bytes 7-10 are the unix time of the measurement:
//!   every reading carries that `time`, and no voltage is reported.
//! * Ext type 15 (probe ID report) is not telemetry (`Invalid`); an undocumented ext type
//!   is `UnknownType` at offset 6 (it may change the meaning of the other bytes, as 9 does).
//!
//! Both ids decode the same layout; they differ only in name.
use super::{rec_type, Bytes, CodecError, Decoded, Example, Reading};

models! {
    Lht65 => "dragino-lht65",
    Lht65n => "dragino-lht65n",
}

const PORT: u8 = 2;

impl Model {
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Lht65 | Model::Lht65n => rec_type::ENVIRONMENT,
        }
    }

    pub fn example(self) -> Example {
        let hex = match self {
            Model::Lht65 => "cba009c401f4017fff7fff",
            Model::Lht65n => "8b2cff3803200000000000",
        };
        Example { fport: PORT, hex }
    }

    pub fn decode(self, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        match self {
            Model::Lht65 | Model::Lht65n => decode(self.id(), fport, p),
        }
    }
}
/// Temperature raw value meaning "no reading" (probe absent or failed).
const NO_READING: i16 = 0x7FFF;

fn temperature(raw: u16) -> Option<f64> {
    let t = raw as i16;
    (t != NO_READING).then(|| f64::from(t) / 100.0)
}

pub fn decode(codec: &'static str, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    if let Some(port) = fport {
        if port != PORT {
            return Err(CodecError::WrongPort { codec, fport: port });
        }
    }
    let b = Bytes::new(codec, p);
    b.need(7)?;
    let ext = b.u8(6)?;
    let ty = ext & 0x0F;
    let connected = ext & 0x80 == 0;
    let mut d = Decoded {
        rec_type: rec_type::ENVIRONMENT,
        ..Decoded::default()
    };
    if ty == 15 {
        return Err(CodecError::Invalid {
            codec,
            offset: 6,
            what: "DS18B20 ID report, not telemetry",
        });
    }
    if !matches!(ty, 0 | 1 | 4..=9) {
        return Err(CodecError::UnknownType {
            codec,
            offset: 6,
            byte: ext,
        });
    }
    let ext_len = match ty {
        0 => 0,
        8 | 9 => 4,
        _ => 2,
    };
    // Type 9 always needs its timestamp; other external values only when connected.
    if ty == 9 || (connected && ext_len > 0) {
        b.need(7 + ext_len)?;
    }
    let humidity = Reading::num("humidity", f64::from(b.u16be(4)? & 0x0FFF) / 10.0, "%RH");
    let internal = temperature(b.u16be(2)?).map(|t| Reading::num("temperature", t, "°C"));
    if ty == 9 {
        let t = u64::from(b.u32be(7)?);
        d.readings.extend(internal.map(|r| r.at(t)));
        d.readings.push(humidity.at(t));
        if connected {
            if let Some(probe) = temperature(b.u16be(0)?) {
                d.readings
                    .push(Reading::num("ext_temperature", probe, "°C").ctx(1).at(t));
            }
        }
        d.health.push(Reading::int(
            "battery_status",
            i64::from(b.u8(4)? >> 6),
            None,
        ));
        return Ok(d);
    }
    let bat = b.u16be(0)?;
    d.health.push(Reading::num(
        "voltage",
        f64::from(bat & 0x3FFF) / 1000.0,
        "V",
    ));
    d.health
        .push(Reading::int("battery_status", i64::from(bat >> 14), None));
    d.readings.extend(internal);
    d.readings.push(humidity);
    if !connected {
        return Ok(d);
    }
    match ty {
        1 => {
            if let Some(t) = temperature(b.u16be(7)?) {
                d.readings
                    .push(Reading::num("ext_temperature", t, "°C").ctx(1));
            }
        }
        4 => {
            d.readings
                .push(Reading::int("pin_level", i64::from(b.u8(7)?), None));
            d.readings.push(Reading::flag("interrupt", b.u8(8)? == 1));
        }
        5 => d
            .readings
            .push(Reading::num("illuminance", f64::from(b.u16be(7)?), "lx")),
        6 => d.readings.push(Reading::num(
            "analog_input",
            f64::from(b.u16be(7)?) / 1000.0,
            "V",
        )),
        7 => d.readings.push(Reading::int(
            "events_since_reset",
            i64::from(b.u16be(7)?),
            None,
        )),
        8 => {
            let c = b.u32be(7)?;
            d.readings
                .push(Reading::int("events_since_reset", i64::from(c), None));
        }
        _ => {}
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "dragino-lht65n";

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn n(field: &'static str, v: f64, unit: &'static str) -> Reading {
        Reading::num(field, v, unit)
    }

    // docs/codecs.md example 1: probe type 1 but 0x7FFF → no ext temperature.
    #[test]
    fn worked_example_1() {
        let d = decode(C, Some(2), &hex("CB A0 09 C4 01 F4 01 7F FF 7F FF")).unwrap();
        assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            d.readings,
            vec![n("temperature", 25.0, "°C"), n("humidity", 50.0, "%RH")]
        );
        assert_eq!(
            d.health,
            vec![
                n("voltage", 2.976, "V"),
                Reading::int("battery_status", 3, None)
            ]
        );
    }

    // docs/codecs.md example 2: negative temperature, no external sensor.
    #[test]
    fn worked_example_2() {
        let d = decode(C, None, &hex("8B 2C FF 38 03 20 00 00 00 00 00")).unwrap();
        assert_eq!(
            d.readings,
            vec![n("temperature", -2.0, "°C"), n("humidity", 80.0, "%RH")]
        );
        assert_eq!(
            d.health,
            vec![
                n("voltage", 2.86, "V"),
                Reading::int("battery_status", 2, None)
            ]
        );
        // The 7-byte form of the same frame.
        let short = decode(C, None, &hex("8B 2C FF 38 03 20 00")).unwrap();
        assert_eq!(short, d);
    }

    #[test]
    fn probe_temperature_and_humidity_mask() {
        // Probe −10.00 °C; humidity high bits are not part of the value.
        let d = decode(C, Some(2), &hex("0B B8 80 00 F3 E8 01 FC 18 7F FF")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("temperature", -327.68, "°C"),
                n("humidity", 100.0, "%RH"),
                n("ext_temperature", -10.0, "°C").ctx(1),
            ]
        );
        // Not connected (bit 7): no external value even though bytes are there.
        let d = decode(C, Some(2), &hex("0B B8 09 C4 01 F4 81 FC 18 7F FF")).unwrap();
        assert_eq!(d.readings.len(), 2);
        // Internal 0x7FFF: no temperature.
        let d = decode(C, Some(2), &hex("0B B8 7F FF 01 F4 00")).unwrap();
        assert_eq!(d.readings, vec![n("humidity", 50.0, "%RH")]);
    }

    #[test]
    fn other_ext_types() {
        let ext = |s: &str| decode(C, None, &hex(s)).unwrap().readings[2..].to_vec();
        assert_eq!(
            ext("0B B8 09 C4 01 F4 04 01 01 00 00"),
            vec![
                Reading::int("pin_level", 1, None),
                Reading::flag("interrupt", true)
            ]
        );
        assert_eq!(
            ext("0B B8 09 C4 01 F4 05 FF FF 00 00"),
            vec![n("illuminance", 65535.0, "lx")]
        );
        assert_eq!(
            ext("0B B8 09 C4 01 F4 06 0C E4 00 00"),
            vec![n("analog_input", 3.3, "V")]
        );
        assert_eq!(
            ext("0B B8 09 C4 01 F4 07 FF FF 00 00"),
            vec![Reading::int("events_since_reset", 65535, None)]
        );
        assert_eq!(
            ext("0B B8 09 C4 01 F4 08 FF FF FF FF"),
            vec![Reading::int("events_since_reset", 4_294_967_295, None)]
        );
    }

    #[test]
    fn ext_type_9_datalog_with_timestamp() {
        // Probe 0xFC18 = −10.00 °C in bytes 0-1; battery status 2 in byte 4 bits 7..6;
        // humidity 0x1F4 = 50.0 %; time 0x6553F100 = 1 700 000 000.
        let d = decode(C, Some(2), &hex("FC 18 09 C4 81 F4 09 65 53 F1 00")).unwrap();
        let t = 1_700_000_000;
        assert_eq!(
            d.readings,
            vec![
                n("temperature", 25.0, "°C").at(t),
                n("humidity", 50.0, "%RH").at(t),
                n("ext_temperature", -10.0, "°C").ctx(1).at(t),
            ]
        );
        assert_eq!(d.health, vec![Reading::int("battery_status", 2, None)]);
        assert!(matches!(
            decode(C, Some(2), &hex("FC 18 09 C4 81 F4 09")).unwrap_err(),
            CodecError::Truncated { need: 11, .. }
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(
            decode(C, Some(3), &hex("CB A0 09 C4 01 F4 00")).unwrap_err(),
            CodecError::WrongPort { codec: C, fport: 3 }
        );
        assert_eq!(
            decode(C, None, &hex("CB A0 09 C4 01 F4")).unwrap_err(),
            CodecError::Truncated {
                codec: C,
                need: 7,
                got: 6
            }
        );
        // Probe announced but its bytes missing.
        assert!(decode(C, None, &hex("CB A0 09 C4 01 F4 01")).is_err());
        assert!(decode(C, None, &hex("CB A0 09 C4 01 F4 08 00 00 00")).is_err());
        assert_eq!(
            decode(C, None, &hex("CB A0 09 C4 01 F4 02 00 00 00 00")).unwrap_err(),
            CodecError::UnknownType {
                codec: C,
                offset: 6,
                byte: 2
            }
        );
        assert!(matches!(
            decode(C, None, &hex("CB A0 09 C4 01 F4 0F 28 FF 00 00")).unwrap_err(),
            CodecError::Invalid { offset: 6, .. }
        ));
    }
}
