//! The one TOML config file, as typed structs.
//!
//! Every struct denies unknown keys; every error names the file, the key path and what is
//! wrong, on one line. Secrets are read here (files, `${ENV}`) and wrapped in [`Secret`] so
//! they cannot reach a log line by accident.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{de, de::DeserializeOwned, Deserialize, Deserializer};

use crate::codec::Codec;
use crate::connection_string::ConnectionString;
use crate::ids::{parse_eui64, DevEui};
use crate::lorawan::{DevAddr, Key, SessionKeys};
use crate::mqtt_url::MqttUrl;
pub use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Board profile (`boards/<id>.toml`) whose defaults sit under this file's own keys.
    #[serde(default)]
    pub board: Option<String>,
    /// Name of this gateway; goes into the client ids and `meta.global`.
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub record: RecordConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    pub sink: SinkConfig,
    /// Warnings about the files read while loading (who else may read secrets).
    #[serde(skip)]
    file_warnings: Vec<String>,
}

fn default_gateway_id() -> String {
    "hubgate".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Directory of the sled database.
    #[serde(default = "default_buffer_path")]
    pub path: PathBuf,
    /// Byte cap of spilled records (`"256MiB"`, `"1GB"` or a number of bytes).
    #[serde(default = "default_max_bytes", deserialize_with = "de_size")]
    pub max_bytes: u64,
    /// Spilled records older than this are dropped (counted) instead of sent.
    #[serde(default = "default_max_age", deserialize_with = "de_duration")]
    pub max_age: Duration,
    #[serde(default)]
    pub when_full: WhenFull,
    /// Records in memory on their way to the sink; past this, new records spill.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// A record not confirmed by the sink after this long is written to sled and acknowledged.
    #[serde(default = "default_spill_after", deserialize_with = "de_duration")]
    pub spill_after: Duration,
    /// Free space to leave on the buffer's file system: below it the buffer stops growing and
    /// `when_full` applies (reason `disk_full`), so a full disk never reaches sled as ENOSPC.
    #[serde(default = "default_min_free", deserialize_with = "de_size")]
    pub min_free: u64,
}

fn default_buffer_path() -> PathBuf {
    "/var/lib/hubgate".into()
}
fn default_max_bytes() -> u64 {
    256 << 20
}
fn default_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
/// Two produce requests' worth (librdkafka's `batch.size` 1 MB ≈ 1,000 records): one in
/// flight, one filling (`max.in.flight.requests.per.connection` is 1). A larger window did not
/// raise throughput or drain rate in `scripts/bench.sh` but held each record twice in memory
/// (ours and librdkafka's copy): peak RSS of a 200,000-record drain 128 MB at 10,000.
fn default_max_in_flight() -> usize {
    2_000
}
fn default_spill_after() -> Duration {
    Duration::from_secs(2)
}
fn default_min_free() -> u64 {
    16 << 20
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            path: default_buffer_path(),
            max_bytes: default_max_bytes(),
            max_age: default_max_age(),
            when_full: WhenFull::default(),
            max_in_flight: default_max_in_flight(),
            spill_after: default_spill_after(),
            min_free: default_min_free(),
        }
    }
}

/// What a full buffer does with one more record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest spilled records to make room (counted and logged).
    #[default]
    DropOldest,
    /// Refuse the new record (counted and logged) and acknowledge its source.
    DropNewest,
    /// Stop reading (and acknowledging) sources until there is room.
    Block,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// recType of frames without a codec, or whose codec failed.
    #[serde(default = "default_packed_rec_type")]
    pub packed_rec_type: String,
    /// Tags added to every record's `meta.global`.
    #[serde(default)]
    pub global_tags: Vec<String>,
    /// How many recent uplinks are remembered to drop duplicates (same device, FCnt, payload).
    #[serde(default = "default_dedup_window")]
    pub dedup_window: usize,
}

fn default_packed_rec_type() -> String {
    crate::codec::rec_type::PACKED.into()
}
fn default_dedup_window() -> usize {
    4096
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            packed_rec_type: default_packed_rec_type(),
            global_tags: Vec::new(),
            dedup_window: default_dedup_window(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus text metrics on this address; `"off"` turns the endpoint off.
    #[serde(default = "default_metrics_listen", deserialize_with = "de_listen")]
    pub listen: Option<std::net::SocketAddr>,
    /// How often a status line is logged; `"0s"` turns it off.
    #[serde(default = "default_status_interval", deserialize_with = "de_duration")]
    pub status_interval: Duration,
}

fn default_metrics_listen() -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9898)))
}
fn default_status_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
            status_interval: default_status_interval(),
        }
    }
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "bad address {s:?}: expected e.g. \"127.0.0.1:9898\", or \"off\""
        ))
    })
}

/// Uplink JSON formats hubgate reads from MQTT and replay files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UplinkFormat {
    /// ChirpStack v4 application integration `event/up` JSON.
    ChirpstackV4,
    /// The Things Stack v3 `up` messages.
    TtsV3,
    /// Raw gateway frames from the ChirpStack MQTT forwarder / gateway bridge (JSON), which
    /// hubgate decodes itself with the configured session keys.
    ChirpstackGateway,
}

/// A `[[source]]` table, chosen by its `type`.
#[derive(Debug)]
pub enum SourceConfig {
    Mqtt(Box<MqttSourceConfig>),
    Replay(ReplaySourceConfig),
    Serial(SerialSourceConfig),
    Udp(UdpSourceConfig),
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, table) = tagged(d)?;
        Ok(match kind.as_str() {
            "mqtt" => SourceConfig::Mqtt(Box::new(fields(table)?)),
            "replay" => SourceConfig::Replay(fields(table)?),
            "serial" => SourceConfig::Serial(fields(table)?),
            "udp" => SourceConfig::Udp(fields(table)?),
            other => return Err(unknown_kind(other, &["mqtt", "replay", "serial", "udp"])),
        })
    }
}

/// Semtech UDP packet forwarder (GWMP): point `lora_pkt_fwd`'s `server_address` and
/// `serv_port_up`/`serv_port_down` here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSourceConfig {
    #[serde(default = "default_udp_listen")]
    pub listen: std::net::SocketAddr,
    /// Turn the forwarder's `stat` reports into `io.microshare.gateway.unpacked` records.
    #[serde(default)]
    pub gateway_status: bool,
    /// Gateway EUIs (16 hex digits) whose datagrams are taken; empty: any gateway.
    #[serde(default, deserialize_with = "de_euis")]
    pub gateways: Vec<[u8; 8]>,
}

