//! Semtech UDP packet forwarder source: answers PUSH_ACK and PULL_ACK so an unmodified
//! `lora_pkt_fwd` is content, and hands every good `rxpk` on as a radio frame.
//!
//! UDP cannot be acknowledged end to end: PUSH_ACK only tells the forwarder the datagram
//! arrived. What was received but not yet confirmed or buffered is lost on a power cut.
//!
//! Anyone who can reach the port can send datagrams, with any source address. Radio frames
//! still need the device's MIC to become records, but a gateway's `stat` and the radio
//! metadata are taken on trust: `gateways = [...]` limits the source to listed gateway EUIs
//! (others are counted as `gwmp_unknown_gateway`, neither answered nor used). The EUI is in
//! the datagram, so the list keeps out mistakes and strangers, not a spoofer on the LAN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;

use super::budget::Budget;
use super::{Context, Input};
use crate::config::UdpSourceConfig;
use crate::format::gwmp::{self, Packet};
use crate::metrics::Metrics;

/// Largest datagram read whole: the most UDP can carry. Longer ones cannot arrive.
const MAX_DATAGRAM: usize = 65_535;

/// Gateway status records a budget allows at once ([`stat_budget`]): each listed gateway's,
/// or those of all the gateways of a source without a list.
const STAT_BURST: u32 = 16;
/// How often a budget allows one more: a gateway's `stat_interval` down to 2 s, or, the
/// budget shared, [`SHARED_CAPACITY`] gateways at `lora_pkt_fwd`'s default 30 s.
const STAT_EVERY: Duration = Duration::from_secs(2);
/// `lora_pkt_fwd`'s default `stat_interval` (`DEFAULT_STAT`).
const DEFAULT_STAT_INTERVAL: Duration = Duration::from_secs(30);
/// Gateways at [`DEFAULT_STAT_INTERVAL`] whose status reports a shared budget takes all of
/// (15): one more gateway's, or a shorter interval, would be refused in part.
const SHARED_CAPACITY: u64 = DEFAULT_STAT_INTERVAL.as_secs() / STAT_EVERY.as_secs();

/// Serve the packet forwarder on `socket` (bound by the pipeline before start-up).
pub async fn run(socket: UdpSocket, cfg: UdpSourceConfig, ctx: Context) {
    let listen = match socket.local_addr() {
        Ok(a) => a.to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    log::info!("udp: packet forwarder source on {listen}");
    if let Err(e) = ctx.metrics.udp_drops.watch(listen, &socket) {
        log::warn!("udp: datagrams the kernel drops cannot be counted: {e}");
    }
    let mut stopping = ctx.stopping.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut stats = StatBudgets::new(&cfg.gateways, Instant::now());
    let mut same_ms = StatsOfOneMs::default();
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    ctx.metrics.problem("udp_receive", || format!("udp: receive: {e}"));
                    continue;
                }
            },
            _ = stopping.changed() => return,
        };
        let d = &buf[..n];
        let datagram = super::or_dead_letter(&ctx.metrics, "udp", None, d, || {
            handle(d, peer, &cfg, &ctx.metrics, SystemTime::now())
        })
        .unwrap_or_else(|dead| Datagram {
            ack: None,
            inputs: vec![Input::DeadLetter(dead)],
        });
        if let Some(ack) = datagram.ack {
            acknowledge(&socket, ack, peer, &ctx.metrics).await;
        }
        let mut inputs = datagram.inputs;
        stats.limit(&mut inputs, &ctx.metrics, Instant::now());
        same_ms.index(&mut inputs);
        // Once the queue is closed, the datagram's other frames are dropped there too, so
        // that each is counted.
        let mut closed = false;
        for input in inputs {
            let queued = ctx.frames.send_or_drop(&ctx.metrics, "udp", input);
            closed |= queued.await.is_err();
        }
        if closed {
            return;
        }
    }
}

/// Send an acknowledgement; a failure (a spoofed source port 0, an unreachable peer) is
/// counted and logged rate-limited: it can happen for every datagram.
async fn acknowledge(socket: &UdpSocket, ack: [u8; 4], peer: SocketAddr, metrics: &Metrics) {
    if let Err(e) = socket.send_to(&ack, peer).await {
        metrics.problem("udp_ack_failed", || {
            format!("udp: cannot acknowledge {peer}: {e}")
        });
    }
}

