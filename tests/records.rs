//! The record on the wire against Microshare's published example, and `hubgate decode` against
//! what the sink sends.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use hubgate::codec::Codec;
use hubgate::config::Config;
use hubgate::decode::Decoder;
use hubgate::metrics::Metrics;
use hubgate::uplink::{Radio, Uplink};
use serde_json::Value;

mod support;

#[cfg(feature = "js")]
use support::codec_files;

fn hubgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(args)
        .output()
        .expect("hubgate runs")
}

fn golden() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/microshare-environment.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Fields of the published record hubgate cannot know from its inputs: left out, never faked.
const NOT_KNOWN: &[&str] = &[
    // No uplink format hubgate reads carries the downlink counter or the server's version.
    "obj.data.meta.iot.fcnt_dwn",
    "obj.data.meta.iot.ns_version",
];

/// Fields hubgate adds that the 2023 example does not show.
const ADDED: &[&str] = &[
    "obj.data.unpacker",
    "obj.data.meta.dc",
    "obj.data.device_health.temperature",
];

/// Compare `ours` with `theirs` below `path`: the same keys (but for [`NOT_KNOWN`] and
/// `added`), the same JSON types (an integer is not a float) and the same values; ids are
/// hashes of different inputs, so only their type is compared.
fn compare(path: &str, ours: &Value, theirs: &Value, added: &[&str], diffs: &mut Vec<String>) {
    let id = path == "id" || path == "obj.id";
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, tv) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    Some(ov) => compare(&p, ov, tv, added, diffs),
                    None if NOT_KNOWN.contains(&p.as_str()) => {}
                    None => diffs.push(format!("{p}: missing")),
                }
            }
            for k in o.keys().filter(|k| !t.contains_key(*k)) {
                let p = format!("{path}.{k}");
                if !added.contains(&p.as_str()) {
                    diffs.push(format!("{p}: not in Microshare's record"));
                }
            }
        }
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                compare(&format!("{path}[{i}]"), ov, tv, added, diffs);
            }
        }
        (Value::Number(o), Value::Number(t)) if o.is_f64() != t.is_f64() => {
            diffs.push(format!("{path}: {o} vs {t} (integer vs float)"));
        }
        (Value::String(_), Value::String(_)) if id => {}
        _ if ours != theirs => diffs.push(format!("{path}: {ours} vs {theirs}")),
        _ => {}
    }
}

/// The uplink of Microshare's published environment record: its device, time, frame counter
/// and radio metadata, and a Browan TBHV110 frame carrying its readings (23 °C, 35 %RH,
/// 462 ppm CO2, 3.6 V).
fn published_uplink() -> Uplink {
    Uplink {
        dev_eui: hubgate::ids::DevEui::parse("0016160000000CBB").unwrap(),
        dev_addr: None,
        device_name: None,
        fport: Some(103),
        fcnt: Some(6),
        payload: hex::decode("310b3723ce01ffffffff37").unwrap(),
        time: UNIX_EPOCH + Duration::from_millis(1_696_253_312_556),
        radio: Radio {
            rssi: Some(-79),
            snr: Some(9.5),
            gateway_id: None,
            frequency: Some(903_700_000),
            spreading_factor: Some(10),
            bandwidth: Some(125_000),
            channel: Some(7),
            gateways: Vec::new(),
        },
        ns: hubgate::uplink::NsDecoded::default(),
        same_ms_index: 0,
        session: None,
    }
}

const SITE: &str = r#"
[record]
source = "ShareService"
global_tags = ["Europe", "United Kingdom", "London"]
[[device]]
dev_eui = "00-16-16-00-00-00-0C-BB"
codec = "browan-tbhv110"
tags = ["Building 1", "1st Floor", "Men-West", "Men"]
[sink]
type = "stdout"
"#;

#[test]
fn a_record_matches_microshares_published_example_field_by_field() {
    let cfg = Config::parse(SITE).unwrap();
    let decoder = Decoder::new(&cfg, Metrics::new());
    let codec = Codec::from_id("browan-tbhv110").unwrap();
    let rec = decoder
        .decode_with(&published_uplink(), codec)
        .unwrap()
        .remove(0);
    let ours: Value = serde_json::from_str(&rec.body).unwrap();
    let mut diffs = Vec::new();
    compare("", &ours, &golden(), ADDED, &mut diffs);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert_eq!(ours["id"], ours["obj"]["id"]);
}

