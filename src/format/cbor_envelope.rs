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
/// | `fcnt`    | unsigned integer (frame counter; hashed in the record id with the time) | optional |
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
/// Bytes that are not CBOR, or CBOR that is no envelope (not a map or an array, or one with
/// neither `dev_eui` nor `payload`: an array is read in serde's order below, so `[1]` is an
/// envelope whose `dev_eui` is an integer), are [`ParseError::Cbor`]; an envelope whose
/// `dev_eui` or `payload` is missing, of the wrong type or does not decode is
/// [`ParseError::CborField`], its error starting with the field's name: a reading that was
/// sent, kept as a dead letter by the serial source. A key given twice: an optional one is
/// taken as not given, a `dev_eui` or `payload` is a [`ParseError::CborField`].
///
/// serde's other forms of a struct are read too: a key as a byte string, a key as the field's
/// index (0 `dev_eui`, 1 `fport`, 2 `fcnt`, 3 `payload`, 4 `rssi`, 5 `snr`, 6 `time`), and the
/// fields as an array in that order.
pub fn parse(bytes: &[u8], received: SystemTime) -> Result<Parsed<Uplink>, ParseError> {
    // One parse: what is no envelope fails here; the two required fields are decoded after.
    let env: Raw =
        serde_cbor::from_slice(bytes).map_err(|e| ParseError::Cbor(e.to_string().into()))?;
    if env.dev_eui.is_none() && env.payload.is_none() {
        return Err(ParseError::Cbor(
            "no envelope: neither dev_eui nor payload".into(),
        ));
    }
    let field = |e: String| ParseError::CborField(e.into());
    let dev_eui = dev_eui(env.dev_eui).map_err(field)?;
    let payload = bytes_or_hex("payload", env.payload).map_err(field)?;
    let given = env.time.given();
    let given = given.as_ref().and_then(|t| time_of(t).transpose());
    let (time, bad_time) = super::time_or_received(given, received);
    let value = Uplink {
        dev_eui,
        dev_addr: None,
        device_name: None,
        fport: whole(env.fport.given()),
        fcnt: whole(env.fcnt.given()),
        payload,
        time,
        radio: Radio {
            rssi: match env.rssi.given() {
                Some(serde_cbor::Value::Float(f)) if f.is_finite() => whole(Some(f.round())),
                other => whole(other),
            },
            snr: match env.snr.given() {
                Some(serde_cbor::Value::Float(f)) => Some(f).filter(|f| f.is_finite()),
                Some(serde_cbor::Value::Integer(i)) => Some(i as f64),
                _ => None,
            },
            ..Radio::default()
        },
        ns: crate::uplink::NsDecoded::default(),
        same_ms_index: 0,
        session: None,
    };
    Ok(Parsed {
        value,
        bad_time,
        gateways_left_out: 0,
    })
}

/// A key of the envelope as read: not there, there once, or there more than once.
#[derive(Default)]
enum Key {
    #[default]
    Absent,
    Once(serde_cbor::Value),
    Repeated,
}

impl Key {
    /// Whether the key is not there (null is "not given").
    fn is_none(&self) -> bool {
        matches!(self, Key::Absent | Key::Once(serde_cbor::Value::Null))
    }

    /// An optional key's value: none if it is absent, null or given more than once.
    fn given(self) -> Option<serde_cbor::Value> {
        match self {
            Key::Once(serde_cbor::Value::Null) | Key::Absent | Key::Repeated => None,
            Key::Once(v) => Some(v),
        }
    }
}

/// The envelope's seven fields, not yet decoded; other keys are skipped unread.
#[derive(Default)]
struct Raw {
    dev_eui: Key,
    fport: Key,
    fcnt: Key,
    payload: Key,
    rssi: Key,
    snr: Key,
    time: Key,
}

/// The envelope's keys, as serde names a struct's fields: by name (text or bytes) or index.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    DevEui,
    Fport,
    Fcnt,
    Payload,
    Rssi,
    Snr,
    Time,
    #[serde(other)]
    Other,
}

/// The fields in their order: a key's index, and the order of the array form.
const FIELDS: [&str; 7] = ["dev_eui", "fport", "fcnt", "payload", "rssi", "snr", "time"];
const IN_ORDER: [Field; 7] = [
    Field::DevEui,
    Field::Fport,
    Field::Fcnt,
    Field::Payload,
    Field::Rssi,
    Field::Snr,
    Field::Time,
];

