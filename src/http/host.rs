//! Which host names the listener answers to. A web page on another site, opened in a
//! browser that can reach the gateway, can point its own name at the gateway's address (DNS
//! rebinding) and then read the page and the JSON as its own; the browser still names that
//! site in `Host`. So a request for the page or the JSON is answered only when `Host` is
//! absent (HTTP/1.0 scripts), an IP literal, `localhost`, this machine's host name or
//! `<name>.local` (mDNS, how installers reach a Pi), or a name the operator lists in
//! `[metrics] hosts`; any other gets 421. Names are compared without case and without a
//! final dot. `/metrics` is answered for any name (see `respond`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Where the machine's host name is read, once at start.
const HOSTNAME: &str = "/proc/sys/kernel/hostname";

pub struct Names {
    /// Lower case, without a final dot; `localhost` first.
    names: Vec<String>,
}

impl Names {
    /// `localhost`, the machine's host name and its mDNS name, and `listed` (the config's).
    pub fn of(listed: &[String]) -> Names {
        let machine = std::fs::read_to_string(HOSTNAME).unwrap_or_default();
        Names::new(machine.trim(), listed)
    }

    /// As [`Names::of`], with `machine` the host name (empty: unknown).
    pub fn new(machine: &str, listed: &[String]) -> Names {
        let mut names = vec!["localhost".to_string()];
        if !machine.is_empty() {
            // A fully qualified host name is reached by its first label over mDNS.
            let short = machine.split('.').next().unwrap_or(machine);
            names.extend([machine.to_string(), format!("{short}.local")]);
        }
        names.extend(listed.iter().cloned());
        for n in &mut names {
            *n = bare(n).to_ascii_lowercase();
        }
        Names { names }
    }

    /// Whether a request for `host` (its `Host` header or absolute URI's authority: a name or
    /// an IP literal, with or without a port) is answered; `None`: the request names none.
    pub fn allow(&self, host: Option<&str>) -> bool {
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return true;
        };
        let port_ok = |p: &str| p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if let Some(rest) = host.strip_prefix('[') {
            let Some((ip, after)) = rest.split_once(']') else {
                return false;
            };
            let port = after.strip_prefix(':').unwrap_or(after);
            return (after.is_empty() || after.starts_with(':') && port_ok(port))
                && ip.parse::<Ipv6Addr>().is_ok();
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port_ok(port) => name,
            Some(_) => return false,
            None => host,
        };
        name.parse::<Ipv4Addr>().is_ok()
            || self
                .names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(bare(name)))
    }
}

/// `name` without its final dot (`gw.example.net.` is `gw.example.net`).
fn bare(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// Whether `name` can be listed in `[metrics] hosts`: a DNS name (letters, digits and `-`
/// in dot-separated labels), without scheme, port or path.
pub fn valid(name: &str) -> bool {
    let name = bare(name);
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_names_and_ip_literals_are_answered() {
        let names = Names::new("gatepi", &["gw.Example.net".to_string()]);
        for host in [
            None,
            Some(""),
            Some("127.0.0.1:9898"),
            Some("192.168.1.20"),
            Some("[::1]:9898"),
            Some("[fe80::1]"),
            Some("localhost:9898"),
            Some("LocalHost"),
            Some("gatepi"),
            Some("GATEPI.local:9898"),
            Some("gatepi.local."),
            Some("gw.example.net:443"),
            Some("GW.EXAMPLE.NET"),
        ] {
            assert!(names.allow(host), "{host:?} refused");
        }
        for host in [
            "rebind.attacker.example:9898",
            "attacker.example",
            "127.0.0.1.nip.io",
            "localhost.attacker.example",
            "gatepi.attacker.example",
            "example.net",
            "gw.example.net:x",
            "[::1",
            "[::1]x",
            "[not-an-ip]:9898",
            "::1",
            "2130706433x",
        ] {
            assert!(!names.allow(Some(host)), "{host:?} answered");
        }
        let fqdn = Names::new("gatepi.lan", &[]);
        for host in ["gatepi.lan", "gatepi.local"] {
            assert!(fqdn.allow(Some(host)), "{host:?} refused");
        }
        assert!(!fqdn.allow(Some("gatepi")));
        let unknown = Names::new("", &[]);
        assert!(!unknown.allow(Some(".local")));
    }

    #[test]
    fn a_listed_name_is_a_plain_dns_name() {
        for name in ["gw.example.net", "gatepi", "gw-1.example.net."] {
            assert!(valid(name), "{name}");
        }
        for name in [
            "",
            "gw.example.net:9898",
            "http://gw.example.net",
            "gw.example.net/",
            "*.example.net",
            "gw..example.net",
            "-gw.example.net",
            "gw example",
        ] {
            assert!(!valid(name), "{name:?}");
        }
    }
}
