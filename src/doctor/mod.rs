//! `hubgate doctor`: a preflight of everything the agent needs, in the order it needs it,
//! one line per step in plain words (`OK   step: detail`, `FAIL step: reason`,
//! `SKIP step: why`). Network steps give up after [`STEP_TIMEOUT`], so a dead broker fails
//! fast. The Kafka steps use the sink's own librdkafka settings and hub plan, so what
//! passes here is what the agent will do. Secrets are never printed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;

use crate::buffer::disk::{self, human};
use crate::buffer::{reserve, BufferLock};
use crate::config::{BufferConfig, Config, MqttSourceConfig, SinkConfig, SourceConfig};
use crate::logline::clean_to;
use crate::sink::refusal::{Cause, Setup};
use crate::sink::{probe, provision};

mod serial;

/// How long one network step may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The paths librdkafka probes, in its order, for `ssl.ca.location = "probe"`
/// (`rd_kafka_ssl_probe_and_set_default_ca_location`, non-Apple list).
const LIBRDKAFKA_CA_PROBE: &[&str] = &[
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-bundle.crt",
    "/etc/pki/tls/certs/ca-bundle.trust.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/cacert.pem",
    "/etc/certs/ca-certificates.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs",
    "/usr/local/etc/ssl/cert.pem",
    "/usr/local/etc/ssl/cacert.pem",
    "/usr/local/etc/ssl/certs/cert.pem",
    "/usr/local/etc/ssl/certs/cacert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
    "/etc/openssl/certs/ca-certificates.crt",
];

/// Where librdkafka takes the certificates it trusts from (`rd_kafka_ssl_set_certs`), so
/// the TLS step trusts exactly what the agent will.
#[derive(Debug, PartialEq)]
enum CaSource {
    /// `ssl.ca.pem`: certificates in the config itself.
    Pem(String),
    /// A file or directory: `ssl.ca.location`, or what `probe` found.
    Location(String),
    /// The linked OpenSSL's default paths (`SSL_CERT_FILE`/`SSL_CERT_DIR` override them).
    Default,
}

impl CaSource {
    fn of(client: &ClientConfig) -> CaSource {
        match (client.get("ssl.ca.pem"), client.get("ssl.ca.location")) {
            (Some(pem), _) => CaSource::Pem(pem.to_string()),
            (None, Some("probe")) => probe(LIBRDKAFKA_CA_PROBE),
            (None, Some(path)) => CaSource::Location(path.to_string()),
            (None, None) => CaSource::Default,
        }
    }

    fn describe(&self) -> String {
        match self {
            CaSource::Pem(_) => "ssl.ca.pem".into(),
            CaSource::Location(path) => path.clone(),
            CaSource::Default => format!("OpenSSL's default paths, {}", openssl::version::dir()),
        }
    }
}

/// The first of `paths` that is a file or a non-empty directory, as librdkafka probes;
/// OpenSSL's default paths when none is.
fn probe(paths: &[&str]) -> CaSource {
    paths
        .iter()
        .map(Path::new)
        .find(|p| {
            p.is_file() || std::fs::read_dir(p).is_ok_and(|mut entries| entries.next().is_some())
        })
        .map_or(CaSource::Default, |p| {
            CaSource::Location(p.display().to_string())
        })
}

enum Outcome {
    Ok(String),
    Fail(String),
    Skip(String),
    /// Not a failure now, but the operator should know: printed, exit status unchanged.
    Warn(String),
}

/// The printed checklist; remembers whether anything failed.
struct Checklist<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Checklist<'_> {
    fn step(&mut self, step: &str, outcome: Outcome) {
        let (tag, text) = match outcome {
            Outcome::Ok(t) => ("OK  ", t),
            Outcome::Fail(t) => {
                self.failed = true;
                ("FAIL", t)
            }
            Outcome::Skip(t) => ("SKIP", t),
            Outcome::Warn(t) => ("WARN", t),
        };
        let _ = writeln!(self.out, "{tag} {step}: {text}");
        let _ = self.out.flush();
    }
}

/// Check the setup of the config at `path`, printing to `out`. True when every step passed.
pub fn run(path: &Path, out: &mut dyn Write) -> bool {
    let mut list = Checklist { out, failed: false };
    let (cfg, warnings) = match crate::pipeline::prepare::load(path) {
        Ok((cfg, prepared)) => (cfg, prepared.warnings),
        Err(e) => {
            list.step("config", Outcome::Fail(e.to_string()));
            return false;
        }
    };
    let loaded = format!(
        "{} ({} source(s), {} device(s))",
        path.display(),
        cfg.sources.len(),
        cfg.devices.len()
    );
    // The warnings `check` prints and `run` logs (a password in clear text, a secret file
    // others can read): allowed, so not a failure, but the config is not simply OK.
    if warnings.is_empty() {
        list.step("config", Outcome::Ok(loaded));
    } else {
        list.step(
            "config",
            Outcome::Warn(format!("{loaded}, {} warning(s):", warnings.len())),
        );
        for w in warnings {
            list.step("config", Outcome::Warn(w));
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            list.step(
                "runtime",
                Outcome::Fail(format!("cannot start the runtime: {e}")),
            );
            return false;
        }
    };
    sink(&cfg, &mut list);
    let agent = BufferLock::is_held(&cfg.buffer.path);
    let agent_running = matches!(agent, Ok(true));
    let agent_user = serial::agent_user(&cfg.buffer.path, Path::new("/etc"));
    for src in &cfg.sources {
        match src {
            SourceConfig::Mqtt(m) => {
                let outcome = runtime.block_on(mqtt(m));
                list.step(&format!("mqtt {}", m.url), outcome);
            }
            SourceConfig::Serial(s) => list.step(
                &format!("serial {}", s.device.display()),
                serial::serial(&s.device, agent_user.as_ref()),
            ),
            SourceConfig::Udp(u) => {
                list.step(&format!("udp {}", u.listen), udp(u.listen, agent_running))
            }
            // A file, checked when the config was loaded.
            SourceConfig::Replay(_) => {}
        }
    }
    list.step(
        &format!("buffer {}", cfg.buffer.path.display()),
        buffer_space(&cfg.buffer),
    );
    if let Some(outcome) = moved_aside(&cfg.buffer.path) {
        list.step("buffer moved aside", outcome);
    }
    // Run from a shell, where systemd sets no STATE_DIRECTORY: the shipped unit's.
    for state in crate::buffer::state_directories(true) {
        if let Some(left) = crate::buffer::left_in_state_directory(&cfg.buffer.path, &state, human)
        {
            list.step("buffer left behind", Outcome::Warn(left));
        }
    }
    list.step(
        "buffer lock",
        match agent {
            Ok(true) => Outcome::Ok("in use by a running hubgate".into()),
            Ok(false) => Outcome::Ok("free (no hubgate is running on this buffer)".into()),
            Err(e) => Outcome::Fail(e.to_string()),
        },
    );
    let named = crate::js::dir::Named::of(&cfg);
    if !(named.codecs.is_empty() && named.tables.is_empty()) {
        list.step(
            &format!("codecs {}", named.dir.display()),
            js_codecs(&named),
        );
    }
    list.step("status page", status_page(&cfg.metrics, agent_running));
    list.step("clock", clock(crate::clock::synchronized()));
    // A broker's name lookup the mqtt step gave up on may still run on the blocking pool
    // (getaddrinfo has no timeout): dropping the runtime would wait for it.
    runtime.shutdown_background();
    !list.failed
}

