use super::*;
use serde_json::json;
use serde_json::Map;
use std::time::SystemTime;

use std::path::Path;

use crate::codec_files;

fn worker() -> Worker {
    Worker::new(Launcher::default())
}

fn example(name: &str) -> JsCodec {
    dir::load(codec_files::examples().path(), name, &worker())
        .unwrap()
        .codec
}

fn load(source: &str) -> Result<JsCodec, JsError> {
    worker().load("test.js", source)
}

fn codec(source: &str) -> JsCodec {
    load(source).unwrap()
}

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn err(c: &JsCodec, bytes: &[u8]) -> JsError {
    c.decode(Some(1), bytes, at()).unwrap_err()
}

#[test]
fn ttn_form_with_normalize() {
    let c = example("example-th");
    let out = c
        .decode(Some(1), &[0x08, 0x66, 0x51, 0x0e, 0x10, 0], at())
        .unwrap();
    assert_eq!(
        Json::Object(out.data),
        json!({"temperature": 21.5, "humidity": 40.5, "battery_mv": 3600})
    );
    assert_eq!(
        out.normalized,
        vec![serde_json::from_value::<Map<String, Json>>(
            json!({"air": {"temperature": 21.5, "relativeHumidity": 40.5}, "battery": 3.6})
        )
        .unwrap()]
    );
    assert_eq!(out.warnings, ["ignored 1 trailing bytes"]);
    // Negative temperature, and the codec's own errors.
    let out = c.decode(Some(1), &[0xff, 0x38, 0, 0, 0], at()).unwrap();
    assert_eq!(out.data["temperature"], -2.0);
    assert_eq!(
        err(&c, &[1, 2]),
        JsError::Reported("need 5 bytes, got 2".into())
    );
    assert_eq!(
        c.decode(Some(9), &[0; 5], at()).unwrap_err().to_string(),
        "reported errors: unknown fPort 9"
    );
}

#[test]
fn chirpstack_v4_and_v3_forms() {
    let c = example("example-door");
    let out = c.decode(Some(10), &[1, 0, 42, 87], at()).unwrap();
    assert_eq!(
        Json::Object(out.data),
        json!({"door_open": true, "openings": 42, "battery_pct": 87})
    );
    assert_eq!(
        err(&c, &[1]),
        JsError::Threw("Error: need 4 bytes, got 1".into())
    );
    let c = example("example-counter");
    let out = c.decode(Some(3), &[0, 1, 0, 1], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({"port": 3, "pulses": 65537}));
    let c = codec("function Decoder(bytes, port) { return {n: bytes.length, port: port}; }");
    let out = c.decode(None, &[1, 2], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({"n": 2}));
}

#[test]
fn the_input_carries_the_receive_time() {
    let c = codec("function decodeUplink(i) { return {data: {t: i.recvTime.toISOString()}}; }");
    let out = c.decode(Some(1), &[], at()).unwrap();
    assert_eq!(out.data["t"], "2023-11-14T22:13:20.000Z");
}

