//! MQTT sessions and subscriptions against a real mosquitto: two sources on one broker each
//! have their own session, a changed topic takes effect on a session the broker kept (the old
//! one unsubscribed from), a session the broker restored without the subscription is
//! subscribed again, a retained uplink makes one record however often hubgate restarts and a
//! new one on its topic makes its own, a lost session is subscribed again, a subscription the
//! broker refuses is reported and asked for again (the old topic kept meanwhile), and one it
//! grants only at QoS 0 is reported; a reconnect with acknowledgements outstanding loses no
//! uplink.

mod support;

use std::path::Path;

use support::agent::{
    chirpstack_uplink, publish_all, publish_all_retained, tbhh100, Agent, TH, WAIT,
};
use support::{mosquitto_pub, Mosquitto};

/// A stdout sink and one MQTT source per `(topic, more keys)`.
fn config(dir: &Path, mqtt: &Mosquitto, sources: &[(&str, &str)]) -> String {
    let mut body = format!(
        "[buffer]\npath = \"{}\"\n[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"{TH}\"\ncodec = \"browan-tbhh100\"\n",
        dir.join("buffer").display()
    );
    for (topic, more) in sources {
        body += &format!(
            "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic = \"{topic}\"\nreconnect_max = \"1s\"\n{more}",
            mqtt.port()
        );
    }
    body
}

fn uplink(topic: &str, fcnt: u32) -> (String, String) {
    (
        topic.to_string(),
        chirpstack_uplink(TH, fcnt, 103, &tbhh100(20, 40)),
    )
}

/// Two MQTT sources on one broker without a `client_id` connect as two clients: neither
/// takes the other's session over, and each gets its own topic's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_on_one_broker_have_their_own_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let body = config(dir.path(), &mqtt, &[("one/#", ""), ("two/#", "")]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("mqtt: subscribed to one/#", 1, WAIT);
    agent.wait_log("mqtt: subscribed to two/#", 1, WAIT);
    publish_all(mqtt.port(), &[uplink("one/x", 1), uplink("two/x", 2)]).await;
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 2);
    let broker = std::fs::read_to_string(mqtt.log_path()).unwrap();
    assert!(!broker.contains("closing old connection"), "{broker}");
    let log = agent.full_log();
    assert!(log.contains("as hubgate-hubgate (session"), "{log}");
    assert!(log.contains("as hubgate-hubgate-2 (session"), "{log}");
}

/// The `fcnt_up` of each record the stdout sink wrote, in order.
fn fcnts(agent: &Agent) -> Vec<u64> {
    agent
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["obj"]["data"]["meta"]["iot"]["fcnt_up"].as_u64().unwrap())
        .collect()
}

/// Wait until the stdout sink has written the record of `fcnt`; returns every `fcnt_up`.
fn wait_record(agent: &Agent, fcnt: u64) -> Vec<u64> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let seen = fcnts(agent);
        if seen.contains(&fcnt) {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no record of fcnt {fcnt} (records: {seen:?}):\n{}",
            agent.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A topic changed in the config takes effect on the session the broker kept (it says
/// "session present"): the new one is subscribed to, and the old one unsubscribed from, so
/// its messages make no more records. A later start on the same config finds both as they
/// were left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_topic_takes_effect_on_a_kept_session() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let id = "client_id = \"hubgate-topics\"\n";
    let mut agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &[("old/#", id)]));
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    agent.terminate(WAIT);
    drop(agent);

    let body = config(dir.path(), &mqtt, &[("new/#", id)]);
    let mut agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("(session present: true)", 1, WAIT);
    agent.wait_log("mqtt: subscribed to new/#", 1, WAIT);
    // The broker delivers one client's messages in order: the old topic's would come first.
    publish_all(mqtt.port(), &[uplink("old/x", 1), uplink("new/x", 2)]).await;
    assert_eq!(wait_record(&agent, 2), [2]);

    agent.terminate(WAIT);
    agent.start_again();
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    publish_all(mqtt.port(), &[uplink("old/x", 3), uplink("new/x", 4)]).await;
    assert_eq!(wait_record(&agent, 4), [2, 4]);
}

