//! Immediate TCP acknowledgements on the MQTT connection (Linux `TCP_QUICKACK`).
//!
//! A broker with Nagle's algorithm on (mosquitto's default) holds its next PUBLISH until the
//! previous segment is acknowledged. Linux delays that acknowledgement to piggyback it on
//! the answer, and hubgate answers (PUBACK) only once the record is durable: each message
//! waited for the broker's confirmation of the one before. `TCP_QUICKACK` sends the
//! acknowledgement now. The kernel goes back to delayed acknowledgements as soon as the
//! connection looks interactive again (a PUBACK sent soon after a read), so the option is set
//! after every read.
//!
//! rumqttc builds its socket itself and hands out no handle to it, so after each CONNACK the
//! source looks for this process's sockets connected to the broker's address among its file
//! descriptors.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use socket2::SockRef;

/// The sockets of one MQTT connection (empty while it is down).
#[derive(Default)]
pub struct QuickAck {
    sockets: Vec<RawFd>,
}

impl QuickAck {
    /// The sockets of this process connected to `host:port`, as rumqttc resolves it.
    pub async fn to(host: &str, port: u16) -> QuickAck {
        let peers: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => addrs.collect(),
            Err(_) => return QuickAck::default(),
        };
        // Reading /proc/self/fd never waits for a disk, but it is a file system walk.
        let quick = tokio::task::spawn_blocking(move || QuickAck::connected_to(&peers))
            .await
            .unwrap_or_default();
        if quick.sockets.is_empty() {
            log::debug!(
                "mqtt: no socket to {host}:{port} found: TCP acknowledgements stay delayed"
            );
        }
        quick
    }

    fn connected_to(peers: &[SocketAddr]) -> QuickAck {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return QuickAck::default();
        };
        let sockets = fds
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
            .filter(|&fd| {
                with_socket(fd, |s| {
                    s.peer_addr()
                        .ok()
                        .and_then(|a| a.as_socket())
                        .is_some_and(|a| peers.contains(&a))
                })
                .unwrap_or(false)
            })
            .collect();
        let quick = QuickAck { sockets };
        quick.now();
        quick
    }

    /// Acknowledge what was read so far at once, and what comes next on reading it.
    pub fn now(&self) {
        for &fd in &self.sockets {
            let _ = with_socket(fd, |s| s.set_tcp_quickack(true));
        }
    }
}

/// `f` on descriptor `fd` as a socket (`None`: `fd` is negative).
///
/// The search looks at every descriptor of the process: one closed meanwhile fails, one
/// reused is judged by its new peer. The descriptors kept are rumqttc's, found after its
/// CONNACK and dropped at the next connection error; in between it closes none, as its event
/// loop is polled only by the task that holds them.
fn with_socket<T>(fd: RawFd, f: impl FnOnce(SockRef<'_>) -> T) -> Option<T> {
    (fd >= 0).then(|| {
        // SAFETY: see above; the borrow does not outlive this call and closes nothing.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        f(SockRef::from(&fd))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// The client end of a connection is found by its peer's host name and port, as the MQTT
    /// source knows them (not the listener, not the accepted end), and a socket back in
    /// delayed-acknowledgement mode leaves it.
    #[tokio::test]
    async fn finds_the_connection_to_the_broker_and_acknowledges_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let broker = listener.local_addr().unwrap();
        let client = TcpStream::connect(broker).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        let quick = QuickAck::to("localhost", broker.port()).await;
        use std::os::fd::AsRawFd;
        assert_eq!(quick.sockets, [client.as_raw_fd()]);
        let client = SockRef::from(&client);
        client.set_tcp_quickack(false).unwrap();
        assert!(!client.tcp_quickack().unwrap(), "delayed acknowledgements");
        quick.now();
        assert!(client.tcp_quickack().unwrap(), "immediate acknowledgements");
        assert!(QuickAck::connected_to(&[]).sockets.is_empty());
    }
}
