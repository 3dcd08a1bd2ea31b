//! What JavaScript calls may cost the forwarder, decided where decoding runs: a device whose
//! frames keep making its codec time out, run out of memory, fail in the engine or take the
//! worker down (a call that caught running out of memory and returned included) is
//! quarantined for that codec while its other devices go on decoding; a codec that does it
//! for many devices is quarantined as a whole; and a round of the forwarder ends once its
//! calls took its budget of wall time, leaving its other frames for the next round
//! (docs/codecs.md, "Strikes, quarantine and the round budget").
//!
//! Kept by codec name in the decode stage, not in the worker, so that neither a new worker nor
//! a reload that finds a codec's file unchanged gives a poison device a fresh start.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::JsError;
use crate::ids::DevEui;

/// Calls of one device that strike (see [`JsError::strikes`]) before the device is
/// quarantined for its codec. Only a success [`WINDOW`] or more after its last strike forgets
/// its strikes: a device whose frames hang and decode by turns strikes out too, while a rare
/// strike is forgotten by the good frames that follow it.
pub const STRIKES: u32 = 3;
/// Strikes of one codec within [`WINDOW`] that quarantine the codec, counting at most
/// [`STRIKES`] of any one device: one device alone, however short its quarantines, never
/// quarantines its codec.
pub const CODEC_STRIKES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
const _: () = assert!((STRIKES as usize) < CODEC_STRIKES);
/// Devices with strikes a codec keeps before it forgets those that are neither quarantined
/// nor struck within the quarantine time or the WINDOW, the longer (DevEUIs come from the
/// radio: their number is not ours to bound).
const KEPT: usize = 4096;

pub struct Guard {
    quarantine: Duration,
    budget: Duration,
    /// Wall time the calls of this round took; `None` before the first round (`hubgate
    /// decode`, tests), which has no budget.
    spent: Option<Duration>,
    codecs: HashMap<String, CodecStrikes>,
}

#[derive(Default)]
struct CodecStrikes {
    /// Its strikes counted within the latest [`WINDOW`], oldest first, with their device.
    recent: VecDeque<(Instant, DevEui)>,
    until: Option<Instant>,
    /// Only devices with strikes not forgotten: a success [`WINDOW`] after the last strike
    /// removes its device.
    devices: HashMap<DevEui, DeviceStrikes>,
}

struct DeviceStrikes {
    /// Since its last quarantine or a success forgot them.
    strikes: u32,
    last: Instant,
    until: Option<Instant>,
}

/// A quarantine a call's outcome started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Of the device, for this codec.
    Device,
    /// Of the codec, for every device.
    Codec,
}

impl Guard {
    /// Quarantines last `quarantine`; a round's calls may take `budget` together.
    pub fn new(quarantine: Duration, budget: Duration) -> Guard {
        Guard {
            quarantine,
            budget,
            spent: None,
            codecs: HashMap::new(),
        }
    }

    /// A new round of the forwarder: its budget is whole again.
    pub fn start_round(&mut self) {
        self.spent = Some(Duration::ZERO);
    }

    /// Whether this round's calls have taken its budget: the forwarder ends the round, and
    /// the frames it has not taken yet wait for the next one.
    pub fn budget_spent(&self) -> bool {
        self.spent.is_some_and(|spent| spent >= self.budget)
    }

    /// Whether codec `name` may be called for `device` at `now`; if not, why not. Past the
    /// round's budget nothing is called: only a stop takes frames after that (the forwarder
    /// ends a round whose budget is spent), and its frames go to the buffer packed.
    pub fn admit(&mut self, name: &str, device: DevEui, now: Instant) -> Result<(), JsError> {
        if self.budget_spent() {
            return Err(JsError::OverBudget(self.budget.as_millis() as u64));
        }
        let Some(codec) = self.codecs.get_mut(name) else {
            return Ok(());
        };
        if let Some(left) = left(&mut codec.until, now) {
            return Err(JsError::Quarantined(left));
        }
        if let Some(d) = codec.devices.get_mut(&device) {
            if let Some(left) = left(&mut d.until, now) {
                return Err(JsError::DeviceQuarantined(left));
            }
        }
        Ok(())
    }

