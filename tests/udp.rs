//! The Semtech UDP packet forwarder source, fed real GWMP datagrams over loopback.

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use support::agent::Agent;
use support::free_udp_port;
use support::gwmp::datagram;
use support::lorawan::{device, phy, phy_of, PHY};

const WAIT: Duration = Duration::from_secs(30);

/// hubgate with a UDP source on a free loopback port (`source`: more keys for it; `devices`:
/// `[[device]]` sections) and the stdout sink, listening; and a socket connected to it.
fn start(dir: &Path, source: &str, devices: &str) -> (Agent, UdpSocket) {
    start_buffering_in(dir, &dir.join("buffer"), source, devices)
}

/// [`start`] with the buffer at `buffer`.
fn start_buffering_in(
    dir: &Path,
    buffer: &Path,
    source: &str,
    devices: &str,
) -> (Agent, UdpSocket) {
    let port = free_udp_port();
    let config = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{port}\"\n{source}{devices}[sink]\ntype = \"stdout\"\n",
        buffer.display()
    );
    let agent = Agent::start(dir, &config);
    agent.wait_log("packet forwarder source on", 1, WAIT);
    let sock = support::udp_socket();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.connect(("127.0.0.1", port)).unwrap();
    (agent, sock)
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
    let (agent, sock) = start(dir.path(), "gateway_status = true\n", "");

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
    // The kernel's drops on the source's socket are exposed (none here).
    let listen = format!("127.0.0.1:{}", sock.peer_addr().unwrap().port());
    let drops = format!("hubgate_udp_kernel_drops_total{{listen=\"{listen}\"}}");
    assert!(agent.has_metric(&drops), "{drops}");
    assert_eq!(agent.metric(&drops), 0);
    let records = printed(&agent, dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["recType"], "io.microshare.gateway.unpacked");
    assert_eq!(r["obj"]["data"]["device_health"]["id"], "b827ebfffe000001");
    assert_eq!(r["obj"]["data"]["stat"]["rxok"], 5);
}

fn rxpk(gateway_rssi: i32, data: &str) -> String {
    format!(
        r#"{{"time":"2024-05-01T10:00:00.123456Z","tmst":3512348611,"chan":2,"rfch":0,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":{gateway_rssi},"lsnr":7.2,"size":17,"data":"{data}"}}"#
    )
}

