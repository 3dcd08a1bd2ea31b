//! Whole-path fuzzing: for every input format, bytes as they arrive go through the source's
//! parser, the decode stage (LoRaWAN MIC check and decryption, the device's codec) and
//! record building, to the finished record JSON — nothing may panic, and every record must be
//! well-formed. A network server's decoded object also goes through mapping tables using each
//! of their features, its records held to what docs/codecs.md promises of them. Config TOML
//! and the Event Hubs connection string get the same treatment.
//!
//! Each target mixes structure-aware inputs (valid documents with fields replaced by odd
//! values, real LoRaWAN frames of configured devices, framed CBOR envelopes), mutated valid
//! documents, and random bytes.
//!
//! Cases per target: 100,000 (CI). Long runs: `HUBGATE_FUZZ_CASES=10000000 cargo test
//! --release --test fuzz` (one target: add its name). Every input that ever failed is kept in
//! [`regressions`].

mod support;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hubgate::codec::Codec;
use hubgate::config::{Config, UdpSourceConfig, UplinkFormat};
use hubgate::connection_string::ConnectionString;
use hubgate::decode::Decoder;
use hubgate::format::cbor_envelope;
use hubgate::framing::{Deframer, Framing};
use hubgate::mapping::{HistoryTable, ReadAs, Table, Target};
use hubgate::metrics::Metrics;
use hubgate::record::Record;
use hubgate::source::{self, udp, Input};
use hubgate::uplink::Uplink;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};
use serde_json::{json, Value};
use support::frames::{line, with_crc};
use support::stuffing::{cobs, slip};
use time::format_description::well_known::Rfc3339;

const NWK: [u8; 16] = [
    0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C,
];
const APP: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// Devices `0..=Codec::ALL.len()`: device `i` has DevEUI `00..0i`, DevAddr `0x260000i`, the
/// keys above and the `i`-th codec (the last one none: packed records).
const DEVICES: usize = Codec::ALL.len() + 1;

fn cases() -> u32 {
    std::env::var("HUBGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn runner() -> TestRunner {
    TestRunner::new(RunConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunConfig::default()
    })
}

fn dev_eui(i: usize) -> [u8; 8] {
    [0, 0, 0, 0, 0, 0, 0, i as u8]
}

fn dev_addr(i: usize) -> u32 {
    0x2600_0000 + i as u32
}

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let mut text = String::from("[sink]\ntype = \"stdout\"\n");
    for i in 0..DEVICES {
        text += &format!(
            "[[device]]\ndev_eui = \"{}\"\ndev_addr = \"{:08x}\"\nnwk_s_key = \"{}\"\napp_s_key = \"{}\"\n",
            hex::encode(dev_eui(i)),
            dev_addr(i),
            hex::encode(NWK),
            hex::encode(APP)
        );
        if let Some(c) = Codec::ALL.get(i) {
            text += &format!("codec = \"{}\"\n", c.id());
        }
    }
    Config::parse(&text).unwrap()
});

/// A decode stage for the configured devices (one per target: building one costs more than
/// a case).
fn decoder() -> Decoder {
    Decoder::new(&CONFIG, Metrics::new())
}

/// Frame counters of generated frames: rising, so a target's decode stage takes them as new.
static FCNT: AtomicU32 = AtomicU32::new(1);

/// What every finished record must be: not the product of a contained panic, JSON of the
/// envelope, its fields consistent, its time one the record format can show.
fn check(rec: &Record) -> Result<Value, TestCaseError> {
    // Containment would hide a panic in decoding from the runner: it shows in the record.
    prop_assert!(
        rec.rec_type != hubgate::record::DEAD_LETTER && !rec.body.contains("decoding panicked"),
        "a panic in decoding: {}",
        rec.body
    );
    let v: Value = serde_json::from_str(&rec.body)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", rec.body)))?;
    prop_assert_eq!(&v["recType"], &json!(rec.rec_type));
    prop_assert_eq!(&v["id"], &json!(rec.id));
    prop_assert_eq!(&v["obj"]["id"], &json!(rec.id));
    prop_assert_eq!(rec.id.len(), 36);
    prop_assert!(!rec.key.is_empty());
    let time = v["obj"]["data"]["time"].as_str().unwrap_or_default();
    let parsed = time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339);
    prop_assert!(
        time.len() == 24 && time.ends_with('Z') && parsed.is_ok(),
        "time {:?}",
        time
    );
    let tstamp = v["obj"]["tstamp"].as_u64();
    prop_assert!(tstamp.is_some_and(|t| t <= hubgate::uplink::LATEST.as_millis() as u64));
    Ok(v)
}

/// Decode `inputs` and check every record.
fn finish(
    d: &RefCell<Decoder>,
    inputs: impl IntoIterator<Item = Input>,
) -> Result<(), TestCaseError> {
    for input in inputs {
        let records = d.borrow_mut().decode(&input);
        for rec in records {
            check(&rec)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// generators

/// Odd values for a JSON field: wrong types, extremes, edge times, hex, garbage text.
fn scalar() -> impl Strategy<Value = Value> {
    const EDGE: &[&str] = &[
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59.999999999Z",
        "0000-01-01T00:00:00+23:59",
        "1969-12-31T23:59:59.999999999Z",
        "1970-01-01T00:00:00Z",
        "2024-05-01T10:00:00.123456789+14:00",
        "0000000000000001",
        "58-A0-CB-00-00-10-12-34",
        "SF7BW4294968",
        "SF255BW125",
        "SF7BW0",
        "CRC_OK",
        "BAD_CRC",
        "18446744073709551616",
        "-1",
        "====",
        "",
    ];
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(EDGE).prop_map(Value::from),
        "\\PC{0,30}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{}])),
    ]
}

/// JSON pointers of every leaf of `v`.
fn leaves(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| leaves(v, &format!("{at}/{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, &format!("{at}/{i}"), out)),
        _ => out.push(at.to_string()),
    }
}

/// `template` with `set` applied, then up to four leaves replaced by odd values.
fn shaped(template: Value, set: impl Fn(&mut Value) + Clone) -> impl Strategy<Value = Vec<u8>> {
    let mut paths = Vec::new();
    leaves(&template, "", &mut paths);
    let n = paths.len();
    prop::collection::vec((0..n, scalar()), 0..4).prop_map(move |edits| {
        let mut v = template.clone();
        set(&mut v);
        for (i, x) in edits {
            if let Some(slot) = v.pointer_mut(&paths[i]) {
                *slot = x;
            }
        }
        serde_json::to_vec(&v).unwrap()
    })
}

/// A valid document with some bytes replaced and possibly cut short.
fn mutated(doc: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = doc.len();
    (prop::collection::vec((0..len, any::<u8>()), 0..6), 0..=len).prop_map(move |(edits, cut)| {
        let mut d = doc.clone();
        for (i, b) in edits {
            d[i] = b;
        }
        d.truncate(cut.max(1));
        d
    })
}

fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400)
}

/// A device payload: short random bytes (what the codecs see).
fn payload() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::collection::vec(any::<u8>(), 0..48)
}

