//! The forwarder: the I/O shell around the [`Ledger`]. It takes frames from the sources,
//! decodes them, hands the ledger the sink's reports (serving librdkafka's itself when told
//! that some are queued), new sinks and the time, and ends every round with the ledger's
//! commit. It runs on a thread of its own with a single-threaded
//! runtime: sled calls and the sink's flush block, and must not hold up the sources. The
//! buffer's flushes (an `fsync` may take hundreds of milliseconds on a busy SD card) run on
//! the store's thread: the forwarder goes on taking frames, reports and handing records to
//! the sink meanwhile, and is woken when one is done.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

use super::clock_steps::Boot;
use super::ledger::Ledger;
use super::FRAME_QUEUE_BYTES;
use crate::buffer::{Buffer, BufferError};
use crate::config::BufferConfig;
use crate::decode::Decoder;
use crate::ids::DevEui;
use crate::lorawan::fcnt::COPY_WINDOW;
use crate::lorawan::DevAddr;
use crate::metrics::Metrics;
use crate::notify::Heartbeat;
use crate::record::ms_since_epoch;
use crate::sink::{Delivery, Sink};
use crate::source::Frame;

/// Frames taken from the input per round: one buffer flush covers them all.
const BATCH: usize = 256;
/// Housekeeping while anything is in flight, waiting, buffered or due to be synced: slow
/// records spill, a failed producer is replaced, the buffer drains after a back-off.
const TICK: Duration = Duration::from_millis(100);
/// Housekeeping while there is nothing of that (the clock's state, a producer that failed
/// with nothing to send, the watchdog's heartbeat): an idle agent wakes once a second.
pub(super) const IDLE_TICK: Duration = Duration::from_secs(1);
/// How long shutdown waits for the sink to confirm what is in flight before spilling it
/// (less while the sink is not known to be up: [`SHUTDOWN_FLUSH_NOT_UP`]).
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// The wait instead of [`SHUTDOWN_FLUSH`] while the sink is not known to be up (failing, or
/// its connection state 0). Not none: that state reads 0 also for a while after the sink's
/// start and during a reconnect, and a single failure makes it failing, while it is up; a
/// second lets such a sink confirm most of what is in flight (fewer duplicates) without
/// holding every stop and key rotation for the whole wait when it is down.
const SHUTDOWN_FLUSH_NOT_UP: Duration = Duration::from_secs(1);
/// A buffer flush that has run this long is the problem `buffer_flush_slow` (an SD card
/// that takes seconds for an fsync is failing or far too busy).
const FLUSH_SLOW: Duration = Duration::from_secs(10);
/// While quiet, the heap's free pages go back to the kernel at most this often: soon after
/// start-up and after an outage's drain, and a negligible cost in between.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// What the forwarder listens to.
pub struct Inputs {
    /// Frames of sources that cannot wait (serial, UDP): always taken.
    pub urgent: Receiver<Frame>,
    /// Frames of sources that can wait (MQTT, replay): taken while
    /// [`Ledger::takes_patient`].
    pub patient: Receiver<Frame>,
    pub deliveries: UnboundedReceiver<Delivery>,
    /// Stop: spill what is unconfirmed, acknowledge, return.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Key rotation: a sink with new credentials.
    pub new_sinks: Receiver<NewSink>,
    /// (recType, why): its hub is missing or refuses this key (the current sink's).
    pub parks: UnboundedReceiver<Park>,
}

/// (recType, why) from the hub provisioner: park the recType.
pub type Park = (String, crate::sink::refusal::Refusal);

/// Key rotation: a sink with new credentials, and the findings of its own hub provisioner:
/// the old key's refusals and retry waits are no verdict on the new key.
pub struct NewSink {
    pub sink: Box<dyn Sink>,
    pub parks: UnboundedReceiver<Park>,
}

pub struct Forwarder {
    decoder: Decoder,
    ledger: Ledger,
    metrics: Arc<Metrics>,
    heartbeat: Heartbeat,
    /// A buffer flush that has run longer than this has hung: the heartbeat stops, so the
    /// systemd watchdog restarts hubgate (half its timeout; `None`: no watchdog).
    flush_hangs_after: Option<Duration>,
    /// The start of the last flush reported as `buffer_flush_slow` (once per flush).
    slow_flush: Option<Instant>,
    /// The clock's state as last seen, and whether the ledger trusts it (`None`: not looked
    /// at yet).
    clock: Option<(Option<bool>, bool)>,
    /// This boot's id, read once (`None`: it cannot be read).
    boot_id: Option<u128>,
    trimmer: crate::malloc::Trimmer,
}

impl Forwarder {
    pub fn new(
        cfg: &BufferConfig,
        dedup_window: usize,
        mut decoder: Decoder,
        mut buffer: Buffer,
        sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BufferError> {
        // LoRaWAN sessions go on from the frame counters kept before a restart.
        match buffer.fcnts() {
            Ok(kept) => {
                for k in kept {
                    let (dev_addr, dev_eui) = (DevAddr(k.dev_addr), DevEui(k.dev_eui));
                    decoder.resume_fcnt(dev_addr, dev_eui, k.fcnt, k.mic, k.behind, k.keys);
                }
            }
            Err(e) => log::warn!("buffer: cannot read the kept frame counters: {e}"),
        }
        let boot_id = crate::clock::boot_id();
        let now = (Instant::now(), SystemTime::now());
        let up = crate::clock::since_boot();
        resume_copies(&mut decoder, &mut buffer, boot_id, up);
        let prints = decoder.key_prints().into_iter();
        buffer.set_key_prints(prints.map(|((a, e), p)| ((a.0, e.0), p)).collect());
        buffer.set_boot_id(boot_id);
        let seed = now
            .1
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        let ledger = Ledger::new(cfg, dedup_window, buffer, sink, metrics.clone(), now, seed)?;
        if boot_id.is_none() {
            log::info!("cannot read this boot's id: a step of the clock while hubgate was not running is not measured; records from before do not count that time in their age unless the clock was known to be synchronised, and a copy of a LoRaWAN frame heard after a restart is not told from the device's own frame (docs/durability.md)");
        }
        Ok(Forwarder {
            decoder,
            ledger,
            metrics,
            heartbeat: Heartbeat::default(),
            flush_hangs_after: crate::notify::watchdog_timeout().map(|timeout| timeout / 2),
            slow_flush: None,
            clock: None,
            boot_id,
            trimmer: crate::malloc::Trimmer::new(TRIM_EVERY),
        })
    }

    /// Loads the codec directory again for the decoder (SIGHUP).
    pub fn codec_reloader(&self) -> crate::decode::Reloader {
        self.decoder.reloader()
    }

    /// Beats once per round and once per frame it decodes, for the systemd watchdog.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// Run on a thread of its own until `stop` fires, or until every source has ended and
    /// everything has been delivered; the receiver gets the outcome (dropped on a panic:
    /// join the thread for it).
    #[allow(clippy::type_complexity)]
    pub fn spawn(
        self,
        inputs: Inputs,
    ) -> std::io::Result<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Receiver<Result<(), BufferError>>,
    )> {
        let thread = std::thread::Builder::new().name("forwarder".into());
        crate::blocking::own_thread(thread, move |rt| rt.block_on(self.run(inputs)))
    }

    /// Tell the ledger whether the clock can be trusted (see [`crate::clock::trusted`]) and
    /// the time it shows; say so when that changes.
    fn check_clock(&mut self) {
        let synchronized = crate::clock::synchronized();
        let wall = SystemTime::now();
        let boot = self
            .boot_id
            .zip(crate::clock::since_boot())
            .map(|(id, up)| Boot {
                id,
                started_ms: ms_since_epoch(wall) as i64 - up.as_millis() as i64,
            });
        let trusted = crate::clock::trusted(synchronized, wall);
        self.ledger.clock_source(synchronized == Some(true), boot);
        self.ledger.clock(trusted, Instant::now(), wall);
        if self.clock == Some((synchronized, trusted)) {
            return;
        }
        match (synchronized, trusted) {
            (Some(true), _) => log::info!(
                "the system clock is synchronised: buffered records expire after max_age again"
            ),
            (Some(false), _) => log::warn!(
                "the system clock is not synchronised (no NTP sync yet?): buffered records do not expire until it is"
            ),
            (None, true) => log::warn!(
                "nothing can tell whether the system clock is synchronised (adjtimex refused, no systemd-timesyncd): record times and max_age follow it as it is"
            ),
            (None, false) => log::warn!(
                "the system clock shows {}, a time it cannot show once set: buffered records do not expire until it does",
                humantime::format_rfc3339_seconds(wall)
            ),
        }
        self.clock = Some((synchronized, trusted));
        self.metrics
            .clock_synchronized
            .set(u64::from(synchronized == Some(true)));
        self.metrics
            .clock_unknown
            .set(u64::from(synchronized.is_none()));
    }

    /// Serve until stopped, then shut down. However the run ends, a buffer error's exit too,
    /// the records in flight get no more reports from it: the drops the buffer held for them
    /// are counted then ([`Ledger::stopped`]), here, the one way out.
    async fn run(mut self, mut inp: Inputs) -> Result<(), BufferError> {
        let ended = match self.serve(&mut inp).await {
            Ok(()) => self.shutdown(inp),
            Err(e) => Err(e),
        };
        self.ledger.stopped();
        // sled syncs its log as the database closes, and panics if that fails (its file
        // system turned read-only): a stop must not become an abort. What the last flush
        // made durable stays; what came after was not acknowledged.
        if let Err(e) = crate::contain::contain(move || drop(self)) {
            log::error!(
                "closing the buffer and the sink: {e}; what the last flush made durable stays, \
                 and nothing written after it was acknowledged"
            );
        }
        ended
    }

    /// Take frames, hand records to the sink, take its reports, until the stop (or both
    /// sources closed and nothing left to do).
    async fn serve(&mut self, inp: &mut Inputs) -> Result<(), BufferError> {
        self.check_clock();
        if self.ledger.buffered() > 0 {
            log::info!(
                "buffer holds {} record(s) from before: sending them first",
                self.ledger.buffered()
            );
        }
        let idle_tick = idle_tick(crate::notify::watchdog_timeout());
        let mut ticked = tokio::time::Instant::now();
        let tick = tokio::time::sleep_until(ticked + TICK);
        tokio::pin!(tick);
        let (mut urgent_open, mut patient_open) = (true, true);
        // Set by a round of serial and UDP frames cut short (its JavaScript budget, BATCH, its
        // records' bytes): MQTT and replay frames waiting get the next round, or a slow codec
        // on serial traffic, or UDP frames that keep coming, would keep them out for good.
        let mut patient_turn = false;
        let mut queued = self.ledger.sink().queued();
        let flushed = self.ledger.flush_done();
        loop {
            self.beat(Instant::now());
            if !urgent_open && !patient_open && self.ledger.idle() {
                break;
            }
            let accepting = self.ledger.accepting();
            let patient = accepting && self.ledger.takes_patient(Instant::now());
            let urgent_turn = !(patient_turn && patient && !inp.patient.is_empty());
            let next = ticked + if self.ledger.quiet() { idle_tick } else { TICK };
            // A due tick goes first. The timer alone cannot say so: it fires only when this
            // thread's runtime waits, which rounds back to back (a codec slower than the serial
            // traffic, a stream of reports) never let it do, and spills, a failed producer's
            // replacement and the clock check would wait for them to end.
            if tokio::time::Instant::now() >= next {
                ticked = tokio::time::Instant::now();
                self.tick(&mut inp.deliveries)?;
                self.ledger.end_round(Instant::now())?;
                continue;
            }
            if tick.deadline() != next {
                tick.as_mut().reset(next);
            }
            tokio::select! {
                biased;
                _ = inp.stop.changed() => break,
                Some(new) = inp.new_sinks.recv() => {
                    self.replace_sink(new.sink, &mut inp.deliveries)?;
                    // The old key's findings still queued are dropped with their channel,
                    // unread: applied after the reset, they would park the new sink.
                    inp.parks = new.parks;
                    queued = self.ledger.sink().queued();
                }
                Some((rec_type, why)) = inp.parks.recv() => {
                    self.ledger.park(&rec_type, why, Instant::now());
                }
                () = notified(queued.as_deref()) => {
                    self.ledger.sink().serve();
                    self.take_reports(&mut inp.deliveries)?;
                }
                Some(d) = inp.deliveries.recv() => {
                    self.ledger.delivered(d, Instant::now())?;
                    self.take_reports(&mut inp.deliveries)?;
                }
                // The buffer's flush is done: the round's end releases what waited for it.
                () = flushed.notified() => {}
                f = inp.urgent.recv(), if urgent_open && accepting && urgent_turn => match f {
                    Some(f) => patient_turn = self.take_batch(f, &mut inp.urgent, |_| true),
                    None => urgent_open = false,
                },
                f = inp.patient.recv(), if patient_open && patient => match f {
                    Some(f) => {
                        self.take_batch(f, &mut inp.patient, |l| {
                            l.takes_patient(Instant::now())
                        });
                        patient_turn = false;
                    }
                    None => patient_open = false,
                },
                () = &mut tick => {
                    ticked = tokio::time::Instant::now();
                    self.tick(&mut inp.deliveries)?;
                }
            }
            self.ledger.end_round(Instant::now())?;
        }
        Ok(())
    }

    /// Every [`TICK`] while anything waits (every `idle_tick` when quiet): the sink's own
    /// housekeeping (a failed producer replaced), the clock, the ledger's timers.
    fn tick(&mut self, deliveries: &mut UnboundedReceiver<Delivery>) -> Result<(), BufferError> {
        if self.ledger.sink().tick() {
            self.sink_restarted(deliveries)?;
        }
        self.check_clock();
        let now = Instant::now();
        self.ledger.tick(now);
        if self.ledger.quiet() {
            self.trimmer.trim(now);
        }
        Ok(())
    }

