//! The CBOR envelope a wired sensor sends over a serial line, one per frame.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{de, Deserialize, Deserializer};

use super::{ParseError, Parsed};
use crate::ids::DevEui;
use crate::uplink::{Radio, Uplink};

/// The CBOR envelope of a wired sensor's frame: a map with text keys
///
/// | key       | type                                               |          |
/// |-----------|----------------------------------------------------|----------|
/// | `dev_eui` | 8-byte byte string, or 16 hex digits (`-`/`:` ok)   | required |
/// | `payload` | byte string, or hex text                           | required |
/// | `fport`   | unsigned integer 0..=255                           | optional |
/// | `fcnt`    | unsigned integer (frame counter; keeps record ids distinct) | optional |
/// | `rssi`    | integer dBm                                        | optional |
/// | `snr`     | number dB                                          | optional |
/// | `time`    | Unix seconds (integer or float), or RFC 3339 text; 1970..=9999 | optional, else (or if bad) receive time |
///
/// Other keys are ignored. Without `fcnt`, the record id is made from the time (ms), so two
/// equal payloads of one device with one `time` count as duplicates. An optional key of the
/// wrong type or out of range (a fractional `fcnt`, an `fport` of 256, `snr` as text) is taken
/// as not given rather than costing the reading, which a serial line cannot send again; a
/// fractional `rssi` is rounded.
///
/// Bytes that are not CBOR, or CBOR that is no envelope (not a map, or a map with neither
/// `dev_eui` nor `payload`), are [`ParseError::Cbor`]; an envelope whose `dev_eui` or
/// `payload` is missing, of the wrong type or does not decode is [`ParseError::CborField`]:
/// a reading that was sent, kept as a dead letter by the serial source.
pub fn parse(bytes: &[u8], received: SystemTime) -> Result<Parsed<Uplink>, ParseError> {
    let env: Envelope = serde_cbor::from_slice(bytes).map_err(|e| {
        let e = e.to_string().into();
        if is_envelope(bytes) {
            ParseError::CborField(e)
        } else {
            ParseError::Cbor(e)
        }
    })?;
    let given = env.time.as_ref().and_then(|t| time_of(t).transpose());
    let (time, bad_time) = super::time_or_received(given, received);
    let value = Uplink {
        dev_eui: env.dev_eui,
        dev_addr: None,
        device_name: None,
        fport: whole(env.fport),
        fcnt: whole(env.fcnt),
        payload: env.payload,
        time,
        radio: Radio {
            rssi: match env.rssi {
                Some(serde_cbor::Value::Float(f)) if f.is_finite() => whole(Some(f.round())),
                other => whole(other),
            },
            snr: match env.snr {
                Some(serde_cbor::Value::Float(f)) => Some(f).filter(|f| f.is_finite()),
                Some(serde_cbor::Value::Integer(i)) => Some(i as f64),
                _ => None,
            },
            ..Radio::default()
        },
        ns: crate::uplink::NsDecoded::default(),
        same_ms_index: 0,
    };
    Ok(Parsed { value, bad_time })
}

/// Whether `bytes` that did not make an [`Envelope`] are one all the same: one CBOR map
/// with a `dev_eui` or `payload` key. Read again only for a frame that failed.
fn is_envelope(bytes: &[u8]) -> bool {
    use serde_cbor::Value;
    match serde_cbor::from_slice::<Value>(bytes) {
        Ok(Value::Map(m)) => ["dev_eui", "payload"]
            .iter()
            .any(|k| m.contains_key(&Value::Text((*k).into()))),
        _ => false,
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(deserialize_with = "de_dev_eui")]
    dev_eui: DevEui,
    #[serde(default)]
    fport: Option<serde_cbor::Value>,
    #[serde(default)]
    fcnt: Option<serde_cbor::Value>,
    #[serde(deserialize_with = "de_payload")]
    payload: Vec<u8>,
    #[serde(default)]
    rssi: Option<serde_cbor::Value>,
    #[serde(default)]
    snr: Option<serde_cbor::Value>,
    #[serde(default)]
    time: Option<serde_cbor::Value>,
}

/// An optional whole number: `None` unless `v` is an integer (or a float without a fraction)
/// that fits `T`.
fn whole<T: TryFrom<i128>>(v: Option<impl Into<serde_cbor::Value>>) -> Option<T> {
    match v.map(Into::into)? {
        serde_cbor::Value::Integer(i) => T::try_from(i).ok(),
        serde_cbor::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e18 => {
            T::try_from(f as i128).ok()
        }
        _ => None,
    }
}

/// Bytes given as a CBOR byte string or as hex text.
struct BytesOrHex;

impl<'de> de::Visitor<'de> for BytesOrHex {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string or hex text")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        let clean: String = v.chars().filter(|c| !matches!(c, '-' | ':')).collect();
        hex::decode(clean).map_err(|_| E::custom(format!("bad hex {:?}", super::Excerpt::from(v))))
    }
}

