//! A peer at the MQTT URL that sends hubgate's own CONNECT back (an echo service on the port,
//! a squatter while the broker restarts) gets the password in that CONNECT; neither the
//! agent's log nor `doctor` shows it on, while both still say what came.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::agent::{Agent, WAIT};

const PASSWORD: &str = "MQTT-ECHO-PA55-9f8e";
/// A CONNACK accepting the connection, no session present.
const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// A listener on a free loopback port that sends back every byte it reads, after `first`;
/// each connection on its own thread. Returns the port.
fn echo(first: &'static [u8]) -> u16 {
    let listener = support::listener();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || echo_on(stream, first));
        }
    });
    port
}

fn echo_on(mut stream: TcpStream, first: &[u8]) {
    if stream.write_all(first).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A stdout sink and an MQTT source on `port` logging in with [`PASSWORD`] from a 0600 file.
fn config(dir: &Path, port: u16) -> String {
    let secret = dir.join("mqtt.password");
    std::fs::write(&secret, PASSWORD).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    format!(
        "[buffer]\npath = \"{}\"\n[sink]\ntype = \"stdout\"\n\
         [[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_max = \"1s\"\n\
         username = \"u\"\npassword_file = \"{}\"\n",
        dir.join("buffer").display(),
        secret.display()
    )
}

/// `hubgate doctor` on `body`: (stdout, stderr).
fn doctor(dir: &Path, body: &str) -> (String, String) {
    let path = dir.join("doctor.toml");
    std::fs::write(&path, body).unwrap();
    let out = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["doctor", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info"),
        Duration::from_secs(60),
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_connect_sent_back_instead_of_a_connack_is_named_by_its_type_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo(&[]);
    let body = config(dir.path(), port);
    let agent = Agent::start(dir.path(), &body);
    let line = format!(
        "mqtt: mqtt://127.0.0.1:{port}: expected a CONNACK, received a CONNECT packet; reconnecting"
    );
    agent.wait_log(&line, 1, WAIT);
    let log = agent.full_log();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );

    let (stdout, stderr) = doctor(dir.path(), &body);
    let step = support::doctor_step(&stdout, &format!("mqtt mqtt://127.0.0.1:{port}"));
    assert_eq!(
        step,
        format!(
            "FAIL mqtt mqtt://127.0.0.1:{port}: cannot connect: expected a CONNACK, received a CONNECT packet"
        )
    );
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "the password is in doctor's output:\n{stdout}\n{stderr}"
    );
}

#[test]
fn a_connect_sent_back_after_a_connack_is_named_by_its_type_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo(&CONNACK);
    // As the packaged unit runs it.
    let agent = Agent::start_with_log(dir.path(), &config(dir.path(), port), "info");
    let line =
        "ERROR rumqttc::state] the broker sent a CONNECT packet where none is expected, so the \
                connection is dropped (its contents are not shown: they may be this client's own \
                CONNECT, password included)";
    // At every reconnect, each line rewritten.
    agent.wait_log(line, 2, WAIT);
    let log = agent.full_log();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
}
