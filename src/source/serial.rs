//! Serial source (tokio-serial): frames from a UART or USB serial device.
//!
//! The port is opened with the configured baud, parity, stop and data bits. Bytes go
//! through the configured [`crate::framing`] deframer (fixed buffers, no allocation per
//! frame); each frame is a CBOR envelope of a wired sensor (see [`cbor_envelope`]) or, with
//! `content = "phy"`, a LoRaWAN PHYPayload from a radio module.
//! Bad frames are counted by kind (`serial_crc`, `serial_overlong`, `serial_bad_hex`,
//! `serial_malformed`, `serial_other_line`, `serial_bad_cbor`) and logged once.
//!
//! When the device goes away (USB unplug, the far end of a pty closes) the source logs it
//! once and tries to reopen it, waiting 250 ms, then twice as long each time up to
//! `reopen_max` (see [`Backoff`]); it logs again when the device is back. A frame cut by the
//! outage is lost and counted (`serial_cut`).
//! Serial input cannot be acknowledged: frames are sent with [`Ack::None`].
//! Each frame's receive time is at least 1 ms after the previous one's ([`receive_time`]).

use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio_serial::SerialPortBuilderExt;

use super::{Context, Input};
use crate::config::{Parity, SerialContent, SerialSourceConfig, StopBits};
use crate::format::{cbor_envelope, ParseError, Parsed};
use crate::framing::Deframer;
use crate::uplink::{Radio, RadioFrame};

const REOPEN_MIN: Duration = Duration::from_millis(250);
/// A port open this long worked, even if silent: one that fails at its first read (EIO, end
/// of file) does so within milliseconds of the open.
const STAYED_UP: Duration = Duration::from_secs(1);
/// Bytes taken from the port per read; frames may span reads.
const READ_CHUNK: usize = 1024;

/// Why the read loop ended.
enum Ended {
    Stopping,
    /// The device went away: why, and whether it delivered any bytes first.
    Gone(String, bool),
}

/// The wait before each attempt to open the device: [`REOPEN_MIN`] (`reopen_max` if that is
/// shorter), then twice as long each time up to `reopen_max`.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: REOPEN_MIN.min(max),
            max,
        }
    }

    /// The wait before the next attempt; the one after is twice as long.
    fn wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (w * 2).min(self.max);
        w
    }

    /// The port was open for `up` and `delivered` bytes or not, then went: it starts over from
    /// the shortest wait only if it worked, so a port that opens and fails at once is retried
    /// with back-off rather than every 250 ms for good.
    fn ended(&mut self, delivered: bool, up: Duration) {
        if delivered || up >= STAYED_UP {
            self.next = REOPEN_MIN.min(self.max);
        }
    }
}

pub async fn run(cfg: SerialSourceConfig, ctx: Context) {
    let dev = cfg.device.display().to_string();
    let mut deframer = match Deframer::new(cfg.framing, cfg.max_frame, cfg.prefix.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            log::error!("serial {dev}: {e}");
            return;
        }
    };
    // Away until it opens: monitoring tells a missing radio from quiet air.
    ctx.metrics.serial_connected.set(&dev, 0);
    let mut stopping = ctx.stopping.clone();
    let mut backoff = Backoff::new(cfg.reopen_max);
    // Some(since) while the device is away: logged once when it goes and once when it is back.
    let mut outage: Option<Instant> = None;
    // Whether it has been opened yet: the first open confirms the settings, even after a
    // wait for a device missing at the start.
    let mut opened_before = false;
    // The last frame's receive time, kept across reopens (see `receive_time`).
    let mut last_time: Option<Stamp> = None;
    loop {
        if *stopping.borrow() {
            return;
        }
        // Opening a port can take a while (a USB adapter's driver, the board behind it).
        let opened = {
            let cfg = cfg.clone();
            crate::blocking::run(move || open(&cfg)).await
        };
        match opened {
            Ok(mut port) => {
                // A device that keeps going and coming back (a loose cable, a module in a boot
                // loop) is an outage that repeats: its lines are rate-limited, as MQTT's are.
                let away = outage.take();
                // Before the line saying so: whoever reads the line finds the gauge set.
                ctx.metrics.serial_connected.set(&dev, 1);
                if !std::mem::replace(&mut opened_before, true) {
                    log::info!(
                        "serial {dev}: opened at {} baud, framing {:?}{}",
                        cfg.baud,
                        cfg.framing,
                        away.map(|since| format!(" after {:.1?} waiting for it", since.elapsed()))
                            .unwrap_or_default()
                    );
                } else if let Some(since) = away {
                    ctx.metrics
                        .log_limited(log::Level::Info, "serial_back", || {
                            format!(
                                "serial {dev}: opened again after {:.1?} away",
                                since.elapsed()
                            )
                        });
                }
                let up = Instant::now();
                match read(
                    &mut port,
                    &mut deframer,
                    &dev,
                    cfg.content,
                    &ctx,
                    &mut stopping,
                    &mut last_time,
                )
                .await
                {
                    Ended::Stopping => return,
                    Ended::Gone(e, delivered) => {
                        ctx.metrics.serial_connected.set(&dev, 0);
                        backoff.ended(delivered, up.elapsed());
                        if deframer.reset() {
                            ctx.metrics.problem("serial_cut", || {
                                format!("serial {dev}: dropped a frame cut short by the outage")
                            });
                        }
                        ctx.metrics.log_limited(log::Level::Warn, "serial_gone", || {
                            format!(
                                "serial {dev}: device gone ({e}); reopening with backoff up to {:?}",
                                cfg.reopen_max
                            )
                        });
                        outage = Some(Instant::now());
                    }
                }
            }
            Err(e) => {
                if outage.is_none() {
                    log::warn!(
                        "serial {dev}: cannot open ({e}); retrying with backoff up to {:?}",
                        cfg.reopen_max
                    );
                    outage = Some(Instant::now());
                } else {
                    log::debug!("serial {dev}: still cannot open: {e}");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.wait()) => {}
            _ = stopping.changed() => {}
        }
    }
}

