//! Wiring: sources -> forwarder (decode, buffer, sink), and an orderly shutdown.

pub(crate) mod clock_steps;
mod dedup;
mod doubts;
mod forwarder;
mod health;
mod key_rotation;
mod ledger;
#[cfg(test)]
mod model;
pub mod prepare;

use tokio::sync::{mpsc, watch};

use crate::buffer::{self, Buffer, BufferError, ReadOnlyStore, SledStore};
use crate::config::{BufferConfig, Config, SinkConfig, SourceConfig};
use crate::decode::Decoder;
use crate::metrics::{self, Metrics};
use crate::notify;
use crate::sink::provision::Hubs;
use crate::source;
use crate::status::{self, Status};
use std::collections::BTreeSet;
use std::sync::Arc;

use forwarder::Park;
pub use forwarder::{Forwarder, Inputs};

/// The age at `now` of the oldest record in `store` as the drain counts it for `max_age`:
/// forward steps of the clock after it was taken ([`clock_steps`]) do not count. `None`: no
/// record (or it cannot be read); `Some(None)`: made before the clock was set.
pub fn oldest_age(
    store: &dyn buffer::Store,
    now: std::time::SystemTime,
) -> Option<Option<std::time::Duration>> {
    let (seq, bytes) = store.scan(None, 1).ok()?.into_iter().next()?;
    let rec = buffer::decode(&bytes).ok()?;
    if rec.created_ms == 0 {
        return Some(None);
    }
    let steps = buffer::clock_state(store, buffer::ClockState::Steps).map_or_else(
        |_| clock_steps::ClockSteps::default(),
        |b| clock_steps::ClockSteps::decode(&b),
    );
    let age = crate::record::ms_since_epoch(now)
        .saturating_sub(rec.created_ms)
        .saturating_sub(steps.after(seq));
    Some(Some(std::time::Duration::from_millis(age)))
}

