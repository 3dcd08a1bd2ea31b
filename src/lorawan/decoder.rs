//! Sessions by DevAddr: frame in, verified and decrypted [`Uplink`] out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::crypto::{decrypt_payload, payload_key, verify_mic};
use super::fcnt::{Counter, FcntError, FcntTracker, Heard, OwnTime, RESCUE_EVERY};
use super::frame::{parse, DataFrame, Direction, Frame};
use super::{DevAddr, LorawanError, SessionKeys};
use crate::ids::DevEui;
use crate::uplink::{FrameTime, Radio, Uplink};

/// One device's session: where its uplinks go and how far its counter got.
#[derive(Debug, Clone)]
pub struct Session {
    pub dev_addr: DevAddr,
    /// The device entry the frames map to.
    pub dev_eui: DevEui,
    keys: SessionKeys,
    pub fcnt: FcntTracker,
    /// When a frame that failed the MIC was last looked for further
    /// ([`FcntTracker::rescue_candidates`]).
    rescued: Option<Instant>,
}

impl Session {
    pub fn new(dev_addr: DevAddr, dev_eui: DevEui, keys: SessionKeys) -> Session {
        Session {
            dev_addr,
            dev_eui,
            keys,
            fcnt: FcntTracker::new(),
            rescued: None,
        }
    }

    /// The counter `frame` verifies under among [`FcntTracker::rescue_candidates`], for a
    /// frame that failed the MIC under every candidate of every session of its DevAddr: looked
    /// for at most once each [`RESCUE_EVERY`].
    fn rescue(&mut self, frame: &DataFrame<'_>, now: Instant) -> Option<u32> {
        let recently = |at: Instant| now.saturating_duration_since(at) < RESCUE_EVERY;
        if self.rescued.is_some_and(recently) {
            return None;
        }
        let more = self.fcnt.rescue_candidates(frame.fcnt16);
        if more.is_empty() {
            return None;
        }
        self.rescued = Some(now);
        more.into_iter()
            .find(|&c| verify_mic(frame, &self.keys.nwk_s_key, c))
    }

    /// Its device's frame counter is at least `fcnt` (`fcnt_from`): the counter is looked
    /// for from there, and a frame below it is refused as old. A counter kept since counts
    /// if it is ahead.
    pub fn fcnt_from(mut self, fcnt: u32) -> Session {
        if let Some(before) = fcnt.checked_sub(1) {
            self.fcnt.accept(before, None);
        }
        self
    }

    /// Its device restarts its frame counter (`resets_fcnt`): see [`FcntTracker::resetting`].
    pub fn resetting_fcnt(self) -> Session {
        Session {
            fcnt: FcntTracker::resetting(),
            ..self
        }
    }
}

/// The LoRaWAN decode stage: sessions keyed by DevAddr (several devices may share one DevAddr;
/// the MIC tells them apart).
#[derive(Debug, Default)]
pub struct Decoder {
    sessions: HashMap<DevAddr, Vec<Session>>,
    /// What the frames decoded since [`Decoder::take_counters`] was last called did to the
    /// counters.
    counters: Counters,
    /// How far the decoder's clock is ahead of the monotonic clock: a test lets the copy
    /// window pass without waiting ([`Decoder::pass`]).
    ahead: Duration,
}

/// A frame accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub dev_addr: DevAddr,
    pub dev_eui: DevEui,
    /// The frame's FCnt32: a copy of it heard later waits for its records.
    pub fcnt: u32,
    /// Where its session's counter stands after it, kept across restarts once its records,
    /// and every earlier frame's, are durable: at the frame's own counter and MIC (which
    /// tells another frame at that counter from a copy), or, for a frame late
    /// ([`LATE_WINDOW`](super::fcnt::LATE_WINDOW)), at the last accepted one's, as it was,
    /// with the late frame taken in its window.
    pub counter: Counter,
    /// When it was accepted, given for a session of a device that restarts its counter
    /// (`resets_fcnt`) only, whose frames are kept with the counter to tell a copy of one
    /// after a restart (see [`Decoder::resume_copies`]): any other session's kept counter
    /// refuses such a copy all the same, as at or below it (one below
    /// [`RESET_BELOW`](super::fcnt::RESET_BELOW) after a counter at or above it as a counter
    /// restart, `fcnt_reset`). Such a session's counter is always the frame's own.
    pub at: Option<Instant>,
}

