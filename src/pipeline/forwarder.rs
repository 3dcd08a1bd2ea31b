//! The forwarder owns the sink and the buffer and keeps the durability contract (DESIGN §2):
//!
//! - healthy sink, empty buffer: records go from memory straight to the sink and their
//!   source is acknowledged on the delivery report;
//! - a failure, a slow report (`spill_after`), a full in-flight window or shutdown: records
//!   are written to the buffer, flushed, and only then acknowledged;
//! - once anything is buffered, new records queue behind it (arrival order = sequence order),
//!   and the buffer drains in order, each record deleted on its delivery report.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

use super::dedup::{Dedup, Seen};
use super::health::{SinkHealth, Verdict};
use crate::buffer::{Buffer, BufferError, Pushed};
use crate::config::BufferConfig;
use crate::decode::Decoder;
use crate::lorawan::DevAddr;
use crate::metrics::{unix_seconds, Metrics};
use crate::notify::Heartbeat;
use crate::record::{ms_since_epoch, Record, DEAD_LETTER};
use crate::sink::{Delivery, Sink, SinkError};
use crate::source::{Ack, Frame};

/// Frames taken from the input per round: one buffer flush covers them all.
const BATCH: usize = 256;
const TICK: Duration = Duration::from_millis(100);
/// How long shutdown waits for the sink to confirm what is in flight before spilling it.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

struct InFlight {
    record: Record,
    /// Sources to acknowledge once this record is durable (empty once it is).
    acks: Vec<Ack>,
    in_buffer: bool,
    sent_at: Instant,
}

pub struct Forwarder {
    decoder: Decoder,
    buffer: Buffer,
    sink: Box<dyn Sink>,
    metrics: Arc<Metrics>,
    dedup: Dedup,
    max_in_flight: usize,
    spill_after: Duration,
    max_age_ms: u64,
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// `when_full = "block"`: records waiting for room, not yet acknowledged.
    blocked: VecDeque<(u64, Record, Vec<Ack>)>,
    /// Acknowledgements released by the next [`Forwarder::commit`].
    pending_acks: Vec<Ack>,
    dirty: bool,
    /// Last buffered sequence number handed to the sink by the drain.
    drain_cursor: Option<u64>,
    health: SinkHealth,
    heartbeat: Heartbeat,
}

impl Forwarder {
    pub fn new(
        cfg: &BufferConfig,
        dedup_window: usize,
        decoder: Decoder,
        buffer: Buffer,
        sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let next_seq = buffer.last_seq().map_or(0, |s| s + 1);
        // A source redelivers what it got no acknowledgement for before a crash; what of
        // that is already in the buffer must not go in twice.
        let mut decoder = decoder;
        match buffer.fcnts() {
            Ok(kept) => {
                for (dev_addr, dev_eui, fcnt) in kept {
                    decoder.resume_fcnt(DevAddr(dev_addr), dev_eui, fcnt);
                }
            }
            Err(e) => log::warn!("buffer: cannot read the kept frame counters: {e}"),
        }
        let mut dedup = Dedup::new(dedup_window);
        match buffer.recent_ids(dedup_window) {
            Ok(ids) => ids.iter().for_each(|id| dedup.seed(id)),
            Err(e) => log::warn!("buffer: cannot read the ids of buffered records: {e}"),
        }
        Forwarder {
            decoder,
            buffer,
            sink,
            health: SinkHealth::new(metrics.clone()),
            metrics,
            dedup,
            max_in_flight: cfg.max_in_flight.max(1),
            spill_after: cfg.spill_after,
            max_age_ms: cfg.max_age.as_millis() as u64,
            next_seq,
            in_flight: BTreeMap::new(),
            blocked: VecDeque::new(),
            pending_acks: Vec::new(),
            dirty: false,
            drain_cursor: None,
            heartbeat: Heartbeat::default(),
        }
    }

    /// Beats once per round of [`Forwarder::run`], for the systemd watchdog.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// Hold records of `rec_type` back (its hub is missing) while the others flow.
    fn park(&mut self, rec_type: String, reason: String) {
        let now = Instant::now();
        self.health
            .failed(&SinkError::Park(reason), &rec_type, now, now);
    }

