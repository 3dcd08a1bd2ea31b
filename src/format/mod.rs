//! Message formats: the bytes a transport carries, parsed into what hubgate works with
//! ([`Uplink`](crate::uplink::Uplink), [`RadioFrame`](crate::uplink::RadioFrame)). The
//! transports that carry them are in [`crate::source`]; a format knows nothing of them.

pub mod cbor_envelope;
pub mod chirpstack;
mod dead_letter;
pub mod gwmp;
pub mod tts;

use crate::mapping::{depth, MAX_DEPTH};
use crate::uplink::{NsDecoded, Reception, MAX_GATEWAYS};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::time::SystemTime;

pub use dead_letter::DeadLetter;

/// Why an input message could not become an [`Uplink`]. Display is one short line: what
/// the input said is quoted as an [`Excerpt`].
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    Json(Excerpt),
    #[error("bad base64 payload: {0}")]
    Base64(Excerpt),
    #[error("bad DevEUI {0:?}")]
    DevEui(Excerpt),
    /// A TTS device registered without a DevEUI (LoRaWAN 1.0 ABP), named by its device id:
    /// records are keyed by DevEUI, so the operator gives the device one.
    #[error("device {0:?} has no DevEUI (registered without one): give it its DevEUI in TTS")]
    NoDevEui(Excerpt),
    #[error("bad time {0:?}: not an RFC 3339 time between 1970 and 9999")]
    Time(Excerpt),
    #[error("frame received with a bad CRC ({0})")]
    Crc(Excerpt),
    #[error("bad CBOR envelope: {0}")]
    Cbor(Excerpt),
    /// A serial CBOR envelope that reads as one (a map with `dev_eui` or `payload`) but whose
    /// DevEUI or payload is missing or does not decode: a reading no record can carry.
    #[error("CBOR envelope with a bad field: {0}")]
    CborField(Excerpt),
    /// Not bad input: an event of another kind that the format's topic also carries (a
    /// ChirpStack join or status event), skipped and counted apart from problems.
    #[error("not an uplink event (a ChirpStack join, status, ack, txack, log or other event)")]
    NotUplink,
}

impl ParseError {
    /// Stable label for counters and log-once.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::Json(_) => "malformed_json",
            ParseError::Base64(_) => "bad_base64",
            ParseError::DevEui(_) | ParseError::NoDevEui(_) => "bad_dev_eui",
            ParseError::Time(_) => "bad_time",
            ParseError::Crc(_) => "bad_crc",
            ParseError::Cbor(_) => "serial_bad_cbor",
            ParseError::CborField(_) => "serial_bad_field",
            ParseError::NotUplink => "not_uplink",
        }
    }
}

/// Text from input (or an error quoting it), cut to [`Excerpt::MAX`] bytes: a 100 KB DevEUI
/// makes a short error, not a 100 KB one.
pub struct Excerpt(String);

impl Excerpt {
    pub const MAX: usize = 120;
}

impl<S: AsRef<str>> From<S> for Excerpt {
    fn from(s: S) -> Self {
        let s = s.as_ref();
        if s.len() <= Self::MAX {
            return Excerpt(s.to_string());
        }
        let kept = cut(s, Self::MAX);
        Excerpt(format!("{kept}… ({} more bytes)", s.len() - kept.len()))
    }
}