/// Microshare's two published Smilio Action feedback records, as hubgate writes their
/// readings: the counters under the buttons' names, in Microshare's order and text, byte for
/// byte. 2023 (docs/2/technical/data-format/feedback.md, `pushes_since_reset` and `swipe` as
/// shown there); 2020 (microshare-standards.md, "Feedback Data": the older record's IPSO
/// push buttons, `5853` the name and `5501` the count, and its Hall-effect flag `5500`
/// false).
#[test]
fn smilio_records_carry_microshares_published_button_names_and_counts() {
    let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
    let decoder = Decoder::new(&cfg, Metrics::new());
    let codec = Codec::from_id("skiply-smilio-action").unwrap();
    for (payload, counts) in [
        ("0200ed001b030d005d002f", [237, 27, 93, 47, 781]),
        ("02004b02620372002a00f6", [75, 610, 42, 246, 882]),
    ] {
        let up = Uplink {
            dev_eui: hubgate::ids::DevEui::parse("70B3D5326B00088E").unwrap(),
            fport: Some(2),
            payload: hex::decode(payload).unwrap(),
            ..published_uplink()
        };
        let rec = decoder.decode_with(&up, codec).unwrap().remove(0);
        let [b1, b2, b3, b4, b5] = counts;
        let readings = format!(
            "\"pushes_since_reset\":[\
             {{\"context_id\":\"Button #1, Upper Left\",\"value\":{b1}}},\
             {{\"context_id\":\"Button #2, Upper Right\",\"value\":{b2}}},\
             {{\"context_id\":\"Button #3, Lower Left\",\"value\":{b3}}},\
             {{\"context_id\":\"Button #4, Lower Right\",\"value\":{b4}}},\
             {{\"context_id\":\"Button #5, Middle\",\"value\":{b5}}}],\
             \"swipe\":[{{\"value\":false}}]"
        );
        assert!(rec.body.contains(&readings), "{payload}: {}", rec.body);
        assert_eq!(rec.rec_type, "io.microshare.feedback.unpacked");
    }
}

/// Fields hubgate writes from a network server's message that Microshare's published record
/// does not show (docs/records.md): the network server's device name, the gateway that
/// heard the uplink best, and every gateway that heard it (`gateways`, which Microshare's
/// live records carry: the 2023 example predates it).
const FROM_THE_NETWORK_SERVER: &[&str] = &[
    "obj.data.meta.iot.device_name",
    "obj.data.meta.iot.gateway_id",
    "obj.data.meta.iot.gateways",
];

/// The record the agent makes of a network server's message `msg` in `format` for the
/// site's device: parsed as the MQTT source parses it, decoded as the agent decodes it.
fn record_of(format: hubgate::config::UplinkFormat, msg: &str) -> Value {
    let parsed = hubgate::source::parse(format, msg.as_bytes(), UNIX_EPOCH)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.bad_time.is_none());
    let mut decoder = Decoder::new(&Config::parse(SITE).unwrap(), Metrics::new());
    let mut records = decoder.decode(&parsed.value);
    assert_eq!(records.len(), 1);
    serde_json::from_str(&records.remove(0).body).unwrap()
}

/// `record` against Microshare's published record, allowing only the documented
/// differences; its `meta.iot.gateways` must be `gateways`.
fn matches_the_published_record(record: &Value, gateways: Value) {
    let mut diffs = Vec::new();
    let added = [ADDED, FROM_THE_NETWORK_SERVER].concat();
    compare("", record, &golden(), &added, &mut diffs);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert_eq!(record["obj"]["data"]["meta"]["iot"]["gateways"], gateways);
}

