//! What an MQTT source's persistent session at the broker holds of its subscriptions, kept in
//! a file in the buffer directory (one per broker and client id) so that a restart knows it.
//!
//! A SUBSCRIBE to a filter the session holds already replaces the subscription, and the
//! broker sends the filter's retained messages again (MQTT 3.1.1, 3.8.4): each would make a
//! record again, and after a restart the de-duplication window does not know the first. So a
//! CONNACK that finds the session present asks only for what the session does not hold (a
//! new filter, or the same at another QoS) and unsubscribes from filters no longer
//! configured, which would otherwise keep delivering; with no session present every filter is
//! asked for (its retained messages then come once, as for any new subscription).
//!
//! What is known is never more than the broker holds: a filter counts as held once a SUBACK
//! granted it, and only while no CONNECT may have given the source a new, empty session
//! unseen (a broker that lost the session makes one at the CONNECT). So before each CONNECT
//! the file is marked unconfirmed, on disk before the CONNECT goes; a start that finds it so
//! trusts none of its filters, and a connection attempt that may have sent its CONNECT but saw
//! no CONNACK forgets them. A filter to leave stays listed until the broker's UNSUBACK.
//!
//! Each change is written to a new file, synced, and renamed over the old one, the directory
//! synced: a power cut leaves one or the other whole. A file that cannot be read counts as
//! none; one that cannot be written has the source ask for every filter at each CONNACK.

use std::path::{Path, PathBuf};

use rumqttc::QoS;
use serde::{Deserialize, Serialize};

/// A subscription the session holds: its filter, the QoS asked for and the one granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub filter: String,
    pub qos: u8,
    pub granted: u8,
}

/// The file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    broker: String,
    client_id: String,
    /// Written at a CONNACK or after it, before any later CONNECT: `subscribed` is held.
    confirmed: bool,
    subscribed: Vec<Granted>,
    leaving: Vec<String>,
}

/// What to do at a CONNACK.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The session holds the configured filter: not asked for again.
    pub held: Option<Granted>,
    /// Filters to unsubscribe from.
    pub leave: Vec<String>,
}

pub struct Held {
    file: Option<PathBuf>,
    /// The configured filter and QoS.
    filter: String,
    qos: u8,
    /// Of the session at the broker, as far as is known.
    subscribed: Vec<Granted>,
    /// Filters no longer configured that the session may hold, until an UNSUBACK.
    leaving: Vec<String>,
    /// What the file holds (`None`: no file, or it could not be read).
    on_disk: Option<Saved>,
    broker: String,
    client_id: String,
    /// A write failed: nothing is taken as held any more.
    broken: bool,
}

/// The file of the session of `client_id` at `broker` in directory `dir`.
pub fn file_in(dir: &Path, broker: &str, client_id: &str) -> PathBuf {
    use sha2::Digest;
    let key = sha2::Sha256::digest(format!("{broker}\n{client_id}"));
    dir.join(format!("mqtt-session-{}", hex::encode(&key[..8])))
}

