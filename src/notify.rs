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

/// systemd's watchdog timeout for this process (`WATCHDOG_USEC`, when `WATCHDOG_PID` is
/// unset or this process's), or None: no watchdog, or one of 0, which systemd never sets
/// (`WatchdogSec=0` sets none) and which would leave the pings no period to tick by.
pub fn watchdog_timeout() -> Option<std::time::Duration> {
    usable(sd_notify::watchdog_enabled())
}

fn usable(timeout: Option<std::time::Duration>) -> Option<std::time::Duration> {
    timeout.filter(|t| !t.is_zero())
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

/// Ping systemd's watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`) while `heartbeat`
/// advances, with `status()` as the status line. Returns at once when no watchdog is set.
pub async fn watchdog(heartbeat: Heartbeat, status: impl Fn() -> String) {
    let Some(timeout) = watchdog_timeout() else {
        return;
    };
    let mut tick = tokio::time::interval(timeout / TICKS_PER_TIMEOUT);
    // After a stall of the whole process (swapping, a stopped VM), the next look comes a
    // period after the late one, not at once: two looks in a row would see no beat between
    // them and withhold a ping from a forwarder that is fine.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut pings = Pings::new(heartbeat.count());
    loop {
        tick.tick().await;
        match pings.at_tick(heartbeat.count()) {
            Ok(()) => send(&[NotifyState::Watchdog, NotifyState::Status(&status())]),
            Err(1) => log::warn!(
                "the forwarder has not moved for {:?}: withholding the watchdog ping until it does",
                timeout / TICKS_PER_TIMEOUT
            ),
            Err(_) => {}
        }
    }
}

/// How often the watchdog looks at the heartbeat, per timeout. A ping goes out at a look
/// when the heartbeat moved since the last one, so a forwarder busy for S leaves the pings
/// between S - timeout/4 and S + timeout/4 apart: one busy for up to three quarters of the
/// timeout is never killed, one stuck for a quarter more than it always is (with 2, half and
/// one and a half).
const TICKS_PER_TIMEOUT: u32 = 4;

/// Whether the heartbeat moved between two looks.
struct Pings {
    count: u64,
    /// Looks in a row without a move.
    still: u32,
}

impl Pings {
    fn new(count: u64) -> Pings {
        Pings { count, still: 0 }
    }

    /// `Ok`: ping; else how many looks in a row saw no move.
    fn at_tick(&mut self, count: u64) -> Result<(), u32> {
        if count != self.count {
            (self.count, self.still) = (count, 0);
            return Ok(());
        }
        self.still += 1;
        Err(self.still)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `WATCHDOG_USEC=0` (a drop-in's `Environment=`, another supervisor) is no watchdog:
    /// its pings would tick every 0 s, which tokio's interval refuses with a panic.
    #[test]
    fn a_watchdog_timeout_of_0_is_none() {
        assert_eq!(usable(Some(Duration::ZERO)), None);
        assert_eq!(usable(None), None);
        let four = Duration::from_secs(4);
        assert_eq!(usable(Some(four)), Some(four));
        assert_eq!(
            usable(Some(Duration::from_micros(1)))
                .map(|t| t / TICKS_PER_TIMEOUT)
                .map(|p| p.is_zero()),
            Some(false)
        );
    }

    /// The longest time between two pings when the forwarder beats every 100 ms except for a
    /// stall of `stall` starting `phase` after a look.
    fn longest_gap(timeout: Duration, stall: Duration, phase: Duration) -> Duration {
        let tick = timeout / TICKS_PER_TIMEOUT;
        let from = tick * 8 + phase;
        // Beats up to `at`, none within the stall.
        let beats = |at: Duration| -> u64 {
            let count = |d: Duration| (d.as_millis() / 100) as u64;
            if at < from {
                count(at)
            } else {
                count(from) + count(at.saturating_sub(from + stall))
            }
        };
        let mut pings = Pings::new(0);
        let (mut last, mut longest) = (Duration::ZERO, Duration::ZERO);
        for k in 1..400 {
            let at = tick * k;
            if pings.at_tick(beats(at)).is_ok() {
                longest = longest.max(at - last);
                last = at;
            }
        }
        longest
    }

    /// systemd kills when no ping came for the whole timeout: a forwarder busy for two thirds
    /// of it, whenever that starts, is not killed; one stuck for 1.3 times it is.
    #[test]
    fn only_a_forwarder_stuck_for_about_the_timeout_misses_pings() {
        let timeout = Duration::from_secs(60);
        for ms in (0..15_000).step_by(500) {
            let phase = Duration::from_millis(ms + 50);
            let busy = longest_gap(timeout, timeout * 2 / 3, phase);
            assert!(
                busy < timeout,
                "a 40 s stall at +{phase:?}: pings {busy:?} apart"
            );
            let stuck = longest_gap(timeout, timeout * 13 / 10, phase);
            assert!(
                stuck >= timeout,
                "a 78 s stall at +{phase:?}: pings {stuck:?} apart"
            );
        }
    }
}
