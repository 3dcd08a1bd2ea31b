//! A stand-in Kafka broker for the answers tansu cannot give: real TCP on 127.0.0.1, the
//! Kafka wire format, and one configured answer to CreateTopics and to Produce (an error code
//! and the broker's words), as Event Hubs gives when it refuses a hub.
//!
//! It speaks only old, fixed-layout API versions (ApiVersions 0, Metadata 1, Produce 3,
//! InitProducerId 0, CreateTopics 1, SaslHandshake 1, SaslAuthenticate 0), which librdkafka
//! negotiates down to. Produce answers the configured error for every partition, unknown
//! topic for a topic that does not exist, or accepts the records and keeps their values
//! (uncompressed record batches only). The answers can be changed while clients run, and
//! CreateTopics can depend on the key a connection logged in with. [`StandIn::start`] is
//! plain TCP without a login; [`StandIn::start_tls`] puts stunnel in front and takes any SASL
//! PLAIN login, as the Event Hubs sink connects, or only one with a given password.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Kafka error codes used by the tests.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const POLICY_VIOLATION: i16 = 44;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What the stand-in answers.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// CreateTopics: `None` creates the topic (one partition), else (code, message).
    pub create: Option<(i16, String)>,
    /// Produce: `None` accepts, else the error code.
    pub produce: Option<i16>,
    /// A key scoped to this one hub: writes to any other answer TOPIC_AUTHORIZATION_FAILED.
    pub only_writable: Option<String>,
    /// An endpoint without CreateTopics: ApiVersions does not offer it.
    pub no_create_topics: bool,
    /// CreateTopics answers for none of the topics asked for (an empty topic list).
    pub create_answers_nothing: bool,
    /// Only a login whose password (the connection string) holds this key has Manage:
    /// CreateTopics on a connection of any other answers TOPIC_AUTHORIZATION_FAILED.
    pub manage_key: Option<String>,
    /// Only a SASL PLAIN login with this password is taken: SaslAuthenticate answers any
    /// other SASL_AUTHENTICATION_FAILED, as a Kafka broker whose password for the user changed.
    pub password: Option<String>,
}

#[derive(Default)]
struct State {
    answers: Answers,
    /// Topic -> partition count.
    topics: BTreeMap<String, i32>,
    /// Topic -> the values of the records accepted, in the order they arrived.
    written: BTreeMap<String, Vec<String>>,
    /// Requests seen, by API key.
    seen: BTreeMap<i16, usize>,
}

pub struct StandIn {
    /// What clients connect to: the broker's port, or the TLS front's.
    port: u16,
    backend: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// The TLS front and its CA ([`StandIn::start_tls`]).
    tls: Option<(super::Service, super::Certs)>,
}

impl StandIn {
    /// Listen on a free port with `topics` existing and `answers`.
    pub fn start(topics: &[&str], answers: Answers) -> StandIn {
        let listener = super::listener();
        let port = listener.local_addr().unwrap().port();
        StandIn::serve_on(listener, port, topics, answers)
    }

    /// Like [`StandIn::start`] behind stunnel (certificates, config and log in `dir`), taking
    /// any SASL PLAIN login: `bootstrap()` is `localhost:PORT` of the TLS front.
    pub fn start_tls(dir: &std::path::Path, topics: &[&str], answers: Answers) -> StandIn {
        std::fs::create_dir_all(dir).unwrap();
        let certs = super::Certs::generate(&dir.join("certs"));
        StandIn::start_tls_with(dir, certs, topics, answers)
    }

    /// Like [`StandIn::start_tls`], stunnel showing `certs`' server certificate.
    pub fn start_tls_with(
        dir: &std::path::Path,
        certs: super::Certs,
        topics: &[&str],
        answers: Answers,
    ) -> StandIn {
        std::fs::create_dir_all(dir).unwrap();
        let listener = super::listener();
        let tls_port = super::free_port();
        let mut s = StandIn::serve_on(listener, tls_port, topics, answers);
        let front = super::tls_front(dir, &certs, tls_port, s.backend);
        s.tls = Some((front, certs));
        s
    }