/// The JavaScript codecs and mapping tables the config names, loaded as the agent loads them.
/// One that fails is a failure here (its devices' uplinks would go out packed), though the
/// agent runs without it.
fn js_codecs(named: &crate::js::dir::Named) -> Outcome {
    let set = named.load(crate::js::Launcher::default());
    let loaded = format!(
        "{} of {} JavaScript codec(s) loaded",
        set.loaded(),
        named.codecs.len()
    );
    match set.failures()[..] {
        [] => Outcome::Ok(loaded),
        ref failed => Outcome::Fail(format!("{loaded}; {}", failed.join("; "))),
    }
}

/// The system clock. Unsynchronised is a warning, not a failure: right after boot NTP has
/// not synced yet, and containers report it without it mattering.
fn clock(synchronized: Option<bool>) -> Outcome {
    match synchronized {
        Some(true) => Outcome::Ok("synchronised".into()),
        Some(false) => Outcome::Warn(
            "not synchronised: buffered records do not expire and TLS may refuse certificates \
             until it is; enable NTP (timedatectl set-ntp true)"
                .into(),
        ),
        None => Outcome::Warn(
            "unknown: adjtimex is refused (systemd's ProtectClock forbids even reading it) and \
             systemd-timesyncd does not run; hubgate trusts the clock unless it shows a time \
             before 2026; run systemd-timesyncd, or check the time with `date`"
                .into(),
        ),
    }
}

/// Where the installer finds the status page: the listen address, or for a wildcard one the
/// gateway's own addresses; a failure when the agent could not listen there (it would run on
/// without metrics and page).
fn status_page(m: &crate::config::MetricsConfig, agent_running: bool) -> Outcome {
    let Some(addr) = m.listen else {
        return Outcome::Skip("off (metrics.listen = \"off\")".into());
    };
    if m.unguarded().is_some() {
        return Outcome::Fail(format!(
            "not served: {addr} is reachable from the network; set metrics.password_file or metrics.lan_read_only = true"
        ));
    }
    match tcp_listen(addr, agent_running) {
        Ok(()) => Outcome::Ok(status_urls(m, addr)),
        Err(why) => Outcome::Fail(why),
    }
}

