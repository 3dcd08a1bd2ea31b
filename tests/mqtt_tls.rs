//! `mqtts://` against mosquitto with a TLS listener that asks for a client certificate:
//! uplinks published on the broker reach the agent over TLS, and `doctor` fails a source
//! whose CA or client certificate does not fit, or whose certificate names another host.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::agent::{changed, publish_all, uplinks, Agent, WAIT};
use support::{free_port, Certs, Mosquitto};

/// Mosquitto with TLS 1.2+ (client certificate required) on its port and plain MQTT on
/// `plain`, for the test's publisher.
fn broker(dir: &Path, certs: &Certs, plain: u16) -> Mosquitto {
    Mosquitto::start_with(
        dir,
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\ntls_version tlsv1.2\n\
             listener {plain} 127.0.0.1\nlog_type all\n",
            certs.ca.display(),
            certs.cert.display(),
            certs.key.display()
        ),
    )
}

/// A broker in `dir` whose certificate, signed by the trusted CA, is for `other.example`:
/// the CA's certificates, a client certificate with its key, the broker.
fn other_name_broker(dir: &Path) -> (Certs, (PathBuf, PathBuf), Mosquitto) {
    let certs = Certs::generate(&dir.join("certs"));
    let client = certs.client("hubgate");
    let other_name = certs.server_for("other.example", "DNS:other.example");
    let mqtt = broker(&dir.join("mqtt"), &other_name, free_port());
    (certs, client, mqtt)
}

/// `line` is a failed step that quotes `reason` (OpenSSL's) and ends with ` (hint)`.
fn fails_with(line: &str, reason: &str, hint: &str) {
    assert!(
        line.starts_with("FAIL ") && line.contains(reason) && line.ends_with(&format!(" ({hint})")),
        "{line}"
    );
}

/// An `mqtts://localhost` source with the `tls` keys, a stdout sink.
fn config(dir: &Path, port: u16, tls: &str) -> String {
    format!(
        "gateway_id = \"test\"\n[buffer]\npath = \"{}\"\n\
         [[source]]\ntype = \"mqtt\"\nurl = \"mqtts://localhost:{port}\"\nclient_id = \"hubgate-tls\"\n\
         reconnect_max = \"1s\"\n{tls}\n[sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
    )
}

