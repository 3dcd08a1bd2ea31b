//! A new producer's first record of each device (record key) goes alone.
//!
//! One produce request in flight limits what librdkafka sends, not what it builds: while a
//! partition's request waits for its answer, librdkafka builds that partition's next one, and
//! sends it even after the first was refused for good and the gap-less guarantee stopped the
//! producer. A broker that checks the idempotent producer's sequence numbers refuses it, but
//! Kafka checks none on a partition the producer has not written to yet (and librdkafka's mock
//! cluster none at all): a device's record 2 would be written before its record 1. So until a
//! producer has had a record of a key confirmed, the key's later records are held back here and
//! handed over once the first is confirmed; if it fails, they fail with it and the forwarder
//! sends them all again, in order. A new producer starts with none confirmed (docs/durability.md,
//! item 9).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::record::Record;

/// One producer's keys; shared by the sink and the producer's delivery callback.
#[derive(Clone, Default)]
pub struct FirstWrites(Arc<Mutex<Keys>>);

#[derive(Default)]
struct Keys {
    /// Keys with a record this producer had confirmed: their partition knows the producer.
    confirmed: HashSet<Box<str>>,
    /// Keys whose first record is handed over and not settled yet.
    open: HashMap<Box<str>, Open>,
}

struct Open {
    seq: u64,
    /// Its report: `Some(true)` confirmed, `Some(false)` failed.
    settled: Option<bool>,
    /// Records of the key taken since, in order.
    held: Vec<(u64, Record)>,
}

/// What to do with a record given to the sink.
#[derive(Debug, PartialEq)]
pub enum Admit {
    /// Hand it over now.
    Send,
    /// Held behind the key's first record.
    Held,
}

/// Records held behind a first record that got its report.
pub struct Released {
    pub confirmed: bool,
    pub records: Vec<(u64, Record)>,
}

impl FirstWrites {
    fn keys(&self) -> MutexGuard<'_, Keys> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `seq` is to go: now, or (a record of a key whose first is not settled yet) held.
    pub fn admit(&self, seq: u64, rec: &Record) -> Admit {
        let mut keys = self.keys();
        if let Some(open) = keys.open.get_mut(rec.key.as_str()) {
            open.held.push((seq, rec.clone()));
            return Admit::Held;
        }
        if !keys.confirmed.contains(rec.key.as_str()) {
            let open = Open {
                seq,
                settled: None,
                held: Vec::new(),
            };
            keys.open.insert(rec.key.as_str().into(), open);
        }
        Admit::Send
    }

    /// Record `seq`, admitted to go now, was not taken by the producer.
    pub fn not_taken(&self, seq: u64, key: &str) {
        let mut keys = self.keys();
        if keys.open.get(key).is_some_and(|o| o.seq == seq) {
            keys.open.remove(key);
        }
    }

    /// The report of record `seq` of `key` (called by the producer's delivery callback).
    pub fn reported(&self, seq: u64, key: &str, confirmed: bool) {
        let mut keys = self.keys();
        if let Some(open) = keys.open.get_mut(key).filter(|o| o.seq == seq) {
            open.settled = Some(confirmed);
        }
    }

    /// The records held behind first records that got their report, oldest first for each
    /// key; a confirmed key's records go at once from now on.
    pub fn released(&self) -> Vec<Released> {
        let mut keys = self.keys();
        let settled: Vec<Box<str>> = keys
            .open
            .iter()
            .filter(|(_, o)| o.settled.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(settled.len());
        for key in settled {
            let Some(open) = keys.open.remove(&key) else {
                continue;
            };
            let confirmed = open.settled == Some(true);
            if confirmed {
                keys.confirmed.insert(key);
            }
            out.push(Released {
                confirmed,
                records: open.held,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, n: u64) -> Record {
        Record {
            id: format!("{key}-{n}"),
            rec_type: "t".into(),
            key: key.into(),
            created_ms: 0,
            body: "{}".into(),
        }
    }

    fn seqs(r: &Released) -> Vec<u64> {
        r.records.iter().map(|(s, _)| *s).collect()
    }

    /// A key's first record goes, the next ones wait for its report; once it is confirmed
    /// they are released in order and later ones go at once. Other keys are not held up.
    #[test]
    fn a_keys_records_wait_for_its_first_to_be_confirmed() {
        let f = FirstWrites::default();
        assert_eq!(f.admit(1, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, &rec("b", 1)), Admit::Send);
        assert_eq!(f.admit(3, &rec("a", 2)), Admit::Held);
        assert_eq!(f.admit(4, &rec("a", 3)), Admit::Held);
        assert!(f.released().is_empty());
        // A report of another record of the key settles nothing.
        f.reported(3, "a", true);
        assert!(f.released().is_empty());
        f.reported(1, "a", true);
        assert_eq!(f.admit(5, &rec("a", 4)), Admit::Held, "not released yet");
        let released = f.released();
        assert_eq!(released.len(), 1);
        assert!(released[0].confirmed);
        assert_eq!(seqs(&released[0]), vec![3, 4, 5]);
        assert_eq!(f.admit(6, &rec("a", 5)), Admit::Send);
        assert_eq!(f.admit(7, &rec("b", 2)), Admit::Held);
    }

    /// A first record that failed releases what waited behind it unconfirmed (to fail too);
    /// the key's next record is a first again. One the producer did not take frees the key.
    #[test]
    fn a_failed_or_untaken_first_record_leaves_the_key_unconfirmed() {
        let f = FirstWrites::default();
        assert_eq!(f.admit(1, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, &rec("a", 2)), Admit::Held);
        f.reported(1, "a", false);
        let released = f.released();
        assert_eq!(
            (released[0].confirmed, seqs(&released[0])),
            (false, vec![2])
        );
        assert_eq!(f.admit(1, &rec("a", 1)), Admit::Send);
        f.not_taken(1, "a");
        assert_eq!(f.admit(1, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, &rec("a", 2)), Admit::Held);
    }
}
