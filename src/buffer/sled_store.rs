//! sled-backed [`Store`]: survives kill -9 and power cuts once flushed.
//!
//! Records are found by their sequence numbers, in arrival order, through the index
//! ([`super::index`]): sled holds, per group of records, pointers to their bodies in segment
//! files (see [`super::segments`]). sled's own
//! periodic flush is off: hubgate flushes when it must (before acknowledging a source), so
//! an idle or healthy gateway does not write to its SD card at all.
//!
//! A flush syncs the segments appended to, then runs sled's flush, then hubgate's own syncs
//! of sled's files (see [`super::durable`]): only then does it survive a power cut, and no
//! durable pointer names a body that is not on the disk. The buffer's flushes run on a
//! thread of the store's own (`buffer sync`, see [`Store::start_flush`]): on a busy SD card
//! they take hundreds of milliseconds, and the forwarder goes on writing, deleting and
//! sending records meanwhile (sled takes writes while it flushes).
//!
//! sled treats a cut-off log as a torn tail and opens it without complaint, which would
//! silently lose records that were flushed and acknowledged. So hubgate keeps its own
//! high-water mark: the highest sequence number is stored in sled at every flush and, once
//! the flush succeeded, also in a small file beside it (`hubgate-flushed`, see
//! [`super::mark`]). A database whose stored mark is below the file's has lost flushed
//! writes: it is moved aside, what it still holds is copied into a fresh one, and the loss
//! is reported. The frame counters a start on a card that failed needs are kept beside it
//! too (`hubgate-counters`, see [`super::far_counters`]): sled cannot open a database it
//! cannot write.
//!
//! sled never gives disk space back (and grows several times the live data under churn),
//! so once the buffer has drained and the database is larger than [`RECLAIM_ABOVE`], it is
//! rebuilt: a fresh database with the dead letters and the mark is written next to it
//! (`sled.new`) and swapped in (the old one goes via `sled.old`). Opening finishes or
//! undoes a swap a power cut interrupted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::compact::{self, Compaction};
use super::durable::{step, sync_dir, Blobs, SledFiles};
use super::far_counters::{self, FarCounters};
use super::index::Index;
use super::lock::BufferLock;
use super::mark::Mark;
use super::salvage::{move_aside, remove_salvaged};
use super::segments::{read_entry, Held, Pointer, ReadError, SegmentSync, Segments};
use super::upgrade::{move_progress, old_pointers};
use super::{BufferError, Entries, StateEntry, Store, FCNT_PREFIX};

pub(super) const DB_DIR: &str = "sled";
/// The high-water mark file, inside the database directory (moved aside with it).
pub(super) const MARK_FILE: &str = "hubgate-flushed";
pub(super) const MARK_KEY: &[u8] = b"max_seq";
/// The buffer's layout, in the state tree (carried by rebuilds and salvages): raised
/// whenever a release writes what an older one would misread (the record format, where
/// bodies are kept, how they are found). An open refuses a higher one before it reads
/// anything else ([`OpenError::Newer`]) and marks a lower one ([`SledStore::mark_layout`]).
/// Layout 2 keeps the pointers in groups ([`super::index`]); layout 3 may hold groups of
/// the index's denser encoding, which layout 2 reads as damage.
/// A layout-2 database needs no move: its groups are read as they are.
pub(super) const LAYOUT: u32 = 3;
pub(super) const LAYOUT_KEY: &[u8] = b"layout";
/// How long systemd's start timeout is pushed after each batch the upgrade, the move into
/// groups or the salvage moved, and after each segment the salvage read: as long as a start
/// takes by default (90 s), for a batch and its two flushes (256 records, or 4,096 pointers
/// for the move into groups), or a segment of 1 MiB.
pub(super) const BATCH_ALLOWANCE: Duration = Duration::from_secs(90);
/// sled's cache. Its floor is one leaf per LRU shard (256), whatever this says; with the
/// pointers in groups of a few bytes a record, a small capacity keeps the leaves it holds
/// beyond that few (docs/performance.md).
const CACHE: u64 = 256 << 10;
/// A drained database larger than this is rebuilt to give the space back.
pub const RECLAIM_ABOVE: u64 = 8 << 20;
/// The same while the disk is short of space (below `min_free`): a few MiB held by a drained
/// database may be what keeps the buffer from taking anything in.
const RECLAIM_WHEN_LOW: u64 = 1 << 20;
/// Room a rebuild needs besides the dead letters: a fresh database takes about 0.5 MiB.
const REBUILD_ROOM: u64 = 1 << 20;
/// How long an open waits for sled to let go of a database this process just closed.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How often relink looks again in the segments it could not look in (see [`Unlinked`]):
/// several times within the minute the drain waits on a record it cannot read.
const RELINK_RETRY: Duration = Duration::from_secs(10);

pub struct SledStore {
    /// The flush thread, once a flush was started on it. First, so that it is dropped (its
    /// running flush waited for) before the database: the last handle on the database is
    /// then dropped where the store is, not on that thread (sled's close panics when its
    /// sync fails, and only the store's owner contains that).
    flusher: Option<Flusher>,
    pub(super) db: sled::Db,
    pub(super) dir: PathBuf,
    /// Sequence number -> [`Pointer`] to the body in [`SledStore::segments`].
    pub(super) index: Index,
    pub(super) segments: Segments,
    /// Empty segments the running flush makes deletable (see [`Segments::deletable`]).
    pub(super) retiring: BTreeSet<u32>,
    /// Records copied out of sparse segments (see [`super::compact`]).
    compaction: Compaction,
    /// Free space compaction leaves on the disk (see [`Store::keep_free`]).
    keep_free: u64,
    pub(super) dead: sled::Tree,
    pub(super) meta: sled::Tree,
    /// State kept with the records (see [`Store::state_set`]).
    pub(super) state: sled::Tree,
    /// Its frame counters a start without sled needs, also kept in a file beside it (`None`:
    /// they could not be read at open, and the file is left as it is).
    far: Option<FarCounters>,
    count: u64,
    bytes: u64,
    /// Highest sequence number ever stored (records or dead letters).
    pub(super) highest: Option<u64>,
    /// The mark file and sled's files, shared with the flush thread.
    syncs: Arc<Mutex<Syncs>>,
    /// Something was inserted or removed since the last flush started (or failed).
    pub(super) changed: bool,
    /// Syncs made by [`SledStore::open`], not yet counted by a flush.
    unreported_syncs: u64,
    /// Size on disk right after the last rebuild: the next one waits until it doubles.
    reclaimed_to: u64,
    /// The buffer directory's lock, held while the store is open.
    pub(super) lock: Option<BufferLock>,
    /// Set when a failed rebuild could not be undone for sure: flushes fail from then on.
    broken: Option<String>,
    /// Set when a file sync failed: every flush after it fails the same way (see
    /// [`BufferError::SyncFailed`]).
    pub(super) sync_failed: Option<String>,
    /// Set while relink could not look everywhere (see [`Unlinked`]).
    unlinked: Option<Unlinked>,
    /// This open moved the database aside: it would not open, or lost flushed writes.
    pub(super) moved_aside: bool,
    /// Bytes of the disk space reserve the open gave back, until
    /// [`Store::release_reserve_if_short`] reports them.
    reserve_released: u64,
    /// Records of an old layout the open dropped as too large ([`SledStore::drops_too_large`]),
    /// until [`Store::take_too_large`] reports them.
    pub(super) too_large: u64,
}

/// Acknowledged records whose pointers name a segment that is gone, while some segment
/// that may hold their copies could not be looked in ([`Segments::look_in_later`]).
/// Their reads are not damage but a wait ([`BufferError::Unreadable`]): the drain would
/// otherwise remove them at once, and the next open delete the segment holding their
/// copies. Flushes look again every [`RELINK_RETRY`] until every segment was looked in.
struct Unlinked {
    /// The mark at open: the records at or below it are the ones looked for.
    flushed: u64,
    /// Those records, with the pointer each held; `None` when sled could not tell (all
    /// are looked for again, everywhere).
    gone: Option<Gone>,
    /// Every failure to look was for a reason that may pass (no permission, descriptors):
    /// the drain waits on those records for as long as that lasts.
    passes: bool,
    /// When to look again.
    retry: Instant,
    /// Looks in a row that failed before looking anywhere: each doubles the wait for the
    /// next, which reads every segment's headers again.
    failed: u32,
}

/// Records looked for, each with the pointer into a missing segment it held.
type Gone = BTreeMap<u64, Pointer>;

/// What one look of relink found ([`SledStore::look_in`]).
struct Looked {
    /// The records pointed at an entry of theirs, with their new pointers.
    found: Gone,
    /// The segments that could not be looked in.
    unlooked: BTreeSet<u32>,
    /// Every failure to look may pass.
    passes: bool,
}

/// Why relink could not look, and whether that may pass.
struct LookFailed {
    why: String,
    passes: bool,
}

impl From<sled::Error> for LookFailed {
    fn from(e: sled::Error) -> LookFailed {
        let passes = matches!(&e, sled::Error::Io(io) if super::segments::passes(io));
        LookFailed {
            why: e.to_string(),
            passes,
        }
    }
}

pub(super) fn err(e: sled::Error) -> BufferError {
    BufferError::Storage(e.to_string())
}

/// What a flush syncs besides sled's own flush: one flush at a time uses it.
struct Syncs {
    /// sled's files, synced by every flush.
    files: SledFiles,
    /// The mark file: the highest sequence number flushed.
    mark: Mark,
}

/// One flush: the segments appended to, sled's flush, then its files, then the mark, then the
/// far counters' file when it is stale.
pub(super) struct SyncJob {
    db: sled::Db,
    /// The segments appended to before the job was made: synced before sled's flush can
    /// make a pointer to them durable.
    values: SegmentSync,
    syncs: Arc<Mutex<Syncs>>,
    /// The mark to write once the records it claims are durable.
    mark: Option<u64>,
    /// The far counters' file to write once the counters in it are durable.
    counters: Option<Vec<u8>>,
    /// sled's blob files when the job was made, on sled's writer (see
    /// [`SledFiles::blobs_to_sync`]).
    blobs: Blobs,
    dir: PathBuf,
}

impl SyncJob {
    pub(super) fn run(self) -> Result<u64, BufferError> {
        // Never tried again: a second sync would succeed without what the first lost.
        let failed =
            |e: std::io::Error| BufferError::SyncFailed(format!("{}: {e}", self.dir.display()));
        let mut n = self.values.run().map_err(failed)?;
        // sled keeps the first error of a write of its log and fails every later flush with
        // it until the database is opened again: no flush to try again, but a run to end
        // (`a_failed_sled_write_fails_every_later_flush_until_reopened`).
        self.db.flush().map_err(|e| {
            BufferError::SyncFailed(format!("{}: sled's flush: {e}", self.dir.display()))
        })?;
        // sled frees a sealed log buffer (512 KiB, its segment size) through crossbeam-epoch:
        // deferred to the thread that sealed it, which keeps it in a bag of 64 deferred frees
        // until the bag is full. sled's flush seals one on this thread, so without this ~64
        // flushes' buffers (up to 7 MB in an outage) stay allocated; here they go once no
        // thread can still read them (docs/performance.md, "Memory").
        crossbeam_epoch::pin().flush();
        let mut syncs = self.syncs.lock().unwrap_or_else(PoisonError::into_inner);
        n += syncs.files.sync(self.blobs).map_err(failed)?;
        // Only a mark whose records are durable: a lower one can miss a loss, a higher one
        // would report records that were never acknowledged as lost.
        if let Some(seq) = self.mark {
            n += syncs
                .mark
                .set(seq)
                .map_err(|e| failed(step(&format!("syncing {MARK_FILE}"), e)))?;
        }
        if let Some(bytes) = &self.counters {
            n += far_counters::write(&self.dir, bytes)
                .map_err(|e| failed(step(&format!("writing {}", far_counters::FILE), e)))?;
        }
        Ok(n)
    }
}

