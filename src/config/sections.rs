//! The sections beside the sources and the sink: `[buffer]`, `[record]`, `[metrics]` and
//! `[[device]]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{
    de_codec, de_dev_addr, de_dev_eui, de_duration, de_listen, de_period, de_size, ser_codec,
    ser_dev_addr, ser_display, ser_duration, ser_listen, ser_size,
};
use crate::codec::Codec;
use crate::ids::DevEui;
use crate::lorawan::{DevAddr, Key, SessionKeys};
use crate::secret::Secret;

super::map_only::from_tables_only!(
    written: BufferConfig, RecordConfig, MetricsConfig, CodecsConfig, DeviceConfig
);

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct BufferConfig {
    /// Directory of the sled database.
    #[serde(default = "default_buffer_path")]
    pub path: PathBuf,
    /// Byte cap of spilled records (`"256MiB"`, `"1GB"` or a number of bytes).
    #[serde(
        default = "default_max_bytes",
        deserialize_with = "de_size",
        serialize_with = "ser_size"
    )]
    pub max_bytes: u64,
    /// Spilled records older than this are dropped (counted) instead of sent.
    #[serde(
        default = "default_max_age",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub max_age: Duration,
    #[serde(default)]
    pub when_full: WhenFull,
    /// Records in memory on their way to the sink; past this, new records spill.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The same window in bytes (records' bodies, keys and ids; each is held twice, by
    /// hubgate and by the producer): whichever bound is reached first closes it. 0 counts as
    /// 1: one record at a time, never none.
    #[serde(
        default = "default_max_in_flight_bytes",
        deserialize_with = "de_size",
        serialize_with = "ser_size"
    )]
    pub max_in_flight_bytes: u64,
    /// A record not confirmed by the sink after this long is written to sled and acknowledged.
    #[serde(
        default = "default_spill_after",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub spill_after: Duration,
    /// Free space to leave on the buffer's file system: below it the buffer stops growing and
    /// `when_full` applies (reason `disk_full`), so a full disk never reaches sled as ENOSPC.
    #[serde(
        default = "default_min_free",
        deserialize_with = "de_size",
        serialize_with = "ser_size"
    )]
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
/// Each record in flight is held twice (ours and librdkafka's copy, ~2.5 KB in all for a
/// typical 1.2 KB record, with the source's message behind it). With one produce request
/// in flight a larger window mostly waits: 500 drained a 50,000-uplink backlog as fast as
/// 2,000 in `scripts/bench.sh` and peaked 5.6 MB lower (17.5 against 23.1 MB; 128 MB at
/// 10,000 for a 200,000-record drain).
fn default_max_in_flight() -> usize {
    500
}
/// Records with large bodies (a network server's whole uplink object, long JavaScript
/// output) hold the window's memory to this instead (500 records of 4 KB).
fn default_max_in_flight_bytes() -> u64 {
    2 << 20
}
fn default_spill_after() -> Duration {
    Duration::from_secs(2)
}
fn default_min_free() -> u64 {
    16 << 20
}

/// Below this a buffer bridges no outage worth the name: a cap written as a bare number is
/// bytes, and `max_bytes = 256` meant as MiB would drop every record that spills.
pub const MIN_BUFFER_BYTES: u64 = 1 << 20;

impl BufferConfig {
    /// Checks serde cannot express; on error (key path, reason).
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("buffer.path".into(), "must name a directory".into()));
        }
        if self.max_bytes < MIN_BUFFER_BYTES {
            return Err((
                "buffer.max_bytes".into(),
                format!(
                    "{} bytes is under the least a buffer may hold (1 MiB): records that \
                     spill would be acknowledged and dropped; a number without a unit is \
                     bytes (e.g. \"256MiB\")",
                    self.max_bytes
                ),
            ));
        }
        if self.max_age.is_zero() {
            return Err((
                "buffer.max_age".into(),
                "must be more than 0: \"0s\" would drop every buffered record (each \
                 acknowledged already) the first time the drain saw it; there is no \"never\", \
                 write a long time such as \"3650d\""
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            path: default_buffer_path(),
            max_bytes: default_max_bytes(),
            max_age: default_max_age(),
            when_full: WhenFull::default(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_bytes: default_max_in_flight_bytes(),
            spill_after: default_spill_after(),
            min_free: default_min_free(),
        }
    }
}

/// What a full buffer does with one more record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct RecordConfig {
    /// recType of frames sent undecoded from devices without a built-in codec (those with
    /// one use its domain's packed recType).
    #[serde(default = "default_packed_rec_type")]
    pub packed_rec_type: String,
    /// Tags added to every record's `meta.global`, and ahead of the device's in `obj.tags`.
    #[serde(default)]
    pub global_tags: Vec<String>,
    /// How many recent record ids are remembered to drop the same uplink seen again (same
    /// device, DevAddr, session keys, FCnt, FPort, payload, and time where the FCnt may
    /// restart, see [`crate::record::stable_id`]); 0: none.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: usize,
    /// The envelope's `source`: who made the record.
    #[serde(default = "default_source")]
    pub source: String,
    /// Microshare usecase code (`meta.usecase`) per codec (a built-in codec's id or a
    /// JavaScript codec's name), for devices without a `usecase` of their own.
    #[serde(default)]
    pub usecases: std::collections::BTreeMap<String, String>,
}

