//! The one TOML config file, as plain data: typed structs that deny unknown keys, every
//! value parsed once into its domain type ([`DevEui`](crate::ids::DevEui),
//! [`Key`](crate::lorawan::Key), [`MqttUrl`](crate::mqtt_url::MqttUrl),
//! [`ConnectionString`](crate::connection_string::ConnectionString)). Every error names the
//! file, the key path and what is wrong, on one line. Secrets are read here (files, `${ENV}`)
//! and wrapped in [`Secret`] so they cannot reach a log line by accident.
//!
//! The config imports no source or sink: checks that need one are made by building it, in
//! [`crate::pipeline::prepare`].

mod keypath;
pub(crate) mod map_only;
mod secrets;
mod sections;
mod sink;
mod source;
mod values;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::codec::Codec;
use crate::ids::DevEui;
pub use crate::secret::Secret;
pub(crate) use keypath::toml_error;
use secrets::{load_secret, secret_path, SecretFiles};
pub use secrets::{read_secret_file, SecretText};
pub use sections::*;
pub use sink::*;
pub use source::*;
pub use values::parse_size;

map_only::from_tables_only!(written: Config);
map_only::from_tables_only!(AloneSections);

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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Config {
    /// Board profile (`boards/<id>.toml`) whose defaults sit under this file's own keys.
    #[serde(default)]
    pub board: Option<String>,
    /// Name of this gateway; goes into the MQTT client ids, the status page's title and
    /// `/api/status`.
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
    #[serde(default)]
    pub codecs: CodecsConfig,
    pub sink: SinkConfig,
    /// Warnings about the files read while loading (who else may read secrets).
    #[serde(skip)]
    file_warnings: Vec<String>,
}

fn default_gateway_id() -> String {
    "hubgate".into()
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    crate::files::read_capped(path, crate::files::CONFIG_CAP).map_err(|reason| ConfigError::Read {
        file: path.display().to_string(),
        reason,
    })
}

/// The directory relative paths in the config `path` are resolved from, absolute: the agent's
/// working directory under systemd is `/`, and `hubgate check --print` shows the paths used.
fn base_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// The sections a command reads alone from the config (see [`CodecsConfig::load`],
/// [`BufferConfig::load`]): the rest of the file is neither resolved nor checked, so these
/// work where it cannot be (a secret file only the agent's service can read, a `${VAR}` set
/// only in the unit's environment).
#[derive(Deserialize)]
#[serde(remote = "Self")]
struct AloneSections {
    #[serde(default)]
    codecs: CodecsConfig,
    #[serde(default)]
    buffer: BufferConfig,
}

impl AloneSections {
    /// With the defaults of the config's board under its own keys, as the agent reads them
    /// ([`Config::parse`]).
    fn load(path: &Path) -> Result<AloneSections, ConfigError> {
        let text = read_config(path)?;
        let invalid = |(key, reason)| ConfigError::Invalid {
            file: path.display().to_string(),
            key,
            reason,
        };
        let site: toml::Table =
            toml::from_str(&text).map_err(|e| invalid(toml_error(&text, &e)))?;
        with_board(&text, site).map_err(invalid)
    }
}

/// The site config `text` (parsed as `site`), with the defaults of its board under its own
/// keys ([`apply_board`]); on error (key path, reason).
fn with_board<T: serde::de::DeserializeOwned>(
    text: &str,
    mut site: toml::Table,
) -> Result<T, (String, String)> {
    if apply_board(&mut site)? {
        return from_toml(text, site);
    }
    // Straight from the text, so errors keep their line numbers.
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, &e))?;
    from_toml(text, de)
}

/// Put the defaults of the board the site config `site` names (`board = "<id>"`) under its
/// own keys: `Ok(false)` when it names none. On error (key path, reason).
fn apply_board(site: &mut toml::Table) -> Result<bool, (String, String)> {
    let Some(board) = site.get("board") else {
        return Ok(false);
    };
    let id = board.as_str().ok_or_else(|| {
        (
            "board".to_string(),
            "must be a board id string, e.g. \"rpi4\"".to_string(),
        )
    })?;
    let profile = crate::board::find(id).map_err(|e| ("board".to_string(), e))?;
    profile.apply(site);
    Ok(true)
}

