//! hubgate: LoRaWAN gateway agent. Data flows one way:
//! source -> decode (codec) -> record -> forwarder (spill buffer) -> sink.

pub mod blocking;
pub mod board;
pub mod buffer;
pub mod clock;
pub mod codec;
pub mod config;
pub mod connection_string;
pub mod contain;
pub mod coredump;
pub mod decode;
pub mod doctor;
pub mod files;
pub mod format;
pub mod framing;
pub mod http;
pub mod ids;
pub mod js;
pub mod logger;
pub mod logline;
pub mod lorawan;
pub mod malloc;
pub mod mapping;
pub mod metrics;
pub mod mqtt_url;
pub mod notify;
pub mod pipeline;
pub mod record;
pub mod secret;
pub mod sink;
pub mod source;
pub mod status;
pub mod uplink;

#[cfg(test)]
#[path = "../tests/support/codec_files.rs"]
mod codec_files;
