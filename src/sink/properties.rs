//! What a site may add to the producer in `[sink.properties]`: only properties librdkafka
//! knows, with values it accepts, and nothing that turns TLS or its checks off by accident.
//! Errors name the property, never its value (it may be a password).

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

use crate::config::{KafkaConfig, SinkConfig, LOGIN_IN_BROKERS};

/// Why setting `key` to `value` would take TLS, or its checks, away; `None` if it does not.
///
/// Values are compared as librdkafka reads them: enums and booleans without regard to case,
/// `0`/`f` for false. A broker URL's `proto://` prefix needs no check: librdkafka refuses one
/// that differs from `security.protocol`.
pub fn tls_off(key: &str, value: &str) -> Option<&'static str> {
    let v = value.trim().to_ascii_lowercase();
    match key {
        "security.protocol" if matches!(v.as_str(), "plaintext" | "sasl_plaintext") => {
            Some("no TLS: everything, the login included, goes over the network in clear text")
        }
        "enable.ssl.certificate.verification" if is_false(&v) => {
            Some("the broker's certificate is not verified: anyone on the path can pose as it")
        }
        "ssl.endpoint.identification.algorithm" if v == "none" => {
            Some("the certificate is not checked against the broker's name: any valid certificate passes")
        }
        "ssl.cipher.suites" if v.contains("null") || v.contains("@seclevel=0") => {
            Some("the cipher list allows connections without encryption or authentication")
        }
        // Meant for Kerberos: the broker is reached, and its certificate checked, under the
        // name a reverse lookup of its address gives, which whoever answers DNS picks.
        "client.dns.lookup" if v == "resolve_canonical_bootstrap_servers_only" => Some(
            "the certificate is checked against the name a reverse DNS lookup of the broker's \
             address gives, not the configured host: whoever answers DNS picks the name",
        ),
        _ => None,
    }
}

/// Why setting `key` to `value` would weaken what a delivery report means, on which hubgate
/// acknowledges sources; `None` if it does not.
pub fn weakens_delivery(key: &str, value: &str) -> Option<&'static str> {
    let v = value.trim().to_ascii_lowercase();
    match setting_name(key) {
        "acks" if !matches!(v.as_str(), "all" | "-1") => Some(
            "hubgate takes only all (or -1): with fewer replicas confirming, a record it \
             acknowledged to its source can be lost with a broker",
        ),
        "enable.idempotence" if is_false(&v) => Some(
            "the idempotent producer keeps retries free of copies and a refused record ahead \
             of the ones behind it; hubgate goes without it by itself only for a broker that \
             refuses one",
        ),
        "enable.gapless.guarantee" if is_false(&v) => Some(
            "without it the records behind one the broker refused are written before it is \
             sent again, out of each device's order",
        ),
        "delivery.report.only.error" if !is_false(&v) => Some(
            "hubgate acknowledges a source when its record's delivery is reported; with only \
             failures reported no record would ever be confirmed, and every one after the \
             first window would wait in the buffer",
        ),
        "partitioner" if v == "random" => Some(
            "a device's records would go to any partition and be read out of their order; \
             the key (the device) picks the partition",
        ),
        "transactional.id" => {
            Some("hubgate's producer is not transactional: every send would fail")
        }
        name if name.starts_with("test.") => Some(
            "librdkafka's test settings (a mock cluster in the process would confirm records \
             no broker has)",
        ),
        _ => None,
    }
}

/// What librdkafka refuses when the producer is created (not when a property is set) of
/// hubgate's settings with `properties` over them: (key, why), the key as the site wrote it.
fn refused_at_creation(properties: &BTreeMap<String, String>) -> Option<(&str, String)> {
    let base = super::kafka::base_config();
    let site = |name: &str| {
        properties
            .iter()
            .find(|(k, _)| setting_name(k) == name)
            .map(|(k, v)| (k.as_str(), v.trim().to_ascii_lowercase()))
    };
    let number = |name: &str| -> Option<f64> {
        site(name)
            .map(|(_, v)| v)
            .or_else(|| base.get(name).map(String::from))
            .and_then(|v| v.parse().ok())
    };
    if let Some((key, _)) = site("message.send.max.retries").filter(|(_, v)| v.parse() == Ok(0)) {
        return Some((key, "must be 1 or more with the idempotent producer".into()));
    }
    if let Some((key, _)) = site("queuing.strategy").filter(|(_, v)| v != "fifo") {
        return Some((key, "must be fifo with the idempotent producer".into()));
    }
    let timeout = number("message.timeout.ms").unwrap_or(0.0);
    let linger = number("linger.ms").unwrap_or(0.0);
    if timeout != 0.0 && timeout <= linger {
        let (key, _) = site("message.timeout.ms").or_else(|| site("linger.ms"))?;
        return Some((
            key,
            "message.timeout.ms must be greater than linger.ms".into(),
        ));
    }
    None
}

