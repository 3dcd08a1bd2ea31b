//! Decode stage: an input becomes a [`Record`]. An uplink of ours always becomes exactly one
//! record, decoded or packed, never dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::codec::Codec;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::record::{self, DeviceInfo, Payload, Record};
use crate::source::Input;
use crate::uplink::Uplink;

struct Device {
    codec: Option<Codec>,
    tags: Vec<String>,
}

pub struct Decoder {
    devices: HashMap<[u8; 8], Device>,
    packed_rec_type: String,
    global_tags: Vec<String>,
    metrics: Arc<Metrics>,
}

impl Decoder {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
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
        Decoder {
            devices,
            packed_rec_type: cfg.record.packed_rec_type.clone(),
            global_tags: cfg.record.global_tags.clone(),
            metrics,
        }
    }

    /// `None` when the input holds nothing to send (see [`Input`]).
    pub fn decode(&mut self, input: &Input) -> Option<Record> {
        match input {
            Input::Uplink(up) => Some(self.uplink(up)),
            Input::Radio(_) => {
                self.metrics.count_once("no_lorawan_session", || {
                    "radio frame dropped: LoRaWAN sessions are not supported yet".into()
                });
                None
            }
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
                self.metrics.count_once("unknown_device", || {
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
                    self.metrics.count_once("codec_error", || {
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