/// Whether the agent could listen on `addr`: the port in use is fine only while a hubgate
/// runs on this buffer, as its own listener is then what holds it.
fn tcp_listen(addr: SocketAddr, agent_running: bool) -> Result<(), String> {
    use std::io::ErrorKind as K;
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == K::AddrInUse && agent_running => Ok(()),
        Err(e) if e.kind() == K::AddrInUse => Err(format!(
            "{addr} is in use by another program, and no hubgate runs on this buffer: the agent would run without metrics and status page; free the port or change metrics.listen"
        )),
        Err(e) if e.kind() == K::AddrNotAvailable => Err(format!(
            "{addr} is not an address of this machine: change metrics.listen"
        )),
        Err(e) if e.kind() == K::PermissionDenied => Err(format!(
            "cannot listen on {addr}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        )),
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// The status page's URLs and who may read it.
fn status_urls(m: &crate::config::MetricsConfig, addr: SocketAddr) -> String {
    let port = addr.port();
    let urls: Vec<String> = if addr.ip().is_unspecified() {
        local_addresses()
            .into_iter()
            .map(|ip| format!("http://{}/", std::net::SocketAddr::new(ip, port)))
            .collect()
    } else {
        vec![format!("http://{addr}/")]
    };
    let who = if addr.ip().is_loopback() {
        "on this machine only; [metrics] listen and password_file open it to the LAN"
    } else if m.password.is_some() {
        "password: metrics.password_file"
    } else {
        "read-only, no password: metrics.lan_read_only"
    };
    format!("{}; {who}", urls.join(" "))
}

/// This machine's addresses on interfaces that are up, loopback last.
fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is read while valid and freed once below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut at = list;
    while let Some(ifa) = unsafe { at.as_ref() } {
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        if let (true, Some(sa)) = (up, unsafe { ifa.ifa_addr.as_ref() }) {
            if i32::from(sa.sa_family) == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                out.push(std::net::IpAddr::V4(ip));
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out.sort_by_key(|ip| ip.is_loopback());
    out.dedup();
    out
}

/// DNS, TCP and TLS for each bootstrap broker, then SASL and hub metadata through librdkafka.
fn sink(cfg: &Config, list: &mut Checklist) {
    let client = match crate::sink::kafka_client_config(&cfg.sink) {
        Ok(Some(c)) => c,
        Ok(None) => {
            list.step(
                "sink",
                Outcome::Skip("type = \"stdout\" needs no network".into()),
            );
            return;
        }
        Err(e) => {
            list.step("sink", Outcome::Fail(e.to_string()));
            return;
        }
    };
    let protocol = client
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_ascii_lowercase();
    let tls = protocol.ends_with("ssl");
    let sasl = protocol.starts_with("sasl");
    if let SinkConfig::Kafka(k) = &cfg.sink {
        if k.insecure {
            let off: Vec<String> = crate::sink::properties::kafka_tls_off(k)
                .into_iter()
                .map(|(key, why)| format!("{key}: {why}"))
                .collect();
            list.step(
                "security",
                Outcome::Fail(format!(
                    "insecure = true{}",
                    if off.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", off.join("; "))
                    }
                )),
            );
        }
    }
    let servers = client.get("bootstrap.servers").unwrap_or("").to_string();
    let ca = CaSource::of(&client);
    let given_in = given_in(&cfg.sink);
    let mut reached = Reached::Nothing;
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        reached = reached.max(broker(server, tls, &ca, &given_in, list));
    }
    let hubs = cfg.hub_plan();
    if reached != Reached::Ready {
        // A TLS failure behind a working TCP connection points at TLS (a plain port, a
        // TLS-intercepting proxy, the CA), not at the firewall.
        let why = if reached == Reached::Tcp {
            "no TLS connection to any broker: TCP connected, the TLS handshake failed"
        } else {
            "no broker could be reached"
        };
        list.step("sasl", Outcome::Skip(why.into()));
        for (rec_type, _) in &hubs {
            list.step(&format!("hub {rec_type}"), Outcome::Skip(why.into()));
        }
        return;
    }
    let login = format!(
        "{} as {:?}",
        client.get("sasl.mechanisms").unwrap_or("PLAIN"),
        client.get("sasl.username").unwrap_or("")
    );
    let present = match crate::sink::probe::hubs(&client, STEP_TIMEOUT) {
        Ok(present) => {
            list.step(
                "sasl",
                if sasl {
                    Outcome::Ok(format!("{login} accepted"))
                } else {
                    Outcome::Skip(format!("security_protocol = {protocol} has no login"))
                },
            );
            present
        }
        Err(reason) => {
            let step = if sasl { "sasl" } else { "metadata" };
            list.step(step, Outcome::Fail(clean_to(&reason, WORDS_BYTES)));
            for (rec_type, _) in &hubs {
                list.step(
                    &format!("hub {rec_type}"),
                    Outcome::Skip("no metadata from the broker".into()),
                );
            }
            return;
        }
    };
    hub_steps(cfg, &client, &present, &hubs, list);
}

/// Where the brokers' host names were given, for the fix of a certificate that lacks one: a
/// `[sink.properties]` key librdkafka reads as `bootstrap.servers` overrides `brokers` (the
/// last of them, as `site_settings` sets them in order).
fn given_in(sink: &SinkConfig) -> String {
    match sink {
        SinkConfig::Kafka(k) => k
            .properties
            .0
            .keys()
            .rfind(|key| crate::sink::properties::setting_name(key) == "bootstrap.servers")
            .map_or_else(
                || "sink.brokers".to_string(),
                |key| format!("[sink.properties] {key:?}"),
            ),
        _ => "the connection string's Endpoint".to_string(),
    }
}

/// One step per recType (its hub exists, would be created, or why not and the fix), the
/// namespace's hub count against the tiers' caps, and one probe record written.
fn hub_steps(
    cfg: &Config,
    client: &ClientConfig,
    present: &probe::Hubs,
    plan: &[(String, String)],
    list: &mut Checklist,
) {
    let setup = crate::sink::hub_setup(&cfg.sink).unwrap_or_default();
    let mut missing: Vec<&str> = plan
        .iter()
        .map(|(_, h)| h.as_str())
        .filter(|h| !present.contains_key(*h))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let creatable = if setup.auto && !missing.is_empty() {
        provision::would_create(client, &setup, &missing)
    } else {
        Ok(Default::default())
    };
    for (rec_type, hub) in plan {
        let name = if hub == rec_type {
            "hub".to_string()
        } else {
            format!("hub {hub:?}")
        };
        let outcome = match (present.get(hub), &creatable) {
            (Some(partitions), _) => {
                Outcome::Ok(format!("{name} exists ({partitions} partition(s))"))
            }
            (None, _) if !setup.auto => Outcome::Fail(format!(
                "{name} does not exist: {}; until then its records wait in the buffer",
                setup.missing(hub).fix()
            )),
            (None, Ok(found)) => match found.get(hub.as_str()) {
                Some(Some(r)) => Outcome::Fail(format!(
                    "{}: {} (broker: {})",
                    r.what(),
                    r.fix(),
                    clean_to(&r.broker, WORDS_BYTES)
                )),
                _ => Outcome::Ok(format!(
                    "{name} does not exist yet; the broker accepts its creation (asked to validate only): the agent creates it at start with {} partition(s)",
                    setup.partitions
                )),
            },
            (None, Err(e)) => Outcome::Warn(format!(
                "{name} does not exist yet; whether this key may create it is unknown: {}",
                clean_to(&e.to_string(), WORDS_BYTES)
            )),
        };
        list.step(&format!("hub {rec_type}"), outcome);
    }
    if matches!(cfg.sink, SinkConfig::Eventhubs(_)) {
        list.step("hub count", hub_count(present, plan));
    }
    match plan.iter().find(|(_, h)| present.contains_key(h)) {
        Some((rec_type, hub)) => {
            let outcome = write(client, &setup, present, rec_type, hub);
            list.step(&format!("write {hub}"), outcome);
        }
        None => list.step(
            "write",
            Outcome::Skip(if setup.auto {
                "no hub exists yet to write to; run doctor again once the agent has created them"
                    .into()
            } else {
                "no hub exists to write to; run doctor again once they are created (above)".into()
            }),
        ),
    }
}

/// The hubs the namespace would hold with this site's (those there, and those to create)
/// against the tiers' caps: 10 on Basic and Standard, 100 per processing unit on Premium,
/// 1000 on Dedicated. The tier does not show over Kafka: more than 10 is a warning.
fn hub_count(present: &probe::Hubs, plan: &[(String, String)]) -> Outcome {
    let new: std::collections::BTreeSet<&str> = plan
        .iter()
        .map(|(_, h)| h.as_str())
        .filter(|h| !present.contains_key(*h))
        .collect();
    let total = present.len() + new.len();
    let counted = format!(
        "{total} hub(s) in the namespace with this site's ({} there, {} to create)",
        present.len(),
        new.len()
    );
    if total > 10 && !new.is_empty() {
        Outcome::Warn(format!(
            "{counted}: more than the 10 a Basic or Standard namespace holds, where creating them fails (hub_cap); map recTypes onto fewer hubs with [sink.hubs], use a second namespace, or Premium (100 per processing unit)"
        ))
    } else {
        Outcome::Ok(format!(
            "{counted}; Basic and Standard hold 10, Premium 100 per processing unit, Dedicated 1000"
        ))
    }
}

/// Write one probe record to `hub` (docs/eventhubs.md "What doctor writes"). A refusal is
/// classified; when the connection string names another hub (`EntityPath`) that exists, a
/// probe there tells whether the key is scoped to it.
fn write(
    client: &ClientConfig,
    setup: &Setup,
    present: &probe::Hubs,
    rec_type: &str,
    hub: &str,
) -> Outcome {
    let timeout = STEP_TIMEOUT * 2;
    let (code, text) = match probe::write(client, hub, rec_type, timeout) {
        Ok(took) => {
            let scope = match &setup.entity_path {
                Some(ep) if ep != hub => format!("; EntityPath={ep} does not limit this key"),
                _ => String::new(),
            };
            return Outcome::Ok(format!(
                "one probe record written and confirmed in {} ms (key \"{}\", event_type \"probe\"){scope}",
                took.as_millis(),
                probe::PROBE_KEY
            ));
        }
        Err(e) => e,
    };
    let refusal = code.and_then(|c| setup.on_produce(c, &text, hub));
    if let (Some(r), Some(ep)) = (&refusal, &setup.entity_path) {
        if matches!(r.cause, Cause::OtherHub(_))
            && present.contains_key(ep)
            && probe::write(client, ep, rec_type, timeout).is_ok()
        {
            return Outcome::Fail(format!(
                "refused, while a probe to hub {ep:?} (EntityPath) went through: this key writes only to {ep:?}; set hub_mode = \"single\" to send every recType there, or use a namespace-level policy's connection string (broker: {})",
                clean_to(&r.broker, WORDS_BYTES)
            ));
        }
    }
    match refusal {
        Some(r) => Outcome::Fail(format!(
            "{}: {} (broker: {})",
            r.what(),
            r.fix(),
            clean_to(&r.broker, WORDS_BYTES)
        )),
        None => Outcome::Fail(format!("not confirmed: {}", clean_to(&text, WORDS_BYTES))),
    }
}

/// DNS, TCP and (with `tls`) TLS to one bootstrap `host:port`; true when all passed.
/// How far the steps of one broker got, in their order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    Nothing,
    /// TCP connected, the TLS handshake failed.
    Tcp,
    /// Ready for the login.
    Ready,
}

/// The steps of one bootstrap broker `server`, given in `given_in`.
fn broker(server: &str, tls: bool, ca: &CaSource, given_in: &str, list: &mut Checklist) -> Reached {
    // librdkafka accepts `proto://host:port` too.
    let server = server.rsplit("://").next().unwrap_or(server);
    let Some((host, port)) = server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
    else {
        list.step(
            &format!("dns {server}"),
            Outcome::Fail("not host:port".into()),
        );
        return Reached::Nothing;
    };
    let addrs = match resolve(host, port) {
        Ok(a) => a,
        Err(e) => {
            list.step(&format!("dns {host}"), Outcome::Fail(e));
            list.step(&format!("tcp {server}"), Outcome::Skip("no address".into()));
            return Reached::Nothing;
        }
    };
    let ips: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    list.step(&format!("dns {host}"), Outcome::Ok(ips.join(", ")));
    let stream = match connect(&addrs) {
        Ok((stream, addr, took)) => {
            list.step(
                &format!("tcp {server}"),
                Outcome::Ok(format!("connected to {addr} in {} ms", took.as_millis())),
            );
            stream
        }
        Err(e) => {
            let hint = if port == 9093 {
                " (outbound TCP 9093 must be open; Event Hubs has no fallback port)"
            } else {
                ""
            };
            list.step(
                &format!("tcp {server}"),
                Outcome::Fail(format!("{e}{hint}")),
            );
            if tls {
                list.step(
                    &format!("tls {server}"),
                    Outcome::Skip("no TCP connection".into()),
                );
            }
            return Reached::Nothing;
        }
    };
    if !tls {
        return Reached::Ready;
    }
    match handshake(stream, host, ca, given_in) {
        Ok(detail) => {
            list.step(&format!("tls {server}"), Outcome::Ok(detail));
            Reached::Ready
        }
        Err(e) => {
            list.step(&format!("tls {server}"), Outcome::Fail(e));
            Reached::Tcp
        }
    }
}

/// Name resolution in a thread of its own: getaddrinfo has no timeout.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = (host.to_string(), port);
    std::thread::spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    match rx.recv_timeout(STEP_TIMEOUT) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("{host} has no address")),
        Ok(Err(e)) => Err(format!(
            "cannot resolve {host}: {e} (check the name and the gateway's DNS)"
        )),
        Err(_) => Err(format!("no DNS answer for {host} within {STEP_TIMEOUT:?}")),
    }
}

fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr, Duration), String> {
    let mut errors = Vec::new();
    for addr in addrs {
        let started = Instant::now();
        match TcpStream::connect_timeout(addr, STEP_TIMEOUT) {
            Ok(s) => return Ok((s, *addr, started.elapsed())),
            Err(e) => errors.push(format!("{addr}: {}", io_reason(&e))),
        }
    }
    Err(errors.join("; "))
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => {
            "connection refused (nothing listens there, or a firewall rejects it)".into()
        }
        K::TimedOut | K::WouldBlock => {
            format!("no answer within {STEP_TIMEOUT:?} (a firewall dropping the traffic?)")
        }
        _ => e.to_string(),
    }
}

/// Whether `chain` (the peer's certificate first) leads to a CA of `store`, signatures and
/// dates checked with the store's settings but no host name; else OpenSSL's reason.
fn verified(
    store: &openssl::x509::store::X509StoreRef,
    chain: &openssl::stack::StackRef<openssl::x509::X509>,
) -> Result<(), &'static str> {
    let leaf = chain.iter().next().ok_or("no certificate")?;
    let mut ctx = openssl::x509::X509StoreContext::new().map_err(|_| "out of memory")?;
    ctx.init(store, leaf, chain, |c| {
        Ok(if c.verify_cert()? {
            Ok(())
        } else {
            Err(c.error().error_string())
        })
    })
    .unwrap_or(Err("the chain could not be checked"))
}

