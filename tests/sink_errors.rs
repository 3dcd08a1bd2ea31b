//! The sink's error classes (docs/design.md "Error classes") under librdkafka's mock cluster: real Kafka wire
//! protocol in process, with injected errors. hubgate runs in process (`pipeline::run`) on a
//! replay source and returns once every record is delivered.

mod support;

use std::path::Path;
use std::time::Duration;

use hubgate::config::Config;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::Producer;
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
    assert_eq!(throttled_run_delivers_in_order(None).await, 0);
}

/// A site's 5 produce requests in flight are held to one: with 5, a refused request's records
/// were written after those of the requests behind it (FCnt 2, 3, 1, 3, ...). One record a
/// request and a broker that answers after 50 ms would make requests overlap: none did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_with_five_requests_in_flight_asked_keeps_order() {
    assert_eq!(throttled_run_delivers_in_order(Some("5")).await, 0);
}

/// Deliver 20 records a topic through 8 refused produce requests, one record a request, the
/// broker answering each after [`RTT`]; returns how many produce requests reached the broker
/// less than [`RTT`] after the one before, so before that one could have been answered.
async fn throttled_run_delivers_in_order(in_flight: Option<&str>) -> usize {
    const RTT: Duration = Duration::from_millis(50);
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 20);
    // A mock cluster of our own client's, so its raw handle can track requests.
    let holder: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .unwrap();
    let mock = holder.client().mock_cluster().unwrap();
    mock.create_topic(ENV, 1, 1).unwrap();
    mock.create_topic(MOTION, 1, 1).unwrap();
    mock.broker_round_trip_time(1, RTT).unwrap();
    let bs = mock.bootstrap_servers();
    // SAFETY: the holder owns the mock cluster and outlives every use of its handle.
    let raw =
        unsafe { rdkafka::bindings::rd_kafka_handle_mock_cluster(holder.client().native_ptr()) };
    // SAFETY: `raw` is the live mock cluster.
    unsafe { rdkafka::bindings::rd_kafka_mock_start_request_tracking(raw) };
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_POLICY_VIOLATION; 8],
    );
    let mut cfg = config(dir.path(), &bs, "");
    let hubgate::config::SinkConfig::Kafka(k) = &mut cfg.sink else {
        panic!("the config's sink is Kafka");
    };
    k.properties.insert("linger.ms".into(), "0".into());
    k.properties.insert("batch.num.messages".into(), "1".into());
    k.properties
        .insert("message.timeout.ms".into(), "60000".into());
    if let Some(n) = in_flight {
        k.properties.insert("max.in.flight".into(), n.into());
    }
    run(cfg).await;
    let expected: Vec<u64> = (1..=20).collect();
    for topic in [ENV, MOTION] {
        // A record whose report a replaced producer never made is sent again (consumers
        // drop the copy by its id): copies are allowed, a record written before the one
        // ahead of it is not.
        let mut seen = std::collections::BTreeSet::new();
        let got = fcnts(&bs, topic, 20);
        let first_copies: Vec<u64> = got.iter().copied().filter(|f| seen.insert(*f)).collect();
        assert_eq!(first_copies, expected, "{topic}: {got:?}");
    }
    let produced = produce_request_times(raw);
    produced
        .windows(2)
        .filter(|w| w[1] - w[0] < RTT.as_micros() as i64)
        .count()
}

/// When each produce request reached the mock broker (µs, in order), since tracking started.
fn produce_request_times(raw: *mut rdkafka::bindings::rd_kafka_mock_cluster_t) -> Vec<i64> {
    use rdkafka::bindings as rd;
    let mut n = 0;
    // SAFETY: `raw` is a live mock cluster; the array and its requests are ours to destroy.
    unsafe {
        let requests = rd::rd_kafka_mock_get_requests(raw, &mut n);
        let times = (0..n)
            .map(|i| *requests.add(i))
            .filter(|&r| rd::rd_kafka_mock_request_api_key(r) == RDKafkaApiKey::Produce as i16)
            .map(|r| rd::rd_kafka_mock_request_timestamp(r))
            .collect();
        rd::rd_kafka_mock_request_destroy_array(requests, n);
        times
    }
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
    assert_eq!(dead_letters(dir.path()), (5, 0), "nothing left to send");
}

