//! Dragino devices (docs/codecs.md, "Dragino LHT65 / LHT65N" and "Dragino LDS02"). Each model
//! has a layout of its own on a port of its own, all big-endian: the LHT65 / LHT65N
//! temperature & humidity sensor and the LDS02 door sensor.
use super::{check_port, rec_type, Bytes, CodecError, Decoded, Example, History, Reading};

models! {
    /// LHT65 temperature & humidity sensor (external probe optional).
    Lht65 => "dragino-lht65",
    /// LHT65N, the same layout.
    Lht65n => "dragino-lht65n",
    /// LDS02 magnetic door sensor.
    Lds02 => "dragino-lds02",
}

/// fPort of LHT65 / LHT65N data.
const PORT: u8 = 2;
/// fPort of LDS02 data.
const LDS02_PORT: u8 = 10;

impl Model {
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Lht65 | Model::Lht65n => rec_type::ENVIRONMENT,
            Model::Lds02 => rec_type::OPENCLOSE,
        }
    }

    pub fn example(self) -> Example {
        let (fport, hex) = match self {
            Model::Lht65 => (PORT, "cba009c401f4017fff7fff"),
            Model::Lht65n => (PORT, "8b2cff3803200000000000"),
            Model::Lds02 => (LDS02_PORT, "8bb80100001100000300"),
        };
        Example { fport, hex }
    }

    pub fn decode(self, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        match self {
            Model::Lht65 | Model::Lht65n => lht65(self.id(), fport, p),
            Model::Lds02 => lds02(fport, p),
        }
    }
}

/// Temperature raw value meaning "no reading" (probe absent or failed).
const NO_READING: i16 = 0x7FFF;

fn temperature(raw: u16) -> Option<f64> {
    let t = raw as i16;
    (t != NO_READING).then(|| f64::from(t) / 100.0)
}

