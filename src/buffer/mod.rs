//! The spill buffer: records the sink could not take yet, in arrival order, bounded.
//!
//! [`Store`] is the storage (sled on the gateway, memory in tests, none on a card that
//! failed: [`ReadOnlyStore`]); [`Buffer`] adds the contract on top: byte cap with
//! `when_full`, counters, and the on-disk encoding (version byte + CRC-32 + CBOR) so a
//! damaged record is skipped, never crash-looped on.

mod compact;
pub mod disk;
mod durable;
mod far_counters;
mod index;
mod lock;
mod mark;
mod memory;
mod page_cache;
mod read_only;
mod recover;
pub mod reserve;
mod salvage;
mod segments;
mod sled_store;
mod stored_at;
#[cfg(test)]
mod test_support;
mod upgrade;

pub use lock::BufferLock;
pub use memory::MemoryStore;
pub use read_only::ReadOnlyStore;
pub use recover::{recover, Recovered};
pub use salvage::{kept_aside, left_in_state_directory, moved_aside, state_directories};
#[cfg(test)]
pub use segments::failing_appends_in;
pub use sled_store::SledStore;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::config::{BufferConfig, WhenFull};
use crate::lorawan::fcnt::{COPIES, COPY_WINDOW};
use crate::metrics::Metrics;
use crate::record::{ms_since_epoch, Record};

/// The format of a record's bytes. A release that raises it raises the buffer's layout too
/// (`sled_store::LAYOUT`), so an older release refuses the buffer rather than take its
/// records for damage.
const FORMAT_VERSION: u8 = 1;
/// Deletions not synced yet are synced once they are this old (see [`Buffer::remove`]).
const DELETIONS_SYNCED_WITHIN: Duration = Duration::from_secs(1);
/// A drained database is rebuilt to give its space back only once the buffer has stayed
/// empty this long: a drain that empties it for a moment while records still spill must not
/// stop for a rebuild (it blocks the forwarder for as long as it takes).
const REBUILD_WHEN_EMPTY_FOR: Duration = Duration::from_secs(5);
/// Once the oldest record has left, the next one's creation time is looked up within this
/// (one read of the store's first record, not one per record drained).
const OLDEST_CHECKED_WITHIN: Duration = Duration::from_secs(1);
/// Records read at a time for [`Buffer::recent_ids`].
const RECENT_BATCH: usize = 64;
/// Bytes of bodies read at a time for [`Buffer::recent_ids`] (one larger record goes alone):
/// 64 records of a 16 MiB MQTT message each would be a GiB at every start, past the unit's
/// `MemoryMax`, and every start would fail the same way.
const RECENT_BYTES: u64 = 4 << 20;
/// Records read at a time for [`Buffer::next`].
const NEXT_BATCH: usize = 32;
/// How long records that cannot be read for a reason that says something about the data
/// (EIO, EISDIR) hold the drain (tried at every round) before they are taken for damage,
/// each as it comes, until a read works again or one in another segment fails: a read error
/// that outlasts retries for a minute is a bad block, and the records on it lost beat a
/// drain stopped for good (or, ending the run, a restart loop that systemd gives up on).
const UNREADABLE_FOR: Duration = Duration::from_secs(60);
/// A read failing after this long without an attempt (the drain was not tried: the sink
/// was down, the window full) starts a new [`UNREADABLE_FOR`]: only a minute of retries
/// tells a bad block, not a first failure hours after the last.
const UNREADABLE_GAP: Duration = Duration::from_secs(10);
/// State key prefix of LoRaWAN frame counters: then DevAddr (4 bytes) and DevEUI (8).
const FCNT_PREFIX: &[u8] = b"fcnt/";
/// State key prefix of the LoRaWAN frames a session accepted last ([`Buffer::save_copies`]):
/// then DevAddr and DevEUI. Not under [`FCNT_PREFIX`]: an older release reads those values,
/// and drops one of a length it does not know.
const COPIES_PREFIX: &[u8] = b"fcnt-copies/";
/// Bytes of a [`COPIES_PREFIX`] value before its frames: the keys' print, the boot's id.
const COPIES_HEAD: usize = 4 + 16;

/// What the pipeline keeps about the wall clock in the buffer's state, each under its own key
/// and encoded by `pipeline::clock_steps`.
#[derive(Debug, Clone, Copy)]
pub enum ClockState {
    /// The clock's forward steps, by the records taken before each.
    Steps,
    /// Its last trusted reading (boot, the boot's start by the clock, time, synchronised).
    Reading,
}

/// [`Buffer::clock_state`] of a store not opened as a buffer (`hubgate buffer stats`).
pub fn clock_state(store: &dyn Store, what: ClockState) -> Result<Vec<u8>, BufferError> {
    state(store, what.key())
}

/// The state entry `key` of `store` (empty: none).
fn state(store: &dyn Store, key: &[u8]) -> Result<Vec<u8>, BufferError> {
    Ok(store
        .state_scan(key)?
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
        .unwrap_or_default())
}

impl ClockState {
    fn key(self) -> &'static [u8] {
        match self {
            ClockState::Steps => b"clock-steps",
            ClockState::Reading => b"clock-reading",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer storage: {0}")]
    Storage(String),
    /// Another process (or another open store in this one) holds the buffer directory's
    /// lock ([`BufferLock`]): a hubgate runs on it, which the `buffer` commands tell the
    /// operator to stop first.
    #[error("buffer storage: {0}")]
    Locked(String),
    /// A file sync failed. Linux reports a failed write-back once and then counts its pages
    /// as written, so a second sync would succeed without them: nothing written before can be
    /// trusted to be on disk. hubgate stops; a restart reopens the buffer from what is on
    /// disk, and the sources send again what was never acknowledged. sled's flush failing
    /// counts as this too: sled keeps the first failed write of its log and fails every
    /// later flush and write with it until the database is opened again.
    #[error("buffer storage: {0}; stopping, as what was written cannot be trusted to be on disk (a restart reopens the buffer from what is)")]
    SyncFailed(String),
    /// The file system of a buffer run without ([`ReadOnlyStore`]) takes writes again (a
    /// disk back, mounted read-write again): the run ends, as after a failed sync, so that
    /// the next start opens the buffer and sends what it holds.
    #[error("buffer storage: {0}; stopping, so that the next start opens the buffer")]
    Reopen(String),
    /// A record's body is there but cannot be read, unlike damage, which a read can tell;
    /// [`Buffer::next`] waits and tries again. `passes`: for want of a resource (EMFILE,
    /// ENOMEM...), which says nothing about the data and is never taken for damage;
    /// otherwise (EIO from a bad block, EISDIR) it is once reads have failed for
    /// [`UNREADABLE_FOR`] in its `segment` (where the store has segments).
    #[error("buffer storage: record #{seq} cannot be read: {why}")]
    Unreadable {
        seq: u64,
        why: String,
        passes: bool,
        segment: Option<u32>,
    },
}

/// A state entry: (key, value).
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// Stored entries: (sequence number, encoded record).
pub type Entries = Vec<(u64, Vec<u8>)>;

/// Ordered key-value storage of encoded records, keyed by sequence number.
pub trait Store: Send {
    fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError>;
    /// Removes `seq`; returns the size of what was removed (0 if absent).
    fn remove(&mut self, seq: u64) -> Result<u64, BufferError>;
    /// Up to `limit` entries with a sequence number above `after`, in order, and no more
    /// once their values take `bytes` ([`within`]: the one that crosses it is the last, and
    /// the first always comes), judged by lengths known before a body is read. A body that
    /// cannot be read ([`BufferError::Unreadable`]) ends the entries before it, and is the
    /// error when it comes first.
    fn scan_within(
        &self,
        after: Option<u64>,
        limit: usize,
        bytes: u64,
    ) -> Result<Entries, BufferError>;
    /// [`Store::scan_within`] without a byte budget.
    fn scan(&self, after: Option<u64>, limit: usize) -> Result<Entries, BufferError> {
        self.scan_within(after, limit, u64::MAX)
    }
    /// The sequence numbers of the `limit` newest entries, newest first; no body is read.
    fn seqs_back(&self, limit: usize) -> Result<Vec<u64>, BufferError>;
    /// The oldest entry's sequence number; no body is read.
    fn first_seq(&self) -> Result<Option<u64>, BufferError>;
    /// Small state kept with the records and made durable by the same flushes (frame
    /// counters); survives rebuilds and purges.
    fn state_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError>;
    /// Remove state entry `key` (nothing if there is none), durable with the next flush.
    fn state_remove(&mut self, key: &[u8]) -> Result<(), BufferError>;
    /// Every state entry whose key starts with `prefix`.
    fn state_scan(&self, prefix: &[u8]) -> Result<Vec<StateEntry>, BufferError>;
    /// Make every change so far survive a power cut; returns the number of file syncs
    /// (`fsync`/`fdatasync`) that took.
    fn flush(&mut self) -> Result<u64, BufferError>;
    /// [`Store::flush`], on a thread of the store's own where it has one: `None` then, and
    /// [`Store::flushed`] gives the outcome once it is done (`done` is notified). A store
    /// without one flushes here and returns the outcome. The flush covers every change made
    /// before the call; changes made while it runs may or may not be covered. One at a time:
    /// not called again before [`Store::flushed`] gave the outcome.
    fn start_flush(&mut self, _done: &Arc<Notify>) -> Option<Result<u64, BufferError>> {
        Some(self.flush())
    }
    /// The outcome of the flush [`Store::start_flush`] left running, once it is done (with
    /// `wait`, blocking until then); `None` while it runs.
    fn flushed(&mut self, _wait: bool) -> Option<Result<u64, BufferError>> {
        None
    }
    /// (number of entries, total bytes of values); computed at open, kept up to date after.
    fn usage(&self) -> (u64, u64);
    /// Housekeeping of the store's own waits for a flush (compaction of its files, a file
    /// of its that is out of date).
    fn wants_flush(&self) -> bool {
        false
    }
    /// Leave this much free on the disk: housekeeping that writes (compaction) waits while
    /// there is less.
    fn keep_free(&mut self, _bytes: u64) {}
    fn last_seq(&self) -> Option<u64>;
    /// Keep a record the sink rejected for good (or a message hubgate gave up on), out of the
    /// send path.
    fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError>;
    fn dead_letters(&self) -> u64;
    /// Whether what it is given reaches a disk at all: not on a card turned read-only
    /// ([`ReadOnlyStore`]), which can keep no dead letter and holds its state in memory.
    fn takes_writes(&self) -> bool {
        true
    }
    /// Like [`Store::scan`], over the dead letters.
    fn scan_dead(&self, after: Option<u64>, limit: usize) -> Result<Entries, BufferError>;
    /// Delete everything (the `buffer purge` command).
    fn purge(&mut self) -> Result<u64, BufferError>;
    /// Bytes still free for an unprivileged writer on the storage's file system, where
    /// there is one.
    fn disk_free(&self) -> Option<u64>;
    /// When empty, give back the disk space drained records still take (sooner when the
    /// disk is `low` on free space); `Some((before, after))` in bytes when it did.
    fn reclaim(&mut self, _low: bool) -> Result<Option<(u64, u64)>, BufferError> {
        Ok(None)
    }
    /// Give the disk space reserve (see [`reserve`]) back if the disk is short of space;
    /// the bytes given back since the last call, by the open too.
    fn release_reserve_if_short(&mut self) -> u64 {
        0
    }
    /// Records the open dropped because no buffer holds them (an old layout's over 64 MiB,
    /// `MAX_VALUE`), since the last call.
    fn take_too_large(&mut self) -> u64 {
        0
    }
    /// Make the disk space reserve where it is missing and the disk has room for it, beside
    /// `min_free`; whether it was made.
    fn keep_reserve(&mut self, _min_free: u64) -> std::io::Result<bool> {
        Ok(false)
    }
}

/// How many of the values of `lens` bytes a scan within `bytes` returns: each while those
/// before it take less, so the first always (a value larger than the budget goes alone) and
/// the one that crosses it last.
fn within(lens: impl IntoIterator<Item = u64>, bytes: u64) -> usize {
    let (mut n, mut taken) = (0, 0u64);
    for len in lens {
        if n > 0 && taken >= bytes {
            break;
        }
        taken = taken.saturating_add(len);
        n += 1;
    }
    n
}

pub fn encode(rec: &Record) -> Vec<u8> {
    let cbor = serde_cbor::to_vec(rec).expect("a Record always serializes");
    let mut out = Vec::with_capacity(cbor.len() + 5);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32fast::hash(&cbor).to_be_bytes());
    out.extend_from_slice(&cbor);
    out
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown record format version {0}")]
    Version(u8),
    #[error("record shorter than its header")]
    Short,
    #[error("checksum mismatch")]
    Checksum,
    #[error("bad CBOR: {0}")]
    Cbor(String),
}