fn open(cfg: &SerialSourceConfig) -> tokio_serial::Result<tokio_serial::SerialStream> {
    let data_bits = match cfg.data_bits.0 {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    tokio_serial::new(cfg.device.to_string_lossy(), cfg.baud)
        .parity(match cfg.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .stop_bits(match cfg.stop_bits {
            StopBits::One => tokio_serial::StopBits::One,
            StopBits::Two => tokio_serial::StopBits::Two,
        })
        .data_bits(data_bits)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
}

/// Read and deframe until the device goes away or the agent stops.
async fn read(
    port: &mut tokio_serial::SerialStream,
    deframer: &mut Deframer,
    dev: &str,
    content: SerialContent,
    ctx: &Context,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    last_time: &mut Option<Stamp>,
) -> Ended {
    let mut buf = [0u8; READ_CHUNK];
    let mut delivered = false;
    loop {
        let n = tokio::select! {
            r = port.read(&mut buf) => match r {
                Ok(0) => return Ended::Gone("end of file".into(), delivered),
                Ok(n) => n,
                Err(e) => return Ended::Gone(e.to_string(), delivered),
            },
            _ = stopping.changed() => {
                if *stopping.borrow() {
                    return Ended::Stopping;
                }
                continue;
            }
        };
        delivered = true;
        let mut closed = false;
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, event) = deframer.push(input);
            input = &input[used..];
            let input = match event {
                None => continue,
                Some(Err(e)) => {
                    ctx.metrics
                        .problem(e.kind(), || format!("serial {dev}: dropped a frame: {e}"));
                    continue;
                }
                Some(Ok(frame)) => {
                    let stamp = receive_time(SystemTime::now(), *last_time);
                    *last_time = Some(stamp);
                    let now = stamp.time;
                    let parsed = super::or_dead_letter(&ctx.metrics, "serial", None, frame, || {
                        content_of(content, frame, now)
                    });
                    match parsed {
                        Ok(Ok(parsed)) => super::kept(&ctx.metrics, "serial", parsed),
                        Err(dead) => Input::DeadLetter(dead),
                        Ok(Err(e)) => {
                            ctx.metrics.problem(e.kind(), || {
                                format!("serial {dev}: dropped a frame: {e}")
                            });
                            continue;
                        }
                    }
                }
            };
            // Once the queue is closed, the chunk's other frames are dropped there too, so
            // that each is counted.
            let queued = ctx.frames.send_or_drop(&ctx.metrics, "serial", input);
            closed |= queued.await.is_err();
        }
        if closed {
            return Ended::Stopping;
        }
    }
}

/// A frame's receive time, and the clock's reading it was given at.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    time: SystemTime,
    clock: SystemTime,
}

/// A frame's receive time: now, but at least 1 ms after the previous frame's. Frames that
/// arrive in one read (a USB adapter's latency timer batches bytes) are parsed within one
/// millisecond, and the record id of an envelope without `fcnt` hashes its time in ms
/// ([`crate::record::stable_id`]): equal readings would share an id and all but one be
/// dropped as copies, though a serial line never delivers a frame twice. More than a frame a
/// millisecond for a while (a USB device is held to no baud rate) runs the times ahead of the
/// clock, until it catches up. A clock stepped back by more than a second since the previous
/// frame is followed, so times do not stay ahead of it for long.
fn receive_time(now: SystemTime, last: Option<Stamp>) -> Stamp {
    const STEP: Duration = Duration::from_millis(1);
    const STEPPED_BACK: Duration = Duration::from_secs(1);
    let time = match last {
        // Against the clock's last reading, not the time given then: that one may be ahead.
        Some(last) if now < last.time + STEP && now + STEPPED_BACK > last.clock => last.time + STEP,
        _ => now,
    };
    Stamp { time, clock: now }
}