/// Deserialize with the key path of the first error.
fn from_toml<'de, T, D>(text: &str, de: D) -> Result<T, (String, String)>
where
    T: Deserialize<'de>,
    D: Deserializer<'de, Error = toml::de::Error>,
{
    serde_path_to_error::deserialize(de).map_err(|e| keypath::located(text, &e))
}

impl CodecsConfig {
    /// Only the `[codecs]` section of the config `path`, its directory resolved as
    /// [`Config::load`] resolves it. For `hubgate codecs`.
    pub fn load(path: &Path) -> Result<CodecsConfig, ConfigError> {
        let mut codecs = AloneSections::load(path)?.codecs;
        codecs.dir = base_of(path).join(&codecs.dir);
        Ok(codecs)
    }
}

impl BufferConfig {
    /// Only the `[buffer]` section of the config `path`, with its board's defaults (a
    /// `max_bytes` the recovery checks against) and its path resolved as [`Config::load`]
    /// does. For `hubgate buffer`, which the package's scripts run to count the buffer (a
    /// downgrade).
    pub fn load(path: &Path) -> Result<BufferConfig, ConfigError> {
        let mut buffer = AloneSections::load(path)?.buffer;
        buffer.path = base_of(path).join(&buffer.path);
        Ok(buffer)
    }
}

