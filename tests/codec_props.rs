//! Property tests: no codec panics on any input, and Cayenne readings always carry a channel.
use hubgate::codec::{BrowanModel, CayenneModel, Codec, Context, NetvoxModel, Value};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const CASES: u32 = 10_000;

/// Each block's settings: a failure is reported, not written as a regressions file.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn check(codec: Codec, fport: Option<u8>, payload: &[u8]) -> Result<(), TestCaseError> {
    // A panic inside decode fails the property (proptest catches it and shrinks).
    let Ok(d) = codec.decode(fport, payload) else {
        return Ok(());
    };
    if codec == Codec::Netvox(NetvoxModel::Family) {
        // The family id takes its recType from the device-type byte of each frame.
        prop_assert!(
            ["environment", "openclose", "leak"]
                .iter()
                .any(|t| d.rec_type == format!("io.microshare.{t}.unpacked")),
            "{}",
            d.rec_type
        );
    } else if codec == Codec::Cayenne(CayenneModel::Lpp) {
        // Chosen from the types a frame holds (docs/codecs.md, "Cayenne LPP").
        prop_assert!(
            ["environment", "motion", "gps", "light"]
                .iter()
                .any(|t| d.rec_type == format!("io.microshare.{t}.unpacked")),
            "{}",
            d.rec_type
        );
    } else {
        prop_assert_eq!(d.rec_type, codec.rec_type());
    }
    prop_assert!(!d.is_empty());
    let past = d.history.iter().flat_map(|h| &h.readings);
    for r in d.readings.iter().chain(&d.health).chain(past) {
        if let Value::Num(x) = r.value {
            prop_assert!(x.is_finite(), "{}: {} = {}", codec, r.field, x);
        }
    }
    if codec == Codec::Cayenne(CayenneModel::Lpp) {
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
            #![proptest_config(config())]
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
    browan_tbhh100_never_panics => Codec::Browan(BrowanModel::Tbhh100),
    browan_tbhv110_never_panics => Codec::Browan(BrowanModel::Tbhv110),
    browan_tbms100_never_panics => Codec::Browan(BrowanModel::Tbms100),
    browan_tbdw100_never_panics => Codec::Browan(BrowanModel::Tbdw100),
    browan_tbwl100_never_panics => Codec::Browan(BrowanModel::Tbwl100),
    cayenne_lpp_never_panics => Codec::Cayenne(CayenneModel::Lpp),
}

/// Every codec in `Codec::ALL` (every alias too), so a codec added later is covered without
/// touching this file.
#[test]
fn every_codec_never_panics() {
    for &codec in Codec::ALL {
        let mut runner = TestRunner::new(config());
        let strategy = (
            any::<Option<u8>>(),
            prop::collection::vec(any::<u8>(), 0..64),
        );
        runner
            .run(&strategy, |(fport, payload)| check(codec, fport, &payload))
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
    }
}

/// Frames built from known (type, length) records, so the success paths run too.
fn records(known: Vec<(Vec<u8>, usize)>, max: usize) -> impl Strategy<Value = (Vec<u8>, usize)> {
    prop::collection::vec(
        (
            prop::sample::select(known),
            prop::collection::vec(any::<u8>(), 65),
        ),
        1..max,
    )
    .prop_map(|items| {
        let mut frame = Vec::new();
        for ((head, n), bytes) in &items {
            frame.extend_from_slice(head);
            frame.extend_from_slice(&bytes[..*n]);
        }
        (frame, items.len())
    })
}

/// Every Elsys type except 0x09 GPS, which is skipped undecoded (a GPS-only frame has no
/// measurement and is rightly an error; the unit tests cover it).
fn elsys_records() -> Vec<(Vec<u8>, usize)> {
    [
        (0x01u8, 2usize),
        (0x02, 1),
        (0x03, 3),
        (0x04, 2),
        (0x05, 1),
        (0x06, 2),
        (0x07, 2),
        (0x08, 2),
        (0x0A, 2),
        (0x0B, 4),
        (0x0C, 2),
        (0x0D, 1),
        (0x0E, 2),
        (0x0F, 1),
        (0x10, 4),
        (0x11, 1),
        (0x12, 1),
        (0x13, 65),
        (0x14, 4),
        (0x15, 2),
        (0x16, 2),
        (0x17, 4),
        (0x18, 2),
        (0x19, 2),
        (0x1A, 1),
        (0x1B, 4),
        (0x1C, 2),
    ]
    .into_iter()
    .map(|(t, n)| (vec![t], n))
    .collect()
}

