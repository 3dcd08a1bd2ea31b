//! Sinks: where records go. Each reports every record's fate as a [`Delivery`] on a
//! channel, so the pipeline can acknowledge sources and clean the buffer on confirmation.

pub mod eventhubs;
pub mod kafka;
pub mod probe;
pub mod properties;
pub mod stdout;

use tokio::sync::mpsc::UnboundedSender;

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
    #[error("{0} (hub missing or not writable with this key; will retry)")]
    Park(String),
    /// This record can never be accepted (too large): dead-letter it.
    #[error("{0} (record rejected for good)")]
    Reject(String),
}

impl SinkError {
    /// The class as a metric label.
    pub fn class(&self) -> &'static str {
        match self {
            SinkError::Retry(_) => "retry",
            SinkError::Park(_) => "park",
            SinkError::Reject(_) => "reject",
        }
    }
}

pub type Deliveries = UnboundedSender<Delivery>;

pub trait Sink: Send {
    /// Hand one record over. `Err` means it was not taken (the queue is full, or it is
    /// rejected); `Ok` means a [`Delivery`] for `seq` will follow. A confirmed delivery
    /// carries the bytes the sink handed on for the record: for Kafka the value, key and
    /// headers given to the producer (before compression and protocol framing), for stdout
    /// the line written.
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError>;
    /// Housekeeping, every forwarder tick (100 ms). `true`: the sink started over (a new
    /// producer) and has reported what the old one held, as far as it could.
    fn tick(&mut self) -> bool {
        false
    }
    /// Wait up to `timeout` for outstanding deliveries (on shutdown).
    fn flush(&mut self, timeout: std::time::Duration);
}

/// Which of `hubs` do not exist (for `provisioning = "precreated"`), by the sink's
/// [`probe`]; `None` (said in the log) when the broker could not be asked. Sinks without
/// hubs have none missing. Blocks up to `timeout`.
pub fn missing_hubs(
    cfg: &SinkConfig,
    hubs: &[&str],
    timeout: std::time::Duration,
) -> Option<Vec<String>> {
    let listed = match kafka_client_config(cfg) {
        Ok(Some(client)) => probe::hubs(&client, timeout),
        Ok(None) => return Some(Vec::new()),
        Err(e) => Err(e.to_string()),
    };
    match listed {
        Ok(present) => Some(
            hubs.iter()
                .filter(|h| !present.contains_key(**h))
                .map(|h| h.to_string())
                .collect(),
        ),
        Err(e) => {
            log::warn!(
                "cannot list hubs at start ({e}); a missing hub will show when records go to it"
            );
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sink: {0}")]
pub struct OpenError(pub String);

/// Build the sink of `cfg` without starting it: its properties checked (see
/// [`properties::check`]) and its librdkafka settings made. Returns warnings; on error
/// (key path, reason).
pub fn check(cfg: &SinkConfig) -> Result<Vec<String>, (String, String)> {
    properties::check(cfg)?;
    let client = kafka_client_config(cfg).map_err(|e| ("sink".to_string(), e.0))?;
    if let Some(client) = client {
        client
            .create_native_config()
            .map_err(|e| ("sink".to_string(), properties::config_error(&e)))?;
    }
    Ok(properties::warnings(cfg))
}

pub fn open(
    cfg: &SinkConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
) -> Result<Box<dyn Sink>, OpenError> {
    match cfg {
        SinkConfig::Eventhubs(eh) => Ok(Box::new(eventhubs::open(eh, deliveries, metrics)?)),
        SinkConfig::Kafka(k) => Ok(Box::new(kafka::open(k, deliveries, metrics)?)),
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
