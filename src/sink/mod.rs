//! Sinks: where records go. Each reports every record's fate as a [`Delivery`] on a
//! channel, so the pipeline can acknowledge sources and clean the buffer on confirmation.

pub mod eventhubs;
mod first_write;
pub mod kafka;
mod polled;
pub mod probe;
pub mod properties;
pub mod provision;
pub mod refusal;
pub mod stdout;
mod stuck;

use tokio::sync::mpsc::UnboundedSender;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::config::SinkConfig;
use crate::metrics::Metrics;
use crate::record::Record;

/// The fate of the record sent with sequence number `seq`.
#[derive(Debug)]
pub struct Delivery {
    pub seq: u64,
    /// `Ok`: confirmed, with the bytes handed over for it (see [`Sink::send`]).
    pub result: Result<u64, SinkError>,
}

/// Why a record did not get through, classified as in docs/design.md "Error classes".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    /// Transport trouble, timeouts, throttling (incl. `POLICY_VIOLATION`): try again later.
    #[error("{0} (will retry)")]
    Retry(String),
    /// The hub of this record's recType is missing or refuses this key: park that recType
    /// (keep buffering it, retry later) while the others keep flowing.
    #[error("{0} (will retry)")]
    Park(refusal::Refusal),
    /// This record can never be accepted (too large): dead-letter it.
    #[error("{0} (record rejected for good)")]
    Reject(String),
    /// The broker refused this record sent alone (a check of its hub: `INVALID_RECORD`, a
    /// size limit): the record's fault, or its hub's if the hub refuses every record. The
    /// forwarder keeps it and parks the recType, and dead-letters it only if the hub refuses it
    /// again after taking a record sent later.
    #[error("{0} (kept)")]
    Doubt(refusal::Refusal),
}

impl SinkError {
    /// Every class, as [`SinkError::class`] names them.
    pub const CLASSES: [&'static str; 3] = ["retry", "park", "reject"];

    /// The class as a metric label.
    pub fn class(&self) -> &'static str {
        match self {
            SinkError::Retry(_) => "retry",
            SinkError::Park(_) | SinkError::Doubt(_) => "park",
            SinkError::Reject(_) => "reject",
        }
    }
}

pub type Deliveries = UnboundedSender<Delivery>;

pub trait Sink: Send {
    /// Hand one record over. `Err` means it was not taken (the queue is full, or it is
    /// rejected); `Ok` means a [`Delivery`] for `seq` will follow, unless the sink starts over
    /// or is dropped first (the forwarder then sends what got none again). A confirmed delivery
    /// carries the bytes the sink handed on for the record: for Kafka the value, key and
    /// headers given to the producer (before compression and protocol framing), for stdout
    /// the line written.
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError>;
    /// Housekeeping, every forwarder tick (100 ms; 1 s while idle). `true`: the sink started over (a new
    /// producer) and has made every report the old one will make.
    fn tick(&mut self) -> bool {
        false
    }
    /// Notified when the sink has reports to [serve](Sink::serve) on the forwarder's
    /// thread; `None`: its reports come on the channel by themselves. The same for the
    /// sink's whole life.
    fn queued(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }
    /// Serve what the sink has queued (librdkafka's delivery reports, errors, statistics:
    /// its callbacks, and so the reports on the channel, run here), without waiting.
    fn serve(&mut self) {}
    /// Wait up to `timeout` for outstanding deliveries (on shutdown), serving them.
    fn flush(&mut self, timeout: std::time::Duration);
    /// Whether its connection is up as far as the sink knows ([`Connection::up`]): a stop
    /// (and key rotation) waits less for the confirmations of a sink that is not. A sink
    /// without a connection state is up (its failures show in its reports).
    fn up(&self) -> bool {
        true
    }
}

/// The connection state of the agent's sinks, as the last one to say so said: one for the
/// agent's life, handed to each sink it opens, so a sink that replaces another (key rotation)
/// goes on from the old one's state until its own client reports. `hubgate_kafka_connected`
/// shows it. A sink without a connection state (stdout) leaves it alone.
#[derive(Clone)]
pub struct Connection {
    /// [`Connection::UNKNOWN`] until a sink with a connection state opens.
    state: Arc<AtomicU8>,
    metrics: Arc<Metrics>,
}

impl Connection {
    const UNKNOWN: u8 = 0;
    const DOWN: u8 = 1;
    const UP: u8 = 2;

    pub fn new(metrics: Arc<Metrics>) -> Connection {
        Connection {
            state: Arc::new(AtomicU8::new(Self::UNKNOWN)),
            metrics,
        }
    }