fn default_udp_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 1700))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// `mqtt://host:port` (or `mqtts://`).
    #[serde(deserialize_with = "de_mqtt_url")]
    pub url: MqttUrl,
    /// Topic filter; default per format: `application/+/device/+/event/up` (chirpstack-v4),
    /// `v3/+/devices/+/up` (tts-v3).
    pub topic: Option<String>,
    #[serde(default = "default_format")]
    pub format: UplinkFormat,
    /// Client id of the persistent session; default `hubgate-<gateway_id>`.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// `${ENV}` is expanded; prefer `password_file`.
    pub password: Option<Secret>,
    /// A file (0600, or a systemd credential) holding the password.
    pub password_file: Option<PathBuf>,
    /// `mqtts://` only: the CA certificates (PEM) the broker's certificate must chain to;
    /// without it, the system's CA store.
    pub ca_file: Option<PathBuf>,
    /// `mqtts://` only: a client certificate (PEM) for brokers that ask for one, with
    /// `client_key_file`, its private key (PEM; a secret: 0600 or a systemd credential).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// What those files hold, read when the config is loaded.
    #[serde(skip)]
    pub tls: MqttTls,
    #[serde(default = "default_keep_alive", deserialize_with = "de_duration")]
    pub keep_alive: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_reconnect_max", deserialize_with = "de_duration")]
    pub reconnect_max: Duration,
    /// Largest message processed (`"256KiB"`, at most 16 MiB); a larger one is acknowledged,
    /// counted (`mqtt_oversized`) and kept as a dead letter.
    #[serde(default = "default_max_message", deserialize_with = "de_size")]
    pub max_message: u64,
}

/// Largest `max_message`: the largest packet the MQTT source reads at all.
pub const MAX_MQTT_MESSAGE: usize = 16 * 1024 * 1024;

fn default_max_message() -> u64 {
    256 * 1024
}

/// The TLS files of an `mqtts://` source, read.
#[derive(Clone, Default)]
pub struct MqttTls {
    pub ca: Option<Vec<u8>>,
    /// Certificate and private key.
    pub client: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttTls")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl MqttSourceConfig {
    /// Read the TLS files (only `mqtts://` takes them); on error (key, reason). Whether they
    /// make a working TLS setup is the source's to say when it is built.
    fn load_tls(
        &mut self,
        secret_files: &mut Vec<(PathBuf, &'static str)>,
    ) -> Result<(), (&'static str, String)> {
        let tls = self.url.tls;
        let files = [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
            ("client_key_file", &self.client_key_file),
        ];
        if !tls {
            if let Some((key, _)) = files.iter().find(|(_, f)| f.is_some()) {
                return Err((key, "only for mqtts:// urls".into()));
            }
            return Ok(());
        }
        let read = |key: &'static str, path: &Path| {
            crate::files::read_capped(path, crate::files::CA_CAP)
                .map(String::into_bytes)
                .map_err(|e| (key, format!("{}: {e}", path.display())))
        };
        if let Some(ca) = &self.ca_file {
            self.tls.ca = Some(read("ca_file", ca)?);
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let pem = read("client_cert_file", cert)?;
                let secret = read_secret_file(key).map_err(|e| ("client_key_file", e))?;
                secret_files.push((key.clone(), "a private key"));
                self.tls.client = Some((pem, secret));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err((
                    "client_key_file",
                    "missing: the client certificate's key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "client_cert_file",
                    "missing: the client key's certificate".into(),
                ))
            }
        }
        Ok(())
    }
}

fn default_format() -> UplinkFormat {
    UplinkFormat::ChirpstackV4
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySourceConfig {
    /// A file of uplink JSON documents, one per line; relative paths are from the config file.
    pub path: PathBuf,
    #[serde(default = "default_format")]
    pub format: UplinkFormat,
    /// Pause between lines, to watch the demo scroll by.
    #[serde(default, deserialize_with = "de_duration")]
    pub interval: Duration,
}

/// A serial port (USB or UART) carrying frames, one framing per port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSourceConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or a stable `/dev/serial/by-id/…` link.
    pub device: PathBuf,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default)]
    pub stop_bits: StopBits,
    #[serde(default)]
    pub data_bits: DataBits,
    /// `"lines-hex"`, `"slip"` or `"cobs"` (see `hubgate::framing`).
    pub framing: crate::framing::Framing,
    /// `lines-hex` only: the text before the hex payload, e.g. `"radio_rx"`, `"+RCV"`.
    pub prefix: Option<String>,
    /// Longest frame content in bytes (CRC not counted); longer frames are dropped, counted.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// What a frame holds: `"cbor"` (default), a CBOR envelope of a wired sensor.
    #[serde(default)]
    pub content: SerialContent,
    /// Longest wait between attempts to reopen a device that went away.
    #[serde(default = "default_reopen_max", deserialize_with = "de_duration")]
    pub reopen_max: Duration,
}

fn default_baud() -> u32 {
    115_200
}
fn default_max_frame() -> usize {
    1024
}
fn default_reopen_max() -> Duration {
    Duration::from_secs(30)
}

/// Longest `lines-hex` prefix.
pub const MAX_PREFIX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "i64")]
pub enum StopBits {
    #[default]
    One,
    Two,
}

impl TryFrom<i64> for StopBits {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match n {
            1 => Ok(StopBits::One),
            2 => Ok(StopBits::Two),
            _ => Err(format!("stop_bits must be 1 or 2, not {n}")),
        }
    }
}

/// Character size, 5 to 8 bits (default 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct DataBits(pub u8);

impl Default for DataBits {
    fn default() -> Self {
        DataBits(8)
    }
}

impl TryFrom<i64> for DataBits {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        match n {
            5..=8 => Ok(DataBits(n as u8)),
            _ => Err(format!("data_bits must be 5, 6, 7 or 8, not {n}")),
        }
    }
}