/// A broker that says the session is present may have restored an older one that lacks the
/// subscription: mosquitto after a crash, from its persistence file saved before the topic
/// changed. hubgate subscribes at every connect, so the new topic's uplinks still flow. (A
/// guard: a build that asks only when the session is missing, as one did, fails it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_restored_without_the_subscription_is_subscribed_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = persistent_broker(dir.path());
    let client = "hubgate-restored";
    let id = format!("client_id = \"{client}\"\n");
    let mut agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &[("old/#", &id)]));
    agent.wait_log("mqtt: subscribed to old/#", 1, WAIT);
    // The broker's snapshot: the session with old/# only.
    save_sessions(&mqtt, dir.path());
    agent.terminate(WAIT);
    drop(agent);

    // The topic changes; then the broker crashes and comes back with the snapshot.
    let body = config(dir.path(), &mqtt, &[("new/#", &id)]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("mqtt: unsubscribed from old/#", 1, WAIT);
    agent.wait_log("mqtt: subscribed to new/#", 1, WAIT);
    mqtt.kill();
    mqtt.start_again();
    wait_sessions_present(&mqtt, client, 2);
    agent.wait_log("mqtt: subscribed to new/#", 2, WAIT);
    publish_all(mqtt.port(), &[uplink("new/x", 1)]).await;
    assert_eq!(wait_record(&agent, 1), [1]);
}

/// The broker drops the connection (SIGKILL) while uplinks it handed over are not
/// acknowledged, and comes back with the session of its last save, which still holds every
/// one of them. None is acknowledged when it dies, by construction: hubgate is stopped
/// (SIGSTOP) from before they are published until the broker is gone. Continued, hubgate
/// takes those that reached it on the dead connection (their acknowledgements void with it),
/// reconnects (the same process, "session present"), and the broker delivers them all again.
/// Each uplink makes exactly one record, in order, and each is acknowledged once: none is
/// lost, and none is acknowledged twice. (No SUBSCRIBE or UNSUBSCRIBE is outstanding when the
/// connection fails: what rumqttc keeps of those is `source::mqtt`'s unit tests' part.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_acknowledgements_outstanding_loses_no_uplink() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = persistent_broker(dir.path());
    let client = "hubgate-reconnect";
    let id = format!("client_id = \"{client}\"\n");
    let body = config(dir.path(), &mqtt, &[("live/#", &id)]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("mqtt: subscribed to live/#", 1, WAIT);
    agent.pause();
    let uplinks: Vec<_> = (1..=N).map(|n| uplink("live/x", n as u32)).collect();
    publish_all(mqtt.port(), &uplinks).await;
    save_sessions(&mqtt, dir.path());
    mqtt.kill();
    assert_eq!(mqtt.pubacks(client), 0, "every acknowledgement outstanding");
    agent.resume();
    mqtt.start_again();
    wait_sessions_present(&mqtt, client, 1);
    assert_eq!(wait_record(&agent, N), (1..=N).collect::<Vec<_>>());
    mqtt.wait_pubacks(client, N as usize);
    // A live uplink after them: its PUBACK follows theirs on the connection.
    publish_all(mqtt.port(), &[uplink("live/x", N as u32 + 1)]).await;
    assert_eq!(wait_record(&agent, N + 1), (1..=N + 1).collect::<Vec<_>>());
    mqtt.wait_pubacks(client, N as usize + 1);
    assert_eq!(mqtt.pubacks(client), N as usize + 1);
    // Those that reached hubgate on the dead connection came again: their copies.
    let copies = agent.metric("hubgate_duplicates_total");
    assert!(copies > 0, "no uplink taken on the dead connection");
}

