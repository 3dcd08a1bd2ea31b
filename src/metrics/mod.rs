//! Counters and gauges, shared by handle, rendered as Prometheus text and as the periodic
//! status line of the log; with them what the status page shows beside the numbers (devices
//! heard, the last hour, why a hub is parked, recent problems).

mod atomic_instant;
pub mod devices;
pub mod history;
mod park_reasons;
mod udp_drops;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use atomic_instant::AtomicInstant;
pub use park_reasons::{ParkReason, ParkReasons};
pub use udp_drops::UdpDrops;

/// Frames taken from each source, by its place in the config ([`crate::source::Frame::origin`]):
/// `received` counts them by kind, which two sources of one kind share.
#[derive(Default)]
pub struct PerSource(Mutex<Vec<u64>>);

impl PerSource {
    pub fn inc(&self, origin: usize) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() <= origin {
            // As many as the config has sources.
            counts.resize(origin + 1, 0);
        }
        counts[origin] += 1;
    }

    /// (place, count) of each source that sent a frame, the place as a label.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), *n))
            .collect()
    }
}

/// One number: a counter, or a gauge when `set`.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Numbers told apart by the value of one label (`source`, `rec_type`, …). A series exists
/// once it has been touched; an empty label value renders without labels.
#[derive(Default)]
pub struct Family(Mutex<BTreeMap<String, u64>>);

