//! Hubs on the first start (docs/eventhubs.md): with `provisioning = "auto"` hubgate creates
//! each recType's hub through Kafka's CreateTopics; a refusal parks the recType with its
//! cause and fix, and keeps its records.
//!
//! Created: tansu behind TLS with SASL PLAIN, as an Event Hubs namespace is reached. Refused:
//! the stand-in broker of `support::standin`, which answers CreateTopics and Produce with the
//! error code and words under test over real TCP in the Kafka wire format.

mod support;

use std::path::Path;
use std::time::Duration;

use hubgate::config::Config;
use hubgate::sink::provision;
use hubgate::sink::refusal::Setup;
use support::agent::{chirpstack_uplink, dashed, tbhh100, tbms100, Agent, ENV, MOTION, PIR, TH};
use support::standin::{Answers, StandIn, POLICY_VIOLATION, TOPIC_AUTHORIZATION_FAILED};
use support::Kafka;

const RUN: Duration = Duration::from_secs(120);
const PACKED: &str = "io.microshare.lorawan.packed";

/// `n` uplinks per device (TBHH100 environment, TBMS100 motion), FCnt 1..=n, interleaved.
fn write_uplinks(path: &Path, n: u32) {
    let mut lines = String::new();
    for i in 1..=n {
        lines += &chirpstack_uplink(TH, i, 103, &tbhh100(20, 40));
        lines += "\n";
        lines += &chirpstack_uplink(PIR, i, 102, &tbms100(i));
        lines += "\n";
    }
    std::fs::write(path, lines).unwrap();
}

const DEVICES: &str = r#"
[[source]]
type = "replay"
path = "uplinks.jsonl"
[[device]]
dev_eui = "58a0cb0000101234"
codec = "browan-tbhh100"
[[device]]
dev_eui = "58a0cb0000301111"
codec = "browan-tbms100"
"#;