/// The `buffer sync` thread: runs the flushes it is sent, one after the other, and notifies
/// each one's `done` when it is.
struct Flusher {
    jobs: Option<mpsc::Sender<(SyncJob, Arc<Notify>)>>,
    done: mpsc::Receiver<Result<u64, BufferError>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start() -> std::io::Result<Flusher> {
        let (jobs, todo) = mpsc::channel::<(SyncJob, Arc<Notify>)>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("buffer sync".into())
            .spawn(move || {
                for (job, notify) in todo {
                    if report.send(job.run()).is_err() {
                        return;
                    }
                    notify.notify_one();
                }
            })?;
        Ok(Flusher {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    /// Lets a flush that runs finish: the store is not gone before its files are synced.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flush thread ended (it panicked) with a flush running: whether that flush's syncs
/// failed is unknown, so it counts as a failed sync.
fn thread_gone() -> BufferError {
    BufferError::SyncFailed("the buffer's flush thread ended".into())
}

impl SledStore {
    /// Open the database at `dir`. One that will not open is moved aside (loudly) and a
    /// fresh one started: a damaged card must not crash-loop the agent.
    pub fn open(buffer_dir: &Path) -> Result<SledStore, BufferError> {
        Self::open_with(buffer_dir, true)
    }

    /// [`SledStore::open`] for the `hubgate buffer` commands: a database that will not open
    /// is an error, left where it is. Moved aside, the fresh one in its place would be
    /// counted (0 records, what the package's downgrade guard reads as nothing to lose) and
    /// exported as the buffer, while the records sit in a directory nothing reads.
    pub fn open_unmoved(buffer_dir: &Path) -> Result<SledStore, BufferError> {
        Self::open_with(buffer_dir, false)
    }

    fn open_with(buffer_dir: &Path, move_damaged: bool) -> Result<SledStore, BufferError> {
        let lock = BufferLock::take(buffer_dir)?;
        // What a run that met a refused write left in the page cache is not on the card.
        let dropped = super::page_cache::drop_cached(buffer_dir, &buffer_dir.join(DB_DIR));
        if dropped.kept > 0 {
            log::warn!(
                "buffer: the cached pages of {} file(s) in {} could not be dropped: what a \
                 failed write left only in memory may be read as on disk",
                dropped.kept,
                buffer_dir.display()
            );
        }
        if dropped.sync_failed > 0 {
            log::warn!(
                "buffer: {} file(s) in {} failed their sync at start (a write error of the \
                 card: an earlier one told again, or a new one); what is read is what the \
                 card holds",
                dropped.sync_failed,
                buffer_dir.display()
            );
        }
        // A disk another program filled to the last byte: sled cannot open without room,
        // not even to read the layout below.
        let released = super::reserve::release_if_short(buffer_dir);
        let opened = refuse_newer(buffer_dir)?;
        let mut store = Self::open_locked(buffer_dir, lock, opened, move_damaged)?;
        store.reserve_released = released;
        Ok(store)
    }

    /// Take the frame counters kept in the file beside the database moved aside to `aside`
    /// that this one lacks or holds behind: those a session's first search does not find
    /// (past 2^20), without which such a device's frames would fail the MIC check until
    /// `fcnt_from` is set.
    pub(super) fn carry_far_counters(&mut self, aside: &Path) -> Result<(), BufferError> {
        let kept = |k: &[u8]| self.state.get(k).ok().flatten().map(|v| v.to_vec());
        for (k, v) in far_counters::ahead_of(aside, kept) {
            self.state_set(&k, &v)?;
        }
        Ok(())
    }

    /// The counters' file beside the database is out of date.
    fn far_stale(&self) -> bool {
        self.far.as_ref().is_some_and(FarCounters::stale)
    }

    /// The buffer directory, which holds the database's directory.
    pub(super) fn buffer_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(Path::new("."))
    }

    /// [`SledStore::open`] once the buffer directory's lock is held, with sled already
    /// `opened` at the database directory by [`refuse_newer`] (if it was); a database that
    /// will not open is moved aside if `move_damaged`, else an error.
    fn open_locked(
        buffer_dir: &Path,
        lock: BufferLock,
        opened: Option<sled::Db>,
        move_damaged: bool,
    ) -> Result<SledStore, BufferError> {
        // The database is a directory of its own inside the buffer directory, so it can be
        // moved aside where systemd's StateDirectory= is the only writable place.
        let dir = &buffer_dir.join(DB_DIR);
        finish_swap(dir)?;
        remove_salvaged(buffer_dir);
        let inner = match opened {
            Some(db) => Self::with_db(db, dir),
            None => Self::open_inner(dir),
        };
        let mut store = match inner {
            Ok(s) => s,
            Err(e) if dir.exists() && e.is_damage() && !move_damaged => {
                return Err(BufferError::Storage(format!(
                    "buffer database {} will not open ({e}): left as it is, its records in it; \
                     hubgate's start moves it aside (to {}/sled.broken-<time>) and starts a \
                     fresh one, then, with hubgate stopped, `hubgate buffer recover <that \
                     directory>` takes its records back",
                    dir.display(),
                    buffer_dir.display()
                )))
            }
            Err(e) if dir.exists() && e.is_damage() => {
                let aside = move_aside(dir)?;
                log::error!(
                    "buffer database {} will not open ({e}); moved to {} and starting a fresh one",
                    dir.display(),
                    aside.display()
                );
                let mut store = Self::open_at(dir)?;
                store.lock = Some(lock);
                store.moved_aside = true;
                store.carry_far_counters(&aside)?;
                store.mark_layout()?;
                // Durable before anything is taken: a power cut before the first flush would
                // leave a fresh database that the next start opens as it is, carrying nothing.
                store.flush()?;
                return Ok(store);
            }
            Err(e) => {
                return Err(BufferError::Storage(format!(
                    "{}: {e}{}",
                    dir.display(),
                    e.advice()
                )))
            }
        };
        store.lock = Some(lock);
        store.mark_layout()?;
        match (store.stored_mark(), store.marked()) {
            // The salvage carries an old layout's records too.
            (stored, Some(flushed)) if stored.is_none_or(|s| s < flushed) => {
                store.salvage(stored, Some(flushed))
            }
            // A group that does not decode (counted while the store opened): its records'
            // pointers are lost, their bodies are in the segments, which the salvage reads.
            (stored, flushed) if store.index.damaged() => {
                let flushed = flushed.or(stored);
                store.salvage(stored.min(flushed), flushed)
            }
            (_, flushed) => {
                // First: what follows reads the records through the index. Fatal, as the
                // upgrade below is; every batch moved is durable.
                store.group(move_progress()).map_err(|e| {
                    BufferError::Storage(format!(
                        "{}: moving the records' pointers into groups failed: {e}; those not \
                         moved yet stay in the old tree and the next start goes on from there",
                        dir.display()
                    ))
                })?;
                // Before the segments no pointer names go: they may hold the numbers.
                store.highest = store.highest.max(store.highest_appended());
                // Before the segments no pointer names go: they may hold the copies.
                match flushed {
                    Some(flushed) => store.relink(flushed, None),
                    None => store.segments.remove_orphans(),
                }
                if let Err(e) = store.drop_torn_unflushed(flushed) {
                    log::error!("buffer: checking the records written after the last flush: {e}");
                    // Those not checked may sit in any segment: the first flush syncs all.
                    let missing = store.segments.missing().clone();
                    for number in store.segments.holding() {
                        if missing.contains(&number) {
                            continue;
                        }
                        if let Err(e) = store.segments.sync_with_next_flush(number) {
                            log::error!(
                                "buffer: segment {number} cannot be opened to sync it: {e}"
                            );
                        }
                    }
                }
                // Fatal: records left in the old tree would be neither counted nor
                // delivered in this run. Every batch moved is durable, so the next start
                // (systemd restarts hubgate) goes on from there.
                // It runs before READY=1: each batch tells systemd the start goes on.
                store.room_to_upgrade()?;
                store.upgrade(move_progress()).map_err(|e| {
                    BufferError::Storage(format!(
                        "{}: moving the records to the new layout (bodies in segment files) \
                         failed: {e}; those not moved yet stay in the old tree and the next \
                         start goes on from there",
                        dir.display()
                    ))
                })?;
                Ok(store)
            }
        }
    }

    /// The highest sequence number among the entries appended after the last flush, whose
    /// pointers a crash may have kept from sled ([`Segments::unflushed`]). Such a number
    /// handed out again to a record that is then acknowledged would have two copies, and a
    /// salvage could carry the stale one instead (one in a segment that could not be
    /// deleted and sorts after the new copy's). Only entries that decode count, as in the
    /// salvage: a torn or damaged header must not move the numbers anywhere.
    fn highest_appended(&self) -> Option<u64> {
        let mut highest = None;
        for number in self.segments.unflushed() {
            match self.segments.entries(number) {
                Ok(entries) => {
                    highest = highest.max(entries.into_iter().map(|(seq, _)| seq).max());
                }
                Err(e) => log::warn!(
                    "buffer: reading segment {number} for the numbers appended after the last \
                     flush: {e}; a number in it may be handed out again"
                ),
            }
        }
        highest
    }

    /// Records above the mark `flushed` were never covered by a flush that succeeded, so never
    /// acknowledged; a power cut can leave such a record's pointer durable (sled writes its
    /// log as it fills) without its body. Those whose body cannot be read are removed here,
    /// with a warning, instead of being counted as damaged: nothing was lost, their sources
    /// send them again. Those whose body reads whole (a crash or a kill left it in the page
    /// cache) are kept, and their redeliveries acknowledged once the next flush is done: it
    /// syncs every segment that holds one (they can span several) before its mark covers
    /// them.
    fn drop_torn_unflushed(&mut self, flushed: Option<u64>) -> Result<(), BufferError> {
        let mut after = flushed;
        let mut kept = BTreeMap::<u32, Vec<u64>>::new();
        loop {
            let batch = self.index.scan(after, 256).map_err(err)?;
            let Some((last, _)) = batch.last() else {
                break;
            };
            after = Some(*last);
            for (seq, pointer) in batch {
                if let Err(why) = self.body(seq, pointer) {
                    log::warn!(
                        "buffer: record #{seq} was written but not flushed before the process or \
                         the power stopped ({why}): dropped, never acknowledged"
                    );
                    self.remove(seq)?;
                } else {
                    kept.entry(pointer.segment).or_default().push(seq);
                }
            }
        }
        for (number, seqs) in kept {
            // Not syncable, not kept: acknowledged without its segment synced, a record could
            // be lost to the next power cut.
            if let Err(e) = self.segments.sync_with_next_flush(number) {
                log::warn!(
                    "buffer: segment {number} cannot be opened to sync it ({e}): its {} record(s) \
                     written after the last flush are dropped, never acknowledged",
                    seqs.len()
                );
                for seq in seqs {
                    self.remove(seq)?;
                }
            }
        }
        Ok(())
    }

    /// [`SledStore::open_inner`] with the error as a [`BufferError`] naming `dir`.
    pub(super) fn open_at(dir: &Path) -> Result<SledStore, BufferError> {
        Self::open_inner(dir).map_err(|e| BufferError::Storage(format!("{}: {e}", dir.display())))
    }

    fn open_inner(dir: &Path) -> Result<SledStore, OpenError> {
        Self::with_db(open_db(dir)?, dir)
    }

    /// [`SledStore::open_inner`] with sled already opened at `dir`.
    fn with_db(db: sled::Db, dir: &Path) -> Result<SledStore, OpenError> {
        let state = db.open_tree("state")?;
        // Before the index is read: a newer release's groups may be of an encoding this one
        // would log as damage, for every group at every start of a restart loop. Checked
        // here too: [`refuse_newer`] goes on without a word where sled would not open the
        // database for it, and a reason that passes (EMFILE) may have passed since.
        if let Some(layout) = stored_layout(&state)?.filter(|layout| *layout > LAYOUT) {
            let buffer = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
            return Err(OpenError::Newer { layout, buffer });
        }
        let index = Index::open(&db)?;
        let dead = db.open_tree("dead_letter")?;
        let meta = db.open_tree("meta")?;
        let (mut count, mut bytes) = (0, 0);
        let mut live = BTreeMap::<u32, Held>::new();
        let mut held = |p: Pointer| {
            count += 1;
            bytes += u64::from(p.len);
            live.entry(p.segment).or_default().add(p);
        };
        let mut after = None;
        loop {
            let page = index.scan(after, 4096)?;
            let Some(&(last, _)) = page.last() else {
                break;
            };
            after = Some(last);
            page.into_iter().for_each(|(_, p)| held(p));
        }
        // Layout 1's pointers not moved into the index yet ([`SledStore::group`]).
        let old = old_pointers(&db)?;
        for item in old.iter().flat_map(|t| t.iter()) {
            let (k, v) = item?;
            if let (Some(seq), Some(p)) = (seq_of(&k), Pointer::from_bytes(&v)) {
                if !index.contains(seq)? {
                    held(p);
                }
            }
        }
        let old_pointers_last = match &old {
            Some(t) => t.last()?.and_then(|(k, _)| seq_of(&k)),
            None => None,
        };
        let io = |e: std::io::Error| sled::Error::Io(e);
        let segments = Segments::open(dir, live).map_err(OpenError::Values)?;
        let mark = Mark::open(&dir.join(MARK_FILE)).map_err(io)?;
        // After the mark file: its directory entry is synced with sled's.
        let (files, unreported_syncs) = SledFiles::open(dir).map_err(io)?;
        let marked = mark.value();
        // Not a reason to refuse the open (the counters are read again, and their failure
        // said, by the pipeline's start); a partial read would write a file missing some.
        let far = match state
            .scan_prefix(FCNT_PREFIX)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
        {
            Ok(fcnts) => Some(FarCounters::open(fcnts, dir)),
            Err(e) => {
                log::warn!(
                    "buffer: cannot read the kept frame counters ({e}): {} is left as it is",
                    dir.join(far_counters::FILE).display()
                );
                None
            }
        };
        let mut store = SledStore {
            db,
            dir: dir.to_path_buf(),
            index,
            segments,
            retiring: BTreeSet::new(),
            compaction: Compaction::default(),
            keep_free: 0,
            dead,
            meta,
            state,
            far,
            count,
            bytes,
            highest: None,
            syncs: Arc::new(Mutex::new(Syncs { files, mark })),
            flusher: None,
            changed: false,
            unreported_syncs,
            reclaimed_to: 0,
            lock: None,
            broken: None,
            sync_failed: None,
            unlinked: None,
            moved_aside: false,
            reserve_released: 0,
            too_large: 0,
        };
        // An old layout's records count too: they are moved over under their numbers.
        let old_last = store
            .old_records()
            .ok()
            .flatten()
            .and_then(|t| t.last().ok().flatten())
            .and_then(|(k, _)| seq_of(&k));
        store.highest = [
            store.stored_mark(),
            store.last_key(),
            marked,
            old_last,
            old_pointers_last,
        ]
        .into_iter()
        .max()
        .flatten();
        Ok(store)
    }

    /// Records at or below the mark `flushed` (acknowledged) whose pointers name a segment
    /// that is gone are pointed at an entry of theirs in the segments that are there (the
    /// one written last), when one reads whole. A flush that only moved records
    /// (compaction) writes no mark, so sled losing it goes unseen by the marks: its pointers
    /// go back to originals whose segments were deleted since, and the copies are in a
    /// segment no pointer names any more. Any other such record is damage; the drain counts
    /// it.
    ///
    /// `gone`: what the last look left to find (`None`: look for every such record, in
    /// every segment); only the segments it could not look in are looked in again. Once
    /// every segment was looked in, those no pointer names are deleted; until then they
    /// stay, and [`Unlinked`] says when to look again.
    fn relink(&mut self, flushed: u64, gone: Option<Gone>) {
        let at_open = self.unlinked.is_none();
        let looked = self
            .to_find(flushed, gone)
            .and_then(|(gone, numbers)| self.look_in(&gone, &numbers, at_open).map(|l| (gone, l)));
        let (
            gone,
            Looked {
                found,
                unlooked,
                passes,
            },
        ) = match looked {
            Ok(looked) => looked,
            Err(e) => {
                let failed = self.unlinked.as_ref().map_or(0, |u| u.failed) + 1;
                let wait = RELINK_RETRY * 2u32.pow(failed.min(6) - 1);
                log::error!(
                    "buffer: looking for records that name segments that are gone: {}; \
                     looked for again in {}s, and the segments no record names stay until then",
                    e.why,
                    wait.as_secs()
                );
                let holding = self.segments.holding().into_iter().collect();
                self.segments.look_in_later(holding);
                self.unlinked = Some(Unlinked {
                    flushed,
                    gone: None,
                    passes: e.passes,
                    retry: Instant::now() + wait,
                    failed,
                });
                return;
            }
        };
        if !gone.is_empty() && (at_open || !found.is_empty()) {
            log::warn!(
                "buffer: {} acknowledged record(s) named segment files that are gone ({:?}); \
                 {} found whole in the other segments (sled lost flushed writes) and kept",
                gone.len(),
                self.segments.missing(),
                found.len()
            );
        }
        if unlooked.is_empty() {
            if !at_open {
                log::warn!(
                    "buffer: the segments relink could not look in were looked in: {} more \
                     record(s) found; {} still name segments that are gone and are damage",
                    found.len(),
                    gone.len() - found.len()
                );
            }
            self.segments.look_in_later(BTreeSet::new());
            if at_open {
                self.segments.remove_orphans();
            } else {
                // Some may have been emptied by removals the flush about to run makes durable.
                self.segments.retire_orphans();
            }
            self.unlinked = None;
            return;
        }
        let left: Gone = gone
            .into_iter()
            .filter(|(seq, _)| !found.contains_key(seq))
            .collect();
        if at_open {
            log::error!(
                "buffer: segments {unlooked:?} cannot be looked in for the {} record(s) still \
                 not found: looked in again every {}s; until then the drain waits on those \
                 records, and the segments no record names stay",
                left.len(),
                RELINK_RETRY.as_secs()
            );
        }
        self.segments.look_in_later(unlooked);
        self.unlinked = Some(Unlinked {
            flushed,
            gone: Some(left),
            passes,
            retry: Instant::now() + RELINK_RETRY,
            failed: 0,
        });
    }

    /// Look again for the records relink could not find, once [`RELINK_RETRY`] passed.
    fn relink_if_due(&mut self) {
        let Some(u) = self.unlinked.as_mut().filter(|u| Instant::now() >= u.retry) else {
            return;
        };
        let (flushed, gone) = (u.flushed, u.gone.take());
        self.relink(flushed, gone);
    }

    /// The records to look for, with the pointers they hold, and the segments to look in,
    /// in the order they were written: those the last look left (`gone`) that still hold
    /// the same pointers, in the segments it could not look in; with no last look, every
    /// record at or below `flushed` whose pointer names a segment that is gone, in every
    /// segment.
    fn to_find(&self, flushed: u64, gone: Option<Gone>) -> Result<(Gone, Vec<u32>), LookFailed> {
        if let Some(gone) = gone {
            let mut still = BTreeMap::new();
            for (seq, p) in gone {
                if self.index.get(seq)? == Some(p) {
                    still.insert(seq, p);
                }
            }
            // Once they have all left (delivered, expired, taken for damage), nothing is
            // looked for: the segments no pointer names can go.
            let numbers = if still.is_empty() {
                Vec::new()
            } else {
                self.segments.unlooked_as_written()
            };
            return Ok((still, numbers));
        }
        let missing = self.segments.missing();
        let mut gone = BTreeMap::new();
        if !missing.is_empty() {
            let mut after = None;
            'pages: loop {
                let page = self.index.scan(after, 4096)?;
                let Some(&(last, _)) = page.last() else {
                    break;
                };
                after = Some(last);
                for (seq, p) in page {
                    if seq > flushed {
                        break 'pages;
                    }
                    if missing.contains(&p.segment) {
                        gone.insert(seq, p);
                    }
                }
            }
        }
        if gone.is_empty() {
            return Ok((gone, Vec::new()));
        }
        let numbers = self.segments.numbers_as_written().map_err(|e| LookFailed {
            why: format!("{}: listing the segments: {e}", self.dir.display()),
            passes: super::segments::passes(&e),
        })?;
        Ok((gone, numbers))
    }

    /// Look in segments `numbers` for whole entries of the records `gone`, and point each
    /// found at the one written last. `at_open`: each segment tells systemd the start goes
    /// on.
    fn look_in(
        &mut self,
        gone: &Gone,
        numbers: &[u32],
        at_open: bool,
    ) -> Result<Looked, LookFailed> {
        let (mut found, mut unlooked, mut passes) = (BTreeMap::new(), BTreeSet::new(), true);
        for (i, &number) in numbers.iter().enumerate() {
            if at_open {
                crate::notify::extend_start(
                    BATCH_ALLOWANCE,
                    &format!(
                        "looking for records in the buffer's segments: {} of {}",
                        i + 1,
                        numbers.len()
                    ),
                );
            }
            let (file, headers) = match self.segments.headers(number) {
                Ok(opened) => opened,
                // Gone or cut short since it was listed: what is left of it was looked in.
                Err(e) if super::segments::is_damage(&e) => continue,
                Err(e) => {
                    passes &= super::segments::passes(&e);
                    unlooked.insert(number);
                    continue;
                }
            };
            for (seq, at) in headers {
                if !gone.contains_key(&seq) {
                    continue;
                }
                match read_entry(&file, seq, at) {
                    Ok(body) if super::decode(&body).is_ok() => {
                        found.insert(seq, at);
                    }
                    Ok(_) | Err(ReadError::Damaged(_)) => {}
                    Err(e) => {
                        passes &= matches!(e, ReadError::Passing(_));
                        unlooked.insert(number);
                    }
                }
            }
        }
        let mut taken = BTreeMap::new();
        for (seq, to) in found {
            let from = gone[&seq];
            // The segment is taken as holding it (off the list of those deleted at open)
            // before sled's pointer names it, and its entry synced by the next flush.
            let held = self
                .segments
                .sync_with_next_flush(to.segment)
                .and_then(|()| self.segments.relinked(from, to));
            if let Err(e) = held {
                log::error!(
                    "buffer: record #{seq} found in segment {}, which cannot be used: {e}",
                    to.segment
                );
                passes &= super::segments::passes(&e);
                unlooked.insert(to.segment);
                continue;
            }
            self.index.insert(seq, to)?;
            self.bytes = self.bytes - u64::from(from.len) + u64::from(to.len);
            self.changed = true;
            taken.insert(seq, to);
        }
        Ok(Looked {
            found: taken,
            unlooked,
            passes,
        })
    }

    /// The highest sequence number flushed, as the mark file holds it.
    pub(super) fn marked(&self) -> Option<u64> {
        self.syncs().mark.value()
    }

    /// No flush runs while the forwarder looks (one at a time), so this does not wait.
    fn syncs(&self) -> std::sync::MutexGuard<'_, Syncs> {
        self.syncs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record `seq` cannot be buffered: its group of the index is damaged. Every flush
    /// from now on fails, which ends the run (see [`BufferError::SyncFailed`]).
    fn damaged_group(&mut self, seq: u64) -> BufferError {
        let why = format!(
            "{}: record #{seq}'s entry in the index is damaged and is not written over; the \
             next open salvages it",
            self.dir.display()
        );
        self.sync_failed = Some(why.clone());
        BufferError::SyncFailed(why)
    }

    /// A record's body the segment refused: an error the ledger retries (a full disk, a
    /// failing block). A file system that turned read-only, or shut down after an error
    /// (a card that failed a write, under `errors=remount-ro`: [`super::disk::Refusal`]),
    /// takes nothing until it is checked at the next boot: that ends the run as a failed
    /// sync does, at once, and the next start runs without the buffer rather than hold the
    /// sources for the next flush's failure.
    fn append_failed(&mut self, seq: u64, e: std::io::Error) -> BufferError {
        let why = format!("{}: appending record #{seq}: {e}", self.dir.display());
        if !super::disk::refuses_writes(&e) {
            return BufferError::Storage(why);
        }
        let refusal = super::disk::Refusal::of(&self.dir);
        if e.raw_os_error() == Some(libc::EIO) && refusal != super::disk::Refusal::Failed {
            return BufferError::Storage(why);
        }
        let why = format!("{why}: {}", refusal.hint());
        self.sync_failed = Some(why.clone());
        BufferError::SyncFailed(why)
    }

    /// What the next flush has to do (`None`: nothing), with the mark it is to write: every
    /// change so far, which sled's flush covers once it starts after this.
    pub(super) fn prepare_flush(&mut self) -> Result<Option<SyncJob>, BufferError> {
        if let Some(why) = &self.sync_failed {
            return Err(BufferError::SyncFailed(why.clone()));
        }
        // A group found damaged by any read, as by an insert: its records are counted but
        // no read finds them, and the open salvages them.
        if self.index.damaged() {
            let why = format!(
                "{}: an entry of the index was found damaged; the next open salvages it",
                self.dir.display()
            );
            self.sync_failed = Some(why.clone());
            return Err(BufferError::SyncFailed(why));
        }
        if let Some(why) = &self.broken {
            return Err(BufferError::Storage(format!(
                "the buffer database is unusable after a failed rebuild ({why}); restart hubgate"
            )));
        }
        self.relink_if_due();
        let mark = self.highest.filter(|h| Some(*h) != self.marked());
        if !self.changed && mark.is_none() && !self.far_stale() {
            return Ok(None);
        }
        // sled refuses every write once a write of its log failed, one its own threads make
        // included, until the database is opened again: like its flush, a failed sync, not a
        // flush to try again (`a_failed_background_write_of_sleds_log_fails_the_next_flush`).
        if let Err(e) = self.index.write() {
            let why = format!("{}: sled's write of the index: {e}", self.dir.display());
            self.sync_failed = Some(why.clone());
            return Err(BufferError::SyncFailed(why));
        }
        if let Some(seq) = mark {
            if let Err(e) = self.meta.insert(MARK_KEY, &seq.to_be_bytes()) {
                let why = format!("{}: sled's write of the mark: {e}", self.dir.display());
                self.sync_failed = Some(why.clone());
                return Err(BufferError::SyncFailed(why));
            }
        }
        let blobs = self.syncs().files.blobs_to_sync().map_err(|e| {
            BufferError::Storage(format!("{}: listing sled's blobs: {e}", self.dir.display()))
        })?;
        self.changed = false;
        self.compaction.prepared();
        self.retiring = self.segments.deletable();
        let counters = self.far.as_mut().and_then(FarCounters::take_file);
        Ok(Some(SyncJob {
            db: self.db.clone(),
            values: self.segments.take_unsynced(),
            syncs: self.syncs.clone(),
            mark,
            counters,
            blobs,
            dir: self.dir.clone(),
        }))
    }

    /// A flush's outcome. After a failed file sync every later flush fails the same way
    /// (see [`BufferError::SyncFailed`]); any other failure (sled's own flush refused) has
    /// to be done again, whole. Segments emptied before the flush was prepared are deleted
    /// once it succeeded: no durable pointer names them any more.
    fn finish_flush(&mut self, outcome: Result<u64, BufferError>) -> Result<u64, BufferError> {
        let retiring = std::mem::take(&mut self.retiring);
        if outcome.is_ok() {
            self.segments.delete(retiring);
        } else {
            self.segments.keep(retiring);
        }
        // Housekeeping: a failure leaves the records where they are, and is tried again.
        let (dir, keep_free) = (&self.dir, self.keep_free);
        let room = |needed| compact::has_room(super::disk::free(dir), needed, keep_free);
        match self
            .compaction
            .flushed(outcome.is_ok(), room, &mut self.segments, &mut self.index)
        {
            Ok(0) => {}
            Ok(n) => log::debug!("buffer: compacting: {n} record(s) copied"),
            Err(e) => log::warn!("buffer: {e}"),
        }
        self.changed |= self.compaction.wants_flush();
        match outcome {
            Ok(syncs) => Ok(syncs + std::mem::take(&mut self.unreported_syncs)),
            Err(BufferError::SyncFailed(why)) => {
                self.sync_failed = Some(why.clone());
                Err(BufferError::SyncFailed(why))
            }
            Err(e) => {
                self.changed = true;
                Err(e)
            }
        }
    }

    /// Bytes the database takes on disk, segments included (more than the records: see
    /// [`RECLAIM_ABOVE`]).
    pub fn size_on_disk(&self) -> Result<u64, BufferError> {
        let segments = self.segments.size_on_disk().map_err(|e| {
            BufferError::Storage(format!("{}: sizing the segments: {e}", self.dir.display()))
        })?;
        Ok(self.db.size_on_disk().map_err(err)? + segments)
    }

    /// A fresh database at `dir` with this one's dead letters and high-water mark, synced.
    fn build(&self, dir: &Path) -> Result<(), BufferError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| fs_error("removing", dir, e))?;
        }
        let mut fresh = Self::open_at(dir)?;
        // sled's iterator answers every call after a read error with that error: each
        // loop over a tree here ends at the first one.
        for entry in self.dead.iter() {
            let (k, v) = entry.map_err(err)?;
            if let Some(seq) = seq_of(&k) {
                fresh.dead_letter(seq, v.to_vec())?;
            }
        }
        fresh.carry_state(self)?;
        fresh.highest = self.highest;
        fresh.flush()?;
        Ok(())
    }

    /// Copy `old`'s state entries (frame counters) into this database.
    fn carry_state(&mut self, old: &SledStore) -> Result<(), BufferError> {
        for entry in old.state.iter() {
            let (k, v) = entry.map_err(err)?;
            self.state_set(&k, &v)?;
        }
        Ok(())
    }

    /// Mark a database of an older layout, or an unmarked one, as this release's (one of a
    /// newer layout was refused at open, [`OpenError::Newer`]). The mark is written before
    /// any group: sled makes its writes durable in their order, so no flush makes a group
    /// of this layout durable without it.
    pub(super) fn mark_layout(&mut self) -> Result<(), BufferError> {
        if stored_layout(&self.state)
            .map_err(err)?
            .is_none_or(|layout| layout < LAYOUT)
        {
            self.state_set(LAYOUT_KEY, &LAYOUT.to_be_bytes())?;
        }
        Ok(())
    }

    /// The high-water mark sled itself holds (written at every flush).
    pub(super) fn stored_mark(&self) -> Option<u64> {
        self.meta
            .get(MARK_KEY)
            .ok()
            .flatten()
            .and_then(|v| seq_of(&v))
    }

    /// Record `seq`'s body, which `pointer` points at; why when it cannot be read.
    pub(super) fn body(&self, seq: u64, pointer: Pointer) -> Result<Vec<u8>, ReadError> {
        self.segments.read(seq, pointer)
    }

    /// Bodies for the pointers `(seq, pointer)`. A damaged one (its entry not there whole)
    /// comes back empty, which [`super::decode`] rejects: the buffer counts it as damaged and
    /// removes it, and the forwarder goes on. Every flush syncs the segments before sled's
    /// flush makes a pointer durable, and the open drops records no flush covered whose body
    /// did not reach the disk ([`SledStore::drop_torn_unflushed`]): what is left in that
    /// state is damage. Any other read error (EMFILE, EIO) ends the bodies before it, and
    /// is [`BufferError::Unreadable`] when it comes first: nothing is removed here. So does a
    /// pointer into a segment that is gone while relink could not look everywhere
    /// ([`Unlinked`]): its copy may be found yet.
    fn bodies(&self, pointers: Vec<(u64, Pointer)>) -> Result<Entries, BufferError> {
        let mut out = Vec::with_capacity(pointers.len());
        for (seq, pointer) in pointers {
            let (why, passes) = match self.body(seq, pointer) {
                Ok(body) => {
                    out.push((seq, body));
                    continue;
                }
                Err(ReadError::Damaged(why)) => match self.copy_looked_for(pointer) {
                    Some(passes) => (
                        format!(
                            "{why}; a copy may be in a segment that cannot be looked in yet \
                             (looked in again every {}s)",
                            RELINK_RETRY.as_secs()
                        ),
                        passes,
                    ),
                    None => {
                        log::error!("buffer: the body of record #{seq} cannot be read: {why}");
                        out.push((seq, Vec::new()));
                        continue;
                    }
                },
                Err(ReadError::Io(why)) => (why, false),
                Err(ReadError::Passing(why)) => (why, true),
            };
            if !out.is_empty() {
                break;
            }
            return Err(BufferError::Unreadable {
                seq,
                why: format!("{}: {why}", self.dir.display()),
                passes,
                segment: Some(pointer.segment),
            });
        }
        Ok(out)
    }

    /// For a pointer into a segment that is gone while relink could not look everywhere
    /// ([`Unlinked`]): whether the reason it could not may pass. `None` for any other.
    fn copy_looked_for(&self, pointer: Pointer) -> Option<bool> {
        let unlinked = self.unlinked.as_ref()?;
        self.segments
            .missing()
            .contains(&pointer.segment)
            .then_some(unlinked.passes)
    }

    /// A pointer left the index: one record less. Returns the bytes its body counted for.
    fn forget(&mut self, p: Pointer) -> u64 {
        self.count -= 1;
        self.segments.removed(p);
        self.bytes -= u64::from(p.len);
        u64::from(p.len)
    }

    fn last_key(&self) -> Option<u64> {
        let last = |t: &sled::Tree| t.last().ok().flatten().and_then(|(k, _)| seq_of(&k));
        let records = self.index.last().ok().flatten();
        records.max(last(&self.dead))
    }

    /// Delete the dead letters, flushed; the records stay (`buffer purge --dead-letters`).
    /// Returns how many there were. Their sequence numbers are not handed out again: the
    /// high-water mark keeps them.
    pub fn purge_dead_letters(&mut self) -> Result<u64, BufferError> {
        let n = self.dead_letters();
        self.dead.clear().map_err(err)?;
        self.changed = true;
        self.flush()?;
        Ok(n)
    }

    /// Whether this open moved the database aside, whether or not it is kept (see
    /// [`moved_aside`](super::moved_aside)): it would not open, or it lost flushed writes
    /// and was salvaged.
    pub fn moved_aside_at_open(&self) -> bool {
        self.moved_aside
    }
}