/// A codec that loops, recurses, eats memory, throws or returns junk costs one error, and
/// the same engine decodes the next payload.
#[test]
fn misbehaving_codecs_cost_one_call() {
    let c = codec(
        "function decodeUplink(i) {
           switch (i.bytes[0]) {
             case 1: for (;;) {}
             case 2: var a = 'x'; for (;;) { a = a.repeat(2); }
             case 3: var f = function () { return f() + 1; }; return f();
             case 4: throw 'plain string';
             case 5: return 42;
             case 6: return {data: [1, 2]};
             case 7: var o = {}; o.self = o; return {data: o};
             case 8: return {data: {s: 'x'.repeat(100000)}};
             case 9: return {data: {f: function () {}, u: undefined, n: NaN}};
             case 10: return undefined;
             case 14: return function () {};
             case 11: throw null;
             case 12: var r = 'x'; for (;;) { r += r; }
             case 13: throw Object.defineProperty(new Error('x'), 'name', {get: function () { for (;;) {} }});
             default: return {data: {ok: true}};
           }
         }",
    );
    let ok = || c.decode(Some(1), &[0], at()).unwrap().data["ok"].clone();
    assert_eq!(err(&c, &[1]), JsError::TimedOut(100));
    assert_eq!(ok(), true);
    assert_eq!(err(&c, &[2]), JsError::OutOfMemory);
    assert_eq!(ok(), true);
    assert!(matches!(err(&c, &[3]), JsError::Threw(m) if m.starts_with("RangeError")));
    assert_eq!(err(&c, &[4]), JsError::Threw("\"plain string\"".into()));
    assert_eq!(err(&c, &[5]), JsError::Junk("a number, not {data}".into()));
    assert_eq!(
        err(&c, &[6]),
        JsError::Junk("data that is not an object: an array".into())
    );
    assert!(matches!(err(&c, &[7]), JsError::Threw(m) if m.starts_with("TypeError")));
    assert!(matches!(err(&c, &[8]), JsError::Junk(m) if m.ends_with("bytes of JSON")));
    let out = c.decode(Some(1), &[9], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({"n": null}));
    for b in [10, 14] {
        assert_eq!(
            err(&c, &[b]).to_string(),
            "returned undefined (or a function), not {data}"
        );
    }
    assert_eq!(err(&c, &[11]), JsError::Threw("a null".into()));
    // A string doubled by `+=` is a rope in QuickJS-ng 0.16: its length limit comes before
    // the heap's, and is the codec's own error.
    assert!(
        matches!(err(&c, &[12]), JsError::Threw(ref m) if m.contains("string too long")),
        "{:?}",
        err(&c, &[12])
    );
    // Stopped by the time limit in a getter of its own error (read for the call's message): a
    // timeout, and its runtime retires, not the plain throw left of it.
    assert_eq!(err(&c, &[13]), JsError::TimedOut(100));
    assert_eq!(c.worker().pid(), None);
    assert_eq!(ok(), true);
}

/// A lone UTF-16 surrogate in what a codec returns (text it built from 16-bit units of the
/// payload) becomes U+FFFD, in a value, a key or a warning, and costs no reading; text that
/// only looks like its escape stays as it is.
#[test]
fn a_lone_surrogate_costs_no_reading() {
    let c = codec(
        r#"function decodeUplink(i) {
             var unit = String.fromCharCode((i.bytes[0] << 8) | i.bytes[1]);
             var data = {temperature: 21.5, label: 'A' + unit + '\\ud800'};
             data['k' + unit] = 1;
             return {data: data, warnings: ['odd ' + unit]};
           }"#,
    );
    for unit in [[0xd8, 0x3d], [0xdc, 0x00]] {
        let out = c.decode(Some(1), &unit, at()).unwrap();
        assert_eq!(
            Json::Object(out.data),
            json!({"temperature": 21.5, "label": "A\u{fffd}\\ud800", "k\u{fffd}": 1})
        );
        assert_eq!(out.warnings, ["odd \u{fffd}"]);
    }
}

/// A payload longer than a codec is given is refused without a call and is no strike: past
/// the worker's request limit (1 MiB), it took the worker down and its retry the next one.
#[test]
fn a_payload_too_long_is_refused_without_a_call() {
    let c = codec("function decodeUplink(i) { return {data: {n: i.bytes.length}}; }");
    let out = c.decode(Some(1), &vec![0; PAYLOAD_LIMIT], at()).unwrap();
    assert_eq!(out.data["n"], PAYLOAD_LIMIT);
    let pid = c.worker().pid();
    for n in [PAYLOAD_LIMIT + 1, 2 << 20] {
        let e = err(&c, &vec![0; n]);
        assert_eq!(e, JsError::TooLong(n));
        assert!(!e.strikes());
        assert_eq!(c.worker().pid(), pid);
    }
    assert_eq!(
        JsError::TooLong(PAYLOAD_LIMIT + 1).to_string(),
        "not called: a payload of 65537 bytes, more than the 65536 a codec is given"
    );
}

