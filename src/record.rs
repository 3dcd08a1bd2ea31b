//! Records: one recType event in Microshare's streaming envelope.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use base64::Engine;

use crate::codec::{Context, Decoded, Reading, Value};
use crate::format::DeadLetter;
use crate::mapping::Mapped;
use crate::uplink::Uplink;

/// A record ready for a sink: routing fields plus the serialized envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Stable id: the same uplink gets the same id ([`stable_id`]), so consumers can
    /// de-duplicate.
    pub id: String,
    pub rec_type: String,
    /// Kafka message key: the device id, so one device's records stay in one partition.
    pub key: String,
    /// When hubgate built the record (ms since epoch), for the buffer's TTL: 0 while the
    /// clock is not trusted, and no earlier than its take by the clock as last read (a step
    /// back not read yet).
    pub created_ms: u64,
    /// The JSON envelope.
    pub body: String,
}

/// What hubgate knows about the device an uplink came from, and the site's record settings.
pub struct DeviceInfo<'a> {
    pub tags: &'a [String],
    pub global_tags: &'a [String],
    /// Microshare usecase code (`meta.usecase`); `None`: the recType's own, if it has one.
    pub usecase: Option<&'a str>,
    /// The envelope's `source` (`[record] source`).
    pub source: &'a str,
}

impl DeviceInfo<'_> {
    /// A device hubgate knows nothing about, on a site with the default settings.
    pub const UNKNOWN: DeviceInfo<'static> = DeviceInfo {
        tags: &[],
        global_tags: &[],
        usecase: None,
        source: SOURCE,
    };
}

/// The envelope's default `source`: who made the record. Microshare writes `ShareService`;
/// hubgate names itself unless `[record] source` says otherwise.
pub const SOURCE: &str = "hubgate";

/// How the payload was interpreted.
pub enum Payload<'a> {
    Decoded {
        codec: &'a str,
        decoded: Decoded,
    },
    /// An object decoded elsewhere (network server, JavaScript codec), mapped to Microshare
    /// fields; `class` names who decoded it.
    Object {
        class: &'a str,
        mapped: Mapped,
    },
    /// Not decoded: no codec configured, or the codec failed (`error` says why).
    Packed {
        rec_type: &'a str,
        error: Option<String>,
    },
}

pub fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `t` in ISO 8601 UTC with milliseconds (`2023-11-14T22:13:20.000Z`). Sources only hand over
/// times from 1970 to 9999 ([`crate::uplink::valid_time`]); anything else (a clock gone wrong)
/// is clamped to that range rather than panicking, as `time`'s own conversion would past 9999.
/// The digits are written here: `time`'s formatter, which interprets a format description on
/// every call, took twice the instructions (2,250 a call against 1,040).
pub fn iso8601(t: SystemTime) -> String {
    let since = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .min(crate::uplink::LATEST);
    let t = time::OffsetDateTime::UNIX_EPOCH + since;
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, second, milli) = t.to_hms_milli();
    let mut s = String::with_capacity(24);
    for (mut n, width, then) in [
        (year as u32, 4, '-'),
        (u8::from(month).into(), 2, '-'),
        (day.into(), 2, 'T'),
        (hour.into(), 2, ':'),
        (minute.into(), 2, ':'),
        (second.into(), 2, '.'),
        (milli.into(), 3, 'Z'),
    ] {
        let mut digits = [b'0'; 4];
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        digits[..width].iter().for_each(|&d| s.push(char::from(d)));
        s.push(then);
    }
    s
}

/// The record id: a hash of what identifies the uplink (DevEUI, the DevAddr where known,
/// the session keys' print for a frame hubgate decrypted, FCnt, FPort, payload; the time
/// when the FCnt is unknown, with the source's index of the uplink in that millisecond when
/// above 0, and beside the FCnt unless hubgate decrypted the frame under a session that
/// never restarts its counter), formatted like a UUID.
/// The DevAddr and the keys tell the sessions of a device apart: one that joined again, or
/// was provisioned again under its DevAddr, counts its FCnt from 0 again, and the same
/// reading at the same FCnt as before must not be taken for a copy of the old one (the
/// ledger's de-duplication would drop it, and so would a consumer dropping copies by id).
/// So does the time for a device that restarts its counter (`resets_fcnt`): a reading after
/// a restart equal to one before it was received at another time. The same for an uplink a
/// network server (or a serial envelope) gives with its FCnt: hubgate cannot tell whether the
/// device restarted its counter (an ABP device whose network server does not check it), and
/// the message's own time is the same in a redelivery. A redelivery of a frame
/// (an MQTT broker's, after hubgate restarted) keeps its id where the time is the gateway's
/// or the network server's (GPS, `gwTime`, `nsTime`); where it is hubgate's own receive
/// time it is a duplicate under another id, the lesser harm.
/// The index ([`Uplink::same_ms_index`]) tells equal readings received in one millisecond
/// apart wherever the time is hashed; at 0 it is left out, so such ids are what they were
/// before it.
pub fn stable_id(up: &Uplink) -> String {
    let mut h = Sha256::new();
    h.update(up.dev_eui.0);
    if let Some(a) = up.dev_addr {
        h.update(b"DevAddr");
        h.update(a.0.to_be_bytes());
    }
    if let Some(session) = up.session {
        h.update(b"Keys");
        h.update(session.keys);
    }
    let same_ms = |h: &mut Sha256| {
        if up.same_ms_index > 0 {
            h.update(b"SameMs");
            h.update(up.same_ms_index.to_be_bytes());
        }
    };
    match up.fcnt {
        Some(f) => {
            h.update(f.to_be_bytes());
            if up.session.is_none_or(|s| s.resets_fcnt) {
                h.update(b"Time");
                h.update(ms_since_epoch(up.time).to_be_bytes());
                same_ms(&mut h);
            }
        }
        None => {
            h.update(ms_since_epoch(up.time).to_be_bytes());
            same_ms(&mut h);
        }
    }
    h.update([up.fport.unwrap_or(0), up.fport.is_some() as u8]);
    h.update(&up.payload);
    let d = h.finalize();
    uuid_form(&d)
}

/// The first 16 bytes of a digest, formatted like a UUID (lower-case hex, dashes after the
/// 4th, 6th, 8th and 10th byte).
fn uuid_form(digest: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, &b) in digest[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.extend(hex_digits(b).map(char::from));
    }
    s
}

/// A byte's two lower-case hex digits, as `hex::encode` writes them.
fn hex_digits(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]
}

/// The id of the record of an uplink's `index`-th history entry, measured at `time` (unix
/// seconds): a hash of the uplink's id, the time and the index, formatted like a UUID, so a
/// redelivered uplink makes the same ids.
pub fn history_id(uplink_id: &str, time: u32, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(uplink_id.as_bytes());
    h.update(time.to_be_bytes());
    h.update((index as u64).to_be_bytes());
    uuid_form(&h.finalize())
}

