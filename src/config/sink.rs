//! The `[sink]` table: where records go.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::keypath::{fields, tagged, unknown_kind, Tagged};
use super::secrets::{SecretString, MASK};
use crate::connection_string::ConnectionString;
use crate::secret::Secret;

super::map_only::from_tables_only!(written: EventHubsConfig, KafkaConfig, StdoutConfig);

/// The `[sink]` table, chosen by its `type`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Eventhubs(EventHubsConfig),
    Kafka(KafkaConfig),
    Stdout(StdoutConfig),
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, table) = tagged(d)?;
        Ok(match kind.as_str() {
            "eventhubs" => SinkConfig::Eventhubs(fields(table)?),
            "kafka" => SinkConfig::Kafka(fields(table)?),
            "stdout" => SinkConfig::Stdout(fields(table)?),
            other => return Err(unknown_kind(other, &["eventhubs", "kafka", "stdout"])),
        })
    }
}

impl Serialize for SinkConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SinkConfig::Eventhubs(keys) => Tagged {
                kind: "eventhubs",
                keys,
            }
            .serialize(s),
            SinkConfig::Kafka(keys) => Tagged {
                kind: "kafka",
                keys,
            }
            .serialize(s),
            SinkConfig::Stdout(keys) => Tagged {
                kind: "stdout",
                keys,
            }
            .serialize(s),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct EventHubsConfig {
    /// The namespace connection string (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`).
    /// Prefer `connection_string_file`; `${ENV}` is expanded.
    pub connection_string: Option<Secret<ConnectionString>>,
    /// A file (0600, or a systemd credential) holding the connection string.
    pub connection_string_file: Option<PathBuf>,
    /// CA bundle; default is the system store.
    pub ca_location: Option<PathBuf>,
    /// recType -> hub name; unmapped recTypes go to the hub named like the recType.
    #[serde(default)]
    pub hubs: BTreeMap<String, String>,
    /// `auto` by default: Microshare's setup (a Manage key, hubs created per recType) works
    /// with nothing but the connection string.
    #[serde(default = "Provisioning::auto")]
    pub provisioning: Provisioning,
    /// Partitions of a hub hubgate creates (fixed for the hub's life on Basic/Standard).
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    /// `none`, or `gzip` on the Premium and Dedicated tiers only (the others refuse
    /// compressed records).
    #[serde(default)]
    pub compression: Compression,
    /// One hub per recType, or every recType to the connection string's `EntityPath` hub.
    #[serde(default)]
    pub hub_mode: HubMode,
    /// Extra librdkafka properties, applied after the Event Hubs preset. None may turn TLS
    /// or certificate checks off.
    #[serde(default)]
    pub properties: Properties,
}

/// Why brokers with a `user:password@` are refused: librdkafka takes that for part of the
/// host name and names the broker so in its log lines, as `doctor` does.
pub const LOGIN_IN_BROKERS: &str = "a user name or password in the brokers would show in \
     logs and doctor: give host:port only, and the login in sasl_username and \
     sasl_password_file";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    #[serde(default)]
    pub sasl_mechanism: SaslMechanism,
    pub sasl_username: Option<String>,
    /// `${ENV}` is expanded; prefer `sasl_password_file`.
    pub sasl_password: Option<Secret>,
    /// A file (0600, or a systemd credential) holding the SASL password. Read at start, and
    /// again on SIGHUP and every 10 s: a new password there rebuilds the sink.
    pub sasl_password_file: Option<PathBuf>,
    pub ca_location: Option<PathBuf>,
    /// recType -> topic; unmapped recTypes go to the topic named like the recType.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Partitions of a topic hubgate creates (`provisioning = "auto"`).
    #[serde(default = "default_partitions")]
    pub partitions: u16,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub properties: Properties,
    /// Allow a connection without TLS or without certificate checks (a test broker on a
    /// private network): warned at every start, and `doctor` fails.
    #[serde(default)]
    pub insecure: bool,
}

/// `[sink.properties]`: librdkafka settings. Debug output shows the keys only, since a value
/// may be a password.
#[derive(Clone, Default)]
pub struct Properties(pub BTreeMap<String, String>);

/// A secret property's value is read as a secret is: a number in its place is refused
/// without serde's message, which would quote it.
impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> de::Visitor<'de> for Map {
            type Value = Properties;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of librdkafka properties")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Properties, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = match Properties::is_secret(&key) {
                        true => map.next_value::<SecretString>()?.0,
                        false => map.next_value::<String>()?,
                    };
                    out.insert(key, value);
                }
                Ok(Properties(out))
            }
        }
        d.deserialize_map(Map)
    }
}

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Properties {
    /// librdkafka properties that hold a secret (`sasl.password`, `ssl.key.password`,
    /// `ssl.key.pem`, `sasl.oauthbearer.client.secret`, the OAuth assertion's private key and
    /// its passphrase, …): `check --print` masks them.
    pub fn is_secret(key: &str) -> bool {
        key.contains("password")
            || key.contains("secret")
            || key.contains("passphrase")
            || key.ends_with("private.key.pem")
            || key == "ssl.key.pem"
            || key == "sasl.oauthbearer.config"
    }

    /// A secret property given as the mask `check --print` wrote: (key, reason).
    pub fn masked(&self) -> Option<(&str, String)> {
        self.0
            .iter()
            .find(|(k, v)| Properties::is_secret(k) && *v == MASK)
            .map(|(k, _)| {
                (
                    k.as_str(),
                    format!("{MASK:?} stands for a secret `check --print` did not show: write the value itself"),
                )
            })
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| match Properties::is_secret(k) {
            true => (k, MASK),
            false => (k, v.as_str()),
        }))
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, format_args!("***"))))
            .finish()
    }
}

