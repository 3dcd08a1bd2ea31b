//! The installer's status page: what the gateway hears, decodes, holds and sends, as JSON
//! (`/api/status`, `/api/devices`) and as server-rendered pages. Read-only: everything here
//! is a view of state the pipeline keeps anyway ([`Metrics`]), plus the few facts from the
//! config it needs (sources, hubs, buffer cap). Nothing here shows a secret.

mod page;
mod query;

pub use page::policy as page_policy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{Config, HubNames, SinkConfig, SourceConfig};
use crate::metrics::history::Sample;
use crate::metrics::{history, unix_seconds, Metrics, Moment};

/// How often the running totals are sampled for the last hour's plot.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// What the page needs from the config, taken at start.
pub struct Facts {
    gateway_id: String,
    sink: &'static str,
    /// Where each recType goes, for sinks with hubs.
    hub_names: Option<HubNames>,
    /// The recTypes the config can emit ([`Config::rec_types`]).
    planned: BTreeSet<String>,
    /// (kind, where) per source; never a URL's credentials (the config refuses those).
    sources: Vec<(&'static str, String)>,
    /// The connection gauge of each source that has one, by source.
    links: Vec<Option<Link>>,
    buffer_path: PathBuf,
    buffer_max_bytes: u64,
    /// On the monotonic clock: the uptime survives the wall clock's first NTP step.
    started: Instant,
}

impl Facts {
    pub fn of(cfg: &Config) -> Facts {
        let sink = match &cfg.sink {
            SinkConfig::Eventhubs(_) => "eventhubs",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Stdout(_) => "stdout",
        };
        let sources = cfg
            .sources
            .iter()
            .map(|s| match s {
                SourceConfig::Mqtt(m) => ("mqtt", m.url.to_string()),
                SourceConfig::Udp(u) => ("udp", u.listen.to_string()),
                SourceConfig::Serial(s) => ("serial", s.device.display().to_string()),
                SourceConfig::Replay(r) => ("replay", r.path.display().to_string()),
            })
            .collect();
        let links = cfg
            .sources
            .iter()
            .zip(cfg.mqtt_client_ids())
            .map(|(s, client_id)| match s {
                SourceConfig::Mqtt(m) => Some(Link::Broker(
                    m.url.authority(),
                    client_id.unwrap_or_default(),
                )),
                SourceConfig::Serial(s) => Some(Link::Device(s.device.display().to_string())),
                _ => None,
            })
            .collect();
        Facts {
            links,
            gateway_id: cfg.gateway_id.clone(),
            sink,
            hub_names: cfg.sink.hub_names(),
            planned: cfg.rec_types(),
            sources,
            buffer_path: cfg.buffer.path.clone(),
            buffer_max_bytes: cfg.buffer.max_bytes,
            started: Instant::now(),
        }
    }
}

/// The label of a source's connection gauge.
enum Link {
    /// `hubgate_mqtt_connected`'s `host:port` and client id (two sources may share a broker).
    Broker(String, String),
    /// `hubgate_serial_connected`'s device path.
    Device(String),
}

/// The page's view of a running agent.
pub struct Status {
    metrics: Arc<Metrics>,
    facts: Facts,
}

/// What a request can ask for.
pub enum View {
    Overview,
    Devices,
    Problems,
    StatusJson,
    DevicesJson,
}

impl View {
    pub fn of_path(path: &str) -> Option<View> {
        Some(match path {
            "/" => View::Overview,
            "/devices" => View::Devices,
            "/problems" => View::Problems,
            "/api/status" => View::StatusJson,
            "/api/devices" => View::DevicesJson,
            _ => return None,
        })
    }
}

/// The pages' content type ([`page_policy`] goes with it).
pub const HTML: &str = "text/html; charset=utf-8";

impl Status {
    pub fn new(metrics: Arc<Metrics>, facts: Facts) -> Status {
        Status { metrics, facts }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The body and its content type; `query` is the URL's (the devices' filter, sort and
    /// page, see [`query`]).
    pub fn render(&self, view: View, query: Option<&str>, now: Moment) -> (&'static str, String) {
        const JSON: &str = "application/json";
        let json =
            |v: serde_json::Result<String>| v.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        match view {
            View::StatusJson => (JSON, json(serde_json::to_string(&self.snapshot(now)))),
            View::DevicesJson => (
                JSON,
                json(serde_json::to_string(
                    &self.metrics.devices.select(&query::api(query), now),
                )),
            ),
            View::Overview => (HTML, page::overview(&self.snapshot(now))),
            View::Devices => {
                let sel = query::page(query);
                let devices = self.metrics.devices.select(&sel, now);
                (HTML, page::devices(&self.snapshot(now), &devices, &sel))
            }
            View::Problems => (HTML, page::problems(&self.snapshot(now))),
        }
    }

    /// `/api/status`.
    pub fn snapshot(&self, at: Moment) -> Snapshot {
        let m = &self.metrics;
        let f = &self.facts;
        let now = at.wall;
        let current = Sample::of(m, unix_seconds(now));
        let hour = m.history.last_hour(&current);
        let hubs = f.hub_names.as_ref().map_or_else(Vec::new, |names| {
            // Those planned, and any other one parked or sent meanwhile (a codec's recType
            // chosen from its fields, a table added by a reload): a parked one stays listed
            // with its cause and fix.
            let seen = m
                .parked
                .snapshot()
                .into_iter()
                .chain(m.delivered.snapshot());
            let mut rec_types = f.planned.clone();
            rec_types.extend(seen.map(|(rec_type, _)| rec_type));
            rec_types
                .into_iter()
                .map(|rec_type| {
                    let hub = names.hub(&rec_type).to_string();
                    let parked = m.parked.get(&rec_type) == Some(1);
                    // The sink's classification of the refusal: its one fix for that cause.
                    let why = parked.then(|| m.park_reasons.get(&rec_type)).flatten();
                    Hub {
                        state: if parked { "parked" } else { "delivering" },
                        rec_type,
                        hub,
                        reason: why.as_ref().map(|r| r.what.clone()),
                        fix: why.as_ref().map(|r| r.fix.clone()),
                        broker: why.map(|r| r.broker),
                    }
                })
                .collect()
        });
        // By each source's place in the config ([`crate::metrics::PerSource`]).
        let per = |list: &[(String, u64)], origin: usize| {
            let origin = origin.to_string();
            list.iter()
                .find(|(k, _)| *k == origin)
                .map_or(0, |(_, n)| *n)
        };
        let sources = f
            .sources
            .iter()
            .zip(&f.links)
            .enumerate()
            .map(|(i, ((kind, at), link))| SourceView {
                kind,
                at: at.clone(),
                connected: link.as_ref().map(|l| match l {
                    Link::Broker(b, id) => m.mqtt_connected.get(b, id) == Some(1),
                    Link::Device(d) => m.serial_connected.get(d) == Some(1),
                }),
                frames_total: per(&current.by_source, i),
                frames_last_minute: per(&hour.last_minute_by_source, i),
                frames_last_hour: per(&hour.by_source, i),
            })
            .collect();
        // The age on the monotonic clock, the time from it: both right across a step of the
        // wall clock since the delivery.
        let last = m.last_delivery_at.age(at.mono);
        let disk_free = crate::buffer::disk::free(&f.buffer_path);
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            gateway_id: f.gateway_id.clone(),
            now: crate::record::iso8601(now),
            uptime_s: at.mono.saturating_duration_since(f.started).as_secs(),
            clock_synchronized: crate::clock::synchronized(),
            upstream: Upstream {
                sink: f.sink,
                connected: m.kafka_connected.get("").map(|v| v == 1),
                last_delivery: last.map(|age| crate::record::iso8601(now - age)),
                last_delivery_age_s: last.map(|age| age.as_secs()),
                delivered: current.delivered,
                in_flight: m.in_flight.get(),
                hubs,
            },
            sources,
            buffer: BufferView {
                records: current.buffer_records,
                bytes: current.buffer_bytes,
                max_bytes: f.buffer_max_bytes,
                oldest_age_s: m.buffer_oldest.age_s(at.mono),
                disk_free,
                dead_lettered: m.dead_lettered.get(),
            },
            received: current.received,
            decoded: m.decoded.get(),
            duplicates: m.duplicates.get(),
            last_hour: LastHourView {
                minutes: hour.minutes,
                dropped: hour.dropped,
                problems: hour.problems.into_iter().collect(),
            },
            dropped: BTreeMap::from([
                ("full", m.dropped_full.get()),
                ("disk_full", m.dropped_disk_full.get()),
                ("expired", m.dropped_expired.get()),
                ("corrupt", m.dropped_corrupt.get()),
                ("queue_full", m.dropped_queue_full.get()),
                ("stopping", m.dropped_stopping.get()),
            ]),
            minutes: m.history.minutes(&current),
            recent_problems: m
                .recent_problems()
                .into_iter()
                .map(|w| ProblemView {
                    time: crate::record::iso8601(w.time),
                    kind: w.kind,
                    line: w.line,
                })
                .collect(),
        }
    }
}

/// Sample the running totals every [`SAMPLE_EVERY`] until the task is dropped.
pub async fn sample(metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let s = Sample::of(&metrics, unix_seconds(SystemTime::now()));
        metrics.history.record(s);
    }
}

