//! Semtech GWMP v2 (the UDP "packet forwarder" protocol of `lora_pkt_fwd`): the packets, the
//! acknowledgements it expects, and the `rxpk`/`stat` JSON.

use std::time::SystemTime;

use base64::Engine;
use serde::Deserialize;

use crate::uplink::{Radio, RadioFrame};

pub const PUSH_DATA: u8 = 0x00;
pub const PUSH_ACK: u8 = 0x01;
pub const PULL_DATA: u8 = 0x02;
pub const PULL_ACK: u8 = 0x04;
pub const TX_ACK: u8 = 0x05;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum GwmpError {
    #[error("datagram of {0} bytes is too short for GWMP")]
    Short(usize),
    #[error("unsupported GWMP protocol version {0}")]
    Version(u8),
    #[error("unknown GWMP packet type 0x{0:02x}")]
    Kind(u8),
    #[error("PUSH_DATA JSON: {0}")]
    Json(String),
}

/// One datagram from a gateway.
#[derive(Debug, PartialEq)]
pub enum Packet<'a> {
    PushData {
        /// The protocol version (1 or 2), which the acknowledgement must carry.
        version: u8,
        token: [u8; 2],
        gateway: [u8; 8],
        json: &'a [u8],
    },
    PullData {
        version: u8,
        token: [u8; 2],
        gateway: [u8; 8],
    },
    TxAck {
        token: [u8; 2],
    },
}

impl Packet<'_> {
    /// The acknowledgement `lora_pkt_fwd` waits for, if any, in the request's version: a
    /// forwarder ignores one of another version (`buff_ack[0] != PROTOCOL_VERSION`).
    pub fn ack(&self) -> Option<[u8; 4]> {
        match *self {
            Packet::PushData { version, token, .. } => {
                Some([version, token[0], token[1], PUSH_ACK])
            }
            Packet::PullData { version, token, .. } => {
                Some([version, token[0], token[1], PULL_ACK])
            }
            Packet::TxAck { .. } => None,
        }
    }
}

pub fn parse(d: &[u8]) -> Result<Packet<'_>, GwmpError> {
    if d.len() < 4 {
        return Err(GwmpError::Short(d.len()));
    }
    // Version 1 differs only in fields hubgate does not use; accept both.
    if d[0] != 1 && d[0] != 2 {
        return Err(GwmpError::Version(d[0]));
    }
    let token = [d[1], d[2]];
    let gateway = |d: &[u8]| -> Result<[u8; 8], GwmpError> {
        d.get(4..12)
            .and_then(|g| g.try_into().ok())
            .ok_or(GwmpError::Short(d.len()))
    };
    match d[3] {
        PUSH_DATA => Ok(Packet::PushData {
            version: d[0],
            token,
            gateway: gateway(d)?,
            json: &d[12..],
        }),
        PULL_DATA => Ok(Packet::PullData {
            version: d[0],
            token,
            gateway: gateway(d)?,
        }),
        TX_ACK => Ok(Packet::TxAck { token }),
        k => Err(GwmpError::Kind(k)),
    }
}

#[derive(Deserialize)]
struct Push {
    /// Taken apart one by one: an entry of the wrong shape does not spoil the others.
    #[serde(default)]
    rxpk: Vec<serde_json::Value>,
    stat: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Rxpk {
    /// Any JSON: a time of the wrong type costs the time (counted), not the frame.
    time: Option<serde_json::Value>,
    #[serde(default)]
    stat: i8,
    #[serde(default, deserialize_with = "super::de_meta_int")]
    chan: Option<u32>,
    #[serde(default, deserialize_with = "super::de_meta_float")]
    freq: Option<f64>,
    datr: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "super::de_rssi")]
    rssi: Option<i32>,
    #[serde(default, deserialize_with = "super::de_meta_float")]
    lsnr: Option<f64>,
    data: String,
}

