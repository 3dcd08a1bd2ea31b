//! ChirpStack v4 application-integration uplink events (`application/+/device/+/event/up`).

use std::borrow::Cow;
use std::time::SystemTime;

use base64::Engine;
use serde::Deserialize;

use super::{ParseError, Parsed, Shape};

/// The MQTT topic filter of application uplink events (`event/up`).
pub const UPLINK_TOPIC: &str = "application/+/device/+/event/up";
/// The MQTT topic filter of gateway frames (ChirpStack MQTT forwarder, gateway bridge).
pub const GATEWAY_TOPIC: &str = "+/gateway/+/event/up";
use crate::uplink::{FrameTime, NsDecoded, Radio, RadioFrame, Uplink};

/// A JSON string, borrowed from the message unless it has escapes: no allocation for the
/// strings that are only read (`Cow<str>` borrows only as a field of its own, not inside an
/// `Option`).
#[derive(Deserialize, Default)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    #[serde(borrow)]
    time: Option<Text<'a>>,
    #[serde(borrow)]
    device_info: DeviceInfo<'a>,
    #[serde(default, deserialize_with = "super::de_meta_text")]
    dev_addr: Option<String>,
    f_cnt: Option<u32>,
    f_port: Option<u8>,
    #[serde(borrow)]
    data: Option<Text<'a>>,
    #[serde(default)]
    rx_info: Vec<RxInfo>,
    tx_info: Option<TxInfo>,
    /// What the device profile's codec made of `data`; anything but an object is ignored.
    /// Raw: one the parser refuses costs only itself ([`super::ns_decoded`]).
    object: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceInfo<'a> {
    #[serde(borrow)]
    dev_eui: Text<'a>,
    #[serde(default, deserialize_with = "super::de_meta_text")]
    device_name: Option<String>,
    #[serde(default, deserialize_with = "super::de_meta_text")]
    device_profile_name: Option<String>,
}

/// One gateway's reception (`gw.UplinkRxInfo`): ChirpStack writes it without the fields at
/// their zero value, so an SNR or channel it leaves out is 0 ([`super::absent_is_zero`]); an
/// RSSI left out is unknown ([`super::reception`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RxInfo {
    #[serde(default, deserialize_with = "super::de_meta_text")]
    gateway_id: Option<String>,
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
    channel: Option<u32>,
}

#[derive(Deserialize)]
struct TxInfo {
    #[serde(default, deserialize_with = "super::de_meta_int")]
    frequency: Option<u64>,
    modulation: Option<Modulation>,
}

#[derive(Deserialize)]
struct Modulation {
    lora: Option<Lora>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lora {
    #[serde(default, deserialize_with = "super::de_meta_int")]
    bandwidth: Option<u32>,
    #[serde(default, deserialize_with = "super::de_meta_int")]
    spreading_factor: Option<u8>,
}

/// A raw uplink frame of the ChirpStack MQTT forwarder / gateway bridge (`event/up`, JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayFrame<'a> {
    #[serde(borrow)]
    phy_payload: Text<'a>,
    tx_info: Option<TxInfo>,
    #[serde(borrow)]
    rx_info: Option<GatewayRxInfo<'a>>,
}

/// A gateway frame's reception, the same `gw.UplinkRxInfo` as an event's ([`RxInfo`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayRxInfo<'a> {
    #[serde(default, deserialize_with = "super::de_meta_text")]
    gateway_id: Option<String>,
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
    channel: Option<u32>,
    #[serde(borrow)]
    gw_time: Option<Text<'a>>,
    #[serde(borrow)]
    ns_time: Option<Text<'a>>,
    #[serde(borrow)]
    crc_status: Option<Text<'a>>,
}

/// Parts of an uplink event that may be of the wrong type without costing the uplink (with
/// [`TX_INFO`]).
const EVENT_PARTS: &[(&str, Shape)] = &[("time", Shape::Text), ("rxInfo", Shape::Objects)];

/// Parts of a gateway frame that may be of the wrong type without costing the frame (with
/// [`TX_INFO`]).
const GATEWAY_FRAME_PARTS: &[(&str, Shape)] = &[
    ("rxInfo", Shape::Object),
    ("rxInfo/gwTime", Shape::Text),
    ("rxInfo/nsTime", Shape::Text),
    ("rxInfo/crcStatus", Shape::Text),
];

/// What an uplink event's reading needs: given twice with different values, the event is
/// refused ([`super::deduplicated`]).
const EVENT_NEEDS: &[&str] = &["deviceInfo/devEui", "data", "fCnt", "fPort"];

