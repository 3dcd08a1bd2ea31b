//! The Kafka sink's health probe: log in with the sink's own librdkafka settings and list
//! the hubs, or say why that failed in words an operator can act on; and for `hubgate
//! doctor`, write one probe record to prove the key may write (docs/eventhubs.md "What
//! doctor writes"). The hub provisioner asks it which hubs exist.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};

use super::properties::config_error;

/// Hub name -> partition count, for the hubs the broker lists without error.
pub type Hubs = HashMap<String, usize>;

/// Log in with `client`'s settings and list the hubs, waiting up to `timeout`; on failure,
/// why. Blocks.
pub fn hubs(client: &ClientConfig, timeout: Duration) -> Result<Hubs, String> {
    // Connection failures are logged at info level, whatever RUST_LOG says.
    let producer: BaseProducer<Errors> = client
        .clone()
        .set_log_level(RDKafkaLogLevel::Info)
        .create_with_context(Errors::default())
        .map_err(|e| format!("cannot create the Kafka client: {}", config_error(&e)))?;
    match producer.client().fetch_metadata(None, timeout) {
        Ok(md) => Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect()),
        Err(e) => {
            // Error events reach the context only when the client is polled.
            producer.poll(Duration::from_millis(100));
            let errors = producer
                .context()
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Err(explain(
                &errors,
                &e,
                timeout,
                super::kafka::login_hint(client),
            ))
        }
    }
}

/// A broker's refusal: its error code (if one came) and words.
pub type Refused = (Option<RDKafkaErrorCode>, String);

/// The probe record's key: consumers can tell it from a device's (a dashed DevEUI).
pub const PROBE_KEY: &str = "hubgate-doctor";

/// Write one probe record for `rec_type` to `hub` and wait up to `timeout` for the broker's
/// confirmation: how long that took, or the broker's error code and words. The record is
/// Microshare's envelope with `event_type` "probe" and no `obj`, so a consumer that acts on
/// "create"/"update"/"delete" passes over it, plus a `hubgate-probe` header. Blocks.
pub fn write(
    client: &ClientConfig,
    hub: &str,
    rec_type: &str,
    timeout: Duration,
) -> Result<Duration, Refused> {
    let producer: BaseProducer<Errors> = client
        .clone()
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create_with_context(Errors::default())
        .map_err(|e| {
            (
                None,
                format!("cannot create the Kafka client: {}", config_error(&e)),
            )
        })?;
    let started = std::time::Instant::now();
    let id = format!(
        "doctor-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let body = serde_json::json!({
        "event_type": "probe",
        "id": id,
        "obj": null,
        "recType": rec_type,
        "source": "hubgate doctor",
    })
    .to_string();
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "hubgate-probe",
        value: Some("doctor"),
    });
    let record = rdkafka::producer::BaseRecord::to(hub)
        .key(PROBE_KEY)
        .payload(&body)
        .headers(headers);
    producer
        .send(record)
        .map_err(|(e, _)| (e.rdkafka_error_code(), e.to_string()))?;
    let _ = producer.flush(timeout);
    let outcome = producer
        .context()
        .written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match outcome {
        Some(Ok(())) => Ok(started.elapsed()),
        Some(Err(e)) => Err(e),
        None => Err((None, format!("no confirmation within {timeout:?}"))),
    }
}

/// librdkafka errors seen while asking for metadata, to say why it failed; and the outcome
/// of a probe record.
#[derive(Default)]
struct Errors {
    errors: Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>,
    written: Mutex<Option<Result<(), Refused>>>,
}

impl ClientContext for Errors {
    /// Connection failures show only in librdkafka's log (facility FAIL, often at info
    /// level): keep those, and anything at warning or worse that is not routine (the
    /// sink's settings draw a warning at every start, which explains nothing).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        use RDKafkaLogLevel as L;
        log::debug!("librdkafka {level:?} {fac}: {msg}");
        let serious = matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        );
        if (fac == "FAIL" || serious) && !super::kafka::is_routine(msg) {
            // "[thrd:...]: " says which librdkafka thread; the message names the broker.
            let msg = msg
                .strip_prefix("[thrd:")
                .and_then(|m| m.split_once("]: "))
                .map_or(msg, |(_, m)| m);
            self.push(None, msg);
        }
    }
    fn stats_raw(&self, _: &[u8]) {}
    fn error(&self, error: KafkaError, reason: &str) {
        self.push(error.rdkafka_error_code(), reason);
    }
}