impl std::fmt::Display for Excerpt {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Excerpt {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

/// A whole number of radio metadata (channel, frequency, bandwidth, spreading factor), as a
/// number or a decimal string (protobuf JSON writes 64-bit integers as strings), or `None`
/// when the field is not a whole number that fits: metadata is never a reason to refuse the
/// uplink it describes.
fn de_meta_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    let whole = v.and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
    Ok(whole.and_then(|n| T::try_from(n).ok()))
}

/// The value of a numeric field of a network server's reception entry (ChirpStack `rxInfo`,
/// TTS `rx_metadata`) that the entry leaves out: protobuf JSON leaves out a field at its
/// zero value (ChirpStack serialises its `gw` messages without their defaults, TTS does
/// the same), so a reception at an SNR of 0 dB on channel 0 comes without `snr` and
/// `channel`. A field present but not a number stays unknown ([`de_meta_int`]).
fn absent_is_zero<T: Default>() -> Option<T> {
    Some(T::default())
}

/// One gateway's reception as a network server reported it. An RSSI left out is not read as
/// 0 (0 dBm would outrank every real reception): an entry without one carries no signal
/// report (The Things Stack's Packet Broker entries, when the forwarding network shares
/// none), so its SNR and channel of 0, which [`absent_is_zero`] gives fields left out, are
/// not known either; it ranks below every reception with an RSSI.
fn reception(
    gateway_id: Option<String>,
    rssi: Option<i32>,
    snr: Option<f64>,
    channel: Option<u32>,
) -> Reception {
    let reported = rssi.is_some();
    Reception {
        gateway_id,
        rssi,
        snr: snr.filter(|s| reported || *s != 0.0),
        channel: channel.filter(|c| reported || *c != 0),
    }
}

/// The receptions a network server listed, as an uplink carries them: the best, which
/// stands for the uplink as Microshare's `meta.iot` does (the strongest by RSSI, the last of
/// equally strong ones; the default when none is listed); all of them, or of more than
/// [`MAX_GATEWAYS`] the strongest (of equally strong ones the later, so the best is always
/// among them), in the message's order; and how many were left out.
fn heard(mut all: Vec<Reception>) -> (Reception, Vec<Reception>, usize) {
    let strength = |r: &Reception| r.rssi.unwrap_or(i32::MIN);
    let best = all.iter().max_by_key(|r| strength(r)).cloned();
    let n = all.len();
    if n > MAX_GATEWAYS {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse((strength(&all[i]), i)));
        let mut kept = vec![false; n];
        for &i in &order[..MAX_GATEWAYS] {
            kept[i] = true;
        }
        let mut i = 0;
        all.retain(|_| {
            i += 1;
            kept[i - 1]
        });
    }
    (
        best.unwrap_or_default(),
        all,
        n.saturating_sub(MAX_GATEWAYS),
    )
}

/// A DevAddr given as text; one that is not 8 hex digits is left out, and the record id is
/// made without it.
fn dev_addr(text: Option<&str>) -> Option<crate::lorawan::DevAddr> {
    text.and_then(|t| crate::lorawan::DevAddr::parse(t).ok())
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest metadata text kept ([`de_meta_text`]): a network server's names and ids are
/// far shorter, and every record of an uplink repeats them (one of a few hundred KB made
/// each of an uplink's 33 records that long).
pub const MAX_META_TEXT: usize = 256;

/// A text field of metadata (a device or gateway id, a device name), or `None` when it is not
/// a string (see [`de_meta_int`]); cut to [`MAX_META_TEXT`] bytes.
fn de_meta_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) if s.len() > MAX_META_TEXT => {
            Some(cut(&s, MAX_META_TEXT).to_string())
        }
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    })
}

/// An identifier of The Things Stack (a Device Repository brand), or `None` when the field is
/// not a string that is one ([`crate::ids::is_tts_id`]). Read raw, so that one the parser
/// would refuse (nested deeper than it goes, a number beyond f64) costs only itself, and
/// kept only short: it is carried with the uplink, and may be logged.
fn de_tts_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw: Option<&'de RawValue> = serde::Deserialize::deserialize(d)?;
    Ok(raw
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        .filter(|s| crate::ids::is_tts_id(s)))
}

/// An RSSI in dBm, rounded (TTS declares it a float), or `None` when the field is not a
/// number that fits (see [`de_meta_int`]).
fn de_rssi<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    let whole = v.and_then(|v| {
        v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.round() as i64)
        })
    });
    Ok(whole.and_then(|n| i32::try_from(n).ok()))
}

/// A fractional number of radio metadata (SNR, frequency in MHz), or `None` when the field is
/// not a finite number (see [`de_meta_int`]).
fn de_meta_float<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(v.and_then(|v| v.as_f64()).filter(|f| f.is_finite()))
}

/// Most JSON values a network server's decoded payload may hold (objects, arrays and
/// scalars, counted together over `object` and `normalized`). Real decoders return tens of
/// fields; a parsed value costs far more memory than its text, and an uplink waits in a
/// 1,024-frame queue, so a larger one is not carried (the uplink is sent packed).
pub const MAX_NS_VALUES: usize = 1024;

