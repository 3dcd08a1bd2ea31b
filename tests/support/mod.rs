//! Test harness for hubgate's integration tests: starts the *real* services
//! (docs/design.md "Conventions") on free 127.0.0.1 ports and stops them again.
//!
//! * [`Kafka`]: tansu 0.6.0 with SASL PLAIN (Kafka protocol, sqlite storage) behind
//!   stunnel4 TLS, so a client uses exactly the Azure Event Hubs settings
//!   (`SASL_SSL`, `PLAIN`, `$ConnectionString`) plus a test CA.
//! * [`Mosquitto`]: Debian's mosquitto, anonymous, plain MQTT.
//! * [`Certs`]: a throw-away CA and a `localhost` / `127.0.0.1` server certificate.
//!
//! Use it with `mod support;` in each file under `tests/`. Every service is killed
//! in `Drop`, so a panicking test leaves nothing running. All waits are on events
//! (a port accepting, `waitpid`) bounded by a deadline; on failure the panic message
//! contains the tail of the service's log file (kept in the given directory).
//!
//! The tansu binary comes from `$HUBGATE_TANSU`, else `/opt/tansu-plain/bin/tansu`;
//! `.ci/services/ensure-tansu.sh` installs it. Stock tansu from crates.io does not
//! work: it has no SASL PLAIN.
//!
//! The API is synchronous (it blocks), so it works from `#[test]` and from
//! `#[tokio::test]` alike; nothing in it needs a Tokio runtime.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod agent;
pub mod black_hole_dns;
pub mod buffer_cmd;
pub mod card;
pub mod chromium;
pub mod codec_files;
pub mod frames;
pub mod gwmp;
pub mod lazyfs;
pub mod listing;
pub mod lorawan;
pub mod standin;
pub mod stuffing;
pub mod tmpfs;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

/// How long a service may take to start accepting connections (generous: CI
/// machines are busy 2-core boxes; tansu normally needs 70-300 ms).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed process may take to be reaped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval of the deadline loops (not a synchronisation sleep).
const POLL: Duration = Duration::from_millis(10);

/// One consumed Kafka record: (key, payload, partition, offset). A missing key
/// is returned as an empty string, a missing payload as an empty vector.
pub type Record = (String, Vec<u8>, i32, i64);

/// A free TCP port on 127.0.0.1, never one this process handed out before.
///
/// The port is bound and released at once, and the kernel may hand a released port
/// out again to the next `bind(0)`: two tests of one binary could then both get it
/// (one test's broker not yet listening, the other's picking), and the second
/// broker's wait for "accepting" would be answered by the first (seen: mosquitto
/// "started" in 0.6 ms, then its client was reset by tansu). Tests of one binary are
/// threads of one process, so remembering what was handed out rules that out between them,
/// as long as each of them binds 127.0.0.1:0 through here or [`listener`] / [`udp_socket`];
/// another process, or an outgoing connection's port, can still take it first.
pub fn free_port() -> u16 {
    listener().local_addr().expect("local address").port()
}

/// A TCP listener on 127.0.0.1, on a port this process has not handed out before (see
/// [`free_port`]); a test's own listener binds here rather than on `127.0.0.1:0`, which the
/// kernel may answer with a port [`free_port`] just handed out to another test's child.
pub fn listener() -> TcpListener {
    unused_port(
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"),
        |l| l.local_addr(),
    )
}

/// A UDP port on 127.0.0.1 that nothing listens on right now (a free TCP port says
/// nothing about UDP); like [`free_port`], never one this process handed out before.
pub fn free_udp_port() -> u16 {
    udp_socket().local_addr().expect("local address").port()
}

/// A UDP socket on 127.0.0.1, on a port this process has not handed out before: as
/// [`listener`] for UDP.
pub fn udp_socket() -> std::net::UdpSocket {
    unused_port(
        || std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp 127.0.0.1:0"),
        |s| s.local_addr(),
    )
}

