//! `hubgate doctor` against real parts: tansu behind stunnel (SASL PLAIN over TLS, the Event
//! Hubs settings), mosquitto, a real pseudo-terminal, a UDP port, a sled buffer held by a
//! running agent; then the brokers are stopped for real.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::agent::{
    changed, config_with, topics, Agent, CODECS_PACKED, ENV, MOTION, OPENCLOSE, PACKED, WAIT,
};
use support::{free_udp_port, Kafka, Mosquitto};

const KEY: &str = "ZG9jdG9yLXRlc3Qta2V5LXNlY3JldA==";

/// A pseudo-terminal: `path` is its slave side, a real character device, while it lives.
struct Pty {
    _master: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl Pty {
    fn open() -> Pty {
        use std::os::fd::FromRawFd;
        // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into `buf`.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            let master = std::os::fd::OwnedFd::from_raw_fd(fd);
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            let mut buf = [0 as libc::c_char; 64];
            assert_eq!(libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()), 0);
            let path = std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_str()
                .unwrap()
                .into();
            Pty {
                _master: master,
                path,
            }
        }
    }
}

/// The three devices' config plus a serial and a UDP source, written to `dir/name`.
fn config(
    name: &str,

    dir: &Path,
    mqtt: &Mosquitto,
    kafka: &Kafka,
    serial: &Path,
    udp: u16,
    extra: &str,
) -> PathBuf {
    let sources = format!(
        "{extra}\n[[source]]\ntype = \"serial\"\ndevice = \"{}\"\nframing = \"slip\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{udp}\"\n",
        serial.display()
    );
    let text = config_with(&dir.join("buffer"), mqtt, kafka, KEY, "", &sources);
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    // It holds the key inline: readable by others, it is warned about.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// doctor's lines about the config (`OK   config: …`, `WARN config: …`).
fn config_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.get(5..).is_some_and(|s| s.starts_with("config: ")))
        .collect()
}

/// Run `hubgate doctor -c config`: (exit code, stdout), and how long it took.
fn doctor(config: &Path) -> (i32, String, Duration) {
    doctor_with(config, &[])
}

/// [`doctor`] with environment variables.
fn doctor_with(config: &Path, env: &[(&str, &Path)]) -> (i32, String, Duration) {
    let started = Instant::now();
    let out = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["doctor", "-c"])
            .arg(config)
            .env("RUST_LOG", "warn")
            // Not the machine's /var/lib/hubgate: a buffer left there is the machine's.
            .env("STATE_DIRECTORY", config.parent().unwrap())
            .envs(env.iter().copied()),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "the key leaked:\n{stdout}\n{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout, started.elapsed())
}

/// Assert that the line of `step` starts with `tag` (`OK`, `FAIL`, `SKIP`) and
/// contains `detail`.
fn expect(out: &str, step: &str, tag: &str, detail: &str) {
    let l = line(out, step);
    assert!(
        l.starts_with(tag) && l.contains(detail),
        "{step}: want {tag} {detail:?}, got:\n{out}"
    );
}

use support::doctor_step as line;

