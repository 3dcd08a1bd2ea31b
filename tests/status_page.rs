//! The installer's status page on the demo replay (config/demo.toml's devices and uplinks),
//! sending to a real Kafka broker (tansu over SASL_SSL, as Event Hubs) on which one hub is
//! missing, so that its recType is parked.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::agent::{changed, Agent, CODECS_PACKED, ENV, MOTION, OPENCLOSE, PACKED, WAIT};
use support::{free_udp_port, Kafka, Mosquitto};

const LEAK: &str = "io.microshare.leak.unpacked";
/// Uplinks in config/demo-uplinks.jsonl, and those of its door sensor (openclose).
const UPLINKS: u64 = 21;
const DOOR_UPLINKS: u64 = 3;

/// Every path the listener serves.
const PATHS: [&str; 6] = [
    "/",
    "/devices",
    "/problems",
    "/api/status",
    "/api/devices",
    "/metrics",
];

/// config/demo.toml with the buffer in `dir`, a UDP source beside the replay (so the agent
/// keeps running once the file is replayed) and the Event Hubs sink on `kafka`, which
/// creates no hubs (`precreated`).
fn demo_config(dir: &Path, kafka: &Kafka) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let demo = std::fs::read_to_string(format!("{root}/config/demo.toml")).unwrap();
    let sink = format!(
        "[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{udp}\"\n\n[sink]\ntype = \"eventhubs\"\nprovisioning = \"precreated\"\n\
connection_string = \"Endpoint=sb://{bootstrap}/;SharedAccessKeyName=test;SharedAccessKey=c3RhdHVzLXBhZ2Uta2V5\"\n\
ca_location = \"{ca}\"\n",
        udp = free_udp_port(),
        bootstrap = kafka.bootstrap(),
        ca = kafka.ca_path().display(),
    );
    changed(
        &demo,
        &[
            (
                "path = \"/tmp/hubgate-demo-buffer\"",
                &format!("path = \"{}\"", dir.join("buffer").display()),
            ),
            (
                "path = \"demo-uplinks.jsonl\"",
                &format!("path = \"{root}/config/demo-uplinks.jsonl\""),
            ),
            ("[sink]\ntype = \"stdout\"\n", &sink),
        ],
    )
}

fn get(agent: &Agent, path: &str) -> (u16, String, String) {
    agent
        .request(&format!("GET {path} HTTP/1.0\r\n\r\n"))
        .unwrap_or_else(|| panic!("no answer for {path}:\n{}", agent.logs()))
}

fn json(agent: &Agent, path: &str) -> Value {
    let (code, head, body) = get(agent, path);
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// A UDP source (keeps the agent running), a stdout sink and the buffer in `dir`.
fn quiet_config(dir: &Path) -> String {
    format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n[sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
        free_udp_port()
    )
}

fn start(dir: &Path) -> (Agent, Kafka) {
    let kafka = Kafka::start(dir);
    // Every hub of the plan but the door sensor's readings' (its packed one is there).
    let hubs = [ENV, MOTION, PACKED, LEAK, "io.microshare.leak.packed"];
    kafka.create_topics(&[&hubs[..], &CODECS_PACKED[..]].concat());
    let agent = Agent::start(dir, &demo_config(dir, &kafka));
    let parked = format!("hubgate_parked{{rec_type=\"{OPENCLOSE}\"}}");
    agent.wait_metric(&parked, WAIT, |v| v == 1);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| {
        v == UPLINKS - DOOR_UPLINKS
    });
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == DOOR_UPLINKS);
    (agent, kafka)
}

