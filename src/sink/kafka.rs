//! Kafka sink (librdkafka): any Kafka broker, and the engine under the Event Hubs sink.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::ClientContext;
use tokio::sync::Notify;

use super::first_write::{Admit, FirstWrites};
use super::polled::Polled;
use super::properties::{is_false, setting_name};
use super::provision::Hubs;
use super::stuck::Timeouts;
use super::{Connection, Deliveries, Delivery, OpenError, Sink, SinkError};
use crate::config::{HubNames, KafkaConfig};
use crate::metrics::Metrics;
use crate::record::Record;

/// How often librdkafka reports broker states (the `hubgate_kafka_connected` gauge; a
/// confirmed record sets it to 1 at once).
const STATS_INTERVAL_MS: &str = "5000";

/// Producer settings hubgate relies on, whatever the broker: every record confirmed by all
/// in-sync replicas, and per-device order kept across retries.
///
/// Idempotence keeps librdkafka's own retries free of duplicates. The gap-less guarantee
/// turns a record refused for good (`POLICY_VIOLATION`) into a fatal producer error, so
/// nothing queued behind it is sent: the sink builds a new producer and the forwarder sends
/// the refused record and everything after it again, in order. Not the partition's next
/// request if librdkafka built it already, which it does while one is in flight: it goes out
/// after the refusal, and only a broker that checks its sequence number refuses it, which
/// Kafka does not for a producer's first write to a partition; so a new producer hands a
/// device's next record for a hub over only once the first is confirmed ([`FirstWrites`],
/// docs/durability.md, item 9).
///
/// One produce request in flight, whatever a site's `[sink.properties]` ask: records queue
/// into the next batch meanwhile. With more, a refused request's records were written after
/// the ones of the requests sent behind it (`tests/sink_errors.rs`, throttling: FCnt 2, 3, 1,
/// 4, ... with 5 on librdkafka's mock broker, which does not check the idempotent producer's
/// sequence numbers, nor need every broker), and librdkafka's broker thread busy-loops while
/// a partition waits for 5 or more records (docs/performance.md, "Pipelined produce requests").
pub fn base_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set(IN_FLIGHT, ONE_REQUEST)
        .set("linger.ms", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .set("socket.keepalive.enable", "true")
        .set("statistics.interval.ms", STATS_INTERVAL_MS);
    c
}

/// How long librdkafka tries a record, unless a site's `[sink.properties]` say otherwise.
const MESSAGE_TIMEOUT_MS: u64 = 120_000;

/// Produce requests in flight per broker connection.
const IN_FLIGHT: &str = "max.in.flight.requests.per.connection";
const ONE_REQUEST: &str = "1";

/// Everything the sink sets, from the config.
pub fn sink_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base_config();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("security.protocol", cfg.security_protocol.as_librdkafka());
    if let Some(user) = &cfg.sasl_username {
        c.set("sasl.mechanisms", cfg.sasl_mechanism.as_librdkafka())
            .set("sasl.username", user);
    }
    if let Some(pw) = &cfg.sasl_password {
        c.set("sasl.password", pw.expose());
    }
    if let Some(ca) = &cfg.ca_location {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    c.set("compression.codec", cfg.compression.as_librdkafka());
    site_settings(&mut c, &cfg.properties);
    c
}

pub fn open(
    cfg: &KafkaConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
    hubs: Hubs,
    connection: Connection,
) -> Result<KafkaSink, OpenError> {
    KafkaSink::new(
        sink_config(cfg),
        HubNames::mapped(cfg.topics.clone()),
        deliveries,
        metrics,
        hubs,
        connection,
    )
}

/// What the site's config adds to a preset: `[sink.properties]`, which win, but for the
/// number of produce requests in flight, which stays one ([`base_config`]). The producer never
/// asks the broker to create a missing topic in its metadata requests: hubs are the
/// provisioner's, made through CreateTopics with the configured partition count, and a hub a
/// broker made on a metadata request would have the broker's default count and race the
/// provisioner. The properties go under the name hubgate uses ([`setting_name`]). The gap-less
/// guarantee needs idempotence, so it goes when that is turned off (`check` refuses that in
/// `[sink.properties]`; the benchmark's broker-alone producer may).
///
/// Without a CA of the site's own, librdkafka trusts what the linked OpenSSL's default paths
/// hold. A vendored OpenSSL's default directory is its build prefix, which holds nothing on
/// a gateway, so those builds look for the system's CA store where distributions keep it.
pub fn site_settings(c: &mut ClientConfig, properties: &BTreeMap<String, String>) {
    c.set("allow.auto.create.topics", "false");
    for (k, v) in properties {
        c.set(setting_name(k), v);
    }
    if c.get("enable.idempotence").is_some_and(is_false) {
        c.set("enable.gapless.guarantee", "false");
    }
    if c.get(IN_FLIGHT) != Some(ONE_REQUEST) {
        log::warn!(
            "kafka: {IN_FLIGHT} stays 1: with more, a refused request's records can be written \
             after those of the requests sent behind it"
        );
        c.set(IN_FLIGHT, ONE_REQUEST);
    }
    if VENDORED_OPENSSL && c.get("ssl.ca.location").is_none() && c.get("ssl.ca.pem").is_none() {
        c.set("ssl.ca.location", "probe");
    }
}

/// Whether OpenSSL is built in (feature `vendored-openssl`) rather than the system's.
pub const VENDORED_OPENSSL: bool = cfg!(feature = "vendored-openssl");

/// What lasts as long as the sink: held by the sink, and a clone of it by each of its
/// producers' contexts.
#[derive(Clone)]
struct Shared {
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
    hubs: Hubs,
    refused: Refused,
    /// Whether a broker connection is up, as the statistics, an all-brokers-down error and
    /// a confirmation say.
    connection: Connection,
}

impl Shared {
    /// The records refused in batches, as they are even after a panic while
    /// another thread held them.
    fn refused(&self) -> MutexGuard<'_, RefusedIn> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct DeliveryContext {
    shared: Shared,
    /// The producer's settings, for the provisioner when a write finds its hub missing.
    config: ClientConfig,
    /// Whether this producer puts more than one record in a batch.
    batched: bool,
    /// This producer's first records of each key.
    first: FirstWrites,
    /// When its records were confirmed and whether one timed out since (see [`Sink::tick`]).
    timeouts: Timeouts,
    /// A client error reported whose second handing over is still to come (see
    /// [`DeliveryContext::first_report`]).
    echo: Mutex<Option<String>>,
}

/// Per topic and partition, the last record (its seq) of those a broker refused in batches
/// ([`BatchRefusal`]), until it is through: shared by the sink and its producers' contexts (see
/// [`DeliveryContext::delivery`]). By partition, as librdkafka sends each partition's
/// batches on their own and serves partitions in turn: a later record of another partition
/// is often confirmed before the refused ones.
/// With when that ends if no report for it comes: [`ONE_BY_ONE_FOR`] after the last refusal
/// there.
type Refused = Arc<Mutex<RefusedIn>>;
/// By topic and partition: see [`Refused`].
type RefusedIn = HashMap<(String, i32), (u64, Instant)>;

/// How long after the last refusal in a partition its records are still sent alone, when no
/// report for the last refused record or a later one of that partition came: the refused
/// record may never come back (its recType parked, its age past `max_age`), and one record
/// per round trip is slow for a backlog. If some are still to go, they are refused in a
/// batch again, and sent alone again.
const ONE_BY_ONE_FOR: Duration = Duration::from_secs(600);

/// librdkafka's descriptions of the broker's refusals of a batch ([`BatchRefusal`]), as a
/// fatal error's reason quotes them.
const BATCH_REFUSED: [&str; 3] = [
    "Broker: Message size too large",
    "Broker: Message batch larger than configured server segment size",
    "Broker: Broker failed to validate record",
];

/// What makes a producer send each record in a batch of its own.
const ALONE: (&str, &str) = ("batch.num.messages", "1");

/// The part of librdkafka's statistics that says whether a broker connection is up.
#[derive(serde::Deserialize)]
struct Stats {
    brokers: HashMap<String, BrokerStats>,
}

#[derive(serde::Deserialize)]
struct BrokerStats {
    source: String,
    state: String,
}