/// What a gateway frame needs (see [`EVENT_NEEDS`]).
const FRAME_NEEDS: &[&str] = &["phyPayload"];

/// The transmission's radio settings, in events and frames alike.
const TX_INFO: &[(&str, Shape)] = &[
    ("txInfo", Shape::Object),
    ("txInfo/modulation", Shape::Object),
    ("txInfo/modulation/lora", Shape::Object),
];

/// What makes the ChirpStack forwarders send JSON, which `chirpstack-gateway` reads.
const JSON_PLEASE: &str = r#"set the forwarder's json = true, the bridge's marshaler = "json""#;

/// Parse one raw gateway frame; its PHYPayload still has to be verified and decrypted.
pub fn parse_gateway_frame(
    json: &[u8],
    received: SystemTime,
) -> Result<Parsed<RadioFrame>, ParseError> {
    let mut mended = None;
    let f: GatewayFrame = super::from_json(
        json,
        &[GATEWAY_FRAME_PARTS, TX_INFO],
        FRAME_NEEDS,
        &mut mended,
    )
    .map_err(|e| match e {
        // Both ChirpStack forwarders send Protobuf unless told otherwise: say how.
        ParseError::Json(e)
            if super::without_bom(json).trim_ascii_start().first() != Some(&b'{') =>
        {
            ParseError::Json(format!("{e} (Protobuf? {JSON_PLEASE})").into())
        }
        e => e,
    })?;
    let phy = base64::engine::general_purpose::STANDARD
        .decode(f.phy_payload.0.as_bytes())
        .map_err(|e| ParseError::Base64(e.to_string().into()))?;
    let rx = f.rx_info.as_ref();
    let heard = rx.map(|r| super::reception(r.gateway_id.clone(), r.rssi, r.snr, r.channel));
    if let Some(Text(status)) = rx.and_then(|r| r.crc_status.as_ref()) {
        if status != "CRC_OK" {
            return Err(ParseError::Crc(status.as_ref().into()));
        }
    }
    let given = rx.and_then(|r| r.gw_time.as_ref().or(r.ns_time.as_ref()));
    let (time, bad_time) =
        super::time_or_received(given.map(|t| super::parse_time(&t.0)), received);
    let own = given.is_some() && bad_time.is_none();
    let lora = f
        .tx_info
        .as_ref()
        .and_then(|t| t.modulation.as_ref())
        .and_then(|m| m.lora.as_ref());
    let value = RadioFrame {
        phy,
        time: FrameTime { time, own },
        radio: Radio {
            rssi: heard.as_ref().and_then(|r| r.rssi),
            snr: heard.as_ref().and_then(|r| r.snr),
            gateway_id: heard.as_ref().and_then(|r| r.gateway_id.clone()),
            frequency: f.tx_info.as_ref().and_then(|t| t.frequency),
            spreading_factor: lora.and_then(|l| l.spreading_factor),
            bandwidth: lora.and_then(|l| l.bandwidth),
            channel: heard.as_ref().and_then(|r| r.channel),
            gateways: Vec::new(),
        },
        copies: 0,
    };
    Ok(Parsed {
        value,
        bad_time,
        gateways_left_out: 0,
    })
}