#[test]
fn radio_frames_are_verified_decrypted_decoded_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = start(dir.path(), "", &device());

    // The same uplink heard twice in one PUSH_DATA, then once more in another.
    let push = format!(r#"{{"rxpk":[{},{}]}}"#, rxpk(-61, PHY), rxpk(-90, PHY));
    assert_eq!(exchange(&sock, &datagram(1, 0x00, &push)), [2, 0, 1, 0x01]);
    assert_eq!(
        exchange(
            &sock,
            &datagram(2, 0x00, &format!(r#"{{"rxpk":[{}]}}"#, rxpk(-70, PHY)))
        ),
        [2, 0, 2, 0x01]
    );
    // A damaged MIC, and a frame of a device that is not ours, each heard twice: their
    // copies count as they would in a later datagram, not as duplicates.
    let mut bad_mic = base64_decode(PHY);
    *bad_mic.last_mut().unwrap() ^= 0x01;
    let mut foreign = base64_decode(PHY);
    foreign[1] ^= 0xff;
    let (bad_mic, foreign) = (base64_encode(&bad_mic), base64_encode(&foreign));
    let push = format!(
        r#"{{"rxpk":[{},{},{},{}]}}"#,
        rxpk(-61, &bad_mic),
        rxpk(-61, &foreign),
        rxpk(-70, &foreign),
        rxpk(-70, &bad_mic)
    );
    assert_eq!(exchange(&sock, &datagram(3, 0x00, &push)), [2, 0, 3, 0x01]);

    // The copies in a datagram are one frame by then. A frame is counted received before it
    // is decoded: the decoder's counts are waited for, not read once.
    agent.wait_metric("hubgate_received_total", WAIT, |v| v == 4);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    for (counter, n) in [
        ("hubgate_duplicates_total", 2),
        ("hubgate_problems_total{kind=\"lorawan_error\"}", 2),
        ("hubgate_problems_total{kind=\"not_ours\"}", 2),
    ] {
        agent.wait_metric(counter, WAIT, |v| v >= n);
    }
    assert_eq!(agent.metric("hubgate_duplicates_total"), 2);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"lorawan_error\"}"),
        2
    );
    assert_eq!(agent.metric("hubgate_problems_total{kind=\"not_ours\"}"), 2);
    let records = printed(&agent, dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    let data = &records[0]["obj"]["data"];
    assert_eq!(records[0]["recType"], "io.microshare.environment.unpacked");
    assert_eq!(data["temperature"][0]["value"], 27.2);
    assert_eq!(data["temperature"][0]["context_id"], "3");
    assert_eq!(data["meta"]["iot"]["device_id"], "A8-40-41-00-00-00-60-01");
    assert_eq!(data["meta"]["iot"]["fcnt_up"], 7);
    assert_eq!(data["meta"]["iot"]["fport"], 2);
    assert_eq!(data["meta"]["iot"]["payload"], "03670110");
    assert_eq!(data["meta"]["iot"]["gateway_id"], "b827ebfffe000001");
    assert_eq!(data["meta"]["iot"]["rssi"], -61);
}

/// A value the JSON parser refuses (a number past f64 in a `stat`, an entry nested past 128)
/// or a byte that is not UTF-8 costs only the entry or the `stat` it is in, counted: the good
/// frames of the datagram are taken (they used to go with it, counted as `gwmp_bad_json`).
#[test]
fn one_unreadable_value_costs_only_itself_not_the_datagrams_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = start(dir.path(), "gateway_status = true\n", &device());
    let deep = format!("{}{}", "[".repeat(130), "]".repeat(130));
    let nine = rxpk(-61, &phy(9));
    let jsons: Vec<Vec<u8>> = vec![
        format!(
            r#"{{"rxpk":[{}],"stat":{{"rxnb":1,"temp":1e400}}}}"#,
            rxpk(-61, &phy(7))
        )
        .into(),
        format!(
            r#"{{"rxpk":[{},{{"stat":1,"data":"AAA=","x":{deep}}}]}}"#,
            rxpk(-61, &phy(8))
        )
        .into(),
        // Latin-1 "été" in a field hubgate does not read, in the frame's own entry.
        [
            br#"{"rxpk":[{"desc":""#.as_slice(),
            b"\xe9t\xe9\",",
            &nine.as_bytes()[1..],
            b"]}",
        ]
        .concat(),
        // The barrier: the source and the forwarder keep order.
        format!(r#"{{"rxpk":[{}]}}"#, rxpk(-61, &phy(10))).into(),
    ];
    for (token, json) in (1..).zip(jsons) {
        let mut d = datagram(token, 0x00, "");
        d.extend_from_slice(&json);
        assert_eq!(exchange(&sock, &d), [2, 0, token as u8, 0x01]);
    }
    agent.wait_log("\"fcnt_up\":10", 1, WAIT);
    let fcnts: Vec<_> = printed(&agent, dir.path())
        .iter()
        .map(|r| r["obj"]["data"]["meta"]["iot"]["fcnt_up"].clone())
        .collect();
    let problem = |kind: &str| agent.metric(&format!("hubgate_problems_total{{kind=\"{kind}\"}}"));
    assert_eq!(
        (fcnts, problem("gwmp_bad_json")),
        (vec![7.into(), 8.into(), 9.into(), 10.into()], 0),
        "good frames lost beside an unreadable value"
    );
    assert_eq!((problem("gwmp_bad_stat"), problem("gwmp_bad_rxpk")), (1, 1));
}

/// A frame heard more than once in one datagram is recorded with its best reception (highest
/// RSSI, then SNR), whatever the order of the entries (the first used to stand for it). A copy
/// in a later datagram, from another gateway too, is a duplicate, however strong: the record
/// went with the first datagram's best, as docs/records.md says (waiting for later copies
/// would hold every uplink back).
#[test]
fn the_best_copy_in_a_datagram_is_recorded_and_a_later_copy_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = start(dir.path(), "", &device());
    let copy = |rssi, lsnr: f64| rxpk(rssi, PHY).replace("7.2", &lsnr.to_string());
    let mut far = datagram(
        1,
        0x00,
        &format!(
            r#"{{"rxpk":[{},{},{}]}}"#,
            copy(-118, 7.2),
            copy(-100, 1.5),
            copy(-100, 5.5)
        ),
    );
    far[4..12].copy_from_slice(&[0xb8, 0x27, 0xeb, 0xff, 0xfe, 0x00, 0x00, 0x02]);
    let near = format!(r#"{{"rxpk":[{}]}}"#, copy(-45, 9.5));
    // The barrier: the source and the forwarder keep order.
    let next = format!(r#"{{"rxpk":[{}]}}"#, rxpk(-61, &phy(8)));
    assert_eq!(exchange(&sock, &far), [2, 0, 1, 0x01]);
    assert_eq!(exchange(&sock, &datagram(2, 0x00, &near)), [2, 0, 2, 0x01]);
    assert_eq!(exchange(&sock, &datagram(3, 0x00, &next)), [2, 0, 3, 0x01]);
    agent.wait_log("\"fcnt_up\":8", 1, WAIT);
    let heard: Vec<_> = printed(&agent, dir.path())
        .iter()
        .map(|r| {
            let iot = &r["obj"]["data"]["meta"]["iot"];
            (
                iot["fcnt_up"].clone(),
                iot["gateway_id"].clone(),
                iot["rssi"].clone(),
                iot["snr"].clone(),
            )
        })
        .collect();
    assert_eq!(
        heard,
        [
            (
                7.into(),
                "b827ebfffe000002".into(),
                (-100).into(),
                5.5.into()
            ),
            (
                8.into(),
                "b827ebfffe000001".into(),
                (-61).into(),
                7.2.into()
            )
        ]
    );
    assert_eq!(agent.metric("hubgate_duplicates_total"), 3);
}

/// The frame counter outlives the process: a frame heard before a SIGKILL and sent again
/// after the restart (a replay) is rejected and counted, not delivered twice.
#[test]
fn a_frame_replayed_after_a_restart_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, sock) = start(dir.path(), "", &device());
    let push = format!(r#"{{"rxpk":[{}]}}"#, rxpk(-61, PHY));
    assert_eq!(exchange(&sock, &datagram(1, 0x00, &push)), [2, 0, 1, 0x01]);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    // Its counter, set before the record went out, is durable within a second: a sync
    // counted before it was set (the clock's reading at the start) would not do.
    agent.wait_metric("hubgate_buffer_state_unsynced", WAIT, |v| v == 0);
    agent.kill();

    agent.start_again();
    agent.wait_log("packet forwarder source on", 2, WAIT);
    assert_eq!(exchange(&sock, &datagram(2, 0x00, &push)), [2, 0, 2, 0x01]);
    agent.wait_metric("hubgate_received_total", WAIT, |v| v == 1);
    agent.wait_metric("hubgate_duplicates_total", WAIT, |v| v == 1);
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);
    assert_eq!(
        printed(&agent, dir.path()).len(),
        1,
        "delivered once in all"
    );
}