/// When a record from before this run was made, on the monotonic clock: by its creation
/// time, or at `opened` (the buffer's opening) if it has none or cannot be read.
fn made_at(bytes: &[u8], opened: Instant) -> Instant {
    let now = (Instant::now(), SystemTime::now());
    decode(bytes)
        .ok()
        .filter(|r| r.created_ms > 0)
        .map_or(opened, |r| {
            let age = ms_since_epoch(now.1).saturating_sub(r.created_ms);
            now.0
                .checked_sub(Duration::from_millis(age))
                .unwrap_or(now.0)
        })
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Short)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    if rest.len() < 4 {
        return Err(DecodeError::Short);
    }
    let (crc, cbor) = rest.split_at(4);
    if crc32fast::hash(cbor).to_be_bytes() != crc {
        return Err(DecodeError::Checksum);
    }
    serde_cbor::from_slice(cbor).map_err(|e| DecodeError::Cbor(e.to_string()))
}

/// What happened to a record given to [`Buffer::push`].
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// Dropped by `when_full` (counted).
    Dropped,
    /// `when_full = "block"`: no room; try again once records have left.
    Full,
    /// No buffer of this configuration ever holds it (over `max_bytes` or the largest
    /// entry), whatever `when_full` says. Nothing is counted yet: the caller drops it with
    /// [`Buffer::drop_too_large`], or keeps it where it is (in flight, its sink settles it).
    TooLarge {
        bytes: u64,
    },
}

/// The buffer's flush: none running, running on the store's thread, or done with its
/// outcome not taken yet.
enum Flush {
    Idle,
    Running,
    Done(Result<u64, BufferError>),
}

#[derive(Clone, Copy)]
enum Full {
    /// `buffer.max_bytes` reached.
    Cap,
    /// Less than `buffer.min_free` left on the disk.
    Disk,
    /// A record larger than any the buffer holds, whatever its room (counted as
    /// `buffer_full`).
    TooLarge,
}

pub struct Buffer {
    store: Box<dyn Store>,
    max_bytes: u64,
    min_free: u64,
    when_full: WhenFull,
    metrics: Arc<Metrics>,
    /// Set while less than `min_free` is left on the disk (one statvfs per spilled record):
    /// the byte cap frozen at what was stored when it went low.
    disk_cap: Option<u64>,
    /// The disk space reserve was given back and is not made again yet: its room is for
    /// sled's flushes, so records leave it free as well as `min_free` (with `min_free` under
    /// the reserve's size they would take it at once).
    reserve_out: bool,
    /// Records removed since the last flush started, and how many may wait for one.
    unsynced_removals: usize,
    removals_per_sync: usize,
    /// Records removed that the running flush is to make durable.
    syncing_removals: usize,
    /// State entries (frame counters) set since the last flush started.
    unsynced_state: bool,
    /// State entries set before a flush that has not succeeded yet.
    syncing_state: bool,
    /// When the last flush started.
    last_flush: Instant,
    flush: Flush,
    /// Notified when a flush the store runs on a thread of its own is done.
    flush_done: Arc<Notify>,
    /// Dead letters kept (the store counts them once, at open).
    dead: u64,
    /// When records were stored, for the oldest one's age.
    stored_at: stored_at::StoredAt,
    /// Sequence number of the oldest record as last looked up (`None`: empty), whether it
    /// has left since, and when it was looked up: the time in `metrics.buffer_oldest` is
    /// that record's.
    oldest: Option<u64>,
    oldest_left: bool,
    oldest_checked: Instant,
    /// Records up to this sequence number were left from before this run, and when it
    /// opened the buffer: their times are their creation's, not marks of `stored_at`.
    left_over: Option<(u64, Instant)>,
    /// Records left and emptied the buffer: giving space back is due, once it has stayed
    /// empty for [`REBUILD_WHEN_EMPTY_FOR`] (seen empty since the time kept here).
    drained: Option<Option<Instant>>,
    /// The episode of bodies that cannot be read holding the drain (none since a read got
    /// past it).
    unreadable: Option<Episode>,
    /// The print of each LoRaWAN session's keys, by (DevAddr, DevEUI), kept with its frame
    /// counter ([`Buffer::save_fcnt`]).
    key_prints: HashMap<(u32, [u8; 8]), [u8; 4]>,
    /// This boot's id ([`crate::clock::boot_id`]), kept with the frames a session accepted
    /// last ([`Buffer::save_copies`]).
    boot_id: Option<u128>,
    /// Drops of records the sink holds (in flight), by sequence number: counted only once
    /// the sink has not confirmed the record ([`Buffer::count_drop`]), forgotten if it has
    /// ([`Buffer::forget_drop`]). One per record in flight at most.
    held_drops: HashMap<u64, HeldDrop>,
    /// Test only: where each record the buffer drops is named, with its sequence number, as
    /// its drop is counted ([`Buffer::log_drops`]).
    #[cfg(test)]
    drop_log: Option<DropLog>,
}

/// Test only: the records dropped, each as (sequence number, name) ([`Buffer::log_drops`]).
#[cfg(test)]
pub type DropLog = Arc<std::sync::Mutex<Vec<(u64, String)>>>;

/// The drop of a record the sink held when the buffer let it go (evicted by `drop_oldest`,
/// refused by `drop_newest` or for want of room): why, and the log's words for it, which
/// name the record by its id (`named`) or only by its sequence number (an eviction).
struct HeldDrop {
    full: Full,
    what: String,
    named: bool,
}

impl HeldDrop {
    /// The log's words for the drop once counted, record `id`'s: the id told once.
    fn counted(&self, id: &str) -> String {
        let what = &self.what;
        if self.named {
            format!("{what} (in flight then: the sink did not confirm it)")
        } else {
            format!("{what} (record {id}, in flight then: the sink did not confirm it)")
        }
    }
}

/// Reads failing for a reason that says something about the data, one after the other.
#[derive(Clone, Copy, Debug)]
struct Episode {
    /// The record that failed last, and its segment: an episode is one segment's, as a
    /// whole segment that cannot be read holds a thousand records, and a failure in the next
    /// one starts a new minute (an I/O error from the whole directory costs a segment a
    /// minute, not the buffer at once).
    seq: u64,
    segment: Option<u32>,
    /// The first failure, and the last: one after [`UNREADABLE_GAP`] starts a new episode.
    since: Instant,
    last: Instant,
}

impl Buffer {
    pub fn new(mut store: Box<dyn Store>, cfg: &BufferConfig, metrics: Arc<Metrics>) -> Self {
        store.keep_free(cfg.min_free);
        let mut b = Buffer {
            dead: store.dead_letters(),
            store,
            max_bytes: cfg.max_bytes,
            min_free: cfg.min_free,
            when_full: cfg.when_full,
            metrics,
            disk_cap: None,
            reserve_out: false,
            unsynced_removals: 0,
            removals_per_sync: (cfg.max_in_flight / 2).max(1),
            syncing_removals: 0,
            unsynced_state: false,
            syncing_state: false,
            last_flush: Instant::now(),
            flush: Flush::Idle,
            flush_done: Arc::new(Notify::new()),
            stored_at: stored_at::StoredAt::default(),
            oldest: None,
            oldest_left: false,
            oldest_checked: Instant::now(),
            left_over: None,
            drained: None,
            unreadable: None,
            key_prints: HashMap::new(),
            boot_id: None,
            held_drops: HashMap::new(),
            #[cfg(test)]
            drop_log: None,
        };
        b.update_gauges();
        b.metrics.dropped_full.add(b.store.take_too_large());
        b.left_over();
        b.release_reserve_if_short();
        b.keep_reserve();
        b
    }

    /// A disk another program filled: without the reserve's room sled can neither open nor
    /// flush (and a failed flush stops the agent), so the drain that frees the disk could
    /// not run.
    fn release_reserve_if_short(&mut self) {
        let released = self.store.release_reserve_if_short();
        if released > 0 {
            self.reserve_out = true;
            self.metrics.problem_now(
                "disk_reserve_used",
                format!(
                    "buffer: the disk is full; its reserve of {released} bytes was deleted so the \
                     buffer can open, flush and drain (it is made again once the disk has room)"
                ),
            );
        }
    }

    /// Make the disk space reserve if it is missing and there is room. Housekeeping: a
    /// failure is logged, and tried again at the next drain.
    fn keep_reserve(&mut self) {
        match self.store.keep_reserve(self.min_free) {
            Ok(true) => {
                self.reserve_out = false;
                log::info!(
                    "buffer: disk space reserve of {} bytes made, for the buffer to open and \
                     drain should another program fill the disk",
                    reserve::BYTES
                )
            }
            Ok(false) => {}
            Err(e) => log::warn!("buffer: the disk space reserve could not be made: {e}"),
        }
    }

    /// Records from before a restart count from their creation time, or from now if they
    /// have none (built while the clock was unsynchronised).
    fn left_over(&mut self) {
        let Ok(Some((seq, bytes))) = self.store.scan(None, 1).map(|mut v| v.pop()) else {
            return;
        };
        let opened = Instant::now();
        self.left_over = self.store.last_seq().map(|last| (last, opened));
        let at = made_at(&bytes, opened);
        self.stored_at.stored(seq, at);
        self.oldest = Some(seq);
        self.metrics.buffer_oldest.set(Some(at));
    }

    /// When the oldest record was stored, if it is one from before this run: its creation
    /// time (one body read, at most every [`OLDEST_CHECKED_WITHIN`]): `stored_at` has a mark
    /// only for the first of them, and would give its time to all of them.
    fn left_over_at(&mut self, seq: u64) -> Option<Instant> {
        let (last, opened) = self.left_over?;
        if seq > last {
            self.left_over = None;
            return None;
        }
        match self.store.scan(None, 1).map(|mut v| v.pop()) {
            Ok(Some((first, bytes))) if first == seq => Some(made_at(&bytes, opened)),
            _ => None,
        }
    }

    fn update_gauges(&self) {
        let (n, bytes) = self.store.usage();
        self.metrics.buffer_records.set(n);
        self.metrics.buffer_bytes.set(bytes);
    }

    pub fn is_empty(&self) -> bool {
        self.store.usage().0 == 0
    }

    /// Dead letters kept.
    pub fn dead_letters(&self) -> u64 {
        self.dead
    }

    /// See [`Store::takes_writes`].
    pub fn takes_writes(&self) -> bool {
        self.store.takes_writes()
    }

    pub fn len(&self) -> u64 {
        self.store.usage().0
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.store.last_seq()
    }

    /// The newest buffered record's sequence number (`None`: none is buffered); no body is
    /// read.
    pub fn newest_seq(&self) -> Result<Option<u64>, BufferError> {
        Ok(self.store.seqs_back(1)?.first().copied())
    }

    /// [`Buffer::push_beside`] with no record in flight.
    pub fn push(&mut self, seq: u64, rec: &Record) -> Result<Pushed, BufferError> {
        self.push_beside(seq, rec, |_| false)
    }

    /// Store record `seq`, or apply `when_full`. `in_flight` tells the records the sink holds
    /// (sent, not reported yet): one of them that `when_full` drops (`seq` itself, or an
    /// older one `drop_oldest` evicts) may still be delivered, so its drop is counted only
    /// once the sink has not confirmed it ([`Buffer::count_drop`]).
    pub fn push_beside(
        &mut self,
        seq: u64,
        rec: &Record,
        in_flight: impl Fn(u64) -> bool,
    ) -> Result<Pushed, BufferError> {
        let value = encode(rec);
        let need = value.len() as u64;
        if need > self.max_bytes || need > u64::from(segments::MAX_VALUE) {
            // Never stored, whatever the room: waiting for room (`block`) would stall, and
            // the buffer is not emptied for it.
            return Ok(Pushed::TooLarge { bytes: need });
        }
        let (cap, full) = self.room();
        // Not even an empty buffer would hold it while the disk is low: the buffer is not
        // emptied for it, and `block` waits (space may come back).
        if need > cap && self.when_full != WhenFull::Block {
            let sending = in_flight(seq);
            #[cfg(test)]
            self.note_drop_unless(sending, seq, || rec.id.clone());
            self.drop_or_hold(
                seq,
                sending,
                full,
                format_args!(
                    "no room for record {} ({need} bytes, room {cap}): dropped",
                    rec.id
                ),
            );
            return Ok(Pushed::Dropped);
        }
        while self.store.usage().1 + need > cap {
            match self.when_full {
                WhenFull::Block => return Ok(Pushed::Full),
                WhenFull::DropNewest => {
                    let sending = in_flight(seq);
                    #[cfg(test)]
                    self.note_drop_unless(sending, seq, || rec.id.clone());
                    self.drop_or_hold(
                        seq,
                        sending,
                        full,
                        format_args!("dropped new record {} of {}", rec.id, rec.key),
                    );
                    return Ok(Pushed::Dropped);
                }
                WhenFull::DropOldest => {
                    let Some(old) = self.store.first_seq()? else {
                        let sending = in_flight(seq);
                        #[cfg(test)]
                        self.note_drop_unless(sending, seq, || rec.id.clone());
                        self.drop_or_hold(
                            seq,
                            sending,
                            full,
                            format_args!(
                                "nothing older to drop: dropped record {} ({need} bytes)",
                                rec.id
                            ),
                        );
                        return Ok(Pushed::Dropped);
                    };
                    // Counted (or held) once it is gone: a removal the store refuses is tried
                    // again, and the record must not count once per try.
                    #[cfg(test)]
                    let old_id = self.id_of(old);
                    self.store.remove(old)?;
                    self.left(old);
                    let sending = in_flight(old);
                    #[cfg(test)]
                    self.note_drop_unless(sending, old, || old_id);
                    self.drop_or_hold_named(
                        old,
                        sending,
                        full,
                        false,
                        format_args!("dropped oldest record #{old}"),
                    );
                }
            }
        }
        self.store.insert(seq, value)?;
        self.drained = None;
        let now = Instant::now();
        self.stored_at.stored(seq, now);
        if self.oldest.is_none() {
            self.oldest = Some(seq);
            self.metrics.buffer_oldest.set(Some(now));
        }
        self.metrics.spilled.inc();
        self.update_gauges();
        Ok(Pushed::Stored)
    }

