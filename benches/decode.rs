//! Decoding speed: every codec on its example payload (records built, JSON not serialised),
//! LoRaWAN MIC check + FRMPayload decryption, and one record built and serialised.
//! `cargo bench --bench decode`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hubgate::codec::{BrowanModel, Codec};
use hubgate::lorawan::{self, crypto, Frame, Key};
use std::hint::black_box;
use std::time::Duration;

/// Every codec on its example payload (`hubgate codecs` shows the same ones).
fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    // Short runs: there are dozens of codecs and each decode takes well under a microsecond.
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for &codec in Codec::ALL {
        let example = codec.example();
        let (fport, payload) = (Some(example.fport), example.payload());
        assert!(
            codec.decode(fport, &payload).is_ok(),
            "{codec} example must decode"
        );
        g.bench_function(codec.id(), |b| {
            b.iter(|| codec.decode(black_box(fport), black_box(&payload)))
        });
    }
    g.finish();
}

fn lorawan_mic_and_decrypt(c: &mut Criterion) {
    let phy = hex::decode("40da1b0126000700024026c89cb85521e3").unwrap();
    let nwk = Key::from_hex("2B7E151628AED2A6ABF7158809CF4F3C").unwrap();
    let app = Key::from_hex("000102030405060708090A0B0C0D0E0F").unwrap();
    let mut g = c.benchmark_group("lorawan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+mic+decrypt", |b| {
        b.iter(|| {
            let Ok(Frame::Data(f)) = lorawan::parse(black_box(&phy)) else {
                unreachable!()
            };
            assert!(crypto::verify_mic(&f, &nwk, 7));
            crypto::decrypt_payload(&f, crypto::payload_key(&f, &nwk, &app), 7)
        })
    });
    g.finish();
}

/// One uplink's record: stable id, envelope built and serialised (what the forwarder does per
/// record besides the codec).
fn record_build(c: &mut Criterion) {
    use hubgate::record::{build, DeviceInfo, Payload};
    use hubgate::uplink::{Radio, Uplink};
    use std::time::{SystemTime, UNIX_EPOCH};
    let up = Uplink {
        dev_eui: hubgate::ids::DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]),
        device_name: Some("dev-58a0cb0000101234".into()),
        fport: Some(103),
        fcnt: Some(42),
        payload: hex::decode("088c2e2dffffffff").unwrap(),
        time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        radio: Radio {
            rssi: Some(-80),
            snr: Some(7.5),
            gateway_id: Some("b827ebfffe000001".into()),
            ..Radio::default()
        },
        ns: hubgate::uplink::NsDecoded::default(),
    };
    let tags = ["Building 1".to_string(), "Floor 2".to_string()];
    let dev = DeviceInfo {
        tags: &tags,
        ..DeviceInfo::UNKNOWN
    };
    let codec = Codec::Browan(BrowanModel::Tbhh100);
    let payload = || Payload::Decoded {
        codec: "browan-tbhh100",
        decoded: codec.decode(up.fport, &up.payload).unwrap(),
    };
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode+build", |b| {
        b.iter(|| build(black_box(&up), &dev, payload(), SystemTime::now()))
    });
    g.finish();
}

criterion_group!(benches, codecs, lorawan_mic_and_decrypt, record_build);
criterion_main!(benches);