/// The buffer's card turns read-only (a failed write, under `errors=remount-ro`): the run
/// ends at the first flush of the frame counters, as what was written cannot be trusted to
/// be on the card, and the start after it (systemd's) runs without the buffer: radio frames
/// go on to the sink, where each start used to stop again and every frame was lost until
/// the next boot. The device's counter crosses 2^20 meanwhile: the starts without the buffer
/// follow it from the counter kept beside sled, where its frames used to fail the MIC check.
#[test]
fn radio_frames_go_on_when_the_buffers_card_turns_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let Some(card) = support::card::Card::mount_if_root(dir.path()) else {
        return;
    };
    let buffer = card.path().join("buffer");
    let (mut agent, sock) = start_buffering_in(dir.path(), &buffer, "", &device());
    let push = |token: u16, fcnt| {
        let push = format!(r#"{{"rxpk":[{}]}}"#, rxpk(-61, &phy(fcnt)));
        let [hi, lo] = token.to_be_bytes();
        assert_eq!(
            exchange(&sock, &datagram(token, 0x00, &push)),
            [2, hi, lo, 0x01]
        );
    };
    // In the last upper half a session's first search tries, durable: kept beside sled too.
    push(1, 0x000F_FFFE);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    agent.wait_metric("hubgate_buffer_state_unsynced", WAIT, |v| v == 0);

    card.go_read_only();
    push(2, 0x000F_FFFF);
    let status = agent.wait_exit(WAIT, "a flush of the counters on a read-only card");
    assert!(!status.success(), "{status}:\n{}", agent.logs());
    agent.start_again();
    agent.wait_log("packet forwarder source on", 2, WAIT);
    let read_only = "hubgate_problems_total{kind=\"buffer_read_only\"}";
    assert_eq!(agent.metric(read_only), 1);
    // Past 2^20, where the first search does not look: found from the kept counter.
    push(3, 0x0010_0001);
    push(4, 0x0010_0002);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 2);
    // Started again without the buffer: that run's counter is gone, the card's still finds
    // the device.
    agent.kill();
    agent.start_again();
    agent.wait_log("packet forwarder source on", 3, WAIT);
    push(5, 0x0010_0003);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    let refused = "hubgate_problems_total{kind=\"lorawan_error\"}";
    assert_eq!(agent.metric(refused), 0);
    let fcnts: Vec<_> = printed(&agent, dir.path())
        .iter()
        .map(|r| r["obj"]["data"]["meta"]["iot"]["fcnt_up"].clone())
        .collect();
    assert_eq!(
        fcnts,
        [
            0x000F_FFFE,
            0x000F_FFFF,
            0x0010_0001,
            0x0010_0002,
            0x0010_0003
        ]
    );
    assert!(agent.terminate(WAIT).success(), "{}", agent.logs());
}