/// Parse one uplink event. `received` stands in for a missing `time`.
pub fn parse(json: &[u8], received: SystemTime) -> Result<Parsed<Uplink>, ParseError> {
    let mut mended = None;
    let ev: Event = super::from_json(json, &[EVENT_PARTS, TX_INFO], EVENT_NEEDS, &mut mended)?;
    // ChirpStack's other events (join, status, ack, txack, log, location, integration) carry
    // `deviceInfo` too, and a wide `topic` takes them in; an uplink event has `fCnt` and
    // `rxInfo` (and `data`, `fPort` unless its payload is empty), they have none of these,
    // nor an `object` (a relay may keep only that of an uplink: its readings).
    if ev.data.is_none()
        && ev.f_cnt.is_none()
        && ev.f_port.is_none()
        && ev.rx_info.is_empty()
        && ev.object.is_none()
    {
        return Err(ParseError::NotUplink);
    }
    let dev_eui = &ev.device_info.dev_eui.0;
    let dev_eui = crate::ids::DevEui::parse(dev_eui)
        .map_err(|_| ParseError::DevEui(dev_eui.as_ref().into()))?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(ev.data.unwrap_or_default().0.as_bytes())
        .map_err(|e| ParseError::Base64(e.to_string().into()))?;
    let given = ev.time.as_ref().map(|t| super::parse_time(&t.0));
    let (time, bad_time) = super::time_or_received(given, received);
    let receptions = ev
        .rx_info
        .into_iter()
        .map(|r| super::reception(r.gateway_id, r.rssi, r.snr, r.channel))
        .collect();
    let (best, gateways, gateways_left_out) = super::heard(receptions);
    let lora = ev
        .tx_info
        .as_ref()
        .and_then(|t| t.modulation.as_ref())
        .and_then(|m| m.lora.as_ref());
    let value = Uplink {
        dev_eui,
        dev_addr: super::dev_addr(ev.dev_addr.as_deref()),
        device_name: ev.device_info.device_name,
        fport: ev.f_port,
        fcnt: ev.f_cnt,
        payload,
        time,
        radio: Radio {
            rssi: best.rssi,
            snr: best.snr,
            channel: best.channel,
            gateway_id: best.gateway_id,
            frequency: ev.tx_info.as_ref().and_then(|t| t.frequency),
            spreading_factor: lora.and_then(|l| l.spreading_factor),
            bandwidth: lora.and_then(|l| l.bandwidth),
            gateways,
        },
        ns: NsDecoded {
            profile: ev.device_info.device_profile_name,
            ..super::ns_decoded(ev.object, None)
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

    const UP: &str = r#"{"deduplicationId":"3ac7","time":"2024-05-01T10:00:00.123Z",
        "deviceInfo":{"tenantId":"t","applicationId":"a","deviceName":"lobby-th","devEui":"58a0cb0000101234"},
        "devAddr":"26011bda","fCnt":42,"fPort":103,"data":"CIwuLf////8=",
        "rxInfo":[{"gatewayId":"g1","rssi":-90,"snr":3.5,"channel":1},{"gatewayId":"g2","rssi":-79,"snr":9.5,"channel":4}],
        "txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}}}"#;

    /// The codec's `object` is carried; an `object` that is not a JSON object is ignored.
    #[test]
    fn carries_the_decoded_object() {
        let with = |object: &str| {
            let text = UP.replacen("\"fCnt\"", &format!("\"object\":{object},\"fCnt\""), 1);
            parse(text.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value
                .ns
        };
        let ns = with(r#"{"temperature":21.5,"status":{"door":"open"}}"#);
        assert_eq!(
            serde_json::Value::Object(ns.object.unwrap()),
            serde_json::json!({"temperature":21.5,"status":{"door":"open"}})
        );
        assert!(with("[1,2]").is_empty());
        assert!(with("null").is_empty());
        assert!(parse(UP.as_bytes(), SystemTime::UNIX_EPOCH)
            .unwrap()
            .value
            .ns
            .is_empty());
    }

    #[test]
    fn parses_the_fields_hubgate_uses() {
        let up = parse(UP.as_bytes(), SystemTime::UNIX_EPOCH).unwrap().value;
        assert_eq!(up.dev_eui.to_string(), "58a0cb0000101234");
        assert_eq!(up.dev_addr, Some(crate::lorawan::DevAddr(0x2601_1bda)));
        assert_eq!(up.device_name.as_deref(), Some("lobby-th"));
        assert_eq!((up.fport, up.fcnt), (Some(103), Some(42)));
        assert_eq!(up.payload, [0x08, 0x8c, 0x2e, 0x2d, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(up.radio.rssi, Some(-79));
        assert_eq!(up.radio.snr, Some(9.5));
        assert_eq!(up.radio.gateway_id.as_deref(), Some("g2"));
        assert_eq!(up.radio.spreading_factor, Some(7));
        assert_eq!(up.radio.channel, Some(4), "the best reception's channel");
        let ms = up
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_714_557_600_123);
    }

    /// Strings with escapes (a JSON encoder may write `/` as `\/`) read as their text, as the
    /// ones borrowed straight from the message do.
    #[test]
    fn escaped_strings_are_read_as_their_text() {
        let escaped = UP
            .replace("CIwuLf////8=", r"CIwuLf\/\/\/\/8=")
            .replace("58a0cb0000101234", r"58a0cb000010123\u0034")
            .replace("10:00:00.123Z", r"10:00:00.12\u0033Z");
        assert_eq!(
            parse(escaped.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value,
            parse(UP.as_bytes(), SystemTime::UNIX_EPOCH).unwrap().value
        );
        let gw = r#"{"phyPayload":"QNobASYABwACQCbInLhVIeM=","rxInfo":{"gwTime":"2024-05-01T10:00:00.250Z","crcStatus":"CRC_OK"}}"#;
        let escaped = gw
            .replace("QNob", r"QN\u006fb")
            .replace("CRC_OK", r"CRC\u005fOK")
            .replace(".250Z", r".25\u0030Z");
        let (a, b) = (
            parse_gateway_frame(escaped.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value,
            parse_gateway_frame(gw.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value,
        );
        assert_eq!((a.phy, a.time), (b.phy, b.time));
    }

    /// A device name (or gateway id, profile name) longer than a network server gives is cut
    /// to 256 bytes, on a character boundary: every record of the uplink repeats it.
    #[test]
    fn long_metadata_text_is_cut() {
        let long = format!("{}é{}", "x".repeat(255), "x".repeat(600_000));
        let msg = UP.replace("lobby-th", &long);
        let up = parse(msg.as_bytes(), SystemTime::UNIX_EPOCH).unwrap().value;
        assert_eq!(up.device_name, Some("x".repeat(255)));
    }

    /// A channel that is not a channel index, or a gateway id that is not text, is left out;
    /// the uplink is not refused for it.
    #[test]
    fn bad_radio_metadata_does_not_refuse_the_uplink() {
        for bad in ["\"x\"", "-1", "4294967296", "1.5", "null"] {
            let json = UP.replace("\"channel\":4", &format!("\"channel\":{bad}"));
            let up = parse(json.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value;
            assert_eq!(up.radio.channel, None, "{bad}");
            assert_eq!(up.radio.rssi, Some(-79));
        }
        let json = UP.replace("\"channel\":4", "\"channel\":\"4\"");
        let up = parse(json.as_bytes(), SystemTime::UNIX_EPOCH)
            .unwrap()
            .value;
        assert_eq!(up.radio.channel, Some(4));
        for bad in ["42", "{}", "null"] {
            let json = UP
                .replace("\"gatewayId\":\"g2\"", &format!("\"gatewayId\":{bad}"))
                .replace(
                    "\"deviceName\":\"lobby-th\"",
                    &format!("\"deviceName\":{bad}"),
                );
            let up = parse(json.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value;
            assert_eq!(
                (up.radio.gateway_id, up.radio.rssi),
                (None, Some(-79)),
                "{bad}"
            );
            assert_eq!(up.device_name, None, "{bad}");
        }
    }

    /// ChirpStack writes a reception without its numbers at 0 (its `gw` messages are
    /// serialised without default values, unlike the event around them): a gateway that
    /// heard the uplink at 0 dB SNR on channel 0 comes without `snr` and `channel`, and they
    /// are read as 0. A field of the wrong type stays unknown; without `rxInfo` nothing is
    /// known.
    #[test]
    fn numbers_a_reception_leaves_out_are_0() {
        let t = SystemTime::UNIX_EPOCH;
        let event = r#"{"deduplicationId":"5d1b1b0e-4c57-4d3b-9d6a-0c1f3f2b6a11",
            "time":"2024-05-01T10:00:00.123456789+00:00",
            "deviceInfo":{"tenantId":"52f14cd4-c6f1-4fbd-8f87-4025e1d49242","tenantName":"ChirpStack",
              "applicationId":"17c82e96-be03-4f38-aef3-f83d48582d97","applicationName":"building",
              "deviceProfileId":"14855bf7-d10d-4aee-b618-ebfcb64dc7ad","deviceProfileName":"Browan TBHH100",
              "deviceName":"lobby-th","devEui":"58a0cb0000101234","deviceClassEnabled":"CLASS_A","tags":{}},
            "devAddr":"26011bda","adr":true,"dr":5,"fCnt":42,"fPort":103,"confirmed":false,
            "data":"CIwuLf////8=",
            "rxInfo":[{"gatewayId":"0016c001ff10a235","uplinkId":16281,
              "nsTime":"2024-05-01T10:00:00.101Z","rssi":-57,
              "location":{},"context":"EFwMtA==","metadata":{"region_config_id":"eu868"},"crcStatus":"CRC_OK"}],
            "txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7,"codeRate":"CR_4_5"}}},
            "regionConfigId":"eu868"}"#;
        let up = parse(event.as_bytes(), t).unwrap().value;
        let r = &up.radio;
        assert_eq!(
            (r.gateway_id.as_deref(), r.rssi, r.snr, r.channel),
            (Some("0016c001ff10a235"), Some(-57), Some(0.0), Some(0))
        );
        // Without an RSSI an entry reports no signal: its zeros are not known either.
        let no_rssi = event.replace(r#""rssi":-57,"#, "");
        let up = parse(no_rssi.as_bytes(), t).unwrap().value;
        let r = &up.radio;
        assert_eq!((r.rssi, r.snr, r.channel), (None, None, None));
        let no_rssi = event.replace(r#""rssi":-57,"#, r#""snr":-3.5,"channel":2,"#);
        let up = parse(no_rssi.as_bytes(), t).unwrap().value;
        let r = &up.radio;
        assert_eq!((r.rssi, r.snr, r.channel), (None, Some(-3.5), Some(2)));
        let odd = event.replace(r#""rssi":-57,"#, r#""rssi":-57,"snr":"x","channel":-1,"#);
        let up = parse(odd.as_bytes(), t).unwrap().value;
        assert_eq!((up.radio.snr, up.radio.channel), (None, None));
        let none = UP.replace(r#""rxInfo":["#, r#""no":["#);
        let up = parse(none.as_bytes(), t).unwrap().value;
        let r = &up.radio;
        assert_eq!((r.rssi, r.snr, r.channel), (None, None, None));
        let frame = r#"{"phyPayload":"QNobASY=","rxInfo":{"gatewayId":"0016c001ff10a235","rssi":-36,"crcStatus":"CRC_OK"}}"#;
        let f = parse_gateway_frame(frame.as_bytes(), t).unwrap().value;
        assert_eq!(
            (f.radio.rssi, f.radio.snr, f.radio.channel),
            (Some(-36), Some(0.0), Some(0))
        );
        let frame = r#"{"phyPayload":"QNobASY="}"#;
        let f = parse_gateway_frame(frame.as_bytes(), t).unwrap().value;
        assert_eq!(
            (f.radio.rssi, f.radio.snr, f.radio.channel),
            (None, None, None)
        );
    }

    /// Every reception in `rxInfo` is carried, in the message's order; of more than
    /// `MAX_GATEWAYS` the strongest (the later of equally strong ones, as the best is
    /// chosen), the rest counted.
    #[test]
    fn every_reception_is_carried_up_to_the_cap() {
        let t = SystemTime::UNIX_EPOCH;
        let up = parse(UP.as_bytes(), t).unwrap();
        assert_eq!(up.gateways_left_out, 0);
        let reception = |id: &str, rssi, snr, channel| Reception {
            gateway_id: Some(id.into()),
            rssi: Some(rssi),
            snr: Some(snr),
            channel: Some(channel),
        };
        assert_eq!(
            up.value.radio.gateways,
            [reception("g1", -90, 3.5, 1), reception("g2", -79, 9.5, 4)]
        );
        // 10,000 receptions, 34 of them strong (-60 dBm), at 7, 307, ... 9907.
        let strong = |i: usize| i % 300 == 7;
        let entries: Vec<String> = (0..10_000)
            .map(|i| {
                let rssi = if strong(i) { -60 } else { -120 };
                format!(r#"{{"gatewayId":"g{i}","rssi":{rssi},"snr":1.5,"channel":2}}"#)
            })
            .collect();
        let many = UP.replacen(
            r#""rxInfo":["#,
            &format!(r#""rxInfo":[{}],"no":["#, entries.join(",")),
            1,
        );
        let up = parse(many.as_bytes(), t).unwrap();
        let max = crate::uplink::MAX_GATEWAYS;
        assert_eq!(up.gateways_left_out, 10_000 - max);
        let kept: Vec<usize> = (0..10_000).filter(|&i| strong(i)).skip(34 - max).collect();
        assert_eq!(kept.len(), max);
        let want: Vec<Reception> = kept
            .iter()
            .map(|i| reception(&format!("g{i}"), -60, 1.5, 2))
            .collect();
        assert_eq!(up.value.radio.gateways, want);
        assert_eq!(up.value.radio.gateway_id.as_deref(), Some("g9907"));
    }

    #[test]
    fn gateway_frames_carry_the_phy_payload_and_radio() {
        let json = br#"{"phyPayload":"QNobASYABwACQCbInLhVIeM=","txInfo":{"frequency":868100000,
            "modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7,"codeRate":"CR_4_5"}}},
            "rxInfo":{"gatewayId":"0016c001ff10a235","uplinkId":4217106255,"gwTime":"2024-05-01T10:00:00.250Z",
            "rssi":-36,"snr":10.5,"channel":2,"context":"AAAAAA==","crcStatus":"CRC_OK"}}"#;
        let f = parse_gateway_frame(json, SystemTime::UNIX_EPOCH)
            .unwrap()
            .value;
        assert_eq!(hex::encode(&f.phy), "40da1b0126000700024026c89cb85521e3");
        assert_eq!(f.radio.gateway_id.as_deref(), Some("0016c001ff10a235"));
        assert_eq!((f.radio.rssi, f.radio.snr), (Some(-36), Some(10.5)));
        assert_eq!(f.radio.frequency, Some(868_100_000));
        assert_eq!(f.radio.channel, Some(2));
        let ms = f
            .time
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_714_557_600_250);
        let bad_crc = std::str::from_utf8(json)
            .unwrap()
            .replace("CRC_OK", "BAD_CRC");
        assert_eq!(
            parse_gateway_frame(bad_crc.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap_err()
                .kind(),
            "bad_crc"
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(parse(b"{not json", t).unwrap_err().kind(), "malformed_json");
        let bad_b64 = UP.replace("CIwuLf////8=", "!!notbase64");
        assert_eq!(
            parse(bad_b64.as_bytes(), t).unwrap_err().kind(),
            "bad_base64"
        );
        let bad_eui = UP.replace("58a0cb0000101234", "58a0cb");
        assert_eq!(
            parse(bad_eui.as_bytes(), t).unwrap_err().kind(),
            "bad_dev_eui"
        );
    }

    /// Radio metadata or a time of the wrong JSON type costs the uplink (or frame) only what
    /// it held; what is wrong in the rest still refuses it.
    #[test]
    fn metadata_of_the_wrong_type_is_left_out() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let odd = UP
            .replace(
                r#""time":"2024-05-01T10:00:00.123Z""#,
                r#""time":1714557600"#,
            )
            .replace(r#"{"gatewayId":"g1","#, r#"7,{"gatewayId":"g1","#)
            .replace(
                r#""modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}"#,
                r#""modulation":{"lora":[]}"#,
            );
        let up = parse(odd.as_bytes(), t).unwrap();
        let e = up.bad_time.unwrap();
        assert_eq!(
            (e.kind(), e.to_string().contains("1714557600")),
            ("bad_time", true)
        );
        let up = up.value;
        assert_eq!((up.time, up.fcnt, up.payload.len()), (t, Some(42), 8));
        assert_eq!(up.radio.gateway_id.as_deref(), Some("g2"));
        assert_eq!(
            (up.radio.frequency, up.radio.bandwidth),
            (Some(868_100_000), None)
        );
        for (from, to) in [
            (r#""rxInfo":["#, r#""rxInfo":"x","no":["#),
            (r#""txInfo":{"#, r#""txInfo":5,"no":{"#),
        ] {
            let up = parse(UP.replace(from, to).as_bytes(), t).unwrap().value;
            assert_eq!(up.payload.len(), 8, "{to}");
        }
        let no_eui = UP.replace(r#""devEui":"58a0cb0000101234""#, r#""devEui":5"#);
        let e = parse(no_eui.as_bytes(), t).unwrap_err();
        assert_eq!(e.kind(), "malformed_json");
        let frame = r#"{"phyPayload":"QNobASY=","rxInfo":[1],"txInfo":"x"}"#;
        let f = parse_gateway_frame(frame.as_bytes(), t).unwrap();
        assert_eq!(
            (f.value.time.time, f.value.phy.len(), f.bad_time.is_none()),
            (t, 5, true)
        );
        let frame = r#"{"phyPayload":"QNobASY=","rxInfo":{"gwTime":false,"crcStatus":0}}"#;
        let e = parse_gateway_frame(frame.as_bytes(), t).unwrap_err();
        assert_eq!(e.kind(), "bad_crc");
    }

    /// A time that is not one, past 9999 in UTC (it used to panic when the record was built)
    /// or before 1970 is `bad_time`: the uplink or frame is kept with the receive time.
    #[test]
    fn bad_times_keep_the_message_with_the_receive_time() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let gw = r#"{"phyPayload":"QNobASY=","rxInfo":{"gwTime":"2024-05-01T10:00:00.250Z"}}"#;
        for bad in [
            "yesterday",
            "9999-12-31T23:59:59-23:59",
            "1969-12-31T23:59:59.999Z",
        ] {
            let up = parse(UP.replace("2024-05-01T10:00:00.123Z", bad).as_bytes(), t).unwrap();
            assert_eq!(up.bad_time.map(|e| e.kind()), Some("bad_time"), "{bad}");
            assert_eq!((up.value.time, up.value.fcnt), (t, Some(42)));
            let f = gw.replace("2024-05-01T10:00:00.250Z", bad);
            let f = parse_gateway_frame(f.as_bytes(), t).unwrap();
            assert_eq!(f.bad_time.map(|e| e.kind()), Some("bad_time"), "{bad}");
            assert_eq!((f.value.time.time, f.value.phy.len()), (t, 5));
        }
        let last = UP.replace("2024-05-01T10:00:00.123Z", "9999-12-31T23:59:59.999Z");
        let up = parse(last.as_bytes(), t).unwrap();
        assert!(up.bad_time.is_none());
        assert_ne!(up.value.time, t);
    }

    /// What the input said is quoted short: a 100 KB DevEUI makes a line, not 100 KB.
    #[test]
    fn errors_quote_input_short() {
        let long = "a".repeat(100_000);
        let up = UP.replace("58a0cb0000101234", &long);
        let e = parse(up.as_bytes(), SystemTime::UNIX_EPOCH).unwrap_err();
        let line = e.to_string();
        assert!(line.len() < 200, "{} bytes", line.len());
        assert!(line.contains("(99880 more bytes)"), "{line}");
        let up = UP.replace(r#""fCnt":42"#, &format!(r#""fCnt":"{long}""#));
        let line = parse(up.as_bytes(), SystemTime::UNIX_EPOCH)
            .unwrap_err()
            .to_string();
        assert!(line.len() < 200, "{} bytes", line.len());
    }

    /// A decoded `object` the JSON parser refuses (nested deeper than it goes, a number
    /// beyond f64) costs only the object, as one too large to carry does: the uplink (`data`,
    /// fCnt) is taken, with the object marked unreadable so it goes out packed with the reason.
    /// So it is when radio metadata of the wrong type is mended as well.
    #[test]
    fn an_unreadable_network_object_costs_only_the_object() {
        let up = r#"{"time":"2024-05-01T10:00:00.123Z","deviceInfo":{"devEui":"58a0cb0000101234"},"devAddr":"26011bda","fCnt":42,"fPort":103,"data":"CIwuLf////8=","object":OBJECT RADIO}"#;
        let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
        let objects = [format!(r#"{{"a":{deep}}}"#), r#"{"big":1e400}"#.to_string()];
        for (object, radio) in objects
            .iter()
            .flat_map(|o| ["", r#","rxInfo":"x","txInfo":{"modulation":5}"#].map(|r| (o, r)))
        {
            let text = up.replace("OBJECT", object).replace(" RADIO", radio);
            let parsed = parse(text.as_bytes(), SystemTime::UNIX_EPOCH);
            let Ok(Parsed { value: up, .. }) = parsed else {
                panic!("{}{radio}: {:?}", &object[..12], parsed.err());
            };
            assert_eq!((up.fcnt, up.payload.len()), (Some(42), 8));
            assert!(
                up.ns.is_empty() && up.ns.unreadable.is_some(),
                "{:?}",
                up.ns
            );
        }
    }

    /// A UTF-8 byte order mark before the JSON (RFC 8259 lets a parser ignore one; Windows
    /// tools write it) costs nothing, and leaves the Protobuf hint to what is not JSON.
    #[test]
    fn a_byte_order_mark_is_ignored() {
        let t = SystemTime::UNIX_EPOCH;
        let up = parse(format!("\u{feff}{UP}").as_bytes(), t).unwrap().value;
        assert_eq!(up, parse(UP.as_bytes(), t).unwrap().value);
        let gw = r#"{"phyPayload":"QNobASY=","rxInfo":{"gwTime":"2024-05-01T10:00:00.250Z"}}"#;
        let f = parse_gateway_frame(format!("\u{feff}{gw}").as_bytes(), t).unwrap();
        assert_eq!((f.value.phy.len(), f.bad_time.is_none()), (5, true));
        let e = parse_gateway_frame("\u{feff}{\"phyPayload\":".as_bytes(), t).unwrap_err();
        assert!(!e.to_string().contains("Protobuf"), "{e}");
    }

    /// A string that does not decode (a lone UTF-16 surrogate escape, bytes that are not
    /// UTF-8) in a field the uplink does not need costs only its bad characters, read as
    /// U+FFFD; in one it needs, the uplink is still refused, by that field's own check.
    #[test]
    fn a_bad_string_costs_only_its_characters() {
        let t = SystemTime::UNIX_EPOCH;
        let named = |name: &[u8]| {
            let mut json = UP.as_bytes().to_vec();
            let at = UP.find("lobby-th").unwrap();
            json.splice(at..at + "lobby-th".len(), name.iter().copied());
            parse(&json, t).map(|p| p.value)
        };
        for (name, read) in [
            (&br"lobby\ud800"[..], "lobby\u{fffd}"),
            (br"\udc00lobby\ud83d", "\u{fffd}lobby\u{fffd}"),
            (b"lobby\xff", "lobby\u{fffd}"),
            // A pair, and an escaped backslash before `u`, are not lone surrogates.
            (br"\ud83d\ude00\\ud800\udc00", "\u{1f600}\\ud800\u{fffd}"),
        ] {
            let up = named(name).unwrap();
            assert_eq!(up.device_name.as_deref(), Some(read), "{read}");
            assert_eq!((up.fcnt, up.payload.len()), (Some(42), 8));
        }
        let gateway = UP.replace("\"g2\"", r#""g\udfff2""#);
        let up = parse(gateway.as_bytes(), t).unwrap().value;
        assert_eq!(up.radio.gateway_id.as_deref(), Some("g\u{fffd}2"));
        let time = UP.replace("10:00:00.123Z", r"10:00:00.123Z\ud800");
        let up = parse(time.as_bytes(), t).unwrap();
        assert_eq!(up.bad_time.map(|e| e.kind()), Some("bad_time"));
        let eui = UP.replace("58a0cb0000101234", r"58a0cb000010123\ud800");
        assert_eq!(parse(eui.as_bytes(), t).unwrap_err().kind(), "bad_dev_eui");
        for cut in [
            &UP[..UP.len() - 1],
            r#"{"a":"\"#,
            r#"{"a":"\u"#,
            r#"{"a":"\ud800\"#,
        ] {
            assert_eq!(
                parse(cut.as_bytes(), t).unwrap_err().kind(),
                "malformed_json"
            );
        }
    }

    /// A key given twice keeps its last value, as JSON parsers commonly take it, unless the
    /// reading needs it (the DevEUI, payload, FCnt, FPort, or an object holding one) and the
    /// two differ: which one is meant is not known, and the uplink is refused.
    #[test]
    fn a_key_given_twice_keeps_its_last_value_unless_the_reading_needs_it() {
        let t = SystemTime::UNIX_EPOCH;
        let twice = UP
            .replace(
                r#""deviceName":"lobby-th""#,
                r#""deviceName":"a","deviceName":"b""#,
            )
            .replace(r#""fCnt":42"#, r#""fCnt":42,"fCnt":42"#)
            .replace(
                r#""spreadingFactor":7"#,
                r#""spreadingFactor":7,"spreadingFactor":8"#,
            )
            .replace(
                r#""gatewayId":"g2""#,
                r#""gatewayId":"g2","gatewayId":"g3""#,
            )
            .replace(r#""time":"#, r#""time":"1999-01-01T00:00:00Z","time":"#);
        let mut want = parse(UP.as_bytes(), t).unwrap().value;
        want.device_name = Some("b".into());
        want.radio.gateway_id = Some("g3".into());
        want.radio.gateways[1].gateway_id = Some("g3".into());
        want.radio.spreading_factor = Some(8);
        assert_eq!(parse(twice.as_bytes(), t).unwrap().value, want);
        for (from, to) in [
            (r#""fCnt":42"#, r#""fCnt":42,"fCnt":43"#),
            (r#""fPort":103"#, r#""fPort":103,"fPort":3"#),
            (r#""data":"#, r#""data":"AA==","data":"#),
            (r#""devEui":"#, r#""devEui":"58a0cb0000109999","devEui":"#),
            (
                r#""deviceInfo":"#,
                r#""deviceInfo":{"devEui":"58a0cb0000109999"},"deviceInfo":"#,
            ),
        ] {
            let e = parse(UP.replacen(from, to, 1).as_bytes(), t).unwrap_err();
            assert_eq!(e.kind(), "malformed_json", "{to}");
            assert!(e.to_string().contains("duplicate field"), "{e}");
        }
        let gw = r#"{"phyPayload":"QNobASY=","rxInfo":{"rssi":-40,"rssi":-36}}"#;
        let f = parse_gateway_frame(gw.as_bytes(), t).unwrap().value;
        assert_eq!(f.radio.rssi, Some(-36));
        let gw = r#"{"phyPayload":"QNobASY=","phyPayload":"QNobASYA"}"#;
        let e = parse_gateway_frame(gw.as_bytes(), t).unwrap_err();
        assert_eq!(e.kind(), "malformed_json");
    }

    /// A gateway frame that is not JSON (the ChirpStack forwarders send Protobuf unless told
    /// otherwise) is refused with a hint at the setting that fixes it; broken JSON is not.
    #[test]
    fn a_protobuf_gateway_frame_is_refused_with_the_fix() {
        let t = SystemTime::UNIX_EPOCH;
        let protobuf = b"\x0a\x17\x40\x01\x02\x03\x04\x00\x01\x00";
        let e = parse_gateway_frame(protobuf, t).unwrap_err();
        assert_eq!(e.kind(), "malformed_json");
        assert!(e.to_string().contains(r#"marshaler = "json""#), "{e}");
        let e = parse_gateway_frame(b"{\"phyPayload\":", t).unwrap_err();
        assert!(!e.to_string().contains("Protobuf"), "{e}");
    }
}
