//! Objects decoded elsewhere (a network server's codec, a JavaScript codec) -> Microshare
//! fields: `{value, unit}` arrays under Microshare's field names, device values under
//! `device_health`, everything that maps nowhere kept under `origin` (docs/codecs.md,
//! "Decoded objects").
//!
//! Two tables say what maps where: the built-in one for The Things Network's normalized
//! payload schema (`air.temperature`, `action.motion.detected`, ...), and a per-codec
//! [`Table`] (TOML) for codecs that return their own field names.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::codec::rec_type;

mod datalog;

/// A per-codec mapping table (`<codec>.toml` in the codec directory):
///
/// ```toml
/// rec_type = "io.microshare.environment.unpacked"   # optional: else chosen from the fields
/// [fields]
/// TempC_SHT = { field = "temperature", unit = "°C" }
/// "battery.mv" = { field = "voltage", unit = "V", scale = 0.001, health = true }
/// voc = { field = "voc", unit = "ppb", ignore = [65535] }
/// ```
///
/// Keys are paths into the codec's object, nested keys joined with `.`; a key ending in `[]`
/// reads an array of values (or one value), a reading per item.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Table {
    pub rec_type: Option<String>,
    /// What the normalized payload's `battery` is for this codec or device; unset, the
    /// device's brand says ([`brand`]), else it is read as the schema says, volts.
    pub normalized_battery: Option<NormalizedBattery>,
    #[serde(default)]
    pub fields: BTreeMap<String, Target>,
    /// Where the codec puts readings of earlier times: each entry a record of its own time.
    pub history: Option<HistoryTable>,
}

/// A table's `[history]`: the codec's array of entries measured earlier, each with its own
/// time (Milesight's decoders: `history: [{timestamp, temperature, humidity}, ...]`, the
/// timestamp in Unix seconds). Each entry's other fields are mapped by the table's `[fields]`,
/// under the same names as the live ones, as the built-in codecs do with their history.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct HistoryTable {
    /// The key of the array of entries (with `columns`: of the text log), nested keys joined
    /// with `.` (`data.history`).
    pub path: String,
    /// The key of each entry's time: Unix seconds (a fraction kept to the millisecond), or
    /// RFC 3339 text; with `columns`, the column of it, a date and time of `zone` too.
    pub time: String,
    /// For a history the codec writes as text (Dragino's `DATALOG`, `[22.05,21.3,51.2,
    /// 2024-05-01 09:50:00],...`): the names of each bracketed entry's values, in their order,
    /// each entry then read as an object of those keys.
    pub columns: Option<Vec<String>>,
    /// The zone of a text log's date and time, which carries none (with `columns`).
    pub zone: Option<Zone>,
    /// [`path`](Self::path) split, as [`Table::parse`] leaves it.
    #[serde(skip)]
    keys: Vec<String>,
}

/// A text log's time zone: that of the JavaScript engine that wrote its dates and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    Utc,
    /// The C library's local zone (`TZ`, else `/etc/localtime`), the one the agent's
    /// JavaScript codecs write local times in.
    Local,
}

impl HistoryTable {
    /// The keys of [`path`](Self::path), outermost first.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }
}

/// A table's `normalized_battery`: what its normalizer puts in the schema's `battery`, which
/// the schema says is volts but which some normalizers (Milesight's) fill with the charge in
/// percent, a number no bound can tell from volts (5 % and 5 V). Also the value of
/// `[codecs.normalized_battery]`, by brand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NormalizedBattery {
    /// Volts, `device_health.voltage`.
    Voltage,
    /// The charge in percent, `device_health.charge`.
    Charge,
    /// Not read: it stays under `origin.normalized`, without a warning.
    Skip,
}

/// Where one field of a codec's object goes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Target {
    /// Microshare field name.
    pub field: String,
    pub unit: Option<String>,
    /// Multiplies a number (e.g. 0.001 for mV to V), giving the decimal meant ([`scaled`]).
    #[serde(default = "one")]
    pub scale: f64,
    /// Goes under `device_health` (battery, board temperature) instead of the readings.
    #[serde(default)]
    pub health: bool,
    /// Numbers the codec gives for "no reading" (a sensor's 65535): such a value, compared
    /// before `scale`, stays under `origin`.
    #[serde(default)]
    pub ignore: Vec<f64>,
    /// The lowest reading taken (after `scale`): a lower one stays under `origin`.
    pub min: Option<f64>,
    /// The highest reading taken (after `scale`): a higher one stays under `origin`.
    pub max: Option<f64>,
    /// How the codec's value is read.
    #[serde(default, rename = "type")]
    pub read_as: ReadAs,
    /// The reading each of the codec's values gives (`open = true`, `"0" = false`): text by
    /// its spelling, a number by its value (1.0 is `"1"`), a value not listed stays under
    /// `origin`.
    pub values: Option<BTreeMap<String, Json>>,
    /// The reading's channel, as the built-in codecs write it (`"3"`: Milesight's channel
    /// id, Cayenne's channel).
    pub context_id: Option<String>,
    /// For a key ending in `[]` (an array of values, one reading each): the `context_id` of
    /// its first item, the next item's one more (0 unset, as the built-in Elsys codec numbers
    /// its repeated probes).
    pub context_base: Option<u32>,
}

/// A table field's `type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAs {
    /// A number, a number written as text, or a boolean as it is.
    #[default]
    Number,
    /// A boolean: a boolean as it is, a number (or one written as text) true unless 0.
    Bool,
}

fn one() -> f64 {
    1.0
}

crate::config::map_only::from_tables_only!(Table, HistoryTable, Target);

impl Table {
    /// The table of `text`, or one line saying what is wrong and where.
    pub fn parse(text: &str) -> Result<Table, String> {
        let line = |e: &toml::de::Error| crate::config::toml_error(text, e).1;
        let de = toml::Deserializer::parse(text).map_err(|e| line(&e))?;
        let mut t: Table = serde_path_to_error::deserialize(de).map_err(|e| {
            // Written below `[fields]`, a table's own key (text) is taken for a field's
            // (a table): a codec's own field of that name, its entry wrong, is told as any.
            let text_for_field = e.inner().message().starts_with("invalid type: string");
            match e.path().to_string().as_str() {
                "." => line(e.inner()),
                path @ ("fields.normalized_battery" | "fields.rec_type") if text_for_field => {
                    format!(
                        "{path}: {} ({} belongs above [fields])",
                        line(e.inner()),
                        &path["fields.".len()..]
                    )
                }
                path => format!("{path}: {}", line(e.inner())),
            }
        })?;
        if let Some(h) = &mut t.history {
            // Split once: each uplink looks its history up by them.
            h.keys = h.path.split('.').map(str::to_string).collect();
        }
        if let Some(h) = &t.history {
            // Nested keys joined with `.`, as `[fields]`' keys; the time is each entry's own.
            if h.keys().iter().any(|k| k.is_empty() || k.ends_with("[]")) {
                return Err(format!(
                    "history.path: {:?} must be the array's key, nested keys joined with a dot, \
                     none empty nor ending in []",
                    h.path
                ));
            }
            if h.time.is_empty() || h.time.contains('.') || h.time.ends_with("[]") {
                return Err(format!(
                    "history.time: {:?} must be a key of each entry itself, without a dot or []",
                    h.time
                ));
            }
            match (&h.columns, h.zone) {
                (None, Some(_)) => {
                    return Err(
                        "history.zone: is for a text log's times (with columns); an \
                                array's entries' times are Unix seconds or RFC 3339"
                            .into(),
                    )
                }
                (Some(_), None) => {
                    return Err(
                        "history.zone: \"utc\" or \"local\" must say whose clock a text \
                                log's times are of (they carry no zone)"
                            .into(),
                    )
                }
                (Some(columns), Some(_)) => history_columns(columns, &h.time)?,
                (None, None) => {}
            }
            let under = |k: &String| {
                k.strip_prefix(h.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            };
            if let Some(key) = t.fields.keys().find(|k| under(k)) {
                return Err(format!(
                    "fields.{key}: {} is the [history] array, whose entries [fields] maps by \
                     their own keys (temperature, not {}.temperature)",
                    h.path, h.path,
                ));
            }
        }
        for (path, target) in &t.fields {
            let field = target.field.as_str();
            let each = path.strip_suffix("[]");
            if each.unwrap_or(path).contains("[]") || each == Some("") {
                return Err(format!(
                    "fields.{path}: [] goes at the end of a key, after the array's own key; \
                     an array of entries with their own time is [history]"
                ));
            }
            match each {
                Some(one) if t.fields.contains_key(one) => {
                    return Err(format!(
                        "fields.{path}: {one} is a key of its own too; keep one (a key ending \
                         in [] reads one value as well)"
                    ));
                }
                Some(_) if target.context_id.is_some() => {
                    return Err(format!(
                        "fields.{path}: each item's context_id is its index, counted from \
                         context_base; context_id is for a key of one value"
                    ));
                }
                None if target.context_base.is_some() => {
                    return Err(format!(
                        "fields.{path}: context_base numbers the items of an array, a key \
                         ending in []"
                    ));
                }
                _ => {}
            }
            // 0 (a typo for 0.01, say) would make every reading of the field 0.
            if !target.scale.is_finite() || target.scale == 0.0 {
                return Err(format!(
                    "fields.{path}: scale must be a finite number other than 0"
                ));
            }
            for (name, bound) in [("min", target.min), ("max", target.max)] {
                if bound.is_some_and(|b| !b.is_finite()) {
                    return Err(format!("fields.{path}: {name} must be a finite number"));
                }
            }
            if let (Some(min), Some(max)) = (target.min, target.max) {
                if min > max {
                    return Err(format!(
                        "fields.{path}: min {min} is above max {max}: no reading would be taken"
                    ));
                }
            }
            if target.ignore.iter().any(|i| !i.is_finite()) {
                return Err(format!("fields.{path}: ignore must list finite numbers"));
            }
            let bounded = target.scale != 1.0 || target.min.is_some() || target.max.is_some();
            if let Some(values) = &target.values {
                if bounded || !target.ignore.is_empty() || target.read_as != ReadAs::Number {
                    return Err(format!(
                        "fields.{path}: values gives the readings itself; it takes no type, \
                         scale, min, max or ignore"
                    ));
                }
                if values.is_empty() {
                    return Err(format!("fields.{path}: values lists no value"));
                }
                if let Some((value, reading)) = values
                    .iter()
                    .find(|(_, v)| !matches!(v, Json::Bool(_) | Json::Number(_) | Json::String(_)))
                {
                    // `1.0 = true` is TOML's dotted key `values."1"."0"`: a number's key
                    // holding one key of digits.
                    let digits =
                        |k: &String| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit());
                    let dotted = key_number(value).is_some()
                        && reading
                            .as_object()
                            .is_some_and(|o| o.len() == 1 && o.keys().all(digits));
                    let quote = if dotted {
                        " (quote a key with a dot: \"1.0\" = ...)"
                    } else {
                        ""
                    };
                    return Err(format!(
                        "fields.{path}: values.{value} must be a finite number, a boolean or \
                         text{quote}"
                    ));
                }
                // A codec's number is looked up by its value: two keys of one value would
                // make the reading depend on the key's spelling.
                let mut numbers: Vec<(f64, &String)> = values
                    .keys()
                    .filter_map(|k| key_number(k).map(|x| (x, k)))
                    .collect();
                numbers.sort_by(|a, b| a.0.total_cmp(&b.0));
                if let Some(w) = numbers.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(format!(
                        "fields.{path}: values \"{}\" and \"{}\" are the same number; keep one",
                        w[0].1, w[1].1
                    ));
                }
            }
            let boolean = target.read_as == ReadAs::Bool
                || target
                    .values
                    .as_ref()
                    .is_some_and(|v| v.values().any(Json::is_boolean));
            if boolean && target.unit.is_some() {
                return Err(format!(
                    "fields.{path}: a reading that is true or false takes no unit"
                ));
            }
            if target.read_as == ReadAs::Bool && bounded {
                return Err(format!(
                    "fields.{path}: type = \"bool\" takes no scale, min or max"
                ));
            }
            if let Some(c) = &target.context_id {
                if c.trim().is_empty() || c.chars().any(char::is_control) {
                    return Err(format!(
                        "fields.{path}: context_id must be text, not empty nor blank, without \
                         control characters"
                    ));
                }
            }
            if target.health && field == "id" {
                return Err(format!(
                    "fields.{path}: device_health.id is the device's id; choose another field"
                ));
            }
            if !target.health && RECORD_KEYS.contains(&field) {
                return Err(format!(
                    "fields.{path}: \"{field}\" is one of the record's own keys ({}); choose \
                     another field",
                    RECORD_KEYS.join(", ")
                ));
            }
        }
        Ok(t)
    }

    /// Why a record's recType may change from frame to frame: no `rec_type`, and readings
    /// (not device values) that point to more than one recType ([`DOMAINS`]), so each record
    /// takes the most specific its frame has a field of, and one device's records can go to
    /// one hub or another by what each frame holds.
    pub fn unpinned_rec_type(&self) -> Option<String> {
        if self.rec_type.is_some() {
            return None;
        }
        let mapped = self
            .fields
            .values()
            .filter(|t| !t.health)
            .map(|t| t.field.as_str());
        let domains: Vec<&str> = domains_of(mapped).collect();
        (domains.len() > 1).then(|| {
            format!(
                "no rec_type, and its fields map into {}: each record takes the first of these \
                 its frame has a field of, so one device's records can change hub from frame to \
                 frame; set rec_type",
                domains.join(", ")
            )
        })
    }
}

/// Why a text log's `columns` cannot name its entries' values, if they cannot.
fn history_columns(columns: &[String], time: &str) -> Result<(), String> {
    if let Some(c) = columns
        .iter()
        .find(|c| c.is_empty() || c.contains('.') || c.ends_with("[]"))
    {
        return Err(format!(
            "history.columns: {c:?} must be a key of each entry, neither empty nor with a dot \
             or []"
        ));
    }
    if let Some((i, c)) = columns
        .iter()
        .enumerate()
        .find(|(i, c)| columns[..*i].contains(c))
    {
        return Err(format!(
            "history.columns: {c:?} is column {} and {}; name each once",
            columns.iter().position(|o| o == c).unwrap_or(0) + 1,
            i + 1
        ));
    }
    if !columns.iter().any(|c| c == time) {
        return Err(format!(
            "history.columns: none is the time, {time:?}: name its column so"
        ));
    }
    // An entry of nothing but its time is no record.
    if columns.len() == 1 {
        return Err(format!(
            "history.columns: only the time, {time:?}: name a value besides it"
        ));
    }
    Ok(())
}

/// The keys `record::build` puts in a mapped record's `data` over the mapped fields, and
/// `origin` here: a table field of that name would lose its readings or overwrite them.
const RECORD_KEYS: &[&str] = &[ORIGIN, "device_health", "meta", "time", "unpacker"];
/// Moments of their own that one uplink's history entries and normalized measurements may
/// make together (a record each); past them an entry stays under the live record's `origin`
/// (in the history's key) and a measurement unmapped under its `origin.normalized`, its time
/// with it, so a codec returning thousands of entries, or a normalizer stamping every sample
/// of a waveform, makes no more records than a built-in codec's history frame.
const MAX_MOMENTS: usize = 32;
/// A measurement timed this little before the uplink, or after it, is of now (unless a codec's
/// history entry has its time): the time between measuring and sending, or a device clock
/// running ahead.
const NOW_WITHIN: Duration = Duration::from_secs(60);

/// How a rule reads its value.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// A number, or a number written as text.
    Num,
    /// A number as [`Kind::Num`], or a boolean: a table's field without a unit
    /// (`door = { field = "open" }`). A quantity with a unit is never true or false.
    NumOrBool,
    Bool,
    /// A boolean, or a number (or one written as text) that is true unless 0: a table's
    /// `type = "bool"`.
    Flag,
    /// The reading each value gives ([`value_of`]): a table's `values`.
    Values(&'a BTreeMap<String, Json>),
    /// `"open"` / `"closed"` in any ASCII case, spaces around trimmed, and `"close"`
    /// (normalized `action.contactState`).
    OpenState,
    /// A boolean, or the text the schema allows as well (normalized `water.leak`).
    Leak,
}

/// One path of the normalized schema hubgate maps.
struct Builtin {
    path: &'static str,
    /// Microshare's field.
    field: &'static str,
    unit: Option<&'static str>,
    kind: Kind<'static>,
    /// Under `device_health`.
    health: bool,
    /// The numbers it may hold: one outside stays under `origin`, with a warning.
    range: (f64, f64),
}

const ANY: (f64, f64) = (f64::NEG_INFINITY, f64::INFINITY);

const fn builtin(
    path: &'static str,
    field: &'static str,
    unit: Option<&'static str>,
    kind: Kind<'static>,
) -> Builtin {
    Builtin {
        path,
        field,
        unit,
        kind,
        health: false,
        range: ANY,
    }
}

const ABSOLUTE_ZERO: f64 = -273.15;

