//! The frame counters a start without sled needs, in a small file beside it
//! (`hubgate-counters`, in the database directory).
//!
//! A card that failed a write takes none until it is checked at the next boot, and sled
//! cannot open a database it cannot write: such a start runs without the buffer
//! ([`super::ReadOnlyStore`]), its state in memory. A session with no counter finds its
//! device's by trying the upper halves `0..INITIAL_UPPER_HALVES` (FCnt below 2^20), one with
//! a counter the halves up to `BLOCKS_AHEAD` past it ([`crate::lorawan::fcnt`]). A device past
//! 2^20 is followed only by its kept counter: without it every frame would fail the MIC until
//! the check, each reading lost (acknowledged over MQTT, heard once over UDP or serial). So
//! the counters from upper half `INITIAL_UPPER_HALVES - BLOCKS_AHEAD` (FCnt 786,432) on are
//! also kept here, and a read-only start reads them ([`read_for`]): from there the search reaches
//! past 2^20, so a device that crossed it after the file was last written, or during a run
//! without the buffer that then restarted, is found all the same.
//!
//! The file is rewritten only when it would no longer find them: a counter got into those
//! halves, moved to another half or to other keys (a start refuses a counter kept with
//! another keys' print), or its entry was removed. A counter that went on within its half is
//! not rewritten: the search from a kept counter tries the rollovers ahead of it, so one
//! behind by less than a half finds the device all the same (frames between the file's
//! counter and the device's could pass as new: copies, not losses). Most gateways have no
//! such device and never write it. It is written by the flush that makes the same counters
//! durable in sled, after sled's syncs and the mark, on the flush thread
//! ([`crate::files::replace_durably`]). A flush whose syncs fail ends the run; the next
//! start compares the file with sled's counters again.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::salvage::aside_dirs;
use super::sled_store::{with_suffix, DB_DIR};
use super::{kept_fcnt, StateEntry, FCNT_PREFIX};
use crate::lorawan::fcnt::{BLOCKS_AHEAD, INITIAL_UPPER_HALVES};

/// The file, inside the database directory (moved aside and rebuilt with it).
pub(super) const FILE: &str = "hubgate-counters";
const MAGIC: [u8; 4] = *b"hgc1";
/// The lowest upper half kept.
const FROM_HALF: u32 = INITIAL_UPPER_HALVES - BLOCKS_AHEAD;
/// The largest file read: 100,000 sessions of 39 bytes (a 17-byte key, a value of at most
/// 20, a length byte each).
const MAX_LEN: u64 = 4 << 20;

/// What of a kept counter finds its device again: its upper half, and its keys' print.
type Finds = (u32, Option<[u8; 4]>);

/// The counters kept in the file among a state's frame counters, and whether the file
/// still finds them.
#[derive(Default)]
pub(super) struct FarCounters {
    /// Frame counter key (`fcnt/`, DevAddr, DevEUI) → its value and what finds it, for each
    /// counter from [`FROM_HALF`] on.
    counters: BTreeMap<Vec<u8>, (Vec<u8>, Finds)>,
    /// What finds each counter in the file, as last handed to a flush (`None`: no file
    /// that can be read).
    in_file: Option<BTreeMap<Vec<u8>, Finds>>,
}

