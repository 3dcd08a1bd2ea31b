//! The serial source end to end: real pseudo-terminal pairs (socat), the hubgate binary as a
//! child process reading one end, a test writing framed CBOR envelopes into the other end in
//! awkward pieces, with garbage, over-long frames and broken CRCs; records read back from the
//! stdout sink, problem counters from the metrics endpoint. The outage is real too: socat is
//! stopped (the device disappears) and started again on the same paths.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hubgate::framing::{Deframer, Framing};
use serde_cbor::Value;
use support::agent::{metric_value, Agent};
use support::frames::{line, with_crc};
use support::stuffing::{cobs, slip};

const WAIT: Duration = Duration::from_secs(30);
const TH: &str = "58a0cb0000101234";
const TH_BYTES: [u8; 8] = [0x58, 0xa0, 0xcb, 0x00, 0x00, 0x10, 0x12, 0x34];
/// `max_frame` of the tests' sources: the largest TBHH100 envelope here is about 100 bytes.
const MAX_FRAME: usize = 128;

// ---------------------------------------------------------------------------
// a pty pair

/// `socat pty,raw,echo=0,link=DIR/ttyA pty,raw,echo=0,link=DIR/ttyB`: what is written to one
/// link comes out of the other. Killed on drop.
struct PtyPair {
    child: Option<Child>,
    a: PathBuf,
    b: PathBuf,
    log: PathBuf,
}

impl PtyPair {
    fn start(dir: &Path) -> PtyPair {
        let (a, b) = (dir.join("ttyA"), dir.join("ttyB"));
        let log = dir.join("socat.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("run socat (apt-get install socat)");
        let mut p = PtyPair {
            child: Some(child),
            a,
            b,
            log,
        };
        // The links appear once socat has both ptys open.
        let deadline = Instant::now() + WAIT;
        while !(p.a.exists() && p.b.exists()) {
            if let Some(s) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("socat exited ({s}):\n{}", p.logs());
            }
            assert!(Instant::now() < deadline, "no pty links:\n{}", p.logs());
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The device disappears: SIGTERM (socat removes its links), wait for the exit.
    fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap();
        assert!(
            !self.a.exists() && !self.b.exists(),
            "links left behind:\n{}",
            self.logs()
        );
    }

    /// The writing end, as a test's serial peer would open it.
    fn writer(&self) -> File {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&self.a)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.a.display()))
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Write `stream` in pieces of awkward sizes, pausing between them so the reader sees
/// frames cut at many places.
fn write_awkwardly(w: &mut File, stream: &[u8]) {
    const SIZES: [usize; 8] = [1, 7, 2, 13, 3, 64, 5, 1];
    let mut rest = stream;
    for &n in SIZES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        w.write_all(piece).unwrap();
        w.flush().unwrap();
        rest = tail;
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// frames

/// TBHH100 payload with temperature `t` °C and humidity `h` %.
fn tbhh100(t: i32, h: u8) -> Vec<u8> {
    vec![0x08, 0x8c, (t + 32) as u8, h, 0xff, 0xff, 0xff, 0xff]
}

/// One reading: (fcnt, temperature, humidity).
type Reading = (u32, i32, u8);

/// A CBOR envelope for a reading; the forms vary with `fcnt` (DevEUI as bytes or text,
/// time as Unix seconds, RFC 3339 or absent).
fn envelope((fcnt, t, h): Reading) -> Vec<u8> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: Value| m.insert(Value::Text(k.into()), v);
    put(
        "dev_eui",
        if fcnt % 2 == 0 {
            Value::Bytes(TH_BYTES.to_vec())
        } else {
            Value::Text(TH.into())
        },
    );
    put("fport", Value::Integer(103));
    put("fcnt", Value::Integer(fcnt.into()));
    put("payload", Value::Bytes(tbhh100(t, h)));
    put("rssi", Value::Integer(-60 - i128::from(fcnt)));
    put("snr", Value::Float(7.25));
    match fcnt % 3 {
        0 => put("time", Value::Integer(1_700_000_000 + i128::from(fcnt))),
        1 => put("time", Value::Text(format!("2026-11-26T10:00:{fcnt:02}Z"))),
        _ => None,
    };
    serde_cbor::to_vec(&Value::Map(m)).unwrap()
}

// ---------------------------------------------------------------------------
// the agent

fn config(dir: &Path, device: &Path, framing: &str) -> String {
    let prefix = if framing == "lines-hex" {
        "prefix = \"radio_rx\"\n"
    } else {
        ""
    };
    format!(
        r#"
gateway_id = "test"
[buffer]
path = "{buffer}"
[[source]]
type = "serial"
device = "{device}"
baud = 115200
framing = "{framing}"
{prefix}max_frame = {MAX_FRAME}
reopen_max = "200ms"
[[device]]
dev_eui = "{TH}"
codec = "browan-tbhh100"
tags = ["Lab"]
[sink]
type = "stdout"
"#,
        buffer = dir.join("buffer").display(),
        device = device.display(),
    )
}

