//! An Azure Event Hubs namespace connection string, parsed once where it is read (the config,
//! a rotated key file) and used by the Event Hubs sink.

use std::fmt;

/// A namespace connection string and the parts hubgate needs. The whole string is librdkafka's
/// SASL password and goes nowhere else: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    text: String,
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
    /// Parse without ever putting the key into an error message. Whitespace around it (a
    /// `${VAR}` whose value ends in a newline) is not part of it: librdkafka's password is
    /// the string trimmed.
    pub fn parse(s: &str) -> Result<ConnectionString, ConnectionStringError> {
        let s = s.trim();
        let text = s.to_string();
        let (mut endpoint, mut key_name, mut has_key, mut entity_path) = (None, None, false, None);
        for part in s.split(';').filter(|p| !p.trim().is_empty()) {
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
        if s.starts_with("SharedAccessSignature ") {
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
            text,
            bootstrap,
            key_name,
            entity_path,
        })
    }

    /// The whole string, for librdkafka's `sasl.password`.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("bootstrap", &self.bootstrap)
            .field("key_name", &self.key_name)
            .field("entity_path", &self.entity_path)
            .finish_non_exhaustive()
    }
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
        assert_eq!(c.text(), s);
        assert_eq!(
            format!("{c:?}"),
            "ConnectionString { bootstrap: \"acme.servicebus.windows.net:9093\", key_name: \"send\", entity_path: None, .. }"
        );
        assert_eq!(cs(&format!(" {s}\n")).unwrap().text(), s);
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

    /// A namespace's SAS connection string (`SharedAccessSignature=…` in place of the key) is
    /// named as a SAS token, not as a missing key name; an Endpoint with a path after the
    /// namespace (a hub pasted in), or with no host, is refused, not made the bootstrap
    /// server.
    #[test]
    fn a_sas_string_and_an_endpoint_that_is_not_a_namespace_are_named() {
        assert_eq!(
            cs(&format!(
                "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=acme&sig={KEY}&se=1&skn=send"
            )),
            Err(ConnectionStringError::SasToken)
        );
        for endpoint in [
            "sb://acme.servicebus.windows.net/motion/",
            "sb://",
            "sb:///",
        ] {
            assert_eq!(
                cs(&format!(
                    "Endpoint={endpoint};SharedAccessKeyName=k;SharedAccessKey={KEY}"
                )),
                Err(ConnectionStringError::BadEndpoint),
                "{endpoint}"
            );
        }
    }
}
