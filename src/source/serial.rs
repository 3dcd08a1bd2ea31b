//! Serial source (tokio-serial): frames from a UART or USB serial device.
//!
//! The port is opened with the configured baud, parity, stop and data bits. Bytes go
//! through the configured [`crate::framing`] deframer (fixed buffers, no allocation per
//! frame); each frame is a CBOR envelope of a wired sensor (see [`cbor_envelope`]) or, with
//! `content = "phy"`, a LoRaWAN PHYPayload from a radio module.
//! Bad frames are counted by kind (`serial_crc`, `serial_overlong`, `serial_bad_hex`,
//! `serial_malformed`, `serial_other_line`, `serial_bad_cbor`) and logged at warn,
//! rate-limited per kind, and dropped; an envelope whose DevEUI or payload is missing or does
//! not decode (`serial_bad_field`) holds a reading that was sent, and is kept as a dead
//! letter, as MQTT keeps an uplink whose DevEUI or payload does not decode. A source keeps
//! [`DEAD_LETTER_BURST`] such letters at once and one more each [`DEAD_LETTER_EVERY`]: a
//! sensor that sends a bad envelope every reading, as fast as its line goes, cannot fill the
//! dead-letter space every source shares; the others are counted and logged, not kept.
//!
//! When the device goes away (USB unplug, the far end of a pty closes) the source logs it
//! once and tries to reopen it, waiting 250 ms, then twice as long each time up to
//! `reopen_max` (see [`Backoff`]); it logs again when the device is back. A frame cut by the
//! outage is lost and counted (`serial_cut`).
//! Serial input cannot be acknowledged: frames are sent with [`Ack::None`].
//! A frame's receive time is the clock's; frames received in one millisecond of it are told
//! apart by their index in it ([`same_ms_index`]).
//! A port whose driver keeps UART error counters (overruns, framing and parity errors) has
//! them counted in `hubgate_serial_uart_errors_total` ([`super::uart_errors`]).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio_serial::SerialPortBuilderExt;

use super::budget::Budget;
use super::same_ms::{same_ms_index, SameMs};
use super::uart_errors::{self, UartErrors};
use super::{Context, Input};
use crate::config::{Parity, SerialContent, SerialSourceConfig, StopBits};
use crate::format::{cbor_envelope, DeadLetter, ParseError, Parsed};
use crate::framing::Deframer;
use crate::uplink::{Radio, RadioFrame};

const REOPEN_MIN: Duration = Duration::from_millis(250);
/// A port open this long worked, even if silent: one that fails at its first read (EIO, end
/// of file) does so within milliseconds of the open.
const STAYED_UP: Duration = Duration::from_secs(1);
/// Bytes taken from the port per read; frames may span reads.
const READ_CHUNK: usize = 1024;
/// Dead letters of bad envelopes ([`ParseError::CborField`]) a source keeps at once.
const DEAD_LETTER_BURST: u32 = 16;
/// How often a source may keep one more, once it has used its burst: a sensor that sends
/// only bad envelopes adds 1,440 a day, and takes 6¼ days to fill the 9,000 of input.
const DEAD_LETTER_EVERY: Duration = Duration::from_secs(60);

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
    // Kept across reopens.
    let mut kept = Kept::new(Instant::now());
    // Whether the port was found without UART error counters: said once, at debug.
    let mut no_uart_counters_told = false;
    // Why the last open failed while the device is away, and the last reason told at warn: a
    // reason other than its absence (a device back with other permissions, or held by
    // another program), met on two tries in a row (not a node udev has not handed over
    // yet), is told once; each other try only at debug.
    let mut open_failed: Option<String> = None;
    let mut open_told: Option<String> = None;
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
                open_failed = None;
                open_told = None;
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
                let fd = port.as_raw_fd();
                let read_counters = || uart_errors::read(fd);
                let mut uart = match UartErrors::open(read_counters, &dev, &ctx.metrics, up) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        if !std::mem::replace(&mut no_uart_counters_told, true) {
                            log::debug!(
                                "serial {dev}: no UART error counters (TIOCGICOUNT: {e}): overruns, framing and parity errors are not counted"
                            );
                        }
                        None
                    }
                };
                let port = Port {
                    stream: &mut port,
                    uart: uart.as_mut(),
                };
                match read(
                    port,
                    &mut deframer,
                    &dev,
                    cfg.content,
                    &ctx,
                    &mut stopping,
                    &mut kept,
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
                let why = e.to_string();
                let absent = e.kind() == tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound);
                let again = open_failed.as_deref() == Some(why.as_str());
                if outage.is_none() {
                    log::warn!(
                        "serial {dev}: cannot open ({e}); retrying with backoff up to {:?}",
                        cfg.reopen_max
                    );
                    outage = Some(Instant::now());
                    open_told = Some(why.clone());
                } else if !absent && again && open_told.as_deref() != Some(why.as_str()) {
                    ctx.metrics
                        .log_limited(log::Level::Warn, "serial_open", || {
                            format!("serial {dev}: still cannot open, now: {e}")
                        });
                    open_told = Some(why.clone());
                } else {
                    log::debug!("serial {dev}: still cannot open: {e}");
                }
                open_failed = Some(why);
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
        // Opened shared (a shared `flock`, nothing else), then made exclusive by `exclusive`.
        .exclusive(false)
        .open_native_async()
        .and_then(|port| {
            exclusive(port.as_raw_fd())?;
            Ok(port)
        })
}

