//! MQTT source (rumqttc): QoS 1, persistent session, manual acknowledgements.
//!
//! A message is acknowledged by the forwarder once its record is durable; malformed ones
//! are counted and acknowledged at once (redelivering them would not make them better).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;

use super::{Ack, Context, Frame};
use crate::config::MqttSourceConfig;

const RECONNECT_MIN: Duration = Duration::from_millis(250);

/// `mqtt://host[:port]` -> (host, port).
pub fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("bad MQTT url {url:?}: expected mqtt://host[:port]"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| format!("bad port in MQTT url {url:?}"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("bad MQTT url {url:?}: no host"));
    }
    Ok((host.to_string(), port))
}

/// The session options of `cfg` (`hubgate doctor` connects with them too).
pub fn options(cfg: &MqttSourceConfig, client_id: &str) -> Result<MqttOptions, String> {
    let (host, port) = parse_url(&cfg.url)?;
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(256 * 1024, 256 * 1024);
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

pub async fn run(cfg: MqttSourceConfig, client_id: String, ctx: Context) {
    let topic = cfg
        .topic
        .clone()
        .unwrap_or_else(|| cfg.format.default_topic().to_string());
    let opts = match options(&cfg, &client_id) {
        Ok(o) => o,
        Err(e) => {
            log::error!("mqtt: {e}");
            return;
        }
    };
    let (host, port) = opts.broker_address();
    let broker = format!("{host}:{port}");
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let mut acker = tokio::spawn(send_acks(client.clone(), ack_rx));
    let mut stopping = ctx.stopping.clone();
    let mut acked = ctx.acked.clone();
    let mut backoff = RECONNECT_MIN;
    let mut down_logged = false;
    loop {
        tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    log::info!("mqtt: connected to {} as {client_id} (session present: {})", cfg.url, ack.session_present);
                    backoff = RECONNECT_MIN;
                    down_logged = false;
                    ctx.metrics.mqtt_connected.set(&broker, 1);
                    if ack.session_present {
                        ctx.metrics.mqtt_subscribed.set(&broker, 1);
                    } else {
                        if let Err(e) = client.try_subscribe(&topic, QoS::AtLeastOnce) {
                            log::error!("mqtt: cannot subscribe to {topic}: {e}");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    log::info!("mqtt: subscribed to {topic}");
                    ctx.metrics.mqtt_subscribed.set(&broker, 1);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // Once stopping, leave new messages unacknowledged: the broker keeps them.
                    if !*ctx.stopping.borrow() && !forward(&ctx, &cfg, &ack_tx, p).await {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    ctx.metrics.mqtt_connected.set(&broker, 0);
                    ctx.metrics.mqtt_subscribed.set(&broker, 0);
                    if !down_logged {
                        log::warn!("mqtt: {}: {e}; reconnecting with backoff up to {:?}", cfg.url, cfg.reconnect_max);
                        down_logged = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(cfg.reconnect_max);
                }
            },
            _ = stopping.changed() => {}
            _ = acked.changed() => break,
        }
    }
    // Everything is acknowledged (or left to the broker): let the acknowledging task send
    // what it holds, polling the event loop meanwhile so the PUBACKs go out.
    drop(ack_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            tokio::select! {
                _ = &mut acker => break,
                ev = events.poll() => if ev.is_err() { break },
            }
        }
    })
    .await;
    disconnect(&client, &mut events).await;
}

/// PUBACKs in the order the pipeline releases them, waiting for room in the request queue.
async fn send_acks(client: AsyncClient, mut acks: mpsc::UnboundedReceiver<(QoS, u16)>) {
    while let Some((qos, pkid)) = acks.recv().await {
        // rumqttc acknowledges by QoS and packet id; the rest of the message is not needed.
        let mut p = Publish::new("", qos, Vec::new());
        p.pkid = pkid;
        if let Err(e) = client.ack(&p).await {
            log::warn!("mqtt: could not acknowledge message {pkid}: {e}");
            return;
        }
    }
}

/// Hand one message to the pipeline. Returns false when the pipeline is gone.
async fn forward(
    ctx: &Context,
    cfg: &MqttSourceConfig,
    acks: &mpsc::UnboundedSender<(QoS, u16)>,
    p: Publish,
) -> bool {
    let input = ctx.parse("mqtt", cfg.format, &p.payload);
    let ack = Ack::Mqtt {
        acks: acks.clone(),
        qos: p.qos,
        pkid: p.pkid,
    };
    match input {
        Some(input) => ctx
            .frames
            .send(Frame {
                source: "mqtt",
                input,
                ack,
            })
            .await
            .is_ok(),
        None => {
            ack.send();
            ctx.metrics.acked.inc();
            true
        }
    }
}

/// Send the queued acknowledgements and a DISCONNECT, then stop polling.
pub async fn disconnect(client: &AsyncClient, events: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
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
    #[test]
    fn urls() {
        assert_eq!(
            super::parse_url("mqtt://127.0.0.1:18830").unwrap(),
            ("127.0.0.1".into(), 18830)
        );
        assert_eq!(
            super::parse_url("mqtt://broker").unwrap(),
            ("broker".into(), 1883)
        );
        assert!(super::parse_url("http://x").is_err());
        assert!(super::parse_url("mqtt://x:port").is_err());
    }
}