/// Bounds the gateway status records a source makes: a `stat` is taken on trust (any sender
/// can send one, under any gateway EUI) and each makes a durable record, so a flood of them
/// would otherwise make records as fast as it came, and with the sink away push the readings
/// out of a full buffer. A source with a list of gateways (`gateways = [...]`, the only
/// ones it takes) gives each its own [`stat_budget`], so a flood under one EUI costs only that
/// gateway's status records, and no number of gateways is too many; one without a list has a
/// single budget for all (a budget per EUI seen would be a map a flood could grow), which
/// takes [`SHARED_CAPACITY`] gateways at the default interval. The radio frames beside a
/// `stat` are never held back: only a device's MIC makes a record of them.
struct StatBudgets {
    /// Each listed gateway's, by its EUI as its status records carry it.
    listed: HashMap<String, Budget>,
    /// The gateways' of a source without a list.
    shared: Budget,
}

impl StatBudgets {
    fn new(gateways: &[[u8; 8]], now: Instant) -> StatBudgets {
        let budget = |g| (hex::encode(g), stat_budget(now));
        StatBudgets {
            listed: gateways.iter().map(budget).collect(),
            shared: stat_budget(now),
        }
    }

    /// Drop the gateway status reports of `inputs` past their budget at `now`, each counted
    /// (`gwmp_stat_limited`) and logged, rate-limited.
    fn limit(&mut self, inputs: &mut Vec<Input>, metrics: &Metrics, now: Instant) {
        inputs.retain(|input| {
            let Input::GatewayStatus { gateway_id, .. } = input else {
                return true;
            };
            let own = self.listed.get_mut(gateway_id);
            let listed = own.is_some();
            let taken = own.unwrap_or(&mut self.shared).take(now);
            if !taken {
                metrics.problem("gwmp_stat_limited", || {
                    let why = if listed {
                        format!(
                            "it sent more than {STAT_BURST} at once or more than one every {} s (a stat_interval that short, or a flood under its EUI)",
                            STAT_EVERY.as_secs()
                        )
                    } else {
                        format!(
                            "the gateways sent more status reports than {SHARED_CAPACITY} gateways at a {} s interval send, or a flood (a gateways list gives each listed gateway a budget of its own)",
                            DEFAULT_STAT_INTERVAL.as_secs()
                        )
                    };
                    format!("udp: gateway {gateway_id}: stat report dropped, no status record: {why}")
                });
            }
            taken
        });
    }
}

/// The gateway status reports of the clock's millisecond of the last one, by gateway: those
/// each sent in it, unlike each other. A report's record id is made from its gateway and
/// receive time in ms ([`crate::record::gateway_status`]); two reports of one gateway in one
/// millisecond (two forwarders under one EUI, datagrams the kernel held and hands over
/// together) would share it and all but one be dropped as copies. Each report gets the index
/// of its `stat` among its gateway's unlike ones of that millisecond, as the serial source's
/// frames get theirs ([`crate::uplink::Uplink::same_ms_index`]); a report equal to one given
/// already (a datagram the network or a packet multiplexer sent twice) gets that one's index,
/// so its id, and is dropped as a copy. The times stay the clock's own. Only the reports of
/// one millisecond are kept, of those the budgets let through ([`StatBudgets`]): no more than
/// they allow at once, whatever EUIs a flood uses.
#[derive(Default)]
struct StatsOfOneMs {
    ms: u64,
    seen: Vec<(String, Vec<serde_json::Map<String, serde_json::Value>>)>,
}

impl StatsOfOneMs {
    /// Give each status report of `inputs` its index: 0 for its gateway's first in its
    /// millisecond, then 1, 2... for each `stat` unlike those before, until the millisecond
    /// changes, forwards or back (a clock stepped back); an equal `stat` gets its index again.
    fn index(&mut self, inputs: &mut [Input]) {
        for input in inputs {
            let Input::GatewayStatus {
                gateway_id,
                stat,
                time,
                same_ms_index,
            } = input
            else {
                continue;
            };
            let ms = crate::record::ms_since_epoch(*time);
            if ms != self.ms {
                self.ms = ms;
                self.seen.clear();
            }
            let stats = match self.seen.iter().position(|(g, _)| g == gateway_id) {
                Some(i) => &mut self.seen[i].1,
                None => {
                    self.seen.push((gateway_id.clone(), Vec::new()));
                    &mut self.seen.last_mut().expect("just pushed").1
                }
            };
            let i = match stats.iter().position(|s| s == stat) {
                Some(i) => i,
                None => {
                    stats.push(stat.clone());
                    stats.len() - 1
                }
            };
            *same_ms_index = u32::try_from(i).unwrap_or(u32::MAX);
        }
    }
}

