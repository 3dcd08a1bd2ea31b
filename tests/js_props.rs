//! Property tests of the JavaScript path, as `codec_props.rs` for the built-in codecs: random
//! bytes into the example codecs and into a codec whose work grows with its input, run in
//! hubgate's codec worker, never crash, never hang (each call ends within the time limit:
//! returning proves it), keep the worker's RSS within a bound a leak would pass (well under
//! its own memory limit, which would stop a leak before any bound above it) and this
//! process's memory flat; through the decode stage each uplink is exactly one record.
#![cfg(feature = "js")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubgate::js::{dir, JsCodec, JsError, Launcher, Worker, MEMORY_LIMIT};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[path = "support/codec_files.rs"]
mod codec_files;
#[path = "support/rss.rs"]
mod rss;

fn launcher() -> Launcher {
    Launcher::program(env!("CARGO_BIN_EXE_hubgate"))
}

fn time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn payload() -> impl Strategy<Value = (Option<u8>, Vec<u8>)> {
    (
        any::<Option<u8>>(),
        prop::collection::vec(any::<u8>(), 0..243),
    )
}

/// The RSS of a worker with one small codec loaded and called once: where every worker
/// starts (its binary's pages, the C library, one runtime).
fn idle_worker_rss() -> u64 {
    let worker = Worker::new(launcher());
    let codec = worker
        .load("idle.js", "function decodeUplink(i) { return {data: {}}; }")
        .unwrap();
    codec.decode(None, &[], time()).unwrap();
    rss::rss(worker.pid().unwrap())
}

/// Headroom of a worker's RSS over [`idle_worker_rss`] for the C library's arenas and the
/// pages of code a call reaches.
const SLACK: u64 = 8 << 20;

/// One call ends (an error is one line) and leaves its worker, if it still runs, under
/// `bound` bytes of RSS.
fn bounded(
    codec: &JsCodec,
    fport: Option<u8>,
    bytes: &[u8],
    bound: u64,
) -> Result<(), TestCaseError> {
    match codec.decode(fport, bytes, time()) {
        Ok(out) => prop_assert!(serde_json::to_string(&out.data).unwrap().len() <= 64 << 10),
        Err(e) => prop_assert!(!e.to_string().contains('\n'), "{e}"),
    }
    if let Some(pid) = codec.worker().pid() {
        let rss = rss::rss(pid);
        prop_assert!(rss <= bound, "worker RSS {rss} > {bound}");
    }
    Ok(())
}

/// This process's RSS grew by less than 16 MiB while `f` ran: the codecs' memory is the
/// worker's.
fn flat(f: impl FnOnce()) {
    let before = rss::rss(std::process::id());
    f();
    let after = rss::rss(std::process::id());
    assert!(after < before + (16 << 20), "RSS {before} -> {after} bytes");
}

#[test]
fn random_bytes_into_the_example_codecs() {
    // The example codecs keep nothing between calls: a few hundred KB each at most. One that
    // kept some of every payload would reach its runtime's 16 MiB, far past this.
    let bound = idle_worker_rss() + SLACK;
    let worker = Worker::new(launcher());
    let examples = codec_files::examples();
    for name in dir::names(examples.path()).unwrap() {
        let script = dir::load(examples.path(), &name, &worker).unwrap();
        flat(|| {
            TestRunner::new(Config::with_cases(2_000))
                .run(&payload(), |(fport, bytes)| {
                    bounded(&script.codec, fport, &bytes, bound)
                })
                .unwrap()
        });
    }
}

