//! systemd service notifications (`Type=notify`): `READY=1` once the sink and the sources are
//! up, `EXTEND_TIMEOUT_USEC=` while a long start (the buffer's upgrade, the codecs' load) goes
//! on, `WATCHDOG=1` while the forwarder loop keeps turning, `STOPPING=1` on shutdown, and a
//! `STATUS=` line for `systemctl status`. Outside systemd (no `NOTIFY_SOCKET`) all of it is a
//! no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sd_notify::NotifyState;

/// Advanced by the forwarder on every round of its loop. The watchdog pings systemd only
/// while it moves, so a stuck forwarder gets hubgate restarted even if other tasks still run.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Start-up is done: sources and sink are up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Start-up goes on, slowly but moving: systemd's start timeout (`TimeoutStartSec=`) is
/// pushed to `by` from now, with `status` as the status line. Sent again before `by` has
/// passed, it keeps a long start (the buffer's upgrade, the codecs' load) from being killed
/// as a hang.
pub fn extend_start(by: std::time::Duration, status: &str) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[
        NotifyState::ExtendTimeoutUsec(usec),
        NotifyState::Status(status),
    ]);
}

/// Shutdown has begun (SIGTERM): systemd shows "deactivating" instead of a hang.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: confirming or buffering what is in flight"),
    ]);
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify: {e}");
    }
}

/// Ping systemd's watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`) at half its timeout
/// while `heartbeat` advances, with `status()` as the status line. Returns at once when no
/// watchdog is set.
pub async fn watchdog(heartbeat: Heartbeat, status: impl Fn() -> String) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(timeout / 2);
    tick.tick().await;
    let mut last = heartbeat.count();
    loop {
        tick.tick().await;
        let now = heartbeat.count();
        if now == last {
            log::warn!(
                "the forwarder has not moved for {:?}: withholding the watchdog ping",
                timeout / 2
            );
            continue;
        }
        last = now;
        send(&[NotifyState::Watchdog, NotifyState::Status(&status())]);
    }
}
