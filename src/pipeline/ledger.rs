//! The forwarder's state machine, without I/O of its own: which records are in flight, which
//! go into the buffer, which sources may be acknowledged, which buffered records may be
//! deleted. It calls the sink and the buffer, and is told the time, so a model test can
//! drive it step by step (`model.rs`). The durability contract (`docs/design.md`):
//!
//! - healthy sink, empty buffer: records go from memory straight to the sink and their
//!   source is acknowledged on the delivery report;
//! - a failure, a slow report (`spill_after`), a full in-flight window or shutdown: records
//!   are written to the buffer, flushed, and only then acknowledged (the flush runs on the
//!   store's thread: records go on being written, drained and sent meanwhile, and the
//!   acknowledgements wait for a flush that started after their records were written,
//!   [`Ledger::commit`]); a source that can wait
//!   is not read from while the window is full and the sink keeps up
//!   ([`Ledger::takes_patient`]), so its records are not written only to be sent a moment
//!   later;
//! - records go into the buffer by one path, oldest first ([`Ledger::store_waiting`]): a
//!   record is stored only with every older record that is not confirmed yet, so after a
//!   crash the buffer never holds a record whose older sibling is gone;
//! - once anything is buffered or waiting, new records queue behind it, and the buffer
//!   drains in order, each record deleted on its delivery report;
//! - records the buffer refuses to write (a disk error) go to the sink from memory while it
//!   confirms, once the drain has handed it every buffered record, and are acknowledged on
//!   their delivery report ([`Ledger::send_unbuffered`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::clock_steps::{Boot, ClockSteps, Reading};
use super::dedup::{Dedup, Seen};
use super::doubts::{Doubts, Refused};
use super::health::{SinkHealth, Verdict};
use crate::buffer::{Buffer, BufferError, ClockState, Pushed};
use crate::config::BufferConfig;
use crate::ids::DevEui;
use crate::lorawan::fcnt::COPIES;
use crate::lorawan::{Accepted, Counters, DevAddr};
use crate::metrics::{unix_seconds, Metrics};
use crate::record::{ms_since_epoch, Record, DEAD_LETTER};
use crate::sink::{Delivery, Sink, SinkError};
use crate::source::{Ack, Sent};

/// A LoRaWAN frame counter a record advanced: DevAddr, DevEUI, FCnt32, its frame's MIC, and
/// when the frame was accepted, given for a session of a device that restarts its counter
/// only, whose frames are kept to tell a copy ([`Ledger::keep_fcnts`]).
type Fcnt = Accepted;

struct InFlight {
    record: Record,
    /// Sources to acknowledge once this record is durable (empty once it is).
    acks: Vec<Ack>,
    in_buffer: bool,
    sent_at: Instant,
}

/// What a record in flight takes in memory, near enough: its strings.
pub(super) fn size(r: &Record) -> u64 {
    (r.body.len() + r.key.len() + r.id.len() + r.rec_type.len()) as u64
}

/// A record that is not durable yet and not with the sink: it goes into the buffer next.
struct Waiting {
    record: Record,
    acks: Vec<Ack>,
}

/// A record that leaves the send path for good, and the sources to acknowledge once it has:
/// kept as `letter` in the dead-letter tree or, past [`crate::buffer::MAX_DEAD_LETTERS`],
/// only counted (`None`, as once its letter is written); if `buffered`, it leaves the buffer
/// too.
struct Leaving {
    letter: Option<Record>,
    acks: Vec<Ack>,
    buffered: bool,
}

pub struct Ledger {
    buffer: Buffer,
    sink: Box<dyn Sink>,
    metrics: Arc<Metrics>,
    dedup: Dedup,
    health: SinkHealth,
    max_in_flight: usize,
    max_in_flight_bytes: u64,
    /// What the records in flight take ([`size`]).
    in_flight_bytes: u64,
    spill_after: Duration,
    max_age_ms: u64,
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    waiting: BTreeMap<u64, Waiting>,
    /// Records whose dead letter (or removal) the disk refused: written again first in each
    /// round, their sources unacknowledged until then.
    unwritten: BTreeMap<u64, Leaving>,
    /// Every record up to here that is not confirmed goes into the buffer.
    spill_mark: Option<u64>,
    /// Acknowledgements released once a flush that starts later is done (or at once when
    /// nothing waits for one), with the sequence number of the record in flight they belong
    /// to, if any (its delivery releases them too).
    pending_acks: Vec<(Option<u64>, Ack)>,
    /// Acknowledgements released when the running flush is done.
    syncing_acks: Vec<(Option<u64>, Ack)>,
    /// The LoRaWAN frame counters records advanced, kept until the record is durable
    /// (delivered, buffered or dead-lettered; or dropped): see [`Ledger::settled`]. An input
    /// of several records has its counters under each of them.
    unsettled: BTreeMap<u64, Vec<Fcnt>>,
    /// The frames each session (DevAddr, DevEUI) took whose counters are not kept yet, in
    /// take order: the newest of them that has no frame held before it, and is not held
    /// itself, is kept ([`Ledger::release_fcnts`]).
    taken: HashMap<(DevAddr, DevEui), VecDeque<Fcnt>>,
    /// Sessions whose last kept frames the disk refused to write (the counter, or the frames
    /// kept to tell a copy), with those frames (the last [`COPIES`]): written again at each
    /// commit while flushes work, and with the session's next frames kept
    /// ([`Ledger::keep_fcnts`]). One entry a configured session at most.
    unsaved: BTreeMap<(DevAddr, DevEui), Vec<Fcnt>>,
    /// Frame counters of records written to the buffer (or dropped, or dead-lettered), and of
    /// copies of such records, kept once a flush that starts later is done, as `pending_acks`
    /// are released.
    pending_fcnts: Vec<Fcnt>,
    /// Frame counters kept when the running flush is done.
    syncing_fcnts: Vec<Fcnt>,
    /// Written to the buffer since the last flush started (or failed).
    dirty: bool,
    /// The last flush failed (and the run goes on): what waits for one is bounded.
    flush_failing: bool,
    /// The buffer's latest write of a record failed (an error of the disk, a full file
    /// system's too; not a full buffer, which is `Pushed::Full`), and when to try it again:
    /// meanwhile the records waiting for it go to the sink from memory while it confirms
    /// ([`Ledger::send_unbuffered`]). Cleared by the next write the buffer answers.
    refusing: Option<Refusing>,
    /// Records of parked recTypes left waiting by the last [`Ledger::send_unbuffered`],
    /// within the in-flight bounds: they do not hold input (`accepting`), as a parked
    /// recType's buffered records do not; reset once anything else waits.
    parked_aside: usize,
    /// Last buffered sequence number handed to the sink by the drain.
    drain_cursor: Option<u64>,
    /// Records their hub refused alone, not known yet to be at fault ([`Doubts`]).
    doubts: Doubts,
    /// The wall clock at an instant, as last read while trusted: record ages follow the time
    /// the ledger is given, and a step of the clock from the next reading on.
    wall_at: (Instant, SystemTime),
    /// Whether the wall clock is trusted ([`crate::clock::trusted`]). While it is not,
    /// nothing expires, and records taken get no creation time (0): theirs would be from the
    /// wrong clock. Such a record ages from `trusted_since`.
    clock_synchronized: bool,
    /// When this run came to trust the clock: its start, or the sync.
    trusted_since: SystemTime,
    /// The clock was read and trusted this run (`wall_at` is that reading): the first such
    /// reading is where ages count from, not a step from the time the ledger started at
    /// (taken before anything said whether to trust it: a Pi without fake-hwclock starts at
    /// 1970, and NTP may set it before the first check).
    read_trusted: bool,
    /// The clock's forward steps, this run's and earlier ones', kept in the buffer's state.
    steps: ClockSteps,
    /// What the next readings of the clock are taken with: whether it is known to be
    /// synchronised (not only trusted for want of an answer), and the boot, if it can be told.
    clock_source: (bool, Option<Boot>),
    /// The last run's last trusted reading of the clock, until this run's first.
    last_run: Option<Reading>,
    /// The trusted reading kept in the buffer's state.
    kept_reading: Option<Reading>,
}

/// The buffer refuses writes: the try after the one at `retry_at` waits `delay` (doubled
/// each time, up to [`WRITE_RETRY_MAX`]).
struct Refusing {
    retry_at: Instant,
    delay: Duration,
}

/// How long a write the buffer refused waits before the buffer is tried again, first and at
/// most: a failing card's write can take seconds in the kernel's retries, on the forwarder's
/// thread, and each round (up to ten a second) would make one.
const WRITE_RETRY_FIRST: Duration = Duration::from_secs(1);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

/// A reading of a trusted clock further ahead than the monotonic clock moved since the last
/// is a step (NTP slews smaller differences, at most 0.5 ms a second).
const STEP_AT_LEAST: Duration = Duration::from_secs(1);
/// The kept reading is taken again once the boot's start by the clock moved this much (half
/// a step: slewing moves the clock and `CLOCK_BOOTTIME` alike, so only a step moves the
/// start), and every
/// [`KEEP_READING_EVERY_MS`] while records are buffered (the time a reboot does not count
/// starts from it).
const KEEP_READING_DRIFT_MS: u64 = 500;
const KEEP_READING_EVERY_MS: u64 = 60_000;

impl Ledger {
    /// `seed` spreads the sink's retry jitter; `now` is the time of the caller's clock.
    pub fn new(
        cfg: &BufferConfig,
        dedup_window: usize,
        buffer: Buffer,
        sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
        now: (Instant, SystemTime),
        seed: u64,
    ) -> Result<Self, BufferError> {
        // A source redelivers what it got no acknowledgement for before a crash; what of
        // that is already in the buffer must not go in twice. What the last run left
        // (records, dead letters) is durable only once flushed by this one: it may have
        // stopped on a failing flush. So the first commit flushes, before it acknowledges
        // such a copy.
        let mut dedup = Dedup::new(dedup_window);
        match buffer.recent_ids(dedup_window) {
            Ok(ids) => ids.iter().for_each(|id| dedup.seed(id)),
            Err(e) => log::warn!("buffer: cannot read the ids of buffered records: {e}"),
        }
        let left_over = !buffer.is_empty() || buffer.dead_letters() > 0;
        let steps = buffer.clock_state(ClockState::Steps).map_or_else(
            |e| {
                log::warn!("buffer: cannot read the clock's steps: {e}");
                ClockSteps::default()
            },
            |b| ClockSteps::decode(&b),
        );
        let last_run = buffer.clock_state(ClockState::Reading).map_or_else(
            |e| {
                log::warn!("buffer: cannot read the clock's last reading: {e}");
                None
            },
            |b| Reading::decode(&b),
        );
        let next_seq = buffer
            .last_seq()
            .map_or(0, |s| s + 1)
            .max(steps.first_after());
        let ledger = Ledger {
            buffer,
            sink,
            health: SinkHealth::new(metrics.clone(), seed),
            metrics,
            dedup,
            max_in_flight: cfg.max_in_flight.max(1),
            max_in_flight_bytes: cfg.max_in_flight_bytes.max(1),
            in_flight_bytes: 0,
            spill_after: cfg.spill_after,
            max_age_ms: u64::try_from(cfg.max_age.as_millis()).unwrap_or(u64::MAX),
            next_seq,
            in_flight: BTreeMap::new(),
            waiting: BTreeMap::new(),
            unwritten: BTreeMap::new(),
            spill_mark: None,
            pending_acks: Vec::new(),
            syncing_acks: Vec::new(),
            unsettled: BTreeMap::new(),
            taken: HashMap::new(),
            unsaved: BTreeMap::new(),
            pending_fcnts: Vec::new(),
            syncing_fcnts: Vec::new(),
            dirty: left_over,
            flush_failing: false,
            refusing: None,
            parked_aside: 0,
            drain_cursor: None,
            doubts: Doubts::default(),
            wall_at: now,
            clock_synchronized: true,
            trusted_since: now.1,
            read_trusted: false,
            steps,
            clock_source: (false, None),
            last_run,
            kept_reading: last_run,
        };
        // The start may have changed the buffer's state already (stale kept frames dropped).
        ledger.show_unsynced();
        Ok(ledger)
    }

    pub fn buffered(&self) -> u64 {
        self.buffer.len()
    }

