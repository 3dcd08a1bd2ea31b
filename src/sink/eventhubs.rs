//! Azure Event Hubs through its Kafka endpoint: a connection string becomes the exact
//! librdkafka settings of docs/design.md "Event Hubs over Kafka", as one preset nobody can
//! half-apply.

use std::sync::Arc;

use rdkafka::config::ClientConfig;

use super::kafka::{base_config, KafkaSink};
use super::provision::Hubs;
use super::{Connection, Deliveries, OpenError};
use crate::config::EventHubsConfig;
use crate::connection_string::ConnectionString;
use crate::metrics::Metrics;

/// The SASL user of an Event Hubs login; the connection string is its password.
pub const USERNAME: &str = "$ConnectionString";

/// The Event Hubs preset: SASL_SSL/PLAIN with `$ConnectionString`, plus Microsoft's settings
/// for the Kafka endpoint (idle connections die after 240 s; requests need > 20 s; requests
/// over 1 046 528 bytes close the connection; Standard tier takes no compression).
pub fn client_config(cs: &ConnectionString) -> ClientConfig {
    let mut c = base_config();
    c.set("bootstrap.servers", &cs.bootstrap)
        .set("security.protocol", "sasl_ssl")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", USERNAME)
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

/// Everything the sink sets, from the config: the preset, CA, extra properties.
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
    super::kafka::site_settings(&mut c, &cfg.properties);
    Ok((c, cs))
}

pub fn open(
    cfg: &EventHubsConfig,
    deliveries: Deliveries,
    metrics: Arc<Metrics>,
    hubs: Hubs,
    connection: Connection,
) -> Result<KafkaSink, OpenError> {
    let (c, cs) = sink_config(cfg)?;
    log::info!("eventhubs: {} as key {:?}", cs.bootstrap, cs.key_name);
    if let Some(hub) = cfg.single_hub() {
        log::info!("eventhubs: every recType to hub {hub:?} (hub_mode = \"single\")");
    }
    KafkaSink::new(c, cfg.hub_names(), deliveries, metrics, hubs, connection)
}

/// What `check` says about the connection string's `EntityPath`: what it means with the
/// configured `hub_mode`, without guessing what the service does with it (docs/eventhubs.md
/// "EntityPath").
pub fn entity_path_note(cfg: &EventHubsConfig) -> Option<String> {
    let cs = cfg.connection_string.as_ref()?.expose();
    let ep = cs.entity_path.as_deref()?;
    if cfg.hub_mode == crate::config::HubMode::Single {
        return None;
    }
    let namespace = cs.bootstrap.split(['.', ':']).next().unwrap_or_default();
    Some(if ep.eq_ignore_ascii_case(namespace) {
        format!(
            "the connection string ends in EntityPath={ep}, the namespace's own name (as in Microshare's example): hubgate sends each recType to its own hub and does not use it; `hubgate doctor` writes a probe record and tells whether the key is limited to one hub"
        )
    } else {
        format!(
            "the connection string names hub {ep:?} (EntityPath): a key made on that hub writes only there, a namespace key anywhere; `hubgate doctor` writes a probe record and tells which, and hub_mode = \"single\" sends every recType to {ep:?}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SinkConfig};

    /// A config with the devices of two recTypes and an Event Hubs sink on `cs`, plus `extra`.
    fn config(cs: &str, extra: &str) -> Result<Config, (String, String)> {
        let text = format!(
            "[[source]]\ntype = \"udp\"\n[[device]]\ndev_eui = \"0000000000000001\"\ncodec = \"browan-tbms100\"\n\
             [sink]\ntype = \"eventhubs\"\nconnection_string = \"{cs}\"\n{extra}\n"
        );
        let mut cfg = Config::parse(&text)?;
        cfg.resolve(std::path::Path::new("."))?;
        crate::sink::check(&cfg.sink)?;
        Ok(cfg)
    }

    fn eh(cfg: &Config) -> &EventHubsConfig {
        match &cfg.sink {
            SinkConfig::Eventhubs(eh) => eh,
            other => panic!("{other:?}"),
        }
    }

    const CS: &str = "Endpoint=sb://yourchoice.servicebus.windows.net/;SharedAccessKeyName=m;SharedAccessKey=c2VjcmV0";

    /// `check` explains EntityPath without claiming what the service does with it: the
    /// namespace's own name (Microshare's example) is not used; a hub's name may limit the
    /// key, which doctor finds out. No EntityPath, or hub_mode = "single", needs no word.
    #[test]
    fn entity_path_is_explained_not_guessed() {
        let same = config(&format!("{CS};EntityPath=yourchoice"), "").unwrap();
        let note = entity_path_note(eh(&same)).unwrap();
        assert!(note.contains("the namespace's own name"), "{note}");
        assert!(note.contains("does not use it"), "{note}");
        assert!(!note.contains("refused"), "no guess: {note}");
        let other = config(&format!("{CS};EntityPath=motion"), "").unwrap();
        let note = entity_path_note(eh(&other)).unwrap();
        assert!(note.contains("names hub \"motion\""), "{note}");
        assert!(note.contains("hub_mode = \"single\""), "{note}");
        assert_eq!(entity_path_note(eh(&config(CS, "").unwrap())), None);
        let single = config(&format!("{CS};EntityPath=motion"), "hub_mode = \"single\"").unwrap();
        assert_eq!(entity_path_note(eh(&single)), None);
    }

    /// `hub_mode = "single"`: every recType to the EntityPath hub; without one it is an
    /// error at the key, as is a [sink.hubs] it would ignore.
    #[test]
    fn single_mode_plans_every_rec_type_for_the_entity_path_hub() {
        let single = config(&format!("{CS};EntityPath=site"), "hub_mode = \"single\"").unwrap();
        let plan = single.hub_plan();
        assert!(plan.len() >= 2, "{plan:?}");
        assert!(plan.iter().all(|(_, hub)| *hub == "site"), "{plan:?}");
        let per = config(&format!("{CS};EntityPath=site"), "").unwrap();
        assert!(per.hub_plan().iter().all(|(r, hub)| r == hub));
        let (key, why) = config(CS, "hub_mode = \"single\"").unwrap_err();
        assert_eq!(key, "sink.hub_mode");
        assert!(why.contains("EntityPath"), "{why}");
        let (key, _) = config(
            &format!("{CS};EntityPath=site"),
            "hub_mode = \"single\"\n[sink.hubs]\n\"a\" = \"b\"",
        )
        .unwrap_err();
        assert_eq!(key, "sink.hubs");
    }

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