fn de_dev_eui<'de, D: Deserializer<'de>>(d: D) -> Result<DevEui, D::Error> {
    let v = d.deserialize_any(BytesOrHex)?;
    v.as_slice()
        .try_into()
        .map(DevEui)
        .map_err(|_| de::Error::custom(format!("dev_eui must be 8 bytes, not {}", v.len())))
}

fn de_payload<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_any(BytesOrHex)
}

/// The envelope's `time`: Unix seconds (integer or float) or RFC 3339 text, null for "not
/// given". Anything else, or a time a record cannot carry, is a `bad_time` (the receive time
/// stands in).
fn time_of(v: &serde_cbor::Value) -> Result<Option<SystemTime>, ParseError> {
    use serde_cbor::Value as V;
    let t = match v {
        V::Null => return Ok(None),
        V::Integer(secs) => u64::try_from(*secs)
            .ok()
            .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s))),
        V::Float(secs) => Duration::try_from_secs_f64(*secs)
            .ok()
            .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d)),
        V::Text(s) => return super::parse_time(s).map(Some),
        _ => None,
    };
    match t.filter(|t| crate::uplink::valid_time(*t)) {
        Some(t) => Ok(Some(t)),
        None => Err(ParseError::Time(format!("{v:?}").into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_cbor::Value;
    use std::collections::BTreeMap;

    fn envelope(fields: &[(&str, Value)]) -> Vec<u8> {
        let map: BTreeMap<Value, Value> = fields
            .iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v.clone()))
            .collect();
        serde_cbor::to_vec(&Value::Map(map)).unwrap()
    }

    const EUI: [u8; 8] = [0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34];

    #[test]
    fn full_envelope() {
        let b = envelope(&[
            ("dev_eui", Value::Bytes(EUI.to_vec())),
            ("fport", Value::Integer(103)),
            ("fcnt", Value::Integer(7)),
            ("payload", Value::Bytes(vec![1, 2, 3])),
            ("rssi", Value::Integer(-71)),
            ("snr", Value::Float(6.5)),
            ("time", Value::Integer(1_700_000_000)),
            ("extra", Value::Text("ignored".into())),
        ]);
        let up = parse(&b, SystemTime::UNIX_EPOCH).unwrap().value;
        assert_eq!(up.dev_eui, DevEui(EUI));
        assert_eq!((up.fport, up.fcnt), (Some(103), Some(7)));
        assert_eq!(up.payload, [1, 2, 3]);
        assert_eq!((up.radio.rssi, up.radio.snr), (Some(-71), Some(6.5)));
        assert_eq!(
            up.time,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }

    /// Optional keys of the wrong type or out of range are taken as not given: a serial
    /// line cannot send the reading again.
    #[test]
    fn odd_optional_keys_do_not_cost_the_reading() {
        let odd = |key: &str, v: Value| {
            let b = envelope(&[
                ("dev_eui", Value::Bytes(EUI.to_vec())),
                ("payload", Value::Bytes(vec![1])),
                (key, v),
            ]);
            let up = parse(&b, SystemTime::UNIX_EPOCH).unwrap().value;
            assert_eq!(up.payload, [1]);
            (up.fport, up.fcnt, up.radio.rssi, up.radio.snr)
        };
        assert_eq!(odd("fport", Value::Integer(256)), (None, None, None, None));
        assert_eq!(
            odd("fport", Value::Text("7".into())),
            (None, None, None, None)
        );
        assert_eq!(odd("fcnt", Value::Float(7.5)), (None, None, None, None));
        assert_eq!(odd("fcnt", Value::Float(7.0)), (None, Some(7), None, None));
        assert_eq!(odd("fcnt", Value::Integer(-1)), (None, None, None, None));
        assert_eq!(
            odd("rssi", Value::Float(-71.5)),
            (None, None, Some(-72), None)
        );
        assert_eq!(
            odd("rssi", Value::Float(f64::NAN)),
            (None, None, None, None)
        );
        assert_eq!(odd("rssi", Value::Bytes(vec![1])), (None, None, None, None));
        assert_eq!(
            odd("snr", Value::Text("7".into())),
            (None, None, None, None)
        );
        assert_eq!(odd("snr", Value::Integer(7)), (None, None, None, Some(7.0)));
        assert_eq!(
            odd("snr", Value::Float(f64::INFINITY)),
            (None, None, None, None)
        );
    }

    #[test]
    fn hex_text_forms_and_defaults() {
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(42);
        let b = envelope(&[
            ("dev_eui", Value::Text("58-A0-CB-00-00-10-12-34".into())),
            ("payload", Value::Text("0a0B".into())),
        ]);
        let up = parse(&b, received).unwrap().value;
        assert_eq!(up.dev_eui, DevEui(EUI));
        assert_eq!(up.payload, [0x0a, 0x0b]);
        assert_eq!((up.fport, up.fcnt, up.radio.rssi), (None, None, None));
        assert_eq!(up.time, received);
        let b = envelope(&[
            ("dev_eui", Value::Text("58a0cb0000101234".into())),
            ("payload", Value::Bytes(vec![])),
            ("time", Value::Text("2024-05-01T10:00:00.5Z".into())),
        ]);
        let ms = parse(&b, received)
            .unwrap()
            .value
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_714_557_600_500);
        let b = envelope(&[
            ("dev_eui", Value::Bytes(EUI.to_vec())),
            ("payload", Value::Bytes(vec![])),
            ("time", Value::Float(1.25)),
        ]);
        assert_eq!(
            parse(&b, received).unwrap().value.time,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1250)
        );
        let b = envelope(&[
            ("dev_eui", Value::Bytes(EUI.to_vec())),
            ("payload", Value::Bytes(vec![])),
            ("time", Value::Null),
        ]);
        assert_eq!(parse(&b, received).unwrap().value.time, received);
    }

    /// Bytes that are no envelope are `serial_bad_cbor`; an envelope (a map with `dev_eui` or
    /// `payload`) whose DevEUI or payload is missing or does not decode is
    /// `serial_bad_field`, its error naming the field.
    #[test]
    fn bad_envelopes_and_bad_fields() {
        let t = SystemTime::UNIX_EPOCH;
        let no_envelope = [
            b"\xff\x00not cbor".to_vec(),
            Vec::new(),
            serde_cbor::to_vec(&Value::Integer(7)).unwrap(),
            envelope(&[("fport", Value::Integer(7))]),
            // An envelope followed by bytes of something else.
            [
                envelope(&[("dev_eui", Value::Bytes(EUI.to_vec()))]),
                vec![0xff],
            ]
            .concat(),
        ];
        for b in no_envelope {
            let e = parse(&b, t).unwrap_err();
            assert_eq!(e.kind(), "serial_bad_cbor", "{b:02x?}: {e}");
        }
        let bad_field = [
            (envelope(&[("payload", Value::Bytes(vec![1]))]), "dev_eui"),
            (
                envelope(&[("dev_eui", Value::Bytes(EUI.to_vec()))]),
                "payload",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Bytes(vec![1, 2, 3])),
                    ("payload", Value::Bytes(vec![1])),
                ]),
                "dev_eui must be 8 bytes, not 3",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Text("58a0cb00001012zz".into())),
                    ("payload", Value::Bytes(vec![1])),
                ]),
                "bad hex \"58a0cb00001012zz\"",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Integer(7)),
                    ("payload", Value::Bytes(vec![1])),
                ]),
                "a byte string or hex text",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Bytes(EUI.to_vec())),
                    ("payload", Value::Text("xyz".into())),
                ]),
                "bad hex \"xyz\"",
            ),
        ];
        for (b, says) in bad_field {
            let e = parse(&b, t).unwrap_err();
            assert_eq!(e.kind(), "serial_bad_field", "{b:02x?}: {e}");
            assert!(e.to_string().contains(says), "{e} should say {says}");
        }
    }

    /// Times a record cannot show (before 1970, past 9999 in UTC, not a time) are `bad_time`,
    /// and the reading is kept with the receive time; a time past 9999 used to panic when the
    /// record was built.
    #[test]
    fn times_outside_1970_to_9999_are_bad_time() {
        let bad = [
            Value::Integer(-5),
            Value::Integer(253_402_300_800),
            Value::Integer(i128::from(u64::MAX)),
            Value::Float(1e300),
            Value::Float(f64::NAN),
            Value::Float(-1.0),
            Value::Text("9999-12-31T23:59:59-23:59".into()),
            Value::Text("1969-12-31T23:59:59Z".into()),
            Value::Text("yesterday".into()),
            Value::Bool(true),
        ];
        for t in bad {
            let b = envelope(&[
                ("dev_eui", Value::Bytes(EUI.to_vec())),
                ("payload", Value::Bytes(vec![1])),
                ("time", t.clone()),
            ]);
            let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let up = parse(&b, received).unwrap();
            assert_eq!(up.bad_time.map(|e| e.kind()), Some("bad_time"), "{t:?}");
            assert_eq!((up.value.time, up.value.payload), (received, vec![1]));
        }
        let b = envelope(&[
            ("dev_eui", Value::Bytes(EUI.to_vec())),
            ("payload", Value::Bytes(vec![1])),
            ("time", Value::Integer(253_402_300_799)),
        ]);
        let up = parse(&b, SystemTime::UNIX_EPOCH).unwrap().value;
        let rec = crate::record::build(
            &up,
            &crate::record::DeviceInfo::UNKNOWN,
            crate::record::Payload::Packed {
                rec_type: "p",
                error: None,
            },
            SystemTime::now(),
        )
        .remove(0);
        assert!(
            rec.body.contains("\"9999-12-31T23:59:59.000Z\""),
            "{}",
            rec.body
        );
    }
}
