//! SIGTERM under load, against real parts (mosquitto -> hubgate child process -> tansu): the
//! stop confirms or buffers what is in flight, acknowledges it, and nothing the broker
//! delivered comes again; and a source between two inputs stops at once.

mod support;

use support::agent::{
    changed, chirpstack_uplink, config_with, consume, fcnts, publish_all, tbhh100, topics,
    uplink_topic, Agent, ENV, TH, WAIT,
};
use support::{Kafka, Mosquitto};

const KEY: &str = "c2h1dGRvd24tdGVzdC1rZXk=";
const CLIENT: &str = "hubgate-test";
/// Records the sink has unconfirmed at most (`max_in_flight`).
const WINDOW: u32 = 20;
/// Frames the forwarder's queue of MQTT and replay frames holds (`pipeline::FRAME_QUEUE`).
const QUEUE: u32 = 1024;

/// The TH uplinks with FCnt `fcnts`.
fn uplinks(fcnts: std::ops::RangeInclusive<u32>) -> Vec<(String, String)> {
    fcnts
        .map(|i| {
            let payload = tbhh100(i as i32 % 40, 50);
            (uplink_topic(TH), chirpstack_uplink(TH, i, 103, &payload))
        })
        .collect()
}

/// One with a time that does not parse: kept with the receive time, and counted as the
/// problem `bad_time` as the MQTT source parses it, right before it asks the queue for room.
fn with_bad_time(fcnt: u32) -> (String, String) {
    let (topic, json) = uplinks(fcnt..=fcnt).remove(0);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["time"] = "soon".into();
    (topic, v.to_string())
}

/// The MQTT source waits for room in a full frame queue when SIGTERM comes, and the sink
/// does not answer, so the forwarder's stop (5 s for the sink, then the buffer's flush) ends
/// long after the queue closed. The source keeps its connection until the last
/// acknowledgement is handed over: every message whose record is in the buffer is
/// acknowledged, none fails, and after the restart the broker delivers only what hubgate
/// never took (no copy of a buffered record, each FCnt once in Kafka).
///
/// The queue is full by construction, not by timing: Kafka hangs (SIGSTOP), the forwarder
/// takes `WINDOW` frames and then none (its in-flight window is full and the sink keeps
/// up), the next `QUEUE` uplinks fill the queue, and the source counts the one after them
/// (`bad_time`) right before it waits for room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_mqtt_waits_for_the_queue_acknowledges_what_it_buffered() {
    let dir = tempfile::tempdir().unwrap();
    // Unlimited messages in flight to hubgate: the broker hands over the whole backlog.
    let mqtt = Mosquitto::start_with(dir.path(), "log_type all\nmax_inflight_messages 0\n");
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    // A sink that does not answer is slow only after `spill_after`, and failing only once
    // its records time out (`message.timeout.ms`, 2 min by default): until then the
    // forwarder takes no frame of a source that can wait while its window is full.
    let body = config_with(
        &dir.path().join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        &format!("max_in_flight = {WINDOW}"),
        "",
    );
    let body = changed(
        &body,
        &[
            ("spill_after = \"500ms\"", "spill_after = \"60s\""),
            ("\"message.timeout.ms\" = \"30000\"\n", ""),
        ],
    );
    assert!(!body.contains("message.timeout.ms"), "{body}");
    let mut agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    // One uplink through, so the producer has its connection and metadata.
    publish_all(mqtt.port(), &uplinks(1..=1)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    mqtt.wait_pubacks(CLIENT, 1);

    kafka.pause();
    publish_all(mqtt.port(), &uplinks(2..=WINDOW + 1)).await;
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == u64::from(WINDOW));
    let queued = WINDOW + 2..=WINDOW + 1 + QUEUE;
    let bad = WINDOW + 2 + QUEUE;
    let last = bad + 100;
    let mut rest = uplinks(queued);
    rest.push(with_bad_time(bad));
    rest.extend(uplinks(bad + 1..=last));
    publish_all(mqtt.port(), &rest).await;
    let waiting = "hubgate_problems_total{kind=\"bad_time\"}";
    agent.wait_metric(waiting, WAIT, |v| v == 1);
    assert_eq!(
        agent.metric("hubgate_received_total"),
        u64::from(WINDOW) + 1
    );

    assert!(agent.terminate(WAIT).success(), "{}", agent.logs());
    let log = agent.full_log();
    // The window's records spilled, and every frame of the full queue taken to the buffer.
    let buffered = WINDOW + QUEUE;
    assert!(
        log.contains(&format!("stopped; {buffered} record(s) wait in the buffer")),
        "{log}"
    );
    assert!(!log.contains("could not be sent"), "{log}");
    mqtt.wait_pubacks(CLIENT, 1 + buffered as usize);
    assert_eq!(mqtt.pubacks(CLIENT), 1 + buffered as usize);

    // What tansu had not read when it hung is never written: each record once, from the
    // buffer or from the broker's redelivery.
    kafka.stop();
    kafka.start_again();
    agent.start_again();
    let again = u64::from(last - 1);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == again);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    assert_eq!(agent.metric("hubgate_duplicates_total"), 0);
    // Only what hubgate had not taken came again: from the one that waited for room on.
    assert_eq!(
        agent.metric("hubgate_received_total"),
        u64::from(last - bad + 1)
    );
    let mut got = fcnts(&consume(&kafka, ENV, last as usize));
    got.sort_unstable();
    assert_eq!(got, (1..=u64::from(last)).collect::<Vec<_>>());
}