/// Build the records of one uplink: one, except for a built-in codec's readings of earlier
/// times (history), which make a record each, after the live one, in the payload's order, as
/// do a decoded object's history entries and normalized measurements of a time of their own
/// ([`Mapped::history`]), with their device values.
/// Microshare's records hold the readings of one moment: a history record has the uplink's
/// envelope and `meta` (about the reception), its own `data.time`, `createDate` and `tstamp`
/// (the history time), and its own id ([`history_id`]). The live record goes out when it
/// has readings or device values of now, or when there is no history.
///
/// The envelope is written by hand ([`JsonOut`]): its shape is fixed, so its keys are written
/// in sorted order, each once, exactly as a `serde_json::Value` tree (without
/// `preserve_order`) would print them; `data`'s keys come from a `BTreeMap`, so they are
/// sorted too. The wire format stays byte for byte the same; serde's structs, writing every
/// key and piece through its serializer, took half of the build's instructions
/// (docs/performance.md, "Building the record").
pub fn build(up: &Uplink, device: &DeviceInfo, payload: Payload, now: SystemTime) -> Vec<Record> {
    let id = stable_id(up);
    let device_id = up.device_id();
    let time = iso8601(up.time);
    let (decoded, mapped, error);
    let mut data = Fields::new();
    let (rec_type, class, history, moments, of_now) = match payload {
        Payload::Decoded { codec, decoded: d } => {
            decoded = d;
            put_readings(&mut data, &decoded.readings);
            let mut health = Fields::from([("id", Field::Str(&device_id))]);
            put_readings(&mut health, &decoded.health);
            data.insert("device_health", Field::Map(health));
            let of_now = !decoded.readings.is_empty() || !decoded.health.is_empty();
            let history = decoded.history.as_slice();
            (decoded.rec_type, codec, history, &[][..], of_now)
        }
        Payload::Object { class, mapped: m } => {
            mapped = m;
            data.extend(
                mapped
                    .data
                    .iter()
                    .map(|(k, v)| (k.as_str(), Field::Json(v))),
            );
            let mut health = Fields::from([("id", Field::Str(&device_id))]);
            health.extend(
                mapped
                    .health
                    .iter()
                    .map(|(k, v)| (k.as_str(), Field::Json(v))),
            );
            data.insert("device_health", Field::Map(health));
            let of_now = !mapped.data.is_empty() || !mapped.health.is_empty();
            let moments = mapped.history.as_slice();
            (mapped.rec_type.as_str(), class, &[][..], moments, of_now)
        }
        Payload::Packed { rec_type, error: e } => {
            error = e;
            if let Some(e) = &error {
                data.insert("error", Field::Str(e));
            }
            let health = Fields::from([("id", Field::Str(&device_id))]);
            data.insert("device_health", Field::Map(health));
            (rec_type, "packed", &[][..], &[][..], true)
        }
    };
    let meta = Meta {
        up,
        device,
        class,
        rec_type,
        usecase: device
            .usecase
            .or_else(|| crate::codec::rec_type::usecase(rec_type)),
        device_id: &device_id,
        time: &time,
        payload: true,
    };
    let of_their_time = Meta {
        payload: up.payload.len() <= crate::codec::MAX_PAYLOAD,
        ..meta
    };
    let mut records = Vec::with_capacity(1 + history.len() + moments.len());
    if of_now || (history.is_empty() && moments.is_empty()) {
        data.insert("time", Field::Str(&time));
        records.push(envelope(
            &meta,
            id.clone(),
            data,
            ms_since_epoch(up.time),
            now,
        ));
    }
    for (index, h) in history.iter().enumerate() {
        let at = UNIX_EPOCH + Duration::from_secs(h.time.into());
        let time = iso8601(at);
        let mut data = Fields::new();
        put_readings(&mut data, &h.readings);
        // No device values: they are of now, in the live record.
        let health = Fields::from([("id", Field::Str(&device_id))]);
        data.insert("device_health", Field::Map(health));
        data.insert("time", Field::Str(&time));
        let id = history_id(&id, h.time, index);
        let at = ms_since_epoch(at);
        records.push(envelope(&of_their_time, id, data, at, now));
    }
    // A decoded object's history entries and normalized measurements of their own time: as
    // a codec's history, with the device values measured then.
    for (index, m) in moments.iter().enumerate() {
        let time = iso8601(m.time);
        let mut data: Fields = m
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), Field::Json(v)))
            .collect();
        let mut health = Fields::from([("id", Field::Str(&device_id))]);
        health.extend(m.health.iter().map(|(k, v)| (k.as_str(), Field::Json(v))));
        data.insert("device_health", Field::Map(health));
        data.insert("time", Field::Str(&time));
        let tstamp = ms_since_epoch(m.time);
        let secs = u32::try_from(tstamp / 1000).unwrap_or(u32::MAX);
        let id = history_id(&id, secs, index);
        records.push(envelope(&of_their_time, id, data, tstamp, now));
    }
    records
}

/// The envelope of one record: `data` (without `meta` and `unpacker`, added here), created at
/// `tstamp` (ms since the epoch).
fn envelope(meta: &Meta, id: String, mut data: Fields, tstamp: u64, now: SystemTime) -> Record {
    data.insert("meta", Field::Meta);
    data.insert("unpacker", Field::Unpacker);
    let mut j = JsonOut::default();
    j.open();
    j.key("event_type");
    j.plain("create");
    j.key("id");
    j.plain(&id);
    j.key("obj");
    j.open();
    // The record is made from the uplink alone, so building it again gives the same bytes:
    // its creation date is the uplink's time (a history record's, its reading's).
    j.key("createDate");
    j.value(&tstamp);
    j.key("data");
    j.fields(&data, meta);
    j.key("id");
    j.plain(&id);
    j.key("recType");
    j.string(meta.rec_type);
    // Microshare's obj.tags hold the site's global tags and the device's own.
    j.key("tags");
    j.strings(meta.device.global_tags.iter().chain(meta.device.tags));
    j.key("tstamp");
    j.value(&tstamp);
    j.close();
    j.key("obj_type");
    j.plain("objs");
    j.key("recType");
    j.string(meta.rec_type);
    j.key("source");
    j.string(meta.device.source);
    j.close();
    Record {
        body: j.into_string(),
        rec_type: meta.rec_type.to_string(),
        key: meta.device_id.to_string(),
        created_ms: ms_since_epoch(now),
        id,
    }
}

/// A JSON object with sorted keys; a later insert replaces an earlier one, as in a `Value`.
type Fields<'a> = BTreeMap<&'a str, Field<'a>>;