/// Start hubgate on `pty`'s ttyB and wait until it has the device open.
fn start_agent(dir: &Path, pty: &PtyPair, framing: &str) -> Agent {
    let agent = Agent::start_with_stdout(dir, &config(dir, &pty.b, framing));
    agent.wait_log("opened at 115200 baud", 1, WAIT);
    agent
}

/// The (fcnt, temperature, humidity) of each record on stdout, checking the fields the
/// serial envelope fed.
fn readings(agent: &Agent) -> Vec<Reading> {
    let mut out = Vec::new();
    for l in agent.stdout_lines() {
        let v: serde_json::Value =
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        let obj = &v["obj"];
        assert_eq!(obj["recType"], "io.microshare.environment.unpacked", "{l}");
        assert_eq!(obj["tags"], serde_json::json!(["Lab"]), "{l}");
        let data = &obj["data"];
        let iot = &data["meta"]["iot"];
        assert_eq!(iot["device_id"], "58-A0-CB-00-00-10-12-34", "{l}");
        assert_eq!(iot["fport"], 103, "{l}");
        assert_eq!(data["unpacker"]["class"], "browan-tbhh100", "{l}");
        let fcnt = iot["fcnt_up"].as_u64().expect("fcnt_up") as u32;
        assert_eq!(iot["rssi"], -60 - i64::from(fcnt), "{l}");
        assert_eq!(iot["snr"], 7.25, "{l}");
        match fcnt % 3 {
            0 => assert_eq!(
                obj["tstamp"],
                (1_700_000_000 + u64::from(fcnt)) * 1000,
                "{l}"
            ),
            1 => assert_eq!(
                data["time"],
                format!("2026-11-26T10:00:{fcnt:02}.000Z"),
                "{l}"
            ),
            _ => {}
        }
        let t = data["temperature"][0]["value"]
            .as_f64()
            .expect("temperature");
        let h = data["humidity"][0]["value"].as_f64().expect("humidity");
        out.push((fcnt, t as i32, h as u8));
    }
    out.sort();
    out
}

fn problem(agent: &Agent, kind: &str) -> u64 {
    agent.metric(&format!("hubgate_problems_total{{kind=\"{kind}\"}}"))
}

/// Six good readings, and between them: garbage, an over-long frame, a frame with a broken
/// check, a frame that is no envelope. `encode` frames one content.
fn troubled_stream(
    encode: impl Fn(&[u8]) -> Vec<u8>,
    garbage_before: &[u8],
    garbage_between: &[u8],
    broken: impl Fn(&[u8]) -> Vec<u8>,
) -> (Vec<u8>, Vec<Reading>) {
    let good: Vec<Reading> = vec![
        (1, 21, 40),
        (2, -5, 99),
        (3, 30, 0),
        (4, 0, 55),
        (5, 95, 12),
        (6, 22, 41),
    ];
    let mut s = garbage_before.to_vec();
    s.extend(encode(&envelope(good[0])));
    s.extend(encode(&envelope(good[1])));
    s.extend_from_slice(garbage_between);
    // Over-long: a valid envelope with a big payload.
    let mut big = BTreeMap::new();
    big.insert(Value::Text("dev_eui".into()), Value::Text(TH.into()));
    big.insert(Value::Text("payload".into()), Value::Bytes(vec![0x5a; 200]));
    s.extend(encode(&serde_cbor::to_vec(&Value::Map(big)).unwrap()));
    s.extend(encode(&envelope(good[2])));
    s.extend(broken(&envelope((99, 1, 1))));
    s.extend(encode(&envelope(good[3])));
    s.extend(encode(&[0xff, 0x00, 0x13]));
    s.extend(encode(&envelope(good[4])));
    s.extend(encode(&envelope(good[5])));
    (s, good)
}

/// Write the stream, wait for every good reading, and compare records and counters.
fn run_framing(framing: &str, stream: &[u8], good: &[Reading], problems: &[(&str, u64)]) {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let mut agent = start_agent(dir.path(), &pty, framing);
    let mut w = pty.writer();
    write_awkwardly(&mut w, stream);
    // The last good reading comes after every bad frame: once all are delivered, every
    // problem has been counted.
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= good.len() as u64);
    assert_eq!(readings(&agent), good, "log:\n{}", agent.logs());
    for &(kind, n) in problems {
        assert_eq!(
            problem(&agent, kind),
            n,
            "{kind}\n{}",
            agent.scrape().unwrap_or_default()
        );
    }
    assert_eq!(agent.metric("hubgate_received_total"), good.len() as u64);
    let status = agent.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status}:\n{}", agent.logs());
}

