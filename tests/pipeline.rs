//! End to end against real parts: mosquitto -> hubgate (child process) -> tansu over SASL_SSL
//! with the Event Hubs settings. Outages are real (the broker process is killed), crashes are
//! real (SIGKILL of hubgate).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::agent::{
    assert_complete_in_order, changed, chirpstack_uplink, config_with, consume, dashed, fcnt,
    fcnts, metric_value, publish_all, tbhh100, topics, uplink_topic, uplinks, uplinks_at, Agent,
    DOOR, ENV, MOTION, OPENCLOSE, PACKED, PIR, TH, WAIT,
};
use support::lorawan::{self, gateway_frame, GATEWAY_TOPIC, PHY};
use support::{Kafka, Mosquitto};

/// A recognisable SharedAccessKey: it must never show up in hubgate's output.
const KEY: &str = "aHViZ2F0ZS10ZXN0LXNlY3JldC1rZXk=";

fn config(dir: &Path, mqtt: &Mosquitto, kafka: &Kafka) -> String {
    config_with(&dir.join("buffer"), mqtt, kafka, KEY, "", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_each_record_once_with_decoded_values() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    // A loaded CI box can keep the broker's confirmation past the usual 500 ms, which would
    // spill: this test is about the path that does not.
    let body = changed(
        &config(dir.path(), &mqtt, &kafka),
        &[("spill_after = \"500ms\"", "spill_after = \"30s\"")],
    );
    let agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    // Intake does not wait for the producer to connect: a record sent before it is up may
    // wait longer than spill_after and be buffered. Healthy means connected.
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 1);

    let n = 20;
    publish_all(mqtt.port(), &uplinks(n)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 3 * n as u64);
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 3 * n as u64);

    let env = consume(&kafka, ENV, n as usize);
    assert_complete_in_order(&env, n, &dashed(TH));
    for (i, (_, v)) in env.iter().enumerate() {
        let i = i as i64 + 1;
        assert_eq!(v["recType"], ENV);
        assert_eq!(v["event_type"], "create");
        assert_eq!(v["id"], v["obj"]["id"]);
        let data = &v["obj"]["data"];
        assert_eq!(
            data["temperature"][0]["value"].as_f64(),
            Some((i % 40 - 5) as f64),
            "record {i}: {v}"
        );
        assert_eq!(
            data["humidity"][0]["value"].as_f64(),
            Some((30 + i % 60) as f64)
        );
        assert_eq!(
            data["device_health"]["voltage"][0]["value"].as_f64(),
            Some(3.7)
        );
        assert_eq!(
            data["meta"]["device"],
            serde_json::json!(["Building 1", "Floor 2"])
        );
        assert_eq!(data["unpacker"]["class"], "browan-tbhh100");
    }
    let motion = consume(&kafka, MOTION, n as usize);
    assert_complete_in_order(&motion, n, &dashed(PIR));
    for (i, (_, v)) in motion.iter().enumerate() {
        assert_eq!(
            v["obj"]["data"]["motions_since_reset"][0]["value"].as_u64(),
            Some((i as u64 + 1) * 10)
        );
    }
    let doors = consume(&kafka, OPENCLOSE, n as usize);
    assert_complete_in_order(&doors, n, &dashed(DOOR));
    for (i, (_, v)) in doors.iter().enumerate() {
        assert_eq!(
            v["obj"]["data"]["events_since_reset"][0]["value"].as_u64(),
            Some((i as u64 + 1) * 100)
        );
    }
    assert!(
        consume(&kafka, PACKED, 0).is_empty(),
        "nothing should be packed"
    );
    // An idle healthy gateway writes nothing to its buffer.
    assert_eq!(agent.metric("hubgate_spilled_total"), 0);
    let log = std::fs::read_to_string(dir.path().join("hubgate.log")).unwrap();
    assert!(
        log.contains("eventhubs: localhost:"),
        "the sink should log where it connects:\n{log}"
    );
    assert!(
        !log.contains(KEY),
        "the SharedAccessKey leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_buffers_acks_then_delivers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &kafka));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    kafka.stop();
    let n = 30;
    publish_all(mqtt.port(), &uplinks(n)).await;
    let total = 3 * n as u64;
    // Every record is in sled and every MQTT message acknowledged; nothing delivered.
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == total);
    assert_eq!(agent.metric("hubgate_buffer_records"), total);
    assert!(agent.metric("hubgate_spilled_total") >= total);
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);

    kafka.start_again();
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    let env = consume(&kafka, ENV, n as usize);
    assert_complete_in_order(&env, n, &dashed(TH));
    assert_complete_in_order(&consume(&kafka, MOTION, n as usize), n, &dashed(PIR));
    assert_complete_in_order(&consume(&kafka, OPENCLOSE, n as usize), n, &dashed(DOOR));
}

