//! Proves the test harness (tests/support) against the real services:
//! Kafka over SASL_SSL/PLAIN/`$ConnectionString` (tansu + stunnel) including a
//! broker outage with queued messages, and mosquitto with QoS 1 and a restart.

mod support;

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{accepting, unique, Kafka, Mosquitto};

const TOPIC: &str = "smoke";

fn key(i: usize) -> String {
    format!("key-{i:03}")
}

fn payload(i: usize) -> Vec<u8> {
    format!("payload {i} \u{1F4E1}").into_bytes()
}

fn expected(n: usize) -> Vec<(String, Vec<u8>, i32, i64)> {
    (0..n).map(|i| (key(i), payload(i), 0, i as i64)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_ssl_roundtrip_and_outage() {
    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();

    let t = Instant::now();
    let mut kafka = Kafka::start(tmp.path());
    eprintln!(
        "kafka (certs + tansu + stunnel) started in {:?}",
        t.elapsed()
    );
    kafka.create_topics(&[TOPIC]);
    kafka.create_topics(&[TOPIC]); // TopicAlreadyExists is tolerated

    let producer: FutureProducer = kafka
        .client_config()
        .set("message.timeout.ms", "60000")
        .set("reconnect.backoff.max.ms", "1000")
        .create()
        .expect("create FutureProducer with the Event Hubs settings");

    let t = Instant::now();
    for i in 0..20 {
        let (k, p) = (key(i), payload(i));
        let d = producer
            .send(
                FutureRecord::to(TOPIC).key(&k).payload(&p),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}{}", kafka.logs()));
        assert_eq!((d.partition, d.offset), (0, i as i64));
    }
    eprintln!("produced 20 over SASL_SSL in {:?}", t.elapsed());

    let t = Instant::now();
    let got = kafka.consume_all(TOPIC, 20, Duration::from_secs(30));
    assert_eq!(got, expected(20), "{}", kafka.logs());
    eprintln!("consumed 20 in {:?}", t.elapsed());

    // Outage: broker killed, 5 records wait in librdkafka's queue.
    let t = Instant::now();
    kafka.stop();
    assert!(!kafka.is_running());
    let queued: Vec<_> = (20..25)
        .map(|i| {
            let (k, p) = (key(i), payload(i));
            producer
                .send_result(FutureRecord::to(TOPIC).key(&k).payload(&p))
                .unwrap_or_else(|(e, _)| panic!("enqueue {i}: {e}"))
        })
        .collect();
    // Without a broker none of them can be delivered (only a 60 s timeout could end them).
    assert_eq!(producer.in_flight_count(), 5);

    kafka.start_again();
    eprintln!("tansu stop + start_again in {:?}", t.elapsed());
    for (n, fut) in queued.into_iter().enumerate() {
        let i = 20 + n;
        let d = tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .unwrap_or_else(|_| panic!("record {i} not delivered after restart{}", kafka.logs()))
            .expect("delivery future canceled")
            .unwrap_or_else(|(e, _)| panic!("record {i} failed: {e}{}", kafka.logs()));
        assert_eq!((d.partition, d.offset), (0, i as i64));
    }
    eprintln!(
        "5 queued records delivered {:?} after the kill",
        t.elapsed()
    );

    let t = Instant::now();
    let got = kafka.consume_all(TOPIC, 25, Duration::from_secs(30));
    assert_eq!(got, expected(25), "{}", kafka.logs());
    eprintln!("consumed 25 in {:?}", t.elapsed());
    eprintln!("kafka smoke test took {:?}", test_start.elapsed());
}

/// Subscribe, publish one QoS 1 message, wait for its PUBACK and for its delivery.
async fn mqtt_roundtrip(port: u16, text: &str) {
    let mut opts = MqttOptions::new(unique("smoke"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 10);
    let topic = "hubgate/smoke";
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();

    let done = async {
        let (mut published, mut acked, mut received) = (false, false, false);
        while !(acked && received) {
            match events.poll().await.expect("MQTT connection") {
                Event::Incoming(Packet::SubAck(_)) if !published => {
                    client
                        .publish(topic, QoS::AtLeastOnce, false, text.as_bytes().to_vec())
                        .await
                        .unwrap();
                    published = true;
                }
                Event::Incoming(Packet::PubAck(_)) => acked = true,
                Event::Incoming(Packet::Publish(p)) => {
                    assert_eq!(p.topic, topic);
                    assert_eq!(p.qos, QoS::AtLeastOnce);
                    assert_eq!(&p.payload[..], text.as_bytes());
                    received = true;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), done)
        .await
        .expect("MQTT QoS 1 round trip timed out");
    client.disconnect().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_qos1_and_restart() {
    let test_start = Instant::now();
    let tmp = tempfile::tempdir().unwrap();

    let t = Instant::now();
    let mut mqtt = Mosquitto::start(tmp.path());
    eprintln!("mosquitto started in {:?}", t.elapsed());
    mqtt_roundtrip(mqtt.port(), "before outage").await;

    let port = mqtt.port();
    mqtt.kill();
    assert!(!accepting(port), "port {port} still open after kill");

    let t = Instant::now();
    mqtt.start_again();
    eprintln!("mosquitto start_again in {:?}", t.elapsed());
    assert_eq!(mqtt.port(), port);
    mqtt_roundtrip(mqtt.port(), "after outage").await;
    eprintln!("mosquitto smoke test took {:?}", test_start.elapsed());
}
