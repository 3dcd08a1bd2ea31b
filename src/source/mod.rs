//! Sources: tasks that turn the outside world into [`Frame`]s for the pipeline.

mod budget;
pub(crate) mod held;
pub mod mqtt;
mod quickack;
pub mod replay;
mod same_ms;
pub mod serial;
mod start;
mod uart_errors;
pub mod udp;

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::format::{self, DeadLetter, ParseError};
use crate::uplink::{RadioFrame, Uplink};
pub use start::{build, BindError, Bound, Built};

/// What a source hands over, with the handle that acknowledges it once it is durable.
pub struct Frame {
    pub source: &'static str,
    /// The source's place in the config (`[[source]]` order): two sources of one kind (two
    /// brokers, two UDP listeners) count their frames apart on the status page.
    pub origin: usize,
    pub input: Input,
    pub ack: Ack,
    /// The bytes of its [`Queue`] it takes, given back when the frame is dropped (once the
    /// forwarder took it); `None` for a frame that went through no queue.
    pub room: Option<OwnedSemaphorePermit>,
}

pub enum Input {
    /// An application uplink, already decrypted by a network server.
    Uplink(Uplink),
    /// A LoRaWAN PHYPayload as a radio heard it: hubgate checks and decrypts it.
    Radio(RadioFrame),
    /// A gateway's own status report (GWMP `stat`).
    GatewayStatus {
        gateway_id: String,
        stat: serde_json::Map<String, serde_json::Value>,
        time: SystemTime,
        /// Its index among the gateway's unlike reports received in that millisecond of the
        /// clock (0 for the first), as [`Uplink::same_ms_index`]: its record id is made from
        /// the gateway and the time in ms, and two unlike reports of one millisecond are not
        /// copies; an equal one gets the index of the first, so its id.
        same_ms_index: u32,
    },
    /// A message hubgate will not process (too large, or its parsing failed): kept as a dead
    /// letter, then acknowledged, so the broker does not deliver it again.
    DeadLetter(Box<DeadLetter>),
}

impl Input {
    /// What the input takes in memory, near enough: every byte and string it holds (payload,
    /// device, profile and gateway names...), the text of its JSON values, and a JSON value's
    /// own size for each of them.
    pub fn size(&self) -> usize {
        let inline = std::mem::size_of::<Input>();
        inline
            + match self {
                Input::Uplink(u) => {
                    let ns = u.ns.object.iter().chain(&u.ns.normalized);
                    u.payload.len()
                        + text(&u.device_name)
                        + text(&u.ns.profile)
                        + text(&u.ns.brand)
                        + radio_size(&u.radio)
                        + ns.map(json_size).sum::<usize>()
                }
                Input::Radio(r) => r.phy.len() + radio_size(&r.radio),
                Input::GatewayStatus {
                    gateway_id, stat, ..
                } => gateway_id.len() + json_size(stat),
                Input::DeadLetter(d) => {
                    std::mem::size_of::<DeadLetter>()
                        + d.head.len()
                        + d.reason.len()
                        + text(&d.topic)
                }
            }
    }
}