/// Major device numbers of the pseudo-terminals' device ends (`/dev/pts/N`): 136 and the
/// seven after it.
const PTY_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// Make an open port hubgate's alone: an exclusive `flock` (the kernel drops it with the
/// process), which keeps a second hubgate and other programs that lock away, and, for a real
/// port, the terminal's exclusive mode (`TIOCEXCL`: any other open by a user without
/// capabilities fails with EBUSY), which the port loses at its last close. A pseudo-terminal
/// (a serial-over-network bridge such as socat or remserial) outlives the agent and would
/// keep that mode after a kill (the serial library clears it only as it closes the port):
/// the next agent, run as the unit's user, could never open it again, and serial readings
/// cannot wait. So it gets the `flock` only.
fn exclusive(fd: std::os::fd::RawFd) -> tokio_serial::Result<()> {
    // SAFETY: `fd` is the open port's; a non-blocking flock only takes or refuses the lock.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.kind() {
            std::io::ErrorKind::WouldBlock => tokio_serial::Error::new(
                tokio_serial::ErrorKind::NoDevice,
                "held by another program, which has its lock",
            ),
            _ => e.into(),
        });
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is the open port's; fstat fills `st` when it returns 0.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fstat returned 0.
    let st = unsafe { st.assume_init() };
    let is_device = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if is_device && PTY_MAJORS.contains(&libc::major(st.st_rdev)) {
        return Ok(());
    }
    // SAFETY: TIOCEXCL takes no argument and only sets the terminal's exclusive mode.
    if unsafe { libc::ioctl(fd, libc::TIOCEXCL) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// An open port, and its UART error counters if it has them: one argument of [`read`], which
/// has as many as clippy allows.
struct Port<'a> {
    stream: &'a mut tokio_serial::SerialStream,
    uart: Option<&'a mut UartErrors>,
}

/// What a source keeps across reopens of its port.
struct Kept {
    /// The millisecond of the last frame (see [`same_ms_index`]).
    same_ms: Option<SameMs>,
    /// What is left of its dead letters for bad envelopes (see [`bad_field`]).
    dead_letters: Budget,
}

impl Kept {
    /// A source's, at its start at `now`.
    fn new(now: Instant) -> Kept {
        Kept {
            same_ms: None,
            dead_letters: Budget::new(DEAD_LETTER_BURST, DEAD_LETTER_EVERY, now),
        }
    }
}

