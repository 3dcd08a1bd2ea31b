//! Counters and gauges, shared by handle, rendered as Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[derive(Default)]
pub struct Metrics {
    pub received: Counter,
    pub decoded: Counter,
    pub acked: Counter,
    pub delivered: Counter,
    pub duplicates: Counter,
    pub spilled: Counter,
    pub send_errors: Counter,
    pub dropped_full: Counter,
    pub dropped_disk_full: Counter,
    pub dropped_expired: Counter,
    pub dropped_corrupt: Counter,
    pub dead_lettered: Counter,
    pub buffer_records: Counter,
    pub buffer_bytes: Counter,
    pub in_flight: Counter,
    /// 1 while the MQTT source holds a subscription.
    pub mqtt_subscribed: Counter,
    /// Bad input and decode trouble by kind (`malformed_json`, `codec_error`, …).
    problems: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Count a problem of `kind`; log `msg()` at warn the first time, at debug after that,
    /// so a flood of bad input cannot flood the log.
    pub fn count_once(&self, kind: &'static str, msg: impl FnOnce() -> String) {
        let first = {
            let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
            let n = p.entry(kind).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            log::warn!(
                "{} (first of its kind: {kind}; later ones at debug level)",
                msg()
            );
        } else if log::log_enabled!(log::Level::Debug) {
            log::debug!("{}", msg());
        }
    }

    pub fn problems(&self, kind: &str) -> u64 {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        p.get(kind).copied().unwrap_or(0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: &[(&str, &Counter, &str)] = &[
            (
                "received_total",
                &self.received,
                "frames received from sources",
            ),
            ("decoded_total", &self.decoded, "records built"),
            ("acked_total", &self.acked, "source messages acknowledged"),
            (
                "delivered_total",
                &self.delivered,
                "records confirmed by the sink",
            ),
            (
                "duplicates_total",
                &self.duplicates,
                "duplicate uplinks dropped",
            ),
            (
                "spilled_total",
                &self.spilled,
                "records written to the buffer",
            ),
            (
                "send_errors_total",
                &self.send_errors,
                "failed deliveries (retried)",
            ),
            (
                "dropped_full_total",
                &self.dropped_full,
                "records dropped: buffer full",
            ),
            (
                "dropped_disk_full_total",
                &self.dropped_disk_full,
                "records dropped: less than buffer.min_free left on the disk",
            ),
            (
                "dropped_expired_total",
                &self.dropped_expired,
                "records dropped: older than max_age",
            ),
            (
                "dropped_corrupt_total",
                &self.dropped_corrupt,
                "buffered records that failed their checksum",
            ),
            (
                "dead_lettered_total",
                &self.dead_lettered,
                "records the sink rejected for good",
            ),
            (
                "buffer_records",
                &self.buffer_records,
                "records in the buffer",
            ),
            ("buffer_bytes", &self.buffer_bytes, "bytes in the buffer"),
            (
                "in_flight",
                &self.in_flight,
                "records sent, not yet confirmed",
            ),
            (
                "mqtt_subscribed",
                &self.mqtt_subscribed,
                "1 while the MQTT source is subscribed",
            ),
        ];
        for &(name, c, help) in counters {
            let _ = writeln!(
                out,
                "# HELP hubgate_{name} {help}\nhubgate_{name} {}",
                c.get()
            );
        }
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            out,
            "# HELP hubgate_problems_total bad input and decode failures by kind"
        );
        for (kind, n) in p.iter() {
            let _ = writeln!(out, "hubgate_problems_total{{kind=\"{kind}\"}} {n}");
        }
        out
    }
}

/// Serve `GET /metrics` (any path, really) on `addr` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let body = metrics.render();
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
