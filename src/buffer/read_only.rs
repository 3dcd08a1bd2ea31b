//! The [`Store`] of a buffer whose file system takes no writes: an SD card that failed a
//! write and was turned read-only or shut down (`errors=remount-ro`,
//! [`super::disk::card_failed`]), until it is checked at the next boot. Every record is
//! refused, so records go to the sink from memory and are acknowledged on its
//! confirmation, as with any disk that refuses writes (see `pipeline::ledger`); without a
//! sink that confirms, input is held. Nothing needs the card for that, so hubgate runs on
//! instead of stopping every source. Dead letters are only counted, as past their cap
//! ([`Store::takes_writes`]): held for a card that takes no write until the next boot, one
//! would hold the input for as long. The database on the card is left as it is: its
//! records are sent by the first start that can open it again.
//!
//! The buffer's small state (frame counters, the clock's readings) is kept in memory for the
//! run (`hubgate_buffer_state_unsynced` stays 1). It starts with the frame counters from
//! upper half 12 on that the card holds beside sled ([`super::far_counters`]), which sled
//! cannot open to read: a device past what a session's first search finds (2^20) is followed
//! from its counter, not failed at every frame until the check. The other counters start
//! unknown (found again by that search), so a copy of a frame heard before the restart can
//! pass as a record again (a duplicate). A restart forgets what this run learned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{BufferError, BufferLock, Entries, StateEntry, Store};

/// How often the buffer directory is tried for a write: once it takes one (a disk back,
/// mounted read-write again), the run ends ([`BufferError::Reopen`]), so that the next start
/// opens the buffer and sends what it holds. A card that failed takes none until the boot
/// that checks it.
const TRY_EVERY: Duration = Duration::from_secs(60);

pub struct ReadOnlyStore {
    /// The buffer directory, named in each refusal.
    dir: PathBuf,
    /// When it was last tried for a write.
    tried: Instant,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The directory's lock, where its lock file could be opened
    /// ([`BufferLock::take_read_only`]).
    _lock: Option<BufferLock>,
}

impl ReadOnlyStore {
    pub fn new(buffer_dir: &Path, lock: Option<BufferLock>) -> Self {
        ReadOnlyStore {
            dir: buffer_dir.to_path_buf(),
            tried: Instant::now(),
            state: super::far_counters::read_for(buffer_dir)
                .into_iter()
                .collect(),
            _lock: lock,
        }
    }

    fn refuse(&self) -> Result<(), BufferError> {
        Err(BufferError::Storage(format!(
            "{}: {}",
            self.dir.display(),
            super::disk::FAILED_CARD_HINT
        )))
    }
}

impl Store for ReadOnlyStore {
    fn insert(&mut self, _seq: u64, _value: Vec<u8>) -> Result<(), BufferError> {
        self.refuse()
    }

    /// Nothing is stored here, so nothing is removed.
    fn remove(&mut self, _seq: u64) -> Result<u64, BufferError> {
        Ok(0)
    }

    fn scan_within(&self, _: Option<u64>, _: usize, _: u64) -> Result<Entries, BufferError> {
        Ok(Vec::new())
    }

    fn seqs_back(&self, _limit: usize) -> Result<Vec<u64>, BufferError> {
        Ok(Vec::new())
    }

    fn first_seq(&self) -> Result<Option<u64>, BufferError> {
        Ok(None)
    }

    fn state_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.state.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn state_remove(&mut self, key: &[u8]) -> Result<(), BufferError> {
        self.state.remove(key);
        Ok(())
    }

