//! A model test of the forwarder's [`Ledger`], after Vector's disk buffer model tests:
//! proptest writes scripts of events, and each script drives a ledger with
//!
//! - an MQTT-like source that sends what it got no PUBACK for again after a restart (and
//!   sometimes sends a message twice, as a second gateway would), read by the shell either
//!   as a source that can wait (taken only while [`Ledger::takes_patient`]) or as one that
//!   cannot,
//! - a scripted Kafka-like sink: per-device order, reports in any order across devices and
//!   late, local queue full, transient failures, parked hubs, refusals, timeouts after the
//!   write; such a failure stops the producer (the gap-less guarantee) until `tick` replaces
//!   it, and a replaced or dropped producer makes no report on what it held (librdkafka
//!   purges it); a timeout in the producer (`message.timeout.ms`, written or not) does not
//!   stop it; one device's hub can go missing, refusing its records at hand-over (parked)
//!   while records sent before still get through and end the park; a device's topic can
//!   refuse every record for a while (schema validation turned on, then lifted), and a
//!   record can be one the topic refuses for itself: either refusal comes in the record's
//!   report ([`SinkError::Doubt`], as the Kafka sink reports a record refused alone) and
//!   stops the producer,
//! - a store that keeps only what was flushed when it crashes, and can fail to flush, fail
//!   a sync (hubgate exits then, as a crash, with or without the flush's writes), refuse
//!   to write dead letters, or refuse to write records (a card whose data blocks fail: this
//!   one is not healed at the end, so what it holds back must reach the sink from memory);
//!   its
//!   flushes run beside the ledger (as on the store's thread) and are done when the script
//!   says, covering what was written before they started and some of what came after (none,
//!   all, or the first writes of it in order, as a log written front to back does); the
//!   round that takes a flush's outcome follows at once or with a later step (a crash may
//!   come first),
//! - a clock the script moves, and the shell's tick: every step of the clock while the
//!   ledger has something to do, at most once a second while it is quiet; the tick reads
//!   the wall clock as the forwarder's clock check does (its state, the boot where its id
//!   can be read), and records are stamped with the wall clock as it is when taken,
//! - a wall clock that steps forward and back (by less than `max_age`, more, an hour, a
//!   month), a GPS without a fix setting its epoch (not trusted), NTP setting the right time,
//!   a machine paused (the monotonic clock stops); where the clock's state can be told, a
//!   clock set by anything but NTP is not synchronised, so one known to be synchronised
//!   shows the right time,
//! - restarts after time down: in the same boot (the clock ran on, stepped or set right
//!   meanwhile) or another (fake-hwclock's stale time, 1970, or the right time),
//! - a stop that first takes the frames still queued into the buffer, as the shell's
//!   shutdown does.
//!
//! Each script draws `when_full` (`drop_oldest`, `drop_newest`, `block`) and `max_age`
//! (2 s, 5 s, or never within a script); some uplinks carry a dead letter of the input.
//!
//! Some uplinks make several records (as one with history records does), acknowledged once
//! all of them are durable. One device's uplinks are LoRaWAN frames of a session hubgate
//! decrypts, each uplink's number its frame counter, which hubgate's own decoder takes or
//! refuses as a replay (no records; acknowledged with its first copy's), resumed at each
//! start from the counter the store kept. The broker may deliver such a frame late (after
//! a later one, within the decoder's window: a gateway whose backhaul queued it), sends
//! what it got no PUBACK for again in the order first sent, and a second gateway may
//! publish a copy of a recent frame, in the same run or a later one. A counter kept before
//! its frame's records are durable, or one that has a late frame taken whose records are
//! not, turns a crash's redelivery into a replay: acknowledged, and lost.
//!
//! The buffer names each record it drops, with its sequence number, as it counts the drop
//! (full buffer, expired, damaged; over all restarts), and every drop counted must be named.
//! A record the buffer drops while the sink holds it (`drop_oldest` evicting it, say) is
//! counted once the sink fails it or the run gives up on its report, not if the sink
//! confirms it; a crash before either leaves it uncounted, and it may be lost. After every
//! step: no record counted as dropped was confirmed to the ledger (the same record: same run,
//! same sequence number; a copy the source sends again is another), nothing acknowledged is
//! lost (every record of it delivered, or in the flushed buffer, or dead-lettered) but records
//! the buffer dropped or a crash cut short so, compared by id, and memory stays bounded (no
//! more drops held for a report than records in flight), and only records refused for good
//! at hand-over, records a topic refuses for themselves (each once a run) and dead letters
//! of the input are dead-lettered. At the end, once the sink heals and the topics take
//! records again (later uplinks come one by one while a record refused for itself waits for
//! the verdict they give): every record is delivered or dead-lettered but those, nothing
//! is stuck, duplicates stay within the stated bound, and, unless a timeout in the producer
//! let it go on, each device's records that were never dropped (nor refused by their topic)
//! were first delivered in order. No record is dropped as expired before it was really held
//! `max_age` (the model's real time, time down and pauses included): records expire later
//! than due when the clock steps, never sooner.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::clock_steps::Boot;
use super::forwarder::IDLE_TICK;
use super::ledger::Ledger;
use crate::buffer::{self, Buffer, BufferError, Entries, MemoryStore, Store};
use crate::config::{BufferConfig, WhenFull};
use crate::ids::DevEui;
use crate::lorawan::fcnt::LATE_WINDOW;
use crate::lorawan::{Counters, Decoder, DevAddr, LorawanError, Session};
use crate::metrics::Metrics;
use crate::record::{Record, DEAD_LETTER};
use crate::sink::{Delivery, Sink, SinkError};
use crate::source::{Ack, PubAck};
use crate::uplink::Radio;

const DEVICES: u32 = 3;
/// At most this many frames per `Take` step (a round of the shell).
const TAKE_MAX: u8 = 6;
/// At most this many records per uplink.
const PARTS_MAX: u8 = 3;
const DEDUP_WINDOW: usize = 64;
/// The device whose uplinks are frames of a LoRaWAN session, each uplink's number its
/// frame counter.
const SESSION_DEVICE: u32 = 0;
const DEV_ADDR: DevAddr = DevAddr(0x2601_1bda);
const DEV_EUI: DevEui = DevEui([0x58, 0xa0, 0xcb, 0, 0, 0, 0, 1]);
/// A copy ([`Step::Copy`]) is of one of the session's last this many frames: a second
/// gateway's comes soon after the first, while its records may be in flight.
const COPY_OF_LAST: usize = 3;
/// The device whose hub can go missing at hand-over (`Step::HubMissing`).
const HUB_DEVICE: u32 = 1;
/// Every this many uplinks, the uplink's first record is a dead letter of the input.
const DEAD_LETTER_EVERY: u32 = 7;
/// While a record the topic refuses for itself waits for its verdict at the end (a record of
/// its device sent after the refusal, confirmed), an uplink comes every this many rounds
/// (seconds), the devices in turn: one at a time, as readings come, so that a full buffer
/// does not drop them all.
const LATER_EVERY: usize = 10;
/// Rounds of a second each, at the end, for everything to go through.
const HEAL_ROUNDS: usize = 2000;

