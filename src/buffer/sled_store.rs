//! sled-backed [`Store`]: survives kill -9 and power cuts once flushed.
//!
//! Keys are big-endian sequence numbers so sled's order is arrival order. sled's own
//! periodic flush is off: hubgate flushes when it must (before acknowledging a source), so
//! an idle or healthy gateway does not write to its SD card at all.

use std::path::{Path, PathBuf};

use super::{BufferError, Store};

pub struct SledStore {
    db: sled::Db,
    records: sled::Tree,
    dead: sled::Tree,
    count: u64,
    bytes: u64,
}

fn err(e: sled::Error) -> BufferError {
    BufferError::Storage(e.to_string())
}

impl SledStore {
    /// Open the database at `dir`. One that will not open is moved aside (loudly) and a
    /// fresh one started: a damaged card must not crash-loop the agent.
    pub fn open(dir: &Path) -> Result<SledStore, BufferError> {
        match Self::open_inner(dir) {
            Ok(s) => Ok(s),
            Err(e) if dir.exists() && !is_busy(&e) => {
                let aside = aside_name(dir);
                log::error!(
                    "buffer database {} will not open ({e}); moved to {} and starting a fresh one",
                    dir.display(),
                    aside.display()
                );
                std::fs::rename(dir, &aside).map_err(|e| {
                    BufferError::Storage(format!("moving {} aside: {e}", dir.display()))
                })?;
                Self::open_inner(dir)
                    .map_err(|e| BufferError::Storage(format!("{}: {e}", dir.display())))
            }
            Err(e) => Err(BufferError::Storage(format!("{}: {e}", dir.display()))),
        }
    }

    fn open_inner(dir: &Path) -> Result<SledStore, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(None)
            .open()?;
        let records = db.open_tree("records")?;
        let dead = db.open_tree("dead_letter")?;
        let (mut count, mut bytes) = (0, 0);
        for item in records.iter() {
            let (_, v) = item?;
            count += 1;
            bytes += v.len() as u64;
        }
        Ok(SledStore {
            db,
            records,
            dead,
            count,
            bytes,
        })
    }
}

/// Errors that say "not now" (another hubgate holds it, no permission), not "damaged".
fn is_busy(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::PermissionDenied
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn aside_name(dir: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".broken-{stamp}"));
    PathBuf::from(name)
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl Store for SledStore {
    fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        let n = value.len() as u64;
        if let Some(old) = self.records.insert(seq.to_be_bytes(), value).map_err(err)? {
            self.bytes -= old.len() as u64;
            self.count -= 1;
        }
        self.count += 1;
        self.bytes += n;
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> Result<u64, BufferError> {
        let n = match self.records.remove(seq.to_be_bytes()).map_err(err)? {
            Some(v) => {
                self.count -= 1;
                v.len() as u64
            }
            None => 0,
        };
        self.bytes -= n;
        Ok(n)
    }

    fn scan(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, BufferError> {
        let iter = match after {
            Some(a) => self.records.range((
                std::ops::Bound::Excluded(a.to_be_bytes()),
                std::ops::Bound::Unbounded,
            )),
            None => self.records.iter(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for item in iter.take(limit) {
            let (k, v) = item.map_err(err)?;
            match seq_of(&k) {
                Some(seq) => out.push((seq, v.to_vec())),
                None => log::error!(
                    "buffer: ignoring a key of {} bytes that is not a sequence number",
                    k.len()
                ),
            }
        }
        Ok(out)
    }

    fn flush(&mut self) -> Result<(), BufferError> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn usage(&self) -> (u64, u64) {
        (self.count, self.bytes)
    }

    fn last_seq(&self) -> Option<u64> {
        let dead_last = self
            .dead
            .last()
            .ok()
            .flatten()
            .and_then(|(k, _)| seq_of(&k));
        let last = self
            .records
            .last()
            .ok()
            .flatten()
            .and_then(|(k, _)| seq_of(&k));
        last.max(dead_last)
    }

    fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        self.dead.insert(seq.to_be_bytes(), value).map_err(err)?;
        Ok(())
    }

    fn dead_letters(&self) -> u64 {
        self.dead.len() as u64
    }

    fn purge(&mut self) -> Result<u64, BufferError> {
        let n = self.count;
        self.records.clear().map_err(err)?;
        self.count = 0;
        self.bytes = 0;
        self.flush()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_in_order_with_usage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let mut s = SledStore::open(&path).unwrap();
            for seq in [3u64, 1, 2, 300] {
                s.insert(seq, vec![seq as u8; 10]).unwrap();
            }
            s.remove(2).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.usage(), (3, 30));
        let seqs: Vec<u64> = s
            .scan(None, 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(seqs, vec![1, 3, 300]);
        let after: Vec<u64> = s
            .scan(Some(1), 10)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after, vec![3, 300]);
        assert_eq!(s.last_seq(), Some(300));
    }

    #[test]
    fn a_locked_database_is_an_error_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _held = SledStore::open(&path).unwrap();
        let e = SledStore::open(&path).err().expect("second open must fail");
        assert!(e.to_string().contains("lock"), "{e}");
        assert!(path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unopenable_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"not a sled directory").unwrap();
        let s = SledStore::open(&path).unwrap();
        assert_eq!(s.usage(), (0, 0));
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("db.broken-"))
            .count();
        assert_eq!(aside, 1);
    }
}
