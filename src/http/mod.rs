//! The listener of the metrics endpoint and the status page (hyper's HTTP/1 server), bounded
//! so that no client can wear the agent down: at most [`MAX_CONNECTIONS`] at a time (a new
//! one closes one of the client with the most, idle first, so idle or slow
//! connections cannot lock a scrape out, nor can one client opening connections without end
//! close another's), a deadline to send the request head (5 s) and one for the whole
//! connection (15 s), one request per connection, and a pause after a failed accept (out of
//! file descriptors) instead of a loop that retries at once and spins.
//! Read-only: GET and HEAD only, nothing served changes state. Who may read: [`auth`]; for
//! which host names: [`host`].

pub mod auth;
pub mod host;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST,
    REFERRER_POLICY, RETRY_AFTER, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::status::{Status, View};

/// Connections served at once; Prometheus needs one.
pub const MAX_CONNECTIONS: usize = 32;
/// Time for a client to send its whole request head (counted from the connection's start).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's whole life, from its start: sending the request, waiting for the page's
/// turn, building it and taking the answer included.
const LIFETIME: Duration = Duration::from_secs(15);
/// Longest request head read; a scrape's is a few hundred bytes (hyper's smallest buffer).
const MAX_REQUEST: usize = 8 * 1024;
/// Pauses after failed accepts: doubling from the first to the last.
const ACCEPT_PAUSE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// What the listener serves, and to whom.
pub struct Site {
    pub status: Status,
    pub access: auth::Access,
    pub hosts: host::Names,
}

/// Serve on `listener` until the task is dropped. The machine's host names ([`host`]) are
/// read before the first connection is taken, then again every [`host::READ_EVERY`] beside
/// the connections, never for one.
pub async fn serve(listener: TcpListener, site: Arc<Site>) {
    site.hosts.read().await;
    tokio::join!(site.hosts.keep_reading(), accept(listener, &site));
}

/// Take connections on `listener` and serve each on a task of its own, for ever.
async fn accept(listener: TcpListener, site: &Arc<Site>) {
    let metrics = site.status.metrics();
    // Pages are built one at a time (see [`in_turn`]).
    let renders = Arc::new(Semaphore::new(1));
    let mut live: VecDeque<Live> = VecDeque::new();
    let mut pause = ACCEPT_PAUSE.0;
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                pause = ACCEPT_PAUSE.0;
                live.retain(|c| !c.task.is_finished());
                let client = auth::client(peer.ip());
                if live.len() >= MAX_CONNECTIONS {
                    close_one(&mut live, Some(client), metrics);
                }
                let asked = Arc::new(AtomicBool::new(false));
                let task = connection(sock, peer, site.clone(), renders.clone(), asked.clone());
                live.push_back(Live {
                    client,
                    asked,
                    task: tokio::spawn(task),
                });
            }
            Err(e) => {
                metrics.problem("http_accept", || {
                    format!("metrics: cannot accept a connection: {e}; pausing {pause:?}")
                });
                // Out of descriptors: a connection ([`close_one`]) gives one back.
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    live.retain(|c| !c.task.is_finished());
                    close_one(&mut live, None, metrics);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE.1);
            }
        }
    }
}

