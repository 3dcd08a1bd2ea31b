//! The flushed mark: the highest sequence number hubgate has flushed, kept in a file beside
//! sled so that a database which lost flushed writes is noticed (see `sled_store`).
//!
//! It has to survive the power cut it is there to detect, so it is written in place and
//! synced, never replaced by a rename: two slots of [`SLOT`] bytes, each holding a
//! generation number, the mark and a CRC-32, written alternately. A write torn by a power cut
//! damages one slot at most; the other still holds the previous mark. Reading takes the
//! valid slot with the higher generation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

const SLOT: usize = 24;
const MAGIC: [u8; 4] = *b"hgm1";

pub struct Mark {
    file: File,
    generation: u64,
    value: Option<u64>,
}

impl Mark {
    /// Open (or create) the mark file at `path` and read the mark it holds.
    pub fn open(path: &Path) -> io::Result<Mark> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::files::PRIVATE_FILE)
            .open(path)?;
        // Its two slots, whatever length a damaged file system gives it.
        let mut bytes = Vec::new();
        (&file).take(2 * SLOT as u64).read_to_end(&mut bytes)?;
        let best = bytes
            .chunks(SLOT)
            .take(2)
            .filter_map(parse_slot)
            .max_by_key(|(generation, _)| *generation);
        if best.is_none() && !bytes.is_empty() {
            log::warn!(
                "buffer: {} holds no readable mark: a loss of flushed records cannot be detected this time",
                path.display()
            );
        }
        Ok(Mark {
            file,
            generation: best.map_or(0, |(g, _)| g),
            value: best.map(|(_, v)| v),
        })
    }

    pub fn value(&self) -> Option<u64> {
        self.value
    }

    /// Write `seq` over the older slot and sync it; returns the number of syncs (1).
    pub fn set(&mut self, seq: u64) -> io::Result<u64> {
        let generation = self.generation + 1;
        let mut slot = [0u8; SLOT];
        slot[..4].copy_from_slice(&MAGIC);
        slot[4..12].copy_from_slice(&generation.to_be_bytes());
        slot[12..20].copy_from_slice(&seq.to_be_bytes());
        let crc = crc32fast::hash(&slot[..20]);
        slot[20..].copy_from_slice(&crc.to_be_bytes());
        self.file
            .write_all_at(&slot, (generation % 2) * SLOT as u64)?;
        self.file.sync_data()?;
        self.generation = generation;
        self.value = Some(seq);
        Ok(1)
    }
}

/// (generation, mark) of an intact slot.
fn parse_slot(slot: &[u8]) -> Option<(u64, u64)> {
    if slot.len() != SLOT || slot[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(slot[20..].try_into().ok()?);
    if crc32fast::hash(&slot[..20]) != crc {
        return None;
    }
    let generation = u64::from_be_bytes(slot[4..12].try_into().ok()?);
    let seq = u64::from_be_bytes(slot[12..20].try_into().ok()?);
    Some((generation, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark");
        let mut m = Mark::open(&path).unwrap();
        assert_eq!(m.value(), None);
        for seq in [5, 9, 12] {
            m.set(seq).unwrap();
        }
        drop(m);
        assert_eq!(Mark::open(&path).unwrap().value(), Some(12));
        // Generation 3 went to the second slot; tear it: the first one (9) remains.
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * SLOT);
        bytes[SLOT + 15] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut m = Mark::open(&path).unwrap();
        assert_eq!(m.value(), Some(9));
        // The next write goes over the damaged slot, not over the good one.
        m.set(20).unwrap();
        drop(m);
        assert_eq!(Mark::open(&path).unwrap().value(), Some(20));
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(Mark::open(&path).unwrap().value(), None);
    }

    /// A mark is taken only once it is synced: one whose sync fails is an error, and the
    /// mark held stays the one on disk (a power cut could take the unsynced one back, and a
    /// later open would then miss a loss of the records it claims).
    #[test]
    fn a_mark_whose_sync_fails_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mark::open(&dir.path().join("mark")).unwrap();
        m.set(5).unwrap();
        // /dev/null takes the write and refuses the sync (EINVAL), as a failing disk would.
        m.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        let e = m.set(9).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert_eq!((m.value(), m.generation), (Some(5), 1));
    }
}