#[test]
fn every_step_passes_against_running_brokers_then_names_a_missing_hub_and_a_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    topics(&kafka);
    let pty = Pty::open();
    let udp = free_udp_port();
    let cfg = config("doctor.toml", dir.path(), &mqtt, &kafka, &pty.path, udp, "");

    let (code, out, _) = doctor(&cfg);
    let server = kafka.bootstrap();
    // The plan in recType order: each codec's packed one sorts before its unpacked one.
    let [env_packed, motion_packed, openclose_packed] = CODECS_PACKED;
    let steps = [
        "config".to_string(),
        "dns localhost".into(),
        format!("tcp {server}"),
        format!("tls {server}"),
        "sasl".into(),
        format!("hub {env_packed}"),
        format!("hub {ENV}"),
        format!("hub {PACKED}"),
        format!("hub {motion_packed}"),
        format!("hub {MOTION}"),
        format!("hub {openclose_packed}"),
        format!("hub {OPENCLOSE}"),
        "hub count".into(),
        format!("write {env_packed}"),
        format!("mqtt mqtt://127.0.0.1:{}", mqtt.port()),
        format!("udp 127.0.0.1:{udp}"),
        format!("buffer {}", dir.path().join("buffer").display()),
        "buffer lock".into(),
        "status page".into(),
    ];
    // The clock is whatever this machine's is (containers often say unsynchronised).
    let clock = line(&out, "clock");
    assert!(
        clock.starts_with("OK   clock: synchronised") || clock.starts_with("WARN clock: not"),
        "{out}"
    );
    // A pty stands in for the serial port: readable, but not a class the unit lets open.
    let serial = line(&out, &format!("serial {}", pty.path.display()));
    assert!(
        serial.starts_with("WARN ")
            && serial.contains("a pts device, which the shipped unit's DeviceAllow="),
        "{out}"
    );
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| *l != clock && *l != serial)
        .collect();
    assert_eq!(lines.len(), steps.len(), "{out}");
    for (l, step) in lines.iter().zip(&steps) {
        assert!(
            l.starts_with(&format!("OK   {step}: ")),
            "{l:?} is not OK {step:?}:\n{out}"
        );
    }
    assert_eq!(code, 0, "{out}");
    expect(&out, "dns localhost", "OK", "127.0.0.1");
    expect(
        &out,
        "status page",
        "OK",
        "http://127.0.0.1:9898/; on this machine only",
    );
    expect(
        &out,
        &format!("tls {server}"),
        "OK",
        "certificate for localhost verified",
    );
    expect(
        &out,
        "sasl",
        "OK",
        "PLAIN as \"$ConnectionString\" accepted",
    );
    expect(
        &out,
        &format!("hub {ENV}"),
        "OK",
        "hub exists (1 partition(s))",
    );
    expect(&out, "buffer lock", "OK", "no hubgate is running");

    // A hub mapped to one that does not exist, on a site that does not create hubs, fails
    // its recType's step only.
    let mapped = config(
        "mapped.toml",
        dir.path(),
        &mqtt,
        &kafka,
        &pty.path,
        udp,
        &format!("[sink.hubs]\n\"{MOTION}\" = \"no-such-hub\""),
    );
    let text = changed(
        &std::fs::read_to_string(&mapped).unwrap(),
        &[(
            "type = \"eventhubs\"\n",
            "type = \"eventhubs\"\nprovisioning = \"precreated\"\n",
        )],
    );
    std::fs::write(&mapped, text).unwrap();
    let (code, out, _) = doctor(&mapped);
    assert_eq!(code, 1, "{out}");
    expect(
        &out,
        &format!("hub {MOTION}"),
        "FAIL",
        "hub \"no-such-hub\" does not exist",
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("FAIL")).count(),
        1,
        "{out}"
    );

    // With the agent running on this config, its buffer and UDP port are in use: said, not failed.
    let agent = Agent::start(dir.path(), &std::fs::read_to_string(&cfg).unwrap());
    agent.wait_log(
        &format!("udp: packet forwarder source on 127.0.0.1:{udp}"),
        1,
        WAIT,
    );
    let (code, out, _) = doctor(&cfg);
    assert_eq!(code, 0, "{out}");
    expect(&out, "buffer lock", "OK", "in use by a running hubgate");
    expect(
        &out,
        &format!("udp 127.0.0.1:{udp}"),
        "OK",
        "by the running hubgate",
    );
}

