//! The Kafka sink's health probe: log in with the sink's own librdkafka settings and list
//! the hubs, or say why that failed in words an operator can act on. The agent asks it at
//! start which hubs are missing (`provisioning = "precreated"`); `hubgate doctor` prints
//! its answer. Nothing is produced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};

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
        .map_err(|e| format!("cannot create the Kafka client: {e}"))?;
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
            Err(explain(&errors, &e, timeout))
        }
    }
}

/// librdkafka errors seen while asking for metadata, to say why it failed.
#[derive(Default)]
struct Errors {
    errors: Mutex<Vec<(Option<RDKafkaErrorCode>, String)>>,
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

/// Nothing is produced: only here because librdkafka clients come as producers or consumers.
impl rdkafka::producer::ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

fn explain(
    errors: &[(Option<RDKafkaErrorCode>, String)],
    fetch: &KafkaError,
    timeout: Duration,
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
        return format!(
            "login refused: {r} (check the connection string: the whole string is the password)"
        );
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
            explain(&errors, &fetch, t)
        };
        let auth = said(&[
            (None, "Disconnected"),
            (Some(RDKafkaErrorCode::Authentication), "bad key"),
        ]);
        assert!(auth.starts_with("login refused: bad key"), "{auth}");
        let tls = said(&[(None, "SSL handshake failed: unknown CA")]);
        assert!(tls.starts_with("TLS failed: SSL"), "{tls}");
        let closed = said(&[(None, "x:9093/bootstrap: Disconnected")]);
        assert!(closed.starts_with("the connection was closed"), "{closed}");
        assert!(said(&[(None, "odd")]).ends_with("broker: odd"));
        assert!(said(&[]).starts_with("no answer from the broker within 5s"));
    }
}
