//! Records a hub refused when each was sent alone ([`crate::sink::SinkError::Doubt`]): the
//! record's fault, or the hub's if it refuses every record (a topic whose schema validation
//! refuses hubgate's JSON, a size limit below its records). One refusal cannot tell, so the
//! record is kept and its recType parked. Once the hub takes a record of the recType sent
//! after the refusal, the refused record is *cleared*: sent again as any record, and if a
//! copy of it sent after that record is refused too, it is the record's fault
//! (dead-lettered). Until then the drain passes over it and, once it has handed over every
//! other buffered record, sends one of the recType's as a probe: the one refused longest ago.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Records in doubt kept at most: beyond, the oldest is forgotten, and is in doubt afresh at
/// its next refusal. A topic with many partitions refuses one record a partition per try.
const KEPT: usize = 1_000;

struct Doubted {
    rec_type: String,
    /// When it was last refused.
    since: Instant,
    /// Its hub took a record of its recType sent after `since`: when that one was sent.
    cleared: Option<Instant>,
}

/// What a refusal of a record sent alone means.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The hub took a record of its recType sent after this one's last refusal, and then
    /// refused a copy of this one sent after that record: this one is at fault.
    Reject,
    /// Not known yet: kept, its recType parked.
    Keep,
}

#[derive(Default)]
pub struct Doubts {
    by_seq: BTreeMap<u64, Doubted>,
    /// How many of `by_seq` each recType has: a confirmation of another recType looks no
    /// further.
    per_type: HashMap<String, usize>,
}

impl Doubts {
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// A copy of record `seq` of `rec_type` sent at `sent` was refused alone, reported at
    /// `now`. A copy sent with (or before) the record whose taking cleared it says nothing:
    /// the two may have met the hub on either side of a change, or brokers that disagree.
    pub fn refused(&mut self, seq: u64, rec_type: &str, sent: Instant, now: Instant) -> Refused {
        match self.by_seq.get_mut(&seq) {
            Some(d) => match d.cleared {
                Some(taken) if sent > taken => {
                    self.forget(seq);
                    return Refused::Reject;
                }
                Some(_) => {}
                None => d.since = now,
            },
            None => {
                let d = Doubted {
                    rec_type: rec_type.to_string(),
                    since: now,
                    cleared: None,
                };
                *self.per_type.entry(d.rec_type.clone()).or_default() += 1;
                self.by_seq.insert(seq, d);
            }
        }
        while self.by_seq.len() > KEPT {
            let Some(&oldest) = self.by_seq.keys().next() else {
                break;
            };
            self.forget(oldest);
        }
        Refused::Keep
    }

    /// Record `seq` of `rec_type`, sent at `sent`, was confirmed: the records of its
    /// recType refused before `sent` are cleared. True when that cleared any (the drain is
    /// to look at them again).
    pub fn taken(&mut self, seq: u64, rec_type: &str, sent: Instant) -> bool {
        self.forget(seq);
        if !self.per_type.contains_key(rec_type) {
            return false;
        }
        let mut cleared = false;
        for d in (self.by_seq.values_mut()).filter(|d| d.cleared.is_none() && d.since < sent) {
            if d.rec_type == rec_type {
                d.cleared = Some(sent);
                cleared = true;
            }
        }
        cleared
    }

    /// When record `seq` was last refused, if it is in doubt and not cleared: the drain
    /// passes over it, and sends it only as a probe.
    pub fn held(&self, seq: u64) -> Option<Instant> {
        self.by_seq
            .get(&seq)
            .filter(|d| d.cleared.is_none())
            .map(|d| d.since)
    }

    /// For each recType with records held, the one refused longest ago: the drain's probe.
    pub fn probes(&self) -> Vec<(u64, String)> {
        let mut probes: Vec<(u64, &str, Instant)> = Vec::new();
        for (&seq, d) in self.by_seq.iter().filter(|(_, d)| d.cleared.is_none()) {
            match probes.iter_mut().find(|(_, t, _)| *t == d.rec_type) {
                Some(p) if p.2 <= d.since => {}
                Some(p) => *p = (seq, &d.rec_type, d.since),
                None => probes.push((seq, &d.rec_type, d.since)),
            }
        }
        probes
            .into_iter()
            .map(|(seq, t, _)| (seq, t.to_string()))
            .collect()
    }