    /// Serve on `listener`, telling clients (Metadata) the broker is at `port`.
    fn serve_on(listener: TcpListener, port: u16, topics: &[&str], answers: Answers) -> StandIn {
        let backend = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            answers,
            topics: topics.iter().map(|t| (t.to_string(), 1)).collect(),
            written: BTreeMap::new(),
            seen: BTreeMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conns = Vec::new();
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, stop) = (state.clone(), stop.clone());
                    conns.push(std::thread::spawn(move || serve(conn, port, &state, &stop)));
                }
                for c in conns {
                    let _ = c.join();
                }
            })
        };
        StandIn {
            port,
            backend,
            state,
            stop,
            accept: Some(accept),
            tls: None,
        }
    }

    /// The CA clients must trust ([`StandIn::start_tls`] only).
    pub fn ca_path(&self) -> std::path::PathBuf {
        self.tls.as_ref().expect("a TLS stand-in").1.ca.clone()
    }

    /// `127.0.0.1:PORT`, or `localhost:PORT` of the TLS front.
    pub fn bootstrap(&self) -> String {
        let host = if self.tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!("{host}:{}", self.port)
    }

    /// How many requests with API key `key` arrived (0 Produce, 19 CreateTopics, …).
    pub fn seen(&self, key: i16) -> usize {
        let state = self.state.lock().unwrap();
        state.seen.get(&key).copied().unwrap_or(0)
    }

    /// The topics that exist now.
    pub fn topics(&self) -> Vec<String> {
        self.state.lock().unwrap().topics.keys().cloned().collect()
    }

    /// Answer with `answers` from now on (an operator fixing the key, say).
    pub fn set_answers(&self, answers: Answers) {
        self.state.lock().unwrap().answers = answers;
    }

    /// Delete `topic`, as an operator can in the portal.
    pub fn delete(&self, topic: &str) {
        self.state.lock().unwrap().topics.remove(topic);
    }

    /// The values of the records accepted for `topic`, in arrival order.
    pub fn written(&self, topic: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.written.get(topic).cloned().unwrap_or_default()
    }
}

/// How long a connection may wait for its client to take an answer: a client that reads
/// nothing cannot hold the stand-in (or its drop) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for StandIn {
    /// Stops every thread and waits for them: connection threads notice `stop` within their
    /// read timeout, or give up a write within [`WRITE_TIMEOUT`]. The accept loop is woken by
    /// a connection of its own; if that cannot be made, it is left behind rather than waited
    /// for.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some((front, _)) = self.tls.as_mut() {
            front.kill_quietly();
        }
        let backend = (Ipv4Addr::LOCALHOST, self.backend).into();
        if TcpStream::connect_timeout(&backend, Duration::from_secs(5)).is_ok() {
            if let Some(t) = self.accept.take() {
                let _ = t.join();
            }
        }
    }
}

fn serve(mut conn: TcpStream, port: u16, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    // The SASL PLAIN password this connection logged in with.
    let mut login = String::new();
    while !stop.load(Ordering::SeqCst) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        while buf.len() >= 4 {
            let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + size {
                break;
            }
            let frame: Vec<u8> = buf.drain(..4 + size).skip(4).collect();
            let Some(reply) = answer(&frame, port, state, &mut login) else {
                let _ = conn.shutdown(Shutdown::Both);
                return;
            };
            let mut out = (reply.len() as i32).to_be_bytes().to_vec();
            out.extend(reply);
            if conn.write_all(&out).is_err() {
                return;
            }
        }
    }
}

/// Reads a request body.
struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap_or([0; 2]))
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap_or([0; 4]))
    }
    fn string(&mut self) -> String {
        let n = self.i16();
        if n < 0 {
            return String::new();
        }
        String::from_utf8_lossy(self.take(n as usize)).into_owned()
    }
    fn bytes(&mut self) -> &[u8] {
        let n = self.i32();
        self.take(n.max(0) as usize)
    }
    fn varint(&mut self) -> i64 {
        let (mut v, mut shift) = (0u64, 0);
        while let Some(&b) = self.take(1).first() {
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 || shift > 63 {
                break;
            }
        }
        (v >> 1) as i64 ^ -((v & 1) as i64)
    }
    fn varbytes(&mut self) -> &[u8] {
        let n = self.varint();
        self.take(n.max(0) as usize)
    }
}

/// The values of the records in `batches` (record batches v2, uncompressed).
fn values(batches: &[u8]) -> Vec<String> {
    let mut r = In(batches);
    let mut out = Vec::new();
    while r.0.len() >= 61 {
        r.take(8);
        let length = r.i32().max(0) as usize;
        let mut batch = In(r.take(length));
        batch.take(4 + 1 + 4);
        let attributes = batch.i16();
        batch.take(4 + 8 + 8 + 8 + 2 + 4);
        let count = batch.i32();
        assert_eq!(
            attributes & 7,
            0,
            "the stand-in reads uncompressed batches only"
        );
        for _ in 0..count {
            let mut rec = In(batch.varbytes());
            rec.take(1);
            rec.varint();
            rec.varint();
            rec.varbytes();
            out.push(String::from_utf8_lossy(rec.varbytes()).into_owned());
        }
    }
    out
}

/// Builds a response body.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn bool(&mut self, v: bool) -> &mut Self {
        self.0.push(u8::from(v));
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.i16(s.len() as i16);
        self.0.extend(s.as_bytes());
        self
    }
    fn null_string(&mut self) -> &mut Self {
        self.i16(-1)
    }
}

/// (API key, min version, max version) the stand-in offers. Fetch is listed only because
/// librdkafka wants it before it speaks the message format an idempotent producer needs.
const APIS: &[(i16, i16, i16)] = &[
    (0, 3, 3),
    (1, 4, 4),
    (3, 1, 1),
    (17, 1, 1),
    (18, 0, 0),
    (19, 1, 1),
    (22, 0, 0),
    (36, 0, 0),
];

