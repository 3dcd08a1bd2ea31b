//! Every device heard, for the status page: its last uplink's radio values, frame counter
//! and readings. Bounded: at [`DeviceTable::cap`] devices a new one evicts the one heard
//! least recently. Updated for every uplink, so an update reuses the entry's buffers and
//! allocates only for a device not seen before (or a longer packed reason, or more readings,
//! than before: at most [`READINGS_MAX`] are kept).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::Moment;
use crate::codec::{Context, Reading, Value};
use crate::format::cut;
use crate::ids::DevEui;
use crate::uplink::Uplink;

/// Devices kept by default: a busy gateway hears a few hundred.
pub const DEVICE_CAP: usize = 10_000;
/// Longest device name kept, as the status page's HTML or its JSON escape it, whichever is
/// longer: the name comes with each message, so it is bounded here.
const NAME_MAX: usize = 64;
/// Longest packed reason kept.
const REASON_MAX: usize = 160;
/// A device counts as silent after this many of its usual intervals without an uplink…
const SILENT_GAPS: u32 = 3;
/// …and never sooner than this (a device heard once: its interval is unknown).
const SILENT_MIN: Duration = Duration::from_secs(15 * 60);

/// How an uplink's payload was read.
pub enum Outcome<'a> {
    Decoded {
        codec: &'static str,
        rec_type: &'static str,
        readings: &'a [Reading],
        /// Battery and other device-domain values.
        health: &'a [Reading],
    },
    /// Decoded into Microshare fields by a JavaScript codec or from the network server's
    /// object (field names from the mapping tables, not the built-in codecs).
    Mapped {
        codec: &'static str,
        rec_type: &'static str,
        mapped: &'a crate::mapping::Mapped,
    },
    /// Sent packed: no codec, unknown device, or the codec failed (`reason`).
    Packed { reason: &'a str },
}

/// Most readings kept a device, decoded or mapped: what a status page row shows of its last
/// uplink. A mapped object may hold hundreds of fields, and a crafted Cayenne LPP payload
/// of 195,000 bytes decodes to 130,000 readings (9.4 MB kept per device, and the page
/// rendered every one of them under the table's lock). 16 shows every reading of the usual
/// uplinks and keeps a row bounded: 16 readings are about 1.2 KB of memory and under 1 KB
/// of HTML (the page's and the API's bounds, `status::query`, are measured with 16).
const READINGS_MAX: usize = 16;

/// A reading of a mapped object: its field name and unit are the tables' own, so owned.
struct MappedReading {
    field: String,
    value: serde_json::Value,
    unit: Option<String>,
    /// The table's `context_id` (a `[]` key's item index from its `context_base`).
    context_id: Option<String>,
}

pub struct DeviceTable {
    cap: usize,
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    devices: HashMap<DevEui, Device>,
    /// The devices by last uplink, oldest first: eviction without a scan.
    order: BTreeSet<(Instant, DevEui)>,
    evicted: u64,
}

struct Device {
    /// Shared, as are the tags, with the rows [`DeviceTable::select`] copies out.
    name: Option<Arc<str>>,
    tags: Arc<[String]>,
    /// The codec's id, or `None` when sent packed.
    codec: Option<&'static str>,
    rec_type: &'static str,
    packed_reason: String,
    /// On the wall clock, to show.
    first_seen: SystemTime,
    last_seen: SystemTime,
    /// The last uplink on the monotonic clock: age, interval, silence and order.
    last_heard: Instant,
    /// Time between its last two uplinks.
    gap: Option<Duration>,
    uplinks: u64,
    rssi: Option<i32>,
    snr: Option<f64>,
    sf: Option<u8>,
    fcnt: Option<u32>,
    /// Frames the counter skipped over (lost on air or elsewhere).
    fcnt_missed: u64,
    /// Times the counter went back (a rejoin or reset of the device).
    fcnt_resets: u64,
    readings: Vec<Reading>,
    /// The readings of a mapped decode (then `readings` is empty).
    mapped: Vec<MappedReading>,
}

impl Default for DeviceTable {
    fn default() -> Self {
        DeviceTable::new(DEVICE_CAP)
    }
}

impl DeviceTable {
    pub fn new(cap: usize) -> Self {
        DeviceTable {
            cap: cap.max(1),
            inner: Mutex::new(Table::default()),
        }
    }