/// Bind until a socket comes whose port this process has not handed out, and record it.
fn unused_port<S>(bind: impl Fn() -> S, addr: impl Fn(&S) -> std::io::Result<SocketAddr>) -> S {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let socket = bind();
        let port = addr(&socket).expect("local address of 127.0.0.1:0").port();
        if handed_out.insert(port) {
            return socket;
        }
    }
}

/// A unique suffix for group ids, client ids, topic names.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = since_epoch().as_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// certificates

/// A test CA and a server certificate for `DNS:localhost, IP:127.0.0.1`
/// (EC P-256), made with the `openssl` command-line tool.
#[derive(Debug, Clone)]
pub struct Certs {
    /// CA certificate (PEM): what clients trust (`ssl.ca.location`, `--cafile`).
    pub ca: PathBuf,
    /// Server certificate (PEM), signed by `ca`.
    pub cert: PathBuf,
    /// Server private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl Certs {
    /// Create `dir` if needed and write `ca.crt`, `ca.key`, `server.crt`, `server.key` into it.
    pub fn generate(dir: &Path) -> Certs {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let ext = dir.join("server-ext.cnf");
        fs::write(
            &ext,
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = DNS:localhost, IP:127.0.0.1\n",
        )
        .expect("write server-ext.cnf");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "3650",
                    "-subj",
                    "/CN=hubgate test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                &["req", "-new"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        sign(dir, "server.csr", "server.crt", "server-ext.cnf");
        let key = dir.join("server.key");
        // stunnel warns about world-readable keys.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod server.key");
        Certs {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key,
        }
    }

    /// A client certificate (`CN=name`, clientAuth) signed by this CA, with its key (SEC1
    /// "EC PRIVATE KEY" PEM, mode 0600), written next to the CA: (certificate, key).
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        self.leaf(
            "client",
            name,
            "basicConstraints = critical, CA:FALSE\nextendedKeyUsage = clientAuth\n",
        )
    }

    /// A server certificate (`CN=name`, serverAuth, subjectAltName `san`, e.g.
    /// `DNS:other.example`) signed by this CA, with its key, written next to the CA: this
    /// CA's certificates with these in place of its server's.
    pub fn server_for(&self, name: &str, san: &str) -> Certs {
        let (cert, key) = self.leaf(
            "server",
            name,
            &format!(
                "basicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth\n\
                 subjectAltName = {san}\n"
            ),
        );
        Certs {
            ca: self.ca.clone(),
            cert,
            key,
        }
    }

    /// A `kind` certificate (`CN=name`, the extensions `ext`) signed by this CA, with its key
    /// (SEC1 "EC PRIVATE KEY" PEM, mode 0600), written next to the CA as `{kind}-{name}.*`,
    /// so a client and a server certificate of one name do not replace each other:
    /// (certificate, key).
    fn leaf(&self, kind: &str, name: &str, ext: &str) -> (PathBuf, PathBuf) {
        let dir = self.ca.parent().expect("the CA's directory");
        let file = format!("{kind}-{name}");
        let ext_file = format!("{file}-ext.cnf");
        fs::write(dir.join(&ext_file), ext).expect("write the extensions");
        let (key, csr, crt) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.crt"),
        );
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &key,
            ],
        );
        let subj = format!("/CN={name}");
        openssl(
            dir,
            &["req", "-new", "-key", &key, "-out", &csr, "-subj", &subj],
        );
        sign(dir, &csr, &crt, &ext_file);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join(&key), fs::Permissions::from_mode(0o600)).expect("chmod");
        (dir.join(crt), dir.join(key))
    }

    /// A server certificate for `name` (`CN=name`, subjectAltName `DNS:name`) that names this
    /// CA as its issuer but is signed by a key of its own, with no authorityKeyIdentifier to
    /// tell it from the CA's: a forgery, written next to the CA as `forged-{name}.*`.
    pub fn forged_for(&self, name: &str) -> Certs {
        let now = unix_now();
        self.made("forged", name, false, (now - 86_400, now + 86_400))
    }

    /// A server certificate for `name` (`CN=name`, subjectAltName `DNS:name`) signed by this
    /// CA that expired a day ago, written next to the CA as `expired-{name}.*`.
    pub fn expired_for(&self, name: &str) -> Certs {
        let now = unix_now();
        self.made("expired", name, true, (now - 10 * 86_400, now - 86_400))
    }

    /// A `kind` server certificate for `name` issued in this CA's name, signed by the CA when
    /// `signed` (else by a key of its own), valid over `valid` (Unix seconds), with its key
    /// (PKCS#8 PEM, mode 0600): this CA's certificates with these in place of its server's.
    fn made(&self, kind: &str, name: &str, signed: bool, valid: (i64, i64)) -> Certs {
        use openssl::asn1::{Asn1Integer, Asn1Time};
        use openssl::bn::BigNum;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::{
            BasicConstraints, ExtendedKeyUsage, SubjectAlternativeName,
        };
        use openssl::x509::{X509NameBuilder, X509};
        let dir = self.ca.parent().expect("the CA's directory");
        let new_key = || {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        };
        let ca = X509::from_pem(&fs::read(&self.ca).unwrap()).unwrap();
        let signer = if signed {
            PKey::private_key_from_pem(&fs::read(dir.join("ca.key")).unwrap()).unwrap()
        } else {
            new_key()
        };
        let key = new_key();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_nid(Nid::COMMONNAME, name).unwrap();
        // Unique enough among a test's certificates.
        let nanos = since_epoch().subsec_nanos();
        let serial: Asn1Integer = BigNum::from_u32(nanos + 1)
            .and_then(|n| n.to_asn1_integer())
            .unwrap();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&subject.build()).unwrap();
        b.set_issuer_name(ca.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        // time_t is 32 bits on some of the Pis' targets.
        let at = |secs: i64| Asn1Time::from_unix(libc::time_t::try_from(secs).unwrap()).unwrap();
        b.set_not_before(&at(valid.0)).unwrap();
        b.set_not_after(&at(valid.1)).unwrap();
        b.append_extension(BasicConstraints::new().critical().build().unwrap())
            .unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns(name)
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&signer, MessageDigest::sha256()).unwrap();
        let (cert, key_file) = (
            dir.join(format!("{kind}-{name}.crt")),
            dir.join(format!("{kind}-{name}.key")),
        );
        fs::write(&cert, b.build().to_pem().unwrap()).expect("write the certificate");
        fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).expect("write the key");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).expect("chmod");
        Certs {
            ca: self.ca.clone(),
            cert,
            key: key_file,
        }
    }
}