/// The normalized schema's paths hubgate maps, with bounds: a sensor's "no reading" (humidity
/// 127), a value in the wrong unit (pressure in Pa) or a position off the globe is no
/// reading. Each bound says where it comes from: The Things Network's schema is
/// `lib/payload.json` of its Device Repository.
const NORMALIZED: &[Builtin] = &[
    // The schema's bounds.
    Builtin {
        range: (ABSOLUTE_ZERO, f64::INFINITY),
        ..builtin("air.temperature", "temperature", Some("°C"), Kind::Num)
    },
    Builtin {
        range: (0.0, 100.0),
        ..builtin("air.relativeHumidity", "humidity", Some("%RH"), Kind::Num)
    },
    // hubgate's own: the schema's 900 hPa is the air at about 1000 m, below the sites of
    // whole cities (Denver's 835 hPa); 300 is above the highest summit's, and still refuses
    // pressure in kPa (101.3) and in Pa (101325).
    Builtin {
        range: (300.0, 1100.0),
        ..builtin("air.pressure", "pressure", Some("hPa"), Kind::Num)
    },
    // The schema's bounds.
    Builtin {
        range: (0.0, 1e6),
        ..builtin("air.co2", "co2", Some("ppm"), Kind::Num)
    },
    Builtin {
        range: (0.0, f64::INFINITY),
        ..builtin("air.lightIntensity", "illuminance", Some("lx"), Kind::Num)
    },
    builtin("action.motion.detected", "presence", None, Kind::Bool),
    builtin("action.motion.count", "motion_count", None, Kind::Num),
    builtin("action.contactState", "open", None, Kind::OpenState),
    builtin("water.leak", "leak", None, Kind::Leak),
    // The schema's water temperature is `{min, max, avg, current}`, each bounded as a
    // temperature; the reading is the current one (the rest stays under `origin`). A plain
    // number is read as well.
    Builtin {
        range: (ABSOLUTE_ZERO, f64::INFINITY),
        ..builtin(
            "water.temperature.current",
            "water_temperature",
            Some("°C"),
            Kind::Num,
        )
    },
    Builtin {
        range: (ABSOLUTE_ZERO, f64::INFINITY),
        ..builtin(
            "water.temperature",
            "water_temperature",
            Some("°C"),
            Kind::Num,
        )
    },
    // The globe's: the schema gives the position no bounds.
    Builtin {
        range: (-90.0, 90.0),
        ..builtin("position.latitude", "lat", Some("°"), Kind::Num)
    },
    Builtin {
        range: (-180.0, 180.0),
        ..builtin("position.longitude", "lon", Some("°"), Kind::Num)
    },
    builtin("position.altitude", "altitude", Some("m"), Kind::Num),
];

/// The schema's `battery` read as volts (its unit, bounded by the schema at 0 or more; the
/// 60 V bound is hubgate's own), unless a table's `normalized_battery` or the device's brand
/// says otherwise ([`battery_rule`]). 60 V keeps every battery a sensor runs on, 12, 24 and
/// 48 V systems too (a 48 V lead-acid bank charges at up to about 58 V), and still refuses
/// millivolts (3600 for 3.6 V) and a charge in percent above 60.
const BATTERY_VOLTS: Builtin = Builtin {
    health: true,
    range: (0.0, 60.0),
    ..builtin("battery", "voltage", Some("V"), Kind::Num)
};

/// The schema's `battery` read as a charge in percent (`normalized_battery = "charge"`).
const BATTERY_CHARGE: Builtin = Builtin {
    health: true,
    range: (0.0, 100.0),
    ..builtin("battery", "charge", Some("%"), Kind::Num)
};

/// What the normalized `battery` of the devices of a brand of The Things Network's Device
/// Repository (TTS `version_ids.brand_id`) is, where neither their mapping table nor
/// `[codecs.normalized_battery]` says. Milesight's devices report the battery as a level in
/// percent (channel `01 75`), and the Repository's Milesight normalizers copy the decoder's
/// `battery`, that level, into the schema's volts.
const BRANDS: &[(&str, NormalizedBattery)] = &[("milesight-iot", NormalizedBattery::Charge)];

/// A device's brand in The Things Network's Device Repository (TTS `version_ids.brand_id`),
/// and what its normalized `battery` is by it.
#[derive(Debug, Clone, Copy)]
pub struct Brand<'a> {
    pub id: &'a str,
    /// What `[codecs.normalized_battery]` says of the brand, else hubgate's own knowledge
    /// ([`BRANDS`]); none for a brand neither knows.
    pub battery: Option<NormalizedBattery>,
}

/// The brand `id` of a device, if it has one, with what `configured`
/// (`[codecs.normalized_battery]`) or hubgate knows of its normalized `battery` ([`Brand`]).
pub fn brand<'a>(
    id: Option<&'a str>,
    configured: &BTreeMap<String, NormalizedBattery>,
) -> Option<Brand<'a>> {
    let id = id?;
    let battery = configured.get(id).copied().or_else(|| {
        BRANDS
            .iter()
            .find(|(b, _)| *b == id)
            .map(|(_, battery)| *battery)
    });
    Some(Brand { id, battery })
}

/// The rule for the normalized `battery` a `normalized_battery` gives, none for `"skip"`.
fn battery_rule(battery: Option<NormalizedBattery>) -> Option<&'static Builtin> {
    match battery {
        None | Some(NormalizedBattery::Voltage) => Some(&BATTERY_VOLTS),
        Some(NormalizedBattery::Charge) => Some(&BATTERY_CHARGE),
        Some(NormalizedBattery::Skip) => None,
    }
}

/// The one name of a quantity that fields of several names hold: a count of motions is one
/// count whatever it counts from.
fn quantity(field: &str) -> &str {
    match field {
        // The schema's motion count says not since when; the built-in codecs' names do.
        "motions_since_reset" | "motions_since_transmit" => "motion_count",
        other => other,
    }
}

/// The recType a field points to, most specific first: a frame with a leak reading is a
/// leak record even if it also has a temperature.
const DOMAINS: &[(&str, &[&str])] = &[
    (rec_type::LEAK, &["leak"]),
    (rec_type::OPENCLOSE, &["open"]),
    (rec_type::MOTION, &["presence", "motion_count"]),
    (rec_type::GPS, &["lat", "lon", "altitude"]),
    // With the names the built-in codecs give the same quantities (`voc`, `iaq`, ...).
    (
        rec_type::ENVIRONMENT,
        &[
            "temperature",
            "humidity",
            "co2",
            "pressure",
            "tvoc",
            "voc",
            "iaq",
            "pm2_5",
            "pm10",
            "formaldehyde",
            "ozone",
            "water_temperature",
        ],
    ),
    (rec_type::LIGHT, &["illuminance"]),
];

/// The recType of readings with these field names: that of the first entry of [`DOMAINS`]
/// one of them is in (most specific first), `None` when none is in any. The one choice for
/// a decoded object's fields and for a built-in codec that decides per frame (Cayenne LPP).
pub fn rec_type_of<'a, I>(fields: I) -> Option<&'static str>
where
    I: IntoIterator<Item = &'a str> + Clone,
{
    domains_of(fields).next()
}

/// Every recType [`rec_type_of`] can choose for readings among these field names, in
/// [`DOMAINS`]'s order.
fn domains_of<'a, I>(fields: I) -> impl Iterator<Item = &'static str>
where
    I: IntoIterator<Item = &'a str> + Clone,
{
    DOMAINS
        .iter()
        .filter(move |(_, domain)| fields.clone().into_iter().any(|f| domain.contains(&f)))
        .map(|(r, _)| *r)
}

/// A decoded object in Microshare's shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    pub rec_type: String,
    /// Field -> `[{value, unit}, ...]`, and `origin` with what mapped nowhere.
    pub data: Map<String, Json>,
    /// Field -> `[{value, unit}, ...]` under `device_health`.
    pub health: Map<String, Json>,
    /// Readings of a time of their own, not the uplink's: the entries of the codec's history
    /// (a table's `[history]`), one each in their order, then normalized measurements, by
    /// time in the order first met (one of an entry's time joins it): a record each, as a
    /// built-in codec's history.
    pub history: Vec<Moment>,
    /// Normalized values outside their bounds (a battery of 100 V), kept under `origin`: one
    /// line each.
    pub warnings: Vec<String>,
}

/// The readings of one time other than the uplink's (a history entry's, normalized
/// measurements'); `data` and `health` as in [`Mapped`] (what mapped nowhere under `origin`,
/// normalized values under `origin.normalized`).
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    pub time: SystemTime,
    pub data: Map<String, Json>,
    pub health: Map<String, Json>,
}

impl Mapped {
    /// Whether any field was mapped (else everything is under `origin`).
    pub fn has_readings(&self) -> bool {
        self.data.keys().any(|k| k != ORIGIN) || !self.health.is_empty()
    }
}

/// The deepest object (levels of objects and arrays, its own included) decoded elsewhere that
/// is carried into a record. The record puts an object's keys under `data.origin`, 3 levels
/// down, and a normalized measurement's under `origin.normalized[i]`, 5 down; serde_json, and
/// consumers with its defaults, read no text nested deeper than 127 levels. A deeper object
/// would make a record those refuse; real decoders nest a few levels.
pub const MAX_DEPTH: usize = 64;

/// Levels of objects and arrays in `v`: 0 for a scalar, 1 for `{}` or `[1]`.
pub fn depth(v: &Json) -> usize {
    match v {
        Json::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Json::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Where unmapped fields go; the unmapped part of a normalized payload goes under
/// `origin.normalized`, an array with one element per measurement.
pub const ORIGIN: &str = "origin";

/// Map a codec's own object with its `table` (none: everything goes under `origin`), its
/// history entries (the table's `[history]`) into [`Mapped::history`], and
/// normalized measurements with the built-in table, their `battery` as the table's
/// `normalized_battery` says, else as the device's `brand` does, else as volts; a measurement
/// whose `time` (RFC 3339) is not `now`, the uplink's, goes into [`Mapped::history`].
pub fn map(
    object: Option<&Map<String, Json>>,
    table: Option<&Table>,
    brand: Option<Brand>,
    normalized: &[Map<String, Json>],
    now: SystemTime,
) -> Mapped {
    let mut m = Mapped::default();
    let mut origin = Map::new();
    if let Some(object) = object {
        // The keys ending in `[]`, by the array's own key, looked up with no key made.
        let arrays: BTreeMap<&str, &Target> = table
            .iter()
            .flat_map(|t| &t.fields)
            .filter_map(|(k, t)| Some((k.strip_suffix("[]")?, t)))
            .collect();
        let rule = |path: &str| {
            let one = table.and_then(|t| t.fields.get(path)).map(|t| (t, false));
            one.or_else(|| arrays.get(path).map(|t| (*t, true)))
                .map(|(t, each)| Rule {
                    field: &t.field,
                    unit: t.unit.as_deref(),
                    kind: match (&t.values, t.read_as) {
                        (Some(values), _) => Kind::Values(values),
                        (None, ReadAs::Bool) => Kind::Flag,
                        (None, ReadAs::Number) if t.unit.is_none() => Kind::NumOrBool,
                        (None, ReadAs::Number) => Kind::Num,
                    },
                    scale: t.scale,
                    health: t.health,
                    range: (
                        t.min.unwrap_or(f64::NEG_INFINITY),
                        t.max.unwrap_or(f64::INFINITY),
                    ),
                    ignore: &t.ignore,
                    context_id: t.context_id.as_deref(),
                    context_base: t.context_base.unwrap_or(0),
                    each,
                    copy_of: None,
                    fix: Fix::None,
                    warn: false,
                })
        };
        let history = table.and_then(|t| t.history.as_ref());
        let keys = history.map_or(&[][..], HistoryTable::keys);
        let out = (&mut m.data, &mut m.health, &mut m.warnings);
        walk(object, None, &rule, out, &mut origin, keys);
        if let (Some(h), Some(entries)) = (history, value_at(object, keys)) {
            if let Some(left) = codec_history(entries, h, &rule, &mut m) {
                put_at(&mut origin, keys, left);
            }
        }
    }
    // The fields each entry of the codec's history mapped: a normalized measurement of its
    // time is a copy of the same entry (a normalizer's), as one of now is of the object.
    let entry_own: Vec<std::collections::BTreeSet<String>> = m
        .history
        .iter()
        .map(|h| {
            let fields = h.data.keys().chain(h.health.keys());
            fields.map(|k| quantity(k).to_string()).collect()
        })
        .collect();
    // The Things Stack's `decoded_payload` and `normalized_payload`, like a JavaScript codec's
    // `data` and `normalizeUplink`, are one decoder's values twice: a field the codec's own
    // object mapped is not read again from the normalized measurements (it stays under
    // `origin.normalized`), or one probe would look like two.
    let own: std::collections::BTreeSet<String> = m
        .data
        .keys()
        .chain(m.health.keys())
        .map(|k| quantity(k).to_string())
        .collect();
    let battery = table
        .and_then(|t| t.normalized_battery)
        .or(brand.and_then(|b| b.battery));
    let unset = battery.is_none();
    // The codec's top-level `battery` the table reads as the charge, where neither the table
    // nor the brand says what the normalized one is: a normalizer copying it
    // (Milesight's) gives the same number, which is that charge again, not volts.
    let charge_copy = table
        .filter(|t| unset && t.fields.get("battery").is_some_and(|f| f.field == "charge"))
        .and_then(|_| object?.get("battery"))
        .and_then(raw_number);
    // The unmapped parts of the measurements of now ([`put_normalized`]).
    let mut normalized_origin = Vec::with_capacity(normalized.len());
    // Per moment of `m.history`, its measurements' unmapped parts.
    let mut history_origin: Vec<Vec<Json>> = vec![Vec::new(); m.history.len()];
    for n in normalized {
        // A copy of a history entry joins it whatever its time (a device clock ahead
        // stamps entries after the uplink); else the codec's own object is of now: the
        // copies it holds are of now too.
        let time = measured_at(n);
        let of_now = !time.is_some_and(|t| now.duration_since(t).is_ok_and(|d| d > NOW_WITHIN));
        let at = time.filter(|t| {
            !of_now
                || m.history[..entry_own.len()]
                    .iter()
                    .any(|h| same_ms(h.time, *t))
        });
        let moment = match at {
            // A measurement of nothing but its time is no record.
            Some(_) if n.len() == 1 => None,
            None => None,
            Some(time) => match m.history.iter().position(|h| same_ms(h.time, time)) {
                Some(i) => Some(i),
                None if m.history.len() < MAX_MOMENTS => {
                    m.history.push(Moment {
                        time,
                        data: Map::new(),
                        health: Map::new(),
                    });
                    history_origin.push(Vec::new());
                    Some(m.history.len() - 1)
                }
                None => {
                    normalized_origin.push(Json::Object(n.clone()));
                    continue;
                }
            },
        };
        let rule = |path: &str| {
            NORMALIZED
                .iter()
                .chain(battery_rule(battery))
                .find(|b| {
                    let q = quantity(b.field);
                    b.path == path
                        && match moment {
                            None => !own.contains(q),
                            // One of now joining an entry of its time may be a copy of
                            // either: of the live object too.
                            Some(i) => {
                                let entry = entry_own.get(i).is_some_and(|e| e.contains(q));
                                !(entry || of_now && own.contains(q))
                            }
                        }
                })
                .map(|b| Rule {
                    field: b.field,
                    unit: b.unit,
                    kind: b.kind,
                    scale: 1.0,
                    health: b.health,
                    range: b.range,
                    ignore: &[],
                    context_id: None,
                    context_base: 0,
                    each: false,
                    copy_of: charge_copy.filter(|_| moment.is_none() && b.path == "battery"),
                    fix: if unset && b.path == "battery" {
                        Fix::Battery(brand.map(|b| b.id))
                    } else {
                        Fix::None
                    },
                    warn: true,
                })
        };
        let mut left = Map::new();
        let (data, health, unmapped) = match moment {
            None => (&mut m.data, &mut m.health, &mut normalized_origin),
            Some(i) => {
                let h = &mut m.history[i];
                (&mut h.data, &mut h.health, &mut history_origin[i])
            }
        };
        walk(
            n,
            None,
            &rule,
            (data, health, &mut m.warnings),
            &mut left,
            &[],
        );
        // The time read is the record's `time`.
        if measured_at(n).is_some_and(|t| moment.is_some() || same_ms(t, now)) {
            left.remove("time");
        }
        unmapped.push(Json::Object(left));
    }
    for (h, unmapped) in m.history.iter_mut().zip(history_origin) {
        // A history entry's own unmapped fields are there already.
        let mut origin = match h.data.remove(ORIGIN) {
            Some(Json::Object(o)) => o,
            _ => Map::new(),
        };
        put_normalized(&mut origin, unmapped);
        if !origin.is_empty() {
            h.data.insert(ORIGIN.into(), Json::Object(origin));
        }
    }
    put_normalized(&mut origin, normalized_origin);
    if !origin.is_empty() {
        m.data.insert(ORIGIN.into(), Json::Object(origin));
    }
    m.rec_type = match table.and_then(|t| t.rec_type.clone()) {
        Some(r) => r,
        None => {
            let fields = m
                .data
                .keys()
                .chain(m.history.iter().flat_map(|h| h.data.keys()))
                .map(String::as_str);
            rec_type_of(fields)
                .unwrap_or(rec_type::UNMAPPED)
                .to_string()
        }
    };
    m
}

/// The unmapped parts of normalized measurements (one element each, `{}` where everything
/// mapped, so that two with the same unmapped field both stay) under `origin.normalized`, or
/// a free variant of it if the codec's own object has that key; nothing if all mapped.
fn put_normalized(origin: &mut Map<String, Json>, unmapped: Vec<Json>) {
    if unmapped
        .iter()
        .any(|o| o.as_object().is_some_and(|o| !o.is_empty()))
    {
        let mut key = String::from("normalized");
        while origin.contains_key(&key) {
            key.push('_');
        }
        origin.insert(key, Json::Array(unmapped));
    }
}

/// A normalized measurement's own `time` (The Things Network's schema: "Date and time of the
/// measurement", RFC 3339), when it is one a record can carry.
fn measured_at(n: &Map<String, Json>) -> Option<SystemTime> {
    crate::format::parse_time(n.get("time")?.as_str()?).ok()
}

/// The value at `keys` in `object`, each key but the last an object's.
fn value_at<'o>(object: &'o Map<String, Json>, keys: &[String]) -> Option<&'o Json> {
    let (last, outer) = keys.split_last()?;
    let inner = outer
        .iter()
        .try_fold(object, |o, k| o.get(k)?.as_object())?;
    inner.get(last)
}

/// `v` into `origin` at `keys`, the objects on the way made where [`walk`] left none (all
/// their other fields mapped).
fn put_at(origin: &mut Map<String, Json>, keys: &[String], v: Json) {
    let Some((last, outer)) = keys.split_last() else {
        return;
    };
    let mut o = origin;
    for k in outer {
        let inner = o.entry(k).or_insert_with(|| Json::Object(Map::new()));
        // `walk` keeps an object as one.
        let Json::Object(inner) = inner else {
            return;
        };
        o = inner;
    }
    o.insert(last.clone(), v);
}

/// A codec's history entry as [`codec_history`] reads it: its fields (an array's object, a
/// text log's entry by its columns; none if it is neither), and a text log's entry as
/// written.
struct Entry<'e> {
    i: usize,
    fields: Option<&'e Map<String, Json>>,
    piece: Option<&'e str>,
}

