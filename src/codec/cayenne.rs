//! Cayenne LPP (reference/codecs.md §3).
use super::{CodecError, Decoded};

pub fn decode(_p: &[u8]) -> Result<Decoded, CodecError> {
    todo!()
}
