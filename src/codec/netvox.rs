//! Netvox R718 family (docs/codecs.md, "Netvox R718 family"): R718A, R718AB, R718F, R718WA.
//!
//! Data reports: fPort 6, 11 bytes: version, device type, report type, battery, then the
//! device payload (big-endian, zero padded). The device-type byte decides the layout and
//! the recType; `netvox-r718` accepts any of the four, the model ids only their own
//! device type (a frame of another model is `Invalid`, not re-interpreted).
//!
//! * R718A / R718AB (environment): temperature s16 × 0.01 °C, humidity u16 × 0.01 %RH.
//! * R718F (openclose): byte 4 is the reed state, but which level means "open" is not
//!   documented, so it is emitted as a raw `contact` state, not as `open`.
//! * R718WA (leak): byte 4, non-zero = leak.
//! * Report type 0x00 (startup/version report) is not telemetry: `Invalid`.
use super::{check_port, rec_type, Bytes, CodecError, Decoded, Example, Reading};

const PORT: u8 = 6;
const LEN: usize = 11;

models! {
    /// `netvox-r718`: any of the four, decided by the device-type byte of each frame.
    Family => "netvox-r718",
    R718a => "netvox-r718a",
    R718ab => "netvox-r718ab",
    R718f => "netvox-r718f",
    R718wa => "netvox-r718wa",
}

impl Model {
    /// The family's frames carry their own recType; environment is its most common one.
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Family | Model::R718a | Model::R718ab => rec_type::ENVIRONMENT,
            Model::R718f => rec_type::OPENCLOSE,
            Model::R718wa => rec_type::LEAK,
        }
    }

    pub fn example(self) -> Example {
        let hex = match self {
            Model::Family | Model::R718a => "010b01a0ff381388000000",
            Model::R718ab => "011301a0ff381388000000",
            Model::R718f => "011d011e01000000000000",
            Model::R718wa => "0132011e01000000000000",
        };
        Example { fport: PORT, hex }
    }

    pub fn decode(self, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        decode(self, fport, p)
    }

    fn from_device_type(b: u8) -> Option<Model> {
        Some(match b {
            0x0B => Model::R718a,
            0x13 => Model::R718ab,
            0x1D => Model::R718f,
            0x32 => Model::R718wa,
            _ => return None,
        })
    }

    fn mismatch(self) -> &'static str {
        match self {
            Model::R718a => "device type byte says R718A, not the configured model",
            Model::R718ab => "device type byte says R718AB, not the configured model",
            Model::R718f => "device type byte says R718F, not the configured model",
            Model::R718wa => "device type byte says R718WA, not the configured model",
            Model::Family => "device type byte does not match",
        }
    }
}

