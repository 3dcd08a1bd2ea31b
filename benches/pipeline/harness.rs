//! The pipeline benchmark (`scripts/bench.sh`, `benches/pipeline.rs`; a smoke run in
//! `tests/bench_smoke.rs`): real mosquitto, a real Kafka-protocol broker (tansu), the hubgate
//! binary as a process, and a Rust load generator (rumqttc) in this process.
//!
//! Phases:
//! 1. ceiling: an rdkafka producer with hubgate's producer settings straight to the broker;
//! 2. start-up to ready (MQTT subscribed), idle RSS, and idle CPU and wake-ups per thread
//!    ([`cost`]);
//! 3. latency at fixed rates, MQTT publish -> record read back from the broker, CPU and
//!    context switches per record beyond idling, and what hubgate writes to disk meanwhile
//!    (the sink keeps up: it should write nothing);
//! 4. throughput: a backlog pre-loaded into hubgate's persistent MQTT session while it is
//!    stopped, then the time until the broker holds all of it (so the load generator cannot
//!    be the bottleneck); CPU and peak RSS over that run;
//! 5. outage: the broker stopped, records spilled to sled, the broker started, drain timed;
//! 6. with `--bridge`, the hand-written Python bridge on the same load ([`bridge`]);
//! 7. with `--floor`, the MQTT and Kafka libraries alone at the fixed rates ([`floor`]).
//!
//! With `--rtt MS` every Kafka client (hubgate's producer, the broker-alone producer, the
//! consumers) reaches tansu through a proxy that delays each direction by half of it
//! ([`delay`]).

mod bridge;
mod cost;
mod delay;
mod floor;
mod offcpu;

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::support::agent::{
    chirpstack_uplink, tbhh100, tbms100, uplink_topic, Agent, ENV, MOTION,
};
use crate::support::{unique, Kafka, Mosquitto};

/// What to run; [`Options::default`] is the full benchmark, [`Options::smoke`] a few seconds.
#[derive(Debug, Clone)]
pub struct Options {
    /// Devices the uplinks cycle through (a third each Browan TBHH100, Browan TBMS100,
    /// Cayenne LPP).
    pub devices: u64,
    /// (records/s, duration) of each fixed-rate latency run.
    pub rates: Vec<(u64, Duration)>,
    /// Backlog size of the throughput run (and records of the broker-alone ceiling).
    pub records: u64,
    /// Records spilled during the outage and then drained.
    pub drain_records: u64,
    /// tansu behind stunnel with SASL PLAIN, as Event Hubs (else plain TCP, no auth).
    pub tls: bool,

    /// mosquitto's `max_inflight_messages`: unacknowledged QoS 1 messages it sends hubgate.
    pub mqtt_inflight: u32,
    /// mosquitto's `set_tcp_nodelay` (its default is off: Nagle delays its PUBLISHes).
    pub mqtt_nodelay: bool,
    /// Extra librdkafka properties for hubgate's producer (`[sink.properties]`).
    pub properties: Vec<(String, String)>,
    /// Extra `[buffer]` settings (TOML values), e.g. `max_in_flight = 2000`.
    pub buffer: Vec<(String, String)>,
    /// Keep the services' and hubgate's files here (else a temporary directory).
    pub dir: Option<PathBuf>,
    /// Also measure the hand-written Python bridge (`scripts/bridge`).
    pub bridge: bool,
    /// Busy loops (threads of this process) competing for the CPU through the whole run.
    pub load: u64,
    /// How long the idle agent is watched for its CPU and wake-ups.
    pub idle: Duration,
    /// A round trip added between every Kafka client and tansu (a delaying proxy).
    pub rtt: Option<Duration>,
    /// With `dir`: sample the threads of hubgate, tansu, mosquitto and the benchmark through
    /// the fixed-rate runs into `sched.csv` ([`offcpu`]).
    pub sched: bool,
    /// Also measure the libraries alone at the fixed rates.
    pub floor: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            devices: 1000,
            rates: vec![
                (200, Duration::from_secs(10)),
                (1_000, Duration::from_secs(10)),
                (10_000, Duration::from_secs(5)),
            ],
            records: 200_000,
            drain_records: 200_000,
            tls: false,
            mqtt_inflight: 1000,
            mqtt_nodelay: false,
            properties: Vec::new(),
            buffer: Vec::new(),
            dir: None,
            bridge: false,
            load: 0,
            idle: Duration::from_secs(10),
            rtt: None,
            sched: false,
            floor: false,
        }
    }
}

impl Options {
    pub fn smoke() -> Self {
        Options {
            devices: 30,
            rates: vec![(200, Duration::from_millis(500))],
            records: 1_000,
            drain_records: 2_000,
            idle: Duration::from_secs(1),
            ..Options::default()
        }
    }
}

