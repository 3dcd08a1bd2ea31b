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

/// Where the kernel names this boot: a new random id at each boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This boot's id, `None` where it cannot be read (`ProcSubset=pid` hides `/proc/sys`).
pub fn boot_id() -> Option<u128> {
    parse_boot_id(&std::fs::read_to_string(BOOT_ID).ok()?)
}

fn parse_boot_id(text: &str) -> Option<u128> {
    u128::from_str_radix(&text.trim().replace('-', ""), 16).ok()
}

/// Time since boot, suspend included (`CLOCK_BOOTTIME`): wall time minus it is the same at
/// every reading of one boot until the wall clock steps, as hubgate restarts too.
pub fn since_boot() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (r == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
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
    fn the_boot_id_reads_as_the_kernel_writes_it_and_the_boot_clock_runs() {
        let id = "c733f922-b7cf-4639-bef6-1d4da3bf976c\n";
        assert_eq!(
            super::parse_boot_id(id),
            Some(0xc733f922_b7cf_4639_bef6_1d4da3bf976c)
        );
        assert_eq!(super::parse_boot_id("damaged"), None);
        let (a, b) = (super::since_boot().unwrap(), super::since_boot().unwrap());
        assert!(a > Duration::ZERO && b >= a, "{a:?} {b:?}");
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