pub fn decode(model: Model, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let codec = model.id();
    check_port(codec, fport, PORT)?;
    let b = Bytes::new(codec, p);
    b.need(LEN)?;
    let device_type = b.u8(1)?;
    let Some(device) = Model::from_device_type(device_type) else {
        return Err(CodecError::UnknownType {
            codec,
            offset: 1,
            byte: device_type,
        });
    };
    if model != Model::Family && model != device {
        return Err(CodecError::Invalid {
            codec,
            offset: 1,
            what: device.mismatch(),
        });
    }
    match b.u8(2)? {
        0x01 => {}
        0x00 => {
            return Err(CodecError::Invalid {
                codec,
                offset: 2,
                what: "startup/version report, not telemetry",
            })
        }
        b => {
            return Err(CodecError::UnknownType {
                codec,
                offset: 2,
                byte: b,
            })
        }
    }
    let mut d = Decoded {
        rec_type: device.rec_type(),
        ..Decoded::default()
    };
    let battery = b.u8(3)?;
    d.health.push(Reading::num(
        "voltage",
        f64::from(battery & 0x7F) / 10.0,
        "V",
    ));
    d.health
        .push(Reading::flag("low_battery", battery & 0x80 != 0));
    match device {
        Model::R718a | Model::R718ab | Model::Family => {
            let t = b.i16be(4)?;
            let h = b.u16be(6)?;
            d.readings
                .push(Reading::num("temperature", f64::from(t) / 100.0, "°C"));
            d.readings
                .push(Reading::num("humidity", f64::from(h) / 100.0, "%RH"));
        }
        Model::R718f => d
            .readings
            .push(Reading::int("contact", i64::from(b.u8(4)?), None)),
        Model::R718wa => d.readings.push(Reading::flag("leak", b.u8(4)? != 0)),
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    // docs/codecs.md worked example.
    #[test]
    fn r718a_worked_example() {
        let p = hex("01 0B 01 A0 FF 38 13 88 00 00 00");
        for m in [Model::Family, Model::R718a] {
            let d = decode(m, Some(6), &p).unwrap();
            assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
            assert_eq!(
                d.readings,
                vec![
                    Reading::num("temperature", -2.0, "°C"),
                    Reading::num("humidity", 50.0, "%RH")
                ]
            );
            assert_eq!(
                d.health,
                vec![
                    Reading::num("voltage", 3.2, "V"),
                    Reading::flag("low_battery", true)
                ]
            );
        }
        // R718AB: same layout, its own device type; extremes.
        let d = decode(
            Model::R718ab,
            None,
            &hex("01 13 01 24 7F FF FF FF 00 00 00"),
        )
        .unwrap();
        assert_eq!(
            d.readings,
            vec![
                Reading::num("temperature", 327.67, "°C"),
                Reading::num("humidity", 655.35, "%RH")
            ]
        );
        assert_eq!(d.health[1], Reading::flag("low_battery", false));
    }

    #[test]
    fn r718f_contact_and_r718wa_leak() {
        let d = decode(
            Model::Family,
            Some(6),
            &hex("01 1D 01 24 01 00 00 00 00 00 00"),
        )
        .unwrap();
        assert_eq!(d.rec_type, rec_type::OPENCLOSE);
        assert_eq!(d.readings, vec![Reading::int("contact", 1, None)]);
        let d = decode(
            Model::R718f,
            Some(6),
            &hex("01 1D 01 24 00 00 00 00 00 00 00"),
        )
        .unwrap();
        assert_eq!(d.readings, vec![Reading::int("contact", 0, None)]);
        let d = decode(
            Model::R718wa,
            Some(6),
            &hex("01 32 01 24 01 00 00 00 00 00 00"),
        )
        .unwrap();
        assert_eq!(d.rec_type, rec_type::LEAK);
        assert_eq!(d.readings, vec![Reading::flag("leak", true)]);
        let d = decode(
            Model::Family,
            None,
            &hex("01 32 01 24 00 00 00 00 00 00 00"),
        )
        .unwrap();
        assert_eq!(d.rec_type, rec_type::LEAK);
        assert_eq!(d.readings, vec![Reading::flag("leak", false)]);
    }

    #[test]
    fn startup_report_is_not_telemetry() {
        let e = decode(
            Model::Family,
            Some(6),
            &hex("01 0B 00 0A 05 20 20 08 11 00 00"),
        )
        .unwrap_err();
        assert_eq!(
            e,
            CodecError::Invalid {
                codec: "netvox-r718",
                offset: 2,
                what: "startup/version report, not telemetry"
            }
        );
    }

    #[test]
    fn errors() {
        let p = hex("01 0B 01 A0 FF 38 13 88 00 00 00");
        assert!(matches!(
            decode(Model::R718f, Some(6), &p).unwrap_err(),
            CodecError::Invalid { offset: 1, .. }
        ));
        assert_eq!(
            decode(Model::Family, Some(7), &p).unwrap_err(),
            CodecError::WrongPort {
                codec: "netvox-r718",
                fport: 7
            }
        );
        assert_eq!(
            decode(Model::Family, Some(6), &p[..10]).unwrap_err(),
            CodecError::Truncated {
                codec: "netvox-r718",
                need: 11,
                got: 10
            }
        );
        assert_eq!(
            decode(
                Model::Family,
                None,
                &hex("01 01 01 A0 FF 38 13 88 00 00 00")
            )
            .unwrap_err(),
            CodecError::UnknownType {
                codec: "netvox-r718",
                offset: 1,
                byte: 0x01
            }
        );
        assert!(matches!(
            decode(
                Model::Family,
                None,
                &hex("01 0B 02 A0 FF 38 13 88 00 00 00")
            )
            .unwrap_err(),
            CodecError::UnknownType { offset: 2, .. }
        ));
    }
}