#[test]
fn the_api_shows_the_devices_the_hubs_and_the_problems_of_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _kafka) = start(dir.path());

    let devices = json(&agent, "/api/devices");
    let list = devices["devices"].as_array().unwrap();
    assert_eq!(list.len(), 7, "{devices:#}");
    let device = |eui: &str| {
        list.iter()
            .find(|d| d["dev_eui"] == eui)
            .unwrap_or_else(|| panic!("no {eui} in {devices:#}"))
    };
    let lobby = device("58a0cb0000101234");
    assert_eq!(lobby["name"], "lobby-th");
    assert_eq!(lobby["tags"], serde_json::json!(["Building 1", "Lobby"]));
    assert_eq!(lobby["codec"], "browan-tbhh100");
    assert_eq!(lobby["uplinks"], 3);
    assert_eq!(
        (lobby["fcnt"].as_u64(), lobby["fcnt_missed"].as_u64()),
        (Some(102), Some(0))
    );
    assert_eq!(
        (lobby["rssi"].as_i64(), lobby["sf"].as_u64()),
        (Some(-70), Some(7))
    );
    let temperature = lobby["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["field"] == "temperature")
        .unwrap_or_else(|| panic!("{lobby:#}"));
    assert_eq!(temperature["unit"], "°C");
    assert_eq!(temperature["value"], 14.0, "the last of its three uplinks");
    let unknown = device("0004a30b00ffee01");
    assert_eq!(unknown["codec"], Value::Null);
    assert_eq!(unknown["packed_reason"], "not in the config");
    assert_eq!(devices["cap"], 10_000);
    // Paged, ordered and filtered by the agent: the same list, three at a time.
    let mut all: Vec<&str> = list
        .iter()
        .map(|d| d["dev_eui"].as_str().unwrap())
        .collect();
    all.sort_unstable();
    let mut paged = Vec::new();
    for offset in [0, 3, 6] {
        let page = json(
            &agent,
            &format!("/api/devices?sort=eui&limit=3&offset={offset}"),
        );
        assert_eq!(
            (page["matched"].as_u64(), page["limit"].as_u64()),
            (Some(7), Some(3)),
            "{page:#}"
        );
        for d in page["devices"].as_array().unwrap() {
            paged.push(d["dev_eui"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(paged, all);
    let kitchen = json(&agent, "/api/devices?q=Kitchen");
    let found: Vec<&Value> = kitchen["devices"].as_array().unwrap().iter().collect();
    assert_eq!(
        (
            found.len(),
            kitchen["matched"].as_u64(),
            kitchen["heard"].as_u64()
        ),
        (1, Some(1), Some(7))
    );
    assert_eq!(found[0]["dev_eui"], "58a0cb0000503333");

    let status = json(&agent, "/api/status");
    assert_eq!(status["gateway_id"], "demo");
    assert_eq!(status["received"], UPLINKS);
    assert_eq!(status["upstream"]["sink"], "eventhubs");
    assert_eq!(status["upstream"]["delivered"], UPLINKS - DOOR_UPLINKS);
    assert_eq!(status["buffer"]["records"], DOOR_UPLINKS);
    // They wait there: the oldest one's age grows, on the page and in the metrics.
    let first = status["buffer"]["oldest_age_s"]
        .as_u64()
        .unwrap_or_else(|| panic!("{status:#}"));
    agent.wait_metric("hubgate_buffer_oldest_age_seconds", WAIT, |v| {
        v >= first + 2
    });
    let later = json(&agent, "/api/status")["buffer"]["oldest_age_s"]
        .as_u64()
        .unwrap();
    assert!(
        (first + 2..first + 120).contains(&later),
        "{first} s, then {later} s"
    );
    let hubs = status["upstream"]["hubs"].as_array().unwrap();
    let door = hubs
        .iter()
        .find(|h| h["rec_type"] == OPENCLOSE)
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(door["state"], "parked");
    // The sink's classification (a missing hub it may not create), with its one fix.
    assert_eq!(
        door["reason"],
        format!("hub \"{OPENCLOSE}\" does not exist"),
        "{door}"
    );
    let fix = door["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!("create hub \"{OPENCLOSE}\" ("))
            && fix.ends_with(
                " in the portal, or set provisioning = \"auto\" with a key that has Manage"
            ),
        "{fix}"
    );
    assert!(
        door["broker"].as_str().is_some_and(|b| !b.is_empty()),
        "{door}"
    );
    for h in hubs.iter().filter(|h| h["rec_type"] != OPENCLOSE) {
        assert_eq!(h["state"], "delivering", "{h}");
    }
    let sources = status["sources"].as_array().unwrap();
    assert_eq!(sources[0]["kind"], "replay");
    assert_eq!(sources[0]["frames_total"], UPLINKS);
    assert_eq!(status["last_hour"]["problems"]["unknown_device"], 3);
    let recent = status["recent_problems"].as_array().unwrap();
    for kind in ["unknown_device", "parked"] {
        assert!(
            recent.iter().any(|p| p["kind"] == kind),
            "no {kind} in {recent:#?}"
        );
    }
    let body = status.to_string();
    assert!(
        !body.contains("c3RhdHVzLXBhZ2Uta2V5"),
        "the key is in the status"
    );

    // Read-only: no other method, nothing else served.
    let (code, head, _) = agent
        .request("POST /api/status HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    assert_eq!(code, 405, "{head}");
    assert!(head.contains("allow: GET, HEAD"), "{head}");
    assert_eq!(get(&agent, "/nothing-here").0, 404);
}

/// With a password file the page and the metrics need the password (HTTP Basic, any user
/// name); ten wrong ones lock the checking for the rest of the minute, the right one too.
#[test]
fn with_a_password_every_path_needs_it_and_guessing_is_stopped() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let password = "correct horse battery staple";
    let file = dir.path().join("status.password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = Agent::start_with_metrics(
        dir.path(),
        &quiet_config(dir.path()),
        &format!("password_file = \"{}\"", file.display()),
    );
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    let basic = |user_pass: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    };
    let with = |path: &str, user_pass: &str| {
        agent
            .request(&format!(
                "GET {path} HTTP/1.0\r\nAuthorization: Basic {}\r\n\r\n",
                basic(user_pass)
            ))
            .unwrap()
    };
    for path in PATHS {
        let (code, head, _) = get(&agent, path);
        assert_eq!(code, 401, "{path}: {head}");
        assert!(
            head.contains("www-authenticate: Basic realm=\"hubgate\""),
            "{head}"
        );
        let (code, head, body) = with(path, &format!("installer:{password}"));
        assert_eq!(code, 200, "{path}: {head}");
        assert!(!body.contains(password), "{path} shows the password");
    }
    for i in 0..10 {
        let (code, head, _) = with("/", &format!("installer:guess {i}"));
        assert_eq!(code, 401, "guess {i}: {head}");
    }
    let (code, head, _) = with("/", &format!("installer:{password}"));
    assert_eq!(code, 429, "{head}");
    assert!(head.contains("retry-after: "), "{head}");
    agent.wait_log("status page: wrong password from 127.0.0.1", 1, WAIT);
    let log = agent.full_log();
    assert!(!log.contains(password), "the password is in the log");
    assert!(!log.contains("guess"), "a guess is in the log");
}

/// Two sources of one kind (two replay files here; two MQTT brokers or two UDP listeners
/// alike) each have a row on the overview and in `/api/status`, each with its own frames
/// (`hubgate_received_total` counts them by kind): one file holds the demo's 21 uplinks, the
/// other none, and the UDP source heard nothing.
#[test]
fn two_sources_of_one_kind_each_count_their_own_frames() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    // The empty one first: a count kept for the first source alone would show there.
    let replays = format!(
        "[[source]]\ntype = \"replay\"\npath = \"{}\"\n\
         [[source]]\ntype = \"replay\"\npath = \"{root}/config/demo-uplinks.jsonl\"\n",
        empty.display()
    );
    let agent = Agent::start_with_stdout(
        dir.path(),
        &format!("{replays}{}", quiet_config(dir.path())),
    );
    agent.wait_metric("hubgate_received_total{source=\"replay\"}", WAIT, |v| {
        v == 21
    });
    let status = json(&agent, "/api/status");
    let rows: Vec<(String, String, u64)> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["at"].as_str().unwrap().to_string(),
                s["frames_total"].as_u64().unwrap(),
            )
        })
        .collect();
    let demo = rows
        .iter()
        .find(|r| r.1.ends_with("demo-uplinks.jsonl"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    let idle = rows
        .iter()
        .find(|r| r.1.ends_with("empty.jsonl"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(demo.2, 21, "{rows:?}");
    assert_eq!(
        idle.2, 0,
        "the empty file's row counts the other file's frames: {rows:?}"
    );
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["replay", "replay", "udp"],
        "in the config's order"
    );
    assert_eq!(rows[2].2, 0, "{rows:?}");
}

/// Two MQTT sources on one broker (each with its own client id, as the config demands): each
/// has its own connection gauges and its own row's `connected`. The broker refuses one at
/// every connect and the other stays subscribed; with one series per broker the refused one
/// wrote 0 over the other's 1 and the page showed both disconnected.
#[test]
fn two_mqtt_sources_on_one_broker_each_show_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    // Client ids without this prefix are refused: source[0] at every connect.
    let mqtt = Mosquitto::start_with(dir.path(), "log_type all\nclientid_prefixes ok-\n");
    let mut body = quiet_config(dir.path());
    for (topic, id) in [("a/#", "refused-a"), ("b/#", "ok-b")] {
        body += &format!(
            "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic = \"{topic}\"\nclient_id = \"{id}\"\nreconnect_max = \"1s\"\n",
            mqtt.port()
        );
    }
    let agent = Agent::start(dir.path(), &body);
    agent.wait_log("mqtt: subscribed to b/#", 1, WAIT);
    // Two more refusals of source[0]: it wrote its gauges after the first of them, which
    // came after source[1]'s connect (one task retries after handling the refusal).
    let refusals = || {
        std::fs::read_to_string(mqtt.log_path())
            .unwrap_or_default()
            .matches("disconnected, not authorised")
            .count()
    };
    let seen = refusals();
    let deadline = std::time::Instant::now() + WAIT;
    while refusals() < seen + 2 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let series = |name: &str, id: &str| {
        format!(
            "hubgate_mqtt_{name}{{broker=\"127.0.0.1:{}\",client_id=\"{id}\"}}",
            mqtt.port()
        )
    };
    let text = agent.scrape().unwrap_or_default();
    for (name, id, want) in [
        ("connected", "ok-b", 1),
        ("subscribed", "ok-b", 1),
        ("connected", "refused-a", 0),
        ("subscribed", "refused-a", 0),
    ] {
        let series = series(name, id);
        assert!(
            text.lines().any(|l| l == format!("{series} {want}")),
            "no {series} {want} in\n{text}"
        );
    }
    let status = json(&agent, "/api/status");
    let connected: Vec<&Value> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["connected"])
        .collect();
    assert_eq!(
        connected,
        [&Value::Null, &Value::Bool(false), &Value::Bool(true)],
        "udp, refused-a, ok-b: {}",
        status["sources"]
    );
}