    /// Whether `when_full = "block"`: nothing acknowledged is dropped for want of room.
    pub fn blocks(&self) -> bool {
        self.when_full == WhenFull::Block
    }

    /// Count record `seq`, which no buffer of this configuration holds ([`Pushed::TooLarge`]),
    /// as dropped: `buffer_full`, as the room it lacks is the configured one. One the sink
    /// holds (`in_flight`) is counted only once the sink has not confirmed it
    /// ([`Buffer::count_drop`]).
    pub fn drop_too_large(&mut self, seq: u64, id: &str, bytes: u64, in_flight: bool) {
        let max = u64::from(segments::MAX_VALUE);
        let (full, over) = if bytes > max {
            (
                Full::TooLarge,
                format!("the largest the buffer holds ({max})"),
            )
        } else {
            (Full::Cap, "max_bytes".to_owned())
        };
        #[cfg(test)]
        self.note_drop_unless(in_flight, seq, || id.to_owned());
        self.drop_or_hold(
            seq,
            in_flight,
            full,
            format_args!("record {id} ({bytes} bytes) is over {over}: dropped"),
        );
    }

    /// Count the drop of record `seq` (`what` names it by its id), or, while the sink holds
    /// it (`in_flight`), keep it to count once the sink has not confirmed the record. A
    /// held one is logged at once all the same (rate-limited with the drops of its reason):
    /// the hold is only in memory, and a crash before the sink's report would leave no trace
    /// of it otherwise.
    fn drop_or_hold(&mut self, seq: u64, in_flight: bool, full: Full, what: std::fmt::Arguments) {
        self.drop_or_hold_named(seq, in_flight, full, true, what);
    }

    /// [`Buffer::drop_or_hold`], `what` naming the record by its id or not (`named`).
    fn drop_or_hold_named(
        &mut self,
        seq: u64,
        in_flight: bool,
        full: Full,
        named: bool,
        what: std::fmt::Arguments,
    ) {
        if in_flight {
            let what = what.to_string();
            self.log_drop(
                full,
                format_args!(
                    "{what} while in flight: counted as dropped unless the sink confirms it"
                ),
            );
            let held = HeldDrop { full, what, named };
            self.held_drops.insert(seq, held);
        } else {
            self.dropped(full, what);
        }
    }

    /// Record `seq`, in flight when the buffer dropped it, was confirmed after all: its drop
    /// is not counted.
    pub fn forget_drop(&mut self, seq: u64) {
        // Called for every confirmed record: on the healthy path nothing is held, and an
        // empty map's remove still hashes the key.
        if !self.held_drops.is_empty() {
            self.held_drops.remove(&seq);
        }
    }

    /// Record `seq` (its id `id`), in flight when the buffer dropped it, is not confirmed
    /// (the sink failed or refused it, or this run gave up on its report; a record the sink
    /// reported failed may have been written all the same): counted as dropped now, with the
    /// reason the buffer had.
    pub fn count_drop(&mut self, seq: u64, id: &str) {
        let Some(held) = self.held_drops.remove(&seq) else {
            return;
        };
        #[cfg(test)]
        self.note_drop(seq, || id.to_owned());
        self.dropped(held.full, format_args!("{}", held.counted(id)));
    }

    /// Test only: whether the drop of record `seq` waits for its sink's report.
    #[cfg(test)]
    pub fn holds_drop(&self, seq: u64) -> bool {
        self.held_drops.contains_key(&seq)
    }

    /// Test only: how many drops wait for their record's report (one per record in flight
    /// at most: each is counted or forgotten as the record leaves the window).
    #[cfg(test)]
    pub fn held_drops_len(&self) -> usize {
        self.held_drops.len()
    }

    /// The byte cap for the next record: the configured one, or, while the disk is down to
    /// `min_free`, no growth beyond what was stored when it got there (removing records does
    /// not give sled's space back at once, so the cap is frozen rather than a free-space
    /// target; a cap following the shrinking usage would empty the buffer record by record).
    fn room(&mut self) -> (u64, Full) {
        let low = self.disk_low();
        match (self.disk_cap, low) {
            (None, true) => {
                let cap = self.store.usage().1;
                log::error!(
                    "buffer: less than {} bytes free on the disk: the buffer stops growing at {cap} bytes and when_full applies",
                    self.floor()
                );
                self.disk_cap = Some(cap);
            }
            (Some(_), false) => {
                log::info!("buffer: disk space is back; buffering normally");
                self.disk_cap = None;
            }
            _ => {}
        }
        match self.disk_cap {
            Some(cap) => (self.max_bytes.min(cap), Full::Disk),
            None => (self.max_bytes, Full::Cap),
        }
    }

    fn disk_low(&self) -> bool {
        self.store.disk_free().is_some_and(|f| f < self.floor())
    }

    /// The free space on the disk the buffer leaves: `min_free`, and the reserve's room
    /// while it is given back.
    fn floor(&self) -> u64 {
        let given_back = if self.reserve_out { reserve::BYTES } else { 0 };
        self.min_free.saturating_add(given_back)
    }

    /// Test only: from now on, every record the buffer drops is named in `log`, with its
    /// sequence number, as its drop is counted (full, too large, damaged), and so is each one
    /// the ledger drops from it as expired ([`Buffer::note_drop`]). A record is named by its
    /// id; one whose body cannot be read or decoded, by `#` and its sequence number.
    #[cfg(test)]
    pub fn log_drops(&mut self, log: DropLog) {
        self.drop_log = Some(log);
    }

    /// Test only: name dropped record `seq` in the log [`Buffer::log_drops`] set, if any.
    #[cfg(test)]
    pub(crate) fn note_drop(&self, seq: u64, name: impl FnOnce() -> String) {
        if let Some(log) = &self.drop_log {
            let name = name();
            log.lock().unwrap().push((seq, name));
        }
    }

    /// Test only: [`Buffer::note_drop`], unless the drop is `held` for the record's report
    /// ([`Buffer::count_drop`] names it if it is counted).
    #[cfg(test)]
    fn note_drop_unless(&self, held: bool, seq: u64, name: impl FnOnce() -> String) {
        if !held {
            self.note_drop(seq, name);
        }
    }

    /// Test only: the id of buffered record `seq`, read from the store.
    #[cfg(test)]
    fn id_of(&self, seq: u64) -> String {
        let entries = self.store.scan(seq.checked_sub(1), 1).unwrap_or_default();
        entries
            .first()
            .filter(|(s, _)| *s == seq)
            .and_then(|(_, body)| decode(body).ok())
            .map_or_else(|| format!("#{seq}"), |r| r.id)
    }

    /// Count a drop, and log it ([`Buffer::log_drop`]).
    fn dropped(&self, full: Full, what: std::fmt::Arguments) {
        match full {
            Full::Cap | Full::TooLarge => self.metrics.dropped_full.inc(),
            Full::Disk => self.metrics.dropped_disk_full.inc(),
        }
        self.log_drop(full, what);
    }

    /// Log a drop under its reason: the first one at once, then one line per interval with
    /// the count (a full disk must not fill up with log lines too).
    fn log_drop(&self, full: Full, what: std::fmt::Arguments) {
        let level = log::Level::Warn;
        match full {
            Full::Cap => self.metrics.log_limited(level, "buffer_full", || {
                format!(
                    "buffer full ({} bytes, reason buffer_full): {what}",
                    self.max_bytes
                )
            }),
            Full::Disk => self.metrics.log_limited(level, "disk_full", || {
                format!("disk full (reason disk_full): {what}")
            }),
            Full::TooLarge => self.metrics.log_limited(level, "buffer_full", || {
                format!("too large for the buffer (reason buffer_full): {what}")
            }),
        }
    }

    /// Remove record `seq` (delivered, or left for good) if it is buffered. Its deletion is
    /// durable with the next flush: one is due after every `max_in_flight / 2` deletions, when
    /// the buffer has drained, and within a second ([`Buffer::sync_due`]). A crash or power
    /// cut brings back the delivered records whose deletion was not synced yet
    /// ([`Buffer::unsynced_removals`]), and they are sent again. A record not buffered (sent
    /// straight from memory, refused by a full buffer, evicted) leaves nothing behind: no
    /// deletion to sync, no drained buffer to give space back.
    pub fn remove(&mut self, seq: u64) -> Result<(), BufferError> {
        if self.store.remove(seq)? > 0 {
            self.removed(seq)?;
        }
        Ok(())
    }

    /// A flush is due at `now` for deletions, state entries and the store's housekeeping
    /// alone (records written wait for none: whoever wrote them flushes).
    pub fn sync_due(&self, now: Instant) -> bool {
        let waiting = self.unsynced_removals > 0 || self.unsynced_state || self.store.wants_flush();
        waiting
            && (self.unsynced_removals >= self.removals_per_sync
                || (self.unsynced_removals > 0 && self.is_empty())
                || now.saturating_duration_since(self.last_flush) >= DELETIONS_SYNCED_WITHIN)
    }

    /// Records removed whose removal is not durable yet: not flushed, or in the flush that
    /// runs. A crash sends them again.
    pub fn unsynced_removals(&self) -> usize {
        self.unsynced_removals + self.syncing_removals
    }

    /// After records left: gauges, and once the buffer has drained, giving its space back is
    /// due ([`Buffer::give_space_back_if_quiet`]).
    fn removed(&mut self, seq: u64) -> Result<(), BufferError> {
        self.left(seq);
        self.unsynced_removals += 1;
        self.update_gauges();
        if self.is_empty() && self.drained.is_none() {
            self.drained = Some(None);
        }
        Ok(())
    }

    /// Call now and then with nothing waiting to be stored: once the buffer has drained and
    /// stayed empty for [`REBUILD_WHEN_EMPTY_FOR`] (from the first call that saw it empty),
    /// let the store give the drained records' space back (a rebuild, if it grew large).
    pub fn give_space_back_if_quiet(&mut self, now: Instant) {
        // A rebuild replaces the database under a running flush: not now.
        if self.flushing() {
            return;
        }
        let Some(since) = self.drained.as_mut() else {
            return;
        };
        let since = *since.get_or_insert(now);
        if now.saturating_duration_since(since) < REBUILD_WHEN_EMPTY_FOR {
            return;
        }
        self.drained = None;
        // Giving space back is housekeeping: a failure must not stop the agent.
        let low = self.disk_low();
        match self.store.reclaim(low) {
            Ok(Some((before, after))) => {
                self.metrics.buffer_rebuilds.inc();
                log::info!("buffer drained: database shrunk from {before} to {after} bytes")
            }
            Ok(None) => {}
            Err(e) => log::error!("buffer drained, but its disk space was not given back: {e}"),
        }
        // A reserve given back to a full disk is made again once the drain left room.
        self.keep_reserve();
        // What the outage's records and sled's tree took is free now, scattered through
        // the heap.
        crate::malloc::trim();
    }

    /// Up to `limit` records after `after`, oldest first, and no more once their bodies
    /// take `bytes` (the one that crosses it is the last): bodies are read [`NEXT_BATCH`] at a
    /// time and within the room left, so a window with room for a few large records does not
    /// read hundreds of them each round. Damaged ones are counted, removed and skipped. One
    /// whose body cannot be read (see [`BufferError::Unreadable`]) ends the list: the
    /// records before it are returned, and it is counted as the problem `buffer_read_error`.
    /// For want of a resource it waits for as long as that lasts; otherwise only until reads
    /// of it have failed for [`UNREADABLE_FOR`] at `now`, tried at least every
    /// [`UNREADABLE_GAP`]: then it is damaged, and so is each further one in its segment
    /// until a read works.
    pub fn next(
        &mut self,
        after: Option<u64>,
        limit: usize,
        bytes: u64,
        now: Instant,
    ) -> Result<Vec<(u64, Record)>, BufferError> {
        let mut out = Vec::with_capacity(limit.min(NEXT_BATCH));
        let (mut after, mut read) = (after, 0u64);
        while out.len() < limit && read < bytes {
            let count = (limit - out.len()).min(NEXT_BATCH);
            let Some(batch) = self.readable(after, count, bytes - read, now)? else {
                break;
            };
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            after = Some(last);
            for (seq, body) in batch {
                if out.len() == limit || read >= bytes {
                    break;
                }
                read += body.len() as u64;
                match decode(&body) {
                    Ok(rec) => out.push((seq, rec)),
                    Err(e) => {
                        #[cfg(test)]
                        self.note_drop(seq, || format!("#{seq}"));
                        self.metrics.dropped_corrupt.inc();
                        log::error!("buffered record #{seq} is damaged ({e}): skipped and removed");
                        self.store.remove(seq)?;
                        self.left(seq);
                    }
                }
            }
        }
        self.update_gauges();
        Ok(out)
    }