/// What a network server decoded, from the message's `object`/`decoded_payload` and
/// (TTS) `normalized_payload` (an array of objects, or one). Only non-empty JSON objects are
/// used: a decoder that returned a bare number or `{}` decoded nothing. They come as raw text,
/// parsed here apart from the message: one the parser refuses (nested deeper than it goes, a
/// number beyond f64), or nested deeper than its record may be ([`MAX_DEPTH`]), is not
/// carried, and the uplink is sent packed, as for a too large one.
fn ns_decoded(
    object: Option<Box<serde_json::value::RawValue>>,
    normalized: Option<Box<serde_json::value::RawValue>>,
) -> NsDecoded {
    let parse = |raw: Option<Box<serde_json::value::RawValue>>| {
        raw.map(|r| serde_json::from_str::<serde_json::Value>(r.get()))
            .transpose()
    };
    let (object, normalized) = match (parse(object), parse(normalized)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            return NsDecoded {
                unreadable: Some(e.to_string()),
                ..NsDecoded::default()
            }
        }
    };
    let values = [&object, &normalized]
        .into_iter()
        .flatten()
        .map(count_values)
        .sum::<usize>();
    if values > MAX_NS_VALUES {
        return NsDecoded {
            oversized: Some(values),
            ..NsDecoded::default()
        };
    }
    let measurements = match &normalized {
        Some(serde_json::Value::Array(items)) => items.as_slice(),
        other => other.as_slice(),
    };
    if object.iter().chain(measurements).map(depth).max() > Some(MAX_DEPTH) {
        return NsDecoded {
            unreadable: Some(format!(
                "nested deeper than {MAX_DEPTH} levels, too deep for its record to be read"
            )),
            ..NsDecoded::default()
        };
    }
    let object_of = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) if !m.is_empty() => Some(m),
        _ => None,
    };
    NsDecoded {
        object: object.and_then(object_of),
        normalized: match normalized {
            Some(serde_json::Value::Array(items)) => {
                items.into_iter().filter_map(object_of).collect()
            }
            other => other.and_then(object_of).into_iter().collect(),
        },
        ..NsDecoded::default()
    }
}

/// JSON values in `v`, itself included.
fn count_values(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count_values).sum(),
        serde_json::Value::Object(m) => m.values().map(count_values).sum(),
        _ => 0,
    }
}

/// A message parsed, with what was wrong in it but did not cost the reading.
#[derive(Debug)]
pub struct Parsed<T> {
    pub value: T,
    /// The message's time could not be used (not a time, or one a record cannot carry):
    /// hubgate's receive time stands in. The reading and its frame counter do not depend on
    /// the time, so a bad one is counted (`bad_time`), not a reason to drop the message.
    pub bad_time: Option<ParseError>,
    /// Receptions the message listed beyond the [`MAX_GATEWAYS`] the uplink carries.
    pub gateways_left_out: usize,
}

impl<T> Parsed<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Parsed<U> {
        Parsed {
            value: f(self.value),
            bad_time: self.bad_time,
            gateways_left_out: self.gateways_left_out,
        }
    }
}

/// The message's time `given` (`None`: it has none) or else `received`, and whether a given
/// time was bad ([`Parsed::bad_time`]).
fn time_or_received(
    given: Option<Result<SystemTime, ParseError>>,
    received: SystemTime,
) -> (SystemTime, Option<ParseError>) {
    match given {
        None => (received, None),
        Some(Ok(t)) => (t, None),
        Some(Err(e)) => (received, Some(e)),
    }
}

/// What JSON type a part of a message must have, for [`with_odd_parts_mended`].
enum Shape {
    /// Radio metadata: an object, or it is left out.
    Object,
    /// Radio metadata: an array of objects; what is not one is left out.
    Objects,
    /// A time: a string, or it becomes the string of its JSON text (a `bad_time` then).
    Text,
}

/// A message of type `T`; one the strict parse refuses is parsed again with the parts at
/// `paths` mended and keys given twice taken once, but for those at `needs`
/// ([`with_odd_parts_mended`]), into `mended`, which what it borrows lives in.
fn from_json<'a, T: serde::Deserialize<'a>>(
    json: &'a [u8],
    paths: &[&[(&str, Shape)]],
    needs: &[&str],
    mended: &'a mut Option<String>,
) -> Result<T, ParseError> {
    let json = without_bom(json);
    let e = match serde_json::from_slice(json) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let refused = || ParseError::Json(e.to_string().into());
    *mended = with_odd_parts_mended(json, paths, needs);
    let mended: &'a Option<String> = mended;
    serde_json::from_str(mended.as_deref().ok_or_else(refused)?).map_err(|_| refused())
}

/// `json` without a UTF-8 byte order mark before it: RFC 8259 lets a parser ignore one, and
/// some tools (on Windows mostly) write it; serde_json refuses it.
fn without_bom(json: &[u8]) -> &[u8] {
    json.strip_prefix(b"\xef\xbb\xbf").unwrap_or(json)
}

