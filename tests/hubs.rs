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
/// The two devices' packed recTypes (a payload their codec rejects).
const ENV_PACKED: &str = "io.microshare.environment.packed";
const MOTION_PACKED: &str = "io.microshare.motion.packed";

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

/// Run hubgate in process with the two devices' uplinks replayed and the Event Hubs sink on
/// `kafka` (`entity_path` appended to the connection string, `sink` keys added) until every
/// record is delivered.
async fn run_to_the_end(dir: &Path, kafka: &Kafka, entity_path: &str, sink: &str) {
    let file = dir.join("hubgate.toml");
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
connection_string = "Endpoint=sb://{bootstrap}/;SharedAccessKeyName=manage;SharedAccessKey=dGVzdA=={entity_path}"
ca_location = "{ca}"
{sink}
"#,
            buffer = dir.join("buffer").display(),
            bootstrap = kafka.bootstrap(),
            ca = kafka.ca_path().display(),
        ),
    )
    .unwrap();
    support::agent::run_to_the_end(Config::load(&file).unwrap(), RUN).await;
}

/// A Manage key and no hubs: the first start creates every recType's hub with the
/// configured partition count, and every record arrives, each device's in FCnt order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_are_created_on_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"));
    write_uplinks(&dir.path().join("uplinks.jsonl"), 10);
    // The Event Hubs sink with nothing but the connection string: `provisioning` is left
    // to its default.
    run_to_the_end(dir.path(), &kafka, "", "partitions = 3").await;

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
    // The codecs' packed hubs too, though no payload was rejected: a site that goes on with
    // a Send key and `precreated` finds them there the day one is.
    for topic in [ENV, MOTION, PACKED, ENV_PACKED, MOTION_PACKED] {
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
        kafka: false,
    };
    // A stand-in broker answering as `answers` says, and what the provisioner made of it.
    let ask = |answers: Answers| {
        let broker = StandIn::start(&[], answers);
        let found = provision::ensure(&plain(&broker.bootstrap()), &setup, &[MOTION]).unwrap();
        (broker, found)
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
        // INVALID_PARTITIONS says it, whatever limit its words name.
        (37, "exceeds the maximum number allowed", "partitions"),
    ] {
        let (broker, found) = ask(Answers {
            create: Some((code, words.to_string())),
            ..Answers::default()
        });
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
    // An endpoint without CreateTopics (not in its ApiVersions): the portal is the way.
    let (broker, found) = ask(Answers {
        no_create_topics: true,
        ..Answers::default()
    });
    let refusal = found[MOTION].clone().expect("refused");
    assert_eq!(refusal.kind(), "create_unsupported", "{refusal}");
    assert_eq!(broker.seen(19), 0);
    // An answer that leaves the hub out does not make it exist.
    let (_broker, found) = ask(Answers {
        create_answers_nothing: true,
        ..Answers::default()
    });
    let refusal = found[MOTION].clone().expect("refused");
    assert_eq!(refusal.kind(), "unclassified", "{refusal}");
    assert!(refusal.broker.contains("no answer"), "{refusal}");
    // "Not now" (busy, timed out, controller moving) is no answer: the hub is left out, to
    // be asked about again, neither refused nor taken to exist.
    for (code, words) in [
        (41, "The service was unable to process the request"),
        (7, ""),
    ] {
        let (_broker, found) = ask(Answers {
            create: Some((code, words.to_string())),
            ..Answers::default()
        });
        assert_eq!(found.get(MOTION), None, "{code}: {found:?}");
    }
    // Created: the hub exists afterwards with the partition count asked for.
    let (broker, found) = ask(Answers::default());
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

/// A user the broker does not let create topics: every hub's creation is refused. Every
/// recType is parked with that cause (metric, status line, in a Kafka broker's words);
/// every record waits in the buffer, none is dropped.
#[test]
fn a_refused_creation_parks_every_rec_type_and_keeps_the_records() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 5);
    let broker = StandIn::start(
        &[],
        Answers {
            create: Some((TOPIC_AUTHORIZATION_FAILED, String::new())),
            ..Answers::default()
        },
    );
    let agent = Agent::start_with_metrics(
        dir.path(),
        &agent_config(dir.path(), &broker.bootstrap()),
        "status_interval = \"1s\"",
    );
    agent.wait_metric("hubgate_hubs_parked{reason=\"no_manage\"}", RUN, |v| v == 5);
    agent.wait_metric("hubgate_buffer_records", RUN, |v| v == 10);
    let log = agent.wait_log("EVERY recType parked", 1, RUN);
    let line = log
        .lines()
        .find(|l| l.contains("EVERY recType parked"))
        .unwrap();
    assert!(line.contains("this user may not create it"), "{line}");
    assert!(line.contains("CREATE right"), "the fix: {line}");
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);
    assert_eq!(agent.metric("hubgate_dropped_total"), 0);
    assert!(broker.topics().is_empty());
}

