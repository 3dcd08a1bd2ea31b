//! Built without the `js` feature: no engine, so no codec can be loaded.

use std::time::SystemTime;

use super::{JsError, Output};

/// A codec that cannot exist in this build.
pub enum JsCodec {}

impl JsCodec {
    pub fn load(_name: &str, _source: &str) -> Result<JsCodec, JsError> {
        Err(JsError::NotBuilt)
    }

    pub fn decode(
        &self,
        _fport: Option<u8>,
        _bytes: &[u8],
        _time: SystemTime,
    ) -> Result<Output, JsError> {
        match *self {}
    }

    pub fn memory_used(&self) -> u64 {
        match *self {}
    }
}
