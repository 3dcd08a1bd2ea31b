//! `--floor`: what the two libraries under hubgate cost by themselves at the same fixed rates,
//! each in a process of its own (this benchmark run again with `--floor-child`, under
//! `$HUBGATE_AGENT_WRAP` as hubgate is; `benches/pipeline/floor_child.rs`) and measured as
//! hubgate is ([`cost`]):
//! - a bare rumqttc QoS 1 subscriber on the uplinks hubgate reads: clean session, rumqttc
//!   acknowledging each message as it reads it, one current-thread runtime;
//! - a bare rdkafka producer with hubgate's settings (`base_config`: idempotent, `acks=all`,
//!   `linger.ms` 5, one request in flight; and `--set`) sending hubgate's records at the rate
//!   into the two topics hubgate writes them to (a third to motion, as the broker-alone floor
//!   does) from one thread, which sleeps until each next record and serves the reports then.
//!   Its settings go to it on its standard input, not its command line: with `--tls` they
//!   hold the SASL password.
//!
//! Their sum is what any agent built on these two libraries pays per record before it does
//! anything of its own: decoding, buffering, and handing records between its threads.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::{
    cost, publish, rate_records, sample_record, Load, Options, ENV, MOTION, WAIT, WARM_UP,
};
use crate::support::{agent::wrapped, Kafka, Mosquitto};

/// Each library alone: idle, then per fixed rate.
#[derive(Debug, Clone, Default)]
pub struct Floor {
    pub subscriber_idle: cost::Idle,
    pub subscriber: Vec<cost::Live>,
    pub producer_idle: cost::Idle,
    pub producer: Vec<cost::Live>,
}

/// Measure both, publishing from `seq` on.
pub fn run(
    rt: &tokio::runtime::Runtime,
    mqtt: &Mosquitto,
    kafka: &Kafka,
    load: &Load,
    opts: &Options,
    mut seq: u64,
) -> Floor {
    let rates: Vec<(u64, Duration)> = [WARM_UP].iter().chain(&opts.rates).copied().collect();
    let mut floor = Floor::default();

    let topics = crate::support::agent::uplink_topic("+");
    let mut sub = Driven::start(&["mqtt".into(), mqtt.port().to_string(), topics], &[]);
    floor.subscriber_idle = cost::idle(sub.pid(), opts.idle);
    for &(rate, duration) in &rates {
        let n = rate_records(rate, duration);
        let before = cost::Sample::take(sub.pid());
        sub.command(&format!("expect {n}"));
        rt.block_on(publish(mqtt, load, seq..seq + n, Some(rate), None));
        sub.done(Duration::ZERO);
        let after = cost::Sample::take(sub.pid());
        let live = cost::live(rate, n, &before, &after, &floor.subscriber_idle);
        floor.subscriber.push(live);
        seq += n;
    }
    drop(sub);

    let config = super::producer_config(kafka, opts);
    let body = sample_record(load, 0).body;
    let args = [
        "kafka".into(),
        ENV.into(),
        MOTION.into(),
        body,
        load.devices.to_string(),
    ];
    let settings: Vec<String> = config
        .config_map()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut producer = Driven::start(&args, &settings);
    floor.producer_idle = cost::idle(producer.pid(), opts.idle);
    for &(rate, duration) in &rates {
        let n = rate_records(rate, duration);
        let before = cost::Sample::take(producer.pid());
        producer.command(&format!("send {rate} {n}"));
        producer.done(duration);
        let after = cost::Sample::take(producer.pid());
        let live = cost::live(rate, n, &before, &after, &floor.producer_idle);
        floor.producer.push(live);
    }
    // The warm-up connects; it is not a measurement.
    floor.subscriber.remove(0);
    floor.producer.remove(0);
    floor
}

impl Floor {
    pub fn table(&self) -> String {
        let mut t = String::new();
        for (what, idle, live) in [
            (
                "rumqttc subscriber",
                &self.subscriber_idle,
                &self.subscriber,
            ),
            ("rdkafka producer", &self.producer_idle, &self.producer),
        ] {
            let _ = writeln!(
                t,
                "floor, {what} alone: idle {:.3} ms CPU/s, {:.1} wake-ups/s\n{}",
                idle.cpu_ms_per_s,
                idle.wakeups_per_s,
                idle.table()
            );
            for l in live {
                let _ = writeln!(
                    t,
                    "floor, {what} alone at {}/s: {:.1} us CPU, {:.2} switches per record, less idle\n{}",
                    l.rate,
                    l.cpu_us_per_record,
                    l.switches_per_record,
                    l.table()
                );
            }
        }
        t
    }
}

/// A floor process driven line by line: its `settings` and an empty line on its stdin first
/// (if any), then a command on its stdin, `ok` on its stdout once done; `ready` once
/// connected. Every answer is awaited within [`WAIT`] (beyond the run's own duration): a
/// floor process that hangs fails the benchmark instead of hanging it.
struct Driven {
    child: Child,
    stdin: ChildStdin,
    /// Its stdout's lines, read on a thread of their own.
    lines: Receiver<String>,
}

impl Driven {
    fn start(args: &[String], settings: &[String]) -> Driven {
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let mut child = wrapped(exe)
            .arg("--floor-child")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a floor process");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Driven {
            child,
            stdin,
            lines,
        };
        if !settings.is_empty() {
            d.command(&format!("{}\n", settings.join("\n")));
        }
        d.expect("ready", Duration::ZERO);
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .expect("command a floor process");
    }

    /// Wait for the `ok` of a command that runs for `duration`.
    fn done(&mut self, duration: Duration) {
        self.expect("ok", duration);
    }

    fn expect(&mut self, word: &str, duration: Duration) {
        let id = self.child.id();
        match self.lines.recv_timeout(duration + WAIT) {
            Ok(line) => assert_eq!(line.trim(), word, "floor process {id}"),
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "floor process {id}: no {word:?} within {:?}",
                    duration + WAIT
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("floor process {id} ended before {word:?}")
            }
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
