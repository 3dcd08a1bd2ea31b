//! The metrics endpoint's HTTP listener, bounded so that no client can wear the agent down:
//! at most [`MAX_CONNECTIONS`] at a time (a new one closes the oldest, so idle or slow
//! connections cannot lock a scrape out), a deadline to send the request and one to take
//! the answer, and a pause after a failed accept (out of file descriptors) instead of a loop
//! that retries at once and spins.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Connections served at once; Prometheus needs one.
pub const MAX_CONNECTIONS: usize = 32;
/// Time for a client to send its whole request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a client to take the whole answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Pauses after failed accepts: doubling from the first to the last.
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serve the metrics text on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let mut live: VecDeque<JoinHandle<()>> = VecDeque::new();
    let mut pause = ACCEPT_PAUSE.0;
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                pause = ACCEPT_PAUSE.0;
                live.retain(|c| !c.is_finished());
                if live.len() >= MAX_CONNECTIONS {
                    close_oldest(&mut live, &metrics);
                }
                live.push_back(tokio::spawn(respond(sock, metrics.clone())));
            }
            Err(e) => {
                metrics.problem("http_accept", || {
                    format!("metrics: cannot accept a connection: {e}; pausing {pause:?}")
                });
                // Out of descriptors: the oldest connection gives one back.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    live.retain(|c| !c.is_finished());
                    close_oldest(&mut live, &metrics);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE.1);
            }
        }
    }
}

fn close_oldest(live: &mut VecDeque<JoinHandle<()>>, metrics: &Metrics) {
    if let Some(oldest) = live.pop_front() {
        oldest.abort();
        metrics.log_limited(log::Level::Info, "http_closed_oldest", || {
            format!("metrics: {MAX_CONNECTIONS} connections open or out of descriptors: closed the oldest")
        });
    }
}

/// Read the request head (any path gets the metrics), answer, close.
async fn respond(mut sock: TcpStream, metrics: Arc<Metrics>) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let resp = if head.starts_with(b"GET ") {
        let body = metrics.render();
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.0 405 Method Not Allowed\r\nAllow: GET\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(resp.as_bytes())).await;
}
