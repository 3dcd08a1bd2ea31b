//! The process's logger: env_logger (`RUST_LOG`, `info` when unset), behind a guard that keeps
//! a dependency's line from carrying what hubgate itself never writes out.

use log::{Log, Metadata, Record};

/// rumqttc's line for a packet its state machine does not take prints the packet whole.
const INVALID_PACKET: &str = "Invalid incoming packet = ";

/// Install the logger; before any other line is logged. A JavaScript worker's lines reach the
/// journal through the agent, which stamps them and marks them as the worker's (`js::relay`):
/// with `js_worker` each line is its level and message alone.
pub fn init(js_worker: bool) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if js_worker {
        builder.format(|out, r| {
            use std::io::Write;
            writeln!(out, "{}: {}", r.level(), r.args())
        });
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Guard(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Forwards every record, but no rumqttc line that holds an MQTT login. rumqttc prints an
/// unexpected packet whole (`Invalid incoming packet = {packet:?}`): a peer that sends
/// hubgate's CONNECT back after a CONNACK would put the password in the log at every
/// reconnect. That line is rewritten to the packet's type; any other rumqttc line with a login
/// in it (a later rumqttc wording it another way) is replaced whole, so the guard holds
/// without knowing the wording. Only enabled rumqttc records are formatted here.
struct Guard<L>(L);

impl<L: Log> Log for Guard<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !record.target().starts_with("rumqttc") || !self.0.enabled(record.metadata()) {
            return self.0.log(record);
        }
        let text = record.args().to_string();
        let rewrite = |args: std::fmt::Arguments| {
            self.0.log(
                &Record::builder()
                    .args(args)
                    .metadata(record.metadata().clone())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            )
        };
        if let Some(packet) = text.strip_prefix(INVALID_PACKET) {
            // The Debug name (`Connect`, `ConnAck`), upper-cased as MQTT names the type.
            let kind = packet
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_uppercase();
            rewrite(format_args!(
                "the broker sent a {kind} packet where none is expected, so the connection is \
                 dropped (its contents are not shown: they may be this client's own CONNECT, \
                 password included)"
            ));
        } else if text.contains("Login {") || text.to_ascii_lowercase().contains("password") {
            rewrite(format_args!(
                "a line of rumqttc's is not shown: it holds an MQTT login (a CONNECT's user \
                 name and password)"
            ));
        } else {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// Warnings and errors logged on this thread while `f` runs. Its logger is the whole lib
/// test binary's (a process has one): it must stay the only logger the lib tests install,
/// a test that needs log lines uses this. Other threads' warnings are not formatted, and
/// one logged while this thread's locals are being destroyed is let go, not a panic.
#[cfg(test)]
pub(crate) fn warnings_of(f: impl FnOnce()) -> Vec<String> {
    thread_local! {
        static LINES: std::cell::RefCell<Option<Vec<String>>> = const {
            std::cell::RefCell::new(None)
        };
    }
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if !self.enabled(r.metadata()) {
                return;
            }
            let _ = LINES.try_with(|lines| {
                if lines.borrow().is_some() {
                    let line = r.args().to_string();
                    if let Some(l) = lines.borrow_mut().as_mut() {
                        l.push(line);
                    }
                }
            });
        }
        fn flush(&self) {}
    }
    static CAPTURE: Capture = Capture;
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    LINES.set(Some(Vec::new()));
    f();
    LINES.take().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;
    use std::sync::Mutex;

    /// A logger that keeps (target, level, text) of each record, enabled at `max` and below.
    struct Capture {
        max: Level,
        lines: Mutex<Vec<(String, Level, String)>>,
    }

    impl Log for Capture {
        fn enabled(&self, metadata: &Metadata) -> bool {
            metadata.level() <= self.max
        }

        fn log(&self, record: &Record) {
            if self.enabled(record.metadata()) {
                self.lines.lock().unwrap().push((
                    record.target().to_string(),
                    record.level(),
                    record.args().to_string(),
                ));
            }
        }

        fn flush(&self) {}
    }

    /// What the guard over a logger enabled at `max` forwards of a record at `level` from
    /// `target` whose text is `text`.
    fn logged(max: Level, target: &str, level: Level, text: &str) -> Vec<(String, Level, String)> {
        let guard = Guard(Capture {
            max,
            lines: Mutex::new(Vec::new()),
        });
        guard.log(
            &Record::builder()
                .target(target)
                .level(level)
                .args(format_args!("{text}"))
                .build(),
        );
        guard.0.lines.into_inner().unwrap()
    }

    const ECHOED: &str =
        "Invalid incoming packet = Connect(Connect { protocol: V4, keep_alive: 30, \
        client_id: \"hubgate-x\", clean_session: false, last_will: None, login: Some(Login { \
        username: \"u\", password: \"s3cr3t-pw\" }) })";

    #[test]
    fn other_lines_pass_unchanged() {
        for (target, level, text) in [
            (
                "hubgate::source::mqtt",
                Level::Info,
                "mqtt: connected, password_file read",
            ),
            (
                "rumqttc::state",
                Level::Error,
                "Unsolicited puback packet: 7",
            ),
            (
                "rumqttc::state",
                Level::Debug,
                "Publish. Topic = a/b, Pkid = 3, Payload Size = 12",
            ),
            ("rumqttc::eventloop", Level::Warn, "Invalid incoming packet"),
        ] {
            assert_eq!(
                logged(Level::Trace, target, level, text),
                [(target.to_string(), level, text.to_string())]
            );
        }
    }

    #[test]
    fn an_echoed_connect_is_named_by_its_type_without_the_login() {
        assert_eq!(
            logged(Level::Info, "rumqttc::state", Level::Error, ECHOED),
            [(
                "rumqttc::state".to_string(),
                Level::Error,
                "the broker sent a CONNECT packet where none is expected, so the connection is \
                 dropped (its contents are not shown: they may be this client's own CONNECT, \
                 password included)"
                    .to_string()
            )]
        );
        let second =
            "Invalid incoming packet = ConnAck(ConnAck { session_present: false, code: Success })";
        let [(_, _, text)] = &logged(Level::Info, "rumqttc::state", Level::Error, second)[..]
        else {
            panic!("not one line");
        };
        assert!(
            text.starts_with("the broker sent a CONNACK packet where none is expected"),
            "{text}"
        );
    }

    /// A login in a line worded otherwise, or from another rumqttc module, is not shown.
    #[test]
    fn any_rumqttc_line_with_a_login_is_replaced() {
        for (target, text) in [
            (
                "rumqttc::state",
                ECHOED.replacen(INVALID_PACKET, "Unexpected packet: ", 1),
            ),
            (
                "rumqttc::eventloop",
                format!("got {}", &ECHOED[INVALID_PACKET.len()..]),
            ),
            // A Debug that leaves the password out still shows a login.
            (
                "rumqttc::state",
                "Connect { client_id: \"hubgate-x\", login: Some(Login { username: \"u\", .. }) }"
                    .to_string(),
            ),
            (
                "rumqttc",
                "credentials: (\"u\", \"s3cr3t-pw\") (Password auth)".to_string(),
            ),
        ] {
            let lines = logged(Level::Trace, target, Level::Warn, &text);
            assert_eq!(
                lines,
                [(
                    target.to_string(),
                    Level::Warn,
                    "a line of rumqttc's is not shown: it holds an MQTT login (a CONNECT's user \
                     name and password)"
                        .to_string()
                )],
                "{text}"
            );
        }
    }

    /// A record at a level the logger does not take is neither formatted nor forwarded.
    #[test]
    fn a_disabled_record_is_not_formatted() {
        struct Counted<'a>(&'a std::cell::Cell<usize>);
        impl std::fmt::Display for Counted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                self.0.set(self.0.get() + 1);
                f.write_str(ECHOED)
            }
        }
        let formatted = std::cell::Cell::new(0);
        let guard = Guard(Capture {
            max: Level::Info,
            lines: Mutex::new(Vec::new()),
        });
        for target in ["rumqttc::state", "hubgate::source::mqtt"] {
            guard.log(
                &Record::builder()
                    .target(target)
                    .level(Level::Debug)
                    .args(format_args!("{}", Counted(&formatted)))
                    .build(),
            );
        }
        assert_eq!(formatted.get(), 0);
        assert!(guard.0.lines.lock().unwrap().is_empty());
        // Enabled, it is formatted once, and rewritten.
        guard.log(
            &Record::builder()
                .target("rumqttc::state")
                .level(Level::Error)
                .args(format_args!("{}", Counted(&formatted)))
                .build(),
        );
        assert_eq!(formatted.get(), 1);
        let lines = guard.0.lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].2.contains("s3cr3t-pw"), "{}", lines[0].2);
    }
}
