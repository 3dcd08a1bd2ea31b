//! 32-bit frame counter reconstruction from the 16 bits on air (LoRaWAN 1.0.x §4.3.1.5).
//!
//! Policy, per session:
//!
//! * The next counter must be greater than the last accepted one: an equal or smaller FCnt32 is
//!   a replay (or a duplicate heard twice) and is rejected with [`FcntError::Replay`], except
//!   a frame late: one at most [`LATE_WINDOW`] below the last accepted whose counter has not
//!   been taken (kept across restarts with the counter: [`Counter::behind`]). Two gateways hear a
//!   device, one delivers a frame late (its backhaul was down and it queued it; an MQTT
//!   client's offline queue), and the other has delivered the next frame meanwhile: the late
//!   one is a reading of its own, never accepted, that the device will not send again.
//! * Candidates for the wire value `w` after last accepted `l`: `upper(l) | w` (same upper
//!   half) first, then the rollovers `upper(l) + k * 0x1_0000 | w` for k in
//!   1..=[`BLOCKS_AHEAD`]. The MIC decides between them; a wrong guess is a MIC failure. The
//!   MIC covers all 32 bits, so a frame captured earlier verifies only under its own counter
//!   (the same-half value, at or below `l`: a replay), never under a rollover: a jump of any
//!   size is accepted, within a half or across halves. LoRaWAN 1.0.2's `MAX_FCNT_GAP` (16384)
//!   is not applied: past it a device heard again after a gap of some days (the gateway off)
//!   across a rollover would fail every frame for good, its counter never advancing.
//! * A session with no state yet (hubgate started, or the session was just configured) does not
//!   know the upper half: candidates are `k << 16 | w` for k in 0..[`INITIAL_UPPER_HALVES`], so a
//!   device past FCnt 65535 is still picked up (a start without the buffer, on a card that
//!   failed, has the counters from upper half 12 on: `buffer::far_counters`). An accepted
//!   counter of each session is
//!   kept in the buffer once its frame's records, and every earlier frame's, are durable, and
//!   resumed at start, so a frame captured before a restart is still a replay after it.
//! * A frame that fails the MIC under every candidate is, at most once each [`RESCUE_EVERY`]
//!   per session, also tried in the upper halves 0..[`INITIAL_UPPER_HALVES`] the others left
//!   out ([`FcntTracker::rescue_candidates`]): a device whose counter, below 2^20, got more
//!   than [`BLOCKS_AHEAD`] halves ahead of its session's (unheard for that long, or the
//!   session's counter set back by a replayed old frame: of a `resets_fcnt` device, or the
//!   first frame of a session with no counter kept) is found again, not refused for good. A
//!   counter found so is taken only if ahead of the last accepted
//!   ([`FcntTracker::check_rescued`]), also for a `resets_fcnt` device: a frame captured
//!   earlier, at or below it, is a replay, not a restart.
//! * A refused counter below [`RESET_BELOW`] while the last accepted is at or above it is
//!   [`FcntError::Reset`]: far more likely a device that restarted its counter (an ABP device
//!   that does not keep it across a power cycle) than a copy, which repeats a recent counter.
//!   So that a device past FCnt 65535 is told too, such a small wire value is also tried with
//!   the upper half 0.
//! * A frame accepted less than [`COPY_WINDOW`] ago, among the session's last [`COPIES`]
//!   accepted, heard again (the same FCnt32 and MIC: the same PHYPayload) is a copy, refused as
//!   a [`FcntError::Replay`] before anything else is decided: a second gateway whose backhaul
//!   queued it, or a source's redelivery, comes after newer frames of its device, and is
//!   neither a restart of a device that restarts its counter (its record made again, unless
//!   the ledger's de-duplication still knows its id) nor a [`FcntError::Reset`] when its
//!   counter is below [`RESET_BELOW`]. Past the window the same bytes are not taken for a
//!   copy: a device that restarts its counter and sends the same FPort and payload at the
//!   same counter (a boot message, a button code, a heartbeat) makes the same MIC, and its
//!   frame must be taken (its records have ids of their own: such a device's record id
//!   hashes the time the frame was received at, [`crate::record::stable_id`]); within the
//!   window too when the two frames' own times from one gateway are further apart (a broker
//!   that held them delivers them together). The frames a
//!   session of a device that
//!   restarts its counter accepted within the window are kept with the counter and when each
//!   was accepted by the time since boot (which a step of the wall clock does not move), and
//!   resumed at start only in the boot they were accepted in (see
//!   [`crate::lorawan::Decoder::resume_copies`]), also after the device is no longer known to
//!   restart its counter, whose session keeps no frames of its own: any other session's kept
//!   counter refuses such a copy after a restart by itself, only one below [`RESET_BELOW`]
//!   after a counter at or above it told as a [`FcntError::Reset`].
//! * A session of a device known to restart its counter ([`FcntTracker::resetting`], the
//!   device's `resets_fcnt`) accepts a counter at or below the last accepted, unless the frame
//!   is such a copy, as a restart, and goes on from it. Every wire value is then also tried
//!   with the upper half 0, since the restarted counter may be past 16 when first heard.
//! * For any other session a counter equal to the last accepted is a copy unless the frame is
//!   another one (another MIC): a device that restarted its counter and reached the same
//!   value is told as a restart ([`FcntError::Reset`]). The MIC is kept with the counter
//!   across a restart of hubgate; a counter kept without it (by an older release, or set by
//!   `fcnt_from`) leaves it unknown until a frame is accepted, an equal counter being a
//!   copy meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// Upper halves tried for the first frame of a session (covers FCnt32 below 16 * 65536).
pub const INITIAL_UPPER_HALVES: u32 = 16;
/// Upper halves ahead of the last accepted one tried as rollovers: a gap of at least
/// 3 × 65536 lost frames (68 days at a frame every 30 s); a longer one is found by the search
/// of [`RESCUE_EVERY`] while the device's counter is below 16 × 65536 (2^20), never past it.
/// Not more: each candidate is one more chance for a forged frame to pass the 32-bit MIC, and
/// one that did would move the counter ahead of the device's own.
pub const BLOCKS_AHEAD: u32 = 4;
/// How often a session may look for a frame that failed the MIC under every candidate once
/// more, in the upper halves a session's first frame is looked for in
/// ([`FcntTracker::rescue_candidates`]): a device whose counter got further ahead of the
/// session's than [`BLOCKS_AHEAD`] halves (unheard for that long, or the session's counter
/// set back by a replayed old frame of a `resets_fcnt` device or of a session with no counter
/// kept yet) is found again by the first of its frames heard a minute or more after the last
/// such search, instead of failing the MIC for good (a device counter below 2^20 only). At
/// most once a minute: each candidate is one more chance for a forged frame to pass the MIC,
/// and one more MIC computed for a frame of anyone. A frame captured earlier is not taken
/// by it: a counter it finds is taken only if ahead of the session's last
/// ([`FcntTracker::check_rescued`]), and a captured frame's is at or below it while the
/// session's counter follows the device's; a `resets_fcnt` session would otherwise take it
/// for a restart. Whoever sends a frame of the DevAddr that fails the MIC (garbage, a
/// foreign device sharing it, an old frame) uses the search up for the minute.
pub const RESCUE_EVERY: Duration = Duration::from_secs(60);
/// A refused FCnt32 below this, after a last accepted at or above it, is taken for a counter
/// restart ([`FcntError::Reset`]).
pub const RESET_BELOW: u32 = 16;
/// How long a frame accepted is told as a copy when heard again ([`FcntError::Replay`]), not
/// taken as another frame of a device that restarted its counter. A copy comes within
/// seconds (a second gateway, a source's redelivery once its connection is back), a minute
/// or two when a gateway's backhaul queued it. A device that restarted its counter repeats
/// the same bytes only when it reached the same counter again with the same FPort and
/// payload (a boot message at FCnt 0 on each power-up), which takes a power cycle, rarely
/// within minutes of the last. Such a frame within the window is refused, acknowledged as a
/// copy, a reading lost, so the window is kept short; such a device's frames that carry
/// their own times from one gateway are measured by those too, as a broker that held them
/// delivers them at once ([`FcntTracker::copy_of`]). A copy later than the window is taken
/// by the decoder and makes its records again, under the first's ids, which the ledger's
/// de-duplication drops while it knows them (the last `dedup_window` records; after a
/// restart, those still buffered) and consumers can drop; for a device that restarts its
/// counter, whose record id hashes the receive time, only when the copy carries the first's
/// time (a redelivery of a gateway's or network server's time): a second gateway's copy,
/// or a redelivery timed by hubgate's own clock, is a duplicate under other ids, the lesser
/// harm.
pub const COPY_WINDOW: Duration = Duration::from_secs(180);
/// How far below the last accepted counter a frame never accepted is still taken (a frame
/// late, see the module's policy); as far as a device sends in some minutes under its duty
/// cycle. Which counters of the window were taken is kept with the counter
/// ([`Counter::behind`]): a counter is kept only once its frame's records, and those of
/// every frame accepted before it, are durable, so a late frame's redelivery after a crash
/// is taken too.
pub const LATE_WINDOW: u32 = 64;
/// Frames accepted remembered per session to tell a copy ([`COPY_WINDOW`]): a device may send
/// a few in a window under its duty cycle, far fewer than this. Bounds the state kept across
/// restarts (16 bytes a frame).
pub const COPIES: usize = 32;