/// A call that runs out of time is answered at once and its worker retires; the codec is
/// loaded into the next worker as a request of its own, and the next call decodes there.
#[test]
fn a_timeout_is_answered_first_and_the_codec_loads_again() {
    let c = codec(
        "function decodeUplink(i) {
           if (i.bytes[0] === 1) { for (;;) {} }
           return {data: {ok: true}};
         }",
    );
    assert_eq!(c.decode(Some(1), &[0], at()).unwrap().data["ok"], true);
    let pid = c.worker().pid();
    assert_eq!(err(&c, &[1]), JsError::TimedOut(100));
    assert_eq!(c.worker().pid(), None, "the worker retired");
    assert_eq!(c.decode(Some(1), &[0], at()).unwrap().data["ok"], true);
    assert_ne!(c.worker().pid(), pid);
}

/// Running out of memory is what the runtime's allocator refused, not a message: a codec
/// that throws "out of memory" itself is an ordinary error and its worker stays. A call that
/// caught running out and returned keeps its result, and its runtime is not used again.
#[test]
fn out_of_memory_is_the_allocators_refusal_not_a_message() {
    let c = codec(
        "function decodeUplink(i) {
           switch (i.bytes[0]) {
             case 1: throw 'out of memory';
             case 2: throw new InternalError('out of memory');
             case 3: try { var a = 'x'; for (;;) { a = a.repeat(2); } } catch (e) { return {data: {caught: true}}; }
             case 4: var b = 'x'; for (;;) { b = b.repeat(2); }
             default: return {data: {ok: true}};
           }
         }",
    );
    assert_eq!(c.decode(Some(1), &[0], at()).unwrap().data["ok"], true);
    let pid = c.worker().pid();
    assert_eq!(err(&c, &[1]), JsError::Threw("\"out of memory\"".into()));
    assert_eq!(
        err(&c, &[2]),
        JsError::Threw("InternalError: out of memory".into())
    );
    assert_eq!(c.worker().pid(), pid, "a thrown message retires no worker");
    // Caught by the script: its result stands, but it ran out, so the runtime is not used
    // again.
    let out = c.decode(Some(1), &[3], at()).unwrap();
    assert!(out.retired);
    assert_eq!(Json::Object(out.data), json!({"caught": true}));
    assert_eq!(c.worker().pid(), None);
    assert_eq!(err(&c, &[4]), JsError::OutOfMemory);
    let out = c.decode(Some(1), &[0], at()).unwrap();
    assert_eq!((out.data["ok"].as_bool(), out.retired), (Some(true), false));
}

/// Jobs a codec queues (`queueMicrotask`, one of QuickJS-ng's base objects) run once its
/// top level or its function returned, before the answer, under the same time limit: none
/// is left queued into the next call. They piled up unrun before, each holding what it
/// captured, until the runtime ran out of memory (here after about 1,400 calls). A job's
/// effects die with its call's context, as the rest of the call's do.
#[test]
fn queued_jobs_run_before_the_answer_and_none_is_left() {
    let c = codec(
        "var ran = 0, loaded = false, kept = 0;
         queueMicrotask(function () { loaded = true; });
         function decodeUplink(i) {
           switch (i.bytes[0]) {
             case 1: queueMicrotask(function () { throw new Error('late'); }); return {data: {}};
             case 2:
               queueMicrotask(function () { throw new Error('late'); });
               queueMicrotask(function () { for (;;) {} });
               return {data: {}};
             case 3:
               queueMicrotask(function () { queueMicrotask(function () { throw new Error('later'); }); });
               return {data: {}};
             case 4: var again = function () { queueMicrotask(again); }; again(); return {data: {}};
             case 5: again = function () { queueMicrotask(again); }; again(); throw new Error('no');
             case 6:
               queueMicrotask(function () { var a = 'x'; for (;;) { a = a.repeat(2); } });
               return {data: {}};
             default:
               var big = 'q'.repeat(10000) + ran;
               queueMicrotask(function () { ran++; kept = big.length; });
               return {data: {ran: ran, loaded: loaded}};
           }
         }",
    );
    // The top level's job ran before the function; the function's after it returned, and
    // what it changed is gone by the next call.
    for _ in 0..10_000u32 {
        let out = c.decode(Some(1), &[0], at()).unwrap();
        assert_eq!(Json::Object(out.data), json!({"ran": 0, "loaded": true}));
    }
    let pid = c.worker().pid();
    // A job that throws fails the call as the function's own throw would, and so does one
    // queued by a job.
    assert_eq!(err(&c, &[1]), JsError::Threw("Error: late".into()));
    assert_eq!(err(&c, &[3]), JsError::Threw("Error: later".into()));
    assert_eq!(c.worker().pid(), pid);
    // The jobs after one that threw still run (this one until the time limit); jobs that queue
    // jobs without end stop at the time limit, whatever the function did, and the worker
    // retires (with them); so does a job that runs out of memory.
    for (case, error) in [
        (2, JsError::TimedOut(100)),
        (4, JsError::TimedOut(100)),
        (5, JsError::TimedOut(100)),
        (6, JsError::OutOfMemory),
    ] {
        assert_eq!(err(&c, &[case]), error);
        assert_eq!(c.worker().pid(), None);
        let out = c.decode(Some(1), &[0], at()).unwrap();
        assert_eq!(Json::Object(out.data), json!({"ran": 0, "loaded": true}));
    }
}