fn cases() -> u32 {
    std::env::var("HUBGATE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// Fixed, so that a run fails or passes the same each time; another seed explores other
/// scripts (`HUBGATE_MODEL_SEED`, `HUBGATE_MODEL_CASES`). Seed 7 was chosen when its first
/// 3,000 scripts caught a restart's de-duplication forgetting the newest buffered record,
/// which seed 1's missed, as well as the stale drain cursor after a park a success ended and
/// copies taken at shutdown buffered twice; the steps added since (frames late, copies of a
/// second gateway) draw other scripts, and those three were not put back to see them caught
/// again.
fn seed() -> u64 {
    std::env::var("HUBGATE_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Throttling, a broker gone: try again later.
    Retry,
    /// The hub of the record's recType is missing.
    Park,
    /// Refused for good (too large): dead-letter it.
    Reject,
    /// Written, but reported failed (a timeout after the write): sent again.
    Ambiguous,
    /// Timed out in the producer (`message.timeout.ms`), `written` or not; the producer
    /// goes on, so the device's later records may be written first.
    Timeout { written: bool },
}

#[derive(Debug, Clone)]
enum Step {
    /// A new uplink reaches the MQTT broker.
    Uplink,
    /// A new uplink whose last record (unless a dead letter of the input) the topic refuses
    /// for itself, whenever it is sent.
    BadUplink,
    /// The topic of the `k`-th device refuses every record (its validation turned on), or
    /// takes them again.
    Validates(u8, bool),
    /// The shell takes up to n messages (one round); `patient`: as from a source that can
    /// wait, each only while the ledger takes such frames.
    Take { n: u8, patient: bool },
    /// The broker (or a second gateway) sends one of this run's messages again.
    Again(u8),
    /// Of the frames of [`SESSION_DEVICE`] queued and never sent, the `k`-th one that can
    /// be (its decoder's window still reaches it) is delivered after the next one.
    Late(u8),
    /// A second gateway publishes a copy of one of the last [`COPY_OF_LAST`] frames of
    /// [`SESSION_DEVICE`] sent to hubgate (in any run), delivered next but for messages sent
    /// again.
    Copy(u8),
    /// The broker writes the oldest record it holds of one device and reports it.
    Confirm(u8),
    /// The oldest record of one device fails; the producer stops (gap-less), but for a
    /// timeout.
    Fail(u8, Failure),
    /// The hub of [`HUB_DEVICE`] is missing at hand-over (or there again); what was sent
    /// before goes through.
    HubMissing(bool),
    /// The shell takes the sink's reports (one round).
    Reports,
    /// The producer's local queue is full (sends refused) or not.
    QueueFull(bool),
    /// Time passes (ms), then a tick: a stopped producer is replaced, slow records spill.
    Advance(u16),
    /// Key rotation: the old sink settles, a new one takes over.
    Rotate,
    /// SIGKILL or power cut: only what was flushed stays; what the producer held was
    /// written to the broker or not.
    Crash { written: bool },
    /// SIGTERM (the shell first takes the next `received` frames into the buffer: they
    /// were in its queue), then a new start.
    Stop { received: u8 },
    /// The disk refuses flushes (or works again).
    FlushFails(bool),
    /// The disk refuses to write dead letters (or works again).
    DeadLetterFails(bool),
    /// The disk refuses to write records (or works again): a card whose data blocks fail
    /// while sled's own files work.
    AppendFails(bool),
    /// The next flush's file sync fails (or its thread dies): hubgate exits and is started
    /// again. `kept`: what the flush covered reached the disk all the same.
    SyncFails { kept: bool },
    /// The running flush is done, and also covered the first `late` writes made while it
    /// ran (all of them if there were fewer); with `round`, the shell's round that its
    /// notification starts follows at once, otherwise with the next step that makes one (a
    /// crash first keeps the flush's records and loses the acknowledgements that waited for
    /// it).
    Flushed { late: u8, round: bool },
    /// The wall clock changes; the shell reads it at its next tick, and stamps the records it
    /// takes before that with the clock as it is (as decode does).
    Clock(ClockChange),
    /// hubgate ends (`crash`: SIGKILL or a power cut, else SIGTERM), is down a while, and
    /// starts again.
    Restart { crash: bool, down: Down },
}

/// A change of the wall clock while hubgate runs.
#[derive(Debug, Clone, Copy)]
enum ClockChange {
    /// A step by this many ms, forward or back (a GPS time, a clock set by hand): the kernel
    /// takes a clock set so as not synchronised. A clock known to be synchronised shows the
    /// right time: across a restart nothing else says how its times were
    /// (docs/durability.md).
    Step(i64),
    /// NTP sets the right time; a clock not synchronised is synchronised then (nothing can
    /// say so where nothing could before).
    Ntp,
    /// The kernel says the clock is not synchronised (where it can say).
    Unsync,
    /// A GPS without a fix sets the clock to its epoch: not synchronised, a time the clock
    /// cannot show once set.
    GpsEpoch,
    /// The machine is paused this many ms (a VM): the monotonic clock and the time since
    /// boot stop, the wall clock is set forward on resume.
    Pause(u64),
}

/// How hubgate is down between two runs.
#[derive(Debug, Clone, Copy)]
enum Down {
    /// Restarted in the same boot after `ms`; the clock ran on, and was stepped by `step` ms
    /// meanwhile, or set right by NTP (`ntp`).
    Same { ms: u64, step: i64, ntp: bool },
    /// The machine boots again after `ms`, its clock as `start` says.
    Reboot { ms: u64, start: StartClock },
}

/// The wall clock a boot starts with (a Pi has no real-time clock).
#[derive(Debug, Clone, Copy)]
enum StartClock {
    /// fake-hwclock's saved time: the clock's at the shutdown, `stale_ms` older still (saved
    /// before a power cut); not synchronised.
    Saved { stale_ms: u64 },
    /// 1970 (no fake-hwclock); not synchronised.
    Epoch,
    /// The right time (NTP before hubgate starts); synchronised.
    Right,
}

/// Sizes of the clock's steps, in ms: below the model's `max_age` (2 s, 5 s), above each,
/// an hour, a month.
fn step_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(1_500u64),
        Just(3_000),
        Just(7_000),
        Just(3_600_000),
        Just(30 * 86_400_000),
    ]
}

fn clock_change() -> impl Strategy<Value = ClockChange> {
    prop_oneof![
        4 => (step_ms(), any::<bool>())
            .prop_map(|(ms, back)| ClockChange::Step(if back { -(ms as i64) } else { ms as i64 })),
        3 => Just(ClockChange::Ntp),
        1 => Just(ClockChange::Unsync),
        2 => Just(ClockChange::GpsEpoch),
        1 => prop_oneof![Just(1_500u64), Just(7_000), Just(3_600_000)].prop_map(ClockChange::Pause),
    ]
}

fn down() -> impl Strategy<Value = Down> {
    let ms = prop_oneof![
        Just(0u64),
        Just(1_000),
        Just(3_000),
        Just(10_000),
        Just(3_600_000)
    ];
    let start = prop_oneof![
        prop_oneof![Just(0u64), Just(3_600_000), Just(30 * 86_400_000)]
            .prop_map(|stale_ms| StartClock::Saved { stale_ms }),
        Just(StartClock::Epoch),
        Just(StartClock::Right),
    ];
    prop_oneof![
        (
            ms.clone(),
            prop_oneof![
                Just(0i64),
                Just(3_000),
                Just(-3_000),
                Just(30 * 86_400_000),
                Just(-30 * 86_400_000)
            ]
        )
            .prop_flat_map(|(ms, step)| any::<bool>().prop_map(move |ntp| Down::Same {
                ms,
                step,
                ntp
            })),
        (ms, start).prop_map(|(ms, start)| Down::Reboot { ms, start }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let failure = prop_oneof![
        4 => Just(Failure::Retry),
        1 => Just(Failure::Park),
        1 => Just(Failure::Reject),
        1 => Just(Failure::Ambiguous),
        1 => any::<bool>().prop_map(|written| Failure::Timeout { written }),
    ];
    prop_oneof![
        8 => Just(Step::Uplink),
        1 => Just(Step::BadUplink),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(k, on)| Step::Validates(k, on)),
        6 => (1..=TAKE_MAX, any::<bool>()).prop_map(|(n, patient)| Step::Take { n, patient }),
        1 => any::<u8>().prop_map(Step::Again),
        8 => any::<u8>().prop_map(Step::Late),
        4 => any::<u8>().prop_map(Step::Copy),
        8 => any::<u8>().prop_map(Step::Confirm),
        2 => (any::<u8>(), failure).prop_map(|(k, f)| Step::Fail(k, f)),
        // Often: a park at hand-over that a success of a record sent before it ends is
        // undone by most failures and restarts that follow, so it needs many tries.
        5 => any::<bool>().prop_map(Step::HubMissing),
        5 => Just(Step::Reports),
        1 => any::<bool>().prop_map(Step::QueueFull),
        4 => (1u16..3000).prop_map(Step::Advance),
        1 => Just(Step::Rotate),
        1 => any::<bool>().prop_map(|written| Step::Crash { written }),
        1 => (0..=TAKE_MAX).prop_map(|received| Step::Stop { received }),
        1 => any::<bool>().prop_map(Step::FlushFails),
        1 => any::<bool>().prop_map(Step::DeadLetterFails),
        1 => any::<bool>().prop_map(Step::AppendFails),
        1 => any::<bool>().prop_map(|kept| Step::SyncFails { kept }),
        6 => (prop_oneof![Just(0u8), Just(u8::MAX), 1u8..8], any::<bool>())
            .prop_map(|(late, round)| Step::Flushed { late, round }),
        5 => clock_change().prop_map(Step::Clock),
        2 => (any::<bool>(), down()).prop_map(|(crash, down)| Step::Restart { crash, down }),
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    max_in_flight: usize,
    /// `max_in_flight_bytes`, in records of the model's size.
    in_flight_records_of_bytes: u64,
    spill_after: Duration,
    /// Room for this many records in the buffer, or plenty.
    buffer_records: Option<u64>,
    when_full: WhenFull,
    max_age: Duration,
    /// This boot's id can be read (not under `ProcSubset=pid`).
    boot_id: bool,
    /// The clock's state can be told (the kernel or systemd-timesyncd answers); otherwise
    /// the clock is trusted for want of an answer whenever it shows a time it can show once
    /// set.
    clock_known: bool,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        1usize..6,
        1u64..8,
        prop_oneof![Just(50u64), Just(500), Just(2000)],
        prop::option::of(2u64..8),
        prop_oneof![
            Just(WhenFull::DropOldest),
            Just(WhenFull::DropNewest),
            Just(WhenFull::Block)
        ],
        prop_oneof![Just(2u64), Just(5), Just(1 << 30)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                max_in_flight,
                bytes,
                spill_ms,
                buffer_records,
                when_full,
                max_age,
                boot_id,
                clock_known,
            )| {
                Settings {
                    max_in_flight,
                    in_flight_records_of_bytes: bytes,
                    spill_after: Duration::from_millis(spill_ms),
                    buffer_records,
                    when_full,
                    max_age: Duration::from_secs(max_age),
                    boot_id,
                    clock_known,
                }
            },
        )
}

// ---------------------------------------------------------------------------------------
// The store: what was flushed survives a crash, nothing else.

/// A write to the store, kept while a flush runs (it may cover some of them).
#[derive(Clone)]
enum Write {
    Insert(u64, Vec<u8>),
    Remove(u64),
    State(Vec<u8>, Vec<u8>),
    StateRemove(Vec<u8>),
    DeadLetter(u64, Vec<u8>),
    Purge,
}

impl Write {
    /// Returns what the store's method returns as a number (0 where it returns nothing).
    fn apply(self, store: &mut MemoryStore) -> Result<u64, BufferError> {
        match self {
            Write::Insert(seq, v) => store.insert(seq, v).map(|()| 0),
            Write::Remove(seq) => store.remove(seq),
            Write::State(k, v) => store.state_set(&k, &v).map(|()| 0),
            Write::StateRemove(k) => store.state_remove(&k).map(|()| 0),
            Write::DeadLetter(seq, v) => store.dead_letter(seq, v).map(|()| 0),
            Write::Purge => store.purge(),
        }
    }
}

/// The live store and a copy of it as of the last flush that worked.
#[derive(Default)]
struct Disk {
    live: MemoryStore,
    synced: MemoryStore,
    /// The running flush: the live store as it started, and the writes made since.
    flushing: Option<(MemoryStore, Vec<Write>)>,
    /// The outcome of the flush that is done, not taken yet.
    outcome: Option<Result<u64, BufferError>>,
    flush_fails: bool,
    dead_letter_fails: bool,
    append_fails: bool,
    /// The next flush's sync fails; `Some(true)`: what it covered is on the disk all the same.
    sync_fails: Option<bool>,
    /// A flush failed since the last one that worked.
    unsynced: bool,
    /// The run of hubgate writing to it (0: the first).
    run: usize,
    /// Every dead letter written, with the run that wrote it.
    letters: Vec<(usize, Rec)>,
}

fn uplinks(entries: Vec<(u64, Vec<u8>)>) -> impl Iterator<Item = Rec> {
    entries
        .into_iter()
        .map(|(_, v)| rec_of(&buffer::decode(&v).expect("the model stores whole records")))
}

impl Disk {
    fn crash(&mut self) {
        self.live = self.synced.clone();
        self.flushing = None;
        self.outcome = None;
    }

    /// The running flush is done; it also covered the first `late` writes made since it
    /// started.
    fn finish_flush(&mut self, late: u8) {
        let Some((mut started, since)) = self.flushing.take() else {
            return;
        };
        for w in since.into_iter().take(late.into()) {
            w.apply(&mut started).expect("memory");
        }
        self.outcome = Some(if let Some(kept) = self.sync_fails.take() {
            self.unsynced = true;
            if kept {
                self.synced = started;
            }
            Err(BufferError::SyncFailed("the disk lost a write".into()))
        } else if self.flush_fails {
            self.unsynced = true;
            Err(BufferError::Storage("disk refuses the flush".into()))
        } else {
            self.unsynced = false;
            self.synced = started;
            Ok(1)
        });
    }

    /// Write to the live store, and keep the write for a running flush to cover.
    fn write(&mut self, w: Write) -> Result<u64, BufferError> {
        if let Some((_, since)) = &mut self.flushing {
            since.push(w.clone());
        }
        w.apply(&mut self.live)
    }

    /// Records the flushed store holds.
    fn buffered(&self) -> impl Iterator<Item = Rec> {
        uplinks(self.synced.scan(None, usize::MAX).expect("memory"))
    }

    fn dead_lettered(&self) -> BTreeSet<Rec> {
        uplinks(self.synced.scan_dead(None, usize::MAX).expect("memory")).collect()
    }

    /// Records the flushed store holds, buffered or dead-lettered.
    fn durable(&self) -> BTreeSet<Rec> {
        let mut all = self.dead_lettered();
        all.extend(self.buffered());
        all
    }
}

/// When records were taken, by the model's real time (ms): what `max_age` is held against.
#[derive(Default)]
struct Takes {
    /// Each record's first take in this run.
    this_run: BTreeMap<Rec, u64>,
    /// Each record's first take in any run.
    first: BTreeMap<Rec, u64>,
    /// The take of each record the ledger numbered, by its sequence number: set as it is
    /// first written to the store or handed to the sink (a run takes a record once: its
    /// copies are acknowledged with it).
    numbered: BTreeMap<(u64, Rec), u64>,
}

impl Takes {
    fn taken(&mut self, r: Rec, real_ms: u64) {
        self.this_run.entry(r).or_insert(real_ms);
        self.first.entry(r).or_insert(real_ms);
    }

    /// Record `seq` written to the store: taken in this run (one from an earlier run is in
    /// the store already). A number an earlier run gave the same record keeps the earlier
    /// take: a crash may bring that run's entry back in place of this one (its removal
    /// not flushed, nor this insert), and which of the two the store holds is not tracked.
    fn stored(&mut self, seq: u64, r: Rec) {
        if let Some(at) = self.this_run.get(&r).or(self.first.get(&r)).copied() {
            let kept = self.numbered.entry((seq, r)).or_insert(at);
            *kept = (*kept).min(at);
        }
    }

    /// Record `seq` handed to the sink: from the store (numbered already) or taken in this
    /// run.
    fn sent(&mut self, seq: u64, r: Rec) {
        if !self.numbered.contains_key(&(seq, r)) {
            self.stored(seq, r);
        }
    }

    /// When record `seq` was taken: numbered, or (waiting in memory since) this run's take.
    fn of(&self, seq: u64, r: Rec) -> Option<u64> {
        let at = self.numbered.get(&(seq, r)).or(self.this_run.get(&r));
        at.or(self.first.get(&r)).copied()
    }

    /// A new run. A record numbered before stays: one the store removed may come back with
    /// a crash (its removal not flushed). A number a crash lost and this run gives the same
    /// record again keeps the older take, as does one sent straight to the sink, which only
    /// makes it look older (an early expiry missed, none made up).
    fn start(&mut self) {
        self.this_run.clear();
    }
}

/// A [`MemoryStore`] whose flush can fail and whose crash keeps only what was flushed.
struct ModelStore(Arc<Mutex<Disk>>, Arc<Mutex<Takes>>);

impl ModelStore {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0.lock().unwrap()
    }
}

impl Store for ModelStore {
    fn insert(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        let mut disk = self.disk();
        if disk.append_fails {
            return Err(BufferError::Storage("disk refuses the record".into()));
        }
        let r = rec_of(&buffer::decode(&value).expect("the ledger stores whole records"));
        self.1.lock().unwrap().stored(seq, r);
        disk.write(Write::Insert(seq, value)).map(drop)
    }

    fn remove(&mut self, seq: u64) -> Result<u64, BufferError> {
        self.disk().write(Write::Remove(seq))
    }

    fn scan_within(
        &self,
        after: Option<u64>,
        limit: usize,
        bytes: u64,
    ) -> Result<Entries, BufferError> {
        self.disk().live.scan_within(after, limit, bytes)
    }

    fn seqs_back(&self, limit: usize) -> Result<Vec<u64>, BufferError> {
        self.disk().live.seqs_back(limit)
    }

    fn first_seq(&self) -> Result<Option<u64>, BufferError> {
        self.disk().live.first_seq()
    }

    fn state_set(&mut self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
        self.disk()
            .write(Write::State(key.to_vec(), value.to_vec()))
            .map(drop)
    }

    fn state_remove(&mut self, key: &[u8]) -> Result<(), BufferError> {
        self.disk()
            .write(Write::StateRemove(key.to_vec()))
            .map(drop)
    }

    fn state_scan(&self, prefix: &[u8]) -> Result<Vec<buffer::StateEntry>, BufferError> {
        self.disk().live.state_scan(prefix)
    }

    fn flush(&mut self) -> Result<u64, BufferError> {
        let mut d = self.disk();
        assert!(
            d.flushing.is_none() && d.outcome.is_none(),
            "one flush at a time"
        );
        d.flushing = Some((d.live.clone(), Vec::new()));
        d.finish_flush(0);
        d.outcome.take().expect("finished")
    }

    fn start_flush(
        &mut self,
        _done: &Arc<tokio::sync::Notify>,
    ) -> Option<Result<u64, BufferError>> {
        let mut d = self.disk();
        assert!(
            d.flushing.is_none() && d.outcome.is_none(),
            "one flush at a time"
        );
        d.flushing = Some((d.live.clone(), Vec::new()));
        None
    }

    fn flushed(&mut self, wait: bool) -> Option<Result<u64, BufferError>> {
        let mut d = self.disk();
        if wait {
            d.finish_flush(0);
        }
        d.outcome.take()
    }

    fn usage(&self) -> (u64, u64) {
        self.disk().live.usage()
    }

    fn last_seq(&self) -> Option<u64> {
        self.disk().live.last_seq()
    }

    fn dead_letter(&mut self, seq: u64, value: Vec<u8>) -> Result<(), BufferError> {
        let mut disk = self.disk();
        if disk.dead_letter_fails {
            return Err(BufferError::Storage("disk refuses the dead letter".into()));
        }
        let run = disk.run;
        disk.letters.extend(
            buffer::decode(&value)
                .ok()
                .and_then(|r| rec_named(&r.id))
                .map(|r| (run, r)),
        );
        disk.write(Write::DeadLetter(seq, value)).map(drop)
    }

    fn dead_letters(&self) -> u64 {
        self.disk().live.dead_letters()
    }

    fn scan_dead(&self, after: Option<u64>, limit: usize) -> Result<Entries, BufferError> {
        self.disk().live.scan_dead(after, limit)
    }

    fn purge(&mut self) -> Result<u64, BufferError> {
        self.disk().write(Write::Purge)
    }

    fn disk_free(&self) -> Option<u64> {
        None
    }
}

// ---------------------------------------------------------------------------------------
// The sink: a Kafka-like broker with one partition per device.

#[derive(Default)]
struct Broker {
    /// Records written, in the order written.
    log: Vec<Rec>,
    /// Records the current producers hold: (producer, seq, record, device), in send order.
    held: Vec<(u64, u64, Rec, u32)>,
    /// Producers stopped by a failure (gap-less): they take nothing until replaced.
    stopped: BTreeSet<u64>,
    queue_full: bool,
    next_producer: u64,
    /// Written but reported failed.
    ambiguous: usize,
    /// Refused for good (too large): refused again whenever sent.
    refused: BTreeSet<Rec>,
    /// [`HUB_DEVICE`]'s hub is missing: its records are refused at hand-over.
    hub_missing: bool,
    /// Devices whose topic refuses every record (validation on).
    validating: BTreeSet<u32>,
    /// Records the topic refuses for themselves.
    bad: BTreeSet<Rec>,
    /// Records reported refused by their topic ([`SinkError::Doubt`]) at least once.
    doubted: BTreeSet<Rec>,
}

impl Broker {
    fn new_producer(&mut self) -> u64 {
        self.next_producer += 1;
        self.next_producer
    }

    /// Whether the topic refuses record `r` as it comes: validation on, or a bad record.
    fn refuses(&self, r: Rec) -> bool {
        self.bad.contains(&r) || self.validating.contains(&(r.0 % DEVICES))
    }

    /// The oldest held record of the `k`-th device that has one (not of stopped producers).
    fn pick(&self, k: u8) -> Option<usize> {
        let devices: BTreeSet<u32> = self
            .held
            .iter()
            .filter(|h| !self.stopped.contains(&h.0))
            .map(|h| h.3)
            .collect();
        let device = *devices.iter().nth(k as usize % devices.len().max(1))?;
        self.held
            .iter()
            .position(|h| h.3 == device && !self.stopped.contains(&h.0))
    }
}

struct ModelSink {
    broker: Arc<Mutex<Broker>>,
    producer: u64,
    takes: Arc<Mutex<Takes>>,
}

impl ModelSink {
    fn new(broker: &Arc<Mutex<Broker>>, takes: &Arc<Mutex<Takes>>) -> Self {
        let producer = broker.lock().unwrap().new_producer();
        ModelSink {
            broker: broker.clone(),
            producer,
            takes: takes.clone(),
        }
    }

    /// What this producer still holds is purged: never written, and no report (as the
    /// Kafka sink does when it replaces or drops a producer).
    fn purge_held(&self, b: &mut Broker) {
        b.held.retain(|h| h.0 != self.producer);
    }
}

impl Sink for ModelSink {
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        self.takes.lock().unwrap().sent(seq, rec_of(rec));
        let mut b = self.broker.lock().unwrap();
        if b.stopped.contains(&self.producer) {
            return Err(SinkError::Retry("producer stopped".into()));
        }
        if b.queue_full {
            return Err(SinkError::Retry("local queue full".into()));
        }
        let r = rec_of(rec);
        if b.hub_missing && r.0 % DEVICES == HUB_DEVICE {
            let missing = crate::sink::refusal::Setup::default().missing(&rec.rec_type);
            return Err(SinkError::Park(missing));
        }
        if b.refused.contains(&r) {
            return Err(SinkError::Reject("too large".into()));
        }
        b.held.push((self.producer, seq, r, r.0 % DEVICES));
        Ok(())
    }

    fn tick(&mut self) -> bool {
        let mut b = self.broker.lock().unwrap();
        if !b.stopped.contains(&self.producer) {
            return false;
        }
        self.purge_held(&mut b);
        self.producer = b.new_producer();
        true
    }

    fn flush(&mut self, _timeout: Duration) {}
}

