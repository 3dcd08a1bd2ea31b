//! A broker that comes back without its data (restarted on a fresh data directory, as after
//! a failover): the producer's id and the topics are gone. tansu on plain TCP, mosquitto in,
//! hubgate as a child process. Every uplink reaches Kafka, each recType's records in the
//! order taken, none dropped, and one hub's trouble holds no other hub's records.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::agent::{
    consume, fcnts, publish_all, three_devices, uplinks, Agent, DOOR, ENV, MOTION, OPENCLOSE, PIR,
    TH, WAIT,
};
use support::{Kafka, Mosquitto};

const DEVICES: [(&str, &str); 3] = [(TH, ENV), (PIR, MOTION), (DOOR, OPENCLOSE)];

/// The three devices, mosquitto in, the Kafka sink on plain tansu with `sink` in `[sink]`.
fn config(dir: &Path, mqtt: &Mosquitto, kafka: &Kafka, sink: &str) -> String {
    let inputs = three_devices(&dir.join("buffer"), mqtt, "");
    let bootstrap = kafka.bootstrap();
    format!("{inputs}[sink]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\nsecurity_protocol = \"plaintext\"\ninsecure = true\n{sink}")
}

fn parked(rec_type: &str) -> String {
    format!("hubgate_parked{{rec_type=\"{rec_type}\"}}")
}

fn sink_config(timeout_ms: u32) -> String {
    format!("[sink.properties]\n\"message.timeout.ms\" = \"{timeout_ms}\"\n")
}

/// SIGKILL tansu, delete its data (every topic with it) and start it again on the same port.
fn lose_every_topic(kafka: &mut Kafka, dir: &Path) {
    kafka.stop();
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("tansu.db")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    kafka.start_again();
}

/// Every record arrives, the 15 of each hub written after the loss in order, none dropped,
/// the buffer empty.
fn every_record_in_order(agent: &Agent, kafka: &Kafka) {
    agent.wait_metric("hubgate_delivered_total", WAIT * 3, |v| v == 60);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    for (_, topic) in DEVICES {
        let got = fcnts(&consume(kafka, topic, 15));
        assert_eq!(got, (6..=20).collect::<Vec<_>>(), "{topic}");
    }
    assert_eq!(agent.metric("hubgate_dropped_total"), 0);
}

