//! The buffered records' bodies, kept out of sled: appended to segment files in the
//! database's `values` directory, while sled holds a pointer per record (see [`Pointer`]),
//! in groups ([`super::index`]). sled keeps whole leaves of values in its cache, several times its
//! configured capacity (docs/performance.md); small pointers keep that small, and each body
//! is written to the SD card once instead of being rewritten by sled's page consolidation
//! and segment cleaning.
//!
//! Each entry is the record's sequence number (u64, big-endian), the value's length (u32,
//! big-endian), then the value. A segment is never written again once the store appends to
//! a newer one, and a segment whose records all left is deleted once a flush made those
//! removals durable ([`Segments::deletable`]); [`super::compact`] moves the few records left
//! in a sparse one.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The directory of the segments, inside the database directory: moved aside, salvaged and
/// rebuilt with it.
pub const VALUES_DIR: &str = "values";
/// A segment is closed once it holds this much. A new one costs a file creation and a
/// directory sync in the next flush (every ~450 records of 2.3 KB, about two flush rounds
/// of 256).
pub const SEGMENT_SIZE: u64 = 1 << 20;
/// The largest value an entry holds. The largest input a source reads is an MQTT message of
/// 16 MiB (`MAX_MQTT_MESSAGE`; a serial frame is 2 KiB, a UDP datagram 64 KiB), and a record
/// built from one is its JSON plus an envelope of a few hundred bytes; four times that leaves
/// room for escaping and mapping. [`Segments::append`] refuses a larger value (the buffer
/// drops such a record before it gets here), so a pointer with a larger length is damaged
/// and is never read: a damaged length must not size an allocation.
pub const MAX_VALUE: u32 = 64 << 20;
/// An entry's header: sequence number and length.
pub(super) const HEADER: usize = 12;
const SUFFIX: &str = ".seg";
/// Numbers a new segment tries before the append fails: each one skipped is in use.
const NUMBER_TRIES: u32 = 1024;

/// Where a record's body is: segment number, offset of its entry, length of the value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pointer {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Pointer {
    /// Layout 1's pointer, which tests build such databases with.
    #[cfg(test)]
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0; 12];
        b[..4].copy_from_slice(&self.segment.to_be_bytes());
        b[4..8].copy_from_slice(&self.offset.to_be_bytes());
        b[8..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Where the entry after this one starts when the two lie back to back (the entry is its
    /// header and its value); `None` past what an offset holds.
    pub fn end(self) -> Option<u32> {
        self.offset
            .checked_add(HEADER as u32)?
            .checked_add(self.len)
    }

    /// `None` for anything that is not 12 bytes, or whose length is over [`MAX_VALUE`]: no
    /// entry of a segment has it, and the index refuses it.
    pub fn from_bytes(b: &[u8]) -> Option<Pointer> {
        let b: &[u8; 12] = b.try_into().ok()?;
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Pointer {
            segment: word(0),
            offset: word(4),
            len: word(8),
        })
        .filter(|p| p.len <= MAX_VALUE)
    }
}

/// The segment being appended to.
struct Current {
    number: u32,
    file: File,
    /// Where the next entry goes (entries are written with `pwrite`: after a failed append
    /// in a segment that holds no entry yet, the next one writes from its start again; bytes
    /// of the failed one past it, when it is shorter, are a torn tail no pointer names).
    end: u64,
    /// An append failed after the segment's first entry: the next one starts a new segment.
    /// A write failing at one file's tail (a bad block of a card) would otherwise fail every
    /// append at the same offset, and the buffer take no record for good. The part of the
    /// entry written is a torn tail, as a crash leaves one: past the last whole entry, named
    /// by no pointer.
    failed: bool,
}

