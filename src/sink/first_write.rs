//! A new producer hands a device's next record of a hub to librdkafka only once the first is
//! confirmed.
//!
//! One produce request in flight limits what librdkafka sends, not what it builds: while a
//! partition's request waits for its answer, librdkafka builds that partition's next one, and
//! sends it even after the first was refused for good and the gap-less guarantee stopped the
//! producer. A broker that checks the idempotent producer's sequence numbers refuses it, but
//! Kafka checks none on a partition the producer has not written to yet (and librdkafka's mock
//! cluster none at all): a device's record 2 would be written before its record 1. So until a
//! producer has had a record of a device (record key) in a hub confirmed, the device's later
//! records for that hub wait here, and go once the first is confirmed. If the first is refused
//! for good, the producer is replaced and what waited gets no report (the forwarder sends it
//! all again, in order); after a failure that does not stop the producer, they fail with it.
//! Records of other devices, and of other hubs, do not wait (docs/durability.md, item 9).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::SinkError;
use crate::record::Record;

/// One producer's devices per hub; shared by the sink and the producer's delivery callback.
#[derive(Clone, Default)]
pub struct FirstWrites(Arc<Mutex<Hubs>>);

/// Per hub (topic).
type Hubs = HashMap<Box<str>, Keys>;

#[derive(Default)]
struct Keys {
    /// Keys with a record this producer had confirmed: their partition knows the producer.
    confirmed: Confirmed,
    /// Keys whose first record is handed over and not released yet.
    open: HashMap<Box<str>, Open>,
}

/// Keys confirmed per hub that a producer remembers. Keys come from input (any DevEUI a
/// broker's publishers name, any gateway EUI a datagram carries) and a producer lives for
/// months, so they are bounded; forgetting one only makes its next record a first again.
pub const CONFIRMED_KEPT: usize = 10_000;

/// The confirmed keys of a hub, in two generations: a key is looked up in both, and the older
/// is dropped when the newer is full, so at most [`CONFIRMED_KEPT`] are kept and a key in use
/// (moved to the newer when found in the older) is not forgotten.
#[derive(Default)]
struct Confirmed {
    new: HashSet<Box<str>>,
    old: HashSet<Box<str>>,
}

