//! The Things Stack v3 uplink messages (`v3/{app}@{tenant}/devices/{id}/up`).

use std::time::SystemTime;

use base64::Engine;
use serde::Deserialize;

use super::{ParseError, Parsed, Shape};

/// The MQTT topic filter of uplink messages.
pub const TOPIC: &str = "v3/+/devices/+/up";
use crate::uplink::{Radio, Uplink};

#[derive(Deserialize)]
struct Message {
    end_device_ids: DeviceIds,
    received_at: Option<String>,
    uplink_message: UplinkMessage,
}

#[derive(Deserialize)]
struct DeviceIds {
    #[serde(default, deserialize_with = "super::de_meta_text")]
    device_id: Option<String>,
    dev_eui: Option<String>,
    #[serde(default, deserialize_with = "super::de_meta_text")]
    dev_addr: Option<String>,
}

#[derive(Deserialize)]
struct UplinkMessage {
    // Protobuf JSON leaves out zero values: a missing f_cnt is 0, a missing f_port is 0.
    #[serde(default)]
    f_port: u8,
    #[serde(default)]
    f_cnt: u32,
    #[serde(default)]
    frm_payload: String,
    #[serde(default)]
    rx_metadata: Vec<RxMetadata>,
    settings: Option<Settings>,
    received_at: Option<String>,
    /// The application's payload formatter output; anything but an object is ignored.
    /// Raw, as the next: one the parser refuses costs only itself ([`super::ns_decoded`]).
    decoded_payload: Option<Box<serde_json::value::RawValue>>,
    /// The Device Repository codec's normalized output: an object or an array of them.
    normalized_payload: Option<Box<serde_json::value::RawValue>>,
    version_ids: Option<VersionIds>,
}

/// The device's model in the Device Repository.
#[derive(Deserialize)]
struct VersionIds {
    #[serde(default, deserialize_with = "super::de_tts_id")]
    brand_id: Option<String>,
}

/// One gateway's reception: TTS writes it without the fields at their zero value (an SNR of
/// 0 dB, channel index 0), so an SNR or channel it leaves out is 0
/// ([`super::absent_is_zero`]); an RSSI left out is unknown ([`super::reception`]).
#[derive(Deserialize)]
struct RxMetadata {
    gateway_ids: Option<GatewayIds>,
    #[serde(default, deserialize_with = "super::de_rssi")]
    rssi: Option<i32>,
    #[serde(
        default = "super::absent_is_zero",
        deserialize_with = "super::de_meta_float"
    )]
    snr: Option<f64>,
    #[serde(
        default = "super::absent_is_zero",
        deserialize_with = "super::de_meta_int"
    )]
    channel_index: Option<u32>,
}

#[derive(Deserialize)]
struct GatewayIds {
    #[serde(default, deserialize_with = "super::de_meta_text")]
    gateway_id: Option<String>,
}

#[derive(Deserialize)]
struct Settings {
    data_rate: Option<DataRate>,
    /// A decimal string in TTS JSON (uint64 in protobuf).
    #[serde(default, deserialize_with = "super::de_meta_int")]
    frequency: Option<u64>,
}

#[derive(Deserialize)]
struct DataRate {
    lora: Option<Lora>,
}

#[derive(Deserialize)]
struct Lora {
    #[serde(default, deserialize_with = "super::de_meta_int")]
    bandwidth: Option<u32>,
    #[serde(default, deserialize_with = "super::de_meta_int")]
    spreading_factor: Option<u8>,
}

/// Parts of an uplink message that may be of the wrong type without costing the uplink.
const PARTS: &[(&str, Shape)] = &[
    ("received_at", Shape::Text),
    ("uplink_message/received_at", Shape::Text),
    ("uplink_message/rx_metadata", Shape::Objects),
    ("uplink_message/rx_metadata/*/gateway_ids", Shape::Object),
    ("uplink_message/settings", Shape::Object),
    ("uplink_message/settings/data_rate", Shape::Object),
    ("uplink_message/settings/data_rate/lora", Shape::Object),
    ("uplink_message/version_ids", Shape::Object),
];

/// What an uplink message's reading needs: given twice with different values, the message
/// is refused ([`super::deduplicated`]).
const NEEDS: &[&str] = &[
    "end_device_ids/dev_eui",
    "uplink_message/frm_payload",
    "uplink_message/f_cnt",
    "uplink_message/f_port",
];