/// Equal uplinks that carry neither a time nor an FCnt (a publisher of the ChirpStack format
/// that leaves both out), published while hubgate is held (SIGSTOP), reach it together: each
/// is a reading of its own, each is acknowledged, so each must make a record. Their ids come
/// from the receive time in ms, which uplinks read together share, so each after the first is
/// taken for its copy and acknowledged with it, and its reading is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_uplinks_without_time_or_fcnt_read_together_each_make_a_record() {
    use base64::Engine;
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let client = "hubgate-untimed";
    let id = format!("client_id = \"{client}\"\n");
    let body = config(dir.path(), &mqtt, &[("bare/#", &id)]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("mqtt: subscribed to bare/#", 1, WAIT);
    let bare = serde_json::json!({
        "deviceInfo": {"devEui": TH},
        "fPort": 103,
        "data": base64::engine::general_purpose::STANDARD.encode(tbhh100(20, 40)),
    })
    .to_string();
    agent.pause();
    publish_all(mqtt.port(), &vec![("bare/x".to_string(), bare); N]).await;
    agent.resume();
    mqtt.wait_pubacks(client, N);
    let records = agent.metric("hubgate_delivered_total");
    let copies = agent.metric("hubgate_duplicates_total");
    assert_eq!(
        (records, copies),
        (N as u64, 0),
        "(records, copies) of {N} acknowledged uplinks"
    );
}

/// An ABP device whose counter restarted (its network server does not check it) sends the
/// same FCnt and payload as before, an hour later: a reading of its own, acknowledged, which
/// must make a record, not be taken for a copy of the earlier one. The same message delivered
/// twice is one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_abp_devices_equal_reading_from_the_network_server_makes_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let client = "hubgate-abp";
    let id = format!("client_id = \"{client}\"\n");
    let body = config(dir.path(), &mqtt, &[("abp/#", &id)]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("mqtt: subscribed to abp/#", 1, WAIT);
    let at = |time: &str| {
        let (topic, body) = uplink("abp/x", 0);
        let mut up: serde_json::Value = serde_json::from_str(&body).unwrap();
        up["devAddr"] = "26011bda".into();
        up["time"] = time.into();
        (topic, up.to_string())
    };
    let hour_apart = [
        at("2026-11-26T10:00:00.000Z"),
        at("2026-11-26T11:00:00.000Z"),
    ];
    assert_eq!(
        twice_then_once(&mqtt, client, &agent, hour_apart).await,
        (2, 1),
        "(records, copies) of 3 acknowledged uplinks"
    );
}

/// Publish `first` twice, then `second`; once the three are acknowledged, the records made
/// and the copies counted.
async fn twice_then_once(
    mqtt: &Mosquitto,
    client: &str,
    agent: &Agent,
    [first, second]: [(String, String); 2],
) -> (u64, u64) {
    publish_all(mqtt.port(), &[first.clone(), first, second]).await;
    mqtt.wait_pubacks(client, 3);
    (
        agent.metric("hubgate_delivered_total"),
        agent.metric("hubgate_duplicates_total"),
    )
}

/// A device that restarts its counter (`resets_fcnt`) sends the same bytes at FCnt 0 after
/// each power-up (a boot message, a button code). Its ChirpStack gateway frames, heard an hour
/// apart (their `gwTime`), reach hubgate together (the broker queued them while hubgate was
/// away or reconnecting): the later one is a reading of its own, acknowledged, which must make
/// a record, as the network server's uplink of such a device does (the test above). The same
/// message delivered twice is one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_devices_equal_frame_heard_an_hour_later_makes_a_record() {
    use support::lorawan;
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let client = "hubgate-frames";
    let body = format!(
        "[buffer]\npath = \"{}\"\n[sink]\ntype = \"stdout\"\n{}resets_fcnt = true\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\nformat = \"chirpstack-gateway\"\nclient_id = \"{client}\"\nreconnect_max = \"1s\"\n",
        dir.path().join("buffer").display(),
        lorawan::device(),
        mqtt.port()
    );
    let agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_metric("hubgate_mqtt_subscribed", WAIT, |v| v == 1);
    let heard_at = |time: &str| {
        let frame = lorawan::gateway_frame(&lorawan::phy(0));
        let mut frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
        frame["rxInfo"]["gwTime"] = time.into();
        (lorawan::GATEWAY_TOPIC.to_string(), frame.to_string())
    };
    let hour_apart = [
        heard_at("2026-11-26T10:00:00.000Z"),
        heard_at("2026-11-26T11:00:00.000Z"),
    ];
    assert_eq!(
        twice_then_once(&mqtt, client, &agent, hour_apart).await,
        (2, 1),
        "(records, copies) of 3 acknowledged gateway frames"
    );
}