/// librdkafka's second names for settings hubgate sets, each with the name hubgate uses (the
/// base settings, the Event Hubs preset and `[sink]`'s own keys). librdkafka applies a
/// config's keys in no fixed order, so a setting must appear under one name only.
const SECOND_NAMES: &[(&str, &str)] = &[
    ("request.required.acks", "acks"),
    ("queue.buffering.max.ms", "linger.ms"),
    ("max.in.flight", "max.in.flight.requests.per.connection"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("retries", "message.send.max.retries"),
    ("compression.type", "compression.codec"),
    ("sasl.mechanism", "sasl.mechanisms"),
    ("metadata.broker.list", "bootstrap.servers"),
];

/// The name hubgate uses for librdkafka's setting `key`.
pub fn setting_name(key: &str) -> &str {
    SECOND_NAMES
        .iter()
        .find(|(second, _)| *second == key)
        .map_or(key, |(_, name)| name)
}

/// Whether librdkafka reads `value` as a boolean false.
pub fn is_false(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "false" | "f" | "0"
    )
}

/// The first of `properties` that turns TLS off: (key, why).
pub fn first_tls_off(properties: &BTreeMap<String, String>) -> Option<(&str, &'static str)> {
    properties
        .iter()
        .find_map(|(k, v)| tls_off(k, v).map(|why| (k.as_str(), why)))
}

/// What in a Kafka sink's config takes TLS or its checks away: (key path, why).
pub fn kafka_tls_off(k: &KafkaConfig) -> Vec<(String, &'static str)> {
    let protocol = tls_off("security.protocol", k.security_protocol.as_librdkafka())
        .map(|why| ("sink.security_protocol".to_string(), why));
    let properties = k
        .properties
        .iter()
        .filter_map(|(k, v)| tls_off(k, v).map(|why| (format!("sink.properties.{k:?}"), why)));
    protocol.into_iter().chain(properties).collect()
}

/// `[sink.properties]` are librdkafka's, ones the producer can be created with, that keep
/// what a delivery report means ([`weakens_delivery`]: `acks=all`, the idempotent producer
/// and its gap-less guarantee, a report of every record, the device's partition),
/// and TLS with verified certificates stays on: always for Event Hubs (the connection string
/// is the password), and for a Kafka broker unless `insecure = true`. On error (key path,
/// reason).
pub fn check(cfg: &SinkConfig) -> Result<(), (String, String)> {
    let in_properties = |(k, reason): (String, String)| (format!("sink.properties.{k:?}"), reason);
    let properties = match cfg {
        SinkConfig::Eventhubs(eh) => &eh.properties,
        SinkConfig::Kafka(k) => &k.properties,
        SinkConfig::Stdout(_) => return Ok(()),
    };
    if let Some(key) = properties
        .keys()
        .find(|k| setting_name(k) == "compression.codec")
    {
        return Err((
            format!("sink.properties.{key:?}"),
            "set compression in [sink] instead".into(),
        ));
    }
    if let Some((key, other)) = twice(properties) {
        return Err((
            format!("sink.properties.{key:?}"),
            format!("{other:?} is the same librdkafka setting: keep one of them"),
        ));
    }
    validate(properties).map_err(in_properties)?;
    if let Some((key, why)) = properties
        .iter()
        .find_map(|(k, v)| weakens_delivery(k, v).map(|why| (k, why)))
    {
        return Err((
            format!("sink.properties.{key:?}"),
            format!("refused: {why}"),
        ));
    }
    if let Some((key, why)) = refused_at_creation(properties) {
        return Err((format!("sink.properties.{key:?}"), why));
    }
    match cfg {
        SinkConfig::Eventhubs(_) => {
            if let Some((key, why)) = first_tls_off(properties) {
                return Err((
                    format!("sink.properties.{key:?}"),
                    format!("refused: {why}; the Event Hubs sink always uses TLS with verified certificates"),
                ));
            }
            if let Some(key) = properties.keys().find(|k| from_connection_string(k)) {
                return Err((
                    format!("sink.properties.{key:?}"),
                    "refused: hubgate sets this from the connection string, which is the SASL \
                     password and goes to its Endpoint only"
                        .into(),
                ));
            }
        }
        SinkConfig::Kafka(k) => {
            if let Some(key) = properties
                .iter()
                .find(|(k, v)| setting_name(k) == "bootstrap.servers" && v.contains('@'))
                .map(|(k, _)| k)
            {
                return Err((
                    format!("sink.properties.{key:?}"),
                    format!("refused: {LOGIN_IN_BROKERS}"),
                ));
            }
            if let Some((key, why)) = kafka_tls_off(k).into_iter().next().filter(|_| !k.insecure) {
                return Err((
                    key,
                    format!("refused: {why}; if this is meant (a test broker on a private network), set insecure = true in [sink]"),
                ));
            }
            if let Some((key, instead)) = login_twice(k) {
                return Err((
                    format!("sink.properties.{key:?}"),
                    format!(
                        "refused: [sink] gives the SASL login (sasl_username, sasl_password or \
                         sasl_password_file), and this would override it; {instead}"
                    ),
                ));
            }
        }
        SinkConfig::Stdout(_) => {}
    }
    Ok(())
}

