//! Skiply Smilio Action, the Microshare 5-button feedback terminal (docs/codecs.md, "Skiply Smilio Action").
//!
//! fPort 2. Byte 0 is the frame code:
//! * `0x02` normal data frame (after a push and/or periodically) and `0x03` the same after a
//!   magnetic badge was detected: five u16 BE press counters since reset →
//!   `pushes_since_reset`, and `swipe` (false on `0x02`, true on `0x03`);
//! * `0x40` pulse mode: the same counters, reset after each uplink →
//!   `pushes_since_transmit`;
//! * `0x01` keep-alive: u16 BE battery mV at idle and during emission (then `0x64`) →
//!   `device_health.voltage` (idle), no reading.
//!
//! Any other code (configuration query, CODE mode) is `UnknownType` at offset 0.
//!
//! Buttons: the counters are written in Microshare's button order, each with the button's name
//! as `context_id`, as Microshare writes it: `Button #1, Upper Left`, `Button #2, Upper Right`,
//! `Button #3, Lower Left`, `Button #4, Lower Right`, `Button #5, Middle`. On the wire the
//! middle button comes third: wire fields 1-5 are buttons 1, 2, 5, 3, 4, as in both of
//! Microshare's published feedback records (`02004b02620372002a00f6` of 2020,
//! `0200ed001b030d005d002f` of 2023).
use super::{check_port, rec_type, Bytes, CodecError, Decoded, Example, Reading};

models! {
    /// Smilio Action, the 5-button terminal.
    Action => "skiply-smilio-action",
}

const CODEC: &str = Model::Action.id();
const PORT: u8 = 2;

/// Buttons 1-5 in order: each one's name (its `context_id` in Microshare's records) and the
/// wire field (1-5, after the frame code) holding its counter; the middle button (5) is the
/// third field.
const BUTTONS: [(&str, usize); 5] = [
    ("Button #1, Upper Left", 1),
    ("Button #2, Upper Right", 2),
    ("Button #3, Lower Left", 4),
    ("Button #4, Lower Right", 5),
    ("Button #5, Middle", 3),
];

impl Model {
    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Action => rec_type::FEEDBACK,
        }
    }

    pub fn example(self) -> Example {
        let hex = match self {
            Model::Action => "0200010002000300040005",
        };
        Example { fport: PORT, hex }
    }

    pub fn decode(self, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        match self {
            Model::Action => action(fport, p),
        }
    }
}

fn action(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    check_port(CODEC, fport, PORT)?;
    let b = Bytes::new(CODEC, p);
    let code = b.u8(0)?;
    let need = match code {
        0x01 => 5,
        0x02 | 0x03 | 0x40 => 11,
        _ => {
            return Err(CodecError::UnknownType {
                codec: CODEC,
                offset: 0,
                byte: code,
            })
        }
    };
    b.need(need)?;
    let mut d = Decoded {
        rec_type: rec_type::FEEDBACK,
        ..Decoded::default()
    };
    if code == 0x01 {
        d.health.push(Reading::num(
            "voltage",
            f64::from(b.u16be(1)?) / 1000.0,
            "V",
        ));
        return Ok(d);
    }
    let field = if code == 0x40 {
        "pushes_since_transmit"
    } else {
        "pushes_since_reset"
    };
    for (name, wire) in BUTTONS {
        let count = b.u16be(1 + 2 * (wire - 1))?;
        d.readings
            .push(Reading::int(field, i64::from(count), None).named(name));
    }
    if code != 0x40 {
        d.readings.push(Reading::flag("swipe", code == 0x03));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    /// Counters of buttons 1-5, in that order, with their names as `context_id`.
    fn counts(field: &'static str, c: [i64; 5]) -> Vec<Reading> {
        [
            "Button #1, Upper Left",
            "Button #2, Upper Right",
            "Button #3, Lower Left",
            "Button #4, Lower Right",
            "Button #5, Middle",
        ]
        .into_iter()
        .zip(c)
        .map(|(b, v)| Reading::int(field, v, None).named(b))
        .collect()
    }

    fn with_swipe(mut r: Vec<Reading>, swipe: bool) -> Vec<Reading> {
        r.push(Reading::flag("swipe", swipe));
        r
    }

    /// Microshare's published feedback records, their payload and their values: Button #1
    /// Upper Left, #2 Upper Right, #3 Lower Left, #4 Lower Right, #5 Middle, and `swipe`
    /// false (2023; the 2020 record's Hall-effect flag is false too).
    #[test]
    fn microshares_published_records() {
        for (payload, buttons) in [
            ("0200ed001b030d005d002f", [237, 27, 93, 47, 781]),
            ("02004b02620372002a00f6", [75, 610, 42, 246, 882]),
        ] {
            let d = action(Some(2), &hex(payload)).unwrap();
            assert_eq!(d.rec_type, rec_type::FEEDBACK);
            assert_eq!(
                d.readings,
                with_swipe(counts("pushes_since_reset", buttons), false),
                "{payload}"
            );
            assert!(d.health.is_empty());
        }
    }

    #[test]
    fn normal_frame() {
        // Wire fields 1, 2, 3 (middle button), 4, 5.
        let d = action(Some(2), &hex("02 0001 0010 00A0 0023 0011")).unwrap();
        assert_eq!(
            d.readings,
            with_swipe(counts("pushes_since_reset", [1, 16, 35, 17, 160]), false)
        );
        // u16 maxima are not sign-extended; trailing bytes ignored.
        let d = action(None, &hex("02 FFFF 0000 8000 0000 0001 AA")).unwrap();
        assert_eq!(
            d.readings,
            with_swipe(counts("pushes_since_reset", [65535, 0, 0, 1, 32768]), false)
        );
    }

    #[test]
    fn badge_and_pulse_frames() {
        let d = action(Some(2), &hex("03 0001 0010 00A0 0023 0011")).unwrap();
        assert_eq!(
            d.readings,
            with_swipe(counts("pushes_since_reset", [1, 16, 35, 17, 160]), true)
        );
        // Pulse mode: no swipe (no published record says what Microshare writes there).
        let d = action(Some(2), &hex("40 0001 0000 0001 0000 0002")).unwrap();
        assert_eq!(d.readings, counts("pushes_since_transmit", [1, 0, 0, 2, 1]));
    }

    #[test]
    fn keep_alive() {
        let d = action(Some(2), &hex("01 0C80 0C1C 64")).unwrap();
        assert!(d.readings.is_empty());
        assert_eq!(d.health, vec![Reading::num("voltage", 3.2, "V")]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            action(Some(2), &hex("02 0001 0010 00A0 0023 00")).unwrap_err(),
            CodecError::Truncated {
                codec: CODEC,
                need: 11,
                got: 10
            }
        );
        assert_eq!(
            action(Some(2), &hex("04 00 AAAA 02 03 04 05")).unwrap_err(),
            CodecError::UnknownType {
                codec: CODEC,
                offset: 0,
                byte: 4
            }
        );
        assert!(matches!(
            action(Some(3), &hex("02 0001 0010 00A0 0023 0010")).unwrap_err(),
            CodecError::WrongPort { fport: 3, .. }
        ));
        assert!(action(None, &[]).is_err());
    }
}