/// Where a session's counter stands after a frame: kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The last accepted FCnt32.
    pub fcnt: u32,
    /// Its frame's MIC.
    pub mic: [u8; 4],
    /// Which of the [`LATE_WINDOW`] counters below it are taken: bit `i` for `fcnt - 1 - i`.
    pub behind: u64,
}

/// Why a MIC-verified counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FcntError {
    #[error("replayed or old FCnt {fcnt} (last accepted {last})")]
    Replay { fcnt: u32, last: u32 },
    #[error("FCnt {fcnt} after {last}: the device very likely restarted its frame counter")]
    Reset { fcnt: u32, last: u32 },
}

/// Frame counter state of one session (one direction: uplinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcntTracker {
    last: Option<u32>,
    /// The MIC of the frame accepted last (`None`: not known, a counter kept without it).
    last_mic: Option<[u8; 4]>,
    /// Which of the [`LATE_WINDOW`] counters below the last accepted are taken: bit `i` for
    /// `last - 1 - i`, set once accepted, and for every counter below one the tracker was
    /// told rather than heard ([`accept`](FcntTracker::accept): `fcnt_from`, a counter kept
    /// without them), whose frames may have been taken before; resumed as kept
    /// ([`resume_kept`](FcntTracker::resume_kept)). Not used by a session that restarts its
    /// counter, for which a counter below the last is a restart.
    behind: u64,
    /// The device restarts its counter: a smaller one is a restart, not a replay.
    resets: bool,
    /// The last [`COPIES`] frames accepted, (FCnt32, MIC, when), oldest first; those older
    /// than [`COPY_WINDOW`] before the newest are dropped.
    recent: VecDeque<(u32, [u8; 4], Heard)>,
}