/// A value under `data` (or `data.device_health`).
enum Field<'a> {
    Str(&'a str),
    Readings(Vec<&'a Reading>),
    Map(Fields<'a>),
    /// `meta`, written from the record's [`Meta`].
    Meta,
    /// `unpacker`: who made the record.
    Unpacker,
    Json(&'a Json),
}

/// What `data.meta` and `data.unpacker` are written from.
#[derive(Clone, Copy)]
struct Meta<'a> {
    up: &'a Uplink,
    device: &'a DeviceInfo<'a>,
    /// The device type: the codec, who decoded the object, or `packed`.
    class: &'a str,
    rec_type: &'a str,
    usecase: Option<&'a str>,
    device_id: &'a str,
    time: &'a str,
    /// Whether `meta.iot.payload` carries the payload: not in the records of their own time
    /// of an uplink whose payload is longer than a device of a built-in codec sends
    /// ([`crate::codec::MAX_PAYLOAD`]; a LoRaWAN frame carries at most 242 bytes), as a
    /// network server's message can claim: each of its up to 33 records would repeat it.
    payload: bool,
}

/// JSON text written straight into a buffer. Keys are written by the caller in sorted order;
/// strings are escaped as serde_json escapes them (it is called for the few that need it),
/// numbers and JSON values are serde_json's own. Keys and text hubgate makes itself (ids,
/// times, hex, its own names) have nothing to escape and are not searched for it.
struct JsonOut(Vec<u8>);

impl Default for JsonOut {
    /// Room for a typical envelope (~1.2 KB) without growing: the capacity a `String` grown
    /// by doubling from serde_json's 128 bytes would end with.
    fn default() -> Self {
        JsonOut(Vec::with_capacity(2048))
    }
}

impl JsonOut {
    #[inline]
    fn open(&mut self) {
        self.0.push(b'{');
    }

    #[inline]
    fn close(&mut self) {
        self.0.push(b'}');
    }

    /// A comma, unless this is the first key or element of its object or array.
    #[inline]
    fn separate(&mut self) {
        if !matches!(self.0.last(), Some(b'{' | b'[')) {
            self.0.push(b',');
        }
    }

    /// One of the envelope's own keys.
    #[inline]
    fn key(&mut self, key: &'static str) {
        self.separate();
        self.plain(key);
        self.0.push(b':');
    }

    /// A key from elsewhere: a codec's or a mapping's field name.
    fn name(&mut self, key: &str) {
        self.separate();
        self.string(key);
        self.0.push(b':');
    }

    fn string(&mut self, s: &str) {
        if needs_escape(s) {
            self.value(s);
        } else {
            self.plain(s);
        }
    }

    /// A string with nothing to escape: one hubgate made or names itself.
    #[inline]
    fn plain(&mut self, s: &str) {
        debug_assert!(!needs_escape(s), "{s:?}");
        self.0.push(b'"');
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(b'"');
    }

    /// Bytes as a string of lower-case hex digits, as `hex::encode` writes them.
    fn hex(&mut self, bytes: &[u8]) {
        self.0.push(b'"');
        for &b in bytes {
            self.0.extend(hex_digits(b));
        }
        self.0.push(b'"');
    }

    fn strings<'s>(&mut self, items: impl IntoIterator<Item = &'s String>) {
        self.0.push(b'[');
        for s in items {
            self.separate();
            self.string(s);
        }
        self.0.push(b']');
    }

    /// A number, boolean or JSON value, as serde_json writes it.
    /// `key` and its value, when there is one.
    fn optional(&mut self, key: &'static str, v: Option<impl Serialize>) {
        if let Some(v) = v {
            self.key(key);
            self.value(&v);
        }
    }

    fn value(&mut self, v: &(impl Serialize + ?Sized)) {
        // Into a Vec, numbers, booleans, strings and `Value`s: this cannot fail.
        serde_json::to_writer(&mut self.0, v).expect("the value serialises");
    }

    fn fields(&mut self, fields: &Fields, meta: &Meta) {
        self.open();
        for (&key, field) in fields {
            self.name(key);
            match field {
                Field::Str(s) => self.string(s),
                Field::Readings(readings) => {
                    self.0.push(b'[');
                    for r in readings {
                        self.separate();
                        self.reading(r);
                    }
                    self.0.push(b']');
                }
                Field::Map(m) => self.fields(m, meta),
                Field::Meta => self.meta(meta),
                Field::Unpacker => {
                    self.open();
                    self.key("class");
                    self.string(meta.class);
                    self.key("library");
                    self.plain("hubgate");
                    self.key("version");
                    self.plain(env!("CARGO_PKG_VERSION"));
                    self.close();
                }
                Field::Json(v) => self.value(*v),
            }
        }
        self.close();
    }

    /// One reading as `{context_id, unit, value}` (sorted; absent ones left out).
    fn reading(&mut self, r: &Reading) {
        self.open();
        match r.context_id {
            Some(Context::Channel(c)) => {
                self.key("context_id");
                self.plain(&c.to_string());
            }
            Some(Context::Name(n)) => {
                self.key("context_id");
                self.string(n);
            }
            None => {}
        }
        if let Some(u) = r.unit {
            self.key("unit");
            self.string(u);
        }
        self.key("value");
        match r.value {
            Value::Num(v) => self.value(&Num(v)),
            Value::Int(v) => self.value(&v),
            Value::Bool(v) => self.value(&v),
        }
        self.close();
    }

    fn meta(&mut self, m: &Meta) {
        let (up, radio) = (m.up, &m.up.radio);
        self.open();
        // Microshare's device-cluster summary.
        self.key("dc");
        self.open();
        self.key("device_type");
        self.string(m.class);
        self.key("recType");
        self.string(m.rec_type);
        if let Some(u) = m.usecase {
            self.key("usecase");
            self.string(u);
        }
        self.close();
        self.key("device");
        self.strings(m.device.tags);
        self.key("global");
        self.strings(m.device.global_tags);
        self.key("iot");
        self.open();
        // Microshare writes the bandwidth in kHz and the frequency in MHz.
        self.optional("bw", radio.bandwidth.map(|hz| Num(f64::from(hz) / 1e3)));
        self.optional("channel", radio.channel);
        self.key("device_id");
        self.plain(m.device_id);
        if let Some(n) = &up.device_name {
            self.key("device_name");
            self.string(n);
        }
        self.optional("fcnt_up", up.fcnt);
        self.optional("fport", up.fport);
        self.optional("freq", radio.frequency.map(|hz| Num(hz as f64 / 1e6)));
        if let Some(g) = &radio.gateway_id {
            self.key("gateway_id");
            self.string(g);
        }
        // Every gateway that heard the uplink, as Microshare's live records list them; a raw
        // radio frame's is its one receiving gateway.
        let sf = radio.spreading_factor;
        if !radio.gateways.is_empty() || radio.gateway_id.is_some() {
            self.key("gateways");
            self.0.push(b'[');
            for g in &radio.gateways {
                self.separate();
                self.reception(g.gateway_id.as_deref(), g.rssi, g.snr, g.channel, sf);
            }
            if radio.gateways.is_empty() {
                let id = radio.gateway_id.as_deref();
                self.reception(id, radio.rssi, radio.snr, radio.channel, sf);
            }
            self.0.push(b']');
        }
        self.key("iso_time");
        self.plain(m.time);
        if m.payload {
            self.key("payload");
            self.hex(&up.payload);
        }
        self.key("payload_fmt");
        self.value(&1);
        self.optional("rssi", radio.rssi);
        self.optional("sf", radio.spreading_factor);
        self.optional("snr", radio.snr.map(Num));
        self.key("time");
        self.plain(m.time);
        self.key("type");
        self.plain("uplink");
        self.close();
        // Microshare's list of upstream records; hubgate's records have none.
        self.key("source");
        self.strings([]);
        if let Some(u) = m.usecase {
            self.key("usecase");
            self.string(u);
        }
        self.close();
    }

    /// One entry of `meta.iot.gateways`: `{channel, id, rssi, sf, snr}` (sorted; those not
    /// known left out), the spreading factor the uplink's.
    fn reception(
        &mut self,
        id: Option<&str>,
        rssi: Option<i32>,
        snr: Option<f64>,
        channel: Option<u32>,
        sf: Option<u8>,
    ) {
        self.open();
        self.optional("channel", channel);
        if let Some(id) = id {
            self.key("id");
            self.string(id);
        }
        self.optional("rssi", rssi);
        self.optional("sf", sf);
        self.optional("snr", snr.map(Num));
        self.close();
    }

    fn into_string(mut self) -> String {
        // The body is kept until delivered, through an outage by the thousand: without the
        // room left of the 2 KiB (glibc shrinks the block in place, without a copy).
        self.0.shrink_to_fit();
        // Only `str`s and serde_json's output went in.
        String::from_utf8(self.0).expect("JSON text is UTF-8")
    }
}

/// Whether serde_json escapes anything in `s`: it escapes control characters, `"` and `\`, and
/// nothing else.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A number as Microshare writes it: an integer when the value is whole (`23`, not `23.0`),
/// else a float.
#[derive(Clone, Copy)]
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Integers up to 2^53 are exact in both forms; beyond, the float says more.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if self.0.fract() == 0.0 && self.0.abs() <= EXACT {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

/// A gateway's GWMP `stat` report as a record of its own (`io.microshare.gateway.unpacked`),
/// keyed by the gateway id, with the site's global tags as a device's record has them.
/// `(time, same_ms_index)`: when it was received, and its index among the gateway's unlike
/// reports of that millisecond (one pair: they go together, and the function stays within
/// clippy's count of arguments); the id is a hash of the gateway, the time in ms and the index
/// when above 0 (at 0 left out, as [`stable_id`] does, so such ids are what they were before
/// it).
pub fn gateway_status(
    source: &str,
    global_tags: &[String],
    gateway_id: &str,
    stat: &Map<String, Json>,
    (time, same_ms_index): (SystemTime, u32),
    now: SystemTime,
) -> Record {
    let mut h = Sha256::new();
    h.update(gateway_id.as_bytes());
    h.update(ms_since_epoch(time).to_be_bytes());
    if same_ms_index > 0 {
        h.update(b"SameMs");
        h.update(same_ms_index.to_be_bytes());
    }
    let id = uuid_form(&h.finalize());
    let rec_type = crate::codec::rec_type::GATEWAY;
    let iso = iso8601(time);
    let obj = json!({
        "createDate": ms_since_epoch(time),
        "id": id,
        "recType": rec_type,
        "tstamp": ms_since_epoch(time),
        "tags": global_tags,
        "data": {
            "device_health": { "id": gateway_id },
            "stat": stat,
            "meta": { "iot": { "device_id": gateway_id, "type": "gateway_status", "time": iso, "iso_time": iso } },
            "time": iso,
            "unpacker": { "library": "hubgate", "version": env!("CARGO_PKG_VERSION"), "class": "gwmp-stat" },
        },
    });
    let body = json!({
        "event_type": "create", "id": id, "recType": rec_type, "source": source, "obj_type": "objs", "obj": obj,
    });
    Record {
        id,
        rec_type: rec_type.into(),
        key: gateway_id.into(),
        created_ms: ms_since_epoch(now),
        body: body.to_string(),
    }
}

/// recType of a dead letter: kept in the buffer's dead-letter tree, never sent.
pub const DEAD_LETTER: &str = "hubgate.dead_letter";

/// The record of a message hubgate gave up on (see [`DeadLetter`]), keyed by its source; the
/// same message always gets the same id.
pub fn dead_letter(d: &DeadLetter, now: SystemTime) -> Record {
    kept(d, uuid_form(&d.sha256), d.source.into(), None, now)
}

/// A refused record's body up to this size as it is stored (a JSON string, escaped) is kept
/// whole in its dead letter, while fewer than [`crate::buffer::WHOLE_DEAD_LETTERS`] are kept:
/// one refused for itself (a hub's checks) can then be exported and sent again. A normal
/// record is about 1.3 KB; one refused as too large for the broker keeps its first bytes
/// only.
pub const KEPT_WHOLE: usize = 4096;

/// What the dead-letter tree keeps of a record the sink refused for good: its body as a
/// [`DeadLetter`] of source `sink` (size, SHA-256, first bytes), under the record's own id,
/// with its recType, key (cut like an [`Excerpt`](crate::format::Excerpt)), creation time
/// (null for a record without one: made while the clock was not trusted, or carried by
/// `buffer recover` with the clock not known to be synchronised) and, if `whole` and up to
/// [`KEPT_WHOLE`] bytes, the body whole (`body`, its exact text). At most a few KB, however
/// large the record.
pub fn refused(rec: &Record, reason: &str, now: SystemTime, whole: bool) -> Record {
    let key = crate::format::Excerpt::from(&rec.key).to_string();
    let reason = crate::format::Excerpt::from(reason).to_string();
    let d = DeadLetter::new("sink", reason, None, rec.body.as_bytes(), now);
    let created = UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(rec.created_ms))
        .filter(|_| rec.created_ms > 0);
    let mut record = json!({
        "recType": rec.rec_type,
        "key": key,
        "created": created.map(iso8601),
    });
    // Escaping only grows the text: a large body is never escaped to be measured.
    let stored = |body: &str| serde_json::to_string(body).map_or(usize::MAX, |s| s.len() - 2);
    if whole && rec.body.len() <= KEPT_WHOLE && stored(&rec.body) <= KEPT_WHOLE {
        record["body"] = Json::String(rec.body.clone());
    }
    kept(&d, rec.id.clone(), key, Some(record), now)
}

/// The dead-letter record of `d`; `record`: what the sink refused, if it was a record.
fn kept(d: &DeadLetter, id: String, key: String, record: Option<Json>, now: SystemTime) -> Record {
    let mut body = json!({
        "event_type": "dead_letter",
        "id": id,
        "recType": DEAD_LETTER,
        "source": d.source,
        "reason": d.reason,
        "topic": d.topic,
        "size": d.size,
        "sha256": hex::encode(d.sha256),
        "head_base64": base64::engine::general_purpose::STANDARD.encode(&d.head),
        "received": iso8601(d.received),
    });
    if let Some(record) = record {
        body["record"] = record;
    }
    Record {
        id,
        rec_type: DEAD_LETTER.into(),
        key,
        created_ms: ms_since_epoch(now),
        body: body.to_string(),
    }
}

/// Readings become arrays of `{value, unit, context_id}` under their field name, in order.
fn put_readings<'a>(into: &mut Fields<'a>, readings: &'a [Reading]) {
    for r in readings {
        let slot = into
            .entry(r.field)
            .or_insert_with(|| Field::Readings(Vec::new()));
        if let Field::Readings(a) = slot {
            a.push(r);
        }
    }
}

