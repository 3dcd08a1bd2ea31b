//! A DNS server that never answers: a UDP socket of the test's own on a loopback address of
//! its own, the only nameserver of a resolv.conf bound over the real one in the command's own
//! mount namespace (`unshare -m`, with an nsswitch.conf that sends host names to it). A name
//! lookup there waits out the resolver's whole timeout, as behind a DNS server that drops
//! queries. Needs root (`unshare`, port 53): skipped without, failing with.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

pub struct BlackHoleDns {
    socket: UdpSocket,
    resolv: PathBuf,
    nsswitch: PathBuf,
}

impl BlackHoleDns {
    /// The server, the resolver waiting `timeout_secs` for it; `None` (the reason printed)
    /// without root.
    pub fn start(dir: &Path, timeout_secs: u32) -> Option<BlackHoleDns> {
        // SAFETY: a plain libc call without arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (unshare, port 53)");
            return None;
        }
        // An address of this process's own, and of each server in it.
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nameserver = Ipv4Addr::new(127, 53 + n, (pid >> 8) as u8, pid as u8);
        let socket = UdpSocket::bind((nameserver, 53))
            .unwrap_or_else(|e| panic!("cannot listen on {nameserver}:53: {e}"));
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {nameserver}\noptions timeout:{timeout_secs} attempts:1\n"),
        )
        .unwrap();
        let nsswitch = dir.join("nsswitch.conf");
        std::fs::write(&nsswitch, "hosts: files dns\n").unwrap();
        let dns = BlackHoleDns {
            socket,
            resolv,
            nsswitch,
        };
        let probe = dns.command("true").status();
        assert!(
            probe.as_ref().is_ok_and(|s| s.success()),
            "cannot bind files over /etc/resolv.conf and /etc/nsswitch.conf (each must exist, \
             not as a dangling link): {probe:?}"
        );
        Some(dns)
    }

    /// `program` (its arguments added to the command returned) with this server as its only
    /// nameserver.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/resolv.conf && mount --bind \"$1\" /etc/nsswitch.conf \
             && shift && exec \"$@\"",
        ])
        .arg(&self.resolv)
        .arg(&self.nsswitch)
        .arg(program);
        c
    }

    /// A config in `dir` whose one source is an MQTT broker named `host`, which this server
    /// is asked for, with a `stdout` sink and no metrics listener.
    pub fn mqtt_config(dir: &Path, host: &str) -> PathBuf {
        let cfg = dir.join("dns.toml");
        std::fs::write(
            &cfg,
            format!(
                "[buffer]\npath = {:?}\n[metrics]\nlisten = \"off\"\n[sink]\ntype = \"stdout\"\n\
                 [[source]]\ntype = \"mqtt\"\nurl = \"mqtt://{host}:1883\"\n\
                 topic = \"application/+/device/+/event/up\"\n",
                dir.join("buffer")
            ),
        )
        .unwrap();
        cfg
    }

    /// Wait up to `limit` for a query: then a lookup is waiting for the answer that never
    /// comes.
    pub fn wait_query(&self, limit: Duration) -> bool {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        self.socket.recv_from(&mut [0; 512]).is_ok()
    }
}