impl Config {
    /// Read, parse and validate `path`. Relative paths inside are resolved from its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = read_config(path)?;
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
        cfg.file_warnings
            .extend(crate::files::writable_by_others(path, "the configuration"));
        cfg.resolve(&base_of(path))
            .map_err(|(key, reason)| ConfigError::Invalid { file, key, reason })?;
        let buffer = crate::files::dir_open_to_others(&cfg.buffer.path, "the buffered readings");
        cfg.file_warnings.extend(buffer);
        Ok(cfg)
    }

    /// Parse TOML text; on error returns (key path, reason).
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let site: toml::Table = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        secrets::no_env_elsewhere(text, &site)?;
        with_board(text, site)
    }

    /// Read what the config refers to (secret and TLS files, relative paths from `base`) and
    /// check what serde cannot; on error (key path, reason).
    pub(crate) fn resolve(&mut self, base: &Path) -> Result<(), (String, String)> {
        self.buffer.validate()?;
        let mut secret_files = SecretFiles::new(self.paths_from(base));
        let mut trusted_cas = Vec::new();
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
                if let Some(topic) = &m.topic {
                    crate::source::mqtt::check_filter(topic).map_err(|why| {
                        (
                            format!("source[{i}].topic"),
                            format!(
                                "{:?} is not an MQTT topic filter ({why})",
                                crate::format::Excerpt::from(topic)
                            ),
                        )
                    })?;
                }
                // MQTT 3.1.1 has no password without a user name: it would be dropped and the
                // session go out anonymous, while the site believes it logs in.
                if m.username.is_none() && (m.password.is_some() || m.password_file.is_some()) {
                    return Err((
                        format!("source[{i}].username"),
                        "missing: MQTT sends a password only with a user name; without one the password would not be sent".into(),
                    ));
                }
                let key = format!("source[{i}].password");
                load_secret(&mut m.password, &m.password_file, &key, &mut secret_files)?;
                trusted_cas.extend(m.ca_path());
            }
            if let SourceConfig::Serial(sc) = source {
                sc.validate()
                    .map_err(|(key, e)| (format!("source[{i}].{key}"), e))?;
            }
            if let SourceConfig::Replay(r) = source {
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
        self.check_mqtt_client_ids()?;
        self.check_udp_listens()?;
        self.check_serial_devices()?;
        if self.codecs.round_budget.is_zero() {
            return Err((
                "codecs.round_budget".into(),
                "must be more than 0: the wall time the JavaScript calls of one round of the \
                 forwarder may take (default \"5s\")"
                    .into(),
            ));
        }
        if let Some(brand) = self
            .codecs
            .normalized_battery
            .keys()
            .find(|b| !crate::ids::is_tts_id(b))
        {
            return Err((
                format!("codecs.normalized_battery.{brand:?}"),
                format!(
                    "not a brand of The Things Network's Device Repository as The Things Stack \
                     sends it (version_ids.brand_id, \"milesight-iot\"): {}",
                    crate::ids::TTS_ID_RULE
                ),
            ));
        }
        let longest = crate::format::MAX_META_TEXT;
        if let Some(profile) = self.codecs.profiles.keys().find(|p| p.len() > longest) {
            return Err((
                format!("codecs.profiles.{:?}", crate::format::cut(profile, 40)),
                format!(
                    "a device profile name of {} bytes never matches: hubgate reads the first \
                     {longest} bytes of the network server's",
                    profile.len()
                ),
            ));
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
        self.resolve_metrics(&mut secret_files)?;
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if !seen.insert(d.dev_eui) {
                return Err((
                    format!("device[{i}].dev_eui"),
                    format!("DevEUI {} is listed twice", d.dev_eui),
                ));
            }
            check_decode_order(&d.decode_order)
                .map_err(|e| (format!("device[{i}].decode_order"), e))?;
        }
        self.check_sessions()?;
        let (mapping, key) = match &self.sink {
            SinkConfig::Eventhubs(eh) => (Some(&eh.hubs), "sink.hubs"),
            SinkConfig::Kafka(k) => (Some(&k.topics), "sink.topics"),
            SinkConfig::Stdout(_) => (None, ""),
        };
        let properties = match &self.sink {
            SinkConfig::Eventhubs(eh) => Some(&eh.properties),
            SinkConfig::Kafka(k) => Some(&k.properties),
            SinkConfig::Stdout(_) => None,
        };
        if let Some((key, reason)) = properties.and_then(Properties::masked) {
            return Err((format!("sink.properties.{key:?}"), reason));
        }
        if let Some(mapping) = mapping {
            for (rec_type, hub) in mapping {
                if !valid_hub_name(hub) {
                    return Err((
                        format!("{key}.{rec_type:?}"),
                        format!("bad hub name {hub:?}: {HUB_NAMES}"),
                    ));
                }
            }
            // A recType no hub is mapped for goes to the hub named like it, which must be
            // a name a hub can have: else its records would wait, parked, until max_age.
            for (rec_type, hub) in self.hub_plan() {
                if !valid_hub_name(&hub) {
                    let origin = if rec_type == self.record.packed_rec_type {
                        "record.packed_rec_type"
                    } else {
                        "rec_type"
                    };
                    return Err((
                        origin.into(),
                        format!("recType {rec_type:?} goes to the hub named like it, and that is no hub name ({HUB_NAMES}): rename it, or map it to a hub in [{key}]"),
                    ));
                }
            }
        }
        if let SinkConfig::Kafka(k) = &mut self.sink {
            // Not quoted: the password would be in the error.
            if k.brokers.contains('@') {
                return Err(("sink.brokers".into(), LOGIN_IN_BROKERS.into()));
            }
            let (value, file) = (&mut k.sasl_password, &k.sasl_password_file);
            load_secret(value, file, "sink.sasl_password", &mut secret_files)?;
        }
        if let SinkConfig::Eventhubs(eh) = &mut self.sink {
            if !matches!(eh.compression, Compression::None | Compression::Gzip) {
                return Err((
                    "sink.compression".into(),
                    "Event Hubs takes \"none\" or \"gzip\" (gzip on the Premium and Dedicated tiers only)".into(),
                ));
            }
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
                    let secret = secret_files
                        .read(file, "the connection string")
                        .map_err(|e| ("sink.connection_string_file".to_string(), e))?;
                    eh.connection_string = Some(secret);
                }
                (Some(_), None) => {}
            }
        }
        trusted_cas.extend(self.check_ca_files()?);
        for (file, what) in secret_files.read {
            if let Ok(path) = secret_path(&file) {
                self.file_warnings
                    .extend(crate::files::readable_by_others(&path, what));
                self.file_warnings
                    .extend(crate::files::writable_by_others(&path, what));
            }
        }
        for ca in trusted_cas {
            self.file_warnings.extend(crate::files::writable_by_others(
                &ca,
                "trusted CA certificates",
            ));
        }
        Ok(())
    }

    /// CA bundles are directories or regular files under [`crate::files::CA_CAP`] with a
    /// certificate in them: librdkafka would otherwise hang on a FIFO, read `/dev/zero` until
    /// memory runs out, or refuse to start (`run` stopping where `check` said OK).
    /// Returns the CA bundles checked.
    fn check_ca_files(&self) -> Result<Vec<PathBuf>, (String, String)> {
        let (ca, properties) = match &self.sink {
            SinkConfig::Eventhubs(eh) => (&eh.ca_location, &eh.properties),
            SinkConfig::Kafka(k) => (&k.ca_location, &k.properties),
            SinkConfig::Stdout(_) => return Ok(Vec::new()),
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
        let mut checked = Vec::new();
        for (key, path) in field.into_iter().chain(in_properties) {
            crate::files::check_ca_bundle(&path)
                .map_err(|e| (key, format!("{}: {e}", path.display())))?;
            checked.push(path);
        }
        Ok(checked)
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
        let properties = match &self.sink {
            SinkConfig::Eventhubs(eh) => {
                note(
                    "sink.connection_string".into(),
                    inline(&eh.connection_string),
                );
                Some(&eh.properties)
            }
            SinkConfig::Kafka(k) => {
                note("sink.sasl_password".into(), inline(&k.sasl_password));
                Some(&k.properties)
            }
            SinkConfig::Stdout(_) => None,
        };
        // librdkafka properties are never taken from the environment: always inline.
        for key in properties.iter().flat_map(|p| p.keys()) {
            if Properties::is_secret(key) {
                out.push(format!("sink.properties.{key:?}"));
            }
        }
        out
    }

    /// The client id of each source, by its index (`None` for a source that is not MQTT): its
    /// `client_id`, else `hubgate-<gateway_id>` for the first MQTT source without one, which
    /// keeps the id (and the broker's session) that every such source had before, and
    /// `hubgate-<gateway_id>-<n>` for the n-th. A broker lets one connection per client id.
    pub fn mqtt_client_ids(&self) -> Vec<Option<String>> {
        let mut defaulted = 0;
        self.sources
            .iter()
            .map(|src| {
                let SourceConfig::Mqtt(m) = src else {
                    return None;
                };
                Some(m.client_id.clone().unwrap_or_else(|| {
                    defaulted += 1;
                    match defaulted {
                        1 => format!("hubgate-{}", self.gateway_id),
                        n => format!("hubgate-{}-{n}", self.gateway_id),
                    }
                }))
            })
            .collect()
    }

    /// No two MQTT sources connect to one broker with one client id: the broker would drop
    /// each when the other connects, and they would share one session and its messages.
    fn check_mqtt_client_ids(&self) -> Result<(), (String, String)> {
        let mut seen = std::collections::HashMap::new();
        for (i, (src, id)) in self.sources.iter().zip(self.mqtt_client_ids()).enumerate() {
            let (SourceConfig::Mqtt(m), Some(id)) = (src, id) else {
                continue;
            };
            // The loopback names and addresses (`localhost`, `127.0.0.1`, `::1`) reach one
            // broker on this machine; two brokers on two of them (rare) take distinct ids.
            let broker = if m.url.is_loopback() {
                format!("localhost:{}", m.url.port)
            } else {
                m.url.authority().to_ascii_lowercase()
            };
            if let Some(first) = seen.insert((broker.clone(), id.clone()), i) {
                return Err((
                    format!("source[{i}].client_id"),
                    format!("client id {id:?} is source[{first}]'s too, on the same broker {broker}: give each MQTT source its own client_id"),
                ));
            }
        }
        Ok(())
    }

    /// Two UDP sources on one address: the second cannot bind it, and the start fails.
    fn check_udp_listens(&self) -> Result<(), (String, String)> {
        let mut seen = std::collections::HashMap::new();
        for (i, src) in self.sources.iter().enumerate() {
            let SourceConfig::Udp(u) = src else {
                continue;
            };
            if let Some(first) = seen.insert(u.listen, i) {
                return Err((
                    format!("source[{i}].listen"),
                    format!(
                        "{} is source[{first}]'s too: one UDP source per address",
                        u.listen
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Two serial sources on one device path: the port is opened exclusively, so the second
    /// could never open it and would only log "cannot open" once. Paths that differ but lead
    /// to one device now (a link such as `/dev/serial/by-id/…` and a `ttyUSB` name) are only
    /// warned about ([`Config::warnings`]): USB names follow the order devices came up in at
    /// this boot, and refusing the config for that would stop every other source too.
    fn check_serial_devices(&self) -> Result<(), (String, String)> {
        let mut seen = std::collections::HashMap::new();
        for (i, device) in self.serial_devices() {
            if let Some(first) = seen.insert(device, i) {
                return Err((
                    format!("source[{i}].device"),
                    format!(
                        "{} is source[{first}]'s device too: one serial source per device",
                        device.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Each serial source's place in the config and its device path as configured.
    fn serial_devices(&self) -> impl Iterator<Item = (usize, &Path)> {
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(i, src)| match src {
                SourceConfig::Serial(s) => Some((i, s.device.as_path())),
                _ => None,
            })
    }

    /// A device's LoRaWAN session is all of `dev_addr`, `nwk_s_key`, `app_s_key`, or nothing;
    /// `resets_fcnt` and `fcnt_from` are options of the session.
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
            } else if let Some(option) = [
                ("resets_fcnt", d.resets_fcnt),
                ("fcnt_from", d.fcnt_from.is_some()),
            ]
            .into_iter()
            .find_map(|(name, set)| set.then_some(name))
            {
                return Err((
                    format!("device[{i}].{option}"),
                    "applies to a LoRaWAN session (dev_addr, nwk_s_key, app_s_key) only: the \
                     network server keeps the frame counters of the others"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Every recType this configuration can emit, so that their hubs exist before the first
    /// record and show in `doctor` and on the status page: the built-in codecs' (every model
    /// a family decides between), the packed ones (`[record] packed_rec_type` for unknown
    /// devices, each device's own or its codec's domain's), the recTypes the mapping tables of
    /// its JavaScript codecs and devices declare (read from `[codecs] dir` now; one that does
    /// not load adds none), and gateway status when a UDP source reports it. Not in it: the recTypes chosen from a decoded object's
    /// fields when no table declares one (docs/codecs.md), whose hubs are made on first use.
    pub fn rec_types(&self) -> std::collections::BTreeSet<String> {
        let mut out: std::collections::BTreeSet<String> = self
            .devices
            .iter()
            .filter_map(|d| d.codec)
            .flat_map(Codec::rec_types)
            .map(str::to_string)
            .collect();
        out.insert(self.record.packed_rec_type.clone());
        out.extend(self.devices.iter().filter_map(|d| d.own_packed_rec_type()));
        out.extend(crate::js::dir::Named::of(self).declared_rec_types());
        if self
            .sources
            .iter()
            .any(|s| matches!(s, SourceConfig::Udp(u) if u.gateway_status))
        {
            out.insert(crate::codec::rec_type::GATEWAY.to_string());
        }
        out
    }

    /// recType -> hub (topic) for every recType this configuration can emit
    /// ([`Config::rec_types`]).
    pub fn hub_plan(&self) -> Vec<(String, String)> {
        let names = self.sink.hub_names().unwrap_or_default();
        self.rec_types()
            .into_iter()
            .map(|r| {
                let hub = names.hub(&r).to_string();
                (r, hub)
            })
            .collect()
    }

    /// The status page's password; a listener beyond loopback needs one, or the read-only
    /// opt-in.
    /// Every path the config names, taken from `base` (the config file's directory) when
    /// relative: the agent's working directory under systemd is `/`, and the `hubgate`
    /// commands run from anywhere would otherwise read other files (or open another buffer).
    /// A path that starts with `${` is whatever the variable holds. Returns the paths taken
    /// from `base`.
    fn paths_from(&mut self, base: &Path) -> Vec<PathBuf> {
        let mut paths = vec![&mut self.buffer.path, &mut self.codecs.dir];
        for source in &mut self.sources {
            match source {
                SourceConfig::Mqtt(m) => paths.extend(
                    [
                        &mut m.password_file,
                        &mut m.ca_file,
                        &mut m.client_cert_file,
                        &mut m.client_key_file,
                    ]
                    .into_iter()
                    .flatten(),
                ),
                SourceConfig::Replay(r) => paths.push(&mut r.path),
                SourceConfig::Serial(_) | SourceConfig::Udp(_) => {}
            }
        }
        for d in &mut self.devices {
            paths.extend(d.nwk_s_key_file.iter_mut().chain(&mut d.app_s_key_file));
        }
        match &mut self.sink {
            SinkConfig::Eventhubs(eh) => paths.extend(
                eh.connection_string_file
                    .iter_mut()
                    .chain(&mut eh.ca_location),
            ),
            SinkConfig::Kafka(k) => {
                paths.extend(k.sasl_password_file.iter_mut().chain(&mut k.ca_location))
            }
            SinkConfig::Stdout(_) => {}
        }
        paths.extend(&mut self.metrics.password_file);
        let mut relative = Vec::new();
        for p in paths {
            if p.is_relative() && !p.to_string_lossy().starts_with("${") {
                *p = base.join(&*p);
                relative.push(p.clone());
            }
        }
        relative
    }

    fn resolve_metrics(&mut self, secret_files: &mut SecretFiles) -> Result<(), (String, String)> {
        let m = &mut self.metrics;
        if let Some((i, name)) = m
            .hosts
            .iter()
            .enumerate()
            .find(|(_, n)| !crate::http::host::valid(n))
        {
            return Err((
                format!("metrics.hosts[{i}]"),
                format!("{name:?} is not a host name: give the name alone (letters, digits, '-' and '.'), without scheme, port or path"),
            ));
        }
        load_secret(
            &mut m.password,
            &m.password_file,
            "metrics.password",
            secret_files,
        )
    }

    /// Things that are allowed but probably wrong; `check` prints them, `run` logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.file_warnings.clone();
        if let Some(addr) = self.metrics.unguarded() {
            // Not an error: an agent that would not start loses the readings it cannot buffer.
            out.push(format!(
                "metrics.listen = \"{addr}\" is reachable from the network: the status page and metrics are not served until you set metrics.password_file (a file holding the page's password) or, to show the page to everyone there, metrics.lan_read_only = true"
            ));
        }
        let open = self.metrics.password.is_none() && self.metrics.lan_read_only;
        if let Some(addr) = self
            .metrics
            .listen
            .filter(|a| open && !a.ip().is_loopback())
        {
            out.push(format!(
                "metrics.listen = \"{addr}\" with lan_read_only: the status page and metrics are open to the network without a password"
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
        let mut devices = std::collections::HashMap::new();
        for (i, path) in self.serial_devices() {
            let Ok(device) = std::fs::canonicalize(path) else {
                continue;
            };
            if let Some((first, other)) = devices.insert(device.clone(), (i, path)) {
                out.push(format!(
                    "source[{i}].device {} and source[{first}].device {} are one device now ({}): a port opens for one source only, so the other reads nothing while this lasts",
                    path.display(),
                    other.display(),
                    device.display()
                ));
            }
        }
        if let SinkConfig::Eventhubs(_) = self.sink {
            let hubs: std::collections::BTreeSet<String> =
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

fn inline<T>(secret: &Option<Secret<T>>) -> Option<bool> {
    secret.as_ref().map(Secret::is_inline)
}

impl Config {
    /// The config as TOML that `check` accepts again, every default filled in: secrets from
    /// files as their `*_file` keys, `${ENV}` references as written, secrets written inline
    /// as [`secrets::MASK`] (which `check` refuses where a secret belongs).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot print the config: {e}"))
    }
}

/// A commented template that passes `hubgate check`.
pub const TEMPLATE: &str = include_str!("../../config/hubgate.toml");

#[cfg(test)]
mod template_tests;
/// A device's `decode_order`: each of `codec`, `js`, `network` at most once (a step twice would
/// call a failing decoder twice for one uplink, a JavaScript codec's strikes counted twice),
/// and at least one (none sends everything packed, which leaving the device out of the
/// config, or giving it no codec, says more plainly).
fn check_decode_order(order: &[DecodeStep]) -> Result<(), String> {
    if order.is_empty() {
        return Err("is empty: name at least one of \"codec\", \"js\", \"network\"".into());
    }
    for (i, step) in order.iter().enumerate() {
        if order[..i].contains(step) {
            let name = match step {
                DecodeStep::Codec => "codec",
                DecodeStep::Js => "js",
                DecodeStep::Network => "network",
            };
            return Err(format!("names {name:?} twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