    /// Run until `stop` fires (then spill what is unconfirmed, acknowledge, return), or until
    /// every source has ended and everything has been delivered.
    pub async fn run(
        mut self,
        mut frames: Receiver<Frame>,
        mut deliveries: UnboundedReceiver<Delivery>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut new_sinks: Receiver<Box<dyn Sink>>,
        mut parks: UnboundedReceiver<(String, String)>,
    ) -> Result<(), BufferError> {
        if !self.buffer.is_empty() {
            log::info!(
                "buffer holds {} record(s) from before: sending them first",
                self.buffer.len()
            );
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inputs_open = true;
        loop {
            self.heartbeat.beat();
            if !inputs_open && self.idle() {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(sink) = new_sinks.recv() => self.replace_sink(sink, &mut deliveries)?,
                Some((rec_type, why)) = parks.recv() => self.park(rec_type, why),
                Some(d) = deliveries.recv() => {
                    self.on_delivery(d)?;
                    while let Ok(d) = deliveries.try_recv() {
                        self.on_delivery(d)?;
                    }
                }
                f = frames.recv(), if inputs_open && self.blocked.is_empty() => match f {
                    Some(f) => {
                        self.on_frame(f)?;
                        for _ in 1..BATCH {
                            match frames.try_recv() {
                                Ok(f) => self.on_frame(f)?,
                                Err(_) => break,
                            }
                        }
                    }
                    None => inputs_open = false,
                },
                _ = tick.tick() => {
                    if self.sink.tick() {
                        self.sink_restarted(&mut deliveries)?;
                    }
                    self.spill_slow()?;
                    self.unblock()?;
                }
            }
            self.commit()?;
            self.drain()?;
        }
        self.shutdown(&mut frames, &mut deliveries)
    }

    /// Key rotation: let the old sink confirm what it can, buffer what it could not (the new
    /// sink sends it from there), then carry on with the new one.
    fn replace_sink(
        &mut self,
        sink: Box<dyn Sink>,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        self.settle_in_flight(deliveries)?;
        // Dropped first: what it still held is reported (as failed) before the reports
        // are taken below.
        drop(std::mem::replace(&mut self.sink, sink));
        self.sink_restarted(deliveries)?;
        log::info!("sink replaced (new credentials); buffered records are sent with the new one");
        Ok(())
    }

    /// The sink started over (a new producer): take the old one's last reports before
    /// anything goes to the new one, and send again what got none.
    fn sink_restarted(
        &mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        while let Ok(d) = deliveries.try_recv() {
            self.on_delivery(d)?;
        }
        self.resend_in_flight();
        self.commit()
    }

    /// What an old sink still held gets no report any more: forget it in flight, so the
    /// drain sends it again, oldest first, from the buffer (or from `blocked`, still
    /// unacknowledged, once it fits there).
    fn resend_in_flight(&mut self) {
        for (seq, f) in std::mem::take(&mut self.in_flight) {
            if !f.in_buffer {
                self.hold(seq, f.record, f.acks);
            }
        }
        self.metrics.in_flight.set(0);
        self.drain_cursor = None;
    }

    /// Keep a record that is not durable yet in `blocked`, in sequence order (it goes to
    /// the buffer, oldest first, once there is room), so it cannot be sent after a newer one.
    fn hold(&mut self, seq: u64, record: Record, acks: Vec<Ack>) {
        let at = self.blocked.partition_point(|(s, _, _)| *s < seq);
        self.blocked.insert(at, (seq, record, acks));
    }

    /// Give the sink a moment to confirm what is in flight, apply its reports, and buffer
    /// what it still has not confirmed.
    fn settle_in_flight(
        &mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        if !self.in_flight.is_empty() {
            let sink = &mut self.sink;
            tokio::task::block_in_place(|| sink.flush(SHUTDOWN_FLUSH));
        }
        while let Ok(d) = deliveries.try_recv() {
            self.on_delivery(d)?;
        }
        let left: Vec<u64> = self.in_flight.keys().copied().collect();
        for seq in left {
            self.spill_in_flight(seq)?;
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.blocked.is_empty() && self.buffer.is_empty()
    }

    fn healthy(&self) -> bool {
        let now = Instant::now();
        self.health.ready(now)
            && self
                .in_flight
                .values()
                .next()
                .is_none_or(|f| now.duration_since(f.sent_at) < self.spill_after)
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), BufferError> {
        self.metrics.received.inc(frame.source);
        let decoded = self.decoder.decode(&frame.input);
        self.keep_fcnts();
        let Some(record) = decoded else {
            // Nothing to keep (a frame of another network, a replay): done with it.
            self.pending_acks.push(frame.ack);
            return Ok(());
        };
        if record.rec_type == DEAD_LETTER {
            return self.keep_dead_letter(&record, frame.ack);
        }
        let seq = self.next_seq;
        match self.dedup.check(&record.id, seq) {
            Seen::New => {}
            Seen::Pending(first) => {
                self.metrics.duplicates.inc();
                match self.in_flight.get_mut(&first) {
                    // Acknowledge the copy when the first one becomes durable.
                    Some(f) if !f.in_buffer => f.acks.push(frame.ack),
                    _ => self.pending_acks.push(frame.ack),
                }
                return Ok(());
            }
            Seen::Durable => {
                self.metrics.duplicates.inc();
                self.pending_acks.push(frame.ack);
                return Ok(());
            }
        }
        self.next_seq += 1;
        if self.buffer.is_empty()
            && self.blocked.is_empty()
            && self.in_flight.len() < self.max_in_flight
            && self.healthy()
            && !self.health.is_parked(&record.rec_type, Instant::now())
        {
            match self.sink.send(seq, &record) {
                Ok(()) => {
                    self.track(seq, record, vec![frame.ack], false);
                    return Ok(());
                }
                Err(SinkError::Reject(e)) => {
                    return self.reject(seq, &record, &e, [frame.ack]);
                }
                Err(e) => self.failed(&e, &record.rec_type, Instant::now()),
            }
        }
        self.spill(seq, record, frame.ack)
    }

    /// LoRaWAN frame counters go to the buffer, durable with its next flush, so a frame
    /// captured before a restart is still a replay after it.
    fn keep_fcnts(&mut self) {
        for (dev_addr, dev_eui, fcnt) in self.decoder.take_fcnts() {
            if let Err(e) = self.buffer.save_fcnt(dev_addr.0, dev_eui, fcnt) {
                self.metrics.problem("buffer_write_error", || {
                    format!("cannot keep the frame counter of {dev_addr}: {e}")
                });
            }
        }
    }

    fn track(&mut self, seq: u64, record: Record, acks: Vec<Ack>, in_buffer: bool) {
        self.in_flight.insert(
            seq,
            InFlight {
                record,
                acks,
                in_buffer,
                sent_at: Instant::now(),
            },
        );
        self.metrics.in_flight.set(self.in_flight.len() as u64);
    }

    /// Write to the buffer; the source is acknowledged at the next commit (after the flush).
    fn spill(&mut self, seq: u64, record: Record, ack: Ack) -> Result<(), BufferError> {
        if !self.blocked.is_empty() {
            self.blocked.push_back((seq, record, vec![ack]));
            return Ok(());
        }
        // Older records still only in memory go first: acknowledging this one while one of
        // them is not durable would let a crash put that one, redelivered, behind it.
        let older: Vec<u64> = self
            .in_flight
            .range(..seq)
            .filter(|(_, f)| !f.in_buffer)
            .map(|(s, _)| *s)
            .collect();
        if !older.is_empty() {
            self.metrics
                .log_limited(log::Level::Warn, "spill_older", || {
                    format!(
                    "sink has not confirmed {} record(s) yet: buffering them ahead of newer ones",
                    older.len()
                )
                });
        }
        for s in older {
            self.spill_in_flight(s)?;
        }
        match self.buffer.push(seq, &record) {
            Ok(Pushed::Stored) => {
                self.dirty = true;
                self.dedup.durable(&record.id);
                self.pending_acks.push(ack);
            }
            Ok(Pushed::Dropped) => self.pending_acks.push(ack),
            Ok(Pushed::Full) => self.blocked.push_back((seq, record, vec![ack])),
            Err(e) => {
                // A full or failing disk behaves like a full buffer: hold, don't acknowledge.
                self.metrics.problem("buffer_write_error", || {
                    format!("cannot write to the buffer: {e}; holding records in memory")
                });
                self.blocked.push_back((seq, record, vec![ack]));
            }
        }
        Ok(())
    }

    /// Retry records held back by a full buffer, oldest first.
    fn unblock(&mut self) -> Result<(), BufferError> {
        while let Some((seq, record, _)) = self.blocked.front() {
            match self.buffer.push(*seq, record) {
                Ok(Pushed::Stored) | Ok(Pushed::Dropped) => {
                    let (_, record, acks) = self.blocked.pop_front().expect("front exists");
                    self.dedup.durable(&record.id);
                    self.dirty = true;
                    self.pending_acks.extend(acks);
                }
                Ok(Pushed::Full) | Err(_) => break,
            }
        }
        Ok(())
    }

    /// Records the sink has not confirmed within `spill_after` go to the buffer, so their
    /// sources can be acknowledged; they stay in flight and leave the buffer on delivery.
    fn spill_slow(&mut self) -> Result<(), BufferError> {
        let now = Instant::now();
        let slow: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| !f.in_buffer && now.duration_since(f.sent_at) >= self.spill_after)
            .map(|(s, _)| *s)
            .collect();
        if !slow.is_empty() {
            log::warn!(
                "sink has not confirmed {} record(s) for {:?}: buffering them",
                slow.len(),
                self.spill_after
            );
        }
        for seq in slow {
            self.spill_in_flight(seq)?;
        }
        Ok(())
    }

    fn spill_in_flight(&mut self, seq: u64) -> Result<(), BufferError> {
        let Some(f) = self.in_flight.get_mut(&seq) else {
            return Ok(());
        };
        if f.in_buffer {
            return Ok(());
        }
        match self.buffer.push(seq, &f.record) {
            Ok(Pushed::Stored) => {
                f.in_buffer = true;
                self.dirty = true;
                self.dedup.durable(&f.record.id);
                self.pending_acks.append(&mut f.acks);
            }
            Ok(Pushed::Dropped) => {
                f.in_buffer = true;
                self.pending_acks.append(&mut f.acks);
            }
            // Keep it in memory, unacknowledged, until the sink answers or room appears.
            Ok(Pushed::Full) | Err(_) => {}
        }
        Ok(())
    }

    fn on_delivery(&mut self, d: Delivery) -> Result<(), BufferError> {
        let Some(f) = self.in_flight.remove(&d.seq) else {
            return Ok(());
        };
        self.metrics.in_flight.set(self.in_flight.len() as u64);
        match d.result {
            Ok(()) => {
                self.metrics.delivered.inc(&f.record.rec_type);
                self.metrics
                    .last_delivery
                    .set(unix_seconds(SystemTime::now()));
                self.health.succeeded(&f.record.rec_type);
                if f.in_buffer {
                    self.buffer.remove(d.seq)?;
                }
                self.dedup.durable(&f.record.id);
                for ack in f.acks {
                    ack.send();
                    self.metrics.acked.inc();
                }
            }
            Err(SinkError::Reject(e)) => self.reject(d.seq, &f.record, &e, f.acks)?,
            Err(e) => {
                self.failed(&e, &f.record.rec_type, f.sent_at);
                if !f.in_buffer && !self.blocked.is_empty() {
                    // Older records wait for room: this one waits with them, in order.
                    self.hold(d.seq, f.record, f.acks);
                } else if !f.in_buffer {
                    self.in_flight.insert(d.seq, f);
                    self.spill_in_flight(d.seq)?;
                    if let Some(f) = self.in_flight.remove(&d.seq) {
                        if !f.in_buffer {
                            // No room in the buffer: keep it in memory until there is.
                            self.hold(d.seq, f.record, f.acks);
                        }
                    }
                    self.metrics.in_flight.set(self.in_flight.len() as u64);
                }
            }
        }
        Ok(())
    }

    /// A message the sources gave up on: into the dead-letter tree (up to a cap), never to the
    /// sink; its source is acknowledged once that is flushed, so it is not delivered again.
    fn keep_dead_letter(&mut self, record: &Record, ack: Ack) -> Result<(), BufferError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.buffer.dead_letter_input(seq, record)? {
            self.dirty = true;
        } else {
            self.metrics.problem("dead_letters_full", || {
                format!(
                    "{} dead letters are kept already: dead letter {} only counted",
                    crate::buffer::MAX_DEAD_LETTERS,
                    record.id
                )
            });
        }
        self.pending_acks.push(ack);
        Ok(())
    }