/// librdkafka log lines the gap-less guarantee makes routine: its "experimental" warning
/// at every start and the fatal error it raises for a refused record.
pub fn is_routine(log_message: &str) -> bool {
    log_message.contains("enable.gapless.guarantee is experimental")
        || log_message.contains("Gap-less ordering would not be guaranteed")
}

impl ClientContext for DeliveryContext {
    /// librdkafka's log, less what is [routine](is_routine) (a refused record is counted
    /// and logged as a sink error; the producer is replaced).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let level = if is_routine(log_message) {
            RDKafkaLogLevel::Debug
        } else {
            level
        };
        DefaultClientContext.log(level, fac, log_message);
    }

    /// An error of the client as a whole (a broker unreachable, all of them down): counted
    /// and logged rate-limited, as the problem `kafka_client_error`; librdkafka reconnects
    /// by itself, and through an outage reports one every few seconds. A fatal one is only
    /// logged at debug level: the sink replaces the producer and says why.
    fn error(&self, error: KafkaError, reason: &str) {
        let line = format!("kafka: {error}: {reason}");
        if !self.first_report(&line) {
            return;
        }
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.connected(false),
            // The sink replaces the producer at its next tick and says why.
            Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::GaplessGuarantee) => {
                log::debug!("{line}");
                return;
            }
            _ => {}
        }
        self.shared.metrics.problem("kafka_client_error", || line);
    }

    /// Connected = some real broker (configured or learned, not librdkafka's internal one)
    /// has finished connecting, TLS and authentication included.
    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(s) = serde_json::from_slice::<Stats>(statistics) {
            let up = s
                .brokers
                .values()
                .any(|b| matches!(b.source.as_str(), "configured" | "learned") && b.state == "UP");
            self.connected(up);
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<u64>;

    /// A record purged from a producer being replaced or dropped gets no report: the
    /// forwarder sends what got none again once the old producer is gone, with no failure
    /// counted and no back-off (nothing is wrong with the sink).
    ///
    /// A broker's `MESSAGE_TOO_LARGE` is about a whole batch (Kafka checks a topic's
    /// `max.message.bytes` against the batch, and librdkafka gives the error to every record
    /// in it), unlike librdkafka's own refusal at hand-over, which is about the one record;
    /// so are the other refusals of [`BatchRefusal`]. From a producer that batches, they are
    /// `Retry`: the sink's next producer sends each record alone until the last one refused
    /// is through, and a record refused alone is reported as [`SinkError::Doubt`].
    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        let seq = *seq;
        let msg = match result {
            Ok(m) | Err((_, m)) => m,
        };
        let place = (msg.topic(), msg.partition());
        let timed_out = matches!(result, Err((e, _)) if error_code(e) == Some(RDKafkaErrorCode::MessageTimedOut));
        if timed_out {
            self.timeouts.timed_out();
        } else if result.is_ok() {
            self.timeouts.confirmed(Instant::now());
            // A broker connection is up: said at once, not at the next statistics (a stop
            // waits less for a sink not known to be up); only when not said so already (no
            // lock on the gauge per record).
            if !self.shared.connection.up() {
                self.connected(true);
            }
        }
        let result = match result {
            Ok(m) => {
                self.shared.hubs.delivered(m.topic());
                Ok(handed_over(m))
            }
            Err((e, _)) if is_purged(e) => return,
            Err((e, _)) => match BatchRefusal::of(e).filter(|_| self.batched) {
                Some(why) => Err(self.batch_refused(seq, place, e, why)),
                None => Err(doubted(
                    failed(e, place.0, &self.shared.hubs, &self.config),
                    e,
                    place.0,
                    &self.shared.hubs,
                )),
            },
        };
        let key = msg.key().and_then(|k| std::str::from_utf8(k).ok());
        self.first
            .reported(seq, place.0, key.unwrap_or(""), &result);
        if !self.batched {
            let mut refused = self.shared.refused();
            let key = (place.0.to_string(), place.1);
            match &result {
                // Refused alone: the producer goes on sending each record alone while refusals
                // last (a record sent again in a batch would be refused with it, and the
                // whole sink would wait as for any batch refused).
                Err(SinkError::Doubt(_)) => {
                    let (last, ends) = refused.entry(key).or_insert((seq, Instant::now()));
                    *last = (*last).max(seq);
                    *ends = Instant::now() + ONE_BY_ONE_FOR;
                }
                Ok(_) | Err(SinkError::Reject(_)) => {
                    if refused.get(&key).is_some_and(|&(last, _)| seq >= last) {
                        refused.remove(&key);
                    }
                }
                Err(_) => {}
            }
        }
        let _ = self.shared.deliveries.send(Delivery { seq, result });
    }
}

impl DeliveryContext {
    /// Whether client error `line` is a report of its own: rust-rdkafka hands each error
    /// event to the context twice, one right after the other (`Client::poll_event`, then
    /// `BaseProducer::poll` once more), so an error is taken for the second handing over of
    /// the one before when that one's is still to come and it says the same.
    fn first_report(&self, line: &str) -> bool {
        let mut echo = self.echo.lock().unwrap_or_else(|e| e.into_inner());
        if echo.as_deref() == Some(line) {
            *echo = None;
            false
        } else {
            *echo = Some(line.to_string());
            true
        }
    }

    /// Whether a broker connection is up.
    fn connected(&self, up: bool) {
        self.shared.connection.set(up);
    }

    /// Record `seq` was in a batch the broker refused (`why`) for `hub` (its partition
    /// `place.1`): to be sent again alone.
    fn batch_refused(
        &self,
        seq: u64,
        place: (&str, i32),
        e: &KafkaError,
        why: BatchRefusal,
    ) -> SinkError {
        let hub = place.0;
        let mut refused = self.shared.refused();
        let until = Instant::now() + ONE_BY_ONE_FOR;
        let (last, ends) = refused
            .entry((hub.to_string(), place.1))
            .or_insert((seq, until));
        *last = (*last).max(seq);
        *ends = until;
        match why {
            BatchRefusal::TooLarge => self.shared.metrics.problem("batch_too_large", || {
                format!(
                    "kafka: the broker refused a batch to {hub:?} as too large: the topic's \
                     max.message.bytes or segment.bytes (or the broker's message.max.bytes) is \
                     below the producer's batch.size ({}); its records are sent again one by \
                     one: lower batch.size in [sink.properties] or raise the topic's limit",
                    self.config.get("batch.size").unwrap_or("1000000")
                )
            }),
            BatchRefusal::Invalid => self.shared.metrics.problem("batch_invalid_record", || {
                format!(
                    "kafka: the broker refused a batch to {hub:?} for a record its checks refuse \
                     (INVALID_RECORD; a schema the broker validates): the batch's records are \
                     sent again one by one; a record refused alone is kept and {hub:?} parked \
                     until a later record is taken (the record is dead-lettered if refused \
                     again then) or the hub takes it"
                )
            }),
        }
        SinkError::Retry(format!("{e}, in a batch: sent again alone"))
    }
}

fn is_purged(e: &KafkaError) -> bool {
    matches!(
        error_code(e),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
    )
}

/// The bytes of a message as the producer was given them: value, key, header names and
/// values (what `hubgate_bytes_sent_total` counts; compression and Kafka framing not included).
fn handed_over(m: &BorrowedMessage<'_>) -> u64 {
    let headers = m.headers().map_or(0, |h| {
        h.iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
            .sum()
    });
    (m.payload_len() + m.key().map_or(0, <[u8]>::len) + headers) as u64
}

