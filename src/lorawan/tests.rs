//! Frames built here with a by-the-spec reference (the block layout of docs/codecs.md, "LoRaWAN
//! 1.0.x frames", written by hand on the RustCrypto primitives), so the crate-backed code is
//! checked against something it does not share.

use std::time::{Duration, SystemTime};

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use cmac::Mac;

use super::*;
use crate::ids::DevEui;
use crate::lorawan::fcnt::Counter;
use crate::uplink::{FrameTime, Radio};

const NWK: [u8; 16] = [
    0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C,
];
const APP: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const DEV_EUI: DevEui = DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]);
/// The worked example of docs/codecs.md.
const WORKED: &str = "40DA1B012600070002" /* MHDR DevAddr FCtrl FCnt FPort */;
const WORKED_TAIL: &str = "4026C89CB85521E3";

fn worked() -> Vec<u8> {
    hex::decode(format!("{WORKED}{WORKED_TAIL}")).unwrap()
}

fn block(first: u8, dir: u8, dev_addr: u32, fcnt: u32, last: u8) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = first;
    b[5] = dir;
    b[6..10].copy_from_slice(&dev_addr.to_le_bytes());
    b[10..14].copy_from_slice(&fcnt.to_le_bytes());
    b[15] = last;
    b
}

/// A data frame built by the letter of the spec.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference_frame(
    mhdr: u8,
    dev_addr: u32,
    fctrl_flags: u8,
    fcnt32: u32,
    fopts: &[u8],
    fport: Option<u8>,
    plain: &[u8],
    nwk: &[u8; 16],
    app: &[u8; 16],
) -> Vec<u8> {
    let dir = (mhdr >> 5) & 1; // 2/4 up, 3/5 down
    let mut f = vec![mhdr];
    f.extend_from_slice(&dev_addr.to_le_bytes());
    f.push(fctrl_flags | fopts.len() as u8);
    f.extend_from_slice(&(fcnt32 as u16).to_le_bytes());
    f.extend_from_slice(fopts);
    if let Some(port) = fport {
        f.push(port);
        let key = if port == 0 { nwk } else { app };
        let aes = aes::Aes128::new(GenericArray::from_slice(key));
        for (i, chunk) in plain.chunks(16).enumerate() {
            let mut s = GenericArray::from(block(1, dir, dev_addr, fcnt32, i as u8 + 1));
            aes.encrypt_block(&mut s);
            f.extend(chunk.iter().zip(s.iter()).map(|(p, k)| p ^ k));
        }
    }
    let mut mac = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(nwk).unwrap();
    mac.update(&block(0x49, dir, dev_addr, fcnt32, f.len() as u8));
    mac.update(&f);
    f.extend_from_slice(&mac.finalize().into_bytes()[..4]);
    f
}

/// An uplink of DevAddr 26011BDA under the keys of docs/codecs.md's worked example.
pub(crate) fn up(fcnt32: u32, fport: Option<u8>, plain: &[u8]) -> Vec<u8> {
    reference_frame(0x40, 0x2601_1BDA, 0, fcnt32, &[], fport, plain, &NWK, &APP)
}

/// The MIC of frame `phy`: its last 4 bytes.
fn mic(phy: &[u8]) -> [u8; 4] {
    phy[phy.len() - 4..].try_into().unwrap()
}

/// The session keys of the device every test here speaks for.
pub(crate) fn session_keys() -> SessionKeys {
    SessionKeys {
        nwk_s_key: Key::new(NWK),
        app_s_key: Key::new(APP),
    }
}

fn decoder() -> Decoder {
    let mut d = Decoder::new();
    d.add(Session::new(DevAddr(0x2601_1BDA), DEV_EUI, session_keys()));
    d
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn data(phy: &[u8]) -> DataFrame<'_> {
    match parse(phy).unwrap() {
        Frame::Data(d) => d,
        other => panic!("not a data frame: {other:?}"),
    }
}

#[test]
fn reference_builder_reproduces_the_worked_example() {
    assert_eq!(up(7, Some(2), &[0x03, 0x67, 0x01, 0x10]), worked());
}

#[test]
fn worked_example_parses_verifies_and_decrypts() {
    let phy = worked();
    let f = data(&phy);
    assert_eq!(f.mtype, MType::UnconfirmedDataUp);
    assert_eq!(f.mtype.to_string(), "UnconfirmedDataUp");
    assert_eq!(f.direction(), Direction::Up);
    assert_eq!(f.dev_addr.to_string(), "26011bda");
    assert_eq!(f.fcnt16, 7);
    assert_eq!(f.fctrl, 0);
    assert!(f.fopts.is_empty());
    assert_eq!(f.fport, Some(2));
    assert_eq!(f.frm_payload, [0x40, 0x26, 0xC8, 0x9C]);
    assert_eq!(f.mic, [0xB8, 0x55, 0x21, 0xE3]);
    assert!(crypto::verify_mic(&f, &Key::new(NWK), 7));
    assert!(!crypto::verify_mic(&f, &Key::new(NWK), 0x1_0007));
    assert!(!crypto::verify_mic(&f, &Key::new(APP), 7));
    let (nwk, app) = (Key::new(NWK), Key::new(APP));
    let key = crypto::payload_key(&f, &nwk, &app);
    assert_eq!(key, &app);
    assert_eq!(
        crypto::decrypt_payload(&f, key, 7),
        [0x03, 0x67, 0x01, 0x10]
    );
}

#[test]
fn worked_example_decodes_to_an_uplink() {
    let mut d = decoder();
    let radio = Radio {
        rssi: Some(-80),
        ..Radio::default()
    };
    let u = d.decode_uplink(&worked(), t0(), radio.clone()).unwrap();
    assert_eq!(u.dev_eui, DEV_EUI);
    assert_eq!(u.fport, Some(2));
    assert_eq!(u.fcnt, Some(7));
    assert_eq!(u.payload, [0x03, 0x67, 0x01, 0x10]);
    assert_eq!(u.time, t0());
    assert_eq!(u.radio, radio);
    assert_eq!(d.sessions(DevAddr(0x2601_1BDA))[0].fcnt.last(), Some(7));
}

