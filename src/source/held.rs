//! What an MQTT source keeps of its persistent session at the broker, in a file in the buffer
//! directory (one per broker and client id), so that a restart knows it: the filters the
//! broker granted and that hubgate has not left yet, and the retained messages it made into
//! records.
//!
//! Every configured filter is subscribed to at every CONNACK, also one that says the session
//! is present: a broker may restore an older session (mosquitto after a crash, from a
//! persistence file saved before a subscription) and still say it is present, and MQTT 3.1.1
//! does not tell which filters it holds. A filter it lacked would deliver nothing, unseen.
//!
//! The filters serve only to leave one no longer configured, which would otherwise keep
//! delivering: it is unsubscribed from on each connection whose SUBACK granted the configured
//! filter (never while the broker refuses that one), until the broker's UNSUBACK. An
//! UNSUBSCRIBE of a filter the session lacks is harmless.
//!
//! The broker sends a topic's retained message at each SUBSCRIBE that matches it (MQTT 3.1.1,
//! 3.8.4), with the retain flag set; a live delivery has it cleared (3.3.1.3). So hubgate,
//! subscribing at every CONNACK, gets each retained message again at every connect. Each
//! retained message of which a durable record was made (its PUBACK released with the
//! fingerprint: a record or a kept dead letter; not a message that made none, or whose record
//! was dropped before it was durable, see [`super::Ack::without_retained`]) has its
//! [`Fingerprint`] kept, one per topic, as the broker keeps one retained message per topic: a
//! retained delivery with the same fingerprint is acknowledged without a record. The
//! fingerprint is written before the PUBACK goes out, so a message is never skipped before its
//! record exists; a topic evicted (beyond [`RETAINED_TOPICS`], the oldest first) or a
//! retained message first taken live (not kept) comes out once more, a duplicate at worst.
//! Only retained messages are written here, never live ones.
//!
//! Each change is written to a new file, synced, and renamed over the old one, the directory
//! synced: a power cut leaves one or the other whole. A file that cannot be read (or is over
//! [`MAX_FILE`]) counts as none, and a filter in it that is not an MQTT topic filter is
//! dropped; one that cannot be written is the problem `mqtt_session_write`, and is written
//! again at the next change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// The most topics whose retained message is kept.
pub const RETAINED_TOPICS: usize = 1024;

/// The largest file read (one with [`RETAINED_TOPICS`] is about 100 KB): a larger one counts as
/// none, rather than being read whole into memory.
const MAX_FILE: u64 = 1024 * 1024;

/// A retained message: its topic, and its topic and payload, each the first 128 bits of a
/// SHA-256 (the same in every run, unlike std's hasher).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    topic: [u8; 16],
    message: [u8; 16],
}

/// The fingerprint of the message `payload` on `topic`.
pub fn fingerprint(topic: &str, payload: &[u8]) -> Fingerprint {
    let first = |d: &[u8]| -> [u8; 16] { d[..16].try_into().expect("32 bytes") };
    let topic_key = Sha256::digest(topic.as_bytes());
    let mut m = Sha256::new();
    // The topic's length first: no other topic and payload give the same bytes.
    m.update((topic.len() as u64).to_be_bytes());
    m.update(topic.as_bytes());
    m.update(payload);
    Fingerprint {
        topic: first(&topic_key),
        message: first(&m.finalize()),
    }
}

/// A fingerprint as the file holds it (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    topic: String,
    message: String,
}

impl From<&Fingerprint> for Kept {
    fn from(f: &Fingerprint) -> Kept {
        Kept {
            topic: hex::encode(f.topic),
            message: hex::encode(f.message),
        }
    }
}

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    broker: String,
    client_id: String,
    /// Filters a SUBACK granted and no UNSUBACK left since.
    filters: Vec<String>,
    /// The retained message made into a record last, per topic, the oldest first.
    #[serde(default)]
    retained: Vec<Kept>,
}