impl Drop for ModelSink {
    fn drop(&mut self) {
        let broker = self.broker.clone();
        let mut b = broker.lock().unwrap();
        self.purge_held(&mut b);
    }
}

// ---------------------------------------------------------------------------------------
// The source: an MQTT broker's queue for hubgate's session.

/// A record: its uplink, and which of the uplink's records it is.
type Rec = (u32, u8);

/// How many records an uplink makes (the same each time it is sent): 1 to [`PARTS_MAX`].
fn parts(uplink: u32) -> u8 {
    1 + (uplink / DEVICES % u32::from(PARTS_MAX)) as u8
}

/// The records of an uplink, in order.
fn records_of(uplink: u32) -> impl Iterator<Item = Rec> {
    (0..parts(uplink)).map(move |part| (uplink, part))
}

fn record((uplink, part): Rec, created_ms: u64) -> Record {
    let device = uplink % DEVICES;
    Record {
        id: id_of(&(uplink, part)),
        // One hub per device: parking one leaves the others flowing.
        rec_type: if uplink % DEAD_LETTER_EVERY == DEAD_LETTER_EVERY - 1 && part == 0 {
            DEAD_LETTER.into()
        } else {
            format!("type{device}")
        },
        key: format!("d{device}"),
        created_ms,
        body: format!("{{\"uplink\":{uplink},\"part\":{part}}}"),
    }
}

