//! Decoding speed: every codec on its example payload (records built, JSON not serialised),
//! LoRaWAN MIC check + FRMPayload decryption, one ChirpStack uplink event parsed, one record
//! built and serialised, and the example JavaScript codecs.
//! `cargo bench --bench decode`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hubgate::codec::{BrowanModel, Codec};
use hubgate::lorawan::{self, crypto, Frame, Key};
use std::hint::black_box;
use std::time::Duration;

#[cfg(feature = "js")]
#[path = "../tests/support/codec_files.rs"]
mod codec_files;

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

/// One ChirpStack v4 uplink event parsed, as the benchmark's load generator publishes it
/// (`tests/support/agent.rs`; keys sorted, as serde_json prints them).
fn chirpstack(c: &mut Criterion) {
    use std::time::UNIX_EPOCH;
    let event = br#"{"data":"CIwuLf////8=","deduplicationId":"58a0cb0000101234-42","deviceInfo":{"applicationId":"app","devEui":"58a0cb0000101234","deviceName":"dev-58a0cb0000101234","tenantId":"t"},"fCnt":42,"fPort":103,"rxInfo":[{"gatewayId":"b827ebfffe000001","rssi":-80,"snr":7.5}],"time":"2026-11-26T10:00:00.000Z"}"#;
    let parsed = hubgate::format::chirpstack::parse(event, UNIX_EPOCH);
    assert!(parsed.is_ok_and(|p| p.bad_time.is_none()));
    let mut g = c.benchmark_group("format");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chirpstack", |b| {
        b.iter(|| hubgate::format::chirpstack::parse(black_box(event), UNIX_EPOCH))
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
        dev_addr: None,
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
        same_ms_index: 0,
        session: None,
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

/// Resident memory of process `pid` in KB (Linux).
#[cfg(feature = "js")]
fn rss_kb(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// CPU time of the calling thread in µs.
#[cfg(feature = "js")]
fn thread_cpu_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// CPU time of process `pid` in µs (`/proc/PID/stat`, in clock ticks).
#[cfg(feature = "js")]
fn process_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    ticks * 1_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64
}

/// The example JavaScript codecs (`codecs/`) in hubgate's codec worker, engine and worker
/// reused across calls: the call alone (round trip included), and the whole decode stage
/// (call, mapping, record). Before that, the memory loaded codecs cost the worker: its RSS
/// with 1, 10 and 100 loaded.
#[cfg(feature = "js")]
fn js_codecs(c: &mut Criterion) {
    use hubgate::js::{dir, Launcher, Worker};
    use std::time::{SystemTime, UNIX_EPOCH};
    let examples = codec_files::examples();
    let examples = examples.path();
    let launcher = || Launcher::program(env!("CARGO_BIN_EXE_hubgate"));
    let worker = Worker::new(launcher());
    let agent = rss_kb(std::process::id());
    let mut loaded = Vec::new();
    let mut rss = Vec::new();
    for n in [1, 10, 100] {
        while loaded.len() < n {
            loaded.push(dir::load(examples, "example-th", &worker).unwrap());
        }
        rss.push(rss_kb(worker.pid().unwrap()));
    }
    eprintln!(
        "js: worker RSS {} KB with 1 codec loaded, {} KB with 10, {} KB with 100 ({} KB per \
         codec); this process {agent} -> {} KB",
        rss[0],
        rss[1],
        rss[2],
        (rss[2] - rss[0]) / 99,
        rss_kb(std::process::id())
    );
    drop(loaded);
    // CPU time per call, the agent's and the worker's together: what a call costs a core
    // whatever else runs on the machine (the wall-clock times below wait for the scheduler).
    let door = dir::load(examples, "example-door", &worker).unwrap();
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let pid = worker.pid().unwrap();
    let (agent0, worker0) = (thread_cpu_us(), process_cpu_us(pid));
    let calls = 20_000;
    for _ in 0..calls {
        black_box(door.codec.decode(Some(2), &[1, 0, 42, 87], time).unwrap());
    }
    let agent = thread_cpu_us() - agent0;
    let worker_cpu = process_cpu_us(pid) - worker0;
    eprintln!(
        "js: example-door CPU per call {:.1} µs ({:.1} in the agent, {:.1} in the worker): {:.0} \
         calls/s per core",
        (agent + worker_cpu) as f64 / calls as f64,
        agent as f64 / calls as f64,
        worker_cpu as f64 / calls as f64,
        calls as f64 * 1e6 / (agent + worker_cpu) as f64
    );
    let cases = [
        ("example-th", 1u8, "0866510e10"),
        ("example-door", 2, "01002a57"),
        ("example-counter", 3, "00010001"),
    ];
    let mut g = c.benchmark_group("js");
    g.throughput(Throughput::Elements(1));
    for (name, fport, hex) in cases {
        let script = dir::load(examples, name, &worker).unwrap();
        let payload = hex::decode(hex).unwrap();
        assert!(script.codec.decode(Some(fport), &payload, time).is_ok());
        g.bench_function(name, |b| {
            b.iter(|| {
                script
                    .codec
                    .decode(black_box(Some(fport)), black_box(&payload), time)
            })
        });
    }
    // The decode stage as the forwarder runs it for a device with a JavaScript codec.
    let cfg = hubgate::config::Config::parse(&format!(
        "[codecs]\ndir = {examples:?}\n[sink]\ntype = \"stdout\"\n\
         [[device]]\ndev_eui = \"58a0cb0000101234\"\njs_codec = \"example-th\"\n"
    ))
    .unwrap();
    let mut decoder =
        hubgate::decode::Decoder::with_launcher(&cfg, hubgate::metrics::Metrics::new(), launcher());
    let input = hubgate::source::Input::Uplink(hubgate::uplink::Uplink {
        dev_eui: hubgate::ids::DevEui::parse("58a0cb0000101234").unwrap(),
        dev_addr: None,
        device_name: None,
        fport: Some(1),
        fcnt: Some(1),
        payload: hex::decode("0866510e10").unwrap(),
        time: SystemTime::now(),
        radio: hubgate::uplink::Radio::default(),
        ns: hubgate::uplink::NsDecoded::default(),
        same_ms_index: 0,
        session: None,
    });
    let rec = decoder.decode(&input).remove(0);
    assert_eq!(rec.rec_type, "io.microshare.environment.unpacked");
    g.bench_function("example-th+record", |b| {
        b.iter(|| decoder.decode(black_box(&input)))
    });
    g.finish();
}

#[cfg(feature = "js")]
criterion_group!(
    benches,
    codecs,
    lorawan_mic_and_decrypt,
    chirpstack,
    record_build,
    js_codecs
);
#[cfg(not(feature = "js"))]
criterion_group!(
    benches,
    codecs,
    lorawan_mic_and_decrypt,
    chirpstack,
    record_build
);
criterion_main!(benches);