fn text(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

fn radio_size(r: &crate::uplink::Radio) -> usize {
    let reception = |g: &crate::uplink::Reception| {
        std::mem::size_of::<crate::uplink::Reception>() + text(&g.gateway_id)
    };
    text(&r.gateway_id) + r.gateways.iter().map(reception).sum::<usize>()
}

fn json_size(map: &serde_json::Map<String, serde_json::Value>) -> usize {
    use serde_json::Value;
    fn value(v: &Value) -> usize {
        std::mem::size_of::<Value>()
            + match v {
                Value::String(s) => s.len(),
                Value::Array(a) => a.iter().map(value).sum(),
                Value::Object(m) => json_size(m),
                Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            }
    }
    map.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// The sources' end of a queue of frames to the forwarder, bounded in frames and in bytes
/// ([`Input::size`]): 1,024 frames of 256 KiB MQTT messages would take 256 MiB.
#[derive(Clone)]
pub struct Queue {
    frames: mpsc::Sender<Frame>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    /// Whose frames these are ([`Frame::origin`]).
    origin: usize,
}

/// The forwarder is gone: the source stops.
#[derive(Debug)]
pub struct Closed;

/// A queue of up to `frames` frames taking up to `max_bytes` (a frame larger than that goes
/// alone), and the forwarder's end of it.
pub fn queue(frames: usize, max_bytes: usize) -> (Queue, mpsc::Receiver<Frame>) {
    let (tx, rx) = mpsc::channel(frames);
    let queue = Queue {
        frames: tx,
        bytes: Arc::new(Semaphore::new(max_bytes)),
        max_bytes,
        origin: 0,
    };
    (queue, rx)
}

impl Queue {
    /// This queue for the source at `origin` in the config: its frames say so.
    pub fn of_source(&self, origin: usize) -> Queue {
        Queue {
            origin,
            ..self.clone()
        }
    }

    /// The bytes `input` takes of the queue: all of them for one larger than the bound.
    fn permits(&self, input: &Input) -> u32 {
        u32::try_from(input.size().min(self.max_bytes)).unwrap_or(u32::MAX)
    }

    /// Queue `input` once there is room for it, in frames and in bytes.
    pub async fn send(&self, source: &'static str, input: Input, ack: Ack) -> Result<(), Closed> {
        let bytes = self.bytes.clone();
        let room = bytes.acquire_many_owned(self.permits(&input)).await;
        self.put(source, input, ack, room.map_err(|_| Closed)?)
            .await
    }

    /// For a source that cannot wait: a frame that finds the queue's bytes taken is dropped,
    /// counted (`hubgate_dropped_total{reason="queue_full"}`) and logged, rate-limited. (A
    /// full queue of small frames is waited out: the frames' bound is the queue's, and what
    /// a source does not read meanwhile waits in the kernel's buffers.) One that finds the
    /// queue closed (the agent stops) is dropped and counted too (`reason="stopping"`):
    /// `Closed` tells the source to stop, once it has handed each frame it still holds here
    /// (each then counted).
    pub async fn send_or_drop(
        &self,
        metrics: &crate::metrics::Metrics,
        source: &'static str,
        input: Input,
    ) -> Result<(), Closed> {
        let size = input.size();
        let room = match self
            .bytes
            .clone()
            .try_acquire_many_owned(self.permits(&input))
        {
            Ok(room) => Some(room),
            Err(TryAcquireError::NoPermits) => {
                metrics.dropped_queue_full.inc();
                metrics.log_limited(log::Level::Warn, "queue_full", || {
                    format!(
                        "{source}: a frame of {size} bytes dropped: the frame queue's {} bytes are taken (reason queue_full)",
                        self.max_bytes
                    )
                });
                return Ok(());
            }
            Err(TryAcquireError::Closed) => None,
        };
        let queued = match room {
            Some(room) => self.put(source, input, Ack::None, room).await,
            None => Err(Closed),
        };
        if queued.is_err() {
            metrics.dropped_stopping.inc();
        }
        queued
    }

    async fn put(
        &self,
        source: &'static str,
        input: Input,
        ack: Ack,
        room: OwnedSemaphorePermit,
    ) -> Result<(), Closed> {
        let frame = Frame {
            source,
            origin: self.origin,
            input,
            ack,
            room: Some(room),
        };
        self.frames.send(frame).await.map_err(|_| Closed)
    }
}

/// How to tell a source that a frame's records are durable.
pub enum Ack {
    /// The source cannot be acknowledged (replay, serial, UDP).
    None,
    /// MQTT QoS 1: the PUBACK, handed back to the source's task, which writes all that are
    /// waiting at once. Only what a PUBACK needs is kept, not the message and its payload.
    Mqtt {
        acks: tokio::sync::mpsc::UnboundedSender<PubAck>,
        ack: PubAck,
    },
    /// One of the parts [`Ack::split`] made: the input's acknowledgement goes with the last
    /// part sent.
    Part(Arc<std::sync::Mutex<Parts>>),
}

/// What the parts of one acknowledgement share: how many are not sent yet, and the
/// acknowledgement (taken by the last one).
pub struct Parts {
    left: usize,
    ack: Option<Ack>,
}

/// A PUBACK for one message, and the connection it came on: a packet id means something
/// only on its own connection (a broker that lost the session numbers new messages from 1
/// again), so the source drops acknowledgements released after their connection failed; the
/// broker delivers those messages again (rumqttc drops the PUBACKs in its own queue at a
/// reconnect too).
///
/// A retained message carries its fingerprint, kept by the source once this is released with
/// a durable record made of it (a record, or a dead letter kept), so that the broker's next
/// delivery of it makes none. Released without one (no record made, or the record dropped
/// before it was durable), the fingerprint is cleared ([`Ack::without_retained`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    pub connection: u32,
    pub qos: rumqttc::QoS,
    pub pkid: u16,
    pub retained: Option<held::Fingerprint>,
}

/// What [`Ack::send`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The input is acknowledged now (or needs no acknowledgement).
    Acked,
    /// A part whose siblings are not all sent yet: nothing is acknowledged yet.
    Waiting,
    /// The source that would acknowledge it has stopped: the input stays unacknowledged and
    /// its broker delivers it again (to be counted by the caller, not as acknowledged).
    Failed,
}