/// What the frames of a serial source carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialContent {
    /// A CBOR map `{dev_eui, fport, payload, fcnt?, rssi?, snr?, time?}` (wired sensors).
    #[default]
    Cbor,
    /// A LoRaWAN PHYPayload. Not supported yet: rejected when the config is loaded.
    Phy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// DevEUI, 16 hex digits (dashes or colons allowed).
    #[serde(deserialize_with = "de_dev_eui")]
    pub dev_eui: DevEui,
    /// Payload codec id (see `hubgate codecs`); without one, records go out packed.
    #[serde(default, deserialize_with = "de_codec")]
    pub codec: Option<Codec>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// LoRaWAN 1.0.x session, for raw frames (serial, UDP, raw MQTT) that hubgate verifies and
    /// decrypts itself: DevAddr as usually written (8 hex digits, big-endian). Give all three
    /// of `dev_addr`, `nwk_s_key`, `app_s_key`, or none.
    #[serde(default, deserialize_with = "de_dev_addr")]
    pub dev_addr: Option<DevAddr>,
    /// NwkSKey, 32 hex digits (MSB first, as LNS consoles show it); `${ENV}` is expanded.
    /// Prefer `nwk_s_key_file`.
    #[serde(default)]
    pub nwk_s_key: Option<Secret<Key>>,
    /// A file (0600, or a systemd credential) holding the NwkSKey.
    pub nwk_s_key_file: Option<PathBuf>,
    /// AppSKey, 32 hex digits; `${ENV}` is expanded. Prefer `app_s_key_file`.
    #[serde(default)]
    pub app_s_key: Option<Secret<Key>>,
    /// A file (0600, or a systemd credential) holding the AppSKey.
    pub app_s_key_file: Option<PathBuf>,
}

impl DeviceConfig {
    /// Its LoRaWAN session: DevAddr and keys, when all three are given.
    pub fn session(&self) -> Option<(DevAddr, SessionKeys)> {
        let keys = SessionKeys {
            nwk_s_key: self.nwk_s_key.as_ref()?.expose().clone(),
            app_s_key: self.app_s_key.as_ref()?.expose().clone(),
        };
        Some((self.dev_addr?, keys))
    }
}

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

/// Ends the key path inside a tagged table at the front of an error message, for
/// [`Config::from_toml`] to join to the table's own path.
const PATH_END: char = '\u{1f}';

/// An error at `path` inside a tagged table (`""`: the table itself).
fn in_table<E: de::Error>(path: &str, reason: impl fmt::Display) -> E {
    E::custom(format!("{path}{PATH_END}{reason}"))
}

/// A tagged table (`[[source]]`, `[sink]`): its `type` and its other keys. serde's internally
/// tagged enums would lose the key path of an error inside the table; [`fields`] keeps it.
fn tagged<'de, D: Deserializer<'de>>(d: D) -> Result<(String, toml::Value), D::Error> {
    let mut table = toml::Table::deserialize(d)?;
    match table.remove("type") {
        Some(toml::Value::String(kind)) => Ok((kind, toml::Value::Table(table))),
        Some(other) => Err(in_table(
            "type",
            format_args!(
                "invalid type: {} `{other}`, expected a type name string",
                other.type_str()
            ),
        )),
        None => Err(in_table("", "missing field `type`")),
    }
}

fn unknown_kind<E: de::Error>(kind: &str, kinds: &[&str]) -> E {
    let kinds: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
    in_table(
        "type",
        format_args!(
            "unknown variant `{kind}`, expected one of {}",
            kinds.join(", ")
        ),
    )
}

/// A tagged table's keys as `T`; an error carries its key path inside the table.
fn fields<T: DeserializeOwned, E: de::Error>(table: toml::Value) -> Result<T, E> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "" } else { &path };
        in_table(path, e.inner().message().trim())
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Extra librdkafka properties, applied after the Event Hubs preset. None may turn TLS
    /// or certificate checks off.
    #[serde(default)]
    pub properties: Properties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    #[serde(default = "default_mechanism")]
    pub sasl_mechanism: String,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub ca_location: Option<PathBuf>,
    /// recType -> topic; unmapped recTypes go to the topic named like the recType.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    #[serde(default)]
    pub provisioning: Provisioning,
    #[serde(default)]
    pub properties: Properties,
    /// Allow a connection without TLS or without certificate checks (a test broker on a
    /// private network): warned at every start, and `doctor` fails.
    #[serde(default)]
    pub insecure: bool,
}

/// `[sink.properties]`: librdkafka settings. Debug output shows the keys only, since a value
/// may be a password.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

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

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, format_args!("***"))))
            .finish()
    }
}

fn default_mechanism() -> String {
    "PLAIN".into()
}

/// TLS unless the config says otherwise (which also needs `insecure = true`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    #[default]
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl UplinkFormat {
    /// The MQTT topic filter its uplinks are published under.
    pub fn default_topic(self) -> &'static str {
        match self {
            UplinkFormat::ChirpstackV4 => "application/+/device/+/event/up",
            UplinkFormat::TtsV3 => "v3/+/devices/+/up",
            UplinkFormat::ChirpstackGateway => "+/gateway/+/event/up",
        }
    }
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Pretty-print each record over several lines instead of one JSON line.
    #[serde(default)]
    pub pretty: bool,
}

impl SinkConfig {
    /// How hubs come to exist; `None` for sinks without hubs.
    pub fn provisioning(&self) -> Option<Provisioning> {
        match self {
            SinkConfig::Eventhubs(eh) => Some(eh.provisioning),
            SinkConfig::Kafka(k) => Some(k.provisioning),
            SinkConfig::Stdout(_) => None,
        }
    }
}

/// How hubs (topics) come to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// The hubs exist already (a Send-only key cannot create them): checked at start, and a
    /// recType whose hub is missing is parked, with a message saying which.
    #[default]
    Precreated,
    /// Produce with auto-creation (needs a Manage key on Event Hubs).
    Auto,
}

/// Event Hubs names: 1-256 letters, digits, `.`, `-`, `_`, starting and ending with a
/// letter or digit.
pub fn valid_hub_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    (1..=256).contains(&name.len())
        && name.chars().all(ok)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// What a secret holds, parsed from its text (`${ENV}` expanded, a file's content trimmed).
/// Errors never quote the text.
pub trait SecretText: Sized {
    fn from_text(text: String) -> Result<Self, String>;
}

impl SecretText for String {
    fn from_text(text: String) -> Result<Self, String> {
        Ok(text)
    }
}

impl SecretText for Key {
    fn from_text(text: String) -> Result<Self, String> {
        Key::from_hex(&text).map_err(|e| e.to_string())
    }
}

impl SecretText for ConnectionString {
    fn from_text(text: String) -> Result<Self, String> {
        ConnectionString::parse(&text).map_err(|e| e.to_string())
    }
}

impl<'de, T: SecretText> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let value = T::from_text(expand_env(&raw).map_err(de::Error::custom)?)
            .map_err(de::Error::custom)?;
        Ok(match raw.contains("${") {
            true => Secret::new(value),
            false => Secret::inline(value),
        })
    }
}