type Raw = Box<RawValue>;

/// `json` again, as [`readable`] text, with the parts at `paths` (keys from the top, `*` for
/// every element of an array) that have the wrong type mended as their [`Shape`] says, so radio metadata or a
/// time of the wrong type never costs the uplink, as a wrong field inside them does not
/// ([`de_meta_int`]). Only the objects and arrays on the paths are taken apart; the rest stays
/// raw text, so a decoded object the parser refuses (too deep) costs only itself here too.
/// A key given twice is taken once ([`deduplicated`], but for those at `needs`).
/// `None`: not JSON, or nothing to mend. Only for a message the strict parse refused.
fn with_odd_parts_mended(
    json: &[u8],
    paths: &[&[(&str, Shape)]],
    needs: &[&str],
) -> Option<String> {
    let text = readable(json);
    let mut doc: Raw = serde_json::from_str(&text).ok()?;
    let mut mended = matches!(text, Cow::Owned(_));
    if let Some(d) = deduplicated(&doc, "", needs, FIELDS_DEPTH) {
        doc = d;
        mended = true;
    }
    for (path, shape) in paths.iter().copied().flatten() {
        let keys: Vec<&str> = path.split('/').collect();
        if let Some(m) = mend(&doc, &keys, shape) {
            doc = m;
            mended = true;
        }
    }
    mended.then(|| doc.get().to_owned())
}

