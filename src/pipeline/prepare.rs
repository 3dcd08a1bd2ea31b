//! The components a config describes, built without starting them: what `hubgate check`,
//! `hubgate doctor` and `hubgate run` all call, so a config that passes `check` is one the
//! agent can start. Errors name the key path at fault, like the config's own.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// What a config makes, built and not started.
pub struct Prepared {
    pub sources: crate::source::Built,
    /// What is allowed but probably wrong: `check` prints it, `run` logs it.
    pub warnings: Vec<String>,
    /// What is right but worth explaining: `check` prints it, `run` logs it at info level.
    pub notes: Vec<String>,
}

/// Read the config at `path` and build its components.
pub fn load(path: &Path) -> Result<(Config, Prepared), ConfigError> {
    let cfg = Config::load(path)?;
    let prepared = prepare(&cfg).map_err(|(key, reason)| ConfigError::Invalid {
        file: path.display().to_string(),
        key,
        reason,
    })?;
    Ok((cfg, prepared))
}

/// Build the sources (MQTT sessions' options, TLS files included) and the sink's librdkafka
/// settings, starting nothing. On error (key path, reason).
pub fn prepare(cfg: &Config) -> Result<Prepared, (String, String)> {
    let sources = crate::source::build(cfg)?;
    let sink_warnings = crate::sink::check(&cfg.sink)?;
    Ok(Prepared {
        sources,
        warnings: cfg.warnings().into_iter().chain(sink_warnings).collect(),
        notes: crate::sink::notes(&cfg.sink),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkConfig;

    const CS: &str =
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0";

    /// A config with a UDP source and this `[sink]`, loaded and checked.
    fn sink(sink: &str) -> Result<(Config, Vec<String>), (String, String)> {
        let text = format!("[[source]]\ntype = \"udp\"\n[sink]\n{sink}\n");
        let mut cfg = Config::parse(&text)?;
        cfg.resolve(Path::new("."))?;
        let warnings = prepare(&cfg)?.warnings;
        Ok((cfg, warnings))
    }

    /// Event Hubs takes no setting that turns TLS or its checks off, and says which and why
    /// without quoting the connection string.
    #[test]
    fn event_hubs_refuses_properties_that_turn_tls_off() {
        let eh = format!("type = \"eventhubs\"\nconnection_string = \"{CS}\"\n[sink.properties]\n");
        sink(&format!("{eh}\"linger.ms\" = \"20\"")).unwrap();
        for (key, value) in [
            ("security.protocol", "sasl_plaintext"),
            ("security.protocol", "PLAINTEXT"),
            ("enable.ssl.certificate.verification", "false"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ] {
            let (k, reason) = sink(&format!("{eh}\"{key}\" = \"{value}\"")).unwrap_err();
            assert_eq!(k, format!("sink.properties.\"{key}\""));
            assert!(reason.starts_with("refused: "), "{reason}");
            assert!(!reason.contains("c2VjcmV0"), "{reason}");
        }
    }

    /// A login written into the Kafka brokers (`user:password@host`), in `brokers` or in the
    /// property librdkafka reads them from, is refused without quoting it.
    #[test]
    fn a_login_in_the_kafka_brokers_is_refused_unquoted() {
        let kafka = "type = \"kafka\"\nbrokers";
        for (text, key) in [
            (format!("{kafka} = \"u:pw-in-brokers@x:9093\""), "sink.brokers"),
            (
                format!("{kafka} = \"x:9093\"\n[sink.properties]\n\"metadata.broker.list\" = \"u:pw-in-brokers@x:9093\""),
                "sink.properties.\"metadata.broker.list\"",
            ),
        ] {
            let (k, reason) = sink(&text).unwrap_err();
            assert_eq!(k, key);
            assert!(reason.contains("sasl_password_file"), "{reason}");
            assert!(!reason.contains("pw-in-brokers"), "{reason}");
        }
    }

    /// A Kafka broker gets TLS by default; turning it off needs `insecure = true`, which
    /// is warned about.
    #[test]
    fn kafka_needs_insecure_to_turn_tls_off() {
        let (cfg, warnings) = sink("type = \"kafka\"\nbrokers = \"x:9093\"").unwrap();
        let SinkConfig::Kafka(k) = &cfg.sink else {
            panic!("not kafka")
        };
        assert_eq!(k.security_protocol.as_librdkafka(), "ssl");
        assert!(warnings.is_empty(), "{warnings:?}");
        let plain =
            "type = \"kafka\"\nbrokers = \"x:9092\"\nsecurity_protocol = \"sasl_plaintext\"";
        let (key, reason) = sink(plain).unwrap_err();
        assert_eq!(key, "sink.security_protocol");
        assert!(reason.contains("insecure = true"), "{reason}");
        let unverified = "type = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\"enable.ssl.certificate.verification\" = \"0\"";
        let (key, _) = sink(unverified).unwrap_err();
        assert_eq!(
            key,
            "sink.properties.\"enable.ssl.certificate.verification\""
        );
        let (_, warnings) = sink(&format!("{plain}\ninsecure = true")).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("sink.insecure = true: sink.security_protocol: no TLS"),
            "{warnings:?}"
        );
    }

    /// A mistyped or refused property is named, its value (maybe a password) is not, and
    /// the parsed config prints property values masked.
    #[test]
    fn properties_are_librdkafkas_and_their_values_stay_hidden() {
        let eh = format!("type = \"eventhubs\"\nconnection_string = \"{CS}\"\n[sink.properties]\n");
        let (key, reason) =
            sink(&format!("{eh}\"sasl.pasword\" = \"hunter2-secret\"")).unwrap_err();
        assert_eq!(key, "sink.properties.\"sasl.pasword\"");
        assert!(reason.contains("not a librdkafka property"), "{reason}");
        assert!(!reason.contains("hunter2"), "{reason}");
        let (key, reason) = sink(&format!("{eh}\"linger.ms\" = \"hunter2-secret\"")).unwrap_err();
        assert_eq!(key, "sink.properties.\"linger.ms\"");
        assert!(!reason.contains("hunter2"), "{reason}");
        // Event Hubs refuses SASL settings (the connection string gives them); Kafka takes
        // them, printed masked.
        let kafka = "type = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n";
        let (cfg, _) = sink(&format!("{kafka}\"sasl.password\" = \"hunter2-secret\"")).unwrap();
        let printed = format!("{cfg:#?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("c2VjcmV0"),
            "{printed}"
        );
        assert!(printed.contains("\"sasl.password\": ***"), "{printed}");
    }
}
