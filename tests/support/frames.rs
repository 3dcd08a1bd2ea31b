//! Serial framings as a sender writes them (the deframers in `hubgate::framing` read them):
//! content plus its CRC-16 trailer, then SLIP- or COBS-encoded (`support::stuffing`), or a
//! `lines-hex` line.

use hubgate::framing::crc::crc16;

pub fn with_crc(content: &[u8]) -> Vec<u8> {
    let mut v = content.to_vec();
    v.extend_from_slice(&crc16(content).to_be_bytes());
    v
}

pub fn line(content: &[u8]) -> Vec<u8> {
    format!("radio_rx  {}\r\n", hex::encode_upper(content)).into_bytes()
}