pub struct Held {
    file: Option<PathBuf>,
    /// Where a failed write is reported.
    metrics: Arc<Metrics>,
    /// The configured filter.
    filter: String,
    /// What the file should hold.
    now: Saved,
    /// What it holds (`None`: no file, or it could not be read or written).
    on_disk: Option<Saved>,
}

/// The file of the session of `client_id` at `broker` in directory `dir`.
pub fn file_in(dir: &Path, broker: &str, client_id: &str) -> PathBuf {
    let key = Sha256::digest(format!("{broker}\n{client_id}"));
    dir.join(format!("mqtt-session-{}", hex::encode(&key[..8])))
}

impl Held {
    /// What `file` says of the session of `client_id` at `broker`, whose configured filter is
    /// `filter` (`file` `None`: kept in memory only); a failed write is a problem on
    /// `metrics`.
    pub async fn load(
        file: Option<PathBuf>,
        broker: &str,
        client_id: &str,
        filter: &str,
        metrics: Arc<Metrics>,
    ) -> Held {
        let read = match &file {
            Some(path) => {
                let path = path.clone();
                crate::blocking::run(move || read_capped(&path)).await
            }
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        let shown = || {
            file.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        let lost = "filters no longer configured are not left, and retained messages made into \
                    records come out again";
        let mut on_disk = match read {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) if s.broker == broker && s.client_id == client_id => Some(s),
                Ok(_) => None,
                Err(e) => {
                    log::warn!("mqtt: {} cannot be read ({e}): {lost}", shown());
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!("mqtt: {}: {e}: {lost}", shown());
                None
            }
        };
        if let Some(saved) = &mut on_disk {
            // A damaged file could make every UNSUBSCRIBE one the broker drops the
            // connection for, or one too long for rumqttc to send, at every connect.
            saved.filters.retain(|f| match super::mqtt::check_filter(f) {
                Ok(()) => true,
                Err(why) => {
                    log::warn!(
                        "mqtt: {} lists {:?}, not an MQTT topic filter ({why}): not unsubscribed from",
                        shown(),
                        crate::format::Excerpt::from(f.as_str())
                    );
                    false
                }
            });
        }
        let now = on_disk.clone().unwrap_or_else(|| Saved {
            broker: broker.to_string(),
            client_id: client_id.to_string(),
            ..Saved::default()
        });
        Held {
            file,
            metrics,
            filter: filter.to_string(),
            now,
            on_disk,
        }
    }

    /// At a CONNACK: the filters to unsubscribe from once the configured one is granted (it
    /// is subscribed to whatever this says).
    pub async fn connected(&mut self, session_present: bool) -> Vec<String> {
        if !session_present {
            // A new session: it holds nothing.
            self.now.filters.clear();
            self.save().await;
        }
        let filter = &self.filter;
        self.now
            .filters
            .iter()
            .filter(|f| *f != filter)
            .cloned()
            .collect()
    }

    /// A SUBACK granted the configured filter.
    pub async fn subscribed(&mut self) {
        if !self.now.filters.contains(&self.filter) {
            self.now.filters.push(self.filter.clone());
            self.save().await;
        }
    }

    /// An UNSUBACK for `filter`.
    pub async fn unsubscribed(&mut self, filter: &str) {
        self.now.filters.retain(|f| f != filter);
        self.save().await;
    }

    /// `f` is a retained message whose record was made: the broker's again.
    pub fn handled(&self, f: &Fingerprint) -> bool {
        let f = Kept::from(f);
        self.now.retained.contains(&f)
    }

    /// The records of the retained messages `released` are durable (their PUBACKs released):
    /// each is its topic's, in place of the one before.
    pub async fn record(&mut self, released: Vec<Fingerprint>) {
        // Live messages, the most by far, write nothing.
        if released.is_empty() {
            return;
        }
        for f in released {
            let f = Kept::from(&f);
            self.now.retained.retain(|k| k.topic != f.topic);
            self.now.retained.push(f);
        }
        let over = self.now.retained.len().saturating_sub(RETAINED_TOPICS);
        self.now.retained.drain(..over);
        self.save().await;
    }

    /// Write what is known, unless the file holds it already.
    async fn save(&mut self) {
        let Some(path) = self.file.clone() else {
            return;
        };
        if self.on_disk.as_ref() == Some(&self.now) {
            return;
        }
        let saved = self.now.clone();
        let bytes = serde_json::to_vec(&saved).expect("plain data");
        match crate::blocking::run(move || crate::files::replace_durably(&path, &bytes)).await {
            Ok(()) => self.on_disk = Some(saved),
            Err(e) => {
                self.on_disk = None;
                let path = self.file.as_ref().expect("a file").display();
                self.metrics.problem("mqtt_session_write", || {
                    format!(
                        "mqtt: cannot write {path}: {e}; written again at the next change (until then a \
                         restart leaves no filter it lists, and takes its retained messages again)"
                    )
                });
            }
        }
    }
}

/// The content of `path`, unless it is over [`MAX_FILE`] (an error then).
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "over {MAX_FILE} bytes, not written by hubgate"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROKER: &str = "broker:1883";

