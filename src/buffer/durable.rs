//! sled's files made durable by hubgate. sled 0.34.7's `flush()` writes its log with
//! `sync_file_range(2)` and never `fsync`s it: that flushes neither the disk's write cache
//! nor a grown file's new size, and its man page promises nothing after a crash (on a
//! file system that drops unsynced data at a power cut, every buffered record was gone
//! after each cut). sled also creates its config file, blob files and directories without
//! syncing them. [`SledFiles`] keeps the log open and syncs it, with any new blob files,
//! after each flush an acknowledgement rests on.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

pub use crate::files::sync_dir;

/// sled's layout inside a database directory.
const LOG: &str = "db";
const CONF: &str = "conf";
const BLOBS: &str = "blobs";

pub struct SledFiles {
    blob_dir: PathBuf,
    log: File,
    /// Blob files already synced (sled writes one per large item and never rewrites it).
    blobs: BTreeSet<OsString>,
}

impl SledFiles {
    /// After sled opened (perhaps created) the database in `dir`: sync everything it may have
    /// created, down to the directory entries, so a new database survives a power cut whole.
    /// Returns the files and the number of syncs it took.
    pub fn open(dir: &Path) -> io::Result<(SledFiles, u64)> {
        let log = OpenOptions::new().write(true).open(dir.join(LOG))?;
        let mut files = SledFiles {
            blob_dir: dir.join(BLOBS),
            log,
            blobs: BTreeSet::new(),
        };
        let mut syncs = files.sync(files.blobs_to_sync()?)?;
        File::open(dir.join(CONF))?.sync_all()?;
        for d in [dir, dir.parent().unwrap_or(Path::new("."))] {
            sync_dir(d)?;
        }
        syncs += 3;
        Ok((files, syncs))
    }

    /// Put `log` in place of the log's handle; the old one back (a test's failing sync).
    #[cfg(test)]
    pub fn swap_log(&mut self, log: File) -> File {
        std::mem::replace(&mut self.log, log)
    }

    /// The blob files a flush starting now has to sync. Called on the thread that writes to
    /// sled and never while that thread is inside sled: sled writes a blob whole on the
    /// writing thread before the call that made it returns, so every blob listed is
    /// complete. One written later is the next flush's to count (listed by a flush thread, it
    /// could be half written, synced so, and then skipped by the flush that covers it).
    pub fn blobs_to_sync(&self) -> io::Result<Blobs> {
        let mut blobs = Blobs::default();
        for entry in std::fs::read_dir(&self.blob_dir)? {
            let name = entry?.file_name();
            if !self.blobs.contains(&name) {
                blobs.new.push(name.clone());
            }
            blobs.present.insert(name);
        }
        Ok(blobs)
    }

    /// Make what sled's last flush wrote durable: its blobs, then the log that points at
    /// them. Counted as synced once all of it is: only the `blobs` listed before that flush
    /// started ([`SledFiles::blobs_to_sync`]). Those sled wrote since are synced too but not
    /// counted: the flush may have made their log entries durable (sled writes a blob whole
    /// before its entry's reservation ends, and its flush waits for that), while one still
    /// being written is synced again by the next flush. This narrows the window in which a
    /// durable entry points at an unsynced blob; sled's own log writes leave one open
    /// (docs/durability.md, item 1). Returns the number of syncs it took (1 unless there were
    /// blobs to sync).
    pub fn sync(&mut self, blobs: Blobs) -> io::Result<u64> {
        let listing = |e| step("listing the blob directory", e);
        let mut late = Vec::new();
        for entry in std::fs::read_dir(&self.blob_dir).map_err(listing)? {
            let name = entry.map_err(listing)?.file_name();
            if !self.blobs.contains(&name) && !blobs.present.contains(&name) {
                late.push(name);
            }
        }
        let mut syncs = 0;
        for name in blobs.new.iter().chain(&late) {
            let blob = |e| step(&format!("syncing blob {name:?}"), e);
            match File::open(self.blob_dir.join(name)) {
                Ok(file) => file.sync_all().map_err(blob)?,
                // sled deleted it meanwhile (it no longer needs it): nothing to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(blob(e)),
            }
            syncs += 1;
        }
        if syncs > 0 {
            sync_dir(&self.blob_dir).map_err(|e| step("syncing the blob directory", e))?;
            syncs += 1;
        }
        self.log
            .sync_data()
            .map_err(|e| step("syncing the log", e))?;
        // sled deletes blobs it no longer needs: forget those.
        self.blobs = blobs.present;
        Ok(syncs + 1)
    }

    /// The blob files counted as synced.
    #[cfg(test)]
    pub fn synced_blobs(&self) -> &BTreeSet<OsString> {
        &self.blobs
    }
}

/// sled's blob files when a flush was prepared: those a flush has to sync, and all of them.
#[derive(Default)]
pub struct Blobs {
    new: Vec<OsString>,
    present: BTreeSet<OsString>,
}

impl Blobs {
    /// The names of the blob files not synced yet.
    #[cfg(test)]
    pub fn new_names(&self) -> &[OsString] {
        &self.new
    }
}

/// `e` with the step of a sync that failed in front of it: an operator sees which file.
pub fn step(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