/// Four partitions: room for four parallel readers per consumer group, a count Event Hubs
/// cannot change later on Basic/Standard, at no extra cost there (billing is per throughput
/// unit); one device's records keep their order whatever the count (key = DevEUI).
pub const DEFAULT_PARTITIONS: u16 = 4;

fn default_partitions() -> u16 {
    DEFAULT_PARTITIONS
}

/// The SASL mechanism of a Kafka login: one librdkafka knows, so that a misspelt one is
/// refused by `check`, naming its key, not by the producer at start.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS unless the config says otherwise (which also needs `insecure = true`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    #[default]
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct StdoutConfig {
    /// Pretty-print each record over several lines instead of one JSON line.
    #[serde(default)]
    pub pretty: bool,
}

impl EventHubsConfig {
    /// The connection string's `EntityPath`, if any.
    pub fn entity_path(&self) -> Option<&str> {
        self.connection_string
            .as_ref()
            .and_then(|cs| cs.expose().entity_path.as_deref())
    }

    /// The hub every record goes to with `hub_mode = "single"`; `None` otherwise.
    pub fn single_hub(&self) -> Option<&str> {
        (self.hub_mode == HubMode::Single)
            .then(|| self.entity_path())
            .flatten()
    }

    /// Where its recTypes go.
    pub fn hub_names(&self) -> HubNames {
        HubNames {
            single: self.single_hub().map(str::to_string),
            mapped: self.hubs.clone(),
        }
    }
}

/// Which hub (topic) a recType's records go to: every recType to the `EntityPath` hub with
/// `hub_mode = "single"`, else the one `[sink.hubs]` (`[sink.topics]`) maps it to, else the
/// hub named like the recType.
#[derive(Debug, Clone, Default)]
pub struct HubNames {
    single: Option<String>,
    mapped: BTreeMap<String, String>,
}

impl HubNames {
    /// Each recType to the hub `mapped` names, else to the one named like it.
    pub fn mapped(mapped: BTreeMap<String, String>) -> HubNames {
        HubNames {
            single: None,
            mapped,
        }
    }

    /// The one hub of every recType (`hub_mode = "single"`).
    pub fn single(&self) -> Option<&str> {
        self.single.as_deref()
    }

    pub fn hub<'a>(&'a self, rec_type: &'a str) -> &'a str {
        self.single
            .as_deref()
            .or_else(|| self.mapped.get(rec_type).map(String::as_str))
            .unwrap_or(rec_type)
    }
}

impl SinkConfig {
    /// Where its recTypes go; `None` for sinks without hubs.
    pub fn hub_names(&self) -> Option<HubNames> {
        match self {
            SinkConfig::Eventhubs(eh) => Some(eh.hub_names()),
            SinkConfig::Kafka(k) => Some(HubNames::mapped(k.topics.clone())),
            SinkConfig::Stdout(_) => None,
        }
    }

    /// How hubs come to exist; `None` for sinks without hubs.
    pub fn provisioning(&self) -> Option<Provisioning> {
        match self {
            SinkConfig::Eventhubs(eh) => Some(eh.provisioning),
            SinkConfig::Kafka(k) => Some(k.provisioning),
            SinkConfig::Stdout(_) => None,
        }
    }
}

/// How the producer compresses its requests (librdkafka `compression.codec`). A batch is
/// compressed as a whole: the saving grows with the records in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Which hub a record goes to (Event Hubs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HubMode {
    /// Each recType to its own hub (named like it, or as `[sink.hubs]` maps it).
    #[default]
    PerRectype,
    /// Every recType to the hub the connection string names (`EntityPath`), with the
    /// recType in a `recType` Kafka header beside the one in the record: for a key made on
    /// one hub, which can write only there.
    Single,
}

/// How hubs (topics) come to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// The hubs exist already (a Send-only key cannot create them): checked at start, and a
    /// recType whose hub is missing is parked, with a message saying which. The Kafka
    /// sink's default.
    #[default]
    Precreated,
    /// A missing hub is created (Kafka CreateTopics; needs a Manage key on Event Hubs). The
    /// Event Hubs sink's default.
    Auto,
}

impl Provisioning {
    fn auto() -> Provisioning {
        Provisioning::Auto
    }
}

/// What [`valid_hub_name`] takes, for errors.
pub const HUB_NAMES: &str =
    "1-256 letters, digits, '.', '-', '_', starting and ending with a letter or digit";

/// Event Hubs names: 1-256 letters, digits, `.`, `-`, `_`, starting and ending with a
/// letter or digit.
pub fn valid_hub_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    (1..=256).contains(&name.len())
        && name.chars().all(ok)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}
