//! JavaScript codecs cannot hang, abort or bloat the agent: they run in hubgate's codec worker
//! (`hubgate js-worker`). A builtin that never returns, a codec that runs out of memory or a
//! worker killed in the middle of a call costs that one uplink, packed with the reason, and
//! the next uplink of a good codec decodes; a device whose frames keep doing it is quarantined
//! for its codec while the codec's other devices go on decoding, and the decoder calls no more
//! once a round's calls took its budget.
#![cfg(feature = "js")]

#[path = "support/codec_files.rs"]
mod codec_files;
#[path = "support/rss.rs"]
mod rss;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hubgate::decode::Decoder;
use hubgate::js::{JsCodec, JsError, Launcher, Worker};
use hubgate::metrics::Metrics;
use hubgate::record::Record;
use hubgate::source::Input;
use serde_json::{json, Value};

const GOOD: &str = "58a0cb0000100001";
const BAD: &str = "58a0cb0000100002";
/// A good device with the same codec as BAD.
const NEIGHBOUR: &str = "58a0cb0000100003";

/// Never returns for bytes 1-5: C builtins that loop without looking at the time limit; 6
/// loops until the time limit stops it, as 7-9 do: builtins that look at it since QuickJS-ng
/// 0.16 (rquickjs 0.14) and never returned before; else it returns the second byte.
const HANG: &str = r#"
function decodeUplink(input) {
  var huge = { length: Math.pow(2, 53) - 1 };
  switch (input.bytes[0]) {
    case 1: return { data: { r: "a".repeat(4e6).indexOf("a".repeat(2e6) + "b") } };
    case 2: return { data: { r: Array(Math.pow(2, 32) - 1).join("").length } };
    case 3: return { data: { r: Array.prototype.copyWithin.call(huge, 0, 1).length } };
    case 4: return { data: { r: Array.prototype.reverse.call(huge).length } };
    case 5: return { data: { r: "a".repeat(4e6).includes("a".repeat(2e6) + "b") } };
    case 6: for (;;) {}
    case 7: return { data: { r: Array.prototype.includes.call(huge, 0) } };
    case 8: return { data: { r: Array.prototype.indexOf.call(huge, 0) } };
    case 9: return { data: { r: Array.prototype.lastIndexOf.call(huge, 0) } };
    default: return { data: { ok: true, n: input.bytes[1] } };
  }
}
"#;

/// Keeps a little of every payload: its heap grows with every call until it runs out.
const LEAK: &str = r#"
var kept = [];
function decodeUplink(input) {
  if (input.bytes[0] === 1) { for (;;) { kept.push(new Array(100000).fill(1)); } }
  kept.push("x".repeat(20000) + kept.length);
  return { data: { kept: kept.length } };
}
"#;

fn launcher() -> Launcher {
    Launcher::program(env!("CARGO_BIN_EXE_hubgate"))
}

/// A decoder whose device GOOD has the example door codec and BAD and NEIGHBOUR the codec
/// `bad`.
fn decoder(bad: &str) -> (Decoder, Arc<Metrics>, tempfile::TempDir) {
    decoder_with(bad, "")
}

/// The same, with more settings of `[codecs]`.
fn decoder_with(bad: &str, codecs: &str) -> (Decoder, Arc<Metrics>, tempfile::TempDir) {
    decoder_launched(bad, codecs, launcher())
}

/// The same, its worker started by `launcher`.
fn decoder_launched(
    bad: &str,
    codecs: &str,
    launcher: Launcher,
) -> (Decoder, Arc<Metrics>, tempfile::TempDir) {
    let dir = codec_files::tempdir();
    codec_files::write(dir.path().join("bad.js"), bad);
    for ext in ["js", "toml"] {
        codec_files::copy_example(
            &format!("example-door.{ext}"),
            &dir.path().join(format!("door.{ext}")),
        );
    }
    let cfg = hubgate::config::Config::parse(&format!(
        "[codecs]\ndir = {:?}\n{codecs}[sink]\ntype = \"stdout\"\n\
         [[device]]\ndev_eui = \"{GOOD}\"\njs_codec = \"door\"\n\
         [[device]]\ndev_eui = \"{BAD}\"\njs_codec = \"bad\"\n\
         [[device]]\ndev_eui = \"{NEIGHBOUR}\"\njs_codec = \"bad\"\n",
        dir.path()
    ))
    .unwrap();
    let metrics = Metrics::new();
    let decoder = Decoder::with_launcher(&cfg, metrics.clone(), launcher);
    assert_eq!(metrics.problems("codec_file"), 0);
    (decoder, metrics, dir)
}

fn uplink(dev_eui: &str, payload: &[u8]) -> Input {
    Input::Uplink(hubgate::uplink::Uplink {
        dev_eui: hubgate::ids::DevEui::parse(dev_eui).unwrap(),
        dev_addr: None,
        device_name: None,
        fport: Some(10),
        fcnt: Some(1),
        payload: payload.to_vec(),
        time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        radio: hubgate::uplink::Radio::default(),
        ns: hubgate::uplink::NsDecoded::default(),
        same_ms_index: 0,
        session: None,
    })
}

fn body(rec: &Record) -> Value {
    serde_json::from_str(&rec.body).unwrap()
}

