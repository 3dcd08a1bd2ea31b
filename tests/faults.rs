//! Fault suite: "nothing acknowledged is ever lost, whatever breaks" (docs/design.md "The
//! durability contract", docs/durability.md). Real processes only: mosquitto -> hubgate (child
//! process) -> tansu behind stunnel with the Event Hubs settings; the faults are real too
//! (SIGKILL, a broker process killed, a full tmpfs, damaged sled files, power cuts on LazyFS).
//!
//! An *acknowledged uplink* is one the MQTT broker acknowledged (QoS 1 PUBACK) to the test's
//! publisher. Each test asserts that every acknowledged uplink reaches Kafka, that each
//! device's first copies arrive in FCnt order, and counts duplicates (at-least-once: a crash
//! between delivery and acknowledgement sends a record again, with the same record id).
//!
//! Each test writes one summary line (`faults: ...`) straight to the process's stderr, so it
//! shows in the output of a plain `cargo test --release` (libtest captures only `print!`-style
//! output). More kills by hand: `HUBGATE_FAULT_KILLS=200 cargo test --release --test faults`;
//! more power cuts: `HUBGATE_POWER_CUTS=100 cargo test --release --test faults power_cut`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use support::agent::{
    changed, chirpstack_uplink, config_with, consume, dashed, fcnt, publish_all, tbhh100,
    three_devices, topics, uplink_topic, uplinks_at, Agent, DOOR, ENV, MOTION, OPENCLOSE, PIR, TH,
    WAIT,
};
use support::card::Card;
use support::lazyfs::LazyFs;
use support::tmpfs::{fill, Tmpfs};
use support::{buffer_cmd, unique, Kafka, Mosquitto};
use tokio::sync::{mpsc, watch};

const KEY: &str = "ZmF1bHQtc3VpdGUta2V5";
/// Kills in CI; `HUBGATE_FAULT_KILLS` runs more by hand.
const CI_KILLS: u32 = 20;
/// Power cuts per scenario in CI (two scenarios); `HUBGATE_POWER_CUTS` runs more by hand.
const CI_CUTS: u32 = 12;
/// (device EUI, Kafka topic of its records), in the order of [`uplinks_at`].
const DEVICES: [(&str, &str); 3] = [(TH, ENV), (PIR, MOTION), (DOOR, OPENCLOSE)];

/// One summary line on the real stderr (not captured by libtest), also returned for
/// assertion messages.
fn summary(line: String) -> String {
    let _ = writeln!(std::io::stderr(), "{line}");
    line
}

/// A small deterministic pseudo-random sequence (xorshift64*) for fault timing; the seed is
/// printed so a failing run can be repeated with `HUBGATE_FAULT_SEED`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("HUBGATE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        let _ = writeln!(std::io::stderr(), "faults: HUBGATE_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

// ---------------------------------------------------------------------------
// A publisher at a steady rate that knows exactly what the broker acknowledged.

/// Publishes the three devices' uplinks (FCnt `first`, `first + 1`, ...) every `period`,
/// QoS 1, in a persistent session, one message at a time: each publish waits for its PUBACK
/// before the next, so the list of acknowledged (device index, FCnt) is exact.
struct Publisher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(usize, u32)>>,
}

impl Publisher {
    fn start(port: u16, first: u32, period: Duration) -> Publisher {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(publish_steadily(port, first, period, stop_rx));
        Publisher { stop, task }
    }

    /// Stop after the current round; returns every acknowledged (device index, FCnt).
    async fn finish(self) -> Vec<(usize, u32)> {
        let _ = self.stop.send(true);
        self.task.await.expect("publisher task")
    }
}

async fn publish_steadily(
    port: u16,
    first: u32,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<(usize, u32)> {
    let mut opts = MqttOptions::new(unique("steady"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10))
        .set_clean_session(false);
    let (client, mut events) = AsyncClient::new(opts, 16);
    let (puback_tx, mut pubacks) = mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    if puback_tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("test publisher lost the MQTT broker: {e}"),
            }
        }
    });
    let mut tick = tokio::time::interval(period);
    let mut acked = Vec::new();
    let mut fcnt = first;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                for (d, (topic, body)) in uplinks_at(fcnt).into_iter().enumerate() {
                    client
                        .publish(topic, QoS::AtLeastOnce, false, body)
                        .await
                        .expect("queue publish");
                    tokio::time::timeout(WAIT, pubacks.recv())
                        .await
                        .expect("PUBACK within the deadline")
                        .expect("publisher event loop alive");
                    acked.push((d, fcnt));
                }
                fcnt += 1;
            }
        }
    }
    let _ = client.disconnect().await;
    poller.abort();
    acked
}

// ---------------------------------------------------------------------------
// What reached Kafka, checked against what was acknowledged.

#[derive(Debug, Default)]
struct Verdict {
    published: usize,
    delivered: usize,
    lost: Vec<(usize, u32)>,
    duplicates: usize,
    /// Largest distance (in records of the device's topic) between a record and a later copy.
    max_dup_distance: usize,
    /// Per device: FCnts whose first copy came after a higher FCnt's first copy.
    out_of_order: Vec<(usize, u64, u64)>,
    /// (device, FCnt) whose copies carry different record ids.
    id_mismatch: Vec<(usize, u64)>,
}

impl Verdict {
    fn line(&self, test: &str, kills: u32) -> String {
        format!(
            "faults: test={test} kills={kills} published={} delivered={} lost={} duplicates={} max_dup_distance={}",
            self.published,
            self.delivered,
            self.lost.len(),
            self.duplicates,
            self.max_dup_distance
        )
    }

    fn assert_ok(&self, line: &str) {
        assert!(
            self.lost.is_empty(),
            "{line}\nacknowledged but not in Kafka (device index, FCnt): {:?}",
            self.lost
        );
        assert!(
            self.out_of_order.is_empty(),
            "{line}\nfirst copies out of FCnt order (device index, FCnt, after FCnt): {:?}",
            self.out_of_order
        );
        assert!(
            self.id_mismatch.is_empty(),
            "{line}\ncopies of one uplink with different record ids: {:?}",
            self.id_mismatch
        );
    }
}

/// Read every device's topic (again and again, until every acknowledged uplink is there or
/// [`WAIT`] passes) and compare with `acked`.
/// (device index, FCnt) of every device's uplinks at the FCnts `fcnts`.
fn every_device(fcnts: std::ops::RangeInclusive<u32>) -> Vec<(usize, u32)> {
    fcnts
        .flat_map(|f| (0..DEVICES.len()).map(move |d| (d, f)))
        .collect()
}

fn verify(kafka: &Kafka, acked: &[(usize, u32)]) -> Verdict {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = verdict(kafka, acked);
        if v.lost.is_empty() || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn verdict(kafka: &Kafka, acked: &[(usize, u32)]) -> Verdict {
    let mut v = Verdict {
        published: acked.len(),
        ..Verdict::default()
    };
    for (d, (eui, topic)) in DEVICES.iter().enumerate() {
        let want: BTreeSet<u64> = acked
            .iter()
            .filter(|(i, _)| *i == d)
            .map(|(_, f)| *f as u64)
            .collect();
        let records: Vec<(String, Value)> = consume(kafka, topic, want.len());
        let key = dashed(eui);
        let mut first: BTreeMap<u64, (usize, String)> = BTreeMap::new();
        let mut last_first = 0u64;
        for (pos, (k, body)) in records.iter().enumerate() {
            assert_eq!(k, &key, "record of another device in {topic}: {body}");
            let f = fcnt(body);
            let id = body["id"].as_str().unwrap_or_default().to_string();
            match first.get(&f) {
                Some((at, first_id)) => {
                    v.duplicates += 1;
                    v.max_dup_distance = v.max_dup_distance.max(pos - at);
                    if *first_id != id {
                        v.id_mismatch.push((d, f));
                    }
                }
                None => {
                    if f < last_first {
                        v.out_of_order.push((d, f, last_first));
                    }
                    last_first = f;
                    first.insert(f, (pos, id));
                }
            }
        }
        v.delivered += records.len();
        v.lost.extend(
            want.iter()
                .filter(|f| !first.contains_key(f))
                .map(|f| (d, *f as u32)),
        );
    }
    v
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("hubgate.log")).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// SIGKILL, again and again, under a steady load.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loop_under_load_loses_nothing_acknowledged() {
    let kills: u32 = std::env::var("HUBGATE_FAULT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_KILLS);
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    let config = config_with(&dir.path().join("buffer"), &mqtt, &kafka, KEY, "", "");
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    let started = Instant::now();
    // 3 devices x 10 uplinks/s.
    let publisher = Publisher::start(mqtt.port(), 1, Duration::from_millis(100));
    for k in 0..kills {
        // The new process is up and working (it has taken frames from the broker) ...
        agent.wait_metric("hubgate_received_total", WAIT, |v| v > 0);
        // ... then dies at a random moment: often mid-delivery, sometimes after a while.
        let after = match rng.below(4) {
            0 => 0,
            1 | 2 => rng.below(400),
            _ => 400 + rng.below(1200),
        };
        tokio::time::sleep(Duration::from_millis(after)).await;
        agent.kill();
        if k % 5 == 4 {
            // Now and then stay dead for a while: the broker queues for the session.
            tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        }
        agent.start_again();
    }
    agent.wait_metric("hubgate_received_total", WAIT, |v| v > 0);
    let acked = publisher.finish().await;
    let published_for = started.elapsed();

    // The last process drains: everything acknowledged is in Kafka, its buffer empties.
    let v = verify(&kafka, &acked);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == 0);
    let line = summary(v.line("sigkill_loop", kills));
    let _ = writeln!(
        std::io::stderr(),
        "faults: sigkill_loop published for {published_for:?}, {:.1} duplicates per kill",
        v.duplicates as f64 / kills.max(1) as f64
    );
    v.assert_ok(&line);
    assert!(v.published > 0, "{line}");
    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success(), "{line}\nSIGTERM exit: {status}");
}