impl Family {
    pub fn inc(&self, label: &str) -> u64 {
        self.add(label, 1)
    }
    pub fn add(&self, label: &str, n: u64) -> u64 {
        self.update(label, |v| *v += n)
    }
    pub fn set(&self, label: &str, n: u64) {
        self.update(label, |v| *v = n);
    }
    pub fn get(&self, label: &str) -> Option<u64> {
        self.lock().get(label).copied()
    }
    /// Expose the series of `label` at 0 if it has none yet, for label values known before
    /// their first count: a series born at 1 has no earlier sample, so `increase()` and
    /// `rate()` would never count that first event.
    pub fn declare(&self, label: &str) {
        self.update(label, |_| {});
    }
    pub fn sum(&self) -> u64 {
        self.lock().values().sum()
    }
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Apply `f` to the series of `label` (created at 0); returns its new value. No
    /// allocation once the series exists: this runs for every record.
    fn update(&self, label: &str, f: impl FnOnce(&mut u64)) -> u64 {
        let mut m = self.lock();
        let v = match m.get_mut(label) {
            Some(v) => v,
            None => m.entry(label.to_string()).or_insert(0),
        };
        f(v);
        *v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A gauge per MQTT source, by broker (`host:port`) and client id: the config lets two
/// sources share a broker only with their own client ids, so the pair tells them apart where
/// the broker alone would have them write one series.
#[derive(Default)]
pub struct MqttLinks(Mutex<BTreeMap<(String, String), u64>>);

impl MqttLinks {
    pub fn set(&self, broker: &str, client_id: &str, n: u64) {
        self.lock()
            .insert((broker.to_string(), client_id.to_string()), n);
    }
    pub fn get(&self, broker: &str, client_id: &str) -> Option<u64> {
        self.lock()
            .get(&(broker.to_string(), client_id.to_string()))
            .copied()
    }
    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.lock()
            .iter()
            .map(|((broker, id), v)| (vec![broker.clone(), id.clone()], *v))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Frames taken from sources, by source (`mqtt`, `serial`, `udp`, `replay`).
    pub received: Family,
    /// The same by each source (the status page's rows).
    pub received_from: PerSource,
    pub decoded: Counter,
    pub acked: Counter,
    /// Acknowledgements whose source had stopped and could not take them (logged once, at
    /// the end of the run): their messages come again.
    pub acks_failed: Counter,
    /// Records confirmed by the sink, by recType.
    pub delivered: Family,
    /// Bytes of the records the sink confirmed, as handed to it, by recType (see
    /// [`crate::sink::Sink::send`]).
    pub bytes_sent: Family,
    pub duplicates: Counter,
    /// Radio uplinks on FPort 0 (MAC commands only): no record, as a network server makes none.
    pub mac_frames: Counter,
    /// Network-server events that are not uplinks (ChirpStack join, status...): no record.
    pub non_uplink_events: Counter,
    pub spilled: Counter,
    /// Rebuilds of the drained buffer database that gave disk space back.
    pub buffer_rebuilds: Counter,
    /// Sink failures by class (`retry`, `park`, `reject`; see `sink::SinkError`).
    pub sink_errors: Family,
    pub dropped_full: Counter,
    pub dropped_disk_full: Counter,
    pub dropped_expired: Counter,
    pub dropped_corrupt: Counter,
    /// Frames of sources that cannot wait, dropped for want of room in the frame queue.
    pub dropped_queue_full: Counter,
    /// Frames of sources that cannot wait, still in their hands when the forwarder closed the
    /// frame queue to stop.
    pub dropped_stopping: Counter,
    /// Datagrams the kernel dropped before a UDP source could read them.
    pub udp_drops: UdpDrops,
    pub dead_lettered: Counter,
    pub buffer_records: Counter,
    pub buffer_bytes: Counter,
    /// When the oldest buffered record was built.
    pub buffer_oldest: AtomicInstant,
    /// fsync/fdatasync calls that made buffer writes durable.
    pub buffer_syncs: Counter,
    /// 1 from a LoRaWAN frame's take until its counter is durable (one the disk refused to
    /// write: until it is written again and synced), and while another change of the
    /// buffer's state (a clock reading, stale kept frames removed at the start) waits for the
    /// flush that makes it durable (set by the ledger).
    pub buffer_state_unsynced: Counter,
    /// When the buffer's running flush started (none: unset), on the same clock.
    pub buffer_flush: AtomicInstant,
    pub in_flight: Counter,
    /// 1 while the system clock is known to be synchronised (NTP).
    pub clock_synchronized: Counter,
    /// 1 while nothing can tell whether it is.
    pub clock_unknown: Counter,
    /// Unix seconds of the last delivery the sink confirmed (0: none yet).
    pub last_delivery: Counter,
    /// The same moment on the monotonic clock, for its age: a step of the wall clock (NTP
    /// setting a Pi's clock forward after a boot) does not age it.
    pub last_delivery_at: AtomicInstant,
    /// Payloads a codec rejected (the next decoder is tried, packed if none decodes), by codec id.
    pub decode_errors: Family,
    /// 1 while the MQTT source of broker `host:port` and its client id is connected.
    pub mqtt_connected: MqttLinks,
    /// 1 while the serial source of a device (its path as configured) has it open; 0 from
    /// the start until it first opens, and while it is away.
    pub serial_connected: Family,
    /// 1 while the MQTT source of broker `host:port` and its client id holds its subscription.
    pub mqtt_subscribed: MqttLinks,
    /// Retained MQTT messages whose record was made already, acknowledged without another.
    pub mqtt_retained_skipped: Counter,
    /// 1 while librdkafka has a broker connection up (from its statistics, and at once when a
    /// record is confirmed); only with a Kafka or Event Hubs sink.
    pub kafka_connected: Family,
    /// 1 for each recType held back because its hub is missing or refuses this key.
    pub parked: Family,
    /// Bad input and decode trouble by kind (`malformed_json`, `codec_error`, …).
    problems: Family,
    /// Rate limit of the log lines that input and outages control.
    log: crate::logline::Limiter,
    /// Every device heard (bounded), for the status page.
    pub devices: devices::DeviceTable,
    /// The last hour, minute by minute.
    pub history: history::History,
    /// Why each parked recType is parked.
    pub park_reasons: ParkReasons,
    /// The recTypes the config foresees (see [`Metrics::foresee`]).
    foreseen: Mutex<Vec<String>>,
}

/// How a series family is exposed: name (without `hubgate_`), type, label names, help, and
/// each series' label values (in the order of the names) with its value.
struct Exposed {
    name: &'static str,
    kind: &'static str,
    labels: Vec<&'static str>,
    help: &'static str,
    values: Vec<(Vec<String>, u64)>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let m = Metrics::default();
        for class in crate::sink::SinkError::CLASSES {
            m.sink_errors.declare(class);
        }
        Arc::new(m)
    }

    /// The sources the config has, by kind: their `received_total` series exist from the
    /// start (see [`Family::declare`]).
    pub fn expect_sources<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        for kind in kinds {
            self.received.declare(kind);
        }
    }

    /// Count a problem of `kind` and log `msg()` at warn, rate-limited per kind (see
    /// [`crate::logline`]), so a flood of bad input cannot flood the log.
    pub fn problem(&self, kind: &'static str, msg: impl FnOnce() -> String) {
        self.problem_n(kind, 1, msg);
    }

