//! The one way codecs read a payload: bounds-checked reads at absolute offsets.
//!
//! Every read past the end is `CodecError::Truncated` naming the length the read needed,
//! never a panic, so a codec cannot crash on short input even where its own length check is
//! wrong. Offsets are absolute (from the start of the payload), as the format documents give
//! them and as errors report them.
use super::CodecError;

/// A payload and the codec id its errors name.
#[derive(Clone, Copy)]
pub struct Bytes<'a> {
    codec: &'static str,
    p: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(codec: &'static str, p: &'a [u8]) -> Self {
        Bytes { codec, p }
    }

    pub fn len(&self) -> usize {
        self.p.len()
    }

    /// `Truncated` unless the payload has at least `n` bytes.
    pub fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.p.len() < n {
            return Err(self.truncated(n));
        }
        Ok(())
    }

    fn truncated(&self, need: usize) -> CodecError {
        CodecError::Truncated {
            codec: self.codec,
            need,
            got: self.p.len(),
        }
    }

    /// The `n` bytes at `at`.
    pub fn slice(&self, at: usize, n: usize) -> Result<&'a [u8], CodecError> {
        let end = at.saturating_add(n);
        self.p.get(at..end).ok_or_else(|| self.truncated(end))
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.slice(at, N)?);
        Ok(a)
    }

    pub fn u8(&self, at: usize) -> Result<u8, CodecError> {
        self.p
            .get(at)
            .copied()
            .ok_or_else(|| self.truncated(at.saturating_add(1)))
    }

    pub fn i8(&self, at: usize) -> Result<i8, CodecError> {
        Ok(i8::from_be_bytes(self.array(at)?))
    }

    pub fn u16be(&self, at: usize) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(at)?))
    }

    pub fn i16be(&self, at: usize) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array(at)?))
    }

    pub fn u32be(&self, at: usize) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(at)?))
    }

    pub fn i32be(&self, at: usize) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array(at)?))
    }

    pub fn u16le(&self, at: usize) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(at)?))
    }

    pub fn i16le(&self, at: usize) -> Result<i16, CodecError> {
        Ok(i16::from_le_bytes(self.array(at)?))
    }

    pub fn u32le(&self, at: usize) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(at)?))
    }

    /// Unsigned big-endian integer of `n` (≤ 8) bytes, for widths without a Rust type (u24).
    pub fn uint_be(&self, at: usize, n: usize) -> Result<u64, CodecError> {
        let b = self.slice(at, n)?;
        Ok(b.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Unsigned little-endian integer of `n` (≤ 8) bytes.
    pub fn uint_le(&self, at: usize, n: usize) -> Result<u64, CodecError> {
        let b = self.slice(at, n)?;
        Ok(b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Two's-complement big-endian integer of `n` (1..=7) bytes, sign-extended from its top bit.
    pub fn int_be(&self, at: usize, n: usize) -> Result<i64, CodecError> {
        Ok(sign_extend(self.uint_be(at, n)?, 8 * n as u32))
    }
}

/// The low `bits` (1..=63) bits of `raw` as a two's-complement number.
pub fn sign_extend(raw: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &[u8] = &[0x80, 0x01, 0xFF, 0xFE, 0x7F];

    #[test]
    fn fixed_widths_in_both_orders() {
        let b = Bytes::new("t", P);
        assert_eq!(b.u8(0), Ok(0x80));
        assert_eq!(b.i8(0), Ok(-128));
        assert_eq!(b.u16be(0), Ok(0x8001));
        assert_eq!(b.i16be(2), Ok(-2));
        assert_eq!(b.u16le(0), Ok(0x0180));
        assert_eq!(b.i16le(2), Ok(-257));
        assert_eq!(b.u32be(0), Ok(0x8001_FFFE));
        assert_eq!(b.i32be(0), Ok(0x8001_FFFEu32 as i32));
        assert_eq!(b.u32le(1), Ok(0x7FFE_FF01));
        assert_eq!(b.uint_be(1, 3), Ok(0x01FFFE));
        assert_eq!(b.uint_le(1, 3), Ok(0xFEFF01));
        assert_eq!(b.int_be(2, 3), Ok(-(0x01_81)));
        assert_eq!(b.int_be(1, 2), Ok(0x01FF));
        assert_eq!(b.int_be(4, 1), Ok(127));
        assert_eq!(b.slice(1, 2), Ok(&P[1..3]));
        assert_eq!(b.slice(5, 0), Ok(&[][..]));
    }

    #[test]
    fn reads_past_the_end_are_truncated_with_the_length_needed() {
        let b = Bytes::new("t", P);
        let t = |need, got| CodecError::Truncated {
            codec: "t",
            need,
            got,
        };
        assert_eq!(b.u8(5).unwrap_err(), t(6, 5));
        assert_eq!(b.u16be(4).unwrap_err(), t(6, 5));
        assert_eq!(b.u32le(2).unwrap_err(), t(6, 5));
        assert_eq!(b.uint_le(3, 3).unwrap_err(), t(6, 5));
        assert_eq!(b.slice(usize::MAX, 2).unwrap_err(), t(usize::MAX, 5));
        assert_eq!(b.u8(usize::MAX).unwrap_err(), t(usize::MAX, 5));
        assert_eq!(b.need(6).unwrap_err(), t(6, 5));
        assert_eq!(b.need(5), Ok(()));
        assert_eq!(Bytes::new("t", &[]).u8(0).unwrap_err(), t(1, 0));
    }

    #[test]
    fn sign_extension() {
        assert_eq!(sign_extend(0x0FFF_FFFF, 28), -1);
        assert_eq!(sign_extend(0x0800_0000, 28), -(1 << 27));
        assert_eq!(sign_extend(0x07FF_FFFF, 28), (1 << 27) - 1);
        assert_eq!(sign_extend(0xFFFF_FFFF_0000_0001, 29), 1);
    }
}