/// The values of the records the stand-in took for `topic`: each record's FCnt.
fn fcnts_written(broker: &StandIn, topic: &str) -> Vec<u64> {
    broker
        .written(topic)
        .iter()
        .map(|body| {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            v["obj"]["data"]["meta"]["iot"]["fcnt_up"].as_u64().unwrap()
        })
        .collect()
}

/// A refused creation is not final: once the operator fixes the key (the stand-in starts
/// creating hubs), the provisioner asks again, the hubs are created and the parked records
/// go out without a restart, complete and each device's in FCnt order.
#[test]
fn a_refused_creation_is_asked_again_and_the_parked_records_follow() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 5);
    let broker = StandIn::start(
        &[],
        Answers {
            create: Some((TOPIC_AUTHORIZATION_FAILED, String::new())),
            ..Answers::default()
        },
    );
    let mut agent = Agent::start(dir.path(), &agent_config(dir.path(), &broker.bootstrap()));
    agent.wait_metric("hubgate_hubs_parked{reason=\"no_manage\"}", RUN, |v| v == 5);
    agent.wait_metric("hubgate_buffer_records", RUN, |v| v == 10);
    assert!(broker.topics().is_empty());
    // The operator gives the key Manage. The replay has ended, so hubgate stops once the
    // parked records are delivered: its last status line tells.
    broker.set_answers(Answers::default());
    let status = agent.wait_exit(RUN, "the end of the replay");
    let log = agent.full_log();
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("out 10, buffered 0 record(s) / 0 B, dropped 0,"),
        "{log}"
    );
    for topic in [ENV, MOTION] {
        assert_eq!(fcnts_written(&broker, topic), [1, 2, 3, 4, 5], "{topic}");
    }
}

/// The hubs exist but the key may not write (Listen-only key, or a Basic-tier namespace):
/// the write's refusal parks the recTypes with that cause; nothing is dropped.
#[test]
fn a_refused_write_parks_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    write_uplinks(&dir.path().join("uplinks.jsonl"), 5);
    let broker = StandIn::start(
        &[ENV, MOTION, PACKED, ENV_PACKED, MOTION_PACKED],
        Answers {
            produce: Some(TOPIC_AUTHORIZATION_FAILED),
            ..Answers::default()
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

/// `hub_mode = "single"` (a key made on one hub): every recType goes to the EntityPath hub,
/// created at the first start, with its recType in a `recType` header and in the record;
/// each device's records complete and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_sends_every_rec_type_to_the_entity_path_hub() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};

    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"));
    write_uplinks(&dir.path().join("uplinks.jsonl"), 10);
    run_to_the_end(
        dir.path(),
        &kafka,
        ";EntityPath=site",
        "hub_mode = \"single\"\npartitions = 1",
    )
    .await;

    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", support::unique("single"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["site"]).unwrap();
    let deadline = std::time::Instant::now() + RUN;
    let mut seen: Vec<(String, String, u64)> = Vec::new();
    while seen.len() < 20 && std::time::Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let header = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "recType"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .expect("a recType header");
        let body: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(body["recType"], header.as_str(), "{body}");
        let fcnt = body["obj"]["data"]["meta"]["iot"]["fcnt_up"]
            .as_u64()
            .unwrap();
        seen.push((
            header,
            String::from_utf8_lossy(m.key().unwrap()).into(),
            fcnt,
        ));
    }
    assert_eq!(seen.len(), 20, "{seen:?}");
    for (rec_type, eui) in [(ENV, TH), (MOTION, PIR)] {
        let fcnts: Vec<u64> = seen
            .iter()
            .filter(|(r, k, _)| r == rec_type && *k == dashed(eui))
            .map(|(_, _, f)| *f)
            .collect();
        assert_eq!(fcnts, (1..=10).collect::<Vec<u64>>(), "{rec_type}");
    }
    let hubs = hubgate::sink::probe::hubs(&kafka.client_config(), Duration::from_secs(30)).unwrap();
    assert!(
        !hubs.contains_key(ENV) && !hubs.contains_key(MOTION),
        "{hubs:?}"
    );
}

