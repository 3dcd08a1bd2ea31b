//! The hubgate binary as a real child process, its metrics, and ChirpStack uplinks over MQTT.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use super::{free_port, log_tail, Kafka, Mosquitto};

/// How the agents and the benchmark's `--floor` processes are run: this build's hubgate, run
/// directly, unless the benchmark chose otherwise ([`run_as`]); tests never do.
static LAUNCH: OnceLock<Launch> = OnceLock::new();

/// Another hubgate binary and a command (its words) to run it and the floor processes under.
#[derive(Debug)]
pub struct Launch {
    pub binary: Option<PathBuf>,
    pub wrap: Vec<String>,
}

/// For the benchmark only (its `HUBGATE_AGENT_BIN` and `HUBGATE_AGENT_WRAP`), before it starts
/// anything; a second call is refused.
pub fn run_as(launch: Launch) {
    LAUNCH.set(launch).expect("run_as once, before any start");
}

/// This build's hubgate, or the one given to [`run_as`], under its wrapping command.
pub fn command() -> Command {
    let bin = LAUNCH
        .get()
        .and_then(|l| l.binary.clone())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_hubgate").into());
    wrapped(bin)
}

/// `program` under the wrapping command given to [`run_as`], if any.
pub fn wrapped(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let wrap = LAUNCH.get().map_or(&[][..], |l| &l.wrap[..]);
    let Some((first, rest)) = wrap.split_first() else {
        return Command::new(program);
    };
    let mut c = Command::new(first);
    c.args(rest).arg(program);
    c
}

pub struct Agent {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// Where the child's stdout goes when kept apart from the log (see `start_with_stdout`).
    stdout: Option<PathBuf>,
    pub metrics_port: u16,
    rust_log: &'static str,
    /// The child's own `NOTIFY_SOCKET` (see [`Agent::begin_notifying`]).
    notify_socket: Option<PathBuf>,
    /// The user and group id the child runs as (see [`Agent::start_with_stdout_as`]).
    user: Option<u32>,
}

const DEFAULT_LOG: &str = "debug,librdkafka=debug";

impl Agent {
    /// Write `config_body` (plus a `[metrics]` table) to `dir/hubgate.toml` and start hubgate.
    pub fn start(dir: &Path, config_body: &str) -> Agent {
        Agent::launch(dir, config_body, "", None, DEFAULT_LOG)
    }

    /// Like [`Agent::start`], but the child's stdout (the records of a `stdout` sink) goes to
    /// `dir/stdout.jsonl`, apart from the log, so records and log lines cannot interleave.
    pub fn start_with_stdout(dir: &Path, config_body: &str) -> Agent {
        Agent::launch(
            dir,
            config_body,
            "",
            Some(dir.join("stdout.jsonl")),
            DEFAULT_LOG,
        )
    }

    /// Like [`Agent::start_with_stdout`], run as the user and group `id` when given: the
    /// shipped unit runs the agent as a user of its own without capabilities, who may not do
    /// all that root may.
    pub fn start_with_stdout_as(dir: &Path, config_body: &str, id: Option<u32>) -> Agent {
        let stdout = Some(dir.join("stdout.jsonl"));
        let mut a = Agent::configure(dir, config_body, "", stdout, DEFAULT_LOG);
        a.user = id;
        a.spawn();
        a
    }

    /// Like [`Agent::start`], with `RUST_LOG` set to `rust_log`.
    pub fn start_with_log(dir: &Path, config_body: &str, rust_log: &'static str) -> Agent {
        Agent::launch(dir, config_body, "", None, rust_log)
    }

    /// Like [`Agent::start`], with more keys for the `[metrics]` table (e.g.
    /// `status_interval = "1s"`).
    pub fn start_with_metrics(dir: &Path, config_body: &str, metrics_keys: &str) -> Agent {
        Agent::launch(dir, config_body, metrics_keys, None, DEFAULT_LOG)
    }

