//! The codec worker: `hubgate js-worker`, the agent's own binary started again by
//! [`super::supervisor`] with its end of a socket as standard input. It answers the agent's
//! requests ([`super::wire`]) one at a time: load a codec into a runtime of its own, decode a
//! payload with one. Whatever a codec does to this process — hang in a builtin, abort in a
//! QuickJS assert, exhaust its memory — the agent only loses the call.
//!
//! Its own limits: [`WORKER_MEMORY`] of heap for all codecs together (RLIMIT_DATA), no core
//! dumps, three descriptors (RLIMIT_NOFILE), no new privileges (a limit it cannot
//! set ends it), the OOM killer's first pick, and a CPU backstop (RLIMIT_CPU) that, once
//! half of it is used, is moved on to [`CPU_BACKSTOP`] seconds past what the worker has used,
//! so that only a worker left hanging without its agent reaches it. Then its system calls are
//! filtered ([`super::seccomp`]): no file, socket or process, whatever a codec gets QuickJS
//! to do. It ends when the agent's end of the socket closes, even in the middle of a call
//! that never returns.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

use super::engine::Sandbox;
use super::wire::{self, Answer, Request};
use super::{JsError, WORKER_MEMORY};

/// The hidden command that runs the worker.
pub const COMMAND: &str = "js-worker";

/// Seconds of CPU time past what the worker had used when its backstop last moved (after an
/// answer, once half of this margin is used) after which the kernel ends it (SIGXCPU): far
/// beyond a call's deadline, so only reached without an agent.
const CPU_BACKSTOP: u64 = 10;

/// Run the worker on standard input until the agent goes away.
pub fn main() -> ! {
    ignore_stop_signals();
    // Both open a file, which the limits below forbid: the time zone (codecs' `Date` in
    // local time) is read once here and kept.
    // SAFETY: tzset takes nothing; no other thread runs yet.
    unsafe { tzset() };
    first_to_go();
    limit_self();
    end_with_the_agent();
    filter_calls();
    // SAFETY: standard input is the worker's end of the socket (see the module comment);
    // nothing else in this process reads or writes it.
    let socket = unsafe { File::from_raw_fd(0) };
    serve(&socket)
}

fn serve(socket: &File) -> ! {
    let mut reader = BufReader::new(socket);
    let mut codecs: HashMap<u32, Sandbox> = HashMap::new();
    let mut cpu_limit = 0;
    move_cpu_backstop(cpu_used().as_secs(), &mut cpu_limit);
    let (mut frame, mut out) = (Vec::new(), Vec::new());
    loop {
        match wire::read_frame(&mut reader, &mut frame, wire::MAX_REQUEST) {
            Ok(true) => {}
            Ok(false) => exit(0),
            Err(e) => {
                log::warn!("reading a request: {e}");
                exit(1)
            }
        }
        // Whether the call left its runtime in doubt though it did not fail for it.
        let mut in_doubt = false;
        let result = match Request::parse(&frame) {
            Some(Request::Load {
                id,
                name,
                source,
                again,
            }) => match again {
                false => Sandbox::load(name, source),
                true => Sandbox::load_again(name, source),
            }
            .map(|codec| {
                codecs.insert(id, codec);
                String::new()
            }),
            Some(Request::Decode {
                id,
                fport,
                time_ms,
                bytes,
            }) => match codecs.get(&id) {
                Some(codec) => {
                    let result = codec.decode(fport, bytes, time_ms);
                    in_doubt = codec.in_doubt();
                    result
                }
                None => Err(JsError::Engine(format!("codec {id} is not loaded"))),
            },
            None => {
                log::warn!("a request it cannot read");
                exit(1)
            }
        };
        // A runtime left in doubt is never used again nor freed (`JsError::retires`): the
        // worker answers first, then exits; the agent starts another and loads each codec
        // into it as its own request, under the load limit, not a call's.
        let retire = in_doubt || result.as_ref().is_err_and(JsError::retires);
        out.clear();
        Answer { result, retire }.write_to(&mut out);
        if (&*socket).write_all(&out).is_err() || retire {
            exit(0)
        }
        move_cpu_backstop(cpu_used().as_secs(), &mut cpu_limit);
    }
}

extern "C" {
    /// The C library's: reads `TZ` or `/etc/localtime` once for every later local time.
    fn tzset();
}

/// Leave without freeing anything: the runtimes may hold what QuickJS asserts on.
fn exit(code: i32) -> ! {
    std::process::exit(code)
}

