//! Test helpers shared by the tests of the sled store, its salvage and its upgrade: stores
//! filled and flushed, the records and bodies they hold, faults (capabilities dropped), and
//! the integration tests' listing of a directory's files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::salvage::MOVED;
use super::segments::Pointer;
use super::sled_store::{SledStore, LAYOUT, LAYOUT_KEY, MARK_KEY};
use super::Store;

#[path = "../../tests/support/listing.rs"]
pub(super) mod listing;

pub(super) fn seqs(s: &SledStore, after: Option<u64>) -> Vec<u64> {
    s.scan(after, 1000)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Databases this test moved aside, kept or removed since.
pub(super) fn moved() -> usize {
    MOVED.with(std::cell::Cell::get)
}

/// `n` records of `len` bytes from `first` on, each body filled with its number.
pub(super) fn fill(s: &mut SledStore, first: u64, n: u64, len: usize) {
    fill_with(s, first..first + n, |seq| vec![seq as u8; len]);
}

/// A store opened in `dir` holding records `seqs` (bodies from `body`), flushed.
pub(super) fn flushed_store(
    dir: &Path,
    seqs: std::ops::Range<u64>,
    body: impl Fn(u64) -> Vec<u8>,
) -> SledStore {
    let mut s = SledStore::open(dir).unwrap();
    fill_with(&mut s, seqs, body);
    s.flush().unwrap();
    s
}

/// Records `seqs` with the bodies `body` gives.
pub(super) fn fill_with(
    s: &mut SledStore,
    seqs: std::ops::Range<u64>,
    body: impl Fn(u64) -> Vec<u8>,
) {
    for seq in seqs {
        s.insert(seq, body(seq)).unwrap();
    }
}

/// A store at `dir` with three records of 10 bytes flushed, closed: its segment directory.
pub(super) fn three_flushed(dir: &Path) -> PathBuf {
    let mut s = SledStore::open(dir).unwrap();
    fill(&mut s, 0, 3, 10);
    s.flush().unwrap();
    s.segments.dir().to_path_buf()
}

/// Records of 300,000 bytes: four fill a segment (1 MiB), the fifth starts the next.
pub(super) const QUARTER: usize = 300_000;

/// A body that decodes, for record `seq`: a salvage carries only those.
pub(super) fn body_of(seq: u64) -> Vec<u8> {
    super::encode(&record(seq, 200))
}

/// Records `0..5` flushed in segment 1; then an append to it fails at its tail (EIO,
/// half the entry written) and keeps failing there until this returns; records `5..10`
/// are inserted and flushed after it. Segment 1's path.
pub(super) fn past_a_failing_tail(dir: &Path) -> PathBuf {
    let mut s = flushed_store(dir, 0..5, body_of);
    let _failing = super::segments::failing_appends_in(1..=1);
    let e = s.insert(5, body_of(5)).unwrap_err();
    assert!(e.to_string().contains("appending record #5"), "{e}");
    fill_with(&mut s, 5..10, body_of);
    s.flush().unwrap();
    assert_eq!(s.segments.files(), vec![1, 2]);
    assert_eq!((segment_of(&s, 4), segment_of(&s, 5)), (1, 2));
    let first = s.segments.dir().join("00000001.seg");
    // Segment 1 ends in the half entry: a torn tail no pointer names.
    let entry = 12 + body_of(5).len() as u64;
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        5 * entry + entry / 2
    );
    first
}

/// A buffer over `s`, to see what its reader makes of the records.
pub(super) fn buffer_of(dir: &Path, s: SledStore) -> (super::Buffer, Arc<crate::metrics::Metrics>) {
    let m = crate::metrics::Metrics::new();
    let cfg = crate::config::BufferConfig {
        path: dir.to_path_buf(),
        min_free: 0,
        ..Default::default()
    };
    (super::Buffer::new(Box::new(s), &cfg, m.clone()), m)
}

pub(super) fn record(seq: u64, len: usize) -> crate::record::Record {
    crate::record::Record {
        id: format!("id-{seq}"),
        rec_type: "t".into(),
        key: "k".into(),
        created_ms: 1,
        body: "x".repeat(len),
    }
}

/// The segment record `seq`'s pointer names.
pub(super) fn segment_of(s: &SledStore, seq: u64) -> u32 {
    s.index.get(seq).unwrap().unwrap().segment
}