/// Expand `${NAME}` from the environment; an unset variable is an error, not an empty string.
fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${ in value".to_string())?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Read a secret from `file` (`${ENV}` expanded in the path, e.g.
/// `${CREDENTIALS_DIRECTORY}/eventhubs.secret` under systemd `LoadCredential=`): a regular
/// file of at most [`crate::files::SECRET_CAP`] bytes.
pub fn read_secret_file<T: SecretText>(file: &Path) -> Result<Secret<T>, String> {
    let file = secret_path(file)?;
    let text = crate::files::read_capped(&file, crate::files::SECRET_CAP)
        .map_err(|e| format!("cannot read secret file {}: {e}", file.display()))?;
    T::from_text(text.trim().to_string()).map(Secret::new)
}

/// A secret file's path with `${ENV}` expanded.
fn secret_path(file: &Path) -> Result<PathBuf, String> {
    expand_env(&file.to_string_lossy()).map(PathBuf::from)
}

/// Either `value` or `file`: a file's secret goes into `value` and the file into `files`
/// (for the permission warning). `key` is the value's key path.
fn load_secret<T: SecretText>(
    value: &mut Option<Secret<T>>,
    file: &Option<PathBuf>,
    key: &str,
    files: &mut Vec<(PathBuf, &'static str)>,
) -> Result<(), (String, String)> {
    let Some(file) = file else {
        return Ok(());
    };
    let name = key.rsplit('.').next().unwrap_or(key);
    if value.is_some() {
        return Err((
            key.to_string(),
            format!("give {name} or {name}_file, not both"),
        ));
    }
    *value = Some(read_secret_file(file).map_err(|e| (format!("{key}_file"), e))?);
    files.push((file.clone(), "a secret"));
    Ok(())
}

/// When the secret file was last changed (for key rotation without a restart).
pub fn secret_file_mtime(file: &Path) -> Option<std::time::SystemTime> {
    let file = secret_path(file).ok()?;
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// `"256MiB"`, `"10MB"`, `"4096"` or an integer.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. \"256MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "bad size unit in {s:?}: use B, KB, KiB, MB, MiB, GB or GiB"
            ))
        }
    };
    Ok((num * mult as f64) as u64)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Int(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Int(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(de::Error::custom),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| de::Error::custom(format!("bad duration {s:?} ({e}): expected e.g. \"30s\"")))
}

fn de_dev_eui<'de, D: Deserializer<'de>>(d: D) -> Result<DevEui, D::Error> {
    DevEui::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn de_euis<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 8]>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_eui64(s, "gateway EUI").map_err(de::Error::custom))
        .collect()
}

fn de_dev_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DevAddr>, D::Error> {
    DevAddr::parse(&String::deserialize(d)?)
        .map(Some)
        .map_err(de::Error::custom)
}

fn de_mqtt_url<'de, D: Deserializer<'de>>(d: D) -> Result<MqttUrl, D::Error> {
    MqttUrl::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn de_codec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Codec>, D::Error> {
    let id = String::deserialize(d)?;
    Codec::from_id(&id).map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown codec {id:?} (run `hubgate codecs` for the list)"
        ))
    })
}

