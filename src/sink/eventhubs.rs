//! Azure Event Hubs through its Kafka endpoint: a connection string becomes the exact
//! librdkafka settings of docs/design.md "Event Hubs over Kafka", as one preset nobody can
//! half-apply.

use std::sync::Arc;

use rdkafka::config::ClientConfig;

use super::kafka::{base_config, KafkaSink};
use super::{Deliveries, OpenError};
use crate::config::EventHubsConfig;
use crate::metrics::Metrics;

/// The parts of a namespace connection string hubgate needs. Holds no key material: the
/// whole string is passed through to librdkafka as the SASL password and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `host:port` for `bootstrap.servers` (port 9093 unless the endpoint names one).
    pub bootstrap: String,
    pub key_name: String,
    /// A hub-scoped key can only write this one hub.
    pub entity_path: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("this is a SharedAccessSignature token; the Kafka endpoint needs a connection string with SharedAccessKeyName and SharedAccessKey")]
    SasToken,
    #[error("missing {0} in the connection string")]
    Missing(&'static str),
    #[error("Endpoint must look like sb://NAMESPACE.servicebus.windows.net/")]
    BadEndpoint,
    #[error("malformed connection string: expected Key=Value pairs separated by ';'")]
    Malformed,
    #[error("bad port in the Endpoint: expected a number from 1 to 65535")]
    BadPort,
    #[error("the Endpoint names port {0}; the Event Hubs Kafka endpoint is port 9093 (leave the port out)")]
    NotKafkaPort(u16),
}

/// Namespace domains of the Azure clouds, whose Kafka endpoint is always port 9093.
const AZURE_DOMAINS: &[&str] = &[
    ".servicebus.windows.net",
    ".servicebus.chinacloudapi.cn",
    ".servicebus.usgovcloudapi.net",
];

impl ConnectionString {
    /// Parse without ever putting the key into an error message.
    pub fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        let (mut endpoint, mut key_name, mut has_key, mut entity_path) = (None, None, false, None);
        for part in s.trim().split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or(ConnectionStringError::Malformed)?;
            match k.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(v.trim()),
                "sharedaccesskeyname" => key_name = Some(v.trim().to_string()),
                "sharedaccesskey" => has_key = !v.trim().is_empty(),
                "entitypath" => entity_path = Some(v.trim().to_string()),
                "sharedaccesssignature" => return Err(ConnectionStringError::SasToken),
                _ => {}
            }
        }
        if s.trim_start().starts_with("SharedAccessSignature ") {
            return Err(ConnectionStringError::SasToken);
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::Missing("Endpoint"))?;
        let key_name = key_name.ok_or(ConnectionStringError::Missing("SharedAccessKeyName"))?;
        if !has_key {
            return Err(ConnectionStringError::Missing("SharedAccessKey"));
        }
        let host = endpoint
            .strip_prefix("sb://")
            .ok_or(ConnectionStringError::BadEndpoint)?
            .trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(ConnectionStringError::BadEndpoint);
        }
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (
                name,
                port.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or(ConnectionStringError::BadPort)?,
            ),
            None => (host, 9093),
        };
        let azure = AZURE_DOMAINS
            .iter()
            .any(|d| name.to_ascii_lowercase().ends_with(d));
        if azure && port != 9093 {
            return Err(ConnectionStringError::NotKafkaPort(port));
        }
        let bootstrap = format!("{name}:{port}");
        Ok(ConnectionString {
            bootstrap,
            key_name,
            entity_path,
        })
    }
}

/// The Event Hubs preset: SASL_SSL/PLAIN with `$ConnectionString`, plus Microsoft's settings
/// for the Kafka endpoint (idle connections die after 240 s; requests need > 20 s; requests
/// over 1 046 528 bytes close the connection; Standard tier takes no compression).
pub fn client_config(connection_string: &str, cs: &ConnectionString) -> ClientConfig {
    let mut c = base_config();
    c.set("bootstrap.servers", &cs.bootstrap)
        .set("security.protocol", "sasl_ssl")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "$ConnectionString")
        .set("sasl.password", connection_string)
        .set("request.timeout.ms", "60000")
        .set("metadata.max.age.ms", "180000")
        .set("topic.metadata.refresh.interval.ms", "60000")
        .set("connections.max.idle.ms", "180000")
        .set("socket.keepalive.enable", "true")
        .set("message.max.bytes", "1000000")
        .set("batch.size", "1000000")
        .set("compression.codec", "none");
    c
}