/// Read and deframe until the device goes away or the agent stops.
async fn read(
    port: Port<'_>,
    deframer: &mut Deframer,
    dev: &str,
    content: SerialContent,
    ctx: &Context,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    kept: &mut Kept,
) -> Ended {
    let Port { stream, mut uart } = port;
    let mut buf = [0u8; READ_CHUNK];
    let mut delivered = false;
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => match r {
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
        if let Some(u) = uart.as_deref_mut() {
            let fd = stream.as_raw_fd();
            u.after_read(|| uart_errors::read(fd), dev, &ctx.metrics, Instant::now());
        }
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
                    let now = SystemTime::now();
                    let index = same_ms_index(now, &mut kept.same_ms);
                    let parsed =
                        super::or_dead_letter(&ctx.metrics, "serial", Some(dev), frame, || {
                            content_of(content, frame, now, index)
                        });
                    match parsed {
                        Ok(Ok(parsed)) => super::kept(&ctx.metrics, "serial", parsed),
                        Err(dead) => Input::DeadLetter(dead),
                        Ok(Err(e @ ParseError::CborField(_))) => {
                            let at = Instant::now();
                            let budget = &mut kept.dead_letters;
                            match bad_field(e, frame, dev, (now, at), budget, &ctx.metrics) {
                                Some(dead) => dead,
                                None => continue,
                            }
                        }
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

/// An envelope with a bad field ([`ParseError::CborField`]), received at `now` (the clock's,
/// and the monotonic one): a reading was sent, and the line cannot send it again, so it is
/// kept as a dead letter naming the port (its `topic`), as MQTT keeps an uplink whose DevEUI
/// or payload does not decode, while `budget` allows; past it, counted and logged only.
fn bad_field(
    e: ParseError,
    frame: &[u8],
    dev: &str,
    (now, at): (SystemTime, Instant),
    budget: &mut Budget,
    metrics: &crate::metrics::Metrics,
) -> Option<Input> {
    if !budget.take(at) {
        metrics.problem(e.kind(), || {
            format!(
                "serial {dev}: {e}: the frame is not kept: the source keeps {DEAD_LETTER_BURST} such dead letters at once and one more each {} s",
                DEAD_LETTER_EVERY.as_secs()
            )
        });
        return None;
    }
    metrics.problem(e.kind(), || {
        format!("serial {dev}: {e}: the frame is kept as a dead letter")
    });
    let dead = DeadLetter::new("serial", e.to_string(), Some(dev), frame, now);
    Some(Input::DeadLetter(Box::new(dead)))
}

/// A frame's content: a wired sensor's CBOR envelope, or a LoRaWAN PHYPayload from a radio
/// module (verified and decrypted later with the device's session keys). An envelope's uplink
/// whose time is `now`, the receive time, carries `index` ([`same_ms_index`]); one with a
/// `time` of its own does not: equal readings of one given time are copies.
fn content_of(
    content: SerialContent,
    frame: &[u8],
    now: SystemTime,
    index: u32,
) -> Result<Parsed<Input>, ParseError> {
    Ok(match content {
        SerialContent::Cbor => cbor_envelope::parse(frame, now)?.map(|mut up| {
            if up.time == now {
                up.same_ms_index = index;
            }
            Input::Uplink(up)
        }),
        SerialContent::Phy => Parsed {
            value: Input::Radio(RadioFrame {
                phy: frame.to_vec(),
                time: now.into(),
                radio: Radio::default(),
                copies: 0,
            }),
            bad_time: None,
            gateways_left_out: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TestContext;

    /// The frames of one read still in the source's hands when the forwarder has closed the
    /// queue (the agent stops) are dropped and counted, each of them, and the reading ends.
    #[tokio::test]
    async fn frames_that_find_the_queue_closed_are_counted_as_dropped() {
        use tokio::io::AsyncWriteExt;
        let (mut far, mut port) = tokio_serial::SerialStream::pair().unwrap();
        let t = TestContext::new(8, 1 << 20);
        let (metrics, ctx) = (t.metrics, t.ctx);
        drop(t.forwarder);
        let mut stopping = ctx.stopping.clone();
        let mut deframer = Deframer::new(crate::framing::Framing::LinesHex, 64, None).unwrap();
        far.write_all(b"0a0b\n0c0d\n0e0f\n").await.unwrap();
        let (content, mut kept) = (SerialContent::Phy, Kept::new(Instant::now()));
        let port = Port {
            stream: &mut port,
            uart: None,
        };
        let ended = read(
            port,
            &mut deframer,
            "pty",
            content,
            &ctx,
            &mut stopping,
            &mut kept,
        );
        let ended = tokio::time::timeout(Duration::from_secs(10), ended).await;
        assert!(matches!(ended, Ok(Ended::Stopping)));
        assert_eq!(metrics.dropped_stopping.get(), 3);
    }

    /// The first wait is never longer than `reopen_max`, "the longest wait".
    /// A source keeps [`DEAD_LETTER_BURST`] dead letters of bad envelopes at once, then one
    /// more each [`DEAD_LETTER_EVERY`]; each names the port. Every bad envelope is counted,
    /// kept or not.
    #[test]
    fn bad_envelopes_past_the_budget_are_counted_not_kept() {
        let metrics = crate::metrics::Metrics::new();
        let (t0, now) = (Instant::now(), SystemTime::UNIX_EPOCH);
        let mut kept = Kept::new(t0);
        let mut letters = Vec::new();
        let mut send = |n: usize, at: Instant| {
            let mut dead = 0;
            for _ in 0..n {
                let e = ParseError::CborField("dev_eui: must be 8 bytes, not 3".into());
                let budget = &mut kept.dead_letters;
                if let Some(Input::DeadLetter(d)) =
                    bad_field(e, b"frame", "/dev/ttyUSB1", (now, at), budget, &metrics)
                {
                    letters.push(*d);
                    dead += 1;
                }
            }
            dead
        };
        assert_eq!(send(20, t0), 16);
        assert_eq!(
            send(3, t0 + DEAD_LETTER_EVERY - Duration::from_millis(1)),
            0
        );
        assert_eq!(send(3, t0 + DEAD_LETTER_EVERY), 1);
        assert_eq!(send(5, t0 + DEAD_LETTER_EVERY * 4), 3);
        assert_eq!(metrics.problems("serial_bad_field"), 31);
        assert_eq!(letters.len(), 20);
        for d in &letters {
            assert_eq!(d.source, "serial");
            assert_eq!(d.topic.as_deref(), Some("/dev/ttyUSB1"));
            assert_eq!(
                d.reason,
                "CBOR envelope with a bad field: dev_eui: must be 8 bytes, not 3"
            );
        }
    }

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

    /// An envelope without `time` carries the index; one with a `time` of its own does not.
    #[test]
    fn only_an_uplink_at_its_receive_time_carries_the_index() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_400);
        let uplink = |frame: &[u8]| match content_of(SerialContent::Cbor, frame, now, 3) {
            Ok(Parsed {
                value: Input::Uplink(up),
                ..
            }) => up,
            _ => panic!("no uplink"),
        };
        assert_eq!(uplink(&envelope(&[1, 2], None)).same_ms_index, 3);
        let given = envelope(&[1, 2], Some(1_700_000_000));
        assert_eq!(uplink(&given).same_ms_index, 0);
    }

    /// Two equal envelopes with `fcnt` and without `time` read in one millisecond (a USB
    /// sensor's backlog) are two readings when its `fcnt` restarts at power-up: the index the
    /// source gives each must tell their record ids apart, as it does without `fcnt`.
    #[test]
    fn equal_envelopes_at_one_fcnt_read_in_one_millisecond_get_ids_of_their_own() {
        use serde_cbor::Value;
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_400);
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            Value::Text("dev_eui".into()),
            Value::Text("58a0cb0000101234".into()),
        );
        m.insert(Value::Text("fcnt".into()), Value::Integer(0));
        m.insert(Value::Text("payload".into()), Value::Bytes(vec![1]));
        let frame = serde_cbor::to_vec(&Value::Map(m)).unwrap();
        let id = |index| match content_of(SerialContent::Cbor, &frame, now, index) {
            Ok(Parsed {
                value: Input::Uplink(up),
                ..
            }) => crate::record::stable_id(&up),
            _ => panic!("no uplink"),
        };
        assert_ne!(id(0), id(1), "two readings, one id");
    }

    /// An envelope of DevEUI 58A0CB0000101234, FPort 103, `payload` and the Unix seconds
    /// `time` if given, without `fcnt`.
    fn envelope(payload: &[u8], time: Option<i128>) -> Vec<u8> {
        use serde_cbor::Value;
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            Value::Text("dev_eui".into()),
            Value::Text("58a0cb0000101234".into()),
        );
        m.insert(Value::Text("fport".into()), Value::Integer(103));
        m.insert(
            Value::Text("payload".into()),
            Value::Bytes(payload.to_vec()),
        );
        if let Some(t) = time {
            m.insert(Value::Text("time".into()), Value::Integer(t));
        }
        serde_cbor::to_vec(&Value::Map(m)).unwrap()
    }

    /// Over USB a device is not held to a baud rate: a backlog of 3,000 equal readings
    /// without `fcnt` and `time` read from the port as fast as it comes, most of them in a
    /// millisecond shared with others, gets 3,000 distinct record ids, in the order sent, at
    /// the clock's own times (not run ahead of it), and the reading after them too.
    #[tokio::test]
    async fn a_burst_of_equal_readings_gets_distinct_ids_at_the_clocks_times() {
        use crate::framing::testutil::{stuffing::slip, with_crc};
        use tokio::io::AsyncWriteExt;
        const N: usize = 3000;
        let (mut far, mut port) = tokio_serial::SerialStream::pair().unwrap();
        let t = TestContext::new(N + 1, 8 << 20);
        let (ctx, mut forwarder, stop) = (t.ctx, t.forwarder, t.stop);
        let mut stopping = ctx.stopping.clone();
        let mut deframer = Deframer::new(crate::framing::Framing::Slip, 64, None).unwrap();
        let mut burst = slip(&with_crc(&envelope(&[21, 40], None))).repeat(N);
        burst.extend(slip(&with_crc(&envelope(&[22, 41], None))));
        let start = SystemTime::now();
        let write = async {
            far.write_all(&burst).await.unwrap();
            far.flush().await.unwrap();
        };
        // Every frame the source queues, until the last one; then the source is stopped.
        let take = async {
            let mut ups = Vec::new();
            while let Some(f) = forwarder.recv().await {
                let Input::Uplink(up) = f.input else {
                    panic!("not an uplink");
                };
                let last = up.payload == [22, 41];
                ups.push(up);
                if last {
                    break;
                }
            }
            stop.send(true).unwrap();
            ups
        };
        let mut kept = Kept::new(Instant::now());
        let port = Port {
            stream: &mut port,
            uart: None,
        };
        let reading = read(
            port,
            &mut deframer,
            "pty",
            SerialContent::Cbor,
            &ctx,
            &mut stopping,
            &mut kept,
        );
        let all = async { tokio::join!(write, take, reading) };
        let ((), ups, ended) = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("the burst is read within a minute");
        let end = SystemTime::now();
        assert!(matches!(ended, Ended::Stopping));
        assert_eq!(ups.len(), N + 1);
        let payloads: Vec<&[u8]> = ups.iter().map(|u| &u.payload[..]).collect();
        assert_eq!(payloads[..N], vec![&[21, 40][..]; N]);
        let ids: std::collections::HashSet<String> =
            ups.iter().map(crate::record::stable_id).collect();
        assert_eq!(ids.len(), N + 1);
        // The clock's times, in order, and within the read: none ahead of the clock.
        assert!(ups.windows(2).all(|w| w[0].time <= w[1].time));
        assert!(ups[0].time >= start && ups[N].time <= end);
        // The burst did share milliseconds: what the index is for.
        assert!(ups.iter().any(|u| u.same_ms_index > 0));
    }
}
