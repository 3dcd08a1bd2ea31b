//! MQTT source (rumqttc): QoS 1, persistent session, manual acknowledgements.
//!
//! A message is acknowledged by the forwarder once its record is durable; malformed ones
//! are counted and acknowledged at once (redelivering them would not make them better),
//! except an uplink whose DevEUI or payload does not decode, which is acknowledged once kept
//! as a dead letter ([`Context::parse`]).
//!
//! Messages up to [`READ_LIMIT`] are read whole; one over `max_message` is not parsed but
//! kept as a dead letter (topic, size, SHA-256, first bytes) and then acknowledged, so the
//! broker's queue moves on. A larger one makes rumqttc drop the connection and the broker
//! delivers it again: cap messages at the broker too (mosquitto `message_size_limit`).
//!
//! Each message read is acknowledged on the TCP level at once ([`QuickAck`]), so a broker
//! that uses Nagle's algorithm does not hold the next one until its PUBACK.
//!
//! The subscription is asked for at every CONNACK, also when the broker says it kept the
//! session; a filter no longer configured is unsubscribed from once the subscription is
//! granted ([`Held`]). The broker then sends its retained messages again: one whose record
//! hubgate made already is acknowledged without another ([`Held::handled`]).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::tokio_native_tls::native_tls;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, PubRec, Publish, QoS, Request,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use super::held::{self, Held};
use super::quickack::QuickAck;
use super::{Ack, Context, Input, PubAck, Sent};
use crate::config::{MqttSourceConfig, MqttTls, UplinkFormat};
use crate::format::DeadLetter;
use crate::format::{chirpstack, tts};
use crate::metrics::Metrics;

const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// A connection counts as working (resetting the backoff and the log-once flag) only after
/// this long: one that dies right after connecting, as when the broker redelivers a message
/// rumqttc cannot take, keeps backing off.
const STABLE: Duration = Duration::from_secs(10);
/// Largest packet rumqttc reads (the limit of `max_message`); larger ones drop the connection.
pub const READ_LIMIT: usize = crate::config::MAX_MQTT_MESSAGE;
/// Largest packet hubgate sends (subscriptions, acknowledgements): rumqttc refuses a larger
/// one, failing the connection, so [`check_filter`] refuses a topic filter whose SUBSCRIBE
/// would be.
const WRITE_LIMIT: usize = 64 * 1024;
/// rumqttc's request queue: subscriptions and the DISCONNECT (PUBACKs are written by
/// [`Acks::write`]).
const REQUESTS: usize = 1024;
/// The most PUBACKs taken from the pipeline and written at once.
const ACKS_AT_ONCE: usize = 1024;

/// The size of a message rumqttc refused to read, if that is why the connection ended.
fn unreadable(e: &rumqttc::ConnectionError) -> Option<usize> {
    match e {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

/// `e` as hubgate's own lines (the log, `doctor`) show it. rumqttc's text for a first packet
/// other than CONNACK prints the whole packet: a peer that sends hubgate's CONNECT back (an
/// echo service on the port, a squatter while the broker restarts) would put the MQTT
/// password there. Only the packet's type is named.
pub fn connection_error(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::NotConnAck(p) => {
            format!("expected a CONNACK, received a {} packet", packet_type(p))
        }
        // rumqttc forgets its QoS 2 exchanges at a reconnect, and a PUBREL the broker owes
        // from before (MQTT 3.1.1, 4.4) ends each connection: a stall only the broker's side
        // can clear (logged once an outage).
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Unsolicited(pkid)) => format!(
            "the broker answered packet id {pkid}, which this connection did not send; if the \
             source never stays connected (hubgate_mqtt_connected keeps falling back to 0), \
             the broker's session for this client_id holds a QoS 2 \
             delivery from an earlier connection that the MQTT library cannot finish (its \
             PUBREL): remove that session on the broker (the messages it still queues for \
             hubgate go with it) or use another client_id"
        ),
        _ => e.to_string(),
    }
}

fn packet_type(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

/// The TLS side of an `mqtts://` source: TLS 1.2 or later, the broker's certificate checked
/// against `ca_file` alone when given (else the system's CA store) and its name against the
/// URL's host; the client certificate when given. Through native-tls, which is OpenSSL here.
/// On error (the key of the file at fault, reason).
pub fn tls_connector(tls: &MqttTls) -> Result<native_tls::TlsConnector, (&'static str, String)> {
    use native_tls::{Certificate, Identity, Protocol, TlsConnector};
    use openssl::pkey::PKey;
    let ca_error = |e: &dyn std::fmt::Display| ("ca_file", e.to_string());
    let mut b = TlsConnector::builder();
    b.min_protocol_version(Some(Protocol::Tlsv12));
    if let Some(ca) = &tls.ca {
        let certs = crate::files::ca_certificates(ca).map_err(|e| ca_error(&e))?;
        b.disable_built_in_roots(true);
        for cert in certs {
            let der = cert.to_der().map_err(|e| ca_error(&e))?;
            b.add_root_certificate(Certificate::from_der(&der).map_err(|e| ca_error(&e))?);
        }
    }
    if let Some((cert, key)) = &tls.client {
        // Any PEM key form (PKCS#1, SEC1, PKCS#8); native-tls takes PKCS#8. The reason
        // never quotes the key.
        let pkcs8 = PKey::private_key_from_pem(key.expose().as_bytes())
            .and_then(|k| k.private_key_to_pem_pkcs8())
            .map_err(|_| ("client_key_file", "not a PEM private key".to_string()))?;
        let identity =
            Identity::from_pkcs8(cert, &pkcs8).map_err(|e| ("client_cert_file", e.to_string()))?;
        b.identity(identity);
    }
    b.build().map_err(|e| ("client_cert_file", e.to_string()))
}

/// The topic filter a format's messages are published under, when the config names none.
pub fn default_topic(format: UplinkFormat) -> &'static str {
    match format {
        UplinkFormat::ChirpstackV4 => chirpstack::UPLINK_TOPIC,
        UplinkFormat::TtsV3 => tts::TOPIC,
        UplinkFormat::ChirpstackGateway => chirpstack::GATEWAY_TOPIC,
    }
}

/// Why `filter` is not a topic filter hubgate can subscribe to, if it is not: so long that
/// its SUBSCRIBE (the filter and 9 bytes, as rumqttc counts it; an UNSUBSCRIBE is shorter)
/// would be over [`WRITE_LIMIT`], which is below the 65535 bytes MQTT can carry; with a NUL
/// character; or with `+` or `#` out of place (or empty).
pub fn check_filter(filter: &str) -> Result<(), String> {
    let subscribe = rumqttc::Subscribe::new(filter, QoS::AtLeastOnce).size();
    if subscribe > WRITE_LIMIT {
        return Err(format!(
            "it is {} bytes long: its SUBSCRIBE would be {subscribe} bytes, over the \
             {WRITE_LIMIT} hubgate sends in one packet",
            filter.len()
        ));
    }
    if filter.contains('\0') {
        return Err("it holds a NUL character, which MQTT does not allow".into());
    }
    if !rumqttc::valid_filter(filter) {
        return Err("'#' only as the last level, '+' and '#' only as whole levels".into());
    }
    Ok(())
}

/// The session options of `cfg` (`hubgate doctor` connects with them too); building them
/// checks the TLS files. On error (the key at fault, reason).
pub fn options(
    cfg: &MqttSourceConfig,
    client_id: &str,
) -> Result<MqttOptions, (&'static str, String)> {
    let url = &cfg.url;
    let mut o = MqttOptions::new(client_id, url.host.clone(), url.port);
    if url.tls {
        let connector = tls_connector(&cfg.tls)?;
        o.set_transport(Transport::tls_with_config(
            TlsConfiguration::NativeConnector(connector),
        ));
    }
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(READ_LIMIT, WRITE_LIMIT);
    if let Some(user) = &cfg.username {
        let pw = cfg
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user, pw);
    }
    Ok(o)
}