impl Raw {
    fn key(&mut self, f: Field) -> Option<&mut Key> {
        Some(match f {
            Field::DevEui => &mut self.dev_eui,
            Field::Fport => &mut self.fport,
            Field::Fcnt => &mut self.fcnt,
            Field::Payload => &mut self.payload,
            Field::Rssi => &mut self.rssi,
            Field::Snr => &mut self.snr,
            Field::Time => &mut self.time,
            Field::Other => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_struct("Envelope", &FIELDS, RawVisitor)
    }
}

struct RawVisitor;

impl<'de> de::Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CBOR envelope")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut raw = Raw::default();
        while let Some(f) = map.next_key::<Field>()? {
            match raw.key(f) {
                Some(key) => {
                    let v = map.next_value::<serde_cbor::Value>()?;
                    *key = match key {
                        Key::Absent => Key::Once(v),
                        _ => Key::Repeated,
                    };
                }
                None => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut raw = Raw::default();
        for f in IN_ORDER {
            let Some(v) = seq.next_element::<serde_cbor::Value>()? else {
                break;
            };
            if let Some(key) = raw.key(f) {
                *key = Key::Once(v);
            }
        }
        Ok(raw)
    }
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

/// A required field's bytes, given as a CBOR byte string or as hex text (`-`/`:` ok); the
/// error names the field.
fn bytes_or_hex(field: &str, key: Key) -> Result<Vec<u8>, String> {
    use serde_cbor::Value as V;
    match key {
        Key::Absent | Key::Once(V::Null) => Err(format!("missing field `{field}`")),
        Key::Repeated => Err(format!("duplicate field `{field}`")),
        Key::Once(V::Bytes(b)) => Ok(b),
        Key::Once(V::Text(t)) => {
            let clean: String = t.chars().filter(|c| !matches!(c, '-' | ':')).collect();
            hex::decode(clean)
                .map_err(|_| format!("{field}: bad hex {:?}", super::Excerpt::from(&t)))
        }
        Key::Once(other) => Err(format!(
            "{field}: {}, expected a byte string or hex text",
            kind_of(&other)
        )),
    }
}

fn dev_eui(key: Key) -> Result<DevEui, String> {
    let v = bytes_or_hex("dev_eui", key)?;
    v.as_slice()
        .try_into()
        .map(DevEui)
        .map_err(|_| format!("dev_eui: must be 8 bytes, not {}", v.len()))
}

/// What a CBOR value is, for an error.
fn kind_of(v: &serde_cbor::Value) -> &'static str {
    use serde_cbor::Value as V;
    match v {
        V::Null => "null",
        V::Bool(_) => "a boolean",
        V::Integer(_) => "an integer",
        V::Float(_) => "a float",
        V::Bytes(_) => "a byte string",
        V::Text(_) => "text",
        V::Array(_) => "an array",
        V::Map(_) => "a map",
        _ => "a tagged value",
    }
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
            (
                envelope(&[("payload", Value::Bytes(vec![1]))]),
                "missing field `dev_eui`",
            ),
            (
                envelope(&[("dev_eui", Value::Bytes(EUI.to_vec()))]),
                "missing field `payload`",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Bytes(vec![1, 2, 3])),
                    ("payload", Value::Bytes(vec![1])),
                ]),
                "dev_eui: must be 8 bytes, not 3",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Text("58a0cb00001012zz".into())),
                    ("payload", Value::Bytes(vec![1])),
                ]),
                "dev_eui: bad hex \"58a0cb00001012zz\"",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Integer(7)),
                    ("payload", Value::Bytes(vec![1])),
                ]),
                "dev_eui: an integer, expected a byte string or hex text",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Bytes(EUI.to_vec())),
                    ("payload", Value::Array(vec![])),
                ]),
                "payload: an array, expected a byte string or hex text",
            ),
            (
                envelope(&[
                    ("dev_eui", Value::Bytes(EUI.to_vec())),
                    ("payload", Value::Text("xyz".into())),
                ]),
                "payload: bad hex \"xyz\"",
            ),
        ];
        for (b, says) in bad_field {
            let e = parse(&b, t).unwrap_err();
            assert_eq!(e.kind(), "serial_bad_field", "{b:02x?}: {e}");
            assert!(
                e.to_string().ends_with(&format!("bad field: {says}")),
                "{e} should say {says}"
            );
        }
    }

    /// A CBOR map of up to 23 pairs, each key and value given as CBOR: keys of any type, in
    /// any order, given twice too.
    fn raw_map(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![0xa0 + u8::try_from(pairs.len()).unwrap()];
        for (k, v) in pairs {
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        b
    }

    fn cbor(v: Value) -> Vec<u8> {
        serde_cbor::to_vec(&v).unwrap()
    }

    /// Each shape of frame the parser reads is an uplink with a good DevEUI and payload, and
    /// `serial_bad_field` with a bad one; one it does not read is `serial_bad_cbor` either
    /// way (serde_cbor reads no unassigned simple value, under any key, nor a key of invalid
    /// UTF-8). A repeated optional key is taken as not given.
    #[test]
    fn every_shape_is_an_envelope_exactly_when_it_is_read_as_one() {
        let t = SystemTime::UNIX_EPOCH;
        let text = |k: &str| cbor(Value::Text(k.into()));
        let (good, bad) = (
            cbor(Value::Bytes(EUI.to_vec())),
            cbor(Value::Bytes(vec![1, 2, 3])),
        );
        let shape = |eui: &[u8]| -> Vec<(&str, Vec<u8>)> {
            let payload = cbor(Value::Bytes(vec![9]));
            vec![
                (
                    "integer keys",
                    raw_map(&[
                        (cbor(Value::Integer(0)), eui.to_vec()),
                        (cbor(Value::Integer(3)), payload.clone()),
                    ]),
                ),
                (
                    "array",
                    [
                        vec![0x84],
                        eui.to_vec(),
                        cbor(Value::Null),
                        cbor(Value::Null),
                        payload.clone(),
                    ]
                    .concat(),
                ),
                (
                    "byte-string key",
                    raw_map(&[
                        (cbor(Value::Bytes(b"dev_eui".to_vec())), eui.to_vec()),
                        (text("payload"), payload.clone()),
                    ]),
                ),
                (
                    "a simple value under another key",
                    raw_map(&[
                        (text("dev_eui"), eui.to_vec()),
                        (text("payload"), payload.clone()),
                        (text("x"), vec![0xf0]),
                    ]),
                ),
                (
                    "a repeated optional key",
                    raw_map(&[
                        (text("dev_eui"), eui.to_vec()),
                        (text("payload"), payload.clone()),
                        (text("fport"), cbor(Value::Integer(1))),
                        (text("fport"), cbor(Value::Integer(2))),
                    ]),
                ),
                (
                    "a key of invalid UTF-8",
                    raw_map(&[
                        (text("dev_eui"), eui.to_vec()),
                        (text("payload"), payload.clone()),
                        (vec![0x62, 0xff, 0xfe], cbor(Value::Integer(1))),
                    ]),
                ),
            ]
        };
        let mut kinds = Vec::new();
        for ((name, good), (_, bad)) in shape(&good).into_iter().zip(shape(&bad)) {
            let bad = parse(&bad, t).unwrap_err();
            match parse(&good, t) {
                Ok(up) => {
                    let up = up.value;
                    assert_eq!((up.dev_eui, up.payload), (DevEui(EUI), vec![9]), "{name}");
                    assert_eq!(up.fport, None, "{name}");
                    assert_eq!(bad.kind(), "serial_bad_field", "{name}: {bad}");
                    assert!(
                        bad.to_string().ends_with("dev_eui: must be 8 bytes, not 3"),
                        "{name}: {bad}"
                    );
                }
                Err(e) => assert_eq!(
                    (e.kind(), bad.kind()),
                    ("serial_bad_cbor", "serial_bad_cbor"),
                    "{name}"
                ),
            }
            kinds.push((name, bad.kind()));
        }
        assert_eq!(
            kinds,
            [
                ("integer keys", "serial_bad_field"),
                ("array", "serial_bad_field"),
                ("byte-string key", "serial_bad_field"),
                ("a simple value under another key", "serial_bad_cbor"),
                ("a repeated optional key", "serial_bad_field"),
                ("a key of invalid UTF-8", "serial_bad_cbor"),
            ]
        );
        let twice = raw_map(&[
            (text("dev_eui"), good.clone()),
            (text("payload"), cbor(Value::Bytes(vec![9]))),
            (text("dev_eui"), good.clone()),
        ]);
        let e = parse(&twice, t).unwrap_err();
        assert_eq!(e.kind(), "serial_bad_field");
        assert!(e.to_string().ends_with("duplicate field `dev_eui`"), "{e}");
        // Any array is read as one: `[1]` (81 01) is an envelope with a bad `dev_eui`, kept
        // as a dead letter; `[]` (80) has neither field, so it is no envelope.
        let e = parse(&[0x81, 0x01], t).unwrap_err();
        assert_eq!(e.kind(), "serial_bad_field", "{e}");
        assert!(e.to_string().contains("dev_eui: "), "{e}");
        assert_eq!(parse(&[0x80], t).unwrap_err().kind(), "serial_bad_cbor");
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
