//! 32-bit frame counter reconstruction from the 16 bits on air (LoRaWAN 1.0.x §4.3.1.5).
//!
//! Policy, per session:
//!
//! * The next counter must be greater than the last accepted one: an equal or smaller FCnt32 is
//!   a replay (or a duplicate heard twice) and is rejected with [`FcntError::Replay`].
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
//!   device past FCnt 65535 is still picked up. An accepted counter of each session is
//!   kept in the buffer once its frame's records, and every earlier frame's, are durable, and
//!   resumed at start, so a frame captured before a restart is still a replay after it.
//! * A refused counter below [`RESET_BELOW`] while the last accepted is at or above it is
//!   [`FcntError::Reset`]: far more likely a device that restarted its counter (an ABP device
//!   that does not keep it across a power cycle) than a copy, which repeats a recent counter.
//!   So that a device past FCnt 65535 is told too, such a small wire value is also tried with
//!   the upper half 0.
//! * A session of a device known to restart its counter ([`FcntTracker::resetting`], the
//!   device's `resets_fcnt`) accepts a counter below the last accepted as such a restart, and
//!   goes on from it. Every wire value is then also tried with the upper half 0, since the
//!   restarted counter may be past 16 when first heard.
//! * A counter equal to the last accepted is a copy only if the frame is the same: a copy
//!   (a second gateway, a redelivery) is the same PHYPayload, MIC included. Another MIC at
//!   that counter is another frame, from a device that restarted its counter and reached the
//!   same value (one that sends once per power-up sends FCnt 0 each time): a restart
//!   ([`FcntError::Reset`], or accepted for a device that restarts its counter). The MIC is
//!   kept with the counter across a restart of hubgate: without it, a device that sends FCnt
//!   0 once per power-up would have every later frame taken for a copy. Only a counter kept
//!   without its MIC (by an older release) leaves it unknown until a frame is accepted, an
//!   equal counter being a copy meanwhile; a restarted device that sends the same payload at
//!   the same counter cannot be told from a copy at all.

/// Upper halves tried for the first frame of a session (covers FCnt32 below 16 * 65536).
pub const INITIAL_UPPER_HALVES: u32 = 16;
/// Upper halves ahead of the last accepted one tried as rollovers: a gap of at least
/// 3 × 65536 lost frames (68 days at a frame every 30 s). Not more: each candidate is one
/// more chance for a forged frame to pass the 32-bit MIC, and one that did would move the
/// counter ahead of the device's own.
pub const BLOCKS_AHEAD: u32 = 4;
/// A refused FCnt32 below this, after a last accepted at or above it, is taken for a counter
/// restart ([`FcntError::Reset`]).
pub const RESET_BELOW: u32 = 16;

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
    /// The device restarts its counter: a smaller one is a restart, not a replay.
    resets: bool,
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
            resets: false,
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
        out.extend((1..=BLOCKS_AHEAD).map_while(|k| same.checked_add(k << 16)));
        if (w < RESET_BELOW || self.resets) && same != w {
            out.push(w);
        }
        out
    }

    /// Whether a (MIC-verified) FCnt32 of a frame with `mic` may be accepted: it must be
    /// ahead of the last one, or, for a device that restarts its counter, behind it or
    /// another frame at the same counter.
    pub fn check(&self, fcnt32: u32, mic: [u8; 4]) -> Result<(), FcntError> {
        let another_frame = |last| fcnt32 == last && self.last_mic.is_some_and(|m| m != mic);
        match self.last {
            Some(last) if self.resets && (fcnt32 < last || another_frame(last)) => Ok(()),
            Some(last) if (fcnt32 < RESET_BELOW && last >= RESET_BELOW) || another_frame(last) => {
                Err(FcntError::Reset { fcnt: fcnt32, last })
            }
            Some(last) if fcnt32 <= last => Err(FcntError::Replay { fcnt: fcnt32, last }),
            _ => Ok(()),
        }
    }

    /// Record an accepted FCnt32 and its frame's MIC (after [`check`](FcntTracker::check)
    /// passed; `None`: a counter kept without its MIC): a smaller one is a restart of a
    /// device that restarts its counter, which goes on from it. The MIC is the last frame's
    /// only if the counter is its: one of a counter left behind (kept below `fcnt_from`)
    /// paired with the last would make that frame another frame, a restart.
    pub fn accept(&mut self, fcnt32: u32, mic: Option<[u8; 4]>) {
        let last = match self.last {
            Some(l) if !self.resets => l.max(fcnt32),
            _ => fcnt32,
        };
        if last == fcnt32 {
            self.last_mic = mic;
        }
        self.last = Some(last);
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
        assert!(t.check(0xFFFF_0001, MIC).is_err());
    }

    #[test]
    fn replays_and_old_counters_are_rejected() {
        let mut t = FcntTracker::new();
        t.check(7, MIC).unwrap();
        t.accept(7, Some(MIC));
        assert_eq!(t.check(7, MIC), Err(FcntError::Replay { fcnt: 7, last: 7 }));
        assert!(t.check(6, MIC).is_err());
        t.check(8, MIC).unwrap();
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
            t.check(RESET_BELOW - 1, MIC),
            Err(FcntError::Reset {
                fcnt: RESET_BELOW - 1,
                last: RESET_BELOW
            })
        );
        assert!(matches!(
            t.check(RESET_BELOW, MIC),
            Err(FcntError::Replay { .. })
        ));
        let t = FcntTracker::resume(RESET_BELOW - 1);
        assert!(matches!(t.check(0, MIC), Err(FcntError::Replay { .. })));
    }

    #[test]
    fn a_resetting_tracker_restarts_and_goes_on() {
        let mut t = FcntTracker::resetting();
        t.accept(0x2_0010, Some(MIC));
        // Every wire value is tried in the upper half 0 too.
        let mut both = ahead(0x2_0028);
        both.push(40);
        assert_eq!(t.candidates(40), both);
        assert_eq!(
            t.check(0x2_0010, MIC),
            Err(FcntError::Replay {
                fcnt: 0x2_0010,
                last: 0x2_0010
            })
        );
        t.check(40, MIC).unwrap();
        t.accept(40, Some(MIC));
        assert_eq!(t.last(), Some(40));
        assert!(matches!(t.check(40, MIC), Err(FcntError::Replay { .. })));
        t.check(41, MIC).unwrap();
        t.accept(41, Some(MIC));
        assert_eq!(t.last(), Some(41));
    }

    /// A counter kept below `fcnt_from` leaves the MIC at `fcnt_from - 1` unknown: the
    /// device's own frame there is old, not another frame at the last counter (a restart).
    #[test]
    fn a_counter_kept_behind_fcnt_from_leaves_its_mic_unknown() {
        let mut t = FcntTracker::new();
        t.accept(999, None);
        t.accept(500, Some(MIC));
        assert_eq!(
            t.check(999, [9; 4]),
            Err(FcntError::Replay {
                fcnt: 999,
                last: 999
            })
        );
    }
}