    fn state_scan(&self, prefix: &[u8]) -> Result<Vec<StateEntry>, BufferError> {
        Ok((self.state.range(prefix.to_vec()..))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Nothing written waits for the card: records and dead letters were refused, and the
    /// state is kept for this run only. Every [`TRY_EVERY`], the directory is tried for a
    /// write.
    fn flush(&mut self) -> Result<u64, BufferError> {
        if self.tried.elapsed() < TRY_EVERY {
            return Ok(0);
        }
        self.tried = Instant::now();
        match super::disk::writable(&self.dir) {
            Ok(()) => Err(BufferError::Reopen(format!(
                "{} takes writes again",
                self.dir.display()
            ))),
            Err(_) => Ok(0),
        }
    }

    fn wants_flush(&self) -> bool {
        self.tried.elapsed() >= TRY_EVERY
    }

    fn usage(&self) -> (u64, u64) {
        (0, 0)
    }

    fn last_seq(&self) -> Option<u64> {
        None
    }

    fn dead_letter(&mut self, _seq: u64, _value: Vec<u8>) -> Result<(), BufferError> {
        self.refuse()
    }

    fn dead_letters(&self) -> u64 {
        0
    }

    fn takes_writes(&self) -> bool {
        false
    }

    fn scan_dead(&self, _after: Option<u64>, _limit: usize) -> Result<Entries, BufferError> {
        Ok(Vec::new())
    }

    fn purge(&mut self) -> Result<u64, BufferError> {
        Ok(0)
    }

    fn disk_free(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records and dead letters are refused, naming the directory and what to do; the state
    /// is kept, by prefix, for the run; a flush has nothing to write.
    #[test]
    fn records_are_refused_and_state_is_kept_in_memory() {
        let mut store = ReadOnlyStore::new(Path::new("/nonexistent/hubgate"), None);
        let refused = store.insert(1, b"r".to_vec()).unwrap_err().to_string();
        assert!(
            refused.contains("/nonexistent/hubgate") && refused.contains("read-only"),
            "{refused}"
        );
        assert!(store.dead_letter(2, b"d".to_vec()).is_err());
        assert_eq!(store.scan(None, 10).unwrap(), Vec::new());
        assert_eq!((store.usage(), store.last_seq()), ((0, 0), None));
        store.state_set(b"fcnt/a", b"1").unwrap();
        store.state_set(b"fcnt/b", b"2").unwrap();
        store.state_set(b"fcnt-copies/a", b"3").unwrap();
        store.state_set(b"clock-steps", b"4").unwrap();
        store.state_remove(b"fcnt/b").unwrap();
        assert_eq!(
            store.state_scan(b"fcnt/").unwrap(),
            vec![(b"fcnt/a".to_vec(), b"1".to_vec())]
        );
        assert_eq!(store.state_scan(b"fcnt").unwrap().len(), 2);
        assert_eq!(store.flush().unwrap(), 0);
        assert_eq!(store.remove(1).unwrap(), 0);
    }

    /// The frame counters from upper half 12 on that a sled store kept on the card are read
    /// without sled; the others are not kept there.
    #[test]
    fn the_far_counters_kept_beside_sled_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut sled = crate::buffer::SledStore::open(dir.path()).unwrap();
        let key = |n| [b"fcnt/".as_slice(), &[n; 12]].concat();
        let far = [0x000C_0001_u32.to_be_bytes(), [7; 4]].concat();
        sled.state_set(&key(1), &far).unwrap();
        sled.state_set(&key(2), &[0, 0xb, 0xff, 0xff, 7, 7, 7, 7])
            .unwrap();
        sled.state_set(b"clock-steps", &[0x7f; 8]).unwrap();
        sled.flush().unwrap();
        drop(sled);
        let store = ReadOnlyStore::new(dir.path(), None);
        assert_eq!(store.state_scan(b"").unwrap(), [(key(1), far)]);
    }

    /// A salvage moves the database aside (with the counters' file) and carries its state
    /// into a fresh one, whose first flush writes the file again. A card that fails that
    /// flush (a salvage writes the whole buffer anew, on a card that already lost writes)
    /// ends the start, and the start without sled after it finds no file in the fresh
    /// database: it reads those of the databases moved aside, each session's highest
    /// counter (whatever their names say), and those of a rebuild cut short between its
    /// renames.
    #[test]
    fn the_far_counters_of_a_salvage_or_rebuild_cut_short_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = [b"fcnt/".as_slice(), &[1; 12]].concat();
        let value = |fcnt: u32| [fcnt.to_be_bytes(), [7; 4]].concat();
        let db = dir.path().join(super::super::sled_store::DB_DIR);
        let kept = |fcnt| {
            let mut sled = crate::buffer::SledStore::open_at(&db).unwrap();
            sled.state_set(&key, &value(fcnt)).unwrap();
            sled.flush().unwrap();
        };
        let read = || {
            ReadOnlyStore::new(dir.path(), None)
                .state_scan(b"")
                .unwrap()
        };
        kept(0x0013_0001);
        let first = super::super::salvage::move_aside(&db).unwrap();
        kept(0x0014_0001);
        let second = super::super::salvage::move_aside(&db).unwrap();
        // Named by a clock a power cut set back: the later one stamped earlier.
        std::fs::rename(first, dir.path().join("sled.broken-2000000000")).unwrap();
        std::fs::rename(second, dir.path().join("sled.broken-1000000000")).unwrap();
        drop(crate::buffer::SledStore::open_at(&db).unwrap());
        assert_eq!(
            read(),
            [(key.clone(), value(0x0014_0001))],
            "the highest aside"
        );
        kept(0x0015_0001);
        let old = super::super::sled_store::with_suffix(&db, ".old");
        std::fs::rename(&db, &old).unwrap();
        drop(crate::buffer::SledStore::open_at(&db).unwrap());
        assert_eq!(
            read(),
            [(key.clone(), value(0x0015_0001))],
            "the rebuild's old"
        );
        kept(0x0016_0001);
        assert_eq!(read(), [(key, value(0x0016_0001))], "its own, first");
    }

    /// Every minute a flush tries the directory for a write: one that takes it again ends
    /// the run, for the next start to open the buffer there; one that does not (missing
    /// here, as a disk unplugged) leaves the run as it is.
    #[test]
    fn a_directory_that_takes_writes_again_ends_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ReadOnlyStore::new(&dir.path().join("unplugged"), None);
        let a_minute_ago = |s: &mut ReadOnlyStore| {
            s.tried = Instant::now().checked_sub(TRY_EVERY).unwrap();
        };
        assert!(!store.wants_flush());
        a_minute_ago(&mut store);
        assert!(store.wants_flush());
        assert_eq!(store.flush().unwrap(), 0);
        assert!(!store.wants_flush(), "tried again only a minute later");
        let mut store = ReadOnlyStore::new(dir.path(), None);
        assert_eq!(store.flush().unwrap(), 0, "not tried within the minute");
        a_minute_ago(&mut store);
        let reopen = store.flush().unwrap_err();
        assert!(
            matches!(&reopen, BufferError::Reopen(why) if why.contains("takes writes again")),
            "{reopen}"
        );
    }
}