/// No module loading, no I/O: the engine has neither.
#[test]
fn the_sandbox_has_no_io_and_no_modules() {
    let c = codec(
        "function decodeUplink(i) {
           var seen = {};
           ['require', 'process', 'std', 'os', 'fetch', 'XMLHttpRequest', 'Deno', 'scriptArgs',
            'Promise', 'WeakRef', 'FinalizationRegistry', 'Proxy', 'performance']
             .forEach(function (n) { seen[n] = typeof globalThis[n]; });
           return {data: seen};
         }",
    );
    let out = c.decode(Some(1), &[], at()).unwrap();
    assert!(
        out.data.values().all(|v| v == "undefined"),
        "{:?}",
        out.data
    );
    // What it keeps: BigInt comes with the base objects since QuickJS-ng 0.16, not on its own.
    let c = codec(
        "function decodeUplink(i) {
           return {data: {kept: [Date, RegExp, JSON, Map, Set, Uint8Array, DataView, BigInt, eval]
             .map(function (o) { return typeof o; }).join(),
             big: String(BigInt.asUintN(64, -1n))}};
         }",
    );
    let out = c.decode(Some(1), &[], at()).unwrap();
    assert_eq!(
        Json::Object(out.data),
        json!({
            "kept": "function,function,object,function,function,function,function,function,function",
            "big": "18446744073709551615"
        })
    );
    // Without Promise, an async function is an error, not a job that never runs.
    let c = codec(
        "async function later() { return 1; }
         function decodeUplink(i) { later(); return {data: {}}; }",
    );
    assert!(c.decode(Some(1), &[], at()).is_err());
    assert!(c.decode(Some(1), &[], at()).is_err());
    let e = load("import * as os from 'os'; function decodeUplink() {}");
    assert!(
        matches!(e, Err(JsError::Threw(m)) if m.starts_with("SyntaxError")),
        "module syntax"
    );
}

#[test]
fn loading_fails_with_a_reason() {
    assert_eq!(load("var x = 1;").err(), Some(JsError::NoEntryPoint));
    assert!(matches!(
        load("function decodeUplink( {").err(),
        Some(JsError::Threw(m)) if m.starts_with("SyntaxError")
    ));
    assert_eq!(load("for (;;) {}").err(), Some(JsError::TimedOut(2000)));
    assert!(dir::path(Path::new("/d"), "../etc/passwd", "js").is_err());
    assert!(dir::path(Path::new("/d"), ".hidden", "js").is_err());
    let examples = codec_files::examples();
    assert_eq!(
        dir::names(examples.path()).unwrap(),
        ["example-counter", "example-door", "example-th"]
    );
    let door = dir::load(examples.path(), "example-door", &worker()).unwrap();
    assert_eq!(door.table.unwrap().fields["door_open"].field, "open");
    assert_eq!(door.class, "js/example-door");
    assert!(dir::load(examples.path(), "example-th", &worker())
        .unwrap()
        .table
        .is_none());
}