/// An uplink's device (configured or not), FPort and payload: random, or the example of the
/// device's codec (so the decoded branch runs too) with a byte or two changed.
fn uplink_fields() -> impl Strategy<Value = (usize, u8, Vec<u8>)> + Clone {
    let sample = (
        0..Codec::ALL.len(),
        prop::collection::vec(any::<(usize, u8)>(), 0..3),
    )
        .prop_map(|(i, edits)| {
            let example = Codec::ALL[i].example();
            let fport = example.fport;
            let mut p = example.payload();
            for (at, b) in edits {
                let n = p.len();
                p[at % n] = b;
            }
            (i, fport, p)
        });
    prop_oneof![(0..DEVICES + 1, any::<u8>(), payload()), sample]
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A LoRaWAN uplink of device `i`, MIC and encryption right (the FCnt fresh), or not.
fn phy() -> impl Strategy<Value = Vec<u8>> {
    let good = (uplink_fields(), any::<bool>()).prop_map(|((i, fport, payload), confirmed)| {
        let (i, fport) = (i % DEVICES, fport.max(1));
        let fcnt = FCNT.fetch_add(1, Ordering::Relaxed);
        let mut c = lorawan::creator::DataPayloadCreator::new();
        c.set_uplink(true)
            .set_confirmed(confirmed)
            .set_dev_addr(&dev_addr(i).to_le_bytes())
            .set_fcnt(fcnt)
            .set_f_port(fport);
        c.build(
            &payload,
            &[],
            &lorawan::keys::NewSKey::from(NWK),
            &lorawan::keys::AppSKey::from(APP),
        )
        .unwrap()
        .to_vec()
    });
    let broken = (
        good.clone(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..3),
    )
        .prop_map(|(mut p, edits)| {
            for (i, b) in edits {
                let n = p.len();
                p[i % n] = b;
            }
            p
        });
    prop_oneof![4 => good, 1 => broken, 1 => prop::collection::vec(any::<u8>(), 0..64)]
}

// ---------------------------------------------------------------------------
// targets

fn mqtt_target(format: UplinkFormat, structured: BoxedStrategy<Vec<u8>>, valid: Vec<u8>) {
    let input = prop_oneof![6 => structured, 2 => mutated(valid), 1 => random_bytes()];
    let d = RefCell::new(decoder());
    runner()
        .run(&input, |bytes| {
            let received = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            finish(
                &d,
                source::parse(format, &bytes, received)
                    .ok()
                    .map(|p| p.value),
            )
        })
        .unwrap();
}

const CHIRPSTACK: &str = r#"{"time":"2024-05-01T10:00:00.123Z","deviceInfo":{"deviceName":"th","devEui":"58a0cb0000101234"},"fCnt":42,"fPort":103,"data":"CIwuLf////8=","rxInfo":[{"gatewayId":"g","rssi":-79,"snr":9.5}],"txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}}}"#;
const TTS: &str = r#"{"end_device_ids":{"device_id":"th","dev_eui":"58A0CB0000101234"},"uplink_message":{"f_port":103,"f_cnt":42,"frm_payload":"CIwuLf////8=","rx_metadata":[{"gateway_ids":{"gateway_id":"gw"},"rssi":-71,"snr":8.5}],"settings":{"data_rate":{"lora":{"bandwidth":125000,"spreading_factor":9}},"frequency":"868300000"},"received_at":"2024-05-01T10:00:00.123Z"}}"#;
const GATEWAY: &str = r#"{"phyPayload":"QNobASYABwACQCbInLhVIeM=","txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}},"rxInfo":{"gatewayId":"0016c001ff10a235","gwTime":"2024-05-01T10:00:00.250Z","rssi":-36,"snr":10.5,"crcStatus":"CRC_OK"}}"#;
const RXPK: &str = r#"{"rxpk":[{"time":"2024-05-01T10:00:00.123456Z","tmst":1,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF9BW125","codr":"4/5","rssi":-61,"lsnr":7.2,"size":4,"data":"QNobASY="}],"stat":{"time":"2024-05-01 10:00:00 GMT","rxnb":2,"rxok":1,"ackr":100.0}}"#;

fn doc(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn chirpstack_v4_uplinks() {
    let structured = uplink_fields()
        .prop_flat_map(|(i, fport, payload)| {
            shaped(doc(CHIRPSTACK), move |v| {
                v["deviceInfo"]["devEui"] = json!(hex::encode(dev_eui(i)));
                v["fPort"] = json!(fport);
                v["data"] = json!(b64(&payload));
            })
        })
        .boxed();
    mqtt_target(UplinkFormat::ChirpstackV4, structured, CHIRPSTACK.into());
}

#[test]
fn tts_v3_uplinks() {
    let structured = uplink_fields()
        .prop_flat_map(|(i, fport, payload)| {
            shaped(doc(TTS), move |v| {
                let m = &mut v["uplink_message"];
                m["f_port"] = json!(fport);
                m["frm_payload"] = json!(b64(&payload));
                v["end_device_ids"]["dev_eui"] = json!(hex::encode_upper(dev_eui(i)));
            })
        })
        .boxed();
    mqtt_target(UplinkFormat::TtsV3, structured, TTS.into());
}

#[test]
fn chirpstack_gateway_frames() {
    let structured = phy()
        .prop_flat_map(|phy| {
            shaped(doc(GATEWAY), move |v| {
                v["phyPayload"] = json!(b64(&phy));
            })
        })
        .boxed();
    mqtt_target(UplinkFormat::ChirpstackGateway, structured, GATEWAY.into());
}

#[test]
fn gwmp_datagrams() {
    let json = prop::collection::vec(phy(), 0..3).prop_flat_map(|phys| {
        shaped(doc(RXPK), move |v| {
            let first = v["rxpk"][0].clone();
            v["rxpk"] = phys
                .iter()
                .map(|p| {
                    let mut r = first.clone();
                    r["data"] = json!(b64(p));
                    r
                })
                .collect();
        })
    });
    let body = prop_oneof![
        6 => json,
        2 => mutated(RXPK.into()),
        2 => unreadable_parts(),
        1 => random_bytes()
    ];
    let head = (
        prop_oneof![4 => Just(2u8), 1 => Just(1u8), 1 => any::<u8>()],
        any::<[u8; 2]>(),
        prop_oneof![6 => Just(0u8), 1 => Just(2u8), 1 => Just(5u8), 1 => any::<u8>()],
        prop_oneof![
            Just([0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1]),
            any::<[u8; 8]>()
        ],
    );
    let datagram = prop_oneof![
        8 => (head, body).prop_map(|((v, token, kind, gw), body)| {
            let mut d = vec![v, token[0], token[1], kind];
            d.extend_from_slice(&gw);
            d.extend_from_slice(&body);
            d
        }),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    let metrics = Metrics::new();
    let cfg = |gateways| UdpSourceConfig {
        listen: ([127, 0, 0, 1], 1700).into(),
        gateway_status: true,
        gateways,
    };
    let (open, listed) = (
        cfg(Vec::new()),
        cfg(vec![[0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1]]),
    );
    let dec = RefCell::new(decoder());
    runner()
        .run(&(datagram, any::<bool>()), |(d, use_list)| {
            let cfg = if use_list { &listed } else { &open };
            let peer = ([127, 0, 0, 1], 5000).into();
            let got = udp::handle(&d, peer, cfg, &metrics, SystemTime::now());
            finish(&dec, got.inputs)
        })
        .unwrap();
}

/// A PUSH_DATA with values a `Value` cannot hold (a number past f64, nesting past 128, bytes
/// that are not UTF-8, a key given twice, parts of the wrong type) in its `stat`, in an entry
/// or at the top, beside a good entry: each part is read on its own.
fn unreadable_parts() -> impl Strategy<Value = Vec<u8>> {
    let deep = format!("{}{}", "[".repeat(130), "]".repeat(130)).into_bytes();
    let odd = prop_oneof![
        Just(b"1e400".to_vec()),
        Just(deep),
        Just(b"\"\xe9t\xe9\"".to_vec()),
        Just(b"null".to_vec()),
        Just(b"7".to_vec()),
        Just(b"{}".to_vec()),
        Just(b"[{}]".to_vec()),
    ];
    let entry = &RXPK[RXPK.find('[').unwrap() + 1..RXPK.find(']').unwrap()];
    (odd.clone(), odd, 0..4usize).prop_map(move |(a, b, shape)| {
        let parts: [&[u8]; 7] = match shape {
            0 => [
                b"{\"rxpk\":[",
                entry.as_bytes(),
                b"],\"stat\":{\"rxnb\":1,\"temp\":",
                &a,
                b"},\"x\":",
                &b,
                b"}",
            ],
            1 => [
                b"{\"rxpk\":[",
                entry.as_bytes(),
                b",{\"stat\":1,\"data\":\"AAA=\",\"x\":",
                &a,
                b"}],\"stat\":",
                &b,
                b"}",
            ],
            2 => [
                b"{\"rxpk\":",
                &a,
                b",\"stat\":{},\"rxpk\":[",
                entry.as_bytes(),
                b"],\"stat\":",
                &b,
                b"}",
            ],
            _ => [
                b"{\"rxpk\":[",
                entry.as_bytes(),
                b"],\"stat\":",
                &a,
                b",\"stat\":",
                &b,
                b"}",
            ],
        };
        parts.concat()
    })
}

/// A serial CBOR envelope: configured devices (or not), fields of every type and edge value.
fn envelope() -> impl Strategy<Value = Vec<u8>> {
    use serde_cbor::Value as C;
    let value = prop_oneof![
        Just(C::Null),
        any::<bool>().prop_map(C::Bool),
        any::<i64>().prop_map(|i| C::Integer(i.into())),
        any::<u64>().prop_map(|i| C::Integer(i.into())),
        Just(C::Integer(253_402_300_799)),
        Just(C::Integer(253_402_300_800)),
        any::<f64>().prop_map(C::Float),
        "\\PC{0,20}".prop_map(C::Text),
        Just(C::Text("9999-12-31T23:59:59-23:59".into())),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(C::Bytes),
    ];
    let keys = prop::sample::select(
        &[
            "dev_eui", "payload", "fport", "fcnt", "rssi", "snr", "time", "x",
        ][..],
    );
    (
        uplink_fields(),
        any::<bool>(),
        prop::collection::vec((keys, value), 0..4),
    )
        .prop_map(|((i, fport, payload), eui_text, extra)| {
            let mut m = std::collections::BTreeMap::new();
            let eui = dev_eui(i);
            let eui = if eui_text {
                C::Text(hex::encode(eui))
            } else {
                C::Bytes(eui.to_vec())
            };
            m.insert(C::Text("dev_eui".into()), eui);
            m.insert(C::Text("payload".into()), C::Bytes(payload));
            m.insert(C::Text("fport".into()), C::Integer(fport.into()));
            for (k, v) in extra {
                m.insert(C::Text(k.into()), v);
            }
            serde_cbor::to_vec(&C::Map(m)).unwrap()
        })
}

#[test]
fn serial_framings_with_cbor_envelopes() {
    let content = prop_oneof![5 => envelope(), 1 => prop::collection::vec(any::<u8>(), 0..80)];
    // A frame as a sender writes it, sometimes damaged, sometimes with junk before it.
    let frames = (
        prop::sample::select(&[Framing::Slip, Framing::Cobs, Framing::LinesHex][..]),
        prop::collection::vec(
            (
                content,
                prop::option::of(any::<(usize, u8)>()),
                prop::collection::vec(any::<u8>(), 0..4),
            ),
            1..4,
        ),
        1usize..64,
        prop_oneof![Just(2048usize), 1usize..64],
    );
    let metrics = Metrics::new();
    let d = RefCell::new(decoder());
    runner()
        .run(&frames, |(framing, frames, chunk, max_frame)| {
            let mut stream = Vec::new();
            for (content, damage, junk) in frames {
                stream.extend(junk);
                let mut f = match framing {
                    Framing::Slip => slip(&with_crc(&content)),
                    Framing::Cobs => cobs(&with_crc(&content)),
                    Framing::LinesHex => line(&content),
                };
                if let Some((i, b)) = damage {
                    let n = f.len();
                    f[i % n] = b;
                }
                stream.extend(f);
            }
            let prefix = (framing == Framing::LinesHex).then_some("radio_rx");
            let mut deframer = Deframer::new(framing, max_frame, prefix).unwrap();
            let mut inputs = Vec::new();
            for mut piece in stream.chunks(chunk) {
                while !piece.is_empty() {
                    let (used, event) = deframer.push(piece);
                    prop_assert!(used > 0 || event.is_some());
                    piece = &piece[used..];
                    if let Some(Ok(frame)) = event {
                        prop_assert!(frame.len() <= max_frame);
                        match cbor_envelope::parse(frame, SystemTime::now()) {
                            Ok(up) => inputs.push(Input::Uplink(up.value)),
                            Err(e) => metrics.problem(e.kind(), || e.to_string()),
                        }
                    }
                }
            }
            finish(&d, inputs)
        })
        .unwrap();
}

const TEMPLATE: &str = include_str!("../config/hubgate.toml");

#[test]
fn config_toml() {
    // Lines of the commented template switched on and given odd values.
    let lines: Vec<&'static str> = TEMPLATE.lines().collect();
    let n = lines.len();
    let value = prop_oneof![
        Just("\"\"".to_string()),
        Just("\"${NOT_SET}\"".to_string()),
        Just("\"18446744073709551616B\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"99999999999999999999h\"".to_string()),
        Just("[\"zz\"]".to_string()),
        Just("{}".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "\\PC{0,16}".prop_map(|s| format!("{s:?}")),
    ];
    let structured = prop::collection::vec((0..n, value), 0..5).prop_map(move |edits| {
        let mut l: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for (i, v) in edits {
            let line = l[i].trim_start_matches("# ").to_string();
            if let Some((k, _)) = line.split_once(" = ") {
                l[i] = format!("{k} = {v}");
            } else {
                l[i] = line;
            }
        }
        l.join("\n").into_bytes()
    });
    let input = prop_oneof![
        6 => structured,
        2 => mutated(TEMPLATE.into()),
        1 => random_bytes()
    ];
    runner()
        .run(&input, |bytes| {
            if let Ok(cfg) = Config::parse(&String::from_utf8_lossy(&bytes)) {
                let _ = (cfg.warnings(), cfg.hub_plan());
                drop(Decoder::new(&cfg, Metrics::new()));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn connection_strings() {
    const KEY: &str = "S3cr3tKeyValue+/=";
    let part = prop_oneof![
        Just("Endpoint=sb://ns.servicebus.windows.net/".to_string()),
        Just("Endpoint=sb://ns.servicebus.windows.net:9093".to_string()),
        Just("Endpoint=sb://".to_string()),
        Just("Endpoint=https://x/".to_string()),
        Just("SharedAccessKeyName=RootManageSharedAccessKey".to_string()),
        Just(format!("SharedAccessKey={KEY}")),
        Just(format!("SharedAccessSignature=sr={KEY}")),
        Just("EntityPath=hub".to_string()),
        Just(KEY.to_string()),
        "\\PC{0,20}",
    ];
    let structured = (
        prop::collection::vec(part, 0..6),
        prop::sample::select(&[";", " ; ", ";;", "=", "\n"][..]),
    )
        .prop_map(|(parts, sep)| parts.join(sep));
    let input = prop_oneof![
        4 => structured,
        1 => random_bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ];
    runner()
        .run(&input, |s| {
            match ConnectionString::parse(&s) {
                Ok(cs) => {
                    let shown = format!("{cs:?}");
                    prop_assert!(!shown.contains(KEY), "{}", shown)
                }
                Err(e) => prop_assert!(!e.to_string().contains(KEY), "{}", e),
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// a network server's decoded object through mapping tables

/// A table using every feature: `rec_type`, `normalized_battery`, `context_id`, `[]` keys with
/// `context_base`, `type = "bool"`, `values`, `ignore`, `min`/`max`, `scale`, `health`, nested
/// keys and `[history]`.
const TABLE_A: &str = r#"rec_type = "io.microshare.environment.unpacked"
normalized_battery = "charge"
[fields]
temperature = { field = "temperature", unit = "°C", context_id = "3", min = -40, max = 125 }
humidity = { field = "humidity", unit = "%RH", context_id = "4", min = 0, max = 100 }
battery = { field = "charge", unit = "%", health = true, max = 100 }
"battery.mv" = { field = "voltage", unit = "V", scale = 0.001, health = true }
voc = { field = "voc", unit = "ppb", ignore = [65535, 3276.7] }
status = { field = "open", type = "bool", ignore = [255] }
door = { field = "open", values = { open = true, close = false, "1" = true, "0" = false } }
mode = { field = "mode", values = { "true" = "on", "false" = "off", "2.5" = 7, "-0" = "zero" } }
"externalTemperature2[]" = { field = "ext_temperature2", unit = "°C" }
"probe.t[]" = { field = "probe_temperature", unit = "°C", scale = 0.1, context_base = 4294967295, ignore = [32767], min = -100, max = 200 }
"flags[]" = { field = "flag", type = "bool", context_base = 1 }
"deep.a.b.c" = { field = "co2", unit = "ppm", min = 0, max = 1000000, context_id = "é 7" }
count = { field = "count" }
"x.y" = { field = "board", unit = "°C", health = true, scale = -2.5 }
[history]
path = "history"
time = "timestamp"
"#;

/// Another: no `rec_type` (chosen from the fields), the brand's battery, a history of `time`.
const TABLE_B: &str = r#"[fields]
t = { field = "temperature", unit = "°C", context_id = "1" }
leak = { field = "leak", values = { "yes" = true, "no" = false, "1.0" = true } }
pir = { field = "presence", type = "bool" }
"lux[]" = { field = "illuminance", unit = "lx", min = 0, context_base = 10 }
battery = { field = "battery", unit = "V", health = true, ignore = [0] }
"gps.lat" = { field = "lat", unit = "°", min = -90, max = 90 }
[history]
path = "log"
time = "time"
"#;

/// A Dragino-style text log (`columns`, `zone`) below the top of the object, as LHT65N's
/// decoder nests a retransmission reply's: `data.DATALOG`.
const TABLE_C: &str = r#"rec_type = "io.microshare.environment.unpacked"
[fields]
TempC_SHT = { field = "temperature", unit = "°C", min = -40, max = 125 }
Hum_SHT = { field = "humidity", unit = "%RH" }
TempC_DS = { field = "ext_temperature", unit = "°C", ignore = [327.67] }
[history]
path = "data.DATALOG"
time = "time"
columns = ["TempC_DS", "TempC_SHT", "Hum_SHT", "time"]
zone = "utc"
"#;

/// Devices of the mapped target, by the last byte of their DevEUI: `a.toml`, `b.toml`,
/// `c.toml`, none (the network server's object, all of it under `origin`), and one not in the
/// config.
const MAPPED: [(u8, Option<&str>); 5] = [
    (0xa1, Some(TABLE_A)),
    (0xb2, Some(TABLE_B)),
    (0xe5, Some(TABLE_C)),
    (0xc3, None),
    (0xd4, None),
];

/// Keys of the objects generated: the tables' keys, their parts, keys that look like them
/// (a literal `[]` or dot, another case, a space), the record's own keys and others.
const KEYS: &[&str] = &[
    "temperature",
    "humidity",
    "battery",
    "battery.mv",
    "mv",
    "voc",
    "status",
    "door",
    "mode",
    "externalTemperature2",
    "externalTemperature2[]",
    "probe",
    "probe.t",
    "t",
    "flags",
    "deep",
    "deep.a",
    "a",
    "b",
    "c",
    "a.b.c",
    "count",
    "x",
    "y",
    "leak",
    "pir",
    "lux",
    "lux[]",
    "gps",
    "lat",
    "history",
    "log",
    "data",
    "DATALOG",
    "data.DATALOG",
    "TempC_SHT",
    "Hum_SHT",
    "history[]",
    "history.temperature",
    "timestamp",
    "time",
    "normalized",
    "normalized_",
    "origin",
    "device_health",
    "Temperature",
    " temperature",
    "é",
    "",
];

fn key() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(KEYS).prop_map(String::from)
}

/// Odd JSON: [`scalar`]s and nested arrays (mixed) and objects of [`KEYS`].
fn odd_value() -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(3, 10, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..3)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A top-level field's value: [`odd_value`], or an array of numbers around the 64 items a
/// `[]` key reads and the 1,024 values carried, or nesting around the 64 levels carried.
fn top_value() -> impl Strategy<Value = Value> {
    let long = prop_oneof![3 => 62usize..67, 1 => 1020usize..1030]
        .prop_map(|n| Value::Array((0..n).map(|i| json!(i % 130)).collect()));
    let deep = (58usize..66, any::<bool>()).prop_map(|(n, arrays)| {
        (0..n).fold(json!(1), |v, _| {
            if arrays {
                json!([v])
            } else {
                json!({ "c": v })
            }
        })
    });
    prop_oneof![40 => odd_value(), 1 => long, 1 => deep]
}

/// A history entry's time: Unix seconds (whole, fractional, in milliseconds, negative, past
/// 9999, at its edge), RFC 3339 text (good, edge, garbage) or anything else.
fn odd_time() -> impl Strategy<Value = Value> + Clone {
    const TEXT: &[&str] = &[
        "2024-05-01T10:00:00.123Z",
        "2024-05-01T09:00:00Z",
        "2024-05-01T11:00:00+01:00",
        "2024-05-01T10:00:00.1234567Z",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59.9999Z",
        "2016-12-31T23:59:60Z",
        "2024-02-30T00:00:00Z",
        "2024-05-01 10:00:00Z",
        "2024-05-01T10:00:00",
        "1700000000",
    ];
    const NUMBER: &[f64] = &[
        1_700_000_000.0,
        1_714_557_600.0,
        1_700_000_000.000_4,
        1_700_000_000.000_5,
        -1.0,
        -0.0,
        0.0,
        1e300,
        1.7e12,
        253_402_300_799.999_4,
        253_402_300_799.999_6,
        999_999_999_999_999.9,
        1e15,
    ];
    prop_oneof![
        3 => (0u64..253_402_300_800).prop_map(Value::from),
        3 => (0.0f64..2e9).prop_map(Value::from),
        2 => (1.5e12f64..1.8e12).prop_map(|ms| Value::from(ms.round())),
        4 => prop::sample::select(NUMBER).prop_map(Value::from),
        4 => prop::sample::select(TEXT).prop_map(Value::from),
        2 => scalar(),
    ]
}

/// A part of a generated text log: its text, and where it is an entry the log's reader must
/// read as one (four values, the time last, not swallowed by an unclosed `[` before it), the
/// values it holds by table C's columns, as the generator wrote them.
#[derive(Debug, Clone)]
struct LogPart {
    text: String,
    values: Option<Vec<Value>>,
}

/// A generated text log and its parts, in their order.
type GeneratedLog = (String, Vec<LogPart>);

/// A Dragino-style text log: entries of four values, the date and time last, among entries of
/// another count, text that is no entry, odd separators and values; sometimes more good
/// entries than the 32 records they may make. Each value is written with what it is (a number,
/// else its text), and a part after an unclosed `[` is marked as no entry of its own, so that
/// the oracle needs no reading of the text.
fn datalog() -> impl Strategy<Value = GeneratedLog> {
    const VALUES: &[(&str, Option<f64>)] = &[
        ("21.5", Some(21.5)),
        ("-2.05", Some(-2.05)),
        ("51.2", Some(51.2)),
        ("48", Some(48.0)),
        ("327.67", Some(327.67)),
        ("0", Some(0.0)),
        ("-0", Some(0.0)),
        ("1e3", Some(1000.0)),
        ("1e400", None),
        ("HighTrue", None),
        ("undefined", None),
        ("NaN", None),
        ("", None),
        (" 7 ", Some(7.0)),
        ("\"x\"", None),
        ("é", None),
    ];
    const TIMES: &[(&str, Option<f64>)] = &[
        ("2024-05-01 09:50:00", None),
        ("2021-01-19 04:27:03", None),
        ("1970-01-01 00:00:00", None),
        ("1969-12-31 23:59:59", None),
        ("9999-12-31 23:59:59", None),
        ("2024-13-01 00:00:00", None),
        ("2024-02-30 00:00:00", None),
        ("2024-5-1 09:50:00", None),
        ("2024-05-01T09:50:00Z", None),
        ("2024-05-01T09:50:00", None),
        ("1714557000", Some(1_714_557_000.0)),
        ("1714557000000", Some(1_714_557_000_000.0)),
        ("-1", Some(-1.0)),
        ("", None),
    ];
    const SEPARATORS: &[&str] = &[",", "", " ", "\n", ", \n", ",,"];
    const JUNK: &[&str] = &[
        "[",
        "]",
        "[]",
        "[1,2",
        "x]",
        "[[1,2,3,4]]",
        "\u{1b}",
        "é,é",
        "  ",
    ];
    // A value as written, and as read: a number, else the text (spaces around it left out).
    let written = |(text, number): &(&str, Option<f64>)| {
        let read = number.map_or_else(|| json!(text.trim()), |x| json!(x));
        (text.to_string(), read)
    };
    let value = prop_oneof![
        4 => prop::sample::select(VALUES).prop_map(move |v| written(&v)),
        1 => (-5000i32..5000).prop_map(|x| {
            let v = f64::from(x) / 100.0;
            (format!("{v}"), json!(v))
        }),
    ];
    let time = prop_oneof![
        4 => prop::sample::select(TIMES).prop_map(move |t| written(&t)),
        2 => (0i64..253_402_300_800).prop_map(|secs| {
            let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let text = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            (text.clone(), json!(text))
        }),
    ];
    let good = (prop::collection::vec(value.clone(), 3), time).prop_map(|(mut v, t)| {
        v.push(t);
        let (texts, values): (Vec<String>, Vec<Value>) = v.into_iter().unzip();
        LogPart {
            text: format!("[{}]", texts.join(",")),
            values: Some(values),
        }
    });
    let junk = |text: String| LogPart { text, values: None };
    let piece = prop_oneof![
        8 => good.clone(),
        // Of another count than the four columns.
        1 => prop::collection::vec(value, 0..7)
            .prop_filter("four values are an entry", |v| v.len() != 4)
            .prop_map(move |v| {
                let texts: Vec<String> = v.into_iter().map(|(t, _)| t).collect();
                junk(format!("[{}]", texts.join(",")))
            }),
        1 => prop::sample::select(JUNK).prop_map(move |j| junk(j.into())),
        // No `]`: none of it can close an entry.
        1 => "[^\\]\\p{C}]{0,12}".prop_map(junk),
    ];
    let separator = prop::sample::select(SEPARATORS);
    prop_oneof![
        30 => prop::collection::vec((piece, separator.clone()), 0..6),
        1 => prop::collection::vec((good, separator), 30..40),
    ]
    .prop_map(|parts| {
        // After a `[` with no `]` after it, the next `]` closes what it opened: an entry up
        // to there is none of its own.
        let (mut text, mut open, mut out) = (String::new(), false, Vec::new());
        for (mut part, sep) in parts {
            if open {
                part.values = None;
            }
            open = match part.text.rfind(']') {
                Some(close) => part.text.rfind('[').is_some_and(|o| o > close),
                None => open || part.text.contains('['),
            };
            text += &part.text;
            text += sep;
            out.push(part);
        }
        (text, out)
    })
}

/// An uplink's decoded object, as text (keys may repeat: the last one counts): odd fields,
/// a history array under both tables' keys or a text log under table C's, then sometimes
/// readings a table takes as they are.
fn ns_object() -> impl Strategy<Value = (String, Option<GeneratedLog>)> {
    let entry = prop_oneof![
        8 => (
            prop::option::weighted(0.9, odd_time()),
            prop::option::weighted(0.9, odd_time()),
            prop::collection::vec((key(), odd_value()), 0..3),
            prop::option::of(prop_oneof![Just(("temperature", 21.5)), Just(("t", -3.25))]),
        )
            .prop_map(|(time_a, time_b, fields, anchor)| {
                let mut e: serde_json::Map<String, Value> = fields.into_iter().collect();
                // Each table's time key: the other table's is a field of the entry.
                for (k, t) in [("timestamp", time_a), ("time", time_b)] {
                    if let Some(t) = t {
                        e.insert(k.into(), t);
                    }
                }
                if let Some((k, v)) = anchor {
                    e.insert(k.into(), json!(v));
                }
                Value::Object(e)
            }),
        1 => scalar(),
        1 => odd_value(),
    ];
    // Mostly a few odd entries; sometimes more good ones than the 32 records they may make.
    let good = (0u64..253_402_300_800, 0u64..253_402_300_800)
        .prop_map(|(a, b)| json!({"timestamp": a, "time": b, "temperature": 21.5, "t": -3.25}));
    let entries = prop_oneof![
        60 => prop::collection::vec(entry.clone(), 0..4),
        1 => prop::collection::vec(prop_oneof![9 => good, 1 => entry], 30..40),
    ];
    let readings = prop::collection::vec(
        prop_oneof![
            Just(("temperature", json!(21.5))),
            Just(("humidity", json!(50))),
            Just(("battery", json!(99))),
            Just(("deep.a.b.c", json!(415))),
            Just(("count", json!(u64::MAX))),
            Just(("status", json!(2))),
            Just(("door", json!("close"))),
            Just(("mode", json!(-0.0))),
            Just(("mode", json!(true))),
            Just(("externalTemperature2", json!([10, -10, 0]))),
            Just(("externalTemperature2", json!(7))),
            Just(("t", json!(-3.25))),
            Just(("leak", json!(1))),
            Just(("pir", json!(false))),
            (0usize..70).prop_map(|n| ("lux", Value::Array((0..n).map(|i| json!(i)).collect()))),
        ],
        0..4,
    );
    // A text log where table C reads it, beside other fields there, or where it does not.
    let log = (
        datalog(),
        prop::collection::vec((key(), odd_value()), 0..2),
        any::<bool>(),
    )
        .prop_map(|(log, beside, nested)| {
            let text = json!(log.0);
            if nested {
                let mut data: serde_json::Map<String, Value> = beside.into_iter().collect();
                data.insert("DATALOG".into(), text);
                (("data".to_string(), Value::Object(data)), Some(log))
            } else {
                (("DATALOG".to_string(), text), None)
            }
        });
    (
        prop::collection::vec((key(), top_value()), 0..5),
        prop::option::of(entries),
        any::<bool>(),
        prop::option::of(log),
        readings,
    )
        .prop_map(|(fields, entries, under_a, log, readings)| {
            let mut parts: Vec<(String, Value)> = fields;
            if let Some(e) = entries {
                parts.push((if under_a { "history" } else { "log" }.into(), json!(e)));
            }
            let (log, generated) = log.unzip();
            parts.extend(log);
            parts.extend(readings.into_iter().map(|(k, v)| (k.to_string(), v)));
            let body: Vec<String> = parts
                .iter()
                .map(|(k, v)| format!("{}:{v}", json!(k)))
                .collect();
            (format!("{{{}}}", body.join(",")), generated.flatten())
        })
}

/// TTS normalized measurements: of the uplink's time, of an entry's, an hour before, garbage.
fn normalized() -> impl Strategy<Value = String> {
    let time = prop_oneof![
        Just(json!("2024-05-01T10:00:00.123Z")),
        Just(json!("2024-05-01T09:00:00Z")),
        Just(json!("2024-05-01T09:59:30Z")),
        odd_time(),
    ];
    let measurement = (
        prop::option::of(time),
        prop::option::of(scalar()),
        prop::option::of(scalar()),
        prop::collection::vec((key(), odd_value()), 0..2),
    )
        .prop_map(|(time, temp, battery, extra)| {
            let mut m: serde_json::Map<String, Value> = extra.into_iter().collect();
            if let Some(t) = time {
                m.insert("time".into(), t);
            }
            if let Some(t) = temp {
                m.insert("air".into(), json!({ "temperature": t }));
            }
            if let Some(b) = battery {
                m.insert("battery".into(), b);
            }
            Value::Object(m)
        })
        .boxed();
    prop_oneof![
        4 => prop::collection::vec(measurement.clone(), 0..4).prop_map(|m| json!(m).to_string()),
        1 => measurement.prop_map(|m| m.to_string()),
        1 => odd_value().prop_map(|v| v.to_string()),
    ]
}

const TTS_BRAND: &str = r#""version_ids":{"brand_id":"milesight-iot"},"#;

/// A ChirpStack v4 or TTS v3 uplink of one of [`MAPPED`]'s devices with a generated object,
/// and the text log generated at table C's path in it.
fn mapped_uplink() -> impl Strategy<Value = (UplinkFormat, Vec<u8>, Option<GeneratedLog>)> {
    let device = prop::sample::select(&MAPPED[..]).prop_map(|(eui, _)| dev_eui(eui.into()));
    let chirpstack = (device.clone(), ns_object()).prop_map(|(eui, (object, log))| {
        let doc = CHIRPSTACK
            .replace("58a0cb0000101234", &hex::encode(eui))
            .replacen('{', &format!("{{\"object\":{object},"), 1);
        (UplinkFormat::ChirpstackV4, doc.into_bytes(), log)
    });
    let tts = (
        device,
        prop::option::of(ns_object()),
        prop::option::of(normalized()),
        any::<bool>(),
    )
        .prop_map(|(eui, object, normalized, brand)| {
            let (object, log) = object.unzip();
            let mut extra = String::new();
            if let Some(o) = object {
                extra += &format!("\"decoded_payload\":{o},");
            }
            if let Some(n) = normalized {
                extra += &format!("\"normalized_payload\":{n},");
            }
            if brand {
                extra += TTS_BRAND;
            }
            let doc = TTS
                .replace("58A0CB0000101234", &hex::encode_upper(eui))
                .replace(
                    "\"uplink_message\":{",
                    &format!("\"uplink_message\":{{{extra}"),
                );
            (UplinkFormat::TtsV3, doc.into_bytes(), log.flatten())
        });
    prop_oneof![chirpstack, tts]
}

/// A ChirpStack uplink of table A's device with an object using each of its features.
const MAPPED_EXAMPLE: &str = r#"{"object":{"temperature":21.5,"battery":{"mv":3600},"status":1,"door":"open","mode":2.5,"externalTemperature2":[10,-10],"probe":{"t":[215,32767]},"flags":[1,0],"deep":{"a":{"b":{"c":415}}},"x":{"y":8},"history":[{"timestamp":1700000000,"temperature":20.5,"humidity":40},{"timestamp":"2023-11-14T22:00:00Z","humidity":41},{"timestamp":1.7e12,"humidity":42}]},"time":"2024-05-01T10:00:00.123Z","deviceInfo":{"deviceName":"th","devEui":"00000000000000a1"},"fCnt":42,"fPort":103,"data":"CIwuLf////8=","rxInfo":[{"gatewayId":"g","rssi":-79,"snr":9.5}],"txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}}}"#;

/// A ChirpStack uplink of table C's device: an LHT65N retransmission reply's text log.
const DATALOG_EXAMPLE: &str = r#"{"object":{"data":{"Node_type":"LHT65N","DATALOG":"[24.5,21.37,51.2,2024-05-01 09:50:00],[327.67,-2.05,48,2024-05-01 10:10:00],[HighTrue,21.5,47.9,2024-05-01 10:30:00],"},"retransmission_Status":"retransmission_Status"},"time":"2024-05-01T10:00:00.123Z","deviceInfo":{"deviceName":"lht","devEui":"00000000000000e5"},"fCnt":42,"fPort":3,"data":"CIwuLf////8=","rxInfo":[{"gatewayId":"g","rssi":-79,"snr":9.5}],"txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}}}"#;

/// The devices of [`MAPPED`] with their tables in a codec directory (kept while the decoder
/// lives), and the tables as the decoder loaded them.
fn mapped_decoder() -> (Decoder, Vec<Option<Table>>, tempfile::TempDir) {
    let dir = support::codec_files::tempdir();
    let mut text = format!(
        "[codecs]\ndir = {:?}\n[sink]\ntype = \"stdout\"\n",
        dir.path()
    );
    let mut tables = Vec::new();
    for (i, (eui, table)) in MAPPED.iter().enumerate() {
        tables.push(table.map(|t| Table::parse(t).unwrap()));
        if i == MAPPED.len() - 1 {
            continue;
        }
        text += &format!(
            "[[device]]\ndev_eui = \"{}\"\n",
            hex::encode(dev_eui((*eui).into()))
        );
        if let Some(t) = table {
            support::codec_files::write(dir.path().join(format!("t{i}.toml")), t);
            text += &format!("mapping = \"t{i}\"\n");
        }
    }
    let metrics = Metrics::new();
    let d = Decoder::new(&Config::parse(&text).unwrap(), metrics.clone());
    assert_eq!(metrics.problems("codec_file"), 0);
    (d, tables, dir)
}

#[test]
fn network_objects_through_mapping_tables() {
    let input = prop_oneof![
        6 => mapped_uplink(),
        2 => mutated(MAPPED_EXAMPLE.into()).prop_map(|b| (UplinkFormat::ChirpstackV4, b, None)),
        1 => mutated(DATALOG_EXAMPLE.into()).prop_map(|b| (UplinkFormat::ChirpstackV4, b, None)),
        1 => random_bytes().prop_map(|b| (UplinkFormat::TtsV3, b, None)),
    ];
    let (d, tables, _dir) = mapped_decoder();
    let d = RefCell::new(d);
    runner()
        .run(&input, |(format, bytes, log)| {
            let received = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let Ok(parsed) = source::parse(format, &bytes, received) else {
                return Ok(());
            };
            let Input::Uplink(up) = &parsed.value else {
                return Ok(());
            };
            let table = MAPPED
                .iter()
                .position(|(eui, _)| up.dev_eui.0 == dev_eui((*eui).into()))
                .and_then(|i| tables[i].as_ref());
            let records = d.borrow_mut().decode(&parsed.value);
            object_records(up, table, log.as_ref(), &records)
        })
        .unwrap();
}

/// What the docs promise of the records of an uplink carrying a decoded object, mapped by
/// `table` (docs/codecs.md, "Decoded objects"; docs/records.md, "history records"); `log` the
/// text log generated at table C's path, if any.
fn object_records(
    up: &Uplink,
    table: Option<&Table>,
    log: Option<&GeneratedLog>,
    records: &[Record],
) -> Result<(), TestCaseError> {
    // One live record and at most 32 of their own time.
    prop_assert!(
        (1..=33).contains(&records.len()),
        "{} records",
        records.len()
    );
    let bodies = records.iter().map(check).collect::<Result<Vec<_>, _>>()?;
    let ids: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    prop_assert_eq!(ids.len(), records.len(), "ids repeat");
    let ns = &up.ns;
    if ns.oversized.is_some() || ns.unreadable.is_some() {
        // Not carried: packed, with the reason.
        prop_assert_eq!(records.len(), 1);
        prop_assert!(bodies[0]["obj"]["data"]["error"].is_string());
        return Ok(());
    }
    if ns.is_empty() {
        return Ok(());
    }
    if let Some(r) = table.and_then(|t| t.rec_type.as_deref()) {
        prop_assert!(records.iter().all(|rec| rec.rec_type == r));
    }
    let live = records
        .iter()
        .position(|r| r.id == hubgate::record::stable_id(up));
    prop_assert!(live.is_none_or(|i| i == 0), "the live record comes first");
    let moments = &bodies[usize::from(live.is_some())..];
    let object = ns.object.as_ref();
    let history = table.and_then(|t| t.history.as_ref());
    let expected = match (object, history) {
        (Some(o), Some(h)) => history_made(o, h, log),
        _ => Some((Vec::new(), None)),
    };
    // A text log the generator did not write (a mutated one): only the bounds above.
    let Some((made, left)) = expected else {
        return Ok(());
    };
    // The entries' records first, in their order, at their times; then the normalized
    // measurements' of their own time.
    prop_assert!(moments.len() >= made.len(), "{} records", records.len());
    if ns.normalized.is_empty() {
        prop_assert_eq!(moments.len(), made.len());
    }
    for ((ms, entry), rec) in made.iter().zip(moments) {
        prop_assert_eq!(rec["obj"]["tstamp"].as_u64(), Some(*ms));
        let time = rec["obj"]["data"]["time"].as_str().unwrap_or_default();
        let shown = time::OffsetDateTime::parse(time, &Rfc3339).map(|t| t.unix_timestamp_nanos());
        prop_assert_eq!(shown, Ok(i128::from(*ms) * 1_000_000));
        let (table, h) = (table.unwrap(), history.unwrap());
        readings(entry, table, &rec["obj"]["data"], Some(&h.time))?;
    }
    let Some(object) = object else {
        return Ok(());
    };
    let path = history.map(|h| h.path.as_str());
    let keys: Vec<&str> = path.iter().flat_map(|p| p.split('.')).collect();
    let Some(live) = live else {
        // Only a frame of history alone, every entry a record, has no live record.
        prop_assert!(
            history_alone(object, &keys) && left.is_none(),
            "no live record of {:?}",
            object
        );
        return Ok(());
    };
    let data = &bodies[live]["obj"]["data"];
    // What maps nowhere stays under origin as it is, beside the history on its way too; so do
    // the entries that make no record.
    kept_unmapped(object, table, &[], &data["origin"])?;
    if let Some(h) = history {
        let mut kept = value_at(&data["origin"], &keys).cloned();
        // A text log's: what its parts left, its separators aside (see [`history_made`]).
        if let (Some(_), Some(Value::String(text))) = (&h.columns, &kept) {
            kept = Some(json!(bare(text))).filter(|t| t != "");
        }
        prop_assert!(
            kept.as_ref()
                .zip(left.as_ref())
                .map_or(kept.is_none() && left.is_none(), |(a, b)| same(a, b)),
            "{:?} under origin, {:?} left",
            kept,
            left
        );
    }
    if let Some(t) = table {
        readings(object, t, data, path)?;
    }
    Ok(())
}

/// A JSON object.
type Obj = serde_json::Map<String, Value>;

/// `a` is `b`, a number of either as the same f64 (a whole float is written as an integer).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// The value at the dotted `keys` of `v` (none for no keys), each but the last an object's.
fn value_at<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    let inner = v.as_object()?.get(*first)?;
    if rest.is_empty() {
        Some(inner)
    } else {
        value_at(inner, rest)
    }
}

/// Whether `object` holds nothing but the history at `keys` (and the objects on its way).
fn history_alone(object: &Obj, keys: &[&str]) -> bool {
    let Some((first, rest)) = keys.split_first() else {
        return false;
    };
    object.len() == 1
        && object.get(*first).is_some_and(|v| {
            rest.is_empty() || v.as_object().is_some_and(|o| history_alone(o, rest))
        })
}

/// The records a history makes (time in ms, entry) and what it leaves under `origin`.
type Made = (Vec<(u64, Obj)>, Option<Value>);

/// The times (ms) of the entries of `object`'s history that make records, at most 32 in the
/// array's order, with the entries; and the entries that stay under `origin` (those that are
/// no object, hold nothing but their time, have no time read or come past the 32), or the
/// history whole if it is no array. With `columns`, the history is a text log: known only if
/// it is `log`, the one generated, whose entries are the parts it marked so; those left are
/// given as their text with the separators (commas, white space) left out, as what stays under
/// `origin` is its pieces as written joined by commas, however the text between entries is
/// cut; a history that is no text stays whole.
fn history_made(object: &Obj, h: &HistoryTable, log: Option<&GeneratedLog>) -> Option<Made> {
    let keys: Vec<&str> = h.path.split('.').collect();
    let (last, outer) = keys.split_last()?;
    let holder = outer.iter().try_fold(object, |o, k| o.get(*k)?.as_object());
    let Some(v) = holder.and_then(|o| o.get(*last)) else {
        return Some((Vec::new(), None));
    };
    let items: Vec<(Option<Obj>, Value)> = match (v, &h.columns, log) {
        (Value::Array(list), None, _) => list
            .iter()
            .map(|e| (e.as_object().cloned(), e.clone()))
            .collect(),
        (Value::String(text), Some(columns), Some((generated, parts))) if text == generated => {
            parts
                .iter()
                .map(|p| {
                    let entry = p
                        .values
                        .as_ref()
                        .map(|v| columns.iter().cloned().zip(v.iter().cloned()).collect());
                    (entry, json!(bare(&p.text)))
                })
                .collect()
        }
        (Value::String(_), Some(_), _) => return None,
        _ => return Some((Vec::new(), Some(v.clone()))),
    };
    let (mut made, mut left) = (Vec::new(), Vec::new());
    for (entry, as_written) in items {
        let timed = entry
            .filter(|o| o.len() > 1)
            .and_then(|o| Some((entry_ms(o.get(&h.time)?, h.zone.is_some())?, o)));
        match timed {
            Some(m) if made.len() < 32 => made.push(m),
            _ => left.push(as_written),
        }
    }
    let left = match h.columns {
        None => (!left.is_empty()).then_some(Value::Array(left)),
        Some(_) => {
            let text: String = left.iter().filter_map(Value::as_str).collect();
            (!text.is_empty()).then(|| json!(text))
        }
    };
    Some((made, left))
}

/// `text` without the characters that separate a text log's entries (commas, white space).
fn bare(text: &str) -> String {
    text.chars()
        .filter(|c| *c != ',' && !c.is_whitespace())
        .collect()
}

/// An entry's time in ms, as docs/codecs.md reads it: Unix seconds, a fraction rounded to the
/// microsecond and then cut to the millisecond (rounded to the millisecond from 2^33 s, where
/// f64 holds no microseconds), or RFC 3339 text, or in a text log of UTC (`utc`) a date and
/// time `2024-05-01 09:50:00`; none before 1970 or past 9999.
fn entry_ms(v: &Value, utc: bool) -> Option<u64> {
    let latest = hubgate::uplink::LATEST.as_millis();
    match v {
        Value::Number(n) => {
            let secs = n.as_f64().filter(|x| (0.0..1e15).contains(x))?;
            let fraction = secs - secs.trunc();
            let ms = if secs < 2f64.powi(33) {
                (fraction * 1e6).round() as u64 / 1000
            } else {
                (fraction * 1e3).round() as u64
            };
            let ms = secs.trunc() as u64 * 1000 + ms;
            (u128::from(ms) <= latest).then_some(ms)
        }
        Value::String(s) => {
            let wall =
                time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
            let ns = time::OffsetDateTime::parse(s, &Rfc3339)
                .ok()
                .or_else(|| {
                    let t = time::PrimitiveDateTime::parse(s, &wall).ok()?;
                    utc.then(|| t.assume_utc())
                })?
                .unix_timestamp_nanos();
            (0..=latest as i128 * 1_000_000)
                .contains(&ns)
                .then_some((ns / 1_000_000) as u64)
        }
        _ => None,
    }
}

/// Each key of `object` (at the dotted keys `at` of the uplink's object) that no key of
/// `table` reads, itself or anything under it, is kept as it is in `origin` (the live record's
/// at `at`); along the history's path, the keys beside it, level by level.
fn kept_unmapped(
    object: &Obj,
    table: Option<&Table>,
    at: &[&str],
    origin: &Value,
) -> Result<(), TestCaseError> {
    let history: Vec<&str> = table
        .and_then(|t| t.history.as_ref())
        .map_or_else(Vec::new, |h| h.path.split('.').collect());
    for (k, v) in object {
        let keys: Vec<&str> = at.iter().copied().chain([k.as_str()]).collect();
        let key = keys.join(".");
        let read = |f: &String| {
            *f == key
                || f.strip_suffix("[]") == Some(key.as_str())
                || f.strip_prefix(&key).is_some_and(|r| r.starts_with('.'))
        };
        if table.is_some_and(|t| t.fields.keys().any(read)) || keys == history {
            continue;
        }
        let kept = &origin[k];
        match v.as_object() {
            Some(inner) if history.starts_with(&keys) => {
                kept_unmapped(inner, table, &keys, kept)?;
            }
            _ => prop_assert!(same(kept, v), "{:?} not kept: {} for {}", key, kept, v),
        }
    }
    Ok(())
}

/// The readings `table` takes from `obj`'s own keys (not `skip`) are in `data`: a number of a
/// key without `scale` or `ignore` within `min` and `max`, a boolean of a field without a
/// unit, `type = "bool"`'s, `values`'; each of the first 64 items of a `[]` key's array,
/// `context_id` its index from `context_base`; such an array empty or longer stays whole under
/// `origin`.
fn readings(
    obj: &Obj,
    table: &Table,
    data: &Value,
    skip: Option<&str>,
) -> Result<(), TestCaseError> {
    for (k, v) in obj {
        if Some(k.as_str()) == skip || v.is_object() || k.ends_with("[]") {
            continue;
        }
        if let Some(t) = table.fields.get(k) {
            if let Some(value) = expected(t, v) {
                has_reading(data, t, t.context_id.as_deref(), &value, k)?;
            }
        } else if let Some(t) = table.fields.get(&format!("{k}[]")) {
            let items = v.as_array().map_or(std::slice::from_ref(v), Vec::as_slice);
            let mut all = true;
            for (i, item) in items.iter().take(64).enumerate() {
                let context = (u64::from(t.context_base.unwrap_or(0)) + i as u64).to_string();
                match expected(t, item) {
                    Some(value) => has_reading(data, t, Some(&context), &value, k)?,
                    None => all = false,
                }
            }
            if items.is_empty() || items.len() > 64 {
                prop_assert!(same(&data["origin"][k], v), "{:?} not kept whole", k);
            } else if all {
                prop_assert!(data["origin"].get(k).is_none(), "{:?} read and kept", k);
            }
        }
    }
    Ok(())
}

/// The reading `t` takes from `v`, where it is sure to take one.
fn expected(t: &Target, v: &Value) -> Option<Value> {
    if let Some(values) = &t.values {
        return match v {
            Value::String(s) => values.get(s).cloned(),
            Value::Bool(b) => values.get(&b.to_string()).cloned(),
            Value::Number(n) => values
                .iter()
                .find(|(k, _)| k.parse::<f64>().ok() == n.as_f64())
                .map(|(_, r)| r.clone()),
            _ => None,
        };
    }
    match v {
        Value::Bool(b) if t.unit.is_none() => Some(json!(b)),
        Value::Number(n) if t.read_as == ReadAs::Bool => {
            let x = n.as_f64()?;
            (!t.ignore.contains(&x)).then_some(json!(x != 0.0))
        }
        Value::Number(n) if t.scale == 1.0 && t.ignore.is_empty() => {
            let x = n.as_f64()?;
            let within = t.min.is_none_or(|m| x >= m) && t.max.is_none_or(|m| x <= m);
            within.then(|| v.clone())
        }
        _ => None,
    }
}

/// Whether `data` (or its `device_health`, for a `health` field) holds the reading `value` of
/// `t` with `context_id`.
fn has_reading(
    data: &Value,
    t: &Target,
    context_id: Option<&str>,
    value: &Value,
    key: &str,
) -> Result<(), TestCaseError> {
    let at = if t.health {
        &data["device_health"]
    } else {
        data
    };
    let found = at[&t.field].as_array().is_some_and(|list| {
        list.iter().any(|r| {
            r.get("context_id").and_then(Value::as_str) == context_id
                && r.get("unit").and_then(Value::as_str) == t.unit.as_deref()
                && same(&r["value"], value)
        })
    });
    prop_assert!(
        found,
        "{:?} {} (context_id {:?}) not read into {}: {}",
        key,
        value,
        context_id,
        t.field,
        data
    );
    Ok(())
}

/// Every input that made a target fail, kept: each must go through cleanly for good.
#[test]
fn regressions() {
    // A time in year 10000 UTC panicked in record building (and aborted the process).
    const LATE: &str = "9999-12-31T23:59:59-23:59";
    let received = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (format, doc, time) in [
        (
            UplinkFormat::ChirpstackV4,
            CHIRPSTACK,
            "2024-05-01T10:00:00.123Z",
        ),
        (UplinkFormat::TtsV3, TTS, "2024-05-01T10:00:00.123Z"),
        (
            UplinkFormat::ChirpstackGateway,
            GATEWAY,
            "2024-05-01T10:00:00.250Z",
        ),
    ] {
        // Kept with the receive time, and the record built from it is well formed.
        let late = doc.replace(time, LATE);
        let parsed = source::parse(format, late.as_bytes(), received).unwrap();
        assert_eq!(parsed.bad_time.map(|e| e.kind()), Some("bad_time"));
        for rec in decoder().decode(&parsed.value) {
            check(&rec).unwrap();
            assert!(rec.body.contains("\"time\":\"2023-11-14T22:13:20.000Z\""));
        }
    }
    // So does GWMP, for the MIC-checked frame.
    let mut c = lorawan::creator::DataPayloadCreator::new();
    c.set_uplink(true)
        .set_dev_addr(&dev_addr(0).to_le_bytes())
        .set_fcnt(1)
        .set_f_port(103);
    let keys = (
        lorawan::keys::NewSKey::from(NWK),
        lorawan::keys::AppSKey::from(APP),
    );
    let phy = c
        .build(
            &[0x08, 0x8c, 0x2e, 0x2d, 0xff, 0xff, 0xff, 0xff],
            &[],
            &keys.0,
            &keys.1,
        )
        .unwrap()
        .to_vec();
    let json = RXPK
        .replace("2024-05-01T10:00:00.123456Z", LATE)
        .replace("QNobASY=", &b64(&phy));
    let mut d = vec![2, 0, 1, 0, 0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1];
    d.extend_from_slice(json.as_bytes());
    let cfg = UdpSourceConfig {
        listen: ([127, 0, 0, 1], 1700).into(),
        gateway_status: false,
        gateways: Vec::new(),
    };
    let metrics = Metrics::new();
    let got = udp::handle(&d, ([127, 0, 0, 1], 5000).into(), &cfg, &metrics, received);
    assert_eq!(metrics.problems("bad_time"), 1);
    let rec = decoder().decode(&got.inputs[0]).remove(0);
    check(&rec).unwrap();
    assert!(
        rec.body.contains("\"time\":\"2023-11-14T22:13:20.000Z\""),
        "{}",
        rec.body
    );

    // A key nested under an empty key was read as a top-level one: `{"": {"pir": false}}` gave
    // table B's `pir` reading (path "pir", not ".pir") instead of staying under origin.
    let (mut mapped, _, _dir) = mapped_decoder();
    let doc = CHIRPSTACK
        .replace("58a0cb0000101234", "00000000000000b2")
        .replacen('{', r#"{"object":{"":{"pir":false},"t":21.5},"#, 1);
    let parsed = source::parse(UplinkFormat::ChirpstackV4, doc.as_bytes(), received).unwrap();
    let rec = mapped.decode(&parsed.value).remove(0);
    let data = check(&rec).unwrap()["obj"]["data"].take();
    assert_eq!(
        data["temperature"],
        json!([{"context_id": "1", "unit": "°C", "value": 21.5}])
    );
    assert_eq!(data["origin"], json!({"": {"pir": false}}), "{data}");
    assert!(data.get("presence").is_none(), "{data}");
}