/// Frames waiting between the sources and the forwarder, per queue. Few: when the forwarder
/// is busy the sources wait (and MQTT stops acknowledging) instead of piling up memory.
const FRAME_QUEUE: usize = 1024;
/// The bytes they may take ([`source::Input::size`]), per queue: large messages fill it
/// before the frames do (32 of 256 KiB), small ones never (1,024 radio frames or ChirpStack
/// uplinks take a few MiB at most).
const FRAME_QUEUE_BYTES: usize = 8 << 20;
/// How long sources get to send their last acknowledgements and disconnect.
const SOURCE_STOP: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error(transparent)]
    Sink(#[from] crate::sink::OpenError),
    #[error(transparent)]
    Listen(#[from] crate::source::BindError),
    #[error("cannot start the forwarder: {0}")]
    Forwarder(std::io::Error),
}

/// Run the agent, with the parts [`prepare::prepare`] built from `cfg`, until `stop`
/// resolves or every source has ended and all is delivered. A message on `reload` (SIGHUP)
/// has the codec directory loaded again and the sink's secret file (connection string, SASL
/// password) read again (a new key there rebuilds the sink).
pub async fn run(
    cfg: Config,
    prepared: prepare::Prepared,
    stop: impl std::future::Future<Output = ()>,
    reload: mpsc::Receiver<()>,
) -> Result<(), RunError> {
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new();
    metrics.expect_sources(cfg.sources.iter().map(SourceConfig::kind));
    let mut reporters = Vec::new();
    if let Some(addr) = cfg.metrics.served() {
        // Metrics are not worth losing records over: without the port, run without them.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                log::info!("status page on http://{addr}/, metrics on http://{addr}/metrics");
                let site = crate::http::Site {
                    status: Status::new(metrics.clone(), status::Facts::of(&cfg)),
                    access: crate::http::auth::Access::of(
                        cfg.metrics.password.as_ref().map(|p| p.expose().as_str()),
                    ),
                    hosts: crate::http::host::Names::of(&cfg.metrics.hosts),
                };
                reporters.push(tokio::spawn(crate::http::serve(listener, Arc::new(site))));
                reporters.push(tokio::spawn(status::sample(metrics.clone())));
            }
            Err(e) => {
                log::error!("metrics: cannot listen on {addr}: {e}; running without the endpoint")
            }
        }
    }
    if !cfg.metrics.status_interval.is_zero() {
        reporters.push(tokio::spawn(metrics::log_status(
            metrics.clone(),
            cfg.metrics.status_interval,
        )));
    }
    // Ports are taken before anything starts (see `source::Built::bind`).
    let sources = prepared.sources.bind().await?;
    let (delivery_tx, delivery_rx) = mpsc::unbounded_channel();
    // Once: each reading of the recTypes reads every mapping table from disk.
    let rec_types = cfg.rec_types();
    metrics.foresee(rec_types.iter().cloned());
    let (parks_tx, parks) = mpsc::unbounded_channel();
    let hubs = provisioner(&cfg.sink, parks_tx);
    ask_every_hub(&hubs, &cfg.sink, &rec_types);
    // One for every sink: a key rotation's goes on from the state of the one it replaces.
    let connection = crate::sink::Connection::new(metrics.clone());
    let forwarder = {
        let (cfg, metrics, deliveries) = (cfg.clone(), metrics.clone(), delivery_tx.clone());
        let connection = connection.clone();
        // Moved: the sink holds the only handles, so after a key rotation this provisioner's
        // thread ends with the sink it served.
        crate::blocking::run(move || open_forwarder(&cfg, deliveries, metrics, hubs, connection))
            .await?
    };
    for w in prepared.warnings {
        log::warn!("{w}");
    }
    for n in prepared.notes {
        log::info!("{n}");
    }

    // One queue per patience: the forwarder stops taking from the one of sources that can
    // wait while the sink keeps up and its window is full, and always takes from the other.
    let (urgent_tx, urgent_rx) = source::queue(FRAME_QUEUE, FRAME_QUEUE_BYTES);
    let (patient_tx, patient_rx) = source::queue(FRAME_QUEUE, FRAME_QUEUE_BYTES);
    // `stopping`: sources stop taking new input. `acked`: the forwarder has sent its last
    // acknowledgement, so an MQTT source may now disconnect.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (acked_tx, acked_rx) = watch::channel(false);
    let count = sources.len();
    let tasks = sources.spawn(|origin, patience| {
        let frames = match patience {
            source::Patience::CanWait => patient_tx.of_source(origin),
            source::Patience::CannotWait => urgent_tx.of_source(origin),
        };
        source::Context::new(
            frames,
            stopping_rx.clone(),
            acked_rx.clone(),
            metrics.clone(),
        )
    });
    drop((urgent_tx, patient_tx));

    let (sink_tx, sink_rx) = mpsc::channel(1);
    let codecs = forwarder.codec_reloader();
    let rotation = tokio::spawn(key_rotation::reload_on_request(
        cfg.sink.clone(),
        delivery_tx,
        sink_tx,
        (reload, codecs.clone()),
        (metrics.clone(), connection),
        rec_types,
    ));
    let heartbeat = forwarder.heartbeat();
    let (thread, mut fwd) = forwarder
        .spawn(Inputs {
            urgent: urgent_rx,
            patient: patient_rx,
            deliveries: delivery_rx,
            stop: stopping_rx,
            new_sinks: sink_rx,
            parks,
        })
        .map_err(RunError::Forwarder)?;
    let running = format!("running: {count} source(s)");
    log::info!("{running}");
    notify::ready(&running);
    let status_metrics = metrics.clone();
    let watchdog = tokio::spawn(notify::watchdog(heartbeat, move || {
        status_metrics.status_line(std::time::Instant::now())
    }));
    tokio::pin!(stop);
    let result = tokio::select! {
        r = &mut fwd => r,
        _ = &mut stop => {
            notify::stopping();
            log::info!("stopping: no new input; confirming or buffering what is in flight");
            let _ = stopping_tx.send(true);
            fwd.await
        }
    };
    let _ = stopping_tx.send(true);
    let _ = acked_tx.send(true);
    // Aborting the task leaves a codec reload running on the blocking pool: it stops before
    // its next file.
    codecs.stop();
    rotation.abort();
    watchdog.abort();
    for t in tasks {
        if tokio::time::timeout(SOURCE_STOP, t).await.is_err() {
            log::warn!("a source did not stop within {SOURCE_STOP:?}");
        }
    }
    for r in reporters {
        r.abort();
    }
    // One line with the count, not one per message: they all fail at the end of a stop.
    let failed = metrics.acks_failed.get();
    if failed > 0 {
        log::warn!("mqtt: {failed} acknowledgement(s) could not be sent: the MQTT source had stopped; the broker delivers those messages again");
    }
    log::info!(
        "{}, duplicates {}",
        metrics.status_line(std::time::Instant::now()),
        metrics.duplicates.get()
    );
    match result {
        Ok(r) => Ok(r?),
        // The forwarder's thread ended without an outcome: it panicked.
        Err(_) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the forwarder sends its outcome before it ends"),
        },
    }
}