/// A backlog in the MQTT session, many times the in-flight window, drains with the broker
/// up: hubgate reads MQTT only as fast as Kafka confirms, so nothing goes through the
/// buffer, and every record arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_with_the_broker_up_without_touching_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    // The broker hands out the backlog as fast as it may: far more than the window.
    let mqtt = Mosquitto::start_with(dir.path(), "log_type error\nmax_inflight_messages 1000\n");
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    // A loaded machine may keep a confirmation past the usual 500 ms, which spills by
    // design (a slow sink): this test is about a sink that keeps up.
    let body = config_with(
        &dir.path().join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        "max_in_flight = 20",
        "",
    );
    let body = changed(
        &body,
        &[("spill_after = \"500ms\"", "spill_after = \"60s\"")],
    );
    let mut agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    agent.terminate(WAIT);

    let n = 400;
    let total = 3 * n as u64;
    publish_all(mqtt.port(), &uplinks(n)).await;
    agent.start_again();
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == total);
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == total);
    assert_eq!(agent.metric("hubgate_spilled_total"), 0, "{}", agent.logs());
    assert_eq!(agent.metric("hubgate_buffer_records"), 0);
    assert_complete_in_order(&consume(&kafka, ENV, n as usize), n, &dashed(TH));
    assert_complete_in_order(&consume(&kafka, MOTION, n as usize), n, &dashed(PIR));
    assert_complete_in_order(&consume(&kafka, OPENCLOSE, n as usize), n, &dashed(DOOR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_spilled_backlog_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let mut agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &kafka));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    kafka.stop();
    let n = 25;
    publish_all(mqtt.port(), &uplinks(n)).await;
    let total = 3 * n as u64;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == total);
    assert_eq!(agent.metric("hubgate_buffer_records"), total);
    mqtt.wait_pubacks("hubgate-test", total as usize);

    agent.kill();
    kafka.start_again();
    agent.start_again();
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == total);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    // The broker had every message acknowledged: nothing came back over MQTT.
    assert_eq!(agent.metric("hubgate_received_total"), 0);
    assert_complete_in_order(&consume(&kafka, ENV, n as usize), n, &dashed(TH));
    assert_complete_in_order(&consume(&kafka, MOTION, n as usize), n, &dashed(PIR));
    assert_complete_in_order(&consume(&kafka, OPENCLOSE, n as usize), n, &dashed(DOOR));
}

/// A radio frame's counter is kept only once its record is durable (docs/durability.md, item
/// 7). ChirpStack gateway frames with session keys: the frame's record is with the sink,
/// which does not confirm it (the broker is down), and not spilled, when a flush makes the
/// buffer durable; hubgate is killed then. Kept at decode, the counter was in that flush, and
/// after the restart mosquitto's redelivery of the frame was a replay: acknowledged with no
/// record made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_unconfirmed_at_a_kill_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let body = config_with(
        &dir.path().join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        "",
        &lorawan::device(),
    );
    let body = changed(
        &body,
        &[
            (
                "reconnect_max = \"1s\"",
                "reconnect_max = \"1s\"\nformat = \"chirpstack-gateway\"\nmax_message = \"1KiB\"",
            ),
            // Neither spilled nor failed by the producer before the kill: the record stays in
            // memory.
            ("spill_after = \"500ms\"", "spill_after = \"1h\""),
            (
                "\"message.timeout.ms\" = \"30000\"",
                "\"message.timeout.ms\" = \"3600000\"",
            ),
        ],
    );
    let mut agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    // The sink works, then stops confirming: the broker is gone, and the producer holds
    // what it is given.
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 1);
    kafka.stop();

    // The frame, then a message over max_message: a dead letter, written to the buffer and
    // acknowledged once a flush that started after it is done. Both come in one MQTT
    // session, in order, so its PUBACK at the broker shows that a flush after the frame's
    // decode made the buffer durable.
    let frame = (GATEWAY_TOPIC.to_string(), gateway_frame(PHY));
    let oversized = (GATEWAY_TOPIC.to_string(), "x".repeat(2048));
    publish_all(mqtt.port(), &[frame, oversized]).await;
    mqtt.wait_pubacks("hubgate-test", 1);
    // The source writes the PUBACK before the forwarder counts it.
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v >= 1);
    let window = [
        "hubgate_received_total",
        "hubgate_problems_total{kind=\"mqtt_oversized\"}",
        "hubgate_acked_total",
        "hubgate_in_flight",
        "hubgate_spilled_total",
        "hubgate_delivered_total",
    ]
    .map(|m| agent.metric(m));
    assert_eq!(
        window,
        [2, 1, 1, 1, 0, 0],
        "(received, oversized, acked, in flight, spilled, delivered) at the kill: the frame's \
         record is with the sink only\n{}",
        agent.logs()
    );

    agent.kill();
    kafka.start_again();
    agent.start_again();
    // mosquitto sends the frame again: a new record, not a replay.
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 1);
    let after = [
        "hubgate_received_total",
        "hubgate_duplicates_total",
        "hubgate_delivered_total",
    ]
    .map(|m| agent.metric(m));
    assert_eq!(
        after,
        [1, 0, 1],
        "(received, duplicates, delivered) after the restart\n{}",
        agent.logs()
    );
    mqtt.wait_pubacks("hubgate-test", 2);
    let env = consume(&kafka, ENV, 1);
    assert_eq!(env.len(), 1, "{env:?}");
    let (key, v) = &env[0];
    assert_eq!(key, &dashed(lorawan::DEV_EUI));
    let iot = &v["obj"]["data"]["meta"]["iot"];
    assert_eq!(
        (fcnt(v), &iot["fport"], &iot["payload"]),
        (7, &2.into(), &"03670110".into())
    );
    assert_eq!(v["obj"]["data"]["temperature"][0]["value"], 27.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    let mut agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &kafka));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    let good = |i| {
        (
            uplink_topic(TH),
            chirpstack_uplink(TH, i, 103, &tbhh100(20, 50)),
        )
    };
    let bad_b64 =
        chirpstack_uplink(TH, 100, 103, &tbhh100(20, 50)).replace("\"data\":\"", "\"data\":\"!!");
    let unknown = chirpstack_uplink("0004a30b00ffee01", 1, 10, &[0xde, 0xad, 0xbe, 0xef]);
    let truncated = chirpstack_uplink(PIR, 1, 102, &[0x01, 0x0b]);
    let messages = vec![
        good(1),
        (uplink_topic(TH), "{not json".to_string()),
        good(2),
        (uplink_topic(TH), bad_b64),
        (
            uplink_topic(TH),
            "{\"deviceInfo\":{\"devEui\":\"xyz\"},\"data\":\"AQ==\"}".to_string(),
        ),
        (uplink_topic("0004a30b00ffee01"), unknown),
        (uplink_topic(PIR), truncated),
        good(3),
    ];
    publish_all(mqtt.port(), &messages).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == messages.len() as u64);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 5);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"malformed_json\"}"),
        1
    );
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"bad_base64\"}"),
        1
    );
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"bad_dev_eui\"}"),
        1
    );
    // The uplinks whose payload or DevEUI does not decode are kept as dead letters; the
    // message that is not JSON is only counted.
    agent.wait_metric("hubgate_dead_lettered_total", WAIT, |v| v == 2);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"unknown_device\"}"),
        1
    );
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"codec_error\"}"),
        1
    );
    assert!(agent.alive(), "hubgate crashed:\n{}", agent.logs());

    let env = consume(&kafka, ENV, 3);
    assert_eq!(fcnts(&env), vec![1, 2, 3]);
    // The unknown device's under the site's packed recType, the truncated payload under its
    // codec's domain.
    let packed = consume(&kafka, PACKED, 1);
    assert_eq!(packed.len(), 1, "the unknown device goes out packed");
    let (key, unknown) = &packed[0];
    assert_eq!(key, "00-04-A3-0B-00-FF-EE-01");
    assert_eq!(unknown["obj"]["data"]["meta"]["iot"]["payload"], "deadbeef");
    let truncated = consume(&kafka, "io.microshare.motion.packed", 1);
    assert_eq!(truncated.len(), 1, "the truncated payload goes out packed");
    let (key, trunc) = &truncated[0];
    assert_eq!(key, &dashed(PIR));
    assert_eq!(trunc["obj"]["data"]["meta"]["iot"]["payload"], "010b");
    assert!(
        trunc["obj"]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("too short"),
        "{trunc}"
    );
    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exit: {status}");
}

