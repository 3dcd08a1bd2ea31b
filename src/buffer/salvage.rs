//! Salvaging a database that lost flushed writes, and the databases moved aside.
//!
//! A database whose stored mark is below the mark file's (sled lost writes it had flushed),
//! or whose index holds a group that does not decode, is moved aside and what it still holds
//! is carried into a fresh one ([`SledStore::salvage`]): its pointers, an old layout's
//! records, and the bodies in its segments that no pointer names any more. Once the fresh
//! one is durable, the one moved aside goes if nothing more could be read from it; if not,
//! it is kept for `hubgate buffer recover`, as is a database that would not open at all,
//! and [`kept_aside`] reports them, with those a downgrade left, for the log and
//! `hubgate doctor`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::segments::Pointer;
use super::sled_store::{seq_of, with_suffix, SledStore, BATCH_ALLOWANCE, DB_DIR};
use super::upgrade::{old_pointers, MOVE_BATCH};
use super::{BufferError, Store};

impl SledStore {
    /// The database lost writes that had been flushed: move it aside, carry what it still
    /// holds into a fresh one, and say so loudly. Once the fresh one is durable, the one
    /// moved aside goes if nothing more could be read from it (see [`discard`]): each power
    /// cut on a card that lies about its syncs would otherwise leave a whole buffer's copy
    /// on the disk. It runs before READY=1:
    /// each batch carried and each segment read tells systemd the start goes on.
    pub(super) fn salvage(
        mut self,
        stored: Option<u64>,
        flushed: Option<u64>,
    ) -> Result<SledStore, BufferError> {
        let aside = move_aside(&self.dir)?;
        // Before the work: a salvage cut short (killed, failed) leaves the records not yet
        // carried only in the database moved aside, and this line says where.
        let what = if self.index.damaged() {
            "holds index entries that do not decode".to_string()
        } else {
            let at = |mark: Option<u64>| mark.map_or("nothing".to_string(), |s| format!("#{s}"));
            format!(
                "lost records it had flushed (it ends at {}, hubgate had flushed up to {})",
                at(stored),
                at(flushed),
            )
        };
        log::error!(
            "buffer database {} {what}: the file was truncated or damaged. It was moved to {}; \
             carrying what it still holds into a fresh database",
            self.dir.display(),
            aside.display()
        );
        self.segments.moved_to(&aside);
        let mut fresh = Self::open_at(&self.dir)?;
        fresh.lock = self.lock.take();
        fresh.moved_aside = true;
        // Before any group: each batch carried is flushed, and an older release must refuse
        // a salvage cut short rather than take its groups for damage.
        fresh.mark_layout()?;
        // No sequence number up to `flushed` is handed out again, whichever flush is last.
        fresh.highest = fresh.highest.max(flushed);
        // The state and the dead letters first, durable with the first batch of records: a
        // salvage cut short leaves a database the next start opens as it is, and records
        // carried without the clock's steps would count a step of the clock before them in
        // their age (the drain dropping them as expired), and those without the frame
        // counters let copies through. `whole`: whether everything `hubgate buffer recover`
        // could take from the aside was read here: then the aside holds nothing more and goes
        // once the fresh one is durable.
        let mut dead = 0u64;
        let mut whole = each_readable(&self.dead, |k, v| {
            if let Some(seq) = seq_of(&k) {
                fresh.dead_letter(seq, v.to_vec())?;
                dead += 1;
            }
            Ok(())
        })?;
        whole &= each_readable(&self.state, |k, v| fresh.state_set(&k, &v))?;
        fresh.carry_far_counters(&aside)?;
        let (mut kept, mut written) = (0u64, 0u64);
        // Records whose pointers name no body: compaction may have copied it to a segment
        // after the pointer sled went back to (its original deleted), so they are looked
        // for in the segments too.
        let mut unreadable = BTreeSet::new();
        // A flush every batch bounds the segments' open files.
        let mut carry = |fresh: &mut SledStore, seq: u64, body: Vec<u8>| {
            fresh.insert(seq, body)?;
            written += 1;
            if written % MOVE_BATCH as u64 == 0 {
                fresh.flush()?;
                crate::notify::extend_start(
                    BATCH_ALLOWANCE,
                    &format!("salvaging the buffer: {written} record(s) carried"),
                );
            }
            Ok::<(), BufferError>(())
        };
        let mut pointed = |fresh: &mut SledStore, seq: u64, p: Pointer| {
            match self.body(seq, p) {
                Ok(body) => {
                    carry(fresh, seq, body)?;
                    kept += 1;
                }
                Err(_) => {
                    unreadable.insert(seq);
                }
            }
            Ok::<(), BufferError>(())
        };
        let mut after = None;
        loop {
            let Ok(page) = self.index.scan(after, MOVE_BATCH) else {
                whole = false;
                break;
            };
            let Some(&(last, _)) = page.last() else {
                break;
            };
            after = Some(last);
            for (seq, p) in page {
                pointed(&mut fresh, seq, p)?;
            }
        }
        // The records of a damaged group are carried from the segments below; which of
        // them the group held is lost, so the copy moved aside stays for `buffer recover`.
        if self.index.damaged() {
            whole = false;
        }
        // Layout 1's pointers, those not moved into the index yet.
        let pointers = old_pointers(&self.db).unwrap_or_else(|e| {
            log::error!("buffer: reading the pointers of {}: {e}", aside.display());
            whole = false;
            None
        });
        // A record whose old pointer does not read names no body: its body is looked for in
        // the segments, as that of one whose pointer names no body.
        let mut bad_pointers = Vec::new();
        if let Some(pointers) = &pointers {
            whole &= each_readable(pointers, |k, v| {
                let Some(seq) = seq_of(&k) else {
                    return Ok(());
                };
                if self.index.contains(seq).unwrap_or(false) {
                    return Ok(());
                }
                match Pointer::from_bytes(&v) {
                    Some(p) => pointed(&mut fresh, seq, p)?,
                    None => bad_pointers.push(seq),
                }
                Ok(())
            })?;
        }
        unreadable.extend(bad_pointers);
        // A database an earlier release wrote: its records are in the old tree.
        let old = self.old_records().unwrap_or_else(|e| {
            // Its records are only there: the copy moved aside stays for `buffer recover`.
            log::error!(
                "buffer: reading the old records of {}: {e}",
                aside.display()
            );
            whole = false;
            None
        });
        if let Some(old) = &old {
            whole &= each_readable(old, |k, v| {
                if let Some(seq) = seq_of(&k) {
                    if !fresh.drops_too_large(seq, v.len()) {
                        carry(&mut fresh, seq, v.to_vec())?;
                        kept += 1;
                    }
                }
                Ok(())
            })?;
        }
        // The bodies of the records whose pointers sled lost are still in the segments
        // (synced before sled's flush): every whole entry whose sequence number is past the
        // last mark sled holds, up to the mark file's, and that no pointer names. A record
        // delivered in that range comes again (a duplicate), rather than one acknowledged
        // being lost.
        // So are those of a group that does not decode, at any number: a record delivered
        // before comes again, rather than one acknowledged being lost.
        let lost = |seq: u64| {
            flushed.is_some_and(|f| stored.is_none_or(|s| seq > s) && seq <= f)
                || self.index.in_damaged(seq)
        };
        // A dead letter is not carried as a record too: the sink refused it for good.
        let named = |seq: u64| {
            let key = seq.to_be_bytes();
            // A tree that fails to answer: carried all the same, a duplicate at worst.
            self.index.contains(seq).unwrap_or(false)
                || pointers
                    .as_ref()
                    .is_some_and(|t| t.contains_key(key).unwrap_or(false))
                || self.dead.contains_key(key).unwrap_or(false)
                || old
                    .as_ref()
                    .is_some_and(|t| t.contains_key(key).unwrap_or(false))
        };
        let (mut found, mut recovered) = (BTreeSet::new(), BTreeSet::new());
        match self.segments.numbers_as_written() {
            Ok(numbers) => {
                for (i, &number) in numbers.iter().enumerate() {
                    // As `hubgate buffer recover` reads it: on past a damaged entry (a card
                    // that lost a page mid-segment), a failed read narrowed to its blocks.
                    let (entries, failed) =
                        match self.segments.scan(number, |v| super::decode(v).is_ok()) {
                            Ok(found) => (found.entries, found.failed),
                            Err(e) => (Vec::new(), Some(e.to_string())),
                        };
                    if let Some(e) = failed {
                        log::error!(
                            "buffer: reading segment {number} of {}: {e}",
                            aside.display()
                        );
                        whole = false;
                    }
                    crate::notify::extend_start(
                        BATCH_ALLOWANCE,
                        &format!(
                            "salvaging the buffer: segment {} of {} read",
                            i + 1,
                            numbers.len()
                        ),
                    );
                    for (seq, body) in entries {
                        // A number can have two whole copies when a run handed out again
                        // one appended before a crash without its pointer: a database an
                        // earlier release wrote, or a segment the open could not read
                        // (`highest_appended`). The copy written last is the one handed
                        // out again, acknowledged: it takes the place of any carried before.
                        let copy = unreadable.contains(&seq);
                        // Past the mark file: not acknowledged, unless the card lied about
                        // the mark's sync as it did about sled's; not carried, so the copy
                        // moved aside stays for `buffer recover`.
                        if !copy && flushed.is_none_or(|f| seq > f) && !named(seq) && !lost(seq) {
                            whole = false;
                        }
                        if copy || lost(seq) && !named(seq) {
                            carry(&mut fresh, seq, body)?;
                            let first = if copy {
                                recovered.insert(seq)
                            } else {
                                found.insert(seq)
                            };
                            if first {
                                kept += 1;
                            }
                        }
                    }
                }
            }
            Err(e) => {
                log::error!("buffer: listing the segments of {}: {e}", aside.display());
                whole = false;
            }
        }
        let buffer_dir = self.buffer_dir().to_path_buf();
        drop(self);
        fresh.flush()?;
        let left = if !whole {
            format!(
                "not everything in it could be read, so it is kept at {}: with hubgate \
                 stopped, `hubgate buffer recover {}` carries what it can read of it (records \
                 carried already come twice), then remove it",
                aside.display(),
                aside.display()
            )
        } else {
            match discard(&aside, &buffer_dir) {
                Ok(()) => "it held nothing more and was removed".to_string(),
                Err(e) => format!(
                    "it holds nothing more but {} could not be removed ({e}): remove it",
                    aside.display()
                ),
            }
        };
        log::error!(
            "buffer: salvage done: carried {kept} record(s) and {dead} dead letter(s) into a fresh \
             database; {} record(s) had no readable body and are gone; {}. The database moved \
             aside: {left}",
            unreadable.len() - recovered.len(),
            from_segments(stored, flushed, found.len()),
        );
        Ok(fresh)
    }
}