    /// Note an uplink heard at `now`; `tags` are the device's from the config. A second
    /// copy of the last uplink (another gateway, a redelivery) changes nothing.
    pub fn heard(&self, up: &Uplink, tags: &[String], outcome: Outcome, now: Moment) {
        let mut t = self.lock();
        let Table {
            devices,
            order,
            evicted,
        } = &mut *t;
        match devices.get(&up.dev_eui) {
            Some(d) if d.fcnt.is_some() && d.fcnt == up.fcnt => return,
            Some(d) => {
                order.remove(&(d.last_heard, up.dev_eui));
            }
            None if devices.len() >= self.cap => {
                if let Some((_, oldest)) = order.pop_first() {
                    devices.remove(&oldest);
                    *evicted += 1;
                }
            }
            None => {}
        }
        order.insert((now.mono, up.dev_eui));
        let d = devices.entry(up.dev_eui).or_insert_with(|| Device {
            name: None,
            tags: tags.into(),
            codec: None,
            rec_type: "",
            packed_reason: String::new(),
            first_seen: now.wall,
            last_seen: now.wall,
            last_heard: now.mono,
            gap: None,
            uplinks: 0,
            rssi: None,
            snr: None,
            sf: None,
            fcnt: None,
            fcnt_missed: 0,
            fcnt_resets: 0,
            readings: Vec::new(),
            mapped: Vec::new(),
        });
        if d.uplinks > 0 {
            d.gap = Some(now.mono.saturating_duration_since(d.last_heard));
        }
        d.uplinks += 1;
        d.last_seen = now.wall;
        d.last_heard = now.mono;
        match &up.device_name {
            Some(name) => {
                let name = kept_name(name);
                if d.name.as_deref() != Some(&*name) {
                    d.name = Some(name.into());
                }
            }
            None => d.name = None,
        }
        d.rssi = up.radio.rssi;
        d.snr = up.radio.snr;
        d.sf = up.radio.spreading_factor;
        if let (Some(last), Some(now)) = (d.fcnt, up.fcnt) {
            match now.checked_sub(last) {
                Some(0) => {}
                Some(n) => d.fcnt_missed += u64::from(n - 1),
                None => d.fcnt_resets += 1,
            }
        }
        d.fcnt = up.fcnt.or(d.fcnt);
        d.packed_reason.clear();
        match outcome {
            Outcome::Decoded {
                codec,
                rec_type,
                readings,
                health,
            } => {
                d.codec = Some(codec);
                d.rec_type = rec_type;
                // A frame without readings of now (a built-in codec's is stored data alone:
                // its readings are history) leaves those shown.
                if readings.is_empty() && health.is_empty() {
                    return;
                }
                // The device's health (battery) is kept first, the rest as far as room is
                // left; the room reserved is exact, so never more than READINGS_MAX.
                let health = &health[..health.len().min(READINGS_MAX)];
                let readings = &readings[..readings.len().min(READINGS_MAX - health.len())];
                d.readings.clear();
                d.readings.reserve_exact(readings.len() + health.len());
                d.readings.extend_from_slice(readings);
                d.readings.extend_from_slice(health);
                d.mapped.clear();
            }
            Outcome::Mapped {
                codec,
                rec_type,
                mapped,
            } => {
                d.codec = Some(codec);
                d.rec_type = rec_type;
                // A frame of history alone leaves those shown; one whose fields all went to
                // `origin` (a table that no longer matches) shows none.
                if !mapped.has_readings() && !mapped.history.is_empty() {
                    return;
                }
                d.readings.clear();
                d.mapped.clear();
                let fields = mapped
                    .data
                    .iter()
                    .filter(|(k, _)| k.as_str() != crate::mapping::ORIGIN)
                    .chain(&mapped.health);
                for (field, list) in fields {
                    for v in list.as_array().into_iter().flatten() {
                        if d.mapped.len() == READINGS_MAX {
                            break;
                        }
                        d.mapped.push(MappedReading {
                            field: cut(field, NAME_MAX).to_string(),
                            value: v.get("value").cloned().unwrap_or_default(),
                            unit: v
                                .get("unit")
                                .and_then(|u| u.as_str())
                                .map(|u| cut(u, NAME_MAX).to_string()),
                            context_id: v
                                .get("context_id")
                                .and_then(|c| c.as_str())
                                .map(|c| cut(c, NAME_MAX).to_string()),
                        });
                    }
                }
            }
            Outcome::Packed { reason } => {
                d.codec = None;
                d.rec_type = "";
                d.packed_reason.push_str(cut(reason, REASON_MAX));
                d.readings.clear();
                d.mapped.clear();
            }
        }
    }

    /// The devices `sel` asks for: filtered, sorted and cut to one page. The table is locked
    /// only to copy out what filtering and sorting need ([`Row`]) and then to build the page's
    /// entries: `heard`, which the forwarder calls for every frame, waits for neither the
    /// filter's lower-casing nor the sort of up to 10,000 devices.
    pub fn select(&self, sel: &Selection, now: Moment) -> Devices {
        self.select_then(sel, now, || {})
    }