/// Run the session `opts` (made by [`options`] from `cfg`), keeping the filters to leave and
/// the retained messages made into records in directory `kept_in` (see [`Held`]; `None`: in
/// memory only).
pub async fn run(cfg: MqttSourceConfig, opts: MqttOptions, kept_in: Option<PathBuf>, ctx: Context) {
    let topic = cfg
        .topic
        .clone()
        .unwrap_or_else(|| default_topic(cfg.format).to_string());
    let mut subscription = Subscription::new(cfg.reconnect_max);
    let client_id = opts.client_id();
    let (host, port) = opts.broker_address();
    let broker = cfg.url.authority();
    let file = kept_in.map(|dir| held::file_in(&dir, &broker, &client_id));
    let mut held = Held::load(file, &broker, &client_id, &topic, ctx.metrics.clone()).await;
    let (client, mut events) = AsyncClient::new(opts, REQUESTS);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    let mut acks = Acks::default();
    // Writing acknowledgements failed: the connection is gone, said at the next poll.
    let mut write_failed = None;
    // Which connection this is: acknowledgements carry it (see [`PubAck`]).
    let mut connection = 0u32;
    let mut stopping = ctx.stopping.clone();
    let mut acked = ctx.acked.clone();
    let mut reconnect = Reconnect::new(cfg.reconnect_max);
    let mut quick = QuickAck::default();
    // The search for the connection's socket, started at each CONNACK.
    let mut finding: Option<tokio::task::JoinHandle<Result<QuickAck, String>>> = None;
    let mut quick_warned = false;
    // A message delivered at QoS 0 was seen on this connection (said once per connection).
    let mut qos0_seen = false;
    'run: loop {
        // An event polled with none queued comes from a new read (rumqttc reads up to ten
        // packets at once and hands them out one per poll).
        let fresh_read = events.state.events.is_empty();
        tokio::select! {
            // What the pipeline released since, in one go (a round's worth, or more); the
            // channel stays open while `ack_tx` is here.
            _ = ack_rx.recv_many(&mut acks.taken, ACKS_AT_ONCE) => {
                if let Err(e) = acks.write(&mut events, &mut held).await {
                    // The connection is broken: dropped here, the error reported by the next
                    // poll as the event loop's own would be.
                    events.clean();
                    write_failed = Some(e);
                }
            }
            found = async { finding.as_mut().expect("a search").await }, if finding.is_some() => {
                finding = None;
                match found {
                    Ok(Ok(found)) => quick = found,
                    Ok(Err(why)) if !quick_warned => {
                        quick_warned = true;
                        log::warn!("mqtt: {}: TCP acknowledgements stay delayed (a broker with Nagle's algorithm on then waits for each PUBACK): {why}", cfg.url);
                    }
                    Ok(Err(why)) => log::debug!("mqtt: {}: no TCP_QUICKACK: {why}", cfg.url),
                    Err(e) => log::debug!("mqtt: the socket search failed: {e}"),
                }
            }
            ev = poll(&mut events, &mut write_failed) => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    finding = Some(tokio::spawn(QuickAck::find(host.clone(), port)));
                    ctx.metrics.log_limited(log::Level::Info, "mqtt_connected", || {
                        format!("mqtt: connected to {} as {client_id} (session present: {})", cfg.url, ack.session_present)
                    });
                    reconnect.connected(Instant::now());
                    qos0_seen = false;
                    ctx.metrics.mqtt_connected.set(&broker, &client_id, 1);
                    subscription.connected();
                    forget_asked(&mut events);
                    // Also with the session present: it may be an older one that lacks it.
                    subscription.want(held.connected(ack.session_present).await);
                    subscription.ask(&client, &topic, &ctx.metrics);
                }
                Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => subscription.subscribe_sent(pkid),
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if !subscription.answers(ack.pkid) {
                        log::debug!("mqtt: ignored a SUBACK for packet {}, which answers no SUBSCRIBE awaited", ack.pkid);
                    } else if ack.return_codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))) {
                        held.subscribed().await;
                        // Only now are the filters no longer configured left, also after a
                        // grant of QoS 0 only (reported below): keeping them would not have
                        // the new filter's messages acknowledged.
                        subscription.grant();
                        subscription.ask(&client, &topic, &ctx.metrics);
                        // Set before the line is logged: whoever reads the line finds it up.
                        ctx.metrics.mqtt_subscribed.set(&broker, &client_id, 1);
                        log::info!("mqtt: subscribed to {topic}");
                        // Messages then come without a PUBACK to wait for: the broker forgets
                        // each once sent, and drops what comes while hubgate is away.
                        if ack.return_codes.contains(&SubscribeReasonCode::Success(QoS::AtMostOnce)) {
                            ctx.metrics.problem("mqtt_qos0_granted", || {
                                format!(
                                    "mqtt: {} granted only QoS 0 for {topic}: its messages are not acknowledged, and \
                                     those sent while hubgate is stopped, or before they are on disk, are lost; allow \
                                     QoS 1 for client id {client_id} at the broker (mosquitto: max_qos)",
                                    cfg.url
                                )
                            });
                        }
                    } else {
                        ctx.metrics.mqtt_subscribed.set(&broker, &client_id, 0);
                        let wait = subscription.refused();
                        let kept = match subscription.leave.as_slice() {
                            [] => String::new(),
                            left => format!(
                                "; the filters no longer configured stay subscribed until it is granted: {}",
                                left.join(", ")
                            ),
                        };
                        ctx.metrics.problem("mqtt_subscribe_refused", || {
                            format!(
                                "mqtt: {} refused the subscription to {topic} (SUBACK failure): check the broker's ACL \
                                 for client id {client_id} and its user; asking again in {wait:?}{kept}",
                                cfg.url
                            )
                        });
                    }
                }
                Ok(Event::Outgoing(Outgoing::Unsubscribe(pkid))) => subscription.unsubscribe_sent(pkid),
                Ok(Event::Incoming(Packet::UnsubAck(ack))) => {
                    if let Some(filter) = subscription.unsubscribed(ack.pkid) {
                        log::info!("mqtt: unsubscribed from {filter}, no longer configured");
                        held.unsubscribed(&filter).await;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // A broker delivers at the lower of the granted QoS and the publisher's:
                    // with a QoS 1 grant this is the publisher's doing, which the SUBACK
                    // does not show.
                    if p.qos == QoS::AtMostOnce && !std::mem::replace(&mut qos0_seen, true) {
                        ctx.metrics.problem("mqtt_qos0_received", || {
                            format!(
                                "mqtt: {} delivers messages on {} at QoS 0, as their publisher sends them: they are not \
                                 acknowledged, and those sent while hubgate is stopped, or before they are on disk, are \
                                 lost; have the publisher send at QoS 1 (ChirpStack: qos = 1 under [integration.mqtt])",
                                cfg.url,
                                crate::format::Excerpt::from(&p.topic)
                            )
                        });
                    }
                    // The broker may hold its next message until this read is acknowledged.
                    if fresh_read {
                        quick.now();
                    }
                    // Once stopping, leave new messages unacknowledged: the broker keeps them.
                    // A message the forwarder no longer takes (its queue closed: it is
                    // ending) stays so too; the connection stays up for the acknowledgements
                    // it still releases, until `acked` (sent once it has ended, whatever
                    // the way): leaving here would strand those, and the broker would deliver
                    // messages again whose records are durable.
                    if !*ctx.stopping.borrow() {
                        take(&ctx, &cfg, &held, &ack_tx, connection, p).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Messages read in the batch that ended in this error are still queued in
                    // rumqttc, which would hand them out after the reconnect. They came on this
                    // connection: forwarded as its own, their acknowledgements are dropped with
                    // its others. A broker that kept the session delivers them again (the
                    // de-duplication window absorbs the copy, unless the message has no time
                    // of its own: then a duplicate under another id); one that lost it does not.
                    for p in stranded(&mut events) {
                        // The queue closed (the agent is ending) while this connection is
                        // gone: the acknowledgements still to come are this connection's,
                        // void with it, so there is nothing to stay for.
                        if !*ctx.stopping.borrow() && !take(&ctx, &cfg, &held, &ack_tx, connection, p).await {
                            break 'run;
                        }
                    }
                    // rumqttc has closed the socket: neither it nor a search for it is ours,
                    // nor are the packet ids of the messages it brought.
                    quick = QuickAck::default();
                    subscription.lost();
                    connection = connection.wrapping_add(1);
                    acks.current = connection;
                    if let Some(search) = finding.take() {
                        search.abort();
                    }
                    ctx.metrics.mqtt_connected.set(&broker, &client_id, 0);
                    ctx.metrics.mqtt_subscribed.set(&broker, &client_id, 0);
                    let (wait, first) = reconnect.failed(Instant::now());
                    if let Some(size) = unreadable(&e) {
                        ctx.metrics.problem("mqtt_unreadable", || {
                            format!(
                                "mqtt: {} delivers a message of {size} bytes, over the {READ_LIMIT} hubgate can read; \
                                 it comes back at every connect and holds the queue: cap message size at the broker \
                                 (mosquitto message_size_limit {})",
                                cfg.url, cfg.max_message
                            )
                        });
                    } else if first {
                        log::warn!(
                            "mqtt: {}: {}; reconnecting with backoff up to {:?}",
                            cfg.url,
                            connection_error(&e),
                            cfg.reconnect_max
                        );
                    }
                    // A stop ends the wait, and the source: with the connection gone nothing
                    // here can be acknowledged (what it brought is tagged with it, see
                    // [`PubAck`]), and the broker keeps what it did not get a PUBACK for.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            },
            _ = tokio::time::sleep_until(subscription.retry_at.unwrap_or_else(tokio::time::Instant::now)),
                if subscription.retry_at.is_some() => subscription.ask(&client, &topic, &ctx.metrics),
            _ = stopping.changed() => {}
            _ = acked.changed() => break,
        }
    }
    drop(ack_tx);
    last_acks(ack_rx, &mut acks, &mut events, &mut held).await;
    disconnect(&client, &mut events).await;
}

