//! The sink's error classes (docs/design.md "Error classes") under librdkafka's mock cluster: real Kafka wire
//! protocol in process, with injected errors. hubgate runs in process (`pipeline::run`) on a
//! replay source and returns once every record is delivered.

mod support;

use std::path::Path;
use std::time::Duration;

use hubgate::config::Config;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use support::agent::chirpstack_uplink;

const ENV: &str = "io.microshare.environment.unpacked";
const MOTION: &str = "io.microshare.motion.unpacked";
const TH: &str = "58a0cb0000101234";
const PIR: &str = "58a0cb0000301111";
const RUN: Duration = Duration::from_secs(180);

/// `n` uplinks per device (TBHH100 environment, TBMS100 motion), FCnt 1..=n.
fn write_uplinks(path: &Path, n: u32) {
    let mut lines = String::new();
    for i in 1..=n {
        lines += &chirpstack_uplink(
            TH,
            i,
            103,
            &[0x08, 0x8c, 0x2e, 0x2d, 0xff, 0xff, 0xff, 0xff],
        );
        lines += "\n";
        lines += &chirpstack_uplink(PIR, i, 102, &[0x01, 0x0b, 0x3a, 0x05, 0x00, i as u8, 0, 0]);
        lines += "\n";
    }
    std::fs::write(path, lines).unwrap();
}

fn config(dir: &Path, bootstrap: &str, extra: &str) -> Config {
    let file = dir.join("hubgate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[buffer]
path = "{buffer}"
spill_after = "1s"
[metrics]
listen = "off"
[[source]]
type = "replay"
path = "uplinks.jsonl"
[[device]]
dev_eui = "{TH}"
codec = "browan-tbhh100"
{extra}
[[device]]
dev_eui = "{PIR}"
codec = "browan-tbms100"
[sink]
type = "kafka"
brokers = "{bootstrap}"
security_protocol = "plaintext"
insecure = true
[sink.properties]
"message.timeout.ms" = "5000"
"#,
            buffer = dir.join("buffer").display()
        ),
    )
    .unwrap();
    Config::load(&file).unwrap()
}

fn consumer(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// FCnts of the records in `topic`, in partition order.
fn fcnts(bootstrap: &str, topic: &str, n: usize) -> Vec<u64> {
    let mut out: Vec<(i32, i64, u64)> =
        support::consume(consumer(bootstrap), topic, n, RUN, &String::new)
            .into_iter()
            .map(|(_, payload, p, o)| {
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                (
                    p,
                    o,
                    v["obj"]["data"]["meta"]["iot"]["fcnt_up"].as_u64().unwrap(),
                )
            })
            .collect();
    out.sort();
    out.into_iter().map(|(_, _, f)| f).collect()
}

async fn run(cfg: Config) {
    support::agent::run_to_the_end(cfg, RUN).await;
}

fn mock() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    // One partition per topic: the whole stream's order is observable.
    mock.create_topic(ENV, 1, 1).unwrap();
    mock.create_topic(MOTION, 1, 1).unwrap();
    mock
}

/// Event Hubs throttling answers `POLICY_VIOLATION`, which librdkafka treats as permanent;
/// hubgate re-queues, backs off and delivers everything, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_ends_in_delivery_not_loss() {
    throttled_run_delivers_in_order(None).await;
}

/// The same with the 5 produce requests in flight a site may set (docs/performance.md,
/// "Pipelined produce requests"): the idempotent producer and the gap-less guarantee keep
/// the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_with_five_requests_in_flight_keeps_order() {
    throttled_run_delivers_in_order(Some("5")).await;
}

async fn throttled_run_delivers_in_order(in_flight: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 20);
    let mock = mock();
    let bs = mock.bootstrap_servers();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_POLICY_VIOLATION; 8],
    );
    let mut cfg = config(dir.path(), &bs, "");
    if let (Some(n), hubgate::config::SinkConfig::Kafka(k)) = (in_flight, &mut cfg.sink) {
        k.properties.insert("max.in.flight".into(), n.into());
    }
    run(cfg).await;
    let expected: Vec<u64> = (1..=20).collect();
    assert_eq!(fcnts(&bs, ENV, 20), expected);
    assert_eq!(fcnts(&bs, MOTION, 20), expected);
}

/// A broker that goes away and comes back, slow meanwhile: nothing lost, order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_slow_then_back() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 30);
    let mock = mock();
    let bs = mock.bootstrap_servers();
    mock.broker_down(-1).unwrap();
    let hubgate = tokio::spawn(run(config(dir.path(), &bs, "")));
    // Let records pile up (and spill) while the broker is away, then bring it back slow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    mock.broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    mock.broker_up(-1).unwrap();
    hubgate.await.unwrap();
    let expected: Vec<u64> = (1..=30).collect();
    assert_eq!(fcnts(&bs, ENV, 30), expected);
    assert_eq!(fcnts(&bs, MOTION, 30), expected);
}

/// A record larger than the broker takes is dead-lettered; the others get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_record_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 5);
    let mock = mock();
    let bs = mock.bootstrap_servers();
    // The environment device carries a tag that makes each of its records > 4000 bytes.
    let huge_tag = format!("tags = [\"{}\"]", "x".repeat(5000));
    let mut cfg = config(dir.path(), &bs, &huge_tag);
    if let hubgate::config::SinkConfig::Kafka(k) = &mut cfg.sink {
        k.properties
            .insert("message.max.bytes".into(), "4000".into());
    }
    run(cfg).await;
    assert_eq!(fcnts(&bs, MOTION, 5), vec![1, 2, 3, 4, 5]);
    assert!(
        fcnts(&bs, ENV, 0).is_empty(),
        "oversized records must not be sent"
    );
    let store = hubgate::buffer::SledStore::open(&dir.path().join("buffer")).unwrap();
    use hubgate::buffer::Store;
    assert_eq!(store.dead_letters(), 5);
    assert_eq!(store.usage().0, 0, "nothing left to send");
}
