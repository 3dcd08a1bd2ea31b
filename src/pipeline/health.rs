//! What the forwarder knows about the sink: when to try again after a failure (capped
//! exponential backoff with jitter), and which recTypes are parked because their hub is
//! missing or refused, so the others keep flowing.
//!
//! Both escalate once per round: a burst of records that fail together (one refused
//! request, one missing hub) doubles the wait once. A failure reported while a wait runs, or
//! for a record sent before that wait began, belongs to a round already counted.

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
    /// When this park began: records sent before it belong to the round that caused it.
    since: Instant,
    until: Instant,
    /// The next park lasts this long (escalates until a success clears the park).
    next: Duration,
    /// The end of this park has been reported by `unpark_expired`.
    expired: bool,
}

pub struct SinkHealth {
    retry_at: Option<Instant>,
    /// When the current backoff began (see [`Park::since`]).
    backoff_since: Option<Instant>,
    backoff: Duration,
    parked: HashMap<String, Park>,
    rng: u64,
    /// Shows the parked recTypes (`hubgate_parked`).
    metrics: Arc<Metrics>,
}

impl SinkHealth {
    /// `seed` spreads the jitter: gateways that lost the same hub retry at different times.
    pub fn new(metrics: Arc<Metrics>, seed: u64) -> Self {
        SinkHealth {
            retry_at: None,
            backoff_since: None,
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

    /// A failure made the whole sink wait, and no delivery went through since (the wait may
    /// be over: trying again is not working again). A park is not that.
    pub fn failing(&self) -> bool {
        self.retry_at.is_some()
    }

    pub fn is_parked(&self, rec_type: &str, now: Instant) -> bool {
        self.parked.get(rec_type).is_some_and(|p| now < p.until)
    }

    /// A delivery went through: the sink is fine, and so is this recType's hub. True when
    /// that ended a park: the records of the recType the drain passed over meanwhile want
    /// a rescan, as when a park runs out ([`SinkHealth::unpark_expired`]).
    pub fn succeeded(&mut self, rec_type: &str) -> bool {
        self.retry_at = None;
        self.backoff_since = None;
        self.backoff = BACKOFF_MIN;
        let unparked = self.parked.remove(rec_type).is_some();
        if unparked {
            self.metrics.parked.set(rec_type, 0);
            self.metrics.park_reasons.clear(rec_type);
            log::info!("hub for {rec_type} accepts records again: unparked");
        }
        unparked
    }

    /// A record sent at `sent` failed with `e`, reported at `now`.
    pub fn failed(
        &mut self,
        e: &SinkError,
        rec_type: &str,
        sent: Instant,
        now: Instant,
    ) -> Verdict {
        match e {
            SinkError::Park(reason) | SinkError::Doubt(reason) => {
                if let Some(p) = self
                    .parked
                    .get(rec_type)
                    .filter(|p| now < p.until || sent < p.since)
                {
                    // Same round. While the park runs a newer finding (the provisioner's
                    // cause after the write's "does not exist yet") is the one shown.
                    let running = now < p.until;
                    let wait = p.until.saturating_duration_since(now);
                    if running {
                        self.show_reason(rec_type, reason);
                    }
                    return Verdict::Parked(wait);
                }
                let next = self.parked.get(rec_type).map_or(PARK_MIN, |p| p.next);
                let wait = self.jitter(next);
                self.metrics.error(
                    "parked",
                    format!(
                        "{rec_type}: {e}; parked for {}, next try at {}; other recTypes keep flowing",
                        humantime::format_duration(round_ms(wait)),
                        humantime::format_rfc3339_millis(std::time::SystemTime::now() + wait)
                    ),
                );
                let park = Park {
                    since: now,
                    until: now + wait,
                    next: (next * 2).min(PARK_MAX),
                    expired: false,
                };
                self.parked.insert(rec_type.to_string(), park);
                // The reason first: a reader that sees the gauge at 1 finds it.
                self.show_reason(rec_type, reason);
                self.metrics.parked.set(rec_type, 1);
                Verdict::Parked(wait)
            }
            SinkError::Retry(_) | SinkError::Reject(_) => {
                let waiting = self.retry_at.filter(|t| now < *t);
                let older = self.backoff_since.is_some_and(|s| sent < s);
                if waiting.is_some() || older {
                    return Verdict::Backoff(waiting.map_or(Duration::ZERO, |t| t - now));
                }
                let wait = self.jitter(self.backoff);
                self.retry_at = Some(now + wait);
                self.backoff_since = Some(now);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Verdict::Backoff(wait)
            }
        }
    }

    /// A new sink (new credentials): what the old one earned is no verdict on it. The parks
    /// and the backoff are lifted, so it is tried at once; a recType still refused parks
    /// again by itself.
    pub fn reset(&mut self) {
        self.retry_at = None;
        self.backoff_since = None;
        self.backoff = BACKOFF_MIN;
        for rec_type in std::mem::take(&mut self.parked).into_keys() {
            self.metrics.parked.set(&rec_type, 0);
            self.metrics.park_reasons.clear(&rec_type);
        }
    }

    /// Why `rec_type` is parked, for the status line, page and `hubgate_hubs_parked`.
    fn show_reason(&self, rec_type: &str, reason: &crate::sink::refusal::Refusal) {
        self.metrics.park_reasons.set(
            rec_type,
            crate::metrics::ParkReason {
                kind: reason.kind(),
                what: reason.what(),
                fix: reason.fix(),
                broker: reason.broker.clone(),
            },
        );
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

/// A wait as people read it: to the millisecond.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> crate::sink::refusal::Refusal {
        crate::sink::refusal::Setup::default().missing("motion")
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets_on_success() {
        let mut h = SinkHealth::new(Metrics::new(), 1);
        let now = Instant::now();
        let mut at = now;
        let mut last = Duration::ZERO;
        for i in 0..8 {
            // Each failure comes once the previous wait is over.
            let Verdict::Backoff(w) = h.failed(&SinkError::Retry("down".into()), "a", at, at)
            else {
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
        assert!(!h.succeeded("a"), "nothing was parked");
        assert!(h.ready(now));
        // Failures reported while already waiting do not escalate.
        let Verdict::Backoff(first) = h.failed(&SinkError::Retry("down".into()), "a", now, now)
        else {
            panic!()
        };
        for _ in 0..40 {
            assert_eq!(
                h.failed(&SinkError::Retry("down".into()), "a", now, now),
                Verdict::Backoff(first)
            );
        }
        assert_eq!(h.backoff, BACKOFF_MIN * 2);
        // A late report of a record sent before this backoff began, after it ended: the
        // round was counted already.
        let late = now + first;
        let sent = now - Duration::from_millis(1);
        assert_eq!(
            h.failed(&SinkError::Retry("down".into()), "a", sent, late),
            Verdict::Backoff(Duration::ZERO)
        );
        assert!(h.ready(late));
        assert_eq!(h.backoff, BACKOFF_MIN * 2);
    }

    /// The sink is failing from a failure until a delivery goes through, also once its wait
    /// is over; a parked recType is not the sink failing.
    #[test]
    fn the_sink_is_failing_from_a_failure_until_a_success() {
        let mut h = SinkHealth::new(Metrics::new(), 1);
        let now = Instant::now();
        h.failed(&SinkError::Park(missing()), "motion", now, now);
        assert!(!h.failing());
        let Verdict::Backoff(wait) = h.failed(&SinkError::Retry("down".into()), "a", now, now)
        else {
            panic!()
        };
        assert!(h.failing() && h.ready(now + wait));
        h.succeeded("a");
        assert!(!h.failing());
    }

    #[test]
    fn parking_one_rec_type_leaves_the_others_ready() {
        let metrics = Metrics::new();
        let mut h = SinkHealth::new(metrics.clone(), 1);
        let now = Instant::now();
        let v = h.failed(&SinkError::Park(missing()), "motion", now, now);
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
        let Verdict::Parked(w) = h.failed(&SinkError::Park(missing()), "motion", later, later)
        else {
            panic!()
        };
        assert!(w >= PARK_MIN, "{w:?}");
        assert!(h.succeeded("motion"), "it ended a park");
        assert!(!h.is_parked("motion", later));
        assert_eq!(metrics.parked.get("motion"), Some(0));
    }

    /// A newer reason while a park runs (the provisioner's finding after the write's own)
    /// replaces the older one in the metric and the status line, without a new round.
    #[test]
    fn a_newer_park_reason_replaces_the_older_one() {
        let metrics = Metrics::new();
        let mut h = SinkHealth::new(metrics.clone(), 1);
        let now = Instant::now();
        h.failed(&SinkError::Park(missing()), "motion", now, now);
        let until = parked_until(&h, "motion");
        let refused = crate::sink::refusal::Setup::default()
            .on_create(
                rdkafka::error::RDKafkaErrorCode::TopicAuthorizationFailed,
                "",
                "motion",
            )
            .unwrap();
        let later = now + Duration::from_millis(1);
        h.failed(&SinkError::Park(refused), "motion", later, later);
        // The older cause stays at 0 (see `ParkReasons::by_cause`).
        assert_eq!(
            metrics.park_reasons.by_cause(),
            [("missing".to_string(), 0), ("no_manage".to_string(), 1)]
        );
        assert!(metrics
            .park_reasons
            .get("motion")
            .is_some_and(|r| r.what.contains("no Manage right")));
        assert_eq!(parked_until(&h, "motion"), until, "the same round");
    }

    /// A new sink starts with a clean slate: nothing parked (nor shown as parked), no
    /// backoff, and the next park is the shortest again.
    #[test]
    fn a_reset_lifts_the_parks_and_the_backoff() {
        let metrics = Metrics::new();
        let mut h = SinkHealth::new(metrics.clone(), 1);
        let now = Instant::now();
        for i in 0..4 {
            let at = now + PARK_MAX * i;
            h.failed(&SinkError::Park(missing()), "motion", at, at);
        }
        h.failed(&SinkError::Retry("down".into()), "env", now, now);
        assert!(h.is_parked("motion", now + PARK_MAX * 3) && !h.ready(now));
        assert_eq!(metrics.parked.get("motion"), Some(1));
        h.reset();
        assert!(!h.is_parked("motion", now) && h.ready(now));
        assert_eq!(metrics.parked.get("motion"), Some(0));
        assert!(metrics.park_reasons.get("motion").is_none());
        let Verdict::Parked(wait) = h.failed(&SinkError::Park(missing()), "motion", now, now)
        else {
            panic!()
        };
        assert!(wait <= PARK_MIN, "the next park is {wait:?}");
    }

    fn parked_until(h: &SinkHealth, rec_type: &str) -> Instant {
        h.parked[rec_type].until
    }

    /// A burst of records of a missing hub fails together: one park, as long as the log says,
    /// not one escalation per record (which parked a recType for minutes after one burst).
    #[test]
    fn a_burst_of_failures_parks_once_per_round() {
        let mut h = SinkHealth::new(Metrics::new(), 1);
        let park = || SinkError::Park(missing());
        let sent = Instant::now();
        let t0 = sent + Duration::from_millis(5);
        let Verdict::Parked(first) = h.failed(&park(), "motion", sent, t0) else {
            panic!()
        };
        assert!(first <= PARK_MIN, "{first:?}");
        let until = parked_until(&h, "motion");
        for i in 1..500u64 {
            let at = t0 + Duration::from_micros(i);
            assert_eq!(
                h.failed(&park(), "motion", sent, at),
                Verdict::Parked(until - at)
            );
        }
        assert_eq!(
            parked_until(&h, "motion"),
            until,
            "the burst did not extend the park"
        );
        // Late reports of the same burst, after the park ran out, start no new round.
        assert!(!h.is_parked("motion", until));
        h.failed(&park(), "motion", sent, until);
        assert!(!h.is_parked("motion", until));
        // The next round (records sent after the park) escalates once: 1-2 s.
        let retry = until;
        let t1 = retry + Duration::from_millis(5);
        let Verdict::Parked(second) = h.failed(&park(), "motion", retry, t1) else {
            panic!()
        };
        assert!(second >= PARK_MIN && second <= 2 * PARK_MIN, "{second:?}");
        for i in 1..500u64 {
            h.failed(&park(), "motion", retry, t1 + Duration::from_micros(i));
        }
        assert_eq!(parked_until(&h, "motion"), t1 + second);
    }
}
