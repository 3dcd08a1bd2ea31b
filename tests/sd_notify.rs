//! systemd notifications from the real hubgate process: the test plays systemd's part, binding
//! the `NOTIFY_SOCKET` datagram socket and setting `WATCHDOG_USEC` as a `Type=notify` unit with
//! `WatchdogSec=` would.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::free_udp_port;

/// Watchdog timeout handed to hubgate; it pings at half of it.
const WATCHDOG_USEC: u64 = 400_000;
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
    // The child inherits these. This binary has this one test, so no other test sees them.
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