impl Errors {
    fn push(&self, code: Option<RDKafkaErrorCode>, text: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.push((code, text.to_string()));
    }
}

impl rdkafka::producer::ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err((super::kafka::error_code(e), e.to_string())),
        };
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

/// Why the hubs could not be listed; `login_hint` says what to check when the login was
/// refused.
fn explain(
    errors: &[(Option<RDKafkaErrorCode>, String)],
    fetch: &KafkaError,
    timeout: Duration,
    login_hint: &str,
) -> String {
    use RDKafkaErrorCode as C;
    // By error code where librdkafka gives one, else by the words of its log line.
    let find = |codes: &[C], words: &[&str]| {
        errors
            .iter()
            .find(|(c, r)| {
                c.is_some_and(|c| codes.contains(&c)) || words.iter().any(|w| r.contains(w))
            })
            .map(|(_, r)| r.clone())
    };
    let auth = [C::Authentication, C::SaslAuthenticationFailed];
    if let Some(r) = find(&auth, &["SASL authentication", "Authentication failed"]) {
        return format!("login refused: {r} ({login_hint})");
    }
    if let Some(r) = find(
        &[C::SSL],
        &["SSL handshake failed", "certificate verify failed"],
    ) {
        return format!("TLS failed: {r}");
    }
    if let Some(r) = find(&[], &["Disconnected"]) {
        return format!("the connection was closed before the login completed (broker down behind a TLS proxy or load balancer?): {r}");
    }
    match errors.first() {
        Some((_, r)) => format!("no answer from the broker: {r}"),
        None => format!("no answer from the broker within {timeout:?}: {fetch}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    fn client(bootstrap: &str) -> ClientConfig {
        let mut c = crate::sink::kafka::base_config();
        c.set("bootstrap.servers", bootstrap);
        c
    }

    #[test]
    fn lists_the_hubs_with_their_partitions() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("two", 2, 1).unwrap();
        mock.create_topic("one", 1, 1).unwrap();
        let hubs = hubs(&client(&mock.bootstrap_servers()), Duration::from_secs(10)).unwrap();
        assert_eq!(hubs.get("two"), Some(&2), "{hubs:?}");
        assert_eq!(hubs.get("one"), Some(&1), "{hubs:?}");
        assert_eq!(hubs.get("none"), None);
    }

    #[test]
    fn a_refused_connection_is_named() {
        // Bound, never listening: the port refuses connections and no other test's bind
        // can take it meanwhile.
        let held =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = held.local_addr().unwrap().as_socket().unwrap().port();
        let e = hubs(
            &client(&format!("127.0.0.1:{port}")),
            Duration::from_secs(3),
        )
        .unwrap_err();
        assert!(e.starts_with("no answer from the broker: "), "{e}");
        assert!(e.contains("Connection refused"), "{e}");
    }

    /// The warning the sink's settings draw at every start may come before the connection's
    /// failure: it must not be given as the reason.
    #[test]
    fn routine_warnings_are_not_reasons() {
        let errors = Errors::default();
        errors.log(
            RDKafkaLogLevel::Warning,
            "CONFWARN",
            "[thrd:app]: Configuration property enable.gapless.guarantee is experimental: ...",
        );
        errors.log(
            RDKafkaLogLevel::Info,
            "FAIL",
            "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connection refused",
        );
        let kept = errors.errors.lock().unwrap();
        assert_eq!(
            *kept,
            [(
                None,
                "127.0.0.1:9/bootstrap: Connection refused".to_string()
            )]
        );
    }

    #[test]
    fn failures_are_explained_by_code_then_by_words() {
        let fetch = KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut);
        let t = Duration::from_secs(5);
        let said = |errors: &[(Option<RDKafkaErrorCode>, &str)]| {
            let errors: Vec<_> = errors.iter().map(|(c, r)| (*c, r.to_string())).collect();
            explain(&errors, &fetch, t, "check it")
        };
        let auth = said(&[
            (None, "Disconnected"),
            (Some(RDKafkaErrorCode::Authentication), "bad key"),
        ]);
        assert_eq!(auth, "login refused: bad key (check it)");
        let tls = said(&[(None, "SSL handshake failed: unknown CA")]);
        assert!(tls.starts_with("TLS failed: SSL"), "{tls}");
        let closed = said(&[(None, "x:9093/bootstrap: Disconnected")]);
        assert!(closed.starts_with("the connection was closed"), "{closed}");
        assert!(said(&[(None, "odd")]).ends_with("broker: odd"));
        assert!(said(&[]).starts_with("no answer from the broker within 5s"));
    }
}
