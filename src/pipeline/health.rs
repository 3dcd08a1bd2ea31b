//! What the forwarder knows about the sink: when to try again after a failure (capped
//! exponential backoff with jitter), and which recTypes are parked because their hub is
//! missing or refused, so the others keep flowing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::sink::SinkError;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const PARK_MIN: Duration = Duration::from_secs(1);
const PARK_MAX: Duration = Duration::from_secs(300);

struct Park {
    until: Instant,
    /// The next park lasts this long (escalates until a success clears the park).
    next: Duration,
    /// The end of this park has been reported by `unpark_expired`.
    expired: bool,
}

pub struct SinkHealth {
    retry_at: Option<Instant>,
    backoff: Duration,
    parked: HashMap<String, Park>,
    rng: u64,
    /// Shows the parked recTypes (`hubgate_parked`).
    metrics: Arc<Metrics>,
}

impl SinkHealth {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        SinkHealth {
            retry_at: None,
            backoff: BACKOFF_MIN,
            parked: HashMap::new(),
            rng: seed | 1,
            metrics,
        }
    }
}

/// What a failure means for the forwarder.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole sink waits; start draining again from the oldest record afterwards.
    Backoff(Duration),
    /// Only this recType waits.
    Parked(Duration),
}

impl SinkHealth {
    /// May records be sent now (apart from parked recTypes)?
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    pub fn is_parked(&self, rec_type: &str, now: Instant) -> bool {
        self.parked.get(rec_type).is_some_and(|p| now < p.until)
    }

    /// A delivery went through: the sink is fine, and so is this recType's hub.
    pub fn succeeded(&mut self, rec_type: &str) {
        self.retry_at = None;
        self.backoff = BACKOFF_MIN;
        if self.parked.remove(rec_type).is_some() {
            self.metrics.parked.set(rec_type, 0);
            log::info!("hub for {rec_type} accepts records again: unparked");
        }
    }

    pub fn failed(&mut self, e: &SinkError, rec_type: &str, now: Instant) -> Verdict {
        match e {
            SinkError::Park(_) => {
                let next = self.parked.get(rec_type).map_or(PARK_MIN, |p| p.next);
                let wait = self.jitter(next);
                if !self.is_parked(rec_type, now) {
                    log::error!(
                        "{rec_type}: {e}; parked for {wait:?}, other recTypes keep flowing"
                    );
                }
                let park = Park {
                    until: now + wait,
                    next: (next * 2).min(PARK_MAX),
                    expired: false,
                };
                self.parked.insert(rec_type.to_string(), park);
                self.metrics.parked.set(rec_type, 1);
                Verdict::Parked(wait)
            }
            SinkError::Retry(_) | SinkError::Reject(_) => {
                // The other records of a refused request fail with it: one escalation
                // per round, not one per record.
                if let Some(until) = self.retry_at.filter(|t| now < *t) {
                    return Verdict::Backoff(until - now);
                }
                let wait = self.jitter(self.backoff);
                self.retry_at = Some(now + wait);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Verdict::Backoff(wait)
            }
        }
    }

    /// True once for each park that ran out since the last call: its records want a rescan.
    pub fn unpark_expired(&mut self, now: Instant) -> bool {
        let mut any = false;
        for p in self
            .parked
            .values_mut()
            .filter(|p| !p.expired && now >= p.until)
        {
            p.expired = true;
            any = true;
        }
        any
    }

    /// Full jitter on the upper half: a wait in [d/2, d], so gateways that lost the same
    /// hub at the same moment do not retry in lockstep.
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64*: good enough to spread retries, no dependency needed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        let frac = r as f64 / (1u64 << 53) as f64;
        d / 2 + d.mul_f64(frac / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets_on_success() {
        let mut h = SinkHealth::new(Metrics::new());
        let now = Instant::now();
        let mut at = now;
        let mut last = Duration::ZERO;
        for i in 0..8 {
            // Each failure comes once the previous wait is over.
            let Verdict::Backoff(w) = h.failed(&SinkError::Retry("down".into()), "a", at) else {
                panic!()
            };
            at += w;
            let cap = (BACKOFF_MIN * 2u32.pow(i)).min(BACKOFF_MAX);
            assert!(
                w >= cap / 2 && w <= cap,
                "attempt {i}: {w:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            last = w;
        }
        assert!(last >= BACKOFF_MAX / 2);
        assert!(!h.ready(at - Duration::from_millis(1)));
        h.succeeded("a");
        assert!(h.ready(now));
        // Failures reported while already waiting do not escalate.
        let Verdict::Backoff(first) = h.failed(&SinkError::Retry("down".into()), "a", now) else {
            panic!()
        };
        for _ in 0..40 {
            assert_eq!(
                h.failed(&SinkError::Retry("down".into()), "a", now),
                Verdict::Backoff(first)
            );
        }
        assert_eq!(h.backoff, BACKOFF_MIN * 2);
    }

    #[test]
    fn parking_one_rec_type_leaves_the_others_ready() {
        let metrics = Metrics::new();
        let mut h = SinkHealth::new(metrics.clone());
        let now = Instant::now();
        let v = h.failed(&SinkError::Park("unknown topic".into()), "motion", now);
        assert!(matches!(v, Verdict::Parked(w) if w <= PARK_MIN));
        assert!(h.ready(now));
        assert!(h.is_parked("motion", now));
        assert!(!h.is_parked("environment", now));
        assert_eq!(metrics.parked.get("motion"), Some(1));
        assert_eq!(metrics.parked.get("environment"), None);
        let later = now + PARK_MIN;
        assert!(!h.is_parked("motion", later));
        assert!(h.unpark_expired(later));
        assert!(!h.unpark_expired(later), "an expiry is reported once");
        // Parking again escalates.
        let Verdict::Parked(w) =
            h.failed(&SinkError::Park("unknown topic".into()), "motion", later)
        else {
            panic!()
        };
        assert!(w >= PARK_MIN, "{w:?}");
        h.succeeded("motion");
        assert!(!h.is_parked("motion", later));
        assert_eq!(metrics.parked.get("motion"), Some(0));
    }
}
