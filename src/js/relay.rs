//! The worker's standard error, read by the agent. A QuickJS escape controls the worker, so
//! the worker does not write to the agent's journal stream: its standard error is a pipe, and a
//! thread of the agent's own (blocked in `poll` while the worker is silent, never on an async
//! worker) logs what it reads as the problem [`KIND`], marked as the worker's, cut and with its
//! control characters escaped, rate-limited as every line the outside world controls
//! ([`crate::logline`]): past the rate, lines are counted, not written. The lines of one read
//! are one entry (a panic's location and message, written at once, come together), counted as
//! as many problems as it has lines: one count and one log call per read, whatever the lines'
//! number, so a worker that floods costs the agent about one read per write of its own. The
//! thread reads as fast as the worker writes, so a worker that floods is never held up for
//! long, and keeps one entry's first [`KEPT`] bytes at most, counting the rest.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::metrics::Metrics;

/// The problem of a line the worker wrote.
const KIND: &str = "js_worker_log";
/// Bytes of an entry shown, its control characters escaped; the number of the others is said.
const KEPT: usize = 256;
/// Bytes read at once.
const CHUNK: usize = 8 << 10;
/// Bytes a relay told to stop still reads if the pipe does not tell what it holds.
const LAST_WORDS: usize = 64 << 10;
/// The thread's stack: it reads into a buffer on the heap and formats one line at a time.
const STACK: usize = 256 << 10;