/// How many of a codec's history entries made no record, and why, for its warnings.
#[derive(Default)]
struct Unmade {
    /// Entries without a time read, the first of them with why.
    untimed: usize,
    first: String,
    /// Entries past [`MAX_MOMENTS`].
    past: usize,
    /// A text log's entries past [`MAX_LOG_READ`], not read.
    unread: usize,
}

/// A text log's entries read for records at most: its rest, however long, is kept under
/// `origin` unread, so that a log of empty entries costs no more than [`MAX_NS_VALUES`]
/// values do.
///
/// [`MAX_NS_VALUES`]: crate::format::MAX_NS_VALUES
const MAX_LOG_READ: usize = crate::format::MAX_NS_VALUES;

/// When a history entry was measured: a time, or a text log's date and time of its zone,
/// turned into a time only for an entry that makes a record.
enum When {
    At(SystemTime),
    Wall(time::PrimitiveDateTime, Zone),
}

/// When the history entry's time `v` is: as [`entry_time`] reads it, or, where the table
/// has a text log's `zone`, a date and time of it (`2024-05-01 09:50:00`).
fn when(v: &Json, zone: Option<Zone>) -> Option<When> {
    if let Some(t) = entry_time(v) {
        return Some(When::At(t));
    }
    let zone = zone?;
    Some(When::Wall(datalog::wall_clock(v.as_str()?)?, zone))
}

/// Map a codec's history `entries` (a table's `[history]`: an array, or with `columns` a text
/// log) into [`Mapped::history`], a moment per entry in their order, each entry's fields by
/// `rule`, its unmapped ones under its own `origin`. What makes no record is returned, to stay
/// under `origin` (the live record's) in the history's key, in its order (a text log's
/// entries as written, joined by commas): an entry of nothing but its time quietly; with a
/// warning, one that is no object (a text log's: not one value per column) or whose time is
/// none it reads, and those past [`MAX_MOMENTS`] (a text log's: all its entries after them,
/// unread, and those past [`MAX_LOG_READ`]).
fn codec_history<'a>(
    entries: &Json,
    h: &HistoryTable,
    rule: &dyn Fn(&str) -> Option<Rule<'a>>,
    m: &mut Mapped,
) -> Option<Json> {
    let mut unmade = Unmade::default();
    let left = match (entries, &h.columns) {
        (Json::Array(list), None) => {
            let mut left = Vec::new();
            for (i, v) in list.iter().enumerate() {
                let entry = Entry {
                    i,
                    fields: v.as_object(),
                    piece: None,
                };
                if !history_moment(entry, h, rule, m, &mut unmade) {
                    left.push(v.clone());
                }
            }
            (!left.is_empty()).then_some(Json::Array(left))
        }
        (Json::String(log), Some(columns)) => {
            let mut left = String::new();
            let mut keep = |piece: &str| {
                if !left.is_empty() {
                    left.push(',');
                }
                left.push_str(piece);
            };
            let mut pieces = datalog::pieces(log).enumerate();
            for (i, piece) in pieces.by_ref() {
                if m.history.len() >= MAX_MOMENTS || i >= MAX_LOG_READ {
                    // The rest as written, counted, each piece found without reading it.
                    let rest = std::iter::once(piece).chain(pieces.by_ref().map(|(_, p)| p));
                    let n = rest.map(&mut keep).count();
                    if m.history.len() >= MAX_MOMENTS {
                        unmade.past += n;
                    } else {
                        unmade.unread += n;
                    }
                    break;
                }
                let fields = datalog::values(piece, columns);
                let entry = Entry {
                    i,
                    fields: fields.as_ref(),
                    piece: Some(piece),
                };
                if !history_moment(entry, h, rule, m, &mut unmade) {
                    keep(piece);
                }
            }
            (!left.is_empty()).then_some(Json::String(left))
        }
        (other, columns) => {
            let what = match (other, columns) {
                (_, Some(_)) => "not a text log of entries",
                (Json::String(_), None) => {
                    "text, not an array of entries (a text log needs columns in [history])"
                }
                _ => "not an array of entries",
            };
            m.warnings
                .push(format!("{}: {what}, kept under origin", h.path));
            return Some(entries.clone());
        }
    };
    let entries = |n: usize| {
        let s = if n == 1 { "y" } else { "ies" };
        format!("{n} {} entr{s}", h.path)
    };
    if unmade.untimed > 0 {
        let forms = match h.zone {
            None => "Unix seconds or RFC 3339",
            Some(Zone::Utc) => "Unix seconds, RFC 3339 or a UTC date and time",
            Some(Zone::Local) => "Unix seconds, RFC 3339 or a local date and time",
        };
        m.warnings.push(format!(
            "{} without a time read as {forms} (the first: {}), kept under origin",
            entries(unmade.untimed),
            unmade.first,
        ));
    }
    if unmade.past > 0 {
        m.warnings.push(format!(
            "{} past the {MAX_MOMENTS} records of their own time an uplink makes, kept under \
             origin",
            entries(unmade.past),
        ));
    }
    if unmade.unread > 0 {
        m.warnings.push(format!(
            "{} past the {MAX_LOG_READ} of a text log read for records, kept under origin",
            entries(unmade.unread),
        ));
    }
    left
}

/// The record of the history `entry`, pushed to `m.history` (true), or why it makes none,
/// counted in `unmade` (false).
fn history_moment<'a>(
    entry: Entry,
    h: &HistoryTable,
    rule: &dyn Fn(&str) -> Option<Rule<'a>>,
    m: &mut Mapped,
    unmade: &mut Unmade,
) -> bool {
    let Entry { i, fields, piece } = entry;
    let t = fields.map(|o| o.get(&h.time));
    let time = t.flatten().and_then(|t| when(t, h.zone));
    let (Some(fields), Some(time)) = (fields, time) else {
        if unmade.untimed == 0 {
            unmade.first = match (piece, t) {
                (None, None) => format!("{}[{i}] is no object", h.path),
                (Some(piece), None) => format!(
                    "{}[{i}] \"{}\" is not [{}]",
                    h.path,
                    clipped(&piece, 40).escape_debug(),
                    h.columns.as_deref().unwrap_or_default().join(",")
                ),
                (_, Some(None)) => format!("{}[{i}] has no {}", h.path, h.time),
                (_, Some(Some(t))) => {
                    // `Date.now()` is milliseconds.
                    let ms = t
                        .as_f64()
                        .is_some_and(|x| entry_time(&(x / 1000.0).into()).is_some());
                    let ms = if ms { ", milliseconds?" } else { "" };
                    let t = clipped(t, 40);
                    format!("{}[{i}].{} {t}{ms}", h.path, h.time)
                }
            };
        }
        unmade.untimed += 1;
        return false;
    };
    // An entry of nothing but its time is no record.
    if fields.len() == 1 {
        return false;
    }
    if m.history.len() >= MAX_MOMENTS {
        unmade.past += 1;
        return false;
    }
    let time = match time {
        When::At(t) => t,
        When::Wall(wall, zone) => match datalog::in_zone(wall, zone) {
            Ok(t) => t,
            Err(why) => {
                if unmade.untimed == 0 {
                    let t = clipped(&fields[&h.time], 40);
                    unmade.first = format!("{}[{i}].{} {t} {why}", h.path, h.time);
                }
                unmade.untimed += 1;
                return false;
            }
        },
    };
    let mut moment = Moment {
        time,
        data: Map::new(),
        health: Map::new(),
    };
    let mut unmapped = Map::new();
    let out = (&mut moment.data, &mut moment.health, &mut m.warnings);
    walk(
        fields,
        None,
        rule,
        out,
        &mut unmapped,
        std::slice::from_ref(&h.time),
    );
    if !unmapped.is_empty() {
        moment.data.insert(ORIGIN.into(), Json::Object(unmapped));
    }
    m.history.push(moment);
    true
}

/// `v` as it displays, cut to `max` bytes (at a character's end) and `…` if longer: written
/// no further, so that a huge value (a time key holding a nested array) is not written whole
/// to show its start.
fn clipped(v: &dyn std::fmt::Display, max: usize) -> String {
    struct Upto {
        text: String,
        max: usize,
        full: bool,
    }
    impl std::fmt::Write for Upto {
        fn write_str(&mut self, part: &str) -> std::fmt::Result {
            // Past the cut the text, `…` included, may be longer than `max`: nothing more
            // is written, whatever a writer that goes on after an error asks.
            if self.full {
                return Err(std::fmt::Error);
            }
            let room = self.max - self.text.len();
            if part.len() <= room {
                self.text.push_str(part);
                return Ok(());
            }
            let end = (0..=room).rev().find(|&n| part.is_char_boundary(n));
            self.text.push_str(&part[..end.unwrap_or(0)]);
            self.text.push('…');
            self.full = true;
            Err(std::fmt::Error)
        }
    }
    let mut upto = Upto {
        text: String::new(),
        max,
        full: false,
    };
    // Its error only says the text was cut.
    let _ = std::fmt::write(&mut upto, format_args!("{v}"));
    upto.text
}

/// The time of a codec's history entry: Unix seconds (Milesight's decoders' `timestamp`;
/// `1.7e9` as a network server may write it too; a fraction to the millisecond, the most a
/// record's time shows, as [`unix_ms`] reads it), or RFC 3339 text (The Things Network's
/// schema's `time`), if a record can carry it.
fn entry_time(v: &Json) -> Option<SystemTime> {
    let t = match v {
        Json::Number(n) => {
            // Below 1e15 s the milliseconds fit a u64.
            let secs = n.as_f64().filter(|x| (0.0..1e15).contains(x))?;
            UNIX_EPOCH.checked_add(Duration::from_millis(unix_ms(secs)))?
        }
        Json::String(text) => crate::format::parse_time(text).ok()?,
        _ => return None,
    };
    crate::uplink::valid_time(t).then_some(t)
}

/// Unix seconds `secs` (0 to 1e15) in whole milliseconds, as a record's time and an RFC 3339
/// time of the same digits ([`same_ms`]) have them: truncated, after rounding to the
/// microsecond, since f64 holds a fraction such as `Date.now() / 1000`'s only nearly
/// (`.123` is `.12299…`). From 2^33 s (the year 2242) f64 holds no microseconds; there the
/// milliseconds are rounded, which keeps a whole one exact.
fn unix_ms(secs: f64) -> u64 {
    let whole = secs.trunc();
    // Exact, and below 1 s, where f64 holds the microseconds.
    let fraction = secs - whole;
    let ms = if secs < 8_589_934_592.0 {
        (fraction * 1e6).round() as u64 / 1000
    } else {
        (fraction * 1e3).round() as u64
    };
    whole as u64 * 1000 + ms
}

/// Whether `a` and `b` are one time to a record, which shows milliseconds.
fn same_ms(a: SystemTime, b: SystemTime) -> bool {
    crate::record::ms_since_epoch(a) == crate::record::ms_since_epoch(b)
}

/// What the warning about a number above a rule's range adds.
#[derive(Clone, Copy)]
enum Fix<'a> {
    None,
    /// How to say that a normalized `battery` is a charge in percent, which some normalizers
    /// put there, where neither the table nor the device's brand (here if it has one) says
    /// what it is.
    Battery(Option<&'a str>),
}

impl std::fmt::Display for Fix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let Fix::Battery(brand) = self else {
            return Ok(());
        };
        f.write_str(
            "; a charge in percent there needs normalized_battery = \"charge\" in the mapping \
             table",
        )?;
        match brand {
            Some(brand) => write!(
                f,
                ", or {brand:?} = \"charge\" in [codecs.normalized_battery] for the device's brand"
            ),
            None => Ok(()),
        }
    }
}

struct Rule<'a> {
    field: &'a str,
    unit: Option<&'a str>,
    kind: Kind<'a>,
    scale: f64,
    health: bool,
    /// The readings it may give (after `scale`): a number outside stays unmapped.
    range: (f64, f64),
    /// Numbers that mean no reading (before `scale`): they stay unmapped.
    ignore: &'a [f64],
    /// The reading's channel.
    context_id: Option<&'a str>,
    /// An array's items' channels: its first item's, the next one more.
    context_base: u32,
    /// It reads an array of values (a table key ending in `[]`), a reading per item.
    each: bool,
    /// A number that is a copy of a value read already: it stays unmapped, quietly.
    copy_of: Option<f64>,
    /// Added to the warning about a number above `range`.
    fix: Fix<'a>,
    /// A number outside `range` is warned about.
    warn: bool,
}

/// Why a value was not read.
enum Miss {
    /// It is not of the rule's kind, or is one of its numbers for no reading.
    Unread,
    /// The number it gives is outside the rule's range.
    Outside(f64),
}

/// Map `obj`'s fields by `rule` into `out`'s readings and device values, warning about
/// numbers out of range; the rest into `origin`, but for the field at the keys `skip` (none if
/// empty), read elsewhere. `prefix` is the path of `obj`, `None` at the top: an object under
/// the key `""` has the path `""`, so its `pir` is `.pir`, not `pir`.
fn walk<'a>(
    obj: &Map<String, Json>,
    prefix: Option<&str>,
    rule: &dyn Fn(&str) -> Option<Rule<'a>>,
    out: (
        &mut Map<String, Json>,
        &mut Map<String, Json>,
        &mut Vec<String>,
    ),
    origin: &mut Map<String, Json>,
    skip: &[String],
) {
    let (data, health, warnings) = out;
    for (key, v) in obj {
        if skip == std::slice::from_ref(key) {
            continue;
        }
        let path = match prefix {
            None => key.clone(),
            Some(prefix) => format!("{prefix}.{key}"),
        };
        if let Json::Object(inner) = v {
            let mut sub = Map::new();
            let out = (&mut *data, &mut *health, &mut *warnings);
            let below = match skip.split_first() {
                Some((k, below)) if k == key => below,
                _ => &[],
            };
            walk(inner, Some(&path), rule, out, &mut sub, below);
            // An object left empty by mapping goes; one empty to begin with is unmapped.
            if !sub.is_empty() || inner.is_empty() {
                origin.insert(key.clone(), Json::Object(sub));
            }
            continue;
        }
        let Some(r) = rule(&path) else {
            origin.insert(key.clone(), v.clone());
            continue;
        };
        if r.each {
            let out = (&mut *data, &mut *health, &mut *warnings);
            if !each(&path, v, &r, out) {
                origin.insert(key.clone(), v.clone());
            }
            continue;
        }
        match reading(&r, v, r.context_id) {
            Ok(json) => put(&r, json, data, health),
            Err(miss) => {
                if let (Miss::Outside(x), true) = (miss, r.warn) {
                    warnings.push(outside(&path, x, &r));
                }
                origin.insert(key.clone(), v.clone());
            }
        }
    }
}

/// `json`, read by `r`, after its field's readings (or device values) in `data` (`health`).
fn put(r: &Rule, json: Json, data: &mut Map<String, Json>, health: &mut Map<String, Json>) {
    let dest = if r.health { health } else { data };
    if let Json::Array(list) = dest
        .entry(r.field.to_string())
        .or_insert_with(|| Json::Array(Vec::new()))
    {
        list.push(json);
    }
}

/// The most items of an array (a table key ending in `[]`) that are read: an Elsys Grid-EYE's
/// 64 pixels, the longest run of one quantity a built-in codec reads from a frame.
const MAX_ITEMS: usize = 64;

/// Read each item of the array `v` at `path` (or `v` itself, one value: Elsys's decoder gives
/// one probe as a number, several as an array) by `r` into `out`, its `context_id` its index
/// from `r.context_base`: whether all of it was read. An array past [`MAX_ITEMS`] gives the
/// readings of its first items, with a warning.
fn each(
    path: &str,
    v: &Json,
    r: &Rule,
    out: (
        &mut Map<String, Json>,
        &mut Map<String, Json>,
        &mut Vec<String>,
    ),
) -> bool {
    let (data, health, warnings) = out;
    let items = match v {
        Json::Array(items) => items.as_slice(),
        one => std::slice::from_ref(one),
    };
    let mut all = !items.is_empty();
    for (i, item) in items.iter().take(MAX_ITEMS).enumerate() {
        let context = (u64::from(r.context_base) + i as u64).to_string();
        match reading(r, item, Some(&context)) {
            Ok(json) => put(r, json, data, health),
            Err(_) => all = false,
        }
    }
    if items.len() > MAX_ITEMS {
        warnings.push(format!(
            "{path}: an array of {} items, the first {MAX_ITEMS} read, the whole of it kept \
             under origin",
            items.len()
        ));
        all = false;
    }
    all
}

/// The warning for a normalized `x` at `path` outside `r`'s range.
fn outside(path: &str, x: f64, r: &Rule) -> String {
    let (min, max) = r.range;
    let (side, bound, fix) = if x < min {
        ("below", min, Fix::None)
    } else {
        ("above", max, r.fix)
    };
    let unit = r.unit.map(|u| format!(" {u}")).unwrap_or_default();
    format!("normalized {path} {x} is {side} {bound}{unit}, kept under origin{fix}")
}

