//! Decode stage: an input becomes a [`Record`]. An uplink of ours always becomes exactly one
//! record, decoded or packed, never dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::codec::Codec;
use crate::config::Config;
use crate::lorawan::{self, LorawanError};
use crate::metrics::Metrics;
use crate::record::{self, DeviceInfo, Payload, Record};
use crate::source::{Input, RadioFrame};
use crate::uplink::Uplink;

struct Device {
    codec: Option<Codec>,
    tags: Vec<String>,
}

pub struct Decoder {
    /// Session keys and frame counters of devices whose radio frames hubgate decrypts.
    lorawan: lorawan::Decoder,
    devices: HashMap<[u8; 8], Device>,
    packed_rec_type: String,
    global_tags: Vec<String>,
    metrics: Arc<Metrics>,
}

impl Decoder {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Result<Self, LorawanError> {
        let devices = cfg
            .devices
            .iter()
            .map(|d| {
                (
                    d.dev_eui,
                    Device {
                        codec: d.codec,
                        tags: d.tags.clone(),
                    },
                )
            })
            .collect();
        Ok(Decoder {
            devices,
            lorawan: lorawan::Decoder::from_config(cfg)?,
            packed_rec_type: cfg.record.packed_rec_type.clone(),
            global_tags: cfg.record.global_tags.clone(),
            metrics,
        })
    }

    /// `None` when the input holds nothing to send (see [`Input`]).
    pub fn decode(&mut self, input: &Input) -> Option<Record> {
        match input {
            Input::Uplink(up) => Some(self.uplink(up)),
            Input::Radio(f) => self.radio(f),
            Input::GatewayStatus {
                gateway_id,
                stat,
                time,
            } => Some(record::gateway_status(
                gateway_id,
                stat,
                *time,
                SystemTime::now(),
            )),
            Input::DeadLetter(d) => Some(record::dead_letter(d, SystemTime::now())),
        }
    }

    /// A PHYPayload heard by a radio: verified and decrypted with the device's session keys.
    /// Frames of other networks, join traffic and copies heard again (another gateway, a
    /// second source) are counted and dropped; only authenticated uplinks become records.
    fn radio(&mut self, f: &RadioFrame) -> Option<Record> {
        match self.lorawan.decode_uplink(&f.phy, f.time, f.radio.clone()) {
            Ok(up) => Some(self.uplink(&up)),
            Err(LorawanError::Replay { .. }) => {
                self.metrics.duplicates.inc();
                None
            }
            Err(e @ (LorawanError::UnknownDevAddr(_) | LorawanError::NotUplink(_))) => {
                self.metrics
                    .problem("not_ours", || format!("radio frame skipped: {e}"));
                None
            }
            Err(e) => {
                self.metrics
                    .problem("lorawan_error", || format!("radio frame dropped: {e}"));
                None
            }
        }
    }

    fn uplink(&self, up: &Uplink) -> Record {
        let now = SystemTime::now();
        let no_tags: &[String] = &[];
        let device = self.devices.get(&up.dev_eui);
        let info = DeviceInfo {
            tags: device.map(|d| d.tags.as_slice()).unwrap_or(no_tags),
            global_tags: &self.global_tags,
        };
        let packed = |error: Option<String>| Payload::Packed {
            rec_type: &self.packed_rec_type,
            error,
        };
        let payload = match device.map(|d| d.codec) {
            None => {
                self.metrics.problem("unknown_device", || {
                    format!(
                        "device {} is not in the config: sent as packed records",
                        up.device_id()
                    )
                });
                packed(None)
            }
            Some(None) => packed(None),
            Some(Some(codec)) => match codec.decode(up.fport, &up.payload) {
                Ok(decoded) => Payload::Decoded {
                    codec: codec.id(),
                    decoded,
                },
                Err(e) => {
                    self.metrics.decode_errors.inc(codec.id());
                    self.metrics.problem("codec_error", || {
                        format!(
                            "device {} ({codec}): {e}: sent as a packed record",
                            up.device_id()
                        )
                    });
                    packed(Some(e.to_string()))
                }
            },
        };
        self.metrics.decoded.inc();
        record::build(up, &info, payload, now)
    }
}
