//! Decoding speed: every codec family on a representative payload (records built, JSON not
//! serialised), LoRaWAN MIC check + FRMPayload decryption, and one record built and
//! serialised. `cargo bench --bench decode`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hubgate::codec::Codec;
use hubgate::lorawan::{self, crypto, Frame, Key};
use std::hint::black_box;

/// (codec id, fPort, payload hex): worked examples of docs/codecs.md.
const SAMPLES: &[(&str, u8, &str)] = &[
    ("browan-tbhh100", 103, "088c2e2dffffffff"),
    ("browan-tbhv110", 103, "310b382a200396004b0037"),
    ("browan-tbms100", 102, "010b3a0500c80000"),
    ("browan-tbdw100", 100, "010d1c0200102700"),
    ("browan-tbam100", 104, "210b34102700"),
    ("cayenne-lpp", 2, "0267ff3802688f0a73279f"),
    ("elsys", 5, "0100e202290400270506060308070d62"),
    ("milesight-em300-th", 85, "017564036710ff046850"),
    ("milesight-am319", 85, "077d580209738a270b7d0c00"),
    ("dragino-lht65", 2, "cba009c401f4017fff7fff"),
    ("netvox-r718a", 6, "010b01a0ff381388000000"),
];

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    for &(id, fport, hex) in SAMPLES {
        let codec = Codec::from_id(id).expect("known codec");
        let payload = hex::decode(hex).unwrap();
        assert!(
            codec.decode(Some(fport), &payload).is_ok(),
            "{id} sample must decode"
        );
        g.bench_function(id, |b| {
            b.iter(|| codec.decode(black_box(Some(fport)), black_box(&payload)))
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
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let up = Uplink {
        dev_eui: [0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34],
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
    };
    let tags = ["Building 1".to_string(), "Floor 2".to_string()];
    let dev = DeviceInfo {
        tags: &tags,
        global_tags: &[],
    };
    let codec = Codec::BrowanTbhh100;
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