    async fn held(dir: &Path, filter: &str) -> Held {
        let file = file_in(dir, BROKER, "c");
        Held::load(Some(file), BROKER, "c", filter, Metrics::new()).await
    }

    /// A filter granted and no longer configured is left at each CONNACK, across starts,
    /// until an UNSUBACK; the configured one never is.
    #[tokio::test]
    async fn a_filter_no_longer_configured_is_left_until_unsubscribed() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "old/#").await;
        assert!(h.connected(true).await.is_empty(), "nothing known");
        h.subscribed().await;
        assert!(h.connected(true).await.is_empty(), "configured");
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        assert_eq!(h.connected(true).await, ["old/#"]);
        h.subscribed().await;
        drop(h);
        // The UNSUBACK never came: still to leave.
        let mut h = held(dir.path(), "new/#").await;
        assert_eq!(h.connected(true).await, ["old/#"]);
        h.unsubscribed("old/#").await;
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        assert!(h.connected(true).await.is_empty());
        // Configured again: the filter granted since is the one to leave.
        let mut h = held(dir.path(), "old/#").await;
        assert_eq!(h.connected(true).await, ["new/#"]);
    }

    /// A recorded retained message is known again after a restart; another on its topic
    /// takes its place; a live one is not a retained one.
    #[tokio::test]
    async fn a_recorded_retained_message_is_known_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (fingerprint("t/1", b"a"), fingerprint("t/1", b"b"));
        assert_eq!(first, fingerprint("t/1", b"a"), "the same in every run");
        assert_ne!(first, fingerprint("t/2", b"a"));
        assert_ne!(fingerprint("t/", b"1a"), fingerprint("t/1", b"a"));
        let mut h = held(dir.path(), "t/#").await;
        assert!(!h.handled(&first));
        h.record(vec![first]).await;
        assert!(h.handled(&first));
        let mut h = held(dir.path(), "t/#").await;
        assert!(h.handled(&first), "from the file");
        assert!(!h.handled(&second));
        h.record(vec![second]).await;
        let h = held(dir.path(), "t/#").await;
        assert_eq!((h.handled(&first), h.handled(&second)), (false, true));
    }

    /// At most [`RETAINED_TOPICS`] topics are kept: the oldest goes first.
    #[tokio::test]
    async fn retained_messages_are_kept_for_a_bounded_number_of_topics() {
        let dir = tempfile::tempdir().unwrap();
        let f = |i: usize| fingerprint(&format!("t/{i}"), b"x");
        let mut h = held(dir.path(), "t/#").await;
        h.record((0..RETAINED_TOPICS).map(f).collect()).await;
        // Topic 0 again: now the newest.
        h.record(vec![f(0), f(RETAINED_TOPICS)]).await;
        let h = held(dir.path(), "t/#").await;
        assert_eq!(h.now.retained.len(), RETAINED_TOPICS);
        let kept: Vec<bool> = [0, 1, 2, RETAINED_TOPICS].map(|i| h.handled(&f(i))).into();
        assert_eq!(kept, [true, false, true, true]);
    }

    /// A new session (no session present) holds nothing to leave.
    #[tokio::test]
    async fn a_new_session_has_nothing_to_leave() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "old/#").await;
        h.connected(true).await;
        h.subscribed().await;
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        assert!(h.connected(false).await.is_empty());
        drop(h);
        let mut h = held(dir.path(), "new/#").await;
        assert!(h.connected(true).await.is_empty(), "on disk too");
    }

    /// A file over [`MAX_FILE`] counts as none (it is not read whole), and filters in it that
    /// hubgate would not subscribe to (`check_filter` refuses them: no MQTT topic filter, or
    /// too long) are dropped: hubgate never held them, and the UNSUBSCRIBE of one that is no
    /// topic filter, or of one too long for it, would have the broker, or rumqttc, drop the
    /// connection at every connect.
    #[tokio::test]
    async fn a_damaged_file_is_bounded_and_its_filters_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(dir.path(), BROKER, "c");
        let saved = |filters: Vec<String>| Saved {
            broker: BROKER.into(),
            client_id: "c".into(),
            filters,
            retained: Vec::new(),
        };
        let filters = [
            "old/#",
            "a/#/b",
            "a+",
            "nul\0",
            "",
            // Its SUBSCRIBE fits in no packet hubgate sends (check_filter refuses it); its
            // UNSUBSCRIBE (65,536 bytes) just would.
            &"x".repeat(65528),
        ];
        let bytes = serde_json::to_vec(&saved(filters.map(String::from).into())).unwrap();
        std::fs::write(&file, bytes).unwrap();
        assert_eq!(
            held(dir.path(), "new/#").await.connected(true).await,
            ["old/#"]
        );
        let mut big = serde_json::to_vec(&saved(vec!["old/#".into()])).unwrap();
        big.resize(MAX_FILE as usize + 1, b' ');
        std::fs::write(&file, big).unwrap();
        assert!(held(dir.path(), "new/#")
            .await
            .connected(true)
            .await
            .is_empty());
    }

    /// A file that cannot be written is a problem, counted and logged (rate-limited).
    #[tokio::test]
    async fn a_failed_write_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(&dir.path().join("gone"), BROKER, "c");
        let metrics = Metrics::new();
        let mut h = Held::load(Some(file), BROKER, "c", "t/#", metrics.clone()).await;
        h.subscribed().await;
        assert_eq!(metrics.problems("mqtt_session_write"), 1);
    }

    /// Each broker and client id has its own file; a file of another, or unreadable, holds
    /// nothing.
    #[tokio::test]
    async fn sessions_are_kept_per_broker_and_client_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = held(dir.path(), "a/#").await;
        h.connected(true).await;
        h.subscribed().await;
        assert_ne!(
            file_in(dir.path(), BROKER, "d"),
            file_in(dir.path(), BROKER, "c")
        );
        assert_ne!(
            file_in(dir.path(), "other:1883", "c"),
            file_in(dir.path(), BROKER, "c")
        );
        let file = file_in(dir.path(), BROKER, "c");
        let mut other =
            Held::load(Some(file.clone()), "other:1883", "c", "b/#", Metrics::new()).await;
        assert!(other.connected(true).await.is_empty());
        assert_eq!(held(dir.path(), "b/#").await.connected(true).await, ["a/#"]);
        std::fs::write(&file, b"{ torn").unwrap();
        assert!(held(dir.path(), "b/#")
            .await
            .connected(true)
            .await
            .is_empty());
    }
}