/// The key a rotation brings in.
const NEW_KEY: &str = "cm90YXRlZC1rZXktbWF0ZXJpYWwtZm9yLXRlc3Q=";

/// An Event Hubs connection string for `bootstrap` with `key`, plus `tail` (e.g.
/// `;EntityPath=x`).
fn connection_string(bootstrap: &str, key: &str, tail: &str) -> String {
    format!("Endpoint=sb://{bootstrap}/;SharedAccessKeyName=test;SharedAccessKey={key}{tail}")
}

/// [`config`], the connection string read from `secret` instead, with `extra` in `[sink]`.
fn config_reading(
    dir: &Path,
    mqtt: &Mosquitto,
    kafka: &Kafka,
    secret: &Path,
    extra: &str,
) -> String {
    let inline = format!(
        "connection_string = \"{}\"",
        connection_string(&kafka.bootstrap(), KEY, "")
    );
    changed(
        &config(dir, mqtt, kafka),
        &[(
            &inline,
            &format!("connection_string_file = \"{}\"\n{extra}", secret.display()),
        )],
    )
}

/// Write `text` to the secret file `path`, 0600 as the agent wants it.
fn secret_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn hup(agent: &Agent) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(agent.pid(), libc::SIGHUP) }, 0);
}

/// Key rotation: a new connection string in the file plus SIGHUP rebuilds the producer, and
/// records keep flowing; SIGHUP with the same one does not. Neither key appears in the log,
/// even at trace level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_on_sighup_and_no_key_in_any_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    let secret = dir.path().join("eventhubs.secret");
    let cs = |key: &str| connection_string(&kafka.bootstrap(), key, "");
    secret_file(&secret, &cs(KEY));
    let config = config_reading(dir.path(), &mqtt, &kafka, &secret, "");
    let agent = Agent::start_with_log(dir.path(), &config, "trace");
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let all = uplinks(10);
    publish_all(mqtt.port(), &all[..15]).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 15);

    // A reload with the same key (e.g. for the codecs) keeps the producer.
    hup(&agent);
    agent.wait_log(
        "the connection string is the same; keeping the sink",
        1,
        WAIT,
    );
    assert!(!agent.full_log().contains("sink replaced"));
    secret_file(&secret, &cs(NEW_KEY));
    hup(&agent);
    agent.wait_log("sink replaced", 1, WAIT);
    publish_all(mqtt.port(), &all[15..]).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 30);
    assert_complete_in_order(&consume(&kafka, ENV, 10), 10, &dashed(TH));

    let log = agent.full_log();
    assert!(log.contains("TRACE"), "the agent should log at trace level");
    assert!(!log.contains(KEY), "the old key leaked into the log");
    assert!(!log.contains(NEW_KEY), "the new key leaked into the log");
}