/// A frame accepted at its own counter, with every counter below it taken.
#[cfg(test)]
pub fn accepted(
    (dev_addr, dev_eui): (DevAddr, DevEui),
    fcnt: u32,
    mic: [u8; 4],
    at: Option<Instant>,
) -> Accepted {
    let behind = u64::MAX;
    let counter = Counter { fcnt, mic, behind };
    Accepted {
        dev_addr,
        dev_eui,
        fcnt,
        counter,
        at,
    }
}

/// What decoding a frame did to the frame counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Every frame accepted.
    pub advanced: Vec<Accepted>,
    /// (DevAddr, FCnt32) of a frame refused as a replay: a copy of one accepted before (a
    /// source's redelivery, a second gateway), an attack, or a device that restarted its
    /// counter.
    pub replayed: Option<(DevAddr, u32)>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn add(&mut self, session: Session) {
        self.sessions
            .entry(session.dev_addr)
            .or_default()
            .push(session);
    }

    /// Continue the session (DevAddr, DevEUI) from a counter accepted before a restart, its
    /// frame's MIC (`None`: kept without it, by an older release) and which counters below
    /// it were taken ([`Counter::behind`]; `None`: kept without them, every one), so a frame
    /// captured earlier is a replay, a frame late is still taken, and another frame at that
    /// counter is not a copy. Returns false
    /// when no such session is configured any more, or its keys are not those the counter
    /// was kept with (`keys`, [`SessionKeys::print`]; `None`: kept by an older release).
    pub fn resume(
        &mut self,
        dev_addr: DevAddr,
        dev_eui: DevEui,
        last: u32,
        mic: Option<[u8; 4]>,
        behind: Option<u64>,
        keys: Option<[u8; 4]>,
    ) -> bool {
        let session = self
            .sessions
            .get_mut(&dev_addr)
            .and_then(|ss| ss.iter_mut().find(|s| s.dev_eui == dev_eui));
        match session {
            Some(s) if keys.is_some_and(|k| k != s.keys.print()) => {
                log::warn!(
                    "LoRaWAN session of {dev_eui} ({dev_addr}): the frame counter kept ({last}) \
                     was for other session keys; the new keys' counter starts afresh"
                );
                false
            }
            Some(s) => {
                s.fcnt.resume_kept(last, mic, behind);
                true
            }
            None => false,
        }
    }

    /// Tell a copy of frames the session (DevAddr, DevEUI) accepted before a restart: `frames`
    /// (FCnt32, MIC, how long ago), oldest first, kept by a run with keys whose
    /// [`SessionKeys::print`] is `keys`; one is a copy's while less than
    /// [`COPY_WINDOW`](super::fcnt::COPY_WINDOW) old.
    /// Tells none when no such session is configured any more, or its keys are not those (the
    /// frames of a session's old keys are not its new keys' frames). A session whose device
    /// no longer restarts its counter (`resets_fcnt` turned off since) tells them all the
    /// same, as it tells a copy of its frames within a run: its counter alone would take a
    /// copy of one below [`RESET_BELOW`](super::fcnt::RESET_BELOW) after one at or above it
    /// for a counter restart (`fcnt_reset`); it keeps no frames of its own.
    pub fn resume_copies(
        &mut self,
        dev_addr: DevAddr,
        dev_eui: DevEui,
        keys: [u8; 4],
        frames: &[(u32, [u8; 4], Duration)],
    ) {
        let now = self.now();
        let session = self
            .sessions
            .get_mut(&dev_addr)
            .and_then(|ss| ss.iter_mut().find(|s| s.dev_eui == dev_eui))
            .filter(|s| s.keys.print() == keys);
        let Some(s) = session else {
            return;
        };
        for &(fcnt, mic, age) in frames {
            if let Some(at) = now.checked_sub(age) {
                s.fcnt.remember(fcnt, mic, at);
            }
        }
    }

    /// The decoder's clock: when a frame is accepted, and how old a copy is.
    fn now(&self) -> Instant {
        Instant::now() + self.ahead
    }

    /// Let `time` pass on the decoder's clock.
    #[cfg(test)]
    pub fn pass(&mut self, time: Duration) {
        self.ahead += time;
    }

    /// The DevAddr of device `dev_eui`'s session, if one is configured.
    pub fn dev_addr_of(&self, dev_eui: DevEui) -> Option<DevAddr> {
        let mut sessions = self.sessions.values().flatten();
        sessions.find(|s| s.dev_eui == dev_eui).map(|s| s.dev_addr)
    }

    /// Every session's (DevAddr, DevEUI) with its keys' [`SessionKeys::print`].
    pub fn key_prints(&self) -> HashMap<(DevAddr, DevEui), [u8; 4]> {
        let sessions = self.sessions.values().flatten();
        sessions
            .map(|s| ((s.dev_addr, s.dev_eui), s.keys.print()))
            .collect()
    }

    /// What the frames decoded since the last call did to the counters.
    pub fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    /// Sessions using this DevAddr.
    pub fn sessions(&self, dev_addr: DevAddr) -> &[Session] {
        self.sessions.get(&dev_addr).map_or(&[], Vec::as_slice)
    }

    /// Number of sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.values().map(Vec::len).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parse an uplink PHYPayload, find its session by DevAddr and MIC, reconstruct the 32-bit
    /// FCnt (see [`super::fcnt`]), reject replays and copies (accept restarts of a device that
    /// restarts its counter), and decrypt the FRMPayload.
    ///
    /// The session's counter advances only when everything checked out. FPort 0 frames (MAC
    /// commands only) come back with `fport: Some(0)` and the decrypted commands as payload;
    /// frames without FRMPayload with `fport: None` and an empty payload.
    pub fn decode_uplink(
        &mut self,
        phy: &[u8],
        time: impl Into<FrameTime>,
        radio: Radio,
    ) -> Result<Uplink, LorawanError> {
        let time = time.into();
        let frame = match parse(phy)? {
            Frame::Data(d) if d.direction() == Direction::Up => d,
            other => return Err(LorawanError::NotUplink(other.mtype())),
        };
        let dev_addr = frame.dev_addr;
        let now = self.now();
        let sessions = self
            .sessions
            .get_mut(&dev_addr)
            .ok_or(LorawanError::UnknownDevAddr(dev_addr))?;
        let found = sessions.iter().enumerate().find_map(|(i, s)| {
            let c = s
                .fcnt
                .candidates(frame.fcnt16)
                .into_iter()
                .find(|c| verify_mic(&frame, &s.keys.nwk_s_key, *c))?;
            Some((i, c, false))
        });
        let rescued = || {
            let mut sessions = sessions.iter_mut().enumerate();
            sessions.find_map(|(i, s)| Some((i, s.rescue(&frame, now)?, true)))
        };
        let (i, fcnt32, rescued) = found.or_else(rescued).ok_or(LorawanError::MicMismatch {
            dev_addr,
            fcnt16: frame.fcnt16,
        })?;
        let session = &mut sessions[i];
        // Only a session that restarts its counter compares frames' own times.
        let heard = Heard {
            at: now,
            own: (time.own && session.fcnt.resets()).then(|| OwnTime {
                time: time.time,
                gateway: gateway_hash(radio.gateway_id.as_deref()),
            }),
        };
        let checked = if rescued {
            session.fcnt.check_rescued(fcnt32, frame.mic, heard)
        } else {
            session.fcnt.check(fcnt32, frame.mic, heard)
        };
        if let Err(e) = checked {
            self.counters.replayed = Some((dev_addr, fcnt32));
            return Err(match e {
                FcntError::Replay { fcnt, last } => LorawanError::Replay {
                    dev_addr,
                    fcnt,
                    last,
                },
                FcntError::Reset { fcnt, last } => LorawanError::FcntReset {
                    dev_addr,
                    dev_eui: session.dev_eui,
                    fcnt,
                    last,
                },
            });
        }
        let counter = session.fcnt.accept_at(fcnt32, frame.mic, heard);
        self.counters.advanced.push(Accepted {
            dev_addr,
            dev_eui: session.dev_eui,
            fcnt: fcnt32,
            counter,
            at: session.fcnt.resets().then_some(now),
        });
        let key = payload_key(&frame, &session.keys.nwk_s_key, &session.keys.app_s_key);
        Ok(Uplink {
            dev_eui: session.dev_eui,
            dev_addr: Some(dev_addr),
            device_name: None,
            fport: frame.fport,
            fcnt: Some(fcnt32),
            payload: decrypt_payload(&frame, key, fcnt32),
            time: time.time,
            radio,
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: Some(crate::uplink::SessionPrint {
                keys: session.keys.print(),
                resets_fcnt: session.fcnt.resets(),
            }),
        })
    }
}

/// A gateway's id as [`OwnTime`] keeps it: a frame's own times are compared only with those
/// its own gateway reported.
fn gateway_hash(id: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}
