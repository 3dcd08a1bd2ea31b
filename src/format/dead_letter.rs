//! A dead letter: what is kept of a message hubgate gave up on.

use std::time::SystemTime;

use super::Excerpt;

/// What is kept of a message hubgate gave up on: enough to find and judge it, not all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub source: &'static str,
    /// Why it was given up on (one line).
    pub reason: String,
    /// The MQTT topic it came on, or the serial device it came from, if any (cut like an
    /// [`Excerpt`]).
    pub topic: Option<String>,
    pub size: usize,
    pub sha256: [u8; 32],
    /// Its first [`DeadLetter::HEAD`] bytes.
    pub head: Vec<u8>,
    pub received: SystemTime,
}

impl DeadLetter {
    pub const HEAD: usize = 256;

    pub fn new(
        source: &'static str,
        reason: String,
        topic: Option<&str>,
        message: &[u8],
        received: SystemTime,
    ) -> Self {
        use sha2::Digest;
        DeadLetter {
            source,
            reason,
            topic: topic.map(|t| Excerpt::from(t).to_string()),
            size: message.len(),
            sha256: sha2::Sha256::digest(message).into(),
            head: message[..message.len().min(Self::HEAD)].to_vec(),
            received,
        }
    }
}