/// A key rotation while the broker is down, with records in flight that the old sink cannot
/// confirm: the old sink, not up, gets the short wait (its warning says how long it waited),
/// and what it did not confirm goes into the buffer and is acknowledged (nothing held in
/// memory across the swap); the new sink sends it once the broker is back: every record
/// once, in order per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_with_the_broker_down_keeps_what_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let secret = dir.path().join("eventhubs.secret");
    secret_file(&secret, &connection_string(&kafka.bootstrap(), KEY, ""));
    // Neither spilled nor failed by the producer before the rotation: the records the broker
    // does not confirm stay in flight, with the old sink.
    let body = changed(
        &config_reading(dir.path(), &mqtt, &kafka, &secret, ""),
        &[
            ("spill_after = \"500ms\"", "spill_after = \"1h\""),
            (
                "\"message.timeout.ms\" = \"30000\"",
                "\"message.timeout.ms\" = \"3600000\"",
            ),
        ],
    );
    let agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let n = 4;
    let all = uplinks(n);
    let (before, during) = all.split_at(all.len() / 2);
    publish_all(mqtt.port(), before).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 6);
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 6);

    kafka.stop();
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 0);
    publish_all(mqtt.port(), during).await;
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == 6);
    let held = [
        "hubgate_acked_total",
        "hubgate_spilled_total",
        "hubgate_buffer_records",
    ]
    .map(|m| agent.metric(m));
    assert_eq!(
        held,
        [6, 0, 0],
        "(acked, spilled, buffered) before the rotation: the last six are with the sink only"
    );

    secret_file(&secret, &connection_string(&kafka.bootstrap(), NEW_KEY, ""));
    hup(&agent);
    agent.wait_log("sink replaced", 1, WAIT);
    // Logged before the swap. The count it gives is not pinned: it is librdkafka's queue,
    // which counts an unserved event (a broker error) too.
    let log = agent.full_log();
    assert!(
        log.contains("record(s) not confirmed within 1s before this producer is closed"),
        "the old sink, not up, did not get the short wait:\n{log}"
    );
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 12);
    let kept = [
        "hubgate_spilled_total",
        "hubgate_buffer_records",
        "hubgate_delivered_total",
    ]
    .map(|m| agent.metric(m));
    assert_eq!(
        kept,
        [6, 6, 6],
        "(spilled, buffered, delivered) after the rotation: the six in flight are in the \
         buffer\n{}",
        agent.logs()
    );

    kafka.start_again();
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 12);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    assert_complete_in_order(&consume(&kafka, ENV, n as usize), n, &dashed(TH));
    assert_complete_in_order(&consume(&kafka, MOTION, n as usize), n, &dashed(PIR));
    assert_complete_in_order(&consume(&kafka, OPENCLOSE, n as usize), n, &dashed(DOOR));
}

/// `hub_mode = "single"` needs an `EntityPath` in the connection string, at start and on a
/// key rotation alike. A rotation to one without (a namespace policy's, copied from the
/// portal) is refused and the current sink kept: taken, it would send each recType to a hub
/// of its own (created, provisioning being "auto") that the site's consumers never read, and
/// the next start would fail the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_hub_mode_single_on_its_entity_path_hub() {
    const SINGLE: &str = "site";
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(&dir.path().join("kafka"));
    kafka.create_topics(&[SINGLE]);
    let secret = dir.path().join("eventhubs.secret");
    let entity_path = format!(";EntityPath={SINGLE}");
    secret_file(
        &secret,
        &connection_string(&kafka.bootstrap(), KEY, &entity_path),
    );
    let extra = "hub_mode = \"single\"\npartitions = 1";
    let body = config_reading(dir.path(), &mqtt, &kafka, &secret, extra);
    let agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let all = uplinks(4);
    publish_all(mqtt.port(), &all[..6]).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 6);

    // The same namespace, another policy's connection string: no EntityPath.
    secret_file(&secret, &connection_string(&kafka.bootstrap(), NEW_KEY, ""));
    hup(&agent);
    // Either outcome ends the wait: the sink replaced, or the rotation refused.
    let replaced = agent.wait_until("a rotation's outcome", WAIT, |log| {
        ["sink replaced", "key rotation: "]
            .into_iter()
            .find(|outcome| log.contains(outcome))
    }) == "sink replaced";
    publish_all(mqtt.port(), &all[6..]).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 12);

    // The recTypes' own hubs exist only if the new sink created them.
    let hubs = hubgate::sink::probe::hubs(&kafka.client_config(), WAIT).unwrap();
    let elsewhere: Vec<usize> = [ENV, MOTION, OPENCLOSE]
        .iter()
        .map(|hub| match hubs.contains_key(*hub) {
            true => kafka.consume_all(hub, 0, Duration::from_secs(5)).len(),
            false => 0,
        })
        .collect();
    let single = kafka.consume_all(SINGLE, 12, Duration::from_secs(20));
    let th: Vec<u64> = single
        .iter()
        .filter(|(key, ..)| *key == dashed(TH))
        .map(|(_, payload, ..)| fcnt(&serde_json::from_slice(payload).unwrap()))
        .collect();
    assert_eq!(
        (single.len(), th, elsewhere.clone()),
        (12, vec![1, 2, 3, 4], vec![0, 0, 0]),
        "after the rotation (sink replaced: {replaced}) the records went to their recTypes' \
         own hubs ({ENV}, {MOTION}, {OPENCLOSE}: {elsewhere:?}) instead of the single hub"
    );
    let refused = agent.wait_log("key rotation: ", 1, WAIT);
    let refused = refused
        .lines()
        .find(|l| l.contains("key rotation: "))
        .unwrap();
    assert!(
        refused.contains("sink.hub_mode") && refused.contains("keeping the current sink"),
        "{refused}"
    );
    assert!(!refused.contains(NEW_KEY), "the key leaked: {refused}");
}

