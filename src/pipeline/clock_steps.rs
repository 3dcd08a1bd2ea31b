//! Forward steps of the wall clock, and which records were taken before each: their
//! creation times are from the clock before the step, so their age must not count it.
//!
//! A Pi without a real-time clock boots at the time fake-hwclock saved (days or months
//! old, yet a time the clock can show, so trusted when nothing says whether it is
//! synchronised), and NTP steps it forward later; a wrong NTP or GPS time can step a
//! synchronised clock too. Without this, a step of more than `max_age` would drop every
//! buffered reading as expired at the next drain, seconds after it was acknowledged.
//! A step counts for every record taken before it, earlier runs' too (their times may be
//! from the same wrong clock, before a restart): one whose time was right then expires
//! later than due, never sooner. Backward steps are not kept: they only make records expire
//! later.
//!
//! Kept in the buffer's state, so a restart after the step still knows it. So is the last
//! trusted reading of the clock ([`Reading`]): the next run compares its first with it, for
//! a step while hubgate was not running.

/// Steps kept at most; past it the two oldest merge (see [`ClockSteps::stepped`]).
const MAX_STEPS: usize = 64;
/// Bytes of one step in the buffer's state.
const STEP_BYTES: usize = 16;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClockSteps(Vec<Step>);

/// The clock stepped forward by `ms` after the records before `to` (sequence numbers) were
/// taken.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    to: u64,
    ms: u64,
}

impl ClockSteps {
    /// Steps as [`ClockSteps::encode`] wrote them; a value of the wrong length (not written
    /// by this code) is none.
    pub fn decode(bytes: &[u8]) -> ClockSteps {
        if !bytes.len().is_multiple_of(STEP_BYTES) {
            return ClockSteps::default();
        }
        let word = |c: &[u8], i: usize| {
            u64::from_be_bytes(c[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        ClockSteps(
            bytes
                .chunks(STEP_BYTES)
                .map(|c| Step {
                    to: word(c, 0),
                    ms: word(c, 1),
                })
                .collect(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0
            .iter()
            .flat_map(|s| [s.to, s.ms])
            .flat_map(u64::to_be_bytes)
            .collect()
    }

    /// The clock stepped forward by `ms` after the records before `to` were taken. Past
    /// [`MAX_STEPS`] the two oldest become one over the records before the later of them,
    /// with both their sizes: records taken between them then count a step they did not
    /// see, which makes them expire later, never sooner.
    pub fn stepped(&mut self, to: u64, ms: u64) {
        if to == 0 || ms == 0 {
            return;
        }
        self.0.push(Step { to, ms });
        if self.0.len() > MAX_STEPS {
            let (a, b) = (self.0[0], self.0[1]);
            self.0[1] = Step {
                to: a.to.max(b.to),
                ms: a.ms.saturating_add(b.ms),
            };
            self.0.remove(0);
        }
    }

    /// The sequence number after which no step counts: a run numbers its records from there
    /// on at least, or they would count steps taken before they were (records sent straight
    /// to the sink are never stored, so the buffer's highest number can be far below it).
    pub fn first_after(&self) -> u64 {
        self.0.iter().map(|s| s.to).max().unwrap_or(0)
    }

    /// Milliseconds the clock stepped forward after record `seq` was taken.
    pub fn after(&self, seq: u64) -> u64 {
        self.0
            .iter()
            .filter(|s| seq < s.to)
            .fold(0, |sum, s| sum.saturating_add(s.ms))
    }
}

/// Bytes of a [`Reading`] in the buffer's state.
const READING_BYTES: usize = 33;

/// The boot a reading of the wall clock was taken in: its id, and the wall time it started at
/// by that reading (wall time minus the time since boot, `CLOCK_BOOTTIME`), in ms: the same
/// at every reading of the boot, hubgate restarted or not, until the wall clock steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boot {
    pub id: u128,
    pub started_ms: i64,
}

/// A trusted reading of the wall clock, kept in the buffer's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The boot it was taken in, if it could be told.
    pub boot: Option<Boot>,
    /// The time the clock showed, ms since the epoch.
    pub wall_ms: u64,
    /// The clock was known to be synchronised (not only trusted for want of an answer).
    pub synchronized: bool,
}

impl Reading {
    /// A reading as [`Reading::encode`] wrote it; none if the value is of another length
    /// (not written by this code).
    pub fn decode(bytes: &[u8]) -> Option<Reading> {
        if bytes.len() != READING_BYTES {
            return None;
        }
        let id = u128::from_be_bytes(bytes[..16].try_into().expect("16 bytes"));
        let started_ms = i64::from_be_bytes(bytes[16..24].try_into().expect("8 bytes"));
        Some(Reading {
            // No boot id is 0: a random one is 0 once in 2^122 boots.
            boot: (id != 0).then_some(Boot { id, started_ms }),
            wall_ms: u64::from_be_bytes(bytes[24..32].try_into().expect("8 bytes")),
            synchronized: bytes[32] == 1,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let boot = self.boot.unwrap_or(Boot {
            id: 0,
            started_ms: 0,
        });
        let mut v = boot.id.to_be_bytes().to_vec();
        v.extend_from_slice(&boot.started_ms.to_be_bytes());
        v.extend_from_slice(&self.wall_ms.to_be_bytes());
        v.push(u8::from(self.synchronized));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_counts_for_the_records_taken_before_it() {
        let mut s = ClockSteps::default();
        s.stepped(20, 5_000);
        s.stepped(30, 1_000);
        assert_eq!(s.after(0), 6_000, "an earlier run's record");
        assert_eq!(s.after(19), 6_000);
        assert_eq!(s.after(20), 1_000, "taken after the first step");
        assert_eq!(s.after(30), 0, "taken after both");
        assert_eq!(ClockSteps::decode(&s.encode()), s);
    }

    #[test]
    fn steps_stay_bounded_and_merged_ones_only_make_records_younger() {
        let mut s = ClockSteps::default();
        for i in 0..1_000u64 {
            s.stepped(i + 1, 1);
        }
        assert_eq!(s.0.len(), MAX_STEPS);
        assert_eq!(s.encode().len(), MAX_STEPS * STEP_BYTES);
        // Record 0 saw every step; none is lost from its sum.
        assert_eq!(s.after(0), 1_000);
        // A later record counts at least the steps it saw.
        assert!(s.after(500) >= 500, "{}", s.after(500));
        assert_eq!(s.after(1_000), 0, "taken after the last");
    }

    #[test]
    fn a_reading_decodes_as_encoded_and_damage_as_none() {
        let boot = Boot {
            id: 0xc733f922_b7cf_4639_bef6_1d4da3bf976c,
            started_ms: -5,
        };
        for r in [
            Reading {
                boot: Some(boot),
                wall_ms: 1_782_600_000_000,
                synchronized: true,
            },
            Reading {
                boot: None,
                wall_ms: 7,
                synchronized: false,
            },
        ] {
            assert_eq!(r.encode().len(), READING_BYTES);
            assert_eq!(Reading::decode(&r.encode()), Some(r));
        }
        assert_eq!(Reading::decode(&[]), None);
        assert_eq!(Reading::decode(&[1; READING_BYTES + 1]), None);
    }

    #[test]
    fn nothing_and_damage_decode_as_no_steps() {
        assert_eq!(ClockSteps::decode(&[]), ClockSteps::default());
        assert_eq!(ClockSteps::decode(&[1, 2, 3]), ClockSteps::default());
    }
}