impl Confirmed {
    fn contains(&mut self, key: &str) -> bool {
        if self.new.contains(key) {
            return true;
        }
        match self.old.take(key) {
            Some(key) => {
                self.insert(key);
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, key: Box<str>) {
        if self.new.len() >= CONFIRMED_KEPT / 2 {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }
}

struct Open {
    seq: u64,
    /// Its report: `Ok` confirmed, else why it failed.
    settled: Option<Result<(), SinkError>>,
    /// Records of the key taken since, in order.
    held: Vec<(u64, Record)>,
}

/// What to do with a record given to the sink.
#[derive(Debug, PartialEq)]
pub enum Admit {
    /// Hand it over now.
    Send,
    /// Held behind the first record of its device in its hub.
    Held,
}

/// Records held behind a first record that got its report.
pub struct Released {
    /// `Ok`: the first was confirmed; else what the held ones fail with.
    pub first: Result<(), SinkError>,
    pub records: Vec<(u64, Record)>,
}

impl FirstWrites {
    fn hubs(&self) -> MutexGuard<'_, Hubs> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `seq`, for `hub`, is to go: now, or (a record of a device whose first in the
    /// hub is not released yet) held.
    pub fn admit(&self, seq: u64, hub: &str, rec: &Record) -> Admit {
        let mut hubs = self.hubs();
        // Looked up first: a hub's name is allocated once, not for every record.
        if !hubs.contains_key(hub) {
            hubs.insert(hub.into(), Keys::default());
        }
        let keys = hubs.get_mut(hub).expect("inserted above");
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

    /// Record `seq` of `key`, admitted to go now, was not taken by the producer.
    pub fn not_taken(&self, seq: u64, hub: &str, key: &str) {
        if let Some(keys) = self.hubs().get_mut(hub) {
            if keys.open.get(key).is_some_and(|o| o.seq == seq) {
                keys.open.remove(key);
            }
        }
    }

    /// The report of record `seq` of `key` in `hub` (called by the producer's delivery
    /// callback).
    pub fn reported(&self, seq: u64, hub: &str, key: &str, result: &Result<u64, SinkError>) {
        let mut hubs = self.hubs();
        let open = hubs.get_mut(hub).and_then(|k| k.open.get_mut(key));
        if let Some(open) = open.filter(|o| o.seq == seq) {
            open.settled = Some(result.as_ref().map(|_| ()).map_err(|e| match e {
                // What is rejected (or doubted) is the first record alone.
                SinkError::Reject(why) => SinkError::Retry(why.clone()),
                SinkError::Doubt(why) => SinkError::Retry(why.to_string()),
                e => e.clone(),
            }));
        }
    }

    /// The records held behind first records that got their report, oldest first for each
    /// device; a confirmed device's records go at once from now on.
    pub fn released(&self) -> Vec<Released> {
        let mut hubs = self.hubs();
        let mut out = Vec::new();
        for keys in hubs.values_mut() {
            for (key, open) in keys.open.extract_if(|_, o| o.settled.is_some()) {
                let first = open.settled.unwrap_or(Ok(()));
                if first.is_ok() {
                    keys.confirmed.insert(key);
                }
                out.push(Released {
                    first,
                    records: open.held,
                });
            }
        }
        out
    }

    /// How many records wait behind first records.
    pub fn held(&self) -> usize {
        let hubs = self.hubs();
        let open = hubs.values().flat_map(|k| k.open.values());
        open.map(|o| o.held.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = "h";

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

    const OK: Result<u64, SinkError> = Ok(1);

    /// A device's first record in a hub goes, the next ones wait for its report; once it is
    /// confirmed they are released in order and later ones go at once. Other devices, and
    /// the device's records for another hub, are not held up, and wait on their own.
    #[test]
    fn a_devices_records_wait_for_its_first_in_the_hub_to_be_confirmed() {
        let f = FirstWrites::default();
        assert_eq!(f.admit(1, HUB, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, HUB, &rec("b", 1)), Admit::Send);
        assert_eq!(f.admit(3, HUB, &rec("a", 2)), Admit::Held);
        assert_eq!(f.admit(4, HUB, &rec("a", 3)), Admit::Held);
        assert_eq!(f.admit(5, "other", &rec("a", 4)), Admit::Send);
        assert_eq!(f.admit(6, "other", &rec("a", 5)), Admit::Held);
        assert!(f.released().is_empty());
        assert_eq!(f.held(), 3);
        // A report of another record of the device, or of another hub, settles nothing.
        f.reported(3, HUB, "a", &OK);
        f.reported(1, "other", "a", &OK);
        assert!(f.released().is_empty());
        f.reported(1, HUB, "a", &OK);
        assert_eq!(
            f.admit(7, HUB, &rec("a", 6)),
            Admit::Held,
            "not released yet"
        );
        let released = f.released();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].first, Ok(()));
        assert_eq!(seqs(&released[0]), vec![3, 4, 7]);
        assert_eq!(f.admit(8, HUB, &rec("a", 7)), Admit::Send);
        assert_eq!(f.admit(9, HUB, &rec("b", 2)), Admit::Held);
        assert_eq!(f.admit(10, "other", &rec("a", 8)), Admit::Held);
    }

    /// A first record that failed releases what waited behind it with its error (a
    /// rejection is the first record's alone: the others are to be tried again); the
    /// device's next record is a first again. One the producer did not take frees the key.
    #[test]
    fn a_failed_or_untaken_first_record_leaves_the_device_unconfirmed() {
        let f = FirstWrites::default();
        assert_eq!(f.admit(1, HUB, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, HUB, &rec("a", 2)), Admit::Held);
        let parked = SinkError::Retry("hub missing".into());
        f.reported(1, HUB, "a", &Err(parked.clone()));
        let released = f.released();
        assert_eq!(
            (released[0].first.clone(), seqs(&released[0])),
            (Err(parked), vec![2])
        );
        assert_eq!(f.admit(1, HUB, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, HUB, &rec("a", 2)), Admit::Held);
        f.reported(1, HUB, "a", &Err(SinkError::Reject("too large".into())));
        let first = f.released().pop().unwrap().first;
        assert_eq!(first, Err(SinkError::Retry("too large".into())));
        assert_eq!(f.admit(1, HUB, &rec("a", 1)), Admit::Send);
        f.not_taken(1, HUB, "a");
        assert_eq!(f.admit(1, HUB, &rec("a", 1)), Admit::Send);
        assert_eq!(f.admit(2, HUB, &rec("a", 2)), Admit::Held);
    }

    /// A producer lives for months and keys come from input (DevEUIs of MQTT uplinks, gateway
    /// EUIs of UDP `stat` reports): a flood of distinct ones keeps at most [`CONFIRMED_KEPT`],
    /// and a device that keeps sending stays confirmed through it.
    #[test]
    fn confirmed_keys_stay_bounded_under_many_distinct_devices() {
        let bound = CONFIRMED_KEPT;
        let f = FirstWrites::default();
        let n = 5 * bound as u64;
        assert_eq!(f.admit(n, HUB, &rec("steady", 0)), Admit::Send);
        f.reported(n, HUB, "steady", &OK);
        assert_eq!(f.released().len(), 1);
        for seq in 0..n {
            if seq % 1000 == 0 {
                // Were it forgotten, the first would go and the second wait for it.
                let steady = [0, 1].map(|i| f.admit(n + seq + i, HUB, &rec("steady", seq + i)));
                assert_eq!(steady, [Admit::Send, Admit::Send], "after {seq} others");
            }
            let key = format!("{seq:016x}");
            assert_eq!(f.admit(seq, HUB, &rec(&key, seq)), Admit::Send);
            f.reported(seq, HUB, &key, &OK);
            assert_eq!(f.released().len(), 1);
        }
        let hubs = f.hubs();
        let kept: usize = hubs
            .values()
            .map(|k| k.confirmed.len() + k.open.len())
            .sum();
        assert!(
            kept <= bound,
            "{kept} keys kept after {n} distinct devices (bound {bound})"
        );
    }
}
