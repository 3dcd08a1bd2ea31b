//! Telling apart the inputs a source receives in one millisecond of the clock, where their
//! record ids hash their receive time in ms.

use std::time::SystemTime;

/// The clock's millisecond of a source's last frame, and that frame's index in it.
#[derive(Clone, Copy)]
pub struct SameMs {
    ms: u64,
    index: u32,
}

/// The index of a frame received at `now` among the source's frames of that millisecond of
/// the clock: 0 for the first, then 1, 2... until the millisecond changes, forwards or back
/// (a clock stepped back). Frames that arrive in one read (a USB adapter's latency timer
/// batches bytes, a USB device is held to no baud rate; an MQTT broker's backlog after a
/// reconnect) are parsed within one millisecond, and the record id of such an uplink hashes
/// its time in ms (without an FCnt, or with one a network server or a serial envelope gives,
/// as a device may restart it: [`crate::record::stable_id`]): where that is the receive time,
/// equal readings would share an id and all but one be dropped as copies, though they are
/// not (a serial line never delivers a frame twice; a broker's redelivery comes on a later
/// connection, so in a later millisecond). The index tells them apart, and the times stay
/// the clock's own.
pub fn same_ms_index(now: SystemTime, last: &mut Option<SameMs>) -> u32 {
    let ms = crate::record::ms_since_epoch(now);
    let index = match *last {
        Some(last) if last.ms == ms => last.index.saturating_add(1),
        _ => 0,
    };
    *last = Some(SameMs { ms, index });
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The index counts the frames of one millisecond from 0, and starts over at 0 when
    /// the millisecond changes, also to an earlier one (a clock stepped back).
    #[test]
    fn the_index_counts_the_frames_of_one_millisecond() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_400);
        let us = Duration::from_micros;
        let mut last = None;
        let indexes: Vec<u32> = [
            t,
            t,
            t + us(500),
            t + us(600),
            t + us(40_000),
            t + us(40_100),
            t - us(3_600_000_000),
            t - us(3_600_000_000),
            t + us(599),
        ]
        .into_iter()
        .map(|now| same_ms_index(now, &mut last))
        .collect();
        assert_eq!(indexes, [0, 1, 2, 0, 0, 1, 0, 1, 0]);
    }
}