/// A broker refuses a whole produce request for what is no verdict on each record in it (here
/// injected on the first one, with the records lingering so that they share it): a topic that
/// takes less than the producer's batch (`MESSAGE_TOO_LARGE`, or `RECORD_LIST_TOO_LARGE`
/// against its log segment), or one record its checks refuse (`INVALID_RECORD`, given to the
/// whole batch when the broker does not name the record). Each record would be taken alone,
/// and is, in order; none is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_is_sent_again_record_by_record() {
    for error in [TOO_LARGE, LIST_TOO_LARGE, INVALID] {
        let (dir, mock) = refused(&[error], &[TH, PIR]).await;
        let bs = mock.bootstrap_servers();
        assert_eq!(fcnts(&bs, ENV, 5), vec![1, 2, 3, 4, 5], "{error:?}");
        assert_eq!(fcnts(&bs, MOTION, 5), vec![1, 2, 3, 4, 5], "{error:?}");
        assert_eq!(dead_letters(dir.path()), (0, 0), "{error:?}");
    }
}

/// A record the broker refuses when it is sent alone is kept, and dead-lettered only once the
/// topic has taken records sent after it (here the device's next four) and refuses it again:
/// a topic that refuses every record is not told from a record it refuses by one refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_alone_again_after_later_ones_were_taken_is_dead_lettered() {
    for error in [TOO_LARGE, LIST_TOO_LARGE, INVALID] {
        // The batch, the first record alone; the four others, each alone; the first again,
        // twice: a copy sent in the same pass as the record that cleared it is no verdict.
        let errors = [error, error, OK, OK, OK, OK, error, error];
        let (dir, mock) = refused(&errors, &[TH]).await;
        let bs = mock.bootstrap_servers();
        assert_eq!(fcnts(&bs, ENV, 4), vec![2, 3, 4, 5], "{error:?}");
        assert_eq!(dead_letters(dir.path()), (1, 0), "{error:?}");
        assert_eq!(
            fcnts_dead_lettered(dir.path()),
            [1],
            "kept whole: {error:?}"
        );
    }
}

/// A topic that refuses every record for a while (the batch, then the first and the second
/// record, each alone) loses none: each refused record is kept until the topic takes one
/// sent later, then sent again; the refused ones go after those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_refusing_every_record_for_a_while_loses_none() {
    for error in [TOO_LARGE, INVALID] {
        let (dir, mock) = refused(&[error; 3], &[TH]).await;
        let bs = mock.bootstrap_servers();
        assert_eq!(fcnts(&bs, ENV, 5), vec![3, 4, 5, 1, 2], "{error:?}");
        assert_eq!(dead_letters(dir.path()), (0, 0), "{error:?}");
    }
}

const OK: RDKafkaRespErr = RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
const TOO_LARGE: RDKafkaRespErr = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
const LIST_TOO_LARGE: RDKafkaRespErr = RDKafkaRespErr::RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
const INVALID: RDKafkaRespErr = RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD;

/// Run 5 uplinks of each of `devices` against a broker that answers its first produce
/// requests with `errors`, one each (`OK`: none); returns the run's directory and the broker.
async fn refused(
    errors: &[RDKafkaRespErr],
    devices: &[&str],
) -> (
    tempfile::TempDir,
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) {
    let dir = tempfile::tempdir().unwrap();
    let uplinks = dir.path().join("uplinks.jsonl");
    write_uplinks(&uplinks, 5);
    let lines = std::fs::read_to_string(&uplinks).unwrap();
    let kept: String = lines
        .lines()
        .filter(|l| devices.iter().any(|d| l.contains(d)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&uplinks, kept).unwrap();
    let mock = mock();
    let bs = mock.bootstrap_servers();
    mock.request_errors(RDKafkaApiKey::Produce, errors);
    let mut cfg = config(dir.path(), &bs, "");
    let hubgate::config::SinkConfig::Kafka(k) = &mut cfg.sink else {
        panic!("the config's sink is Kafka");
    };
    k.properties.insert("linger.ms".into(), "300".into());
    run(cfg).await;
    (dir, mock)
}

/// Dead letters kept, and records left in the buffer.
fn dead_letters(dir: &Path) -> (u64, u64) {
    use hubgate::buffer::Store;
    let store = hubgate::buffer::SledStore::open(&dir.join("buffer")).unwrap();
    (store.dead_letters(), store.usage().0)
}

/// The frame counters of the records the dead letters keep whole, in their order.
fn fcnts_dead_lettered(dir: &Path) -> Vec<u64> {
    use hubgate::buffer::Store;
    let store = hubgate::buffer::SledStore::open(&dir.join("buffer")).unwrap();
    let letters = store.scan_dead(None, 100).unwrap();
    letters
        .iter()
        .map(|(_, bytes)| {
            let letter = hubgate::buffer::decode(bytes).unwrap();
            let letter: serde_json::Value = serde_json::from_str(&letter.body).unwrap();
            let body = letter["record"]["body"].as_str().expect("the body whole");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["obj"]["data"]["meta"]["iot"]["fcnt_up"].as_u64().unwrap()
        })
        .collect()
}
