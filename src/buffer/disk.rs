//! The buffer's room on its disk. While the agent runs, the buffer stops growing once less
//! than `min_free` is left ([`super::Buffer`]); so a disk holds the whole cap only with room
//! for `max_bytes` on top of `min_free`. The agent warns at start when it has not, and
//! `hubgate doctor` fails that step: both ask [`room_for_cap`].

use std::path::{Path, PathBuf};

use crate::config::BufferConfig;

/// Bytes an unprivileged writer may still use on the file system holding `path`.
pub fn free(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // statvfs64: on 32-bit ARM plain statvfs fails (EOVERFLOW) for a file system of more
    // than 2^32 blocks, and the buffer would go without its free-space checks there.
    let mut st: libc::statvfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs64.
    if unsafe { libc::statvfs64(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether the file system holding directory `dir` takes writes: a file is made in it (an
/// unnamed one where the file system can, so that a card failing between the create and the
/// remove leaves none behind) and removed. ext4 failed by an error (`errors=remount-ro`)
/// refuses them while its mount still shows writable (`statvfs`, `access` do not tell).
pub fn writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        done => return done.map(drop),
    }
    let probe = dir.join(format!(".write-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Whether `e`, met writing, is what a file system that takes no writes answers: EROFS, or
/// EIO once shut down.
pub fn refuses_writes(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EROFS | libc::EIO))
}

/// Whether the file system holding `path` (or, where it is missing, its nearest parent that
/// exists) failed after an error, as ext4 does under `errors=remount-ro` until it is checked
/// at the next boot: it refuses writes ([`writable`]) with EROFS or, shut down, with EIO
/// ([`refuses_writes`]), and shows the failure ([`Refusal::Failed`]). Not a mount made
/// read-only, which no reboot mends, nor a write error of a file system that shows none (a
/// card failing here and there, which the buffer's retries are for).
pub fn card_failed(path: &Path) -> bool {
    let Some(dir) = path.ancestors().find(|p| p.is_dir()) else {
        return false;
    };
    writable(dir).is_err_and(|e| refuses_writes(&e)) && Refusal::of(dir) == Refusal::Failed
}

/// Why the file system holding a directory refuses writes ([`refuses_writes`]), as its
/// mount tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The mount itself is read-only: an `ro` in fstab or a `mount -o remount,ro`, or a
    /// read-only bind mount such as systemd's `ProtectSystem=strict` makes of a path not in
    /// `ReadWritePaths=`. The mount's own options in `/proc/self/mountinfo`, not the file
    /// system's: ext4 failed after an error changes only the latter.
    MountedReadOnly,
    /// Under a read-write mount, the file system shows that it failed after an error
    /// ([`Mount::failed`]).
    Failed,
    /// Neither.
    Unexplained,
}

impl Refusal {
    /// Of the file system holding `dir`, from one reading of `/proc/self/mountinfo`.
    pub fn of(dir: &Path) -> Refusal {
        match mount(dir) {
            Some(m) if m.read_only() => Refusal::MountedReadOnly,
            Some(m) if m.failed(ext4_error_this_boot) => Refusal::Failed,
            _ => Refusal::Unexplained,
        }
    }

    /// What to tell the operator.
    pub fn hint(self) -> &'static str {
        match self {
            Refusal::MountedReadOnly => MOUNTED_READ_ONLY_HINT,
            Refusal::Failed => FAILED_CARD_HINT,
            Refusal::Unexplained => NO_WRITES_HINT,
        }
    }
}

/// A line of `/proc/self/mountinfo`: what the code here reads of it.
#[derive(Debug, PartialEq)]
struct Mount {
    /// `major:minor` of the file system's device.
    device: String,
    /// The mount's own options (`rw` or `ro` first).
    options: String,
    /// The file system's options (after the ` - ` and its type and source).
    super_options: String,
}

impl Mount {
    fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }

    /// Whether the file system shows that it failed after an error: `shutdown` or
    /// `emergency_ro` among its options (ext4 from Linux 6.15), or, on any kernel, an error
    /// counted since this boot (`error_this_boot`: of `device`). Under `errors=remount-ro` an
    /// error has failed the file system; older kernels show nothing else (6.12 to 6.14, and
    /// the stable kernels given the same change, keep it `rw` in mountinfo). An error
    /// counted before this boot says nothing of now: the count stays until a full check,
    /// which a disk that is not checked at boot never gets.
    fn failed(&self, error_this_boot: impl FnOnce(&str) -> Option<bool>) -> bool {
        self.super_options
            .split(',')
            .any(|o| o == "shutdown" || o == "emergency_ro")
            || error_this_boot(&self.device) == Some(true)
    }
}