    /// The same for `n` problems (at least one) that `msg()` stands for together, at the cost
    /// of one: for a burst read at once, such as the lines of one read of a JavaScript
    /// worker's standard error.
    pub fn problem_n(&self, kind: &'static str, n: u64, msg: impl FnOnce() -> String) {
        self.problems.add(kind, n);
        self.log.log_n(log::Level::Warn, kind, n, msg);
    }

    /// Count a problem and log it at once, not rate-limited: for a few lines an operator
    /// asked for and waits to read, such as each codec file that failed to load on SIGHUP.
    pub fn problem_now(&self, kind: &'static str, line: String) {
        self.problems.inc(kind);
        let line = crate::logline::clean(&line);
        log::warn!("{line} [{kind}]");
        self.log.remember(log::Level::Warn, kind, line);
    }

    /// The recTypes the config can emit: the status line says that every recType is parked
    /// only when these and every recType delivered so far are.
    pub fn foresee(&self, rec_types: impl IntoIterator<Item = String>) {
        let rec_types: Vec<String> = rec_types.into_iter().collect();
        // Their counters from the start (see [`Family::declare`]).
        for rec_type in &rec_types {
            self.delivered.declare(rec_type);
            self.bytes_sent.declare(rec_type);
        }
        *self.foreseen.lock().unwrap_or_else(|e| e.into_inner()) = rec_types;
    }

    /// Log `msg()` at `level`, rate-limited per `kind`, without counting it as a problem
    /// (for events with counters of their own, such as drops).
    pub fn log_limited(&self, level: log::Level, kind: &'static str, msg: impl FnOnce() -> String) {
        self.log.log(level, kind, msg);
    }

    pub fn problems(&self, kind: &str) -> u64 {
        self.problems.get(kind).unwrap_or(0)
    }

    pub fn problem_counts(&self) -> Vec<(String, u64)> {
        self.problems.snapshot()
    }

    /// The warnings and errors written lately, newest first (see [`crate::logline`]).
    pub fn recent_problems(&self) -> Vec<crate::logline::Written> {
        self.log.recent()
    }

    /// Log an error at once (not rate-limited: the caller happens once per event, such as a
    /// hub parked) and keep it among the recent problems.
    pub fn error(&self, kind: &'static str, line: String) {
        // The line may quote a broker's answer: cut and escaped like every other.
        let line = crate::logline::clean(&line);
        log::error!("{line}");
        self.log.remember(log::Level::Error, kind, line);
    }

