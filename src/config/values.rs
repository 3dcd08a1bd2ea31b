//! Value forms of the config: sizes, durations, addresses, EUIs, codec ids.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serializer};

use crate::codec::Codec;
use crate::ids::{parse_eui64, DevEui};
use crate::lorawan::DevAddr;
use crate::mqtt_url::MqttUrl;

/// `check --print`'s forms of the values below: what their parsers read back.
pub(super) fn ser_listen<S: Serializer>(
    listen: &Option<std::net::SocketAddr>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match listen {
        Some(addr) => s.collect_str(addr),
        None => s.serialize_str("off"),
    }
}

pub(super) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// In the largest binary unit that divides it: `"256MiB"`, `"1000"`.
pub(super) fn ser_size<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    let unit = [(30, "GiB"), (20, "MiB"), (10, "KiB")]
        .into_iter()
        .find(|(shift, _)| *n > 0 && n.is_multiple_of(1 << shift));
    match unit {
        Some((shift, unit)) => s.collect_str(&format_args!("{}{unit}", n >> shift)),
        None => s.collect_str(n),
    }
}

pub(super) fn ser_display<T: std::fmt::Display, S: Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(super) fn ser_dev_addr<S: Serializer>(a: &Option<DevAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_none(),
    }
}

pub(super) fn ser_codec<S: Serializer>(c: &Option<Codec>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(c.id()),
        None => s.serialize_none(),
    }
}

pub(super) fn ser_euis<S: Serializer>(euis: &[[u8; 8]], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(euis.iter().map(hex::encode_upper))
}

pub(super) fn de_listen<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        de::Error::custom(format!(
            "bad address {s:?}: expected e.g. \"127.0.0.1:9898\", or \"off\""
        ))
    })
}

/// `"256MiB"`, `"10MB"`, `"4096"` or an integer.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. \"256MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "bad size unit in {s:?}: use B, KB, KiB, MB, MiB, GB or GiB"
            ))
        }
    };
    Ok((num * mult as f64) as u64)
}

/// A size: a whole number of bytes or a text with a unit.
pub(super) fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Size;
    impl de::Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number of bytes or a size such as \"256MiB\"")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
            Ok(n)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
            u64::try_from(n).map_err(|_| E::custom(format!("{n}: a size cannot be negative")))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
            parse_size(s).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

/// The longest duration any key takes: longer ones are typos, and past 2^64 milliseconds
/// (max_age is counted in them) or an `Instant`'s range (a quarantine's end) one would wrap
/// or panic.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let t = humantime::parse_duration(&s).map_err(|e| {
        de::Error::custom(format!("bad duration {s:?} ({e}): expected e.g. \"30s\""))
    })?;
    if t > MAX_DURATION {
        return Err(de::Error::custom(format!(
            "{s:?} is longer than the 100 years any duration here may be"
        )));
    }
    Ok(t)
}

/// A period that `"0s"` turns off and that is otherwise at least a second: a shorter one is a
/// typo (`"1ms"` for `"1m"`) that would log or ping in a tight loop (rumqttc panics on a
/// keep-alive under a second).
pub(super) fn de_period<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let p = de_duration(d)?;
    if !p.is_zero() && p < Duration::from_secs(1) {
        return Err(de::Error::custom(format!(
            "{p:?} is under a second: \"0s\" turns it off, else at least \"1s\""
        )));
    }
    Ok(p)
}

/// An MQTT keep-alive: `"0s"` (off) or whole seconds up to 65535. The protocol carries it as
/// 16-bit seconds and rumqttc truncates to them: `"1500ms"` would tell the broker 1 s while
/// pinging after 1.5 s (the broker drops the connection), `"65536s"` would wrap to 0 (off).
pub(super) fn de_keep_alive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let p = de_period(d)?;
    if p.subsec_nanos() != 0 || p.as_secs() > u64::from(u16::MAX) {
        return Err(de::Error::custom(format!(
            "{p:?} is not whole seconds from 1 to 65535 (MQTT's limit); \"0s\" turns it off"
        )));
    }
    Ok(p)
}

/// A wait of at least a second between attempts: a shorter one would retry in a tight loop.
pub(super) fn de_backoff<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let p = de_duration(d)?;
    if p < Duration::from_secs(1) {
        return Err(de::Error::custom(format!(
            "{p:?} is under a second: at least \"1s\""
        )));
    }
    Ok(p)
}

pub(super) fn de_dev_eui<'de, D: Deserializer<'de>>(d: D) -> Result<DevEui, D::Error> {
    DevEui::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

pub(super) fn de_euis<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 8]>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_eui64(s, "gateway EUI").map_err(de::Error::custom))
        .collect()
}

pub(super) fn de_dev_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DevAddr>, D::Error> {
    DevAddr::parse(&String::deserialize(d)?)
        .map(Some)
        .map_err(de::Error::custom)
}

pub(super) fn de_mqtt_url<'de, D: Deserializer<'de>>(d: D) -> Result<MqttUrl, D::Error> {
    MqttUrl::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

pub(super) fn de_codec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Codec>, D::Error> {
    let id = String::deserialize(d)?;
    Codec::from_id(&id).map(Some).ok_or_else(|| {
        de::Error::custom(format!(
            "unknown codec {id:?} (run `hubgate codecs` for the list)"
        ))
    })
}
