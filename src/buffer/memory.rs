//! In-memory [`Store`] for tests and for `hubgate decode`-style one-shot use.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{BufferError, Entries, StateEntry, Store};

#[derive(Default, Clone)]
pub struct MemoryStore {
    map: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
    dead: Vec<(u64, Vec<u8>)>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// A pretend disk's free space, shared by clones so a test can change it underway.
    disk_free: Option<Arc<AtomicU64>>,
    /// A pretend disk that refuses flushes, shared by clones likewise.
    flush_fails: Arc<AtomicBool>,
    /// A pretend disk whose file syncs fail ([`BufferError::SyncFailed`]), likewise.
    sync_fails: Arc<AtomicBool>,
    /// A pretend disk that refuses records and dead letters, likewise.
    writes_fail: Arc<AtomicBool>,
    /// A pretend disk that refuses removals, likewise.
    removes_fail: Arc<AtomicBool>,
    /// A pretend disk on which the records' keys, read newest first, cannot be read,
    /// likewise.
    seqs_back_fail: Arc<AtomicBool>,
    /// A pretend disk that refuses state writes under keys starting with this, likewise.
    state_fails: Arc<Mutex<Option<Vec<u8>>>>,
    /// A pretend disk on which these records' bodies cannot be read, for want of a resource
    /// (`true`) or not, likewise.
    unreadable: Arc<Mutex<(BTreeSet<u64>, bool)>>,
    /// The most bytes of values one scan returned, likewise (tests of what reads hold).
    most_scanned: Arc<AtomicU64>,
    /// Bytes of state keys and values written, likewise (tests of what a record costs the
    /// disk).
    state_written: Arc<AtomicU64>,
    /// State scans, and bytes of keys and values they returned, likewise (tests of what a
    /// record costs the disk).
    state_read: Arc<(AtomicU64, AtomicU64)>,
}

impl MemoryStore {
    pub fn with_disk_free(bytes: u64) -> Self {
        MemoryStore {
            disk_free: Some(Arc::new(AtomicU64::new(bytes))),
            ..Default::default()
        }
    }

    pub fn set_disk_free(&self, bytes: u64) {
        if let Some(free) = &self.disk_free {
            free.store(bytes, Ordering::Relaxed);
        }
    }

    pub fn set_sync_fails(&self, fails: bool) {
        self.sync_fails.store(fails, Ordering::Relaxed);
    }

    pub fn set_flush_fails(&self, fails: bool) {
        self.flush_fails.store(fails, Ordering::Relaxed);
    }

    pub fn set_writes_fail(&self, fail: bool) {
        self.writes_fail.store(fail, Ordering::Relaxed);
    }

    pub fn set_seqs_back_fail(&self, fail: bool) {
        self.seqs_back_fail.store(fail, Ordering::Relaxed);
    }

    pub fn set_removes_fail(&self, fail: bool) {
        self.removes_fail.store(fail, Ordering::Relaxed);
    }

    pub fn set_state_fails(&self, prefix: Option<&[u8]>) {
        *self
            .state_fails
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = prefix.map(<[u8]>::to_vec);
    }

    /// The bodies of `seqs` cannot be read ([`BufferError::Unreadable`], `passes` as given)
    /// until this is called again.
    pub fn set_unreadable(&self, seqs: impl IntoIterator<Item = u64>, passes: bool) {
        *self
            .unreadable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (seqs.into_iter().collect(), passes);
    }

    pub fn most_scanned(&self) -> u64 {
        self.most_scanned.load(Ordering::Relaxed)
    }

    pub fn state_written(&self) -> u64 {
        self.state_written.load(Ordering::Relaxed)
    }

    /// State scans, and bytes of keys and values they returned.
    pub fn state_read(&self) -> (u64, u64) {
        let (scans, bytes) = &*self.state_read;
        (scans.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed))
    }

    /// Refuse a change of state entry `key` when [`MemoryStore::set_state_fails`] says so.
    fn refuse_state(&self, key: &[u8]) -> Result<(), BufferError> {
        let fails = self
            .state_fails
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match fails.as_ref().is_some_and(|p| key.starts_with(p)) {
            true => Err(BufferError::Storage("the disk refuses the write".into())),
            false => Ok(()),
        }
    }

    fn refuse(&self) -> Result<(), BufferError> {
        Self::refuse_if(&self.writes_fail)
    }

    fn refuse_if(fails: &AtomicBool) -> Result<(), BufferError> {
        match fails.load(Ordering::Relaxed) {
            true => Err(BufferError::Storage("the disk refuses the write".into())),
            false => Ok(()),
        }
    }
}