/// The buffer opened (sled may finish a rebuild or salvage a damaged database first), the
/// sink built and the forwarder ready to start. Blocks.
fn open_forwarder(
    cfg: &Config,
    deliveries: crate::sink::Deliveries,
    metrics: Arc<Metrics>,
    hubs: Hubs,
    connection: crate::sink::Connection,
) -> Result<Forwarder, RunError> {
    let buffer = open_buffer(&cfg.buffer, &metrics)?;
    let sink = crate::sink::open(&cfg.sink, deliveries, metrics.clone(), hubs, connection)?;
    let decoder = Decoder::starting(cfg, metrics.clone());
    Ok(Forwarder::new(
        &cfg.buffer,
        cfg.record.dedup_window,
        decoder,
        buffer,
        sink,
        metrics,
    )?)
}

/// The buffer at `cfg.path`. On a file system that takes no writes (a card turned read-only
/// or shut down after a failed write, until the next boot checks it: [`buffer::disk::card_failed`]),
/// one that refuses every record ([`ReadOnlyStore`]), so that the sources go on through a
/// sink that confirms instead of stopping with the agent at every restart; the problem
/// `buffer_read_only`.
fn open_buffer(cfg: &BufferConfig, metrics: &Arc<Metrics>) -> Result<Buffer, BufferError> {
    let opened = crate::files::create_private_dir(&cfg.path)
        .map_err(|e| BufferError::Storage(format!("{}: {e}", cfg.path.display())))
        .and_then(|()| {
            warn_if_disk_smaller_than_cap(cfg);
            SledStore::open(&cfg.path)
        });
    let store: Box<dyn buffer::Store> = match opened {
        Ok(store) => Box::new(store),
        Err(_) if buffer::disk::card_failed(&cfg.path) => {
            let lock = buffer::BufferLock::take_read_only(&cfg.path)?;
            metrics.problem_now(
                "buffer_read_only",
                format!(
                    "buffer: {}: {}. Meanwhile hubgate runs without the buffer: records go to \
                     the sink from memory, each acknowledged on its confirmation; while the sink \
                     does not confirm, MQTT waits at its broker and serial and UDP frames past \
                     the frame queue are lost. The buffer's records stay on the card for the \
                     first start after the check",
                    cfg.path.display(),
                    buffer::disk::FAILED_CARD_HINT
                ),
            );
            Box::new(ReadOnlyStore::new(&cfg.path, lock))
        }
        Err(e) => return Err(e),
    };
    report_moved_aside(&cfg.path, metrics);
    Ok(Buffer::new(store, cfg, metrics.clone()))
}

/// Databases moved aside and kept in the buffer directory (see
/// [`crate::buffer::kept_aside`]): on the disk, outside `max_bytes`, until the operator
/// recovers (or, one a downgrade left, moves back) and removes them. The problem
/// `buffer_moved_aside`, once per start. So are those left in the state directory when
/// `buffer.path` is elsewhere ([`crate::buffer::left_in_state_directory`]), whose records
/// nothing sends: the problem `buffer_left_behind`.
fn report_moved_aside(buffer_dir: &std::path::Path, metrics: &Metrics) {
    let size = |bytes| format!("{bytes} bytes");
    if let Some(kept) = crate::buffer::kept_aside(buffer_dir, size) {
        metrics.problem_now(
            "buffer_moved_aside",
            format!("buffer: databases moved aside are kept, outside max_bytes: {kept}"),
        );
    }
    for state in crate::buffer::state_directories(false) {
        if let Some(left) = crate::buffer::left_in_state_directory(buffer_dir, &state, size) {
            metrics.problem_now("buffer_left_behind", format!("buffer: {left}"));
        }
    }
}