/// The broker comes back on the same port with a fresh data directory: every topic is gone
/// (docs/eventhubs.md, "A hub deleted while hubgate runs"); `back_at_once` are created again
/// by hand at once. Those flow meanwhile (no head-of-line block); with `precreated` the lost
/// ones park (`missing`) until created by hand, with `auto` the provisioner creates them again;
/// then every record written after the loss arrives, in order, none dropped.
/// `timeout_ms`: the site's `message.timeout.ms` (the producer is replaced once its records
/// time out with none confirmed), else librdkafka's 120 s.
async fn topics_lost(auto: bool, timeout_ms: Option<u32>, back_at_once: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(&dir.path().join("mqtt"));
    let kdir = dir.path().join("kafka");
    let mut kafka = Kafka::start_plain(&kdir);
    let mut sink = timeout_ms.map_or(String::new(), sink_config);
    if auto {
        sink = format!("provisioning = \"auto\"\npartitions = 1\n{sink}");
    } else {
        kafka.create_topics(&[ENV, MOTION, OPENCLOSE]);
    }
    let agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &kafka, &sink));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    publish_all(mqtt.port(), &uplinks(5)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 15);

    lose_every_topic(&mut kafka, &kdir);
    if !back_at_once.is_empty() {
        kafka.create_topics(back_at_once);
    }
    let later: Vec<_> = (6..=20).flat_map(support::agent::uplinks_at).collect();
    publish_all(mqtt.port(), &later).await;
    let others = 15 + 15 * back_at_once.len() as u64;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v >= others);
    if !auto {
        let lost: Vec<&str> = DEVICES
            .iter()
            .map(|d| d.1)
            .filter(|t| !back_at_once.contains(t))
            .collect();
        for topic in &lost {
            agent.wait_metric(&parked(topic), WAIT * 2, |v| v == 1);
        }
        assert_eq!(agent.metric("hubgate_delivered_total"), others);
        kafka.create_topics(&lost);
    }
    every_record_in_order(&agent, &kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_hubs_that_are_not_created_by_hubgate_park_then_deliver() {
    topics_lost(false, Some(5000), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_hubs_are_created_again_and_drained() {
    topics_lost(true, Some(5000), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lost_hub_holds_no_other_hub() {
    topics_lost(false, Some(5000), &[ENV, OPENCLOSE]).await;
}

/// A TCP front for tansu. While `closing`, each new connection gets tansu's first answer (to
/// ApiVersions) and is then closed: librdkafka logs "Disconnected ... (after 0ms in state
/// UP)", as from tansu restarted on an empty data directory on a loaded machine (a full
/// `cargo test`), and no request after ApiVersions is answered.
struct Front {
    closing: Arc<AtomicBool>,
    /// Set when the front is dropped: its listener goes with the next connection.
    gone: Arc<AtomicBool>,
    port: u16,
}

impl Front {
    fn start(listener: TcpListener, broker: u16) -> Front {
        let closing = Arc::new(AtomicBool::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        let port = listener.local_addr().unwrap().port();
        let (flag, end) = (closing.clone(), gone.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if end.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(broker) = TcpStream::connect(("127.0.0.1", broker)) else {
                    continue;
                };
                let first_only = flag.load(Ordering::SeqCst);
                copy(
                    client.try_clone().unwrap(),
                    broker.try_clone().unwrap(),
                    false,
                );
                copy(broker, client, first_only);
            }
        });
        Front {
            closing,
            gone,
            port,
        }
    }

    fn closing(&self, closing: bool) {
        self.closing.store(closing, Ordering::SeqCst);
    }
}

impl Drop for Front {
    /// The port is not left listening after the test: one connection wakes the accept.
    fn drop(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copy `from` to `to` until either closes (with `first_only`, one read's worth), then close
/// both.
fn copy(mut from: TcpStream, mut to: TcpStream, first_only: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() || first_only {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// The failure of `lost_hubs_that_are_not_created_by_hubgate_park_then_deliver` seen once in
/// a full `cargo test` on a loaded machine (motion not parked within 120 s; look-ups failing
/// with "the connection was closed before the login completed"): the broker comes back empty
/// and closes every connection after ApiVersions. No look-up is answered, so no lost hub can
/// be found missing and parked; hubgate keeps trying meanwhile (records time out, producers
/// are replaced, look-ups are asked again), holds the records in the buffer, and once the
/// broker answers it parks the lost hubs and delivers everything in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_closes_every_connection_after_a_reset_holds_back_nothing_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(&dir.path().join("mqtt"));
    let kdir = dir.path().join("kafka");
    // Bound before tansu starts, which advertises its port: not released in between.
    let listener = support::listener();
    let port = listener.local_addr().unwrap().port();
    let mut kafka = Kafka::start_plain_behind(&kdir, Some(port));
    let front = Front::start(listener, kafka.broker_port());
    kafka.create_topics(&[ENV, MOTION, OPENCLOSE]);
    let agent = Agent::start(
        dir.path(),
        &config(dir.path(), &mqtt, &kafka, &sink_config(5000)),
    );
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    publish_all(mqtt.port(), &uplinks(5)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 15);

    front.closing(true);
    lose_every_topic(&mut kafka, &kdir);
    let later: Vec<_> = (6..=20).flat_map(support::agent::uplinks_at).collect();
    publish_all(mqtt.port(), &later).await;
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 45);
    // Still trying: look-ups fail and are asked again, stuck producers are replaced.
    agent.wait_log("hubs: cannot look up", 2, WAIT * 2);
    let timed_out = "hubgate_problems_total{kind=\"producer_timed_out\"}";
    agent.wait_metric(timed_out, WAIT * 2, |v| v >= 2);
    for (_, topic) in DEVICES {
        assert_eq!(agent.metric(&parked(topic)), 0, "{topic} parked unanswered");
    }
    assert_eq!(agent.metric("hubgate_delivered_total"), 15);

    front.closing(false);
    for (_, topic) in DEVICES {
        agent.wait_metric(&parked(topic), WAIT * 2, |v| v == 1);
    }
    kafka.create_topics(&[ENV, MOTION, OPENCLOSE]);
    every_record_in_order(&agent, &kafka);
}