/// The next datagram on the notify socket, or None once `deadline` has passed.
#[cfg(feature = "js")]
fn next_notice(
    sock: &std::os::unix::net::UnixDatagram,
    deadline: std::time::Instant,
) -> Option<String> {
    let left = deadline.checked_duration_since(std::time::Instant::now())?;
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// "hubgate also notices a changed file by itself within 10 s" (docs/operations.md), also
/// when the key was written while the agent started: after the config read the file, before
/// the forwarder was open (buffer, sink, codecs: seconds to minutes).
#[cfg(feature = "js")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_during_the_start_is_noticed_by_the_poll() {
    let dir = support::codec_files::tempdir();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(&dir.path().join("kafka"));
    topics(&kafka);
    let secret = dir.path().join("eventhubs.secret");
    secret_file(&secret, &connection_string(&kafka.bootstrap(), KEY, ""));
    let codecs = dir.path().join("codecs");
    support::codec_files::create_dir(&codecs);
    // A codec that loads for its whole limit (2 s of CPU): the start goes on for that long
    // after it says (EXTEND_TIMEOUT_USEC) that it loads the codec.
    support::codec_files::write(codecs.join("slow.js"), "while (true) {}\n");
    let body = changed(
        &config_reading(dir.path(), &mqtt, &kafka, &secret, ""),
        &[(
            "[sink]\n",
            &format!(
                "[codecs]\ndir = \"{}\"\n[[device]]\ndev_eui = \"00000000000000aa\"\n\
                 js_codec = \"slow\"\n[sink]\n",
                codecs.display()
            ),
        )],
    );
    let socket = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    let mut agent = Agent::begin_notifying(dir.path(), &body, &socket);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let notice = next_notice(&sock, deadline)
            .unwrap_or_else(|| panic!("no codec load announced:\n{}", agent.logs()));
        if notice.contains("loading the JavaScript codecs: slow.js") {
            break;
        }
    }
    // The config (and the key) was read before the codecs load.
    secret_file(&secret, &connection_string(&kafka.bootstrap(), NEW_KEY, ""));
    agent.wait_log("running: ", 1, WAIT);
    // Three polls' worth: the docs promise ten seconds.
    agent.wait_log("sink replaced", 1, Duration::from_secs(30));
    assert!(agent.terminate(WAIT).success());
}

/// A rotation that failed for a reason the operator then fixes (here the CA bundle, gone
/// while the new producer was built) is tried again by the next poll, without a SIGHUP and
/// without another write of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_that_failed_is_tried_again_by_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(&dir.path().join("kafka"));
    topics(&kafka);
    let secret = dir.path().join("eventhubs.secret");
    secret_file(&secret, &connection_string(&kafka.bootstrap(), KEY, ""));
    let body = config_reading(dir.path(), &mqtt, &kafka, &secret, "");
    let agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let all = uplinks(2);
    publish_all(mqtt.port(), &all[..3]).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 3);

    let ca = kafka.ca_path();
    let away = ca.with_extension("away");
    std::fs::rename(&ca, &away).unwrap();
    secret_file(&secret, &connection_string(&kafka.bootstrap(), NEW_KEY, ""));
    hup(&agent);
    let log = agent.wait_log("keeping the current sink", 1, WAIT);
    assert!(
        !log.contains("sink replaced"),
        "built without its CA:\n{log}"
    );
    std::fs::rename(&away, &ca).unwrap();
    // Two polls' worth.
    agent.wait_log("sink replaced", 1, Duration::from_secs(25));
    publish_all(mqtt.port(), &all[3..]).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 6);
}

/// The log lines that park `rec_type` (cut short after their cause: "; parked for ..." may
/// be gone).
fn parks_of(log: &str, rec_type: &str) -> Vec<String> {
    let park = format!("ERROR hubgate::metrics] {rec_type}: ");
    log.lines()
        .filter(|l| l.contains(&park))
        .map(str::to_string)
        .collect()
}

