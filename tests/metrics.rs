//! The metrics endpoint and the status line of a real pipeline: mosquitto -> hubgate (child
//! process) -> tansu over SASL_SSL; then the Kafka broker is stopped for real.

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::agent::{
    changed, chirpstack_uplink, config_with, publish_all, topics, uplink_topic, uplinks,
    uplinks_at, Agent, ENV, MOTION, OPENCLOSE, TH, WAIT,
};
use support::{free_udp_port, Kafka, Mosquitto};

const KEY: &str = "bWV0cmljcy10ZXN0LWtleQ==";

fn config(dir: &Path, mqtt: &Mosquitto, kafka: &Kafka) -> String {
    // Undeliverable records fail after 5 s instead of 30, so the outage shows sooner.
    changed(
        &config_with(&dir.join("buffer"), mqtt, kafka, KEY, "", ""),
        &[(
            "\"message.timeout.ms\" = \"30000\"",
            "\"message.timeout.ms\" = \"5000\"",
        )],
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_metrics_and_status_line_follow_the_pipeline_and_the_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let started = now();
    let agent = Agent::start_with_metrics(
        dir.path(),
        &config(dir.path(), &mqtt, &kafka),
        "status_interval = \"1s\"",
    );
    // The default client id, hubgate-<gateway_id>, tells this source from any other on the
    // broker.
    let broker = format!(
        "{{broker=\"127.0.0.1:{}\",client_id=\"hubgate-test\"}}",
        mqtt.port()
    );
    agent.wait_metric(&format!("hubgate_mqtt_subscribed{broker}"), WAIT, |v| {
        v == 1
    });
    agent.wait_metric(&format!("hubgate_mqtt_connected{broker}"), WAIT, |v| v == 1);
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 1);

    // 5 uplinks per device, and one TBHH100 payload too short for its codec (sent packed, in
    // the codec's domain).
    let n = 5;
    let mut messages = uplinks(n);
    messages.push((uplink_topic(TH), chirpstack_uplink(TH, 100, 103, &[0x08])));
    publish_all(mqtt.port(), &messages).await;
    let total = messages.len() as u64;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == total);

    assert_eq!(
        agent.metric("hubgate_received_total{source=\"mqtt\"}"),
        total
    );
    assert_eq!(agent.metric("hubgate_received_total"), total);
    for (rec_type, want) in [
        (ENV, n),
        (MOTION, n),
        (OPENCLOSE, n),
        ("io.microshare.environment.packed", 1),
    ] {
        assert_eq!(
            agent.metric(&format!(
                "hubgate_delivered_total{{rec_type=\"{rec_type}\"}}"
            )),
            u64::from(want),
            "{rec_type}"
        );
    }
    // Bytes sent: each recType's keys and values exactly as the broker holds them.
    for (rec_type, want) in [
        (ENV, n),
        (MOTION, n),
        (OPENCLOSE, n),
        ("io.microshare.environment.packed", 1),
    ] {
        let records = kafka.consume_all(rec_type, want as usize, WAIT);
        let bytes: usize = records.iter().map(|(k, v, _, _)| k.len() + v.len()).sum();
        assert_eq!(
            agent.metric(&format!(
                "hubgate_bytes_sent_total{{rec_type=\"{rec_type}\"}}"
            )),
            bytes as u64,
            "{rec_type}"
        );
    }
    assert_eq!(
        agent.metric("hubgate_decode_errors_total{codec=\"browan-tbhh100\"}"),
        1
    );
    assert_eq!(agent.metric("hubgate_decode_errors_total"), 1);
    // Nothing refused or parked (each class is there at 0 from the start). A record the
    // broker took over 5 s to confirm on a loaded machine is a `retry`, and fine.
    for class in ["reject", "park"] {
        assert_eq!(
            agent.metric(&format!("hubgate_sink_errors_total{{class=\"{class}\"}}")),
            0,
            "{class}"
        );
    }
    for reason in [
        "full",
        "disk_full",
        "expired",
        "corrupt",
        "queue_full",
        "stopping",
    ] {
        let series = format!("hubgate_dropped_total{{reason=\"{reason}\"}}");
        assert!(agent.has_metric(&series), "no {series}");
        assert_eq!(agent.metric(&series), 0, "{series}");
    }
    let last = agent.metric("hubgate_last_delivery_timestamp_seconds");
    assert!(
        (started..=now()).contains(&last),
        "last delivery at {last}, test ran from {started}"
    );
    assert_eq!(
        agent.metric("hubgate_buffer_oldest_age_seconds"),
        0,
        "empty"
    );
    let text = agent.scrape().unwrap();
    for line in [
        "# TYPE hubgate_received_total counter",
        "# TYPE hubgate_kafka_connected gauge",
        "# TYPE hubgate_buffer_bytes gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    // The status line catches up with the counters within its interval.
    let status = format!(
        "status: in {total} (mqtt {total}), out {total}, buffered 0 record(s) / 0 B, dropped 0, sink connected, last send "
    );
    agent.wait_log(&status, 1, WAIT);

    // The broker dies: the gauge drops, records wait in the buffer, failures are counted.
    kafka.stop();
    agent.wait_metric("hubgate_kafka_connected", WAIT, |v| v == 0);
    publish_all(mqtt.port(), &uplinks_at(n + 1)).await;
    agent.wait_metric("hubgate_sink_errors_total{class=\"retry\"}", WAIT, |v| {
        v > 0
    });
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 3);
    assert!(agent.metric("hubgate_buffer_bytes") > 0);
    // Held while the broker is gone: the oldest record's age grows.
    let held = agent.metric("hubgate_buffer_oldest_age_seconds");
    agent.wait_metric("hubgate_buffer_oldest_age_seconds", WAIT, |v| {
        (held + 2..held + 120).contains(&v)
    });
    assert_eq!(agent.metric("hubgate_delivered_total"), total);
    assert_eq!(
        agent.metric(&format!("hubgate_mqtt_connected{broker}")),
        1,
        "MQTT is not affected"
    );
    let outage = format!(
        "status: in {0} (mqtt {0}), out {total}, buffered 3 record(s) / ",
        total + 3
    );
    let log = agent.wait_log(&outage, 1, WAIT);
    let line = log.lines().rfind(|l| l.contains(&outage)).unwrap();
    assert!(
        line.contains(", dropped 0, sink disconnected, last send "),
        "{line}"
    );
    assert!(
        !log.contains(KEY),
        "the SharedAccessKey leaked into the log"
    );
}

