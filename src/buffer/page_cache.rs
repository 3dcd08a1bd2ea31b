//! What a refused write leaves in the page cache. When the card refuses a write (a failing
//! SD card), Linux keeps the pages it could not write in the page cache, marked clean, and
//! never writes them again: the fsync that met the error fails (hubgate stops), every later
//! one succeeds without them, and reads return them until they are evicted. The next start
//! would read records and a mark that are not on the card, find them whole, sync them (a sync
//! that writes nothing) and acknowledge their sources' redeliveries as copies of durable
//! records: all lost at the next power cut. So before the buffer is opened, each of its files
//! is synced (pages the last run wrote and the kernel has not written yet go to the card, or
//! fail to) and its cached pages dropped: what the start reads is the card's.

use std::os::fd::AsRawFd;
use std::path::Path;

/// Sync every file under `dir` and drop its cached pages. Returns the number of files that
/// could not be synced or whose pages could not be dropped.
pub fn drop_cached(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut failed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => failed += drop_cached(&path),
            Ok(t) if t.is_file() => {
                if let Err(e) = drop_file(&path) {
                    log::debug!(
                        "buffer: syncing {} and dropping its cached pages: {e}",
                        path.display()
                    );
                    failed += 1;
                }
            }
            _ => {}
        }
    }
    failed
}

/// Only clean pages are dropped, so the file is synced first. A sync that fails (the card
/// still refuses writes, or reports the last run's error once more) leaves what it could not
/// write clean, and that is dropped all the same.
fn drop_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    let synced = file.sync_all();
    // SAFETY: the descriptor is open for the call; the advice only affects the page cache.
    let e = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    synced?;
    match e {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}