/// `hubgate doctor` on an Event Hubs config at the TLS stand-in: (exit code, stdout).
fn doctor(dir: &Path, broker: &StandIn, entity_path: &str, extra: &str) -> (i32, String) {
    let file = dir.join("doctor.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[buffer]
path = "{buffer}"
[metrics]
listen = "off"
[[source]]
type = "udp"
listen = "127.0.0.1:{udp}"
[[device]]
dev_eui = "58a0cb0000101234"
codec = "browan-tbhh100"
[sink]
type = "eventhubs"
connection_string = "Endpoint=sb://{bootstrap}/;SharedAccessKeyName=site;SharedAccessKey=dGVzdA=={entity_path}"
ca_location = "{ca}"
{extra}
"#,
            buffer = dir.join("buffer").display(),
            udp = support::free_udp_port(),
            bootstrap = broker.bootstrap(),
            ca = broker.ca_path().display(),
        ),
    )
    .unwrap();
    let out = support::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["doctor", "-c"])
            .arg(&file)
            .env("RUST_LOG", "off"),
        RUN,
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().unwrap_or(-1), stdout)
}

/// doctor writes one probe record (which consumers can tell from a device's) and passes;
/// a write refused for a Listen-only key fails with that cause and its fix.
#[test]
fn doctor_proves_writing() {
    let dir = tempfile::tempdir().unwrap();
    // The plan's first hub, in recType order, takes the probe.
    let hubs = [ENV_PACKED, ENV, PACKED];
    let broker = StandIn::start_tls(&dir.path().join("ok"), &hubs, Answers::default());
    let (code, out) = doctor(dir.path(), &broker, "", "");
    assert_eq!(code, 0, "{out}");
    let line = support::doctor_step(&out, &format!("write {ENV_PACKED}"));
    assert!(
        line.starts_with("OK") && line.contains("one probe record written and confirmed"),
        "{out}"
    );
    assert!(
        line.contains("key \"hubgate-doctor\", event_type \"probe\""),
        "{out}"
    );
    assert_eq!(broker.seen(0), 1, "one Produce: one probe record");
    assert!(
        support::doctor_step(&out, "hub count").starts_with("OK   hub count: 3 hub(s)"),
        "{out}"
    );

    let listen_only = Answers {
        produce: Some(TOPIC_AUTHORIZATION_FAILED),
        ..Answers::default()
    };
    let broker = StandIn::start_tls(&dir.path().join("listen"), &hubs, listen_only);
    let (code, out) = doctor(dir.path(), &broker, "", "");
    assert_eq!(code, 1, "{out}");
    let line = support::doctor_step(&out, &format!("write {ENV_PACKED}"));
    assert!(
        line.starts_with("FAIL") && line.contains("a Listen-only key"),
        "{out}"
    );
    assert!(line.contains("policy with Send"), "the fix: {out}");
}

/// A key scoped to its EntityPath hub: the probe to another hub is refused while one to the
/// EntityPath hub goes through, and doctor says so with the fix (hub_mode = "single").
/// A namespace key with an EntityPath is told that EntityPath does not limit it.
#[test]
fn doctor_tells_whether_entity_path_scopes_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let hubs = [ENV, PACKED, "site"];
    let scoped = Answers {
        only_writable: Some("site".into()),
        ..Answers::default()
    };
    let broker = StandIn::start_tls(&dir.path().join("scoped"), &hubs, scoped);
    let (code, out) = doctor(dir.path(), &broker, ";EntityPath=site", "");
    assert_eq!(code, 1, "{out}");
    let line = support::doctor_step(&out, &format!("write {ENV}"));
    assert!(line.contains("this key writes only to \"site\""), "{out}");
    assert!(line.contains("hub_mode = \"single\""), "{out}");

    let broker = StandIn::start_tls(&dir.path().join("namespace"), &hubs, Answers::default());
    let (code, out) = doctor(dir.path(), &broker, ";EntityPath=site", "");
    assert_eq!(code, 0, "{out}");
    assert!(
        support::doctor_step(&out, &format!("write {ENV}"))
            .contains("EntityPath=site does not limit this key"),
        "{out}"
    );
}