/// An agent with nothing but the metrics endpoint to talk to: a UDP source, a stdout sink.
fn quiet_agent(dir: &Path) -> Agent {
    let body = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n[sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
        free_udp_port()
    );
    let agent = Agent::start_with_stdout(dir, &body);
    // Started, buffer open: the descriptor tests must not starve the start itself.
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    agent
}

/// Counters whose label values are known at the start are there at 0 before their first
/// event, as `hubgate_dropped_total`'s reasons are: a series born at 1 has no earlier sample,
/// so `increase()`/`rate()` never count its first event (one sink rejection would not fire
/// `increase(hubgate_sink_errors_total{class="reject"}[10m]) > 0`), and a "no frames" alert
/// on a configured source has no series to look at until its first frame.
#[test]
fn counters_of_known_labels_are_there_at_zero_before_their_first_event() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent(dir.path());
    let text = agent.scrape().unwrap();
    for series in [
        "hubgate_received_total{source=\"udp\"}",
        "hubgate_sink_errors_total{class=\"retry\"}",
        "hubgate_sink_errors_total{class=\"park\"}",
        "hubgate_sink_errors_total{class=\"reject\"}",
        "hubgate_delivered_total{rec_type=\"io.microshare.lorawan.packed\"}",
        "hubgate_bytes_sent_total{rec_type=\"io.microshare.lorawan.packed\"}",
    ] {
        assert!(
            text.lines().any(|l| l == format!("{series} 0")),
            "no {series} 0 in\n{text}"
        );
    }
    // Only the configured kinds.
    assert!(
        !text.contains("hubgate_received_total{source=\"mqtt\"}"),
        "{text}"
    );
}

/// The exposition's content type names its charset: label values carry UTF-8 from the
/// config and from input (serial paths, recTypes, hub names), which a browser or proxy would
/// read as Latin-1 without it (Prometheus' own client libraries send the same type).
#[test]
fn the_exposition_is_labelled_utf_8() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent(dir.path());
    let (code, head, _) = agent
        .request("GET /metrics HTTP/1.0\r\n\r\n")
        .expect("metrics answered");
    assert_eq!(code, 200, "{head}");
    let kind = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
        .unwrap_or_default();
    assert_eq!(
        kind,
        "content-type: text/plain; version=0.0.4; charset=utf-8"
    );
}

