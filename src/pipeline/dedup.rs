//! A bounded memory of recent record ids, to drop the same uplink seen twice (two gateways,
//! or an MQTT redelivery) while remembering whether the first copy is durable yet.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time within the window.
    New,
    /// The first copy is still on its way to the sink under this sequence number.
    Pending(u64),
    /// The first copy is durable (delivered, or in the flushed buffer).
    Durable,
}

pub struct Dedup {
    capacity: usize,
    /// Keyed by the same shared id the eviction order holds: each id is stored once.
    state: HashMap<Arc<str>, Option<u64>>,
    order: VecDeque<Arc<str>>,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity,
            state: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Look `id` up; a new id is remembered as pending under `seq`.
    pub fn check(&mut self, id: &str, seq: u64) -> Seen {
        if self.capacity == 0 {
            return Seen::New;
        }
        match self.state.get(id) {
            Some(Some(s)) => return Seen::Pending(*s),
            Some(None) => return Seen::Durable,
            None => {}
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.state.remove(&old);
            }
        }
        let id: Arc<str> = id.into();
        self.state.insert(id.clone(), Some(seq));
        self.order.push_back(id);
        Seen::New
    }

    /// Remember `id` as durable already (a record found in the buffer at start).
    pub fn seed(&mut self, id: &str) {
        self.check(id, 0);
        self.durable(id);
    }

    pub fn durable(&mut self, id: &str) {
        if let Some(v) = self.state.get_mut(id) {
            *v = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_capacity() {
        let mut d = Dedup::new(2);
        assert_eq!(d.check("a", 1), Seen::New);
        assert_eq!(d.check("a", 2), Seen::Pending(1));
        d.durable("a");
        assert_eq!(d.check("a", 3), Seen::Durable);
        assert_eq!(d.check("b", 4), Seen::New);
        assert_eq!(d.check("c", 5), Seen::New);
        assert_eq!(d.check("a", 6), Seen::New, "a fell out of the window");
    }

    #[test]
    fn seeded_ids_are_durable_duplicates() {
        let mut d = Dedup::new(2);
        d.seed("a");
        d.seed("b");
        assert_eq!(d.check("b", 7), Seen::Durable);
        assert_eq!(d.check("a", 8), Seen::Durable);
        assert_eq!(Dedup::new(0).check("a", 1), Seen::New);
    }
}
