//! CRC-16/CCITT-FALSE, the checksum that ends every `slip` and `cobs` frame.
//!
//! Parameters (the "CRC-16/CCITT-FALSE" entry of the CRC RevEng catalogue, also called
//! CRC-16/IBM-3740 or CRC-16/AUTOSAR): width 16, poly 0x1021, init 0xFFFF, no input or
//! output reflection, xorout 0x0000, check value ("123456789") 0x29B1. On the wire the CRC
//! of the frame content follows the content, big-endian (high byte first), *before* SLIP
//! escaping or COBS encoding.

const POLY: u16 = 0x1021;

const TABLE: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut b = 0;
        while b < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ POLY
            } else {
                c << 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-16/CCITT-FALSE of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF, |crc, &b| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// Check the big-endian CRC trailer of `frame`; returns the length of the content before it.
pub fn check(frame: &[u8]) -> Result<usize, super::FrameError> {
    let Some(n) = frame.len().checked_sub(2) else {
        return Err(super::FrameError::Malformed);
    };
    let want = u16::from_be_bytes([frame[n], frame[n + 1]]);
    if crc16(&frame[..n]) == want {
        Ok(n)
    } else {
        Err(super::FrameError::Crc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    #[test]
    fn trailer_is_big_endian() {
        let mut f = b"123456789".to_vec();
        f.extend_from_slice(&[0x29, 0xB1]);
        assert_eq!(check(&f), Ok(9));
        f.truncate(9);
        f.extend_from_slice(&[0xB1, 0x29]);
        assert_eq!(check(&f), Err(super::super::FrameError::Crc));
        assert_eq!(check(&[0x29]), Err(super::super::FrameError::Malformed));
    }
}