/// mosquitto that keeps its sessions in `dir`, saved only when told ([`save_sessions`]) and
/// restored at its start.
fn persistent_broker(dir: &Path) -> Mosquitto {
    let settings = format!(
        "log_type all\npersistence true\npersistence_location {}/\nautosave_interval 0\n",
        dir.display()
    );
    Mosquitto::start_with(dir, &settings)
}

/// Have the broker of [`persistent_broker`] in `dir` save its sessions (SIGUSR1), once.
fn save_sessions(mqtt: &Mosquitto, dir: &Path) {
    let snapshot = dir.join("mosquitto.db");
    let pid = mqtt.pid().expect("mosquitto runs") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    wait_for(&format!("{}", snapshot.display()), || snapshot.exists());
}

/// Wait until the broker has answered `client` `n` times in all with "session present".
fn wait_sessions_present(mqtt: &Mosquitto, client: &str, n: usize) {
    let present = format!("Sending CONNACK to {client} (1, 0)");
    wait_for(&format!("{n} of {present}"), || mqtt.logged(&present) == n);
}

/// Wait until `done` (`what`, for the failure).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "no {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A retained uplink published before hubgate subscribed makes its record; the broker sends
/// it again at every SUBSCRIBE, which hubgate asks at every connect, and it makes no other,
/// after a crash right after its PUBACK or a stop alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_uplink_makes_one_record_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    publish_all_retained(mqtt.port(), &[uplink("kept/x", 1)]).await;
    let client = "hubgate-retained";
    let id = format!("client_id = \"{client}\"\n");
    let body = config(dir.path(), &mqtt, &[("kept/#", &id)]);
    let mut agent = Agent::start_with_stdout(dir.path(), &body);
    assert_eq!(wait_record(&agent, 1), [1]);
    assert_eq!(agent.metric("hubgate_mqtt_retained_skipped_total"), 0);
    mqtt.wait_pubacks(client, 1);

    // A crash right after the PUBACK: the retained uplink comes again, and is acknowledged.
    agent.kill();
    started_again_then_live(&mut agent, &mqtt, 2).await;
    mqtt.wait_pubacks(client, 3);

    // A stop: the same.
    agent.terminate(WAIT);
    started_again_then_live(&mut agent, &mqtt, 3).await;
}

/// Start `n` of the agent, then a live uplink `n` on `kept/x`: the records are those of
/// uplinks 1 to `n`, one each, and one retained delivery was skipped (the broker sends a
/// retained message on a SUBSCRIBE before anything published later).
async fn started_again_then_live(agent: &mut Agent, mqtt: &Mosquitto, n: u64) {
    agent.start_again();
    agent.wait_log("mqtt: subscribed to kept/#", n as usize, WAIT);
    publish_all(mqtt.port(), &[uplink("kept/x", n as u32)]).await;
    assert_eq!(wait_record(agent, n), (1..=n).collect::<Vec<_>>());
    assert_eq!(agent.metric("hubgate_mqtt_retained_skipped_total"), 1);
}

/// A new retained uplink on a topic whose earlier one made its record is another message:
/// the broker sends it only at the SUBSCRIBE (here to a session it lost, restarted without
/// persistence), and it makes its record; the next start skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_retained_uplink_on_the_topic_makes_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = Mosquitto::start(dir.path());
    publish_all_retained(mqtt.port(), &[uplink("kept/x", 1)]).await;
    let client = "hubgate-renewed";
    let id = format!("client_id = \"{client}\"\n");
    let body = config(dir.path(), &mqtt, &[("kept/#", &id)]);
    let mut agent = Agent::start_with_stdout(dir.path(), &body);
    assert_eq!(wait_record(&agent, 1), [1]);
    mqtt.wait_pubacks(client, 1);
    agent.terminate(WAIT);

    // The broker forgets the session and the retained uplink; a new one is retained.
    mqtt.kill();
    mqtt.start_again();
    publish_all_retained(mqtt.port(), &[uplink("kept/x", 2)]).await;
    agent.start_again();
    assert_eq!(wait_record(&agent, 2), [1, 2]);
    mqtt.wait_pubacks(client, 2);

    agent.terminate(WAIT);
    started_again_then_live(&mut agent, &mqtt, 3).await;
}

