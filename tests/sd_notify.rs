//! systemd notifications from the real hubgate process: the test plays systemd's part, binding
//! the `NOTIFY_SOCKET` datagram socket and setting `WATCHDOG_USEC` as a `Type=notify` unit with
//! `WatchdogSec=` would.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::free_udp_port;

/// Watchdog timeout handed to hubgate: it looks at the forwarder's heartbeat every second
/// and the idle forwarder beats every half second, so only a stall of a second (not a busy
/// test machine's tenth of one) would withhold a ping.
const WATCHDOG_USEC: u64 = 4_000_000;
const WAIT: Duration = Duration::from_secs(20);

/// The next notification datagram, or None once `deadline` has passed.
fn next(sock: &UnixDatagram, deadline: Instant) -> Option<String> {
    let left = deadline.checked_duration_since(Instant::now())?;
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_then_watchdog_pings_then_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    // The child inherits these. The other tests of this binary give their children their
    // own NOTIFY_SOCKET or none.
    std::env::set_var("NOTIFY_SOCKET", &socket_path);
    std::env::set_var("WATCHDOG_USEC", WATCHDOG_USEC.to_string());
    let port = free_udp_port();
    let config = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{port}\"\n\
         [sink]\ntype = \"stdout\"\n",
        dir.path().join("buffer").display()
    );
    let mut agent = Agent::start(dir.path(), &config);

    let deadline = Instant::now() + WAIT;
    let first = next(&sock, deadline).expect("no notification from hubgate");
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first notification is not READY=1: {first:?}"
    );
    assert!(
        first.lines().any(|l| l.starts_with("STATUS=running")),
        "{first:?}"
    );
    let mut pings = 0;
    while pings < 3 {
        let msg = next(&sock, deadline).unwrap_or_else(|| {
            panic!(
                "{pings} watchdog ping(s) within {WAIT:?}:\n{}",
                agent.logs()
            )
        });
        assert!(!msg.contains("READY=1"), "READY=1 twice: {msg:?}");
        if msg.lines().any(|l| l == "WATCHDOG=1") {
            assert!(
                msg.lines()
                    .any(|l| l.starts_with("STATUS=status: in 0") && l.contains("out 0")),
                "{msg:?}"
            );
            pings += 1;
        }
    }
    // The forwarder is idle here, and still beats between two pings.
    assert!(
        !agent.logs().contains("withholding the watchdog ping"),
        "{}",
        agent.logs()
    );

    let status = agent.terminate(WAIT);
    assert!(status.success(), "exit after SIGTERM: {status}");
    // Everything hubgate sent is queued by now: read until STOPPING=1 or the queue is empty.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut rest = Vec::new();
    while let Some(msg) = next(&sock, deadline) {
        let stopping = msg.lines().any(|l| l == "STOPPING=1");
        rest.push(msg);
        if stopping {
            break;
        }
    }
    assert!(
        rest.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {rest:?}"
    );
}

/// Where [`make_an_old_buffer`] writes, when this binary runs it as a process of its own.
const OLD_BUFFER: &str = "HUBGATE_TEST_OLD_BUFFER";
/// Records in the old buffer: three batches of the upgrade (256, 256, 100).
const OLD_RECORDS: u64 = 612;

/// Not a test of its own: writes a buffer in the layout of an earlier release (bodies in
/// sled's tree `records`) when [`OLD_BUFFER`] names one. Run in a process of its own, so that
/// sled's lock is gone with it before hubgate opens the database.
#[test]
fn make_an_old_buffer() {
    let Some(buffer) = std::env::var_os(OLD_BUFFER) else {
        return;
    };
    let db = sled::open(std::path::Path::new(&buffer).join("sled")).unwrap();
    let records = db.open_tree("records").unwrap();
    for seq in 0..OLD_RECORDS {
        records.insert(seq.to_be_bytes(), vec![7; 100]).unwrap();
    }
    db.flush().unwrap();
}

/// Not a test of its own: when [`LOSE_MARK`] names a buffer, sets the mark its database holds
/// back to #0, as if sled had lost the flushes after it (the mark file says #611). Run in a
/// process of its own, for sled's lock.
#[test]
fn make_the_buffer_lose_its_mark() {
    let Some(buffer) = std::env::var_os(LOSE_MARK) else {
        return;
    };
    let db = sled::open(std::path::Path::new(&buffer).join("sled")).unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert(b"max_seq", &0u64.to_be_bytes()).unwrap();
    db.flush().unwrap();
}

/// Where [`make_the_buffer_lose_its_mark`] writes.
const LOSE_MARK: &str = "HUBGATE_TEST_LOSE_MARK";