/// What the index holds, written into sled's files (as sled writes its log when its
/// buffers fill), without a flush of the store's.
/// Make the entry of `db` (at `dir`) that sled keeps in a blob file of its own unreadable
/// (the file replaced by a directory, EISDIR; a card's bad block gives EIO), after pushing its
/// leaf out of sled's cache (256 shards of 1 KiB) with other pages: the next read of it goes
/// to the blob. Of the leaf's versions, named by their place in sled's log, the last is the
/// one sled reads.
pub(super) fn make_the_blob_unreadable(db: &sled::Db, dir: &Path) {
    let other = db.open_tree("other").unwrap();
    for i in 0u32..100_000 {
        other.insert(i.to_be_bytes(), &[1; 8][..]).unwrap();
    }
    let blob = std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|f| {
            f.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::fs::create_dir(&blob).unwrap();
}

pub(super) fn write_out(s: &mut SledStore) {
    s.index.write().unwrap();
    s.db.flush().unwrap();
}

/// Records `0..n`, flushed, of `len` bytes each; then every one but one in four (the
/// first of each segment, four records of `QUARTER`) is delivered.
pub(super) fn one_in_four_stays(s: &mut SledStore, n: u64, body: impl Fn(u64) -> Vec<u8>) {
    fill_with(s, 0..n, body);
    s.flush().unwrap();
    for seq in (0..n).filter(|seq| seq % 4 != 0) {
        s.remove(seq).unwrap();
    }
}

/// Flushes (the removals made durable, which may start compaction) until compaction
/// has nothing left to do; the number of flushes.
pub(super) fn compact(s: &mut SledStore) -> usize {
    s.flush().unwrap();
    let mut flushes = 1;
    while s.wants_flush() {
        s.flush().unwrap();
        flushes += 1;
        assert!(flushes < 1000, "compaction does not end");
    }
    flushes
}

/// The state tree `state` says the database is of this release's layout.
pub(super) fn assert_current_layout(state: &sled::Tree) {
    let layout = state.get(LAYOUT_KEY).unwrap();
    assert_eq!(layout.as_deref(), Some(&LAYOUT.to_be_bytes()[..]));
}

/// A store at `dir` whose records `0..32` were written, one in four stayed and was
/// compacted, and whose sled then went back to the pointers before the swaps (the
/// originals' segments deleted since), with its stored mark at `stored` if given (sled
/// lost a flush that wrote one too); `before` runs on it before the compaction. The
/// records `0..32` that stay, and their bodies.
pub(super) fn compacted_then_taken_back(
    dir: &Path,
    stored: Option<u64>,
    before: impl FnOnce(&mut SledStore),
) -> BTreeMap<u64, Vec<u8>> {
    let body = |seq: u64| super::encode(&record(seq, QUARTER));
    let mut s = SledStore::open(dir).unwrap();
    one_in_four_stays(&mut s, 32, body);
    before(&mut s);
    let stay: BTreeMap<u64, Pointer> = (0..32)
        .step_by(4)
        .map(|seq: u64| (seq, s.index.get(seq).unwrap().unwrap()))
        .collect();
    compact(&mut s);
    let first = stay[&0].segment;
    assert!(!s.segments.files().contains(&first), "#0 not moved");
    assert_eq!(s.stored_mark(), s.marked(), "the swaps wrote no mark");
    for (seq, original) in &stay {
        s.index.insert(*seq, *original).unwrap();
    }
    if let Some(mark) = stored {
        s.meta.insert(MARK_KEY, &mark.to_be_bytes()).unwrap();
    }
    write_out(&mut s);
    stay.into_keys().map(|seq| (seq, body(seq))).collect()
}

/// A crash before the pointers of `seqs` reached sled's file: their bodies stay in the
/// segments.
pub(super) fn lose_pointers(s: &mut SledStore, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        s.index.remove(seq).unwrap();
    }
    write_out(s);
}

/// Bypasses the permission bits of a file to read and write it.
const CAP_DAC_OVERRIDE: u32 = 1;
/// Bypasses them to read a file and search a directory.
const CAP_DAC_READ_SEARCH: u32 = 2;
/// Deletes another user's file in a directory with the sticky bit.
pub(super) const CAP_FOWNER: u32 = 3;
/// Without them, even root cannot open a file of mode 000.
pub(super) const NO_DAC: [u32; 2] = [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH];

/// Runs `f` on a thread of its own without the capabilities `caps` (capabilities are a
/// thread's): without CAP_FOWNER, in a directory with the sticky bit, it cannot delete a
/// file another user owns; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, it cannot
/// open a file of mode 000; root or not.
pub(super) fn without<T: Send>(caps: &[u32], f: impl FnOnce() -> T + Send) -> T {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Sets {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let mut header = Header {
                version: VERSION_3,
                pid: 0,
            };
            let mut sets = [Sets::default(); 2];
            // SAFETY: capget and capset of the calling thread (pid 0), with the header
            // and the two sets version 3 takes.
            unsafe {
                let got = libc::syscall(libc::SYS_capget, &mut header, sets.as_mut_ptr());
                assert_eq!(got, 0);
                for cap in caps {
                    sets[0].effective &= !(1 << cap);
                }
                let set = libc::syscall(libc::SYS_capset, &mut header, sets.as_ptr());
                assert_eq!(set, 0);
            }
            f()
        });
        thread.join().unwrap()
    })
}

thread_local! {
    /// The free space the [`SledStore`]s on this thread report ([`Store::disk_free`]) in place
    /// of their disk's: see [`with_disk_free`].
    pub(super) static DISK_FREE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// `f` run with the [`SledStore`]s on this thread reporting `free` bytes free on their disk.
pub(super) fn with_disk_free<T>(free: u64, f: impl FnOnce() -> T) -> T {
    DISK_FREE.with(|d| d.set(Some(free)));
    let out = f();
    DISK_FREE.with(|d| d.set(None));
    out
}