    /// Write the config and start hubgate without waiting for it to come up (to signal it
    /// during start-up); [`Agent::start_again`] and [`Agent::begin_again`] reuse the config.
    pub fn begin(dir: &Path, config_body: &str) -> Agent {
        let mut a = Agent::configure(dir, config_body, "", None, DEFAULT_LOG);
        a.spawn_child();
        a
    }

    /// Like [`Agent::begin`], the child telling `socket` what it would tell systemd (and no
    /// watchdog), whatever this process's environment holds.
    pub fn begin_notifying(dir: &Path, config_body: &str, socket: &Path) -> Agent {
        let mut a = Agent::configure(dir, config_body, "", None, DEFAULT_LOG);
        a.notify_socket = Some(socket.to_owned());
        a.spawn_child();
        a
    }

    /// Start a new hubgate process on the same config without waiting for it to come up.
    pub fn begin_again(&mut self) {
        assert!(self.child.is_none(), "hubgate is still running");
        self.spawn_child();
    }

    fn launch(
        dir: &Path,
        config_body: &str,
        metrics_keys: &str,
        stdout: Option<PathBuf>,
        rust_log: &'static str,
    ) -> Agent {
        let mut a = Agent::configure(dir, config_body, metrics_keys, stdout, rust_log);
        a.spawn();
        a
    }

    fn configure(
        dir: &Path,
        config_body: &str,
        metrics_keys: &str,
        stdout: Option<PathBuf>,
        rust_log: &'static str,
    ) -> Agent {
        let metrics_port = free_port();
        let config = dir.join("hubgate.toml");
        std::fs::write(
            &config,
            format!(
                "{config_body}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n{metrics_keys}\n"
            ),
        )
        .unwrap();
        Agent {
            child: None,
            config,
            log: dir.join("hubgate.log"),
            stdout,
            metrics_port,
            rust_log,
            notify_socket: None,
            user: None,
        }
    }

