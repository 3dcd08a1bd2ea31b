//! Phase 6 (`--bridge`): the hand-written Python bridge (`scripts/bridge/bridge.py`, paho-mqtt +
//! confluent-kafka) on the same brokers and load, measured the way hubgate is: latency at
//! the fixed rates up to 1,000/s, and the throughput, CPU and peak RSS of a backlog waiting
//! in its persistent session.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use super::cost;
use super::{
    cpu_seconds, high_watermarks, publish, status_kb, wait_for, Latency, LatencyConsumer, Load,
    Options, Stamps, WAIT,
};
use crate::support::{Kafka, Mosquitto};

#[derive(Debug, Clone, Default)]
pub struct BridgeReport {
    pub latency: Vec<Latency>,
    pub records: u64,
    pub throughput_per_s: f64,
    pub cpu_s_per_1000: f64,
    pub peak_rss_kb: u64,
    pub idle: cost::Idle,
    pub live: Vec<cost::Live>,
}

struct Bridge {
    child: Child,
    log: std::path::PathBuf,
}

impl Bridge {
    /// Start it and wait until its subscription is granted.
    fn start(dir: &Path, mqtt: &Mosquitto, kafka: &Kafka) -> Bridge {
        let log = dir.join("bridge.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bridge/run.sh");
        let mut child = Command::new(script)
            .env("BRIDGE_MQTT_PORT", mqtt.port().to_string())
            .env("BRIDGE_KAFKA", kafka.bootstrap())
            .env("BRIDGE_CLIENT_ID", "bench-bridge")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("bridge log"))
            .spawn()
            .expect("start scripts/bridge/run.sh");
        // Its output is read to the end on a thread (a closed pipe would kill it), and the
        // first "subscribed" is awaited within the harness's bound.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "subscribed" {
                    let _ = tx.send(());
                }
            }
        });
        let bridge = Bridge { child, log };
        if rx.recv_timeout(WAIT).is_err() {
            panic!(
                "the bridge did not subscribe within {WAIT:?}:\n{}",
                bridge.logs()
            );
        }
        bridge
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        crate::support::log_tail(&self.log)
    }

    /// SIGTERM (it disconnects and flushes its producer); dropped (killed) if it is still
    /// there after the harness's bound.
    fn stop(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A panicking phase leaves no bridge behind.
impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the bridge after hubgate's phases; uplinks continue from sequence number `seq`.
pub fn run(
    rt: &tokio::runtime::Runtime,
    mqtt: &Mosquitto,
    kafka: &Kafka,
    load: &Load,
    opts: &Options,
    dir: &Path,
    mut seq: u64,
) -> BridgeReport {
    let dir = dir.join("bridge");
    std::fs::create_dir_all(&dir).unwrap();
    let mut report = BridgeReport::default();
    let bridge = Bridge::start(&dir, mqtt, kafka);
    report.idle = cost::idle(bridge.pid(), opts.idle);
    let rates: Vec<_> = opts.rates.iter().filter(|(r, _)| *r <= 1_000).collect();
    let end = seq
        + rates
            .iter()
            .map(|(r, d)| super::rate_records(*r, *d))
            .sum::<u64>();
    let stamps = Arc::new(Stamps::new(end));
    let consumer = LatencyConsumer::start(kafka, load, stamps.clone());
    let mut runs = Vec::new();
    // Numbered as hubgate's measured runs; the bridge has no warm-up run.
    for (run, &&(rate, duration)) in (1..).zip(&rates) {
        let range = seq..seq + super::rate_records(rate, duration);
        let before = cost::Sample::take(bridge.pid());
        rt.block_on(publish(
            mqtt,
            load,
            range.clone(),
            Some(rate),
            Some(stamps.clone()),
        ));
        report
            .latency
            .push(stamps.wait_latency(rate, range.clone(), || bridge.logs()));
        let after = cost::Sample::take(bridge.pid());
        let records = range.end - range.start;
        report
            .live
            .push(cost::live(rate, records, &before, &after, &report.idle));
        runs.push((run, rate, range.clone()));
        stamps.save_to(opts, "bridge-latency.csv", &runs);
        seq = range.end;
    }
    consumer.stop();
    bridge.stop();

    report.records = opts.records;
    rt.block_on(publish(mqtt, load, seq..seq + report.records, None, None));
    let before = high_watermarks(kafka);
    let started = Instant::now();
    let bridge = Bridge::start(&dir, mqtt, kafka);
    wait_for(
        || high_watermarks(kafka) >= before + report.records,
        || bridge.logs(),
    );
    report.throughput_per_s = report.records as f64 / started.elapsed().as_secs_f64();
    // From its start, like the timing: the interpreter's start-up (~0.1 s) is included.
    report.cpu_s_per_1000 = cpu_seconds(bridge.pid()) * 1000.0 / report.records as f64;
    report.peak_rss_kb = status_kb(bridge.pid(), "VmHWM");
    bridge.stop();
    report
}
