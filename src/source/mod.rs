//! Sources: tasks that turn the outside world into [`Frame`]s for the pipeline.

pub mod mqtt;
mod quickack;
pub mod replay;
pub mod serial;
mod start;
pub mod udp;

use std::time::SystemTime;

use crate::format::{self, DeadLetter, ParseError};
use crate::uplink::{RadioFrame, Uplink};
pub use start::{build, BindError, Bound, Built};

/// What a source hands over, with the handle that acknowledges it once it is durable.
pub struct Frame {
    pub source: &'static str,
    pub input: Input,
    pub ack: Ack,
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
    },
    /// A message hubgate will not process (too large, or its parsing failed): kept as a dead
    /// letter, then acknowledged, so the broker does not deliver it again.
    DeadLetter(Box<DeadLetter>),
}

/// How to tell a source that a frame's records are durable.
pub enum Ack {
    /// The source cannot be acknowledged (replay, serial, UDP).
    None,
    /// MQTT QoS 1: the PUBACK, handed back to the source's task (which keeps what does not
    /// fit in rumqttc's request queue yet, so a burst of acknowledgements is never dropped).
    /// Only what a PUBACK needs is kept, not the message and its payload.
    Mqtt {
        acks: tokio::sync::mpsc::UnboundedSender<PubAck>,
        ack: PubAck,
    },
}

/// A PUBACK for one message, and the connection it came on: a packet id means something
/// only on its own connection (a broker that lost the session numbers new messages from 1
/// again), so the source drops acknowledgements released after their connection failed; the
/// broker delivers those messages again, as rumqttc expects (it drops queued PUBACKs then too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    pub connection: u32,
    pub qos: rumqttc::QoS,
    pub pkid: u16,
}

impl Ack {
    pub fn send(self) {
        if let Ack::Mqtt { acks, ack } = self {
            // Fails only when the MQTT source is gone; the broker then redelivers, which the
            // de-duplication window absorbs.
            if acks.send(ack).is_err() {
                log::warn!(
                    "mqtt: could not acknowledge message {}: the MQTT source has stopped",
                    ack.pkid
                );
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
    pub frames: tokio::sync::mpsc::Sender<Frame>,
    /// Turns true when the agent stops: take no new input.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Turns true when the last acknowledgement has been handed over: safe to disconnect.
    pub acked: tokio::sync::watch::Receiver<bool>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Context {
    /// Parse one input message; bad input is counted and logged (rate-limited), never fatal.
    pub fn parse(
        &self,
        source: &'static str,
        topic: Option<&str>,
        format: crate::config::UplinkFormat,
        bytes: &[u8],
    ) -> Option<Input> {
        let parsed = or_dead_letter(&self.metrics, source, topic, bytes, || {
            parse(format, bytes, SystemTime::now())
        });
        match parsed {
            Ok(Ok(input)) => Some(input),
            Err(dead) => Some(Input::DeadLetter(dead)),
            Ok(Err(e)) => {
                self.metrics
                    .problem(e.kind(), || format!("{source}: dropped a message: {e}"));
                None
            }
        }
    }
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

/// One MQTT or replay message in `format`; `received` stands in for a time it lacks.
pub fn parse(
    format: crate::config::UplinkFormat,
    bytes: &[u8],
    received: SystemTime,
) -> Result<Input, ParseError> {
    use crate::config::UplinkFormat as F;
    #[cfg(test)]
    crate::contain::test_point::reach("parse");
    match format {
        F::ChirpstackV4 => format::chirpstack::parse(bytes, received).map(Input::Uplink),
        F::TtsV3 => format::tts::parse(bytes, received).map(Input::Uplink),
        F::ChirpstackGateway => {
            format::chirpstack::parse_gateway_frame(bytes, received).map(Input::Radio)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UplinkFormat;

    /// A panic while parsing makes the message a dead letter (counted), and the next message
    /// parses normally.
    #[test]
    fn a_panic_in_parsing_is_contained() {
        let (frames, _rx) = tokio::sync::mpsc::channel(1);
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let (_ack, acked) = tokio::sync::watch::channel(false);
        let metrics = crate::metrics::Metrics::new();
        let ctx = Context {
            frames,
            stopping,
            acked,
            metrics: metrics.clone(),
        };
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
}
