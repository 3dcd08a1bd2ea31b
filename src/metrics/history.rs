//! The last hour, minute by minute: the running totals as they stood at the end of each
//! minute (sampled every few seconds), from which the page plots records in and out per
//! minute and the buffer's fill, and counts the problems and drops of the last hour.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::metrics::Metrics;

/// Minutes kept: an hour, plus the one before it to take the first difference from.
const MINUTES: usize = 61;

#[derive(Clone, Default)]
pub struct Sample {
    /// Unix minute (seconds / 60).
    pub minute: u64,
    pub received: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub buffer_records: u64,
    pub buffer_bytes: u64,
    /// Frames received by source (its place in the config, from 0), running totals.
    pub by_source: Vec<(String, u64)>,
    /// Problems by kind, running totals.
    pub problems: Vec<(String, u64)>,
}

impl Sample {
    pub fn of(metrics: &Metrics, unix_seconds: u64) -> Sample {
        Sample {
            minute: unix_seconds / 60,
            received: metrics.received.sum(),
            delivered: metrics.delivered.sum(),
            dropped: metrics.dropped(),
            buffer_records: metrics.buffer_records.get(),
            buffer_bytes: metrics.buffer_bytes.get(),
            by_source: metrics.received_from.snapshot(),
            problems: metrics.problem_counts(),
        }
    }
}

#[derive(Default)]
pub struct History(Mutex<VecDeque<Sample>>);

/// One minute of the plot.
#[derive(Serialize, Debug, PartialEq)]
pub struct Minute {
    /// Unix seconds of the minute's start.
    pub start: u64,
    /// Records taken in and confirmed by the sink during the minute.
    pub received: u64,
    pub delivered: u64,
    /// Buffer fill at the minute's end (or now, for the current one).
    pub buffer_records: u64,
    pub buffer_bytes: u64,
}

