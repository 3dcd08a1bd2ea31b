//! Whole-path fuzzing: for every input format, bytes as they arrive go through the source's
//! parser, the decode stage (LoRaWAN MIC check and decryption, the device's codec) and
//! record building, to the finished record JSON — nothing may panic, and every record must be
//! well-formed. Config TOML and the Event Hubs connection string get the same treatment.
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
use hubgate::metrics::Metrics;
use hubgate::record::Record;
use hubgate::source::{self, udp, Input};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestRunner};
use serde_json::{json, Value};
use support::frames::{line, with_crc};
use support::stuffing::{cobs, slip};

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
fn check(rec: &Record) -> Result<(), TestCaseError> {
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
    Ok(())
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
}