/// The packed record's reason.
fn packed(rec: &Record) -> String {
    assert_eq!(rec.rec_type, "io.microshare.lorawan.packed", "{}", rec.body);
    body(rec)["obj"]["data"]["error"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The good codec still decodes.
fn good_decodes(d: &mut Decoder) {
    let rec = d.decode(&uplink(GOOD, &[1, 0, 42, 87])).remove(0);
    assert_eq!(rec.rec_type, "io.microshare.openclose.unpacked");
    assert_eq!(body(&rec)["obj"]["data"]["open"][0]["value"], true);
}

/// Each builtin in a decoder of its own: a device whose frames keep hanging its codec is
/// quarantined, its good frames between notwithstanding.
#[test]
fn a_builtin_that_never_returns_costs_one_packed_record() {
    for case in 1..=5u8 {
        let (mut d, m, _dir) = decoder(HANG);
        let rec = d.decode(&uplink(BAD, &[case])).remove(0);
        let reason = packed(&rec);
        assert!(
            reason.starts_with("JavaScript bad: did not answer within "),
            "case {case}: {reason}"
        );
        assert!(reason.ends_with(" ms: its worker was killed"), "{reason}");
        good_decodes(&mut d);
        // The same codec decodes its next good payload in a fresh worker.
        let rec = d.decode(&uplink(BAD, &[0])).remove(0);
        assert_eq!(body(&rec)["obj"]["data"]["origin"]["ok"], true);
        assert_eq!(m.problems("js_timeout"), 1);
    }
}

/// The builtins that look at the time limit are stopped by it, inside the worker, as an
/// endless loop is.
#[test]
fn the_time_limit_stops_builtins_that_look_at_it() {
    let worker = Worker::new(launcher());
    let bad = worker.load("bad.js", HANG).unwrap();
    for case in 6..=9u8 {
        let result = bad.decode(Some(1), &[case], SystemTime::now());
        assert_eq!(result, Err(JsError::TimedOut(100)), "case {case}");
    }
}

#[test]
fn a_codec_that_runs_out_of_memory_costs_one_packed_record() {
    let (mut d, m, _dir) = decoder(LEAK);
    let rec = d.decode(&uplink(BAD, &[0])).remove(0);
    assert_eq!(body(&rec)["obj"]["data"]["origin"]["kept"], 1);
    let rec = d.decode(&uplink(BAD, &[1])).remove(0);
    assert_eq!(packed(&rec), "JavaScript bad: needed more than 16 MiB");
    assert_eq!(m.problems("js_oom"), 1);
    good_decodes(&mut d);
    // Every call starts afresh: nothing was kept from the first.
    let rec = d.decode(&uplink(BAD, &[0])).remove(0);
    assert_eq!(body(&rec)["obj"]["data"]["origin"]["kept"], 1);
}

/// The CPU time process `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = stat.rfind(')') else { return 0 };
    let fields: Vec<&str> = stat[end + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Kill process `pid` (SIGKILL).
fn kill(pid: u32) {
    // SAFETY: kill sends a signal to a worker this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

/// Once worker `pid` has used some CPU time on the call it is stuck in, kill it.
fn kill_when_busy(pid: u32) {
    let before = cpu_ticks(pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cpu_ticks(pid) < before + 5 {
        assert!(Instant::now() < deadline, "the worker never got busy");
        std::thread::yield_now();
    }
    kill(pid);
}

/// The worker thread `tid` of this process started, other than `not`, once there is one.
fn child_of(tid: libc::c_long, not: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let children = std::fs::read_to_string(format!("/proc/self/task/{tid}/children"));
        let found = children
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|&p| p != not);
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no new worker");
        std::thread::yield_now();
    }
}

/// A worker that dies in the middle of a call (here: SIGKILL while it is stuck, with the
/// agent's deadlines out of the way) might have been killed from outside: the call is made
/// once more in a new worker; when that one dies too, the call fails. The next call gets a
/// new worker.
#[test]
fn a_worker_that_dies_during_a_call_and_again_costs_that_call() {
    let launcher = launcher()
        .with_slack(Duration::from_secs(120))
        .with_cap(Duration::from_secs(600));
    let worker = Worker::new(launcher);
    let bad = worker.load("bad.js", HANG).unwrap();
    let pid = worker.pid().unwrap();
    let time = SystemTime::now();
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let call = std::thread::spawn(move || {
        // SAFETY: gettid takes nothing and cannot fail.
        tid_tx
            .send(unsafe { libc::syscall(libc::SYS_gettid) })
            .unwrap();
        (bad.decode(Some(1), &[1], time), bad)
    });
    let tid = tid.recv().unwrap();
    kill_when_busy(pid);
    kill_when_busy(child_of(tid, pid));
    let (result, bad) = call.join().unwrap();
    assert_eq!(
        result,
        Err(JsError::Crashed(
            "it closed the socket; it ended by signal 9 (SIGKILL)".into()
        ))
    );
    let out = bad.decode(Some(1), &[0], time).unwrap();
    assert_eq!(out.data["ok"], true);
    assert_ne!(worker.pid(), Some(pid));
}

/// A worker killed from outside between two calls, however short before the next one,
/// costs that call nothing: it is made in a new worker.
#[test]
fn a_worker_killed_right_before_a_call_costs_nothing() {
    let worker = Worker::new(launcher());
    let bad = worker.load("bad.js", HANG).unwrap();
    let time = SystemTime::now();
    for n in 0..20u8 {
        let pid = worker.pid().unwrap();
        kill(pid);
        let out = bad.decode(Some(1), &[0, n], time).unwrap();
        assert_eq!(out.data["n"], n);
        assert_ne!(worker.pid(), Some(pid));
    }
}

/// A worker that ends while it loads a codec (the OOM killer's first pick, an operator's
/// kill) is not the codec's doing: the load is made once more in a new worker, as a call is,
/// and the codec gets its own verdict. It failed instead, and at start that codec stayed
/// failed for the whole run (its devices' uplinks all went out packed with "its worker died")
/// until a SIGHUP or a restart.
#[test]
fn a_worker_killed_while_it_loads_a_codec_costs_the_codec_nothing() {
    // A top level that takes a while (1.2 s, under the 2 s load limit), for the kill to land
    // in; its verdict is that it is too slow for a call, which only a load that ran to its
    // end in the new worker can tell.
    const SLOW: &str = "var t0 = Date.now(); while (Date.now() - t0 < 1200) {}
        function decodeUplink(i) { return {data: {ok: true}}; }";
    let worker = Worker::new(
        launcher()
            .with_slack(Duration::from_secs(60))
            .with_cap(Duration::from_secs(600)),
    );
    let (tid_tx, tid) = std::sync::mpsc::channel();
    let load = std::thread::spawn(move || {
        // SAFETY: gettid takes nothing and cannot fail.
        tid_tx
            .send(unsafe { libc::syscall(libc::SYS_gettid) })
            .unwrap();
        worker.load("slow.js", SLOW).map(|_| ())
    });
    kill_when_busy(child_of(tid.recv().unwrap(), 0));
    let result = load.join().unwrap();
    assert!(
        matches!(result, Err(JsError::SlowTopLevel(_))),
        "{result:?}"
    );
}

/// A worker launcher script in `dir`: it runs `first`, and from its second start on also
/// `later`, then the worker.
fn launcher_script(dir: &std::path::Path, first: &str, later: &str) -> std::path::PathBuf {
    let script = dir.join("worker.sh");
    let started = dir.join("started");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{first}\nif [ -e {started:?} ]; then {later}; fi\n: > {started:?}\nexec {:?} \"$@\"\n",
            env!("CARGO_BIN_EXE_hubgate")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// A codec that passed its first load is loaded again into a new worker without its top
/// level being timed: one near the 50 ms limit used to pass at start, then fail that load
/// after a retirement, and every call after it loaded it again (its top level's CPU on the
/// forwarder's path) to fail with the same reason, until a reload. Here the new worker runs
/// in another time zone, where the top level takes ~300 ms of CPU: its call is then held
/// to the call's own limit (a timeout, a strike), as any call is.
#[test]
fn a_codec_loaded_again_into_a_new_worker_is_not_timed_again() {
    const ZONED: &str = "if (new Date(0).getTimezoneOffset() !== 0) {
          var n = 0; for (var i = 0; i < 5e6; i++) { n += i; } }
        function decodeUplink(i) { return {data: {ok: true}}; }";
    let dir = codec_files::tempdir();
    let script = launcher_script(dir.path(), "TZ=UTC0; export TZ", "TZ=XYZ-5");
    let worker = Worker::new(Launcher::program(&script));
    let codec = worker.load("zoned.js", ZONED).unwrap();
    let time = SystemTime::now();
    assert_eq!(codec.decode(Some(1), &[0], time).unwrap().data["ok"], true);
    let pid = worker.pid().unwrap();
    kill(pid);
    for _ in 0..2 {
        let result = codec.decode(Some(1), &[0], time);
        assert!(matches!(result, Err(JsError::TimedOut(100))), "{result:?}");
    }
    assert_ne!(worker.pid(), Some(pid));
}

/// A call gives up after the launcher's cap, the start of a new worker and the loading of
/// its codec included, however patient the agent is with a worker that only waits for a CPU
/// (here: a worker that never answers and never runs, whose first deadline alone would be
/// 7.4 s and its patience ten times that).
#[test]
fn a_call_gives_up_at_its_cap_with_the_load_included() {
    let dir = codec_files::tempdir();
    let script = launcher_script(dir.path(), ":", "exec /bin/sleep 1000");
    let worker = Worker::new(Launcher::program(&script).with_cap(Duration::from_secs(4)));
    let bad = worker.load("bad.js", HANG).unwrap();
    let pid = worker.pid().unwrap();
    kill(pid);
    let result = bad.decode(Some(1), &[0], SystemTime::now());
    let Err(JsError::Hung(ms)) = result else {
        panic!("{result:?}")
    };
    assert!(ms < 7_400, "{ms}");
    assert_ne!(worker.pid(), Some(pid));
}

/// A device whose frames hang its codec 3 times is quarantined for it, though its frames
/// between decode: one device cannot go on costing the codec timeouts by taking turns.
#[test]
fn a_device_hanging_between_good_frames_is_quarantined() {
    let (mut d, m, _dir) = decoder(HANG);
    for n in 0..3 {
        if n > 0 {
            let rec = d.decode(&uplink(BAD, &[0, n])).remove(0);
            assert_eq!(body(&rec)["obj"]["data"]["origin"]["n"], n, "{}", rec.body);
        }
        let reason = packed(&d.decode(&uplink(BAD, &[1])).remove(0));
        assert!(reason.contains("did not answer within"), "{reason}");
        good_decodes(&mut d);
    }
    // Not called any more for this device, even with a payload it would decode.
    for payload in [[1], [0]] {
        assert_quarantined(&packed(&d.decode(&uplink(BAD, &payload)).remove(0)));
    }
    assert_eq!(m.problems("js_timeout"), 3);
    assert_eq!(m.problems("js_quarantined"), 2);
    assert_eq!(m.problems("js_quarantine_started"), 1);
    good_decodes(&mut d);
}

fn assert_quarantined(reason: &str) {
    assert!(
        reason.starts_with("JavaScript bad: quarantined for this device for another "),
        "{reason}"
    );
    assert!(
        reason.ends_with(
            " s after 3 of its calls timed out, ran out of memory, failed in the engine or took \
             the worker down (only a success 60 s or more after the last of them forgets them)"
        ),
        "{reason}"
    );
}

/// The record NEIGHBOUR's frame `[0, n]` decodes into.
fn neighbour_decodes(d: &mut Decoder, n: u8) {
    let rec = d.decode(&uplink(NEIGHBOUR, &[0, n])).remove(0);
    assert_eq!(
        rec.rec_type, "io.microshare.lorawan.unpacked",
        "{}",
        rec.body
    );
    assert_eq!(body(&rec)["obj"]["data"]["origin"]["n"], n);
}

/// A poison device (every frame hangs the codec) between good devices on the same codec is
/// quarantined after 3 of its frames, though the codec decodes fine in between; the good
/// device's records are all decoded, in order.
#[test]
fn a_poison_device_among_good_ones_on_its_codec_is_quarantined() {
    let (mut d, m, _dir) = decoder(HANG);
    for n in 0..8u8 {
        let reason = packed(&d.decode(&uplink(BAD, &[1])).remove(0));
        if n < 3 {
            assert!(reason.contains("did not answer within"), "{n}: {reason}");
        } else {
            assert_quarantined(&reason);
        }
        neighbour_decodes(&mut d, n);
        good_decodes(&mut d);
    }
    assert_eq!(m.problems("js_timeout"), 3);
    assert_eq!(m.problems("js_quarantined"), 5);
    assert_eq!(m.problems("js_quarantine_started"), 1);
    let line = m
        .recent_problems()
        .into_iter()
        .find(|w| w.kind == "js_quarantine_started")
        .map(|w| w.line)
        .unwrap();
    assert!(
        line.starts_with(
            "device 58-A0-CB-00-00-10-00-02: JavaScript bad is not called for it for 600 s: 3 \
             of its calls timed out, ran out of memory, failed in the engine or took the worker \
             down, and no success 60 s or more after the last of them forgot them; its uplinks \
             go out packed meanwhile"
        ),
        "{line}"
    );
}

/// A device's quarantine ends after `[codecs] quarantine`: its frames are called again.
#[test]
fn a_quarantine_ends() {
    let quarantine = Duration::from_secs(3);
    let (mut d, m, _dir) = decoder_with(HANG, "quarantine = \"3s\"\n");
    for _ in 0..3 {
        packed(&d.decode(&uplink(BAD, &[6])).remove(0));
    }
    // The quarantine started before the third call returned: it is over by then.
    let over = Instant::now() + quarantine;
    assert_eq!(m.problems("js_timeout"), 3);
    assert_quarantined(&packed(&d.decode(&uplink(BAD, &[0, 7])).remove(0)));
    // A wait for the clock, which the quarantine is measured by, not for another thread.
    std::thread::sleep(over.saturating_duration_since(Instant::now()));
    let rec = d.decode(&uplink(BAD, &[0, 7])).remove(0);
    assert_eq!(body(&rec)["obj"]["data"]["origin"]["n"], 7, "{}", rec.body);
    assert_eq!(m.problems("js_timeout"), 3);
    assert_eq!(m.problems("js_quarantined"), 1);
}

/// A reload (SIGHUP) that finds a codec's file unchanged keeps its quarantines, so a poison
/// device gets no fresh start from it; a changed file starts the codec afresh.
#[test]
fn a_reload_keeps_the_quarantines_of_an_unchanged_codec() {
    let (mut d, m, dir) = decoder(HANG);
    for _ in 0..3 {
        packed(&d.decode(&uplink(BAD, &[6])).remove(0));
    }
    assert_quarantined(&packed(&d.decode(&uplink(BAD, &[0, 1])).remove(0)));
    d.reloader().reload();
    assert_quarantined(&packed(&d.decode(&uplink(BAD, &[0, 2])).remove(0)));
    neighbour_decodes(&mut d, 3);
    codec_files::write(dir.path().join("bad.js"), format!("{HANG}// fixed\n"));
    d.reloader().reload();
    let rec = d.decode(&uplink(BAD, &[0, 4])).remove(0);
    assert_eq!(body(&rec)["obj"]["data"]["origin"]["n"], 4, "{}", rec.body);
    assert_eq!(m.problems("codec_file"), 0);
    assert_eq!(m.problems("js_timeout"), 3);
}

/// Once a round's calls took `[codecs] round_budget`, the decoder calls no more in that round:
/// a frame it is given then (the forwarder ends the round instead; only a stop goes on) goes
/// out packed without a call, counted; the next round calls again. Before any round (no
/// forwarder: `hubgate decode`) there is no budget.
#[test]
fn a_round_spends_at_most_its_budget() {
    let (mut d, m, _dir) = decoder_with(HANG, "round_budget = \"1ms\"\n");
    packed(&d.decode(&uplink(BAD, &[6])).remove(0));
    good_decodes(&mut d);
    d.start_round();
    packed(&d.decode(&uplink(BAD, &[6])).remove(0));
    for _ in 0..3 {
        assert_eq!(
            packed(&d.decode(&uplink(GOOD, &[1, 0, 42, 87])).remove(0)),
            "JavaScript door: not called: this round's JavaScript calls took its budget (1 ms)"
        );
    }
    assert_eq!(m.problems("js_budget"), 3);
    d.start_round();
    good_decodes(&mut d);
    d.start_round();
    neighbour_decodes(&mut d, 1);
    assert_eq!(m.problems("js_budget"), 3);
    assert_eq!(m.problems("js_timeout"), 2);
}

/// Set in the child process that runs [`a_leaking_codec_grows_neither_its_worker_nor_the_agent`]
/// alone: the agent's RSS is its process's, which this binary's other tests grow when they
/// run beside it.
const ALONE: &str = "HUBGATE_JS_TEST_ALONE";

/// A codec that keeps everything keeps nothing past its call (each call runs in a context of
/// its own): neither the worker's heap nor the agent's grows, call after call.
#[test]
fn a_leaking_codec_grows_neither_its_worker_nor_the_agent() {
    const NAME: &str = "a_leaking_codec_grows_neither_its_worker_nor_the_agent";
    if std::env::var_os(ALONE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && said.contains("1 passed"), "{said}");
        return;
    }
    let (mut d, m, _dir) = decoder(LEAK);
    for _ in 0..50 {
        d.decode(&uplink(BAD, &[0])).remove(0);
    }
    let before = rss::rss(std::process::id());
    let pid = worker_of(&mut d);
    let worker_before = vm_kib(pid, "VmData");
    for _ in 0..2_000 {
        let rec = d.decode(&uplink(BAD, &[0])).remove(0);
        assert_eq!(body(&rec)["obj"]["data"]["origin"]["kept"], 1);
    }
    let after = rss::rss(std::process::id());
    assert_eq!(worker_of(&mut d), pid);
    // 20 KB a call kept across calls would be 40 MB.
    let worker_after = vm_kib(pid, "VmData");
    assert!(
        worker_after < worker_before + 4096,
        "worker VmData {worker_before} -> {worker_after} KiB"
    );
    assert_eq!(m.problems("js_oom"), 0);
    assert!(after < before + (4 << 20), "RSS {before} -> {after} bytes");
    good_decodes(&mut d);
}

/// The pid of the worker running the decoder's codecs: the one child of this thread.
fn worker_of(d: &mut Decoder) -> u32 {
    good_decodes(d);
    // SAFETY: gettid takes nothing and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let children = std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).unwrap();
    let pids: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0]
}

/// Every thread of the worker (its codecs' and the one watching for the agent's end) runs
/// under its system-call filter (seccomp mode 2: one filter more than this test process
/// has), without new privileges.
#[test]
fn every_thread_of_the_worker_runs_under_its_system_call_filter() {
    let field = |status: &str, name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} missing in {status}"))
    };
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let filters: u32 = field(&ours, "Seccomp_filters:").parse().unwrap();
    let (mut d, _m, _dir) = decoder(SHARED_OBJECT);
    let pid = worker_of(&mut d);
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("status")).unwrap())
        .collect();
    assert_eq!(tasks.len(), 2);
    for status in tasks {
        assert_eq!(field(&status, "Seccomp:"), "2", "{status}");
        let theirs: u32 = field(&status, "Seccomp_filters:").parse().unwrap();
        assert_eq!(theirs, filters + 1, "{status}");
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "{status}");
    }
}