    /// A sink with a connection state opened: not up until its client says so, unless a
    /// sink before it said so.
    pub fn opened(&self) {
        let first = self.state.compare_exchange(
            Self::UNKNOWN,
            Self::DOWN,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if first.is_ok() {
            self.metrics.kafka_connected.set("", 0);
        }
    }

    /// The sink's client says whether a connection is up. Called from one thread only, the
    /// one that serves the sink (the forwarder's): the state and the gauge are two stores, so
    /// two threads setting them at once could leave them disagreeing until the next report.
    pub fn set(&self, up: bool) {
        let state = if up { Self::UP } else { Self::DOWN };
        self.state.store(state, Ordering::Relaxed);
        self.metrics.kafka_connected.set("", u64::from(up));
    }

    /// Whether a sink said its connection up last; `false` before one opened.
    pub fn up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == Self::UP
    }
}

/// What the sink's broker answers are read against (see [`refusal::Setup`]); `None` for
/// sinks without hubs.
pub fn hub_setup(cfg: &SinkConfig) -> Option<refusal::Setup> {
    let (entity_path, partitions) = match cfg {
        SinkConfig::Eventhubs(eh) => (
            eh.connection_string
                .as_ref()
                .and_then(|cs| cs.expose().entity_path.clone()),
            eh.partitions,
        ),
        SinkConfig::Kafka(k) => (None, k.partitions),
        SinkConfig::Stdout(_) => return None,
    };
    Some(refusal::Setup {
        entity_path,
        partitions,
        auto: cfg.provisioning() == Some(crate::config::Provisioning::Auto),
        kafka: matches!(cfg, SinkConfig::Kafka(_)),
    })
}

#[derive(Debug, thiserror::Error)]
#[error("sink: {0}")]
pub struct OpenError(pub String);

/// Build the sink of `cfg` without starting it: its properties checked (see
/// [`properties::check`]) and its librdkafka settings made. Returns warnings; on error
/// (key path, reason).
pub fn check(cfg: &SinkConfig) -> Result<Vec<String>, (String, String)> {
    properties::check(cfg)?;
    if hub_setup(cfg).is_some_and(|s| !(1..=1024).contains(&s.partitions)) {
        return Err((
            "sink.partitions".into(),
            "must be 1-1024 (Event Hubs Standard allows 1-32, Premium 100, Dedicated 1024)".into(),
        ));
    }
    if let SinkConfig::Eventhubs(eh) = cfg {
        if eh.hub_mode == crate::config::HubMode::Single {
            if eh.entity_path().is_none() {
                return Err((
                    "sink.hub_mode".into(),
                    "\"single\" sends every recType to the hub the connection string names (EntityPath=...), and it names none".into(),
                ));
            }
            if !eh.hubs.is_empty() {
                return Err((
                    "sink.hubs".into(),
                    "hub_mode = \"single\" sends every recType to the EntityPath hub: remove [sink.hubs]".into(),
                ));
            }
        }
    }
    let client = kafka_client_config(cfg).map_err(|e| ("sink".to_string(), e.0))?;
    if let Some(client) = client {
        client
            .create_native_config()
            .map_err(|e| ("sink".to_string(), properties::config_error(&e)))?;
    }
    Ok(properties::warnings(cfg))
}

/// What `check` explains about the sink's setup without it being wrong (the connection
/// string's `EntityPath`).
pub fn notes(cfg: &SinkConfig) -> Vec<String> {
    match cfg {
        SinkConfig::Eventhubs(eh) => eventhubs::entity_path_note(eh).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Open the sink of `cfg`; a Kafka sink asks `hubs` for the hubs it writes to, and keeps its
/// connection state in `connection`.
pub fn open(
    cfg: &SinkConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
    hubs: provision::Hubs,
    connection: Connection,
) -> Result<Box<dyn Sink>, OpenError> {
    match cfg {
        SinkConfig::Eventhubs(eh) => Ok(Box::new(eventhubs::open(
            eh, deliveries, metrics, hubs, connection,
        )?)),
        SinkConfig::Kafka(k) => Ok(Box::new(kafka::open(
            k, deliveries, metrics, hubs, connection,
        )?)),
        SinkConfig::Stdout(s) => Ok(Box::new(stdout::StdoutSink::new(s.pretty, deliveries))),
    }
}

/// The librdkafka settings the sink of `cfg` uses (`None`: not a Kafka sink), so that the
/// [`probe`] and `hubgate doctor` connect exactly as the agent does.
pub fn kafka_client_config(
    cfg: &SinkConfig,
) -> Result<Option<rdkafka::config::ClientConfig>, OpenError> {
    match cfg {
        SinkConfig::Eventhubs(eh) => Ok(Some(eventhubs::sink_config(eh)?.0)),
        SinkConfig::Kafka(k) => Ok(Some(kafka::sink_config(k))),
        SinkConfig::Stdout(_) => Ok(None),
    }
}
