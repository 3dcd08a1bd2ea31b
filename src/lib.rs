//! hubgate: LoRaWAN gateway agent. Data flows one way:
//! source -> decode (lorawan, codec) -> record -> buffer (spill) -> sink.

pub mod codec;