/// A ChirpStack v4 uplink event as its MQTT integration publishes it (every field of the
/// event, receptions without their fields at 0: the second gateway heard the uplink at
/// 0 dB SNR on channel 0), through the parser and the decoder: Microshare's published
/// record, but for the documented differences.
#[test]
fn a_chirpstack_uplink_event_makes_microshares_published_record() {
    let event = r#"{
        "deduplicationId": "0b8a6e4f-3c51-4a8e-9a0e-6f7d2b1c9e44",
        "time": "2023-10-02T13:28:32.556187433+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242", "tenantName": "ChirpStack",
            "applicationId": "1f4c2b8e-7d5a-4e2f-b3c6-9a8d7e6f5a4b", "applicationName": "building-1",
            "deviceProfileId": "8e3b1a2c-4d5f-4a6b-8c7d-9e0f1a2b3c4d", "deviceProfileName": "Browan TBHV110",
            "deviceName": "wc-men-west", "devEui": "0016160000000cbb", "deviceClassEnabled": "CLASS_A",
            "tags": {}
        },
        "devAddr": "260b1f3a", "adr": true, "dr": 2, "fCnt": 6, "fPort": 103, "confirmed": false,
        "data": "MQs3I84B/////zc=",
        "rxInfo": [
            {"gatewayId": "b827ebfffe000001", "uplinkId": 40211, "gwTime": "2023-10-02T13:28:32.549Z",
             "nsTime": "2023-10-02T13:28:32.556Z", "rssi": -79, "snr": 9.5, "channel": 7, "rfChain": 1,
             "location": {}, "context": "mPq0Hw==", "metadata": {"region_config_id": "us915_1"},
             "crcStatus": "CRC_OK"},
            {"gatewayId": "0016c001ff10d3f6", "uplinkId": 61077, "nsTime": "2023-10-02T13:28:32.561Z",
             "rssi": -104, "location": {}, "context": "AbC1dA==",
             "metadata": {"region_config_id": "us915_1"}, "crcStatus": "CRC_OK"}
        ],
        "txInfo": {"frequency": 903700000,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 10, "codeRate": "CR_4_5"}}},
        "regionConfigId": "us915_1"
    }"#;
    let record = record_of(hubgate::config::UplinkFormat::ChirpstackV4, event);
    matches_the_published_record(
        &record,
        serde_json::json!([
            {"channel": 7, "id": "b827ebfffe000001", "rssi": -79, "sf": 10, "snr": 9.5},
            {"channel": 0, "id": "0016c001ff10d3f6", "rssi": -104, "sf": 10, "snr": 0},
        ]),
    );
    let iot = &record["obj"]["data"]["meta"]["iot"];
    assert_eq!(
        (&iot["device_name"], &iot["gateway_id"]),
        (&"wc-men-west".into(), &"b827ebfffe000001".into())
    );
}

/// The same uplink as The Things Stack v3 publishes it (`v3/.../up`: its 64-bit frequency a
/// string, a reception on channel index 0 without `channel_index`): Microshare's published
/// record, but for the documented differences.
#[test]
fn a_things_stack_uplink_message_makes_microshares_published_record() {
    let message = r#"{
        "end_device_ids": {"device_id": "wc-men-west", "application_ids": {"application_id": "building-1"},
            "dev_eui": "0016160000000CBB", "join_eui": "0000000000000000", "dev_addr": "260B1F3A"},
        "correlation_ids": ["gs:uplink:01HBV3S8W2K6Q1T7Y9E4R5N2M8"],
        "received_at": "2023-10-02T13:28:32.601093457Z",
        "uplink_message": {
            "session_key_id": "AYrN1bPcm3xWQ5Ls2uH0yA==", "f_port": 103, "f_cnt": 6,
            "frm_payload": "MQs3I84B/////zc=",
            "rx_metadata": [
                {"gateway_ids": {"gateway_id": "men-west-gw", "eui": "B827EBFFFE000001"},
                 "time": "2023-10-02T13:28:32.549Z", "timestamp": 2912402156, "rssi": -79,
                 "channel_rssi": -79, "snr": 9.5, "uplink_token": "ChkKFwoLbWVuLXdlc3QtZ3cSCLgn6//+AAABEOyh2M4K",
                 "channel_index": 7, "received_at": "2023-10-02T13:28:32.552Z"},
                {"gateway_ids": {"gateway_id": "roof-gw", "eui": "0016C001FF10D3F6"},
                 "timestamp": 1870234411, "rssi": -104, "channel_rssi": -104, "snr": -3.25,
                 "uplink_token": "ChUKEwoHcm9vZi1ndxIIABbAAf8Q0/YQq8TqvAY=",
                 "received_at": "2023-10-02T13:28:32.553Z"}
            ],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 10, "coding_rate": "4/5"}},
                "frequency": "903700000", "timestamp": 2912402156, "time": "2023-10-02T13:28:32.549Z"},
            "received_at": "2023-10-02T13:28:32.556443821Z",
            "consumed_airtime": "0.370688s",
            "network_ids": {"net_id": "000013", "tenant_id": "ttn", "cluster_id": "nam1",
                "cluster_address": "nam1.cloud.thethings.network"}
        }
    }"#;
    let record = record_of(hubgate::config::UplinkFormat::TtsV3, message);
    matches_the_published_record(
        &record,
        serde_json::json!([
            {"channel": 7, "id": "men-west-gw", "rssi": -79, "sf": 10, "snr": 9.5},
            {"channel": 0, "id": "roof-gw", "rssi": -104, "sf": 10, "snr": -3.25},
        ]),
    );
    let iot = &record["obj"]["data"]["meta"]["iot"];
    assert_eq!(
        (&iot["device_name"], &iot["gateway_id"]),
        (&"wc-men-west".into(), &"men-west-gw".into())
    );
}