impl Ack {
    /// Whether sending it does nothing: none to send ([`Ack::None`]), or a QoS 0 message's
    /// with no retained fingerprint to keep; for a part, the whole input's.
    pub fn sends_nothing(&self) -> bool {
        match self {
            Ack::None => true,
            Ack::Mqtt { ack, .. } => ack.qos == rumqttc::QoS::AtMostOnce && ack.retained.is_none(),
            Ack::Part(parts) => {
                let p = parts.lock().unwrap_or_else(|p| p.into_inner());
                p.ack.as_ref().is_some_and(Ack::sends_nothing)
            }
        }
    }

    /// Send it, and say what came of it.
    pub fn send(self) -> Sent {
        match self {
            Ack::None => Sent::Acked,
            // Fails only when the MQTT source has stopped before the forwarder ended, which it
            // does not do while it has a connection to acknowledge on.
            Ack::Mqtt { acks, ack } => match acks.send(ack) {
                Ok(()) => Sent::Acked,
                Err(_) => Sent::Failed,
            },
            Ack::Part(parts) => {
                let last = {
                    let mut p = parts.lock().unwrap_or_else(|p| p.into_inner());
                    p.left -= 1;
                    if p.left == 0 {
                        p.ack.take()
                    } else {
                        None
                    }
                };
                last.map_or(Sent::Waiting, Ack::send)
            }
        }
    }

    /// The same, acknowledging an input of which no durable record was made (none made,
    /// or dropped): a retained message's fingerprint is not kept, so the broker's next
    /// delivery of it is taken again. For a part, the whole input's: a duplicate at worst.
    pub fn without_retained(self) -> Ack {
        match self {
            Ack::Mqtt { acks, mut ack } => {
                ack.retained = None;
                Ack::Mqtt { acks, ack }
            }
            Ack::Part(parts) => {
                let mut p = parts.lock().unwrap_or_else(|p| p.into_inner());
                p.ack = p.ack.take().map(Ack::without_retained);
                drop(p);
                Ack::Part(parts)
            }
            Ack::None => Ack::None,
        }
    }

    /// `n` (at least one) acknowledgements for the `n` records of one input: the input is
    /// acknowledged once every one of them is sent. A part dropped unsent (its record not
    /// durable at shutdown) leaves the input unacknowledged, so its source sends it again.
    pub fn split(self, n: usize) -> Vec<Ack> {
        debug_assert!(n > 0, "an input of no records is acknowledged as it is");
        match (self, n) {
            (ack, 1) => vec![ack],
            (Ack::None, n) => (0..n).map(|_| Ack::None).collect(),
            (ack, n) => {
                let parts = Arc::new(std::sync::Mutex::new(Parts {
                    left: n,
                    ack: Some(ack),
                }));
                (0..n).map(|_| Ack::Part(parts.clone())).collect()
            }
        }
    }
}

/// Whether a source can hold its input back while the sink catches up. The forwarder stops
/// taking frames of sources that can wait while the sink keeps up but its in-flight window
/// is full, so they are sent from memory instead of written to the buffer; frames of the
/// others are always taken (and spilled if they must).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// MQTT (the broker keeps the session's queue while hubgate reads no further), replay
    /// (the file stays where it is).
    CanWait,
    /// Serial and UDP: what is not read in time is gone.
    CannotWait,
}

/// What every source task gets from the pipeline.
pub struct Context {
    pub frames: Queue,
    /// Turns true when the agent stops: take no new input.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Turns true when the last acknowledgement has been handed over: safe to disconnect.
    pub acked: tokio::sync::watch::Receiver<bool>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The millisecond of the last uplink [`Context::parse`] gave its receive time, and its
    /// index in it ([`same_ms::same_ms_index`]).
    same_ms: std::sync::Mutex<Option<same_ms::SameMs>>,
}