// ---------------------------------------------------------------------------
// Power cuts: SIGKILL, then every write that was not fsynced is gone (LazyFS).

/// Cut the power `HUBGATE_POWER_CUTS` times (default [`CI_CUTS`]) under a steady load, with
/// the buffer on LazyFS. `flapping`: the Kafka broker goes down and comes back at random
/// between cuts, so records are caught in every state (in flight, buffered, draining, being
/// deleted); otherwise it is down for the whole loop and everything goes through the buffer.
async fn power_cut_loop(test: &str, flapping: bool) {
    let cuts: u32 = std::env::var("HUBGATE_POWER_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_CUTS);
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let lazy = LazyFs::mount(dir.path());
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    // LazyFS reports no free space (no statfs).
    let config = config_with(
        &lazy.path().join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        "min_free = 0",
        "",
    );
    if !flapping {
        kafka.stop();
    }
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    let publisher = Publisher::start(mqtt.port(), 1, Duration::from_millis(100));
    let mut buffered_at_cuts = 0;
    for _ in 0..cuts {
        // The new process is up and has acknowledged something since its start ...
        agent.wait_metric("hubgate_acked_total", WAIT, |v| v > 0);
        if flapping && rng.below(2) == 0 {
            if kafka.is_running() {
                kafka.stop();
            } else {
                kafka.start_again();
            }
        }
        // ... then the power goes at a random moment.
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        buffered_at_cuts += agent.metric("hubgate_buffer_records");
        agent.kill();
        lazy.power_cut();
        agent.start_again();
    }
    if !kafka.is_running() {
        kafka.start_again();
    }
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v > 0);
    let acked = publisher.finish().await;

    let v = verify(&kafka, &acked);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    let line = summary(format!(
        "{} buffered_at_cuts={buffered_at_cuts}",
        v.line(test, cuts).replace("kills=", "cuts=")
    ));
    v.assert_ok(&line);
    assert!(v.published > 0, "{line}");
    let log = read_log(dir.path());
    for alarm in ["lost records it had flushed", "will not open"] {
        assert!(
            !log.contains(alarm),
            "{line}\na power cut damaged the buffer ({alarm:?}):\n{}",
            agent.logs()
        );
    }
    let status = agent.terminate(Duration::from_secs(20));
    assert!(status.success(), "{line}\nSIGTERM exit: {status}");
}

/// Records larger than sled's blob threshold (131,052 bytes at its 512 KiB segments), which
/// sled wrote to blob files of its own when the records were in its tree, through power cuts
/// on the store itself (no brokers): each round finds every record a flush covered whole,
/// delivers the oldest (flushed), adds more (flushed), then leaves writes and removals no
/// flush covered before the power goes. Those may come back whole or not at all (one whose
/// body did not reach the disk is dropped at open), never damaged or as another's body.
#[test]
fn power_cuts_keep_every_flushed_large_record() {
    use hubgate::buffer::{SledStore, Store};
    const ROUNDS: u64 = 8;
    let body = |seq: u64| -> Vec<u8> {
        let len = 140_000 + (seq as usize * 7_919) % 120_000;
        (0..len).map(|i| (i as u64 ^ seq) as u8).collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let lazy = LazyFs::mount(dir.path());
    let buffer = lazy.path().join("buffer");
    // Flushed and not removed by a flush: must be there, whole.
    let mut kept: BTreeSet<u64> = BTreeSet::new();
    let mut next = 0u64;
    let mut survived_unflushed = 0;
    for round in 0..ROUNDS {
        let mut store = SledStore::open(&buffer).unwrap();
        // A salvage that read everything leaves no directory behind to tell of it.
        assert!(
            !store.moved_aside_at_open(),
            "round {round}: a power cut damaged the database"
        );
        let found: BTreeMap<u64, Vec<u8>> = store.scan(None, 10_000).unwrap().into_iter().collect();
        for seq in &kept {
            let got = found.get(seq).map(Vec::len);
            assert!(
                found.get(seq) == Some(&body(*seq)),
                "round {round}: flushed record #{seq} lost or damaged ({got:?} bytes)"
            );
        }
        for (seq, got) in &found {
            if !kept.contains(seq) {
                assert!(
                    *got == body(*seq),
                    "round {round}: #{seq} came back as {} other bytes",
                    got.len()
                );
                survived_unflushed += 1;
                // Delivered.
                store.remove(*seq).unwrap();
            }
        }
        // Delivered: the two oldest.
        for seq in kept.iter().take(2).copied().collect::<Vec<_>>() {
            store.remove(seq).unwrap();
            kept.remove(&seq);
        }
        for _ in 0..5 {
            store.insert(next, body(next)).unwrap();
            kept.insert(next);
            next += 1;
        }
        store.flush().unwrap();
        // What no flush covers: new records and a removal.
        for seq in next..next + 3 {
            store.insert(seq, body(seq)).unwrap();
        }
        next += 3;
        let oldest = *kept.first().unwrap();
        store.remove(oldest).unwrap();
        kept.remove(&oldest);
        drop(store);
        lazy.power_cut();
    }
    let store = SledStore::open(&buffer).unwrap();
    assert!(
        !store.moved_aside_at_open(),
        "a power cut damaged the database"
    );
    let found: BTreeSet<u64> = store
        .scan(None, 10_000)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert!(kept.is_subset(&found), "{kept:?} not all in {found:?}");
    // Nor is one kept from before.
    assert_eq!(hubgate::buffer::moved_aside(&buffer), vec![]);
    summary(format!(
        "faults: test=power_cut_large_records cuts={ROUNDS} kept={} written={next} unflushed_back={survived_unflushed}",
        kept.len()
    ));
}

/// Set only for [`compaction_round`]: `buffer|state file|round`.
const COMPACTION_ROUND: &str = "HUBGATE_COMPACTION_ROUND";
/// Records per round of [`power_cuts_while_compacting_keep_every_record_that_stays`]; one in
/// ten stays.
const ROUND_RECORDS: u64 = 400;

fn compaction_body(seq: u64) -> Vec<u8> {
    (0..8_000).map(|i| (i as u64 ^ seq) as u8).collect()
}

/// The records that stay, and the next sequence number, as `compaction_round` left them.
fn compaction_state(path: &Path) -> (BTreeSet<u64>, u64) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (BTreeSet::new(), 0);
    };
    let mut lines = text.lines();
    let next = lines.next().unwrap().parse().unwrap();
    (lines.map(|l| l.parse().unwrap()).collect(), next)
}

/// Every record in `kept` is in `store`, whole; any other found was never acknowledged and
/// is returned (its body must be its own).
fn check_compacted(store: &hubgate::buffer::SledStore, kept: &BTreeSet<u64>) -> Vec<u64> {
    use hubgate::buffer::Store;
    let found: BTreeMap<u64, Vec<u8>> = store.scan(None, 100_000).unwrap().into_iter().collect();
    for seq in kept {
        let got = found.get(seq).map(Vec::len);
        assert!(
            found.get(seq) == Some(&compaction_body(*seq)),
            "record #{seq} that stays lost or damaged ({got:?} bytes)"
        );
    }
    let others: Vec<u64> = found
        .keys()
        .filter(|s| !kept.contains(s))
        .copied()
        .collect();
    for seq in &others {
        assert!(
            found[seq] == compaction_body(*seq),
            "#{seq} came back as other bytes"
        );
    }
    others
}

