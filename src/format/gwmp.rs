//! Semtech GWMP v2 (the UDP "packet forwarder" protocol of `lora_pkt_fwd`): the packets, the
//! acknowledgements it expects, and the `rxpk`/`stat` JSON.

use std::collections::hash_map::{Entry, HashMap};
use std::time::SystemTime;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::uplink::{FrameTime, Radio, RadioFrame};

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

/// The top level of a PUSH_DATA with its parts kept raw, each read on its own afterwards: a
/// value the parser refuses (a number past f64, nesting past 128) costs only the entry or the
/// `stat` it is in. Skipping a raw value has no depth limit and computes no numbers. A key
/// given twice keeps the last, as Go's encoding/json does (serde's derive refuses it).
#[derive(Default)]
struct Push<'a> {
    rxpk: Option<&'a RawValue>,
    stat: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Push<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Rxpk,
            Stat,
            #[serde(other)]
            Other,
        }
        struct Top;
        impl<'de> serde::de::Visitor<'de> for Top {
            type Value = Push<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a PUSH_DATA object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Push<'de>, A::Error> {
                let mut push = Push::default();
                while let Some(key) = m.next_key()? {
                    match key {
                        Key::Rxpk => push.rxpk = m.next_value()?,
                        Key::Stat => push.stat = m.next_value()?,
                        Key::Other => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(push)
            }
        }
        d.deserialize_map(Top)
    }
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
    /// Frames the concentrator did not flag with a good CRC (`stat` -1, or 0: no CRC): skipped.
    pub bad_crc: usize,
    /// Frames whose `time` was not a time a record can carry, nor any copy's: kept, with the
    /// receive time. One per frame, however many of its copies had a bad time.
    pub bad_time: usize,
    /// Entries that are no readable `rxpk` object (a field of the wrong type or range, a
    /// value the parser refuses, `data` that is not base64), or an `rxpk` that is not an
    /// array: skipped.
    pub bad_rxpk: usize,
    /// The gateway's `stat` object, when present and asked for.
    pub stat: Option<serde_json::Map<String, serde_json::Value>>,
    /// Why the `stat` asked for could not be read, when it could not: it is then left out.
    pub bad_stat: Option<String>,
}