#[test]
fn stopped_brokers_fail_their_steps_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = Mosquitto::start(dir.path());
    let mut kafka = Kafka::start(dir.path());
    topics(&kafka);
    let udp = free_udp_port();
    let server = kafka.bootstrap();
    let gone = dir.path().join("ttyUSB9");
    let cfg = config("doctor.toml", dir.path(), &mqtt, &kafka, &gone, udp, "");

    // The broker is down behind its TLS front (stunnel still accepts, like a load balancer).
    kafka.stop();
    mqtt.kill();
    let (code, out, took) = doctor(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{out}");
    expect(&out, &format!("tcp {server}"), "OK", "");
    expect(&out, &format!("tls {server}"), "OK", "");
    expect(
        &out,
        "sasl",
        "FAIL",
        "the connection was closed before the login",
    );
    expect(&out, &format!("hub {ENV}"), "SKIP", "");
    let broker = format!("mqtt mqtt://127.0.0.1:{}", mqtt.port());
    expect(&out, &broker, "FAIL", "connection refused");
    let serial = format!("serial {}", gone.display());
    expect(&out, &serial, "FAIL", "no such device");
    expect(&out, &format!("udp 127.0.0.1:{udp}"), "OK", "");

    // Nothing listens at all: the TCP step fails, the ones after it are skipped.
    drop(kafka);
    let (code, out, took) = doctor(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{out}");
    expect(&out, &format!("tcp {server}"), "FAIL", "connection refused");
    expect(&out, &format!("tls {server}"), "SKIP", "");
    expect(&out, "sasl", "SKIP", "");
}

/// The TLS step trusts what librdkafka trusts: with `ssl.ca.location = "probe"` the test
/// broker's private CA is not among the system's, so the handshake and the login both fail.
#[test]
fn the_tls_step_uses_librdkafkas_ca_source() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    let pty = Pty::open();
    let probe = "\"ssl.ca.location\" = \"probe\"";
    let cfg = config(
        "probe.toml",
        dir.path(),
        &mqtt,
        &kafka,
        &pty.path,
        free_udp_port(),
        probe,
    );
    let (code, out, _) = doctor(&cfg);
    assert_eq!(code, 1, "{out}");
    let server = kafka.bootstrap();
    expect(
        &out,
        &format!("tls {server}"),
        "FAIL",
        "certificate not trusted",
    );
    assert!(
        !line(&out, &format!("tls {server}")).contains(&kafka.ca_path().display().to_string()),
        "{out}"
    );
}

/// Without a CA in the config, librdkafka on the system's OpenSSL trusts OpenSSL's default
/// paths, which `SSL_CERT_FILE` points elsewhere: the TLS step agrees with the login.
#[test]
fn without_a_ca_the_tls_step_trusts_what_the_login_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let kafka = Kafka::start(dir.path());
    let pty = Pty::open();
    let cfg = config(
        "default.toml",
        dir.path(),
        &mqtt,
        &kafka,
        &pty.path,
        free_udp_port(),
        "",
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let ca_line = format!("ca_location = \"{}\"\n", kafka.ca_path().display());
    std::fs::write(&cfg, changed(&text, &[(&ca_line, "")])).unwrap();
    let (_, out, _) = doctor_with(&cfg, &[("SSL_CERT_FILE", &kafka.ca_path())]);
    let server = kafka.bootstrap();
    if hubgate::sink::kafka::VENDORED_OPENSSL {
        // `probe` looks at the system store only.
        expect(
            &out,
            &format!("tls {server}"),
            "FAIL",
            "certificate not trusted",
        );
        expect(&out, "sasl", "SKIP", "");
    } else {
        expect(
            &out,
            &format!("tls {server}"),
            "OK",
            "verified (CA OpenSSL's default paths",
        );
        expect(&out, "sasl", "OK", "accepted");
    }
}