fn tls_keys(ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> String {
    let mut keys = format!("ca_file = \"{}\"\n", ca.display());
    if let Some((cert, key)) = client {
        keys.push_str(&format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    keys
}

/// `hubgate doctor` on `text`: the line of the MQTT step.
fn doctor_mqtt_line(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["doctor", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .find(|l| l[5..].starts_with("mqtt mqtts://"))
        .unwrap_or_else(|| panic!("no mqtt step:\n{stdout}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplinks_arrive_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&dir.path().join("certs"));
    let client = certs.client("hubgate");
    let plain = free_port();
    let mqtt = broker(&dir.path().join("mqtt"), &certs, plain);
    let text = config(dir.path(), mqtt.port(), &tls_keys(&certs.ca, Some(&client)));

    let ok = doctor_mqtt_line(dir.path(), "ok.toml", &text);
    assert!(
        ok.starts_with("OK   ") && ok.ends_with("CONNACK: connection accepted"),
        "{ok}"
    );

    let agent = Agent::start_with_stdout(dir.path(), &text);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let messages = uplinks(4);
    publish_all(plain, &messages).await;
    let deadline = Instant::now() + WAIT;
    while agent.stdout_lines().len() < messages.len() {
        assert!(Instant::now() < deadline, "{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent.stdout_lines().len(), messages.len());
    assert_eq!(
        agent.metric("hubgate_received_total{source=\"mqtt\"}"),
        messages.len() as u64
    );
    drop(agent);

    // Without the client certificate the broker refuses the connection (under TLS 1.3 its
    // alert may or may not arrive before the reset, so the reason varies).
    let no_cert = config(dir.path(), mqtt.port(), &tls_keys(&certs.ca, None));
    let line = doctor_mqtt_line(dir.path(), "no-cert.toml", &no_cert);
    assert!(line.starts_with("FAIL "), "{line}");
    // A CA that did not sign the broker's certificate: not trusted.
    let other = Certs::generate(&dir.path().join("other"));
    let wrong_ca = config(dir.path(), mqtt.port(), &tls_keys(&other.ca, Some(&client)));
    let line = doctor_mqtt_line(dir.path(), "wrong-ca.toml", &wrong_ca);
    assert!(
        line.starts_with("FAIL ") && line.contains("certificate verify failed"),
        "{line}"
    );
}

/// Where doctor's own handshake, which would give the names a certificate holds, does not
/// reach the broker, a name mismatch still gets plain words: here the broker is reached
/// through a port that takes one connection, the MQTT step's, and then none.
#[test]
fn doctor_explains_a_name_mismatch_its_own_handshake_cannot_look_into() {
    use std::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let (certs, client, mqtt) = other_name_broker(dir.path());
    let once = support::listener();
    let port = once.local_addr().unwrap().port();
    let broker_port = mqtt.port();
    let forward = std::thread::spawn(move || {
        let (near, _) = once.accept().unwrap();
        drop(once);
        let far = TcpStream::connect(("127.0.0.1", broker_port)).unwrap();
        let (mut near_in, mut far_out) = (near.try_clone().unwrap(), far.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut near_in, &mut far_out);
            let _ = far_out.shutdown(std::net::Shutdown::Write);
        });
        let (mut far_in, mut near_out) = (far, near);
        let _ = std::io::copy(&mut far_in, &mut near_out);
        let _ = near_out.shutdown(std::net::Shutdown::Both);
        up.join().unwrap();
    });
    let text = changed(
        &config(dir.path(), port, &tls_keys(&certs.ca, Some(&client))),
        &[("mqtts://localhost:", "mqtts://127.0.0.1:")],
    );
    let line = doctor_mqtt_line(dir.path(), "once.toml", &text);
    fails_with(
        &line,
        "IP address mismatch",
        "the broker's certificate does not hold the IP address 127.0.0.1 (an IP \
         subjectAltName): use a name it holds in the URL, or add the IP to it",
    );
    forward.join().unwrap();
}

/// The TLS files are for `mqtts://` only, come in pairs, and must be certificates and keys.
#[test]
fn tls_files_are_checked_when_the_config_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&dir.path().join("certs"));
    let client = certs.client("hubgate");
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} passed check");
        String::from_utf8(out.stderr).unwrap()
    };
    let plain = changed(
        &config(dir.path(), 1883, &tls_keys(&certs.ca, None)),
        &[("mqtts://", "mqtt://")],
    );
    let e = check("plain.toml", &plain);
    assert!(
        e.contains("source[0].ca_file: only for mqtts:// urls"),
        "{e}"
    );
    let half = config(
        dir.path(),
        8883,
        &format!("client_cert_file = \"{}\"", client.0.display()),
    );
    let e = check("half.toml", &half);
    assert!(e.contains("source[0].client_key_file: missing"), "{e}");
    // The key where the CA should be, and the other way round.
    let swapped = config(
        dir.path(),
        8883,
        &tls_keys(&client.1, Some(&(client.0.clone(), certs.ca.clone()))),
    );
    let e = check("swapped.toml", &swapped);
    assert!(e.contains("source[0].ca_file: "), "{e}");
    let key_is_cert = config(
        dir.path(),
        8883,
        &tls_keys(&certs.ca, Some(&(client.0.clone(), certs.ca.clone()))),
    );
    let e = check("key.toml", &key_is_cert);
    assert!(
        e.contains("source[0].client_key_file: not a PEM private key"),
        "{e}"
    );
}

/// A broker certificate signed by the trusted CA but for another name: `doctor` says the
/// certificate does not name the URL's host, or hold its IP address, which names it holds,
/// and does not blame the CA. One for another name that only claims the trusted CA as its
/// issuer (OpenSSL checks the name before the signature) is not trusted.
#[test]
fn doctor_names_the_host_a_certificate_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, client, mqtt) = other_name_broker(dir.path());
    let text = config(dir.path(), mqtt.port(), &tls_keys(&certs.ca, Some(&client)));
    let line = doctor_mqtt_line(dir.path(), "other-name.toml", &text);
    fails_with(
        &line,
        "hostname mismatch",
        "the broker's certificate does not name localhost, only other.example: use a name it \
         holds in the URL, or have the certificate made for localhost",
    );
    // By IP address OpenSSL checks the certificate's IP subjectAltNames, and says so.
    let by_ip = changed(&text, &[("mqtts://localhost:", "mqtts://127.0.0.1:")]);
    let line = doctor_mqtt_line(dir.path(), "other-ip.toml", &by_ip);
    assert!(line.starts_with("FAIL mqtt mqtts://127.0.0.1:"), "{line}");
    fails_with(
        &line,
        "IP address mismatch",
        "the broker's certificate does not hold the IP address 127.0.0.1 (an IP \
         subjectAltName), only other.example: use a name it holds in the URL, or add the IP to it",
    );
    drop(mqtt);
    let forged = certs.forged_for("other.example");
    let mqtt = broker(&dir.path().join("forged"), &forged, free_port());
    let text = config(dir.path(), mqtt.port(), &tls_keys(&certs.ca, Some(&client)));
    let line = doctor_mqtt_line(dir.path(), "forged.toml", &text);
    fails_with(
        &line,
        "hostname mismatch",
        &format!(
            "certificate not trusted: certificate signature failure (CA {}; a wrong clock \
             breaks this too)",
            certs.ca.display()
        ),
    );
}
