//! The agent's side of the codec worker ([`super::worker`]): starts it, hands it the codecs
//! and the calls, gives every call a hard deadline measured here, kills (SIGKILL) and reaps a
//! worker that misses it, dies or answers garbage, and starts a fresh one for the next call.
//! Which calls are made at all is the decode stage's [`super::guard`].
//!
//! The calls block (polling the socket until the call's deadline): they run where decoding
//! runs, on the forwarder's own thread, never on an async worker.

use std::ffi::OsString;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::relay::{self, Relay};
use super::wire::{self, Answer, Request};
use super::{output, worker, JsError, Output, LOAD_LIMIT, PAYLOAD_LIMIT, TIME_LIMIT};
use crate::logline;
use crate::metrics::Metrics;

/// How long an answer may take beyond the worker's own CPU limit for the call: on a busy
/// gateway the worker waits for a CPU too.
pub const SLACK: Duration = Duration::from_millis(400);
/// A new worker's first answer also waits for the process to start.
const STARTUP: Duration = Duration::from_secs(5);
/// A worker past its deadline that has not used more CPU time than the call's limit and this
/// (a new one: and its start) was only waiting for a CPU: it is given more time, up to
/// [`PATIENCE`] times the deadline. One that has is stuck where its limit does not reach.
const CPU_GRACE: Duration = Duration::from_millis(100);
const PATIENCE: u32 = 10;
/// Longest wall time of one decode, whatever the patience with a worker waiting for a CPU:
/// starting a new worker, loading the codec into it and a second try included.
pub const CAP: Duration = Duration::from_secs(10);

/// How to start a worker.
#[derive(Clone)]
pub struct Launcher {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    slack: Duration,
    cap: Duration,
    /// Where the lines its workers write are counted and logged ([`relay`]).
    log: Arc<Metrics>,
}

impl Launcher {
    /// This very program, started again as `js-worker` (`/proc/self/exe` stays this
    /// program's file even when a package upgrade has replaced it on disk).
    pub fn this_program() -> Launcher {
        Launcher::program("/proc/self/exe")
    }

    /// The hubgate program at `path` (tests and benchmarks, whose own binary is not hubgate).
    pub fn program(path: impl Into<PathBuf>) -> Launcher {
        Launcher {
            program: path.into(),
            args: vec![worker::COMMAND.into()],
            env: Vec::new(),
            slack: SLACK,
            cap: CAP,
            log: Metrics::new(),
        }
    }

    /// The same, with the lines its workers write counted and logged as the problem
    /// `js_worker_log` of `metrics` (the agent's, so that its status task writes the counts of
    /// those held back); else of metrics of its own.
    pub fn reporting_to(self, metrics: Arc<Metrics>) -> Launcher {
        Launcher {
            log: metrics,
            ..self
        }
    }

    /// The same, with answers allowed `slack` beyond the worker's own limits instead of
    /// [`SLACK`].
    pub fn with_slack(self, slack: Duration) -> Launcher {
        Launcher { slack, ..self }
    }

    /// The same, with a decode given up after `cap` instead of [`CAP`].
    pub fn with_cap(self, cap: Duration) -> Launcher {
        Launcher { cap, ..self }
    }