#[test]
fn altered_mic_is_refused_and_does_not_advance_the_counter() {
    let mut phy = worked();
    *phy.last_mut().unwrap() ^= 1;
    let mut d = decoder();
    let e = d.decode_uplink(&phy, t0(), Radio::default()).unwrap_err();
    assert!(
        matches!(e, LorawanError::MicMismatch { fcnt16: 7, .. }),
        "{e}"
    );
    assert!(e
        .to_string()
        .starts_with("MIC check failed for DevAddr 26011bda"));
    assert_eq!(d.sessions(DevAddr(0x2601_1BDA))[0].fcnt.last(), None);
}

#[test]
fn unknown_dev_addr_and_downlinks_are_not_uplinks_of_a_session() {
    let mut d = decoder();
    let other = reference_frame(0x40, 0x0102_0304, 0, 1, &[], Some(1), b"x", &NWK, &APP);
    let e = d.decode_uplink(&other, t0(), Radio::default()).unwrap_err();
    assert_eq!(e.to_string(), "no session for DevAddr 01020304");
    let down = reference_frame(0x60, 0x2601_1BDA, 0, 1, &[], Some(1), b"x", &NWK, &APP);
    let e = d.decode_uplink(&down, t0(), Radio::default()).unwrap_err();
    assert_eq!(e, LorawanError::NotUplink(MType::UnconfirmedDataDown));
}

#[test]
fn downlink_uses_dir_1_in_mic_and_keystream() {
    for mhdr in [0x60, 0xA0] {
        let plain = b"downlink payload longer than one block";
        let phy = reference_frame(
            mhdr,
            0x2601_1BDA,
            0x30,
            300,
            &[],
            Some(5),
            plain,
            &NWK,
            &APP,
        );
        let f = data(&phy);
        assert_eq!(f.direction(), Direction::Down);
        assert!(crypto::verify_mic(&f, &Key::new(NWK), 300));
        assert_eq!(crypto::decrypt_payload(&f, &Key::new(APP), 300), plain);
        // The same bytes read as an uplink (Dir 0) must not verify nor decrypt.
        let mut as_up = phy.clone();
        as_up[0] = 0x40;
        let g = data(&as_up);
        assert!(!crypto::verify_mic(&g, &Key::new(NWK), 300));
        assert_ne!(crypto::decrypt_payload(&g, &Key::new(APP), 300), plain);
    }
}

/// The MType of each MHDR value, and which are data frames in which direction: only an
/// uplink is decoded to a reading.
#[test]
fn each_mtype_is_read_from_the_mhdr_with_its_direction() {
    let (up, down) = (Some(Direction::Up), Some(Direction::Down));
    let want = [
        (MType::JoinRequest, None),
        (MType::JoinAccept, None),
        (MType::UnconfirmedDataUp, up),
        (MType::UnconfirmedDataDown, down),
        (MType::ConfirmedDataUp, up),
        (MType::ConfirmedDataDown, down),
        (MType::Rfu, None),
        (MType::Proprietary, None),
    ];
    for (mhdr, (mtype, direction)) in (0u8..).map(|m| m << 5).zip(want) {
        assert_eq!(MType::from_mhdr(mhdr), mtype, "MHDR {mhdr:#04x}");
        assert_eq!(mtype.direction(), direction, "{mtype}");
    }
}

/// FCtrl's flag bits (ADR, ADRACKReq, ACK, ClassB/FPending) are not read as FOpts' length,
/// in either direction.
#[test]
fn fctrl_flags_are_not_read_as_the_fopts_length() {
    for fctrl in [0x80, 0x40, 0x20, 0x10, 0xF0] {
        for mhdr in [0x40, 0x60] {
            let phy = reference_frame(mhdr, 0x2601_1BDA, fctrl, 1, &[], Some(1), b"x", &NWK, &APP);
            let f = data(&phy);
            let read = (f.fopts_len(), f.fport, f.frm_payload.len());
            assert_eq!(
                read,
                (0, Some(1), 1),
                "FCtrl {fctrl:#04x}, MHDR {mhdr:#04x}"
            );
        }
    }
}

#[test]
fn fport_0_is_decrypted_with_the_nwkskey() {
    let mac_cmds = [0x02, 0x03, 0x05]; // LinkCheckReq, LinkADRAns
    let phy = up(9, Some(0), &mac_cmds);
    let f = data(&phy);
    assert_eq!(f.fport, Some(0));
    let (nwk, app) = (Key::new(NWK), Key::new(APP));
    assert_eq!(crypto::payload_key(&f, &nwk, &app), &nwk);
    let u = decoder()
        .decode_uplink(&phy, t0(), Radio::default())
        .unwrap();
    assert_eq!((u.fport, u.payload), (Some(0), mac_cmds.to_vec()));
}

#[test]
fn fopts_are_skipped_and_covered_by_the_mic() {
    let fopts = [0x03, 0x07, 0x02]; // LinkADRAns, LinkCheckReq
    let phy = reference_frame(
        0x80,
        0x2601_1BDA,
        0x80,
        12,
        &fopts,
        Some(3),
        b"hello",
        &NWK,
        &APP,
    );
    let f = data(&phy);
    assert_eq!(f.mtype, MType::ConfirmedDataUp);
    assert_eq!(f.fopts_len(), 3);
    assert_eq!(f.fopts, fopts);
    assert_eq!(f.fport, Some(3));
    let u = decoder()
        .decode_uplink(&phy, t0(), Radio::default())
        .unwrap();
    assert_eq!(u.payload, b"hello");
    let mut tampered = phy.clone();
    tampered[9] ^= 0x01; // inside FOpts
    assert!(decoder()
        .decode_uplink(&tampered, t0(), Radio::default())
        .is_err());
}