    /// Record `seq` left the buffer (expired, dead-lettered, dropped).
    pub fn forget(&mut self, seq: u64) {
        let Some(d) = self.by_seq.remove(&seq) else {
            return;
        };
        if let Some(n) = self.per_type.get_mut(&d.rec_type) {
            *n -= 1;
            if *n == 0 {
                self.per_type.remove(&d.rec_type);
            }
        }
    }

    /// Keep only the records `kept` says are still there (buffered, or in memory).
    pub fn retain(&mut self, kept: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self.by_seq.keys().copied().filter(|&s| !kept(s)).collect();
        for seq in gone {
            self.forget(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A record is the one at fault only when refused again after its recType's hub took a
    /// record sent after its last refusal: not after a record sent before it (confirmed
    /// later, as reports of other partitions come), nor after another recType's.
    #[test]
    fn only_a_record_sent_after_the_refusal_and_taken_clears_it() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut d = Doubts::default();
        assert_eq!(d.refused(1, "t", at(9), at(10)), Refused::Keep);
        assert!(!d.taken(2, "t", at(9)), "sent before the refusal");
        assert!(!d.taken(3, "u", at(11)), "another recType");
        assert_eq!(d.held(1), Some(at(10)));
        let again = d.refused(1, "t", at(11), at(12));
        assert_eq!(again, Refused::Keep, "refused again, unknown");
        assert!(!d.taken(4, "t", at(11)), "sent before the last refusal");
        assert!(d.taken(5, "t", at(13)));
        assert_eq!(d.held(1), None, "cleared: sent as any record");
        assert!(!d.taken(6, "t", at(14)), "cleared once");
        let with_it = d.refused(1, "t", at(13), at(14));
        assert_eq!(
            with_it,
            Refused::Keep,
            "sent with the record taken: no verdict"
        );
        assert_eq!(d.held(1), None, "still cleared");
        assert_eq!(d.refused(1, "t", at(15), at(16)), Refused::Reject);
        assert!(d.is_empty());
    }

    /// The probe of each recType is its held record refused longest ago; cleared ones are
    /// not held.
    #[test]
    fn each_rectype_probes_its_record_refused_longest_ago() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut d = Doubts::default();
        d.refused(1, "t", at(0), at(5));
        d.refused(2, "t", at(0), at(3));
        d.refused(3, "u", at(0), at(4));
        d.refused(4, "v", at(0), at(1));
        assert!(d.taken(9, "v", at(2)));
        let of = |t: &[(u64, &str)]| t.iter().map(|&(s, t)| (s, t.to_string())).collect();
        let first: Vec<_> = of(&[(2, "t"), (3, "u")]);
        assert_eq!(d.probes(), first);
        d.refused(2, "t", at(6), at(7));
        let turn: Vec<_> = of(&[(1, "t"), (3, "u")]);
        assert_eq!(d.probes(), turn, "refused again: the other's turn");
    }

    /// Entries of records that left the buffer go, and the kept ones are bounded.
    #[test]
    fn records_that_left_are_forgotten_and_the_rest_bounded() {
        let t0 = Instant::now();
        let mut d = Doubts::default();
        for seq in 0..(KEPT as u64 + 10) {
            d.refused(seq, "t", t0, t0);
        }
        assert_eq!(d.by_seq.len(), KEPT);
        assert_eq!(d.held(9), None, "the oldest forgotten");
        d.retain(|seq| seq >= 500);
        assert_eq!(d.by_seq.keys().next(), Some(&500));
        d.retain(|_| false);
        assert!(d.is_empty() && d.per_type.is_empty());
    }
}
