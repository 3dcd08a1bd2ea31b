//! A reserve of disk space held in the buffer directory (file `reserve`), for the buffer's own
//! use when another program takes the disk to its last byte.
//!
//! `min_free` keeps the buffer from filling the disk, but not others: on a disk full to the
//! last byte sled cannot even open (ENOSPC), nor flush the drain's removals, so the agent
//! would stop with its acknowledged backlog undelivered, though delivering it is what frees
//! the disk. So while there is room a file of [`BYTES`] is written with real blocks (not a
//! sparse file, which would free nothing) and synced; an open or a flush that finds less than
//! that free deletes it first, so sled opens and flushes, and the drain frees space. It is
//! made again at the start and after a drain, when the disk has room for it with as much
//! again and `min_free` left beside it (the room it gave back alone would be taken at once
//! again).
//!
//! The file holds no records: making or deleting it changes nothing of what a flush made
//! durable.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::disk;

/// The reserve's size: room for sled to open and for the flushes of a drain until the first
/// segment files of delivered records are deleted.
pub const BYTES: u64 = 8 << 20;
const FILE: &str = "reserve";
/// Where it is written before it is complete: a crash half-way leaves no short `reserve`.
const PARTIAL: &str = "reserve.new";

fn path(buffer_dir: &Path) -> PathBuf {
    buffer_dir.join(FILE)
}

/// Give the reserve back when less than [`BYTES`] is free on the buffer's disk (or the free
/// space cannot be asked for). Returns the bytes given back: 0 when there was none to give.
pub fn release_if_short(buffer_dir: &Path) -> u64 {
    release_unless(buffer_dir, disk::free(buffer_dir))
}

/// [`release_if_short`] with the disk's `free` space measured.
fn release_unless(buffer_dir: &Path, free: Option<u64>) -> u64 {
    if free.is_some_and(|f| f >= BYTES) {
        return 0;
    }
    let _ = std::fs::remove_file(buffer_dir.join(PARTIAL));
    let at = path(buffer_dir);
    let Ok(meta) = std::fs::metadata(&at) else {
        return 0;
    };
    match std::fs::remove_file(&at) {
        Ok(()) => meta.len(),
        Err(e) => {
            log::error!(
                "buffer: the disk is full and its reserve {} cannot be deleted: {e}",
                at.display()
            );
            0
        }
    }
}

/// Whether the reserve is there, whole.
pub fn present(buffer_dir: &Path) -> bool {
    std::fs::metadata(path(buffer_dir)).is_ok_and(|m| m.len() >= BYTES)
}

/// Make the reserve when it is missing and the disk has room for it with [`BYTES`] and
/// `min_free` left free beside it. Returns whether it was made.
pub fn keep(buffer_dir: &Path, min_free: u64) -> std::io::Result<bool> {
    if present(buffer_dir) {
        return Ok(false);
    }
    let need = BYTES.saturating_mul(2).saturating_add(min_free);
    if disk::free(buffer_dir).is_none_or(|f| f < need) {
        return Ok(false);
    }
    let partial = buffer_dir.join(PARTIAL);
    let made = write(&partial).and_then(|()| {
        std::fs::rename(&partial, path(buffer_dir))?;
        std::fs::File::open(buffer_dir)?.sync_all()
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    made.map(|()| true)
}

/// [`BYTES`] of allocated blocks at `at`, synced.
fn write(at: &Path) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::files::PRIVATE_FILE)
        .open(at)?;
    // SAFETY: a valid open descriptor; mode 0 allocates and extends the file.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, BYTES as libc::off_t) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(e);
        }
        // A file system without fallocate: zeros written take the blocks as well.
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..BYTES / chunk.len() as u64 {
            f.write_all(&chunk)?;
        }
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_reserve_is_made_with_real_blocks_and_given_back_only_when_short() {
        let dir = tempfile::tempdir().unwrap();
        let free = disk::free(dir.path()).unwrap();
        // Room for it and `min_free` but not for as much again beside it: none is made, or
        // the room an open gave back would be taken again at once. (Half a reserve of slack
        // either way for other writers on this disk.)
        assert!(!keep(dir.path(), free - 2 * BYTES + BYTES / 2).unwrap());
        assert!(!present(dir.path()));
        assert!(keep(dir.path(), 0).unwrap());
        let meta = std::fs::metadata(path(dir.path())).unwrap();
        assert_eq!(meta.len(), BYTES);
        assert!(
            meta.blocks() * 512 >= BYTES,
            "sparse: {} blocks",
            meta.blocks()
        );
        assert!(!dir.path().join(PARTIAL).exists());
        // Already there: nothing to do.
        assert!(!keep(dir.path(), 0).unwrap());
        // The disk has room: it stays.
        assert_eq!(release_if_short(dir.path()), 0);
        assert!(present(dir.path()));
    }

    #[test]
    fn a_disk_short_of_the_reserve_gets_it_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(release_unless(dir.path(), Some(0)), 0, "none to give");
        assert!(keep(dir.path(), 0).unwrap());
        std::fs::write(dir.path().join(PARTIAL), b"half").unwrap();
        assert_eq!(release_unless(dir.path(), Some(BYTES)), 0, "room: kept");
        assert!(present(dir.path()));
        assert_eq!(release_unless(dir.path(), Some(BYTES - 1)), BYTES);
        assert!(!path(dir.path()).exists());
        assert!(!dir.path().join(PARTIAL).exists());
        // Free space that cannot be asked for counts as short.
        assert!(keep(dir.path(), 0).unwrap());
        assert_eq!(release_unless(dir.path(), None), BYTES);
        assert!(!present(dir.path()));
    }
}
