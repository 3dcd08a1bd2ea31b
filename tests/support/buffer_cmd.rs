//! What the `hubgate buffer` commands' tests share.

use std::path::{Path, PathBuf};

/// A config at `dir`/hubgate.toml with its buffer in `dir`/buffer (a UDP source, the stdout
/// sink): (buffer, config).
pub fn config(dir: &Path) -> (PathBuf, PathBuf) {
    let buffer = dir.join("buffer");
    let config = dir.join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n",
            buffer.display()
        ),
    )
    .unwrap();
    (buffer, config)
}
