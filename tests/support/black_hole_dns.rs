//! A DNS server that never answers: a UDP socket of the test's own on a loopback address of
//! its own, the only nameserver of a resolv.conf bound over the real one in the command's own
//! mount namespace (`unshare -m`). A name lookup there waits out the resolver's whole
//! timeout, as behind a DNS server that drops queries. Needs root (`unshare`, port 53).

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct BlackHoleDns {
    socket: UdpSocket,
    resolv: PathBuf,
}

impl BlackHoleDns {
    /// The server, the resolver waiting `timeout_secs` for it; `None` (the reason printed)
    /// where it cannot be set up, without root.
    pub fn start(dir: &Path, timeout_secs: u32) -> Option<BlackHoleDns> {
        let pid = std::process::id();
        let nameserver = Ipv4Addr::new(127, 53, (pid >> 8) as u8, pid as u8);
        let Ok(socket) = UdpSocket::bind((nameserver, 53)) else {
            eprintln!("skipped: cannot listen on port 53 here (needs root)");
            return None;
        };
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {nameserver}\noptions timeout:{timeout_secs} attempts:1\n"),
        )
        .unwrap();
        let dns = BlackHoleDns { socket, resolv };
        if !dns.command("true").status().is_ok_and(|s| s.success()) {
            eprintln!(
                "skipped: cannot bind a file over /etc/resolv.conf here (unshare needs root)"
            );
            return None;
        }
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
            "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
        ])
        .arg(&self.resolv)
        .arg(program);
        c
    }

    /// Wait up to `limit` for a query: then a lookup is waiting for the answer that never
    /// comes.
    pub fn wait_query(&self, limit: Duration) -> bool {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        self.socket.recv_from(&mut [0; 512]).is_ok()
    }
}