/// A Manage key and no hubs: the first start creates every recType's hub with the
/// configured partition count, and every record arrives, each device's in FCnt order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_are_created_on_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"));
    write_uplinks(&dir.path().join("uplinks.jsonl"), 10);
    // The Event Hubs sink with nothing but the connection string: `provisioning` is left
    // to its default.
    let file = dir.path().join("hubgate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[buffer]
path = "{buffer}"
[metrics]
listen = "off"
{DEVICES}
[sink]
type = "eventhubs"
connection_string = "Endpoint=sb://{bootstrap}/;SharedAccessKeyName=manage;SharedAccessKey=dGVzdA=="
ca_location = "{ca}"
partitions = 3
"#,
            buffer = dir.path().join("buffer").display(),
            bootstrap = kafka.bootstrap(),
            ca = kafka.ca_path().display(),
        ),
    )
    .unwrap();
    support::agent::run_to_the_end(Config::load(&file).unwrap(), RUN).await;

    for (topic, eui) in [(ENV, TH), (MOTION, PIR)] {
        let records = kafka.consume_all(topic, 10, RUN);
        assert_eq!(records.len(), 10, "{topic}: {records:?}");
        let partitions: std::collections::BTreeSet<i32> = records.iter().map(|r| r.2).collect();
        assert_eq!(partitions.len(), 1, "one device, one partition");
        let fcnts: Vec<u64> = records
            .iter()
            .map(|(key, body, _, _)| {
                assert_eq!(key, &dashed(eui));
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                v["obj"]["data"]["meta"]["iot"]["fcnt_up"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(fcnts, (1..=10).collect::<Vec<u64>>(), "{topic}");
    }
    let client = kafka.client_config();
    let hubs = hubgate::sink::probe::hubs(&client, Duration::from_secs(30)).unwrap();
    for topic in [ENV, MOTION, PACKED] {
        assert_eq!(
            hubs.get(topic),
            Some(&3),
            "{topic} created with 3 partitions: {hubs:?}"
        );
    }
}

fn plain(bootstrap: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Each refusal Event Hubs may give to CreateTopics becomes its cause, over the wire: code
/// and words as the broker sends them.
#[test]
fn creation_refusals_are_classified_by_code_and_words() {
    let setup = Setup {
        entity_path: None,
        partitions: 4,
        auto: true,
    };
    let quota = "error code: 403, Details: SubCode=40300. The maximum number of event hubs for the namespace has been reached";
    for (code, words, cause) in [
        (TOPIC_AUTHORIZATION_FAILED, "", "no_manage"),
        (POLICY_VIOLATION, quota, "hub_cap"),
        (
            POLICY_VIOLATION,
            "Request parameters do not satisfy the configured policy.",
            "create_unsupported",
        ),
        (37, "", "partitions"),
        (
            POLICY_VIOLATION,
            "not available in the Basic tier",
            "basic_tier",
        ),
        (
            41,
            "The service was unable to process the request",
            "unclassified",
        ),
    ] {
        let broker = StandIn::start(
            &[],
            Answers {
                create: Some((code, words.to_string())),
                produce: None,
            },
        );
        let found = provision::ensure(&plain(&broker.bootstrap()), &setup, &[MOTION])
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        let refusal = found[MOTION].clone().expect("refused");
        assert_eq!(refusal.kind(), cause, "{code} {words:?}: {refusal}");
        if !words.is_empty() {
            assert!(
                refusal.broker.contains(words),
                "the broker's words kept: {refusal}"
            );
        }
        assert_eq!(broker.seen(19), 1, "one CreateTopics");
    }
    // Created: the hub exists afterwards with the partition count asked for.
    let broker = StandIn::start(&[], Answers::default());
    let found = provision::ensure(&plain(&broker.bootstrap()), &setup, &[MOTION]).unwrap();
    assert_eq!(found[MOTION], None);
    assert_eq!(broker.topics(), [MOTION]);
    // `precreated`: a missing hub is reported, nothing is created.
    let broker = StandIn::start(&[], Answers::default());
    let precreated = Setup {
        auto: false,
        ..setup
    };
    let found = provision::ensure(&plain(&broker.bootstrap()), &precreated, &[MOTION]).unwrap();
    assert_eq!(found[MOTION].as_ref().map(|r| r.kind()), Some("missing"));
    assert_eq!(broker.seen(19), 0);
}

fn agent_config(dir: &Path, bootstrap: &str) -> String {
    format!(
        r#"
[buffer]
path = "{buffer}"
spill_after = "200ms"
{DEVICES}
[sink]
type = "kafka"
brokers = "{bootstrap}"
security_protocol = "plaintext"
insecure = true
provisioning = "auto"
[sink.properties]
"message.timeout.ms" = "5000"
"#,
        buffer = dir.join("buffer").display()
    )
}

/// A key without Manage: every hub's creation is refused. Every recType is parked with
/// that cause (metric, status line); every record waits in the buffer, none is dropped.
#[test]
fn a_refused_creation_parks_every_rec_type_and_keeps_the_records() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 5);
    let broker = StandIn::start(
        &[],
        Answers {
            create: Some((TOPIC_AUTHORIZATION_FAILED, String::new())),
            produce: None,
        },
    );
    let agent = Agent::start_with_metrics(
        dir.path(),
        &agent_config(dir.path(), &broker.bootstrap()),
        "status_interval = \"1s\"",
    );
    agent.wait_metric("hubgate_hubs_parked{reason=\"no_manage\"}", RUN, |v| v == 3);
    agent.wait_metric("hubgate_buffer_records", RUN, |v| v == 10);
    let log = agent.wait_log("EVERY recType parked", 1, RUN);
    let line = log
        .lines()
        .find(|l| l.contains("EVERY recType parked"))
        .unwrap();
    assert!(line.contains("this key may not create it"), "{line}");
    assert!(line.contains("Manage"), "the fix: {line}");
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);
    assert_eq!(agent.metric("hubgate_dropped_total"), 0);
    assert!(broker.topics().is_empty());
}

/// The hubs exist but the key may not write (Listen-only key, or a Basic-tier namespace):
/// the write's refusal parks the recTypes with that cause; nothing is dropped.
#[test]
fn a_refused_write_parks_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 5);
    let broker = StandIn::start(
        &[ENV, MOTION, PACKED],
        Answers {
            create: None,
            produce: Some(TOPIC_AUTHORIZATION_FAILED),
        },
    );
    let agent = Agent::start(dir.path(), &agent_config(dir.path(), &broker.bootstrap()));
    agent.wait_metric("hubgate_hubs_parked{reason=\"listen_only\"}", RUN, |v| {
        v == 2
    });
    agent.wait_metric("hubgate_buffer_records", RUN, |v| v == 10);
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);
    assert_eq!(agent.metric("hubgate_dropped_total"), 0);
    assert_eq!(broker.seen(19), 0, "nothing to create");
}
