//! Containment: one message's failure stays that message's.
//!
//! No panic should be reachable from input (checked arithmetic, validated ranges, fuzzed).
//! As defence in depth, parsing and decoding of each message run inside [`contain`]: a panic
//! there is caught and returned as an error, for the caller to count and to dead-letter or
//! send packed, so the message is acknowledged and the next start does not meet it again.
//! So does sled's open of a buffer database, which asserts on some damage to its log: that
//! database is moved aside instead of the agent aborting at every start.
//!
//! Every other panic ends the process at once ([`abort_outside_containment`]), as
//! `panic = "abort"` did before: a Tokio task that unwound would leave a source or the
//! forwarder stopped while the process looks alive.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

thread_local! {
    /// Inside [`contain`] on this thread.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// Where the last contained panic happened (the hook sees it, `catch_unwind` does not).
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install the panic hook: a panic inside [`contain`] is only noted (its caller reports
/// it); any other is reported as usual and aborts the process.
pub fn abort_outside_containment() {
    let report = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if CONTAINED.with(Cell::get) {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            LOCATION.with(|l| *l.borrow_mut() = at);
            return;
        }
        report(info);
        std::process::abort();
    }));
}

/// Run `f` for one message (or one open of a buffer database); a panic in it becomes
/// `Err("panicked at FILE:LINE: MESSAGE")`. `f`'s state may be left half-updated by a
/// panic: only use it on work whose state is thrown away when it fails.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(outer));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = LOCATION
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| "an unknown place".into());
        crate::logline::clean(&format!("panicked at {at}: {msg}"))
    })
}

/// Tests make the contained code panic here by naming its point.
#[cfg(test)]
pub mod test_point {
    use std::cell::Cell;

    thread_local! {
        static ARMED: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    /// The next [`reach`] of `point` on this thread panics.
    pub fn arm(point: &'static str) {
        ARMED.with(|a| a.set(Some(point)));
    }

    pub fn reach(point: &'static str) {
        if ARMED.with(|a| a.get()) == Some(point) {
            ARMED.with(|a| a.set(None));
            panic!("test panic at {point}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the hook installed, a contained panic is only an error (and its place is
    /// known), and a panic outside containment, even on another thread, aborts the process.
    /// Runs itself as a child process, which is the one that aborts.
    #[test]
    fn the_hook_aborts_outside_containment_only() {
        use std::os::unix::process::ExitStatusExt;
        if std::env::var_os("HUBGATE_CONTAIN_CHILD").is_some() {
            abort_outside_containment();
            let e = contain(|| -> u8 { panic!("contained") }).unwrap_err();
            assert!(e.contains("src/contain.rs:"), "{e}");
            println!("survived: {e}");
            let _ = std::thread::spawn(|| panic!("outside")).join();
            println!("not aborted");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "contain::tests::the_hook_aborts_outside_containment_only",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("HUBGATE_CONTAIN_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("survived: panicked at src/contain.rs:"),
            "{stdout}"
        );
        assert!(!stdout.contains("not aborted"), "{stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    }

    #[test]
    fn a_panic_becomes_an_error_and_containment_ends_with_it() {
        assert_eq!(contain(|| 7), Ok(7));
        let e = contain(|| -> u8 { panic!("bad {}", 42) }).unwrap_err();
        assert!(e.contains("bad 42"), "{e}");
        let nested = contain(|| contain(|| panic!("inner")).unwrap_err());
        assert!(nested.unwrap().contains("inner"));
        assert!(!CONTAINED.with(Cell::get));
        let e = contain(|| -> u8 { panic!("{}", "x".repeat(5000)) }).unwrap_err();
        assert!(e.len() < crate::logline::MAX_LINE + 40, "{}", e.len());
    }
}