#[test]
fn frame_without_fport_has_no_payload() {
    let phy = reference_frame(0x40, 0x2601_1BDA, 0x01, 4, &[0x02], None, &[], &NWK, &APP);
    let f = data(&phy);
    assert_eq!((f.fport, f.frm_payload.len()), (None, 0));
    let u = decoder()
        .decode_uplink(&phy, t0(), Radio::default())
        .unwrap();
    assert_eq!((u.fport, u.payload.len(), u.fcnt), (None, 0, Some(4)));
}

#[test]
fn fport_with_empty_payload_keeps_its_port() {
    let phy = up(4, Some(1), &[]);
    let f = data(&phy);
    assert_eq!((f.fport, f.frm_payload.len()), (Some(1), 0));
    assert!(crypto::verify_mic(&f, &Key::new(NWK), 4));
}

#[test]
fn fcnt_rollover_is_reconstructed() {
    let mut d = decoder();
    let u = d
        .decode_uplink(&up(0xFFFE, Some(2), b"a"), t0(), Radio::default())
        .unwrap();
    assert_eq!(u.fcnt, Some(0xFFFE));
    // 0xFFFF is skipped (lost); 0x1_0001 arrives with 0x0001 on air.
    let u = d
        .decode_uplink(&up(0x1_0001, Some(2), b"b"), t0(), Radio::default())
        .unwrap();
    assert_eq!((u.fcnt, u.payload), (Some(0x1_0001), b"b".to_vec()));
    let u = d
        .decode_uplink(&up(0x1_0002, Some(2), b"c"), t0(), Radio::default())
        .unwrap();
    assert_eq!(u.fcnt, Some(0x1_0002));
}

#[test]
fn first_frame_after_a_restart_finds_its_upper_half() {
    let u = decoder()
        .decode_uplink(&up(0x3_0042, Some(2), b"x"), t0(), Radio::default())
        .unwrap();
    assert_eq!((u.fcnt, u.payload), (Some(0x3_0042), b"x".to_vec()));
}

#[test]
fn replays_and_old_counters_are_rejected() {
    let mut d = decoder();
    let frame7 = worked();
    let old = up(5, Some(2), b"old");
    d.decode_uplink(&old, t0(), Radio::default()).unwrap();
    d.decode_uplink(&frame7, t0(), Radio::default()).unwrap();
    let e = d
        .decode_uplink(&frame7, t0(), Radio::default())
        .unwrap_err();
    assert_eq!(
        e,
        LorawanError::Replay {
            dev_addr: DevAddr(0x2601_1BDA),
            fcnt: 7,
            last: 7
        }
    );
    assert_eq!(
        e.to_string(),
        "replayed or old FCnt 7 from DevAddr 26011bda (last accepted 7)"
    );
    assert!(matches!(
        d.decode_uplink(&old, t0(), Radio::default()),
        Err(LorawanError::Replay { fcnt: 5, .. })
    ));
    // Still accepting newer frames.
    d.decode_uplink(&up(8, Some(2), b"n"), t0(), Radio::default())
        .unwrap();
}

#[test]
fn shared_dev_addr_is_resolved_by_mic() {
    let mut d = decoder();
    let other_nwk = [0x11; 16];
    let other_eui = DevEui([9; 8]);
    d.add(Session::new(
        DevAddr(0x2601_1BDA),
        other_eui,
        SessionKeys {
            nwk_s_key: Key::new(other_nwk),
            app_s_key: Key::new(APP),
        },
    ));
    let phy = reference_frame(
        0x40,
        0x2601_1BDA,
        0,
        3,
        &[],
        Some(1),
        b"z",
        &other_nwk,
        &APP,
    );
    let u = d.decode_uplink(&phy, t0(), Radio::default()).unwrap();
    assert_eq!(u.dev_eui, other_eui);
    assert_eq!((d.len(), d.is_empty()), (2, false));
    assert!(Decoder::new().is_empty());
}

