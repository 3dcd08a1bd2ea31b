//! Which host names the listener answers to. A web page on another site, opened in a
//! browser that can reach the gateway, can point its own name at the gateway's address (DNS
//! rebinding) and then read the page and the JSON as its own; the browser still names that
//! site in `Host`. So a request for the page or the JSON is answered only when `Host` is
//! absent (HTTP/1.0 scripts), an IP literal, `localhost`, this machine's host name or
//! `<name>.local` (mDNS, how installers reach a Pi), or a name the operator lists in
//! `[metrics] hosts`; any other gets 421. Names are compared without case and without a
//! final dot. `/metrics` is answered for any name (see `respond`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Where the machine's host name is read: again for each request that names no other
/// allowed host, so a Pi renamed while the agent runs answers to its new name. The kernel's
/// name, and the static one that `hostnamectl hostname` and raspi-config write: under the
/// shipped unit (`ProtectHostname=yes`) the agent has a UTS namespace of its own, whose
/// kernel name stays the one of its start when the machine is renamed.
const HOSTNAMES: [&str; 2] = ["/proc/sys/kernel/hostname", "/etc/hostname"];

pub struct Names {
    /// `localhost` and the config's names: lower case, without a final dot.
    listed: Vec<String>,
    /// The files holding the machine's host name.
    hostnames: Vec<PathBuf>,
}

impl Names {
    /// `localhost`, the machine's host names and their mDNS names, and `listed` (the config's).
    pub fn of(listed: &[String]) -> Names {
        Names::reading(HOSTNAMES.map(PathBuf::from).to_vec(), listed)
    }

    /// As [`Names::of`], with the host names read from `hostnames` (one missing or empty:
    /// no name there).
    fn reading(hostnames: Vec<PathBuf>, listed: &[String]) -> Names {
        let listed = std::iter::once("localhost")
            .chain(listed.iter().map(String::as_str))
            .map(|n| bare(n).to_ascii_lowercase())
            .collect();
        Names { listed, hostnames }
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
        let name = bare(name);
        name.parse::<Ipv4Addr>().is_ok()
            || self.listed.iter().any(|n| n.eq_ignore_ascii_case(name))
            || self.hostnames.iter().any(|file| is_machine(file, name))
    }
}

/// Whether `name` is the host name in `file` or its mDNS name (a fully qualified host name
/// is reached by its first label over mDNS). The file's first line that is neither empty
/// nor a comment holds the name (hostname(5)).
fn is_machine(file: &std::path::Path, name: &str) -> bool {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let machine = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map_or("", bare);
    if machine.is_empty() {
        return false;
    }
    let short = machine.split('.').next().unwrap_or(machine);
    name.eq_ignore_ascii_case(machine)
        || name.rsplit_once('.').is_some_and(|(n, mdns)| {
            mdns.eq_ignore_ascii_case("local") && n.eq_ignore_ascii_case(short)
        })
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

    /// Names read from a host name file holding `machine` (kept while the names are used).
    fn named(machine: &str, listed: &[String]) -> (tempfile::TempDir, Names) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hostname");
        std::fs::write(&file, format!("{machine}\n")).unwrap();
        (dir, Names::reading(vec![file], listed))
    }

    #[test]
    fn only_its_own_names_and_ip_literals_are_answered() {
        let (_dir, names) = named("gatepi", &["gw.Example.net".to_string()]);
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
        let (_dir, fqdn) = named("gatepi.lan", &[]);
        for host in ["gatepi.lan", "gatepi.local"] {
            assert!(fqdn.allow(Some(host)), "{host:?} refused");
        }
        assert!(!fqdn.allow(Some("gatepi")));
        let (_dir, unknown) = named("", &[]);
        assert!(!unknown.allow(Some(".local")));
        let missing = Names::reading(vec!["/nonexistent/hostname".into()], &[]);
        assert!(missing.allow(Some("localhost")));
        assert!(!missing.allow(Some("gatepi")));
    }

    #[test]
    fn a_machine_renamed_while_it_runs_answers_to_its_new_name_only() {
        let (dir, names) = named("raspberrypi", &[]);
        assert!(names.allow(Some("raspberrypi.local:9898")));
        std::fs::write(dir.path().join("hostname"), "gate-7\n").unwrap();
        for host in ["gate-7", "gate-7.local", "GATE-7.Local:9898"] {
            assert!(names.allow(Some(host)), "{host:?} refused");
        }
        for host in ["raspberrypi", "raspberrypi.local"] {
            assert!(!names.allow(Some(host)), "{host:?} answered");
        }
    }

    /// Renamed with `hostnamectl` under `ProtectHostname=yes`: the kernel's name the agent
    /// sees is still the one of its start, `/etc/hostname` holds the new one (with
    /// hostname(5)'s comments); the new name is answered, and the old one as the agent still
    /// carries it.
    #[test]
    fn the_static_host_name_is_answered_beside_the_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, etc) = (dir.path().join("kernel"), dir.path().join("etc"));
        std::fs::write(&kernel, "raspberrypi\n").unwrap();
        std::fs::write(&etc, "# set by hostnamectl\n\ngate-7\n").unwrap();
        let names = Names::reading(vec![kernel, etc], &[]);
        for host in ["gate-7.local:9898", "GATE-7", "raspberrypi.local"] {
            assert!(names.allow(Some(host)), "{host:?} refused");
        }
        for host in ["set.local", "#", "gate-8.local"] {
            assert!(!names.allow(Some(host)), "{host:?} answered");
        }
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