/// A vendor-style codec that fills one object declared at its top level: fine where every
/// call gets the codec freshly loaded (ChirpStack v4 makes a new runtime per call, TTN and
/// ChirpStack v3 a new VM), so its authors never see the object outlive a call.
const SHARED_OBJECT: &str = r#"
var decoded = {};
function decodeUplink(input) {
  var b = input.bytes;
  for (var i = 0; i + 1 < b.length; i += 2) {
    if (b[i] === 1) { decoded.temperature = b[i + 1]; }
    if (b[i] === 2) { decoded.humidity = b[i + 1]; }
  }
  return { data: decoded };
}
"#;

/// Two devices share a codec: what one device's call leaves in the codec's globals does not
/// reach the other device's record. With one context kept across calls, a temperature-only
/// sensor decoded after a temperature-and-humidity one went out with the other's humidity
/// as its own.
#[test]
fn a_codecs_globals_do_not_carry_one_devices_readings_into_anothers() {
    let (mut d, _m, _dir) = decoder(SHARED_OBJECT);
    let mut origin = |dev: &str, payload: &[u8]| -> Value {
        body(&d.decode(&uplink(dev, payload)).remove(0))["obj"]["data"]["origin"].clone()
    };
    assert_eq!(
        origin(BAD, &[1, 21, 2, 50]),
        json!({"temperature": 21, "humidity": 50})
    );
    assert_eq!(
        origin(NEIGHBOUR, &[1, 30]),
        json!({"temperature": 30}),
        "the temperature-only device's record carries the other device's humidity"
    );
}