/// Everything is acknowledged (or left to the broker): write the PUBACKs still in `ack_rx`,
/// its senders all gone, within 2 s; the DISCONNECT follows them.
async fn last_acks(
    mut ack_rx: mpsc::UnboundedReceiver<PubAck>,
    acks: &mut Acks,
    events: &mut EventLoop,
    held: &mut Held,
) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while ack_rx.recv_many(&mut acks.taken, ACKS_AT_ONCE).await > 0 {
            if acks.write(events, held).await.is_err() {
                break;
            }
        }
    })
    .await;
}

/// The messages rumqttc read but has not handed out yet. It reads up to ten packets at once
/// and hands them out one per poll; what is left of a batch that ended in an error it keeps,
/// and hands out after the reconnect as if it came on the new connection.
fn stranded(events: &mut EventLoop) -> Vec<Publish> {
    events
        .state
        .events
        .drain(..)
        .filter_map(|e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p),
            _ => None,
        })
        .collect()
}

/// Drop the SUBSCRIBEs and UNSUBSCRIBEs of a connection that failed, which rumqttc keeps (those
/// still in its request queue) and would write first on the next one when the broker kept the
/// session: each CONNACK asks anew. So every UNSUBSCRIBE written on a connection was queued on
/// it once its SUBACK granted the subscription, in order, and the packet id of its UNSUBACK
/// names the filter queued; a stale one would leave an old filter before the new one is
/// granted.
fn forget_asked(events: &mut EventLoop) {
    events
        .pending
        .retain(|r| !matches!(r, Request::Subscribe(_) | Request::Unsubscribe(_)));
}

/// What is asked of the broker at each CONNACK: the subscription (a broker that kept the
/// session has the old filter, but a changed `topic` takes effect only when asked for, and a
/// session the broker restored from an older copy may lack it), then, once its SUBACK granted
/// it, the filters [`Held`] says to unsubscribe from: while the broker refuses the configured
/// filter (its ACL, say), the old ones stay and keep delivering. Asked again with backoff, up
/// to `reconnect_max`, while the broker refuses the subscription or rumqttc's request queue
/// has no room.
struct Subscription {
    /// When to ask again, on this connection.
    retry_at: Option<tokio::time::Instant>,
    backoff: Duration,
    max: Duration,
    /// Filters to unsubscribe from, not yet in rumqttc's request queue.
    leave: Vec<String>,
    /// Filters unsubscribed from in the request queue, in order, and once written, by packet
    /// id: the UNSUBACK names only that.
    queued: std::collections::VecDeque<String>,
    sent: Vec<(u16, String)>,
    /// The subscription is to be asked for.
    subscribe: bool,
    /// The packet id of the SUBSCRIBE last written on this connection, until its SUBACK: no
    /// other SUBACK counts.
    awaited: Option<u16>,
    /// A SUBACK on this connection granted the subscription (at any QoS): the filters in
    /// `leave` go.
    granted: bool,
}

impl Subscription {
    fn new(max: Duration) -> Self {
        Subscription {
            retry_at: None,
            backoff: RECONNECT_MIN,
            max,
            leave: Vec::new(),
            queued: Default::default(),
            sent: Vec::new(),
            subscribe: false,
            awaited: None,
            granted: false,
        }
    }

    /// A new connection: its first refusal waits the least.
    fn connected(&mut self) {
        self.retry_at = None;
        self.backoff = RECONNECT_MIN;
    }

    /// The connection failed: the next CONNACK says what to ask, and a grant on this one
    /// does not count on the next.
    fn lost(&mut self) {
        self.retry_at = None;
        self.leave.clear();
        self.queued.clear();
        self.sent.clear();
        self.subscribe = false;
        self.awaited = None;
        self.granted = false;
    }

    /// At a CONNACK: subscribe at the next [`Subscription::ask`], and leave `leave` once
    /// granted.
    fn want(&mut self, leave: Vec<String>) {
        self.leave = leave;
        self.subscribe = true;
    }

    /// The SUBSCRIBE went out as packet `pkid`.
    fn subscribe_sent(&mut self, pkid: u16) {
        self.awaited = Some(pkid);
    }

    /// Whether the SUBACK for packet `pkid` answers the SUBSCRIBE awaited, which it then no
    /// longer is. Another (a broker's stray or repeated one) would take a grant that did
    /// not answer this connection's SUBSCRIBE for one that did.
    fn answers(&mut self, pkid: u16) -> bool {
        let answers = self.awaited == Some(pkid);
        if answers {
            self.awaited = None;
        }
        answers
    }

    /// A SUBACK granted the subscription: the next [`Subscription::ask`] leaves the old filters.
    fn grant(&mut self) {
        self.granted = true;
    }

    /// Queue the SUBSCRIBE for `topic`, or, once it is granted, the UNSUBSCRIBEs still to ask;
    /// with no room for them, ask again later. The configured filter is in place before an
    /// old one that overlaps it goes, so no live message between the two matches neither (the
    /// overlap's copies are de-duplicated), and an old one stays while the broker refuses
    /// the configured one. A full queue is logged rate-limited: it clears as the event loop
    /// writes what it holds, and the backoff asks again.
    fn ask(&mut self, client: &AsyncClient, topic: &str, metrics: &Metrics) {
        self.retry_at = None;
        // The only error is a full queue (the event loop is ours).
        if self.subscribe {
            if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                let wait = self.retry();
                metrics.log_limited(log::Level::Warn, "mqtt_requests_full", || {
                    format!("mqtt: cannot subscribe to {topic} yet: {e}; trying again in {wait:?}")
                });
                return;
            }
            self.subscribe = false;
        }
        if !self.granted {
            return;
        }
        while let Some(filter) = self.leave.first().cloned() {
            if let Err(e) = client.try_unsubscribe(filter.as_str()) {
                let wait = self.retry();
                metrics.log_limited(log::Level::Warn, "mqtt_requests_full", || {
                    format!(
                        "mqtt: cannot unsubscribe from {filter} yet: {e}; trying again in {wait:?}"
                    )
                });
                return;
            }
            self.leave.remove(0);
            self.queued.push_back(filter);
        }
    }

    /// The broker refused the subscription: ask again after the backoff, which it returns.
    fn refused(&mut self) -> Duration {
        self.subscribe = true;
        self.retry()
    }

    /// The oldest UNSUBSCRIBE queued went out as packet `pkid`.
    fn unsubscribe_sent(&mut self, pkid: u16) {
        if let Some(filter) = self.queued.pop_front() {
            self.sent.push((pkid, filter));
        }
    }

    /// The filter the UNSUBACK for packet `pkid` is for.
    fn unsubscribed(&mut self, pkid: u16) -> Option<String> {
        let at = self.sent.iter().position(|(p, _)| *p == pkid)?;
        Some(self.sent.remove(at).1)
    }

    /// Ask again after the backoff, which it returns.
    fn retry(&mut self) -> Duration {
        let wait = self.backoff;
        self.retry_at = Some(tokio::time::Instant::now() + wait);
        self.backoff = (self.backoff * 2).min(self.max);
        wait
    }
}

/// When to try again after the connection failed, and whether to log it.
struct Reconnect {
    backoff: Duration,
    max: Duration,
    connected_at: Option<Instant>,
    /// The outage was logged (once per outage).
    logged: bool,
}

impl Reconnect {
    fn new(max: Duration) -> Self {
        Reconnect {
            backoff: RECONNECT_MIN,
            max,
            connected_at: None,
            logged: false,
        }
    }

    fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The wait before the next attempt, and whether this is the first failure of an outage.
    /// Only a connection that stayed up for [`STABLE`] starts the backoff over.
    fn failed(&mut self, now: Instant) -> (Duration, bool) {
        if self
            .connected_at
            .take()
            .is_some_and(|t| now.duration_since(t) >= STABLE)
        {
            self.backoff = RECONNECT_MIN;
            self.logged = false;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max);
        (wait, !std::mem::replace(&mut self.logged, true))
    }
}

/// PUBACKs the pipeline released, in its order, taken by the source's own task and written
/// to the broker there, all of a release in one write. Handed to rumqttc's request queue they
/// went out one per poll, while a poll that reads hands out up to ten messages: with a broker
/// that sends past its in-flight limit (mosquitto 2.0.11 does once messages queue) they piled
/// up in memory by the hundred thousand, each a write of its own.
#[derive(Default)]
struct Acks {
    /// Taken from the pipeline, not yet written.
    taken: Vec<PubAck>,
    /// The connection whose acknowledgements go out; older ones are dropped.
    current: u32,
}

