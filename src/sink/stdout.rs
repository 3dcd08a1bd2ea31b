//! JSON lines on standard output: the demo sink, and a way to pipe records elsewhere.

use std::io::Write;

use super::{Deliveries, Delivery, Sink, SinkError};
use crate::record::Record;

pub struct StdoutSink {
    pretty: bool,
    deliveries: Deliveries,
}

impl StdoutSink {
    pub fn new(pretty: bool, deliveries: Deliveries) -> Self {
        StdoutSink { pretty, deliveries }
    }
}

impl Sink for StdoutSink {
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        let written = if self.pretty {
            let v: serde_json::Value = serde_json::from_str(&rec.body).unwrap_or_default();
            serde_json::to_writer_pretty(&mut out, &v)
                .map_err(std::io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
        } else {
            out.write_all(rec.body.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
        };
        let result = written
            .and_then(|_| out.flush())
            .map_err(|e| SinkError::Retry(format!("stdout: {e}")));
        let _ = self.deliveries.send(Delivery { seq, result });
        Ok(())
    }

    fn flush(&mut self, _timeout: std::time::Duration) {}
}
