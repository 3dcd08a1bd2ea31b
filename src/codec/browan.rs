//! Browan / Tabs family (reference/codecs.md §1).
use super::{CodecError, Decoded};

pub fn tbhh100(_fport: Option<u8>, _p: &[u8]) -> Result<Decoded, CodecError> {
    todo!()
}
pub fn tbhv110(_fport: Option<u8>, _p: &[u8]) -> Result<Decoded, CodecError> {
    todo!()
}
pub fn tbms100(_fport: Option<u8>, _p: &[u8]) -> Result<Decoded, CodecError> {
    todo!()
}
pub fn tbdw100(_fport: Option<u8>, _p: &[u8]) -> Result<Decoded, CodecError> {
    todo!()
}
pub fn tbwl100(_fport: Option<u8>, _p: &[u8]) -> Result<Decoded, CodecError> {
    todo!()
}
