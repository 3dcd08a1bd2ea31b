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

/// One datalog entry: every datalog (poll) reply is a run of these.
const ENTRY: usize = 11;

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
///   no voltage is reported. Its periodic uplink is a reading of now.
/// * Ext type 2 (LHT65N with the E2 TMP117 probe, firmware v1.3 on; manual "Ext=2 TMP117
///   Sensor") has type 1's layout: the probe s16 × 0.01 °C in bytes 7-8, emitted as type 1's
///   `ext_temperature` (the same socket). `0x7FFF`, far past the TMP117's −55..150 °C, is no
///   reading as for the DS18B20.
/// * Ext type 15 (probe ID report) is not telemetry (`Invalid`); an undocumented ext type
///   is `UnknownType` at offset 6 (it may change the meaning of the other bytes, as 9 does).
/// * A datalog reply (bit 6) is stored data of any ext type in a layout of its own: see
///   [`datalog`]. Its "nothing stored" form, 11 zero bytes, has bit 6 clear; it is `Invalid`
///   rather than a reading of 0 V, 0 °C and 0 %RH now.
///
/// Both ids decode the same layout; they differ only in name.
fn lht65(codec: &'static str, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    check_port(codec, fport, PORT)?;
    let b = Bytes::new(codec, p);
    b.need(7)?;
    // No live frame is all zero: its battery would be 0 mV.
    if p.len() == ENTRY && p.iter().all(|&x| x == 0) {
        return Err(CodecError::Invalid {
            codec,
            offset: 0,
            what: "11 zero bytes, the datalog reply with nothing stored: no reading",
        });
    }
    let ext = b.u8(6)?;
    if ext & 0x40 != 0 {
        return datalog(codec, &b);
    }
    let ty = ext_type(codec, ext, 6)?;
    let connected = ext & 0x80 == 0;
    let mut d = Decoded {
        rec_type: rec_type::ENVIRONMENT,
        ..Decoded::default()
    };
    let ext_len = match ty {
        0 => 0,
        8 | 9 => 4,
        _ => 2,
    };
    // Type 9 always needs its timestamp; other external values only when connected.
    if ty == 9 || (connected && ext_len > 0) {
        b.need(7 + ext_len)?;
    }
    d.readings = built_in(&b, 0)?;
    if ty == 9 {
        if connected {
            ext_value(&b, ty, 0, &mut d.readings)?;
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
    if !connected {
        return Ok(d);
    }
    match ty {
        8 => {
            let c = b.u32be(7)?;
            d.readings
                .push(Reading::int("events_since_reset", i64::from(c), None));
        }
        _ => ext_value(&b, ty, 7, &mut d.readings)?,
    }
    Ok(d)
}

/// A datalog (poll) reply, byte 6 bit 6 (LHT65 / LHT65N manuals, "Datalog Uplink payload"):
/// as many 11-byte entries as the data rate allows, each `[external sensor data 2][built-in
/// temperature 2][humidity 2][poll flag & ext 1][unix time 4]`, with byte 6's meaning as in a
/// live frame. All of it is stored data: each entry is a [`History`] at its own time, and
/// nothing is of now, not even the battery (bytes 0-1 are the external value here, and byte
/// 4's battery status of type 9 is the stored entry's).
///
/// A reply whose length is not whole entries is `Invalid` at the partial entry; an entry
/// without the poll flag or of a type a live frame refuses fails the whole reply, which then
/// goes out packed. Type 8's 32-bit count does not fit the entry's 2 bytes, so an entry of
/// type 8 carries no external value.
fn datalog(codec: &'static str, b: &Bytes) -> Result<Decoded, CodecError> {
    let partial = b.len() % ENTRY;
    if partial != 0 {
        return Err(CodecError::Invalid {
            codec,
            offset: b.len() - partial,
            what: "datalog reply (byte 6 bit 6) ends in a partial 11-byte entry",
        });
    }
    let mut d = Decoded {
        rec_type: rec_type::ENVIRONMENT,
        ..Decoded::default()
    };
    for at in (0..b.len()).step_by(ENTRY) {
        let ext = b.u8(at + 6)?;
        if ext & 0x40 == 0 {
            return Err(CodecError::Invalid {
                codec,
                offset: at + 6,
                what: "datalog entry without the poll flag (bit 6)",
            });
        }
        let ty = ext_type(codec, ext, at + 6)?;
        let mut readings = built_in(b, at)?;
        if ext & 0x80 == 0 {
            ext_value(b, ty, at, &mut readings)?;
        }
        d.history.push(History {
            time: b.u32be(at + 7)?,
            readings,
        });
    }
    Ok(d)
}

/// The external type in `ext` (the byte at `offset`), if hubgate decodes it.
fn ext_type(codec: &'static str, ext: u8, offset: usize) -> Result<u8, CodecError> {
    match ext & 0x0F {
        15 => Err(CodecError::Invalid {
            codec,
            offset,
            what: "DS18B20 ID report, not telemetry",
        }),
        ty @ (0 | 1 | 2 | 4..=9) => Ok(ty),
        _ => Err(CodecError::UnknownType {
            codec,
            offset,
            byte: ext,
        }),
    }
}

/// Built-in temperature and humidity, at `at + 2` and `at + 4` in a live frame and a datalog
/// entry alike.
fn built_in(b: &Bytes, at: usize) -> Result<Vec<Reading>, CodecError> {
    let internal = temperature(b.u16be(at + 2)?).map(|t| Reading::num("temperature", t, "°C"));
    let humidity = f64::from(b.u16be(at + 4)? & 0x0FFF) / 10.0;
    Ok(internal
        .into_iter()
        .chain([Reading::num("humidity", humidity, "%RH")])
        .collect())
}

/// The 2-byte external value of type `ty` at `at` (type 8's 4 bytes are the caller's).
fn ext_value(b: &Bytes, ty: u8, at: usize, out: &mut Vec<Reading>) -> Result<(), CodecError> {
    match ty {
        // DS18B20 (1, 9) and TMP117 (2) probes: the same encoding.
        1 | 2 | 9 => {
            if let Some(t) = temperature(b.u16be(at)?) {
                out.push(Reading::num("ext_temperature", t, "°C").ctx(1));
            }
        }
        4 => {
            out.push(Reading::int("pin_level", i64::from(b.u8(at)?), None));
            out.push(Reading::flag("interrupt", b.u8(at + 1)? == 1));
        }
        5 => out.push(Reading::num("illuminance", f64::from(b.u16be(at)?), "lx")),
        6 => out.push(Reading::num(
            "analog_input",
            f64::from(b.u16be(at)?) / 1000.0,
            "V",
        )),
        7 => out.push(Reading::int(
            "events_since_reset",
            i64::from(b.u16be(at)?),
            None,
        )),
        _ => {}
    }
    Ok(())
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

    /// The 2-byte external values, the same in a live frame (bytes 7-8) and in a datalog
    /// entry (bytes 0-1, as the vendor decoder reads them).
    #[test]
    fn other_ext_types() {
        let cases = [
            (
                4,
                "01 01",
                vec![
                    Reading::int("pin_level", 1, None),
                    Reading::flag("interrupt", true),
                ],
            ),
            (5, "FF FF", vec![n("illuminance", 65535.0, "lx")]),
            (6, "0C E4", vec![n("analog_input", 3.3, "V")]),
            (
                7,
                "FF FF",
                vec![Reading::int("events_since_reset", 65535, None)],
            ),
        ];
        for (ty, value, want) in cases {
            let live = lht65(
                C,
                None,
                &hex(&format!("0B B8 09 C4 01 F4 0{ty} {value} 00 00")),
            );
            assert_eq!(live.unwrap().readings[2..], want, "type {ty}");
            let entry = format!("{value} 09 C4 01 F4 4{ty} 65 53 F1 00");
            let d = lht65(C, None, &hex(&entry)).unwrap();
            assert_eq!((&d.readings, &d.health), (&vec![], &vec![]), "type {ty}");
            assert_eq!(d.history.len(), 1, "type {ty}");
            assert_eq!(d.history[0].time, 1_700_000_000, "type {ty}");
            assert_eq!(d.history[0].readings[2..], want, "datalog type {ty}");
        }
        assert_eq!(
            lht65(C, None, &hex("0B B8 09 C4 01 F4 08 FF FF FF FF"))
                .unwrap()
                .readings[2..],
            [Reading::int("events_since_reset", 4_294_967_295, None)]
        );
    }

    /// Ext type 9: the periodic uplink is a reading of now; a datalog reply (byte 6 bit 6)
    /// is history at its timestamp, as for every other type.
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
        // The battery status in byte 4 is the stored entry's, not of now.
        assert_eq!(d.health, vec![]);
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

    /// A datalog poll reply (byte 6 bit 6) of an LHT65/LHT65N with any ext type but 9. Per
    /// Dragino's manual ("Datalog Uplink payload") each 11-byte entry is external sensor data
    /// (2), built-in temperature (2), humidity (2), poll flag & ext (1) and the entry's unix
    /// time (4), and a reply holds as many entries as the data rate allows (4 at US915 DR1).
    /// Example data from the manual: 2021-01-19 04:27:03 22.00 °C 32.6 %RH and 04:28:57
    /// 21.90 °C 33.1 %RH, DS18B20 reading 327.67 (0x7FFF).
    #[test]
    fn datalog_reply_of_ext_type_1_is_history_entry_by_entry() {
        let reply = hex("7FFF 0898 0146 41 60065F97 7FFF 088E 014B 41 60066009");
        let d = lht65(C, Some(2), &reply).unwrap();
        let mut wrong = Vec::new();
        if !d.readings.is_empty() {
            wrong.push(format!(
                "readings of now from a reply of stored data: {:?}",
                d.readings
            ));
        }
        if d.health.iter().any(|r| r.field == "voltage") {
            wrong.push(format!(
                "bytes 0-1 (external sensor data) read as battery: {:?}",
                d.health
            ));
        }
        let times: Vec<u32> = d.history.iter().map(|h| h.time).collect();
        if times != [0x6006_5F97, 0x6006_6009] {
            wrong.push(format!("history times {times:x?}, want both entries"));
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        // The values, entry by entry; the probe's 0x7FFF is no reading, and nothing is of now.
        assert_eq!(
            d.history,
            vec![
                History {
                    time: 0x6006_5F97,
                    readings: vec![n("temperature", 22.0, "°C"), n("humidity", 32.6, "%RH")],
                },
                History {
                    time: 0x6006_6009,
                    readings: vec![n("temperature", 21.9, "°C"), n("humidity", 33.1, "%RH")],
                },
            ]
        );
        assert_eq!(d.health, vec![]);
        assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
    }

    /// "If device doesn't have any data in the polling time, device will uplink 11 bytes of 0"
    /// (manual): that is no reading, not 0.00 °C and 0.0 %RH now.
    #[test]
    fn empty_datalog_reply_is_no_reading() {
        let d = lht65(C, Some(2), &[0; 11]);
        assert!(d.as_ref().map_or(true, |d| d.readings.is_empty()), "{d:?}");
        assert!(
            matches!(d, Err(CodecError::Invalid { offset: 0, .. })),
            "{d:?}"
        );
        // Only the whole 11 zero bytes: a zero battery alone is still a frame.
        let d = lht65(C, Some(2), &hex("0000 09C4 01F4 00 00000000")).unwrap();
        assert_eq!(d.readings.len(), 2);
    }

    /// The probe in a datalog entry is bytes 0-1; bit 7 (not connected) drops it as in a live
    /// frame; type 8's 32-bit count has no room in the entry.
    #[test]
    fn datalog_ext_values_per_type() {
        let ext = |s: &str| {
            let d = lht65(C, None, &hex(s)).unwrap();
            assert_eq!((&d.readings, &d.health), (&vec![], &vec![]), "{s}");
            assert_eq!(d.history.len(), 1, "{s}");
            d.history[0].readings[2..].to_vec()
        };
        assert_eq!(
            ext("FC18 09C4 01F4 41 6553F100"),
            vec![n("ext_temperature", -10.0, "°C").ctx(1)]
        );
        assert_eq!(ext("FC18 09C4 01F4 C1 6553F100"), vec![]);
        assert_eq!(ext("FC18 09C4 01F4 40 6553F100"), vec![]);
        assert_eq!(ext("FFFF 09C4 01F4 48 6553F100"), vec![]);
        // Each entry's own byte 6, and its own time.
        let d = lht65(
            C,
            None,
            &hex("FC18 09C4 01F4 41 6553F100 0CE4 09C4 01F4 46 6553F164"),
        )
        .unwrap();
        let got: Vec<_> = d
            .history
            .iter()
            .map(|h| (h.time, h.readings[2].clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1_700_000_000, n("ext_temperature", -10.0, "°C").ctx(1)),
                (1_700_000_100, n("analog_input", 3.3, "V")),
            ]
        );
        // The most a US915 DR3 reply holds: 22 entries, all of them.
        let d = lht65(C, None, &hex(&"FC18 09C4 01F4 41 6553F100".repeat(22))).unwrap();
        assert_eq!(d.history.len(), 22);
    }

    /// A reply that is not whole entries, or an entry that is not one, is refused whole.
    #[test]
    fn datalog_errors() {
        let entry = "FC18 09C4 01F4 41 6553F100";
        let e = lht65(C, None, &hex(&format!("{entry} 0000"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "dragino-lht65n: datalog reply (byte 6 bit 6) ends in a partial 11-byte entry \
             at offset 11"
        );
        assert!(matches!(
            lht65(C, None, &hex("FC18 09C4 01F4 41")).unwrap_err(),
            CodecError::Invalid { offset: 0, .. }
        ));
        assert!(matches!(
            lht65(C, None, &hex(&format!("{entry} {}", "00".repeat(11)))).unwrap_err(),
            CodecError::Invalid { offset: 17, .. }
        ));
        assert_eq!(
            lht65(
                C,
                None,
                &hex(&format!("{entry} FC18 09C4 01F4 43 6553F100"))
            )
            .unwrap_err(),
            CodecError::UnknownType {
                codec: C,
                offset: 17,
                byte: 0x43
            }
        );
        assert!(matches!(
            lht65(
                C,
                None,
                &hex(&format!("{entry} FC18 09C4 01F4 4F 6553F100"))
            )
            .unwrap_err(),
            CodecError::Invalid { offset: 17, .. }
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
        // Type 3 is in no Dragino document.
        assert_eq!(
            lht65(C, None, &hex("CB A0 09 C4 01 F4 03 00 00 00 00")).unwrap_err(),
            CodecError::UnknownType {
                codec: C,
                offset: 6,
                byte: 3
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

    /// Dragino's LHT65N manual ("2.4.6.4 Ext=2 TMP117 Sensor (since Firmware v1.3)") and
    /// TTN's vendor/dragino/lht65n.js decode ext type 2 as the TMP117 probe: s16 × 0.01 °C in
    /// bytes 7-8 (`TempC_TMP117`), beside the battery and built-in values as for type 1; in a
    /// datalog entry the probe is bytes 0-1, as for types 1 and 9 (the vendor's `datalog`).
    #[test]
    fn ext_type_2_is_the_tmp117_probe() {
        // Vendor: BatV 2.976, TempC_SHT 25.00, Hum_SHT 50.0, TempC_TMP117 27.81.
        let d = lht65(C, Some(2), &hex("CB A0 09 C4 01 F4 02 0A DD 7F FF")).unwrap();
        let readings = vec![
            n("temperature", 25.0, "°C"),
            n("humidity", 50.0, "%RH"),
            n("ext_temperature", 27.81, "°C").ctx(1),
        ];
        assert_eq!(d.readings, readings);
        assert_eq!(
            d.health,
            vec![
                n("voltage", 2.976, "V"),
                Reading::int("battery_status", 3, None)
            ]
        );
        // Below zero (s16), and not connected (bit 7): no probe value.
        let d = lht65(C, Some(2), &hex("CB A0 09 C4 01 F4 02 FC 18 00 00")).unwrap();
        assert_eq!(d.readings[2..], [n("ext_temperature", -10.0, "°C").ctx(1)]);
        let d = lht65(C, Some(2), &hex("CB A0 09 C4 01 F4 82 0A DD 00 00")).unwrap();
        assert_eq!(d.readings, readings[..2]);
        // Datalog entry: the probe in bytes 0-1, at the entry's time.
        let d = lht65(C, Some(2), &hex("0ADD 09C4 01F4 42 6553F100")).unwrap();
        assert_eq!((&d.readings, &d.health), (&vec![], &vec![]));
        assert_eq!(
            d.history,
            vec![History {
                time: 1_700_000_000,
                readings,
            }]
        );
    }
}
