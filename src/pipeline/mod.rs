//! Wiring: sources -> forwarder (decode, buffer, sink), and an orderly shutdown.

mod dedup;
mod forwarder;
mod health;

use tokio::sync::{mpsc, watch};

use crate::buffer::{Buffer, SledStore};
use crate::config::{Config, SourceConfig};
use crate::decode::Decoder;
use crate::metrics::{self, Metrics};
use crate::source;

pub use forwarder::Forwarder;

/// Frames waiting between the sources and the forwarder. Small: when the forwarder is busy
/// the sources wait (and MQTT stops acknowledging) instead of piling up memory.
const FRAME_QUEUE: usize = 1024;
/// How long sources get to send their last acknowledgements and disconnect.
const SOURCE_STOP: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Buffer(#[from] crate::buffer::BufferError),
    #[error(transparent)]
    Sink(#[from] crate::sink::OpenError),
    #[error("LoRaWAN sessions: {0}")]
    Lorawan(#[from] crate::lorawan::LorawanError),
    #[error("metrics: cannot listen on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
}

/// Run the agent until `stop` resolves or every source has ended and all is delivered.
pub async fn run(cfg: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), RunError> {
    let metrics = Metrics::new();
    if let Some(addr) = cfg.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Metrics(addr, e))?;
        log::info!("metrics on http://{addr}/metrics");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    std::fs::create_dir_all(&cfg.buffer.path).map_err(|e| {
        crate::buffer::BufferError::Storage(format!("{}: {e}", cfg.buffer.path.display()))
    })?;
    let store = SledStore::open(&cfg.buffer.path)?;
    let buffer = Buffer::new(
        Box::new(store),
        cfg.buffer.max_bytes,
        cfg.buffer.when_full,
        metrics.clone(),
    );
    let (delivery_tx, delivery_rx) = mpsc::unbounded_channel();
    let sink = crate::sink::open(&cfg.sink, delivery_tx)?;
    let decoder = Decoder::new(&cfg, metrics.clone())?;
    let forwarder = Forwarder::new(
        &cfg.buffer,
        cfg.record.dedup_window,
        decoder,
        buffer,
        sink,
        metrics.clone(),
    );

    let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
    // `stopping`: sources stop taking new input. `acked`: the forwarder has sent its last
    // acknowledgement, so an MQTT source may now disconnect.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (acked_tx, acked_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, src) in cfg.sources.iter().enumerate() {
        let ctx = source::Context {
            frames: frame_tx.clone(),
            stopping: stopping_rx.clone(),
            acked: acked_rx.clone(),
            metrics: metrics.clone(),
        };
        tasks.push(match src {
            SourceConfig::Mqtt(m) => {
                let client_id = m
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("hubgate-{}", cfg.gateway_id));
                tokio::spawn(source::mqtt::run(m.clone(), client_id, ctx))
            }
            SourceConfig::Udp(u) => tokio::spawn(source::udp::run(u.listen, u.gateway_status, ctx)),
            SourceConfig::Replay(r) => tokio::spawn(source::replay::run(
                r.path.clone(),
                r.format,
                r.interval,
                ctx,
            )),
            SourceConfig::Serial(s) => tokio::spawn(source::serial::run(s.clone(), ctx)),
        });
        log::debug!("source {i} started");
    }
    drop(frame_tx);

    let mut fwd = tokio::spawn(forwarder.run(frame_rx, delivery_rx, stopping_rx));
    tokio::pin!(stop);
    let result = tokio::select! {
        r = &mut fwd => r,
        _ = &mut stop => {
            log::info!("stopping: no new input; confirming or buffering what is in flight");
            let _ = stopping_tx.send(true);
            fwd.await
        }
    };
    let _ = stopping_tx.send(true);
    let _ = acked_tx.send(true);
    for t in tasks {
        if tokio::time::timeout(SOURCE_STOP, t).await.is_err() {
            log::warn!("a source did not stop within {SOURCE_STOP:?}");
        }
    }
    log::info!(
        "received {}, delivered {}, buffered now {}, duplicates {}, dropped {}",
        metrics.received.get(),
        metrics.delivered.get(),
        metrics.buffer_records.get(),
        metrics.duplicates.get(),
        metrics.dropped_full.get() + metrics.dropped_expired.get() + metrics.dropped_corrupt.get(),
    );
    match result {
        Ok(r) => Ok(r?),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
