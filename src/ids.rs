//! Identifiers shared by every layer, parsed once where they enter: the config, a message
//! format, a serial envelope.

use std::fmt;

/// A device's EUI-64 (DevEUI), big-endian as LNS consoles and JSON show it. Displayed as 16
/// lower-case hex digits; [`DevEui::dashed`] gives Microshare's form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevEui(pub [u8; 8]);

impl DevEui {
    /// 16 hex digits in any case; dashes or colons between them are allowed.
    pub fn parse(s: &str) -> Result<DevEui, String> {
        parse_eui64(s, "DevEUI").map(DevEui)
    }

    /// Microshare's dashed upper-case form, `58-A0-CB-00-00-10-12-34`.
    ///
    /// Digit by digit: it is built for every record, and a `format!` per byte cost about
    /// 5,000 instructions a record (callgrind, release build).
    pub fn dashed(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut s = String::with_capacity(23);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push('-');
            }
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }
}

impl fmt::Display for DevEui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DevEui {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevEui({self})")
    }
}

/// An EUI-64 (a DevEUI, a gateway's EUI) written as 16 hex digits, dashes or colons allowed;
/// `what` names it in the error.
pub fn parse_eui64(s: &str, what: &str) -> Result<[u8; 8], String> {
    let clean: String = s.chars().filter(|c| *c != '-' && *c != ':').collect();
    let mut out = [0u8; 8];
    hex::decode_to_slice(&clean, &mut out)
        .map_err(|_| format!("bad {what} {s:?}: expected 16 hex digits"))?;
    Ok(out)
}

/// What an identifier in The Things Stack, a Device Repository brand among them
/// (`milesight-iot`), is made of: 2 to 36 lowercase letters, digits and dashes.
pub const TTS_ID_RULE: &str = "2 to 36 lowercase letters, digits and dashes";

/// Whether `s` is an identifier in The Things Stack ([`TTS_ID_RULE`]).
pub fn is_tts_id(s: &str) -> bool {
    (2..=36).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_eui_forms() {
        let eui = DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]);
        for text in [
            "58a0cb0000101234",
            "58A0CB0000101234",
            "58-A0-CB-00-00-10-12-34",
            "58:a0:cb:00:00:10:12:34",
        ] {
            assert_eq!(DevEui::parse(text), Ok(eui), "{text}");
        }
        assert_eq!(eui.to_string(), "58a0cb0000101234");
        assert_eq!(eui.dashed(), "58-A0-CB-00-00-10-12-34");
        let every_digit = DevEui([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert_eq!(every_digit.dashed(), "01-23-45-67-89-AB-CD-EF");
        assert_eq!(format!("{eui:?}"), "DevEui(58a0cb0000101234)");
        let e = DevEui::parse("0011").unwrap_err();
        assert_eq!(e, "bad DevEUI \"0011\": expected 16 hex digits");
        assert!(DevEui::parse("58a0cb000010123x").is_err());
    }
}