/// The response to one request frame (header v1 + body) on a connection that logged in with
/// the password `login`; `None` closes the connection.
fn answer(frame: &[u8], port: u16, state: &Mutex<State>, login: &mut String) -> Option<Vec<u8>> {
    let mut r = In(frame);
    let (key, version, correlation) = (r.i16(), r.i16(), r.i32());
    let mut st = state.lock().unwrap();
    *st.seen.entry(key).or_default() += 1;
    let mut out = Out::default();
    out.i32(correlation);
    match (key, version) {
        // ApiVersions newer than v0: "unsupported", so the client asks again with v0.
        (18, v) if v > 0 => {
            out.i16(35).i32(0);
        }
        (18, 0) => {
            let apis: Vec<_> = APIS
                .iter()
                .filter(|(k, ..)| !(*k == 19 && st.answers.no_create_topics))
                .collect();
            out.i16(0).i32(apis.len() as i32);
            for (k, min, max) in apis {
                out.i16(*k).i16(*min).i16(*max);
            }
        }
        (3, 1) => {
            let _client_id = r.string();
            let n = r.i32();
            let asked: Vec<String> = if n < 0 {
                st.topics.keys().cloned().collect()
            } else {
                (0..n).map(|_| r.string()).collect()
            };
            out.i32(1)
                .i32(0)
                .string("127.0.0.1")
                .i32(i32::from(port))
                .null_string();
            out.i32(0).i32(asked.len() as i32);
            for t in asked {
                match st.topics.get(&t) {
                    Some(&parts) => {
                        out.i16(0).string(&t).bool(false).i32(parts);
                        for p in 0..parts {
                            out.i16(0).i32(p).i32(0).i32(1).i32(0).i32(1).i32(0);
                        }
                    }
                    None => {
                        out.i16(3).string(&t).bool(false).i32(0);
                    }
                }
            }
        }
        (19, 1) => {
            let _client_id = r.string();
            let n = r.i32();
            let mut names = Vec::new();
            for _ in 0..n {
                let name = r.string();
                let partitions = r.i32();
                let _replication = r.i16();
                for _ in 0..r.i32() {
                    r.i32();
                    let brokers = r.i32();
                    r.take(4 * brokers.max(0) as usize);
                }
                for _ in 0..r.i32() {
                    r.string();
                    r.string();
                }
                names.push((name, partitions));
            }
            let _timeout = r.i32();
            let validate_only = r.take(1) == [1];
            if st.answers.create_answers_nothing {
                names.clear();
            }
            let create = match &st.answers.manage_key {
                Some(key) if !login.contains(key.as_str()) => {
                    Some((TOPIC_AUTHORIZATION_FAILED, String::new()))
                }
                _ => st.answers.create.clone(),
            };
            out.i32(names.len() as i32);
            for (name, partitions) in names {
                out.string(&name);
                match create.clone() {
                    None => {
                        if !validate_only {
                            st.topics.insert(name, partitions);
                        }
                        out.i16(0).null_string();
                    }
                    Some((code, words)) => {
                        out.i16(code).string(&words);
                    }
                }
            }
        }
        (22, 0) => {
            out.i32(0).i16(0).i64(1).i16(0);
        }
        // SASL: PLAIN offered, any login taken unless the answers name the password.
        (17, 1) => {
            out.i16(0).i32(1).string("PLAIN");
        }
        (36, 0) => {
            let _client_id = r.string();
            // PLAIN: authzid NUL user NUL password.
            let plain = String::from_utf8_lossy(r.bytes()).into_owned();
            let password = plain.split('\0').nth(2).unwrap_or_default().to_string();
            match &st.answers.password {
                Some(taken) if *taken != password => {
                    out.i16(SASL_AUTHENTICATION_FAILED)
                        .string("Authentication failed: Invalid username or password")
                        .i32(0);
                }
                _ => {
                    *login = password;
                    out.i16(0).null_string().i32(0);
                }
            }
        }
        (0, 3) => {
            let _client_id = r.string();
            let _transactional_id = r.string();
            let _acks = r.i16();
            let _timeout = r.i32();
            let n = r.i32();
            out.i32(n);
            for _ in 0..n {
                let topic = r.string();
                let parts = r.i32();
                out.string(&topic).i32(parts);
                for _ in 0..parts {
                    let p = r.i32();
                    let batches = r.bytes().to_vec();
                    let code = match &st.answers.only_writable {
                        Some(hub) if *hub != topic => 29,
                        _ if !st.topics.contains_key(&topic) => 3,
                        _ => st.answers.produce.unwrap_or(0),
                    };
                    if code == 0 {
                        st.written
                            .entry(topic.clone())
                            .or_default()
                            .extend(values(&batches));
                    }
                    out.i32(p).i16(code).i64(0).i64(-1);
                }
            }
            out.i32(0);
        }
        _ => return None,
    }
    Some(out.0)
}