    /// Records dropped for good, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_full.get()
            + self.dropped_disk_full.get()
            + self.dropped_expired.get()
            + self.dropped_corrupt.get()
            + self.dropped_queue_full.get()
            + self.dropped_stopping.get()
    }

    fn exposed(&self) -> Vec<Exposed> {
        let one_value = |v: u64| vec![(String::new(), v)];
        let one = |c: &Counter| one_value(c.get());
        let e = |name, kind, label: &'static str, help, values: Vec<(String, u64)>| Exposed {
            name,
            kind,
            labels: vec![label],
            help,
            values: values.into_iter().map(|(l, v)| (vec![l], v)).collect(),
        };
        let mqtt = |name, help, links: &MqttLinks| Exposed {
            name,
            kind: "gauge",
            labels: vec!["broker", "client_id"],
            help,
            values: links.snapshot(),
        };
        vec![
            e("received_total", "counter", "source", "frames received, by source", self.received.snapshot()),
            e("decoded_total", "counter", "", "records built", one(&self.decoded)),
            e("delivered_total", "counter", "rec_type", "records confirmed by the sink, by recType", self.delivered.snapshot()),
            e("bytes_sent_total", "counter", "rec_type", "bytes of the records the sink confirmed, by recType: for Kafka and Event Hubs the value, key and headers handed to the producer (before compression; Kafka framing and TLS not counted), for stdout the line written", self.bytes_sent.snapshot()),
            e("acked_total", "counter", "", "source messages acknowledged", one(&self.acked)),
            e("duplicates_total", "counter", "", "duplicate uplinks dropped", one(&self.duplicates)),
            e("mac_frames_total", "counter", "", "radio uplinks on FPort 0 (MAC commands only) or without FPort (no payload), not made into records", one(&self.mac_frames)),
            e("non_uplink_events_total", "counter", "", "network-server events other than uplinks (ChirpStack join, status, ack, txack, log...) a source's topic took in: acknowledged, not made into records", one(&self.non_uplink_events)),
            e("decode_errors_total", "counter", "codec", "payloads a codec rejected (the next decoder in decode_order is tried; packed if none decodes), by codec", self.decode_errors.snapshot()),
            e("problems_total", "counter", "kind", "bad input and decode failures, by kind", self.problems.snapshot()),
            e("spilled_total", "counter", "", "records written to the buffer", one(&self.spilled)),
            e("buffer_rebuilds_total", "counter", "", "rebuilds of the drained buffer database that gave disk space back", one(&self.buffer_rebuilds)),
            e("buffer_records", "gauge", "", "records in the buffer", one(&self.buffer_records)),
            e("buffer_bytes", "gauge", "", "bytes in the buffer", one(&self.buffer_bytes)),
            e(
                "buffer_oldest_age_seconds",
                "gauge",
                "",
                "seconds since the oldest record in the buffer was stored (0: empty)",
                one_value(self.buffer_oldest.age_s(std::time::Instant::now())),
            ),
            e(
                "buffer_flush_seconds",
                "gauge",
                "",
                "seconds the buffer's running flush (its fsyncs, on buffer sync) has taken so far (0: none runs); acknowledgements of spilled records wait for it",
                one_value(self.buffer_flush.age_s(std::time::Instant::now())),
            ),
            e("buffer_syncs_total", "counter", "", "fsync/fdatasync calls that made buffer writes durable", one(&self.buffer_syncs)),
            e("buffer_state_unsynced", "gauge", "", "1 from a LoRaWAN frame's take until its frame counter is durable (one the disk refused to write: until it is written again), and while another change of the buffer's state waits for its sync", one(&self.buffer_state_unsynced)),
            e(
                "dropped_total",
                "counter",
                "reason",
                "records dropped, by reason (full: buffer full, disk_full: less than buffer.min_free left on the disk, expired: older than max_age, corrupt: failed its checksum, queue_full: a serial or UDP frame found the frame queue's bytes taken, stopping: a serial or UDP frame found the frame queue closed as the agent stopped)",
                vec![
                    ("full".into(), self.dropped_full.get()),
                    ("disk_full".into(), self.dropped_disk_full.get()),
                    ("expired".into(), self.dropped_expired.get()),
                    ("corrupt".into(), self.dropped_corrupt.get()),
                    ("queue_full".into(), self.dropped_queue_full.get()),
                    ("stopping".into(), self.dropped_stopping.get()),
                ],
            ),
            e("udp_kernel_drops_total", "counter", "listen", "datagrams the kernel dropped on a UDP source's socket (receive buffer full), by listen address", self.udp_drops.snapshot()),
            e("dead_lettered_total", "counter", "", "dead letters kept: records the sink rejected for good and messages hubgate gave up on", one(&self.dead_lettered)),
            e("in_flight", "gauge", "", "records sent, not yet confirmed", one(&self.in_flight)),
            e("clock_synchronized", "gauge", "", "1 while the system clock is known to be synchronised (docs/durability.md: what expiry does otherwise)", one(&self.clock_synchronized)),
            e("clock_unknown", "gauge", "", "1 while nothing can tell whether the system clock is synchronised", one(&self.clock_unknown)),
            e("sink_errors_total", "counter", "class", "sink failures, by class (retry, park, reject)", self.sink_errors.snapshot()),
            e("last_delivery_timestamp_seconds", "gauge", "", "unix time of the last record the sink confirmed (0: none yet)", one(&self.last_delivery)),
            e("parked", "gauge", "rec_type", "1 while a recType is held back (hub missing or refused)", self.parked.snapshot()),
            e("hubs_parked", "gauge", "reason", "recTypes held back, by the cause of their hub's refusal (docs/eventhubs.md)", self.park_reasons.by_cause()),
            mqtt("mqtt_connected", "1 while the MQTT source is connected", &self.mqtt_connected),
            mqtt("mqtt_subscribed", "1 while the MQTT source is subscribed", &self.mqtt_subscribed),
            e("mqtt_retained_skipped_total", "counter", "", "retained MQTT messages the broker sent again (at a subscribe) whose record was made already: acknowledged, not made into records again", one(&self.mqtt_retained_skipped)),
            e("serial_connected", "gauge", "device", "1 while the serial source has its device open (0: not yet opened, or away)", self.serial_connected.snapshot()),
            e("kafka_connected", "gauge", "", "1 while a Kafka broker connection is up (from librdkafka's broker states every 5 s, and at once when a record is confirmed)", self.kafka_connected.snapshot()),
        ]
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in self.exposed() {
            let name = m.name;
            let _ = writeln!(
                out,
                "# HELP hubgate_{name} {}\n# TYPE hubgate_{name} {}",
                m.help, m.kind
            );
            for (values, v) in m.values {
                // One empty value: a family without labels.
                if values.iter().all(String::is_empty) {
                    let _ = writeln!(out, "hubgate_{name} {v}");
                    continue;
                }
                let labels = m
                    .labels
                    .iter()
                    .zip(&values)
                    .map(|(label, value)| format!("{label}=\"{}\"", escape(value)))
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = writeln!(out, "hubgate_{name}{{{labels}}} {v}");
            }
        }
        out
    }

    /// One line for the log: what came in and went out, what waits, the sink's state.
    pub fn status_line(&self, now: std::time::Instant) -> String {
        let sources = self
            .received
            .snapshot()
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sink = match self.kafka_connected.get("") {
            Some(1) => "connected",
            Some(_) => "disconnected",
            None => "ready",
        };
        let parked: Vec<String> = self
            .parked
            .snapshot()
            .into_iter()
            .filter(|(_, v)| *v == 1)
            .map(|(r, _)| r)
            .collect();
        // Every recType foreseen or sent so far is parked: nothing goes out at all.
        let foreseen = self
            .foreseen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let all = !parked.is_empty()
            && self
                .delivered
                .snapshot()
                .into_iter()
                .map(|(r, _)| r)
                .chain(foreseen)
                .all(|r| parked.contains(&r));
        let parked = match self.park_reasons.first() {
            Some(why) if all => format!(" (EVERY recType parked: {}; fix: {})", why.what, why.fix),
            _ if parked.is_empty() => String::new(),
            _ => format!(" (parked: {})", parked.join(", ")),
        };
        let last = match self.last_delivery_at.age(now) {
            None => "no send yet".to_string(),
            Some(age) => format!("last send {}s ago", age.as_secs()),
        };
        format!(
            "status: in {} ({}), out {}, buffered {} record(s) / {} B, dropped {}, sink {sink}{parked}, {last}",
            self.received.sum(),
            if sources.is_empty() { "none" } else { &sources },
            self.delivered.sum(),
            self.buffer_records.get(),
            self.buffer_bytes.get(),
            self.dropped(),
        )
    }
}

