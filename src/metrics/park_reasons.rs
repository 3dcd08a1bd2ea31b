//! Why each parked recType is parked, for the status page, the status line and
//! `hubgate_hubs_parked`.

use std::collections::BTreeMap;
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
pub struct ParkReasons(Mutex<BTreeMap<String, ParkReason>>);

impl ParkReasons {
    pub fn set(&self, rec_type: &str, reason: ParkReason) {
        self.lock().insert(rec_type.to_string(), reason);
    }
    pub fn clear(&self, rec_type: &str) {
        self.lock().remove(rec_type);
    }
    pub fn get(&self, rec_type: &str) -> Option<ParkReason> {
        self.lock().get(rec_type).cloned()
    }
    /// How many recTypes are parked, by cause (the metric's `reason` label).
    pub fn by_cause(&self) -> Vec<(String, u64)> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.lock().values() {
            *out.entry(r.kind.to_string()).or_default() += 1;
        }
        out.into_iter().collect()
    }
    /// The refusal of the first parked recType (by name).
    pub fn first(&self) -> Option<ParkReason> {
        self.lock().values().next().cloned()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ParkReason>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
