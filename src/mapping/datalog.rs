//! Text logs: the history some decoders return as one text instead of an array (Dragino's
//! `DATALOG`, `[22.05,21.3,51.2,2024-05-01 09:50:00],[...],`), cut into its bracketed
//! entries, each read into the values of a table's `columns`; and the date and time without
//! a zone those entries carry, read in the table's `zone`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};
use time::PrimitiveDateTime;

use super::Zone;

/// The entries of a text log, in their order, each as written: `[...]` from its `[` to the
/// next `]`, or text between entries that is none (up to the next `[`, the rest without one).
/// Commas and white space between entries separate them.
pub(super) fn pieces(log: &str) -> impl Iterator<Item = &str> {
    let mut rest = log;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(separator);
        if rest.is_empty() {
            return None;
        }
        let end = if rest.starts_with('[') {
            rest.find(']').map_or(rest.len(), |j| j + 1)
        } else {
            rest.find('[').unwrap_or(rest.len())
        };
        let (piece, after) = rest.split_at(end);
        rest = after;
        Some(piece.trim_end_matches(separator))
    })
}

fn separator(c: char) -> bool {
    c == ',' || c.is_whitespace()
}

/// The values of the entry `piece` by `columns`, if it is `[` one value per column, separated
/// by commas, `]`: each a number where it is written as one (JSON's way: `22.00`, `-3`, `1e3`),
/// else the text as written (`HighTrue`, `undefined`), spaces around it left out.
pub(super) fn values(piece: &str, columns: &[String]) -> Option<Map<String, Json>> {
    let inner = piece.strip_prefix('[')?.strip_suffix(']')?;
    if inner.contains('[') {
        return None;
    }
    let mut parts = inner.split(',');
    let mut entry = Map::new();
    for c in columns {
        let v = parts.next()?.trim();
        let v = serde_json::from_str::<serde_json::Number>(v)
            .map_or_else(|_| Json::String(v.into()), Json::Number);
        entry.insert(c.clone(), v);
    }
    parts.next().is_none().then_some(entry)
}

/// A date and time without a zone, as Dragino's decoders write a log entry's
/// (`2024-05-01 09:50:00`, the JavaScript engine's local time).
pub(super) fn wall_clock(text: &str) -> Option<PrimitiveDateTime> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    PrimitiveDateTime::parse(text, &format).ok()
}

/// The time `t` is in `zone`, or why it is none: in the local zone a wall-clock time may be
/// skipped (summer time begins) or come twice (it ends, or the standard offset goes back).
pub(super) fn in_zone(t: PrimitiveDateTime, zone: Zone) -> Result<SystemTime, &'static str> {
    let secs = match zone {
        Zone::Utc => t.assume_utc().unix_timestamp(),
        Zone::Local => local(t)?,
    };
    let secs = u64::try_from(secs).map_err(|_| "is before 1970")?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .filter(|t| crate::uplink::valid_time(*t))
        .ok_or("is past 9999")
}

/// Unix seconds of the local wall-clock time `t`, in the zone the C library reads (`TZ`; the
/// agent sets it at start where it is unset, so that this zone is the one its JavaScript
/// codecs write local times in, however `/etc/localtime` changes after).
///
/// The instants that may show `t` are `t` read as UTC less the zone's offset a day before
/// and a day after (the clock changes less often than that): those that show it are its
/// times. None is a time the clock skipped (set forward), two one it showed twice (set back:
/// summer time ended, or the standard offset went back). Four conversions, and no `mktime`,
/// which probes some seven hundred instants for a summer time a zone without one never had.
fn local(t: PrimitiveDateTime) -> Result<i64, &'static str> {
    let wanted = (
        t.year() - 1900,
        i32::from(u8::from(t.month())) - 1,
        i32::from(t.day()),
        i32::from(t.hour()),
        i32::from(t.minute()),
        i32::from(t.second()),
    );
    let u = t.assume_utc().unix_timestamp();
    // The first time found, and whether there was a second.
    let (mut found, mut twice) = (None, false);
    for around in [u - 86_400, u + 86_400] {
        // tm_gmtoff is a C long, 32 bits on some of the Pis' targets.
        #[allow(clippy::useless_conversion)]
        let Some(offset) = shown(around).map(|tm| i64::from(tm.tm_gmtoff)) else {
            continue;
        };
        let at = u - offset;
        if found == Some(at) {
            continue;
        }
        let clock = |tm: libc::tm| {
            (
                tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
            )
        };
        if shown(at).is_some_and(|tm| clock(tm) == wanted) {
            twice = found.is_some();
            found = found.or(Some(at));
        }
    }
    match (found, twice) {
        (Some(at), false) => Ok(at),
        (None, _) => Err("is no local time (the clock skipped it, or out of its range)"),
        (Some(_), true) => Err("is two local times (the clock went back over it)"),
    }
}