/// A SASL setting the sink would never send, as a warning: the first of `[sink]`'s login
/// keys, or else of `[sink.properties]`' `sasl.*` keys, when the security protocol in effect
/// (`[sink.properties]`' overrides `[sink]`'s) has no SASL, with what the protocol is and the
/// fix. librdkafka ignores the setting then. A warning, not an error: a broker that takes TLS
/// without SASL (a client certificate, or no login) is served all the same, and a site with
/// such leftover lines keeps running after an upgrade. Values are never quoted.
fn unused_login(k: &KafkaConfig) -> Option<String> {
    let property = k
        .properties
        .iter()
        .find(|(key, _)| setting_name(key) == "security.protocol");
    let protocol = match property {
        Some((_, v)) => v.trim().to_ascii_lowercase(),
        None => k.security_protocol.as_librdkafka().to_string(),
    };
    let instead = match protocol.as_str() {
        "ssl" => "sasl_ssl",
        "plaintext" => "sasl_plaintext",
        _ => return None,
    };
    let login = [
        ("sasl_username", k.sasl_username.is_some()),
        // Before sasl_password, which the file's content fills.
        ("sasl_password_file", k.sasl_password_file.is_some()),
        ("sasl_password", k.sasl_password.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then(|| format!("sink.{key}")))
    .or_else(|| {
        k.properties
            .keys()
            .find(|key| setting_name(key).starts_with("sasl."))
            .map(|key| format!("sink.properties.{key:?}"))
    })?;
    let (said, fix) = match property {
        Some((key, v)) => (
            format!("[sink.properties] {key:?} is {v:?}"),
            format!("set {key:?} = \"{instead}\" there"),
        ),
        None if protocol == "ssl" => (
            "security_protocol is \"ssl\" (the default)".to_string(),
            format!("set security_protocol = \"{instead}\""),
        ),
        None => (
            format!("security_protocol is \"{protocol}\""),
            format!("set security_protocol = \"{instead}\""),
        ),
    };
    Some(format!(
        "{login}: never sent: {said}, which has no SASL login, so the sink connects without \
         it; {fix} to log in, or remove the login"
    ))
}

/// Whether an Event Hubs sink's `key` (under either of librdkafka's names) is one hubgate
/// derives from the connection string. The whole string, key included, is the SASL
/// password: with `bootstrap.servers` set here it would go to that host, over TLS checked
/// against that host's own name, and the SASL and protocol settings are what keep it a
/// password sent over TLS.
fn from_connection_string(key: &str) -> bool {
    let name = setting_name(key);
    name == "bootstrap.servers" || name == "security.protocol" || name.starts_with("sasl.")
}

/// A `sasl.*` key of a Kafka sink's `[sink.properties]` when `[sink]` gives the login, and
/// what to use instead. The property would win over `[sink]`'s (`site_settings`), so a
/// rotated `sasl_password_file` would rebuild a sink that still logs in with the old value.
fn login_twice(k: &KafkaConfig) -> Option<(&str, &'static str)> {
    if k.sasl_username.is_none() && k.sasl_password.is_none() && k.sasl_password_file.is_none() {
        return None;
    }
    let key = k.properties.keys().find(|key| key.starts_with("sasl."))?;
    let instead = match setting_name(key) {
        "sasl.username" => "set sasl_username in [sink] instead",
        "sasl.password" => "set sasl_password or sasl_password_file in [sink] instead",
        "sasl.mechanisms" => "set sasl_mechanism in [sink] instead",
        _ => "remove it: sasl_mechanism, sasl_username and sasl_password(_file) are the login",
    };
    Some((key, instead))
}

/// Two keys of `properties` that name one setting: which of them librdkafka applies last is
/// not defined.
fn twice(properties: &BTreeMap<String, String>) -> Option<(&str, &str)> {
    properties.keys().find_map(|key| {
        properties
            .keys()
            .find(|other| other != &key && setting_name(other) == setting_name(key))
            .map(|other| (key.as_str(), other.as_str()))
    })
}

/// What `check` prints and `run` logs about a sink that is allowed but probably wrong: what
/// `insecure = true` turns off, and a SASL login the protocol never sends ([`unused_login`]).
pub fn warnings(cfg: &SinkConfig) -> Vec<String> {
    let SinkConfig::Kafka(k) = cfg else {
        return Vec::new();
    };
    let insecure = k.insecure.then(|| {
        let off: Vec<String> = kafka_tls_off(k)
            .into_iter()
            .map(|(key, why)| format!("{key}: {why}"))
            .collect();
        format!(
            "sink.insecure = true: {}",
            if off.is_empty() {
                "nothing here turns TLS off: remove the key".to_string()
            } else {
                off.join("; ")
            }
        )
    });
    insecure.into_iter().chain(unused_login(k)).collect()
}

/// Every property is one librdkafka knows and its value one it takes; on error (key, reason).
pub fn validate(properties: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    for (key, value) in properties {
        let mut one = ClientConfig::new();
        one.set(key, value);
        let reason = match one.create_native_config() {
            Ok(_) => continue,
            Err(e) => config_error(&e),
        };
        return Err((key.clone(), reason));
    }
    Ok(())
}

/// A librdkafka configuration error without the value, which rdkafka's own message quotes.
pub fn config_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, _, key, _) => {
            format!("{key:?} is not a librdkafka property (a typo?)")
        }
        KafkaError::ClientConfig(_, _, key, _) => {
            format!("librdkafka does not accept this value for {key:?} (value not shown)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Endpoint=sb://x/;SharedAccessKey=c2VjcmV0";

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_that_take_tls_away_are_found_in_any_spelling() {
        for (k, v) in [
            ("security.protocol", "plaintext"),
            ("security.protocol", "SASL_PLAINTEXT"),
            ("enable.ssl.certificate.verification", "false"),
            ("enable.ssl.certificate.verification", "0"),
            ("enable.ssl.certificate.verification", "F"),
            ("ssl.endpoint.identification.algorithm", "None"),
            ("ssl.cipher.suites", "eNULL:DEFAULT"),
            ("ssl.cipher.suites", "DEFAULT@SECLEVEL=0"),
            (
                "client.dns.lookup",
                "Resolve_Canonical_Bootstrap_Servers_Only",
            ),
        ] {
            assert!(tls_off(k, v).is_some(), "{k} = {v}");
        }
        for (k, v) in [
            ("security.protocol", "ssl"),
            ("security.protocol", "sasl_ssl"),
            ("enable.ssl.certificate.verification", "true"),
            ("ssl.endpoint.identification.algorithm", "https"),
            ("ssl.cipher.suites", "ECDHE-RSA-AES256-GCM-SHA384"),
            ("client.dns.lookup", "use_all_dns_ips"),
            ("linger.ms", "0"),
        ] {
            assert_eq!(tls_off(k, v), None, "{k} = {v}");
        }
        let p = props(&[
            ("linger.ms", "1"),
            ("enable.ssl.certificate.verification", "false"),
        ]);
        assert_eq!(
            first_tls_off(&p).map(|(k, _)| k),
            Some("enable.ssl.certificate.verification")
        );
    }

    /// Every second name maps to a name librdkafka knows that has no second name itself,
    /// and a site's properties may not set one setting under two names.
    #[test]
    fn one_setting_has_one_name() {
        for (second, name) in SECOND_NAMES {
            assert_eq!(setting_name(name), *name, "{second}");
            let mut c = ClientConfig::new();
            c.set(*name, "1");
            if let Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) =
                c.create_native_config()
            {
                panic!("{name} is not a librdkafka property");
            }
        }
        assert_eq!(
            setting_name("max.in.flight"),
            "max.in.flight.requests.per.connection"
        );
        assert_eq!(setting_name("socket.nagle.disable"), "socket.nagle.disable");
        assert_eq!(twice(&props(&[("acks", "all"), ("linger.ms", "5")])), None);
        assert_eq!(
            twice(&props(&[
                ("queue.buffering.max.ms", "1"),
                ("linger.ms", "5")
            ])),
            Some(("linger.ms", "queue.buffering.max.ms"))
        );
    }

    #[test]
    fn unknown_and_invalid_properties_are_named_without_their_value() {
        validate(&props(&[("linger.ms", "20"), ("acks", "all")])).unwrap();
        let (key, reason) = validate(&props(&[("sasl.pasword", SECRET)])).unwrap_err();
        assert_eq!(key, "sasl.pasword");
        assert!(reason.contains("not a librdkafka property"), "{reason}");
        assert!(!reason.contains("SharedAccessKey"), "{reason}");
        let (key, reason) = validate(&props(&[("linger.ms", SECRET)])).unwrap_err();
        assert_eq!(key, "linger.ms");
        assert!(reason.contains("does not accept"), "{reason}");
        assert!(!reason.contains("SharedAccessKey"), "{reason}");
    }

    /// A delivery report means stored by every in-sync replica, from an idempotent producer,
    /// in the device's partition, for every record the broker has: `acks` below all,
    /// idempotence or the gap-less guarantee off, reports of failures only, a random
    /// partitioner, a transactional producer or librdkafka's test settings are found under
    /// either name, in any spelling.
    #[test]
    fn settings_that_weaken_delivery_are_found_in_any_spelling() {
        for (k, v) in [
            ("acks", "0"),
            ("acks", "1"),
            ("request.required.acks", "1"),
            ("acks", " 2 "),
            ("enable.idempotence", "false"),
            ("enable.idempotence", "F"),
            ("enable.idempotence", "0"),
            ("enable.gapless.guarantee", "false"),
            ("delivery.report.only.error", "true"),
            ("delivery.report.only.error", "T"),
            ("partitioner", "Random"),
            ("transactional.id", "hubgate"),
            ("test.mock.num.brokers", "1"),
        ] {
            assert!(weakens_delivery(k, v).is_some(), "{k} = {v}");
        }
        for (k, v) in [
            ("acks", "all"),
            ("acks", "ALL"),
            ("acks", "-1"),
            ("request.required.acks", "all"),
            ("enable.idempotence", "true"),
            ("enable.gapless.guarantee", "true"),
            ("linger.ms", "0"),
            ("delivery.report.only.error", "false"),
            ("partitioner", "murmur2_random"),
            ("allow.auto.create.topics", "true"),
        ] {
            assert_eq!(weakens_delivery(k, v), None, "{k} = {v}");
        }
    }

    /// What librdkafka refuses only when the producer is created is found beforehand, under
    /// the key the site wrote; what it creates a producer with is not.
    #[test]
    fn what_the_producer_would_refuse_is_found_beforehand() {
        let creates = |p: &BTreeMap<String, String>| {
            let mut c = super::super::kafka::base_config();
            super::super::kafka::site_settings(&mut c, p);
            c.set("bootstrap.servers", "127.0.0.1:9")
                .create::<rdkafka::producer::BaseProducer>()
                .is_ok()
        };
        for (pairs, key) in [
            (&[("retries", "0")][..], "retries"),
            (&[("queuing.strategy", "lifo")], "queuing.strategy"),
            (&[("message.timeout.ms", "3")], "message.timeout.ms"),
            (
                &[("queue.buffering.max.ms", "200000")],
                "queue.buffering.max.ms",
            ),
            (
                &[("linger.ms", "20000"), ("delivery.timeout.ms", "10000")],
                "delivery.timeout.ms",
            ),
        ] {
            let p = props(pairs);
            assert_eq!(refused_at_creation(&p).map(|(k, _)| k), Some(key), "{p:?}");
            assert!(!creates(&p), "{p:?} is refused by librdkafka too");
        }
        for pairs in [
            &[("retries", "3"), ("queuing.strategy", "fifo")][..],
            &[("message.timeout.ms", "0"), ("linger.ms", "200000")],
            &[("linger.ms", "20"), ("message.timeout.ms", "5000")],
            &[],
        ] {
            let p = props(pairs);
            assert_eq!(refused_at_creation(&p), None, "{p:?}");
            assert!(creates(&p), "{p:?}");
        }
    }

    /// A `[sink]` table, parsed.
    fn sink_config(table: &str) -> SinkConfig {
        crate::config::Config::parse(&format!("[sink]\n{table}\n"))
            .unwrap()
            .sink
    }

    /// A Kafka login the protocol in effect never sends is one warning naming its key, the
    /// protocol, where that is set, and the one that sends it; a SASL protocol, from
    /// `[sink]` or from `[sink.properties]`, sends it and is not warned about.
    #[test]
    fn a_login_the_protocol_never_sends_is_warned_about() {
        let kafka = "type = \"kafka\"\nbrokers = \"x:9093\"\n";
        let unsent = |table: String| -> Vec<String> {
            warnings(&sink_config(&table))
                .into_iter()
                .filter(|w| w.contains("never sent"))
                .collect()
        };
        let no_login = "which has no SASL login, so the sink connects without it";
        for (table, said, fix) in [
            (
                format!("{kafka}sasl_username = \"u\""),
                "sink.sasl_username: never sent: security_protocol is \"ssl\" (the default)",
                "set security_protocol = \"sasl_ssl\"",
            ),
            (
                format!("{kafka}security_protocol = \"plaintext\"\ninsecure = true\nsasl_password_file = \"/run/pw\""),
                "sink.sasl_password_file: never sent: security_protocol is \"plaintext\"",
                "set security_protocol = \"sasl_plaintext\"",
            ),
            (
                format!("{kafka}sasl_password_file = \"/run/pw\"\n[sink.properties]\n\"security.protocol\" = \"SSL\""),
                "sink.sasl_password_file: never sent: [sink.properties] \"security.protocol\" is \"SSL\"",
                "set \"security.protocol\" = \"sasl_ssl\" there",
            ),
            (
                format!("{kafka}[sink.properties]\n\"sasl.password\" = \"pw\""),
                "sink.properties.\"sasl.password\": never sent: security_protocol is \"ssl\" (the default)",
                "set security_protocol = \"sasl_ssl\"",
            ),
        ] {
            assert_eq!(
                unsent(table),
                [format!("{said}, {no_login}; {fix} to log in, or remove the login")]
            );
        }
        for table in [
            format!("{kafka}security_protocol = \"sasl_ssl\"\nsasl_username = \"u\""),
            format!("{kafka}sasl_username = \"u\"\n[sink.properties]\n\"security.protocol\" = \"SASL_SSL\""),
            format!("{kafka}security_protocol = \"plaintext\"\ninsecure = true"),
        ] {
            assert_eq!(unsent(table.clone()), Vec::<String>::new(), "{table}");
        }
    }

    /// An Event Hubs sink's properties may not set what hubgate derives from the connection
    /// string, the SASL password with the key in it: where it goes, the protocol, or the
    /// SASL settings, under either name.
    #[test]
    fn event_hubs_properties_may_not_override_the_connection_string() {
        let eh = "type = \"eventhubs\"\nconnection_string = \"Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0\"\n[sink.properties]\n";
        for (key, value) in [
            ("bootstrap.servers", "collector.example.net:9093"),
            ("metadata.broker.list", "collector.example.net:9093"),
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "$ConnectionString"),
            ("sasl.password", "pa55"),
        ] {
            let (path, reason) =
                check(&sink_config(&format!("{eh}{key:?} = {value:?}"))).unwrap_err();
            assert_eq!(path, format!("sink.properties.{key:?}"));
            assert!(
                reason.starts_with("refused: hubgate sets this from the connection string"),
                "{key}: {reason}"
            );
        }
        check(&sink_config(&format!("{eh}\"linger.ms\" = \"20\""))).unwrap();
    }

    /// Only a login in the brokers is refused: an `@` in another Kafka property's value (a
    /// client id, say) is not one.
    #[test]
    fn an_at_sign_outside_the_brokers_is_no_login() {
        let kafka = "type = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n";
        check(&sink_config(&format!(
            "{kafka}\"client.id\" = \"gw@site-1\""
        )))
        .unwrap();
        let (path, reason) = check(&sink_config(&format!(
            "{kafka}\"metadata.broker.list\" = \"u:pw@x:9093\""
        )))
        .unwrap_err();
        assert_eq!(path, "sink.properties.\"metadata.broker.list\"");
        assert_eq!(reason, format!("refused: {LOGIN_IN_BROKERS}"));
    }
}