/// The mount holding `path`, from `/proc/self/mountinfo`.
fn mount(path: &Path) -> Option<Mount> {
    let path = path.canonicalize().ok()?;
    let table = std::fs::read("/proc/self/mountinfo").ok()?;
    mount_of(&path, &String::from_utf8_lossy(&table))
}

/// The mount in `mountinfo` that holds `path` (absolute, resolved): the one at its longest
/// mount point, the last listed of those stacked there.
fn mount_of(path: &Path, mountinfo: &str) -> Option<Mount> {
    let mut best: Option<(usize, Mount)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(&device), Some(&point), Some(&options)) =
            (fields.get(2), fields.get(4), fields.get(5))
        else {
            continue;
        };
        // After the optional fields: ` - type source super_options`.
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let super_options = fields.get(dash + 3).copied().unwrap_or_default();
        let point = unescape(point);
        let depth = Path::new(&point).components().count();
        if path.starts_with(&point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            let mount = Mount {
                device: device.to_string(),
                options: options.to_string(),
                super_options: super_options.to_string(),
            };
            best = Some((depth, mount));
        }
    }
    best.map(|(_, mount)| mount)
}

/// Whether ext4 counted an error on the device `major:minor` since this boot: its count
/// (`/sys/fs/ext4/<name>/errors_count`) above 0 and its last error's time not before the
/// boot's (the wall clock less the time since boot). `None` for another file system.
fn ext4_error_this_boot(device: &str) -> Option<bool> {
    let link = std::fs::read_link(format!("/sys/dev/block/{device}")).ok()?;
    let ext4 = Path::new("/sys/fs/ext4").join(link.file_name()?);
    let number = |file: &str| -> Option<u64> {
        std::fs::read_to_string(ext4.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (count, last) = (number("errors_count")?, number("last_error_time")?);
    let booted = std::time::SystemTime::now().checked_sub(crate::clock::since_boot()?)?;
    let boot = booted.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(count > 0 && last >= boot)
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

/// Said of a buffer whose file system takes no writes though it shows no failure.
pub const NO_WRITES_HINT: &str = "the file system takes no writes, though it shows no error \
     since this boot: check how it is mounted, and the disk";

/// Said of a buffer whose file system failed after an error ([`Refusal::Failed`]).
pub const FAILED_CARD_HINT: &str = "the file system takes no writes (a card that failed a \
     write is turned read-only or shut down, as errors=remount-ro says, until it is checked \
     at the next boot): reboot, or replace the card";

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
    /// points are unescaped; the file system's options come after the optional fields.
    #[test]
    fn a_path_is_on_its_deepest_mount() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
30 22 8:2 / /var/lib rw,noatime - ext4 /dev/sda2 rw,errors=remount-ro,shutdown\n\
31 30 8:2 /hubgate /var/lib/hubgate ro,relatime master:3 shared:4 - ext4 /dev/sda2 rw\n\
32 22 8:3 / /media/usb\\040disk rw - vfat /dev/sdb1 rw\n\
33 32 8:3 / /media/usb\\040disk ro - vfat /dev/sdb1 rw\n";
        let mount = |p: &str| mount_of(Path::new(p), table).unwrap();
        let hubgate = mount("/var/lib/hubgate/buffer");
        assert_eq!(
            (hubgate.options.as_str(), hubgate.read_only()),
            ("ro,relatime", true)
        );
        let lib = mount("/var/lib/hubgate2");
        assert_eq!(
            (lib.device.as_str(), lib.options.as_str(), lib.read_only()),
            ("8:2", "rw,noatime", false)
        );
        assert_eq!(lib.super_options, "rw,errors=remount-ro,shutdown");
        assert_eq!(mount("/etc").options, "rw,relatime");
        assert!(mount("/media/usb disk/buffer").read_only());
        assert_eq!(unescape("a\\134b\\x"), "a\\b\\x");
    }

    /// A file system shut down or `emergency_ro` failed after an error; otherwise only one
    /// with an error counted since this boot.
    #[test]
    fn a_file_system_shows_it_failed_after_an_error() {
        let with = |super_options: &str| Mount {
            device: "179:2".into(),
            options: "rw,noatime".into(),
            super_options: super_options.into(),
        };
        let no_errors = |_: &str| Some(false);
        assert!(with("rw,errors=remount-ro,shutdown").failed(no_errors));
        assert!(with("rw,abort,errors=remount-ro,emergency_ro").failed(no_errors));
        assert!(!with("ro,errors=remount-ro").failed(no_errors));
        let this_boot = |d: &str| Some(d == "179:2");
        assert!(with("ro,errors=remount-ro").failed(this_boot));
        assert!(
            with("rw,errors=remount-ro").failed(this_boot),
            "6.12 to 6.14"
        );
        assert!(!with("ro").failed(|_| None), "not ext4");
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