/// The same frame decoded by a vendor-style JavaScript decoder (tests/golden/browan-tbhv110.js,
/// which returns the sensor's 65535 for "no VOC" and "no IAQ" as vendor decoders do) and mapped
/// by its table: Microshare's record too, the fields the table leaves unmapped (the status
/// byte, the "no value"s it ignores) under `origin`. The device names it with `js_codec` and
/// the decoder loads it as `hubgate run` does.
#[cfg(feature = "js")]
#[test]
fn a_javascript_codec_with_its_table_matches_microshares_published_example() {
    let (_dir, mut decoder, m) = golden_js_decoder("browan-tbhv110");
    let mut recs = decoder.decode(&hubgate::source::Input::Uplink(published_uplink()));
    assert_eq!(recs.len(), 1);
    assert_eq!(m.problems("codec_file"), 0);
    let ours: Value = serde_json::from_str(&recs.remove(0).body).unwrap();
    let mut diffs = Vec::new();
    let added = [ADDED, &["obj.data.origin"]].concat();
    compare("", &ours, &golden(), &added, &mut diffs);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert_eq!(
        ours["obj"]["data"]["origin"],
        serde_json::json!({"status": 0x31, "voc": 65535, "iaq": 65535})
    );
    assert_eq!(
        ours["obj"]["data"]["unpacker"]["class"],
        "js/browan-tbhv110"
    );
}

/// The site's device decoded by the JavaScript codec `name` and its table, from tests/golden
/// (in the directory returned, kept while the decoder is used): configured as the codec's
/// user does it, `js_codec` and no built-in codec, and loaded as `hubgate run` loads it, its
/// worker the program's own.
#[cfg(feature = "js")]
fn golden_js_decoder(name: &str) -> (tempfile::TempDir, Decoder, std::sync::Arc<Metrics>) {
    let dir = codec_files::tempdir();
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for file in [format!("{name}.js"), format!("{name}.toml")] {
        codec_files::write(
            dir.path().join(&file),
            std::fs::read(golden_dir.join(&file)).unwrap(),
        );
    }
    let site = support::agent::changed(
        SITE,
        &[
            (
                "\ncodec = \"browan-tbhv110\"",
                &format!("\njs_codec = \"{name}\""),
            ),
            (
                "[sink]",
                &format!("[codecs]\ndir = {:?}\n[sink]", dir.path()),
            ),
        ],
    );
    let m = Metrics::new();
    let decoder = Decoder::with_launcher(
        &Config::parse(&site).unwrap(),
        m.clone(),
        hubgate::js::Launcher::program(env!("CARGO_BIN_EXE_hubgate")),
    );
    (dir, decoder, m)
}