#[test]
fn slip_frames_through_a_pty() {
    let (stream, good) = troubled_stream(
        |c| slip(&with_crc(c)),
        b"line noise\x01",
        &[0x55, 0xAA, 0x13],
        |c| {
            let mut f = with_crc(c);
            let n = f.len();
            f[n - 1] ^= 0x01;
            slip(&f)
        },
    );
    run_framing(
        "slip",
        &stream,
        &good,
        &[
            // the noise before the first END, the garbage between, the broken frame
            ("serial_crc", 3),
            ("serial_overlong", 1),
            ("serial_bad_cbor", 1),
            ("serial_malformed", 0),
        ],
    );
}

#[test]
fn cobs_frames_through_a_pty() {
    let (stream, good) = troubled_stream(
        |c| cobs(&with_crc(c)),
        // a block cut short by the delimiter
        &[0x07, 0x01, 0x02, 0x00],
        // decodes to three zero bytes: a CRC mismatch
        &[0x01, 0x01, 0x01, 0x01, 0x00],
        |c| {
            let mut f = with_crc(c);
            f[3] ^= 0x20;
            cobs(&f)
        },
    );
    run_framing(
        "cobs",
        &stream,
        &good,
        &[
            ("serial_malformed", 1),
            ("serial_crc", 2),
            ("serial_overlong", 1),
            ("serial_bad_cbor", 1),
        ],
    );
}

#[test]
fn hex_lines_through_a_pty() {
    let (stream, good) = troubled_stream(
        line,
        b"ok\r\n",
        b"radio_err\r\n\x00\x01junk\n\r\n",
        // no CRC here: a line whose hex is broken instead
        |c| {
            let mut l = line(c);
            l[14] = b'G';
            l
        },
    );
    run_framing(
        "lines-hex",
        &stream,
        &good,
        &[
            ("serial_other_line", 3),
            ("serial_bad_hex", 1),
            ("serial_overlong", 1),
            ("serial_bad_cbor", 1),
        ],
    );
}

/// A device that sends on and on without a delimiter (a wrong baud rate, a module stuck
/// printing) costs one counted problem, however long it goes on, and the frame after the
/// next delimiter is delivered: nothing stalls. 256 KiB is some 2,000 times the longest
/// frame and 800 times the longest line: the deframer discards from the first byte past them
/// to the next delimiter, counting once, and 256 reads of the port, past any 16-bit count,
/// show that nothing along the way counts again.
#[test]
fn endless_bytes_without_a_delimiter_cost_one_problem() {
    // Bytes of every value but the framing's delimiters (SLIP's END and ESC, COBS's 0x00,
    // line ends).
    let junk: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .map(|b| match b {
            0x00 | 0xC0 | 0xDB | b'\n' | b'\r' => b'A',
            b => b,
        })
        .collect();
    let reading = (1, 20, 50);
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "slip",
            slip(&with_crc(&envelope(reading))),
            "serial_overlong",
        ),
        (
            "cobs",
            [&[0][..], &cobs(&with_crc(&envelope(reading)))].concat(),
            "serial_overlong",
        ),
        (
            "lines-hex",
            [&b"\n"[..], &line(&envelope(reading))].concat(),
            "serial_other_line",
        ),
    ];
    for (framing, good, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let pty = PtyPair::start(dir.path());
        let mut agent = start_agent(dir.path(), &pty, framing);
        let writer = write_in_the_background(pty.writer(), [&junk[..], &good].concat());
        agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 1);
        writer.join().unwrap().unwrap();
        assert_eq!(readings(&agent), [reading], "{framing}");
        let scrape = agent.wait_scrape(WAIT, "the problem counters");
        let counted: Vec<(&str, u64)> = SERIAL_PROBLEMS
            .iter()
            .map(|&k| {
                (
                    k,
                    metric_value(&scrape, &format!("hubgate_problems_total{{kind=\"{k}\"}}")),
                )
            })
            .collect();
        let want: Vec<(&str, u64)> = SERIAL_PROBLEMS
            .iter()
            .map(|&k| (k, u64::from(k == kind)))
            .collect();
        assert_eq!(counted, want, "{framing}");
        let status = agent.terminate(Duration::from_secs(15));
        assert!(status.success(), "{status}:\n{}", agent.logs());
    }
}

