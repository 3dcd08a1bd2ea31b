//! A power-cut file system: LazyFS (a FUSE file system; github.com/dsrhaslab/lazyfs) keeps
//! written file data in its own cache until the file is fsynced, and `lazyfs::clear-cache`
//! drops everything not synced, so the files look as they would after the power went.
//! Metadata (creations, renames) goes straight to the backing directory and is not modelled.
//!
//! The binary comes from `$HUBGATE_LAZYFS`, else `/opt/lazyfs/bin/lazyfs`;
//! `.ci/services/ensure-lazyfs.sh` builds it. Mounting needs root and `/dev/fuse`.
//! LazyFS has no `statfs`: `statvfs()` reports 0 bytes free, so a hubgate buffer on it needs
//! `min_free = 0`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Service, POLL, START_TIMEOUT};

/// LazyFS's page cache, allocated in full at start. Writes beyond it would go straight to
/// the backing files and survive a clear, so it is sized well above what a test writes.
const CACHE: &str = "256mb";
/// The cache of [`LazyFs::mount_large`].
const LARGE_CACHE: &str = "2gb";
/// How long LazyFS may take to confirm a clear.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(30);

pub fn lazyfs_binary() -> PathBuf {
    std::env::var_os("HUBGATE_LAZYFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/lazyfs/bin/lazyfs"))
}

pub struct LazyFs {
    service: Service,
    mount: PathBuf,
    commands: PathBuf,
    /// Lines LazyFS writes to its completion FIFO.
    done: mpsc::Receiver<String>,
}

impl LazyFs {
    /// Mount LazyFS at `dir/lazy`, backed by `dir/lazy.root`; its files live in `dir`.
    pub fn mount(dir: &Path) -> LazyFs {
        LazyFs::mount_with(dir, CACHE)
    }

    /// [`LazyFs::mount`] with a cache for large backlogs (2 GB of memory).
    pub fn mount_large(dir: &Path) -> LazyFs {
        LazyFs::mount_with(dir, LARGE_CACHE)
    }

    fn mount_with(dir: &Path, cache: &str) -> LazyFs {
        let binary = lazyfs_binary();
        assert!(
            binary.exists(),
            "no LazyFS at {} (set HUBGATE_LAZYFS or run .ci/services/ensure-lazyfs.sh)",
            binary.display()
        );
        let (mount, root) = (dir.join("lazy"), dir.join("lazy.root"));
        let (commands, done_path) = (dir.join("lazyfs.fifo"), dir.join("lazyfs.done"));
        for d in [&mount, &root] {
            std::fs::create_dir_all(d).unwrap();
        }
        let c = std::ffi::CString::new(done_path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        // Read and write: opening does not wait for a writer, and LazyFS, which blocks until
        // the FIFO has a reader, always finds one.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&done_path)
            .unwrap();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let config = dir.join("lazyfs.toml");
        std::fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
                 [cache]\napply_eviction=false\n\
                 [cache.simple]\ncustom_size=\"{cache}\"\nblocks_per_page=1\n\
                 [filesystem]\nlog_all_operations=false\nlogfile=\"{}\"\n",
                commands.display(),
                done_path.display(),
                dir.join("lazyfs.ops.log").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&binary);
        cmd.arg(&mount)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", root.display()))
            .arg("-f");
        let mut service = Service::spawn("lazyfs", cmd, dir.join("lazyfs.log"));
        let deadline = Instant::now() + START_TIMEOUT;
        while !mounted(&mount) {
            if let Some(Ok(Some(status))) = service.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "lazyfs exited ({status}) before mounting:\n{}",
                    super::log_tail(&service.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "lazyfs did not mount {} within {START_TIMEOUT:?}",
                mount.display()
            );
            std::thread::sleep(POLL);
        }
        LazyFs {
            service,
            mount,
            commands,
            done,
        }
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The power goes: every write not fsynced is gone. Call it once the writer is dead.
    pub fn power_cut(&self) {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.commands)
            .unwrap();
        fifo.write_all(b"lazyfs::clear-cache\n").unwrap();
        drop(fifo);
        let deadline = Instant::now() + CLEAR_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(line) if line.trim() == "finished::clear-cache" => return,
                Ok(_) => continue,
                Err(_) => panic!(
                    "lazyfs did not confirm the clear within {CLEAR_TIMEOUT:?}:\n{}",
                    super::log_tail(&self.service.log)
                ),
            }
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mount)
            .status();
        if mounted(&self.mount) {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

/// Whether a FUSE file system is mounted at `path`.
fn mounted(path: &Path) -> bool {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4) == Some(&want.as_ref()) && l.contains("fuse")
        })
    })
}