#[test]
fn join_request_parses() {
    // MHDR | AppEUI LE | DevEUI LE | DevNonce LE | MIC
    let phy =
        hex::decode("00 0807060504030201 3412100000cba058 cdab 01020304".replace(' ', "")).unwrap();
    let Frame::JoinRequest(j) = parse(&phy).unwrap() else {
        panic!("not a join request");
    };
    assert_eq!(j.app_eui, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(j.dev_eui, DEV_EUI.0);
    assert_eq!(j.dev_nonce, 0xABCD);
    assert_eq!(j.mic, [1, 2, 3, 4]);
    let e = parse(&phy[..22]).unwrap_err();
    assert_eq!(e.to_string(), "JoinRequest frame has 22 bytes, expected 23");
}

#[test]
fn join_accept_proprietary_and_rfu_are_identified() {
    assert_eq!(
        parse(&[0x20; 17]).unwrap(),
        Frame::JoinAccept { has_cflist: false }
    );
    assert_eq!(
        parse(&[0x20; 33]).unwrap(),
        Frame::JoinAccept { has_cflist: true }
    );
    assert!(parse(&[0x20; 20]).is_err());
    assert_eq!(
        parse(&[0xE0, 1, 2]).unwrap(),
        Frame::Proprietary { payload: &[1, 2] }
    );
    assert_eq!(parse(&[0xC0, 9]).unwrap(), Frame::Rfu { payload: &[9] });
    assert_eq!(parse(&[0xC0, 9]).unwrap().mtype().to_string(), "RFU");
}

#[test]
fn malformed_frames_say_what_is_wrong() {
    assert_eq!(parse(&[]).unwrap_err().to_string(), "empty frame");
    assert_eq!(
        parse(&worked()[..9]).unwrap_err().to_string(),
        "UnconfirmedDataUp frame too short: 9 bytes, need at least 12"
    );
    let mut bad_fopts = worked();
    bad_fopts[5] = 0x0F;
    assert_eq!(
        parse(&bad_fopts).unwrap_err(),
        LorawanError::BadFOptsLen {
            fopts_len: 15,
            len: 17
        }
    );
    let mut major = worked();
    major[0] |= 0x01;
    assert_eq!(
        parse(&major).unwrap_err().to_string(),
        "unsupported LoRaWAN major version 1 (only 0, LoRaWAN R1, is known)"
    );
    assert!(matches!(
        parse(&[0x40; 256]),
        Err(LorawanError::TooLong { len: 256 })
    ));
    let largest = up(1, Some(2), &[0x55; 242]);
    assert_eq!(largest.len(), 255, "the largest PHYPayload LoRa carries");
    match parse(&largest) {
        Ok(Frame::Data(d)) => assert_eq!(d.frm_payload.len(), 242),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_are_masked_and_validated() {
    let k = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").unwrap();
    assert_eq!(k, Key::new(NWK));
    assert_eq!(
        Key::from_hex("2b:7e:15:16:28:ae:d2:a6:ab:f7:15:88:09:cf:4f:3c").unwrap(),
        k
    );
    assert_eq!(format!("{k:?}"), "Key(***)");
    let keys = SessionKeys {
        nwk_s_key: k.clone(),
        app_s_key: k,
    };
    let session = Session::new(DevAddr(1), DEV_EUI, keys);
    assert!(!format!("{session:?}").contains("43"), "{session:?}");
    let e = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F").unwrap_err();
    assert_eq!(
        e.to_string(),
        "expected 32 hex digits (16 bytes), got 30 characters"
    );
    assert_eq!(Key::from_hex("zz").unwrap_err(), KeyError::NotHex);
}

/// Accepted counters are handed out to be kept (without when: the session's frames are not
/// kept to tell a copy, as its counter refuses one); a decoder resumed from them after a
/// restart rejects a frame captured before it.
#[test]
fn a_resumed_session_rejects_a_frame_from_before_the_restart() {
    let mut d = decoder();
    let old = up(70_005, Some(2), b"x");
    d.decode_uplink(&old, t0(), Radio::default()).unwrap();
    let kept = d.take_counters().advanced;
    assert_eq!(
        kept.iter()
            .map(|a| (a.dev_addr, a.dev_eui, a.fcnt, a.counter, a.at))
            .collect::<Vec<_>>(),
        vec![(
            DevAddr(0x2601_1BDA),
            DEV_EUI,
            70_005,
            Counter {
                fcnt: 70_005,
                mic: mic(&old),
                behind: 0
            },
            None
        )]
    );
    assert_eq!(d.take_counters(), Counters::default());

    let mut restarted = decoder();
    let other = DevEui([9; 8]);
    assert!(!restarted.resume(DevAddr(0x2601_1BDA), other, 70_005, None, None, None));
    for a in kept {
        let c = a.counter;
        let resumed = restarted.resume(
            a.dev_addr,
            a.dev_eui,
            c.fcnt,
            Some(c.mic),
            Some(c.behind),
            None,
        );
        assert!(resumed);
    }
    assert!(matches!(
        restarted.decode_uplink(&old, t0(), Radio::default()),
        Err(LorawanError::Replay { fcnt: 70_005, .. })
    ));
    assert_eq!(
        restarted.take_counters(),
        Counters {
            advanced: Vec::new(),
            replayed: Some((DevAddr(0x2601_1BDA), 70_005)),
        },
        "the replay is told, so that its acknowledgement can wait for the first copy's"
    );
    let next = up(70_006, Some(2), b"y");
    assert_eq!(
        restarted
            .decode_uplink(&next, t0(), Radio::default())
            .unwrap()
            .fcnt,
        Some(70_006)
    );
}

/// A copy repeats a recent counter; a device that restarted its counter sends a small one
/// after a large one. Both are refused, told apart, and acknowledged as replays are.
#[test]
fn a_counter_restart_is_told_apart_from_a_copy() {
    let mut d = decoder();
    let radio = Radio::default;
    d.decode_uplink(&up(5000, Some(2), b"a"), t0(), radio())
        .unwrap();
    d.take_counters();
    let e = d
        .decode_uplink(&up(3, Some(2), b"b"), t0(), radio())
        .unwrap_err();
    assert_eq!(
        e,
        LorawanError::FcntReset {
            dev_addr: DevAddr(0x2601_1BDA),
            dev_eui: DEV_EUI,
            fcnt: 3,
            last: 5000
        }
    );
    assert_eq!(
        e.to_string(),
        "FCnt 3 from DevAddr 26011bda (DevEUI 58a0cb0000101234) after 5000: the device very \
         likely restarted its frame counter"
    );
    assert_eq!(d.take_counters().replayed, Some((DevAddr(0x2601_1BDA), 3)));
    // The same frame again, or one of a counter old but not small (below the window of a
    // frame late): copies.
    let old = 5000 - fcnt::LATE_WINDOW - 1;
    for (old, payload) in [(5000, b"a"), (old, b"c"), (fcnt::RESET_BELOW, b"c")] {
        assert!(matches!(
            d.decode_uplink(&up(old, Some(2), payload), t0(), radio()),
            Err(LorawanError::Replay { fcnt, last: 5000, .. }) if fcnt == old
        ));
    }
    // Another frame at the last counter (another MIC) is not a copy: a restart.
    assert!(matches!(
        d.decode_uplink(&up(5000, Some(2), b"c"), t0(), radio()),
        Err(LorawanError::FcntReset {
            fcnt: 5000,
            last: 5000,
            ..
        })
    ));
    assert_eq!(d.sessions(DevAddr(0x2601_1BDA))[0].fcnt.last(), Some(5000));
}

/// A device that restarts its counter and sends once per power-up sends FCnt 0 each time:
/// each is another frame (another MIC), taken; the same frame again within the copy window
/// is a copy, and past it is taken: the device sent the same reading after another
/// power-up. So after hubgate restarts, resumed with the frames accepted and how long ago.
#[test]
fn a_resetting_device_at_the_same_counter_is_taken_unless_the_frame_is_a_copy() {
    let mut d = resetting_decoder();
    let radio = Radio::default;
    for (payload, plain) in [(b"1", b"1"), (b"2", b"2")] {
        let up0 = d.decode_uplink(&up(0, Some(2), payload), t0(), radio());
        assert_eq!(up0.unwrap().payload, plain);
    }
    let copy = |d: &mut Decoder| {
        matches!(
            d.decode_uplink(&up(0, Some(2), b"2"), t0(), radio()),
            Err(LorawanError::Replay {
                fcnt: 0,
                last: 0,
                ..
            })
        )
    };
    assert!(copy(&mut d), "within the window");
    d.pass(fcnt::COPY_WINDOW);
    assert!(!copy(&mut d), "past the window: taken");
    assert!(copy(&mut d), "and its copy is one");

    let last = mic(&up(0, Some(2), b"2"));
    let keys = session_keys().print();
    let restarted = |age: Option<Duration>| {
        let mut d = resetting_decoder();
        assert!(d.resume(DevAddr(0x2601_1BDA), DEV_EUI, 0, Some(last), None, None));
        let frames: Vec<_> = age.into_iter().map(|age| (0, last, age)).collect();
        d.resume_copies(DevAddr(0x2601_1BDA), DEV_EUI, keys, &frames);
        d
    };
    let seconds = Duration::from_secs(10);
    assert!(copy(&mut restarted(Some(seconds))), "accepted 10 s before");
    let mut d = restarted(Some(seconds));
    d.pass(fcnt::COPY_WINDOW - seconds);
    assert!(!copy(&mut d), "its window passed since");
    assert!(
        !copy(&mut restarted(Some(fcnt::COPY_WINDOW))),
        "accepted before it"
    );
    assert!(!copy(&mut restarted(None)), "not known when accepted");
    let up3 = restarted(Some(seconds)).decode_uplink(&up(0, Some(2), b"3"), t0(), radio());
    assert_eq!(up3.unwrap().payload, b"3");

    let mut old_release = resetting_decoder();
    assert!(old_release.resume(DevAddr(0x2601_1BDA), DEV_EUI, 0, None, None, None));
    assert!(!copy(&mut old_release), "a counter kept without its frames");
}

/// The frames kept with a session's old keys are not a copy's under its new keys: they are
/// not resumed (the session's counter is not either, see
/// `new_session_keys_do_not_go_on_from_the_old_sessions_counter`).
#[test]
fn frames_kept_under_other_keys_are_not_resumed() {
    let frame = up(0, Some(2), b"2");
    let frames = [(0, mic(&frame), Duration::from_secs(1))];
    let keys = session_keys().print();
    let resumed = |keys: [u8; 4], dev_eui: DevEui| {
        let mut d = resetting_decoder();
        assert!(d.resume(
            DevAddr(0x2601_1BDA),
            DEV_EUI,
            0,
            Some(mic(&frame)),
            None,
            None
        ));
        d.resume_copies(DevAddr(0x2601_1BDA), dev_eui, keys, &frames);
        d.decode_uplink(&frame, t0(), Radio::default())
    };
    let copy = resumed(keys, DEV_EUI);
    assert!(matches!(copy, Err(LorawanError::Replay { fcnt: 0, .. })));
    for (keys, dev_eui) in [([0; 4], DEV_EUI), (keys, DevEui([9; 8]))] {
        let taken = resumed(keys, dev_eui);
        assert_eq!(taken.unwrap().fcnt, Some(0), "{keys:?} {dev_eui}");
    }
}

/// Frames kept while the device had `resets_fcnt`, resumed after it was turned off, are told
/// as a copy's, as within a run: a late copy of its FCnt 3 after FCnt 20 is a duplicate, not a
/// counter restart told (`fcnt_reset`); another frame at FCnt 3 (another MIC: the device did
/// restart its counter) still is one.
#[test]
fn frames_kept_are_resumed_after_resets_fcnt_is_turned_off() {
    let frame = up(3, Some(2), b"3");
    let frames = [(3, mic(&frame), Duration::from_secs(1))];
    let keys = session_keys().print();
    let mut d = decoder();
    let last = mic(&up(20, Some(2), b"20"));
    assert!(d.resume(
        DevAddr(0x2601_1BDA),
        DEV_EUI,
        20,
        Some(last),
        None,
        Some(keys)
    ));
    d.resume_copies(DevAddr(0x2601_1BDA), DEV_EUI, keys, &frames);
    assert!(matches!(
        d.decode_uplink(&frame, t0(), Radio::default()),
        Err(LorawanError::Replay {
            fcnt: 3,
            last: 20,
            ..
        })
    ));
    assert!(matches!(
        d.decode_uplink(&up(3, Some(2), b"another"), t0(), Radio::default()),
        Err(LorawanError::FcntReset {
            fcnt: 3,
            last: 20,
            ..
        })
    ));
}

/// Below the small counters a restart cannot be told from a copy: a frame at a counter taken
/// before is refused as one.
#[test]
fn a_small_counter_after_a_small_one_is_a_copy() {
    let mut d = decoder();
    for (fcnt, payload) in [(0, b"a"), (fcnt::RESET_BELOW - 1, b"a")] {
        d.decode_uplink(&up(fcnt, Some(2), payload), t0(), Radio::default())
            .unwrap();
    }
    assert!(matches!(
        d.decode_uplink(&up(0, Some(2), b"b"), t0(), Radio::default()),
        Err(LorawanError::Replay { fcnt: 0, .. })
    ));
}

/// A device past FCnt 65535 that restarts sends counters whose upper half is 0, not its
/// session's: told as a restart, not as a MIC failure.
#[test]
fn a_restart_past_16_bits_is_told_as_one() {
    let mut d = decoder();
    d.decode_uplink(&up(0x2_0010, Some(2), b"a"), t0(), Radio::default())
        .unwrap();
    assert!(matches!(
        d.decode_uplink(&up(1, Some(2), b"b"), t0(), Radio::default()),
        Err(LorawanError::FcntReset {
            fcnt: 1,
            last: 0x2_0010,
            ..
        })
    ));
}

fn resetting_decoder() -> Decoder {
    let mut d = Decoder::new();
    d.add(Session::new(DevAddr(0x2601_1BDA), DEV_EUI, session_keys()).resetting_fcnt());
    d
}

/// A device known to restart its counter (`resets_fcnt`): a smaller counter is accepted and
/// the session goes on from it; the same counter again is still a copy. Its frames are handed
/// out with when they were accepted, to be kept to tell a copy after a restart.
#[test]
fn a_device_that_resets_its_counter_is_accepted_after_a_restart() {
    let mut d = resetting_decoder();
    let decode = |d: &mut Decoder, fcnt: u32| {
        d.decode_uplink(&up(fcnt, Some(2), b"p"), t0(), Radio::default())
    };
    decode(&mut d, 5000).unwrap();
    let u = decode(&mut d, 3).unwrap();
    assert_eq!((u.fcnt, u.payload), (Some(3), b"p".to_vec()));
    let advanced = d.take_counters().advanced;
    assert_eq!(
        advanced
            .iter()
            .map(|a| (a.dev_addr, a.dev_eui, a.fcnt, a.counter.mic, a.at.is_some()))
            .collect::<Vec<_>>(),
        vec![
            (
                DevAddr(0x2601_1BDA),
                DEV_EUI,
                5000,
                mic(&up(5000, Some(2), b"p")),
                true
            ),
            (
                DevAddr(0x2601_1BDA),
                DEV_EUI,
                3,
                mic(&up(3, Some(2), b"p")),
                true
            )
        ],
        "the restarted counter is the one kept"
    );
    assert!(
        advanced.iter().all(|a| a.counter.behind == u64::MAX),
        "no frame below is late: every counter below is kept as taken"
    );
    assert_eq!(
        decode(&mut d, 3).unwrap_err(),
        LorawanError::Replay {
            dev_addr: DevAddr(0x2601_1BDA),
            fcnt: 3,
            last: 3
        }
    );
    assert_eq!(d.take_counters().replayed, Some((DevAddr(0x2601_1BDA), 3)));
    assert_eq!(decode(&mut d, 4).unwrap().fcnt, Some(4));
    assert_eq!(decode(&mut d, 6).unwrap().fcnt, Some(6));
    assert_eq!(d.sessions(DevAddr(0x2601_1BDA))[0].fcnt.last(), Some(6));
}

/// A device past FCnt 65535 that restarts, first heard again past 16.
#[test]
fn a_device_that_resets_its_counter_is_accepted_from_past_16_bits() {
    let mut d = resetting_decoder();
    d.decode_uplink(&up(0x2_0010, Some(2), b"a"), t0(), Radio::default())
        .unwrap();
    let u = d
        .decode_uplink(&up(40, Some(2), b"b"), t0(), Radio::default())
        .unwrap();
    assert_eq!((u.fcnt, u.payload), (Some(40), b"b".to_vec()));
}

/// A device heard again after more than 16384 frames (LoRaWAN 1.0.2's MAX_FCNT_GAP) went
/// unheard across a 16-bit rollover (the gateway off for some days) is a live device: its
/// MIC verifies under the true 32-bit counter, and a replay of an old frame cannot verify
/// under the rollover value.
#[test]
fn a_counter_jump_past_the_old_gap_across_a_rollover_is_not_lost_for_good() {
    let last = up(0xBFFF, Some(2), b"a");
    let mut d = decoder();
    d.decode_uplink(&last, t0(), Radio::default()).unwrap();
    // Still refused, as it must be: a copy, and a frame from before.
    assert!(d.decode_uplink(&last, t0(), Radio::default()).is_err());
    assert!(d
        .decode_uplink(&up(0x8000, Some(2), b"old"), t0(), Radio::default())
        .is_err());
    // 16,385 frames on, and every frame after that one; and after hubgate restarts (the
    // session resumed from the kept counter).
    let mut resumed = decoder();
    assert!(resumed.resume(
        DevAddr(0x2601_1BDA),
        DEV_EUI,
        0xBFFF,
        Some(mic(&last)),
        None,
        None
    ));
    let mut refused = Vec::new();
    for fcnt in [0x1_0000, 0x1_0001, 0x1_4000, 0x1_BFFF, 0x1_C000, 0x2_0000] {
        for (who, d) in [("running", &mut d), ("restarted", &mut resumed)] {
            if let Err(e) = d.decode_uplink(&up(fcnt, Some(2), b"b"), t0(), Radio::default()) {
                refused.push(format!("{who} {fcnt:#x}: {e}"));
            }
        }
    }
    assert!(refused.is_empty(), "{refused:#?}");
}

/// A device first heard past 2^20 frames (a new site, a device newly added) is not found in
/// the first search; with `fcnt_from` its counter is looked for from there, frames below it
/// are refused as old, and a counter kept since counts if it is ahead.
#[test]
fn a_device_past_two_to_the_twenty_frames_is_picked_up_from_fcnt_from() {
    let far = up(0x10_0005, Some(2), b"b");
    assert!(decoder()
        .decode_uplink(&far, t0(), Radio::default())
        .is_err());
    let session = |from| {
        let keys = session_keys();
        let mut d = Decoder::new();
        d.add(Session::new(DevAddr(0x2601_1BDA), DEV_EUI, keys).fcnt_from(from));
        d
    };
    let mut d = session(0x10_0000);
    let u = d.decode_uplink(&far, t0(), Radio::default()).unwrap();
    assert_eq!(u.fcnt, Some(0x10_0005));
    let mut d = session(0x10_0000);
    assert!(d
        .decode_uplink(&up(0xF_FFFF, Some(2), b"old"), t0(), Radio::default())
        .is_err());
    let mut d = session(0x10_0000);
    assert!(d.resume(
        DevAddr(0x2601_1BDA),
        DEV_EUI,
        0x10_0005,
        Some(mic(&far)),
        None,
        None
    ));
    assert!(d.decode_uplink(&far, t0(), Radio::default()).is_err());
}

/// A counter kept with other session keys (the device provisioned again under the same
/// DevAddr) is not resumed: the new keys' frames from FCnt 0 are taken. One kept with
/// these keys, or by a release that kept no print, is.
#[test]
fn new_session_keys_do_not_go_on_from_the_old_sessions_counter() {
    const NWK2: [u8; 16] = [0x11; 16];
    const APP2: [u8; 16] = [0x22; 16];
    let keys = SessionKeys {
        nwk_s_key: Key::new(NWK2),
        app_s_key: Key::new(APP2),
    };
    let old = session_keys();
    assert_ne!(keys.print(), old.print());
    let old_frame = up(5000, Some(2), b"old");
    let session = || {
        let mut d = Decoder::new();
        d.add(Session::new(DevAddr(0x2601_1BDA), DEV_EUI, keys.clone()));
        d
    };
    let frame = |fcnt| {
        reference_frame(
            0x40,
            0x2601_1BDA,
            0,
            fcnt,
            &[],
            Some(2),
            b"new",
            &NWK2,
            &APP2,
        )
    };
    let mut d = session();
    let print = Some(old.print());
    assert!(!d.resume(
        DevAddr(0x2601_1BDA),
        DEV_EUI,
        5000,
        Some(mic(&old_frame)),
        None,
        print
    ));
    for fcnt in [0, 1, 2, 16, 17, 100, 4999] {
        let decoded = d.decode_uplink(&frame(fcnt), t0(), Radio::default());
        assert!(decoded.is_ok(), "{fcnt}: {decoded:?}");
    }
    for print in [Some(keys.print()), None] {
        let mut d = session();
        assert!(d.resume(DevAddr(0x2601_1BDA), DEV_EUI, 5000, None, None, print));
        let decoded = d.decode_uplink(&frame(4999), t0(), Radio::default());
        assert!(decoded.is_err(), "{print:?}: {decoded:?}");
    }
}

/// A replayed old frame sets the counter of a `resets_fcnt` session back (taken as a
/// restart), or, as a session's first frame, starts its counter far behind the device's:
/// the device's own frames, more than [`BLOCKS_AHEAD`] halves ahead, failed the MIC for
/// good. They are looked for as a first frame is, and found again.
#[test]
fn a_counter_set_back_by_a_replayed_old_frame_is_found_again() {
    let decode = |d: &mut Decoder, fcnt: u32| {
        d.decode_uplink(&up(fcnt, Some(2), b"p"), t0(), Radio::default())
            .map(|u| u.fcnt)
    };
    let mut d = resetting_decoder();
    assert!(d.resume(DevAddr(0x2601_1BDA), DEV_EUI, 0x5_0000, None, None, None));
    assert_eq!(decode(&mut d, 0x5_0001), Ok(Some(0x5_0001)));
    assert_eq!(
        decode(&mut d, 5),
        Ok(Some(5)),
        "the replay, taken as a restart"
    );
    assert_eq!(decode(&mut d, 0x5_0002), Ok(Some(0x5_0002)));
    assert_eq!(decode(&mut d, 0x5_0003), Ok(Some(0x5_0003)));

    let mut d = decoder();
    assert_eq!(decode(&mut d, 0x100), Ok(Some(0x100)), "the replay, first");
    assert_eq!(decode(&mut d, 0x6_0001), Ok(Some(0x6_0001)));
    d.pass(fcnt::RESCUE_EVERY);
    assert_eq!(
        decode(&mut d, 0x101),
        Err(LorawanError::Replay {
            dev_addr: DevAddr(0x2601_1BDA),
            fcnt: 0x101,
            last: 0x6_0001
        }),
        "old again, with the search free to run"
    );
}

/// A frame captured earlier in a half below the session's other than 0, which only the
/// search past the candidates tries, is refused as old by a `resets_fcnt` session too, not
/// taken for a restart: taken, it would set the counter back, and every frame captured after
/// it would verify in the halves ahead and be taken.
#[test]
fn the_search_takes_no_frame_captured_earlier_for_a_restart() {
    let decode = |d: &mut Decoder, fcnt: u32| {
        d.decode_uplink(&up(fcnt, Some(2), b"p"), t0(), Radio::default())
            .map(|u| u.fcnt)
    };
    let addr = DevAddr(0x2601_1BDA);
    let mut d = resetting_decoder();
    assert!(d.resume(addr, DEV_EUI, 0x5_0010, None, None, None));
    let old = |fcnt| {
        Err(LorawanError::Replay {
            dev_addr: addr,
            fcnt,
            last: 0x5_0010,
        })
    };
    for fcnt in [0x3_0005, 0x3_0006] {
        assert_eq!(decode(&mut d, fcnt), old(fcnt), "{fcnt:#x}");
        assert_eq!(d.sessions(addr)[0].fcnt.last(), Some(0x5_0010));
        assert_eq!(d.take_counters().advanced, []);
        d.pass(fcnt::RESCUE_EVERY);
    }
    assert_eq!(decode(&mut d, 0x5_0011), Ok(Some(0x5_0011)));
    // Its frames ahead past the candidates are still found by the search.
    assert_eq!(decode(&mut d, 0xB_0001), Ok(Some(0xB_0001)));
}

/// A device unheard for more than [`BLOCKS_AHEAD`] halves is found again, but the search
/// past them runs at most once each [`fcnt::RESCUE_EVERY`] per session: a frame that fails
/// the MIC then (anyone's) takes it, and the device's frame waits for the next one.
#[test]
fn the_search_past_the_halves_ahead_runs_once_a_minute() {
    let decode =
        |d: &mut Decoder, phy: &[u8]| d.decode_uplink(phy, t0(), Radio::default()).map(|u| u.fcnt);
    let far = up(0x5_0010, Some(2), b"p");
    let mut forged = up(0x5_0011, Some(2), b"p");
    *forged.last_mut().unwrap() ^= 1;
    let mut d = decoder();
    assert!(d.resume(DevAddr(0x2601_1BDA), DEV_EUI, 0x10, None, None, None));
    assert!(matches!(
        decode(&mut d, &forged),
        Err(LorawanError::MicMismatch { .. })
    ));
    assert!(matches!(
        decode(&mut d, &far),
        Err(LorawanError::MicMismatch { .. })
    ));
    // Half the interval each time: real time passing between the decodes adds to the
    // decoder's clock too, and half a minute of it, not a millisecond, would have to pass
    // for the search to run early.
    d.pass(fcnt::RESCUE_EVERY / 2);
    assert!(
        matches!(decode(&mut d, &far), Err(LorawanError::MicMismatch { .. })),
        "within the minute"
    );
    d.pass(fcnt::RESCUE_EVERY / 2);
    assert_eq!(decode(&mut d, &far), Ok(Some(0x5_0010)));
    assert_eq!(
        d.sessions(DevAddr(0x2601_1BDA))[0].fcnt.last(),
        Some(0x5_0010)
    );
}

#[test]
fn rescue_candidates_are_the_first_search_less_what_was_tried() {
    assert!(FcntTracker::new().rescue_candidates(7).is_empty());
    let t = FcntTracker::resume(0x2_0010);
    let more = t.rescue_candidates(0x11);
    let tried = t.candidates(0x11);
    assert_eq!(
        more.len() + tried.len(),
        fcnt::INITIAL_UPPER_HALVES as usize
    );
    assert!(more
        .iter()
        .all(|c| c & 0xFFFF == 0x11 && !tried.contains(c)));
    assert_eq!(more[..3], [0x11, 0x1_0011, 0x7_0011]);
}

/// Two gateways hear one device: the first hears FCnt 7 and, its backhaul down, queues it
/// (a store-and-forward gateway, an MQTT client's offline queue); the second misses it and
/// delivers FCnt 8 at once. FCnt 7 arrives after 8: never accepted, it is a reading of its
/// own, not a replay, and the device will not send it again. It is taken once, and leaves
/// the counter to keep at 8 (with 8's MIC), 7 taken in its window. The same across a
/// rollover of the 16 bits on air, and for one below the session's first frame.
#[test]
fn a_frame_never_accepted_is_taken_after_a_newer_one() {
    let dev = DevAddr(0x2601_1BDA);
    for (first, newer, late) in [(6, 8, 7), (0xFFF0, 0x1_0002, 0xFFF5)] {
        let mut d = decoder();
        for fcnt in [first, newer] {
            d.decode_uplink(&up(fcnt, Some(2), b"on time"), t0(), Radio::default())
                .unwrap();
        }
        d.take_counters();
        let frame = up(late, Some(2), b"late");
        let taken = d.decode_uplink(&frame, t0(), Radio::default());
        assert_eq!(
            taken.map(|u| (u.fcnt, u.payload)),
            Ok((Some(late), b"late".to_vec()))
        );
        let newer_mic = mic(&up(newer, Some(2), b"on time"));
        let advanced = d.take_counters().advanced;
        assert_eq!(
            (advanced.iter())
                .map(|a| (a.dev_addr, a.fcnt, a.counter.fcnt, a.counter.mic, a.at))
                .collect::<Vec<_>>(),
            [(dev, late, newer, newer_mic, None)],
            "the counter {late} leaves its session at"
        );
        let bit = 1 << (newer - late - 1);
        assert_ne!(advanced[0].counter.behind & bit, 0, "{late} taken");
        assert_eq!(
            d.decode_uplink(&frame, t0(), Radio::default()),
            Err(LorawanError::Replay {
                dev_addr: dev,
                fcnt: late,
                last: newer
            }),
            "{late} again"
        );
        let before_first = up(first - 1, Some(2), b"before");
        assert_eq!(
            d.decode_uplink(&before_first, t0(), Radio::default())
                .map(|u| u.fcnt),
            Ok(Some(first - 1)),
            "below the session's first frame, never taken: late too"
        );
    }
}

/// A device that restarts its counter sends the same bytes after each power-up: the own times
/// one gateway gives them tell such a reading an hour later from a copy heard within the copy
/// window. Another gateway's own time (its clock may be hours off) and hubgate's clock (a
/// frame without a time of its own) are not compared with it: such a frame is a copy, not a
/// reading made twice.
#[test]
fn only_one_gateways_own_times_tell_a_resetting_devices_reading_from_a_copy() {
    let mut d = resetting_decoder();
    let frame = up(0, Some(2), b"boot");
    let own = |time| FrameTime { time, own: true };
    let gateway = |id: &str| Radio {
        gateway_id: Some(id.into()),
        ..Radio::default()
    };
    let hour_later = t0() + Duration::from_secs(3600);
    let mut decode =
        |time: FrameTime, id| d.decode_uplink(&frame, time, gateway(id)).map(|u| u.fcnt);
    assert_eq!(decode(own(t0()), "a"), Ok(Some(0)));
    let copy = Err(LorawanError::Replay {
        dev_addr: DevAddr(0x2601_1BDA),
        fcnt: 0,
        last: 0,
    });
    assert_eq!(decode(own(hour_later), "b"), copy, "another gateway's time");
    assert_eq!(decode(hour_later.into(), "a"), copy, "hubgate's clock");
    assert_eq!(
        decode(own(hour_later), "a"),
        Ok(Some(0)),
        "the gateway's own time, an hour later: another reading"
    );
}
