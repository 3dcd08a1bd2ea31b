//! The spill buffer on disk, without brokers: records spilled per second with a flush (and
//! its file syncs) per forwarder round of PER_FLUSH records (256), then drained (read,
//! deleted, and synced when the forwarder would) in order; and what that writes to the disk
//! per record (`/proc/self/io` write_bytes).
//! `cargo bench --bench buffer -- [RECORDS] [DIR] [PER_FLUSH]` (50000 records in a temporary
//! directory under /var/tmp by default: put DIR on the file system to measure, not on a
//! tmpfs).

use std::time::Instant;

use hubgate::buffer::{Buffer, SledStore};
use hubgate::config::BufferConfig;
use hubgate::metrics::Metrics;
use hubgate::record::Record;

/// Records per flush, as the forwarder takes them per round at most.
const BATCH: u64 = 256;

/// Bytes this process caused to be written to storage so far.
fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes: ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn record(i: u64) -> Record {
    Record {
        id: format!("{i:016x}-0000-4000-8000-000000000000"),
        rec_type: "io.microshare.environment.unpacked".into(),
        key: "58-A0-CB-00-00-10-12-34".into(),
        created_ms: 1_700_000_000_000 + i,
        // About the size of a decoded Tabs record's envelope.
        body: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(1400)),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let base = args
        .get(1)
        .map_or("/var/tmp".into(), std::path::PathBuf::from);
    let per_flush: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(BATCH);
    let dir = tempfile::tempdir_in(base).expect("temporary directory");
    let cfg = BufferConfig {
        path: dir.path().to_path_buf(),
        max_bytes: u64::MAX,
        min_free: 0,
        ..BufferConfig::default()
    };
    let metrics = Metrics::new();
    let store = SledStore::open(dir.path()).expect("open the buffer");
    let mut buffer = Buffer::new(Box::new(store), &cfg, metrics.clone());
    let records: Vec<Record> = (0..n).map(record).collect();

    let start = Instant::now();
    let syncs = metrics.buffer_syncs.get();
    let written = write_bytes();
    for (seq, rec) in records.iter().enumerate() {
        buffer.push(seq as u64, rec).expect("push");
        if seq as u64 % per_flush == per_flush - 1 {
            buffer.flush().expect("flush");
        }
    }
    buffer.flush().expect("flush");
    let spill = start.elapsed().as_secs_f64();
    let spill_syncs = metrics.buffer_syncs.get() - syncs;
    let spill_written = write_bytes() - written;

    let start = Instant::now();
    let syncs = metrics.buffer_syncs.get();
    let written = write_bytes();
    let mut after = None;
    loop {
        let batch = buffer
            .next(after, 2000, u64::MAX, Instant::now())
            .expect("next");
        let Some((last, _)) = batch.last() else { break };
        after = Some(*last);
        for (seq, _) in batch {
            buffer.remove(seq).expect("remove");
            if buffer.sync_due(Instant::now()) {
                buffer.flush().expect("flush");
            }
        }
    }
    buffer.flush().expect("flush");
    let drain = start.elapsed().as_secs_f64();
    let drain_syncs = metrics.buffer_syncs.get() - syncs;
    let drain_written = write_bytes() - written;

    println!(
        "buffer: {n} records of {} bytes in {}",
        hubgate::buffer::encode(&records[0]).len(),
        dir.path().display()
    );
    println!(
        "spill: {per_flush} records per flush, {:.0} records/s, {:.0} flushes/s, {spill_syncs} syncs ({:.0}/s), {:.0} bytes written per record",
        n as f64 / spill,
        n.div_ceil(per_flush) as f64 / spill,
        spill_syncs as f64 / spill,
        spill_written as f64 / n as f64
    );
    println!(
        "drain: {:.0} records/s, {drain_syncs} syncs ({:.0}/s), {:.0} bytes written per record",
        n as f64 / drain,
        drain_syncs as f64 / drain,
        drain_written as f64 / n as f64
    );
}
