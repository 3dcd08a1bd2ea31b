//! A directory's files by path, size and SHA-256, to show what a step changed there. Shared
//! with the library's unit tests, which include this file by path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file's size and the SHA-256 of its bytes in hex; `None` for a directory (its size is
/// the file system's own).
pub type Entry = Option<(u64, String)>;

/// Everything under `dir` by its path there (not `dir` itself).
pub fn listing(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    use sha2::{Digest, Sha256};
    let mut all = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(at) = todo.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let file = match meta.is_dir() {
                true => {
                    todo.push(path.clone());
                    None
                }
                false => {
                    let bytes = std::fs::read(&path).unwrap();
                    Some((meta.len(), format!("{:x}", Sha256::digest(bytes))))
                }
            };
            all.insert(path.strip_prefix(dir).unwrap().to_path_buf(), file);
        }
    }
    all
}

/// What differs between two listings of one directory, `(path, before, after)` in path
/// order (`None`: not there), but sled's own files in the database directory `sled` (a
/// path in the listings): its log `db` and its snapshots `snap.*`, which sled's open
/// rewrites without changing what its trees hold.
pub fn changed_but_sleds(
    before: &BTreeMap<PathBuf, Entry>,
    after: &BTreeMap<PathBuf, Entry>,
    sled: &Path,
) -> Vec<(PathBuf, Option<Entry>, Option<Entry>)> {
    let sleds = |name: &Path| {
        name.parent() == Some(sled)
            && name
                .file_name()
                .is_some_and(|f| f == "db" || f.to_string_lossy().starts_with("snap."))
    };
    let names: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.get(*name) != after.get(*name) && !sleds(name))
        .map(|name| {
            let (was, is) = (before.get(name).cloned(), after.get(name).cloned());
            (name.clone(), was, is)
        })
        .collect()
}
