//! Resident memory of a process, for tests that bound what codecs may take (included by path
//! by the JavaScript tests, which do not use the rest of `support`).

/// Resident memory of process `pid` in bytes (`/proc/PID/statm`, 4 KiB pages).
pub fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}