#[test]
fn device_that_disappears_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::start(dir.path());
    let agent = start_agent(dir.path(), &pty, "slip");
    let frames = |r: &[Reading]| -> Vec<u8> {
        r.iter()
            .flat_map(|&x| slip(&with_crc(&envelope(x))))
            .collect()
    };
    let mut w = pty.writer();
    write_awkwardly(&mut w, &frames(&[(1, 20, 50), (2, 21, 51)]));
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 2);

    // Unplug: the device and its path go away. Stay away for several failed reopen attempts
    // (reopen_max is 200 ms; they are logged at debug level, which the agent's log keeps).
    drop(w);
    pty.stop();
    agent.wait_log("device gone", 1, WAIT);
    agent.wait_log("still cannot open", 3, WAIT);

    // Plug back in, on the same path (a new pty underneath).
    let pty = PtyPair::start(dir.path());
    agent.wait_log("opened again after", 1, WAIT);
    let mut w = pty.writer();
    write_awkwardly(&mut w, &frames(&[(3, 22, 52), (4, 23, 53)]));
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 4);
    assert_eq!(
        readings(&agent),
        [(1, 20, 50), (2, 21, 51), (3, 22, 52), (4, 23, 53)]
    );

    // One outage, one warning: the failed attempts in between are not logged at warn.
    let log = agent.full_log();
    assert_eq!(log.matches("device gone").count(), 1, "{log}");
    let warned = |l: &&str| l.contains(" WARN ") || l.contains(" ERROR ");
    let loud_failures = log
        .lines()
        .filter(warned)
        .filter(|l| l.contains("cannot open"))
        .count();
    assert_eq!(loud_failures, 0, "{log}");
    assert_eq!(log.matches("opened again after").count(), 1, "{log}");
    assert_eq!(problem(&agent, "serial_crc"), 0);
}

/// A device back on its path that the agent's user may not open (plugged into another port
/// and given other permissions, or replaced by a bridge started by another user) is not
/// just away: the new reason is said once at warn, where its absence, and each retry after
/// the warning, are debug lines. Once the device is given to the agent's user, it is opened
/// and read again.
#[test]
fn a_device_back_that_cannot_be_opened_is_told_at_warn_once() {
    let dir = tempfile::tempdir().unwrap();
    let user = the_units_user(dir.path());
    let mut pty = PtyPair::start(dir.path());
    set_device_mode(&pty.b, 0o666);
    let config = config(dir.path(), &pty.b, "slip");
    let agent = Agent::start_with_stdout_as(dir.path(), &config, user);
    agent.wait_log("opened at 115200 baud", 1, WAIT);
    let mut w = pty.writer();
    w.write_all(&slip(&with_crc(&envelope((1, 20, 50)))))
        .unwrap();
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 1);

    // Unplugged: the path is missing for several retries.
    drop(w);
    let tty_b = pty.b.clone();
    pty.stop();
    agent.wait_log("device gone", 1, WAIT);
    agent.wait_log("still cannot open: No such file or directory", 3, WAIT);

    // Back with mode 0000: only a process with CAP_DAC_OVERRIDE opens it, which the agent's
    // user has not. Made so beside the path and moved onto it, so the agent never sees the
    // device with the mode it was created with.
    let beside = dir.path().join("beside");
    std::fs::create_dir(&beside).unwrap();
    let pty = PtyPair::start(&beside);
    set_device_mode(&pty.b, 0o000);
    std::fs::rename(&pty.b, &tty_b).unwrap();
    agent.wait_log("still cannot open: Permission denied", 3, WAIT);

    // Given to the agent's user: opened and read again.
    set_device_mode(&tty_b, 0o666);
    agent.wait_log("opened again after", 1, WAIT);
    let mut w = pty.writer();
    w.write_all(&slip(&with_crc(&envelope((2, 21, 51)))))
        .unwrap();
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 2);
    assert_eq!(readings(&agent), [(1, 20, 50), (2, 21, 51)]);

    // One warning for the device that could not be opened, none while it was missing.
    let log = agent.full_log();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| l.contains("cannot open"))
        .collect();
    assert_eq!(loud.len(), 1, "{log}");
    assert!(
        loud[0].contains("still cannot open, now: Permission denied"),
        "{log}"
    );
    assert_eq!(log.matches("device gone").count(), 1, "{log}");
}

#[test]
fn device_missing_at_start_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let tty_b = dir.path().join("ttyB");
    let agent = Agent::start_with_stdout(dir.path(), &config(dir.path(), &tty_b, "cobs"));
    agent.wait_log("cannot open", 1, WAIT);
    // Away from the start: the gauge is there, at 0, before the device ever opened.
    assert_eq!(serial_state(&agent, &tty_b), (0, NOT_OPEN.into()));
    let pty = PtyPair::start(dir.path());
    agent.wait_log("opened ", 1, WAIT);
    // Its first open: the line that confirms the settings, not one for a device back.
    let log = agent.full_log();
    assert_eq!(log.matches("opened at 115200 baud").count(), 1, "{log}");
    assert_eq!(log.matches("opened again").count(), 0, "{log}");
    let mut w = pty.writer();
    write_awkwardly(&mut w, &cobs(&with_crc(&envelope((7, 19, 45)))));
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 1);
    assert_eq!(readings(&agent), [(7, 19, 45)]);
    assert_eq!(serial_state(&agent, &tty_b), (1, OPEN.into()));
    // The warning, once; the retries after it are debug lines ("still cannot open").
    assert_eq!(agent.full_log().matches(": cannot open (").count(), 1);
}

