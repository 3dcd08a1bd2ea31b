//! A moment on the monotonic clock, or none, that one thread sets and any other reads: when
//! the oldest record in the buffer was stored (kept by the buffer as records come and go, so
//! its age can be read without touching the buffer's storage), when the running flush
//! started, when the sink last confirmed a record. Monotonic: an age read from it is right
//! even while the wall clock is unsynchronised or jumps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// 0 for none; otherwise the moment as milliseconds after [`base`] + 1.
#[derive(Default)]
pub struct AtomicInstant(AtomicU64);

/// How far back [`base`] is: the longest `max_age` (and any duration in the config), so that
/// records from before a restart have a place on this clock however old they are (an
/// instant before boot is one on Linux).
const BACK: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The instant the stored times count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(BACK).unwrap_or(now)
    })
}

impl AtomicInstant {
    /// The moment is `at`, or none.
    pub fn set(&self, at: Option<Instant>) {
        let v = at.map_or(0, |at| {
            at.saturating_duration_since(base()).as_millis() as u64 + 1
        });
        self.0.store(v, Ordering::Relaxed);
    }

    /// How long before `now` the moment was (none: unset; zero: not before `now`).
    pub fn age(&self, now: Instant) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(now.saturating_duration_since(base() + Duration::from_millis(n - 1))),
        }
    }

    /// [`age`](Self::age) in whole seconds, 0 when unset (an empty buffer, no flush running).
    pub fn age_s(&self, now: Instant) -> u64 {
        self.age(now).map_or(0, |a| a.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_stored() {
        let o = AtomicInstant::default();
        let now = Instant::now();
        assert_eq!((o.age(now), o.age_s(now)), (None, 0));
        o.set(Some(now - Duration::from_millis(60_500)));
        assert_eq!(o.age_s(now), 60);
        let age = o.age(now).unwrap();
        assert!(
            (Duration::from_millis(60_500)..Duration::from_millis(60_501)).contains(&age),
            "{age:?}: kept to the millisecond"
        );
        o.set(Some(now + Duration::from_secs(5)));
        assert_eq!(o.age(now), Some(Duration::ZERO), "set, not before now");
        o.set(None);
        assert_eq!(o.age_s(now + Duration::from_secs(5)), 0);
        let year = Duration::from_secs(365 * 86_400);
        o.set(Some(now - year));
        assert_eq!(
            o.age_s(now),
            year.as_secs(),
            "from before a restart, a year old"
        );
    }
}