/// DNS rebinding: a web page on another site, opened in a browser on the gateway's LAN (or
/// on the gateway, for the default loopback listener), points its own name at the gateway and
/// then reads the page as same-origin; without a password (loopback, `lan_read_only`)
/// nothing else stops it. Only the gateway's own names and addresses are answered.
#[test]
fn a_request_for_another_host_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start_with_metrics(
        dir.path(),
        &quiet_config(dir.path()),
        "hosts = [\"gw.example.net\"]",
    );
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    let port = agent.metrics_port;
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let machine = machine.trim().split('.').next().unwrap();
    let for_host = |host: &str| {
        agent
            .request(&format!(
                "GET /api/status HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: close\r\n\r\n"
            ))
            .unwrap()
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        format!("{}.LOCAL:{port}", machine.to_uppercase()),
        format!("GW.example.net:{port}"),
    ] {
        let (code, head, _) = for_host(&host);
        assert_eq!(code, 200, "{host} is refused: {head}");
    }
    let (code, head, body) = for_host(&format!("rebind.attacker.example:{port}"));
    assert_eq!(
        (code, body.as_str()),
        (421, "hubgate answers to its IP address, localhost, its host name and <host name>.local; list other names in [metrics] hosts\n"),
        "a request for another site's name:\n{head}\n\n{}",
        &body[..body.len().min(300)]
    );
    let (code, head, _) = agent
        .request(
            "GET http://rebind.attacker.example/api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .unwrap();
    assert_eq!(code, 421, "the absolute URI's name counts: {head}");
    // A Prometheus that scrapes the gateway by its site's DNS name.
    let (code, head, body) = agent
        .request(&format!(
            "GET /metrics HTTP/1.1\r\nHost: gw-01.site.example:{port}\r\nConnection: close\r\n\r\n"
        ))
        .unwrap();
    assert_eq!(code, 200, "{head}");
    assert!(body.contains("hubgate_decoded_total"), "{body}");
}

