//! Key rotation: the sink's secret file read again on SIGHUP and every [`SECRET_POLL`], and
//! a new sink for the forwarder when it holds another key. SIGHUP also reloads the codecs.

use std::collections::BTreeSet;

use tokio::sync::mpsc;

use super::forwarder::NewSink;
use super::{ask_every_hub, provisioner};
use crate::config::SinkConfig;
use crate::metrics::Metrics;

/// How often the connection string file is checked for a new key.
const SECRET_POLL: std::time::Duration = std::time::Duration::from_secs(10);

type ConnectionSecret = crate::secret::Secret<crate::connection_string::ConnectionString>;

/// An Event Hubs sink's `connection_string_file`, watched for a key rotation. A check reads
/// the file (small: at most 64 KiB) and compares its connection string with the one in use,
/// rather than looking at its mtime: so a key written after the config read it (during a slow
/// start) is seen at the first check, so is one whose write kept the mtime (`cp -p`, `rsync
/// -a`, a rewrite within one timestamp tick), and a rotation that failed (the file unreadable,
/// the sink not built) is tried again at each check until it goes through.
#[derive(Clone)]
struct KeyFile {
    file: std::path::PathBuf,
    in_use: ConnectionSecret,
    /// The last failure, and whether it was logged: each failure once, and a check's only
    /// when the check before failed alike (a file caught between its truncation and its
    /// write is `empty` once, and no error).
    failure: Option<(String, bool)>,
}

impl KeyFile {
    /// The file to watch; none (and no checks) without an Event Hubs `connection_string_file`.
    fn of(cfg: &crate::config::SinkConfig) -> Option<KeyFile> {
        let crate::config::SinkConfig::Eventhubs(eh) = cfg else {
            return None;
        };
        Some(KeyFile {
            file: eh.connection_string_file.clone()?,
            in_use: eh.connection_string.clone()?,
            failure: None,
        })
    }

    /// The file's connection string when it is not the one in use. Blocks (reads the file).
    fn changed(&self) -> Result<Option<ConnectionSecret>, String> {
        let key = crate::config::read_secret_file(&self.file)?;
        Ok((key.expose() != self.in_use.expose()).then_some(key))
    }

    /// The connection string is in use now (or was already): failures are over.
    fn in_use(&mut self, key: ConnectionSecret) {
        self.in_use = key;
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

/// SIGHUP (`reload`) loads the codec directory again, on the blocking pool. Key rotation: on
/// SIGHUP, and every [`SECRET_POLL`], the connection string file (if any) is read again
/// ([`KeyFile`]) and, when it holds another connection string than the sink's, one that
/// passes the start's checks, the forwarder gets a new sink; existing Kafka sessions would
/// otherwise keep the old key alive. Nothing else rebuilds the sink: a new producer
/// reconnects and resends what was in flight. The new sink comes with a hub provisioner of
/// its own, which looks at the hubs of `rec_types` with the new key at once: the old one's
/// refusals and retry waits were earned by the old key. Returns once there is nothing left
/// to wait for.
pub(super) async fn reload_on_request(
    sink_cfg: SinkConfig,
    deliveries: crate::sink::Deliveries,
    new_sinks: mpsc::Sender<NewSink>,
    (mut reload, codecs): (mpsc::Receiver<()>, crate::decode::Reloader),
    metrics: std::sync::Arc<Metrics>,
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
        let watched = keys.clone();
        let changed = crate::blocking::run(move || watched.changed()).await;
        let key = match changed {
            Ok(Some(key)) => key,
            Ok(None) => {
                if asked {
                    log::info!("key rotation: the connection string is the same; keeping the sink");
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
            log::info!("connection string file changed");
        }
        let mut cfg = sink_cfg.clone();
        if let SinkConfig::Eventhubs(eh) = &mut cfg {
            eh.connection_string = Some(key.clone());
        }
        // The rules a start holds the connection string to (`hub_mode = "single"` needs its
        // EntityPath): a rotation that broke one would send records where nobody reads them,
        // and the next start would refuse the file.
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
            let hubs = hubs.clone();
            crate::blocking::run(move || crate::sink::open(&cfg, deliveries, metrics, hubs)).await
        };
        match built {
            Ok(sink) => {
                slot.send(NewSink { sink, parks });
                keys.in_use(key);
                ask_every_hub(&hubs, &cfg, &rec_types);
            }
            Err(e) => keys.failed(e.to_string(), asked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::connection_string::ConnectionString;
    use std::path::Path;

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
        assert!(keys.changed().unwrap().is_none());
        let mtime = std::fs::metadata(&secret).unwrap().modified().unwrap();
        std::fs::write(&secret, connection_string("bmV3")).unwrap();
        let file = std::fs::File::options().write(true).open(&secret).unwrap();
        file.set_modified(mtime).unwrap();
        let new = keys.changed().unwrap().expect("the new key is a change");
        assert!(*new.expose() == ConnectionString::parse(&connection_string("bmV3")).unwrap());
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
        let new = keys.changed().unwrap().expect("the new key");
        keys.failed("sink: no CA".into(), false);
        assert_eq!(keys.failure, Some(("sink: no CA".into(), false)));
        assert!(
            keys.changed().unwrap().is_some(),
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
        assert!(keys.changed().unwrap().is_none());
    }

    /// With no connection string file there is nothing to check: only SIGHUP wakes the loop
    /// (no wake-up every `SECRET_POLL`), and once SIGHUP is gone the loop ends.
    #[tokio::test]
    async fn without_a_key_file_only_sighup_wakes_the_reload_loop() {
        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
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
            metrics,
            BTreeSet::new(),
        );
        tokio::time::timeout(SECRET_POLL / 2, task)
            .await
            .expect("the loop went on with nothing to wait for");
    }
}
