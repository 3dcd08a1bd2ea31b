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
use std::sync::Mutex;
use std::time::Duration;

/// Where the machine's host name is read, every [`READ_EVERY`], so a Pi renamed while the
/// agent runs answers to its new name. The kernel's name, and the static one that
/// `hostnamectl hostname` and raspi-config write: under the shipped unit
/// (`ProtectHostname=yes`) the agent has a UTS namespace of its own, whose kernel name stays
/// the one of its start when the machine is renamed.
const HOSTNAMES: [&str; 2] = ["/proc/sys/kernel/hostname", "/etc/hostname"];
/// How often the host-name files are read again: on the blocking pool, never for a request
/// (`/etc/hostname` is on the SD card), so a rename is answered within this long. A rename is
/// rare, and an idle gateway should wake up seldom: as often as the sink's key files are read
/// (`pipeline::key_rotation`).
pub const READ_EVERY: Duration = Duration::from_secs(10);

pub struct Names {
    /// `localhost` and the config's names: lower case, without a final dot.
    listed: Vec<String>,
    /// The files holding the machine's host name.
    hostnames: Vec<PathBuf>,
    /// The machine's names as last read from `hostnames` ([`Names::read`]).
    machine: Mutex<Vec<String>>,
}

impl Names {
    /// `localhost`, the machine's host names and their mDNS names (once [`Names::read`]), and
    /// `listed` (the config's).
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
        Names {
            listed,
            hostnames,
            machine: Mutex::new(Vec::new()),
        }
    }

    /// Read the host-name files, on the blocking pool, and answer to the names in them from
    /// now on (instead of those of the last read).
    pub async fn read(&self) {
        let files = self.hostnames.clone();
        let names = crate::blocking::run(move || {
            files
                .iter()
                .filter_map(|file| {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    machine_name(&text).map(str::to_string)
                })
                .collect()
        })
        .await;
        *self.machine.lock().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// [`Names::read`] every [`READ_EVERY`], one read at a time, for ever.
    pub async fn keep_reading(&self) {
        loop {
            tokio::time::sleep(READ_EVERY).await;
            self.read().await;
        }
    }

    /// Whether a request for `host` (its `Host` header or absolute URI's authority: a name or
    /// an IP literal, with or without a port) is answered; `None`: the request names none.
    /// Reads no file: the machine's names are those of the last [`Names::read`].
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
            || self
                .machine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|machine| is_machine(machine, name))
    }
}

/// The host name in a host-name file's `text`: its first line that is neither empty nor a
/// comment (hostname(5)), without a final dot, if a `Host` header can name it: letters,
/// digits, `-`, `.` and `_` (no DNS name has one, but a kernel's host name may, and was
/// always answered).
fn machine_name(text: &str) -> Option<&str> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    Some(bare(line)).filter(|name| {
        (1..=253).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    })
}

/// Whether `name` is the host name `machine` or its mDNS name (a fully qualified host name
/// is reached by its first label over mDNS).
fn is_machine(machine: &str, name: &str) -> bool {
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
    async fn named(machine: &str, listed: &[String]) -> (tempfile::TempDir, Names) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hostname");
        std::fs::write(&file, format!("{machine}\n")).unwrap();
        let names = Names::reading(vec![file], listed);
        names.read().await;
        (dir, names)
    }

    #[tokio::test]
    async fn only_its_own_names_and_ip_literals_are_answered() {
        let (_dir, names) = named("gatepi", &["gw.Example.net".to_string()]).await;
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
        let (_dir, fqdn) = named("gatepi.lan", &[]).await;
        for host in ["gatepi.lan", "gatepi.local"] {
            assert!(fqdn.allow(Some(host)), "{host:?} refused");
        }
        assert!(!fqdn.allow(Some("gatepi")));
        let (_dir, unknown) = named("", &[]).await;
        assert!(!unknown.allow(Some(".local")));
        let missing = Names::reading(vec!["/nonexistent/hostname".into()], &[]);
        missing.read().await;
        assert!(missing.allow(Some("localhost")));
        assert!(!missing.allow(Some("gatepi")));
    }

    /// Once the files are read again (every [`READ_EVERY`]), not before: a request reads no
    /// file.
    #[tokio::test]
    async fn a_machine_renamed_while_it_runs_answers_to_its_new_name_only() {
        let (dir, names) = named("raspberrypi", &[]).await;
        assert!(names.allow(Some("raspberrypi.local:9898")));
        std::fs::write(dir.path().join("hostname"), "gate-7\n").unwrap();
        assert!(names.allow(Some("raspberrypi.local")));
        assert!(!names.allow(Some("gate-7.local")));
        names.read().await;
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
    #[tokio::test]
    async fn the_static_host_name_is_answered_beside_the_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, etc) = (dir.path().join("kernel"), dir.path().join("etc"));
        std::fs::write(&kernel, "raspberrypi\n").unwrap();
        std::fs::write(&etc, "# set by hostnamectl\n\ngate-7\n").unwrap();
        let names = Names::reading(vec![kernel, etc], &[]);
        names.read().await;
        for host in ["gate-7.local:9898", "GATE-7", "raspberrypi.local"] {
            assert!(names.allow(Some(host)), "{host:?} refused");
        }
        for host in ["set.local", "#", "gate-8.local"] {
            assert!(!names.allow(Some(host)), "{host:?} answered");
        }
    }

    /// A host-name file as hostnamectl, raspi-config or an editor leave it: CRLF line ends,
    /// a final dot; a line no `Host` header can name is not answered.
    #[test]
    fn the_name_in_a_host_name_file_is_its_first_line_a_host_can_name() {
        for (text, name) in [
            ("gate-7\n", Some("gate-7")),
            ("# comment\r\n\r\n  gate-7\r\n", Some("gate-7")),
            ("gate-7.\n", Some("gate-7")),
            ("gate-7.lan\nother\n", Some("gate-7.lan")),
            ("my gateway\n", None),
            ("*\n", None),
            ("gate_7\n", Some("gate_7")),
            ("gate/7\n", None),
            (".\n", None),
            ("", None),
            ("# only a comment\n", None),
        ] {
            assert_eq!(machine_name(text), name, "{text:?}");
        }
    }

    /// A host-name file that cannot be read at once (a FIFO with no writer stands for an SD
    /// card that does not answer) holds up no request, only its read on the blocking pool.
    #[tokio::test]
    async fn a_request_does_not_wait_for_a_host_name_file() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, stuck) = (dir.path().join("kernel"), dir.path().join("stuck"));
        std::fs::write(&kernel, "gatepi\n").unwrap();
        let fifo = std::ffi::CString::new(stuck.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let names = std::sync::Arc::new(Names::reading(vec![kernel, stuck.clone()], &[]));
        let (answered, answers) = std::sync::mpsc::channel();
        let asking = names.clone();
        std::thread::spawn(move || answered.send(asking.allow(Some("gate-7.local"))));
        assert_eq!(
            answers.recv_timeout(Duration::from_secs(10)),
            Ok(false),
            "a request waited for the file"
        );
        // The read goes on once the file gives its text.
        let writer = std::thread::spawn(move || std::fs::write(&stuck, "gate-7\n"));
        names.read().await;
        writer.join().unwrap().unwrap();
        assert!(names.allow(Some("gatepi.local")) && names.allow(Some("gate-7.local")));
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