/// A recType parked for long: one record in ten stays while the others are delivered, so
/// the buffer compacts its segments (copies, pointer swaps, deletion of the emptied ones)
/// while power cuts fall between any two of those steps. Each round runs in a process of its
/// own that ends without closing the store, as a crash does (sled's flush at close would make
/// its last writes durable), and then the power goes; every record that stays is found
/// whole after each, and in the end the segments take about what those records do.
#[test]
fn power_cuts_while_compacting_keep_every_record_that_stays() {
    use hubgate::buffer::{SledStore, Store};
    const ROUNDS: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let lazy = LazyFs::mount(dir.path());
    let buffer = lazy.path().join("buffer");
    let state = dir.path().join("compaction-state");
    for round in 0..ROUNDS {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["compaction_round", "--exact", "--nocapture"])
            .env(
                COMPACTION_ROUND,
                format!("{}|{}|{round}", buffer.display(), state.display()),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lazy.power_cut();
    }
    let (kept, next) = compaction_state(&state);
    let mut store = SledStore::open(&buffer).unwrap();
    for seq in check_compacted(&store, &kept) {
        store.remove(seq).unwrap();
    }
    let mut flushes = 0;
    store.flush().unwrap();
    while store.wants_flush() {
        store.flush().unwrap();
        flushes += 1;
        assert!(flushes < 1000, "compaction does not end");
    }
    check_compacted(&store, &kept);
    let segments: u64 = std::fs::read_dir(buffer.join("sled").join("values"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let live = kept.len() as u64 * 8_012;
    assert!(
        segments <= 2 * live + (6 << 20),
        "{segments} bytes of segments for {live} of records that stay"
    );
    summary(format!(
        "faults: test=power_cuts_while_compacting cuts={ROUNDS} written={next} stay={} segments={segments}",
        kept.len()
    ));
}

/// Not a test of its own: one round of `power_cuts_while_compacting_keep_every_record_that_stays`
/// (does nothing unless [`COMPACTION_ROUND`] is set). Checks what the last round left, writes
/// [`ROUND_RECORDS`] records and flushes them (the tenth of them that stays is acknowledged
/// from there on), delivers the others, runs 1 to 4 flushes (compaction's steps run at their
/// ends), writes records no flush covers, and exits without closing the store.
#[test]
fn compaction_round() {
    use hubgate::buffer::{SledStore, Store};
    let Some(arg) = std::env::var_os(COMPACTION_ROUND) else {
        return;
    };
    let arg = arg.into_string().unwrap();
    let [buffer, state, round] = arg.split('|').collect::<Vec<_>>()[..] else {
        panic!("{arg}");
    };
    let (buffer, state) = (Path::new(buffer), Path::new(state));
    let round: u64 = round.parse().unwrap();
    let (mut kept, mut next) = compaction_state(state);
    let mut store = SledStore::open(buffer).unwrap();
    for seq in check_compacted(&store, &kept) {
        store.remove(seq).unwrap();
    }
    let new = next..next + ROUND_RECORDS;
    for seq in new.clone() {
        store.insert(seq, compaction_body(seq)).unwrap();
    }
    store.flush().unwrap();
    for seq in new {
        if seq % 10 == 0 {
            kept.insert(seq);
        } else {
            store.remove(seq).unwrap();
        }
    }
    next += ROUND_RECORDS;
    for _ in 0..1 + round % 4 {
        store.flush().unwrap();
    }
    for seq in next..next + 3 {
        store.insert(seq, compaction_body(seq)).unwrap();
    }
    next += 3;
    let text: Vec<String> = std::iter::once(next)
        .chain(kept)
        .map(|n| n.to_string())
        .collect();
    std::fs::write(state, text.join("\n")).unwrap();
    // As a crash: no destructor runs, so sled does not flush at close.
    std::process::exit(0);
}

/// Set only for [`fill_for_a_power_cut_in_a_snapshot`]: the buffer to fill.
const SNAPSHOT_FILL: &str = "HUBGATE_SNAPSHOT_FILL";
/// Records [`a_power_cut_while_sled_writes_its_snapshot_keeps_every_record`] buffers.
const SNAPSHOT_RECORDS: u64 = 2_000;

fn snapshot_body(seq: u64) -> String {
    let pad = "p".repeat(300 + (seq as usize * 7_919) % 600);
    format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}")
}

/// sled writes a snapshot as it opens (to `snap.<lsn>.generating`, synced, then renamed),
/// and at its next open reads the last `snap.*` by name, an unfinished one too. The power
/// goes at the open after a flushed backlog, before the snapshot's first write reaches the
/// disk: the reboot finds it empty. The next open removes it with a warning naming it,
/// moves nothing aside, and exports every record, in order.
#[test]
fn a_power_cut_while_sled_writes_its_snapshot_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut lazy = LazyFs::mount(dir.path());
    let buffer = lazy.path().join("buffer");
    // LazyFS reports no free space (no statfs).
    let config = buffer_cmd::config_for(dir.path(), &buffer, "min_free = 0\n");
    // In a process of its own, which lets go of sled's lock as it ends.
    support::run_ok(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "fill_for_a_power_cut_in_a_snapshot",
                "--exact",
                "--nocapture",
            ])
            .env(SNAPSHOT_FILL, &buffer),
    );
    let export = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["buffer", "export", "-c"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };

    lazy.power_cut_before_write(r"snap\..*\.generating");
    let cut = export();
    assert!(
        !cut.status.success(),
        "the open wrote no snapshot:\n{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    lazy.wait_power_cut();
    let lazy = lazy.reboot();

    let sled = buffer.join("sled");
    let generating = || -> Vec<(String, u64)> {
        let mut found: Vec<(String, u64)> = std::fs::read_dir(lazy.backing(&sled))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("snap.") && name.ends_with(".generating")
            })
            .map(|e| {
                let len = e.metadata().unwrap().len();
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        found.sort();
        found
    };
    let torn = match &generating()[..] {
        [(name, 0)] => name.clone(),
        other => panic!("not one empty unfinished snapshot on the disk: {other:?}"),
    };

    let o = export();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let bodies: Vec<String> = (0..SNAPSHOT_RECORDS).map(snapshot_body).collect();
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        bodies.len(),
        "records exported; stderr:\n{err}"
    );
    let first_other = lines.iter().zip(&bodies).position(|(l, b)| l != b);
    assert_eq!(
        first_other, None,
        "the first record not the one flushed there"
    );
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains(" WARN ")).collect();
    let removed = format!(
        "hubgate::buffer::sled_store] buffer: removed {}, a snapshot sled did not finish",
        sled.join(&torn).display()
    );
    assert!(
        matches!(&warnings[..], [line] if line.ends_with(&removed)),
        "{err}"
    );
    assert_eq!(hubgate::buffer::moved_aside(&buffer), vec![]);
    assert_eq!(generating(), vec![]);
    summary(format!(
        "faults: test=power_cut_in_a_snapshot records={SNAPSHOT_RECORDS} removed={torn}"
    ));
}

/// Not a test of its own: fills the buffer of
/// `a_power_cut_while_sled_writes_its_snapshot_keeps_every_record` (does nothing unless
/// [`SNAPSHOT_FILL`] is set) with [`SNAPSHOT_RECORDS`] records and flushes them.
#[test]
fn fill_for_a_power_cut_in_a_snapshot() {
    use hubgate::buffer::{SledStore, Store};
    let Some(buffer) = std::env::var_os(SNAPSHOT_FILL) else {
        return;
    };
    let mut store = SledStore::open(Path::new(&buffer)).unwrap();
    let now = hubgate::record::ms_since_epoch(std::time::SystemTime::now());
    for seq in 0..SNAPSHOT_RECORDS {
        let value = buffer_cmd::stored_record(seq, now, snapshot_body(seq));
        store.insert(seq, value).unwrap();
    }
    store.flush().unwrap();
}

/// Duplicates per crash while a 50,001-record backlog drains, SIGKILL alone and with power
/// cuts, against the bound docs/durability.md states (item 7: 1.5 × max_in_flight = 750 per crash). By hand
/// (minutes; 2 GB for LazyFS's cache):
/// `cargo test --release --test faults duplicates_while_draining -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn duplicates_while_draining_a_backlog_stay_within_the_bound() {
    drain_with_crashes("drain_sigkill", false).await;
    drain_with_crashes("drain_power_cut", true).await;
}