/// A Milesight-style JavaScript decoder (tests/golden/milesight-em300-th.js, which returns
/// history records as Milesight's decoders do: `history: [{timestamp, temperature,
/// humidity}]`) with its table makes the records the built-in `milesight-em300-th` makes of
/// the same frame: the live one, then one per history record at its own time, in the
/// frame's order, readings on their channels, with the same ids and times; only who made
/// them differs.
#[cfg(feature = "js")]
#[test]
fn a_javascript_codec_with_history_makes_the_built_in_codecs_records() {
    let (_dir, mut decoder, m) = golden_js_decoder("milesight-em300-th");
    let mut up = published_uplink();
    up.fport = Some(85);
    // 100 %, 26.6 °C, 40 %RH now; history: 1 700 000 000 −1.0 °C 50 %RH, then 1 700 000 600
    // 22.5 °C 40 %RH.
    up.payload = hex::decode(concat!(
        "017564",
        "03670A01",
        "046850",
        "20CE00F15365F6FF6400",
        "20CE58F35365E1005000",
    ))
    .unwrap();
    let ours = decoder.decode(&hubgate::source::Input::Uplink(up.clone()));
    assert_eq!(m.problems("codec_file"), 0);
    let builtin = Decoder::new(&Config::parse(SITE).unwrap(), Metrics::new())
        .decode_with(&up, Codec::from_id("milesight-em300-th").unwrap())
        .unwrap();
    let bodies = |records: &[hubgate::record::Record]| -> Vec<Value> {
        records
            .iter()
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    };
    let (ours, theirs) = (bodies(&ours), bodies(&builtin));
    let data = |v: &Value| {
        let mut d = v["obj"]["data"].as_object().unwrap().clone();
        d.remove("meta");
        d.remove("unpacker");
        Value::Object(d)
    };
    let id = "00-16-16-00-00-00-0C-BB";
    let t = |v: Value| serde_json::json!([{"context_id": "3", "unit": "°C", "value": v}]);
    let h = |v: Value| serde_json::json!([{"context_id": "4", "unit": "%RH", "value": v}]);
    assert_eq!(
        ours.iter().map(data).collect::<Vec<_>>(),
        [
            serde_json::json!({"time": "2023-10-02T13:28:32.556Z", "temperature": t(26.6.into()),
                "humidity": h(40.into()),
                "device_health": {"id": id, "charge": [{"unit": "%", "value": 100}]}}),
            serde_json::json!({"time": "2023-11-14T22:13:20.000Z", "temperature": t((-1).into()),
                "humidity": h(50.into()), "device_health": {"id": id}}),
            serde_json::json!({"time": "2023-11-14T22:23:20.000Z", "temperature": t(22.5.into()),
                "humidity": h(40.into()), "device_health": {"id": id}}),
        ]
    );
    assert_eq!(ours.len(), theirs.len());
    for (i, (ours, theirs)) in ours.iter().zip(&theirs).enumerate() {
        let mut diffs = Vec::new();
        let mut theirs = theirs.clone();
        theirs["obj"]["data"]["unpacker"]["class"] = "js/milesight-em300-th".into();
        theirs["obj"]["data"]["meta"]["dc"]["device_type"] = "js/milesight-em300-th".into();
        compare("", ours, &theirs, &[], &mut diffs);
        assert!(diffs.is_empty(), "record {i}:\n{}", diffs.join("\n"));
        assert_eq!(ours["id"], theirs["id"], "record {i}");
    }
    let stamps: Vec<&Value> = ours.iter().map(|v| &v["obj"]["tstamp"]).collect();
    assert_eq!(
        stamps,
        [1_696_253_312_556_u64, 1_700_000_000_000, 1_700_000_600_000]
    );
}