/// When a frame was heard: by hubgate's clock and, when the frame carries one, by its own
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub at: Instant,
    pub own: Option<OwnTime>,
}

/// A frame's own time (the gateway's or the network server's), with the gateway that
/// reported it (a hash of its id): two gateways' clocks may disagree by minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnTime {
    pub time: SystemTime,
    pub gateway: u64,
}

impl From<Instant> for Heard {
    /// A frame without a time of its own.
    fn from(at: Instant) -> Heard {
        Heard { at, own: None }
    }
}

impl Default for FcntTracker {
    fn default() -> Self {
        FcntTracker::new()
    }
}

impl FcntTracker {
    pub fn new() -> Self {
        FcntTracker {
            last: None,
            last_mic: None,
            behind: u64::MAX,
            resets: false,
            recent: VecDeque::new(),
        }
    }

    /// A tracker of a device that restarts its counter: a MIC-verified counter below the last
    /// accepted is accepted and the count goes on from it. A frame captured before a restart
    /// can then be replayed after it.
    pub fn resetting() -> Self {
        FcntTracker {
            resets: true,
            ..FcntTracker::new()
        }
    }

    /// A tracker that has already accepted `last`.
    pub fn resume(last: u32) -> Self {
        FcntTracker {
            last: Some(last),
            ..FcntTracker::new()
        }
    }

    /// The last accepted FCnt32, if any.
    pub fn last(&self) -> Option<u32> {
        self.last
    }

    /// Whether the device restarts its counter ([`FcntTracker::resetting`]).
    pub fn resets(&self) -> bool {
        self.resets
    }

    /// FCnt32 values to try (in order) for a 16-bit wire value. Includes the same-half value
    /// even when it is not ahead, so a replay verifies and is reported as one by [`check`],
    /// and a small value in the upper half 0, so a counter restart is told as one.
    ///
    /// [`check`]: FcntTracker::check
    pub fn candidates(&self, wire: u16) -> Vec<u32> {
        let w = u32::from(wire);
        let Some(last) = self.last else {
            return (0..INITIAL_UPPER_HALVES).map(|k| (k << 16) | w).collect();
        };
        let same = (last & 0xFFFF_0000) | w;
        let mut out = vec![same];
        // A frame late across a rollover: the same 16 bits in the half before.
        let before = (same.checked_sub(1 << 16))
            .filter(|&b| !self.resets && same > last && last - b <= LATE_WINDOW);
        out.extend(before);
        out.extend((1..=BLOCKS_AHEAD).map_while(|k| same.checked_add(k << 16)));
        if (w < RESET_BELOW || self.resets) && same != w {
            out.push(w);
        }
        out
    }

    /// FCnt32 values a session's first frame is looked for under (upper halves 0 to
    /// [`INITIAL_UPPER_HALVES`]) that [`candidates`](FcntTracker::candidates) does not try: for
    /// a frame that failed the MIC under all of those ([`RESCUE_EVERY`]), checked by
    /// [`check_rescued`](FcntTracker::check_rescued). None for a session with no counter yet,
    /// which tries them all at once.
    pub fn rescue_candidates(&self, wire: u16) -> Vec<u32> {
        if self.last.is_none() {
            return Vec::new();
        }
        let tried = self.candidates(wire);
        let first = FcntTracker::new().candidates(wire);
        first.into_iter().filter(|c| !tried.contains(c)).collect()
    }

    /// Whether a (MIC-verified) FCnt32 found only among
    /// [`rescue_candidates`](FcntTracker::rescue_candidates) may be accepted: as
    /// [`check`](FcntTracker::check) says, and only if ahead of the last accepted, also for a
    /// device that restarts its counter. The search is for a device whose counter got ahead
    /// of its session's; a counter it finds at or below the last is a frame captured earlier,
    /// which such a session would take for a restart, going back to it, and every frame
    /// captured after it would then verify in the halves ahead and be taken. A genuine
    /// restart starts in the upper half 0, which `candidates` tries.
    pub fn check_rescued(
        &self,
        fcnt32: u32,
        mic: [u8; 4],
        now: impl Into<Heard>,
    ) -> Result<(), FcntError> {
        match self.last {
            Some(last) if fcnt32 <= last => Err(FcntError::Replay { fcnt: fcnt32, last }),
            _ => self.check(fcnt32, mic, now),
        }
    }

