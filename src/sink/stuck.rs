//! Whether a producer is stuck: its records time out and no hub has confirmed anything for
//! a whole `message.timeout.ms`.
//!
//! A broker that lost a producer's id (restarted without its data, a failover) refuses every
//! request of it, which librdkafka does not take as fatal: without a new producer nothing
//! would go until hubgate restarted. One hub timing out while others confirm is not that
//! (its own trouble parks it), so a confirmation anywhere within the window says the
//! producer works.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Delivery reports of one producer, as far as being stuck goes.
#[derive(Debug, Default)]
pub struct Timeouts(Mutex<Seen>);

#[derive(Debug, Default)]
struct Seen {
    /// A record timed out after the last confirmation.
    timed_out: bool,
    /// When a record was last confirmed.
    confirmed: Option<Instant>,
}

impl Timeouts {
    pub fn confirmed(&self, now: Instant) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.timed_out = false;
        seen.confirmed = Some(now);
    }

    pub fn timed_out(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).timed_out = true;
    }

    /// A record timed out since the last confirmation, and that confirmation (if any) is at
    /// least `window` old: a record sent right after it would have been confirmed or timed
    /// out by now.
    pub fn stuck(&self, now: Instant, window: Duration) -> bool {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.timed_out
            && seen
                .confirmed
                .is_none_or(|at| now.saturating_duration_since(at) >= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(120);

    #[test]
    fn a_producer_with_only_timeouts_is_stuck() {
        let t = Timeouts::default();
        let now = Instant::now();
        assert!(!t.stuck(now, WINDOW));
        t.timed_out();
        assert!(t.stuck(now, WINDOW));
    }

    #[test]
    fn one_hub_timing_out_while_another_confirms_is_not_stuck() {
        let t = Timeouts::default();
        let start = Instant::now();
        for i in 0..10 {
            let now = start + Duration::from_secs(30 * i);
            t.confirmed(now);
            t.timed_out();
            assert!(!t.stuck(now, WINDOW), "at {i}");
            assert!(!t.stuck(now + WINDOW / 2, WINDOW), "at {i}");
        }
    }

    #[test]
    fn timeouts_a_window_after_the_last_confirmation_are_stuck() {
        let t = Timeouts::default();
        let start = Instant::now();
        t.confirmed(start);
        t.timed_out();
        assert!(!t.stuck(start + WINDOW - Duration::from_millis(1), WINDOW));
        assert!(t.stuck(start + WINDOW, WINDOW));
        t.confirmed(start + WINDOW);
        assert!(!t.stuck(start + 3 * WINDOW, WINDOW), "confirmed since");
    }
}