async fn drain_with_crashes(test: &str, cut: bool) {
    const PER_DEVICE: u32 = 16_667;
    const CRASHES: u32 = 5;
    const BOUND: usize = 750;
    let mut rng = Rng::from_env();
    let dir = tempfile::tempdir().unwrap();
    let lazy = LazyFs::mount_large(dir.path());
    let (mqtt, mut kafka) = brokers_with_the_sink_down(dir.path());
    let config = config_with(
        &lazy.path().join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        "min_free = 0",
        "",
    );
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let all: Vec<(String, String)> = (1..=PER_DEVICE).flat_map(uplinks_at).collect();
    for chunk in all.chunks(3_000) {
        publish_all(mqtt.port(), chunk).await;
    }
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == all.len() as u64);
    kafka.start_again();
    // Each crash comes after at most 4,000 deliveries: the backlog outlasts them all.
    for _ in 0..CRASHES {
        let at = 1_000 + rng.below(3_000);
        agent.wait_metric("hubgate_delivered_total", WAIT, |v| v >= at);
        agent.kill();
        if cut {
            lazy.power_cut();
        }
        agent.start_again();
    }
    let crashed = CRASHES;
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    let acked: Vec<(usize, u32)> = (1..=PER_DEVICE)
        .flat_map(|f| (0..3).map(move |d| (d, f)))
        .collect();
    let v = verify(&kafka, &acked);
    let line = summary(format!(
        "{} per_crash={:.0}",
        v.line(test, crashed).replace("kills=", "crashes="),
        v.duplicates as f64 / crashed.max(1) as f64
    ));
    v.assert_ok(&line);
    assert!(
        v.duplicates <= crashed as usize * BOUND,
        "{line}: more than {BOUND} duplicates per crash"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cuts_with_the_sink_down_lose_nothing_acknowledged() {
    power_cut_loop("power_cut_sink_down", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cuts_with_the_sink_flapping_lose_nothing_acknowledged() {
    power_cut_loop("power_cut_sink_flapping", true).await;
}

// ---------------------------------------------------------------------------
// Kafka broker down under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_outage_under_load_buffers_then_drains_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let config = config_with(&dir.path().join("buffer"), &mqtt, &kafka, KEY, "", "");
    let agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    let publisher = Publisher::start(mqtt.port(), 1, Duration::from_millis(100));
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v >= 15);
    kafka.stop();
    // Publishing goes on; hubgate spills (and so acknowledges) what the sink cannot take.
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v >= 60);
    let delivered_in_outage = agent.metric("hubgate_delivered_total");
    kafka.start_again();
    // Load goes on while the backlog drains.
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| {
        v >= delivered_in_outage + 90
    });
    let acked = publisher.finish().await;

    let v = verify(&kafka, &acked);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    let line = summary(v.line("kafka_outage", 0));
    v.assert_ok(&line);
    let spilled = agent.metric("hubgate_spilled_total");
    let errors = agent.metric("hubgate_sink_errors_total");
    let log = read_log(dir.path());
    assert!(spilled >= 60, "{line}\nspilled_total = {spilled}");
    assert!(
        errors > 0 || log.contains("sink has not confirmed"),
        "{line}\nneither hubgate_sink_errors_total ({errors}) nor the log shows the outage:\n{}",
        agent.logs()
    );
    assert!(
        log.contains("buffering them") || log.contains("sink:"),
        "the log says records were buffered"
    );
}

// ---------------------------------------------------------------------------
// MQTT broker restart, and QoS 1 redelivery.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_broker_restart_reconnects_and_redeliveries_are_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    let config = config_with(&dir.path().join("buffer"), &mqtt, &kafka, KEY, "", "");
    let agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    let batch = |from: u32, to: u32| -> Vec<(String, String)> {
        (from..=to).flat_map(uplinks_at).collect()
    };
    // Before the restart: 1..=10, delivered.
    publish_all(mqtt.port(), &batch(1, 10)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 30);

    // The broker dies (persistence off: what it held dies with it; it holds nothing now).
    mqtt.kill();
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 0);
    mqtt.start_again();
    // hubgate reconnects by itself and subscribes again (the new broker has no session).
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    // After the restart: 11..=20, and a QoS 1 redelivery of FCnt 20 (to hubgate a
    // redelivery is the same message again) plus one of FCnt 15.
    let mut after = batch(11, 20);
    after.extend(uplinks_at(20));
    after.push(uplinks_at(15)[0].clone());
    publish_all(mqtt.port(), &after).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| {
        v == 30 + after.len() as u64
    });
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 60);
    let dups = agent.metric("hubgate_duplicates_total");

    let acked: Vec<(usize, u32)> = (1..=20).flat_map(|f| (0..3).map(move |d| (d, f))).collect();
    let v = verify(&kafka, &acked);
    let line = summary(v.line("mqtt_restart", 0));
    v.assert_ok(&line);
    assert_eq!(v.duplicates, 0, "{line}\nredeliveries reached Kafka");
    assert_eq!(dups, 4, "{line}\nhubgate_duplicates_total");
    for (eui, topic) in DEVICES {
        let records = consume(&kafka, topic, 20);
        assert_eq!(
            records.iter().map(|(_, b)| fcnt(b)).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<u64>>(),
            "{eui}: each FCnt once, in order"
        );
    }
    let log = read_log(dir.path());
    assert!(
        log.matches("mqtt: connected").count() >= 2,
        "the log shows the reconnect:\n{}",
        agent.logs()
    );
}

/// After a crash the broker redelivers what hubgate had not acknowledged, some of which may
/// be in the buffer already (flushed, then killed before the PUBACK went out). Those copies
/// are duplicates: not buffered a second time, not sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redeliveries_of_buffered_records_after_a_restart_are_not_buffered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, mut kafka) = brokers_with_the_sink_down(dir.path());
    let config = config_with(&dir.path().join("buffer"), &mqtt, &kafka, KEY, "", "");
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let batch: Vec<(String, String)> = (1..=10).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &batch).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 30);
    assert_eq!(agent.metric("hubgate_buffer_records"), 30);
    mqtt.wait_pubacks("hubgate-test", 30);

    agent.kill();
    agent.start_again();
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    // To hubgate a redelivery is the same message again: FCnt 9 and 10 once more.
    let again: Vec<(String, String)> = (9..=10).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &again).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 6);
    let dups = agent.metric("hubgate_duplicates_total");
    let buffered = agent.metric("hubgate_buffer_records");

    kafka.start_again();
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    let acked: Vec<(usize, u32)> = (1..=10).flat_map(|f| (0..3).map(move |d| (d, f))).collect();
    let v = verify(&kafka, &acked);
    let line = summary(v.line("redelivery_after_restart", 1));
    v.assert_ok(&line);
    assert_eq!(
        (dups, buffered),
        (6, 30),
        "{line}\n(duplicates counted, records buffered) after the redelivery"
    );
    assert_eq!(v.duplicates, 0, "{line}\nredeliveries reached Kafka");
}

// ---------------------------------------------------------------------------
// A damaged buffer.

/// Flip bytes all over every file under `dir` (sled's log, config, snapshots).
fn flip_bytes(dir: &Path) -> usize {
    let mut flipped = 0;
    for entry in walk(dir) {
        let mut bytes = std::fs::read(&entry).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let step = (bytes.len() / 64).max(1);
        let mut i = bytes.len() / 7;
        while i < bytes.len() {
            bytes[i] ^= 0xa5;
            i += step;
            flipped += 1;
        }
        std::fs::write(&entry, bytes).unwrap();
    }
    flipped
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Databases moved aside in the buffer directory `dir/buffer`.
fn broken_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("buffer"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sled.broken-"))
        .collect()
}

/// With Kafka down, publish `from..=to` and wait until it is all spilled and acknowledged;
/// then SIGKILL hubgate.
async fn spilled_backlog_then_kill(agent: &mut Agent, mqtt: &Mosquitto, from: u32, to: u32) {
    let before = agent.metric("hubgate_acked_total");
    let pubacks = mqtt.pubacks("hubgate-test");
    let n = 3 * (to - from + 1) as u64;
    let batch: Vec<(String, String)> = (from..=to).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &batch).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == before + n);
    assert!(agent.metric("hubgate_buffer_records") >= n);
    mqtt.wait_pubacks("hubgate-test", pubacks + n as usize);
    agent.kill();
}

