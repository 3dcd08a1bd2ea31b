//! What a process costs idle and per record, from `/proc`: CPU time as the sum of its
//! threads' `schedstat` (nanoseconds on a CPU, not sampled at clock ticks as `stat`'s
//! utime and stime are) and context switches (each thread's voluntary + involuntary ones:
//! every wake-up of a thread that slept is one). This VM has no hardware counters
//! (`perf stat -e instructions:u` is "not supported"), so instructions are counted by
//! valgrind instead when the process runs under callgrind (`HUBGATE_AGENT_WRAP`, see
//! `scripts/bench.sh --help`): each sample dumps its counters (`callgrind_control --dump`),
//! which also starts the next count. Instructions are user space only, as `instructions:u`;
//! under valgrind the threads take turns on one core, so its CPU and switches mean nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One look at every thread of a process.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    /// Thread id → (name, CPU ns, context switches).
    threads: BTreeMap<u32, (String, u64, u64)>,
    /// Instructions since the previous sample, under callgrind.
    instructions: Option<u64>,
}

impl Sample {
    pub fn take(pid: u32) -> Sample {
        let mut threads = BTreeMap::new();
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
        {
            if let Some(t) = thread(pid, tid) {
                threads.insert(tid, t);
            }
        }
        Sample {
            at: Instant::now(),
            threads,
            instructions: callgrind_dump(pid),
        }
    }

    /// CPU ns and context switches from `earlier` to this sample, per thread name (threads
    /// of one name added up; those that ended in between are missing).
    fn since(&self, earlier: &Sample) -> BTreeMap<String, (u64, u64)> {
        let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (tid, (name, cpu, switches)) in &self.threads {
            let (_, cpu0, switches0) = earlier.threads.get(tid).cloned().unwrap_or_default();
            let e = by_name.entry(name.clone()).or_default();
            e.0 += cpu.saturating_sub(cpu0);
            e.1 += switches.saturating_sub(switches0);
        }
        by_name
    }
}

/// Instructions `pid` executed since its previous dump (or its start), if it runs under
/// callgrind: valgrind's own command line names the tool and the output file.
fn callgrind_dump(pid: u32) -> Option<u64> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.iter().any(|a| a == "--tool=callgrind") {
        return None;
    }
    let out = args
        .iter()
        .find_map(|a| a.strip_prefix("--callgrind-out-file="))
        .unwrap_or("callgrind.out.%p")
        .replace("%p", &pid.to_string());
    let out = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()?
        .join(out);
    let dumped = std::process::Command::new("callgrind_control")
        .arg("--dump")
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(dumped, "callgrind_control --dump {pid} failed");
    // Dumps are numbered OUT.1, OUT.2, ...: the newest is this one.
    let prefix = format!("{}.", out.file_name()?.to_str()?);
    let newest = std::fs::read_dir(out.parent()?)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .max()?;
    let dump = std::fs::read_to_string(newest.1).ok()?;
    dump.lines()
        .find_map(|l| l.strip_prefix("totals:")?.trim().parse().ok())
}

/// (name, CPU ns, context switches) of thread `tid` of `pid`.
fn thread(pid: u32, tid: u32) -> Option<(String, u64, u64)> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let cpu = std::fs::read_to_string(format!("{dir}/schedstat")).ok()?;
    let cpu = cpu.split_whitespace().next()?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let switches = field("voluntary_ctxt_switches:") + field("nonvoluntary_ctxt_switches:");
    let name = std::fs::read_to_string(format!("{dir}/comm")).ok()?;
    Some((name.trim().to_string(), cpu, switches))
}

/// An idle process: CPU and wake-ups per second, in all and per thread name.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    pub secs: f64,
    pub cpu_ms_per_s: f64,
    pub wakeups_per_s: f64,
    /// Under callgrind.
    pub instructions_per_s: Option<f64>,
    /// (thread name, threads of that name, CPU ms/s, wake-ups/s), busiest first.
    pub threads: Vec<(String, usize, f64, f64)>,
}

/// Watch `pid` for `secs` while nothing arrives.
pub fn idle(pid: u32, secs: Duration) -> Idle {
    let before = Sample::take(pid);
    std::thread::sleep(secs);
    let after = Sample::take(pid);
    let span = after.at.duration_since(before.at).as_secs_f64();
    let mut threads: Vec<_> = after
        .since(&before)
        .into_iter()
        .map(|(name, (cpu, switches))| {
            let count = after.threads.values().filter(|t| t.0 == name).count();
            (name, count, cpu as f64 / 1e6 / span, switches as f64 / span)
        })
        .collect();
    threads.sort_by(|a, b| b.2.total_cmp(&a.2));
    Idle {
        secs: span,
        cpu_ms_per_s: threads.iter().map(|t| t.2).sum(),
        wakeups_per_s: threads.iter().map(|t| t.3).sum(),
        instructions_per_s: after.instructions.map(|i| i as f64 / span),
        threads,
    }
}

impl Live {
    /// One line per thread name.
    pub fn table(&self) -> String {
        let mut s = String::new();
        if let Some(i) = self.instructions_per_record {
            let _ = writeln!(s, "  instructions per record, less idle: {i:.0}");
        }
        for (name, cpu, switches) in &self.threads {
            let _ = writeln!(
                s,
                "  {name:<28} {cpu:>8.1} us CPU {switches:>6.2} switches per record"
            );
        }
        s
    }
}

impl Idle {
    /// One line per thread name.
    pub fn table(&self) -> String {
        let mut s = String::new();
        if let Some(i) = self.instructions_per_s {
            let _ = writeln!(s, "  instructions per s: {i:.0}");
        }
        for (name, count, cpu, wakeups) in &self.threads {
            let _ = writeln!(
                s,
                "  {name:<28} x{count:<2} {cpu:>7.3} ms CPU/s {wakeups:>7.1} wake-ups/s"
            );
        }
        s
    }
}

/// What records at a fixed rate cost beyond idling.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub rate: u64,
    pub cpu_us_per_record: f64,
    pub switches_per_record: f64,
    /// Under callgrind, less idle.
    pub instructions_per_record: Option<f64>,
    /// (thread name, CPU us, context switches) per record, idling not taken off; busiest
    /// first.
    pub threads: Vec<(String, f64, f64)>,
}

/// From `before` (taken when the first of `records` was sent) to `after` (the last one
/// confirmed), less what `idle` costs over that span.
pub fn live(rate: u64, records: u64, before: &Sample, after: &Sample, idle: &Idle) -> Live {
    let span = after.at.duration_since(before.at).as_secs_f64();
    let by_name = after.since(before);
    let (cpu, switches) = by_name
        .values()
        .fold((0, 0), |(c, s), (cpu, sw)| (c + cpu, s + sw));
    let records = records.max(1) as f64;
    let mut threads: Vec<_> = by_name
        .into_iter()
        .map(|(name, (cpu, sw))| (name, cpu as f64 / 1e3 / records, sw as f64 / records))
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    Live {
        threads,
        rate,
        cpu_us_per_record: (cpu as f64 / 1e3 - idle.cpu_ms_per_s * 1e3 * span).max(0.0) / records,
        switches_per_record: (switches as f64 - idle.wakeups_per_s * span).max(0.0) / records,
        instructions_per_record: after
            .instructions
            .map(|i| (i as f64 - idle.instructions_per_s.unwrap_or(0.0) * span).max(0.0) / records),
    }
}
