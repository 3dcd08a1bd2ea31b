//! A serial port's UART error counters: what the kernel counted of bytes lost or damaged
//! before hubgate could read them (a receive FIFO overrun when the CPU was late to empty it,
//! the tty buffer full, framing and parity errors of a wrong baud rate or a noisy line).
//! Linux keeps them per port and hands them out with the `TIOCGICOUNT` ioctl; a port whose
//! driver has none (a pseudo-terminal, some USB adapters) answers it with an error, and then
//! has no such counters in hubgate either.
//!
//! They are read when the port opens (the baseline: what was counted before is not
//! hubgate's) and then at most once a second, after a read that brought bytes: never on a
//! timer, so an idle port wakes nothing up. What is counted after the last reading of a burst
//! shows with the next bytes. A reading that fails waits its second as one that worked, and
//! is said once, at debug.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// The shortest time between two readings.
pub const EVERY: Duration = Duration::from_secs(1);

/// Linux's `struct serial_icounter_struct` (`linux/serial.h`), which `TIOCGICOUNT` fills.
#[repr(C)]
#[derive(Default)]
struct SerialIcounter {
    cts: libc::c_int,
    dsr: libc::c_int,
    rng: libc::c_int,
    dcd: libc::c_int,
    rx: libc::c_int,
    tx: libc::c_int,
    frame: libc::c_int,
    overrun: libc::c_int,
    parity: libc::c_int,
    brk: libc::c_int,
    buf_overrun: libc::c_int,
    reserved: [libc::c_int; 9],
}

/// The counters hubgate exposes, as the kernel keeps them: unsigned 32-bit numbers that wrap
/// (handed out as C `int`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub overrun: u32,
    pub buf_overrun: u32,
    pub frame: u32,
    pub parity: u32,
}

impl Counts {
    /// The `kind` label of each counter, in the order of [`Counts::since`].
    pub const KINDS: [&'static str; 4] = ["overrun", "buf_overrun", "frame", "parity"];

    /// What was counted from `before` to `self`, each counter on its own, across a wrap.
    pub fn since(self, before: Counts) -> [u64; 4] {
        let d = |now: u32, then: u32| u64::from(now.wrapping_sub(then));
        [
            d(self.overrun, before.overrun),
            d(self.buf_overrun, before.buf_overrun),
            d(self.frame, before.frame),
            d(self.parity, before.parity),
        ]
    }
}

/// The port's counters now.
pub fn read(fd: RawFd) -> std::io::Result<Counts> {
    let mut c = SerialIcounter::default();
    // SAFETY: TIOCGICOUNT writes one serial_icounter_struct to the pointer, which is one.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGICOUNT, &mut c as *mut SerialIcounter) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Counts {
        overrun: c.overrun as u32,
        buf_overrun: c.buf_overrun as u32,
        frame: c.frame as u32,
        parity: c.parity as u32,
    })
}

/// The error counters of one open port: the last reading and when it was taken (or tried).
pub struct UartErrors {
    last: Counts,
    at: Instant,
    /// Whether a reading has failed since the port opened: said once.
    failed: bool,
}

impl UartErrors {
    /// The port opened at `now`, the counters `read` gives (the port's: [`read`]) as the
    /// baseline, and their series for `dev` exposed (at 0 if new); an error if the port has
    /// no counters.
    pub fn open(
        read: impl FnOnce() -> std::io::Result<Counts>,
        dev: &str,
        metrics: &Metrics,
        now: Instant,
    ) -> std::io::Result<Self> {
        let last = read()?;
        for kind in Counts::KINDS {
            metrics.serial_uart_errors.add(dev, kind, 0);
        }
        Ok(UartErrors {
            last,
            at: now,
            failed: false,
        })
    }

    /// After a read that brought bytes at `now`: if [`EVERY`] has passed since the last
    /// reading, `read` the counters (the port's: [`read`]) and count what is new. A reading
    /// that fails (the port going away) counts nothing and is tried again a second later; the
    /// read loop finds a port that went.
    pub fn after_read(
        &mut self,
        read: impl FnOnce() -> std::io::Result<Counts>,
        dev: &str,
        metrics: &Metrics,
        now: Instant,
    ) {
        if !self.due(now) {
            return;
        }
        match read() {
            Ok(counts) => self.count(counts, dev, metrics, now),
            Err(e) => {
                self.at = now;
                if !std::mem::replace(&mut self.failed, true) {
                    log::debug!("serial {dev}: reading the UART error counters: {e}");
                }
            }
        }
    }

    /// Count what `counts`, read at `now`, has that the last reading had not.
    fn count(&mut self, counts: Counts, dev: &str, metrics: &Metrics, now: Instant) {
        let new = self.advance(counts, now);
        for (kind, n) in Counts::KINDS.into_iter().zip(new) {
            if n > 0 {
                metrics.serial_uart_errors.add(dev, kind, n);
            }
        }
    }

    fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) >= EVERY
    }

    /// Take `counts`, read at `now`, as the last reading: what is new since the one before.
    fn advance(&mut self, counts: Counts, now: Instant) -> [u64; 4] {
        let new = counts.since(self.last);
        self.last = counts;
        self.at = now;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// What is new is counted from the last reading, each counter on its own, across the wrap
    /// of the kernel's 32-bit numbers (handed out as C `int`s, so past 2^31 they read
    /// negative).
    #[test]
    fn each_counter_counts_from_the_last_reading_across_a_wrap() {
        let t = Instant::now();
        let before = Counts {
            overrun: 1000,
            buf_overrun: u32::MAX - 1,
            frame: i32::MAX as u32,
            parity: 7,
        };
        let mut u = UartErrors {
            last: before,
            at: t,
            failed: false,
        };
        let later = Counts {
            overrun: 1002,
            buf_overrun: 3,
            frame: (i32::MIN + 4) as u32,
            parity: 7,
        };
        assert_eq!(u.advance(later, t + EVERY), [2, 5, 5, 0]);
        assert_eq!(u.advance(later, t + EVERY * 2), [0, 0, 0, 0]);
    }

    /// What is new in a reading is added to the device's series of each kind, exposed with
    /// both labels.
    #[test]
    fn new_errors_are_counted_by_device_and_kind() {
        let t = Instant::now();
        let metrics = Metrics::new();
        let mut u = UartErrors {
            last: Counts {
                overrun: 10,
                ..Counts::default()
            },
            at: t,
            failed: false,
        };
        let counts = Counts {
            overrun: 13,
            frame: 2,
            ..Counts::default()
        };
        u.count(counts, "/dev/ttyAMA0", &metrics, t + EVERY);
        u.count(
            Counts {
                overrun: 14,
                ..counts
            },
            "/dev/ttyAMA0",
            &metrics,
            t + EVERY * 2,
        );
        let text = metrics.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("hubgate_serial_uart_errors_total{"))
            .collect();
        assert_eq!(
            series,
            [
                r#"hubgate_serial_uart_errors_total{device="/dev/ttyAMA0",kind="frame"} 2"#,
                r#"hubgate_serial_uart_errors_total{device="/dev/ttyAMA0",kind="overrun"} 4"#,
            ]
        );
    }

    /// The counters are read at most once a second, counted from the last reading.
    #[test]
    fn readings_are_at_least_a_second_apart() {
        let t = Instant::now();
        let mut u = UartErrors {
            last: Counts::default(),
            at: t,
            failed: false,
        };
        assert!(!u.due(t));
        assert!(!u.due(t + EVERY - Duration::from_millis(1)));
        assert!(u.due(t + EVERY));
        u.advance(Counts::default(), t + EVERY + Duration::from_millis(300));
        assert!(!u.due(t + EVERY * 2));
        assert!(u.due(t + EVERY * 2 + Duration::from_millis(300)));
    }

    /// A reader of counters for the tests: the readings it gives, in turn, and how many it
    /// gave.
    struct Fake {
        readings: std::cell::RefCell<Vec<std::io::Result<Counts>>>,
        calls: std::cell::Cell<usize>,
    }

    impl Fake {
        fn new(readings: Vec<std::io::Result<Counts>>) -> Fake {
            Fake {
                readings: std::cell::RefCell::new(readings),
                calls: std::cell::Cell::new(0),
            }
        }

        fn read(&self) -> std::io::Result<Counts> {
            self.calls.set(self.calls.get() + 1);
            self.readings.borrow_mut().remove(0)
        }
    }

    fn overruns(n: u32) -> std::io::Result<Counts> {
        Ok(Counts {
            overrun: n,
            ..Counts::default()
        })
    }

    /// What the port counted before it opened is the baseline: 1000 overruns at the open,
    /// 1003 later, count 3. Between readings at least [`EVERY`] passes, however many reads
    /// bring bytes, and a reading that fails waits its second too.
    #[test]
    fn the_open_takes_the_baseline_and_readings_wait_a_second() {
        let (t, metrics, dev) = (Instant::now(), Metrics::new(), "/dev/ttyAMA0");
        let fake = Fake::new(vec![
            overruns(1000),
            overruns(1003),
            Err(std::io::Error::other("gone")),
            overruns(1010),
        ]);
        let mut u = UartErrors::open(|| fake.read(), dev, &metrics, t).unwrap();
        let ms = Duration::from_millis;
        u.after_read(|| fake.read(), dev, &metrics, t + ms(10));
        assert_eq!(fake.calls.get(), 1);
        u.after_read(|| fake.read(), dev, &metrics, t + EVERY);
        u.after_read(|| fake.read(), dev, &metrics, t + EVERY + ms(10));
        assert_eq!(fake.calls.get(), 2);
        let overrun = |m: &Metrics| {
            let series = m.serial_uart_errors.snapshot();
            let key = vec![dev.to_string(), "overrun".to_string()];
            series.into_iter().find(|(k, _)| *k == key).map(|(_, n)| n)
        };
        assert_eq!(overrun(&metrics), Some(3));
        // The reading at 2 s fails; the next read, 10 ms later, does not try again.
        u.after_read(|| fake.read(), dev, &metrics, t + EVERY * 2);
        u.after_read(|| fake.read(), dev, &metrics, t + EVERY * 2 + ms(10));
        assert_eq!(fake.calls.get(), 3);
        u.after_read(|| fake.read(), dev, &metrics, t + EVERY * 3);
        assert_eq!(fake.calls.get(), 4);
        assert_eq!(overrun(&metrics), Some(10));
    }

    /// A pseudo-terminal has no UART counters: the port is refused, and no series exists.
    #[tokio::test]
    async fn a_pty_has_no_counters() {
        let (_far, port) = tokio_serial::SerialStream::pair().unwrap();
        let metrics = Metrics::new();
        let fd = port.as_raw_fd();
        let opened = UartErrors::open(|| read(fd), "pty", &metrics, Instant::now());
        assert!(opened.is_err());
        assert!(metrics.serial_uart_errors.snapshot().is_empty());
    }
}
