//! Who may read the buffer: an agent run by hand has the shell's umask (0022 here), not the
//! unit's 0077, and the buffer holds the readings and the MQTT session. The directory hubgate
//! makes for it is its user's alone, and so is each file hubgate writes there; one made
//! looser by someone else is warned about by `check` and at the start, and left as it is.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::agent::{chirpstack_uplink, tbhh100, three_devices, uplink_topic, Agent, TH, WAIT};
use support::{free_port, mosquitto_pub, Mosquitto};

/// The permission bits of `path`, in octal.
fn mode(path: &Path) -> String {
    format!(
        "{:o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    )
}

/// Every file under `dir`, depth first.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files hubgate itself makes in the buffer: segments, the flush mark, MQTT sessions,
/// the lock and the disk reserve.
fn own_files(buffer: &Path) -> [Vec<PathBuf>; 5] {
    let named = |pred: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        files_under(buffer)
            .into_iter()
            .filter(|p| pred(p.file_name().unwrap().to_str().unwrap()))
            .collect()
    };
    [
        named(&|n| n.ends_with(".seg")),
        named(&|n| n == "hubgate-flushed"),
        named(&|n| n.starts_with("mqtt-session-")),
        named(&|n| n == "lock"),
        named(&|n| n == "reserve"),
    ]
}

#[test]
fn a_buffer_made_under_umask_022_is_private_and_a_looser_one_is_warned_about() {
    // SAFETY: umask has no failure mode; the agents started below inherit it. The umask is
    // the process's: this is the only test in this binary, so no other test runs under it.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    // Two levels hubgate makes: the parent as well.
    let state = dir.path().join("state");
    let buffer = state.join("buffer");
    // A broker nobody listens on: the readings stay in the buffer.
    let body = format!(
        "{}[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{}\"\nsecurity_protocol = \"plaintext\"\ninsecure = true\n",
        three_devices(&buffer, &mqtt, ""),
        free_port()
    );
    let mut agent = Agent::start(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    mosquitto_pub(
        mqtt.port(),
        1,
        &uplink_topic(TH),
        chirpstack_uplink(TH, 1, 103, &tbhh100(21, 40)).as_bytes(),
    );
    agent.wait_metric("hubgate_buffer_records", WAIT, |v| v == 1);
    assert!(agent.terminate(WAIT).success());

    assert_eq!(mode(&state), "700");
    assert_eq!(mode(&buffer), "700");
    let [segments, marks, sessions, lock, reserve] = own_files(&buffer);
    for (what, files) in [
        ("segment", &segments),
        ("mark", &marks),
        ("session", &sessions),
        ("lock", &lock),
        ("reserve", &reserve),
    ] {
        assert!(
            !files.is_empty(),
            "no {what} file in {:?}",
            files_under(&buffer)
        );
        for f in files {
            assert_eq!(mode(f), "600", "{}", f.display());
        }
    }
    for values in segments.iter().map(|s| s.parent().unwrap()) {
        assert_eq!(mode(values), "700", "{}", values.display());
    }

    // As an older hubgate or a `mkdir` left it: warned about, not changed, no refusal.
    std::fs::set_permissions(&buffer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let warning = format!(
        "{} holds the buffered readings and every user may list and enter it (mode 0755): chmod 700",
        buffer.display()
    );
    let check = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["check", "-c"])
        .arg(dir.path().join("hubgate.toml"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8(check.stderr).unwrap();
    assert!(check.status.success(), "{stderr}");
    assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
    agent.start_again();
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    agent.wait_log(&warning, 1, Duration::ZERO);
    assert_eq!(mode(&buffer), "755");
    assert!(agent.terminate(WAIT).success());
}