/// A codec whose top level alone cannot fit a call (every call runs it again, within the
/// call's 100 ms) is refused at load, naming the file, the time it took and what it may take:
/// it loaded (the load has 2 s), then timed out on every call, a strike each and every uplink
/// packed.
#[test]
fn a_codec_whose_top_level_cannot_fit_a_call_is_refused_at_load() {
    // About 0.2 s of CPU time here, well past the 50 ms and well within the load's 2 s.
    const SLOW: &str = "var n = 0; for (var i = 0; i < 3e6; i++) { n += i; }
        function decodeUplink(i) { return {data: {n: n}}; }";
    let tmp = codec_files::tempdir();
    let file = tmp.path().join("slow.js");
    codec_files::write(&file, SLOW);
    let e = dir::load(tmp.path(), "slow", &worker()).err().unwrap();
    let took = e
        .strip_prefix(&format!("{}: its top level took ", file.display()))
        .and_then(|rest| {
            rest.strip_suffix(
                " ms of CPU time: every call runs it again, and it may take at most 50 ms of a \
             call's 100 ms",
            )
        })
        .unwrap_or_else(|| panic!("{e}"));
    assert!(took.parse::<f64>().unwrap() > 50.0, "{e}");
}

/// Every error of the codec directory names the file; a codec, mapping table or directory
/// that its group or every user may write is refused, saying so.
#[test]
fn codec_files_errors_name_the_file_and_writable_ones_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let chmod = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    chmod(d, 0o755).unwrap();
    let js = d.join("c.js");
    let e = dir::load(d, "c", &worker()).err().unwrap();
    assert!(e.starts_with(&format!("{}: ", js.display())), "{e}");
    codec_files::write(&js, vec![b' '; dir::FILE_CAP as usize + 1]);
    let e = dir::load(d, "c", &worker()).err().unwrap();
    assert!(
        e.starts_with(&format!("{}: larger than", js.display())),
        "{e}"
    );
    codec_files::write(&js, "function Decode(p, b) { return {n: b.length}; }");
    let toml = d.join("c.toml");
    codec_files::write(&toml, "[fields\n");
    let e = dir::load(d, "c", &worker()).err().unwrap();
    assert!(e.starts_with(&format!("{}: ", toml.display())), "{e}");
    let e = dir::load_table(d, "c").unwrap_err();
    assert!(e.starts_with(&format!("{}: ", toml.display())), "{e}");
    std::fs::remove_file(&toml).unwrap();
    chmod(&js, 0o664).unwrap();
    assert_eq!(
        dir::load(d, "c", &worker()).err().unwrap(),
        format!(
            "{} holds a codec and is writable by its group (mode 0664): refused; chmod go-w",
            js.display()
        )
    );
    chmod(&js, 0o644).unwrap();
    chmod(d, 0o777).unwrap();
    assert_eq!(
        dir::load(d, "c", &worker()).err().unwrap(),
        format!(
            "{} holds codecs and is writable by every user (mode 0777): refused; chmod go-w",
            d.display()
        )
    );
    assert!(dir::load_table(d, "c").unwrap_err().contains("mode 0777"));
    chmod(d, 0o755).unwrap();
    codec_files::write(&toml, "[fields]\n");
    chmod(&toml, 0o646).unwrap();
    assert!(dir::load(d, "c", &worker())
        .err()
        .unwrap()
        .contains("every user (mode 0646)"));
    chmod(&toml, 0o644).unwrap();
    assert_eq!(dir::load(d, "c", &worker()).unwrap().class, "js/c");
}

