//! Who may read the status page and metrics. Without `metrics.password_file` (loopback, or
//! the read-only opt-in) everyone; with it every client, loopback and Prometheus included
//! (`basic_auth`), gives the password by HTTP Basic (the browser asks for it; any user name). The password is compared as SHA-256 digests in
//! constant time, and wrong guesses are rate-limited per client ([`client`]: an IPv4
//! address, or an IPv6 /64 network, as one host may take any address in its /64): after
//! [`FAILURES`] in [`WINDOW`], that client gets 429 until the window ends, without being
//! checked. One guessing host cannot lock the installer or Prometheus out, unless they share
//! its IPv4 address or its IPv6 /64; [`PEERS`] clients guessing at once lock out further new
//! clients until a window ends, which bounds the guesses a host with many addresses gets
//! answered.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Wrong passwords accepted per window before the listener stops checking.
pub const FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Clients ([`client`]) with wrong passwords tracked at once.
pub const PEERS: usize = 256;

pub enum Access {
    Open,
    Password(Password),
}

pub struct Password {
    digest: [u8; 32],
    /// By [`client`].
    failures: Mutex<HashMap<IpAddr, Window>>,
}

/// Wrong passwords from one client since the first of its current window.
struct Window {
    since: Instant,
    count: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No or a wrong password: 401, the browser asks.
    Ask {
        wrong: bool,
    },
    /// Too many wrong passwords lately: 429, try again after this long.
    Locked(Duration),
}