/// An Event Hubs site on a TLS stand-in broker answering as `answers`, holding `hubs` (and
/// the packed ones), its key (`KEY`) in a connection string file, `sink_extra` in `[sink]`;
/// the agent started and one Tabs uplink published. Returns what the test goes on with.
async fn one_uplink_to_a_stand_in(
    dir: &Path,
    hubs: &[&str],
    answers: support::standin::Answers,
    sink_extra: &str,
) -> (
    Mosquitto,
    support::standin::StandIn,
    std::path::PathBuf,
    Agent,
) {
    let mqtt = Mosquitto::start(dir);
    let hubs: Vec<&str> = hubs
        .iter()
        .copied()
        .chain(support::agent::CODECS_PACKED)
        .collect();
    let broker = support::standin::StandIn::start_tls(&dir.join("broker"), &hubs, answers);
    let secret = dir.join("eventhubs.secret");
    secret_file(&secret, &connection_string(&broker.bootstrap(), KEY, ""));
    let body = format!(
        "{}\n[sink]\ntype = \"eventhubs\"\nconnection_string_file = \"{}\"\n\
         ca_location = \"{}\"\n{sink_extra}\n",
        support::agent::three_devices(&dir.join("buffer"), &mqtt, ""),
        secret.display(),
        broker.ca_path().display(),
    );
    let agent = Agent::start(dir, &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let uplink = chirpstack_uplink(TH, 1, 103, &tbhh100(21, 40));
    publish_all(mqtt.port(), &[(uplink_topic(TH), uplink)]).await;
    (mqtt, broker, secret, agent)
}

/// The operator pasted a Listen-only policy's connection string: every write is refused and
/// the recType parked, each park twice the last (up to 5 min). They paste the Send policy's:
/// the sink is replaced, and the parks and the backoff the old key earned are lifted with
/// it, so the record goes out with the new key at once and the status no longer names the
/// old key's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_lifts_the_parks_the_old_key_earned() {
    use support::standin::{Answers, TOPIC_AUTHORIZATION_FAILED};

    let dir = tempfile::tempdir().unwrap();
    let listen_only = Answers {
        produce: Some(TOPIC_AUTHORIZATION_FAILED),
        ..Answers::default()
    };
    let hubs = [ENV, MOTION, OPENCLOSE, PACKED];
    let (_mqtt, broker, secret, mut agent) = one_uplink_to_a_stand_in(
        dir.path(),
        &hubs,
        listen_only,
        "provisioning = \"precreated\"",
    )
    .await;
    // Each refusal parks the recType, each park twice as long as the last (with jitter, in
    // [d/2, d]): the fifth lasts 8 to 16 s.
    agent.wait_until("five parks", WAIT, |log| {
        (parks_of(log, ENV).len() >= 5).then_some(())
    });
    agent.wait_metric(
        &format!("hubgate_parked{{rec_type=\"{ENV}\"}}"),
        WAIT,
        |v| v == 1,
    );

    // The Send policy's connection string.
    broker.set_answers(Answers::default());
    secret_file(
        &secret,
        &connection_string(&broker.bootstrap(), NEW_KEY, ""),
    );
    hup(&agent);
    agent.wait_log("sink replaced", 1, WAIT);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    // Not a time limit (a loaded machine may take seconds for the reload, the check, the TLS
    // sink and the drain): a park still in force when the record went out, that is one left
    // to run out, is ended by that delivery, which says so. The line comes after the count:
    // the log is read once hubgate has stopped.
    assert!(agent.terminate(WAIT).success());
    let log = agent.full_log();
    let after = &log[log.find("sink replaced").unwrap()..];
    let unparked = format!("hub for {ENV} accepts records again: unparked");
    assert!(
        !after.contains(&unparked),
        "the record went out with the new key only once the park the old key earned ran out:\n{}",
        agent.logs()
    );
    assert_eq!(parks_of(after, ENV), Vec::<String>::new());
}

/// With `provisioning = "auto"`, a Send-only key cannot create a missing hub: its recType is
/// parked with that cause, and the provisioner waits before it asks the broker again. The
/// operator rotates to a key with Manage: the new key is tried at once (the hub created, the
/// record delivered), not told the old key's refusal until the old key's wait ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_tries_a_hub_the_old_key_could_not_create_at_once() {
    use support::standin::Answers;

    let dir = tempfile::tempdir().unwrap();
    let manage = Answers {
        manage_key: Some(NEW_KEY.to_string()),
        ..Answers::default()
    };
    // Every hub but the one of the uplink's recType.
    let hubs = [MOTION, OPENCLOSE, PACKED];
    let (_mqtt, broker, secret, mut agent) = one_uplink_to_a_stand_in(
        dir.path(),
        &hubs,
        manage,
        "provisioning = \"auto\"\npartitions = 1",
    )
    .await;
    let old_cause = "(no Manage right)";
    agent.wait_until("a park for want of Manage", WAIT, |log| {
        parks_of(log, ENV)
            .iter()
            .any(|l| l.contains(old_cause))
            .then_some(())
    });
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);

    // A namespace-level policy with Manage.
    secret_file(
        &secret,
        &connection_string(&broker.bootstrap(), NEW_KEY, ""),
    );
    hup(&agent);
    agent.wait_log("sink replaced", 1, WAIT);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    assert_eq!(broker.written(ENV).len(), 1);
    // All it wrote, a park after the delivery among it.
    assert!(agent.terminate(WAIT).success());
    let log = agent.full_log();
    let after = &log[log.find("sink replaced").unwrap()..];
    let old: Vec<String> = parks_of(after, ENV)
        .into_iter()
        .filter(|l| l.contains(old_cause))
        .collect();
    assert_eq!(
        old,
        Vec::<String>::new(),
        "the new key was parked with the old key's refusal"
    );
}

/// The SASL passwords of the Kafka sink test: recognisable, never in hubgate's output.
const OLD_PASSWORD: &str = "old-kafka-pa55word-0f3c";
const NEW_PASSWORD: &str = "new-kafka-pa55word-9a1e";

