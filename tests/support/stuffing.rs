//! SLIP and COBS byte stuffing as a sender does it: the one encoder of each, for the
//! integration tests (through `support::frames`) and for the deframers' unit tests in
//! `src/framing`, which include this file. Plain std, so it compiles in both crates.

/// SLIP (RFC 1055): END, `raw` with END and ESC escaped, END.
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

/// COBS (Cheshire & Baker) plus the 0x00 delimiter.
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