/// [`STAT_BURST`] status records at once and one more each [`STAT_EVERY`].
fn stat_budget(now: Instant) -> Budget {
    Budget::new(STAT_BURST, STAT_EVERY, now)
}

/// What one datagram asks for and carries.
#[derive(Default)]
pub struct Datagram {
    /// The acknowledgement the forwarder waits for.
    pub ack: Option<[u8; 4]>,
    pub inputs: Vec<Input>,
}

/// Take one datagram from `peer` apart; what is wrong with it is counted, never fatal.
pub fn handle(
    d: &[u8],
    peer: SocketAddr,
    cfg: &UdpSourceConfig,
    metrics: &Metrics,
    received: SystemTime,
) -> Datagram {
    let packet = match gwmp::parse(d) {
        Ok(p) => p,
        Err(e) => {
            metrics.problem("gwmp_bad_packet", || format!("udp: from {peer}: {e}"));
            return Datagram::default();
        }
    };
    if let Packet::PushData { gateway, .. } | Packet::PullData { gateway, .. } = &packet {
        if !cfg.gateways.is_empty() && !cfg.gateways.contains(gateway) {
            metrics.problem("gwmp_unknown_gateway", || {
                format!(
                    "udp: from {peer}: gateway {} is not in this source's gateways list: ignored",
                    hex::encode(gateway)
                )
            });
            return Datagram::default();
        }
    }
    let ack = packet.ack();
    let inputs = match packet {
        Packet::PushData { gateway, json, .. } => {
            push_inputs(metrics, gateway, json, cfg.gateway_status, peer, received)
        }
        _ => Vec::new(),
    };
    Datagram { ack, inputs }
}