/// A codec whose loops, allocations and recursion follow its input: the byte values pick how
/// much work it does, up to never stopping and to more memory than it may have.
const GREEDY: &str = r#"
function decodeUplink(input) {
  var b = input.bytes, out = {};
  var n = b.length ? b[0] : 0;
  if (n === 255) { for (;;) {} }
  if (n === 254) { var big = "x"; for (;;) { big = big.repeat(2); } }
  if (n === 253) { var f = function (k) { return f(k + 1) + 1; }; return f(0); }
  if (n === 252) { throw new Error("rejected " + b.length); }
  if (n === 251) { return "not an object"; }
  var s = "";
  for (var i = 0; i < b.length * n; i++) { s += String.fromCharCode(65 + (i % 26)); }
  out["len"] = s.length;
  for (var j = 1; j < b.length; j++) { out["k" + b[j]] = b[j] * n; }
  return { data: out };
}
"#;

#[test]
fn random_bytes_into_a_greedy_codec() {
    // One runtime at its limit, not two: a runtime the worker kept after a failed call
    // instead of retiring would push it past this (the worker's own limit is 64 MiB).
    let bound = idle_worker_rss() + MEMORY_LIMIT as u64 + SLACK;
    let codec = Worker::new(launcher()).load("greedy.js", GREEDY).unwrap();
    let special = prop::sample::select(vec![255u8, 254, 253, 252, 251]);
    let input = prop_oneof![
        8 => payload(),
        1 => (any::<Option<u8>>(), special, prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(p, first, rest)| (p, [vec![first], rest].concat())),
    ];
    flat(|| {
        TestRunner::new(Config::with_cases(400))
            .run(&input, |(fport, bytes)| {
                // The worker makes every call, however many failed before: quarantines are
                // the decode stage's (tests/js_isolation.rs).
                let r = codec.decode(fport, &bytes, time());
                match bytes.first() {
                    Some(255) => prop_assert_eq!(r.clone().unwrap_err(), JsError::TimedOut(100)),
                    Some(254) => prop_assert_eq!(r.clone().unwrap_err(), JsError::OutOfMemory),
                    Some(251..=253) => prop_assert!(r.is_err()),
                    _ => {}
                }
                bounded(&codec, fport, &bytes, bound)
            })
            .unwrap()
    });
}

/// Through the decode stage: every uplink of a device with a JavaScript codec becomes one
/// record, unpacked or packed with the reason.
#[test]
fn every_uplink_becomes_one_record() {
    let examples = codec_files::examples();
    let cfg = hubgate::config::Config::parse(&format!(
        "[codecs]\ndir = {:?}\n[sink]\ntype = \"stdout\"\n\
         [[device]]\ndev_eui = \"58a0cb0000101234\"\njs_codec = \"example-door\"\n",
        examples.path()
    ))
    .unwrap();
    let decoder = std::cell::RefCell::new(hubgate::decode::Decoder::with_launcher(
        &cfg,
        hubgate::metrics::Metrics::new(),
        launcher(),
    ));
    TestRunner::new(Config::with_cases(2_000))
        .run(&payload(), |(fport, bytes)| {
            let input = hubgate::source::Input::Uplink(hubgate::uplink::Uplink {
                dev_eui: hubgate::ids::DevEui::parse("58a0cb0000101234").unwrap(),
                dev_addr: None,
                device_name: None,
                fport,
                fcnt: Some(1),
                payload: bytes.clone(),
                time: time(),
                radio: hubgate::uplink::Radio::default(),
                ns: hubgate::uplink::NsDecoded::default(),
                same_ms_index: 0,
                session: None,
            });
            let rec = decoder.borrow_mut().decode(&input).remove(0);
            let v: serde_json::Value = serde_json::from_str(&rec.body).unwrap();
            if bytes.len() >= 4 {
                prop_assert_eq!(rec.rec_type.as_str(), "io.microshare.openclose.unpacked");
                prop_assert_eq!(
                    &v["obj"]["data"]["open"][0]["value"],
                    &((bytes[0] & 1) == 1)
                );
            } else {
                prop_assert_eq!(rec.rec_type.as_str(), "io.microshare.lorawan.packed");
                prop_assert!(v["obj"]["data"]["error"]
                    .as_str()
                    .unwrap()
                    .contains("need 4 bytes"));
            }
            Ok(())
        })
        .unwrap();
}