    /// Take `first` and what else `frames` holds, up to [`BATCH`], while `more` allows, the
    /// round's JavaScript calls have not taken its budget and its records are within
    /// [`FRAME_QUEUE_BYTES`]. Returns whether the round was cut short by one of those bounds,
    /// frames perhaps left in the queue (not by `more`, nor an empty queue).
    fn take_batch(
        &mut self,
        first: Frame,
        frames: &mut Receiver<Frame>,
        more: impl Fn(&Ledger) -> bool,
    ) -> bool {
        // A round's JavaScript calls share one budget, so a burst of slow ones cannot hold the
        // forwarder away from the sink's reports and the ticks for long: once they took it,
        // the round ends and the frames not taken wait in their queue for the next round.
        // The bytes of its records bound what a round holds in memory while the sink is down
        // (all of them wait for its end to be written): a frame's records can be many times
        // its size (records of their own time, each repeating its metadata).
        self.decoder.start_round();
        let mut bytes = self.take(first);
        for _ in 1..BATCH {
            if self.decoder.budget_spent() || bytes > FRAME_QUEUE_BYTES {
                return true;
            }
            if !more(&self.ledger) {
                return false;
            }
            match frames.try_recv() {
                Ok(f) => bytes += self.take(f),
                Err(_) => return false,
            }
        }
        true
    }

    /// Decode `f` and hand its records to the ledger; their bytes.
    fn take(&mut self, f: Frame) -> usize {
        // Per frame, not only per round: a round of up to BATCH frames whose JavaScript
        // codecs each take their full deadline would otherwise outlast the watchdog.
        self.beat(Instant::now());
        // The source's own count first: a reader that sees the total sees it in its row.
        self.metrics.received_from.inc(f.origin);
        self.metrics.received.inc(f.source);
        let records = self.decoder.decode(&f.input);
        let bytes = records.iter().map(super::ledger::size).sum::<u64>() as usize;
        let counters = self.decoder.take_counters();
        self.ledger.take(records, counters, f.ack, Instant::now());
        bytes
    }

    /// A beat for the watchdog, unless the buffer's flush, which runs on a thread of its
    /// own, has hung (run past [`Forwarder::flush_hangs_after`]): the acknowledgements of
    /// spilled records wait for it, and the restart the watchdog then makes is what a disk
    /// that hangs got while the forwarder waited in the flush itself. A flush past
    /// [`FLUSH_SLOW`] is a problem, once.
    fn beat(&mut self, now: Instant) {
        if let Some(started) = self.ledger.flush_started() {
            let running = now.saturating_duration_since(started);
            if running >= FLUSH_SLOW && self.slow_flush != Some(started) {
                self.slow_flush = Some(started);
                self.metrics.problem("buffer_flush_slow", || {
                    format!(
                        "the buffer's flush has run for {}s: acknowledgements of spilled records wait for it",
                        running.as_secs()
                    )
                });
            }
            if self.flush_hangs_after.is_some_and(|limit| running > limit) {
                return;
            }
        }
        self.heartbeat.beat();
    }

    fn take_reports(
        &mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        while let Ok(d) = deliveries.try_recv() {
            self.ledger.delivered(d, Instant::now())?;
        }
        Ok(())
    }

    /// Key rotation: let the old sink confirm what it can, buffer what it could not (the new
    /// sink sends it from there), then carry on with the new one.
    fn replace_sink(
        &mut self,
        sink: Box<dyn Sink>,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        self.settle(deliveries, false)?;
        // Dropped first: its last reports are in before they are taken below (what it
        // still held is in the buffer since `settle`, and is sent from there).
        drop(self.ledger.replace_sink(sink));
        self.sink_restarted(deliveries)?;
        self.ledger.forget_old_sink();
        log::info!("sink replaced (new credentials); buffered records are sent with the new one");
        Ok(())
    }

    /// The sink started over (a new producer): take the old one's last reports before
    /// anything goes to the new one, and send again what got none.
    fn sink_restarted(
        &mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
    ) -> Result<(), BufferError> {
        self.take_reports(deliveries)?;
        self.ledger.resend_in_flight();
        Ok(())
    }

    /// Give the sink a moment to confirm what is in flight, apply its reports, and buffer
    /// what it still has not confirmed. The reports it has already are applied first: a
    /// confirmation among them shows it up. A sink not known to be up then gets
    /// [`SHUTDOWN_FLUSH_NOT_UP`]: waiting for confirmations that cannot come would hold
    /// every stop (and key rotation) for [`SHUTDOWN_FLUSH`]. A record it would still have
    /// confirmed is sent again from the buffer, a duplicate. At a stop (`stopping`), what waits
    /// for the buffer is tried there at once, and records it refuses go to a sink that
    /// confirms first, as in a round, as far as the
    /// window the reports left takes them: the wait covers them too.
    fn settle(
        &mut self,
        deliveries: &mut UnboundedReceiver<Delivery>,
        stopping: bool,
    ) -> Result<(), BufferError> {
        if self.ledger.has_in_flight() {
            self.ledger.sink().serve();
            self.take_reports(deliveries)?;
        }
        if stopping {
            self.ledger.send_refused(Instant::now());
        }
        if self.ledger.has_in_flight() {
            let wait = if self.ledger.sink_not_up() {
                SHUTDOWN_FLUSH_NOT_UP
            } else {
                SHUTDOWN_FLUSH
            };
            self.ledger.sink().flush(wait);
        }
        self.take_reports(deliveries)?;
        self.ledger.spill_in_flight(Instant::now());
        Ok(())
    }

    /// Stop: buffer any frame already received, give the sink a moment to confirm what is in
    /// flight, buffer the rest, flush, acknowledge.
    fn shutdown(&mut self, mut inp: Inputs) -> Result<(), BufferError> {
        // The clock once more: a clock that lost its sync since the last tick leaves the kept
        // reading no longer synchronised, so the next run does not trust the clock over the
        // records taken since (see `Ledger::clock`).
        self.check_clock();
        // One round's budget for all of them: past it, JavaScript frames go to the buffer
        // packed rather than hold the stop up.
        self.decoder.start_round();
        for frames in [&mut inp.urgent, &mut inp.patient] {
            frames.close();
            while let Ok(f) = frames.try_recv() {
                self.metrics.received_from.inc(f.origin);
                self.metrics.received.inc(f.source);
                let records = self.decoder.decode(&f.input);
                let counters = self.decoder.take_counters();
                self.ledger
                    .take_to_buffer(records, counters, f.ack, Instant::now());
            }
        }
        self.settle(&mut inp.deliveries, true)?;
        self.ledger.commit(Instant::now(), true)?;
        let lost = self.ledger.unbuffered();
        if lost > 0 {
            log::error!("shutdown: {lost} record(s) could not be buffered (buffer full or failing, or behind an unconfirmed record too large for it); their sources were not acknowledged");
        }
        log::info!(
            "stopped; {} record(s) wait in the buffer",
            self.ledger.buffered()
        );
        Ok(())
    }
}