/// `hubgate run` of a site config in `dir` that replays `uplink` to stdout: the config's path
/// and what the sink sent.
fn replayed(dir: &std::path::Path, uplink: &str) -> (std::path::PathBuf, String) {
    let uplinks = dir.join("uplinks.jsonl");
    std::fs::write(&uplinks, format!("{uplink}\n")).unwrap();
    let config = dir.join("site.toml");
    let site = format!(
        "{SITE}\n[buffer]\npath = {buffer:?}\n[[source]]\ntype = \"replay\"\npath = {uplinks:?}\ninterval = \"0s\"\n",
        buffer = dir.join("buffer"),
    );
    std::fs::write(&config, site).unwrap();
    let run = hubgate(&["run", "-c", config.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    (config, String::from_utf8(run.stdout).unwrap())
}

/// `hubgate decode` prints the `obj` the sink sends for the same uplink, byte for byte.
#[test]
fn decode_prints_the_bytes_the_sink_sends() {
    let dir = tempfile::tempdir().unwrap();
    let uplink = r#"{"time":"2023-10-02T13:28:32.556Z","deviceInfo":{"devEui":"0016160000000cbb"},"fCnt":6,"fPort":103,"data":"MQs3I84B/////zc="}"#;
    let (config, sent) = replayed(dir.path(), uplink);
    let config = config.to_str().unwrap();
    let args = [
        "decode",
        "-c",
        config,
        "--codec",
        "browan-tbhv110",
        "--fport",
        "103",
        "--dev-eui",
        "0016160000000cbb",
        "--fcnt",
        "6",
        "--time",
        "2023-10-02T13:28:32.556Z",
        "310b3723ce01ffffffff37",
    ];
    let decode = hubgate(&args);
    assert!(
        decode.status.success(),
        "{}",
        String::from_utf8_lossy(&decode.stderr)
    );
    let printed = String::from_utf8(decode.stdout).unwrap();
    let obj = printed.strip_suffix('\n').expect("one line");
    assert_eq!(sent.lines().count(), 1, "{sent}");
    assert!(
        sent.contains(&format!("\"obj\":{obj},")),
        "decode printed\n{obj}\nthe sink sent\n{sent}"
    );
    assert!(obj.contains("\"tags\":[\"Europe\""), "{obj}");
}

/// `hubgate decode --uplink` takes the whole network-server message, radio metadata
/// (rxInfo, txInfo) included, and prints the bytes the sink sends for it.
#[test]
fn decode_of_a_whole_uplink_prints_the_bytes_the_sink_sends() {
    let dir = tempfile::tempdir().unwrap();
    let uplink = r#"{"time":"2023-10-02T13:28:32.556Z","deviceInfo":{"devEui":"0016160000000cbb","deviceName":"wc-men-west"},"fCnt":6,"fPort":103,"data":"MQs3I84B/////zc=","rxInfo":[{"gatewayId":"b827ebfffe000001","rssi":-79,"snr":9.5,"channel":7}],"txInfo":{"frequency":903700000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":10}}}}"#;
    let file = dir.path().join("uplink.json");
    std::fs::write(&file, uplink).unwrap();
    let (config, sent) = replayed(dir.path(), uplink);
    let config = config.to_str().unwrap();
    let decode = hubgate(&["decode", "-c", config, "--uplink", file.to_str().unwrap()]);
    assert!(
        decode.status.success(),
        "{}",
        String::from_utf8_lossy(&decode.stderr)
    );
    let printed = String::from_utf8(decode.stdout).unwrap();
    let obj = printed.strip_suffix('\n').expect("one line");
    assert_eq!(sent.lines().count(), 1, "{sent}");
    assert!(
        sent.contains(&format!("\"obj\":{obj},")),
        "decode printed\n{obj}\nthe sink sent\n{sent}"
    );
    for radio in [
        "\"freq\":903.7",
        "\"bw\":125",
        "\"channel\":7",
        "\"rssi\":-79",
    ] {
        assert!(obj.contains(radio), "{radio} in {obj}");
    }
}

/// A ChirpStack v4 uplink event carrying `object`, parsed as the MQTT source parses it.
fn chirpstack_with_object(object: &str) -> hubgate::source::Input {
    let text = format!(
        r#"{{"time":"2024-05-01T10:00:00.123Z","deviceInfo":{{"devEui":"58a0cb0000101234"}},"devAddr":"26011bda","fCnt":42,"fPort":9,"data":"AQ==","object":{object}}}"#
    );
    let parsed = hubgate::format::chirpstack::parse(text.as_bytes(), UNIX_EPOCH)
        .unwrap_or_else(|e| panic!("{e}"));
    hubgate::source::Input::Uplink(parsed.value)
}

/// The record nests a carried object 3 levels deeper (envelope, obj, data, origin), so one
/// the source's parser still reads could make a body serde_json refuses (the pretty stdout
/// sink printed `null` for it): one nested deeper than `MAX_DEPTH` goes out packed, saying
/// why, and every record is one a JSON parser reads.
#[test]
fn a_network_object_too_deep_for_its_record_goes_out_packed() {
    let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
    let mut d = Decoder::new(&cfg, Metrics::new());
    // The deepest object the source's parser still reads, and the deepest a record carries.
    let parsed_deepest = (1..200)
        .take_while(|&d| {
            let text = format!("{}1{}", "[".repeat(d), "]".repeat(d));
            serde_json::from_str::<Value>(&format!(r#"{{"a":{text}}}"#)).is_ok()
        })
        .last()
        .unwrap();
    let carried = hubgate::mapping::MAX_DEPTH - 1;
    for (arrays, packed) in [
        (parsed_deepest, true),
        (carried + 1, true),
        (carried, false),
    ] {
        let object = format!(r#"{{"a":{}1{}}}"#, "[".repeat(arrays), "]".repeat(arrays));
        let records = d.decode(&chirpstack_with_object(&object));
        assert_eq!(records.len(), 1);
        let body: Value = serde_json::from_str(&records[0].body)
            .unwrap_or_else(|e| panic!("{arrays} arrays deep: record unreadable: {e}"));
        let data = &body["obj"]["data"];
        assert_eq!(
            data["unpacker"]["class"] == "packed",
            packed,
            "{arrays}: {data}"
        );
        if packed {
            let error = data["error"].as_str().unwrap();
            assert!(error.contains("nested deeper than 64 levels"), "{error}");
        }
    }
}