fn rec_of(rec: &Record) -> Rec {
    rec_named(&rec.id).expect("model record ids are u<n>.<part>")
}

/// A record's id: `u<n>.<part>` ([`rec_named`] reads it back).
fn id_of((uplink, part): &Rec) -> String {
    format!("u{uplink}.{part}")
}

/// The record whose id is `id` (`u<n>.<part>`), if the model makes one.
fn rec_named(id: &str) -> Option<Rec> {
    let (uplink, part) = id.strip_prefix('u')?.split_once('.')?;
    Some((uplink.parse().ok()?, part.parse().ok()?))
}

/// Records by their ids, for messages.
fn ids<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> String {
    let ids: Vec<String> = recs.into_iter().map(id_of).collect();
    ids.join(" ")
}

/// The agent, started on the disk as it is.
struct Agent {
    ledger: Ledger,
    reports: UnboundedReceiver<Delivery>,
    report_tx: UnboundedSender<Delivery>,
    metrics: Arc<Metrics>,
}

/// Records the run dropped by policy or found damaged: what may be lost.
fn drops_of(m: &Metrics) -> u64 {
    m.dropped_full.get()
        + m.dropped_disk_full.get()
        + m.dropped_expired.get()
        + m.dropped_corrupt.get()
}

struct World {
    settings: Settings,
    disk: Arc<Mutex<Disk>>,
    broker: Arc<Mutex<Broker>>,
    agent: Option<Agent>,
    /// Messages the MQTT broker will send hubgate, in order.
    queue: VecDeque<u32>,
    /// Sent to hubgate, not acknowledged yet.
    unacked: BTreeSet<u32>,
    /// When each uplink was first sent to hubgate (0: first): the order of a redelivery.
    first_sent: BTreeMap<u32, usize>,
    acked: BTreeSet<u32>,
    /// Sent to this run of hubgate (what a second gateway may send again).
    this_run: Vec<u32>,
    /// This run's LoRaWAN decoder, with the session of [`SESSION_DEVICE`].
    decoder: Decoder,
    /// Frames of [`SESSION_DEVICE`] sent to hubgate (any run), in the order first sent, and
    /// those its decoders took.
    sent_frames: Vec<u32>,
    taken_frames: BTreeSet<u32>,
    /// Frames delivered late (after a later one): their order is the order taken, not
    /// checked.
    late: BTreeSet<u32>,
    /// Copies published ([`Step::Copy`]) not yet taken again, by frame: a copy the decoder
    /// takes again (its counter was not kept) makes its records again.
    copies_queued: BTreeMap<u32, usize>,
    /// Records made again by such copies.
    copies_taken: usize,
    next_uplink: u32,
    puback_tx: UnboundedSender<PubAck>,
    pubacks: UnboundedReceiver<PubAck>,
    now: Instant,
    /// The shell's last tick.
    ticked: Instant,
    wall: SystemTime,
    restarts: usize,
    /// Sent again (`Again`) in this run.
    copies: BTreeSet<u32>,
    /// Records of copies whose acknowledgement a restart lost: the broker sends them once
    /// more.
    lost_copy_acks: usize,
    /// Restarts after flushes had failed: the delivered records sent again then (their
    /// deletion or acknowledgement could not be made durable).
    resent_unsynced: usize,
    /// Records a restart found buffered but their uplink not acknowledged (the
    /// acknowledgement waited for a flush that was not done: written while one ran, or for
    /// the uplink's other records). The restart's dedup knows them (seeded from the buffer),
    /// so the broker's copy of them is dropped.
    seeded_unacked: BTreeSet<Rec>,
    /// Duplicates that can come of those: a later restart finds one still unacknowledged
    /// but no longer buffered (delivered, and a second crash came before its copy was
    /// taken), or a restart finds more of them buffered than its dedup is seeded with.
    durable_unacked: usize,
    /// Records a restart found confirmed while their uplink of several records, none of
    /// them buffered, was not acknowledged, in a run during which the disk refused
    /// records: an uplink sent from memory is acknowledged only once its last record is
    /// confirmed, which may come a while later (they go one by one as the window opens), so
    /// the broker sends the uplink again, the records confirmed before included. Only those
    /// confirmed before the run ended: the records a crash writes (in flight, not
    /// reported) are counted per restart already.
    delivered_beside_held: usize,
    /// The disk refused records at some point of this run.
    refused_in_run: bool,
    /// The broker's log as the run ended, before a crash wrote what was in flight.
    log_at_end: Option<BTreeSet<Rec>>,
    /// Drops counted by the runs before this one.
    drops_before: u64,
    /// The records every run's buffer dropped, named with their sequence numbers as each
    /// drop was counted ([`Buffer::log_drops`]).
    drop_log: buffer::DropLog,
    /// Where each run's drops start in `drop_log`, by run.
    run_starts: Vec<usize>,
    /// The records whose confirmation a run's ledger took: (run, sequence number).
    confirmed: BTreeSet<(usize, u64)>,
    /// Records the buffer dropped while the sink held them, whose report a crash cut short:
    /// neither counted nor known to be delivered.
    cut_short: BTreeSet<Rec>,
    /// A record timed out in the producer, which went on: the order is not promised.
    timed_out: bool,
    /// When records were taken.
    takes: Arc<Mutex<Takes>>,
    /// Real time since the script began, in ms: the monotonic clock's, and the time it
    /// stood still (a pause, the time down between runs).
    real_ms: u64,
    /// Time since boot (`CLOCK_BOOTTIME`), in ms.
    up_ms: u64,
    /// What the clock's state says ([`crate::clock::synchronized`]).
    synchronized: Option<bool>,
    /// This boot's id.
    boot: u128,
    /// How hubgate is down before the next start (none: restarted at once).
    down: Option<Down>,
    /// Records the runs before this one dropped as expired.
    expired_before: u64,
    /// Records dropped as expired before they were held `max_age`, by the real time.
    early: Vec<String>,
    /// How far the clock moved forward other than with the real time, in ms: steps,
    /// pauses, time down, stale starts; at most what a record's age can be held back.
    moved_forward_ms: u64,
}

/// The right time as the script begins, in s since the epoch.
const RIGHT_AT_START_SECS: u64 = 1_800_000_000;
/// The epoch of GPS time, in s since the Unix epoch.
const GPS_EPOCH_SECS: u64 = 315_964_800;