/// A broker certificate signed by the trusted CA but for another name: the TLS step says the
/// certificate does not name the host of the connection string's Endpoint (or hold its IP
/// address), which names it does hold, and the fix, and does not blame the CA. A certificate
/// for the host from a CA not trusted still fails as not trusted, and so do one for another
/// name that only claims the trusted CA as its issuer (OpenSSL checks the name before the
/// signature) and one for another name that has expired.
#[test]
fn the_tls_step_names_the_host_a_certificate_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::Certs::generate(&dir.path().join("certs"));
    let other_name = certs.server_for("other.example", "DNS:other.example, IP:10.0.0.1");
    let untrusted = support::Certs::generate(&dir.path().join("untrusted"));
    let forged = certs.forged_for("other.example");
    let expired = certs.expired_for("other.example");
    // stunnel fronts with nothing behind: the steps after TLS are skipped.
    let fronts: Vec<(u16, _)> = [
        ("other-name", &other_name),
        ("untrusted", &untrusted),
        ("forged", &forged),
        ("expired", &expired),
    ]
    .into_iter()
    .map(|(name, certs)| {
        let port = support::free_port();
        let front_dir = dir.path().join(name);
        std::fs::create_dir_all(&front_dir).unwrap();
        let backend = support::free_port();
        (port, support::tls_front(&front_dir, certs, port, backend))
    })
    .collect();
    let doctor_of = |name: &str, host: &str, port: u16| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
                 [sink]\ntype = \"eventhubs\"\nconnection_string = \"Endpoint=sb://{host}:{port}/;\
                 SharedAccessKeyName=test;SharedAccessKey={KEY}\"\nca_location = \"{}\"\n",
                dir.path().join("buffer").display(),
                free_udp_port(),
                certs.ca.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let (code, out, _) = doctor(&path);
        assert_eq!(code, 1, "{out}");
        out
    };
    let [other_port, untrusted_port, forged_port, expired_port] = [0, 1, 2, 3].map(|i| fronts[i].0);
    let out = doctor_of("other-name.toml", "localhost", other_port);
    let step = format!("tls localhost:{other_port}");
    expect(
        &out,
        &step,
        "FAIL",
        "the broker's certificate does not name localhost, only other.example, 10.0.0.1: use a name it \
         holds in the connection string's Endpoint, or have the certificate made for localhost",
    );
    assert!(!line(&out, &step).contains("CA"), "{out}");
    expect(&out, "sasl", "SKIP", "the TLS handshake failed");
    let out = doctor_of("other-ip.toml", "127.0.0.1", other_port);
    expect(
        &out,
        &format!("tls 127.0.0.1:{other_port}"),
        "FAIL",
        "the broker's certificate does not hold the IP address 127.0.0.1 (an IP \
         subjectAltName), only other.example, 10.0.0.1: use a name it holds in the connection string's \
         Endpoint, or add the IP to it",
    );
    let out = doctor_of("untrusted.toml", "localhost", untrusted_port);
    expect(
        &out,
        &format!("tls localhost:{untrusted_port}"),
        "FAIL",
        &format!(
            "certificate not trusted: unable to get local issuer certificate (CA {}",
            certs.ca.display()
        ),
    );
    for (name, port, reason) in [
        ("forged", forged_port, "certificate signature failure"),
        ("expired", expired_port, "certificate has expired"),
    ] {
        let out = doctor_of(&format!("{name}.toml"), "localhost", port);
        expect(
            &out,
            &format!("tls localhost:{port}"),
            "FAIL",
            &format!(
                "certificate not trusted: {reason} (CA {}; a wrong clock breaks this too)",
                certs.ca.display()
            ),
        );
    }
}

/// A Kafka sink with `insecure = true` fails the checklist, naming what is off.
#[test]
fn an_insecure_kafka_sink_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insecure.toml");
    std::fs::write(
        &path,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
             [sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{}\"\nsecurity_protocol = \"plaintext\"\ninsecure = true\n",
            dir.path().join("buffer").display(),
            free_udp_port(),
            support::free_port(),
        ),
    )
    .unwrap();
    let (code, out, _) = doctor(&path);
    assert_eq!(code, 1, "{out}");
    expect(
        &out,
        "security",
        "FAIL",
        "insecure = true: sink.security_protocol: no TLS",
    );
}

/// A config of one serial source on `device`, written to `dir/serial.toml`.
fn serial_config(dir: &Path, buffer: &Path, device: &Path) -> PathBuf {
    let config = dir.join("serial.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"serial\"\ndevice = \"{}\"\n\
             framing = \"slip\"\n[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"off\"\n",
            buffer.display(),
            device.display()
        ),
    )
    .unwrap();
    config
}

