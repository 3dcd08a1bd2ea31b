//! When records went into the buffer, coarsely and in bounded memory: marks of (first
//! sequence number, instant), at most one per `spacing`. Past [`MARKS`] every other mark goes
//! and the spacing doubles, so an outage of any length costs at most [`MARKS`] marks; a
//! record's time is its mark's, so an age reads high by at most the spacing (1 s for the
//! first hour and a bit, 2 s up to about two hours, and so on).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Marks kept at most (16 bytes each).
const MARKS: usize = 4096;

pub struct StoredAt {
    marks: VecDeque<(u64, Instant)>,
    spacing: Duration,
}

impl Default for StoredAt {
    fn default() -> Self {
        StoredAt {
            marks: VecDeque::new(),
            spacing: Duration::from_secs(1),
        }
    }
}

impl StoredAt {
    /// Record `seq` (higher than every one before) was stored at `now`.
    pub fn stored(&mut self, seq: u64, now: Instant) {
        if let Some(&(_, last)) = self.marks.back() {
            if now.saturating_duration_since(last) < self.spacing {
                return;
            }
        }
        self.marks.push_back((seq, now));
        if self.marks.len() > MARKS {
            let mut i = 0;
            self.marks.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.spacing *= 2;
        }
    }

    /// When record `seq` was stored (at the latest), forgetting the marks of records before
    /// it: call it with the oldest record kept.
    pub fn oldest(&mut self, seq: u64) -> Option<Instant> {
        let after = self.marks.partition_point(|&(s, _)| s <= seq);
        self.marks.drain(..after.saturating_sub(1));
        self.marks.front().map(|m| m.1)
    }

    /// The buffer is empty.
    pub fn clear(&mut self) {
        self.marks.clear();
        self.spacing = Duration::from_secs(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_gets_the_time_of_its_mark_and_old_marks_go() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_millis(n);
        let mut m = StoredAt::default();
        m.stored(10, s(0));
        m.stored(11, s(500)); // within a second of the last mark: none
        m.stored(12, s(1000));
        m.stored(20, s(5000));
        assert_eq!(m.oldest(11), Some(s(0)));
        assert_eq!(m.oldest(12), Some(s(1000)));
        assert_eq!(m.marks.len(), 2, "the mark before 12 is gone");
        assert_eq!(m.oldest(25), Some(s(5000)));
    }

    #[test]
    fn memory_stays_bounded_through_a_long_outage() {
        let t0 = Instant::now();
        let mut m = StoredAt::default();
        // A week of records, one a second.
        let week = 7 * 86_400;
        for i in 0..week {
            m.stored(i, t0 + Duration::from_secs(i));
        }
        assert!(m.marks.len() <= MARKS, "{}", m.marks.len());
        assert_eq!(m.oldest(0), Some(t0), "the first mark stays");
        // A record's time is at most one spacing before its own.
        let mid = week / 2;
        let at = m.oldest(mid).unwrap();
        let own = t0 + Duration::from_secs(mid);
        assert!(at <= own && own - at <= m.spacing, "{:?}", own - at);
        assert!(m.spacing <= Duration::from_secs(256), "{:?}", m.spacing);
    }
}