/// The shipped unit has `ProtectHostname=yes`: the agent runs in a UTS namespace of its
/// own, which keeps the kernel's host name of the agent's start. The gateway renamed as
/// `hostnamectl hostname gate-7` does it (`/etc/hostname` written, the kernel's name set
/// outside the agent's namespace) answers to `gate-7.local` without a restart. Reproduced
/// with `unshare` (needs root; skipped without): the gateway's namespace, with a
/// `/etc/hostname` of the test's bound over the real one, and the agent's inside it.
#[test]
fn a_gateway_renamed_under_its_own_uts_namespace_answers_to_its_new_name() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let etc_hostname = dir.path().join("hostname");
    std::fs::write(&etc_hostname, "raspberrypi\n").unwrap();
    let probe = Command::new("unshare")
        .args(["-u", "-m", "sh", "-c", "mount --bind \"$0\" /etc/hostname"])
        .arg(&etc_hostname)
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot bind a file over /etc/hostname here (unshare needs root)");
        return;
    }
    let port = support::free_port();
    let config = dir.path().join("hubgate.toml");
    let log = dir.path().join("hubgate.log");
    std::fs::write(
        &config,
        format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            quiet_config(dir.path())
        ),
    )
    .unwrap();
    // The gateway's namespace; the agent's, a copy of it as systemd makes it, inside. Each
    // line on stdin renames the gateway; the end of stdin (the test over, however it ends)
    // stops the agent.
    // A line answers each one, whether `hostname` failed or not (the assertion tells).
    let script = "hostname raspberrypi && mount --bind \"$2\" /etc/hostname || exit 1