/// A wired sensor without `fcnt` and `time` sends the same reading several times, and the frames
/// reach hubgate in one read (a USB adapter's latency timer batches bytes): each is a reading
/// of its own, not a copy, since a serial line never delivers a frame twice. So many of them
/// at once (a backlog a USB device sends, held to no baud rate) that dozens share each
/// millisecond: still each delivered, with an id of its own, in the order sent, at the
/// clock's times. (The source's unit test
/// `a_burst_of_equal_readings_gets_distinct_ids_at_the_clocks_times` shows the same
/// without a pty or the pipeline, however slow the machine.)
#[test]
fn equal_readings_in_one_read_are_each_delivered() {
    const N: u64 = 3000;
    let without_fcnt = |payload: Vec<u8>| {
        let mut m = BTreeMap::new();
        m.insert(Value::Text("dev_eui".into()), Value::Text(TH.into()));
        m.insert(Value::Text("fport".into()), Value::Integer(103));
        m.insert(Value::Text("payload".into()), Value::Bytes(payload));
        slip(&with_crc(&serde_cbor::to_vec(&Value::Map(m)).unwrap()))
    };
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let agent = start_agent(dir.path(), &pty, "slip");
    let mut burst = without_fcnt(tbhh100(21, 40)).repeat(N as usize);
    // A different reading last: once it is in, every frame before it was taken.
    burst.extend(without_fcnt(tbhh100(22, 41)));
    let writer = write_in_the_background(pty.writer(), burst);
    // Every frame delivered or taken for a copy, both counters from one scrape.
    let deadline = Instant::now() + WAIT;
    let counted = loop {
        let counted = agent.scrape().map(|text| {
            (
                metric_value(&text, "hubgate_delivered_total"),
                metric_value(&text, "hubgate_duplicates_total"),
            )
        });
        match counted {
            Some((delivered, copies)) if delivered + copies > N => break (delivered, copies),
            _ => assert!(
                Instant::now() < deadline,
                "(delivered, duplicates) = {counted:?} after {WAIT:?}:\n{}",
                agent.logs()
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let clock_after = ms_now();
    writer.join().unwrap().unwrap();
    assert_eq!(counted, (N + 1, 0), "{}", agent.full_log());
    let records: Vec<serde_json::Value> = agent
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(records.len() as u64, N + 1);
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len() as u64, N + 1, "ids taken twice");
    // In the order written: N equal readings, then the other one, at times that never go
    // back and never run ahead of the clock.
    let temperatures: Vec<f64> = records
        .iter()
        .map(|r| {
            r["obj"]["data"]["temperature"][0]["value"]
                .as_f64()
                .expect("temperature")
        })
        .collect();
    let mut want = vec![21.0; N as usize];
    want.push(22.0);
    assert_eq!(temperatures, want);
    let tstamps: Vec<u64> = records
        .iter()
        .map(|r| r["obj"]["tstamp"].as_u64().expect("tstamp"))
        .collect();
    assert!(
        tstamps.windows(2).all(|w| w[0] <= w[1]),
        "times out of order"
    );
    assert!(
        tstamps[N as usize] <= clock_after,
        "times ahead of the clock"
    );
}

/// The clock now, in ms since 1970.
fn ms_now() -> u64 {
    std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .unwrap()
        .as_millis() as u64
}

/// Every kind of problem the serial source counts.
const SERIAL_PROBLEMS: [&str; 8] = [
    "serial_crc",
    "serial_bad_hex",
    "serial_malformed",
    "serial_overlong",
    "serial_other_line",
    "serial_cut",
    "serial_bad_cbor",
    "serial_bad_field",
];

/// Write `bytes` to `w` from a thread of its own: more than the pty and socat hold, so a
/// write on the test's thread would block for good if hubgate stopped reading, where a wait
/// with a deadline fails (with the logs). Dropping the agent and the pty pair ends the
/// thread's write then (EIO).
fn write_in_the_background(
    mut w: File,
    bytes: Vec<u8>,
) -> std::thread::JoinHandle<std::io::Result<()>> {
    std::thread::spawn(move || {
        w.write_all(&bytes)?;
        w.flush()
    })
}

/// A device that goes away in the middle of a frame (unplugged, its module reset while it
/// sends): the cut frame is counted, not silently forgotten.
#[test]
fn a_frame_cut_by_an_outage_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::start(dir.path());
    let agent = start_agent(dir.path(), &pty, "slip");
    let whole = slip(&with_crc(&envelope((1, 20, 50))));
    let mut stream = whole.clone();
    stream.extend_from_slice(&whole[..whole.len() / 2]);
    let mut w = pty.writer();
    // One write: the reader has the half frame once the whole one before it is delivered.
    w.write_all(&stream).unwrap();
    w.flush().unwrap();
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n == 1);
    drop(w);
    pty.stop();
    agent.wait_log("device gone", 1, WAIT);
    assert_eq!(problem(&agent, "serial_cut"), 1, "{}", agent.full_log());
    assert_eq!(problem(&agent, "serial_crc"), 0);
}