    /// Up to `limit` bodies after `after`, within `bytes` ([`Store::scan_within`]); `None`
    /// while the first of them cannot be read ([`Buffer::next`]).
    fn readable(
        &mut self,
        after: Option<u64>,
        limit: usize,
        bytes: u64,
        now: Instant,
    ) -> Result<Option<Entries>, BufferError> {
        loop {
            match self.store.scan_within(after, limit, bytes) {
                Err(BufferError::Unreadable {
                    seq,
                    why,
                    passes: true,
                    ..
                }) => {
                    // Says nothing about the data: the episode (if any) neither goes on nor ends.
                    self.metrics.problem("buffer_read_error", || {
                        format!("buffered record #{seq} cannot be read for now: {why}; the drain waits for it")
                    });
                    return Ok(None);
                }
                Err(BufferError::Unreadable {
                    seq,
                    why,
                    passes: false,
                    segment,
                }) => {
                    if now.saturating_duration_since(self.failed_since(seq, segment, now))
                        < UNREADABLE_FOR
                    {
                        self.metrics.problem("buffer_read_error", || {
                            format!("buffered record #{seq} cannot be read: {why}; the drain waits for it, and takes it for damage if it still cannot be read after {}s", UNREADABLE_FOR.as_secs())
                        });
                        return Ok(None);
                    }
                    #[cfg(test)]
                    self.note_drop(seq, || format!("#{seq}"));
                    self.metrics.dropped_corrupt.inc();
                    log::error!("buffered record #{seq} could not be read for {}s ({why}): taken for damage and removed", UNREADABLE_FOR.as_secs());
                    self.store.remove(seq)?;
                    self.left(seq);
                }
                scanned => {
                    let scanned = scanned?;
                    // Read past the record that failed (or it left): the episode is over. A
                    // read of those before it (the drain started again from the oldest) is
                    // not.
                    let past = |e: &Episode| scanned.last().is_some_and(|(s, _)| *s >= e.seq);
                    if self.unreadable.as_ref().is_some_and(past) {
                        self.unreadable = None;
                    }
                    return Ok(Some(scanned));
                }
            }
        }
    }

    /// Record `seq` in `segment` failed to read at `now` for a reason that says something
    /// about the data: since when reads have failed in this episode.
    fn failed_since(&mut self, seq: u64, segment: Option<u32>, now: Instant) -> Instant {
        let ep = match self.unreadable {
            Some(ep)
                if ep.segment == segment
                    && now.saturating_duration_since(ep.last) <= UNREADABLE_GAP =>
            {
                Episode {
                    seq,
                    last: now,
                    ..ep
                }
            }
            _ => Episode {
                seq,
                segment,
                since: now,
                last: now,
            },
        };
        self.unreadable = Some(ep);
        ep.since
    }

    /// Record `seq` left the buffer: if it was the oldest, the next one's time is looked up
    /// by [`Buffer::update_oldest_if_due`].
    fn left(&mut self, seq: u64) {
        if self.is_empty() {
            self.oldest = None;
            self.oldest_left = false;
            self.stored_at.clear();
            self.metrics.buffer_oldest.set(None);
        } else if self.oldest == Some(seq) {
            self.oldest_left = true;
        }
    }

    /// Something for a flush ([`Buffer::sync_due`]), [`Buffer::update_oldest_if_due`] or
    /// [`Buffer::give_space_back_if_quiet`] to do later.
    pub fn housekeeping_due(&self) -> bool {
        self.unsynced_removals > 0
            || self.unsynced_state
            || self.store.wants_flush()
            || self.oldest_left
            || self.drained.is_some()
    }

    /// Look up the oldest record's time if its predecessor left and the last look
    /// is [`OLDEST_CHECKED_WITHIN`] old at `now` (call it now and then). Until then its age
    /// reads a little high.
    pub fn update_oldest_if_due(&mut self, now: Instant) {
        if self.oldest_left
            && now.saturating_duration_since(self.oldest_checked) >= OLDEST_CHECKED_WITHIN
        {
            self.oldest_checked = now;
            self.find_oldest();
        }
    }

    fn find_oldest(&mut self) {
        match self.store.first_seq() {
            Ok(first) => {
                self.oldest_left = false;
                self.oldest = first;
                let at = first.and_then(|seq| {
                    self.left_over_at(seq)
                        .or_else(|| self.stored_at.oldest(seq))
                });
                self.metrics.buffer_oldest.set(at);
            }
            Err(e) => {
                // Only the page's age depends on it: reported, tried again later.
                self.oldest_left = true;
                self.metrics.problem("buffer_read_error", || {
                    format!("cannot read the buffer's oldest record: {e}")
                });
            }
        }
    }

    /// Flush here and now. Not while a flush runs (it panics, as [`Buffer::start_flush`]).
    pub fn flush(&mut self) -> Result<(), BufferError> {
        self.start_flush(Instant::now());
        self.flush_outcome(true)
            .expect("a flush started here is done once waited for")
    }

    /// Start a flush of every change made so far, at `now`, on the store's thread where it
    /// has one, so that records can go on being written and sent meanwhile; its outcome
    /// comes from [`Buffer::flush_outcome`]. Not while one is running
    /// ([`Buffer::flushing`]): that panics, as a second flush would take the counts of
    /// deletions the first is to make durable, and its outcome could be taken for the second's.
    pub fn start_flush(&mut self, now: Instant) {
        assert!(!self.flushing(), "one flush at a time");
        self.release_reserve_if_short();
        self.syncing_removals = std::mem::take(&mut self.unsynced_removals);
        self.syncing_state |= std::mem::take(&mut self.unsynced_state);
        self.last_flush = now;
        self.flush = match self.store.start_flush(&self.flush_done) {
            Some(outcome) => Flush::Done(outcome),
            None => {
                self.metrics.buffer_flush.set(Some(now));
                Flush::Running
            }
        };
    }

    /// When the flush running on the store's thread started (`None`: none runs).
    pub fn flush_started(&self) -> Option<Instant> {
        matches!(self.flush, Flush::Running).then_some(self.last_flush)
    }

    /// A flush was started and its outcome not taken yet.
    pub fn flushing(&self) -> bool {
        !matches!(self.flush, Flush::Idle)
    }

    /// Notified when a flush that runs on the store's thread is done.
    pub fn flush_done(&self) -> Arc<Notify> {
        self.flush_done.clone()
    }

    /// The outcome of the flush started last, once it is done (with `wait`, blocking until
    /// then); `None` while it runs, or when none was started. After a failure what it was to
    /// sync is not durable: flush again.
    pub fn flush_outcome(&mut self, wait: bool) -> Option<Result<(), BufferError>> {
        let outcome = match std::mem::replace(&mut self.flush, Flush::Idle) {
            Flush::Idle => return None,
            Flush::Done(outcome) => outcome,
            Flush::Running => match self.store.flushed(wait) {
                Some(outcome) => outcome,
                None => {
                    self.flush = Flush::Running;
                    return None;
                }
            },
        };
        self.metrics.buffer_flush.set(None);
        // Durable now, or, after a failure, no longer counted: a disk that refuses flushes
        // must not stop the drain (item 7 of docs/durability.md says what that costs).
        self.syncing_removals = 0;
        // Every state entry set before the flush started is durable; after a failed flush
        // they wait for one that succeeds (sled syncs all it holds).
        self.syncing_state &= outcome.is_err();
        Some(outcome.map(|syncs| self.metrics.buffer_syncs.add(syncs)))
    }

    /// The prints of the LoRaWAN sessions' keys, by (DevAddr, DevEUI), that
    /// [`Buffer::save_fcnt`] keeps with their counters.
    pub fn set_key_prints(&mut self, prints: HashMap<(u32, [u8; 8]), [u8; 4]>) {
        self.key_prints = prints;
    }

    /// Keep the last accepted frame counter of a LoRaWAN session (DevAddr, DevEUI), with its
    /// frame's MIC, its keys' print if known and which counters below it were taken
    /// (`behind`, see [`crate::lorawan::fcnt::Counter`]). The value: FCnt, MIC, print, and
    /// `behind` unless every one was taken: 12 bytes, as an older release reads them, or 20;
    /// 8 without the print. It is durable with the next flush, within
    /// [`DELETIONS_SYNCED_WITHIN`] at the latest.
    pub fn save_fcnt(
        &mut self,
        dev_addr: u32,
        dev_eui: [u8; 8],
        fcnt: u32,
        mic: [u8; 4],
        behind: u64,
    ) -> Result<(), BufferError> {
        let key = session_key(FCNT_PREFIX, dev_addr, dev_eui);
        let mut value = fcnt.to_be_bytes().to_vec();
        value.extend_from_slice(&mic);
        if let Some(print) = self.key_prints.get(&(dev_addr, dev_eui)) {
            value.extend_from_slice(print);
            if behind != u64::MAX {
                value.extend_from_slice(&behind.to_be_bytes());
            }
        }
        self.set_state(&key, &value)
    }

    /// This boot's id (`None`: it cannot be read), which [`Buffer::save_copies`] keeps with the
    /// frames.
    pub fn set_boot_id(&mut self, boot_id: Option<u128>) {
        self.boot_id = boot_id;
    }

    /// Keep `frames` (FCnt32, MIC, accepted at: ms since boot), accepted by LoRaWAN
    /// session (DevAddr, DevEUI) in this order, among the session's last [`COPIES`], so a copy
    /// of one heard after a restart is still told as one (see [`crate::lorawan::fcnt`]). They
    /// are kept with the print of the session's keys and this boot's id, and without either
    /// not at all: the frames kept under other keys or in another boot are dropped, not
    /// merged. Only frames accepted less than [`COPY_WINDOW`] before `now` (ms since boot),
    /// or before the newest frame, are kept: an older one is no copy's after a
    /// restart, which comes later still. So a device sending every few minutes keeps one, 36
    /// bytes, and one sending faster as many as it sent in the window (at most 532 bytes).
    /// When none of `frames` is within the window (their records were durable only late, as
    /// after the sink was down), nothing is written: those kept already are older still.
    /// Durable with the next flush.
    pub fn save_copies(
        &mut self,
        dev_addr: u32,
        dev_eui: [u8; 8],
        frames: &[CopyFrame],
        now: u64,
    ) -> Result<(), BufferError> {
        let newest = frames.iter().map(|&(_, _, at)| at).fold(now, u64::max);
        let window = COPY_WINDOW.as_millis() as u64;
        let within = |&(_, _, at): &CopyFrame| at.saturating_add(window) > newest;
        let (Some(&keys), Some(boot)) = (self.key_prints.get(&(dev_addr, dev_eui)), self.boot_id)
        else {
            return Ok(());
        };
        if !frames.iter().any(within) {
            return Ok(());
        }
        let key = session_key(COPIES_PREFIX, dev_addr, dev_eui);
        let mut kept = match copies_of(&state(&*self.store, &key)?) {
            Some((k, b, kept)) if (k, b) == (keys, boot) => kept,
            _ => Vec::new(),
        };
        kept.retain(|&(f, m, _)| !frames.iter().any(|&(nf, nm, _)| (f, m) == (nf, nm)));
        kept.extend_from_slice(frames);
        kept.retain(within);
        let last = &kept[kept.len().saturating_sub(COPIES)..];
        let mut value = keys.to_vec();
        value.extend_from_slice(&boot.to_be_bytes());
        for (fcnt, mic, at) in last {
            value.extend_from_slice(&fcnt.to_be_bytes());
            value.extend_from_slice(mic);
            value.extend_from_slice(&at.to_be_bytes());
        }
        self.set_state(&key, &value)
    }

    /// Drop the frames LoRaWAN session (DevAddr, DevEUI) accepted last
    /// ([`Buffer::save_copies`]), durable with the next flush: no session takes them any more.
    pub fn forget_copies(&mut self, dev_addr: u32, dev_eui: [u8; 8]) -> Result<(), BufferError> {
        self.remove_state(&session_key(COPIES_PREFIX, dev_addr, dev_eui))
    }

    /// Drop an entry of frames kept that cannot be read ([`Buffer::copies_and_unreadable`]),
    /// durable with the next flush.
    pub fn forget_unreadable_copies(&mut self, entry: UnreadableCopies) -> Result<(), BufferError> {
        self.remove_state(&entry.0)
    }

    /// The frames each LoRaWAN session accepted last ([`Buffer::save_copies`]; none in a
    /// buffer written by an older release); the start reads them with the unreadable ones.
    #[cfg(test)]
    pub fn copies(&self) -> Result<Vec<KeptCopies>, BufferError> {
        Ok(self.copies_and_unreadable()?.0)
    }

    /// The frames each LoRaWAN session accepted last, and the entries of frames kept that
    /// cannot be read as such (a damaged value, or a layout a newer release wrote before a
    /// downgrade): no session can take those.
    pub fn copies_and_unreadable(
        &self,
    ) -> Result<(Vec<KeptCopies>, Vec<UnreadableCopies>), BufferError> {
        let (mut kept, mut unreadable) = (Vec::new(), Vec::new());
        for (k, v) in self.store.state_scan(COPIES_PREFIX)? {
            let read = session_of(COPIES_PREFIX, &k).zip(copies_of(&v));
            match read {
                Some(((dev_addr, dev_eui), (keys, boot_id, frames))) => kept.push(KeptCopies {
                    dev_addr,
                    dev_eui,
                    keys,
                    boot_id,
                    frames,
                }),
                None => unreadable.push(UnreadableCopies(k)),
            }
        }
        Ok((kept, unreadable))
    }