fn unix_now() -> i64 {
    since_epoch().as_secs() as i64
}

/// The time since the Unix epoch by the system clock.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
}

/// Sign the request `csr` with the test CA in `dir`, with the extensions in `ext`.
fn sign(dir: &Path, csr: &str, crt: &str, ext: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "3650",
            "-extfile",
            ext,
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (apt-get install openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// process helpers

/// A child process with its log file; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Spawn `cmd` with stdout and stderr appended to `log`.
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Service {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = file.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Service {
            name,
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait until 127.0.0.1:`port` accepts a TCP connection; panic with the
    /// log tail if the process exits first or the deadline passes.
    fn wait_accepting(&mut self, port: u16, timeout: Duration) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited ({status}) before accepting on {addr}\n--- {} ---\n{}",
                        self.name,
                        self.log.display(),
                        log_tail(&self.log)
                    );
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not accept on {addr} within {timeout:?}\n--- {} ---\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// SIGKILL the process and reap it (waitpid); no-op if already stopped.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // ESRCH if it already exited: fine, it is reaped below.
        let _ = child.kill();
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => panic!(
                    "{} (pid {}) still alive {EXIT_TIMEOUT:?} after SIGKILL",
                    self.name,
                    child.id()
                ),
                Err(e) => panic!("waitpid {} (pid {}): {e}", self.name, child.id()),
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill_quietly();
    }
}

/// The dead letters of the buffer `config` names, as `hubgate buffer export --dead-letters`
/// writes them (one JSON object a line), with the agent stopped.
pub fn dead_letters(config: &Path) -> Vec<serde_json::Value> {
    let export = run_ok(
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["buffer", "export", "--dead-letters", "-c"])
            .arg(config),
    );
    String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The last 4 KiB of a log file, for panic messages.
pub fn log_tail(path: &Path) -> String {
    const TAIL: u64 = 4096;
    let Ok(mut f) = File::open(path) else {
        return format!("(no log file {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Run a command that must end by itself within `limit`; kill it and panic with its
/// stderr if it does not (a regression then fails the test instead of hanging it).
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("child status").is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("killed child");
            panic!(
                "{cmd:?} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("child output")
}

/// Run a command to completion; panic with its output unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// True if 127.0.0.1:`port` accepts a TCP connection right now.
pub fn accepting(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Drive a future to completion on the current thread without a runtime.
/// Only for futures completed by another thread (rdkafka's admin futures are
/// oneshot channels filled by librdkafka's background thread).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

/// SIGSTOP process `pid` (`what`, for the failure) and wait until it is stopped.
pub fn sigstop(pid: u32, what: &str) {
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) },
        0,
        "SIGSTOP {what}"
    );
    let stat = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + START_TIMEOUT;
    // The state follows the command, which is in parentheses: "pid (comm) T ...".
    while !fs::read_to_string(&stat)
        .unwrap_or_default()
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
    {
        assert!(Instant::now() < deadline, "{what} did not stop");
        thread::sleep(POLL);
    }
}

/// SIGCONT process `pid` (`what`, for the failure), stopped by [`sigstop`].
pub fn sigcont(pid: u32, what: &str) {
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGCONT) },
        0,
        "SIGCONT {what}"
    );
}

