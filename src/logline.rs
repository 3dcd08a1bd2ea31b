//! Log lines whose rate or content the outside world controls (bad input, drops, sink
//! errors), kept bounded: per kind, the first line is written at once, later ones at most
//! once per interval with the number that came in between, and no line is longer than
//! [`MAX_LINE`] or holds control or format characters (a hostile message cannot flood or
//! forge the log). With `RUST_LOG=debug` every occurrence is also logged at debug level.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Longest message kept in a line, in bytes; the rest is cut and its length said.
pub const MAX_LINE: usize = 400;
/// At most one line per kind per this interval (after the first).
pub const EVERY: Duration = Duration::from_secs(60);
/// Warnings and errors written, kept for the status page's recent problems.
pub const RECENT: usize = 50;

#[derive(Default)]
pub struct Limiter {
    kinds: Mutex<HashMap<&'static str, Window>>,
    recent: Mutex<VecDeque<Written>>,
}

/// A warning or error line as written (so at the rate the limiter allows).
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub time: SystemTime,
    pub kind: &'static str,
    pub line: String,
}

struct Window {
    /// Start of the current interval.
    since: Instant,
    /// Occurrences in this interval not written yet, and one of them to quote.
    held: u64,
    sample: String,
    level: log::Level,
}

impl Limiter {
    /// Log `msg()` at `level` under `kind`, rate-limited. `msg` is only called when the line
    /// is written (or debug logging is on).
    pub fn log(&self, level: log::Level, kind: &'static str, msg: impl FnOnce() -> String) {
        self.log_n(level, kind, 1, msg)
    }

    /// The same for `n` occurrences (at least one) that `msg()` stands for together: one
    /// lock, one line at most.
    pub fn log_n(
        &self,
        level: log::Level,
        kind: &'static str,
        n: u64,
        msg: impl FnOnce() -> String,
    ) {
        self.log_at(Instant::now(), level, kind, n, msg)
    }

    fn log_at(
        &self,
        now: Instant,
        level: log::Level,
        kind: &'static str,
        n: u64,
        msg: impl FnOnce() -> String,
    ) {
        // The ones beyond the first are held back from the start.
        let held = n.saturating_sub(1);
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let debug = log::log_enabled!(log::Level::Debug);
        match kinds.get_mut(kind) {
            None => {
                let line = clean(&msg());
                log::log!(level, "{line} [{kind}]");
                kinds.insert(kind, Window::new(now, held, &line, level));
                self.remember(level, kind, line);
            }
            Some(w) if now.duration_since(w.since) >= EVERY => {
                let text = clean(&msg());
                let line = summary(kind, w.held + 1, &text, now - w.since);
                log::log!(level, "{line}");
                *w = Window::new(now, held, &text, level);
                self.remember(level, kind, line);
            }
            Some(w) => {
                let first = w.held == 0;
                w.held = w.held.saturating_add(n);
                // Formatted only when debug logging shows it, or for the first one held
                // back (the summary quotes it if no later line is written).
                if debug || first {
                    let line = clean(&msg());
                    if debug {
                        log::debug!("{line} [{kind}]");
                    }
                    w.sample = line;
                }
            }
        }
    }

    /// Write the held counts of every kind whose interval has run out (called by the
    /// periodic status task, so a burst that ended is still reported).
    pub fn flush(&self) {
        self.flush_at(Instant::now())
    }

    fn flush_at(&self, now: Instant) {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, w) in kinds.iter_mut() {
            if w.held > 0 && now.duration_since(w.since) >= EVERY {
                let line = summary(kind, w.held, &w.sample, now - w.since);
                log::log!(w.level, "{line}");
                self.remember(w.level, kind, line);
                w.held = 0;
                w.sample.clear();
                w.since = now;
            }
        }
    }
}

impl Window {
    /// From `now`, `held` occurrences held back already, which `line` (written) stands for.
    fn new(now: Instant, held: u64, line: &str, level: log::Level) -> Window {
        Window {
            since: now,
            held,
            sample: if held > 0 { line.into() } else { String::new() },
            level,
        }
    }
}

impl Limiter {
    /// Keep a written warning or error (the newest [`RECENT`]).
    pub fn remember(&self, level: log::Level, kind: &'static str, line: String) {
        if level > log::Level::Warn {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(Written {
            time: SystemTime::now(),
            kind,
            line,
        });
    }

    /// The warnings and errors written lately, newest first.
    pub fn recent(&self) -> Vec<Written> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().cloned().collect()
    }
}

fn summary(kind: &str, n: u64, line: &str, over: Duration) -> String {
    format!(
        "{line} [{kind}: {n} in the last {}s]",
        over.as_secs().max(1)
    )
}

/// `s` cut to [`MAX_LINE`] bytes, what does not print escaped (see [`clean_to`]).
pub fn clean(s: &str) -> String {
    clean_to(s, MAX_LINE)
}

