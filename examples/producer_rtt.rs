//! hubgate's producer settings against librdkafka's mock cluster with a round trip, to compare
//! requests in flight without touching the machine's loopback (docs/performance.md,
//! "Pipelined produce requests").
//!
//! `cargo run --release --example producer_rtt -- IN_FLIGHT RTT_MS rate|drain [KEYS]`: `rate`
//! sends 10,000 records at 1,000/s, `drain` 50,000 with at most 2,000 unconfirmed (the
//! forwarder's window), over KEYS keys (50; the mock's topic has 4 partitions, so 1 puts every
//! record in one partition); it prints records/s, send-to-confirmation p50/p99, the CPU per record of the
//! producer's threads (the mock broker's thread left out), and from librdkafka's statistics
//! the produce requests it took (records per request) and its broker thread's wake-ups.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

struct Ctx(Arc<Mutex<Vec<Duration>>>, Arc<Mutex<Option<Statistics>>>);
impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        *self.1.lock().unwrap() = Some(s);
    }
}

/// (produce requests, broker-thread wake-ups, the statistics' time) so far of the mock
/// cluster's broker, from the latest statistics newer than `after` (waited for: they come
/// every 200 ms).
fn requests(stats: &Mutex<Option<Statistics>>, after: i64) -> (i64, u64, i64) {
    loop {
        if let Some(s) = stats.lock().unwrap().as_ref().filter(|s| s.ts > after) {
            let b = s
                .brokers
                .values()
                .find(|b| b.nodeid >= 0)
                .expect("a broker");
            let produce = b.req.get("Produce").copied().unwrap_or(0);
            return (produce, b.wakeups.unwrap_or(0), s.ts);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        assert!(r.is_ok(), "{:?}", r.as_ref().err());
        self.0.lock().unwrap().push(sent.elapsed());
    }
}

fn cpu_ms() -> f64 {
    // Producer threads only: the mock brokers (rdk:mock*) run in this process too.
    let mut ticks = 0u64;
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = t.unwrap().path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.starts_with("rdk:mock") {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        ticks += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    ticks as f64 * 10.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (inflight, rtt, mode) = (&a[1], &a[2], a[3].as_str());
    let keys: usize = a.get(4).map_or(50, |k| k.parse().expect("KEYS: a number"));
    let mut c = hubgate::sink::kafka::base_config();
    c.set("bootstrap.servers", "unused:9092")
        .set("test.mock.num.brokers", "1")
        .set("test.mock.broker.rtt", rtt)
        .set("max.in.flight.requests.per.connection", inflight)
        .set("statistics.interval.ms", "200");
    let lat = Arc::new(Mutex::new(Vec::new()));
    let stats = Arc::new(Mutex::new(None));
    let p: ThreadedProducer<Ctx> = c
        .create_with_context(Ctx(lat.clone(), stats.clone()))
        .unwrap();
    let body = "x".repeat(400);
    let keys: Vec<String> = (0..keys)
        .map(|i| format!("58-A0-CB-00-00-10-{i:02}-34"))
        .collect();
    let send = |n: usize| loop {
        let r = BaseRecord::with_opaque_to("t", Box::new(Instant::now()))
            .key(&keys[n % keys.len()])
            .payload(&body);
        match p.send(r) {
            Ok(()) => break,
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    };
    // Warm up: metadata, producer id.
    send(0);
    while lat.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    lat.lock().unwrap().clear();
    // Statistics from after the warm-up's request.
    let (_, _, warm) = requests(&stats, 0);
    let (req0, wake0, ts0) = requests(&stats, warm);
    let (cpu0, t0) = (cpu_ms(), Instant::now());
    let n = if mode == "drain" {
        let n = 50_000;
        // The forwarder's window: 2,000 records unconfirmed at most.
        for i in 0..n {
            while i - lat.lock().unwrap().len() >= 2000 {
                std::thread::sleep(Duration::from_micros(100));
            }
            send(i);
        }
        n
    } else {
        let n = 10_000;
        for i in 0..n {
            let due = t0 + Duration::from_micros(1000 * i as u64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            send(i);
        }
        n
    };
    p.flush(Duration::from_secs(60)).unwrap();
    let (cpu, wall) = (cpu_ms() - cpu0, t0.elapsed());
    let (req1, wake1, _) = requests(&stats, ts0 + wall.as_micros() as i64);
    let mut l = lat.lock().unwrap().clone();
    assert_eq!(l.len(), n);
    l.sort();
    let q = |f: f64| l[((l.len() as f64 * f) as usize).min(l.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "in_flight={inflight} rtt={rtt}ms {mode}: {n} records in {:.2} s = {:.0}/s; send->confirmed p50 {:.1} ms p99 {:.1} ms; producer CPU {:.1} us/record; {} produce requests ({:.1} records each), {:.2} broker-thread wake-ups per record",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        q(0.5),
        q(0.99),
        cpu * 1000.0 / n as f64,
        req1 - req0,
        n as f64 / (req1 - req0).max(1) as f64,
        (wake1 - wake0) as f64 / n as f64
    );
}