/// hubgate with Kafka down spills FCnt 1..=20 (60 records) to `dir/buffer` and is killed;
/// `damage` harms the buffer; hubgate starts on it with Kafka back and must come up, say
/// loudly that it moved the database aside, keep `kept` databases moved aside (a salvage
/// that read everything removes its own), and deliver new uplinks. Returns the brokers,
/// the agent and what `damage` returned.
async fn damage_and_restart<T>(
    dir: &Path,
    what: &str,
    kept: usize,
    damage: impl FnOnce(&Path) -> T,
) -> (Mosquitto, Kafka, Agent, T) {
    let mqtt = Mosquitto::start(dir);
    let mut kafka = Kafka::start(dir);
    topics(&kafka);
    let config = config_with(&dir.join("buffer"), &mqtt, &kafka, KEY, "", "");
    let mut agent = Agent::start(dir, &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    kafka.stop();
    spilled_backlog_then_kill(&mut agent, &mqtt, 1, 20).await;
    let damaged = damage(&dir.join("buffer"));
    kafka.start_again();

    let log_before = read_log(dir).len();
    agent.start_again();
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let log = read_log(dir)[log_before..].to_string();
    let broken = broken_dirs(dir);
    assert!(
        log.contains("moved to") && broken.len() == kept,
        "{what}: the damaged database was not moved aside (aside: {broken:?})\nlog:\n{log}"
    );
    let fresh = 100;
    publish_all(mqtt.port(), uplinks_at(fresh).as_slice()).await;
    let acked: Vec<(usize, u32)> = (0..3).map(|d| (d, fresh)).collect();
    let v = verify(&kafka, &acked);
    assert!(v.lost.is_empty(), "{what}: new uplinks lost: {:?}", v.lost);
    assert!(agent.alive(), "{what}: {}", agent.logs());
    (mqtt, kafka, agent, damaged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flipped_bytes_in_the_buffer_are_moved_aside_and_the_agent_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, _kafka, mut agent, flipped) =
        damage_and_restart(dir.path(), "flipped bytes", 1, flip_bytes).await;
    assert!(
        read_log(dir.path()).contains("will not open"),
        "said loudly"
    );
    summary(format!(
        "faults: test=flipped_bytes flipped={flipped} moved_aside={} alive={}",
        broken_dirs(dir.path()).len(),
        agent.alive()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_buffer_log_is_reported_and_what_is_left_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, _kafka, mut agent, ()) =
        damage_and_restart(dir.path(), "truncated log", 0, |buffer| {
            let log_file = buffer.join("sled/db");
            let len = std::fs::metadata(&log_file).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&log_file)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        })
        .await;
    let log = read_log(dir.path());
    assert!(
        log.contains("lost records it had flushed"),
        "the loss was not reported:\n{log}"
    );
    let said = log
        .lines()
        .find(|l| l.contains("salvage done"))
        .unwrap_or_else(|| panic!("the salvage did not finish:\n{log}"));
    let kept: u64 = said
        .split("carried ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of carried records in: {said}"));
    // What the truncated database still held is sent, then the three new uplinks.
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == kept + 3);
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    summary(format!(
        "faults: test=truncated_log acknowledged=60 carried={kept} reported_lost={} alive={}",
        60 - kept,
        agent.alive()
    ));
}

// ---------------------------------------------------------------------------
// A full disk under the buffer.

/// `[1, 2, 3, 7, 8]` -> `[(1, 3), (7, 8)]`, for readable assertion messages.
fn runs(xs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &x in xs {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == x => *end = x,
            _ => out.push((x, x)),
        }
    }
    out
}

/// Another program fills the disk while Kafka is down: hubgate keeps running, stops the
/// buffer from growing, drops the oldest records (counted, reason in the log) and is back to
/// normal once space returns. Every acknowledged uplink is either in Kafka or counted.
/// What each device's topic lacks of FCnt `1..=last` under `drop_oldest`: one run of old
/// uplinks (the first few may have been on their way to Kafka when they were dropped from
/// the buffer, and arrive) that ends before `kept_from`. Returns (delivered, missing) summed
/// over the devices; `context` leads every failure message.
fn dropped_oldest(
    kafka: &Kafka,
    confirmed: usize,
    last: u64,
    kept_from: u64,
    context: &str,
) -> (usize, usize) {
    let (mut delivered, mut missing_total) = (0, 0);
    for (eui, topic) in DEVICES {
        let fcnts: BTreeSet<u64> = consume(kafka, topic, confirmed / 3)
            .iter()
            .map(|(_, b)| fcnt(b))
            .collect();
        let missing: Vec<u64> = (1..=last).filter(|f| !fcnts.contains(f)).collect();
        if let (Some(a), Some(b)) = (missing.first(), missing.last()) {
            assert_eq!(
                missing.len() as u64,
                b - a + 1,
                "{context}\n{eui}: dropped uplinks are not one run of the oldest: {:?}",
                runs(&missing)
            );
            assert!(
                *b < kept_from,
                "{context}\n{eui}: uplinks from {kept_from} on were dropped: {missing:?}"
            );
        }
        delivered += fcnts.len();
        missing_total += missing.len();
    }
    (delivered, missing_total)
}

/// A tmpfs of `size` under `dir` for the buffer, a broker, and Kafka with the topics made,
/// then stopped: the tests start in an outage.
fn outage_on_a_small_disk(dir: &Path, size: &str) -> (Tmpfs, Mosquitto, Kafka) {
    let disk = Tmpfs::mount(dir.join("disk"), size);
    let (mqtt, kafka) = brokers_with_the_sink_down(dir);
    (disk, mqtt, kafka)
}

/// mosquitto, and tansu with the topics made, then stopped: an outage from the start.
fn brokers_with_the_sink_down(dir: &Path) -> (Mosquitto, Kafka) {
    let mqtt = Mosquitto::start(dir);
    let mut kafka = Kafka::start(dir);
    topics(&kafka);
    kafka.stop();
    (mqtt, kafka)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_drops_oldest_counted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, mqtt, mut kafka) = outage_on_a_small_disk(dir.path(), "24m");
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 14 << 20]).unwrap();
    let config = config_with(
        &disk.0.join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        r#"min_free = "6MiB""#,
        "",
    );
    // Kafka being down, the sink gives up on a record at message.timeout.ms, and only then
    // counts its drop if the buffer dropped it meanwhile: short, so the count is final soon.
    let config = changed(
        &config,
        &[(
            "\"message.timeout.ms\" = \"30000\"",
            "\"message.timeout.ms\" = \"5000\"",
        )],
    );
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    // Far more than fits in the 4 MiB left above min_free.
    let before: Vec<(String, String)> = (1..=1500).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &before).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == before.len() as u64);
    // A record dropped while the sink holds it counts once the sink gives up on it (Kafka is
    // down: at message.timeout.ms); with none in flight, and none pushed, every drop is in.
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == 0);
    let dropped = agent.metric("hubgate_dropped_total{reason=\"disk_full\"}");
    assert!(
        dropped > 0,
        "nothing dropped on a full disk:\n{}",
        agent.logs()
    );
    assert!(read_log(dir.path()).contains("reason disk_full"));

    // Space comes back: new uplinks are buffered without drops.
    std::fs::remove_file(&filler).unwrap();
    let after: Vec<(String, String)> = (1501..=1530).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &after).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| {
        v == (before.len() + after.len()) as u64
    });
    let buffered = agent.metric("hubgate_buffer_records");

    kafka.start_again();
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    // The last reports: each drop held for a record in flight is counted or forgotten.
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == 0);
    let dropped_total = agent.metric("hubgate_dropped_total{reason=\"disk_full\"}");
    assert!(agent.metric("hubgate_dropped_total{reason=\"full\"}") == 0);
    let published = before.len() + after.len();
    let confirmed = agent.metric("hubgate_delivered_total") as usize;
    // Nothing published after space came back (1501..) may be missing.
    let (delivered, missing_total) =
        dropped_oldest(&kafka, confirmed, 1530, 1501, "faults: test=disk_full");
    let line = summary(format!(
        "faults: test=disk_full published={published} confirmed={confirmed} delivered={delivered} dropped_disk_full={dropped_total} buffered_at_recovery={buffered} lost_uncounted={}",
        missing_total.saturating_sub(dropped_total as usize)
    ));
    assert!(dropped_total > 0, "{line}");
    assert!(
        missing_total as u64 <= dropped_total,
        "{line}: every acknowledged uplink is delivered or counted as dropped"
    );
    assert!(
        dropped_total == dropped,
        "{line}: dropped after space came back"
    );
    assert!(agent.alive());
}

