//! The processes of the benchmark's `--floor` (`benches/pipeline/floor.rs`): the benchmark
//! runs itself again with `--floor-child mqtt PORT TOPIC` or `--floor-child kafka ENV MOTION
//! BODY DEVICES` and drives it line by line: the producer's settings first (`KEY=VALUE` lines
//! on stdin up to an empty line; never on the command line, where anyone could read a
//! password), `ready` once connected, then a command on stdin (`expect N`: N messages; `send
//! RATE N`: N records at RATE per second) and `ok` on stdout once it is done.

use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// One line to the benchmark.
fn say(word: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{word}").and_then(|()| out.flush()).unwrap();
}

/// Commands from the benchmark, one a line.
fn commands() -> impl Iterator<Item = String> {
    std::io::stdin().lines().map_while(Result::ok)
}

pub fn run(args: &[String]) {
    match args {
        [mode, port, topic] if mode == "mqtt" => subscriber(port.parse().unwrap(), topic),
        [mode, env, motion, body, devices] if mode == "kafka" => {
            let mut config = ClientConfig::new();
            for kv in commands().take_while(|l| !l.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap();
                config.set(k, v);
            }
            let producer: BaseProducer = config.create().expect("the floor producer");
            // Made beforehand: the floor is the producer's cost, not building records.
            let keys: Vec<String> = (0..devices.parse().unwrap())
                .map(|d: u64| format!("{d:016x}"))
                .collect();
            // Each device's records to one topic, a third of them to motion, as hubgate's.
            let topics: Vec<&String> = (0..keys.len())
                .map(|d| if d % 3 == 1 { motion } else { env })
                .collect();
            let mut seq = 0;
            let mut send = |rate: u64, n: u64| {
                let start = Instant::now();
                for k in 0..n {
                    // Sleep, not poll: rdkafka rounds a poll timeout down to whole
                    // milliseconds, so polling until the next send would spin.
                    let at = start + Duration::from_secs_f64(k as f64 / rate as f64);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let device = seq % keys.len();
                    seq += 1;
                    producer
                        .send(
                            BaseRecord::to(topics[device])
                                .key(&keys[device])
                                .payload(body),
                        )
                        .expect("floor produce");
                    producer.poll(Duration::ZERO);
                }
                producer
                    .flush(Duration::from_secs(120))
                    .expect("floor producer flush");
            };
            // Connected once the first records are confirmed.
            send(1_000, 10);
            say("ready");
            for line in commands() {
                let mut words = line.split_whitespace().skip(1).map(|w| w.parse().unwrap());
                let (Some(rate), Some(n)) = (words.next(), words.next()) else {
                    break;
                };
                send(rate, n);
                say("ok");
            }
        }
        _ => panic!("--floor-child mqtt PORT TOPIC | kafka ENV MOTION BODY DEVICES"),
    }
}

/// QoS 1, clean session, rumqttc acknowledging each message as it reads it.
fn subscriber(port: u16, topic: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Commands are read on a thread of their own, which blocks on stdin.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    std::thread::spawn(move || {
        for line in commands() {
            let n = line.strip_prefix("expect ").and_then(|n| n.parse().ok());
            if n.is_none_or(|n| tx.send(n).is_err()) {
                break;
            }
        }
    });
    rt.block_on(async move {
        let mut o = MqttOptions::new(format!("floor-{}", std::process::id()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(o, 16);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let (mut expected, mut received) = (0u64, 0u64);
        loop {
            tokio::select! {
                n = rx.recv() => match n {
                    Some(n) => expected += n,
                    None => return,
                },
                ev = events.poll() => match ev.expect("floor subscriber") {
                    Event::Incoming(Packet::SubAck(_)) => say("ready"),
                    Event::Incoming(Packet::Publish(_)) => received += 1,
                    _ => {}
                },
            }
            if expected > 0 && received >= expected {
                say("ok");
                received -= expected;
                expected = 0;
            }
        }
    });
}