/// A TLS handshake of our own, so a certificate problem is named exactly; `host` was given in
/// `given_in`.
fn handshake(
    stream: TcpStream,
    host: &str,
    ca: &CaSource,
    given_in: &str,
) -> Result<String, String> {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod};
    use openssl::x509::{X509VerifyResult, X509};
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    let bundle = ca.describe();
    match ca {
        CaSource::Pem(pem) => {
            let certs = X509::stack_from_pem(pem.as_bytes())
                .map_err(|e| format!("cannot read ssl.ca.pem: {e}"))?;
            for cert in certs {
                b.cert_store_mut()
                    .add_cert(cert)
                    .map_err(|e| format!("cannot use ssl.ca.pem: {e}"))?;
            }
        }
        CaSource::Location(path) if Path::new(path).is_dir() => b
            .load_verify_locations(None, Some(Path::new(path)))
            .map_err(|e| format!("cannot load the CA certificates in {path}: {e}"))?,
        CaSource::Location(path) => b
            .set_ca_file(path)
            .map_err(|e| format!("cannot load the CA bundle {path}: {e}"))?,
        CaSource::Default => b.set_default_verify_paths().map_err(|e| e.to_string())?,
    }
    let _ = stream.set_read_timeout(Some(STEP_TIMEOUT));
    let _ = stream.set_write_timeout(Some(STEP_TIMEOUT));
    match b.build().connect(host, stream) {
        Ok(s) => Ok(format!(
            "{}, certificate for {host} verified (CA {bundle})",
            s.ssl().version_str()
        )),
        Err(HandshakeError::Failure(mid)) => {
            let ssl = mid.ssl();
            let verify = ssl.verify_result();
            if verify == X509VerifyResult::OK {
                return Err(format!("handshake failed: {}", mid.error()));
            }
            let untrusted = |reason: &str| {
                format!(
                    "certificate not trusted: {reason} (CA {bundle}; a wrong clock breaks this too)"
                )
            };
            // The chain the broker sent: its certificate first (no peer certificate is set
            // when the check fails).
            let Some(chain) = ssl.peer_cert_chain() else {
                return Err(untrusted(verify.error_string()));
            };
            let names = chain.iter().next().map(names_of);
            match name_mismatch(verify.error_string(), host, names.as_deref(), given_in) {
                // OpenSSL checks the name before the signatures and dates: the name is the
                // fault only when the chain holds without it.
                Some(words) => match verified(ssl.ssl_context().cert_store(), chain) {
                    Ok(()) => Err(words),
                    Err(reason) => Err(untrusted(reason)),
                },
                None => Err(untrusted(verify.error_string())),
            }
        }
        Err(HandshakeError::WouldBlock(_)) => Err(format!(
            "no TLS answer within {STEP_TIMEOUT:?} (is this a TLS port?)"
        )),
        Err(HandshakeError::SetupFailure(e)) => Err(e.to_string()),
    }
}

/// What a TLS handshake of our own with `host:port` finds wrong, when it reaches the broker
/// and fails.
fn tls_fault(host: &str, port: u16, ca: &CaSource, given_in: &str) -> Option<String> {
    let (stream, _, _) = connect(&resolve(host, port).ok()?).ok()?;
    handshake(stream, host, ca, given_in).err()
}

/// CONNECT and wait for CONNACK, with the source's address and credentials but a client id
/// of its own, so the agent's persistent session is left alone.
async fn mqtt(cfg: &MqttSourceConfig) -> Outcome {
    use rumqttc::{AsyncClient, ConnectReturnCode as R, ConnectionError, Event, Packet};
    let client_id = format!("hubgate-doctor-{}", std::process::id());
    let mut opts = match crate::source::mqtt::options(cfg, &client_id) {
        Ok(o) => o,
        Err((key, e)) => return Outcome::Fail(format!("{key}: {e}")),
    };
    opts.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(opts, 10);
    let connack = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match connack {
        Ok(Ok(())) => {
            crate::source::mqtt::disconnect(&client, &mut events).await;
            Outcome::Ok("CONNACK: connection accepted".into())
        }
        Ok(Err(ConnectionError::ConnectionRefused(code))) => Outcome::Fail(format!(
            "the broker refused the connection: {}",
            match code {
                R::BadUserNamePassword => "bad user name or password",
                R::NotAuthorized => "not authorized",
                R::BadClientId => "client id refused",
                R::ServiceUnavailable => "service unavailable",
                R::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
                R::Success => "success code with an error",
            }
        )),
        Ok(Err(ConnectionError::Io(e))) => Outcome::Fail(io_reason(&e)),
        Ok(Err(e)) => {
            let text = crate::source::mqtt::connection_error(&e);
            let hint = if text.contains("certificate required") {
                " (the broker asks for a client certificate: set client_cert_file and client_key_file)".into()
            } else if let Some(plain) = name_mismatch(&text, &cfg.url.host, None, "the URL") {
                // OpenSSL checks the name first: a handshake of our own tells whether the
                // chain holds too, and gives the names the certificate holds. One that does
                // not reach the broker or does not fail tells neither: the plain words then.
                let ca = cfg.ca_path().map_or(CaSource::Default, |path| {
                    CaSource::Location(path.display().to_string())
                });
                let words = tls_fault(&cfg.url.host, cfg.url.port, &ca, "the URL").unwrap_or(plain);
                format!(" ({words})")
            } else if text.contains("certificate verify failed") {
                " (the broker's certificate is not signed by ca_file, or by the system's CAs without one)".into()
            } else {
                String::new()
            };
            Outcome::Fail(format!(
                "cannot connect: {}{hint}",
                clean_to(&text, WORDS_BYTES)
            ))
        }
        Err(_) => Outcome::Fail(format!("no CONNACK within {STEP_TIMEOUT:?}")),
    }
}