/// With `min_free` under the reserve's 8 MiB the buffer itself takes the disk below the mark
/// at which the reserve is given back. The room that gives back is for sled's flushes (the
/// drain's among them): records must not take it until the reserve is made again, or the
/// next flush finds the disk full, and a failed flush stops hubgate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_leave_the_room_of_a_reserve_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, mqtt, mut kafka) = outage_on_a_small_disk(dir.path(), "20m");
    let buffer = disk.0.join("buffer");
    let config = config_with(&buffer, &mqtt, &kafka, KEY, r#"min_free = "1MiB""#, "");
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    assert!(hubgate::buffer::reserve::present(&buffer));
    // Far more than the disk holds.
    let sent: Vec<(String, String)> = (1..=6000).flat_map(uplinks_at).collect();
    for chunk in sent.chunks(3_000) {
        publish_all(mqtt.port(), chunk).await;
    }
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == sent.len() as u64);
    let free = hubgate::buffer::disk::free(&disk.0).unwrap();
    assert!(
        free >= hubgate::buffer::reserve::BYTES - (1 << 20),
        "{free} bytes free: records took the reserve's room"
    );
    assert!(agent.metric("hubgate_dropped_total{reason=\"disk_full\"}") > 0);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"disk_reserve_used\"}"),
        1
    );
    let kept = agent.metric("hubgate_buffer_records");
    kafka.start_again();
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    assert!(agent.metric("hubgate_delivered_total") >= kept);
    assert!(agent.alive());
}

/// Two Kafka outages in a row on a small disk. The first fills it: the buffer keeps the
/// newest records that fit (drops counted, logged once, not per record). Once it has
/// drained, the segment files of the delivered records are deleted (no rebuild needed), so
/// the second outage is buffered in full without a restart or a purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_outages_on_a_small_disk_keep_the_newest_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, mqtt, mut kafka) = outage_on_a_small_disk(dir.path(), "12m");
    let config = config_with(
        &disk.0.join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        r#"min_free = "6MiB""#,
        "",
    );
    let agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    // Outage 1: far more than the ~6 MiB above min_free hold.
    let first: Vec<(String, String)> = (1..=2000).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &first).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == first.len() as u64);
    let kept = agent.metric("hubgate_buffer_records");
    kafka.start_again();
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    // A record dropped while the sink held it counts at the sink's report on it: with none
    // in flight, every drop of the outage is in.
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == 0);
    let dropped = agent.metric("hubgate_dropped_total{reason=\"disk_full\"}");
    // The drained segments go once a flush made their removals durable (within a second):
    // then the disk is above min_free again, with room for the second outage.
    let deadline = Instant::now() + WAIT;
    while hubgate::buffer::disk::free(&disk.0).is_none_or(|f| f < 7 << 20) {
        assert!(
            Instant::now() < deadline,
            "the drained buffer kept its disk space"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Outage 2: the same disk takes it all in.
    kafka.stop();
    let second: Vec<(String, String)> = (2001..=2100).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &second).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| {
        v == (first.len() + second.len()) as u64
    });
    let buffered_second = agent.metric("hubgate_buffer_records");
    kafka.start_again();
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 0);
    agent.wait_metric("hubgate_in_flight", WAIT, |v| v == 0);
    let dropped_total = agent.metric("hubgate_dropped_total{reason=\"disk_full\"}");

    let log = read_log(dir.path());
    let drop_lines = log
        .lines()
        .filter(|l| l.contains("reason disk_full") && !l.contains("DEBUG"))
        .count();
    let line = summary(format!(
        "faults: test=two_outages_small_disk published={} dropped_disk_full={dropped} kept_first={kept} buffered_second={buffered_second} dropped_second={} drop_log_lines={drop_lines}",
        first.len() + second.len(),
        dropped_total - dropped
    ));
    assert!(
        dropped > 0 && kept > 0,
        "{line}: the disk filled up, the newest stayed"
    );
    assert_eq!(dropped_total, dropped, "{line}: drops in the second outage");
    assert_eq!(buffered_second, second.len() as u64, "{line}");
    assert!(drop_lines <= 2, "{line}: one line per reason and minute");
    let confirmed = agent.metric("hubgate_delivered_total") as usize;
    // Only the oldest of the first outage may be missing.
    dropped_oldest(&kafka, confirmed, 2100, 2000, &line);
}

/// The disk fills to the last byte while hubgate is stopped (a reboot onto a full SD card,
/// another program's files; `min_free` only holds the buffer back). With the sink back, the
/// next start must deliver the acknowledged backlog, which is also what frees the disk,
/// rather than fail its start on ENOSPC (under systemd: a restart loop) with the records
/// stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_full_at_start_still_drains_the_buffer() {
    disk_full_then_drain(true).await;
}

/// The same with hubgate running: the disk fills to the last byte while the sink is down;
/// the sink comes back. The drain's removals would fail sled's flush, which stops hubgate by
/// design (exit 1: what was written cannot be trusted): the flush must find room and the
/// agent run on and deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_full_while_running_still_drains_the_buffer() {
    disk_full_then_drain(false).await;
}

async fn disk_full_then_drain(restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (disk, mqtt, mut kafka) = outage_on_a_small_disk(dir.path(), "24m");
    let buffer = disk.0.join("buffer");
    let config = config_with(&buffer, &mqtt, &kafka, KEY, r#"min_free = "1MiB""#, "");
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    // Made at the start, while the disk had room.
    assert!(hubgate::buffer::reserve::present(&buffer));
    let n = 50u32;
    let sent: Vec<(String, String)> = (1..=n).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &sent).await;
    let total = sent.len() as u64;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == total);
    assert_eq!(agent.metric("hubgate_buffer_records"), total);
    if restart {
        assert!(agent.terminate(WAIT).success());
    }
    fill(&disk.0.join("filler"));
    let free = hubgate::buffer::disk::free(&disk.0);
    assert!(free.is_some_and(|f| f < 64 << 10), "{free:?} left");
    kafka.start_again();
    if restart {
        agent.begin_again();
    }
    // The gauge reads 0 before the buffer is open: only a process that delivered has drained.
    let deadline = Instant::now() + WAIT;
    let delivered = loop {
        if !agent.alive() {
            let status = agent.wait_exit(WAIT, "a full disk");
            panic!(
                "hubgate ended ({status}) on a full disk, {total} acknowledged records in its \
                 buffer and the sink up:\n{}",
                read_log(dir.path())
            );
        }
        let drained = agent.scrape().map(|t| {
            (
                support::agent::metric_value(&t, "hubgate_delivered_total"),
                support::agent::metric_value(&t, "hubgate_buffer_records"),
            )
        });
        if let Some((delivered, 0)) = drained.filter(|(d, _)| *d > 0) {
            break delivered;
        }
        assert!(
            Instant::now() < deadline,
            "delivered and buffered {drained:?} of {total}:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Nothing was delivered before the disk filled: the whole backlog went in this run.
    assert_eq!(delivered, total);
    // Running, the reserve goes when the removals' flush starts, which can come after the
    // gauges read 0: waited for. A flush that failed without it would end the agent (the
    // `terminate` below would not succeed).
    agent.wait_metric(
        "hubgate_problems_total{kind=\"disk_reserve_used\"}",
        WAIT,
        |v| v == 1,
    );
    assert!(
        !hubgate::buffer::reserve::present(&buffer),
        "made again on a full disk"
    );
    // Every acknowledged uplink is in Kafka, once: no flush failed, so no removal was lost.
    let acked = every_device(1..=n);
    let v = verify(&kafka, &acked);
    let line = v.line(
        if restart {
            "disk_full_at_start"
        } else {
            "disk_full_running"
        },
        0,
    );
    v.assert_ok(&line);
    assert_eq!(v.duplicates, 0, "{line}");
    assert!(agent.terminate(WAIT).success());
}

/// The card refuses the writes of a flush (a failing SD card): the fsync fails, and hubgate
/// stops, as nothing written since the last flush can be trusted to be on the card. Linux
/// keeps the pages it could not write in the page cache, marked clean: the next start reads
/// those records back from there, and their fsync succeeds without writing them. The broker
/// sends the unacknowledged uplinks again, and each must be acknowledged only once its
/// record is on the card: after the power goes, every uplink acknowledged is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_a_failed_sync_left_only_in_the_page_cache_are_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let card = Card::mount(dir.path());
    let (mqtt, mut kafka) = brokers_with_the_sink_down(dir.path());
    let config = config_with(
        &card.path().join("buffer"),
        &mqtt,
        &kafka,
        KEY,
        r#"min_free = "1MiB""#,
        "",
    );
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);

    card.fail_writes();
    let sent = uplinks_at(1);
    publish_all(mqtt.port(), &sent).await;
    let status = agent.wait_exit(WAIT, "a flush the card refused");
    let log = read_log(dir.path());
    assert!(
        !status.success() && log.contains("cannot be trusted to be on disk"),
        "hubgate did not stop on the failed sync ({status}):\n{log}"
    );

    // The card takes writes again; the broker sends the three uplinks again.
    card.take_writes();
    agent.start_again();
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == sent.len() as u64);
    assert!(agent.terminate(WAIT).success());
    card.power_cut();
    kafka.start_again();
    agent.start_again();
    let acked = every_device(1..=1);
    let v = verify(&kafka, &acked);
    let line = summary(v.line("failed_sync_then_power_cut", 0));
    v.assert_ok(&line);
    assert!(agent.terminate(WAIT).success(), "{line}");
}