/// A device with `resets_fcnt` that restarts its counter is accepted, across restarts of
/// hubgate too: the frames accepted are kept with the counter, with when, so the same frame
/// heard again soon after the next restart (a second gateway's late copy) is a copy, not
/// another restart that would make its record again. Another frame at that counter after the
/// restart (a device that sends FCnt 0 once per power-up) is a reading, not a copy.
#[test]
fn a_counter_restart_is_kept_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let devices = format!("{}resets_fcnt = true\n", device());
    let (mut agent, sock) = start(dir.path(), "", &devices);
    let push = |phy: &str| format!(r#"{{"rxpk":[{}]}}"#, rxpk(-61, phy));
    assert_eq!(phy(7), PHY);
    let mut token = 0;
    let mut send = |phy: &str| {
        token += 1;
        let answer = exchange(&sock, &datagram(token, 0x00, &push(phy)));
        assert_eq!(answer, [2, 0, token as u8, 0x01]);
    };
    // Each run: a frame delivered, then its counter and copies durable, then SIGKILL.
    for (run, fcnt) in [(1, 5000), (2, 0)] {
        send(&phy(fcnt));
        agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
        agent.wait_metric("hubgate_buffer_state_unsynced", WAIT, |v| v == 0);
        agent.kill();
        agent.start_again();
        agent.wait_log("packet forwarder source on", run + 1, WAIT);
    }
    send(&phy(0));
    agent.wait_metric("hubgate_received_total", WAIT, |v| v == 1);
    agent.wait_metric("hubgate_duplicates_total", WAIT, |v| v == 1);
    assert_eq!(agent.metric("hubgate_delivered_total"), 0);
    // Powered up again: FCnt 0 with another reading (27.3 °C), so another MIC.
    send(&phy_of(0, &[0x03, 0x67, 0x01, 0x11]));
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    assert_eq!(agent.metric("hubgate_duplicates_total"), 1);
    let printed: Vec<_> = printed(&agent, dir.path())
        .iter()
        .map(|r| {
            let data = &r["obj"]["data"];
            let fcnt = data["meta"]["iot"]["fcnt_up"].clone();
            (fcnt, data["temperature"][0]["value"].clone())
        })
        .collect();
    assert_eq!(
        printed,
        [
            (5000.into(), 27.2.into()),
            (0.into(), 27.2.into()),
            (0.into(), 27.3.into())
        ]
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A port already taken stops the start with one clear line, instead of an agent running
/// without its packet forwarder source.
#[test]
fn a_taken_port_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = support::udp_socket();
    let addr = taken.local_addr().unwrap();
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n[metrics]\nlisten = \"off\"\n[[source]]\ntype = \"udp\"\nlisten = \"{addr}\"\n[sink]\ntype = \"stdout\"\n",
            dir.path().join("buffer").display()
        ),
    )
    .unwrap();
    let o = support::output_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "off"),
        WAIT,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("udp source: cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!dir.path().join("buffer").exists(), "nothing started");
}