fn milesight_records() -> Vec<(Vec<u8>, usize)> {
    [
        (0x01u8, 0x75u8, 1usize),
        (0x03, 0x67, 2),
        (0x04, 0x68, 1),
        (0x05, 0x00, 1),
        (0x06, 0x00, 1),
        (0x06, 0xCB, 1),
        (0x07, 0x7D, 2),
        (0x08, 0x7D, 2),
        (0x08, 0xE6, 2),
        (0x09, 0x73, 2),
        (0x0A, 0x7D, 2),
        (0x0B, 0x7D, 2),
        (0x0C, 0x7D, 2),
        (0x0D, 0x7D, 2),
        (0x0E, 0x01, 1),
        (0x03, 0x00, 1),
        (0x04, 0x00, 1),
        (0xFF, 0x2E, 1),
        (0x20, 0xCE, 8),
    ]
    .into_iter()
    .map(|(c, t, n)| (vec![c, t], n))
    .collect()
}

proptest! {
    #![proptest_config(config())]

    /// Well-formed Elsys frames decode for every model; 0x01 temperature records repeat in
    /// order.
    #[test]
    fn elsys_wellformed_frames_decode((frame, _) in records(elsys_records(), 6)) {
        for &codec in Codec::ALL.iter().filter(|c| matches!(c, Codec::Elsys(_))) {
            let d = codec.decode(None, &frame).map_err(|e| TestCaseError::fail(format!("{codec}: {e}")))?;
            check(codec, None, &frame)?;
            let mut off = 0;
            let mut temps = Vec::new();
            while off < frame.len() {
                let n = elsys_records().into_iter().find(|(h, _)| h[0] == frame[off]).unwrap().1;
                if frame[off] == 0x01 {
                    temps.push(f64::from(i16::from_be_bytes([frame[off + 1], frame[off + 2]])) / 10.0);
                }
                off += 1 + n;
            }
            let got: Vec<f64> = d.readings.iter()
                .filter(|r| r.field == "temperature")
                .map(|r| match r.value { Value::Num(x) => x, _ => f64::NAN })
                .collect();
            prop_assert_eq!(got, temps);
        }
    }

    /// Well-formed EM300 frames (8-byte history records) decode; each history record is a
    /// history entry of its own, apart from the live readings.
    #[test]
    fn milesight_wellformed_frames_decode((frame, _) in records(milesight_records(), 8)) {
        for id in ["milesight-em300-th", "milesight-em300-mcs", "milesight-em300-sld"] {
            let codec = Codec::from_id(id).unwrap();
            let d = codec.decode(None, &frame).map_err(|e| TestCaseError::fail(format!("{codec}: {e}")))?;
            check(codec, None, &frame)?;
            let records = frame.windows(2).filter(|w| w == &[0x20, 0xCE]).count();
            // At most one per `20 CE` (a value's bytes can hold those two too).
            prop_assert!(d.history.len() <= records);
            for r in d.readings.iter().chain(d.history.iter().flat_map(|h| &h.readings)) {
                prop_assert!(r.context_id.is_some(), "{} without channel", r.field);
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

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
            let mut bytes = bytes[..*n].to_vec();
            if *ty == 136 {
                // Latitude and longitude within ±6.5°: a position off the globe is Invalid.
                bytes[0] = 0;
                bytes[3] = 0;
            }
            frame.extend_from_slice(&bytes);
            channels.push(*ch);
        }
        let lpp = Codec::Cayenne(CayenneModel::Lpp);
        let d = lpp.decode(None, &frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &d.readings {
            prop_assert!(
                matches!(r.context_id, Some(Context::Channel(c)) if channels.contains(&c)),
                "{:?}",
                r.context_id
            );
        }
        // And what every frame is checked for (its recType among it) on these well-formed ones.
        check(lpp, None, &frame)?;
    }

    /// Every Browan model decodes every frame of its exact length on its own port, except
    /// fPort-103 frames of the sibling model (status bit 3).
    #[test]
    fn browan_full_length_frames_decode(payload in prop::collection::vec(any::<u8>(), 11)) {
        for (codec, port, len) in [
            (Codec::Browan(BrowanModel::Tbms100), 102u8, 8usize),
            (Codec::Browan(BrowanModel::Tbdw100), 100, 8),
            (Codec::Browan(BrowanModel::Tbwl100), 106, 5),
        ] {
            prop_assert!(codec.decode(Some(port), &payload[..len]).is_ok());
        }
        let bit3 = payload[0] & 0x08 != 0;
        prop_assert_eq!(Codec::Browan(BrowanModel::Tbhh100).decode(Some(103), &payload[..8]).is_ok(), bit3);
        prop_assert_eq!(Codec::Browan(BrowanModel::Tbhv110).decode(Some(103), &payload).is_ok(), !bit3);
    }
}