/// Doctor runs as root (`sudo hubgate doctor`: the config is root's and the agent's group's),
/// where `access()` passes for every device: a serial port the agent's user (here the buffer
/// directory's owner, as `hubgate buffer` takes it) cannot open, another owner's with mode
/// 0600, fails the step instead of passing. Needs root; skipped without.
#[test]
fn doctor_judges_a_serial_port_for_the_agents_user_not_for_root() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root, as the operator's `sudo hubgate doctor`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pty = Pty::open();
    std::os::unix::fs::chown(&pty.path, Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(&pty.path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let buffer = dir.path().join("buffer");
    std::fs::create_dir(&buffer).unwrap();
    std::os::unix::fs::chown(&buffer, Some(4343), Some(4343)).unwrap();
    let (_, out, _) = doctor(&serial_config(dir.path(), &buffer, &pty.path));
    let step = format!("serial {}", pty.path.display());
    let serial = line(&out, &step);
    assert!(
        serial.starts_with("FAIL ") && serial.contains("(uid 4343, the buffer's owner) may not"),
        "uid 4343 cannot open a 0600 device of uid 4242:\n{out}"
    );
}

/// The buffer's file system turned read-only (the card failed a write, and ext4 under
/// `errors=remount-ro` stays read-only until the next boot's fsck): no agent can open the
/// buffer there, so its step fails and says why, rather than show the free space as if all
/// were well. Needs root (a loop device); skipped without.
#[test]
fn a_buffer_on_a_read_only_file_system_fails_its_step() {
    a_failed_card_fails_the_buffers_step(support::card::Card::go_read_only);
}

/// The same where the kernel shut the file system down instead (Linux 6.6 to 6.14).
#[test]
fn a_buffer_on_a_file_system_shut_down_fails_its_step() {
    a_failed_card_fails_the_buffers_step(support::card::Card::shut_down);
}

fn a_failed_card_fails_the_buffers_step(fail: fn(&support::card::Card)) {
    let dir = tempfile::tempdir().unwrap();
    let Some(card) = support::card::Card::mount_if_root(dir.path()) else {
        return;
    };
    let buffer = card.path().join("buffer");
    std::fs::create_dir(&buffer).unwrap();
    let pty = Pty::open();
    let config = serial_config(dir.path(), &buffer, &pty.path);
    // Room for the cap on the small card: only the file system's state can fail the step.
    let path = format!("path = \"{}\"\n", buffer.display());
    let text = std::fs::read_to_string(&config).unwrap();
    let sized = format!("{path}max_bytes = \"8MiB\"\nmin_free = \"1MiB\"\n");
    std::fs::write(&config, changed(&text, &[(&path, &sized)])).unwrap();
    let step = format!("buffer {}", buffer.display());
    expect(&doctor(&config).1, &step, "OK", "free");
    fail(&card);
    let (code, out, _) = doctor(&config);
    expect(&out, &step, "FAIL", "runs without its buffer");
    assert_eq!(code, 1, "{out}");
}

/// A hubgate that runs without its buffer on a card turned read-only is still the agent of
/// that buffer: doctor says the UDP port and the status page are the running hubgate's, not
/// another program's. Needs root (a loop device); skipped without.
#[test]
fn doctor_knows_the_agent_running_without_its_buffer_on_a_read_only_card() {
    let dir = tempfile::tempdir().unwrap();
    let Some(card) = support::card::Card::mount_if_root(dir.path()) else {
        return;
    };
    let udp = free_udp_port();
    let config = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{udp}\"\n[sink]\ntype = \"stdout\"\n",
        card.path().join("buffer").display()
    );
    let listening = format!("udp: packet forwarder source on 127.0.0.1:{udp}");
    let mut agent = Agent::start_with_stdout(dir.path(), &config);
    agent.wait_log(&listening, 1, WAIT);
    assert!(agent.terminate(WAIT).success(), "{}", agent.logs());
    card.go_read_only();
    agent.start_again();
    agent.wait_log(&listening, 2, WAIT);
    agent.wait_log("[buffer_read_only]", 1, WAIT);
    let (_, out, _) = doctor(&dir.path().join("hubgate.toml"));
    expect(
        &out,
        &format!("udp 127.0.0.1:{udp}"),
        "OK",
        "by the running hubgate",
    );
    expect(&out, "status page", "OK", "http://127.0.0.1:");
}

/// `/dev/ttyS*` (major 4, as `/dev/serial0` on a Raspberry Pi 3/4 and most x86 boards) is a
/// class the shipped unit allows (`DeviceAllow=char-ttyS rw`), though `/proc/devices` lists
/// major 4 first as `/dev/vc/0`, then `tty`, then `ttyS`: the step passes and names `ttyS`.
/// Needs root (mknod); skipped without.
#[test]
fn doctor_passes_a_ttys_port_whose_major_has_several_names() {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("ttyS1");
    let c = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(4, 65)) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    let (_, out, _) = doctor(&serial_config(dir.path(), &dir.path().join("buffer"), &dev));
    expect(
        &out,
        &format!("serial {}", dev.display()),
        "OK",
        "ttyS character device, readable and writable by",
    );
}