/// The broker's (or librdkafka's) error code in `e`, wherever it sits.
pub fn error_code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    match e {
        KafkaError::MessageProduction(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

/// [`classify`] a write to `hub` that failed, at hand-over or in its delivery report. A hub
/// not created yet, deleted since, or refused until the operator fixes it: the provisioner
/// (asked with `client`'s settings) looks again, throttled, and creates it anew if it may;
/// the forwarder parks the recType from this failure itself. So it looks after a timeout: a
/// producer waits for a hub it does not know to appear, and a short `message.timeout.ms`
/// ends the wait before librdkafka calls the hub missing.
fn failed(e: &KafkaError, hub: &str, hubs: &Hubs, client: &ClientConfig) -> SinkError {
    let failed = classify(e, hub, hubs, client);
    if matches!(failed, SinkError::Park(_))
        || error_code(e) == Some(RDKafkaErrorCode::MessageTimedOut)
    {
        hubs.ask(None, hub, client);
    }
    failed
}

/// A broker's refusal of a record in a report is no verdict on the record alone: a hub whose
/// checks refuse every record hubgate sends refuses each of them alike. The forwarder keeps
/// such a record and parks its recType ([`SinkError::Doubt`]) until a later record tells.
fn doubted(failed: SinkError, e: &KafkaError, hub: &str, hubs: &Hubs) -> SinkError {
    match (failed, error_code(e)) {
        (SinkError::Reject(text), Some(code)) => {
            SinkError::Doubt(hubs.setup().refuses_records(code, &text, hub))
        }
        (failed, _) => failed,
    }
}

/// What to check when the broker refuses the login of `client`'s settings: an Event Hubs
/// sink's connection string, a Kafka sink's SASL user and password. A Kafka sink without
/// SASL is refused for what it is without one: its TLS client certificate, or what the
/// broker's ACLs let it do.
pub fn login_hint(client: &ClientConfig) -> &'static str {
    match client.get("sasl.username") {
        Some(super::eventhubs::USERNAME) => {
            "check the connection string: the whole string is the password"
        }
        Some(_) => "check sasl_username and sasl_password (or the file sasl_password_file names)",
        None => {
            "no SASL login is configured (no sasl_username): check the TLS client certificate \
             and the broker's ACLs for this client"
        }
    }
}

/// A broker's refusal of a batch that is no verdict on each record in it.
#[derive(Debug, Clone, Copy)]
enum BatchRefusal {
    /// Larger than the topic's `max.message.bytes` (`MESSAGE_TOO_LARGE`) or log segment
    /// (`RECORD_LIST_TOO_LARGE`).
    TooLarge,
    /// A record in it that the topic's checks refuse: `INVALID_RECORD` for the whole batch
    /// when the broker does not name the record, and librdkafka's `INVALID_DIFFERENT_RECORD`
    /// for the others when it does.
    Invalid,
}

impl BatchRefusal {
    fn of(e: &KafkaError) -> Option<BatchRefusal> {
        use RDKafkaErrorCode as C;
        match error_code(e)? {
            C::MessageSizeTooLarge | C::MessageBatchTooLarge => Some(BatchRefusal::TooLarge),
            C::InvalidRecord | C::InvalidDifferentRecord => Some(BatchRefusal::Invalid),
            _ => None,
        }
    }
}

/// What to do about an error writing to `hub` with `client`'s settings (docs/design.md
/// "Error classes"). librdkafka gives up on `POLICY_VIOLATION` (Event Hubs throttling)
/// itself; hubgate retries it.
pub fn classify(e: &KafkaError, hub: &str, hubs: &Hubs, client: &ClientConfig) -> SinkError {
    use RDKafkaErrorCode as C;
    let code = error_code(e);
    let text = e.to_string();
    match code {
        // At hand-over, librdkafka's check of the one record; in a delivery report, see
        // `DeliveryContext::delivery`. `InvalidMessage` (CORRUPT_MESSAGE) is retriable.
        Some(
            C::MessageSizeTooLarge
            | C::MessageBatchTooLarge
            | C::InvalidMessageSize
            | C::InvalidRecord,
        ) => SinkError::Reject(text),
        // Nothing gets through until the credentials are fixed; keep retrying, loudly.
        Some(C::SaslAuthenticationFailed | C::Authentication | C::ClusterAuthorizationFailed) => {
            SinkError::Retry(format!(
                "authentication failed, {}: {text}",
                login_hint(client)
            ))
        }
        // The hub is missing or this key may not write to it: park that recType only.
        Some(code) => match hubs.refusal(code, &text, hub) {
            Some(refusal) => SinkError::Park(refusal),
            None => SinkError::Retry(text),
        },
        None => SinkError::Retry(text),
    }
}

pub struct KafkaSink {
    producer: Polled<DeliveryContext>,
    /// Kept to build a new producer when this one fails for good.
    config: ClientConfig,
    /// Where each recType goes; with a single hub, every record carries its recType in a
    /// header (`hub_mode = "single"`).
    names: HubNames,
    shared: Shared,
    /// Hubs already handed to the provisioner by this sink.
    asked: std::collections::HashSet<String>,
    /// When the producer was last replaced (see [`Sink::tick`]).
    rebuilt: Option<Instant>,
    /// Hubs this producer refused at hand-over as missing, and since when: librdkafka keeps a
    /// topic it saw vanish as missing, even once it exists again, until its periodic metadata
    /// refresh (minutes), so the producer is replaced when the provisioner finds one again.
    vanished: HashMap<String, Instant>,
    /// [`FLUSH_BEFORE_REPLACING`]; the tests give the mock cluster more on a loaded machine.
    flush_before_replacing: Duration,
    /// Whether the producer was built to send each record alone ([`ALONE`]): while there are
    /// records a broker refused in a batch for it (`shared.refused`).
    alone: bool,
    /// The producer's first records of each key (see [`FirstWrites`]).
    first: FirstWrites,
}

/// The least time between two producer replacements.
const REBUILD_MIN: Duration = Duration::from_secs(1);

/// How long a producer that still works may confirm what it holds before it is replaced
/// (the forwarder waits meanwhile); what it has not sent by then is sent again.
const FLUSH_BEFORE_REPLACING: Duration = Duration::from_secs(1);

/// How long a producer being replaced, with nothing left to send, may wait for the answers to
/// the requests it has in flight: a record the broker took and answered late is then
/// confirmed, not sent again and written twice. A healthy broker answers in milliseconds; one
/// that does not answer holds the forwarder this long (well inside the systemd watchdog's
/// three quarters of a minute).
const IN_FLIGHT_ANSWER: Duration = Duration::from_secs(10);

fn create(
    config: &ClientConfig,
    shared: &Shared,
    first: &FirstWrites,
    queued: Arc<Notify>,
) -> Result<Polled<DeliveryContext>, OpenError> {
    let context = DeliveryContext {
        shared: shared.clone(),
        config: config.clone(),
        batched: config.get(ALONE.0) != Some(ALONE.1),
        first: first.clone(),
        timeouts: Timeouts::default(),
        echo: Mutex::default(),
    };
    Polled::new(config, context, queued).map_err(|e| {
        OpenError(format!(
            "cannot create the Kafka producer: {}",
            super::properties::config_error(&e)
        ))
    })
}

impl KafkaSink {
    pub fn new(
        config: ClientConfig,
        names: HubNames,
        deliveries: Deliveries,
        metrics: Arc<Metrics>,
        hubs: Hubs,
        connection: Connection,
    ) -> Result<KafkaSink, OpenError> {
        // Not connected until librdkafka says so; a new sink after key rotation keeps the
        // state until its first report.
        connection.opened();
        // One for every producer of this sink: the forwarder waits on it.
        let queued = Arc::new(Notify::new());
        let shared = Shared {
            deliveries,
            metrics,
            hubs,
            refused: Refused::default(),
            connection,
        };
        let first = FirstWrites::default();
        let producer = create(&config, &shared, &first, queued)?;
        Ok(KafkaSink {
            producer,
            config,
            names,
            shared,
            asked: Default::default(),
            rebuilt: None,
            vanished: Default::default(),
            flush_before_replacing: FLUSH_BEFORE_REPLACING,
            alone: false,
            first,
        })
    }

    /// Whether records refused in a batch are not through yet (within
    /// [`ONE_BY_ONE_FOR`]).
    fn refused_in_batch(&self) -> bool {
        let mut refused = self.shared.refused();
        let now = Instant::now();
        refused.retain(|_, (_, ends)| *ends > now);
        !refused.is_empty()
    }

    /// How long librdkafka tries a record before it times out.
    fn message_timeout(&self) -> Duration {
        let ms = self
            .config
            .get("message.timeout.ms")
            .and_then(|v| v.parse().ok());
        Duration::from_millis(ms.unwrap_or(MESSAGE_TIMEOUT_MS))
    }

    /// A new producer with the current settings in place of the old one (see [`Sink::tick`]),
    /// sending each record `alone` (while records refused in a batch are not
    /// through).
    fn replace_producer(&mut self, alone: bool) -> bool {
        let queued = self.producer.queued().clone();
        let mut config = self.config.clone();
        if alone {
            config.set(ALONE.0, ALONE.1);
        }
        // A new producer is new to every partition. What the old one held back gets no
        // report, as what it still held: the forwarder sends it all again.
        let first = FirstWrites::default();
        match create(&config, &self.shared, &first, queued) {
            Ok(producer) => {
                drop(std::mem::replace(&mut self.producer, producer));
                self.vanished.clear();
                self.alone = alone;
                self.first = first;
                true
            }
            Err(e) => {
                self.shared
                    .metrics
                    .problem("producer_rebuild", || format!("kafka: {e}; trying again"));
                // The old producer goes on: what its flush confirmed lets held records go.
                self.release_held();
                false
            }
        }
    }

    fn topic<'a>(&'a self, rec_type: &'a str) -> &'a str {
        self.names.hub(rec_type)
    }

    /// Records held behind a device's first record in a hub that got its report: handed
    /// over once it is confirmed; failed with its error (to be sent again in order) once it
    /// failed, or from the first that the producer does not take. A producer that failed for
    /// good is replaced at the next tick, and what it held back then gets no report, as what
    /// it still held: the forwarder sends it again without counting a failure for each
    /// record (or backing off for them). Whether any were handed over.
    fn release_held(&mut self) -> bool {
        let released = self.first.released();
        if released.is_empty() || self.producer.client().fatal_error().is_some() {
            return false;
        }
        let mut handed = false;
        for released in released {
            let mut failed = released.first.err();
            for (seq, rec) in released.records {
                let result = match &failed {
                    Some(e) => Err(e.clone()),
                    None => match self.hand_over(seq, &rec) {
                        Ok(()) => {
                            handed = true;
                            continue;
                        }
                        Err(e) => {
                            failed = Some(SinkError::Retry(format!(
                                "held behind record {seq} of the device, which was not taken"
                            )));
                            Err(e)
                        }
                    },
                };
                let _ = self.shared.deliveries.send(Delivery { seq, result });
            }
        }
        handed
    }

    /// Before the producer is replaced: what it holds gets `flush_before_replacing` to be
    /// confirmed (unless it failed for good, when librdkafka has purged what it had not sent
    /// yet); what it has still not sent is purged (the next producer sends it), and the
    /// requests it has in flight get [`IN_FLIGHT_ANSWER`] to be answered.
    fn settle(&mut self) {
        if self.producer.client().fatal_error().is_none() {
            let _ = self.flush_all(self.flush_before_replacing);
        }
        self.producer.purge_unsent();
        let _ = self.producer.flush(IN_FLIGHT_ANSWER);
    }

    /// Flush for up to `timeout`, handing over what waited behind first records confirmed
    /// meanwhile (and flushing those too) while time is left.
    fn flush_all(&mut self, timeout: Duration) -> KafkaResult<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let flushed = self
                .producer
                .flush(deadline.saturating_duration_since(Instant::now()));
            if !self.release_held() || Instant::now() >= deadline {
                return flushed;
            }
        }
    }

    /// Give record `seq` to the producer.
    fn hand_over(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        let topic = self.topic(&rec.rec_type);
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(seq))
            .key(rec.key.as_bytes())
            .payload(rec.body.as_bytes());
        if self.names.single().is_some() {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: "recType",
                    value: Some(rec.rec_type.as_bytes()),
                },
            ));
        }
        let Err(e) = self.producer.send(record) else {
            return Ok(());
        };
        if let KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) = e {
            return Err(SinkError::Retry("local producer queue is full".into()));
        }
        let failed = failed(&e, topic, &self.shared.hubs, &self.config);
        if matches!(
            error_code(&e),
            Some(RDKafkaErrorCode::UnknownTopic | RDKafkaErrorCode::UnknownTopicOrPartition)
        ) {
            let hub = topic.to_string();
            self.vanished.entry(hub).or_insert_with(Instant::now);
        }
        Err(failed)
    }
}