/// Everything the sink sets, from the config: the preset, CA, provisioning, extra properties.
pub fn sink_config(cfg: &EventHubsConfig) -> Result<(ClientConfig, ConnectionString), OpenError> {
    let secret = cfg
        .connection_string
        .as_ref()
        .ok_or_else(|| OpenError("no connection string".into()))?;
    let cs = ConnectionString::parse(secret.expose()).map_err(|e| OpenError(e.to_string()))?;
    let mut c = client_config(secret.expose(), &cs);
    if let Some(ca) = &cfg.ca_location {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    super::kafka::site_settings(&mut c, cfg.provisioning, &cfg.properties);
    Ok((c, cs))
}

pub fn open(
    cfg: &EventHubsConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
) -> Result<KafkaSink, OpenError> {
    let (c, cs) = sink_config(cfg)?;
    if let Some(hub) = &cs.entity_path {
        log::warn!(
            "eventhubs: the key is scoped to hub {hub:?}; records for other hubs will be refused"
        );
    }
    log::info!("eventhubs: {} as key {:?}", cs.bootstrap, cs.key_name);
    KafkaSink::new(c, cfg.hubs.clone(), deliveries, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1tYXRlcmlhbA==";

    fn cs(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        ConnectionString::parse(s)
    }

    #[test]
    fn namespace_string_becomes_bootstrap_9093() {
        let s = format!("Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={KEY}");
        let c = cs(&s).unwrap();
        assert_eq!(c.bootstrap, "acme.servicebus.windows.net:9093");
        assert_eq!(c.key_name, "send");
        assert_eq!(c.entity_path, None);
        let cfg = client_config(&s, &c);
        assert_eq!(cfg.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(cfg.get("sasl.password"), Some(s.as_str()));
        assert_eq!(cfg.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("request.timeout.ms"), Some("60000"));
        assert_eq!(cfg.get("connections.max.idle.ms"), Some("180000"));
    }

    #[test]
    fn entity_path_and_explicit_port() {
        let c = cs(&format!("Endpoint=sb://localhost:19093/;SharedAccessKeyName=k;SharedAccessKey={KEY};EntityPath=motion")).unwrap();
        assert_eq!(c.bootstrap, "localhost:19093");
        assert_eq!(c.entity_path.as_deref(), Some("motion"));
    }

    /// An Azure namespace is reached on 9093 only (443 and 5671 are AMQP and HTTPS); other
    /// hosts (emulators, test brokers) may name their port.
    #[test]
    fn azure_endpoints_must_use_the_kafka_port() {
        let with = |endpoint: &str| {
            cs(&format!(
                "Endpoint=sb://{endpoint}/;SharedAccessKeyName=k;SharedAccessKey={KEY}"
            ))
        };
        assert_eq!(
            with("acme.servicebus.windows.net:9093").unwrap().bootstrap,
            "acme.servicebus.windows.net:9093"
        );
        assert_eq!(
            with("acme.servicebus.windows.net:443"),
            Err(ConnectionStringError::NotKafkaPort(443))
        );
        assert_eq!(
            with("acme.ServiceBus.chinacloudapi.cn:5671"),
            Err(ConnectionStringError::NotKafkaPort(5671))
        );
        assert_eq!(with("localhost:x"), Err(ConnectionStringError::BadPort));
        assert_eq!(with("localhost:0"), Err(ConnectionStringError::BadPort));
    }

    #[test]
    fn errors_are_clear_and_never_contain_the_key() {
        let sas = format!("SharedAccessSignature sr=acme&sig={KEY}&se=1&skn=send");
        let cases = [
            sas,
            format!("Endpoint=sb://acme.servicebus.windows.net/;SharedAccessSignature={KEY}"),
            format!("SharedAccessKeyName=k;SharedAccessKey={KEY}"),
            format!("Endpoint=https://acme/;SharedAccessKeyName=k;SharedAccessKey={KEY}"),
            "Endpoint=sb://acme/;SharedAccessKeyName=k".to_string(),
            format!("garbage{KEY}"),
        ];
        for s in cases {
            let e = cs(&s).unwrap_err();
            assert!(!e.to_string().contains(KEY), "{e}");
        }
        assert_eq!(
            cs(&format!("SharedAccessSignature sr=a&sig={KEY}")).unwrap_err(),
            ConnectionStringError::SasToken
        );
        assert_eq!(
            cs("Endpoint=sb://a/;SharedAccessKeyName=k").unwrap_err(),
            ConnectionStringError::Missing("SharedAccessKey")
        );
    }
}
