//! Hubs that do not exist yet. At start, and when the sink first writes to a hub, the
//! provisioner looks the hub up; with `provisioning = "auto"` it creates a missing one
//! through Kafka's CreateTopics with the configured partition count (a producer's metadata
//! request does not create hubs on Event Hubs for librdkafka clients). A hub it cannot use
//! parks its recTypes with the refusal's cause and fix (docs/eventhubs.md).
//!
//! It runs on a thread of its own: the broker may take seconds to answer, and neither
//! intake nor the forwarder waits for it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer};
use tokio::sync::mpsc::UnboundedSender;

use super::refusal::{Refusal, Setup};

/// How long one look-up or creation may take.
const ANSWER: Duration = Duration::from_secs(10);
/// A hub that could not be used is tried again after this long at first, doubling up to
/// [`RETRY_MAX`] (the sink asks again whenever a write to it fails): an operator's fix (a
/// key with Manage, a hub made in the portal) is picked up soon, a lasting refusal costs one
/// CreateTopics a minute.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// One hub to make sure of, with the settings of the sink that asks (each provisioner serves
/// one sink, so these are one key's; a key rotation starts a provisioner of its own).
struct Request {
    /// `None`: a write to the hub failed, and whoever asks parks the recType itself. The hub
    /// is looked at again even if it was usable before (it may have been deleted).
    rec_type: Option<String>,
    hub: String,
    client: ClientConfig,
}

/// The sink's side of the provisioner: ask for hubs, and read why one was refused.
#[derive(Clone)]
pub struct Hubs {
    setup: Setup,
    /// Why each hub was refused, and when: a finding older than [`RETRY_MAX`] is stale (the
    /// provisioner renews it on every refused ask).
    refused: Arc<Mutex<HashMap<String, (Refusal, Instant)>>>,
    /// When the provisioner last found each hub existing (or made it).
    found: Arc<Mutex<HashMap<String, Instant>>>,
    /// `None`: nothing provisions (a sink on its own, as in unit tests).
    requests: Option<Sender<Request>>,
}

