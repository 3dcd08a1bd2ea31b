//! An uplink as the sources hand it over: who sent what, when, and how it was heard.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant a record's ISO 8601 time can show: 9999-12-31T23:59:59.999Z.
pub const LATEST: Duration = Duration::from_millis(253_402_300_799_999);

/// Whether an uplink may carry time `t`: from 1970 (records hold ms since then) to the end of
/// year 9999 (their ISO 8601 fields have four digits for the year). Sources refuse other times
/// from input as `bad_time`.
pub fn valid_time(t: SystemTime) -> bool {
    t.duration_since(UNIX_EPOCH).is_ok_and(|d| d <= LATEST)
}

/// Radio metadata of the best reception of an uplink, when the source knows it. For a raw
/// radio frame, the best copy in the first datagram or message that carried it: a copy from
/// a later one (another gateway's too) is a duplicate however strong, not waited for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Radio {
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub gateway_id: Option<String>,
    pub frequency: Option<u64>,
    pub spreading_factor: Option<u8>,
    pub bandwidth: Option<u32>,
    /// The gateway's channel index, when the network server reports it.
    pub channel: Option<u32>,
    /// Every reception a network server listed (`rxInfo`, `rx_metadata`), at most
    /// [`MAX_GATEWAYS`] (the strongest), in its message's order; empty for a raw radio frame,
    /// whose one receiving gateway is the reception above.
    pub gateways: Vec<Reception>,
}

/// The most receptions of one uplink carried ([`Radio::gateways`]): every record of the
/// uplink (up to 33) lists them, and a message may claim thousands. A network server's
/// deduplication window rarely gathers more than a handful.
pub const MAX_GATEWAYS: usize = 32;

/// One gateway's reception of an uplink, as a network server lists it: an entry of the
/// record's `meta.iot.gateways`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reception {
    pub gateway_id: Option<String>,
    pub rssi: Option<i32>,
    pub snr: Option<f64>,
    pub channel: Option<u32>,
}

/// One application uplink: the device's FRMPayload, already decrypted by whoever delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub dev_eui: crate::ids::DevEui,
    /// The session's device address, where the transport gives it: a device that joined
    /// again restarts its FCnt under a new one, and the record id tells the sessions apart.
    pub dev_addr: Option<crate::lorawan::DevAddr>,
    pub device_name: Option<String>,
    pub fport: Option<u8>,
    pub fcnt: Option<u32>,
    pub payload: Vec<u8>,
    /// Network receive time, as reported by the network server (else: when hubgate got it).
    pub time: SystemTime,
    pub radio: Radio,
    /// What the network server decoded itself, when it did.
    pub ns: NsDecoded,
    /// How many uplinks the same source received before this one in the same millisecond of
    /// the clock, when `time` is that receive time: 0 for the first, and for every uplink
    /// with a time of its own. The record id hashes it where it hashes the time (no FCnt,
    /// or one a network server or a serial envelope gives) and only when above 0
    /// ([`crate::record::stable_id`]), so equal readings received in one millisecond keep
    /// ids of their own.
    pub same_ms_index: u32,
    /// The session a frame hubgate decrypted itself was taken under.
    pub session: Option<SessionPrint>,
}

/// What of a LoRaWAN session the record id hashes ([`crate::record::stable_id`]): where the
/// FCnt does not tell two readings of a device apart, this does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPrint {
    /// The session keys' [`crate::lorawan::SessionKeys::print`]: a device provisioned again
    /// (new keys under the same DevAddr) counts its FCnt from 0 again.
    pub keys: [u8; 4],
    /// The device restarts its FCnt (`resets_fcnt`): after a restart the same FCnt and
    /// payload come again as a reading of its own, received at another time, which the id
    /// hashes too.
    pub resets_fcnt: bool,
}

/// The payload as the network server decoded it: ChirpStack v4's `object` or TTS v3's
/// `decoded_payload` (the device codec's own field names), TTS v3's `normalized_payload`
/// (The Things Network's normalized schema: `air.temperature`, `action.motion.detected`...).
/// Empty for transports that carry no such thing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NsDecoded {
    pub object: Option<serde_json::Map<String, serde_json::Value>>,
    /// One normalized measurement per element.
    pub normalized: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The network server sent a decoded payload of this many JSON values, too many to carry
    /// ([`crate::format::MAX_NS_VALUES`]); `object` and `normalized` are then empty.
    pub oversized: Option<usize>,
    /// The network server sent a decoded payload the JSON parser refuses (nested too deep, a
    /// number out of range), and why; `object` and `normalized` are then empty.
    pub unreadable: Option<String>,
    /// The device profile the network server has the device under (ChirpStack v4
    /// `deviceInfo.deviceProfileName`): picks a JavaScript codec in `[codecs.profiles]`.
    pub profile: Option<String>,
    /// The device's brand in The Things Network's Device Repository (TTS
    /// `uplink_message.version_ids.brand_id`, `milesight-iot`): says what its normalized
    /// `battery` is when no mapping table does (`[codecs.normalized_battery]`).
    pub brand: Option<String>,
}

impl NsDecoded {
    pub fn is_empty(&self) -> bool {
        self.object.is_none() && self.normalized.is_empty()
    }
}

/// A radio frame's time, and whether it is its own (the gateway's or the network
/// server's), not when hubgate received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTime {
    pub time: SystemTime,
    pub own: bool,
}

impl From<SystemTime> for FrameTime {
    /// Received at `time`, with no time of its own.
    fn from(time: SystemTime) -> FrameTime {
        FrameTime { time, own: false }
    }
}

/// A received radio frame: a LoRaWAN PHYPayload plus how it was heard.
#[derive(Debug, Clone, PartialEq)]
pub struct RadioFrame {
    pub phy: Vec<u8>,
    pub time: FrameTime,
    pub radio: Radio,
    /// More copies of it the source heard in the same batch and merged into it (a gateway
    /// with two RF chains): the decoder counts each as it counts a copy that comes later.
    pub copies: u32,
}

impl Uplink {
    /// DevEUI in Microshare's dashed upper-case form, `58-A0-CB-00-00-10-12-34`.
    pub fn device_id(&self) -> String {
        self.dev_eui.dashed()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn valid_times_are_1970_to_9999() {
        use std::time::{Duration, UNIX_EPOCH};
        assert!(super::valid_time(UNIX_EPOCH));
        assert!(super::valid_time(UNIX_EPOCH + super::LATEST));
        assert!(!super::valid_time(
            UNIX_EPOCH + super::LATEST + Duration::from_millis(1)
        ));
        assert!(!super::valid_time(UNIX_EPOCH - Duration::from_secs(1)));
    }
}