impl Access {
    pub fn of(password: Option<&str>) -> Access {
        match password {
            None => Access::Open,
            Some(p) => Access::Password(Password {
                digest: Sha256::digest(p.as_bytes()).into(),
                failures: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `authorization`: the request's `Authorization` header, if any; `peer`: who sent it.
    pub fn check(&self, authorization: Option<&[u8]>, peer: IpAddr, now: Instant) -> Verdict {
        let Access::Password(p) = self else {
            return Verdict::Allowed;
        };
        let peer = client(peer);
        let mut failures = p.failures.lock().unwrap_or_else(|e| e.into_inner());
        let left = |w: &Window| WINDOW.saturating_sub(now.saturating_duration_since(w.since));
        failures.retain(|_, w| !left(w).is_zero());
        if let Some(w) = failures.get(&peer).filter(|w| w.count >= FAILURES) {
            return Verdict::Locked(left(w));
        }
        if !failures.contains_key(&peer) && failures.len() >= PEERS {
            let soonest = failures.values().map(left).min().unwrap_or(WINDOW);
            return Verdict::Locked(soonest);
        }
        let Some(given) = authorization.and_then(basic_password) else {
            return Verdict::Ask { wrong: false };
        };
        let digest: [u8; 32] = Sha256::digest(&given).into();
        if same(&digest, &p.digest) {
            return Verdict::Allowed;
        }
        failures
            .entry(peer)
            .or_insert(Window {
                since: now,
                count: 0,
            })
            .count += 1;
        Verdict::Ask { wrong: true }
    }
}

/// Whom wrong passwords from `peer` are counted against, and its connections (at the cap,
/// `super::serve` closes one of the client holding the most): an IPv4 address (also when it
/// comes IPv4-mapped, as a dual-stack listener sees IPv4 peers), or an IPv6 address's /64
/// network. An IPv6 host has its whole /64 to pick addresses from (privacy addresses, or at
/// will); counted by address, one host could fill [`PEERS`] on its own and lock every new
/// client out, Prometheus included.
pub fn client(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// The password of `Basic base64(user:password)`; the scheme's name in any case (RFC 7235
/// 2.1), then one or more spaces.
fn basic_password(header: &[u8]) -> Option<Vec<u8>> {
    let space = header.iter().position(|&b| b == b' ')?;
    let (scheme, encoded) = header.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"Basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Equal digests, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 20));

    fn basic(user_pass: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        format!("Basic {b64}").into_bytes()
    }

    #[test]
    fn open_access_asks_nothing() {
        assert_eq!(
            Access::of(None).check(None, HOST, Instant::now()),
            Verdict::Allowed
        );
    }

    #[test]
    fn the_password_is_checked_whatever_the_user_name() {
        let a = Access::of(Some("s3cret:with colon"));
        let now = Instant::now();
        assert_eq!(a.check(None, HOST, now), Verdict::Ask { wrong: false });
        assert_eq!(
            a.check(Some(&basic("installer:s3cret:with colon")), HOST, now),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(Some(&basic(":s3cret:with colon")), HOST, now),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(Some(&basic("installer:s3cret")), HOST, now),
            Verdict::Ask { wrong: true }
        );
        assert_eq!(
            a.check(Some(b"Bearer s3cret"), HOST, now),
            Verdict::Ask { wrong: false }
        );
        assert_eq!(
            a.check(Some(b"Basic !!not base64"), HOST, now),
            Verdict::Ask { wrong: false }
        );
    }

    /// The scheme's name is case-insensitive (RFC 7235 2.1, RFC 7617 2): a script may send
    /// `BASIC`.
    #[test]
    fn the_scheme_is_named_in_any_case() {
        let a = Access::of(Some("s3cret"));
        let now = Instant::now();
        let b64 = base64::engine::general_purpose::STANDARD.encode("installer:s3cret");
        for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
            for spaces in [" ", "   "] {
                let header = format!("{scheme}{spaces}{b64}");
                assert_eq!(
                    a.check(Some(header.as_bytes()), HOST, now),
                    Verdict::Allowed,
                    "{header}"
                );
            }
        }
        for header in [
            format!("Basicx {b64}"),
            format!("Basic{b64}"),
            format!("Bearer {b64}"),
            format!(" Basic {b64}"),
        ] {
            assert_eq!(
                a.check(Some(header.as_bytes()), HOST, now),
                Verdict::Ask { wrong: false },
                "{header}"
            );
        }
    }

    #[test]
    fn after_ten_wrong_passwords_nothing_is_checked_until_the_window_ends() {
        let a = Access::of(Some("right"));
        let t0 = Instant::now();
        for _ in 0..FAILURES {
            assert_eq!(
                a.check(Some(&basic("x:wrong")), HOST, t0),
                Verdict::Ask { wrong: true }
            );
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            a.check(Some(&basic("x:right")), HOST, later),
            Verdict::Locked(Duration::from_secs(40)),
            "even the right password waits: guessing gets no answer"
        );
        assert_eq!(
            a.check(Some(&basic("x:right")), HOST, t0 + WINDOW),
            Verdict::Allowed
        );
    }

    #[test]
    fn one_guessing_host_does_not_lock_out_another_and_many_hosts_are_bounded() {
        let a = Access::of(Some("right"));
        let t0 = Instant::now();
        let host = |n: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        for _ in 0..FAILURES {
            a.check(Some(&basic("x:wrong")), host(0), t0);
        }
        assert!(matches!(
            a.check(Some(&basic("x:right")), host(0), t0),
            Verdict::Locked(_)
        ));
        assert_eq!(
            a.check(Some(&basic("x:right")), host(1), t0),
            Verdict::Allowed
        );
        for n in 1..PEERS as u32 {
            a.check(Some(&basic("x:wrong")), host(n), t0);
        }
        assert_eq!(
            a.check(Some(&basic("x:wrong")), host(PEERS as u32), t0),
            Verdict::Locked(WINDOW),
            "a new address past the cap is not checked"
        );
        assert_eq!(
            a.check(Some(&basic("x:right")), host(PEERS as u32), t0),
            Verdict::Locked(WINDOW),
            "not even the right one: a host with many addresses gets no answers"
        );
        assert_eq!(
            a.check(Some(&basic("x:right")), host(1), t0),
            Verdict::Allowed,
            "an address already seen is still checked"
        );
    }

    /// An address of the IPv6 /64 `net`: its last 64 bits are `host`.
    fn v6(net: u64, host: u64) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from((u128::from(net) << 64) | u128::from(host)))
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_cannot_lock_out_others_alone() {
        let a = Access::of(Some("right"));
        let t0 = Instant::now();
        let net = 0x2001_0db8_0000_0001;
        for n in 0..u64::from(FAILURES) {
            assert_eq!(
                a.check(Some(&basic("x:wrong")), v6(net, n), t0),
                Verdict::Ask { wrong: true }
            );
        }
        assert_eq!(
            a.check(Some(&basic("x:right")), v6(net, 0xffff), t0),
            Verdict::Locked(WINDOW),
            "another address of the same /64 is the same client"
        );
        for n in 0..2 * PEERS as u64 {
            a.check(Some(&basic("x:wrong")), v6(net, 0x1_0000 + n), t0);
        }
        assert_eq!(
            a.check(Some(&basic("x:right")), HOST, t0),
            Verdict::Allowed,
            "one /64's addresses do not fill the cap"
        );
        assert_eq!(
            a.check(Some(&basic("x:right")), v6(net + 1, 1), t0),
            Verdict::Allowed,
            "another /64 is another client"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_counted_as_its_ipv4_address() {
        let a = Access::of(Some("right"));
        let t0 = Instant::now();
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 168, 1, 20).to_ipv6_mapped());
        for peer in [HOST, mapped].repeat(FAILURES as usize / 2) {
            assert_eq!(
                a.check(Some(&basic("x:wrong")), peer, t0),
                Verdict::Ask { wrong: true }
            );
        }
        for peer in [HOST, mapped] {
            assert_eq!(
                a.check(Some(&basic("x:right")), peer, t0),
                Verdict::Locked(WINDOW),
                "{peer}"
            );
        }
    }

    /// Digests are the same only when every byte is: differences in two bytes that would
    /// cancel out if combined by xor (one wrong password in 256 would pass) still differ.
    #[test]
    fn digests_differing_anywhere_are_not_the_same() {
        let a = [0u8; 32];
        assert!(same(&a, &a));
        for i in 0..32 {
            let mut b = a;
            b[i] = 0x80;
            assert!(!same(&a, &b), "byte {i}");
        }
        let mut b = a;
        b[0] = 1;
        b[31] = 1;
        assert!(!same(&a, &b), "two bytes differing alike");
    }
}
