//! The Semtech UDP packet forwarder source, fed real GWMP datagrams over loopback.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use support::agent::Agent;
use support::free_port;

const WAIT: Duration = Duration::from_secs(30);
const GATEWAY: [u8; 8] = [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0x00, 0x00, 0x01];

fn datagram(token: u16, kind: u8, json: &str) -> Vec<u8> {
    let mut d = vec![2, (token >> 8) as u8, token as u8, kind];
    d.extend_from_slice(&GATEWAY);
    d.extend_from_slice(json.as_bytes());
    d
}

/// Send one datagram and return the forwarder's answer.
fn exchange(sock: &UdpSocket, d: &[u8]) -> Vec<u8> {
    sock.send(d).unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("an acknowledgement");
    buf[..n].to_vec()
}

/// JSON records hubgate printed (stdout shares the log file with stderr).
fn printed(agent: &Agent, dir: &std::path::Path) -> Vec<serde_json::Value> {
    let _ = agent;
    std::fs::read_to_string(dir.join("hubgate.log"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("{\"event_type\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn push_and_pull_are_acknowledged_and_status_becomes_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{port}\"\ngateway_status = true\n[sink]\ntype = \"stdout\"\n",
        dir.path().join("buffer").display()
    );
    let agent = Agent::start(dir.path(), &config);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.connect(("127.0.0.1", port)).unwrap();

    assert_eq!(
        exchange(&sock, &datagram(0x1234, 0x02, "")),
        [2, 0x12, 0x34, 0x04],
        "PULL_ACK"
    );
    let stat = r#"{"stat":{"time":"2024-05-01 10:00:00 GMT","lati":46.24,"long":3.25,"rxnb":7,"rxok":5,"rxfw":5,"ackr":100.0,"dwnb":0,"txnb":0}}"#;
    assert_eq!(
        exchange(&sock, &datagram(0xbeef, 0x00, stat)),
        [2, 0xbe, 0xef, 0x01],
        "PUSH_ACK"
    );
    // An unknown packet type is counted and not answered; a PUSH_DATA with broken JSON is
    // acknowledged (resending it would not mend it) and counted. The source keeps going.
    sock.send(&[2, 0, 1, 0x09]).unwrap();
    assert_eq!(
        exchange(&sock, &datagram(7, 0x00, "{not json")),
        [2, 0, 7, 0x01]
    );
    assert_eq!(
        exchange(&sock, &datagram(0x0001, 0x00, "{}")),
        [2, 0x00, 0x01, 0x01]
    );

    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"gwmp_bad_packet\"}"),
        1
    );
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"gwmp_bad_json\"}"),
        1
    );
    let records = printed(&agent, dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["recType"], "io.microshare.gateway.unpacked");
    assert_eq!(r["obj"]["data"]["device_health"]["id"], "b827ebfffe000001");
    assert_eq!(r["obj"]["data"]["stat"]["rxok"], 5);
}