/// Latency percentiles of one fixed-rate run, in milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: u64,
    pub records: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// Publish -> handed to the producer (the record's Kafka create time, whole
    /// milliseconds, less the publish time): the part before librdkafka and the broker. p99
    /// and max.
    pub to_producer_p99: f64,
    pub to_producer_max: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub machine: String,
    /// Busy loops run beside the benchmark (`--load`).
    pub load: u64,
    pub broker: String,
    /// `--rtt`: the round trip added between the Kafka clients and the broker.
    pub rtt: Option<Duration>,
    pub ceiling_per_s: f64,
    pub startup_ms: f64,
    pub idle_rss_kb: u64,
    pub idle: cost::Idle,
    /// The broker alone at the same rates: hubgate's records produced straight to it.
    pub broker_latency: Vec<Latency>,
    pub latency: Vec<Latency>,
    /// CPU and context switches per record of each fixed-rate run.
    pub live: Vec<cost::Live>,
    /// Bytes hubgate wrote to disk (`/proc/PID/io` write_bytes) and the growth of its sled
    /// directory, per record, during the latency runs.
    pub spill_mode_write_per_record: f64,
    pub spill_mode_sled_growth_per_record: f64,
    pub spill_mode_spilled: u64,
    pub throughput_per_s: f64,
    pub cpu_s_per_1000: f64,
    /// Bytes hubgate wrote to disk per record, and records it spilled, in the backlog run
    /// (the broker up and confirming).
    pub backlog_write_per_record: f64,
    pub backlog_spilled: u64,
    /// Peak RSS over start-up and the fixed-rate runs, over the backlog run, and over the
    /// outage and its drain.
    pub peak_rss_live_kb: u64,
    pub peak_rss_kb: u64,
    pub peak_rss_drain_kb: u64,
    pub fill_per_s: f64,
    pub fill_sled_bytes_per_record: f64,
    /// Bytes hubgate wrote to disk (`/proc/PID/io` write_bytes) per record over the outage's
    /// fill, and over its drain.
    pub fill_write_per_record: f64,
    pub drain_write_per_record: f64,
    pub drain_per_s: f64,
    /// hubgate's CPU over the drain, per 1,000 records.
    pub drain_cpu_s_per_1000: f64,
    /// From the broker's restart to the last record, including reconnect back-off.
    pub drain_from_restart_s: f64,
    pub bridge: Option<bridge::BridgeReport>,
    pub floor: Option<floor::Floor>,
}

/// Records before the latency runs, so that connecting is not measured.
pub const WARM_UP: (u64, Duration) = (100, Duration::from_millis(200));
const SUBSCRIBED: &str = "hubgate_mqtt_subscribed";
const ACKED: &str = "hubgate_acked_total";
const SPILLED: &str = "hubgate_spilled_total";
const DELIVERED: &str = "hubgate_delivered_total";
/// The first DevEUI of the simulated devices.
const EUI_BASE: u64 = 0x70b3_d500_0000_0000;
/// Bound on any single wait (busy 2-core machines).
const WAIT: Duration = Duration::from_secs(120);

