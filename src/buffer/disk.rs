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
/// exists) turned read-only under its mount: it refuses writes with EROFS ([`writable`])
/// while the mount itself is read-write, as ext4 does after an error under
/// `errors=remount-ro` until it is checked. Not a mount made read-only
/// ([`mounted_read_only`]): no reboot mends that.
pub fn turned_read_only(path: &Path) -> bool {
    let Some(dir) = path.ancestors().find(|p| p.is_dir()) else {
        return false;
    };
    writable(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::ReadOnlyFilesystem)
        && !mounted_read_only(dir)
}

/// Whether the mount holding `path` is itself read-only: an `ro` in fstab or a `mount -o
/// remount,ro`, or a read-only bind mount such as systemd's `ProtectSystem=strict` makes of
/// a path not in `ReadWritePaths=`. The mount's own options in `/proc/self/mountinfo`, not
/// the file system's: ext4 turned read-only by an error changes only the latter.
pub fn mounted_read_only(path: &Path) -> bool {
    let (Ok(path), Ok(table)) = (
        path.canonicalize(),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return false;
    };
    mount_of(&path, &table).is_some_and(|options| options.split(',').any(|o| o == "ro"))
}

/// The options of the mount in `mountinfo` that holds `path` (absolute, resolved): the one
/// at its longest mount point, the last listed of those stacked there.
fn mount_of<'a>(path: &Path, mountinfo: &'a str) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        let mut fields = line.split(' ').skip(4);
        let (Some(point), Some(options)) = (fields.next(), fields.next()) else {
            continue;
        };
        let point = unescape(point);
        let depth = Path::new(&point).components().count();
        if path.starts_with(&point) && best.is_none_or(|(d, _)| depth >= d) {
            best = Some((depth, options));
        }
    }
    best.map(|(_, options)| options)
}

/// A mount point as mountinfo writes it: space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Said of a buffer whose file system is read-only: [`MOUNTED_READ_ONLY_HINT`] for a mount
/// made so, [`READ_ONLY_HINT`] otherwise.
pub fn read_only_hint(dir: &Path) -> &'static str {
    match mounted_read_only(dir) {
        true => MOUNTED_READ_ONLY_HINT,
        false => READ_ONLY_HINT,
    }
}

/// Said of a buffer whose file system turned read-only.
pub const READ_ONLY_HINT: &str = "the file system is read-only (a card that failed a write is \
     remounted so, as errors=remount-ro says, until it is checked at the next boot): reboot, \
     or replace the card";

/// Said of a buffer on a mount made read-only.
pub const MOUNTED_READ_ONLY_HINT: &str = "it is mounted read-only (an `ro` mount option, or \
     the unit's ProtectSystem=strict without the buffer's path in ReadWritePaths=): mount \
     it read-write, or add it to ReadWritePaths= in a drop-in (systemctl edit hubgate)";

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

    /// The deepest mount point holding the path is its mount, the last stacked there; mount
    /// points are unescaped.
    #[test]
    fn a_path_is_on_its_deepest_mount() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
30 22 8:2 / /var/lib rw,noatime - ext4 /dev/sda2 rw\n\
31 30 8:2 /hubgate /var/lib/hubgate ro,relatime - ext4 /dev/sda2 rw\n\
32 22 8:3 / /media/usb\\040disk rw - vfat /dev/sdb1 rw\n\
33 32 8:3 / /media/usb\\040disk ro - vfat /dev/sdb1 rw\n";
        let mount = |p: &str| mount_of(Path::new(p), table);
        assert_eq!(mount("/var/lib/hubgate/buffer"), Some("ro,relatime"));
        assert_eq!(mount("/var/lib/hubgate2"), Some("rw,noatime"));
        assert_eq!(mount("/etc"), Some("rw,relatime"));
        assert_eq!(mount("/media/usb disk/buffer"), Some("ro"));
        assert_eq!(unescape("a\\134b\\x"), "a\\b\\x");
    }

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