/// Why [`SledStore::open_inner`] failed.
enum OpenError {
    /// sled or a file of hubgate's beside it will not open: see [`is_busy`] for when that is
    /// damage.
    Db(sled::Error),
    /// The segment directory cannot be used: see [`passes`] for when that is damage.
    Values(std::io::Error),
    /// A newer hubgate wrote the database in this layout, which this one would misread: it
    /// is left as it is (no salvage, no removal: a downgrade must not cost the backlog), and
    /// where sled opened it at first, so is what lies beside it, but for a reserve given back
    /// to a disk short of it ([`refuse_newer`]). `buffer` is the buffer directory, the one to
    /// move away to start empty: a rebuild's database beside the database would take its
    /// place.
    Newer { layout: u32, buffer: PathBuf },
}

impl OpenError {
    /// Whether the database is damaged, and so is moved aside, rather than not usable now.
    fn is_damage(&self) -> bool {
        match self {
            OpenError::Db(e) => !is_busy(e),
            OpenError::Values(e) => !passes(e),
            OpenError::Newer { .. } => false,
        }
    }

    /// What the operator does about a failure that is not damage.
    fn advice(&self) -> &'static str {
        match self {
            OpenError::Db(_) | OpenError::Newer { .. } => "",
            OpenError::Values(_) => {
                "; the database was left as it is, since the buffered records' bodies are \
                 there: make it a readable directory again"
            }
        }
    }
}

/// Whether a failure to use the segment directory may pass: [`is_resource`], or a `values`
/// that is not there (a symbolic link to a file system not mounted yet). Its pointers are
/// intact and the bodies are in that directory or nowhere: moving the database aside would
/// take every buffered record out of the pipeline, and moving the directory alone would turn
/// bodies that may be readable again into damaged records, so the open fails, touching
/// nothing. Anything else is damage no restart clears, and the database is moved aside: the
/// gateway runs on, the records are kept on disk for a human. That includes an I/O error
/// (EIO): a card's bad block fails every start, and failing the open would leave the gateway
/// down once systemd stops restarting it (as for sled's own files); also `values` a plain
/// file (ENOTDIR), and a file system that reports its own damage (EUCLEAN).
fn passes(e: &std::io::Error) -> bool {
    is_resource(e) || e.raw_os_error() == Some(libc::ENOENT)
}

impl From<sled::Error> for OpenError {
    fn from(e: sled::Error) -> OpenError {
        OpenError::Db(e)
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Db(e) => e.fmt(f),
            OpenError::Values(e) => write!(
                f,
                "its segment directory {} cannot be used ({e})",
                super::segments::VALUES_DIR
            ),
            OpenError::Newer { layout, buffer } => write!(
                f,
                "written by a newer hubgate (buffer layout {layout}; this one reads layout \
                 {LAYOUT}): refused, its records left as they are. Run the newer hubgate until \
                 the buffer has drained, or move {} away to start with an empty buffer",
                buffer.display()
            ),
        }
    }
}

/// The layout the state tree names, if any.
fn stored_layout(state: &sled::Tree) -> sled::Result<Option<u32>> {
    Ok(state
        .get(LAYOUT_KEY)?
        .and_then(|v| Some(u32::from_be_bytes(v.as_ref().try_into().ok()?))))
}

/// Refuse the buffer in `buffer_dir` if a newer release wrote it ([`OpenError::Newer`]),
/// before the open changes anything there but sled's own files: what a power cut left of a
/// rebuild's swap or of a salvaged database's removal is that release's to deal with, by
/// its rules. The layout is read from the database the open would use: `sled`, or where a
/// swap was cut off without it, the one [`finish_swap`] makes it. It is only in sled, and
/// sled's open writes its own files (over its log past the last entry, a torn log segment,
/// and a snapshot of the log), never what its trees hold. So the reserve is given back
/// before this on a disk short of it, as for any open, for sled to have room to open.
///
/// Where sled will not open here (its `conf` gone, a disk full until the leftovers are
/// removed, out of descriptors), the open goes on and [`SledStore::with_db`] refuses a
/// newer layout once it opens, after those leftovers were dealt with by this release's
/// rules. Failing the open instead would stall the agent on a full disk that removing them
/// makes room on; what sled's open cut short it leaves as after a power cut (see
/// [`remove_torn_snapshots`]).
///
/// Returns sled opened at `sled`, for the open to go on with rather than wait for sled to
/// let go of its lock; `None` for another database, none, or one sled would not open:
/// [`SledStore::open_locked`] meets that again, and moves a damaged one aside.
fn refuse_newer(buffer_dir: &Path) -> Result<Option<sled::Db>, BufferError> {
    let dir = buffer_dir.join(DB_DIR);
    let (new, old) = swap_dirs(&dir);
    let Some(at) = [&dir, &new, &old].into_iter().find(|d| d.exists()) else {
        return Ok(None);
    };
    let Ok(Some(db)) = existing_db(at) else {
        return Ok(None);
    };
    if let Some(layout) = newer_layout(&db) {
        let buffer = buffer_dir.to_path_buf();
        return Err(BufferError::Storage(format!(
            "{}: {}",
            at.display(),
            OpenError::Newer { layout, buffer }
        )));
    }
    Ok((*at == dir).then_some(db))
}

/// sled opened at `dir`; `None` where it holds no database (sled would make one there).
fn existing_db(dir: &Path) -> Result<Option<sled::Db>, sled::Error> {
    match dir.join("conf").is_file() {
        true => open_db(dir).map(Some),
        false => Ok(None),
    }
}

/// The layout `db` names if it is newer than this release's. Opens no tree that is not
/// there (that would make it); a layout that cannot be read counts as none.
fn newer_layout(db: &sled::Db) -> Option<u32> {
    if !db.tree_names().iter().any(|name| *name == "state") {
        return None;
    }
    let state = db.open_tree("state").ok()?;
    stored_layout(&state)
        .ok()?
        .filter(|layout| *layout > LAYOUT)
}

/// The layout of the database at `dir` if it is newer than this release's; `None` for one
/// sled will not open as damaged, or that holds none (see [`existing_db`]). Where sled will
/// not open it for now, why, in words for the operator: held by another process (after
/// [`LOCK_WAIT`]), or a reason that passes ([`is_busy`]).
pub(super) fn newer_layout_at(dir: &Path) -> Result<Option<u32>, String> {
    match existing_db(dir) {
        Ok(db) => Ok(db.and_then(|db| newer_layout(&db))),
        Err(e) if is_locked(&e) => Err(String::from(
            "its sled is in use by another process (a hubgate running on it? stop it first)",
        )),
        Err(e) if is_busy(&e) => Err(format!(
            "its sled will not open for now ({e}); run it again once that passes"
        )),
        Err(_) => Ok(None),
    }
}

/// Open sled at `dir`, waiting out its own file lock for up to [`LOCK_WAIT`]: sled releases
/// the lock on a background thread some time after the last handle is dropped, so reopening
/// a database this process just closed (a rebuild, a salvage, a purge) can find it still
/// held. Another hubgate cannot be the holder of its own buffer's: the buffer directory's
/// lock (see [`BufferLock`]) keeps it out before sled is opened; `buffer recover` opens
/// another directory's, which a running hubgate may hold.
pub(super) fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        // While the lock is held, sled is not opened at all: were it let go of between the
        // look and sled's open, sled would read a snapshot not removed yet.
        let opened = match remove_torn_snapshots(dir)? {
            SledLock::Held => Err(locked(dir)),
            SledLock::Free => open_sled(dir),
        };
        match opened {
            Err(e) if is_locked(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// sled's open of `dir`. sled asserts on some damage to its log (two segments that name one
/// log position): such a panic is this database's damage, not the process's, so it is an
/// error here. A start moves the database aside and runs on, rather than abort at every
/// start; `buffer recover` reads its segments as it does any damaged database's.
fn open_sled(dir: &Path) -> Result<sled::Db, sled::Error> {
    crate::contain::contain(|| {
        sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE)
            .flush_every_ms(None)
            .open()
    })
    .unwrap_or_else(|panic| {
        Err(sled::Error::Io(std::io::Error::other(format!(
            "sled's open failed on damage to its log: {panic}"
        ))))
    })
}

/// Whether sled's own lock on a database's log was free.
#[derive(Debug, PartialEq)]
enum SledLock {
    /// Free, and the snapshots sled did not finish gone; or no log to lock, or one that
    /// cannot be looked at (sled's open meets that too).
    Free,
    /// Another open of sled holds it (here or in another process): nothing was removed.
    Held,
}

/// The error sled's open gives while another holds its lock on `dir`'s log (see
/// [`is_locked`]).
fn locked(dir: &Path) -> sled::Error {
    sled::Error::Io(std::io::Error::other(format!(
        "could not acquire lock on {}: held by another open of sled",
        dir.join("db").display()
    )))
}

/// A snapshot sled did not finish that cannot be removed: sled would take it for damage,
/// so the open fails until it can be ([`is_busy`]), the database left as it is.
#[derive(Debug)]
struct TornSnapshot {
    path: PathBuf,
    why: std::io::Error,
}

impl std::fmt::Display for TornSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is a snapshot sled did not finish and cannot be removed ({}); sled would take \
             the database for damaged",
            self.path.display(),
            self.why
        )
    }
}

impl std::error::Error for TornSnapshot {}

/// Remove the snapshots sled did not finish from `dir`. sled writes a snapshot (only as it
/// opens) to `snap.<lsn>.generating`, syncs it and renames it to `snap.<lsn>`, and only then
/// removes the one before; but at its next open it reads the last `snap.*` by name, such a
/// file too. One cut short by a full disk or a power cut would be taken for damage and the
/// database moved aside, every record with it. Without it sled reads the snapshot before
/// and its log from there, as after a power cut before the file was made; nothing else
/// sled writes is named so. Only while sled's own lock on `db` is free, taken for the
/// removal: a sled opening there (another buffer's, named to `buffer recover`) may be
/// writing one. Without a `db` sled never wrote a snapshot here; where `db` or `dir`
/// cannot be read, sled's open meets that too.
fn remove_torn_snapshots(dir: &Path) -> Result<SledLock, sled::Error> {
    let Ok(db) = std::fs::File::open(dir.join("db")) else {
        return Ok(SledLock::Free);
    };
    match super::lock::try_exclusive(&db) {
        Ok(true) => {}
        Ok(false) => return Ok(SledLock::Held),
        Err(_) => return Ok(SledLock::Free),
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(SledLock::Free);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("snap.") && name.ends_with(".generating")) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            // A reason that passes (no permission, a read-only or full file system): the open
            // waits for it rather than move a sound database aside.
            Err(why) if is_resource(&why) => {
                let torn = TornSnapshot { path, why };
                return Err(sled::Error::Io(std::io::Error::other(torn)));
            }
            // Anything else (an I/O error: a bad block) is the card's damage, which fails
            // every start if waited for: sled's open meets the file and the database is
            // moved aside, its records recoverable, and the gateway runs on.
            Err(why) => {
                log::warn!(
                    "buffer: {} is a snapshot sled did not finish and cannot be removed ({why})",
                    path.display()
                );
                continue;
            }
        }
        log::warn!(
            "buffer: removed {}, a snapshot sled did not finish",
            path.display()
        );
    }
    Ok(SledLock::Free)
}

fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// `sled.new` and `sled.old` beside `dir` (the database directory).
fn swap_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    (with_suffix(dir, ".new"), with_suffix(dir, ".old"))
}

pub(super) fn with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Finish or undo a space-reclaiming swap (see [`SledStore::reclaim`]) a power cut
/// interrupted. `sled.new` is complete (flushed) before the swap starts, so: without
/// `sled`, it replaces it; with `sled`, it was never swapped in and goes. A `sled.old`
/// left behind is the drained database it replaced.
fn finish_swap(dir: &Path) -> Result<(), BufferError> {
    let (new, old) = swap_dirs(dir);
    if new.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&new).map_err(|e| fs_error("removing", &new, e))?;
        } else {
            log::warn!("buffer: completing the swap a restart interrupted");
            std::fs::rename(&new, dir).map_err(|e| fs_error("renaming", &new, e))?;
        }
    }
    if old.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| fs_error("removing", &old, e))?;
        } else {
            // Only the drained database is left (the new one was lost): it still holds the
            // dead letters and the high-water mark.
            log::warn!("buffer: taking back the database a restart interrupted the rebuild of");
            std::fs::rename(&old, dir).map_err(|e| fs_error("renaming", &old, e))?;
        }
    }
    Ok(())
}

/// A failed file-system operation `what` (removing, renaming) on `p`.
fn fs_error(what: &str, p: &Path, e: std::io::Error) -> BufferError {
    BufferError::Storage(format!("{what} {}: {e}", p.display()))
}

/// Errors that say "not now", not "damaged": the lock is still held, no permission, the
/// process is out of descriptors or memory, the file system is read-only or full, a
/// snapshot sled did not finish cannot be removed ([`TornSnapshot`]). Moving a sound
/// database aside for one of these would strand every record it holds.
fn is_busy(e: &sled::Error) -> bool {
    let sled::Error::Io(io) = e else {
        return false;
    };
    is_locked(e) || is_resource(io) || io.get_ref().is_some_and(|e| e.is::<TornSnapshot>())
}

/// No permission, out of descriptors or memory, a read-only or full file system.
fn is_resource(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::PermissionDenied
        || matches!(
            io.raw_os_error(),
            Some(
                libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOMEM
                    | libc::EROFS
                    | libc::ENOSPC
                    | libc::EDQUOT
            )
        )
}