impl Config {
    /// Read, parse and validate `path`. Relative paths inside are resolved from its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = crate::files::read_capped(path, crate::files::CONFIG_CAP).map_err(|reason| {
            ConfigError::Read {
                file: file.clone(),
                reason,
            }
        })?;
        let mut cfg = Config::parse(&text).map_err(|(key, reason)| ConfigError::Invalid {
            file: file.clone(),
            key,
            reason,
        })?;
        let inline = cfg.inline_secrets();
        if !inline.is_empty() {
            let what = format!("secrets inline ({})", inline.join(", "));
            cfg.file_warnings
                .extend(crate::files::readable_by_others(path, &what));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve(base)
            .map_err(|(key, reason)| ConfigError::Invalid { file, key, reason })?;
        Ok(cfg)
    }

    /// Parse TOML text; on error returns (key path, reason).
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let mut site: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let Some(board) = site.get("board") else {
            // Straight from the text, so errors keep their line numbers.
            let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e))?;
            return Config::from_toml(text, de);
        };
        let id = board.as_str().ok_or_else(|| {
            (
                "board".to_string(),
                "must be a board id string, e.g. \"rpi4\"".to_string(),
            )
        })?;
        let profile = crate::board::find(id).map_err(|e| ("board".to_string(), e))?;
        profile.apply(&mut site);
        Config::from_toml(text, site)
    }

    /// Deserialize with the key path of the first error.
    fn from_toml<'de, D>(text: &str, de: D) -> Result<Config, (String, String)>
    where
        D: Deserializer<'de, Error = toml::de::Error>,
    {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.inner().message();
            let (key, reason) = match message.split_once(PATH_END) {
                // Inside a tagged table: the span toml gives is the whole array's.
                Some((inner, reason)) => {
                    let line = line_in_table(text, &key, inner.split('.').next().unwrap_or(""));
                    let reason = reason.trim().replace('\n', " ");
                    let reason = match line {
                        Some(n) => format!("{reason} (line {n})"),
                        None => reason,
                    };
                    match inner {
                        "" => (key, reason),
                        _ => (format!("{key}.{inner}"), reason),
                    }
                }
                None => (key, toml_error(text, e.inner()).1),
            };
            let mut key = key;
            // Inside tagged tables (`[[source]]`, `[sink]`) serde loses the last path step.
            if let Some(field) = reason
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                if !key.ends_with(field) {
                    key = format!("{key}.{field}");
                }
            }
            if key == "." {
                key = "(top level)".into();
            }
            (key, reason)
        })
    }

    /// Read what the config refers to (secret and TLS files, relative paths from `base`) and
    /// check what serde cannot; on error (key path, reason).
    pub(crate) fn resolve(&mut self, base: &Path) -> Result<(), (String, String)> {
        let mut secret_files = Vec::new();
        for (i, source) in self.sources.iter_mut().enumerate() {
            if let SourceConfig::Mqtt(m) = source {
                m.load_tls(&mut secret_files)
                    .map_err(|(key, e)| (format!("source[{i}].{key}"), e))?;
                let limit = MAX_MQTT_MESSAGE as u64;
                if !(1..=limit).contains(&m.max_message) {
                    return Err((
                        format!("source[{i}].max_message"),
                        format!("must be between 1 byte and {limit} bytes (16 MiB)"),
                    ));
                }
                let key = format!("source[{i}].password");
                load_secret(&mut m.password, &m.password_file, &key, &mut secret_files)?;
            }
            if let SourceConfig::Serial(sc) = source {
                sc.validate()
                    .map_err(|(key, e)| (format!("source[{i}].{key}"), e))?;
            }
            if let SourceConfig::Replay(r) = source {
                if r.path.is_relative() {
                    r.path = base.join(&r.path);
                }
                if !r.path.is_file() {
                    return Err((
                        format!("source[{i}].path"),
                        format!("no such file {}", r.path.display()),
                    ));
                }
            }
        }
        if self.sources.is_empty() {
            return Err(("source".into(), "at least one [[source]] is needed".into()));
        }
        for (i, d) in self.devices.iter_mut().enumerate() {
            for (secret, file, name) in [
                (&mut d.nwk_s_key, &d.nwk_s_key_file, "nwk_s_key"),
                (&mut d.app_s_key, &d.app_s_key_file, "app_s_key"),
            ] {
                let key = format!("device[{i}].{name}");
                load_secret(secret, file, &key, &mut secret_files)?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !seen.insert(d.dev_eui) {
                return Err((
                    format!("device[{i}].dev_eui"),
                    format!("DevEUI {} is listed twice", d.dev_eui),
                ));
            }
        }
        self.check_sessions()?;
        let (mapping, key) = match &self.sink {
            SinkConfig::Eventhubs(eh) => (Some(&eh.hubs), "sink.hubs"),
            SinkConfig::Kafka(k) => (Some(&k.topics), "sink.topics"),
            SinkConfig::Stdout(_) => (None, ""),
        };
        if let Some(mapping) = mapping {
            for (rec_type, hub) in mapping {
                if !valid_hub_name(hub) {
                    return Err((
                        format!("{key}.{rec_type:?}"),
                        format!("bad hub name {hub:?}: 1-256 letters, digits, '.', '-', '_', starting and ending with a letter or digit"),
                    ));
                }
            }
        }
        if let SinkConfig::Eventhubs(eh) = &mut self.sink {
            match (&eh.connection_string, &eh.connection_string_file) {
                (Some(_), Some(_)) => {
                    return Err((
                        "sink.connection_string".into(),
                        "give connection_string or connection_string_file, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err((
                        "sink.connection_string_file".into(),
                        "missing: the Event Hubs connection string is needed".into(),
                    ))
                }
                (None, Some(file)) => {
                    let secret = read_secret_file(file)
                        .map_err(|e| ("sink.connection_string_file".to_string(), e))?;
                    secret_files.push((file.to_path_buf(), "the connection string"));
                    eh.connection_string = Some(secret);
                }
                (Some(_), None) => {}
            }
        }
        self.check_ca_files()?;
        for (file, what) in secret_files {
            if let Ok(path) = secret_path(&file) {
                self.file_warnings
                    .extend(crate::files::readable_by_others(&path, what));
            }
        }
        Ok(())
    }

    /// CA bundles are directories or regular files under [`crate::files::CA_CAP`]: librdkafka
    /// would otherwise hang on a FIFO or read `/dev/zero` until memory runs out.
    fn check_ca_files(&self) -> Result<(), (String, String)> {
        let (ca, properties) = match &self.sink {
            SinkConfig::Eventhubs(eh) => (&eh.ca_location, &eh.properties),
            SinkConfig::Kafka(k) => (&k.ca_location, &k.properties),
            SinkConfig::Stdout(_) => return Ok(()),
        };
        let in_properties = properties
            .get("ssl.ca.location")
            .filter(|l| *l != "probe")
            .map(|l| {
                (
                    "sink.properties.\"ssl.ca.location\"".to_string(),
                    PathBuf::from(l),
                )
            });
        let field = ca.clone().map(|l| ("sink.ca_location".to_string(), l));
        for (key, path) in field.into_iter().chain(in_properties) {
            crate::files::check_file_or_dir(&path, crate::files::CA_CAP)
                .map_err(|e| (key, format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Key paths of the secrets written into the config file itself.
    fn inline_secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |key: String, inline: Option<bool>| {
            if inline == Some(true) {
                out.push(key);
            }
        };
        for (i, src) in self.sources.iter().enumerate() {
            if let SourceConfig::Mqtt(m) = src {
                note(format!("source[{i}].password"), inline(&m.password));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            note(format!("device[{i}].nwk_s_key"), inline(&d.nwk_s_key));
            note(format!("device[{i}].app_s_key"), inline(&d.app_s_key));
        }
        match &self.sink {
            SinkConfig::Eventhubs(eh) => note(
                "sink.connection_string".into(),
                inline(&eh.connection_string),
            ),
            SinkConfig::Kafka(k) => note("sink.sasl_password".into(), inline(&k.sasl_password)),
            SinkConfig::Stdout(_) => {}
        }
        out
    }

    /// A device's LoRaWAN session is all of `dev_addr`, `nwk_s_key`, `app_s_key`, or nothing.
    fn check_sessions(&self) -> Result<(), (String, String)> {
        for (i, d) in self.devices.iter().enumerate() {
            let fields = [
                ("dev_addr", d.dev_addr.is_some()),
                ("nwk_s_key", d.nwk_s_key.is_some()),
                ("app_s_key", d.app_s_key.is_some()),
            ];
            if fields.iter().any(|(_, set)| *set) {
                if let Some((missing, _)) = fields.iter().find(|(_, set)| !*set) {
                    return Err((
                        format!("device[{i}].{missing}"),
                        "missing: a LoRaWAN session needs dev_addr, nwk_s_key and app_s_key".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every recType this configuration can emit: the configured codecs', the packed one
    /// (unknown devices, failed decodes) and gateway status when a UDP source reports it.
    pub fn rec_types(&self) -> std::collections::BTreeSet<&str> {
        let mut out: std::collections::BTreeSet<&str> = self
            .devices
            .iter()
            .filter_map(|d| d.codec)
            .map(Codec::rec_type)
            .collect();
        out.insert(&self.record.packed_rec_type);
        if self
            .sources
            .iter()
            .any(|s| matches!(s, SourceConfig::Udp(u) if u.gateway_status))
        {
            out.insert(crate::codec::rec_type::GATEWAY);
        }
        out
    }

    /// recType -> hub (topic) for every recType this configuration can emit.
    pub fn hub_plan(&self) -> Vec<(&str, &str)> {
        let mapping = match &self.sink {
            SinkConfig::Eventhubs(eh) => Some(&eh.hubs),
            SinkConfig::Kafka(k) => Some(&k.topics),
            SinkConfig::Stdout(_) => None,
        };
        self.rec_types()
            .into_iter()
            .map(|r| (r, mapping.and_then(|m| m.get(r)).map_or(r, String::as_str)))
            .collect()
    }

    /// Things that are allowed but probably wrong; `check` prints them, `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.file_warnings.clone();
        if let Some(addr) = self.metrics.listen.filter(|a| !a.ip().is_loopback()) {
            out.push(format!(
                "metrics.listen = \"{addr}\" is reachable from the network and the endpoint has no authentication"
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if let SourceConfig::Mqtt(m) = s {
                let remote = !m.url.tls && !m.url.is_loopback();
                if remote && m.password.is_some() {
                    out.push(format!(
                        "source[{i}]: the MQTT password goes over the network in clear text to {}; use mqtts://",
                        m.url
                    ));
                }
            }
            if let SourceConfig::Udp(u) = s {
                if !u.listen.ip().is_loopback() && u.gateways.is_empty() {
                    out.push(format!(
                        "udp source on {}: anyone who can reach it can inject frames and gateway status; list the gateway EUIs in gateways = [...]",
                        u.listen
                    ));
                }
            }
        }
        if let SinkConfig::Eventhubs(_) = self.sink {
            let hubs: std::collections::BTreeSet<&str> =
                self.hub_plan().into_iter().map(|(_, h)| h).collect();
            if hubs.len() > 10 {
                out.push(format!(
                    "{} event hubs would be used ({}); the Standard tier allows 10 per namespace: map recTypes onto fewer hubs with [sink.hubs]",
                    hubs.len(),
                    hubs.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        out
    }

    /// Device registry keyed by DevEUI.
    pub fn device(&self, dev_eui: &DevEui) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| &d.dev_eui == dev_eui)
    }
}

impl SerialSourceConfig {
    /// Checks serde cannot express; on error (key, reason).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.device.as_os_str().is_empty() {
            return Err(("device", "empty device path".into()));
        }
        if self.baud == 0 {
            return Err(("baud", "baud must be more than 0".into()));
        }
        crate::framing::Deframer::new(self.framing, self.max_frame, None)
            .map_err(|e| ("max_frame", e.to_string()))?;
        if let Some(p) = &self.prefix {
            if self.framing != crate::framing::Framing::LinesHex {
                return Err((
                    "prefix",
                    "prefix is for framing = \"lines-hex\" only".into(),
                ));
            }
            if p.trim().len() > MAX_PREFIX {
                return Err(("prefix", format!("longer than {MAX_PREFIX} bytes")));
            }
        }
        if self.reopen_max.is_zero() {
            return Err(("reopen_max", "must be more than 0".into()));
        }
        Ok(())
    }
}

fn inline<T>(secret: &Option<Secret<T>>) -> Option<bool> {
    secret.as_ref().map(Secret::is_inline)
}

/// The line of `field` in the tagged table at `table` (`source[1]`, `sink`), or of the table's
/// header without a field; found in the text, since errors inside such a table have no
/// position of their own.
fn line_in_table(text: &str, table: &str, field: &str) -> Option<usize> {
    let (name, index) = match table.split_once('[') {
        Some((name, i)) => (name, i.trim_end_matches(']').parse::<usize>().ok()?),
        None => (table, 0),
    };
    let headers = [format!("[[{name}]]"), format!("[{name}]")];
    let mut lines = text.lines().enumerate().skip_while(|(_, l)| {
        let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
        !headers.contains(&l)
    });
    let mut header = lines.next()?;
    for _ in 0..index {
        header = lines.find(|(_, l)| {
            let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            headers.contains(&l)
        })?;
    }
    let at_field = lines
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            let l = l.trim_start();
            !field.is_empty()
                && l.strip_prefix(field)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
    Some(at_field.unwrap_or(header).0 + 1)
}

/// One-line reason from a toml error, with the line number when it has a span.
fn toml_error(text: &str, e: &toml::de::Error) -> (String, String) {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            ("(parse)".into(), format!("{msg} (line {line})"))
        }
        None => ("(parse)".into(), msg),
    }
}

/// A commented template that passes `hubgate check`.
pub const TEMPLATE: &str = include_str!("../config/hubgate.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("HUBGATE_TEST_SECRET", "s3cret");
        assert_eq!(expand_env("a${HUBGATE_TEST_SECRET}b").unwrap(), "as3cretb");
        assert!(expand_env("${HUBGATE_TEST_UNSET_VAR}").is_err());
        assert!(expand_env("${oops").is_err());
    }

    #[test]
    fn unknown_key_names_its_path() {
        let text = "[sink]\ntype = \"stdout\"\n[buffer]\nmax_byts = \"1MiB\"\n";
        let (key, reason) = Config::parse(text).unwrap_err();
        assert_eq!(key, "buffer.max_byts");
        assert!(reason.contains("unknown field"), "{reason}");
    }

    #[test]
    fn unknown_key_in_a_tagged_table_names_its_path() {
        let text = "[sink]\ntype = \"stdout\"\nprety = true\n";
        let (key, _) = Config::parse(text).unwrap_err();
        assert_eq!(key, "sink.prety");
    }

    #[test]
    fn hub_names_follow_event_hubs_rules() {
        assert!(valid_hub_name("io.microshare.environment.unpacked"));
        assert!(valid_hub_name("motion_2"));
        assert!(!valid_hub_name(""));
        assert!(!valid_hub_name(".motion"));
        assert!(!valid_hub_name("motion-"));
        assert!(!valid_hub_name("mo tion"));
        assert!(!valid_hub_name(&"a".repeat(257)));
        let text = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[sink.topics]\n\"io.microshare.motion.unpacked\" = \"-motion\"\n[[source]]\ntype = \"udp\"\n";
        let mut cfg = Config::parse(text).unwrap();
        let (key, reason) = cfg.resolve(Path::new(".")).unwrap_err();
        assert_eq!(key, "sink.topics.\"io.microshare.motion.unpacked\"");
        assert!(reason.contains("bad hub name"), "{reason}");
    }

    #[test]
    fn hub_plan_maps_the_rec_types_the_config_can_emit() {
        let text = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[sink.topics]\n\"io.microshare.motion.unpacked\" = \"motion\"\n[[source]]\ntype = \"udp\"\n[[device]]\ndev_eui = \"0000000000000001\"\ncodec = \"browan-tbms100\"\n[[device]]\ndev_eui = \"0000000000000002\"\ncodec = \"browan-tbhh100\"\n";
        let cfg = Config::parse(text).unwrap();
        assert_eq!(
            cfg.hub_plan(),
            vec![
                (
                    "io.microshare.environment.unpacked",
                    "io.microshare.environment.unpacked"
                ),
                (
                    "io.microshare.lorawan.packed",
                    "io.microshare.lorawan.packed"
                ),
                ("io.microshare.motion.unpacked", "motion"),
            ]
        );
    }

    #[test]
    fn bad_codec_names_device_index() {
        let text = "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011223344556677\"\ncodec = \"nope\"\n";
        let (key, reason) = Config::parse(text).unwrap_err();
        assert_eq!(key, "device[0].codec");
        assert!(reason.contains("unknown codec \"nope\""), "{reason}");
    }

    const SESSION: &str = "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011223344556677\"\n";

    #[test]
    fn device_session_parses() {
        let text = format!(
            "{SESSION}dev_addr = \"26011BDA\"\nnwk_s_key = \"2B7E151628AED2A6ABF7158809CF4F3C\"\napp_s_key = \"000102030405060708090A0B0C0D0E0F\"\n"
        );
        let cfg = Config::parse(&text).unwrap();
        let d = &cfg.devices[0];
        assert_eq!(d.dev_addr, Some(DevAddr(0x2601_1bda)));
        assert!(d.nwk_s_key.is_some() && d.app_s_key.is_some());
        cfg.check_sessions().unwrap();
        let printed = format!("{cfg:?}");
        assert!(
            !printed.to_ascii_lowercase().contains("2b7e1516"),
            "{printed}"
        );
        assert!(printed.contains("DevAddr(26011bda)"), "{printed}");
    }

    #[test]
    fn short_session_key_names_its_path_and_hides_the_key() {
        let text =
            format!("{SESSION}dev_addr = \"26011bda\"\nnwk_s_key = \"2B7E151628AED2A6ABF71588\"\n");
        let (key, reason) = Config::parse(&text).unwrap_err();
        assert_eq!(key, "device[0].nwk_s_key");
        assert!(reason.contains("32 hex digits"), "{reason}");
        assert!(!reason.contains("2B7E"), "{reason}");
    }

    #[test]
    fn bad_dev_addr_names_its_path() {
        let text = format!("{SESSION}dev_addr = \"26011b\"\n");
        let (key, reason) = Config::parse(&text).unwrap_err();
        assert_eq!(key, "device[0].dev_addr");
        assert!(reason.contains("8 hex digits"), "{reason}");
    }

    #[test]
    fn partial_session_is_refused() {
        let text = format!(
            "{SESSION}dev_addr = \"26011bda\"\napp_s_key = \"000102030405060708090A0B0C0D0E0F\"\n"
        );
        let cfg = Config::parse(&text).unwrap();
        let (key, reason) = cfg.check_sessions().unwrap_err();
        assert_eq!(key, "device[0].nwk_s_key");
        assert!(reason.starts_with("missing"), "{reason}");
    }

    fn serial(extra: &str) -> Result<Config, (String, String)> {
        let text = format!(
            "[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://x\"\n\
             [[source]]\ntype = \"serial\"\ndevice = \"/dev/ttyUSB0\"\n{extra}\n"
        );
        let mut cfg = Config::parse(&text)?;
        cfg.resolve(Path::new("."))?;
        Ok(cfg)
    }

    #[test]
    fn serial_source_defaults_and_keys() {
        let cfg = serial("framing = \"lines-hex\"\nprefix = \"radio_rx\"").unwrap();
        let SourceConfig::Serial(s) = &cfg.sources[1] else {
            panic!("not serial")
        };
        assert_eq!(s.baud, 115_200);
        assert_eq!(
            (s.parity, s.stop_bits, s.data_bits),
            (Parity::None, StopBits::One, DataBits(8))
        );
        assert_eq!((s.max_frame, s.content), (1024, SerialContent::Cbor));
        assert_eq!(s.reopen_max, Duration::from_secs(30));
        let cfg = serial(
            "framing = \"cobs\"\nbaud = 9600\nparity = \"even\"\nstop_bits = 2\ndata_bits = 7\n\
             max_frame = 2048\nreopen_max = \"2s\"",
        )
        .unwrap();
        let SourceConfig::Serial(s) = &cfg.sources[1] else {
            panic!("not serial")
        };
        assert_eq!(
            (s.baud, s.parity, s.stop_bits, s.data_bits),
            (9600, Parity::Even, StopBits::Two, DataBits(7))
        );
        assert_eq!(s.framing, crate::framing::Framing::Cobs);
    }

    #[test]
    fn serial_errors_name_their_key() {
        let cases = [
            (
                "framing = \"slip\"\nmax_frame = 4096",
                "source[1].max_frame",
                "max_frame",
            ),
            (
                "framing = \"slip\"\nprefix = \"x\"",
                "source[1].prefix",
                "lines-hex",
            ),
            (
                "framing = \"slip\"\nstop_bits = 3",
                "source[1].stop_bits",
                "stop_bits must be 1 or 2",
            ),
            (
                "framing = \"slip\"\ndata_bits = 9",
                "source[1].data_bits",
                "data_bits must be",
            ),
            (
                "framing = \"slip\"\nparity = \"mark\"",
                "source[1].parity",
                "mark",
            ),
            ("framing = \"hdlc\"", "source[1].framing", "hdlc"),
            (
                "framing = \"slip\"\nbaud_rate = 9600",
                "source[1].baud_rate",
                "unknown field",
            ),
        ];
        for (extra, key, reason) in cases {
            let (k, r) = serial(extra).unwrap_err();
            assert_eq!(k, key, "{extra}");
            assert!(r.contains(reason), "{extra}: reason {r}");
        }
    }

    /// An error inside a `[[source]]` or `[sink]` names the key and the line it is on, not
    /// just the table (serde's tagged enums lose both).
    #[test]
    fn errors_inside_tagged_tables_name_key_and_line() {
        let head = "[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n[[source]]\n";
        let cases = [
            (
                "type = \"serial\"\nframing = \"slip\"\ndevice = \"x\"\nstop_bits = 3\n",
                "source[1].stop_bits",
                "(line 9)",
            ),
            ("type = 3\n", "source[1].type", "(line 6)"),
            ("type = \"mqttx\"\n", "source[1].type", "(line 6)"),
            (
                "url = \"mqtt://x\"\n",
                "source[1]",
                "missing field `type` (line 5)",
            ),
            (
                "type = \"mqtt\"\n  url = \"http://x\"\n",
                "source[1].url",
                "(line 7)",
            ),
        ];
        for (table, key, reason) in cases {
            let (k, r) = Config::parse(&format!("{head}{table}")).unwrap_err();
            assert_eq!(k, key, "{table}");
            assert!(r.ends_with(reason), "{table}: {r}");
        }
        let (k, r) = Config::parse("[sink]\ntype = \"stdout\"\n\nprety = true\n").unwrap_err();
        assert_eq!(
            (k.as_str(), r.as_str()),
            (
                "sink.prety",
                "unknown field `prety`, expected `pretty` (line 4)"
            )
        );
    }

    const CS: &str =
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0";

    fn sink(sink: &str) -> Result<Config, (String, String)> {
        let text = format!("[[source]]\ntype = \"udp\"\n[sink]\n{sink}\n");
        let mut cfg = Config::parse(&text)?;
        cfg.resolve(Path::new("."))?;
        Ok(cfg)
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    const NWK: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
    const APP: &str = "000102030405060708090A0B0C0D0E0F";

    /// Session keys and the MQTT password come from files like the connection string; a
    /// file readable by every user is warned about, a 0600 one is not.
    #[test]
    fn session_keys_and_mqtt_password_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let nwk = write(d, "nwk.key", &format!("{NWK}\n"), 0o600);
        let app = write(d, "app.key", APP, 0o644);
        let pw = write(d, "mqtt.pw", "hunter2\n", 0o600);
        let text = format!(
            "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://localhost\"\nusername = \"u\"\npassword_file = \"{}\"\n\
             [[device]]\ndev_eui = \"0011223344556677\"\ndev_addr = \"26011bda\"\n\
             nwk_s_key_file = \"{}\"\napp_s_key_file = \"{}\"\n[sink]\ntype = \"stdout\"\n",
            pw.display(),
            nwk.display(),
            app.display()
        );
        let cfg = Config::load(&write(d, "hubgate.toml", &text, 0o644)).unwrap();
        let dev = &cfg.devices[0];
        assert_eq!(
            dev.nwk_s_key.as_ref().unwrap().expose(),
            &Key::from_hex(NWK).unwrap()
        );
        assert_eq!(
            dev.app_s_key.as_ref().unwrap().expose(),
            &Key::from_hex(APP).unwrap()
        );
        let SourceConfig::Mqtt(m) = &cfg.sources[0] else {
            panic!("not mqtt")
        };
        assert_eq!(m.password.as_ref().unwrap().expose(), "hunter2");
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!(
                "{} holds a secret and is readable by every user (mode 0644)",
                app.display()
            )),
            "{warnings:?}"
        );
        let printed = format!("{cfg:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("2B7E"),
            "{printed}"
        );

        // A bad key in a file is named by its key path, not quoted.
        write(d, "nwk.key", "2B7E1516", 0o600);
        let e = Config::load(&d.join("hubgate.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("device[0].nwk_s_key_file: ") && !e.contains("2B7E"),
            "{e}"
        );
        let both = text.replace("username = \"u\"", "username = \"u\"\npassword = \"x\"");
        let e = Config::load(&write(d, "both.toml", &both, 0o600))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("source[0].password: give password or password_file, not both"),
            "{e}"
        );
    }

    /// A password sent over plain MQTT to another machine is warned about; over TLS or to
    /// this machine it is not.
    #[test]
    fn a_password_over_plain_mqtt_to_another_host_is_warned_about() {
        let mqtt = |url: &str| {
            let text = format!("[[source]]\ntype = \"mqtt\"\nurl = \"{url}\"\nusername = \"u\"\npassword = \"p\"\n[sink]\ntype = \"stdout\"\n");
            Config::parse(&text).unwrap().warnings()
        };
        let w = mqtt("mqtt://broker.example");
        assert_eq!(
            w,
            ["source[0]: the MQTT password goes over the network in clear text to mqtt://broker.example; use mqtts://"]
        );
        for quiet in [
            "mqtts://broker.example",
            "mqtt://localhost",
            "mqtt://127.0.0.1:1883",
            "mqtt://[::1]:1883",
        ] {
            assert!(mqtt(quiet).is_empty(), "{quiet}: {:?}", mqtt(quiet));
        }
    }

    /// Secrets written into a config file every user can read are warned about by key
    /// path; `${ENV}` references and 0640 files are not.
    #[test]
    fn inline_secrets_in_a_world_readable_config_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("HUBGATE_TEST_CS", CS);
        let eh = |cs: &str| {
            format!("[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\nconnection_string = \"{cs}\"\n")
        };
        let open = write(dir.path(), "open.toml", &eh(CS), 0o644);
        let warnings = Config::load(&open).unwrap().warnings();
        assert_eq!(
            warnings,
            vec![format!(
                "{} holds secrets inline (sink.connection_string) and is readable by every user (mode 0644): chmod 600, or 640 with the agent's group (chgrp hubgate)",
                open.display()
            )]
        );
        assert!(!warnings[0].contains("c2VjcmV0"));
        let closed = write(dir.path(), "closed.toml", &eh(CS), 0o640);
        assert!(Config::load(&closed).unwrap().warnings().is_empty());
        let env = write(dir.path(), "env.toml", &eh("${HUBGATE_TEST_CS}"), 0o644);
        assert!(Config::load(&env).unwrap().warnings().is_empty());
    }

    /// A config, secret or CA path that is a device or FIFO fails at once, naming the key.
    #[test]
    fn devices_and_fifos_are_refused_where_files_are_expected() {
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let (key, reason) = sink(&format!(
            "type = \"eventhubs\"\nconnection_string_file = \"{}\"",
            fifo.display()
        ))
        .unwrap_err();
        assert_eq!(key, "sink.connection_string_file");
        assert!(reason.contains("not a regular file"), "{reason}");
        let (key, reason) = sink(&format!(
            "type = \"eventhubs\"\nconnection_string = \"{CS}\"\nca_location = \"/dev/zero\""
        ))
        .unwrap_err();
        assert_eq!(key, "sink.ca_location");
        assert!(reason.contains("not a regular file"), "{reason}");
        let (key, _) = sink(&format!(
            "type = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\"ssl.ca.location\" = \"{}\"",
            fifo.display()
        ))
        .unwrap_err();
        assert_eq!(key, "sink.properties.\"ssl.ca.location\"");
    }

    #[test]
    fn template_parses() {
        Config::parse(TEMPLATE).unwrap();
    }

    #[test]
    fn metrics_defaults_and_off() {
        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
        assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9898".parse().unwrap()));
        assert_eq!(cfg.metrics.status_interval, Duration::from_secs(60));
        assert!(cfg.warnings().is_empty());
        let text =
            "[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"off\"\nstatus_interval = \"0s\"\n";
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg.metrics.listen, None);
        assert!(cfg.metrics.status_interval.is_zero());
        let cfg =
            Config::parse("[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"0.0.0.0:9898\"\n")
                .unwrap();
        assert!(
            cfg.warnings()[0].contains("no authentication"),
            "{:?}",
            cfg.warnings()
        );
        let (key, reason) =
            Config::parse("[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"9898\"\n").unwrap_err();
        assert_eq!(key, "metrics.listen");
        assert!(reason.contains("\"off\""), "{reason}");
    }
}