/// `json` as text whose strings all decode: bytes that are not UTF-8 read as U+FFFD (as
/// GWMP's do, and Go's encoding/json), and so does the `\u` escape of a lone UTF-16
/// surrogate (half of a pair without the other half), which serde_json refuses in a string
/// it reads. A bad string in a field the uplink does not need (a device name) then costs
/// its bad characters, not the uplink; in one it needs (a DevEUI) its own check refuses it.
fn readable(json: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(json);
    let b = text.as_bytes();
    // The UTF-16 unit of a `\uXXXX` escape at `at`.
    let unit = |at: usize| {
        let hex = b.get(at..at + 6)?.strip_prefix(b"\\u")?;
        hex.iter()
            .all(u8::is_ascii_hexdigit)
            .then(|| u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())?
    };
    let (mut out, mut copied, mut i) = (String::new(), 0, 0);
    // A backslash is only ever in a string, where it starts an escape: an escaped backslash
    // is passed over whole, so the `u` after it is not taken for an escape.
    while let Some(at) = b.get(i..).and_then(|r| r.iter().position(|&c| c == b'\\')) {
        let at = i + at;
        i = match unit(at) {
            Some(0xd800..=0xdbff) if matches!(unit(at + 6), Some(0xdc00..=0xdfff)) => at + 12,
            Some(0xd800..=0xdfff) => {
                out.push_str(&text[copied..at]);
                out.push_str("\\ufffd");
                copied = at + 6;
                copied
            }
            _ => at + 2,
        };
    }
    if copied == 0 {
        return text;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// How deep the objects go that the formats' own structs read (TTS
/// `uplink_message/settings/data_rate/lora`, `uplink_message/rx_metadata/*/gateway_ids`),
/// counting arrays: deeper, a value is parsed whole (a decoded payload, radio metadata) by a
/// parse that takes a key given twice as [`deduplicated`] does.
const FIELDS_DEPTH: usize = 5;

/// `v`, the value at `path` (keys from the top, `*` for an array's elements), with a key
/// given twice in an object, `depth` objects and arrays deep at most, taken once with its
/// last value, as JavaScript's `JSON.parse` and serde_json's own `Value` take it (serde's
/// derived parse refuses it). A key at one of `needs` (what the reading needs: its DevEUI,
/// payload, FCnt) or above one (`deviceInfo` for `deviceInfo/devEui`), given twice with
/// different values, is left twice for the parse to refuse: which is meant is not known.
/// `None`: no key to take once.
fn deduplicated(v: &RawValue, path: &str, needs: &[&str], depth: usize) -> Option<Raw> {
    if depth == 0 {
        return None;
    }
    let at = |key: &str| match path {
        "" => key.to_owned(),
        _ => format!("{path}/{key}"),
    };
    let needed = |at: &str| {
        needs.iter().any(|n| {
            n.strip_prefix(at)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
        })
    };
    match v.get().as_bytes().first() {
        Some(b'{') => {
            let Members(mut members) = serde_json::from_str(v.get()).ok()?;
            let mut changed = false;
            for (key, value) in &mut members {
                if let Some(d) = deduplicated(value, &at(key), needs, depth - 1) {
                    *value = d;
                    changed = true;
                }
            }
            // A member is dropped for the last one with its key, unless that key is needed and
            // given with different values. One pass each way: a hostile message may hold tens of
            // thousands of keys, and comparing each with the rest would take seconds.
            let mut last: std::collections::HashMap<&str, (usize, bool)> =
                std::collections::HashMap::with_capacity(members.len());
            for (i, (key, value)) in members.iter().enumerate() {
                last.entry(key)
                    .and_modify(|(latest, same)| {
                        *same &= members[*latest].1.get() == value.get();
                        *latest = i;
                    })
                    .or_insert((i, true));
            }
            let kept: Vec<&(String, Raw)> = members
                .iter()
                .enumerate()
                .filter(|(i, (key, _))| {
                    let (latest, same) = last[key.as_str()];
                    latest == *i || (!same && needed(&at(key)))
                })
                .map(|(_, m)| m)
                .collect();
            if !changed && kept.len() == members.len() {
                return None;
            }
            let body: Option<Vec<String>> = kept
                .iter()
                .map(|(k, v)| Some(format!("{}:{}", serde_json::to_string(k).ok()?, v.get())))
                .collect();
            RawValue::from_string(format!("{{{}}}", body?.join(","))).ok()
        }
        Some(b'[') => {
            let mut items: Vec<Raw> = serde_json::from_str(v.get()).ok()?;
            let mut changed = false;
            for item in &mut items {
                if let Some(d) = deduplicated(item, &at("*"), needs, depth - 1) {
                    *item = d;
                    changed = true;
                }
            }
            changed.then(|| raw(&items)).flatten()
        }
        _ => None,
    }
}

/// An object's members in order, a key given twice as often as it is given.
struct Members(Vec<(String, Raw)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = m.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// `v` with the part at `keys` mended, or `None` when it needs nothing (or is not there).
fn mend(v: &serde_json::value::RawValue, keys: &[&str], shape: &Shape) -> Option<Raw> {
    match keys {
        [] => None,
        ["*", rest @ ..] => {
            let mut items: Vec<Raw> = serde_json::from_str(v.get()).ok()?;
            let mut any = false;
            for item in &mut items {
                if let Some(m) = mend(item, rest, shape) {
                    *item = m;
                    any = true;
                }
            }
            any.then(|| raw(&items)).flatten()
        }
        [key, rest @ ..] => {
            let mut m: std::collections::BTreeMap<String, Raw> =
                serde_json::from_str(v.get()).ok()?;
            let part = m.get(*key)?;
            let new = if rest.is_empty() {
                mend_part(part, shape)?
            } else {
                Some(mend(part, rest, shape)?)
            };
            match new {
                Some(raw) => m.insert((*key).to_owned(), raw),
                None => m.remove(*key),
            };
            raw(&m)
        }
    }
}

fn raw<T: serde::Serialize + ?Sized>(v: &T) -> Option<Raw> {
    serde_json::value::to_raw_value(v).ok()
}

/// A part of the wrong [`Shape`]: `Some(None)` when it is left out, `Some(Some(raw))` when
/// it is replaced, `None` when it is right (or `null`, as good as absent: the parse takes it
/// where the part is optional, and a list, which takes no `null`, is left out instead; relays
/// that re-publish the JSON write `null` for an empty one).
fn mend_part(part: &serde_json::value::RawValue, shape: &Shape) -> Option<Option<Raw>> {
    let first = part.get().trim_start().bytes().next();
    match (shape, first) {
        (Shape::Objects, Some(b'n')) => Some(None),
        (_, Some(b'n')) | (Shape::Object, Some(b'{')) | (Shape::Text, Some(b'"')) => None,
        (Shape::Objects, Some(b'[')) => {
            let mut items: Vec<Raw> = serde_json::from_str(part.get()).ok()?;
            let before = items.len();
            items.retain(|i| i.get().starts_with('{'));
            (items.len() != before).then(|| raw(&items))
        }
        (Shape::Text, _) => Some(raw(part.get())),
        (Shape::Object | Shape::Objects, _) => Some(None),
    }
}

/// An RFC 3339 time from input, refused unless a record can carry it
/// ([`crate::uplink::valid_time`]).
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, ParseError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
        .filter(|t| crate::uplink::valid_time(*t))
        .ok_or_else(|| ParseError::Time(s.into()))
}