/// Up to `limit` entries of `tree` with a sequence number above `after`, in order.
fn scan_tree(
    tree: &sled::Tree,
    after: Option<u64>,
    limit: usize,
) -> Result<Vec<(u64, sled::IVec)>, BufferError> {
    let iter = match after {
        Some(a) => tree.range((
            std::ops::Bound::Excluded(a.to_be_bytes()),
            std::ops::Bound::Unbounded,
        )),
        None => tree.iter(),
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    for item in iter.take(limit) {
        let (k, v) = item.map_err(err)?;
        match seq_of(&k) {
            Some(seq) => out.push((seq, v)),
            None => log::error!(
                "buffer: ignoring a key of {} bytes that is not a sequence number",
                k.len()
            ),
        }
    }
    Ok(out)
}

pub(super) fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl Store for SledStore {
    /// The body goes to the segment first, then its pointer into the index (held in memory;
    /// sled is written at the flush). An append that fails (a full disk) is an error, as a
    /// pointer the index refuses is, and leaves no record; one on a file system that failed
    /// (read-only or shut down) ends the run ([`SledStore::append_failed`]).
    /// A record whose group of the index is damaged cannot be buffered this run: that ends
    /// it as a failed sync does (the next flush fails the same way), and the open after it
    /// salvages; no body is appended for it once the damage is known.
    fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        if self.index.in_damaged(seq) {
            return Err(self.damaged_group(seq));
        }
        let p = match self.segments.append(seq, &value) {
            Ok(p) => p,
            Err(e) => return Err(self.append_failed(seq, e)),
        };
        self.highest = self.highest.max(Some(seq));
        self.changed = true;
        let old = match self.index.insert(seq, p) {
            Ok(old) => old,
            Err(_) if self.index.in_damaged(seq) => return Err(self.damaged_group(seq)),
            Err(e) => return Err(err(e)),
        };
        // Counted before the old pointer leaves: were it the last, the segment `p` points
        // into would be retired as drained.
        self.segments.added(p);
        self.count += 1;
        if let Some(old) = old {
            self.forget(old);
        }
        self.bytes += u64::from(p.len);
        Ok(())
    }

    /// A removal is held in the index until the next flush writes it. A record in a group
    /// found damaged reads as not there: nothing is removed, it stays counted, and the open's
    /// salvage carries it again (a duplicate). One whose group sled cannot read is an error,
    /// and has the next flush call sled's, which fails the same way if sled failed for good.
    fn remove(&mut self, seq: u64) -> Result<u64, BufferError> {
        let removed = self.index.remove(seq).map_err(|e| {
            self.changed = true;
            err(e)
        })?;
        match removed {
            Some(old) => {
                self.changed = true;
                Ok(self.forget(old))
            }
            None => Ok(0),
        }
    }

    /// The budget is counted from the pointers' lengths: no body past it is read.
    fn scan_within(
        &self,
        after: Option<u64>,
        limit: usize,
        bytes: u64,
    ) -> Result<Entries, BufferError> {
        let mut pointers = self.index.scan(after, limit).map_err(err)?;
        pointers.truncate(super::within(
            pointers.iter().map(|(_, p)| u64::from(p.len)),
            bytes,
        ));
        self.bodies(pointers)
    }

    fn scan_dead(&self, after: Option<u64>, limit: usize) -> Result<Entries, BufferError> {
        let letters = scan_tree(&self.dead, after, limit)?;
        Ok(letters.into_iter().map(|(s, v)| (s, v.to_vec())).collect())
    }

    fn seqs_back(&self, limit: usize) -> Result<Vec<u64>, BufferError> {
        self.index.back(limit).map_err(err)
    }

    fn first_seq(&self) -> Result<Option<u64>, BufferError> {
        self.index.first().map_err(err)
    }

    fn state_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.changed = true;
        self.state.insert(key, value).map_err(err)?;
        if let Some(far) = self.far.as_mut().filter(|_| key.starts_with(FCNT_PREFIX)) {
            far.set(key, value);
        }
        Ok(())
    }

    fn state_remove(&mut self, key: &[u8]) -> Result<(), BufferError> {
        self.changed = true;
        self.state.remove(key).map_err(err)?;
        if let Some(far) = self.far.as_mut().filter(|_| key.starts_with(FCNT_PREFIX)) {
            far.remove(key);
        }
        Ok(())
    }

    fn state_scan(&self, prefix: &[u8]) -> Result<Vec<StateEntry>, BufferError> {
        self.state
            .scan_prefix(prefix)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(err))
            .collect()
    }

    fn flush(&mut self) -> Result<u64, BufferError> {
        let outcome = match self.prepare_flush()? {
            Some(job) => job.run(),
            None => Ok(0),
        };
        self.finish_flush(outcome)
    }

    fn start_flush(&mut self, done: &Arc<Notify>) -> Option<Result<u64, BufferError>> {
        let job = match self.prepare_flush() {
            Ok(Some(job)) => job,
            Ok(None) => return Some(self.finish_flush(Ok(0))),
            Err(e) => return Some(Err(e)),
        };
        if self.flusher.is_none() {
            match Flusher::start() {
                Ok(f) => self.flusher = Some(f),
                Err(e) => {
                    log::warn!("buffer: cannot start the flush thread ({e}): flushing here");
                    let outcome = job.run();
                    return Some(self.finish_flush(outcome));
                }
            }
        }
        let flusher = self.flusher.as_ref().expect("started above");
        match flusher
            .jobs
            .as_ref()
            .map(|jobs| jobs.send((job, done.clone())).is_ok())
        {
            Some(true) => None,
            _ => {
                self.flusher = None;
                Some(self.finish_flush(Err(thread_gone())))
            }
        }
    }

    fn flushed(&mut self, wait: bool) -> Option<Result<u64, BufferError>> {
        let done = &self.flusher.as_ref()?.done;
        let outcome = if wait {
            done.recv().unwrap_or_else(|_| Err(thread_gone()))
        } else {
            match done.try_recv() {
                Ok(outcome) => outcome,
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => Err(thread_gone()),
            }
        };
        Some(self.finish_flush(outcome))
    }

    fn usage(&self) -> (u64, u64) {
        (self.count, self.bytes)
    }

    fn wants_flush(&self) -> bool {
        self.compaction.wants_flush()
            || self.far_stale()
            || self
                .unlinked
                .as_ref()
                .is_some_and(|u| Instant::now() >= u.retry)
    }

    fn keep_free(&mut self, bytes: u64) {
        self.keep_free = bytes;
    }

    fn release_reserve_if_short(&mut self) -> u64 {
        std::mem::take(&mut self.reserve_released)
            + super::reserve::release_if_short(self.buffer_dir())
    }

    fn take_too_large(&mut self) -> u64 {
        std::mem::take(&mut self.too_large)
    }

    fn keep_reserve(&mut self, min_free: u64) -> std::io::Result<bool> {
        super::reserve::keep(self.buffer_dir(), min_free)
    }

    /// Never below a number handed out before, so sequence numbers are not reused even
    /// after the buffer drained.
    fn last_seq(&self) -> Option<u64> {
        self.highest
    }

    fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        self.highest = self.highest.max(Some(seq));
        self.changed = true;
        self.dead.insert(seq.to_be_bytes(), value).map_err(err)?;
        Ok(())
    }

    fn dead_letters(&self) -> u64 {
        // Not sled's `len`: it counts sled's iterator, which repeats a read error forever.
        self.dead.iter().take_while(Result::is_ok).count() as u64
    }

    fn disk_free(&self) -> Option<u64> {
        #[cfg(test)]
        if let Some(free) = super::test_support::DISK_FREE.with(std::cell::Cell::get) {
            return Some(free);
        }
        super::disk::free(&self.dir)
    }

    /// Rebuild a drained database that grew past [`RECLAIM_ABOVE`] ([`RECLAIM_WHEN_LOW`]
    /// when the disk is `low`) and past twice its size after the last rebuild (dead letters
    /// alone may be large, and an SD card is not rewritten for nothing): a fresh database
    /// with the dead letters and the mark is built in `sled.new`, synced, and swapped in;
    /// both renames are synced before a record can go into it. On failure the drained
    /// database stays in use.
    fn reclaim(&mut self, low: bool) -> Result<Option<(u64, u64)>, BufferError> {
        if self.count != 0 {
            return Ok(None);
        }
        let before = self.size_on_disk()?;
        let floor = if low { RECLAIM_WHEN_LOW } else { RECLAIM_ABOVE };
        let dead_bytes = self
            .dead
            .iter()
            .map(|entry| entry.map(|(_, v)| v.len() as u64))
            .sum::<Result<u64, _>>()
            .map_err(err)?;
        if before <= floor.max(2 * self.reclaimed_to)
            || self
                .disk_free()
                .is_some_and(|f| f < dead_bytes + REBUILD_ROOM)
        {
            return Ok(None);
        }
        // Whatever happens now, do not try again before it has doubled.
        self.reclaimed_to = before;
        let (new, old) = swap_dirs(&self.dir);
        let parent = self.buffer_dir();
        if let Err(e) = self.build(&new) {
            let _ = std::fs::remove_dir_all(&new);
            return Err(e);
        }
        // Our database stays open (and sled's lock with it) through the renames.
        if let Err(e) = std::fs::rename(&self.dir, &old) {
            let _ = std::fs::remove_dir_all(&new);
            return Err(fs_error("renaming", &self.dir, e));
        }
        let swapped = std::fs::rename(&new, &self.dir)
            .map_err(|e| fs_error("renaming", &new, e))
            .and_then(|()| sync_dir(parent).map_err(|e| fs_error("syncing", parent, e)))
            .and_then(|()| Self::open_at(&self.dir));
        let mut fresh = match swapped {
            Ok(f) => f,
            Err(e) => {
                // Back to the drained database, which holds everything.
                if self.dir.exists() {
                    let _ = std::fs::rename(&self.dir, &new);
                }
                let back = std::fs::rename(&old, &self.dir)
                    .map_err(|e| fs_error("renaming", &old, e))
                    .and_then(|()| sync_dir(parent).map_err(|e| fs_error("syncing", parent, e)));
                if let Err(undo) = back {
                    // Where this database will be found after a power cut is unknown: accept
                    // nothing more into it (flushes fail, so nothing more is acknowledged).
                    self.broken = Some(format!("{e}; undoing it: {undo}"));
                }
                let _ = std::fs::remove_dir_all(&new);
                return Err(e);
            }
        };
        fresh.lock = self.lock.take();
        fresh.keep_free = self.keep_free;
        drop(std::mem::replace(self, fresh));
        if let Err(e) = std::fs::remove_dir_all(&old) {
            // Harmless: the next start removes it.
            log::warn!("buffer: cannot remove {}: {e}", old.display());
        }
        let after = self.size_on_disk()?;
        self.reclaimed_to = after;
        Ok(Some((before, after)))
    }

    fn purge(&mut self) -> Result<u64, BufferError> {
        let n = self.count;
        self.index.clear().map_err(err)?;
        self.compaction.clear();
        self.segments.clear();
        self.changed = true;
        self.count = 0;
        self.bytes = 0;
        self.flush()?;
        // An operator who purges wants the space back, too; the purge stands either way.
        if let Err(e) = self.reclaim(true) {
            log::warn!("buffer: purged, but the disk space was not given back: {e}");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resource_errors_do_not_move_the_database_aside() {
        let io = |errno| sled::Error::Io(std::io::Error::from_raw_os_error(errno));
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::EACCES,
            libc::ENOSPC,
        ] {
            assert!(super::is_busy(&io(errno)), "errno {errno}");
        }
        assert!(!super::is_busy(&io(libc::EIO)));
        assert!(!super::is_busy(&sled::Error::Unsupported("damaged".into())));
    }

    use super::super::salvage::moved_aside;
    use super::super::test_support::listing::{changed_but_sleds, listing};
    use super::super::test_support::{
        assert_current_layout, body_of, buffer_of, compact, compacted_then_taken_back, fill,
        fill_with, flushed_store, lose_pointers, make_the_blob_unreadable, moved,
        one_in_four_stays, past_a_failing_tail, record, segment_of, seqs, three_flushed, without,
        write_out, CAP_FOWNER, NO_DAC, QUARTER,
    };
    use super::super::tests::churn;
    use super::*;
    use std::collections::BTreeSet;
    use std::ffi::OsString;

    #[test]
    fn survives_reopen_in_order_with_usage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            for seq in [3u64, 1, 2, 300] {
                s.insert(seq, vec![seq as u8; 10 + seq as usize]).unwrap();
            }
            s.remove(2).unwrap();
            // Stored again: the old body no longer counts.
            s.insert(1, vec![9; 5]).unwrap();
            assert_eq!(s.usage(), (3, 5 + 13 + 310));
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.usage(), (3, 5 + 13 + 310));
        assert_eq!(seqs(&s, None), vec![1, 3, 300]);
        assert_eq!(seqs(&s, Some(1)), vec![3, 300]);
        assert_eq!(s.last_seq(), Some(300));
        let bodies = |v: Vec<(u64, Vec<u8>)>| v.into_iter().map(|(_, b)| b).collect::<Vec<_>>();
        let (one, three, last) = (vec![9u8; 5], vec![3u8; 13], vec![44u8; 310]);
        assert_eq!(bodies(s.scan(None, 10).unwrap()), vec![one, three, last]);
        assert_eq!(s.seqs_back(2).unwrap(), vec![300, 3]);
        assert_eq!(s.first_seq().unwrap(), Some(1));
    }

    #[test]
    fn segments_rotate_and_go_once_drained_and_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 9, QUARTER);
        assert_eq!(s.segments.files(), vec![1, 2, 3]);
        s.flush().unwrap();
        for seq in 0..4 {
            s.remove(seq).unwrap();
        }
        assert_eq!(
            s.segments.files(),
            vec![1, 2, 3],
            "removals not durable yet"
        );
        // A flush that fails keeps it: its removals may not be durable.
        let job = s.prepare_flush().unwrap().unwrap();
        drop(job);
        let refused = BufferError::Storage("sled refused".into());
        assert!(s.finish_flush(Err(refused)).is_err());
        assert_eq!(s.segments.files(), vec![1, 2, 3]);
        // Removals made after a flush was prepared wait for the next one.
        let job = s.prepare_flush().unwrap().unwrap();
        for seq in 4..8 {
            s.remove(seq).unwrap();
        }
        run(&mut s, job).unwrap();
        assert_eq!(s.segments.files(), vec![2, 3]);
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![3]);
        // Drained: the segment appended to goes too; the next record starts a new one.
        s.remove(8).unwrap();
        s.flush().unwrap();
        assert!(s.segments.files().is_empty());
        assert_eq!(s.usage(), (0, 0));
        s.insert(9, vec![9; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![4]);
        drop(s);
        // Appends start in a new segment at open.
        let mut s = SledStore::open(dir.path()).unwrap();
        s.insert(10, vec![10; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![4, 5]);
        assert_eq!(seqs(&s, None), vec![9, 10]);
        // A purge deletes them all, the one appended to too.
        assert_eq!(s.purge().unwrap(), 2);
        assert!(s.segments.files().is_empty());
        s.insert(11, vec![11; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![6]);
    }

    /// A drained store holds no segment once the flush that made the removals durable is
    /// done, the one it appended to included: on a low disk its space comes back without a
    /// rebuild. A record stored over the only one left keeps its segment.
    #[test]
    fn a_drained_store_holds_no_segment_after_its_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 3, QUARTER);
        s.flush().unwrap();
        for seq in 0..3 {
            s.remove(seq).unwrap();
        }
        assert_eq!(s.segments.files(), vec![1], "removals not durable yet");
        s.flush().unwrap();
        assert!(s.segments.files().is_empty());
        assert_eq!(s.size_on_disk().unwrap(), s.db.size_on_disk().unwrap());
        assert_eq!(s.reclaim(true).unwrap(), None, "nothing to rebuild for");
        s.insert(3, vec![3; 10]).unwrap();
        s.flush().unwrap();
        s.insert(3, vec![4; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![2]);
        assert_eq!(s.scan(None, 10).unwrap(), vec![(3, vec![4; 10])]);
    }

    /// A failed sync keeps drained segments too (no flush succeeds after it).
    #[test]
    fn a_failed_sync_keeps_drained_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 5, QUARTER);
        s.flush().unwrap();
        for seq in 0..4 {
            s.remove(seq).unwrap();
        }
        let log = s
            .syncs()
            .files
            .swap_log(std::fs::File::open("/dev/null").unwrap());
        assert!(matches!(s.flush(), Err(BufferError::SyncFailed(_))));
        s.syncs().files.swap_log(log);
        assert_eq!(s.segments.files(), vec![1, 2]);
    }

    #[test]
    fn segments_no_pointer_names_are_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let values = {
            let mut s = SledStore::open(dir.path()).unwrap();
            fill(&mut s, 0, 5, QUARTER);
            s.flush().unwrap();
            s.segments.dir().to_path_buf()
        };
        // Written, its pointer never durable (a crash).
        std::fs::write(values.join("00000099.seg"), b"left over").unwrap();
        std::fs::write(values.join("not-a-segment"), b"kept").unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.segments.files(), vec![1, 2]);
        assert!(values.join("not-a-segment").exists());
        s.insert(6, vec![6; 10]).unwrap();
        assert_eq!(
            s.segments.files(),
            vec![1, 2, 3],
            "numbered after the segments kept"
        );
    }

    /// A segment number taken from a damaged or hostile name (`u32::MAX`, or a damaged
    /// pointer's) does not stop inserts: the files no pointer names go, and numbers wrap
    /// past the last one, skipping those in use. Names that only parse to a number are not
    /// segments.
    #[test]
    fn a_segment_number_at_the_end_does_not_stop_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let values = {
            let mut s = SledStore::open(dir.path()).unwrap();
            fill(&mut s, 0, 2, 10);
            s.flush().unwrap();
            s.segments.dir().to_path_buf()
        };
        std::fs::write(values.join("4294967295.seg"), b"hostile").unwrap();
        std::fs::write(values.join("+7.seg"), b"not a segment").unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert!(!values.join("4294967295.seg").exists());
        assert!(values.join("+7.seg").exists());
        s.insert(2, vec![2; 10]).unwrap();
        assert_eq!(s.segments.files(), vec![1, 2]);
        // A damaged pointer names the last number (no entry of the record that decodes is
        // found elsewhere): the next segment wraps to the first number not in use.
        let mut p = s.index.get(1).unwrap().unwrap();
        p.segment = u32::MAX;
        s.index.insert(1, p).unwrap();
        s.flush().unwrap();
        write_out(&mut s);
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        s.insert(3, vec![3; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![1, 2, 3]);
        let read = s.scan(None, 10).unwrap();
        assert_eq!(
            read,
            vec![
                (0, vec![0; 10]),
                (1, vec![]),
                (2, vec![2; 10]),
                (3, vec![3; 10])
            ]
        );
    }

    /// An append that fails at a segment's tail (a bad block of a card: EIO every time, the
    /// other files fine) does not fail the next: that one goes to a new segment, instead of
    /// to the same offset, failing, for good. The torn tail left is read as nothing: every
    /// record comes back in order after a reopen, none counted damaged, and once they are
    /// delivered no segment is left.
    #[test]
    fn an_append_failing_at_a_segments_tail_goes_on_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        past_a_failing_tail(dir.path());
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.segments.files(), vec![1, 2]);
        assert_eq!(moved(), 0);
        let values = s.segments.dir().to_path_buf();
        let (mut b, m) = buffer_of(dir.path(), s);
        let read: Vec<(u64, String)> = b
            .next(None, 100, u64::MAX, Instant::now())
            .unwrap()
            .into_iter()
            .map(|(seq, r)| (seq, r.id))
            .collect();
        let all: Vec<(u64, String)> = (0..10).map(|seq| (seq, format!("id-{seq}"))).collect();
        assert_eq!(read, all);
        assert_eq!(m.dropped_corrupt.get(), 0);
        for seq in 0..10 {
            b.remove(seq).unwrap();
        }
        b.flush().unwrap();
        assert_eq!(std::fs::read_dir(&values).unwrap().count(), 0);
    }

    /// A file system that creates files but refuses every write: the first failure starts
    /// one new segment, and the failures in it, which holds no entry, append there again,
    /// so a failing streak adds one file, not one per append. Once writes work again, they
    /// go on there; the next streak adds one more.
    #[test]
    fn appends_failing_everywhere_start_one_new_segment_per_streak() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = flushed_store(dir.path(), 0..3, body_of);
        // A streak the run ends in: the segment it started holds half an entry and no
        // pointer, the next open deletes it, and its torn header moves no number.
        let failing = super::super::segments::failing_appends_in(1..=u32::MAX);
        for _ in 0..2 {
            s.insert(3, body_of(3)).unwrap_err();
        }
        assert_eq!(s.segments.files(), vec![1, 2]);
        drop(failing);
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.segments.files(), vec![1]);
        assert_eq!(s.last_seq(), Some(2));
        for (streak, from) in [(1, 3), (2, 6)] {
            let failing = super::super::segments::failing_appends_in(1..=u32::MAX);
            for _ in 0..5 {
                s.insert(from, body_of(from)).unwrap_err();
            }
            assert_eq!(s.segments.files(), (1..=streak + 1).collect::<Vec<u32>>());
            drop(failing);
            fill_with(&mut s, from..from + 3, body_of);
            s.flush().unwrap();
            assert_eq!(segment_of(&s, from), streak + 1);
        }
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        let all: Vec<(u64, Vec<u8>)> = (0..9).map(|seq| (seq, body_of(seq))).collect();
        assert_eq!(s.scan(None, 100).unwrap(), all);
        drain(&mut s, &(0..9).collect::<Vec<_>>());
    }

    /// A body that cannot be read whole (its segment cut short or gone) is a damaged record:
    /// counted, removed and skipped; the others are read. Only a record never acknowledged
    /// can be in that state (the segments are synced before the pointers).
    #[test]
    fn a_missing_or_torn_body_is_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let values = {
            let mut s = SledStore::open(dir.path()).unwrap();
            for seq in 0..9 {
                s.insert(seq, super::super::encode(&record(seq, QUARTER)))
                    .unwrap();
            }
            s.flush().unwrap();
            s.segments.dir().to_path_buf()
        };
        // Segment 1 holds 0..4: cut into #2's entry. Segment 2 (4..8) is gone.
        let seg = values.join("00000001.seg");
        let cut = 2 * (12 + super::super::encode(&record(0, QUARTER)).len() as u64) + 100;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut).unwrap();
        std::fs::remove_file(values.join("00000002.seg")).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.usage().0, 9);
        let (mut b, m) = buffer_of(dir.path(), s);
        let read: Vec<u64> = b
            .next(None, 100, u64::MAX, Instant::now())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(read, vec![0, 1, 8]);
        assert_eq!(m.dropped_corrupt.get(), 6);
        assert_eq!(b.len(), 3);
        b.flush().unwrap();
        drop(b);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![0, 1, 8]);
    }

    /// A store at `dir` with `flushed` records of 100 bytes flushed, then `(n, len)` written
    /// and not flushed before the process stopped; the segment files it had.
    fn written_after_a_flush(dir: &Path, flushed: u64, (n, len): (u64, usize)) -> Vec<u32> {
        let mut s = SledStore::open(dir).unwrap();
        fill(&mut s, 0, flushed, 100);
        s.flush().unwrap();
        fill(&mut s, flushed, n, len);
        s.segments.files()
    }

    /// A record no flush covered can come back after a power cut as a pointer without its
    /// body (sled writes its log as it fills): dropped at open, not a damaged record. One
    /// that is whole stays.
    #[test]
    fn unflushed_records_without_a_body_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        written_after_a_flush(dir.path(), 3, (3, 100));
        // The bodies of #4 and #5 never reached the disk.
        let seg = dir.path().join(DB_DIR).join("values").join("00000001.seg");
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(4 * 112).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![0, 1, 2, 3]);
        assert_eq!(s.usage(), (4, 400));
        assert_eq!(s.last_seq(), Some(5), "sequence numbers are not reused");
    }

    /// Records a crash left above the mark in two segments (appends moved on to a new one
    /// after 1 MiB) are kept when their bodies read whole, and the first flush, whose mark
    /// covers them, syncs both segments, not only the newest.
    #[test]
    fn records_kept_above_the_mark_are_synced_in_every_segment_they_are_in() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            written_after_a_flush(dir.path(), 1, (5, QUARTER)),
            vec![1, 2]
        );
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![0, 1, 2, 3, 4, 5]);
        let job = s.prepare_flush().unwrap().expect("a mark to write");
        assert_eq!(job.mark, Some(5));
        assert_eq!(job.values.numbers(), vec![1, 2]);
    }

    /// A segment appended to since the last flush was prepared, then left after an append
    /// to it failed, is synced by the next flush with the new segment, and the directory
    /// too (it holds the new segment's name): that flush's mark covers records in both.
    #[test]
    fn a_segment_left_after_a_failed_append_is_synced_by_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = flushed_store(dir.path(), 0..3, body_of);
        fill_with(&mut s, 3..5, body_of);
        let failing = super::super::segments::failing_appends_in(1..=1);
        s.insert(5, body_of(5)).unwrap_err();
        drop(failing);
        s.insert(5, body_of(5)).unwrap();
        assert_eq!((segment_of(&s, 4), segment_of(&s, 5)), (1, 2));
        let job = s.prepare_flush().unwrap().expect("a mark to write");
        assert_eq!(job.mark, Some(5));
        assert_eq!(job.values.numbers(), vec![1, 2]);
        assert!(job.values.syncs_dir());
    }

    /// One record in ten stays (its recType parked) while the others are delivered: the
    /// segments would hold every record written; compaction copies the few left in each
    /// segment and the emptied segments go, so the disk holds about what the records take,
    /// and every record that stays reads back whole, before and after a reopen.
    #[test]
    fn records_that_stay_are_compacted_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64| -> Vec<u8> { (0..10_000).map(|i| (i as u64 ^ seq) as u8).collect() };
        let mut s = flushed_store(dir.path(), 0..3000, body);
        let kept: Vec<u64> = (0..3000).filter(|seq| seq % 10 == 0).collect();
        for seq in (0..3000).filter(|seq| seq % 10 != 0) {
            s.remove(seq).unwrap();
        }
        let written = s.segments.size_on_disk().unwrap();
        assert!(written > 30_000_000, "{written}");
        assert!(compact(&mut s) > 10);
        let live = kept.len() as u64 * (10_000 + 12);
        let left = s.segments.size_on_disk().unwrap();
        assert!(
            left <= live + super::super::compact::SLACK + super::super::segments::SEGMENT_SIZE,
            "{left} bytes of segments for {live} of records"
        );
        let check = |s: &SledStore| {
            let found = s.scan(None, 10_000).unwrap();
            assert_eq!(found.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), kept);
            for (seq, got) in found {
                assert!(got == body(seq), "#{seq} read back other bytes");
            }
            assert_eq!(s.usage(), (300, 300 * 10_000));
        };
        check(&s);
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        check(&s);
        drain(&mut s, &kept);
    }

    /// Compaction of a segment an append failed in copies the records it holds, which end
    /// before the torn tail, and the segment goes; every record that stays reads back whole,
    /// before and after a reopen.
    #[test]
    fn a_segment_with_the_torn_tail_of_a_failed_append_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64| -> Vec<u8> { (0..QUARTER).map(|i| (i as u64 ^ seq) as u8).collect() };
        let mut s = SledStore::open(dir.path()).unwrap();
        // Four records a segment: #8 and #9 are segment 3's first two.
        fill_with(&mut s, 0..10, body);
        let failing = super::super::segments::failing_appends_in(3..=3);
        s.insert(10, body(10)).unwrap_err();
        drop(failing);
        fill_with(&mut s, 10..40, body);
        s.flush().unwrap();
        assert_eq!((segment_of(&s, 9), segment_of(&s, 10)), (3, 4));
        let kept: Vec<u64> = (0..40).filter(|seq| seq % 4 == 0).collect();
        for seq in (0..40).filter(|seq| seq % 4 != 0) {
            s.remove(seq).unwrap();
        }
        compact(&mut s);
        assert!(!s.segments.files().contains(&3), "{:?}", s.segments.files());
        assert_ne!(segment_of(&s, 8), 3);
        let check = |s: &SledStore| {
            let found = s.scan(None, 100).unwrap();
            assert_eq!(found.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), kept);
            for (seq, got) in found {
                assert!(got == body(seq), "#{seq} read back other bytes");
            }
        };
        check(&s);
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        check(&s);
        drain(&mut s, &kept);
    }

    /// Delivers `seqs`, the last records: drained, the copies go as the originals did.
    fn drain(s: &mut SledStore, seqs: &[u64]) {
        for seq in seqs {
            s.remove(*seq).unwrap();
        }
        s.flush().unwrap();
        assert!(s.segments.files().is_empty(), "{:?}", s.segments.files());
    }

    /// The steps, in order: copies made; pointers swapped only once a flush synced the
    /// copies; the original segment deleted only by the flush after that, which makes the
    /// swapped pointers durable. A record that leaves while its copy waits is not swapped,
    /// and its copy holds no segment.
    #[test]
    fn compaction_swaps_pointers_after_the_copies_sync_and_deletes_after_the_swap_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        // Eight segments of four records; the first record of each stays.
        one_in_four_stays(&mut s, 32, |seq| vec![seq as u8; QUARTER]);
        let before: Vec<u32> = s.segments.files();
        assert_eq!(before.len(), 8, "{before:?}");
        // This flush makes the removals durable, then copies #0 out of the first segment.
        s.flush().unwrap();
        assert!(s.wants_flush());
        assert_eq!(
            segment_of(&s, 0),
            before[0],
            "swapped before the copy was synced"
        );
        // This one syncs the copy; then #0 is swapped and #4 copied.
        s.flush().unwrap();
        assert_ne!(segment_of(&s, 0), before[0], "synced copy not swapped in");
        assert!(
            s.segments.files().contains(&before[0]),
            "the original went before the swap was durable"
        );
        // #4 is delivered while its copy waits: it must not come back.
        s.remove(4).unwrap();
        s.flush().unwrap();
        assert!(!s.segments.files().contains(&before[0]));
        assert_eq!(seqs(&s, Some(3)).first(), Some(&8));
        compact(&mut s);
        let stay = [0, 8, 12, 16, 20, 24, 28];
        assert_eq!(seqs(&s, None), stay);
        drain(&mut s, &stay);
    }

    /// An entry whose header names another record (a pointer into a reused place) is not
    /// taken for the record's body.
    #[test]
    fn a_body_under_another_sequence_number_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 2, 10);
        let p0 = s.index.get(0).unwrap().unwrap();
        s.index.insert(1, p0).unwrap();
        let scanned = s.scan(None, 10).unwrap();
        assert_eq!(scanned, vec![(0, vec![0; 10]), (1, vec![])]);
        // A length beyond the segment's end (within the largest value) is not read (nor
        // allocated).
        let mut huge = p0;
        huge.len = super::super::segments::MAX_VALUE;
        match s.body(0, huge) {
            Err(ReadError::Damaged(why)) => assert!(why.contains("would end at"), "{why}"),
            other => panic!("{other:?}"),
        }
        s.index.insert(0, huge).unwrap();
        assert_eq!(s.scan(None, 1).unwrap(), vec![(0, vec![])]);
    }

    /// A pointer whose length is over the largest value is damaged, not read: the segment it
    /// points into may be as large (sparse, or damaged), and the length must not size an
    /// allocation. A value that large is not appended.
    #[test]
    fn a_length_over_the_largest_value_is_damage_without_reading() {
        use super::super::segments::MAX_VALUE;
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 1, 10);
        let seg = s.segments.dir().join("00000001.seg");
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(2 * u64::from(MAX_VALUE)).unwrap();
        let mut p = s.index.get(0).unwrap().unwrap();
        p.len = MAX_VALUE + 1;
        match s.body(0, p) {
            Err(ReadError::Damaged(why)) => assert!(why.contains("over the largest"), "{why}"),
            other => panic!("{other:?}"),
        }
        let e = s.insert(1, vec![0; MAX_VALUE as usize + 1]).unwrap_err();
        assert!(e.to_string().contains("over the largest"), "{e}");
        assert_eq!(s.usage(), (1, 10));
    }

    /// A left-over segment that cannot be deleted (here a directory of that name) is a
    /// warning, not a database that will not open.
    #[test]
    fn an_undeletable_left_over_segment_does_not_fail_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let values = {
            let mut s = SledStore::open(dir.path()).unwrap();
            fill(&mut s, 0, 5, QUARTER);
            s.flush().unwrap();
            s.segments.dir().to_path_buf()
        };
        std::fs::create_dir(values.join("00000003.seg")).unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 0);
        assert_eq!(seqs(&s, None), vec![0, 1, 2, 3, 4]);
        // Its number is skipped.
        s.insert(6, vec![6; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![1, 2, 3, 4]);
        assert!(values.join("00000003.seg").is_dir());
    }

    /// A body that fails to read for another reason than damage or a want of resources (here
    /// EISDIR: the segment became a directory; a bad block's EIO) is `Unreadable` from scan
    /// and scan_back, and the drain neither ends nor removes anything: it waits, counting the
    /// problem, and once reads tried every few seconds have failed for a minute takes each
    /// record of the segment that cannot be read for damage, until a read works again.
    #[test]
    fn a_read_error_holds_the_drain_for_a_while_then_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        for seq in 0..3 {
            s.insert(seq, super::super::encode(&record(seq, 100)))
                .unwrap();
        }
        s.flush().unwrap();
        drop(s);
        let values = dir
            .path()
            .join(DB_DIR)
            .join(super::super::segments::VALUES_DIR);
        let seg = values.join("00000001.seg");
        std::fs::remove_file(&seg).unwrap();
        std::fs::create_dir(&seg).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let e = s.scan(None, 10).unwrap_err();
        assert!(
            matches!(
                e,
                BufferError::Unreadable {
                    seq: 0,
                    passes: false,
                    segment: Some(1),
                    ..
                }
            ),
            "{e}"
        );
        // Keys alone read no body: the oldest is known, the newest are listed.
        assert_eq!(s.first_seq().unwrap(), Some(0));
        assert_eq!(s.seqs_back(10).unwrap(), vec![2, 1, 0]);
        let (mut b, m) = buffer_of(dir.path(), s);
        let t0 = Instant::now();
        for later in (0..60).step_by(5) {
            let now = t0 + Duration::from_secs(later);
            assert!(b.next(None, 10, u64::MAX, now).unwrap().is_empty());
        }
        assert_eq!(m.problems("buffer_read_error"), 12);
        assert_eq!((m.dropped_corrupt.get(), b.len()), (0, 3));
        // A minute on, #0 is taken for damage, and so are #1 and #2 in the same segment,
        // without a minute each: the wait is for the episode.
        let minute = t0 + Duration::from_secs(60);
        assert!(b.next(None, 10, u64::MAX, minute).unwrap().is_empty());
        assert_eq!((m.dropped_corrupt.get(), b.len()), (3, 0));
        // A read that works ends the episode: the next unreadable body waits its minute.
        std::fs::remove_dir(&seg).unwrap();
        b.push(3, &record(3, 100)).unwrap();
        b.flush().unwrap();
        assert_eq!(b.next(None, 10, u64::MAX, minute).unwrap().len(), 1);
        assert!(b.unreadable.is_none());
    }

    /// A store at `dir` with #0 in segment 1 and #2, #3 in segment 2, small enough to be
    /// read with EISDIR from a segment made a directory (a large one would end past the
    /// directory's size: damage); #1 closed segment 1 and left. Its segment directory.
    fn two_segments(dir: &Path) -> PathBuf {
        let mut s = SledStore::open(dir).unwrap();
        let len = |seq| if seq == 1 { 1 << 20 } else { 100 };
        fill_with(&mut s, 0..4, |seq| {
            super::super::encode(&record(seq, len(seq)))
        });
        s.remove(1).unwrap();
        s.flush().unwrap();
        s.segments.dir().to_path_buf()
    }

    fn make_a_directory(values: &Path, number: u32) {
        let seg = values.join(format!("{number:08}.seg"));
        std::fs::remove_file(&seg).unwrap();
        std::fs::create_dir(&seg).unwrap();
    }

    /// Two segments that cannot be read (EISDIR; an I/O error from the whole directory
    /// would do the same) cost a minute each: the second's first failure starts a minute of
    /// its own, once the first's records were taken for damage. The buffer is not emptied
    /// at once.
    #[test]
    fn each_segment_that_cannot_be_read_holds_the_drain_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let values = two_segments(dir.path());
        make_a_directory(&values, 1);
        make_a_directory(&values, 2);
        let s = SledStore::open(dir.path()).unwrap();
        let (mut b, m) = buffer_of(dir.path(), s);
        let t0 = Instant::now();
        let mut left = Vec::new();
        for later in (0..=120).step_by(5) {
            let now = t0 + Duration::from_secs(later);
            assert!(b.next(None, 10, u64::MAX, now).unwrap().is_empty());
            left.push(b.len());
        }
        let minute = 60 / 5;
        assert_eq!(left[..minute], [3; 12], "the first minute");
        assert_eq!(
            left[minute..2 * minute],
            [2; 12],
            "segment 1's taken for damage"
        );
        assert_eq!(left[2 * minute], 0, "segment 2's a minute later");
        assert_eq!(m.dropped_corrupt.get(), 3);
    }

    /// Sets this process's limit on open descriptors (RLIMIT_NOFILE); returns the one before.
    fn limit_descriptors(n: libc::rlim_t) -> libc::rlim_t {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls with a valid pointer.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            let before = limit.rlim_cur;
            limit.rlim_cur = n;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
            before
        }
    }

    /// Out of descriptors (EMFILE) when the drain comes to a segment it has not opened yet:
    /// the drain waits for as long as that lasts, ten minutes of attempts here, and takes
    /// nothing for damage; once descriptors are back the records are read. (In a child
    /// process: the limit is the process's.)
    #[test]
    fn out_of_descriptors_the_drain_waits_and_removes_nothing() {
        if !in_child("out_of_descriptors_the_drain_waits_and_removes_nothing") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        two_segments(dir.path());
        let s = SledStore::open(dir.path()).unwrap();
        let (mut b, m) = buffer_of(dir.path(), s);
        // Segment 1 is open for reading (the oldest record's time was read); no descriptor
        // but stdio's can be opened, even once that one is closed.
        let before = limit_descriptors(3);
        let t0 = Instant::now();
        let seqs = |read: Vec<(u64, crate::record::Record)>| -> Vec<u64> {
            read.into_iter().map(|(seq, _)| seq).collect()
        };
        let read = b.next(None, 10, u64::MAX, t0).unwrap();
        assert_eq!(seqs(read), [0], "segment 1 is open");
        for later in (0..=600).step_by(5) {
            let now = t0 + Duration::from_secs(later);
            assert!(b.next(Some(0), 10, u64::MAX, now).unwrap().is_empty());
        }
        limit_descriptors(before);
        assert_eq!(m.problems("buffer_read_error"), 122);
        assert_eq!((m.dropped_corrupt.get(), b.len()), (0, 3));
        let read = b.next(Some(0), 10, u64::MAX, t0 + Duration::from_secs(605));
        assert_eq!(seqs(read.unwrap()), [2, 3]);
    }

    /// The records before one that cannot be read are read, by the scan and the drain.
    #[test]
    fn the_records_before_one_that_cannot_be_read_are_returned() {
        let dir = tempfile::tempdir().unwrap();
        let values = two_segments(dir.path());
        make_a_directory(&values, 2);
        let s = SledStore::open(dir.path()).unwrap();
        let read = s.scan(None, 10).unwrap();
        assert_eq!(read.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [0]);
        let (mut b, m) = buffer_of(dir.path(), s);
        let read = b.next(None, 10, u64::MAX, Instant::now()).unwrap();
        assert_eq!(
            read.into_iter().map(|(seq, _)| seq).collect::<Vec<_>>(),
            [0]
        );
        assert_eq!(m.problems("buffer_read_error"), 1);
    }

    /// A record stored below the highest number flushed (the ledger stores one whose delivery
    /// from memory failed after a newer record was dead-lettered and flushed) is made durable
    /// by the next flush, though the mark stays where it is: the flush its acknowledgement
    /// rests on syncs its segment and writes its pointer. One that found nothing to do would
    /// leave the body in the page cache, for a power cut to take.
    #[test]
    fn a_record_stored_below_the_mark_is_made_durable_by_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        s.dead_letter(7, vec![7; 10]).unwrap();
        s.flush().unwrap();
        assert_eq!(s.marked(), Some(7));
        s.insert(5, vec![5; 10]).unwrap();
        assert_eq!(
            s.flush().unwrap(),
            3,
            "the new segment and its directory, the log; not the mark"
        );
        assert_eq!(s.marked(), Some(7));
        // Closed with no other flush: the record is there at the next open.
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.scan(None, 10).unwrap(), vec![(5, vec![5; 10])]);
    }

    /// sled's own flush does not survive a power cut (it ends in sync_file_range): every
    /// flush that an acknowledgement may rest on must sync the segments appended to (and
    /// their directory after a new one), the log, and the mark once the records it claims
    /// are durable. An idle flush writes nothing.
    #[test]
    fn every_flush_of_a_change_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert!(s.flush().unwrap() >= 4, "a new database is synced whole");
        assert_eq!(s.flush().unwrap(), 0, "nothing changed");
        s.insert(1, vec![1; 100]).unwrap();
        s.insert(2, vec![2; 100]).unwrap();
        assert_eq!(
            s.flush().unwrap(),
            4,
            "the new segment and its directory, one log sync for the batch, one mark sync"
        );
        s.remove(1).unwrap();
        assert_eq!(s.flush().unwrap(), 1, "a deletion: the log only");
        s.dead_letter(3, vec![3; 10]).unwrap();
        assert_eq!(s.flush().unwrap(), 2);
        // A record larger than sled's blob threshold goes to the segment like any other.
        s.insert(4, vec![4; 600_000]).unwrap();
        assert_eq!(s.flush().unwrap(), 3, "segment, log, mark");
        // sled keeps a large dead letter in a file of its own: that is synced too.
        s.dead_letter(5, vec![5; 600_000]).unwrap();
        assert_eq!(s.flush().unwrap(), 4, "log, blob, blob directory, mark");
        assert_eq!(s.flush().unwrap(), 0);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![2, 4]);
        assert_eq!(s.scan(Some(2), 1).unwrap()[0].1, vec![4; 600_000]);
        assert_eq!(s.marked(), Some(5));
    }

    #[test]
    fn sequence_numbers_are_not_reused_after_a_drain() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.insert(41, vec![1; 10]).unwrap();
            s.flush().unwrap();
            s.remove(41).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.usage(), (0, 0));
        assert_eq!(s.last_seq(), Some(41));
        assert_eq!(moved(), 0);
    }

    /// A failed file sync on the flush thread fails that flush and every later one, even
    /// once the disk would sync again: Linux reports a lost write-back once, and a second
    /// sync would succeed without the records it lost.
    #[test]
    fn a_failed_sync_fails_every_later_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path()).unwrap();
        store.insert(1, vec![1; 100]).unwrap();
        // Syncing a character device is refused (EINVAL), as a failed write-back is (EIO).
        let log = store
            .syncs()
            .files
            .swap_log(std::fs::File::open("/dev/null").unwrap());
        let done = Arc::new(Notify::new());
        assert!(store.start_flush(&done).is_none(), "on the flush thread");
        let first = store.flushed(true).unwrap().unwrap_err();
        assert!(matches!(first, BufferError::SyncFailed(_)), "{first}");
        store.syncs().files.swap_log(log);
        store.insert(2, vec![2; 100]).unwrap();
        let again = store.start_flush(&done).unwrap().unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
        let again = store.flush().unwrap_err();
        assert_eq!(again.to_string(), first.to_string());
        assert!(again.to_string().contains("syncing the log"), "{again}");
    }

    /// sled's blob files in the database.
    fn blob_names(dir: &Path) -> BTreeSet<OsString> {
        let blobs = dir.join(DB_DIR).join("blobs");
        let names = std::fs::read_dir(blobs).unwrap();
        names.map(|e| e.unwrap().file_name()).collect()
    }

    /// Runs a flush prepared before, as the flush thread does.
    fn run(store: &mut SledStore, job: SyncJob) -> Result<u64, BufferError> {
        let outcome = job.run();
        store.finish_flush(outcome)
    }

    /// A flush counts as synced the blob files listed when it was prepared on sled's writer,
    /// where each is whole. One written after that is synced (its log entry may be in the
    /// flush) but counted by the next flush only: counted by the running one, the flush that
    /// covers its record would skip it, though it may have been synced half written. One
    /// sled deleted before the flush got to it is gone, no error.
    #[test]
    fn a_flush_syncs_the_blobs_listed_when_it_was_prepared() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path()).unwrap();
        store.dead_letter(1, vec![1; 100]).unwrap();
        let job = store.prepare_flush().unwrap().unwrap();
        // Over a quarter of sled's segment: sled writes it to a blob file of its own.
        store.dead_letter(2, vec![2; 600_000]).unwrap();
        let blob: Vec<_> = blob_names(dir.path()).into_iter().collect();
        assert_eq!(blob.len(), 1);
        // Synced all the same (with its directory, before the log and the mark): sled's
        // flush may have made the log entry that points at it durable.
        let outcome = job.run();
        assert_eq!(
            outcome.as_ref().ok(),
            Some(&4),
            "log, mark, the late blob and its dir"
        );
        store.finish_flush(outcome).unwrap();
        let synced = store.syncs().files.synced_blobs().clone();
        assert!(synced.is_empty(), "written after the flush was prepared");
        let job = store.prepare_flush().unwrap().unwrap();
        assert_eq!(job.blobs.new_names(), blob);
        run(&mut store, job).unwrap();
        let synced = store.syncs().files.synced_blobs().clone();
        assert_eq!(synced.into_iter().collect::<Vec<_>>(), blob);

        store.dead_letter(3, vec![3; 600_000]).unwrap();
        let job = store.prepare_flush().unwrap().unwrap();
        let [gone] = job.blobs.new_names() else {
            panic!("one new blob");
        };
        std::fs::remove_file(dir.path().join(DB_DIR).join("blobs").join(gone)).unwrap();
        run(&mut store, job).unwrap();
    }

    /// Only a blob sled deleted is passed over: one that cannot be opened for another reason
    /// fails the flush, naming it, since the record it holds would not be on disk.
    #[test]
    fn a_blob_that_cannot_be_opened_fails_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledStore::open(dir.path()).unwrap();
        store.dead_letter(1, vec![1; 600_000]).unwrap();
        let job = store.prepare_flush().unwrap().unwrap();
        let [blob] = job
            .blobs
            .new_names()
            .to_vec()
            .try_into()
            .expect("one new blob");
        let path = dir.path().join(DB_DIR).join("blobs").join(&blob);
        std::fs::remove_file(&path).unwrap();
        // A link to itself: opening it fails with ELOOP, even for root.
        std::os::unix::fs::symlink(&path, &path).unwrap();
        let e = run(&mut store, job).unwrap_err();
        assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
        let named = format!("syncing blob {blob:?}");
        assert!(e.to_string().contains(&named), "{e}");
    }

    #[test]
    fn a_locked_database_is_an_error_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledStore::open(dir.path()).unwrap();
        let e = SledStore::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(e.to_string().contains("lock"), "{e}");
        assert_eq!(moved(), 0);
    }

    /// sled lets go of its file lock some time after its last handle is dropped: an open in
    /// that window waits for it instead of failing.
    #[test]
    fn an_open_waits_for_sled_to_release_a_database_just_closed() {
        let dir = tempfile::tempdir().unwrap();
        let held = sled::open(dir.path().join(DB_DIR)).unwrap();
        // Stands in for sled's background release: the handle goes a little later.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let s = SledStore::open(dir.path()).unwrap();
        release.join().unwrap();
        assert_eq!(s.usage(), (0, 0));
        assert_eq!(moved(), 0);
    }

    /// A segment directory not there for now (here a symbolic link to a file system not
    /// mounted yet) fails the open with an error naming it, and moves nothing aside: once
    /// it is there again, every record is.
    #[test]
    fn a_segment_directory_not_there_for_now_fails_the_open_and_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let values = three_flushed(dir.path());
        let kept = dir.path().join("values.kept");
        let card = dir.path().join("card");
        std::fs::rename(&values, &kept).unwrap();
        std::os::unix::fs::symlink(&card, &values).unwrap();
        let e = SledStore::open(dir.path()).err().expect("the open fails");
        assert!(e.to_string().contains("segment directory values"), "{e}");
        assert!(e.to_string().contains("left as it is"), "{e}");
        assert_eq!(moved(), 0);
        std::fs::rename(&kept, &card).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.scan(None, 10).unwrap().len(), 3);
        assert_eq!(seqs(&s, None), vec![0, 1, 2]);
    }

    /// A segment directory that no restart makes usable (here a plain file) is damage: the
    /// database is moved aside, records and all, and a fresh one started.
    #[test]
    fn a_segment_directory_that_is_a_file_moves_the_database_aside() {
        let dir = tempfile::tempdir().unwrap();
        let values = three_flushed(dir.path());
        let kept = dir.path().join("values.kept");
        std::fs::rename(&values, &kept).unwrap();
        std::fs::write(&values, b"not a directory").unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 1);
        assert_eq!(s.usage(), (0, 0));
        s.insert(0, vec![1; 10]).unwrap();
        s.flush().unwrap();
        drop(s);
        // The records are in the database moved aside.
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("sled.broken-"))
            .unwrap();
        let inspect = tempfile::tempdir().unwrap();
        std::fs::rename(&aside, inspect.path().join(DB_DIR)).unwrap();
        let values = inspect
            .path()
            .join(DB_DIR)
            .join(super::super::segments::VALUES_DIR);
        std::fs::remove_file(&values).unwrap();
        std::fs::rename(&kept, &values).unwrap();
        let s = SledStore::open(inspect.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![0, 1, 2]);
        assert_eq!(s.scan(None, 10).unwrap().len(), 3);
    }

    /// Only a failure no restart clears moves the database aside for its segment directory.
    #[test]
    fn a_segment_directory_error_is_damage_only_when_it_cannot_pass() {
        for errno in [
            libc::EACCES,
            libc::EPERM,
            libc::ENOSPC,
            libc::EROFS,
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOENT,
        ] {
            let e = OpenError::Values(std::io::Error::from_raw_os_error(errno));
            assert!(!e.is_damage(), "errno {errno}");
        }
        for errno in [libc::EIO, libc::ENOTDIR, libc::EUCLEAN, libc::ELOOP] {
            let e = OpenError::Values(std::io::Error::from_raw_os_error(errno));
            assert!(e.is_damage(), "errno {errno}");
        }
    }

    /// A store at `dir` that kept a frame counter past 2^20, flushed, closed: its key and
    /// value.
    fn a_far_counter_kept(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let key = [b"fcnt/".as_slice(), &[1; 12]].concat();
        let far = [0x0013_0001_u32.to_be_bytes(), [7; 4]].concat();
        let mut s = SledStore::open(dir).unwrap();
        s.state_set(&key, &far).unwrap();
        s.flush().unwrap();
        assert!(!s.wants_flush());
        (key, far)
    }

    /// A database that will not open is moved aside, and the fresh one starts with the
    /// frame counters kept beside it, which a session's first search would not find.
    #[test]
    fn a_database_moved_aside_leaves_its_far_counters_to_the_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let (key, far) = a_far_counter_kept(dir.path());
        std::fs::write(
            dir.path().join(DB_DIR).join("conf"),
            b"\xff not sled's config",
        )
        .unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.moved_aside_at_open());
        assert_eq!(
            s.state_scan(b"fcnt/").unwrap(),
            [(key.clone(), far.clone())]
        );
        // Durable at once, in sled and in the fresh database's own file.
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            s.state_scan(b"fcnt/").unwrap(),
            [(key.clone(), far.clone())]
        );
        assert_eq!(
            super::super::far_counters::read_for(dir.path()),
            [(key, far)]
        );
    }

    /// A counters' file out of date at open (removed here; damaged, or from before an
    /// upgrade) asks for a flush, which writes it.
    #[test]
    fn a_counters_file_out_of_date_at_open_asks_for_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        a_far_counter_kept(dir.path());
        let file = dir.path().join(DB_DIR).join(far_counters::FILE);
        std::fs::remove_file(&file).unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert!(s.wants_flush());
        assert_eq!(
            s.flush().unwrap(),
            7,
            "the open's syncs and the flush's, the counters' file and its directory among them"
        );
        assert!(!s.wants_flush());
        assert!(file.exists());
    }

    #[test]
    fn unopenable_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_DIR), b"not a sled directory").unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.usage(), (0, 0));
        assert_eq!(moved(), 1);
    }

    /// A store at `dir` holding #0..=#2 and #256..=#260, flushed, whose group #256..=#511 in
    /// sled is then damaged under it (it does not decode): found by the first read of it.
    fn with_group_one_damaged(dir: &Path) -> SledStore {
        let mut s = SledStore::open(dir).unwrap();
        fill_with(&mut s, 0..3, body_of);
        fill_with(&mut s, 256..261, body_of);
        s.flush().unwrap();
        let groups = s.db.open_tree(super::super::index::TREE).unwrap();
        groups.insert(1u64.to_be_bytes(), &[1, 9][..]).unwrap();
        s
    }

    /// The next open of `dir` salvages the damaged group: records `want` read whole.
    fn salvaged(dir: &Path, want: &[u64]) {
        let s = SledStore::open(dir).unwrap();
        assert!(s.moved_aside_at_open());
        let all = s.scan(None, 20).unwrap();
        assert_eq!(all.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), want);
        for (seq, body) in all {
            assert_eq!(body, body_of(seq), "#{seq}");
        }
        assert_eq!(moved_aside(dir).len(), 1, "kept for buffer recover");
    }

    /// A group found damaged while running is never written over (an insert into it is
    /// refused), so the next open still sees the damage and salvages its records from the
    /// segments: nothing counted at open is lost, and the refused record's body, appended
    /// before its pointer was refused, comes too (a duplicate at worst: it was never
    /// acknowledged). The refusal ends the run: every flush after it fails as after a failed
    /// sync, and no later insert appends another body.
    #[test]
    fn a_group_found_damaged_while_running_stays_for_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let values = dir
            .path()
            .join(DB_DIR)
            .join(super::super::segments::VALUES_DIR);
        let appended = || -> u64 {
            std::fs::read_dir(&values)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        {
            let mut s = with_group_one_damaged(dir.path());
            let damaged = |e: &BufferError| matches!(e, BufferError::SyncFailed(why) if why.contains("#261's entry in the index is damaged"));
            // The insert finds the damage.
            let e = s.insert(261, body_of(261)).unwrap_err();
            assert!(damaged(&e), "{e}");
            assert_eq!(seqs(&s, None), vec![0, 1, 2]);
            let after = appended();
            let e = s.insert(261, body_of(261)).unwrap_err();
            assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
            assert_eq!(appended(), after, "no second copy of #261's body");
            let e = s.flush().unwrap_err();
            assert!(damaged(&e), "{e}");
            let e = s.flush().unwrap_err();
            assert!(damaged(&e), "{e}");
        }
        let want: Vec<u64> = (0..3).chain(256..262).collect();
        salvaged(dir.path(), &want);
    }

    /// A group found damaged by a read while running (here a scan; no insert into it) ends
    /// the run as a failed sync does: every flush after it fails, so its records, counted
    /// but found by no read, do not keep the buffer from reading empty for the rest of the
    /// run; the next open salvages them.
    #[test]
    fn a_group_found_damaged_by_a_read_ends_the_run() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = with_group_one_damaged(dir.path());
            assert_eq!(seqs(&s, None), vec![0, 1, 2]);
            assert_eq!(s.usage().0, 8, "its records are still counted");
            for _ in 0..2 {
                let e = s.flush().unwrap_err();
                assert!(
                    matches!(&e, BufferError::SyncFailed(why) if why.contains("an entry of the index was found damaged")),
                    "{e}"
                );
            }
        }
        let want: Vec<u64> = (0..3).chain(256..261).collect();
        salvaged(dir.path(), &want);
    }

    /// Every tree of a database with its entries, and its segment files with their sizes.
    type Held = (
        Vec<(sled::IVec, Vec<(sled::IVec, sled::IVec)>)>,
        Vec<(OsString, u64)>,
    );

    /// What the database at `db_dir` holds. Opened through [`open_db`]: sled lets go of the
    /// lock of a handle dropped before some time later.
    fn held(db_dir: &Path) -> Held {
        let db = open_db(db_dir).unwrap();
        let trees: Vec<_> = db
            .tree_names()
            .into_iter()
            .map(|name| {
                let tree = db.open_tree(&name).unwrap();
                let entries: Vec<_> = tree.iter().map(|e| e.unwrap()).collect();
                (name, entries)
            })
            .collect();
        let mut segments: Vec<_> =
            std::fs::read_dir(db_dir.join(super::super::segments::VALUES_DIR))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), e.metadata().unwrap().len())
                })
                .collect();
        segments.sort();
        (trees, segments)
    }

    /// A database a newer hubgate marked with a higher layout (a downgrade) is refused
    /// before anything in it is read or changed: no group of an encoding this release does
    /// not know logged as damaged, no salvage, no move aside, every record and group still
    /// there for the newer release. One without a mark (an earlier release's) gets this
    /// one's.
    #[test]
    fn a_database_of_a_newer_layout_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            fill(&mut s, 0, 3, 10);
            s.state_set(LAYOUT_KEY, &(LAYOUT + 1).to_be_bytes())
                .unwrap();
            s.flush().unwrap();
            // The newer release's group of records #256..=#511, in an encoding (9) this one
            // does not read.
            let groups = s.db.open_tree(super::super::index::TREE).unwrap();
            groups.insert(1u64.to_be_bytes(), &[9, 1, 0]).unwrap();
            s.db.flush().unwrap();
        }
        let db_dir = dir.path().join(DB_DIR);
        let contents = || held(&db_dir);
        let before = contents();
        let logged = crate::logger::warnings_of(|| {
            for _ in 0..2 {
                let e = SledStore::open(dir.path()).err().expect("refused");
                assert!(e.to_string().contains("written by a newer hubgate"), "{e}");
            }
        });
        assert_eq!(logged, Vec::<String>::new());
        assert_eq!(moved_aside(dir.path()), vec![]);
        let after = contents();
        assert!(after == before, "{before:?}\n{after:?}");
        let tree = super::super::index::TREE.as_bytes();
        let groups = after.0.iter().find(|(name, _)| name.as_ref() == tree);
        let values: Vec<&[u8]> = groups.unwrap().1.iter().map(|(_, v)| v.as_ref()).collect();
        assert_eq!(values.len(), 2);
        let (_, held) = super::super::index::decode(&0u64.to_be_bytes(), values[0]).unwrap();
        assert_eq!(held.into_keys().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(values[1], [9, 1, 0]);

        let other = tempfile::tempdir().unwrap();
        drop(SledStore::open(other.path()).unwrap());
        let s = SledStore::open(other.path()).unwrap();
        assert_current_layout(&s.state);
    }

    /// A newer release's buffer directory is refused before anything in it but sled's own
    /// files is touched: not the disk space reserve (the disk has room for it), nor what a
    /// power cut left of a rebuild's swap or of a salvaged database's removal (the newer
    /// release deals with those by its own rules). Each way a swap can be cut off leaves a
    /// different database to open; each is refused with every file as it was, byte for
    /// byte, but sled's own files of the database it opened to read the layout (its log's
    /// tail and snapshot), whose trees stay as they were.
    #[test]
    fn a_newer_layouts_directory_is_refused_with_every_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_DIR);
        let (new, old) = swap_dirs(&db);
        let trees = newer_with_a_rebuild(dir.path());
        let salvaged = dir.path().join("sled.salvaged");
        std::fs::create_dir(&salvaged).unwrap();
        std::fs::write(salvaged.join("db"), b"what was not removed yet").unwrap();
        assert!(super::super::reserve::keep(dir.path(), 0).unwrap());
        std::fs::write(dir.path().join("reserve.new"), b"half a reserve").unwrap();
        let refused_as_it_was = |opened: &Path| {
            let before = listing(dir.path());
            let logged = crate::logger::warnings_of(|| {
                let e = SledStore::open(dir.path()).err().expect("refused");
                assert_eq!(e.to_string(), refusal(opened, dir.path()));
            });
            assert_eq!(logged, Vec::<String>::new());
            let after = listing(dir.path());
            let sled = opened.strip_prefix(dir.path()).unwrap();
            let changed = changed_but_sleds(&before, &after, sled);
            assert_eq!(changed, vec![], "(name, before, after)");
        };
        // Cut off before the swap: the database, with the new one beside it.
        refused_as_it_was(&db);
        // Between the two renames: the new one is the database.
        std::fs::rename(&db, &old).unwrap();
        refused_as_it_was(&new);
        // The new one lost: the drained one is the database.
        std::fs::remove_dir_all(&new).unwrap();
        refused_as_it_was(&old);
        assert_eq!(held(&old), trees);
    }

    /// A buffer in `buffer_dir` of the next layout, three records in it, with a rebuild's
    /// new database beside it, complete (its layout carried) and not swapped in yet; what its
    /// database holds.
    fn newer_with_a_rebuild(buffer_dir: &Path) -> Held {
        let db = buffer_dir.join(DB_DIR);
        {
            let mut s = SledStore::open(buffer_dir).unwrap();
            fill(&mut s, 0, 3, 10);
            s.state_set(LAYOUT_KEY, &(LAYOUT + 1).to_be_bytes())
                .unwrap();
            s.flush().unwrap();
            s.build(&swap_dirs(&db).0).unwrap();
        }
        held(&db)
    }

    /// The error an open of the buffer in `buffer` refuses the database at `db` with, of
    /// the next layout.
    fn refusal(db: &Path, buffer: &Path) -> String {
        format!(
            "buffer storage: {}: written by a newer hubgate (buffer layout {}; this one reads \
             layout {LAYOUT}): refused, its records left as they are. Run the newer hubgate \
             until the buffer has drained, or move {} away to start with an empty buffer",
            db.display(),
            LAYOUT + 1,
            buffer.display()
        )
    }

    /// Where sled will not open the database before the open deals with what lies beside
    /// it (here its `conf` is gone: sled makes it again as it opens), a newer layout is
    /// refused once sled opens it, after this release's rules removed a rebuild's database
    /// beside it, with every record left as it is and nothing moved aside.
    #[test]
    fn a_newer_layout_sled_will_not_open_at_first_is_refused_once_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_DIR);
        let (new, _) = swap_dirs(&db);
        let trees = newer_with_a_rebuild(dir.path());
        std::fs::remove_file(db.join("conf")).unwrap();
        let logged = crate::logger::warnings_of(|| {
            let e = SledStore::open(dir.path()).err().expect("refused");
            assert_eq!(e.to_string(), refusal(&db, dir.path()));
        });
        assert_eq!(logged, Vec::<String>::new());
        assert!(!new.exists());
        assert_eq!(moved_aside(dir.path()), vec![]);
        assert_eq!(held(&db), trees);
    }

    /// A snapshot sled did not finish (it writes one as it opens, and a full disk or a power
    /// cut stopped it), at a log position past the last snapshot's, empty or with bytes that
    /// are none: sled reads the last `snap.*` by name and would report the database
    /// corrupted, and the open would move it aside with every record. It is removed before
    /// sled opens, with one warning naming it: every record is there, nothing moved aside.
    #[test]
    fn a_snapshot_sled_did_not_finish_is_removed_and_every_record_kept() {
        for torn in [&b""[..], b"a snapshot cut short"] {
            let dir = tempfile::tempdir().unwrap();
            drop(flushed_store(dir.path(), 0..300, |seq| vec![seq as u8; 10]));
            // sled writes its first snapshot as it opens a log it wrote.
            drop(SledStore::open(dir.path()).unwrap());
            let db = dir.path().join(DB_DIR);
            let snaps: Vec<String> = std::fs::read_dir(&db)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("snap."))
                .collect();
            let [snap] = &snaps[..] else {
                panic!("one snapshot: {snaps:?}")
            };
            let lsn = u64::from_str_radix(snap.strip_prefix("snap.").unwrap(), 16).unwrap();
            let generating = db.join(format!("snap.{:016X}.generating", lsn + 1));
            std::fs::write(&generating, torn).unwrap();
            let logged = crate::logger::warnings_of(|| {
                let s = SledStore::open(dir.path()).unwrap();
                assert_eq!(seqs(&s, None), (0..300).collect::<Vec<_>>());
            });
            assert_eq!(
                logged,
                vec![format!(
                    "buffer: removed {}, a snapshot sled did not finish",
                    generating.display()
                )]
            );
            assert!(!generating.exists());
            assert_eq!(moved_aside(dir.path()), vec![]);
        }
    }

    /// A snapshot sled did not finish that cannot be removed (another user's, in a directory
    /// with the sticky bit, without CAP_FOWNER) fails the open with an error naming it and
    /// why, as a reason that passes: nothing moved aside or logged as damage, and once it
    /// can be removed every record is there.
    #[test]
    fn a_snapshot_sled_did_not_finish_that_cannot_be_removed_fails_the_open_only() {
        // SAFETY: geteuid has no failure mode.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "needs root, as CI runs the tests: it gives files to nobody"
        );
        let dir = tempfile::tempdir().unwrap();
        drop(flushed_store(dir.path(), 0..300, |seq| vec![seq as u8; 10]));
        let db = dir.path().join(DB_DIR);
        let generating = db.join("snap.00000000FFFFFFFF.generating");
        std::fs::write(&generating, b"a snapshot cut short").unwrap();
        let nobody = |p: &Path| std::os::unix::fs::chown(p, Some(65534), None).unwrap();
        nobody(&db);
        nobody(&generating);
        let sticky = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode;
        std::fs::set_permissions(&db, sticky(0o1777)).unwrap();
        let logged = without(&[CAP_FOWNER], || {
            crate::logger::warnings_of(|| {
                let e = SledStore::open(dir.path()).err().expect("refused");
                assert_eq!(
                    e.to_string(),
                    format!(
                        "buffer storage: {}: IO error: {} is a snapshot sled did not finish and \
                         cannot be removed (Operation not permitted (os error 1)); sled would \
                         take the database for damaged",
                        db.display(),
                        generating.display()
                    )
                );
            })
        });
        assert_eq!(logged, Vec::<String>::new());
        assert!(generating.exists());
        assert_eq!(moved_aside(dir.path()), vec![]);
        // A recovery from it says so too, rather than take it for no newer layout's.
        let said = without(&[CAP_FOWNER], || newer_layout_at(&db));
        assert_eq!(
            said,
            Err(format!(
                "its sled will not open for now (IO error: {} is a snapshot sled did not \
                 finish and cannot be removed (Operation not permitted (os error 1)); sled \
                 would take the database for damaged); run it again once that passes",
                generating.display()
            ))
        );
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), (0..300).collect::<Vec<_>>());
        assert!(!generating.exists());
    }

    /// A snapshot sled did not finish that cannot be removed for a reason that does not pass
    /// (here a directory of that name; on a card, an I/O error) is not waited for, which
    /// would fail every start: sled's open meets it, and the database is moved aside as
    /// damaged, its records kept there, as before such files were removed.
    #[test]
    fn a_snapshot_that_cannot_be_removed_for_good_is_left_to_sled() {
        let dir = tempfile::tempdir().unwrap();
        drop(flushed_store(dir.path(), 0..300, |seq| vec![seq as u8; 10]));
        let generating = dir
            .path()
            .join(DB_DIR)
            .join("snap.00000000FFFFFFFF.generating");
        std::fs::create_dir_all(generating.join("inside")).unwrap();
        let logged = crate::logger::warnings_of(|| {
            let s = SledStore::open(dir.path()).unwrap();
            assert!(s.moved_aside_at_open());
            assert_eq!(seqs(&s, None), Vec::<u64>::new());
        });
        let said = format!(
            "buffer: {} is a snapshot sled did not finish and cannot be removed (Is a directory \
             (os error 21))",
            generating.display()
        );
        assert!(logged.contains(&said), "{logged:?}");
        let [(aside, _)] = &moved_aside(dir.path())[..] else {
            panic!("one database moved aside")
        };
        // Every record is still there once the obstacle is gone.
        std::fs::remove_dir_all(aside.join(generating.file_name().unwrap())).unwrap();
        let kept = SledStore::open_at(aside).unwrap();
        assert_eq!(seqs(&kept, None), (0..300).collect::<Vec<_>>());
    }

    /// A snapshot beside a sled open elsewhere (here through [`open_db`]) may be one that
    /// sled is writing: while sled's lock on the log is held, it is neither removed nor
    /// logged.
    #[test]
    fn a_snapshot_beside_an_open_sled_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join(DB_DIR);
        let db = open_db(&db_dir).unwrap();
        let generating = db_dir.join("snap.00000000FFFFFFFF.generating");
        std::fs::write(&generating, b"being written").unwrap();
        let mut lock = None;
        let logged = crate::logger::warnings_of(|| {
            lock = Some(remove_torn_snapshots(&db_dir).unwrap());
        });
        assert_eq!(logged, Vec::<String>::new());
        assert!(generating.exists());
        assert_eq!(lock, Some(SledLock::Held));
        drop(db);
    }

    /// The package's prerm names a database it moves aside for a downgrade by this layout
    /// (`sled.layout<N>-<time>`): the two change together.
    #[test]
    fn the_prerm_names_this_layout() {
        let prerm = include_str!("../../systemd/deb/prerm");
        assert!(prerm.contains(&format!("\nlayout={LAYOUT}\n")), "{prerm}");
    }

    /// sled lost the flushes that swapped pointers to compaction's copies (they wrote no
    /// mark: the marks cannot tell) and went back to the originals: the open finds the
    /// copies, in a segment no pointer names any more, before that segment goes.
    #[test]
    fn compacted_records_whose_pointers_sled_took_back_are_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let stay = compacted_then_taken_back(dir.path(), None, |_| {});
        let mut s = SledStore::open(dir.path()).unwrap();
        assert_eq!(moved(), 0);
        let all: BTreeMap<u64, Vec<u8>> = s.scan(None, 100).unwrap().into_iter().collect();
        assert!(all == stay, "{:?}", all.keys().collect::<Vec<_>>());
        drain(&mut s, &stay.into_keys().collect::<Vec<_>>());
    }

    /// A record found again in another segment frees the number of the segment that is
    /// gone; a new segment that takes that number is not deleted as the gone one would have
    /// been.
    #[test]
    fn a_gone_segments_number_taken_again_is_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let body = |seq: u64| super::super::encode(&record(seq, 100));
        {
            let mut s = flushed_store(dir.path(), 0..2, body);
            let mut p = s.index.get(1).unwrap().unwrap();
            p.segment = u32::MAX;
            s.index.insert(1, p).unwrap();
            write_out(&mut s);
        }
        let mut s = SledStore::open(dir.path()).unwrap();
        s.insert(2, body(2)).unwrap();
        s.flush().unwrap();
        s.flush().unwrap();
        assert_eq!(s.segments.files(), vec![1, u32::MAX]);
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        let all = s.scan(None, 10).unwrap();
        assert_eq!(all, (0..3).map(|seq| (seq, body(seq))).collect::<Vec<_>>());
    }

    /// Sets the permission bits of `path` to `mode`.
    fn set_mode(path: &Path, mode: u32) {
        let perms = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode);
        std::fs::set_permissions(path, perms).unwrap();
    }

    /// [`compacted_then_taken_back`] at `dir`, with the segment that holds the copies (no
    /// pointer names it) made unreadable but to root (mode 000; see [`without`] and
    /// [`NO_DAC`]). The records that stay, those it holds copies of, and its path.
    fn copies_out_of_reach(dir: &Path) -> (BTreeMap<u64, Vec<u8>>, BTreeSet<u64>, PathBuf) {
        let stay = compacted_then_taken_back(dir, None, |_| {});
        let segments = Segments::open(&dir.join(DB_DIR), BTreeMap::new()).unwrap();
        let seqs_in = |n: u32| -> BTreeSet<u64> {
            let (_, headers) = segments.headers(n).unwrap();
            headers.into_iter().map(|(seq, _)| seq).collect()
        };
        let numbers = segments.numbers().unwrap();
        let with_copies = *numbers.iter().find(|n| seqs_in(**n).contains(&0)).unwrap();
        let path = segments.dir().join(format!("{with_copies:08}.seg"));
        set_mode(&path, 0o000);
        (stay, seqs_in(with_copies), path)
    }

    /// A flush at which relink is due to look again.
    fn look_again(s: &mut SledStore) {
        s.unlinked.as_mut().unwrap().retry = Instant::now();
        s.flush().unwrap();
    }

    /// `s` holds exactly `stay`, and once they left, no segment (every one it kept held
    /// records).
    fn holds_then_drain(s: &mut SledStore, stay: &BTreeMap<u64, Vec<u8>>) {
        let all: BTreeMap<u64, Vec<u8>> = s.scan(None, 100).unwrap().into_iter().collect();
        assert!(all == *stay, "{:?}", all.keys().collect::<Vec<_>>());
        drain(s, &stay.keys().copied().collect::<Vec<_>>());
    }

    /// A relink that cannot look in every segment (one cannot be opened for now: no
    /// permission) keeps the segments no pointer names, that one included: it holds the
    /// only copies of records whose pointers sled took back. Reads of those records wait
    /// instead of finding damage. Once the segment can be read, a flush after
    /// [`RELINK_RETRY`] finds them there, in the same run, and deletes the segments no
    /// pointer names.
    #[test]
    fn records_whose_copies_relink_could_not_look_at_are_found_in_the_same_run() {
        let dir = tempfile::tempdir().unwrap();
        let (stay, copied, unreadable) = copies_out_of_reach(dir.path());
        assert!(copied.len() < stay.len(), "{copied:?}");
        // Written, its pointer never durable (a crash): deleted once relink looked everywhere.
        let left_over = unreadable.with_file_name("00000099.seg");
        std::fs::write(&left_over, b"left over").unwrap();
        without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.flush().unwrap();
            for (&seq, body) in &stay {
                let read = s.scan(seq.checked_sub(1), 1);
                if copied.contains(&seq) {
                    assert!(
                        matches!(read, Err(BufferError::Unreadable { seq: s, passes: true, .. }) if s == seq),
                        "#{seq}: {read:?}"
                    );
                } else {
                    assert_eq!(read.unwrap(), vec![(seq, body.clone())], "#{seq}");
                }
            }
            assert!(
                unreadable.exists(),
                "the segment it could not look in was deleted"
            );
            assert!(
                left_over.exists(),
                "deleted though relink could not look everywhere"
            );
            assert!(!s.wants_flush(), "looks again before {RELINK_RETRY:?}");
            // Looked in again at the first flush after RELINK_RETRY.
            look_again(&mut s);
            assert!(left_over.exists(), "still cannot look in it");
            set_mode(&unreadable, 0o644);
            s.unlinked.as_mut().unwrap().retry = Instant::now();
            assert!(s.wants_flush());
            s.flush().unwrap();
            assert!(s.unlinked.is_none());
            assert!(!left_over.exists(), "kept once relink looked everywhere");
            holds_then_drain(&mut s, &stay);
        });
    }

    /// Once the records looked for have all left (expired, say), relink stops looking
    /// though the segment still cannot be looked in, and the segments no pointer names go.
    #[test]
    fn relink_stops_looking_once_the_records_looked_for_left() {
        let dir = tempfile::tempdir().unwrap();
        let (stay, copied, unreadable) = copies_out_of_reach(dir.path());
        without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            let mut rest = copied.clone();
            let first = rest.pop_first().unwrap();
            for seq in rest {
                s.remove(seq).unwrap();
            }
            look_again(&mut s);
            assert!(s.unlinked.is_some(), "#{first} is still looked for");
            s.remove(first).unwrap();
            look_again(&mut s);
            assert!(s.unlinked.is_none());
            assert!(!unreadable.exists(), "no record names it");
            let left: Vec<u64> = stay
                .keys()
                .filter(|q| !copied.contains(q))
                .copied()
                .collect();
            drain(&mut s, &left);
        });
    }

    /// A segment relink could not look in whose last record leaves meanwhile stays: entries
    /// no pointer names in it are copies looked for.
    #[test]
    fn a_segment_relink_could_not_look_in_stays_when_its_records_leave() {
        let dir = tempfile::tempdir().unwrap();
        let later = 100;
        // Appended just before the compaction's copies, to the same segment.
        let stay = compacted_then_taken_back(dir.path(), None, |s| {
            s.insert(later, super::super::encode(&record(later, 10)))
                .unwrap();
            s.flush().unwrap();
        });
        let segments = Segments::open(&dir.path().join(DB_DIR), BTreeMap::new()).unwrap();
        let seqs_in = |n: u32| -> BTreeSet<u64> {
            let (_, headers) = segments.headers(n).unwrap();
            headers.into_iter().map(|(seq, _)| seq).collect()
        };
        let numbers = segments.numbers().unwrap();
        let with_later = *numbers
            .iter()
            .find(|n| seqs_in(**n).contains(&later))
            .unwrap();
        let copies = seqs_in(with_later)
            .into_iter()
            .filter(|seq| stay.contains_key(seq));
        assert!(copies.count() > 0, "no copies beside #{later}");
        let path = segments.dir().join(format!("{with_later:08}.seg"));
        set_mode(&path, 0o000);
        without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.remove(later).unwrap();
            s.flush().unwrap();
            assert!(path.exists(), "deleted with the copies in it");
            set_mode(&path, 0o644);
            look_again(&mut s);
            holds_then_drain(&mut s, &stay);
        });
    }

    /// The drain run while the segment cannot be looked in waits on the records whose only
    /// copies it holds: none is taken for damage, and the next open finds them all.
    #[test]
    fn records_whose_copies_relink_could_not_look_at_survive_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let (stay, _, unreadable) = copies_out_of_reach(dir.path());
        let (read, dropped) = without(&NO_DAC, || {
            let s = SledStore::open(dir.path()).unwrap();
            let (mut b, m) = buffer_of(dir.path(), s);
            let at = Instant::now();
            let mut read = b.next(None, 100, u64::MAX, at).unwrap();
            // Past the minute a record that cannot be read is otherwise waited on.
            read.extend(
                b.next(None, 100, u64::MAX, at + Duration::from_secs(120))
                    .unwrap(),
            );
            b.flush().unwrap();
            (read.len(), m.dropped_corrupt.get())
        });
        assert_eq!((read, dropped), (0, 0), "#0 is the first record and waits");
        set_mode(&unreadable, 0o644);
        let s = SledStore::open(dir.path()).unwrap();
        let all: BTreeMap<u64, Vec<u8>> = s.scan(None, 100).unwrap().into_iter().collect();
        assert!(all == stay, "left {:?}", all.keys().collect::<Vec<_>>());
    }

    /// A segment compaction cannot read is not tried again: the others are compacted.
    #[test]
    fn a_segment_compaction_cannot_read_does_not_hold_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sparse_forty(dir.path());
        let before = s.segments.files();
        std::fs::remove_file(s.segments.dir().join(format!("{:08}.seg", before[0]))).unwrap();
        compact(&mut s);
        let after = s.segments.files();
        assert!(after.len() < before.len() - 2, "{before:?} -> {after:?}");
    }

    /// A segment that cannot be read for a reason that says something about the data (here
    /// EISDIR: its file made a directory) is left for the run: though the sparsest (the
    /// first of equals), it is skipped by every round while the others are compacted, and
    /// still after it can be read again.
    #[test]
    fn a_segment_compaction_cannot_read_is_left_for_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sparse_forty(dir.path());
        let (before, path) = first_segment(&s);
        let aside = dir.path().join("aside.seg");
        std::fs::rename(&path, &aside).unwrap();
        std::fs::create_dir(&path).unwrap();
        // Makes the removals durable; its round fails on the first segment.
        s.flush().unwrap();
        std::fs::remove_dir(&path).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        compact(&mut s);
        only_the_others_compacted(&before, &s.segments.files());
        read_back_whole(&s);
    }

    /// A segment that cannot be opened for now (no permission), though the sparsest, is
    /// passed over by each round, which compacts the next: it used to end every round while
    /// its cause lasted.
    #[test]
    fn a_segment_that_cannot_be_opened_for_now_does_not_hold_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sparse_forty(dir.path());
        let (before, path) = first_segment(&s);
        set_mode(&path, 0o000);
        let after = without(&NO_DAC, || {
            compact(&mut s);
            s.segments.files()
        });
        set_mode(&path, 0o644);
        only_the_others_compacted(&before, &after);
        read_back_whole(&s);
    }

    /// The segments of `s` and the path of the first, the sparsest of equals.
    fn first_segment(s: &SledStore) -> (Vec<u32>, PathBuf) {
        let before = s.segments.files();
        let path = s.segments.dir().join(format!("{:08}.seg", before[0]));
        (before, path)
    }

    /// From the segments `before` to those `after`: the first is still there, and the
    /// others were compacted.
    fn only_the_others_compacted(before: &[u32], after: &[u32]) {
        assert!(after.contains(&before[0]), "tried again: {after:?}");
        let gone = before[1..].iter().filter(|n| !after.contains(n)).count();
        assert!(gone > 2, "{before:?} -> {after:?}");
    }

    /// A store at `dir` whose records `0..40`, bodies `vec![seq; QUARTER]`, were written and
    /// flushed, then one in four stayed ([`one_in_four_stays`]): nine sparse segments and
    /// the one appended to.
    fn sparse_forty(dir: &Path) -> SledStore {
        let mut s = SledStore::open(dir).unwrap();
        one_in_four_stays(&mut s, 40, |seq| vec![seq as u8; QUARTER]);
        s
    }

    /// Checks that `s` holds the records of [`sparse_forty`] that stay, whole.
    fn read_back_whole(s: &SledStore) {
        let stay: Vec<(u64, Vec<u8>)> = (0..40)
            .step_by(4)
            .map(|seq| (seq, vec![seq as u8; QUARTER]))
            .collect();
        assert!(
            s.scan(None, 100).unwrap() == stay,
            "other records or bodies"
        );
    }

    /// A [`sparse_forty`] store at `dir` after the flush that made the removals durable,
    /// whose compaction round ran while a fault held (`fault` makes it, what it returns ends
    /// it); and whether that round copied anything.
    fn sparse_after_a_round_under(
        dir: &Path,
        fault: impl FnOnce() -> Box<dyn FnOnce()>,
    ) -> (SledStore, bool) {
        let mut s = sparse_forty(dir);
        let job = s.prepare_flush().unwrap().expect("removals to flush");
        let outcome = job.run();
        let end = fault();
        let done = s.finish_flush(outcome);
        end();
        done.unwrap();
        let copied = s.wants_flush();
        (s, copied)
    }

    /// A compaction round that fails for a reason that may pass (`fault`) copies nothing,
    /// ends, and leaves no segment aside: the later flushes compact exactly the segments
    /// they compact without the fault, and the records read back whole.
    fn a_passing_failure_ends_the_round_only(fault: impl FnOnce() -> Box<dyn FnOnce()>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, copied) = sparse_after_a_round_under(dir.path(), fault);
        assert!(!copied, "the round copied under the fault");
        let before = s.segments.files();
        compact(&mut s);
        let clean = tempfile::tempdir().unwrap();
        let (mut reference, copied) = sparse_after_a_round_under(clean.path(), || Box::new(|| ()));
        assert!(copied, "the round copied nothing without the fault");
        compact(&mut reference);
        let after = s.segments.files();
        assert_eq!(after, reference.segments.files(), "from {before:?}");
        assert!(after.len() < before.len() - 2, "{before:?} -> {after:?}");
        read_back_whole(&s);
    }

    /// Out of descriptors (EMFILE) as a round opens the sparsest segment: the round ends,
    /// no segment is left aside (one such moment used to leave every sparse segment for
    /// the run), and a later flush compacts them. (In a child process: the limit is the
    /// process's.)
    #[test]
    fn out_of_descriptors_a_compaction_round_ends_and_leaves_no_segment_aside() {
        if !in_child("out_of_descriptors_a_compaction_round_ends_and_leaves_no_segment_aside") {
            return;
        }
        a_passing_failure_ends_the_round_only(|| {
            let before = limit_descriptors(3);
            Box::new(move || {
                limit_descriptors(before);
            })
        });
    }

    /// A copy the disk refuses (its write fails: EFBIG past a file size limit stands in for
    /// ENOSPC, which takes a full file system) ends the round, and leaves no segment aside.
    /// (In a child process: the limit is the process's.)
    #[test]
    fn a_copy_the_disk_refuses_ends_the_round_and_leaves_no_segment_aside() {
        if !in_child("a_copy_the_disk_refuses_ends_the_round_and_leaves_no_segment_aside") {
            return;
        }
        a_passing_failure_ends_the_round_only(|| {
            limit_file_size(4096);
            Box::new(|| limit_file_size(u64::MAX))
        });
    }

    /// Records appended after the last flush whose pointers a crash kept from sled leave
    /// their numbers in the segments: in the tail of the newest segment a pointer names, or
    /// in one no pointer names (here the buffer had drained before). The next run hands out
    /// numbers above them.
    #[test]
    fn numbers_appended_before_a_crash_are_not_handed_out_again() {
        let body = |seq: u64| super::super::encode(&record(seq, 100));
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = flushed_store(dir.path(), 0..3, body);
            fill_with(&mut s, 3..5, body);
            assert_eq!(s.segments.files(), vec![1]);
            lose_pointers(&mut s, 3..5);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![0, 1, 2]);
        assert_eq!(s.last_seq(), Some(4), "from segment 1's tail");

        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.insert(0, body(0)).unwrap();
            s.flush().unwrap();
            s.remove(0).unwrap();
            s.flush().unwrap();
            fill_with(&mut s, 1..3, body);
            assert_eq!(s.segments.files(), vec![2]);
            lose_pointers(&mut s, 1..3);
            // A whole entry that is not a record (damage) does not move the numbers.
            let mut junk = u64::MAX.to_be_bytes().to_vec();
            junk.extend_from_slice(&4u32.to_be_bytes());
            junk.extend_from_slice(b"junk");
            std::fs::write(s.segments.dir().join("00000003.seg"), junk).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.usage(), (0, 0));
        assert_eq!(s.last_seq(), Some(2), "from segment 2, no pointer names it");
        assert!(s.segments.files().is_empty(), "deleted once read");

        // A torn last entry whose body holds what reads as a whole entry of another number
        // (a record's own bytes can): it is not read as one.
        let dir = tempfile::tempdir().unwrap();
        {
            let s = flushed_store(dir.path(), 0..3, body);
            let inner = body(1_000_000);
            let mut torn = 3u64.to_be_bytes().to_vec();
            torn.extend_from_slice(&(inner.len() as u32 + 100).to_be_bytes());
            torn.extend_from_slice(&1_000_000u64.to_be_bytes());
            torn.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            torn.extend_from_slice(&inner);
            let path = s.segments.dir().join("00000001.seg");
            let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            std::io::Write::write_all(&mut file, &torn).unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.last_seq(), Some(2), "a number from inside a torn entry");
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != DB_DIR && n != "lock")
            .collect();
        names.sort();
        names
    }

    /// Fill past the reclaim size with `n` records and `dead` dead letters, flushing as the
    /// forwarder does, then deliver every record; sled grown by [`churn`].
    fn fill_and_drain(s: &mut SledStore, n: u64, dead: u64) {
        churn(s, 40_000);
        for seq in 0..n {
            s.insert(seq, vec![seq as u8; 100]).unwrap();
            if seq % 256 == 255 {
                s.flush().unwrap();
            }
        }
        for seq in n..n + dead {
            s.dead_letter(seq, vec![7; 100]).unwrap();
        }
        s.flush().unwrap();
        for seq in 0..n {
            s.remove(seq).unwrap();
        }
        s.flush().unwrap();
    }

    #[test]
    fn a_drained_database_gives_its_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        s.insert(0, vec![1; 1000]).unwrap();
        assert_eq!(
            s.reclaim(false).unwrap(),
            None,
            "records left: nothing to do"
        );
        // Past 8 MiB with the churn (the drained segments are gone).
        fill_and_drain(&mut s, 60_000, 3);
        let purged = tempfile::tempdir().unwrap();
        let mut p = SledStore::open(purged.path()).unwrap();
        churn(&mut p, 10_000);
        for seq in 0..12_000 {
            p.insert(seq, vec![1; 1000]).unwrap();
        }
        assert!(p.db.size_on_disk().unwrap() > RECLAIM_WHEN_LOW);
        assert_eq!(p.purge().unwrap(), 12_000);
        assert!(
            p.db.size_on_disk().unwrap() <= RECLAIM_WHEN_LOW,
            "purge gives space back"
        );
        let (before, after) = s.reclaim(false).unwrap().expect("rebuilt");
        assert!(before > RECLAIM_ABOVE, "{before}");
        assert!(after * 4 < before, "{before} -> {after}");
        assert_eq!(s.db.size_on_disk().unwrap(), after);
        assert_eq!(s.reclaim(false).unwrap(), None, "small now");
        assert!(s.reclaimed_to > 0 && s.reclaimed_to == after);
        assert_eq!((s.usage(), s.dead_letters()), ((0, 0), 3));
        assert_eq!(
            s.last_seq(),
            Some(60_002),
            "sequence numbers are not reused"
        );
        assert!(
            leftovers(dir.path()).is_empty(),
            "{:?}",
            leftovers(dir.path())
        );
        // Still a working buffer, and it opens quietly.
        s.insert(60_003, vec![2; 10]).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!((s.usage(), s.dead_letters()), ((1, 10), 3));
        assert_eq!(s.last_seq(), Some(60_003));
        assert_eq!(moved(), 0);
    }

    /// A dead letter sled cannot read any more (here one large enough for a blob file of its
    /// own, the file made unreadable, EISDIR; a card's bad block gives EIO):
    /// sled's iterator answers every further call with the same error, never moving on. The
    /// rebuild of the drained database must end with an error,
    /// and the count of dead letters (at every open) must end, not ask again forever.
    #[test]
    fn an_unreadable_dead_letter_fails_the_rebuild_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.dead_letter(0, vec![7; 300_000]).unwrap();
            s.flush().unwrap();
        }
        let mut s = SledStore::open(dir.path()).unwrap();
        make_the_blob_unreadable(&s.db, &dir.path().join(DB_DIR));
        let mut letters = s.dead.iter();
        for _ in 0..3 {
            assert!(
                matches!(letters.next(), Some(Err(_))),
                "the same error each time"
            );
        }
        let fresh = dir.path().join("fresh");
        let (done, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let counted = s.dead_letters();
            let reclaimed = s.reclaim(false).map_err(|e| e.to_string());
            let built = s.build(&fresh).map_err(|e| e.to_string());
            let _ = done.send((counted, reclaimed, built));
        });
        let (counted, reclaimed, built) = outcome
            .recv_timeout(Duration::from_secs(20))
            .expect("the count or the rebuild did not end within 20 s");
        assert_eq!(counted, 0, "counted up to the unreadable one");
        assert!(reclaimed.is_err(), "{reclaimed:?}");
        assert!(built.is_err(), "{built:?}");
    }

    /// A power cut before the swap leaves a complete `sled.new` beside the old database;
    /// one between the two renames leaves `sled.new` and `sled.old` without `sled`.
    #[test]
    fn an_interrupted_swap_is_undone_or_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_DIR);
        let (new, old) = swap_dirs(&db);
        // Before the swap: the old database is kept, the new one goes.
        {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.insert(5, vec![5; 10]).unwrap();
            s.flush().unwrap();
        }
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("db"), b"half-built").unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![5]);
        assert!(leftovers(dir.path()).is_empty());
        drop(s);
        // Between the renames: the new database takes its place, the old one goes.
        std::fs::rename(&db, &new).unwrap();
        std::fs::create_dir(&old).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![5]);
        assert!(leftovers(dir.path()).is_empty());
        drop(s);
        // After the renames, before the old one was deleted.
        std::fs::create_dir(&old).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![5]);
        assert!(leftovers(dir.path()).is_empty());
        drop(s);
        // Only the drained database left (the new one lost): it is taken back.
        std::fs::rename(&db, &old).unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(seqs(&s, None), vec![5]);
        assert_eq!(s.last_seq(), Some(5));
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(moved(), 0);
    }

    /// Sets this process's limit on the size of a file it writes (RLIMIT_FSIZE).
    // rlim_t is u64 here but 32 bits on 32-bit ARM, where a limit beyond it is no limit.
    #[allow(clippy::useless_conversion)]
    fn limit_file_size(bytes: u64) {
        let limit = libc::rlimit {
            rlim_cur: bytes.try_into().unwrap_or(libc::RLIM_INFINITY),
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain system calls with a valid pointer.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
    }

    /// The mark file holds two slots of 24 bytes; one whose length is damaged (a sparse
    /// 64 GiB here) must still be read as those 48 bytes. Read whole, its length sizes an
    /// allocation at every open: here (address space capped at 8 GiB, as a gateway's memory
    /// caps it) the allocation fails, and the sound database is moved aside for it.
    #[test]
    fn a_mark_file_of_a_damaged_length_is_read_as_its_two_slots() {
        if !in_child("a_mark_file_of_a_damaged_length_is_read_as_its_two_slots") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        drop(flushed_store(dir.path(), 0..3, |seq| vec![seq as u8; 10]));
        let mark = dir.path().join(DB_DIR).join(MARK_FILE);
        assert_eq!(std::fs::metadata(&mark).unwrap().len(), 48);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&mark)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let limit = libc::rlimit {
            rlim_cur: 8 << 30,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a plain system call with a valid pointer.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!((seqs(&s, None), s.marked()), (vec![0, 1, 2], Some(2)));
        assert_eq!(moved(), 0, "moved aside");
    }

    /// Whether this is the child process that runs test `name` with a file size limit of its
    /// own; if not, runs that child and checks that the test passed in it.
    fn in_child(name: &str) -> bool {
        if std::env::var_os("HUBGATE_FSIZE_CHILD").is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &format!("buffer::sled_store::tests::{name}")])
            .args(["--nocapture", "--test-threads=1"])
            .env("HUBGATE_FSIZE_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("1 passed"), "{stdout}{out:?}");
        false
    }

    /// A store whose one record (0) is flushed, and whose sled then failed a write of its
    /// log made on a thread of its own: its log cannot grow past a limit any more, and
    /// writes to sled (not through the store) filled a log buffer.
    fn store_whose_sled_failed(dir: &Path) -> SledStore {
        limit_file_size(u64::MAX);
        let mut s = SledStore::open(dir).unwrap();
        s.insert(0, vec![0; 10]).unwrap();
        s.flush().unwrap();
        limit_file_size(std::fs::metadata(s.dir.join("db")).unwrap().len() + 4096);
        let e = (1..1_000_000u64).find_map(|n| s.db.insert(n.to_be_bytes(), vec![0; 100]).err());
        let e = e.expect("sled's log grows past the limit").to_string();
        assert!(e.contains("File too large"), "{e}");
        s
    }

    /// sled also writes its log on threads of its own, whenever a log buffer (512 KiB) is
    /// full, and keeps that write's error as it keeps its flush's: the store's next flush is
    /// a failed sync too, not a flush to try again every round (which held acknowledgements
    /// and the sources for good), whether it has a record written since the last flush or
    /// only a removal: the index holds them until the flush writes them into sled, which
    /// refuses; a change of state only, sled refuses at once.
    #[test]
    fn a_failed_background_write_of_sleds_log_fails_the_next_flush() {
        if !in_child("a_failed_background_write_of_sleds_log_fails_the_next_flush") {
            return;
        }
        let index_refused = |e: &BufferError| matches!(e, BufferError::SyncFailed(why) if why.contains("sled's write of the index"));
        let dir = tempfile::tempdir().unwrap();
        let mut s = store_whose_sled_failed(dir.path());
        s.insert(1, vec![0; 10]).unwrap();
        let e = s.flush().unwrap_err();
        assert!(index_refused(&e), "{e}");
        assert!(matches!(s.flush(), Err(BufferError::SyncFailed(_))));

        let dir = tempfile::tempdir().unwrap();
        let mut s = store_whose_sled_failed(dir.path());
        assert_eq!(s.remove(0).unwrap(), 10);
        let e = s.flush().unwrap_err();
        assert!(index_refused(&e), "{e}");
        assert!(matches!(s.flush(), Err(BufferError::SyncFailed(_))));

        let dir = tempfile::tempdir().unwrap();
        let mut s = store_whose_sled_failed(dir.path());
        assert!(s.state_set(b"k", &[1]).is_err());
        let e = s.flush().unwrap_err();
        assert!(
            matches!(&e, BufferError::SyncFailed(why) if why.contains("sled's flush")),
            "{e}"
        );
    }

    /// sled 0.34 keeps the first error of a write of its log and fails every later flush
    /// and write with it, whatever became of the cause, until the database is opened again
    /// (`Config::global_error`): a flush of sled is never worth trying again. So the store
    /// reports sled's failed flush as a failed sync, which ends the run, and the restart
    /// opens the database again with what was flushed before. Runs itself as a child
    /// process, which limits the size of the files it writes (RLIMIT_FSIZE) to make sled's
    /// log write fail, then lifts the limit.
    #[test]
    fn a_failed_sled_write_fails_every_later_flush_until_reopened() {
        if !in_child("a_failed_sled_write_fails_every_later_flush_until_reopened") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        s.insert(0, vec![0; 10]).unwrap();
        s.flush().unwrap();
        let log = s.dir.join("db");
        let room = std::fs::metadata(&log).unwrap().len() + 4096;
        limit_file_size(room);
        // Each flush writes sled's log further; its pointers outgrow the segment's bodies.
        let mut seq = 0;
        let e = loop {
            seq += 1;
            s.insert(seq, vec![0; 10]).unwrap();
            if let Err(e) = s.flush() {
                break e;
            }
        };
        assert!(
            matches!(&e, BufferError::SyncFailed(why) if why.contains("sled's flush")),
            "{e}"
        );
        limit_file_size(u64::MAX);
        assert!(s.db.flush().is_err(), "sled's own error stays");
        assert!(
            s.meta.insert(b"after", &[1]).is_err(),
            "and fails writes too"
        );
        assert!(matches!(s.flush(), Err(BufferError::SyncFailed(_))));
        drop(s);
        let mut s = SledStore::open(dir.path()).unwrap();
        // What was flushed; #seq, whose flush failed, may be there too: sled's log stopped at
        // the limit after its group's write (never acknowledged, its body synced before
        // sled's flush: kept, as any record past the mark whose body reads whole).
        let read = s.scan(None, seq as usize + 2).unwrap();
        let numbers: Vec<u64> = read.iter().map(|(n, _)| *n).collect();
        assert!(read.len() as u64 >= seq, "what was flushed: {numbers:?}");
        assert!(read.len() as u64 <= seq + 1, "{numbers:?}");
        assert_eq!(numbers[..seq as usize], (0..seq).collect::<Vec<_>>());
        for (n, body) in read {
            assert_eq!(body, vec![0; 10], "#{n} reads whole");
        }
        s.insert(seq + 1, vec![0; 10]).unwrap();
        s.flush().unwrap();
    }

    /// Relink as the open runs it, but with the listing of the segments refused (EMFILE,
    /// EACCES on the directory...): its error arm. `values` is left unlistable.
    fn relink_with_listing_refused(s: &mut SledStore, values: &Path) -> u64 {
        let flushed = s.marked().unwrap();
        s.unlinked = None;
        s.segments.look_in_later(BTreeSet::new());
        set_mode(values, 0o300);
        s.relink(flushed, None);
        assert!(s.unlinked.as_ref().unwrap().gone.is_none(), "the error arm");
        flushed
    }

    /// Relink failing before it could look anywhere keeps every segment that was there at
    /// open for later, and waits longer after each such failure. The segment appended to
    /// since is not among them: emptied, it is not kept as an orphan, so the look that
    /// completes does not delete it with a record acknowledged since.
    #[test]
    fn the_segment_appended_to_is_not_kept_for_relink() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, with_copies) = copies_out_of_reach(dir.path());
        let values = with_copies.parent().unwrap().to_path_buf();
        without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            relink_with_listing_refused(&mut s, &values);
            set_mode(&values, 0o755);
            let body = |seq: u64| super::super::encode(&record(seq, 10));
            s.insert(100, body(100)).unwrap();
            s.flush().unwrap();
            let current = segment_of(&s, 100);
            let current_path = values.join(format!("{current:08}.seg"));
            // The retry: the listing is refused again.
            set_mode(&values, 0o300);
            look_again(&mut s);
            set_mode(&values, 0o755);
            let u = s.unlinked.as_ref().unwrap();
            assert!(u.gone.is_none());
            assert_eq!(u.failed, 2);
            assert!(u.retry > Instant::now() + RELINK_RETRY, "no longer wait");
            assert!(!s.segments.unlooked_as_written().contains(&current));
            // #100 delivered; the records looked for keep the buffer from draining.
            s.remove(100).unwrap();
            s.flush().unwrap();
            // #101 goes to the same segment, and is acknowledged.
            s.insert(101, body(101)).unwrap();
            s.flush().unwrap();
            assert_eq!(segment_of(&s, 101), current);
            set_mode(&values, 0o755);
            set_mode(&with_copies, 0o644);
            look_again(&mut s);
            assert!(s.unlinked.is_none());
            let exists = current_path.exists();
            let read = s.scan(Some(100), 1);
            set_mode(&values, 0o755);
            assert!(
                exists,
                "segment {current} deleted with acknowledged #101 in it"
            );
            assert_eq!(read.unwrap(), vec![(101, body(101))]);
        });
    }

    /// Relink failing for a reason that may pass (the listing refused for now) makes the
    /// records looked for wait for as long as it lasts, not a minute: none is taken for
    /// damage, and the next look finds them all.
    #[test]
    fn records_looked_for_wait_while_the_listing_is_refused_for_now() {
        let dir = tempfile::tempdir().unwrap();
        let (stay, copied, with_copies) = copies_out_of_reach(dir.path());
        let values = with_copies.parent().unwrap().to_path_buf();
        let (first_read, read, dropped) = without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            relink_with_listing_refused(&mut s, &values);
            set_mode(&with_copies, 0o644);
            let first = *copied.first().unwrap();
            let first_read = format!("{:?}", s.scan(first.checked_sub(1), 1));
            let (mut b, m) = buffer_of(dir.path(), s);
            let at = Instant::now();
            // The drain tries every 5 s for 70 s; the listing is still refused meanwhile
            // (an fd leak, say).
            let mut read = Vec::new();
            for i in 0..=14 {
                let now = at + Duration::from_secs(5 * i);
                read.extend(b.next(None, 100, u64::MAX, now).unwrap());
            }
            b.flush().unwrap();
            (first_read, read.len(), m.dropped_corrupt.get())
        });
        set_mode(&values, 0o755);
        // The listing works again: the next look (here the open) finds nothing left to
        // look for and deletes the segment with the copies.
        let s = SledStore::open(dir.path()).unwrap();
        let all: BTreeMap<u64, Vec<u8>> = s.scan(None, 100).unwrap().into_iter().collect();
        let lost: Vec<u64> = stay
            .keys()
            .filter(|q| !all.contains_key(q))
            .copied()
            .collect();
        let kept = with_copies.exists();
        assert!(
            lost.is_empty(),
            "acknowledged {lost:?} lost ({dropped} taken for damage, {read} read, segment with the copies kept: {kept}); first read: {first_read}"
        );
    }

    /// A segment relink could not look in, emptied by deliveries, goes once the flush that
    /// makes those removals durable succeeded, as any emptied segment: not as the look that
    /// completes runs, before that flush (a power cut would bring back pointers into it).
    #[test]
    fn a_kept_segment_emptied_goes_only_after_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, with_copies) = copies_out_of_reach(dir.path());
        let values = with_copies.parent().unwrap().to_path_buf();
        let later = 200;
        let own = without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.insert(later, super::super::encode(&record(later, 10)))
                .unwrap();
            s.flush().unwrap();
            segment_of(&s, later)
        });
        let own_path = values.join(format!("{own:08}.seg"));
        set_mode(&own_path, 0o000);
        let (before_job, after_job) = without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            assert!(s.segments.unlooked_as_written().contains(&own));
            s.remove(later).unwrap();
            set_mode(&own_path, 0o644);
            set_mode(&with_copies, 0o644);
            s.unlinked.as_mut().unwrap().retry = Instant::now();
            let job = s.prepare_flush().unwrap().unwrap();
            let before_job = own_path.exists();
            let outcome = job.run();
            s.finish_flush(outcome).unwrap();
            (before_job, own_path.exists())
        });
        assert!(!after_job);
        assert!(
            before_job,
            "deleted before the flush that makes #{later}'s removal durable"
        );
    }

    /// A record looked for among the newest is left out of `recent_ids`, which seed the
    /// de-duplication at start, as a damaged one is: the others are still read.
    #[test]
    fn recent_ids_read_past_a_record_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let (stay, copied, with_copies) = copies_out_of_reach(dir.path());
        let ids = without(&NO_DAC, || {
            let s = SledStore::open(dir.path()).unwrap();
            let (b, _) = buffer_of(dir.path(), s);
            b.recent_ids(100).map_err(|e| e.to_string())
        });
        set_mode(&with_copies, 0o644);
        let readable = stay.keys().filter(|seq| !copied.contains(seq));
        let expected: Vec<String> = readable.map(|seq| format!("id-{seq}")).collect();
        assert!(!expected.is_empty());
        assert_eq!(ids, Ok(expected));
    }

    /// A look that finds nothing costs no sync; counts and bytes match the records after a
    /// relink in the run; nothing is due with nothing looked for.
    #[test]
    fn a_fruitless_look_writes_nothing_and_counts_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (stay, _, with_copies) = copies_out_of_reach(dir.path());
        without(&NO_DAC, || {
            let mut s = SledStore::open(dir.path()).unwrap();
            s.flush().unwrap();
            assert!(!s.wants_flush());
            s.unlinked.as_mut().unwrap().retry = Instant::now();
            assert!(s.wants_flush());
            assert_eq!(s.flush().unwrap(), 0, "a look that found nothing synced");
            assert!(!s.wants_flush(), "due again at once");
            let bytes: u64 = stay.values().map(|b| b.len() as u64).sum();
            assert_eq!(s.usage(), (stay.len() as u64, bytes));
            set_mode(&with_copies, 0o644);
            look_again(&mut s);
            assert!(s.unlinked.is_none());
            assert!(!s.wants_flush());
            assert_eq!(s.usage(), (stay.len() as u64, bytes));
            let held: u64 = s
                .segments
                .holding()
                .iter()
                .map(|n| s.segments.held(*n))
                .sum();
            assert_eq!(held, stay.len() as u64);
            holds_then_drain(&mut s, &stay);
            assert_eq!(s.usage(), (0, 0));
        });
    }

    /// The move into groups flushes each batch before its keys leave the old tree: a flush
    /// whose sync fails fails the move with every pointer still in the old tree.
    #[test]
    fn a_move_into_groups_whose_sync_fails_keeps_every_pointer_in_the_old_tree() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 5, 10);
        s.flush().unwrap();
        let old = s.db.open_tree(super::super::upgrade::POINTERS).unwrap();
        for (seq, p) in s.index.scan(None, usize::MAX).unwrap() {
            old.insert(seq.to_be_bytes(), &p.to_bytes()).unwrap();
        }
        s.index.clear().unwrap();
        let log = s
            .syncs()
            .files
            .swap_log(std::fs::File::open("/dev/null").unwrap());
        let e = s.group(|_| {}).unwrap_err();
        s.syncs().files.swap_log(log);
        assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
        assert_eq!(old.len(), 5);
    }

    /// Dropping the store waits for the flush its thread runs: once the store is gone, what
    /// that flush makes durable is on the disk, its mark file written (a `buffer` command or
    /// the next start opening the buffer right after reads it).
    #[test]
    fn dropping_the_store_waits_for_the_flush_its_thread_runs() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 300, 100);
        let mark = s.dir.join(MARK_FILE);
        assert!(
            s.start_flush(&Arc::new(Notify::new())).is_none(),
            "runs on the flush thread"
        );
        drop(s);
        assert_eq!(Mark::open(&mark).unwrap().value(), Some(299));
    }

    /// A body the segment refuses for want of room is an error the ledger retries: the run
    /// goes on and flushes. One refused by a file system that turned read-only ends the run
    /// as a failed sync does, with what to do about it: every later flush fails the same way.
    #[test]
    fn a_full_disk_refusing_a_body_is_retried_a_read_only_one_ends_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        fill(&mut s, 0, 3, 10);
        let io = |errno| std::io::Error::from_raw_os_error(errno);
        let db = s.dir.clone();
        let why = |seq, errno| format!("{}: appending record #{seq}: {}", db.display(), io(errno));
        let full = s.append_failed(3, io(libc::ENOSPC));
        assert!(
            matches!(&full, BufferError::Storage(w) if *w == why(3, libc::ENOSPC)),
            "{full:?}"
        );
        assert!(s.flush().is_ok());
        let refused = s.append_failed(4, io(libc::EROFS));
        let said = format!(
            "{}: {}",
            why(4, libc::EROFS),
            super::super::disk::Refusal::of(&db).hint()
        );
        assert!(
            matches!(&refused, BufferError::SyncFailed(w) if *w == said),
            "{refused:?}"
        );
        assert!(matches!(s.flush(), Err(BufferError::SyncFailed(w)) if w == said));
    }

    /// The bytes of the reserve given back are reported once, both the open's and a later
    /// release's: an operator is told the disk was full.
    #[test]
    fn the_reserve_given_back_at_open_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        assert!(super::super::reserve::keep(dir.path(), 0).unwrap());
        s.reserve_released = 5;
        assert_eq!(
            s.release_reserve_if_short(),
            5,
            "the disk has room: the reserve stays"
        );
        assert_eq!(s.release_reserve_if_short(), 0);
        assert!(super::super::reserve::present(dir.path()));
    }

    /// A file of the buffer the open cannot drop the cached pages of (here one it may not
    /// open) is said, once, for what a failed write left in memory may be read as on disk.
    #[test]
    fn cached_pages_the_open_cannot_drop_are_said() {
        let dir = tempfile::tempdir().unwrap();
        drop(flushed_store(dir.path(), 0..3, |seq| vec![seq as u8; 10]));
        let closed = dir.path().join("closed");
        std::fs::write(&closed, b"no one reads this").unwrap();
        set_mode(&closed, 0o000);
        let logged = without(&NO_DAC, || {
            crate::logger::warnings_of(|| {
                let s = SledStore::open(dir.path()).unwrap();
                assert_eq!(seqs(&s, None), vec![0, 1, 2]);
            })
        });
        assert_eq!(
            logged,
            vec![format!(
                "buffer: the cached pages of 1 file(s) in {} could not be dropped: what a \
                 failed write left only in memory may be read as on disk",
                dir.path().display()
            )]
        );
    }

    /// The `buffer` commands' open leaves a database that will not open where it is, with
    /// its records, and says why and what to do: moved aside, the fresh one in its place
    /// would be read as the buffer, empty.
    #[test]
    fn a_database_that_will_not_open_is_left_where_it_is_by_the_buffer_commands() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_DIR);
        std::fs::write(&db, b"not a sled directory").unwrap();
        let e = SledStore::open_unmoved(dir.path()).err().expect("refused");
        let said = e.to_string();
        assert!(
            said.starts_with(&format!(
                "buffer storage: buffer database {} will not open (",
                db.display()
            )) && said
                .ends_with("`hubgate buffer recover <that directory>` takes its records back"),
            "{said}"
        );
        assert_eq!(moved_aside(dir.path()), vec![]);
        assert_eq!(std::fs::read(&db).unwrap(), b"not a sled directory");
    }
}