/// LHT65 / LHT65N (docs/codecs.md, "Dragino LHT65 / LHT65N").
///
/// fPort 2, 11 bytes. The 4 external-sensor bytes may be omitted when the
/// external type carries no value (LHT65N manual), so 7-byte frames are accepted then.
///
/// * Bytes 0-1: battery status (bits 15..14) and battery mV (bits 13..0), except ext type 9.
/// * Bytes 2-3: internal temperature s16 × 0.01 °C (0x7FFF = no reading, as for the probe).
/// * Bytes 4-5: humidity, low 12 bits × 0.1 %RH.
/// * Byte 6: bits 3..0 external type, bit 6 poll/datalog reply, bit 7 external sensor not
///   connected (then no external value is emitted, whatever the type).
/// * Ext type 9 (DS18B20 + timestamp): bytes 0-1 are the probe temperature, the battery
///   status moves to byte 4 bits 7..6, bytes 7-10 are the unix time of the measurement, and
///   no voltage is reported. The device's periodic uplink in this mode is a reading of now;
///   a datalog reply (bit 6) replays stored data, so its readings are a [`History`] of that
///   time, none a reading of now.
/// * Ext type 15 (probe ID report) is not telemetry (`Invalid`); an undocumented ext type
///   is `UnknownType` at offset 6 (it may change the meaning of the other bytes, as 9 does).
///
/// Both ids decode the same layout; they differ only in name.
fn lht65(codec: &'static str, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    check_port(codec, fport, PORT)?;
    let b = Bytes::new(codec, p);
    b.need(7)?;
    let ext = b.u8(6)?;
    let ty = ext & 0x0F;
    let connected = ext & 0x80 == 0;
    let replay = ext & 0x40 != 0;
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
        let mut readings: Vec<_> = internal.into_iter().chain([humidity]).collect();
        if connected {
            if let Some(probe) = temperature(b.u16be(0)?) {
                readings.push(Reading::num("ext_temperature", probe, "°C").ctx(1));
            }
        }
        let time = b.u32be(7)?;
        match replay {
            true => d.history.push(History { time, readings }),
            false => d.readings = readings,
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

/// LDS02 (docs/codecs.md, "Dragino LDS02"): fPort 10, 10 bytes.
///
/// * Bytes 0-1: bit 15 door open, bits 13..0 battery mV (bit 14 is the water-leak state of
///   the LWL02, which shares the firmware; not an LDS02 value).
/// * Byte 2: mode, 1 on the LDS02 (the LWL02 sends 2 and 3, which mean other bytes):
///   anything else is `UnknownType` at offset 2.
/// * Bytes 3-5: u24 door openings since reset; bytes 6-8: u24 duration of the last opening
///   in minutes (reported in seconds); byte 9 bit 0: the open-too-long alarm.
fn lds02(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let codec = Model::Lds02.id();
    check_port(codec, fport, LDS02_PORT)?;
    let b = Bytes::new(codec, p);
    b.need(10)?;
    let mode = b.u8(2)?;
    if mode != 1 {
        return Err(CodecError::UnknownType {
            codec,
            offset: 2,
            byte: mode,
        });
    }
    let status = b.u16be(0)?;
    let minutes = b.uint_be(6, 3)?;
    Ok(Decoded {
        rec_type: rec_type::OPENCLOSE,
        readings: vec![
            Reading::flag("open", status & 0x8000 != 0),
            Reading::int("events_since_reset", b.uint_be(3, 3)? as i64, None),
            // u24 minutes × 60 fits easily in i64.
            Reading::int("last_open_duration", (minutes * 60) as i64, Some("s")),
            Reading::flag("alarm", b.u8(9)? & 0x01 != 0),
        ],
        health: vec![Reading::num(
            "voltage",
            f64::from(status & 0x3FFF) / 1000.0,
            "V",
        )],
        ..Decoded::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    const C: &str = "dragino-lht65n";

    fn n(field: &'static str, v: f64, unit: &'static str) -> Reading {
        Reading::num(field, v, unit)
    }

    // docs/codecs.md example 1: probe type 1 but 0x7FFF → no ext temperature.
    #[test]
    fn worked_example_1() {
        let d = lht65(C, Some(2), &hex("CB A0 09 C4 01 F4 01 7F FF 7F FF")).unwrap();
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
        let d = lht65(C, None, &hex("8B 2C FF 38 03 20 00 00 00 00 00")).unwrap();
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
        let short = lht65(C, None, &hex("8B 2C FF 38 03 20 00")).unwrap();
        assert_eq!(short, d);
    }

    #[test]
    fn probe_temperature_and_humidity_mask() {
        // Probe −10.00 °C; humidity high bits are not part of the value.
        let d = lht65(C, Some(2), &hex("0B B8 80 00 F3 E8 01 FC 18 7F FF")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                n("temperature", -327.68, "°C"),
                n("humidity", 100.0, "%RH"),
                n("ext_temperature", -10.0, "°C").ctx(1),
            ]
        );
        // Not connected (bit 7): no external value even though bytes are there.
        let d = lht65(C, Some(2), &hex("0B B8 09 C4 01 F4 81 FC 18 7F FF")).unwrap();
        assert_eq!(d.readings.len(), 2);
        // Internal 0x7FFF: no temperature.
        let d = lht65(C, Some(2), &hex("0B B8 7F FF 01 F4 00")).unwrap();
        assert_eq!(d.readings, vec![n("humidity", 50.0, "%RH")]);
    }

    #[test]
    fn other_ext_types() {
        let ext = |s: &str| lht65(C, None, &hex(s)).unwrap().readings[2..].to_vec();
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

    /// Ext type 9: the periodic uplink is a reading of now; a datalog reply (byte 6 bit 6)
    /// is history at its timestamp.
    #[test]
    fn ext_type_9_datalog_with_timestamp() {
        // Probe 0xFC18 = −10.00 °C in bytes 0-1; battery status 2 in byte 4 bits 7..6;
        // humidity 0x1F4 = 50.0 %; time 0x6553F100 = 1 700 000 000.
        let readings = vec![
            n("temperature", 25.0, "°C"),
            n("humidity", 50.0, "%RH"),
            n("ext_temperature", -10.0, "°C").ctx(1),
        ];
        let d = lht65(C, Some(2), &hex("FC 18 09 C4 81 F4 09 65 53 F1 00")).unwrap();
        assert_eq!((&d.readings, &d.history), (&readings, &vec![]));
        assert_eq!(d.health, vec![Reading::int("battery_status", 2, None)]);
        let d = lht65(C, Some(2), &hex("FC 18 09 C4 81 F4 49 65 53 F1 00")).unwrap();
        assert_eq!(d.readings, vec![]);
        assert_eq!(
            d.history,
            vec![History {
                time: 1_700_000_000,
                readings,
            }]
        );
        assert!(matches!(
            lht65(C, Some(2), &hex("FC 18 09 C4 81 F4 09")).unwrap_err(),
            CodecError::Truncated { need: 11, .. }
        ));
    }

    #[test]
    fn errors() {
        assert_eq!(
            lht65(C, Some(3), &hex("CB A0 09 C4 01 F4 00")).unwrap_err(),
            CodecError::WrongPort { codec: C, fport: 3 }
        );
        assert_eq!(
            lht65(C, None, &hex("CB A0 09 C4 01 F4")).unwrap_err(),
            CodecError::Truncated {
                codec: C,
                need: 7,
                got: 6
            }
        );
        // Probe announced but its bytes missing.
        assert!(lht65(C, None, &hex("CB A0 09 C4 01 F4 01")).is_err());
        assert!(lht65(C, None, &hex("CB A0 09 C4 01 F4 08 00 00 00")).is_err());
        assert_eq!(
            lht65(C, None, &hex("CB A0 09 C4 01 F4 02 00 00 00 00")).unwrap_err(),
            CodecError::UnknownType {
                codec: C,
                offset: 6,
                byte: 2
            }
        );
        assert!(matches!(
            lht65(C, None, &hex("CB A0 09 C4 01 F4 0F 28 FF 00 00")).unwrap_err(),
            CodecError::Invalid { offset: 6, .. }
        ));
    }

    // docs/codecs.md, "Dragino LDS02", example 1: open, 3.000 V, 17 openings, last 3 min.
    #[test]
    fn lds02_worked_example() {
        let d = lds02(Some(10), &hex("8B B8 01 000011 000003 00")).unwrap();
        assert_eq!(d.rec_type, rec_type::OPENCLOSE);
        assert_eq!(
            d.readings,
            vec![
                Reading::flag("open", true),
                Reading::int("events_since_reset", 17, None),
                Reading::int("last_open_duration", 180, Some("s")),
                Reading::flag("alarm", false),
            ]
        );
        assert_eq!(d.health, vec![n("voltage", 3.0, "V")]);
        assert_eq!(
            Model::Lds02.decode(None, &hex("8B B8 01 000011 000003 00")),
            Ok(d)
        );
    }

    // Example 2: closed, alarm, maxima not sign-extended; bit 14 (LWL02 leak) ignored.
    #[test]
    fn lds02_closed_alarm_and_maxima() {
        let d = lds02(None, &hex("7F FF 01 FFFFFF FFFFFF 01 AA")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                Reading::flag("open", false),
                Reading::int("events_since_reset", 16_777_215, None),
                Reading::int("last_open_duration", 16_777_215 * 60, Some("s")),
                Reading::flag("alarm", true),
            ]
        );
        assert_eq!(d.health, vec![n("voltage", 16.383, "V")]);
        // Only bit 0 of byte 9 is the alarm.
        let d = lds02(None, &hex("0B B8 01 000000 000000 FE")).unwrap();
        assert_eq!(d.readings[3], Reading::flag("alarm", false));
    }

    #[test]
    fn lds02_errors() {
        let lds = Model::Lds02.id();
        assert_eq!(
            lds02(Some(2), &hex("8B B8 01 000011 000003 00")).unwrap_err(),
            CodecError::WrongPort {
                codec: lds,
                fport: 2
            }
        );
        assert_eq!(
            lds02(Some(10), &hex("8B B8 01 000011 000003")).unwrap_err(),
            CodecError::Truncated {
                codec: lds,
                need: 10,
                got: 9
            }
        );
        // Modes 2 and 3 are the LWL02 water-leak sensor's frames.
        assert_eq!(
            lds02(Some(10), &hex("4B B8 02 000011 000003 00")).unwrap_err(),
            CodecError::UnknownType {
                codec: lds,
                offset: 2,
                byte: 2
            }
        );
    }
}