fn default_packed_rec_type() -> String {
    crate::codec::rec_type::PACKED.into()
}
fn default_dedup_window() -> usize {
    4096
}
fn default_source() -> String {
    crate::record::SOURCE.into()
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            packed_rec_type: default_packed_rec_type(),
            global_tags: Vec::new(),
            dedup_window: default_dedup_window(),
            source: default_source(),
            usecases: Default::default(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct MetricsConfig {
    /// Serve Prometheus text metrics on this address; `"off"` turns the endpoint off.
    #[serde(
        default = "default_metrics_listen",
        deserialize_with = "de_listen",
        serialize_with = "ser_listen"
    )]
    pub listen: Option<std::net::SocketAddr>,
    /// How often a status line is logged; `"0s"` turns it off.
    #[serde(
        default = "default_status_interval",
        deserialize_with = "de_period",
        serialize_with = "ser_duration"
    )]
    pub status_interval: Duration,
    /// A file holding the password of the status page and metrics (HTTP Basic, any user
    /// name); needed to listen beyond loopback, unless `lan_read_only`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    pub password: Option<Secret>,
    /// Serve the status page and metrics beyond loopback without a password: everyone on
    /// that network sees device names, readings and hubs (never a secret). Warned at start.
    #[serde(default)]
    pub lan_read_only: bool,
    /// Host names the page is also reached by (a DNS name of the gateway), beside its IP
    /// addresses, `localhost`, the machine's host name and `<host name>.local`: a request
    /// naming any other is refused, so that no other web site can read the page through a
    /// visitor's browser (DNS rebinding).
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl MetricsConfig {
    /// The address, when it is reachable from the network with neither a password nor the
    /// read-only opt-in: nothing is served there (the agent runs on without the page).
    pub fn unguarded(&self) -> Option<std::net::SocketAddr> {
        self.listen
            .filter(|a| !a.ip().is_loopback() && self.password.is_none() && !self.lan_read_only)
    }

    /// Where the status page and metrics are served, if anywhere.
    pub fn served(&self) -> Option<std::net::SocketAddr> {
        self.listen.filter(|_| self.unguarded().is_none())
    }
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
            password_file: None,
            password: None,
            lan_read_only: false,
            hosts: Vec::new(),
        }
    }
}

/// One way to decode a payload, in a device's `decode_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeStep {
    Codec,
    Js,
    Network,
}

/// The operator's own codecs first (built-in, then JavaScript), the network server's last:
/// what a device's config names is what the operator chose.
pub fn default_decode_order() -> Vec<DecodeStep> {
    vec![DecodeStep::Codec, DecodeStep::Js, DecodeStep::Network]
}

/// `[codecs]`: the directory of JavaScript codecs and mapping tables.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct CodecsConfig {
    #[serde(default = "default_codecs_dir")]
    pub dir: PathBuf,
    /// Device profile name (as the network server reports it) -> JavaScript codec name, for
    /// devices without `js_codec`.
    #[serde(default)]
    pub profiles: std::collections::BTreeMap<String, String>,
    /// Device Repository brand (TTS `version_ids.brand_id`) -> what its normalizers put in
    /// the normalized `battery`, for devices whose mapping table does not say: over
    /// hubgate's own knowledge of a brand ([`crate::mapping::brand`]).
    #[serde(default)]
    pub normalized_battery: std::collections::BTreeMap<String, crate::mapping::NormalizedBattery>,
    /// How long a device (or a codec) whose calls keep timing out, running out of memory,
    /// failing in the engine or taking the worker down is not called: its uplinks go out
    /// packed meanwhile.
    #[serde(
        default = "default_quarantine",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub quarantine: Duration,
    /// Wall time the JavaScript calls of one round of the forwarder (up to 256 frames) may
    /// take together: once they took it, the round ends and the frames it has not taken wait
    /// for the next. More than 0.
    #[serde(
        default = "default_round_budget",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub round_budget: Duration,
}

