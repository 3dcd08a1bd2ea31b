//! The metrics endpoint and the status line of a real pipeline: mosquitto -> hubgate (child
//! process) -> tansu over SASL_SSL; then the Kafka broker is stopped for real.

mod support;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use support::agent::{
    chirpstack_uplink, config_with, publish_all, topics, uplink_topic, uplinks, uplinks_at, Agent,
    ENV, MOTION, OPENCLOSE, PACKED, TH, WAIT,
};
use support::{Kafka, Mosquitto};

const KEY: &str = "bWV0cmljcy10ZXN0LWtleQ==";

fn config(dir: &Path, mqtt: &Mosquitto, kafka: &Kafka) -> String {
    // Undeliverable records fail after 5 s instead of 30, so the outage shows sooner.
    let text = config_with(&dir.join("buffer"), mqtt, kafka, KEY, "", "");
    let timeout = "\"message.timeout.ms\" = \"30000\"";
    assert!(text.contains(timeout), "config_with changed: {text}");
    text.replace(timeout, "\"message.timeout.ms\" = \"5000\"")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_metrics_and_status_line_follow_the_pipeline_and_the_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let started = now();
    let agent = Agent::start_with_metrics(
        dir.path(),
        &config(dir.path(), &mqtt, &kafka),
        "status_interval = \"1s\"",
    );
    let broker = format!("{{broker=\"127.0.0.1:{}\"}}", mqtt.port());
    agent.wait_metric(&format!("hubgate_mqtt_subscribed{broker}"), WAIT, |v| {
        v == 1
    });
    agent.wait_metric(&format!("hubgate_mqtt_connected{broker}"), WAIT, |v| v == 1);
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 1);

    // 5 uplinks per device, and one TBHH100 payload too short for its codec (sent packed).
    let n = 5;
    let mut messages = uplinks(n);
    messages.push((uplink_topic(TH), chirpstack_uplink(TH, 100, 103, &[0x08])));
    publish_all(mqtt.port(), &messages).await;
    let total = messages.len() as u64;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == total);

    assert_eq!(
        agent.metric("hubgate_received_total{source=\"mqtt\"}"),
        total
    );
    assert_eq!(agent.metric("hubgate_received_total"), total);
    for (rec_type, want) in [(ENV, n), (MOTION, n), (OPENCLOSE, n), (PACKED, 1)] {
        assert_eq!(
            agent.metric(&format!(
                "hubgate_delivered_total{{rec_type=\"{rec_type}\"}}"
            )),
            u64::from(want),
            "{rec_type}"
        );
    }
    assert_eq!(
        agent.metric("hubgate_decode_errors_total{codec=\"browan-tbhh100\"}"),
        1
    );
    assert_eq!(agent.metric("hubgate_decode_errors_total"), 1);
    // No sink error yet (the family shows up below, once the broker is gone).
    assert_eq!(agent.metric("hubgate_sink_errors_total"), 0);
    for reason in ["full", "disk_full", "expired", "corrupt"] {
        let series = format!("hubgate_dropped_total{{reason=\"{reason}\"}}");
        assert!(agent.has_metric(&series), "no {series}");
        assert_eq!(agent.metric(&series), 0, "{series}");
    }
    let last = agent.metric("hubgate_last_delivery_timestamp_seconds");
    assert!(
        (started..=now()).contains(&last),
        "last delivery at {last}, test ran from {started}"
    );
    let text = agent.scrape().unwrap();
    for line in [
        "# TYPE hubgate_received_total counter",
        "# TYPE hubgate_kafka_connected gauge",
        "# TYPE hubgate_buffer_bytes gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // The status line catches up with the counters within its interval.
    let status = format!(
        "status: in {total} (mqtt {total}), out {total}, buffered 0 record(s) / 0 B, dropped 0, sink connected, last send "
    );
    agent.wait_log(&status, 1, WAIT);

    // The broker dies: the gauge drops, records wait in the buffer, failures are counted.
    kafka.stop();
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 0);
    publish_all(mqtt.port(), &uplinks_at(n + 1)).await;
    agent.wait_metric("hubgate_sink_errors_total{class=\"retry\"}", WAIT, |v| {
        v > 0
    });
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 3);
    assert!(agent.metric("hubgate_buffer_bytes") > 0);
    assert_eq!(agent.metric("hubgate_delivered_total"), total);
    assert_eq!(
        agent.metric(&format!("hubgate_mqtt_connected{broker}")),
        1,
        "MQTT is not affected"
    );
    let outage = format!(
        "status: in {0} (mqtt {0}), out {total}, buffered 3 record(s) / ",
        total + 3
    );
    let log = agent.wait_log(&outage, 1, WAIT);
    let line = log.lines().rfind(|l| l.contains(&outage)).unwrap();
    assert!(
        line.contains(", dropped 0, sink disconnected, last send "),
        "{line}"
    );
    assert!(
        !log.contains(KEY),
        "the SharedAccessKey leaked into the log"
    );
}
