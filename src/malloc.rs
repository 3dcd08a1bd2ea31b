//! glibc's allocator, set for a small gateway rather than a server.
//!
//! glibc gives each thread that allocates under contention an arena of its own (up to 8 per
//! core), and each arena keeps what was freed in it; librdkafka's, sled's and tokio's threads
//! all allocate, so a backlog left several arenas each holding megabytes. And glibc raises
//! its threshold for serving an allocation with its own `mmap` each time such a block is
//! freed (up to 32 MiB), so large buffers (sled's, librdkafka's batches, a drain's read-back)
//! moved into the arenas and stayed resident after use. One arena, and a fixed 128 KiB
//! threshold (for `mmap` and for giving the top of the heap back), cut peak RSS by 4–8 MB
//! in the benchmark (docs/performance.md, "Memory").

use std::time::{Duration, Instant};

/// Blocks of this size and up get a mapping of their own, unmapped when freed.
const MMAP_THRESHOLD: libc::c_int = 128 << 10;

/// Call first thing in `main`, before any thread is started.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; it returns 0 when a value is refused,
    // which leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Give the heap's free pages back to the kernel, wherever they are in it (the trim
/// threshold only returns the top of the heap). What start-up (the config's parse, the hub
/// check's client) and a drained outage (sled's tree, the records read back) freed stays
/// resident otherwise until something reuses it (docs/performance.md, "Memory").
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the allocator's lock and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// [`trim`] now and then: it walks the whole heap, and memory it gives back costs a page
/// fault when it is used again, so not after every uplink.
#[derive(Debug)]
pub struct Trimmer {
    every: Duration,
    last: Option<Instant>,
}

impl Trimmer {
    pub fn new(every: Duration) -> Trimmer {
        Trimmer { every, last: None }
    }

    /// Trim, unless the last trim was less than `every` before `now`; whether it trimmed.
    pub fn trim(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        trim();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmer_trims_at_most_once_per_period() {
        let t0 = Instant::now();
        let every = Duration::from_secs(60);
        let mut t = Trimmer::new(every);
        let ran: Vec<bool> = [0, 1, 59, 60, 61, 119, 120]
            .iter()
            .map(|s| t.trim(t0 + Duration::from_secs(*s)))
            .collect();
        assert_eq!(ran, [true, false, false, true, false, false, true]);
    }
}
