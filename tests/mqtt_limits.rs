//! Oversized MQTT messages against a real mosquitto: one message over `max_message` (or over
//! rumqttc's old 256 KiB packet limit) is acknowledged, counted and kept as a dead letter, and
//! the uplinks behind it arrive; after a restart it is not delivered again.

mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use sha2::Digest;

use support::agent::{
    changed, chirpstack_uplink, publish_all, tbhh100, uplink_topic, Agent, TH, WAIT,
};
use support::{mosquitto_pub, Mosquitto};

fn config(dir: &Path, mqtt: &Mosquitto) -> String {
    format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"hubgate-limits\"\nreconnect_max = \"1s\"\n[[device]]\ndev_eui = \"{TH}\"\ncodec = \"browan-tbhh100\"\n[sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
        mqtt.port()
    )
}

/// Publish `size` bytes with QoS 1 through mosquitto_pub (waits for the broker's PUBACK).
fn publish_big(port: u16, topic: &str, size: usize) {
    mosquitto_pub(port, 1, topic, &vec![b'{'; size]);
}

fn uplinks(fcnts: std::ops::Range<u32>) -> Vec<(String, String)> {
    fcnts
        .map(|i| {
            let body = chirpstack_uplink(TH, i, 103, &tbhh100(20, 40));
            (uplink_topic(TH), body)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_dead_lettered_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut agent = Agent::start_with_stdout(dir.path(), &config(dir.path(), &mqtt));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    // 1 MiB: over the default max_message (256 KiB) and over rumqttc's old packet limit,
    // which dropped the connection at every redelivery.
    publish_big(mqtt.port(), &uplink_topic(TH), 1024 * 1024);
    publish_all(mqtt.port(), &uplinks(1..6)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 5);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"mqtt_oversized\"}"),
        1
    );
    agent.wait_metric("hubgate_dead_lettered_total", WAIT, |v| v == 1);
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 6);
    let fcnts: Vec<u64> = agent
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["obj"]["data"]["meta"]["iot"]["fcnt_up"].as_u64().unwrap())
        .collect();
    assert_eq!(fcnts, [1, 2, 3, 4, 5]);
    let log = agent.full_log();
    assert_eq!(log.matches("mqtt: connected to").count(), 1, "{log}");
    assert!(log.contains("kept as a dead letter"), "{log}");

    // Acknowledged for good: a new process on the same session gets only what is new.
    agent.terminate(WAIT);
    agent.start_again();
    agent.wait_metric("hubgate_mqtt_connected", WAIT, |v| v == 1);
    publish_all(mqtt.port(), &uplinks(6..7)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"mqtt_oversized\"}"),
        0
    );
    agent.terminate(WAIT);
    let stats = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["buffer", "stats", "-c"])
        .arg(dir.path().join("hubgate.toml"))
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.contains("dead letters: 1"), "{stats}");
    let lines = support::dead_letters(&dir.path().join("hubgate.toml"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let d = &lines[0];
    assert_eq!(d["recType"], "hubgate.dead_letter");
    assert_eq!(
        (d["source"].as_str(), d["size"].as_u64()),
        (Some("mqtt"), Some(1 << 20))
    );
    assert_eq!(d["topic"].as_str(), Some(uplink_topic(TH).as_str()));
    let sha = sha2::Sha256::digest(vec![b'{'; 1 << 20]);
    assert_eq!(d["sha256"].as_str(), Some(hex::encode(sha).as_str()));
    let head = base64::engine::general_purpose::STANDARD
        .decode(d["head_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(head, vec![b'{'; 256]);
}

/// A lower `max_message` applies as configured; a message right at it is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let body = changed(
        &config(dir.path(), &mqtt),
        &[(
            "reconnect_max = \"1s\"\n",
            "reconnect_max = \"1s\"\nmax_message = \"2KiB\"\n",
        )],
    );
    let agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    publish_big(mqtt.port(), &uplink_topic(TH), 2049);
    publish_big(mqtt.port(), &uplink_topic(TH), 2048);
    publish_all(mqtt.port(), &uplinks(1..3)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 2);
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 4);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"mqtt_oversized\"}"),
        1
    );
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"malformed_json\"}"),
        1
    );
}

/// A message over what rumqttc can read at all (16 MiB) cannot be acknowledged: the broker
/// sends it again at every connect. The agent says so in one line with the fix, counts each
/// attempt, and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_read_limit_is_named_with_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let agent = Agent::start(dir.path(), &config(dir.path(), &mqtt));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let size = hubgate::source::mqtt::READ_LIMIT + 1;
    publish_big(mqtt.port(), &uplink_topic(TH), size);
    agent.wait_metric(
        "hubgate_problems_total{kind=\"mqtt_unreadable\"}",
        WAIT,
        |v| v >= 2,
    );
    let log = agent.wait_log("cap message size at the broker", 1, WAIT);
    assert!(
        log.contains(&format!(
            "delivers a message of {}",
            size + uplink_topic(TH).len() + 4
        )),
        "{log}"
    );
    assert_eq!(agent.metric("hubgate_acked_total"), 0);
}
