//! What a refused write leaves in the page cache. When the card refuses a write (a failing
//! SD card), Linux keeps the pages it could not write in the page cache, marked clean, and
//! never writes them again: the fsync that met the error fails (hubgate stops), every later
//! one succeeds without them, and reads return them until they are evicted. The next start
//! would read records and a mark that are not on the card, find them whole, sync them (a sync
//! that writes nothing) and acknowledge their sources' redeliveries as copies of durable
//! records: all lost at the next power cut. So before the buffer is opened, each file the
//! open reads (the database directory, its segments wherever a link puts them, and the
//! buffer directory's own files) is synced (pages the last run wrote and the kernel has not
//! written yet go to the card, or fail to) and its cached pages dropped: what the start reads
//! is the card's.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What [`drop_cached`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Files (or directories) whose pages could not be dropped: what a failed write left
    /// in them may still be read as on the card.
    pub kept: usize,
    /// Files whose sync failed: an earlier write error reported once more (a run that
    /// failed reports it, to the next start if to nobody else), or the card still refusing
    /// writes. Their pages were dropped all the same.
    pub sync_failed: usize,
}

/// Sync the files directly in `buffer_dir` and every file under its database directory `db`
/// (following links to directories), and drop their cached pages.
pub fn drop_cached(buffer_dir: &Path, db: &Path) -> Dropped {
    let found = files(buffer_dir, db);
    let mut done = Dropped {
        kept: found.unlisted,
        ..Dropped::default()
    };
    for path in found.files {
        drop_file(&path, &mut done);
    }
    done
}

/// The files [`drop_cached`] drops.
#[derive(Default)]
struct Found {
    files: Vec<PathBuf>,
    /// Entries that could not be listed or looked at.
    unlisted: usize,
}

fn files(buffer_dir: &Path, db: &Path) -> Found {
    let mut found = Found::default();
    let mut seen = HashSet::new();
    walk(buffer_dir, false, &mut seen, &mut found);
    walk(db, true, &mut seen, &mut found);
    found
}

/// The files in `dir`, and in its directories too when `deep`. `seen` holds the directories
/// walked (device, inode), so a link back up is walked once.
fn walk(dir: &Path, deep: bool, seen: &mut HashSet<(u64, u64)>, found: &mut Found) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    if !seen.insert((meta.dev(), meta.ino())) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        log::debug!("buffer: listing {} to drop its cached pages", dir.display());
        found.unlisted += 1;
        return;
    };
    for entry in entries {
        let Ok(path) = entry.map(|e| e.path()) else {
            found.unlisted += 1;
            continue;
        };
        // Links followed: the segments may live on another disk.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() && deep => walk(&path, deep, seen, found),
            Ok(m) if m.is_file() => found.files.push(path),
            Ok(_) => {}
            Err(e) => {
                log::debug!("buffer: {}: {e}", path.display());
                found.unlisted += 1;
            }
        }
    }
}

/// Only clean pages are dropped, so the file is synced first. A sync that fails leaves what
/// it could not write clean, and that is dropped all the same.
fn drop_file(path: &Path, done: &mut Dropped) {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            log::debug!(
                "buffer: opening {} to drop its cached pages: {e}",
                path.display()
            );
            done.kept += 1;
            return;
        }
    };
    if let Err(e) = file.sync_all() {
        log::debug!("buffer: syncing {}: {e}", path.display());
        done.sync_failed += 1;
    }
    // SAFETY: the descriptor is open for the call; the advice only affects the page cache.
    let e = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if e != 0 {
        log::debug!(
            "buffer: dropping the cached pages of {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(e)
        );
        done.kept += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the open reads is visited once: the buffer directory's own files, the
    /// database's, and segments behind a link to another directory (a link back up too is
    /// walked once); a database moved aside beside it is not.
    #[test]
    fn every_file_the_open_reads_is_synced_and_dropped_once() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("buffer");
        let db = buffer.join("sled");
        let elsewhere = dir.path().join("usb");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::create_dir_all(buffer.join("sled.broken-1")).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, db.join("values")).unwrap();
        std::os::unix::fs::symlink(&db, elsewhere.join("up")).unwrap();
        for f in [
            buffer.join("lock"),
            buffer.join("sled.broken-1/db"),
            db.join("db"),
            db.join("hubgate-flushed"),
            elsewhere.join("00000001.seg"),
        ] {
            std::fs::write(f, b"x").unwrap();
        }
        assert_eq!(drop_cached(&buffer, &db), Dropped::default());
        let found = files(&buffer, &db);
        let mut names: Vec<String> = (found.files.iter())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["00000001.seg", "db", "hubgate-flushed", "lock"]);
        assert_eq!(found.unlisted, 0);
    }
}