/// A moment on both clocks: the wall clock's to show it, the monotonic one to measure
/// ages, intervals and uptime. A Pi has no real-time clock: it boots with the time saved at
/// shutdown and NTP steps the wall clock forward by however long it was off, which on the
/// wall clock alone would age the agent and silence every device by that much.
#[derive(Clone, Copy, Debug)]
pub struct Moment {
    pub wall: SystemTime,
    pub mono: std::time::Instant,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            wall: SystemTime::now(),
            mono: std::time::Instant::now(),
        }
    }
}

impl std::ops::Add<Duration> for Moment {
    type Output = Moment;
    fn add(self, d: Duration) -> Moment {
        Moment {
            wall: self.wall + d,
            mono: self.mono + d,
        }
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Label values as the text format wants them.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Log [`Metrics::status_line`] every `every` until the task is dropped.
pub async fn log_status(metrics: Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        metrics.log.flush();
        log::info!("{}", metrics.status_line(std::time::Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_labelled_series() {
        let m = Metrics::new();
        m.received.inc("mqtt");
        m.received.inc("mqtt");
        m.received.inc("udp");
        m.delivered.inc("io.microshare.motion.unpacked");
        m.bytes_sent.add("io.microshare.motion.unpacked", 700);
        m.bytes_sent.add("io.microshare.motion.unpacked", 23);
        m.decode_errors.inc("browan-tbhh100");
        m.sink_errors.inc("retry");
        m.kafka_connected.set("", 1);
        m.mqtt_connected.set("broker:1883", "a\"b", 1);
        m.dropped_expired.inc();
        m.problem("malformed_json", String::new);
        let text = m.render();
        for line in [
            "# TYPE hubgate_received_total counter",
            "hubgate_received_total{source=\"mqtt\"} 2",
            "hubgate_received_total{source=\"udp\"} 1",
            "hubgate_delivered_total{rec_type=\"io.microshare.motion.unpacked\"} 1",
            "# TYPE hubgate_bytes_sent_total counter",
            "hubgate_bytes_sent_total{rec_type=\"io.microshare.motion.unpacked\"} 723",
            "hubgate_decode_errors_total{codec=\"browan-tbhh100\"} 1",
            "hubgate_sink_errors_total{class=\"retry\"} 1",
            "hubgate_dropped_total{reason=\"expired\"} 1",
            "hubgate_problems_total{kind=\"malformed_json\"} 1",
            "# TYPE hubgate_kafka_connected gauge",
            "hubgate_kafka_connected 1",
            "hubgate_mqtt_connected{broker=\"broker:1883\",client_id=\"a\\\"b\"} 1",
            "hubgate_last_delivery_timestamp_seconds 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Every series has HELP and TYPE.
        let helps = text.matches("# HELP ").count();
        assert_eq!(helps, text.matches("# TYPE ").count());
        assert_eq!(helps, m.exposed().len());
    }

    /// A recType parked, then delivering again (as `pipeline::health` clears it): the gauge
    /// of its cause reads 0 rather than vanishing, so `sum(hubgate_hubs_parked)` says 0, not
    /// "no data" as for an agent that is not scraped.
    #[test]
    fn hubs_parked_reads_zero_once_its_cause_is_cleared() {
        let m = Metrics::new();
        let rec_type = "io.microshare.environment.unpacked";
        assert!(
            !m.render().contains("hubgate_hubs_parked{"),
            "none seen yet"
        );
        m.parked.set(rec_type, 1);
        let missing = ParkReason {
            kind: "missing",
            what: "hub missing".into(),
            fix: "create it".into(),
            broker: String::new(),
        };
        m.park_reasons.set(rec_type, missing.clone());
        m.park_reasons.set("b", missing);
        assert!(m
            .render()
            .contains("hubgate_hubs_parked{reason=\"missing\"} 2\n"));
        m.parked.set(rec_type, 0);
        m.park_reasons.clear(rec_type);
        m.park_reasons.clear("b");
        let text = m.render();
        assert!(
            text.contains(&format!("hubgate_parked{{rec_type=\"{rec_type}\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains("hubgate_hubs_parked{reason=\"missing\"} 0\n"),
            "the hubs_parked series is gone instead of 0:\n{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn status_line_sums_up() {
        let m = Metrics::new();
        let now = std::time::Instant::now();
        assert_eq!(
            m.status_line(now),
            "status: in 0 (none), out 0, buffered 0 record(s) / 0 B, dropped 0, sink ready, no send yet"
        );
        m.received.inc("mqtt");
        m.received.inc("serial");
        m.delivered.inc("a");
        m.buffer_records.set(1);
        m.buffer_bytes.set(300);
        m.dropped_full.inc();
        m.kafka_connected.set("", 0);
        m.parked.set("b", 1);
        m.last_delivery_at.set(Some(now - Duration::from_secs(7)));
        assert_eq!(
            m.status_line(now),
            "status: in 2 (mqtt 1, serial 1), out 1, buffered 1 record(s) / 300 B, dropped 1, sink disconnected (parked: b), last send 7s ago"
        );
        // Every recType the config foresees parked, with the first one's cause and fix.
        m.foresee(["a".to_string(), "b".to_string()]);
        m.parked.set("a", 1);
        m.park_reasons.set(
            "a",
            ParkReason {
                kind: "no_manage",
                what: "hub \"a\" does not exist and this key may not create it".into(),
                fix: "use a key with Manage".into(),
                broker: String::new(),
            },
        );
        assert!(
            m.status_line(now).ends_with(
                "sink disconnected (EVERY recType parked: hub \"a\" does not exist and this key may not create it; fix: use a key with Manage), last send 7s ago"
            ),
            "{}",
            m.status_line(now)
        );
        // One foreseen recType not parked: not every one.
        m.foresee(["a".to_string(), "b".to_string(), "c".to_string()]);
        assert!(
            m.status_line(now).contains("(parked: a, b)"),
            "{}",
            m.status_line(now)
        );
    }
}
