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

    #[tokio::test]
    async fn a_job_s_value_and_its_panic_reach_the_caller() {
        assert_eq!(run(|| 7).await, 7);
        let caller = tokio::spawn(run(|| -> u8 { panic!("in the job") }));
        let panic = caller.await.unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"in the job"));
    }
}