impl Hubs {
    /// Hubs nobody looks after: refusals are read from the broker's answers alone.
    pub fn unattended(setup: Setup) -> Hubs {
        Hubs {
            setup,
            refused: Arc::default(),
            found: Arc::default(),
            requests: None,
        }
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Make sure `hub` exists, with `client`'s settings; if it cannot be used, `rec_type`
    /// is parked. Does not block.
    pub fn ask(&self, rec_type: Option<&str>, hub: &str, client: &ClientConfig) {
        if let Some(tx) = &self.requests {
            let _ = tx.send(Request {
                rec_type: rec_type.map(str::to_string),
                hub: hub.to_string(),
                client: client.clone(),
            });
        }
    }

    /// Why a write to `hub` failed with `code` and `text`: the provisioner's recent finding
    /// when it has one (it knows more than a failed write tells), else the answer's own
    /// reading; `None` when the failure is not the hub's.
    pub fn refusal(&self, code: RDKafkaErrorCode, text: &str, hub: &str) -> Option<Refusal> {
        let read = self.setup.on_produce(code, text, hub)?;
        Some(self.refused(hub).unwrap_or(read))
    }

    /// A write to `hub` went through: whatever was refused before is fixed.
    pub fn delivered(&self, hub: &str) {
        let mut refused = self.lock();
        if !refused.is_empty() {
            refused.remove(hub);
        }
    }

    /// Whether the provisioner found `hub` existing (or made it) after `since`.
    pub fn found_since(&self, hub: &str, since: Instant) -> bool {
        let found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.get(hub).is_some_and(|at| *at > since)
    }

    /// The provisioner's finding on `hub`, unless it is stale.
    fn refused(&self, hub: &str) -> Option<Refusal> {
        let refused = self.lock();
        let (refusal, at) = refused.get(hub)?;
        (at.elapsed() < RETRY_MAX).then(|| refusal.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Refusal, Instant)>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Start the provisioner; its refusals go to `parks` as (recType, refusal). It ends when
/// every [`Hubs`] handle is gone.
pub fn start(setup: Setup, parks: UnboundedSender<(String, Refusal)>) -> Hubs {
    let (tx, rx) = std::sync::mpsc::channel();
    let hubs = Hubs {
        setup,
        refused: Arc::default(),
        found: Arc::default(),
        requests: Some(tx),
    };
    // The thread's own handle holds no sender: the thread ends with the last sink's.
    let worker = Hubs {
        requests: None,
        ..hubs.clone()
    };
    let spawned = std::thread::Builder::new()
        .name("hubs".into())
        .spawn(move || serve(&worker, &rx, &parks));
    if let Err(e) = spawned {
        log::warn!(
            "cannot start the hub provisioner ({e}); a missing hub shows when records go to it"
        );
    }
    hubs
}

fn serve(hubs: &Hubs, rx: &Receiver<Request>, parks: &UnboundedSender<(String, Refusal)>) {
    let mut usable: HashSet<String> = HashSet::new();
    // Per hub not usable yet: when it was last asked about, and the wait before the next ask.
    let mut tried: HashMap<String, (Instant, Duration)> = HashMap::new();
    // Per hub: the recTypes that asked for it, each parked when it is refused.
    let mut rec_types: HashMap<String, HashSet<String>> = HashMap::new();
    while let Ok(first) = rx.recv() {
        // What queued up meanwhile is one round trip.
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut todo: Vec<&Request> = Vec::new();
        for r in &batch {
            match &r.rec_type {
                Some(rec_type) => {
                    rec_types
                        .entry(r.hub.clone())
                        .or_default()
                        .insert(rec_type.clone());
                }
                // A write failed: the hub may be gone since it was last seen.
                None => {
                    usable.remove(&r.hub);
                }
            }
            if usable.contains(&r.hub) {
                continue;
            }
            if let (Some(refusal), Some(rec_type)) = (hubs.refused(&r.hub), &r.rec_type) {
                // Every recType of a refused hub is parked, not only the first to ask.
                let _ = parks.send((rec_type.clone(), refusal));
            }
            let wait = match tried.get(&r.hub) {
                Some((at, wait)) if at.elapsed() < *wait => continue,
                Some((_, wait)) => (*wait * 2).min(RETRY_MAX),
                None => RETRY_MIN,
            };
            tried.insert(r.hub.clone(), (Instant::now(), wait));
            if !todo.iter().any(|t| t.hub == r.hub) {
                todo.push(r);
            }
        }
        let Some(client) = todo.first().map(|r| &r.client) else {
            continue;
        };
        let names: Vec<&str> = todo.iter().map(|r| r.hub.as_str()).collect();
        let found = match ensure(client, hubs.setup(), &names) {
            Ok(found) => found,
            Err(e) => {
                log::warn!(
                    "hubs: cannot look up {names:?} ({e}); trying again when records go to them"
                );
                continue;
            }
        };
        for r in todo {
            match found.get(&r.hub) {
                Some(Some(refusal)) => {
                    hubs.lock()
                        .insert(r.hub.clone(), (refusal.clone(), Instant::now()));
                    for rec_type in rec_types.get(&r.hub).into_iter().flatten() {
                        let _ = parks.send((rec_type.clone(), refusal.clone()));
                    }
                }
                Some(None) => {
                    hubs.lock().remove(&r.hub);
                    hubs.found
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(r.hub.clone(), Instant::now());
                    usable.insert(r.hub.clone());
                    tried.remove(&r.hub);
                }
                // Not answered (the broker was busy): asked again when records go to it.
                None => {}
            }
        }
    }
}

/// Look `hubs` up and, with `provisioning = "auto"`, create those missing. Each hub maps to
/// `None` when it exists (now), else to why not; a hub left out got only a "not now" (the
/// broker timed out or was busy) and is to be asked about again. `Err`: the broker could
/// not be asked. Blocks up to twice [`ANSWER`].
pub fn ensure(
    client: &ClientConfig,
    setup: &Setup,
    hubs: &[&str],
) -> Result<HashMap<String, Option<Refusal>>, String> {
    let present = super::probe::hubs(client, ANSWER)?;
    let missing: Vec<&str> = hubs
        .iter()
        .copied()
        .filter(|h| !present.contains_key(*h))
        .collect();
    let mut out: HashMap<String, Option<Refusal>> = hubs
        .iter()
        .filter(|h| present.contains_key(**h))
        .map(|h| (h.to_string(), None))
        .collect();
    if missing.is_empty() {
        return Ok(out);
    }
    if !setup.auto {
        for h in missing {
            out.insert(h.to_string(), Some(setup.missing(h)));
        }
        return Ok(out);
    }
    let answers = create(client, &missing, setup.partitions, false)?;
    for hub in missing {
        let Some((_, code, text)) = answers.iter().find(|(h, ..)| h == hub) else {
            let refusal = setup.unanswered(hub);
            log::error!("hubs: {refusal}");
            out.insert(hub.to_string(), Some(refusal));
            continue;
        };
        if super::refusal::transient(*code, text) {
            log::warn!("hubs: creating hub {hub:?} not answered yet ({code:?}: {text}); asking again when records go to it");
            continue;
        }
        let refusal = setup.on_create(*code, text, hub);
        match &refusal {
            None if *code == RDKafkaErrorCode::TopicAlreadyExists => {
                log::info!("hubs: hub {hub:?} exists (created meanwhile)")
            }
            None => log::info!(
                "hubs: created hub {hub:?} with {} partition(s)",
                setup.partitions
            ),
            Some(r) => log::error!("hubs: {r}"),
        }
        out.insert(hub.to_string(), refusal);
    }
    Ok(out)
}

/// Whether the broker would create `hubs` (missing ones) for this key: CreateTopics with
/// `validate_only`, which a broker checks without creating anything (`hubgate doctor`).
/// `None` for a hub it would create. Blocks up to twice [`ANSWER`].
pub fn would_create(
    client: &ClientConfig,
    setup: &Setup,
    hubs: &[&str],
) -> Result<HashMap<String, Option<Refusal>>, String> {
    Ok(create(client, hubs, setup.partitions, true)?
        .into_iter()
        .map(|(hub, code, text)| {
            let refusal = setup.on_create(code, &text, &hub);
            (hub, refusal)
        })
        .collect())
}

/// CreateTopics for `hubs` (replication factor 1: Event Hubs keeps its own replicas), with
/// the broker's answer per hub: (hub, code, the broker's words). Through librdkafka's C
/// admin API because the `rdkafka` crate's `AdminClient` keeps the code and drops the
/// words, and Event Hubs says in the words which limit was hit. Blocks up to twice
/// [`ANSWER`].
fn create(
    client: &ClientConfig,
    hubs: &[&str],
    partitions: u16,
    validate_only: bool,
) -> Result<Vec<(String, RDKafkaErrorCode, String)>, String> {
    let producer: BaseProducer = client
        .clone()
        .set("enable.idempotence", "false")
        .set("enable.gapless.guarantee", "false")
        .create()
        .map_err(|e| format!("cannot create the Kafka client: {e}"))?;
    let rk = producer.client().native_ptr();
    let names: Vec<CString> = hubs
        .iter()
        .map(|h| CString::new(*h).map_err(|_| format!("hub name {h:?} holds a NUL")))
        .collect::<Result<_, _>>()?;
    let ms = ANSWER.as_millis() as i32;
    let mut errbuf = [0 as std::ffi::c_char; 256];
    // SAFETY: librdkafka's admin API used as documented: every object made here is
    // destroyed here, after the last use; `rk` outlives them (`producer` is alive).
    unsafe {
        let mut topics: Vec<*mut rd::rd_kafka_NewTopic_t> = Vec::new();
        for name in &names {
            let t = rd::rd_kafka_NewTopic_new(
                name.as_ptr(),
                i32::from(partitions),
                1,
                errbuf.as_mut_ptr(),
                errbuf.len(),
            );
            if t.is_null() {
                for t in topics {
                    rd::rd_kafka_NewTopic_destroy(t);
                }
                return Err(CStr::from_ptr(errbuf.as_ptr())
                    .to_string_lossy()
                    .into_owned());
            }
            topics.push(t);
        }
        let opts = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATETOPICS,
        );
        rd::rd_kafka_AdminOptions_set_request_timeout(opts, ms, errbuf.as_mut_ptr(), errbuf.len());
        rd::rd_kafka_AdminOptions_set_operation_timeout(
            opts,
            ms,
            errbuf.as_mut_ptr(),
            errbuf.len(),
        );
        rd::rd_kafka_AdminOptions_set_validate_only(
            opts,
            i32::from(validate_only),
            errbuf.as_mut_ptr(),
            errbuf.len(),
        );
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_CreateTopics(rk, topics.as_mut_ptr(), topics.len(), opts, queue);
        let event = rd::rd_kafka_queue_poll(queue, ms * 2);
        let result = if event.is_null() {
            Err(format!("no answer to CreateTopics within {:?}", ANSWER * 2))
        } else if rd::rd_kafka_event_error(event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            let code = RDKafkaErrorCode::from(rd::rd_kafka_event_error(event));
            let text = text_of(rd::rd_kafka_event_error_string(event));
            // The request as a whole failed: the same answer for every hub, unless it is
            // the transport's (then nobody answered).
            if matches!(code, RDKafkaErrorCode::UnsupportedFeature) {
                Ok(hubs
                    .iter()
                    .map(|h| (h.to_string(), code, text.clone()))
                    .collect())
            } else {
                Err(format!("{code:?}: {text}"))
            }
        } else {
            let res = rd::rd_kafka_event_CreateTopics_result(event);
            let mut n = 0;
            let list = rd::rd_kafka_CreateTopics_result_topics(res, &mut n);
            Ok((0..n)
                .map(|i| {
                    let t = *list.add(i);
                    (
                        text_of(rd::rd_kafka_topic_result_name(t)),
                        RDKafkaErrorCode::from(rd::rd_kafka_topic_result_error(t)),
                        text_of(rd::rd_kafka_topic_result_error_string(t)),
                    )
                })
                .collect())
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_AdminOptions_destroy(opts);
        for t in topics {
            rd::rd_kafka_NewTopic_destroy(t);
        }
        result
    }
}

/// A C string librdkafka owns, copied; empty for NULL.
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
unsafe fn text_of(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