    /// [`DeviceTable::select`], calling `meanwhile` while filtering and sorting (the table
    /// unlocked).
    fn select_then(&self, sel: &Selection, now: Moment, meanwhile: impl FnOnce()) -> Devices {
        let (mut rows, evicted) = {
            let t = self.lock();
            let rows: Vec<Row> = t
                .devices
                .iter()
                .map(|(eui, d)| Row::of(eui, d, now.mono))
                .collect();
            (rows, t.evicted)
        };
        meanwhile();
        let heard = rows.len();
        let silent = rows.iter().filter(|r| r.quiet).count();
        let filter = sel.filter.to_lowercase();
        if !filter.is_empty() {
            rows.retain(|r| r.matches(&filter));
        }
        let key = sel.sort;
        rows.sort_unstable_by(|a, b| {
            match key {
                Sort::LastSeen => b.last_heard.cmp(&a.last_heard),
                Sort::Silent => b.quiet.cmp(&a.quiet).then(b.last_heard.cmp(&a.last_heard)),
                Sort::Eui => Ordering::Equal,
                Sort::Name => a.name.cmp(&b.name),
                Sort::Rssi => a.rssi.unwrap_or(i32::MAX).cmp(&b.rssi.unwrap_or(i32::MAX)),
                Sort::Missed => b.fcnt_missed.cmp(&a.fcnt_missed),
            }
            .then_with(|| a.eui.0.cmp(&b.eui.0))
        });
        let page = rows.iter().skip(sel.offset).take(sel.limit);
        let devices = {
            let t = self.lock();
            // A device evicted since the copy is left out; one heard since shows its new
            // uplink in the place of the old.
            page.filter_map(|r| {
                let d = t.devices.get(&r.eui)?;
                Some(DeviceView::of(&r.eui, d, d.silent(now.mono), now.mono))
            })
            .collect()
        };
        Devices {
            cap: self.cap,
            evicted,
            heard,
            silent,
            matched: rows.len(),
            offset: sel.offset,
            limit: sel.limit,
            devices,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Device {
    /// No uplink for [`SILENT_GAPS`] of its intervals, and at least [`SILENT_MIN`].
    fn silent(&self, now: Instant) -> bool {
        let age = now.saturating_duration_since(self.last_heard);
        let after = self
            .gap
            .map_or(SILENT_MIN, |g| (g * SILENT_GAPS).max(SILENT_MIN));
        age > after
    }
}

/// What filtering and sorting need of a device, copied out of the locked table: its strings
/// are shared, so a copy allocates nothing.
struct Row {
    eui: DevEui,
    name: Option<Arc<str>>,
    tags: Arc<[String]>,
    codec: Option<&'static str>,
    quiet: bool,
    last_heard: Instant,
    rssi: Option<i32>,
    fcnt_missed: u64,
}

impl Row {
    fn of(eui: &DevEui, d: &Device, now: Instant) -> Row {
        Row {
            eui: *eui,
            name: d.name.clone(),
            tags: d.tags.clone(),
            codec: d.codec,
            quiet: d.silent(now),
            last_heard: d.last_heard,
            rssi: d.rssi,
            fcnt_missed: d.fcnt_missed,
        }
    }

    /// Whether `filter` (lower case) is part of its DevEUI, name, a tag or its codec's id,
    /// or is "packed" or "silent" and the device is.
    fn matches(&self, filter: &str) -> bool {
        let has = |s: &str| s.to_lowercase().contains(filter);
        has(&self.eui.to_string())
            || self.name.as_deref().is_some_and(has)
            || self.tags.iter().any(|t| has(t))
            || self.codec.is_some_and(has)
            || (filter == "packed" && self.codec.is_none())
            || (filter == "silent" && self.quiet)
    }
}

/// How the devices are ordered; the key is the query's `sort=` value.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub enum Sort {
    /// Most recently heard first.
    #[default]
    LastSeen,
    /// Silent devices first, then by last seen.
    Silent,
    Eui,
    Name,
    /// Weakest signal first.
    Rssi,
    /// Most frames missed first.
    Missed,
}

impl Sort {
    pub const ALL: [Sort; 6] = [
        Sort::LastSeen,
        Sort::Silent,
        Sort::Eui,
        Sort::Name,
        Sort::Rssi,
        Sort::Missed,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Sort::LastSeen => "",
            Sort::Silent => "silent",
            Sort::Eui => "eui",
            Sort::Name => "name",
            Sort::Rssi => "rssi",
            Sort::Missed => "missed",
        }
    }

    /// The order of `key` (an unknown key: the default).
    pub fn of_key(key: &str) -> Sort {
        Sort::ALL
            .into_iter()
            .find(|s| s.key() == key)
            .unwrap_or_default()
    }
}

/// Which devices are asked for: those whose DevEUI, name, tags or codec contain `filter`
/// (all when empty), in `sort` order, `limit` of them from `offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub filter: String,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
}

