//! Serial framings as a sender writes them (the deframers in `hubgate::framing` read them):
//! content plus its CRC-16 trailer, SLIP- or COBS-encoded, or a `lines-hex` line.

use hubgate::framing::crc::crc16;

pub fn with_crc(content: &[u8]) -> Vec<u8> {
    let mut v = content.to_vec();
    v.extend_from_slice(&crc16(content).to_be_bytes());
    v
}

pub fn slip(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC0];
    for &b in raw {
        match b {
            0xC0 => out.extend_from_slice(&[0xDB, 0xDC]),
            0xDB => out.extend_from_slice(&[0xDB, 0xDD]),
            _ => out.push(b),
        }
    }
    out.push(0xC0);
    out
}

pub fn cobs(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    let (mut code_at, mut code) = (0, 1u8);
    for &b in raw {
        if b != 0 {
            out.push(b);
            code += 1;
        }
        if b == 0 || code == 0xFF {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        }
    }
    out[code_at] = code;
    out.push(0);
    out
}

pub fn line(content: &[u8]) -> Vec<u8> {
    format!("radio_rx  {}\r\n", hex::encode_upper(content)).into_bytes()
}
