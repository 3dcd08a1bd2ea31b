//! One hubgate (agent or `buffer` command) at a time per buffer directory: an exclusive
//! `flock` on `<buffer>/lock`, held for as long as a store is open there. sled's own lock
//! cannot serve: it is on a file inside the database directory, which a rebuild renames.
//! `hubgate doctor` asks the same lock whether an agent is running.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::BufferError;

/// How long a lock found held is tried again. A store this process just closed can leave it
/// held for a moment: a child another thread forked before the close shares the lock's open
/// file until it execs (the file is close-on-exec), which on a loaded machine takes a while.
/// Another hubgate holds it for longer, and is told so after this wait.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// The lock of a buffer directory, held until dropped (closing the file releases it).
pub struct BufferLock {
    _file: File,
}

impl BufferLock {
    /// Take the lock of `buffer_dir` (created if missing); [`BufferError::Locked`] when
    /// another process (or another open store in this one) holds it for longer than
    /// [`BUSY_WAIT`].
    pub fn take(buffer_dir: &Path) -> Result<BufferLock, BufferError> {
        Self::take_waiting(buffer_dir, || {})
    }

    /// [`BufferLock::take`], calling `busy` after each attempt that found the lock held.
    fn take_waiting(buffer_dir: &Path, busy: impl FnMut()) -> Result<BufferLock, BufferError> {
        let path = path(buffer_dir);
        let storage = |e: std::io::Error| {
            let hint = if super::disk::refuses_writes(&e) {
                format!(": {}", super::disk::Refusal::of(buffer_dir).hint())
            } else {
                String::new()
            };
            BufferError::Storage(format!("{}: {e}{hint}", path.display()))
        };
        crate::files::create_private_dir(buffer_dir).map_err(storage)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::files::PRIVATE_FILE)
            .open(&path)
            .map_err(storage)?;
        Self::lock_waiting(file, &path, busy)
    }

    /// The lock of a buffer directory on a file system that takes no writes (the agent
    /// running without its buffer, [`super::ReadOnlyStore`]): its lock file opened for
    /// reading, which `flock` locks all the same, so `hubgate doctor` sees the agent and a
    /// second one is refused. `None` without a lock file (none can be made), or on a file
    /// system shut down, which fails its reads too.
    pub fn take_read_only(buffer_dir: &Path) -> Result<Option<BufferLock>, BufferError> {
        let path = path(buffer_dir);
        match File::open(&path) {
            Ok(file) => Self::lock_waiting(file, &path, || {}).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(None),
            Err(e) => Err(lock_file_error(&path, e)),
        }
    }

    /// Lock `file`, the lock file at `path`, trying again for [`BUSY_WAIT`].
    fn lock_waiting(
        file: File,
        path: &Path,
        mut busy: impl FnMut(),
    ) -> Result<BufferLock, BufferError> {
        let deadline = Instant::now() + BUSY_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            match try_exclusive(&file) {
                Ok(true) => return Ok(BufferLock { _file: file }),
                Ok(false) if Instant::now() < deadline => {
                    busy();
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Ok(false) => {
                    return Err(BufferError::Locked(format!(
                        "{}: could not acquire lock: another hubgate uses this buffer",
                        path.display()
                    )))
                }
                Err(e) => return Err(lock_file_error(path, e)),
            }
        }
    }

    /// Whether someone holds the lock of `buffer_dir`. Creates nothing; without a lock file
    /// nobody does. Taken and let go at once when free.
    pub fn is_held(buffer_dir: &Path) -> Result<bool, BufferError> {
        let path = path(buffer_dir);
        let storage = |e| lock_file_error(&path, e);
        match File::open(&path) {
            Ok(file) => try_exclusive(&file).map(|taken| !taken).map_err(storage),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(storage(e)),
        }
    }
}

/// An error of the lock file at `path`.
fn lock_file_error(path: &Path, e: std::io::Error) -> BufferError {
    BufferError::Storage(format!("{}: {e}", path.display()))
}

fn path(buffer_dir: &Path) -> PathBuf {
    buffer_dir.join("lock")
}

/// `true`: `file` now holds the lock; `false`: someone else does.
pub(super) fn try_exclusive(file: &File) -> std::io::Result<bool> {
    // SAFETY: a valid open file descriptor; the lock goes with the file when it is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_keeps_others_out_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !BufferLock::is_held(dir.path()).unwrap(),
            "no lock file yet"
        );
        let lock = BufferLock::take(dir.path()).unwrap();
        assert!(BufferLock::is_held(dir.path()).unwrap());
        let e = BufferLock::take(dir.path()).err().expect("held");
        assert!(
            matches!(&e, BufferError::Locked(why) if why.contains("another hubgate")),
            "{e}"
        );
        drop(lock);
        assert!(!BufferLock::is_held(dir.path()).unwrap());
        BufferLock::take(dir.path()).expect("free again");
    }

    /// The buffer directory a `hubgate buffer` command makes (recover into a buffer not
    /// there yet) is private under the shell's usual umask 0022.
    #[test]
    fn a_buffer_directory_it_makes_is_private() {
        crate::files::run_under_umask_022(
            "buffer::lock::tests::a_buffer_directory_under_umask_022",
        );
    }

    #[test]
    #[ignore = "run by a_buffer_directory_it_makes_is_private"]
    fn a_buffer_directory_under_umask_022() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("state").join("buffer");
        let _lock = BufferLock::take(&buffer).unwrap();
        for d in [dir.path().join("state"), buffer] {
            assert_eq!(
                std::fs::metadata(&d).unwrap().mode() & 0o777,
                0o700,
                "{d:?}"
            );
        }
    }

    /// A lock let go while an open waits for it (as a forked child's copy is at its exec)
    /// is taken.
    #[test]
    fn a_lock_let_go_within_the_wait_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = Some(BufferLock::take(dir.path()).unwrap());
        let mut tries = 0;
        let lock = BufferLock::take_waiting(dir.path(), || {
            tries += 1;
            held = None;
        });
        assert!(lock.is_ok());
        assert_eq!(tries, 1);
    }

    /// What `hubgate doctor` relies on to say that an agent runs on a buffer.
    #[test]
    fn an_open_store_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::SledStore::open(dir.path()).unwrap();
        assert!(BufferLock::is_held(dir.path()).unwrap());
        drop(store);
        assert!(!BufferLock::is_held(dir.path()).unwrap());
    }
}