/// A device name as kept: control characters (never in a name a person gave) replaced, and
/// cut where it would take more than [`NAME_MAX`] bytes escaped (`&quot;` for `"`, `\"` in
/// JSON, ...), so the status page's bounds hold for any name. Borrowed unless a control
/// character is replaced: it is called for every uplink.
fn kept_name(name: &str) -> Cow<'_, str> {
    let mut escaped = 0;
    let mut end = name.len();
    for (i, c) in name.char_indices() {
        escaped += match c {
            '"' => 6,
            '&' | '\'' => 5,
            '<' | '>' => 4,
            '\\' => 2,
            c if c.is_control() => char::REPLACEMENT_CHARACTER.len_utf8(),
            c => c.len_utf8(),
        };
        if escaped > NAME_MAX {
            end = i;
            break;
        }
    }
    let kept = &name[..end];
    match kept.contains(char::is_control) {
        true => Cow::Owned(kept.replace(char::is_control, "\u{fffd}")),
        false => Cow::Borrowed(kept),
    }
}

/// `/api/devices`: one page of the devices selected.
#[derive(Serialize)]
pub struct Devices {
    pub cap: usize,
    /// Devices dropped from the table to make room since the start.
    pub evicted: u64,
    /// Devices in the table, and how many of them are silent.
    pub heard: usize,
    pub silent: usize,
    /// Devices the filter matched; `devices` holds up to `limit` of them from `offset`.
    pub matched: usize,
    pub offset: usize,
    pub limit: usize,
    pub devices: Vec<DeviceView>,
}

#[derive(Serialize, Default)]
pub struct DeviceView {
    pub dev_eui: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// The codec's id; `None`: sent packed, `packed_reason` says why.
    pub codec: Option<&'static str>,
    /// Present when decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rec_type: Option<&'static str>,
    /// Present when sent packed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packed_reason: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub age_s: u64,
    /// Seconds between its last two uplinks.
    pub interval_s: Option<u64>,
    /// No uplink for [`SILENT_GAPS`] of its intervals (and at least 15 minutes).
    pub silent: bool,
    pub uplinks: u64,
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub sf: Option<u8>,
    pub fcnt: Option<u32>,
    pub fcnt_missed: u64,
    pub fcnt_resets: u64,
    pub readings: Vec<ReadingView>,
}

#[derive(Serialize)]
pub struct ReadingView {
    pub field: Cow<'static, str>,
    pub value: serde_json::Value,
    /// Absent for counts and booleans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<Cow<'static, str>>,
    /// Present for multi-channel formats (Cayenne LPP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    /// A built-in codec's named `context_id` (a Smilio Action's button) or a mapping table's
    /// (a `[]` key's item index from its `context_base`), text as the record has it: a field
    /// of its own, so `channel` stays a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
}

