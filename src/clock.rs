//! Whether the system clock can be trusted. A Raspberry Pi has no real-time clock: it boots
//! with the time it was shut down at (or 1970) and steps to the real time once NTP has
//! synchronised it. Until then, wall-clock ages mean nothing, so buffer expiry waits.

/// `Some(true)` when the kernel says the clock is synchronised (adjtimex: `STA_UNSYNC` clear,
/// state not `TIME_ERROR`), `Some(false)` when it says it is not, `None` when it cannot say.
pub fn synchronized() -> Option<bool> {
    // SAFETY: an all-zero timex is valid, and modes 0 only reads the kernel's state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    (state >= 0).then_some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}
