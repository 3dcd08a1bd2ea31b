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
        let mut syncs = files.sync()?;
        File::open(dir.join(CONF))?.sync_all()?;
        for d in [dir, dir.parent().unwrap_or(Path::new("."))] {
            sync_dir(d)?;
        }
        syncs += 3;
        Ok((files, syncs))
    }

    /// Make what sled's last flush wrote durable: its log and blob files it added since the
    /// last sync. Returns the number of syncs it took (1 unless blobs were added).
    /// Put `log` in place of the log's handle; the old one back (a test's failing sync).
    #[cfg(test)]
    pub fn swap_log(&mut self, log: File) -> File {
        std::mem::replace(&mut self.log, log)
    }

    pub fn sync(&mut self) -> io::Result<u64> {
        self.log.sync_data()?;
        let mut syncs = 1;
        let mut present = BTreeSet::new();
        for entry in std::fs::read_dir(&self.blob_dir)? {
            let name = entry?.file_name();
            if !self.blobs.contains(&name) {
                File::open(self.blob_dir.join(&name))?.sync_all()?;
                syncs += 1;
            }
            present.insert(name);
        }
        if present.iter().any(|n| !self.blobs.contains(n)) {
            sync_dir(&self.blob_dir)?;
            syncs += 1;
        }
        // sled deletes blobs it no longer needs: forget those.
        self.blobs = present;
        Ok(syncs)
    }
}

/// Make the entries of directory `dir` (creations, renames) survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
