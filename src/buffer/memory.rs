//! In-memory [`Store`] for tests and for `hubgate decode`-style one-shot use.

use std::collections::BTreeMap;

use super::{BufferError, Store};

#[derive(Default)]
pub struct MemoryStore {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
    dead: Vec<(u64, Vec<u8>)>,
}

impl Store for MemoryStore {
    fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        self.bytes += value.len() as u64;
        if let Some(old) = self.map.insert(seq, value) {
            self.bytes -= old.len() as u64;
        }
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> Result<u64, BufferError> {
        let n = self.map.remove(&seq).map_or(0, |v| v.len() as u64);
        self.bytes -= n;
        Ok(n)
    }

    fn scan(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, BufferError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        if after == Some(u64::MAX) {
            return Ok(Vec::new());
        }
        Ok(self
            .map
            .range(start..)
            .take(limit)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    fn flush(&mut self) -> Result<(), BufferError> {
        Ok(())
    }

    fn usage(&self) -> (u64, u64) {
        (self.map.len() as u64, self.bytes)
    }

    fn last_seq(&self) -> Option<u64> {
        self.map.keys().next_back().copied()
    }

    fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        self.dead.push((seq, value));
        Ok(())
    }

    fn dead_letters(&self) -> u64 {
        self.dead.len() as u64
    }

    fn purge(&mut self) -> Result<u64, BufferError> {
        let n = self.map.len() as u64;
        self.map.clear();
        self.bytes = 0;
        Ok(n)
    }
}