/// Set the worker's limits; one that cannot be set ends the worker with the reason on its
/// standard error (the agent's relay, which logs it as the worker's): a worker without its
/// limits runs no codec, and the agent reports the codecs' calls as failed (`js_crashed`). A
/// stricter limit the worker inherited (a unit's or a shell's `ulimit`) is kept: without
/// privileges a hard limit can only be lowered, and asking for more would end a worker that is
/// already bounded.
fn limit_self() {
    let set = |what: &str, resource, value: libc::rlim_t| {
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit, which `now` is.
        let limit = if unsafe { libc::getrlimit(resource, &mut now) } == 0 {
            libc::rlimit {
                rlim_cur: value.min(now.rlim_cur),
                rlim_max: value.min(now.rlim_max),
            }
        } else {
            libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            }
        };
        // SAFETY: setrlimit reads one rlimit, which `limit` is.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            log::error!(
                "cannot limit its {what}: {}; it runs no codec without",
                std::io::Error::last_os_error()
            );
            exit(1)
        }
    };
    set("memory", libc::RLIMIT_DATA, WORKER_MEMORY as libc::rlim_t);
    set("core dumps", libc::RLIMIT_CORE, 0);
    set("open files", libc::RLIMIT_NOFILE, 3);
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        log::error!(
            "cannot give up new privileges: {}; it runs no codec without",
            std::io::Error::last_os_error()
        );
        exit(1)
    }
}

/// Make the worker the process the kernel's OOM killer ends first (`oom_score_adj` 1000):
/// when the unit's memory (MemoryMax) runs out, losing the worker costs the agent a call,
/// losing the agent costs a restart. Raising it needs no privilege, but the files under
/// `/proc/self` of a process that is not dumpable (the agent's start-up made it so) belong
/// to root: the worker is dumpable only for the write.
fn first_to_go() {
    // SAFETY: PR_SET_DUMPABLE takes plain integers.
    let dumpable =
        |on: bool| unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) };
    dumpable(true);
    let written = std::fs::write("/proc/self/oom_score_adj", "1000");
    dumpable(false);
    if let Err(e) = written {
        log::warn!("cannot make itself the first the OOM killer ends: {e}");
    }
}

/// SIGTERM, SIGINT and SIGHUP are meant for the agent (systemd, a terminal's Ctrl-C and a
/// reload reach the whole group): the worker ends when the agent closes its socket, so a stop
/// never cuts a call short and costs an innocent frame its codec.
fn ignore_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: setting a signal to be ignored takes no handler of ours.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
}

/// The CPU time this process has used.
fn cpu_used() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Set RLIMIT_CPU's soft limit to [`CPU_BACKSTOP`] seconds past `used` (seconds of CPU time
/// used so far), once half of that margin is used up.
fn move_cpu_backstop(used: u64, limit: &mut u64) {
    if used + CPU_BACKSTOP / 2 < *limit {
        return;
    }
    *limit = used + CPU_BACKSTOP;
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one rlimit, which `current` is.
    unsafe {
        libc::getrlimit(libc::RLIMIT_CPU, &mut current);
        current.rlim_cur = current.rlim_max.min(*limit as libc::rlim_t);
        libc::setrlimit(libc::RLIMIT_CPU, &current);
    }
}

/// Allow the worker's threads only the system calls it makes ([`super::seccomp`]); a filter
/// that cannot be installed ends the worker with the reason on its standard error, as a
/// limit does ([`limit_self`]).
fn filter_calls() {
    if let Err(e) = super::seccomp::install() {
        log::error!("cannot filter its system calls: {e}; it runs no codec without");
        exit(1)
    }
}

/// A thread that ends the process as soon as the agent's end of the socket closes: the
/// agent died, or dropped the worker, while a call may never return. Returns once the
/// thread runs: its start's system calls (its stack guard, its name) come before the
/// filter's install, which does not allow them.
fn end_with_the_agent() {
    let (running, started) = std::sync::mpsc::sync_channel(0);
    let watch = move || {
        let _ = running.send(());
        let mut fd = libc::pollfd {
            fd: 0,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        watch_for_the_end(&mut fd)
    };
    if let Err(e) = std::thread::Builder::new()
        .name("agent-watch".into())
        .stack_size(64 << 10)
        .spawn(watch)
    {
        log::error!("cannot watch for the agent's end: {e}; it runs no codec without");
        exit(1)
    }
    let _ = started.recv();
}

/// Wait until `fd` (the socket) shows the agent's end, then end the process (status 0). A
/// `poll` that fails other than by a signal ends it too (status 1): waiting again would spin
/// on a core until the CPU backstop, in every worker started after it, and a worker nobody
/// watches runs no codec.
pub(super) fn watch_for_the_end(fd: *mut libc::pollfd) -> ! {
    loop {
        // SAFETY: poll reads and writes one pollfd, `fd`'s; an invalid pointer fails with
        // EFAULT.
        let n = unsafe { libc::poll(fd, 1, -1) };
        let interrupted =
            || std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if n > 0 || (n < 0 && !interrupted()) {
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(i32::from(n < 0)) };
        }
    }
}

/// The library's own tests start their test binary as the worker (it has no `js-worker`
/// command): run alone with [`ENV`](harness::ENV) set, this test is the worker.
#[cfg(test)]
pub(crate) mod harness {
    pub const ENV: &str = "HUBGATE_TEST_JS_WORKER";
    pub const TEST: &str = "js::worker::harness::worker_process";

    #[test]
    fn worker_process() {
        if std::env::var_os(ENV).is_some() {
            super::main()
        }
    }
}