    /// The same, with `key` set to `value` in the worker's environment.
    #[cfg(all(test, feature = "js"))]
    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Launcher {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The library's test binary, which is the worker when run as its one test
    /// (`worker::harness`).
    #[cfg(test)]
    fn test_binary() -> Launcher {
        Launcher {
            program: "/proc/self/exe".into(),
            args: [
                worker::harness::TEST,
                "--exact",
                "--test-threads=1",
                "--quiet",
            ]
            .map(OsString::from)
            .to_vec(),
            env: vec![(worker::harness::ENV.into(), "1".into())],
            slack: SLACK,
            cap: CAP,
            log: Metrics::new(),
        }
    }

    /// The worker gets its socket as standard input, a pipe the agent reads ([`relay`]) as
    /// standard error for its log lines, and nothing else: no other descriptor of the agent's
    /// (libraries open some without close-on-exec) and none of its environment (secrets given
    /// through `${VAR}`, `NOTIFY_SOCKET`, `CREDENTIALS_DIRECTORY`) but the log filter and the
    /// time zone.
    fn spawn(&self) -> io::Result<Process> {
        let (ours, theirs) = UnixStream::pair()?;
        let (said, stderr) = relay::pipe()?;
        // Ours waits by polling, never longer than the time a call has left.
        ours.set_nonblocking(true)?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .envs(
                KEPT_ENV
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        // SAFETY: the closure only makes syscalls (no allocation, no locks), as is required
        // between fork and exec.
        unsafe { command.pre_exec(close_on_exec_from_3) };
        let mut child = command.spawn()?;
        // The command holds the pipe's write end: closed now rather than at the end, so that
        // from here on the worker alone holds it (the relay sees its end when the worker ends).
        drop(command);
        let relay = match Relay::start(said, child.id(), self.log.clone()) {
            Ok(relay) => relay,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        Ok(Process {
            child,
            _relay: relay,
            socket: ours,
            loaded: Vec::new(),
            fresh: true,
        })
    }
}

/// The agent's environment variables a worker gets.
const KEPT_ENV: [&str; 2] = ["RUST_LOG", "TZ"];

/// Mark every descriptor from 3 on close-on-exec (runs in the child, after its standard
/// descriptors are in place). Close-on-exec rather than closed: the standard library's
/// pipe that reports a failed exec to the parent is among them.
fn close_on_exec_from_3() -> io::Result<()> {
    // SAFETY: close_range takes plain integers.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if !done {
        // Kernels before 5.11: one descriptor at a time, up to the highest one allowed.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit, which `limit` is; fcntl takes integers and
        // fails harmlessly on descriptors that are not open.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            let highest = limit.rlim_cur.min(libc::c_int::MAX as libc::rlim_t) as libc::c_int;
            for fd in 3..highest {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

impl Default for Launcher {
    /// This program; in the library's own tests, their binary.
    fn default() -> Self {
        #[cfg(test)]
        return Launcher::test_binary();
        #[cfg(not(test))]
        Launcher::this_program()
    }
}

/// A worker process and the codecs it runs; the codecs' handles ([`JsCodec`]) share it. The
/// process starts with the first load and after every kill at the next call.
#[derive(Clone)]
pub struct Worker(Arc<Mutex<Supervisor>>);

impl Worker {
    pub fn new(launcher: Launcher) -> Worker {
        Worker(Arc::new(Mutex::new(Supervisor {
            launcher,
            process: None,
            codecs: Vec::new(),
            request: Vec::new(),
            answer: Vec::new(),
        })))
    }

    /// Load a codec: `name` appears in its error stacks, `source` is its file's text.
    pub fn load(&self, name: &str, source: &str) -> Result<JsCodec, JsError> {
        let id = self.lock().load(name, source)?;
        Ok(JsCodec {
            worker: self.clone(),
            id,
        })
    }

    /// `codec`, loaded into another worker, in this one (loaded into its process at the first
    /// call): a codec kept across a reload must not keep the worker it was loaded into alive.
    pub fn adopt(&self, codec: &JsCodec) -> JsCodec {
        let (name, source) = {
            let other = codec.worker.lock();
            let c = &other.codecs[codec.id as usize];
            (c.name.clone(), c.source.clone())
        };
        let mut this = self.lock();
        let id = this.codecs.len() as u32;
        this.codecs.push(Codec { name, source });
        JsCodec {
            worker: self.clone(),
            id,
        }
    }

    /// The worker process's id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().process.as_ref().map(|p| p.child.id())
    }

    fn lock(&self) -> MutexGuard<'_, Supervisor> {
        // A panic while it was held (contained by the decode stage) left nothing half-done
        // that the next call would trust: a broken exchange kills the worker.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One loaded codec.
pub struct JsCodec {
    worker: Worker,
    id: u32,
}

impl JsCodec {
    /// Decode one payload. `time` is the uplink's receive time (`input.recvTime`). A payload
    /// longer than [`PAYLOAD_LIMIT`] is refused before the worker sees it: no call, no strike.
    pub fn decode(
        &self,
        fport: Option<u8>,
        bytes: &[u8],
        time: SystemTime,
    ) -> Result<Output, JsError> {
        if bytes.len() > PAYLOAD_LIMIT {
            return Err(JsError::TooLong(bytes.len()));
        }
        let ms = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        self.worker.lock().decode(self.id, fport, bytes, ms)
    }

    /// The worker that runs this codec.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }
}

struct Codec {
    name: String,
    /// Kept to load it into the next worker; emptied when it failed to load.
    source: String,
}

struct Supervisor {
    launcher: Launcher,
    process: Option<Process>,
    /// Indexed by codec id.
    codecs: Vec<Codec>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl Supervisor {
    fn load(&mut self, name: &str, source: &str) -> Result<u32, JsError> {
        self.forget_dead_worker();
        let id = self.codecs.len() as u32;
        self.codecs.push(Codec {
            name: name.to_string(),
            source: source.to_string(),
        });
        // At start or on a reload, not in the forwarder's way: only the patience bounds it,
        // so a large codec on a busy gateway still loads.
        let until = Instant::now() + (LOAD_LIMIT + self.launcher.slack + STARTUP) * PATIENCE;
        let loaded = match self.ensure_loaded(id, until, false) {
            // As for a call (`decode`): a worker killed from outside during the load (the OOM
            // killer's first pick, an operator) looks the same as a codec that took it down, and
            // a codec failed at start stays failed for the run.
            Err(JsError::Crashed(why)) => {
                let why = logline::clean(&why);
                log::warn!(
                    "JavaScript worker ended while it loaded {name} ({why}): trying once more"
                );
                self.ensure_loaded(id, until, false)
            }
            Err(JsError::WorkerFull) => self.ensure_loaded(id, until, false).map_err(own_refusal),
            other => other,
        };
        loaded.inspect_err(|_| {
            // Never called: its id only keeps the others'.
            self.codecs[id as usize].source = String::new();
        })?;
        Ok(id)
    }

    fn decode(
        &mut self,
        id: u32,
        fport: Option<u8>,
        bytes: &[u8],
        time_ms: f64,
    ) -> Result<Output, JsError> {
        let cap = Instant::now() + self.launcher.cap;
        self.forget_dead_worker();
        match self.try_decode(id, fport, bytes, time_ms, cap) {
            // The worker ended without answering. One killed from outside after the check
            // above (a stop, the OOM killer, an operator) looks the same here as one the
            // codec took down: the call is made once more in a new worker, and fails only if
            // that one ends too.
            Err(JsError::Crashed(why)) => {
                let why = logline::clean(&why);
                log::warn!("JavaScript worker ended during a call ({why}): trying once more");
                self.try_decode(id, fport, bytes, time_ms, cap)
            }
            // The worker's memory, which the codecs loaded into it share, was full (it retired
            // with it): the call, or the codec's load into it, is made once more in a new worker.
            Err(JsError::WorkerFull) => self
                .try_decode(id, fport, bytes, time_ms, cap)
                .map_err(own_refusal),
            other => other,
        }
    }

    fn try_decode(
        &mut self,
        id: u32,
        fport: Option<u8>,
        bytes: &[u8],
        time_ms: f64,
        cap: Instant,
    ) -> Result<Output, JsError> {
        // Only a codec that passed its first load is called.
        self.ensure_loaded(id, cap, true)
            .and_then(|()| {
                self.request.clear();
                Request::Decode {
                    id,
                    fport,
                    time_ms,
                    bytes,
                }
                .write_to(&mut self.request);
                self.call(TIME_LIMIT, cap)
            })
            .and_then(|(text, retired)| match output::parse(&text) {
                Ok(out) => Ok(Output { retired, ..out }),
                // It ran out of memory, caught it and returned an error or junk: its worker
                // ended all the same. As in the engine, a call that failed after a refusal ran
                // out of memory, whatever the script made of it, and strikes.
                Err(_) if retired => Err(JsError::OutOfMemory),
                Err(e) => Err(e),
            })
    }

    /// Load codec `id` into the worker unless it is there already (a new worker has none),
    /// giving up at `cap`. `again`: it passed its first load, so its top level is not timed
    /// again (a codec near the limit would pass at start, then fail every call, each one
    /// loading it again, after the worker it was in retired).
    fn ensure_loaded(&mut self, id: u32, cap: Instant, again: bool) -> Result<(), JsError> {
        if self.process.as_ref().is_some_and(|p| p.has(id)) {
            return Ok(());
        }
        let codec = &self.codecs[id as usize];
        self.request.clear();
        Request::Load {
            id,
            name: &codec.name,
            source: &codec.source,
            again,
        }
        .write_to(&mut self.request);
        self.call(LOAD_LIMIT, cap)?;
        if let Some(p) = &mut self.process {
            p.loaded.push(id);
        }
        Ok(())
    }

    /// Send the request in `self.request` to the worker (started if there is none) and wait
    /// for its answer, at most `limit` (the worker's own limit for it) and the slack, and not
    /// past `cap`; with it, whether the worker ended after answering (a runtime in doubt).
    fn call(&mut self, limit: Duration, cap: Instant) -> Result<(String, bool), JsError> {
        let process = match &mut self.process {
            Some(p) => p,
            None => match self.launcher.spawn() {
                Ok(p) => self.process.insert(p),
                Err(e) => return Err(JsError::Crashed(format!("cannot start it: {e}"))),
            },
        };
        let started = Instant::now();
        let slack = self.launcher.slack;
        match process.exchange(&self.request, &mut self.answer, limit, slack, cap) {
            Ok(answer) => {
                process.fresh = false;
                if answer.retire {
                    self.stop();
                }
                match answer.result {
                    Ok(text) => Ok((text, answer.retire)),
                    // Its runtime in doubt, by a failure that leaves none: it ran out of
                    // memory, caught it and returned junk (undefined, too much JSON). As in
                    // the engine, it ran out of memory.
                    Err(e) if answer.retire && !e.retires() => Err(JsError::OutOfMemory),
                    Err(e) => Err(e),
                }
            }
            Err(Fault::Late) => {
                self.stop();
                Err(JsError::Hung(started.elapsed().as_millis() as u64))
            }
            Err(Fault::Broke(what)) => {
                let end = self.stop();
                Err(JsError::Crashed(format!("{what}; it {end}")))
            }
        }
    }

    /// Reap a worker that ended since its latest answer (killed from outside, out of
    /// memory): the call starts a new one instead of failing on the dead one, and strikes
    /// no codec for it.
    fn forget_dead_worker(&mut self) {
        if let Some(p) = &mut self.process {
            if let Ok(Some(status)) = p.child.try_wait() {
                log::warn!("JavaScript worker {}: {}", p.child.id(), ended(status));
                self.process = None;
            }
        }
    }

    /// Kill and reap the worker; how it ended.
    fn stop(&mut self) -> String {
        let Some(mut p) = self.process.take() else {
            return "was not running".into();
        };
        // Killing one that already ended is harmless: it stays unreaped until the wait.
        let _ = p.child.kill();
        match p.child.wait() {
            Ok(status) => ended(status),
            Err(e) => format!("could not be reaped: {e}"),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a full worker is after a try in a new one, which held only the codec at first: the
/// codec's own doing.
fn own_refusal(e: JsError) -> JsError {
    match e {
        JsError::WorkerFull => JsError::OutOfMemory,
        other => other,
    }
}

/// How a worker ended; a signal by its number and name (SIGKILL: the kernel's OOM killer, or
/// the agent after a broken exchange).
fn ended(status: ExitStatus) -> String {
    let name = |signal| match signal {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGXCPU => " (SIGXCPU)",
        _ => "",
    };
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("ended by signal {signal}{}", name(signal)),
        (None, Some(code)) => format!("exited with status {code}"),
        (None, None) => format!("ended: {status}"),
    }
}

/// A worker process and the codecs loaded into it.
struct Process {
    child: Child,
    /// Reads its standard error; dropped with it, once it is reaped.
    _relay: Relay,
    socket: UnixStream,
    loaded: Vec<u32>,
    /// Has not answered yet.
    fresh: bool,
}

/// Why an exchange with the worker failed.
enum Fault {
    /// No answer in time.
    Late,
    /// The socket closed or failed, or the answer was garbage.
    Broke(String),
}

impl Process {
    fn has(&self, id: u32) -> bool {
        self.loaded.contains(&id)
    }

    /// Send `request` and read the answer into `answer`. The worker limits the call to
    /// `limit` of CPU time; the deadline here is that and `slack` (a new worker: and
    /// [`STARTUP`]), later for a worker that was only waiting for a CPU; never past `cap`.
    fn exchange(
        &mut self,
        request: &[u8],
        answer: &mut Vec<u8>,
        limit: Duration,
        slack: Duration,
        cap: Instant,
    ) -> Result<Answer, Fault> {
        let start = if self.fresh { STARTUP } else { Duration::ZERO };
        let now = Instant::now();
        let room = cap.saturating_duration_since(now);
        if room.is_zero() {
            return Err(Fault::Late);
        }
        let within = (limit + slack + start).min(room);
        let deadline = now + within;
        let fault = |e: io::Error| match e.kind() {
            io::ErrorKind::TimedOut => Fault::Late,
            io::ErrorKind::UnexpectedEof => Fault::Broke("it closed the socket".into()),
            _ => Fault::Broke(e.to_string()),
        };
        let mut until = Until {
            socket: &self.socket,
            deadline,
            last: (now + (limit + slack + start) * PATIENCE).min(cap),
            slack,
            pid: self.child.id(),
            // Read from the kernel: the worker's own word on it could be any time.
            cpu_allowed: cpu_time(self.child.id()).unwrap_or_default() + limit + CPU_GRACE + start,
        };
        // A worker that reads the request slowly gets as much time as one that answers late.
        send(&mut until, request).map_err(fault)?;
        // The answer comes in one write: one read takes it all.
        let mut reader = BufReader::with_capacity(wire::MAX_ANSWER + 4, until);
        match wire::read_frame(&mut reader, answer, wire::MAX_ANSWER) {
            Ok(true) => {
                Answer::parse(answer).ok_or_else(|| Fault::Broke("it answered garbage".into()))
            }
            Ok(false) => Err(Fault::Broke("it closed the socket".into())),
            Err(e) => Err(fault(e)),
        }
    }
}

/// Write all of `bytes` to the (non-blocking) socket in the time `until` gives, else
/// `TimedOut`; a worker that is gone is an error, not SIGPIPE.
fn send(until: &mut Until, mut bytes: &[u8]) -> io::Result<()> {
    let socket = until.socket;
    while !bytes.is_empty() {
        // SAFETY: send reads `bytes.len()` bytes from `bytes`.
        let n = unsafe {
            libc::send(
                socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => until.wait(libc::POLLOUT)?,
                _ => return Err(e),
            }
        } else {
            bytes = &bytes[n as usize..];
        }
    }
    Ok(())
}

/// Wait until `socket` is ready for `events` (or closed, or failed): `false` if `deadline`
/// came first.
fn ready(socket: &UnixStream, events: libc::c_short, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Rounded up: a wait of 0 ms before the deadline would spin.
        let ms = left
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int;
        let mut fd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd it is given.
        match unsafe { libc::poll(&mut fd, 1, ms) } {
            n if n > 0 => return Ok(true),
            0 => {}
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// The exchange with the worker (the request's send, the answer's reads), given up at
/// `deadline` unless the worker has not used its CPU time yet (it was waiting for a CPU):
/// then `slack` more, until `last`.
struct Until<'a> {
    socket: &'a UnixStream,
    deadline: Instant,
    last: Instant,
    slack: Duration,
    pid: u32,
    /// Its total CPU time beyond which it is stuck.
    cpu_allowed: Duration,
}

impl Until<'_> {
    /// Wait until the socket is ready for `events`, else `TimedOut`.
    fn wait(&mut self, events: libc::c_short) -> io::Result<()> {
        while !ready(self.socket, events, self.deadline)? {
            let now = Instant::now();
            let waiting = cpu_time(self.pid).is_some_and(|used| used <= self.cpu_allowed);
            if !waiting || now >= self.last {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.deadline = (now + self.slack).min(self.last);
        }
        Ok(())
    }
}

impl Read for Until<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&*self.socket).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(libc::POLLIN)?,
                other => return other,
            }
        }
    }
}

/// The CPU time process `pid` has used, read from its CPU clock. Not from `/proc/PID/stat`:
/// the worker runs the agent's start-up, which makes it not dumpable, and under the unit's
/// `ProtectProc=invisible` a process that is not dumpable is missing from `/proc`, so a
/// worker only waiting for a CPU would be taken for a stuck one and killed.
fn cpu_time(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)?;
    let mut clock = 0;
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: each writes one value of the type it is given.
    let read = unsafe {
        libc::clock_getcpuclockid(pid, &mut clock) == 0 && libc::clock_gettime(clock, &mut t) == 0
    };
    read.then(|| Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker run by `sh -c script`, decoding with a cap of `cap`, with one codec (`source`)
    /// not loaded into it yet.
    fn fake(script: &str, cap: Duration, source: String) -> JsCodec {
        let launcher = Launcher {
            program: "/bin/sh".into(),
            args: ["-c", script].map(OsString::from).to_vec(),
            env: Vec::new(),
            slack: SLACK,
            cap,
            log: Metrics::new(),
        };
        let worker = Worker::new(launcher);
        worker.lock().codecs.push(Codec {
            name: "slow.js".into(),
            source,
        });
        JsCodec { worker, id: 0 }
    }

    /// A worker that takes a large codec's source a chunk at a time, each just within the
    /// wait for one, is killed at the call's cap, as one that answers late is.
    #[test]
    fn a_worker_that_reads_slowly_is_given_up_at_the_cap() {
        let cap = Duration::from_secs(2);
        let reader = "exec 2>/dev/null; \
                      while :; do dd bs=262144 count=1 of=/dev/null status=none; sleep 1; done";
        given_up_at_the_cap(reader, cap, "x".repeat(8 << 20));
    }

    /// A worker that answers a byte at a time, each just within the wait for one, is killed
    /// at the call's cap: no read waits past the time the call has left.
    #[test]
    fn a_worker_that_answers_slowly_is_given_up_at_the_cap() {
        let cap = Duration::from_secs(8);
        let writer = "exec 2>/dev/null; dd bs=65536 count=1 of=/dev/null status=none; \
                      while :; do sleep 7; printf x >&0; done";
        given_up_at_the_cap(writer, cap, "1".into());
    }

    /// A worker that never reads its socket, the same.
    #[test]
    fn a_worker_that_never_reads_is_given_up_at_the_cap() {
        let cap = Duration::from_secs(2);
        given_up_at_the_cap("exec sleep 600", cap, "x".repeat(1 << 20));
    }

    /// A call to the [`fake`] worker `script` with a codec of `source` fails as hung at
    /// `cap` (a loaded machine given 5 s more), and the worker is gone.
    fn given_up_at_the_cap(script: &str, cap: Duration, source: String) {
        let codec = fake(script, cap, source);
        let start = Instant::now();
        let got = codec.decode(Some(1), &[1, 2], SystemTime::now());
        let took = start.elapsed();
        assert!(matches!(got, Err(JsError::Hung(_))), "{got:?}");
        assert!(took >= cap, "{took:?}");
        assert!(took < cap + Duration::from_secs(5), "{took:?}");
        assert_eq!(codec.worker().pid(), None);
    }

    /// A worker that spins through a call after its load is given up at the call's deadline
    /// as hung, not given the patience with one that waits for a CPU: its CPU time is the
    /// agent's own reading.
    #[test]
    fn a_worker_spinning_through_a_call_is_not_given_the_patience() {
        // Loaded: status 0, not retiring, no text.
        let script = "exec 2>/dev/null; dd bs=65536 count=1 of=/dev/null status=none; \
                      printf '\\002\\0\\0\\0\\0\\0' >&0; \
                      while :; do :; done";
        let codec = fake(script, Duration::from_secs(60), "1".into());
        let start = Instant::now();
        let got = codec.decode(Some(1), &[1, 2], SystemTime::now());
        let took = start.elapsed();
        assert!(matches!(got, Err(JsError::Hung(_))), "{got:?}");
        // Spinning, it is past its CPU time at the first deadline (TIME_LIMIT and SLACK);
        // the patience would have given it ten of them.
        assert!(took < (TIME_LIMIT + SLACK) * PATIENCE, "{took:?}");
        assert_eq!(codec.worker().pid(), None);
    }

    /// The patience with a worker that waits for a CPU rests on reading its CPU time, also
    /// of a process that is not dumpable.
    #[test]
    fn cpu_time_of_a_process_is_read() {
        // SAFETY: the child only makes syscalls and spins until it is killed.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            loop {
                std::hint::spin_loop();
            }
        }
        let pid = child as u32;
        let start = Instant::now();
        let reached = loop {
            match cpu_time(pid) {
                Some(t) if t >= Duration::from_millis(30) => break true,
                Some(_) if start.elapsed() < Duration::from_secs(60) => {}
                _ => break false,
            }
        };
        // SAFETY: the child is ours and not reaped yet.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(reached);
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        assert_eq!(cpu_time(pid_max.trim().parse().unwrap()), None);
        assert_eq!(cpu_time(u32::MAX), None);
    }
}