/// Wait until the running hubgate has acknowledged `want` uplinks; a hubgate that ends
/// first fails the test with its log (`what`: the situation, for the message).
fn acked_or_ended(agent: &mut Agent, dir: &Path, want: u64, what: &str) {
    if !reached_or_ended(agent, "hubgate_acked_total", want) {
        let status = agent.wait_exit(WAIT, what);
        let log = read_log(dir);
        let last = log.lines().rev().find(|l| !l.trim().is_empty());
        panic!(
            "hubgate ended ({status}) {what}, the sink up, before acknowledging {want} \
             uplink(s); its last line: {last:?}\n{}",
            support::log_tail(&dir.join("hubgate.log"))
        );
    }
}

/// Wait until the running hubgate's `metric` is at least `want` (true), or it has ended.
fn reached_or_ended(agent: &mut Agent, metric: &str, want: u64) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if !agent.alive() {
            return false;
        }
        let v = (agent.scrape()).map(|t| support::agent::metric_value(&t, metric));
        if v.is_some_and(|v| v >= want) {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} = {v:?}, not {want}:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The card turns read-only while nothing is buffered (the sink keeps up): uplinks go on
/// from memory, needing no disk. A stop then (SIGTERM: a shutdown, `systemctl restart`)
/// must end in an exit, its acknowledgements sent, rather than abort on a panic as the
/// buffer is closed: 0, or 1 when sled had something of its own to write (it flushes its
/// log on a timer of its own) and the stop's last flush met the read-only card.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_on_a_card_turned_read_only_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let card = Card::mount(dir.path());
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    let config = config_with(&card.path().join("buffer"), &mqtt, &kafka, KEY, "", "");
    // Nothing is buffered while the sink answers within this.
    let config = changed(
        &config,
        &[("spill_after = \"500ms\"", "spill_after = \"30s\"")],
    );
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    publish_all(mqtt.port(), &uplinks_at(1)).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 3);
    assert_eq!(agent.metric("hubgate_buffer_records"), 0);

    card.go_read_only();
    publish_all(mqtt.port(), &uplinks_at(2)).await;
    acked_or_ended(&mut agent, dir.path(), 6, "after the card turned read-only");
    let status = agent.terminate(WAIT);
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "a stop on a read-only card ended with {status}:\n{}",
        agent.logs()
    );
    let acked = every_device(1..=2);
    let v = verify(&kafka, &acked);
    let line = summary(v.line("stop_on_read_only", 0));
    v.assert_ok(&line);
}

/// A card under `dir` holding a backlog of `rounds` uplinks of each device, acknowledged
/// into the buffer there while the sink was down: the card, the brokers (Kafka stopped) and
/// the agent, running.
async fn a_backlog_on_a_card(dir: &Path, rounds: u32) -> (Card, Mosquitto, Kafka, Agent) {
    let card = Card::mount(dir);
    let (mqtt, kafka) = brokers_with_the_sink_down(dir);
    let config = config_with(&card.path().join("buffer"), &mqtt, &kafka, KEY, "", "");
    let agent = Agent::start(dir, &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let backlog: Vec<(String, String)> = (1..=rounds).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &backlog).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == backlog.len() as u64);
    (card, mqtt, kafka, agent)
}

/// Whatever hubgate does on a card turned read-only, every uplink it acknowledged before is
/// delivered once the card is checked and writable again (the next boot's fsck).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_read_only_until_fsck_keeps_every_acknowledged_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let (card, _mqtt, mut kafka, mut agent) = a_backlog_on_a_card(dir.path(), 20).await;
    let n = 20 * DEVICES.len() as u64;

    card.go_read_only();
    kafka.start_again();
    // The backlog goes to the sink; its removals cannot be written (the run may end there).
    reached_or_ended(&mut agent, "hubgate_delivered_total", n);
    agent.kill();
    card.repair();
    agent.start_again();
    let acked = every_device(1..=20);
    let v = verify(&kafka, &acked);
    let line = summary(v.line("read_only_until_fsck", 0));
    v.assert_ok(&line);
    assert!(agent.terminate(WAIT).success(), "{line}");
}

/// A card turned read-only (a failed write under `errors=remount-ro`) stays so until the
/// next boot checks it. hubgate stops at the first write the card refuses, as nothing since
/// the last flush can be trusted; the start after it, as systemd makes it, runs without the
/// buffer rather than stop again: uplinks go to the sink from memory, each acknowledged on
/// its confirmation, the uplinks it had not acknowledged among them, and the backlog on the
/// card goes once the check has made it writable again: after them, out of each device's
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_turned_read_only_is_served_from_memory_until_its_check() {
    served_from_memory_until_the_check(Card::go_read_only, "read_only").await;
}

/// The same where the kernel shuts the file system down instead (Linux 6.6 to 6.14 under
/// `errors=remount-ro`): every write and read fails with EIO.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_shut_down_is_served_from_memory_until_its_check() {
    served_from_memory_until_the_check(Card::shut_down, "shut_down").await;
}

/// The same where ext4 meets an error by its own error path, counted, and fails the card as
/// the running kernel does under `errors=remount-ro`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_that_met_an_error_is_served_from_memory_until_its_check() {
    served_from_memory_until_the_check(Card::meet_an_error, "met_an_error").await;
}

/// A file system read-only under a read-write bind (a read-only root under a state
/// directory mounted read-write) refuses writes with EROFS as a card that failed does on a
/// kernel that shows no mark of it (before 6.15): what tells them apart is an error ext4
/// counted since this boot. Without one it is not taken for a failed card (the start stops,
/// saying so); with one, it is.
#[test]
fn a_read_only_file_system_is_a_failed_card_only_with_an_error_counted() {
    let dir = tempfile::tempdir().unwrap();
    let card = Card::mount(dir.path());
    // Errors counted, the file system left as it is.
    card.remount("errors=continue");
    let buffer = card.path().join("buffer");
    std::fs::create_dir(&buffer).unwrap();
    let bind = Bind::of(card.path(), &dir.path().join("state"), false);
    let through_bind = bind.0.join("buffer");
    card.remount("ro");
    let refused = std::fs::write(through_bind.join("probe"), "x").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));
    assert!(!hubgate::buffer::disk::card_failed(&through_bind));
    card.remount("rw");
    card.meet_an_error();
    card.remount("ro");
    assert!(hubgate::buffer::disk::card_failed(&through_bind));
    assert!(
        !hubgate::buffer::disk::card_failed(&buffer),
        "the card's own mount is read-only"
    );
}

/// A backlog buffered on the card, then `fail` (the card failing for good), then uplinks;
/// `name`: the test's, for its summary lines.
async fn served_from_memory_until_the_check(fail: fn(&Card), name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (card, mqtt, mut kafka, mut agent) = a_backlog_on_a_card(dir.path(), 5).await;

    fail(&card);
    publish_all(mqtt.port(), &uplinks_at(6)).await;
    let status = agent.wait_exit(WAIT, "a write to the failed card");
    let log = read_log(dir.path());
    // At the write the card refused, not retried as one that may work later (until a
    // flush of sled's log failed, up to a minute later).
    assert!(
        !status.success() && !log.contains("[buffer_write_error]"),
        "{status}:\n{log}"
    );

    kafka.start_again();
    agent.start_again();
    agent.wait_metric(
        "hubgate_problems_total{kind=\"buffer_read_only\"}",
        WAIT,
        |v| v == 1,
    );
    publish_all(mqtt.port(), &uplinks_at(7)).await;
    // The broker's three again, and three new ones.
    acked_or_ended(&mut agent, dir.path(), 6, "on a failed card");
    assert_eq!(agent.metric("hubgate_buffer_records"), 0);
    let from_memory = every_device(6..=7);
    let v = verify(&kafka, &from_memory);
    v.assert_ok(&summary(v.line(&format!("{name}_from_memory"), 0)));
    assert!(
        agent.terminate(WAIT).success(),
        "a stop without the buffer:\n{}",
        agent.logs()
    );

    card.repair();
    agent.start_again();
    let acked = every_device(1..=7);
    let v = verify(&kafka, &acked);
    let line = summary(v.line(&format!("{name}_then_checked"), 0));
    assert!(
        v.lost.is_empty() && v.id_mismatch.is_empty(),
        "{line}\n{v:?}"
    );
    // Each device's order breaks once, where the backlog follows what went from memory.
    let after_memory: Vec<(usize, u64, u64)> = (0..DEVICES.len()).map(|d| (d, 1, 7)).collect();
    assert_eq!(v.out_of_order, after_memory, "{line}");
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"buffer_read_only\"}"),
        0
    );
    assert!(agent.terminate(WAIT).success(), "{line}");
}

