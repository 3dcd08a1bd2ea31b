//! The pipeline benchmark's smoke run, so the harness cannot rot: every phase runs on small
//! counts against the real services and must complete with plausible numbers.

mod support;

#[path = "../benches/pipeline/harness.rs"]
mod harness;

#[test]
fn benchmark_smoke_run_completes_every_phase() {
    let opts = harness::Options::smoke();
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
    }
    assert!(
        r.startup_ms > 0.0
            && r.idle_rss_kb > 0
            && r.peak_rss_live_kb >= r.idle_rss_kb
            && r.peak_rss_kb > 0
    );
    assert!(r.cpu_s_per_1000 > 0.0 && r.fill_sled_bytes_per_record > 0.0);
    assert!(r.idle.secs > 0.0 && r.idle.threads.iter().any(|t| t.0 == "forwarder"));
    assert_eq!(r.live.len(), opts.rates.len());
}