/// The thread reading one worker's standard error. Dropped, it reads what is left (what the
/// pipe holds, at most) and ends, and the drop waits for it: the pipe is closed by then.
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
    /// Read `stderr` (the read end of worker `pid`'s standard error) on a thread of its own.
    pub fn start(stderr: OwnedFd, pid: u32, metrics: Arc<Metrics>) -> io::Result<Relay> {
        // Non-blocking: the last read after a stop must not wait for more.
        // SAFETY: fcntl takes the descriptor and plain integers.
        if unsafe { libc::fcntl(stderr.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (stopped, stop) = pipe()?;
        let thread = std::thread::Builder::new()
            .name("js-worker-log".into())
            .stack_size(STACK)
            .spawn(move || {
                relay(&stderr, &stopped, |entry, lines| {
                    metrics.problem_n(KIND, lines, || {
                        format!("JavaScript worker {pid}: {}", entry.text())
                    })
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

/// Say the lines of every read of `pipe` (an entry and the number of its lines) until it ends,
/// or until `stopped` is closed and what is left is read: no more than the pipe holds, which is
/// all the worker (reaped by then) wrote, not what a process it left behind holding the pipe
/// writes on and on.
fn relay(pipe: &OwnedFd, stopped: &OwnedFd, mut say: impl FnMut(&Line, u64)) {
    let mut lines = Lines::default();
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
                left = Some(capacity(pipe));
            }
        }
        let want = left.map_or(CHUNK, |l| l.min(CHUNK));
        // SAFETY: read writes at most `want` bytes, no more than `buf` holds.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        match n {
            0 => break,
            n if n > 0 => {
                let n = n as usize;
                lines.feed(&buf[..n]);
                lines.say(&mut say);
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
    lines.end_line();
    lines.say(&mut say);
}

/// The bytes `pipe` holds at most: 16 pages unless set otherwise (the worker may raise its
/// own, up to the system's `pipe-max-size`).
fn capacity(pipe: &OwnedFd) -> usize {
    // SAFETY: F_GETPIPE_SZ takes the descriptor alone.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).unwrap_or(LAST_WORDS)
}

/// What is read: the lines ended in the current read, joined, and the line being read.
#[derive(Default)]
struct Lines {
    /// The lines ended in this read, each after a newline but the first.
    read: Line,
    /// Their number.
    ended: u64,
    /// The line being read.
    line: Line,
}

impl Lines {
    /// Take `bytes`.
    fn feed(&mut self, mut bytes: &[u8]) {
        loop {
            let end = bytes.iter().position(|&b| b == b'\n');
            self.line.push(&bytes[..end.unwrap_or(bytes.len())]);
            let Some(end) = end else {
                return;
            };
            self.end_line();
            bytes = &bytes[end + 1..];
        }
    }

    /// The line being read ended (its newline, or the stream's end): one of this read's
    /// unless it is empty.
    fn end_line(&mut self) {
        if !self.line.is_empty() {
            if self.ended > 0 {
                self.read.push(b"\n");
            }
            self.read.append(&self.line);
            self.ended += 1;
        }
        self.line.clear();
    }

    /// Say the lines this read ended, if any, as one entry.
    fn say(&mut self, say: &mut impl FnMut(&Line, u64)) {
        if self.ended > 0 {
            say(&self.read, self.ended);
        }
        self.read.clear();
        self.ended = 0;
    }
}

/// Text being read: its first [`KEPT`] bytes and the number of the others.
#[derive(Default)]
struct Line {
    kept: Vec<u8>,
    more: u64,
}

impl Line {
    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.more == 0
    }

    /// Empty again, its buffer kept.
    fn clear(&mut self) {
        self.kept.clear();
        self.more = 0;
    }

    /// Add `bytes`: kept up to [`KEPT`] (not a character cut in two), counted past that. Once
    /// anything is cut, nothing later is kept: the kept bytes are the text's beginning.
    fn push(&mut self, bytes: &[u8]) {
        let take = match self.more {
            0 => bytes.len().min(KEPT - self.kept.len()),
            _ => 0,
        };
        self.kept.extend_from_slice(&bytes[..take]);
        let mut cut = bytes.len() - take;
        if cut > 0 {
            let whole = whole(&self.kept);
            cut += self.kept.len() - whole;
            self.kept.truncate(whole);
        }
        self.more = self.more.saturating_add(cut as u64);
    }

    /// Add `other` (kept and counted).
    fn append(&mut self, other: &Line) {
        self.push(&other.kept);
        self.more = self.more.saturating_add(other.more);
    }

    /// Its text, what does not print escaped as [`crate::logline::clean`] does, no longer
    /// than [`KEPT`] bytes escaped (so that the log line does not cut it again); what is not
    /// shown said.
    fn text(&self) -> String {
        let mut out = String::with_capacity(KEPT);
        let mut shown = 0;
        'chars: for chunk in self.kept.utf8_chunks() {
            // Each character with its length in the bytes read; invalid ones as U+FFFD.
            let chars = chunk.valid().chars().map(|c| (c, c.len_utf8()));
            let invalid =
                (!chunk.invalid().is_empty()).then(|| ('\u{fffd}', chunk.invalid().len()));
            for (c, raw) in chars.chain(invalid) {
                let before = out.len();
                crate::logline::push_escaped(&mut out, c);
                if out.len() > KEPT {
                    out.truncate(before);
                    break 'chars;
                }
                shown += raw;
            }
        }
        match self.more.saturating_add((self.kept.len() - shown) as u64) {
            0 => out,
            more => format!("{out}… ({more} more bytes)"),
        }
    }
}

/// The length of `bytes` without a character cut in two at its end.
fn whole(bytes: &[u8]) -> usize {
    // The start of the last character, if it is one of the last three bytes (a cut one has
    // at most three).
    let last = (bytes.len().saturating_sub(3)..bytes.len())
        .rev()
        .find(|&i| bytes[i] & 0xc0 != 0x80);
    match last {
        Some(i) if std::str::from_utf8(&bytes[i..]).is_err_and(|e| e.error_len().is_none()) => i,
        _ => bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// What `relay` says of `pipe` until it ends or `stopped`'s other end is closed.
    fn said(pipe: &OwnedFd, stopped: &OwnedFd) -> Vec<(String, u64)> {
        let mut said = Vec::new();
        relay(pipe, stopped, |entry, lines| {
            said.push((entry.text(), lines))
        });
        said
    }

    /// What is said of `parts`, one read each, then the stream's end.
    fn read(parts: &[&[u8]]) -> Vec<(String, u64)> {
        let mut lines = Lines::default();
        let mut said = Vec::new();
        let mut say = |entry: &Line, n| said.push((entry.text(), n));
        for part in parts {
            lines.feed(part);
            lines.say(&mut say);
        }
        lines.end_line();
        lines.say(&mut say);
        said
    }

    /// Lines split across reads come whole; a long one is cut and the rest counted; empty
    /// lines are not said; the last one is said without its newline; the lines one read ends
    /// are one entry (a panic's location and message, written at once).
    #[test]
    fn lines_are_cut_and_joined_across_reads() {
        let long = "y".repeat(KEPT + 10);
        let panic = "\nthread 'main' panicked at src/x.rs:1:2:\nboom\n";
        let said = read(&[
            b"one\ntw",
            b"o\n\n",
            &long.as_bytes()[..100],
            &long.as_bytes()[100..],
            b"\n",
            b"last\n",
            panic.as_bytes(),
            b"note\nend",
        ]);
        let cut = format!("{}… (10 more bytes)", "y".repeat(KEPT));
        let panicked = "thread 'main' panicked at src/x.rs:1:2:\\nboom";
        let expected = [
            ("one", 1),
            ("two", 1),
            (&cut, 1),
            ("last", 1),
            (panicked, 2),
            ("note", 1),
            ("end", 1),
        ];
        let expected: Vec<_> = expected.map(|(t, n)| (t.to_string(), n)).into();
        assert_eq!(said, expected);
    }

    /// A read of many short lines is said once, with their number, whatever the number (so
    /// a worker writing `"a\n"` costs one count and one log call per read, not per line).
    #[test]
    fn a_read_of_many_lines_is_said_once() {
        let (read, write) = pipe().unwrap();
        let (stopped, _stop) = pipe().unwrap();
        let flood = "a\n".repeat(CHUNK / 2);
        (&std::fs::File::from(write))
            .write_all(flood.as_bytes())
            .unwrap();
        let shown = format!("{}a… (8020 more bytes)", "a\\n".repeat(85));
        assert_eq!(said(&read, &stopped), [(shown, CHUNK as u64 / 2)]);
    }

    /// An entry cut in the middle of a character keeps none of it; an entry whose escapes
    /// are long is cut after them so that the log line holds it whole; a count too large
    /// for 64 bits stays at the most.
    #[test]
    fn cuts_keep_whole_characters_and_what_the_log_line_holds() {
        let e = "é".repeat(200);
        let said = read(&[format!("a{e}").as_bytes()]);
        let kept = format!("a{}… (146 more bytes)", "é".repeat(127));
        assert_eq!(said, [(kept, 1)]);
        let a = "a".repeat(KEPT - 3);
        let said = read(&[format!("{a}😀").as_bytes()]);
        assert_eq!(said, [(format!("{a}… (4 more bytes)"), 1)]);

        let said = read(&[&[0x1b; KEPT + 4]]);
        let escaped = format!("{}… ({} more bytes)", "\\u{1b}".repeat(42), KEPT + 4 - 42);
        assert_eq!(said, [(escaped.clone(), 1)]);
        let line = format!("JavaScript worker {}: {escaped}", u32::MAX);
        assert_eq!(crate::logline::clean(&line), line);

        let mut line = Line {
            more: u64::MAX - 1,
            ..Line::default()
        };
        line.push(b"0123456789");
        assert_eq!(line.more, u64::MAX);
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

    /// Told to stop while a process the worker left behind writes on and on, a relay reads
    /// what the pipe held and ends: not bounded by the writer, which here writes a line back
    /// for every line read, so the pipe never runs dry.
    #[test]
    fn a_stopped_relay_reads_what_the_pipe_holds_of_an_endless_writer() {
        let (read, write) = pipe().unwrap();
        let write = std::fs::File::from(write);
        // A pipe larger than the fallback, as a worker may make its own.
        let size = (2 * LAST_WORDS) as libc::c_int;
        // SAFETY: fcntl takes the descriptor and plain integers.
        unsafe {
            assert_eq!(
                libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size),
                size
            );
            assert_eq!(
                libc::fcntl(write.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK),
                0
            );
        }
        let block = "x\n".repeat(1024);
        while (&write).write(block.as_bytes()).is_ok() {}
        let full = capacity(&read);
        assert_eq!(full % block.len(), 0);
        let (stopped, stop) = pipe().unwrap();
        drop(stop);
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut said = 0;
            relay(&read, &stopped, |_, lines| {
                said += lines;
                let back = "x\n".repeat(lines as usize);
                (&write).write_all(back.as_bytes()).unwrap();
            });
            done.send(said).unwrap();
        });
        // Only a failure waits this long: the relay reads a few chunks.
        let said = ended.recv_timeout(Duration::from_secs(60));
        assert_eq!(said, Ok(full as u64 / 2));
    }
}
