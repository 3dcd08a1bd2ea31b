//! `--sched` (with `--dir`): where the threads of hubgate, tansu and mosquitto were while the
//! fixed-rate runs went on, to name the cause of a late stretch. Every 10 ms a thread reads,
//! for each of their threads, `/proc/PID/task/TID/schedstat` (ns on a CPU, ns runnable but
//! waiting for one), `stat`'s state (R running or runnable, S sleeping, D in uninterruptible
//! I/O) and `wchan` (the kernel function a blocked thread sleeps in, e.g. an fsync's wait),
//! and appends them to `sched.csv` as
//! `epoch_ms,process,tid,thread,state,run_ns,wait_ns,wchan` (`epoch_ms`: ms since the Unix
//! epoch, as the latency files' header). `scripts/stalls.py DIR` reads it beside them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

const EVERY: Duration = Duration::from_millis(10);

pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Sample the processes `(name, pid)` into `dir/sched.csv` (appended) until dropped.
    pub fn start(dir: &Path, processes: Vec<(&'static str, u32)>) -> Sampler {
        let path = dir.join("sched.csv");
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        if new {
            writeln!(
                file,
                "epoch_ms,process,tid,thread,state,run_ns,wait_ns,wchan"
            )
            .expect("write sched.csv");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rows = String::new();
            while !flag.load(Ordering::Relaxed) {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
                    * 1e3;
                for (name, pid) in &processes {
                    sample(&mut rows, now, name, *pid);
                }
                file.write_all(rows.as_bytes()).expect("write sched.csv");
                rows.clear();
                std::thread::sleep(EVERY);
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }
}

/// One row per thread of `pid`.
fn sample(rows: &mut String, now: f64, process: &str, pid: u32) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for tid in tasks.flatten().map(|e| e.file_name()) {
        let Some(tid) = tid.to_str() else { continue };
        let dir = format!("/proc/{pid}/task/{tid}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default();
        let (sched, stat, wchan) = (read("schedstat"), read("stat"), read("wchan"));
        let mut ns = sched.split_whitespace();
        let (Some(run), Some(wait)) = (ns.next(), ns.next()) else {
            continue;
        };
        // "PID (comm) STATE ...": the name may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let thread = head
            .split_once('(')
            .map_or("", |(_, n)| n)
            .replace(',', ";");
        let state = rest.split_whitespace().next().unwrap_or("?");
        let wchan = if wchan == "0" { "" } else { wchan.trim() };
        let _ = writeln!(
            rows,
            "{now:.1},{process},{tid},{thread},{state},{run},{wait},{wchan}"
        );
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
