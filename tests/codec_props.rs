//! Property tests: no codec panics on any input, and Cayenne readings always carry a channel.
use hubgate::codec::{Codec, Value};
use proptest::prelude::*;

const CASES: u32 = 10_000;

fn check(codec: Codec, fport: Option<u8>, payload: &[u8]) -> Result<(), TestCaseError> {
    // A panic inside decode fails the property (proptest catches it and shrinks).
    let Ok(d) = codec.decode(fport, payload) else {
        return Ok(());
    };
    prop_assert_eq!(d.rec_type, codec.rec_type());
    for r in d.readings.iter().chain(&d.health) {
        if let Value::Num(x) = r.value {
            prop_assert!(x.is_finite(), "{}: {} = {}", codec, r.field, x);
        }
    }
    if codec == Codec::CayenneLpp {
        prop_assert!(!d.readings.is_empty());
        for r in &d.readings {
            prop_assert!(r.context_id.is_some(), "{} without context_id", r.field);
        }
    }
    Ok(())
}

macro_rules! never_panics {
    ($($name:ident => $codec:expr),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(CASES))]
            $(
                #[test]
                fn $name(fport in any::<Option<u8>>(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
                    check($codec, fport, &payload)?;
                }
            )*
        }
    };
}

never_panics! {
    browan_tbhh100_never_panics => Codec::BrowanTbhh100,
    browan_tbhv110_never_panics => Codec::BrowanTbhv110,
    browan_tbms100_never_panics => Codec::BrowanTbms100,
    browan_tbdw100_never_panics => Codec::BrowanTbdw100,
    browan_tbwl100_never_panics => Codec::BrowanTbwl100,
    cayenne_lpp_never_panics => Codec::CayenneLpp,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Random bytes rarely form a whole LPP frame; build well-formed frames from known
    /// types so the success path (and its context_id) is exercised too.
    #[test]
    fn cayenne_wellformed_frames_decode_with_channels(
        items in prop::collection::vec(
            (any::<u8>(), prop::sample::select(vec![
                (0u8, 1usize), (1, 1), (2, 2), (3, 2), (100, 4), (101, 2), (102, 1), (103, 2),
                (104, 1), (113, 6), (115, 2), (116, 2), (117, 2), (118, 4), (120, 1), (121, 2),
                (125, 2), (128, 2), (130, 4), (131, 4), (132, 2), (133, 4), (134, 6), (135, 3),
                (136, 9), (142, 1),
            ]), prop::collection::vec(any::<u8>(), 9)),
            1..8,
        )
    ) {
        let mut frame = Vec::new();
        let mut channels = Vec::new();
        for (ch, (ty, n), bytes) in &items {
            frame.push(*ch);
            frame.push(*ty);
            frame.extend_from_slice(&bytes[..*n]);
            channels.push(*ch);
        }
        let d = Codec::CayenneLpp.decode(None, &frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &d.readings {
            prop_assert!(r.context_id.is_some_and(|c| channels.contains(&c)));
        }
    }

    /// Every Browan model decodes every frame of its exact length on its own port, except
    /// fPort-103 frames of the sibling model (status bit 3).
    #[test]
    fn browan_full_length_frames_decode(payload in prop::collection::vec(any::<u8>(), 11)) {
        for (codec, port, len) in [
            (Codec::BrowanTbms100, 102u8, 8usize),
            (Codec::BrowanTbdw100, 100, 8),
            (Codec::BrowanTbwl100, 106, 5),
        ] {
            prop_assert!(codec.decode(Some(port), &payload[..len]).is_ok());
        }
        let bit3 = payload[0] & 0x08 != 0;
        prop_assert_eq!(Codec::BrowanTbhh100.decode(Some(103), &payload[..8]).is_ok(), bit3);
        prop_assert_eq!(Codec::BrowanTbhv110.decode(Some(103), &payload).is_ok(), !bit3);
    }
}