/// `wall` stepped by `ms`, forward or back (no further back than the epoch).
fn shifted(wall: SystemTime, ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        wall + d
    } else {
        (wall.checked_sub(d))
            .filter(|&t| t >= SystemTime::UNIX_EPOCH)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

impl World {
    fn new(settings: Settings) -> World {
        let (puback_tx, pubacks) = unbounded_channel();
        let synchronized = settings.clock_known.then_some(true);
        let mut w = World {
            settings,
            disk: Arc::default(),
            broker: Arc::default(),
            agent: None,
            queue: VecDeque::new(),
            unacked: BTreeSet::new(),
            first_sent: BTreeMap::new(),
            acked: BTreeSet::new(),
            this_run: Vec::new(),
            decoder: Decoder::new(),
            sent_frames: Vec::new(),
            taken_frames: BTreeSet::new(),
            late: BTreeSet::new(),
            copies_queued: BTreeMap::new(),
            copies_taken: 0,
            next_uplink: 0,
            puback_tx,
            pubacks,
            now: Instant::now(),
            ticked: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(RIGHT_AT_START_SECS),
            restarts: 0,
            copies: BTreeSet::new(),
            lost_copy_acks: 0,
            resent_unsynced: 0,
            seeded_unacked: BTreeSet::new(),
            durable_unacked: 0,
            delivered_beside_held: 0,
            refused_in_run: false,
            log_at_end: None,
            drops_before: 0,
            drop_log: Arc::default(),
            run_starts: Vec::new(),
            confirmed: BTreeSet::new(),
            cut_short: BTreeSet::new(),
            timed_out: false,
            takes: Arc::default(),
            real_ms: 0,
            up_ms: 60_000,
            synchronized,
            boot: 1,
            down: None,
            expired_before: 0,
            early: Vec::new(),
            moved_forward_ms: 0,
        };
        w.start();
        w
    }

    fn start(&mut self) {
        if let Some(down) = self.down.take() {
            self.went_down(down);
        }
        self.takes.lock().unwrap().start();
        let one = buffer::encode(&record((0, 0), 0)).len() as u64 + 4;
        let cfg = BufferConfig {
            max_bytes: self
                .settings
                .buffer_records
                .map_or(u64::MAX / 2, |n| n * one),
            when_full: self.settings.when_full,
            max_in_flight: self.settings.max_in_flight,
            max_in_flight_bytes: self.settings.in_flight_records_of_bytes
                * super::ledger::size(&record((0, 0), 0)),
            spill_after: self.settings.spill_after,
            max_age: self.settings.max_age,
            min_free: 0,
            ..BufferConfig::default()
        };
        let metrics = Metrics::new();
        let store = ModelStore(self.disk.clone(), self.takes.clone());
        let mut buffer = Buffer::new(Box::new(store), &cfg, metrics.clone());
        buffer.log_drops(self.drop_log.clone());
        self.run_starts.push(self.drop_log.lock().unwrap().len());
        self.disk.lock().unwrap().run = self.run_starts.len() - 1;
        // As the forwarder starts: the session goes on from the counter kept, and the buffer
        // keeps the counters with the keys' print (and with them which frames below were
        // taken).
        let keys = crate::lorawan::tests::session_keys();
        self.decoder = Decoder::new();
        self.decoder.add(Session::new(DEV_ADDR, DEV_EUI, keys));
        let kept = buffer.fcnts().expect("the model store does not fail reads");
        for k in kept {
            let (dev_addr, dev_eui) = (DevAddr(k.dev_addr), DevEui(k.dev_eui));
            let (fcnt, mic, behind) = (k.fcnt, k.mic, k.behind);
            let resumed = self
                .decoder
                .resume(dev_addr, dev_eui, fcnt, mic, behind, k.keys);
            assert!(resumed, "a counter kept for the session's keys: {k:?}");
        }
        let prints = self.decoder.key_prints().into_iter();
        buffer.set_key_prints(prints.map(|((a, e), p)| ((a.0, e.0), p)).collect());
        let (report_tx, reports) = unbounded_channel();
        let sink = ModelSink::new(&self.broker, &self.takes);
        let ledger = Ledger::new(
            &cfg,
            DEDUP_WINDOW,
            buffer,
            Box::new(sink),
            metrics.clone(),
            (self.now, self.wall),
            7,
        )
        .expect("the model store does not fail reads");
        self.agent = Some(Agent {
            ledger,
            reports,
            report_tx,
            metrics,
        });
        // As the forwarder's first round does.
        self.check_clock();
        self.this_run.clear();
        self.lost_copy_acks += self
            .copies
            .intersection(&self.unacked)
            .map(|&u| usize::from(parts(u)))
            .sum::<usize>();
        self.copies.clear();
        let disk = self.disk.lock().unwrap();
        let buffered: Vec<Rec> = disk.buffered().collect();
        let seeded: BTreeSet<Rec> = buffered.iter().rev().take(DEDUP_WINDOW).copied().collect();
        self.durable_unacked += self
            .unacked
            .iter()
            .flat_map(|&u| records_of(u))
            .filter(|r| {
                let unknown = self.seeded_unacked.contains(r) && !buffered.contains(r);
                unknown || (buffered.contains(r) && !seeded.contains(r))
            })
            .count();
        self.seeded_unacked
            .extend(buffered.iter().filter(|r| self.unacked.contains(&r.0)));
        let log_at_end = self.log_at_end.take();
        if std::mem::replace(&mut self.refused_in_run, disk.append_fails) {
            let log = log_at_end
                .unwrap_or_else(|| self.broker.lock().unwrap().log.iter().copied().collect());
            self.delivered_beside_held += (self.unacked.iter())
                .filter(|&&u| parts(u) > 1 && !records_of(u).any(|r| buffered.contains(&r)))
                .flat_map(|&u| records_of(u).filter(|r| log.contains(r)))
                .count();
        }
        if disk.unsynced {
            let log: BTreeSet<Rec> = self.broker.lock().unwrap().log.iter().copied().collect();
            // Delivered, and coming again from the buffer or from the broker: sent to this
            // run and not acknowledged, or sent again by an earlier restart and not taken yet
            // (a record this run delivered from a buffer its flushes never made durable).
            let again: BTreeSet<Rec> = disk
                .buffered()
                .chain(self.unacked.iter().flat_map(|&u| records_of(u)))
                .chain(self.queue.iter().flat_map(|&u| records_of(u)))
                .collect();
            self.resent_unsynced += again.intersection(&log).count();
        }
        drop(disk);
        // What the broker got no PUBACK for comes again, first, in the order first sent.
        let mut again: Vec<u32> = std::mem::take(&mut self.unacked).into_iter().collect();
        again.sort_by_key(|u| self.first_sent[u]);
        again.extend(self.queue.drain(..));
        self.queue = again.into_iter().collect();
    }

    /// The running agent ends (its producer purged); its drops are kept.
    fn end_run(&mut self) {
        if let Some(agent) = self.agent.take() {
            self.drops_before += drops_of(&agent.metrics);
            self.expired_before += agent.metrics.dropped_expired.get();
        }
    }

    /// Records dropped as expired by all runs so far.
    fn expired(&self) -> u64 {
        let this_run = self.agent.as_ref();
        self.expired_before + this_run.map_or(0, |a| a.metrics.dropped_expired.get())
    }

    /// The right time now.
    fn right(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(RIGHT_AT_START_SECS)
            + Duration::from_millis(self.real_ms)
    }

    /// The wall clock stepped by `ms` ([`ClockChange::Step`]).
    fn step_clock(&mut self, ms: i64) {
        self.moved_forward_ms += ms.unsigned_abs();
        self.wall = shifted(self.wall, ms);
        if self.synchronized == Some(true) && ms != 0 {
            self.synchronized = Some(false);
        }
    }

    /// NTP sets the right time ([`ClockChange::Ntp`]).
    fn ntp(&mut self) {
        let off = crate::record::ms_since_epoch(self.wall)
            .abs_diff(crate::record::ms_since_epoch(self.right()));
        self.moved_forward_ms += off;
        self.wall = self.right();
        if self.synchronized == Some(false) {
            self.synchronized = Some(true);
        }
    }

    fn change_clock(&mut self, change: ClockChange) {
        match change {
            ClockChange::Step(ms) => self.step_clock(ms),
            ClockChange::Ntp => self.ntp(),
            ClockChange::Unsync => {
                if self.synchronized.is_some() {
                    self.synchronized = Some(false);
                }
            }
            ClockChange::GpsEpoch => {
                self.wall = SystemTime::UNIX_EPOCH + Duration::from_secs(GPS_EPOCH_SECS);
                if self.synchronized == Some(true) {
                    self.synchronized = Some(false);
                }
            }
            ClockChange::Pause(ms) => {
                self.moved_forward_ms += ms;
                self.real_ms += ms;
                self.wall += Duration::from_millis(ms);
                self.tick();
            }
        }
    }

    /// hubgate is down between two runs: time passes, the clock may step, the machine may
    /// boot again.
    fn went_down(&mut self, down: Down) {
        let (Down::Same { ms, .. } | Down::Reboot { ms, .. }) = down;
        let at_shutdown = self.wall;
        self.moved_forward_ms += ms
            + crate::record::ms_since_epoch(self.wall)
                .abs_diff(crate::record::ms_since_epoch(self.right()));
        self.real_ms += ms;
        self.now += Duration::from_millis(ms);
        match down {
            Down::Same { ms, step, ntp } => {
                self.up_ms += ms;
                self.wall += Duration::from_millis(ms);
                if ntp {
                    self.ntp();
                } else {
                    self.step_clock(step);
                }
            }
            Down::Reboot { start, .. } => {
                self.boot += 1;
                self.up_ms = 5_000;
                let known = self.settings.clock_known;
                (self.wall, self.synchronized) = match start {
                    StartClock::Saved { stale_ms } => (
                        shifted(at_shutdown, -(stale_ms as i64)),
                        known.then_some(false),
                    ),
                    StartClock::Epoch => (
                        SystemTime::UNIX_EPOCH + Duration::from_millis(self.up_ms),
                        known.then_some(false),
                    ),
                    StartClock::Right => (self.right(), known.then_some(true)),
                };
            }
        }
    }

    /// The shell's clock check: the clock's state, the boot (where its id can be read), the
    /// time the clock shows.
    fn check_clock(&mut self) {
        let wall = self.wall;
        let boot = self.settings.boot_id.then(|| Boot {
            id: self.boot,
            started_ms: crate::record::ms_since_epoch(wall) as i64 - self.up_ms as i64,
        });
        let trusted = crate::clock::trusted(self.synchronized, wall);
        let (now, synchronized) = (self.now, self.synchronized);
        let ledger = self.ledger();
        ledger.clock_source(synchronized == Some(true), boot);
        ledger.clock(trusted, now, wall);
    }

    /// No record was dropped as expired before it was held `max_age` (real time, the time
    /// down between runs included) since `before` (the drops named, and those expired, as
    /// a step began). A step's drops may be of several kinds: more records dropped before
    /// their time than drops of other kinds is an early expiry.
    fn check_expired(&mut self, step: &dyn std::fmt::Debug, before: (usize, u64)) {
        let names = self.drop_log.lock().unwrap()[before.0..].to_vec();
        let expired = self.expired() - before.1;
        let others = names.len() as u64 - expired;
        let max_age = self.settings.max_age.as_millis() as u64;
        let takes = self.takes.lock().unwrap();
        let early: Vec<String> = (names.iter())
            .filter_map(|(seq, name)| {
                let at = takes.of(*seq, rec_named(name)?)?;
                let held = self.real_ms - at;
                (held <= max_age).then(|| format!("{name} (#{seq}) held {held} ms"))
            })
            .collect();
        if early.len() as u64 > others {
            self.early.push(format!(
                "at {step:?} (real {} ms, clock {} ms, synchronised {:?}): {}",
                self.real_ms,
                crate::record::ms_since_epoch(self.wall),
                self.synchronized,
                early.join(", ")
            ));
        }
    }

    /// Drops counted by all runs so far.
    fn drops(&self) -> u64 {
        self.drops_before + self.agent.as_ref().map_or(0, |a| drops_of(&a.metrics))
    }

    /// The records dropped so far (by every run), each named as its drop was counted: one
    /// name per drop counted, each a record of the model's, none confirmed to the run that
    /// counted it.
    fn dropped(&self) -> Result<BTreeSet<Rec>, TestCaseError> {
        let names = self.drop_log.lock().unwrap().clone();
        let counted = self.drops();
        prop_assert_eq!(
            names.len() as u64,
            counted,
            "drops counted and drops named differ: {:?}",
            names
        );
        let mut dropped = BTreeSet::new();
        for (i, (seq, name)) in names.into_iter().enumerate() {
            let run = self.run_starts.partition_point(|&start| start <= i) - 1;
            prop_assert!(
                !self.confirmed.contains(&(run, seq)),
                "record {} (#{}) counted as dropped, and its sink confirmed it",
                name,
                seq
            );
            let r = rec_named(&name);
            prop_assert!(
                r.is_some(),
                "dropped a record the model did not make: {}",
                name
            );
            dropped.extend(r);
        }
        Ok(dropped)
    }

    /// What may be lost: the records dropped, those whose drop a crash cut short, those
    /// whose drop waits for the sink's report (in flight: confirmed, or counted, later).
    fn may_be_lost(&self) -> Result<BTreeSet<Rec>, TestCaseError> {
        let mut lost = self.dropped()?;
        lost.extend(&self.cut_short);
        let held = self.agent.as_ref().map(|a| a.ledger.drops_held());
        lost.extend(held.iter().flatten().filter_map(|id| rec_named(id)));
        Ok(lost)
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("running")
    }

    fn ledger(&mut self) -> &mut Ledger {
        &mut self.agent().ledger
    }

    fn round(&mut self) {
        let now = self.now;
        let outcome = self.ledger().end_round(now);
        self.exit_on_sync_failure(outcome);
    }

    /// A failed sync ends the forwarder, which counts the drops held for the records in
    /// flight as it ends, and hubgate exits: as a crash, what the producer held may or may
    /// not have been written.
    fn exit_on_sync_failure(&mut self, outcome: Result<(), BufferError>) {
        match outcome {
            Ok(()) => {}
            Err(BufferError::SyncFailed(_)) => {
                self.ledger().stopped();
                self.crash(false);
            }
            Err(e) => panic!("the model store fails nothing but flushes: {e}"),
        }
    }

    fn take_reports(&mut self) {
        let now = self.now;
        let run = self.run_starts.len() - 1;
        let agent = self.agent.as_mut().expect("running");
        while let Ok(d) = agent.reports.try_recv() {
            if d.result.is_ok() {
                self.confirmed.insert((run, d.seq));
            }
            agent.ledger.delivered(d, now).expect("no read errors");
        }
    }

    /// The shell takes an uplink in a round or, `at_shutdown`, into the buffer.
    fn offer(&mut self, uplink: u32, at_shutdown: bool) {
        let ack = Ack::Mqtt {
            acks: self.puback_tx.clone(),
            ack: PubAck {
                connection: 0,
                qos: rumqttc::QoS::AtLeastOnce,
                pkid: uplink as u16,
                retained: None,
            },
        };
        let created = crate::record::ms_since_epoch(self.wall);
        let mut takes = self.takes.lock().unwrap();
        records_of(uplink).for_each(|r| takes.taken(r, self.real_ms));
        drop(takes);
        self.unacked.insert(uplink);
        let sent = self.first_sent.len();
        self.first_sent.entry(uplink).or_insert(sent);
        self.this_run.push(uplink);
        let now = self.now;
        let mut records: Vec<Record> = records_of(uplink).map(|r| record(r, created)).collect();
        let mut counters = Counters::default();
        if uplink % DEVICES == SESSION_DEVICE {
            self.decode(uplink, &mut records, &mut counters);
        }
        if at_shutdown {
            self.ledger().take_to_buffer(records, counters, ack, now);
        } else {
            self.ledger().take(records, counters, ack, now);
        }
    }

    /// The decoder takes frame `uplink` of [`SESSION_DEVICE`], or refuses it as a replay:
    /// then it makes no records.
    fn decode(&mut self, uplink: u32, records: &mut Vec<Record>, counters: &mut Counters) {
        if !self.sent_frames.contains(&uplink) {
            self.sent_frames.push(uplink);
        }
        let phy = crate::lorawan::tests::up(uplink, Some(2), &[]);
        match self
            .decoder
            .decode_uplink(&phy, self.wall, Radio::default())
        {
            Ok(_) => {
                let copy = self.copies_queued.get_mut(&uplink).filter(|n| **n > 0);
                if let Some(n) = copy.filter(|_| self.taken_frames.contains(&uplink)) {
                    *n -= 1;
                    self.copies_taken += usize::from(parts(uplink));
                }
                self.taken_frames.insert(uplink);
            }
            Err(LorawanError::Replay { .. } | LorawanError::FcntReset { .. }) => records.clear(),
            Err(e) => panic!("frame {uplink}: {e}"),
        }
        *counters = self.decoder.take_counters();
    }

    /// [`Step::Late`]: two queued frames of [`SESSION_DEVICE`] never sent, one after the
    /// other, change places, if the one delivered later stays within the decoder's window
    /// of every frame sent before it. A message sent goes again in its place (MQTT sends
    /// what it got no PUBACK for in order).
    fn delay(&mut self, k: u8) {
        let frames: Vec<usize> = (0..self.queue.len())
            .filter(|&i| self.queue[i] % DEVICES == SESSION_DEVICE)
            .filter(|&i| !self.first_sent.contains_key(&self.queue[i]))
            .collect();
        let highest_sent = self.sent_frames.iter().copied().max().unwrap_or(0);
        let pairs: Vec<(usize, usize)> = frames
            .windows(2)
            .map(|w| (w[0], w[1]))
            .filter(|&(a, b)| {
                let before = frames.iter().take_while(|&&i| i <= b);
                let highest = before.map(|&i| self.queue[i]).max().unwrap_or(0);
                highest.max(highest_sent) <= self.queue[a] + LATE_WINDOW
            })
            .collect();
        if pairs.is_empty() {
            return;
        }
        let (a, b) = pairs[usize::from(k) % pairs.len()];
        self.late.insert(self.queue[a]);
        self.queue.swap(a, b);
    }

    fn apply(&mut self, step: &Step) {
        let before = (self.drop_log.lock().unwrap().len(), self.expired());
        self.apply_step(step);
        self.check_expired(step, before);
    }

    /// `ms` pass, then a tick.
    fn pass(&mut self, ms: u64) {
        let d = Duration::from_millis(ms);
        self.now += d;
        self.wall += d;
        self.real_ms += ms;
        self.up_ms += ms;
        self.tick();
    }

    /// [`World::pass`] as a step.
    fn pass_checked(&mut self, ms: u64) {
        let before = (self.drop_log.lock().unwrap().len(), self.expired());
        self.pass(ms);
        self.check_expired(&format!("{ms} ms passing"), before);
    }

    fn apply_step(&mut self, step: &Step) {
        match *step {
            Step::Uplink => {
                self.queue.push_back(self.next_uplink);
                self.next_uplink += 1;
            }
            Step::BadUplink => {
                let u = self.next_uplink;
                let last = (u, parts(u) - 1);
                // A `block` or `drop_newest` buffer that records held in doubt fill holds or
                // drops new input, as in an outage of their hub: their verdicts wait for a
                // later record of their recType taken, which waits for room or is dropped
                // (docs/durability.md says so). The model's buffers hold a few records, so
                // one refused for itself fills them: not drawn there.
                let blocks = self.settings.when_full != WhenFull::DropOldest
                    && self.settings.buffer_records.is_some();
                if record(last, 0).rec_type != DEAD_LETTER && !blocks {
                    self.broker.lock().unwrap().bad.insert(last);
                }
                self.apply(&Step::Uplink);
            }
            Step::Validates(k, on) => {
                let device = u32::from(k) % DEVICES;
                let mut b = self.broker.lock().unwrap();
                if on {
                    b.validating.insert(device);
                } else {
                    b.validating.remove(&device);
                }
            }
            Step::Take { n, patient } => {
                if self.ledger().accepting() {
                    for _ in 0..n {
                        let now = self.now;
                        if patient && !self.ledger().takes_patient(now) {
                            break;
                        }
                        let Some(u) = self.queue.pop_front() else {
                            break;
                        };
                        self.offer(u, false);
                    }
                }
                self.round();
            }
            Step::Again(k) => {
                if !self.this_run.is_empty() && self.ledger().accepting() {
                    let u = self.this_run[k as usize % self.this_run.len()];
                    self.copies.insert(u);
                    self.offer(u, false);
                }
                self.round();
            }
            Step::Late(k) => self.delay(k),
            Step::Copy(k) => {
                let recent = self.sent_frames.len().saturating_sub(COPY_OF_LAST);
                let recent = &self.sent_frames[recent..];
                if let Some(&u) = recent.get(usize::from(k) % recent.len().max(1)) {
                    // Behind what the broker sends again (first, at a restart).
                    let sent = |v: &&u32| self.first_sent.contains_key(v);
                    let at = self.queue.iter().take_while(sent).count();
                    self.queue.insert(at, u);
                    *self.copies_queued.entry(u).or_default() += 1;
                }
            }
            Step::Confirm(k) => {
                let mut b = self.broker.lock().unwrap();
                if let Some(i) = b.pick(k) {
                    let (producer, seq, r, _) = b.held.remove(i);
                    let result = if b.refuses(r) {
                        // Refused alone, in its report; the producer stops (gap-less).
                        b.stopped.insert(producer);
                        b.doubted.insert(r);
                        let setup = crate::sink::refusal::Setup::default();
                        let code = rdkafka::error::RDKafkaErrorCode::InvalidRecord;
                        let why = "Broker: Broker failed to validate record";
                        let rec_type = record(r, 0).rec_type;
                        Err(SinkError::Doubt(
                            setup.refuses_records(code, why, &rec_type),
                        ))
                    } else {
                        b.log.push(r);
                        Ok(0)
                    };
                    drop(b);
                    let _ = self.agent().report_tx.send(Delivery { seq, result });
                }
            }
            Step::Fail(k, failure) => {
                let mut b = self.broker.lock().unwrap();
                if let Some(i) = b.pick(k) {
                    let (producer, seq, r, _) = b.held.remove(i);
                    let stops = !matches!(failure, Failure::Timeout { .. });
                    let e = match failure {
                        Failure::Retry => SinkError::Retry("throttled".into()),
                        Failure::Park => {
                            SinkError::Park(crate::sink::refusal::Setup::default().missing("t"))
                        }
                        Failure::Reject => {
                            b.refused.insert(r);
                            SinkError::Reject("too large".into())
                        }
                        Failure::Ambiguous => {
                            if !b.refuses(r) {
                                b.log.push(r);
                                b.ambiguous += 1;
                            }
                            SinkError::Retry("timed out".into())
                        }
                        Failure::Timeout { written } => {
                            if written && !b.refuses(r) {
                                b.log.push(r);
                                b.ambiguous += 1;
                            }
                            SinkError::Retry("message timed out".into())
                        }
                    };
                    if stops {
                        b.stopped.insert(producer);
                    } else {
                        self.timed_out = true;
                    }
                    drop(b);
                    let _ = self.agent().report_tx.send(Delivery {
                        seq,
                        result: Err(e),
                    });
                }
            }
            Step::Reports => {
                self.take_reports();
                self.round();
            }
            Step::HubMissing(missing) => self.broker.lock().unwrap().hub_missing = missing,
            Step::QueueFull(full) => self.broker.lock().unwrap().queue_full = full,
            Step::Advance(ms) => self.pass(ms.into()),
            Step::Rotate => {
                self.settle(false);
                let new = ModelSink::new(&self.broker, &self.takes);
                drop(self.ledger().replace_sink(Box::new(new)));
                self.take_reports();
                self.ledger().resend_in_flight();
                self.round();
            }
            Step::Crash { written } => self.crash(written),
            Step::Stop { received } => {
                self.check_clock();
                for _ in 0..received {
                    if let Some(u) = self.queue.pop_front() {
                        self.offer(u, true);
                    }
                }
                self.settle(true);
                let now = self.now;
                let outcome = self.ledger().commit(now, true);
                if outcome.is_err() {
                    return self.exit_on_sync_failure(outcome);
                }
                self.ledger().stopped();
                self.drain_pubacks();
                self.end_run();
                self.restarts += 1;
                self.start();
            }
            Step::FlushFails(fails) => self.disk.lock().unwrap().flush_fails = fails,
            Step::DeadLetterFails(fails) => self.disk.lock().unwrap().dead_letter_fails = fails,
            Step::AppendFails(fails) => {
                self.disk.lock().unwrap().append_fails = fails;
                self.refused_in_run |= fails;
            }
            Step::SyncFails { kept } => self.disk.lock().unwrap().sync_fails = Some(kept),
            Step::Flushed { late, round } => {
                self.disk.lock().unwrap().finish_flush(late);
                if round {
                    self.round();
                }
            }
            Step::Clock(change) => self.change_clock(change),
            Step::Restart { crash, down } => {
                self.down = Some(down);
                if crash {
                    self.crash(false);
                } else {
                    self.apply_step(&Step::Stop { received: 0 });
                }
            }
        }
        self.drain_pubacks();
    }

    /// The shell's tick: at every step of the clock while the ledger has something to do,
    /// at most once a second while it is quiet (e.g. a producer stopped by a refused record
    /// that was dead-lettered is replaced then).
    fn tick(&mut self) {
        if self.ledger().quiet() && self.now.duration_since(self.ticked) < IDLE_TICK {
            return;
        }
        self.ticked = self.now;
        if self.ledger().sink().tick() {
            self.take_reports();
            self.ledger().resend_in_flight();
        }
        self.check_clock();
        let now = self.now;
        self.ledger().tick(now);
        self.round();
    }

    /// The shell's settle: the reports the sink has, at a stop (`stopping`) records the
    /// buffer refuses sent from memory, the sink's flush (the broker writes nothing more),
    /// its reports, then what is still in flight into the buffer.
    fn settle(&mut self, stopping: bool) {
        self.take_reports();
        if stopping {
            let now = self.now;
            self.ledger().send_refused(now);
        }
        self.ledger().sink().flush(Duration::from_secs(5));
        self.take_reports();
        let now = self.now;
        self.ledger().spill_in_flight(now);
    }

    fn crash(&mut self, written: bool) {
        let held = self.ledger().drops_held();
        self.cut_short
            .extend(held.iter().filter_map(|id| rec_named(id)));
        {
            let mut b = self.broker.lock().unwrap();
            self.log_at_end = Some(b.log.iter().copied().collect());
            if written {
                // A stopped producer writes nothing more (gap-less), and one that meets a
                // record its topic refuses stops there.
                let mut stopped = b.stopped.clone();
                let mut held = Vec::new();
                for &(producer, _, r, _) in &b.held {
                    if stopped.contains(&producer) {
                        continue;
                    }
                    if b.refuses(r) {
                        stopped.insert(producer);
                    } else {
                        held.push(r);
                    }
                }
                b.log.extend(held);
            }
            b.held.clear();
        }
        self.drain_pubacks();
        self.end_run();
        self.disk.lock().unwrap().crash();
        self.restarts += 1;
        self.start();
    }

    fn drain_pubacks(&mut self) {
        while let Ok(ack) = self.pubacks.try_recv() {
            let u = u32::from(ack.pkid);
            self.unacked.remove(&u);
            self.acked.insert(u);
        }
    }

    /// Acknowledged means every record of the uplink delivered or durable in the buffer, but
    /// for those the buffer dropped ([`World::may_be_lost`]).
    fn check_acked_are_durable(&self) -> Result<(), TestCaseError> {
        let durable = self.disk.lock().unwrap().durable();
        let log: BTreeSet<Rec> = self.broker.lock().unwrap().log.iter().copied().collect();
        let dropped = self.may_be_lost()?;
        let lost: Vec<Rec> = self
            .acked
            .iter()
            .flat_map(|&u| records_of(u))
            .filter(|r| !log.contains(r) && !durable.contains(r) && !dropped.contains(r))
            .collect();
        prop_assert!(
            lost.is_empty(),
            "acknowledged, then lost, not dropped: {}; dropped (or cut short): {}",
            ids(&lost),
            ids(&dropped)
        );
        Ok(())
    }

    /// No record was dropped as expired before it was held `max_age` ([`World::check_expired`]):
    /// records expire later than due when the clock steps, never sooner.
    fn check_none_expired_early(&self) -> Result<(), TestCaseError> {
        prop_assert!(
            self.early.is_empty(),
            "dropped as expired before held max_age ({:?}): {}",
            self.settings.max_age,
            self.early.join("; ")
        );
        Ok(())
    }

    /// Only records the topic refuses for themselves, records refused for good at hand-over
    /// (too large) and dead letters of the input are dead-lettered: a record refused while
    /// its topic refused every record is kept. One the topic refuses for itself is
    /// dead-lettered at most once a run (a restart may find it again: its uplink not
    /// acknowledged, or its dead letter not flushed).
    fn check_dead_letters(&self) -> Result<(), TestCaseError> {
        let letters = self.disk.lock().unwrap().letters.clone();
        let b = self.broker.lock().unwrap();
        let allowed = |r: &Rec| {
            b.bad.contains(r) || b.refused.contains(r) || record(*r, 0).rec_type == DEAD_LETTER
        };
        let wrong: Vec<Rec> = (letters.iter().map(|l| l.1))
            .filter(|r| !allowed(r))
            .collect();
        prop_assert!(
            wrong.is_empty(),
            "dead-lettered, and neither refused for itself nor too large: {}",
            ids(&wrong)
        );
        let mut seen = BTreeSet::new();
        let again: Vec<Rec> = (letters.iter())
            .filter(|l| b.bad.contains(&l.1) && !seen.insert(**l))
            .map(|l| l.1)
            .collect();
        prop_assert!(
            again.is_empty(),
            "dead-lettered more than once in a run: {}; dead letters (run, record): {:?}",
            ids(&again),
            letters
        );
        Ok(())
    }

    /// Whether a record the topic refuses for itself waits for its verdict: buffered, or its
    /// uplink not acknowledged yet (a record dropped once may be taken again after a restart).
    fn unsettled_bad(&self) -> bool {
        let disk = self.disk.lock().unwrap();
        let buffered: BTreeSet<Rec> =
            uplinks(disk.live.scan(None, usize::MAX).expect("memory")).collect();
        let b = self.broker.lock().unwrap();
        (b.bad.iter()).any(|r| {
            buffered.contains(r) || self.unacked.contains(&r.0) || self.queue.contains(&r.0)
        })
    }

    /// The sink and the disk work again, the topics take records again (but those they
    /// refuse for themselves), and later uplinks come when there are such records; run rounds
    /// until everything has gone through.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        {
            let mut disk = self.disk.lock().unwrap();
            disk.flush_fails = false;
            disk.dead_letter_fails = false;
            disk.sync_fails = None;
        }
        {
            let mut b = self.broker.lock().unwrap();
            b.queue_full = false;
            b.hub_missing = false;
            b.validating.clear();
        }
        // A tick: what a failed flush left is flushed now.
        self.apply(&Step::Advance(100));
        // A record refused for itself whose age a forward step holds back (it expires later
        // by the step) can outlive the later records of its recType that would bring its
        // verdict: with the model's `max_age` (2 s, 5 s) below the park that its refusals
        // make (up to 5 minutes), they expire before its park runs out. So can one stamped
        // before a reboot at fake-hwclock's stale time (from the clock's future: it ages only
        // once the clock catches up, and here no NTP sets it right). It then settles as it
        // expires: once, the time it is held back passes (as long as the clock moved forward
        // and still shows behind the right time, a day on top), and the rounds of a second
        // start again, for the drain to reach it behind what else expired meanwhile.
        let behind_ms = crate::record::ms_since_epoch(self.right())
            .saturating_sub(crate::record::ms_since_epoch(self.wall));
        let held_back_ms = self.moved_forward_ms + behind_ms + 86_400_000;
        let (mut until, mut waited, mut was_bad) = (HEAL_ROUNDS, false, false);
        for round in 0.. {
            let bad = self.unsettled_bad();
            if was_bad && !bad {
                until = until.max(round + HEAL_ROUNDS);
            }
            was_bad = bad;
            let waiting_out = round >= until && bad && !waited;
            if round >= until && !waiting_out {
                break;
            }
            if round % LATER_EVERY == 0 && self.unsettled_bad() {
                // Records held in doubt that wait in memory past the in-flight bounds hold
                // input until the disk takes writes again (docs/durability.md), and a verdict
                // on one refused for itself needs a later record taken: the disk works again
                // then, and only then.
                if !self.agent().ledger.accepting() {
                    self.disk.lock().unwrap().append_fails = false;
                }
                self.apply(&Step::Uplink);
            }
            let done = self.queue.is_empty()
                && self.unacked.is_empty()
                && self.broker.lock().unwrap().held.is_empty()
                && {
                    // Quiet, not only idle: what the last round wrote (a dead letter) is kept
                    // only once a flush started after it is done.
                    let agent = self.agent();
                    agent.reports.is_empty() && agent.ledger.quiet()
                };
            if done {
                return Ok(());
            }
            self.apply(&Step::Take {
                n: TAKE_MAX,
                patient: round % 2 == 0,
            });
            loop {
                let held = self.broker.lock().unwrap().pick(0).is_some();
                if !held {
                    break;
                }
                self.apply(&Step::Confirm(0));
            }
            self.apply(&Step::Reports);
            self.apply(&Step::Flushed {
                late: 0,
                round: true,
            });
            if waiting_out {
                waited = true;
                until = round + 1 + HEAL_ROUNDS;
                self.pass_checked(held_back_ms);
            } else {
                self.apply(&Step::Advance(1000));
            }
        }
        let agent = self.agent.as_ref().expect("running");
        prop_assert!(
            false,
            "stuck: queue {:?}, unacked {:?}, buffered {}, held {}",
            self.queue,
            self.unacked,
            agent.ledger.buffered(),
            agent.ledger.held()
        );
        Ok(())
    }
}