/// Start the hub provisioner of `sink` (see [`crate::sink::provision`]); it parks the
/// recTypes whose hubs it finds missing or refused on `parks`.
fn provisioner(sink: &SinkConfig, parks: mpsc::UnboundedSender<Park>) -> Hubs {
    match crate::sink::hub_setup(sink) {
        Some(setup) => crate::sink::provision::start(setup, parks),
        None => Hubs::unattended(Default::default()),
    }
}

/// Hand `hubs` the hub of every recType in `rec_types` (those the config foresees), with
/// `sink`'s key, so that missing ones are created (or their recTypes parked, with the reason)
/// before their first records. Sources start meanwhile.
fn ask_every_hub(hubs: &Hubs, sink: &SinkConfig, rec_types: &BTreeSet<String>) {
    let Some(names) = sink.hub_names() else {
        return;
    };
    match crate::sink::kafka_client_config(sink) {
        Ok(Some(client)) => {
            for rec_type in rec_types {
                hubs.ask(Some(rec_type), names.hub(rec_type), &client);
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!("hubs: cannot check them ({e})"),
    }
}

/// A buffer that cannot reach its cap before the disk fills is worth a warning at start
/// (`hubgate doctor` fails on the same rule).
fn warn_if_disk_smaller_than_cap(cfg: &BufferConfig) {
    if let Ok(room) = crate::buffer::disk::room_for_cap(cfg) {
        if !room.holds_the_cap() {
            log::warn!(
                "buffer: {} has {} bytes free, less than buffer.max_bytes + min_free ({}); a full disk is handled like a full buffer",
                cfg.path.display(),
                room.free,
                room.need
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `buffer stats` ages its oldest record as the drain does for `max_age`: a forward step
    /// of the clock after it was taken (NTP stepping a Pi from fake-hwclock's saved time) does
    /// not count, so a reading buffered a day is not shown a month old.
    #[test]
    fn the_oldest_records_age_leaves_out_the_clock_steps_after_it() {
        use crate::buffer::{encode, MemoryStore, Store};
        use std::time::{Duration, SystemTime};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (now_ms, day) = (crate::record::ms_since_epoch(now), 86_400_000);
        let record = |created_ms| {
            encode(&crate::record::Record {
                id: "r".into(),
                rec_type: "t".into(),
                key: "k".into(),
                created_ms,
                body: "{}".into(),
            })
        };
        let mut store = MemoryStore::default();
        assert_eq!(oldest_age(&store, now), None);
        store.insert(5, record(now_ms - 30 * day)).unwrap();
        store.insert(6, record(now_ms - day)).unwrap();
        let by_clock = oldest_age(&store, now);
        assert_eq!(by_clock, Some(Some(Duration::from_millis(30 * day))));
        let mut steps = clock_steps::ClockSteps::default();
        steps.stepped(6, 29 * day);
        store.state_set(b"clock-steps", &steps.encode()).unwrap();
        let by_drain = oldest_age(&store, now);
        assert_eq!(by_drain, Some(Some(Duration::from_millis(day))));
        store.remove(5).unwrap();
        store.insert(4, record(0)).unwrap();
        assert_eq!(oldest_age(&store, now), Some(None));
    }

    /// A database moved aside and kept, by a salvage or by a downgrade, is one
    /// `buffer_moved_aside` per start; none, none.
    #[test]
    fn a_database_moved_aside_is_a_problem_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        report_moved_aside(dir.path(), &metrics);
        assert_eq!(metrics.problems("buffer_moved_aside"), 0);
        std::fs::create_dir_all(dir.path().join("sled.layout2-20261206T120000Z")).unwrap();
        report_moved_aside(dir.path(), &metrics);
        assert_eq!(metrics.problems("buffer_moved_aside"), 1);
        std::fs::create_dir_all(dir.path().join("sled.broken-1").join("values")).unwrap();
        report_moved_aside(dir.path(), &metrics);
        assert_eq!(metrics.problems("buffer_moved_aside"), 2);
    }
}
