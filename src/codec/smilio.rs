//! Skiply Smilio Action, the Microshare 5-button feedback terminal (docs/codecs.md, "Skiply Smilio Action").
//!
//! fPort 2. Byte 0 is the frame code:
//! * `0x02` normal data frame (after a push and/or periodically) and `0x03` the same after a
//!   magnetic badge was detected (also emits `swipe`): five u16 BE press counters since
//!   reset → `pushes_since_reset`;
//! * `0x40` pulse mode: the same counters, reset after each uplink →
//!   `pushes_since_transmit`;
//! * `0x01` keep-alive: u16 BE battery mV at idle and during emission (then `0x64`) →
//!   `device_health.voltage` (idle), no reading.
//!
//! Any other code (configuration query, CODE mode) is `UnknownType` at offset 0.
//!
//! Button mapping (uncertain): the counters are emitted with `context_id` 1..5 in wire
//! order. Field 1 and 2 are buttons 1 and 2 (upper left, upper right) in every source. For
//! fields 3-5, Microshare's published example does not follow wire order and a third-party
//! parser numbers the middle button 3; until confirmed against Skiply's documentation or a
//! device, context_id 3-5 mean "wire fields 3-5", not a physical position.
use super::{check_port, rec_type, Bytes, CodecError, Decoded, Example, Reading};

models! {
    /// Smilio Action, the 5-button terminal.
    Action => "skiply-smilio-action",
}

const CODEC: &str = Model::Action.id();
const PORT: u8 = 2;

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
    if code == 0x03 {
        d.readings.push(Reading::flag("swipe", true));
    }
    for button in 1..=5u8 {
        let count = b.u16be(1 + 2 * usize::from(button - 1))?;
        d.readings
            .push(Reading::int(field, i64::from(count), None).ctx(button));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    fn counts(field: &'static str, c: [i64; 5]) -> Vec<Reading> {
        (1..=5u8)
            .zip(c)
            .map(|(b, v)| Reading::int(field, v, None).ctx(b))
            .collect()
    }

    #[test]
    fn normal_frame() {
        let d = action(Some(2), &hex("02 0001 0010 00A0 0023 0010")).unwrap();
        assert_eq!(d.rec_type, rec_type::FEEDBACK);
        assert_eq!(
            d.readings,
            counts("pushes_since_reset", [1, 16, 160, 35, 16])
        );
        assert!(d.health.is_empty());
        // u16 maxima are not sign-extended; trailing bytes ignored.
        let d = action(None, &hex("02 FFFF 0000 0000 0000 8000 AA")).unwrap();
        assert_eq!(
            d.readings,
            counts("pushes_since_reset", [65535, 0, 0, 0, 32768])
        );
    }

    #[test]
    fn badge_and_pulse_frames() {
        let d = action(Some(2), &hex("03 0001 0010 00A0 0023 0010")).unwrap();
        assert_eq!(d.readings[0], Reading::flag("swipe", true));
        assert_eq!(
            d.readings[1..],
            counts("pushes_since_reset", [1, 16, 160, 35, 16])
        );
        let d = action(Some(2), &hex("40 0001 0000 0001 0000 0001")).unwrap();
        assert_eq!(d.readings, counts("pushes_since_transmit", [1, 0, 1, 0, 1]));
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