/// A connection being served, oldest first in the listener's list.
struct Live {
    /// Whose ([`auth::client`]).
    client: IpAddr,
    /// Whether its request has come (hyper has read its head): its answer is being built or
    /// sent.
    asked: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// Close a connection ([`victim`]) for one coming from `incoming` (`None`: to get a file
/// descriptor back).
fn close_one(live: &mut VecDeque<Live>, incoming: Option<IpAddr>, metrics: &Metrics) {
    let conns: Vec<(IpAddr, bool)> = live
        .iter()
        .map(|c| (c.client, c.asked.load(Ordering::Relaxed)))
        .collect();
    let Some(closed) = victim(&conns, incoming).and_then(|at| live.remove(at)) else {
        return;
    };
    closed.task.abort();
    let whose = match closed.client {
        IpAddr::V6(net) => format!("{net}/64"),
        v4 => v4.to_string(),
    };
    let held = conns.iter().filter(|(c, _)| *c == closed.client).count();
    metrics.log_limited(log::Level::Info, "http_closed_busiest", || {
        format!("metrics: {MAX_CONNECTIONS} connections open or out of descriptors: closed one of {whose}, which had {held}")
    });
}

/// Which of `conns` (each one's client and whether its request has come, oldest first) to
/// close for a connection coming from `incoming`: one of the client holding the most, the
/// incoming one counted (of two holding as many, the one opening loses its own), so one
/// client opening connections without end closes its own, not another's; of that client's
/// (or those clients'), the oldest whose request has not come, else the oldest. A browser
/// or a reverse proxy holding several loses an idle one before an answer in flight.
fn victim(conns: &[(IpAddr, bool)], incoming: Option<IpAddr>) -> Option<usize> {
    let held = |client: IpAddr| {
        conns.iter().filter(|(c, _)| *c == client).count() + usize::from(incoming == Some(client))
    };
    let most = conns.iter().map(|&(c, _)| held(c)).max()?;
    let busiest = |at: &usize| held(conns[*at].0) == most;
    let mut theirs = (0..conns.len()).filter(busiest);
    theirs
        .clone()
        .find(|&at| !conns[at].1)
        .or_else(|| theirs.next())
}

/// One request, answered, then the connection closes. hyper's head timer starts with the
/// connection, so an idle one is closed after [`READ_TIMEOUT`]; [`LIFETIME`], from the same
/// start, bounds the rest: a client that reads the answer too slowly, and one gone while its
/// page waits for its turn (noticed only at the write).
/// `asked` is set once its request has come.
async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    site: Arc<Site>,
    renders: Arc<Semaphore>,
    asked: Arc<AtomicBool>,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        asked.store(true, Ordering::Relaxed);
        let (site, renders) = (site.clone(), renders.clone());
        async move { Ok::<_, Infallible>(respond(&req, peer, site, renders).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false)
        // A client that shuts its side once the request is sent still gets the answer; the
        // deadline below bounds how long it waits for it.
        .half_close(true)
        .serve_connection(TokioIo::new(sock), service);
    let _ = tokio::time::timeout(LIFETIME, conn).await;
}

type Answer = Response<Full<Bytes>>;

async fn respond(
    req: &Request<Incoming>,
    peer: SocketAddr,
    site: Arc<Site>,
    renders: Arc<Semaphore>,
) -> Answer {
    let status = &site.status;
    // An absolute URI's authority stands for `Host`; a browser sends `Host` alone.
    let named = match req.uri().authority() {
        Some(a) => Some(a.as_str().rsplit('@').next().unwrap_or_default()),
        None => req.headers().get(HOST).map(|h| h.to_str().unwrap_or("?")),
    };
    // Prometheus text is answered whatever the name: scrapers name the gateway as their
    // site's DNS knows it, and it holds nothing a rebinding page would be after.
    if req.uri().path() != "/metrics" && !site.hosts.allow(named) {
        return answer(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            "hubgate answers to its IP address, localhost, its host name and <host name>.local; list other names in [metrics] hosts\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut a = answer(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        a.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return a;
    }
    let given = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    match site.access.check(given, peer.ip(), Instant::now()) {
        auth::Verdict::Allowed => {}
        auth::Verdict::Ask { wrong } => {
            if wrong {
                status.metrics().problem("http_auth", || {
                    format!("status page: wrong password from {}", peer.ip())
                });
            }
            let mut a = answer(StatusCode::UNAUTHORIZED, "text/plain", "password needed\n");
            a.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hubgate\", charset=\"UTF-8\""),
            );
            return a;
        }
        auth::Verdict::Locked(wait) => {
            status
                .metrics()
                .log_limited(log::Level::Warn, "http_auth_locked", || {
                    format!(
                    "status page: too many wrong passwords from {} (or from {} addresses, an IPv6 /64 counted as one) in {:?}: not checking for {}s",
                    peer.ip(),
                    auth::PEERS,
                    auth::WINDOW,
                    wait.as_secs() + 1
                )
                });
            let mut a = answer(
                StatusCode::TOO_MANY_REQUESTS,
                "text/plain",
                "too many wrong passwords, try again later\n",
            );
            a.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
            return a;
        }
    }
    let path = req.uri().path();
    if path == "/metrics" {
        return answer(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            status.metrics().render(),
        );
    }
    match View::of_path(path) {
        Some(view) => {
            let query = req.uri().query().map(str::to_string);
            let site = site.clone();
            let built = in_turn(renders, move || {
                site.status
                    .render(view, query.as_deref(), crate::metrics::Moment::now())
            })
            .await;
            let (kind, body) = match built {
                Ok(built) => built,
                Err(e) => {
                    status.metrics().problem("page_panic", || {
                        format!("status page: building {path} {e}; answered 500")
                    });
                    return answer(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "failed\n");
                }
            };
            let mut a = answer(StatusCode::OK, kind, body);
            // Live numbers: never from a cache.
            a.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if kind == crate::status::HTML {
                a.headers_mut().insert(
                    CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(crate::status::page_policy()),
                );
                a.headers_mut()
                    .insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                a.headers_mut()
                    .insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            }
            a
        }
        None => answer(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Run `build` on a blocking thread once the renders before it are done: a page over
/// thousands of devices takes a while, holds the device table's lock that the forwarder takes
/// for every frame, and the two async workers also carry the sources. The turn goes with the
/// build, not with the request: a request closed early (one of the busiest client's at the
/// connection cap, or past its deadline) cannot end a build that runs, and must not let the next one start
/// beside it. A build only reads, so a panic in it is contained ([`crate::contain`]): a
/// page's bug costs that request a 500 (`Err`, where it panicked), not the agent.
async fn in_turn<T: Send + 'static>(
    renders: Arc<Semaphore>,
    build: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let turn = renders
        .acquire_owned()
        .await
        .map_err(|_| "never: the semaphore is never closed".to_string())?;
    tokio::task::spawn_blocking(move || {
        let built = crate::contain::contain(build);
        drop(turn);
        built
    })
    .await
    .map_err(|e| e.to_string())?
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut a = Response::new(Full::new(body.into()));
    *a.status_mut() = status;
    a.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Read as what it says it is, never as a page a browser guessed (a log line in plain
    // text that looks like HTML).
    a.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 66));
    const PHONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    /// Whether a connection's request has come.
    const ASKED: bool = true;
    const IDLE: bool = false;

    /// A reverse proxy (or a browser) holding the most loses its idle connection, not the
    /// older ones whose answers are in flight; with none idle, its oldest.
    #[test]
    fn the_busiest_client_loses_an_idle_connection_before_an_answer_in_flight() {
        let conns = [(PROXY, ASKED), (PROXY, ASKED), (PHONE, IDLE), (PROXY, IDLE)];
        assert_eq!(victim(&conns, Some(FLOOD)), Some(3));
        let conns = [(PHONE, IDLE), (PROXY, ASKED), (PROXY, ASKED)];
        assert_eq!(
            victim(&conns, Some(PROXY)),
            Some(1),
            "a client sending requests it never reads still loses its own, not the phone's"
        );
        let conns = [(PROXY, ASKED), (PHONE, IDLE), (FLOOD, IDLE)];
        assert_eq!(victim(&conns, None), Some(1), "all at one: the oldest idle");
        let conns = [(PROXY, ASKED), (PHONE, ASKED)];
        assert_eq!(victim(&conns, None), Some(0), "none idle: the oldest");
        assert_eq!(victim(&[], None), None);
    }

    /// Of two clients holding as many, the one opening a new connection loses its own.
    #[test]
    fn the_incoming_connection_counts_for_its_client() {
        let conns = [(PHONE, IDLE), (FLOOD, IDLE), (PHONE, IDLE), (FLOOD, IDLE)];
        assert_eq!(victim(&conns, Some(FLOOD)), Some(1));
        assert_eq!(victim(&conns, Some(PHONE)), Some(0));
        assert_eq!(
            victim(&conns, None),
            Some(0),
            "out of descriptors: the oldest"
        );
    }

    /// A request aborted while its page is built (closed at the connection cap) leaves
    /// the turn with the build: the next page waits until that build is done.
    #[tokio::test]
    async fn an_aborted_request_keeps_its_turn_until_its_page_is_built() {
        let renders = Arc::new(Semaphore::new(1));
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let request = tokio::spawn(in_turn(renders.clone(), move || {
            started_tx.send(()).unwrap();
            finish_rx.recv().unwrap();
        }));
        started.await.unwrap();
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert!(renders.try_acquire().is_err(), "a second build would start");
        finish.send(()).unwrap();
        let next = in_turn(renders.clone(), || 7).await;
        assert_eq!(next, Ok(7));
    }

    /// With the agent's panic hook (a panic outside containment aborts the process), a
    /// page whose build panics is answered 500 and the next one is built. Runs itself as a
    /// child process, which is the one that would abort.
    #[test]
    fn a_page_that_panics_costs_a_500_not_the_agent() {
        if std::env::var_os("HUBGATE_PAGE_PANIC_CHILD").is_some() {
            crate::contain::abort_outside_containment();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let renders = Arc::new(Semaphore::new(1));
            let e = rt
                .block_on(in_turn(renders.clone(), || -> u8 { panic!("a page bug") }))
                .unwrap_err();
            assert!(
                e.contains("src/http/mod.rs:") && e.contains("a page bug"),
                "{e}"
            );
            let next = rt.block_on(in_turn(renders, || 7));
            println!("survived: {e}; then {next:?}");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "http::tests::a_page_that_panics_costs_a_500_not_the_agent",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("HUBGATE_PAGE_PANIC_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("survived: panicked at src/http/mod.rs:")
                && stdout.contains("; then Ok(7)"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{out:?}");
    }
}
