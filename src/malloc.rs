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