impl Acks {
    /// Write the PUBACKs just taken, once the fingerprints of the retained messages among them
    /// are on disk (their records are durable, whichever connection they came on), and flush
    /// them. Those of an older connection are dropped, and all of them when the connection is
    /// gone. An error is the connection's: the caller drops it.
    async fn write(
        &mut self,
        events: &mut EventLoop,
        held: &mut Held,
    ) -> Result<(), rumqttc::ConnectionError> {
        let retained = self.taken.iter().filter_map(|a| a.retained).collect();
        held.record(retained).await;
        let current = self.current;
        let taken = self.taken.drain(..).filter(|a| a.connection == current);
        let Some(network) = events.network.as_mut() else {
            return Ok(());
        };
        let timeout = Duration::from_secs(events.network_options.connection_timeout());
        let written = async {
            for a in taken {
                // The packets rumqttc's manual acknowledgement writes: QoS 0 needs none, QoS 2
                // a PUBREC (rumqttc answers the broker's PUBREL itself).
                let packet = match a.qos {
                    QoS::AtMostOnce => continue,
                    QoS::AtLeastOnce => Packet::PubAck(rumqttc::PubAck::new(a.pkid)),
                    QoS::ExactlyOnce => Packet::PubRec(PubRec::new(a.pkid)),
                };
                network.write(packet).await?;
            }
            network.flush().await
        };
        match tokio::time::timeout(timeout, written).await {
            Ok(r) => r.map_err(rumqttc::ConnectionError::MqttState),
            Err(_) => Err(rumqttc::ConnectionError::FlushTimeout),
        }
    }
}

/// The event loop's next event, or first the error a write of acknowledgements met.
async fn poll(
    events: &mut EventLoop,
    write_failed: &mut Option<rumqttc::ConnectionError>,
) -> Result<Event, rumqttc::ConnectionError> {
    match write_failed.take() {
        Some(e) => Err(e),
        None => events.poll().await,
    }
}

/// Hand one message to the pipeline, unless it is a retained message whose record was made
/// already ([`Held::handled`]): that one is acknowledged at once, without a record. Returns
/// false when the pipeline is gone.
async fn take(
    ctx: &Context,
    cfg: &MqttSourceConfig,
    held: &Held,
    acks: &mpsc::UnboundedSender<PubAck>,
    connection: u32,
    p: Publish,
) -> bool {
    // The broker sets the flag only on what a SUBSCRIBE made it send.
    let retained = p.retain.then(|| held::fingerprint(&p.topic, &p.payload));
    if !retained.is_some_and(|f| held.handled(&f)) {
        return forward(ctx, cfg, acks, connection, p, retained).await;
    }
    log::debug!(
        "mqtt: the retained message on {} was made into a record already: acknowledged",
        crate::format::Excerpt::from(&p.topic)
    );
    ctx.metrics.mqtt_retained_skipped.inc();
    if ack_of(acks, connection, &p, None).send() == Sent::Acked {
        ctx.metrics.acked.inc();
    }
    true
}

/// The PUBACK of message `p` of connection `connection`, to be sent through `acks`.
fn ack_of(
    acks: &mpsc::UnboundedSender<PubAck>,
    connection: u32,
    p: &Publish,
    retained: Option<held::Fingerprint>,
) -> Ack {
    Ack::Mqtt {
        acks: acks.clone(),
        ack: PubAck {
            connection,
            qos: p.qos,
            pkid: p.pkid,
            retained,
        },
    }
}

/// Hand one message to the pipeline; `retained`: its fingerprint, if a retained message, kept
/// once its record is durable. Returns false when the pipeline is gone.
async fn forward(
    ctx: &Context,
    cfg: &MqttSourceConfig,
    acks: &mpsc::UnboundedSender<PubAck>,
    connection: u32,
    p: Publish,
    retained: Option<held::Fingerprint>,
) -> bool {
    let input = if p.payload.len() as u64 > cfg.max_message {
        let topic = &p.topic;
        ctx.metrics.problem("mqtt_oversized", || {
            format!(
                "mqtt: a message of {} bytes on {topic} is over max_message ({} bytes): kept as a dead letter",
                p.payload.len(),
                cfg.max_message
            )
        });
        let reason = format!("over max_message ({} bytes)", cfg.max_message);
        Some(Input::DeadLetter(Box::new(DeadLetter::new(
            "mqtt",
            reason,
            Some(topic),
            &p.payload,
            SystemTime::now(),
        ))))
    } else {
        ctx.parse("mqtt", Some(&p.topic), cfg.format, &p.payload)
    };
    let ack = ack_of(acks, connection, &p, retained);
    match input {
        Some(input) => ctx.frames.send("mqtt", input, ack).await.is_ok(),
        // No record: the broker's next delivery of a retained message gets another chance
        // (a `format` fixed meanwhile). This task takes the ack: it cannot fail.
        None => {
            if ack.without_retained().send() == Sent::Acked {
                ctx.metrics.acked.inc();
            }
            true
        }
    }
}