/// Run `mosquitto_pub` against the broker on 127.0.0.1:`port`: `message` at QoS `qos` on
/// `topic` (at QoS 1 it returns once the broker acknowledged it).
pub fn mosquitto_pub(port: u16, qos: u8, topic: &str, message: &[u8]) {
    use std::io::Write;
    let mut publisher = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", &qos.to_string(), "-t", topic, "-s"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    publisher.stdin.take().unwrap().write_all(message).unwrap();
    let status = publisher.wait().unwrap();
    assert!(status.success(), "mosquitto_pub: {status}");
}

// ---------------------------------------------------------------------------
// Mosquitto

/// Debian's mosquitto on a free 127.0.0.1 port: plain MQTT, anonymous, no persistence.
#[derive(Debug)]
pub struct Mosquitto {
    dir: PathBuf,
    port: u16,
    conf: PathBuf,
    service: Service,
}

impl Mosquitto {
    /// Write `dir/mosquitto.conf` and start mosquitto; returns once the port accepts.
    /// Its output goes to `dir/mosquitto.log`.
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "log_type all\n")
    }

    /// Like [`Mosquitto::start`], with `settings` (mosquitto.conf lines) instead of full logging.
    pub fn start_with(dir: &Path, settings: &str) -> Mosquitto {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous true\n\
                 persistence false\n\
                 max_queued_messages 0\n\
                 user root\n\
                 log_dest stderr\n\
                 {settings}"
            ),
        )
        .expect("write mosquitto.conf");
        let service = Self::spawn(&conf, dir);
        let mut m = Mosquitto {
            dir: dir.to_path_buf(),
            port,
            conf,
            service,
        };
        m.service.wait_accepting(port, START_TIMEOUT);
        m
    }

    fn spawn(conf: &Path, dir: &Path) -> Service {
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(conf).current_dir(dir);
        Service::spawn("mosquitto", cmd, dir.join("mosquitto.log"))
    }

    /// The MQTT port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.service.pid()
    }

    /// Log file (stdout + stderr of every run).
    pub fn log_path(&self) -> PathBuf {
        self.service.log.clone()
    }

    /// Wait until the broker has received `n` PUBACKs from `client` in all its runs (its log):
    /// hubgate counts an acknowledgement when it queues it, so a test that kills hubgate
    /// right after the count could otherwise kill it before the PUBACK left.
    pub fn wait_pubacks(&self, client: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self.pubacks(client);
            if seen >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{seen} of {n} PUBACKs from {client} reached the broker"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PUBACKs the broker has received from `client` in all its runs.
    pub fn pubacks(&self, client: &str) -> usize {
        self.logged(&format!("Received PUBACK from {client} "))
    }

    /// How often `needle` stands in the broker's log, in all its runs.
    pub fn logged(&self, needle: &str) -> usize {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        log.matches(needle).count()
    }

    /// Outage: SIGKILL the broker and wait until it is reaped (its port is then closed).
    pub fn kill(&mut self) {
        self.service.kill();
    }

    /// Start the broker again on the same port (after [`Mosquitto::kill`]);
    /// returns once the port accepts.
    pub fn start_again(&mut self) {
        self.service.kill();
        self.service = Self::spawn(&self.conf, &self.dir);
        self.service.wait_accepting(self.port, START_TIMEOUT);
    }
}

