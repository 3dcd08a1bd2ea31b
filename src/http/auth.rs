//! Who may read the status page and metrics. On loopback, or with the read-only opt-in,
//! everyone; otherwise the password from `metrics.password_file`, by HTTP Basic (the
//! browser asks for it; any user name). The password is compared as SHA-256 digests in
//! constant time, and wrong guesses are rate-limited: after [`FAILURES`] in [`WINDOW`], every
//! request gets 429 until the window ends, without being checked.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

/// Wrong passwords accepted per window before the listener stops checking.
pub const FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);

pub enum Access {
    Open,
    Password(Password),
}

pub struct Password {
    digest: [u8; 32],
    failures: Mutex<Window>,
}

/// Wrong passwords since the first of the current window.
struct Window {
    since: Option<Instant>,
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
                failures: Mutex::new(Window {
                    since: None,
                    count: 0,
                }),
            }),
        }
    }

    /// `authorization`: the request's `Authorization` header, if any.
    pub fn check(&self, authorization: Option<&[u8]>, now: Instant) -> Verdict {
        let Access::Password(p) = self else {
            return Verdict::Allowed;
        };
        let mut w = p.failures.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = w.since.map(|s| now.saturating_duration_since(s));
        if elapsed.is_some_and(|e| e >= WINDOW) {
            *w = Window {
                since: None,
                count: 0,
            };
        } else if let (Some(e), true) = (elapsed, w.count >= FAILURES) {
            return Verdict::Locked(WINDOW - e);
        }
        let Some(given) = authorization.and_then(basic_password) else {
            return Verdict::Ask { wrong: false };
        };
        let digest: [u8; 32] = Sha256::digest(&given).into();
        if same(&digest, &p.digest) {
            Verdict::Allowed
        } else {
            w.since.get_or_insert(now);
            w.count += 1;
            Verdict::Ask { wrong: true }
        }
    }
}

/// The password of `Basic base64(user:password)`.
fn basic_password(header: &[u8]) -> Option<Vec<u8>> {
    let encoded = header
        .strip_prefix(b"Basic ")
        .or_else(|| header.strip_prefix(b"basic "))?;
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

    fn basic(user_pass: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        format!("Basic {b64}").into_bytes()
    }

    #[test]
    fn open_access_asks_nothing() {
        assert_eq!(
            Access::of(None).check(None, Instant::now()),
            Verdict::Allowed
        );
    }

    #[test]
    fn the_password_is_checked_whatever_the_user_name() {
        let a = Access::of(Some("s3cret:with colon"));
        let now = Instant::now();
        assert_eq!(a.check(None, now), Verdict::Ask { wrong: false });
        assert_eq!(
            a.check(Some(&basic("installer:s3cret:with colon")), now),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(Some(&basic(":s3cret:with colon")), now),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(Some(&basic("installer:s3cret")), now),
            Verdict::Ask { wrong: true }
        );
        assert_eq!(
            a.check(Some(b"Bearer s3cret"), now),
            Verdict::Ask { wrong: false }
        );
        assert_eq!(
            a.check(Some(b"Basic !!not base64"), now),
            Verdict::Ask { wrong: false }
        );
    }

    #[test]
    fn after_ten_wrong_passwords_nothing_is_checked_until_the_window_ends() {
        let a = Access::of(Some("right"));
        let t0 = Instant::now();
        for _ in 0..FAILURES {
            assert_eq!(
                a.check(Some(&basic("x:wrong")), t0),
                Verdict::Ask { wrong: true }
            );
        }
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            a.check(Some(&basic("x:right")), later),
            Verdict::Locked(Duration::from_secs(40)),
            "even the right password waits: guessing gets no answer"
        );
        assert_eq!(
            a.check(Some(&basic("x:right")), t0 + WINDOW),
            Verdict::Allowed
        );
    }
}
