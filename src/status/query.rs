//! The devices' query string: `q` (filter), `sort`, and `page` (the devices page) or
//! `offset` and `limit` (`/api/devices`).

use std::fmt::Write;

use crate::metrics::devices::{Selection, Sort};

/// Devices on a page of the devices page, and in an API answer unless `limit` says
/// otherwise: keeps a page under 150 KB with 10,000 devices heard (up to 1.4 KB of HTML
/// a device: a 64-byte name, three tags, 16 readings).
pub const DEVICES_PER_PAGE: usize = 100;
/// Most devices in one API answer: up to about 1.4 KB of JSON each (a 64-byte name, three
/// tags, the 16 readings a device keeps), so an answer stays under 0.8 MB (all 10,000 at
/// once were 6.5 MB with six readings, and serving them raised RSS by 15 MB; each of the 32
/// connections can hold one answer); a script reads 10,000 devices in twenty requests.
pub const API_MAX_LIMIT: usize = 500;

/// The devices page: [`DEVICES_PER_PAGE`] devices from page `page` (0 first).
pub fn page(query: Option<&str>) -> Selection {
    let mut sel = parse(query);
    sel.limit = DEVICES_PER_PAGE;
    sel.offset = number(query, "page").saturating_mul(DEVICES_PER_PAGE);
    sel
}

/// `/api/devices`: `limit` (1 to [`API_MAX_LIMIT`], default [`DEVICES_PER_PAGE`]) devices
/// from `offset`.
pub fn api(query: Option<&str>) -> Selection {
    let mut sel = parse(query);
    sel.offset = number(query, "offset");
    sel.limit = match value(query, "limit").and_then(|v| v.parse().ok()) {
        Some(n) => usize::clamp(n, 1, API_MAX_LIMIT),
        None => DEVICES_PER_PAGE,
    };
    sel
}

fn parse(query: Option<&str>) -> Selection {
    Selection {
        filter: value(query, "q").unwrap_or_default(),
        sort: Sort::of_key(&value(query, "sort").unwrap_or_default()),
        offset: 0,
        limit: DEVICES_PER_PAGE,
    }
}

/// The last value of `key`, decoded.
fn value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').rev().find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// A count (0 if absent or not a number).
fn number(query: Option<&str>, key: &str) -> usize {
    value(query, key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// `application/x-www-form-urlencoded` value decoding (a bad escape stays as it is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded_and_encoded_back() {
        let q = page(Some("q=North+door%2F%C3%A9&sort=rssi&page=2&x"));
        assert_eq!(
            q,
            Selection {
                filter: "North door/é".into(),
                sort: Sort::Rssi,
                offset: 200,
                limit: DEVICES_PER_PAGE
            }
        );
        assert_eq!(percent_decode("%zz%4%é"), "%zz%4%é");
        assert_eq!(percent_decode(&percent_encode("a b/é&")), "a b/é&");
    }

    #[test]
    fn the_api_takes_offset_and_a_bounded_limit() {
        let q = api(Some("offset=250&limit=50&sort=silent&page=9"));
        assert_eq!((q.offset, q.limit, q.sort), (250, 50, Sort::Silent));
        assert_eq!(api(Some("limit=100000")).limit, API_MAX_LIMIT);
        assert_eq!(api(Some("limit=0")).limit, 1);
        assert_eq!(api(Some("limit=x&sort=nonsense")).limit, DEVICES_PER_PAGE);
        assert_eq!(api(None).sort, Sort::LastSeen);
        assert_eq!(
            page(Some("limit=5000")).limit,
            DEVICES_PER_PAGE,
            "not on pages"
        );
    }
}