/// A replay source with a long `interval` stops at once: its wait between two lines ends
/// with the stop, rather than the agent's stop waiting for it and giving up on it ("a
/// source did not stop").
#[test]
fn a_replay_source_between_two_lines_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("uplinks.jsonl");
    let lines: Vec<String> = uplinks(1..=2).into_iter().map(|(_, json)| json).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let body = format!(
        "[buffer]\npath = {:?}\n[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"{TH}\"\ncodec = \"browan-tbhh100\"\n[[source]]\ntype = \"replay\"\npath = {file:?}\ninterval = \"1h\"\n",
        dir.path().join("buffer")
    );
    let mut agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    assert!(agent.terminate(WAIT).success(), "{}", agent.logs());
    let log = agent.full_log();
    assert!(!log.contains("did not stop"), "{log}");
    assert!(log.contains("status: in 1 (replay 1)"), "{log}");
    assert_eq!(agent.stdout_lines().len(), 1);
}

/// An MQTT broker's name whose DNS server never answers (the resolver waits 30 s for it):
/// SIGTERM ends the agent at once, not once the resolver gives up. The lookup is left on the
/// runtime's blocking pool (`getaddrinfo` has no timeout), and the runtime's end must not
/// wait for it: behind a few such nameservers systemd's stop timeout would kill the agent.
/// Needs root; skipped without.
#[test]
fn a_stop_while_a_brokers_name_lookup_hangs_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dns) = support::black_hole_dns::BlackHoleDns::start(dir.path(), 30) else {
        return;
    };
    let cfg =
        support::black_hole_dns::BlackHoleDns::mqtt_config(dir.path(), "broker.stop-test.example");
    let log = std::fs::File::create(dir.path().join("hubgate.log")).unwrap();
    let mut child = dns
        .command(env!("CARGO_BIN_EXE_hubgate"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let logs = || support::log_tail(&dir.path().join("hubgate.log"));
    if !dns.wait_query(std::time::Duration::from_secs(30)) {
        let _ = child.kill();
        panic!("no lookup of the broker's name:\n{}", logs());
    }
    let stopped = std::time::Instant::now();
    // SAFETY: a plain signal to the child this test started (unshare and sh exec hubgate).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("still running 60 s after SIGTERM:\n{}", logs());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let took = stopped.elapsed();
    assert!(status.success(), "{status:?}:\n{}", logs());
    assert!(
        took < std::time::Duration::from_secs(15),
        "the stop took {took:?}, the resolver's wait 30 s:\n{}",
        logs()
    );
}
