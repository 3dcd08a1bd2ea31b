//! Whether the system clock can be trusted. A Raspberry Pi has no real-time clock: it boots
//! with the time it was shut down at (or 1970) and steps to the real time once NTP has
//! synchronised it. Until then, wall-clock ages mean nothing, so buffer expiry waits.

use std::path::Path;

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