/// `{context_id, value, unit}` of `v` read by `r`.
fn reading(r: &Rule, v: &Json, context_id: Option<&str>) -> Result<Json, Miss> {
    let value = match (r.kind, v) {
        // Vendor codecs often return text (`(x / 10).toFixed(1)` is "21.5"): the whole text
        // is the number, else it stays unmapped. NaN and infinities parse but are no number.
        (Kind::Num | Kind::NumOrBool, Json::Number(_) | Json::String(_)) => {
            let raw = raw_number(v).ok_or(Miss::Unread)?;
            if ignored(r.ignore, raw) {
                return Err(Miss::Unread);
            }
            let x = scaled(raw, r.scale);
            if !x.is_finite() {
                return Err(Miss::Unread);
            }
            if r.copy_of == Some(x) {
                return Err(Miss::Unread);
            }
            if !(r.range.0..=r.range.1).contains(&x) {
                return Err(Miss::Outside(x));
            }
            match v {
                // A whole number as it is: through f64, one past 2^53 (a counter) would change.
                Json::Number(n) if r.scale == 1.0 && !n.is_f64() => Json::Number(n.clone()),
                _ => number(x).ok_or(Miss::Unread)?,
            }
        }
        (Kind::NumOrBool | Kind::Bool | Kind::Flag | Kind::Leak, Json::Bool(b)) => Json::Bool(*b),
        (Kind::Flag, Json::Number(_) | Json::String(_)) => {
            let raw = raw_number(v).ok_or(Miss::Unread)?;
            if ignored(r.ignore, raw) {
                return Err(Miss::Unread);
            }
            Json::Bool(raw != 0.0)
        }
        (Kind::Values(values), _) => value_of(values, v).cloned().ok_or(Miss::Unread)?,
        // The schema's values are `open` and `closed`; older Milesight normalizers wrote
        // them upper case, and `CLOSE` for closed.
        (Kind::OpenState, Json::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "open" => Json::Bool(true),
            "closed" | "close" => Json::Bool(false),
            _ => return Err(Miss::Unread),
        },
        // The schema allows any text; these words, hubgate's choice, are the ones normalizers
        // use for the two states.
        (Kind::Leak, Json::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "leak" | "detected" => Json::Bool(true),
            "false" | "no" | "normal" | "no leak" => Json::Bool(false),
            _ => return Err(Miss::Unread),
        },
        _ => return Err(Miss::Unread),
    };
    let mut m = Map::new();
    if let Some(c) = context_id {
        m.insert("context_id".into(), Json::String(c.into()));
    }
    if let Some(u) = r.unit {
        m.insert("unit".into(), Json::String(u.into()));
    }
    m.insert("value".into(), value);
    Ok(Json::Object(m))
}

/// The finite number `v` is, or writes as text (spaces around it trimmed).
fn raw_number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// Whether `raw` is one of the numbers in `ignore`: a whole one exactly (a counter's
/// 4294967294 is no 4294967295), any other to within a part in 10^12 of it, as a codec that
/// scales by multiplying gives 0x7FFF * 0.1 as 3276.7000000000003, which is 3276.7 (the error
/// is a part in 10^16).
fn ignored(ignore: &[f64], raw: f64) -> bool {
    ignore.iter().any(|i| {
        if i.fract() == 0.0 {
            raw == *i
        } else {
            (raw - i).abs() <= 1e-12 * i.abs()
        }
    })
}

/// The number a `values` key writes, if it writes one.
fn key_number(key: &str) -> Option<f64> {
    key.parse().ok().filter(|x: &f64| x.is_finite())
}

/// The reading `values` gives for `v`: text by its exact spelling, a boolean by `true` or
/// `false`, a number by the key of its value (`1`, `1.0` and `"1e0"` are one number; a
/// network server writes 1 as `1.0`).
fn value_of<'a>(values: &'a BTreeMap<String, Json>, v: &Json) -> Option<&'a Json> {
    match v {
        Json::String(s) => values.get(s),
        Json::Bool(b) => values.get(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            let x = n.as_f64()?;
            values
                .iter()
                .find(|(k, _)| key_number(k) == Some(x))
                .map(|(_, r)| r)
        }
        _ => None,
    }
}

/// `x` times `scale` as the device meant it: 10133 at 0.1 is 1013.3, where the product is
/// 1013.3000000000001. A scale that is 1/k for a whole k divides by k, which for a whole `x`
/// is the exact quotient rounded once; any other result is rounded to 15 significant digits,
/// the most an f64 holds for every decimal. 1/scale is compared relatively because it is not
/// exact for every small scale (1/1e-9 is 999999999.9999999).
fn scaled(x: f64, scale: f64) -> f64 {
    if scale == 1.0 {
        return x;
    }
    let k = scale.recip().round();
    let divides = k.abs() >= 1.0 && (scale.recip() - k).abs() <= 1e-9 * k.abs();
    if divides && x.fract() == 0.0 {
        return x / k;
    }
    let y = if divides { x / k } else { x * scale };
    format!("{y:.14e}").parse().unwrap_or(y)
}

