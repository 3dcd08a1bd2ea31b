//! A small tmpfs for a test that needs a disk of a given size (a full disk, one short of
//! the buffer's reserve).

use std::io::Write;
use std::path::{Path, PathBuf};

/// A small tmpfs, unmounted on drop (the test runs as root, like CI).
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("run mount");
        assert!(ok.success(), "mount tmpfs at {} (needs root)", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Write zeros to `path` until the disk is full, to its last page.
pub fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [vec![0u8; 64 << 10], vec![0u8; 4 << 10]] {
        while matches!(f.write(&chunk), Ok(n) if n > 0) {}
    }
    let _ = f.sync_all();
}
