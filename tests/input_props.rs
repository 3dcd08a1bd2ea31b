//! Property tests: no input parser panics, whatever bytes arrive (MQTT JSON formats, GWMP).
//! Random bytes rarely get past a JSON parser, so valid documents are also mutated: bytes
//! replaced, truncated at any point.

use std::time::SystemTime;

use hubgate::source::{chirpstack, gwmp, tts};
use proptest::prelude::*;

const CASES: u32 = 20_000;

const CHIRPSTACK: &str = r#"{"time":"2024-05-01T10:00:00.123Z","deviceInfo":{"deviceName":"th","devEui":"58a0cb0000101234"},"fCnt":42,"fPort":103,"data":"CIwuLf////8=","rxInfo":[{"gatewayId":"g","rssi":-79,"snr":9.5}],"txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}}}"#;
const GATEWAY: &str = r#"{"phyPayload":"QNobASYABwACQCbInLhVIeM=","txInfo":{"frequency":868100000,"modulation":{"lora":{"bandwidth":125000,"spreadingFactor":7}}},"rxInfo":{"gatewayId":"0016c001ff10a235","gwTime":"2024-05-01T10:00:00.250Z","rssi":-36,"snr":10.5,"crcStatus":"CRC_OK"}}"#;
const TTS: &str = r#"{"end_device_ids":{"device_id":"th","dev_eui":"58A0CB0000101234"},"uplink_message":{"f_port":103,"f_cnt":42,"frm_payload":"CIwuLf////8=","rx_metadata":[{"gateway_ids":{"gateway_id":"gw"},"rssi":-71,"snr":8.5}],"settings":{"data_rate":{"lora":{"bandwidth":125000,"spreading_factor":9}},"frequency":"868300000"},"received_at":"2024-05-01T10:00:00.123Z"}}"#;
const RXPK: &str = r#"{"rxpk":[{"time":"2024-05-01T10:00:00.123456Z","tmst":1,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF9BW125","codr":"4/5","rssi":-61,"lsnr":7.2,"size":4,"data":"QNobASY="}],"stat":{"rxnb":2}}"#;

/// A valid document with some bytes replaced and possibly cut short.
fn mutated(doc: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = doc.len();
    (prop::collection::vec((0..len, any::<u8>()), 0..6), 0..=len).prop_map(move |(edits, cut)| {
        let mut d = doc.as_bytes().to_vec();
        for (i, b) in edits {
            d[i] = b;
        }
        d.truncate(cut.max(1));
        d
    })
}

fn inputs(doc: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..400), mutated(doc)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn chirpstack_uplinks_never_panic(d in inputs(CHIRPSTACK)) {
        let _ = chirpstack::parse(&d, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn chirpstack_gateway_frames_never_panic(d in inputs(GATEWAY)) {
        let _ = chirpstack::parse_gateway_frame(&d, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn tts_uplinks_never_panic(d in inputs(TTS)) {
        let _ = tts::parse(&d, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn gwmp_datagrams_never_panic(head in prop::collection::vec(any::<u8>(), 0..16), d in inputs(RXPK)) {
        let mut datagram = head;
        datagram.extend_from_slice(&d);
        if let Ok(gwmp::Packet::PushData { gateway, json, .. }) = gwmp::parse(&datagram) {
            let _ = gwmp::parse_push(json, &gateway, SystemTime::UNIX_EPOCH);
        }
        let _ = gwmp::parse_push(&d, &[0; 8], SystemTime::UNIX_EPOCH);
    }
}
