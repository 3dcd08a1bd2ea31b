//! Records: one recType event in Microshare's streaming envelope (DESIGN §3).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::codec::{Decoded, Reading, Value};
use crate::uplink::Uplink;

/// A record ready for a sink: routing fields plus the serialized envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Stable id: the same uplink always gets the same id, so consumers can de-duplicate.
    pub id: String,
    pub rec_type: String,
    /// Kafka message key: the device id, so one device's records stay in one partition.
    pub key: String,
    /// When hubgate built the record (ms since epoch), for the buffer's TTL.
    pub created_ms: u64,
    /// The JSON envelope.
    pub body: String,
}

/// What hubgate knows about the device an uplink came from.
pub struct DeviceInfo<'a> {
    pub tags: &'a [String],
    pub global_tags: &'a [String],
}

/// How the payload was interpreted.
pub enum Payload<'a> {
    Decoded {
        codec: &'a str,
        decoded: Decoded,
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

pub fn iso8601(t: SystemTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// The record id: a hash of what identifies the uplink (DevEUI, FCnt, FPort, payload; the
/// time only when the FCnt is unknown), formatted like a UUID.
pub fn stable_id(up: &Uplink) -> String {
    let mut h = Sha256::new();
    h.update(up.dev_eui);
    match up.fcnt {
        Some(f) => h.update(f.to_be_bytes()),
        None => h.update(ms_since_epoch(up.time).to_be_bytes()),
    }
    h.update([up.fport.unwrap_or(0), up.fport.is_some() as u8]);
    h.update(&up.payload);
    let d = h.finalize();
    let x = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

pub fn build(up: &Uplink, device: &DeviceInfo, payload: Payload, now: SystemTime) -> Record {
    let id = stable_id(up);
    let device_id = up.device_id();
    let time = iso8601(up.time);
    let mut data = Map::new();
    let (rec_type, class) = match payload {
        Payload::Decoded { codec, decoded } => {
            put_readings(&mut data, &decoded.readings);
            let mut health = Map::new();
            health.insert("id".into(), json!(device_id));
            put_readings(&mut health, &decoded.health);
            data.insert("device_health".into(), Json::Object(health));
            (decoded.rec_type.to_string(), codec.to_string())
        }
        Payload::Packed { rec_type, error } => {
            if let Some(e) = error {
                data.insert("error".into(), json!(e));
            }
            data.insert("device_health".into(), json!({ "id": device_id }));
            (rec_type.to_string(), "packed".to_string())
        }
    };
    let mut iot = json!({
        "device_id": device_id,
        "type": "uplink",
        "payload": hex::encode(&up.payload),
        "payload_fmt": 1,
        "time": time,
        "iso_time": time,
    });
    let fields = [
        ("fport", up.fport.map(|v| json!(v))),
        ("fcnt_up", up.fcnt.map(|v| json!(v))),
        ("rssi", up.radio.rssi.map(|v| json!(v))),
        ("snr", up.radio.snr.map(|v| json!(v))),
        ("sf", up.radio.spreading_factor.map(|v| json!(v))),
        ("bw", up.radio.bandwidth.map(|v| json!(v))),
        ("freq", up.radio.frequency.map(|v| json!(v))),
        ("gateway_id", up.radio.gateway_id.as_ref().map(|v| json!(v))),
        ("device_name", up.device_name.as_ref().map(|v| json!(v))),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            iot[k] = v;
        }
    }
    data.insert(
        "meta".into(),
        json!({ "iot": iot, "device": device.tags, "global": device.global_tags }),
    );
    data.insert("time".into(), json!(time));
    data.insert(
        "unpacker".into(),
        json!({ "library": "hubgate", "version": env!("CARGO_PKG_VERSION"), "class": class }),
    );
    let obj = json!({
        "id": id,
        "recType": rec_type,
        "tstamp": ms_since_epoch(up.time),
        "tags": device.tags,
        "data": data,
    });
    let envelope = json!({
        "event_type": "create",
        "id": id,
        "recType": rec_type,
        "source": "hubgate",
        "obj_type": "objs",
        "obj": obj,
    });
    Record {
        id,
        rec_type,
        key: device_id,
        created_ms: ms_since_epoch(now),
        body: envelope.to_string(),
    }
}

/// A gateway's GWMP `stat` report as a record of its own (`io.microshare.gateway.unpacked`),
/// keyed by the gateway id.
pub fn gateway_status(
    gateway_id: &str,
    stat: &Map<String, Json>,
    time: SystemTime,
    now: SystemTime,
) -> Record {
    let mut h = Sha256::new();
    h.update(gateway_id.as_bytes());
    h.update(ms_since_epoch(time).to_be_bytes());
    let x = hex::encode(&h.finalize()[..16]);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    );
    let rec_type = crate::codec::rec_type::GATEWAY;
    let iso = iso8601(time);
    let obj = json!({
        "id": id,
        "recType": rec_type,
        "tstamp": ms_since_epoch(time),
        "tags": [],
        "data": {
            "device_health": { "id": gateway_id },
            "stat": stat,
            "meta": { "iot": { "device_id": gateway_id, "type": "gateway_status", "time": iso, "iso_time": iso } },
            "time": iso,
            "unpacker": { "library": "hubgate", "version": env!("CARGO_PKG_VERSION"), "class": "gwmp-stat" },
        },
    });
    let body = json!({
        "event_type": "create", "id": id, "recType": rec_type, "source": "hubgate", "obj_type": "objs", "obj": obj,
    });
    Record {
        id,
        rec_type: rec_type.into(),
        key: gateway_id.into(),
        created_ms: ms_since_epoch(now),
        body: body.to_string(),
    }
}

/// Readings become arrays of `{value, unit, context_id}` under their field name, in order.
fn put_readings(into: &mut Map<String, Json>, readings: &[Reading]) {
    for r in readings {
        let mut m = Map::new();
        m.insert(
            "value".into(),
            match r.value {
                Value::Num(v) => json!(v),
                Value::Int(v) => json!(v),
                Value::Bool(v) => json!(v),
            },
        );
        if let Some(u) = r.unit {
            m.insert("unit".into(), json!(u));
        }
        if let Some(c) = r.context_id {
            m.insert("context_id".into(), json!(c.to_string()));
        }
        if let Some(t) = r.time.and_then(reading_time) {
            m.insert("time".into(), json!(t));
        }
        let slot = into
            .entry(r.field)
            .or_insert_with(|| Json::Array(Vec::new()));
        if let Json::Array(a) = slot {
            a.push(Json::Object(m));
        }
    }
}

/// ISO 8601 of a reading's own measurement time (unix seconds); `None` beyond year 9999,
/// which no codec produces (their timestamps are u32) but which `iso8601` cannot format.
fn reading_time(secs: u64) -> Option<String> {
    const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    (secs <= MAX).then(|| iso8601(UNIX_EPOCH + std::time::Duration::from_secs(secs)))
}

/// The unpacked record (`obj`) of an envelope, as `hubgate decode` prints it.
pub fn obj_of(body: &str) -> Json {
    serde_json::from_str::<Json>(body)
        .ok()
        .and_then(|mut v| v.get_mut("obj").map(Json::take))
        .unwrap_or(Json::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::uplink::Radio;
    use std::time::Duration;

    fn uplink() -> Uplink {
        Uplink {
            dev_eui: [0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34],
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
        }
    }

    #[test]
    fn envelope_has_microshare_shape() {
        let up = uplink();
        let tags = vec!["Building 1".to_string(), "Floor 2".to_string()];
        let decoded = Codec::BrowanTbhh100.decode(up.fport, &up.payload).unwrap();
        let dev = DeviceInfo {
            tags: &tags,
            global_tags: &[],
        };
        let rec = build(
            &up,
            &dev,
            Payload::Decoded {
                codec: "browan-tbhh100",
                decoded,
            },
            SystemTime::now(),
        );
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

    #[test]
    fn reading_time_is_emitted_as_iso8601() {
        let mut m = Map::new();
        let rs = [
            Reading::num("temperature", 21.5, "°C").at(1_700_000_000),
            Reading::num("temperature", 22.0, "°C"),
        ];
        put_readings(&mut m, &rs);
        assert_eq!(m["temperature"][0]["time"], "2023-11-14T22:13:20.000Z");
        assert!(m["temperature"][1].get("time").is_none());
        assert_eq!(reading_time(u64::MAX), None);
    }

    #[test]
    fn id_is_stable_and_distinguishes_uplinks() {
        let a = uplink();
        let mut b = uplink();
        assert_eq!(stable_id(&a), stable_id(&b));
        b.fcnt = Some(43);
        assert_ne!(stable_id(&a), stable_id(&b));
        assert_eq!(stable_id(&a).len(), 36);
    }
}