/// A codec or table in the codec directory that is a symbolic link is refused (whoever can
/// change where it points picks the code), and so is a file or directory owned by another
/// user than root or the agent's (giving one away needs root, as CI runs).
#[test]
fn symbolic_links_and_foreign_owners_are_refused() {
    let tmp = codec_files::tempdir();
    let d = tmp.path();
    let outside = codec_files::tempdir();
    let target = outside.path().join("c.js");
    codec_files::write(&target, "function Decode(p, b) { return {n: b.length}; }");
    let js = d.join("c.js");
    std::os::unix::fs::symlink(&target, &js).unwrap();
    assert_eq!(
        dir::load(d, "c", &worker()).err().unwrap(),
        format!(
            "{} holds a codec and is a symbolic link: refused; copy the file in instead",
            js.display()
        )
    );
    std::fs::remove_file(&js).unwrap();
    std::fs::copy(&target, &js).unwrap();
    let toml = d.join("c.toml");
    codec_files::write(outside.path().join("c.toml"), "[fields]\n");
    std::os::unix::fs::symlink(outside.path().join("c.toml"), &toml).unwrap();
    let e = dir::load(d, "c", &worker()).err().unwrap();
    assert!(
        e.contains("c.toml holds a mapping table and is a symbolic link"),
        "{e}"
    );
    assert!(dir::load_table(d, "c").is_err());
    std::fs::remove_file(&toml).unwrap();
    assert_eq!(dir::load(d, "c", &worker()).unwrap().class, "js/c");

    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the owner checks are left to CI");
        return;
    }
    let chown = |p: &Path, uid: u32| std::os::unix::fs::chown(p, Some(uid), None).unwrap();
    chown(&js, 65534);
    assert_eq!(
        dir::load(d, "c", &worker()).err().unwrap(),
        format!(
            "{} holds a codec and is owned by uid 65534, neither root nor the agent's user \
             (uid 0): refused; chown root",
            js.display()
        )
    );
    chown(&js, 0);
    chown(d, 65534);
    let e = dir::load(d, "c", &worker()).err().unwrap();
    assert!(
        e.starts_with(&format!(
            "{} holds codecs and is owned by uid 65534",
            d.display()
        )),
        "{e}"
    );
    chown(d, 0);
    assert_eq!(dir::load(d, "c", &worker()).unwrap().class, "js/c");
}

/// A codec's mapping table that is a symbolic link pointing nowhere fails the codec's load,
/// naming it. It was taken for no table at all: the codec loaded without it, its fields all
/// went under `origin` and its recType was no longer the table's, with no `codec_file`
/// problem, no log line and nothing from `hubgate check`.
#[test]
fn a_dangling_symbolic_link_for_a_codecs_table_is_refused() {
    let tmp = codec_files::tempdir();
    let d = tmp.path();
    codec_files::write(
        d.join("c.js"),
        "function decodeUplink(i) { return {data: {t: 1}}; }",
    );
    let toml = d.join("c.toml");
    std::os::unix::fs::symlink(d.join("gone/c.toml"), &toml).unwrap();
    let loaded = dir::load(d, "c", &worker()).map(|s| s.table.is_some());
    assert_eq!(
        loaded,
        Err(format!(
            "{}: a symbolic link to nothing it can open (No such file or directory (os error 2))",
            toml.display()
        )),
        "a codec whose table is a dangling link (Ok: whether it has a table)"
    );
}

/// A `normalizeUplink` that throws or returns what JSON cannot hold costs its normalized
/// values and a warning, not the decoded data; the codec's own warnings come back too.
#[test]
fn a_failing_normalize_uplink_keeps_the_decoded_data() {
    let c = codec(
        "function decodeUplink(i) { return {data: {t: i.bytes[0]}, warnings: ['low battery']}; }
         function normalizeUplink(i) {
           if (i.data.t === 1) { throw new TypeError('no unit'); }
           if (i.data.t === 2) { var o = {}; o.o = o; return {data: o}; }
           if (i.data.t === 3) { for (;;) {} }
           if (i.data.t === 4) { return; }
           if (i.data.t === 5) { return function () {}; }
           if (i.data.t === 6) { return Symbol('n'); }
           if (i.data.t === 7) { return {toJSON: function () {}}; }
           if (i.data.t === 8) {
             var asked = 0;
             return {get data() { if (asked++) { throw new Error('twice'); } return {battery: 3}; }};
           }
           return {data: {air: {temperature: i.data.t}}};
         }",
    );
    let out = c.decode(Some(1), &[1], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({"t": 1}));
    assert!(out.normalized.is_empty());
    assert_eq!(
        out.warnings,
        ["low battery", "normalizeUplink: threw TypeError: no unit"]
    );
    let out = c.decode(Some(1), &[2], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({"t": 2}));
    assert!(out.warnings[1].starts_with("normalizeUplink: threw TypeError"));
    // The time limit still ends the call.
    assert_eq!(err(&c, &[3]), JsError::TimedOut(100));
    // Whatever JSON.stringify drops: undefined, a function, a Symbol, a toJSON giving nothing.
    for (t, what) in [
        (4, "undefined"),
        (5, "function"),
        (6, "symbol"),
        (7, "object"),
    ] {
        let out = c.decode(Some(1), &[t], at()).unwrap();
        assert_eq!(Json::Object(out.data), json!({ "t": t }));
        assert!(out.normalized.is_empty());
        assert_eq!(
            out.warnings,
            [
                "low battery".to_string(),
                format!("normalizeUplink: returned nothing JSON can hold ({what}), not {{data}}")
            ],
            "{t}"
        );
    }
    // What was checked is what is kept: a getter read a second time cannot undo the check.
    let out = c.decode(Some(1), &[8], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({"t": 8}));
    assert_eq!(
        Json::Object(out.normalized[0].clone()),
        json!({"battery": 3})
    );
    let out = c.decode(Some(1), &[20], at()).unwrap();
    assert_eq!(out.normalized[0]["air"]["temperature"], 20);
}