/// The plain words for OpenSSL's verify failure `reason` when it is a name mismatch: the
/// broker's certificate does not cover `host`, a name (`hostname mismatch`) or an IP address
/// (`IP address mismatch`), as given in `given_in`; `names`: the names the certificate holds,
/// when known, quoted with [`clean_to`]. OpenSSL checks the name before the signatures and
/// dates, so the reason alone does not clear the chain: [`handshake`] calls it a mismatch only
/// once the chain holds without the name. `None` for any other reason.
fn name_mismatch(
    reason: &str,
    host: &str,
    names: Option<&[String]>,
    given_in: &str,
) -> Option<String> {
    // A shared certificate may name hundreds of hosts: the first few say enough.
    const SHOWN: usize = 5;
    // A DNS name is at most 253 bytes, and those worth showing far shorter.
    const NAME_BYTES: usize = 64;
    let shown = |names: &[String]| -> String {
        let names: Vec<String> = names.iter().map(|n| clean_to(n, NAME_BYTES)).collect();
        names.join(", ")
    };
    let holds = match names {
        Some([]) => ", and names nothing".to_string(),
        Some(names) if names.len() > SHOWN => format!(
            ", only {} and {} more",
            shown(&names[..SHOWN]),
            names.len() - SHOWN
        ),
        Some(names) => format!(", only {}", shown(names)),
        None => String::new(),
    };
    if reason.contains("hostname mismatch") {
        Some(format!(
            "the broker's certificate does not name {host}{holds}: use a name it holds in \
             {given_in}, or have the certificate made for {host}"
        ))
    } else if reason.contains("IP address mismatch") {
        Some(format!(
            "the broker's certificate does not hold the IP address {host} (an IP \
             subjectAltName){holds}: use a name it holds in {given_in}, or add the IP to it"
        ))
    } else {
        None
    }
}

/// The most bytes of a peer's words (an error it sent) a step quotes.
const WORDS_BYTES: usize = 1000;

/// The names a certificate holds, as OpenSSL matches a host against them: its DNS
/// subjectAltNames, or its subject's common names when it has none (an IP or e-mail
/// subjectAltName does not stop OpenSSL from taking the common name for a host name), then
/// its IP subjectAltNames.
fn names_of(cert: &openssl::x509::X509Ref) -> Vec<String> {
    use openssl::nid::Nid;
    let (mut names, mut ips) = (Vec::new(), Vec::new());
    for n in cert.subject_alt_names().iter().flatten() {
        if let Some(name) = n.dnsname() {
            names.push(name.to_string());
        } else if let Some(ip) = n.ipaddress() {
            let ip: std::net::IpAddr = match ip {
                &[a, b, c, d] => [a, b, c, d].into(),
                b => match <[u8; 16]>::try_from(b) {
                    Ok(b) => b.into(),
                    Err(_) => continue,
                },
            };
            ips.push(ip.to_string());
        }
    }
    if names.is_empty() {
        names = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok())
            .collect();
    }
    names.extend(ips);
    names
}

fn udp(listen: SocketAddr, agent_running: bool) -> Outcome {
    use std::io::ErrorKind as K;
    match UdpSocket::bind(listen) {
        Ok(_) => Outcome::Ok("free to listen on".into()),
        Err(e) if e.kind() == K::AddrInUse && agent_running => {
            Outcome::Ok("in use, by the running hubgate".into())
        }
        Err(e) if e.kind() == K::AddrInUse => Outcome::Fail(
            "in use by another program (a packet forwarder or another agent listening there?)"
                .into(),
        ),
        Err(e) if e.kind() == K::PermissionDenied => Outcome::Fail(
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".into(),
        ),
        Err(e) => Outcome::Fail(e.to_string()),
    }
}