/// A Kafka sink's `sasl_password_file` rotates as a connection string file does. The
/// broker's password changed before the file: every login with the old one is refused, and
/// the uplink's record waits. SIGHUP with the file unchanged keeps the sink; with the file
/// caught empty it logs why it keeps it; the new password written (no SIGHUP) is taken by the
/// poll, and the new sink logs in with it and delivers; a check after that finds the file's
/// password (with its trailing newline) in use, and the sink is replaced once. Neither
/// password shows in the log, even at trace level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sasl_password_rotates_on_sighup_and_by_the_poll() {
    use support::standin::{Answers, StandIn};

    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let hubs: Vec<&str> = [ENV, MOTION, OPENCLOSE, PACKED]
        .into_iter()
        .chain(support::agent::CODECS_PACKED)
        .collect();
    let changed = Answers {
        password: Some(NEW_PASSWORD.to_string()),
        ..Answers::default()
    };
    let broker = StandIn::start_tls(&dir.path().join("broker"), &hubs, changed);
    let secret = dir.path().join("kafka.password");
    secret_file(&secret, OLD_PASSWORD);
    let body = format!(
        "{}\n[sink]\ntype = \"kafka\"\nbrokers = \"{}\"\nsecurity_protocol = \"sasl_ssl\"\n\
         sasl_username = \"hubgate\"\nsasl_password_file = \"{}\"\nca_location = \"{}\"\n",
        support::agent::three_devices(&dir.path().join("buffer"), &mqtt, ""),
        broker.bootstrap(),
        secret.display(),
        broker.ca_path().display(),
    );
    let agent = Agent::start_with_log(dir.path(), &body, "trace");
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let uplink = chirpstack_uplink(TH, 1, 103, &tbhh100(21, 40));
    publish_all(mqtt.port(), &[(uplink_topic(TH), uplink)]).await;
    agent.wait_log("SASL authentication error", 1, WAIT);

    hup(&agent);
    agent.wait_log("the SASL password is the same; keeping the sink", 1, WAIT);
    secret_file(&secret, "");
    hup(&agent);
    let empty = format!(
        "key rotation: the file {} is empty; keeping the current sink",
        secret.display()
    );
    agent.wait_log(&empty, 1, WAIT);
    let metrics = agent.wait_scrape(WAIT, "metrics unavailable");
    assert_eq!(metric_value(&metrics, "hubgate_delivered_total"), 0);
    assert!(broker.written(ENV).is_empty());

    secret_file(&secret, &format!("{NEW_PASSWORD}\n"));
    agent.wait_log("sink replaced", 1, WAIT);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    let written = broker.written(ENV);
    assert_eq!(written.len(), 1, "{written:?}");
    let record: Value = serde_json::from_str(&written[0]).unwrap();
    assert_eq!(fcnt(&record), 1);
    // The checks run one after another: this one comes after the rotation's.
    hup(&agent);
    agent.wait_log("the SASL password is the same; keeping the sink", 2, WAIT);
    let log = agent.full_log();
    assert!(
        !log.contains(OLD_PASSWORD),
        "the old password leaked into the log"
    );
    assert!(
        !log.contains(NEW_PASSWORD),
        "the new password leaked into the log"
    );
    assert_eq!(
        log.matches("SASL password file changed").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("sink replaced").count(), 1, "{log}");
}

/// The config of the start-up tests: the broker is down (stopped before hubgate starts).
fn config_sink_down(dir: &Path, mqtt: &Mosquitto) -> String {
    let mut kafka = Kafka::start(dir);
    kafka.stop();
    config(dir, mqtt, &kafka)
}

const HUB_CHECK_FAILED: &str = "hubs: cannot look up";

/// With the broker unreachable, the start-up check of the hubs takes up to 10 s; intake
/// does not wait for it: uplinks are acknowledged and spilled while it still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_does_not_wait_for_an_unreachable_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let agent = Agent::start(dir.path(), &config_sink_down(dir.path(), &mqtt));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let n = 10;
    publish_all(mqtt.port(), &uplinks(n)).await;
    let total = 3 * n as u64;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == total);
    assert_eq!(agent.metric("hubgate_buffer_records"), total);
    // The check itself ran, beside intake, and gave up on the broker; in the log's order,
    // not by when the test looked: subscribed while the check (10 s) still ran.
    let log = agent.wait_log(HUB_CHECK_FAILED, 1, WAIT);
    let subscribed = log.find("mqtt: subscribed to");
    assert!(
        subscribed.is_some_and(|s| s < log.find(HUB_CHECK_FAILED).unwrap()),
        "intake waited for the hub check:\n{log}"
    );
}

#[derive(Debug)]
enum Moment {
    Signals,
    Log(&'static str),
    Received,
}

/// Whether `pid` has SIGTERM blocked or caught: from then on it can stop in order.
fn takes_sigterm(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigBlk:") | mask("SigCgt:")) & (1 << (libc::SIGTERM - 1)) != 0
}

/// SIGTERM at each moment of start-up (as soon as the process can take it, with the metrics
/// up, while uplinks come in, once connected to MQTT) stops the agent in order: exit 0, and every uplink the
/// broker queued meanwhile ends up in the buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_any_moment_of_start_up_exits_0_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut agent = Agent::start(dir.path(), &config_sink_down(dir.path(), &mqtt));
    // The MQTT session exists: uplinks published while hubgate is away are queued for it.
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    assert!(agent.terminate(WAIT).success());