/// The unpacked record (`obj`) of an envelope, byte for byte as it is in the envelope: what
/// `hubgate decode` prints.
pub fn obj_of(body: &str) -> Option<&str> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        obj: &'a serde_json::value::RawValue,
    }
    serde_json::from_str::<Envelope>(body)
        .ok()
        .map(|e| e.obj.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BrowanModel, Codec, History};
    use crate::uplink::{Radio, Reception};
    use std::time::Duration;

    fn uplink() -> Uplink {
        Uplink {
            dev_eui: crate::ids::DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]),
            dev_addr: None,
            device_name: None,
            fport: Some(103),
            fcnt: Some(42),
            payload: vec![0x08, 0x8c, 0x2e, 0x2d, 0xff, 0xff, 0xff, 0xff],
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
            radio: Radio {
                rssi: Some(-79),
                snr: Some(9.5),
                ..Radio::default()
            },
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: None,
        }
    }

    #[test]
    fn envelope_has_microshare_shape() {
        let up = uplink();
        let tags = vec!["Building 1".to_string(), "Floor 2".to_string()];
        let decoded = Codec::Browan(BrowanModel::Tbhh100)
            .decode(up.fport, &up.payload)
            .unwrap();
        let dev = DeviceInfo {
            tags: &tags,
            ..DeviceInfo::UNKNOWN
        };
        let [rec] = <[Record; 1]>::try_from(build(
            &up,
            &dev,
            Payload::Decoded {
                codec: "browan-tbhh100",
                decoded,
            },
            SystemTime::now(),
        ))
        .unwrap();
        // Bodies wait by the thousand in an outage: none keeps room beyond its text.
        assert_eq!(rec.body.capacity(), rec.body.len());
        let v: Json = serde_json::from_str(&rec.body).unwrap();
        assert_eq!(v["event_type"], "create");
        assert_eq!(v["recType"], "io.microshare.environment.unpacked");
        assert_eq!(v["id"], v["obj"]["id"]);
        assert_eq!(rec.key, "58-A0-CB-00-00-10-12-34");
        let obj = &v["obj"];
        assert_eq!(obj["tstamp"], 1_700_000_000_000u64);
        assert_eq!(obj["tags"], json!(["Building 1", "Floor 2"]));
        let data = &obj["data"];
        assert_eq!(data["temperature"][0]["value"], 14.0);
        assert_eq!(data["temperature"][0]["unit"], "°C");
        assert_eq!(data["humidity"][0]["value"], 45.0);
        assert_eq!(data["device_health"]["id"], "58-A0-CB-00-00-10-12-34");
        assert_eq!(data["device_health"]["voltage"][0]["value"], 3.7);
        assert_eq!(data["meta"]["iot"]["fcnt_up"], 42);
        assert_eq!(data["meta"]["iot"]["payload"], "088c2e2dffffffff");
        assert_eq!(data["meta"]["iot"]["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(data["meta"]["device"], json!(["Building 1", "Floor 2"]));
        assert_eq!(data["unpacker"]["class"], "browan-tbhh100");
    }

    /// The envelope is serialized from structs, not from a `Value`: its bytes must be what a
    /// `Value` prints (keys sorted, each once), the wire format consumers have seen so far.
    #[test]
    fn envelope_bytes_are_what_a_json_value_prints() {
        let mut up = uplink();
        up.device_name = Some("dev \"7\" é".into());
        up.radio = Radio {
            rssi: Some(-79),
            snr: Some(f64::NAN),
            gateway_id: Some("b827ebfffe000001".into()),
            frequency: Some(868_100_000),
            spreading_factor: Some(7),
            bandwidth: Some(125_000),
            channel: Some(3),
            gateways: vec![
                Reception {
                    gateway_id: Some("gw \"a\" é".into()),
                    rssi: Some(-79),
                    snr: Some(f64::NAN),
                    channel: Some(3),
                },
                Reception {
                    snr: Some(-2.25),
                    ..Reception::default()
                },
            ],
        };
        let tags = vec!["Building \"1\"".to_string()];
        let dev = DeviceInfo {
            tags: &tags,
            global_tags: &tags,
            usecase: Some("SC05"),
            source: "ShareService",
        };
        let mut bodies = Vec::new();
        // Every codec's example (EM300-SLD's carries a history record: a record of its own).
        for &codec in Codec::ALL {
            let example = codec.example();
            up.fport = Some(example.fport);
            up.payload = example.payload();
            let payload = match codec.decode(up.fport, &up.payload) {
                Ok(decoded) => Payload::Decoded {
                    codec: codec.id(),
                    decoded,
                },
                Err(e) => panic!("{codec}: {e}"),
            };
            bodies.extend(
                build(&up, &dev, payload, SystemTime::now())
                    .into_iter()
                    .map(|r| r.body),
            );
        }
        let packed = Payload::Packed {
            rec_type: "io.microshare.lorawan.packed",
            error: Some("bad \"payload\"".into()),
        };
        bodies.extend(
            build(&up, &dev, packed, SystemTime::now())
                .into_iter()
                .map(|r| r.body),
        );
        for body in bodies {
            let value: Json = serde_json::from_str(&body).unwrap();
            assert_eq!(body, value.to_string());
        }
    }

    /// `meta.iot.gateways` lists each reception a network server listed, in its order, as
    /// `{channel, id, rssi, sf, snr}` with what is known of it (the uplink's spreading
    /// factor); a raw radio frame's lists its one gateway, and an uplink heard by no known
    /// gateway (a serial envelope) has none.
    #[test]
    fn meta_iot_lists_the_gateways_that_heard_the_uplink() {
        let iot = |up: &Uplink| {
            let payload = Payload::Packed {
                rec_type: "io.microshare.lorawan.packed",
                error: None,
            };
            let rec = build(up, &DeviceInfo::UNKNOWN, payload, SystemTime::now()).remove(0);
            let v: Json = serde_json::from_str(&rec.body).unwrap();
            v["obj"]["data"]["meta"]["iot"].clone()
        };
        let mut up = uplink();
        up.radio = Radio {
            rssi: Some(-57),
            snr: Some(0.0),
            gateway_id: Some("gw-b".into()),
            spreading_factor: Some(9),
            channel: Some(0),
            gateways: vec![
                Reception {
                    gateway_id: Some("gw-a".into()),
                    rssi: Some(-101),
                    snr: Some(-7.5),
                    channel: Some(4),
                },
                Reception {
                    gateway_id: Some("gw-b".into()),
                    rssi: Some(-57),
                    snr: Some(0.0),
                    channel: Some(0),
                },
                Reception {
                    snr: Some(2.0),
                    ..Reception::default()
                },
            ],
            ..Radio::default()
        };
        let iot_of = iot(&up);
        assert_eq!(
            iot_of["gateways"],
            json!([
                {"channel": 4, "id": "gw-a", "rssi": -101, "sf": 9, "snr": -7.5},
                {"channel": 0, "id": "gw-b", "rssi": -57, "sf": 9, "snr": 0},
                {"sf": 9, "snr": 2},
            ])
        );
        assert_eq!(
            (&iot_of["gateway_id"], &iot_of["snr"], &iot_of["channel"]),
            (&json!("gw-b"), &json!(0), &json!(0))
        );
        up.radio.gateways.clear();
        up.radio.spreading_factor = None;
        assert_eq!(
            iot(&up)["gateways"],
            json!([{"channel": 0, "id": "gw-b", "rssi": -57, "snr": 0}])
        );
        up.radio.gateway_id = None;
        assert_eq!(iot(&up).get("gateways"), None);
    }

    /// Readings of earlier times make a record each, after the live one, with the history
    /// time as its `time`, `createDate` and `tstamp`, its readings under the live field names,
    /// no device values (they are of now), the uplink's `meta`, and an id of its own that a
    /// second build gives again; the live arrays hold only readings of now.
    #[test]
    fn each_history_time_makes_a_record_of_its_own() {
        let decoded = Decoded {
            rec_type: "io.microshare.leak.unpacked",
            readings: vec![Reading::num("temperature", 22.0, "°C")],
            health: vec![Reading::num("voltage", 3.6, "V")],
            history: vec![
                History {
                    time: 1_600_000_000,
                    readings: vec![
                        Reading::flag("leak", true).ctx(5),
                        Reading::num("temperature", 21.5, "°C"),
                    ],
                },
                History {
                    time: u32::MAX,
                    readings: vec![Reading::num("temperature", 21.0, "°C")],
                },
            ],
            ..Decoded::default()
        };
        let built = |decoded: &Decoded| {
            let payload = Payload::Decoded {
                codec: "test",
                decoded: decoded.clone(),
            };
            build(&uplink(), &DeviceInfo::UNKNOWN, payload, SystemTime::now())
        };
        let records = built(&decoded);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            ids[0],
            stable_id(&uplink()),
            "the live record keeps the uplink's id"
        );
        assert!(
            ids[1] != ids[0] && ids[2] != ids[0] && ids[1] != ids[2],
            "{ids:?}"
        );
        let again: Vec<String> = built(&decoded).into_iter().map(|r| r.id).collect();
        assert_eq!(again, ids, "a redelivered uplink makes the same ids");
        let v: Vec<Json> = records
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect();
        for (rec, v) in records.iter().zip(&v) {
            assert_eq!(rec.body, v.to_string());
            assert_eq!(v["id"], rec.id.as_str());
            assert_eq!(v["obj"]["id"], rec.id.as_str());
            assert_eq!(v["recType"], "io.microshare.leak.unpacked");
            assert_eq!(rec.key, "58-A0-CB-00-00-10-12-34");
            let data = &v["obj"]["data"];
            assert!(data.get("history").is_none());
            assert_eq!(data["meta"]["iot"]["time"], "2023-11-14T22:13:20.000Z");
            assert_eq!(data["meta"]["iot"]["fcnt_up"], 42);
            assert_eq!(data["device_health"]["id"], "58-A0-CB-00-00-10-12-34");
        }
        let data = |i: usize| &v[i]["obj"]["data"];
        assert_eq!(data(0)["temperature"], json!([{"unit": "°C", "value": 22}]));
        assert!(data(0).get("leak").is_none());
        assert_eq!(data(0)["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(data(0)["device_health"]["voltage"][0]["value"], 3.6);
        assert_eq!(v[0]["obj"]["tstamp"], 1_700_000_000_000u64);
        assert_eq!(data(1)["leak"], json!([{"context_id": "5", "value": true}]));
        assert_eq!(
            data(1)["temperature"],
            json!([{"unit": "°C", "value": 21.5}])
        );
        assert_eq!(data(1)["time"], "2020-09-13T12:26:40.000Z");
        assert_eq!(v[1]["obj"]["createDate"], 1_600_000_000_000u64);
        assert_eq!(v[1]["obj"]["tstamp"], 1_600_000_000_000u64);
        assert_eq!(
            data(1)["device_health"],
            json!({"id": "58-A0-CB-00-00-10-12-34"}),
            "no device values in a history record"
        );
        assert_eq!(data(2)["temperature"], json!([{"unit": "°C", "value": 21}]));
        assert_eq!(data(2)["time"], "2106-02-07T06:28:15.000Z");
        assert_eq!(v[2]["obj"]["tstamp"], u64::from(u32::MAX) * 1000);

        // History alone: only the history records.
        let past_only = Decoded {
            readings: Vec::new(),
            health: Vec::new(),
            ..decoded
        };
        let records = built(&past_only);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ids[1..]
        );
        // Nothing at all: the uplink's record all the same.
        let records = built(&Decoded::default());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, stable_id(&uplink()));
    }

    #[test]
    fn iso8601_never_panics_and_clamps_to_1970_through_9999() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(iso8601(far), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            iso8601(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    /// The dead letter of a record the sink refused keeps its creation time, or null for a
    /// record without one (0), never 1970.
    #[test]
    fn a_refused_records_dead_letter_has_its_creation_time_or_null() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let created = |created_ms| {
            let rec = Record {
                id: "id".into(),
                rec_type: "t".into(),
                key: "k".into(),
                created_ms,
                body: "{}".into(),
            };
            let kept: Json =
                serde_json::from_str(&refused(&rec, "too large", now, true).body).unwrap();
            kept["record"]["created"].clone()
        };
        assert_eq!(
            created(1_700_000_000_000),
            json!("2023-11-14T22:13:20.000Z")
        );
        assert_eq!(created(0), Json::Null);
    }

    /// A refused record's body is kept whole up to [`KEPT_WHOLE`] bytes as it is stored
    /// (escaped), as its exact text, when `whole`; past it, or without, only its first bytes
    /// are.
    #[test]
    fn a_refused_records_dead_letter_keeps_its_body_whole_up_to_a_bound() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let kept = |body: &str, whole| {
            let rec = Record {
                id: "id".into(),
                rec_type: "t".into(),
                key: "k".into(),
                created_ms: 1,
                body: body.into(),
            };
            let kept = refused(&rec, "invalid", now, whole).body;
            let kept: Json = serde_json::from_str(&kept).unwrap();
            kept["record"].get("body").cloned()
        };
        let at_bound = format!("{{\"v\":\"{}\"}}", "x".repeat(KEPT_WHOLE - 12));
        // Each quote escaped: 4 bytes more as stored.
        assert_eq!(at_bound.len() + 4, KEPT_WHOLE);
        assert_eq!(kept(&at_bound, true), Some(Json::String(at_bound.clone())));
        assert_eq!(kept(&at_bound, false), None);
        let past = format!("{{\"v\":\"{}\"}}", "x".repeat(KEPT_WHOLE - 11));
        assert_eq!(kept(&past, true), None);
    }

    #[test]
    fn id_is_stable_and_distinguishes_uplinks() {
        let a = uplink();
        let mut b = uplink();
        assert_eq!(stable_id(&a), stable_id(&b));
        b.fcnt = Some(43);
        assert_ne!(stable_id(&a), stable_id(&b));
        let keyed = |keys, resets_fcnt, ms| {
            let session = Some(crate::uplink::SessionPrint { keys, resets_fcnt });
            let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            stable_id(&Uplink {
                session,
                time,
                ..uplink()
            })
        };
        let ms = 1_700_000_000_000;
        assert_ne!(
            keyed([1; 4], false, ms),
            stable_id(&a),
            "a frame hubgate decrypted"
        );
        assert_ne!(
            keyed([1; 4], false, ms),
            keyed([2; 4], false, ms),
            "other keys"
        );
        assert_eq!(
            keyed([1; 4], false, ms),
            keyed([1; 4], false, ms + 1),
            "the time"
        );
        assert_ne!(
            keyed([1; 4], true, ms),
            keyed([1; 4], true, ms + 1),
            "resets_fcnt"
        );
        assert_eq!(keyed([1; 4], true, ms), keyed([1; 4], true, ms));
        // The same hash with b"Keys" and the print after the DevAddr, and b"Time" and the time
        // in ms (u64 big-endian) after the FCnt of a resets_fcnt device.
        assert_eq!(
            keyed([1; 4], false, ms),
            "0c19271d-cf46-7183-18a0-ba9bd7eb940f"
        );
        assert_eq!(
            keyed([1; 4], true, ms),
            "c4825dc4-65d3-9f42-4147-3b594e74340b"
        );
        // SHA-256 of DevEUI, FCnt (u32 big-endian), b"Time" and the time in ms, [FPort, 1] and
        // the payload: its first 16 bytes, as a UUID.
        assert_eq!(stable_id(&a), "5406ecda-f48b-d859-aa8a-1d8d2c4be60d");
    }

    /// An uplink a network server gives with its FCnt: a device whose counter restarted (an
    /// ABP device whose network server does not check it) sends the same FCnt and payload
    /// again at another time, a reading of its own; the same message delivered again has the
    /// same time, and the same id.
    #[test]
    fn a_network_servers_uplink_at_another_time_is_another_reading() {
        let a = uplink();
        let later = Uplink {
            time: a.time + Duration::from_secs(3600),
            ..uplink()
        };
        assert_ne!(stable_id(&a), stable_id(&later));
        assert_eq!(stable_id(&a), stable_id(&uplink()));
    }

    /// Where the id hashes the time in ms, it hashes the index among a source's uplinks of
    /// that millisecond too, only when above 0: the first frame of a millisecond keeps the id
    /// it had before the index existed, later ones get ids of their own. Under a session that
    /// never restarts its counter the index changes nothing.
    #[test]
    fn the_same_ms_index_counts_only_above_0_and_only_where_the_time_does() {
        let first = Uplink {
            fcnt: None,
            ..uplink()
        };
        // SHA-256 of DevEUI, the time in ms (u64 big-endian), [FPort, 1] and the payload.
        assert_eq!(stable_id(&first), "ac9b598c-1f64-67dc-bd19-2bd1bfda419d");
        let ids: Vec<String> = (0..3)
            .map(|k| {
                stable_id(&Uplink {
                    same_ms_index: k,
                    ..first.clone()
                })
            })
            .collect();
        assert_eq!(ids[0], "ac9b598c-1f64-67dc-bd19-2bd1bfda419d");
        assert!(
            ids[1] != ids[0] && ids[2] != ids[0] && ids[2] != ids[1],
            "{ids:?}"
        );
        // With an FCnt it counts where the time does: a network server's uplink (not one
        // hubgate decrypted under a session that never restarts its counter).
        let with_fcnt = |same_ms_index, session| {
            stable_id(&Uplink {
                same_ms_index,
                session,
                ..uplink()
            })
        };
        assert_eq!(with_fcnt(0, None), "5406ecda-f48b-d859-aa8a-1d8d2c4be60d");
        assert_ne!(with_fcnt(2, None), with_fcnt(0, None));
        let kept = Some(crate::uplink::SessionPrint {
            keys: [1; 4],
            resets_fcnt: false,
        });
        assert_eq!(with_fcnt(2, kept), with_fcnt(0, kept));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The digits written by hand are what `time`'s formatter writes.
        #[test]
        fn iso8601_is_what_times_formatter_writes(
            ms in 0u64..253_402_300_799_999,
            ns in 0u64..1_000_000,
        ) {
            let since = Duration::from_millis(ms) + Duration::from_nanos(ns);
            let fmt = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            let expected = (time::OffsetDateTime::UNIX_EPOCH + since).format(&fmt).unwrap();
            proptest::prop_assert_eq!(iso8601(UNIX_EPOCH + since), expected);
        }

        /// Whatever the uplink, device and payload, the envelope is what a `Value` prints (keys
        /// sorted, each once; serde_json's escapes and numbers) and carries what went in.
        #[test]
        fn any_envelope_is_what_a_json_value_prints(
            up in strategy::uplink(),
            payload in strategy::payload(),
            tags in proptest::collection::vec(strategy::text(), 0..3),
            global_tags in proptest::collection::vec(strategy::text(), 0..3),
            usecase in proptest::option::of(strategy::text()),
            source in strategy::text(),
        ) {
            let dev = DeviceInfo {
                tags: &tags,
                global_tags: &global_tags,
                usecase: usecase.as_deref(),
                source: &source,
            };
            let records = build(&up, &dev, payload.payload(), SystemTime::now());
            proptest::prop_assert!(!records.is_empty());
            for rec in records {
                let v: Json = serde_json::from_str(&rec.body).unwrap();
                proptest::prop_assert_eq!(&rec.body, &v.to_string());
                let iot = &v["obj"]["data"]["meta"]["iot"];
                proptest::prop_assert_eq!(&iot["device_name"], &json!(up.device_name));
                proptest::prop_assert_eq!(&iot["gateway_id"], &json!(up.radio.gateway_id));
                let listed: Vec<&Json> = iot["gateways"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| &g["id"])
                    .collect();
                let ids: Vec<Json> = match &up.radio.gateway_id {
                    Some(id) if up.radio.gateways.is_empty() => vec![json!(id)],
                    _ => up.radio.gateways.iter().map(|g| json!(g.gateway_id)).collect(),
                };
                proptest::prop_assert_eq!(listed, ids.iter().collect::<Vec<_>>());
                proptest::prop_assert_eq!(&iot["payload"], &json!(hex::encode(&up.payload)));
                proptest::prop_assert_eq!(&v["obj"]["data"]["meta"]["device"], &json!(tags));
                proptest::prop_assert_eq!(&v["source"], &json!(source));
            }
        }
    }

    /// Random inputs for the envelope's property test: text with characters JSON escapes,
    /// field names that collide with the envelope's own keys, numbers whole and not (any
    /// finite f64 too, read back exactly with serde_json's `float_roundtrip`), NaN and
    /// infinities.
    mod strategy {
        use super::*;
        use crate::mapping::Mapped;
        use proptest::prelude::*;

        const FIELDS: &[&str] = &[
            "temperature",
            "meta",
            "time",
            "device_health",
            "error",
            "history",
            "a",
        ];

        pub fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9 ]{0,8}",
                "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀]{0,4}",
                any::<String>()
            ]
        }

        fn number() -> impl Strategy<Value = f64> {
            prop_oneof![
                (-80_000i32..80_000).prop_map(|k| f64::from(k) / 8.0),
                proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL,
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
            ]
        }

        fn reading() -> impl Strategy<Value = Reading> {
            let value = prop_oneof![
                number().prop_map(Value::Num),
                any::<i64>().prop_map(Value::Int),
                any::<bool>().prop_map(Value::Bool),
            ];
            let unit = proptest::option::of(prop_oneof![Just("°C"), Just("q\"\\\n")]);
            let context = proptest::option::of(prop_oneof![
                any::<u8>().prop_map(Context::Channel),
                Just(Context::Name("Button #1, Upper Left")),
                Just(Context::Name("q\"\\\n")),
            ]);
            (proptest::sample::select(FIELDS), value, unit, context).prop_map(
                |(field, value, unit, context_id)| Reading {
                    field,
                    value,
                    unit,
                    context_id,
                },
            )
        }

        fn history() -> impl Strategy<Value = History> {
            (any::<u32>(), proptest::collection::vec(reading(), 0..3))
                .prop_map(|(time, readings)| History { time, readings })
        }

        fn object() -> impl Strategy<Value = Map<String, Json>> {
            let leaf = prop_oneof![
                Just(Json::Null),
                number().prop_map(Json::from),
                any::<i64>().prop_map(Json::from),
                text().prop_map(Json::from),
            ];
            let key = prop_oneof![
                proptest::sample::select(FIELDS).prop_map(String::from),
                text()
            ];
            proptest::collection::btree_map(key, leaf, 0..4).prop_map(|m| m.into_iter().collect())
        }

        /// A [`Payload`] of each kind, owned (a `Payload` borrows).
        #[derive(Debug, Clone)]
        pub enum Owned {
            Decoded(Vec<Reading>, Vec<Reading>, Vec<History>),
            Object(String, Map<String, Json>, Map<String, Json>),
            Packed(Option<String>),
        }

        impl Owned {
            pub fn payload(&self) -> Payload<'_> {
                const REC_TYPE: &str = "io.microshare.environment.unpacked";
                match self {
                    Owned::Decoded(readings, health, history) => Payload::Decoded {
                        codec: "codec \"x\"",
                        decoded: Decoded {
                            rec_type: REC_TYPE,
                            readings: readings.clone(),
                            health: health.clone(),
                            history: history.clone(),
                            stopped: None,
                        },
                    },
                    Owned::Object(rec_type, data, health) => Payload::Object {
                        class: "js",
                        mapped: Mapped {
                            rec_type: rec_type.clone(),
                            data: data.clone(),
                            health: health.clone(),
                            history: Vec::new(),
                            warnings: Vec::new(),
                        },
                    },
                    Owned::Packed(error) => Payload::Packed {
                        rec_type: REC_TYPE,
                        error: error.clone(),
                    },
                }
            }
        }

        pub fn payload() -> impl Strategy<Value = Owned> {
            let readings = || proptest::collection::vec(reading(), 0..6);
            prop_oneof![
                (
                    readings(),
                    readings(),
                    proptest::collection::vec(history(), 0..3)
                )
                    .prop_map(|(r, h, past)| Owned::Decoded(r, h, past)),
                (text(), object(), object()).prop_map(|(r, d, h)| Owned::Object(r, d, h)),
                proptest::option::of(text()).prop_map(Owned::Packed),
            ]
        }

        fn reception() -> impl Strategy<Value = Reception> {
            (
                proptest::option::of(text()),
                any::<Option<i32>>(),
                proptest::option::of(number()),
                any::<Option<u32>>(),
            )
                .prop_map(|(gateway_id, rssi, snr, channel)| Reception {
                    gateway_id,
                    rssi,
                    snr,
                    channel,
                })
        }

        pub fn uplink() -> impl Strategy<Value = Uplink> {
            let radio = (
                any::<Option<i32>>(),
                proptest::option::of(number()),
                proptest::option::of(text()),
                proptest::option::of(0u64..1_000_000_000_000_000),
                any::<Option<u8>>(),
                any::<Option<u32>>(),
                any::<Option<u32>>(),
                proptest::collection::vec(reception(), 0..3),
            )
                .prop_map(
                    |(rssi, snr, gateway_id, frequency, sf, bandwidth, channel, gateways)| Radio {
                        rssi,
                        snr,
                        gateway_id,
                        frequency,
                        spreading_factor: sf,
                        bandwidth,
                        channel,
                        gateways,
                    },
                );
            (
                any::<[u8; 8]>(),
                proptest::option::of(text()),
                any::<Option<u8>>(),
                any::<Option<u32>>(),
                proptest::collection::vec(any::<u8>(), 0..24),
                0u64..=253_402_300_799_999,
                radio,
            )
                .prop_map(|(eui, device_name, fport, fcnt, payload, ms, radio)| {
                    Uplink {
                        dev_eui: crate::ids::DevEui(eui),
                        dev_addr: None,
                        device_name,
                        fport,
                        fcnt,
                        payload,
                        time: UNIX_EPOCH + Duration::from_millis(ms),
                        radio,
                        ns: crate::uplink::NsDecoded::default(),
                        same_ms_index: 0,
                        session: None,
                    }
                })
        }
    }

    /// Microshare's `meta.iot` has the bandwidth in kHz and the frequency in MHz, not the
    /// uplink's Hz: a record in Hz would show 125000 kHz and 868100000 MHz on a dashboard.
    #[test]
    fn meta_iot_has_the_bandwidth_in_khz_and_the_frequency_in_mhz() {
        let mut up = uplink();
        up.radio.bandwidth = Some(125_000);
        up.radio.frequency = Some(868_100_000);
        let payload = Payload::Packed {
            rec_type: "io.microshare.lorawan.packed",
            error: None,
        };
        let rec = build(&up, &DeviceInfo::UNKNOWN, payload, SystemTime::now()).remove(0);
        let v: Json = serde_json::from_str(&rec.body).unwrap();
        let iot = &v["obj"]["data"]["meta"]["iot"];
        assert_eq!(iot["bw"], json!(125));
        assert_eq!(iot["freq"], json!(868.1));
    }

    /// `obj_of` gives the envelope's `obj` byte for byte (what `hubgate decode` prints to be
    /// compared with what the sink sent), and nothing for a body without one.
    #[test]
    fn obj_of_is_the_envelopes_obj_byte_for_byte() {
        let payload = Payload::Packed {
            rec_type: "io.microshare.lorawan.packed",
            error: None,
        };
        let rec = build(&uplink(), &DeviceInfo::UNKNOWN, payload, SystemTime::now()).remove(0);
        let v: Json = serde_json::from_str(&rec.body).unwrap();
        let obj = obj_of(&rec.body).unwrap();
        assert_eq!(obj, v["obj"].to_string());
        assert!(
            rec.body.contains(&format!("\"obj\":{obj},")),
            "{}",
            rec.body
        );
        assert_eq!(obj_of(r#"{"id":"x"}"#), None);
    }
}