impl Current {
    /// Write `entry` at the end.
    fn write(&self, entry: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if FAILING.with(|f| {
            f.borrow()
                .as_ref()
                .is_some_and(|n| n.contains(&self.number))
        }) {
            self.file
                .write_all_at(&entry[..entry.len() / 2], self.end)?;
            REFUSED.with(|r| r.set(r.get() + 1));
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file.write_all_at(entry, self.end)
    }
}

#[cfg(test)]
thread_local! {
    /// Segments whose appends on this thread write half their entry, then fail (EIO): a card
    /// that refuses writes at those files' tails.
    static FAILING: std::cell::RefCell<Option<std::ops::RangeInclusive<u32>>> =
        const { std::cell::RefCell::new(None) };
    /// Appends failed that way on this thread since the last [`failing_appends_in`].
    static REFUSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Appends on this thread to a segment numbered in `numbers` fail from now on, each after
/// writing half its entry (`None`: none fails).
#[cfg(test)]
fn fail_appends_in(numbers: Option<std::ops::RangeInclusive<u32>>) {
    FAILING.with(|f| *f.borrow_mut() = numbers);
}

/// Appends on this thread to a segment numbered in `numbers` fail (as with
/// [`fail_appends_in`]) until the guard returned is dropped, a failing test's unwinding
/// included.
#[cfg(test)]
#[must_use = "appends fail only until the guard is dropped"]
pub fn failing_appends_in(numbers: std::ops::RangeInclusive<u32>) -> FailingAppends {
    REFUSED.with(|r| r.set(0));
    fail_appends_in(Some(numbers));
    FailingAppends
}

/// See [`failing_appends_in`].
#[cfg(test)]
pub struct FailingAppends;

#[cfg(test)]
impl FailingAppends {
    /// The appends that failed so far.
    pub fn refused(&self) -> u64 {
        REFUSED.with(std::cell::Cell::get)
    }
}

#[cfg(test)]
impl Drop for FailingAppends {
    fn drop(&mut self) {
        fail_appends_in(None);
    }
}

pub struct Segments {
    dir: PathBuf,
    current: Option<Current>,
    /// The number the next new segment gets.
    next: u32,
    /// What each segment that has any records holds (the current one may have none).
    live: BTreeMap<u32, Held>,
    /// The size of each segment in `live` other than the current one: what compaction
    /// weighs against what it holds ([`Segments::sparsest`]).
    sizes: BTreeMap<u32, u64>,
    /// Segments appended to since the last flush was prepared, with a handle to sync them.
    unsynced: BTreeMap<u32, File>,
    /// A segment was created since the last flush was prepared: the directory needs a sync.
    created: bool,
    /// Segments without records that will never be appended to again: deleted after the
    /// next flush that makes their removals durable.
    empty: BTreeSet<u32>,
    /// The last segment read, kept open for the next read (a drain reads in order).
    reading: Mutex<Option<(u32, File)>>,
    /// Numbers of the segment files no pointer named at open, deleted by
    /// [`Segments::remove_orphans`].
    orphans: Vec<u32>,
    /// Numbers pointers named at open whose files were not there.
    missing: BTreeSet<u32>,
    /// Segments that may hold the only copies of records whose pointers name a missing
    /// one, and could not be looked in yet ([`Segments::look_in_later`]).
    unlooked: BTreeSet<u32>,
    /// The segment files there at open: only they can hold such copies.
    opened: BTreeSet<u32>,
}

/// The records a segment holds (pointers in sled name them), and the bytes their entries
/// take.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Held {
    pub records: u64,
    pub bytes: u64,
}

impl Held {
    /// A pointer into the segment, to an entry of `p.len` bytes of value.
    pub fn add(&mut self, p: Pointer) {
        self.records += 1;
        self.bytes += HEADER as u64 + u64::from(p.len);
    }
}

/// What a flush syncs of the segments, taken when it is prepared.
pub struct SegmentSync {
    files: Vec<(u32, File)>,
    dir: Option<PathBuf>,
}

impl SegmentSync {
    /// `fdatasync` every segment appended to, then the directory if one was created. Returns
    /// the number of syncs.
    pub fn run(self) -> io::Result<u64> {
        let mut n = 0;
        for (number, file) in &self.files {
            file.sync_data()
                .map_err(|e| super::durable::step(&format!("syncing segment {number}"), e))?;
            n += 1;
        }
        if let Some(dir) = &self.dir {
            super::durable::sync_dir(dir)
                .map_err(|e| super::durable::step("syncing the segment directory", e))?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
impl SegmentSync {
    /// The segments it syncs.
    pub fn numbers(&self) -> Vec<u32> {
        self.files.iter().map(|(n, _)| *n).collect()
    }

    /// Whether it syncs the segment directory.
    pub fn syncs_dir(&self) -> bool {
        self.dir.is_some()
    }
}

/// Why a body cannot be read.
#[derive(Debug)]
pub enum ReadError {
    /// Its entry is not there whole (segment gone, file too short) or is another record's:
    /// damage, the body is gone.
    Damaged(String),
    /// Reading failed in a way that says something about the data (EIO from a bad block,
    /// EISDIR): the body may be whole and a later read may succeed, or it may never be read.
    Io(String),
    /// Reading failed for want of a resource ([`passes`]: EMFILE, ENOMEM...): nothing is
    /// known of the body, and the read works once the resource is back.
    Passing(String),
}

impl ReadError {
    /// `e` from reading `what`, classified by [`is_damage`] and [`passes`].
    fn of(what: String, e: io::Error) -> ReadError {
        if is_damage(&e) {
            ReadError::Damaged(format!("{what}: {e}"))
        } else if passes(&e) {
            ReadError::Passing(format!("{what}: {e}"))
        } else {
            ReadError::Io(format!("{what}: {e}"))
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Damaged(why) | ReadError::Io(why) | ReadError::Passing(why) => {
                f.write_str(why)
            }
        }
    }
}

/// What [`Segments::scan`] found in a segment.
#[derive(Debug, Default)]
pub struct Found {
    /// The entries whose values check out, as `(seq, value)`, in order.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Bytes of the file in none of them: damage, a torn tail, what could not be read.
    pub skipped: u64,
    /// Bytes of the blocks that could not be read, and the first failure.
    pub unreadable: u64,
    pub failed: Option<String>,
}

/// What a read that fails is narrowed to: a bad sector of an SD card or a disk takes its
/// block with it, not the segment.
pub const BLOCK: u64 = 4096;
/// Bytes of values that do not check out that a scan reads past before it gives the rest of
/// the segment up: a damaged segment whose every offset looks like the header of a long
/// entry would otherwise cost a CRC of up to [`MAX_VALUE`] per byte.
const SCAN_BUDGET: u64 = MAX_VALUE as u64;

/// A segment's bytes up to `head` (those entries start in), read once, and the blocks that
/// failed to read, anywhere: each is read at most once.
struct Blocks<'a, F> {
    file: &'a F,
    number: u32,
    head: Vec<u8>,
    bad: BTreeSet<u64>,
    failed: Option<String>,
}

impl<'a, F: FileExt> Blocks<'a, F> {
    /// Reads `[0, head)` in chunks of 16 blocks.
    fn read(file: &'a F, number: u32, head: u64) -> io::Result<Blocks<'a, F>> {
        let mut blocks = Blocks {
            file,
            number,
            head: vec![0; usize::try_from(head).expect("a segment's head fits in memory")],
            bad: BTreeSet::new(),
            failed: None,
        };
        let mut head = std::mem::take(&mut blocks.head);
        for (i, chunk) in head.chunks_mut(16 * BLOCK as usize).enumerate() {
            let from = i as u64 * 16 * BLOCK;
            blocks.fill(chunk, from)?;
        }
        blocks.head = head;
        Ok(blocks)
    }

    /// `buf` from `from` on, or as much of it as reads: after a failure, block by block,
    /// each block that fails marked bad. Whether it all read.
    fn fill(&mut self, buf: &mut [u8], from: u64) -> io::Result<bool> {
        match self.file.read_exact_at(buf, from) {
            Ok(()) => return Ok(true),
            Err(e) if passes(&e) => return Err(e),
            Err(_) => {}
        }
        let (mut at, end, mut whole) = (from, from + buf.len() as u64, true);
        while at < end {
            let next = ((at / BLOCK + 1) * BLOCK).min(end);
            let part = &mut buf[(at - from) as usize..(next - from) as usize];
            if let Err(e) = self.file.read_exact_at(part, at) {
                if passes(&e) {
                    return Err(e);
                }
                self.failed
                    .get_or_insert_with(|| format!("segment {} at {at}: {e}", self.number));
                self.bad.insert(at / BLOCK);
                whole = false;
            }
            at = next;
        }
        Ok(whole)
    }

    /// Bytes `[from, to)`, `None` if a block of them cannot be read. Those past the head are
    /// read from the file, a block that fails only once.
    fn get(&mut self, from: u64, to: u64) -> io::Result<Option<Cow<'_, [u8]>>> {
        if to > from
            && self
                .bad
                .range(from / BLOCK..=(to - 1) / BLOCK)
                .next()
                .is_some()
        {
            return Ok(None);
        }
        let head = self.head.len() as u64;
        if to <= head {
            return Ok(Some(Cow::Borrowed(&self.head[from as usize..to as usize])));
        }
        let split = head.saturating_sub(from);
        let mut out = vec![0; (to - from) as usize];
        out[..split as usize].copy_from_slice(&self.head[from.min(head) as usize..]);
        let whole = self.fill(&mut out[split as usize..], from + split)?;
        Ok(whole.then_some(Cow::Owned(out)))
    }
}

/// [`Segments::scan`] of segment `number`, `size` bytes long, open as `file`.
fn scan<F: FileExt>(
    file: &F,
    number: u32,
    size: u64,
    valid: impl Fn(&[u8]) -> bool,
) -> io::Result<Found> {
    let mut blocks = Blocks::read(file, number, size.min(SEGMENT_SIZE + HEADER as u64))?;
    let mut found = Found::default();
    let (mut at, mut covered, mut spent) = (0u64, 0u64, 0u64);
    while at < SEGMENT_SIZE && at + HEADER as u64 <= size && spent <= SCAN_BUDGET {
        let header = blocks
            .get(at, at + HEADER as u64)?
            .map(|h| <[u8; HEADER]>::try_from(&h[..]).expect("a header"));
        let entry = match header {
            Some(header) => {
                let seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
                let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes"));
                let end = at + HEADER as u64 + u64::from(len);
                if len > MAX_VALUE || end > size {
                    None
                } else {
                    let value = blocks.get(at + HEADER as u64, end)?;
                    match value {
                        Some(v) if valid(&v) => Some((seq, v.into_owned(), end)),
                        _ => {
                            spent += u64::from(len);
                            None
                        }
                    }
                }
            }
            None => None,
        };
        match entry {
            Some((seq, value, end)) => {
                found.entries.push((seq, value));
                covered += end - at;
                at = end;
            }
            None => at += 1,
        }
    }
    found.skipped = size - covered;
    found.unreadable = blocks.bad.len() as u64 * BLOCK;
    found.failed = blocks.failed;
    Ok(found)
}

/// Whether `e` is a want of a resource (descriptors, memory, kernel buffers), an
/// interruption or no permission (EACCES, EPERM: an operator's change, undone by one): it
/// says nothing about the data, however long it lasts, so a body failing with it is never
/// taken for damage (a minute without descriptors would otherwise delete the buffer).
pub fn passes(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::PermissionDenied
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EAGAIN | libc::EINTR
        )
    )
}

/// Whether `e` says the entry is not there (the segment is gone, or ends before it), as
/// opposed to a failure to read what is there.
pub fn is_damage(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
    )
}

