//! Why each parked recType is parked, for the status page, the status line and
//! `hubgate_hubs_parked`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// A hub's refusal as the metrics show it (the sink's `Refusal`, in words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkReason {
    /// The cause as a metric label.
    pub kind: &'static str,
    /// What is wrong, in a few words.
    pub what: String,
    /// The one thing to do about it.
    pub fix: String,
    /// What the broker said (error code and message).
    pub broker: String,
}

/// Why each parked recType is parked (the hub's refusal).
#[derive(Default)]
pub struct ParkReasons(Mutex<Reasons>);

#[derive(Default)]
struct Reasons {
    by_rec_type: BTreeMap<String, ParkReason>,
    /// Every cause seen so far: its gauge reads 0 once nothing is parked for it, rather than
    /// vanishing (a sum over none is "no data", as for an agent that is not scraped).
    seen: BTreeSet<&'static str>,
}

impl ParkReasons {
    pub fn set(&self, rec_type: &str, reason: ParkReason) {
        let mut r = self.lock();
        r.seen.insert(reason.kind);
        r.by_rec_type.insert(rec_type.to_string(), reason);
    }
    pub fn clear(&self, rec_type: &str) {
        self.lock().by_rec_type.remove(rec_type);
    }
    pub fn get(&self, rec_type: &str) -> Option<ParkReason> {
        self.lock().by_rec_type.get(rec_type).cloned()
    }
    /// How many recTypes are parked, by cause (the metric's `reason` label); 0 for a cause
    /// seen before.
    pub fn by_cause(&self) -> Vec<(String, u64)> {
        let r = self.lock();
        let mut out: BTreeMap<&str, u64> = r.seen.iter().map(|kind| (*kind, 0)).collect();
        for reason in r.by_rec_type.values() {
            *out.entry(reason.kind).or_default() += 1;
        }
        out.into_iter().map(|(k, n)| (k.to_string(), n)).collect()
    }
    /// The refusal of the first parked recType (by name).
    pub fn first(&self) -> Option<ParkReason> {
        self.lock().by_rec_type.values().next().cloned()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Reasons> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