/// On a card turned read-only no dead letter can be written. An uplink kept as one (its
/// payload is not base64) must not hold the uplinks after it: they go to a sink that
/// confirms, as every record does while hubgate runs without its buffer. The card is
/// read-only from the first start, before the buffer directory was made on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uplink_kept_as_a_dead_letter_does_not_hold_the_input_of_a_read_only_card() {
    let dir = tempfile::tempdir().unwrap();
    let card = Card::mount(dir.path());
    card.go_read_only();
    let mqtt = Mosquitto::start(dir.path());
    let config = format!(
        "{}[sink]\ntype = \"stdout\"\n",
        three_devices(&card.path().join("buffer"), &mqtt, "")
    );
    let mut agent = Agent::start_with_stdout(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let read_only = "hubgate_problems_total{kind=\"buffer_read_only\"}";
    assert_eq!(agent.metric(read_only), 1);
    publish_all(mqtt.port(), &uplinks_at(1)).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 3);

    let bad_b64 =
        chirpstack_uplink(TH, 100, 103, &tbhh100(20, 50)).replace("\"data\":\"", "\"data\":\"!!");
    publish_all(mqtt.port(), &[(uplink_topic(TH), bad_b64)]).await;
    publish_all(mqtt.port(), &uplinks_at(2)).await;
    // Every uplink acknowledged, the one only counted as a dead letter among them.
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == 7);
    let counts = [
        "hubgate_delivered_total",
        "hubgate_problems_total{kind=\"dead_letter_not_kept\"}",
        "hubgate_problems_total{kind=\"buffer_write_error\"}",
    ]
    .map(|m| agent.metric(m));
    assert_eq!(
        counts,
        [6, 1, 0],
        "(delivered, letters only counted, refusals) after the dead letter and three uplinks"
    );
    assert!(agent.terminate(WAIT).success(), "{}", agent.logs());
}

/// A buffer directory that is read-only by its mount (`ProtectSystem=strict` without the
/// `ReadWritePaths=` a `buffer.path` outside `/var/lib/hubgate` needs, or an `ro` line in
/// fstab), not by a card that failed a write: the start fails, as docs/operations.md says,
/// rather than run without the buffer for good, telling the operator to reboot, while the
/// buffer's backlog stays unsent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buffer_read_only_by_its_mount_is_not_taken_for_a_failed_card() {
    let dir = tempfile::tempdir().unwrap();
    let usb = dir.path().join("usb");
    std::fs::create_dir(&usb).unwrap();
    let (mqtt, mut kafka) = brokers_with_the_sink_down(dir.path());
    let config = config_with(&usb.join("buffer"), &mqtt, &kafka, KEY, "", "");
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let backlog: Vec<(String, String)> = (1..=3).flat_map(uplinks_at).collect();
    publish_all(mqtt.port(), &backlog).await;
    agent.wait_metric("hubgate_acked_total", WAIT, |v| v == backlog.len() as u64);
    assert!(agent.terminate(WAIT).success(), "{}", agent.logs());

    let read_only = Bind::of(&usb, &usb, true);
    kafka.start_again();
    agent.begin_again();
    let status = agent.wait_exit(WAIT, "a start on a buffer mounted read-only");
    let log = agent.full_log();
    let said = log.lines().find(|l| l.contains("[buffer_read_only]"));
    assert!(
        !status.success() && said.is_none() && log.contains("it is mounted read-only"),
        "runs without its buffer ({status}), {} acknowledged uplinks left in it unsent: {said:?}\n{log}",
        backlog.len()
    );
    // Mounted read-write again, the start sends them.
    drop(read_only);
    agent.start_again();
    let acked = every_device(1..=3);
    let v = verify(&kafka, &acked);
    let line = summary(v.line("mounted_read_only", 0));
    v.assert_ok(&line);
    assert!(agent.terminate(WAIT).success(), "{line}");
}

/// `dir` mounted again at `at`, read-only with `read_only` (as systemd's `ProtectSystem=`
/// makes them), until dropped.
struct Bind(PathBuf);

impl Bind {
    fn of(dir: &Path, at: &Path, read_only: bool) -> Bind {
        std::fs::create_dir_all(at).unwrap();
        support::run_ok(
            std::process::Command::new("mount")
                .arg("--bind")
                .arg(dir)
                .arg(at),
        );
        let bind = Bind(at.to_path_buf());
        if read_only {
            support::run_ok(
                std::process::Command::new("mount")
                    .args(["-o", "remount,bind,ro"])
                    .arg(at),
            );
        }
        bind
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Where [`make_an_old_buffer_of_readings`] writes, when this binary runs it as a process of
/// its own.
const OLD_READINGS: &str = "HUBGATE_TEST_OLD_READINGS";
/// Readings in that buffer, and the padding of each: about 40 MB in all.
const OLD_READINGS_N: u64 = 8000;
const OLD_READING_PAD: usize = 5000;

/// Not a test of its own: when [`OLD_READINGS`] names a buffer, writes it in the layout of
/// the releases before the segment files (the records' bodies in sled's tree `records`),
/// holding [`OLD_READINGS_N`] readings. Run in a process of its own, so that sled's lock is
/// gone with it before hubgate opens the database.
#[test]
fn make_an_old_buffer_of_readings() {
    let Some(buffer) = std::env::var_os(OLD_READINGS) else {
        return;
    };
    let db = sled::open(Path::new(&buffer).join("sled")).unwrap();
    let records = db.open_tree("records").unwrap();
    let now = hubgate::record::ms_since_epoch(std::time::SystemTime::now());
    for seq in 0..OLD_READINGS_N {
        let pad = "x".repeat(OLD_READING_PAD);
        let body = format!("{{\"reading\":{seq},\"pad\":\"{pad}\"}}");
        let value = buffer_cmd::stored_record(seq, now, body);
        records.insert(seq.to_be_bytes(), value).unwrap();
    }
    db.flush().unwrap();
}

/// The first start of this release on a buffer of an earlier layout, on a disk without room
/// for a second copy of its readings (the upgrade writes each body to a segment file, and
/// sled's files do not shrink as its old tree empties). A move started anyway filled the
/// disk to its last byte, and from then on sled could not open the database at all, at
/// every restart. The start is refused before anything moves, saying how much to free; once
/// that is freed, the next start moves and sends every reading.
#[test]
fn an_upgrade_on_a_disk_without_room_for_a_second_copy_says_what_to_free_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(dir.path().join("disk"), "160M");
    let buffer = disk.0.join("buffer");
    std::fs::create_dir(&buffer).unwrap();
    let made = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["make_an_old_buffer_of_readings", "--exact"])
        .env(OLD_READINGS, &buffer)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    // The disk is down to the 16 MiB the earlier release left free (its default `min_free`):
    // it buffered until the disk was full to that mark, in an outage longer than the disk's
    // room. Under half of the readings' size.
    let free = hubgate::buffer::disk::free(&buffer).unwrap();
    let taken = disk.0.join("taken");
    std::fs::write(&taken, vec![1u8; (free - (16 << 20)) as usize]).unwrap();
    let config = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
         [sink]\ntype = \"stdout\"\n",
        buffer.display(),
        support::free_udp_port()
    );
    // Its metrics are served before the buffer opens: not waited for.
    let mut agent = Agent::begin(dir.path(), &config);
    let status = agent.wait_exit(WAIT, "a start without room");
    assert!(!status.success(), "{status}:\n{}", agent.logs());
    let log = agent.full_log();
    assert!(
        log.contains(&format!(
            "{OLD_READINGS_N} record(s) of an earlier release's layout"
        )) && log.contains("nothing was moved. Free "),
        "{log}"
    );
    let left = hubgate::buffer::disk::free(&buffer).unwrap();
    assert!(left >= 15 << 20, "the disk was filled: {left} bytes left");
    std::fs::remove_file(&taken).unwrap();
    let mut agent = Agent::start_with_stdout(dir.path(), &config);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == OLD_READINGS_N);
    assert!(agent.terminate(WAIT).success());
    let mut readings: Vec<u64> = agent
        .stdout_lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reading"]
                .as_u64()
                .unwrap()
        })
        .collect();
    readings.sort_unstable();
    assert_eq!(readings, (0..OLD_READINGS_N).collect::<Vec<_>>());
}