/// Send a DISCONNECT after what rumqttc's request queue holds, then stop polling. Without a
/// connection, nothing: a poll would connect only to leave.
pub async fn disconnect(client: &AsyncClient, events: &mut EventLoop) {
    if events.network.is_none() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // The only error is a full queue (the event loop is ours).
        let mut queued = false;
        loop {
            queued = queued || client.try_disconnect().is_ok();
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet id the broker answers that this connection did not send (a QoS 2 delivery's
    /// PUBREL owed from before a reconnect, which rumqttc cannot finish) says what clears it.
    #[test]
    fn an_unsolicited_answer_names_the_session_to_clear() {
        let e = rumqttc::ConnectionError::MqttState(rumqttc::StateError::Unsolicited(7));
        let line = connection_error(&e);
        assert!(line.contains("packet id 7"), "{line}");
        assert!(line.contains("remove that session on the broker"), "{line}");
    }
    use crate::source::TestContext;

    #[test]
    fn default_topics_per_format() {
        assert_eq!(
            default_topic(UplinkFormat::ChirpstackV4),
            "application/+/device/+/event/up"
        );
        assert_eq!(default_topic(UplinkFormat::TtsV3), "v3/+/devices/+/up");
        assert_eq!(
            default_topic(UplinkFormat::ChirpstackGateway),
            "+/gateway/+/event/up"
        );
    }

    /// A release's acknowledgements are written and flushed at once, in order, without a poll
    /// of the event loop (which would write one per poll); QoS 0 needs none.
    #[tokio::test]
    async fn acknowledgements_of_a_release_are_written_at_once() {
        let (_client, mut events, mut s) = connected_loop().await;
        let mut acks = Acks {
            taken: (1..=5)
                .map(|pkid| puback(0, QoS::AtLeastOnce, pkid))
                .collect(),
            current: 0,
        };
        acks.taken.push(puback(0, QoS::AtMostOnce, 0));
        acks.taken.push(puback(0, QoS::ExactlyOnce, 6));
        acks.write(&mut events, &mut held().await).await.unwrap();
        assert!(acks.taken.is_empty());
        let mut received = Vec::new();
        for _ in 0..6 {
            received.push(within(read_packet(&mut s)).await.unwrap());
        }
        let pubacks: Vec<(u8, Vec<u8>)> = (1..=5).map(|pkid| (0x40, vec![0, pkid])).collect();
        assert_eq!(received, [pubacks, vec![(0x50, vec![0, 6])]].concat());
    }

    fn puback(connection: u32, qos: QoS, pkid: u16) -> PubAck {
        PubAck {
            connection,
            qos,
            pkid,
            retained: None,
        }
    }

    /// A client (id `t`) and its event loop connected to a fake broker, and the broker's end.
    async fn connected_loop() -> (AsyncClient, EventLoop, tokio::net::TcpStream) {
        let (listener, port) = listening("127.0.0.1:0").await;
        let (client, mut events) =
            AsyncClient::new(MqttOptions::new("t", "127.0.0.1", port), REQUESTS);
        let (s, connack) = within(async { tokio::join!(session(&listener), events.poll()) }).await;
        assert!(
            matches!(connack, Ok(Event::Incoming(Packet::ConnAck(_)))),
            "{connack:?}"
        );
        (client, events, s)
    }

    /// A session file kept in memory.
    async fn held() -> Held {
        Held::load(None, "b", "t", "t", crate::metrics::Metrics::new()).await
    }

    /// An acknowledgement released after its connection failed is not sent on the next one,
    /// where its packet id may name a newer message the pipeline still holds; with no
    /// connection at all, none is.
    #[tokio::test]
    async fn acknowledgements_of_a_failed_connection_are_dropped() {
        use tokio::io::AsyncReadExt;
        let mut taken = vec![
            puback(0, QoS::AtLeastOnce, 1),
            puback(1, QoS::AtLeastOnce, 1),
            puback(0, QoS::AtLeastOnce, 2),
            puback(1, QoS::AtLeastOnce, 3),
        ];
        let mut acks = Acks {
            taken: taken.clone(),
            current: 1,
        };
        let mut unconnected = EventLoop::new(MqttOptions::new("t", "127.0.0.1", 9), REQUESTS);
        acks.write(&mut unconnected, &mut held().await)
            .await
            .unwrap();
        assert!(acks.taken.is_empty(), "dropped without a connection");
        let (_client, mut events, mut s) = connected_loop().await;
        acks.taken.append(&mut taken);
        acks.write(&mut events, &mut held().await).await.unwrap();
        drop(events);
        let mut received = Vec::new();
        within(s.read_to_end(&mut received)).await.unwrap();
        assert_eq!(received, [0x40, 2, 0, 1, 0x40, 2, 0, 3]);
    }

    /// A write of acknowledgements on a connection the broker reset reports the error, and
    /// the next poll says it before anything else.
    #[tokio::test]
    async fn a_failed_write_of_acknowledgements_is_the_next_polls_error() {
        let (_client, mut events, s) = connected_loop().await;
        // Closed with a reset: the writes after it fail (the first may still be taken).
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let failed = within(async {
            loop {
                let mut acks = Acks {
                    taken: vec![puback(0, QoS::AtLeastOnce, 1)],
                    current: 0,
                };
                if let Err(e) = acks.write(&mut events, &mut held().await).await {
                    return e;
                }
            }
        })
        .await;
        let reset = |e: &rumqttc::ConnectionError| match e {
            rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                rumqttc::mqttbytes::Error::Io(e),
            )) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        };
        assert!(reset(&failed), "{failed:?}");
        let mut write_failed = Some(failed);
        let polled = poll(&mut events, &mut write_failed).await;
        assert!(polled.as_ref().is_err_and(reset), "{polled:?}");
        assert!(write_failed.is_none());
    }

    /// At shutdown the acknowledgements the pipeline released last are written, in order, and
    /// then the DISCONNECT; without a connection, no DISCONNECT (no reconnect just to leave).
    #[tokio::test]
    async fn the_last_acknowledgements_go_out_before_the_disconnect() {
        use tokio::io::AsyncReadExt;
        let (client, mut events, mut s) = connected_loop().await;
        let (tx, rx) = mpsc::unbounded_channel();
        for pkid in 1..=3 {
            tx.send(puback(0, QoS::AtLeastOnce, pkid)).unwrap();
        }
        drop(tx);
        let mut acks = Acks::default();
        within(last_acks(rx, &mut acks, &mut events, &mut held().await)).await;
        within(disconnect(&client, &mut events)).await;
        drop(events);
        let mut received = Vec::new();
        within(s.read_to_end(&mut received)).await.unwrap();
        let pubacks = (1..=3).flat_map(|pkid| [0x40, 2, 0, pkid]);
        assert_eq!(received, pubacks.chain([0xe0, 0]).collect::<Vec<u8>>());

        let (listener, port) = listening("127.0.0.1:0").await;
        let (client, mut events) =
            AsyncClient::new(MqttOptions::new("t", "127.0.0.1", port), REQUESTS);
        within(disconnect(&client, &mut events)).await;
        drop(events);
        // A disconnect that connected would have waited for a CONNACK (up to its 2 s): its
        // connection would be waiting here.
        let accepted = tokio::time::timeout(Duration::ZERO, listener.accept()).await;
        assert!(accepted.is_err(), "connected: {accepted:?}");
    }

    /// A write of acknowledgements that fails ends the connection as the event loop's own
    /// errors do: the next one is numbered anew, so what the failed one brought is not
    /// acknowledged on it (a broker that lost the session numbers its messages from 1 again).
    #[tokio::test]
    async fn a_failed_write_of_acknowledgements_ends_the_connection() {
        use tokio::io::AsyncWriteExt;
        let (listener, port) = listening("127.0.0.1:0").await;
        let broker = tokio::spawn(async move {
            let (mut failed, _) = subscribed(&listener).await;
            failed
                .write_all(&[publish(1, 1), publish(2, 2)].concat())
                .await
                .unwrap();
            let mut s = session(&listener).await;
            assert_eq!(read_packet(&mut s).await.unwrap().0, 0x82, "SUBSCRIBE");
            s.write_all(&publish(2, 3)).await.unwrap();
            let mut pubacks = Vec::new();
            while let Some((kind, rest)) = read_packet(&mut s).await {
                if kind == 0x40 {
                    pubacks.push(u16::from_be_bytes([rest[0], rest[1]]));
                }
            }
            drop(failed);
            pubacks
        });
        let mut r = running(source_on(&format!("127.0.0.1:{port}")));
        let first = within(r.frames.recv()).await.expect("a frame");
        let second = within(r.frames.recv()).await.expect("a frame");
        // Writes on the connection fail from now on; its reads wait, the broker silent.
        shut(port, std::net::Shutdown::Write);
        let mut tags = vec![tag(&first), tag(&second)];
        assert_eq!(first.ack.send(), Sent::Acked);
        let third = within(r.frames.recv()).await.expect("a frame");
        tags.push(tag(&third));
        assert_eq!(tags, [(0, 1), (0, 2), (1, 2)]);
        // The second message's record is durable only now, after the failure.
        assert_eq!(second.ack.send(), Sent::Acked);
        assert_eq!(third.ack.send(), Sent::Acked);
        r.all_acked.send(true).unwrap();
        within(r.source).await.unwrap();
        let pubacks = within(broker).await.unwrap();
        assert_eq!(pubacks, [2], "the third message's PUBACK alone");
    }

    /// The connection and packet id a frame's acknowledgement carries.
    fn tag(f: &super::super::Frame) -> (u32, u16) {
        match &f.ack {
            Ack::Mqtt { ack, .. } => (ack.connection, ack.pkid),
            Ack::None | Ack::Part(_) => panic!("no PUBACK"),
        }
    }

    /// One MQTT packet from `s` (type and flags, rest), or `None` at the end.
    async fn read_packet(s: &mut tokio::net::TcpStream) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let kind = s.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut rest = vec![0; len];
        s.read_exact(&mut rest).await.ok()?;
        Some((kind, rest))
    }

    /// A packet's remaining length.
    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A QoS 1 PUBLISH on topic `t` of an uplink whose payload is the byte `data`.
    fn publish(pkid: u16, data: u8) -> Vec<u8> {
        let body = [
            &[0, 1, b't'][..],
            &pkid.to_be_bytes(),
            uplink(data).as_bytes(),
        ]
        .concat();
        [&[0x32][..], &varint(body.len()), &body].concat()
    }

    /// The same at QoS 0, which has no packet id.
    fn publish_qos0(data: u8) -> Vec<u8> {
        let body = [&[0, 1, b't'][..], uplink(data).as_bytes()].concat();
        [&[0x30][..], &varint(body.len()), &body].concat()
    }

    /// A ChirpStack uplink event whose payload is the byte `data`.
    fn uplink(data: u8) -> String {
        use base64::Engine;
        format!(
            r#"{{"deviceInfo":{{"devEui":"58a0cb0000101234"}},"data":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode([data])
        )
    }

    /// The config of a source of the broker at `address` (`host:port`), topic `t`.
    fn source_on(address: &str) -> MqttSourceConfig {
        let text = format!(
            "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://{address}\"\ntopic = \"t\"\n[sink]\ntype = \"stdout\"\n"
        );
        let crate::config::SourceConfig::Mqtt(cfg) = crate::config::Config::parse(&text)
            .unwrap()
            .sources
            .remove(0)
        else {
            panic!("not mqtt")
        };
        *cfg
    }

    const CONNACK_NEW_SESSION: [u8; 4] = [0x20, 2, 0, 0];
    const SESSION_PRESENT: [u8; 4] = [0x20, 2, 1, 0];

    /// `f`'s output, within 10 s: a regression fails instead of hanging.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("in time")
    }

    /// A fake broker's listener on `address`, and its port.
    async fn listening(address: &str) -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// The next connection to `listener`, its CONNECT answered with a new session.
    async fn session(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        connected(listener, CONNACK_NEW_SESSION).await
    }

    /// The same, answered with "session present".
    async fn kept_session(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        connected(listener, SESSION_PRESENT).await
    }

    /// The next connection to `listener`, its CONNECT answered with `connack`.
    async fn connected(
        listener: &tokio::net::TcpListener,
        connack: [u8; 4],
    ) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let (mut s, _) = listener.accept().await.unwrap();
        assert_eq!(read_packet(&mut s).await.unwrap().0, 0x10, "CONNECT");
        s.write_all(&connack).await.unwrap();
        s
    }

    /// The next connection to `listener` up to its SUBSCRIBE, read: the stream and the
    /// SUBSCRIBE's body (its packet id first).
    async fn subscribed(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, Vec<u8>) {
        let mut s = session(listener).await;
        let (kind, rest) = read_packet(&mut s).await.unwrap();
        assert_eq!(kind, 0x82, "SUBSCRIBE");
        (s, rest)
    }

    /// A source running `cfg` (client id `t`), with what the pipeline would hold of it.
    struct Running {
        source: tokio::task::JoinHandle<()>,
        frames: mpsc::Receiver<super::super::Frame>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        /// Says that the last acknowledgement was handed over: the source disconnects.
        all_acked: tokio::sync::watch::Sender<bool>,
        /// Kept: with it gone the source would take that as a stop.
        _stop: tokio::sync::watch::Sender<bool>,
    }

    fn running(cfg: MqttSourceConfig) -> Running {
        running_in(cfg, None)
    }

    /// The same, keeping its session's file in `kept_in`.
    fn running_in(cfg: MqttSourceConfig, kept_in: Option<PathBuf>) -> Running {
        running_with(cfg, kept_in, 8)
    }

    /// The same, with a pipeline queue of `frames` frames.
    fn running_with(cfg: MqttSourceConfig, kept_in: Option<PathBuf>, frames: usize) -> Running {
        let opts = options(&cfg, "t").unwrap();
        let t = TestContext::new(frames, 1 << 20);
        Running {
            source: tokio::spawn(run(cfg, opts, kept_in, t.ctx)),
            frames: t.forwarder,
            metrics: t.metrics,
            all_acked: t.all_acked,
            _stop: t.stop,
        }
    }

    /// rumqttc keeps the messages of a read that ended in an error and hands them out after
    /// the reconnect. They are the old connection's: a broker that lost the session numbers
    /// new messages from 1 again, and a PUBACK 1 for an old message released on the new
    /// connection would acknowledge the new message 1 before its record is durable.
    #[tokio::test]
    async fn messages_read_before_a_connection_failed_are_not_acknowledged_on_the_next() {
        use tokio::io::AsyncWriteExt;
        let (listener, port) = listening("127.0.0.1:0").await;
        let broker = tokio::spawn(async move {
            let mut s = session(&listener).await;
            assert_eq!(read_packet(&mut s).await.unwrap().0, 0x82, "SUBSCRIBE");
            // Two messages and, in the same segment, the header of one over READ_LIMIT:
            // rumqttc reads all three at once and fails on the third.
            let over = [&[0x32][..], &varint(READ_LIMIT + 1)].concat();
            let batch = [publish(1, 1), publish(2, 2), over].concat();
            s.write_all(&batch).await.unwrap();
            while read_packet(&mut s).await.is_some() {}
            // The broker lost the session: its next message is number 1 again.
            let (mut s, _) = listener.accept().await.unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap().0, 0x10, "CONNECT");
            s.write_all(&[&CONNACK_NEW_SESSION[..], &publish(1, 3)].concat())
                .await
                .unwrap();
            let mut pubacks = Vec::new();
            while let Some((kind, rest)) = read_packet(&mut s).await {
                if kind == 0x40 {
                    pubacks.push(u16::from_be_bytes([rest[0], rest[1]]));
                }
            }
            pubacks
        });
        let mut r = running(source_on(&format!("127.0.0.1:{port}")));
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(within(r.frames.recv()).await.expect("a frame"));
        }
        let tags: Vec<(u32, u16)> = taken.iter().map(tag).collect();
        assert_eq!(tags, [(0, 1), (0, 2), (1, 1)]);
        // The old messages' records become durable first, then the new one's.
        for f in taken {
            assert_eq!(f.ack.send(), Sent::Acked);
        }
        r.all_acked.send(true).unwrap();
        r.source.await.unwrap();
        let pubacks = within(broker).await.unwrap();
        assert_eq!(pubacks, [1], "only the new message's PUBACK");
    }

    /// The subscription is asked for at every CONNACK, also at one that says the session is
    /// present: a broker that restored an older session (from a persistence file saved before
    /// the subscription) says so too, and would deliver nothing on the filter otherwise. (A
    /// guard: a build that asks only when the session is missing fails it.)
    #[tokio::test]
    async fn the_subscription_is_asked_for_at_every_connack_with_the_session_present() {
        use tokio::io::AsyncWriteExt;
        let (listener, port) = listening("127.0.0.1:0").await;
        let broker = tokio::spawn(async move {
            let (mut s, rest) = subscribed(&listener).await;
            // QoS 1 granted; the PUBACK of the message after it says the SUBACK was read.
            s.write_all(&[&[0x90, 3, rest[0], rest[1], 1][..], &publish(1, 0)].concat())
                .await
                .unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap().0, 0x40, "PUBACK");
            drop(s);
            // What comes first after each CONNACK that says "session present", with a
            // message to acknowledge after it.
            let mut firsts = Vec::new();
            for data in [1, 2] {
                let (mut s, _) = listener.accept().await.unwrap();
                assert_eq!(read_packet(&mut s).await.unwrap().0, 0x10, "CONNECT");
                s.write_all(&[&SESSION_PRESENT[..], &publish(1, data)].concat())
                    .await
                    .unwrap();
                firsts.push(read_packet(&mut s).await.unwrap().0);
            }
            firsts
        });
        let mut r = running(source_on(&format!("127.0.0.1:{port}")));
        for _ in 0..3 {
            let frame = within(r.frames.recv()).await.expect("a frame");
            frame.ack.send();
        }
        let firsts = within(broker).await.unwrap();
        r.source.abort();
        let subscribe = 0x82;
        assert_eq!(firsts, [subscribe, subscribe]);
    }

    /// A retained delivery (the broker's, at a SUBSCRIBE) of a message whose record was made
    /// is acknowledged without another: known once its acknowledgement is released, not
    /// before (a copy that comes meanwhile is taken again). A live delivery of the same, and
    /// another retained message on the topic, are taken.
    #[tokio::test]
    async fn a_retained_message_is_skipped_only_once_its_record_is_made() {
        use tokio::io::AsyncWriteExt;
        let (listener, port) = listening("127.0.0.1:0").await;
        let retained = |pkid, data| {
            let mut p = publish(pkid, data);
            p[0] |= 1;
            p
        };
        let broker = tokio::spawn(async move {
            let (mut s, rest) = subscribed(&listener).await;
            let suback = [0x90, 3, rest[0], rest[1], 1];
            s.write_all(&[&suback[..], &retained(1, 5), &retained(2, 5)].concat())
                .await
                .unwrap();
            let mut pubacks = Vec::new();
            async fn next(s: &mut tokio::net::TcpStream, pubacks: &mut Vec<u16>) {
                let (kind, rest) = read_packet(s).await.unwrap();
                assert_eq!(kind, 0x40, "PUBACK");
                pubacks.push(u16::from_be_bytes([rest[0], rest[1]]));
            }
            for _ in 0..2 {
                next(&mut s, &mut pubacks).await;
            }
            // Both records made: the same again, then live, then another retained one.
            s.write_all(&retained(3, 5)).await.unwrap();
            next(&mut s, &mut pubacks).await;
            s.write_all(&[publish(4, 5), retained(5, 6)].concat())
                .await
                .unwrap();
            for _ in 0..2 {
                next(&mut s, &mut pubacks).await;
            }
            pubacks
        });
        let mut r = running(source_on(&format!("127.0.0.1:{port}")));
        let mut taken = Vec::new();
        for ack_at in [2, 4] {
            let mut frames = Vec::new();
            for _ in 0..2 {
                let frame = tokio::time::timeout(Duration::from_secs(10), r.frames.recv());
                let frame = frame
                    .await
                    .unwrap_or_else(|_| panic!("frames taken: {taken:?}"));
                frames.push(frame.expect("a frame"));
            }
            taken.extend(frames.iter().map(|f| match &f.ack {
                Ack::Mqtt { ack, .. } => (ack.pkid, ack.retained.is_some()),
                Ack::None | Ack::Part(_) => panic!("no PUBACK"),
            }));
            assert_eq!(taken.len(), ack_at);
            for f in frames {
                f.ack.send();
            }
        }
        let pubacks = within(broker).await.unwrap();
        r.source.abort();
        assert_eq!(taken, [(1, true), (2, true), (4, false), (5, true)]);
        assert_eq!(pubacks, [1, 2, 3, 4, 5]);
        assert_eq!(r.metrics.mqtt_retained_skipped.get(), 1);
    }

    /// A retained message that made no record (not an uplink of the configured `format`) is
    /// acknowledged without its fingerprint kept: the broker's next delivery of it is taken
    /// again, so a `format` fixed meanwhile makes its record.
    #[tokio::test]
    async fn a_retained_message_that_made_no_record_is_taken_again() {
        use tokio::io::AsyncWriteExt;
        let (listener, port) = listening("127.0.0.1:0").await;
        let broker = tokio::spawn(async move {
            let (mut s, rest) = subscribed(&listener).await;
            let not_an_uplink = |pkid: u16| {
                let body = [&[0, 1, b't'][..], &pkid.to_be_bytes(), b"{}"].concat();
                [&[0x33][..], &varint(body.len()), &body].concat()
            };
            s.write_all(&[&[0x90, 3, rest[0], rest[1], 1][..], &not_an_uplink(1)].concat())
                .await
                .unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap(), (0x40, vec![0, 1]));
            // The same again, then a live uplink whose record says both were taken.
            s.write_all(&[not_an_uplink(2), publish(3, 1)].concat())
                .await
                .unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap(), (0x40, vec![0, 2]));
            s
        });
        let mut r = running(source_on(&format!("127.0.0.1:{port}")));
        let frame = within(r.frames.recv()).await.expect("a frame");
        assert!(matches!(frame.input, Input::Uplink(_)));
        let _s = within(broker).await.unwrap();
        r.source.abort();
        assert_eq!(r.metrics.mqtt_retained_skipped.get(), 0);
    }

    /// At a CONNACK the subscription goes first, and the UNSUBSCRIBE of a filter no longer
    /// configured only once a SUBACK on this connection granted it: an old filter that
    /// overlaps the new one is left only once the new one is in place, so no live message
    /// between the two matches neither, and one the broker refuses (its ACL) leaves the old
    /// filter delivering. A grant on an earlier connection does not count: here the first
    /// connection is granted and fails after its UNSUBSCRIBE, before the UNSUBACK, and the
    /// broker refuses the subscription on the next, which keeps the old filter (in the file
    /// too) until its retry is granted. Nor does a SUBACK for another packet id than the
    /// SUBSCRIBE's. Its UNSUBACK takes the old filter off the file.
    #[tokio::test]
    async fn an_old_filter_is_unsubscribed_from_once_this_connection_is_granted() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let (listener, port) = listening("127.0.0.1:0").await;
        let cfg = source_on(&format!("127.0.0.1:{port}"));
        let broker_key = cfg.url.authority();
        let file = held::file_in(dir.path(), &broker_key, "t");
        let metrics = crate::metrics::Metrics::new();
        let mut old = Held::load(Some(file.clone()), &broker_key, "t", "old/#", metrics).await;
        old.connected(true).await;
        old.subscribed().await;
        drop(old);
        let (subscribe, unsubscribe) = (0x82, 0xa2);
        let in_file = (file.clone(), broker_key.clone());
        let broker = tokio::spawn(async move {
            // Granted, then gone before the UNSUBACK.
            let mut s = kept_session(&listener).await;
            let (kind, sub) = read_packet(&mut s).await.unwrap();
            assert_eq!(kind, subscribe);
            s.write_all(&[0x90, 3, sub[0], sub[1], 1]).await.unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap().0, unsubscribe);
            drop(s);
            let mut s = kept_session(&listener).await;
            let mut asked = Vec::new();
            // Refused, then (asked again after the backoff) granted; each answer comes
            // after a SUBACK that grants a packet id not asked, which counts for nothing.
            for code in [0x80, 1] {
                let (kind, sub) = read_packet(&mut s).await.unwrap();
                asked.push((kind, sub.clone()));
                assert_eq!(kind, subscribe, "{asked:?}");
                assert_eq!(to_leave(&in_file.0, &in_file.1).await, ["old/#"]);
                let stray = (u16::from_be_bytes([sub[0], sub[1]]) ^ 1).to_be_bytes();
                let answers = [
                    [0x90, 3, stray[0], stray[1], 1],
                    [0x90, 3, sub[0], sub[1], code],
                ];
                s.write_all(&answers.concat()).await.unwrap();
            }
            let (kind, unsub) = read_packet(&mut s).await.unwrap();
            asked.push((kind, unsub.clone()));
            let answers = [&[0xb0, 2, unsub[0], unsub[1]][..], &publish(1, 0)];
            s.write_all(&answers.concat()).await.unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap().0, 0x40, "PUBACK");
            asked
        });
        let mut r = running_in(cfg, Some(dir.path().to_path_buf()));
        // Taken after the UNSUBACK, which the source handled first.
        let frame = within(r.frames.recv()).await.expect("a frame");
        frame.ack.send();
        let asked = within(broker).await.unwrap();
        r.source.abort();
        let kinds: Vec<u8> = asked.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, [subscribe, subscribe, unsubscribe]);
        // The UNSUBSCRIBE: its packet id, then the filter.
        assert_eq!(asked[2].1[2..], [&[0, 5][..], b"old/#"].concat());
        assert_eq!(r.metrics.problems("mqtt_subscribe_refused"), 1);
        assert!(to_leave(&file, &broker_key).await.is_empty(), "left");
    }

    /// The longest topic filter the config takes goes out in the source's SUBSCRIBE, which
    /// rumqttc refuses to send over [`WRITE_LIMIT`]; one byte more would be refused at every
    /// connect, so [`check_filter`] refuses it when the config is loaded.
    #[tokio::test]
    async fn the_longest_filter_taken_is_subscribed_to() {
        let longest = "x".repeat(65_527);
        check_filter(&longest).unwrap();
        assert_eq!(
            check_filter(&format!("{longest}x")).unwrap_err(),
            "it is 65528 bytes long: its SUBSCRIBE would be 65537 bytes, over the 65536 hubgate \
             sends in one packet"
        );
        let (listener, port) = listening("127.0.0.1:0").await;
        let mut cfg = source_on(&format!("127.0.0.1:{port}"));
        cfg.topic = Some(longest.clone());
        let broker = tokio::spawn(async move {
            let mut s = session(&listener).await;
            read_packet(&mut s).await.unwrap()
        });
        let r = running(cfg);
        let (kind, body) = within(broker).await.unwrap();
        r.source.abort();
        assert_eq!(kind, 0x82, "SUBSCRIBE");
        // After the packet id: the filter's length, the filter, QoS 1.
        assert_eq!(
            body[2..],
            [&[0xff, 0xf7][..], longest.as_bytes(), &[1]].concat()
        );
    }

    /// The filters to leave that the session file `file` of broker `key` lists, for a source
    /// of client id and topic `t`.
    async fn to_leave(file: &std::path::Path, key: &str) -> Vec<String> {
        let metrics = crate::metrics::Metrics::new();
        let mut now = Held::load(Some(file.to_path_buf()), key, "t", "t", metrics).await;
        now.connected(true).await
    }

    /// The UNSUBSCRIBEs a SUBACK queued may still be in rumqttc's request queue when the
    /// connection fails. rumqttc keeps them and, the broker keeping the session, would write
    /// them first on the next connection: an old filter left before a SUBACK there granted
    /// the configured one, and each packet id taken by the source for the filter it queued
    /// next. They are dropped: the next connection asks for the subscription first and
    /// leaves the old filters once it is granted, each UNSUBACK taking its own filter off the
    /// session file.
    ///
    /// The source is held inside the SUBACK's read (a pipeline queue of one frame, two more
    /// messages of that read to hand over) while the test shuts its socket down. rumqttc's
    /// next read then finds the end and its next write fails, whichever it tries first: the
    /// first UNSUBSCRIBE, if taken, fails to go out, and the second stays queued.
    #[tokio::test]
    async fn requests_queued_on_a_connection_that_failed_are_not_written_on_the_next() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let (listener, port) = listening("127.0.0.1:0").await;
        let cfg = source_on(&format!("127.0.0.1:{port}"));
        let broker_key = cfg.url.authority();
        let file = held::file_in(dir.path(), &broker_key, "t");
        // Two filters granted before, no longer configured.
        for old in ["a/#", "b/#"] {
            let metrics = crate::metrics::Metrics::new();
            let mut h = Held::load(Some(file.clone()), &broker_key, "t", old, metrics).await;
            h.connected(true).await;
            h.subscribed().await;
        }
        let (subscribe, unsubscribe) = (0x82, 0xa2);
        let broker = tokio::spawn(async move {
            let mut s = kept_session(&listener).await;
            let (kind, sub) = read_packet(&mut s).await.unwrap();
            assert_eq!(kind, subscribe);
            let batch = [
                &[0x90, 3, sub[0], sub[1], 1][..],
                &publish(1, 1),
                &publish(2, 2),
                &publish(3, 3),
            ];
            s.write_all(&batch.concat()).await.unwrap();
            // Until the test shuts the source's socket down.
            let mut on_the_failed = Vec::new();
            while let Some(packet) = read_packet(&mut s).await {
                on_the_failed.push(packet);
            }
            // The next: each SUBSCRIBE granted; the UNSUBSCRIBEs after the grant answered in
            // the reverse order, then a message whose PUBACK says the answers were handled.
            let mut s = kept_session(&listener).await;
            let mut on_the_next = Vec::new();
            let mut left = Vec::new();
            while left.len() < 2 {
                let (kind, rest) = read_packet(&mut s).await.unwrap();
                on_the_next.push((kind, rest.clone()));
                if kind == subscribe {
                    s.write_all(&[0x90, 3, rest[0], rest[1], 1]).await.unwrap();
                } else if on_the_next.iter().any(|(k, _)| *k == subscribe) {
                    left.push([rest[0], rest[1]]);
                }
            }
            let unsubacks = left.iter().rev().flat_map(|id| [0xb0, 2, id[0], id[1]]);
            let answers = [&unsubacks.collect::<Vec<u8>>()[..], &publish(1, 4)];
            s.write_all(&answers.concat()).await.unwrap();
            assert_eq!(read_packet(&mut s).await.unwrap(), (0x40, vec![0, 1]));
            (on_the_failed, on_the_next)
        });
        let mut r = running_with(cfg, Some(dir.path().to_path_buf()), 1);
        // The first message is handed over, so the SUBACK before it was handled; the source
        // waits to hand over the other two, polling rumqttc no more.
        let mut frames = vec![within(r.frames.recv()).await.expect("a frame")];
        cut(port);
        for _ in 0..3 {
            frames.push(within(r.frames.recv()).await.expect("a frame"));
        }
        let tags: Vec<(u32, u16)> = frames.iter().map(tag).collect();
        assert_eq!(tags, [(0, 1), (0, 2), (0, 3), (1, 1)]);
        frames.pop().unwrap().ack.send();
        let (on_the_failed, on_the_next) = within(broker).await.unwrap();
        r.source.abort();
        assert_eq!(on_the_failed, [], "nothing written after the SUBSCRIBE");
        let kinds: Vec<u8> = on_the_next.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, [subscribe, unsubscribe, unsubscribe]);
        // The SUBSCRIBE's filter; each UNSUBSCRIBE's, in the order the file lists them.
        assert_eq!(on_the_next[0].1[2..], [&[0, 1][..], b"t", &[1]].concat());
        assert_eq!(on_the_next[1].1[2..], [&[0, 3][..], b"a/#"].concat());
        assert_eq!(on_the_next[2].1[2..], [&[0, 3][..], b"b/#"].concat());
        assert!(to_leave(&file, &broker_key).await.is_empty(), "both left");
    }

    /// Shut this process's socket connected to the fake broker on `port` down both ways, as
    /// a failed network leaves it: its next read finds the end, its next write fails.
    fn cut(port: u16) {
        shut(port, std::net::Shutdown::Both);
    }

    /// Shut this process's socket connected to the fake broker on `port` down `how`.
    fn shut(port: u16, how: std::net::Shutdown) {
        let broker = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let fds = super::super::quickack::connected_to(&[broker]).unwrap();
        let [fd] = fds[..] else {
            panic!("sockets connected to the broker: {fds:?}")
        };
        // SAFETY: `fd` is rumqttc's socket, open: it is closed when a read or a write on it
        // fails (in `EventLoop::poll`, or in the source's write of PUBACKs), and the tests
        // shut it only while the source can do neither: handing over a frame to a full
        // pipeline queue, or with the broker silent and nothing acknowledged. On the test's
        // single-threaded runtime the source does not run during this call either. Nothing
        // is closed; the borrow ends with the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        socket2::SockRef::from(&fd).shutdown(how).unwrap();
    }

    /// The SUBSCRIBEs and UNSUBSCRIBEs that rumqttc kept from a connection that failed are
    /// dropped at the next CONNACK, which asks anew; other requests stay
    /// (`requests_queued_on_a_connection_that_failed_are_not_written_on_the_next` fails a
    /// connection with UNSUBSCRIBEs queued).
    #[test]
    fn the_requests_of_a_failed_connection_are_asked_anew() {
        use rumqttc::{PubRel, Request, Subscribe, Unsubscribe};
        let (_client, mut events) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 9), 2);
        events.pending.extend([
            Request::Subscribe(Subscribe::new("t", QoS::AtLeastOnce)),
            Request::Unsubscribe(Unsubscribe::new("old/#")),
            Request::PubRel(PubRel::new(4)),
        ]);
        forget_asked(&mut events);
        assert_eq!(events.pending, [Request::PubRel(PubRel::new(4))]);
    }

    /// ChirpStack (`[integration.mqtt] qos=0`, its default) and many publishers send at QoS
    /// 0: the broker then delivers at QoS 0 although the subscription was granted QoS 1, keeps
    /// nothing for hubgate while it is away and wants no PUBACK. The SUBACK does not show it,
    /// so the first such message of each connection is a problem.
    #[tokio::test]
    async fn messages_delivered_at_qos0_are_reported_once_per_connection() {
        use tokio::io::AsyncWriteExt;
        let (listener, port) = listening("127.0.0.1:0").await;
        let (taken, mut reconnect) = mpsc::unbounded_channel::<()>();
        let broker = tokio::spawn(async move {
            for data in [[1, 2].as_slice(), &[3]] {
                let (mut s, rest) = subscribed(&listener).await;
                // QoS 1 granted.
                s.write_all(&[0x90, 3, rest[0], rest[1], 1]).await.unwrap();
                let messages: Vec<u8> = data.iter().flat_map(|d| publish_qos0(*d)).collect();
                s.write_all(&messages).await.unwrap();
                // The connection ends once the test has taken its messages.
                reconnect.recv().await;
            }
        });
        let mut r = running(source_on(&format!("127.0.0.1:{port}")));
        let mut reported = Vec::new();
        for per_connection in [2, 1] {
            for _ in 0..per_connection {
                let frame = within(r.frames.recv()).await.expect("a QoS 0 uplink");
                assert!(matches!(frame.input, Input::Uplink(_)));
            }
            reported.push(r.metrics.problems("mqtt_qos0_received"));
            taken.send(()).unwrap();
        }
        r.source.abort();
        within(broker).await.unwrap();
        assert_eq!(reported, [1, 2]);
        assert_eq!(r.metrics.problems("mqtt_qos0_granted"), 0);
    }

    /// A broker at an IPv6 address (`mqtt://[::1]:port`) is reached, and the connection's
    /// socket is found for TCP_QUICKACK: both take the address without its brackets.
    #[tokio::test]
    async fn a_broker_at_an_ipv6_address_is_reached_and_its_socket_found() {
        // Containers without IPv6 have no `::1`: nothing to reach there.
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            eprintln!("skipped: no IPv6 loopback here");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let broker = tokio::spawn(async move {
            let mut s = session(&listener).await;
            while read_packet(&mut s).await.is_some() {}
        });
        let cfg = source_on(&format!("[::1]:{port}"));
        let (_client, mut events) = AsyncClient::new(options(&cfg, "t").unwrap(), 2);
        let connack = events.poll().await;
        assert!(
            matches!(connack, Ok(Event::Incoming(Packet::ConnAck(_)))),
            "{connack:?}"
        );
        let found = QuickAck::find(cfg.url.host.clone(), cfg.url.port).await;
        assert!(found.is_ok(), "{:?}", found.err());
        drop(events);
        broker.await.unwrap();
    }

    /// A SUBSCRIBE that finds rumqttc's request queue full is asked for again later, with a
    /// backoff that grows up to `reconnect_max` and starts over on a new connection; the
    /// retries are logged rate-limited, not each one.
    #[test]
    fn a_subscription_without_room_is_asked_for_again() {
        let (client, _events) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 9), 1);
        let metrics = crate::metrics::Metrics::new();
        let mut sub = Subscription::new(Duration::from_secs(1));
        sub.want(Vec::new());
        sub.ask(&client, "t/#", &metrics);
        assert!(sub.retry_at.is_none(), "queued");
        sub.want(Vec::new());
        sub.ask(&client, "t/#", &metrics);
        assert!(sub.retry_at.is_some(), "no room: later");
        let waits: Vec<u128> = (0..4).map(|_| sub.retry().as_millis()).collect();
        assert_eq!(waits, [500, 1000, 1000, 1000]);
        // Each retry that finds no room either is logged, rate-limited: one line.
        for _ in 0..3 {
            sub.ask(&client, "t/#", &metrics);
        }
        let logged: Vec<_> = metrics
            .recent_problems()
            .into_iter()
            .map(|w| w.kind)
            .collect();
        assert_eq!(logged, ["mqtt_requests_full"]);
        sub.lost();
        assert!(sub.retry_at.is_none(), "the next CONNACK asks");
        sub.connected();
        assert_eq!(sub.retry(), RECONNECT_MIN);
    }

    /// A broker that drops the connection right after CONNACK (as when it redelivers a
    /// message rumqttc cannot read) keeps the backoff growing and is logged once; a
    /// connection that stayed up starts over.
    #[test]
    fn only_a_stable_connection_resets_the_backoff() {
        let t0 = Instant::now();
        let mut r = Reconnect::new(Duration::from_secs(30));
        assert_eq!(r.failed(t0), (RECONNECT_MIN, true));
        let mut t = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            r.connected(t);
            t += Duration::from_millis(50);
            let (wait, first) = r.failed(t);
            assert!(!first);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        r.connected(t);
        assert_eq!(r.failed(t + STABLE), (RECONNECT_MIN, true));
    }

    /// The session is persistent (clean session off): a broker keeps what it did not get a
    /// PUBACK for across a reconnect, and delivers it again. With a clean session it would
    /// drop those messages, whose records were never made.
    #[tokio::test]
    async fn the_session_asked_for_is_persistent() {
        let (listener, port) = listening("127.0.0.1:0").await;
        let source = running(source_on(&format!("127.0.0.1:{port}")));
        let (mut s, _) = within(listener.accept()).await.unwrap();
        let (kind, connect) = within(read_packet(&mut s)).await.unwrap();
        assert_eq!(kind, 0x10, "CONNECT");
        // Protocol name (2 + 4 bytes), level, then the connect flags.
        assert_eq!(&connect[..7], &[0, 4, b'M', b'Q', b'T', b'T', 4]);
        assert_eq!(
            connect[7] & 0x02,
            0,
            "clean session flag in {:#04x}",
            connect[7]
        );
        source.source.abort();
    }
}