/// Record `seq`'s entry at `p` in `file`, segment `p.segment`.
pub fn read_entry(file: &File, seq: u64, p: Pointer) -> Result<Vec<u8>, ReadError> {
    // A damaged pointer must not size an allocation: its length is checked against the
    // largest value first, then against the file's length (a sparse file can be large).
    if p.len > MAX_VALUE {
        return Err(ReadError::Damaged(format!(
            "a length of {} bytes in segment {} at {}, over the largest value ({MAX_VALUE})",
            p.len, p.segment, p.offset
        )));
    }
    let size = file
        .metadata()
        .map_err(|e| ReadError::of(format!("segment {}", p.segment), e))?
        .len();
    let end = u64::from(p.offset) + HEADER as u64 + u64::from(p.len);
    if end > size {
        return Err(ReadError::Damaged(format!(
            "segment {} ends at {size}, the entry at {} would end at {end}",
            p.segment, p.offset
        )));
    }
    let mut entry = vec![0; HEADER + p.len as usize];
    file.read_exact_at(&mut entry, u64::from(p.offset))
        .map_err(|e| ReadError::of(format!("segment {} at {}", p.segment, p.offset), e))?;
    let header_seq = u64::from_be_bytes(entry[..8].try_into().expect("8 bytes"));
    let header_len = u32::from_be_bytes(entry[8..HEADER].try_into().expect("4 bytes"));
    if header_seq != seq || header_len != p.len {
        return Err(ReadError::Damaged(format!(
            "segment {} at {} holds #{header_seq} ({header_len} bytes)",
            p.segment, p.offset
        )));
    }
    entry.drain(..HEADER);
    Ok(entry)
}

fn name(number: u32) -> String {
    format!("{number:08}{SUFFIX}")
}

/// The number of the segment file named `file`; `None` for any other name (`5.seg` and
/// `+5.seg` are not segment 5's).
fn number_of(file: &std::ffi::OsStr) -> Option<u32> {
    let file = file.to_str()?;
    let number = file.strip_suffix(SUFFIX)?.parse().ok()?;
    (name(number) == file).then_some(number)
}