    /// Keep what the pipeline knows about the wall clock (`what`), durable with the next flush.
    pub fn save_clock_state(&mut self, what: ClockState, bytes: &[u8]) -> Result<(), BufferError> {
        self.set_state(what.key(), bytes)
    }

    /// Set a state entry, durable with the next flush.
    fn set_state(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.store.state_set(key, value)?;
        self.unsynced_state = true;
        Ok(())
    }

    /// Remove a state entry, durable with the next flush.
    fn remove_state(&mut self, key: &[u8]) -> Result<(), BufferError> {
        self.store.state_remove(key)?;
        self.unsynced_state = true;
        Ok(())
    }

    /// A state entry (a frame counter, a clock reading) was set or removed and no flush
    /// started after it has succeeded yet; always, on a store whose state never reaches a
    /// disk.
    pub fn state_unsynced(&self) -> bool {
        self.unsynced_state || self.syncing_state || !self.store.takes_writes()
    }

    /// `what` as last saved (empty: none, as in a buffer written before it was kept).
    pub fn clock_state(&self, what: ClockState) -> Result<Vec<u8>, BufferError> {
        clock_state(&*self.store, what)
    }

    /// Every saved frame counter. A value of 4 bytes (kept by a release that did not keep
    /// the MIC) has the MIC unknown, one of 8 the keys' print unknown.
    pub fn fcnts(&self) -> Result<Vec<KeptFcnt>, BufferError> {
        Ok(self
            .store
            .state_scan(FCNT_PREFIX)?
            .into_iter()
            .filter_map(|(k, v)| kept_fcnt(&k, &v))
            .collect())
    }

    /// Ids of the newest `limit` records, oldest first (damaged and unreadable ones left
    /// out): after a
    /// restart, a source's redelivery of one of them is a duplicate, not a new record. The
    /// bodies are read [`RECENT_BATCH`] and [`RECENT_BYTES`] at a time: a buffer of large
    /// records must not be read into memory whole at every start.
    pub fn recent_ids(&self, limit: usize) -> Result<Vec<String>, BufferError> {
        let Some(&oldest) = self.store.seqs_back(limit)?.last() else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::with_capacity(limit.min(4096));
        let mut after = oldest.checked_sub(1);
        while ids.len() < limit {
            let count = RECENT_BATCH.min(limit - ids.len());
            let batch = match self.store.scan_within(after, count, RECENT_BYTES) {
                // Its id is not known, as a damaged one's is not: left out.
                Err(BufferError::Unreadable { seq, .. }) => {
                    after = Some(seq);
                    continue;
                }
                batch => batch?,
            };
            let Some(&(last, _)) = batch.last() else {
                break;
            };
            ids.extend(
                batch
                    .iter()
                    .filter_map(|(_, b)| decode(b).ok().map(|r| r.id)),
            );
            after = Some(last);
        }
        Ok(ids)
    }

    /// Keep `rec` as dead letter `seq`, counted. A buffered record `seq` stays: it is
    /// [`Buffer::remove`]d once its letter is written.
    pub fn dead_letter(&mut self, seq: u64, rec: &Record) -> Result<(), BufferError> {
        self.store.dead_letter(seq, encode(rec))?;
        self.dead += 1;
        self.metrics.dead_lettered.inc();
        Ok(())
    }
}

/// The state key of LoRaWAN session (DevAddr, DevEUI) under `prefix`.
fn session_key(prefix: &[u8], dev_addr: u32, dev_eui: [u8; 8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&dev_addr.to_be_bytes());
    key.extend_from_slice(&dev_eui);
    key
}

/// A frame counter entry read ([`Buffer::save_fcnt`] says its layout); `None`: not one.
fn kept_fcnt(key: &[u8], v: &[u8]) -> Option<KeptFcnt> {
    let (dev_addr, dev_eui) = session_of(FCNT_PREFIX, key)?;
    let (mic, keys, behind) = match v.len() {
        4 => (None, None, None),
        8 => (v.get(4..8), None, None),
        12 => (v.get(4..8), v.get(8..12), None),
        20 => (v.get(4..8), v.get(8..12), v.get(12..20)),
        _ => return None,
    };
    Some(KeptFcnt {
        dev_addr,
        dev_eui,
        fcnt: u32::from_be_bytes(v.get(..4)?.try_into().ok()?),
        mic: mic.and_then(|m| m.try_into().ok()),
        keys: keys.and_then(|k| k.try_into().ok()),
        behind: behind.and_then(|b| Some(u64::from_be_bytes(b.try_into().ok()?))),
    })
}

/// The session (DevAddr, DevEUI) of a [`session_key`] under `prefix`.
fn session_of(prefix: &[u8], key: &[u8]) -> Option<(u32, [u8; 8])> {
    let k = key.strip_prefix(prefix)?;
    let dev_addr = u32::from_be_bytes(k.get(..4)?.try_into().ok()?);
    Some((dev_addr, k.get(4..12)?.try_into().ok()?))
}

/// The keys' print, the boot's id and the frames of a [`COPIES_PREFIX`] value (`None`: not
/// one).
fn copies_of(value: &[u8]) -> Option<([u8; 4], u128, Vec<CopyFrame>)> {
    let frames = value.get(COPIES_HEAD..)?;
    if frames.len() % 16 != 0 {
        return None;
    }
    let keys = value[..4].try_into().ok()?;
    let boot = u128::from_be_bytes(value[4..COPIES_HEAD].try_into().ok()?);
    let frames = frames.chunks_exact(16).map(|f| {
        let fcnt = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        let at = u64::from_be_bytes(f[8..].try_into().expect("8 bytes"));
        (fcnt, [f[4], f[5], f[6], f[7]], at)
    });
    Some((keys, boot, frames.collect()))
}

/// Dead letters kept before further ones (of messages hubgate gives up on, or of records the
/// sink refused) are only counted (at most about 12 MB of them: one keeps 256 bytes of its
/// message or record and short excerpts of the rest), and 4 MB more of the bodies kept whole
/// ([`WHOLE_DEAD_LETTERS`]).
pub const MAX_DEAD_LETTERS: u64 = 10_000;
/// While fewer dead letters than this are kept, a record the sink refuses keeps its body
/// whole in its dead letter, up to [`crate::record::KEPT_WHOLE`] bytes.
pub const WHOLE_DEAD_LETTERS: u64 = 1_000;
/// Of [`MAX_DEAD_LETTERS`], the last this many are kept for records the sink refuses: input
/// (a misconfigured source, devices whose every uplink hubgate cannot key) must not take
/// every place from them.
pub const SINK_DEAD_LETTERS: u64 = 1_000;

/// A LoRaWAN frame accepted, as kept to tell a copy: FCnt32, MIC, and when (ms since boot,
/// [`crate::clock::since_boot`]: kept only for the same boot, and not moved by a step of the
/// wall clock).
pub type CopyFrame = (u32, [u8; 4], u64);

/// The frames a LoRaWAN session accepted last, as kept ([`Buffer::copies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptCopies {
    pub dev_addr: u32,
    pub dev_eui: [u8; 8],
    /// The print of the session's keys they were accepted under.
    pub keys: [u8; 4],
    /// The id of the boot they were accepted in.
    pub boot_id: u128,
    /// Oldest first.
    pub frames: Vec<CopyFrame>,
}

/// An entry of frames kept that cannot be read ([`Buffer::copies_and_unreadable`]): its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableCopies(Vec<u8>);