/// What a salvage carried from the segments for want of pointers: of the numbers past the
/// mark sled still held (`stored`), up to the mark file's (`flushed`), and of the damaged
/// index entries; with no mark at all, only the latter.
fn from_segments(stored: Option<u64>, flushed: Option<u64>, found: usize) -> String {
    match flushed {
        Some(f) => format!(
            "of the {} sequence number(s) past the mark the database still held, and those of \
             damaged index entries, {found} had a body in the segments and were carried, the \
             others were delivered before or are gone",
            stored.map_or(f.saturating_add(1), |s| f - s)
        ),
        None => format!(
            "there was no mark; of the records of damaged index entries, {found} had a body in \
             the segments and were carried"
        ),
    }
}

/// Remove `aside`, a database moved aside that a salvage read all of into the fresh one
/// beside it in `buffer_dir`. The fresh one's entry in `buffer_dir` is made durable first,
/// and `aside` renamed to `sled.salvaged` before it is removed: a power cut mid-removal
/// leaves no part of it under a `sled.broken-` name, to be taken for records still to
/// recover; the next open removes the rest ([`remove_salvaged`]).
fn discard(aside: &Path, buffer_dir: &Path) -> std::io::Result<()> {
    super::durable::sync_dir(buffer_dir)?;
    let gone = buffer_dir.join(SALVAGED_DIR);
    std::fs::rename(aside, &gone)?;
    super::durable::sync_dir(buffer_dir)?;
    std::fs::remove_dir_all(&gone)
}