unshare -u \"$0\" run -c \"$1\" >/dev/null 2>>\"$3\" &
agent=$!
while read -r name; do hostname \"$name\"; echo \"renamed $(hostname)\"; done
kill $agent; wait $agent";
    let mut child = Command::new("unshare")
        .args(["-u", "-m", "sh", "-c", script])
        .arg(env!("CARGO_BIN_EXE_hubgate"))
        .args([&config, &etc_hostname, &log])
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut gateway = Group {
        stdin: child.stdin.take(),
        child,
    };
    let for_host = |host: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(WAIT)).ok()?;
        let request =
            format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split(' ').nth(1)?.parse::<u16>().ok()
    };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + WAIT;
    while for_host("raspberrypi.local").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no answer:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(for_host("raspberrypi.local"), Some(200), "{}", logs());
    std::fs::write(&etc_hostname, "gate-7\n").unwrap();
    writeln!(gateway.stdin.as_mut().unwrap(), "gate-7").unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "renamed gate-7");
    // The agent reads the host-name files every 10 s.
    let deadline = std::time::Instant::now() + WAIT;
    while for_host("gate-7.local") != Some(200) {
        assert!(std::time::Instant::now() < deadline, "{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    for (host, code) in [
        ("gate-7.local", 200),
        ("GATE-7:9898", 200),
        ("raspberrypi.local", 200),
        ("gate-8.local", 421),
    ] {
        assert_eq!(for_host(host), Some(code), "{host}:\n{}", logs());
    }
    let stopped = gateway.stop();
    assert!(
        stopped.is_some_and(|s| s.success()),
        "{stopped:?}\n{}",
        logs()
    );
}

/// A child in a process group of its own (`process_group(0)`) that ends when its stdin
/// closes: stopped so ([`Group::stop`]) when dropped too, the test over however it ends, so
/// that nothing it started outlives the test or its directory.
struct Group {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Group {
    /// Close its stdin and wait for it to end, up to [`WAIT`]; past that, kill the whole
    /// group (`None`).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: signals the process group started with the child, which has not been
        // reaped.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        None
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One client opening connections without end (anyone on the LAN can, no password needed)
/// closes its own oldest, not another client's: the installer's phone, connected from
/// another address with its request still on the way, is answered though a flood of twice
/// the cap of idle connections came in after it. Counted by address (IPv4) or /64 (IPv6);
/// loopback has 127.0.0.0/8, so the phone is 127.0.0.2.
#[test]
fn a_flood_of_connections_from_one_client_does_not_close_another_clients() {
    use socket2::{Domain, Socket, Type};
    use std::net::SocketAddr;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &quiet_config(dir.path()));
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    let listener: SocketAddr = ([127, 0, 0, 1], agent.metrics_port).into();
    let flood = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| TcpStream::connect(listener).unwrap())
            .collect()
    };
    let mut held = flood(hubgate::http::MAX_CONNECTIONS);
    let phone = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    phone
        .bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    phone.connect(&listener.into()).unwrap();
    let mut phone = TcpStream::from(phone);
    held.extend(flood(2 * hubgate::http::MAX_CONNECTIONS));
    // Each connection is taken in turn: once the last of the flood is answered, the agent
    // has seen the phone's and all of the flood's before it. The phone's request must come
    // within hyper's 5 s head deadline of its connection: these connects and one answer take
    // milliseconds.
    held.extend(flood(1));
    let last = held.last_mut().unwrap();
    last.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    last.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = String::new();
    last.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    phone.set_read_timeout(Some(WAIT)).unwrap();
    phone
        .write_all(b"GET /api/status HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let read = phone.read_to_string(&mut out);
    assert!(
        read.is_ok() && out.starts_with("HTTP/1.0 200 OK\r\n"),
        "the phone's connection: {read:?} {:?}\n{}",
        &out[..out.len().min(200)],
        agent.logs()
    );
    drop(held);
}