/// Run the benchmark; panics (with logs) when a phase does not complete.
pub fn run(opts: &Options) -> Report {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = opts.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let _load = BusyLoops::start(opts.load);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mqtt = Mosquitto::start_with(
        &dir.join("mqtt"),
        &format!(
            "log_type error\nlog_type warning\nmax_inflight_messages {}\nset_tcp_nodelay {}\n",
            opts.mqtt_inflight, opts.mqtt_nodelay
        ),
    );
    let mut proxy = opts.rtt.map(delay::DelayProxy::bind);
    let mut kafka = match (&proxy, opts.tls) {
        (None, true) => Kafka::start(&dir.join("kafka")),
        (None, false) => Kafka::start_plain(&dir.join("kafka")),
        (Some(_), true) => panic!("--rtt with --tls is not supported"),
        (Some(p), false) => Kafka::start_plain_behind(&dir.join("kafka"), Some(p.port())),
    };
    if let Some(p) = proxy.as_mut() {
        p.forward_to(kafka.broker_port());
    }
    kafka.create_topics(&[ENV, MOTION]);
    let load = Load {
        devices: opts.devices,
    };
    let mut report = Report {
        machine: machine(),
        load: opts.load,
        broker: if opts.tls {
            "tansu 0.6 (sqlite) behind stunnel, SASL_SSL PLAIN".into()
        } else {
            "tansu 0.6 (sqlite), plain TCP".into()
        },
        rtt: opts.rtt,
        ..Report::default()
    };
    report.ceiling_per_s = ceiling(&kafka, &load, opts);
    report.broker_latency = broker_latency(&kafka, &load, opts);

    // Start-up, idle, latency at fixed rates.
    let agent_dir = dir.join("hubgate");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let config = load.config(&agent_dir, &mqtt, &kafka, "hubgate-bench", "", opts);
    let spawned = Instant::now();
    let mut agent = Agent::start_with_log(&agent_dir, &config, "info");
    agent.wait_metric(SUBSCRIBED, WAIT, |v| v == 1);
    report.startup_ms = ms(spawned.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    let pid = agent.pid() as u32;
    report.idle = cost::idle(pid, opts.idle);
    report.idle_rss_kb = status_kb(pid, "VmRSS");

    let rates: Vec<(u64, Duration)> = [WARM_UP].iter().chain(&opts.rates).copied().collect();
    let total: u64 = rates.iter().map(|(r, d)| rate_records(*r, *d)).sum();
    let stamps = Arc::new(Stamps::new(total));
    let consumer = LatencyConsumer::start(&kafka, &load, stamps.clone());
    let sampler = sampler(
        opts,
        &[
            ("hubgate", Some(pid)),
            ("tansu", kafka.pid()),
            ("mosquitto", mqtt.pid()),
        ],
    );
    let written = write_bytes(pid);
    let sled = dir_bytes(&agent_dir.join("buffer"));
    let mut seq = 0;
    let mut runs = Vec::new();
    for (run, &(rate, duration)) in rates.iter().enumerate() {
        let n = rate_records(rate, duration);
        let range = seq..seq + n;
        let before = cost::Sample::take(pid);
        rt.block_on(publish(
            &mqtt,
            &load,
            range.clone(),
            Some(rate),
            Some(stamps.clone()),
        ));
        report
            .latency
            .push(stamps.wait_latency(rate, range.clone(), || agent.logs()));
        let after = cost::Sample::take(pid);
        report
            .live
            .push(cost::live(rate, n, &before, &after, &report.idle));
        runs.push((run, rate, range));
        stamps.save_to(opts, "latency.csv", &runs);
        seq += n;
    }
    consumer.stop();
    drop(sampler);
    // The warm-up connects the producer and the consumer; it is not a measurement.
    report.latency.remove(0);
    report.live.remove(0);
    report.spill_mode_write_per_record =
        write_bytes(pid).saturating_sub(written) as f64 / seq as f64;
    report.spill_mode_sled_growth_per_record =
        dir_bytes(&agent_dir.join("buffer")).saturating_sub(sled) as f64 / seq as f64;
    report.spill_mode_spilled = agent.metric(SPILLED);
    report.peak_rss_live_kb = status_kb(pid, "VmHWM");
    agent.terminate(WAIT);

    // Throughput: a backlog waits in hubgate's persistent session, then hubgate starts.
    rt.block_on(publish(&mqtt, &load, seq..seq + opts.records, None, None));
    let before = high_watermarks(&kafka);
    agent.start_again();
    let ready = Instant::now();
    let pid = agent.pid() as u32;
    let cpu = cpu_seconds(pid);
    let written = write_bytes(pid);
    wait_for(
        || high_watermarks(&kafka) >= before + opts.records,
        || agent.logs(),
    );
    let took = ready.elapsed().as_secs_f64();
    report.throughput_per_s = opts.records as f64 / took;
    report.cpu_s_per_1000 = (cpu_seconds(pid) - cpu) * 1000.0 / opts.records as f64;
    report.backlog_write_per_record =
        write_bytes(pid).saturating_sub(written) as f64 / opts.records as f64;
    report.backlog_spilled = agent.metric(SPILLED);
    report.peak_rss_kb = status_kb(pid, "VmHWM");
    agent.terminate(WAIT);
    seq += opts.records;

    // Outage: the broker down while records arrive (they spill), then back up.
    let drain_dir = dir.join("hubgate-drain");
    std::fs::create_dir_all(&drain_dir).unwrap();
    let before = high_watermarks(&kafka);
    kafka.stop();
    // No start-up hub check against a dead broker, and reconnect within a second once it is
    // back: the drain is what is timed here.
    let mut drain_opts = opts.clone();
    drain_opts
        .properties
        .push(("reconnect.backoff.max.ms".into(), "1000".into()));
    let config = load.config(
        &drain_dir,
        &mqtt,
        &kafka,
        "hubgate-bench-drain",
        "provisioning = \"auto\"",
        &drain_opts,
    );
    let agent = Agent::start_with_log(&drain_dir, &config, "info");
    agent.wait_metric(SUBSCRIBED, WAIT, |v| v == 1);
    let written = write_bytes(agent.pid() as u32);
    let started = Instant::now();
    rt.block_on(publish(
        &mqtt,
        &load,
        seq..seq + opts.drain_records,
        None,
        None,
    ));
    agent.wait_metric(ACKED, WAIT, |v| v >= opts.drain_records);
    // An outage past the buffer's max_bytes drops its oldest records, and the drain would
    // wait for them until its time runs out: said here, with the way out.
    let dropped = agent.metric("hubgate_dropped_total");
    assert!(
        dropped == 0,
        "the outage of {} records did not fit hubgate's buffer: {dropped} dropped (max_bytes \
         is 256 MiB unless --buffer sets it; records take about 1.3 KB each): add e.g. \
         --buffer 'max_bytes=\"2GiB\"'",
        opts.drain_records
    );
    report.fill_per_s = opts.drain_records as f64 / started.elapsed().as_secs_f64();
    report.fill_sled_bytes_per_record =
        dir_bytes(&drain_dir.join("buffer")) as f64 / opts.drain_records as f64;
    let filled = write_bytes(agent.pid() as u32);
    report.fill_write_per_record =
        filled.saturating_sub(written) as f64 / opts.drain_records as f64;
    let restarted = Instant::now();
    kafka.start_again();
    // From the first confirmation to the last, as hubgate counts them: a watermark client
    // reconnecting to the restarted broker would see the first ones late. Those confirmed
    // before the timer starts (the first round, seen up to a poll later) are not counted.
    wait_for(|| agent.metric(DELIVERED) > 0, || agent.logs());
    let first = Instant::now();
    let cpu = cpu_seconds(agent.pid() as u32);
    let timed = opts.drain_records - agent.metric(DELIVERED).min(opts.drain_records);
    wait_for(
        || agent.metric(DELIVERED) >= opts.drain_records,
        || agent.logs(),
    );
    report.drain_per_s = timed as f64 / first.elapsed().as_secs_f64();
    report.drain_cpu_s_per_1000 =
        (cpu_seconds(agent.pid() as u32) - cpu) * 1000.0 / timed.max(1) as f64;
    wait_for(
        || high_watermarks(&kafka) >= before + opts.drain_records,
        || agent.logs(),
    );
    report.drain_from_restart_s = restarted.elapsed().as_secs_f64();
    report.drain_write_per_record =
        write_bytes(agent.pid() as u32).saturating_sub(filled) as f64 / opts.drain_records as f64;
    report.peak_rss_drain_kb = status_kb(agent.pid() as u32, "VmHWM");
    drop(agent);
    if opts.bridge {
        let seq = seq + opts.drain_records;
        report.bridge = Some(bridge::run(&rt, &mqtt, &kafka, &load, opts, &dir, seq));
    }
    if opts.floor {
        let seq = seq + 2 * opts.drain_records;
        report.floor = Some(floor::run(&rt, &mqtt, &kafka, &load, opts, seq));
    }
    report
}

/// `--sched`: sample `processes` (and this one) while it lives, when there is a `--dir`.
fn sampler(opts: &Options, processes: &[(&'static str, Option<u32>)]) -> Option<offcpu::Sampler> {
    let dir = opts.dir.as_ref().filter(|_| opts.sched)?;
    let mut all: Vec<(&'static str, u32)> = processes
        .iter()
        .filter_map(|(name, pid)| Some((*name, (*pid)?)))
        .collect();
    all.push(("bench", std::process::id()));
    Some(offcpu::Sampler::start(dir, all))
}

/// `--load N`: N threads that spin until dropped, a loaded gateway's other work.
struct BusyLoops {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoops {
    fn start(n: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        BusyLoops { stop, threads }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn rate_records(rate: u64, d: Duration) -> u64 {
    (rate as f64 * d.as_secs_f64()).round() as u64
}

/// `nproc` and the CPU model, for the report.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} x {model}, load average {}", load.join(" "))
}

/// The simulated devices and their uplinks: sequence number `seq` is device `seq % devices`
/// with FCnt `seq / devices + 1`, so every record can be traced back to its publish.
struct Load {
    devices: u64,
}

impl Load {
    fn eui(&self, device: u64) -> String {
        format!("{:016x}", EUI_BASE + device)
    }

    fn codec(device: u64) -> &'static str {
        ["browan-tbhh100", "browan-tbms100", "cayenne-lpp"][(device % 3) as usize]
    }

    /// (topic, ChirpStack v4 uplink) of sequence number `seq`.
    fn message(&self, seq: u64) -> (String, String) {
        let device = seq % self.devices;
        let fcnt = (seq / self.devices + 1) as u32;
        let eui = self.eui(device);
        let (fport, payload) = match device % 3 {
            0 => (103, tbhh100((fcnt % 40) as i32 - 5, 30 + (fcnt % 60) as u8)),
            1 => (102, tbms100(fcnt)),
            _ => {
                // Cayenne LPP: ch1 temperature (0.1 °C), ch2 humidity (0.5 %), ch3 pressure.
                let t = (200 + (fcnt % 100) as i16).to_be_bytes();
                let p = (10_130 + (fcnt % 50) as u16).to_be_bytes();
                let h = 80 + (fcnt % 40) as u8;
                (
                    2,
                    vec![1, 0x67, t[0], t[1], 2, 0x68, h, 3, 0x73, p[0], p[1]],
                )
            }
        };
        (
            uplink_topic(&eui),
            chirpstack_uplink(&eui, fcnt, fport, &payload),
        )
    }

    /// The sequence number of a record read back: its key (dashed DevEUI) and `fcnt_up`.
    fn seq_of(&self, key: &[u8], body: &[u8]) -> Option<u64> {
        let hex: String = std::str::from_utf8(key)
            .ok()?
            .chars()
            .filter(|c| *c != '-')
            .collect();
        let device = u64::from_str_radix(&hex, 16).ok()?.checked_sub(EUI_BASE)?;
        const FIELD: &[u8] = b"\"fcnt_up\":";
        let at = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
        let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
        let fcnt: u64 = std::str::from_utf8(&body[at..at + digits])
            .ok()?
            .parse()
            .ok()?;
        Some((fcnt - 1) * self.devices + device)
    }

    /// hubgate's config: every device, the MQTT source, the Kafka sink (`sink_extra` goes
    /// into `[sink]`).
    fn config(
        &self,
        dir: &Path,
        mqtt: &Mosquitto,
        kafka: &Kafka,
        client_id: &str,
        sink_extra: &str,
        opts: &Options,
    ) -> String {
        let mut c = format!(
            "gateway_id = \"bench\"\n[buffer]\npath = \"{}\"\n",
            dir.join("buffer").display(),
        );
        for (k, v) in &opts.buffer {
            let _ = writeln!(c, "{k} = {v}");
        }
        let _ = writeln!(
            c,
            "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"{client_id}\"",
            mqtt.port(),
        );
        for d in 0..self.devices {
            let _ = writeln!(
                c,
                "[[device]]\ndev_eui = \"{}\"\ncodec = \"{}\"",
                self.eui(d),
                Self::codec(d)
            );
        }
        let _ = writeln!(
            c,
            "[sink]\ntype = \"kafka\"\nbrokers = \"{}\"\n{sink_extra}",
            kafka.bootstrap()
        );
        if kafka.is_tls() {
            let _ = writeln!(
                c,
                "security_protocol = \"sasl_ssl\"\nsasl_username = \"$ConnectionString\"\n\
                 sasl_password = \"{}\"\nca_location = \"{}\"",
                kafka.connection_string(),
                kafka.ca_path().display()
            );
        } else {
            c.push_str("security_protocol = \"plaintext\"\ninsecure = true\n");
        }
        c.push_str("[sink.properties]\n");
        for (k, v) in &opts.properties {
            let _ = writeln!(c, "{k:?} = {v:?}");
        }
        c
    }
}

/// Publish time, time handed to the producer and read-back time of every latency-run record
/// (ns since `base`, 0 = not yet).
struct Stamps {
    base: Instant,
    /// The wall clock at `base`, for the records' Kafka timestamps.
    base_wall: SystemTime,
    published: Vec<AtomicU64>,
    produced: Vec<AtomicU64>,
    read: Vec<AtomicU64>,
}

impl Stamps {
    fn new(n: u64) -> Self {
        let v = || (0..n).map(|_| AtomicU64::new(0)).collect();
        Stamps {
            base: Instant::now(),
            base_wall: SystemTime::now(),
            published: v(),
            produced: v(),
            read: v(),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    /// With `--dir`, the times of every record of the finished `runs` (run number, rate,
    /// sequence numbers; run 0 is the warm-up, the measured runs are numbered from 1 in the
    /// order of `--rates`) in `dir/name`, rewritten after each run, as `run,rate,seq,
    /// published_ms,produced_ms,read_ms`, ms since the stamps began (their wall-clock time
    /// heads the file): to see when a slow stretch began and where its records waited.
    /// `produced_ms` is the record's Kafka create time, whole milliseconds, so its decimals
    /// are the base's.
    fn save_to(&self, opts: &Options, name: &str, runs: &[(usize, u64, Range<u64>)]) {
        let Some(dir) = &opts.dir else { return };
        let ms = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        let base = self
            .base_wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut csv = format!(
            "# 0 ms = {} ms since the Unix epoch\nrun,rate,seq,published_ms,produced_ms,read_ms\n",
            base.as_millis()
        );
        for (run, rate, range) in runs {
            for s in range.clone().map(|s| s as usize) {
                let (p, q, r) = (&self.published[s], &self.produced[s], &self.read[s]);
                let (p, q, r) = (ms(p), ms(q), ms(r));
                let _ = writeln!(csv, "{run},{rate},{s},{p:.3},{q:.3},{r:.3}");
            }
        }
        let path = dir.join(name);
        std::fs::write(&path, csv).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Wait until every record of `range` is read back; their latency percentiles.
    fn wait_latency(&self, rate: u64, range: Range<u64>, logs: impl Fn() -> String) -> Latency {
        let seen = |s: u64| self.read[s as usize].load(Ordering::Relaxed) != 0;
        wait_for(|| range.clone().all(seen), logs);
        let since_publish = |to: &[AtomicU64]| {
            let mut ns: Vec<u64> = range
                .clone()
                .map(|s| {
                    let s = s as usize;
                    to[s]
                        .load(Ordering::Relaxed)
                        .saturating_sub(self.published[s].load(Ordering::Relaxed))
                })
                .collect();
            ns.sort_unstable();
            move |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)] as f64 / 1e6
        };
        let pct = since_publish(&self.read);
        let to_producer = since_publish(&self.produced);
        Latency {
            rate,
            records: range.end - range.start,
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            max: pct(1.0),
            to_producer_p99: to_producer(0.99),
            to_producer_max: to_producer(1.0),
        }
    }
}

/// A consumer thread that stamps each record of the latency runs when it becomes readable.
struct LatencyConsumer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatencyConsumer {
    fn start(kafka: &Kafka, load: &Load, stamps: Arc<Stamps>) -> Self {
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", unique("bench"))
            .set("enable.auto.commit", "false")
            // Ask again soon when nothing is there: the read-back time is what is measured.
            // tansu answers a fetch with nothing new only after this wait, and a record
            // arriving meanwhile waits with it: 5 ms here added ~4 ms to every p50.
            .set("fetch.wait.max.ms", "1")
            .create()
            .expect("create the latency consumer");
        // From the current end: the ceiling's records are not part of the latency runs.
        let mut tpl = TopicPartitionList::new();
        for topic in [ENV, MOTION] {
            let (_, high) = consumer
                .fetch_watermarks(topic, 0, Duration::from_secs(10))
                .expect("watermarks");
            tpl.add_partition_offset(topic, 0, Offset::Offset(high))
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let stop = Arc::new(AtomicBool::new(false));
        let devices = load.devices;
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let load = Load { devices };
            while !flag.load(Ordering::Relaxed) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let now = stamps.now();
                let seq = load.seq_of(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
                if let Some(s) = seq.filter(|&s| s < stamps.read.len() as u64) {
                    stamps.read[s as usize].store(now, Ordering::Relaxed);
                    // The producer's create time (hubgate's hand-over to librdkafka), not a
                    // broker's log-append time.
                    if let rdkafka::Timestamp::CreateTime(ms) = m.timestamp() {
                        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64);
                        let ns = at
                            .duration_since(stamps.base_wall)
                            .map_or(0, |d| d.as_nanos());
                        stamps.produced[s as usize].store(ns as u64 + 1, Ordering::Relaxed);
                    }
                }
            }
        });
        LatencyConsumer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("latency consumer");
        }
    }
}

/// A panicking phase leaves no consumer thread polling a broker being stopped.
impl Drop for LatencyConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publish the uplinks of `range` with QoS 1, at `rate` per second (else as fast as the
/// broker takes them), and wait for every PUBACK.
///
/// A record's publish time is taken when rumqttc has written its PUBLISH to the socket (its
/// `Outgoing::Publish` event, in the order the publishes were queued), not when the load
/// generator queues it: a late timer or a busy runtime here is the benchmark's delay, not
/// hubgate's.
async fn publish(
    mqtt: &Mosquitto,
    load: &Load,
    range: Range<u64>,
    rate: Option<u64>,
    stamps: Option<Arc<Stamps>>,
) {
    let mut opts = MqttOptions::new(unique("load"), "127.0.0.1", mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_request_channel_capacity(10_000);
    let (client, mut events) = AsyncClient::new(opts, 10_000);
    let expected = range.end - range.start;
    let queued = range.clone();
    let mut next = range.start;
    let acks = tokio::spawn(async move {
        let mut acked = 0;
        while acked < expected {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) => {
                    if let Some(s) = stamps.as_ref().filter(|_| next < range.end) {
                        s.published[next as usize].store(s.now(), Ordering::Relaxed);
                    }
                    next += 1;
                }
                Ok(_) => {}
                Err(e) => panic!("load generator: MQTT: {e}"),
            }
        }
        events
    });
    let start = tokio::time::Instant::now();
    for (k, seq) in queued.enumerate() {
        if let Some(rate) = rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate as f64)).await;
        }
        let (topic, body) = load.message(seq);
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .expect("queue a publish");
    }
    let mut events = tokio::time::timeout(WAIT, acks)
        .await
        .expect("broker acknowledged every publish in time")
        .expect("load generator task");
    client.disconnect().await.expect("disconnect");
    while let Ok(ev) = events.poll().await {
        if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
            break;
        }
    }
}