    /// Take the outcome of a call of codec `name` for `device` that took `took` and ended at
    /// `now`; the quarantine it started, if it did.
    pub fn settle<T>(
        &mut self,
        name: &str,
        device: DevEui,
        outcome: &Result<T, JsError>,
        took: Duration,
        now: Instant,
    ) -> Option<Started> {
        if let Some(spent) = &mut self.spent {
            *spent += took;
        }
        match outcome {
            Ok(_) => {
                if let Some(codec) = self.codecs.get_mut(name) {
                    let forgets = |d: &DeviceStrikes| now.duration_since(d.last) >= WINDOW;
                    if codec.devices.get(&device).is_some_and(forgets) {
                        codec.devices.remove(&device);
                    }
                }
                return None;
            }
            // Neither a strike nor a success: a poison device whose frames throw now and
            // then still strikes out.
            Err(e) if !e.strikes() => return None,
            Err(_) => {}
        }
        let quarantine = self.quarantine;
        let codec = self.codecs.entry(name.to_string()).or_default();
        if codec.devices.len() >= KEPT {
            codec.devices.retain(|_, d| {
                // Strikes last until a success a WINDOW after the last one.
                d.until.is_some_and(|u| u > now)
                    || now.duration_since(d.last) < quarantine.max(WINDOW)
            });
        }
        let d = codec.devices.entry(device).or_insert(DeviceStrikes {
            strikes: 0,
            last: now,
            until: None,
        });
        d.strikes += 1;
        d.last = now;
        let mut started = None;
        if d.strikes >= STRIKES {
            d.strikes = 0;
            d.until = Some(now + quarantine);
            started = Some(Started::Device);
        }
        while codec
            .recent
            .front()
            .is_some_and(|&(t, _)| now.duration_since(t) >= WINDOW)
        {
            codec.recent.pop_front();
        }
        let counted = codec.recent.iter().filter(|&&(_, d)| d == device).count();
        if counted >= STRIKES as usize {
            return started;
        }
        codec.recent.push_back((now, device));
        if codec.recent.len() >= CODEC_STRIKES {
            codec.recent.clear();
            codec.until = Some(now + quarantine);
            started = Some(Started::Codec);
        }
        started
    }

    /// Forget the strikes and quarantines of codec `name`: its file changed.
    pub fn forget(&mut self, name: &str) {
        self.codecs.remove(name);
    }

    /// How long quarantines last.
    pub fn quarantine(&self) -> Duration {
        self.quarantine
    }
}