    /// Whether a (MIC-verified) FCnt32 of a frame with `mic`, heard at `now`, may be accepted:
    /// it must not be a copy of a frame accepted within [`COPY_WINDOW`], and be ahead of the
    /// last one, or late ([`LATE_WINDOW`]), or, for a device that restarts its counter, at or
    /// below it.
    pub fn check(&self, fcnt32: u32, mic: [u8; 4], now: impl Into<Heard>) -> Result<(), FcntError> {
        let now = now.into();
        let another_frame = |last| fcnt32 == last && self.last_mic.is_some_and(|m| m != mic);
        match self.last {
            Some(last) if self.copy_of(fcnt32, mic, now) => {
                Err(FcntError::Replay { fcnt: fcnt32, last })
            }
            Some(last) if self.resets && fcnt32 <= last => Ok(()),
            Some(_) if self.late(fcnt32) => Ok(()),
            Some(last) if (fcnt32 < RESET_BELOW && last >= RESET_BELOW) || another_frame(last) => {
                Err(FcntError::Reset { fcnt: fcnt32, last })
            }
            Some(last) if fcnt32 <= last => Err(FcntError::Replay { fcnt: fcnt32, last }),
            _ => Ok(()),
        }
    }

    /// Record a counter known to be taken, not heard (kept before a restart, with its
    /// frame's MIC, or `None`: kept without it; or below `fcnt_from`): as
    /// [`advance`](FcntTracker::advance) does, and no frame at or below it is late, as it may
    /// have been taken.
    pub fn accept(&mut self, fcnt32: u32, mic: Option<[u8; 4]>) {
        self.advance(fcnt32, mic);
        self.behind = u64::MAX;
    }

    /// Go on from a counter kept before a restart, as [`accept`](FcntTracker::accept) does,
    /// with which counters of the window below it were taken then (`behind`; `None`: not
    /// kept, by an older release: every one), when it is ahead of the counter the session
    /// was told (`fcnt_from`), below which every counter stays taken.
    pub fn resume_kept(&mut self, last: u32, mic: Option<[u8; 4]>, behind: Option<u64>) {
        let told = self.last;
        self.accept(last, mic);
        if told.is_none_or(|t| t < last) {
            self.behind = behind.unwrap_or(u64::MAX);
            if let Some(t) = told {
                self.behind |= u64::MAX.checked_shl(last - 1 - t).unwrap_or(0);
            }
        }
    }

    /// Record a frame accepted at `at` (after [`check`](FcntTracker::check) passed): its
    /// counter as [`advance`](FcntTracker::advance) does, and the frame as
    /// [`remember`](FcntTracker::remember) does. Returns where the session's counter stands
    /// now, to keep across a restart: at the frame's own, or, for a frame late, at the last
    /// accepted one's, which it leaves as it was.
    pub fn accept_at(&mut self, fcnt32: u32, mic: [u8; 4], at: impl Into<Heard>) -> Counter {
        let late = self.late(fcnt32);
        self.advance(fcnt32, Some(mic));
        self.remember(fcnt32, mic, at);
        let last = self.last.zip(self.last_mic).filter(|_| late);
        let (fcnt, mic) = last.unwrap_or((fcnt32, mic));
        Counter {
            fcnt,
            mic,
            behind: self.behind,
        }
    }

    /// Move the counter to an accepted FCnt32 with its frame's MIC: a smaller one is a
    /// restart of a device that restarts its counter, which goes on from it, and a frame late
    /// for any other session, which leaves it. The MIC is the last frame's only if the
    /// counter is its: one of a counter left behind (kept below `fcnt_from`) paired with the
    /// last would make that frame another frame, a restart.
    fn advance(&mut self, fcnt32: u32, mic: Option<[u8; 4]>) {
        match self.last {
            // No window: a counter below the last is a restart.
            _ if self.resets => self.behind = u64::MAX,
            Some(l) if fcnt32 > l => {
                // The window slides up: the last accepted is taken, the counters skipped not.
                let moved = self.behind.checked_shl(fcnt32 - l).unwrap_or(0);
                self.behind = moved | 1u64.checked_shl(fcnt32 - l - 1).unwrap_or(0);
            }
            Some(l) if fcnt32 < l && l - fcnt32 <= LATE_WINDOW => {
                self.behind |= 1 << (l - 1 - fcnt32);
            }
            Some(_) => {}
            // A session's first frame: none below it is known taken (counters below 0 are
            // not counters). A frame below it, late, is taken (a captured one would be: the
            // first frame of a session may be any); so is one whose records a crash lost
            // before a counter was kept, which its source delivers again after a later one
            // it then takes first.
            None => self.behind = u64::MAX.checked_shl(fcnt32).unwrap_or(0),
        }
        let last = match self.last {
            Some(l) if !self.resets => l.max(fcnt32),
            _ => fcnt32,
        };
        if last == fcnt32 {
            self.last_mic = mic;
        }
        self.last = Some(last);
    }

    /// Whether `fcnt32` is a frame late: a session that does not restart its counter has not
    /// taken it, and it is at most [`LATE_WINDOW`] below the last accepted, whose MIC is known
    /// (the counter to keep stays at that frame: [`accept_at`](FcntTracker::accept_at)).
    fn late(&self, fcnt32: u32) -> bool {
        let Some(below) = self.last.and_then(|l| l.checked_sub(fcnt32)) else {
            return false;
        };
        let in_window = (1..=LATE_WINDOW).contains(&below);
        !self.resets
            && self.last_mic.is_some()
            && in_window
            && self.behind & (1 << (below - 1)) == 0
    }

