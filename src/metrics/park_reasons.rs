//! Why each parked recType is parked, for the status page.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why each parked recType is parked (the sink's error), for the page.
#[derive(Default)]
pub struct ParkReasons(Mutex<BTreeMap<String, String>>);

impl ParkReasons {
    pub fn set(&self, rec_type: &str, reason: &str) {
        self.lock().insert(rec_type.to_string(), reason.to_string());
    }
    pub fn clear(&self, rec_type: &str) {
        self.lock().remove(rec_type);
    }
    pub fn get(&self, rec_type: &str) -> Option<String> {
        self.lock().get(rec_type).cloned()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