impl Context {
    pub fn new(
        frames: Queue,
        stopping: tokio::sync::watch::Receiver<bool>,
        acked: tokio::sync::watch::Receiver<bool>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Context {
        Context {
            frames,
            stopping,
            acked,
            metrics,
            same_ms: std::sync::Mutex::new(None),
        }
    }

    /// Parse one input message; bad input is counted and logged (rate-limited), never fatal.
    pub fn parse(
        &self,
        source: &'static str,
        topic: Option<&str>,
        format: crate::config::UplinkFormat,
        bytes: &[u8],
    ) -> Option<Input> {
        let now = SystemTime::now();
        let parsed = or_dead_letter(&self.metrics, source, topic, bytes, || {
            parse(format, bytes, now)
        });
        match parsed {
            Ok(Ok(parsed)) => Some(self.indexed(kept(&self.metrics, source, parsed), now)),
            Err(dead) => Some(Input::DeadLetter(dead)),
            Ok(Err(ParseError::NotUplink)) => {
                self.metrics.non_uplink_events.inc();
                self.metrics.log_limited(log::Level::Info, "not_uplink", || {
                    let on = topic.map(|t| format!(" on {}", format::Excerpt::from(t)));
                    format!(
                        "{source}: skipped an event that is not an uplink{}: acknowledged, no record (hubgate_non_uplink_events_total)",
                        on.unwrap_or_default()
                    )
                });
                None
            }
            // An uplink of the format whose DevEUI (a TTS device registered without one) or
            // payload does not decode holds a reading no record can carry: kept, so that the
            // acknowledgement does not lose it unseen. Not a message that is not the format's
            // JSON (a stale subscription's or misconfigured forwarder's, every message then,
            // which would fill the dead-letter cap the sink's refusals share) nor a frame with a
            // bad CRC (radio noise): no reading is lost with those.
            Ok(Err(
                e @ (ParseError::DevEui(_) | ParseError::NoDevEui(_) | ParseError::Base64(_)),
            )) => {
                self.metrics.problem(e.kind(), || {
                    format!("{source}: {e}: the message is kept as a dead letter")
                });
                let reason = e.to_string();
                let dead = DeadLetter::new(source, reason, topic, bytes, SystemTime::now());
                Some(Input::DeadLetter(Box::new(dead)))
            }
            Ok(Err(e)) => {
                self.metrics
                    .problem(e.kind(), || format!("{source}: dropped a message: {e}"));
                None
            }
        }
    }
}

impl Context {
    /// An uplink whose time is its receive time, `now`, gets its index among those of that
    /// millisecond ([`same_ms::same_ms_index`]): equal readings a broker delivers together
    /// (without an FCnt, or at one FCnt after the device restarted it) are not copies of each
    /// other.
    fn indexed(&self, input: Input, now: SystemTime) -> Input {
        match input {
            Input::Uplink(mut up) if up.time == now => {
                let mut last = self.same_ms.lock().unwrap_or_else(|e| e.into_inner());
                up.same_ms_index = same_ms::same_ms_index(now, &mut last);
                Input::Uplink(up)
            }
            input => input,
        }
    }
}

/// A parsed message's input, kept; what was wrong in it is counted and logged.
pub fn kept(
    metrics: &crate::metrics::Metrics,
    source: &str,
    parsed: format::Parsed<Input>,
) -> Input {
    if let Some(e) = parsed.bad_time {
        metrics.problem(e.kind(), || {
            format!("{source}: {e}: the message is kept with hubgate's receive time")
        });
    }
    match &parsed.value {
        Input::Uplink(up) if parsed.gateways_left_out > 0 => {
            metrics.problem("gateways_left_out", || {
                format!(
                    "{source}: device {}: the message lists {} receptions; its records list \
                     the {} strongest (meta.iot.gateways)",
                    up.device_id(),
                    crate::uplink::MAX_GATEWAYS + parsed.gateways_left_out,
                    crate::uplink::MAX_GATEWAYS
                )
            });
        }
        _ => {}
    }
    parsed.value
}

/// Run `parse` for one message inside [`crate::contain::contain`]: a panic makes the message
/// a dead letter (`Err`), counted as `parse_panic`.
pub fn or_dead_letter<T>(
    metrics: &crate::metrics::Metrics,
    source: &'static str,
    topic: Option<&str>,
    bytes: &[u8],
    parse: impl FnOnce() -> T,
) -> Result<T, Box<DeadLetter>> {
    crate::contain::contain(parse).map_err(|panic| {
        metrics.problem("parse_panic", || {
            format!("{source}: parsing a message {panic}: kept as a dead letter")
        });
        let reason = format!("parsing {panic}");
        Box::new(DeadLetter::new(
            source,
            reason,
            topic,
            bytes,
            SystemTime::now(),
        ))
    })
}

/// A source's context for a unit test, on a queue of `frames` frames and `max_bytes`: the context,
/// the forwarder's end of the queue, and the senders of `stopping` and `acked`, which the
/// test keeps while the source runs (a dropped sender would read as a stop).
#[cfg(test)]
pub struct TestContext {
    pub ctx: Context,
    pub forwarder: mpsc::Receiver<Frame>,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub all_acked: tokio::sync::watch::Sender<bool>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[cfg(test)]
impl TestContext {
    pub fn new(frames: usize, max_bytes: usize) -> TestContext {
        let (queue, forwarder) = queue(frames, max_bytes);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let (all_acked, acked) = tokio::sync::watch::channel(false);
        let metrics = crate::metrics::Metrics::new();
        let ctx = Context::new(queue, stopping, acked, metrics.clone());
        TestContext {
            ctx,
            forwarder,
            stop,
            all_acked,
            metrics,
        }
    }
}

/// One MQTT or replay message in `format`; `received` stands in for a time it lacks.
pub fn parse(
    format: crate::config::UplinkFormat,
    bytes: &[u8],
    received: SystemTime,
) -> Result<format::Parsed<Input>, ParseError> {
    use crate::config::UplinkFormat as F;
    #[cfg(test)]
    crate::contain::test_point::reach("parse");
    Ok(match format {
        F::ChirpstackV4 => format::chirpstack::parse(bytes, received)?.map(Input::Uplink),
        F::TtsV3 => format::tts::parse(bytes, received)?.map(Input::Uplink),
        F::ChirpstackGateway => {
            format::chirpstack::parse_gateway_frame(bytes, received)?.map(Input::Radio)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UplinkFormat;

    fn context() -> (Context, std::sync::Arc<crate::metrics::Metrics>) {
        let t = TestContext::new(1, 1 << 20);
        (t.ctx, t.metrics)
    }

    /// A message whose time is bad is kept with the receive time, and the bad time counted.
    #[test]
    fn a_bad_time_is_counted_and_the_message_kept() {
        let (ctx, metrics) = context();
        let msg =
            br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"fCnt":7,"data":"AQ==","time":"soon"}"#;
        let before = SystemTime::now();
        let Some(Input::Uplink(up)) = ctx.parse("mqtt", None, UplinkFormat::ChirpstackV4, msg)
        else {
            panic!("not kept")
        };
        assert!(up.time >= before, "{:?}", up.time);
        assert_eq!((up.fcnt, up.payload), (Some(7), vec![1]));
        assert_eq!(metrics.problems("bad_time"), 1);
    }

    /// A message listing more receptions than an uplink carries is kept with the strongest,
    /// and counted once, as `gateways_left_out`; its size counts what it carries.
    #[test]
    fn receptions_left_out_are_counted_once_per_message() {
        let (ctx, metrics) = context();
        let max = crate::uplink::MAX_GATEWAYS;
        let entries = |n: usize| {
            (0..n)
                .map(|i| format!(r#"{{"gatewayId":"{i:016x}","rssi":-{}}}"#, 100 + i))
                .collect::<Vec<_>>()
                .join(",")
        };
        let msg = |n: usize| {
            format!(
                r#"{{"deviceInfo":{{"devEui":"58a0cb0000101234"}},"fCnt":7,"data":"AQ==","rxInfo":[{}]}}"#,
                entries(n)
            )
        };
        let parsed =
            |n: usize| match ctx.parse("mqtt", None, UplinkFormat::ChirpstackV4, msg(n).as_bytes())
            {
                Some(Input::Uplink(up)) => up,
                _ => panic!("not kept"),
            };
        let up = parsed(max);
        assert_eq!(up.radio.gateways.len(), max);
        assert_eq!(metrics.problems("gateways_left_out"), 0);
        let up = parsed(10_000);
        assert_eq!(up.radio.gateways.len(), max);
        assert_eq!(up.radio.gateway_id.as_deref(), Some("0000000000000000"));
        assert_eq!(metrics.problems("gateways_left_out"), 1);
        let size = Input::Uplink(up).size();
        let carried = max * (std::mem::size_of::<crate::uplink::Reception>() + 16);
        assert!(size > carried && size < carried + 1024, "{size}");
    }

    /// Equal uplinks at one FCnt without a time of their own, parsed in one millisecond (a
    /// broker's backlog after a reconnect), get the receive time and their index in it; an
    /// ABP device that restarts its counter sends such equal readings, and the index must
    /// tell their record ids apart, as it does without an FCnt.
    /// Only an uplink timed with the receive time gets an index: one whose message gives its
    /// own time keeps 0, and does not count among that millisecond's.
    #[test]
    fn only_an_uplink_at_the_receive_time_is_indexed() {
        let (ctx, _) = context();
        let timed = br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"time":"2026-11-26T10:00:00Z","fPort":2,"data":"AQ=="}"#;
        let bare = br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"fPort":2,"data":"AQ=="}"#;
        let now = SystemTime::now();
        let index = |msg: &[u8]| {
            let parsed = parse(UplinkFormat::ChirpstackV4, msg, now).unwrap();
            match ctx.indexed(kept(&ctx.metrics, "mqtt", parsed), now) {
                Input::Uplink(up) => up.same_ms_index,
                _ => panic!("not an uplink"),
            }
        };
        let indexes = [index(bare), index(timed), index(bare), index(timed)];
        assert_eq!(indexes, [0, 0, 1, 0]);
    }

    #[test]
    fn equal_uplinks_at_one_fcnt_parsed_in_one_millisecond_get_ids_of_their_own() {
        let (ctx, _) = context();
        let msg = br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"devAddr":"26011bda","fCnt":0,"fPort":2,"data":"AQ=="}"#;
        let now = SystemTime::now();
        let up = || {
            let parsed = parse(UplinkFormat::ChirpstackV4, msg, now).unwrap();
            match ctx.indexed(kept(&ctx.metrics, "mqtt", parsed), now) {
                Input::Uplink(up) => up,
                _ => panic!("not an uplink"),
            }
        };
        let (a, b) = (up(), up());
        assert_eq!((a.same_ms_index, b.same_ms_index), (0, 1));
        assert_ne!(
            crate::record::stable_id(&a),
            crate::record::stable_id(&b),
            "two readings, one id"
        );
    }

    /// ChirpStack publishes join, status, ack, txack and log events beside `up`, each with
    /// `deviceInfo.devEui`; a `topic` that takes them in (`application/+/device/+/event/+`)
    /// skips and counts them (acknowledged, no record, no problem). An uplink with an empty
    /// payload (no `data`, no `fPort`) is still one.
    #[test]
    fn chirpstack_events_other_than_uplinks_are_skipped_and_counted() {
        let (ctx, metrics) = context();
        let device = r#""time":"2024-05-01T10:00:00Z","deviceInfo":{"devEui":"58a0cb0000101234"}"#;
        let events = [
            ("join", r#""devAddr":"26011bda""#),
            ("status", r#""margin":7,"batteryLevel":90.5"#),
            (
                "ack",
                r#""queueItemId":"q1","acknowledged":true,"fCntDown":3"#,
            ),
            (
                "txack",
                r#""queueItemId":"q1","fCntDown":3,"gatewayId":"g1","txInfo":{"frequency":868100000}"#,
            ),
            (
                "log",
                r#""level":"ERROR","code":"UPLINK_CODEC","description":"d","context":{}"#,
            ),
            ("up", r#""fCnt":5,"rxInfo":[{"gatewayId":"g1","rssi":-90}]"#),
            // A relay that keeps only the decoded readings.
            ("up", r#""object":{"temperature":21.5}"#),
        ];
        let made: Vec<(&str, bool)> = events
            .iter()
            .map(|(kind, rest)| {
                let topic = format!("application/a/device/58a0cb0000101234/event/{kind}");
                let json = format!("{{{device},{rest}}}");
                let input = ctx.parse(
                    "mqtt",
                    Some(&topic),
                    UplinkFormat::ChirpstackV4,
                    json.as_bytes(),
                );
                (*kind, matches!(input, Some(Input::Uplink(_))))
            })
            .collect();
        assert_eq!(
            made,
            [
                ("join", false),
                ("status", false),
                ("ack", false),
                ("txack", false),
                ("log", false),
                ("up", true),
                ("up", true)
            ]
        );
        assert_eq!(metrics.non_uplink_events.get(), 5);
        assert_eq!(metrics.problem_counts(), []);
    }

    /// `null` for the reception list (relays that re-publish ChirpStack or TTS JSON write it
    /// for an empty one) costs the uplink only its radio metadata, as `txInfo: null` does.
    #[test]
    fn a_null_reception_list_costs_only_the_radio_metadata() {
        let cs = r#"{"time":"2024-05-01T10:00:00Z","deviceInfo":{"devEui":"58a0cb0000101234"},"fCnt":1,"fPort":2,"data":"AQ==","txInfo":null,"rxInfo":null}"#;
        let tts = r#"{"end_device_ids":{"device_id":"d","dev_eui":"58A0CB0000101234"},"uplink_message":{"f_port":2,"f_cnt":1,"frm_payload":"AQ==","settings":null,"rx_metadata":null}}"#;
        let fields =
            |format, json: &str| match parse(format, json.as_bytes(), SystemTime::UNIX_EPOCH) {
                Ok(p) => match p.value {
                    Input::Uplink(u) => Ok((u.payload, u.fport, u.fcnt, u.radio.rssi)),
                    _ => Err("not an uplink"),
                },
                Err(e) => Err(e.kind()),
            };
        let want = Ok((vec![1], Some(2), Some(1), None));
        assert_eq!(
            (
                fields(UplinkFormat::ChirpstackV4, cs),
                fields(UplinkFormat::TtsV3, tts)
            ),
            (want.clone(), want)
        );
    }

    /// The Things Stack registers LoRaWAN 1.0 ABP devices without a DevEUI: their uplinks
    /// (`device_id` and `dev_addr` only) are kept as dead letters, not acknowledged and lost;
    /// so is an uplink whose payload is not base64. A message that is not the format's JSON
    /// is only counted.
    #[test]
    fn an_uplink_hubgate_cannot_key_or_read_is_kept_as_a_dead_letter() {
        let (ctx, metrics) = context();
        let abp = r#"{"end_device_ids":{"device_id":"abp-meter-7","application_ids":{"application_id":"water"},"dev_addr":"26011BDA"},"received_at":"2024-05-01T10:00:00.5Z","uplink_message":{"f_port":1,"f_cnt":2,"frm_payload":"AQ=="}}"#;
        let topic = "v3/water@acme/devices/abp-meter-7/up";
        let Some(Input::DeadLetter(d)) =
            ctx.parse("mqtt", Some(topic), UplinkFormat::TtsV3, abp.as_bytes())
        else {
            panic!("not a dead letter")
        };
        assert_eq!(
            (d.source, d.topic.as_deref(), d.size, d.head.as_slice()),
            ("mqtt", Some(topic), abp.len(), abp.as_bytes())
        );
        assert!(
            d.reason.starts_with("device \"abp-meter-7\" has no DevEUI"),
            "{}",
            d.reason
        );
        let bad_b64 = br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"fCnt":1,"data":"!!"}"#;
        let kept = ctx.parse("mqtt", None, UplinkFormat::ChirpstackV4, bad_b64);
        assert!(matches!(kept, Some(Input::DeadLetter(_))));
        assert_eq!(
            ctx.parse("mqtt", None, UplinkFormat::TtsV3, b"{not json")
                .map(|i| i.size()),
            None
        );
        assert_eq!(
            metrics.problem_counts(),
            [
                ("bad_base64".into(), 1),
                ("bad_dev_eui".into(), 1),
                ("malformed_json".into(), 1)
            ]
        );
    }

    /// A panic while parsing makes the message a dead letter (counted), and the next message
    /// parses normally.
    #[test]
    fn a_panic_in_parsing_is_contained() {
        let (ctx, metrics) = context();
        let msg = br#"{"deviceInfo":{"devEui":"58a0cb0000101234"},"data":"AQ=="}"#;
        crate::contain::test_point::arm("parse");
        let Some(Input::DeadLetter(d)) =
            ctx.parse("mqtt", Some("t/1"), UplinkFormat::ChirpstackV4, msg)
        else {
            panic!("not a dead letter")
        };
        assert_eq!(
            (d.source, d.topic.as_deref(), d.size),
            ("mqtt", Some("t/1"), msg.len())
        );
        assert_eq!(d.head, msg);
        assert!(d.reason.contains("test panic at parse"), "{}", d.reason);
        assert_eq!(metrics.problems("parse_panic"), 1);
        let next = ctx.parse("mqtt", None, UplinkFormat::ChirpstackV4, msg);
        assert!(matches!(next, Some(Input::Uplink(_))));
    }

    /// Every string a frame holds counts towards its size, so that the frame queue's byte
    /// bound holds for input whose bulk is a device, profile or gateway name or a Device
    /// Repository brand (parsing keeps each short, see `long_metadata_text_is_cut`).
    #[test]
    fn a_frame_is_as_large_as_the_strings_it_holds() {
        let long = "x".repeat(600_000);
        let msg = r#"{"time":"2024-05-01T10:00:00.123Z","deviceInfo":{"deviceName":"d",
            "deviceProfileName":"p","devEui":"58a0cb0000101234"},"fCnt":1,"fPort":1,
            "data":"AA==","rxInfo":[{"gatewayId":"g","rssi":-90,"snr":3.5}]}"#;
        let parsed = parse(
            UplinkFormat::ChirpstackV4,
            msg.as_bytes(),
            SystemTime::UNIX_EPOCH,
        );
        let Input::Uplink(up) = parsed.expect("parses").value else {
            unreachable!()
        };
        let long_one = |set: fn(&mut crate::uplink::Uplink, String)| {
            let mut up = up.clone();
            set(&mut up, long.clone());
            Input::Uplink(up).size()
        };
        for size in [
            long_one(|u, l| u.device_name = Some(l)),
            long_one(|u, l| u.ns.profile = Some(l)),
            long_one(|u, l| u.radio.gateway_id = Some(l)),
            long_one(|u, l| u.ns.brand = Some(l)),
        ] {
            assert!(size >= 600_000, "{size} bytes counted");
        }
        let radio = Input::Radio(RadioFrame {
            phy: vec![0; 20],
            time: SystemTime::UNIX_EPOCH.into(),
            radio: crate::uplink::Radio {
                gateway_id: Some(long.clone()),
                ..Default::default()
            },
            copies: 0,
        });
        let status = Input::GatewayStatus {
            gateway_id: long.clone(),
            stat: serde_json::Map::new(),
            time: SystemTime::UNIX_EPOCH,
            same_ms_index: 0,
        };
        for input in [radio, status] {
            assert!(input.size() >= 600_000, "{} bytes counted", input.size());
        }
    }

    /// The parts of a split acknowledgement send it with the last of them, once; a part
    /// dropped unsent leaves it unsent.
    #[test]
    fn a_split_acknowledgement_goes_with_its_last_part() {
        let (acks, mut sent) = mpsc::unbounded_channel();
        let ack = PubAck {
            connection: 0,
            qos: rumqttc::QoS::AtLeastOnce,
            pkid: 9,
            retained: None,
        };
        let mut parts = Ack::Mqtt { acks, ack }.split(3);
        let last = parts.pop().unwrap();
        let mut halves = parts.pop().unwrap().split(2);
        assert_eq!(parts.pop().unwrap().send(), Sent::Waiting);
        assert_eq!(halves.pop().unwrap().send(), Sent::Waiting);
        assert_eq!(last.send(), Sent::Waiting);
        assert!(
            sent.try_recv().is_err(),
            "the part split again is not sent yet"
        );
        assert_eq!(halves.pop().unwrap().send(), Sent::Acked);
        assert_eq!(sent.try_recv().unwrap(), ack);
        assert!(sent.try_recv().is_err(), "once");

        let (acks, mut sent) = mpsc::unbounded_channel();
        let mut parts = Ack::Mqtt { acks, ack }.split(2);
        drop(parts.pop());
        assert_eq!(parts.pop().unwrap().send(), Sent::Waiting);
        assert!(sent.try_recv().is_err(), "a part dropped unsent");
        assert!(Ack::None
            .split(2)
            .into_iter()
            .all(|a| a.send() == Sent::Acked));
    }

    /// An acknowledgement released after its MQTT source stopped is not sent: it says so,
    /// whole or as the last of its parts, so that it is not counted as acknowledged.
    #[test]
    fn an_acknowledgement_its_source_cannot_take_is_a_failure() {
        let ack = PubAck {
            connection: 0,
            qos: rumqttc::QoS::AtLeastOnce,
            pkid: 9,
            retained: None,
        };
        let (acks, gone) = mpsc::unbounded_channel();
        drop(gone);
        let mut parts = Ack::Mqtt {
            acks: acks.clone(),
            ack,
        }
        .split(2);
        let outcomes = [
            Ack::Mqtt { acks, ack }.send(),
            parts.pop().unwrap().send(),
            parts.pop().unwrap().send(),
        ];
        assert_eq!(outcomes, [Sent::Failed, Sent::Waiting, Sent::Failed]);
    }

    fn radio(bytes: usize) -> Input {
        Input::Radio(RadioFrame {
            phy: vec![0; bytes],
            time: SystemTime::UNIX_EPOCH.into(),
            radio: crate::uplink::Radio::default(),
            copies: 0,
        })
    }

    /// Polls `f` once: whether it is done (nothing here needs a runtime to make progress).
    fn ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        f.poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }

    /// The sizes of the frames queued, taking them off the queue.
    fn taken(rx: &mut mpsc::Receiver<Frame>) -> Vec<usize> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| f.input.size())
            .collect()
    }