/// The user to run the agent as: nobody when the test runs as root, as the shipped unit runs
/// it as a user without capabilities (root opens any device whatever its mode); `dir`, the
/// agent's buffer's parent, is given to that user.
fn the_units_user(dir: &Path) -> Option<u32> {
    // SAFETY: geteuid has no failure mode.
    let user = (unsafe { libc::geteuid() } == 0).then_some(65534);
    if let Some(id) = user {
        std::os::unix::fs::chown(dir, Some(id), Some(id)).unwrap();
    }
    user
}

/// Set the mode of the device behind the pty link `link`.
fn set_device_mode(link: &Path, mode: u32) {
    let device = std::fs::canonicalize(link).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(mode);
    std::fs::set_permissions(&device, mode).unwrap();
}

/// A serial device that is a pseudo-terminal (a serial-over-network bridge such as socat or
/// ser2net, a radio module shared through one) outlives the agent that reads it. The agent
/// killed (the kernel at the unit's memory limit, the watchdog's abort, a stop past
/// `TimeoutStopSec`) and started again by systemd, the new agent opens the device and reads
/// its readings, as after a clean stop. It runs as the unit runs it, as a user without
/// capabilities (here nobody when the test runs as root): root opens a terminal whatever
/// state the killed agent left it in.
#[test]
fn a_killed_agents_pty_opens_for_the_agent_started_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let user = the_units_user(dir.path());
    let pty = PtyPair::start(dir.path());
    // The device given to the agent's user, as the bridge's owner gives it.
    set_device_mode(&pty.b, 0o666);
    let config = config(dir.path(), &pty.b, "slip");
    let mut agent = Agent::start_with_stdout_as(dir.path(), &config, user);
    agent.wait_log("opened at 115200 baud", 1, WAIT);
    agent.kill();
    agent.start_again();
    // The new agent's first word on its device (the log holds both agents' lines).
    let said = agent.wait_until("the second agent's open", WAIT, |log| {
        log.lines()
            .filter(|l| l.contains("opened at 115200 baud") || l.contains(": cannot open ("))
            .nth(1)
            .map(str::to_string)
    });
    assert!(
        said.contains("opened at 115200 baud"),
        "{said}\n{}",
        agent.logs()
    );
    let mut w = pty.writer();
    w.write_all(&slip(&with_crc(&envelope((2, 21, 51)))))
        .unwrap();
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n >= 1);
    assert_eq!(readings(&agent), [(2, 21, 51)]);
}