/// Runs this binary's helper `test` (`make_an_old_buffer`, ...) with `var` set to `buffer`.
fn helper(test: &str, var: &str, buffer: &std::path::Path) {
    let made = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact"])
        .env(var, buffer)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

/// Runs `hubgate buffer stats` on `config` with a notify socket, checks it counts every
/// record and returns the datagrams it sent.
fn stats_notified(dir: &std::path::Path, config: &std::path::Path) -> Vec<String> {
    let socket_path = dir.join("notify-buffer");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let stats = support::agent::command()
        .args(["buffer", "stats", "-c"])
        .arg(config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(stats.status.success(), "{stats:?}");
    assert!(
        String::from_utf8_lossy(&stats.stdout).contains(&format!("records: {OLD_RECORDS}")),
        "{stats:?}"
    );
    // Everything it sent is queued: it has exited.
    sock.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    std::fs::remove_file(&socket_path).unwrap();
    got
}

/// The upgrade of an old buffer runs before READY=1: after each batch hubgate pushes
/// systemd's start timeout with EXTEND_TIMEOUT_USEC and says how far it got.
#[test]
fn the_upgrade_extends_the_start_timeout_after_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, config) = support::buffer_cmd::config(dir.path());
    helper("make_an_old_buffer", OLD_BUFFER, &buffer);
    let got = stats_notified(dir.path(), &config);
    let expected: Vec<String> = [256, 512, OLD_RECORDS]
        .iter()
        .map(|moved| {
            format!(
                "EXTEND_TIMEOUT_USEC=90000000\nSTATUS=moving the buffer to the new layout: \
                 {moved} record(s) moved\n"
            )
        })
        .collect();
    assert_eq!(got, expected);
}

/// The salvage of a database that lost flushed writes runs before READY=1 too: after each
/// batch carried and each segment read, hubgate pushes systemd's start timeout.
#[test]
fn the_salvage_extends_the_start_timeout_after_each_batch_and_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, config) = support::buffer_cmd::config(dir.path());
    helper("make_an_old_buffer", OLD_BUFFER, &buffer);
    // The upgrade, without a socket: its records flushed, the mark file at #611.
    let stats = support::agent::command()
        .args(["buffer", "stats", "-c"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(stats.status.success(), "{stats:?}");
    helper("make_the_buffer_lose_its_mark", LOSE_MARK, &buffer);
    let got = stats_notified(dir.path(), &config);
    let expected: Vec<String> = [
        "256 record(s) carried",
        "512 record(s) carried",
        "segment 1 of 1 read",
    ]
    .iter()
    .map(|status| format!("EXTEND_TIMEOUT_USEC=90000000\nSTATUS=salvaging the buffer: {status}\n"))
    .collect();
    assert_eq!(got, expected);
    let asides = std::fs::read_dir(&buffer)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("sled.broken-")
        })
        .count();
    // It read all it moved aside: nothing is kept.
    assert_eq!(asides, 0);
}

/// The JavaScript codecs load before READY=1, one after the other, each for up to its load
/// limit (2 s of CPU, then the worker's restart): ahead of each file hubgate pushes systemd's
/// start timeout, or enough files that hang (or are merely slow) would outlast
/// `TimeoutStartSec=` (90 s by default) and get every start killed.
#[cfg(feature = "js")]
#[test]
fn loading_the_codecs_at_start_extends_the_start_timeout_before_each_file() {
    const CODECS: usize = 3;
    let dir = support::codec_files::tempdir();
    let socket_path = dir.path().join("notify-codecs");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let codecs = dir.path().join("codecs");
    support::codec_files::create_dir(&codecs);
    let mut devices = String::new();
    for i in 0..CODECS {
        support::codec_files::write(codecs.join(format!("c{i}.js")), "while (true) {}\n");
        devices.push_str(&format!(
            "[[device]]\ndev_eui = \"00000000000000{i:02x}\"\njs_codec = \"c{i}\"\n"
        ));
    }
    let config = format!(
        "[buffer]\npath = \"{}\"\n[codecs]\ndir = \"{}\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n{devices}\
         [sink]\ntype = \"stdout\"\n",
        dir.path().join("buffer").display(),
        codecs.display(),
        free_udp_port(),
    );
    let mut agent = Agent::begin_notifying(dir.path(), &config, &socket_path);
    // Each file hangs for its load limit and more: a minute is plenty for the three.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while !got.last().is_some_and(|m: &String| m.contains("READY=1")) {
        let msg = next(&sock, deadline)
            .unwrap_or_else(|| panic!("no READY=1 after {got:?}:\n{}", agent.logs()));
        got.push(msg);
    }
    assert!(agent.terminate(WAIT).success());
    let ready = got.pop().unwrap();
    let expected: Vec<String> = (0..CODECS)
        .map(|i| {
            format!(
                "EXTEND_TIMEOUT_USEC=90000000\nSTATUS=loading the JavaScript codecs: \
                 c{i}.js ({} of {CODECS})\n",
                i + 1
            )
        })
        .collect();
    assert_eq!(got, expected, "{}", agent.logs());
    // The files did hang: each failed to load, which READY=1 then follows.
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert_eq!(
        agent.full_log().matches("ran longer than").count(),
        CODECS,
        "{}",
        agent.logs()
    );
}