/// Missing hubs: doctor asks the broker to validate their creation (creating nothing) and
/// names a refusal's cause; past Standard's cap of 10 hubs it warns with the fix.
#[test]
fn doctor_checks_creation_and_the_hub_count() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Answers {
        create: Some((TOPIC_AUTHORIZATION_FAILED, String::new())),
        ..Answers::default()
    };
    let broker = StandIn::start_tls(&dir.path().join("refused"), &[PACKED], refused);
    let (code, out) = doctor(dir.path(), &broker, "", "");
    assert_eq!(code, 1, "{out}");
    let line = support::doctor_step(&out, &format!("hub {ENV}"));
    assert!(
        line.starts_with("FAIL") && line.contains("this key may not create it"),
        "{out}"
    );
    assert!(line.contains("Manage"), "{out}");

    let others: Vec<String> = (0..9).map(|i| format!("other-{i}")).collect();
    let mut hubs: Vec<&str> = others.iter().map(String::as_str).collect();
    hubs.push(PACKED);
    let broker = StandIn::start_tls(&dir.path().join("full"), &hubs, Answers::default());
    let (_, out) = doctor(dir.path(), &broker, "", "");
    let line = support::doctor_step(&out, &format!("hub {ENV}"));
    assert!(
        line.starts_with("OK") && line.contains("accepts its creation"),
        "{out}"
    );
    assert_eq!(broker.topics().len(), 10, "validated, not created");
    // 10 there, and the device's two to create: its codec's recType and packed one.
    let line = support::doctor_step(&out, "hub count");
    assert!(
        line.starts_with("WARN hub count: 12 hub(s)") && line.contains("[sink.hubs]"),
        "{out}"
    );
}

/// `check` explains an EntityPath that is the namespace's own name.
#[test]
fn check_explains_an_entity_path_named_like_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hubgate.toml");
    std::fs::write(
        &file,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n\
             connection_string = \"Endpoint=sb://yourchoice.servicebus.windows.net/;SharedAccessKeyName=m;SharedAccessKey=dGVzdA==;EntityPath=yourchoice\"\n",
            dir.path().join("buffer").display()
        ),
    )
    .unwrap();
    let out = support::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["check", "-c"])
            .arg(&file),
        RUN,
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "hubgate: note: the connection string ends in EntityPath=yourchoice, the namespace's own name"
        ),
        "{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("hubgate: warning") && l.contains("EntityPath")),
        "no warning about it: {stderr}"
    );
}

/// A recType the config does not foresee (a device hubgate does not know, whose payload the
/// network server decoded) gets its hub created before its records go out, like the
/// foreseen ones at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rec_type_seen_at_run_time_gets_its_hub() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&dir.path().join("kafka"));
    let mut lines = String::new();
    for i in 1..=3 {
        let mut up: serde_json::Value =
            serde_json::from_str(&chirpstack_uplink("0011223344556677", i, 2, &[1, 2])).unwrap();
        up["object"] = serde_json::json!({"temperature": 21.5, "humidity": 40});
        lines += &format!("{up}\n");
    }
    std::fs::write(dir.path().join("uplinks.jsonl"), lines).unwrap();
    let file = dir.path().join("hubgate.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[buffer]
path = "{buffer}"
[metrics]
listen = "off"
[[source]]
type = "replay"
path = "uplinks.jsonl"
[sink]
type = "eventhubs"
connection_string = "Endpoint=sb://{bootstrap}/;SharedAccessKeyName=manage;SharedAccessKey=dGVzdA=="
ca_location = "{ca}"
partitions = 2
"#,
            buffer = dir.path().join("buffer").display(),
            bootstrap = kafka.bootstrap(),
            ca = kafka.ca_path().display(),
        ),
    )
    .unwrap();
    let cfg = Config::load(&file).unwrap();
    let foreseen = cfg.rec_types();
    support::agent::run_to_the_end(cfg, RUN).await;

    let hubs = hubgate::sink::probe::hubs(&kafka.client_config(), Duration::from_secs(30)).unwrap();
    let seen: Vec<&String> = hubs.keys().filter(|h| !foreseen.contains(*h)).collect();
    let [hub] = seen[..] else {
        panic!("one hub beyond the foreseen {foreseen:?}: {hubs:?}");
    };
    assert_eq!(hubs[hub], 2, "created with the configured partitions");
    let records = kafka.consume_all(hub, 3, RUN);
    assert_eq!(records.len(), 3, "{hub}: {records:?}");
}