/// A broker that lost the session (restarted without persistence: "session present: false")
/// holds no subscription: hubgate asks for its topic again, and its messages flow. (A guard
/// against skipping the SUBSCRIBE for a session the file says was granted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_is_subscribed_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut mqtt = Mosquitto::start(dir.path());
    let id = "client_id = \"hubgate-lost\"\n";
    let body = config(dir.path(), &mqtt, &[("lost/#", id)]);
    let mut agent = Agent::start_with_stdout(dir.path(), &body);
    agent.wait_log("mqtt: subscribed to lost/#", 1, WAIT);
    // Restarted with the session kept first.
    agent.terminate(WAIT);
    agent.start_again();
    agent.wait_log("(session present: true)", 1, WAIT);
    agent.wait_log("mqtt: subscribed to lost/#", 2, WAIT);

    mqtt.kill();
    mqtt.start_again();
    agent.wait_log("mqtt: subscribed to lost/#", 3, WAIT);
    publish_all(mqtt.port(), &[uplink("lost/x", 1)]).await;
    assert_eq!(wait_record(&agent, 1), [1]);
}

/// mosquitto's dynamic security plugin, which (unlike its `acl_file`) refuses a subscription
/// in the SUBACK; this one refuses every subscription but to the filters `allowed`, until
/// [`allow_subscriptions`].
fn refusing_broker(dir: &Path, allowed: &[&str]) -> Mosquitto {
    let plugin = std::fs::read_dir("/usr/lib")
        .unwrap()
        .map(|e| e.unwrap().path().join("mosquitto_dynamic_security.so"))
        .find(|p| p.exists())
        .expect("mosquitto_dynamic_security.so (Debian package mosquitto)");
    let dynsec = dir.join("dynamic-security.json");
    let acl = |acltype: &str, topic: &str| serde_json::json!({"acltype": acltype, "topic": topic, "priority": 0, "allow": true});
    let mut acls = vec![acl("publishClientSend", "$CONTROL/dynamic-security/#")];
    acls.extend(allowed.iter().map(|f| acl("subscribePattern", f)));
    let settings = serde_json::json!({
        "defaultACLAccess": {
            "publishClientSend": true,
            "publishClientReceive": true,
            "subscribe": false,
            "unsubscribe": true,
        },
        "clients": [],
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "anonymous"}]}],
        "anonymousGroup": "anonymous",
        "roles": [{"rolename": "anonymous", "acls": acls}],
    });
    std::fs::write(&dynsec, settings.to_string()).unwrap();
    Mosquitto::start_with(
        dir,
        &format!(
            "log_type all\nplugin {}\nplugin_opt_config_file {}\n",
            plugin.display(),
            dynsec.display()
        ),
    )
}

/// A SUBACK that refuses the subscription is a problem pointing at the broker's ACL, not a
/// subscription; it is asked for again with backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_reported_and_asked_for_again() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = refusing_broker(dir.path(), &[]);
    let agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &[("denied/#", "")]));
    let refused = "hubgate_problems_total{kind=\"mqtt_subscribe_refused\"}";
    agent.wait_metric(refused, WAIT, |v| v >= 2);
    assert_eq!(agent.metric("hubgate_mqtt_subscribed"), 0);
    assert_eq!(agent.metric("hubgate_mqtt_connected"), 1);
    let log = agent.full_log();
    assert!(
        log.contains(
            "refused the subscription to denied/# (SUBACK failure): check the broker's ACL"
        ),
        "{log}"
    );
    assert!(!log.contains("mqtt: subscribed to"), "{log}");
}

/// Have the broker of [`refusing_broker`] grant every subscription from now on, keeping its
/// connections: its default access (a change of a role's ACLs would have the plugin
/// disconnect that role's clients). By a command at QoS 0: one at QoS 1 had mosquitto 2.0.11
/// close the publisher's connection.
fn allow_subscriptions(mqtt: &Mosquitto) {
    let command = serde_json::json!({"commands": [{
        "command": "setDefaultACLAccess",
        "acls": [{"acltype": "subscribe", "allow": true}],
    }]});
    let topic = "$CONTROL/dynamic-security/v1";
    mosquitto_pub(mqtt.port(), 0, topic, command.to_string().as_bytes());
}

