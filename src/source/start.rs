//! The one way sources start: [`build`] every configured source (its settings checked,
//! nothing opened: what `hubgate check` runs too), [`Built::bind`] what listens (a UDP port
//! already taken stops the start with a clear error, and READY means every source listens),
//! then [`Bound::spawn`] each with its [`Context`].

use std::net::SocketAddr;
use std::path::PathBuf;

use rumqttc::MqttOptions;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use super::{Context, Patience};
use crate::config::{
    Config, MqttSourceConfig, ReplaySourceConfig, SerialSourceConfig, SourceConfig, UdpSourceConfig,
};

/// One source; `S` is its UDP socket once bound (`()` before). An MQTT source keeps what its
/// session holds in the buffer directory.
enum Source<S> {
    Mqtt(Box<(MqttSourceConfig, MqttOptions, PathBuf)>),
    Udp(UdpSourceConfig, S),
    Replay(ReplaySourceConfig),
    Serial(SerialSourceConfig),
}

/// The sources of a config, built but not started.
pub struct Built(Vec<Source<()>>);

/// The sources with their ports taken, ready to spawn.
pub struct Bound(Vec<Source<UdpSocket>>);

#[derive(Debug, thiserror::Error)]
#[error("udp source: cannot listen on {0}: {1}")]
pub struct BindError(pub SocketAddr, pub std::io::Error);

/// Build the sources of `cfg`: each MQTT session's options (the TLS files made into a
/// connector). On error (key path, reason).
pub fn build(cfg: &Config) -> Result<Built, (String, String)> {
    let mut out = Vec::with_capacity(cfg.sources.len());
    let client_ids = cfg.mqtt_client_ids();
    for (i, (src, client_id)) in cfg.sources.iter().zip(client_ids).enumerate() {
        out.push(match src {
            SourceConfig::Mqtt(m) => {
                let client_id = client_id.expect("every MQTT source has a client id");
                let options = super::mqtt::options(m, &client_id)
                    .map_err(|(key, e)| (format!("source[{i}].{key}"), e))?;
                Source::Mqtt(Box::new(((**m).clone(), options, cfg.buffer.path.clone())))
            }
            SourceConfig::Udp(u) => Source::Udp(u.clone(), ()),
            SourceConfig::Replay(r) => Source::Replay(r.clone()),
            SourceConfig::Serial(s) => Source::Serial(s.clone()),
        });
    }
    Ok(Built(out))
}

impl Built {
    /// Take every source's listening port.
    pub async fn bind(self) -> Result<Bound, BindError> {
        let mut out = Vec::with_capacity(self.0.len());
        for src in self.0 {
            out.push(match src {
                Source::Udp(u, ()) => {
                    let socket = UdpSocket::bind(u.listen)
                        .await
                        .map_err(|e| BindError(u.listen, e))?;
                    Source::Udp(u, socket)
                }
                Source::Mqtt(m) => Source::Mqtt(m),
                Source::Replay(r) => Source::Replay(r),
                Source::Serial(s) => Source::Serial(s),
            });
        }
        Ok(Bound(out))
    }
}

impl Bound {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Start every source as a task, each with the context `ctx` makes for its place in the
    /// config and its patience.
    pub fn spawn(self, ctx: impl Fn(usize, Patience) -> Context) -> Vec<JoinHandle<()>> {
        self.0
            .into_iter()
            .enumerate()
            .map(|(i, src)| match src {
                Source::Mqtt(m) => {
                    let (cfg, options, kept_in) = *m;
                    let ctx = ctx(i, Patience::CanWait);
                    tokio::spawn(super::mqtt::run(cfg, options, Some(kept_in), ctx))
                }
                Source::Udp(u, socket) => {
                    tokio::spawn(super::udp::run(socket, u, ctx(i, Patience::CannotWait)))
                }
                Source::Replay(r) => tokio::spawn(super::replay::run(r, ctx(i, Patience::CanWait))),
                Source::Serial(s) => {
                    tokio::spawn(super::serial::run(s, ctx(i, Patience::CannotWait)))
                }
            })
            .collect()
    }
}