/// The local time the C library shows for Unix seconds `secs`, if its `time_t` holds them.
fn shown(secs: i64) -> Option<libc::tm> {
    // time_t is 32 bits on some of the Pis' targets.
    #[allow(clippy::useless_conversion)]
    let secs = libc::time_t::try_from(secs).ok()?;
    // SAFETY: tm is plain integers (and a zone name pointer, null here).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both point to values of their types that live through the call.
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    ok.then_some(tm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn columns(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| c.to_string()).collect()
    }

    /// LHT65N's log as its decoder writes it (each entry closed by a comma), and with other
    /// separators: the pieces in their order, text that is no entry a piece of its own.
    #[test]
    fn a_log_is_cut_into_its_entries_in_order() {
        let log = "[1.5,21.3,51.2,2024-05-01 09:50:00],[HighTrue,-0.5,40,2024-05-01 10:00:00],";
        assert_eq!(
            pieces(log).collect::<Vec<_>>(),
            [
                "[1.5,21.3,51.2,2024-05-01 09:50:00]",
                "[HighTrue,-0.5,40,2024-05-01 10:00:00]"
            ]
        );
        let log = " [1]\n[2] ,, junk, more [3\n[4,5] tail";
        assert_eq!(
            pieces(log).collect::<Vec<_>>(),
            ["[1]", "[2]", "junk, more", "[3\n[4,5]", "tail"]
        );
        assert_eq!(pieces("[1,2").collect::<Vec<_>>(), ["[1,2"]);
        assert_eq!(pieces(" ,\n").count(), 0);
    }

    /// An entry of one value per column gives them by name, numbers as numbers, the rest as
    /// text; any other count, or no brackets, gives none.
    #[test]
    fn an_entry_gives_its_values_by_column() {
        let c = columns(&["ext", "t", "h", "time"]);
        assert_eq!(
            values("[ 22.00, -3,1e3 ,2024-05-01 09:50:00]", &c).map(Json::Object),
            Some(json!({"ext": 22.0, "t": -3, "h": 1000.0, "time": "2024-05-01 09:50:00"}))
        );
        assert_eq!(
            values("[undefined,NaN,,2024-05-01 09:50:00]", &c).map(Json::Object),
            Some(json!({"ext": "undefined", "t": "NaN", "h": "", "time": "2024-05-01 09:50:00"}))
        );
        for bad in [
            "[1,2,3]",
            "[1,2,3,4,5]",
            "1,2,3,4",
            "[1,2,3,4",
            "[1,[2,3,4]",
            "[]",
        ] {
            assert_eq!(values(bad, &c), None, "{bad}");
        }
    }

    /// A zone-less time reads as UTC (the local zone's: tests/cli.rs, through a JavaScript
    /// codec that writes it).
    #[test]
    fn a_wall_clock_time_is_read_in_its_zone() {
        let at = |text| wall_clock(text).unwrap();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let utc = in_zone(at("2024-05-01 09:50:00"), Zone::Utc).unwrap();
        assert_eq!(secs(utc), 1_714_557_000);
        for bad in [
            "2024-05-01T09:50:00",
            "2024-5-1 09:50:00",
            "2024-02-30 00:00:00",
            "",
        ] {
            assert_eq!(wall_clock(bad), None, "{bad}");
        }
        assert_eq!(
            in_zone(at("1969-12-31 23:59:59"), Zone::Utc),
            Err("is before 1970")
        );
    }

    /// A wall-clock time the local zone shows once is the instant the local clock shows it at,
    /// in whatever zone the tests run, within the day around it as UTC (the times the clock
    /// skips or shows twice: tests/cli.rs, in Europe/Berlin).
    #[test]
    fn a_local_time_is_the_instant_the_local_clock_shows_it_at() {
        for text in [
            "2024-05-01 09:50:00",
            "2024-01-15 11:00:00",
            "1999-12-31 23:59:59",
        ] {
            let t = wall_clock(text).unwrap();
            let at = local(t).unwrap();
            assert!(
                (at - t.assume_utc().unix_timestamp()).abs() < 86_400,
                "{text}"
            );
            let tm = shown(at).unwrap();
            assert_eq!(
                (
                    tm.tm_year + 1900,
                    tm.tm_mon + 1,
                    tm.tm_mday,
                    tm.tm_hour,
                    tm.tm_min,
                    tm.tm_sec
                ),
                (
                    t.year(),
                    i32::from(u8::from(t.month())),
                    i32::from(t.day()),
                    i32::from(t.hour()),
                    i32::from(t.minute()),
                    i32::from(t.second())
                ),
                "{text}"
            );
            let secs = u64::try_from(at).unwrap();
            assert_eq!(
                in_zone(t, Zone::Local),
                Ok(UNIX_EPOCH + Duration::from_secs(secs)),
                "{text}"
            );
        }
    }
}
