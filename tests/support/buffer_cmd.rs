//! What the `hubgate buffer` commands' tests share.

use std::path::{Path, PathBuf};

/// A config at `dir`/hubgate.toml with its buffer in `dir`/buffer (a UDP source, the stdout
/// sink): (buffer, config).
pub fn config(dir: &Path) -> (PathBuf, PathBuf) {
    let buffer = dir.join("buffer");
    let config = config_for(dir, &buffer, "");
    (buffer, config)
}

/// A config at `dir`/hubgate.toml with its buffer at `buffer`, `more` (lines) in its
/// `[buffer]` table (a UDP source, the stdout sink).
pub fn config_for(dir: &Path, buffer: &Path, more: &str) -> PathBuf {
    let config = dir.join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n{more}[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n",
            buffer.display()
        ),
    )
    .unwrap();
    config
}

/// Record `seq` as the buffer stores it (id `r<seq>`, one device's environment readings,
/// `body`), for a test to fill a buffer without an agent.
pub fn stored_record(seq: u64, created_ms: u64, body: String) -> Vec<u8> {
    hubgate::buffer::encode(&hubgate::record::Record {
        id: format!("r{seq}"),
        rec_type: "io.microshare.environment.unpacked".into(),
        key: "58-A0-CB-00-00-10-12-34".into(),
        created_ms,
        body,
    })
}
