//! MQTT sessions and subscriptions against a real mosquitto: two sources on one broker each
//! have their own session.

mod support;

use std::path::Path;

use support::agent::{chirpstack_uplink, publish_all, tbhh100, Agent, TH, WAIT};
use support::Mosquitto;

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