#[derive(Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub gateway_id: String,
    pub now: String,
    pub uptime_s: u64,
    pub clock_synchronized: Option<bool>,
    pub upstream: Upstream,
    pub sources: Vec<SourceView>,
    pub buffer: BufferView,
    pub received: u64,
    pub decoded: u64,
    pub duplicates: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    pub last_hour: LastHourView,
    /// Records in and out per minute and the buffer's fill, the last hour, oldest first.
    pub minutes: Vec<history::Minute>,
    /// Warnings and errors as logged (rate-limited), newest first.
    pub recent_problems: Vec<ProblemView>,
}

#[derive(Serialize)]
pub struct Upstream {
    pub sink: &'static str,
    /// `None` for a sink without a connection (stdout).
    pub connected: Option<bool>,
    pub last_delivery: Option<String>,
    pub last_delivery_age_s: Option<u64>,
    pub delivered: u64,
    pub in_flight: u64,
    pub hubs: Vec<Hub>,
}

#[derive(Serialize)]
pub struct Hub {
    pub rec_type: String,
    pub hub: String,
    /// `delivering` or `parked`.
    pub state: &'static str,
    /// A parked hub's refusal as the sink classified it: what is wrong, the one fix for that
    /// cause, and the broker's own words.
    pub reason: Option<String>,
    pub fix: Option<String>,
    pub broker: Option<String>,
}