/// Keeps 5 MiB from its top level on: well inside its own runtime's 16 MiB.
const KEEPS_5_MIB: &str = r#"
var keep = [];
for (var i = 0; i < 5; i++) { keep.push(new Uint8Array(1 << 20)); }
function decodeUplink(input) { return { data: { kept: keep.length } }; }
"#;

/// Codecs that each fit their own runtime's limit all load and all decode, however many of
/// them there are: what a codec's top level allocates is freed with its call's context, so
/// loaded codecs do not add up to the worker's limit (64 MiB for all of them; 70 MiB here).
/// With its context kept, the load this limit refused failed for the whole run as "needed
/// more than 16 MiB" (5 MiB here).
#[test]
fn codecs_that_each_fit_their_limit_all_load_and_decode() {
    let dir = codec_files::tempdir();
    let names: Vec<String> = (0..14).map(|n| format!("c{n:02}")).collect();
    for name in &names {
        codec_files::write(dir.path().join(format!("{name}.js")), KEEPS_5_MIB);
    }
    let named = hubgate::js::dir::Named {
        dir: dir.path().to_path_buf(),
        codecs: names.clone(),
        tables: Vec::new(),
        hubs: None,
    };
    let set = named.load(launcher());
    assert_eq!(set.failures(), Vec::<String>::new());
    let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let outcomes: Vec<String> = names
        .iter()
        .map(|name| {
            let script = set.codec(name).unwrap().as_ref().unwrap();
            match script.codec.decode(Some(1), &[0], time) {
                Ok(out) => out.data["kept"].to_string(),
                Err(e) => format!("{name}: {e}"),
            }
        })
        .collect();
    assert_eq!(outcomes, vec!["5".to_string(); names.len()]);
}

