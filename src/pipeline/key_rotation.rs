//! Key rotation: the sink's secret file read again on SIGHUP and every [`SECRET_POLL`], and
//! a new sink for the forwarder when it holds another key. SIGHUP also reloads the codecs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::forwarder::NewSink;
use super::{ask_every_hub, provisioner};
use crate::config::{read_secret_file, SinkConfig};
use crate::connection_string::ConnectionString;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::sink::Connection;

/// How often the sink's secret file is checked for a new key.
const SECRET_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// A sink's secret file, watched for a key rotation: an Event Hubs sink's
/// `connection_string_file`, a Kafka sink's `sasl_password_file`. A check reads the file
/// (small: at most 64 KiB) and compares its key with the one in use, rather than looking at
/// its mtime: so a key written after the config read it (during a slow start) is seen at the
/// first check, so is one whose write kept the mtime (`cp -p`, `rsync -a`, a rewrite within
/// one timestamp tick), and a rotation that failed (the file unreadable, the sink not built)
/// is tried again at each check until it goes through. Only a key that differs costs a copy
/// of the sink's config.
struct KeyFile {
    file: PathBuf,
    /// What it holds: the kind of key `in_use` has.
    kind: KeyKind,
    /// The sink's config, with the key in use.
    in_use: SinkConfig,
    /// The last failure, and whether it was logged: each failure once, and a check's only
    /// when the check before failed alike (a file caught between its truncation and its
    /// write is `empty` once, and no error).
    failure: Option<(String, bool)>,
}

impl KeyFile {
    /// The file to watch; none (and no checks) without a `connection_string_file` or
    /// `sasl_password_file`.
    fn of(cfg: &SinkConfig) -> Option<KeyFile> {
        let (file, kind) = match cfg {
            SinkConfig::Eventhubs(eh) => (
                eh.connection_string_file.clone()?,
                KeyKind::ConnectionString,
            ),
            SinkConfig::Kafka(k) => (k.sasl_password_file.clone()?, KeyKind::Password),
            SinkConfig::Stdout(_) => return None,
        };
        Some(KeyFile {
            file,
            kind,
            in_use: cfg.clone(),
            failure: None,
        })
    }

    /// The sink's config with `key`, when that is not the key in use. Every sink and every
    /// key is named, so a new one does not compile until it is placed here.
    fn changed(&self, key: Key) -> Option<SinkConfig> {
        match (&self.in_use, key) {
            (SinkConfig::Eventhubs(eh), Key::ConnectionString(cs)) => {
                other(&eh.connection_string, &cs).then(|| {
                    let mut eh = eh.clone();
                    eh.connection_string = Some(cs);
                    SinkConfig::Eventhubs(eh)
                })
            }
            (SinkConfig::Kafka(k), Key::Password(pw)) => other(&k.sasl_password, &pw).then(|| {
                let mut k = k.clone();
                k.sasl_password = Some(pw);
                SinkConfig::Kafka(k)
            }),
            // Not read for this sink: `kind` is its own (`KeyFile::of`).
            (SinkConfig::Eventhubs(_), Key::Password(_))
            | (SinkConfig::Kafka(_), Key::ConnectionString(_))
            | (SinkConfig::Stdout(_), _) => None,
        }
    }

    /// The sink's config `cfg` is in use now (or was already): failures are over.
    fn in_use(&mut self, cfg: SinkConfig) {
        self.in_use = cfg;
        self.failure = None;
    }

    /// A rotation failed for `reason` (which names no secret); `asked` by SIGHUP, whose
    /// outcome is always logged.
    fn failed(&mut self, reason: String, asked: bool) {
        let (again, logged) = match &self.failure {
            Some((last, logged)) if *last == reason => (true, *logged),
            _ => (false, false),
        };
        let log = asked || (again && !logged);
        if log {
            log::error!("key rotation: {reason}; keeping the current sink");
        }
        self.failure = Some((reason, logged || log));
    }
}

/// What a [`KeyFile`] holds.
#[derive(Clone, Copy)]
enum KeyKind {
    ConnectionString,
    Password,
}

/// A key read from a [`KeyFile`].
enum Key {
    ConnectionString(Secret<ConnectionString>),
    Password(Secret),
}

