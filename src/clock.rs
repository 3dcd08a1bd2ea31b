//! Whether the system clock can be trusted. A Raspberry Pi has no real-time clock: it boots
//! with the time it was shut down at (or 1970) and steps to the real time once NTP has
//! synchronised it. Until then, wall-clock ages mean nothing, so buffer expiry waits.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// Where systemd-timesyncd says so: the directory exists while it runs, the file once it has
/// synchronised the clock.
const TIMESYNC: &str = "/run/systemd/timesync";

/// `Some(true)` when the clock is synchronised, `Some(false)` when it is not, `None` when
/// nothing can say. The kernel is asked first (adjtimex: `STA_UNSYNC` clear, state not
/// `TIME_ERROR`); under the shipped unit `ProtectClock=yes` forbids even that read, so then
/// systemd-timesyncd's flag file answers.
pub fn synchronized() -> Option<bool> {
    kernel().or_else(|| timesyncd(Path::new(TIMESYNC)))
}

/// 2026-01-01T00:00:00Z: no clock that was ever set shows an earlier time to this hubgate.
const NOT_BEFORE: Duration = Duration::from_secs(1_767_225_600);

/// Whether `now` is a time the clock can show once it was set: not before [`NOT_BEFORE`]. A
/// Pi without a real-time clock and without fake-hwclock boots at 1970.
pub fn plausible(now: SystemTime) -> bool {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .is_ok_and(|t| t >= NOT_BEFORE)
}

/// Whether record times and buffer expiry may follow the wall clock at `now`, given what
/// [`synchronized`] said: when synchronised; when nothing can say, unless it shows a time
/// before [`NOT_BEFORE`] (a clock never set).
pub fn trusted(synchronized: Option<bool>, now: SystemTime) -> bool {
    synchronized.unwrap_or_else(|| plausible(now))
}

fn kernel() -> Option<bool> {
    // SAFETY: an all-zero timex is valid, and modes 0 only reads the kernel's state.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    (state >= 0).then_some(state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0)
}

fn timesyncd(dir: &Path) -> Option<bool> {
    dir.is_dir().then(|| dir.join("synchronized").exists())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    /// Unknown is trusted only while the clock shows a time it can show once set.
    #[test]
    fn an_unknown_clock_is_trusted_unless_it_was_never_set() {
        let booted = SystemTime::UNIX_EPOCH + Duration::from_secs(42);
        let set = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(super::trusted(None, set));
        assert!(!super::trusted(None, booted));
        assert!(!super::trusted(Some(false), set));
        assert!(super::trusted(Some(true), booted), "the kernel's word wins");
    }

    #[test]
    fn timesyncd_says_synchronised_with_its_flag_file_and_nothing_without_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let timesync = dir.path().join("timesync");
        assert_eq!(super::timesyncd(&timesync), None);
        std::fs::create_dir(&timesync).unwrap();
        assert_eq!(super::timesyncd(&timesync), Some(false));
        std::fs::write(timesync.join("synchronized"), "").unwrap();
        assert_eq!(super::timesyncd(&timesync), Some(true));
    }
}