    /// Nothing in flight, waiting (for the buffer or a dead letter's write) or buffered.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.waiting.is_empty()
            && self.unwritten.is_empty()
            && self.buffer.is_empty()
    }

    /// Idle, and nothing due later either: no acknowledgement or flush held back, no
    /// buffer housekeeping pending. Until then the forwarder ticks often.
    pub fn quiet(&self) -> bool {
        self.idle()
            && self.spill_mark.is_none()
            && self.pending_acks.is_empty()
            && self.pending_fcnts.is_empty()
            && !self.dirty
            && !self.buffer.flushing()
            && !self.buffer.housekeeping_due()
    }

    /// New input may be taken: nothing waits for room in the buffer or for a write the disk
    /// refused (but records of parked recTypes set aside, [`Ledger::send_unbuffered`]), and,
    /// while flushes fail, fewer than `max_in_flight` acknowledgements and
    /// frame counters wait for one (each input adds to them until a flush works again).
    pub fn accepting(&self) -> bool {
        let held = || {
            self.pending_acks.len()
                + self.syncing_acks.len()
                + self.pending_fcnts.len()
                + self.syncing_fcnts.len()
        };
        self.waiting.len() == self.parked_aside
            && self.unwritten.is_empty()
            && !(self.flush_failing && held() >= self.max_in_flight)
    }

    /// A frame of a source that can wait may be taken at `now`: unless the sink keeps up
    /// (no failure, nothing unconfirmed for `spill_after`) and the in-flight window is full,
    /// when it would only be written to the buffer. A sink that fails or is slow gets the
    /// buffer as before, so the source is never held up by a sink that does not confirm.
    pub fn takes_patient(&self, now: Instant) -> bool {
        !self.window_full() || !self.healthy(now)
    }

    /// The in-flight window holds `max_in_flight` records or `max_in_flight_bytes` (the
    /// record that crosses the byte bound still goes: one larger than it goes alone), or the
    /// records a crash would send again, in flight or delivered from the buffer with their
    /// deletion not synced yet, number `max_in_flight * 1.5` (flushes run beside the drain:
    /// deletions must not pile up while one takes long).
    fn window_full(&self) -> bool {
        self.in_flight.len() >= self.max_in_flight
            || self.in_flight_bytes >= self.max_in_flight_bytes
            || self.in_flight.len() + self.buffer.unsynced_removals()
                >= self.max_in_flight + self.max_in_flight / 2
    }

    /// Records held in memory (in flight, waiting for the buffer or for their dead letter's
    /// write).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.in_flight.len() + self.waiting.len() + self.unwritten.len()
    }

    /// Hold records of `rec_type` back (its hub is missing) while the others flow.
    pub fn park(&mut self, rec_type: &str, reason: crate::sink::refusal::Refusal, now: Instant) {
        self.health
            .failed(&SinkError::Park(reason), rec_type, now, now);
    }

    /// The records of a decoded input (none: nothing to keep, e.g. a frame of another
    /// network), what its decode did to LoRaWAN frame counters, and the acknowledgement its
    /// source waits for: sent once every one of its records is durable.
    pub fn take(&mut self, records: Vec<Record>, counters: Counters, ack: Ack, now: Instant) {
        self.take_each(records, counters, ack, now, |ledger, record, fcnts, ack| {
            ledger.take_one(record, fcnts, ack, now)
        });
        self.show_unsynced();
    }

    /// Each of `records` taken by `one` with its part of `ack`; the frame counters go under
    /// each record not durable yet, and are kept once all of them are.
    fn take_each(
        &mut self,
        records: Vec<Record>,
        counters: Counters,
        ack: Ack,
        now: Instant,
        mut one: impl FnMut(&mut Self, Record, &[Fcnt], Ack),
    ) {
        if records.is_empty() {
            return self.nothing_to_keep(counters, ack);
        }
        let fcnts = counters.advanced;
        self.took(&fcnts);
        let parts = ack.split(records.len());
        for (record, part) in records.into_iter().zip(parts) {
            let record = self.stamped(record, now);
            one(self, record, &fcnts, part);
        }
        // Kept now if no record holds them.
        self.release_fcnts(fcnts);
    }

    /// The sessions of `fcnts` took these frames last.
    fn took(&mut self, fcnts: &[Fcnt]) {
        for &frame in fcnts {
            let session = (frame.dev_addr, frame.dev_eui);
            self.taken.entry(session).or_default().push_back(frame);
        }
    }

    fn take_one(&mut self, record: Record, fcnts: &[Fcnt], ack: Ack, now: Instant) {
        let Some((seq, record, ack)) = self.admit(record, fcnts, ack) else {
            return;
        };
        if self.buffer.is_empty()
            && self.waiting.is_empty()
            && !self.window_full()
            && self.healthy(now)
            && !self.health.is_parked(&record.rec_type, now)
        {
            match self.sink.send(seq, &record) {
                Ok(()) => {
                    self.track(seq, record, vec![ack], false, now);
                    return;
                }
                Err(SinkError::Reject(e)) => {
                    self.reject(seq, &record, &e, vec![ack], false);
                    return;
                }
                Err(e) => self.failed(&e, &record.rec_type, now, now),
            }
        }
        self.wait(seq, record, vec![ack]);
    }

    /// A record numbered, its frame counters held under it; `None` for a dead letter (kept
    /// at once) and for a copy of a record taken before, acknowledged with that one.
    fn admit(&mut self, record: Record, fcnts: &[Fcnt], ack: Ack) -> Option<(u64, Record, Ack)> {
        if record.rec_type == DEAD_LETTER {
            self.keep_dead_letter(&record, fcnts, ack);
            return None;
        }
        let seq = self.next_seq;
        match self.dedup.check(&record.id, seq) {
            Seen::New => {}
            Seen::Pending(first) => {
                self.metrics.duplicates.inc();
                self.ack_with(first, fcnts, ack);
                return None;
            }
            Seen::Durable => {
                // Its record may be written and not flushed yet: the acknowledgement and the
                // copy's frame counters wait for a flush that starts later. Kept at once, a
                // flush already running could make the counter durable before the record's
                // segment is synced (see [`Ledger::settled_with_flush`]).
                self.metrics.duplicates.inc();
                self.hold(None, [ack]);
                self.pending_fcnts.extend(fcnts);
                return None;
            }
        }
        self.next_seq += 1;
        self.unsettle(seq, fcnts);
        Some((seq, record, ack))
    }

    /// An input that makes no record. A replayed LoRaWAN frame whose first copy's records
    /// are not all durable yet (a source's redelivery after its connection dropped, a second
    /// gateway) is acknowledged with those records, not before: acknowledged at once, the
    /// readings would be lost if hubgate stopped before the records were durable.
    fn nothing_to_keep(&mut self, counters: Counters, ack: Ack) {
        self.took(&counters.advanced);
        self.release_fcnts(counters.advanced);
        // No record, nor one made before: a retained message is taken again at the broker's
        // next delivery ([`Ack::without_retained`]).
        let Some((dev_addr, fcnt)) = counters.replayed else {
            return self.hold(None, [ack.without_retained()]);
        };
        let of_frame = |a: &Fcnt| (a.dev_addr, a.fcnt) == (dev_addr, fcnt);
        let first: Vec<u64> = self
            .unsettled
            .iter()
            .filter(|(_, kept)| kept.iter().any(of_frame))
            .map(|(seq, _)| *seq)
            .collect();
        // Records of the frame written (or dead-lettered) and not flushed yet: a part of the
        // acknowledgement waits for a flush that starts later, as theirs do.
        let written = self
            .pending_fcnts
            .iter()
            .chain(&self.syncing_fcnts)
            .any(of_frame);
        let mut parts = ack.split(first.len() + usize::from(written || first.is_empty()));
        for seq in first {
            let part = parts.pop().expect("a part per record");
            self.ack_with(seq, &[], part);
        }
        self.hold(None, parts);
    }

    /// Hold `acks` (of record `seq` in flight, if any) until a flush that starts later is
    /// done. One that sends nothing ([`Ack::sends_nothing`]) is not held: copies of an input
    /// come as fast as a sender repeats them.
    fn hold(&mut self, seq: Option<u64>, acks: impl IntoIterator<Item = Ack>) {
        let acks = acks.into_iter().filter(|a| !a.sends_nothing());
        self.pending_acks.extend(acks.map(|a| (seq, a)));
    }

    /// Acknowledge a copy of record `first`, and keep the copy's frame counters `fcnts`, when
    /// that one becomes durable. One that is buffered, or left for good (dead-lettered,
    /// dropped), is no longer settled: the copy waits for a flush that starts later, as a
    /// copy of a durable record does. Held under it, the counters would hold the session for
    /// the rest of the run.
    fn ack_with(&mut self, first: u64, fcnts: &[Fcnt], ack: Ack) {
        let acks = if let Some(f) = self.in_flight.get_mut(&first).filter(|f| !f.in_buffer) {
            &mut f.acks
        } else if let Some(w) = self.waiting.get_mut(&first) {
            &mut w.acks
        } else if let Some(l) = self.unwritten.get_mut(&first) {
            &mut l.acks
        } else {
            // Buffered, or dropped: which is not known here, and a dropped one must not keep
            // a retained message's fingerprint (a duplicate at worst for a buffered one).
            self.hold(None, [ack.without_retained()]);
            self.pending_fcnts.extend(fcnts);
            return;
        };
        // Nor kept with the record: a record held in flight for long (the sink's timeout,
        // while the disk refuses it) would gather one a copy.
        if !ack.sends_nothing() {
            acks.push(ack);
        }
        self.unsettle(first, fcnts);
    }

    /// The frame counters `fcnts` are kept once record `seq` is durable ([`Ledger::settled`]).
    fn unsettle(&mut self, seq: u64, fcnts: &[Fcnt]) {
        if !fcnts.is_empty() {
            self.unsettled.entry(seq).or_default().extend(fcnts);
        }
    }

    /// The sink confirmed record `seq`: the frame counters it advanced are kept now, unless
    /// another record of the same frame is not durable yet. Kept earlier, they would outlive
    /// a crash that lost a record, and the source's redelivery of its frame would be a
    /// replay after the restart: acknowledged, with no record made.
    fn settled(&mut self, seq: u64) {
        if let Some(fcnts) = self.unsettled.remove(&seq) {
            self.release_fcnts(fcnts);
        }
    }

    /// Record `seq` was written to the buffer (or left it for good): its frame counters are
    /// kept once a flush that starts later is done. Written beside the record, they could be
    /// durable before it: sled's flush makes every sled write durable, also one made after
    /// the flush synced the record's segment, and after a power cut the record, never
    /// acknowledged, is dropped at open while its counter makes the redelivery a replay.
    fn settled_with_flush(&mut self, seq: u64) {
        if let Some(fcnts) = self.unsettled.remove(&seq) {
            self.pending_fcnts.extend(fcnts);
        }
    }

    /// Each session of `fcnts` keeps the counter of the newest frame it took whose records,
    /// and the records of every frame it took before, are durable. A session's kept counter
    /// is one value, written over, and a restart refuses every frame at or below it: kept
    /// while an earlier frame of the session is not durable (in flight to a slower hub, or
    /// waiting for a flush), it would make that frame's redelivery a replay after a crash.
    /// A later frame held does not hold it back: under steady traffic a session has one
    /// held nearly always, and its counter would be kept late or never. The frames are kept
    /// too, every one released, to tell a copy of one after a restart.
    fn release_fcnts(&mut self, fcnts: Vec<Fcnt>) {
        let sessions: BTreeSet<(DevAddr, DevEui)> =
            fcnts.into_iter().map(|a| (a.dev_addr, a.dev_eui)).collect();
        let held = |frame: &Fcnt| {
            let all = self.pending_fcnts.iter().chain(&self.syncing_fcnts);
            all.chain(self.unsettled.values().flatten())
                .any(|h| h == frame)
        };
        let mut free = Vec::new();
        for session in sessions {
            let Some(frames) = self.taken.get_mut(&session) else {
                continue;
            };
            let mut released = Vec::new();
            while frames.front().is_some_and(|f| !held(f)) {
                released.extend(frames.pop_front());
            }
            if frames.is_empty() {
                self.taken.remove(&session);
            }
            if !released.is_empty() {
                free.push((session, released));
            }
        }
        self.keep_fcnts(free);
    }

    /// The frames of LoRaWAN sessions whose records are durable, a session's in take order,
    /// go to the buffer, durable with its next flush: where each session's newest leaves its
    /// counter, with the MIC of the frame at it and which counters below it were taken, so a frame
    /// captured before a restart is still a replay after it, one late is still taken,
    /// and another frame at the kept counter (a device that restarted its counter) is not
    /// taken for a copy. For a session of a device that restarts its counter, which takes a
    /// frame at or below its counter as a restart, the frames go too, with when each was
    /// accepted by the time since boot ([`crate::clock::since_boot`]: the wall clock may step
    /// back between a frame and a restart, and make it look younger), so a copy of one heard
    /// soon after a restart in the same boot is still told as one ([`Buffer::save_copies`]:
    /// those of the last [`COPY_WINDOW`](crate::lorawan::fcnt::COPY_WINDOW) only; none where
    /// the time since boot cannot be read). Any other session's kept counter refuses such a
    /// copy by itself: its frames are neither read nor written, which spares each of its
    /// uplinks a rewrite of up to 556 bytes. A session's frames the disk refused last go
    /// first, so they are written with these; refused again, all are kept for the next try,
    /// and counted as a problem only the first time.
    fn keep_fcnts(&mut self, sessions: Vec<((DevAddr, DevEui), Vec<Fcnt>)>) {
        let boot = crate::clock::since_boot().map(|up| (Instant::now(), up));
        for (session, mut frames) in sessions {
            let (dev_addr, dev_eui) = session;
            let refused_before = self.unsaved.remove(&session);
            let counted = refused_before.is_some();
            if let Some(mut refused) = refused_before {
                refused.append(&mut frames);
                frames = refused;
            }
            let copies: Vec<_> = (frames.iter())
                .map(|a| (a.counter, a.at))
                .filter_map(|(c, at)| Some((c.fcnt, c.mic, boot_ms_at(at?, boot?)?)))
                .collect();
            let last = frames.last().expect("a frame a session").counter;
            let (fcnt, mic, behind) = (last.fcnt, last.mic, last.behind);
            let counter = self
                .buffer
                .save_fcnt(dev_addr.0, dev_eui.0, fcnt, mic, behind);
            let copies = match boot.filter(|_| !copies.is_empty()) {
                Some((_, up)) => {
                    let now = up.as_millis() as u64;
                    self.buffer.save_copies(dev_addr.0, dev_eui.0, &copies, now)
                }
                None => Ok(()),
            };
            let failed = match (counter, copies) {
                (Ok(()), Ok(())) => continue,
                (Err(e), Ok(())) => format!("cannot keep the frame counter of {dev_addr}: {e}"),
                (Ok(()), Err(e)) => format!("cannot keep the frames {dev_addr} accepted last (a copy of one heard after a restart may be taken again): {e}"),
                (Err(e), Err(f)) => format!("cannot keep the frame counter of {dev_addr} ({e}) nor the frames it accepted last ({f})"),
            };
            // Written again at the next commit (a counter not on disk makes a redelivery
            // after a restart a duplicate, not a loss): only the last frames can be kept.
            frames.drain(..frames.len().saturating_sub(COPIES));
            self.unsaved.insert(session, frames);
            // One problem until they are written, not one at each commit that tries again
            // (up to several a second under traffic): a try refused again is only logged.
            if counted {
                (self.metrics).log_limited(log::Level::Warn, "buffer_write_error", || failed);
            } else {
                self.metrics.problem("buffer_write_error", || failed);
            }
        }
    }

    /// Shutdown: what was received goes into the buffer, not to the sink; a copy of a record
    /// taken before is acknowledged with it, as in [`Ledger::take`].
    pub fn take_to_buffer(
        &mut self,
        records: Vec<Record>,
        counters: Counters,
        ack: Ack,
        now: Instant,
    ) {
        self.take_each(records, counters, ack, now, |ledger, record, fcnts, ack| {
            if let Some((seq, record, ack)) = ledger.admit(record, fcnts, ack) {
                ledger.wait(seq, record, vec![ack]);
            }
        });
        self.show_unsynced();
    }

    fn healthy(&self, now: Instant) -> bool {
        self.health.ready(now)
            && self
                .in_flight
                .values()
                .next()
                .is_none_or(|f| now.duration_since(f.sent_at) < self.spill_after)
    }

    fn track(&mut self, seq: u64, record: Record, acks: Vec<Ack>, in_buffer: bool, now: Instant) {
        self.in_flight_bytes += size(&record);
        self.in_flight.insert(
            seq,
            InFlight {
                record,
                acks,
                in_buffer,
                sent_at: now,
            },
        );
        self.metrics.in_flight.set(self.in_flight.len() as u64);
    }

    /// Into the buffer (at the next [`Ledger::store_waiting`]), in sequence order.
    fn wait(&mut self, seq: u64, record: Record, acks: Vec<Ack>) {
        self.waiting.insert(seq, Waiting { record, acks });
        self.parked_aside = 0;
        self.spill_through(seq);
    }

    fn spill_through(&mut self, seq: u64) {
        self.spill_mark = self.spill_mark.max(Some(seq));
    }

    /// The drain must look at `seq` again (it went into the buffer, or came back from the
    /// sink, behind the drain's position).
    fn rewind(&mut self, seq: u64) {
        if self.drain_cursor.is_some_and(|c| c >= seq) {
            self.drain_cursor = seq.checked_sub(1);
        }
    }

    /// The one path into the buffer: every record up to the spill mark that is neither
    /// confirmed nor buffered yet, oldest first, stopping at the first that does not fit
    /// (nothing newer may be stored, and so acknowledged, before it). A stored record's
    /// sources are acknowledged at the next commit. While the buffer refuses writes, it is
    /// tried again only once the delay since its last refusal is over (`at_once`: now), and
    /// the refusal counted once a streak.
    fn store_waiting(&mut self, now: Instant, at_once: bool) {
        self.write_unwritten();
        let Some(mark) = self.spill_mark else {
            return;
        };
        if !at_once && self.refusing.as_ref().is_some_and(|r| now < r.retry_at) {
            return;
        }
        self.parked_aside = 0;
        let mut seqs: Vec<u64> = self.waiting.keys().copied().collect();
        let waiting = seqs.len();
        seqs.extend(
            self.in_flight
                .range(..=mark)
                .filter(|(_, f)| !f.in_buffer)
                .map(|(s, _)| *s),
        );
        if waiting > 0 && seqs.len() > waiting && self.refusing.is_none() {
            let older = seqs.len() - waiting;
            self.metrics
                .log_limited(log::Level::Warn, "spill_older", || {
                    format!(
                        "sink has not confirmed {older} record(s) yet: buffering them ahead of newer ones"
                    )
                });
        }
        seqs.sort_unstable();
        for seq in seqs {
            let record = match self.waiting.get(&seq) {
                Some(w) => &w.record,
                None => &self.in_flight[&seq].record,
            };
            let in_flight = &self.in_flight;
            let pushed = match (self.buffer)
                .push_beside(seq, record, |s| in_flight.contains_key(&s))
            {
                Ok(pushed) => pushed,
                Err(e) => {
                    // Not acknowledged: the records go to the sink from memory while it
                    // confirms, else wait in memory ([`Ledger::send_unbuffered`]). And flush,
                    // which ends the run if the store can no longer write at all
                    // ([`Ledger::refused`]): at once after a failed sync, which the end of
                    // the run tells, not a retry.
                    self.refused();
                    if let BufferError::SyncFailed(_) = e {
                        return;
                    }
                    let streak = self.refusing.take();
                    let delay = streak
                        .as_ref()
                        .map_or(WRITE_RETRY_FIRST, |r| (r.delay * 2).min(WRITE_RETRY_MAX));
                    let text = || {
                        format!("cannot write to the buffer: {e}; trying again in {delay:?}: records go to the sink from memory while it confirms, else are held in memory, unacknowledged")
                    };
                    if streak.is_some() {
                        (self.metrics).log_limited(log::Level::Warn, "buffer_write_error", text);
                    } else {
                        self.metrics.problem("buffer_write_error", text);
                    }
                    self.refusing = Some(Refusing {
                        retry_at: now + delay,
                        delay,
                    });
                    return;
                }
            };
            self.refusing = None;
            let stored = match pushed {
                Pushed::Stored => true,
                Pushed::Dropped => false,
                Pushed::Full => return,
                // A record no buffer holds: one waiting for the sink reaches it only
                // through the buffer, so it is dropped (or, under `block`, every newer record
                // would wait behind it for good); under `block`, one in flight stays
                // unacknowledged until its sink confirms it, as if the buffer were full.
                Pushed::TooLarge { bytes }
                    if self.waiting.contains_key(&seq) || !self.buffer.blocks() =>
                {
                    let in_flight = !self.waiting.contains_key(&seq);
                    (self.buffer).drop_too_large(seq, &record.id, bytes, in_flight);
                    false
                }
                Pushed::TooLarge { .. } => return,
            };
            if stored {
                self.dirty = true;
                self.dedup.durable(&record.id);
            }
            self.settled_with_flush(seq);
            // Dropped (by `drop_newest`/`drop_oldest`, or too large for any buffer): no
            // durable record of its input.
            if let Some(w) = self.waiting.remove(&seq) {
                self.hold(None, kept_if(stored, w.acks));
                if stored {
                    self.rewind(seq);
                }
            } else if let Some(f) = self.in_flight.get_mut(&seq) {
                // Nothing more to keep for it either.
                f.in_buffer = true;
                let acks = std::mem::take(&mut f.acks);
                self.hold(Some(seq), kept_if(stored, acks));
            }
        }
        // Everything up to the mark is in the buffer (or in flight and confirmed later). A
        // refusal streak is over too, if nothing was left to write (all of it confirmed from
        // memory): the next refusal is a new one, counted and tried again after 1 s.
        self.spill_mark = None;
        self.refusing = None;
    }

    /// The wall-clock time at `now`: the clock's latest trusted reading (the start's before
    /// one) and the monotonic time since.
    fn wall(&self, now: Instant) -> SystemTime {
        self.wall_at.1 + now.saturating_duration_since(self.wall_at.0)
    }

    /// [`Self::wall`] in ms since the Unix epoch, as record ages are counted.
    fn now_ms(&self, now: Instant) -> u64 {
        ms_since_epoch(self.wall(now))
    }

    /// Whether the clock is trusted (see [`crate::clock::trusted`]), and the time it shows
    /// (`wall` at `now`), read every clock check. While trusted, record ages count from the
    /// latest reading, so a step of the clock (an NTP sync after a start with a wrong time
    /// that could not be told from a right one) is followed; records without a time age
    /// from the moment it became trusted. A forward step is kept with the records taken
    /// before it (see [`ClockSteps`]): it does not age them.
    pub fn clock(&mut self, trusted: bool, now: Instant, wall: SystemTime) {
        if trusted {
            // Measured from this run's last trusted reading, across a spell of an untrusted
            // clock between too (a GPS without a fix setting its epoch, then NTP the right
            // time): the records stamped before it must not count the step either.
            if self.read_trusted {
                let expected = self.wall(now);
                if let Ok(step) = wall.duration_since(expected) {
                    if step >= STEP_AT_LEAST {
                        self.clock_stepped(step);
                    }
                }
            }
            if !(self.clock_synchronized && self.read_trusted) {
                self.trusted_since = wall;
            }
            if let Some(last) = self.last_run.take() {
                self.since_last_run(last, wall);
            }
            self.wall_at = (now, wall);
            self.read_trusted = true;
            self.keep_reading(wall);
        } else {
            self.kept_unsynchronised();
        }
        self.clock_synchronized = trusted;
        self.show_unsynced();
    }

    /// The clock is not trusted now: the kept reading no longer vouches for the records
    /// stamped since it. They were stamped by the clock, or no earlier than the ledger's
    /// estimate, which lags it by any pause of the machine since; a step back before the
    /// clock lost its sync is not seen either. Kept as not synchronised, the next run
    /// measures the time hubgate was down from it instead of trusting the clock
    /// ([`Ledger::since_last_run`]): those records expire later, never sooner.
    fn kept_unsynchronised(&mut self) {
        let Some(kept) = self.kept_reading.filter(|kept| kept.synchronized) else {
            return;
        };
        self.save_reading(Reading {
            synchronized: false,
            ..kept
        });
    }

    /// `reading` into the buffer's state, for the next run; a failure is logged and the
    /// next check tries again.
    fn save_reading(&mut self, reading: Reading) {
        match (self.buffer).save_clock_state(ClockState::Reading, &reading.encode()) {
            Ok(()) => self.kept_reading = Some(reading),
            Err(e) => self
                .metrics
                .log_limited(log::Level::Error, "clock_reading", || {
                    format!("buffer: cannot keep the clock's reading: {e}")
                }),
        }
    }

    /// What the next readings of the clock ([`Ledger::clock`]) are taken with: whether the
    /// clock is known to be synchronised, and the boot, if it can be told.
    pub fn clock_source(&mut self, synchronized: bool, boot: Option<Boot>) {
        self.clock_source = (synchronized, boot);
    }

    /// This run's first trusted reading of the clock against the last run's last: a forward
    /// step while hubgate was not running must not age the records taken before it either.
    /// In the same boot it is measured (the boot's start by the clock moved). Across a reboot,
    /// or where the boot cannot be told, nothing measures it: records stamped by a clock only
    /// trusted for want of an answer (fake-hwclock's stale time, which NTP may have stepped
    /// since) then do not count the time hubgate was not running in their age (they expire
    /// later, never sooner); ones stamped by a clock known to be synchronised had the right
    /// time, and age by it.
    fn since_last_run(&mut self, last: Reading, wall: SystemTime) {
        let step_ms = STEP_AT_LEAST.as_millis() as u64;
        match (self.clock_source.1, last.boot) {
            (Some(now), Some(then)) if now.id == then.id => {
                if let Ok(ms) = u64::try_from(now.started_ms.saturating_sub(then.started_ms)) {
                    if ms >= step_ms {
                        self.clock_stepped(Duration::from_millis(ms));
                    }
                }
            }
            _ if last.synchronized => {}
            _ => {
                let ms = ms_since_epoch(wall).saturating_sub(last.wall_ms);
                if ms >= step_ms && !self.buffer.is_empty() {
                    log::info!(
                        "hubgate was not running for {} by the clock, which may have been stepped meanwhile (nothing said whether it was synchronised): records from before do not count that time in their age",
                        humantime::format_duration(Duration::from_secs(ms / 1000))
                    );
                    self.keep_step(ms);
                }
            }
        }
    }

    /// Keeps a trusted reading of the clock in the buffer's state for the next run
    /// ([`Ledger::since_last_run`]) when it says more than the kept one: another boot or
    /// state, a step (of the boot's start, or back), or a time a reboot would count from
    /// that is getting old while records are buffered.
    fn keep_reading(&mut self, wall: SystemTime) {
        let (synchronized, boot) = self.clock_source;
        let reading = Reading {
            boot,
            wall_ms: ms_since_epoch(wall),
            synchronized,
        };
        let buffered = !self.buffer.is_empty();
        let due = self.kept_reading.is_none_or(|kept| {
            kept.synchronized != synchronized
                || kept.boot.map(|b| b.id) != boot.map(|b| b.id)
                || kept.boot.zip(boot).is_some_and(|(a, b)| {
                    a.started_ms.abs_diff(b.started_ms) >= KEEP_READING_DRIFT_MS
                })
                || (buffered && kept.wall_ms.abs_diff(reading.wall_ms) >= KEEP_READING_EVERY_MS)
                // A step back: records stamped from now on are older than the kept reading,
                // and a step forward again while hubgate is down, measured from it, would
                // age them by the whole of it.
                || reading.wall_ms < kept.wall_ms
        });
        if due {
            self.save_reading(reading);
        }
    }

    fn clock_stepped(&mut self, step: Duration) {
        self.metrics.problem("clock_stepped", || {
            format!(
                "the system clock stepped {} forward: records taken before it do not count it \
                 in their age",
                humantime::format_duration(Duration::from_secs(step.as_secs()))
            )
        });
        self.keep_step(u64::try_from(step.as_millis()).unwrap_or(u64::MAX));
    }

    /// Records taken before now do not count `ms` in their age.
    fn keep_step(&mut self, ms: u64) {
        self.steps.stepped(self.next_seq, ms);
        if let Err(e) = self
            .buffer
            .save_clock_state(ClockState::Steps, &self.steps.encode())
        {
            // Kept for this run all the same; a restart ages those records by the clock.
            log::error!("buffer: cannot keep the clock's step: {e}");
        }
        self.dirty = true;
    }

    /// Whether record `seq`, created at `created_ms` (0: no time), is past `max_age` at
    /// `now_ms`.
    fn expired(&self, seq: u64, created_ms: u64, now_ms: u64) -> bool {
        let created = match created_ms {
            0 => ms_since_epoch(self.trusted_since),
            t => t,
        };
        let age = now_ms
            .saturating_sub(created)
            .saturating_sub(self.steps.after(seq));
        self.clock_synchronized && age > self.max_age_ms
    }

    /// A record made while the clock is not trusted has no creation time: it expires
    /// `max_age` after this run first trusted the clock (its start, or the sync). One made
    /// while it is is no older than the time at `now` by the clock as last read: it was
    /// stamped by the clock as it is now, its age is counted by the clock as last read, and
    /// a step back between the two would make it as old as the step (dropped at once past
    /// `max_age`).
    fn stamped(&self, mut record: Record, now: Instant) -> Record {
        record.created_ms = match self.clock_synchronized {
            false => 0,
            true => record.created_ms.max(self.now_ms(now)),
        };
        record
    }

    /// Housekeeping every tick: records the sink has not confirmed within `spill_after` go
    /// into the buffer (they stay in flight and leave the buffer on delivery), waiting
    /// records get another try at the buffer, and a buffer that has stayed empty gives its
    /// space back.
    pub fn tick(&mut self, now: Instant) {
        // Those the spill mark covers already are not slow anew: a buffer refusing writes
        // leaves them in flight, out of the buffer, until the sink answers.
        let mark = self.spill_mark;
        let slow = (self.in_flight.iter())
            .filter(|(s, f)| {
                !f.in_buffer
                    && mark.is_none_or(|m| **s > m)
                    && now.duration_since(f.sent_at) >= self.spill_after
            })
            .map(|(s, _)| *s)
            .collect::<Vec<_>>();
        if let Some(&last) = slow.last() {
            self.metrics.problem("sink_slow", || {
                format!(
                    "sink has not confirmed {} record(s) for {:?}: buffering them",
                    slow.len(),
                    self.spill_after
                )
            });
            self.spill_through(last);
        }
        if self.spill_mark.is_none() && self.waiting.is_empty() {
            self.buffer.give_space_back_if_quiet(now);
        }
    }

    /// The sink's report on `d.seq`, at `now`.
    pub fn delivered(&mut self, d: Delivery, now: Instant) -> Result<(), BufferError> {
        let Some(f) = self.in_flight.remove(&d.seq) else {
            return Ok(());
        };
        self.in_flight_bytes -= size(&f.record);
        let result = match d.result {
            Err(SinkError::Doubt(why)) => {
                match (self.doubts).refused(d.seq, &f.record.rec_type, f.sent_at, now) {
                    Refused::Reject => Err(SinkError::Reject(format!(
                        "{}, again after its hub took a record sent later",
                        why.broker
                    ))),
                    Refused::Keep => Err(SinkError::Doubt(why)),
                }
            }
            result => result,
        };
        match result {
            Ok(bytes) => {
                if !self.doubts.is_empty()
                    && self.doubts.taken(d.seq, &f.record.rec_type, f.sent_at)
                {
                    // Records it had refused are sent again, oldest first.
                    self.drain_cursor = None;
                }
                self.metrics.delivered.inc(&f.record.rec_type);
                self.metrics.bytes_sent.add(&f.record.rec_type, bytes);
                self.metrics
                    .last_delivery
                    .set(unix_seconds(SystemTime::now()));
                self.metrics.last_delivery_at.set(Some(now));
                if self.health.succeeded(&f.record.rec_type) {
                    // Records of it the drain passed over while parked: look at them again.
                    self.drain_cursor = None;
                }
                let mut acks = f.acks;
                if f.in_buffer {
                    // Evicted by `drop_oldest` (or refused by the buffer) while the sink held
                    // it: delivered all the same, not dropped.
                    self.buffer.forget_drop(d.seq);
                    self.buffer.remove(d.seq)?;
                    // Its acknowledgements may still wait for a flush: delivered is durable.
                    for waiting in [&mut self.pending_acks, &mut self.syncing_acks] {
                        let mine = waiting.extract_if(.., |(s, _)| *s == Some(d.seq));
                        acks.extend(mine.map(|(_, a)| a));
                    }
                }
                self.dedup.durable(&f.record.id);
                self.settled(d.seq);
                for ack in acks {
                    send(&self.metrics, ack);
                }
            }
            Err(SinkError::Reject(e)) => {
                // Not delivered: if the buffer dropped it while the sink held it, that drop
                // counts too (its dead letter is durable only with a later flush, and it
                // was acknowledged already).
                self.buffer.count_drop(d.seq, &f.record.id);
                self.reject(d.seq, &f.record, &e, f.acks, f.in_buffer);
            }
            Err(e) => {
                self.failed(&e, &f.record.rec_type, f.sent_at, now);
                if f.in_buffer {
                    // The drain sends it again (one held in doubt only as a probe), unless the
                    // buffer dropped it while the sink held it: then it is lost, and counted now.
                    self.buffer.count_drop(d.seq, &f.record.id);
                    if self.doubts.held(d.seq).is_none() {
                        self.rewind(d.seq);
                    }
                } else {
                    self.wait(d.seq, f.record, f.acks);
                }
            }
        }
        // After the report's drop is counted: the gauge at 0 means no drop is still held.
        self.metrics.in_flight.set(self.in_flight.len() as u64);
        Ok(())
    }

    /// The sink started over (a new producer, or new credentials), after the caller gave
    /// this ledger every report the old one made: what got none is sent again, oldest
    /// first, from the buffer (or, if it is not there yet, through it).
    pub fn resend_in_flight(&mut self) {
        self.in_flight_bytes = 0;
        for (seq, f) in std::mem::take(&mut self.in_flight) {
            if f.in_buffer {
                // Sent again from the buffer, unless it dropped it meanwhile: lost then.
                self.buffer.count_drop(seq, &f.record.id);
            } else {
                self.wait(seq, f.record, f.acks);
            }
        }
        self.metrics.in_flight.set(0);
        self.drain_cursor = None;
    }

    /// At a stop, once the sink's last reports are in: the records still in flight get no
    /// report from this run. Those the buffer holds are sent at the next start; those it
    /// dropped while the sink held them are lost, and counted as dropped now.
    pub fn stopped(&mut self) {
        for (&seq, f) in &self.in_flight {
            self.buffer.count_drop(seq, &f.record.id);
        }
    }

    /// Test only: the ids of the records in flight whose drop by the buffer waits for their
    /// report (a crash now leaves it uncounted).
    #[cfg(test)]
    pub fn drops_held(&self) -> Vec<String> {
        (self.in_flight.iter())
            .filter(|(seq, _)| self.buffer.holds_drop(**seq))
            .map(|(_, f)| f.record.id.clone())
            .collect()
    }

    /// Test only: how many drops the buffer holds for a report ([`Buffer::held_drops_len`]),
    /// and how many records are in flight, their bound.
    #[cfg(test)]
    pub fn held_drops_and_in_flight(&self) -> (usize, usize) {
        (self.buffer.held_drops_len(), self.in_flight.len())
    }

    /// Everything in flight that is not confirmed goes into the buffer (before a sink is
    /// replaced, and at shutdown), tried at once even while the buffer refuses writes.
    pub fn spill_in_flight(&mut self, now: Instant) {
        if let Some(&last) = self.in_flight.keys().next_back() {
            self.spill_through(last);
        }
        self.store_waiting(now, true);
    }

    /// The sink, for the shell: its `tick` and `flush`.
    pub fn sink(&mut self) -> &mut dyn Sink {
        self.sink.as_mut()
    }

    /// Put in a new sink; the old one is returned (to be dropped once its reports are in).
    pub fn replace_sink(&mut self, sink: Box<dyn Sink>) -> Box<dyn Sink> {
        std::mem::replace(&mut self.sink, sink)
    }

    /// A sink for new credentials took over and the old one's reports are in (after
    /// [`Ledger::resend_in_flight`], which already drains again from the oldest buffered
    /// record): the parks and the backoff the old key earned are lifted, so the new one is
    /// tried at once.
    pub fn forget_old_sink(&mut self) {
        self.health.reset();
    }

    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The sink is not known to be up: failing since its last delivery
    /// ([`SinkHealth::failing`], also after a single failure of a sink that is up), or not
    /// up by its connection state ([`Sink::up`]: docs/adding-a-sink.md; also from the
    /// start until its client reports a connection or a record is confirmed, and while it
    /// reconnects). What it has in flight may not be confirmed soon.
    pub fn sink_not_up(&self) -> bool {
        self.health.failing() || !self.sink.up()
    }

    /// A message the sources gave up on: into the dead-letter tree (up to a cap), never to the
    /// sink; its source is acknowledged once that is flushed, so it is not delivered again,
    /// and the frame counters `fcnts` are kept once it is written.
    fn keep_dead_letter(&mut self, record: &Record, fcnts: &[Fcnt], ack: Ack) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsettle(seq, fcnts);
        let cap = crate::buffer::MAX_DEAD_LETTERS - crate::buffer::SINK_DEAD_LETTERS;
        let letter = self.letter(|| record.clone(), cap, "dead letter", &record.id);
        let acks = kept_if(letter.is_some(), vec![ack]);
        self.left_for_good(
            seq,
            Leaving {
                letter,
                acks,
                buffered: false,
            },
        );
    }

    /// `make()`'s dead letter, or `None` (only counted) once `cap` dead letters are kept:
    /// input decides how large and how many such records come. None either on a buffer that
    /// cannot keep any (a read-only card): held for it, the sources would wait until the
    /// next boot.
    fn letter(
        &self,
        make: impl FnOnce() -> Record,
        cap: u64,
        what: &str,
        id: &str,
    ) -> Option<Record> {
        if !self.buffer.takes_writes() {
            self.metrics.problem("dead_letter_not_kept", || {
                format!("the buffer's card failed and takes no writes: {what} {id} only counted")
            });
            return None;
        }
        let kept = self.buffer.dead_letters();
        if kept < cap {
            return Some(make());
        }
        self.metrics.problem("dead_letters_full", || {
            format!("{kept} dead letters are kept already: {what} {id} only counted")
        });
        None
    }

    /// The sink will never take this record (too large): dead-letter an excerpt of it
    /// ([`crate::record::refused`]), or past [`crate::buffer::MAX_DEAD_LETTERS`] only count
    /// it, as [`Ledger::keep_dead_letter`] does. Either way it leaves the buffer (if
    /// `buffered`), the frame counters it advanced are kept, and its sources are acknowledged
    /// with the flush that carries them. Returns whether its dead letter was written.
    fn reject(
        &mut self,
        seq: u64,
        record: &Record,
        e: &str,
        acks: Vec<Ack>,
        buffered: bool,
    ) -> bool {
        self.metrics.sink_errors.inc("reject");
        self.metrics
            .log_limited(log::Level::Error, "sink_reject", || {
                format!(
                    "record {} of {} rejected by the sink: {e}",
                    record.id, record.key
                )
            });
        let whole = self.buffer.dead_letters() < crate::buffer::WHOLE_DEAD_LETTERS;
        let excerpt = || crate::record::refused(record, e, SystemTime::now(), whole);
        let cap = crate::buffer::MAX_DEAD_LETTERS;
        let letter = self.letter(excerpt, cap, "record refused by the sink", &record.id);
        let acks = kept_if(letter.is_some(), acks);
        self.left_for_good(
            seq,
            Leaving {
                letter,
                acks,
                buffered,
            },
        )
    }

    /// Record `seq` leaves the send path for good: its dead letter is written (or, with
    /// none, the record leaves the buffer), then its frame counters are kept and its sources
    /// acknowledged with the next flush. A write the disk refuses keeps the record (in the
    /// buffer, if it is there) and its acknowledgements, and is done again first in each
    /// round ([`Ledger::write_unwritten`]): no new input is taken meanwhile (a batch being
    /// taken goes on), and the drain waits; records taken before are still sent (from
    /// memory too, while the buffer refuses them: [`Ledger::send_unbuffered`]) or buffered.
    /// Returns whether it was written.
    fn left_for_good(&mut self, seq: u64, mut leaving: Leaving) -> bool {
        let letter = match &leaving.letter {
            Some(letter) => self.buffer.dead_letter(seq, letter),
            None => Ok(()),
        };
        if letter.is_ok() {
            // Written and counted once: what is left to do again is the record's removal.
            leaving.letter = None;
        }
        match letter.and_then(|()| self.buffer.remove(seq)) {
            Ok(()) => {
                self.settled_with_flush(seq);
                self.dirty = true;
                self.hold(None, leaving.acks);
                true
            }
            Err(e) => {
                self.metrics.problem("buffer_write_error", || {
                    let what = match leaving.letter {
                        Some(_) => "keep a dead letter",
                        None => "drop a refused record",
                    };
                    format!("cannot {what}: {e}; holding its acknowledgements")
                });
                self.refused();
                self.unwritten.insert(seq, leaving);
                false
            }
        }
    }

    /// The store refused a write: the next commit flushes. A store that failed for good
    /// fails that flush as it fails a sync (sled after a write of its log failed: see
    /// [`BufferError::SyncFailed`]), which ends the run; waiting for a flush that other writes
    /// would start could hold the sources for good.
    fn refused(&mut self) {
        self.dirty = true;
    }

    /// The dead letters the disk refused get another try, oldest first, up to the first
    /// it refuses again.
    fn write_unwritten(&mut self) {
        while let Some((seq, leaving)) = self.unwritten.pop_first() {
            if !self.left_for_good(seq, leaving) {
                break;
            }
        }
    }

    /// A record sent at `sent` failed.
    fn failed(&mut self, e: &SinkError, rec_type: &str, sent: Instant, now: Instant) {
        self.metrics.sink_errors.inc(e.class());
        self.metrics.problem("sink_error", || format!("sink: {e}"));
        if let Verdict::Backoff(_) = self.health.failed(e, rec_type, sent, now) {
            // Start again from the oldest buffered record once the sink is back.
            self.drain_cursor = None;
        }
    }

    /// Send buffered records, oldest first, while the sink keeps up and no dead letter waits
    /// for the disk.
    fn drain(&mut self, now: Instant) -> Result<(), BufferError> {
        if self.buffer.is_empty() {
            self.forget_doubts_gone(None);
        }
        if self.buffer.is_empty()
            || !self.unwritten.is_empty()
            || !self.healthy(now)
            || self.window_full()
        {
            return Ok(());
        }
        if self.health.unpark_expired(now) {
            // Records of a recType that was parked were skipped: look at them again.
            self.drain_cursor = None;
        }
        let from_oldest = self.drain_cursor.is_none();
        let room = self.max_in_flight - self.in_flight.len();
        let now_ms = self.now_ms(now);
        let room_bytes = self
            .max_in_flight_bytes
            .saturating_sub(self.in_flight_bytes);
        let records = self.buffer.next(self.drain_cursor, room, room_bytes, now)?;
        if let Some(&(oldest, _)) = records.first().filter(|_| from_oldest) {
            self.forget_doubts_gone(Some(oldest));
        }
        for (seq, record) in records {
            if self.window_full() {
                return Ok(());
            }
            self.drain_cursor = Some(seq);
            if self.in_flight.contains_key(&seq) || self.health.is_parked(&record.rec_type, now) {
                continue;
            }
            if self.expired(seq, record.created_ms, now_ms) {
                self.expire(seq, &record);
                self.doubts.forget(seq);
                self.buffer.remove(seq)?;
                continue;
            }
            if self.doubts.held(seq).is_some() {
                continue;
            }
            if !self.send_buffered(seq, record, now) {
                return Ok(());
            }
        }
        if !self.doubts.is_empty() && self.handed_all() && !self.others_wait(now) {
            self.probe(now)?;
        }
        Ok(())
    }

    /// Records in doubt below `oldest`, the oldest buffered (none: the buffer is empty), left
    /// the buffer (`drop_oldest`), but for those in memory.
    fn forget_doubts_gone(&mut self, oldest: Option<u64>) {
        if self.doubts.is_empty() {
            return;
        }
        let (waiting, in_flight) = (&self.waiting, &self.in_flight);
        self.doubts.retain(|s| {
            oldest.is_some_and(|o| s >= o) || waiting.contains_key(&s) || in_flight.contains_key(&s)
        });
    }

    /// Whether records wait in memory that go to the sink from there before a probe (the
    /// buffer refusing writes, [`Ledger::send_unbuffered`]): any of a recType not parked and
    /// not held in doubt.
    fn others_wait(&self, now: Instant) -> bool {
        self.refusing.is_some()
            && (self.waiting.iter()).any(|(&seq, w)| {
                self.doubts.held(seq).is_none() && !self.health.is_parked(&w.record.rec_type, now)
            })
    }

    /// Whether the drain has passed the newest buffered record (a read error: not known, no).
    fn handed_all(&self) -> bool {
        self.buffer
            .newest_seq()
            .is_ok_and(|newest| newest.is_none_or(|n| self.drain_cursor.is_some_and(|c| c >= n)))
    }

    /// Once every other buffered record is handed over: of each recType with records in
    /// doubt, the one refused longest ago is sent alone, so that a hub that takes records
    /// again is found with no new record to tell, and one refused for itself does not hide
    /// the others (its next refusal makes another the oldest). Not while the recType is
    /// parked (after a refusal) nor while its probe is out.
    fn probe(&mut self, now: Instant) -> Result<(), BufferError> {
        let now_ms = self.now_ms(now);
        for (seq, rec_type) in self.doubts.probes() {
            if self.window_full() {
                break;
            }
            // One waiting in memory goes from there ([`Ledger::send_unbuffered`]).
            if self.in_flight.contains_key(&seq)
                || self.waiting.contains_key(&seq)
                || self.health.is_parked(&rec_type, now)
            {
                continue;
            }
            match self
                .buffer
                .next(seq.checked_sub(1), 1, u64::MAX, now)?
                .pop()
            {
                Some((at, record)) if at == seq => {
                    if self.expired(seq, record.created_ms, now_ms) {
                        self.expire(seq, &record);
                        self.doubts.forget(seq);
                        self.buffer.remove(seq)?;
                    } else if !self.send_buffered(seq, record, now) {
                        break;
                    }
                }
                // It left the buffer; nothing read (a read error) says nothing.
                Some(_) => self.doubts.forget(seq),
                None => {}
            }
        }
        Ok(())
    }

    /// Hand buffered record `seq` to the sink; `false` when the drain is to stop (the sink
    /// failed as a whole, or a dead letter waits for the disk).
    fn send_buffered(&mut self, seq: u64, record: Record, now: Instant) -> bool {
        match self.sink.send(seq, &record) {
            Ok(()) => {
                self.track(seq, record, Vec::new(), true, now);
                true
            }
            Err(SinkError::Reject(e)) => {
                self.doubts.forget(seq);
                self.reject(seq, &record, &e, Vec::new(), true)
            }
            Err(e) => {
                self.failed(&e, &record.rec_type, now, now);
                self.health.ready(now)
            }
        }
    }

    /// `record` is older than `max_age`: dropped, counted.
    fn expire(&self, #[cfg_attr(not(test), allow(unused_variables))] seq: u64, record: &Record) {
        #[cfg(test)]
        self.buffer.note_drop(seq, || record.id.clone());
        self.metrics.dropped_expired.inc();
        self.metrics.problem("expired", || {
            format!(
                "record {} of {} is older than max_age: dropped",
                record.id, record.key
            )
        });
    }

    /// The end of a round: waiting records into the buffer, a flush for all of it (and for
    /// deletions, often enough) unless one runs, the acknowledgements of a flush that is
    /// done, then the drain.
    pub fn end_round(&mut self, now: Instant) -> Result<(), BufferError> {
        self.store_waiting(now, false);
        self.commit(now, false)?;
        self.drain(now)?;
        self.send_unbuffered(now);
        Ok(())
    }

    /// Records the buffer refused to write (a disk error: a card whose data blocks fail,
    /// every segment alike) go to the sink straight from memory while it confirms, as they
    /// would have with nothing buffered: each is acknowledged on its confirmation, never
    /// before, and input is taken again. Each device's order holds: they go oldest first,
    /// and only once the drain has handed every buffered record (all older) to the sink;
    /// a parked recType's are passed over, as the drain passes over its buffered ones. Those
    /// wait in memory, unacknowledged, without holding input while they are all that waits
    /// and within the in-flight bounds (`max_in_flight`, `max_in_flight_bytes`); past them
    /// input is held, as it is while the sink does not confirm: the problem `input_held`.
    /// A full window or a backlog the drain is still handing over holds input too, as
    /// backpressure that passes by itself. One older than `max_age` is dropped, as the drain
    /// drops a buffered one. Still in flight, they go into the buffer if a later write works
    /// (the spill mark covers them).
    fn send_unbuffered(&mut self, now: Instant) {
        self.parked_aside = 0;
        if self.refusing.is_none() || self.waiting.is_empty() {
            return;
        }
        if !self.healthy(now) {
            let held = self.waiting.len();
            self.metrics.problem("input_held", || {
                format!(
                    "the buffer refuses writes and the sink is not confirming: {held} record(s) held in memory, unacknowledged; no input is taken (MQTT waits; serial and UDP frames past the frame queue are lost)"
                )
            });
            return;
        }
        if self.health.unpark_expired(now) {
            // As in the drain, which may not have run (a dead letter waiting for the disk):
            // the cursor passed over the buffered records of a recType whose park ran out,
            // and they go before its records here.
            self.drain_cursor = None;
        }
        let drained = match self.buffer.newest_seq() {
            Ok(newest) => newest.is_none_or(|n| self.drain_cursor.is_some_and(|c| c >= n)),
            Err(e) => {
                self.metrics.problem("buffer_read_error", || {
                    format!("cannot read the buffer's newest record: {e}; records the buffer refuses wait in memory")
                });
                false
            }
        };
        if !drained {
            return;
        }
        let now_ms = self.now_ms(now);
        let mut sent = 0;
        let mut next = self.waiting.first_key_value().map(|(&seq, _)| seq);
        let mut handed_all = true;
        while let Some(seq) = next {
            next = (self.waiting.range(seq + 1..).next()).map(|(&s, _)| s);
            if self.window_full() || !self.healthy(now) {
                handed_all = false;
                break;
            }
            if (self.health).is_parked(&self.waiting[&seq].record.rec_type, now)
                || self.doubts.held(seq).is_some()
            {
                continue;
            }
            sent += usize::from(self.send_waiting(seq, now_ms, now));
        }
        if handed_all && !self.doubts.is_empty() {
            // As the drain's probes ([`Ledger::probe`]), from memory.
            for (seq, rec_type) in self.doubts.probes() {
                if !self.waiting.contains_key(&seq) {
                    continue;
                }
                if self.window_full() || !self.healthy(now) {
                    break;
                }
                if !self.health.is_parked(&rec_type, now) {
                    sent += usize::from(self.send_waiting(seq, now_ms, now));
                }
            }
        }
        if sent > 0 {
            self.metrics.problem("buffer_bypassed", || {
                format!(
                    "the buffer refuses writes: {sent} record(s) sent to the sink from memory, acknowledged once it confirms them"
                )
            });
        }
        self.set_parked_aside(now);
    }

    /// Record `seq`, waiting in memory, to the sink (or dropped, if older than `max_age`);
    /// true when the sink took it.
    fn send_waiting(&mut self, seq: u64, now_ms: u64, now: Instant) -> bool {
        let Waiting { record, acks } = self.waiting.remove(&seq).expect("a waiting record");
        if self.expired(seq, record.created_ms, now_ms) {
            self.expire(seq, &record);
            self.doubts.forget(seq);
            self.settled_with_flush(seq);
            self.hold(None, kept_if(false, acks));
            return false;
        }
        match self.sink.send(seq, &record) {
            Ok(()) => {
                self.track(seq, record, acks, false, now);
                true
            }
            Err(SinkError::Reject(e)) => {
                self.doubts.forget(seq);
                self.reject(seq, &record, &e, acks, false);
                false
            }
            // Parked now (its hub missing), the others go on; a failure of the whole sink
            // stops them (`healthy`).
            Err(e) => {
                self.failed(&e, &record.rec_type, now, now);
                self.waiting.insert(seq, Waiting { record, acks });
                false
            }
        }
    }

    /// After [`Ledger::send_unbuffered`]: if only records of parked recTypes (or held in
    /// doubt) wait, within
    /// the in-flight bounds, they no longer hold input; past the bounds, `input_held` says
    /// which recTypes hold it.
    fn set_parked_aside(&mut self, now: Instant) {
        let mut types = BTreeSet::new();
        let (mut bytes, mut before_last) = (0, 0);
        for (&seq, w) in &self.waiting {
            if !self.health.is_parked(&w.record.rec_type, now) && self.doubts.held(seq).is_none() {
                return;
            }
            types.insert(w.record.rec_type.as_str());
            before_last = bytes;
            bytes += size(&w.record);
        }
        let held = self.waiting.len();
        // As the window: the record that crosses the byte bound is still set aside, so one
        // larger than it is set aside alone.
        if held <= self.max_in_flight && before_last < self.max_in_flight_bytes {
            self.parked_aside = held;
            return;
        }
        let types = types.into_iter().collect::<Vec<_>>().join(", ");
        self.metrics.problem("input_held", || {
            format!(
                "the buffer refuses writes and the hub of {types} is missing (parked): {held} record(s), {bytes} bytes, held in memory, unacknowledged, past the in-flight bounds; no input is taken (MQTT waits; serial and UDP frames past the frame queue are lost)"
            )
        });
    }

    /// At a stop, before the sink's last wait: what waits for the buffer (frames taken at
    /// the stop among it) is tried there at once, so a card refusing for the first time now
    /// is found before the wait; records the buffer refuses go to the sink from memory, as
    /// at a round's end ([`Ledger::send_unbuffered`]).
    pub fn send_refused(&mut self, now: Instant) {
        self.store_waiting(now, true);
        self.send_unbuffered(now);
    }

    /// Group commit. Take the outcome of the running flush, if it is done; with none running,
    /// start one if anything was written (or with `force`, or for deletions due a sync): the
    /// acknowledgements waiting so far are released when it is done. With nothing written
    /// since the last flush that worked and none running, they are released at once. With
    /// `force` (shutdown), wait for the flushes. A failed file sync is the error: nothing
    /// written can be trusted to be on disk any more, and nothing waiting is released.
    pub fn commit(&mut self, now: Instant, force: bool) -> Result<(), BufferError> {
        let committed = self.group_commit(now, force);
        self.show_unsynced();
        committed
    }

    fn group_commit(&mut self, now: Instant, force: bool) -> Result<(), BufferError> {
        self.buffer.update_oldest_if_due(now);
        // Once a commit, and not while flushes fail: a failing disk is not written to in a
        // loop. What the disk takes now is made durable by the flush that follows. No new
        // frames: each session's refused ones are taken from `unsaved`.
        if !self.flush_failing && !self.unsaved.is_empty() {
            let retries = self.unsaved.keys().map(|&session| (session, Vec::new()));
            self.keep_fcnts(retries.collect());
        }
        self.take_flush_outcome(force)?;
        if self.buffer.flushing() {
            return Ok(());
        }
        if self.dirty || force || self.buffer.sync_due(now) {
            self.flush(now, force)?;
            // At shutdown, the frame counters that flush let go are made durable too.
            if force && self.dirty {
                self.flush(now, force)?;
            }
        } else {
            Self::release(&self.metrics, &mut self.pending_acks);
            let fcnts = std::mem::take(&mut self.pending_fcnts);
            self.release_fcnts(fcnts);
        }
        Ok(())
    }

    /// Start a flush for what was written (with `wait`, and take its outcome).
    fn flush(&mut self, now: Instant, wait: bool) -> Result<(), BufferError> {
        self.buffer.start_flush(now);
        self.syncing_acks.append(&mut self.pending_acks);
        self.syncing_fcnts.append(&mut self.pending_fcnts);
        self.dirty = false;
        self.take_flush_outcome(wait)
    }

    /// The running flush's outcome, if it is done (with `wait`, once it is).
    fn take_flush_outcome(&mut self, wait: bool) -> Result<(), BufferError> {
        let Some(outcome) = self.buffer.flush_outcome(wait) else {
            return Ok(());
        };
        self.flush_failing = outcome.is_err();
        let Err(e) = outcome else {
            Self::release(&self.metrics, &mut self.syncing_acks);
            let fcnts = std::mem::take(&mut self.syncing_fcnts);
            // Durable with the next flush, which this asks for.
            self.dirty |= !fcnts.is_empty();
            self.release_fcnts(fcnts);
            return Ok(());
        };
        // Nothing is acknowledged until a flush succeeds; the sources keep their copies.
        self.dirty = true;
        self.syncing_acks.append(&mut self.pending_acks);
        self.pending_acks = std::mem::take(&mut self.syncing_acks);
        self.syncing_fcnts.append(&mut self.pending_fcnts);
        self.pending_fcnts = std::mem::take(&mut self.syncing_fcnts);
        if let BufferError::SyncFailed(_) | BufferError::Reopen(_) = e {
            // Every later flush fails the same way: the round ends with the error.
            return Err(e);
        }
        // A full disk, a refused write: tried again at the next round or tick.
        self.metrics.problem("buffer_write_error", || {
            format!("cannot flush the buffer: {e}; holding acknowledgements")
        });
        Ok(())
    }

    /// `hubgate_buffer_state_unsynced`: 1 from a frame's take until its counter is kept, while
    /// a change of the buffer's state waits for a flush that succeeds, and while a session's
    /// last kept frames are not on disk (`unsaved`). Set at the take, at every commit (a
    /// failed one too), and at each reading of the clock, which may keep one. A delivery
    /// keeps counters too, only of frames taken before: the gauge was 1 and stays 1 until the
    /// commit of their flush.
    fn show_unsynced(&self) {
        let unsynced =
            !self.taken.is_empty() || !self.unsaved.is_empty() || self.buffer.state_unsynced();
        self.metrics.buffer_state_unsynced.set(u64::from(unsynced));
    }

    fn release(metrics: &Metrics, acks: &mut Vec<(Option<u64>, Ack)>) {
        for (_, ack) in acks.drain(..) {
            send(metrics, ack);
        }
    }

    /// When the buffer's running flush started (`None`: none runs).
    pub fn flush_started(&self) -> Option<Instant> {
        self.buffer.flush_started()
    }

    /// Notified when a flush that ran beside the forwarder is done.
    pub fn flush_done(&self) -> Arc<tokio::sync::Notify> {
        self.buffer.flush_done()
    }

    /// Records that could not be buffered (or dead-lettered) at shutdown (their sources were
    /// not acknowledged).
    pub fn unbuffered(&self) -> usize {
        self.waiting.len()
            + self.unwritten.values().filter(|l| !l.buffered).count()
            + self.in_flight.values().filter(|f| !f.in_buffer).count()
    }
}

