//! A power-cut file system: LazyFS (a FUSE file system; github.com/dsrhaslab/lazyfs) keeps
//! written file data in its own cache until the file is fsynced, and `lazyfs::clear-cache`
//! drops everything not synced, so the files look as they would after the power went.
//! Metadata (creations, renames) goes straight to the backing directory and is not modelled.
//! A cut can also be placed at one operation: LazyFS armed to die before the first write to
//! a file whose path matches, then mounted again on the same backing directory (`reboot`).
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
/// How long LazyFS may take to confirm a clear or log a command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub fn lazyfs_binary() -> PathBuf {
    std::env::var_os("HUBGATE_LAZYFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/lazyfs/bin/lazyfs"))
}

pub struct LazyFs {
    service: Service,
    /// The directory its files live in, and its cache, for [`LazyFs::reboot`].
    dir: PathBuf,
    cache: &'static str,
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

    fn mount_with(dir: &Path, cache: &'static str) -> LazyFs {
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
        // One an earlier mount made: its reader still holds it.
        if done_path.exists() {
            std::fs::remove_file(&done_path).unwrap();
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
            dir: dir.to_path_buf(),
            cache,
            mount,
            commands,
            done,
        }
    }

    /// The machine comes back after LazyFS died: the dead mount is let go and LazyFS mounted
    /// again on the same backing directory, which holds what was fsynced and every file
    /// created or renamed.
    pub fn reboot(self) -> LazyFs {
        let (dir, cache) = (self.dir.clone(), self.cache);
        drop(self);
        assert!(!mounted(&dir.join("lazy")), "the dead mount is still there");
        LazyFs::mount_with(&dir, cache)
    }

    /// The directory that holds what the disk has (the mount's `path` there).
    pub fn backing(&self, path: &Path) -> PathBuf {
        let inside = path.strip_prefix(&self.mount).unwrap_or_else(|_| {
            panic!(
                "{} is not on the mount {}",
                path.display(),
                self.mount.display()
            )
        });
        self.dir.join("lazy.root").join(inside)
    }

    /// Arm a power cut: LazyFS kills itself before the first write to a file whose path
    /// matches `regex` (ECMAScript, matched anywhere in the path), before its data reaches
    /// the backing file. Returns once it is armed: LazyFS answers nothing to it and logs it
    /// before it takes effect, but takes the commands one at a time, so the log line of the
    /// next one shows it in force.
    pub fn power_cut_before_write(&self, regex: &str) {
        self.command(
            &format!("lazyfs::crash::timing=before::op=write::from_rgx={regex}"),
            "received: VALID crash fault",
        );
        self.command(
            "lazyfs::display-cache-usage",
            "received 'lazyfs::display-cache-usage'",
        );
    }

    /// Send one command and wait for LazyFS to log `logged` after it: a command sent before
    /// the last was read could arrive in the same read and be rejected with it.
    fn command(&self, command: &str, logged: &str) {
        let start = std::fs::metadata(&self.service.log).map_or(0, |m| m.len()) as usize;
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.commands)
            .unwrap();
        fifo.write_all(format!("{command}\n").as_bytes()).unwrap();
        drop(fifo);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let log = std::fs::read(&self.service.log).unwrap();
            let after = String::from_utf8_lossy(log.get(start..).unwrap_or_default());
            if after.contains(logged) {
                return;
            }
            assert!(
                !after.contains("INVALID") && !after.contains("command unknown"),
                "lazyfs refused {command:?}:\n{after}"
            );
            assert!(
                Instant::now() < deadline,
                "lazyfs did not log {logged:?} within {ANSWER_TIMEOUT:?} of {command:?}:\n{}",
                super::log_tail(&self.service.log)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Wait for LazyFS to kill itself at the power cut armed; panics if it does not, or ends
    /// otherwise.
    pub fn wait_power_cut(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let child = self.service.child.as_mut().expect("lazyfs running");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "lazyfs still running {ANSWER_TIMEOUT:?} on:\n{}",
                super::log_tail(&self.service.log)
            );
            std::thread::sleep(POLL);
        };
        let log = std::fs::read_to_string(&self.service.log).unwrap();
        assert!(
            status.signal() == Some(libc::SIGKILL)
                && log.contains("Triggered fault condition (op=write,timing=before)"),
            "lazyfs ended ({status}) but not at the armed write:\n{}",
            super::log_tail(&self.service.log)
        );
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
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(line) if line.trim() == "finished::clear-cache" => return,
                Ok(_) => continue,
                Err(_) => panic!(
                    "lazyfs did not confirm the clear within {ANSWER_TIMEOUT:?}:\n{}",
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
