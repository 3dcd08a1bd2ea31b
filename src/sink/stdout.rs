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

impl StdoutSink {
    /// `body` and its newline in `line`, pretty-printed if asked for.
    fn fill_line(&mut self, body: &str) {
        self.line.clear();
        // A body serde_json cannot read (nested too deep) goes out as it is, not as `null`.
        let pretty = self
            .pretty
            .then(|| serde_json::from_str::<serde_json::Value>(body).ok())
            .flatten();
        match pretty {
            // Writing a Value into a Vec cannot fail.
            Some(v) => drop(serde_json::to_writer_pretty(&mut self.line, &v)),
            None => self.line.extend_from_slice(body.as_bytes()),
        }
        self.line.push(b'\n');
    }
}

impl Sink for StdoutSink {
    fn send(&mut self, seq: u64, rec: &Record) -> Result<(), SinkError> {
        self.fill_line(&rec.body);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_prints_what_it_can_read_and_the_rest_as_it_is() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut sink = StdoutSink::new(true, tx);
        sink.fill_line(r#"{"a":[1]}"#);
        assert_eq!(sink.line, b"{\n  \"a\": [\n    1\n  ]\n}\n");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        sink.fill_line(&deep);
        assert_eq!(sink.line, format!("{deep}\n").as_bytes());
    }
}
