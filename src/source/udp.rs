//! Semtech UDP packet forwarder source: answers PUSH_ACK and PULL_ACK so an unmodified
//! `lora_pkt_fwd` is content, and hands every good `rxpk` on as a radio frame.
//!
//! UDP cannot be acknowledged end to end: PUSH_ACK only tells the forwarder the datagram
//! arrived. What was received but not yet confirmed or buffered is lost on a power cut.

use std::net::SocketAddr;
use std::time::SystemTime;

use tokio::net::UdpSocket;

use super::gwmp::{self, Packet};
use super::{Ack, Context, Frame, Input};

/// Serve the packet forwarder on `socket` (bound by the pipeline before start-up).
pub async fn run(socket: UdpSocket, gateway_status: bool, ctx: Context) {
    match socket.local_addr() {
        Ok(a) => log::info!("udp: packet forwarder source on {a}"),
        Err(e) => log::info!("udp: packet forwarder source (address unknown: {e})"),
    }
    let mut stopping = ctx.stopping.clone();
    // The largest GWMP datagram (several rxpk of 255-byte frames in base64) fits easily.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("udp: receive: {e}");
                    continue;
                }
            },
            _ = stopping.changed() => return,
        };
        let packet = match gwmp::parse(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                ctx.metrics
                    .problem("gwmp_bad_packet", || format!("udp: from {peer}: {e}"));
                continue;
            }
        };
        if let Some(ack) = packet.ack() {
            if let Err(e) = socket.send_to(&ack, peer).await {
                log::warn!("udp: cannot acknowledge {peer}: {e}");
            }
        }
        if let Packet::PushData { gateway, json, .. } = packet {
            let inputs = push_inputs(&ctx, gateway, json, gateway_status, peer);
            for input in inputs {
                if ctx
                    .frames
                    .send(Frame {
                        source: "udp",
                        input,
                        ack: Ack::None,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn push_inputs(
    ctx: &Context,
    gateway: [u8; 8],
    json: &[u8],
    gateway_status: bool,
    peer: SocketAddr,
) -> Vec<Input> {
    let content = match gwmp::parse_push(json, &gateway, SystemTime::now()) {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics
                .problem("gwmp_bad_json", || format!("udp: from {peer}: {e}"));
            return Vec::new();
        }
    };
    for _ in 0..content.bad_crc {
        ctx.metrics.problem("bad_crc", || {
            format!(
                "udp: gateway {}: skipped a frame with a bad CRC",
                hex::encode(gateway)
            )
        });
    }
    for _ in 0..content.bad_time {
        ctx.metrics.problem("bad_time", || {
            format!(
                "udp: gateway {}: rxpk time is not between 1970 and 9999: receive time used",
                hex::encode(gateway)
            )
        });
    }
    let mut inputs: Vec<Input> = content.frames.into_iter().map(Input::Radio).collect();
    if let (true, Some(stat)) = (gateway_status, content.stat) {
        inputs.push(Input::GatewayStatus {
            gateway_id: hex::encode(gateway),
            stat,
            time: SystemTime::now(),
        });
    }
    inputs
}
