//! Immediate TCP acknowledgements on the MQTT connection (Linux `TCP_QUICKACK`).
//!
//! A broker with Nagle's algorithm on (mosquitto's default) holds its next PUBLISH until the
//! previous segment is acknowledged. Linux delays that acknowledgement to piggyback it on
//! the answer, and hubgate answers (PUBACK) only once the record is durable: each message
//! waited for the broker's confirmation of the one before. `TCP_QUICKACK` sends the
//! acknowledgement now. The kernel goes back to delayed acknowledgements as soon as the
//! connection looks interactive again (a PUBACK sent soon after a read), so the option is set
//! again after each read.
//!
//! rumqttc builds its socket itself and hands out no handle to it, so after each CONNACK the
//! source looks for this process's sockets connected to the broker's address among its file
//! descriptors. Two sources of one process may connect to one broker: a socket one of them
//! claimed is not the other's, and a search that finds more than one unclaimed socket takes
//! none, as it cannot tell which is its own.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use socket2::SockRef;

/// Descriptors an MQTT source of this process holds as its connection's socket.
static CLAIMED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

fn claimed() -> std::sync::MutexGuard<'static, BTreeSet<RawFd>> {
    CLAIMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The claimed socket of one MQTT connection (none while it is down or was not found).
/// Dropping it releases the claim.
#[derive(Default)]
pub struct QuickAck {
    socket: Option<RawFd>,
}

impl QuickAck {
    /// Claim the one socket of this process connected to `host:port` (resolved as rumqttc
    /// resolves it) that no other source holds; on failure why, for the log.
    ///
    /// Run it as a task of its own: the name lookup may wait for a DNS server.
    pub async fn find(host: String, port: u16) -> Result<QuickAck, String> {
        let peers: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| format!("{host}:{port} does not resolve now ({e})"))?
            .collect();
        // Reading /proc/self/fd never waits for a disk, but it is a file system walk.
        let found = tokio::task::spawn_blocking(move || QuickAck::claim(&peers))
            .await
            .map_err(|e| e.to_string())?;
        found.map_err(|n| {
            format!("{n} unclaimed sockets of this process are connected to {host}:{port}, not one")
        })
    }

    /// Claim the one unclaimed socket connected to one of `peers`, else none and how many
    /// there are.
    fn claim(peers: &[SocketAddr]) -> Result<QuickAck, usize> {
        // Held through the search, so two sources searching at once cannot both claim one.
        let mut claimed = claimed();
        let matches: Vec<RawFd> = connected_to(peers)
            .map_err(|_| 0usize)?
            .into_iter()
            .filter(|fd| !claimed.contains(fd))
            .collect();
        let [fd] = matches[..] else {
            return Err(matches.len());
        };
        claimed.insert(fd);
        drop(claimed);
        let quick = QuickAck { socket: Some(fd) };
        quick.now();
        Ok(quick)
    }

    /// Acknowledge what was read so far at once, and what comes next on reading it.
    pub fn now(&self) {
        if let Some(fd) = self.socket {
            // SAFETY: `fd` is rumqttc's open socket. It was found connected to the broker
            // after rumqttc's CONNACK and is claimed by this value alone. The socket is
            // closed only when a read or write on it fails: inside `EventLoop::poll`, which
            // then returns the error, or by the source after a failed write of PUBACKs,
            // whose error its next poll returns before any message. The source drops this
            // value at that error, before it polls again; only the task that polls calls
            // this. The borrow ends with the call and closes nothing.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = SockRef::from(&fd).set_tcp_quickack(true);
        }
    }
}

impl Drop for QuickAck {
    fn drop(&mut self) {
        if let Some(fd) = self.socket {
            claimed().remove(&fd);
        }
    }
}

/// This process's descriptors of TCP sockets connected to one of `peers`.
pub(super) fn connected_to(peers: &[SocketAddr]) -> std::io::Result<Vec<RawFd>> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            peer_of(fd)
                .and_then(|a| a.as_socket())
                .is_some_and(|a| peers.contains(&a))
        })
        .collect())
}

/// The peer of descriptor `fd`, if it is a connected stream socket (a UDP socket connected
/// to the same port number is another port).
fn peer_of(fd: RawFd) -> Option<socket2::SockAddr> {
    // SAFETY: `fd` may belong to any part of the process and be closed or reused by another
    // thread at any moment. The borrow only reads its type and peer address (getsockopt,
    // getpeername): a closed descriptor fails (EBADF), a reused one answers for its new
    // socket; nothing is written to or closed, and the borrow ends with the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = SockRef::from(&fd);
    if socket.r#type().ok()? != socket2::Type::STREAM {
        return None;
    }
    socket.peer_addr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn connect(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (client, accepted)
    }

    /// The client end of a connection is found by its peer's host name and port, as the MQTT
    /// source knows them (not the listener, not the accepted end), and a socket back in
    /// delayed-acknowledgement mode leaves it.
    #[tokio::test]
    async fn finds_the_connection_to_the_broker_and_acknowledges_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (client, _accepted) = connect(&listener);
        let quick = QuickAck::find("localhost".into(), port).await.unwrap();
        assert_eq!(quick.socket, Some(client.as_raw_fd()));
        let client = SockRef::from(&client);
        client.set_tcp_quickack(false).unwrap();
        assert!(!client.tcp_quickack().unwrap(), "delayed acknowledgements");
        quick.now();
        assert!(client.tcp_quickack().unwrap(), "immediate acknowledgements");
        assert_eq!(QuickAck::claim(&[]).err(), Some(0));
    }

    /// Two sources connected one after the other to one broker each claim their own
    /// socket; two connections found at once are left alone; a dropped claim is free again.
    #[tokio::test]
    async fn two_connections_to_one_broker_claim_different_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let find = || QuickAck::find("127.0.0.1".into(), port);
        let (first, _a) = connect(&listener);
        let one = find().await.unwrap();
        let (second, _b) = connect(&listener);
        let two = find().await.unwrap();
        assert_eq!(one.socket, Some(first.as_raw_fd()));
        assert_eq!(two.socket, Some(second.as_raw_fd()));
        let none = find().await.err().unwrap();
        assert!(none.starts_with("0 unclaimed"), "{none}");
        drop(one);
        let again = find().await.unwrap();
        assert_eq!(again.socket, Some(first.as_raw_fd()));
        let (_third, _c) = connect(&listener);
        let (_fourth, _d) = connect(&listener);
        let both = find().await.err().unwrap();
        assert!(both.starts_with("2 unclaimed"), "{both}");
    }

    /// A UDP socket connected to the broker's port number is not a connection to it.
    #[test]
    fn a_udp_socket_to_the_same_port_is_not_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let broker = listener.local_addr().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(broker).unwrap();
        let (client, _accepted) = connect(&listener);
        assert_eq!(connected_to(&[broker]).unwrap(), [client.as_raw_fd()]);
    }
}