/// A client may shut its side of the connection once its request is sent (`nc -N`, some
/// health-check scripts): every path is still answered. hyper closes a connection whose
/// reading meets the end while its answer is pending unless told to allow half-closes: a
/// page, built on a blocking thread, then got nothing at all, while `/metrics`, answered at
/// once, did.
#[test]
fn a_request_whose_sender_shuts_its_side_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &quiet_config(dir.path()));
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    for path in PATHS {
        let mut s = TcpStream::connect(("127.0.0.1", agent.metrics_port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.0 200 OK\r\n")
                && out
                    .split_once("\r\n\r\n")
                    .is_some_and(|(_, body)| !body.is_empty()),
            "{path}: {:?}",
            &out[..out.len().min(200)]
        );
    }
}

/// A stand-in for the browser's network path to the agent: serves every request from the
/// agent, and the first `/devices` with `script` added before `</body>` (what the test
/// makes the "installer" do on the page). Same origin for the page, so its refresh script
/// fetches through here too. The agent's `Content-Security-Policy` goes along only with
/// `keep_policy` (which would not let the added script run).
fn proxy(agent_port: u16, script: String, keep_policy: bool) -> u16 {
    let listener = support::listener();
    let port = listener.local_addr().unwrap().port();
    let injected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (script, injected) = (script.clone(), injected.clone());
            // A thread each: chromium opens connections ahead that may never send anything.
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                let mut upstream = TcpStream::connect(("127.0.0.1", agent_port)).unwrap();
                upstream
                    .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                    .unwrap();
                let mut answer = Vec::new();
                upstream.read_to_end(&mut answer).unwrap();
                let answer = String::from_utf8_lossy(&answer).into_owned();
                let (up_head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
                let status = up_head.lines().next().unwrap_or("HTTP/1.1 502 Bad Gateway");
                let kind = up_head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-type: "))
                    .unwrap_or("text/plain");
                let policy = up_head
                    .lines()
                    .find(|l| keep_policy && l.starts_with("content-security-policy: "))
                    .map(|l| format!("{l}\r\n"))
                    .unwrap_or_default();
                let mut body = body.to_string();
                if path == "/devices" && !injected.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    body = body.replace("</body>", &format!("<script>{script}</script></body>"));
                }
                let _ = conn.write_all(
                    format!(
                        "{status}\r\ncontent-type: {kind}\r\n{policy}content-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

/// The installer types a filter into the devices page's box (and has not pressed Enter
/// yet): the refresh every 5 s swaps the whole `<main>`, the form inside it, for the
/// server's copy; it waits while the box has the focus, or what was typed would be gone and
/// the box lose the focus (on a phone the keyboard closes). In real chromium: text typed,
/// two refreshes' time later still there, focused, nothing swapped; once the box lets go of
/// the focus the page refreshes again.
#[test]
fn a_filter_being_typed_survives_the_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &quiet_config(dir.path()));
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    // Types "kitch" into the box, then, 11 s later (virtual time: two of the page's 5 s
    // refreshes), notes what the box holds, whether it still has the focus, and how many
    // refreshes swapped the page meanwhile; then leaves the box and, 6 s later, notes the
    // refreshes again.
    let script = "const q=document.querySelector('input[name=q]');q.focus();\
        if(!document.execCommand('insertText',false,'kitch'))q.value='kitch';\
        const b=document.body.dataset;b.typedBefore=q.value;\
        setTimeout(()=>{const now=document.querySelector('input[name=q]');\
        b.typedAfter=now.value;b.focusKept=String(document.activeElement===now);\
        b.swapped=String(+b.refreshes||0);now.blur();\
        setTimeout(()=>{b.resumed=String(+b.refreshes||0)},6000)},11000);"
        .to_string();
    let port = proxy(agent.metrics_port, script, false);
    let dom = support::chromium::run(
        dir.path(),
        &format!("http://127.0.0.1:{port}/devices"),
        &["--dump-dom".into()],
        Duration::from_secs(19),
    );
    assert!(
        dom.contains("data-typed-before=\"kitch\""),
        "the typing did not happen: {dom}"
    );
    let after = between(&dom, "data-typed-after=\"", "\"")
        .unwrap_or_else(|| panic!("the check did not run: {dom}"));
    let swapped = between(&dom, "data-swapped=\"", "\"").unwrap_or("?");
    assert!(
        after == "kitch" && dom.contains("data-focus-kept=\"true\"") && swapped == "0",
        "10 s after typing \"kitch\" the filter box holds {after:?}, focus kept: {} ({swapped} refresh(es) swapped the page)",
        dom.contains("data-focus-kept=\"true\"")
    );
    let resumed = between(&dom, "data-resumed=\"", "\"")
        .unwrap_or_else(|| panic!("the second check did not run: {dom}"));
    assert!(
        resumed.parse::<u32>().is_ok_and(|n| n >= 1),
        "no refresh in the 6 s after the box let go of the focus: {resumed}"
    );
}

/// The pages tell the browser to run their own refresh script and nothing else, and every
/// answer to read as its content type says. In real chromium a script added to the page on
/// its way (what a missed escape would let a device's name do) does not run; the page's
/// own refresh does.
#[test]
fn in_a_real_browser_only_the_pages_own_script_runs() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &quiet_config(dir.path()));
    agent.wait_log("running: 1 source(s)", 1, WAIT);
    let (code, head, body) = get(&agent, "/devices");
    assert_eq!(code, 200, "{head}");
    let script = between(&body, "<script>", "</script>").expect("the refresh script");
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    let policy = head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .unwrap_or_else(|| panic!("no policy: {head}"));
    assert!(
        policy.contains(&format!("script-src 'sha256-{hash}';"))
            && policy.starts_with("default-src 'none';")
            && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );
    for path in ["/devices", "/metrics", "/api/status", "/nothing"] {
        let (_, head, _) = get(&agent, path);
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {head}"
        );
    }

    let injected = "document.body.dataset.injected='ran'".to_string();
    let port = proxy(agent.metrics_port, injected.clone(), true);
    let url = format!("http://127.0.0.1:{port}/devices");
    let dom = support::chromium::run(
        dir.path(),
        &url,
        &["--dump-dom".into()],
        Duration::from_secs(12),
    );
    assert!(
        dom.contains("<body data-refreshes=\""),
        "the page's own script did not run: {dom}"
    );
    assert!(
        !dom.contains("data-injected"),
        "the added script ran: {dom}"
    );
    // The same page without the policy: the added script runs (what the check above would
    // miss if the proxy failed to add it).
    let port = proxy(agent.metrics_port, injected, false);
    let url = format!("http://127.0.0.1:{port}/devices");
    let dom = support::chromium::run(
        dir.path(),
        &url,
        &["--dump-dom".into()],
        Duration::from_secs(1),
    );
    assert!(dom.contains("data-injected=\"ran\""), "{dom}");
}