/// What one PUSH_DATA carried.
#[derive(Debug, Default, PartialEq)]
pub struct PushContent {
    pub frames: Vec<RadioFrame>,
    /// Frames the concentrator flagged with a bad CRC (`stat` -1) or without data: skipped.
    pub bad_crc: usize,
    /// Frames whose `time` was not a time a record can carry: kept, with the receive time.
    pub bad_time: usize,
    /// Entries that are no `rxpk` object (a field of the wrong type or range): skipped.
    pub bad_rxpk: usize,
    /// The gateway's `stat` object, when present.
    pub stat: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Parse the JSON of a PUSH_DATA. One broken `rxpk` entry does not spoil the others.
pub fn parse_push(
    json: &[u8],
    gateway: &[u8; 8],
    received: SystemTime,
) -> Result<PushContent, GwmpError> {
    let push: Push = serde_json::from_slice(json).map_err(|e| GwmpError::Json(e.to_string()))?;
    let gateway_id = hex::encode(gateway);
    let mut out = PushContent {
        stat: push.stat,
        ..PushContent::default()
    };
    for p in push.rxpk {
        let Ok(p) = Rxpk::deserialize(p) else {
            out.bad_rxpk += 1;
            continue;
        };
        let phy = base64::engine::general_purpose::STANDARD.decode(p.data.as_bytes());
        let (Ok(phy), 1) = (phy, p.stat) else {
            out.bad_crc += 1;
            continue;
        };
        let (sf, bw) = p
            .datr
            .as_ref()
            .and_then(|d| d.as_str())
            .map(lora_datr)
            .unwrap_or((None, None));
        // The gateway's clock is not covered by the MIC; the frame is, so a bad time does not
        // cost the reading.
        let time = match p.time {
            None => received,
            Some(t) => match t.as_str().map(super::parse_time) {
                Some(Ok(t)) => t,
                _ => {
                    out.bad_time += 1;
                    received
                }
            },
        };
        out.frames.push(RadioFrame {
            phy,
            time,
            radio: Radio {
                rssi: p.rssi,
                snr: p.lsnr,
                gateway_id: Some(gateway_id.clone()),
                frequency: p.freq.map(|mhz| (mhz * 1e6).round() as u64),
                spreading_factor: sf,
                bandwidth: bw,
                channel: p.chan,
            },
        });
    }
    Ok(out)
}

/// `"SF7BW125"` -> (7, 125000).
fn lora_datr(d: &str) -> (Option<u8>, Option<u32>) {
    let Some(rest) = d.strip_prefix("SF") else {
        return (None, None);
    };
    let Some((sf, bw)) = rest.split_once("BW") else {
        return (None, None);
    };
    let bw = bw.parse::<u32>().ok().and_then(|k| k.checked_mul(1000));
    (sf.parse().ok(), bw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(json: &str) -> Vec<u8> {
        let mut d = vec![
            2, 0xab, 0xcd, PUSH_DATA, 0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1,
        ];
        d.extend_from_slice(json.as_bytes());
        d
    }

    #[test]
    fn push_data_is_acked_with_its_token() {
        let d = push("{}");
        let p = parse(&d).unwrap();
        assert_eq!(p.ack(), Some([2, 0xab, 0xcd, PUSH_ACK]));
        let Packet::PushData { gateway, json, .. } = p else {
            panic!("{p:?}")
        };
        assert_eq!(gateway, [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1]);
        assert_eq!(json, b"{}");
        let pull = [2, 1, 2, PULL_DATA, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(parse(&pull).unwrap().ack(), Some([2, 1, 2, PULL_ACK]));
        assert_eq!(parse(&[2, 1, 2, TX_ACK]).unwrap().ack(), None);
    }

    #[test]
    fn bad_datagrams_are_named() {
        assert_eq!(parse(&[2, 1]), Err(GwmpError::Short(2)));
        assert_eq!(parse(&[9, 1, 2, 0]), Err(GwmpError::Version(9)));
        assert_eq!(parse(&[2, 1, 2, 0x07]), Err(GwmpError::Kind(7)));
        assert_eq!(parse(&[2, 1, 2, PUSH_DATA, 1, 2]), Err(GwmpError::Short(6)));
    }

    #[test]
    fn rxpk_becomes_radio_frames_and_bad_crc_is_skipped() {
        let json = r#"{"rxpk":[
            {"time":"2024-05-01T10:00:00.123456Z","tmst":3512348611,"chan":2,"rfch":0,"freq":868.1,"stat":1,
             "modu":"LORA","datr":"SF9BW125","codr":"4/5","rssi":-61,"lsnr":7.2,"size":4,"data":"QNobASY="},
            {"tmst":1,"freq":868.3,"stat":-1,"modu":"LORA","datr":"SF7BW125","rssi":-120,"lsnr":-9,"size":2,"data":"AAA="}],
            "stat":{"time":"2024-05-01 10:00:00 GMT","rxnb":2,"rxok":1,"ackr":100.0}}"#;
        let c = parse_push(
            json.as_bytes(),
            &[0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1],
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(c.bad_crc, 1);
        assert_eq!(c.frames.len(), 1);
        let f = &c.frames[0];
        assert_eq!(f.phy, [0x40, 0xda, 0x1b, 0x01, 0x26]);
        assert_eq!(f.radio.rssi, Some(-61));
        assert_eq!(f.radio.snr, Some(7.2));
        assert_eq!(f.radio.frequency, Some(868_100_000));
        assert_eq!(
            (f.radio.spreading_factor, f.radio.bandwidth),
            (Some(9), Some(125_000))
        );
        assert_eq!(f.radio.gateway_id.as_deref(), Some("b827ebfffe000001"));
        let ms = f
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(ms, 1_714_557_600_123);
        assert_eq!(c.stat.unwrap()["rxok"], 1);
    }

    /// An entry of the wrong shape (data not a string) is counted and skipped; the good one
    /// beside it is kept (the whole datagram used to be refused). Radio metadata that does not
    /// fit (RSSI past i32) is left out; the frame is kept.
    #[test]
    fn a_broken_rxpk_entry_does_not_spoil_the_others() {
        let json = r#"{"rxpk":[{"stat":1,"rssi":99999999999,"data":"QNobASY="},{"stat":1,"data":7},
            {"stat":1,"rssi":-61,"data":"QNobASY="}]}"#;
        let c = parse_push(json.as_bytes(), &[0; 8], SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!((c.frames.len(), c.bad_rxpk), (2, 1));
        assert_eq!(
            (c.frames[0].radio.rssi, c.frames[1].radio.rssi),
            (None, Some(-61))
        );
    }

    /// A bandwidth past u32 in Hz is no bandwidth (it used to wrap, or panic in debug builds).
    #[test]
    fn datr_bandwidth_overflow_is_none() {
        assert_eq!(lora_datr("SF7BW125"), (Some(7), Some(125_000)));
        assert_eq!(lora_datr("SF7BW4294968"), (Some(7), None));
        assert_eq!(lora_datr("SF12BW4294967"), (Some(12), Some(4_294_967_000)));
        assert_eq!(lora_datr("SF7BW-1"), (Some(7), None));
    }

    /// A `time` a record cannot carry (it used to panic when the record was built), or one
    /// that is not a string, is counted and replaced by the receive time; the frame is kept.
    #[test]
    fn bad_rxpk_time_is_counted_and_the_receive_time_used() {
        let received = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for t in [
            "\"9999-12-31T23:59:59-23:59\"",
            "\"1969-12-31T23:59:59Z\"",
            "\"soon\"",
            "1714557600",
            "{}",
        ] {
            let json = format!(r#"{{"rxpk":[{{"time":{t},"stat":1,"data":"QNobASY="}}]}}"#);
            let c = parse_push(json.as_bytes(), &[0; 8], received).unwrap();
            assert_eq!((c.frames.len(), c.bad_time), (1, 1), "{t}");
            assert_eq!(c.frames[0].time, received, "{t}");
        }
    }
}