impl Sink for KafkaSink {
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        if !self.asked.contains(self.topic(&rec.rec_type)) {
            // A hub new to this sink (maybe of a recType the config did not foresee).
            let topic = self.topic(&rec.rec_type).to_string();
            self.shared
                .hubs
                .ask(Some(&rec.rec_type), &topic, &self.config);
            self.asked.insert(topic);
        }
        let topic = self.topic(&rec.rec_type);
        if self.first.admit(seq, topic, rec) == Admit::Held {
            return Ok(());
        }
        let handed = self.hand_over(seq, rec);
        if handed.is_err() {
            let topic = self.topic(&rec.rec_type);
            self.first.not_taken(seq, topic, &rec.key);
        }
        handed
    }

    /// A producer that failed for good takes no more records: replace it, with the same
    /// settings, unless the broker will not have an idempotent producer (it does not
    /// support one, or the key lacks the right): then without idempotence.
    ///
    /// Its requests in flight get up to [`IN_FLIGHT_ANSWER`] to be answered (see
    /// [`KafkaSink::settle`]); what the old producer had not sent gets no report (it is
    /// purged); `true` tells the
    /// forwarder to take the reports it did make and send the rest again, oldest first, so
    /// nothing overtakes them.
    ///
    /// Likewise once a hub this producer saw vanish exists again (see `vanished`), and when
    /// records a broker refused in a batch are to be sent alone, or are through
    /// (see [`DeliveryContext::delivery`]); that producer still works, so it first gets
    /// [`FLUSH_BEFORE_REPLACING`] to confirm what it holds, which is then not sent twice.
    ///
    /// And when it is stuck (see [`Timeouts`]): its records time out and no hub confirmed
    /// any for `message.timeout.ms`.
    fn tick(&mut self) -> bool {
        let fatal = self.producer.client().fatal_error();
        let stuck = self
            .producer
            .client()
            .context()
            .timeouts
            .stuck(Instant::now(), self.message_timeout());
        let back = self
            .vanished
            .iter()
            .find(|(hub, since)| self.shared.hubs.found_since(hub, **since))
            .map(|(hub, _)| hub.clone());
        let alone = self.refused_in_batch();
        if fatal.is_none() && !stuck && back.is_none() && alone == self.alone {
            return false;
        }
        // A producer that fails again at once is not rebuilt ten times a second.
        if self.rebuilt.is_some_and(|t| t.elapsed() < REBUILD_MIN) {
            return false;
        }
        self.rebuilt = Some(Instant::now());
        if fatal.is_none() && stuck {
            self.shared.metrics.problem("producer_timed_out", || {
                "kafka: records timed out and no hub confirmed any for message.timeout.ms: a \
                 new producer (a broker that lost this producer's id refuses it until then)"
                    .to_string()
            });
            // Other hubs' records it still holds may be confirmed yet: not sent twice.
            self.settle();
            return self.replace_producer(alone);
        }
        let Some((code, reason)) = fatal else {
            match back {
                Some(hub) => {
                    log::info!("kafka: hub {hub:?} exists again: a new producer, which sees it");
                }
                None if alone => log::info!(
                    "kafka: a new producer that sends each record alone, until those refused in \
                     a batch are through"
                ),
                None => log::info!(
                    "kafka: the records refused in a batch are through: a new producer that \
                     batches again"
                ),
            }
            // Confirmed or not by then, what it holds is accounted for below.
            self.settle();
            return self.replace_producer(alone);
        };
        if code == RDKafkaErrorCode::GaplessGuarantee {
            // Routine: a refused record (logged as a sink error) stopped it.
            log::debug!("kafka: {reason}; new producer");
        } else if !matches!(
            code,
            RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::ClusterAuthorizationFailed
        ) {
            self.shared.metrics.problem("producer_failed", || {
                format!(
                    "kafka: the producer failed for good ({code}: {reason}); building a new one"
                )
            });
        } else {
            log::warn!(
                "kafka: the broker refuses an idempotent producer ({code}: {reason}); going on \
                 without idempotence: a retried request may write a record twice (consumers \
                 de-duplicate by record id) and a throttled record may be overtaken"
            );
            // Without idempotence a retried request lands behind the ones sent after it.
            self.config
                .set("enable.idempotence", "false")
                .set("enable.gapless.guarantee", "false")
                .set(IN_FLIGHT, ONE_REQUEST);
        }
        // librdkafka purges what a failed producer had not sent but lets the requests it has
        // in flight finish: a record the broker took then gets its report, and is not written
        // twice by the next producer (in another hub's partition, its request often went out
        // just before the failure).
        self.settle();
        // librdkafka sets the fatal error before it queues the reports of the request that
        // caused it, whose broker error its reason names: a batch refused ([`BatchRefusal`]) is
        // sent again alone even when this tick comes before its reports.
        let alone = self.refused_in_batch() || BATCH_REFUSED.iter().any(|r| reason.contains(r));
        self.replace_producer(alone)
    }

    fn queued(&self) -> Option<Arc<Notify>> {
        Some(self.producer.queued().clone())
    }

    fn serve(&mut self) {
        self.producer.serve();
        self.release_held();
    }

    fn flush(&mut self, timeout: Duration) {
        let flushed = self.flush_all(timeout);
        let held = self.first.held();
        if flushed.is_err() || held > 0 {
            let queued = usize::try_from(self.producer.in_flight_count()).unwrap_or(0);
            log::warn!(
                "kafka: {} record(s) not confirmed within {timeout:?} before this producer is \
                 closed (at a stop or a key rotation; {held} of them waiting for their device's \
                 first record to be)",
                queued + held
            );
        }
    }

    /// Whether a broker connection is up: from librdkafka's broker states (every
    /// [`STATS_INTERVAL_MS`]), its all-brokers-down error, and at once from a confirmed
    /// record; not up from the agent's start until then.
    fn up(&self) -> bool {
        self.shared.connection.up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::bindings::rd_kafka_resp_err_t as Err;
    use rdkafka::mocking::MockCluster;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

    const TOPIC: &str = "io.microshare.environment.unpacked";
    const OTHER: &str = "io.microshare.motion.unpacked";

    fn unattended() -> Hubs {
        Hubs::unattended(Default::default())
    }

    fn record(n: u64) -> Record {
        Record {
            id: format!("r{n}"),
            rec_type: TOPIC.into(),
            key: "58-A0-CB-00-00-10-12-34".into(),
            created_ms: 0,
            body: format!("{{\"n\":{n}}}"),
        }
    }

    /// A sink of the settings `c`, reporting to `tx`, asking `hubs`.
    fn new_sink(c: ClientConfig, tx: Deliveries, hubs: Hubs) -> Result<KafkaSink, OpenError> {
        let metrics = Metrics::new();
        let connection = Connection::new(metrics.clone());
        KafkaSink::new(c, HubNames::default(), tx, metrics, hubs, connection)
    }

    fn sink(bootstrap: &str) -> (KafkaSink, UnboundedReceiver<Delivery>) {
        sink_with(bootstrap, &[])
    }

    /// [`sink`] with the settings `more` as well.
    fn sink_with(
        bootstrap: &str,
        more: &[(&str, &str)],
    ) -> (KafkaSink, UnboundedReceiver<Delivery>) {
        let mut c = base_config();
        c.set("bootstrap.servers", bootstrap)
            .set("message.timeout.ms", "10000");
        for &(key, value) in more {
            c.set(key, value);
        }
        let (tx, rx) = unbounded_channel();
        let sink = new_sink(c, tx, unattended()).unwrap();
        (sink, rx)
    }

    /// Make the sink's producer fail for good, as librdkafka does on a broker's say-so.
    fn fail_for_good(sink: &KafkaSink, err: Err) {
        // SAFETY: a live client handle and a NUL-terminated reason.
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                sink.producer.client().native_ptr(),
                err,
                c"injected by the test".as_ptr(),
            )
        };
        assert_eq!(raised, Err::RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    /// The next report, served as the forwarder serves them: when the sink says some are
    /// queued.
    async fn next(sink: &mut KafkaSink, rx: &mut UnboundedReceiver<Delivery>) -> Delivery {
        let queued = sink.queued().expect("a sink that is served");
        let report = async {
            loop {
                sink.serve();
                if let Ok(d) = rx.try_recv() {
                    return d;
                }
                queued.notified().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), report)
            .await
            .expect("a delivery report in time")
    }

    fn idempotent(sink: &KafkaSink) -> Option<&str> {
        sink.config.get("enable.idempotence")
    }

    /// A record refused for good fails the producer (gap-less guarantee): records are
    /// refused until the next tick replaces it, what it still held gets no report (no
    /// failure to count or back off for: the forwarder sends it again), and a new producer
    /// with the same settings takes them all.
    #[tokio::test]
    async fn a_producer_failed_by_a_gap_is_replaced_as_it_was() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        let (mut sink, mut rx) = sink(&mock.bootstrap_servers());
        sink.send(1, &record(1)).unwrap();
        let key_and_body = (record(1).key.len() + record(1).body.len()) as u64;
        assert_eq!(next(&mut sink, &mut rx).await.result, Ok(key_and_body));
        mock.broker_down(1).unwrap();
        sink.send(2, &record(2)).unwrap();
        fail_for_good(&sink, Err::RD_KAFKA_RESP_ERR__GAPLESS_GUARANTEE);
        assert!(matches!(sink.send(3, &record(3)), Err(SinkError::Retry(_))));
        assert!(sink.tick(), "replaced");
        assert!(!sink.tick(), "replaced once");
        // The old producer made its last reports while it was dropped.
        assert!(rx.try_recv().is_err(), "no report for the record it held");
        assert_eq!(idempotent(&sink), Some("true"));
        mock.broker_up(1).unwrap();
        sink.send(2, &record(2)).unwrap();
        sink.send(3, &record(3)).unwrap();
        for seq in [2, 3] {
            let d = next(&mut sink, &mut rx).await;
            assert_eq!((d.seq, d.result.is_ok()), (seq, true));
        }
    }

    /// The gap-less guarantee stops a producer at a refused record, but librdkafka builds a
    /// partition's next request while one is in flight and sends it after the refusal; a
    /// broker that does not check the sequence numbers (this mock cluster; Kafka on a
    /// producer's first write to a partition) would write record 2 before record 1. A new
    /// producer's next record of a device waits for the first one's report: refused for
    /// good, it gets no report, as what the stopped producer held (the forwarder sends both
    /// again, in order, once it is replaced); confirmed, it goes.
    #[tokio::test]
    async fn a_devices_next_record_waits_for_a_new_producers_first() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        // Record 2's request would be built while record 1's waits for its answer.
        mock.broker_round_trip_time(1, Duration::from_millis(500))
            .unwrap();
        let mut c = base_config();
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set(ALONE.0, ALONE.1);
        let (tx, mut rx) = unbounded_channel();
        let mut sink = new_sink(c, tx, unattended()).unwrap();
        mock.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[Err::RD_KAFKA_RESP_ERR_POLICY_VIOLATION],
        );
        let reports =
            async |sink: &mut KafkaSink, rx: &mut UnboundedReceiver<_>, seqs: &[u64], n| {
                for &seq in seqs {
                    sink.send(seq, &record(seq)).unwrap();
                }
                let mut reports = Vec::new();
                for _ in 0..n {
                    let d = next(sink, rx).await;
                    reports.push((d.seq, d.result.is_ok()));
                }
                reports
            };
        assert_eq!(reports(&mut sink, &mut rx, &[1, 2], 1).await, [(1, false)]);
        assert!(sink.tick(), "the refusal stopped the producer: replaced");
        assert!(rx.try_recv().is_err(), "no report for record 2");
        assert_eq!(
            reports(&mut sink, &mut rx, &[1, 2, 3], 3).await,
            [(1, true), (2, true), (3, true)]
        );
        assert_eq!(written(&mock.bootstrap_servers(), 3), [1, 2, 3]);
    }

    /// A confirmed record shows the connection up at once, not at librdkafka's next
    /// statistics (turned off here): until then a stop would wait less for the sink. The
    /// sink says so ([`Sink::up`]) and `hubgate_kafka_connected` shows it.
    #[tokio::test]
    async fn a_confirmed_record_shows_the_connection_up() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        let no_statistics = [("statistics.interval.ms", "0")];
        let (mut sink, mut rx) = sink_with(&mock.bootstrap_servers(), &no_statistics);
        let state = |sink: &KafkaSink| (sink.up(), sink.shared.metrics.kafka_connected.get(""));
        assert_eq!(state(&sink), (false, Some(0)));
        sink.send(1, &record(1)).unwrap();
        assert!(next(&mut sink, &mut rx).await.result.is_ok());
        assert_eq!(state(&sink), (true, Some(1)));
        // Said down since (by the statistics or an error): the next confirmation says up.
        sink.producer.client().context().connected(false);
        assert_eq!(state(&sink), (false, Some(0)));
        sink.send(2, &record(2)).unwrap();
        assert!(next(&mut sink, &mut rx).await.result.is_ok());
        assert_eq!(state(&sink), (true, Some(1)));
    }

    /// A client error is counted and logged once per report: rust-rdkafka hands each to the
    /// context twice in a row, and through an outage librdkafka reports one every few seconds,
    /// the same error again and again.
    #[test]
    fn a_client_error_is_one_problem_however_often_it_is_handed_over() {
        let (sink, _rx) = sink("127.0.0.1:1");
        let context = sink.producer.client().context();
        let problems = || sink.shared.metrics.problems("kafka_client_error");
        let down = "kafka: Global error: BrokerTransportFailure: 127.0.0.1:1: Connect failed";
        let all = "kafka: Global error: AllBrokersDown";
        let handed = [down, down, all, all, down, down, down, down];
        let reports: Vec<bool> = handed.iter().map(|l| context.first_report(l)).collect();
        assert_eq!(
            reports,
            [true, false, true, false, true, false, true, false]
        );
        assert_eq!(problems(), 0, "first_report only tells");
        for _ in 0..2 {
            context.error(
                KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
                "a broker the test made up",
            );
        }
        assert_eq!(problems(), 1);
    }

    /// The connection state goes on across a sink's producers, and from a sink to the one
    /// that replaces it (key rotation), until their own client says otherwise: a stop right
    /// after either waits for a sink that was up as for one that is.
    #[tokio::test]
    async fn the_connection_state_outlives_a_producer_and_a_sink() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        let no_statistics = [("statistics.interval.ms", "0")];
        let (mut sink, mut rx) = sink_with(&mock.bootstrap_servers(), &no_statistics);
        sink.send(1, &record(1)).unwrap();
        assert!(next(&mut sink, &mut rx).await.result.is_ok());
        assert!(sink.replace_producer(false));
        assert!(sink.up(), "the new producer forgot the connection up");
        let (tx, _rx) = unbounded_channel();
        let metrics = sink.shared.metrics.clone();
        let next_sink = KafkaSink::new(
            sink.config.clone(),
            HubNames::default(),
            tx,
            metrics.clone(),
            unattended(),
            sink.shared.connection.clone(),
        )
        .unwrap();
        assert!(next_sink.up(), "the sink after a key rotation forgot it");
        assert_eq!(metrics.kafka_connected.get(""), Some(1));
        next_sink.producer.client().context().connected(false);
        assert_eq!((sink.up(), next_sink.up()), (false, false));
        assert_eq!(metrics.kafka_connected.get(""), Some(0));
    }

    /// A flush (at shutdown, before a producer is replaced) carries the records held behind
    /// a device's first one through too, rather than leaving them to the buffer.
    #[tokio::test]
    async fn a_flush_carries_held_records_through() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        let (mut sink, mut rx) = sink(&mock.bootstrap_servers());
        for seq in [1, 2, 3] {
            sink.send(seq, &record(seq)).unwrap();
        }
        sink.flush(Duration::from_secs(20));
        let reports: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|d| (d.seq, d.result.is_ok()))
            .collect();
        assert_eq!(reports, [(1, true), (2, true), (3, true)]);
    }

    /// The `n` of the first `count` records in [`TOPIC`] (one partition), in order.
    fn written(bootstrap: &str, count: usize) -> Vec<u64> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "test")
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        partitions
            .add_partition_offset(TOPIC, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&partitions).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < count && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                out.push(v["n"].as_u64().unwrap());
            }
        }
        out
    }

    /// A batch the broker refuses as too large (here injected twice): its records are sent
    /// again, each alone, and one refused alone is reported as a record the hub refuses (the
    /// forwarder tells whether it is the record's fault); once the last of them is through,
    /// the producer batches again.
    #[tokio::test]
    async fn records_refused_in_a_batch_too_large_are_sent_alone_until_through() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        mock.create_topic(OTHER, 1, 1).unwrap();
        let mut c = base_config();
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "60000");
        let (tx, mut rx) = unbounded_channel();
        let mut sink = new_sink(c, tx, unattended()).unwrap();
        mock.request_errors(
            rdkafka::types::RDKafkaApiKey::Produce,
            &[Err::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 2],
        );
        // Record 2 is of another device (so the new producer batches it with record 1's
        // first write), record 3 goes to another hub.
        let of = |seq| match seq {
            2 => Record {
                key: "58-A0-CB-00-00-10-12-35".into(),
                ..record(seq)
            },
            3 => Record {
                rec_type: OTHER.into(),
                ..record(seq)
            },
            _ => record(seq),
        };
        let mut send = async |sink: &mut KafkaSink, seqs: &[u64]| {
            for &seq in seqs {
                sink.send(seq, &of(seq)).unwrap();
            }
            sink.flush(Duration::from_secs(20));
            let mut reports = Vec::new();
            for _ in seqs {
                let d = next(sink, &mut rx).await;
                let why = |e: SinkError| match e {
                    SinkError::Doubt(refusal) => refusal.kind(),
                    e => e.class(),
                };
                reports.push((d.seq, d.result.map_err(why)));
            }
            reports
        };
        assert_eq!(
            send(&mut sink, &[1, 2]).await,
            [(1, Err("retry")), (2, Err("retry"))]
        );
        assert!(
            sink.tick() && sink.alone,
            "a producer that sends each record alone"
        );
        assert_eq!(send(&mut sink, &[1]).await, [(1, Err("refuses_records"))]);
        sink.rebuilt = None;
        assert!(sink.tick() && sink.alone, "record 2 is not through yet");
        let bytes = |seq| (of(seq).key.len() + of(seq).body.len()) as u64;
        assert_eq!(send(&mut sink, &[3]).await, [(3, Ok(bytes(3)))]);
        sink.rebuilt = None;
        assert!(
            !sink.tick() && sink.alone,
            "a later record of another hub is through, not those refused"
        );
        assert_eq!(send(&mut sink, &[2]).await, [(2, Ok(bytes(2)))]);
        sink.rebuilt = None;
        assert!(sink.tick() && !sink.alone, "batching again");
        assert_eq!(sink.producer.client().fatal_error(), None);
        assert!(!sink.tick());
    }

    /// A partition's refused records that never come back (parked, expired) do not keep the
    /// producer sending alone for good.
    #[tokio::test]
    async fn sending_alone_ends_a_while_after_the_last_refusal() {
        let (tx, _rx) = unbounded_channel();
        let mut c = base_config();
        c.set("bootstrap.servers", "127.0.0.1:9");
        let mut sink = new_sink(c, tx, unattended()).unwrap();
        // Refused `ago` before now: sent alone until `ONE_BY_ONE_FOR` after that.
        let refuse = |sink: &KafkaSink, ago| {
            let ends = Instant::now() + (ONE_BY_ONE_FOR - ago);
            let mut refused = sink.shared.refused.lock().unwrap();
            refused.insert((TOPIC.to_string(), 0), (2, ends));
        };
        refuse(&sink, ONE_BY_ONE_FOR / 2);
        assert!(sink.tick() && sink.alone, "refused a while ago");
        refuse(&sink, ONE_BY_ONE_FOR);
        sink.rebuilt = None;
        assert!(sink.tick() && !sink.alone, "refused too long ago");
        assert_eq!(sink.producer.client().fatal_error(), None);
        assert!(!sink.tick());
    }

    /// librdkafka sets its fatal error before it queues the refused batch's reports: a tick
    /// between the two still builds a producer that sends each record alone, for each of the
    /// broker's refusals of a batch.
    #[tokio::test]
    async fn a_tick_before_a_refused_batchs_reports_still_sends_alone() {
        let errors = [
            Err::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            Err::RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE,
            Err::RD_KAFKA_RESP_ERR_INVALID_RECORD,
        ];
        for (error, description) in errors.into_iter().zip(BATCH_REFUSED) {
            let mock = MockCluster::new(1).unwrap();
            mock.create_topic(TOPIC, 1, 1).unwrap();
            let mut c = base_config();
            c.set("bootstrap.servers", mock.bootstrap_servers());
            let (tx, _rx) = unbounded_channel();
            let mut sink = new_sink(c, tx, unattended()).unwrap();
            mock.request_errors(rdkafka::types::RDKafkaApiKey::Produce, &[error]);
            sink.send(1, &record(1)).unwrap();
            // Nothing is served: the refused record's report stays queued.
            let failed = async {
                while sink.producer.client().fatal_error().is_none() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(20), failed)
                .await
                .expect("the refused batch fails the producer");
            assert!(!sink.refused_in_batch(), "its report is not served yet");
            let (_, reason) = sink.producer.client().fatal_error().unwrap();
            assert!(reason.contains(description), "{reason}");
            assert!(sink.tick() && sink.alone, "{error:?}");
        }
    }

    /// The broker's answers about a whole batch, and librdkafka's for the records of a batch
    /// refused for another one in it, are sent again alone; nothing else is.
    #[test]
    fn what_a_batch_refusal_is() {
        use RDKafkaErrorCode as C;
        let of = |code| BatchRefusal::of(&KafkaError::MessageProduction(code));
        for code in [C::MessageSizeTooLarge, C::MessageBatchTooLarge] {
            assert!(matches!(of(code), Some(BatchRefusal::TooLarge)), "{code:?}");
        }
        for code in [C::InvalidRecord, C::InvalidDifferentRecord] {
            assert!(matches!(of(code), Some(BatchRefusal::Invalid)), "{code:?}");
        }
        for code in [
            C::InvalidMessage,
            C::RequestTimedOut,
            C::UnknownTopicOrPartition,
        ] {
            assert!(of(code).is_none(), "{code:?}");
        }
    }

    /// A record too large at hand-over is librdkafka's own check of that record: rejected.
    /// One the broker refuses sent alone, in a delivery report, may be refused for itself or
    /// with every other (the topic's checks): in doubt, its hub named. A corrupt message on the
    /// wire (`CORRUPT_MESSAGE`, retriable in Kafka) is tried again.
    #[test]
    fn only_a_record_that_can_never_be_taken_is_rejected() {
        let client = ClientConfig::new();
        let hubs = unattended();
        let class = |code| classify(&KafkaError::MessageProduction(code), TOPIC, &hubs, &client);
        use RDKafkaErrorCode as C;
        for code in [
            C::MessageSizeTooLarge,
            C::MessageBatchTooLarge,
            C::InvalidMessageSize,
            C::InvalidRecord,
        ] {
            assert!(matches!(class(code), SinkError::Reject(_)), "{code:?}");
            let reported = doubted(
                class(code),
                &KafkaError::MessageProduction(code),
                TOPIC,
                &hubs,
            );
            let SinkError::Doubt(refusal) = reported else {
                panic!("{code:?} in a report: {reported:?}");
            };
            assert_eq!(
                (refusal.kind(), refusal.hub.as_str()),
                ("refuses_records", TOPIC)
            );
        }
        for code in [C::InvalidMessage, C::PolicyViolation, C::RequestTimedOut] {
            assert!(matches!(class(code), SinkError::Retry(_)), "{code:?}");
        }
    }

    /// A refused login is tried again, and the line says which secret to check: an Event
    /// Hubs sink's connection string, a Kafka sink's SASL user and password (a Kafka sink has
    /// no connection string). A Kafka sink without SASL, refused or denied by ACLs, is told
    /// to check its client certificate and ACLs, not a password it does not have.
    #[test]
    fn a_refused_login_names_the_secret_the_sink_logs_in_with() {
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::SaslAuthenticationFailed);
        let said = |client: &ClientConfig| match classify(&refused, TOPIC, &unattended(), client) {
            SinkError::Retry(text) => text,
            other => panic!("a refused login is {other:?}"),
        };
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s";
        let eventhubs = super::super::eventhubs::client_config(
            &crate::connection_string::ConnectionString::parse(cs).unwrap(),
        );
        assert!(
            said(&eventhubs).starts_with(
                "authentication failed, check the connection string: the whole string is the password: "
            ),
            "{}",
            said(&eventhubs)
        );
        let kafka = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n\
                     security_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\n\
                     sasl_password = \"pa55word\"\n";
        let cfg = crate::config::Config::parse(kafka).unwrap();
        let crate::config::SinkConfig::Kafka(k) = &cfg.sink else {
            panic!("a Kafka sink: {:?}", cfg.sink);
        };
        let text = said(&sink_config(k));
        assert!(
            text.starts_with(
                "authentication failed, check sasl_username and sasl_password (or the file sasl_password_file names): "
            ),
            "{text}"
        );
        assert!(!text.contains("connection string"), "{text}");
        let cfg = crate::config::Config::parse("[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n")
            .unwrap();
        let crate::config::SinkConfig::Kafka(k) = &cfg.sink else {
            panic!("a Kafka sink: {:?}", cfg.sink);
        };
        let denied = KafkaError::MessageProduction(RDKafkaErrorCode::ClusterAuthorizationFailed);
        for e in [&refused, &denied] {
            let text = match classify(e, TOPIC, &unattended(), &sink_config(k)) {
                SinkError::Retry(text) => text,
                other => panic!("a refused client is {other:?}"),
            };
            assert!(
                text.starts_with(
                    "authentication failed, no SASL login is configured (no sasl_username): \
                     check the TLS client certificate and the broker's ACLs for this client: "
                ),
                "{text}"
            );
            assert!(!text.contains("sasl_password"), "{text}");
        }
    }

    /// A producer replaced because a hub it saw vanish exists again still works: it gets
    /// to confirm what it holds first (here a record that would linger a minute), so that
    /// record is confirmed, not purged and sent twice.
    #[tokio::test]
    async fn a_working_producer_confirms_what_it_holds_before_it_is_replaced() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        let mut c = base_config();
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "60000");
        let (tx, mut rx) = unbounded_channel();
        let (parks, _parked) = unbounded_channel();
        let hubs = super::super::provision::start(Default::default(), parks);
        let since = Instant::now();
        let mut sink = new_sink(c, tx, hubs.clone()).unwrap();
        sink.send(1, &record(1)).unwrap();
        sink.flush(Duration::from_secs(20));
        assert!(
            next(&mut sink, &mut rx).await.result.is_ok(),
            "the producer is up"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !hubs.found_since(TOPIC, since) {
            assert!(Instant::now() < deadline, "the provisioner finds {TOPIC}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sink.send(2, &record(2)).unwrap();
        sink.vanished.insert(TOPIC.into(), since);
        // What is tested is that the old producer gets to confirm, not how fast it does.
        sink.flush_before_replacing = Duration::from_secs(20);
        assert!(sink.tick(), "replaced");
        let d = rx
            .try_recv()
            .expect("a report before the old producer went");
        assert_eq!((d.seq, d.result.is_ok()), (2, true), "{d:?}");
    }

    /// A producer replaced while it has a request in flight gets the answer first, whether
    /// it failed for good (here: another hub's record refused) or still works (here: records
    /// are to be sent alone), when the answer comes after [`FLUSH_BEFORE_REPLACING`]: a
    /// record the broker took is confirmed, not purged, sent again and written twice.
    #[tokio::test]
    async fn a_producer_gets_its_request_in_flight_answered_before_it_is_replaced() {
        let failed_for_good = |sink: &mut KafkaSink| {
            fail_for_good(sink, Err::RD_KAFKA_RESP_ERR__GAPLESS_GUARANTEE);
        };
        let to_send_alone = |sink: &mut KafkaSink| {
            let ends = Instant::now() + ONE_BY_ONE_FOR;
            let mut refused = sink.shared.refused.lock().unwrap();
            refused.insert((OTHER.to_string(), 0), (9, ends));
        };
        answered_before_replacement(failed_for_good).await;
        answered_before_replacement(to_send_alone).await;
    }

    async fn answered_before_replacement(replace: impl Fn(&mut KafkaSink)) {
        use rdkafka::bindings as rd;
        use rdkafka::producer::Producer as _;
        // A mock cluster of a client of the test's own, so its raw handle can see requests.
        let holder: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .unwrap();
        let mock = holder.client().mock_cluster().unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        // SAFETY: the holder owns the mock cluster and outlives every use of its handle.
        let raw = unsafe { rd::rd_kafka_handle_mock_cluster(holder.client().native_ptr()) };
        // SAFETY: `raw` is the live mock cluster.
        unsafe { rd::rd_kafka_mock_start_request_tracking(raw) };
        let produce_requests = || {
            let mut n = 0;
            // SAFETY: `raw` is live; the array and its requests are ours to destroy.
            unsafe {
                let requests = rd::rd_kafka_mock_get_requests(raw, &mut n);
                let produce = (0..n)
                    .filter(|&i| {
                        rd::rd_kafka_mock_request_api_key(*requests.add(i))
                            == rdkafka::types::RDKafkaApiKey::Produce as i16
                    })
                    .count();
                rd::rd_kafka_mock_request_destroy_array(requests, n);
                produce
            }
        };
        let (mut sink, mut rx) = sink(&mock.bootstrap_servers());
        sink.send(1, &record(1)).unwrap();
        assert!(
            next(&mut sink, &mut rx).await.result.is_ok(),
            "the producer is up"
        );
        // Record 2's request is still unanswered when the producer is to be replaced, and
        // when what a working one holds has had its time to be confirmed.
        mock.broker_round_trip_time(1, FLUSH_BEFORE_REPLACING + Duration::from_millis(500))
            .unwrap();
        sink.send(2, &record(2)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while produce_requests() < 2 {
            assert!(
                Instant::now() < deadline,
                "record 2's request reaches the broker"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        replace(&mut sink);
        assert!(sink.tick(), "replaced");
        let d = rx
            .try_recv()
            .expect("a report before the old producer went");
        assert_eq!((d.seq, d.result.is_ok()), (2, true), "{d:?}");
        // The consumer's many requests need not wait as the producer's did.
        mock.broker_round_trip_time(1, Duration::ZERO).unwrap();
        assert_eq!(written(&mock.bootstrap_servers(), 2), [1, 2]);
    }

    /// Settings with idempotence off (the benchmark's broker-alone producer; `check` refuses
    /// it in `[sink.properties]`) still give a producer (librdkafka refuses the gap-less
    /// guarantee without idempotence).
    #[test]
    fn idempotence_turned_off_by_the_site_drops_the_gapless_guarantee() {
        let mut c = base_config();
        let props = BTreeMap::from([("enable.idempotence".to_string(), "false".to_string())]);
        site_settings(&mut c, &props);
        c.set("bootstrap.servers", "127.0.0.1:9");
        assert_eq!(c.get("enable.gapless.guarantee"), Some("false"));
        let (tx, _rx) = unbounded_channel();
        new_sink(c, tx, unattended()).expect("a valid producer config");
    }

    fn with_site(props: &[(&str, &str)]) -> ClientConfig {
        let mut c = base_config();
        let props = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        site_settings(&mut c, &props);
        c
    }

    /// A site's setting replaces hubgate's under either of librdkafka's names for it (both
    /// in one config would be applied in no fixed order); the base settings and the Event
    /// Hubs preset use one name per setting.
    #[test]
    fn a_site_sets_a_setting_under_either_name() {
        for (key, value, name) in [
            ("retries", "3", "message.send.max.retries"),
            ("request.required.acks", "1", "acks"),
            ("queue.buffering.max.ms", "0", "linger.ms"),
            ("delivery.timeout.ms", "30000", "message.timeout.ms"),
        ] {
            let c = with_site(&[(key, value)]);
            let set: Vec<_> = c
                .config_map()
                .into_iter()
                .filter(|(k, _)| setting_name(k) == name)
                .collect();
            assert_eq!(set, [(name, value)], "{key}");
        }
        assert_eq!(with_site(&[]).get(IN_FLIGHT), Some(ONE_REQUEST));
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s";
        let eventhubs = super::super::eventhubs::client_config(
            &crate::connection_string::ConnectionString::parse(cs).unwrap(),
        );
        for c in [base_config(), eventhubs] {
            for k in c.config_map().keys() {
                assert_eq!(setting_name(k), *k);
            }
        }
    }

    /// More produce requests in flight let a refused request's records be written after later
    /// ones: a site gets one whatever it asked for, under either name, with idempotence or
    /// without (which also drops the gap-less guarantee, which needs it).
    #[test]
    fn one_request_is_in_flight_whatever_the_site_asks() {
        for idempotence in ["true", "false", "F", "0"] {
            for key in ["max.in.flight", IN_FLIGHT] {
                let c = with_site(&[("enable.idempotence", idempotence), (key, "5")]);
                let set: Vec<_> = c
                    .config_map()
                    .into_iter()
                    .filter(|(k, _)| setting_name(k) == IN_FLIGHT)
                    .collect();
                assert_eq!(set, [(IN_FLIGHT, ONE_REQUEST)], "{idempotence} {key}");
                let gapless = if is_false(idempotence) {
                    "false"
                } else {
                    "true"
                };
                assert_eq!(c.get("enable.gapless.guarantee"), Some(gapless));
            }
        }
    }

    /// A build with its own OpenSSL looks for the system's CA store; a site's own CA wins.
    #[test]
    fn a_vendored_openssl_probes_for_the_system_ca_store() {
        let mut c = base_config();
        site_settings(&mut c, &BTreeMap::new());
        assert_eq!(
            c.get("ssl.ca.location"),
            VENDORED_OPENSSL.then_some("probe")
        );
        let props = BTreeMap::from([("ssl.ca.location".to_string(), "/ca.pem".to_string())]);
        site_settings(&mut c, &props);
        assert_eq!(c.get("ssl.ca.location"), Some("/ca.pem"));
    }

    /// Hubs are the provisioner's alone (with the configured partition count): the producer's
    /// metadata requests never ask the broker to create one, which the mock cluster would do
    /// (with its default of 4 partitions), so a record to a missing hub is not delivered.
    #[tokio::test]
    async fn the_producer_never_creates_a_hub() {
        let mock = MockCluster::new(1).unwrap();
        let mut c = base_config();
        site_settings(&mut c, &BTreeMap::new());
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set("message.timeout.ms", "2000");
        let (tx, mut rx) = unbounded_channel();
        let mut sink = new_sink(c, tx, unattended()).unwrap();
        sink.send(1, &record(1)).unwrap();
        let d = next(&mut sink, &mut rx).await;
        assert!(d.result.is_err(), "{d:?}");
        let md = sink
            .producer
            .client()
            .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
            .unwrap();
        assert_eq!(md.topics()[0].partitions().len(), 0, "no hub {TOPIC}");
    }

    /// A broker that will not have this client as an idempotent producer: hubgate goes on
    /// without idempotence rather than not at all.
    #[tokio::test]
    async fn a_producer_refused_idempotence_goes_on_without() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic(TOPIC, 1, 1).unwrap();
        let (mut sink, mut rx) = sink(&mock.bootstrap_servers());
        // A site that pipelines its requests.
        sink.config.set(IN_FLIGHT, "5");
        fail_for_good(&sink, Err::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED);
        assert!(matches!(sink.send(1, &record(1)), Err(SinkError::Retry(_))));
        assert!(sink.tick());
        assert_eq!(idempotent(&sink), Some("false"));
        assert_eq!(sink.config.get(IN_FLIGHT), Some(ONE_REQUEST));
        sink.send(1, &record(1)).unwrap();
        let d = next(&mut sink, &mut rx).await;
        assert_eq!((d.seq, d.result.is_ok()), (1, true));
    }

    /// A record the producer's local queue has no room for is handed over again later: a
    /// full queue is the producer's state, not the record's, so it is no rejection (which
    /// would dead-letter a reading the hub would take).
    #[tokio::test]
    async fn a_record_the_local_queue_has_no_room_for_is_retried() {
        let (mut sink, _rx) = sink_with("127.0.0.1:1", &[("queue.buffering.max.messages", "1")]);
        // Of two devices: a device's second record would wait for its first, not be handed over.
        let of_device = |n: u64| Record {
            key: format!("58-A0-CB-00-00-10-12-3{n}"),
            ..record(n)
        };
        assert!(sink.send(1, &of_device(1)).is_ok());
        match sink.send(2, &of_device(2)) {
            Err(SinkError::Retry(text)) => assert_eq!(text, "local producer queue is full"),
            other => panic!("a record finding the local queue full: {other:?}"),
        }
    }
}