fn push_inputs(
    metrics: &Metrics,
    gateway: [u8; 8],
    json: &[u8],
    gateway_status: bool,
    peer: SocketAddr,
    received: SystemTime,
) -> Vec<Input> {
    let content = match gwmp::parse_push(json, &gateway, received, gateway_status) {
        Ok(c) => c,
        Err(e) => {
            metrics.problem("gwmp_bad_json", || {
                format!("udp: from {peer}: {e}: the datagram is dropped, with any frames in it")
            });
            return Vec::new();
        }
    };
    if let Some(e) = &content.bad_stat {
        metrics.problem("gwmp_bad_stat", || {
            format!(
                "udp: gateway {}: its stat is unreadable ({e}): no status record; its frames are taken",
                hex::encode(gateway)
            )
        });
    }
    for _ in 0..content.bad_crc {
        metrics.problem("bad_crc", || {
            format!(
                "udp: gateway {}: skipped a frame with a bad CRC, or none",
                hex::encode(gateway)
            )
        });
    }
    for _ in 0..content.bad_rxpk {
        metrics.problem("gwmp_bad_rxpk", || {
            format!(
                "udp: gateway {}: skipped an rxpk entry that cannot be read or is of the wrong shape",
                hex::encode(gateway)
            )
        });
    }
    for _ in 0..content.bad_time {
        metrics.problem("bad_time", || {
            format!(
                "udp: gateway {}: rxpk time is not between 1970 and 9999: receive time used",
                hex::encode(gateway)
            )
        });
    }
    // The copies merged into a frame are counted by the decoder, as a later copy would be:
    // a duplicate of an uplink of ours, a join or another network's frame otherwise.
    let mut inputs: Vec<Input> = content.frames.into_iter().map(Input::Radio).collect();
    if let Some(stat) = content.stat {
        inputs.push(Input::GatewayStatus {
            gateway_id: hex::encode(gateway),
            stat,
            time: received,
            same_ms_index: 0,
        });
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::TestContext;

    const GW: [u8; 8] = [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 1];
    const OTHER: [u8; 8] = [0xb8, 0x27, 0xeb, 0xff, 0xfe, 0, 0, 2];
    /// A receive time 100 µs into a millisecond, and the µs around it.
    const T: Duration = Duration::from_micros(1_714_557_600_123_100);
    const US: fn(u64) -> Duration = Duration::from_micros;

    fn cfg(gateways: Vec<[u8; 8]>) -> UdpSourceConfig {
        UdpSourceConfig {
            listen: ([127, 0, 0, 1], 1700).into(),
            gateway_status: true,
            gateways,
        }
    }

    fn push(gateway: [u8; 8]) -> Vec<u8> {
        let mut d = vec![2, 0, 7, gwmp::PUSH_DATA];
        d.extend_from_slice(&gateway);
        d.extend_from_slice(br#"{"rxpk":[{"stat":1,"data":"QNobASY="}],"stat":{"rxnb":1}}"#);
        d
    }

    #[test]
    fn only_listed_gateways_are_answered_and_used() {
        let m = Metrics::new();
        let peer: SocketAddr = ([127, 0, 0, 1], 5000).into();
        let t = SystemTime::UNIX_EPOCH;
        let open = handle(&push([9; 8]), peer, &cfg(Vec::new()), &m, t);
        assert_eq!((open.ack, open.inputs.len()), (Some([2, 0, 7, 1]), 2));
        let listed = cfg(vec![GW]);
        let known = handle(&push(GW), peer, &listed, &m, t);
        assert_eq!((known.ack, known.inputs.len()), (Some([2, 0, 7, 1]), 2));
        let stranger = handle(&push([9; 8]), peer, &listed, &m, t);
        assert_eq!((stranger.ack, stranger.inputs.len()), (None, 0));
        let mut pull = vec![2, 0, 8, gwmp::PULL_DATA];
        pull.extend_from_slice(&[9; 8]);
        assert_eq!(handle(&pull, peer, &listed, &m, t).ack, None);
        assert_eq!(m.problems("gwmp_unknown_gateway"), 2);
    }

    /// The largest datagram UDP can carry is read and judged whole: acknowledged, its
    /// broken JSON counted, nothing kept.
    #[tokio::test]
    async fn the_largest_datagram_is_taken_whole() {
        let m = Metrics::new();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut d = push(GW);
        d.resize(65_507, b'['); // the most an IPv4 datagram holds
        sender.send_to(&d, socket.local_addr().unwrap()).unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
        assert_eq!(n, d.len());
        let got = handle(
            &buf[..n],
            peer,
            &cfg(Vec::new()),
            &m,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!((got.ack, got.inputs.len()), (Some([2, 0, 7, 1]), 0));
        assert_eq!(m.problems("gwmp_bad_json"), 1);
    }

    #[test]
    fn the_list_is_read_from_the_config_and_its_absence_warned_about_off_loopback() {
        use crate::config::{Config, SourceConfig};
        let text = |listen: &str, list: &str| {
            format!("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\nlisten = \"{listen}\"\n{list}")
        };
        let cfg =
            Config::parse(&text("0.0.0.0:1700", "gateways = [\"B827EBFFFE000001\"]\n")).unwrap();
        let SourceConfig::Udp(u) = &cfg.sources[0] else {
            panic!("not udp")
        };
        assert_eq!(u.gateways, [GW]);
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
        let open = Config::parse(&text("0.0.0.0:1700", "")).unwrap();
        assert!(open
            .warnings()
            .iter()
            .any(|w| w.contains("gateways = [...]")));
        assert!(Config::parse(&text("127.0.0.1:1700", ""))
            .unwrap()
            .warnings()
            .is_empty());
        assert!(Config::parse(&text("0.0.0.0:1700", "gateways = [\"x\"]\n")).is_err());
    }

    /// A forwarder of protocol version 1, which hubgate serves, drops an acknowledgement of
    /// another version unread (`lora_pkt_fwd`: `buff_ack[0] != PROTOCOL_VERSION`): the
    /// PUSH_ACK and PULL_ACK it gets carry its own version.
    #[test]
    fn a_version_1_forwarder_is_answered_in_version_1() {
        let m = Metrics::new();
        let peer: SocketAddr = ([127, 0, 0, 1], 5000).into();
        let mut push = push(GW);
        push[0] = 1;
        let mut pull = vec![1, 0, 8, gwmp::PULL_DATA];
        pull.extend_from_slice(&GW);
        let t = SystemTime::UNIX_EPOCH;
        let open = cfg(Vec::new());
        assert_eq!(
            handle(&push, peer, &open, &m, t).ack,
            Some([1, 0, 7, gwmp::PUSH_ACK])
        );
        assert_eq!(
            handle(&pull, peer, &open, &m, t).ack,
            Some([1, 0, 8, gwmp::PULL_ACK])
        );
    }

    /// Frames still in the source's hands when the forwarder has closed the queue (the agent
    /// stops) are dropped and counted, each of them, and the source ends.
    #[tokio::test]
    async fn frames_that_find_the_queue_closed_are_counted_as_dropped() {
        let t = TestContext::new(8, 1 << 20);
        let (metrics, ctx) = (t.metrics, t.ctx);
        drop(t.forwarder);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = socket.local_addr().unwrap();
        let source = tokio::spawn(run(socket, cfg(Vec::new()), ctx));
        // Two radio frames and a gateway status.
        let mut d = vec![2, 0, 7, gwmp::PUSH_DATA];
        d.extend_from_slice(&GW);
        d.extend_from_slice(
            br#"{"rxpk":[{"stat":1,"data":"QNobASY="},{"stat":1,"data":"QNobASc="}],"stat":{"rxnb":2}}"#,
        );
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(&d, to).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), source)
            .await
            .expect("the source ended")
            .unwrap();
        assert_eq!(metrics.dropped_stopping.get(), 3);
        assert_eq!(metrics.dropped(), 3);
    }

    /// A flood of `stat` reports (any sender, any gateway EUI) makes at most [`STAT_BURST`]
    /// status records at once, then one each [`STAT_EVERY`]; the others are counted. The
    /// radio frames beside them are all handed on. Each datagram is sent once the source
    /// acknowledged the one before, which it does once it read it: none waits in the socket,
    /// so none is dropped by the kernel, whatever its buffers.
    #[tokio::test]
    async fn a_flood_of_stat_reports_makes_a_bounded_number_of_records() {
        const FLOOD: u64 = 100;
        let t = TestContext::new(4 * FLOOD as usize, 1 << 20);
        let (metrics, ctx, mut forwarder) = (t.metrics, t.ctx, t.forwarder);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = socket.local_addr().unwrap();
        let source = tokio::spawn(run(socket, cfg(Vec::new()), ctx));
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let start = Instant::now();
        for n in 0..FLOOD {
            let mut d = vec![2, 0, 7, gwmp::PUSH_DATA];
            d.extend_from_slice(&n.to_be_bytes());
            d.extend_from_slice(br#"{"rxpk":[{"stat":1,"data":"QNobASY="}],"stat":{"rxnb":1}}"#);
            sender.send_to(&d, to).await.unwrap();
            let mut ack = [0u8; 4];
            let got = tokio::time::timeout(Duration::from_secs(10), sender.recv(&mut ack));
            assert_eq!(got.await.expect("acknowledged").unwrap(), 4);
            assert_eq!(ack, [2, 0, 7, gwmp::PUSH_ACK]);
        }
        let (mut radio, mut status) = (0, 0);
        let limited = || metrics.problems("gwmp_stat_limited");
        // A datagram's stat is judged before its frames are queued, and queued after them.
        while radio < FLOOD || status + limited() < FLOOD {
            let frame = tokio::time::timeout(Duration::from_secs(10), forwarder.recv())
                .await
                .expect("every datagram's frame")
                .unwrap();
            match frame.input {
                Input::Radio(_) => radio += 1,
                Input::GatewayStatus { .. } => status += 1,
                _ => panic!("neither a radio frame nor a status"),
            }
        }
        source.abort();
        // One more for each STAT_EVERY the source took (none on any machine but a stalled one).
        let more = start.elapsed().as_nanos() / STAT_EVERY.as_nanos();
        let most = u64::from(STAT_BURST) + u64::try_from(more).unwrap();
        assert!(
            (u64::from(STAT_BURST)..=most).contains(&status),
            "{status} status records"
        );
        assert_eq!(limited(), FLOOD - status);
        assert_eq!(metrics.dropped(), 0);
    }

    /// A status report of `g` received at `time`, its `stat` `{"rxnb": rxnb}`.
    fn report(g: [u8; 8], time: SystemTime, rxnb: u64) -> Input {
        let mut stat = serde_json::Map::new();
        stat.insert("rxnb".into(), rxnb.into());
        Input::GatewayStatus {
            gateway_id: hex::encode(g),
            stat,
            time,
            same_ms_index: 0,
        }
    }

    fn indexes(inputs: &[Input]) -> Vec<u32> {
        inputs
            .iter()
            .map(|input| match input {
                Input::GatewayStatus { same_ms_index, .. } => *same_ms_index,
                _ => unreachable!(),
            })
            .collect()
    }

    /// A report equal to one its gateway gave already in that millisecond (a datagram sent
    /// twice) gets that one's index, so its id, and is dropped as a copy; one that differs
    /// gets the next index, in one datagram or across several.
    #[test]
    fn an_equal_status_report_in_one_millisecond_keeps_the_index_of_the_first() {
        let (t, us) = (SystemTime::UNIX_EPOCH + T, US);
        let mut inputs = [
            report(GW, t, 7),
            report(GW, t + us(100), 7),
            report(GW, t + us(200), 8),
            report(OTHER, t + us(300), 7),
            report(GW, t + us(400), 7),
            report(GW, t + us(500), 8),
            report(GW, t + us(600), 9),
            report(GW, t + us(1_000), 8),
        ];
        let mut same_ms = StatsOfOneMs::default();
        same_ms.index(&mut inputs[..3]);
        for one in inputs[3..].chunks_mut(1) {
            same_ms.index(one);
        }
        assert_eq!(indexes(&inputs), [0, 0, 1, 0, 0, 1, 2, 0]);
    }

    /// Two status reports of one gateway received in one millisecond get ids of their own
    /// (the second used to be dropped as a copy of the first); the first keeps the id a
    /// report had before the index, another gateway's first in that millisecond has index
    /// 0, and the index starts over when the millisecond changes, back too.
    #[test]
    fn status_reports_of_one_gateway_in_one_millisecond_get_ids_of_their_own() {
        let (t, us) = (SystemTime::UNIX_EPOCH + T, US);
        let mut inputs = [
            report(GW, t, 1),
            report(GW, t + us(500), 2),
            report(OTHER, t + us(100), 1),
            report(GW, t + us(600), 3),
            report(OTHER, t + us(700), 2),
            report(GW, t + us(1_000), 4),
            report(GW, t - us(60_000_000), 5),
            report(GW, t + us(300), 6),
        ];
        let mut same_ms = StatsOfOneMs::default();
        // One datagram's report after another, as they come.
        for one in inputs.chunks_mut(1) {
            same_ms.index(one);
        }
        let (indexes, ids): (Vec<u32>, Vec<String>) = inputs
            .iter()
            .map(|input| {
                let Input::GatewayStatus {
                    gateway_id,
                    stat,
                    time,
                    same_ms_index,
                } = input
                else {
                    unreachable!()
                };
                let id = crate::record::gateway_status(
                    "hubgate",
                    &[],
                    gateway_id,
                    stat,
                    (*time, *same_ms_index),
                    SystemTime::now(),
                )
                .id;
                (*same_ms_index, id)
            })
            .unzip();
        assert_eq!(indexes, [0, 1, 0, 2, 1, 0, 0, 0]);
        assert_eq!(ids[0], "d15eb9aa-23d9-1d8b-83a4-47fc7006b71d", "today's id");
        let first_three: std::collections::HashSet<&String> =
            [&ids[0], &ids[1], &ids[3]].into_iter().collect();
        assert_eq!(first_three.len(), 3, "{ids:?}");
        assert_ne!(ids[2], ids[4]);
        // Back in the millisecond after another: index 0 again, the first one's id.
        assert_eq!(ids[7], ids[0]);
    }

    /// Each gateway of a source's list has a budget of its own: a flood under one EUI costs
    /// only that gateway's status records. Without a list all the gateways share one, which
    /// takes the reports of [`SHARED_CAPACITY`] gateways at `lora_pkt_fwd`'s default
    /// interval.
    #[test]
    fn each_listed_gateway_has_a_stat_budget_of_its_own() {
        let stat = |g: [u8; 8]| Input::GatewayStatus {
            gateway_id: hex::encode(g),
            stat: serde_json::Map::new(),
            time: SystemTime::UNIX_EPOCH,
            same_ms_index: 0,
        };
        let kept = |budgets: &mut StatBudgets, m: &Metrics, of: &[[u8; 8]], at: Instant| {
            let mut inputs: Vec<Input> = of.iter().map(|&g| stat(g)).collect();
            budgets.limit(&mut inputs, m, at);
            inputs.len()
        };
        let t0 = Instant::now();
        let flood = [GW; 20];
        let m = Metrics::new();
        let mut listed = StatBudgets::new(&[GW, OTHER], t0);
        assert_eq!(kept(&mut listed, &m, &flood, t0), 16);
        assert_eq!(
            kept(&mut listed, &m, &[OTHER, GW], t0),
            1,
            "the other's own"
        );
        assert_eq!(kept(&mut listed, &m, &[GW, OTHER], t0 + STAT_EVERY), 2);
        assert_eq!(m.problems("gwmp_stat_limited"), 5);

        let m = Metrics::new();
        let mut shared = StatBudgets::new(&[], t0);
        assert_eq!(kept(&mut shared, &m, &flood, t0), 16);
        assert_eq!(kept(&mut shared, &m, &[OTHER], t0), 0, "the flood's budget");
        // The reports of SHARED_CAPACITY gateways at the default interval, spread evenly, are
        // all taken for good; one gateway more, and the budget gives only what it earns.
        assert_eq!(SHARED_CAPACITY, 15);
        let rounds = 100;
        let taken_of = |gateways: u64| {
            let m = Metrics::new();
            let mut shared = StatBudgets::new(&[], t0);
            let every = DEFAULT_STAT_INTERVAL / gateways as u32;
            let mut taken = 0;
            for round in 0..rounds {
                for g in 0..gateways {
                    let at = t0 + DEFAULT_STAT_INTERVAL * round + every * g as u32;
                    taken += kept(&mut shared, &m, &[g.to_be_bytes()], at);
                }
            }
            (taken, m.problems("gwmp_stat_limited"))
        };
        let all = (SHARED_CAPACITY * u64::from(rounds)) as usize;
        assert_eq!(taken_of(SHARED_CAPACITY), (all, 0));
        // The last report comes one interval less one gateway's share after the first.
        let one_more = SHARED_CAPACITY + 1;
        let last = DEFAULT_STAT_INTERVAL * rounds - DEFAULT_STAT_INTERVAL / one_more as u32;
        let earned = last.as_nanos() / STAT_EVERY.as_nanos();
        let (taken, refused) = taken_of(one_more);
        assert_eq!(taken as u128, u128::from(STAT_BURST) + earned);
        assert_eq!(refused, one_more * u64::from(rounds) - taken as u64);
    }

    /// The budget gives one more each [`STAT_EVERY`], up to [`STAT_BURST`] saved, however
    /// long it went unused.
    #[test]
    fn the_stat_budget_refills_one_each_interval_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = stat_budget(t0);
        let taken = |b: &mut Budget, at: Instant, n: u32| (0..n).filter(|_| b.take(at)).count();
        assert_eq!(taken(&mut b, t0, 20), 16);
        let half = STAT_EVERY / 2;
        assert_eq!(taken(&mut b, t0 + half, 1), 0);
        assert_eq!(taken(&mut b, t0 + STAT_EVERY, 2), 1);
        assert_eq!(taken(&mut b, t0 + STAT_EVERY + half, 1), 0);
        assert_eq!(taken(&mut b, t0 + STAT_EVERY * 4, 5), 3);
        let later = t0 + STAT_EVERY * 1000;
        assert_eq!(taken(&mut b, later, 20), 16);
        assert_eq!(taken(&mut b, later + STAT_EVERY * 3 + half, 5), 3);
    }

    /// An acknowledgement that cannot be sent (source port 0, as a spoofed datagram can
    /// have) is counted per datagram and logged through the rate limiter, not per datagram.
    #[tokio::test]
    async fn failed_acknowledgements_are_counted() {
        let m = Metrics::new();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer: SocketAddr = ([127, 0, 0, 1], 0).into();
        for _ in 0..1000 {
            acknowledge(&socket, [2, 0, 1, 1], peer, &m).await;
        }
        assert_eq!(m.problems("udp_ack_failed"), 1000);
    }
}
