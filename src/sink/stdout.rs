//! JSON lines on standard output: the demo sink, and a way to pipe records elsewhere.

use std::io::Write;

use super::{Deliveries, Delivery, Sink, SinkError};
use crate::record::Record;

pub struct StdoutSink {
    pretty: bool,
    deliveries: Deliveries,
    /// One record's line, reused: it goes out in one `write` (stdout is line-buffered, so a
    /// body and its newline written apart can cost two system calls).
    line: Vec<u8>,
}

impl StdoutSink {
    pub fn new(pretty: bool, deliveries: Deliveries) -> Self {
        StdoutSink {
            pretty,
            deliveries,
            line: Vec::new(),
        }
    }
}

impl Sink for StdoutSink {
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        self.line.clear();
        if self.pretty {
            let v: serde_json::Value = serde_json::from_str(&rec.body).unwrap_or_default();
            // Writing a Value into a Vec cannot fail.
            let _ = serde_json::to_writer_pretty(&mut self.line, &v);
        } else {
            self.line.extend_from_slice(rec.body.as_bytes());
        }
        self.line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let result = out
            .write_all(&self.line)
            .and_then(|_| out.flush())
            .map(|()| self.line.len() as u64)
            .map_err(|e| SinkError::Retry(format!("stdout: {e}")));
        let _ = self.deliveries.send(Delivery { seq, result });
        Ok(())
    }

    fn flush(&mut self, _timeout: std::time::Duration) {}
}
