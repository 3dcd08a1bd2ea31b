//! The process's logger: env_logger (`RUST_LOG`, `info` when unset), behind a guard that keeps
//! a dependency's line from carrying what hubgate itself never writes out.

use log::{Log, Metadata, Record};

/// rumqttc's own line for a packet a client never receives prints the packet whole.
const RUMQTTC_STATE: &str = "rumqttc::state";
const INVALID_PACKET: &str = "Invalid incoming packet = ";

/// Install the logger; before any other line is logged.
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Guard(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Forwards every record, but rewrites rumqttc's `Invalid incoming packet = {packet:?}`: a
/// peer that sends hubgate's CONNECT back (after a CONNACK) would otherwise put the MQTT
/// password in the log at every reconnect. The rewritten line names the packet's type only.
pub struct Guard<L>(pub L);

impl<L: Log> Log for Guard<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.target() != RUMQTTC_STATE || !self.0.enabled(record.metadata()) {
            return self.0.log(record);
        }
        let text = record.args().to_string();
        let Some(packet) = text.strip_prefix(INVALID_PACKET) else {
            return self.0.log(record);
        };
        let kind: String = packet
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        self.0.log(
            &Record::builder()
                .args(format_args!(
                    "the broker sent a {kind} packet, which a client never receives \
                     (its contents are not shown: they may be this client's own CONNECT, password included)"
                ))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush()
    }
}