/// An envelope that reads as one but whose DevEUI does not decode holds a reading the
/// sensor sent, which a serial line cannot send again: it is counted (`serial_bad_field`),
/// logged and kept as a dead letter, as MQTT keeps an uplink with a bad DevEUI. Bytes that are
/// no CBOR envelope at all are only counted (`serial_bad_cbor`), as MQTT counts input that is
/// not JSON. The readings around them are delivered.
#[test]
fn an_envelope_with_a_bad_dev_eui_is_kept_as_a_dead_letter() {
    use base64::Engine;
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let mut agent = start_agent(dir.path(), &pty, "slip");
    let mut bad = BTreeMap::new();
    bad.insert(
        Value::Text("dev_eui".into()),
        Value::Bytes(vec![0x58, 0xa0, 0xcb]),
    );
    bad.insert(Value::Text("payload".into()), Value::Bytes(tbhh100(21, 40)));
    let bad = serde_cbor::to_vec(&Value::Map(bad)).unwrap();
    let mut stream = slip(&with_crc(&envelope((1, 21, 40))));
    stream.extend(slip(&with_crc(&bad)));
    stream.extend(slip(&with_crc(&[0xff, 0x00, 0x13])));
    stream.extend(slip(&with_crc(&envelope((2, 22, 41)))));
    let mut w = pty.writer();
    write_awkwardly(&mut w, &stream);
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n == 2);
    agent.wait_metric("hubgate_dead_lettered_total", WAIT, |n| n == 1);
    assert_eq!(readings(&agent), [(1, 21, 40), (2, 22, 41)]);
    assert_eq!(problem(&agent, "serial_bad_field"), 1);
    assert_eq!(problem(&agent, "serial_bad_cbor"), 1);
    let log = agent.full_log();
    let line = format!(
        "serial {}: CBOR envelope with a bad field: dev_eui: must be 8 bytes, not 3",
        pty.b.display()
    );
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    assert!(log.contains("the frame is kept as a dead letter"), "{log}");
    let status = agent.terminate(WAIT);
    assert!(status.success(), "{status}:\n{}", agent.logs());

    let lines = support::dead_letters(&dir.path().join("hubgate.toml"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let d = &lines[0];
    assert_eq!(d["recType"], "hubgate.dead_letter");
    assert_eq!(d["source"], "serial");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .starts_with("CBOR envelope with a bad field: dev_eui: must be 8 bytes, not 3"),
        "{d}"
    );
    // The port it came from, where MQTT's give the topic.
    assert_eq!(d["topic"], pty.b.display().to_string());
    assert_eq!(d["size"].as_u64(), Some(bad.len() as u64));
    assert_eq!(d["sha256"], hex::encode(sha2::Sha256::digest(&bad)));
    let head = base64::engine::general_purpose::STANDARD
        .decode(d["head_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(head, bad);
}

/// A port whose driver keeps no UART error counters (a pty answers `TIOCGICOUNT` with an
/// error) simply has no `hubgate_serial_uart_errors_total` series; that is said once, at
/// debug, not again when the device comes back, and its frames are read as any port's. (A
/// real UART, whose overruns would be counted, is not at hand in the tests.)
#[test]
fn a_port_without_uart_error_counters_has_no_such_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::start(dir.path());
    let agent = start_agent(dir.path(), &pty, "slip");
    let told = format!(
        "serial {}: no UART error counters (TIOCGICOUNT: ",
        pty.b.display()
    );
    agent.wait_log(&told, 1, WAIT);
    let mut w = pty.writer();
    write_awkwardly(&mut w, &slip(&with_crc(&envelope((1, 21, 40)))));
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n == 1);
    drop(w);
    pty.stop();
    agent.wait_log("device gone", 1, WAIT);
    let pty = PtyPair::start(dir.path());
    agent.wait_log("opened again after", 1, WAIT);
    let mut w = pty.writer();
    // Read after the reopen's look for the counters: once it is in, that look was taken.
    write_awkwardly(&mut w, &slip(&with_crc(&envelope((2, 22, 41)))));
    agent.wait_metric("hubgate_delivered_total", WAIT, |n| n == 2);
    assert_eq!(readings(&agent), [(1, 21, 40), (2, 22, 41)]);
    let log = agent.full_log();
    assert_eq!(log.matches(&told).count(), 1, "{log}");
    let scrape = agent.scrape().expect("metrics");
    assert!(
        scrape.contains("# TYPE hubgate_serial_uart_errors_total counter"),
        "{scrape}"
    );
    assert!(
        !scrape.contains("hubgate_serial_uart_errors_total{"),
        "{scrape}"
    );
}

/// `hubgate_serial_connected{device}` and the state on the status page's source row (the
/// page as served, its HTML read without a browser).
fn serial_state(agent: &Agent, device: &Path) -> (u64, String) {
    let series = format!(
        "hubgate_serial_connected{{device=\"{}\"}}",
        device.display()
    );
    assert!(
        agent.has_metric(&series),
        "no {series}:\n{}",
        agent.scrape().unwrap_or_default()
    );
    let (code, _, page) = agent
        .request("GET / HTTP/1.0\r\n\r\n")
        .expect("status page");
    assert_eq!(code, 200);
    let row = format!("<tr><td>serial<td>{}<td>", device.display());
    let state = page
        .split_once(&row)
        .and_then(|(_, rest)| rest.split_once("<td>"))
        .unwrap_or_else(|| panic!("no {row} in {page}"))
        .0;
    (agent.metric(&series), state.to_string())
}

const OPEN: &str = "<span class=ok>open</span>";
const NOT_OPEN: &str = "<span class=bad>not open</span>";

/// While a serial device is away (unplugged, its module in a boot loop), the metrics and the
/// status page say so: an unplugged radio is not quiet air.
#[test]
fn a_device_that_is_away_shows_on_the_metrics_and_the_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::start(dir.path());
    let agent = start_agent(dir.path(), &pty, "slip");
    assert_eq!(serial_state(&agent, &pty.b), (1, OPEN.into()));
    pty.stop();
    agent.wait_log("device gone", 1, WAIT);
    assert_eq!(serial_state(&agent, &pty.b), (0, NOT_OPEN.into()));
    let _pty = PtyPair::start(dir.path());
    agent.wait_log("opened again after", 1, WAIT);
    assert_eq!(serial_state(&agent, &pty.b), (1, OPEN.into()));
}

// ---------------------------------------------------------------------------
// no allocation on the read path