    /// The frame queue is bounded in bytes as well as in frames: a source that can wait waits
    /// for room, which the forwarder gives back as it takes frames; one that cannot drops the
    /// frame, counted; a frame larger than the whole bound goes alone.
    #[test]
    fn the_frame_queue_is_bounded_in_bytes() {
        let metrics = crate::metrics::Metrics::new();
        let one = radio(1000).size();
        let (q, mut rx) = queue(100, 3 * one);
        for _ in 0..3 {
            assert!(ready(std::pin::pin!(q.send("t", radio(1000), Ack::None))));
        }
        let mut fourth = std::pin::pin!(q.send("t", radio(1000), Ack::None));
        assert!(!ready(fourth.as_mut()), "no room: it waits");
        assert!(!ready(fourth.as_mut()));
        assert!(ready(std::pin::pin!(q.send_or_drop(
            &metrics,
            "udp",
            radio(1)
        ))));
        assert_eq!(metrics.dropped_queue_full.get(), 1, "dropped");
        assert_eq!(rx.len(), 3);
        drop(rx.try_recv().unwrap());
        assert!(ready(fourth), "taken by the forwarder: room again");
        assert_eq!(taken(&mut rx), [one; 3]);
        assert_eq!(q.bytes.available_permits(), 3 * one);

        // Larger than the whole bound: alone, and only into an empty queue.
        assert!(ready(std::pin::pin!(q.send("t", radio(1), Ack::None))));
        let mut large = std::pin::pin!(q.send("t", radio(10 * one), Ack::None));
        assert!(!ready(large.as_mut()));
        assert_eq!(taken(&mut rx), [radio(1).size()]);
        assert!(ready(large));
        let small = std::pin::pin!(q.send_or_drop(&metrics, "serial", radio(1)));
        assert!(ready(small));
        assert_eq!(metrics.dropped_queue_full.get(), 2);
        assert_eq!(taken(&mut rx), [radio(10 * one).size()]);
        assert_eq!(q.bytes.available_permits(), 3 * one);
    }
}
