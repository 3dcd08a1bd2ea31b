//! 32-bit frame counter reconstruction from the 16 bits on air (LoRaWAN 1.0.x §4.3.1.5).
//!
//! Policy, per session:
//!
//! * The next counter must be greater than the last accepted one: an equal or smaller FCnt32 is
//!   a replay (or a duplicate heard twice) and is rejected with [`FcntError::Replay`].
//! * Candidates for the wire value `w` after last accepted `l`: `upper(l) | w` (same upper
//!   half), and when that is not ahead of `l`, the rollover `upper(l) + 0x1_0000 | w`. The MIC
//!   decides between them; a wrong guess is a MIC failure.
//! * The rollover candidate is only tried when it is at most `max_gap` (default
//!   [`MAX_FCNT_GAP`] = 16384, the 1.0.x `MAX_FCNT_GAP`) ahead of `l`: a 16-bit value that went
//!   backwards by a little is far more likely a replay than 49152+ lost frames. Within the same
//!   upper half a forward jump of any size is accepted: the MIC proves it and the upper half is
//!   not a guess.
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

/// Largest forward step accepted when guessing a 16-bit rollover.
pub const MAX_FCNT_GAP: u32 = 16_384;
/// Upper halves tried for the first frame of a session (covers FCnt32 below 16 * 65536).
pub const INITIAL_UPPER_HALVES: u32 = 16;
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
    max_gap: u32,
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
        FcntTracker::with_max_gap(MAX_FCNT_GAP)
    }

    pub fn with_max_gap(max_gap: u32) -> Self {
        FcntTracker {
            last: None,
            last_mic: None,
            max_gap,
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

    pub fn max_gap(&self) -> u32 {
        self.max_gap
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
        if same <= last {
            if let Some(rollover) = same.checked_add(0x1_0000) {
                if rollover - last <= self.max_gap {
                    out.push(rollover);
                }
            }
        }
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
    /// device that restarts its counter, which goes on from it.
    pub fn accept(&mut self, fcnt32: u32, mic: Option<[u8; 4]>) {
        self.last = Some(match self.last {
            Some(l) if !self.resets => l.max(fcnt32),
            _ => fcnt32,
        });
        self.last_mic = mic;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIC: [u8; 4] = [1, 2, 3, 4];

    #[test]
    fn fresh_tracker_tries_low_upper_halves() {
        let c = FcntTracker::new().candidates(7);
        assert_eq!(c.len() as u32, INITIAL_UPPER_HALVES);
        assert_eq!(c[0], 7);
        assert_eq!(c[1], 0x1_0007);
    }

    #[test]
    fn forward_in_same_half_is_the_only_candidate() {
        let t = FcntTracker::resume(0x0002_0010);
        assert_eq!(t.candidates(0x0011), vec![0x0002_0011]);
        assert_eq!(t.candidates(0xF000), vec![0x0002_F000]);
    }

    #[test]
    fn backwards_wire_value_adds_the_rollover_candidate() {
        let t = FcntTracker::resume(0xFFF0);
        assert_eq!(t.candidates(0x0003), vec![0x0003, 0x1_0003]);
        // Same value again: replay candidate plus a rollover 65536 ahead, beyond max_gap.
        assert_eq!(t.candidates(0xFFF0), vec![0xFFF0]);
    }

    #[test]
    fn rollover_beyond_max_gap_is_not_guessed() {
        let t = FcntTracker::resume(0x8000);
        // 0x7FFF would be 65535 frames ahead as a rollover: treated as old, not guessed.
        assert_eq!(t.candidates(0x7FFF), vec![0x7FFF]);
        let t = FcntTracker::resume(0xC000);
        assert_eq!(t.candidates(0x0000), vec![0x0000, 0x1_0000]);
        let t = FcntTracker::resume(0xBFFF);
        assert_eq!(t.candidates(0x0000), vec![0x0000]);
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
        assert_eq!(t.candidates(0x0003), vec![0x2_0003, 0x0003]);
        assert_eq!(
            t.candidates(RESET_BELOW as u16),
            vec![0x2_0000 | RESET_BELOW]
        );
        // In the upper half 0 the same-half value is that one already.
        assert_eq!(FcntTracker::resume(0x4000).candidates(3), vec![3]);
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
        assert_eq!(t.candidates(40), vec![0x2_0028, 40]);
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
}
