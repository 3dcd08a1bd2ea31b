//! Semtech packet forwarder (GWMP) datagrams, as a gateway's forwarder sends them.

/// The gateway EUI the test datagrams carry.
pub const GATEWAY: [u8; 8] = [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0x00, 0x00, 0x01];

/// A GWMP v2 datagram: `token`, `kind` (0: PUSH_DATA, 2: PULL_DATA, ...), [`GATEWAY`], then
/// `json`.
pub fn datagram(token: u16, kind: u8, json: &str) -> Vec<u8> {
    let mut d = vec![2, (token >> 8) as u8, token as u8, kind];
    d.extend_from_slice(&GATEWAY);
    d.extend_from_slice(json.as_bytes());
    d
}