/// The status page's port held by another program: the agent would log that it cannot listen
/// and run on without metrics or page, so the step fails; held while a hubgate runs on the
/// buffer (its own listener), it passes.
#[test]
fn a_status_page_port_held_by_another_program_fails_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let taken = support::listener();
    let port = taken.local_addr().unwrap().port();
    let buffer = dir.path().join("buffer");
    let path = dir.path().join("hubgate.toml");
    std::fs::write(
        &path,
        format!(
            "[buffer]\npath = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n",
            buffer.display(),
            free_udp_port()
        ),
    )
    .unwrap();
    let run = || {
        let mut out = Vec::new();
        hubgate::doctor::run(&path, &mut out);
        String::from_utf8(out).unwrap()
    };
    let out = run();
    assert_eq!(
        line(&out, "status page"),
        format!("FAIL status page: 127.0.0.1:{port} is in use by another program, and no hubgate runs on this buffer: the agent would run without metrics and status page; free the port or change metrics.listen"),
        "{out}"
    );
    // The buffer's lock held, as by a running agent.
    let _lock = hubgate::buffer::BufferLock::take(&buffer).unwrap();
    let out = run();
    expect(&out, "buffer lock", "OK", "in use by a running hubgate");
    expect(
        &out,
        "status page",
        "OK",
        &format!("http://127.0.0.1:{port}/; on this machine only"),
    );
}

