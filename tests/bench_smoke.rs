//! The pipeline benchmark's smoke run, so the harness cannot rot: every phase runs on small
//! counts against the real services and must complete with plausible numbers, through the
//! round-trip proxy (`--rtt`), beside a busy loop (`--load`), writing its per-record times
//! (`--dir`).

mod support;

#[path = "../benches/pipeline/harness.rs"]
mod harness;

use std::time::Duration;

#[test]
fn benchmark_smoke_run_completes_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let opts = harness::Options {
        dir: Some(dir.path().to_path_buf()),
        rtt: Some(Duration::from_millis(4)),
        load: 1,
        ..harness::Options::smoke()
    };
    let r = harness::run(&opts);
    println!("{}", r.table());
    assert!(r.ceiling_per_s > 0.0 && r.throughput_per_s > 0.0 && r.drain_per_s > 0.0);
    assert_eq!(r.latency.len(), opts.rates.len());
    assert_eq!(r.broker_latency.len(), opts.rates.len());
    for l in r.latency.iter().chain(&r.broker_latency) {
        assert!(
            l.records > 0 && l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.max,
            "{l:?}"
        );
        // Every record's read-back waited for the round trip at least once.
        assert!(l.p50 >= 4.0, "{l:?}");
    }
    // hubgate's records carry the time it handed them to the producer.
    assert!(r.latency.iter().all(|l| l.to_producer_max > 0.0));
    assert!(
        r.startup_ms > 0.0
            && r.idle_rss_kb > 0
            && r.peak_rss_live_kb >= r.idle_rss_kb
            && r.peak_rss_kb > 0
    );
    assert!(r.cpu_s_per_1000 > 0.0 && r.fill_sled_bytes_per_record > 0.0);
    assert!(r.idle.secs > 0.0 && r.idle.threads.iter().any(|t| t.0 == "forwarder"));
    assert_eq!(r.live.len(), opts.rates.len());
    let table = r.table();
    for row in [
        "rtt:     4 ms",
        "load:    1 busy loops",
        "over the broker alone at 200/s",
    ] {
        assert!(table.contains(row), "no {row:?} in the table");
    }

    // latency.csv and broker-latency.csv: a row per record of every rate run (the warm-up
    // included, as run 0), each with its run, its rate and its publish, hand-over and
    // read-back times.
    let warm_up = harness::rate_records(harness::WARM_UP.0, harness::WARM_UP.1);
    let records: u64 = opts
        .rates
        .iter()
        .map(|(rate, d)| harness::rate_records(*rate, *d))
        .sum::<u64>()
        + warm_up;
    for name in ["latency.csv", "broker-latency.csv"] {
        let csv = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().starts_with("# 0 ms = "));
        assert_eq!(
            lines.next(),
            Some("run,rate,seq,published_ms,produced_ms,read_ms")
        );
        let rows: Vec<Vec<f64>> = lines
            .map(|l| l.split(',').map(|f| f.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len() as u64, records, "{name}");
        for (seq, row) in rows.iter().enumerate() {
            let (run, rate) = if (seq as u64) < warm_up {
                (0, harness::WARM_UP.0)
            } else {
                (1, opts.rates[0].0)
            };
            assert_eq!(row[..3], [run as f64, rate as f64, seq as f64], "{name}");
            assert!(
                row[3] > 0.0 && row[4] > 0.0 && row[5] > row[3],
                "{name}: {row:?}"
            );
        }
    }
}
