//! Built without the `js` feature: no engine, so no codec can be loaded.

use super::JsError;

/// A codec that cannot exist in this build.
pub enum Sandbox {}

impl Sandbox {
    pub fn load(_name: &str, _source: &str) -> Result<Sandbox, JsError> {
        Err(JsError::NotBuilt)
    }

    pub fn load_again(_name: &str, _source: &str) -> Result<Sandbox, JsError> {
        Err(JsError::NotBuilt)
    }

    pub fn decode(
        &self,
        _fport: Option<u8>,
        _bytes: &[u8],
        _time_ms: f64,
    ) -> Result<String, JsError> {
        match *self {}
    }

    pub fn in_doubt(&self) -> bool {
        match *self {}
    }
}