/// Whole seconds (at least 1) left of the quarantine `until` at `now`; an ended one is cleared.
fn left(until: &mut Option<Instant>, now: Instant) -> Option<u64> {
    let left = until.as_ref()?.saturating_duration_since(now);
    if left.is_zero() {
        *until = None;
        return None;
    }
    Some(left.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_secs(600);
    const CODEC: &str = "bad";

    fn dev(n: u8) -> DevEui {
        DevEui([0, 0, 0, 0, 0, 0, 0, n])
    }

    fn hung() -> Result<(), JsError> {
        Err(JsError::Hung(500))
    }

    /// A poison device between good ones on the same codec is quarantined after STRIKES of
    /// its calls, the good ones are not; a success of its own WINDOW after its last strike
    /// starts the count again, an error that is no strike does not.
    #[test]
    fn strikes_count_per_device() {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        let t = Instant::now();
        let ms = Duration::from_millis(1);
        for n in 0..STRIKES {
            assert_eq!(g.admit(CODEC, dev(1), t), Ok(()));
            let started = g.settle(CODEC, dev(1), &hung(), ms, t);
            assert_eq!(started, (n + 1 == STRIKES).then_some(Started::Device));
            assert_eq!(g.admit(CODEC, dev(2), t), Ok(()));
            assert_eq!(g.settle(CODEC, dev(2), &Ok(()), ms, t), None);
        }
        assert_eq!(
            g.admit(CODEC, dev(1), t),
            Err(JsError::DeviceQuarantined(600))
        );
        assert_eq!(g.admit(CODEC, dev(2), t), Ok(()));
        assert_eq!(g.admit("other", dev(1), t), Ok(()));
        // Two strikes, a success WINDOW later, two strikes: the success forgot the first two.
        let mut at = t;
        for (outcome, after) in [
            (hung(), Duration::ZERO),
            (hung(), Duration::ZERO),
            (Ok(()), WINDOW),
            (hung(), Duration::ZERO),
            (hung(), Duration::ZERO),
        ] {
            at += after;
            assert_eq!(g.settle(CODEC, dev(3), &outcome, ms, at), None);
        }
        assert_eq!(g.admit(CODEC, dev(3), at), Ok(()));
        // A codec error that does not strike forgets nothing: only a success does.
        let threw: Result<(), _> = Err(JsError::Threw("x".into()));
        at += WINDOW;
        assert_eq!(g.settle(CODEC, dev(3), &threw, ms, at), None);
        assert_eq!(
            g.settle(CODEC, dev(3), &hung(), ms, at),
            Some(Started::Device)
        );
        assert_eq!(
            g.admit(CODEC, dev(3), at),
            Err(JsError::DeviceQuarantined(600))
        );
    }

    /// A device whose frames hang and decode by turns is quarantined at its STRIKES-th hang,
    /// its successes (each a little less than WINDOW after a hang) notwithstanding; its codec
    /// is not.
    #[test]
    fn a_device_that_hangs_between_successes_is_quarantined() {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        let t = Instant::now();
        let ms = Duration::from_millis(1);
        let mut at = t;
        for n in 0..STRIKES {
            if n > 0 {
                at += WINDOW - ms;
                assert_eq!(g.admit(CODEC, dev(1), at), Ok(()));
                assert_eq!(g.settle(CODEC, dev(1), &Ok(()), ms, at), None);
            }
            assert_eq!(g.admit(CODEC, dev(1), at), Ok(()));
            let started = g.settle(CODEC, dev(1), &hung(), ms, at);
            assert_eq!(started, (n + 1 == STRIKES).then_some(Started::Device));
        }
        assert_eq!(
            g.admit(CODEC, dev(1), at),
            Err(JsError::DeviceQuarantined(600))
        );
        assert_eq!(g.admit(CODEC, dev(2), at), Ok(()));
    }

    /// One device alone never quarantines its codec, however short its quarantines: called
    /// every 100 ms when not quarantined, for three windows, it hangs and decodes by turns.
    #[test]
    fn one_device_alone_never_quarantines_its_codec() {
        let ms = Duration::from_millis(1);
        for quarantine in [Duration::from_millis(100), Duration::from_secs(1)] {
            let mut g = Guard::new(quarantine, Duration::from_secs(5));
            let t = Instant::now();
            let mut strikes = 0;
            let mut hangs = true;
            let mut at = t;
            while at < t + 3 * WINDOW {
                at += Duration::from_millis(100);
                if g.admit(CODEC, dev(1), at).is_err() {
                    continue;
                }
                let outcome = if hangs { hung() } else { Ok(()) };
                strikes += usize::from(hangs);
                hangs = !hangs;
                let started = g.settle(CODEC, dev(1), &outcome, ms, at);
                assert_ne!(started, Some(Started::Codec), "{quarantine:?} {strikes}");
            }
            assert!(strikes > 2 * CODEC_STRIKES, "{quarantine:?} {strikes}");
            assert_eq!(g.admit(CODEC, dev(2), at), Ok(()));
        }
    }

    /// Devices that each hang and decode by turns quarantine their codec together: each
    /// device's strikes count up to its quarantine.
    #[test]
    fn devices_taking_turns_quarantine_their_codec_together() {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        let t = Instant::now();
        let mut started = Vec::new();
        for n in 0..CODEC_STRIKES.div_ceil(STRIKES as usize) as u8 {
            for _ in 0..STRIKES {
                started.push(g.settle(CODEC, dev(n), &hung(), Duration::ZERO, t));
                g.settle(CODEC, dev(n), &Ok(()), Duration::ZERO, t);
            }
        }
        assert_eq!(started[CODEC_STRIKES - 1], Some(Started::Codec));
        assert!(!started[..CODEC_STRIKES - 1].contains(&Some(Started::Codec)));
        assert_eq!(g.admit(CODEC, dev(200), t), Err(JsError::Quarantined(600)));
    }

    /// A rare strike is forgotten by the device's first success WINDOW after it: a device
    /// that hangs once in a while, good frames every 10 s between, is never quarantined and
    /// not kept.
    #[test]
    fn rare_strikes_are_forgotten() {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        let ms = Duration::from_millis(1);
        let step = Duration::from_secs(10);
        let mut at = Instant::now();
        for _ in 0..3 * STRIKES {
            assert_eq!(g.admit(CODEC, dev(1), at), Ok(()));
            assert_eq!(g.settle(CODEC, dev(1), &hung(), ms, at), None);
            for _ in 0..WINDOW.as_secs() / step.as_secs() {
                at += step;
                assert_eq!(g.admit(CODEC, dev(1), at), Ok(()));
                assert_eq!(g.settle(CODEC, dev(1), &Ok(()), ms, at), None);
            }
        }
        assert!(!g.codecs[CODEC].devices.contains_key(&dev(1)));
    }

    /// A failure of the engine ends its worker as a timeout does: it strikes too. One that
    /// is the codec's (it threw, returned junk, reported errors) does not.
    #[test]
    fn engine_failures_strike_codec_errors_do_not() {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        let t = Instant::now();
        for n in 0..STRIKES {
            let engine: Result<(), _> = Err(JsError::Engine("x".into()));
            let started = g.settle(CODEC, dev(1), &engine, Duration::ZERO, t);
            assert_eq!(started, (n + 1 == STRIKES).then_some(Started::Device));
        }
        for e in [
            JsError::Threw("x".into()),
            JsError::Junk("x".into()),
            JsError::Reported("x".into()),
        ] {
            for _ in 0..STRIKES {
                let outcome: Result<(), _> = Err(e.clone());
                assert_eq!(g.settle(CODEC, dev(2), &outcome, Duration::ZERO, t), None);
            }
        }
        assert_eq!(g.admit(CODEC, dev(2), t), Ok(()));
    }

    /// A guard whose codec has quarantined device 1 at `t`: STRIKES hung calls.
    fn device_1_quarantined(t: Instant) -> Guard {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        for _ in 0..STRIKES {
            g.settle(CODEC, dev(1), &hung(), Duration::ZERO, t);
        }
        g
    }

    /// A quarantine ends after its time; the device then gets STRIKES calls again.
    #[test]
    fn a_quarantine_ends() {
        let t = Instant::now();
        let mut g = device_1_quarantined(t);
        let almost = t + Q - Duration::from_millis(1);
        assert_eq!(
            g.admit(CODEC, dev(1), almost),
            Err(JsError::DeviceQuarantined(1))
        );
        assert_eq!(g.admit(CODEC, dev(1), t + Q), Ok(()));
        let later = t + Q;
        assert_eq!(
            g.settle(CODEC, dev(1), &hung(), Duration::ZERO, later),
            None
        );
        assert_eq!(g.admit(CODEC, dev(1), later), Ok(()));
    }

    /// CODEC_STRIKES strikes of different devices within WINDOW quarantine the codec for
    /// every device, successes in between or not; spread wider, they do not.
    #[test]
    fn many_devices_striking_quarantine_the_codec() {
        let mut g = Guard::new(Q, Duration::from_secs(5));
        let t = Instant::now();
        let step = WINDOW / (CODEC_STRIKES as u32 - 1) + Duration::from_millis(1);
        // Spread over more than the window: never CODEC_STRIKES within it.
        for n in 0..2 * CODEC_STRIKES {
            let at = t + step * n as u32;
            assert_eq!(
                g.settle(CODEC, dev(n as u8), &hung(), Duration::ZERO, at),
                None
            );
            g.settle(CODEC, dev(200), &Ok(()), Duration::ZERO, at);
        }
        let t = t + step * 2 * CODEC_STRIKES as u32 + WINDOW;
        for n in 0..CODEC_STRIKES {
            let started = g.settle(CODEC, dev(100 + n as u8), &hung(), Duration::ZERO, t);
            assert_eq!(
                started,
                (n + 1 == CODEC_STRIKES).then_some(Started::Codec),
                "{n}"
            );
            g.settle(CODEC, dev(200), &Ok(()), Duration::ZERO, t);
        }
        assert_eq!(g.admit(CODEC, dev(200), t), Err(JsError::Quarantined(600)));
        assert_eq!(g.admit("other", dev(200), t), Ok(()));
        assert_eq!(g.admit(CODEC, dev(200), t + Q), Ok(()));
    }

    /// Once a round's calls took its budget, the rest of the round is not called; a new round
    /// has the whole budget; before any round there is none.
    #[test]
    fn a_round_spends_at_most_its_budget() {
        let budget = Duration::from_secs(5);
        let mut g = Guard::new(Q, budget);
        let t = Instant::now();
        let slow = Duration::from_millis(2_600);
        for _ in 0..3 {
            g.settle(CODEC, dev(1), &Ok(()), slow, t);
        }
        assert_eq!(g.admit(CODEC, dev(1), t), Ok(()));
        g.start_round();
        g.settle(CODEC, dev(1), &Ok(()), slow, t);
        assert_eq!(g.admit(CODEC, dev(2), t), Ok(()));
        g.settle(CODEC, dev(2), &Ok(()), slow, t);
        assert_eq!(g.admit("other", dev(3), t), Err(JsError::OverBudget(5_000)));
        g.start_round();
        assert_eq!(g.admit("other", dev(3), t), Ok(()));
    }

    /// Forgetting a codec (its file changed) ends its quarantines.
    #[test]
    fn a_forgotten_codec_starts_afresh() {
        let t = Instant::now();
        let mut g = device_1_quarantined(t);
        assert!(g.admit(CODEC, dev(1), t).is_err());
        g.forget(CODEC);
        assert_eq!(g.admit(CODEC, dev(1), t), Ok(()));
    }

    /// The devices a codec keeps stay bounded: ones long past their strikes (the quarantine,
    /// and at least the WINDOW their strikes count for) are forgotten, and only those.
    #[test]
    fn old_strikes_are_forgotten() {
        for quarantine in [Q, Duration::from_secs(10)] {
            let mut g = Guard::new(quarantine, Duration::from_secs(5));
            let t = Instant::now();
            for n in 0..KEPT as u32 {
                let eui = DevEui([0, 0, 0, 0, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
                let crashed: Result<(), _> = Err(JsError::Crashed("x".into()));
                g.settle(CODEC, eui, &crashed, Duration::ZERO, t);
                g.codecs.get_mut(CODEC).unwrap().recent.clear();
            }
            let kept = quarantine.max(WINDOW);
            g.settle(CODEC, dev(1), &hung(), Duration::ZERO, t + kept / 2);
            assert_eq!(g.codecs[CODEC].devices.len(), KEPT, "{quarantine:?}");
            g.settle(CODEC, dev(2), &hung(), Duration::ZERO, t + kept);
            assert_eq!(g.codecs[CODEC].devices.len(), 2, "{quarantine:?}");
        }
    }
}