impl FarCounters {
    /// The counters to keep among the frame counters `fcnts`, and the file's, read from
    /// `db_dir` (one missing holds none; one that cannot be read is rewritten).
    pub(super) fn open(fcnts: Vec<StateEntry>, db_dir: &Path) -> FarCounters {
        let mut far = FarCounters::default();
        for (k, v) in fcnts {
            far.set(&k, &v);
        }
        far.in_file = load(db_dir).ok().map(|kept| {
            kept.unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| finds(&k, &v).map(|f| (k, f)))
                .collect()
        });
        far
    }

    /// A frame counter entry was set (at every frame of its device: a counter kept is
    /// updated in place).
    pub(super) fn set(&mut self, key: &[u8], value: &[u8]) {
        match (finds(key, value), self.counters.get_mut(key)) {
            (Some(f), Some((kept, finds))) => {
                kept.clear();
                kept.extend_from_slice(value);
                *finds = f;
            }
            (Some(f), None) => {
                self.counters.insert(key.to_vec(), (value.to_vec(), f));
            }
            (None, _) => {
                self.counters.remove(key);
            }
        }
    }

    /// A frame counter entry was removed.
    pub(super) fn remove(&mut self, key: &[u8]) {
        self.counters.remove(key);
    }

    /// The file would no longer find every counter kept, or cannot be read.
    pub(super) fn stale(&self) -> bool {
        self.in_file.as_ref().is_none_or(|in_file| {
            !self
                .counters
                .iter()
                .map(|(k, (_, f))| (k, f))
                .eq(in_file.iter())
        })
    }

    /// The file to write when it is [`stale`](FarCounters::stale), taken as written by the
    /// flush it is handed to.
    pub(super) fn take_file(&mut self) -> Option<Vec<u8>> {
        if !self.stale() {
            return None;
        }
        self.in_file = Some(
            self.counters
                .iter()
                .map(|(k, (_, f))| (k.clone(), *f))
                .collect(),
        );
        Some(encode(self.counters.iter().map(|(k, (v, _))| (k, v))))
    }
}

/// What finds a frame counter entry's device, if it is one to keep.
fn finds(key: &[u8], value: &[u8]) -> Option<Finds> {
    let kept = kept_fcnt(key, value)?;
    let half = kept.fcnt >> 16;
    (key.len() == FCNT_PREFIX.len() + 12 && half >= FROM_HALF).then_some((half, kept.keys))
}

/// The entries of the file beside a database moved aside (`aside`) that `kept` (the fresh
/// database's counter under a key) lacks or holds behind under the same keys: sled may have
/// lost flushed writes, the file is synced on its own.
pub(super) fn ahead_of(aside: &Path, kept: impl Fn(&[u8]) -> Option<Vec<u8>>) -> Vec<StateEntry> {
    let entries = load(aside).unwrap_or_else(|why| {
        log::warn!(
            "buffer: {} cannot be read ({why}): its counters are not carried; a device past 2^20 frames that fails its MIC check needs fcnt_from",
            aside.join(FILE).display()
        );
        None
    });
    entries
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| kept(k).is_none_or(|have| ahead(k, v, &have)))
        .collect()
}