/// A broker that takes the TCP connection but fails the TLS handshake (a plain port, a TLS
/// interceptor, a bad CA): the `tcp` step passes, the `tls` step fails, and the login and hub
/// steps are skipped naming TLS, not "no broker could be reached", which would send the
/// installer to the firewall.
#[test]
fn a_broker_that_fails_tls_after_tcp_skips_the_login_naming_tls() {
    let dir = tempfile::tempdir().unwrap();
    let plain = support::listener();
    let port = plain.local_addr().unwrap().port();
    // Takes each connection and closes it: no TLS here.
    std::thread::spawn(move || {
        for c in plain.incoming() {
            drop(c);
        }
    });
    let path = dir.path().join("hubgate.toml");
    std::fs::write(
        &path,
        format!(
            "[buffer]\npath = \"{}\"\n[sink]\ntype = \"eventhubs\"\nconnection_string = \"Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName=Root;SharedAccessKey=c2VjcmV0\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n",
            dir.path().join("buffer").display(),
            free_udp_port()
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    hubgate::doctor::run(&path, &mut out);
    let out = String::from_utf8(out).unwrap();
    expect(&out, &format!("tcp 127.0.0.1:{port}"), "OK", "connected");
    expect(&out, &format!("tls 127.0.0.1:{port}"), "FAIL", "");
    let why = "no TLS connection to any broker: TCP connected, the TLS handshake failed";
    assert_eq!(line(&out, "sasl"), format!("SKIP sasl: {why}"), "{out}");
    let hubs: Vec<&str> = out.lines().filter(|l| l.contains(" hub ")).collect();
    assert!(!hubs.is_empty(), "{out}");
    for hub in hubs {
        assert!(hub.starts_with("SKIP hub ") && hub.ends_with(why), "{out}");
    }
}

/// A Kafka sink whose SASL password the broker refuses (changed on the broker, say): the
/// `sasl` step fails naming what a Kafka sink logs in with, its user and password, not the
/// Event Hubs connection string it does not have; and the password is not shown.
#[test]
fn a_refused_kafka_login_names_the_sasl_password() {
    use support::standin::{Answers, StandIn};

    let dir = tempfile::tempdir().unwrap();
    let changed = Answers {
        password: Some("new-kafka-pa55word".into()),
        ..Answers::default()
    };
    let broker = StandIn::start_tls(&dir.path().join("broker"), &[], changed);
    let path = dir.path().join("hubgate.toml");
    std::fs::write(
        &path,
        format!(
            "[buffer]\npath = \"{}\"\n[sink]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
             security_protocol = \"sasl_ssl\"\nsasl_username = \"hubgate\"\n\
             sasl_password = \"old-kafka-pa55word\"\nca_location = \"{}\"\n\
             [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n",
            dir.path().join("buffer").display(),
            broker.bootstrap(),
            broker.ca_path().display(),
            free_udp_port()
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    hubgate::doctor::run(&path, &mut out);
    let out = String::from_utf8(out).unwrap();
    let sasl = line(&out, "sasl");
    assert!(
        sasl.starts_with("FAIL sasl: login refused: ")
            && sasl.ends_with(
                "(check sasl_username and sasl_password (or the file sasl_password_file names))"
            ),
        "{out}"
    );
    assert!(!out.contains("pa55word"), "the password leaked:\n{out}");
}

/// The config's warnings, the ones `check` prints and `run` logs, make the config step a
/// `WARN` and follow it one a line; the steps after it still run.
#[test]
fn the_configs_warnings_are_shown_and_make_its_step_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("mqtt.password");
    std::fs::write(&secret, "doctor-warn-pw").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("doctor.toml");
    std::fs::write(
        &cfg,
        format!(
            "[buffer]\npath = \"{}\"\n[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"off\"\n\
             [[source]]\ntype = \"mqtt\"\nurl = \"mqtt://192.0.2.1\"\nusername = \"u\"\npassword_file = \"{}\"\n",
            dir.path().join("buffer").display(),
            secret.display()
        ),
    )
    .unwrap();
    let (code, out, _) = doctor(&cfg);
    assert_eq!(code, 1, "the broker step fails:\n{out}");
    let config = config_lines(&out);
    assert_eq!(
        config,
        [
            format!("WARN config: {} (1 source(s), 0 device(s)), 2 warning(s):", cfg.display()),
            format!(
                "WARN config: {} holds a secret and is readable by every user (mode 0644): chmod 600, or 640 with the agent's group (chgrp hubgate)",
                secret.display()
            ),
            "WARN config: source[0]: the MQTT password goes over the network in clear text to mqtt://192.0.2.1; use mqtts://".to_string(),
        ],
        "{out}"
    );
    expect(&out, "mqtt mqtt://192.0.2.1", "FAIL", "");
}

/// A Kafka login the security protocol never sends is one of the config's warnings: doctor
/// shows it on a `WARN config:` line, naming the key and not the password.
#[test]
fn a_kafka_login_the_protocol_never_sends_is_a_config_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kafka.password");
    std::fs::write(&secret, "doctor-unsent-pw").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = dir.path().join("unsent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[buffer]\npath = \"{}\"\n[metrics]\nlisten = \"off\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
             [sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{}\"\nsasl_username = \"u\"\nsasl_password_file = \"{}\"\n",
            dir.path().join("buffer").display(),
            free_udp_port(),
            support::free_port(),
            secret.display()
        ),
    )
    .unwrap();
    let (code, out, _) = doctor(&cfg);
    assert_eq!(code, 1, "nothing listens at the broker's port:\n{out}");
    let config = config_lines(&out);
    assert_eq!(
        config,
        [
            format!("WARN config: {} (1 source(s), 0 device(s)), 1 warning(s):", cfg.display()),
            "WARN config: sink.sasl_username: never sent: security_protocol is \"ssl\" (the default), \
             which has no SASL login, so the sink connects without it; set security_protocol = \
             \"sasl_ssl\" to log in, or remove the login"
                .to_string(),
        ],
        "{out}"
    );
    assert!(!out.contains("doctor-unsent-pw"), "{out}");
}

/// A broker's name whose DNS server never answers (the resolver waits 30 s for it): the mqtt
/// step gives up after its 5 s, and doctor ends then, not once the resolver gives up (the
/// lookup left on the runtime's blocking pool). Needs root; skipped without.
#[test]
fn a_broker_whose_dns_never_answers_holds_doctor_no_longer_than_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let Some(dns) = support::black_hole_dns::BlackHoleDns::start(dir.path(), 30) else {
        return;
    };
    let cfg = support::black_hole_dns::BlackHoleDns::mqtt_config(
        dir.path(),
        "broker.doctor-test.example",
    );
    let started = Instant::now();
    let out = support::output_within(
        dns.command(env!("CARGO_BIN_EXE_hubgate"))
            .args(["doctor", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    let out = String::from_utf8(out.stdout).unwrap();
    expect(
        &out,
        "mqtt mqtt://broker.doctor-test.example:1883",
        "FAIL",
        "",
    );
    assert!(
        took < Duration::from_secs(15),
        "doctor took {took:?}, its mqtt step at most 5 s:\n{out}"
    );
    assert!(
        dns.wait_query(Duration::from_millis(100)),
        "the name was looked up through the server that never answers"
    );
}