/// Counts delivery reports of the broker-alone producer.
struct Counting(Arc<AtomicU64>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if r.is_ok() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The broker alone: `n` records like hubgate's, sent with hubgate's producer settings
/// straight from an rdkafka producer; records/s until all are confirmed.
fn ceiling(kafka: &Kafka, load: &Load, opts: &Options) -> f64 {
    let n = opts.records;
    let delivered = Arc::new(AtomicU64::new(0));
    let producer = broker_producer(kafka, opts, &delivered);
    let body = sample_record(load, 0).body;
    let start = Instant::now();
    for i in 0..n {
        let key = load.eui(i % load.devices);
        loop {
            match producer.send(BaseRecord::to(ENV).key(&key).payload(&body)) {
                Ok(()) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(WAIT).expect("ceiling producer flush");
    let took = start.elapsed().as_secs_f64();
    assert_eq!(
        delivered.load(Ordering::Relaxed),
        n,
        "broker confirmed every record"
    );
    n as f64 / took
}

/// An rdkafka producer with hubgate's producer settings (and `--set`), counting confirmed
/// records.
/// A producer's settings as hubgate's, for the broker `kafka`, with `--set` applied as hubgate
/// applies `[sink.properties]`.
pub fn producer_config(kafka: &Kafka, opts: &Options) -> ClientConfig {
    let mut config: ClientConfig = hubgate::sink::kafka::base_config();
    config.extend(
        kafka
            .client_config()
            .config_map()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    hubgate::sink::kafka::site_settings(&mut config, &opts.properties.iter().cloned().collect());
    config
}

fn broker_producer(
    kafka: &Kafka,
    opts: &Options,
    delivered: &Arc<AtomicU64>,
) -> BaseProducer<Counting> {
    producer_config(kafka, opts)
        .create_with_context(Counting(delivered.clone()))
        .expect("create the broker-alone producer")
}

/// The broker alone at each of `rates` (after a warm-up): hubgate's records produced straight
/// to it with hubgate's producer settings and into the same two topics, handed to the
/// producer -> readable by the same consumer as the pipeline's latency runs. What hubgate
/// adds is the difference.
fn broker_latency(kafka: &Kafka, load: &Load, opts: &Options) -> Vec<Latency> {
    let rates: Vec<(u64, Duration)> = [WARM_UP].iter().chain(&opts.rates).copied().collect();
    let total: u64 = rates.iter().map(|(r, d)| rate_records(*r, *d)).sum();
    let stamps = Arc::new(Stamps::new(total));
    let consumer = LatencyConsumer::start(kafka, load, stamps.clone());
    let producer = broker_producer(kafka, opts, &Arc::new(AtomicU64::new(0)));
    let _sampler = sampler(opts, &[("tansu", kafka.pid())]);
    let mut seq = 0;
    let mut latency = Vec::new();
    let mut runs = Vec::new();
    for (run, &(rate, duration)) in rates.iter().enumerate() {
        let n = rate_records(rate, duration);
        let start = Instant::now();
        for k in 0..n {
            // Sleep, not poll: rdkafka rounds a poll timeout down to whole milliseconds, so
            // polling until the next send would spin on a core the broker needs.
            let at = start + Duration::from_secs_f64(k as f64 / rate as f64);
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let record = sample_record(load, seq + k);
            // Each device's records to its recType's topic, as hubgate's go (TBMS100: motion).
            let topic = if (seq + k) % load.devices % 3 == 1 {
                MOTION
            } else {
                ENV
            };
            producer
                .send(BaseRecord::to(topic).key(&record.key).payload(&record.body))
                .expect("broker-alone produce");
            // Once handed over, as the pipeline's publish time is taken once the PUBLISH is
            // written: neither includes the call that hands it over.
            stamps.published[(seq + k) as usize].store(stamps.now(), Ordering::Relaxed);
            producer.poll(Duration::ZERO);
        }
        producer.flush(WAIT).expect("broker-alone producer flush");
        latency.push(stamps.wait_latency(rate, seq..seq + n, String::new));
        runs.push((run, rate, seq..seq + n));
        stamps.save_to(opts, "broker-latency.csv", &runs);
        seq += n;
    }
    consumer.stop();
    latency.remove(0);
    latency
}

/// The record hubgate builds for sequence number `seq` of `load`, as if every device were a
/// TBHH100.
fn sample_record(load: &Load, seq: u64) -> hubgate::record::Record {
    use hubgate::record::{build, DeviceInfo, Payload};
    let fcnt = (seq / load.devices + 1) as u32;
    let up = hubgate::uplink::Uplink {
        dev_eui: hubgate::ids::DevEui((EUI_BASE + seq % load.devices).to_be_bytes()),
        dev_addr: None,
        device_name: Some("dev-bench".into()),
        fport: Some(103),
        fcnt: Some(fcnt),
        payload: tbhh100(21, 40),
        time: SystemTime::now(),
        radio: hubgate::uplink::Radio {
            rssi: Some(-80),
            snr: Some(7.5),
            gateway_id: Some("b827ebfffe000001".into()),
            ..Default::default()
        },
        ns: hubgate::uplink::NsDecoded::default(),
        same_ms_index: 0,
        session: None,
    };
    let decoded = hubgate::codec::Codec::Browan(hubgate::codec::BrowanModel::Tbhh100)
        .decode(up.fport, &up.payload)
        .expect("sample decodes");
    let dev = DeviceInfo::UNKNOWN;
    let payload = Payload::Decoded {
        codec: "browan-tbhh100",
        decoded,
    };
    build(&up, &dev, payload, SystemTime::now()).remove(0)
}

/// Records in the broker: the sum of the high watermarks of the benchmark's topics.
fn high_watermarks(kafka: &Kafka) -> u64 {
    thread_local! {
        static CONSUMER: std::cell::RefCell<Option<BaseConsumer>> = const { std::cell::RefCell::new(None) };
    }
    CONSUMER.with(|c| {
        let mut c = c.borrow_mut();
        let consumer = c.get_or_insert_with(|| {
            kafka
                .client_config()
                .set("group.id", unique("watermarks"))
                .create()
                .expect("create the watermark client")
        });
        [ENV, MOTION]
            .iter()
            .map(|t| {
                consumer
                    .fetch_watermarks(t, 0, Duration::from_secs(5))
                    .map_or(0, |(_, high)| high as u64)
            })
            .sum()
    })
}

/// Poll `done` every 10 ms until it holds; panic with `logs()` after [`WAIT`].
fn wait_for(mut done: impl FnMut() -> bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "benchmark phase did not finish within {WAIT:?}:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of a process (`/proc/PID/stat` utime, stime).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) as f64 / ticks)
}

/// Bytes a process caused to be written to storage (`/proc/PID/io` write_bytes).
fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Report {
    /// The table the benchmark prints, with the targets of docs/performance.md beside the numbers.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "machine: {}", self.machine);
        if self.load > 0 {
            let _ = writeln!(t, "load:    {} busy loops through the run", self.load);
        }
        let _ = writeln!(t, "broker:  {}", self.broker);
        if let Some(rtt) = self.rtt {
            let _ = writeln!(
                t,
                "rtt:     {:.0} ms added between the Kafka clients and the broker",
                ms(rtt)
            );
        }
        let _ = writeln!(t, "{:<52} {:>14}  target", "measure", "value");
        let mut row = |name: &str, value: String, target: &str| {
            let _ = writeln!(t, "{name:<52} {value:>14}  {target}");
        };
        row(
            "broker alone (rdkafka producer), records/s",
            format!("{:.0}", self.ceiling_per_s),
            "(ceiling)",
        );
        row(
            "throughput MQTT -> broker (backlog), records/s",
            format!("{:.0}", self.throughput_per_s),
            ">= 50000",
        );
        row(
            "CPU seconds per 1,000 records",
            format!("{:.3}", self.cpu_s_per_1000),
            "",
        );
        row(
            "backlog: disk writes per record (bytes)",
            format!("{:.1}", self.backlog_write_per_record),
            "0",
        );
        row(
            "backlog: records spilled with the broker up",
            self.backlog_spilled.to_string(),
            "0",
        );
        for l in &self.broker_latency {
            row(
                &format!("broker alone: latency at {}/s p50/p90/p99 (max) ms", l.rate),
                format!("{:.1}/{:.1}/{:.1} ({:.0})", l.p50, l.p90, l.p99, l.max),
                "(floor)",
            );
        }
        row(
            &format!("idle CPU ms per s (over {:.0} s)", self.idle.secs),
            format!("{:.3}", self.idle.cpu_ms_per_s),
            "<= 1",
        );
        row(
            "idle wake-ups (context switches) per s",
            format!("{:.1}", self.idle.wakeups_per_s),
            "",
        );
        for l in &self.live {
            row(
                &format!("CPU us per record at {}/s, less idle", l.rate),
                format!("{:.1}", l.cpu_us_per_record),
                match l.rate {
                    200 => "<= 40",
                    1000 => "<= 25",
                    _ => "",
                },
            );
            row(
                &format!("context switches per record at {}/s", l.rate),
                format!("{:.2}", l.switches_per_record),
                "",
            );
        }
        for l in &self.latency {
            row(
                &format!(
                    "latency at {}/s ({} records) p50/p90/p99 ms",
                    l.rate, l.records
                ),
                format!("{:.1}/{:.1}/{:.1}", l.p50, l.p90, l.p99),
                if l.rate == 1000 {
                    "p50 <= 3, p99 <= 10"
                } else {
                    ""
                },
            );
            row(
                &format!("latency at {}/s max ms", l.rate),
                format!("{:.1}", l.max),
                "",
            );
            if let Some(f) = self.broker_latency.iter().find(|f| f.rate == l.rate) {
                row(
                    &format!("  over the broker alone at {}/s: p50/p99 ms", l.rate),
                    format!("{:+.1}/{:+.1}", l.p50 - f.p50, l.p99 - f.p99),
                    if l.rate == 1000 { "<= 1 / <= 3" } else { "" },
                );
                row(
                    &format!("  p99 / broker-alone p99 at {}/s", l.rate),
                    format!("{:.2}", l.p99 / f.p99),
                    "<= 3 (loaded)",
                );
            }
            row(
                &format!("  publish -> producer at {}/s p99 (max) ms", l.rate),
                format!("{:.1} ({:.1})", l.to_producer_p99, l.to_producer_max),
                "",
            );
        }
        row(
            "peak RSS, fixed-rate runs, MB",
            format!("{:.1}", self.peak_rss_live_kb as f64 / 1024.0),
            "<= 20",
        );
        row(
            "peak RSS, backlog run, MB",
            format!("{:.1}", self.peak_rss_kb as f64 / 1024.0),
            "<= 20",
        );
        row(
            "peak RSS, outage and drain, MB",
            format!("{:.1}", self.peak_rss_drain_kb as f64 / 1024.0),
            "<= 20",
        );
        row(
            "idle RSS, MB",
            format!("{:.1}", self.idle_rss_kb as f64 / 1024.0),
            "<= 10",
        );
        row(
            "disk writes per record, sink keeping up (bytes)",
            format!("{:.1}", self.spill_mode_write_per_record),
            "0",
        );
        row(
            "sled growth per record, sink keeping up (bytes)",
            format!("{:.1}", self.spill_mode_sled_growth_per_record),
            "0",
        );
        row(
            "records spilled while the sink kept up",
            self.spill_mode_spilled.to_string(),
            "0",
        );
        row(
            "outage: records spilled to sled, records/s",
            format!("{:.0}", self.fill_per_s),
            "",
        );
        row(
            "outage: sled size per spilled record (bytes)",
            format!("{:.0}", self.fill_sled_bytes_per_record),
            "",
        );
        row(
            "outage: bytes written per spilled record, fill + drain",
            format!(
                "{:.0} + {:.0}",
                self.fill_write_per_record, self.drain_write_per_record
            ),
            "",
        );
        row(
            "backlog drain from sled, records/s",
            format!("{:.0}", self.drain_per_s),
            ">= 30000",
        );
        row(
            "backlog drain from sled: CPU seconds per 1,000 records",
            format!("{:.3}", self.drain_cpu_s_per_1000),
            "",
        );
        row(
            "broker restart -> backlog delivered, s",
            format!("{:.2}", self.drain_from_restart_s),
            "",
        );
        row(
            "start-up to ready (subscribed), ms",
            format!("{:.0}", self.startup_ms),
            "<= 200",
        );
        if let Some(b) = &self.bridge {
            for l in &b.latency {
                row(
                    &format!(
                        "python bridge: latency at {}/s p50/p90/p99 (max) ms",
                        l.rate
                    ),
                    format!("{:.1}/{:.1}/{:.1} ({:.0})", l.p50, l.p90, l.p99, l.max),
                    "",
                );
            }
            row(
                &format!(
                    "python bridge: throughput ({} backlog), records/s",
                    b.records
                ),
                format!("{:.0}", b.throughput_per_s),
                "",
            );
            row(
                "python bridge: CPU seconds per 1,000 records",
                format!("{:.3}", b.cpu_s_per_1000),
                "",
            );
            row(
                "python bridge: peak RSS, backlog run, MB",
                format!("{:.1}", b.peak_rss_kb as f64 / 1024.0),
                "",
            );
            row(
                "python bridge: idle CPU ms per s",
                format!("{:.3}", b.idle.cpu_ms_per_s),
                "",
            );
            row(
                "python bridge: idle wake-ups per s",
                format!("{:.1}", b.idle.wakeups_per_s),
                "",
            );
            for l in &b.live {
                row(
                    &format!(
                        "python bridge: CPU us / switches per record at {}/s",
                        l.rate
                    ),
                    format!("{:.1} / {:.2}", l.cpu_us_per_record, l.switches_per_record),
                    "",
                );
            }
        }
        let _ = writeln!(t, "hubgate idle, per thread:\n{}", self.idle.table());
        for l in &self.live {
            let _ = writeln!(t, "hubgate at {}/s, per thread:\n{}", l.rate, l.table());
        }
        if let Some(floor) = &self.floor {
            t.push_str(&floor.table());
        }
        t
    }
}