/// When `at` was by the time since boot, in ms, given that it was `up` at `now`.
fn boot_ms_at(at: Instant, (now, up): (Instant, Duration)) -> Option<u64> {
    let then = match at.checked_duration_since(now) {
        Some(after) => up.checked_add(after),
        None => up.checked_sub(now.duration_since(at)),
    };
    then.map(|t| t.as_millis() as u64)
}

/// Send `ack` and count what came of it: an acknowledgement its source could no longer
/// take is not counted as acknowledged (the broker delivers that message again).
fn send(metrics: &Metrics, ack: Ack) {
    match ack.send() {
        Sent::Acked => metrics.acked.inc(),
        Sent::Failed => metrics.acks_failed.inc(),
        Sent::Waiting => {}
    }
}

/// `acks` of an input of which a durable record (or dead letter) was `made`; without one, a
/// retained message's fingerprint is not kept ([`Ack::without_retained`]).
fn kept_if(made: bool, acks: Vec<Ack>) -> Vec<Ack> {
    if made {
        acks
    } else {
        acks.into_iter().map(Ack::without_retained).collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::buffer::{MemoryStore, Store};
    use crate::lorawan::accepted;
    use crate::lorawan::fcnt::COPY_WINDOW;

    /// A sink that confirms each record at once, with the bytes the stdout sink would write
    /// for it (the body and a newline), and prints nothing: the tests' output stays readable.
    pub(in crate::pipeline) struct Confirming(pub(in crate::pipeline) crate::sink::Deliveries);

    impl Sink for Confirming {
        fn send(&mut self, seq: u64, rec: &Record) -> Result<(), crate::sink::SinkError> {
            let result = Ok(rec.body.len() as u64 + 1);
            let _ = self.0.send(Delivery { seq, result });
            Ok(())
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// An MQTT acknowledgement of packet `pkid`, and where it goes once released.
    fn puback(
        pkid: u16,
    ) -> (
        Ack,
        tokio::sync::mpsc::UnboundedReceiver<crate::source::PubAck>,
    ) {
        let (ack, pubacks) = pubacks();
        (ack(pkid), pubacks)
    }

    /// Acknowledgements of several inputs, handed back on one channel.
    pub(in crate::pipeline) fn pubacks() -> (
        impl Fn(u16) -> Ack,
        tokio::sync::mpsc::UnboundedReceiver<crate::source::PubAck>,
    ) {
        let (acks, pubacks) = tokio::sync::mpsc::unbounded_channel();
        let ack = move |pkid| Ack::Mqtt {
            acks: acks.clone(),
            ack: crate::source::PubAck {
                connection: 0,
                qos: rumqttc::QoS::AtLeastOnce,
                pkid,
                retained: None,
            },
        };
        (ack, pubacks)
    }

    pub(in crate::pipeline) fn confirming_ledger(
        cfg: &BufferConfig,
        buffer: Buffer,
        metrics: &Arc<Metrics>,
        now: (Instant, SystemTime),
    ) -> (Ledger, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
        ledger_to(cfg, buffer, metrics, now, |tx| Box::new(Confirming(tx)))
    }

    /// A ledger over `buffer` sending to the sink `sink` makes of a report channel, and the
    /// sink's reports.
    fn ledger_to(
        cfg: &BufferConfig,
        buffer: Buffer,
        metrics: &Arc<Metrics>,
        now: (Instant, SystemTime),
        sink: impl FnOnce(crate::sink::Deliveries) -> Box<dyn Sink>,
    ) -> (Ledger, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let ledger = Ledger::new(cfg, 16, buffer, sink(tx), metrics.clone(), now, 1).unwrap();
        (ledger, reports)
    }

    fn record(n: u32) -> Record {
        Record {
            id: format!("id-{n}"),
            rec_type: "t".into(),
            key: "k".into(),
            created_ms: 1,
            body: "{}".into(),
        }
    }

    /// A record of a parked recType that the drain passed over while the park ran is sent
    /// once the recType flows again, in its order, also when a delivery of the recType (a
    /// record sent before the park began, its hub created meanwhile) ends the park before
    /// it runs out: not left in the buffer behind newer records until a restart.
    #[test]
    fn a_record_passed_over_while_parked_is_sent_when_a_success_ends_the_park() {
        let cfg = BufferConfig::default();
        let (mut ledger, mut reports, metrics, t0) = memory_ledger(&cfg);
        let record = |n| Record {
            created_ms: ms_since_epoch(SystemTime::now()),
            ..record(n)
        };
        // Two records of "t" go to the sink straight from memory.
        ledger.take(vec![record(0)], Counters::default(), Ack::None, t0);
        ledger.take(vec![record(1)], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        let first = reports.try_recv().unwrap();
        let second = reports.try_recv().unwrap();
        assert_eq!((first.seq, second.seq), (0, 1));
        // The hub is missing for the first (it goes into the buffer, "t" is parked) ...
        let missing = crate::sink::refusal::Setup::default().missing("t");
        let parked = Delivery {
            seq: 0,
            result: Err(SinkError::Park(missing)),
        };
        ledger.delivered(parked, t0).unwrap();
        ledger.end_round(t0).unwrap();
        assert_eq!(ledger.buffered(), 1);
        let last_delivery = || metrics.last_delivery_at.age(t0);
        assert_eq!(last_delivery(), None, "a refusal is no delivery");
        // ... and the hub took the second (created meanwhile): "t" flows again.
        ledger.delivered(second, t0).unwrap();
        assert!(
            last_delivery().is_some_and(|age| age < Duration::from_millis(1)),
            "delivered just now: {:?}",
            last_delivery()
        );
        // A new record of "t" comes, behind the buffered one, and goes.
        ledger.take(vec![record(2)], Counters::default(), Ack::None, t0);
        let mut sent = Vec::new();
        for s in 0..600u64 {
            let now = t0 + Duration::from_secs(s);
            ledger.tick(now);
            ledger.end_round(now).unwrap();
            while let Ok(d) = reports.try_recv() {
                sent.push(d.seq);
                ledger.delivered(d, now).unwrap();
            }
        }
        assert_eq!(
            (sent.clone(), ledger.buffered()),
            (vec![0, 2], 0),
            "sent {sent:?}; {} record(s) left in the buffer for 10 minutes, delivered {:?}",
            ledger.buffered(),
            metrics.delivered.get("t")
        );
    }

    /// A ledger over a buffer holding a record of each of `rec_types` (numbered from 0,
    /// created now), with a `spill_after` longer than any park, so records in flight do not
    /// hold the drain back; its sink's reports, and when it started.
    fn buffered_ledger(
        rec_types: &[&str],
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Instant,
    ) {
        let metrics = Metrics::new();
        let cfg = BufferConfig {
            spill_after: Duration::from_secs(60),
            ..BufferConfig::default()
        };
        let mut buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        for (n, rec_type) in (0..).zip(rec_types) {
            let r = Record {
                rec_type: (*rec_type).into(),
                created_ms: ms_since_epoch(now.1),
                ..record(n)
            };
            buffer.push(u64::from(n), &r).unwrap();
        }
        let (ledger, reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        (ledger, reports, now.0)
    }

    /// The records a round at `at` hands to the sink (their reports are not given back).
    fn handed_in_round(
        ledger: &mut Ledger,
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        at: Instant,
    ) -> Vec<u64> {
        ledger.end_round(at).unwrap();
        let mut seqs = Vec::new();
        while let Ok(d) = reports.try_recv() {
            seqs.push(d.seq);
        }
        seqs
    }

    /// When a park runs out the drain looks at the buffer again from its oldest record, but
    /// buffered records of other recTypes already in flight are not handed to the sink a
    /// second time: each would be a duplicate in its hub.
    #[test]
    fn a_park_running_out_sends_no_buffered_record_in_flight_again() {
        let (mut ledger, mut reports, t0) = buffered_ledger(&["t", "u", "u"]);
        ledger.park("t", crate::sink::refusal::Setup::default().missing("t"), t0);
        let handed = handed_in_round(&mut ledger, &mut reports, t0);
        assert_eq!(handed, [1, 2], "\"t\" is parked");
        // The park has run out; 1 and 2 are still in flight, unconfirmed.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(handed_in_round(&mut ledger, &mut reports, later), [0]);
    }

    /// A buffered record whose refusal comes in after the park it belongs to has run out (it
    /// was sent before the park began) is sent again at once: the drain had passed it, and
    /// nothing else would bring the drain back to it while the sink keeps taking records.
    #[test]
    fn a_buffered_record_refused_after_its_park_ran_out_is_sent_again() {
        let (mut ledger, mut reports, t0) = buffered_ledger(&["t", "t"]);
        let refused = |seq| Delivery {
            seq,
            result: Err(SinkError::Park(
                crate::sink::refusal::Setup::default().missing("t"),
            )),
        };
        assert_eq!(handed_in_round(&mut ledger, &mut reports, t0), [0, 1]);
        // The hub is missing: "t" is parked for at most a second.
        ledger
            .delivered(refused(0), t0 + Duration::from_millis(500))
            .unwrap();
        let later = t0 + Duration::from_secs(2);
        let handed = handed_in_round(&mut ledger, &mut reports, later);
        assert_eq!(handed, [0], "the park ran out; 1 is in flight");
        // 1's refusal, sent before the park began, comes in now.
        ledger.delivered(refused(1), later).unwrap();
        assert_eq!(handed_in_round(&mut ledger, &mut reports, later), [1]);
    }

    /// A restart's ledger with records 0 to 2 in the buffer, their recType parked so the
    /// drain leaves the buffer as it is.
    fn three_buffered_held_back(
        metrics: &Arc<Metrics>,
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Instant,
    ) {
        let cfg = BufferConfig::default();
        let mut buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        for n in 0..3 {
            buffer.push(u64::from(n), &record(n)).unwrap();
        }
        let now = (Instant::now(), SystemTime::now());
        let (mut ledger, rx) = confirming_ledger(&cfg, buffer, metrics, now);
        ledger.park(
            "t",
            crate::sink::refusal::Setup::default().missing("t"),
            now.0,
        );
        (ledger, rx, now.0)
    }

    /// An MQTT redelivery, after a restart, of a record already buffered is acknowledged
    /// (after the first flush) and not buffered a second time.
    #[test]
    fn a_redelivery_of_a_buffered_record_is_not_buffered_again() {
        let metrics = Metrics::new();
        let (mut ledger, _rx, now) = three_buffered_held_back(&metrics);
        let (ack, mut pubacks) = puback(7);
        ledger.take(vec![record(2)], Counters::default(), ack, now);
        ledger.end_round(now).unwrap();
        assert_eq!(metrics.duplicates.get(), 1);
        assert_eq!(ledger.buffered(), 3);
        assert_eq!(pubacks.try_recv().unwrap().pkid, 7);
    }

    /// At shutdown, too, a copy (of a record buffered before the restart, or of one taken in
    /// this run) is acknowledged with its first and not buffered a second time.
    #[test]
    fn copies_taken_at_shutdown_are_not_buffered_again() {
        let metrics = Metrics::new();
        let (mut ledger, _rx, now) = three_buffered_held_back(&metrics);
        let (ack, mut pubacks) = pubacks();
        ledger.take_to_buffer(vec![record(2)], Counters::default(), ack(7), Instant::now());
        ledger.take_to_buffer(vec![record(5)], Counters::default(), ack(8), Instant::now());
        ledger.take_to_buffer(vec![record(5)], Counters::default(), ack(9), Instant::now());
        ledger.take_to_buffer(
            vec![record(6)],
            Counters::default(),
            ack(10),
            Instant::now(),
        );
        ledger.end_round(now).unwrap();
        assert_eq!(metrics.duplicates.get(), 2);
        assert_eq!(ledger.buffered(), 5);
        assert_eq!(pkids(&mut pubacks), [7, 8, 9, 10]);
    }

    /// While the sink keeps up, a source that can wait is held back when the window is full,
    /// so a backlog goes from memory to the sink and nothing is written to the buffer; a
    /// source that cannot wait is still taken (and spilled); a sink that has not confirmed
    /// within `spill_after` gets the buffer again.
    #[test]
    fn a_full_window_holds_back_a_source_that_can_wait_instead_of_spilling() {
        let cfg = BufferConfig {
            max_in_flight: 4,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        let t0 = Instant::now();
        let now = (t0, SystemTime::now());
        let (mut ledger, mut reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let mut confirmed = Vec::new();
        for n in 0..100 {
            while !ledger.takes_patient(t0) {
                let d = reports
                    .try_recv()
                    .expect("a full window has reports to give");
                confirmed.push(d.seq);
                ledger.delivered(d, t0).unwrap();
            }
            ledger.take(vec![record(n)], Counters::default(), Ack::None, t0);
            ledger.end_round(t0).unwrap();
            assert!(ledger.held() <= cfg.max_in_flight);
        }
        assert_eq!(metrics.spilled.get(), 0, "nothing written to the buffer");
        assert_eq!(confirmed, (0..confirmed.len() as u64).collect::<Vec<_>>());
        assert_eq!(confirmed.len(), 100 - cfg.max_in_flight);

        assert!(!ledger.takes_patient(t0));
        ledger.take(vec![record(100)], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        // Spilled with the older records in flight (the buffer is filled oldest first).
        let spilled = cfg.max_in_flight as u64 + 1;
        assert_eq!(
            (metrics.spilled.get(), ledger.buffered()),
            (spilled, spilled),
            "a source that cannot wait is taken and spilled"
        );
        assert!(
            ledger.takes_patient(t0 + cfg.spill_after),
            "a slow sink gets the buffer again"
        );
    }

    /// The in-flight window is bounded in bytes as well as in records: a source that can wait
    /// is held back once the records in flight take `max_in_flight_bytes`, the record that
    /// crosses the bound still going; one larger than the bound goes alone.
    #[test]
    fn the_window_is_bounded_in_bytes_too() {
        let one = size(&record(0));
        let cfg = BufferConfig {
            max_in_flight: 100,
            max_in_flight_bytes: 3 * one,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        let t0 = Instant::now();
        let now = (t0, SystemTime::now());
        let (mut ledger, mut reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let mut n = 0;
        while ledger.takes_patient(t0) {
            ledger.take(vec![record(n)], Counters::default(), Ack::None, t0);
            ledger.end_round(t0).unwrap();
            n += 1;
        }
        assert_eq!((n, ledger.held()), (3, 3), "three records' worth in flight");
        assert_eq!(ledger.in_flight_bytes, 3 * one);
        // Each delivery gives its record's bytes back, and a record taken fills the window
        // again.
        ledger.delivered(reports.try_recv().unwrap(), t0).unwrap();
        assert_eq!(ledger.in_flight_bytes, 2 * one);
        assert!(ledger.takes_patient(t0));
        ledger.take(vec![record(n)], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert!(
            !ledger.takes_patient(t0),
            "three records' worth in flight again"
        );
        while let Ok(d) = reports.try_recv() {
            ledger.delivered(d, t0).unwrap();
        }
        assert_eq!(ledger.in_flight_bytes, 0);

        let large = Record {
            body: "x".repeat(10 * one as usize),
            ..record(99)
        };
        ledger.take(vec![large], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert!(!ledger.takes_patient(t0), "alone in the window");
        assert_eq!(
            (ledger.held(), metrics.spilled.get()),
            (1, 0),
            "sent, not spilled"
        );

        let zero = BufferConfig {
            max_in_flight_bytes: 0,
            ..cfg
        };
        let buffer = Buffer::new(Box::new(MemoryStore::default()), &zero, metrics.clone());
        let (mut ledger, _reports) = confirming_ledger(&zero, buffer, &metrics, now);
        assert!(
            ledger.takes_patient(t0),
            "a bound of 0 still lets one record go"
        );
        ledger.take(vec![record(0)], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert_eq!((ledger.held(), metrics.spilled.get()), (1, 0));
    }

    /// The forwarder ticks seldom while the ledger is quiet, so it is quiet only while a tick
    /// has nothing to do: not with an acknowledgement held for the round's end, a record in
    /// flight, or a drained buffer that has yet to sync and give its space back.
    #[test]
    fn quiet_only_while_a_tick_has_nothing_to_do() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        let t0 = Instant::now();
        let now = (t0, SystemTime::now());
        let (mut ledger, mut reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        assert!(ledger.quiet());

        let (ack, _pubacks) = pubacks();
        ledger.take(Vec::new(), Counters::default(), ack(1), t0);
        assert!(
            !ledger.quiet(),
            "an acknowledgement waits for the round's end"
        );
        ledger.end_round(t0).unwrap();
        assert!(ledger.quiet());

        ledger.take(vec![record(1)], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert!(!ledger.quiet(), "in flight");
        ledger.delivered(reports.try_recv().unwrap(), t0).unwrap();
        ledger.end_round(t0).unwrap();
        assert!(ledger.quiet());

        ledger.take(vec![record(2)], Counters::default(), Ack::None, t0);
        let late = t0 + cfg.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        assert_eq!(ledger.buffered(), 1, "spilled: the sink was slow");
        ledger.delivered(reports.try_recv().unwrap(), late).unwrap();
        ledger.end_round(late).unwrap();
        assert!(!ledger.quiet(), "drained: its space is given back later");
        ledger.tick(late);
        let later = late + Duration::from_secs(5);
        ledger.tick(later);
        ledger.end_round(later).unwrap();
        assert!(ledger.quiet());
    }

    /// A failed file sync ends the round with the error (the forwarder stops, and with it the
    /// agent): the acknowledgements that waited for the flush are not released, and the
    /// flush is not tried again, as a refused write's is.
    #[test]
    fn a_failed_sync_is_the_rounds_error_and_acknowledges_nothing() {
        let cfg = BufferConfig::default();
        let store = MemoryStore::default();
        store.set_sync_fails(true);
        let (mut ledger, _reports, metrics, t0) = store_ledger(&cfg, &store);
        let (ack, mut pubacks) = puback(7);
        ledger.take_to_buffer(vec![record(1)], Counters::default(), ack, Instant::now());
        let e = ledger.end_round(t0).unwrap_err();
        assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
        assert_eq!(metrics.acked.get(), 0);
        assert!(pubacks.try_recv().is_err(), "acknowledged");
    }

    /// Nor while something waits for the disk: a flush that failed (tried again each tick,
    /// the acknowledgements held), a frame counter to sync, records that found no room in the
    /// buffer; nor while the buffer's oldest record left and the next one's age is to be
    /// looked up (the buffer still holds records then).
    #[test]
    fn not_quiet_while_something_waits_for_the_disk() {
        let cfg = BufferConfig {
            when_full: crate::config::WhenFull::Block,
            ..BufferConfig::default()
        };
        let (mut ledger, mut reports, metrics, store, t0) = flush_fails_ledger(&cfg);
        let now = (t0, SystemTime::now());
        ledger.end_round(t0).unwrap();
        assert!(!ledger.quiet(), "a failed flush is tried again");
        let dead = Record {
            rec_type: DEAD_LETTER.into(),
            ..record(0)
        };
        ledger.take(vec![dead], Counters::default(), Ack::None, t0);
        ledger.tick(t0);
        ledger.end_round(t0).unwrap();
        assert!(!ledger.quiet(), "it failed again");
        store.set_flush_fails(false);
        // Ticks at `t` and 5 s later: the buffer's housekeeping is done by then.
        let settled = |ledger: &mut Ledger, t: Instant| {
            for t in [t, t + Duration::from_secs(5)] {
                ledger.tick(t);
                ledger.end_round(t).unwrap();
            }
            ledger.quiet()
        };
        assert!(settled(&mut ledger, t0), "flushed");

        let eui = DevEui([1; 8]);
        let frame = accepted((DevAddr(1), eui), 7, [7; 4], None);
        ledger.keep_fcnts(vec![((DevAddr(1), eui), vec![frame])]);
        ledger.end_round(t0).unwrap();
        assert!(!ledger.quiet(), "a frame counter waits for its sync");
        assert!(settled(&mut ledger, Instant::now()));

        // Spilled by a slow sink, then the oldest is confirmed and leaves.
        for n in 1..=2 {
            ledger.take(vec![record(n)], Counters::default(), Ack::None, t0);
        }
        let late = t0 + cfg.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        assert_eq!(ledger.buffered(), 2);
        ledger.delivered(reports.try_recv().unwrap(), late).unwrap();
        ledger.end_round(late).unwrap();
        assert!(!ledger.quiet(), "the next oldest's age is to be looked up");
        ledger.delivered(reports.try_recv().unwrap(), late).unwrap();
        assert!(settled(&mut ledger, late));

        // No room in the buffer (the disk is full): the record waits in memory, its source
        // unacknowledged.
        let disk_full = MemoryStore::with_disk_free(10);
        let buffer = Buffer::new(Box::new(disk_full), &cfg, metrics.clone());
        let (mut ledger, _reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let missing = crate::sink::refusal::Setup::default().missing("t");
        ledger.park("t", missing, t0);
        ledger.take(vec![record(3)], Counters::default(), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert_eq!((ledger.held(), ledger.buffered()), (1, 0));
        assert!(!ledger.accepting());
        assert!(!ledger.quiet(), "a record waits for room in the buffer");
    }

    /// `block` and a record larger than `max_bytes`: in flight, it stays unacknowledged until
    /// its sink confirms it (spilling it would acknowledge a record held only in memory);
    /// waiting for a parked hub, which it reaches only through the buffer, it is dropped and
    /// counted, and newer records are buffered behind it.
    #[test]
    fn block_acknowledges_a_record_larger_than_the_buffer_only_when_delivered() {
        let (mut ledger, mut reports, metrics, t0) =
            small_buffer_ledger(crate::config::WhenFull::Block);
        let (ack, mut pubacks) = puback(7);
        ledger.take(
            vec![larger_than_the_buffer(1)],
            Counters::default(),
            ack,
            t0,
        );
        let late = t0 + ledger.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        assert!(pubacks.try_recv().is_err(), "acknowledged before delivery");
        assert_eq!((metrics.dropped_full.get(), ledger.buffered()), (0, 0));
        ledger.delivered(reports.try_recv().unwrap(), late).unwrap();
        ledger.end_round(late).unwrap();
        assert_eq!(pubacks.try_recv().unwrap().pkid, 7);
        assert_eq!(metrics.dropped_full.get(), 0);

        ledger.park(
            "t",
            crate::sink::refusal::Setup::default().missing("t"),
            late,
        );
        let (ack, mut pubacks) = puback(8);
        ledger.take(
            vec![larger_than_the_buffer(2)],
            Counters::default(),
            ack,
            late,
        );
        ledger.take(vec![record(3)], Counters::default(), Ack::None, late);
        ledger.end_round(late).unwrap();
        assert_eq!(pubacks.try_recv().unwrap().pkid, 8);
        assert_eq!((metrics.dropped_full.get(), ledger.buffered()), (1, 1));
    }

    /// Under `drop_oldest` a record larger than the buffer, in flight past `spill_after`, is
    /// dropped as before, so the records after it are buffered and acknowledged instead of
    /// every source waiting for its report; the drop is counted once the sink fails it.
    #[test]
    fn drop_modes_drop_a_record_larger_than_the_buffer_in_flight() {
        let (mut ledger, mut reports, metrics, t0) =
            small_buffer_ledger(crate::config::WhenFull::DropOldest);
        let (ack, mut pubacks) = puback(7);
        ledger.take(
            vec![larger_than_the_buffer(1)],
            Counters::default(),
            ack,
            t0,
        );
        let (ack, mut newer) = puback(8);
        ledger.take(vec![record(2)], Counters::default(), ack, t0);
        let late = t0 + ledger.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        ledger.commit(late, true).unwrap();
        assert_eq!(pubacks.try_recv().unwrap().pkid, 7);
        assert_eq!(newer.try_recv().unwrap().pkid, 8);
        assert_eq!((metrics.dropped_full.get(), ledger.buffered()), (0, 1));
        assert_eq!(ledger.drops_held(), ["id-1"]);
        assert!(ledger.accepting());
        let seq = reports.try_recv().unwrap().seq;
        let failed = Err(SinkError::Retry("throttled".into()));
        ledger
            .delivered(
                Delivery {
                    seq,
                    result: failed,
                },
                late,
            )
            .unwrap();
        assert_eq!((metrics.dropped_full.get(), ledger.buffered()), (1, 1));
    }

    /// Under `drop_oldest`, a record the drain handed to the sink and a newer record then
    /// evicted from the full buffer is logged at once as evicted in flight, but counted as
    /// dropped only once the sink has not confirmed it: the sink failed it, refused it for
    /// good (dead-lettered too), started over without a report on it, or the run stopped
    /// without one. Not when the sink confirms it.
    #[test]
    fn a_record_evicted_while_in_flight_is_dropped_only_if_not_confirmed() {
        let fresh = |n| Record {
            created_ms: ms_since_epoch(SystemTime::now()),
            ..record(n)
        };
        let one = crate::buffer::encode(&fresh(0)).len() as u64;
        let cfg = BufferConfig {
            when_full: crate::config::WhenFull::DropOldest,
            max_bytes: 2 * one,
            ..BufferConfig::default()
        };
        let outcome = |how: &str| {
            let metrics = Metrics::new();
            let mut buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
            let log = crate::buffer::DropLog::default();
            buffer.log_drops(log.clone());
            for n in 0..2 {
                buffer.push(u64::from(n), &fresh(n)).unwrap();
            }
            let t0 = Instant::now();
            let (mut ledger, mut reports) =
                confirming_ledger(&cfg, buffer, &metrics, (t0, SystemTime::now()));
            ledger.end_round(t0).unwrap();
            ledger.take(vec![fresh(2)], Counters::default(), Ack::None, t0);
            ledger.end_round(t0).unwrap();
            assert_eq!(ledger.buffered(), 2, "{how}");
            assert_eq!(ledger.drops_held(), ["id-0"], "{how}");
            assert_eq!(
                metrics.dropped_full.get(),
                0,
                "{how}: counted while in flight"
            );
            let logged = metrics.recent_problems().into_iter().map(|w| w.line);
            assert_eq!(
                logged.collect::<Vec<_>>(),
                [format!(
                    "buffer full ({} bytes, reason buffer_full): dropped oldest record #0 while in flight: counted as dropped unless the sink confirms it",
                    cfg.max_bytes
                )],
                "{how}: the eviction is logged at once"
            );
            let report = reports.try_recv().unwrap();
            assert_eq!(report.seq, 0);
            let failed = |e| Delivery {
                seq: 0,
                result: Err(e),
            };
            match how {
                "confirmed" => ledger.delivered(report, t0).unwrap(),
                "refused for good" => {
                    let refused = failed(SinkError::Reject("too large".into()));
                    ledger.delivered(refused, t0).unwrap();
                    assert_eq!(metrics.sink_errors.get("reject"), Some(1));
                }
                "failed" => {
                    let throttled = failed(SinkError::Retry("throttled".into()));
                    ledger.delivered(throttled, t0).unwrap();
                }
                "sink started over" => ledger.resend_in_flight(),
                "stopped" => ledger.stopped(),
                _ => unreachable!(),
            }
            let named = log.lock().unwrap().clone();
            let held = ledger.held_drops_and_in_flight().0;
            (metrics.dropped_full.get(), named, held)
        };
        assert_eq!(outcome("confirmed"), (0, vec![], 0));
        for how in ["refused for good", "failed", "sink started over", "stopped"] {
            let counted = (1, vec![(0, "id-0".to_owned())], 0);
            assert_eq!(outcome(how), counted, "{how}");
        }
    }

    /// The acknowledgement of retained message `pkid`, with its fingerprint, on `acks`.
    fn retained(
        acks: &tokio::sync::mpsc::UnboundedSender<crate::source::PubAck>,
        pkid: u16,
    ) -> Ack {
        Ack::Mqtt {
            acks: acks.clone(),
            ack: crate::source::PubAck {
                connection: 0,
                qos: rumqttc::QoS::AtLeastOnce,
                pkid,
                retained: Some(crate::source::held::fingerprint("t", &pkid.to_be_bytes())),
            },
        }
    }

    /// A retained message's acknowledgement keeps its fingerprint only when a durable record
    /// was made of its input (a record, a kept dead letter): not for an input of no record,
    /// nor for one dropped (too large for any buffer). The source would otherwise skip the
    /// broker's next delivery of it, and no record would ever be made.
    #[test]
    fn only_an_input_kept_durably_keeps_its_retained_fingerprint() {
        let (mut ledger, _reports, _metrics, t0) =
            small_buffer_ledger(crate::config::WhenFull::DropNewest);
        let (acks, mut pubacks) = tokio::sync::mpsc::unbounded_channel();
        let ack = |pkid| retained(&acks, pkid);
        let letter = Record {
            rec_type: DEAD_LETTER.into(),
            ..record(3)
        };
        ledger.take(vec![record(1)], Counters::default(), ack(1), t0);
        ledger.take(Vec::new(), Counters::default(), ack(2), t0);
        ledger.take(vec![letter], Counters::default(), ack(3), t0);
        ledger.take(
            vec![larger_than_the_buffer(4)],
            Counters::default(),
            ack(4),
            t0,
        );
        let late = t0 + ledger.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        ledger.commit(late, true).unwrap();
        let mut released = Vec::new();
        while let Ok(a) = pubacks.try_recv() {
            released.push((a.pkid, a.retained.is_some()));
        }
        released.sort_unstable();
        assert_eq!(released, [(1, true), (2, false), (3, true), (4, false)]);
        // A copy of the dropped one (its retained delivery after a live one): no more kept.
        ledger.take(
            vec![larger_than_the_buffer(4)],
            Counters::default(),
            ack(5),
            late,
        );
        ledger.end_round(late).unwrap();
        ledger.commit(late, true).unwrap();
        let copy = pubacks.try_recv().expect("the copy acknowledged");
        assert_eq!((copy.pkid, copy.retained.is_some()), (5, false));
    }

    /// A copy of a record the sink confirmed from memory (a second gateway's, the broker's
    /// redelivery) is a copy of a durable record: acknowledged with its retained fingerprint
    /// kept, as the first copy's was, not as a copy of a record that may have been dropped
    /// (whose fingerprint is cleared, so that the broker's next delivery makes a record again).
    #[test]
    fn a_copy_of_a_record_delivered_from_memory_keeps_its_retained_fingerprint() {
        let (mut ledger, mut reports, metrics, t0) = memory_ledger(&BufferConfig::default());
        let (acks, mut pubacks) = tokio::sync::mpsc::unbounded_channel();
        let ack = |pkid| retained(&acks, pkid);
        ledger.take(vec![record(1)], Counters::default(), ack(1), t0);
        ledger.end_round(t0).unwrap();
        let sent = reports.try_recv().unwrap();
        assert_eq!(sent.seq, 0);
        ledger.delivered(sent, t0).unwrap();
        assert_eq!(
            ledger.buffered(),
            0,
            "confirmed from memory, never buffered"
        );
        ledger.take(vec![record(1)], Counters::default(), ack(2), t0);
        ledger.end_round(t0).unwrap();
        let mut released = Vec::new();
        while let Ok(a) = pubacks.try_recv() {
            released.push((a.pkid, a.retained.is_some()));
        }
        assert_eq!(released, [(1, true), (2, true)]);
        assert_eq!(metrics.duplicates.get(), 1);
        assert!(reports.try_recv().is_err(), "the copy is not sent");
    }

    /// A ledger over a 300-byte buffer with `when_full`, the reports of its [`Confirming`]
    /// sink, its metrics, and when it started.
    fn small_buffer_ledger(
        when_full: crate::config::WhenFull,
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<Metrics>,
        Instant,
    ) {
        memory_ledger(&BufferConfig {
            when_full,
            max_bytes: 300,
            ..BufferConfig::default()
        })
    }

    /// A `max_age` past 2^64 milliseconds (built in code: the config refuses over 100 years)
    /// is kept whole, not wrapped to the low 64 bits (`"18446744073709552s"` was 384 ms, and
    /// every buffered, acknowledged record expired).
    #[test]
    fn a_long_max_age_does_not_wrap_to_a_short_one() {
        for secs in [18_446_744_073_709_552u64, 18_446_744_073_709_600] {
            let cfg = BufferConfig {
                max_age: std::time::Duration::from_secs(secs),
                ..BufferConfig::default()
            };
            let (ledger, _reports, _metrics, _t0) = memory_ledger(&cfg);
            let now_ms = ms_since_epoch(SystemTime::now());
            let a_day_old = now_ms - 86_400_000;
            assert!(
                !ledger.expired(0, a_day_old, now_ms),
                "max_age = \"{secs}s\": a record a day old expires (max_age_ms = {})",
                ledger.max_age_ms
            );
        }
    }

    /// While the buffer's flush keeps failing with an error that does not end the run (a
    /// database a failed rebuild left unusable refuses every flush), nothing is acknowledged
    /// and each input adds to what waits for a flush: inputs with nothing to acknowledge (UDP,
    /// serial) add nothing, others are taken up to `max_in_flight` waiting, then input stops
    /// until a flush works, which releases them all.
    #[test]
    fn acknowledgements_held_by_a_failing_flush_stay_bounded() {
        let cfg = BufferConfig::default();
        let (mut ledger, _reports, _metrics, store, t0) = flush_fails_ledger(&cfg);
        for _ in 0..10_000 {
            assert!(ledger.accepting());
            ledger.take(Vec::new(), Counters::default(), Ack::None, t0);
            ledger.end_round(t0).unwrap();
        }
        assert_eq!(ledger.pending_acks.len() + ledger.syncing_acks.len(), 0);
        let (ack, mut pubacks) = pubacks();
        let mut taken = 0;
        while ledger.accepting() {
            assert!(taken < 10_000, "input is still taken");
            ledger.take(Vec::new(), Counters::default(), ack(taken + 1), t0);
            ledger.end_round(t0).unwrap();
            taken += 1;
        }
        assert_eq!(usize::from(taken), cfg.max_in_flight);
        assert!(pubacks.try_recv().is_err(), "acknowledged before a flush");
        store.set_flush_fails(false);
        ledger.end_round(t0).unwrap();
        assert!(ledger.accepting());
        let released = std::iter::from_fn(|| pubacks.try_recv().ok()).count();
        assert_eq!(released, cfg.max_in_flight);
        // With flushes working, a burst of inputs between two flushes is not held back.
        for pkid in 1..=taken + 1 {
            ledger.take(Vec::new(), Counters::default(), ack(pkid), t0);
            assert!(ledger.accepting());
        }
    }

    /// While flushes fail, frame counters waiting for one bound the input as acknowledgements
    /// do: LoRaWAN frames with nothing to acknowledge (UDP, serial) hold no acknowledgement,
    /// but each buffered record's counter waits for a flush, and input stops once
    /// `max_in_flight` of them wait; a flush that works keeps them all and takes input again.
    #[test]
    fn frame_counters_held_by_a_failing_flush_stay_bounded() {
        let cfg = BufferConfig {
            max_in_flight: 4,
            ..BufferConfig::default()
        };
        let (mut ledger, _reports, _metrics, store, t0) = flush_fails_ledger(&cfg);
        let mut taken = 0;
        while ledger.accepting() {
            assert!(taken < 100, "input is still taken");
            let frame = accepted((DevAddr(1), DevEui([1; 8])), taken + 1, [1; 4], None);
            let counters = Counters {
                advanced: vec![frame],
                replayed: None,
            };
            ledger.take_to_buffer(vec![record(taken)], counters, Ack::None, t0);
            ledger.end_round(t0).unwrap();
            taken += 1;
        }
        assert_eq!(taken as usize, cfg.max_in_flight);
        assert_eq!(ledger.pending_fcnts.len(), cfg.max_in_flight);
        assert!(kept_counters(&ledger).is_empty(), "kept before a flush");
        store.set_flush_fails(false);
        ledger.end_round(t0).unwrap();
        assert!(ledger.accepting());
        assert_eq!(kept_counters(&ledger), [taken]);
    }

    /// As [`memory_ledger`], over a store whose flushes fail (returned, to let them work
    /// again) and that holds a dead letter the last run left, which this run has yet to
    /// flush.
    fn flush_fails_ledger(
        cfg: &BufferConfig,
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<Metrics>,
        MemoryStore,
        Instant,
    ) {
        let mut store = MemoryStore::default();
        store.dead_letter(0, Vec::new()).unwrap();
        store.set_flush_fails(true);
        let (ledger, reports, metrics, t0) = store_ledger(cfg, &store);
        (ledger, reports, metrics, store, t0)
    }

    /// A ledger over a memory buffer with `cfg`, the reports of its [`Confirming`] sink, its
    /// metrics, and when it started.
    fn memory_ledger(
        cfg: &BufferConfig,
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<Metrics>,
        Instant,
    ) {
        store_ledger(cfg, &MemoryStore::default())
    }

    /// As [`memory_ledger`], over `store` (a clone of it: the caller keeps a handle that
    /// sees and sets what the buffer's store does).
    fn store_ledger(
        cfg: &BufferConfig,
        store: &MemoryStore,
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<Metrics>,
        Instant,
    ) {
        let metrics = Metrics::new();
        let buffer = Buffer::new(Box::new(store.clone()), cfg, metrics.clone());
        let t0 = Instant::now();
        let (ledger, reports) = confirming_ledger(cfg, buffer, &metrics, (t0, SystemTime::now()));
        (ledger, reports, metrics, t0)
    }

    /// Record `n`, larger than all of [`small_buffer_ledger`]'s buffer.
    fn larger_than_the_buffer(n: u32) -> Record {
        Record {
            body: "x".repeat(400),
            ..record(n)
        }
    }

    /// Frame counter 7 of DevAddr 1 (`replayed`: a copy of that frame refused as a replay).
    fn counter(replayed: bool) -> Counters {
        let kept = accepted((DevAddr(1), DevEui([1; 8])), 7, [7; 4], None);
        match replayed {
            false => Counters {
                advanced: vec![kept],
                replayed: None,
            },
            true => Counters {
                advanced: Vec::new(),
                replayed: Some((kept.dev_addr, kept.fcnt)),
            },
        }
    }

    fn kept_counters(ledger: &Ledger) -> Vec<u32> {
        let kept = ledger.buffer.fcnts().unwrap();
        kept.into_iter().map(|k| k.fcnt).collect()
    }

    /// A frame's counter is kept (and made durable) no earlier than its record: kept while
    /// the record is with the sink unconfirmed, a crash would make the source's redelivery
    /// of the frame a replay after the restart, acknowledged without a record. It is kept
    /// once the sink confirms the record, or with the record when the record is buffered.
    #[test]
    fn a_frame_counter_is_kept_only_once_its_record_is_durable() {
        let cfg = BufferConfig::default();
        let (mut ledger, mut reports, _, t0) = memory_ledger(&cfg);
        ledger.take(vec![record(1)], counter(false), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert!(
            kept_counters(&ledger).is_empty(),
            "its record is not durable"
        );
        ledger.delivered(reports.try_recv().unwrap(), t0).unwrap();
        assert_eq!(kept_counters(&ledger), [7]);

        let (mut ledger, _reports, _, t0) = memory_ledger(&cfg);
        ledger.take(vec![record(2)], counter(false), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        let late = t0 + cfg.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        assert_eq!(ledger.buffered(), 1);
        assert_eq!(kept_counters(&ledger), [7], "buffered with its record");
    }

    /// `hubgate_buffer_state_unsynced` is up from a frame's take until the flush of its
    /// counter has succeeded, its record's delivery included: a kill after the gauge reads 0
    /// finds the counter on disk.
    #[test]
    fn the_unsynced_state_gauge_covers_a_frame_from_its_take_to_its_counters_flush() {
        let cfg = BufferConfig::default();
        let (mut ledger, mut reports, metrics, t0) = memory_ledger(&cfg);
        let gauge = || metrics.buffer_state_unsynced.get();
        ledger.end_round(t0).unwrap();
        assert_eq!(gauge(), 0);
        ledger.take(vec![record(1)], counter(false), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(gauge(), 1, "taken, its record with the sink");
        ledger.delivered(reports.try_recv().unwrap(), t0).unwrap();
        assert_eq!(kept_counters(&ledger), [7]);
        assert_eq!(gauge(), 1, "delivered, its counter not flushed");
        ledger.end_round(t0).unwrap();
        assert_eq!(gauge(), 1, "its flush waits for the second's end");
        let later = t0 + Duration::from_secs(1);
        ledger.end_round(later).unwrap();
        ledger.end_round(later).unwrap();
        assert!(!ledger.buffer.flushing());
        assert_eq!(gauge(), 0);
    }

    /// The gauge is right wherever the state it shows changes, not only at a round's end:
    /// up from the start when the start changed the buffer's state, up once a reading of the
    /// clock is kept and at the take, before the round ends, and down once shutdown's commit
    /// (no round's end) made the counter durable.
    #[test]
    fn the_unsynced_state_gauge_is_set_at_the_start_the_take_and_every_commit() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let gauge = || metrics.buffer_state_unsynced.get();
        let mut buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        buffer.save_fcnt(2, [2; 8], 9, [9; 4], u64::MAX).unwrap();
        let t0 = Instant::now();
        let (mut ledger, _reports) =
            confirming_ledger(&cfg, buffer, &metrics, (t0, SystemTime::now()));
        assert_eq!(
            gauge(),
            1,
            "a change of state at the start, before the first round"
        );
        let later = t0 + Duration::from_secs(1);
        ledger.end_round(later).unwrap();
        assert_eq!(gauge(), 0);
        ledger.clock(true, later, SystemTime::now());
        assert_eq!(
            gauge(),
            1,
            "the clock's first reading kept, before the round's end"
        );
        ledger.end_round(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(gauge(), 0);

        ledger.take(vec![record(1)], counter(false), Ack::None, t0);
        assert_eq!(gauge(), 1, "taken, its round not ended");
        ledger.end_round(t0).unwrap();
        // Shutdown's order: what is in flight into the buffer, then a commit that waits.
        ledger.spill_in_flight(t0);
        ledger.commit(t0, true).unwrap();
        assert_eq!((ledger.buffered(), kept_counters(&ledger)), (1, vec![7, 9]));
        assert_eq!(gauge(), 0, "its counter durable at shutdown");
    }

    /// How a record's frame counter comes to be kept.
    #[derive(Debug, Clone, Copy)]
    enum Settled {
        Delivered,
        Buffered,
        DeadLettered,
    }

    /// A frame counter the disk refused to write keeps the gauge up, whether its record was
    /// delivered, buffered or dead-lettered: a kill would find it not on disk. Another
    /// session's counter kept and synced meanwhile does not lower it. It is written again
    /// once a commit, not while flushes fail, with no later frame of its session (a session
    /// that sends no more would keep the gauge up for good); kept and synced, the gauge is 0.
    /// The refusal is one problem until the counter is written, however many commits try
    /// it again; a refusal after that is another.
    #[test]
    fn a_counter_the_disk_refused_keeps_the_gauge_up_until_it_is_written_again() {
        let cfg = BufferConfig::default();
        let frame = |dev: u8, fcnt: u32| Counters {
            advanced: vec![accepted(
                (DevAddr(dev.into()), DevEui([dev; 8])),
                fcnt,
                [dev; 4],
                None,
            )],
            replayed: None,
        };
        for how in [Settled::Delivered, Settled::Buffered, Settled::DeadLettered] {
            let metrics = Metrics::new();
            let gauge = || metrics.buffer_state_unsynced.get();
            let store = MemoryStore::default();
            let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
            let t0 = Instant::now();
            let t = |s| t0 + Duration::from_secs(s);
            let (mut ledger, mut reports) =
                confirming_ledger(&cfg, buffer, &metrics, (t0, SystemTime::now()));
            let mut keep = |ledger: &mut Ledger, n: u32, counters: Counters, now: Instant| {
                match how {
                    Settled::Delivered => {
                        ledger.take(vec![record(n)], counters, Ack::None, now);
                        ledger.end_round(now).unwrap();
                        ledger.delivered(reports.try_recv().unwrap(), now).unwrap();
                    }
                    Settled::Buffered => {
                        ledger.take_to_buffer(vec![record(n)], counters, Ack::None, Instant::now());
                    }
                    Settled::DeadLettered => {
                        let letter = Record {
                            rec_type: DEAD_LETTER.into(),
                            ..record(n)
                        };
                        ledger.take(vec![letter], counters, Ack::None, now);
                    }
                }
                // Its counter kept, then synced.
                for s in 1..=2 {
                    ledger.end_round(now + Duration::from_secs(s)).unwrap();
                }
            };
            let refusals = || metrics.problems("buffer_write_error");
            store.set_state_fails(Some(b"fcnt/\0\0\0\x01"));
            keep(&mut ledger, 1, frame(1, 5), t(0));
            assert!(kept_counters(&ledger).is_empty());
            assert_eq!(gauge(), 1, "{how:?}: the counter is not on disk");
            assert_eq!(refusals(), 1, "{how:?}: tried again, counted once");
            ledger.end_round(t(3)).unwrap();
            assert_eq!(refusals(), 1, "{how:?}: tried again, counted once");
            keep(&mut ledger, 2, frame(2, 7), t(3));
            assert_eq!(kept_counters(&ledger), [7]);
            assert_eq!(
                gauge(),
                1,
                "{how:?}: the first session's is still not on disk"
            );
            // Flushes fail: nothing is written again until one works.
            store.set_flush_fails(true);
            ledger.take_to_buffer(
                vec![record(9)],
                Counters::default(),
                Ack::None,
                Instant::now(),
            );
            ledger.end_round(t(6)).unwrap();
            store.set_state_fails(None);
            ledger.end_round(t(7)).unwrap();
            assert_eq!(
                kept_counters(&ledger),
                [7],
                "{how:?}: tried while flushes fail"
            );
            store.set_flush_fails(false);
            ledger.end_round(t(8)).unwrap();
            assert_eq!(gauge(), 1, "{how:?}");
            ledger.end_round(t(9)).unwrap();
            assert_eq!(kept_counters(&ledger), [5, 7], "{how:?}");
            ledger.end_round(t(10)).unwrap();
            assert_eq!(gauge(), 0, "{how:?}: kept and synced");
            let refused = refusals();
            store.set_state_fails(Some(b"fcnt/\0\0\0\x01"));
            keep(&mut ledger, 3, frame(1, 6), t(10));
            assert_eq!(
                (kept_counters(&ledger), refusals()),
                (vec![5, 7], refused + 1),
                "{how:?}: refused again once written, another problem"
            );
        }
    }

    /// A buffered record's counter is kept only once a flush that covers the record is done:
    /// written beside it, sled's flush could make the counter durable before the record's
    /// segment, and after a power cut the redelivered frame would be a replay. A flush that
    /// fails keeps it back; the next one that works lets it go, and a flush follows for it.
    #[test]
    fn a_buffered_records_counter_waits_for_the_flush_that_covers_it() {
        let cfg = BufferConfig::default();
        let store = MemoryStore::default();
        let (mut ledger, _reports, _, t0) = store_ledger(&cfg, &store);
        let (ack, mut acked) = puback(1);
        ledger.take(vec![record(1)], counter(false), ack, t0);
        ledger.end_round(t0).unwrap();
        store.set_flush_fails(true);
        let late = t0 + cfg.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        assert_eq!(ledger.buffered(), 1);
        assert!(kept_counters(&ledger).is_empty(), "its flush failed");
        assert!(acked.try_recv().is_err());
        store.set_flush_fails(false);
        ledger.end_round(late).unwrap();
        assert_eq!(kept_counters(&ledger), [7]);
        assert_eq!(acked.try_recv().unwrap().pkid, 1);
        assert!(ledger.dirty, "a flush is due for the counter");
        ledger.end_round(late).unwrap();
        assert!(!ledger.dirty);
    }

    /// A copy of a frame whose record the sink has not confirmed (an MQTT redelivery after
    /// the connection dropped, a second gateway) is a replay and makes no record; it is
    /// acknowledged with the first copy's record, not before. A replay of a frame whose
    /// record is durable is acknowledged at once.
    #[test]
    fn a_replayed_frame_is_acknowledged_with_its_first_copy() {
        let (mut ledger, mut reports, _, t0) = memory_ledger(&BufferConfig::default());
        let (first, mut first_acked) = puback(1);
        let (copy, mut copy_acked) = puback(2);
        ledger.take(vec![record(1)], counter(false), first, t0);
        ledger.end_round(t0).unwrap();
        ledger.take(Vec::new(), counter(true), copy, t0);
        ledger.end_round(t0).unwrap();
        assert!(
            copy_acked.try_recv().is_err(),
            "the first copy's record is not durable"
        );
        ledger.delivered(reports.try_recv().unwrap(), t0).unwrap();
        assert_eq!(first_acked.try_recv().unwrap().pkid, 1);
        assert_eq!(copy_acked.try_recv().unwrap().pkid, 2);

        let (late_copy, mut late_copy_acked) = puback(3);
        ledger.take(Vec::new(), counter(true), late_copy, t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(late_copy_acked.try_recv().unwrap().pkid, 3);
    }

    /// An input that made three records (an uplink with two history records) is
    /// acknowledged, its frame counter kept and a replay of its frame acknowledged only once
    /// all three are durable: not when the first and last are delivered while the middle
    /// one is not confirmed, but once that one is buffered and flushed.
    #[test]
    fn an_input_of_several_records_is_acknowledged_once_all_are_durable() {
        let cfg = BufferConfig::default();
        let (mut ledger, mut reports, metrics, t0) = memory_ledger(&cfg);
        let (ack, mut acked) = puback(1);
        let (copy, mut copy_acked) = puback(2);
        ledger.take(
            vec![record(1), record(2), record(3)],
            counter(false),
            ack,
            t0,
        );
        ledger.end_round(t0).unwrap();
        ledger.take(Vec::new(), counter(true), copy, t0);
        ledger.end_round(t0).unwrap();
        let mut sent = std::iter::from_fn(|| reports.try_recv().ok());
        let (first, _middle, last) = (sent.next().unwrap(), sent.next(), sent.next().unwrap());
        ledger.delivered(first, t0).unwrap();
        ledger.delivered(last, t0).unwrap();
        ledger.end_round(t0).unwrap();
        assert_eq!(
            pkids(&mut acked),
            [0u16; 0],
            "the middle record is not durable"
        );
        assert_eq!(pkids(&mut copy_acked), [0u16; 0], "nor is the replay's");
        assert!(kept_counters(&ledger).is_empty(), "nor its counter");
        assert_eq!(metrics.acked.get(), 0);

        let late = t0 + cfg.spill_after;
        ledger.tick(late);
        ledger.end_round(late).unwrap();
        ledger.commit(late, true).unwrap();
        assert_eq!(ledger.buffered(), 1, "the middle record");
        assert_eq!(pkids(&mut acked), [1]);
        assert_eq!(pkids(&mut copy_acked), [2]);
        assert_eq!(kept_counters(&ledger), [7]);
        assert_eq!(metrics.acked.get(), 2, "one per input, not per record");
    }

    /// A sink that refuses one record for good and takes the others without ever
    /// confirming them.
    struct RefusesOne(&'static str);

    impl Sink for RefusesOne {
        fn send(&mut self, _seq: u64, rec: &Record) -> Result<(), SinkError> {
            if rec.id == self.0 {
                return Err(SinkError::Reject("Broker: Message size too large".into()));
            }
            Ok(())
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// A ledger over a memory buffer (its store is returned, to fail flushes) and a sink that
    /// refuses record `id` and confirms none of the others by itself; and when it started.
    fn refusing_one(id: &'static str) -> (Ledger, MemoryStore, Instant) {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let t0 = Instant::now();
        let sink = Box::new(RefusesOne(id));
        let now = (t0, SystemTime::now());
        let ledger = Ledger::new(&cfg, 16, buffer, sink, metrics, now, 1).unwrap();
        (ledger, store, t0)
    }

    /// The first record of a frame dead-lettered as it is taken does not keep the frame's
    /// counter while the next one is with the sink unconfirmed.
    #[test]
    fn a_record_settled_at_once_keeps_no_counter_its_siblings_need() {
        let (mut ledger, _store, t0) = refusing_one("id-1");
        ledger.take(vec![record(1), record(2)], counter(false), Ack::None, t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(ledger.buffer.dead_letters(), 1);
        assert!(kept_counters(&ledger).is_empty(), "record 2 is not durable");
    }

    /// On a card that failed nothing can be spilled, so a record stays in flight until its
    /// sink answers (librdkafka tries for `message.timeout.ms`, 120 s). Copies of its input
    /// heard meanwhile that have nothing to acknowledge (replays of its LoRaWAN frame: one
    /// captured from the air, sent to the UDP port as fast as it carries them; an MQTT uplink
    /// repeated at QoS 0, which the broker sends on without waiting for a PUBACK) must not
    /// each leave an acknowledgement with the record: memory would grow by one a copy,
    /// bounded by no count.
    #[test]
    fn copies_with_nothing_to_acknowledge_hold_no_memory_while_their_record_is_in_flight() {
        let (acks, _pubacks) = tokio::sync::mpsc::unbounded_channel();
        let qos0 = || Ack::Mqtt {
            acks: acks.clone(),
            ack: crate::source::PubAck {
                connection: 0,
                qos: rumqttc::QoS::AtMostOnce,
                pkid: 0,
                retained: None,
            },
        };
        for replays in [true, false] {
            let cfg = BufferConfig::default();
            let metrics = Metrics::new();
            let buffer = on_a_failed_card(&cfg, &metrics);
            let t0 = Instant::now();
            let now = (t0, SystemTime::now());
            let sink = Box::new(RefusesOne("none"));
            let mut ledger = Ledger::new(&cfg, 16, buffer, sink, metrics, now, 1).unwrap();
            let take = |l: &mut Ledger, copy: bool, at: Instant| match (replays, copy) {
                (true, false) => l.take(vec![record(1)], counter(false), Ack::None, at),
                (true, true) => l.take(Vec::new(), counter(true), Ack::None, at),
                (false, _) => l.take(vec![record(1)], Counters::default(), qos0(), at),
            };
            take(&mut ledger, false, t0);
            ledger.end_round(t0).unwrap();
            // Past spill_after: the buffer refuses it, so it stays in flight, out of it.
            let late = t0 + cfg.spill_after;
            ledger.tick(late);
            ledger.end_round(late).unwrap();
            assert!(ledger.in_flight.values().all(|f| !f.in_buffer));
            let held = |l: &Ledger| l.in_flight.values().map(|f| f.acks.len()).sum::<usize>();
            let before = held(&ledger);
            const COPIES: usize = 100_000;
            for _ in 0..COPIES {
                take(&mut ledger, true, late);
            }
            ledger.end_round(late).unwrap();
            let grown = held(&ledger) - before;
            let what = if replays { "replays" } else { "QoS 0 copies" };
            assert_eq!(
                grown,
                0,
                "{COPIES} {what} of a record in flight left {grown} more acknowledgements \
                 with it ({} bytes, none of them anything to send)",
                grown * std::mem::size_of::<Ack>()
            );
        }
    }

    /// On a card that failed a dead letter can never be written (until the card's check
    /// at the next boot). One message made a dead letter (an MQTT message over `max_message`,
    /// or with a DevEUI that does not decode: anyone who can publish sends one) must not stop
    /// the input for the rest of the run, while the sink confirms every record from memory.
    #[test]
    fn one_dead_letter_on_a_failed_card_does_not_stop_the_input() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let buffer = on_a_failed_card(&cfg, &metrics);
        let t0 = Instant::now();
        let (mut ledger, mut reports) =
            confirming_ledger(&cfg, buffer, &metrics, (t0, SystemTime::now()));
        let (ack, _pubacks) = pubacks();
        let input = Record {
            rec_type: DEAD_LETTER.into(),
            ..record(1)
        };
        ledger.take(vec![input], Counters::default(), ack(1), t0);
        let mut rounds = 0;
        for s in 0..600u64 {
            let now = t0 + Duration::from_secs(s);
            ledger.tick(now);
            ledger.end_round(now).unwrap();
            while let Ok(d) = reports.try_recv() {
                ledger.delivered(d, now).unwrap();
            }
            rounds += 1;
            if ledger.accepting() {
                break;
            }
        }
        assert!(
            ledger.accepting(),
            "no input taken for {rounds} s after one dead letter: {} held, {} unwritten",
            ledger.held(),
            ledger.unwritten.len()
        );
    }

    /// A buffer on a card that failed ([`crate::buffer::ReadOnlyStore`]).
    fn on_a_failed_card(cfg: &BufferConfig, metrics: &Arc<Metrics>) -> Buffer {
        let store =
            crate::buffer::ReadOnlyStore::new(std::path::Path::new("/nonexistent/hubgate"), None);
        Buffer::new(Box::new(store), cfg, metrics.clone())
    }

    /// A ledger over a memory buffer holding `created` (creation times in ms), at `wall`,
    /// with max_age one hour and the clock in the given state.
    fn aged(created: &[u64], wall: SystemTime, synchronized: bool) -> (Ledger, Arc<Metrics>) {
        let cfg = BufferConfig {
            max_age: Duration::from_secs(3600),
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let mut buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        for (n, &created_ms) in created.iter().enumerate() {
            let rec = Record {
                created_ms,
                ..record(n as u32)
            };
            buffer.push(n as u64, &rec).unwrap();
        }
        let now = (Instant::now(), wall);
        let (mut ledger, _rx) = confirming_ledger(&cfg, buffer, &metrics, now);
        ledger.clock(synchronized, now.0, wall);
        (ledger, metrics)
    }

    /// While the clock is unsynchronised nothing expires; records taken then get no creation
    /// time; once it is synchronised, ages count from the new time, and a record without a
    /// time expires max_age after the sync: neither kept forever nor dropped at once.
    #[test]
    fn an_unsynchronised_clock_holds_expiry() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let two_hours_ago = ms_since_epoch(wall) - 2 * 3600 * 1000;
        let (mut ledger, metrics) = aged(&[two_hours_ago], wall, false);
        ledger.end_round(Instant::now()).unwrap();
        assert_eq!(
            metrics.dropped_expired.get(),
            0,
            "held while unsynchronised"
        );
        let now = Instant::now();
        assert_eq!(ledger.stamped(record(9), now).created_ms, 0);
        let synced_at = wall + Duration::from_secs(86_400);
        ledger.clock(true, now, synced_at);
        assert_eq!(
            (ledger.wall_at.1, ledger.trusted_since),
            (synced_at, synced_at),
            "ages count from the synchronised time"
        );
        let synced_ms = ms_since_epoch(synced_at);
        let made = |ms| Record {
            created_ms: ms,
            ..record(9)
        };
        let later = now + Duration::from_millis(700);
        assert_eq!(
            ledger.stamped(made(synced_ms + 705), later).created_ms,
            synced_ms + 705
        );
        assert_eq!(
            ledger.stamped(made(synced_ms - 5), later).created_ms,
            synced_ms + 700,
            "no older than the time by the clock as last read"
        );

        assert!(!ledger.expired(0, 0, synced_ms), "not dropped at once");
        assert!(!ledger.expired(0, 0, synced_ms + 3_599_000));
        assert!(
            ledger.expired(0, 0, synced_ms + 3_601_000),
            "not kept forever: max_age after the sync"
        );

        let (mut ledger, metrics) = aged(&[two_hours_ago, 0], wall, true);
        ledger.end_round(Instant::now()).unwrap();
        assert_eq!(
            metrics.dropped_expired.get(),
            1,
            "synchronised: the old record expires, the one without a time not yet"
        );
    }

    /// A clock trusted at start (nothing could tell) that showed a time two hours ahead and
    /// is stepped back later: ages count from the time it shows after the step, so a record
    /// ten minutes old is not dropped as two hours and ten minutes old; one two hours old is.
    #[test]
    fn a_step_of_a_trusted_clock_is_followed() {
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ahead = right + Duration::from_secs(2 * 3600);
        let right_ms = ms_since_epoch(right);
        let created = [right_ms - 10 * 60 * 1000, right_ms - 2 * 3600 * 1000];
        let (mut ledger, metrics) = aged(&created, ahead, true);
        let now = Instant::now();
        ledger.clock(true, now, right);
        ledger.end_round(now).unwrap();
        assert_eq!(
            (metrics.dropped_expired.get(), ledger.buffered()),
            (1, 1),
            "the ten minutes old one is kept (and in flight)"
        );
    }

    /// A sink that refuses every record for good, as Kafka refuses one larger than the
    /// broker takes.
    struct Refusing;

    impl Sink for Refusing {
        fn send(&mut self, _seq: u64, _rec: &Record) -> Result<(), SinkError> {
            Err(SinkError::Reject("Broker: Message size too large".into()))
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// A ledger over `buffer` whose sink refuses every record.
    fn refusing_ledger(
        cfg: &BufferConfig,
        buffer: Buffer,
        metrics: &Arc<Metrics>,
        now: (Instant, SystemTime),
    ) -> Ledger {
        Ledger::new(cfg, 16, buffer, Box::new(Refusing), metrics.clone(), now, 1).unwrap()
    }

    /// Every acknowledgement released so far, by packet id.
    pub(in crate::pipeline) fn pkids(
        pubacks: &mut tokio::sync::mpsc::UnboundedReceiver<crate::source::PubAck>,
    ) -> Vec<u16> {
        std::iter::from_fn(|| pubacks.try_recv().ok())
            .map(|a| a.pkid)
            .collect()
    }

    /// A dead letter the disk will not write (a disk error) is written again at each round's
    /// end. Until it is, its record's sources are not acknowledged, nor are the copies of its
    /// record and the replays of its LoRaWAN frame (acknowledged with it), its frame counter
    /// is not kept, and no new input is taken; once it is written and flushed, all of them
    /// are acknowledged. The same for a record refused as it is sent and a dead letter of
    /// input. A store that fails for good (its flush failing as a sync does) ends the run
    /// at the write it refuses.
    #[test]
    fn a_dead_letter_the_disk_refuses_holds_its_acknowledgements_until_written() {
        let cfg = BufferConfig::default();
        let store = MemoryStore::default();
        store.set_writes_fail(true);
        let (mut ledger, _reports, metrics, t0) = store_ledger(&cfg, &store);
        let (ack, mut pubacks) = pubacks();
        // In flight: a copy of its record and a replay of its frame wait with it.
        ledger.take(vec![record(1)], counter(false), ack(1), t0);
        ledger.take(vec![record(1)], Counters::default(), ack(2), t0);
        ledger.take(Vec::new(), counter(true), ack(3), t0);
        ledger.end_round(t0).unwrap();
        let refused = Delivery {
            seq: 0,
            result: Err(SinkError::Reject("Broker: Message size too large".into())),
        };
        ledger.delivered(refused, t0).unwrap();
        // Another replay, taken at shutdown (when the queued frames are taken whatever the
        // ledger says).
        ledger.take_to_buffer(Vec::new(), counter(true), ack(4), Instant::now());
        for _ in 0..3 {
            ledger.tick(t0);
            ledger.end_round(t0).unwrap();
        }
        assert_eq!(
            pkids(&mut pubacks),
            [0u16; 0],
            "acknowledged without a record"
        );
        assert!(
            kept_counters(&ledger).is_empty(),
            "its record is not durable"
        );
        assert_eq!(ledger.held(), 1);
        assert!(!ledger.accepting());
        assert!(!ledger.quiet());
        assert_eq!(ledger.unbuffered(), 1);
        store.set_writes_fail(false);
        ledger.end_round(t0).unwrap();
        ledger.commit(t0, true).unwrap();
        assert_eq!(pkids(&mut pubacks), [1, 2, 3, 4]);
        assert_eq!(kept_counters(&ledger), [7]);
        assert_eq!(ledger.buffer.dead_letters(), 1);
        assert!(ledger.accepting());

        // Refused as it is sent, and a dead letter of input.
        let store = MemoryStore::default();
        let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (t0, SystemTime::now());
        let mut ledger = refusing_ledger(&cfg, buffer, &metrics, now);
        ledger.end_round(t0).unwrap();
        store.set_writes_fail(true);
        ledger.take(vec![record(2)], Counters::default(), ack(5), t0);
        let input = Record {
            rec_type: DEAD_LETTER.into(),
            ..record(3)
        };
        ledger.take(vec![input], Counters::default(), ack(6), t0);
        ledger.end_round(t0).unwrap();
        ledger.end_round(t0).unwrap();
        assert_eq!(pkids(&mut pubacks), [0u16; 0]);
        assert_eq!(ledger.held(), 2);
        store.set_writes_fail(false);
        ledger.end_round(t0).unwrap();
        ledger.commit(t0, true).unwrap();
        assert_eq!(pkids(&mut pubacks), [5, 6]);
        assert_eq!(ledger.buffer.dead_letters(), 2);

        // Buffered records: the one refused stays in the buffer, and the drain waits for its
        // dead letter (one round's records wait in memory, not one per round).
        let store = MemoryStore::default();
        let mut buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        for n in 0..3 {
            let fresh = Record {
                created_ms: ms_since_epoch(now.1),
                ..record(n as u32)
            };
            buffer.push(n, &fresh).unwrap();
        }
        let mut ledger = refusing_ledger(&cfg, buffer, &metrics, now);
        store.set_writes_fail(true);
        for _ in 0..3 {
            ledger.end_round(t0).unwrap();
        }
        assert_eq!((ledger.held(), ledger.buffered()), (1, 3));
        assert_eq!(ledger.unbuffered(), 0, "it is in the buffer");
        store.set_writes_fail(false);
        for _ in 0..3 {
            ledger.end_round(t0).unwrap();
        }
        assert_eq!((ledger.held(), ledger.buffered()), (0, 0));
        assert_eq!(ledger.buffer.dead_letters(), 3);

        // A store that can no longer write at all (sled, once a write of its log failed)
        // fails the flush the refused write starts: the run ends, acknowledging nothing.
        store.set_writes_fail(true);
        store.set_sync_fails(true);
        let input = Record {
            rec_type: DEAD_LETTER.into(),
            ..record(4)
        };
        ledger.take(vec![input], Counters::default(), ack(7), t0);
        let e = ledger.end_round(t0).unwrap_err();
        assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
        // A record it cannot buffer likewise.
        let (mut ledger, _reports) = confirming_ledger(
            &cfg,
            Buffer::new(Box::new(store.clone()), &cfg, metrics.clone()),
            &metrics,
            now,
        );
        ledger.take_to_buffer(vec![record(5)], Counters::default(), ack(8), Instant::now());
        let e = ledger.end_round(t0).unwrap_err();
        assert!(matches!(e, BufferError::SyncFailed(_)), "{e}");
        assert_eq!(ledger.held(), 1);
        assert_eq!(pkids(&mut pubacks), [0u16; 0]);
    }

    /// A buffered record refused for good whose dead letter is written but whose removal
    /// the disk refuses is removed again each round, its letter written and counted once.
    #[test]
    fn a_dead_letter_written_is_counted_once_while_its_removal_is_refused() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let now = (Instant::now(), SystemTime::now());
        let store = MemoryStore::default();
        let mut buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let fresh = Record {
            created_ms: ms_since_epoch(now.1),
            ..record(0)
        };
        buffer.push(0, &fresh).unwrap();
        let mut ledger = refusing_ledger(&cfg, buffer, &metrics, now);
        store.set_removes_fail(true);
        for _ in 0..4 {
            ledger.end_round(now.0).unwrap();
        }
        assert_eq!((ledger.held(), ledger.buffered()), (1, 1), "not removed");
        assert_eq!(
            (ledger.buffer.dead_letters(), metrics.dead_lettered.get()),
            (1, 1)
        );
        store.set_removes_fail(false);
        ledger.end_round(now.0).unwrap();
        ledger.commit(now.0, true).unwrap();
        assert_eq!((ledger.held(), ledger.buffered()), (0, 0));
        assert_eq!(
            (ledger.buffer.dead_letters(), metrics.dead_lettered.get()),
            (1, 1)
        );
    }

    /// Through the ledger: a segment whose appends fail at its tail (EIO every time, the
    /// other files fine) fails one write of the record, not every one: the sink is up, so
    /// the record goes to it from memory meanwhile (unacknowledged, input taken), and the
    /// next write, once the back-off's first delay is over, goes to a new segment; the
    /// record is acknowledged once that is flushed (the sink's report is never taken here).
    #[test]
    fn a_segment_failing_at_its_tail_fails_one_write_only() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let store = crate::buffer::SledStore::open(dir.path()).unwrap();
        let mut buffer = Buffer::new(Box::new(store), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        // Made now, so not expired: segment 1 holds #0 while #1 is written.
        let fresh = |n| Record {
            created_ms: ms_since_epoch(now.1),
            ..record(n)
        };
        buffer.push(0, &fresh(0)).unwrap();
        let t0 = now.0;
        let (mut ledger, _reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let (ack, mut pubacks) = pubacks();
        let _failing = crate::buffer::failing_appends_in(1..=1);
        ledger.take_to_buffer(vec![fresh(1)], counter(false), ack(1), Instant::now());
        ledger.end_round(t0).unwrap();
        assert_eq!(pkids(&mut pubacks), [0u16; 0]);
        assert_eq!(metrics.problems("buffer_write_error"), 1);
        assert_eq!(metrics.problems("buffer_bypassed"), 1);
        assert!(ledger.accepting());
        ledger.end_round(t0).unwrap();
        assert_eq!(ledger.buffered(), 1, "not tried again before the delay");
        let t1 = t0 + WRITE_RETRY_FIRST;
        ledger.end_round(t1).unwrap();
        ledger.commit(t1, true).unwrap();
        assert_eq!(pkids(&mut pubacks), [1]);
        assert_eq!(metrics.problems("buffer_write_error"), 1);
        assert_eq!(ledger.buffered(), 2);
    }

    /// A card whose data blocks refuse every write (EIO in each segment, new ones too) while
    /// sled's own files work. Records taken while the sink is down cannot be buffered: they
    /// are held in memory, unacknowledged, and no input is taken, with the problem
    /// `input_held` (one a round). Once the sink confirms again they go to it straight from
    /// memory, after the records buffered before (a window of one record's bytes makes the
    /// drain hand them over one a round) and in their order, each input acknowledged once
    /// its last record is confirmed and not before. Input is taken again and goes the same
    /// way: of each input's two records, the first goes to the sink at once and the second,
    /// behind it in the full window, from memory the next round. None is buffered; the
    /// buffer is tried again on the back-off's delays only.
    #[test]
    fn records_the_buffer_refuses_go_to_a_confirming_sink_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            max_in_flight_bytes: 7,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let now = (Instant::now(), SystemTime::now());
        let (t0, w0) = now;
        let numbered = |n: u32| Record {
            created_ms: ms_since_epoch(w0),
            body: n.to_string(),
            ..record(n)
        };
        let mut buffer = sled_buffer(dir.path(), &metrics);
        for n in 0..2 {
            buffer.push(u64::from(n), &numbered(n)).unwrap();
        }
        let (mut ledger, mut reports, up, bodies) =
            switch_ledger(&cfg, buffer, &metrics, false, now);
        let (ack, mut pubacks) = pubacks();
        let failing = crate::buffer::failing_appends_in(1..=u32::MAX);
        // A round at `s` s, taking an input of records `next` and `next + 1` (its
        // acknowledgement numbered `next`) if input is taken: the inputs it acknowledged,
        // each as the report on its last record is taken, none by the round itself.
        let mut next = 2;
        let mut round = |ledger: &mut Ledger, s: u64| {
            let t = t0 + Duration::from_secs(s);
            ledger.clock(true, t, w0 + Duration::from_secs(s));
            if ledger.accepting() {
                let input = vec![numbered(next), numbered(next + 1)];
                ledger.take(input, Counters::default(), ack(next as u16), t);
                next += 2;
            }
            ledger.tick(t);
            ledger.end_round(t).unwrap();
            assert_eq!(pkids(&mut pubacks), [0u16; 0], "acknowledged unconfirmed");
            let mut acked = Vec::new();
            while let Ok(d) = reports.try_recv() {
                let seq = d.seq;
                ledger.delivered(d, t).unwrap();
                let now_acked = pkids(&mut pubacks);
                let last = (seq >= 2 && seq % 2 == 1).then(|| seq as u16 - 1);
                assert_eq!(now_acked, Vec::from_iter(last), "on the report on #{seq}");
                acked.extend(now_acked);
            }
            acked
        };
        for s in 0..3 {
            round(&mut ledger, s);
        }
        let sent = |b: &std::sync::Mutex<Vec<String>>| b.lock().unwrap().join(",");
        assert_eq!(sent(&bodies), "");
        assert!(!ledger.accepting(), "input waits while nothing takes it");
        assert_eq!((ledger.buffered(), ledger.held()), (2, 2));
        assert_eq!(metrics.problems("buffer_write_error"), 1);
        assert_eq!(metrics.problems("input_held"), 3);
        assert_eq!(metrics.problems("buffer_bypassed"), 0);

        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acked = Vec::new();
        for s in 10..22 {
            acked.extend(round(&mut ledger, s));
        }
        assert_eq!(sent(&bodies), "0,1,2,3,4,5,6,7,8,9,10,11");
        assert_eq!(acked, [2, 4, 6, 8, 10]);
        assert_eq!(
            metrics.problems("buffer_bypassed"),
            6,
            "#2, #3 and each input's second record from memory"
        );
        assert_eq!(metrics.problems("input_held"), 3);
        assert_eq!(
            (ledger.buffered(), metrics.delivered.get("t")),
            (0, Some(12))
        );
        assert_eq!(failing.refused(), 4, "tried at 0, 1, 10 and 14 s");
        assert_eq!(metrics.problems("buffer_write_error"), 1);
    }

    /// Whether records go to the sink from memory follows the buffer's latest write: once
    /// the disk takes writes again and the buffer is only full (`block`, the disk short of
    /// `min_free`), records wait for room as with any full buffer, not sent from memory as
    /// if the disk still refused.
    #[test]
    fn a_full_buffer_after_a_refusing_disk_holds_records_as_a_full_buffer_does() {
        let cfg = BufferConfig {
            when_full: crate::config::WhenFull::Block,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let store = MemoryStore::with_disk_free(1 << 30);
        let mut buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let t0 = now.0;
        let fresh = |n| Record {
            created_ms: ms_since_epoch(now.1),
            ..record(n)
        };
        buffer.push(0, &fresh(0)).unwrap();
        let (mut ledger, mut reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let (ack, mut pubacks) = pubacks();
        store.set_writes_fail(true);
        ledger.take(vec![fresh(1)], Counters::default(), ack(1), t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(metrics.problems("buffer_bypassed"), 1, "#1 from memory");
        // The disk works again, but is short of room: the buffer holds no more than #0.
        store.set_writes_fail(false);
        store.set_disk_free(10);
        ledger.take(vec![fresh(2)], Counters::default(), ack(2), t0);
        let t1 = t0 + WRITE_RETRY_FIRST;
        ledger.end_round(t1).unwrap();
        assert_eq!(metrics.problems("buffer_bypassed"), 1, "#2 not from memory");
        assert_eq!(
            (ledger.buffered(), ledger.held()),
            (1, 3),
            "#0, #1 in flight; #2 waits"
        );
        assert!(!ledger.accepting());
        store.set_disk_free(1 << 30);
        let mut sent = Vec::new();
        for s in 1..5 {
            let t = t1 + Duration::from_secs(s);
            while let Ok(d) = reports.try_recv() {
                sent.push(d.seq);
                ledger.delivered(d, t).unwrap();
            }
            ledger.end_round(t).unwrap();
        }
        assert_eq!(sent, [0, 1, 2]);
        assert_eq!(pkids(&mut pubacks), [1, 2]);
        assert!(ledger.idle());
    }

    /// A record held in memory (the buffer refusing writes, the sink down) for longer than
    /// `max_age` is dropped once the sink is back, as the drain drops a buffered one:
    /// counted as expired, never sent, its source acknowledged.
    #[test]
    fn a_record_held_in_memory_past_max_age_is_dropped_as_expired() {
        let cfg = BufferConfig {
            max_age: Duration::from_secs(60),
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        store.set_writes_fail(true);
        let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let (mut ledger, mut reports, up, bodies) =
            switch_ledger(&cfg, buffer, &metrics, false, now);
        let (ack, mut pubacks) = pubacks();
        let fresh = Record {
            created_ms: ms_since_epoch(now.1),
            ..record(0)
        };
        ledger.take(vec![fresh], Counters::default(), ack(1), now.0);
        assert_eq!(rounds(&mut ledger, &mut reports, now, [0, 30]), 0);
        assert_eq!((ledger.held(), metrics.dropped_expired.get()), (1, 0));
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(rounds(&mut ledger, &mut reports, now, [61, 62]), 0);
        ledger
            .commit(now.0 + Duration::from_secs(62), true)
            .unwrap();
        assert_eq!(bodies.lock().unwrap().len(), 0, "sent");
        assert_eq!(metrics.dropped_expired.get(), 1);
        assert_eq!(pkids(&mut pubacks), [1]);
        assert!(ledger.idle());
    }

    /// The buffer refusing writes, a record waits to go to the sink from memory; the
    /// buffer's newest record cannot be read (to tell whether the drain has handed it
    /// over): the record waits, and the problem `buffer_read_error` says why, until the
    /// read works.
    #[test]
    fn a_refused_record_waits_on_an_unreadable_buffer_and_says_so() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        store.set_writes_fail(true);
        store.set_seqs_back_fail(true);
        let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let (mut ledger, mut reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let (ack, mut pubacks) = pubacks();
        let fresh = Record {
            created_ms: ms_since_epoch(now.1),
            ..record(0)
        };
        ledger.take_to_buffer(vec![fresh], Counters::default(), ack(1), Instant::now());
        assert_eq!(rounds(&mut ledger, &mut reports, now, [0, 1]), 0);
        assert_eq!(metrics.problems("buffer_read_error"), 2);
        assert_eq!(ledger.held(), 1);
        store.set_seqs_back_fail(false);
        assert_eq!(rounds(&mut ledger, &mut reports, now, [2]), 1);
        assert_eq!(pkids(&mut pubacks), [1]);
        assert_eq!(metrics.problems("buffer_read_error"), 2);
    }

    /// A minute of rounds on a card that failed, one every 100 ms as the forwarder ends them
    /// while anything waits, after one record taken with the PUBACK of packet 1, `sink`
    /// answering as it does: the ledger, its metrics and the PUBACKs sent.
    fn a_minute_on_a_failed_card(
        sink: Box<dyn Sink>,
    ) -> (
        Ledger,
        Arc<Metrics>,
        tokio::sync::mpsc::UnboundedReceiver<crate::source::PubAck>,
    ) {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let buffer = on_a_failed_card(&cfg, &metrics);
        let t0 = Instant::now();
        let now = (t0, SystemTime::now());
        let mut ledger = Ledger::new(&cfg, 16, buffer, sink, metrics.clone(), now, 1).unwrap();
        let (ack, pubacks) = pubacks();
        ledger.take(vec![record(1)], Counters::default(), ack(1), t0);
        for i in 0..600 {
            let t = t0 + Duration::from_millis(100 * i);
            ledger.tick(t);
            ledger.end_round(t).unwrap();
        }
        (ledger, metrics, pubacks)
    }

    /// On a card that failed ([`crate::buffer::ReadOnlyStore`]) no dead letter is ever
    /// written. A record the sink rejects for good must not hold every source's input for
    /// the rest of the run, nor count the refusal of its letter as a problem each round.
    #[test]
    fn a_record_rejected_on_a_failed_card_does_not_hold_input_for_good() {
        let (ledger, metrics, mut pubacks) =
            a_minute_on_a_failed_card(Box::new(RefusesOne("id-1")));
        let counts = (
            ledger.accepting(),
            metrics.problems("buffer_write_error"),
            metrics.problems("dead_letter_not_kept"),
        );
        assert_eq!(
            counts,
            (true, 0, 1),
            "(input taken, refusals, letters only counted) a minute after one record was rejected"
        );
        // Its source is acknowledged, as past the dead letters' cap.
        assert_eq!(pubacks.try_recv().map(|a| a.pkid), Ok(1));
    }

    /// On a card that failed a record the sink holds past `spill_after` cannot be buffered,
    /// so it stays slow until the sink confirms it. That is one slow episode, one problem, as
    /// with a buffer that takes it: not a `sink_slow` counted at every tick (ten a second)
    /// for as long as the sink holds it.
    #[test]
    fn a_record_held_by_a_slow_sink_on_a_failed_card_is_one_problem() {
        // Takes every record and confirms none.
        let (_ledger, metrics, _pubacks) = a_minute_on_a_failed_card(Box::new(RefusesOne("none")));
        let counts = (
            metrics.problems("sink_slow"),
            metrics.problems("buffer_write_error"),
        );
        assert_eq!(
            counts,
            (1, 1),
            "(slow, refusals) counted in a minute of one record unconfirmed"
        );
    }

    /// A sink whose hub for recType "p" is missing (each such record is parked at hand-over)
    /// and that confirms every other record at once.
    struct Parking(crate::sink::Deliveries);

    impl Sink for Parking {
        fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
            if rec.rec_type == "p" {
                let missing = crate::sink::refusal::Setup::default().missing("p");
                return Err(SinkError::Park(missing));
            }
            let _ = self.0.send(Delivery {
                seq,
                result: Ok(100),
            });
            Ok(())
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// A ledger over `buffer` sending to [`Parking`], and the sink's reports.
    fn parking_ledger(
        cfg: &BufferConfig,
        buffer: Buffer,
        metrics: &Arc<Metrics>,
        now: (Instant, SystemTime),
    ) -> (Ledger, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
        ledger_to(cfg, buffer, metrics, now, |tx| Box::new(Parking(tx)))
    }

    /// A card that refuses every write while recType "p" has no hub: its record can be
    /// neither buffered nor sent, and waits in memory, unacknowledged, without holding the
    /// other recTypes' input, which flows for an hour (one record a second), each record
    /// acknowledged on its confirmation, in order. The buffer is tried again on a growing
    /// delay (1 s, doubled up to 30 s), not at every round, and the refusal counted once.
    /// Past the in-flight bound (4 records here) parked records hold input, and
    /// `input_held` says so.
    #[test]
    fn parked_records_the_buffer_refuses_do_not_hold_other_input_up_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig {
            max_in_flight: 4,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let now = (Instant::now(), SystemTime::now());
        let (t0, w0) = now;
        let of = |rec_type: &str, n: u32| Record {
            rec_type: rec_type.into(),
            created_ms: ms_since_epoch(w0),
            ..record(n)
        };
        let buffer = sled_buffer(dir.path(), &metrics);
        let (mut ledger, mut reports) = parking_ledger(&cfg, buffer, &metrics, now);
        let (ack, mut pubacks) = pubacks();
        let failing = crate::buffer::failing_appends_in(1..=u32::MAX);
        ledger.take(vec![of("p", 0)], Counters::default(), ack(0), t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(failing.refused(), 1);
        // A round at `s` s taking a record of `rec_type` if input is taken: whether it was,
        // and what was acknowledged.
        let mut round = |ledger: &mut Ledger, s: u64, rec_type: &str| {
            let t = t0 + Duration::from_secs(s);
            ledger.clock(true, t, w0 + Duration::from_secs(s));
            let took = ledger.accepting();
            if took {
                let n = s as u32;
                ledger.take(vec![of(rec_type, n)], Counters::default(), ack(n as u16), t);
            }
            ledger.tick(t);
            ledger.end_round(t).unwrap();
            while let Ok(d) = reports.try_recv() {
                ledger.delivered(d, t).unwrap();
            }
            (took, pkids(&mut pubacks))
        };
        let (mut held, mut acked) = (0, Vec::new());
        for s in 1..=3600 {
            let (took, acks) = round(&mut ledger, s, "t");
            held += u32::from(!took);
            acked.extend(acks);
        }
        assert_eq!(held, 0, "rounds that took no input");
        assert_eq!(acked, (1..=3600).collect::<Vec<u16>>());
        assert_eq!(metrics.delivered.get("t"), Some(3600));
        assert_eq!(ledger.held(), 1, "the parked record waits");
        assert_eq!(metrics.problems("input_held"), 0);
        // Tried at 0, 1, 3, 7, 15 and 31 s, then every 30 s up to 3571 s.
        assert_eq!(failing.refused(), 6 + 118);
        assert_eq!(metrics.problems("buffer_write_error"), 1);

        // Four records of "p" wait within the bound; a fifth holds input.
        for s in 3601..=3605 {
            let (took, acks) = round(&mut ledger, s, "p");
            held += u32::from(!took);
            acked.extend(acks);
        }
        assert_eq!((held, ledger.held()), (1, 5));
        assert!(!ledger.accepting());
        assert_eq!(metrics.problems("input_held"), 2, "the last two rounds");
        assert_eq!(acked.len(), 3600, "no parked record acknowledged");
    }

    /// A refusal episode that ended with everything confirmed from memory, and nothing
    /// pushed since, is over: a refusal an hour later is counted again as a problem and
    /// the buffer tried again after 1 s, not on the old streak's doubled delay.
    #[test]
    fn a_refusal_after_an_episode_confirmed_from_memory_is_a_new_one() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        store.set_writes_fail(true);
        let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let (mut ledger, mut reports) = confirming_ledger(&cfg, buffer, &metrics, now);
        let (ack, mut pubacks) = pubacks();
        let fresh = |n| Record {
            created_ms: ms_since_epoch(now.1),
            ..record(n)
        };
        ledger.take_to_buffer(vec![fresh(0)], Counters::default(), ack(1), Instant::now());
        assert_eq!(rounds(&mut ledger, &mut reports, now, [0]), 1);
        assert_eq!(pkids(&mut pubacks), [1]);
        store.set_writes_fail(false);
        rounds(&mut ledger, &mut reports, now, 1..=3600);
        assert!(ledger.idle() && ledger.quiet());
        store.set_writes_fail(true);
        ledger.take_to_buffer(vec![fresh(1)], Counters::default(), ack(2), Instant::now());
        assert_eq!(rounds(&mut ledger, &mut reports, now, [3601]), 1);
        assert_eq!(metrics.problems("buffer_write_error"), 2);
        assert_eq!(metrics.problems("buffer_bypassed"), 2);
        // Tried again after 1 s: the record is buffered, not sent from memory.
        store.set_writes_fail(false);
        ledger.take_to_buffer(vec![fresh(2)], Counters::default(), ack(3), Instant::now());
        assert_eq!(rounds(&mut ledger, &mut reports, now, [3602, 3603]), 1);
        assert_eq!(metrics.problems("buffer_bypassed"), 2);
        assert_eq!(pkids(&mut pubacks), [2, 3]);
    }

    /// A parked record larger than `max_in_flight_bytes`, alone, does not hold input while
    /// the card refuses writes, as the window lets one larger record go alone; a second
    /// record of it, past the bound, does.
    #[test]
    fn one_parked_record_larger_than_the_byte_bound_does_not_hold_input() {
        let cfg = BufferConfig {
            max_in_flight_bytes: 7,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        store.set_writes_fail(true);
        let buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let (t0, w0) = now;
        let of = |rec_type: &str, n: u32| Record {
            rec_type: rec_type.into(),
            created_ms: ms_since_epoch(w0),
            body: "x".repeat(100),
            ..record(n)
        };
        let (mut ledger, mut reports) = parking_ledger(&cfg, buffer, &metrics, now);
        let (ack, mut pubacks) = pubacks();
        ledger.take(vec![of("p", 0)], Counters::default(), ack(0), t0);
        ledger.end_round(t0).unwrap();
        let mut took = 0;
        for s in 1..=100 {
            let t = t0 + Duration::from_secs(s);
            ledger.clock(true, t, w0 + Duration::from_secs(s));
            if ledger.accepting() {
                let n = s as u32;
                ledger.take(vec![of("t", n)], Counters::default(), ack(n as u16), t);
                took += 1;
            }
            ledger.tick(t);
            ledger.end_round(t).unwrap();
            while let Ok(d) = reports.try_recv() {
                ledger.delivered(d, t).unwrap();
            }
        }
        assert_eq!(took, 100, "rounds that took input");
        assert_eq!(pkids(&mut pubacks), (1..=100).collect::<Vec<u16>>());
        assert_eq!((ledger.held(), metrics.problems("input_held")), (1, 0));
        let t = t0 + Duration::from_secs(101);
        ledger.take(vec![of("p", 101)], Counters::default(), ack(101), t);
        ledger.end_round(t).unwrap();
        assert!(!ledger.accepting(), "two records past the byte bound");
        assert_eq!(metrics.problems("input_held"), 1);
    }

    /// A sink that parks recType "p" (its hub missing) while `parked` is set and confirms
    /// every other record at once, keeping the bodies it is sent.
    struct ParksWhile {
        parked: Arc<std::sync::atomic::AtomicBool>,
        bodies: Arc<std::sync::Mutex<Vec<String>>>,
        deliveries: crate::sink::Deliveries,
    }

    impl Sink for ParksWhile {
        fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
            if rec.rec_type == "p" && self.parked.load(std::sync::atomic::Ordering::Relaxed) {
                let missing = crate::sink::refusal::Setup::default().missing("p");
                return Err(SinkError::Park(missing));
            }
            self.bodies.lock().unwrap().push(rec.body.clone());
            let _ = self.deliveries.send(Delivery {
                seq,
                result: Ok(100),
            });
            Ok(())
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// A hub with record checks: it refuses every record while `all` is set, and the records
    /// whose id is in `bad` always, each in its report as Kafka's sink does a record refused
    /// alone ([`SinkError::Doubt`]); it confirms the others at once, keeping their ids in the
    /// order taken. As Kafka's producer with its gap-less guarantee, a refusal stops it: what
    /// it is sent after one gets no report until it starts over, at its next tick.
    #[derive(Clone, Default)]
    struct Checks {
        all: Arc<std::sync::atomic::AtomicBool>,
        bad: Arc<std::sync::Mutex<BTreeSet<String>>>,
        taken: Arc<std::sync::Mutex<Vec<String>>>,
        /// The ids it judged (took or refused), in its order.
        tried: Arc<std::sync::Mutex<Vec<String>>>,
    }

    /// The sink of [`Checks`]; `true` once a refusal stopped it.
    struct Checked(Checks, crate::sink::Deliveries, bool);

    impl Sink for Checked {
        fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
            let Checked(checks, deliveries, stopped) = self;
            if *stopped {
                return Ok(());
            }
            checks.tried.lock().unwrap().push(rec.id.clone());
            let refused = checks.all.load(std::sync::atomic::Ordering::Relaxed)
                || checks.bad.lock().unwrap().contains(&rec.id);
            *stopped = refused;
            let result = if refused {
                let setup = crate::sink::refusal::Setup::default();
                let code = rdkafka::error::RDKafkaErrorCode::InvalidRecord;
                let why = "Broker: Broker failed to validate record";
                Err(SinkError::Doubt(setup.refuses_records(
                    code,
                    why,
                    &rec.rec_type,
                )))
            } else {
                checks.taken.lock().unwrap().push(rec.id.clone());
                Ok(100)
            };
            let _ = deliveries.send(Delivery { seq, result });
            Ok(())
        }

        fn tick(&mut self) -> bool {
            std::mem::take(&mut self.2)
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// Rounds at `secs` after `t0`, as [`rounds`], each with a sink tick after its reports:
    /// a sink that started over has what it got no report for sent again.
    fn ticked_rounds(
        ledger: &mut Ledger,
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        now: (Instant, SystemTime),
        secs: impl IntoIterator<Item = u64>,
    ) {
        for s in secs {
            rounds(ledger, reports, now, [s]);
            if ledger.sink().tick() {
                ledger.resend_in_flight();
            }
        }
    }

    /// A ledger with a config over a memory buffer, sending to a hub with record checks
    /// ([`Checks`]), and what a test reads of it.
    struct Trial {
        ledger: Ledger,
        reports: tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        checks: Checks,
        metrics: Arc<Metrics>,
        store: MemoryStore,
        pubacks: tokio::sync::mpsc::UnboundedReceiver<crate::source::PubAck>,
        ack: Box<dyn Fn(u16) -> Ack>,
        now: (Instant, SystemTime),
    }

    impl Trial {
        /// `all`: the hub refuses every record; `bad`: the ids it refuses for themselves.
        fn new(cfg: &BufferConfig, all: bool, bad: &[&str]) -> Trial {
            let checks = Checks::default();
            checks.all.store(all, std::sync::atomic::Ordering::Relaxed);
            checks
                .bad
                .lock()
                .unwrap()
                .extend(bad.iter().map(|id| id.to_string()));
            let metrics = Metrics::new();
            let now = (Instant::now(), SystemTime::now());
            let store = MemoryStore::default();
            let buffer = Buffer::new(Box::new(store.clone()), cfg, metrics.clone());
            let sink = checks.clone();
            let (ledger, reports) = ledger_to(cfg, buffer, &metrics, now, |tx| {
                Box::new(Checked(sink, tx, false))
            });
            let (ack, pubacks) = pubacks();
            Trial {
                ledger,
                reports,
                checks,
                metrics,
                store,
                pubacks,
                ack: Box::new(ack),
                now,
            }
        }

        /// Record `n`, made at the start.
        fn record(&self, n: u32) -> Record {
            Record {
                created_ms: ms_since_epoch(self.now.1),
                ..record(n)
            }
        }

        /// `rec` taken `secs` after the start, acknowledged as `pkid`.
        fn take(&mut self, rec: Record, pkid: u16, secs: u64) {
            let at = self.now.0 + Duration::from_secs(secs);
            let ack = (self.ack)(pkid);
            self.ledger.take(vec![rec], Counters::default(), ack, at);
        }

        /// Records `0..n` taken at the start, each acknowledged by its number.
        fn take_first(&mut self, n: u16) {
            for k in 0..n {
                self.take(self.record(k.into()), k, 0);
            }
        }

        fn rounds(&mut self, secs: impl IntoIterator<Item = u64>) {
            ticked_rounds(&mut self.ledger, &mut self.reports, self.now, secs);
        }

        fn refuse_all(&self, all: bool) {
            self.checks
                .all
                .store(all, std::sync::atomic::Ordering::Relaxed);
        }

        /// The ids the hub took, in its order.
        fn taken(&self) -> Vec<String> {
            self.checks.taken.lock().unwrap().clone()
        }

        /// How many of records `0..n` are held in doubt.
        fn held(&self, n: u64) -> usize {
            (0..n)
                .filter(|&s| self.ledger.doubts.held(s).is_some())
                .count()
        }
    }

    /// A hub whose checks refuse every record for 70 minutes (a schema validation turned
    /// on, then lifted) loses none: each record it refuses is kept, acknowledged once
    /// buffered, and the recType parked with the cause shown; once the hub takes records
    /// again, each is taken exactly once and nothing is dead-lettered.
    #[test]
    fn a_hub_that_refuses_every_record_for_a_while_loses_none() {
        let mut t = Trial::new(&BufferConfig::default(), true, &[]);
        t.take_first(5);
        // One more every minute while refused.
        for minute in 0..10 {
            let n = 5 + minute as u16;
            t.take(t.record(n.into()), n, minute * 60);
            t.rounds(minute * 60..minute * 60 + 60);
        }
        // Then none for an hour: by its end each has been refused, and only one of them sent
        // again can tell that the hub takes records again.
        t.rounds(600..4200);
        assert!(t.taken().is_empty());
        assert_eq!(t.ledger.buffer.dead_letters(), 0);
        assert_eq!(t.ledger.buffered(), 15);
        assert_eq!(t.held(15), 15);
        assert_eq!(
            pkids(&mut t.pubacks),
            (0..15).collect::<Vec<u16>>(),
            "each durable"
        );
        let why = t
            .metrics
            .park_reasons
            .get("t")
            .expect("parked, with its cause");
        assert_eq!(why.kind, "refuses_records");

        t.refuse_all(false);
        t.rounds(4200..=4800);
        let mut taken = t.taken();
        assert_eq!(taken.len(), 15, "each once: {taken:?}");
        taken.sort_by_key(|id| id[3..].parse::<u32>().unwrap());
        assert_eq!(
            taken,
            (0..15).map(|n| format!("id-{n}")).collect::<Vec<_>>()
        );
        assert_eq!(t.ledger.buffer.dead_letters(), 0);
        assert!(t.ledger.idle());
        assert!(t.metrics.park_reasons.get("t").is_none(), "unparked");
    }

    /// A record its hub refuses for itself is dead-lettered once the hub has taken a record
    /// sent after the refusal and refused it again: the records behind it (of its device,
    /// which a stopped producer could not send after it) are sent before it is tried again,
    /// so it does not hold them back for good.
    #[test]
    fn a_record_its_hub_refuses_for_itself_is_dead_lettered_once_a_later_one_is_taken() {
        let mut t = Trial::new(&BufferConfig::default(), false, &["id-0"]);
        t.take_first(5);
        t.rounds([0]);
        assert_eq!(t.ledger.buffer.dead_letters(), 0, "no verdict yet");
        assert!(t.taken().is_empty(), "none behind it");
        t.rounds(1..=10);
        assert_eq!(t.taken(), ["id-1", "id-2", "id-3", "id-4"]);
        assert_eq!(t.ledger.buffer.dead_letters(), 1, "id-0");
        let mut acked = pkids(&mut t.pubacks);
        acked.sort_unstable();
        assert_eq!(acked, [0, 1, 2, 3, 4]);
        assert!(t.ledger.idle());
    }

    /// Records a hub refused while it refused every record are tried in turn once it takes
    /// records again, with no new record to tell: the oldest, which it refuses for itself,
    /// does not hide the others, and is dead-lettered once another was taken.
    #[test]
    fn a_record_refused_for_itself_does_not_hide_the_others_refused_with_it() {
        let mut t = Trial::new(&BufferConfig::default(), true, &["id-0"]);
        t.take_first(5);
        t.rounds(0..3600);
        assert_eq!(t.held(5), 5);
        t.refuse_all(false);
        t.rounds(3600..=4200);
        let mut taken = t.taken();
        taken.sort();
        assert_eq!(taken, ["id-1", "id-2", "id-3", "id-4"]);
        assert_eq!(t.ledger.buffer.dead_letters(), 1, "id-0");
        assert_eq!(pkids(&mut t.pubacks), [0, 1, 2, 3, 4], "each once buffered");
        assert!(t.ledger.idle() && t.ledger.doubts.is_empty());
    }

    /// As above with a window of one record. The drain reads as many buffered records as the
    /// window has room for: the oldest, in doubt, must not be all it sees, sent alone at each
    /// try, refused, and its recType parked again; the records behind it are sent and its
    /// verdict comes.
    #[test]
    fn a_record_its_hub_refuses_for_itself_does_not_hold_back_the_rest_with_a_window_of_one() {
        let cfg = BufferConfig {
            max_in_flight: 1,
            ..BufferConfig::default()
        };
        let mut t = Trial::new(&cfg, false, &["id-0"]);
        t.take_first(5);
        // Parks double up to 5 minutes: an hour gives the drain many tries.
        t.rounds(0..3600);
        assert_eq!(t.taken(), ["id-1", "id-2", "id-3", "id-4"]);
        assert_eq!(t.ledger.buffer.dead_letters(), 1, "id-0");
        assert!(t.ledger.idle());
    }

    /// Records a hub refused while its checks refused every record, the oldest of them one it
    /// refuses for itself: once the hub takes records again, with no new record coming (a
    /// device that sends no more, or a `block` buffer full of them, which holds new input
    /// back), the drain must not send only the oldest in doubt of the recType, alone, at each try,
    /// refused each time: the others are sent and its verdict comes.
    #[test]
    fn records_in_doubt_behind_one_refused_for_itself_are_sent_once_the_hub_takes_records() {
        let mut t = Trial::new(&BufferConfig::default(), true, &["id-0"]);
        t.take_first(5);
        t.rounds(0..60);
        assert_eq!(t.held(5), 5, "each refused while the hub refused all");
        t.refuse_all(false);
        t.rounds(60..3600);
        // Records in doubt keep no order among them.
        let mut taken = t.taken();
        taken.sort();
        assert_eq!(taken, ["id-1", "id-2", "id-3", "id-4"]);
        assert_eq!(t.ledger.buffer.dead_letters(), 1, "id-0");
        assert!(t.ledger.idle());
    }

    /// A record in doubt whose park ran out is met by the drain beside a record of another
    /// recType that fills the window (here by bytes): once its hub takes records again, it
    /// is still sent, not left in the buffer until a restart.
    #[test]
    fn a_record_in_doubt_passed_over_by_a_full_window_is_sent_later() {
        let cfg = BufferConfig {
            max_in_flight_bytes: 500,
            ..BufferConfig::default()
        };
        let mut t = Trial::new(&cfg, true, &[]);
        t.take_first(1);
        t.rounds([0]);
        assert_eq!(t.held(1), 1, "refused alone: in doubt");
        t.refuse_all(false);
        // The park runs out within a second; a large record of another recType comes then.
        let large = Record {
            rec_type: "u".into(),
            body: format!("\"{}\"", "x".repeat(600)),
            ..t.record(1)
        };
        t.take(large, 1, 1);
        t.rounds(1..600);
        assert_eq!(t.taken(), ["id-1", "id-0"]);
        assert!(t.ledger.idle());
    }

    /// A record in doubt that waits in memory (the disk refusing writes) is sent again only as
    /// a probe, after the records behind it, once per pass: not in its place at every pass,
    /// where each refusal would stop the producer ahead of them.
    #[test]
    fn a_record_in_doubt_in_memory_is_sent_again_only_as_a_probe() {
        let mut t = Trial::new(&BufferConfig::default(), false, &["id-0"]);
        t.store.set_writes_fail(true);
        t.take_first(5);
        t.rounds(0..600);
        // All from memory: nothing buffered, and the verdict's dead letter waits for the disk.
        assert_eq!(t.ledger.buffered(), 0);
        assert_eq!(t.taken(), ["id-1", "id-2", "id-3", "id-4"]);
        let tried = t.checks.tried.lock().unwrap().clone();
        assert_eq!(
            tried,
            ["id-0", "id-1", "id-2", "id-3", "id-4", "id-0", "id-0"],
            "refused, the others, then its probes: the first sent in the second the others \
             were, the next after it"
        );
        assert_eq!(pkids(&mut t.pubacks), [1, 2, 3, 4]);
        assert_eq!(t.ledger.buffer.dead_letters(), 0);
        t.store.set_writes_fail(false);
        t.rounds(600..1200);
        assert_eq!(t.ledger.buffer.dead_letters(), 1, "id-0");
        assert_eq!(pkids(&mut t.pubacks), [0]);
        assert_eq!(t.checks.tried.lock().unwrap().len(), 7, "no more tries");
        assert!(t.ledger.idle());
    }

    /// A record in doubt whose hub refuses every record is probed at the pace of its
    /// recType's park (doubled at each refusal, up to 5 minutes), not at every pass of the
    /// drain while the park runs.
    #[test]
    fn a_record_in_doubt_is_probed_only_once_its_park_runs_out() {
        let mut t = Trial::new(&BufferConfig::default(), true, &[]);
        t.take_first(1);
        t.rounds(0..1200);
        let tried = t.checks.tried.lock().unwrap().clone();
        // The first try, one after each park of 1, 2, 4 ... 256 s, then one every 300 s.
        assert_eq!(tried.len(), 13, "tried more often than its parks allow");
        assert_eq!((t.ledger.buffered(), t.held(1)), (1, 1));
    }

    /// A probe is sent once: while its report is out (a slow hub), the drain's next passes,
    /// every other buffered record handed over, do not send the record in doubt again, which
    /// would put it in its hub twice.
    #[test]
    fn a_probe_whose_report_is_out_is_not_sent_again() {
        let mut t = Trial::new(&BufferConfig::default(), true, &[]);
        t.take_first(1);
        t.rounds(0..60);
        assert_eq!((t.ledger.buffered(), t.held(1)), (1, 1));
        t.refuse_all(false);
        // Rounds whose reports are held, up to the one that sends the probe (its recType's
        // park run out), and two more at that time.
        let at = (60..3600)
            .map(|s| t.now.0 + Duration::from_secs(s))
            .find(|&at| {
                t.ledger.end_round(at).unwrap();
                !t.reports.is_empty()
            })
            .expect("the probe goes once the park runs out");
        let probe = t.reports.try_recv().unwrap();
        t.ledger.end_round(at).unwrap();
        t.ledger.end_round(at).unwrap();
        assert!(t.reports.is_empty(), "sent again while its report is out");
        assert_eq!(t.taken(), ["id-0"]);
        t.ledger.delivered(probe, at).unwrap();
        let secs = at.duration_since(t.now.0).as_secs();
        t.rounds(secs..secs + 60);
        assert_eq!(t.taken(), ["id-0"]);
        assert_eq!(pkids(&mut t.pubacks), [0]);
        assert!(t.ledger.idle());
    }

    /// A `block` buffer full of records in doubt (their hub refused every record), with a
    /// newer record waiting for room and holding the input: the buffer takes writes, so
    /// nothing waits to go from memory instead, and once the hub takes records again the
    /// records in doubt are probed, taken and deleted, and the waiting record gets its room
    /// and goes. Without the probes nothing would free the buffer: the input stalls for good.
    #[test]
    fn a_block_buffer_full_of_records_in_doubt_takes_the_waiting_record_once_its_hub_is_back() {
        let one = crate::buffer::encode(&Record {
            created_ms: ms_since_epoch(SystemTime::now()),
            ..record(0)
        })
        .len() as u64;
        let cfg = BufferConfig {
            when_full: crate::config::WhenFull::Block,
            max_bytes: 3 * one + one / 2,
            ..BufferConfig::default()
        };
        let mut t = Trial::new(&cfg, true, &[]);
        t.take_first(3);
        t.rounds(0..60);
        assert_eq!((t.ledger.buffered(), t.held(3)), (3, 3));
        assert_eq!(pkids(&mut t.pubacks), [0, 1, 2]);
        t.take(t.record(3), 3, 60);
        t.rounds(60..120);
        assert_eq!(t.ledger.buffered(), 3, "full");
        assert!(
            !t.ledger.accepting(),
            "the record waiting for room holds the input"
        );
        t.refuse_all(false);
        t.rounds(120..3600);
        let mut taken = t.taken();
        taken.sort();
        assert_eq!(taken, ["id-0", "id-1", "id-2", "id-3"]);
        assert_eq!(pkids(&mut t.pubacks), [3]);
        assert!(t.ledger.idle());
    }

    /// Records in doubt that the buffer drops (`drop_oldest`, full) are forgotten with them:
    /// what is kept in doubt is never more than what is buffered.
    #[test]
    fn records_in_doubt_the_buffer_drops_are_forgotten() {
        let cfg = BufferConfig {
            max_bytes: 1 << 20,
            ..BufferConfig::default()
        };
        let mut t = Trial::new(&cfg, true, &[]);
        for n in 0..8 {
            let large = Record {
                body: "x".repeat(300_000),
                ..t.record(n)
            };
            let s = u64::from(n) * 600;
            t.take(large, n as u16, s);
            t.rounds(s..s + 600);
        }
        let held = t.held(8) as u64;
        assert!(t.metrics.dropped_full.get() > 0, "the buffer dropped some");
        let buffered = t.ledger.buffered();
        assert!(
            held > 0 && held <= buffered,
            "{held} held, {buffered} buffered"
        );
    }

    /// A recType's buffered record the drain passed over while it was parked, and a newer
    /// record of it that the refusing disk leaves in memory: once the park runs out, the
    /// buffered one goes first even while a dead letter waits for the disk (the drain
    /// waiting for it), not the one in memory ahead of it.
    #[test]
    fn a_parked_record_in_memory_waits_for_its_older_buffered_ones_behind_a_dead_letter() {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let store = MemoryStore::default();
        let mut buffer = Buffer::new(Box::new(store.clone()), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        let (t0, w0) = now;
        let of = |rec_type: &str, n: u32| Record {
            rec_type: rec_type.into(),
            created_ms: ms_since_epoch(w0),
            body: n.to_string(),
            ..record(n)
        };
        buffer.push(0, &of("p", 0)).unwrap();
        let parked = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = ParksWhile {
            parked: parked.clone(),
            bodies: bodies.clone(),
            deliveries: tx,
        };
        let mut ledger =
            Ledger::new(&cfg, 16, buffer, Box::new(sink), metrics.clone(), now, 1).unwrap();
        let (ack, mut pubacks) = pubacks();
        let missing = crate::sink::refusal::Setup::default().missing("p");
        ledger.park("p", missing, t0);
        ledger.end_round(t0).unwrap();
        store.set_writes_fail(true);
        ledger.take(vec![of(DEAD_LETTER, 1)], Counters::default(), ack(1), t0);
        ledger.take(vec![of("p", 2)], Counters::default(), ack(2), t0);
        ledger.end_round(t0).unwrap();
        assert_eq!(ledger.held(), 2, "the dead letter and #2 wait in memory");
        parked.store(false, std::sync::atomic::Ordering::Relaxed);
        rounds(&mut ledger, &mut reports, now, [2, 3]);
        store.set_writes_fail(false);
        rounds(&mut ledger, &mut reports, now, 4..=40);
        assert_eq!(bodies.lock().unwrap().join(","), "0,2");
        assert_eq!(pkids(&mut pubacks), [1, 2]);
        assert!(ledger.idle());
    }

    /// A record the sink refuses for good is dead-lettered as an excerpt of a few hundred
    /// bytes, not whole (a hostile 260 KB uplink makes a 4.4 MB record), and counts against
    /// `MAX_DEAD_LETTERS` as dead letters of input do: past it, a refused record (or a dead
    /// letter of input) is only counted, leaves the buffer, and its source is acknowledged.
    #[test]
    fn refused_records_are_dead_lettered_as_excerpts_up_to_the_cap() {
        use crate::buffer::{SledStore, MAX_DEAD_LETTERS};
        let dir = tempfile::tempdir().unwrap();
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let store = SledStore::open(dir.path()).unwrap();
        let mut buffer = Buffer::new(Box::new(store), &cfg, metrics.clone());
        let now = (Instant::now(), SystemTime::now());
        // Made now, so not expired.
        let fresh = |n| Record {
            created_ms: ms_since_epoch(now.1),
            ..record(n)
        };
        let huge = Record {
            body: format!("{{\"data\":\"{}\"}}", "AWYB".repeat(1_000_000)),
            ..fresh(0)
        };
        buffer.push(0, &huge).unwrap();
        buffer.push(1, &fresh(1)).unwrap();
        // One dead letter short of the cap: the huge record takes the last place.
        for seq in 2..=MAX_DEAD_LETTERS {
            buffer.dead_letter(seq, &record(2)).unwrap();
        }
        let mut ledger = refusing_ledger(&cfg, buffer, &metrics, now);
        ledger.end_round(now.0).unwrap();
        let (ack, mut pubacks) = puback(7);
        ledger.take(vec![fresh(3)], counter(false), ack, now.0);
        // A retained message, only counted: it keeps no fingerprint.
        let (acks, mut input_pubacks) = tokio::sync::mpsc::unbounded_channel();
        let input_ack = retained(&acks, 8);
        let input = Record {
            rec_type: DEAD_LETTER.into(),
            ..record(4)
        };
        ledger.take(vec![input], Counters::default(), input_ack, now.0);
        ledger.end_round(now.0).unwrap();
        ledger.commit(now.0, true).unwrap();
        assert_eq!(pubacks.try_recv().unwrap().pkid, 7);
        let input_puback = input_pubacks.try_recv().unwrap();
        assert_eq!((input_puback.pkid, input_puback.retained), (8, None));
        assert_eq!(metrics.sink_errors.get("reject"), Some(3));
        assert_eq!(metrics.problems("dead_letters_full"), 3);
        assert_eq!(ledger.buffered(), 0, "refused records leave the buffer");
        assert_eq!(ledger.buffer.dead_letters(), MAX_DEAD_LETTERS);
        assert_eq!(
            kept_counters(&ledger),
            [7],
            "a record only counted is gone for good"
        );
        drop(ledger);

        let store = SledStore::open(dir.path()).unwrap();
        let dead = store.scan_dead(None, usize::MAX).unwrap();
        assert_eq!(dead.len() as u64, MAX_DEAD_LETTERS);
        let (seq, kept) = &dead[0];
        assert_eq!(*seq, 0, "the huge record's");
        assert!(kept.len() < 1_200, "{} bytes kept", kept.len());
        let kept = crate::buffer::decode(kept).unwrap();
        assert_eq!(
            (kept.id.as_str(), kept.rec_type.as_str()),
            ("id-0", DEAD_LETTER)
        );
        let body: serde_json::Value = serde_json::from_str(&kept.body).unwrap();
        assert_eq!(body["source"], "sink");
        assert_eq!(body["reason"], "Broker: Message size too large");
        assert_eq!(body["size"], huge.body.len());
        assert_eq!(body["record"]["recType"], "t");
        assert_eq!(body["record"]["key"], "k");
        assert_eq!(body["head_base64"].as_str().unwrap().len(), 344);
    }

    /// A record the sink refuses keeps its body whole in its dead letter while fewer than
    /// [`crate::buffer::WHOLE_DEAD_LETTERS`] are kept; past that only its excerpt, so the
    /// dead letters stay within a few MB more than excerpts alone.
    #[test]
    fn refused_records_keep_their_bodies_whole_in_the_first_dead_letters_only() {
        use crate::buffer::{SledStore, WHOLE_DEAD_LETTERS};
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let mut buffer = sled_buffer(dir.path(), &metrics);
        let now = (Instant::now(), SystemTime::now());
        let made_now = |n| Record {
            created_ms: ms_since_epoch(now.1),
            ..record(n)
        };
        for n in 0..2 {
            buffer.push(u64::from(n), &made_now(n)).unwrap();
        }
        for seq in 2..=WHOLE_DEAD_LETTERS {
            buffer.dead_letter(seq, &record(2)).unwrap();
        }
        let cfg = BufferConfig::default();
        let mut ledger = refusing_ledger(&cfg, buffer, &metrics, now);
        ledger.end_round(now.0).unwrap();
        ledger.commit(now.0, true).unwrap();
        assert_eq!(ledger.buffer.dead_letters(), WHOLE_DEAD_LETTERS + 1);
        drop(ledger);
        let bodies: Vec<Option<String>> = SledStore::open(dir.path())
            .unwrap()
            .scan_dead(None, 2)
            .unwrap()
            .iter()
            .map(|(_, kept)| {
                let kept = crate::buffer::decode(kept).unwrap();
                let kept: serde_json::Value = serde_json::from_str(&kept.body).unwrap();
                kept["record"]["body"].as_str().map(str::to_string)
            })
            .collect();
        assert_eq!(bodies, [Some(made_now(0).body), None]);
    }

    /// Dead letters of input stop [`crate::buffer::SINK_DEAD_LETTERS`] short of the cap: a
    /// source whose every message is one (devices hubgate cannot key) leaves those places to
    /// the records the sink refuses, which are kept while input is only counted.
    #[test]
    fn input_leaves_the_last_dead_letters_to_records_the_sink_refuses() {
        use crate::buffer::{MAX_DEAD_LETTERS, SINK_DEAD_LETTERS};
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let mut buffer = sled_buffer(dir.path(), &metrics);
        let input_cap = MAX_DEAD_LETTERS - SINK_DEAD_LETTERS;
        for seq in 1..input_cap {
            buffer.dead_letter(seq, &record(2)).unwrap();
        }
        let now = (Instant::now(), SystemTime::now());
        let mut ledger = refusing_ledger(&BufferConfig::default(), buffer, &metrics, now);
        let input = |n| Record {
            rec_type: DEAD_LETTER.into(),
            ..record(n)
        };
        for n in [3, 4] {
            let (ack, _pubacks) = puback(n as u16);
            ledger.take(vec![input(n)], Counters::default(), ack, now.0);
            ledger.end_round(now.0).unwrap();
        }
        assert_eq!(
            (
                ledger.buffer.dead_letters(),
                metrics.problems("dead_letters_full")
            ),
            (input_cap, 1),
            "input takes places up to its own cap"
        );
        let (ack, _pubacks) = puback(5);
        let fresh = Record {
            created_ms: ms_since_epoch(now.1),
            ..record(5)
        };
        ledger.take(vec![fresh], counter(false), ack, now.0);
        ledger.end_round(now.0).unwrap();
        assert_eq!(
            (
                ledger.buffer.dead_letters(),
                metrics.problems("dead_letters_full")
            ),
            (input_cap + 1, 1),
            "a record the sink refuses is kept past input's cap"
        );
    }

    /// Frame counters and copies of frames whose records are not all durable.
    mod frame_counters_and_copies {
        use super::*;

        /// The session of DevAddr 1.
        const ONE: (DevAddr, DevEui) = (DevAddr(1), DevEui([1; 8]));

        fn advanced(fcnt: u32) -> Counters {
            Counters {
                advanced: vec![accepted(ONE, fcnt, [fcnt as u8; 4], None)],
                replayed: None,
            }
        }

        fn replayed(fcnt: u32) -> Counters {
            Counters {
                advanced: Vec::new(),
                replayed: Some((DevAddr(1), fcnt)),
            }
        }

        fn ledger(
            cfg: &BufferConfig,
        ) -> (
            Ledger,
            tokio::sync::mpsc::UnboundedReceiver<Delivery>,
            MemoryStore,
            Instant,
        ) {
            let metrics = Metrics::new();
            let store = MemoryStore::default();
            let buffer = Buffer::new(Box::new(store.clone()), cfg, metrics.clone());
            let t0 = Instant::now();
            let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
            let sink = Box::new(Confirming(tx));
            let l =
                Ledger::new(cfg, 16, buffer, sink, metrics, (t0, SystemTime::now()), 1).unwrap();
            (l, reports, store, t0)
        }

        fn kept(l: &Ledger) -> Vec<u32> {
            l.buffer
                .fcnts()
                .unwrap()
                .into_iter()
                .map(|k| k.fcnt)
                .collect()
        }

        /// A session keeps one counter, written over, and a restart refuses every frame at or
        /// below it: frame 8's counter is not kept while frame 7's record is with the sink
        /// unconfirmed (8 confirmed first: another hub, or reports out of order), or frame 7's
        /// redelivery after a crash would be a replay. Once 7 is confirmed too, 8 is kept.
        #[test]
        fn a_later_frames_counter_waits_for_an_earlier_frame_of_its_session() {
            let (mut l, mut reports, _store, t0) = ledger(&BufferConfig::default());
            l.take(vec![record(7)], advanced(7), Ack::None, t0);
            l.take(vec![record(8)], advanced(8), Ack::None, t0);
            l.end_round(t0).unwrap();
            let first = reports.try_recv().unwrap();
            let second = reports.try_recv().unwrap();
            l.delivered(second, t0).unwrap();
            assert!(kept(&l).is_empty(), "frame 7 is not durable");
            l.delivered(first, t0).unwrap();
            assert_eq!(kept(&l), [8]);
        }

        /// Every frame released of a session that restarts its counter (given with when it
        /// was accepted) is kept too, not only the newest, each with when it was accepted by
        /// the time since boot: a copy of one heard soon after a restart is still told as a
        /// copy.
        #[test]
        fn every_frame_released_is_kept_with_when_it_was_accepted() {
            let booted = crate::clock::since_boot().unwrap().as_millis() as u64;
            let (mut l, mut reports, _store, t0) = ledger(&BufferConfig::default());
            l.buffer
                .set_key_prints(HashMap::from([((1, [1; 8]), [4; 4])]));
            l.buffer.set_boot_id(Some(7));
            let frame = |fcnt: u32, at| Counters {
                advanced: vec![accepted(ONE, fcnt, [fcnt as u8; 4], at)],
                replayed: None,
            };
            let later = t0 + Duration::from_secs(2);
            l.take(vec![record(7)], frame(7, Some(t0)), Ack::None, t0);
            l.take(vec![record(8)], frame(8, Some(later)), Ack::None, t0);
            l.end_round(t0).unwrap();
            let first = reports.try_recv().unwrap();
            let second = reports.try_recv().unwrap();
            l.delivered(second, t0).unwrap();
            assert_eq!(l.buffer.copies().unwrap(), [], "frame 7 is not durable");
            l.delivered(first, t0).unwrap();
            let now = crate::clock::since_boot().unwrap().as_millis() as u64;
            let copies = l.buffer.copies().unwrap();
            let up = copies[0].frames[0].2;
            assert!((booted..=now).contains(&up), "{booted} <= {up} <= {now}");
            assert_eq!(
                (kept(&l), copies[0].frames.clone()),
                (vec![8], vec![(7, [7; 4], up), (8, [8; 4], up + 2000)])
            );
        }

        /// A resetting session's frames 7 and 8 taken and sent: their reports, not yet applied.
        fn frames_7_and_8_sent() -> (Ledger, MemoryStore, Instant, [Delivery; 2]) {
            let (mut l, mut reports, store, t0) = ledger(&BufferConfig::default());
            l.buffer
                .set_key_prints(HashMap::from([((1, [1; 8]), [4; 4])]));
            l.buffer.set_boot_id(Some(7));
            let frame = |fcnt: u32| Counters {
                advanced: vec![accepted(ONE, fcnt, [fcnt as u8; 4], Some(t0))],
                replayed: None,
            };
            l.take(vec![record(7)], frame(7), Ack::None, t0);
            l.take(vec![record(8)], frame(8), Ack::None, t0);
            l.end_round(t0).unwrap();
            let sent = [reports.try_recv().unwrap(), reports.try_recv().unwrap()];
            (l, store, t0, sent)
        }

        /// Frames the disk refused to keep to tell a copy are written with the session's next
        /// frames, not left out of them (the next write takes what is kept as its base): a
        /// copy of either heard after a restart is still told as one.
        #[test]
        fn frames_the_disk_refused_to_keep_go_with_the_next_ones() {
            let (mut l, store, t0, [first, second]) = frames_7_and_8_sent();
            store.set_state_fails(Some(b"fcnt-copies/"));
            l.delivered(first, t0).unwrap();
            assert_eq!((kept(&l), l.buffer.copies().unwrap()), (vec![7], vec![]));
            store.set_state_fails(None);
            l.delivered(second, t0).unwrap();
            let copies = l.buffer.copies().unwrap();
            let frames: Vec<_> = copies[0].frames.iter().map(|&(f, m, _)| (f, m)).collect();
            assert_eq!(
                (kept(&l), frames),
                (vec![8], vec![(7, [7; 4]), (8, [8; 4])])
            );
        }

        /// A counter the disk refused goes with the session's next frames, before them, and is
        /// then done with: no later retry writes it over the newer one, which would make a copy
        /// of the newer frame heard after a restart a new one, its record made again.
        #[test]
        fn a_refused_counter_is_not_written_again_over_a_newer_one() {
            let (mut l, store, t0, [first, second]) = frames_7_and_8_sent();
            store.set_state_fails(Some(b"fcnt/"));
            l.delivered(first, t0).unwrap();
            assert!(kept(&l).is_empty());
            store.set_state_fails(None);
            l.delivered(second, t0).unwrap();
            assert_eq!(kept(&l), [8]);
            for s in 1..=2 {
                l.end_round(t0 + Duration::from_secs(s)).unwrap();
            }
            let copies = l.buffer.copies().unwrap();
            let frames: Vec<_> = copies[0].frames.iter().map(|&(f, m, _)| (f, m)).collect();
            assert_eq!(
                (kept(&l), frames, l.unsaved.len()),
                (vec![8], vec![(7, [7; 4]), (8, [8; 4])], 0)
            );
        }

        /// Of more frames refused than a session keeps to tell a copy, only the last
        /// [`COPIES`] wait for the next try (what waits stays bounded), and that try keeps the
        /// newest frame's counter and those frames.
        #[test]
        fn of_more_frames_refused_than_are_kept_the_last_wait_and_the_newest_is_the_counter() {
            let (mut l, _reports, store, t0) = ledger(&BufferConfig::default());
            l.buffer
                .set_key_prints(HashMap::from([((1, [1; 8]), [4; 4])]));
            l.buffer.set_boot_id(Some(7));
            let taken = COPIES as u32 + 8;
            store.set_state_fails(Some(b"fcnt"));
            for n in 1..=taken {
                let counters = Counters {
                    advanced: vec![accepted(ONE, n, [n as u8; 4], Some(t0))],
                    replayed: None,
                };
                l.take_to_buffer(vec![record(n)], counters, Ack::None, Instant::now());
            }
            for s in 1..=2 {
                l.end_round(t0 + Duration::from_secs(s)).unwrap();
            }
            let last: Vec<u32> = (9..=taken).collect();
            let waiting = &l.unsaved[&(DevAddr(1), DevEui([1; 8]))];
            let waiting: Vec<u32> = waiting.iter().map(|a| a.fcnt).collect();
            assert_eq!((kept(&l), waiting), (vec![], last.clone()));
            store.set_state_fails(None);
            l.end_round(t0 + Duration::from_secs(3)).unwrap();
            let copies = l.buffer.copies().unwrap();
            let frames: Vec<u32> = copies[0].frames.iter().map(|&(f, _, _)| f).collect();
            assert_eq!((kept(&l), frames, l.unsaved.len()), (vec![taken], last, 0));
        }

        /// A session's frames the disk refuses to keep are told as such, and its counter kept;
        /// its counter refused is told as the counter, and both as both: the operator is
        /// pointed at what was not kept. Once per session released.
        #[test]
        fn frames_not_kept_are_told_apart_from_a_counter_not_kept() {
            let refused = |prefix: &[u8]| {
                let (mut l, mut reports, store, t0) = ledger(&BufferConfig::default());
                l.buffer
                    .set_key_prints(HashMap::from([((1, [1; 8]), [4; 4])]));
                l.buffer.set_boot_id(Some(7));
                store.set_state_fails(Some(prefix));
                let counters = Counters {
                    advanced: vec![accepted(ONE, 7, [7; 4], Some(t0))],
                    replayed: None,
                };
                l.take(vec![record(7)], counters, Ack::None, t0);
                l.end_round(t0).unwrap();
                l.delivered(reports.try_recv().unwrap(), t0).unwrap();
                let kept_copies = l.buffer.copies().unwrap().len();
                let problems = l.metrics.recent_problems().into_iter();
                (
                    (kept(&l), kept_copies),
                    l.metrics.problems("buffer_write_error"),
                    problems.map(|w| w.line).collect::<Vec<_>>(),
                )
            };
            let refuses = "buffer storage: the disk refuses the write";
            assert_eq!(
                refused(b"fcnt-copies/"),
                (
                    (vec![7], 0),
                    1,
                    vec![format!("cannot keep the frames 00000001 accepted last (a copy of one heard after a restart may be taken again): {refuses}")]
                )
            );
            assert_eq!(
                refused(b"fcnt/"),
                (
                    (vec![], 1),
                    1,
                    vec![format!(
                        "cannot keep the frame counter of 00000001: {refuses}"
                    )]
                )
            );
            assert_eq!(
                refused(b"fcnt"),
                (
                    (vec![], 0),
                    1,
                    vec![format!("cannot keep the frame counter of 00000001 ({refuses}) nor the frames it accepted last ({refuses})")]
                )
            );
        }

        /// A session that restarts its counter keeps only the frames accepted less than the
        /// copy window before its newest (a copy of an older one cannot come within the window
        /// after a restart); another session, its frames given without when, keeps none: its
        /// counter refuses a copy by itself, and its uplinks write the counter only.
        #[test]
        fn only_a_resetting_sessions_frames_within_the_copy_window_are_kept() {
            let (mut l, mut reports, store, t0) = ledger(&BufferConfig::default());
            let prints = [((1, [1; 8]), [4; 4]), ((2, [2; 8]), [5; 4])];
            l.buffer.set_key_prints(HashMap::from(prints));
            l.buffer.set_boot_id(Some(7));
            let second = Duration::from_secs(1);
            let mut deliver = |n: u32, dev: u8, at: Option<Instant>| {
                let (dev_addr, dev_eui) = (DevAddr(u32::from(dev)), DevEui([dev; 8]));
                let counters = Counters {
                    advanced: vec![accepted((dev_addr, dev_eui), n, [n as u8; 4], at)],
                    replayed: None,
                };
                let before = store.state_written();
                l.take(vec![record(n)], counters, Ack::None, t0);
                l.end_round(t0).unwrap();
                l.delivered(reports.try_recv().unwrap(), t0).unwrap();
                let copies = l.buffer.copies().unwrap().into_iter();
                let kept = copies.map(|k| (k.dev_addr, k.frames.iter().map(|f| f.0).collect()));
                (
                    kept.collect::<Vec<(u32, Vec<u32>)>>(),
                    store.state_written() - before,
                )
            };
            let counter = 17 + 12;
            assert_eq!(
                deliver(7, 1, Some(t0)),
                (vec![(1, vec![7])], counter + 24 + 36)
            );
            let later = t0 + 2 * second;
            assert_eq!(deliver(8, 1, Some(later)).0, [(1, vec![7, 8])]);
            assert_eq!(
                deliver(9, 2, None),
                (vec![(1, vec![7, 8])], counter),
                "(frames kept, state bytes written) of the other session"
            );
            let newest = t0 + COPY_WINDOW + second;
            assert_eq!(deliver(10, 1, Some(newest)).0, [(1, vec![8, 10])]);
            assert_eq!(kept(&l), [10, 9], "the counters of DevAddr 1 and 2");
        }

        /// Under steady traffic a session nearly always has a frame held: the next one is with
        /// the sink when the last is confirmed. Its counter is kept all the same: that of the
        /// newest frame whose records, and every earlier frame's, are durable.
        #[test]
        fn a_session_with_a_frame_always_held_keeps_its_counter() {
            let (mut l, mut reports, _store, t0) = ledger(&BufferConfig::default());
            l.take(vec![record(7)], advanced(7), Ack::None, t0);
            l.end_round(t0).unwrap();
            for n in 8..11 {
                l.take(vec![record(n)], advanced(n), Ack::None, t0);
                l.end_round(t0).unwrap();
                let earlier = reports.try_recv().unwrap();
                l.delivered(earlier, t0).unwrap();
                assert_eq!(kept(&l), [n - 1], "frame {n} is with the sink");
            }
            assert_eq!(l.taken[&(DevAddr(1), DevEui([1; 8]))].len(), 1);
            l.delivered(reports.try_recv().unwrap(), t0).unwrap();
            assert_eq!(kept(&l), [10]);
            assert!(l.taken.is_empty(), "nothing left to keep");
        }

        /// A frame of two records, both with the sink. The first fails (transient), so it is
        /// buffered; its flush is not done (here: failed). A copy of the frame (the same MQTT
        /// message delivered again on a new connection) is not acknowledged when the sink
        /// confirms the second record: the first is not durable yet. Once a flush works, the
        /// input and the copy are acknowledged and the counter kept.
        #[test]
        fn a_copy_waits_for_a_sibling_buffered_and_not_flushed() {
            let (mut l, mut reports, store, t0) = ledger(&BufferConfig::default());
            let (ack, mut acked) = puback(1);
            l.take(vec![record(1), record(2)], advanced(7), ack, t0);
            l.end_round(t0).unwrap();
            let one = reports.try_recv().unwrap();
            let two = reports.try_recv().unwrap();
            store.set_flush_fails(true);
            let failed = Delivery {
                seq: one.seq,
                result: Err(SinkError::Retry("timeout".into())),
            };
            l.delivered(failed, t0).unwrap();
            l.end_round(t0).unwrap();
            assert_eq!(l.buffered(), 1, "record 1 is written, its flush failed");
            let (copy, mut copy_acked) = puback(2);
            l.take(Vec::new(), replayed(7), copy, t0);
            l.end_round(t0).unwrap();
            l.delivered(two, t0).unwrap();
            l.end_round(t0).unwrap();
            assert!(acked.try_recv().is_err(), "the input itself waits");
            assert!(kept(&l).is_empty(), "the counter waits");
            assert!(
                copy_acked.try_recv().is_err(),
                "the copy is acknowledged while record 1 is not durable"
            );
            store.set_flush_fails(false);
            l.end_round(t0).unwrap();
            assert_eq!(pkids(&mut acked), [1]);
            assert_eq!(pkids(&mut copy_acked), [2]);
            assert_eq!(kept(&l), [7]);
        }

        /// A frame late (7, after 8) leaves its session's counter at 8; a copy of it (the
        /// MQTT message delivered again) is acknowledged with 7's record, not before: 8's
        /// confirmation does not make 7 durable.
        #[test]
        fn a_copy_of_a_frame_late_waits_for_its_record() {
            let (mut l, mut reports, _store, t0) = ledger(&BufferConfig::default());
            let newer = accepted(ONE, 8, [8; 4], None);
            let late = crate::lorawan::Accepted { fcnt: 7, ..newer };
            for (n, a) in [(8, newer), (7, late)] {
                let counters = Counters {
                    advanced: vec![a],
                    replayed: None,
                };
                l.take(vec![record(n)], counters, Ack::None, t0);
            }
            l.end_round(t0).unwrap();
            let eight = reports.try_recv().unwrap();
            let seven = reports.try_recv().unwrap();
            l.delivered(eight, t0).unwrap();
            let (copy, mut copy_acked) = puback(2);
            l.take(Vec::new(), replayed(7), copy, t0);
            l.end_round(t0).unwrap();
            assert!(
                copy_acked.try_recv().is_err(),
                "the copy is acknowledged while 7's record is not durable"
            );
            l.delivered(seven, t0).unwrap();
            l.end_round(t0).unwrap();
            assert_eq!(pkids(&mut copy_acked), [2]);
            assert_eq!(kept(&l), [8]);
        }

        /// A copy of a record buffered and not yet covered by a flush that is done (here: its
        /// flush failed) is found durable by the de-duplication (the network server's event
        /// first, the gateway's frame second; or, after a restart, a redelivery of a record the
        /// last run buffered). Its counter waits, as its acknowledgement does, for a flush that
        /// starts later: kept at once, a flush already running could make it durable before
        /// the record's segment is synced.
        #[test]
        fn a_copy_of_a_buffered_record_keeps_its_counter_after_a_later_flush() {
            let cfg = BufferConfig::default();
            let (mut l, _reports, store, t0) = ledger(&cfg);
            let (ack, mut acked) = puback(1);
            l.take(vec![record(1)], Counters::default(), ack, t0);
            l.end_round(t0).unwrap();
            store.set_flush_fails(true);
            let late = t0 + cfg.spill_after;
            l.tick(late);
            l.end_round(late).unwrap();
            assert_eq!(l.buffered(), 1, "record 1 is written, its flush failed");
            let (copy, mut copy_acked) = puback(2);
            l.take(vec![record(1)], advanced(7), copy, late);
            l.end_round(late).unwrap();
            assert_eq!(l.buffered(), 1, "a copy, not buffered again");
            assert!(kept(&l).is_empty(), "record 1 is not durable");
            assert!(copy_acked.try_recv().is_err());
            store.set_flush_fails(false);
            l.end_round(late).unwrap();
            assert_eq!(kept(&l), [7]);
            assert_eq!(pkids(&mut acked), [1]);
            assert_eq!(pkids(&mut copy_acked), [2]);
        }

        /// A record the sink refuses is dead-lettered at once, and the de-duplication still
        /// has it pending. A copy of it that carries counters (the gateway's frame after the
        /// network server's event) keeps its counter as a copy of a durable record does (here
        /// at once: its dead letter's flush is done), and leaves nothing behind that holds
        /// its session: a later frame's counter is kept on its delivery.
        #[test]
        fn a_copy_of_a_dead_lettered_record_does_not_hold_its_session() {
            let (mut l, _store, t0) = refusing_one("id-1");
            let (ack, mut acked) = puback(1);
            l.take(vec![record(1)], Counters::default(), ack, t0);
            l.end_round(t0).unwrap();
            assert_eq!((l.buffer.dead_letters(), pkids(&mut acked)), (1, vec![1]));
            let (copy, mut copy_acked) = puback(2);
            l.take(vec![record(1)], advanced(7), copy, t0);
            l.end_round(t0).unwrap();
            assert_eq!(
                l.buffer.dead_letters(),
                1,
                "a copy, not dead-lettered again"
            );
            assert_eq!(pkids(&mut copy_acked), [2]);
            assert_eq!(kept(&l), [7]);
            assert!(l.unsettled.is_empty(), "{:?}", l.unsettled);
            l.take(vec![record(2)], advanced(8), Ack::None, t0);
            l.end_round(t0).unwrap();
            let seq = *l.in_flight.keys().next().unwrap();
            l.delivered(Delivery { seq, result: Ok(1) }, t0).unwrap();
            assert_eq!(kept(&l), [8]);
        }

        /// The same with a sibling dead-lettered at once (refused as it is sent): the copy
        /// waits for the dead letter's flush too, and is acknowledged with it.
        #[test]
        fn a_copy_waits_for_a_dead_lettered_sibling_to_be_flushed() {
            let (mut l, store, t0) = refusing_one("id-1");
            store.set_flush_fails(true);
            let (ack, mut acked) = puback(1);
            l.take(vec![record(1), record(2)], advanced(7), ack, t0);
            l.end_round(t0).unwrap();
            assert_eq!(l.buffer.dead_letters(), 1);
            let (copy, mut copy_acked) = puback(2);
            l.take(Vec::new(), replayed(7), copy, t0);
            l.end_round(t0).unwrap();
            let seq2 = *l.in_flight.keys().next().unwrap();
            l.delivered(
                Delivery {
                    seq: seq2,
                    result: Ok(1),
                },
                t0,
            )
            .unwrap();
            l.end_round(t0).unwrap();
            assert!(acked.try_recv().is_err(), "the input itself waits");
            assert!(
                copy_acked.try_recv().is_err(),
                "the copy is acknowledged while the dead letter is not flushed"
            );
            assert!(kept(&l).is_empty(), "the counter waits");
            store.set_flush_fails(false);
            l.end_round(t0).unwrap();
            assert_eq!(pkids(&mut acked), [1]);
            assert_eq!(pkids(&mut copy_acked), [2]);
            assert_eq!(kept(&l), [7]);
        }
    }

    /// A sink that refuses to take anything (transport down) until `up`, then confirms what
    /// it is sent, as the stdout sink does, keeping the bodies.
    struct Switch {
        up: Arc<std::sync::atomic::AtomicBool>,
        bodies: Arc<std::sync::Mutex<Vec<String>>>,
        deliveries: crate::sink::Deliveries,
    }

    impl Sink for Switch {
        fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
            if !self.up.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(SinkError::Retry("down".into()));
            }
            self.bodies.lock().unwrap().push(rec.body.clone());
            let _ = self.deliveries.send(Delivery {
                seq,
                result: Ok(100),
            });
            Ok(())
        }

        fn flush(&mut self, _timeout: Duration) {}
    }

    /// What a test holds of a ledger whose sink is a [`Switch`]: its reports, whether the
    /// sink is up, and the bodies it confirmed.
    type Switched = (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<std::sync::atomic::AtomicBool>,
        Arc<std::sync::Mutex<Vec<String>>>,
    );

    /// A ledger over `buffer` with `cfg`, started at `now`, whose sink is a [`Switch`] (up as
    /// given).
    fn switch_ledger(
        cfg: &BufferConfig,
        buffer: Buffer,
        metrics: &Arc<Metrics>,
        up: bool,
        now: (Instant, SystemTime),
    ) -> Switched {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(up));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let sink = Switch {
            up: up.clone(),
            bodies: bodies.clone(),
            deliveries: tx,
        };
        let ledger = Ledger::new(cfg, 16, buffer, Box::new(sink), metrics.clone(), now, 1).unwrap();
        (ledger, reports, up, bodies)
    }

    /// A ledger over a memory buffer whose sink is a [`Switch`] (up as given), started at
    /// `now` with the clock trusted or not.
    #[allow(clippy::type_complexity)]
    fn switched_ledger(
        up: bool,
        now: (Instant, SystemTime),
        trusted: bool,
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<Metrics>,
        Arc<std::sync::atomic::AtomicBool>,
        Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        let cfg = BufferConfig::default();
        let metrics = Metrics::new();
        let buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        let (mut ledger, reports, up, bodies) = switch_ledger(&cfg, buffer, &metrics, up, now);
        ledger.clock(trusted, now.0, now.1);
        (ledger, reports, metrics, up, bodies)
    }

    /// A gateway whose clock's state nothing can tell (adjtimex refused under
    /// `ProtectClock=yes`, chrony or ntpd instead of systemd-timesyncd) boots with
    /// fake-hwclock's saved time, a month old but from 2026 on, so the clock is trusted.
    /// Readings taken then are stamped with that time and buffered while the uplink is down.
    /// Two seconds later NTP steps the clock a month forward. The readings are two seconds
    /// old: the drain must not drop them as older than `max_age` (7 days), in this run nor
    /// after a restart. The same holds for a synchronised clock stepped forward by more than
    /// `max_age` (a wrong NTP or GPS time).
    #[test]
    fn a_forward_step_of_the_clock_does_not_expire_records_taken_just_before_it() {
        for restart in [None, Some(Restart::BeforeTheStep), Some(Restart::AfterIt)] {
            forward_step(restart);
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Restart {
        BeforeTheStep,
        AfterIt,
    }

    /// The ledger again over the same buffer, as after a restart at `now`.
    fn restarted(ledger: Ledger, metrics: &Arc<Metrics>, now: (Instant, SystemTime)) -> Ledger {
        let cfg = BufferConfig::default();
        let mut ledger = Ledger::new(
            &cfg,
            16,
            ledger.buffer,
            ledger.sink,
            metrics.clone(),
            now,
            1,
        )
        .unwrap();
        ledger.clock(true, now.0, now.1);
        ledger
    }

    const DAY: u64 = 86_400;

    /// A ledger over `buffer` whose sink is a [`Switch`], up as given, started at `now`
    /// with the clock read once (trusted or not) at `first` (instant, wall).
    #[allow(clippy::type_complexity)]
    fn over(
        buffer: Buffer,
        metrics: &Arc<Metrics>,
        up: bool,
        now: (Instant, SystemTime),
        first: (bool, Instant, SystemTime),
    ) -> (
        Ledger,
        tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let cfg = BufferConfig::default();
        let (mut ledger, reports, up, _) = switch_ledger(&cfg, buffer, metrics, up, now);
        ledger.clock(first.0, first.1, first.2);
        (ledger, reports, up)
    }

    fn sled_buffer(dir: &std::path::Path, metrics: &Arc<Metrics>) -> Buffer {
        let store = crate::buffer::SledStore::open(dir).unwrap();
        Buffer::new(Box::new(store), &BufferConfig::default(), metrics.clone())
    }

    /// Rounds at each of `secs` seconds after `t0` (wall `w0` then), the clock trusted,
    /// the sink's reports taken; returns the records delivered.
    fn rounds(
        ledger: &mut Ledger,
        reports: &mut tokio::sync::mpsc::UnboundedReceiver<Delivery>,
        (t0, w0): (Instant, SystemTime),
        secs: impl IntoIterator<Item = u64>,
    ) -> u64 {
        let mut delivered = 0;
        for s in secs {
            let now = t0 + Duration::from_secs(s);
            ledger.clock(true, now, w0 + Duration::from_secs(s));
            ledger.tick(now);
            ledger.end_round(now).unwrap();
            while let Ok(d) = reports.try_recv() {
                delivered += 1;
                ledger.delivered(d, now).unwrap();
            }
        }
        delivered
    }

    /// Takes `n` records stamped `wall` at `now`, each round ended.
    fn take_stamped(ledger: &mut Ledger, n: u32, wall: SystemTime, now: Instant) {
        for i in 0..n {
            let rec = Record {
                created_ms: ms_since_epoch(wall),
                ..record(1000 + i)
            };
            ledger.take(vec![rec], Counters::default(), Ack::None, now);
            ledger.end_round(now).unwrap();
        }
    }

    /// Run 1: the sink is up, so records go straight to it and none is buffered; the
    /// clock (fake-hwclock's stale time, trusted as nothing can tell) is stepped a month
    /// forward by NTP after 100 of them. The step is kept with "records before #100".
    /// Run 2 (a restart the next day, clock right) must number its records from #100 on,
    /// not from the highest *stored* one + 1 (0 here), or they would count the month-long
    /// step they never saw: buffered while the uplink is down for 8 days, they are 8 days
    /// old, past max_age (7 days), and are dropped, not delivered.
    #[test]
    fn a_step_kept_from_an_earlier_run_does_not_age_the_next_runs_records() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let stale = right - Duration::from_secs(30 * DAY);
        let t0 = Instant::now();
        {
            let buffer = sled_buffer(dir.path(), &metrics);
            let start = (t0, stale);
            let (mut ledger, mut reports, _up) =
                over(buffer, &metrics, true, start, (true, t0, stale));
            take_stamped(&mut ledger, 100, stale, t0);
            assert_eq!(rounds(&mut ledger, &mut reports, start, [0]), 100);
            assert_eq!(ledger.buffered(), 0, "nothing buffered in run 1");
            // NTP steps the clock a month forward.
            let s = Duration::from_secs(1);
            ledger.clock(true, t0 + s, right + s);
            ledger.end_round(t0 + s).unwrap();
            rounds(&mut ledger, &mut reports, (t0 + s, right + s), 1..5);
            assert_eq!(metrics.problems("clock_stepped"), 1);
            ledger.commit(Instant::now(), true).unwrap();
        }
        // Run 2, the next day, the clock right from the start.
        let t1 = t0 + Duration::from_secs(DAY);
        let w1 = right + Duration::from_secs(DAY);
        let buffer = sled_buffer(dir.path(), &metrics);
        let (mut ledger, mut reports, up) = over(buffer, &metrics, false, (t1, w1), (true, t1, w1));
        take_stamped(&mut ledger, 3, w1, t1);
        assert_eq!(ledger.buffered(), 3, "the uplink is down: buffered");
        // Eight days later the uplink is back.
        let t2 = t1 + Duration::from_secs(8 * DAY);
        let w2 = w1 + Duration::from_secs(8 * DAY);
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let delivered = rounds(&mut ledger, &mut reports, (t2, w2), 0..5);
        assert_eq!(
            (metrics.dropped_expired.get(), delivered),
            (3, 0),
            "records 8 days old (max_age 7 days) delivered: they counted run 1's 30-day step"
        );
    }

    /// A Pi without fake-hwclock starts hubgate at 1970; NTP sets the clock between the
    /// ledger's start and the forwarder's first clock check. That first reading is where
    /// ages count from, not a forward step of 56 years from the start's time (kept for good
    /// in the buffer's state, it would keep the earlier run's records from ever expiring):
    /// records 8 days old expire.
    #[test]
    fn the_first_clock_check_after_an_untrusted_start_is_no_step() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let t0 = Instant::now();
        {
            let buffer = sled_buffer(dir.path(), &metrics);
            let (mut ledger, _reports, _up) =
                over(buffer, &metrics, false, (t0, right), (true, t0, right));
            take_stamped(&mut ledger, 3, right, t0);
            // Known to be synchronised, so a reboot does not make them younger either.
            ledger.clock_source(true, None);
            ledger.clock(true, t0, right);
            ledger.commit(Instant::now(), true).unwrap();
        }
        // Reboot at 1970; the clock is set a moment after the ledger's start.
        let booted = SystemTime::UNIX_EPOCH + Duration::from_secs(42);
        assert!(!crate::clock::trusted(None, booted));
        let t1 = t0 + Duration::from_secs(60);
        let w1 = right + Duration::from_secs(8 * DAY);
        let buffer = sled_buffer(dir.path(), &metrics);
        let ms = Duration::from_millis(5);
        let (mut ledger, mut reports, _up) =
            over(buffer, &metrics, true, (t1, booted), (true, t1 + ms, w1));
        let delivered = rounds(&mut ledger, &mut reports, (t1 + ms, w1), 0..5);
        assert_eq!(
            (
                metrics.problems("clock_stepped"),
                metrics.dropped_expired.get(),
                delivered
            ),
            (0, 3, 0),
            "records 8 days old (max_age 7 days): the clock's setting taken for a step \
             of 56 years, and they were delivered"
        );
    }

    /// A gateway power-cycled while its uplink was down ("turn it off and on again"):
    /// before, it ran on fake-hwclock's time, a month stale but trusted (nothing can tell
    /// its state), and buffered readings stamped with it. At the next boot the network is
    /// there and NTP steps the clock before hubgate starts. The readings are minutes old:
    /// the first drain must not drop them as older than max_age. In the same boot (the
    /// agent restarted) the step is measured and kept as one; across a reboot, or where the
    /// boot cannot be told, the time hubgate was not running does not count in their age.
    /// Readings stamped by a clock known to be synchronised age by it across a reboot, and
    /// within one boot without a step, hubgate stopped for 8 days: those 8 days old expire.
    #[test]
    fn a_step_while_hubgate_is_down_does_not_expire_the_readings_before_it() {
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let stale = right - Duration::from_secs(30 * DAY);
        assert!(crate::clock::trusted(None, stale));
        let boot = |id, started_s: u64| {
            Some(Boot {
                id,
                started_ms: (started_s * 1000) as i64,
            })
        };
        let (b0, month) = (1_700_000_000, 30 * DAY);
        let (later, week_on) = (
            right + Duration::from_secs(300),
            stale + Duration::from_secs(8 * DAY),
        );
        // The last run's clock (synchronised, boot), this run's and its time; then the
        // readings expired, delivered, and steps measured.
        for (then, now, w1, expected) in [
            ((false, None), (false, None), later, (0, 3, 0)),
            (
                (false, boot(1, b0)),
                (false, boot(2, b0 + month)),
                later,
                (0, 3, 0),
            ),
            (
                (false, boot(1, b0)),
                (false, boot(1, b0 + month)),
                later,
                (0, 3, 1),
            ),
            (
                (true, boot(1, b0)),
                (true, boot(1, b0 + month)),
                later,
                (0, 3, 1),
            ),
            (
                (false, boot(1, b0)),
                (false, boot(1, b0)),
                week_on,
                (3, 0, 0),
            ),
            ((true, None), (true, None), week_on, (3, 0, 0)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let metrics = Metrics::new();
            let t0 = Instant::now();
            {
                let buffer = sled_buffer(dir.path(), &metrics);
                let (mut ledger, _reports, _up) =
                    over(buffer, &metrics, false, (t0, stale), (true, t0, stale));
                ledger.clock_source(then.0, then.1);
                ledger.clock(true, t0, stale);
                take_stamped(&mut ledger, 3, stale, t0);
                assert_eq!(ledger.buffered(), 3);
                ledger.commit(Instant::now(), true).unwrap();
            }
            let t1 = t0 + Duration::from_secs(300);
            let buffer = sled_buffer(dir.path(), &metrics);
            let (mut ledger, mut reports, up) =
                over(buffer, &metrics, true, (t1, w1), (false, t1, w1));
            ledger.clock_source(now.0, now.1);
            up.store(true, std::sync::atomic::Ordering::Relaxed);
            let delivered = rounds(&mut ledger, &mut reports, (t1, w1), 0..5);
            assert_eq!(
                (
                    metrics.dropped_expired.get(),
                    delivered,
                    metrics.problems("clock_stepped")
                ),
                expected,
                "last run's clock {then:?}, this run's {now:?}"
            );
        }
    }

    /// A gateway whose clock's state nothing can tell and whose boot cannot be told runs on
    /// the right time; its last run kept that reading. A wrong time source steps the clock
    /// a month back, and readings stamped with it are buffered while the uplink is down.
    /// hubgate restarts, and meanwhile the clock is set right again, a month forward. The
    /// readings are seconds old: the time hubgate was not running, by the clock, is measured
    /// from the reading kept before the step back, so the step forward is not seen, and
    /// they must not be dropped as a month old (max_age 7 days).
    #[test]
    fn a_step_back_and_forward_again_across_a_restart_does_not_expire_the_readings_between() {
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let s = Duration::from_secs;
        let behind = right + s(1) - s(30 * DAY);
        assert!(crate::clock::trusted(None, behind));
        let metrics = Metrics::new();
        let t0 = Instant::now();
        let buffer = Buffer::new(
            Box::new(MemoryStore::default()),
            &BufferConfig::default(),
            metrics.clone(),
        );
        let (mut ledger, _reports, _up) =
            over(buffer, &metrics, false, (t0, right), (true, t0, right));
        ledger.clock(true, t0 + s(1), behind);
        take_stamped(&mut ledger, 3, behind, t0 + s(1));
        assert_eq!(ledger.buffered(), 3, "the uplink is down: buffered");
        ledger.commit(t0 + s(1), true).unwrap();
        let t1 = t0 + s(2);
        let (mut ledger, mut reports, up) = over(
            ledger.buffer,
            &metrics,
            true,
            (t1, right + s(2)),
            (true, t1, right + s(2)),
        );
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let delivered = rounds(&mut ledger, &mut reports, (t1, right + s(2)), 0..5);
        assert_eq!(
            (metrics.dropped_expired.get(), delivered),
            (0, 3),
            "readings a second old dropped as a month old: the step forward across the \
             restart measured from the reading kept before the step back"
        );
    }

    /// A synchronised clock (its reading kept; the boot cannot be told), and the machine
    /// paused for a month: the monotonic clock stops, the wall clock goes on. The clock then
    /// steps ten days back and is no longer synchronised; readings taken before the next check
    /// are stamped by it, ten days behind the true time. The check finds the clock untrusted,
    /// and hubgate restarts after a reboot at the right time: the readings, seconds old, must
    /// not be aged by the ten days (max_age 7 days), which the kept reading, synchronised,
    /// would let the next run count.
    #[test]
    fn readings_taken_as_the_clock_loses_its_sync_are_not_aged_by_a_step_back_before_it() {
        let (cfg, metrics, t0, s) = (
            BufferConfig::default(),
            Metrics::new(),
            Instant::now(),
            Duration::from_secs,
        );
        let right = SystemTime::UNIX_EPOCH + s(1_782_600_000);
        let shown = right + s(30 * DAY) - s(10 * DAY);
        let buffer = Buffer::new(Box::new(MemoryStore::default()), &cfg, metrics.clone());
        let (mut ledger, _reports, _up, _) =
            switch_ledger(&cfg, buffer, &metrics, false, (t0, right));
        ledger.clock_source(true, None);
        ledger.clock(true, t0, right);
        take_stamped(&mut ledger, 3, shown, t0);
        assert_eq!(ledger.buffered(), 3, "the uplink is down: buffered");
        ledger.clock_source(false, None);
        ledger.clock(false, t0 + s(1), shown + s(1));
        ledger.commit(t0 + s(1), true).unwrap();
        let t1 = t0 + s(2);
        let wall1 = right + s(30 * DAY) + s(2);
        let (mut ledger, mut reports, up, _) = switch_ledger(
            &BufferConfig::default(),
            ledger.buffer,
            &metrics,
            true,
            (t1, wall1),
        );
        ledger.clock_source(true, None);
        ledger.clock(true, t1, wall1);
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let delivered = rounds(&mut ledger, &mut reports, (t1, wall1), 0..5);
        assert_eq!(
            (metrics.dropped_expired.get(), delivered),
            (0, 3),
            "readings seconds old dropped as ten days old"
        );
    }

    /// While records are buffered, the kept reading of the clock (what a reboot counts the
    /// time hubgate was not running from) is at most a minute old; a step is kept at once.
    #[test]
    fn the_kept_reading_of_the_clock_stays_fresh_while_records_are_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let (t0, w0) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000),
        );
        let buffer = sled_buffer(dir.path(), &metrics);
        let (mut ledger, mut reports, _up) =
            over(buffer, &metrics, false, (t0, w0), (true, t0, w0));
        take_stamped(&mut ledger, 1, w0, t0);
        rounds(&mut ledger, &mut reports, (t0, w0), 0..600);
        let kept = ledger.kept_reading.unwrap().wall_ms;
        let last = ms_since_epoch(w0) + 599_000;
        assert!((last - 60_000..=last).contains(&kept), "{kept} vs {last}");
        let started = |s| {
            Some(Boot {
                id: 1,
                started_ms: s,
            })
        };
        ledger.clock_source(false, started(0));
        ledger.clock(true, t0, w0);
        ledger.clock_source(false, started(600));
        ledger.clock(true, t0, w0);
        assert_eq!(
            ledger.kept_reading.unwrap().boot,
            started(600),
            "moved by a step"
        );
    }

    /// A buffer written by a release that kept no reading of the clock (its records, its
    /// steps) opens; nothing from before is made younger: a record 8 days old expires.
    #[test]
    fn a_buffer_without_a_kept_reading_of_the_clock_opens_and_ages_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let w1 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let created_ms = ms_since_epoch(w1) - 8 * DAY * 1000;
        {
            let mut buffer = sled_buffer(dir.path(), &metrics);
            let rec = Record {
                created_ms,
                ..record(0)
            };
            buffer.push(0, &rec).unwrap();
            let mut steps = ClockSteps::default();
            steps.stepped(1_000, 1);
            buffer
                .save_clock_state(ClockState::Steps, &steps.encode())
                .unwrap();
            buffer.flush().unwrap();
            assert!(buffer.clock_state(ClockState::Reading).unwrap().is_empty());
        }
        let t1 = Instant::now();
        let buffer = sled_buffer(dir.path(), &metrics);
        let (mut ledger, mut reports, _up) = over(buffer, &metrics, true, (t1, w1), (true, t1, w1));
        assert!(ledger.last_run.is_none());
        let delivered = rounds(&mut ledger, &mut reports, (t1, w1), 0..5);
        assert_eq!((metrics.dropped_expired.get(), delivered), (1, 0));
        assert_eq!(ledger.next_seq, 1_000, "the old steps are read");
    }

    /// A gateway whose clock's state nothing can tell runs on fake-hwclock's time, a month
    /// stale but trusted, and buffers three readings stamped with it while its uplink is down.
    /// A GPS without a fix then sets the clock to its epoch (1980-01-06), a time the clock
    /// cannot show once set: not trusted. A second later NTP sets it to the right time. The
    /// readings are three seconds old; stepped from the stale time straight to the right one,
    /// the clock's month-long step is kept and they are delivered. The spell of an untrusted
    /// clock between must not make them a month old, dropped as expired (max_age 7 days).
    #[test]
    fn a_step_across_a_spell_of_an_untrusted_clock_does_not_expire_the_readings_before_it() {
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let stale = right - Duration::from_secs(30 * DAY);
        let gps_epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(315_964_800);
        assert!(crate::clock::trusted(None, stale));
        assert!(!crate::clock::trusted(None, gps_epoch));
        let t0 = Instant::now();
        let (mut ledger, mut reports, metrics, up, _) = switched_ledger(false, (t0, stale), true);
        take_stamped(&mut ledger, 3, stale, t0);
        assert_eq!(ledger.buffered(), 3, "the uplink is down: buffered");
        let s = Duration::from_secs;
        ledger.clock(false, t0 + s(1), gps_epoch);
        ledger.end_round(t0 + s(1)).unwrap();
        ledger.clock(true, t0 + s(2), right + s(2));
        ledger.end_round(t0 + s(2)).unwrap();
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let delivered = rounds(&mut ledger, &mut reports, (t0, right), 3..10);
        assert_eq!(
            (metrics.dropped_expired.get(), delivered),
            (0, 3),
            "readings three seconds old dropped as a month old: the clock's step across the \
             untrusted spell was not kept"
        );
    }

    /// A synchronised clock a month ahead (a wrong GPS time) stamps readings buffered while
    /// the uplink is down. The network comes back: the backlog drains, and NTP steps the
    /// clock a month back. A reading received 50 ms after the step, before the next clock
    /// check (every tick, 100 ms), is stamped by the clock as it is now (`record::build` is
    /// given `SystemTime::now()`), while the drain counts ages from the ledger's last reading,
    /// still a month ahead: the reading just received must not be dropped as a month old.
    #[test]
    fn a_reading_taken_just_after_a_step_back_is_not_expired_before_the_next_clock_check() {
        let right = SystemTime::UNIX_EPOCH + Duration::from_secs(1_782_600_000);
        let ahead = right + Duration::from_secs(30 * DAY);
        let t0 = Instant::now();
        let (mut ledger, mut reports, metrics, up, _) = switched_ledger(false, (t0, ahead), true);
        take_stamped(&mut ledger, 3, ahead, t0);
        assert_eq!(ledger.buffered(), 3, "the uplink is down: buffered");
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let s = Duration::from_secs;
        let mut at = s(1);
        while ledger.in_flight.len() < 3 {
            assert!(at < s(120), "the backlog was not sent");
            at += s(1);
            ledger.clock(true, t0 + at, ahead + at);
            ledger.tick(t0 + at);
            ledger.end_round(t0 + at).unwrap();
        }
        // NTP steps the clock a month back 20 ms after that check; a reading comes 30 ms later.
        let then = at + Duration::from_millis(50);
        let rec = Record {
            created_ms: ms_since_epoch(right + then),
            ..record(2000)
        };
        ledger.take(vec![rec], Counters::default(), Ack::None, t0 + then);
        ledger.end_round(t0 + then).unwrap();
        let mut delivered = 0;
        while let Ok(d) = reports.try_recv() {
            delivered += 1;
            ledger.delivered(d, t0 + then).unwrap();
        }
        let after = at + s(1);
        delivered += rounds(&mut ledger, &mut reports, (t0 + after, right + after), 0..5);
        assert_eq!(
            (metrics.dropped_expired.get(), delivered),
            (0, 4),
            "a reading 50 ms old dropped as expired: aged by the clock's last reading, a month \
             ahead"
        );
    }

    fn forward_step(restart: Option<Restart>) {
        assert_eq!(
            BufferConfig::default().max_age,
            Duration::from_secs(7 * 86_400)
        );
        // 2026-05-29: what fake-hwclock saved at the last shutdown, a month before today.
        let saved = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        assert!(crate::clock::trusted(None, saved), "nothing tells: trusted");
        let t0 = Instant::now();
        let (mut ledger, mut reports, metrics, up, _) = switched_ledger(false, (t0, saved), true);
        // Three readings, stamped as `record::build` does: with the clock's time.
        for n in 0..3 {
            let rec = Record {
                created_ms: ms_since_epoch(saved),
                ..record(n)
            };
            ledger.take(vec![rec], Counters::default(), Ack::None, t0);
            ledger.end_round(t0).unwrap();
        }
        assert_eq!(ledger.buffered(), 3, "the uplink is down: buffered");
        if restart == Some(Restart::BeforeTheStep) {
            let now = (t0 + Duration::from_secs(1), saved + Duration::from_secs(1));
            ledger = restarted(ledger, &metrics, now);
        }
        // NTP steps the clock a month forward; the uplink comes back.
        let step = Duration::from_secs(30 * 86_400);
        let now = (
            t0 + Duration::from_secs(2),
            saved + step + Duration::from_secs(2),
        );
        ledger.clock(true, now.0, now.1);
        ledger.end_round(now.0).unwrap();
        if restart == Some(Restart::AfterIt) {
            ledger = restarted(ledger, &metrics, now);
        }
        up.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut delivered = 0;
        for s in 3..600u64 {
            let now = t0 + Duration::from_secs(s);
            ledger.clock(true, now, saved + step + Duration::from_secs(s));
            ledger.tick(now);
            ledger.end_round(now).unwrap();
            while let Ok(d) = reports.try_recv() {
                delivered += 1;
                ledger.delivered(d, now).unwrap();
            }
        }
        assert_eq!(
            (metrics.dropped_expired.get(), delivered),
            (0, 3),
            "restart {restart:?}: readings two seconds old dropped as expired by the clock's step"
        );
        assert_eq!(metrics.problems("clock_stepped"), 1, "restart {restart:?}");
    }
}