    /// The sink will never take this record (too large): dead-letter it; its sources are
    /// acknowledged once that is flushed.
    fn reject(
        &mut self,
        seq: u64,
        record: &Record,
        e: &str,
        acks: impl IntoIterator<Item = Ack>,
    ) -> Result<(), BufferError> {
        self.metrics.sink_errors.inc("reject");
        log::error!(
            "record {} of {} rejected by the sink: {e}",
            record.id,
            record.key
        );
        self.buffer.dead_letter(seq, record)?;
        self.dirty = true;
        self.pending_acks.extend(acks);
        Ok(())
    }

    /// A record sent at `sent` failed.
    fn failed(&mut self, e: &SinkError, rec_type: &str, sent: Instant) {
        self.metrics.sink_errors.inc(e.class());
        self.metrics.problem("sink_error", || format!("sink: {e}"));
        if let Verdict::Backoff(_) = self.health.failed(e, rec_type, sent, Instant::now()) {
            // Start again from the oldest buffered record once the sink is back.
            self.drain_cursor = None;
        }
    }

    /// Send buffered records, oldest first, while the sink keeps up.
    fn drain(&mut self) -> Result<(), BufferError> {
        if self.buffer.is_empty() || !self.healthy() || self.in_flight.len() >= self.max_in_flight {
            return Ok(());
        }
        let now = Instant::now();
        if self.health.unpark_expired(now) {
            // Records of a recType that was parked were skipped: look at them again.
            self.drain_cursor = None;
        }
        let room = self.max_in_flight - self.in_flight.len();
        let now_ms = ms_since_epoch(SystemTime::now());
        for (seq, record) in self.buffer.next(self.drain_cursor, room)? {
            self.drain_cursor = Some(seq);
            if self.in_flight.contains_key(&seq) || self.health.is_parked(&record.rec_type, now) {
                continue;
            }
            if now_ms.saturating_sub(record.created_ms) > self.max_age_ms {
                self.metrics.dropped_expired.inc();
                log::warn!(
                    "record {} of {} is older than max_age: dropped",
                    record.id,
                    record.key
                );
                self.buffer.remove(seq)?;
                continue;
            }
            match self.sink.send(seq, &record) {
                Ok(()) => self.track(seq, record, Vec::new(), true),
                Err(SinkError::Reject(e)) => self.reject(seq, &record, &e, None)?,
                Err(e) => {
                    self.failed(&e, &record.rec_type, Instant::now());
                    if !self.health.ready(Instant::now()) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Flush the buffer if it changed, then release the acknowledgements that waited on it.
    fn commit(&mut self) -> Result<(), BufferError> {
        if self.dirty {
            if let Err(e) = self.buffer.flush() {
                // A full or failing disk: nothing is acknowledged until a flush succeeds
                // (retried every tick); the sources keep their copies meanwhile.
                self.metrics.problem("buffer_write_error", || {
                    format!("cannot flush the buffer: {e}; holding acknowledgements")
                });
                return Ok(());
            }
            self.dirty = false;
        } else {
            self.buffer.sync_deletions_if_due(Instant::now());
        }
        for ack in self.pending_acks.drain(..) {
            ack.send();
            self.metrics.acked.inc();
        }
        Ok(())
    }

    /// Stop: give the sink a moment to confirm what is in flight, buffer the rest (and any
    /// frame already received), flush, acknowledge.
    fn shutdown(
        mut self,
        frames: &mut Receiver<Frame>,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        frames.close();
        while let Ok(f) = frames.try_recv() {
            self.metrics.received.inc(f.source);
            match self.decoder.decode(&f.input) {
                Some(record) if record.rec_type == DEAD_LETTER => {
                    self.keep_dead_letter(&record, f.ack)?
                }
                Some(record) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.spill(seq, record, f.ack)?;
                }
                None => self.pending_acks.push(f.ack),
            }
        }
        self.settle_in_flight(deliveries)?;
        self.unblock()?;
        self.dirty = true;
        self.commit()?;
        let lost = self.blocked.len() + self.in_flight.values().filter(|f| !f.in_buffer).count();
        if lost > 0 {
            log::error!("shutdown: {lost} record(s) could not be buffered (buffer full); their sources were not acknowledged");
        }
        log::info!(
            "stopped; {} record(s) wait in the buffer",
            self.buffer.len()
        );
        Ok(())
    }
}
