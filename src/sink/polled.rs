//! A librdkafka producer whose delivery reports (and errors and statistics) are served on the
//! thread that sends, the forwarder's, as they come: no thread of its own, no timer.
//!
//! librdkafka calls its queue event callback, on one of its threads, when the queue of
//! reports goes from empty to not empty; the callback only notifies the forwarder, which
//! then serves what is there without waiting ([`Polled::serve`]) and applies the reports in
//! the same round. rust-rdkafka's `ThreadedProducer` polls every 100 ms instead and spins
//! through the end of each poll: librdkafka waits in whole milliseconds, truncated, so it
//! returns up to a few ms before rust-rdkafka's deadline, which then polls again with a
//! timeout of 0 until the deadline passes (7–9 ms of CPU a second on an idle agent). A
//! thread of hubgate's that served the reports and handed them to the forwarder through a
//! channel cost each report one thread hop more (docs/performance.md).

use std::future::Future;
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use tokio::sync::Notify;

/// Called by librdkafka, on one of its threads, when its main queue stops being empty.
unsafe extern "C" fn queued(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` that `Polled` holds until after the client is
    // destroyed (its fields drop in order), and no librdkafka thread outlives that.
    let queued = unsafe { &*(opaque as *const Notify) };
    // A permit is kept when the forwarder is not waiting yet: no report is left unserved.
    queued.notify_one();
}

/// The main queue's handle, for its length and its event callback.
struct Queue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka's queue handles may be used from any thread.
unsafe impl Send for Queue {}

impl Queue {
    fn len(&self) -> usize {
        // SAFETY: a live handle (destroyed only in `Polled::drop`).
        unsafe { rd::rd_kafka_queue_length(self.0) }
    }
}

/// Block this thread until `queued` is notified (at once if it holds a permit).
fn wait(queued: &Notify) {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut notified = std::pin::pin!(queued.notified());
    while notified
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_pending()
    {
        std::thread::park();
    }
}

pub struct Polled<C: ProducerContext + 'static> {
    // Fields drop in this order, after `Drop::drop` has let go of the queue handle: the
    // producer (which purges what it still holds and serves the purge reports) and with it
    // librdkafka's threads, then the `Notify` its callback used.
    producer: BaseProducer<C>,
    queue: Queue,
    queued: Arc<Notify>,
}

impl<C: ProducerContext + 'static> Polled<C> {
    /// A producer that notifies `queued` when it has something to [serve](Polled::serve).
    pub fn new(config: &ClientConfig, context: C, queued: Arc<Notify>) -> KafkaResult<Self> {
        let producer = BaseProducer::from_config_and_context(config, context)?;
        // SAFETY: the client outlives the handle (`Drop` destroys the handle first).
        let queue = Queue(unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) });
        // SAFETY: `queued` outlives the callback (see `queued`).
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue.0,
                Some(self::queued),
                Arc::as_ptr(&queued) as *mut c_void,
            )
        };
        // What arrived before the callback was on is served at the first wake.
        queued.notify_one();
        Ok(Polled {
            producer,
            queue,
            queued,
        })
    }

    /// Serve every delivery report, error and statistics event queued (the context's
    /// callbacks run here), without waiting.
    pub fn serve(&self) {
        while self.queue.len() > 0 {
            self.producer.poll(Duration::ZERO);
        }
    }

    /// What the callback notifies.
    pub fn queued(&self) -> &Arc<Notify> {
        &self.queued
    }

    /// Hand `record` to librdkafka; its report comes through the context when served.
    pub fn send(
        &self,
        record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
    ) -> Result<(), KafkaError> {
        self.producer.send(record).map_err(|(e, _)| e)
    }

    pub fn client(&self) -> &Client<C> {
        self.producer.client()
    }

    /// Wait up to `timeout` until everything handed over is confirmed or has failed,
    /// serving the reports meanwhile on this thread. `rd_kafka_flush` has librdkafka send what
    /// lingers at once for as long as it runs, but with reports as events (rust-rdkafka's
    /// way) it only waits for another thread to serve them, so it runs on a short thread of
    /// its own while this one serves what the queue callback announces; it wakes this one
    /// when it returns. `BaseProducer::flush` instead calls it without waiting between polls
    /// of 100 ms: a flush of anything takes 100 ms at least, and a broker thread sends what
    /// lingers only if it looks during one of those calls (at `linger.ms` 60 s on the mock
    /// cluster: after 0.3 s to over 20 s).
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let producer = &self.producer;
        let queued = &*self.queued;
        let done = AtomicBool::new(false);
        let result = std::thread::scope(|s| {
            let flush = std::thread::Builder::new()
                .name("kafka flush".into())
                .spawn_scoped(s, || {
                    // SAFETY: a live client handle (the producer outlives the scope).
                    let result = unsafe { rd::rd_kafka_flush(producer.client().native_ptr(), ms) };
                    done.store(true, Ordering::Release);
                    // Should the loop below have seen `done` already, this permit wakes the
                    // forwarder once for nothing.
                    queued.notify_one();
                    result
                })
                .ok()?;
            // Each wake-up is followed by a serve, so no report announced is left unserved.
            loop {
                self.serve();
                if done.load(Ordering::Acquire) {
                    break;
                }
                wait(queued);
            }
            flush.join().ok()
        });
        match result {
            Some(rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR) => Ok(()),
            Some(e) => Err(KafkaError::Flush(e.into())),
            // No thread: rust-rdkafka's flush, which serves the reports itself.
            None => producer.flush(timeout),
        }
    }

    /// Drop what was handed over but not sent yet (its reports say `PurgeQueue`); the
    /// requests in flight go on.
    pub fn purge_unsent(&self) {
        // SAFETY: a live client handle; the flag is librdkafka's own. It fails only for a
        // client that is not a producer or an unknown flag.
        unsafe {
            rd::rd_kafka_purge(
                self.producer.client().native_ptr(),
                rd::RD_KAFKA_PURGE_F_QUEUE,
            )
        };
    }

    pub fn in_flight_count(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// The callback goes first. Dropping the producer then purges what it still holds: the
/// context gets those records' reports (`PurgeQueue`, `PurgeInflight`) on the dropping
/// thread (the Kafka sink's passes none of them on).
impl<C: ProducerContext + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        // SAFETY: a live handle, used by nothing else; librdkafka destroys a client only once
        // no handle to its queues is left.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.0, None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;

    /// Flushes send what lingers at once (`linger.ms` is a minute here) and serve the reports
    /// themselves: 100 records, each flushed alone, are confirmed within 8 s (0.3 s here
    /// when idle; the rest is room for a loaded machine), where `BaseProducer::flush` takes
    /// 100 ms at least for each (10 s in all).
    #[test]
    fn flushes_do_not_wait_for_linger() {
        // On a thread of its own, so that a flush that never returns fails the test too.
        let (alive, ended) = std::sync::mpsc::channel::<()>();
        let flushes = std::thread::spawn(move || {
            let _alive = alive;
            flush_lingering_records(100, Duration::from_secs(8));
        });
        let ended = ended.recv_timeout(Duration::from_secs(10));
        assert_ne!(
            ended,
            Err(RecvTimeoutError::Timeout),
            "a flush never returned"
        );
        if let Err(panic) = flushes.join() {
            std::panic::resume_unwind(panic);
        }
    }

    fn flush_lingering_records(records: usize, within: Duration) {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "60000");
        let producer = Polled::new(&c, DefaultProducerContext, Arc::new(Notify::new())).unwrap();
        let deadline = Instant::now() + within;
        for n in 1..=records {
            producer
                .send(BaseRecord::to("t").key(&b"k"[..]).payload(&b"v"[..]))
                .unwrap();
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = producer.flush(left) {
                panic!("flush {n} of {records} not done within {within:?}: {e}");
            }
            assert_eq!(producer.in_flight_count(), 0, "flush {n}");
        }
    }
}