/// Counts allocations made by the current thread (other tests run on other threads).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn deframers_do_not_allocate_per_frame() {
    // The counter works: a Box allocates.
    let before = ALLOCATIONS.with(|n| n.get());
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(ALLOCATIONS.with(|n| n.get()) - before, 1);

    let content = envelope((1, 21, 40));
    // (framing, one good frame, what ends a frame)
    let cases: [(Framing, Vec<u8>, &[u8]); 3] = [
        (Framing::Slip, slip(&with_crc(&content)), b"\xc0"),
        (Framing::Cobs, cobs(&with_crc(&content)), b"\x00"),
        (Framing::LinesHex, line(&content), b"\r\n"),
    ];
    for (framing, one, end) in cases {
        // Good frames, garbage and an over-long frame, many times over.
        let mut stream = Vec::new();
        for _ in 0..200 {
            stream.extend_from_slice(&one);
            stream.extend_from_slice(b"\x55junk");
            stream.extend_from_slice(end);
            stream.extend(std::iter::repeat_n(0x41, 300));
            stream.extend_from_slice(end);
        }
        let mut d = Deframer::new(framing, MAX_FRAME, Some("radio_rx")).unwrap();
        let before = ALLOCATIONS.with(|n| n.get());
        let (mut frames, mut bytes) = (0u32, 0usize);
        for chunk in stream.chunks(37) {
            let mut input = chunk;
            while !input.is_empty() {
                let (used, ev) = d.push(input);
                input = &input[used..];
                if let Some(Ok(f)) = ev {
                    frames += 1;
                    bytes += f.len();
                }
            }
        }
        let allocations = ALLOCATIONS.with(|n| n.get()) - before;
        assert_eq!(frames, 200, "{framing:?}");
        assert_eq!(bytes, 200 * content.len(), "{framing:?}");
        assert_eq!(allocations, 0, "{framing:?} allocated on the read path");
    }
}

/// An RN2483-class radio module prints `radio_rx <PHYPayload hex>`: hubgate verifies the MIC,
/// decrypts with the device's session keys and decodes (the worked example of docs/codecs.md).
#[test]
fn radio_module_phy_lines_are_decrypted_and_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let config = format!(
        r#"
[buffer]
path = "{buffer}"
[[source]]
type = "serial"
device = "{device}"
framing = "lines-hex"
prefix = "radio_rx"
content = "phy"
[[device]]
dev_eui = "a840410000006001"
codec = "cayenne-lpp"
dev_addr = "26011BDA"
nwk_s_key = "2B7E151628AED2A6ABF7158809CF4F3C"
app_s_key = "000102030405060708090A0B0C0D0E0F"
[sink]
type = "stdout"
"#,
        buffer = dir.path().join("buffer").display(),
        device = pty.b.display(),
    );
    let agent = Agent::start_with_stdout(dir.path(), &config);
    agent.wait_log("opened at 115200 baud", 1, WAIT);
    let phy = hex::decode("40da1b0126000700024026c89cb85521e3").unwrap();
    let mut stream = b"radio_err\r\n".to_vec();
    stream.extend(line(&phy));
    stream.extend(line(&phy)); // heard again: a duplicate, not a second record
    write_awkwardly(&mut pty.writer(), &stream);
    agent.wait_metric("hubgate_delivered_total", WAIT, |v| v == 1);
    agent.wait_metric("hubgate_duplicates_total", WAIT, |v| v == 1);
    let lines = agent.stdout_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let data = &v["obj"]["data"];
    assert_eq!(data["temperature"][0]["value"], 27.2);
    assert_eq!(data["meta"]["iot"]["fcnt_up"], 7);
    assert_eq!(data["meta"]["iot"]["payload"], "03670110");
    assert_eq!(problem(&agent, "serial_other_line"), 1);
}

/// A device that keeps going away and coming back (a loose USB cable, a module in a boot
/// loop) is an outage that repeats: its log lines are rate-limited per kind, as every line an
/// outage causes is (docs/operations.md, "Logs and signals"), not two lines per flap (the
/// ones held back show at debug level, which the waits here read).
#[test]
fn a_flapping_device_does_not_flood_the_log() {
    const FLAPS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::start(dir.path());
    let agent = start_agent(dir.path(), &pty, "slip");
    for i in 1..=FLAPS {
        pty.stop();
        agent.wait_log("device gone", i, WAIT);
        pty = PtyPair::start(dir.path());
        agent.wait_log("opened again after", i, WAIT);
    }
    let log = agent.full_log();
    let at = |level: &str| {
        log.lines()
            .filter(|l| l.contains(level) && l.contains("serial "))
            .count()
    };
    assert!(
        at(" WARN ") <= 2 && at(" INFO ") <= 3,
        "{FLAPS} flaps in a few seconds: {} warnings, {} info lines\n{log}",
        at(" WARN "),
        at(" INFO ")
    );
}
