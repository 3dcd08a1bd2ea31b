//! The frame counters a start without sled needs, in a small file beside it
//! (`hubgate-counters`, in the database directory).
//!
//! A card that failed a write takes none until it is checked at the next boot, and sled
//! cannot open a database it cannot write: such a start runs without the buffer
//! ([`super::ReadOnlyStore`]), its state in memory. A session with no counter finds its
//! device's by trying the upper halves `0..INITIAL_UPPER_HALVES` (FCnt below 2^20,
//! [`crate::lorawan::fcnt`]); a device past that is followed only by its kept counter, and
//! without it every frame would fail the MIC until the check: acknowledged (MQTT) or heard
//! once (UDP, serial), each such reading lost. So the counters at or past 2^20 are also
//! kept here, and a read-only start reads them ([`read`]).
//!
//! The file is rewritten only when it would no longer find them: a session got past 2^20,
//! moved to another upper half, or was dropped. A counter that went on within its half is
//! not rewritten: the search from a kept counter tries the rollovers ahead of it, so one
//! behind by less than a half finds the device all the same (frames between the file's
//! counter and the device's could pass as new: copies, not losses). Most gateways have no
//! such device and never write it. It is written by the flush that makes the
//! same counters durable in sled, after sled's own syncs, on the flush thread: a temporary
//! file synced, renamed over the old one, the directory synced.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::StateEntry;
use crate::lorawan::fcnt::INITIAL_UPPER_HALVES;

/// The file, inside the database directory (moved aside and rebuilt with it).
pub(super) const FILE: &str = "hubgate-counters";
const MAGIC: [u8; 4] = *b"hgc1";
/// The largest file read: 12-byte keys and values of at most 20, for 100,000 sessions.
const MAX_LEN: u64 = 4 << 20;

/// The counters at or past 2^20 among a state's frame counters, and whether the file
/// still finds them.
#[derive(Default)]
pub(super) struct FarCounters {
    /// Frame counter key (`fcnt/`, DevAddr, DevEUI) → its value, for each counter at or past
    /// 2^20.
    now: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Each of those counters' upper half when the file was last given to a flush: the file
    /// is behind when they differ (`None`: no file that can be read, or its flush failed).
    written: Option<BTreeMap<Vec<u8>, u32>>,
}

impl FarCounters {
    /// The far counters among the frame counters `fcnts`, and the file's, read from `db_dir`
    /// (one missing holds none; one that cannot be read is written by the next flush).
    pub(super) fn open(fcnts: Vec<StateEntry>, db_dir: &Path) -> FarCounters {
        let mut far = FarCounters::default();
        for (k, v) in fcnts {
            far.set(&k, &v);
        }
        far.written = match load(db_dir) {
            Ok(kept) => Some(halves(&kept.into_iter().collect())),
            // None kept: what a store that never had a far counter leaves.
            Err(None) => Some(BTreeMap::new()),
            Err(Some(_)) => None,
        };
        far
    }

    /// A frame counter entry was set.
    pub(super) fn set(&mut self, key: &[u8], value: &[u8]) {
        match upper_half(value) {
            Some(half) if half >= INITIAL_UPPER_HALVES => {
                self.now.insert(key.to_vec(), value.to_vec());
            }
            _ => {
                self.now.remove(key);
            }
        }
    }

    /// A frame counter entry was removed.
    pub(super) fn remove(&mut self, key: &[u8]) {
        self.now.remove(key);
    }

    /// The file no longer finds every far counter, or cannot be read.
    pub(super) fn behind(&self) -> bool {
        self.written.as_ref() != Some(&halves(&self.now))
    }

    /// The file to write when it is [`behind`](FarCounters::behind), taken as written: the
    /// flush that writes it, or, if that fails, the next one ([`FarCounters::unwritten`]).
    pub(super) fn take_file(&mut self) -> Option<Vec<u8>> {
        let now = halves(&self.now);
        if self.written.as_ref() == Some(&now) {
            return None;
        }
        self.written = Some(now);
        Some(encode(&self.now))
    }

    /// The flush given the file failed: the next one writes it again.
    pub(super) fn unwritten(&mut self) {
        self.written = None;
    }
}

/// The upper half of a frame counter value (its first four bytes: FCnt32).
fn upper_half(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?) >> 16)
}

/// Each counter's upper half, by its key.
fn halves(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeMap<Vec<u8>, u32> {
    entries
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), upper_half(v)?)))
        .collect()
}