impl KeyKind {
    /// What a file of this kind holds, for the log.
    fn holds(self) -> &'static str {
        match self {
            KeyKind::ConnectionString => "connection string",
            KeyKind::Password => "SASL password",
        }
    }

    /// The key in `file`. Blocks.
    fn read(self, file: &Path) -> Result<Key, String> {
        Ok(match self {
            KeyKind::ConnectionString => Key::ConnectionString(read_secret_file(file)?),
            KeyKind::Password => Key::Password(read_secret_file(file)?),
        })
    }
}

/// Whether `key` is another key than the one in `slot`.
fn other<T: PartialEq>(slot: &Option<Secret<T>>, key: &Secret<T>) -> bool {
    slot.as_ref().is_none_or(|old| old.expose() != key.expose())
}

/// SIGHUP (`reload`) loads the codec directory again, on the blocking pool. Key rotation: on
/// SIGHUP, and every [`SECRET_POLL`], the sink's secret file (if any: the connection string,
/// the SASL password) is read again ([`KeyFile`]) and, when it holds another key than the
/// sink's, one that passes the start's checks, the forwarder gets a new sink; existing Kafka
/// sessions would otherwise keep the old key alive. Nothing else rebuilds the sink: a new
/// producer reconnects and resends what was in flight. The new sink comes with a hub
/// provisioner of its own, which looks at the hubs of `rec_types` with the new key at once:
/// the old one's refusals and retry waits were earned by the old key. The new sink starts
/// from the sinks' shared `connection` state until its own client reports. Returns once there
/// is nothing left to wait for.
pub(super) async fn reload_on_request(
    sink_cfg: SinkConfig,
    deliveries: crate::sink::Deliveries,
    new_sinks: mpsc::Sender<NewSink>,
    (mut reload, codecs): (mpsc::Receiver<()>, crate::decode::Reloader),
    (metrics, connection): (std::sync::Arc<Metrics>, Connection),
    rec_types: BTreeSet<String>,
) {
    let mut keys = KeyFile::of(&sink_cfg);
    let mut poll = tokio::time::interval(SECRET_POLL);
    poll.tick().await;
    let mut reload_open = true;
    loop {
        let asked = tokio::select! {
            r = reload.recv(), if reload_open => {
                if r.is_none() {
                    reload_open = false;
                    continue;
                }
                log::info!("reload requested");
                let codecs = codecs.clone();
                crate::blocking::run(move || codecs.reload()).await;
                true
            }
            // Nothing to watch, no wake-ups.
            _ = poll.tick(), if keys.is_some() => false,
            else => return,
        };
        let Some(keys) = keys.as_mut() else {
            continue;
        };
        let (file, kind) = (keys.file.clone(), keys.kind);
        let key = crate::blocking::run(move || kind.read(&file)).await;
        let cfg = match key.map(|key| keys.changed(key)) {
            Ok(Some(cfg)) => cfg,
            Ok(None) => {
                if asked {
                    log::info!(
                        "key rotation: the {} is the same; keeping the sink",
                        keys.kind.holds()
                    );
                }
                keys.failure = None;
                continue;
            }
            Err(e) => {
                keys.failed(e, asked);
                continue;
            }
        };
        if !asked {
            log::info!("{} file changed", keys.kind.holds());
        }
        // The rules a start holds the key to (`hub_mode = "single"` needs the connection
        // string's EntityPath): a rotation that broke one would send records where nobody
        // reads them, and the next start would refuse the file.
        if let Err((at, reason)) = crate::sink::check(&cfg) {
            let reason = format!("{}: {at}: {reason}", keys.file.display());
            keys.failed(reason, asked);
            continue;
        }
        // The slot first: a built producer must never be dropped here (dropping one blocks
        // while it winds down), not even when the forwarder is gone.
        let Ok(slot) = new_sinks.reserve().await else {
            return;
        };
        // Its thread ends with the last handle: at once if the sink is not built.
        let (parks_tx, parks) = mpsc::unbounded_channel();
        let hubs = provisioner(&cfg, parks_tx);
        let built = {
            let (cfg, deliveries, metrics) = (cfg.clone(), deliveries.clone(), metrics.clone());
            let (hubs, connection) = (hubs.clone(), connection.clone());
            crate::blocking::run(move || {
                crate::sink::open(&cfg, deliveries, metrics, hubs, connection)
            })
            .await
        };
        match built {
            Ok(sink) => {
                slot.send(NewSink { sink, parks });
                ask_every_hub(&hubs, &cfg, &rec_types);
                keys.in_use(cfg);
            }
            Err(e) => keys.failed(e.to_string(), asked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A check of `keys`, as the loop makes it: the sink's config with the file's key, when
    /// that is not the key in use.
    fn check(keys: &KeyFile) -> Result<Option<SinkConfig>, String> {
        Ok(keys.changed(keys.kind.read(&keys.file)?))
    }

    fn connection_string(key: &str) -> String {
        format!("Endpoint=sb://ns.example:9093/;SharedAccessKeyName=send;SharedAccessKey={key}")
    }

    /// The watch of `dir`'s config, whose connection string file holds `key`; and that file.
    fn key_file(dir: &Path, key: &str) -> (KeyFile, std::path::PathBuf) {
        let secret = dir.join("eventhubs.secret");
        std::fs::write(&secret, connection_string(key)).unwrap();
        let config = dir.join("hubgate.toml");
        let text = format!(
            "[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"eventhubs\"\nconnection_string_file = \"{}\"\n",
            secret.display()
        );
        std::fs::write(&config, text).unwrap();
        let cfg = Config::load(&config).unwrap();
        (KeyFile::of(&cfg.sink).unwrap(), secret)
    }

    /// A check compares the key itself: one written after the config read the file is a
    /// change, even when the write kept the file's mtime (`cp -p`, one timestamp tick).
    #[test]
    fn a_key_file_change_is_its_key_not_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, secret) = key_file(dir.path(), "b2xk");
        assert_eq!(keys.kind.holds(), "connection string");
        assert!(check(&keys).unwrap().is_none());
        let mtime = std::fs::metadata(&secret).unwrap().modified().unwrap();
        std::fs::write(&secret, connection_string("bmV3")).unwrap();
        let file = std::fs::File::options().write(true).open(&secret).unwrap();
        file.set_modified(mtime).unwrap();
        let new = check(&keys).unwrap().expect("the new key is a change");
        let SinkConfig::Eventhubs(eh) = new else {
            panic!("an Event Hubs sink's key file gave another sink: {new:?}");
        };
        let cs = eh.connection_string.expect("the new connection string");
        assert!(*cs.expose() == ConnectionString::parse(&connection_string("bmV3")).unwrap());
    }

    /// The watch of `dir`'s config, a Kafka sink whose `sasl_password_file` holds `password`;
    /// and that file.
    fn sasl_password_file(dir: &Path, password: &str) -> (KeyFile, std::path::PathBuf) {
        let secret = dir.join("kafka.secret");
        std::fs::write(&secret, password).unwrap();
        let config = dir.join("hubgate.toml");
        let text = format!(
            "[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"kafka\"\nbrokers = \"kafka.example:9093\"\n\
             security_protocol = \"sasl_ssl\"\nsasl_username = \"hubgate\"\n\
             sasl_password_file = \"{}\"\n",
            secret.display()
        );
        std::fs::write(&config, text).unwrap();
        let cfg = Config::load(&config).unwrap();
        (KeyFile::of(&cfg.sink).expect("a watch"), secret)
    }

    /// The librdkafka `sasl.password` of `cfg`: what the producer, the hub provisioner and
    /// the probe log in with.
    fn logs_in_with(cfg: &SinkConfig) -> String {
        let client = crate::sink::kafka_client_config(cfg).unwrap().unwrap();
        client.get("sasl.password").unwrap().to_string()
    }

    /// A Kafka sink's `sasl_password_file` is watched like a connection string file: a new
    /// password there is a change, the sink's config with it, whose librdkafka settings log
    /// in with it (and whose Debug output does not show it); the same password is none.
    #[test]
    fn a_new_sasl_password_in_its_file_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (mut keys, secret) = sasl_password_file(dir.path(), "old-pa55word\n");
        assert_eq!(keys.kind.holds(), "SASL password");
        assert_eq!(logs_in_with(&keys.in_use), "old-pa55word");
        assert!(check(&keys).unwrap().is_none());
        std::fs::write(&secret, "new-pa55word\n").unwrap();
        let new = check(&keys).unwrap().expect("the new password is a change");
        assert_eq!(logs_in_with(&new), "new-pa55word");
        let shown = format!("{new:?}");
        assert!(!shown.contains("pa55word"), "{shown}");
        keys.in_use(new);
        assert!(check(&keys).unwrap().is_none());
        assert_eq!(logs_in_with(&keys.in_use), "new-pa55word");
    }

    /// A SASL password file that cannot be read, or is empty (caught between its truncation
    /// and its write), is a failed check whose reason names the file, not the password; the
    /// password in use stays, and the next check after the write sees the new one.
    #[test]
    fn an_empty_or_missing_sasl_password_file_keeps_the_password_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (mut keys, secret) = sasl_password_file(dir.path(), "old-pa55word");
        std::fs::write(&secret, "").unwrap();
        let empty = check(&keys).expect_err("an empty file is no password");
        assert_eq!(empty, format!("the file {} is empty", secret.display()));
        keys.failed(empty, true);
        std::fs::remove_file(&secret).unwrap();
        let missing = check(&keys).expect_err("a missing file is no password");
        assert!(
            missing.starts_with(&format!("cannot read secret file {}: ", secret.display())),
            "{missing}"
        );
        assert!(!missing.contains("pa55word"), "{missing}");
        assert_eq!(logs_in_with(&keys.in_use), "old-pa55word");
        std::fs::write(&secret, "new-pa55word").unwrap();
        let new = check(&keys).unwrap().expect("the new password");
        assert_eq!(logs_in_with(&new), "new-pa55word");
    }

    /// A rotation that failed (the sink not built, the check refused it) leaves the old key
    /// in use: each check reports the new one again until one goes through. Its failure is
    /// logged once: at the second check that meets it (a file caught half-written is no
    /// error), or at once on SIGHUP.
    #[test]
    fn a_failed_rotation_is_tried_again_and_logged_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut keys, secret) = key_file(dir.path(), "b2xk");
        std::fs::write(&secret, connection_string("bmV3")).unwrap();
        let new = check(&keys).unwrap().expect("the new key");
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), false)));
        assert!(
            check(&keys).unwrap().is_some(),
            "the failed rotation is not tried again"
        );
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), true)));
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), true)));
        keys.failed("sink: other".into(), true);
        assert_eq!(keys.failure, Some(("sink: other".into(), true)));
        keys.in_use(new);
        assert_eq!(keys.failure, None);
        assert!(check(&keys).unwrap().is_none());
    }

    /// With no key file there is nothing to check: only SIGHUP wakes the loop (no wake-up
    /// every `SECRET_POLL`), and once SIGHUP is gone the loop ends. So for a sink without a
    /// secret, and for one whose secret is written in the config: a Kafka sink's inline
    /// `sasl_password`, an Event Hubs sink's inline `connection_string`.
    #[tokio::test]
    async fn without_a_key_file_only_sighup_wakes_the_reload_loop() {
        let sinks = [
            "type = \"stdout\"".to_string(),
            "type = \"kafka\"\nbrokers = \"kafka.example:9093\"\n\
             security_protocol = \"sasl_ssl\"\nsasl_username = \"hubgate\"\n\
             sasl_password = \"pa55word\""
                .to_string(),
            format!(
                "type = \"eventhubs\"\nconnection_string = \"{}\"",
                connection_string("b2xk")
            ),
        ];
        for sink in sinks {
            let cfg = Config::parse(&format!("[sink]\n{sink}\n")).unwrap();
            let metrics = Metrics::new();
            let codecs = crate::decode::Decoder::new(&cfg, metrics.clone()).reloader();
            let (_, reload) = mpsc::channel(1);
            let (deliveries, _) = mpsc::unbounded_channel();
            let (new_sinks, _sinks) = mpsc::channel(1);
            let task = reload_on_request(
                cfg.sink,
                deliveries,
                new_sinks,
                (reload, codecs),
                (metrics.clone(), Connection::new(metrics)),
                BTreeSet::new(),
            );
            tokio::time::timeout(SECRET_POLL / 2, task)
                .await
                .unwrap_or_else(|_| panic!("the loop went on with nothing to wait for: {sink}"));
        }
    }
}