/// Takes 1 MiB blocks until its runtime refuses one, catches that and returns how many it
/// got.
const RUNAWAY: &str = r#"
function decodeUplink(input) {
  var got = [];
  try { for (;;) { got.push(new Uint8Array(1 << 20)); } } catch (e) {}
  var mib = got.length;
  got = null;
  return { data: { mib: mib } };
}
"#;

/// Takes 15 MiB, under its runtime's 16 MiB, in every call (kept past none: each call has a
/// context of its own).
const HOLDER: &str = r#"
var kept;
function decodeUplink(input) {
  kept = kept || new Uint8Array(15 << 20);
  return { data: { mib: kept.length >> 20 } };
}
"#;

/// About 1 MB of code (a string literal, as a large vendor codec's tables are), loaded
/// codec after codec; and 12 MiB, inside its runtime's 16 MiB, taken in a call given 1.
fn large_codec() -> String {
    format!(
        "var table = '{}';
         function decodeUplink(input) {{
           var got = input.bytes[0] === 1 ? new Uint8Array(12 << 20) : [];
           return {{ data: {{ mib: got.length >> 20, table: table.length }} }};
         }}",
        "t".repeat(1_000_000)
    )
}

/// A call that the worker's memory refuses (RLIMIT_DATA, 64 MiB for all the codecs loaded)
/// while the codec is within its own runtime's limit is not the codec's doing: it is made
/// once more in a new worker, which holds only that codec at first, and decodes. It failed as
/// "needed more than 16 MiB" (`js_oom`), a strike on an innocent device, and a load that a
/// full worker refused failed for the run.
#[test]
fn a_call_a_full_worker_refuses_is_made_again_in_a_new_one() {
    let (worker, codecs) = nearly_full_worker();
    let pid = worker.pid();
    let time = SystemTime::now();
    assert_eq!(
        codecs[1].decode(Some(1), &[0], time).unwrap().data["mib"],
        0
    );
    // 55 MB of code loaded: 12 MiB more do not fit beside it.
    let out = codecs[0].decode(Some(1), &[1], time).unwrap();
    assert_eq!((out.data["mib"].as_u64(), out.retired), (Some(12), false));
    assert_ne!(worker.pid(), pid, "made in a new worker");
    assert_eq!(
        codecs[54].decode(Some(1), &[0], time).unwrap().data["table"],
        1_000_000
    );
}

/// A worker with 55 MB of code loaded ([`large_codec`]).
fn nearly_full_worker() -> (Worker, Vec<JsCodec>) {
    let worker = Worker::new(launcher());
    let source = large_codec();
    let codecs = (0..55)
        .map(|n| worker.load(&format!("large{n}.js"), &source).unwrap())
        .collect();
    (worker, codecs)
}

/// The same for a load: one that a full worker refuses is made again in a new worker.
#[test]
fn a_load_a_full_worker_refuses_is_made_again_in_a_new_one() {
    let (worker, _codecs) = nearly_full_worker();
    let pid = worker.pid();
    let c = worker
        .load(
            "top.js",
            "var got = new Uint8Array(12 << 20);
             function decodeUplink(input) { return { data: { mib: got.length >> 20 } }; }",
        )
        .unwrap();
    assert_ne!(worker.pid(), pid, "loaded into a new worker");
    let out = c.decode(Some(1), &[], SystemTime::now()).unwrap();
    assert_eq!(out.data["mib"], 12);
}

/// The example codecs, each with a payload it decodes.
const EXAMPLES: [(&str, u8, &[u8]); 3] = [
    ("example-th", 1, &[8, 102, 81, 14, 16]),
    ("example-door", 2, &[1, 0, 42, 87]),
    ("example-counter", 3, &[0, 1, 0, 1]),
];

/// `n` codecs loaded, the examples in turn.
fn examples_loaded(worker: &Worker, examples: &std::path::Path, n: usize) -> Vec<JsCodec> {
    (0..n)
        .map(|i| {
            hubgate::js::dir::load(examples, EXAMPLES[i % 3].0, worker)
                .unwrap()
                .codec
        })
        .collect()
}

/// Each of `codecs` (loaded by [`examples_loaded`]) decodes its example payload.
fn examples_decode(codecs: &[JsCodec]) {
    for (i, c) in codecs.iter().enumerate() {
        let (_, fport, payload) = EXAMPLES[i % 3];
        c.decode(Some(fport), payload, SystemTime::now()).unwrap();
    }
}

/// The worker's memory (`WORKER_MEMORY`) holds 100 loaded codecs, a codec keeping a heap near
/// its own limit and a runaway: the runaway is stopped by its own runtime's limit, having got
/// its 16 MiB less what its runtime holds, not earlier by the worker's, which would refuse
/// whichever codec allocates next, an innocent one too. The next payload decodes.
#[test]
fn a_runaway_beside_100_codecs_and_one_near_its_limit_stops_at_its_own_limit() {
    let examples = codec_files::examples();
    let worker = Worker::new(launcher());
    let codecs = examples_loaded(&worker, examples.path(), 100);
    examples_decode(&codecs);
    let time = SystemTime::now();
    let holder = worker.load("holder.js", HOLDER).unwrap();
    assert_eq!(holder.decode(Some(1), &[], time).unwrap().data["mib"], 15);
    let runaway = worker.load("runaway.js", RUNAWAY).unwrap();
    let out = runaway.decode(Some(1), &[], time).unwrap();
    assert_eq!((out.data["mib"].as_u64(), out.retired), (Some(15), true));
    assert_eq!(worker.pid(), None, "the worker retired");
    examples_decode(&codecs);
    assert_eq!(holder.decode(Some(1), &[], time).unwrap().data["mib"], 15);
}

