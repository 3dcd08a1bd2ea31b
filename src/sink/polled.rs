//! A librdkafka producer with a thread that serves its delivery reports (and errors and
//! statistics) as they come, and sleeps while there are none.
//!
//! rust-rdkafka's `ThreadedProducer` polls every 100 ms and spins through the end of each
//! poll: librdkafka waits in whole milliseconds, truncated, so it returns up to a few ms
//! before rust-rdkafka's deadline, which then polls again with a timeout of 0 until the
//! deadline passes. On an idle agent that was 7–9 ms of CPU a second (`strace`: 0.8–3.4 ms
//! without a system call after each timed-out wait). Here librdkafka's queue event callback
//! (called on its own thread when the queue of reports goes from empty to not empty) wakes
//! the thread, which takes what is there without waiting.

use std::os::raw::c_void;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

/// Set by librdkafka's callback or by `Drop`; the poll thread waits for it.
#[derive(Default)]
struct Wake {
    /// (something to take, stop)
    state: Mutex<(bool, bool)>,
    cond: Condvar,
}

impl Wake {
    fn set(&self, stop: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = true;
        s.1 |= stop;
        self.cond.notify_one();
    }

    /// Wait until set; `true`: stop.
    fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.0 {
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 = false;
        s.1
    }
}

/// Called by librdkafka, on one of its threads, when its main queue stops being empty.
unsafe extern "C" fn queued(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Wake` that `Polled` keeps alive until it has turned this
    // callback off (in `Drop`).
    let wake = unsafe { &*(opaque as *const Wake) };
    wake.set(false);
}

/// The main queue's handle, for its length and its event callback.
struct Queue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka's queue handles may be used from any thread.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

impl Queue {
    fn len(&self) -> usize {
        // SAFETY: a live handle (destroyed only in `Polled::drop`, after the thread ended).
        unsafe { rd::rd_kafka_queue_length(self.0) }
    }
}

pub struct Polled<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    queue: Arc<Queue>,
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

impl<C: ProducerContext + 'static> Polled<C> {
    pub fn new(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let wake = Arc::new(Wake::default());
        // SAFETY: the client outlives the handle (both go in `Drop`, the handle first).
        let queue = Arc::new(Queue(unsafe {
            rd::rd_kafka_queue_get_main(producer.client().native_ptr())
        }));
        // SAFETY: `wake` outlives the callback, which `Drop` turns off before it goes.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue.0,
                Some(queued),
                Arc::as_ptr(&wake) as *mut c_void,
            )
        };
        let thread = {
            let (producer, queue, wake) = (producer.clone(), queue.clone(), wake.clone());
            std::thread::Builder::new()
                .name("kafka reports".into())
                .spawn(move || {
                    // What arrived before the callback was on is taken first.
                    loop {
                        while queue.len() > 0 {
                            producer.poll(Duration::ZERO);
                        }
                        if wake.wait() {
                            break;
                        }
                    }
                })
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // SAFETY: as in `Drop`.
                unsafe {
                    rd::rd_kafka_queue_cb_event_enable(queue.0, None, std::ptr::null_mut());
                    rd::rd_kafka_queue_destroy(queue.0);
                }
                return Err(KafkaError::ClientCreation(format!(
                    "cannot start the thread for delivery reports: {e}"
                )));
            }
        };
        Ok(Polled {
            producer,
            queue,
            wake,
            thread,
        })
    }

    /// Hand `record` to librdkafka; its report comes through the context.
    pub fn send(
        &self,
        record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
    ) -> Result<(), KafkaError> {
        self.producer.send(record).map_err(|(e, _)| e)
    }

    pub fn client(&self) -> &Client<C> {
        self.producer.client()
    }

    /// Wait up to `timeout` until everything handed over is confirmed or has failed. One
    /// `rd_kafka_flush`, which sends what lingers at once and serves reports while it waits;
    /// `BaseProducer::flush` calls it without waiting and then polls in 100 ms slices beside
    /// the report thread, so what it flushed still waited out `linger.ms`.
    pub fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: a live client handle.
        match unsafe { rd::rd_kafka_flush(self.producer.client().native_ptr(), ms) } {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
            e => Err(KafkaError::Flush(e.into())),
        }
    }

    pub fn in_flight_count(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// The thread ends first; dropping the producer then reports what it still held (as failed)
/// on the dropping thread.
impl<C: ProducerContext + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        // SAFETY: a live handle; after this librdkafka no longer calls `queued`.
        unsafe { rd::rd_kafka_queue_cb_event_enable(self.queue.0, None, std::ptr::null_mut()) };
        self.wake.set(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: the thread is gone and nothing else holds the handle.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;

    /// A flush sends a record at once rather than after `linger.ms` (a minute here).
    #[test]
    fn a_flush_does_not_wait_for_linger() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", mock.bootstrap_servers())
            .set("linger.ms", "60000");
        let producer = Polled::new(&c, DefaultProducerContext).unwrap();
        producer
            .send(BaseRecord::to("t").key(&b"k"[..]).payload(&b"v"[..]))
            .unwrap();
        producer
            .flush(Duration::from_secs(20))
            .expect("confirmed well before linger.ms");
        assert_eq!(producer.in_flight_count(), 0);
    }
}