/// LoRaWAN sessions tell a copy of the frames they accepted shortly before a restart
/// ([`crate::lorawan::fcnt::COPY_WINDOW`]): those kept in this boot (`boot_id`), their age by
/// the time since boot, `up` now ([`crate::clock::since_boot`]), and none stamped later than
/// that. Not by the wall clock: a Pi without a real-time clock whose clock NTP sets back
/// between a frame and the restart would make the frame look younger, and a restarted
/// device's same bytes hours later a copy, a reading lost. In another boot, or where the
/// boot or the time since it cannot be read, no frame is told as a copy (a copy heard then
/// makes a record again, the lesser harm).
///
/// Those no later start could tell a copy by are dropped from the buffer: kept in another
/// boot (where this boot's id can be read), or kept in this boot and every one of them
/// [`COPY_WINDOW`] old or more (where the time since boot can be read), or an entry that
/// cannot be read (damaged, or a newer release's before a downgrade). Nothing else removes
/// them: a session whose device was removed from the configuration, provisioned again (other
/// keys) or no longer restarts its counter writes none over them. Any other entry stays,
/// whether a session takes it or not: a device missing from the configuration for one start,
/// or under other keys whose session has not written its own since, has them again once
/// restored (its counter `fcnt/` kept too), so a copy heard then is still one and not a
/// counter restart taken, a duplicate record; an entry whose age cannot be told goes at a
/// later start that can tell it. A session that keeps frames writes its next ones over its
/// entry where this boot's id can be read. Those the buffer cannot drop (a disk refusing
/// writes) stay for a later start, told in one warning for all.
fn resume_copies(
    decoder: &mut Decoder,
    buffer: &mut Buffer,
    boot_id: Option<u128>,
    up: Option<Duration>,
) {
    let now_ms = up.map(|up| up.as_millis() as u64);
    let window_ms = COPY_WINDOW.as_millis() as u64;
    let (kept, unreadable) = match buffer.copies_and_unreadable() {
        Ok(read) => read,
        Err(e) => return log::warn!("buffer: cannot read the frames last accepted: {e}"),
    };
    // Those that could not go, and the first error: one line for them all.
    let (mut failed, mut first) = (0, None);
    for entry in unreadable {
        if let Err(e) = buffer.forget_unreadable_copies(entry) {
            failed += 1;
            first.get_or_insert(e);
        }
    }
    for k in kept {
        let this_boot = boot_id.map(|b| b == k.boot_id);
        let now_ms = now_ms.filter(|_| this_boot == Some(true));
        // How long ago each frame was accepted: not known in another boot or one not told,
        // nor for one stamped later than now.
        let ages: Vec<_> = (k.frames.iter())
            .map(|&(fcnt, mic, at)| (fcnt, mic, now_ms.and_then(|now| now.checked_sub(at))))
            .collect();
        let frames: Vec<_> = (ages.iter())
            .filter_map(|&(fcnt, mic, age)| Some((fcnt, mic, Duration::from_millis(age?))))
            .collect();
        let (dev_addr, dev_eui) = (DevAddr(k.dev_addr), DevEui(k.dev_eui));
        decoder.resume_copies(dev_addr, dev_eui, k.keys, &frames);
        // A later start in this boot finds them older still, one in another boot none.
        let stale = this_boot == Some(false)
            || (now_ms.is_some()
                && ages
                    .iter()
                    .all(|&(_, _, age)| age.is_some_and(|a| a >= window_ms)));
        if stale {
            if let Err(e) = buffer.forget_copies(k.dev_addr, k.dev_eui) {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first {
        log::warn!("buffer: cannot drop the frames {failed} LoRaWAN session(s) accepted last, which no start can tell a copy by any more (tried again at the next start): {e}");
    }
}

/// Until the sink has reports to serve; never for a sink whose reports come by themselves.
async fn notified(queued: Option<&tokio::sync::Notify>) {
    match queued {
        Some(q) => q.notified().await,
        None => std::future::pending().await,
    }
}

/// The idle tick, short enough that the systemd watchdog (looking at the forwarder's
/// heartbeat every quarter of its `timeout`, and pinging only when it moved) sees a beat
/// between two looks.
fn idle_tick(watchdog: Option<Duration>) -> Duration {
    watchdog.map_or(IDLE_TICK, |timeout| IDLE_TICK.min(timeout / 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Entries, MemoryStore, Store};
    use crate::logger::warnings_of;
    use crate::lorawan::Counters;
    use crate::pipeline::ledger::tests::Confirming;
    use crate::source::{Ack, Input};

    #[test]
    fn the_idle_tick_beats_between_two_watchdog_pings() {
        assert_eq!(idle_tick(None), IDLE_TICK);
        assert_eq!(idle_tick(Some(Duration::from_secs(60))), IDLE_TICK);
        assert_eq!(
            idle_tick(Some(Duration::from_millis(400))),
            Duration::from_millis(50)
        );
    }

    /// A forwarder of the config `text` over a [`Confirming`] sink and a buffer in memory.
    fn forwarder(text: &str) -> (Forwarder, Arc<Metrics>) {
        let (deliveries, _reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(deliveries);
        let store = crate::buffer::MemoryStore::default();
        forwarder_of(text, Box::new(store), Box::new(sink))
    }

    fn forwarder_of(
        text: &str,
        store: Box<dyn crate::buffer::Store>,
        sink: Box<dyn Sink>,
    ) -> (Forwarder, Arc<Metrics>) {
        let cfg = crate::config::Config::parse(text).unwrap();
        let metrics = Metrics::new();
        let buffer = Buffer::new(store, &cfg.buffer, metrics.clone());
        let decoder = Decoder::new(&cfg, metrics.clone());
        let dedup = cfg.record.dedup_window;
        let forwarder =
            Forwarder::new(&cfg.buffer, dedup, decoder, buffer, sink, metrics.clone()).unwrap();
        (forwarder, metrics)
    }

    /// [`forwarder_of`] `text` over a sled buffer in `dir` and a [`Confirming`] sink whose reports
    /// are returned too.
    fn confirming_forwarder_in(
        text: &str,
        dir: &std::path::Path,
    ) -> (Forwarder, Arc<Metrics>, UnboundedReceiver<Delivery>) {
        let (tx, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(tx);
        let store = crate::buffer::SledStore::open(dir).unwrap();
        let (fwd, metrics) = forwarder_of(text, Box::new(store), Box::new(sink));
        (fwd, metrics, deliveries)
    }

    /// A source's queue holding `inputs`.
    fn queue(inputs: Vec<Input>) -> Receiver<Frame> {
        let (tx, frames) = tokio::sync::mpsc::channel(BATCH.max(inputs.len()));
        for input in inputs {
            let frame = Frame {
                source: "test",
                origin: 0,
                input,
                ack: Ack::None,
                room: None,
            };
            tx.try_send(frame).ok().unwrap();
        }
        frames
    }

    /// Record `n` of recType `t`.
    /// Record `n`, taken now: not old enough to expire.
    fn fresh(n: u64) -> crate::record::Record {
        crate::record::Record {
            created_ms: crate::record::ms_since_epoch(SystemTime::now()),
            ..record(n)
        }
    }

    fn record(n: u64) -> crate::record::Record {
        crate::record::Record {
            id: format!("id-{n}"),
            rec_type: "t".into(),
            key: "k".into(),
            created_ms: 1,
            body: "{}".into(),
        }
    }

    /// A stopped forwarder's inputs: the sources closed and empty, no new sink nor park to
    /// come, the sink's reports from `deliveries`.
    fn inputs(deliveries: UnboundedReceiver<Delivery>) -> Inputs {
        let (_, urgent) = tokio::sync::mpsc::channel(1);
        let (_, patient) = tokio::sync::mpsc::channel(1);
        let (_, stop) = tokio::sync::watch::channel(true);
        let (_, new_sinks) = tokio::sync::mpsc::channel(1);
        let (_, parks) = tokio::sync::mpsc::unbounded_channel();
        Inputs {
            urgent,
            patient,
            deliveries,
            stop,
            new_sinks,
            parks,
        }
    }

    /// One round of the forwarder on `frames`; how many frames it took.
    fn round(forwarder: &mut Forwarder, frames: &mut Receiver<Frame>) -> usize {
        let before = frames.len();
        let first = frames.try_recv().unwrap();
        forwarder.take_batch(first, frames, |_| true);
        before - frames.len()
    }

    use std::sync::mpsc;

    /// A buffer in memory whose flushes each wait, on a thread of their own, for a permit
    /// from the test: a disk that takes its time. `entered` tells the test one is waiting.
    /// With `sync_fails`, each flush's file sync fails once it has its permit.
    struct SlowDisk {
        mem: crate::buffer::MemoryStore,
        entered: mpsc::Sender<()>,
        permits: Arc<std::sync::Mutex<mpsc::Receiver<()>>>,
        running: Option<mpsc::Receiver<Result<u64, BufferError>>>,
        sync_fails: bool,
    }

    impl SlowDisk {
        /// The disk, what tells the test a flush waits, and the permits (dropped: every
        /// flush goes through).
        fn new(sync_fails: bool) -> (SlowDisk, mpsc::Receiver<()>, mpsc::Sender<()>) {
            let (entered, entered_rx) = mpsc::channel();
            let (permit, permits) = mpsc::channel();
            let disk = SlowDisk {
                mem: crate::buffer::MemoryStore::default(),
                entered,
                permits: Arc::new(std::sync::Mutex::new(permits)),
                running: None,
                sync_fails,
            };
            (disk, entered_rx, permit)
        }

        fn outcome(sync_fails: bool) -> Result<u64, BufferError> {
            if sync_fails {
                Err(BufferError::SyncFailed("the disk lost a write".into()))
            } else {
                Ok(1)
            }
        }

        fn wait_for_permit(
            entered: &mpsc::Sender<()>,
            permits: &std::sync::Mutex<mpsc::Receiver<()>>,
        ) {
            let _ = entered.send(());
            // Once the test drops the sender, every flush goes through.
            let _ = permits.lock().unwrap().recv();
        }
    }

    impl crate::buffer::Store for SlowDisk {
        fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
            self.mem.insert(seq, value)
        }
        fn remove(&mut self, seq: u64) -> Result<u64, BufferError> {
            self.mem.remove(seq)
        }
        fn scan_within(
            &self,
            after: Option<u64>,
            limit: usize,
            bytes: u64,
        ) -> Result<Entries, BufferError> {
            self.mem.scan_within(after, limit, bytes)
        }
        fn seqs_back(&self, limit: usize) -> Result<Vec<u64>, BufferError> {
            self.mem.seqs_back(limit)
        }
        fn first_seq(&self) -> Result<Option<u64>, BufferError> {
            self.mem.first_seq()
        }
        fn state_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
            self.mem.state_set(key, value)
        }
        fn state_remove(&mut self, key: &[u8]) -> Result<(), BufferError> {
            self.mem.state_remove(key)
        }
        fn state_scan(&self, prefix: &[u8]) -> Result<Vec<crate::buffer::StateEntry>, BufferError> {
            self.mem.state_scan(prefix)
        }
        fn flush(&mut self) -> Result<u64, BufferError> {
            Self::wait_for_permit(&self.entered, &self.permits);
            Self::outcome(self.sync_fails)
        }
        fn start_flush(
            &mut self,
            done: &Arc<tokio::sync::Notify>,
        ) -> Option<Result<u64, BufferError>> {
            let (tx, rx) = mpsc::channel();
            let (entered, permits, done) =
                (self.entered.clone(), self.permits.clone(), done.clone());
            let sync_fails = self.sync_fails;
            std::thread::spawn(move || {
                Self::wait_for_permit(&entered, &permits);
                let _ = tx.send(Self::outcome(sync_fails));
                done.notify_one();
            });
            self.running = Some(rx);
            None
        }
        fn flushed(&mut self, wait: bool) -> Option<Result<u64, BufferError>> {
            let running = self.running.as_ref()?;
            let outcome = if wait {
                running.recv().ok()?
            } else {
                running.try_recv().ok()?
            };
            self.running = None;
            Some(outcome)
        }
        fn usage(&self) -> (u64, u64) {
            self.mem.usage()
        }
        fn last_seq(&self) -> Option<u64> {
            self.mem.last_seq()
        }
        fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
            self.mem.dead_letter(seq, value)
        }
        fn dead_letters(&self) -> u64 {
            self.mem.dead_letters()
        }
        fn scan_dead(&self, after: Option<u64>, limit: usize) -> Result<Entries, BufferError> {
            self.mem.scan_dead(after, limit)
        }
        fn purge(&mut self) -> Result<u64, BufferError> {
            self.mem.purge()
        }
        fn disk_free(&self) -> Option<u64> {
            None
        }
    }

    /// A producer that confirms nothing by itself: the test sends its reports, or queues
    /// them (`queued`) for it to serve into `reports`, as librdkafka's callbacks run when it
    /// is served. It tells the test the sequence number of each record it is handed
    /// (`handed`), and notes the time each of its flushes was given. Its connection state:
    /// `connected`, or none (up, as a sink without one).
    #[derive(Default)]
    struct Producer {
        handed: Option<mpsc::Sender<u64>>,
        reports: Option<tokio::sync::mpsc::UnboundedSender<Delivery>>,
        queued: Vec<Delivery>,
        flushes: Arc<std::sync::Mutex<Vec<Duration>>>,
        connected: Option<bool>,
    }

    impl Sink for Producer {
        fn send(
            &mut self,
            seq: u64,
            _rec: &crate::record::Record,
        ) -> Result<(), crate::sink::SinkError> {
            if let Some(handed) = &self.handed {
                let _ = handed.send(seq);
            }
            Ok(())
        }
        fn serve(&mut self) {
            if let Some(reports) = &self.reports {
                for report in self.queued.drain(..) {
                    let _ = reports.send(report);
                }
            }
        }
        fn flush(&mut self, timeout: Duration) {
            self.flushes.lock().unwrap().push(timeout);
            self.serve();
        }
        fn up(&self) -> bool {
            self.connected.unwrap_or(true)
        }
    }

    /// A deadline for what the forwarder's thread does, never a pause.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A forwarder on its thread over `disk` and a [`Producer`] (`handed` gets what it is
    /// handed), spilling after 100 ms; MQTT frames of one device, whose PUBACKs come with
    /// [`Running::puback`].
    struct Running {
        thread: std::thread::JoinHandle<()>,
        outcome: tokio::sync::oneshot::Receiver<Result<(), BufferError>>,
        urgent: tokio::sync::mpsc::Sender<Frame>,
        reports: tokio::sync::mpsc::UnboundedSender<Delivery>,
        stop: tokio::sync::watch::Sender<bool>,
        handed: mpsc::Receiver<u64>,
        acks: Option<tokio::sync::mpsc::UnboundedSender<crate::source::PubAck>>,
        pubacks: tokio::sync::mpsc::UnboundedReceiver<crate::source::PubAck>,
        rt: tokio::runtime::Runtime,
    }

    impl Running {
        fn start(disk: SlowDisk) -> Running {
            let (handed_tx, handed) = mpsc::channel();
            let (fwd, _metrics) = forwarder_of(
                "[buffer]\nspill_after = \"100ms\"\n[sink]\ntype = \"stdout\"\n",
                Box::new(disk),
                Box::new(Producer {
                    handed: Some(handed_tx),
                    ..Producer::default()
                }),
            );
            let (urgent_tx, urgent) = tokio::sync::mpsc::channel(8);
            let (reports, deliveries) = tokio::sync::mpsc::unbounded_channel();
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            // No patient frames, new sink nor park: those inputs are closed.
            let (thread, outcome) = fwd
                .spawn(Inputs {
                    urgent,
                    stop,
                    ..inputs(deliveries)
                })
                .unwrap();
            let (acks, pubacks) = tokio::sync::mpsc::unbounded_channel();
            Running {
                thread,
                outcome,
                urgent: urgent_tx,
                reports,
                stop: stop_tx,
                handed,
                acks: Some(acks),
                pubacks,
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap(),
            }
        }

        /// Frame `fcnt` in; its PUBACK carries `fcnt` as the packet id.
        fn frame(&self, fcnt: u16) {
            let frame = Frame {
                source: "test",
                origin: 0,
                input: Input::Uplink(crate::uplink::Uplink {
                    dev_eui: DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]),
                    dev_addr: None,
                    device_name: None,
                    fport: Some(1),
                    fcnt: Some(u32::from(fcnt)),
                    payload: vec![fcnt as u8],
                    time: SystemTime::UNIX_EPOCH,
                    radio: crate::uplink::Radio::default(),
                    ns: crate::uplink::NsDecoded::default(),
                    same_ms_index: 0,
                    session: None,
                }),
                ack: Ack::Mqtt {
                    acks: self.acks.clone().expect("running"),
                    ack: crate::source::PubAck {
                        connection: 0,
                        qos: rumqttc::QoS::AtLeastOnce,
                        pkid: fcnt,
                        retained: None,
                    },
                },
                room: None,
            };
            self.urgent.try_send(frame).ok().unwrap();
        }

        fn confirm(&self, seq: u64) {
            let report = Delivery { seq, result: Ok(1) };
            self.reports.send(report).unwrap();
        }

        /// The next PUBACK's packet id (`None` at the deadline).
        fn puback(&mut self) -> Option<u16> {
            let next = self.pubacks.recv();
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(DEADLINE, next).await });
            next.ok().flatten().map(|a| a.pkid)
        }

        /// Stop it (if it has not ended by itself) and join it: its outcome, and the
        /// PUBACKs not taken yet.
        fn end(self) -> (Result<(), BufferError>, Vec<u16>) {
            let Running {
                thread,
                outcome,
                stop,
                acks,
                mut pubacks,
                ..
            } = self;
            let _ = stop.send(true);
            thread.join().unwrap();
            drop(acks);
            let mut left = Vec::new();
            while let Ok(ack) = pubacks.try_recv() {
                left.push(ack.pkid);
            }
            (outcome.blocking_recv().unwrap(), left)
        }
    }

    /// A broker that stalls past `spill_after` gets what it has not confirmed spilled, and
    /// the spill's flush takes long (an SD card busy with other writes). Meanwhile the
    /// forwarder goes on: the broker's late confirmation acknowledges the spilled record
    /// (delivered is durable) and the next frame goes to the producer at once, all before
    /// the flush is done.
    #[test]
    fn new_records_reach_the_producer_while_a_spill_is_flushed() {
        let (disk, entered, permit) = SlowDisk::new(false);
        let mut fwd = Running::start(disk);
        fwd.frame(1);
        assert_eq!(fwd.handed.recv_timeout(DEADLINE), Ok(0));
        // Not confirmed within spill_after: spilled, and its flush waits for the disk.
        entered
            .recv_timeout(DEADLINE)
            .expect("the spill is flushed");
        fwd.confirm(0);
        assert_eq!(fwd.puback(), Some(1), "confirmed during the flush");
        fwd.frame(2);
        assert_eq!(
            fwd.handed.recv_timeout(DEADLINE),
            Ok(1),
            "handed to the producer while the flush waits for the disk"
        );
        fwd.confirm(1);
        assert_eq!(fwd.puback(), Some(2));

        // The disk catches up.
        drop(permit);
        let (outcome, left) = fwd.end();
        assert!(outcome.is_ok());
        assert_eq!(left, Vec::<u16>::new(), "each acknowledged once");
    }

    /// A record written while a flush runs is acknowledged by the next flush, not by the
    /// running one: that one may have synced the segment before the write, and a power cut
    /// would take a record already acknowledged.
    #[test]
    fn a_record_written_during_a_flush_waits_for_the_next_one() {
        let (disk, entered, permit) = SlowDisk::new(false);
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let buffer = Buffer::new(Box::new(disk), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let (mut ledger, _reports) =
            crate::pipeline::ledger::tests::confirming_ledger(&cfg, buffer, &metrics, now);
        let t0 = now.0;
        let (ack, mut pubacks) = crate::pipeline::ledger::tests::pubacks();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let flush_done = ledger.flush_done();
        let mut released = || {
            let mut pkids = Vec::new();
            while let Ok(a) = pubacks.try_recv() {
                pkids.push(a.pkid);
            }
            pkids
        };
        ledger.take_to_buffer(vec![fresh(0)], Counters::default(), ack(1), t0);
        ledger.end_round(t0).unwrap();
        entered
            .recv_timeout(DEADLINE)
            .expect("the first flush waits for the disk");
        ledger.take_to_buffer(vec![fresh(1)], Counters::default(), ack(2), t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(released(), Vec::<u16>::new());
        // The first flush is done: it covers the first record only.
        permit.send(()).unwrap();
        let done =
            rt.block_on(async { tokio::time::timeout(DEADLINE, flush_done.notified()).await });
        assert!(done.is_ok(), "the first flush is done");
        ledger.commit(t0, false).unwrap();
        assert_eq!(released(), [1]);
        entered
            .recv_timeout(DEADLINE)
            .expect("the second flush waits for the disk");
        drop(permit);
        ledger.commit(t0, true).unwrap();
        assert_eq!(released(), [2]);
    }

    /// While a flush takes long, the drain hands the sink no more records than a crash would
    /// send again within the bound: those in flight and those delivered whose deletion the
    /// running flush does not cover number at most `max_in_flight * 1.5`. Past it, deletions
    /// would pile up behind the slow disk, each one a duplicate after a crash. Once the
    /// flush is done the drain goes on.
    #[test]
    fn deletions_waiting_for_a_slow_flush_hold_the_drain_at_one_and_a_half_windows() {
        let (disk, entered, permit) = SlowDisk::new(false);
        let cfg = BufferConfig {
            max_in_flight: 4,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let mut buffer = Buffer::new(Box::new(disk), &cfg, metrics.clone());
        for seq in 0..20 {
            buffer.push(seq, &fresh(seq)).unwrap();
        }
        let now = (Instant::now(), SystemTime::now());
        let (mut ledger, mut reports) =
            crate::pipeline::ledger::tests::confirming_ledger(&cfg, buffer, &metrics, now);
        let t0 = now.0;
        let mut delivered = Vec::new();
        let mut round = |ledger: &mut Ledger, delivered: &mut Vec<u64>| {
            ledger.end_round(t0).unwrap();
            while let Ok(d) = reports.try_recv() {
                delivered.push(d.seq);
                ledger.delivered(d, t0).unwrap();
            }
        };
        // The first round's flush (of what the last run left) waits for the disk.
        for _ in 0..10 {
            round(&mut ledger, &mut delivered);
        }
        entered
            .recv_timeout(DEADLINE)
            .expect("a flush waits for the disk");
        assert!(ledger.flush_started().is_some());
        assert_eq!(delivered, (0..6).collect::<Vec<_>>());
        assert_eq!(ledger.buffered(), 14);
        // The disk catches up: the drain goes on, each flush waited for.
        drop(permit);
        for _ in 0..20 {
            ledger.commit(t0, true).unwrap();
            round(&mut ledger, &mut delivered);
        }
        assert_eq!(ledger.buffered(), 0);
        assert_eq!(delivered, (0..20).collect::<Vec<_>>());
    }

    /// A spill whose file sync fails on the flush thread ends the forwarder with the error
    /// (hubgate stops; systemd starts it again), and the spilled record is never
    /// acknowledged: the broker sends it again.
    #[test]
    fn a_sync_that_fails_on_the_flush_thread_ends_the_forwarder_unacknowledged() {
        let (disk, entered, permit) = SlowDisk::new(true);
        let fwd = Running::start(disk);
        fwd.frame(1);
        assert_eq!(fwd.handed.recv_timeout(DEADLINE), Ok(0));
        entered
            .recv_timeout(DEADLINE)
            .expect("the spill is flushed");
        drop(permit);
        let (outcome, left) = fwd.end();
        let e = outcome.unwrap_err();
        assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
        assert_eq!(left, Vec::<u16>::new(), "acknowledged");
    }

    /// A run that a failed sync ends counts, as it ends, the records the buffer evicted
    /// while the sink held them and that the sink did not confirm: no report on them comes
    /// from this run, and hubgate exits (as at a stop, where they are counted too).
    #[test]
    fn a_run_a_failed_sync_ends_counts_the_evictions_held_for_the_sink() {
        let one = crate::buffer::encode(&fresh(0)).len() as u64;
        let mut cfg = crate::config::Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
        cfg.buffer.when_full = crate::config::WhenFull::DropOldest;
        cfg.buffer.max_bytes = 2 * one;
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        let buffer = Buffer::new(Box::new(store.clone()), &cfg.buffer, metrics.clone());
        // The sink's reports are never read: what it holds stays in flight.
        let (tx, _reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(tx);
        let decoder = Decoder::new(&cfg, metrics.clone());
        let dedup = cfg.record.dedup_window;
        let mut fwd = Forwarder::new(
            &cfg.buffer,
            dedup,
            decoder,
            buffer,
            Box::new(sink),
            metrics.clone(),
        )
        .unwrap();
        let t0 = Instant::now();
        fwd.ledger.take_to_buffer(
            vec![fresh(0), fresh(1)],
            Counters::default(),
            Ack::None,
            Instant::now(),
        );
        fwd.ledger.end_round(t0).unwrap();
        fwd.ledger.end_round(t0).unwrap();
        assert_eq!(
            (fwd.ledger.buffered(), fwd.ledger.has_in_flight()),
            (2, true)
        );
        fwd.ledger.take_to_buffer(
            vec![fresh(2)],
            Counters::default(),
            Ack::None,
            Instant::now(),
        );
        store.set_sync_fails(true);
        let (_no_reports, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let (_running, stop) = tokio::sync::watch::channel(false);
        let outcome = run_until_it_ends(
            fwd,
            Inputs {
                stop,
                ..inputs(deliveries)
            },
        );
        assert!(
            matches!(outcome, Err(BufferError::SyncFailed(_))),
            "{outcome:?}"
        );
        assert_eq!(metrics.dropped_full.get(), 1);
    }

    /// A flush that runs long is the problem `buffer_flush_slow`, once, and its age is the
    /// gauge `buffer_flush_seconds`; one that has run past half the watchdog's timeout stops
    /// the heartbeat (systemd then restarts hubgate, as when the forwarder itself hung in
    /// the flush). Once it is done, the heartbeat moves again. The times are given, not slept.
    #[test]
    fn a_hung_flush_stops_the_heartbeat() {
        let (disk, entered, permit) = SlowDisk::new(false);
        let (deliveries, _reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(deliveries);
        let (mut fwd, metrics) = forwarder_of(
            "[sink]\ntype = \"stdout\"\n",
            Box::new(disk),
            Box::new(sink),
        );
        fwd.flush_hangs_after = Some(Duration::from_secs(30));
        let heartbeat = fwd.heartbeat();
        let beats = |fwd: &mut Forwarder, after: u64, at: Instant| {
            let before = heartbeat.count();
            fwd.beat(at + Duration::from_secs(after));
            heartbeat.count() - before
        };
        let t0 = Instant::now();
        fwd.ledger.take_to_buffer(
            vec![record(1)],
            Counters::default(),
            Ack::None,
            Instant::now(),
        );
        fwd.ledger.end_round(t0).unwrap();
        entered.recv_timeout(DEADLINE).expect("the flush runs");
        assert_eq!(fwd.ledger.flush_started(), Some(t0));
        assert_eq!(beats(&mut fwd, 9, t0), 1);
        assert_eq!(metrics.problems("buffer_flush_slow"), 0);
        assert_eq!(beats(&mut fwd, 10, t0), 1, "slow, not hung");
        assert_eq!(beats(&mut fwd, 30, t0), 1);
        assert_eq!(metrics.problems("buffer_flush_slow"), 1, "once a flush");
        assert_eq!(metrics.buffer_flush.age_s(t0 + Duration::from_secs(31)), 31);
        assert_eq!(beats(&mut fwd, 31, t0), 0, "hung: no beat");
        assert_eq!(beats(&mut fwd, 600, t0), 0);

        drop(permit);
        fwd.ledger.commit(t0, true).unwrap();
        assert_eq!(fwd.ledger.flush_started(), None);
        assert_eq!(metrics.buffer_flush.age_s(t0 + Duration::from_secs(31)), 0);
        assert_eq!(beats(&mut fwd, 600, t0), 1, "done: beating again");
        assert_eq!(metrics.problems("buffer_flush_slow"), 1);
    }

    /// How the sink stands when hubgate stops.
    #[derive(Debug, Clone, Copy)]
    enum AtStop {
        /// A sink without a connection state that has not failed.
        Ready,
        Connected,
        Unconnected,
        /// A record it was sent failed, and nothing got through since.
        Failing,
        /// Failing, and since then a record was confirmed: its report waits to be served.
        ConfirmedSince,
    }

    /// A stop gives a sink that is up [`SHUTDOWN_FLUSH`] to confirm what is in flight, and
    /// one not known to be up (no connection, or failing) [`SHUTDOWN_FLUSH_NOT_UP`], rather
    /// than hold the stop for confirmations that may not come. The reports the sink has
    /// already are served first: a confirmation among them shows it up. Either way every
    /// record not confirmed is in the buffer afterwards, and only then acknowledged.
    #[test]
    fn a_stop_waits_for_the_sink_less_while_it_is_not_known_to_be_up() {
        for (at_stop, wait) in [
            (AtStop::Ready, SHUTDOWN_FLUSH),
            (AtStop::Connected, SHUTDOWN_FLUSH),
            (AtStop::Unconnected, SHUTDOWN_FLUSH_NOT_UP),
            (AtStop::Failing, SHUTDOWN_FLUSH_NOT_UP),
            (AtStop::ConfirmedSince, SHUTDOWN_FLUSH),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (reports, deliveries) = tokio::sync::mpsc::unbounded_channel();
            let connected = match at_stop {
                AtStop::Connected => Some(true),
                AtStop::Unconnected => Some(false),
                _ => None,
            };
            let mut sink = Producer {
                reports: Some(reports),
                connected,
                ..Producer::default()
            };
            let flushes = Arc::clone(&sink.flushes);
            if let AtStop::ConfirmedSince = at_stop {
                sink.queued.push(Delivery {
                    seq: 1,
                    result: Ok(1),
                });
            }
            let store = crate::buffer::SledStore::open(dir.path()).unwrap();
            let (mut fwd, _) = forwarder_of(
                "[sink]\ntype = \"stdout\"\n",
                Box::new(store),
                Box::new(sink),
            );
            let (ack, mut pubacks) = super::super::ledger::tests::pubacks();
            let now = Instant::now();
            for pkid in 0..3 {
                let records = vec![record(pkid.into())];
                fwd.ledger
                    .take(records, Counters::default(), ack(pkid), now);
            }
            fwd.ledger.end_round(now).unwrap();
            if let AtStop::Failing | AtStop::ConfirmedSince = at_stop {
                let result = Err(crate::sink::SinkError::Retry("timed out".into()));
                fwd.ledger
                    .delivered(Delivery { seq: 0, result }, now)
                    .unwrap();
            }
            assert!(fwd.ledger.has_in_flight(), "{at_stop:?}");
            assert!(
                pubacks.try_recv().is_err(),
                "{at_stop:?}: acknowledged early"
            );
            fwd.shutdown(inputs(deliveries)).unwrap();
            // Its store closed, to be opened again below.
            drop(fwd);
            assert_eq!(*flushes.lock().unwrap(), [wait], "{at_stop:?}");
            drop(ack);
            let mut acked = super::super::ledger::tests::pkids(&mut pubacks);
            acked.sort_unstable();
            assert_eq!(acked, [0, 1, 2], "{at_stop:?}");
            let store = crate::buffer::SledStore::open(dir.path()).unwrap();
            let cfg = BufferConfig::default();
            let mut buffer = Buffer::new(Box::new(store), &cfg, Metrics::new());
            let buffered = buffer.next(None, 10, u64::MAX, Instant::now()).unwrap();
            let ids: Vec<_> = buffered.into_iter().map(|(_, r)| r.id).collect();
            let unconfirmed = match at_stop {
                AtStop::ConfirmedSince => vec!["id-0", "id-2"],
                _ => vec!["id-0", "id-1", "id-2"],
            };
            assert_eq!(ids, unconfirmed, "{at_stop:?}");
        }
    }

    /// A stop while the card refuses writes and the sink confirms: a record waiting behind
    /// the full window (one record here) goes to the sink from memory once the reports
    /// free it, and is acknowledged on its confirmation, not left unacknowledged (an MQTT
    /// message sent again, a serial or UDP frame lost).
    #[test]
    fn a_stop_sends_records_the_buffer_refuses_to_a_confirming_sink() {
        let dir = tempfile::tempdir().unwrap();
        let (mut fwd, metrics, deliveries) = confirming_forwarder_in(
            "[buffer]\nmax_in_flight = 1\n[sink]\ntype = \"stdout\"\n",
            dir.path(),
        );
        let _failing = crate::buffer::failing_appends_in(1..=u32::MAX);
        let (ack, mut pubacks) = super::super::ledger::tests::pubacks();
        let now = Instant::now();
        for pkid in 0..2 {
            let records = vec![fresh(pkid.into())];
            fwd.ledger
                .take(records, Counters::default(), ack(pkid), now);
        }
        fwd.ledger.end_round(now).unwrap();
        assert_eq!(metrics.problems("buffer_write_error"), 1);
        assert!(pubacks.try_recv().is_err(), "acknowledged early");
        fwd.shutdown(inputs(deliveries)).unwrap();
        drop(ack);
        assert_eq!(super::super::ledger::tests::pkids(&mut pubacks), [0, 1]);
        assert_eq!(metrics.delivered.get("t"), Some(2));
    }

    /// A card that refuses writes for the first time at a stop, the sink confirming: the
    /// records taken then (frames from the queues) are tried at the buffer before the
    /// sink's last wait, so they go to it from memory and are acknowledged on their
    /// confirmation, not left unacknowledged.
    #[test]
    fn a_card_refusing_first_at_a_stop_sends_to_a_confirming_sink() {
        let dir = tempfile::tempdir().unwrap();
        let (mut fwd, metrics, deliveries) =
            confirming_forwarder_in("[sink]\ntype = \"stdout\"\n", dir.path());
        let _failing = crate::buffer::failing_appends_in(1..=u32::MAX);
        let (ack, mut pubacks) = super::super::ledger::tests::pubacks();
        for pkid in 0..2 {
            let records = vec![fresh(pkid.into())];
            fwd.ledger
                .take_to_buffer(records, Counters::default(), ack(pkid), Instant::now());
        }
        fwd.shutdown(inputs(deliveries)).unwrap();
        drop(ack);
        assert_eq!(super::super::ledger::tests::pkids(&mut pubacks), [0, 1]);
        assert_eq!(metrics.delivered.get("t"), Some(2));
        assert_eq!(metrics.problems("buffer_write_error"), 1);
    }

    /// A round of frames whose decoding is slow keeps the watchdog fed: the heartbeat moves
    /// with every frame, not only between rounds.
    #[test]
    fn the_heartbeat_moves_with_every_frame_of_a_round() {
        let (mut forwarder, _) = forwarder("[sink]\ntype = \"stdout\"\n");
        let statuses = (0..BATCH).map(|n| Input::GatewayStatus {
            gateway_id: format!("gw{n}"),
            stat: serde_json::Map::new(),
            time: SystemTime::UNIX_EPOCH,
            same_ms_index: 0,
        });
        let heartbeat = forwarder.heartbeat();
        let before = heartbeat.count();
        let mut frames = queue(statuses.collect());
        assert_eq!(round(&mut forwarder, &mut frames), BATCH);
        assert_eq!(heartbeat.count() - before, BATCH as u64);
    }

    /// A forwarder whose devices `58a0cb00000000NN` (`devices`) use the JavaScript codec
    /// `source`, with `[codecs]` settings `codecs`; the codec directory.
    #[cfg(feature = "js")]
    fn js_forwarder(
        source: &str,
        codecs: &str,
        devices: u8,
    ) -> (Forwarder, Arc<Metrics>, tempfile::TempDir) {
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(dir.path().join("c.js"), source);
        let devices: String = (1..=devices)
            .map(|n| format!("[[device]]\ndev_eui = \"58a0cb00000000{n:02x}\"\njs_codec = \"c\"\n"))
            .collect();
        let (forwarder, m) = forwarder(&format!(
            "[codecs]\ndir = {:?}\n{codecs}[sink]\ntype = \"stdout\"\n{devices}",
            dir.path()
        ));
        (forwarder, m, dir)
    }

    /// An uplink of device `58a0cb00000000NN` (`device`) with the one byte `b`.
    #[cfg(feature = "js")]
    fn js_uplink(device: u8, b: u8) -> Input {
        Input::Uplink(crate::uplink::Uplink {
            dev_eui: DevEui([0x58, 0xa0, 0xcb, 0, 0, 0, 0, device]),
            dev_addr: None,
            device_name: None,
            fport: Some(1),
            fcnt: Some(u32::from(b)),
            payload: vec![b],
            time: SystemTime::UNIX_EPOCH,
            radio: crate::uplink::Radio::default(),
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: None,
        })
    }

    /// Every round has its own budget of JavaScript time: once a slow call took it, the round
    /// ends and the frames not taken wait in their queue; the next rounds decode them, none
    /// goes out packed for the slow one.
    #[cfg(feature = "js")]
    #[test]
    fn a_spent_budget_ends_the_round_and_the_rest_waits_for_the_next() {
        let (mut forwarder, m, _dir) = js_forwarder(
            "function decodeUplink(i) { if (i.bytes[0] === 1) { for (;;) {} } \
             return {data: {b: i.bytes[0]}}; }",
            "round_budget = \"1ms\"\n",
            1,
        );
        let mut frames = queue(vec![js_uplink(1, 1), js_uplink(1, 2), js_uplink(1, 3)]);
        // The loop ran for 100 ms of CPU time, past the budget.
        assert_eq!(round(&mut forwarder, &mut frames), 1);
        assert_eq!(m.problems("js_timeout"), 1);
        assert_eq!(frames.len(), 2);
        while !frames.is_empty() {
            round(&mut forwarder, &mut frames);
        }
        // Three records, one of them packed: the loop's.
        assert_eq!(m.decoded.get(), 3);
        assert_eq!(m.decode_errors.get("javascript"), Some(1));
        assert_eq!(m.problems("js_budget"), 0);
        assert_eq!(m.problems("js_error"), 0);
    }

    /// A poison device whose every frame hangs its codec (each call at least the 500 ms
    /// deadline, past the budget) ends every round it is called in, and holds its neighbours'
    /// frames back only until its quarantine: 3 calls. They all decode, none is packed.
    #[cfg(feature = "js")]
    #[test]
    fn a_poison_device_ends_rounds_until_it_is_quarantined() {
        let (mut forwarder, m, _dir) = js_forwarder(
            "function decodeUplink(i) { if (i.bytes[0] === 1) { \
             return {data: {r: Array.prototype.reverse.call({length: Math.pow(2, 53) - 1}).length}}; } \
             return {data: {b: i.bytes[0]}}; }",
            "round_budget = \"300ms\"\n",
            3,
        );
        let inputs =
            (0..6).flat_map(|n| [js_uplink(1, 1), js_uplink(2, n + 2), js_uplink(3, n + 2)]);
        let mut frames = queue(inputs.collect());
        let mut rounds = 0;
        while !frames.is_empty() {
            let struck = m.problems("js_timeout");
            round(&mut forwarder, &mut frames);
            rounds += 1;
            assert!(m.problems("js_timeout") - struck <= 1, "round {rounds}");
        }
        assert!(rounds >= 3, "{rounds}");
        assert_eq!(m.problems("js_timeout"), 3);
        assert_eq!(m.problems("js_quarantined"), 3);
        assert_eq!(m.problems("js_quarantine_started"), 1);
        // 18 records, the poison device's 6 packed.
        assert_eq!(m.decoded.get(), 18);
        assert_eq!(m.decode_errors.get("javascript"), Some(6));
        assert_eq!(m.problems("js_budget"), 0);
    }

    /// A sink that confirms what it was sent at its ticks (so the forwarder ticks every
    /// 100 ms while records wait), noting at each how many records it had been sent by then,
    /// and where the MQTT device's records came.
    #[cfg(feature = "js")]
    struct TickNoting {
        sent: usize,
        unconfirmed: Vec<u64>,
        ticks: Arc<std::sync::Mutex<Vec<usize>>>,
        /// Where the MQTT device's records came in the order sent (1 = first).
        mqtt_at: Arc<std::sync::Mutex<Vec<usize>>>,
        deliveries: tokio::sync::mpsc::UnboundedSender<Delivery>,
    }

    #[cfg(feature = "js")]
    impl Sink for TickNoting {
        fn send(
            &mut self,
            seq: u64,
            rec: &crate::record::Record,
        ) -> Result<(), crate::sink::SinkError> {
            self.sent += 1;
            if rec.body.contains("58-A0-CB-00-00-00-00-02") {
                self.mqtt_at.lock().unwrap().push(self.sent);
            }
            self.unconfirmed.push(seq);
            Ok(())
        }

        fn tick(&mut self) -> bool {
            self.ticks.lock().unwrap().push(self.sent);
            for seq in self.unconfirmed.drain(..) {
                let _ = self.deliveries.send(Delivery { seq, result: Ok(1) });
            }
            false
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// Serial frames whose codec is slower than they come (each call 20 ms, past a 1 ms
    /// budget: one frame a round, rounds back to back) leave the 100 ms tick its turn: it
    /// runs while frames still wait (it waited for the queue to empty before), and MQTT
    /// frames waiting get a round after each such one.
    #[cfg(feature = "js")]
    #[test]
    fn rounds_ended_by_the_budget_leave_the_tick_and_mqtt_their_turn() {
        const FRAMES: usize = 30;
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(
            dir.path().join("c.js"),
            "function decodeUplink(i) { var t = Date.now(); while (Date.now() - t < 20) {} \
             return {data: {b: i.bytes[0]}}; }",
        );
        let cfg = crate::config::Config::parse(&format!(
            "[codecs]\ndir = {:?}\nround_budget = \"1ms\"\n[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000000001\"\njs_codec = \"c\"\n",
            dir.path()
        ))
        .unwrap();
        let metrics = Metrics::new();
        let (deliveries, delivered) = tokio::sync::mpsc::unbounded_channel();
        let ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mqtt_at = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = TickNoting {
            sent: 0,
            unconfirmed: Vec::new(),
            ticks: ticks.clone(),
            mqtt_at: mqtt_at.clone(),
            deliveries,
        };
        let urgent = (1..=FRAMES as u8).map(|b| js_uplink(1, b)).collect();
        let patient = vec![js_uplink(2, 1), js_uplink(2, 2)];
        run_frames(&cfg, &metrics, Box::new(sink), delivered, urgent, patient);
        let ticks = ticks.lock().unwrap().clone();
        let sent = FRAMES + 2;
        assert!(
            ticks.iter().any(|&n| n < sent),
            "no tick before the last frame: {ticks:?}"
        );
        // Both in the round after the first serial one (the last two records before).
        assert_eq!(*mqtt_at.lock().unwrap(), [2, 3]);
        assert_eq!(metrics.decoded.get(), sent as u64);
    }

    /// Run a forwarder of `cfg` with `sink` (its reports on `delivered`) and a buffer in
    /// memory on serial or UDP frames (`urgent`) and MQTT ones (`patient`) until it is done.
    fn run_frames(
        cfg: &crate::config::Config,
        metrics: &Arc<Metrics>,
        sink: Box<dyn Sink>,
        delivered: UnboundedReceiver<Delivery>,
        urgent: Vec<Input>,
        patient: Vec<Input>,
    ) {
        let memory = Box::new(crate::buffer::MemoryStore::default());
        let buffer = Buffer::new(memory, &cfg.buffer, metrics.clone());
        let decoder = Decoder::new(cfg, metrics.clone());
        let (dedup, m) = (cfg.record.dedup_window, metrics.clone());
        let forwarder = Forwarder::new(&cfg.buffer, dedup, decoder, buffer, sink, m).unwrap();
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let (urgent, patient) = (queue(urgent), queue(patient));
        let more = Inputs {
            urgent,
            patient,
            stop,
            ..inputs(delivered)
        };
        run_to_end(forwarder, more);
    }

    /// Run `forwarder` on `inputs` on a runtime of its own until it returns.
    fn run_to_end(forwarder: Forwarder, inputs: Inputs) {
        run_until_it_ends(forwarder, inputs).unwrap();
    }

    /// [`run_to_end`], the run's outcome returned.
    fn run_until_it_ends(forwarder: Forwarder, inputs: Inputs) -> Result<(), BufferError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(forwarder.run(inputs))
    }

    /// A sink that confirms each record as it is sent, noting the devices of the records in
    /// the order sent.
    struct OrderNoting {
        devices: Arc<std::sync::Mutex<Vec<u8>>>,
        deliveries: tokio::sync::mpsc::UnboundedSender<Delivery>,
    }

    impl Sink for OrderNoting {
        fn send(
            &mut self,
            seq: u64,
            rec: &crate::record::Record,
        ) -> Result<(), crate::sink::SinkError> {
            let device = rec
                .key
                .rsplit('-')
                .next()
                .and_then(|b| u8::from_str_radix(b, 16).ok());
            self.devices.lock().unwrap().push(device.unwrap_or(0));
            let _ = self.deliveries.send(Delivery { seq, result: Ok(1) });
            Ok(())
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// An uplink of device `58a0cb00000000NN` (`device`) with frame counter `fcnt`.
    fn uplink_of(device: u8, fcnt: u32) -> Input {
        Input::Uplink(crate::uplink::Uplink {
            dev_eui: DevEui([0x58, 0xa0, 0xcb, 0, 0, 0, 0, device]),
            dev_addr: None,
            device_name: None,
            fport: Some(1),
            fcnt: Some(fcnt),
            payload: vec![1],
            time: SystemTime::UNIX_EPOCH,
            radio: crate::uplink::Radio::default(),
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: None,
        })
    }

    /// Serial and UDP frames that keep coming faster than the forwarder decodes them (a UDP
    /// sender on the LAN spoofing a listed gateway, each datagram up to 1,500 frames) must not
    /// keep an MQTT frame out for good: it gets a round after a round of them, as it does
    /// when their codec's budget ends the round. Here 4 rounds of UDP frames wait before one
    /// MQTT frame: the MQTT frame is to be sent within the first two rounds.
    #[test]
    fn an_mqtt_frame_gets_a_round_while_udp_frames_keep_coming() {
        let cfg = crate::config::Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
        let metrics = Metrics::new();
        let (deliveries, delivered) = tokio::sync::mpsc::unbounded_channel();
        let devices = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = OrderNoting {
            devices: devices.clone(),
            deliveries,
        };
        let flood = 4 * BATCH as u32;
        let urgent = (1..=flood).map(|n| uplink_of(1, n)).collect();
        let patient = vec![uplink_of(2, 1)];
        run_frames(&cfg, &metrics, Box::new(sink), delivered, urgent, patient);
        let devices = devices.lock().unwrap().clone();
        assert_eq!(devices.len(), flood as usize + 1, "every frame sent");
        let mqtt_at = devices.iter().position(|&d| d == 2).map(|i| i + 1);
        assert!(
            mqtt_at.is_some_and(|at| at <= 2 * BATCH),
            "the MQTT frame sent as record {mqtt_at:?} of {}, after every UDP frame that \
             waited before it",
            devices.len()
        );
    }

    /// A sink that is down: every send fails, to be tried again.
    struct Down;

    impl Sink for Down {
        fn send(
            &mut self,
            _seq: u64,
            _rec: &crate::record::Record,
        ) -> Result<(), crate::sink::SinkError> {
            Err(crate::sink::SinkError::Retry("down".into()))
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// While the sink is down, a round's records wait in memory for its end to write them to
    /// the buffer. The frame queue bounds what waits to be taken in bytes (8 MiB), not what
    /// the frames taken make (a The Things Stack uplink of 222 KB made 33 records of 7.3 MB:
    /// 20 of them, as many as MQTT brokers let go unacknowledged by default, were 146 MB held
    /// at once, against `MemoryMax=256M`). A round ends once its records pass the frame
    /// queue's bound: here 40 uplinks of 200 KB, each making a record of 400 KB, are taken in
    /// rounds that hold at most that and one uplink's record more, and every one is buffered.
    #[test]
    fn a_round_holds_no_more_in_memory_than_the_frame_queue_does() {
        let cfg = "[sink]\ntype = \"stdout\"\n";
        let store = crate::buffer::MemoryStore::default();
        let (mut forwarder, metrics) = forwarder_of(cfg, Box::new(store), Box::new(Down));
        let inputs = (1..=40)
            .map(|fcnt| match uplink_of(1, fcnt) {
                Input::Uplink(up) => Input::Uplink(crate::uplink::Uplink {
                    payload: vec![7; 200_000],
                    ..up
                }),
                other => other,
            })
            .collect();
        let mut frames = queue(inputs);
        let mut rounds = Vec::new();
        while let Ok(first) = frames.try_recv() {
            let before = metrics.buffer_bytes.get();
            forwarder.take_batch(first, &mut frames, |l| l.takes_patient(Instant::now()));
            assert_eq!(
                metrics.buffer_bytes.get(),
                before,
                "written before the round's end"
            );
            forwarder.ledger.end_round(Instant::now()).unwrap();
            rounds.push(metrics.buffer_bytes.get() - before);
        }
        let record = 2 * 200_000 + 2048;
        assert!(
            rounds.len() > 1
                && rounds
                    .iter()
                    .all(|&held| held <= (FRAME_QUEUE_BYTES + record) as u64),
            "rounds held {rounds:?} bytes in memory before writing them"
        );
        assert_eq!(metrics.buffer_records.get(), 40);
    }

    /// Key rotation: a park the old sink's provisioner queued before the new sink came is
    /// dropped with its channel, not applied after the reset (the select serves `new_sinks`
    /// first); the new key's own provisioner's parks are applied.
    #[test]
    fn a_park_queued_by_the_old_provisioner_does_not_land_on_the_new_sink() {
        let (forwarder, metrics) = forwarder("[sink]\ntype = \"stdout\"\n");
        let (_stop, stop) = tokio::sync::watch::channel(false);
        let (_reports, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let (old_parks, parks) = tokio::sync::mpsc::unbounded_channel();
        let refusal = |hub| crate::sink::refusal::Setup::default().missing(hub);
        old_parks.send(("t".to_string(), refusal("t"))).unwrap();
        let (sinks, new_sinks) = tokio::sync::mpsc::channel(1);
        let (reports, _) = tokio::sync::mpsc::unbounded_channel();
        let (new_found, new_parks) = tokio::sync::mpsc::unbounded_channel();
        new_found.send(("u".to_string(), refusal("u"))).unwrap();
        let sink = Box::new(Confirming(reports));
        sinks
            .try_send(NewSink {
                sink,
                parks: new_parks,
            })
            .ok()
            .unwrap();
        // Both sources are closed: it returns once it has taken what waits.
        run_to_end(
            forwarder,
            Inputs {
                stop,
                new_sinks,
                parks,
                ..inputs(deliveries)
            },
        );
        assert_eq!(metrics.parked.get("t"), None);
        assert!(metrics.park_reasons.get("t").is_none());
        assert_eq!(
            metrics.parked.get("u"),
            Some(1),
            "the new provisioner's park"
        );
    }

    /// Session keys of device 58a0cb0000101234 (DevAddr 26011BDA) in [`session_forwarder`].
    const NWK: [u8; 16] = [
        0x2B, 0x7E, 0x15, 0x16, 0x28, 0xAE, 0xD2, 0xA6, 0xAB, 0xF7, 0x15, 0x88, 0x09, 0xCF, 0x4F,
        0x3C,
    ];
    const APP: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    /// A forwarder with its metrics, and the sink's reports.
    type WithReports = ((Forwarder, Arc<Metrics>), UnboundedReceiver<Delivery>);

    /// A forwarder over a sled buffer in `dir` and a [`Confirming`] sink (with its deliveries), of
    /// device 58a0cb0000101234's session (DevAddr 26011BDA, `nwk`, [`APP`]) and the device
    /// settings `more`.
    fn session_forwarder(dir: &std::path::Path, nwk: &[u8; 16], more: &str) -> WithReports {
        let store = crate::buffer::SledStore::open(dir).unwrap();
        session_forwarder_on(Box::new(store), nwk, more)
    }

    /// [`session_forwarder`] on a start without sled: the buffer in `dir` on a card that
    /// failed.
    fn without_sled(dir: &std::path::Path, nwk: &[u8; 16]) -> WithReports {
        let store = crate::buffer::ReadOnlyStore::new(dir, None);
        session_forwarder_on(Box::new(store), nwk, "")
    }

    fn session_forwarder_on(
        store: Box<dyn crate::buffer::Store>,
        nwk: &[u8; 16],
        more: &str,
    ) -> WithReports {
        let text = session_config(nwk, more);
        let (deliveries, reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(deliveries);
        (forwarder_of(&text, store, Box::new(sink)), reports)
    }

    /// The configuration of one device with a session under `nwk`, `more` added to it.
    fn session_config(nwk: &[u8; 16], more: &str) -> String {
        format!(
            "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"58a0cb0000101234\"\n\
             dev_addr = \"26011BDA\"\nnwk_s_key = \"{}\"\napp_s_key = \"{}\"\n{more}",
            hex::encode(nwk),
            hex::encode(APP)
        )
    }

    /// That device's uplink FCnt `fcnt` under `nwk`, as a gateway heard it.
    fn session_frame(fcnt: u32, nwk: &[u8; 16]) -> Input {
        let phy = crate::lorawan::tests::reference_frame(
            0x40,
            0x2601_1BDA,
            0,
            fcnt,
            &[],
            Some(2),
            &[0x03, 0x67, 0x01, 0x10],
            nwk,
            &APP,
        );
        Input::Radio(crate::uplink::RadioFrame {
            phy,
            time: SystemTime::UNIX_EPOCH.into(),
            radio: crate::uplink::Radio::default(),
            copies: 0,
        })
    }

    /// `input` decoded and taken by `fwd`'s ledger, what the sink got confirmed, and the
    /// round ended: how many records it made and the sink got.
    fn deliver(
        fwd: &mut Forwarder,
        reports: &mut UnboundedReceiver<Delivery>,
        input: &Input,
        now: Instant,
    ) -> (usize, usize) {
        let records = fwd.decoder.decode(input);
        let made = records.len();
        let counters = fwd.decoder.take_counters();
        fwd.ledger.take(records, counters, Ack::None, now);
        fwd.ledger.end_round(now).unwrap();
        let mut sent = 0;
        while let Ok(d) = reports.try_recv() {
            sent += 1;
            fwd.ledger.delivered(d, now).unwrap();
        }
        fwd.ledger.commit(now, true).unwrap();
        (made, sent)
    }

    /// The frames the buffer in `dir` keeps to tell a copy after a restart, as (keys' print,
    /// FCnts).
    fn kept_copies(dir: &std::path::Path) -> Vec<([u8; 4], Vec<u32>)> {
        let store = crate::buffer::SledStore::open(dir).unwrap();
        let cfg = BufferConfig::default();
        let buffer = Buffer::new(Box::new(store), &cfg, Metrics::new());
        let copies = buffer.copies().unwrap().into_iter();
        copies
            .map(|k| (k.keys, k.frames.iter().map(|f| f.0).collect()))
            .collect()
    }

    /// A frame counter is kept with its session keys' print: the same keys go on from it
    /// after a restart (an old frame is refused), new keys under the same DevAddr (a device
    /// provisioned again) start afresh (their FCnt 0 is a reading, not a restart to refuse).
    /// A session that does not restart its counter keeps no frames beside it: its counter
    /// refuses a copy by itself.
    #[test]
    fn a_kept_counter_holds_for_its_session_keys_only() {
        const NEW: [u8; 16] = [0x11; 16];
        let dir = tempfile::tempdir().unwrap();
        let start = |nwk| session_forwarder(dir.path(), nwk, "");
        let frame = session_frame;
        let t0 = Instant::now();
        let ((mut fwd, _), mut reports) = start(&NWK);
        let sent = deliver(&mut fwd, &mut reports, &frame(5000, &NWK), t0);
        assert_eq!(sent, (1, 1));
        drop(fwd);
        let ((mut again, _), _) = start(&NWK);
        let old = 5000 - crate::lorawan::fcnt::LATE_WINDOW - 1;
        assert!(again.decoder.decode(&frame(old, &NWK)).is_empty(), "old");
        drop(again);
        let ((mut provisioned, _), mut reports) = start(&NEW);
        let sent = deliver(&mut provisioned, &mut reports, &frame(0, &NEW), t0);
        assert_eq!(sent, (1, 1));
        drop(provisioned);
        assert_eq!(kept_copies(dir.path()), []);
    }

    /// A device past 2^20 frames given new keys that keeps its counter is found again with
    /// `fcnt_from` and followed under the new keys in the same upper half: sled keeps its
    /// counter with the new keys' print. A start without sled (its card turned read-only)
    /// follows it from the counter kept beside sled as a start with sled does, `fcnt_from`
    /// taken out since: the file must not still hold the old keys' counter, which that start
    /// drops as another session's, every frame then failing the MIC check.
    #[test]
    fn a_start_without_sled_follows_a_far_device_under_its_new_keys() {
        const NEW: [u8; 16] = [0x11; 16];
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let ((mut fwd, _), mut reports) = session_forwarder(dir.path(), &NWK, "");
        for fcnt in [0x000F_FFFE, 0x0013_0001] {
            let sent = deliver(&mut fwd, &mut reports, &session_frame(fcnt, &NWK), t0);
            assert_eq!(sent, (1, 1), "{fcnt:#x}");
        }
        drop(fwd);
        let from = format!("fcnt_from = {}\n", 0x0013_0000);
        let ((mut fwd, _), mut reports) = session_forwarder(dir.path(), &NEW, &from);
        let sent = deliver(
            &mut fwd,
            &mut reports,
            &session_frame(0x0013_0005, &NEW),
            t0,
        );
        assert_eq!(sent, (1, 1), "found again with fcnt_from");
        drop(fwd);
        let ((mut fwd, _), mut reports) = session_forwarder(dir.path(), &NEW, "");
        let sent = deliver(
            &mut fwd,
            &mut reports,
            &session_frame(0x0013_0006, &NEW),
            t0,
        );
        assert_eq!(sent, (1, 1), "with sled: followed from its counter");
        drop(fwd);

        let ((mut fwd, metrics), mut reports) = without_sled(dir.path(), &NEW);
        let sent = deliver(
            &mut fwd,
            &mut reports,
            &session_frame(0x0013_0007, &NEW),
            t0,
        );
        assert_eq!(
            (sent, metrics.problems("lorawan_error")),
            ((1, 1), 0),
            "without sled: followed from the counter kept beside it"
        );
    }

    /// A device just below 2^20 frames when the buffer's card turned read-only is not in
    /// the file beside sled, and the run without sled follows it past 2^20 in memory. A
    /// restart within that run (the card takes no write until the boot that checks it: days
    /// on an unattended gateway) starts again from the file: the device must still be found,
    /// where the first search (upper halves 0-15) no longer does and every frame would fail
    /// the MIC check until that boot.
    #[test]
    fn a_device_that_passed_two_to_the_twenty_without_sled_is_found_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let ((mut fwd, _), mut reports) = session_forwarder(dir.path(), &NWK, "");
        let sent = deliver(
            &mut fwd,
            &mut reports,
            &session_frame(0x000F_F000, &NWK),
            t0,
        );
        assert_eq!(sent, (1, 1));
        drop(fwd);
        let ((mut fwd, _), mut reports) = without_sled(dir.path(), &NWK);
        for fcnt in [0x000F_F001, 0x0010_0001] {
            let sent = deliver(&mut fwd, &mut reports, &session_frame(fcnt, &NWK), t0);
            assert_eq!(sent, (1, 1), "{fcnt:#x}, in the run without sled");
        }
        drop(fwd);
        let ((mut fwd, metrics), mut reports) = without_sled(dir.path(), &NWK);
        let sent = deliver(
            &mut fwd,
            &mut reports,
            &session_frame(0x0010_0002, &NWK),
            t0,
        );
        assert_eq!(
            (sent, metrics.problems("lorawan_error")),
            ((1, 1), 0),
            "after a restart without sled"
        );
    }

    /// A device provisioned again (new session keys under the same DevAddr) counts from 0
    /// again, and its frames are readings (see above). One with the FCnt and payload of a
    /// frame of the old session whose record is still buffered (the sink was down) is a
    /// reading of its own, not a copy of that record.
    #[test]
    fn a_new_sessions_reading_is_not_a_copy_of_the_old_sessions_buffered_record() {
        const NEW: [u8; 16] = [0x11; 16];
        let dir = tempfile::tempdir().unwrap();
        let ((mut old, _), _) = session_forwarder(dir.path(), &NWK, "");
        let records = old.decoder.decode(&session_frame(0, &NWK));
        let counters = old.decoder.take_counters();
        old.ledger
            .take_to_buffer(records, counters, Ack::None, Instant::now());
        old.ledger.end_round(Instant::now()).unwrap();
        old.ledger.commit(Instant::now(), true).unwrap();
        drop(old);
        let ((mut fwd, metrics), mut reports) = session_forwarder(dir.path(), &NEW, "");
        assert_eq!(
            fwd.ledger.buffered(),
            1,
            "the old session's record is buffered"
        );
        let frame = session_frame(0, &NEW);
        let (made, _) = deliver(&mut fwd, &mut reports, &frame, Instant::now());
        assert_eq!(
            (made, metrics.duplicates.get()),
            (1, 0),
            "the new session's FCnt 0 made a record, not dropped as a duplicate"
        );
    }

    /// A frame late (FCnt 7 after 8: another gateway's backhaul queued it) is a reading. Its
    /// record with the sink unconfirmed when hubgate stops (a crash), 7's redelivery after the
    /// restart makes its record again, not refused as a replay and lost: the counter kept
    /// says 7 was not taken, whether 8 was kept in the round that took 7 or before 7 came (9
    /// after 10). Once a late frame is confirmed too (11 after 12), the newer is kept (not set
    /// back to the late one) with the late one taken, and after a restart both are old.
    #[test]
    fn a_frame_late_is_taken_again_after_a_crash_until_its_record_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let frame = |fcnt| session_frame(fcnt, &NWK);
        let t0 = Instant::now();
        let start = || session_forwarder(dir.path(), &NWK, "");
        // Takes `frames` in one round, the sink confirms the first `confirmed`, and it stops.
        let take_then_stop = |frames: &[u32], confirmed: usize| {
            let ((mut fwd, _), mut reports) = start();
            for &fcnt in frames {
                let records = fwd.decoder.decode(&frame(fcnt));
                let counters = fwd.decoder.take_counters();
                fwd.ledger.take(records, counters, Ack::None, t0);
            }
            fwd.ledger.end_round(t0).unwrap();
            for _ in 0..confirmed {
                let d = reports.try_recv().unwrap();
                fwd.ledger.delivered(d, t0).unwrap();
            }
            fwd.ledger.commit(t0, true).unwrap();
        };
        take_then_stop(&[6], 1);
        take_then_stop(&[8, 7], 1);
        let ((mut again, metrics), mut reports) = start();
        let late = deliver(&mut again, &mut reports, &frame(7), t0);
        assert_eq!((late, metrics.duplicates.get()), ((1, 1), 0), "7 again");
        drop(again);
        take_then_stop(&[10], 1);
        take_then_stop(&[9], 0);
        let ((mut again, metrics), mut reports) = start();
        let late = deliver(&mut again, &mut reports, &frame(9), t0);
        assert_eq!((late, metrics.duplicates.get()), ((1, 1), 0), "9 again");
        drop(again);
        take_then_stop(&[12, 11], 2);
        let ((mut after, metrics), mut reports) = start();
        for fcnt in [11, 12] {
            assert_eq!(deliver(&mut after, &mut reports, &frame(fcnt), t0), (0, 0));
        }
        assert_eq!(metrics.duplicates.get(), 2);
    }

    /// A forwarder of the session's device (`device`: more lines of its entry) on the buffer
    /// in `dir` takes FCnt 100 and 101, each delivered, and stops; when it took them.
    fn delivered_100_and_101(dir: &std::path::Path, device: &str) -> Instant {
        delivering(dir, device, &[100, 101]).1
    }

    /// A forwarder of the session's device (`device`: more lines of its entry) on the buffer
    /// in `dir`, and its reports, once it took each of `fcnts`, each delivered; when.
    fn delivering(dir: &std::path::Path, device: &str, fcnts: &[u32]) -> (WithReports, Instant) {
        let ((mut fwd, metrics), mut reports) = session_forwarder(dir, &NWK, device);
        let t0 = Instant::now();
        for &fcnt in fcnts {
            let frame = session_frame(fcnt, &NWK);
            assert_eq!(deliver(&mut fwd, &mut reports, &frame, t0), (1, 1));
        }
        (((fwd, metrics), reports), t0)
    }

    /// A device that does not restart its counter: its frames are not kept beside the
    /// counter (no write of them, see `state_written_per_uplink`), and a late copy of one
    /// after hubgate restarts is refused all the same, within the copy window or past it, by
    /// the counter kept, at or below which every frame is old: a duplicate, no record made
    /// again.
    #[test]
    fn a_late_copy_after_a_restart_is_refused_by_the_kept_counter() {
        let dir = tempfile::tempdir().unwrap();
        let start = || session_forwarder(dir.path(), &NWK, "");
        let frame = |fcnt| session_frame(fcnt, &NWK);
        let t0 = delivered_100_and_101(dir.path(), "");
        assert_eq!(kept_copies(dir.path()), [], "frames kept");
        let ((mut again, metrics), mut reports) = start();
        for fcnt in [100, 101] {
            let copy = deliver(&mut again, &mut reports, &frame(fcnt), t0);
            assert_eq!(
                copy,
                (0, 0),
                "(records made, sent again) of a copy of {fcnt}"
            );
        }
        again.decoder.pass(crate::lorawan::fcnt::COPY_WINDOW);
        let late = deliver(&mut again, &mut reports, &frame(100), t0);
        assert_eq!(late, (0, 0), "past the window");
        assert_eq!(
            (metrics.duplicates.get(), metrics.problems("fcnt_reset")),
            (3, 0)
        );
    }

    /// What an uplink reads from and writes to the buffer's state when its record goes
    /// straight to the sink (state scans, bytes of keys and values read, bytes written): the
    /// counter of a device that does not restart its counter (17 + 12), written only, and 8
    /// bytes more while one of the 64 counters below it was not taken (FCnt 1 lost, or 0 to 4
    /// never heard before a first frame at 5); for
    /// one that does, its frames of the copy window too (24 + 20 + 16 a frame), read first
    /// (none kept before its first uplink) and merged: one, of a device sending every 10
    /// minutes; as many as came in the last 3 minutes, of one sending every 40 seconds.
    #[test]
    fn state_written_per_uplink() {
        let written_of = |more: &str, every: u64, fcnts: &[u32]| {
            let text = format!(
                "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"58a0cb0000101234\"\n\
                 dev_addr = \"26011BDA\"\nnwk_s_key = \"{}\"\napp_s_key = \"{}\"\n{more}",
                hex::encode(NWK),
                hex::encode(APP)
            );
            let (deliveries, mut reports) = tokio::sync::mpsc::unbounded_channel();
            let sink = Confirming(deliveries);
            let store = crate::buffer::MemoryStore::default();
            let (mut fwd, _) = forwarder_of(&text, Box::new(store.clone()), Box::new(sink));
            let t0 = Instant::now();
            let mut each = Vec::new();
            for &fcnt in fcnts {
                let before = (store.state_read(), store.state_written());
                let frame = session_frame(fcnt, &NWK);
                assert_eq!(deliver(&mut fwd, &mut reports, &frame, t0), (1, 1));
                let ((scans, read), written) = (store.state_read(), store.state_written());
                each.push((scans - before.0 .0, read - before.0 .1, written - before.1));
                fwd.decoder.pass(Duration::from_secs(every));
            }
            each
        };
        let written = |more: &str, every: u64| written_of(more, every, &[0, 1, 2, 3, 4, 5, 6, 7]);
        let resets = "resets_fcnt = true\n";
        assert_eq!(written("", 600), [(0, 0, 29); 8]);
        assert_eq!(
            written_of("", 600, &[0, 2, 3]),
            [(0, 0, 29), (0, 0, 37), (0, 0, 37)]
        );
        assert_eq!(
            written_of("", 600, &[5, 6]),
            [(0, 0, 37); 2],
            "0 to 4 not taken"
        );
        assert_eq!(written("", 40), [(0, 0, 29); 8]);
        let mut first = vec![(1, 0, 89)];
        assert_eq!(
            written(resets, 600),
            [first.clone(), vec![(1, 60, 89); 7]].concat()
        );
        first.extend([(1, 60, 105), (1, 76, 121), (1, 92, 137), (1, 108, 153)]);
        assert_eq!(
            written(resets, 40),
            [first, vec![(1, 124, 153); 3]].concat()
        );
    }

    /// A device that restarts its counter (`resets_fcnt`): FCnt 100 and 101 delivered, then
    /// hubgate restarts, then a second gateway's late copy of FCnt 100 (its backhaul queued
    /// it) arrives. The copy is the same frame, MIC included: it makes no second record,
    /// though the dedup window, seeded from the buffer only, does not know the delivered
    /// record: the frames accepted are kept with the counter, and the copy is a replay, not a
    /// counter restart. Once the copy window has passed, the same bytes are the device's,
    /// restarted: taken.
    #[test]
    fn a_late_copy_after_a_restart_is_not_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let start = || session_forwarder(dir.path(), &NWK, "resets_fcnt = true\n");
        let frame = |fcnt| session_frame(fcnt, &NWK);
        let t0 = delivered_100_and_101(dir.path(), "resets_fcnt = true\n");
        let ((mut again, metrics), mut reports) = start();
        assert_eq!(
            (
                deliver(&mut again, &mut reports, &frame(100), t0),
                metrics.duplicates.get()
            ),
            ((0, 0), 1),
            "((records made, sent again), duplicates) of the late copy of FCnt 100"
        );
        again.decoder.pass(crate::lorawan::fcnt::COPY_WINDOW);
        assert_eq!(
            deliver(&mut again, &mut reports, &frame(100), t0),
            (1, 1),
            "the same bytes once the window passed"
        );
    }

    /// A device that restarts its counter (`resets_fcnt`) sends FCnt 5 and 6, restarts
    /// after the copy window, and sends FCnt 5 again with the same reading (the payload of a
    /// door state, a button code, a boot message): the decoder takes it as the device's new
    /// frame, and its record, received at another time, is a reading of its own, not dropped
    /// as a duplicate of the first one's. A copy of FCnt 6 heard after it (a source's
    /// redelivery, with the time it was received at) is dropped as the first one's copy.
    #[test]
    fn a_restarted_devices_equal_reading_is_not_dropped_as_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let resets = "resets_fcnt = true\n";
        let (((mut fwd, metrics), mut reports), t0) = delivering(dir.path(), resets, &[5, 6]);
        fwd.decoder.pass(crate::lorawan::fcnt::COPY_WINDOW);
        let Input::Radio(mut restarted) = session_frame(5, &NWK) else {
            unreachable!("a radio frame")
        };
        restarted.time.time += crate::lorawan::fcnt::COPY_WINDOW;
        let again = deliver(&mut fwd, &mut reports, &Input::Radio(restarted), t0);
        assert_eq!(
            (again, metrics.duplicates.get()),
            ((1, 1), 0),
            "((records made, sent), duplicates) of the restarted device's FCnt 5"
        );
        let copy = deliver(&mut fwd, &mut reports, &session_frame(6, &NWK), t0);
        assert_eq!((copy, metrics.duplicates.get()), ((1, 0), 1), "a copy of 6");
    }

    /// The device of `session_config(&NWK, ..)`: (DevAddr, DevEUI).
    const SESSION: (u32, [u8; 8]) = (0x2601_1bda, [0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]);

    /// A buffer in memory holding what a run in boot 7 kept for the device of
    /// `session_config(&NWK, "resets_fcnt = true\n")`: its counter at FCnt 100, with MIC
    /// `mic`, and its last frames, up to FCnt 100, accepted `kept_at` after boot (oldest
    /// first), on `store`.
    fn kept_in_boot_7(store: MemoryStore, mic: [u8; 4], kept_at: &[Duration]) -> Buffer {
        let cfg = crate::config::Config::parse(&session_config(&NWK, "resets_fcnt = true\n"));
        let cfg = cfg.unwrap();
        let prints = Decoder::new(&cfg, Metrics::new()).key_prints().into_iter();
        let mut buffer = Buffer::new(Box::new(store), &cfg.buffer, Metrics::new());
        buffer.set_key_prints(prints.map(|((a, e), p)| ((a.0, e.0), p)).collect());
        buffer.set_boot_id(Some(7));
        let first = 101 - kept_at.len() as u32;
        let frames: Vec<_> = (kept_at.iter().zip(first..))
            .map(|(at, fcnt)| (fcnt, mic, at.as_millis() as u64))
            .collect();
        let (dev_addr, dev_eui) = SESSION;
        let newest = frames.last().unwrap().2;
        buffer
            .save_copies(dev_addr, dev_eui, &frames, newest)
            .unwrap();
        let kept = buffer.copies().unwrap();
        assert_eq!(kept[0].frames, frames, "every one kept");
        buffer
            .save_fcnt(dev_addr, dev_eui, 100, mic, u64::MAX)
            .unwrap();
        buffer
    }

    /// The frames a session kept are dropped at start once no later start could tell a copy
    /// by them: kept in another boot, or all of them past the copy window (one past it beside
    /// one seconds old keeps the entry: a copy of the newer can still come). Until then they
    /// stay, whether a session takes them or not: its device removed from the configuration
    /// or provisioned again (other keys) may be restored at the next start, and a copy heard
    /// then is still one; one no longer `resets_fcnt` takes them but writes none over them.
    /// So do they where this boot, or the time since it, cannot be read, or a frame is
    /// stamped later than now: a later start tells. The counter always stays: a device added
    /// back goes on from it.
    #[test]
    fn kept_frames_are_dropped_at_start_once_no_start_can_take_them() {
        let resets = "resets_fcnt = true\n";
        let up = Duration::from_secs(3600);
        let seconds = Duration::from_secs(10);
        let configs = [
            (session_config(&NWK, resets), "the same"),
            ("[sink]\ntype = \"stdout\"\n".to_string(), "device removed"),
            (session_config(&[0x11; 16], resets), "provisioned again"),
            (session_config(&NWK, ""), "no longer resets_fcnt"),
        ];
        let starts = [
            (Some(7), vec![up - seconds], Some(up), 1, "seconds ago"),
            (
                Some(7),
                vec![up - COPY_WINDOW],
                Some(up),
                0,
                "the window passed",
            ),
            (
                Some(7),
                vec![up - COPY_WINDOW, up - seconds],
                Some(up),
                1,
                "the window passed for one of two",
            ),
            (Some(8), vec![up - seconds], Some(up), 0, "another boot"),
            (None, vec![up - seconds], Some(up), 1, "boot not known"),
            (
                Some(7),
                vec![up - seconds],
                None,
                1,
                "nor the time since it",
            ),
            (Some(7), vec![up + seconds], Some(up), 1, "in the future"),
        ];
        for (text, config) in &configs {
            for (boot_id, kept_at, now, copies, start) in &starts {
                let (boot_id, now, copies) = (*boot_id, *now, *copies);
                let mut buffer = kept_in_boot_7(MemoryStore::default(), [1, 2, 3, 4], kept_at);
                let cfg = crate::config::Config::parse(text).unwrap();
                let mut decoder = Decoder::new(&cfg, Metrics::new());
                resume_copies(&mut decoder, &mut buffer, boot_id, now);
                let kept = (
                    buffer.copies().unwrap().len(),
                    buffer.fcnts().unwrap().len(),
                );
                assert_eq!(kept, (copies, 1), "{config}, {start}");
            }
        }
    }

    /// An entry of frames kept that cannot be read (a damaged value, a newer release's layout
    /// before a downgrade, a key of no session) can never tell a copy: dropped at start, as a
    /// stale one is. The session's readable entry beside them and its counter stay. A disk
    /// refusing to drop them keeps them for a later start, told in the one warning.
    #[test]
    fn kept_frames_that_cannot_be_read_are_dropped_at_start() {
        let prefix = b"fcnt-copies/".as_slice();
        let unreadable = [
            ([prefix, &[0, 0, 0, 1], &[1; 8]].concat(), vec![7; 15]),
            (
                [prefix, &[0, 0, 0, 2], &[2; 8]].concat(),
                vec![7; 20 + 16 + 1],
            ),
            ([prefix, &[3; 3]].concat(), vec![7; 20 + 16]),
        ];
        let up = Duration::from_secs(3600);
        let cfg = crate::config::Config::parse(&session_config(&NWK, "resets_fcnt = true\n"));
        let cfg = cfg.unwrap();
        for refused in [false, true] {
            let mut store = MemoryStore::default();
            for (key, value) in &unreadable {
                store.state_set(key, value).unwrap();
            }
            let kept_at = [up - Duration::from_secs(10)];
            let mut buffer = kept_in_boot_7(store.clone(), [1, 2, 3, 4], &kept_at);
            assert_eq!(buffer.copies_and_unreadable().unwrap().1.len(), 3);
            store.set_state_fails(refused.then_some(b"fcnt-copies/"));
            let mut decoder = Decoder::new(&cfg, Metrics::new());
            let lines = warnings_of(|| resume_copies(&mut decoder, &mut buffer, Some(7), Some(up)));
            let (kept, left) = buffer.copies_and_unreadable().unwrap();
            let kept: Vec<_> = kept.into_iter().map(|k| (k.dev_addr, k.dev_eui)).collect();
            assert_eq!(kept, [SESSION], "refused {refused}");
            assert_eq!(buffer.fcnts().unwrap().len(), 1, "refused {refused}");
            let (left, told) = (
                left.len(),
                lines.iter().filter(|l| l.contains("cannot drop")),
            );
            match refused {
                false => assert_eq!((left, told.count()), (0, 0), "{lines:?}"),
                true => {
                    let told: Vec<_> = told.collect();
                    assert_eq!((left, told.len()), (3, 1), "{lines:?}");
                    assert!(
                        told[0].contains("the frames 3 LoRaWAN session(s)"),
                        "{lines:?}"
                    );
                }
            }
        }
    }

    /// A disk that refuses to drop the frames kept that no start can tell a copy by any more
    /// does not stop the start, nor does it log a line per session (thousands after a reboot
    /// on a large site): one warning says how many, and the frames stay for a later start.
    #[test]
    fn frames_that_cannot_be_dropped_stay_told_in_one_warning() {
        let cfg = crate::config::Config::parse(&session_config(&NWK, "")).unwrap();
        // Three sessions' frames kept in boot 7, on a disk that then refuses to drop them.
        let kept = || {
            let store = crate::buffer::MemoryStore::default();
            let mut buffer = Buffer::new(Box::new(store.clone()), &cfg.buffer, Metrics::new());
            let sessions: Vec<_> = (1..=3u32).map(|n| (n, [n as u8; 8])).collect();
            buffer.set_key_prints(sessions.iter().map(|&s| (s, [9; 4])).collect());
            buffer.set_boot_id(Some(7));
            for &(dev_addr, dev_eui) in &sessions {
                let frame = (100, [1, 2, 3, 4], 1000);
                buffer
                    .save_copies(dev_addr, dev_eui, &[frame], 1000)
                    .unwrap();
            }
            store.set_state_fails(Some(b"fcnt-copies/"));
            buffer
        };
        let dropping = |lines: Vec<String>| -> Vec<String> {
            let dropping = lines.into_iter().filter(|l| l.contains("cannot drop"));
            dropping.collect()
        };
        let (mut buffer, up) = (kept(), Some(Duration::from_secs(3600)));
        let mut decoder = Decoder::new(&cfg, Metrics::new());
        let lines = warnings_of(|| resume_copies(&mut decoder, &mut buffer, Some(8), up));
        assert_eq!(buffer.copies().unwrap().len(), 3, "kept");
        let lines = dropping(lines);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("the frames 3 LoRaWAN session(s)"),
            "{}",
            lines[0]
        );

        // `Forwarder::new` reads this boot's id, another than 7 (docs/testing.md: the tests
        // that need it fail, not skip, where it cannot be read).
        let boot_id = crate::clock::boot_id().expect("this boot's id is read");
        assert_ne!(boot_id, 7);
        let (deliveries, _reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Box::new(Confirming(deliveries));
        let (decoder, metrics) = (Decoder::new(&cfg, Metrics::new()), Metrics::new());
        let lines = warnings_of(|| {
            let started = Forwarder::new(&cfg.buffer, 0, decoder, kept(), sink, metrics);
            assert!(started.is_ok());
        });
        assert_eq!(dropping(lines).len(), 1, "started, told once");
    }

    /// A device missing from the configuration for one start (commented out, or hubgate
    /// started with another configuration over the same buffer) and restored at the next,
    /// within the copy window: a second gateway's late copy of its FCnt 100 is still a copy,
    /// no second record, not a counter restart taken.
    #[test]
    fn a_device_missing_for_one_start_still_tells_a_copy_once_restored() {
        let dir = tempfile::tempdir().unwrap();
        let resets = "resets_fcnt = true\n";
        let t0 = delivered_100_and_101(dir.path(), resets);
        let store = crate::buffer::SledStore::open(dir.path()).unwrap();
        let (deliveries, _reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(deliveries);
        let removed = "[sink]\ntype = \"stdout\"\n";
        drop(forwarder_of(removed, Box::new(store), Box::new(sink)));
        assert_eq!(
            kept_copies(dir.path()).len(),
            1,
            "kept while it was missing"
        );
        let ((mut again, metrics), mut reports) = session_forwarder(dir.path(), &NWK, resets);
        let copy = deliver(&mut again, &mut reports, &session_frame(100, &NWK), t0);
        assert_eq!((copy, metrics.duplicates.get()), ((0, 0), 1));
    }

    /// A device whose `resets_fcnt` was turned off across a restart: a second gateway's late
    /// copy of its FCnt 3, heard after its FCnt 20, is a duplicate, as within a run, not the
    /// problem `fcnt_reset` (whose line tells the operator to set `resets_fcnt`). Its session
    /// writes no frames: those kept stay as they were, until no start can take them.
    #[test]
    fn a_late_copy_after_resets_fcnt_is_turned_off_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let resets = "resets_fcnt = true\n";
        let (delivered, t0) = delivering(dir.path(), resets, &[3, 20]);
        drop(delivered);
        let ((mut again, metrics), mut reports) = session_forwarder(dir.path(), &NWK, "");
        let copy = deliver(&mut again, &mut reports, &session_frame(3, &NWK), t0);
        let told = (metrics.duplicates.get(), metrics.problems("fcnt_reset"));
        assert_eq!(
            (copy, told),
            ((0, 0), (1, 0)),
            "(made, sent), (duplicates, fcnt_reset)"
        );
        let next = deliver(&mut again, &mut reports, &session_frame(21, &NWK), t0);
        assert_eq!(next, (1, 1));
        drop(again);
        let kept = kept_copies(dir.path())
            .into_iter()
            .map(|(_, frames)| frames);
        assert_eq!(kept.collect::<Vec<_>>(), [[3, 20]]);
    }

    /// A frame's age after a restart is told by the time since boot, not by the wall clock:
    /// on a Pi without a real-time clock whose clock NTP sets back 2 hours after a frame,
    /// hubgate restarted a minute later by that clock is 2 hours on by the boot's, and the
    /// same bytes then (a restarted device's boot message) are a reading, taken. A minute on
    /// by the boot's, they are still a copy.
    #[test]
    fn a_step_back_of_the_wall_clock_does_not_make_an_old_frame_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let more = "resets_fcnt = true\n";
        let frame = session_frame(100, &NWK);
        let ((mut fwd, _), mut reports) = session_forwarder(dir.path(), &NWK, more);
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let up = crate::clock::since_boot().unwrap();
        fwd.ledger.clock(true, t0, wall);
        assert_eq!(deliver(&mut fwd, &mut reports, &frame, t0), (1, 1));
        let hours = Duration::from_secs(2 * 3600);
        fwd.ledger.clock(true, t0 + hours, wall);
        drop(fwd);
        let copy = |up_now| {
            let cfg = crate::config::Config::parse(&session_config(&NWK, more)).unwrap();
            let store = crate::buffer::SledStore::open(dir.path()).unwrap();
            let mut buffer = Buffer::new(Box::new(store), &cfg.buffer, Metrics::new());
            let mut decoder = Decoder::new(&cfg, Metrics::new());
            for k in buffer.fcnts().unwrap() {
                let (dev_addr, dev_eui) = (DevAddr(k.dev_addr), DevEui(k.dev_eui));
                decoder.resume_fcnt(dev_addr, dev_eui, k.fcnt, k.mic, k.behind, k.keys);
            }
            resume_copies(
                &mut decoder,
                &mut buffer,
                crate::clock::boot_id(),
                Some(up_now),
            );
            decoder.decode(&frame).is_empty()
        };
        let minute = Duration::from_secs(60);
        assert!(copy(up + minute), "a minute on by the boot clock");
        assert!(
            !copy(up + hours + minute),
            "2 hours on by the boot clock, a minute by the wall clock set back"
        );
    }

    /// Frames kept in another boot, or where this boot or the time since it cannot be told,
    /// or stamped later than the time since boot now, are not told as copies after a restart:
    /// their age cannot be trusted (a Pi without a real-time clock starts at the time it
    /// stopped at). Kept in this boot seconds ago, a frame is. Those kept in another boot are
    /// dropped from the buffer; the others stay (kept in this boot, or in one not told).
    #[test]
    fn only_frames_kept_in_this_boot_and_not_in_the_future_are_copies() {
        let cfg = crate::config::Config::parse(&session_config(&NWK, "resets_fcnt = true\n"));
        let cfg = cfg.unwrap();
        let frame = session_frame(100, &NWK);
        let Input::Radio(radio) = &frame else {
            unreachable!()
        };
        let mic: [u8; 4] = radio.phy[radio.phy.len() - 4..].try_into().unwrap();
        let up = Duration::from_secs(3600);
        let copy = |boot_id: Option<u128>, kept_at: Duration, now| {
            let mut buffer = kept_in_boot_7(MemoryStore::default(), mic, &[kept_at]);
            let mut decoder = Decoder::new(&cfg, Metrics::new());
            let (dev_addr, dev_eui) = (DevAddr(SESSION.0), DevEui(SESSION.1));
            assert!(decoder.resume_fcnt(dev_addr, dev_eui, 100, Some(mic), None, None));
            resume_copies(&mut decoder, &mut buffer, boot_id, now);
            let kept = buffer.copies().unwrap().len();
            (decoder.decode(&frame).is_empty(), kept)
        };
        let seconds = Duration::from_secs(10);
        let before = up - seconds;
        assert_eq!(copy(Some(7), before, Some(up)), (true, 1), "this boot");
        assert_eq!(copy(Some(8), before, Some(up)), (false, 0), "another boot");
        assert_eq!(copy(None, before, Some(up)), (false, 1), "boot not known");
        assert_eq!(
            copy(Some(7), before, None),
            (false, 1),
            "nor the time since it"
        );
        assert_eq!(
            copy(Some(7), up + seconds, Some(up)),
            (false, 1),
            "in the future"
        );
    }

    /// A device that joined again (a new DevAddr, its FCnt from 0 again) and sends the same
    /// payload at the same FCnt as before is a new reading; the same uplink again (a
    /// redelivery: the same DevAddr) is still a copy.
    #[test]
    fn a_reading_after_a_rejoin_is_not_a_copy() {
        let (mut fwd, metrics) = forwarder("[sink]\ntype = \"stdout\"\n");
        let up = |dedup: &str, addr: &str, time: &str| {
            let text = format!(
                r#"{{"deduplicationId":"{dedup}","time":"{time}","deviceInfo":{{"devEui":"58a0cb0000101234"}},"devAddr":"{addr}","fCnt":3,"fPort":1,"data":"AQ=="}}"#
            );
            let format = crate::config::UplinkFormat::ChirpstackV4;
            crate::source::parse(format, text.as_bytes(), SystemTime::UNIX_EPOCH)
                .unwrap()
                .value
        };
        let mut frames = queue(vec![
            up("aaaa", "26011bda", "2026-12-01T10:00:00Z"),
            up("bbbb", "26011c07", "2026-12-02T10:00:00Z"),
            up("bbbb", "26011c07", "2026-12-02T10:00:00Z"),
        ]);
        assert_eq!(round(&mut fwd, &mut frames), 3);
        assert_eq!(metrics.decoded.get(), 3);
        assert_eq!(metrics.duplicates.get(), 1, "only the redelivery is a copy");
    }

    /// A network server's uplinks without a time of their own that a broker delivers
    /// together (its backlog after a reconnect) are parsed in one millisecond and get the
    /// receive time, told apart by their index in it. Two equal ones at one FCnt are two
    /// readings: an ABP device whose counter restarts at power-up sends its boot message at
    /// FCnt 0 after each restart. Both make a record and reach the sink; neither is
    /// acknowledged as a copy of the other.
    #[test]
    fn equal_uplinks_at_one_fcnt_received_in_one_millisecond_both_reach_the_sink() {
        let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Confirming(tx);
        let store = Box::new(crate::buffer::MemoryStore::default());
        let text = "[sink]\ntype = \"stdout\"\n";
        let (mut fwd, metrics) = forwarder_of(text, store, Box::new(sink));
        let msg = br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"devAddr":"26011bda","fCnt":0,"fPort":2,"data":"AQ=="}"#;
        let received = SystemTime::now();
        let format = crate::config::UplinkFormat::ChirpstackV4;
        let parsed = crate::source::parse(format, msg, received).unwrap().value;
        let Input::Uplink(first) = parsed else {
            panic!("not an uplink");
        };
        assert_eq!((first.time, first.fcnt), (received, Some(0)));
        // The second of the millisecond, as the source's context numbers it.
        let second = Input::Uplink(crate::uplink::Uplink {
            same_ms_index: 1,
            ..first.clone()
        });
        let t0 = Instant::now();
        let sent = [Input::Uplink(first), second].map(|input| {
            let made = deliver(&mut fwd, &mut reports, &input, t0);
            (made, metrics.duplicates.get())
        });
        assert_eq!(
            sent,
            [((1, 1), 0), ((1, 1), 0)],
            "((made, sent), duplicates)"
        );
    }
}