pub fn parse(json: &[u8], received: SystemTime) -> Result<Parsed<Uplink>, ParseError> {
    let mut mended = None;
    let m: Message = super::from_json(json, &[PARTS], NEEDS, &mut mended)?;
    let ids = m.end_device_ids;
    let eui = ids.dev_eui.ok_or_else(|| {
        ParseError::NoDevEui(ids.device_id.as_deref().unwrap_or("(no device_id)").into())
    })?;
    let dev_eui =
        crate::ids::DevEui::parse(&eui).map_err(|_| ParseError::DevEui(eui.as_str().into()))?;
    let up = m.uplink_message;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(up.frm_payload.as_bytes())
        .map_err(|e| ParseError::Base64(e.to_string().into()))?;
    let given = up.received_at.as_ref().or(m.received_at.as_ref());
    let (time, bad_time) = super::time_or_received(given.map(|t| super::parse_time(t)), received);
    let receptions = up
        .rx_metadata
        .into_iter()
        .map(|r| {
            let id = r.gateway_ids.and_then(|g| g.gateway_id);
            super::reception(id, r.rssi, r.snr, r.channel_index)
        })
        .collect();
    let (best, gateways, gateways_left_out) = super::heard(receptions);
    let lora = up
        .settings
        .as_ref()
        .and_then(|s| s.data_rate.as_ref())
        .and_then(|d| d.lora.as_ref());
    let value = Uplink {
        dev_eui,
        dev_addr: super::dev_addr(ids.dev_addr.as_deref()),
        device_name: ids.device_id,
        fport: Some(up.f_port),
        fcnt: Some(up.f_cnt),
        payload,
        time,
        radio: Radio {
            rssi: best.rssi,
            snr: best.snr,
            gateway_id: best.gateway_id,
            frequency: up.settings.as_ref().and_then(|s| s.frequency),
            spreading_factor: lora.and_then(|l| l.spreading_factor),
            bandwidth: lora.and_then(|l| l.bandwidth),
            channel: best.channel,
            gateways,
        },
        ns: crate::uplink::NsDecoded {
            brand: up.version_ids.and_then(|v| v.brand_id),
            ..super::ns_decoded(up.decoded_payload, up.normalized_payload)
        },
        same_ms_index: 0,
        session: None,
    };
    Ok(Parsed {
        value,
        bad_time,
        gateways_left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::Reception;

    const UP: &str = r#"{"end_device_ids":{"device_id":"lobby-th","application_ids":{"application_id":"building"},
        "dev_eui":"58A0CB0000101234","dev_addr":"26011BDA"},"correlation_ids":["as:up:01"],
        "received_at":"2024-05-01T10:00:00.500Z",
        "uplink_message":{"session_key_id":"AXA=","f_port":103,"f_cnt":42,"frm_payload":"CIwuLf////8=",
          "rx_metadata":[{"gateway_ids":{"gateway_id":"gw-a","eui":"B827EBFFFE000001"},"rssi":-95,"channel_rssi":-95,"snr":2.25},
                         {"gateway_ids":{"gateway_id":"gw-b"},"rssi":-71,"snr":8.5}],
          "settings":{"data_rate":{"lora":{"bandwidth":125000,"spreading_factor":9,"coding_rate":"4/5"}},"frequency":"868300000"},
          "received_at":"2024-05-01T10:00:00.123Z"}}"#;

    #[test]
    fn parses_the_fields_hubgate_uses() {
        let up = parse(UP.as_bytes(), SystemTime::UNIX_EPOCH).unwrap().value;
        assert_eq!(up.dev_eui.to_string(), "58a0cb0000101234");
        assert_eq!(up.dev_addr, Some(crate::lorawan::DevAddr(0x2601_1bda)));
        assert_eq!(up.device_name.as_deref(), Some("lobby-th"));
        assert_eq!((up.fport, up.fcnt), (Some(103), Some(42)));
        assert_eq!(up.payload, [0x08, 0x8c, 0x2e, 0x2d, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(up.radio.gateway_id.as_deref(), Some("gw-b"));
        assert_eq!((up.radio.rssi, up.radio.snr), (Some(-71), Some(8.5)));
        // Every reception, in the message's order; channel index 0 left out by TTS.
        let reception = |id: &str, rssi, snr| Reception {
            gateway_id: Some(id.into()),
            rssi: Some(rssi),
            snr: Some(snr),
            channel: Some(0),
        };
        assert_eq!(
            up.radio.gateways,
            [reception("gw-a", -95, 2.25), reception("gw-b", -71, 8.5)]
        );
        assert_eq!(up.radio.frequency, Some(868_300_000));
        assert_eq!(up.radio.spreading_factor, Some(9));
        let ms = up
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_714_557_600_123);
    }

    /// What the network server decoded, from `UP` with `extra` fields in its uplink message.
    fn ns_with(extra: &str) -> crate::uplink::NsDecoded {
        let text = UP.replacen("\"f_port\"", &format!("{extra},\"f_port\""), 1);
        parse(text.as_bytes(), SystemTime::UNIX_EPOCH)
            .unwrap()
            .value
            .ns
    }

    /// `decoded_payload` and `normalized_payload` (an array, or one object) are carried.
    #[test]
    fn carries_the_decoded_and_normalized_payloads() {
        let with = ns_with;
        let ns = with(
            r#""decoded_payload":{"TempC":21.5},"normalized_payload":[{"air":{"temperature":21.5}},{"air":{"temperature":21.7}},7]"#,
        );
        assert_eq!(ns.object.unwrap()["TempC"], 21.5);
        assert_eq!(ns.normalized.len(), 2);
        assert_eq!(ns.normalized[1]["air"]["temperature"], 21.7);
        let ns = with(r#""normalized_payload":{"water":{"leak":true}}"#);
        assert_eq!((ns.object, ns.normalized.len()), (None, 1));
        assert!(with(r#""decoded_payload":"text""#).is_empty());
        assert!(with(r#""decoded_payload":{},"normalized_payload":[{}]"#).is_empty());
    }

    /// The device's Device Repository brand is carried; one of the wrong type, one that is
    /// no TTS identifier (too long, upper case) and one the parser refuses (nested too deep,
    /// a number beyond f64) cost only themselves.
    #[test]
    fn carries_the_devices_brand() {
        let with = ns_with;
        let ns = with(
            r#""version_ids":{"brand_id":"milesight-iot","model_id":"em300-th"},"normalized_payload":{"battery":85}"#,
        );
        assert_eq!(
            (ns.brand.as_deref(), ns.normalized.len()),
            (Some("milesight-iot"), 1)
        );
        for odd in [r#""version_ids":7"#, r#""version_ids":{"brand_id":7}"#] {
            let ns = with(&format!(r#"{odd},"normalized_payload":{{"battery":85}}"#));
            assert_eq!((ns.brand, ns.normalized.len()), (None, 1), "{odd}");
        }
        assert_eq!(with(r#""normalized_payload":{"battery":85}"#).brand, None);
        // Read again with another part mended (a time of the wrong type), it is kept.
        let ns = with(r#""received_at":7,"version_ids":{"brand_id":"milesight-iot"}"#);
        assert_eq!(ns.brand.as_deref(), Some("milesight-iot"));
        let (longest, longer) = ("a".repeat(36), "a".repeat(37));
        for (brand, kept) in [
            (longest.as_str(), true),
            ("ab", true),
            (&longer, false),
            ("a", false),
            ("Milesight-IoT", false),
            ("milesight_iot", false),
            ("milesight iot", false),
        ] {
            let ns = with(&format!(
                r#""version_ids":{{"brand_id":{brand:?}}},"normalized_payload":{{"battery":85}}"#
            ));
            assert_eq!(
                (ns.brand.as_deref(), ns.normalized.len()),
                (kept.then_some(brand), 1),
                "{brand}"
            );
        }
        let too_long = format!("{:?}", "a".repeat(600_000));
        let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for (what, brand) in [
            ("too long", too_long.as_str()),
            ("too deep", &too_deep),
            ("beyond f64", "1e400"),
            ("beyond f64 within", r#"{"x":1e400}"#),
        ] {
            let ns = with(&format!(
                r#""version_ids":{{"brand_id":{brand}}},"normalized_payload":{{"battery":85}}"#
            ));
            assert_eq!((ns.brand, ns.normalized.len()), (None, 1), "{what}");
        }
    }

    /// A decoded payload of more JSON values than is worth holding is not carried, whatever
    /// its shape: its parsed form costs many times its text while the uplink is queued.
    #[test]
    fn an_oversized_decoded_payload_is_not_carried() {
        let with = ns_with;
        let zeros = |n: usize| vec!["0"; n].join(",");
        let max = super::super::MAX_NS_VALUES;
        // The object and its array: 2 values besides the zeros.
        let at_max = with(&format!(
            r#""decoded_payload":{{"a":[{}]}}"#,
            zeros(max - 2)
        ));
        assert_eq!((at_max.object.is_some(), at_max.oversized), (true, None));
        let over = with(&format!(
            r#""decoded_payload":{{"a":[{}]}}"#,
            zeros(max - 1)
        ));
        assert_eq!((over.is_empty(), over.oversized), (true, Some(max + 1)));
        let split = with(&format!(
            r#""decoded_payload":{{"a":[{}]}},"normalized_payload":[{{"b":[{}]}}]"#,
            zeros(max / 2),
            zeros(max / 2)
        ));
        assert!(split.is_empty() && split.oversized.is_some());
    }

    /// A decoded or normalized payload the JSON parser refuses (a number beyond f64, nesting
    /// deeper than it goes) is not carried, and costs nothing else of the uplink.
    #[test]
    fn an_unreadable_decoded_payload_is_not_carried() {
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        for extra in [
            r#""decoded_payload":{"big":-1e400}"#.to_string(),
            format!(r#""decoded_payload":{{"a":1}},"normalized_payload":[{{"b":{deep}}}]"#),
        ] {
            let ns = ns_with(&extra);
            assert!(ns.is_empty() && ns.unreadable.is_some(), "{extra}: {ns:?}");
        }
        // So with radio metadata of the wrong type mended as well.
        let odd = UP
            .replace(r#""rx_metadata":["#, r#""rx_metadata":7,"no":["#)
            .replace(r#""settings":{"#, r#""settings":[],"no2":{"#)
            .replace(
                "\"f_port\"",
                &format!(r#""decoded_payload":{{"a":{deep}}},"f_port""#),
            );
        let up = parse(odd.as_bytes(), SystemTime::UNIX_EPOCH).unwrap().value;
        assert_eq!((up.fcnt, up.radio.rssi), (Some(42), None));
        assert!(
            up.ns.is_empty() && up.ns.unreadable.is_some(),
            "{:?}",
            up.ns
        );
    }

    /// TTS declares RSSI a float: a fraction is rounded, and radio metadata of the wrong
    /// type is left out rather than refusing the uplink.
    #[test]
    fn odd_radio_metadata_does_not_refuse_the_uplink() {
        let t = SystemTime::UNIX_EPOCH;
        let fractional = UP.replace(r#""rssi":-71,"snr":8.5"#, r#""rssi":-70.5,"snr":8.5"#);
        let up = parse(fractional.as_bytes(), t).unwrap().value;
        assert_eq!(
            (up.radio.gateway_id.as_deref(), up.radio.rssi),
            (Some("gw-b"), Some(-71))
        );
        let odd = UP
            .replace(
                r#""rssi":-71,"snr":8.5"#,
                r#""rssi":"strong","snr":null,"channel_index":-1"#,
            )
            .replace(r#""spreading_factor":9"#, r#""spreading_factor":900"#);
        let up = parse(odd.as_bytes(), t).unwrap().value;
        assert_eq!(
            (up.radio.gateway_id.as_deref(), up.radio.rssi, up.radio.snr),
            (Some("gw-a"), Some(-95), Some(2.25))
        );
        assert_eq!((up.radio.spreading_factor, up.fcnt), (None, Some(42)));
        // Numbers where TTS writes strings, and the other way round.
        let swapped = UP
            .replace(r#""frequency":"868300000""#, r#""frequency":868300000"#)
            .replace(r#""gateway_id":"gw-b""#, r#""gateway_id":7"#)
            .replace(r#""device_id":"lobby-th""#, r#""device_id":[]"#);
        let up = parse(swapped.as_bytes(), t).unwrap().value;
        assert_eq!(
            (up.radio.frequency, up.radio.gateway_id, up.radio.rssi),
            (Some(868_300_000), None, Some(-71))
        );
        assert_eq!(up.device_name, None);
        let odd = UP.replace(r#""frequency":"868300000""#, r#""frequency":{"hz":1}"#);
        assert_eq!(
            parse(odd.as_bytes(), t).unwrap().value.radio.frequency,
            None
        );
    }

    /// A UTF-8 byte order mark before the JSON costs nothing.
    #[test]
    fn a_byte_order_mark_is_ignored() {
        let t = SystemTime::UNIX_EPOCH;
        let up = parse(format!("\u{feff}{UP}").as_bytes(), t).unwrap().value;
        assert_eq!(up, parse(UP.as_bytes(), t).unwrap().value);
    }

    /// A string that does not decode in a field the uplink does not need costs only its bad
    /// characters, read as U+FFFD.
    #[test]
    fn a_bad_string_costs_only_its_characters() {
        let t = SystemTime::UNIX_EPOCH;
        let odd = UP
            .replace("\"lobby-th\"", r#""lobby\ud800""#)
            .replace("\"gw-b\"", r#""gw\udbff-b""#);
        let up = parse(odd.as_bytes(), t).unwrap().value;
        assert_eq!(up.device_name.as_deref(), Some("lobby\u{fffd}"));
        assert_eq!(up.radio.gateway_id.as_deref(), Some("gw\u{fffd}-b"));
        assert_eq!((up.fcnt, up.payload.len()), (Some(42), 8));
    }

    /// A key given twice keeps its last value, unless the reading needs it and the two
    /// differ.
    #[test]
    fn a_key_given_twice_keeps_its_last_value_unless_the_reading_needs_it() {
        let t = SystemTime::UNIX_EPOCH;
        let twice = UP
            .replace(
                r#""device_id":"lobby-th""#,
                r#""device_id":"a","device_id":"b""#,
            )
            .replace(
                r#""gateway_id":"gw-b""#,
                r#""gateway_id":"x","gateway_id":"gw-c""#,
            )
            .replace(r#""f_cnt":42"#, r#""f_cnt":42,"f_cnt":42"#)
            .replace(r#""settings":"#, r#""settings":{},"settings":"#);
        let up = parse(twice.as_bytes(), t).unwrap().value;
        let mut want = parse(UP.as_bytes(), t).unwrap().value;
        want.device_name = Some("b".into());
        want.radio.gateway_id = Some("gw-c".into());
        want.radio.gateways[1].gateway_id = Some("gw-c".into());
        assert_eq!(up, want);
        for (from, to) in [
            (r#""f_cnt":42"#, r#""f_cnt":42,"f_cnt":41"#),
            (
                r#""dev_eui":"#,
                r#""dev_eui":"58A0CB0000109999","dev_eui":"#,
            ),
            (
                r#""frm_payload":"#,
                r#""frm_payload":"AA==","frm_payload":"#,
            ),
        ] {
            let e = parse(UP.replacen(from, to, 1).as_bytes(), t).unwrap_err();
            assert_eq!(e.kind(), "malformed_json", "{to}");
        }
    }

    /// TTS leaves a reception's numbers at 0 out of its JSON (an SNR of 0 dB, channel index
    /// 0): they are read as 0; one of the wrong type stays unknown, and without
    /// `rx_metadata` nothing is known.
    #[test]
    fn numbers_a_reception_leaves_out_are_0() {
        let t = SystemTime::UNIX_EPOCH;
        let zero = UP.replace(r#""rssi":-71,"snr":8.5"#, r#""rssi":-71"#);
        let up = parse(zero.as_bytes(), t).unwrap().value;
        let r = &up.radio;
        assert_eq!(
            (r.gateway_id.as_deref(), r.rssi, r.snr, r.channel),
            (Some("gw-b"), Some(-71), Some(0.0), Some(0))
        );
        // An entry without an RSSI reports no signal: it ranks below the others, and its
        // SNR is the one it gives, its channel and zeros not known.
        let no_rssi = UP.replace(r#""rssi":-71,"snr":8.5"#, r#""snr":8.5"#);
        let up = parse(no_rssi.as_bytes(), t).unwrap().value;
        assert_eq!(
            (up.radio.gateway_id.as_deref(), up.radio.rssi),
            (Some("gw-a"), Some(-95))
        );
        let b = &up.radio.gateways[1];
        assert_eq!((b.rssi, b.snr, b.channel), (None, Some(8.5), None));
        // A Packet Broker entry whose forwarding network shares no signal report.
        let broker = UP.replace(
            r#"{"gateway_ids":{"gateway_id":"gw-b"}"#,
            r#"{"gateway_ids":{"gateway_id":"packetbroker"},"packet_broker":{}},{"gateway_ids":{"gateway_id":"gw-b"}"#,
        );
        let up = parse(broker.as_bytes(), t).unwrap().value;
        assert_eq!(
            (up.radio.gateway_id.as_deref(), up.radio.rssi, up.radio.snr),
            (Some("gw-b"), Some(-71), Some(8.5))
        );
        let pb = &up.radio.gateways[1];
        assert_eq!(
            (pb.gateway_id.as_deref(), pb.rssi, pb.snr, pb.channel),
            (Some("packetbroker"), None, None, None)
        );
        let odd = UP.replace(
            r#""rssi":-71,"snr":8.5"#,
            r#""rssi":-71,"snr":"x","channel_index":"one""#,
        );
        let up = parse(odd.as_bytes(), t).unwrap().value;
        assert_eq!((up.radio.snr, up.radio.channel), (None, None));
        let none = UP.replace(r#""rx_metadata":["#, r#""no":["#);
        let up = parse(none.as_bytes(), t).unwrap().value;
        let r = &up.radio;
        assert_eq!((r.rssi, r.snr, r.channel), (None, None, None));
    }

    #[test]
    fn zero_counters_are_left_out_by_protobuf_json() {
        let up = parse(
            br#"{"end_device_ids":{"dev_eui":"0000000000000001"},"uplink_message":{"frm_payload":"AQ=="}}"#,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap().value;
        assert_eq!((up.fport, up.fcnt, up.payload), (Some(0), Some(0), vec![1]));
    }

    /// Radio metadata or a time of the wrong JSON type costs the uplink only what it held.
    #[test]
    fn metadata_of_the_wrong_type_is_left_out() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let odd = UP
            .replace(
                r#""gateway_ids":{"gateway_id":"gw-b"}"#,
                r#""gateway_ids":"gw-b""#,
            )
            .replace(r#""data_rate":{"#, r#""data_rate":7,"no":{"#)
            .replace(
                r#""received_at":"2024-05-01T10:00:00.123Z""#,
                r#""received_at":{}"#,
            );
        let up = parse(odd.as_bytes(), t).unwrap();
        assert_eq!(up.bad_time.map(|e| e.kind()), Some("bad_time"));
        let up = up.value;
        // The uplink's own received_at is taken before the message's, bad or not.
        assert_eq!((up.time, up.fcnt, up.payload.len()), (t, Some(42), 8));
        assert_eq!((up.radio.rssi, up.radio.gateway_id), (Some(-71), None));
        assert_eq!(
            (up.radio.spreading_factor, up.radio.frequency),
            (None, Some(868_300_000))
        );
        let odd = UP.replace(r#""rx_metadata":["#, r#""rx_metadata":{},"no":["#);
        let up = parse(odd.as_bytes(), t).unwrap().value;
        assert_eq!((up.radio.rssi, up.payload.len()), (None, 8));
    }

    #[test]
    fn bad_inputs_are_named() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(parse(b"[]", t).unwrap_err().kind(), "malformed_json");
        let no_eui = UP.replace(r#""dev_eui":"58A0CB0000101234","#, "");
        let e = parse(no_eui.as_bytes(), t).unwrap_err();
        assert_eq!(e.kind(), "bad_dev_eui");
        assert_eq!(
            e.to_string(),
            "device \"lobby-th\" has no DevEUI (registered without one): give it its DevEUI in TTS"
        );
        let bad = UP.replace("CIwuLf////8=", "%%%");
        assert_eq!(parse(bad.as_bytes(), t).unwrap_err().kind(), "bad_base64");
        // Past 9999 in UTC (used to panic when the record was built): kept, at receive time.
        let late = UP.replace("2024-05-01T10:00:00.123Z", "9999-12-31T23:59:59-23:59");
        let up = parse(late.as_bytes(), t).unwrap();
        assert_eq!(up.bad_time.map(|e| e.kind()), Some("bad_time"));
        assert_eq!((up.value.time, up.value.fcnt), (t, Some(42)));
    }
}