/// A frame's content: a wired sensor's CBOR envelope, or a LoRaWAN PHYPayload from a radio
/// module (verified and decrypted later with the device's session keys).
fn content_of(
    content: SerialContent,
    frame: &[u8],
    now: SystemTime,
) -> Result<Parsed<Input>, ParseError> {
    Ok(match content {
        SerialContent::Cbor => cbor_envelope::parse(frame, now)?.map(Input::Uplink),
        SerialContent::Phy => Parsed {
            value: Input::Radio(RadioFrame {
                phy: frame.to_vec(),
                time: now,
                radio: Radio::default(),
                copies: 0,
            }),
            bad_time: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ms_since_epoch;

    /// The frames of one read still in the source's hands when the forwarder has closed the
    /// queue (the agent stops) are dropped and counted, each of them, and the reading ends.
    #[tokio::test]
    async fn frames_that_find_the_queue_closed_are_counted_as_dropped() {
        use tokio::io::AsyncWriteExt;
        let (mut far, mut port) = tokio_serial::SerialStream::pair().unwrap();
        let metrics = crate::metrics::Metrics::new();
        let (frames, forwarder) = super::super::queue(8, 1 << 20);
        drop(forwarder);
        let (_stop, mut stopping) = tokio::sync::watch::channel(false);
        let (_acked, acked) = tokio::sync::watch::channel(false);
        let ctx = Context {
            frames,
            stopping: stopping.clone(),
            acked,
            metrics: metrics.clone(),
        };
        let mut deframer = Deframer::new(crate::framing::Framing::LinesHex, 64, None).unwrap();
        far.write_all(b"0a0b\n0c0d\n0e0f\n").await.unwrap();
        let (content, mut last_time) = (SerialContent::Phy, None);
        let ended = read(
            &mut port,
            &mut deframer,
            "pty",
            content,
            &ctx,
            &mut stopping,
            &mut last_time,
        );
        let ended = tokio::time::timeout(Duration::from_secs(10), ended).await;
        assert!(matches!(ended, Ok(Ended::Stopping)));
        assert_eq!(metrics.dropped_stopping.get(), 3);
    }

    /// The first wait is never longer than `reopen_max`, "the longest wait".
    #[test]
    fn no_wait_is_longer_than_reopen_max() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(200));
        assert_eq!([b.wait(), b.wait()], [ms(200), ms(200)]);
        let mut b = Backoff::new(ms(900));
        assert_eq!([b.wait(), b.wait(), b.wait()], [ms(250), ms(500), ms(900)]);
    }

    /// A port that opens and fails at its first read does not start the back-off over; one
    /// that delivered bytes, or stayed up, does.
    #[test]
    fn only_a_port_that_worked_starts_the_back_off_over() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(Duration::from_secs(30));
        assert_eq!([b.wait(), b.wait()], [ms(250), ms(500)]);
        b.ended(false, ms(3));
        assert_eq!(b.wait(), ms(1000));
        b.ended(true, ms(3));
        assert_eq!(b.wait(), ms(250));
        b.wait();
        b.ended(false, STAYED_UP);
        assert_eq!(b.wait(), ms(250));
    }

    #[test]
    fn receive_times_are_distinct_to_the_millisecond() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_400);
        assert_eq!(receive_time(t, None).time, t);
        let mut last = None;
        let ms: Vec<u64> = (0..5)
            .map(|_| {
                let now = receive_time(t, last);
                last = Some(now);
                ms_since_epoch(now.time)
            })
            .collect();
        assert_eq!(
            ms,
            (0..5).map(|i| 1_700_000_000_123 + i).collect::<Vec<_>>()
        );
        // A clock ahead of the last time is taken as it is.
        let later = t + Duration::from_millis(40);
        assert_eq!(receive_time(later, last).time, later);
        // A clock stepped back an hour is followed, not held an hour ahead of, also when
        // the last time ran ahead of the clock.
        let back = t - Duration::from_secs(3600);
        let ahead = Stamp {
            time: t + Duration::from_secs(5),
            clock: t,
        };
        assert_eq!(receive_time(back, Some(ahead)).time, back);
        // Stepped back less than a second: the times keep their order.
        let shortly = t - Duration::from_millis(300);
        assert_eq!(
            receive_time(shortly, Some(ahead)).time,
            ahead.time + Duration::from_millis(1)
        );
    }

    /// Over USB a device is not held to a baud rate: a backlog of equal readings without
    /// `fcnt` and `time` sent at 2,000 frames a second for two seconds gets 4,000 distinct
    /// receive times, in order, not some of them again once they run a second ahead of the
    /// clock (their records would be taken for copies and dropped).
    #[test]
    fn a_burst_faster_than_a_frame_a_millisecond_keeps_its_times_distinct() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut last = None;
        let ms: Vec<u64> = (0..4000)
            .map(|i| {
                let now = receive_time(t + Duration::from_micros(i * 500), last);
                last = Some(now);
                ms_since_epoch(now.time)
            })
            .collect();
        let first = ms_since_epoch(t);
        assert_eq!(ms, (first..first + 4000).collect::<Vec<_>>());
    }
}