/// A number as the records write it: an integer when whole, else a float; `None` for NaN
/// and infinities (JSON has no such numbers).
fn number(x: f64) -> Option<Json> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if x.fract() == 0.0 && x.abs() <= EXACT {
        Some(Json::from(x as i64))
    } else {
        serde_json::Number::from_f64(x).map(Json::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn obj(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => unreachable!(),
        }
    }

    /// A codec's `decoded` object through table `t` alone.
    fn by_table(t: &Table, decoded: Json) -> Mapped {
        map(Some(&obj(decoded)), Some(t), None, &[], UNIX_EPOCH)
    }

    #[test]
    fn normalized_payload_maps_to_microshare_fields() {
        let n = [
            obj(
                json!({"air": {"temperature": 21.5, "relativeHumidity": 40, "co2": 612,
                "location": "indoor"}, "battery": 3.6}),
            ),
            obj(json!({"air": {"temperature": 21.75}})),
        ];
        let m = map(None, None, None, &n, UNIX_EPOCH);
        assert_eq!(m.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"value": 21.5, "unit": "°C"}, {"value": 21.75, "unit": "°C"}],
                "humidity": [{"value": 40, "unit": "%RH"}],
                "co2": [{"value": 612, "unit": "ppm"}],
                "origin": {"normalized": [{"air": {"location": "indoor"}}, {}]},
            })
        );
        assert_eq!(
            Json::Object(m.health),
            json!({"voltage": [{"value": 3.6, "unit": "V"}]})
        );
    }

    /// A table without `rec_type` whose readings point to more than one recType says so,
    /// naming them most specific first; device values, one recType, or a `rec_type` do not.
    #[test]
    fn a_table_without_rec_type_over_several_domains_is_told() {
        let unpinned = |text: &str| Table::parse(text).unwrap().unpinned_rec_type();
        assert_eq!(
            unpinned(
                "[fields]\nmotion = { field = \"motion_count\" }\n\
                 temperature = { field = \"temperature\" }\nlight = { field = \"illuminance\" }\n"
            )
            .unwrap(),
            "no rec_type, and its fields map into io.microshare.motion.unpacked, \
             io.microshare.environment.unpacked, io.microshare.light.unpacked: each record takes \
             the first of these its frame has a field of, so one device's records can change hub \
             from frame to frame; set rec_type"
        );
        for text in [
            "[fields]\nt = { field = \"temperature\" }\nh = { field = \"humidity\" }\n\
             soil = { field = \"moisture\" }\n",
            "[fields]\nt = { field = \"temperature\" }\n\
             p = { field = \"presence\", health = true }\n",
            "rec_type = \"io.microshare.motion.unpacked\"\n[fields]\n\
             motion = { field = \"motion_count\" }\nt = { field = \"temperature\" }\n",
        ] {
            assert_eq!(unpinned(text), None, "{text}");
        }
    }

    #[test]
    fn rec_type_follows_the_most_specific_field() {
        let rt = |v: Json| map(None, None, None, &[obj(v)], UNIX_EPOCH).rec_type;
        assert_eq!(
            rt(json!({"water": {"leak": true, "temperature": 4}})),
            rec_type::LEAK
        );
        assert_eq!(
            rt(json!({"action": {"contactState": "open"}})),
            rec_type::OPENCLOSE
        );
        assert_eq!(
            rt(json!({"action": {"motion": {"detected": false}}})),
            rec_type::MOTION
        );
        assert_eq!(rt(json!({"air": {"lightIntensity": 300}})), rec_type::LIGHT);
        assert_eq!(rt(json!({"soil": {"moisture": 30}})), rec_type::UNMAPPED);
        for (state, open) in [
            ("open", true),
            ("closed", false),
            ("OPEN", true),
            ("CLOSED", false),
            ("Close", false),
            (" open ", true),
        ] {
            let m = map(
                None,
                None,
                None,
                &[obj(json!({"action": {"contactState": state}}))],
                UNIX_EPOCH,
            );
            assert_eq!(m.rec_type, rec_type::OPENCLOSE, "{state}");
            assert_eq!(m.data["open"], json!([{ "value": open }]), "{state}");
        }
        let m = map(
            None,
            None,
            None,
            &[obj(json!({"action": {"contactState": "AJAR"}}))],
            UNIX_EPOCH,
        );
        assert!(!m.has_readings());
        assert_eq!(
            m.data["origin"],
            json!({"normalized": [{"action": {"contactState": "AJAR"}}]})
        );
    }

    /// The Things Stack sends a Device Repository codec's output twice, `decoded_payload` and
    /// `normalized_payload` (a JavaScript codec with `normalizeUplink` alike): a value the
    /// codec's table mapped is one reading, its normalized copy stays under `origin`, and
    /// the normalized fields the table does not map are read.
    #[test]
    fn a_value_decoded_and_normalized_is_one_reading() {
        let t = Table::parse(
            "[fields]\ntemperature = { field = \"temperature\", unit = \"°C\" }\n\
             mv = { field = \"voltage\", unit = \"V\", scale = 0.001, health = true }\n",
        )
        .unwrap();
        let decoded = obj(json!({"temperature": 21.5, "mv": 3600}));
        let normalized = [obj(
            json!({"air": {"temperature": 21.5, "relativeHumidity": 40}, "battery": 3.6}),
        )];
        let m = map(Some(&decoded), Some(&t), None, &normalized, UNIX_EPOCH);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"unit": "°C", "value": 21.5}],
                "humidity": [{"unit": "%RH", "value": 40}],
                "origin": {"normalized": [{"air": {"temperature": 21.5}, "battery": 3.6}]},
            })
        );
        assert_eq!(
            Json::Object(m.health),
            json!({"voltage": [{"unit": "V", "value": 3.6}]})
        );
    }

    /// The schema's `battery` is volts: 12 and 24 V systems are readings, millivolts and a
    /// charge in percent above 60 stay under `origin` with a warning.
    #[test]
    fn a_normalized_battery_is_volts_up_to_60() {
        let battery = |v: Json| [obj(json!({ "battery": v }))];
        for v in [json!(3.6), json!(12.6), json!(27.2), json!(0), json!(60)] {
            let m = map(None, None, None, &battery(v.clone()), UNIX_EPOCH);
            assert_eq!(
                Json::Object(m.health),
                json!({"voltage": [{"unit": "V", "value": v}]}),
                "{v}"
            );
            assert!(m.warnings.is_empty(), "{v}");
            assert!(!m.data.contains_key("origin"), "{v}");
        }
        for v in [json!(100), json!(3600), json!(-1), json!("60.5")] {
            let m = map(None, None, None, &battery(v.clone()), UNIX_EPOCH);
            assert!(m.health.is_empty(), "{v}");
            assert_eq!(m.data["origin"], json!({"normalized": [{"battery": v}]}));
            assert_eq!(m.warnings.len(), 1, "{v}");
        }
        assert_eq!(
            map(None, None, None, &battery(json!(100)), UNIX_EPOCH).warnings,
            [
                "normalized battery 100 is above 60 V, kept under origin; a charge in percent \
                 there needs normalized_battery = \"charge\" in the mapping table"
            ]
        );
        // A brand neither the config nor hubgate knows is named with the line that says it.
        let acme = Brand {
            id: "acme",
            battery: None,
        };
        assert_eq!(
            map(None, None, Some(acme), &battery(json!(100)), UNIX_EPOCH).warnings,
            [
                "normalized battery 100 is above 60 V, kept under origin; a charge in percent \
                 there needs normalized_battery = \"charge\" in the mapping table, or \
                 \"acme\" = \"charge\" in [codecs.normalized_battery] for the device's brand"
            ]
        );
        // A brand that says volts needs no such advice either.
        let volts = Brand {
            battery: Some(NormalizedBattery::Voltage),
            ..acme
        };
        assert_eq!(
            map(None, None, Some(volts), &battery(json!(100)), UNIX_EPOCH).warnings,
            ["normalized battery 100 is above 60 V, kept under origin"]
        );
        // No charge in percent is below 0.
        assert_eq!(
            map(None, None, None, &battery(json!(-1)), UNIX_EPOCH).warnings,
            ["normalized battery -1 is below 0 V, kept under origin"]
        );
        // A table that says volts needs no such advice.
        let volts = Table::parse("normalized_battery = \"voltage\"").unwrap();
        assert_eq!(
            map(None, Some(&volts), None, &battery(json!(100)), UNIX_EPOCH).warnings,
            ["normalized battery 100 is above 60 V, kept under origin"]
        );
    }

    /// Without a table saying what the normalized `battery` is, it is volts up to 60 V, whole
    /// ones too and when they are the codec's own `battery` (a 12 V device copying its 12.0);
    /// a charge in percent above 60 is refused with a warning naming the fix. A number equal to
    /// the codec's `battery` the table reads as the charge is that charge copied, not read
    /// again, quietly; a voltage equal to a charge of another key is the voltage.
    #[test]
    fn a_normalized_battery_is_volts_unless_a_copy_of_the_tables_charge() {
        let battery = |v: Json| [obj(json!({ "battery": v }))];
        for v in [5, 6, 12, 13, 24, 48] {
            let decoded = obj(json!({"battery": v, "temperature": 20}));
            let m = map(Some(&decoded), None, None, &battery(json!(v)), UNIX_EPOCH);
            assert_eq!(
                Json::Object(m.health),
                json!({"voltage": [{"unit": "V", "value": v}]}),
                "{v}"
            );
            assert_eq!(m.data["origin"], json!({"battery": v, "temperature": 20}));
            assert!(m.warnings.is_empty(), "{v}");
        }
        let decoded = obj(json!({"battery": 85}));
        let m = map(Some(&decoded), None, None, &battery(json!(85)), UNIX_EPOCH);
        assert!(m.health.is_empty());
        assert_eq!(
            m.data["origin"],
            json!({"battery": 85, "normalized": [{"battery": 85}]})
        );
        assert_eq!(
            m.warnings,
            ["normalized battery 85 is above 60 V, kept under origin; a charge in percent there \
              needs normalized_battery = \"charge\" in the mapping table"]
        );
        let charge = |key: &str| {
            Table::parse(&format!(
                "[fields]\n{key} = {{ field = \"charge\", unit = \"%\", health = true }}\n"
            ))
            .unwrap()
        };
        // The codec's `battery` read as the charge, a normalizer's copy of it is no voltage,
        // whole or not.
        for pct in [json!(5), json!(46.67), json!(85)] {
            let decoded = obj(json!({ "battery": pct }));
            let m = map(
                Some(&decoded),
                Some(&charge("battery")),
                None,
                &battery(pct.clone()),
                UNIX_EPOCH,
            );
            assert_eq!(
                Json::Object(m.health),
                json!({"charge": [{"unit": "%", "value": pct}]})
            );
            assert_eq!(m.data["origin"], json!({"normalized": [{"battery": pct}]}));
            assert!(m.warnings.is_empty(), "{pct}");
        }
        // A measurement of a time of its own is no copy of the codec's charge, of now: equal
        // to it, it is that moment's voltage.
        let decoded = obj(json!({"battery": 5}));
        let n = [
            obj(json!({"battery": 5})),
            obj(json!({"battery": 5, "time": "1970-01-01T12:00:00Z"})),
        ];
        let now = UNIX_EPOCH + Duration::from_secs(86_400);
        let m = map(Some(&decoded), Some(&charge("battery")), None, &n, now);
        assert_eq!(
            Json::Object(m.health),
            json!({"charge": [{"unit": "%", "value": 5}]})
        );
        assert_eq!(m.history.len(), 1);
        assert_eq!(
            Json::Object(m.history[0].health.clone()),
            json!({"voltage": [{"unit": "V", "value": 5}]})
        );
        assert!(m.warnings.is_empty());
        // Another key's charge equal to the voltage, or a voltage beside the charge: volts.
        let decoded = obj(json!({"capacity": 3, "battery": 3}));
        for v in [json!(3), json!(3.05)] {
            let m = map(
                Some(&decoded),
                Some(&charge("capacity")),
                None,
                &battery(v.clone()),
                UNIX_EPOCH,
            );
            assert_eq!(
                Json::Object(m.health),
                json!({
                    "charge": [{"unit": "%", "value": 3}],
                    "voltage": [{"unit": "V", "value": v}],
                }),
                "{v}"
            );
            assert!(m.warnings.is_empty(), "{v}");
        }
    }

    /// A table's `normalized_battery` says what the normalized `battery` is: the charge (in
    /// percent, 0 to 100), a voltage, or nothing to read; none of them warns below its
    /// bound.
    #[test]
    fn a_tables_normalized_battery_says_what_it_is() {
        let decoded = obj(json!({"battery": 5}));
        let n = [obj(json!({"battery": 5}))];
        let table = |which: &str| Table::parse(&format!("normalized_battery = \"{which}\"\n"));
        let decoded_only = json!({"battery": 5});
        let both = json!({"battery": 5, "normalized": [{"battery": 5}]});
        for (which, health, origin) in [
            (
                "charge",
                json!({"charge": [{"unit": "%", "value": 5}]}),
                &decoded_only,
            ),
            (
                "voltage",
                json!({"voltage": [{"unit": "V", "value": 5}]}),
                &decoded_only,
            ),
            ("skip", json!({}), &both),
        ] {
            let m = map(
                Some(&decoded),
                Some(&table(which).unwrap()),
                None,
                &n,
                UNIX_EPOCH,
            );
            assert_eq!(Json::Object(m.health), health, "{which}");
            assert_eq!(&m.data["origin"], origin, "{which}");
            assert!(m.warnings.is_empty(), "{which}");
        }
        let m = map(
            None,
            Some(&table("charge").unwrap()),
            None,
            &[obj(json!({"battery": 101}))],
            UNIX_EPOCH,
        );
        assert_eq!(
            m.warnings,
            ["normalized battery 101 is above 100 %, kept under origin"]
        );
        // The codec's own charge mapped, the normalized one is that charge again.
        let t = Table::parse(
            "normalized_battery = \"charge\"\n[fields]\n\
             battery = { field = \"charge\", unit = \"%\", health = true }\n",
        )
        .unwrap();
        let m = map(Some(&decoded), Some(&t), None, &n, UNIX_EPOCH);
        assert_eq!(
            Json::Object(m.health),
            json!({"charge": [{"unit": "%", "value": 5}]})
        );
        assert_eq!(
            table("volts").unwrap_err(),
            "normalized_battery: unknown variant `volts`, expected one of `voltage`, `charge`, \
             `skip` (line 1)"
        );
        // Below `[fields]`, it is read as a field's.
        assert_eq!(
            Table::parse("[fields]\nnormalized_battery = \"charge\"\n").unwrap_err(),
            "fields.normalized_battery: invalid type: string \"charge\", expected struct Target \
             (line 2) (normalized_battery belongs above [fields])"
        );
        assert_eq!(
            Table::parse("[fields]\nrec_type = \"x\"\n").unwrap_err(),
            "fields.rec_type: invalid type: string \"x\", expected struct Target (line 2) \
             (rec_type belongs above [fields])"
        );
        // A codec's own field named so, its entry wrong, is no key written in the wrong place.
        for (text, error) in [
            (
                "[fields]\nrec_type = { unit = \"x\" }\n",
                "fields.rec_type: missing field `field` (line 2)",
            ),
            (
                "[fields.normalized_battery]\nunit = \"V\"\n",
                "fields.normalized_battery: missing field `field` (line 1)",
            ),
        ] {
            assert_eq!(Table::parse(text).unwrap_err(), error, "{text}");
        }
    }

    /// A table drops a codec's "no reading" values (`ignore`, compared before `scale`) and
    /// readings outside `min`/`max` (after `scale`): they stay under `origin`, quietly, as the
    /// operator asked. `min` equal to `max` takes that one reading.
    #[test]
    fn a_table_keeps_sentinels_and_values_out_of_bounds_under_origin() {
        let t = Table::parse(
            r#"
            [fields]
            voc = { field = "voc", unit = "ppb", ignore = [65535] }
            TempC_DS = { field = "ext_temperature", unit = "°C", ignore = [327.67] }
            humidity = { field = "humidity", unit = "%RH", min = 0, max = 100 }
            t = { field = "temperature", unit = "°C", scale = 0.1, min = -40 }
            fix = { field = "gps_fix", min = 3, max = 3 }
            "#,
        )
        .unwrap();
        let o =
            obj(json!({"voc": 65535, "TempC_DS": "327.67", "humidity": 127, "t": -401, "fix": 2}));
        let m = map(Some(&o), Some(&t), None, &[], UNIX_EPOCH);
        assert_eq!(Json::Object(m.data), json!({"origin": o}));
        assert!(m.warnings.is_empty());
        let o = obj(json!({"voc": 65534, "TempC_DS": 21.5, "humidity": 100, "t": -400, "fix": 3}));
        let m = map(Some(&o), Some(&t), None, &[], UNIX_EPOCH);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "voc": [{"unit": "ppb", "value": 65534}],
                "ext_temperature": [{"unit": "°C", "value": 21.5}],
                "humidity": [{"unit": "%RH", "value": 100}],
                "temperature": [{"unit": "°C", "value": -40}],
                "gps_fix": [{"value": 3}],
            })
        );
    }

    /// A table turns a codec's 0/1 (`type = "bool"`) or its words (`values`) into the
    /// readings the built-in codecs give: Browan's `status` 1 is `open: true`, Milesight's
    /// `"close"` is `open: false`. A value it cannot read so stays under `origin`.
    #[test]
    fn a_table_converts_flags_and_words_into_readings() {
        let t = Table::parse(
            r#"
            rec_type = "io.microshare.openclose.unpacked"
            [fields]
            status = { field = "open", type = "bool", ignore = [2] }
            door = { field = "open", values = { open = true, close = false } }
            install = { field = "tamper", values = { yes = true, no = false } }
            mode = { field = "mode", values = { "0" = "off", "1" = "on", "true" = "forced" } }
            "#,
        )
        .unwrap();
        let read = |v: Json| {
            let m = map(Some(&obj(v)), Some(&t), None, &[], UNIX_EPOCH);
            Json::Object(m.data)
        };
        for (status, open) in [
            (json!(1), true),
            (json!(0), false),
            (json!(3), true),
            (json!("0"), false),
            (json!(true), true),
        ] {
            assert_eq!(
                read(json!({ "status": status })),
                json!({"open": [{ "value": open }]}),
                "{status}"
            );
        }
        for status in [json!(2), json!("yes"), json!(null)] {
            assert_eq!(
                read(json!({ "status": status })),
                json!({"origin": { "status": status }})
            );
        }
        assert_eq!(
            read(json!({"door": "close", "install": "yes", "mode": 1})),
            json!({
                "open": [{"value": false}],
                "tamper": [{"value": true}],
                "mode": [{"value": "on"}],
            })
        );
        assert_eq!(
            read(json!({"mode": true}))["mode"],
            json!([{"value": "forced"}])
        );
        assert_eq!(
            read(json!({"door": "ajar", "install": "Yes", "mode": 2})),
            json!({"origin": {"door": "ajar", "install": "Yes", "mode": 2}})
        );
        for (target, error) in [
            (
                "{ field = \"a\", scale = 2, values = { x = 1 } }",
                "fields.k: values gives the readings itself; it takes no type, scale, min, max \
                 or ignore",
            ),
            (
                "{ field = \"a\", type = \"bool\", values = { x = 1 } }",
                "fields.k: values gives the readings itself; it takes no type, scale, min, max \
                 or ignore",
            ),
            (
                "{ field = \"a\", values = {} }",
                "fields.k: values lists no value",
            ),
            (
                "{ field = \"a\", values = { x = [1] } }",
                "fields.k: values.x must be a finite number, a boolean or text",
            ),
            (
                "{ field = \"a\", type = \"bool\", max = 1 }",
                "fields.k: type = \"bool\" takes no scale, min or max",
            ),
            (
                "{ field = \"a\", type = \"boolean\" }",
                "fields.k.type: unknown variant `boolean`, expected `number` or `bool` (line 2)",
            ),
        ] {
            let e = Table::parse(&format!("[fields]\nk = {target}")).unwrap_err();
            assert_eq!(e, error, "{target}");
        }
    }

    /// `values` looks a codec's number up by its value: a network server that writes 1 as
    /// `1.0` (ChirpStack v4) gives the reading of `"1"`, as a JavaScript codec's `1` does.
    /// Text is matched as it is spelled. Two keys of one number make the table bad.
    #[test]
    fn values_match_a_number_by_its_value() {
        let t = Table::parse(
            "[fields]\nstatus = { field = \"open\", values = { \"0\" = false, \"1e0\" = true } }\n",
        )
        .unwrap();
        let read = |v: Json| Json::Object(by_table(&t, json!({ "status": v })).data);
        for (v, open) in [
            (json!(1.0), true),
            (json!(1), true),
            (json!(0.0), false),
            (json!(-0.0), false),
            (json!(0), false),
            (json!("1e0"), true),
        ] {
            assert_eq!(read(v.clone()), json!({"open": [{ "value": open }]}), "{v}");
        }
        for v in [json!(2.0), json!("1"), json!(" 0"), json!(true)] {
            assert_eq!(read(v.clone()), json!({"origin": { "status": v }}), "{v}");
        }
        for (values, error) in [
            (
                "{ \"1\" = true, \"1.0\" = false }",
                "fields.k: values \"1\" and \"1.0\" are the same number; keep one",
            ),
            (
                "{ \"-0\" = true, \"0\" = false }",
                "fields.k: values \"-0\" and \"0\" are the same number; keep one",
            ),
            (
                "{ 1.0 = true }",
                "fields.k: values.1 must be a finite number, a boolean or text (quote a key \
                 with a dot: \"1.0\" = ...)",
            ),
            (
                "{ 1 = { y = true } }",
                "fields.k: values.1 must be a finite number, a boolean or text",
            ),
            (
                "{ x = { 0 = true } }",
                "fields.k: values.x must be a finite number, a boolean or text",
            ),
            (
                "{ x = 1979-05-27 }",
                "fields.k: values.x must be a finite number, a boolean or text",
            ),
        ] {
            let text = format!("[fields]\nk = {{ field = \"a\", values = {values} }}");
            assert_eq!(Table::parse(&text).unwrap_err(), error, "{values}");
        }
    }

    /// `ignore` takes a codec's sentinel made by multiplying (0x7FFF * 0.1 is
    /// 3276.7000000000003 in floating point) for the number written in the table.
    #[test]
    fn ignore_takes_a_multiplied_sentinel_for_its_number() {
        let t = Table::parse(
            "[fields]\nt = { field = \"ext_temperature\", unit = \"°C\", ignore = [3276.7] }\n",
        )
        .unwrap();
        let raw = f64::from(0x7FFF_u16) * 0.1;
        assert_ne!(raw, 3276.7);
        for v in [json!(raw), json!(raw.to_string()), json!(3276.7)] {
            let m = by_table(&t, json!({ "t": v }));
            assert_eq!(Json::Object(m.data), json!({"origin": { "t": v }}), "{v}");
        }
        for v in [3276.6, 3276.7 + 1e-6] {
            let m = by_table(&t, json!({ "t": v }));
            assert_eq!(
                m.data["ext_temperature"],
                json!([{"unit": "°C", "value": v}]),
                "{v}"
            );
        }
    }

    /// A whole number in `ignore` is that number only: a counter's neighbours of its sentinel
    /// are readings, and so is a value near 0 beside `ignore = [0]`.
    #[test]
    fn ignore_takes_a_whole_sentinel_exactly() {
        for (sentinel, v, read) in [
            (4_294_967_295.0, json!(4_294_967_295_u32), false),
            (4_294_967_295.0, json!(4_294_967_294_u32), true),
            (4_294_967_295.0, json!(4_294_967_296_u64), true),
            (0.0, json!(0), false),
            (0.0, json!(-0.0), false),
            (0.0, json!(1e-10), true),
        ] {
            let t = Table::parse(&format!(
                "[fields]\nn = {{ field = \"count\", ignore = [{sentinel:?}] }}\n"
            ))
            .unwrap();
            let m = by_table(&t, json!({ "n": v }));
            let data = if read {
                json!({"count": [{ "value": v }]})
            } else {
                json!({"origin": { "n": v }})
            };
            assert_eq!(Json::Object(m.data), data, "{sentinel} {v}");
        }
    }

    /// A reading that is true or false has no unit: a table giving one to `type = "bool"`, or
    /// to `values` with a boolean reading, is bad.
    #[test]
    fn a_boolean_reading_takes_no_unit() {
        for target in [
            "{ field = \"open\", unit = \"%\", type = \"bool\" }",
            "{ field = \"open\", unit = \"\", values = { open = true, shut = \"no\" } }",
        ] {
            assert_eq!(
                Table::parse(&format!("[fields]\nk = {target}")).unwrap_err(),
                "fields.k: a reading that is true or false takes no unit",
                "{target}"
            );
        }
        assert!(Table::parse(
            "[fields]\nk = { field = \"level\", unit = \"%\", values = { full = 100 } }"
        )
        .is_ok());
    }

    /// The schema's shapes of water readings: a temperature `{min, max, avg, current}` (the
    /// current one is the reading), a leak as text. A motion count mapped by the codec's
    /// table under a built-in codec's name is the normalized count too.
    #[test]
    fn normalized_water_and_motion_readings_in_the_schemas_shapes() {
        let n = [obj(
            json!({"water": {"temperature": {"min": 4, "max": 9, "current": 7.5}, "leak": "Leak"}}),
        )];
        let m = map(None, None, None, &n, UNIX_EPOCH);
        assert_eq!(m.rec_type, rec_type::LEAK);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "water_temperature": [{"unit": "°C", "value": 7.5}],
                "leak": [{"value": true}],
                "origin": {"normalized": [{"water": {"temperature": {"min": 4, "max": 9}}}]},
            })
        );
        for (leak, value) in [
            ("normal", json!(false)),
            ("no", json!(false)),
            ("yes", json!(true)),
        ] {
            let m = map(
                None,
                None,
                None,
                &[obj(json!({"water": {"leak": leak}}))],
                UNIX_EPOCH,
            );
            assert_eq!(m.data["leak"], json!([{ "value": value }]), "{leak}");
        }
        let m = map(
            None,
            None,
            None,
            &[obj(json!({"water": {"leak": "maybe"}}))],
            UNIX_EPOCH,
        );
        assert!(!m.has_readings());
        let t =
            Table::parse("[fields]\nmotion = { field = \"motions_since_transmit\" }\n").unwrap();
        let n = [obj(json!({"action": {"motion": {"count": 3}}}))];
        let m = map(
            Some(&obj(json!({"motion": 3}))),
            Some(&t),
            None,
            &n,
            UNIX_EPOCH,
        );
        assert_eq!(
            Json::Object(m.data),
            json!({
                "motions_since_transmit": [{"value": 3}],
                "origin": {"normalized": [{"action": {"motion": {"count": 3}}}]},
            })
        );
    }

    /// A quantity with a unit, and every normalized number, is never true or false: a
    /// boolean there stays under `origin`. A table field without a unit keeps a boolean.
    #[test]
    fn a_boolean_is_no_quantity() {
        for v in [
            json!({"air": {"temperature": true}}),
            json!({"battery": false}),
            json!({"action": {"motion": {"count": true}}}),
        ] {
            let m = map(None, None, None, &[obj(v.clone())], UNIX_EPOCH);
            assert!(!m.has_readings(), "{v}");
            assert_eq!(m.data["origin"], json!({ "normalized": [v] }));
        }
        let t = Table::parse(
            "[fields]\nt = { field = \"temperature\", unit = \"°C\" }\n\
             door = { field = \"open\" }\n",
        )
        .unwrap();
        let m = by_table(&t, json!({"t": true, "door": true}));
        assert_eq!(
            Json::Object(m.data),
            json!({"open": [{"value": true}], "origin": {"t": true}})
        );
    }

    /// A normalized value outside its bounds (a sensor's 0x7FFF as 327.67 °C is not, but
    /// humidity 127, pressure in kPa or a latitude of -91 is) stays under `origin`, with a
    /// warning; the bounds themselves are readings, and so is the air pressure of a city at
    /// 1600 m.
    #[test]
    fn normalized_values_outside_their_bounds_are_kept_under_origin() {
        for (v, field) in [
            (json!({"air": {"relativeHumidity": 127}}), "humidity"),
            (json!({"air": {"relativeHumidity": -1}}), "humidity"),
            (json!({"air": {"pressure": 10132}}), "pressure"),
            (json!({"air": {"pressure": 299.9}}), "pressure"),
            (json!({"air": {"pressure": 101.3}}), "pressure"),
            (json!({"air": {"co2": -5}}), "co2"),
            (json!({"air": {"lightIntensity": -1}}), "illuminance"),
            (json!({"air": {"temperature": -273.16}}), "temperature"),
            (json!({"water": {"temperature": -300}}), "water_temperature"),
            (json!({"position": {"latitude": -91}}), "lat"),
            (json!({"position": {"longitude": 180.5}}), "lon"),
        ] {
            let m = map(None, None, None, &[obj(v.clone())], UNIX_EPOCH);
            assert!(!m.data.contains_key(field), "{v}");
            assert_eq!(m.data["origin"], json!({ "normalized": [v] }));
            assert_eq!(m.warnings.len(), 1, "{v}");
        }
        let m = map(
            None,
            None,
            None,
            &[obj(json!({"position": {"latitude": -91}}))],
            UNIX_EPOCH,
        );
        assert_eq!(
            m.warnings,
            ["normalized position.latitude -91 is below -90 °, kept under origin"]
        );
        let bounds = obj(json!({
            "air": {"relativeHumidity": 100, "pressure": 300, "co2": 1_000_000,
                    "lightIntensity": 0, "temperature": -273.15},
            "position": {"latitude": 90, "longitude": -180},
        }));
        let m = map(None, None, None, &[bounds], UNIX_EPOCH);
        assert!(m.warnings.is_empty());
        assert!(!m.data.contains_key("origin"), "{:?}", m.data);
        assert_eq!(m.data.len(), 7);
        let m = map(
            None,
            None,
            None,
            &[obj(json!({"air": {"pressure": 835.2}}))],
            UNIX_EPOCH,
        );
        assert_eq!(m.data["pressure"], json!([{"unit": "hPa", "value": 835.2}]));
        assert!(m.warnings.is_empty());
    }

    /// What is wrong with a table is one line, naming the field or the line.
    #[test]
    fn a_bad_table_is_one_line_saying_where() {
        for (text, error) in [
            (
                "[fields]\nx = { field = \"a\", min = nan }",
                "fields.x: min must be a finite number",
            ),
            (
                "[fields]\nx = { field = \"a\", max = -inf }",
                "fields.x: max must be a finite number",
            ),
            (
                "[fields]\nx = { field = \"a\", min = 5, max = 1 }",
                "fields.x: min 5 is above max 1: no reading would be taken",
            ),
            (
                "[fields]\nx = { field = \"a\", ignore = [1, inf] }",
                "fields.x: ignore must list finite numbers",
            ),
            // `[]` anywhere but at a key's end, both `x` and `x[]`, a `context_id` on an array,
            // a `context_base` on one value.
            (
                "[fields]\n\"h[].t\" = { field = \"a\" }",
                "fields.h[].t: [] goes at the end of a key, after the array's own key; an array \
                 of entries with their own time is [history]",
            ),
            (
                "[fields]\n\"[]\" = { field = \"a\" }",
                "fields.[]: [] goes at the end of a key, after the array's own key; an array of \
                 entries with their own time is [history]",
            ),
            (
                "[fields]\n\"t[][]\" = { field = \"a\" }",
                "fields.t[][]: [] goes at the end of a key, after the array's own key; an array \
                 of entries with their own time is [history]",
            ),
            (
                "[fields]\nt = { field = \"a\" }\n\"t[]\" = { field = \"b\" }",
                "fields.t[]: t is a key of its own too; keep one (a key ending in [] reads one \
                 value as well)",
            ),
            (
                "[fields]\n\"t[]\" = { field = \"a\", context_id = \"3\" }",
                "fields.t[]: each item's context_id is its index, counted from context_base; \
                 context_id is for a key of one value",
            ),
            (
                "[fields]\nt = { field = \"a\", context_base = 3 }",
                "fields.t: context_base numbers the items of an array, a key ending in []",
            ),
            (
                "[fields]\n\"t[]\" = { field = \"a\", context_base = -1 }",
                "fields.t[].context_base: invalid value: integer `-1`, expected u32 (line 2)",
            ),
        ] {
            assert_eq!(Table::parse(text).unwrap_err(), error, "{text}");
        }
        for (text, error) in [
            (
                "rec_type = \"x\"\n[fields]\nx = { field = \"a\", ignore = \"65535\" }",
                "fields.x.ignore: invalid type: string \"65535\", expected a sequence (line 3)",
            ),
            (
                "[fields]\n\nx = { field = \"a\", maximum = 3 }",
                "fields.x.maximum: unknown field `maximum`, expected one of `field`, `unit`, `scale`, \
                 `health`, `ignore`, `min`, `max`, `type`, `values`, `context_id`, `context_base` (line 3)",
            ),
            (
                "[fields]\nx = { unit = \"V\" }",
                "fields.x: missing field `field` (line 2)",
            ),
            // A table's struct is a TOML table, not an array of its fields in their order.
            (
                "[fields]\nx = [\"temperature\", \"°C\"]",
                "fields.x: invalid type: sequence, expected struct Target (line 2)",
            ),
            (
                "history = [\"h\", \"t\"]",
                "history: invalid type: sequence, expected struct HistoryTable (line 1)",
            ),
        ] {
            let e = Table::parse(text).unwrap_err();
            assert_eq!(e, error, "{text}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// A table's `context_id` is the reading's channel, written first as the built-in
    /// codecs write theirs; a blank one, or one that is no text, makes the table bad.
    #[test]
    fn a_tables_context_id_is_the_readings_channel() {
        let t = Table::parse(
            "[fields]\ntemperature = { field = \"temperature\", unit = \"°C\", context_id = \"3\" }\n\
             door = { field = \"open\", type = \"bool\", context_id = \"6\" }\n\
             battery = { field = \"charge\", unit = \"%\", health = true, context_id = \"1\" }\n\
             humidity = { field = \"humidity\", unit = \"%RH\" }\n",
        )
        .unwrap();
        let m = by_table(
            &t,
            json!({"temperature": -24.6, "door": 1, "battery": 100, "humidity": 40}),
        );
        assert_eq!(
            Json::Object(m.data.clone()).to_string(),
            r#"{"humidity":[{"unit":"%RH","value":40}],"open":[{"context_id":"6","value":true}],"temperature":[{"context_id":"3","unit":"°C","value":-24.6}]}"#
        );
        assert_eq!(
            m.health["charge"],
            json!([{"context_id": "1", "unit": "%", "value": 100}])
        );
        for (value, error) in [
            ("\"\"", "fields.x: context_id must be text, not empty nor blank, without control characters"),
            ("\" \"", "fields.x: context_id must be text, not empty nor blank, without control characters"),
            ("\"3\\n\"", "fields.x: context_id must be text, not empty nor blank, without control characters"),
            ("3", "fields.x.context_id: invalid type: integer `3`, expected a string (line 2)"),
        ] {
            let text = format!("[fields]\nx = {{ field = \"a\", context_id = {value} }}");
            assert_eq!(Table::parse(&text).unwrap_err(), error, "{text}");
        }
    }

    /// A key ending in `[]` reads each item of an array, or one value, as a reading of its
    /// own, its `context_id` its index (from `context_base`), as the built-in Elsys codec
    /// numbers repeated probes; an array any item of which is not read, an empty one, or one
    /// past [`MAX_ITEMS`] (whose first items are read, with a warning) stays whole under
    /// `origin`, its items in their places.
    #[test]
    fn a_key_ending_in_brackets_reads_each_item_on_its_index() {
        let t = Table::parse(
            "[fields]\n\
             \"externalTemperature2[]\" = { field = \"ext_temperature2\", unit = \"°C\" }\n\
             \"probes.t[]\" = { field = \"temperature\", unit = \"°C\", context_base = 1 }\n\
             \"doors[]\" = { field = \"open\", type = \"bool\", context_base = 5 }\n",
        )
        .unwrap();
        let r = |c: &str, v: Json| json!({"context_id": c, "unit": "°C", "value": v});
        let m = by_table(
            &t,
            json!({"externalTemperature2": [10, -10], "probes": {"t": [21.5, "22"]},
                   "doors": [1, 0]}),
        );
        assert_eq!(
            Json::Object(m.data),
            json!({
                "ext_temperature2": [r("0", json!(10)), r("1", json!(-10))],
                "temperature": [r("1", json!(21.5)), r("2", json!(22))],
                "open": [{"context_id": "5", "value": true}, {"context_id": "6", "value": false}],
            })
        );
        let m = by_table(&t, json!({"externalTemperature2": 10}));
        assert_eq!(
            Json::Object(m.data),
            json!({"ext_temperature2": [r("0", json!(10))]})
        );
        let partly = json!([10, "x", [11], {"t": 12}, null, 13]);
        let m = by_table(
            &t,
            json!({"externalTemperature2": partly.clone(), "doors": []}),
        );
        assert_eq!(
            Json::Object(m.data),
            json!({
                "ext_temperature2": [r("0", json!(10)), r("5", json!(13))],
                "origin": {"externalTemperature2": partly, "doors": []},
            })
        );
        assert!(m.warnings.is_empty());
        let read: Vec<Json> = (0..MAX_ITEMS)
            .map(|i| r(&(i + 1).to_string(), json!(i)))
            .collect();
        // MAX_ITEMS items are read whole: none kept under origin, no warning.
        let most: Vec<Json> = (0..MAX_ITEMS).map(|i| json!(i)).collect();
        let m = by_table(&t, json!({"probes": {"t": most}}));
        assert_eq!(Json::Object(m.data), json!({"temperature": read.clone()}));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let many: Vec<Json> = (0..100_000).map(|i| json!(i)).collect();
        let m = by_table(&t, json!({"probes": {"t": many.clone()}}));
        assert_eq!(
            Json::Object(m.data),
            json!({"temperature": read, "origin": {"probes": {"t": many}}})
        );
        assert_eq!(
            m.warnings,
            ["probes.t: an array of 100000 items, the first 64 read, the whole of it kept under \
              origin"]
        );
    }

    /// A Milesight-style table: its live names with their channels, and `[history]`.
    const MILESIGHT: &str = "rec_type = \"io.microshare.environment.unpacked\"\n\
        [fields]\n\
        battery = { field = \"charge\", unit = \"%\", health = true }\n\
        temperature = { field = \"temperature\", unit = \"°C\", context_id = \"3\" }\n\
        humidity = { field = \"humidity\", unit = \"%RH\", context_id = \"4\" }\n\
        [history]\npath = \"history\"\ntime = \"timestamp\"\n";

    fn moment(secs: u64, data: Json) -> Moment {
        Moment {
            time: UNIX_EPOCH + Duration::from_secs(secs),
            data: obj(data),
            health: Map::new(),
        }
    }

    /// The moment of a history entry `{timestamp, temperature: 20.5}` at `time` that a
    /// normalizer's copy joined, leaving `left` under its `origin.normalized`.
    fn joined(time: SystemTime, left: Json) -> Moment {
        let data = json!({
            "temperature": [{"context_id": "3", "unit": "°C", "value": 20.5}],
            "origin": {"normalized": [left]},
        });
        Moment {
            time,
            ..moment(0, data)
        }
    }

    /// A codec's history entries (Milesight's `history: [{timestamp, ...}]`) are moments of
    /// their own time, one per entry in the array's order, mapped by the table's live names
    /// (channels and all), an entry's unmapped fields under its own `origin`; the live
    /// readings stay the live record's. A time may be Unix seconds, written whole as a float
    /// too or with a fraction (kept to the millisecond), or RFC 3339 text.
    #[test]
    fn a_codecs_history_entries_are_moments_of_their_own_time() {
        let t = Table::parse(MILESIGHT).unwrap();
        let m = by_table(
            &t,
            json!({"battery": 100, "temperature": 21, "history": [
                {"timestamp": 1_700_000_000, "temperature": 20.5, "humidity": 40, "flag": 1},
                {"timestamp": 1_700_000_600.0, "temperature": 20.5},
                {"timestamp": "2023-11-14T22:13:20Z", "humidity": 41},
                {"timestamp": 1_700_000_000.123_4, "humidity": 42},
            ]}),
        );
        assert_eq!(
            Json::Object(m.data),
            json!({"temperature": [{"context_id": "3", "unit": "°C", "value": 21}]})
        );
        assert_eq!(
            Json::Object(m.health),
            json!({"charge": [{"unit": "%", "value": 100}]})
        );
        let t = |v: Json| json!([{"context_id": "3", "unit": "°C", "value": v}]);
        let h = |v: Json| json!([{"context_id": "4", "unit": "%RH", "value": v}]);
        assert_eq!(
            m.history,
            [
                moment(
                    1_700_000_000,
                    json!({"temperature": t(json!(20.5)), "humidity": h(json!(40)),
                           "origin": {"flag": 1}})
                ),
                moment(1_700_000_600, json!({"temperature": t(json!(20.5))})),
                moment(1_700_000_000, json!({"humidity": h(json!(41))})),
                Moment {
                    time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                    ..moment(0, json!({"humidity": h(json!(42))}))
                },
            ]
        );
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.rec_type, rec_type::ENVIRONMENT);
    }

    /// A history below the top of the object (`path` keys joined with a dot, as a network
    /// server nests a decoder's retransmitted frame under `data`) is read where it is; what
    /// makes no record stays there under `origin`, beside the object's other unmapped fields;
    /// an object of that name that is no object on the way, or a key of that dotted spelling
    /// at the top, is no history.
    #[test]
    fn a_history_below_the_top_is_read_where_it_is() {
        let t = Table::parse(&MILESIGHT.replace("path = \"history\"", "path = \"data.history\""))
            .unwrap();
        let temp =
            |v: Json| json!({"temperature": [{"context_id": "3", "unit": "°C", "value": v}]});
        let m = by_table(
            &t,
            json!({"temperature": 21, "status": {"history": "ok"},
                   "data": {"kind": "retransmission", "history": [
                {"timestamp": 1_700_000_000, "temperature": 20.5},
                {"timestamp": "never", "temperature": 19},
                {"timestamp": 1_700_000_600, "temperature": 20.25},
            ]}}),
        );
        assert_eq!(
            m.history,
            [
                moment(1_700_000_000, temp(json!(20.5))),
                moment(1_700_000_600, temp(json!(20.25)))
            ]
        );
        let mut data = temp(json!(21));
        // A sibling object's key named as the history's is no history: kept whole.
        data["origin"] = json!({"status": {"history": "ok"}, "data": {"kind": "retransmission",
                                         "history": [{"timestamp": "never", "temperature": 19}]}});
        assert_eq!(Json::Object(m.data), data);
        assert_eq!(
            m.warnings,
            [
                "1 data.history entry without a time read as Unix seconds or RFC 3339 (the first: \
              data.history[1].timestamp \"never\"), kept under origin"
            ]
        );
        // Alone under `data`, all of it read: no `data` is left.
        let m = by_table(
            &t,
            json!({"data": {"history": [{"timestamp": 1_700_000_000, "temperature": 20.5}]}}),
        );
        assert_eq!(m.history, [moment(1_700_000_000, temp(json!(20.5)))]);
        assert!(m.data.is_empty(), "{:?}", m.data);
        // Not an object on the way, or a key spelled with the dot: no history, kept as it is.
        let entry = json!([{"timestamp": 1_700_000_000, "temperature": 20.5}]);
        for object in [
            json!({"data": [entry.clone()]}),
            json!({"data.history": entry}),
        ] {
            let m = by_table(&t, object.clone());
            assert!(m.history.is_empty(), "{object}");
            assert_eq!(m.data[ORIGIN], object);
            assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        }
    }

    /// An LHT65N table: the live names, and its datalog's columns named as them (the
    /// external probe's value first, then the SHT sensor's temperature and humidity, then the
    /// time), as Dragino's decoder writes a poll reply.
    const LHT65N: &str = "rec_type = \"io.microshare.environment.unpacked\"\n\
        [fields]\n\
        TempC_SHT = { field = \"temperature\", unit = \"°C\" }\n\
        Hum_SHT = { field = \"humidity\", unit = \"%RH\" }\n\
        TempC_DS = { field = \"ext_temperature\", unit = \"°C\", ignore = [327.67] }\n\
        [history]\npath = \"DATALOG\"\ntime = \"time\"\n\
        columns = [\"TempC_DS\", \"TempC_SHT\", \"Hum_SHT\", \"time\"]\nzone = \"utc\"\n";

    /// The readings of an LHT65N log entry.
    fn lht65n(secs: u64, ds: Option<f64>, sht: f64, hum: Json, origin: Option<Json>) -> Moment {
        let mut data = json!({
            "temperature": [{"unit": "°C", "value": sht}],
            "humidity": [{"unit": "%RH", "value": hum}],
        });
        if let Some(ds) = ds {
            data["ext_temperature"] = json!([{"unit": "°C", "value": ds}]);
        }
        if let Some(o) = origin {
            data[ORIGIN] = o;
        }
        moment(secs, data)
    }

    /// The records of the LHT65N log entries `[24.5,21.37,51.2,2024-05-01 09:50:00]` and
    /// `[327.67,-2.05,48,2024-05-01 10:10:00]` (the absent probe's 327.67 under `origin`).
    fn lht65n_logged() -> [Moment; 2] {
        [
            lht65n(1_714_557_000, Some(24.5), 21.37, json!(51.2), None),
            lht65n(
                1_714_558_200,
                None,
                -2.05,
                json!(48),
                Some(json!({"TempC_DS": 327.67})),
            ),
        ]
    }

    /// A Dragino datalog (a poll reply's `DATALOG` text, each entry `[probe,temperature,
    /// humidity,date time],`) is read as the table's columns say: a record per entry in its
    /// order, at its time in the table's zone, its values mapped by the live names; a value
    /// the table leaves out (the absent probe's 327.67, an interrupt's `HighTrue`) under the
    /// entry's own `origin`. The same log under `data` (the decoder's retransmission reply)
    /// is read with a dotted path.
    #[test]
    fn a_dragino_datalog_text_is_read_by_its_columns() {
        let log = "[24.5,21.37,51.2,2024-05-01 09:50:00],[327.67,-2.05,48,2024-05-01 10:10:00],\
                   [HighTrue,21.5,47.9,2024-05-01 10:30:00],";
        let [first, second] = lht65n_logged();
        let expected = [
            first,
            second,
            lht65n(
                1_714_559_400,
                None,
                21.5,
                json!(47.9),
                Some(json!({"TempC_DS": "HighTrue"})),
            ),
        ];
        let t = Table::parse(LHT65N).unwrap();
        let m = by_table(&t, json!({"DATALOG": log, "Node_type": "LHT65N"}));
        assert_eq!(m.history, expected);
        assert_eq!(
            Json::Object(m.data),
            json!({"origin": {"Node_type": "LHT65N"}})
        );
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.rec_type, rec_type::ENVIRONMENT);
        let t = Table::parse(&LHT65N.replace("\"DATALOG\"", "\"data.DATALOG\"")).unwrap();
        let m = by_table(
            &t,
            json!({"data": {"Node_type": "LHT65N", "DATALOG": log},
                   "retransmission_Status": "retransmission_Status"}),
        );
        assert_eq!(m.history, expected);
        assert_eq!(
            Json::Object(m.data),
            json!({"origin": {"data": {"Node_type": "LHT65N"},
                              "retransmission_Status": "retransmission_Status"}})
        );
    }

    /// An LHT52's log has five values an entry (its decoder's `[a,b,c,ext,date time],`): the
    /// columns name them, the time last; one the table does not map stays under `origin`.
    #[test]
    fn an_lht52_datalog_has_its_own_columns() {
        let t = Table::parse(
            "[fields]\nTempC_SHT = { field = \"temperature\", unit = \"°C\" }\n\
             Hum_SHT = { field = \"humidity\", unit = \"%RH\" }\n\
             TempC_DS = { field = \"ext_temperature\", unit = \"°C\" }\n\
             [history]\npath = \"DATALOG\"\ntime = \"time\"\nzone = \"utc\"\n\
             columns = [\"TempC_SHT\", \"TempC_DS\", \"Hum_SHT\", \"Ext\", \"time\"]\n",
        )
        .unwrap();
        let m = by_table(
            &t,
            json!({"Node_type": "LHT52",
                   "DATALOG": "[22.51,19.9,45.6,1,2024-05-01 09:50:00],[22.6,20,45.1,1,2024-05-01 10:10:00],"}),
        );
        let reading = |sht: Json, ds: Json, hum: Json| {
            json!({
                "temperature": [{"unit": "°C", "value": sht}],
                "ext_temperature": [{"unit": "°C", "value": ds}],
                "humidity": [{"unit": "%RH", "value": hum}],
                "origin": {"Ext": 1},
            })
        };
        assert_eq!(
            m.history,
            [
                moment(
                    1_714_557_000,
                    reading(json!(22.51), json!(19.9), json!(45.6))
                ),
                moment(1_714_558_200, reading(json!(22.6), json!(20), json!(45.1))),
            ]
        );
        assert_eq!(m.rec_type, rec_type::ENVIRONMENT);
    }

    /// What a text log holds that makes no record stays under `origin` as text, each entry as
    /// written, joined by commas, in its order: entries not of one value per column, text
    /// that is no entry, a time that is none (a month 13, a time in milliseconds), one the
    /// zone does not have; those past [`MAX_MOMENTS`]. One warning per kind, counted, naming
    /// the first; the good entries around them are records all the same.
    #[test]
    fn a_malformed_datalog_keeps_its_good_entries_and_the_rest_under_origin() {
        let t = Table::parse(LHT65N).unwrap();
        let log = "[24.5,21.37,51.2,2024-05-01 09:50:00],[1,2,3],garbage\u{1b}\n,\
                   [1,2,3,2024-13-01 00:00:00],[1,2,3,1714557000000],\
                   [327.67,-2.05,48,2024-05-01 10:10:00],[1,2,3,2024-05-01 10:20:00";
        let m = by_table(&t, json!({"DATALOG": log}));
        assert_eq!(m.history, lht65n_logged());
        assert_eq!(
            Json::Object(m.data),
            json!({"origin": {"DATALOG": "[1,2,3],garbage\u{1b},[1,2,3,2024-13-01 00:00:00],\
                                          [1,2,3,1714557000000],[1,2,3,2024-05-01 10:20:00"}})
        );
        assert_eq!(
            m.warnings,
            ["5 DATALOG entries without a time read as Unix seconds, RFC 3339 or a UTC date and \
              time (the first: DATALOG[1] \"[1,2,3]\" is not [TempC_DS,TempC_SHT,Hum_SHT,time]), \
              kept under origin"]
        );
        // Each kind first: text that is no entry, escaped; a bad time; milliseconds.
        for (log, first) in [
            (
                "garbage\u{1b}\n, more",
                "DATALOG[0] \"garbage\\u{1b}\\n, more\" is not [TempC_DS,TempC_SHT,Hum_SHT,time]",
            ),
            (
                "[1,2,3,2024-13-01 00:00:00]",
                "DATALOG[0].time \"2024-13-01 00:00:00\"",
            ),
            // Cut at 40 bytes of the text as written, an escape whole.
            (
                format!("{}\u{1b}{}", "x".repeat(39), "y".repeat(10)).as_str(),
                format!(
                    "DATALOG[0] \"{}\\u{{1b}}…\" is not [TempC_DS,TempC_SHT,Hum_SHT,time]",
                    "x".repeat(39)
                )
                .as_str(),
            ),
            (
                "[1,2,3,1714557000000]",
                "DATALOG[0].time 1714557000000, milliseconds?",
            ),
            (
                "[1,2,3,1969-12-31 23:59:59]",
                "DATALOG[0].time \"1969-12-31 23:59:59\" is before 1970",
            ),
        ] {
            let m = by_table(&t, json!({ "DATALOG": log }));
            assert!(m.history.is_empty(), "{log}");
            assert_eq!(
                m.warnings,
                [format!(
                    "1 DATALOG entry without a time read as Unix seconds, RFC 3339 or a UTC \
                     date and time (the first: {first}), kept under origin"
                )]
            );
        }
        // An endless log: 32 records, the rest kept as written, in one pass.
        let entry = "[1,20.5,40,2024-05-01 09:50:00],";
        let m = by_table(&t, json!({ "DATALOG": entry.repeat(100_000) }));
        assert_eq!(m.history.len(), MAX_MOMENTS);
        let left = &m.data[ORIGIN]["DATALOG"];
        assert_eq!(
            left.as_str().map(|l| l.len()),
            Some((100_000 - MAX_MOMENTS) * entry.len() - 1)
        );
        assert_eq!(
            m.warnings,
            [
                "99968 DATALOG entries past the 32 records of their own time an uplink makes, \
              kept under origin"
            ]
        );
    }

    /// A text log is read for records no further than its 32nd record or its
    /// [`MAX_LOG_READ`]th entry: the rest, however long, stays under `origin` as written, its
    /// entries counted unread (a bad time after the records no reason of its own, a good entry
    /// after a thousand empty ones no record), so a log of empty entries costs about what its
    /// text does.
    #[test]
    fn a_text_log_is_read_no_further_than_its_bounds() {
        let t = Table::parse(LHT65N).unwrap();
        let good = "[1,20.5,40,2024-05-01 09:50:00]";
        let log = [good; MAX_MOMENTS].join(",") + ",[1,2,3,2024-13-01 00:00:00],[],junk";
        let m = by_table(&t, json!({ "DATALOG": log }));
        assert_eq!(m.history.len(), MAX_MOMENTS);
        assert_eq!(
            m.data[ORIGIN]["DATALOG"],
            "[1,2,3,2024-13-01 00:00:00],[],junk"
        );
        assert_eq!(
            m.warnings,
            [
                "3 DATALOG entries past the 32 records of their own time an uplink makes, kept \
              under origin"
            ]
        );
        let empty = 100_000;
        let log = format!("{}{good}", "[], ".repeat(empty));
        let m = by_table(&t, json!({ "DATALOG": log }));
        assert!(m.history.is_empty());
        let left = ["[]"; 100_000].join(",") + "," + good;
        assert_eq!(m.data[ORIGIN]["DATALOG"], left);
        assert_eq!(
            m.warnings,
            [
                "1024 DATALOG entries without a time read as Unix seconds, RFC 3339 or a UTC \
                 date and time (the first: DATALOG[0] \"[]\" is not \
                 [TempC_DS,TempC_SHT,Hum_SHT,time]), kept under origin"
                    .to_string(),
                format!(
                    "{} DATALOG entries past the 1024 of a text log read for records, kept \
                     under origin",
                    empty + 1 - MAX_LOG_READ
                ),
            ]
        );
    }

    /// A text where the table expects an array, or the other way round, stays whole under
    /// `origin` with a warning saying which the table needs.
    #[test]
    fn a_history_of_the_other_form_is_kept_whole() {
        let array = Table::parse(&LHT65N.replace("columns", "#").replace("zone", "#")).unwrap();
        let text = Table::parse(LHT65N).unwrap();
        let log = json!("[1,20.5,40,2024-05-01 09:50:00],");
        let list = json!([{"time": 1_714_557_000, "TempC_SHT": 20.5}]);
        for (t, v, warning) in [
            (
                &array,
                &log,
                "DATALOG: text, not an array of entries (a text log needs columns in \
                 [history]), kept under origin",
            ),
            (
                &text,
                &list,
                "DATALOG: not a text log of entries, kept under origin",
            ),
        ] {
            let m = by_table(t, json!({ "DATALOG": v }));
            assert!(m.history.is_empty());
            assert_eq!(m.data[ORIGIN], json!({ "DATALOG": v }));
            assert_eq!(m.warnings, [warning]);
        }
    }

    /// What a codec's history holds that makes no record stays under the live record's
    /// `origin`, in its order: entries that are no object (nested arrays too) or have no time
    /// a record can carry, counted in one warning naming the first; those past
    /// [`MAX_MOMENTS`], counted in another; one of nothing but its time, quietly. The live
    /// readings are kept whatever the history holds.
    #[test]
    fn a_codecs_bad_or_endless_history_is_bounded_and_kept_under_origin() {
        let t = Table::parse(MILESIGHT).unwrap();
        let bad = [
            json!(5),
            json!([{"timestamp": 1_700_000_000, "temperature": 1}]),
            json!({"temperature": 2}),
            json!({"timestamp": "yesterday", "temperature": 3}),
            json!({"timestamp": -5, "temperature": 4}),
            json!({"timestamp": -0.5, "temperature": 5}),
            json!({"timestamp": 1e300, "temperature": 6}),
            json!({"timestamp": "1700000000", "temperature": 7}),
            json!({"timestamp": true, "temperature": 8}),
            json!({"timestamp": 253_402_300_800_u64, "temperature": 9}),
        ];
        let good = |i: u64| json!({"timestamp": 1_700_000_000 + 60 * i, "temperature": i});
        let mut entries: Vec<Json> = bad.to_vec();
        entries.push(json!({"timestamp": 1_700_000_000}));
        entries.extend((0..100_000).map(good));
        let m = by_table(
            &t,
            json!({"temperature": 21, "history": entries, "nested": [[1]]}),
        );
        assert_eq!(m.history.len(), MAX_MOMENTS);
        for (i, h) in m.history.iter().enumerate() {
            assert_eq!(
                h,
                &moment(
                    1_700_000_000 + 60 * i as u64,
                    json!({"temperature": [{"context_id": "3", "unit": "°C", "value": i}]}),
                )
            );
        }
        let mut left: Vec<Json> = bad.to_vec();
        left.push(json!({"timestamp": 1_700_000_000}));
        left.extend((MAX_MOMENTS as u64..100_000).map(good));
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"context_id": "3", "unit": "°C", "value": 21}],
                "origin": {"history": left, "nested": [[1]]},
            })
        );
        assert_eq!(
            m.warnings,
            [
                "10 history entries without a time read as Unix seconds or RFC 3339 (the \
                 first: history[0] is no object), kept under origin",
                "99968 history entries past the 32 records of their own time an uplink makes, \
                 kept under origin",
            ]
        );
        // Each reason, as the first.
        for (entry, first) in [
            (json!({"temperature": 2}), "history[0] has no timestamp"),
            (
                json!({"timestamp": "x".repeat(100)}),
                "history[0].timestamp \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…",
            ),
            (
                json!({"timestamp": 1_700_000_000_000_u64, "temperature": 2}),
                "history[0].timestamp 1700000000000, milliseconds?",
            ),
            (
                json!({"timestamp": 1e300, "temperature": 2}),
                "history[0].timestamp 1e+300",
            ),
        ] {
            let m = by_table(&t, json!({ "history": [entry] }));
            assert_eq!(
                m.warnings,
                [format!(
                    "1 history entry without a time read as Unix seconds or RFC 3339 (the \
                     first: {first}), kept under origin"
                )]
            );
            assert!(m.history.is_empty());
        }
        // A history that is no array is kept as it is.
        let m = by_table(&t, json!({"history": {"timestamp": 1_700_000_000}}));
        assert_eq!(
            Json::Object(m.data),
            json!({"origin": {"history": {"timestamp": 1_700_000_000}}})
        );
        assert_eq!(
            m.warnings,
            ["history: not an array of entries, kept under origin"]
        );
    }

    /// A normalizer's measurement of an entry's time is a copy of that entry: a field the
    /// entry mapped is not read from it again, one it did not map is.
    #[test]
    fn a_normalized_copy_of_a_history_entry_is_one_reading() {
        let t = Table::parse(MILESIGHT).unwrap();
        let object = obj(json!({"history": [{"timestamp": 1_700_000_000, "temperature": 20.5}]}));
        let copy = obj(json!({"time": "2023-11-14T22:13:20Z",
                              "air": {"temperature": 20.5, "relativeHumidity": 40}}));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_003_600);
        let m = map(Some(&object), Some(&t), None, &[copy], now);
        assert_eq!(
            m.history,
            [moment(
                1_700_000_000,
                json!({
                    "temperature": [{"context_id": "3", "unit": "°C", "value": 20.5}],
                    "humidity": [{"unit": "%RH", "value": 40}],
                    "origin": {"normalized": [{"air": {"temperature": 20.5}}]},
                })
            )]
        );
    }

    /// Normalized measurements beside a codec's history: one of a time no entry has makes a
    /// moment after the entries', with its unmapped part under its own `origin.normalized`;
    /// a copy of an entry keeps the entry's unmapped fields and adds its own unmapped part,
    /// under `normalized_` where the entry has a `normalized` of its own.
    #[test]
    fn normalized_measurements_beside_history_entries_keep_every_unmapped_part() {
        let t = Table::parse(MILESIGHT).unwrap();
        let object = obj(json!({"history": [
            {"timestamp": 1_700_000_000, "temperature": 20.5, "flag": 1, "normalized": 7},
        ]}));
        let copy = obj(json!({"time": "2023-11-14T22:13:20Z", "extra": 1,
                              "air": {"temperature": 20.5, "relativeHumidity": 40}}));
        let earlier = obj(json!({"time": "2023-11-14T21:56:40Z", "extra": 2,
                                 "air": {"temperature": 19}}));
        let now = UNIX_EPOCH + Duration::from_secs(1_700_003_600);
        let m = map(Some(&object), Some(&t), None, &[copy, earlier], now);
        assert_eq!(
            m.history,
            [
                moment(
                    1_700_000_000,
                    json!({
                        "temperature": [{"context_id": "3", "unit": "°C", "value": 20.5}],
                        "humidity": [{"unit": "%RH", "value": 40}],
                        "origin": {"flag": 1, "normalized": 7, "normalized_": [
                            {"extra": 1, "air": {"temperature": 20.5}},
                        ]},
                    })
                ),
                moment(
                    1_699_999_000,
                    json!({
                        "temperature": [{"unit": "°C", "value": 19}],
                        "origin": {"normalized": [{"extra": 2}]},
                    })
                ),
            ]
        );
        assert_eq!(Json::Object(m.data), json!({}));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    /// A value shown in a warning is written up to its cut only, whatever its length, and cut
    /// at a character's end.
    #[test]
    fn a_clipped_value_is_written_no_further_than_its_cut() {
        struct Endless(std::cell::Cell<usize>);
        impl std::fmt::Display for Endless {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                for _ in 0..100_000 {
                    f.write_str("x")?;
                    self.0.set(self.0.get() + 1);
                }
                Ok(())
            }
        }
        let endless = Endless(std::cell::Cell::new(0));
        assert_eq!(clipped(&endless, 40), format!("{}…", "x".repeat(40)));
        assert_eq!(endless.0.get(), 40);
        assert_eq!(clipped(&"x".repeat(40), 40), "x".repeat(40));
        assert_eq!(clipped(&"é".repeat(30), 41), format!("{}…", "é".repeat(20)));
        assert_eq!(clipped(&json!([[1], 2]), 4), "[[1]…");
        // A value that goes on writing after the cut (its errors ignored) adds nothing.
        struct Deaf;
        impl std::fmt::Display for Deaf {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                for part in ["xxxxxx", "y", "z"] {
                    let _ = f.write_str(part);
                }
                Ok(())
            }
        }
        assert_eq!(clipped(&Deaf, 4), "xxxx…");
    }

    /// A normalizer's copy of an entry timed a minute or less before the uplink, or after it
    /// (a device clock ahead), joins the entry as an older one does: none of its readings goes
    /// into the live record, where it would be taken for the state now.
    #[test]
    fn a_normalized_copy_of_a_recent_or_future_history_entry_is_one_reading() {
        let t = Table::parse(MILESIGHT).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for secs in [1_700_000_000 - 10, 1_700_000_000 + 300] {
            let object = obj(json!({"history": [{"timestamp": secs, "temperature": 20.5}]}));
            let time = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
            let time = time
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let copy = obj(json!({"time": time, "air": {"temperature": 20.5}}));
            let m = map(Some(&object), Some(&t), None, &[copy], now);
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let left = json!({"air": {"temperature": 20.5}});
            assert_eq!(m.history, [joined(time, left)], "{secs}");
            assert_eq!(Json::Object(m.data), json!({}), "{secs}");
            assert!(m.health.is_empty() && m.warnings.is_empty(), "{secs}");
        }
    }

    /// A normalizer's copy of the live object that has the time of a history entry (one
    /// stamped with the uplink's time) joins the entry, but reads no field the live object
    /// already gave: that stays under the entry's `origin`, not read twice.
    #[test]
    fn a_normalized_copy_of_now_joining_an_entry_reads_no_live_field_again() {
        let t = Table::parse(&format!("normalized_battery = \"charge\"\n{MILESIGHT}")).unwrap();
        let secs = 1_700_000_000;
        let now = UNIX_EPOCH + Duration::from_secs(secs);
        let object = obj(json!({"battery": 90, "temperature": 21, "humidity": 40,
                                "history": [{"timestamp": secs, "temperature": 20.5}]}));
        let copy = obj(json!({"time": "2023-11-14T22:13:20Z", "battery": 90,
                              "air": {"temperature": 20.5}}));
        let m = map(Some(&object), Some(&t), None, &[copy], now);
        assert_eq!(
            Json::Object(m.health),
            json!({"charge": [{"unit": "%", "value": 90}]})
        );
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"context_id": "3", "unit": "°C", "value": 21}],
                "humidity": [{"context_id": "4", "unit": "%RH", "value": 40}],
            })
        );
        let left = json!({"air": {"temperature": 20.5}, "battery": 90});
        assert_eq!(m.history, [joined(now, left)]);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    /// An entry's time finer than a millisecond is the millisecond a record shows, as that of
    /// a normalizer's copy of the entry with the same digits in RFC 3339 is: the copy joins
    /// it. A whole millisecond stays exact, up to 9999.
    #[test]
    fn an_entry_time_finer_than_a_millisecond_is_its_copys_millisecond() {
        let t = Table::parse(MILESIGHT).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_003_600);
        for (secs, text, ms) in [
            (1_700_000_000.123_6, "2023-11-14T22:13:20.1236Z", 123),
            (1_700_000_000.999_9, "2023-11-14T22:13:20.9999Z", 999),
            (1_700_000_000.000_4, "2023-11-14T22:13:20.0004Z", 0),
            (1_700_000_000.123, "2023-11-14T22:13:20.123Z", 123),
        ] {
            let object = obj(json!({"history": [{"timestamp": secs, "temperature": 20.5}]}));
            let copy = obj(json!({"time": text, "air": {"temperature": 20.5}}));
            let m = map(Some(&object), Some(&t), None, &[copy], now);
            let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
            let left = json!({"air": {"temperature": 20.5}});
            assert_eq!(m.history, [joined(time, left)], "{text}");
        }
        for (secs, ms) in [
            (253_402_300_799.999, 253_402_300_799_999),
            (9_999_999_999.123, 9_999_999_999_123),
        ] {
            let time = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(entry_time(&json!(secs)), Some(time), "{secs}");
        }
    }

    /// A `[history]` that could not be found, or whose entries `[fields]` would address
    /// through the array, makes the table bad, in one line.
    #[test]
    fn a_bad_history_section_is_one_line() {
        for (history, fields, error) in [
            (
                "path = \"\"\ntime = \"t\"",
                "",
                "history.path: \"\" must be the array's key, nested keys joined with a dot, \
                 none empty nor ending in []",
            ),
            (
                "path = \"history[]\"\ntime = \"t\"",
                "",
                "history.path: \"history[]\" must be the array's key, nested keys joined with \
                 a dot, none empty nor ending in []",
            ),
            (
                "path = \"data..history\"\ntime = \"t\"",
                "",
                "history.path: \"data..history\" must be the array's key, nested keys joined \
                 with a dot, none empty nor ending in []",
            ),
            (
                "path = \"data[].history\"\ntime = \"t\"",
                "",
                "history.path: \"data[].history\" must be the array's key, nested keys joined \
                 with a dot, none empty nor ending in []",
            ),
            (
                "path = \".history\"\ntime = \"t\"",
                "",
                "history.path: \".history\" must be the array's key, nested keys joined with a \
                 dot, none empty nor ending in []",
            ),
            (
                "path = \"data.h\"\ntime = \"t\"",
                "\"data.h.temperature\" = { field = \"temperature\" }",
                "fields.data.h.temperature: data.h is the [history] array, whose entries \
                 [fields] maps by their own keys (temperature, not data.h.temperature)",
            ),
            (
                "path = \"h\"\ntime = \"\"",
                "",
                "history.time: \"\" must be a key of each entry itself, without a dot or []",
            ),
            (
                "path = \"h\"\ntime = \"meta.ts\"",
                "",
                "history.time: \"meta.ts\" must be a key of each entry itself, without a dot or \
                 []",
            ),
            (
                "path = \"h\"\ntime = \"ts[]\"",
                "",
                "history.time: \"ts[]\" must be a key of each entry itself, without a dot or []",
            ),
            (
                "path = \"h\"\ntime = \"t\"",
                "\"h.temperature\" = { field = \"temperature\" }",
                "fields.h.temperature: h is the [history] array, whose entries [fields] maps \
                 by their own keys (temperature, not h.temperature)",
            ),
            ("path = \"h\"", "", "history: missing field `time` (line 3)"),
            (
                "path = \"h\"\ntime = \"t\"\nzone = \"utc\"",
                "",
                "history.zone: is for a text log's times (with columns); an array's entries' \
                 times are Unix seconds or RFC 3339",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"a\", \"t\"]",
                "",
                "history.zone: \"utc\" or \"local\" must say whose clock a text log's times are \
                 of (they carry no zone)",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"a\", \"t\"]\nzone = \"UTC\"",
                "",
                "history.zone: unknown variant `UTC`, expected `utc` or `local` (line 7)",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"a\", \"b\"]\nzone = \"utc\"",
                "",
                "history.columns: none is the time, \"t\": name its column so",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"t\"]\nzone = \"utc\"",
                "",
                "history.columns: only the time, \"t\": name a value besides it",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"a\", \"t\", \"b\", \"a\"]\n\
                 zone = \"utc\"",
                "",
                "history.columns: \"a\" is column 1 and 4; name each once",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"t\", \"x.y\"]\nzone = \"utc\"",
                "",
                "history.columns: \"x.y\" must be a key of each entry, neither empty nor with a \
                 dot or []",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = [\"t\", \"\"]\nzone = \"utc\"",
                "",
                "history.columns: \"\" must be a key of each entry, neither empty nor with a dot \
                 or []",
            ),
            (
                "path = \"h\"\ntime = \"t\"\ncolumns = \"t\"\nzone = \"utc\"",
                "",
                "history.columns: invalid type: string \"t\", expected a sequence (line 6)",
            ),
        ] {
            let text = format!("[fields]\n{fields}\n[history]\n{history}\n");
            assert_eq!(Table::parse(&text).unwrap_err(), error, "{text}");
        }
    }

    /// Timed normalized measurements make at most [`MAX_MOMENTS`] records, none for a time
    /// alone; one timed a minute or less before the uplink, or after it, is of now (its time
    /// kept under `origin`); those past the cap stay whole, unmapped, under `origin`.
    #[test]
    fn timed_measurements_make_a_bounded_number_of_records_of_something() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |before: i64| {
            let t = time::OffsetDateTime::from(now) - time::Duration::seconds(before);
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let mut normalized = vec![obj(json!({"time": at(100)}))];
        normalized.extend(
            (0..40).map(|i| obj(json!({"time": at(3600 * (i + 1)), "air": {"temperature": i}}))),
        );
        normalized.push(obj(
            json!({"time": at(30), "air": {"relativeHumidity": 40}}),
        ));
        normalized.push(obj(json!({"time": at(-5), "air": {"co2": 600}})));
        let m = map(None, None, None, &normalized, now);
        assert_eq!(m.history.len(), MAX_MOMENTS);
        assert!(m.history.iter().all(|h| h.data.contains_key("temperature")));
        let left: Vec<_> = [json!({"time": at(100)})]
            .into_iter()
            .chain((32..40).map(|i| json!({"time": at(3600 * (i + 1)), "air": {"temperature": i}})))
            .chain([json!({"time": at(30)}), json!({"time": at(-5)})])
            .collect();
        assert_eq!(
            Json::Object(m.data.clone()),
            json!({
                "humidity": [{"unit": "%RH", "value": 40}],
                "co2": [{"unit": "ppm", "value": 600}],
                "origin": {"normalized": left},
            })
        );
    }

    /// A record of mapped readings goes to their domain, not to the recType of objects that
    /// mapped nothing: every field the built-in table maps (other than device values) has
    /// one, and so have the names the built-in codecs give the same quantities.
    #[test]
    fn mapped_readings_have_a_domain() {
        for b in NORMALIZED.iter().filter(|b| !b.health) {
            let (path, field) = (b.path, b.field);
            let mut v = match b.kind {
                Kind::Num => json!(b.range.0.max(1.0)),
                Kind::Bool | Kind::Leak => json!(true),
                Kind::OpenState => json!("closed"),
                Kind::NumOrBool | Kind::Flag | Kind::Values(_) => {
                    unreachable!("only tables read so")
                }
            };
            for key in path.rsplit('.') {
                v = json!({ key: v });
            }
            let m = map(None, None, None, &[obj(v)], UNIX_EPOCH);
            assert!(m.data.contains_key(field), "{path}");
            assert_ne!(m.rec_type, rec_type::UNMAPPED, "{path} -> {field}");
        }
        let t =
            Table::parse("[fields]\na = { field = \"voc\" }\nb = { field = \"ozone\" }\n").unwrap();
        for key in ["a", "b"] {
            let m = by_table(&t, json!({ key: 3 }));
            assert_eq!(m.rec_type, rec_type::ENVIRONMENT, "{key}");
        }
    }

    /// Unmapped fields are never lost: the same unmapped field in two measurements, and an
    /// object of the codec's own with a `normalized` key, all stay under `origin`.
    #[test]
    fn unmapped_fields_of_every_measurement_are_kept() {
        let n = [
            obj(json!({"soil": {"moisture": 30}})),
            obj(json!({"soil": {"moisture": 31}})),
        ];
        let own = obj(json!({"normalized": "own"}));
        let m = map(Some(&own), None, None, &n, UNIX_EPOCH);
        assert_eq!(
            m.data["origin"],
            json!({
                "normalized": "own",
                "normalized_": [{"soil": {"moisture": 30}}, {"soil": {"moisture": 31}}],
            })
        );
    }

    /// An empty object maps nowhere, so it is kept, as any other unmapped field; an object
    /// whose fields all mapped is not.
    #[test]
    fn an_empty_object_is_kept_in_origin() {
        let t = Table::parse("[fields]\n\"bat.mv\" = { field = \"voltage\", health = true }\n")
            .unwrap();
        let o = obj(json!({"alarms": {}, "bat": {"mv": 3012}, "t": 1}));
        let m = map(Some(&o), Some(&t), None, &[], UNIX_EPOCH);
        assert_eq!(m.data["origin"], json!({"alarms": {}, "t": 1}));
    }

    /// A field under the key `""` has the path `.pir`: it is not the top-level `pir` (a
    /// fuzzer's find: `{"": {"pir": false}}` made a motion reading), in an entry of the
    /// codec's history neither.
    #[test]
    fn a_field_under_an_empty_key_is_not_a_top_level_one() {
        let t = Table::parse(
            "[fields]\npir = { field = \"presence\" }\n[history]\npath = \"h\"\ntime = \"t\"\n",
        )
        .unwrap();
        let m = by_table(
            &t,
            json!({"": {"pir": false}, "h": [{"t": 1_700_000_000, "": {"pir": true}}]}),
        );
        assert!(!m.has_readings(), "{:?}", m.data);
        assert_eq!(m.data["origin"], json!({"": {"pir": false}}));
        assert_eq!(m.history.len(), 1);
        assert_eq!(
            Json::Object(m.history[0].data.clone()),
            json!({"origin": {"": {"pir": true}}})
        );
    }

    #[test]
    fn a_codec_table_maps_its_own_names_and_keeps_the_rest() {
        let t = Table::parse(
            r#"
            [fields]
            TempC_SHT = { field = "temperature", unit = "°C" }
            "bat.mv" = { field = "voltage", unit = "V", scale = 0.001, health = true }
            door = { field = "open" }
            "#,
        )
        .unwrap();
        let o = obj(
            json!({"TempC_SHT": 22.5, "bat": {"mv": 3012, "status": 3}, "door": true,
            "mode": "x", "list": [1, 2]}),
        );
        let m = map(Some(&o), Some(&t), None, &[], UNIX_EPOCH);
        assert_eq!(m.rec_type, rec_type::OPENCLOSE);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"value": 22.5, "unit": "°C"}],
                "open": [{"value": true}],
                "origin": {"bat": {"status": 3}, "mode": "x", "list": [1, 2]},
            })
        );
        assert_eq!(m.health["voltage"], json!([{"value": 3.012, "unit": "V"}]));
        // Without a table nothing is guessed: all of it is kept under origin.
        let m = map(Some(&o), None, None, &[], UNIX_EPOCH);
        assert_eq!(m.rec_type, rec_type::UNMAPPED);
        assert_eq!(
            Json::Object(m.data),
            json!({"origin": Json::Object(o.clone())})
        );
        let t = Table::parse("rec_type = \"io.microshare.feedback.unpacked\"").unwrap();
        assert_eq!(
            map(Some(&o), Some(&t), None, &[], UNIX_EPOCH).rec_type,
            rec_type::FEEDBACK
        );
        assert!(Table::parse("[fields]\nx = { unit = \"V\" }").is_err());
    }

    /// A scale that is no number, or 0 (a typo for 0.01, say, which would make every reading
    /// of the field 0), makes the table bad.
    #[test]
    fn a_scale_of_zero_or_no_number_is_refused() {
        for scale in ["nan", "inf", "0", "-0.0"] {
            let e = Table::parse(&format!(
                "[fields]\nx = {{ field = \"a\", scale = {scale} }}"
            ));
            assert_eq!(
                e.unwrap_err(),
                "fields.x: scale must be a finite number other than 0",
                "{scale}"
            );
        }
    }

    /// Scaling gives the decimal the device meant, not the binary product's noise.
    #[test]
    fn scale_gives_the_decimal_not_the_product() {
        let t = Table::parse(
            r#"
            [fields]
            p = { field = "pressure", scale = 0.1 }
            v = { field = "voltage", scale = 0.001 }
            w = { field = "power", scale = 3 }
            q = { field = "current", scale = 0.3 }
            c = { field = "co2" }
            "#,
        )
        .unwrap();
        let value = |key: &str, v: Json| {
            let m = by_table(&t, json!({ key: v }));
            let field = &t.fields[key].field;
            m.data[field.as_str()][0]["value"].clone()
        };
        assert_eq!(value("p", json!(10133)), json!(1013.3));
        assert_eq!(value("v", json!(9)), json!(0.009));
        // A whole number is divided, not cut to 15 digits.
        assert_eq!(
            value("p", json!(1_234_567_890_123_456_i64)),
            json!(123_456_789_012_345.6)
        );
        assert_eq!(value("p", json!(0.7)), json!(0.07));
        assert_eq!(value("w", json!(0.1)), json!(0.3));
        // A scale near no 1/k multiplies: 0.3 is no third.
        assert_eq!(value("q", json!(10)), json!(3));
        // Without a scale the codec's number is kept as it is.
        assert_eq!(value("c", json!(0.1 + 0.2)), json!(0.1 + 0.2));
        for n in -4000..4000 {
            assert_eq!(
                value("p", json!(n)),
                number(n as f64 / 10.0).unwrap(),
                "{n}"
            );
        }
    }

    /// A whole number without a scale keeps its value, past 2^53 too (a counter), where f64
    /// would change it; scaled, it is a decimal as any other.
    #[test]
    fn a_whole_number_keeps_its_value() {
        let t = Table::parse(
            "[fields]\nn = { field = \"count\" }\nk = { field = \"kwh\", scale = 0.001 }\n",
        )
        .unwrap();
        for n in [
            json!(9_007_199_254_740_993_u64),
            json!(u64::MAX),
            json!(i64::MIN),
        ] {
            let m = by_table(&t, json!({ "n": n }));
            assert_eq!(m.data["count"], json!([{ "value": n }]));
        }
        let m = by_table(&t, json!({"k": 1_234_567}));
        assert_eq!(m.data["kwh"], json!([{"value": 1234.567}]));
    }

    /// A codec's float of 17 digits (what `0.1 * 213` gives in JavaScript) comes out as it was
    /// written, in a reading and under `origin`: serde_json reads it exactly
    /// (`float_roundtrip`); without that it read `-3.686504998650299e84` one bit off.
    #[test]
    fn a_float_of_17_digits_keeps_every_digit() {
        let t = Table::parse("[fields]\nt = { field = \"temperature\" }\n").unwrap();
        for text in ["21.299999999999997", "-3.686504998650299e+84"] {
            let object: Json =
                serde_json::from_str(&format!(r#"{{"t": {text}, "u": {text}}}"#)).unwrap();
            let m = by_table(&t, object);
            assert_eq!(
                m.data["temperature"].to_string(),
                format!(r#"[{{"value":{text}}}]"#)
            );
            assert_eq!(m.data["origin"].to_string(), format!(r#"{{"u":{text}}}"#));
        }
    }

    /// A number written as text, as `toFixed` returns it, is that number; other text is kept.
    #[test]
    fn a_number_written_as_text_is_mapped() {
        let t = Table::parse(
            r#"
            [fields]
            t = { field = "temperature", unit = "°C" }
            mv = { field = "voltage", unit = "V", scale = 0.001, health = true }
            h = { field = "humidity" }
            c = { field = "co2" }
            p = { field = "pressure" }
            "#,
        )
        .unwrap();
        let o = obj(json!({"t": "21.5", "mv": " 3012 ", "h": "40 %", "c": "NaN", "p": "1e400"}));
        let m = map(Some(&o), Some(&t), None, &[], UNIX_EPOCH);
        assert_eq!(m.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"value": 21.5, "unit": "°C"}],
                "origin": {"h": "40 %", "c": "NaN", "p": "1e400"},
            })
        );
        assert_eq!(m.health["voltage"], json!([{"value": 3.012, "unit": "V"}]));
    }

    /// A table field named like a key the record sets itself is refused, naming the key,
    /// rather than losing its readings or overwriting the device's id.
    #[test]
    fn a_table_field_named_like_the_records_own_keys_is_refused() {
        let parse = |target: &str| Table::parse(&format!("[fields]\n\"a.b\" = {target}"));
        for name in ["origin", "device_health", "meta", "time", "unpacker"] {
            let e = parse(&format!("{{ field = \"{name}\" }}")).unwrap_err();
            assert!(e.starts_with(&format!("fields.a.b: \"{name}\" is")), "{e}");
        }
        let e = parse("{ field = \"id\", health = true }").unwrap_err();
        assert!(e.starts_with("fields.a.b: device_health.id"), "{e}");
        // The same names are free where the record does not use them.
        assert!(parse("{ field = \"id\" }").is_ok());
        assert!(parse("{ field = \"meta\", health = true }").is_ok());
    }

    /// `depth` counts the levels of objects and arrays alike, its own included: the bound
    /// that keeps a record readable ([`MAX_DEPTH`]) holds for nested objects as for arrays.
    #[test]
    fn depth_counts_every_level_of_objects_and_arrays() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!([1])), 1);
        assert_eq!(depth(&json!({"a": {"b": [{"c": 1}]}, "d": 2})), 4);
        assert_eq!(depth(&json!([[{"a": [1]}], 2])), 4);
    }

    /// A normalized measurement of an earlier time is read into a record of its own time
    /// even where the codec's live object mapped the same quantity: the live reading is of
    /// now, the measurement of then, no copy of it.
    #[test]
    fn an_earlier_measurement_of_a_quantity_the_live_object_has_is_read() {
        let t = Table::parse(MILESIGHT).unwrap();
        let secs = 1_700_000_000;
        let now = UNIX_EPOCH + Duration::from_secs(secs);
        let object = obj(json!({"temperature": 21}));
        let earlier = obj(json!({"time": "2023-11-14T21:13:20Z", "air": {"temperature": 19.5}}));
        let m = map(Some(&object), Some(&t), None, &[earlier], now);
        assert_eq!(
            Json::Object(m.data),
            json!({"temperature": [{"context_id": "3", "unit": "°C", "value": 21}]})
        );
        let then = json!({"temperature": [{"unit": "°C", "value": 19.5}]});
        assert_eq!(m.history, [moment(secs - 3600, then)]);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    /// A frame has readings when a field mapped into the live record or its device values,
    /// history beside them or not; one of history alone, or whose fields all went to
    /// `origin`, has none. The devices page shows a frame's readings by it: a frame of
    /// readings and history that said none would leave the last frame's readings shown.
    #[test]
    fn a_frame_has_readings_when_a_live_field_or_device_value_mapped() {
        let t = Table::parse(MILESIGHT).unwrap();
        let entry = json!([{"timestamp": 1_700_000_000, "temperature": 20.5}]);
        for (decoded, readings, entries) in [
            (json!({"temperature": 21}), true, 0),
            (json!({"battery": 90}), true, 0),
            (json!({"temperature": 21, "history": entry}), true, 1),
            (json!({"battery": 90, "history": entry}), true, 1),
            (json!({"history": entry}), false, 1),
            (json!({"co": 3}), false, 0),
        ] {
            let m = by_table(&t, decoded.clone());
            assert_eq!(m.has_readings(), readings, "{decoded}");
            assert_eq!(m.history.len(), entries, "{decoded}");
        }
    }

    /// A normalized measurement timed a minute before the uplink is of now (its time kept
    /// under `origin`), one a second older a record of its own time: [`NOW_WITHIN`] is the
    /// minute itself.
    #[test]
    fn a_measurement_a_minute_old_is_of_now_and_an_older_one_of_its_own_time() {
        let secs = 1_700_000_000;
        let now = UNIX_EPOCH + Duration::from_secs(secs);
        let n = [
            obj(json!({"time": "2023-11-14T22:12:20Z", "air": {"temperature": 21}})),
            obj(json!({"time": "2023-11-14T22:12:19Z", "air": {"temperature": 20}})),
        ];
        let m = map(None, None, None, &n, now);
        assert_eq!(
            Json::Object(m.data),
            json!({
                "temperature": [{"unit": "°C", "value": 21}],
                "origin": {"normalized": [{"time": "2023-11-14T22:12:20Z"}]},
            })
        );
        let then = json!({"temperature": [{"unit": "°C", "value": 20}]});
        assert_eq!(m.history, [moment(secs - 61, then)]);
    }
}