    /// The lines the child wrote to stdout so far (needs [`Agent::start_with_stdout`]).
    pub fn stdout_lines(&self) -> Vec<String> {
        let path = self
            .stdout
            .as_ref()
            .expect("started with start_with_stdout");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The whole log so far.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log holds `needle` at least `count` times; returns the log.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> String {
        let what = format!("{needle:?} {count} time(s)");
        self.wait_until(&what, timeout, |log| {
            (log.matches(needle).count() >= count).then(|| log.to_string())
        })
    }

    /// Wait until `find` finds what it looks for in the log (`what`, for the failure);
    /// returns it.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = find(&self.full_log()) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "log never had {what} within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self) {
        self.spawn_child();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Polled finely: the benchmark times start-up with it.
        while self.scrape().is_none() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "hubgate exited ({status}) before serving metrics:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hubgate metrics never came up:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let stdout = match &self.stdout {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap(),
            None => log.try_clone().unwrap(),
        };
        let mut command = command();
        if let Some(socket) = &self.notify_socket {
            command
                .env("NOTIFY_SOCKET", socket)
                .env_remove("WATCHDOG_USEC");
        }
        if let Some(id) = self.user {
            use std::os::unix::process::CommandExt;
            command.uid(id).gid(id);
        }
        let child = command
            .args(["run", "-c"])
            .arg(&self.config)
            .env("RUST_LOG", self.rust_log)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("start hubgate");
        self.child = Some(child);
    }

    /// Start a new hubgate process on the same config and buffer.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "hubgate is still running");
        self.spawn();
    }

    pub fn logs(&self) -> String {
        log_tail(&self.log)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGSTOP hubgate and wait until it is stopped: it reads, writes and acknowledges
    /// nothing until [`Agent::resume`].
    pub fn pause(&self) {
        super::sigstop(self.pid() as u32, "hubgate");
    }

    /// SIGCONT hubgate after [`Agent::pause`].
    pub fn resume(&self) {
        super::sigcont(self.pid() as u32, "hubgate");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.wait_exit(timeout, "SIGTERM")
    }

    /// Wait up to `timeout` for hubgate to exit (after `what`) and return its status.
    pub fn wait_exit(&mut self, timeout: Duration, what: &str) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "hubgate did not exit within {timeout:?} of {what}:\n{}",
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Prometheus text from the metrics endpoint, None if it does not answer.
    pub fn scrape(&self) -> Option<String> {
        self.request("GET /metrics HTTP/1.0\r\n\r\n")
            .map(|(_, _, body)| body)
    }

    /// Send `request` (a whole HTTP/1.0 request) to the metrics and status listener: the
    /// status code, the head and the body; None if it does not answer.
    pub fn request(&self, request: &str) -> Option<(u16, String, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, head.to_string(), body.to_string()))
    }

    /// Scrape until the endpoint answers, for up to `timeout`; `what` names the failure.
    pub fn wait_scrape(&self, timeout: Duration, what: &str) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(text) = self.scrape() {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}:
{}",
                self.logs()
            );
        }
    }

    /// The value of metric `name`: one series (`hubgate_received_total{source="mqtt"}`), or
    /// without labels the sum of all its series, as PromQL's `sum()` (0 when there is none).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self
            .scrape()
            .unwrap_or_else(|| panic!("metrics unavailable:\n{}", self.logs()));
        metric_value(&text, name)
    }

    /// Whether the series `name` (with its labels) is exposed at all.
    pub fn has_metric(&self, name: &str) -> bool {
        let text = self.scrape().unwrap_or_default();
        text.lines()
            .any(|l| l.rsplit_once(' ').is_some_and(|(series, _)| series == name))
    }

    /// Wait (polling the metrics endpoint) until `name` satisfies `pred`.
    pub fn wait_metric(&self, name: &str, timeout: Duration, pred: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            // One scrape that fails (a busy machine) is "not yet", not a failure.
            let v = self.scrape().map(|text| metric_value(&text, name));
            if let Some(v) = v.filter(|&v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name} = {v:?} after {timeout:?}\nmetrics:\n{}\nlog:\n{}",
                self.scrape().unwrap_or_default(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// See [`Agent::metric`].
pub fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            *series == name
                || (!name.contains('{')
                    && series
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with('{')))
        })
        .map(|(_, v)| v.trim().parse::<u64>().unwrap())
        .sum()
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run hubgate in process on `cfg` (a replay source) until every record is delivered, for up
/// to `within`. `RUST_LOG=debug cargo test --test NAME -- --nocapture` shows what it did.
pub async fn run_to_the_end(cfg: hubgate::config::Config, within: Duration) {
    let _ = env_logger::builder().is_test(true).try_init();
    let (_reload, reload) = tokio::sync::mpsc::channel(1);
    let prepared = hubgate::pipeline::prepare::prepare(&cfg).expect("a valid config");
    tokio::time::timeout(
        within,
        hubgate::pipeline::run(cfg, prepared, std::future::pending(), reload),
    )
    .await
    .expect("hubgate delivered everything in time")
    .expect("hubgate ran");
}

/// A ChirpStack v4 `event/up` document.
pub fn chirpstack_uplink(dev_eui: &str, fcnt: u32, fport: u8, payload: &[u8]) -> String {
    serde_json::json!({
        "deduplicationId": format!("{dev_eui}-{fcnt}"),
        "time": "2026-11-26T10:00:00.000Z",
        "deviceInfo": {"tenantId": "t", "applicationId": "app", "deviceName": format!("dev-{dev_eui}"), "devEui": dev_eui},
        "fCnt": fcnt,
        "fPort": fport,
        "data": base64::engine::general_purpose::STANDARD.encode(payload),
        "rxInfo": [{"gatewayId": "b827ebfffe000001", "rssi": -80, "snr": 7.5}],
    })
    .to_string()
}

