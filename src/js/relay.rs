//! The worker's standard error, read by the agent. A QuickJS escape controls the worker, so
//! the worker does not write to the agent's journal stream: its standard error is a pipe, and a
//! thread of the agent's own (blocked in `poll` while the worker is silent, never on an async
//! worker) logs each line it reads as the problem [`KIND`], marked as the worker's, cut and
//! with its control characters escaped, rate-limited as every line the outside world controls
//! ([`crate::logline`]): past the rate, lines are counted, not written. The thread reads as
//! fast as the worker writes, so a worker that floods is never held up for long, and keeps
//! one line's first [`KEPT`] bytes at most, counting the rest.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::metrics::Metrics;

/// The problem of a line the worker wrote.
pub const KIND: &str = "js_worker_log";
/// Bytes of a line kept; the number of the others is said.
pub const KEPT: usize = 256;
/// Bytes read at once.
const CHUNK: usize = 8 << 10;
/// Bytes a relay told to stop still reads: what the worker wrote before it ended (a limit it
/// could not set, its last words), not what a process it left behind holding the pipe writes
/// on and on.
const LAST_WORDS: usize = 64 << 10;

/// The thread reading one worker's standard error. Dropped, it reads what is left (up to
/// [`LAST_WORDS`]) and ends, and the drop waits for it: the pipe is closed by then.
pub struct Relay {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// A pipe, both ends close-on-exec (no other child of the agent's inherits either): read, write.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, owned from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Relay {
    /// Read `pipe` (the read end of worker `pid`'s standard error) on a thread of its own.
    pub fn start(pipe: OwnedFd, pid: u32, metrics: Arc<Metrics>) -> io::Result<Relay> {
        // Non-blocking: the last read after a stop must not wait for more.
        // SAFETY: fcntl takes the descriptor and plain integers.
        if unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (stopped, stop) = self::pipe()?;
        let thread = std::thread::Builder::new()
            .name("js-worker-log".into())
            .spawn(move || {
                relay(&pipe, &stopped, |line| {
                    metrics.problem(KIND, || format!("JavaScript worker {pid}: {}", line.text()))
                })
            })?;
        Ok(Relay {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Its end closed: the thread's poll sees it.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Say every line of `pipe` until it ends, or until `stopped` is closed and what is left is
/// read.
fn relay(pipe: &OwnedFd, stopped: &OwnedFd, mut say: impl FnMut(&Line)) {
    let mut line = Line::default();
    let mut buf = vec![0; CHUNK];
    // Bytes still to read once stopped.
    let mut left: Option<usize> = None;
    loop {
        if left.is_none() {
            let mut fds = [pipe, stopped].map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: poll reads and writes the two pollfds it is given.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[1].revents != 0 {
                left = Some(LAST_WORDS);
            }
        }
        let want = left.map_or(CHUNK, |l| l.min(CHUNK));
        // SAFETY: read writes at most `want` bytes, no more than `buf` holds.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        match n {
            0 => break,
            n if n > 0 => {
                let n = n as usize;
                line.feed(&buf[..n], &mut say);
                if let Some(l) = &mut left {
                    *l -= n;
                    if *l == 0 {
                        break;
                    }
                }
            }
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if left.is_none() => {}
                _ => break,
            },
        }
    }
    line.end(&mut say);
}

/// The line being read: its first [`KEPT`] bytes and the number of the others.
#[derive(Default)]
pub struct Line {
    kept: Vec<u8>,
    more: usize,
}

impl Line {
    /// Take `bytes`, saying every line they end.
    fn feed(&mut self, mut bytes: &[u8], say: &mut impl FnMut(&Line)) {
        loop {
            let end = bytes.iter().position(|&b| b == b'\n');
            let part = &bytes[..end.unwrap_or(bytes.len())];
            let take = part.len().min(KEPT - self.kept.len());
            self.kept.extend_from_slice(&part[..take]);
            self.more += part.len() - take;
            let Some(end) = end else {
                return;
            };
            self.end(say);
            bytes = &bytes[end + 1..];
        }
    }

    /// The line ended (its newline, or the stream's end): say it unless it is empty.
    fn end(&mut self, say: &mut impl FnMut(&Line)) {
        if !self.kept.is_empty() || self.more > 0 {
            say(self);
        }
        self.kept.clear();
        self.more = 0;
    }

    /// Its text, not cleaned yet (the log does that); what was cut said.
    pub fn text(&self) -> String {
        let kept = String::from_utf8_lossy(&self.kept);
        match self.more {
            0 => kept.into_owned(),
            more => format!("{kept}… ({more} more bytes)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Lines split across reads come whole; a long one is cut and the rest counted; empty
    /// lines are not said; the last one is said without its newline.
    #[test]
    fn lines_are_cut_and_joined_across_reads() {
        let mut said = Vec::new();
        let mut line = Line::default();
        let mut say = |l: &Line| said.push(l.text());
        let long = "y".repeat(KEPT + 10);
        for part in ["one\ntw", "o\n\n", &long[..100], &long[100..], "\nlast"] {
            line.feed(part.as_bytes(), &mut say);
        }
        line.end(&mut say);
        let cut = format!("{}… (10 more bytes)", "y".repeat(KEPT));
        assert_eq!(said, ["one", "two", &cut, "last"]);
    }

    /// A relay whose pipe another process still holds (one the worker left behind) ends all
    /// the same once dropped, after saying what was written before: it does not wait for the
    /// pipe's end.
    #[test]
    fn a_dropped_relay_ends_though_its_pipe_is_still_held() {
        let (read, write) = pipe().unwrap();
        let m = Metrics::new();
        let relay = Relay::start(read, 7, m.clone()).unwrap();
        let written = (&std::fs::File::from(write.try_clone().unwrap())).write(b"one\ntwo");
        assert_eq!(written.unwrap(), 7);
        drop(relay);
        assert_eq!(m.problems(KIND), 2);
        let lines: Vec<_> = m.recent_problems().into_iter().map(|w| w.line).collect();
        assert_eq!(lines, ["JavaScript worker 7: one"]);
        drop(write);
    }
}