/// The rendered DOM of `path` after two refreshes' worth of virtual time.
fn dom(agent: &Agent, dir: &Path, path: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", agent.metrics_port);
    let dom = support::chromium::run(dir, &url, &["--dump-dom".into()], Duration::from_secs(12));
    assert!(dom.contains("</main>"), "{path}: {dom}");
    dom
}

/// A screenshot of `path` into `target/tmp/status-page/` (copied into docs/ by hand).
fn screenshot(agent: &Agent, dir: &Path, path: &str, name: &str) {
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).unwrap();
    let file = shots.join(name);
    let _ = std::fs::remove_file(&file);
    let url = format!("http://127.0.0.1:{}{path}", agent.metrics_port);
    support::chromium::run(
        dir,
        &url,
        &[format!("--screenshot={}", file.display())],
        Duration::from_secs(1),
    );
    let png = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{}",
        file.display()
    );
}

/// What `text` holds between the first `start` and the `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    text.split_once(start)?.1.split(end).next()
}

/// The rows of the table with id `table` in `dom`, as HTML.
fn rows<'a>(dom: &'a str, table: &str) -> Vec<&'a str> {
    let start = dom
        .find(&format!("<table id=\"{table}\">"))
        .unwrap_or_else(|| panic!("no table {table} in {dom}"));
    let end = start + dom[start..].find("</table>").unwrap();
    dom[start..end].split("<tr").skip(2).collect()
}