/// Publish each (topic, payload) with QoS 1 and wait for every PUBACK from the broker.
pub async fn publish_all(port: u16, messages: &[(String, String)]) {
    publish(port, messages, false).await
}

/// [`publish_all`], each as the broker's retained message on its topic.
pub async fn publish_all_retained(port: u16, messages: &[(String, String)]) {
    publish(port, messages, true).await
}

async fn publish(port: u16, messages: &[(String, String)], retain: bool) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut opts = MqttOptions::new(super::unique("pub"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(opts, messages.len() + 10);
    for (topic, body) in messages {
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, retain, body.clone())
            .await
            .unwrap();
    }
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(30), async {
        while acks < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("mqtt publisher")
            {
                acks += 1;
            }
        }
    })
    .await
    .expect("broker acknowledged every publish");
    client.disconnect().await.unwrap();
}

/// The ChirpStack uplink topic of a device.
pub fn uplink_topic(dev_eui: &str) -> String {
    format!("application/app-1/device/{dev_eui}/event/up")
}

// ---------------------------------------------------------------------------
// The three test devices, their payloads, configs and Kafka topics (shared by
// tests/pipeline.rs and tests/faults.rs).

pub const ENV: &str = "io.microshare.environment.unpacked";
pub const MOTION: &str = "io.microshare.motion.unpacked";
pub const OPENCLOSE: &str = "io.microshare.openclose.unpacked";
pub const PACKED: &str = "io.microshare.lorawan.packed";
/// The packed recTypes of the three devices' codecs' domains (a payload the codec rejects).
pub const CODECS_PACKED: [&str; 3] = [
    "io.microshare.environment.packed",
    "io.microshare.motion.packed",
    "io.microshare.openclose.packed",
];
/// Generous bound for waits on brokers and the agent (busy 2-core CI machines).
pub const WAIT: Duration = Duration::from_secs(60);

pub const TH: &str = "58a0cb0000101234"; // browan-tbhh100
pub const PIR: &str = "58a0cb0000301111"; // browan-tbms100
pub const DOOR: &str = "58a0cb0000402222"; // browan-tbdw100

/// A hubgate config for the three devices: mosquitto in, Event Hubs (tansu) out, the
/// buffer in `buffer`. `buffer_extra` goes into `[buffer]`, `extra` at the end (e.g. a
/// `[record]` table); `key` is the SharedAccessKey of the connection string.
pub fn config_with(
    buffer: &Path,
    mqtt: &Mosquitto,
    kafka: &Kafka,
    key: &str,
    buffer_extra: &str,
    extra: &str,
) -> String {
    format!(
        r#"{inputs}
[sink]
type = "eventhubs"
connection_string = "Endpoint=sb://{bootstrap}/;SharedAccessKeyName=test;SharedAccessKey={key}"
ca_location = "{ca}"
[sink.properties]
"message.timeout.ms" = "30000"
{extra}
"#,
        inputs = three_devices(buffer, mqtt, buffer_extra),
        bootstrap = kafka.bootstrap(),
        ca = kafka.ca_path().display(),
    )
}

/// `text` (a config, unit file or script) with each `(from, to)` of `changes` made, in order;
/// each `from` must be there, so a change of the text cannot leave a test on settings it did
/// not mean.
pub fn changed(text: &str, changes: &[(&str, &str)]) -> String {
    changes.iter().fold(text.to_string(), |c, (from, to)| {
        assert!(c.contains(from), "{from:?} is not in the text:\n{c}");
        c.replace(from, to)
    })
}