    // The moments, in the order a start passes them: as soon as the process can take the
    // signal, metrics up, uplinks coming in (the broker sends the queue at once), connected.
    let moments = [
        Moment::Signals,
        Moment::Log("metrics on http://"),
        Moment::Received,
        Moment::Log("mqtt: connected"),
    ];
    // Each start finds a fresh batch queued: an earlier start may have taken in all before it.
    let n = 10;
    for (run, moment) in moments.iter().enumerate() {
        let first = run as u32 * n + 1;
        let batch: Vec<_> = (first..first + n).flat_map(uplinks_at).collect();
        publish_all(mqtt.port(), &batch).await;
        let count = |line: &str| agent.full_log().matches(line).count();
        let (before, started) = (
            match moment {
                Moment::Log(line) => count(line),
                _ => 0,
            },
            count("metrics on http://"),
        );
        agent.begin_again();
        match moment {
            Moment::Signals => {
                let pid = agent.pid();
                let deadline = std::time::Instant::now() + WAIT;
                while !takes_sigterm(pid) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "hubgate never started"
                    );
                    std::thread::yield_now();
                }
            }
            Moment::Log(line) => {
                agent.wait_log(line, before + 1, WAIT);
            }
            Moment::Received => {
                agent.wait_log("metrics on http://", started + 1, WAIT);
                agent.wait_metric("hubgate_received_total", WAIT, |v| v > 0);
            }
        }
        let status = agent.terminate(WAIT);
        assert_eq!(
            status.code(),
            Some(0),
            "run {run}: SIGTERM at {moment:?}: {status}\n{}",
            agent.logs()
        );
    }

    // Whatever the interrupted starts took in was buffered before it was acknowledged; the
    // rest the broker delivers now.
    agent.start_again();
    let total = 3 * u64::from(n) * moments.len() as u64;
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v >= total);
    assert!(agent.terminate(WAIT).success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["buffer", "export", "-c"])
        .arg(dir.path().join("hubgate.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let buffered: std::collections::BTreeSet<(String, u64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            // One device per recType here.
            (v["recType"].to_string(), support::agent::fcnt(&v))
        })
        .collect();
    assert_eq!(buffered.len() as u64, total, "{buffered:?}");
}

/// The Event Hubs connection string is the SASL password: it goes only over TLS to a broker
/// whose certificate names the Endpoint's host. librdkafka's `client.dns.lookup =
/// "resolve_canonical_bootstrap_servers_only"` (meant for Kerberos) replaces that host with the
/// name a reverse lookup of its address gives and checks the certificate against that name:
/// whoever answers DNS picks the name the certificate must hold, as when `[sink.properties]`
/// set `bootstrap.servers`, which is refused. Here the Endpoint is 127.0.0.1 (reverse name
/// localhost) and the broker's certificate names localhost only: the TLS check for the
/// Endpoint fails (doctor says so), yet with the property the key was sent to that broker:
/// check refuses the property.
#[test]
fn the_connection_string_goes_only_to_a_broker_certified_for_the_endpoint() {
    use support::standin::{Answers, StandIn};

    let dir = tempfile::tempdir().unwrap();
    let certs = support::Certs::generate(&dir.path().join("certs"));
    let localhost_only = certs.server_for("localhost", "DNS:localhost");
    let hubs: Vec<&str> = [ENV, MOTION, OPENCLOSE, PACKED]
        .into_iter()
        .chain(support::agent::CODECS_PACKED)
        .collect();
    let broker = StandIn::start_tls_with(
        &dir.path().join("broker"),
        localhost_only,
        &hubs,
        Answers::default(),
    );
    let endpoint = broker.bootstrap().replace("localhost", "127.0.0.1");
    let secret = dir.path().join("eventhubs.secret");
    secret_file(&secret, &connection_string(&endpoint, KEY, ""));
    let body = |extra: &str| {
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
             [sink]\ntype = \"eventhubs\"\nconnection_string_file = \"{}\"\nca_location = \"{}\"\n{extra}",
            dir.path().join("buffer").display(),
            support::free_udp_port(),
            secret.display(),
            certs.ca.display(),
        )
    };
    // `hubgate <command>` on the config `body(extra)`, written as `name`.
    let hubgate = |command: &str, name: &str, extra: &str| {
        let config = dir.path().join(name);
        std::fs::write(&config, body(extra)).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args([command, "-c", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let doctor = hubgate("doctor", "plain.toml", "");
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        said.lines()
            .any(|l| l.starts_with(&format!("FAIL tls {endpoint}"))),
        "the certificate should not pass for the Endpoint's host:\n{said}"
    );
    assert_eq!(broker.seen(36), 0, "no login without TLS");

    let check = hubgate(
        "check",
        "canonical.toml",
        "[sink.properties]\n\"client.dns.lookup\" = \"resolve_canonical_bootstrap_servers_only\"\n",
    );
    // Taken, the agent logs in on the bootstrap connection to the broker certified for
    // the address's reverse name (localhost), not for the Endpoint's host.
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && said.contains("client.dns.lookup"),
        "check took client.dns.lookup = resolve_canonical_bootstrap_servers_only ({}): {said}",
        check.status
    );
}
