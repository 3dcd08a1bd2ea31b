//! Blocking work off the async workers. The agent's runtime has two workers and the
//! systemd watchdog is pinged from a task on them: a file read, an `fsync`, a sled open or a
//! librdkafka client build there holds up every task queued behind it. The rule
//! (docs/design.md "Threads and blocking"): such work runs on the forwarder's thread, on a
//! thread of its own, or on tokio's blocking pool through [`run`].

use tokio::task::JoinError;

/// Run `work` on tokio's blocking pool and wait for it without holding a worker; a panic in
/// it carries on in the caller.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    outcome(tokio::task::spawn_blocking(work).await).await
}

/// The value of a blocking job, or its panic resumed. A job the pool cancelled never ran:
/// the pool cancels only the jobs still queued when the runtime shuts down, which drops the
/// caller's task with it, so the caller waits for nothing instead. (A panic there would end
/// the process, [`crate::contain`], before `main` reported why the agent stopped.)
async fn outcome<T>(joined: Result<T, JoinError>) -> T {
    match joined {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => std::future::pending().await,
    }
}

/// Start `work` on a thread of its own, made by `thread`, with a current-thread runtime
/// (timers on) for it to drive; its result comes on the receiver (none if it panics: join
/// the thread). Callable from an async worker: a runtime dropped there panics, and
/// `std::thread::Builder::spawn` drops its closure, runtime and all, on the caller's thread
/// when the thread cannot start (a process or cgroup at its thread limit), so the runtime
/// of a thread that did not start is let go without waiting and the error returned.
#[allow(clippy::type_complexity)]
pub fn own_thread<T: Send + 'static>(
    thread: std::thread::Builder,
    work: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> std::io::Result<(
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<T>,
)> {
    let runtime = Handover(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?,
    ));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = thread.spawn(move || {
        let mut runtime = runtime;
        if let Some(rt) = runtime.0.take() {
            let _ = tx.send(work(&rt));
        }
    })?;
    Ok((thread, rx))
}

/// A runtime on its way to its thread; dropped still held (the thread did not start), it
/// is shut down without waiting, which an async worker may do.
struct Handover(Option<tokio::runtime::Runtime>);

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    #[tokio::test]
    async fn a_job_cancelled_at_shutdown_leaves_its_caller_waiting() {
        let task = tokio::spawn(std::future::pending::<u8>());
        task.abort();
        let cancelled = task.await.unwrap_err();
        assert!(cancelled.is_cancelled());
        let mut waiting = std::pin::pin!(outcome(Err::<u8, _>(cancelled)));
        let poll = waiting
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(poll, Poll::Pending);
    }

    /// A thread that cannot start (here: a stack no machine has) is an error for an async
    /// caller, not a panic. (A 64-bit size: on 32-bit targets the largest `usize` is one the
    /// C library may refuse outright.)
    #[cfg(target_pointer_width = "64")]
    #[tokio::test]
    async fn a_thread_that_cannot_start_is_an_error_on_an_async_worker() {
        let huge = std::thread::Builder::new().stack_size(1 << 60);
        let failed = own_thread(huge, |rt| rt.block_on(async { 1 }));
        assert!(failed.is_err());
    }

    /// A thread that starts drives its runtime and hands over its result.
    #[tokio::test]
    async fn a_thread_of_its_own_hands_over_its_result() {
        let named = std::thread::Builder::new().name("own".into());
        let (thread, result) = own_thread(named, |rt| {
            rt.block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                std::thread::current().name().map(str::to_string)
            })
        })
        .unwrap();
        assert_eq!(result.await.unwrap().as_deref(), Some("own"));
        thread.join().unwrap();
    }

    #[tokio::test]
    async fn a_job_s_value_and_its_panic_reach_the_caller() {
        assert_eq!(run(|| 7).await, 7);
        let caller = tokio::spawn(run(|| -> u8 { panic!("in the job") }));
        let panic = caller.await.unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"in the job"));
    }
}