/// `/proc/PID/status` fields of process `pid`, in KiB.
fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The worker's memory, by hand (docs/codecs.md, "Measured through the worker"): its VmData
/// (what RLIMIT_DATA counts) and RSS with the three example codecs loaded and with 100, then
/// after 1,000 calls of each; how many it holds before its limit refuses a load; and what one
/// runtime grown within a call (to its limit, or as far as the call's time limit lets it)
/// adds, keeping numbers, small objects, strings or property tables, or fragmenting the heap.
/// `cargo test --test js_isolation worker_memory -- --ignored --nocapture`.
#[test]
#[ignore]
fn worker_memory() {
    let examples = codec_files::examples();
    let figures = |pid| {
        let kib = |field| vm_kib(pid, field);
        format!(
            "VmData {} KiB, VmRSS {} KiB (VmHWM {})",
            kib("VmData:"),
            kib("VmRSS:"),
            kib("VmHWM:")
        )
    };
    for n in [3, 100] {
        let worker = Worker::new(launcher());
        let codecs = examples_loaded(&worker, examples.path(), n);
        let pid = worker.pid().unwrap();
        let loaded = figures(pid);
        for _ in 0..1000 {
            examples_decode(&codecs);
        }
        eprintln!(
            "js: worker with {n} codecs loaded: {loaded}; after 1,000 calls of each: {}",
            figures(pid)
        );
    }
    let worker = Worker::new(launcher());
    let mut codecs = examples_loaded(&worker, examples.path(), 100);
    let pid = worker.pid().unwrap();
    let mut last = figures(pid);
    while let Ok(s) = hubgate::js::dir::load(examples.path(), EXAMPLES[codecs.len() % 3].0, &worker)
    {
        codecs.push(s.codec);
        last = figures(pid);
    }
    eprintln!(
        "js: worker with {} codecs loaded: {last}; the next load was refused",
        codecs.len()
    );
    // Grows within one call (a call keeps nothing past itself) until its runtime refuses or
    // the time limit stops it; the worker's VmData is read meanwhile, and stays at its peak
    // until the worker retires.
    let grow = r#"
      function decodeUplink(input) {
        var kept = [], n, i, tmp, o;
        for (;;) {
          n = kept.length;
          switch (input.bytes[0]) {
            case 1: kept.push(new Array(8192).fill(1.5)); break;
            case 2: for (i = 0; i < 1000; i++) kept.push({ a: i }); break;
            case 3: kept.push("x".repeat(60000) + n); break;
            case 4: o = {}; for (i = 0; i < 1000; i++) o["p" + n + "_" + i] = i; kept.push(o); break;
            case 5:
              tmp = [];
              for (i = 0; i < 400; i++) tmp.push("z".repeat(1000 + n * 4) + i);
              for (i = 0; i < tmp.length; i += 2) kept.push(tmp[i]);
              break;
          }
        }
      }
    "#;
    for (case, what) in [
        (1, "arrays of numbers"),
        (2, "small objects"),
        (3, "strings"),
        (4, "property tables"),
        (5, "growing strings, every other one freed"),
    ] {
        let worker = Worker::new(launcher());
        let c = worker.load("grow.js", grow).unwrap();
        let pid = worker.pid().unwrap();
        let base = vm_kib(pid, "VmData:");
        let done = std::sync::atomic::AtomicBool::new(false);
        let (result, most) = std::thread::scope(|s| {
            let watch = s.spawn(|| {
                let mut most = base;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                    let data = status.ok().and_then(|t| {
                        let line = t.lines().find(|l| l.starts_with("VmData:"))?.to_string();
                        line.split_whitespace().nth(1)?.parse::<u64>().ok()
                    });
                    most = most.max(data.unwrap_or(0));
                }
                most
            });
            let result = c.decode(Some(1), &[case], SystemTime::now());
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (result, watch.join().unwrap())
        });
        // Some grow too slowly to reach the heap limit within a call's time limit.
        let ended = match result {
            Err(e @ (JsError::OutOfMemory | JsError::TimedOut(_))) => e.to_string(),
            other => panic!("{what}: {other:?}"),
        };
        eprintln!(
            "js: a runtime grown in one call, keeping {what}, until it {ended}: VmData {base} \
             -> {most} KiB (+{})",
            most - base
        );
    }
}

/// A launcher that starts hubgate's worker through a shell script: `prefix` before the
/// program (commands that change how it runs), its standard error appended to `log`.
fn wrapped(dir: &std::path::Path, prefix: &str, log: &std::path::Path) -> Launcher {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec 2>>'{}'\nexec {prefix} '{}' \"$@\"\n",
            log.display(),
            env!("CARGO_BIN_EXE_hubgate")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The script stands where the agent's binary would; it passes `js-worker` on.
    Launcher::program(script)
}

fn root() -> bool {
    // SAFETY: geteuid takes nothing.
    unsafe { libc::geteuid() == 0 }
}

/// Run as a user other than root, as under systemd (and not dumpable, as the agent's start-up
/// makes it), the worker still makes itself the OOM killer's first pick.
#[test]
fn a_worker_of_an_ordinary_user_is_the_oom_killers_first_pick() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    // Tests run as root (CI) switch to `nobody`; any other user is one already.
    let prefix = if root() {
        "setpriv --reuid=65534 --regid=65534 --clear-groups"
    } else {
        ""
    };
    let worker = Worker::new(wrapped(dir.path(), prefix, &log));
    let c = worker
        .load("ok.js", "function decodeUplink(i) { return {data: {}}; }")
        .unwrap();
    assert!(c.decode(Some(1), &[], SystemTime::now()).is_ok());
    let pid = worker.pid().unwrap();
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        uid.lines()
            .any(|l| l.starts_with("Uid:") && !l.contains("\t0\t")),
        "{uid}"
    );
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(
        adj.trim(),
        "1000",
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A worker that inherits a stricter memory limit than its own (here half of it, hard, which
/// it may not raise) keeps that limit and runs its codecs: it lowers limits, never asks for
/// more (it ended with "cannot limit its memory" before, and every codec call failed).
#[test]
fn a_worker_under_a_stricter_inherited_limit_keeps_it_and_runs_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let hard = hubgate::js::WORKER_MEMORY / 2;
    // Root may raise a hard limit: not without CAP_SYS_RESOURCE.
    let drop_cap = if root() {
        "setpriv --bounding-set=-sys_resource"
    } else {
        ""
    };
    let prefix = format!("prlimit --data={hard} {drop_cap}");
    let worker = Worker::new(wrapped(dir.path(), &prefix, &log));
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let c = worker
        .load(
            "ok.js",
            "function decodeUplink(i) { return {data: {n: i.bytes.length}}; }",
        )
        .unwrap_or_else(|e| panic!("{e:?}: {}", said()));
    let data = c
        .decode(Some(1), &[1, 2, 3], SystemTime::now())
        .unwrap_or_else(|e| panic!("{e:?}: {}", said()));
    assert_eq!(
        serde_json::Value::Object(data.data).to_string(),
        r#"{"n":3}"#
    );
    let pid = worker.pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let data_line = limits
        .lines()
        .find(|l| l.starts_with("Max data size"))
        .unwrap();
    let numbers: Vec<&str> = data_line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, [hard.to_string(), hard.to_string()], "{limits}");
}