/// A `normalizeUplink` that throws an InternalError which is neither the time limit nor
/// running out of memory (a string past QuickJS's length limit, an `InternalError` of its
/// own) costs its normalized values and a warning, as any other throw does, not the decoded
/// data.
#[test]
fn a_normalize_uplink_throwing_an_internal_error_keeps_the_decoded_data() {
    let c = codec(
        "function decodeUplink(i) { return {data: {t: i.bytes[0]}}; }
         function normalizeUplink(i) {
           if (i.data.t === 1) { var s = 'x'; for (;;) { s += s; } }
           throw new InternalError('no unit');
         }",
    );
    for (t, thrown) in [
        (1, "InternalError: string too long"),
        (2, "InternalError: no unit"),
    ] {
        let out = c.decode(Some(1), &[t], at());
        let out = out.unwrap_or_else(|e| panic!("{t}: the decoded data was lost: {e}"));
        assert_eq!(Json::Object(out.data), json!({ "t": t }));
        assert!(out.normalized.is_empty());
        assert_eq!(out.warnings, [format!("normalizeUplink: threw {thrown}")]);
    }
}

/// A `normalizeUplink` that runs out of memory keeps the decoded data (the glue catches
/// it), and its worker ends as for any call that ran out and returned; one that runs past the
/// time limit still ends the call (its interrupt cannot be caught), and a case that caught
/// running out and returned an error is running out of memory, as in the engine.
#[test]
fn a_normalize_uplink_out_of_memory_or_time_ends_its_worker() {
    let c = codec(
        "function decodeUplink(i) {
           if (i.bytes[0] === 3) {
             try { var a = 'x'; for (;;) { a = a.repeat(2); } } catch (e) { return {errors: ['' + e]}; }
           }
           return {data: {t: i.bytes[0]}};
         }
         function normalizeUplink(i) {
           if (i.data.t === 1) { var b = 'x'; for (;;) { b = b.repeat(2); } }
           for (;;) {}
         }",
    );
    let out = c.decode(Some(1), &[1], at()).unwrap();
    assert_eq!(Json::Object(out.data), json!({ "t": 1 }));
    assert!(out.normalized.is_empty());
    assert!(out.retired, "its runtime ran out: not used again");
    assert_eq!(c.worker().pid(), None);
    assert_eq!(err(&c, &[2]), JsError::TimedOut(100));
    assert_eq!(err(&c, &[3]), JsError::OutOfMemory);
}

/// `normalizeUplink` works on a copy: scaling its input in place leaves the decoded data as
/// `decodeUplink` returned it.
#[test]
fn normalize_uplink_cannot_change_the_decoded_data() {
    let c = codec(
        "function decodeUplink(i) { return {data: {battery: 3600, t: {c: 21}}}; }
         function normalizeUplink(i) {
           i.data.battery /= 1000;
           i.data.t.c = 0;
           return {data: {battery: i.data.battery}};
         }",
    );
    let out = c.decode(Some(1), &[1], at()).unwrap();
    assert_eq!(
        Json::Object(out.data),
        json!({"battery": 3600, "t": {"c": 21}})
    );
    assert_eq!(out.normalized[0]["battery"], 3.6);
}