// ---------------------------------------------------------------------------
// Kafka (tansu + stunnel)

/// An Azure-Event-Hubs-like Kafka endpoint: tansu 0.6.0 (SASL PLAIN, sqlite
/// storage, plaintext on an internal port) behind stunnel4 (TLS on the port
/// tansu advertises). Clients use `bootstrap.servers = localhost:PORT`,
/// `SASL_SSL`, `PLAIN`, `$ConnectionString`, and the test CA.
///
/// tansu does not auto-create topics: call [`Kafka::create_topics`] first.
/// PLAIN accepts any password, so a wrong connection string is *not* rejected.
#[derive(Debug)]
pub struct Kafka {
    dir: PathBuf,
    /// stunnel's certificates (`None` for a plain-TCP broker).
    certs: Option<Certs>,
    tansu_bin: PathBuf,
    /// tansu's plaintext listener (internal when stunnel or a proxy is in front of it).
    broker_port: u16,
    /// What clients use and what tansu advertises: stunnel's TLS port, a proxy's port
    /// ([`Kafka::start_plain_behind`]) or `broker_port`.
    tls_port: u16,
    tansu: Service,
    /// `None` for a plain-TCP broker without authentication ([`Kafka::start_plain`]).
    stunnel: Option<Service>,
}

impl Kafka {
    /// Start tansu (data in `dir/tansu.db`, log `dir/tansu.log`) and stunnel
    /// (config `dir/stunnel.conf`, log `dir/stunnel.log`), with certificates in
    /// `dir/certs`. Returns once both ports accept.
    pub fn start(dir: &Path) -> Kafka {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let tansu_bin = tansu_binary();
        let certs = Certs::generate(&dir.join("certs"));
        let broker_port = free_port();
        let mut tls_port = free_port();
        while tls_port == broker_port {
            tls_port = free_port();
        }

        let mut tansu = spawn_tansu(&tansu_bin, dir, broker_port, tls_port, true);
        tansu.wait_accepting(broker_port, START_TIMEOUT);

        let stunnel = tls_front(dir, &certs, tls_port, broker_port);

        Kafka {
            dir: dir.to_path_buf(),
            certs: Some(certs),
            tansu_bin,
            broker_port,
            tls_port,
            tansu,
            stunnel: Some(stunnel),
        }
    }

    /// tansu alone: plain TCP, no authentication (the benchmark's broker, without the TLS
    /// front's cost). Clients use [`Kafka::client_config`] as with [`Kafka::start`].
    pub fn start_plain(dir: &Path) -> Kafka {
        Self::start_plain_behind(dir, None)
    }

    /// [`Kafka::start_plain`], advertising `front` (a proxy's port that forwards to
    /// [`Kafka::broker_port`]) instead of its own, so every client connection goes through
    /// the proxy.
    pub fn start_plain_behind(dir: &Path, front: Option<u16>) -> Kafka {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let tansu_bin = tansu_binary();
        let broker_port = free_port();
        let advertised = front.unwrap_or(broker_port);
        let mut tansu = spawn_tansu(&tansu_bin, dir, broker_port, advertised, false);
        tansu.wait_accepting(broker_port, START_TIMEOUT);
        Kafka {
            dir: dir.to_path_buf(),
            certs: None,
            tansu_bin,
            broker_port,
            tls_port: advertised,
            tansu,
            stunnel: None,
        }
    }

