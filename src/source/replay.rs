//! Replay source: uplink JSON documents from a file, one per line (the demo, and tests).

use tokio::io::AsyncBufReadExt;

use super::{Ack, Context};
use crate::config::ReplaySourceConfig;

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
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut n = 0u64;
    loop {
        if *ctx.stopping.borrow() {
            return;
        }
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                log::error!("replay: reading {}: {e}", path.display());
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        n += 1;
        if let Some(input) = ctx.parse("replay", None, format, line.as_bytes()) {
            if ctx.frames.send("replay", input, Ack::None).await.is_err() {
                return;
            }
        }
        if !interval.is_zero() {
            tokio::time::sleep(interval).await;
        }
    }
    log::info!("replay: {} line(s) of {} replayed", n, path.display());
}