/// Set for the test binary run as a fake worker ([`fake_worker`]): how it misbehaves.
const FAKE: &str = "HUBGATE_TEST_FAKE_WORKER";

/// Run alone with [`FAKE`] set, this test is a worker that answers its first request (a load)
/// as hubgate's does, then answers the next one as FAKE says: `garbage` (a frame that is no
/// answer), `huge` (a frame longer than any answer) or `trickle` (a frame's length, then a
/// byte of it every 100 ms); `claims` answers every load as hubgate's does and its decodes
/// with the errors of [`claims`], one after another; `chatty` writes [`chatter`] to its
/// standard error first, then answers every load as hubgate's does and every decode with
/// `{"data":{"n":1}}`; `claims_load` answers its first load with a worker's death and every
/// later one with a quarantine, kinds only the agent tells.
#[test]
fn fake_worker() {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let Some(how) = std::env::var_os(FAKE) else {
        return;
    };
    // SAFETY: standard input is this worker's end of the socket, used by nothing else.
    let mut socket = unsafe { std::fs::File::from_raw_fd(0) };
    let request = |socket: &mut std::fs::File| {
        let mut len = [0; 4];
        socket.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_le_bytes(len) as usize];
        socket.read_exact(&mut body).unwrap();
        body
    };
    if how == "chatty" {
        std::io::stderr().write_all(&chatter()).unwrap();
    }
    // Status 0 (a result) or 1 (an error), not retiring, the text.
    let answer = |status: u8, text: &str| {
        let len = (2 + text.len()) as u32;
        [&len.to_le_bytes()[..], &[status, 0], text.as_bytes()].concat()
    };
    if how == "claims_load" {
        let mut claim = JsError::Crashed("it died".into());
        loop {
            request(&mut socket);
            let text = serde_json::to_string(&claim).unwrap();
            socket.write_all(&answer(1, &text)).unwrap();
            claim = JsError::Quarantined(600);
        }
    }
    let loaded = answer(0, "");
    request(&mut socket);
    socket.write_all(&loaded).unwrap();
    if how == "claims" || how == "chatty" {
        let mut claims = claims().into_iter().map(|(claim, _)| claim);
        loop {
            let decoded = match request(&mut socket)[0] {
                b'L' | b'R' => loaded.clone(),
                _ if how == "chatty" => answer(0, r#"{"data":{"n":1}}"#),
                _ => answer(1, &serde_json::to_string(&claims.next().unwrap()).unwrap()),
            };
            socket.write_all(&decoded).unwrap();
        }
    }
    request(&mut socket);
    match how.to_str().unwrap() {
        "garbage" => socket.write_all(b"\x05\0\0\0\x07\0abc").unwrap(),
        "huge" => socket.write_all(&u32::MAX.to_le_bytes()).unwrap(),
        _ => {
            // A frame of 10,000 bytes, which at this pace would take 1,000 s.
            socket.write_all(&10_000u32.to_le_bytes()).unwrap();
            loop {
                socket.write_all(&[0]).unwrap();
                std::thread::park_timeout(Duration::from_millis(100));
            }
        }
    }
    // Stay until the agent ends it.
    loop {
        std::thread::park();
    }
}

/// The errors the `claims` [`fake_worker`] answers its decodes with, one after another, each
/// with the reason its packed record gives after the codec's name. A text of two lines, with
/// a terminal escape and longer than a codec's message, comes on one line and cut to 200
/// characters, as a codec's own throw would.
fn claims() -> Vec<(JsError, String)> {
    let text = format!("first line\nsecond \x1b[31mred{}", "x".repeat(1000));
    let clean = format!("first line second  [31mred{}", "x".repeat(174));
    let agents = |what: &str| format!("returned an error only the agent tells ({what})");
    vec![
        (JsError::Threw(text.clone()), format!("threw {clean}")),
        (JsError::Engine(text.clone()), format!("engine: {clean}")),
        (JsError::Junk(text.clone()), format!("returned {clean}")),
        (JsError::Crashed(text.clone()), agents("its worker died")),
        (JsError::Hung(500), agents("did not answer")),
        (JsError::Quarantined(600), agents("quarantined")),
        (JsError::DeviceQuarantined(600), agents("quarantined")),
        (JsError::OverBudget(5000), agents("over the round's budget")),
        (JsError::TooLong(1 << 20), agents("a payload too long")),
        (JsError::Reported(text), agents("reported errors")),
    ]
}

/// Lines in the `chatty` [`fake_worker`]'s standard error (more than a pipe holds, so that it
/// is held up for good unless they are read): a journal priority and a terminal escape before
/// a line far longer than a log line, then [`FLOOD`] short ones.
fn chatter() -> Vec<u8> {
    let mut text = format!("<3>forged\x1b[31m {}\n", "y".repeat(100_000));
    for n in 0..FLOOD {
        text += &format!("flood {n}\n");
    }
    text.into_bytes()
}

const FLOOD: u64 = 20_000;

/// The file in a [`fake`] launcher's directory with a line for every worker started.
const STARTED: &str = "started";

/// A launcher whose worker is this test binary's [`fake_worker`], misbehaving as `how` says.
fn fake(dir: &std::path::Path, how: &str) -> Launcher {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("fake.sh");
    let me = std::env::current_exe().unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho >> '{}'\nexec env {FAKE}={how} '{}' fake_worker --exact --test-threads=1 --quiet\n",
            dir.join(STARTED).display(),
            me.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Launcher::program(script)
}

/// A worker that answers garbage, a frame too long to be an answer, or an answer a byte at a
/// time that never ends costs that call: it is killed, the call fails with the reason and
/// the agent is not held up past its patience with the worker.
#[test]
fn a_worker_that_answers_garbage_or_trickles_costs_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let time = SystemTime::now();
    let cases = [
        (
            "garbage",
            "its worker died: it answered garbage; it ended by signal 9 (SIGKILL)",
        ),
        (
            "huge",
            "its worker died: a frame of 4294967295 bytes; it ended by signal 9 (SIGKILL)",
        ),
    ];
    for (how, reason) in cases {
        let worker = Worker::new(fake(dir.path(), how));
        let c = worker.load("c.js", "function decodeUplink(i) {}").unwrap();
        let pid = worker.pid().unwrap();
        let e = c.decode(Some(1), &[1], time).unwrap_err();
        assert_eq!(e.to_string(), reason, "{how}");
        assert_eq!(worker.pid(), None, "{how}: {pid} not stopped");
    }
    let worker = Worker::new(fake(dir.path(), "trickle"));
    let c = worker.load("c.js", "function decodeUplink(i) {}").unwrap();
    let start = Instant::now();
    let e = c.decode(Some(1), &[1], time).unwrap_err();
    assert!(matches!(e, JsError::Hung(_)), "{e}");
    // Patience with a worker that uses no CPU time: 10 times the call's 500 ms deadline.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(worker.pid(), None);
}