    /// The port tansu itself listens on.
    pub fn broker_port(&self) -> u16 {
        self.broker_port
    }

    /// Is the broker behind the TLS front with SASL PLAIN (else plain TCP)?
    pub fn is_tls(&self) -> bool {
        self.stunnel.is_some()
    }

    /// `localhost:PORT`: the TLS port as in an Event Hubs connection, or the plain port.
    pub fn bootstrap(&self) -> String {
        format!("localhost:{}", self.tls_port)
    }

    /// The CA certificate clients must trust (`ssl.ca.location`); TLS brokers only.
    pub fn ca_path(&self) -> PathBuf {
        let certs = self.certs.as_ref().expect("a TLS broker has certificates");
        certs.ca.clone()
    }

    /// A syntactically Event-Hubs-like connection string (the SASL PLAIN
    /// password; tansu accepts any).
    pub fn connection_string(&self) -> String {
        "Endpoint=sb://localhost/;SharedAccessKeyName=test;SharedAccessKey=dGVzdA==;EntityPath=test"
            .to_string()
    }

    /// Client settings exactly as for Azure Event Hubs, except the bootstrap
    /// address and the test CA.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        if !self.is_tls() {
            return c;
        }
        c.set("security.protocol", "SASL_SSL")
            .set("sasl.mechanisms", "PLAIN")
            .set("sasl.username", "$ConnectionString")
            .set("sasl.password", self.connection_string())
            .set("ssl.ca.location", self.ca_path().to_string_lossy().as_ref());
        c
    }

    /// Create topics with one partition each (tansu does not auto-create).
    /// Existing topics are fine.
    pub fn create_topics(&self, topics: &[&str]) {
        self.create_topics_with_partitions(topics, 1);
    }

    /// Create topics with `partitions` partitions each. Existing topics are fine.
    pub fn create_topics_with_partitions(&self, topics: &[&str], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .expect("create rdkafka AdminClient");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics(&new, &opts))
            .unwrap_or_else(|e| panic!("CreateTopics {topics:?} failed: {e}{}", self.logs()));
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => panic!("CreateTopics {t}: {e}{}", self.logs()),
            }
        }
    }

    /// Read `topic` from the beginning (all partitions, fresh group id, nothing
    /// committed) until at least `expected_count` records are read *and* every
    /// partition is read up to its high watermark, or `timeout` passes.
    /// Returns what was read, sorted by (partition, offset); compare its length
    /// with the expected count (extra records, e.g. duplicates, are included).
    pub fn consume_all(
        &self,
        topic: &str,
        expected_count: usize,
        timeout: Duration,
    ) -> Vec<Record> {
        consume(
            self.client_config(),
            topic,
            expected_count,
            timeout,
            &|| self.logs(),
        )
    }

    /// Outage: SIGKILL tansu (stunnel keeps accepting TLS, like a load balancer
    /// in front of a dead broker) and wait until it is reaped.
    pub fn stop(&mut self) {
        self.tansu.kill();
    }

    /// Start tansu again with the same ports and the same sqlite data (after
    /// [`Kafka::stop`]); returns once it answers a metadata request. Accepting connections
    /// is not answering: restarted on an empty data directory on a loaded machine, tansu once
    /// closed every connection after ApiVersions for two minutes; it is started once more
    /// when it has not answered within [`START_TIMEOUT`].
    pub fn start_again(&mut self) {
        for attempt in 1..=2 {
            self.tansu.kill();
            self.tansu = spawn_tansu(
                &self.tansu_bin,
                &self.dir,
                self.broker_port,
                self.tls_port,
                self.is_tls(),
            );
            self.tansu.wait_accepting(self.broker_port, START_TIMEOUT);
            match self.answering() {
                Ok(()) => return,
                Err(e) if attempt == 1 => {
                    eprintln!("tansu answers no metadata request ({e}): starting it again");
                }
                Err(e) => panic!("tansu answers no metadata request: {e}{}", self.logs()),
            }
        }
    }

    /// Wait up to [`START_TIMEOUT`] for tansu to answer a metadata request: a plain broker on
    /// its own port, whatever a test puts in front of it (a client library would go on to
    /// the advertised address); a TLS broker through its front, with the login.
    fn answering(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        if !self.is_tls() {
            loop {
                match metadata_answered(self.broker_port) {
                    Ok(()) => return Ok(()),
                    Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        let consumer: BaseConsumer = self
            .client_config()
            .create()
            .map_err(|e| format!("a metadata client: {e}"))?;
        loop {
            match consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
                Err(_) => {}
            }
        }
    }

    /// A broker that hangs: SIGSTOP tansu, and wait until it is stopped. Its connections stay
    /// open and answer nothing; [`Kafka::stop`] still kills it, and what it had not read
    /// then is never written.
    pub fn pause(&self) {
        sigstop(self.tansu.pid().expect("tansu runs"), "tansu");
    }

    /// tansu's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.tansu.pid()
    }

    /// Is the broker process running (not stopped)?
    pub fn is_running(&self) -> bool {
        self.tansu.pid().is_some()
    }

    /// Tails of the logs, for assertion messages.
    pub fn logs(&self) -> String {
        [Some(&self.tansu), self.stunnel.as_ref()]
            .into_iter()
            .flatten()
            .map(|s| format!("\n--- {} ---\n{}", s.log.display(), log_tail(&s.log)))
            .collect()
    }
}

