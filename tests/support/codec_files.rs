//! Codec files for tests with the modes an operator's have (files 0644, directories 0755),
//! whatever the umask: hubgate refuses a codec file or directory its group may write, and
//! `umask 002` would make every file a test writes group-writable. Shared by the library's
//! unit tests, the integration tests and the benchmarks (each includes this file by path).

#![allow(dead_code)] // each includer uses a different part

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Write `text` to `path`, mode 0644.
pub fn write(path: impl AsRef<Path>, text: impl AsRef<[u8]>) {
    let path = path.as_ref();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A temporary directory, mode 0755 (`tempfile::tempdir` leaves the mode to the umask).
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Create the directory `path`, mode 0755.
pub fn create_dir(path: impl AsRef<Path>) {
    let path = path.as_ref();
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Copy the checkout's example codec `name` (a file of `codecs/`) to `to`, mode 0644: the
/// checkout's own modes follow the umask of whoever cloned it.
pub fn copy_example(name: &str, to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("codecs")
        .join(name);
    write(to, std::fs::read(&from).unwrap());
}

/// A temporary directory, mode 0755, holding a copy of each example codec of the checkout
/// (`codecs/`), mode 0644.
pub fn examples() -> tempfile::TempDir {
    let dir = tempdir();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("codecs");
    for entry in std::fs::read_dir(from).unwrap() {
        let name = entry.unwrap().file_name();
        copy_example(name.to_str().unwrap(), &dir.path().join(&name));
    }
    dir
}