impl DeviceView {
    fn of(eui: &DevEui, d: &Device, silent: bool, now: Instant) -> DeviceView {
        let age = now.saturating_duration_since(d.last_heard);
        DeviceView {
            dev_eui: eui.to_string(),
            name: d.name.as_deref().map(str::to_string),
            tags: d.tags.to_vec(),
            codec: d.codec,
            rec_type: d.codec.map(|_| d.rec_type),
            packed_reason: d.codec.is_none().then(|| d.packed_reason.clone()),
            first_seen: crate::record::iso8601(d.first_seen),
            last_seen: crate::record::iso8601(d.last_seen),
            age_s: age.as_secs(),
            interval_s: d.gap.map(|g| g.as_secs()),
            silent,
            uplinks: d.uplinks,
            rssi: d.rssi,
            snr: d.snr,
            sf: d.sf,
            fcnt: d.fcnt,
            fcnt_missed: d.fcnt_missed,
            fcnt_resets: d.fcnt_resets,
            readings: d
                .readings
                .iter()
                .map(|r| ReadingView {
                    field: Cow::Borrowed(r.field),
                    value: match r.value {
                        Value::Num(v) => v.into(),
                        Value::Int(v) => v.into(),
                        Value::Bool(v) => v.into(),
                    },
                    unit: r.unit.map(Cow::Borrowed),
                    channel: match r.context_id {
                        Some(Context::Channel(c)) => Some(c),
                        _ => None,
                    },
                    context_id: match r.context_id {
                        Some(Context::Name(n)) => Some(n.to_string()),
                        _ => None,
                    },
                })
                .chain(d.mapped.iter().map(|r| ReadingView {
                    field: Cow::Owned(r.field.clone()),
                    value: r.value.clone(),
                    unit: r.unit.clone().map(Cow::Owned),
                    channel: None,
                    context_id: r.context_id.clone(),
                }))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::Radio;
    use std::time::UNIX_EPOCH;

    fn up(eui: u8, fcnt: u32) -> Uplink {
        Uplink {
            dev_eui: DevEui([0, 0, 0, 0, 0, 0, 0, eui]),
            dev_addr: None,
            device_name: Some(format!("dev-{eui}")),
            fport: Some(1),
            fcnt: Some(fcnt),
            payload: vec![],
            time: UNIX_EPOCH,
            radio: Radio {
                rssi: Some(-70 - i32::from(eui)),
                snr: Some(7.5),
                spreading_factor: Some(9),
                ..Radio::default()
            },
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: None,
        }
    }

    /// `s` seconds after a start, on both clocks.
    fn at(s: u64) -> Moment {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        Moment {
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s),
            mono: *START.get_or_init(Instant::now) + Duration::from_secs(s),
        }
    }

    const PACKED: Outcome = Outcome::Packed { reason: "no codec" };

    fn pick(
        t: &DeviceTable,
        filter: &str,
        sort: Sort,
        offset: usize,
        limit: usize,
        now: Moment,
    ) -> Devices {
        let sel = Selection {
            filter: filter.into(),
            sort,
            offset,
            limit,
        };
        t.select(&sel, now)
    }

    fn all(t: &DeviceTable, now: Moment) -> Devices {
        pick(t, "", Sort::LastSeen, 0, usize::MAX, now)
    }

    fn euis(d: &Devices) -> Vec<u8> {
        d.devices
            .iter()
            .map(|d| u8::from_str_radix(&d.dev_eui[14..], 16).unwrap())
            .collect()
    }

    /// Filter, order and page are the table's: counts cover every match, the page only its
    /// slice, ties go by DevEUI.
    #[test]
    fn selects_filters_sorts_and_pages() {
        let t = DeviceTable::new(10);
        let temp = [Reading::new("temperature", Value::Num(21.5), Some("°C"))];
        let decoded = Outcome::Decoded {
            codec: "browan-tbhh100",
            rec_type: "io.microshare.environment.unpacked",
            readings: &temp,
            health: &[],
        };
        // Devices 1..=5, heard at 10 s steps (5 last); 2 and 4 decoded; 3 missed frames.
        for eui in 1..=5u8 {
            let tags = [format!("Floor {}", eui % 2)];
            let outcome = if eui % 2 == 0 {
                decoded_like(&decoded)
            } else {
                PACKED
            };
            t.heard(&up(eui, 1), &tags, outcome, at(u64::from(eui) * 10));
        }
        t.heard(&up(3, 5), &[], PACKED, at(55));
        // Device 1 again long after: the others fall silent (15 min without an uplink).
        t.heard(&up(1, 2), &[], PACKED, at(2000));
        let now = at(2000);
        let d = all(&t, now);
        assert_eq!(euis(&d), [1, 3, 5, 4, 2], "most recently heard first");
        assert_eq!((d.heard, d.silent, d.matched), (5, 4, 5));
        let d = pick(&t, "", Sort::Silent, 0, 10, now);
        assert_eq!(euis(&d), [3, 5, 4, 2, 1]);
        assert_eq!(euis(&pick(&t, "", Sort::Eui, 0, 10, now)), [1, 2, 3, 4, 5]);
        assert_eq!(euis(&pick(&t, "", Sort::Rssi, 0, 10, now)), [5, 4, 3, 2, 1]);
        assert_eq!(euis(&pick(&t, "", Sort::Missed, 0, 10, now))[0], 3);
        let d = pick(&t, "", Sort::Eui, 1, 2, now);
        assert_eq!(euis(&d), [2, 3]);
        assert_eq!((d.matched, d.offset, d.limit), (5, 1, 2));
        assert!(pick(&t, "", Sort::Eui, 9, 2, now).devices.is_empty());
        let d = pick(&t, "TBHH", Sort::Eui, 0, 10, now);
        assert_eq!((euis(&d), d.matched, d.heard), (vec![2, 4], 2, 5));
        assert_eq!(euis(&pick(&t, "floor 1", Sort::Eui, 0, 10, now)), [1, 3, 5]);
        assert_eq!(euis(&pick(&t, "packed", Sort::Eui, 0, 10, now)), [1, 3, 5]);
        assert_eq!(
            euis(&pick(&t, "silent", Sort::Eui, 0, 10, now)),
            [2, 3, 4, 5]
        );
        assert_eq!(euis(&pick(&t, "dev-4", Sort::Eui, 0, 10, now)), [4]);
        assert_eq!(
            euis(&pick(&t, "0000000000000003", Sort::Eui, 0, 10, now)),
            [3]
        );
    }

    /// A page is filtered and sorted with the table unlocked, so `heard` (the forwarder's,
    /// for every frame) does not wait for it; what changes meanwhile shows as of the page's
    /// build: a device evicted is left out, one heard again shows its new uplink.
    #[test]
    fn a_page_is_filtered_and_sorted_without_the_tables_lock() {
        let t = DeviceTable::new(3);
        for eui in 1..=3u8 {
            t.heard(&up(eui, 1), &[], PACKED, at(u64::from(eui)));
        }
        let sel = Selection {
            filter: "dev".into(),
            sort: Sort::Name,
            offset: 0,
            limit: 10,
        };
        let d = t.select_then(&sel, at(10), || {
            assert!(
                t.inner.try_lock().is_ok(),
                "locked while filtering and sorting"
            );
            // Device 4 evicts 1, the least recently heard; 2 is heard again.
            t.heard(&up(4, 1), &[], PACKED, at(11));
            t.heard(&up(2, 2), &[], PACKED, at(12));
        });
        assert_eq!(euis(&d), [2, 3], "1 evicted meanwhile, 4 not yet copied");
        assert_eq!(d.devices[0].fcnt, Some(2), "2's new uplink");
        assert_eq!((d.heard, d.matched), (3, 3), "as copied");
        assert_eq!(d.evicted, 0, "as copied");
    }

    fn decoded_like<'a>(o: &Outcome<'a>) -> Outcome<'a> {
        match o {
            Outcome::Decoded {
                codec,
                rec_type,
                readings,
                health,
            } => Outcome::Decoded {
                codec,
                rec_type,
                readings,
                health,
            },
            Outcome::Mapped {
                codec,
                rec_type,
                mapped,
            } => Outcome::Mapped {
                codec,
                rec_type,
                mapped,
            },
            Outcome::Packed { reason } => Outcome::Packed { reason },
        }
    }

    /// A device decoded by a JavaScript codec or from the network server's object shows its
    /// mapped readings (not `origin`), with their `context_id`, at most
    /// [`READINGS_MAX`] of them.
    #[test]
    fn mapped_readings_are_shown_and_bounded() {
        let t = DeviceTable::new(10);
        let mut mapped = crate::mapping::Mapped::default();
        mapped.data.insert(
            "soil_moisture".into(),
            serde_json::json!([{"value": 31, "unit": "%"}]),
        );
        mapped.data.insert(
            "temperature".into(),
            serde_json::json!([
                {"value": 20, "unit": "°C", "context_id": "0"},
                {"value": 21, "unit": "°C", "context_id": "1"},
            ]),
        );
        mapped
            .data
            .insert("origin".into(), serde_json::json!({"fw": "1.2"}));
        mapped.health.insert(
            "voltage".into(),
            serde_json::json!([{"value": 3.6, "unit": "V"}]),
        );
        let now = at(1_000);
        let outcome = Outcome::Mapped {
            codec: "javascript",
            rec_type: "io.microshare.lorawan.unpacked",
            mapped: &mapped,
        };
        t.heard(&up(1, 1), &[], outcome, now);
        let all = Selection {
            filter: String::new(),
            sort: Sort::Eui,
            offset: 0,
            limit: 10,
        };
        let d = &t.select(&all, now).devices[0];
        assert_eq!(
            serde_json::to_value(&d.readings).unwrap(),
            serde_json::json!([
                {"field": "soil_moisture", "value": 31, "unit": "%"},
                {"field": "temperature", "value": 20, "unit": "°C", "context_id": "0"},
                {"field": "temperature", "value": 21, "unit": "°C", "context_id": "1"},
                {"field": "voltage", "value": 3.6, "unit": "V"},
            ])
        );
        let many: serde_json::Value = (0..40).map(|i| serde_json::json!({"value": i})).collect();
        mapped.data.insert("count".into(), many);
        let outcome = Outcome::Mapped {
            codec: "javascript",
            rec_type: "io.microshare.lorawan.unpacked",
            mapped: &mapped,
        };
        t.heard(&up(1, 2), &[], outcome, now);
        assert_eq!(t.select(&all, now).devices[0].readings.len(), READINGS_MAX);
    }

    /// A built-in codec's reading shows its channel as `channel`, a number, and its name (a
    /// Smilio Action's button) as `context_id`, the text the record has.
    #[test]
    fn a_decoded_readings_channel_or_name_is_shown() {
        let t = DeviceTable::new(10);
        let readings = [
            Reading::int("pushes_since_reset", 237, None).named("Button #1, Upper Left"),
            Reading::int("digital_input", 1, None).ctx(3),
            Reading::flag("swipe", false),
        ];
        let outcome = Outcome::Decoded {
            codec: "skiply-smilio-action",
            rec_type: "io.microshare.feedback.unpacked",
            readings: &readings,
            health: &[],
        };
        let now = at(1_000);
        t.heard(&up(1, 1), &[], outcome, now);
        let d = &pick(&t, "", Sort::Eui, 0, 10, now).devices[0];
        assert_eq!(
            serde_json::to_value(&d.readings).unwrap(),
            serde_json::json!([
                {"field": "pushes_since_reset", "value": 237, "context_id": "Button #1, Upper Left"},
                {"field": "digital_input", "value": 1, "channel": 3},
                {"field": "swipe", "value": false},
            ])
        );
    }

    /// An uplink of history alone (a mapping table's `[history]`, a built-in codec's stored
    /// data) holds no readings of now: the readings shown stay those of the last uplink that
    /// had some.
    #[test]
    fn a_history_only_uplink_keeps_the_readings_shown() {
        let fields = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        let live = crate::mapping::Mapped {
            data: fields(serde_json::json!({"temperature": [{"value": 21, "unit": "°C"}]})),
            ..Default::default()
        };
        let history = crate::mapping::Mapped {
            data: fields(serde_json::json!({"origin": {"fw": "1.2"}})),
            history: vec![crate::mapping::Moment {
                time: UNIX_EPOCH,
                data: fields(serde_json::json!({"temperature": [{"value": 20}]})),
                health: serde_json::Map::new(),
            }],
            ..Default::default()
        };
        let t = DeviceTable::new(10);
        let outcome = |mapped| Outcome::Mapped {
            codec: "javascript",
            rec_type: "io.microshare.environment.unpacked",
            mapped,
        };
        let now = at(1_000);
        t.heard(&up(1, 1), &[], outcome(&live), now);
        t.heard(&up(1, 2), &[], outcome(&history), now);
        let d = &pick(&t, "", Sort::Eui, 0, 10, now).devices[0];
        assert_eq!(d.uplinks, 2);
        assert_eq!(d.fcnt, Some(2));
        assert_eq!(
            serde_json::to_value(&d.readings).unwrap(),
            serde_json::json!([{"field": "temperature", "value": 21, "unit": "°C"}])
        );
        let temp = [Reading::new("temperature", Value::Num(21.5), Some("°C"))];
        let decoded = |readings| Outcome::Decoded {
            codec: "dragino-lht65",
            rec_type: "io.microshare.environment.unpacked",
            readings,
            health: &[],
        };
        t.heard(&up(2, 1), &[], decoded(&temp), now);
        t.heard(&up(2, 2), &[], decoded(&[]), now);
        let d = &pick(&t, "", Sort::Eui, 0, 10, now).devices[1];
        assert_eq!(d.fcnt, Some(2));
        assert_eq!(
            serde_json::to_value(&d.readings).unwrap(),
            serde_json::json!([{"field": "temperature", "value": 21.5, "unit": "°C"}])
        );
        // A mapped uplink with every field under `origin` and no history shows none.
        let unmapped = crate::mapping::Mapped {
            history: Vec::new(),
            ..history.clone()
        };
        t.heard(&up(1, 3), &[], outcome(&unmapped), now);
        assert!(pick(&t, "", Sort::Eui, 0, 10, now).devices[0]
            .readings
            .is_empty());
    }

    /// One huge uplink (a crafted Cayenne LPP payload decodes to 130,000 readings, 9.4 MB)
    /// keeps at most [`READINGS_MAX`] readings, battery first, and no more room than that
    /// once a small uplink follows; the page shows what is kept.
    #[test]
    fn readings_kept_are_bounded_after_a_huge_uplink() {
        let t = DeviceTable::new(10);
        let huge: Vec<Reading> = (0..130_000)
            .map(|_| Reading::new("presence", Value::Bool(true), None))
            .collect();
        let battery = [Reading::new("battery", Value::Num(3.6), Some("V"))];
        let outcome = |readings, health| Outcome::Decoded {
            codec: "cayenne-lpp",
            rec_type: "io.microshare.occupancy.unpacked",
            readings,
            health,
        };
        let now = at(0);
        t.heard(&up(1, 1), &[], outcome(&huge, &battery), now);
        let kept = |t: &DeviceTable| {
            let table = t.lock();
            let d = &table.devices[&up(1, 0).dev_eui];
            (d.readings.len(), d.readings.capacity())
        };
        assert_eq!(kept(&t), (READINGS_MAX, READINGS_MAX));
        let shown = &all(&t, now).devices[0].readings;
        assert_eq!(shown.len(), READINGS_MAX);
        assert_eq!(shown[READINGS_MAX - 1].field, "battery");
        let temp = [Reading::new("temperature", Value::Num(21.5), Some("°C"))];
        t.heard(&up(1, 2), &[], outcome(&temp, &[]), now);
        let (len, capacity) = kept(&t);
        assert_eq!(len, 1);
        assert!(capacity <= READINGS_MAX, "{capacity} readings of room kept");
    }

    #[test]
    fn keeps_the_last_uplink_counts_gaps_and_readings() {
        let t = DeviceTable::new(10);
        let temp = [Reading::new("temperature", Value::Num(21.5), Some("°C"))];
        let decoded = |r| Outcome::Decoded {
            codec: "c",
            rec_type: "io.microshare.environment.unpacked",
            readings: r,
            health: &[],
        };
        t.heard(&up(1, 10), &["Lobby".into()], decoded(&temp), at(0));
        t.heard(&up(1, 11), &[], decoded(&temp), at(60));
        t.heard(&up(1, 15), &[], decoded(&temp), at(120));
        t.heard(&up(1, 2), &[], PACKED, at(180));
        let v = all(&t, at(200));
        assert_eq!(v.devices.len(), 1);
        let d = &v.devices[0];
        assert_eq!(d.dev_eui, "0000000000000001");
        assert_eq!(d.name.as_deref(), Some("dev-1"));
        assert_eq!(d.tags, ["Lobby"], "tags as configured when first heard");
        assert_eq!(
            (d.uplinks, d.fcnt, d.fcnt_missed, d.fcnt_resets),
            (4, Some(2), 3, 1)
        );
        assert_eq!((d.age_s, d.interval_s, d.silent), (20, Some(60), false));
        assert_eq!((d.rssi, d.snr, d.sf), (Some(-71), Some(7.5), Some(9)));
        assert_eq!(d.codec, None);
        assert_eq!(d.packed_reason.as_deref(), Some("no codec"));
        assert!(d.readings.is_empty(), "a packed uplink has no readings");
        t.heard(&up(1, 3), &[], decoded(&temp), at(240));
        let v = all(&t, at(240));
        let d = &v.devices[0];
        assert_eq!((d.codec, d.packed_reason.as_deref()), (Some("c"), None));
        assert_eq!(d.readings.len(), 1);
        assert_eq!(
            serde_json::to_string(&d.readings[0]).unwrap(),
            r#"{"field":"temperature","value":21.5,"unit":"°C"}"#
        );
    }

    #[test]
    fn a_device_is_silent_after_three_intervals_and_at_least_15_minutes() {
        let t = DeviceTable::new(10);
        t.heard(&up(1, 1), &[], PACKED, at(0));
        t.heard(&up(1, 2), &[], PACKED, at(600));
        let silent = |s| all(&t, at(s)).devices[0].silent;
        assert!(!silent(600 + 1800));
        assert!(silent(600 + 1801));
        t.heard(&up(2, 1), &[], PACKED, at(0));
        t.heard(&up(2, 2), &[], PACKED, at(10));
        let v = all(&t, at(10 + 900));
        assert!(
            !v.devices
                .iter()
                .find(|d| d.dev_eui.ends_with('2'))
                .unwrap()
                .silent
        );
        let v = all(&t, at(10 + 901));
        assert!(
            v.devices
                .iter()
                .find(|d| d.dev_eui.ends_with('2'))
                .unwrap()
                .silent
        );
    }

    #[test]
    fn at_the_cap_the_least_recently_heard_device_makes_room() {
        let t = DeviceTable::new(3);
        for (eui, s) in [(1, 10), (2, 5), (3, 20)] {
            t.heard(&up(eui, 1), &[], PACKED, at(s));
        }
        t.heard(&up(1, 2), &[], PACKED, at(30));
        t.heard(&up(4, 1), &[], PACKED, at(40));
        let v = all(&t, at(40));
        let euis: Vec<_> = v.devices.iter().map(|d| d.dev_eui.as_str()).collect();
        assert_eq!(
            euis,
            ["0000000000000004", "0000000000000001", "0000000000000003"],
            "device 2, heard least recently, was evicted; newest first"
        );
        assert_eq!((v.cap, v.evicted), (3, 1));
    }

    #[test]
    fn a_repeated_uplink_is_not_counted_and_names_are_bounded() {
        let t = DeviceTable::new(3);
        let mut long = up(1, 1);
        long.device_name = Some("é".repeat(100));
        t.heard(&long, &[], PACKED, at(0));
        t.heard(&long, &[], PACKED, at(5));
        let v = all(&t, at(5));
        let d = &v.devices[0];
        assert_eq!((d.uplinks, d.interval_s, d.age_s), (1, None, 5));
        assert_eq!(d.name.as_deref(), Some("é".repeat(32).as_str()));
    }
}