/// Hand `each` every entry of `tree` sled can read, in key order; whether that was all of
/// them. sled's iterator answers every call after a read error with that error, never moving
/// on: past the first one, the keys are read from the end back to the next error, and the
/// entries from the lowest of them on, so only what lies between the two errors is left out
/// (in the copy moved aside). Only keys are held, one at a time.
fn each_readable(
    tree: &sled::Tree,
    mut each: impl FnMut(sled::IVec, sled::IVec) -> Result<(), BufferError>,
) -> Result<bool, BufferError> {
    let mut last = None;
    for entry in tree.iter() {
        let Ok((k, v)) = entry else {
            if let Some(lowest) = lowest_readable_from_the_end(tree, last.as_ref()) {
                for entry in tree.range::<&sled::IVec, _>(&lowest..) {
                    let Ok((k, v)) = entry else {
                        break;
                    };
                    each(k, v)?;
                }
            }
            return Ok(false);
        };
        last = Some(k.clone());
        each(k, v)?;
    }
    Ok(true)
}

/// The lowest key of `tree` above `after` that sled reads from the end back before an error.
fn lowest_readable_from_the_end(
    tree: &sled::Tree,
    after: Option<&sled::IVec>,
) -> Option<sled::IVec> {
    let mut lowest = None;
    for key in tree.iter().keys().rev() {
        match key {
            Ok(key) if after.is_none_or(|a| key > *a) => lowest = Some(key),
            _ => break,
        }
    }
    lowest
}

/// What is left of a database moved aside whose salvage was done, while it is removed.
const SALVAGED_DIR: &str = "sled.salvaged";

/// Remove what a power cut left of a salvaged database being removed (see [`discard`]).
pub(super) fn remove_salvaged(buffer_dir: &Path) {
    let gone = buffer_dir.join(SALVAGED_DIR);
    if gone.exists() {
        if let Err(e) = std::fs::remove_dir_all(&gone) {
            log::warn!("buffer: removing {}: {e}", gone.display());
        }
    }
}

/// Prefix of the name a database moved aside takes in the buffer directory.
const ASIDE_PREFIX: &str = "sled.broken-";
/// Prefix of the name the package's prerm gives the database when a downgrade goes to a
/// release that cannot read its layout: `sled.layout<N>-<time>` (docs/operations.md,
/// "Downgrading").
const DOWNGRADE_PREFIX: &str = "sled.layout";

/// What an operator does with the databases [`moved_aside`] lists.
const MOVED_ASIDE_ADVICE: &str =
    "with hubgate stopped, `hubgate buffer recover <dir>` takes their records back, then remove them";
/// What an operator does with the databases [`left_by_downgrade`] lists.
const DOWNGRADE_ADVICE: &str = "left by a downgrade to a release that could not read them: \
     their records go out once one is `sled` again, moved back with hubgate stopped and this \
     buffer drained and removed; remove them once nothing in them is wanted \
     (docs/operations.md, Downgrading)";

/// The databases moved aside and kept in `buffer_dir`, each with its size in bytes, oldest
/// name first: those that would not open at all (the only copy of their records) and those
/// whose salvage could not read everything. `hubgate buffer recover` takes their records
/// back; nothing removes them but the operator, so they are reported instead (the problem
/// `buffer_moved_aside`, `hubgate doctor`). A directory that cannot be listed is left out.
pub fn moved_aside(buffer_dir: &Path) -> Vec<(PathBuf, u64)> {
    named(buffer_dir, ASIDE_PREFIX)
}

/// The databases a downgrade's prerm moved aside in `buffer_dir` (see [`DOWNGRADE_PREFIX`]),
/// with their sizes, oldest first: nothing reads them until one is moved back, so they are
/// reported with those [`moved_aside`] lists.
fn left_by_downgrade(buffer_dir: &Path) -> Vec<(PathBuf, u64)> {
    named(buffer_dir, DOWNGRADE_PREFIX)
}

/// The directories in `buffer_dir` whose name starts with `prefix`, with their sizes, in
/// name order.
fn named(buffer_dir: &Path, prefix: &str) -> Vec<(PathBuf, u64)> {
    dirs_named(buffer_dir, prefix)
        .into_iter()
        .map(|p| {
            let bytes = bytes_in(&p);
            (p, bytes)
        })
        .collect()
}

/// The databases [`moved_aside`] lists, without reading what they hold.
pub(super) fn aside_dirs(buffer_dir: &Path) -> Vec<PathBuf> {
    dirs_named(buffer_dir, ASIDE_PREFIX)
}

/// The directories in `buffer_dir` whose name starts with `prefix`, in name order.
fn dirs_named(buffer_dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(list) = std::fs::read_dir(buffer_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = list
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The databases kept in `buffer_dir` outside the buffer, as one line for the log and
/// `hubgate doctor`: each named with its size as `size` writes it, then what to do with
/// it; `None` when there are none.
pub fn kept_aside(buffer_dir: &Path, size: impl Fn(u64) -> String) -> Option<String> {
    let parts: Vec<String> = [
        (moved_aside(buffer_dir), MOVED_ASIDE_ADVICE),
        (left_by_downgrade(buffer_dir), DOWNGRADE_ADVICE),
    ]
    .into_iter()
    .filter(|(kept, _)| !kept.is_empty())
    .map(|(kept, advice)| format!("{}: {advice}", listed(&kept, &size)))
    .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The directories systemd gives the agent for its state: those `STATE_DIRECTORY` names (set
/// by `StateDirectory=`), else, when `or_shipped`, the shipped unit's `/var/lib/hubgate`.
pub fn state_directories(or_shipped: bool) -> Vec<PathBuf> {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dirs) => std::env::split_paths(&dirs).collect(),
        None if or_shipped => vec![PathBuf::from("/var/lib/hubgate")],
        None => Vec::new(),
    }
}

/// The buffer databases in `state`, the agent's state directory, when it is not `buffer_dir`
/// (`buffer.path` was changed, a USB disk for the SD card): `sled`, and those moved aside
/// there. Nothing reads them, so their records are never sent; one line names each, with
/// its size as `size` writes it, and what to do, for the log at start and `hubgate doctor`;
/// `None` when there are none. Only listed, never opened: a count would take the
/// database's lock and may change it (a salvage, a move aside), and it may be another
/// agent's.
pub fn left_in_state_directory(
    buffer_dir: &Path,
    state: &Path,
    size: impl Fn(u64) -> String,
) -> Option<String> {
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(buffer_dir, state) {
        return None;
    }
    let sled = state.join(DB_DIR);
    let mut left: Vec<(PathBuf, u64)> = Vec::new();
    if sled.is_dir() {
        let bytes = bytes_in(&sled);
        left.push((sled, bytes));
    }
    left.extend(moved_aside(state));
    left.extend(left_by_downgrade(state));
    if left.is_empty() {
        return None;
    }
    Some(format!(
        "the state directory {} holds buffer databases that are not the buffer ({}, \
         buffer.path), so their records are not sent: {}; with hubgate stopped, `hubgate \
         buffer recover <dir>` carries them into the buffer (any already delivered come again), \
         then remove them, or set buffer.path back to {}",
        state.display(),
        buffer_dir.display(),
        listed(&left, &size),
        state.display()
    ))
}

/// Directories with their sizes as `size` writes them: `dir (size), …`.
fn listed(dirs: &[(PathBuf, u64)], size: &impl Fn(u64) -> String) -> String {
    let list: Vec<String> = (dirs.iter())
        .map(|(p, bytes)| format!("{} ({})", p.display(), size(*bytes)))
        .collect();
    list.join(", ")
}

/// Bytes of the files under `dir`, what can be read of it (symbolic links not followed).
fn bytes_in(dir: &Path) -> u64 {
    let Ok(list) = std::fs::read_dir(dir) else {
        return 0;
    };
    list.filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), e.file_type().ok()?)))
        .map(|(p, t)| {
            if t.is_dir() {
                bytes_in(&p)
            } else {
                std::fs::symlink_metadata(&p).map_or(0, |m| m.len())
            }
        })
        .sum()
}

