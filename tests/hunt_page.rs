//! s34 hunt (status page and its HTTP server): red proofs of what the page, its JSON and its
//! listener get wrong. Each test fails on the code as it is and passes once its finding is
//! fixed (/work/notes/reviews/s34-hunt-page.md).

mod support;

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;
use support::agent::{Agent, WAIT};
use support::free_udp_port;

/// A UDP source (keeps the agent running), a stdout sink, the buffer in `dir`, and `more`.
fn quiet_config(dir: &Path, more: &str) -> String {
    format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n{more}\n[sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
        free_udp_port()
    )
}

/// An uplink of `dev_eui` named `name` with frame counter `fcnt`, heard at `time`.
fn uplink(dev_eui: [u8; 8], name: &str, fcnt: u32, time: SystemTime) -> hubgate::uplink::Uplink {
    hubgate::uplink::Uplink {
        dev_eui: hubgate::ids::DevEui(dev_eui),
        dev_addr: None,
        device_name: Some(name.into()),
        fport: Some(1),
        fcnt: Some(fcnt),
        payload: vec![],
        time,
        radio: hubgate::uplink::Radio::default(),
        ns: hubgate::uplink::NsDecoded::default(),
    }
}

/// The status of an agent with a UDP source and a stdout sink, and its metrics.
fn quiet_status() -> (
    std::sync::Arc<hubgate::metrics::Metrics>,
    hubgate::status::Status,
) {
    let cfg =
        hubgate::config::Config::parse("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n")
            .unwrap();
    let metrics = hubgate::metrics::Metrics::new();
    let facts = hubgate::status::Facts::of(&cfg);
    (
        metrics.clone(),
        hubgate::status::Status::new(metrics, facts),
    )
}

fn json(agent: &Agent, path: &str) -> Value {
    let (code, head, body) = agent
        .request(&format!("GET {path} HTTP/1.0\r\n\r\n"))
        .unwrap_or_else(|| panic!("no answer for {path}:\n{}", agent.logs()));
    assert_eq!(code, 200, "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Two sources of one kind (two replay files here; two MQTT brokers or two UDP listeners
/// alike) each have a row on the overview and in `/api/status`, but the frame counts are
/// kept by kind (`received` is labelled `mqtt`, `udp`, ...): every row of that kind shows the
/// sum of all of them. Here one file holds the demo's 21 uplinks and the other none; both
/// rows say 21.
#[test]
fn hunt_two_sources_of_one_kind_each_count_their_own_frames() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let replays = format!(
        "[[source]]\ntype = \"replay\"\npath = \"{root}/config/demo-uplinks.jsonl\"\n\
         [[source]]\ntype = \"replay\"\npath = \"{}\"\n",
        empty.display()
    );
    let agent = Agent::start_with_stdout(dir.path(), &quiet_config(dir.path(), &replays));
    agent.wait_metric("hubgate_received_total{source=\"replay\"}", WAIT, |v| {
        v == 21
    });
    let status = json(&agent, "/api/status");
    let rows: Vec<(String, String, u64)> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["at"].as_str().unwrap().to_string(),
                s["frames_total"].as_u64().unwrap(),
            )
        })
        .collect();
    let demo = rows
        .iter()
        .find(|r| r.1.ends_with("demo-uplinks.jsonl"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    let idle = rows
        .iter()
        .find(|r| r.1.ends_with("empty.jsonl"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(demo.2, 21, "{rows:?}");
    assert_eq!(
        idle.2, 0,
        "the empty file's row counts the other file's frames: {rows:?}"
    );
}

/// docs/operations.md: "a devices page shows 100 at a time, so every page stays under
/// 100 KB", and `/api/devices` "at most 1,000: an answer stays under 0.8 MB". A row keeps
/// up to 16 readings (`READINGS_MAX`), but both bounds were measured with six. A Cayenne LPP
/// multi-sensor (temperature, humidity, pressure, light, accelerometer, gyrometer, GPS, three
/// analog inputs) has 16: one page of 100 of them, decoded by the real codec, weighs more
/// than 100 KB, and 1,000 in the API more than 0.8 MB.
#[test]
fn hunt_pages_stay_within_the_documented_bounds_with_sixteen_readings_a_device() {
    use hubgate::codec::Codec;
    use hubgate::metrics::devices::Outcome;
    use hubgate::status::View;
    use hubgate::uplink::Radio;

    // ch1 temperature, ch2 humidity, ch3 barometer, ch4 illuminance, ch5 accelerometer (3),
    // ch6 gyrometer (3), ch7 GPS (3), ch8 to ch10 analog inputs: 16 readings.
    let payload = hex::decode(concat!(
        "0167ff38",
        "02688f",
        "0373279f",
        "04650190",
        "0571fc18000a03e8",
        "06860064ff9c0000",
        "07880627e8ff8ea90004b0",
        "080201f4",
        "0902fe0c",
        "0a020064",
    ))
    .unwrap();
    let codec = Codec::from_id("cayenne-lpp").unwrap();
    let decoded = codec.decode(Some(2), &payload).unwrap();
    assert_eq!(decoded.readings.len() + decoded.health.len(), 16);

    let (metrics, status) = quiet_status();
    let now = hubgate::metrics::Moment::now();
    let tags = ["Building 1".to_string(), "Floor 2".to_string()];
    for i in 0..1_000u32 {
        let [_, x, y, z] = i.to_be_bytes();
        let name = format!("lab-multisensor-{i}");
        let mut up = uplink([0xa8, 0x40, 0x41, 0, x, y, z, 1], &name, i, now.wall);
        up.payload = payload.clone();
        up.radio = Radio {
            rssi: Some(-97),
            snr: Some(-3.5),
            spreading_factor: Some(9),
            ..Radio::default()
        };
        let outcome = Outcome::Decoded {
            codec: codec.id(),
            rec_type: decoded.rec_type,
            readings: &decoded.readings,
            health: &decoded.health,
        };
        metrics.devices.heard(&up, &tags, outcome, now);
    }
    let (_, page) = status.render(View::Devices, None, now);
    let (_, api) = status.render(View::DevicesJson, Some("limit=1000"), now);
    let all: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(all["devices"].as_array().unwrap().len(), 1000);
    assert!(
        page.len() < 100 * 1024 && api.len() < 800_000,
        "devices page {} bytes (documented: under 100 KB), /api/devices?limit=1000 {} bytes (documented: under 0.8 MB)",
        page.len(),
        api.len()
    );
}