#[derive(Serialize)]
pub struct SourceView {
    pub kind: &'static str,
    pub at: String,
    /// Known for MQTT (connected to the broker) and serial (the device open) only.
    pub connected: Option<bool>,
    pub frames_total: u64,
    /// In the last full minute (the first minute after a start: so far).
    pub frames_last_minute: u64,
    pub frames_last_hour: u64,
}

#[derive(Serialize)]
pub struct BufferView {
    pub records: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Seconds since the oldest record waiting was stored (0: none waits).
    pub oldest_age_s: u64,
    pub disk_free: Option<u64>,
    pub dead_lettered: u64,
}

#[derive(Serialize)]
pub struct LastHourView {
    pub minutes: u64,
    pub dropped: u64,
    pub problems: BTreeMap<String, u64>,
}

#[derive(Serialize)]
pub struct ProblemView {
    pub time: String,
    pub kind: &'static str,
    pub line: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Reading, Value};
    use crate::ids::DevEui;
    use crate::uplink::{Radio, Uplink};

    /// An uplink of `dev_eui` named `name` with frame counter `fcnt`, heard at `time`.
    fn uplink(dev_eui: [u8; 8], name: &str, fcnt: u32, time: SystemTime) -> Uplink {
        Uplink {
            dev_eui: DevEui(dev_eui),
            dev_addr: None,
            device_name: Some(name.into()),
            fport: Some(1),
            fcnt: Some(fcnt),
            payload: vec![],
            time,
            radio: Radio::default(),
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: None,
        }
    }

    /// `devices` devices heard once each (names by `name`), one a second from `t0`, each as
    /// heavy as the table keeps them: 16 readings, three tags, every radio value.
    fn heard_at_full_length(
        metrics: &Metrics,
        devices: u32,
        name: impl Fn(u32) -> String,
        t0: Moment,
    ) {
        let readings: Vec<Reading> = (0..16)
            .map(|_| Reading::new("temperature", Value::Num(-123.456), Some("°C")))
            .collect();
        let tags: Vec<String> = (0..3)
            .map(|i| format!("Building {i} / Floor & <x>"))
            .collect();
        for i in 0..devices {
            let eui = [0, 0, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 1];
            let mut up = uplink(eui, &name(i), i * 7, t0.wall);
            up.radio = Radio {
                rssi: Some(-120),
                snr: Some(-12.25),
                spreading_factor: Some(12),
                ..Radio::default()
            };
            let outcome = crate::metrics::devices::Outcome::Decoded {
                codec: "browan-tbhh100",
                rec_type: "io.microshare.environment.unpacked",
                readings: &readings,
                health: &[],
            };
            metrics
                .devices
                .heard(&up, &tags, outcome, t0 + Duration::from_secs(i.into()));
        }
    }

    /// The heaviest pages stay under 150 KB, an API answer under 0.8 MB
    /// (docs/operations.md): 10,000 devices with names of the longest kept, tags and the 16
    /// readings a device keeps; an hour of history; the whole ring of recent problems at full
    /// length.
    #[test]
    fn pages_stay_within_their_bounds_when_full() {
        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n").unwrap();
        let metrics = Metrics::new();
        let t0 = Moment::now();
        heard_at_full_length(&metrics, 10_000, |i| format!("{i:->64}"), t0);
        let now = t0 + Duration::from_secs(7200);
        let minute = unix_seconds(now.wall) / 60;
        for m in (minute - 61)..=minute {
            let mut s = Sample::of(&metrics, m * 60);
            s.received = m * 1_000_000;
            metrics.history.record(s);
        }
        for i in 0..crate::logline::RECENT {
            metrics.error("parked", "é".repeat(400) + &i.to_string());
        }
        let status = Status::new(metrics, Facts::of(&cfg));
        // (view, query, the least it weighs: the test fills it)
        for (view, query, least) in [
            (View::Overview, None, 3_000),
            (View::Devices, None, 50_000),
            (View::Devices, Some("sort=silent&page=50"), 50_000),
            (View::Problems, None, 20_000),
            (View::DevicesJson, None, 30_000),
            (View::DevicesJson, Some("offset=9950&sort=name"), 10_000),
        ] {
            let (_, body) = status.render(view, query, now);
            eprintln!("{query:?}: {} bytes", body.len());
            assert!(
                (least..150 * 1024).contains(&body.len()),
                "{query:?}: {} bytes",
                body.len()
            );
        }
        // The most one API answer holds.
        let (_, body) = status.render(View::DevicesJson, Some("limit=100000"), now);
        let all: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            all["devices"].as_array().unwrap().len(),
            query::API_MAX_LIMIT
        );
        assert_eq!(
            (all["matched"].as_u64(), all["limit"].as_u64()),
            (Some(10_000), Some(500))
        );
        eprintln!("limit=500: {} bytes", body.len());
        assert!(body.len() < 800_000, "{} bytes", body.len());
    }

    /// The bounds hold whatever the names are: a device name is the network server's (any
    /// text a ChirpStack `deviceName` holds), and escaping makes it up to 6 times as long on
    /// a page (`"` is `&quot;`) and in the API (a control character is `\u0001`): it is kept
    /// to what takes 64 bytes escaped. Devices as in the test above, names of the longest
    /// escape.
    #[test]
    fn pages_stay_within_their_bounds_whatever_the_names() {
        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n").unwrap();
        let t0 = Moment::now();
        let mut over = Vec::new();
        for (name, path, query, bound) in [
            ("\"", "/devices", None, 150 * 1024),
            ("\u{1}", "/api/devices", None, 150 * 1024),
            ("\u{1}", "/api/devices", Some("limit=500"), 800_000),
        ] {
            let metrics = Metrics::new();
            heard_at_full_length(&metrics, 500, |_| name.repeat(64), t0);
            let status = Status::new(metrics, Facts::of(&cfg));
            let view = View::of_path(path).unwrap();
            let (_, body) = status.render(view, query, t0 + Duration::from_secs(600));
            if body.len() >= bound {
                over.push(format!(
                    "{path} {query:?}, names of 64 {name:?}: {} bytes, the documented bound {bound}",
                    body.len()
                ));
            }
        }
        assert!(over.is_empty(), "{over:#?}");
    }

    /// The hub list is the plan and every recType parked or sent besides: a recType chosen
    /// from a decoded object's fields that parks stays listed, with its cause and fix.
    #[test]
    fn the_hub_list_keeps_what_was_parked_or_sent_outside_the_plan() {
        let cfg = Config::parse(
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[sink.topics]\n\
             \"io.microshare.gps.unpacked\" = \"gps\"\n[[source]]\ntype = \"udp\"\n\
             [[device]]\ndev_eui = \"0000000000000001\"\ncodec = \"browan-tbhh100\"\n",
        )
        .unwrap();
        let metrics = Metrics::new();
        metrics.delivered.inc("io.microshare.light.unpacked");
        metrics.parked.set("io.microshare.gps.unpacked", 1);
        let broker = "Broker: Unknown topic or partition";
        let reason = crate::metrics::ParkReason {
            kind: "missing",
            what: "no hub".into(),
            fix: "create it".into(),
            broker: broker.into(),
        };
        metrics
            .park_reasons
            .set("io.microshare.gps.unpacked", reason);
        let status = Status::new(metrics, Facts::of(&cfg));
        let snapshot = status.snapshot(Moment::now());
        let hubs: Vec<(&str, &str, &str)> = snapshot
            .upstream
            .hubs
            .iter()
            .map(|h| (h.rec_type.as_str(), h.hub.as_str(), h.state))
            .collect();
        let env_packed = "io.microshare.environment.packed";
        let env = "io.microshare.environment.unpacked";
        let light = "io.microshare.light.unpacked";
        let packed = "io.microshare.lorawan.packed";
        assert_eq!(
            hubs,
            [
                (env_packed, env_packed, "delivering"),
                (env, env, "delivering"),
                ("io.microshare.gps.unpacked", "gps", "parked"),
                (light, light, "delivering"),
                (packed, packed, "delivering"),
            ]
        );
        let gps = &snapshot.upstream.hubs[2];
        assert_eq!(
            (
                gps.reason.as_deref(),
                gps.fix.as_deref(),
                gps.broker.as_deref()
            ),
            (Some("no hub"), Some("create it"), Some(broker))
        );
    }

    /// The bold "Fix:" of a parked hub is the sink's fix for the cause it classified from the
    /// broker's answer (`Refusal::fix`), not one guessed from words in the answer: a key
    /// scoped to another hub (EntityPath), a key without Manage, the namespace's hub cap and
    /// a hub hubgate is creating itself each have their own (docs/eventhubs.md).
    #[test]
    fn the_page_shows_the_fix_of_the_hubs_refusal() {
        use crate::metrics::ParkReason;
        use crate::sink::refusal::Setup;
        use rdkafka::error::RDKafkaErrorCode as C;

        let cfg = Config::parse(
            "[sink]\ntype = \"eventhubs\"\nconnection_string = \"Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=a2V5\"\n\
             [[source]]\ntype = \"udp\"\n\
             [[device]]\ndev_eui = \"0000000000000001\"\ncodec = \"browan-tbhh100\"\n",
        )
        .unwrap();
        let env = "io.microshare.environment.unpacked";
        let scoped = Setup {
            entity_path: Some("motion".into()),
            partitions: 2,
            auto: true,
            kafka: false,
        };
        let plain = Setup {
            entity_path: None,
            partitions: 2,
            auto: true,
            kafka: false,
        };
        let cap =
            "SubCode=40300. The maximum number of resources of type EventHub has been reached";
        let refusals = [
            scoped.on_produce(
                C::TopicAuthorizationFailed,
                "Broker: Topic authorization failed",
                env,
            ),
            plain.on_create(
                C::TopicAuthorizationFailed,
                "Unauthorized access. 'Manage' claim(s) are required",
                env,
            ),
            plain.on_create(C::PolicyViolation, cap, env),
            plain.on_produce(
                C::UnknownTopicOrPartition,
                "Broker: Unknown topic or partition",
                env,
            ),
        ];
        let mut kinds = Vec::new();
        for refusal in refusals.into_iter().map(Option::unwrap) {
            let metrics = Metrics::new();
            metrics.parked.set(env, 1);
            // As the forwarder keeps it (pipeline/health.rs, `show_reason`).
            metrics.park_reasons.set(
                env,
                ParkReason {
                    kind: refusal.kind(),
                    what: refusal.what(),
                    fix: refusal.fix(),
                    broker: refusal.broker.clone(),
                },
            );
            let status = Status::new(metrics, Facts::of(&cfg));
            let now = Moment::now();
            let snapshot = status.snapshot(now);
            let hub = snapshot
                .upstream
                .hubs
                .iter()
                .find(|h| h.rec_type == env)
                .unwrap();
            assert_eq!(hub.state, "parked");
            assert_eq!(
                (hub.reason.clone(), hub.fix.clone(), hub.broker.clone()),
                (
                    Some(refusal.what()),
                    Some(refusal.fix()),
                    Some(refusal.broker.clone())
                ),
                "{}",
                refusal.kind()
            );
            let (_, page) = status.render(View::Overview, None, now);
            let fix = format!("<span class=fix>Fix: {}</span>", page::esc(&refusal.fix()));
            assert!(
                page.contains(&fix),
                "{}: no {fix} in {page}",
                refusal.kind()
            );
            kinds.push(refusal.kind());
        }
        assert_eq!(kinds, ["other_hub", "no_manage", "hub_cap", "creating"]);
    }

    /// The devices page says how many rows it shows, not only how many devices match: with
    /// 150 heard the first page has 100 rows, the second 50.
    #[test]
    fn the_device_count_says_how_many_rows_are_shown() {
        use crate::metrics::devices::Outcome;

        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n").unwrap();
        let metrics = Metrics::new();
        let now = Moment::now();
        for i in 0..150u8 {
            let up = uplink([0, 0, 0, 0, 0, 0, 1, i], &format!("d{i}"), 1, now.wall);
            let outcome = Outcome::Packed { reason: "no codec" };
            metrics.devices.heard(&up, &[], outcome, now);
        }
        let status = Status::new(metrics, Facts::of(&cfg));
        for (query, rows, count) in [
            (None, 100, "150 device(s) heard, 150 match, 1–100 shown."),
            (
                Some("page=1"),
                50,
                "150 device(s) heard, 150 match, 101–150 shown.",
            ),
            (
                Some("page=2"),
                0,
                "150 device(s) heard, 150 match, none on this page.",
            ),
            (Some("q=d14"), 11, "150 device(s) heard, 11 shown."),
        ] {
            let (_, page) = status.render(View::Devices, query, now);
            let said = page
                .split("<p id=device-count>")
                .nth(1)
                .and_then(|r| r.split("</p>").next())
                .unwrap();
            assert_eq!(
                (page.matches("<tr data-eui=").count(), said),
                (rows, count),
                "{query:?}"
            );
        }
    }

    /// A Pi has no real-time clock: it boots with the time it saved at shutdown, and
    /// systemd-timesyncd steps the clock forward once NTP answers, by however long the gateway
    /// was off (`After=time-sync.target` does not wait for that step). Uptime, a device's
    /// age and its silence, and the last delivery's age, are measured on the monotonic clock,
    /// so such a step (here a day, a moment after the start) neither ages the agent nor
    /// silences a device heard just before nor dates its delivery a day back; the wall clock
    /// only says when.
    #[test]
    fn a_clock_step_neither_ages_the_agent_nor_silences_its_devices() {
        use crate::metrics::devices::Outcome;

        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n").unwrap();
        let metrics = Metrics::new();
        let status = Status::new(metrics.clone(), Facts::of(&cfg));
        let heard = Moment::now();
        let up = uplink([0, 0, 0, 0, 0, 0, 0, 7], "door", 1, heard.wall);
        let outcome = Outcome::Packed { reason: "no codec" };
        metrics.devices.heard(&up, &[], outcome, heard);
        // Its record delivered at once (the page reads the monotonic moment only).
        metrics.last_delivery_at.set(Some(heard.mono));
        // A second later, after timesyncd stepped the wall clock a day forward.
        let later = heard + Duration::from_secs(1);
        let stepped = Moment {
            wall: later.wall + Duration::from_secs(86_400),
            mono: later.mono,
        };
        let snapshot = status.snapshot(stepped);
        let (_, body) = status.render(View::DevicesJson, None, stepped);
        let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
        let device = &devices["devices"][0];
        assert!(
            snapshot.uptime_s < 60 && device["silent"] == false && device["age_s"] == 1,
            "a second after the start: uptime {} s; the device heard a second ago: silent {}, last seen {} s ago",
            snapshot.uptime_s,
            device["silent"],
            device["age_s"]
        );
        assert_eq!(device["last_seen"], crate::record::iso8601(heard.wall));
        assert_eq!(snapshot.now, crate::record::iso8601(stepped.wall));
        // The delivery a second ago, on the clock the page shows now (the age is kept to the
        // millisecond, rounded down: one more is right).
        let up = &snapshot.upstream;
        let second_ago = |ms| crate::record::iso8601(stepped.wall - Duration::from_millis(ms));
        assert!(
            up.last_delivery_age_s == Some(1)
                && [second_ago(1_000), second_ago(1_001)]
                    .contains(up.last_delivery.as_ref().unwrap()),
            "the delivery a second ago: {:?} s ago at {:?} (now {})",
            up.last_delivery_age_s,
            up.last_delivery,
            snapshot.now
        );
    }

    /// docs/operations.md: "a devices page shows 100 at a time, so every page stays under
    /// 150 KB", and `/api/devices` "at most 500: an answer stays under 0.8 MB". With the
    /// readings of a real multi-sensor: a Cayenne LPP payload of 16 (temperature, humidity,
    /// pressure, light, accelerometer, gyrometer, GPS, three analog inputs), decoded by the
    /// codec, on 1,000 devices. (Measured with six readings, the bounds were 100 KB and 1,000
    /// devices an answer, and a page of these was 109 KB, 1,000 of them 1.3 MB.)
    #[test]
    fn pages_stay_within_the_documented_bounds_with_sixteen_readings_a_device() {
        use crate::codec::Codec;
        use crate::metrics::devices::Outcome;

        // ch1 temperature, ch2 humidity, ch3 barometer, ch4 illuminance, ch5 accelerometer
        // (3), ch6 gyrometer (3), ch7 GPS (3), ch8 to ch10 analog inputs: 16 readings.
        let payload = hex::decode(concat!(
            "0167ff38",
            "02688f",
            "0373279f",
            "04650190",
            "0571fc18000a03e8",
            "06860064ff9c0000",
            "07880627e8ff8ea90004b0",
            "080201f4",
            "0902fe0c",
            "0a020064",
        ))
        .unwrap();
        let codec = Codec::from_id("cayenne-lpp").unwrap();
        let decoded = codec.decode(Some(2), &payload).unwrap();
        assert_eq!(decoded.readings.len() + decoded.health.len(), 16);

        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n").unwrap();
        let metrics = Metrics::new();
        let now = Moment::now();
        let tags = ["Building 1".to_string(), "Floor 2".to_string()];
        for i in 0..1_000u32 {
            let [_, x, y, z] = i.to_be_bytes();
            let mut up = uplink(
                [0xa8, 0x40, 0x41, 0, x, y, z, 1],
                &format!("lab-multisensor-{i}"),
                i,
                now.wall,
            );
            up.payload = payload.clone();
            up.radio = Radio {
                rssi: Some(-97),
                snr: Some(-3.5),
                spreading_factor: Some(9),
                ..Radio::default()
            };
            up.fport = Some(2);
            let outcome = Outcome::Decoded {
                codec: codec.id(),
                rec_type: decoded.rec_type,
                readings: &decoded.readings,
                health: &decoded.health,
            };
            metrics.devices.heard(&up, &tags, outcome, now);
        }
        let status = Status::new(metrics, Facts::of(&cfg));
        let (_, page) = status.render(View::Devices, None, now);
        let (_, api) = status.render(View::DevicesJson, Some("limit=1000"), now);
        let all: serde_json::Value = serde_json::from_str(&api).unwrap();
        assert_eq!(
            all["devices"].as_array().unwrap().len(),
            query::API_MAX_LIMIT
        );
        assert!(
            page.len() < 150 * 1024 && api.len() < 800_000,
            "devices page {} bytes (documented: under 150 KB), /api/devices?limit=1000 {} bytes (documented: under 0.8 MB)",
            page.len(),
            api.len()
        );
    }
}