/// `s` from the outside (a message, a peer's words) as it may stand in a line: cut after `max`
/// bytes (on a character boundary, the rest's length said), each character that does not print
/// escaped (see [`push_escaped`]), so that it can neither end the line nor drive the terminal.
pub fn clean_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 32));
    for (i, c) in s.char_indices() {
        if out.len() >= max {
            let _ = write!(out, "… ({} more bytes)", s.len() - i);
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// Push `c`, escaped as in Rust (`\n`, `\u{1b}`, `\u{202e}`) where it does not print: a
/// control character, a line or paragraph separator, or a format one such as a right-to-left
/// override that would turn the rest of the line around. Letters, combining marks and other
/// spaces of any script stay as they are.
pub fn push_escaped(out: &mut String, c: char) {
    if c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}') {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Unicode's format characters (general category Cf), as ranges: invisible, and some of them
/// reorder or hide the text around them.
const FORMAT: &[(char, char)] = &[
    ('\u{ad}', '\u{ad}'),
    ('\u{600}', '\u{605}'),
    ('\u{61c}', '\u{61c}'),
    ('\u{6dd}', '\u{6dd}'),
    ('\u{70f}', '\u{70f}'),
    ('\u{890}', '\u{891}'),
    ('\u{8e2}', '\u{8e2}'),
    ('\u{180e}', '\u{180e}'),
    ('\u{200b}', '\u{200f}'),
    ('\u{202a}', '\u{202e}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206f}'),
    ('\u{feff}', '\u{feff}'),
    ('\u{fff9}', '\u{fffb}'),
    ('\u{110bd}', '\u{110bd}'),
    ('\u{110cd}', '\u{110cd}'),
    ('\u{13430}', '\u{1343f}'),
    ('\u{1bca0}', '\u{1bca3}'),
    ('\u{1d173}', '\u{1d17a}'),
    ('\u{e0001}', '\u{e0001}'),
    ('\u{e0020}', '\u{e007f}'),
];

fn is_format(c: char) -> bool {
    FORMAT
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_problems_are_the_warnings_and_errors_written_newest_first() {
        let l = Limiter::default();
        let t0 = Instant::now();
        l.log_at(t0, log::Level::Warn, "a", 1, || "first a".into());
        l.log_at(t0, log::Level::Warn, "a", 1, || "held back".into());
        l.log_at(t0, log::Level::Info, "i", 1, || "not a problem".into());
        l.log_at(t0, log::Level::Error, "b", 1, || "first b".into());
        l.flush_at(t0 + EVERY);
        let lines: Vec<_> = l.recent().into_iter().map(|w| (w.kind, w.line)).collect();
        assert_eq!(
            lines,
            [
                ("a", "held back [a: 1 in the last 60s]".to_string()),
                ("b", "first b".into()),
                ("a", "first a".into()),
            ]
        );
        for i in 0..RECENT + 5 {
            l.remember(log::Level::Warn, "c", i.to_string());
        }
        let recent = l.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].line, (RECENT + 4).to_string());
    }

    /// Occurrences that come together are counted together: the first is written (or held)
    /// as one would be, the others held back, and the summary counts them all.
    #[test]
    fn occurrences_that_come_together_are_counted_together() {
        let l = Limiter::default();
        let t0 = Instant::now();
        l.log_at(t0, log::Level::Warn, "k", 5, || "five".into());
        l.log_at(t0, log::Level::Warn, "k", 3, || "three".into());
        assert_eq!(l.kinds.lock().unwrap()["k"].held, 7);
        l.flush_at(t0 + EVERY);
        // The written one of a new interval stands for itself; its others wait for the next.
        l.log_at(t0 + EVERY * 2, log::Level::Warn, "k", 2, || "two".into());
        l.log_at(t0 + EVERY * 3, log::Level::Warn, "k", 1, || "one".into());
        let lines: Vec<_> = l.recent().into_iter().rev().map(|w| w.line).collect();
        assert_eq!(
            lines,
            [
                "five",
                "five [k: 7 in the last 60s]",
                "two [k: 1 in the last 60s]",
                "one [k: 2 in the last 60s]",
            ]
        );
        assert_eq!(l.kinds.lock().unwrap()["k"].held, 0);
    }

    #[test]
    fn long_lines_are_cut_and_what_does_not_print_escaped() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "é".repeat(1000);
        let c = clean(&long);
        assert!(c.len() < MAX_LINE + 40, "{}", c.len());
        assert!(c.ends_with("… (1600 more bytes)"), "{c}");
        assert_eq!(
            clean(
                "tab\there, DEL\u{7f}, CSI\u{9b}, RLO\u{202e}, LS\u{2028}, \"quoted\" \\ é e\u{301} \u{a0}x"
            ),
            "tab\\there, DEL\\u{7f}, CSI\\u{9b}, RLO\\u{202e}, LS\\u{2028}, \"quoted\" \\ é e\u{301} \u{a0}x"
        );
        assert_eq!(clean_to("abcdef", 3), "abc… (3 more bytes)");
        assert_eq!(clean_to("abc", 3), "abc");
    }

    #[test]
    fn counts_what_it_holds_back_and_reports_it_once_the_interval_ran_out() {
        let l = Limiter::default();
        let t0 = Instant::now();
        let calls = std::cell::Cell::new(0);
        let msg = || {
            calls.set(calls.get() + 1);
            "bad".to_string()
        };
        l.log_at(t0, log::Level::Warn, "k", 1, msg);
        for i in 1..1000 {
            l.log_at(t0 + Duration::from_millis(i), log::Level::Warn, "k", 1, msg);
        }
        {
            let kinds = l.kinds.lock().unwrap();
            assert_eq!(kinds["k"].held, 999);
            assert_eq!(kinds["k"].sample, "bad");
        }
        // Not formatted for every held one (debug is off in tests; the first line is only
        // formatted where a logger takes it).
        assert!(calls.get() <= 2, "{}", calls.get());
        l.flush_at(t0 + EVERY / 2);
        assert_eq!(l.kinds.lock().unwrap()["k"].held, 999, "not yet due");
        l.flush_at(t0 + EVERY);
        assert_eq!(l.kinds.lock().unwrap()["k"].held, 0);
        // A new occurrence after the interval is written at once, with its own count.
        l.log_at(t0 + EVERY * 3, log::Level::Warn, "k", 1, msg);
        let kinds = l.kinds.lock().unwrap();
        assert_eq!((kinds["k"].held, kinds["k"].since), (0, t0 + EVERY * 3));
    }
}