/// The line of `hubgate doctor`'s step `step` in its output, e.g.
/// `doctor_step(out, "tcp localhost:1234")`.
pub fn doctor_step<'a>(out: &'a str, step: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(5..)
                .is_some_and(|s| s.starts_with(&format!("{step}: ")))
        })
        .unwrap_or_else(|| panic!("no step {step:?} in:\n{out}"))
}

/// stunnel4: TLS with `certs` on 127.0.0.1:`tls_port` in front of 127.0.0.1:`backend_port`
/// (config `dir/stunnel.conf`, log `dir/stunnel.log`); returns once it accepts.
pub fn tls_front(dir: &Path, certs: &Certs, tls_port: u16, backend_port: u16) -> Service {
    let conf = dir.join("stunnel.conf");
    fs::write(
        &conf,
        format!(
            "foreground = yes\n\
             pid =\n\
             syslog = no\n\
             debug = notice\n\
             [kafka]\n\
             accept = 127.0.0.1:{tls_port}\n\
             connect = 127.0.0.1:{backend_port}\n\
             cert = {}\n\
             key = {}\n",
            certs.cert.display(),
            certs.key.display()
        ),
    )
    .expect("write stunnel.conf");
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&conf).current_dir(dir);
    let mut stunnel = Service::spawn("stunnel4", cmd, dir.join("stunnel.log"));
    stunnel.wait_accepting(tls_port, START_TIMEOUT);
    stunnel
}

/// `$HUBGATE_TANSU`, else `/opt/tansu-plain/bin/tansu`.
pub fn tansu_binary() -> PathBuf {
    let bin = std::env::var_os("HUBGATE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/tansu-plain/bin/tansu"));
    assert!(
        bin.is_file(),
        "tansu binary {} not found: run .ci/services/ensure-tansu.sh (or set HUBGATE_TANSU)",
        bin.display()
    );
    bin
}

