//! `[[source]]` tables: where uplinks come from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keypath::{fields, tagged, unknown_kind, Tagged};
use super::secrets::{secret_path, SecretFiles};
use super::values::{
    de_backoff, de_duration, de_euis, de_keep_alive, de_mqtt_url, de_size, ser_display,
    ser_duration, ser_euis, ser_size,
};
use crate::mqtt_url::MqttUrl;
use crate::secret::Secret;

super::map_only::from_tables_only!(
    written: UdpSourceConfig, MqttSourceConfig, ReplaySourceConfig, SerialSourceConfig
);

/// Uplink JSON formats hubgate reads from MQTT and replay files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

impl SourceConfig {
    /// The `type`, as `hubgate_received_total` labels its frames.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::Replay(_) => "replay",
            SourceConfig::Serial(_) => "serial",
            SourceConfig::Udp(_) => "udp",
        }
    }
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

impl Serialize for SourceConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SourceConfig::Mqtt(keys) => Tagged {
                kind: "mqtt",
                keys: &**keys,
            }
            .serialize(s),
            SourceConfig::Replay(keys) => Tagged {
                kind: "replay",
                keys,
            }
            .serialize(s),
            SourceConfig::Serial(keys) => Tagged {
                kind: "serial",
                keys,
            }
            .serialize(s),
            SourceConfig::Udp(keys) => Tagged { kind: "udp", keys }.serialize(s),
        }
    }
}

/// Semtech UDP packet forwarder (GWMP): point `lora_pkt_fwd`'s `server_address` and
/// `serv_port_up`/`serv_port_down` here.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct UdpSourceConfig {
    #[serde(default = "default_udp_listen")]
    pub listen: std::net::SocketAddr,
    /// Turn the forwarder's `stat` reports into `io.microshare.gateway.unpacked` records.
    #[serde(default)]
    pub gateway_status: bool,
    /// Gateway EUIs (16 hex digits) whose datagrams are taken; empty: any gateway.
    #[serde(default, deserialize_with = "de_euis", serialize_with = "ser_euis")]
    pub gateways: Vec<[u8; 8]>,
}

fn default_udp_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 1700))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct MqttSourceConfig {
    /// `mqtt://host:port` (or `mqtts://`).
    #[serde(deserialize_with = "de_mqtt_url", serialize_with = "ser_display")]
    pub url: MqttUrl,
    /// Topic filter; default: where the format's messages are published (see
    /// `crate::source::mqtt::default_topic`).
    pub topic: Option<String>,
    #[serde(default = "default_format")]
    pub format: UplinkFormat,
    /// Client id of the persistent session; default see [`super::Config::mqtt_client_ids`].
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
    /// MQTT keep-alive, whole seconds; `"0s"` turns it off.
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "de_keep_alive",
        serialize_with = "ser_duration"
    )]
    pub keep_alive: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(
        default = "default_reconnect_max",
        deserialize_with = "de_backoff",
        serialize_with = "ser_duration"
    )]
    pub reconnect_max: Duration,
    /// Largest message processed (`"256KiB"`, at most 16 MiB); a larger one is acknowledged,
    /// counted (`mqtt_oversized`) and kept as a dead letter.
    #[serde(
        default = "default_max_message",
        deserialize_with = "de_size",
        serialize_with = "ser_size"
    )]
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
    /// `ca_file` as it is read: `${ENV}` expanded.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.ca_file.as_deref().and_then(|f| secret_path(f).ok())
    }

    /// Read the TLS files (only `mqtts://` takes them); on error (key, reason). Whether they
    /// make a working TLS setup is the source's to say when it is built.
    pub(super) fn load_tls(
        &mut self,
        secret_files: &mut SecretFiles,
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
        // `${ENV}` expanded as in a secret file's path (a systemd credential).
        let read = |key: &'static str, path: &Path| {
            let path = secret_path(path).map_err(|e| (key, e))?;
            crate::files::read_capped(&path, crate::files::CA_CAP)
                .map(String::into_bytes)
                .map_err(|e| (key, format!("{}: {e}", path.display())))
        };
        if let Some(ca) = &self.ca_file {
            self.tls.ca = Some(read("ca_file", ca)?);
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let pem = read("client_cert_file", cert)?;
                let secret = secret_files
                    .read(key, "a private key")
                    .map_err(|e| ("client_key_file", e))?;
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct ReplaySourceConfig {
    /// A file of uplink JSON documents, one per line; relative paths are from the config file.
    pub path: PathBuf,
    #[serde(default = "default_format")]
    pub format: UplinkFormat,
    /// Pause between lines, to watch the demo scroll by.
    #[serde(
        default,
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub interval: Duration,
}

/// A serial port (USB or UART) carrying frames, one framing per port.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
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
    /// What a frame holds: `"cbor"` (default), a CBOR envelope of a wired sensor, or `"phy"`.
    #[serde(default)]
    pub content: SerialContent,
    /// Longest wait between attempts to reopen a device that went away.
    #[serde(
        default = "default_reopen_max",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "i64")]
pub enum StopBits {
    #[default]
    One,
    Two,
}

impl From<StopBits> for i64 {
    fn from(s: StopBits) -> i64 {
        match s {
            StopBits::One => 1,
            StopBits::Two => 2,
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct DataBits(pub u8);

impl Default for DataBits {
    fn default() -> Self {
        DataBits(8)
    }
}

impl From<DataBits> for i64 {
    fn from(d: DataBits) -> i64 {
        i64::from(d.0)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialContent {
    /// A CBOR map `{dev_eui, fport, payload, fcnt?, rssi?, snr?, time?}` (wired sensors).
    #[default]
    Cbor,
    /// A LoRaWAN PHYPayload from a radio module: verified and decrypted with the sessions
    /// of the `[[device]]`s, as radio frames from the packet forwarder are.
    Phy,
}

impl SerialSourceConfig {
    /// Checks serde cannot express; on error (key, reason).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.device.as_os_str().is_empty() {
            return Err(("device", "empty device path".into()));
        }
        if self.baud == 0 {
            return Err(("baud", "baud must be more than 0".into()));
        }
        crate::framing::check_max(self.max_frame).map_err(|e| ("max_frame", e.to_string()))?;
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
