//! Moving a database of an older layout to this release's at open, before READY=1.
//!
//! Layout 1 kept a sled entry per record's pointer (tree `record_at`):
//! [`SledStore::group`] moves them into the index's groups. The layout before it kept the
//! records' bodies in sled itself (tree `records`): [`SledStore::upgrade`] moves them into
//! segments. Both go a batch at a time, each flushed before its keys leave the old tree, so
//! a crash or an error keeps every batch moved and the next start goes on from there.

use super::disk::human;
use super::segments::{Pointer, MAX_VALUE};
use super::sled_store::{err, seq_of, SledStore, BATCH_ALLOWANCE};
use super::{BufferError, Store};

/// The tree of layout 1: a pointer per record. Its records are moved into the index at open
/// ([`SledStore::group`]).
pub(super) const POINTERS: &str = "record_at";
/// Pointers moved into the index per flush by [`SledStore::group`].
const GROUP_BATCH: usize = 4096;
/// The tree that held the records' bodies themselves before they moved to segments: its
/// records are moved over at open ([`SledStore::upgrade`]).
const OLD_RECORDS: &[u8] = b"records";
/// Records moved per flush by the upgrade and the salvage.
pub(super) const MOVE_BATCH: usize = 256;
/// The moves at open log their progress every this many batches (16,384 records for the
/// upgrade, 262,144 for the move into groups).
const UPGRADE_LOG_EVERY: u64 = 64;
/// Room the upgrade wants on the disk beyond the bodies it writes, for sled's own writes (the
/// index's groups, the flushes) and the segments' last blocks (a FAT disk's clusters are up
/// to 128 KiB): a sixteenth of the bodies and this.
const UPGRADE_MARGIN: u64 = 4 << 20;
/// The move stops before a batch (those moved kept) once less than this is left on the disk:
/// the estimate before it may fall short, and a disk filled to its last byte leaves sled
/// unable to open the database at all.
const UPGRADE_LEFT: u64 = 4 << 20;
/// The count of the old records before the upgrade tells systemd the start goes on every this
/// many records (a large buffer on a slow card takes a while to read).
const COUNT_NOTIFY_EVERY: u64 = 16_384;

impl SledStore {
    /// The tree an earlier release kept the records' bodies in, if the database has one.
    pub(super) fn old_records(&self) -> Result<Option<sled::Tree>, BufferError> {
        if !self.db.tree_names().iter().any(|n| n == OLD_RECORDS) {
            return Ok(None);
        }
        self.db.open_tree(OLD_RECORDS).map(Some).map_err(err)
    }

    /// Move the pointers of layout 1 (a sled entry per record, tree `record_at`) into the
    /// index, [`GROUP_BATCH`] at a time: a batch is put into the index and flushed, then its
    /// keys leave the old tree and that is flushed too; at the end the empty tree is dropped.
    /// A crash or an error keeps every batch moved before it; a record left in both trees is
    /// moved again, with the same pointer. The open counted those records already. The
    /// layout was raised before the first batch ([`SledStore::mark_layout`]), so an older
    /// release refuses a database moved in part. `progress` gets the number of records moved
    /// so far after each batch.
    pub(super) fn group(&mut self, progress: impl FnMut(u64)) -> Result<(), BufferError> {
        // Its flushes write no mark: the records past the mark file are checked and their
        // segments synced after the move (`drop_torn_unflushed`), and a mark over them
        // before that would make them acknowledged.
        let marked = self.marked();
        let highest = std::mem::replace(&mut self.highest, marked);
        let moved = self.group_batches(progress);
        self.highest = highest;
        moved
    }