fn qos_code(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

impl Held {
    /// What `file` says of the session of `client_id` at `broker`, whose configured filter is
    /// `filter` at `qos`; `None`: nothing is kept (every CONNACK asks for the filter).
    pub async fn load(
        file: Option<PathBuf>,
        broker: &str,
        client_id: &str,
        filter: &str,
        qos: QoS,
    ) -> Held {
        let read = match &file {
            Some(path) => {
                let path = path.clone();
                crate::blocking::run(move || std::fs::read(&path)).await
            }
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        let on_disk = match read {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) if s.broker == broker && s.client_id == client_id => Some(s),
                Ok(_) => None,
                Err(e) => {
                    log::warn!(
                        "mqtt: {} cannot be read ({e}): every subscription is asked for again",
                        file.as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    );
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!(
                    "mqtt: {}: {e}: every subscription is asked for again",
                    file.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
                None
            }
        };
        let mut held = Held {
            file,
            filter: filter.to_string(),
            qos: qos_code(qos),
            subscribed: Vec::new(),
            leaving: Vec::new(),
            on_disk: on_disk.clone(),
            broker: broker.to_string(),
            client_id: client_id.to_string(),
            broken: false,
        };
        if let Some(s) = on_disk {
            held.leaving = s.leaving;
            held.subscribed = s.subscribed;
            if !s.confirmed {
                held.forget();
            }
        }
        held
    }

    /// A CONNECT may have gone without its CONNACK seen: the session may be a new one that
    /// holds nothing. What it held before is left, unless configured.
    pub fn forget(&mut self) {
        for g in std::mem::take(&mut self.subscribed) {
            if g.filter != self.filter && !self.leaving.contains(&g.filter) {
                self.leaving.push(g.filter);
            }
        }
    }

    /// Before a CONNECT: the file no longer vouches for the session until the CONNACK.
    pub async fn connecting(&mut self) {
        self.save(false).await;
    }

    /// At a CONNACK: what to ask for; the file vouches for what the session now holds.
    pub async fn connected(&mut self, session_present: bool) -> Plan {
        if !session_present {
            // A new session: it holds nothing, and has nothing to leave.
            self.subscribed.clear();
            self.leaving.clear();
        }
        if self.broken {
            self.forget();
        }
        let (filter, qos) = (&self.filter, self.qos);
        for g in &self.subscribed {
            if g.filter != *filter && !self.leaving.contains(&g.filter) {
                self.leaving.push(g.filter.clone());
            }
        }
        self.subscribed
            .retain(|g| g.filter == *filter && g.qos == qos);
        // Configured again before the broker confirmed leaving it: asked for instead.
        self.leaving.retain(|f| f != filter);
        self.save(true).await;
        Plan {
            held: self.subscribed.first().cloned(),
            leave: self.leaving.clone(),
        }
    }

    /// A SUBACK granted the configured filter at `granted`.
    pub async fn subscribed(&mut self, granted: QoS) {
        self.subscribed = vec![Granted {
            filter: self.filter.clone(),
            qos: self.qos,
            granted: qos_code(granted),
        }];
        self.save(true).await;
    }

    /// An UNSUBACK for `filter`.
    pub async fn unsubscribed(&mut self, filter: &str) {
        self.leaving.retain(|f| f != filter);
        self.save(true).await;
    }

    /// Write what is known, `confirmed` or not, unless the file holds it already.
    async fn save(&mut self, confirmed: bool) {
        let Some(path) = self.file.clone() else {
            return;
        };
        if self.broken {
            return;
        }
        let saved = Saved {
            broker: self.broker.clone(),
            client_id: self.client_id.clone(),
            confirmed,
            subscribed: self.subscribed.clone(),
            leaving: self.leaving.clone(),
        };
        if self.on_disk.as_ref() == Some(&saved) {
            return;
        }
        let bytes = serde_json::to_vec(&saved).expect("plain data");
        let written = crate::blocking::run(move || {
            let done = write(&path, &bytes);
            if done.is_err() {
                // What it said may be wrong from now on: better none.
                let _ = std::fs::remove_file(&path);
            }
            done
        })
        .await;
        match written {
            Ok(()) => self.on_disk = Some(saved),
            Err(e) => {
                self.broken = true;
                self.forget();
                log::error!(
                    "mqtt: cannot write {}: {e}; every subscription is asked for at each connect \
                     (the broker then sends its retained messages again)",
                    self.file.as_ref().expect("a file").display()
                );
            }
        }
    }
}

/// Replace `path` with `bytes`, durably: a new file, synced, renamed over it, the directory
/// synced.
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut partial = path.as_os_str().to_owned();
    partial.push(".new");
    let partial = PathBuf::from(partial);
    let mut f = std::fs::File::create(&partial)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&partial, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str = "broker:1883";

    async fn held(dir: &Path, filter: &str) -> Held {
        let file = file_in(dir, BROKER, "c");
        Held::load(Some(file), BROKER, "c", filter, QoS::AtLeastOnce).await
    }

    fn granted(filter: &str) -> Option<Granted> {
        Some(Granted {
            filter: filter.into(),
            qos: 1,
            granted: 1,
        })
    }

    /// A filter granted and confirmed at a CONNACK is held for the next start's CONNACK that
    /// finds the session present; not for one that finds none.
    #[tokio::test]
    async fn a_granted_filter_is_held_across_starts_while_the_session_is() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "a/#").await;
        h.connecting().await;
        let plan = h.connected(true).await;
        assert_eq!((plan.held, plan.leave.len()), (None, 0), "nothing known");
        h.subscribed(QoS::AtLeastOnce).await;

        let mut h = held(dir.path(), "a/#").await;
        h.connecting().await;
        assert_eq!(h.connected(true).await.held, granted("a/#"));
        let mut h = held(dir.path(), "a/#").await;
        h.connecting().await;
        assert_eq!(h.connected(false).await.held, None);
        let mut h = held(dir.path(), "a/#").await;
        assert_eq!(
            h.connected(true).await.held,
            None,
            "the new session holds nothing"
        );
    }

    /// A start that finds the file unconfirmed (a CONNECT went, its CONNACK was not seen)
    /// trusts none of it; nor does a connection attempt that may have sent its CONNECT.
    #[tokio::test]
    async fn a_connect_without_its_connack_leaves_nothing_held() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "a/#").await;
        h.connected(true).await;
        h.subscribed(QoS::AtLeastOnce).await;
        h.connecting().await;
        drop(h);
        let mut h = held(dir.path(), "a/#").await;
        assert_eq!(h.connected(true).await.held, None);

        h.subscribed(QoS::AtLeastOnce).await;
        h.connecting().await;
        h.forget();
        assert_eq!(h.connected(true).await.held, None);
    }

    /// A filter no longer configured is left until an UNSUBACK, across starts; at another QoS
    /// the filter is asked for again.
    #[tokio::test]
    async fn a_filter_no_longer_configured_is_left_until_unsubscribed() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "old/#").await;
        h.connected(true).await;
        h.subscribed(QoS::AtLeastOnce).await;
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        h.connecting().await;
        let plan = h.connected(true).await;
        assert_eq!((plan.held, plan.leave), (None, vec!["old/#".to_string()]));
        drop(h);
        // Unconfirmed, and the UNSUBACK never came: still to leave.
        let mut h = held(dir.path(), "new/#").await;
        let plan = h.connected(true).await;
        assert_eq!(plan.leave, ["old/#"]);
        h.subscribed(QoS::AtLeastOnce).await;
        h.unsubscribed("old/#").await;
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        let plan = h.connected(true).await;
        assert_eq!((plan.held, plan.leave.len()), (granted("new/#"), 0));

        let file = file_in(dir.path(), BROKER, "c");
        let mut h = Held::load(Some(file), BROKER, "c", "new/#", QoS::ExactlyOnce).await;
        assert_eq!(h.connected(true).await.held, None, "another QoS");
    }

    /// A filter configured again while it is still to be left is asked for, not left.
    #[tokio::test]
    async fn a_filter_configured_again_before_it_was_left_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "old/#").await;
        h.connected(true).await;
        h.subscribed(QoS::AtLeastOnce).await;
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        assert_eq!(h.connected(true).await.leave, ["old/#"]);
        h.subscribed(QoS::AtLeastOnce).await;
        drop(h);
        let mut h = held(dir.path(), "old/#").await;
        let plan = h.connected(true).await;
        assert_eq!((plan.held, plan.leave), (None, vec!["new/#".to_string()]));
    }

    /// Each broker and client id has its own file; a file of another (or unreadable) holds
    /// nothing.
    #[tokio::test]
    async fn sessions_are_kept_per_broker_and_client_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "a/#").await;
        h.connected(true).await;
        h.subscribed(QoS::AtLeastOnce).await;
        assert_ne!(
            file_in(dir.path(), BROKER, "d"),
            file_in(dir.path(), BROKER, "c")
        );
        assert_ne!(
            file_in(dir.path(), "other:1883", "c"),
            file_in(dir.path(), BROKER, "c")
        );
        let file = file_in(dir.path(), BROKER, "c");
        let mut other = Held::load(
            Some(file.clone()),
            "other:1883",
            "c",
            "a/#",
            QoS::AtLeastOnce,
        )
        .await;
        assert_eq!(other.connected(true).await.held, None);
        std::fs::write(&file, b"{ torn").unwrap();
        assert_eq!(
            held(dir.path(), "a/#").await.connected(true).await.held,
            None
        );
    }

    /// A file that cannot be written has every CONNACK ask for the filter.
    #[tokio::test]
    async fn a_file_that_cannot_be_written_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let file = file_in(&gone, BROKER, "c");
        let mut h = Held::load(Some(file), BROKER, "c", "a/#", QoS::AtLeastOnce).await;
        h.connected(true).await;
        h.subscribed(QoS::AtLeastOnce).await;
        assert_eq!(h.connected(true).await.held, None);
    }
}