/// Parse the JSON of a PUSH_DATA; its `stat` only when `with_stat` (one hubgate cannot read
/// then costs nothing when unused). An `rxpk` entry or a `stat` hubgate cannot read costs only
/// itself: only a datagram whose top level cannot be read at all is refused.
pub fn parse_push(
    json: &[u8],
    gateway: &[u8; 8],
    received: SystemTime,
    with_stat: bool,
) -> Result<PushContent, GwmpError> {
    // Bytes that are not UTF-8 (in a free-text field of some forwarder) read as U+FFFD, as Go's
    // encoding/json reads them, instead of costing the datagram.
    let json = String::from_utf8_lossy(json);
    let push: Push = serde_json::from_str(&json).map_err(|e| GwmpError::Json(e.to_string()))?;
    let gateway_id = hex::encode(gateway);
    let mut out = PushContent::default();
    if let (true, Some(stat)) = (with_stat, push.stat) {
        match serde_json::from_str(stat.get()) {
            Ok(stat) => out.stat = Some(stat),
            Err(e) => out.bad_stat = Some(e.to_string()),
        }
    }
    let entries = match push
        .rxpk
        .map(|r| serde_json::from_str::<Vec<&RawValue>>(r.get()))
    {
        None => Vec::new(),
        Some(Ok(entries)) => entries,
        Some(Err(_)) => {
            out.bad_rxpk += 1;
            Vec::new()
        }
    };
    // Where each frame is in `out.frames`, for its copies.
    let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
    // Per frame: the first valid time among its copies, and whether a copy's time was bad.
    let mut times: Vec<(Option<SystemTime>, bool)> = Vec::new();
    for p in entries {
        // Through a `Value`: a key given twice in an entry keeps the last.
        let Ok(p) = serde_json::from_str::<serde_json::Value>(p.get()).and_then(Rxpk::deserialize)
        else {
            out.bad_rxpk += 1;
            continue;
        };
        if p.stat != 1 {
            out.bad_crc += 1;
            continue;
        }
        let Ok(phy) = base64::engine::general_purpose::STANDARD.decode(p.data.as_bytes()) else {
            out.bad_rxpk += 1;
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
        let time = p.time.map(|t| match t.as_str().map(super::parse_time) {
            Some(Ok(t)) => Some(t),
            _ => None,
        });
        let frame = RadioFrame {
            phy,
            time: received.into(),
            radio: Radio {
                rssi: p.rssi,
                snr: p.lsnr,
                gateway_id: Some(gateway_id.clone()),
                frequency: p.freq.map(|mhz| (mhz * 1e6).round() as u64),
                spreading_factor: sf,
                bandwidth: bw,
                channel: p.chan,
                gateways: Vec::new(),
            },
            copies: 0,
        };
        // A copy stands for the frame if it was heard better: the record carries the best
        // reception's metadata, as for a network server's rxInfo. Not its time: a copy whose
        // time was bad (or missing) must not cost the GPS time another copy carried.
        let i = match at.entry(frame.phy.clone()) {
            Entry::Vacant(e) => {
                e.insert(out.frames.len());
                out.frames.push(frame);
                times.push((None, false));
                out.frames.len() - 1
            }
            Entry::Occupied(e) => {
                let kept = &mut out.frames[*e.get()];
                let copies = kept.copies + 1;
                if heard_better(&frame.radio, &kept.radio) {
                    *kept = frame;
                }
                kept.copies = copies;
                *e.get()
            }
        };
        let (first_valid, bad) = &mut times[i];
        match time {
            Some(Some(t)) => *first_valid = first_valid.or(Some(t)),
            Some(None) => *bad = true,
            None => {}
        }
    }
    for (frame, (valid, bad)) in out.frames.iter_mut().zip(times) {
        match valid {
            Some(t) => {
                frame.time = FrameTime { time: t, own: true };
            }
            None if bad => out.bad_time += 1,
            None => {}
        }
    }
    Ok(out)
}

/// Whether `a` is a better reception than `b`: a higher RSSI, then a higher SNR (a missing
/// one is the worst).
fn heard_better(a: &Radio, b: &Radio) -> bool {
    let snr = |r: &Radio| r.snr.unwrap_or(f64::NEG_INFINITY);
    a.rssi.cmp(&b.rssi).then(snr(a).total_cmp(&snr(b))).is_gt()
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

    /// A frame with a good CRC whose `data` is not base64 is an entry hubgate cannot read,
    /// not a bad CRC: the log line must not send the installer to the antenna.
    #[test]
    fn data_that_is_not_base64_is_a_bad_rxpk_not_a_bad_crc() {
        let json = r#"{"rxpk":[
            {"tmst":1,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","rssi":-60,"lsnr":9,"size":4,"data":"not base64!"},
            {"tmst":2,"freq":868.1,"stat":0,"modu":"LORA","datr":"SF7BW125","rssi":-60,"lsnr":9,"size":4,"data":"QNobASY="},
            {"tmst":3,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","rssi":-60,"lsnr":9,"size":5,"data":"QNobASY="}]}"#;
        let c = parse_push(json.as_bytes(), &[0; 8], SystemTime::UNIX_EPOCH, false).unwrap();
        assert_eq!((c.bad_rxpk, c.bad_crc, c.frames.len()), (1, 1, 1));
        assert_eq!(c.frames[0].phy, [0x40, 0xda, 0x1b, 0x01, 0x26]);
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
            true,
        )
        .unwrap();
        assert_eq!((c.bad_crc, c.bad_rxpk), (1, 0));
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
        let json = r#"{"rxpk":[{"stat":1,"rssi":99999999999,"data":"AAA="},{"stat":1,"data":7},
            {"stat":1,"rssi":-61,"data":"QNobASY="}]}"#;
        let c = parse_push(json.as_bytes(), &[0; 8], SystemTime::UNIX_EPOCH, true).unwrap();
        assert_eq!((c.frames.len(), c.bad_rxpk), (2, 1));
        assert_eq!(
            (c.frames[0].radio.rssi, c.frames[1].radio.rssi),
            (None, Some(-61))
        );
    }

    /// A value the JSON parser refuses (a number past f64, nesting past 128), a byte that is
    /// not UTF-8, a top-level key given twice or a part of the wrong type costs only the entry
    /// or the `stat` it is in: the good frames beside it are taken (the whole datagram used to
    /// be refused). Only a top level that cannot be read at all refuses the datagram.
    #[test]
    fn one_unreadable_value_costs_only_its_entry_or_stat() {
        const GOOD: &str = r#"{"stat":1,"rssi":-61,"data":"QNobASY="}"#;
        let deep = format!("{}{}", "[".repeat(130), "]".repeat(130));
        let read = |json: &[u8], with_stat: bool| {
            parse_push(json, &[0; 8], SystemTime::UNIX_EPOCH, with_stat).map(|c| {
                let rssi: Vec<_> = c.frames.iter().map(|f| f.radio.rssi).collect();
                (rssi, c.bad_rxpk, c.stat.is_some(), c.bad_stat.is_some())
            })
        };
        /// (datagram, stat asked for, (good frames, bad entries, a stat, an unreadable stat))
        type Case = (Vec<u8>, bool, (usize, usize, bool, bool));
        let cases: Vec<Case> = vec![
            (
                format!(r#"{{"rxpk":[{GOOD}],"stat":{{"rxnb":1,"temp":1e400}}}}"#).into(),
                true,
                (1, 0, false, true),
            ),
            (
                format!(r#"{{"rxpk":[{GOOD}],"stat":"up"}}"#).into(),
                true,
                (1, 0, false, true),
            ),
            (
                format!(r#"{{"rxpk":[{GOOD}],"stat":"up"}}"#).into(),
                false,
                (1, 0, false, false),
            ),
            (
                format!(r#"{{"rxpk":[{GOOD},{{"stat":1,"data":"AAA=","x":{deep}}}],"stat":{{}}}}"#)
                    .into(),
                true,
                (1, 1, true, false),
            ),
            (
                format!(r#"{{"rxpk":[{GOOD},{{"stat":1,"data":"AAA=","tmst":1e400}}]}}"#).into(),
                true,
                (1, 1, false, false),
            ),
            (
                [
                    br#"{"rxpk":[{"stat":1,"rssi":-61,"data":"QNobASY=","desc":""#.as_slice(),
                    b"\xe9t\xe9\"}]}",
                ]
                .concat(),
                true,
                (1, 0, false, false),
            ),
            (
                format!(r#"{{"rxpk":[{{"data":7}}],"stat":5,"rxpk":[{GOOD}],"stat":{{}}}}"#).into(),
                true,
                (1, 0, true, false),
            ),
            // Inside an entry too, as it was.
            (
                br#"{"rxpk":[{"stat":1,"rssi":-90,"rssi":-61,"data":"QNobASY="}]}"#.to_vec(),
                true,
                (1, 0, false, false),
            ),
            (
                br#"{"rxpk":null,"stat":{"rxnb":1}}"#.to_vec(),
                true,
                (0, 0, true, false),
            ),
            (
                br#"{"rxpk":{"data":"QNobASY="},"stat":{"rxnb":1}}"#.to_vec(),
                true,
                (0, 1, true, false),
            ),
        ];
        for (json, with_stat, (frames, bad_rxpk, stat, bad_stat)) in cases {
            let text = String::from_utf8_lossy(&json).into_owned();
            let rssi = vec![Some(-61); frames];
            assert_eq!(
                read(&json, with_stat),
                Ok((rssi, bad_rxpk, stat, bad_stat)),
                "{text}"
            );
        }
        for top in [
            "[]",
            "null",
            "{\"rxpk\":[{\"stat\":1,\"data\":\"QNobASY=\"}]",
            "",
        ] {
            assert!(
                matches!(read(top.as_bytes(), true), Err(GwmpError::Json(_))),
                "{top}"
            );
        }
    }

    /// Copies of one frame in a datagram (a gateway with two antennas or RF chains) become one
    /// frame with the best reception's metadata: the highest RSSI, then the highest SNR, the
    /// first of equal ones (the first copy used to stand for it, however weak). Other frames
    /// keep their place.
    #[test]
    fn copies_in_a_datagram_become_the_best_one() {
        let x = "QNobASY=";
        let e = |chan: u32, radio: &str, data: &str| {
            format!(r#"{{"stat":1,"chan":{chan},{radio}"data":"{data}"}}"#)
        };
        let entries = [
            e(0, r#""rssi":-118,"lsnr":7.2,"#, x),
            e(1, r#""rssi":-100,"lsnr":1.5,"#, x),
            e(2, r#""rssi":-50,"#, "AAA="),
            e(3, r#""rssi":-100,"lsnr":5.5,"#, x),
            e(4, r#""rssi":-100,"lsnr":5.5,"#, x),
            e(5, r#""lsnr":9.5,"#, x),
        ];
        let json = format!(r#"{{"rxpk":[{}]}}"#, entries.join(","));
        let c = parse_push(json.as_bytes(), &[0; 8], SystemTime::UNIX_EPOCH, true).unwrap();
        let got: Vec<_> = c
            .frames
            .iter()
            .map(|f| {
                let r = &f.radio;
                (f.phy.len(), r.channel, r.rssi, r.snr, f.copies)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (5, Some(3), Some(-100), Some(5.5), 4),
                (2, Some(2), Some(-50), None, 0)
            ]
        );
    }

    /// Only the same bytes are copies: frames of one DevAddr and FCnt (two devices sharing
    /// a DevAddr, another network's) that differ in their payload or MIC are frames apart,
    /// each decoded, none merged away.
    #[test]
    fn frames_that_differ_after_their_header_are_not_copies() {
        let e = |chan: u32, data: &str| format!(r#"{{"stat":1,"chan":{chan},"data":"{data}"}}"#);
        let entries = [
            e(0, "QAECAwQABQACqgECAwQ="),
            e(1, "QAECAwQABQACqgECAwU="),
            e(2, "QAECAwQABQACqwECAwQ="),
            e(3, "QAECAwQABQACqgECAwQ="),
        ];
        let json = format!(r#"{{"rxpk":[{}]}}"#, entries.join(","));
        let c = parse_push(json.as_bytes(), &[0; 8], SystemTime::UNIX_EPOCH, true).unwrap();
        let got: Vec<_> = c
            .frames
            .iter()
            .map(|f| (f.phy[9], f.phy[13], f.radio.channel, f.copies))
            .collect();
        assert_eq!(
            got,
            vec![
                (0xaa, 4, Some(0), 1),
                (0xaa, 5, Some(1), 0),
                (0xab, 4, Some(2), 0)
            ]
        );
    }

    /// A frame's copies give it the best reception but the first valid time among them: a
    /// better copy whose `time` was bad or missing took the GPS time a weaker copy carried
    /// (the receive time went out instead), and counted `bad_time` for a copy merged away.
    /// `bad_time` counts a frame once when no copy had a valid time and one had a bad one.
    #[test]
    fn copies_keep_the_first_valid_time_and_count_a_bad_time_once_per_frame() {
        let received = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let gps = |ms: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        let e = |time: &str, rssi: i32, data: &str| {
            format!(r#"{{{time}"stat":1,"rssi":{rssi},"data":"{data}"}}"#)
        };
        let (x, y, z) = ("QNobASY=", "AAA=", "AQE=");
        let entries = [
            // x: the strongest copy has a bad time, the next none, a weak one GPS time.
            e("", -110, x),
            e(r#""time":"2024-05-01T10:00:00.123Z","#, -120, x),
            e(r#""time":"soon","#, -40, x),
            e(r#""time":"2024-05-01T10:00:09Z","#, -115, x),
            // y: bad times only, twice.
            e(r#""time":"soon","#, -90, y),
            e(r#""time":7,"#, -80, y),
            // z: no time at all.
            e("", -90, z),
            e("", -80, z),
        ];
        let json = format!(r#"{{"rxpk":[{}]}}"#, entries.join(","));
        let c = parse_push(json.as_bytes(), &[0; 8], received, true).unwrap();
        let got: Vec<_> = c
            .frames
            .iter()
            .map(|f| (f.radio.rssi, f.time.time, f.copies))
            .collect();
        assert_eq!(
            (got, c.bad_time),
            (
                vec![
                    (Some(-40), gps(1_714_557_600_123), 3),
                    (Some(-80), received, 1),
                    (Some(-80), received, 1),
                ],
                1
            )
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
            let c = parse_push(json.as_bytes(), &[0; 8], received, true).unwrap();
            assert_eq!((c.frames.len(), c.bad_time), (1, 1), "{t}");
            assert_eq!(c.frames[0].time.time, received, "{t}");
        }
    }
}