/// A hub deleted after its first records: the next writes find it missing, its recType
/// (only that one) parks and asks the provisioner, which creates the hub again; every
/// record arrives, each device's in FCnt order, none lost, and the other recType's records
/// flow meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_deleted_after_use_is_created_again() {
    use support::agent::{publish_all, uplink_topic};
    let dir = tempfile::tempdir().unwrap();
    let mqtt = support::Mosquitto::start(&dir.path().join("mqtt"));
    // Every hub of the plan there from the start: one the start still creates when creating
    // is refused below (a slow machine) would park too.
    let broker = StandIn::start(
        &[ENV, MOTION, PACKED, ENV_PACKED, MOTION_PACKED],
        Answers::default(),
    );
    let uplinks = |fcnts: std::ops::RangeInclusive<u32>, th: bool| -> Vec<(String, String)> {
        fcnts
            .flat_map(|i| {
                let mut v = vec![(
                    uplink_topic(PIR),
                    chirpstack_uplink(PIR, i, 102, &tbms100(i)),
                )];
                if th {
                    v.push((
                        uplink_topic(TH),
                        chirpstack_uplink(TH, i, 103, &tbhh100(20, 40)),
                    ));
                }
                v
            })
            .collect()
    };
    let config = format!(
        r#"
[buffer]
path = "{buffer}"
[[source]]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
client_id = "hubgate-test"
[[device]]
dev_eui = "{TH}"
codec = "browan-tbhh100"
[[device]]
dev_eui = "{PIR}"
codec = "browan-tbms100"
[sink]
type = "kafka"
brokers = "{bootstrap}"
security_protocol = "plaintext"
insecure = true
provisioning = "auto"
"#,
        buffer = dir.path().join("buffer").display(),
        port = mqtt.port(),
        bootstrap = broker.bootstrap(),
    );
    let agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", RUN, |v| v == 1);
    publish_all(mqtt.port(), &uplinks(1..=3, true)).await;
    agent.wait_metric("hubgate_delivered_total", RUN, |v| v == 6);

    // The operator deletes the hub; creating it is refused for now.
    broker.set_answers(Answers {
        create: Some((TOPIC_AUTHORIZATION_FAILED, String::new())),
        ..Answers::default()
    });
    broker.delete(ENV);
    publish_all(mqtt.port(), &uplinks(4..=6, true)).await;
    agent.wait_metric("hubgate_hubs_parked{reason=\"no_manage\"}", RUN, |v| v == 1);
    // The other recType is not held up while the hub is missing.
    publish_all(mqtt.port(), &uplinks(7..=9, false)).await;
    agent.wait_metric("hubgate_delivered_total", RUN, |v| v == 12);
    assert_eq!(fcnts_written(&broker, MOTION), (1..=9).collect::<Vec<_>>());
    assert_eq!(agent.metric("hubgate_hubs_parked{reason=\"no_manage\"}"), 1);

    // Creation allowed again: the hub is created and the held records follow, in order.
    broker.set_answers(Answers::default());
    agent.wait_metric("hubgate_delivered_total", RUN, |v| v == 15);
    agent.wait_metric("hubgate_buffer_records", RUN, |v| v == 0);
    assert!(broker.topics().contains(&ENV.to_string()));
    assert_eq!(fcnts_written(&broker, ENV), [1, 2, 3, 4, 5, 6]);
    assert_eq!(agent.metric("hubgate_dropped_total"), 0);
}

/// The stand-in stops, and its drop returns, even while a client sends requests and reads
/// none of the answers (the stand-in's writes block once the socket buffers are full).
#[test]
fn the_stand_in_stops_while_a_client_reads_nothing() {
    use std::io::Write;
    let broker = StandIn::start(&[], Answers::default());
    let mut client = std::net::TcpStream::connect(broker.bootstrap()).unwrap();
    client
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // ApiVersions v0 (correlation id 1, no client id), each answered with some 60 bytes.
    let request = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff].repeat(1000);
    let deadline = std::time::Instant::now() + RUN;
    while client.write_all(&request).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in kept reading"
        );
    }
    let (stopped, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(broker);
        let _ = stopped.send(());
    });
    done.recv_timeout(RUN).expect("the stand-in stopped");
    drop(client);
}