#[cfg(test)]
thread_local! {
    /// Databases moved aside on this thread: how a test tells that a salvage ran, since
    /// one that read everything leaves no directory behind.
    pub(super) static MOVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(super) fn move_aside(dir: &Path) -> Result<PathBuf, BufferError> {
    let aside = aside_name(dir);
    std::fs::rename(dir, &aside)
        .map_err(|e| BufferError::Storage(format!("moving {} aside: {e}", dir.display())))?;
    #[cfg(test)]
    MOVED.with(|m| m.set(m.get() + 1));
    Ok(aside)
}

/// `sled.broken-<unix seconds>`, or with `-2`, `-3`, ... after it when that is taken: two
/// moves aside within a second (a salvage, then a database that will not open at the
/// restart) would otherwise meet on one name, and the rename fail the open. The buffer
/// lock keeps any other hubgate from taking the name meanwhile.
fn aside_name(dir: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let first = with_suffix(dir, &format!(".broken-{stamp}"));
    std::iter::once(first.clone())
        .chain((2u32..).map(|n| with_suffix(dir, &format!(".broken-{stamp}-{n}"))))
        .find(|p| p.symlink_metadata().is_err())
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::super::segments::MAX_VALUE;
    use super::super::sled_store::{open_db, LAYOUT_KEY, MARK_KEY};
    use super::super::test_support::{
        assert_current_layout, body_of, compacted_then_taken_back, fill_with, flushed_store,
        lose_pointers, make_the_blob_unreadable, moved, past_a_failing_tail, record, segment_of,
        seqs, three_flushed, without, write_out, CAP_FOWNER, QUARTER,
    };
    use super::super::upgrade::POINTERS;
    use super::*;
    use std::collections::BTreeMap;

    /// A salvage reads past such a torn tail: it carries every record, and the database
    /// moved aside goes, as nothing in it failed to read.
    #[test]
    fn a_salvage_reads_past_the_torn_tail_of_a_failed_append() {
        let dir = tempfile::tempdir().unwrap();
        past_a_failing_tail(dir.path());
        let mut all: Vec<u64> = (0..10).collect();
        all.extend(lose_the_last_ten(dir.path(), 0));
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "no salvage");
        assert_eq!(seqs(&s, None), all);
        assert_eq!(moved_aside(dir.path()), vec![]);
    }

    /// The salvage's line counts the numbers past sled's mark up to the mark file's, none when
    /// there is no mark at all (a damaged group at an open with neither), as it says.
    #[test]
    fn the_salvage_counts_past_the_mark_only_where_there_is_one() {
        let line = from_segments(Some(7), Some(9), 1);
        assert!(
            line.starts_with("of the 2 sequence number(s) past the mark"),
            "{line}"
        );
        assert!(line.contains(", 1 had a body"), "{line}");
        let line = from_segments(None, Some(4), 0);
        assert!(
            line.starts_with("of the 5 sequence number(s) past the mark"),
            "{line}"
        );
        assert_eq!(
            from_segments(None, None, 3),
            "there was no mark; of the records of damaged index entries, 3 had a body in the \
             segments and were carried"
        );
    }

    /// A salvage of a half-moved layout-1 database (#0..=#3 in the index, the rest in the old
    /// tree, sled's mark behind the mark file's) carries a record whose old pointer does not
    /// read (a length over [`MAX_VALUE`]) from its segment, whole: it is in the old tree, so
    /// only its body in the segments is left of it.
    #[test]
    fn a_salvage_carries_a_layout_one_record_whose_pointer_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = flushed_store(dir.path(), 0..10, body_of);
            let old = s.db.open_tree(POINTERS).unwrap();
            for (seq, mut p) in s.index.scan(None, usize::MAX).unwrap() {
                if seq < 4 {
                    continue;
                }
                if seq == 5 {
                    p.len = MAX_VALUE + 1;
                }
                old.insert(seq.to_be_bytes(), &p.to_bytes()).unwrap();
                s.index.remove(seq).unwrap();
            }
            s.state_set(LAYOUT_KEY, &1u32.to_be_bytes()).unwrap();
            s.meta.insert(MARK_KEY, &7u64.to_be_bytes()).unwrap();
            write_out(&mut s);
            assert_eq!(s.marked(), Some(9));
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.moved_aside_at_open());
        let bytes: u64 = (0..10).map(|seq| body_of(seq).len() as u64).sum();
        assert_eq!(s.usage(), (10, bytes));
        let all = s.scan(None, 20).unwrap();
        assert_eq!(
            all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        for (seq, body) in all {
            assert_eq!(body, body_of(seq), "#{seq}");
        }
    }

    /// A salvage of 400 records of about 3 KB (about 340 to a segment: the first flush, of
    /// 256 carried, is in segment 1), the mark lowered to 300, cut short by an append the card
    /// fails in segment 2 (at #343, after that flush); `state` set first.
    fn a_salvage_cut_short(dir: &Path, state: &[(&[u8], Vec<u8>)]) {
        let body = |seq: u64| super::super::encode(&record(seq, 3000));
        let mut s = SledStore::open(dir).unwrap();
        fill_with(&mut s, 0..400, body);
        for (key, value) in state {
            s.state_set(key, value).unwrap();
        }
        s.flush().unwrap();
        s.meta.insert(MARK_KEY, &300u64.to_be_bytes()).unwrap();
        write_out(&mut s);
        drop(s);
        let failing = super::super::segments::failing_appends_in(2..=2);
        let e = SledStore::open(dir).err().expect("the salvage fails");
        assert!(e.to_string().contains("appending record #343"), "{e}");
        assert_eq!(failing.refused(), 1);
    }

    /// The fresh database of a salvage is marked with this release's layout before the
    /// first batch carried into it is flushed: a salvage cut short leaves groups an older
    /// release must refuse, not misread.
    #[test]
    fn a_salvage_cut_short_leaves_a_database_of_this_layout() {
        let dir = tempfile::tempdir().unwrap();
        a_salvage_cut_short(dir.path(), &[]);
        assert_eq!(moved(), 1);
        let db = open_db(&dir.path().join(DB_DIR)).unwrap();
        assert_current_layout(&db.open_tree("state").unwrap());
        let groups = db.open_tree(super::super::index::TREE).unwrap();
        let first = groups.get(0u64.to_be_bytes()).unwrap().unwrap();
        let (_, first) = super::super::index::decode(&0u64.to_be_bytes(), &first).unwrap();
        assert_eq!(first.len(), 256, "the first batch carried");
    }

    /// A salvage cut short by a write the card failed leaves a fresh database that the next
    /// start opens as the buffer, with the records carried so far. Those records are
    /// acknowledged, and so is the clock's forward step they were taken before: without it,
    /// their age counts the step and the first drain drops them as past `max_age`.
    #[test]
    fn a_salvage_cut_short_keeps_the_clock_steps_of_the_records_it_carried() {
        let dir = tempfile::tempdir().unwrap();
        let mut steps = crate::pipeline::clock_steps::ClockSteps::default();
        let three_days = 3 * 24 * 3600 * 1000;
        steps.stepped(400, three_days);
        let key = super::super::ClockState::Steps.key();
        a_salvage_cut_short(dir.path(), &[(key, steps.encode())]);
        // The start after it: the fresh database is the buffer.
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "no second salvage");
        let carried = seqs(&s, None);
        assert_eq!(
            carried[..256],
            (0..256).collect::<Vec<_>>(),
            "the first batch"
        );
        let kept = super::super::clock_state(&s, super::super::ClockState::Steps).unwrap();
        let kept = crate::pipeline::clock_steps::ClockSteps::decode(&kept);
        assert_eq!(
            kept.after(0),
            three_days,
            "the carried records lost the step they were taken before"
        );
    }

    /// sled opens a cut-off log as if it had been torn by a crash; the high-water mark
    /// catches that flushed records are missing.
    #[test]
    fn a_truncated_log_is_detected_and_what_is_left_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            for seq in 0..400u64 {
                s.insert(seq, vec![seq as u8; 200]).unwrap();
                if seq % 50 == 49 {
                    s.flush().unwrap();
                }
            }
        }
        let log = dir.path().join(DB_DIR).join("db");
        let len = std::fs::metadata(&log).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        let left = seqs(&s, None);
        assert!(left.len() < 400, "nothing was lost? {}", left.len());
        assert!(left.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s.usage().0, left.len() as u64);
        assert_eq!(
            s.last_seq(),
            Some(399),
            "sequence numbers must not be reused"
        );
        drop(s);
        // The fresh database carries the mark: opening again is quiet.
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        assert_eq!(seqs(&s, None), left);
    }

    /// Makes the store at `dir` lose what sled loses when a card acknowledged a sync it did
    /// not do and the power was cut: 400 records written and flushed after those it holds,
    /// then sled's last ten pointers and its own mark back before them (the mark file says
    /// the last of the 400). The next open salvages. The numbers written.
    fn lose_the_last_ten(dir: &Path, past_the_mark: u64) -> std::ops::Range<u64> {
        let mut s = SledStore::open(dir).unwrap();
        let from = s.last_seq().map_or(0, |l| l + 1);
        for seq in from..from + 400 {
            s.insert(seq, super::super::encode(&record(seq, 200)))
                .unwrap();
            if seq % 50 == 49 {
                s.flush().unwrap();
            }
        }
        s.flush().unwrap();
        // Appended since, their flush not done: past the mark file.
        for seq in from + 400..from + 400 + past_the_mark {
            s.insert(seq, super::super::encode(&record(seq, 200)))
                .unwrap();
        }
        for seq in from + 390..from + 400 + past_the_mark {
            s.index.remove(seq).unwrap();
        }
        s.meta
            .insert(MARK_KEY, &(from + 389).to_be_bytes())
            .unwrap();
        write_out(&mut s);
        from..from + 400
    }

    /// Neither a record delivered before the loss (its body still in a segment beside live
    /// ones) nor one past the mark file whose pointer sled kept is a reason to keep the copy
    /// moved aside: the first needs no carrying, the second was carried by its pointer. Kept
    /// for them, a gateway meeting this at each power cut would fill its disk with copies.
    #[test]
    fn delivered_records_and_named_ones_past_the_mark_let_the_copy_go() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = flushed_store(dir.path(), 0..400, body_of);
            for seq in 0..10 {
                s.remove(seq).unwrap();
            }
            s.flush().unwrap();
            // Appended since, not flushed: past the mark file, their pointers kept.
            fill_with(&mut s, 400..405, body_of);
            // sled lost the last ten pointers of the flushed ones, and its mark with them.
            for seq in 390..400 {
                s.index.remove(seq).unwrap();
            }
            s.meta.insert(MARK_KEY, &389u64.to_be_bytes()).unwrap();
            write_out(&mut s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "no salvage");
        assert_eq!(seqs(&s, None), (10..405).collect::<Vec<_>>());
        assert_eq!(moved_aside(dir.path()), vec![]);
    }

    /// s33 hunt (growth): every salvage (sled lost writes it had flushed: a card that
    /// acknowledges a sync it did not do, then a power cut) moves the whole database aside,
    /// segments and all. Once the salvage read everything `hubgate buffer recover` could
    /// take from it and the fresh database is durable, the copy goes: a gateway that meets
    /// this at each power cut would otherwise fill its disk with copies, and the buffer's
    /// room for an outage shrink to nothing.
    #[test]
    fn databases_moved_aside_by_salvages_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        for round in 0..3 {
            all.extend(lose_the_last_ten(dir.path(), 0));
            let s = SledStore::open(dir.path()).unwrap();
            assert_eq!(moved(), round + 1, "round {round}: no salvage");
            assert!(s.moved_aside_at_open());
            // Everything came back, the ten whose pointers sled lost too.
            let got: Vec<u64> = s
                .scan(None, 10_000)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert!(
                got == all,
                "round {round}: {} record(s), last {:?}",
                got.len(),
                got.last()
            );
            assert_eq!(moved_aside(dir.path()), vec![], "round {round}");
            assert!(!dir.path().join(SALVAGED_DIR).exists());
        }
    }

    /// sled lost flushed writes, frame counters' among them: the file beside it, synced on
    /// its own, still has them, and the salvage takes them: one sled lost (which the search
    /// would no longer find past 2^20), one sled holds behind.
    #[test]
    fn a_salvage_takes_the_far_counters_sled_lost_from_the_file_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = |n| [b"fcnt/".as_slice(), &[n; 12]].concat();
        let value = |fcnt: u32| [fcnt.to_be_bytes(), [7; 4]].concat();
        let mut s = flushed_store(dir.path(), 0..3, body_of);
        s.state_set(&key(1), &value(0x0014_0001)).unwrap();
        s.state_set(&key(2), &value(0x0030_0001)).unwrap();
        s.flush().unwrap();
        // What sled kept: one counter before, the other not at all, and a mark below the
        // file's.
        s.state.insert(key(1), value(0x0013_0001)).unwrap();
        s.state.remove(key(2)).unwrap();
        s.meta.insert(MARK_KEY, &1u64.to_be_bytes()).unwrap();
        write_out(&mut s);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "salvaged");
        assert_eq!(
            s.state_scan(b"fcnt/").unwrap(),
            [(key(1), value(0x0014_0001)), (key(2), value(0x0030_0001))]
        );
    }

    /// Entries past the mark file (appended, their flush not done) are not carried: not
    /// acknowledged, unless the card lied about the mark's sync too. So the database moved
    /// aside is kept for `hubgate buffer recover`, not removed.
    #[test]
    fn entries_past_the_mark_keep_what_was_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        lose_the_last_ten(dir.path(), 5);
        drop(SledStore::open(dir.path()).unwrap());
        assert_eq!(moved(), 1, "no salvage");
        assert_eq!(moved_aside(dir.path()).len(), 1);
    }

    /// A salvage that could not read one segment (EISDIR here; a bad block the same)
    /// keeps the database moved aside, whose records `hubgate buffer recover` may take back
    /// once the segment reads; it is listed with its size. Each salvage so keeps its own:
    /// they may hold different records.
    #[test]
    fn a_salvage_that_could_not_read_everything_keeps_what_it_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            lose_the_last_ten(dir.path(), 0);
            let values = dir
                .path()
                .join(DB_DIR)
                .join(super::super::segments::VALUES_DIR);
            // The last segment, holding the bodies of the ten sled lost the pointers of.
            let seg = std::fs::read_dir(&values)
                .unwrap()
                .map(|e| e.unwrap().path())
                .max()
                .unwrap();
            std::fs::rename(&seg, dir.path().join(format!("kept-{round}"))).unwrap();
            std::fs::create_dir(&seg).unwrap();
            drop(SledStore::open(dir.path()).unwrap());
            assert_eq!(moved(), round + 1, "round {round}: no salvage");
            let kept = moved_aside(dir.path());
            assert_eq!(kept.len(), round + 1, "round {round}: {kept:?}");
            let (newest, bytes) = kept.last().unwrap();
            assert!(newest.join(super::super::segments::VALUES_DIR).is_dir());
            assert_eq!(*bytes, bytes_in(newest));
            assert!(*bytes > 0);
        }
    }

    /// A salvage of a database whose index holds a damaged group carries the others, and
    /// the damaged group's records from their segments; it keeps what it moved aside, for
    /// `hubgate buffer recover`: which records the group held is lost.
    #[test]
    fn a_salvage_past_a_damaged_group_keeps_what_it_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = flushed_store(dir.path(), 0..768, body_of);
            let groups = s.db.open_tree(super::super::index::TREE).unwrap();
            groups.insert(1u64.to_be_bytes(), &[1, 9][..]).unwrap();
            s.meta.insert(MARK_KEY, &700u64.to_be_bytes()).unwrap();
            write_out(&mut s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        assert_eq!(seqs(&s, None), (0..768).collect::<Vec<_>>());
        assert_eq!(moved_aside(dir.path()).len(), 1, "kept for buffer recover");
    }

    /// A group that does not decode at an ordinary open (the marks agree) is damage: the
    /// database is moved aside and salvaged, its records carried from their segments, and
    /// no segment is deleted (here #257..=#260 are alone in theirs, which no counted
    /// pointer names).
    #[test]
    fn a_damaged_group_at_open_is_salvaged_from_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        // Bodies that decode (a salvage carries only those), four to a segment.
        let big = |seq| super::super::encode(&record(seq, QUARTER - 100));
        let seg = {
            let mut s = SledStore::open(dir.path()).unwrap();
            fill_with(&mut s, 0..3, big);
            fill_with(&mut s, 256..261, big);
            fill_with(&mut s, 512..513, body_of);
            s.flush().unwrap();
            let only = segment_of(&s, 257);
            assert_eq!(only, segment_of(&s, 260));
            assert_ne!(only, segment_of(&s, 2));
            assert_ne!(only, segment_of(&s, 512));
            let groups = s.db.open_tree(super::super::index::TREE).unwrap();
            groups.insert(1u64.to_be_bytes(), &[1, 9][..]).unwrap();
            write_out(&mut s);
            PathBuf::from(format!("{only:08}.seg"))
        };
        let before = moved();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert!(s.moved_aside_at_open());
        assert_eq!(moved(), before + 1);
        let body = |seq| if seq == 512 { body_of(seq) } else { big(seq) };
        let want: Vec<u64> = (0..3).chain(256..261).chain(512..513).collect();
        let bytes: u64 = want.iter().map(|&seq| body(seq).len() as u64).sum();
        assert_eq!(s.usage(), (9, bytes));
        let all = s.scan(None, 20).unwrap();
        assert_eq!(all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), want);
        for (seq, read) in all {
            assert_eq!(read, body(seq), "#{seq}");
        }
        let kept = moved_aside(dir.path());
        assert_eq!(kept.len(), 1, "kept for buffer recover");
        let aside_seg = kept[0]
            .0
            .join(super::super::segments::VALUES_DIR)
            .join(&seg);
        assert!(aside_seg.exists(), "{} was deleted", aside_seg.display());
        s.flush().unwrap();
    }

    /// Entries after a damaged one in a segment (a card that lost a page mid-segment) are
    /// carried: the salvage scans on past damage as `hubgate buffer recover` does, so the
    /// database moved aside holds nothing more and goes.
    #[test]
    fn a_salvage_carries_the_entries_after_a_damaged_one() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64| super::super::encode(&record(seq, 100));
        {
            let mut s = flushed_store(dir.path(), 0..4, body);
            for seq in 2..4u64 {
                s.index.remove(seq).unwrap();
            }
            s.meta.insert(MARK_KEY, &1u64.to_be_bytes()).unwrap();
            write_out(&mut s);
            let number = segment_of(&s, 1);
            // #1's length, in its header, now runs past the end of the file.
            let seg = s.segments.dir().join(format!("{number:08}.seg"));
            let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
            let at = s.segments.headers(number).unwrap().1[1].1.offset;
            f.write_all_at(&u32::MAX.to_be_bytes(), u64::from(at) + 8)
                .unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "no salvage");
        let carried = s.scan(None, 100).unwrap();
        assert_eq!(
            carried,
            vec![(0, body(0)), (2, body(2)), (3, body(3))],
            "#1's body is damaged"
        );
        assert_eq!(moved_aside(dir.path()), vec![]);
    }

    /// Two databases moved aside within a second each get a name: the second rename would
    /// otherwise fail the open.
    #[test]
    fn two_moves_aside_within_a_second_do_not_meet() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_DIR);
        let mut names = BTreeSet::new();
        for n in 0..3u8 {
            std::fs::create_dir(&db).unwrap();
            std::fs::write(db.join("f"), [n]).unwrap();
            names.insert(move_aside(&db).unwrap());
        }
        assert_eq!(names.len(), 3, "{names:?}");
        let kept = moved_aside(dir.path());
        assert_eq!(
            kept.iter().map(|(p, _)| p.clone()).collect::<BTreeSet<_>>(),
            names
        );
        assert!(kept.iter().all(|(_, bytes)| *bytes == 1));
    }

    /// A database that will not open is never removed: it holds the only copy of its
    /// records. It is listed with its size.
    #[test]
    fn a_database_that_will_not_open_is_kept_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        three_flushed(dir.path());
        std::fs::write(
            dir.path().join(DB_DIR).join("conf"),
            b"\xff not sled's config",
        )
        .unwrap();
        assert!(SledStore::open(dir.path()).unwrap().moved_aside_at_open());
        assert!(!SledStore::open(dir.path()).unwrap().moved_aside_at_open());
        let kept = moved_aside(dir.path());
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].1 > 0);
        assert!(kept[0].0.join(super::super::segments::VALUES_DIR).is_dir());
    }

    /// What a power cut left of a salvaged database being removed goes at the next open.
    #[test]
    fn a_salvaged_database_cut_short_in_its_removal_goes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join(SALVAGED_DIR);
        std::fs::create_dir_all(gone.join("values")).unwrap();
        std::fs::write(gone.join("values").join("00000001.seg"), [1; 10]).unwrap();
        drop(SledStore::open(dir.path()).unwrap());
        assert!(!gone.exists());
        assert_eq!(moved_aside(dir.path()), vec![]);
    }

    /// sled lost flushed pointers (its mark says #1, the mark file #9): the bodies are still
    /// in the segments, in one no pointer names any more (#8's) and beside records whose
    /// pointers are left. The salvage finds every one: none is deleted before it looks.
    #[test]
    fn a_salvage_carries_the_bodies_whose_pointers_sled_lost() {
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64| super::super::encode(&record(seq, QUARTER));
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            for seq in 0..9 {
                s.insert(seq, body(seq)).unwrap();
            }
            // Not a record: no decoder would take it.
            s.insert(9, vec![9; 10]).unwrap();
            s.flush().unwrap();
            assert_eq!(s.segments.files(), vec![1, 2, 3]);
            // What sled keeps after losing the end of its log; #0 was delivered before.
            for seq in [0u64, 2, 5, 6, 7, 8, 9] {
                s.index.remove(seq).unwrap();
            }
            s.meta.insert(MARK_KEY, &1u64.to_be_bytes()).unwrap();
            write_out(&mut s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        let all = s.scan(None, 100).unwrap();
        assert_eq!(
            all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (1..9).collect::<Vec<_>>()
        );
        for (seq, b) in all {
            assert_eq!(b, body(seq), "#{seq}");
        }
        assert_eq!(s.last_seq(), Some(9));
    }

    /// The same when sled also lost a flush that wrote a mark: the salvage finds the copies.
    #[test]
    fn a_salvage_finds_compacted_records_whose_pointers_sled_took_back() {
        let dir = tempfile::tempdir().unwrap();
        let stay = compacted_then_taken_back(dir.path(), Some(1), |_| {});
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1, "no salvage");
        // Delivered records past the mark sled kept come back too (duplicates).
        let all: BTreeMap<u64, Vec<u8>> = s.scan(None, 100).unwrap().into_iter().collect();
        for (seq, body) in stay {
            assert!(all.get(&seq) == Some(&body), "#{seq} lost");
        }
    }

    /// A record appended whose pointer a crash kept from sled had its number handed out
    /// again by an earlier release; the next record under it was flushed and acknowledged.
    /// When sled then loses that flush, the salvage carries the copy written last: the
    /// acknowledged one.
    #[test]
    fn a_salvage_carries_the_copy_of_a_number_written_last() {
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64, len: usize| super::super::encode(&record(seq, len));
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            for seq in 0..3 {
                s.insert(seq, body(seq, 100)).unwrap();
            }
            s.flush().unwrap();
            s.insert(3, body(3, 100)).unwrap();
            lose_pointers(&mut s, 3..4);
        }
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            // As a release before the open read the segments' tails did.
            s.insert(3, body(3, 200)).unwrap();
            s.flush().unwrap();
            assert_eq!(s.marked(), Some(3));
            assert_eq!(s.segments.files(), vec![1, 2]);
            // sled loses that flush.
            s.index.remove(3).unwrap();
            s.meta.insert(MARK_KEY, &2u64.to_be_bytes()).unwrap();
            write_out(&mut s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        let all = s.scan(None, 10).unwrap();
        assert_eq!(
            all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(all[3].1, body(3, 200), "the acknowledged copy");
        assert_eq!(s.usage().0, 4);
    }

    /// The salvage reads the segments in written order and keeps a number's last copy. A
    /// segment no pointer names that could not be deleted, numbered after the one the next
    /// run appends to, holds a record appended before a crash (#8): were its number handed
    /// out again, that stale copy would take the place of the acknowledged one when sled
    /// later loses a flush. The open hands out numbers above it instead.
    #[test]
    fn a_salvage_keeps_acknowledged_records_beside_an_undeletable_segment() {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: a segment that cannot be deleted is left to CI");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let big = |seq: u64| super::super::encode(&record(seq, QUARTER));
        let small = |seq: u64| super::super::encode(&record(seq, 100));
        let values = {
            let mut s = flushed_store(dir.path(), 0..4, big);
            fill_with(&mut s, 4..9, big);
            assert_eq!(s.segments.files(), vec![1, 2, 3]);
            lose_pointers(&mut s, 4..9);
            s.segments.dir().to_path_buf()
        };
        // Segment 3 cannot be deleted without CAP_FOWNER: another user's, in a directory
        // with the sticky bit.
        let nobody = |p: &Path| std::os::unix::fs::chown(p, Some(65534), None).unwrap();
        nobody(&values);
        nobody(&values.join("00000003.seg"));
        let sticky = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode;
        std::fs::set_permissions(&values, sticky(0o1777)).unwrap();
        let acknowledged = without(&[CAP_FOWNER], || {
            let mut s = SledStore::open(dir.path()).unwrap();
            assert_eq!(s.segments.files(), vec![1, 3], "segment 3 is left");
            let first = s.last_seq().unwrap() + 1;
            fill_with(&mut s, first..first + 5, small);
            s.flush().unwrap();
            assert_eq!(s.segments.files(), vec![1, 2, 3], "appended to segment 2");
            // sled loses that flush.
            s.meta.insert(MARK_KEY, &3u64.to_be_bytes()).unwrap();
            lose_pointers(&mut s, first..first + 5);
            first..first + 5
        });
        assert_eq!(
            acknowledged,
            9..14,
            "above the records appended before the crash"
        );
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        for seq in acknowledged {
            let got = s.scan(Some(seq - 1), 1).unwrap();
            assert_eq!(got, vec![(seq, small(seq))], "#{seq}");
        }
    }

    /// What a salvage reads of a tree with a part sled cannot read (here the leaf of an
    /// entry large enough for a blob file of its own, the file made unreadable; a card's bad
    /// block gives EIO): sled's iterator repeats the error, so the rest is read from the end
    /// back, and only the entries of that leaf are left out.
    #[test]
    fn what_lies_past_an_unreadable_part_of_a_tree_is_read_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let tree = db.open_tree("letters").unwrap();
        let keys = 0..2000u64;
        let large = 1000;
        let value = |k: u64| vec![k as u8; if k == large { 300_000 } else { 100 }];
        // The large one last, into a leaf of its own among the others.
        for k in keys.clone().filter(|&k| k != large).chain([large]) {
            tree.insert(k.to_be_bytes(), value(k)).unwrap();
        }
        db.flush().unwrap();
        make_the_blob_unreadable(&db, dir.path());

        let mut read = Vec::new();
        let whole = each_readable(&tree, |k, v| {
            let k = seq_of(&k).unwrap();
            assert_eq!(v, value(k), "#{k}");
            read.push(k);
            Ok(())
        })
        .unwrap();
        assert!(!whole);
        assert!(
            read.windows(2).all(|w| w[0] < w[1]),
            "in key order, once each"
        );
        let lost: Vec<u64> = keys.filter(|k| !read.contains(k)).collect();
        assert!(lost.contains(&large), "{lost:?}");
        let (first, last) = (lost[0], lost[lost.len() - 1]);
        assert_eq!(lost, (first..=last).collect::<Vec<_>>(), "one run");
        assert!(last - first < 100, "one leaf's worth: {first}..={last}");
        assert!(read.contains(&1999), "read from the end back");
    }

    /// A record dead-lettered in the range sled lost, its body still in a segment: the
    /// salvage carries the dead letter, not a live record as well.
    #[test]
    fn a_salvage_does_not_bring_a_dead_letter_back_as_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64| super::super::encode(&record(seq, 100));
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            for seq in 0..4 {
                s.insert(seq, body(seq)).unwrap();
            }
            s.flush().unwrap();
            assert_eq!(s.marked(), Some(3));
            // The part of sled's log kept goes past the dead letter, not its mark.
            s.dead_letter(3, body(3)).unwrap();
            s.remove(3).unwrap();
            s.meta.insert(MARK_KEY, &2u64.to_be_bytes()).unwrap();
            write_out(&mut s);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        assert_eq!(seqs(&s, None), vec![0, 1, 2]);
        let dead = s.scan_dead(None, 10).unwrap();
        assert_eq!(dead, vec![(3, body(3))]);
    }
}