/// With `gateways = [...]`, datagrams of other gateways are neither answered nor used
/// (counted); the listed gateway is served as before.
#[test]
fn only_listed_gateways_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = start(
        dir.path(),
        "gateway_status = true\ngateways = [\"B827EBFFFE000001\"]\n",
        "",
    );
    let stat = r#"{"stat":{"rxnb":1}}"#;
    let mut stranger = datagram(0x0bad, 0x00, stat);
    stranger[4..12].copy_from_slice(&[9; 8]);
    sock.send(&stranger).unwrap();
    // The next answer is the listed gateway's: the stranger got none.
    assert_eq!(
        exchange(&sock, &datagram(0x0001, 0x00, stat)),
        [2, 0x00, 0x01, 0x01]
    );
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    assert_eq!(
        agent.metric("hubgate_problems_total{kind=\"gwmp_unknown_gateway\"}"),
        1
    );
    let records = printed(&agent, dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0]["obj"]["data"]["device_health"]["id"],
        "b827ebfffe000001"
    );
}

/// Each gateway of the source's list has a status budget of its own: a flood of `stat`
/// reports under one listed EUI (a spoofer on the LAN, a forwarder with a very short
/// `stat_interval`) is limited, counted, and the other gateway's report still makes its
/// record.
#[test]
fn a_stat_flood_under_one_listed_gateway_leaves_the_others_status() {
    const FLOOD: u16 = 40;
    let other = "b827ebfffe000002";
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = start(
        dir.path(),
        "gateway_status = true\ngateways = [\"B827EBFFFE000001\", \"B827EBFFFE000002\"]\n",
        "",
    );
    let stat = r#"{"stat":{"rxnb":1}}"#;
    let start = std::time::Instant::now();
    for token in 0..FLOOD {
        assert_eq!(
            exchange(&sock, &datagram(token, 0x00, stat)),
            [2, (token >> 8) as u8, token as u8, 0x01]
        );
    }
    let mut last = datagram(FLOOD, 0x00, stat);
    last[4..12].copy_from_slice(&hex::decode(other).unwrap());
    assert_eq!(exchange(&sock, &last)[3], 0x01);
    let elapsed = start.elapsed();
    // The other gateway's report, the last the source judged, makes its record.
    agent.wait_log(
        &format!("\"device_health\":{{\"id\":\"{other}\"}}"),
        1,
        WAIT,
    );
    // The flooded gateway's: 16 at once, and one more for each 2 s the flood took. (Its
    // records made in the same millisecond have the same id: they are one record.)
    let limited = agent.metric("hubgate_problems_total{kind=\"gwmp_stat_limited\"}");
    let taken = u64::from(FLOOD) - limited;
    assert!(
        (16..=17 + elapsed.as_secs() / 2).contains(&taken),
        "{taken} reports of the flooded gateway taken in {elapsed:?}"
    );
}

/// Status reports of one gateway that arrive together (sent back to back, so that several
/// are read in one millisecond) each make a record with an id of its own: none is taken for
/// a copy of another, though their ids are made from the gateway and the receive time in ms.
/// (The source's unit test `status_reports_of_one_gateway_in_one_millisecond_get_ids_of_their_own`
/// shows it with reports of one millisecond for certain.)
#[test]
fn status_reports_that_arrive_together_each_make_a_record() {
    const N: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = start(dir.path(), "gateway_status = true\n", "");
    for n in 0..N {
        let stat = format!(r#"{{"stat":{{"rxnb":{n}}}}}"#);
        sock.send(&datagram(n as u16, 0x00, &stat)).unwrap();
    }
    let mut buf = [0u8; 64];
    for _ in 0..N {
        let got = sock.recv(&mut buf).expect("an acknowledgement");
        assert_eq!(buf[3], 0x01, "PUSH_ACK: {:?}", &buf[..got]);
    }
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == N);
    assert_eq!(agent.metric("hubgate_duplicates_total"), 0);
    let records = printed(&agent, dir.path());
    let rxnb: Vec<u64> = records
        .iter()
        .map(|r| r["obj"]["data"]["stat"]["rxnb"].as_u64().expect("rxnb"))
        .collect();
    assert_eq!(rxnb, (0..N).collect::<Vec<_>>());
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len() as u64, N, "{records:?}");
}