/// The frame counter kept for a LoRaWAN session ([`Buffer::fcnts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptFcnt {
    pub dev_addr: u32,
    pub dev_eui: [u8; 8],
    /// The last accepted FCnt32.
    pub fcnt: u32,
    /// The MIC of its frame (`None`: kept without it, by an older release).
    pub mic: Option<[u8; 4]>,
    /// The print of the session's keys it was kept with (`None`: by an older release).
    pub keys: Option<[u8; 4]>,
    /// Which counters below it were taken (`None`: every one, or kept by an older release).
    pub behind: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            id: format!("id-{i}"),
            rec_type: "io.microshare.environment.unpacked".into(),
            key: "00-11".into(),
            created_ms: 1,
            body: format!("{{\"n\":{i}}}"),
        }
    }

    #[test]
    fn encoding_round_trips_and_detects_damage() {
        let r = rec(1);
        let mut bytes = encode(&r);
        assert_eq!(decode(&bytes).unwrap(), r);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::Checksum);
        assert_eq!(decode(&[9, 0, 0]).unwrap_err(), DecodeError::Version(9));
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Short);
    }

    fn buffer_on(
        store: MemoryStore,
        max_bytes: u64,
        when_full: WhenFull,
    ) -> (Buffer, Arc<Metrics>) {
        let m = Metrics::new();
        let cfg = BufferConfig {
            max_bytes,
            when_full,
            min_free: 1000,
            ..BufferConfig::default()
        };
        (Buffer::new(Box::new(store), &cfg, m.clone()), m)
    }

    fn buffer(max_bytes: u64, when_full: WhenFull) -> (Buffer, Arc<Metrics>) {
        buffer_on(MemoryStore::default(), max_bytes, when_full)
    }

    fn seqs(b: &mut Buffer) -> Vec<u64> {
        b.next(None, 100, u64::MAX, Instant::now())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    /// The drain's read stops at the window's byte room (the record that crosses it is the
    /// last) as well as at its count, also across the batches it reads bodies in.
    #[test]
    fn next_stops_at_the_byte_room() {
        let (mut b, _) = buffer(1 << 30, WhenFull::DropOldest);
        let large = |i| Record {
            body: "x".repeat(1000),
            ..rec(i)
        };
        for i in 0..100 {
            b.push(u64::from(i), &large(i)).unwrap();
        }
        // What the first `k` bodies take, and a byte more.
        let past = |k| (0..k).map(|i| encode(&large(i)).len() as u64).sum::<u64>() + 1;
        let now = Instant::now();
        let count =
            |b: &mut Buffer, after, limit, bytes| b.next(after, limit, bytes, now).unwrap().len();
        assert_eq!(count(&mut b, None, 100, past(2)), 3);
        assert_eq!(count(&mut b, None, 100, 1), 1);
        assert_eq!(
            count(&mut b, None, 100, past(38)),
            39,
            "past one batch of bodies"
        );
        assert_eq!(count(&mut b, Some(90), 100, u64::MAX), 9);
        assert_eq!(count(&mut b, None, 5, u64::MAX), 5);
    }

    /// A scan returns entries while those before take less than its byte budget, judged
    /// before reading: the first always, a large one alone, and no more than `limit`.
    #[test]
    fn a_scan_stops_at_its_byte_budget_but_returns_one() {
        let dir = tempfile::tempdir().unwrap();
        let stores: [Box<dyn Store>; 2] = [
            Box::new(SledStore::open(dir.path()).unwrap()),
            Box::new(MemoryStore::default()),
        ];
        for mut s in stores {
            for seq in 0..10 {
                s.insert(seq, vec![seq as u8; 100]).unwrap();
            }
            s.insert(10, vec![10; 1000]).unwrap();
            let seqs = |after, limit, bytes| -> Vec<u64> {
                let entries = s.scan_within(after, limit, bytes).unwrap();
                entries.into_iter().map(|(seq, _)| seq).collect()
            };
            assert_eq!(seqs(None, 8, 0), [0], "the first always");
            assert_eq!(seqs(None, 8, 100), [0]);
            assert_eq!(seqs(None, 8, 101), [0, 1], "the one that crosses it");
            assert_eq!(seqs(Some(2), 8, 250), [3, 4, 5]);
            assert_eq!(seqs(None, 8, u64::MAX), (0..8).collect::<Vec<_>>());
            assert_eq!(seqs(Some(9), 8, 1), [10], "a large one alone");
            assert_eq!(seqs(Some(8), 8, 1), [9]);
            let all = s.scan(Some(5), 100).unwrap();
            assert_eq!(all.last(), Some(&(10, vec![10; 1000])));
            assert_eq!(all.len(), 5);
        }
    }

    /// The drain reads no body past its byte room: a window with room for a little more
    /// than one large record reads two, not a batch of them.
    #[test]
    fn next_reads_no_body_past_its_byte_room() {
        let store = MemoryStore::default();
        let (mut b, _) = buffer_on(store.clone(), 1 << 30, WhenFull::DropOldest);
        let large = |i| Record {
            body: "x".repeat(100_000),
            ..rec(i)
        };
        for i in 0..10 {
            b.push(u64::from(i), &large(i)).unwrap();
        }
        let one = encode(&large(0)).len() as u64;
        let read = b.next(None, 100, one + 1, Instant::now()).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(store.most_scanned(), 2 * one);
    }

    /// The ids at a start are read a few MiB at a time, not 64 records however large (with
    /// 16 MiB MQTT messages that was a GiB, past the unit's memory limit, at every start).
    #[test]
    fn recent_ids_read_large_records_a_few_mib_at_a_time() {
        let store = MemoryStore::default();
        let (mut b, _) = buffer_on(store.clone(), 1 << 30, WhenFull::DropOldest);
        let large = |i| Record {
            body: "x".repeat(1 << 20),
            ..rec(i)
        };
        for i in 0..20 {
            b.push(u64::from(i), &large(i)).unwrap();
        }
        let ids: Vec<String> = (2..20).map(|i| format!("id-{i}")).collect();
        assert_eq!(b.recent_ids(18).unwrap(), ids);
        let one = encode(&large(0)).len() as u64;
        assert!(
            store.most_scanned() <= RECENT_BYTES + one,
            "{} bytes in one read",
            store.most_scanned()
        );
    }

    /// A buffer of `n` records whose bodies `unreadable` cannot be read (for want of a
    /// resource if `passes`), with its store.
    fn with_unreadable(
        n: u64,
        unreadable: std::ops::Range<u64>,
        passes: bool,
    ) -> (Buffer, Arc<Metrics>, MemoryStore) {
        let store = MemoryStore::default();
        let (mut b, m) = buffer_on(store.clone(), 1 << 20, WhenFull::DropOldest);
        for i in 0..n {
            b.push(i, &rec(i as u32)).unwrap();
        }
        store.set_unreadable(unreadable, passes);
        (b, m, store)
    }

    fn read_at(b: &mut Buffer, after: Option<u64>, at: Instant) -> Vec<u64> {
        let read = b.next(after, 10, u64::MAX, at).unwrap();
        read.into_iter().map(|(seq, _)| seq).collect()
    }

    /// A body that cannot be read for want of a resource (EMFILE, ENOMEM) holds the drain
    /// for as long as that lasts, counted as a problem, and is never taken for damage: a
    /// minute without descriptors must not delete acknowledged records.
    #[test]
    fn a_want_of_resources_holds_the_drain_and_is_never_damage() {
        let (mut b, m, store) = with_unreadable(3, 0..3, true);
        let t0 = Instant::now();
        // Tried every few seconds for ten minutes.
        for at in (0..=600).step_by(5) {
            let now = t0 + Duration::from_secs(at);
            assert_eq!(read_at(&mut b, None, now), [0u64; 0], "at {at}s");
        }
        assert_eq!(m.problems("buffer_read_error"), 121);
        assert_eq!((m.dropped_corrupt.get(), b.len()), (0, 3));
        store.set_unreadable([], true);
        let later = t0 + Duration::from_secs(605);
        assert_eq!(read_at(&mut b, None, later), [0, 1, 2]);
    }

    /// A body that cannot be read for a reason that says something about the data (EIO) is
    /// damage only after a minute of attempts: its first failure after a gap without any
    /// (the drain was not tried: the sink was down) starts the minute again, and so does
    /// nothing else, a read of the records before it included. Those are returned.
    #[test]
    fn a_read_error_after_a_gap_without_attempts_waits_its_minute_again() {
        let (mut b, m, _) = with_unreadable(4, 1..3, false);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(read_at(&mut b, None, at(0)), [0], "the record before it");
        for s in (5..60).step_by(5) {
            assert_eq!(read_at(&mut b, Some(0), at(s)), [0u64; 0]);
        }
        // Not tried for two hours, then every few seconds, now and then from the oldest
        // again (a drain that starts over after a sink failure).
        let later = 2 * 3600;
        for s in (later..later + 60).step_by(5) {
            let (after, before) = match s % 10 {
                0 => (None, vec![0]),
                _ => (Some(0), vec![]),
            };
            assert_eq!(read_at(&mut b, after, at(s)), before, "at {s}s");
        }
        assert_eq!((m.dropped_corrupt.get(), b.len()), (0, 4));
        assert_eq!(read_at(&mut b, Some(0), at(later + 60)), [3]);
        assert_eq!((m.dropped_corrupt.get(), b.len()), (2, 2));
        assert!(b.unreadable.is_none(), "read past it: over");
    }

    /// A dead letter of a record that was never buffered leaves the buffer's housekeeping as
    /// it was (it kept an idle forwarder ticking ten times a second for 5 s, to sync and
    /// give back space that no record took); one of a buffered record is a record that left.
    #[test]
    fn a_dead_letter_never_buffered_leaves_no_housekeeping() {
        let (mut b, m) = buffer(1 << 20, WhenFull::DropOldest);
        b.dead_letter(7, &rec(7)).unwrap();
        assert_eq!((b.dead_letters(), m.dead_lettered.get()), (1, 1));
        assert!(!b.housekeeping_due());
        b.push(8, &rec(8)).unwrap();
        b.dead_letter(8, &rec(8)).unwrap();
        b.remove(8).unwrap();
        assert!(b.is_empty());
        assert!(
            b.housekeeping_due(),
            "drained: its space is given back later"
        );
    }

    /// The delivery of a record the buffer does not hold (refused by a full buffer, or
    /// evicted, after the sink took it) counts no deletion: no flush is due for it, and the
    /// in-flight window does not shrink by it.
    #[test]
    fn removing_a_record_not_buffered_counts_no_deletion() {
        let (mut b, _m) = buffer(1 << 20, WhenFull::DropOldest);
        b.push(1, &rec(1)).unwrap();
        b.remove(2).unwrap();
        assert_eq!((b.unsynced_removals(), b.len()), (0, 1));
        b.remove(1).unwrap();
        assert_eq!((b.unsynced_removals(), b.len()), (1, 0));
    }

    /// The oldest record's age follows the records in and out: at once when the buffer
    /// fills or empties, within a second when the oldest of several leaves.
    #[test]
    fn the_oldest_records_age_follows_the_buffer() {
        let (mut b, m) = buffer(1 << 20, WhenFull::DropOldest);
        let age = |later: u64| {
            m.buffer_oldest
                .age_s(Instant::now() + Duration::from_secs(later))
        };
        assert_eq!(age(100), 0, "empty");
        // Ranges of 10 s: the test reads the real clock, and a loaded machine may pause it
        // between two lines.
        b.push(0, &rec(0)).unwrap();
        b.push(1, &rec(1)).unwrap();
        assert!((100..=110).contains(&age(100)));
        b.remove(1).unwrap();
        b.update_oldest_if_due(Instant::now() + OLDEST_CHECKED_WITHIN);
        assert!((100..=110).contains(&age(100)), "a younger one left");
        b.remove(0).unwrap();
        assert_eq!(age(100), 0, "empty again, at once");
        // Stored a minute apart: once the first leaves, the second's age shows.
        b.push(2, &rec(2)).unwrap();
        b.stored_at
            .stored(3, Instant::now() + Duration::from_secs(60));
        b.push(3, &rec(3)).unwrap();
        assert!((100..=110).contains(&age(100)), "{}", age(100));
        b.remove(2).unwrap();
        b.update_oldest_if_due(Instant::now() + OLDEST_CHECKED_WITHIN);
        assert!((39..=50).contains(&age(100)), "{}", age(100));
        // A buffer opened on records left from before counts from the oldest's creation.
        let mut store = MemoryStore::default();
        let created = ms_since_epoch(SystemTime::now()) - 30_000;
        let old = Record {
            created_ms: created,
            ..rec(7)
        };
        store.insert(7, encode(&old)).unwrap();
        let (_, m) = buffer_on(store, 1 << 20, WhenFull::DropOldest);
        assert!((30..=40).contains(&m.buffer_oldest.age_s(Instant::now())));
    }

    /// A buffer opened on records left from before a restart, created `ago_s` seconds
    /// ago (in that order of sequence numbers).
    fn reopened(ago_s: &[u64]) -> (Buffer, Arc<Metrics>) {
        let now = ms_since_epoch(SystemTime::now());
        let mut store = MemoryStore::default();
        for (seq, ago) in ago_s.iter().enumerate() {
            let r = Record {
                created_ms: now - ago * 1000,
                ..rec(seq as u32)
            };
            store.insert(seq as u64, encode(&r)).unwrap();
        }
        buffer_on(store, 1 << 20, WhenFull::DropOldest)
    }

    /// A restart over a week-long outage's backlog: the gauge says a week (its clock once
    /// reached a day back, and said a day).
    #[test]
    fn the_oldest_age_after_a_restart_is_not_capped_at_a_day() {
        let week = 7 * 86_400;
        let (_b, m) = reopened(&[week]);
        let age = m.buffer_oldest.age_s(Instant::now());
        assert!(
            (week..week + 60).contains(&age),
            "the oldest record is a week old; the gauge says {age} s"
        );
    }

    /// A restart over a backlog: its oldest record was made five hours ago, the next ten
    /// minutes ago. Once the oldest is delivered, `hubgate_buffer_oldest_age_seconds`
    /// (and the page's "oldest") shows about ten minutes, not five hours until every
    /// record from before the restart has left (only the first of them has a mark).
    #[test]
    fn the_oldest_age_follows_records_left_from_before_a_restart() {
        let (mut b, m) = reopened(&[5 * 3600, 600]);
        let age = m.buffer_oldest.age_s(Instant::now());
        assert!((5 * 3600..5 * 3600 + 60).contains(&age), "{age}");
        b.remove(0).unwrap();
        b.update_oldest_if_due(Instant::now() + OLDEST_CHECKED_WITHIN);
        let age = m.buffer_oldest.age_s(Instant::now());
        assert!(
            (600..=700).contains(&age),
            "the oldest record left is ten minutes old; the gauge says {age} s"
        );
        // Then one stored by this run: its mark, once those from before have left.
        b.push(2, &rec(2)).unwrap();
        b.remove(1).unwrap();
        b.update_oldest_if_due(Instant::now() + 2 * OLDEST_CHECKED_WITHIN);
        let age = m.buffer_oldest.age_s(Instant::now());
        assert!(age < 60, "stored now; the gauge says {age} s");
    }

    #[test]
    fn drop_oldest_keeps_the_newest_within_the_cap() {
        let one = encode(&rec(0)).len() as u64;
        let (mut b, m) = buffer(one * 3, WhenFull::DropOldest);
        for i in 0..5 {
            assert_eq!(b.push(i as u64, &rec(i)).unwrap(), Pushed::Stored);
        }
        assert_eq!(seqs(&mut b), vec![2, 3, 4]);
        assert_eq!(m.dropped_full.get(), 2);
        assert_eq!(m.buffer_records.get(), 3);
    }

    /// An eviction whose removal the store refuses counts nothing: the push fails, is tried
    /// again, and the record evicted at last is counted once, not once per try. One the sink
    /// holds is held once for its report, and not before it is gone.
    #[test]
    fn an_eviction_whose_removal_fails_is_counted_once_it_is_removed() {
        let one = encode(&rec(0)).len() as u64;
        for sending in [false, true] {
            let store = MemoryStore::default();
            let (mut b, m) = buffer_on(store.clone(), one * 2, WhenFull::DropOldest);
            for i in 0..2 {
                assert_eq!(b.push(i as u64, &rec(i)).unwrap(), Pushed::Stored);
            }
            let in_flight = |s| sending && s == 0;
            store.set_removes_fail(true);
            for _ in 0..2 {
                assert!(b.push_beside(2, &rec(2), in_flight).is_err());
                assert_eq!(m.dropped_full.get(), 0, "sending {sending}");
                assert!(!b.holds_drop(0), "sending {sending}");
            }
            store.set_removes_fail(false);
            assert_eq!(
                b.push_beside(2, &rec(2), in_flight).unwrap(),
                Pushed::Stored
            );
            assert_eq!(seqs(&mut b), vec![1, 2]);
            assert_eq!(
                m.dropped_full.get(),
                u64::from(!sending),
                "sending {sending}"
            );
            assert_eq!(b.holds_drop(0), sending);
            b.count_drop(0, "id-0");
            assert_eq!(m.dropped_full.get(), 1, "sending {sending}");
        }
    }

    /// A drop held for the sink's report is logged, once counted, with the record's id told
    /// once: added to an eviction's words (which have only its sequence number), not to a
    /// too large record's (which have it already).
    #[test]
    fn a_held_drop_once_counted_names_its_record_once() {
        let one = encode(&rec(0)).len() as u64;
        let (mut b, _) = buffer(one, WhenFull::DropOldest);
        b.push(0, &rec(0)).unwrap();
        assert_eq!(
            b.push_beside(1, &rec(1), |s| s == 0).unwrap(),
            Pushed::Stored
        );
        b.drop_too_large(2, "id-2", 5000, true);
        let counted = |seq| b.held_drops[&seq].counted(&format!("id-{seq}"));
        assert_eq!(
            [counted(0), counted(2)],
            [
                "dropped oldest record #0 (record id-0, in flight then: the sink did not confirm it)",
                "record id-2 (5000 bytes) is over max_bytes: dropped (in flight then: the sink did not confirm it)",
            ]
        );
    }

    /// A record over the largest value a segment entry holds is never waited for, whatever
    /// `when_full` says: `block` would wait for room that never comes.
    #[test]
    fn a_record_over_the_largest_value_is_never_waited_for_even_when_blocking() {
        let (mut b, m) = buffer(1 << 30, WhenFull::Block);
        let huge = Record {
            body: "x".repeat(segments::MAX_VALUE as usize),
            ..rec(0)
        };
        let bytes = encode(&huge).len() as u64;
        assert_eq!(b.push(0, &huge).unwrap(), Pushed::TooLarge { bytes });
        b.drop_too_large(0, &huge.id, bytes, false);
        assert_eq!((m.dropped_full.get(), b.len()), (1, 0));
        assert_eq!(b.push(1, &rec(1)).unwrap(), Pushed::Stored);
        assert_eq!(seqs(&mut b), vec![1]);
    }

    #[test]
    fn drop_newest_and_block_refuse_when_full() {
        let one = encode(&rec(0)).len() as u64;
        let (mut b, m) = buffer(one * 2, WhenFull::DropNewest);
        b.push(0, &rec(0)).unwrap();
        b.push(1, &rec(1)).unwrap();
        assert_eq!(b.push(2, &rec(2)).unwrap(), Pushed::Dropped);
        assert_eq!(m.dropped_full.get(), 1);
        let (mut b, m) = buffer(one * 2, WhenFull::Block);
        b.push(0, &rec(0)).unwrap();
        b.push(1, &rec(1)).unwrap();
        assert_eq!(b.push(2, &rec(2)).unwrap(), Pushed::Full);
        assert_eq!(m.dropped_full.get(), 0);
        b.remove(0).unwrap();
        assert_eq!(b.push(2, &rec(2)).unwrap(), Pushed::Stored);
    }

    /// A record larger than `max_bytes` would never fit: the buffer is not emptied for it
    /// nor waited on (the caller drops it or keeps it in flight), and its drop counts as
    /// `buffer_full`, even while the disk is low too.
    #[test]
    fn a_record_larger_than_the_whole_buffer_is_never_waited_for() {
        let one = encode(&rec(0)).len() as u64;
        let big = Record {
            body: "x".repeat(one as usize * 2),
            ..rec(0)
        };
        let bytes = encode(&big).len() as u64;
        let (mut b, m) = buffer(one * 2, WhenFull::Block);
        assert_eq!(b.push(0, &big).unwrap(), Pushed::TooLarge { bytes });
        assert_eq!((m.dropped_full.get(), b.len()), (0, 0));
        assert_eq!(b.push(1, &rec(1)).unwrap(), Pushed::Stored);
        assert_eq!(seqs(&mut b), vec![1]);

        let disk = MemoryStore::with_disk_free(1 << 30);
        let (mut b, m) = buffer_on(disk.clone(), one * 2, WhenFull::DropOldest);
        b.push(1, &rec(1)).unwrap();
        disk.set_disk_free(10);
        assert_eq!(b.push(0, &big).unwrap(), Pushed::TooLarge { bytes });
        assert_eq!(seqs(&mut b), vec![1], "emptied for it");
        b.drop_too_large(0, &big.id, bytes, false);
        assert_eq!((m.dropped_full.get(), m.dropped_disk_full.get()), (1, 0));
    }

    #[test]
    fn a_full_disk_stops_growth_and_applies_when_full() {
        let disk = MemoryStore::with_disk_free(999);
        let (mut b, m) = buffer_on(disk.clone(), 1 << 20, WhenFull::DropOldest);
        // Nothing stored yet and no room on the disk: the new record itself goes.
        assert_eq!(b.push(0, &rec(0)).unwrap(), Pushed::Dropped);
        assert_eq!(m.dropped_disk_full.get(), 1);
        disk.set_disk_free(1 << 30);
        for i in 1..=3 {
            assert_eq!(b.push(i, &rec(i as u32)).unwrap(), Pushed::Stored);
        }
        disk.set_disk_free(10);
        assert_eq!(b.push(4, &rec(4)).unwrap(), Pushed::Stored);
        assert_eq!(seqs(&mut b), vec![2, 3, 4], "the oldest made room");
        assert_eq!((m.dropped_disk_full.get(), m.dropped_full.get()), (2, 0));

        let (mut b, m) = buffer_on(MemoryStore::with_disk_free(10), 1 << 20, WhenFull::Block);
        assert_eq!(b.push(0, &rec(0)).unwrap(), Pushed::Full);
        assert_eq!(m.dropped_disk_full.get(), 0);
    }

    fn sled_buffer(dir: &std::path::Path, max_in_flight: usize) -> (Buffer, Arc<Metrics>) {
        let m = Metrics::new();
        let cfg = BufferConfig {
            path: dir.to_path_buf(),
            min_free: 0,
            max_in_flight,
            ..BufferConfig::default()
        };
        let store = SledStore::open(dir).unwrap();
        (Buffer::new(Box::new(store), &cfg, m.clone()), m)
    }

    /// A flush of deletions is due every `max_in_flight / 2` of them, within a second and
    /// once the buffer has drained; until one that covers them is done they count as not
    /// durable (a crash sends them again).
    #[test]
    fn deletions_are_synced_every_half_window_and_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, m) = sled_buffer(dir.path(), 6);
        for i in 0..10 {
            b.push(i, &rec(i as u32)).unwrap();
        }
        b.flush().unwrap();
        let t0 = Instant::now();
        b.start_flush(t0);
        assert!(b.flush_outcome(true).unwrap().is_ok());
        assert!(
            !b.sync_due(t0 + 2 * DELETIONS_SYNCED_WITHIN),
            "nothing to sync"
        );
        b.remove(0).unwrap();
        b.remove(1).unwrap();
        assert!(!b.sync_due(t0), "two deletions wait");
        b.remove(2).unwrap();
        assert!(b.sync_due(t0), "the third is synced with them");
        let synced = m.buffer_syncs.get();
        b.start_flush(t0);
        b.remove(3).unwrap();
        assert_eq!(
            b.unsynced_removals(),
            4,
            "not durable before the flush is done"
        );
        assert!(b.flush_outcome(true).unwrap().is_ok());
        assert_eq!(m.buffer_syncs.get(), synced + 1);
        assert_eq!(b.unsynced_removals(), 1, "the one removed after it started");
        assert!(!b.sync_due(t0), "not a second old yet");
        assert!(b.sync_due(t0 + DELETIONS_SYNCED_WITHIN), "a second old");
        for seq in 4..9 {
            b.remove(seq).unwrap();
        }
        b.flush().unwrap();
        b.remove(9).unwrap();
        assert!(b.sync_due(t0), "drained: synced at once");
    }

    /// A frame counter is unsynced from its being set until a flush started after it
    /// succeeds: one that started before it, or one that failed, does not make it durable.
    #[test]
    fn state_is_unsynced_until_a_flush_after_it_succeeds() {
        let store = MemoryStore::default();
        let mut b = Buffer::new(
            Box::new(store.clone()),
            &BufferConfig::default(),
            Metrics::new(),
        );
        assert!(!b.state_unsynced());
        b.save_fcnt(1, [1; 8], 7, [0; 4], u64::MAX).unwrap();
        assert!(b.state_unsynced());
        b.start_flush(Instant::now());
        b.save_fcnt(1, [1; 8], 8, [0; 4], u64::MAX).unwrap();
        assert!(b.flush_outcome(true).unwrap().is_ok());
        assert!(b.state_unsynced(), "set after the flush started");
        store.set_flush_fails(true);
        assert!(b.flush().is_err());
        assert!(b.state_unsynced(), "its flush failed");
        store.set_flush_fails(false);
        b.flush().unwrap();
        assert!(!b.state_unsynced());
    }

    /// Dropping a session's frames kept removes its entry only: its counter and another
    /// session's frames stay. The removal is a change of state like a write: it is unsynced
    /// and a flush due until one is done; the entry stays gone when the buffer is opened again.
    #[test]
    fn forgetting_a_sessions_frames_leaves_the_rest_and_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (one, other) = ((1, [1; 8]), (2, [2; 8]));
        let sessions = || {
            let (mut b, _) = sled_buffer(dir.path(), 6);
            b.set_key_prints(HashMap::from([(one, [4; 4]), (other, [5; 4])]));
            b.set_boot_id(Some(7));
            b
        };
        let kept = |b: &Buffer| {
            let copies = b.copies().unwrap().into_iter().map(|k| k.dev_addr);
            let fcnts = b.fcnts().unwrap().into_iter().map(|k| k.dev_addr);
            (copies.collect::<Vec<_>>(), fcnts.collect::<Vec<_>>())
        };
        let mut b = sessions();
        for (dev_addr, dev_eui) in [one, other] {
            let frame = (100, [1, 2, 3, 4], 1000);
            b.save_copies(dev_addr, dev_eui, &[frame], 1000).unwrap();
        }
        b.save_fcnt(one.0, one.1, 100, [1, 2, 3, 4], u64::MAX)
            .unwrap();
        b.flush().unwrap();
        assert_eq!((b.state_unsynced(), b.housekeeping_due()), (false, false));
        b.forget_copies(one.0, one.1).unwrap();
        assert_eq!(kept(&b), (vec![2], vec![1]), "(frames, counters) kept");
        assert_eq!((b.state_unsynced(), b.housekeeping_due()), (true, true));
        b.flush().unwrap();
        assert_eq!((b.state_unsynced(), b.housekeeping_due()), (false, false));
        b.forget_copies(one.0, one.1).unwrap();
        drop(b);
        assert_eq!(kept(&sessions()), (vec![2], vec![1]), "opened again");
    }

    /// A flush runs on the store's thread while records are written and removed, notifies
    /// when it is done, and its outcome is taken then; the next one leaves what came after it
    /// started durable. (What a power cut keeps of a flush is the fault tests' to show.)
    #[test]
    fn a_flush_runs_beside_writes_and_notifies_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, m) = sled_buffer(dir.path(), 10);
        b.push(0, &rec(0)).unwrap();
        let t0 = Instant::now();
        b.start_flush(t0);
        b.push(1, &rec(1)).unwrap();
        b.remove(0).unwrap();
        let done = b.flush_done();
        let outcome = loop {
            if let Some(outcome) = b.flush_outcome(false) {
                break outcome;
            }
            // Notified by the flush thread (a permit is kept if it came first).
            block_until_notified(&done);
        };
        assert!(outcome.is_ok());
        assert!(!b.flushing());
        assert!(m.buffer_syncs.get() >= 2, "the log and the mark");
        b.flush().unwrap();
        drop(b);
        let (mut b, _) = sled_buffer(dir.path(), 10);
        assert_eq!(seqs(&mut b), vec![1]);
    }

    /// A second flush while one runs is a bug that would mix up their outcomes: it panics
    /// (an `assert!`, so in release builds too; this test runs the debug build only).
    #[test]
    #[should_panic(expected = "one flush at a time")]
    fn a_second_flush_while_one_runs_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = sled_buffer(dir.path(), 10);
        b.push(0, &rec(0)).unwrap();
        b.start_flush(Instant::now());
        assert!(b.flushing());
        b.push(1, &rec(1)).unwrap();
        let _ = b.flush();
    }

    /// Blocks until `n` is notified.
    fn block_until_notified(n: &Notify) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(n.notified());
    }

    #[test]
    fn recent_ids_are_the_newest_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut on_disk, _) = sled_buffer(dir.path(), 10);
        let (mut in_memory, _) = buffer(1 << 20, WhenFull::DropOldest);
        for b in [&mut on_disk, &mut in_memory] {
            for i in 0..5 {
                b.push(i, &rec(i as u32)).unwrap();
            }
            assert_eq!(b.recent_ids(3).unwrap(), ["id-2", "id-3", "id-4"]);
            assert_eq!(b.recent_ids(10).unwrap().len(), 5);
            // More than one batch of bodies.
            for i in 5..200 {
                b.push(i, &rec(i as u32)).unwrap();
            }
            let newest: Vec<String> = (50..200).map(|i| format!("id-{i}")).collect();
            assert_eq!(b.recent_ids(150).unwrap(), newest);
            assert_eq!(b.recent_ids(1000).unwrap().len(), 200);
        }
    }

    /// On a full disk the cap is what was stored when it filled up: records a little larger
    /// than the oldest each evict what they need, and the buffer keeps the newest that fit
    /// (a cap following the shrinking usage emptied it record by record).
    #[test]
    fn a_full_disk_keeps_the_newest_records_that_fit() {
        let disk = MemoryStore::with_disk_free(1 << 30);
        let (mut b, m) = buffer_on(disk.clone(), 1 << 20, WhenFull::DropOldest);
        let growing = |i: u32| Record {
            body: "x".repeat(100 + i as usize),
            ..rec(i)
        };
        for i in 0..4 {
            b.push(i as u64, &growing(i)).unwrap();
        }
        let frozen = b.store.usage().1;
        disk.set_disk_free(10);
        for i in 4..40 {
            assert_eq!(b.push(i as u64, &growing(i)).unwrap(), Pushed::Stored);
            let (n, bytes) = b.store.usage();
            assert!(bytes <= frozen, "{bytes} > {frozen}");
            assert!(n >= 2, "only {n} record(s) left after #{i}");
        }
        let kept = seqs(&mut b);
        assert_eq!(kept.last(), Some(&39));
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        assert_eq!(m.dropped_disk_full.get(), 40 - kept.len() as u64);
        // A record larger than the whole room is dropped; the buffer is not emptied for it.
        let huge = Record {
            body: "x".repeat(frozen as usize),
            ..rec(99)
        };
        assert_eq!(b.push(99, &huge).unwrap(), Pushed::Dropped);
        assert_eq!(seqs(&mut b), kept);
    }

    /// Frame counters are kept with the records, each with its frame's MIC and its session
    /// keys' print where known: durable with the buffer's flushes, carried through a
    /// rebuild, untouched by a purge. A counter kept without its MIC (4 bytes, by an older
    /// release) is read with the MIC unknown, one without the print (8 bytes) with the print
    /// unknown; which counters below one were taken is kept only when not every one was.
    #[test]
    fn frame_counters_survive_reopen_rebuild_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, m) = sled_buffer(dir.path(), 10);
        b.set_key_prints(HashMap::from([
            ((0x2601_1bda, [1; 8]), [4, 3, 2, 1]),
            ((0x2601_1bdd, [4; 8]), [5; 4]),
        ]));
        b.save_fcnt(0x2601_1bda, [1; 8], 7, [7; 4], u64::MAX)
            .unwrap();
        b.save_fcnt(0x2601_1bda, [1; 8], 9, [9; 4], u64::MAX)
            .unwrap();
        b.save_fcnt(0x2601_1bdb, [2; 8], 70_000, [1, 2, 3, 4], u64::MAX)
            .unwrap();
        let old = session_key(FCNT_PREFIX, 0x2601_1bdc, [3; 8]);
        b.store.state_set(&old, &5_u32.to_be_bytes()).unwrap();
        b.save_fcnt(0x2601_1bdd, [4; 8], 12, [2; 4], 0xFF).unwrap();
        assert!(!b.sync_due(Instant::now()), "not a second old yet");
        assert!(b.sync_due(Instant::now() + DELETIONS_SYNCED_WITHIN));
        b.flush().unwrap();
        assert!(m.buffer_syncs.get() > 0);
        drop(b);
        let mut s = SledStore::open(dir.path()).unwrap();
        for seq in 0..1000 {
            s.insert(seq, vec![1; 1000]).unwrap();
        }
        assert_eq!(s.purge().unwrap(), 1000);
        s.flush().unwrap();
        drop(s);
        let (b, _) = sled_buffer(dir.path(), 10);
        let kept = |dev_addr, dev_eui, fcnt, mic, keys, behind| KeptFcnt {
            dev_addr,
            dev_eui,
            fcnt,
            mic,
            keys,
            behind,
        };
        assert_eq!(
            b.fcnts().unwrap(),
            vec![
                kept(
                    0x2601_1bda,
                    [1; 8],
                    9,
                    Some([9; 4]),
                    Some([4, 3, 2, 1]),
                    None
                ),
                kept(0x2601_1bdb, [2; 8], 70_000, Some([1, 2, 3, 4]), None, None),
                kept(0x2601_1bdc, [3; 8], 5, None, None, None),
                kept(
                    0x2601_1bdd,
                    [4; 8],
                    12,
                    Some([2; 4]),
                    Some([5; 4]),
                    Some(0xFF)
                ),
            ]
        );
    }

    /// The frames a session accepted last are kept beside its counter, under a key of their
    /// own: a buffer written without them (by an older release) opens with none and its
    /// counters as before, and an older release reading the counters finds only those. The
    /// last [`COPIES`] are kept, each once, oldest first, through a reopen; with the keys'
    /// print and the boot's id, and those kept under other keys or in another boot are
    /// dropped, not merged.
    #[test]
    fn the_frames_last_accepted_are_kept_beside_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let session = (0x2601_1bda, [1; 8]);
        let (mut b, _) = sled_buffer(dir.path(), 10);
        b.save_fcnt(session.0, session.1, 9, [9; 4], u64::MAX)
            .unwrap();
        b.flush().unwrap();
        drop(b);
        let (mut b, _) = sled_buffer(dir.path(), 10);
        assert_eq!(b.copies().unwrap(), [], "an older release's buffer");
        assert_eq!(b.fcnts().unwrap()[0].fcnt, 9);
        let now = 1_800_000_000_000;
        let frames: Vec<_> = (10..12 + COPIES as u32)
            .map(|f| (f, f.to_be_bytes(), now + u64::from(f)))
            .collect();
        b.save_copies(session.0, session.1, &frames[..2], now)
            .unwrap();
        assert_eq!(
            b.copies().unwrap(),
            [],
            "neither keys' print nor boot known"
        );
        b.set_key_prints(HashMap::from([(session, [4, 3, 2, 1])]));
        b.save_copies(session.0, session.1, &frames[..2], now)
            .unwrap();
        assert_eq!(b.copies().unwrap(), [], "no boot known");
        b.set_boot_id(Some(7));
        let kept = |frames: &[CopyFrame], keys, boot_id| KeptCopies {
            dev_addr: session.0,
            dev_eui: session.1,
            keys,
            boot_id,
            frames: frames.to_vec(),
        };
        b.save_copies(session.0, session.1, &frames[..2], now)
            .unwrap();
        b.save_copies(session.0, session.1, &frames[1..3], now)
            .unwrap();
        assert_eq!(b.copies().unwrap(), [kept(&frames[..3], [4, 3, 2, 1], 7)]);
        b.save_copies(session.0, session.1, &frames[3..], now)
            .unwrap();
        let &(newest, mic, _) = frames.last().unwrap();
        b.save_fcnt(session.0, session.1, newest, mic, u64::MAX)
            .unwrap();
        b.flush().unwrap();
        drop(b);
        let (mut b, _) = sled_buffer(dir.path(), 10);
        assert_eq!(b.copies().unwrap(), [kept(&frames[2..], [4, 3, 2, 1], 7)]);
        assert_eq!(b.store.state_scan(FCNT_PREFIX).unwrap().len(), 1);
        assert_eq!(b.fcnts().unwrap()[0].fcnt, newest);

        b.set_key_prints(HashMap::from([(session, [5; 4])]));
        b.set_boot_id(Some(7));
        b.save_copies(session.0, session.1, &frames[..1], now)
            .unwrap();
        assert_eq!(
            b.copies().unwrap(),
            [kept(&frames[..1], [5; 4], 7)],
            "new keys"
        );
        b.set_boot_id(Some(8));
        b.save_copies(session.0, session.1, &frames[1..2], now)
            .unwrap();
        assert_eq!(
            b.copies().unwrap(),
            [kept(&frames[1..2], [5; 4], 8)],
            "new boot"
        );
    }

    /// Only the frames accepted less than [`COPY_WINDOW`] before now, or before the newest
    /// frame, are kept: a copy of an older one cannot come within the window after a
    /// restart. A session sending every few minutes keeps its last frame only. When none of
    /// the frames to keep is within the window (released late, their records durable only
    /// after the sink was back), nothing is written: what is kept stays as it was.
    #[test]
    fn only_frames_within_the_copy_window_are_kept() {
        let store = MemoryStore::default();
        let (mut b, _) = buffer_on(store.clone(), 1 << 20, WhenFull::DropOldest);
        let session = (0x2601_1bda, [1; 8]);
        b.set_key_prints(HashMap::from([(session, [4; 4])]));
        b.set_boot_id(Some(7));
        let t = 1_800_000_000_000;
        let window = COPY_WINDOW.as_millis() as u64;
        let frame = |f: u32, at| (f, f.to_be_bytes(), at);
        let mut save = |frames: &[CopyFrame], now| {
            b.save_copies(session.0, session.1, frames, now).unwrap();
            let kept = b.copies().unwrap().into_iter().flat_map(|k| k.frames);
            kept.map(|(f, _, _)| f).collect::<Vec<_>>()
        };
        assert_eq!(save(&[frame(1, t), frame(2, t + 1000)], t + 1000), [1, 2]);
        assert_eq!(save(&[frame(3, t + window)], t + window), [2, 3]);
        assert_eq!(
            save(&[frame(4, t + 2 * window)], t + window),
            [4],
            "the newest frame ahead of now"
        );
        let written = store.state_written();
        assert_eq!(
            (
                save(&[frame(5, t + 2 * window + 1)], t + 3 * window + 1),
                store.state_written()
            ),
            (vec![4], written),
            "(frames kept, state bytes written) after frames older than the window"
        );
        let mut each = Vec::new();
        for n in 0..4 {
            let at = t + 4 * window + n * 10 * 60_000;
            let before = store.state_written();
            assert_eq!(save(&[frame(6 + n as u32, at)], at), [6 + n as u32]);
            each.push(store.state_written() - before);
        }
        assert_eq!(
            each,
            [24 + 36; 4],
            "key and value bytes of a frame every 10 minutes"
        );
    }

    /// `keys` state entries of 100 bytes written, then removed, flushing every 256: sled
    /// keeps the space they took (~270 bytes each). The index takes a few bytes a record in
    /// sled (groups of 256 rewritten in place), so records alone no longer grow it past the
    /// reclaim sizes in a test's time.
    pub(super) fn churn(s: &mut dyn Store, keys: u64) {
        let key = |k: u64| format!("churn/{k}").into_bytes();
        for k in 0..keys {
            s.state_set(&key(k), &[1; 100]).unwrap();
            if k % 256 == 255 {
                s.flush().unwrap();
            }
        }
        for k in 0..keys {
            s.state_remove(&key(k)).unwrap();
            if k % 256 == 255 {
                s.flush().unwrap();
            }
        }
        s.flush().unwrap();
    }

    /// A drained database of a few MiB is rebuilt only while the disk is short of space.
    #[test]
    fn a_low_disk_reclaims_a_smaller_drained_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path()).unwrap();
        // Past 1 MiB with the churn (the drained segments are gone).
        churn(&mut s, 10_000);
        for seq in 0..10_000 {
            s.insert(seq, vec![1; 100]).unwrap();
            if seq % 256 == 255 {
                s.flush().unwrap();
            }
        }
        s.flush().unwrap();
        for seq in 0..10_000 {
            s.remove(seq).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(s.reclaim(false).unwrap(), None, "below the usual size");
        let (before, after) = s.reclaim(true).unwrap().expect("rebuilt when low");
        assert!(after * 2 < before, "{before} -> {after}");
    }

    fn dir_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    dir_bytes(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }

    /// A large backlog gives its disk space back once it has drained and stayed empty, not
    /// while a drain goes on that empties it for a moment.
    #[test]
    fn draining_a_large_backlog_gives_the_disk_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, metrics) = sled_buffer(dir.path(), BufferConfig::default().max_in_flight);
        // The database, without the disk space reserve beside it (which does not change).
        assert!(reserve::present(dir.path()));
        let db = dir.path().join("sled");
        // Past the rebuild size with the churn (the bodies are in segment files, deleted as
        // they drain).
        churn(b.store.as_mut(), 40_000);
        let mut big = rec(0);
        big.body = "x".repeat(100);
        for seq in 0..50_000 {
            b.push(seq, &big).unwrap();
            if seq % 256 == 255 {
                b.flush().unwrap();
            }
        }
        b.flush().unwrap();
        let full = dir_bytes(&db);
        for seq in 0..49_999 {
            b.remove(seq).unwrap();
        }
        b.flush().unwrap();
        // The bodies' segments go; sled may trim free segments off its log's end, by how much
        // depends on its own thread's timing (8.9 to over 9.2 MB of 18.4 here).
        let undrained = dir_bytes(&db);
        b.remove(49_999).unwrap();
        let t0 = Instant::now();
        b.give_space_back_if_quiet(t0);
        // The drain goes on: a record spills and leaves again.
        b.push(50_000, &big).unwrap();
        b.give_space_back_if_quiet(t0 + REBUILD_WHEN_EMPTY_FOR);
        b.remove(50_000).unwrap();
        b.give_space_back_if_quiet(t0 + REBUILD_WHEN_EMPTY_FOR);
        b.give_space_back_if_quiet(t0 + 2 * REBUILD_WHEN_EMPTY_FOR - Duration::from_millis(1));
        assert_eq!(metrics.buffer_rebuilds.get(), 0, "no rebuild mid-drain");
        b.give_space_back_if_quiet(t0 + 2 * REBUILD_WHEN_EMPTY_FOR);
        assert_eq!(metrics.buffer_rebuilds.get(), 1);
        let drained = dir_bytes(&db);
        assert!(
            drained * 4 < undrained,
            "the rebuild gives back what sled kept: {full} -> {undrained} -> {drained} bytes"
        );
    }

    /// A reserve given back to a full disk is made again once the buffer has drained and
    /// stayed empty, as the space given back after a drain: the drain is what frees the disk.
    #[test]
    fn the_disk_space_reserve_is_made_again_after_a_drain() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _) = sled_buffer(dir.path(), BufferConfig::default().max_in_flight);
        assert!(reserve::present(dir.path()), "made at the start");
        std::fs::remove_file(dir.path().join("reserve")).unwrap();
        b.push(0, &rec(0)).unwrap();
        b.remove(0).unwrap();
        let t0 = Instant::now();
        b.give_space_back_if_quiet(t0);
        assert!(!reserve::present(dir.path()), "not while a drain may go on");
        b.give_space_back_if_quiet(t0 + REBUILD_WHEN_EMPTY_FOR);
        assert!(reserve::present(dir.path()));
    }
}