impl History {
    /// Keep `s` as its minute's latest sample.
    pub fn record(&self, s: Sample) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() && s.minute > 0 {
            // Every total starts at 0: the minute before the first sample is known.
            h.push_back(Sample {
                minute: s.minute - 1,
                ..Sample::default()
            });
        }
        match h.back_mut() {
            Some(last) if last.minute == s.minute => *last = s,
            Some(last) if last.minute > s.minute => {} // the clock went back: keep what is there
            _ => {
                h.push_back(s);
                while h.len() > MINUTES {
                    h.pop_front();
                }
            }
        }
    }

    /// Per-minute differences of the last hour, oldest first; `now` is the current totals
    /// (so the current minute is up to date between samples).
    pub fn minutes(&self, now: &Sample) -> Vec<Minute> {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(MINUTES);
        let mut prev: Option<&Sample> = None;
        for s in h.iter().filter(|s| s.minute < now.minute).chain([now]) {
            if let Some(p) = prev {
                // A minute without a sample (the agent was busy, or stopped) shows as none.
                if p.minute + 1 == s.minute {
                    out.push(Minute {
                        start: s.minute * 60,
                        received: s.received.saturating_sub(p.received),
                        delivered: s.delivered.saturating_sub(p.delivered),
                        buffer_records: s.buffer_records,
                        buffer_bytes: s.buffer_bytes,
                    });
                }
            }
            prev = Some(s);
        }
        let first = now.minute.saturating_sub(59);
        out.retain(|m| m.start / 60 >= first);
        out
    }

    /// What changed over the last hour (since the oldest sample kept): frames by source,
    /// problems by kind, drops.
    pub fn last_hour(&self, now: &Sample) -> LastHour {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let base = h
            .iter()
            .find(|s| s.minute + 60 >= now.minute)
            .cloned()
            .unwrap_or_default();
        let minutes = now.minute.saturating_sub(base.minute).max(1);
        let since = |now: &[(String, u64)], then: &[(String, u64)]| -> Vec<(String, u64)> {
            now.iter()
                .map(|(k, v)| {
                    let before = then.iter().find(|(b, _)| b == k).map_or(0, |(_, b)| *b);
                    (k.clone(), v.saturating_sub(before))
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        let minute_before = |n: u64| h.iter().rev().find(|s| s.minute + n == now.minute);
        // The last full minute, once there is one; until then the current one so far.
        let last_minute = match (minute_before(1), minute_before(2)) {
            (Some(end), Some(start)) => since(&end.by_source, &start.by_source),
            (Some(start), None) => since(&now.by_source, &start.by_source),
            (None, _) => Vec::new(),
        };
        LastHour {
            minutes,
            problems: since(&now.problems, &base.problems),
            by_source: since(&now.by_source, &base.by_source),
            last_minute_by_source: last_minute,
            dropped: now.dropped.saturating_sub(base.dropped),
        }
    }
}

pub struct LastHour {
    /// Minutes covered (less than 60 shortly after a start).
    pub minutes: u64,
    pub problems: Vec<(String, u64)>,
    pub by_source: Vec<(String, u64)>,
    /// Frames by source in the last full minute (in the current one so far, the first
    /// minute after a start).
    pub last_minute_by_source: Vec<(String, u64)>,
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(minute: u64, received: u64, delivered: u64) -> Sample {
        Sample {
            minute,
            received,
            delivered,
            buffer_records: received - delivered,
            problems: vec![("bad".into(), received / 10)],
            ..Sample::default()
        }
    }

    #[test]
    fn minutes_are_differences_of_the_last_sample_of_each_minute() {
        let h = History::default();
        h.record(sample(100, 5, 5));
        h.record(sample(101, 10, 8));
        h.record(sample(101, 30, 20)); // later in minute 101: replaces
        h.record(sample(103, 40, 20)); // minute 102 missing
        let m = h.minutes(&sample(104, 55, 50));
        assert_eq!(
            m,
            vec![
                Minute {
                    start: 100 * 60,
                    received: 5,
                    delivered: 5,
                    buffer_records: 0,
                    buffer_bytes: 0
                },
                Minute {
                    start: 101 * 60,
                    received: 25,
                    delivered: 15,
                    buffer_records: 10,
                    buffer_bytes: 0
                },
                Minute {
                    start: 104 * 60,
                    received: 15,
                    delivered: 30,
                    buffer_records: 5,
                    buffer_bytes: 0
                },
            ]
        );
    }

    #[test]
    fn keeps_an_hour_and_counts_what_happened_in_it() {
        let h = History::default();
        for m in 0..200 {
            h.record(sample(m, m * 10, m * 10));
        }
        let now = sample(200, 2000, 2000);
        let m = h.minutes(&now);
        assert_eq!(m.len(), 60);
        assert_eq!(m[0].start, 141 * 60);
        assert!(m.iter().all(|m| m.received == 10));
        let hour = h.last_hour(&now);
        assert_eq!(hour.minutes, 60);
        assert_eq!(hour.problems, vec![("bad".to_string(), 60)]);
    }

    #[test]
    fn frames_per_minute_are_those_of_the_last_full_minute() {
        let by = |minute, n| Sample {
            minute,
            by_source: vec![("mqtt".into(), n)],
            ..Sample::default()
        };
        let h = History::default();
        h.record(by(100, 30));
        let per_minute = |now: &Sample| h.last_hour(now).last_minute_by_source;
        let mqtt = |n| vec![("mqtt".to_string(), n)];
        assert_eq!(
            per_minute(&by(100, 40)),
            mqtt(40),
            "the first minute so far"
        );
        h.record(by(101, 100));
        assert_eq!(per_minute(&by(102, 105)), mqtt(70), "minute 101: 100 - 30");
        h.record(by(102, 150));
        assert_eq!(per_minute(&by(103, 200)), mqtt(50), "minute 102: 150 - 100");
    }
}