impl Store for MemoryStore {
    fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        self.refuse()?;
        self.bytes += value.len() as u64;
        if let Some(old) = self.map.insert(seq, value) {
            self.bytes -= old.len() as u64;
        }
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> Result<u64, BufferError> {
        Self::refuse_if(&self.removes_fail)?;
        let n = self.map.remove(&seq).map_or(0, |v| v.len() as u64);
        self.bytes -= n;
        Ok(n)
    }

    fn scan_within(
        &self,
        after: Option<u64>,
        limit: usize,
        bytes: u64,
    ) -> Result<Entries, BufferError> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        if after == Some(u64::MAX) {
            return Ok(Vec::new());
        }
        let entries: Vec<_> = self.map.range(start..).take(limit).collect();
        let n = super::within(entries.iter().map(|(_, v)| v.len() as u64), bytes);
        let unreadable = self
            .unreadable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (unreadable, passes) = &*unreadable;
        let mut out = Vec::with_capacity(n);
        for (&seq, v) in entries.into_iter().take(n) {
            if unreadable.contains(&seq) {
                if out.is_empty() {
                    return Err(BufferError::Unreadable {
                        seq,
                        why: "the pretend disk cannot read it".into(),
                        passes: *passes,
                        segment: None,
                    });
                }
                break;
            }
            out.push((seq, v.clone()));
        }
        let scanned = out.iter().map(|(_, v)| v.len() as u64).sum();
        self.most_scanned.fetch_max(scanned, Ordering::Relaxed);
        Ok(out)
    }

    fn seqs_back(&self, limit: usize) -> Result<Vec<u64>, BufferError> {
        if self.seqs_back_fail.load(Ordering::Relaxed) {
            return Err(BufferError::Storage("the disk refuses the read".into()));
        }
        Ok(self.map.keys().rev().take(limit).copied().collect())
    }

    fn first_seq(&self) -> Result<Option<u64>, BufferError> {
        Ok(self.map.keys().next().copied())
    }

    fn state_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.refuse_state(key)?;
        let written = key.len() + value.len();
        self.state_written
            .fetch_add(written as u64, Ordering::Relaxed);
        self.state.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn state_remove(&mut self, key: &[u8]) -> Result<(), BufferError> {
        self.refuse_state(key)?;
        self.state.remove(key);
        Ok(())
    }

    fn state_scan(&self, prefix: &[u8]) -> Result<Vec<StateEntry>, BufferError> {
        let entries: Vec<_> = (self.state.iter())
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        let (scans, read) = &*self.state_read;
        scans.fetch_add(1, Ordering::Relaxed);
        read.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(entries)
    }

    fn flush(&mut self) -> Result<u64, BufferError> {
        if self.flush_fails.load(Ordering::Relaxed) {
            return Err(BufferError::Storage("the disk refuses the flush".into()));
        }
        if self.sync_fails.load(Ordering::Relaxed) {
            return Err(BufferError::SyncFailed("the disk lost a write".into()));
        }
        Ok(0)
    }

    fn usage(&self) -> (u64, u64) {
        (self.map.len() as u64, self.bytes)
    }

    fn last_seq(&self) -> Option<u64> {
        self.map.keys().next_back().copied()
    }

    fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        self.refuse()?;
        self.dead.push((seq, value));
        Ok(())
    }

    fn dead_letters(&self) -> u64 {
        self.dead.len() as u64
    }

    fn scan_dead(&self, after: Option<u64>, limit: usize) -> Result<Entries, BufferError> {
        Ok(self
            .dead
            .iter()
            .filter(|(seq, _)| after.is_none_or(|a| *seq > a))
            .take(limit)
            .cloned()
            .collect())
    }

    fn purge(&mut self) -> Result<u64, BufferError> {
        let n = self.map.len() as u64;
        self.map.clear();
        self.bytes = 0;
        Ok(n)
    }

    fn disk_free(&self) -> Option<u64> {
        self.disk_free.as_ref().map(|f| f.load(Ordering::Relaxed))
    }
}