/// `value` is a counter ahead of `than` for the same keys, or where either was kept without
/// their print (both under `key`).
fn ahead(key: &[u8], value: &[u8], than: &[u8]) -> bool {
    match (kept_fcnt(key, value), kept_fcnt(key, than)) {
        (Some(v), Some(t)) => {
            let same_keys = v.keys.is_none() || t.keys.is_none() || v.keys == t.keys;
            same_keys && v.fcnt > t.fcnt
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Magic, number of entries, each entry (key and value, each after its length as one byte),
/// CRC-32 of all before it.
fn encode<'a>(entries: impl ExactSizeIterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (k, v) in entries {
        for part in [k, v] {
            debug_assert!(part.len() <= usize::from(u8::MAX));
            bytes.push(part.len() as u8);
            bytes.extend_from_slice(part);
        }
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<Vec<StateEntry>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_be_bytes() != crc || body.get(..4)? != MAGIC {
        return None;
    }
    let count = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?);
    let mut rest = &body[8..];
    let mut part = || {
        let (len, after) = rest.split_first()?;
        let (part, after) = after.split_at_checked(usize::from(*len))?;
        rest = after;
        Some(part.to_vec())
    };
    let entries = (0..count)
        .map(|_| Some((part()?, part()?)))
        .collect::<Option<Vec<_>>>()?;
    rest.is_empty().then_some(entries)
}

/// Write `bytes` as the file in `db_dir`, durably; returns the number of syncs (2: the file
/// and the directory).
pub(super) fn write(db_dir: &Path, bytes: &[u8]) -> io::Result<u64> {
    crate::files::replace_durably(&db_dir.join(FILE), bytes)?;
    Ok(2)
}

/// The counters a start without sled reads for the buffer in `buffer_dir`: its database's
/// file, or, where that has none, those of the databases it replaced: a salvage or a
/// rebuild cut short before the fresh database's first flush wrote one (the card failing
/// that flush) left it beside a database moved aside, or in the rebuild's `.old` or `.new`.
/// Of those, each session's highest counter: which was last is not told by the names (a
/// clock set back by a power cut stamps a later move aside with an earlier time). Such a
/// counter is never ahead of its device's but for a device that restarted its counter, or
/// was given new keys, since.
pub fn read_for(buffer_dir: &Path) -> Vec<StateEntry> {
    let db = buffer_dir.join(DB_DIR);
    if let Some(own) = read(&db) {
        return own;
    }
    let mut highest = BTreeMap::<Vec<u8>, Vec<u8>>::new();
    let replaced = [with_suffix(&db, ".old"), with_suffix(&db, ".new")]
        .into_iter()
        .chain(aside_dirs(buffer_dir));
    for (k, v) in replaced.filter_map(|dir| read(&dir)).flatten() {
        let higher = highest.get(&k).is_none_or(|have| {
            kept_fcnt(&k, &v).map(|c| c.fcnt) > kept_fcnt(&k, have).map(|c| c.fcnt)
        });
        if higher {
            highest.insert(k, v);
        }
    }
    highest.into_iter().collect()
}

/// The counters the file in `db_dir` holds, as state entries; `None` when it is missing,
/// cannot be read or is damaged (said in the log, but for a missing one).
fn read(db_dir: &Path) -> Option<Vec<StateEntry>> {
    load(db_dir).unwrap_or_else(|why| {
        log::warn!(
            "buffer: {} cannot be read ({why}): a device past 2^20 frames fails its MIC check until the buffer opens again",
            db_dir.join(FILE).display()
        );
        None
    })
}

/// The file's entries (`None`: there is none), or why it cannot be read.
fn load(db_dir: &Path) -> Result<Option<Vec<StateEntry>>, String> {
    let read = File::open(db_dir.join(FILE)).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_LEN).read_to_end(&mut bytes).map(|_| bytes)
    });
    match read {
        Ok(bytes) => decode(&bytes).map(Some).ok_or_else(|| "damaged".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame counter key of session `n`.
    fn key(n: u8) -> Vec<u8> {
        [b"fcnt/".as_slice(), &[n; 12]].concat()
    }

    /// A counter's value, kept with the keys' print `print`.
    fn value_of(fcnt: u32, print: u8) -> Vec<u8> {
        [fcnt.to_be_bytes(), [7; 4], [print; 4]].concat()
    }

    fn value(fcnt: u32) -> Vec<u8> {
        value_of(fcnt, 9)
    }

    /// Writes the file each time `far` hands one out; returns whether it did.
    fn flush(far: &mut FarCounters, dir: &Path) -> bool {
        far.take_file()
            .map(|bytes| write(dir, &bytes).unwrap())
            .is_some()
    }

    #[test]
    fn the_file_is_written_when_it_would_no_longer_find_a_counter() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (key(1), key(2));
        let mut far = FarCounters::open(Vec::new(), dir.path());
        assert!(!flush(&mut far, dir.path()), "nothing far, nothing kept");
        assert!(!dir.path().join(FILE).exists());
        far.set(&a, &value(0x000B_FFFF));
        assert!(!flush(&mut far, dir.path()), "well within the first search");
        far.set(&a, &value(0x000C_0000));
        assert!(flush(&mut far, dir.path()), "four halves from 2^20");
        assert_eq!(
            read(dir.path()),
            Some(vec![(a.clone(), value(0x000C_0000))])
        );
        far.set(&a, &value(0x000C_8000));
        assert!(!flush(&mut far, dir.path()), "within its half");
        far.set(&b, &value(0x0400_0001));
        far.set(&a, &value(0x000D_0000));
        assert!(flush(&mut far, dir.path()), "a new one, a rollover");
        assert_eq!(
            read(dir.path()),
            Some(vec![
                (a.clone(), value(0x000D_0000)),
                (b.clone(), value(0x0400_0001))
            ])
        );
        far.set(&b, &value_of(0x0400_0002, 1));
        assert!(flush(&mut far, dir.path()), "other keys");
        far.set(&b, &value_of(0x0400_0003, 1)[..8]);
        assert!(flush(&mut far, dir.path()), "kept without a print");
        far.remove(&b);
        assert!(flush(&mut far, dir.path()), "one removed");
        far.set(&a, b"not a counter");
        assert!(
            flush(&mut far, dir.path()),
            "one set to what is not a counter"
        );
        assert_eq!(read(dir.path()), Some(Vec::new()));
        far.set(&a, &value(0x000D_0001));
        assert!(flush(&mut far, dir.path()));
        far.set(&a, &value(3));
        assert!(
            flush(&mut far, dir.path()),
            "set back into the first search"
        );
        assert_eq!(read(dir.path()), Some(Vec::new()));
        far.set(
            &[b"fcnt/".as_slice(), &[3; 13]].concat(),
            &value(0x0030_0000),
        );
        assert!(!flush(&mut far, dir.path()), "a key of another length");
    }

    /// What a database moved aside left in the file is taken where the fresh one lacks the
    /// counter, or holds it behind under the same keys.
    #[test]
    fn the_counters_ahead_in_a_file_moved_aside_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let entries: BTreeMap<_, _> = [
            (key(1), value(0x0020_0005)),
            (key(2), value(0x0020_0005)),
            (key(3), value(0x0020_0005)),
            (key(4), value(0x0020_0005)),
            (key(5), value(0x0020_0005)),
        ]
        .into_iter()
        .collect();
        write(dir.path(), &encode(entries.iter())).unwrap();
        let fresh = |k: &[u8]| match k[5] {
            1 => None,
            2 => Some(value(0x0020_0004)),
            3 => Some(value(0x0020_0006)),
            4 => Some(value_of(0x0020_0004, 1)),
            _ => Some(value(0x0020_0004)[..8].to_vec()),
        };
        let taken: Vec<_> = ahead_of(dir.path(), fresh)
            .into_iter()
            .map(|(k, _)| k[5])
            .collect();
        assert_eq!(
            taken,
            [1, 2, 5],
            "missing, behind, behind without a print; not ahead, nor other keys"
        );
        assert_eq!(ahead_of(&dir.path().join("none"), fresh), []);
    }

    #[test]
    fn an_open_writes_the_file_only_when_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let state = vec![(key(1), value(0x0030_0001)), (key(2), value(7))];
        let mut far = FarCounters::open(state.clone(), dir.path());
        assert!(flush(&mut far, dir.path()), "no file yet");
        let mut far = FarCounters::open(state.clone(), dir.path());
        assert!(!flush(&mut far, dir.path()), "the file finds them");
        let mut on = state.clone();
        on[0].1 = value(0x0031_0001);
        let mut far = FarCounters::open(on, dir.path());
        assert!(flush(&mut far, dir.path()), "a rollover the file missed");
        std::fs::write(dir.path().join(FILE), b"damaged").unwrap();
        let mut far = FarCounters::open(Vec::new(), dir.path());
        assert!(far.stale());
        assert!(flush(&mut far, dir.path()), "a damaged file, rewritten");
        assert!(!far.stale());
    }

    proptest::proptest! {
        /// Any bytes are read without a panic; what is written is read back.
        #[test]
        fn any_bytes_are_read_and_what_is_written_is_read_back(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            entries in proptest::collection::btree_map(
                proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                0..8,
            ),
        ) {
            let _ = decode(&bytes);
            let written = encode(entries.iter());
            proptest::prop_assert_eq!(decode(&written), Some(entries.into_iter().collect()));
        }
    }

    #[test]
    fn a_damaged_or_foreign_file_holds_no_counters() {
        let dir = tempfile::tempdir().unwrap();
        let (k, v) = (key(1), value(0x0030_0001));
        let good = encode([(&k, &v)].into_iter());
        write(dir.path(), &good).unwrap();
        assert_eq!(read(dir.path()).map(|e| e.len()), Some(1));
        for bad in [
            good[..good.len() - 1].to_vec(),
            [&good[..9], &[0xff], &good[10..]].concat(),
            b"hgm1 mark".to_vec(),
            Vec::new(),
        ] {
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            assert_eq!(read(dir.path()), None, "{bad:?}");
        }
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
