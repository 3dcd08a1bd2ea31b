//! How many QoS 1 messages a broker leaves unacknowledged with hubgate during a fast outage
//! fill (the sink down, every record spilled and acknowledged once its flush is done): a
//! measurement, run by hand (`cargo test --test mqtt_acks -- --ignored --nocapture`).

mod support;

use support::agent::{
    chirpstack_uplink, publish_all, tbhh100, three_devices, uplink_topic, Agent, TH, WAIT,
};
use support::{free_port, Mosquitto};

/// The benchmark's broker settings (`max_inflight_messages 1000`, no queue limit) and 20,000
/// messages published as fast as the broker takes them. mosquitto 2.0.11 keeps to
/// `max_inflight_messages` only until hubgate's first PUBACK: each PUBACK, in order, sends up
/// to that many queued messages more, so nearly the whole fill is unacknowledged at once (one
/// run: 19,981 of 20,000, all sent after 19 PUBACKs; the same whether hubgate's PUBACKs go
/// out as they are released or trail): they wait in the socket buffers and hubgate's
/// pipeline.
#[test]
#[ignore = "a measurement: prints the broker's largest unacknowledged window"]
fn unacknowledged_window_of_a_fast_fill() {
    const N: usize = 20_000;
    const INFLIGHT: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start_with(
        dir.path(),
        &format!("log_type all\nmax_inflight_messages {INFLIGHT}\n"),
    );
    // A broker nobody listens on: every record spills.
    let body = format!(
        "{}[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{}\"\nsecurity_protocol = \"plaintext\"\ninsecure = true\nprovisioning = \"auto\"\n",
        three_devices(&dir.path().join("buffer"), &mqtt, ""),
        free_port()
    );
    let agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let messages: Vec<(String, String)> = (0..N as u32)
        .map(|i| {
            (
                uplink_topic(TH),
                chirpstack_uplink(TH, i, 103, &tbhh100(21, 40)),
            )
        })
        .collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(publish_all(mqtt.port(), &messages));
    mqtt.wait_pubacks("hubgate-test", N);
    let log = std::fs::read_to_string(mqtt.log_path()).unwrap();
    let (mut sent, mut acked, mut window) = (0, 0, 0);
    for line in log.lines() {
        if line.contains("Sending PUBLISH to hubgate-test ") {
            sent += 1;
        } else if line.contains("Received PUBACK from hubgate-test ") {
            acked += 1;
        }
        window = window.max(sent - acked);
    }
    assert_eq!(
        (sent, acked),
        (N, N),
        "each message sent and acknowledged once"
    );
    eprintln!(
        "{N} messages, max_inflight_messages {INFLIGHT}: at most {window} unacknowledged at the broker"
    );
}
