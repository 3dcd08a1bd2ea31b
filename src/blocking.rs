//! Blocking work off the async workers. The agent's runtime has two workers and the
//! systemd watchdog is pinged from a task on them: a file read, an `fsync`, a sled open or a
//! librdkafka client build there holds up every task queued behind it. The rule
//! (docs/design.md "Threads and blocking"): such work runs on the forwarder's thread, on a
//! thread of its own, or on tokio's blocking pool through [`run`].

/// Run `work` on tokio's blocking pool and wait for it without holding a worker; a panic in
/// it carries on in the caller.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
