//! Replay source: uplink JSON documents from a file, one per line (the demo, and tests).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use super::{Ack, Context};
use crate::config::ReplaySourceConfig;

/// A line longer than this is skipped (counted as `replay_oversized`), not read whole.
const LINE_LIMIT: usize = 1 << 20;

pub async fn run(cfg: ReplaySourceConfig, ctx: Context) {
    let ReplaySourceConfig {
        path,
        format,
        interval,
    } = cfg;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            log::error!("replay: cannot open {}: {e}", path.display());
            return;
        }
    };
    let mut reader = tokio::io::BufReader::new(file);
    let mut stopping = ctx.stopping.clone();
    let (mut n, mut line) = (0u64, Vec::new());
    loop {
        if *ctx.stopping.borrow() {
            return;
        }
        let whole = match next_line(&mut reader, &mut line).await {
            Ok(Some(whole)) => whole,
            Ok(None) => break,
            Err(e) => {
                log::error!("replay: reading {}: {e}", path.display());
                break;
            }
        };
        if line.trim_ascii().is_empty() && whole {
            continue;
        }
        n += 1;
        if !whole {
            ctx.metrics.problem("replay_oversized", || {
                format!(
                    "replay: line {n} of {} is over {LINE_LIMIT} bytes: skipped",
                    path.display()
                )
            });
            continue;
        }
        if let Some(input) = ctx.parse("replay", None, format, &line) {
            if ctx.frames.send("replay", input, Ack::None).await.is_err() {
                return;
            }
        }
        if !interval.is_zero() {
            // A stop ends the wait: an interval of minutes would hold the agent's stop up.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }
    log::info!("replay: {} line(s) of {} replayed", n, path.display());
}

/// The next line of `reader` into `line`, without its newline; bytes, not text, so a line
/// that is not UTF-8 costs that line only (its parse fails). Returns `None` at the end,
/// else whether the line was kept whole: past [`LINE_LIMIT`] the rest is skipped.
async fn next_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let (mut read, mut whole) = (false, true);
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read.then_some(whole));
        }
        read = true;
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        if line.len() + chunk.len() > LINE_LIMIT {
            whole = false;
            line.clear();
        } else if whole {
            line.extend_from_slice(chunk);
        }
        let used = end.map_or(buf.len(), |i| i + 1);
        reader.consume(used);
        if end.is_some() {
            return Ok(Some(whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(bytes: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut reader = tokio::io::BufReader::with_capacity(64, bytes);
        let (mut out, mut line) = (Vec::new(), Vec::new());
        while let Some(whole) = next_line(&mut reader, &mut line).await.unwrap() {
            out.push((line.clone(), whole));
        }
        out
    }

    /// A line that is not UTF-8 is one line like any other, the lines after it are read, and
    /// one over the limit is skipped whole without ending the file.
    #[tokio::test]
    async fn every_line_is_read_whatever_its_bytes() {
        let long = vec![b'x'; LINE_LIMIT + 1];
        let mut file = b"{\"a\":1}\n\xff\xfe bad\r\n".to_vec();
        file.extend_from_slice(&long);
        file.extend_from_slice(b"\nlast");
        let got = lines_of(&file).await;
        assert_eq!(
            got,
            [
                (b"{\"a\":1}".to_vec(), true),
                (b"\xff\xfe bad\r".to_vec(), true),
                (Vec::new(), false),
                (b"last".to_vec(), true),
            ]
        );
        let exact = vec![b'y'; LINE_LIMIT];
        assert_eq!(lines_of(&exact).await, [(exact, true)]);
    }
}