    /// [`SledStore::group`]'s batches.
    fn group_batches(&mut self, progress: impl FnMut(u64)) -> Result<(), BufferError> {
        let Some(old) = old_pointers(&self.db).map_err(err)? else {
            return Ok(());
        };
        let step = |s: &mut Self, k: &[u8], v: &[u8]| {
            s.changed = true;
            match (seq_of(k), Pointer::from_bytes(v)) {
                (Some(seq), Some(p)) => {
                    s.index.insert(seq, p).map_err(err)?;
                    Ok(true)
                }
                // Its body cannot be found: damage, as a damaged group's records are.
                (seq, _) => {
                    log::error!(
                        "buffer: a damaged pointer ({} bytes under a key of {} bytes{}) in the \
                         old tree: dropped",
                        v.len(),
                        k.len(),
                        seq.map_or(String::new(), |seq| format!(", record #{seq}"))
                    );
                    Ok(false)
                }
            }
        };
        let moved = self.move_old_tree(old, GROUP_BATCH, step, Self::flush_only, progress)?;
        if moved > 0 {
            log::info!("buffer: moved the pointers of {moved} record(s) into groups");
        }
        Ok(())
    }

    /// Moves the old tree `old` out, `batch` entries at a time: `step` takes each entry
    /// (whether it moved a record), then `flush` makes the batch durable; then its keys leave
    /// the old tree and that is flushed too. At the end the empty tree is dropped. Each
    /// batch's entries stay in `old` until the batch is flushed: moved again after a crash.
    /// `progress` gets the number of records moved so far after each batch; returns it.
    fn move_old_tree(
        &mut self,
        old: sled::Tree,
        batch: usize,
        mut step: impl FnMut(&mut Self, &[u8], &[u8]) -> Result<bool, BufferError>,
        flush: impl Fn(&mut Self) -> Result<(), BufferError>,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, BufferError> {
        let mut moved = 0u64;
        loop {
            let entries = old
                .iter()
                .take(batch)
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            if entries.is_empty() {
                break;
            }
            for (k, v) in &entries {
                if step(self, k, v)? {
                    moved += 1;
                }
            }
            #[cfg(test)]
            tests::upgrade_may_fail()?;
            flush(self)?;
            for (k, _) in &entries {
                old.remove(k).map_err(err)?;
            }
            self.changed = true;
            flush(self)?;
            progress(moved);
        }
        let name = old.name();
        drop(old);
        self.db.drop_tree(name).map_err(err)?;
        self.changed = true;
        flush(self)?;
        Ok(moved)
    }

    /// A flush without the housekeeping after it (no compaction round), for the moves at
    /// open: compaction reads the records through the index, which does not hold them all
    /// yet.
    fn flush_only(&mut self) -> Result<(), BufferError> {
        let outcome = match self.prepare_flush()? {
            Some(job) => job.run(),
            None => Ok(0),
        };
        let retiring = std::mem::take(&mut self.retiring);
        match outcome {
            Ok(_) => {
                self.segments.delete(retiring);
                Ok(())
            }
            Err(e) => {
                self.segments.keep(retiring);
                self.changed = true;
                if let BufferError::SyncFailed(why) = &e {
                    self.sync_failed = Some(why.clone());
                }
                Err(e)
            }
        }
    }

    /// Move the records of a database written before the bodies left sled (tree `records`)
    /// into segments and pointers, [`MOVE_BATCH`] at a time: a batch is inserted and flushed,
    /// then its keys leave the old tree and that is flushed too; at the end the empty tree is
    /// dropped. A crash or an error keeps every batch moved before it; the batch in progress
    /// is still in the old tree and is moved again, over the same sequence numbers (no
    /// duplicates). The flush per batch also bounds the segments' open files. `progress`
    /// gets the number of records moved so far after each batch.
    pub(super) fn upgrade(&mut self, progress: impl FnMut(u64)) -> Result<(), BufferError> {
        let Some(old) = self.old_records()? else {
            return Ok(());
        };
        let mut taken = 0usize;
        let step = |s: &mut Self, k: &[u8], v: &[u8]| {
            if taken.is_multiple_of(MOVE_BATCH) {
                s.room_left()?;
            }
            taken += 1;
            let Some(seq) = seq_of(k) else {
                return Ok(false);
            };
            // Dropped: it leaves the old tree with its batch.
            if s.drops_too_large(seq, v.len()) {
                return Ok(false);
            }
            s.insert(seq, v.to_vec())?;
            Ok(true)
        };
        let flush = |s: &mut Self| s.flush().map(drop);
        let moved = self.move_old_tree(old, MOVE_BATCH, step, flush, progress)?;
        if moved > 0 {
            log::info!(
                "buffer: moved {moved} record(s) to the new layout (bodies in segment files)"
            );
        }
        Ok(())
    }

    /// The upgrade writes each body again, into segment files, and sled's files do not shrink
    /// as the old tree empties: it needs room for all of the bodies at once. A disk without
    /// it is refused before anything moves, saying how much to free: a move started anyway
    /// fills the disk to its last byte, and then sled cannot even open the database at the
    /// next start (nor `hubgate buffer` read it), at every restart.
    pub(super) fn room_to_upgrade(&self) -> Result<(), BufferError> {
        let Some(old) = self.old_records()? else {
            return Ok(());
        };
        let Some(free) = self.disk_free() else {
            return Ok(());
        };
        let (mut records, mut bytes) = (0u64, 0u64);
        for value in old.iter().values() {
            let len = value.map_err(err)?.len() as u64;
            records += 1;
            // One over the largest value is dropped, not moved.
            if len <= u64::from(MAX_VALUE) {
                bytes += len + super::segments::HEADER as u64;
            }
            if records.is_multiple_of(COUNT_NOTIFY_EVERY) {
                crate::notify::extend_start(
                    BATCH_ALLOWANCE,
                    &format!("counting the buffer's records of an earlier layout: {records}"),
                );
            }
        }
        let needed = bytes + bytes / 16 + UPGRADE_MARGIN;
        if free >= needed {
            return Ok(());
        }
        Err(BufferError::Storage(format!(
            "{}: {records} record(s) of an earlier release's layout ({}) move into segment \
             files at this start, which needs {} free on the disk, and it has {}: nothing was \
             moved. Free {} (or move the buffer to a larger disk) and start hubgate again",
            self.dir.display(),
            human(bytes),
            human(needed),
            human(free),
            human(needed - free)
        )))
    }

    /// Before each batch of the upgrade: [`UPGRADE_LEFT`] is still free on the disk.
    fn room_left(&self) -> Result<(), BufferError> {
        match self.disk_free() {
            Some(free) if free < UPGRADE_LEFT => Err(BufferError::Storage(format!(
                "the disk has {} left, less than the {} the move keeps free: free more room",
                human(free),
                human(UPGRADE_LEFT)
            ))),
            _ => Ok(()),
        }
    }

    /// Whether record `seq` of an old layout, `len` bytes, is over the largest value a
    /// segment holds ([`MAX_VALUE`]; the old tree had no such cap). No layout of this release
    /// holds it, and moving it would fail every open: it is dropped, with a warning, and
    /// counted as the buffer counts a record too large for it (`buffer_full`).
    pub(super) fn drops_too_large(&mut self, seq: u64, len: usize) -> bool {
        if len <= MAX_VALUE as usize {
            return false;
        }
        log::warn!(
            "buffer: record #{seq} of the old layout ({len} bytes) is over the largest the \
             buffer holds ({MAX_VALUE}): dropped (reason buffer_full)"
        );
        self.too_large += 1;
        true
    }
}

/// Layout 1's tree of pointers, if the database has one (see [`SledStore::group`]).
pub(super) fn old_pointers(db: &sled::Db) -> sled::Result<Option<sled::Tree>> {
    if !db.tree_names().iter().any(|n| n == POINTERS.as_bytes()) {
        return Ok(None);
    }
    db.open_tree(POINTERS).map(Some)
}

/// Reports the progress of a move at open to systemd (its start goes on) and, every
/// [`UPGRADE_LOG_EVERY`] batches, to the log.
pub(super) fn move_progress() -> impl FnMut(u64) {
    let mut batches = 0u64;
    move |moved: u64| {
        crate::notify::extend_start(
            BATCH_ALLOWANCE,
            &format!("moving the buffer to the new layout: {moved} record(s) moved"),
        );
        batches += 1;
        if batches.is_multiple_of(UPGRADE_LOG_EVERY) {
            log::info!("buffer: moving the records to the new layout: {moved} moved so far");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::index::{self, Index};
    use super::super::mark::Mark;
    use super::super::sled_store::{open_db, DB_DIR, LAYOUT_KEY, MARK_FILE, MARK_KEY};
    use super::super::test_support::{
        assert_current_layout, body_of, buffer_of, fill_with, flushed_store, moved, seqs,
        with_disk_free, write_out,
    };
    use super::*;
    use std::path::Path;

    /// A database written before the bodies left sled: its records in tree `records`.
    fn old_layout(dir: &Path, n: u64) {
        let db = sled::open(dir.join(DB_DIR)).unwrap();
        let records = db.open_tree(OLD_RECORDS).unwrap();
        for seq in 0..n {
            records
                .insert(seq.to_be_bytes(), vec![seq as u8; 100 + seq as usize])
                .unwrap();
        }
        db.open_tree("dead_letter")
            .unwrap()
            .insert(n.to_be_bytes(), vec![1; 10])
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(MARK_KEY, &n.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }

    fn check_upgraded(s: &SledStore, n: u64) {
        let bytes: u64 = (0..n).map(|seq| 100 + seq).sum();
        assert_eq!(s.usage(), (n, bytes));
        let all = s.scan(None, 1000).unwrap();
        assert_eq!(all.len() as u64, n);
        for (seq, body) in all {
            assert_eq!(body, vec![seq as u8; 100 + seq as usize]);
        }
        assert_eq!(s.dead_letters(), 1);
        assert_eq!(s.last_seq(), Some(n));
        assert!(!s.db.tree_names().iter().any(|t| t == OLD_RECORDS));
    }

    #[test]
    fn an_old_database_is_upgraded_once_even_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        old_layout(dir.path(), 300);
        let s = SledStore::open(dir.path()).unwrap();
        check_upgraded(&s, 300);
        assert_eq!(s.segments.files(), vec![1]);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        check_upgraded(&s, 300);
        drop(s);
        // A crash before the old tree's drop was durable: it is back, whole, beside the
        // pointers and their segment; and a torn segment of an upgrade cut short.
        old_layout(dir.path(), 300);
        let values = dir
            .path()
            .join(DB_DIR)
            .join(super::super::segments::VALUES_DIR);
        std::fs::write(values.join("00000002.seg"), b"torn").unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        check_upgraded(&s, 300);
        assert_eq!(
            s.segments.files(),
            vec![2],
            "the first upgrade's segment went, the torn one's number is used again"
        );
        assert_eq!(moved(), 0);
    }

    thread_local! {
        /// The upgrade fails once this many batches are moved, with the next one inserted
        /// but not flushed.
        static UPGRADE_FAILS_AFTER: std::cell::Cell<Option<u32>> =
            const { std::cell::Cell::new(None) };
    }

    pub(super) fn upgrade_may_fail() -> Result<(), BufferError> {
        UPGRADE_FAILS_AFTER.with(|f| match f.get() {
            Some(0) => Err(BufferError::Storage("injected upgrade failure".into())),
            Some(n) => {
                f.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        })
    }

    /// An upgrade that fails part-way fails the open (records left in the old tree would be
    /// neither counted nor delivered), keeps the batches it moved, and the next open moves
    /// the rest: every record once.
    #[test]
    fn a_failed_upgrade_fails_the_open_and_the_next_one_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let batch = MOVE_BATCH as u64;
        let n = 2 * batch + 100;
        old_layout(dir.path(), n);
        UPGRADE_FAILS_AFTER.with(|f| f.set(Some(1)));
        let e = SledStore::open(dir.path())
            .err()
            .expect("a failed upgrade fails the open");
        UPGRADE_FAILS_AFTER.with(|f| f.set(None));
        assert!(e.to_string().contains("injected upgrade failure"), "{e}");
        {
            let db = open_db(&dir.path().join(DB_DIR)).unwrap();
            let old = db.open_tree(OLD_RECORDS).unwrap();
            assert_eq!(
                old.len() as u64,
                n - batch,
                "the first batch left the old tree"
            );
            let first = old.first().unwrap().unwrap().0;
            assert_eq!(seq_of(&first), Some(batch));
        }
        let s = SledStore::open(dir.path()).unwrap();
        check_upgraded(&s, n);
        assert_eq!(moved(), 0);
    }

    /// A database of layout 1: records `0..n` ([`body_of`]) flushed, their pointers in the
    /// old tree (a sled entry per record), none in the index, the layout key at 1.
    fn layout_one(dir: &Path, n: u64) {
        let mut s = flushed_store(dir, 0..n, body_of);
        back_to_layout_one(&mut s);
    }

    /// `f` run on the database in `dir` (closed) and its layout-1 tree, then written out.
    fn in_layout_one(dir: &Path, f: impl FnOnce(&sled::Db, &sled::Tree)) {
        let db = open_db(&dir.join(DB_DIR)).unwrap();
        let old = db.open_tree(POINTERS).unwrap();
        f(&db, &old);
        db.flush().unwrap();
    }

    /// `s`'s pointers moved from the index into the old tree, the layout key at 1, written
    /// out as at a close.
    fn back_to_layout_one(s: &mut SledStore) {
        let old = s.db.open_tree(POINTERS).unwrap();
        for (seq, p) in s.index.scan(None, usize::MAX).unwrap() {
            old.insert(seq.to_be_bytes(), &p.to_bytes()).unwrap();
        }
        s.index.clear().unwrap();
        s.state_set(LAYOUT_KEY, &1u32.to_be_bytes()).unwrap();
        write_out(s);
    }

    /// `s` holds the records of [`layout_one`] whole, in the index only, at this release's
    /// layout.
    fn check_grouped(s: &SledStore, n: u64) {
        let bytes: u64 = (0..n).map(|seq| body_of(seq).len() as u64).sum();
        assert_eq!(s.usage(), (n, bytes));
        let all = s.scan(None, n as usize + 1).unwrap();
        assert_eq!(all.len() as u64, n);
        for (seq, body) in all {
            assert_eq!(body, body_of(seq), "#{seq}");
        }
        assert_eq!(s.last_seq(), Some(n - 1));
        assert!(
            old_pointers(&s.db).unwrap().is_none(),
            "the old tree is gone"
        );
        assert_current_layout(&s.state);
    }

    /// A layout-1 pointer with a length no segment entry has (over [`MAX_VALUE`]) is one
    /// damaged record at the move, as one that is not 12 bytes is: the others are moved
    /// into its group, counted, read and kept by the next open with their segment.
    #[test]
    fn a_bad_length_in_layout_one_is_one_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        layout_one(dir.path(), 10);
        in_layout_one(dir.path(), |_, old| {
            let at = old.get(5u64.to_be_bytes()).unwrap().unwrap();
            let mut p = Pointer::from_bytes(&at).unwrap();
            p.len = MAX_VALUE + 1;
            old.insert(5u64.to_be_bytes(), &p.to_bytes()).unwrap();
        });
        let want: Vec<u64> = (0..10).filter(|&seq| seq != 5).collect();
        let bytes: u64 = want.iter().map(|&seq| body_of(seq).len() as u64).sum();
        for open in 0..2 {
            let s = SledStore::open(dir.path()).unwrap();
            assert!(!s.moved_aside_at_open(), "open {open}");
            assert_eq!(s.usage(), (9, bytes), "open {open}");
            let all = s.scan(None, 20).unwrap();
            assert_eq!(all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), want);
            for (seq, body) in all {
                assert_eq!(body, body_of(seq), "open {open}: #{seq}");
            }
        }
    }

    /// The move's flushes write no mark: records whose pointers reached sled after the last
    /// flush (#10, #11, mark file at #9) are checked and synced after the move, and only
    /// the open's first flush after that covers them.
    #[test]
    fn the_move_does_not_mark_unflushed_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = flushed_store(dir.path(), 0..10, body_of);
            fill_with(&mut s, 10..12, body_of);
            back_to_layout_one(&mut s);
            assert_eq!(s.marked(), Some(9));
        }
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.marked(),
            Some(9),
            "the open's move marked #10, #11 as flushed"
        );
        assert_eq!(s.stored_mark(), Some(9));
        assert!(old_pointers(&s.db).unwrap().is_none());
        assert_eq!(seqs(&s, None), (0..12).collect::<Vec<_>>());
        s.flush().unwrap();
        assert_eq!(s.marked(), Some(11));
    }

    /// A database of layout 2 (0.3.0's), its groups in the index's first format with gaps
    /// in their runs, needs no move: the open marks it 3, reads every record in order from
    /// the groups as they are, and a group is written in the new format once it changes.
    #[test]
    fn a_layout_two_database_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let gone = |seq: &u64| *seq == 5 || (300..310).contains(seq);
        let want: Vec<u64> = (0..700).filter(|seq| !gone(seq)).collect();
        {
            let mut s = flushed_store(dir.path(), 0..700, body_of);
            for seq in (0..700).filter(gone) {
                s.remove(seq).unwrap();
            }
            s.flush().unwrap();
            let groups = s.db.open_tree(index::TREE).unwrap();
            for entry in groups.iter() {
                let (k, v) = entry.unwrap();
                let (_, group) = index::decode(&k, &v).unwrap();
                groups.insert(k, index::format_one(&group)).unwrap();
            }
            s.state_set(LAYOUT_KEY, &2u32.to_be_bytes()).unwrap();
            write_out(&mut s);
        }
        let formats = |s: &SledStore| -> Vec<u8> {
            let groups = s.db.open_tree(index::TREE).unwrap();
            groups.iter().map(|e| e.unwrap().1[0]).collect()
        };
        let bytes: u64 = want.iter().map(|&seq| body_of(seq).len() as u64).sum();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert!(!s.moved_aside_at_open());
        assert_eq!(moved(), 0);
        assert_current_layout(&s.state);
        assert_eq!(formats(&s), [1, 1, 1]);
        assert_eq!(s.usage(), (want.len() as u64, bytes));
        let all = s.scan(None, 1000).unwrap();
        assert_eq!(all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), want);
        for (seq, body) in all {
            assert_eq!(body, body_of(seq), "#{seq}");
        }
        s.remove(256).unwrap();
        s.flush().unwrap();
        assert_eq!(formats(&s), [1, 2, 1]);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_current_layout(&s.state);
        assert_eq!(formats(&s), [1, 2, 1]);
        let left: Vec<u64> = want.into_iter().filter(|&seq| seq != 256).collect();
        assert_eq!(seqs(&s, None), left);
    }

    /// A database of layout 1 has its pointers moved into groups at open, a batch at a
    /// time. A move cut short (here an error after the first batch, with the second in the
    /// index but still in the old tree too) fails the open; the next goes on, and each record
    /// is there once. An older release refuses the database from the first batch on.
    #[test]
    fn a_layout_one_database_is_grouped_even_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let batch = GROUP_BATCH as u64;
        let n = 2 * batch + 300;
        layout_one(dir.path(), n);
        let values = dir
            .path()
            .join(DB_DIR)
            .join(super::super::segments::VALUES_DIR);
        let segments = std::fs::read_dir(&values).unwrap().count();
        UPGRADE_FAILS_AFTER.with(|f| f.set(Some(1)));
        let e = SledStore::open(dir.path())
            .err()
            .expect("a move cut short fails the open");
        UPGRADE_FAILS_AFTER.with(|f| f.set(None));
        let e = e.to_string();
        assert!(e.contains("into groups failed"), "{e}");
        assert!(e.contains("injected upgrade failure"), "{e}");
        in_layout_one(dir.path(), |db, old| {
            assert_eq!(
                old.len() as u64,
                n - batch,
                "the first batch left the old tree"
            );
            assert_eq!(seq_of(&old.first().unwrap().unwrap().0), Some(batch));
            let index = Index::open(db).unwrap();
            assert_eq!(index.first().unwrap(), Some(0));
            assert_eq!(index.last().unwrap(), Some(2 * batch - 1), "in both trees");
            assert_current_layout(&db.open_tree("state").unwrap());
        });
        let s = SledStore::open(dir.path()).unwrap();
        check_grouped(&s, n);
        assert_eq!(moved(), 0);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        check_grouped(&s, n);
        let now = std::fs::read_dir(&values).unwrap().count();
        assert_eq!(now, segments, "the bodies stay where they are");
    }

    /// A database of layout 1 that lost flushed writes: the salvage carries what its old
    /// tree names, and the bodies past the mark sled kept from the segments.
    #[test]
    fn a_layout_one_database_that_lost_records_is_salvaged_whole() {
        let dir = tempfile::tempdir().unwrap();
        layout_one(dir.path(), 600);
        in_layout_one(dir.path(), |db, old| {
            for seq in 590..600u64 {
                old.remove(seq.to_be_bytes()).unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert(MARK_KEY, &589u64.to_be_bytes())
                .unwrap();
        });
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        check_grouped(&s, 600);
    }

    /// The upgrade reports its progress after every batch (the open tells systemd the
    /// start goes on with each).
    #[test]
    fn the_upgrade_reports_each_batch() {
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * MOVE_BATCH as u64 + 100;
        old_layout(dir.path(), n);
        let mut s = SledStore::open_at(&dir.path().join(DB_DIR)).unwrap();
        let mut seen = Vec::new();
        s.upgrade(|moved| seen.push(moved)).unwrap();
        assert_eq!(seen, vec![256, 512, n]);
        check_upgraded(&s, n);
    }

    /// The move into groups reports its progress after every batch, as the upgrade does.
    #[test]
    fn the_move_into_groups_reports_each_batch() {
        let dir = tempfile::tempdir().unwrap();
        let batch = GROUP_BATCH as u64;
        let n = 2 * batch + 100;
        layout_one(dir.path(), n);
        let mut s = SledStore::open_at(&dir.path().join(DB_DIR)).unwrap();
        s.mark_layout().unwrap();
        let mut seen = Vec::new();
        s.group(|moved| seen.push(moved)).unwrap();
        assert_eq!(seen, vec![batch, 2 * batch, n]);
        check_grouped(&s, n);
    }

    /// An old database that lost flushed records is salvaged with what its old tree holds.
    #[test]
    fn an_old_database_that_lost_records_is_salvaged_whole() {
        let dir = tempfile::tempdir().unwrap();
        old_layout(dir.path(), 300);
        let mut mark = Mark::open(&dir.path().join(DB_DIR).join(MARK_FILE)).unwrap();
        mark.set(400).unwrap();
        drop(mark);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        assert_eq!(s.last_seq(), Some(400));
        let bytes: u64 = (0..300).map(|seq| 100 + seq).sum();
        assert_eq!(s.usage(), (300, bytes));
        assert_eq!(s.scan(Some(298), 1).unwrap(), vec![(299, vec![43; 399])]);
    }

    /// An old layout of 4 records whose #1 is over the largest value a segment holds (the old
    /// tree had no cap). Few: sled reads the leaf holding it, whole, at each access.
    fn old_layout_with_one_too_large(dir: &Path) {
        old_layout(dir, 4);
        // sled lets go of the lock some time after `old_layout`'s handle is dropped.
        let db = open_db(&dir.join(DB_DIR)).unwrap();
        db.open_tree(OLD_RECORDS)
            .unwrap()
            .insert(1u64.to_be_bytes(), vec![7; MAX_VALUE as usize + 1])
            .unwrap();
        db.flush().unwrap();
    }

    /// The records of [`old_layout_with_one_too_large`] but #1, in order.
    fn check_upgraded_but_the_large_one(s: &SledStore) {
        let expected: Vec<(u64, Vec<u8>)> = [0, 2, 3]
            .into_iter()
            .map(|seq| (seq, vec![seq as u8; 100 + seq as usize]))
            .collect();
        assert_eq!(s.scan(None, 1000).unwrap(), expected);
        assert!(!s.db.tree_names().iter().any(|t| t == OLD_RECORDS));
    }

    /// An old layout's record over the largest value does not fail the upgrade, which would
    /// fail every open (systemd restarting hubgate into the same failure): no layout of
    /// this release holds it, so it is dropped, with a warning naming it, and counted as a
    /// record too large for the buffer; the others are moved in order, and the next open is
    /// clean.
    #[test]
    fn an_old_record_too_large_for_a_segment_is_dropped_and_counted_at_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        old_layout_with_one_too_large(dir.path());
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 0);
        check_upgraded_but_the_large_one(&s);
        assert_eq!(s.last_seq(), Some(4));
        let (b, m) = buffer_of(dir.path(), s);
        assert_eq!(m.dropped_full.get(), 1);
        drop(b);
        let s = SledStore::open(dir.path()).unwrap();
        check_upgraded_but_the_large_one(&s);
        let (_b, m) = buffer_of(dir.path(), s);
        assert_eq!(m.dropped_full.get(), 0);
    }

    /// A salvage of such an old layout drops and counts it the same way, carrying the
    /// others.
    #[test]
    fn an_old_record_too_large_for_a_segment_is_dropped_and_counted_by_a_salvage() {
        let dir = tempfile::tempdir().unwrap();
        old_layout_with_one_too_large(dir.path());
        let mut mark = Mark::open(&dir.path().join(DB_DIR).join(MARK_FILE)).unwrap();
        mark.set(400).unwrap();
        drop(mark);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "no salvage");
        check_upgraded_but_the_large_one(&s);
        let (_b, m) = buffer_of(dir.path(), s);
        assert_eq!(m.dropped_full.get(), 1);
    }

    /// The upgrade wants room for every body again, a sixteenth of them and 4 MiB more:
    /// with a byte less free, the open is refused before anything moves, counting the
    /// records; with that room, every record moves.
    #[test]
    fn an_upgrade_wants_room_for_every_body_again_and_4_mib() {
        let n = 300;
        let bytes: u64 = (0..n).map(|seq| 100 + seq + 12).sum();
        let needed = bytes + bytes / 16 + (4 << 20);
        let dir = tempfile::tempdir().unwrap();
        old_layout(dir.path(), n);
        let e = with_disk_free(needed - 1, || SledStore::open(dir.path()))
            .err()
            .expect("refused");
        let e = e.to_string();
        assert!(
            e.contains(&format!("{n} record(s) of an earlier release's layout"))
                && e.contains("nothing was moved"),
            "{e}"
        );
        {
            let db = open_db(&dir.path().join(DB_DIR)).unwrap();
            assert_eq!(db.open_tree(OLD_RECORDS).unwrap().len() as u64, n);
        }
        let s = with_disk_free(needed, || SledStore::open(dir.path())).unwrap();
        check_upgraded(&s, n);
    }

    /// A batch of the move starts only with 4 MiB left on the disk: with a byte less, the
    /// move stops before it, the records still in the old tree.
    #[test]
    fn a_batch_of_the_upgrade_starts_only_with_4_mib_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        let old = s.db.open_tree(OLD_RECORDS).unwrap();
        for seq in 0..3u64 {
            old.insert(seq.to_be_bytes(), vec![seq as u8; 10]).unwrap();
        }
        let e = with_disk_free((4 << 20) - 1, || s.upgrade(|_| {})).unwrap_err();
        assert!(e.to_string().contains("the move keeps free"), "{e}");
        assert_eq!((old.len(), s.usage()), (3, (0, 0)));
        with_disk_free(4 << 20, || s.upgrade(|_| {})).unwrap();
        assert_eq!(s.usage(), (3, 30));
    }
}