/// The worker's standard error is a pipe the agent reads, not the agent's own: each line is
/// logged by the agent marked as the worker's, its control characters escaped and cut, and
/// rate-limited (the first at once, the others counted, not written); a worker that writes
/// far more than the pipe holds is not held up, and the pipe is closed once the worker is
/// gone.
#[test]
fn a_workers_standard_error_is_read_and_logged_by_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let worker = Worker::new(fake(dir.path(), "chatty").reporting_to(m.clone()));
    let c = worker.load("c.js", "").unwrap();
    let out = c.decode(Some(1), &[1], SystemTime::now()).unwrap();
    assert_eq!(Value::Object(out.data), json!({"n": 1}));
    let pid = worker.pid().unwrap();
    let link = |path: String| std::fs::read_link(path).unwrap();
    let pipe = link(format!("/proc/{pid}/fd/2"));
    assert!(pipe.to_str().unwrap().starts_with("pipe:["), "{pipe:?}");
    assert_ne!(pipe, link("/proc/self/fd/2".into()));
    let ours = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|l| *l == pipe)
            .count()
    };
    // Its read end.
    assert_eq!(ours(), 1);
    // Stops the worker and waits for its relay, which has read every line by then.
    drop((c, worker));
    assert_eq!(ours(), 0);
    assert_eq!(m.problems("js_worker_log"), 1 + FLOOD);
    let written: Vec<_> = m
        .recent_problems()
        .into_iter()
        .map(|w| (w.kind, w.line))
        .collect();
    let [(kind, line)] = &written[..] else {
        panic!("{written:?}");
    };
    assert_eq!(*kind, "js_worker_log");
    // 256 bytes shown, the escape's included; the flood lines the same read ended are among
    // the bytes not shown.
    let first = format!(
        "JavaScript worker {pid}: <3>forged\\u{{1b}}[31m {}… (",
        "y".repeat(256 - 20)
    );
    let more = line
        .strip_prefix(&first)
        .and_then(|l| l.strip_suffix(" more bytes)"));
    let more: u64 = more
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(more >= 100_015 - 251, "{line}");
}

/// The worker's own log lines reach the journal through the agent with its level and message
/// alone (the agent's line has the time and marks it as the worker's): here the real worker,
/// given a request it cannot read as its standard input (a FIFO it holds both ends of, so that
/// it does not take the input's end for the agent's), its socket kept aside until it ends.
#[test]
fn a_workers_own_log_line_is_logged_by_the_agent_without_a_second_prefix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("requests");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the path, a NUL-ended string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let script = dir.path().join("garbled.sh");
    let hubgate = env!("CARGO_BIN_EXE_hubgate");
    let text = format!(
        "#!/bin/sh\nexec 3<&0 0<>'{}'\nprintf '\\005\\0\\0\\0Xabcd' >&0\nexec '{hubgate}' \"$@\"\n",
        fifo.display()
    );
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Metrics::new();
    let worker = Worker::new(Launcher::program(script).reporting_to(m.clone()));
    assert!(worker.load("c.js", "").is_err());
    drop(worker);
    let written: Vec<_> = m.recent_problems().into_iter().map(|w| w.line).collect();
    let [line] = &written[..] else {
        panic!("{written:?}");
    };
    let said = line
        .strip_prefix("JavaScript worker ")
        .and_then(|l| l.split_once(": "))
        .map(|(pid, said)| (pid.parse::<u32>().is_ok(), said));
    let expected = "WARN: a request it cannot read";
    assert_eq!(said, Some((true, expected)), "{line}");
}

/// A load answered with a kind only the agent tells (a worker's death, a quarantine) fails
/// as an error of the codec's, the same worker going on: no second try in a new worker, as
/// after a death, and no quarantine.
#[test]
fn a_load_answered_with_a_kind_only_the_agent_tells_is_the_codecs_error() {
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::new(fake(dir.path(), "claims_load"));
    let agents = |what: &str| {
        Some(JsError::Junk(format!(
            "an error only the agent tells ({what})"
        )))
    };
    assert_eq!(worker.load("c.js", "").err(), agents("its worker died"));
    assert_eq!(worker.load("d.js", "").err(), agents("quarantined"));
    drop(worker);
    let started = std::fs::read_to_string(dir.path().join(STARTED)).unwrap();
    assert_eq!(started.lines().count(), 1);
}

/// A worker's errors are its codec's word (a QuickJS escape controls the worker): their
/// texts reach the packed record on one line and cut, as a codec's own throw would, and an
/// error only the agent or its guard makes (the worker hung or died, a quarantine, the round's
/// budget) is an error of the codec: counted as `js_error`, no strike, no second try in a new
/// worker (which would have taken the next claim).
#[test]
fn a_workers_errors_are_its_codecs_word() {
    let dir = tempfile::tempdir().unwrap();
    let (mut d, m, _codecs) = decoder_launched("", "", fake(dir.path(), "claims"));
    let claims = claims();
    for (claim, reason) in &claims {
        let rec = d.decode(&uplink(BAD, &[1])).remove(0);
        assert_eq!(
            packed(&rec),
            format!("JavaScript bad: {reason}"),
            "{claim:?}"
        );
    }
    assert_eq!(m.problems("js_error"), claims.len() as u64);
    for kind in [
        "js_timeout",
        "js_crashed",
        "js_quarantined",
        "js_budget",
        "js_quarantine_started",
    ] {
        assert_eq!(m.problems(kind), 0, "{kind}");
    }
}

/// A worker whose thread that watches for the agent's end cannot start (here: its user may
/// have no other process or thread, RLIMIT_NPROC 1) runs no codec: it exits with status 1 and
/// says why, rather than serving requests that nothing ends when the agent dies mid-call.
#[test]
fn a_worker_that_cannot_watch_for_the_agents_end_exits() {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_hubgate"));
    worker
        .arg("js-worker")
        .stdin(std::os::fd::OwnedFd::from(theirs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setuid and setrlimit are system calls, safe between fork and exec. root's
    // processes are not counted against RLIMIT_NPROC: the worker runs as nobody then.
    unsafe {
        worker.pre_exec(|| {
            if libc::geteuid() == 0 && libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let one = libc::rlimit {
                rlim_cur: 1,
                rlim_max: 1,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &one) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = worker.spawn().unwrap();
    // The agent gone: a worker that went on would read the end of its requests and exit 0.
    drop(ours);
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("ERROR: cannot watch for the agent's end: ")
            && said.contains("; it runs no codec without"),
        "{said}"
    );
}