/// Whether the Kafka broker on 127.0.0.1:`port` answers a Metadata request (version 1,
/// every topic) on a connection of its own, within 5 s.
fn metadata_answered(port: u16) -> std::io::Result<()> {
    use std::io::Write;
    const CORRELATION: i32 = 7;
    let wait = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), wait)?;
    stream.set_read_timeout(Some(wait))?;
    let client = b"hubgate-tests";
    let mut request = Vec::new();
    request.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    request.extend_from_slice(&1i16.to_be_bytes());
    request.extend_from_slice(&CORRELATION.to_be_bytes());
    request.extend_from_slice(&(client.len() as i16).to_be_bytes());
    request.extend_from_slice(client);
    request.extend_from_slice(&(-1i32).to_be_bytes()); // every topic
    stream.write_all(&(request.len() as i32).to_be_bytes())?;
    stream.write_all(&request)?;
    let mut head = [0u8; 8];
    stream.read_exact(&mut head)?;
    let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if correlation != CORRELATION || len < 4 {
        return Err(std::io::Error::other(format!(
            "an answer of {len} bytes to correlation id {correlation}"
        )));
    }
    let mut rest = vec![0; len as usize - 4];
    stream.read_exact(&mut rest)
}

fn spawn_tansu(
    bin: &Path,
    dir: &Path,
    broker_port: u16,
    advertised_port: u16,
    authentication: bool,
) -> Service {
    let mut cmd = Command::new(bin);
    cmd.arg("broker")
        .arg("--listener-url")
        .arg(format!("tcp://127.0.0.1:{broker_port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://localhost:{advertised_port}"))
        // Relative on purpose: tansu reads sqlite:///abs as cwd-relative.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .arg("--silent")
        .current_dir(dir);
    if authentication {
        cmd.arg("--authentication");
    }
    // Explicit flags win, but keep stray settings of the environment out.
    for var in [
        "LISTENER_URL",
        "ADVERTISED_LISTENER_URL",
        "STORAGE_ENGINE",
        "CLUSTER_ID",
    ] {
        cmd.env_remove(var);
    }
    Service::spawn("tansu", cmd, dir.join("tansu.log"))
}

impl Drop for Kafka {
    fn drop(&mut self) {
        // Services kill themselves in their own Drop; make the order explicit:
        // front first, so no client reconnects to a half-dead pair.
        if let Some(s) = self.stunnel.as_mut() {
            s.kill_quietly();
        }
        self.tansu.kill_quietly();
    }
}

impl Service {
    /// SIGKILL + waitpid without panicking (for Drop, also during unwinding).
    fn kill_quietly(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Read `topic` from the beginning with `config` (any Kafka-protocol broker: tansu, or
/// librdkafka's mock cluster); see [`Kafka::consume_all`]. `context` adds broker logs to a
/// panic message.
pub fn consume(
    config: ClientConfig,
    topic: &str,
    expected_count: usize,
    timeout: Duration,
    context: &dyn Fn() -> String,
) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", unique("harness"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Answer each fetch at once: a long wait per fetch can run a read-back past its
        // deadline and make delivered records look lost.
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("create rdkafka BaseConsumer");
    let partitions = partitions(&consumer, topic, deadline, context);
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign partitions");

    let mut out: Vec<Record> = Vec::new();
    let mut next: Vec<i64> = vec![0; partitions.len()];
    while Instant::now() < deadline {
        // Errors (broker restarting, partition EOF) are transient here: keep polling.
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            if let Some(i) = partitions.iter().position(|&p| p == m.partition()) {
                next[i] = next[i].max(m.offset() + 1);
            }
            out.push((
                m.key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                m.partition(),
                m.offset(),
            ));
        }
        if out.len() >= expected_count && caught_up(&consumer, topic, &partitions, &next) {
            break;
        }
    }
    out.sort_by_key(|r| (r.2, r.3));
    out
}

fn partitions(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Instant,
    context: &dyn Fn() -> String,
) -> Vec<i32> {
    loop {
        let last = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    return t.partitions().iter().map(|p| p.id()).collect();
                }
                Some(t) => format!("topic error {:?}", t.error()),
                None => "topic missing from metadata".to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            panic!(
                "metadata for topic {topic:?} (created with create_topics?): {last}{}",
                context()
            );
        }
        thread::sleep(POLL);
    }
}

fn caught_up(consumer: &BaseConsumer, topic: &str, partitions: &[i32], next: &[i64]) -> bool {
    partitions.iter().zip(next).all(|(&p, &n)| {
        match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
            Ok((_low, high)) => n >= high,
            Err(_) => false,
        }
    })
}
