//! SIGHUP loads the JavaScript codecs again in the running agent: a codec file broken on disk
//! leaves the version in use decoding, with the reason in the log and the problem counted,
//! and a good new version takes over.
#![cfg(feature = "js")]

mod support;

use std::path::Path;

use serde_json::Value;
use support::agent::{chirpstack_uplink, publish_all, uplink_topic, Agent, TH, WAIT};
use support::{codec_files, Mosquitto};

fn config(dir: &Path, codecs: &Path, mqtt: &Mosquitto) -> String {
    format!(
        "[buffer]\npath = \"{}\"\n[codecs]\ndir = \"{}\"\n\
         [[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"hubgate-reload\"\n\
         reconnect_max = \"1s\"\n[[device]]\ndev_eui = \"{TH}\"\njs_codec = \"c\"\n\
         [sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
        codecs.display(),
        mqtt.port()
    )
}

fn version(file: &Path, v: u32) {
    let js = format!("function decodeUplink(i) {{ return {{data: {{b: i.bytes[0], v: {v}}}}}; }}");
    codec_files::write(file, js);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_a_working_codec_when_its_new_file_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = dir.path().join("codecs");
    codec_files::create_dir(&codecs);
    let file = codecs.join("c.js");
    version(&file, 1);
    codec_files::write(
        codecs.join("c.toml"),
        "[fields]\nb = { field = \"temperature\", unit = \"°C\" }\n",
    );
    let mqtt = Mosquitto::start(dir.path());
    let mut agent = Agent::start_with_stdout(dir.path(), &config(dir.path(), &codecs, &mqtt));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let port = mqtt.port();
    let send = |fcnt: u32| async move {
        let body = chirpstack_uplink(TH, fcnt, 1, &[20 + fcnt as u8]);
        publish_all(port, &[(uplink_topic(TH), body)]).await
    };
    let hup = |agent: &Agent| {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(agent.pid(), libc::SIGHUP) }, 0);
    };
    send(1).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);

    codec_files::write(&file, "function decodeUplink(i) { return ");
    hup(&agent);
    agent.wait_log(
        "reloaded: 0 file(s) loaded, 1 kept at their previous version, 0 failed",
        1,
        WAIT,
    );
    // The reload itself said which file failed and why, before any uplink.
    let kept = format!("JavaScript codec {}: threw SyntaxError", file.display());
    let log = agent.wait_log(&kept, 1, WAIT);
    assert!(
        log.contains("the version loaded before stays in use [codec_file]"),
        "{log}"
    );
    agent.wait_metric("hubgate_problems_total{kind=\"codec_file\"}", WAIT, |v| {
        v == 1
    });
    send(2).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 2);

    version(&file, 2);
    hup(&agent);
    agent.wait_log(
        "reloaded: 1 file(s) loaded, 0 kept at their previous version, 0 failed",
        1,
        WAIT,
    );
    send(3).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 3);

    let records: Vec<Value> = agent
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(Value, Value, Value)> = records
        .iter()
        .map(|r| &r["obj"]["data"])
        .map(|d| {
            (
                d["meta"]["iot"]["fcnt_up"].clone(),
                d["temperature"][0]["value"].clone(),
                d["origin"]["v"].clone(),
            )
        })
        .collect();
    let want = |f: u32, t: u32, v: u32| (Value::from(f), Value::from(t), Value::from(v));
    assert_eq!(seen, [want(1, 21, 1), want(2, 22, 1), want(3, 23, 2)]);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"codec_file\"}"),
        1
    );
    assert!(agent.terminate(WAIT).success());
}

/// A SIGTERM during a SIGHUP reload is not held up by it. The reload runs on tokio's blocking
/// pool: one going on loading files that hang (each costs its load limit, 2 s, and more) would
/// hold the exit up past systemd's `TimeoutStopSec=30` with a dozen of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_a_codec_reload_is_not_held_up_by_it() {
    const CODECS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let codecs = dir.path().join("codecs");
    codec_files::create_dir(&codecs);
    let mut devices = String::new();
    for i in 0..CODECS {
        version(&codecs.join(format!("c{i}.js")), 1);
        devices.push_str(&format!(
            "[[device]]\ndev_eui = \"00000000000000{i:02x}\"\njs_codec = \"c{i}\"\n"
        ));
    }
    let port = support::free_udp_port();
    let config = format!(
        "[buffer]\npath = \"{}\"\n[codecs]\ndir = \"{}\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{port}\"\n{devices}\
         [sink]\ntype = \"stdout\"\n",
        dir.path().join("buffer").display(),
        codecs.display(),
    );
    let mut agent = Agent::start_with_stdout(dir.path(), &config);
    // The first load is done (the forwarder runs with the good versions).
    agent.wait_log("running: ", 1, WAIT);
    for i in 0..CODECS {
        codec_files::write(codecs.join(format!("c{i}.js")), "while (true) {}\n");
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(agent.pid(), libc::SIGHUP) }, 0);
    agent.wait_log("reload requested", 1, WAIT);
    // The whole reload would take about 17 s, more on a loaded machine (its limits are CPU
    // time); the stop well under half of it.
    let asked = std::time::Instant::now();
    let status = agent.terminate(std::time::Duration::from_secs(60));
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    let log = agent.full_log();
    assert!(log.contains("stopped; "), "the forwarder stopped:\n{log}");
    assert!(!log.contains(" reloaded: "), "{log}");
    assert!(took < std::time::Duration::from_secs(8), "{took:?}:\n{log}");
}
