//! Azure Event Hubs through its Kafka endpoint: a connection string becomes the exact
//! librdkafka settings of docs/design.md "Event Hubs over Kafka", as one preset nobody can
//! half-apply.

use std::sync::Arc;

use rdkafka::config::ClientConfig;

use super::kafka::{base_config, KafkaSink};
use super::provision::Hubs;
use super::{Deliveries, OpenError};
use crate::config::EventHubsConfig;
use crate::connection_string::ConnectionString;
use crate::metrics::Metrics;

/// The Event Hubs preset: SASL_SSL/PLAIN with `$ConnectionString`, plus Microsoft's settings
/// for the Kafka endpoint (idle connections die after 240 s; requests need > 20 s; requests
/// over 1 046 528 bytes close the connection; Standard tier takes no compression).
pub fn client_config(cs: &ConnectionString) -> ClientConfig {
    let mut c = base_config();
    c.set("bootstrap.servers", &cs.bootstrap)
        .set("security.protocol", "sasl_ssl")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "$ConnectionString")
        .set("sasl.password", cs.text())
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
pub fn sink_config(cfg: &EventHubsConfig) -> Result<(ClientConfig, &ConnectionString), OpenError> {
    let cs = cfg
        .connection_string
        .as_ref()
        .ok_or_else(|| OpenError("no connection string".into()))?
        .expose();
    let mut c = client_config(cs);
    if let Some(ca) = &cfg.ca_location {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    c.set("compression.codec", cfg.compression.as_librdkafka());
    super::kafka::site_settings(&mut c, cfg.provisioning, &cfg.properties);
    Ok((c, cs))
}

pub fn open(
    cfg: &EventHubsConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
    hubs: Hubs,
) -> Result<KafkaSink, OpenError> {
    let (c, cs) = sink_config(cfg)?;
    log::info!("eventhubs: {} as key {:?}", cs.bootstrap, cs.key_name);
    KafkaSink::new(c, cfg.hubs.clone(), deliveries, metrics, hubs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preset_logs_in_with_the_whole_connection_string() {
        let s = "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0";
        let cfg = client_config(&ConnectionString::parse(s).unwrap());
        assert_eq!(
            cfg.get("bootstrap.servers"),
            Some("acme.servicebus.windows.net:9093")
        );
        assert_eq!(cfg.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(cfg.get("sasl.password"), Some(s));
        assert_eq!(cfg.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(cfg.get("acks"), Some("all"));
        assert_eq!(cfg.get("request.timeout.ms"), Some("60000"));
        assert_eq!(cfg.get("connections.max.idle.ms"), Some("180000"));
    }
}
