//! Datagrams the kernel dropped on a UDP source's socket because its receive buffer was full
//! (a burst faster than the source reads, or a stalled process). They never reach hubgate, so
//! nothing in it can count them; Linux counts them per socket in `/proc/self/net/udp` and
//! `/proc/self/net/udp6` (the last column, `drops`), found by the socket's inode. Not
//! `/proc/net/...`: under a unit with `ProcSubset=pid` procfs hides that link, while the
//! process's own `net` directory (the same network namespace) stays.
//!
//! Read when the metrics are rendered, not on a timer: nothing wakes up for it while idle.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// The UDP sources' sockets: (listen address, socket inode).
#[derive(Default)]
pub struct UdpDrops(Mutex<Vec<(String, u64)>>);

impl UdpDrops {
    /// Count drops of `socket`, listening on `listen`.
    pub fn watch(&self, listen: String, socket: &impl AsRawFd) -> std::io::Result<()> {
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))?.ino();
        self.lock().push((listen, inode));
        Ok(())
    }

    /// Drops so far by listen address; a socket the kernel does not list (gone, or no
    /// procfs) is left out.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let sockets = self.lock().clone();
        if sockets.is_empty() {
            return Vec::new();
        }
        let tables = ["/proc/self/net/udp", "/proc/self/net/udp6"].map(std::fs::read_to_string);
        let drops = tables.iter().flatten().flat_map(|t| t.lines().skip(1));
        let drops: Vec<(u64, u64)> = drops.filter_map(inode_and_drops).collect();
        sockets
            .into_iter()
            .filter_map(|(listen, inode)| {
                let (_, n) = drops.iter().find(|(i, _)| *i == inode)?;
                Some((listen, *n))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, u64)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A socket line of `/proc/self/net/udp`: `sl local rem st tx:rx tr:when retrnsmt uid timeout
/// inode ref pointer drops`.
fn inode_and_drops(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some((fields.get(9)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Datagrams sent to a socket nobody reads, past its smallest receive buffer, are
    /// dropped by the kernel and counted under the socket's listen address; another
    /// socket's are not.
    #[test]
    fn counts_what_the_kernel_dropped_on_the_socket() {
        let full = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket2::SockRef::from(&full)
            .set_recv_buffer_size(1)
            .unwrap();
        let other = UdpSocket::bind("[::1]:0").or_else(|_| UdpSocket::bind("127.0.0.1:0"));
        let other = other.unwrap();
        let drops = UdpDrops::default();
        drops.watch("full".into(), &full).unwrap();
        drops.watch("other".into(), &other).unwrap();
        assert_eq!(drops.snapshot(), [("full".into(), 0), ("other".into(), 0)]);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = [0u8; 1000];
        for _ in 0..100 {
            sender
                .send_to(&datagram, full.local_addr().unwrap())
                .unwrap();
        }
        let counted = drops.snapshot();
        assert_eq!(counted[1], ("other".into(), 0));
        let (listen, n) = &counted[0];
        assert_eq!(listen, "full");
        // The smallest buffer the kernel allows holds a few datagrams; the rest are dropped.
        assert!((90..=100).contains(n), "{n} dropped");
    }

    #[test]
    fn reads_the_inode_and_drops_columns() {
        let line = "  123: 0100007F:06A4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17";
        assert_eq!(inode_and_drops(line), Some((4242, 17)));
        assert_eq!(inode_and_drops("  sl  local_address"), None);
    }
}
