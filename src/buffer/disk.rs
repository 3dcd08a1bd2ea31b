//! The buffer's room on its disk. While the agent runs, the buffer stops growing once less
//! than `min_free` is left ([`super::Buffer`]); so a disk holds the whole cap only with room
//! for `max_bytes` on top of `min_free`. The agent warns at start when it has not, and
//! `hubgate doctor` fails that step: both ask [`room_for_cap`].

use std::path::{Path, PathBuf};

use crate::config::BufferConfig;

/// Bytes an unprivileged writer may still use on the file system holding `path`.
pub fn free(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether the file system holding directory `dir` takes writes: a file is made in it and
/// removed. ext4 turned read-only by an error (`errors=remount-ro`) refuses them with EROFS
/// while its mount still shows writable (`statvfs`, `access` do not tell).
pub fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Whether the file system holding `path` (or, where it is missing, its nearest parent that
/// exists) refuses writes with EROFS ([`writable`]).
pub fn read_only(path: &Path) -> bool {
    path.ancestors()
        .find(|p| p.is_dir())
        .and_then(|dir| writable(dir).err())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ReadOnlyFilesystem)
}

/// Said of a buffer whose file system is read-only.
pub const READ_ONLY_HINT: &str = "the file system is read-only (a card that failed a write is \
     remounted so, as errors=remount-ro says, until it is checked at the next boot): reboot, \
     or replace the card";

/// The buffer's disk measured against its cap.
#[derive(Debug, PartialEq)]
pub struct CapRoom {
    /// Where it was measured: the buffer directory, or its nearest existing parent before
    /// the agent has created it.
    pub measured: PathBuf,
    pub free: u64,
    /// `max_bytes` + `min_free`.
    pub need: u64,
}

impl CapRoom {
    pub fn holds_the_cap(&self) -> bool {
        self.free >= self.need
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum RoomError {
    #[error("no part of the path exists")]
    NoPath,
    #[error("cannot ask {} for its free space", .0.display())]
    Unknown(PathBuf),
}

/// How the disk of the buffer configured in `cfg` compares with its cap.
pub fn room_for_cap(cfg: &BufferConfig) -> Result<CapRoom, RoomError> {
    let measured = cfg
        .path
        .ancestors()
        .find(|p| p.exists())
        .ok_or(RoomError::NoPath)?;
    let free = free(measured).ok_or_else(|| RoomError::Unknown(measured.to_path_buf()))?;
    Ok(CapRoom {
        measured: measured.to_path_buf(),
        free,
        need: cfg.max_bytes.saturating_add(cfg.min_free),
    })
}

/// `1536` -> `"1.5 KiB"`: sizes as people read them.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(256 << 20), "256.0 MiB");
    }

    #[test]
    fn the_cap_and_min_free_must_fit_where_the_buffer_will_be() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = BufferConfig {
            path: dir.path().join("not/yet"),
            max_bytes: 1000,
            min_free: 24,
            ..BufferConfig::default()
        };
        let room = room_for_cap(&cfg).unwrap();
        assert_eq!(room.measured, dir.path());
        assert_eq!(room.need, 1024);
        assert!(room.holds_the_cap(), "{room:?}");
        cfg.max_bytes = u64::MAX;
        let room = room_for_cap(&cfg).unwrap();
        assert_eq!(room.need, u64::MAX, "saturates");
        assert!(!room.holds_the_cap());
        cfg.path = "relative/nowhere".into();
        assert_eq!(room_for_cap(&cfg), Err(RoomError::NoPath));
    }
}