#[test]
fn in_a_real_browser_the_pages_show_the_demo_and_the_parked_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, _kafka) = start(dir.path());

    let overview = dom(&agent, dir.path(), "/");
    assert!(
        overview.contains("<body data-refreshes=\""),
        "the page did not refresh itself: {overview}"
    );
    let hubs = rows(&overview, "hubs");
    let door = hubs
        .iter()
        .find(|r| r.contains(OPENCLOSE))
        .unwrap_or_else(|| panic!("{hubs:#?}"));
    assert!(door.starts_with(" class=\"parked\""), "{door}");
    assert!(door.contains("does not exist"), "{door}");
    assert!(
        door.contains(&format!("Fix: create hub \"{OPENCLOSE}\" (")),
        "{door}"
    );
    assert_eq!(
        hubs.iter().filter(|r| r.contains(">delivering<")).count(),
        hubs.len() - 1,
        "{hubs:#?}"
    );
    assert!(
        overview.contains("<b id=\"buffer-records\">3</b>"),
        "{overview}"
    );
    // How long they have waited, the disk's room, the replay's frames, what went wrong in
    // the last hour, and the agent itself.
    let oldest = between(&overview, "<b id=\"buffer-oldest\">", " s</b>")
        .unwrap_or_else(|| panic!("no buffer-oldest in {overview}"));
    assert!(oldest.parse::<u64>().is_ok(), "{oldest}");
    assert!(overview.contains(" · disk free "), "{overview}");
    let sources = rows(&overview, "sources");
    assert!(
        sources[0].starts_with("><td>replay</td>")
            && sources[0].contains(&format!("<td>{UPLINKS}</td></tr>")),
        "{sources:#?}"
    );
    let kinds = rows(&overview, "problem-kinds");
    assert!(
        kinds
            .iter()
            .any(|r| r.starts_with("><td>unknown_device</td><td>3</td></tr>")),
        "{kinds:#?}"
    );
    let version = format!("hubgate {}", env!("CARGO_PKG_VERSION"));
    for text in [
        version.as_str(),
        " · up ",
        " · clock <span class=\"",
        "0 dropped",
    ] {
        assert!(overview.contains(text), "no {text:?} in {overview}");
    }
    // Two bar charts; in each the largest value (records in, records buffered) is a bar of
    // the full 106 px, whichever minute(s) the replay fell into.
    let plots: Vec<&str> = overview.split("<svg").skip(1).collect();
    assert_eq!(plots.len(), 2, "{overview}");
    for plot in plots {
        let bars: Vec<&str> = plot.split("<rect ").skip(1).collect();
        assert!(
            bars.iter().any(|r| r.contains(" height=\"106\"")),
            "no full-height bar: {bars:#?}"
        );
    }

    let devices = dom(&agent, dir.path(), "/devices");
    assert!(
        devices.contains("<p id=\"device-count\">7 device(s) heard, 7 shown.</p>"),
        "{devices}"
    );
    let table = rows(&devices, "devices");
    assert_eq!(table.len(), 7, "{table:#?}");
    let lobby = table
        .iter()
        .find(|r| r.contains("data-eui=\"58a0cb0000101234\""))
        .unwrap_or_else(|| panic!("{table:#?}"));
    for text in [
        "lobby-th",
        "Building 1 / Lobby",
        "browan-tbhh100",
        "temperature 14.0 °C",
        "humidity 45.0 %RH",
        "-70 dBm",
    ] {
        assert!(lobby.contains(text), "no {text:?} in {lobby}");
    }
    let unknown = table
        .iter()
        .find(|r| r.contains("data-eui=\"0004a30b00ffee01\""))
        .unwrap();
    assert!(
        unknown.contains("packed<br><span class=\"warn\">not in the config"),
        "{unknown}"
    );
    let kitchen = dom(&agent, dir.path(), "/devices?q=kitchen");
    let table = rows(&kitchen, "devices");
    assert_eq!(table.len(), 1, "{table:#?}");
    assert!(table[0].contains("58a0cb0000503333"), "{}", table[0]);

    let problems = dom(&agent, dir.path(), "/problems");
    let table = rows(&problems, "problems");
    for kind in ["unknown_device", "parked"] {
        assert!(
            table
                .iter()
                .any(|r| r.contains(&format!("<td>{kind}</td>"))),
            "no {kind} in {table:#?}"
        );
    }

    for (path, name) in [
        ("/", "overview.png"),
        ("/devices", "devices.png"),
        ("/problems", "problems.png"),
    ] {
        screenshot(&agent, dir.path(), path, name);
    }
}
