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
//! `reopen_max`; it logs again when the device is back. A frame cut by the outage is lost.
//! Serial input cannot be acknowledged: frames are sent with [`Ack::None`].

use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio_serial::SerialPortBuilderExt;

use super::{Context, Input};
use crate::config::{Parity, SerialContent, SerialSourceConfig, StopBits};
use crate::format::{cbor_envelope, ParseError, Parsed};
use crate::framing::Deframer;
use crate::uplink::{Radio, RadioFrame};

const REOPEN_MIN: Duration = Duration::from_millis(250);
/// Bytes taken from the port per read; frames may span reads.
const READ_CHUNK: usize = 1024;

/// Why the read loop ended.
enum Ended {
    Stopping,
    Gone(String),
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
    let mut stopping = ctx.stopping.clone();
    let mut backoff = REOPEN_MIN;
    // Some(since) while the device is away: logged once when it goes and once when it is back.
    let mut outage: Option<Instant> = None;
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
                match outage.take() {
                    Some(since) => ctx
                        .metrics
                        .log_limited(log::Level::Info, "serial_back", || {
                            format!(
                                "serial {dev}: opened again after {:.1?} away",
                                since.elapsed()
                            )
                        }),
                    None => log::info!(
                        "serial {dev}: opened at {} baud, framing {:?}",
                        cfg.baud,
                        cfg.framing
                    ),
                }
                backoff = REOPEN_MIN;
                deframer.reset();
                match read(
                    &mut port,
                    &mut deframer,
                    &dev,
                    cfg.content,
                    &ctx,
                    &mut stopping,
                )
                .await
                {
                    Ended::Stopping => return,
                    Ended::Gone(e) => {
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
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => {}
        }
        backoff = (backoff * 2).min(cfg.reopen_max);
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
) -> Ended {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        let n = tokio::select! {
            r = port.read(&mut buf) => match r {
                Ok(0) => return Ended::Gone("end of file".into()),
                Ok(n) => n,
                Err(e) => return Ended::Gone(e.to_string()),
            },
            _ = stopping.changed() => {
                if *stopping.borrow() {
                    return Ended::Stopping;
                }
                continue;
            }
        };
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
                    let parsed = super::or_dead_letter(&ctx.metrics, "serial", None, frame, || {
                        content_of(content, frame, SystemTime::now())
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
            let queued = ctx.frames.send_or_drop(&ctx.metrics, "serial", input);
            if queued.await.is_err() {
                return Ended::Stopping;
            }
        }
    }
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
            }),
            bad_time: None,
        },
    })
}