fn default_quarantine() -> Duration {
    Duration::from_secs(600)
}
fn default_round_budget() -> Duration {
    Duration::from_secs(5)
}

fn default_codecs_dir() -> PathBuf {
    PathBuf::from("/etc/hubgate/codecs")
}

impl Default for CodecsConfig {
    fn default() -> Self {
        CodecsConfig {
            dir: default_codecs_dir(),
            profiles: Default::default(),
            normalized_battery: Default::default(),
            quarantine: default_quarantine(),
            round_budget: default_round_budget(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct DeviceConfig {
    /// DevEUI, 16 hex digits (dashes or colons allowed).
    #[serde(deserialize_with = "de_dev_eui", serialize_with = "ser_display")]
    pub dev_eui: DevEui,
    /// Payload codec id (see `hubgate codecs`); without one, records go out packed.
    #[serde(default, deserialize_with = "de_codec", serialize_with = "ser_codec")]
    pub codec: Option<Codec>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Microshare usecase code (`meta.usecase`, e.g. `SC05`); default: the recType's own.
    #[serde(default)]
    pub usecase: Option<String>,
    /// recType of this device's packed records (no codec, or the codec failed), e.g.
    /// `io.microshare.environment.packed`; default: the built-in codec's domain's packed recType,
    /// else `[record] packed_rec_type`.
    #[serde(default)]
    pub packed_rec_type: Option<String>,
    /// Which decoder is used when several could: `codec` (the built-in one above), `js` (the
    /// JavaScript codec: `js_codec`, else the device profile's in `[codecs]`), `network` (what
    /// the network server decoded). The first that decodes the payload wins; none: packed.
    #[serde(default = "default_decode_order")]
    pub decode_order: Vec<DecodeStep>,
    /// JavaScript codec `<[codecs] dir>/<name>.js` (see `hubgate codecs`).
    #[serde(default)]
    pub js_codec: Option<String>,
    /// Mapping table `<[codecs] dir>/<name>.toml` for the field names of the network server's
    /// object (a JavaScript codec uses the table of its own name).
    #[serde(default)]
    pub mapping: Option<String>,
    /// LoRaWAN 1.0.x session, for raw frames (serial, UDP, raw MQTT) that hubgate verifies and
    /// decrypts itself: DevAddr as usually written (8 hex digits, big-endian). Give all three
    /// of `dev_addr`, `nwk_s_key`, `app_s_key`, or none.
    #[serde(
        default,
        deserialize_with = "de_dev_addr",
        serialize_with = "ser_dev_addr"
    )]
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
    /// The device restarts its frame counter from 0 (an ABP device that does not keep it
    /// across a power cycle): a counter at or below the last accepted is taken as a restart
    /// and accepted, unless it is the same frame heard again within 3 minutes (a copy; by
    /// the frames' own times from one gateway too, when both carry one).
    /// Weakens replay protection for this device: a frame captured before a
    /// restart can be replayed after it. Needs a LoRaWAN session.
    #[serde(default)]
    pub resets_fcnt: bool,
    /// The device's frame counter is at least this: a session is first looked for below
    /// 2^20 frames, so a device already past that when hubgate first hears it needs it.
    /// Frames below it are refused as old. Needs a LoRaWAN session.
    pub fcnt_from: Option<u32>,
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

    /// The recType of its packed records (no codec, or the codec failed) when it is not
    /// `[record] packed_rec_type`: its own `packed_rec_type`, else its built-in codec's
    /// domain's, because Microshare's packed recTypes are per domain
    /// (`io.microshare.environment.packed`).
    pub fn own_packed_rec_type(&self) -> Option<String> {
        self.packed_rec_type.clone().or_else(|| {
            let unpacked = self.codec?.rec_type();
            Some(format!("{}.packed", unpacked.strip_suffix(".unpacked")?))
        })
    }
}