/// Room for `max_bytes` of records on top of the `min_free` the buffer leaves on the disk.
fn buffer_space(cfg: &BufferConfig) -> Outcome {
    let room = match disk::room_for_cap(cfg) {
        Ok(room) => room,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    // Only in the buffer's own directory: none is made where it is still to be created.
    let probed = (room.measured == cfg.path).then(|| disk::writable(&cfg.path));
    match probed.unwrap_or(Ok(())) {
        Err(e) if disk::refuses_writes(&e) => {
            let refusal = disk::Refusal::of(&cfg.path);
            let hint = refusal.hint();
            return Outcome::Fail(match refusal {
                disk::Refusal::MountedReadOnly => {
                    format!("no agent can write it: {hint}; the agent does not start until then")
                }
                disk::Refusal::Failed => format!(
                    "no agent can write it: {hint}; the agent runs without its buffer meanwhile \
                     (records go from memory to a sink that confirms, else input waits)"
                ),
                disk::Refusal::Unexplained => format!("writing a file there fails ({e}): {hint}"),
            });
        }
        Err(e) => log::debug!("buffer {}: writing a file: {e}", cfg.path.display()),
        Ok(()) => {}
    }
    let created = if room.measured != cfg.path {
        " (the directory is created at start)"
    } else if reserve::present(&cfg.path) {
        ", disk space reserve held"
    } else {
        // Missing on a full disk: the buffer's open took it back (docs/durability.md).
        ", no disk space reserve (the agent makes it when the disk has room)"
    };
    let sizes = format!(
        "max_bytes {} + min_free {}",
        human(cfg.max_bytes),
        human(cfg.min_free)
    );
    if room.holds_the_cap() {
        Outcome::Ok(format!("{} free, {sizes}{created}", human(room.free)))
    } else {
        Outcome::Fail(format!(
            "only {} free, less than {sizes}: lower buffer.max_bytes or free the disk",
            human(room.free)
        ))
    }
}

/// The databases moved aside and kept in the buffer directory, named with their sizes: a
/// warning, as they take disk space outside `max_bytes` until recovered (or, one a
/// downgrade left, moved back) and removed.
fn moved_aside(buffer_dir: &Path) -> Option<Outcome> {
    crate::buffer::kept_aside(buffer_dir, human).map(Outcome::Warn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codecs step says how many of the named codecs load, and names each file that
    /// does not with its reason.
    #[cfg(feature = "js")]
    #[test]
    fn the_codecs_step_counts_what_loads_and_names_what_does_not() {
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(
            dir.path().join("a.js"),
            "function Decoder(b) { return {}; }",
        );
        let cfg = |devices: &str| {
            let text = format!(
                "[codecs]\ndir = {:?}\n[sink]\ntype = \"stdout\"\n{devices}",
                dir.path()
            );
            crate::js::dir::Named::of(&Config::parse(&text).unwrap())
        };
        let device = |eui: &str, more: &str| format!("[[device]]\ndev_eui = \"{eui}\"\n{more}");
        let good = device("0000000000000001", "js_codec = \"a\"\n")
            + &device("0000000000000002", "js_codec = \"a\"\n");
        let Outcome::Ok(text) = js_codecs(&cfg(&good)) else {
            panic!("not OK")
        };
        assert_eq!(text, "1 of 1 JavaScript codec(s) loaded");
        let bad = good + &device("0000000000000003", "js_codec = \"b\"\nmapping = \"m\"\n");
        let Outcome::Fail(text) = js_codecs(&cfg(&bad)) else {
            panic!("not a failure")
        };
        let (b, m) = (dir.path().join("b.js"), dir.path().join("m.toml"));
        assert!(
            text.starts_with(&format!(
                "1 of 2 JavaScript codec(s) loaded; JavaScript codec {}: ",
                b.display()
            )) && text.contains(&format!("; mapping table {}: ", m.display())),
            "{text}"
        );
    }

    #[test]
    fn an_unsynchronised_clock_is_a_warning_with_its_fix() {
        let Outcome::Warn(text) = clock(Some(false)) else {
            panic!("not a warning")
        };
        assert!(text.contains("timedatectl set-ntp true"), "{text}");
        assert!(matches!(clock(Some(true)), Outcome::Ok(_)));
        assert!(
            matches!(clock(None), Outcome::Warn(t) if t.starts_with("unknown")),
            "unknown is not ok"
        );
        assert!(crate::clock::synchronized().is_some(), "Linux can tell");
    }

    #[test]
    fn the_status_page_line_gives_the_urls_and_who_may_read() {
        let mut m = crate::config::MetricsConfig::default();
        assert_eq!(
            status_urls(&m, m.listen.unwrap()),
            "http://127.0.0.1:9898/; on this machine only; [metrics] listen and password_file open it to the LAN"
        );
        m.listen = Some("0.0.0.0:8080".parse().unwrap());
        m.lan_read_only = true;
        let line = status_urls(&m, m.listen.unwrap());
        assert!(
            line.contains("http://127.0.0.1:8080/; read-only, no password"),
            "{line}"
        );
        m.listen = None;
        assert!(matches!(status_page(&m, false), Outcome::Skip(_)));
    }

    #[test]
    fn the_status_page_port_must_be_free_or_the_running_agents() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert_eq!(tcp_listen(addr, true), Ok(()), "the agent's own listener");
        let why = tcp_listen(addr, false).unwrap_err();
        assert!(
            why.starts_with(&format!(
                "{addr} is in use by another program, and no hubgate runs"
            )),
            "{why}"
        );
        // Port 0: one the kernel knows free (taking `addr` again could race other tests).
        let free = "127.0.0.1:0".parse().unwrap();
        assert_eq!(tcp_listen(free, false), Ok(()), "a free port");
        // TEST-NET-1: documentation only, on no interface here.
        let why = tcp_listen("192.0.2.1:9898".parse().unwrap(), true).unwrap_err();
        assert_eq!(
            why,
            "192.0.2.1:9898 is not an address of this machine: change metrics.listen"
        );
    }

    #[test]
    fn the_ca_source_is_librdkafkas() {
        let mut c = ClientConfig::new();
        assert_eq!(CaSource::of(&c), CaSource::Default);
        c.set("ssl.ca.location", "/etc/hubgate/ca.pem");
        assert_eq!(
            CaSource::of(&c),
            CaSource::Location("/etc/hubgate/ca.pem".into())
        );
        c.set("ssl.ca.pem", "-----BEGIN CERTIFICATE-----");
        assert!(matches!(CaSource::of(&c), CaSource::Pem(_)));
    }

    /// Like librdkafka: missing paths and empty directories are passed over, the first file
    /// or non-empty directory wins, and nothing found means OpenSSL's default paths.
    #[test]
    fn probe_takes_the_first_file_or_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        std::fs::write(dir.path().join("certs/a.pem"), "x").unwrap();
        std::fs::write(dir.path().join("bundle.crt"), "x").unwrap();
        let (missing, empty, certs, bundle) = (
            path("missing"),
            path("empty"),
            path("certs"),
            path("bundle.crt"),
        );
        assert_eq!(
            probe(&[&missing, &empty, &bundle, &certs]),
            CaSource::Location(bundle.clone())
        );
        assert_eq!(probe(&[&empty, &certs, &bundle]), CaSource::Location(certs));
        assert_eq!(probe(&[&missing, &empty]), CaSource::Default);
    }

    /// A database moved aside is a warning naming its directory and size, then what to do:
    /// one a salvage kept is recovered, one a downgrade left is moved back; none, no line.
    #[test]
    fn a_database_moved_aside_is_named_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        assert!(moved_aside(dir.path()).is_none());
        let aside = dir.path().join("sled.broken-1");
        std::fs::create_dir_all(aside.join("values")).unwrap();
        std::fs::write(aside.join("values").join("00000001.seg"), vec![0; 1536]).unwrap();
        let salvaged = format!("{} (1.5 KiB): with hubgate stopped", aside.display());
        match moved_aside(dir.path()) {
            Some(Outcome::Warn(text)) => assert!(text.starts_with(&salvaged), "{text}"),
            Some(Outcome::Ok(t) | Outcome::Fail(t) | Outcome::Skip(t)) => panic!("{t}"),
            None => panic!("no line"),
        }
        let downgraded = dir.path().join("sled.layout2-20261206T120000Z");
        std::fs::create_dir_all(&downgraded).unwrap();
        std::fs::write(downgraded.join("db"), vec![0; 2048]).unwrap();
        match moved_aside(dir.path()) {
            Some(Outcome::Warn(text)) => {
                assert!(text.starts_with(&salvaged), "{text}");
                let left = format!("; {} (2.0 KiB): left by a downgrade", downgraded.display());
                assert!(text.contains(&left), "{text}");
            }
            Some(Outcome::Ok(t) | Outcome::Fail(t) | Outcome::Skip(t)) => panic!("{t}"),
            None => panic!("no line"),
        }
    }

    /// OpenSSL's name mismatches in plain words, with at most five of the certificate's
    /// names; other reasons are not taken for one.
    #[test]
    fn a_name_mismatch_names_the_host_and_a_few_of_the_certificates_names() {
        let names: Vec<String> = (1..=7).map(|i| format!("h{i}.example")).collect();
        assert_eq!(
            name_mismatch("hostname mismatch", "broker", Some(&names), "sink.brokers").unwrap(),
            "the broker's certificate does not name broker, only h1.example, h2.example, \
             h3.example, h4.example, h5.example and 2 more: use a name it holds in sink.brokers, \
             or have the certificate made for broker"
        );
        assert_eq!(
            name_mismatch("IP address mismatch", "10.1.2.3", Some(&[]), "the URL").unwrap(),
            "the broker's certificate does not hold the IP address 10.1.2.3 (an IP \
             subjectAltName), and names nothing: use a name it holds in the URL, or add the IP \
             to it"
        );
        assert_eq!(
            name_mismatch(
                "unable to get local issuer certificate",
                "b",
                None,
                "the URL"
            ),
            None
        );
    }

    /// A certificate's names reach the line escaped and cut: a newline cannot start a line
    /// of its own, an escape sequence cannot reach the terminal nor a right-to-left override
    /// turn the line around, a 10 KB name is not printed whole.
    #[test]
    fn a_name_mismatch_quotes_the_names_escaped_and_cut() {
        let names = [
            "evil.example\nOK   tls localhost:9093: verified".to_string(),
            "\x1b[2J\x1b[31mred\u{202e}lave".to_string(),
            "a".repeat(10_000),
        ];
        assert_eq!(
            name_mismatch("hostname mismatch", "broker", Some(&names), "sink.brokers").unwrap(),
            format!(
                "the broker's certificate does not name broker, only \
                 evil.example\\nOK   tls localhost:9093: verified, \
                 \\u{{1b}}[2J\\u{{1b}}[31mred\\u{{202e}}lave, {}… (9936 more bytes): use a name it \
                 holds in sink.brokers, or have the certificate made for broker",
                "a".repeat(64)
            )
        );
    }

    /// A certificate whose subjectAltName holds only an IP address: OpenSSL checks a host
    /// name against its common name, so that is listed too, first.
    #[test]
    fn the_common_name_counts_when_no_dns_name_is_in_the_subject_alt_name() {
        use openssl::x509::extension::SubjectAlternativeName;
        use openssl::x509::{X509NameBuilder, X509};
        let cert = |san: Option<&str>| {
            let key = openssl::pkey::PKey::from_ec_key(
                openssl::ec::EcKey::generate(
                    &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                        .unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
            let mut name = X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", "broker.example").unwrap();
            let name = name.build();
            let mut b = X509::builder().unwrap();
            b.set_subject_name(&name).unwrap();
            b.set_issuer_name(&name).unwrap();
            b.set_pubkey(&key).unwrap();
            if let Some(ip) = san {
                let ext = SubjectAlternativeName::new()
                    .ip(ip)
                    .email("ops@example.org")
                    .build(&b.x509v3_context(None, None))
                    .unwrap();
                b.append_extension(ext).unwrap();
            }
            b.sign(&key, openssl::hash::MessageDigest::sha256())
                .unwrap();
            b.build()
        };
        assert_eq!(
            names_of(&cert(Some("10.0.0.1"))),
            ["broker.example", "10.0.0.1"]
        );
        assert_eq!(names_of(&cert(None)), ["broker.example"]);
    }

    /// The fix of a certificate that does not name the broker points at the key the broker
    /// was taken from: `brokers`, or the `[sink.properties]` key that overrides it.
    #[test]
    fn the_brokers_are_given_in_the_key_librdkafka_takes_them_from() {
        let given_in = |properties: &str| {
            let text = format!(
                "[sink]\ntype = \"kafka\"\nbrokers = \"a:9093\"\nsecurity_protocol = \"ssl\"\n\
                 [sink.properties]\n{properties}"
            );
            given_in(&Config::parse(&text).unwrap().sink)
        };
        assert_eq!(given_in(""), "sink.brokers");
        assert_eq!(given_in("\"linger.ms\" = \"5\"\n"), "sink.brokers");
        assert_eq!(
            given_in("\"bootstrap.servers\" = \"b:9093\"\n"),
            "[sink.properties] \"bootstrap.servers\""
        );
        assert_eq!(
            given_in("\"metadata.broker.list\" = \"b:9093\"\n"),
            "[sink.properties] \"metadata.broker.list\""
        );
    }

    /// The checklist and the agent's start-up check of the hubs ask the sink's one probe:
    /// they agree that a hub is missing, and that it is there once created.
    #[test]
    fn the_checklist_and_the_agent_agree_on_the_hubs() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hubgate.toml");
        std::fs::write(
            &path,
            format!(
                "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:0\"\n\
                 [sink]\ntype = \"kafka\"\nbrokers = \"{}\"\nsecurity_protocol = \"plaintext\"\n\
                 insecure = true\n",
                dir.path().join("buffer").display(),
                mock.bootstrap_servers()
            ),
        )
        .unwrap();
        let cfg = Config::load(&path).unwrap();
        let plan = cfg.hub_plan();
        let [(rec_type, hub)] = &plan[..] else {
            panic!("one recType: {plan:?}");
        };
        let hub = hub.as_str();
        let hub_step = || {
            let mut out = Vec::new();
            run(&path, &mut out);
            let out = String::from_utf8(out).unwrap();
            let step = format!(" hub {rec_type}: ");
            out.lines()
                .find(|l| l.contains(&step))
                .unwrap_or_else(|| panic!("no hub step in:\n{out}"))
                .to_string()
        };
        let setup = crate::sink::hub_setup(&cfg.sink).unwrap();
        let client = crate::sink::kafka_client_config(&cfg.sink)
            .unwrap()
            .unwrap();
        let agent = || {
            let found = crate::sink::provision::ensure(&client, &setup, &[hub]).unwrap();
            found[hub].as_ref().map(|r| r.kind())
        };

        assert_eq!(agent(), Some("missing"));
        let step = hub_step();
        assert!(
            step.starts_with("FAIL") && step.contains("does not exist"),
            "{step}"
        );

        mock.create_topic(hub, 3, 1).unwrap();
        assert_eq!(agent(), None);
        let step = hub_step();
        assert!(
            step.starts_with("OK") && step.contains("exists (3 partition(s))"),
            "{step}"
        );
    }
}