    /// Frame (FCnt32, MIC) was accepted at `at`: heard again within [`COPY_WINDOW`], it is a
    /// copy. Frames older than the window before `at` are forgotten, and the oldest past
    /// [`COPIES`].
    pub fn remember(&mut self, fcnt32: u32, mic: [u8; 4], at: impl Into<Heard>) {
        let at = at.into();
        self.recent.retain(|&(f, m, when)| {
            (f, m) != (fcnt32, mic) && at.at.saturating_duration_since(when.at) < COPY_WINDOW
        });
        self.recent.push_back((fcnt32, mic, at));
        if self.recent.len() > COPIES {
            self.recent.pop_front();
        }
    }

    /// Whether frame (FCnt32, MIC), heard at `now`, is a copy of one accepted less than
    /// [`COPY_WINDOW`] before. For a device that restarts its counter, the same bytes may be
    /// another reading (its boot message after each power-up), so when both frames carry
    /// their own times from the same gateway those must be within the window too: a broker
    /// that held two such frames an hour apart (hubgate away) delivers them within a second.
    /// Times from two gateways are not compared: one whose clock is off by minutes would
    /// make every copy it hears another reading.
    fn copy_of(&self, fcnt32: u32, mic: [u8; 4], now: Heard) -> bool {
        let apart =
            |a: SystemTime, b: SystemTime| a.duration_since(b).unwrap_or_else(|e| e.duration());
        self.recent.iter().any(|&(f, m, at)| {
            let own_apart = match (at.own, now.own) {
                (Some(a), Some(b)) if self.resets && a.gateway == b.gateway => {
                    apart(a.time, b.time)
                }
                _ => Duration::ZERO,
            };
            (f, m) == (fcnt32, mic)
                && now.at.saturating_duration_since(at.at) < COPY_WINDOW
                && own_apart < COPY_WINDOW
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIC: [u8; 4] = [1, 2, 3, 4];

    /// `same`, then the same wire value in each of the [`BLOCKS_AHEAD`] halves after it.
    fn ahead(same: u32) -> Vec<u32> {
        (0..=BLOCKS_AHEAD).map(|k| same + (k << 16)).collect()
    }

    #[test]
    fn fresh_tracker_tries_low_upper_halves() {
        let c = FcntTracker::new().candidates(7);
        assert_eq!(c.len() as u32, INITIAL_UPPER_HALVES);
        assert_eq!(c[0], 7);
        assert_eq!(c[1], 0x1_0007);
    }

    #[test]
    fn the_same_half_comes_first_then_the_halves_ahead() {
        let t = FcntTracker::resume(0x0002_0010);
        assert_eq!(t.candidates(0x0011), ahead(0x0002_0011));
        assert_eq!(t.candidates(0xF000), ahead(0x0002_F000));
    }

    #[test]
    fn backwards_wire_value_is_tried_as_a_rollover() {
        let t = FcntTracker::resume(0xFFF0);
        assert_eq!(t.candidates(0x0003)[..2], [0x0003, 0x1_0003]);
        // Same value again: the replay candidate first.
        assert_eq!(t.candidates(0xFFF0), ahead(0xFFF0));
    }

    /// The MIC covers all 32 bits: a rollover of any size is tried (an old frame verifies
    /// only under its own counter, the same-half value, which comes first).
    #[test]
    fn a_rollover_of_any_size_is_tried() {
        let t = FcntTracker::resume(0x8000);
        assert_eq!(t.candidates(0x7FFF), ahead(0x7FFF));
        let t = FcntTracker::resume(0xBFFF);
        assert_eq!(t.candidates(0x0000), ahead(0x0000));
    }

    #[test]
    fn top_of_the_counter_space_does_not_overflow() {
        let t = FcntTracker::resume(u32::MAX);
        assert_eq!(t.candidates(0x0001), vec![0xFFFF_0001, 0x0001]);
        assert!(t.check(0xFFFF_0001, MIC, Instant::now()).is_err());
    }

    #[test]
    fn replays_and_old_counters_are_rejected() {
        let mut t = FcntTracker::new();
        t.check(7, MIC, Instant::now()).unwrap();
        t.accept(7, Some(MIC));
        assert_eq!(
            t.check(7, MIC, Instant::now()),
            Err(FcntError::Replay { fcnt: 7, last: 7 })
        );
        assert!(t.check(6, MIC, Instant::now()).is_err());
        t.check(8, MIC, Instant::now()).unwrap();
        t.accept(8, Some(MIC));
        assert_eq!(t.last(), Some(8));
    }

    #[test]
    fn a_small_wire_value_is_also_tried_from_the_start() {
        let t = FcntTracker::resume(0x2_0010);
        let mut small = ahead(0x2_0003);
        small.push(0x0003);
        assert_eq!(t.candidates(0x0003), small);
        assert_eq!(
            t.candidates(RESET_BELOW as u16),
            ahead(0x2_0000 | RESET_BELOW)
        );
        // In the upper half 0 the same-half value is that one already.
        assert_eq!(FcntTracker::resume(0x4000).candidates(3), ahead(3));
    }

    #[test]
    fn a_small_counter_after_a_large_one_is_a_reset() {
        let t = FcntTracker::resume(RESET_BELOW);
        assert_eq!(
            t.check(RESET_BELOW - 1, MIC, Instant::now()),
            Err(FcntError::Reset {
                fcnt: RESET_BELOW - 1,
                last: RESET_BELOW
            })
        );
        assert!(matches!(
            t.check(RESET_BELOW, MIC, Instant::now()),
            Err(FcntError::Replay { .. })
        ));
        let t = FcntTracker::resume(RESET_BELOW - 1);
        assert!(matches!(
            t.check(0, MIC, Instant::now()),
            Err(FcntError::Replay { .. })
        ));
    }

    #[test]
    fn a_resetting_tracker_restarts_and_goes_on() {
        let mut t = FcntTracker::resetting();
        let t0 = Instant::now();
        t.accept_at(0x2_0010, MIC, t0);
        // Every wire value is tried in the upper half 0 too.
        let mut both = ahead(0x2_0028);
        both.push(40);
        assert_eq!(t.candidates(40), both);
        assert_eq!(
            t.check(0x2_0010, MIC, t0),
            Err(FcntError::Replay {
                fcnt: 0x2_0010,
                last: 0x2_0010
            })
        );
        t.check(40, MIC, t0).unwrap();
        t.accept_at(40, MIC, t0);
        assert_eq!(t.last(), Some(40));
        assert!(matches!(
            t.check(40, MIC, t0),
            Err(FcntError::Replay { .. })
        ));
        t.check(41, MIC, t0).unwrap();
        t.accept_at(41, MIC, t0);
        assert_eq!(t.last(), Some(41));
    }

    /// A frame accepted is a copy when heard again within [`COPY_WINDOW`], wherever it is
    /// among the last [`COPIES`]: for a device that restarts its counter, neither a restart
    /// (behind the last counter, or at it) nor a counter going ahead (a frame from before its
    /// restart); for another device not a restart told ([`FcntError::Reset`]) for being
    /// small. Past the window, or out of the last [`COPIES`], the same bytes are another
    /// frame: a restarted device's boot message is taken.
    #[test]
    fn a_frame_heard_again_within_the_window_is_a_copy() {
        let mic = |f: u32| f.to_be_bytes();
        let t0 = Instant::now();
        let late = t0 + COPY_WINDOW;
        let mut t = FcntTracker::resetting();
        for f in [100, 101, 0, 1] {
            t.accept_at(f, mic(f), t0);
        }
        for f in [100, 101, 0, 1] {
            let copy = Err(FcntError::Replay { fcnt: f, last: 1 });
            assert_eq!(t.check(f, mic(f), t0), copy, "{f} within the window");
            assert_eq!(t.check(f, mic(f), late), Ok(()), "{f} past the window");
        }
        assert_eq!(t.check(100, MIC, t0), Ok(()), "another frame at 100");
        let just = late - Duration::from_millis(1);
        assert!(t.check(0, mic(0), just).is_err(), "just within the window");

        let mut t = FcntTracker::new();
        t.accept_at(RESET_BELOW - 1, mic(RESET_BELOW - 1), t0);
        t.accept_at(RESET_BELOW, mic(RESET_BELOW), t0);
        let small = RESET_BELOW - 1;
        assert_eq!(
            t.check(small, mic(small), t0),
            Err(FcntError::Replay {
                fcnt: small,
                last: RESET_BELOW
            }),
            "a copy of a small counter"
        );
        assert_eq!(
            t.check(small, mic(small), late),
            Err(FcntError::Reset {
                fcnt: small,
                last: RESET_BELOW
            }),
            "the same bytes later: a restart, told"
        );

        let mut t = FcntTracker::resetting();
        let first = 1000;
        for f in first..first + COPIES as u32 + 1 {
            t.accept_at(f, mic(f), t0);
        }
        assert_eq!(
            t.check(first, mic(first), t0),
            Ok(()),
            "out of the last {COPIES}"
        );
        let second = Err(FcntError::Replay {
            fcnt: first + 1,
            last: first + COPIES as u32,
        });
        assert_eq!(t.check(first + 1, mic(first + 1), t0), second);
    }

    /// Frames heard together whose own times from one gateway are further apart than the
    /// window: for a device that restarts its counter, the same bytes are two readings (a
    /// broker held them while hubgate was away); for any other, a copy still, never a
    /// restart. Own times within the window, from two gateways, or a frame without one,
    /// leave a copy a copy.
    #[test]
    fn the_same_bytes_heard_together_an_hour_apart_by_their_own_times() {
        let t0 = Instant::now();
        let ten = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let heard = |own: Option<SystemTime>| Heard {
            at: t0,
            own: own.map(|time| OwnTime { time, gateway: 1 }),
        };
        let eleven = Some(ten + Duration::from_secs(3600));
        let soon = Some(ten + COPY_WINDOW - Duration::from_millis(1));

        let mut t = FcntTracker::resetting();
        t.accept_at(0, MIC, heard(Some(ten)));
        assert_eq!(t.check(0, MIC, heard(eleven)), Ok(()), "another reading");
        let copy = Err(FcntError::Replay { fcnt: 0, last: 0 });
        assert_eq!(t.check(0, MIC, heard(soon)), copy, "within the window");
        let window = Some(ten + COPY_WINDOW);
        assert_eq!(t.check(0, MIC, heard(window)), Ok(()), "the window apart");
        assert_eq!(t.check(0, MIC, heard(None)), copy, "a copy without a time");
        assert_eq!(t.check(0, MIC, t0), copy, "hubgate's clock alone");
        let mut earlier = FcntTracker::resetting();
        earlier.accept_at(0, MIC, heard(eleven));
        assert_eq!(
            earlier.check(0, MIC, heard(Some(ten))),
            Ok(()),
            "an hour before"
        );
        let other_gateway = Heard {
            at: t0,
            own: eleven.map(|time| OwnTime { time, gateway: 2 }),
        };
        assert_eq!(
            t.check(0, MIC, other_gateway),
            copy,
            "another gateway's clock, an hour off"
        );

        let mut t = FcntTracker::new();
        t.accept_at(RESET_BELOW - 1, MIC, heard(Some(ten)));
        t.accept_at(RESET_BELOW, [9; 4], heard(Some(ten)));
        assert_eq!(
            t.check(RESET_BELOW - 1, MIC, heard(eleven)),
            Err(FcntError::Replay {
                fcnt: RESET_BELOW - 1,
                last: RESET_BELOW
            }),
            "a device that keeps its counter sends no frame twice"
        );
    }

    /// Frames older than the window are forgotten as newer ones come, and a frame taken again
    /// (the same bytes past the window) is a copy from its new time on.
    #[test]
    fn a_frame_taken_again_counts_from_then() {
        let t0 = Instant::now();
        let later = t0 + COPY_WINDOW;
        let mut t = FcntTracker::resetting();
        t.accept_at(0, MIC, t0);
        t.accept_at(1, [1; 4], t0);
        assert_eq!(t.check(0, MIC, later), Ok(()));
        t.accept_at(0, MIC, later);
        assert_eq!(
            t.recent.iter().map(|r| (r.0, r.2.at)).collect::<Vec<_>>(),
            [(0, later)]
        );
        assert!(t.check(0, MIC, later + COPY_WINDOW / 2).is_err());
    }

    /// A frame late (never accepted, at most [`LATE_WINDOW`] below the last, also below the
    /// session's first frame) is taken once, and leaves the counter where it was; one further
    /// below, one accepted before, or below a counter the session was told (resumed without
    /// which counters were taken) is a replay.
    #[test]
    fn a_frame_late_is_taken_once_within_the_window() {
        let mic = |f: u32| f.to_be_bytes();
        let t0 = Instant::now();
        let mut t = FcntTracker::new();
        for f in [100, 300] {
            assert_eq!(kept(t.accept_at(f, mic(f), t0)), (f, mic(f)));
        }
        let low = 300 - LATE_WINDOW;
        let replay = |fcnt| Err(FcntError::Replay { fcnt, last: 300 });
        assert_eq!(
            t.check(low - 1, mic(0), t0),
            replay(low - 1),
            "past the window"
        );
        assert_eq!(t.check(100, mic(0), t0), replay(100), "accepted before");
        for f in [low, 299, 250] {
            assert_eq!(t.check(f, mic(f), t0), Ok(()), "{f}");
            assert_eq!(kept(t.accept_at(f, mic(f), t0)), (300, mic(300)), "{f}");
            assert_eq!(t.check(f, mic(0), t0), replay(f), "{f} again, another MIC");
        }
        assert_eq!(t.last(), Some(300));
        assert_eq!(t.check(251, mic(251), t0), Ok(()));
        assert_eq!(kept(t.accept_at(301, mic(301), t0)), (301, mic(301)));
        assert_eq!(
            t.check(300, mic(300), t0 + COPY_WINDOW),
            replay_at(300, 301)
        );
        assert_eq!(
            t.check(251, mic(251), t0),
            Ok(()),
            "still late after the slide"
        );
        assert_eq!(t.check(250, mic(0), t0), replay_at(250, 301));

        let mut first = FcntTracker::new();
        first.accept_at(20, mic(20), t0);
        assert_eq!(
            first.check(19, mic(19), t0),
            Ok(()),
            "below the first frame"
        );
        assert_eq!(
            FcntTracker::resume(20).check(19, mic(19), t0),
            replay_at(19, 20),
            "below a counter resumed"
        );
        let mut far = FcntTracker::new();
        far.accept_at(10, mic(10), t0);
        far.accept_at(10 + 2 * LATE_WINDOW, mic(0), t0);
        let top = 10 + 2 * LATE_WINDOW;
        assert_eq!(far.check(top - 1, mic(1), t0), Ok(()), "after a jump");
        assert!(far.check(top - LATE_WINDOW - 1, mic(1), t0).is_err());
    }

    /// Where a counter kept stands, but which counters below it were taken.
    fn kept(c: Counter) -> (u32, [u8; 4]) {
        (c.fcnt, c.mic)
    }

    fn replay_at(fcnt: u32, last: u32) -> Result<(), FcntError> {
        Err(FcntError::Replay { fcnt, last })
    }

    /// Which counters below a kept counter were taken is resumed with it: a frame late is
    /// still taken after a restart. Without it (an older release's), every counter below is
    /// taken; a counter told (`fcnt_from`) ahead of the kept one leaves every counter below it
    /// taken, one behind the kept one every counter at or below itself.
    #[test]
    fn which_counters_below_were_taken_is_resumed() {
        let t0 = Instant::now();
        let mut t = FcntTracker::new();
        t.accept_at(100, MIC, t0);
        let kept = t.accept_at(110, MIC, t0);
        let resumed = |told: Option<u32>, behind| {
            let mut r = FcntTracker::new();
            if let Some(t) = told {
                r.accept(t, None);
            }
            r.resume_kept(110, Some(MIC), behind);
            (101..110)
                .filter(|&f| r.check(f, MIC, t0).is_ok())
                .collect::<Vec<_>>()
        };
        let all: Vec<u32> = (101..110).collect();
        assert_eq!(resumed(None, Some(kept.behind)), all);
        assert!(resumed(None, None).is_empty(), "kept without them");
        assert_eq!(
            resumed(Some(104), Some(kept.behind)),
            (105..110).collect::<Vec<_>>()
        );
        assert!(
            resumed(Some(110), Some(kept.behind)).is_empty(),
            "told at it"
        );
        assert!(
            resumed(Some(120), Some(kept.behind)).is_empty(),
            "told ahead"
        );
    }

    /// A frame late across a rollover of the 16 bits on air is tried in the half before, and
    /// only while within the window; a small one late is not a restart told.
    #[test]
    fn a_frame_late_across_a_rollover_is_tried_in_the_half_before() {
        let t0 = Instant::now();
        let mut t = FcntTracker::new();
        t.accept_at(0xFFF0, MIC, t0);
        t.accept_at(0x1_0002, MIC, t0);
        let mut late = vec![0x1_FFF5, 0xFFF5];
        late.extend(ahead(0x1_FFF5).into_iter().skip(1));
        assert_eq!(t.candidates(0xFFF5), late);
        assert_eq!(t.check(0xFFF5, [9; 4], t0), Ok(()));
        assert_eq!(t.candidates(0x8000), ahead(0x1_8000), "out of the window");
        let mut resets = FcntTracker::resetting();
        resets.accept_at(0x2_0010, MIC, t0);
        let mut tried = ahead(0x2_FFE0);
        tried.push(0xFFE0);
        assert_eq!(
            resets.candidates(0xFFE0),
            tried,
            "not for a session that takes a counter below its last as a restart"
        );
        let mut small = FcntTracker::new();
        small.accept_at(2, MIC, t0);
        small.accept_at(RESET_BELOW + 4, MIC, t0);
        assert_eq!(small.check(3, [9; 4], t0), Ok(()), "late, not a restart");
        assert!(matches!(
            small.check(2, [9; 4], t0),
            Err(FcntError::Reset { .. })
        ));
    }

    /// A counter kept below `fcnt_from` leaves the MIC at `fcnt_from - 1` unknown: the
    /// device's own frame there is old, not another frame at the last counter (a restart).
    #[test]
    fn a_counter_kept_behind_fcnt_from_leaves_its_mic_unknown() {
        let mut t = FcntTracker::new();
        t.accept(999, None);
        t.accept(500, Some(MIC));
        assert_eq!(
            t.check(999, [9; 4], Instant::now()),
            Err(FcntError::Replay {
                fcnt: 999,
                last: 999
            })
        );
    }

    /// A late frame from before a 16-bit rollover is tried in the half before the counter's
    /// up to `LATE_WINDOW` below it, and taken: a frame exactly at the window's edge is a
    /// reading, not a MIC failure.
    #[test]
    fn a_late_frame_across_a_rollover_is_tried_up_to_the_edge_of_the_late_window() {
        let t0 = Instant::now();
        let mut t = FcntTracker::new();
        let last = 0x1_0000 + LATE_WINDOW / 2;
        let edge = last - LATE_WINDOW;
        t.accept_at(edge - 1, MIC, t0);
        t.accept_at(last, MIC, t0);
        let mut tried = vec![0x1_0000 | (edge & 0xFFFF), edge];
        tried.extend(&ahead(0x1_0000 | (edge & 0xFFFF))[1..]);
        assert_eq!(t.candidates(edge as u16), tried);
        assert_eq!(t.check(edge, [9; 4], t0), Ok(()));
        let past = edge - 1;
        assert_eq!(t.candidates(past as u16), ahead(0x1_0000 | (past & 0xFFFF)));
    }

    /// Under a counter whose frame's MIC is unknown, no frame below is taken as late, even
    /// one never heard: its counter would be what is kept, a step back, and a restart would
    /// take frames between it and the counter again.
    #[test]
    fn no_frame_is_late_under_a_counter_whose_mic_is_unknown() {
        let mut t = FcntTracker::new();
        t.resume_kept(100, None, Some(0));
        assert_eq!(
            t.check(99, MIC, Instant::now()),
            Err(FcntError::Replay {
                fcnt: 99,
                last: 100
            })
        );
    }
}
