//! `--rtt MS`: a round trip between the Kafka clients and the broker, as between a gateway and
//! Event Hubs, without touching the machine's network (this VM has no netem). A TCP proxy in
//! front of tansu (which advertises the proxy's port, so every connection goes through it)
//! releases each chunk it reads RTT/2 after it arrived, in each direction, in order. It
//! models latency only: no bandwidth limit, no loss.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct DelayProxy {
    port: u16,
    rtt: Duration,
    listener: Option<TcpListener>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listen on a free loopback port; connections wait until [`DelayProxy::forward_to`].
    pub fn bind(rtt: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the delay proxy");
        DelayProxy {
            port: listener.local_addr().expect("proxy address").port(),
            rtt,
            listener: Some(listener),
            stop: Arc::new(AtomicBool::new(false)),
            accept: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve: each accepted connection gets its own to 127.0.0.1:`upstream` (none while the
    /// broker is down: the client's connection is closed and it reconnects).
    pub fn forward_to(&mut self, upstream: u16) {
        let listener = self.listener.take().expect("forward_to once");
        let (stop, half) = (self.stop.clone(), self.rtt / 2);
        self.accept = Some(std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for s in [&client, &server] {
                    s.set_nodelay(true).expect("TCP_NODELAY");
                }
                pipe(&client, &server, half);
                pipe(&server, &client, half);
            }
        }));
    }
}

/// Copy `from` to `to`, each chunk `delay` after it was read: a reader thread stamps the
/// chunks, a writer thread releases them in order.
fn pipe(from: &TcpStream, to: &TcpStream, delay: Duration) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone"),
        to.try_clone().expect("clone"),
    );
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Read);
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