/// A changed topic whose subscription the broker refuses (its ACL) leaves the old one in the
/// session: the uplinks still come on it, and nothing is unsubscribed from. Once the broker
/// grants the new one (asked again on the same connection), the old one is left, and its
/// uplinks make no more records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_topic_stays_while_the_broker_refuses_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = refusing_broker(dir.path(), &["old/#"]);
    let client = "hubgate-refused";
    let id = format!("client_id = \"{client}\"\n");
    let mut agent = Agent::start(dir.path(), &config(dir.path(), &mqtt, &[("old/#", &id)]));
    agent.wait_log("mqtt: subscribed to old/#", 1, WAIT);
    agent.terminate(WAIT);
    drop(agent);

    let body = config(dir.path(), &mqtt, &[("new/#", &id)]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    let log = agent.wait_log(
        "refused the subscription to new/# (SUBACK failure)",
        1,
        WAIT,
    );
    publish_all(mqtt.port(), &[uplink("old/x", 1)]).await;
    assert_eq!(wait_record(&agent, 1), [1]);
    let kept = "the filters no longer configured stay subscribed until it is granted: old/#";
    assert!(log.contains(kept), "{log}");
    let unsubscribes = || mqtt.logged(&format!("Received UNSUBSCRIBE from {client}"));
    assert_eq!(unsubscribes(), 0);

    allow_subscriptions(&mqtt);
    agent.wait_log("mqtt: subscribed to new/#", 1, WAIT);
    agent.wait_log(
        "mqtt: unsubscribed from old/#, no longer configured",
        1,
        WAIT,
    );
    // The broker delivers one client's messages in order: the old topic's would come first.
    publish_all(mqtt.port(), &[uplink("old/x", 2), uplink("new/x", 3)]).await;
    assert_eq!(wait_record(&agent, 3), [1, 3]);
    assert_eq!(unsubscribes(), 1);
    // All on one connection of each start.
    assert_eq!(mqtt.logged(&format!("Sending CONNACK to {client} ")), 2);
}

/// A broker that grants QoS 0 only (mosquitto `max_qos 0`) is a problem that names the loss it
/// risks; its messages still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_granted_at_qos_0_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start_with(dir.path(), "log_type all\nmax_qos 0\n");
    let body = config(dir.path(), &mqtt, &[("low/#", "")]);
    let agent = Agent::start_with_stdout(dir.path(), &body);
    let granted = "hubgate_problems_total{kind=\"mqtt_qos0_granted\"}";
    agent.wait_metric(granted, WAIT, |v| v == 1);
    assert_eq!(agent.metric("hubgate_mqtt_subscribed"), 1);
    // The broker also refuses QoS 1 publishes, so this one goes at QoS 0.
    let (topic, payload) = uplink("low/x", 1);
    mosquitto_pub(mqtt.port(), 0, &topic, payload.as_bytes());
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    let log = agent.full_log();
    assert!(log.contains("granted only QoS 0 for low/#"), "{log}");
}

/// A broker that is down when hubgate stops: the stop ends the MQTT source's reconnect
/// backoff (up to `reconnect_max`) at once, rather than the pipeline waiting for it until it
/// gives up on the source ("a source did not stop within 5s").
#[test]
fn a_stop_while_the_broker_is_down_is_prompt() {
    // A "broker" that takes each connection and closes it at once: every attempt fails fast
    // and the backoff doubles (250 ms, 500 ms ... 8 s after the sixth).
    let listener = support::listener();
    let port = listener.local_addr().unwrap().port();
    let (tx, attempts) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[buffer]\npath = \"{}\"\n[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\nreconnect_max = \"30s\"\n",
        dir.path().join("buffer").display()
    );
    let mut agent = Agent::start(dir.path(), &body);
    for _ in 0..6 {
        attempts.recv_timeout(WAIT).expect("a connection attempt");
    }
    let asked = std::time::Instant::now();
    agent.terminate(WAIT);
    let took = asked.elapsed();
    let log = agent.full_log();
    assert!(
        !log.contains("did not stop"),
        "the stop took {took:?}\n{log}"
    );
}
