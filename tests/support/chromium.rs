//! Debian's headless `chromium` on a page of the agent (the status page tests).

use std::path::Path;
use std::time::{Duration, Instant};

use super::agent::WAIT;

/// Debian's `chromium`, headless, on `url`: what it does after `budget` of virtual time
/// (the pages' refresh script runs meanwhile), and how long it may take for real.
pub fn run(dir: &Path, url: &str, what: &[String], budget: Duration) -> String {
    use std::os::unix::process::CommandExt;
    let out = dir.join("chromium.out");
    let mut child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1100,900",
            "--hide-scrollbars",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(what)
        .arg(url)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.join("chromium.err")).unwrap())
        // Its helper processes go with it if it has to be killed.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}): install Debian's chromium package")
        });
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(dir.join("chromium.err")).unwrap_or_default();
            assert!(status.success(), "chromium {what:?} {url}: {status}\n{err}");
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: signals the process group started above.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("chromium {url} did not finish in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(out).unwrap()
}