/// The worker holds its socket, /dev/null and stderr and nothing else of the agent's: no
/// descriptor a library left open across exec, no environment variable but its own.
#[test]
fn the_worker_inherits_no_descriptors_and_no_environment() {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: dup returns a new descriptor (without close-on-exec), owned from here on.
    let left_open = unsafe { OwnedFd::from_raw_fd(libc::dup(2)) };
    assert!(std::env::var_os("PATH").is_some());
    let w = worker();
    let _c = w
        .load("test.js", "function decodeUplink(i) { return {data: {}}; }")
        .unwrap();
    let pid = w.pid().unwrap();
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    fds.sort();
    assert_eq!(fds, [0, 1, 2]);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v.split(|&b| b == b'=').next().unwrap()).into())
        .collect();
    assert!(
        names.contains(&worker::harness::ENV.to_string()),
        "{names:?}"
    );
    for name in &names {
        assert!(
            [worker::harness::ENV, "RUST_LOG", "TZ"].contains(&name.as_str()),
            "{names:?}"
        );
    }
    drop(left_open);
}

/// A stop signal for the whole group leaves the worker be; a worker that died between calls
/// is replaced before the next call, which neither fails nor strikes its codec.
#[test]
fn the_worker_ignores_stop_signals_and_a_dead_one_costs_no_call() {
    let c = codec("function decodeUplink(i) { return {data: {b: i.bytes[0]}}; }");
    let b = |n: u8| c.decode(Some(1), &[n], at()).unwrap().data["b"].clone();
    assert_eq!(b(1), 1);
    let pid = c.worker().pid().unwrap();
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: kill takes plain integers; the worker is ours and not reaped.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
        // A signal that ended it would have been handled before it read the request.
        assert_eq!(b(2), 2);
        assert_eq!(c.worker().pid(), Some(pid));
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    // Until it has ended, left unreaped for the supervisor.
    // SAFETY: waitid writes one siginfo_t, which `info` is.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let waited =
        unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
    assert_eq!(waited, 0);
    assert_eq!(b(3), 3);
    assert_ne!(c.worker().pid(), Some(pid));
}

/// A codec kept across a reload (its new file fails to load) moves into the new worker: the
/// worker it was loaded into ends with the reload instead of living on for that one codec.
#[test]
fn a_codec_kept_across_a_reload_leaves_its_old_worker() {
    let d = codec_files::tempdir();
    let file = d.path().join("c.js");
    codec_files::write(&file, "function decodeUplink(i) { return {data: {v: 1}}; }");
    let named = dir::Named {
        dir: d.path().to_path_buf(),
        codecs: vec!["c".into()],
        tables: Vec::new(),
        hubs: None,
    };
    let mut set = named.load(Launcher::default());
    let codec = |set: &dir::Set| {
        set.codec("c")
            .unwrap()
            .as_ref()
            .unwrap()
            .codec
            .worker()
            .clone()
    };
    let old = codec(&set).pid().unwrap();
    codec_files::write(&file, "function decodeUplink(i) {");
    drop(set.update(named.load(Launcher::default())));
    // SAFETY: kill with signal 0 only checks that the process exists.
    assert_ne!(
        unsafe { libc::kill(old as i32, 0) },
        0,
        "old worker still runs"
    );
    let kept = &set.codec("c").unwrap().as_ref().unwrap().codec;
    assert_eq!(kept.decode(Some(1), &[], at()).unwrap().data["v"], 1);
    assert_ne!(kept.worker().pid(), Some(old));
}

/// The worker is the process the OOM killer ends first, and its codecs see the local time
/// zone: it reads the zone before the limit on open files would stop it.
#[test]
fn the_worker_goes_first_under_oom_and_keeps_the_local_time_zone() {
    let w = Worker::new(Launcher::default().with_env("TZ", "Europe/Berlin"));
    let c = w
        .load(
            "tz.js",
            "function decodeUplink(i) { return {data: {offset: i.recvTime.getTimezoneOffset()}}; }",
        )
        .unwrap();
    // 2023-11-14: Central European Time, UTC+1.
    assert_eq!(c.decode(Some(1), &[], at()).unwrap().data["offset"], -60);
    let pid = w.pid().unwrap();
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "1000");
}
