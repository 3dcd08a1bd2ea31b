//! Kafka sink (librdkafka): any Kafka broker, and the engine under the Event Hubs sink.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{Deliveries, Delivery, OpenError, Sink, SinkError};
use crate::config::{KafkaConfig, Provisioning};
use crate::record::Record;

/// Producer settings hubgate relies on, whatever the broker: every record confirmed by all
/// in-sync replicas, and per-device order kept across retries.
pub fn base_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("socket.keepalive.enable", "true");
    c
}

pub fn open(cfg: &KafkaConfig, deliveries: Deliveries) -> Result<KafkaSink, OpenError> {
    let mut c = base_config();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("security.protocol", cfg.security_protocol.as_librdkafka());
    if let Some(user) = &cfg.sasl_username {
        c.set("sasl.mechanisms", &cfg.sasl_mechanism)
            .set("sasl.username", user);
    }
    if let Some(pw) = &cfg.sasl_password {
        c.set("sasl.password", pw.expose());
    }
    if let Some(ca) = &cfg.ca_location {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    provisioning(&mut c, cfg.provisioning);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    KafkaSink::new(c, cfg.topics.clone(), deliveries)
}

/// `auto`: let the producer create missing topics (needs a Manage key on Event Hubs).
pub fn provisioning(c: &mut ClientConfig, p: Provisioning) {
    let auto = p == Provisioning::Auto;
    c.set(
        "allow.auto.create.topics",
        if auto { "true" } else { "false" },
    );
}

pub struct DeliveryContext {
    deliveries: Deliveries,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log::warn!("kafka: {error}: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(classify(e)),
        };
        let _ = self.deliveries.send(Delivery { seq: *seq, result });
    }
}

/// DESIGN §2.6: what to do about an error. librdkafka gives up on `POLICY_VIOLATION`
/// (Event Hubs throttling) itself; hubgate retries it.
pub fn classify(e: &KafkaError) -> SinkError {
    use RDKafkaErrorCode as C;
    let code = match e {
        KafkaError::MessageProduction(code) => Some(*code),
        other => other.rdkafka_error_code(),
    };
    let text = e.to_string();
    match code {
        Some(
            C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidMessage | C::InvalidRecord,
        ) => SinkError::Reject(text),
        // The hub is missing or this key may not write to it: park that recType only.
        Some(C::TopicAuthorizationFailed | C::UnknownTopic | C::UnknownTopicOrPartition) => {
            SinkError::Park(text)
        }
        // Nothing gets through until the credentials are fixed; keep retrying, loudly.
        Some(C::SaslAuthenticationFailed | C::Authentication | C::ClusterAuthorizationFailed) => {
            SinkError::Retry(format!(
                "authentication failed, check the connection string: {text}"
            ))
        }
        _ => SinkError::Retry(text),
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<DeliveryContext>,
    topics: BTreeMap<String, String>,
}

impl KafkaSink {
    pub fn new(
        config: ClientConfig,
        topics: BTreeMap<String, String>,
        deliveries: Deliveries,
    ) -> Result<KafkaSink, OpenError> {
        let producer = config
            .create_with_context(DeliveryContext { deliveries })
            .map_err(|e| OpenError(format!("cannot create the Kafka producer: {e}")))?;
        Ok(KafkaSink { producer, topics })
    }

    fn topic<'a>(&'a self, rec_type: &'a str) -> &'a str {
        self.topics
            .get(rec_type)
            .map(String::as_str)
            .unwrap_or(rec_type)
    }
}

impl Sink for KafkaSink {
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        let record = BaseRecord::with_opaque_to(self.topic(&rec.rec_type), Box::new(seq))
            .key(rec.key.as_bytes())
            .payload(rec.body.as_bytes());
        self.producer.send(record).map_err(|(e, _)| match e {
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                SinkError::Retry("local producer queue is full".into())
            }
            e => classify(&e),
        })
    }

    fn missing_hubs(&self, hubs: &[&str], timeout: Duration) -> Option<Vec<String>> {
        let md = match self.producer.client().fetch_metadata(None, timeout) {
            Ok(md) => md,
            Err(e) => {
                log::warn!("kafka: cannot list hubs at start ({e}); a missing hub will show when records go to it");
                return None;
            }
        };
        let present: std::collections::HashSet<&str> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name())
            .collect();
        Some(
            hubs.iter()
                .filter(|h| !present.contains(*h))
                .map(|h| h.to_string())
                .collect(),
        )
    }

    fn flush(&mut self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            log::warn!(
                "kafka: {} record(s) not confirmed at shutdown: {e}",
                self.producer.in_flight_count()
            );
        }
    }
}