/// `numbers` (ascending) in the order their segments were written: a new segment takes a
/// number above those in use, and numbers wrap from `u32::MAX` to 1. Across a wrap the
/// numbers alone do not tell which segment is older, so the order starts after the widest
/// gap between them, going round: the numbers in use are a narrow band (each stands for up
/// to a MiB written, and reaching a wrap takes 4 PiB), and that gap is the unused rest of
/// the range. Unwrapped, that gap is the one from the highest number round to the lowest,
/// which keeps them ascending (it wins a tie).
pub(super) fn written_order(mut numbers: Vec<u32>) -> Vec<u32> {
    let n = numbers.len();
    let widest = (0..n).max_by_key(|&i| numbers[(i + 1) % n].wrapping_sub(numbers[i]));
    if let Some(i) = widest {
        numbers.rotate_left((i + 1) % n);
    }
    numbers
}

impl Segments {
    /// The segments in `db_dir` (the directory is created if missing), with `live`: the
    /// records each segment holds, counted from sled's pointers. Segment files no pointer
    /// names are left for [`Segments::remove_orphans`]: they hold the bodies of records
    /// whose pointers sled lost, should it have. Appending starts in a new segment (the last
    /// one may end in a torn entry). The caller syncs `db_dir`, where the directory may have
    /// been created.
    pub fn open(db_dir: &Path, live: BTreeMap<u32, Held>) -> io::Result<Segments> {
        let dir = db_dir.join(VALUES_DIR);
        match std::fs::DirBuilder::new()
            .mode(crate::files::PRIVATE_DIR)
            .create(&dir)
        {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let (mut orphans, mut sizes) = (Vec::new(), BTreeMap::new());
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(number) = number_of(&entry.file_name()) else {
                continue;
            };
            if live.contains_key(&number) {
                sizes.insert(number, entry.metadata()?.len());
            } else {
                orphans.push(number);
            }
        }
        // From the segments kept only: an orphan's number (any, `u32::MAX` included) goes
        // with it. A number used again is safe: a new segment's directory entry is synced
        // by the flush that makes a pointer into it durable, and each entry's header names
        // its record, so an old file that a power cut brings back under that number is not
        // read as the new one's records.
        let next = live.keys().next_back().map_or(1, |h| h.saturating_add(1));
        let missing = live
            .keys()
            .filter(|n| !sizes.contains_key(n))
            .copied()
            .collect();
        let opened = sizes.keys().chain(&orphans).copied().collect();
        Ok(Segments {
            dir,
            current: None,
            next,
            live,
            sizes,
            unsynced: BTreeMap::new(),
            created: false,
            empty: BTreeSet::new(),
            reading: Mutex::new(None),
            orphans,
            missing,
            unlooked: BTreeSet::new(),
            opened,
        })
    }

    /// The segments pointers named at open whose files were not there.
    pub fn missing(&self) -> &BTreeSet<u32> {
        &self.missing
    }

    /// Segments relink could not look in (empty: it looked everywhere), of those there at
    /// open (one created since, the one appended to among them, holds no copy). Until it
    /// can, one whose last record leaves (delivered, or copied away by compaction) is kept
    /// as an orphan instead of deleted: entries no pointer names in it may be the copies
    /// looked for.
    pub fn look_in_later(&mut self, numbers: BTreeSet<u32>) {
        self.unlooked = numbers.intersection(&self.opened).copied().collect();
    }

    /// The segments [`Segments::look_in_later`] named, in the order they were written.
    pub fn unlooked_as_written(&self) -> Vec<u32> {
        written_order(self.unlooked.iter().copied().collect())
    }

    /// Every segment that holds records.
    pub fn holding(&self) -> Vec<u32> {
        self.live.keys().copied().collect()
    }

    /// A record's pointer moved from `from`, into a segment that is gone, to `to`, an entry
    /// of the record found at open in a segment that is there (one no pointer named
    /// included: it stays).
    pub fn relinked(&mut self, from: Pointer, to: Pointer) -> io::Result<()> {
        if self.orphans.contains(&to.segment) {
            let size = std::fs::metadata(self.path(to.segment))?.len();
            self.orphans.retain(|n| *n != to.segment);
            self.sizes.insert(to.segment, size);
        }
        // Emptied in this run and not deleted yet: it holds a record again.
        self.empty.remove(&to.segment);
        self.added(to);
        self.removed(from);
        Ok(())
    }

    /// Segment `number` holds a record the last run wrote after its last flush (it crashed
    /// or was killed), which the open keeps because its body reads whole, from the page
    /// cache maybe: the next flush, whose mark covers that record, syncs the segment and the
    /// directory (which may not hold its entry durably yet) first.
    pub fn sync_with_next_flush(&mut self, number: u32) -> io::Result<()> {
        if !self.unsynced.contains_key(&number) {
            self.unsynced.insert(number, File::open(self.path(number))?);
        }
        self.created = true;
        Ok(())
    }

