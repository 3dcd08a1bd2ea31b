//! An SD card that refuses writes, as a failing one does: an ext4 file system on a loop
//! device whose image is a sparse file on a small tmpfs. mkfs writes the file system's own
//! structures (journal, inode tables) whole, so once the tmpfs is full only blocks never
//! written before fail: a file's new data. Linux does not write such pages again: the fsync
//! that met the error fails, the pages stay in the page cache marked clean, and every later
//! fsync succeeds without them. What reached the card shows once the file system is mounted
//! again. Mounted with `errors=remount-ro`, as Raspberry Pi OS mounts its root: an error
//! ext4 meets turns the file system read-only, or shuts it down, under whatever runs, until
//! it is checked ([`Card::go_read_only`], [`Card::shut_down`], [`Card::repair`]). Needs
//! root, `losetup`, `mkfs.ext4` and `e2fsck`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_ok;
use super::tmpfs::{fill, Tmpfs};

/// The card's size, and the room its tmpfs has for the image's blocks written.
const IMAGE: u64 = 48 << 20;
const ROOM: &str = "64m";

pub struct Card {
    device: String,
    mount: PathBuf,
    filler: PathBuf,
    _tmpfs: Tmpfs,
}

impl Card {
    /// A fresh card under `dir`, mounted at `dir/card`.
    pub fn mount(dir: &Path) -> Card {
        let tmpfs = Tmpfs::mount(dir.join("card.image"), ROOM);
        let image = tmpfs.0.join("card.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(IMAGE)
            .unwrap();
        let out = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&image));
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        // Made before mkfs, so that a failing mkfs still frees the loop device.
        let card = Card {
            device,
            mount: dir.join("card"),
            filler: tmpfs.0.join("filler"),
            _tmpfs: tmpfs,
        };
        run_ok(
            Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-b",
                    "4096",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                ])
                .arg(&card.device),
        );
        std::fs::create_dir_all(&card.mount).unwrap();
        card.attach();
        card
    }

    /// [`Card::mount`] where the test runs as root, as a loop device needs; `None`, said,
    /// where it does not: the test is skipped.
    pub fn mount_if_root(dir: &Path) -> Option<Card> {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root, for a loop device");
            return None;
        }
        Some(Card::mount(dir))
    }

    fn attach(&self) {
        run_ok(
            Command::new("mount")
                .args(["-o", "errors=remount-ro"])
                .arg(&self.device)
                .arg(&self.mount),
        );
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// From now on every block not written before fails to write.
    pub fn fail_writes(&self) {
        fill(&self.filler);
    }

    /// Writes work again (what failed stays unwritten).
    pub fn take_writes(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }

    /// ext4 meets an error (a write the card failed): under `errors=remount-ro` it aborts
    /// its journal and turns read-only at once, files open for writing too, as Linux up to
    /// 6.5 and from 6.15 handle it. Every write, fsync and open for writing fails with EROFS
    /// from now on; reads still work. It stays so until [`Card::repair`].
    pub fn go_read_only(&self) {
        run_ok(
            Command::new("mount")
                .args(["-o", "remount,abort"])
                .arg(&self.mount),
        );
    }

    /// ext4 meets an error under `errors=remount-ro` as Linux 6.6 to 6.14 handle it: the
    /// file system shuts down (`EXT4_IOC_SHUTDOWN`, without flushing its journal) and every
    /// write, read and sync on it fails with EIO until [`Card::repair`]. Only kernels from
    /// 6.15 show `shutdown` among its options, and the ioctl counts no error: on an older
    /// kernel hubgate cannot tell this from a card failing here and there.
    pub fn shut_down(&self) {
        // _IOR('X', 125, __u32); EXT4_GOING_FLAGS_NOLOGFLUSH.
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
        let flags: u32 = 2;
        let dir = std::fs::File::open(&self.mount).unwrap();
        // SAFETY: a valid descriptor of a directory on the card, and a u32 the ioctl reads.
        let done = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                EXT4_IOC_SHUTDOWN,
                &flags,
            )
        };
        assert_eq!(done, 0, "shutdown: {}", std::io::Error::last_os_error());
    }

    /// ext4 meets an error on the card by its own error path (`trigger_fs_error`): counted,
    /// and then what the mount's `errors=` option says (under `errors=remount-ro`, the card
    /// fails as this kernel fails it).
    pub fn meet_an_error(&self) {
        let name = Path::new(&self.device).file_name().unwrap();
        let trigger = Path::new("/sys/fs/ext4")
            .join(name)
            .join("trigger_fs_error");
        std::fs::write(trigger, "1").unwrap();
    }

    /// Mount the card again with `options` (`ro`, `rw`, `errors=continue`…).
    pub fn remount(&self, options: &str) {
        run_ok(
            Command::new("mount")
                .args(["-o", &format!("remount,{options}")])
                .arg(&self.mount),
        );
    }

    /// What a reboot does to a card that went read-only: unmounted, checked (`e2fsck -y`,
    /// as Raspberry Pi OS's `fsck.repair=yes` runs it at boot: it replays the journal and
    /// clears the error) and mounted again, writable. Call it once
    /// nothing has a file on it open.
    pub fn repair(&self) {
        run_ok(Command::new("umount").arg(&self.mount));
        let fsck = Command::new("e2fsck")
            .arg("-y")
            .arg(&self.device)
            .output()
            .unwrap();
        // 0: clean; 1: errors corrected.
        assert!(
            matches!(fsck.status.code(), Some(0 | 1)),
            "e2fsck {}: {}\n{}",
            self.device,
            fsck.status,
            String::from_utf8_lossy(&fsck.stdout)
        );
        self.attach();
    }

    /// The power goes and comes back: the file system is mounted again, showing what reached
    /// the card (pages the page cache kept without writing them are gone). Call it once
    /// nothing has a file on it open.
    pub fn power_cut(&self) {
        run_ok(Command::new("umount").arg(&self.mount));
        self.attach();
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}
