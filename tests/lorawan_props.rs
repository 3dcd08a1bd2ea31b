//! Property tests: no LoRaWAN input makes hubgate panic, and frames built by the `lorawan`
//! crate's creator come back out of `decode_uplink` unchanged.
use std::time::SystemTime;

use hubgate::ids::DevEui;
use hubgate::lorawan::{parse, Decoder, DevAddr, Key, LorawanError, Session, SessionKeys};
use hubgate::uplink::Radio;
use proptest::prelude::*;

const CASES: u32 = 20_000;
const NWK: [u8; 16] = [
    0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F, 0x3C,
];
const APP: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const DEV_ADDR: u32 = 0x2601_1BDA;
const DEV_EUI: DevEui = DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]);

fn decoder(last: Option<u32>) -> Decoder {
    decoder_of(last, false)
}

/// A decoder with the session, at counter `last` if any, of a device that restarts its
/// counter (`resets_fcnt`) if `resets`.
fn decoder_of(last: Option<u32>, resets: bool) -> Decoder {
    let s = Session::new(
        DevAddr(DEV_ADDR),
        DEV_EUI,
        SessionKeys {
            nwk_s_key: Key::new(NWK),
            app_s_key: Key::new(APP),
        },
    );
    let mut d = Decoder::new();
    d.add(if resets { s.resetting_fcnt() } else { s });
    if let Some(l) = last {
        assert!(d.resume(DevAddr(DEV_ADDR), DEV_EUI, l, None, None, None));
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parse_never_panics(phy in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&phy);
    }

    /// Arbitrary bytes, half of them dressed as an uplink to the known session so the MIC,
    /// FCnt and decryption paths run too. A frame refused leaves the session's counter as it
    /// was: what anyone on the packet forwarder's port can send without the keys cannot move
    /// it (which would refuse the device's own frames).
    #[test]
    fn decode_uplink_never_panics(
        mut phy in prop::collection::vec(any::<u8>(), 0..300),
        aim in any::<bool>(),
        last in any::<Option<u32>>(),
    ) {
        if aim && phy.len() >= 5 {
            phy[0] = 0x40;
            phy[1..5].copy_from_slice(&DEV_ADDR.to_le_bytes());
        }
        let mut d = decoder(last);
        let before = d.sessions(DevAddr(DEV_ADDR))[0].fcnt.clone();
        match d.decode_uplink(&phy, SystemTime::UNIX_EPOCH, Radio::default()) {
            Ok(u) => prop_assert_eq!(u.dev_eui, DEV_EUI),
            Err(_) => prop_assert_eq!(&d.sessions(DevAddr(DEV_ADDR))[0].fcnt, &before),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Encrypt and MIC with the crate's creator, decode with hubgate: same payload, port and
    /// 32-bit counter, including across 16-bit rollovers (a gap of up to `BLOCKS_AHEAD`
    /// halves, the device unheard for long); the same frame again is a replay. `last` stays
    /// low enough that `last + step` is a 32-bit counter.
    #[test]
    fn creator_frames_round_trip(
        payload in prop::collection::vec(any::<u8>(), 0..200),
        fport in 1u8..=255,
        last in 0u32..(u32::MAX - (hubgate::lorawan::BLOCKS_AHEAD << 16)),
        step in 1u32..(hubgate::lorawan::BLOCKS_AHEAD << 16),
    ) {
        let fcnt = last + step;
        let phy = creator_frame(fcnt, fport, &payload);
        let mut d = decoder(Some(last));
        let u = d.decode_uplink(&phy, SystemTime::UNIX_EPOCH, Radio::default()).unwrap();
        prop_assert_eq!(u.fcnt, Some(fcnt));
        prop_assert_eq!(u.fport, Some(fport));
        prop_assert_eq!(&u.payload, &payload);
        prop_assert!(d.decode_uplink(&phy, SystemTime::UNIX_EPOCH, Radio::default()).is_err());
    }

    /// A genuine frame captured earlier (at or below the last accepted counter), replayed by
    /// anyone, is refused and leaves the counter as it was. `last` is below 2^20 half of the
    /// time, where an old frame more than 4 halves back is found by the search past the
    /// candidates (and refused as old).
    #[test]
    fn a_replay_leaves_the_counter_as_it_was(
        last in prop_oneof![0u32..(16 << 16), any::<u32>()],
        back in prop_oneof![0u32..64, 0u32..(3 << 16), 0u32..(16 << 16)],
        fport in 1u8..=255,
    ) {
        let phy = creator_frame(last.saturating_sub(back), fport, b"old");
        let mut d = decoder(Some(last));
        let before = d.sessions(DevAddr(DEV_ADDR))[0].fcnt.clone();
        prop_assert!(d.decode_uplink(&phy, SystemTime::UNIX_EPOCH, Radio::default()).is_err());
        prop_assert_eq!(&d.sessions(DevAddr(DEV_ADDR))[0].fcnt, &before);
        prop_assert_eq!(d.take_counters().advanced, []);
    }

    /// A frame captured earlier in an upper half below the session's other than 0, which no
    /// candidate tries and only the once-a-minute search past them finds, is refused as old
    /// by any session, also one of a device that restarts its counter (`resets_fcnt`, which
    /// takes a smaller counter among the candidates for a restart): the counter stays as it
    /// was and no frame is accepted.
    #[test]
    fn a_frame_captured_in_a_half_only_the_search_tries_is_refused_as_old(
        (half, old_half) in (2u32..16).prop_flat_map(|h| (Just(h), 1..h)),
        low in any::<u16>(),
        old_low in any::<u16>(),
        resets in any::<bool>(),
        fport in 1u8..=255,
    ) {
        let last = (half << 16) | u32::from(low);
        let old = (old_half << 16) | u32::from(old_low);
        let mut d = decoder_of(Some(last), resets);
        let before = d.sessions(DevAddr(DEV_ADDR))[0].fcnt.clone();
        let decoded = d.decode_uplink(
            &creator_frame(old, fport, b"old"),
            SystemTime::UNIX_EPOCH,
            Radio::default(),
        );
        let refused = LorawanError::Replay { dev_addr: DevAddr(DEV_ADDR), fcnt: old, last };
        prop_assert_eq!(decoded.map(|u| u.fcnt), Err(refused));
        prop_assert_eq!(&d.sessions(DevAddr(DEV_ADDR))[0].fcnt, &before);
        prop_assert_eq!(d.take_counters().advanced, []);
    }

    /// A device whose counter (below 2^20) got more than `BLOCKS_AHEAD` halves ahead of its
    /// session's is found by the search past the candidates, whether or not it restarts its
    /// counter.
    #[test]
    fn a_device_past_the_halves_ahead_is_found_by_the_search(
        (half, new_half) in (0u32..11).prop_flat_map(|h| (Just(h), h + 5..16)),
        low in any::<u16>(),
        new_low in any::<u16>(),
        resets in any::<bool>(),
        fport in 1u8..=255,
    ) {
        let last = (half << 16) | u32::from(low);
        let fcnt = (new_half << 16) | u32::from(new_low);
        let mut d = decoder_of(Some(last), resets);
        let decoded = d.decode_uplink(
            &creator_frame(fcnt, fport, b"new"),
            SystemTime::UNIX_EPOCH,
            Radio::default(),
        );
        prop_assert_eq!(decoded.map(|u| u.fcnt), Ok(Some(fcnt)));
        prop_assert_eq!(d.sessions(DevAddr(DEV_ADDR))[0].fcnt.last(), Some(fcnt));
    }

    /// Frames of one device heard in any order, some more than once (gateways that queue,
    /// redeliveries): each is taken at most once; one is taken when it is the session's first,
    /// ahead of every frame taken, or late: at most `LATE_WINDOW` below the newest taken (below
    /// the first too: a session's first frame may be any). A frame taken leaves the
    /// counter to keep at the newest taken, with that frame's MIC; one refused (a replay, or
    /// a MIC failure when far below the newest across a rollover) leaves nothing to keep.
    /// Across 16-bit rollovers too (`base` anywhere below 2^20, where a session's first
    /// frame is looked for), and across a restart (`restart_at`, once every frame taken is
    /// durable) that resumes from the counter kept.
    #[test]
    fn frames_in_any_order_are_each_taken_once(
        base in 0u32..((16 << 16) - 400),
        offsets in prop::collection::vec(0u32..400, 1..40),
        restart_at in 0usize..40,
    ) {
        let window = hubgate::lorawan::fcnt::LATE_WINDOW;
        let mut d = decoder(None);
        let mut taken: Vec<u32> = Vec::new();
        let mut counter: Option<hubgate::lorawan::fcnt::Counter> = None;
        for (i, fcnt) in offsets.into_iter().map(|o| base + o).enumerate() {
            if let Some(c) = counter.filter(|_| i == restart_at) {
                d = decoder(None);
                let resumed = d.resume(DevAddr(DEV_ADDR), DEV_EUI, c.fcnt, Some(c.mic), Some(c.behind), None);
                prop_assert!(resumed);
            }
            let phy = creator_frame(fcnt, 2, &fcnt.to_be_bytes());
            let expected = match taken.iter().max() {
                Some(&newest) => {
                    !taken.contains(&fcnt) && (fcnt > newest || newest - fcnt <= window)
                }
                None => true,
            };
            let decoded = d.decode_uplink(&phy, SystemTime::UNIX_EPOCH, Radio::default());
            prop_assert_eq!(decoded.as_ref().map(|u| u.fcnt).ok(), expected.then_some(Some(fcnt)));
            if expected {
                taken.push(fcnt);
                let newest = *taken.iter().max().unwrap();
                let mic = creator_frame(newest, 2, &newest.to_be_bytes());
                let advanced = d.take_counters().advanced;
                let kept: Vec<_> = advanced.iter().map(|a| (a.fcnt, a.counter.fcnt, a.counter.mic)).collect();
                prop_assert_eq!(kept, [(fcnt, newest, mic[mic.len() - 4..].try_into().unwrap())]);
                counter = Some(advanced[0].counter);
            } else {
                prop_assert_eq!(d.take_counters().advanced, []);
            }
        }
    }
}

/// An uplink of the session at `fcnt`, built by the `lorawan` crate's creator.
fn creator_frame(fcnt: u32, fport: u8, payload: &[u8]) -> Vec<u8> {
    let mut creator = lorawan::creator::DataPayloadCreator::new();
    creator
        .set_uplink(true)
        .set_confirmed(false)
        .set_dev_addr(&DEV_ADDR.to_le_bytes())
        .set_fcnt(fcnt)
        .set_f_port(fport);
    creator
        .build(
            payload,
            &[],
            &lorawan::keys::NewSKey::from(NWK),
            &lorawan::keys::AppSKey::from(APP),
        )
        .unwrap()
        .to_vec()
}