    /// Delete the segment files no pointer named at open (written, their pointers never
    /// durable), once the open knows sled lost no flushed pointer. One that cannot be
    /// deleted is left for the next open, with a warning: no pointer can name it, and the
    /// records that pointers name are still readable.
    pub fn remove_orphans(&mut self) {
        for number in std::mem::take(&mut self.orphans) {
            let path = self.path(number);
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!(
                    "buffer: cannot delete segment {} that no record names: {e}",
                    path.display()
                );
            }
        }
    }

    /// The segment files no pointer names go with the next flush's deletions, once it has
    /// made durable the removals that emptied those relink kept ([`Segments::look_in_later`]).
    pub fn retire_orphans(&mut self) {
        self.empty.extend(std::mem::take(&mut self.orphans));
    }

    /// The segments that can hold entries appended after the last flush without a pointer
    /// in sled: appends go to one segment, then to a newer one, never back, with ascending
    /// sequence numbers (compaction's copies aside: their numbers are already named). An entry above every number sled holds was appended after the
    /// newest pointer's: later in the newest segment a pointer names (in written order), or
    /// in a segment none names, which the open deletes ([`Segments::remove_orphans`]) unless
    /// sled lost flushed writes. Older segments and the rest of the buffer are not read.
    pub fn unflushed(&self) -> Vec<u32> {
        let newest = written_order(self.live.keys().copied().collect()).pop();
        self.orphans.iter().copied().chain(newest).collect()
    }

    /// The numbers of the segment files present, in order.
    pub fn numbers(&self) -> io::Result<Vec<u32>> {
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            numbers.extend(number_of(&entry?.file_name()));
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// The numbers of the segment files present, in the order they were written (see
    /// [`written_order`]).
    pub fn numbers_as_written(&self) -> io::Result<Vec<u32>> {
        Ok(written_order(self.numbers()?))
    }

    /// The entries of segment `number` whose values decode, as `(seq, value)`, in order,
    /// whether or not a pointer names them (the open looks for numbers appended after the
    /// last flush). They follow the headers as appended ([`Segments::headers`]) and end at
    /// the first that is not whole, unlike [`Segments::scan`], which the salvage and
    /// `hubgate buffer recover` run on a database moved aside: in a buffer in use, a torn
    /// entry is its segment's last (appends after a crash, or after one that failed past
    /// the segment's first entry, go to a new one), and reading on past it byte by byte
    /// could take bytes inside a damaged entry for an entry of any number, which would move
    /// every number handed out after it. (For the scan's carrying such bytes would need a
    /// whole header and a value whose CRC checks, inside one record: its text is JSON,
    /// which holds no raw zero bytes, and a header's number starts with several.)
    pub fn entries(&self, number: u32) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let (file, headers) = self.headers(number)?;
        let mut entries = Vec::with_capacity(headers.len());
        for (seq, p) in headers {
            let mut value = vec![0; p.len as usize];
            file.read_exact_at(&mut value, u64::from(p.offset) + HEADER as u64)?;
            if super::decode(&value).is_ok() {
                entries.push((seq, value));
            }
        }
        Ok(entries)
    }

    /// Every entry of segment `number` whose value checks out (`valid`), in order. After one
    /// that does not (damaged length or body, torn tail) the scan goes on at the next byte,
    /// and so on until an entry checks out: one damaged header costs its entry, not the rest
    /// of the segment. Its bytes are counted in [`Found::skipped`]. The bytes up to
    /// [`SEGMENT_SIZE`] (no entry starts past it) are read once into memory; a read that
    /// fails is narrowed to the [`BLOCK`]s that fail, and an entry touching one is left out
    /// as unreadable. Only a failure that may pass ([`passes`]) fails the whole.
    pub fn scan(&self, number: u32, valid: impl Fn(&[u8]) -> bool) -> io::Result<Found> {
        let file = File::open(self.path(number))?;
        let size = file.metadata()?.len();
        scan(&file, number, size, valid)
    }

    /// Segment `number`, open, and where its whole entries are, as `(seq, pointer)`, in
    /// order; no value is read. Reading stops at the first entry that is not whole (a torn
    /// tail) or claims more than [`MAX_VALUE`]; no entry starts past [`SEGMENT_SIZE`].
    pub fn headers(&self, number: u32) -> io::Result<(File, Vec<(u64, Pointer)>)> {
        let file = File::open(self.path(number))?;
        let size = file.metadata()?.len();
        let mut out = Vec::new();
        let mut offset = 0u64;
        while offset < SEGMENT_SIZE && offset + HEADER as u64 <= size {
            let mut header = [0; HEADER];
            file.read_exact_at(&mut header, offset)?;
            let seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes"));
            let end = offset + HEADER as u64 + u64::from(len);
            if len > MAX_VALUE || end > size {
                break;
            }
            let offset32 = u32::try_from(offset).expect("below SEGMENT_SIZE");
            out.push((
                seq,
                Pointer {
                    segment: number,
                    offset: offset32,
                    len,
                },
            ));
            offset = end;
        }
        Ok((file, out))
    }

    /// The segment to compact, if any: once the segments closed for appends hold more bytes
    /// of records that left than `slack`, and more than all the records left hold, the one
    /// of them (not in `skip`) whose records take the fewest bytes, if they take at most half
    /// of it. While records leave in order, only the oldest segment holds any that left:
    /// nothing to do. A recType parked for long leaves its records scattered over every
    /// segment written since; this keeps the segments' size on disk within about twice the
    /// records' plus `slack`. The first condition is met only when a segment qualifies:
    /// were every one more than half full, less than the records' bytes would have left.
    pub fn sparsest(&self, slack: u64, skip: &BTreeSet<u32>) -> Option<u32> {
        let held = |n: &u32| self.live.get(n).map_or(0, |h| h.bytes);
        let left: u64 = self
            .sizes
            .iter()
            .map(|(n, size)| size.saturating_sub(held(n)))
            .sum();
        let records: u64 = self.live.values().map(|h| h.bytes).sum();
        if left <= slack.max(records) {
            return None;
        }
        self.sizes
            .iter()
            .filter(|(n, size)| !skip.contains(n) && 2 * held(n) <= **size)
            .min_by_key(|(n, _)| held(n))
            .map(|(n, _)| *n)
    }

    /// How many records segment `number` holds.
    pub fn held(&self, number: u32) -> u64 {
        self.live.get(&number).map_or(0, |h| h.records)
    }

    /// The bytes of the entries segment `number` holds.
    pub fn held_bytes(&self, number: u32) -> u64 {
        self.live.get(&number).map_or(0, |h| h.bytes)
    }

    /// The database directory was renamed to `db_dir` (moved aside): read from there.
    pub fn moved_to(&mut self, db_dir: &Path) {
        self.dir = db_dir.join(VALUES_DIR);
    }

    fn path(&self, number: u32) -> PathBuf {
        self.dir.join(name(number))
    }

    /// Append `value` as record `seq`'s body. The caller counts it ([`Segments::added`])
    /// once sled holds the pointer.
    pub fn append(&mut self, seq: u64, value: &[u8]) -> io::Result<Pointer> {
        let len = u32::try_from(value.len())
            .ok()
            .filter(|len| *len <= MAX_VALUE)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a record of {} bytes, over the largest the buffer holds ({MAX_VALUE})",
                        value.len()
                    ),
                )
            })?;
        if self
            .current
            .as_ref()
            .is_none_or(|c| c.end >= SEGMENT_SIZE || c.failed)
        {
            self.start_segment()?;
        }
        let current = self.current.as_mut().expect("started above");
        let offset = u32::try_from(current.end).expect("a segment is closed at 1 MiB");
        let mut entry = Vec::with_capacity(HEADER + value.len());
        entry.extend_from_slice(&seq.to_be_bytes());
        entry.extend_from_slice(&len.to_be_bytes());
        entry.extend_from_slice(value);
        if let Err(e) = current.write(&entry) {
            // One that holds no entry yet is appended to again, at its start: a file system
            // that creates files but refuses every write gets one new segment per failing
            // streak, not one per append.
            current.failed = current.end > 0;
            return Err(e);
        }
        current.end += entry.len() as u64;
        if let std::collections::btree_map::Entry::Vacant(e) = self.unsynced.entry(current.number) {
            e.insert(current.file.try_clone()?);
        }
        Ok(Pointer {
            segment: current.number,
            offset,
            len,
        })
    }

    /// Close the current segment and create the next one. Numbers wrap after `u32::MAX`;
    /// one in use is skipped: a live segment's, or a file's that is there (one waiting to be
    /// deleted, or one left that could not be).
    fn start_segment(&mut self) -> io::Result<()> {
        for _ in 0..NUMBER_TRIES {
            let number = self.next;
            self.next = number.checked_add(1).unwrap_or(1);
            if self.live.contains_key(&number) || self.empty.contains(&number) {
                continue;
            }
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(crate::files::PRIVATE_FILE)
                .open(self.path(number))
            {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                file => file?,
            };
            self.created = true;
            // A number whose file was gone at open is this file's from now on.
            self.missing.remove(&number);
            if let Some(old) = self.current.replace(Current {
                number,
                file,
                end: 0,
                failed: false,
            }) {
                if self.live.contains_key(&old.number) {
                    self.sizes.insert(old.number, old.end);
                } else {
                    self.empty.insert(old.number);
                }
            }
            return Ok(());
        }
        Err(io::Error::other(format!(
            "no free segment number among the {NUMBER_TRIES} before {}",
            self.next
        )))
    }

    /// A pointer into segment `p` is now in sled.
    pub fn added(&mut self, p: Pointer) {
        self.live.entry(p.segment).or_default().add(p);
    }

    /// A pointer into `p` left sled. A pointer stored in its place is [`Segments::added`]
    /// first: the segment it points into may be the current one, which a drained store
    /// retires.
    pub fn removed(&mut self, p: Pointer) {
        let Some(held) = self.live.get_mut(&p.segment) else {
            return;
        };
        held.records -= 1;
        held.bytes = held.bytes.saturating_sub(HEADER as u64 + u64::from(p.len));
        if held.records == 0 {
            self.live.remove(&p.segment);
            self.sizes.remove(&p.segment);
            // A file that is gone is not deleted: its number, free, may name a new segment
            // before the deletion would run.
            let gone = self.missing.contains(&p.segment);
            if self.unlooked.contains(&p.segment) {
                self.orphans.push(p.segment);
            } else if !gone && self.current.as_ref().is_none_or(|c| c.number != p.segment) {
                self.empty.insert(p.segment);
            }
            if self.live.is_empty() {
                // Drained: the segment appended to goes too (the next append starts a new
                // one), so the next flush gives its space back without a rebuild of the
                // database, which a low disk would otherwise need for it.
                if let Some(c) = self.current.take() {
                    self.empty.insert(c.number);
                }
            }
        }
    }

    /// Every record left (a purge): every segment goes after the next flush, the current one
    /// too.
    pub fn clear(&mut self) {
        if let Some(c) = self.current.take() {
            self.empty.insert(c.number);
        }
        let live = std::mem::take(&mut self.live);
        self.sizes.clear();
        let gone = &self.missing;
        self.empty
            .extend(live.into_keys().filter(|n| !gone.contains(n)));
    }

    /// The body `p` points at; [`ReadError::Damaged`] when its entry is not there whole or
    /// is not record `seq`'s, [`ReadError::Io`] or [`ReadError::Passing`] when reading it
    /// failed otherwise.
    pub fn read(&self, seq: u64, p: Pointer) -> Result<Vec<u8>, ReadError> {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if reading.as_ref().is_none_or(|(n, _)| *n != p.segment) {
            *reading = None;
            let file = File::open(self.path(p.segment))
                .map_err(|e| ReadError::of(format!("segment {}", p.segment), e))?;
            *reading = Some((p.segment, file));
        }
        let (_, file) = reading.as_ref().expect("opened above");
        read_entry(file, seq, p)
    }

    /// What a flush prepared now has to sync: the segments appended to since the last one
    /// was prepared (each whole: appends run on this thread), and the directory if one was
    /// created.
    pub fn take_unsynced(&mut self) -> SegmentSync {
        SegmentSync {
            files: std::mem::take(&mut self.unsynced).into_iter().collect(),
            dir: std::mem::take(&mut self.created).then(|| self.dir.clone()),
        }
    }

    /// The empty segments a flush prepared now makes deletable (it makes their removals
    /// durable). Once it succeeded, [`Segments::delete`] them; if it failed, give them back
    /// with [`Segments::keep`].
    pub fn deletable(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.empty)
    }

    pub fn keep(&mut self, numbers: BTreeSet<u32>) {
        self.empty.extend(numbers);
    }

    /// Delete segments no durable pointer names. A power cut that brings one back is
    /// harmless: the next open deletes it.
    pub fn delete(&mut self, numbers: BTreeSet<u32>) {
        let mut reading = self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        if reading.as_ref().is_some_and(|(n, _)| numbers.contains(n)) {
            *reading = None;
        }
        for number in numbers {
            match std::fs::remove_file(self.path(number)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::warn!("buffer: cannot delete segment {number}: {e}");
                }
            }
        }
    }

    /// Bytes the segment files take.
    pub fn size_on_disk(&self) -> io::Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            total += entry?.metadata()?.len();
        }
        Ok(total)
    }

    /// The segment files present (tests).
    #[cfg(test)]
    pub fn files(&self) -> Vec<u32> {
        let mut numbers: Vec<u32> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| number_of(&e.unwrap().file_name()))
            .collect();
        numbers.sort();
        numbers
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    /// A want of descriptors, memory or buffers, an interruption or no permission passes;
    /// what says something about the data (EIO, EISDIR) or the entry being gone does not.
    #[test]
    fn a_want_of_resources_passes_and_an_io_error_does_not() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EAGAIN,
            libc::EINTR,
            libc::EACCES,
            libc::EPERM,
        ] {
            assert!(
                super::passes(&Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
        for errno in [libc::EIO, libc::EISDIR, libc::ENOENT, libc::EUCLEAN] {
            assert!(
                !super::passes(&Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
        assert!(!super::passes(&Error::from(ErrorKind::UnexpectedEof)));
    }

    /// Only an entry that is not there is damage; any other failure may pass.
    #[test]
    fn only_a_missing_or_short_entry_is_damage() {
        assert!(super::is_damage(&Error::from(ErrorKind::NotFound)));
        assert!(super::is_damage(&Error::from(ErrorKind::UnexpectedEof)));
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::EIO,
            libc::ENOMEM,
            libc::EISDIR,
        ] {
            assert!(
                !super::is_damage(&Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
    }

    /// A segment's bytes, whose reads fail (EIO) in the blocks `bad`; counts the reads
    /// that touch one.
    struct Damaged {
        bytes: Vec<u8>,
        bad: Vec<u64>,
        bad_reads: std::cell::Cell<u32>,
    }

    impl std::os::unix::fs::FileExt for Damaged {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let end = (offset + buf.len() as u64).min(self.bytes.len() as u64);
            if offset >= end {
                return Ok(0);
            }
            let touched = offset / super::BLOCK..=(end - 1) / super::BLOCK;
            if self.bad.iter().any(|b| touched.contains(b)) {
                self.bad_reads.set(self.bad_reads.get() + 1);
                return Err(Error::from_raw_os_error(libc::EIO));
            }
            let n = (end - offset) as usize;
            buf[..n].copy_from_slice(&self.bytes[offset as usize..end as usize]);
            Ok(n)
        }

        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
            unreachable!("a scan only reads")
        }
    }

    /// `n` entries of 100-byte values `[i; 100]` (valid: all bytes the same), and where
    /// each starts.
    fn segment(n: u8) -> (Vec<u8>, Vec<u64>) {
        let (mut bytes, mut starts) = (Vec::new(), Vec::new());
        for i in 0..n {
            starts.push(bytes.len() as u64);
            bytes.extend_from_slice(&u64::from(i).to_be_bytes());
            bytes.extend_from_slice(&100u32.to_be_bytes());
            bytes.extend_from_slice(&[i; 100]);
        }
        (bytes, starts)
    }

    fn valid(v: &[u8]) -> bool {
        v.len() == 100 && v.iter().all(|b| *b == v[0])
    }

    /// Damage in the middle of a segment (a zeroed stretch over a header and a body, a
    /// flipped value byte) and a torn tail cost the entries they touch: the scan finds every
    /// other one, and counts the bytes in none as skipped.
    #[test]
    fn a_scan_goes_on_past_damage_to_the_next_entry_that_checks_out() {
        let (mut bytes, starts) = segment(200);
        // Entries 50 and 51: zeroed from inside 50's value to the end of 51's header.
        bytes[starts[50] as usize + 40..starts[51] as usize + 12].fill(0);
        // Entry 120: one value byte.
        bytes[starts[120] as usize + 50] ^= 0x10;
        // A torn tail: half an entry.
        bytes.extend_from_slice(&segment(201).0[starts[199] as usize + 112..][..60]);
        let file = Damaged {
            bytes,
            bad: Vec::new(),
            bad_reads: Default::default(),
        };
        let found = super::scan(&file, 7, file.bytes.len() as u64, valid).unwrap();
        let seqs: Vec<u64> = found.entries.iter().map(|(s, _)| *s).collect();
        let expected: Vec<u64> = (0..200).filter(|i| ![50, 51, 120].contains(i)).collect();
        assert_eq!(seqs, expected);
        assert_eq!(found.skipped, 3 * 112 + 60);
        assert_eq!((found.unreadable, found.failed), (0, None));
    }

    /// A block that cannot be read (EIO) costs the entries it covers, not the segment, and
    /// is read once in the chunk and once alone, however many entries it covers.
    #[test]
    fn a_bad_block_costs_only_the_entries_it_covers() {
        let (bytes, starts) = segment(200);
        let file = Damaged {
            bytes,
            bad: vec![3],
            bad_reads: Default::default(),
        };
        let found = super::scan(&file, 7, file.bytes.len() as u64, valid).unwrap();
        let seqs: Vec<u64> = found.entries.iter().map(|(s, _)| *s).collect();
        let block = 3 * super::BLOCK..4 * super::BLOCK;
        let expected: Vec<u64> = (0..200u64)
            .filter(|&i| {
                let (from, to) = (starts[i as usize], starts[i as usize] + 112);
                to <= block.start || from >= block.end
            })
            .collect();
        assert!(expected.len() < 200 && expected.len() > 150, "{expected:?}");
        assert_eq!(seqs, expected);
        assert_eq!(found.unreadable, super::BLOCK);
        assert!(
            found
                .failed
                .as_deref()
                .is_some_and(|f| f.contains("segment 7 at 12288")),
            "{:?}",
            found.failed
        );
        assert_eq!(file.bad_reads.get(), 2);

        // Past the first MiB (read as needed, not kept): two entries over one bad block,
        // read once.
        let size = super::SEGMENT_SIZE + 4 * super::BLOCK;
        let mut bytes = vec![0xff; size as usize];
        for (at, seq) in [(0usize, 1u64), (112, 2)] {
            bytes[at..at + 8].copy_from_slice(&seq.to_be_bytes());
            let len = u32::try_from(size - at as u64 - 12).unwrap();
            bytes[at + 8..at + 12].copy_from_slice(&len.to_be_bytes());
        }
        let file = Damaged {
            bytes,
            bad: vec![super::SEGMENT_SIZE / super::BLOCK + 2],
            bad_reads: Default::default(),
        };
        let found = super::scan(&file, 7, size, |v| v.len() as u64 > super::SEGMENT_SIZE).unwrap();
        assert!(found.entries.is_empty(), "{:?}", found.entries.len());
        assert_eq!((found.skipped, found.unreadable), (size, super::BLOCK));
        assert_eq!(file.bad_reads.get(), 2);
    }

    /// Segments are read in the order written: ascending, and across a wrap of the numbers
    /// from the widest gap on.
    #[test]
    fn segments_are_ordered_as_written_across_a_wrap() {
        let order = |n: &[u32]| super::written_order(n.to_vec());
        assert_eq!(order(&[]), Vec::<u32>::new());
        assert_eq!(order(&[7]), vec![7]);
        assert_eq!(order(&[1, 2, 9]), vec![1, 2, 9]);
        assert_eq!(order(&[1, u32::MAX]), vec![u32::MAX, 1]);
        assert_eq!(
            order(&[1, 2, u32::MAX - 1, u32::MAX]),
            vec![u32::MAX - 1, u32::MAX, 1, 2]
        );
        assert_eq!(order(&[3, 5, 3 << 30]), vec![3 << 30, 3, 5]);
        assert_eq!(order(&[3, 5, 1 << 30]), vec![3, 5, 1 << 30]);
    }

    /// One entry `seq` of `len` bytes of `fill`.
    fn entry(seq: u64, len: u32, fill: u8) -> Vec<u8> {
        let mut e = seq.to_be_bytes().to_vec();
        e.extend_from_slice(&len.to_be_bytes());
        e.resize(super::HEADER + len as usize, fill);
        e
    }

    /// An entry that ends where a bad block starts reads whole: only the entries that touch
    /// the block are left out.
    #[test]
    fn an_entry_ending_where_a_bad_block_starts_is_kept() {
        let block = super::BLOCK as u32;
        let mut bytes = entry(1, block - super::HEADER as u32, 1);
        bytes.extend(entry(2, 100, 2));
        bytes.extend(entry(3, block - 112 - super::HEADER as u32, 3));
        bytes.extend(entry(4, 100, 4));
        assert_eq!(bytes.len() as u64, 2 * super::BLOCK + 112);
        let file = Damaged {
            bytes,
            bad: vec![1],
            bad_reads: Default::default(),
        };
        let uniform = |v: &[u8]| v.iter().all(|b| *b == v[0]);
        let found = super::scan(&file, 7, file.bytes.len() as u64, uniform).unwrap();
        let seqs: Vec<u64> = found.entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 4]);
        assert_eq!(found.unreadable, super::BLOCK);
    }

    /// A value of the largest length an append takes ([`super::MAX_VALUE`]) is an entry
    /// like any other: read back, and found by the open's look at the headers and by a scan
    /// (the salvage and `hubgate buffer recover` carry it).
    #[test]
    fn a_value_of_the_largest_length_is_found_by_headers_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let mut segments = super::Segments::open(dir.path(), Default::default()).unwrap();
        let value = vec![b'x'; super::MAX_VALUE as usize];
        let p = segments.append(5, &value).unwrap();
        assert_eq!(segments.read(5, p).unwrap().len(), value.len());
        let (_, headers) = segments.headers(p.segment).unwrap();
        assert_eq!(headers, [(5, p)]);
        let found = segments
            .scan(p.segment, |v| v.len() == value.len())
            .unwrap();
        let found: Vec<(u64, usize)> = found.entries.iter().map(|(s, v)| (*s, v.len())).collect();
        assert_eq!(found, [(5, value.len())]);
    }

    /// Layout 1's pointers (read by the upgrade and the salvage) decode byte for byte, each
    /// word big-endian: a segment past 255 and an offset past 64 KiB included. Anything not
    /// 12 bytes, or a length over [`super::MAX_VALUE`], is none.
    #[test]
    fn a_layout_one_pointer_decodes_every_byte() {
        let p = super::Pointer {
            segment: 0x0102_0304,
            offset: 0x0005_0607,
            len: super::MAX_VALUE,
        };
        assert_eq!(p.to_bytes(), [1, 2, 3, 4, 0, 5, 6, 7, 0x04, 0, 0, 0]);
        assert_eq!(super::Pointer::from_bytes(&p.to_bytes()), Some(p));
        let over = super::Pointer {
            len: super::MAX_VALUE + 1,
            ..p
        };
        assert_eq!(super::Pointer::from_bytes(&over.to_bytes()), None);
        assert_eq!(super::Pointer::from_bytes(&p.to_bytes()[..11]), None);
        assert_eq!(super::Pointer::from_bytes(&[0; 13]), None);
    }
}