/// Magic, number of entries, each entry (key and value, each after its length as one byte),
/// CRC-32 of all before it.
fn encode(entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (k, v) in entries {
        for part in [k, v] {
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

/// Write `bytes` as the file in `db_dir`, durably; returns the number of syncs (2).
pub(super) fn write(db_dir: &Path, bytes: &[u8]) -> io::Result<u64> {
    let new = db_dir.join(format!("{FILE}.new"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::files::PRIVATE_FILE)
        .open(&new)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&new, db_dir.join(FILE))?;
    super::durable::sync_dir(db_dir)?;
    Ok(2)
}

/// The far counters the file in `db_dir` holds, as state entries; none when it is missing,
/// cannot be read or is damaged (said in the log, but for a missing one).
pub fn read(db_dir: &Path) -> Vec<StateEntry> {
    match load(db_dir) {
        Ok(entries) => entries,
        Err(None) => Vec::new(),
        Err(Some(why)) => {
            log::warn!(
                "buffer: {} cannot be read ({why}): a device past 2^20 frames fails its MIC check until the buffer opens again",
                db_dir.join(FILE).display()
            );
            Vec::new()
        }
    }
}

/// The file's entries; `Err(None)` when there is none, else why it cannot be read.
fn load(db_dir: &Path) -> Result<Vec<StateEntry>, Option<String>> {
    let read = File::open(db_dir.join(FILE)).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_LEN).read_to_end(&mut bytes).map(|_| bytes)
    });
    match read {
        Ok(bytes) => decode(&bytes).ok_or_else(|| Some("damaged".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(fcnt: u32) -> Vec<u8> {
        let mut v = fcnt.to_be_bytes().to_vec();
        v.extend_from_slice(&[9; 16]);
        v
    }

    /// Writes the file each time `far` hands one out; returns whether it did.
    fn flush(far: &mut FarCounters, dir: &Path) -> bool {
        far.take_file()
            .map(|bytes| write(dir, &bytes).unwrap())
            .is_some()
    }

    #[test]
    fn the_file_is_written_when_it_would_no_longer_find_a_far_counter() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (b"fcnt/a".to_vec(), b"fcnt/b".to_vec());
        let mut far = FarCounters::open(Vec::new(), dir.path());
        assert!(!flush(&mut far, dir.path()), "nothing far, nothing kept");
        assert!(!dir.path().join(FILE).exists());
        far.set(&a, &value(0x000F_FFFF));
        assert!(!flush(&mut far, dir.path()), "found by the first search");
        far.set(&a, &value(0x0010_0000));
        assert!(flush(&mut far, dir.path()), "past 2^20");
        assert_eq!(read(dir.path()), [(a.clone(), value(0x0010_0000))]);
        far.set(&a, &value(0x0010_8000));
        assert!(!flush(&mut far, dir.path()), "within its half");
        far.set(&b, &value(0x0400_0001));
        far.set(&a, &value(0x0011_0000));
        assert!(flush(&mut far, dir.path()), "a new one, a rollover");
        assert_eq!(
            read(dir.path()),
            [
                (a.clone(), value(0x0011_0000)),
                (b.clone(), value(0x0400_0001))
            ]
        );
        far.remove(&b);
        assert!(flush(&mut far, dir.path()), "one dropped");
        far.set(&a, &value(3));
        assert!(flush(&mut far, dir.path()), "set back below 2^20");
        assert_eq!(read(dir.path()), []);

        far.set(&a, &value(0x0020_0000));
        assert!(far.take_file().is_some());
        far.unwritten();
        assert!(flush(&mut far, dir.path()), "its flush failed");
        assert!(!flush(&mut far, dir.path()));
    }

    #[test]
    fn an_open_writes_the_file_only_when_it_is_behind_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = vec![
            (b"fcnt/a".to_vec(), value(0x0030_0001)),
            (b"fcnt/b".to_vec(), value(7)),
        ];
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
        assert!(far.behind());
        assert!(flush(&mut far, dir.path()), "a damaged file, rewritten");
        assert!(!far.behind());
    }

    #[test]
    fn a_damaged_or_foreign_file_holds_no_counters() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = BTreeMap::new();
        entries.insert(b"fcnt/a".to_vec(), value(0x0030_0001));
        let good = encode(&entries);
        write(dir.path(), &good).unwrap();
        assert_eq!(read(dir.path()).len(), 1);
        for bad in [
            good[..good.len() - 1].to_vec(),
            [&good[..9], &[0xff], &good[10..]].concat(),
            b"hgm1 mark".to_vec(),
            Vec::new(),
        ] {
            std::fs::write(dir.path().join(FILE), &bad).unwrap();
            assert_eq!(read(dir.path()), [], "{bad:?}");
        }
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        assert_eq!(read(dir.path()), []);
    }
}