/// The child's open descriptors, by number.
fn fds(pid: i32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn connect_idle(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect()
}

/// Hundreds of connections that never send a request hold at most the cap of descriptors,
/// a scrape still gets through, and the idle ones are closed after the read timeout.
#[test]
fn idle_connections_neither_pile_up_nor_lock_a_scrape_out() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent(dir.path());
    let baseline = fds(agent.pid()).len();
    let idle = connect_idle(agent.metrics_port, 300);
    let text = agent.wait_scrape(WAIT, "no scrape got through");
    assert!(
        text.contains("# TYPE hubgate_received_total counter"),
        "{text}"
    );
    // A connection just closed may hold its descriptor a moment longer: the bound must hold
    // once that settles, not at one instant.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = fds(agent.pid()).len();
        if held <= baseline + hubgate::http::MAX_CONNECTIONS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} descriptors, {baseline} before 300 idle connections"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while fds(agent.pid()).len() > baseline {
        assert!(
            Instant::now() < deadline,
            "idle connections still open:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
}

/// Out of file descriptors, the accept loop pauses (10 ms doubling to 1 s) instead of
/// retrying at once: each attempt is counted, and the count stays within what the pauses
/// allow. Given descriptors back, it serves again.
#[test]
fn out_of_descriptors_the_listener_pauses_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent(dir.path());
    let pid = agent.pid();
    // The lowest free descriptor number as the limit: every open fails with EMFILE.
    let open = fds(pid);
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    // SAFETY: plain syscalls on our own child, with valid pointers or null.
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut before) },
        0
    );
    let soft_limit = |soft: libc::rlim_t| {
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: before.rlim_max,
        };
        let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
        assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    };
    let started = Instant::now();
    soft_limit(libc::rlim_t::from(lowest_free));
    let waiting = connect_idle(agent.metrics_port, 5);
    agent.wait_log("metrics: cannot accept a connection", 1, WAIT);
    // Let the failures go on for a while: a spinning loop makes millions of attempts.
    std::thread::sleep(Duration::from_secs(3));
    soft_limit(before.rlim_cur);
    let window = started.elapsed();
    drop(waiting);
    let text = agent.wait_scrape(WAIT, "no scrape after the limit went up");
    let attempts =
        support::agent::metric_value(&text, "hubgate_problems_total{kind=\"http_accept\"}");
    // 10+20+...+640 ms for the first 7, then one a second.
    let most = 8 + window.as_secs_f64().ceil() as u64;
    assert!(
        (1..=most).contains(&attempts),
        "{attempts} failed accepts in {window:?} (at most {most})"
    );
}

/// The running agent cannot dump core (its memory holds the secrets), outside systemd too.
#[test]
fn the_agent_runs_without_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let agent = quiet_agent(dir.path());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("{limits}"));
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..7],
        ["0", "0", "bytes"],
        "{core}"
    );
}

/// `hubgate_udp_kernel_drops_total` under a unit with `ProcSubset=pid` (the shipped one had it;
/// an operator's drop-in may add it back): that procfs shows only the process directories, so
/// `/proc/net` (a link to `self/net`) is not there while `/proc/self/net/udp` is, which is
/// what the agent reads. Reproduced with the same mount option in a mount and PID namespace of
/// its own (needs root, as `unshare` does; skipped without).
#[test]
fn udp_kernel_drops_are_counted_under_a_proc_subset() {
    let probe = std::process::Command::new("unshare")
        .args(["-m", "-p", "-f", "--kill-child", "sh", "-c"])
        .arg("mount -t proc -o subset=pid proc /proc && test -e /proc/self/net/udp")
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount a procfs with subset=pid here (unshare needs root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = support::free_port();
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
             [sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            dir.path().join("buffer").display(),
            free_udp_port()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("hubgate.log")).unwrap();
    let agent = Unshared(
        std::process::Command::new("unshare")
            .args(["-m", "-p", "-f", "--kill-child", "sh", "-c"])
            .arg("mount -t proc -o subset=pid proc /proc && exec \"$0\" run -c \"$1\"")
            .arg(env!("CARGO_BIN_EXE_hubgate"))
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("# TYPE hubgate_received_total").then_some(out)
    };
    // The listener answers before the sources are bound, and the UDP source registers its
    // series once it runs: scrape until it is there.
    let log = || std::fs::read_to_string(dir.path().join("hubgate.log")).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    let drops = "hubgate_udp_kernel_drops_total{listen=\"127.0.0.1:";
    loop {
        let text = scrape();
        if text.as_deref().is_some_and(|t| t.contains(drops)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drops line for the UDP source in the scrape ({}):\n{}",
            text.as_deref().map_or("none".into(), |t| t
                .lines()
                .filter(|l| l.contains("udp_kernel_drops"))
                .collect::<Vec<_>>()
                .join("\n")),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
}

/// The agent under `unshare`, killed with its namespace (`--kill-child`) however the test
/// ends, a failed wait included.
struct Unshared(std::process::Child);

impl Drop for Unshared {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
