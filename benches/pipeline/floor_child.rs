//! The processes of the benchmark's `--floor` (`benches/pipeline/floor.rs`): the benchmark
//! runs itself again with `--floor-child mqtt PORT TOPIC` or `--floor-child kafka TOPIC BODY
//! DEVICES KEY=VALUE...` and drives it line by line: `ready` once connected, then a command
//! on stdin (`expect N`: N messages; `send RATE N`: N records at RATE per second) and `ok`
//! on stdout once it is done.

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
        [mode, topic, body, devices, settings @ ..] if mode == "kafka" => {
            let mut config = ClientConfig::new();
            for kv in settings {
                let (k, v) = kv.split_once('=').unwrap();
                config.set(k, v);
            }
            let producer: BaseProducer = config.create().expect("the floor producer");
            // Made beforehand: the floor is the producer's cost, not building records.
            let keys: Vec<String> = (0..devices.parse().unwrap())
                .map(|d: u64| format!("{d:016x}"))
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
                    let key = &keys[seq % keys.len()];
                    seq += 1;
                    producer
                        .send(BaseRecord::to(topic).key(key).payload(body))
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
        _ => panic!("--floor-child mqtt PORT TOPIC | kafka TOPIC BODY DEVICES KEY=VALUE..."),
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