fn run(settings: Settings, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut w = World::new(settings.clone());
    for step in &steps {
        w.apply(step);
        w.check_acked_are_durable()?;
        w.check_dead_letters()?;
        w.check_none_expired_early()?;
        // The window and the parked records set aside beside it while the disk refuses
        // records (each up to `max_in_flight`), and a round's input on top.
        let held = w.ledger().held();
        let bound = 2 * settings.max_in_flight + usize::from(TAKE_MAX * PARTS_MAX);
        prop_assert!(
            held <= bound,
            "{held} records held in memory (bound {bound})"
        );
        // A drop held for a record's report is counted or forgotten as the record leaves
        // the window.
        let (drops, in_flight) = w.ledger().held_drops_and_in_flight();
        prop_assert!(
            drops <= in_flight,
            "{drops} drops held for {in_flight} records in flight"
        );
    }
    w.heal()?;
    w.check_acked_are_durable()?;
    w.check_dead_letters()?;
    w.check_none_expired_early()?;

    let b = w.broker.lock().unwrap();
    let dead = w.disk.lock().unwrap().dead_lettered();
    let delivered: BTreeSet<Rec> = b.log.iter().copied().collect();
    let dropped = w.may_be_lost()?;
    let missing: Vec<Rec> = (0..w.next_uplink)
        .flat_map(records_of)
        .filter(|r| !delivered.contains(r) && !dead.contains(r) && !dropped.contains(r))
        .collect();
    prop_assert!(
        missing.is_empty(),
        "never delivered, not dropped: {}; dropped (or cut short): {}",
        ids(&missing),
        ids(&dropped)
    );

    // Each device's records that were never dropped, first deliveries only, in the order
    // they were made. Not promised once the producer went on past a timeout. A dropped
    // record may come late (one dropped before its uplink was acknowledged comes again from
    // the source after a restart, behind newer ones), but a drop reorders no other record.
    // A frame delivered late goes in the order taken, which a restart's redelivery changes.
    // A record its topic refused goes after its recType's later ones.
    if !w.timed_out {
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<u32, Rec> = BTreeMap::new();
        let in_order =
            |r: &&Rec| !dropped.contains(r) && !w.late.contains(&r.0) && !b.doubted.contains(r);
        for &r in b.log.iter().filter(in_order) {
            if !seen.insert(r) {
                continue;
            }
            let device = r.0 % DEVICES;
            if let Some(&before) = last.get(&device) {
                prop_assert!(
                    before < r,
                    "device {device}: record {} first delivered after {}; log {}; dropped {}",
                    ids([&r]),
                    ids([&before]),
                    ids(&b.log),
                    ids(&dropped)
                );
            }
            last.insert(device, r);
        }
    }

    // Duplicates: per restart, what was in flight (written, not reported) and the
    // deliveries whose deletion was not flushed yet; one per timeout after the write, and
    // one per copy of an uplink whose acknowledgement a restart lost (it waited for a flush
    // that failed), and one per record a restart found buffered but not acknowledged (its
    // flush was not done) that a later restart finds unacknowledged and no longer buffered,
    // or that the restart's dedup was not seeded with; and one per record confirmed before
    // a run that the disk refused records in ended, of an uplink of several records none of
    // them buffered that was not acknowledged (sent from memory, record by record); and one
    // per record of a copy a second gateway published that the decoder took again, its
    // frame's counter not kept. A restart's dedup that forgets what it found buffered
    // (Dedup::seed, recent_ids) fails this.
    let duplicates = b.log.len() - delivered.len();
    let per_restart = settings.max_in_flight + settings.max_in_flight / 2;
    let bound = w.restarts * per_restart
        + b.ambiguous
        + w.lost_copy_acks
        + w.resent_unsynced
        + w.durable_unacked
        + w.delivered_beside_held
        + w.copies_taken;
    prop_assert!(
        duplicates <= bound,
        "{duplicates} duplicates, bound {bound} ({} restarts, {} ambiguous, {} copies, {} after failed flushes, {} buffered unacknowledged, {} delivered beside a held one, {} of copies taken again)",
        w.restarts,
        b.ambiguous,
        w.lost_copy_acks,
        w.resent_unsynced,
        w.durable_unacked,
        w.delivered_beside_held,
        w.copies_taken
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_forwarder_loses_nothing_acknowledged_and_keeps_order(
        settings in settings(),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        run(settings, steps)?;
    }
}

/// A frame late whose records a crash lost before the session had a counter kept: MQTT
/// sends the unacknowledged frames again in the order first sent, the later frame first, and
/// the decoder, with no counter to resume, takes it as its first; the late one after it is
/// late again, taken (it was refused as below the first frame, and acknowledged without its
/// records, when the decoder counted every counter below a first frame as taken).
#[test]
fn a_late_frame_sent_again_after_a_crash_before_any_counter_is_kept_is_not_lost() {
    let settings = Settings {
        max_in_flight: 3,
        in_flight_records_of_bytes: 3,
        spill_after: Duration::from_millis(50),
        buffer_records: None,
        when_full: WhenFull::DropOldest,
        max_age: Duration::from_secs(2),
        boot_id: true,
        clock_known: true,
    };
    let take = |n| Step::Take { n, patient: false };
    // Frame 0 is delivered and acknowledged; its counter waits for a flush that a crash
    // comes before. Frame 3 comes after frame 6.
    let mut steps = vec![Step::Uplink, take(1), Step::Confirm(0), Step::Reports];
    steps.extend(std::iter::repeat_n(Step::Uplink, 6));
    steps.extend([Step::Late(0), take(6), Step::Crash { written: false }]);
    run(settings, steps).unwrap();
}

/// A record its topic refuses for itself, taken while the disk refuses records: it waits in
/// memory and goes to the sink from there, oldest first, so it is sent before its device's
/// later records each time, refused, and the producer stops; those later records must still
/// get through (and its verdict come), not wait behind it for good.
#[test]
fn a_record_refused_for_itself_from_memory_does_not_hold_back_its_device() {
    let settings = Settings {
        max_in_flight: 5,
        in_flight_records_of_bytes: 5,
        ..never_expiring()
    };
    run(settings, vec![Step::BadUplink, Step::AppendFails(true)]).unwrap();
}

/// The settings of the refusal cases: one record in flight, nothing expires, and the boot
/// and the clock's state are told.
fn never_expiring() -> Settings {
    Settings {
        max_in_flight: 1,
        in_flight_records_of_bytes: 1,
        spill_after: Duration::from_millis(50),
        buffer_records: None,
        when_full: WhenFull::DropOldest,
        max_age: Duration::from_secs(1 << 30),
        boot_id: true,
        clock_known: true,
    }
}

/// A record its topic refuses for itself is buffered, then the disk refuses records: the
/// later ones wait in memory, sent only once the drain has handed every buffered record to
/// the sink. The one buffered is handed again only alone (none other is buffered), is refused
/// each time, and the records in memory behind it must still get through.
#[test]
fn a_buffered_record_refused_for_itself_does_not_hold_back_records_in_memory() {
    let settings = never_expiring();
    let steps = vec![
        Step::BadUplink,
        Step::Take {
            n: 1,
            patient: false,
        },
        Step::Advance(50),
        Step::AppendFails(true),
    ];
    run(settings, steps).unwrap();
}

/// Found by seed 2 with validation steps four times as likely and no record refused for
/// itself: a record of device 2 refused while its topic refused every record is in doubt;
/// once the topic takes records again, the drain that meets it (its park run out) fills the
/// window first (records in flight and removals not yet flushed), so it passes over the
/// one in doubt, and its cursor moves past it. No later record of device 2 is taken (the
/// full buffer drops the newest), so nothing starts the drain over: the record, acknowledged,
/// stays in the buffer, never sent again (and never expires, as only the drain expires a
/// buffered record).
#[test]
fn a_record_in_doubt_is_sent_once_its_topic_takes_records_again() {
    let settings = Settings {
        max_in_flight: 2,
        in_flight_records_of_bytes: 3,
        spill_after: Duration::from_millis(500),
        buffer_records: Some(5),
        when_full: WhenFull::DropNewest,
        max_age: Duration::from_secs(5),
        boot_id: true,
        clock_known: true,
    };
    let take = |n| Step::Take { n, patient: false };
    let steps = vec![
        Step::Uplink,
        Step::Stop { received: 1 },
        Step::Uplink,
        Step::Uplink,
        take(1),
        Step::Validates(2, true),
        Step::Confirm(0),
        Step::Rotate,
        Step::Uplink,
        take(1),
        take(1),
        Step::Confirm(8),
        Step::Confirm(0),
        Step::Reports,
        Step::Uplink,
        Step::Uplink,
    ];
    run(settings, steps).unwrap();
}

/// The settings of the clock's cases below: one record in flight, a 5 s `max_age`, and
/// neither the boot nor the clock's state can be told.
fn nothing_told() -> Settings {
    Settings {
        max_age: Duration::from_secs(5),
        boot_id: false,
        clock_known: false,
        ..never_expiring()
    }
}

/// A gateway whose clock's state nothing can tell boots at fake-hwclock's time, a month
/// stale but trusted, and buffers a reading stamped with it (the sink's queue is full). A GPS
/// without a fix sets the clock to its epoch (not trusted), then NTP sets the right time: the
/// step is measured across the spell, and the reading, seconds old, is delivered, not
/// dropped as a month old.
#[test]
fn a_step_across_a_spell_of_an_untrusted_clock_expires_nothing_early() {
    let settings = nothing_told();
    let down = Down::Reboot {
        ms: 0,
        start: StartClock::Saved {
            stale_ms: 30 * 86_400_000,
        },
    };
    let steps = vec![
        Step::Restart { crash: false, down },
        Step::QueueFull(true),
        Step::Uplink,
        Step::Take {
            n: 1,
            patient: false,
        },
        Step::Advance(1000),
        Step::Clock(ClockChange::GpsEpoch),
        Step::Advance(1000),
        Step::Clock(ClockChange::Ntp),
        Step::Advance(1000),
    ];
    run(settings, steps).unwrap();
}

/// Found by seed 2 (3,000 scripts): where the clock's state and the boot cannot be told,
/// the clock steps back (trusted all along), a reading is stamped with it, and the clock is
/// set right again before the next check; hubgate stops and starts. The new run measures the
/// time it was not running from the reading kept before the step back (a step back keeps no
/// new one), so the step forward goes unseen and the reading, 100 ms old, expires as 7 s old.
#[test]
fn a_step_back_undone_across_a_restart_expires_nothing_early() {
    let settings = nothing_told();
    let steps = vec![
        Step::Clock(ClockChange::Step(-7000)),
        Step::Advance(1),
        Step::Uplink,
        Step::Take {
            n: 1,
            patient: false,
        },
        Step::Clock(ClockChange::Ntp),
        Step::Stop { received: 0 },
    ];
    run(settings, steps).unwrap();
}

/// Found by seed 7 (10,000 scripts) once the step above was kept: a reading taken 181 ms
/// after the last clock check and just after a step back is stamped as of that check (no
/// older than the clock's last reading), 181 ms older than it is; NTP undoes the step before
/// the next check, so no step is seen, and the reading expires 181 ms before it was held
/// `max_age`.
#[test]
fn a_reading_taken_after_a_step_back_between_checks_expires_nothing_early() {
    let settings = nothing_told();
    let steps = vec![
        Step::Uplink,
        Step::FlushFails(false),
        Step::Advance(1001),
        Step::QueueFull(true),
        Step::Flushed {
            late: 0,
            round: true,
        },
        Step::Uplink,
        Step::Advance(181),
        Step::Clock(ClockChange::Step(-1500)),
        Step::Take {
            n: 1,
            patient: false,
        },
        Step::Clock(ClockChange::Ntp),
        Step::Advance(2590),
        Step::Advance(2230),
    ];
    run(settings, steps).unwrap();
}

/// Found by seed 47 (10,000 scripts): where the clock's state cannot be told, a record its
/// topic refuses for itself is buffered at the right time, and the machine boots again at
/// fake-hwclock's time, an hour stale but trusted. The later records of its recType, which
/// would bring its verdict, expire during its parks, and it expires itself only once the
/// clock has caught up the hour: the heal must wait that out too, not only the steps forward.
#[test]
fn a_record_refused_for_itself_from_before_a_stale_boot_settles_as_it_expires() {
    let settings = Settings {
        max_age: Duration::from_secs(2),
        ..nothing_told()
    };
    let down = Down::Reboot {
        ms: 0,
        start: StartClock::Saved {
            stale_ms: 3_600_000,
        },
    };
    let steps = vec![
        Step::Uplink,
        Step::Stop { received: 1 },
        Step::BadUplink,
        Step::Take {
            n: 1,
            patient: false,
        },
        Step::Uplink,
        Step::AppendFails(true),
        Step::Restart { crash: false, down },
        Step::Uplink,
    ];
    run(settings, steps).unwrap();
}
