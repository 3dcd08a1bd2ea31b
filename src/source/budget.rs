//! A budget of things a source may make: a burst at once, then one more each interval.

use std::time::{Duration, Instant};

/// `burst` at once and one more each `every`, up to `burst` saved.
pub struct Budget {
    burst: u32,
    every: Duration,
    left: u32,
    /// Where the interval now running began: one more is earned when it ends.
    since: Instant,
}

impl Budget {
    /// A full budget at `now`.
    pub fn new(burst: u32, every: Duration, now: Instant) -> Budget {
        Budget {
            burst,
            every,
            left: burst,
            since: now,
        }
    }

    /// Whether one more may be made at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.since).as_nanos() / self.every.as_nanos();
        match u32::try_from(earned) {
            Ok(n) if self.left.saturating_add(n) < self.burst => {
                self.left += n;
                self.since += self.every * n;
            }
            _ => {
                self.left = self.burst;
                self.since = now;
            }
        }
        let taken = self.left > 0;
        self.left = self.left.saturating_sub(1);
        taken
    }
}
