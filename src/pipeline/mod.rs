//! Wiring: sources -> forwarder (decode, buffer, sink), and an orderly shutdown.

pub(crate) mod clock_steps;
mod dedup;
mod forwarder;
mod health;
mod ledger;
#[cfg(test)]
mod model;
pub mod prepare;

use tokio::sync::{mpsc, watch};

use crate::buffer::{self, Buffer, SledStore};
use crate::config::{Config, SinkConfig, SourceConfig};
use crate::decode::Decoder;
use crate::metrics::{self, Metrics};
use crate::notify;
use crate::sink::provision::Hubs;
use crate::source;
use crate::status::{self, Status};
use std::collections::BTreeSet;
use std::sync::Arc;

pub use forwarder::{Forwarder, Inputs};
use forwarder::{NewSink, Park};

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
    Buffer(#[from] crate::buffer::BufferError),
    #[error(transparent)]
    Sink(#[from] crate::sink::OpenError),
    #[error(transparent)]
    Listen(#[from] crate::source::BindError),
    #[error("cannot start the forwarder: {0}")]
    Forwarder(std::io::Error),
}

/// Run the agent, with the parts [`prepare::prepare`] built from `cfg`, until `stop`
/// resolves or every source has ended and all is delivered. A message on `reload` (SIGHUP)
/// has the codec directory loaded again and the connection string file read again (a new
/// key there rebuilds the sink).
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
    let forwarder = {
        let (cfg, metrics, deliveries) = (cfg.clone(), metrics.clone(), delivery_tx.clone());
        // Moved: the sink holds the only handles, so after a key rotation this provisioner's
        // thread ends with the sink it served.
        crate::blocking::run(move || open_forwarder(&cfg, deliveries, metrics, hubs)).await?
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
    let tasks = sources.spawn(|origin, patience| source::Context {
        frames: match patience {
            source::Patience::CanWait => patient_tx.of_source(origin),
            source::Patience::CannotWait => urgent_tx.of_source(origin),
        },
        stopping: stopping_rx.clone(),
        acked: acked_rx.clone(),
        metrics: metrics.clone(),
    });
    drop((urgent_tx, patient_tx));

    let (sink_tx, sink_rx) = mpsc::channel(1);
    let codecs = forwarder.codec_reloader();
    let rotation = tokio::spawn(reload_on_request(
        cfg.sink.clone(),
        delivery_tx,
        sink_tx,
        (reload, codecs.clone()),
        metrics.clone(),
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
    // Aborting the task leaves a codec reload running on the blocking pool, which the
    // runtime's end waits for: it stops before its next file.
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
) -> Result<Forwarder, RunError> {
    std::fs::create_dir_all(&cfg.buffer.path).map_err(|e| {
        crate::buffer::BufferError::Storage(format!("{}: {e}", cfg.buffer.path.display()))
    })?;
    warn_if_disk_smaller_than_cap(&cfg.buffer);
    let store = SledStore::open(&cfg.buffer.path)?;
    report_moved_aside(&cfg.buffer.path, &metrics);
    let buffer = Buffer::new(Box::new(store), &cfg.buffer, metrics.clone());
    let sink = crate::sink::open(&cfg.sink, deliveries, metrics.clone(), hubs)?;
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

/// Databases moved aside and kept in the buffer directory (see
/// [`crate::buffer::moved_aside`]): on the disk, outside `max_bytes`, until the operator
/// recovers and removes them. The problem `buffer_moved_aside`, once per start.
fn report_moved_aside(buffer_dir: &std::path::Path, metrics: &Metrics) {
    let kept = crate::buffer::moved_aside(buffer_dir);
    if kept.is_empty() {
        return;
    }
    let list: Vec<String> = kept
        .iter()
        .map(|(p, bytes)| format!("{} ({bytes} bytes)", p.display()))
        .collect();
    metrics.problem_now(
        "buffer_moved_aside",
        format!(
            "buffer: {} database(s) moved aside are kept, outside max_bytes: {}; {}",
            kept.len(),
            list.join(", "),
            crate::buffer::MOVED_ASIDE_ADVICE
        ),
    );
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

/// How often the connection string file is checked for a new key.
const SECRET_POLL: std::time::Duration = std::time::Duration::from_secs(10);

type ConnectionSecret = crate::secret::Secret<crate::connection_string::ConnectionString>;

/// An Event Hubs sink's `connection_string_file`, watched for a key rotation. A check reads
/// the file (small: at most 64 KiB) and compares its connection string with the one in use,
/// rather than looking at its mtime: so a key written after the config read it (during a slow
/// start) is seen at the first check, so is one whose write kept the mtime (`cp -p`, `rsync
/// -a`, a rewrite within one timestamp tick), and a rotation that failed (the file unreadable,
/// the sink not built) is tried again at each check until it goes through.
#[derive(Clone)]
struct KeyFile {
    file: std::path::PathBuf,
    in_use: ConnectionSecret,
    /// The last failure, and whether it was logged: each failure once, and a check's only
    /// when the check before failed alike (a file caught between its truncation and its
    /// write is `empty` once, and no error).
    failure: Option<(String, bool)>,
}

impl KeyFile {
    /// The file to watch; none (and no checks) without an Event Hubs `connection_string_file`.
    fn of(cfg: &crate::config::SinkConfig) -> Option<KeyFile> {
        let crate::config::SinkConfig::Eventhubs(eh) = cfg else {
            return None;
        };
        Some(KeyFile {
            file: eh.connection_string_file.clone()?,
            in_use: eh.connection_string.clone()?,
            failure: None,
        })
    }

    /// The file's connection string when it is not the one in use. Blocks (reads the file).
    fn changed(&self) -> Result<Option<ConnectionSecret>, String> {
        let key = crate::config::read_secret_file(&self.file)?;
        Ok((key.expose() != self.in_use.expose()).then_some(key))
    }

    /// The connection string is in use now (or was already): failures are over.
    fn in_use(&mut self, key: ConnectionSecret) {
        self.in_use = key;
        self.failure = None;
    }

    /// A rotation failed for `reason` (which names no secret); `asked` by SIGHUP, whose
    /// outcome is always logged.
    fn failed(&mut self, reason: String, asked: bool) {
        let (again, logged) = match &self.failure {
            Some((last, logged)) if *last == reason => (true, *logged),
            _ => (false, false),
        };
        let log = asked || (again && !logged);
        if log {
            log::error!("key rotation: {reason}; keeping the current sink");
        }
        self.failure = Some((reason, logged || log));
    }
}

/// SIGHUP (`reload`) loads the codec directory again, on the blocking pool. Key rotation: on
/// SIGHUP, and every [`SECRET_POLL`], the connection string file (if any) is read again
/// ([`KeyFile`]) and, when it holds another connection string than the sink's, one that
/// passes the start's checks, the forwarder gets a new sink; existing Kafka sessions would
/// otherwise keep the old key alive. Nothing else rebuilds the sink: a new producer
/// reconnects and resends what was in flight. The new sink comes with a hub provisioner of
/// its own, which looks at the hubs of `rec_types` with the new key at once: the old one's
/// refusals and retry waits were earned by the old key. Returns once there is nothing left
/// to wait for.
async fn reload_on_request(
    sink_cfg: SinkConfig,
    deliveries: crate::sink::Deliveries,
    new_sinks: mpsc::Sender<NewSink>,
    (mut reload, codecs): (mpsc::Receiver<()>, crate::decode::Reloader),
    metrics: std::sync::Arc<Metrics>,
    rec_types: BTreeSet<String>,
) {
    let mut keys = KeyFile::of(&sink_cfg);
    let mut poll = tokio::time::interval(SECRET_POLL);
    poll.tick().await;
    let mut reload_open = true;
    loop {
        let asked = tokio::select! {
            r = reload.recv(), if reload_open => {
                if r.is_none() {
                    reload_open = false;
                    continue;
                }
                log::info!("reload requested");
                let codecs = codecs.clone();
                crate::blocking::run(move || codecs.reload()).await;
                true
            }
            // Nothing to watch, no wake-ups.
            _ = poll.tick(), if keys.is_some() => false,
            else => return,
        };
        let Some(keys) = keys.as_mut() else {
            continue;
        };
        let watched = keys.clone();
        let changed = crate::blocking::run(move || watched.changed()).await;
        let key = match changed {
            Ok(Some(key)) => key,
            Ok(None) => {
                if asked {
                    log::info!("key rotation: the connection string is the same; keeping the sink");
                }
                keys.failure = None;
                continue;
            }
            Err(e) => {
                keys.failed(e, asked);
                continue;
            }
        };
        if !asked {
            log::info!("connection string file changed");
        }
        let mut cfg = sink_cfg.clone();
        if let SinkConfig::Eventhubs(eh) = &mut cfg {
            eh.connection_string = Some(key.clone());
        }
        // The rules a start holds the connection string to (`hub_mode = "single"` needs its
        // EntityPath): a rotation that broke one would send records where nobody reads them,
        // and the next start would refuse the file.
        if let Err((at, reason)) = crate::sink::check(&cfg) {
            let reason = format!("{}: {at}: {reason}", keys.file.display());
            keys.failed(reason, asked);
            continue;
        }
        // The slot first: a built producer must never be dropped here (dropping one blocks
        // while it winds down), not even when the forwarder is gone.
        let Ok(slot) = new_sinks.reserve().await else {
            return;
        };
        // Its thread ends with the last handle: at once if the sink is not built.
        let (parks_tx, parks) = mpsc::unbounded_channel();
        let hubs = provisioner(&cfg, parks_tx);
        let built = {
            let (cfg, deliveries, metrics) = (cfg.clone(), deliveries.clone(), metrics.clone());
            let hubs = hubs.clone();
            crate::blocking::run(move || crate::sink::open(&cfg, deliveries, metrics, hubs)).await
        };
        match built {
            Ok(sink) => {
                slot.send(NewSink { sink, parks });
                keys.in_use(key);
                ask_every_hub(&hubs, &cfg, &rec_types);
            }
            Err(e) => keys.failed(e.to_string(), asked),
        }
    }
}

/// A buffer that cannot reach its cap before the disk fills is worth a warning at start
/// (`hubgate doctor` fails on the same rule).
fn warn_if_disk_smaller_than_cap(cfg: &crate::config::BufferConfig) {
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
    use crate::connection_string::ConnectionString;
    use std::path::Path;

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

    fn connection_string(key: &str) -> String {
        format!("Endpoint=sb://ns.example:9093/;SharedAccessKeyName=send;SharedAccessKey={key}")
    }

    /// The watch of `dir`'s config, whose connection string file holds `key`; and that file.
    fn key_file(dir: &Path, key: &str) -> (KeyFile, std::path::PathBuf) {
        let secret = dir.join("eventhubs.secret");
        std::fs::write(&secret, connection_string(key)).unwrap();
        let config = dir.join("hubgate.toml");
        let text = format!(
            "[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"eventhubs\"\nconnection_string_file = \"{}\"\n",
            secret.display()
        );
        std::fs::write(&config, text).unwrap();
        let cfg = Config::load(&config).unwrap();
        (KeyFile::of(&cfg.sink).unwrap(), secret)
    }

    /// A check compares the key itself: one written after the config read the file is a
    /// change, even when the write kept the file's mtime (`cp -p`, one timestamp tick).
    #[test]
    fn a_key_file_change_is_its_key_not_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, secret) = key_file(dir.path(), "b2xk");
        assert!(keys.changed().unwrap().is_none());
        let mtime = std::fs::metadata(&secret).unwrap().modified().unwrap();
        std::fs::write(&secret, connection_string("bmV3")).unwrap();
        let file = std::fs::File::options().write(true).open(&secret).unwrap();
        file.set_modified(mtime).unwrap();
        let new = keys.changed().unwrap().expect("the new key is a change");
        assert!(*new.expose() == ConnectionString::parse(&connection_string("bmV3")).unwrap());
    }

    /// A rotation that failed (the sink not built, the check refused it) leaves the old key
    /// in use: each check reports the new one again until one goes through. Its failure is
    /// logged once: at the second check that meets it (a file caught half-written is no
    /// error), or at once on SIGHUP.
    #[test]
    fn a_failed_rotation_is_tried_again_and_logged_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut keys, secret) = key_file(dir.path(), "b2xk");
        std::fs::write(&secret, connection_string("bmV3")).unwrap();
        let new = keys.changed().unwrap().expect("the new key");
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), false)));
        assert!(
            keys.changed().unwrap().is_some(),
            "the failed rotation is not tried again"
        );
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), true)));
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), true)));
        keys.failed("sink: other".into(), true);
        assert_eq!(keys.failure, Some(("sink: other".into(), true)));
        keys.in_use(new);
        assert_eq!(keys.failure, None);
        assert!(keys.changed().unwrap().is_none());
    }

    /// With no connection string file there is nothing to check: only SIGHUP wakes the loop
    /// (no wake-up every `SECRET_POLL`), and once SIGHUP is gone the loop ends.
    #[tokio::test]
    async fn without_a_key_file_only_sighup_wakes_the_reload_loop() {
        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
        let metrics = Metrics::new();
        let codecs = crate::decode::Decoder::new(&cfg, metrics.clone()).reloader();
        let (_, reload) = mpsc::channel(1);
        let (deliveries, _) = mpsc::unbounded_channel();
        let (new_sinks, _sinks) = mpsc::channel(1);
        let task = reload_on_request(
            cfg.sink,
            deliveries,
            new_sinks,
            (reload, codecs),
            metrics,
            BTreeSet::new(),
        );
        tokio::time::timeout(SECRET_POLL / 2, task)
            .await
            .expect("the loop went on with nothing to wait for");
    }

    /// A database moved aside and kept is one `buffer_moved_aside` per start; none, none.
    #[test]
    fn a_database_moved_aside_is_a_problem_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        report_moved_aside(dir.path(), &metrics);
        assert_eq!(metrics.problems("buffer_moved_aside"), 0);
        std::fs::create_dir_all(dir.path().join("sled.broken-1").join("values")).unwrap();
        report_moved_aside(dir.path(), &metrics);
        assert_eq!(metrics.problems("buffer_moved_aside"), 1);
    }
}