/// The part of a config before `[sink]`: the buffer in `buffer` (`buffer_extra` goes into
/// `[buffer]`), mosquitto in, the three devices.
pub fn three_devices(buffer: &Path, mqtt: &Mosquitto, buffer_extra: &str) -> String {
    format!(
        r#"
gateway_id = "test"
[buffer]
path = "{buffer}"
spill_after = "500ms"
{buffer_extra}
[[source]]
type = "mqtt"
url = "mqtt://127.0.0.1:{mqtt}"
client_id = "hubgate-test"
reconnect_max = "1s"
[[device]]
dev_eui = "{TH}"
codec = "browan-tbhh100"
tags = ["Building 1", "Floor 2"]
[[device]]
dev_eui = "{PIR}"
codec = "browan-tbms100"
[[device]]
dev_eui = "{DOOR}"
codec = "browan-tbdw100"
"#,
        buffer = buffer.display(),
        mqtt = mqtt.port(),
    )
}

/// TBHH100 payload with temperature `t` °C and humidity `h` %.
pub fn tbhh100(t: i32, h: u8) -> Vec<u8> {
    vec![0x08, 0x8c, (t + 32) as u8, h, 0xff, 0xff, 0xff, 0xff]
}

/// TBMS100 payload with motion count `n`.
pub fn tbms100(n: u32) -> Vec<u8> {
    let c = n.to_le_bytes();
    vec![0x01, 0x0b, 0x3a, 0x05, 0x00, c[0], c[1], c[2]]
}

/// TBDW100 payload with open count `n`.
pub fn tbdw100(n: u32) -> Vec<u8> {
    let c = n.to_le_bytes();
    vec![0x01, 0x0d, 0x1c, 0x02, 0x00, c[0], c[1], c[2]]
}

/// The three devices' uplinks with FCnt `i`: TH, PIR, DOOR.
pub fn uplinks_at(i: u32) -> [(String, String); 3] {
    [
        (
            uplink_topic(TH),
            chirpstack_uplink(TH, i, 103, &tbhh100(i as i32 % 40 - 5, 30 + (i % 60) as u8)),
        ),
        (
            uplink_topic(PIR),
            chirpstack_uplink(PIR, i, 102, &tbms100(i * 10)),
        ),
        (
            uplink_topic(DOOR),
            chirpstack_uplink(DOOR, i, 100, &tbdw100(i * 100)),
        ),
    ]
}

/// `per_device` uplinks for each of the three devices, FCnt 1.., interleaved.
pub fn uplinks(per_device: u32) -> Vec<(String, String)> {
    (1..=per_device).flat_map(uplinks_at).collect()
}

/// Create every topic the three devices' records go to.
pub fn topics(kafka: &Kafka) {
    let all: Vec<&str> = [ENV, MOTION, OPENCLOSE, PACKED]
        .into_iter()
        .chain(CODECS_PACKED)
        .collect();
    kafka.create_topics(&all);
}

/// Consume `topic` and return (key, JSON body), in partition order (one partition here).
pub fn consume(kafka: &Kafka, topic: &str, n: usize) -> Vec<(String, Value)> {
    kafka
        .consume_all(topic, n, WAIT)
        .into_iter()
        .map(|(key, payload, _, _)| {
            (
                key,
                serde_json::from_slice(&payload).expect("record is JSON"),
            )
        })
        .collect()
}

/// The FCnt of a record body.
pub fn fcnt(v: &Value) -> u64 {
    v["obj"]["data"]["meta"]["iot"]["fcnt_up"]
        .as_u64()
        .unwrap_or_else(|| panic!("no fcnt_up in {v}"))
}

pub fn fcnts(records: &[(String, Value)]) -> Vec<u64> {
    records.iter().map(|(_, v)| fcnt(v)).collect()
}

/// Every device's records arrive complete, each FCnt once, in FCnt order.
pub fn assert_complete_in_order(records: &[(String, Value)], n: u32, key: &str) {
    assert!(
        records.iter().all(|(k, _)| k == key),
        "keys: {:?}",
        records.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert_eq!(
        fcnts(records),
        (1..=n as u64).collect::<Vec<_>>(),
        "FCnts of {key}"
    );
}

/// `58a0cb...` -> `58-A0-CB-...`, the Kafka key of a device.
pub fn dashed(eui: &str) -> String {
    eui.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join("-")
}
