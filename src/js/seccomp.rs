//! The codec worker's system-call allowlist (seccomp-BPF), installed once its set-up is done
//! ([`super::worker`]): what a QuickJS escape in a vendor codec can then do is read and write
//! the descriptors the worker has (its socket, `/dev/null`, the agent's standard error),
//! manage its own memory, read clocks, wait on its own futexes (not priority-inheriting ones)
//! and the socket, set its own limits within the hard limits it was given, signal its own
//! threads (`abort`) and exit. It cannot open a file (the Event Hubs connection string), a
//! socket, create a process, signal or trace another one, nor touch a path or use io_uring,
//! bpf, userfaultfd, perf or keys; nor make memory executable.
//!
//! The list comes from `strace -f` of the worker under the library's and `js_isolation`'s
//! JavaScript tests on x86-64 (loads, decodes, throws, out of memory, deadlines, large
//! answers), from its first request on, plus the paths those tests do not reach: the CPU
//! backstop's move (`setrlimit`/`prlimit64`), a log line (`write` to standard error),
//! glibc's own fatal messages (`writev` to standard error: a double free, a smashed stack),
//! `abort` (a panic, a QuickJS assert: `rt_sigprocmask`, `rt_sigaction`, `tgkill`) and a
//! wait resumed after a stop or a freeze (`restart_syscall`). Names
//! that differ on aarch64 and 32-bit ARM are mapped by hand; the 32-bit ARM list has run on
//! an ARMv7 kernel, the aarch64 one is only compile-checked (docs/building.md).
//!
//! What is not listed fails with ENOSYS rather than killing the worker: glibc falls back to
//! an older call on ENOSYS (the 32-bit time calls on ARM, `clone` for `clone3`), so a call
//! missed on an architecture that was not traced costs an error, not every decode. Every
//! refusal is logged by the kernel where it can (SECCOMP_FILTER_FLAG_LOG: `journalctl -k`,
//! audit type 1326), so such a miss, or an attacker's probing, leaves a trace. Calls no
//! worker ever makes and only an attacker would (a new program, `ptrace`, a socket, the raw
//! `fork` and `vfork` calls) end it at once (SIGSYS): the agent reports the call as
//! `js_crashed` with the signal, and the attacker gets no second try in that process.
//! glibc's `fork()` and a new thread go through `clone3` and `clone`, which fail with ENOSYS
//! instead: no thread is started after the install, but killing on `clone` would make any
//! thread a library starts lazily fatal. A system call of another ABI (i386 or x32 on x86-64,
//! AArch32 on aarch64) ends the worker too: the numbers below only mean what they say for the
//! build's own.

use std::io;

use libc::{c_long, sock_filter};

#[cfg(not(all(
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm"),
    target_endian = "little"
)))]
compile_error!(
    "the codec worker's system-call allowlist knows little-endian x86_64, aarch64 and arm only"
);

/// `AUDIT_ARCH_*` of `<linux/audit.h>`: the ELF machine, 64-bit and little-endian bits.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "arm")]
const ARCH: u32 = 0x4000_0028;

/// 32-bit ARM's calls with 64-bit times (`<asm/unistd.h>`), which the `libc` crate lacks;
/// glibc tries them first.
#[cfg(target_arch = "arm")]
mod arm {
    use libc::c_long;
    pub const SYS_CLOCK_GETTIME64: c_long = 403;
    pub const SYS_PPOLL_TIME64: c_long = 414;
    pub const SYS_FUTEX_TIME64: c_long = 422;
}

/// Allowed whatever their arguments: the socket and standard error (`read`, `write`, `poll`
/// in the agent-watch thread); memory (`malloc`, QuickJS's heap); `sched_yield` (locks);
/// clocks (`clock_gettime` for the CPU limits, `gettimeofday` for `Date` where the vDSO does
/// not answer); `getrandom` (the worker's `HashMap` keys); `abort`'s signal mask and handler;
/// a thread's signal stack, given up at its end; its own limits; a wait resumed after a stop
/// (`restart_syscall`: `poll` and a timed `futex` come back through it); the exits. `mmap`,
/// `mprotect`, `writev`, `futex`, `prlimit64` and `tgkill` are allowed below with checks.
const ALLOWED: &[c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_ppoll,
    libc::SYS_sched_yield,
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_setrlimit,
    libc::SYS_exit,
    libc::SYS_exit_group,
    #[cfg(not(target_arch = "aarch64"))]
    libc::SYS_poll,
    #[cfg(not(target_arch = "arm"))]
    libc::SYS_getrlimit,
    #[cfg(target_arch = "arm")]
    libc::SYS_ugetrlimit,
    #[cfg(target_arch = "arm")]
    libc::SYS_sigreturn,
    #[cfg(target_arch = "arm")]
    arm::SYS_CLOCK_GETTIME64,
    #[cfg(target_arch = "arm")]
    arm::SYS_PPOLL_TIME64,
];

/// Futexes, for locks and the start-up channel: Rust's and glibc's plain ones only. The
/// priority-inheriting operations (FUTEX_LOCK_PI, FUTEX_CMP_REQUEUE_PI...), where several of
/// the kernel's privilege escalations were found, are refused.
const FUTEX: &[c_long] = &[
    libc::SYS_futex,
    #[cfg(target_arch = "arm")]
    arm::SYS_FUTEX_TIME64,
];

/// The futex operations allowed, without their private and clock flags (FUTEX_CMD_MASK).
const FUTEX_OPS: &[u32] = &[
    libc::FUTEX_WAIT as u32,
    libc::FUTEX_WAKE as u32,
    libc::FUTEX_REQUEUE as u32,
    libc::FUTEX_CMP_REQUEUE as u32,
    libc::FUTEX_WAKE_OP as u32,
    libc::FUTEX_WAIT_BITSET as u32,
    libc::FUTEX_WAKE_BITSET as u32,
];

/// FUTEX_CMD_MASK of `<linux/futex.h>`: a futex operation without its flags.
const FUTEX_CMD_MASK: u32 = !((libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) as u32);

/// Mapping memory, allowed unless executable (what `MemoryDenyWriteExecute=` does for the
/// unit, here also outside it).
const NOT_EXECUTABLE: &[c_long] = &[
    libc::SYS_mprotect,
    #[cfg(not(target_arch = "arm"))]
    libc::SYS_mmap,
    #[cfg(target_arch = "arm")]
    libc::SYS_mmap2,
];

/// Calls that end the worker (above).
const HOSTILE: &[c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_socket,
    #[cfg(not(target_arch = "aarch64"))]
    libc::SYS_fork,
    #[cfg(not(target_arch = "aarch64"))]
    libc::SYS_vfork,
];

/// `struct seccomp_data`'s fields: the call's number, its ABI, the low 32 bits of an
/// argument (all three architectures are little-endian).
const NR: u32 = 0;
const ABI: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

/// A call not listed (ENOSYS: the module's comment says why).
const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
/// A listed call with arguments it may not have: EPERM, the call exists.
const REFUSE: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

/// The program's length: the ABI checks (x32's on x86-64), two instructions for each call
/// allowed or killed whatever its arguments, five for each checked in one argument (`on_arg`),
/// a block for each futex call (`on_futex`) and the final refusal.
const ROOM: usize = 4
    + if cfg!(target_arch = "x86_64") { 2 } else { 0 }
    + 2 * (HOSTILE.len() + ALLOWED.len())
    + 5 * (NOT_EXECUTABLE.len() + 3)
    + FUTEX.len() * (FUTEX_OPS.len() + 5)
    + 1;

/// A classic BPF program has at most BPF_MAXINSNS instructions, and its jumps reach 255 on.
const _: () = assert!(ROOM <= 4096 && FUTEX_OPS.len() + 4 <= 255);

/// The BPF program, built without allocating (the tests build it in a forked child).
struct Program {
    ops: [sock_filter; ROOM],
    len: usize,
}

impl Program {
    fn op(&mut self, code: u32, k: u32, jt: u8, jf: u8) {
        self.ops[self.len] = sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        self.len += 1;
    }

    fn load(&mut self, offset: u32) {
        self.op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset, 0, 0);
    }

    fn ret(&mut self, action: u32) {
        self.op(libc::BPF_RET | libc::BPF_K, action, 0, 0);
    }

    /// With the call's number loaded: `action` for `nr`, else on to the next instruction.
    fn on(&mut self, nr: c_long, action: u32) {
        self.op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr as u32, 0, 1);
        self.ret(action);
    }

    /// With the call's number loaded: `nr` is allowed if `jump` (BPF_JEQ or BPF_JSET) of the
    /// low 32 bits of its argument `i` against `value` comes out as `allow_if`, else refused;
    /// any other call goes on to the next instruction.
    fn on_arg(&mut self, nr: c_long, i: u32, jump: u32, value: u32, allow_if: bool) {
        self.op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr as u32, 0, 4);
        self.load(arg(i));
        let (jt, jf) = if allow_if { (0, 1) } else { (1, 0) };
        self.op(libc::BPF_JMP | jump | libc::BPF_K, value, jt, jf);
        self.ret(libc::SECCOMP_RET_ALLOW);
        self.ret(REFUSE);
    }

    /// With the call's number loaded: `nr` is allowed if its operation (argument 1, without
    /// its flags) is one of [`FUTEX_OPS`], else refused; any other call goes on.
    fn on_futex(&mut self, nr: c_long) {
        let n = FUTEX_OPS.len();
        self.op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            nr as u32,
            0,
            (n + 4) as u8,
        );
        self.load(arg(1));
        self.op(
            libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
            FUTEX_CMD_MASK,
            0,
            0,
        );
        for (i, &op) in FUTEX_OPS.iter().enumerate() {
            self.op(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                op,
                (n - i) as u8,
                0,
            );
        }
        self.ret(REFUSE);
        self.ret(libc::SECCOMP_RET_ALLOW);
    }

    /// The worker's filter; `pid` is its own (`tgkill`: `abort` signals its own thread).
    fn build(pid: libc::pid_t) -> Program {
        let mut p = Program {
            ops: [sock_filter {
                code: 0,
                jt: 0,
                jf: 0,
                k: 0,
            }; ROOM],
            len: 0,
        };
        p.load(ABI);
        p.op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, ARCH, 1, 0);
        p.ret(libc::SECCOMP_RET_KILL_PROCESS);
        p.load(NR);
        // x32's calls come as x86-64's with this bit set.
        #[cfg(target_arch = "x86_64")]
        {
            p.op(
                libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                0x4000_0000,
                0,
                1,
            );
            p.ret(libc::SECCOMP_RET_KILL_PROCESS);
        }
        for &nr in HOSTILE {
            p.on(nr, libc::SECCOMP_RET_KILL_PROCESS);
        }
        for &nr in ALLOWED {
            p.on(nr, libc::SECCOMP_RET_ALLOW);
        }
        for &nr in NOT_EXECUTABLE {
            p.on_arg(nr, 2, libc::BPF_JSET, libc::PROT_EXEC as u32, false);
        }
        for &nr in FUTEX {
            p.on_futex(nr);
        }
        // glibc's fatal messages (`__libc_message`: a double free, a smashed stack), on
        // standard error only.
        p.on_arg(libc::SYS_writev, 0, libc::BPF_JEQ, 2, true);
        // Its own limits only (pid 0): another process of the same user's are within reach
        // of prlimit64 without privileges (the agent's). The kernel reads a pid as 32 bits.
        p.on_arg(libc::SYS_prlimit64, 0, libc::BPF_JEQ, 0, true);
        p.on_arg(libc::SYS_tgkill, 0, libc::BPF_JEQ, pid as u32, true);
        p.ret(DENY);
        p
    }
}

/// Install the filter on every thread of this process (SECCOMP_FILTER_FLAG_TSYNC: the
/// agent-watch thread runs already), its refusals logged by the kernel
/// (SECCOMP_FILTER_FLAG_LOG, Linux 4.14): a kernel without that flag answers EINVAL, and the
/// filter is installed without it, which a debug line says. Needs no privileges once
/// PR_SET_NO_NEW_PRIVS is set.
pub fn install() -> io::Result<()> {
    // SAFETY: getpid takes nothing.
    let program = Program::build(unsafe { libc::getpid() });
    let fprog = libc::sock_fprog {
        len: program.len as u16,
        filter: program.ops.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp reads one sock_fprog, which `fprog` is, and the program it points to,
    // which lives until the call returns (the kernel keeps a copy).
    let set = |flags: libc::c_ulong| unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog,
        )
    };
    let tsync = libc::SECCOMP_FILTER_FLAG_TSYNC;
    let mut done = set(tsync | libc::SECCOMP_FILTER_FLAG_LOG);
    if done == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        log::debug!(
            "the kernel logs no refusal of the worker's system calls (no SECCOMP_FILTER_FLAG_LOG)"
        );
        done = set(tsync);
    }
    match done {
        0 => Ok(()),
        tid if tid > 0 => Err(io::Error::other(format!(
            "thread {tid} could not take the filter"
        ))),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::os::fd::FromRawFd;

    /// Runs `f` in a forked child under the worker's filter (the test process keeps none);
    /// its wait status. `f` answers 0, or the number of the first check that failed.
    fn in_filtered_child(f: impl FnOnce() -> i32) -> i32 {
        let pid = fork_child(true, f);
        wait(pid, 0)
    }

    /// Forks a child that runs `f`, under the worker's filter if `filtered`, and exits with
    /// what `f` answers; 100 if the filter could not be installed, 101 if `f` panicked (the
    /// child is a copy of a test thread: unwinding out of it would end that thread, and the
    /// process with status 0).
    fn fork_child(filtered: bool, f: impl FnOnce() -> i32) -> libc::pid_t {
        // SAFETY: the child makes syscalls, builds the filter without allocating, runs `f`
        // (syscalls, and allocations: glibc's malloc is usable after fork) and exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if filtered
                    && (libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                        || super::install().is_err())
                {
                    libc::_exit(100);
                }
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                libc::_exit(code.unwrap_or(101));
            }
            pid
        }
    }

    /// `pid`'s next wait status with `options` (WUNTRACED, WCONTINUED).
    fn wait(pid: libc::pid_t, options: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes one int, which `status` is.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, options) }, pid);
        status
    }

    /// A pipe: its read and its write end, close-on-exec: a program another test starts
    /// meanwhile does not keep an end open (a fork keeps them all until it exits).
    fn pipe() -> [i32; 2] {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors, which `fds` holds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        fds
    }

    fn close(fd: i32) {
        // SAFETY: `fd` is this test's own and used no more.
        unsafe { libc::close(fd) };
    }

    /// A test whose check panics in the child fails.
    #[test]
    fn a_panic_in_the_filtered_child_is_its_failure() {
        let empty: Vec<i32> = Vec::new();
        let status = in_filtered_child(|| empty[std::hint::black_box(3)]);
        assert_eq!(exited(status), Some(101), "status {status:#x}");
    }

    /// The program has the length [`super::ROOM`] counts for it.
    #[test]
    fn the_program_fills_its_room() {
        assert_eq!(super::Program::build(1).len, super::ROOM);
    }

    fn exited(status: i32) -> Option<i32> {
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
    }

    fn signal(status: i32) -> Option<i32> {
        libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// What the worker does: its descriptors (`fds`, a pipe it has, as the worker has its
    /// socket), memory, clocks, its own limits and threads.
    fn allowed(fds: [i32; 2]) -> i32 {
        // SAFETY: plain syscalls on this child's own pipe, memory and limits.
        unsafe {
            let mut byte = [0u8];
            if libc::write(fds[1], b"x".as_ptr().cast(), 1) != 1
                || libc::read(fds[0], byte.as_mut_ptr().cast(), 1) != 1
                || byte != *b"x"
            {
                return 2;
            }
            let big = vec![7u8; 8 << 20];
            if big[(8 << 20) - 1] != 7 {
                return 3;
            }
            drop(big);
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let map = libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                rw,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if map == libc::MAP_FAILED
                || libc::mprotect(map, 4096, libc::PROT_READ) != 0
                || libc::munmap(map, 1 << 20) != 0
            {
                return 4;
            }
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) != 0 {
                return 5;
            }
            let mut cpu = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_CPU, &mut cpu) != 0 {
                return 6;
            }
            cpu.rlim_cur = cpu.rlim_max.min(1000);
            if libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0 {
                return 7;
            }
            if libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), 0) != 0 {
                return 8;
            }
            let mut poll = libc::pollfd {
                fd: fds[0],
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut poll, 1, 0) != 0 {
                return 9;
            }
            0
        }
    }

    #[test]
    fn the_worker_keeps_its_socket_memory_clocks_and_own_limits() {
        let fds = pipe();
        let status = in_filtered_child(|| allowed(fds));
        fds.into_iter().for_each(close);
        assert_eq!(exited(status), Some(0));
    }

    /// glibc's own fatal messages (a double free) reach standard error before its abort.
    #[test]
    fn glibcs_fatal_message_reaches_standard_error() {
        let [read, write] = pipe();
        // Unfiltered at first: the filter refuses `dup2`.
        let pid = fork_child(false, || {
            // SAFETY: standard error becomes the pipe in this child only; the double free is
            // what glibc catches and aborts on.
            unsafe {
                if libc::dup2(write, 2) != 2
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || super::install().is_err()
                {
                    return 100;
                }
                let p = std::hint::black_box(libc::malloc(24));
                libc::free(p);
                libc::free(std::hint::black_box(p));
            }
            0
        });
        close(write);
        let mut said = String::new();
        // SAFETY: the pipe's read end is this test's, read to its end and closed once.
        std::io::Read::read_to_string(&mut unsafe { std::fs::File::from_raw_fd(read) }, &mut said)
            .unwrap();
        let status = wait(pid, 0);
        assert_eq!(signal(status), Some(libc::SIGABRT), "status {status:#x}");
        assert!(said.contains("double free"), "{said:?}");
    }

    /// A `poll` stopped and continued (SIGSTOP, a cgroup freeze) goes on through
    /// `restart_syscall` and sees what arrives after.
    #[test]
    fn a_stopped_and_continued_poll_goes_on() {
        let [ready, ready_w] = pipe();
        let [wake, wake_w] = pipe();
        let pid = fork_child(true, || {
            let mut fd = libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: write reads one byte; poll reads and writes one pollfd, which `fd` is.
            unsafe {
                libc::write(ready_w, b"x".as_ptr().cast(), 1);
                match libc::poll(&mut fd, 1, -1) {
                    1 => 0,
                    _ => errno(),
                }
            }
        });
        close(ready_w);
        let mut byte = [0u8];
        // SAFETY: read writes one byte, which `byte` is.
        assert_eq!(unsafe { libc::read(ready, byte.as_mut_ptr().cast(), 1) }, 1);
        let polls = [
            #[cfg(not(target_arch = "aarch64"))]
            libc::SYS_poll,
            libc::SYS_ppoll,
        ]
        .map(|nr| nr.to_string());
        let in_poll = || {
            let now = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap();
            polls.iter().any(|nr| now.split(' ').next() == Some(nr))
        };
        while !in_poll() {
            std::thread::yield_now();
        }
        // SAFETY: kill signals this test's own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert!(libc::WIFSTOPPED(wait(pid, libc::WUNTRACED)));
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        assert!(libc::WIFCONTINUED(wait(pid, libc::WCONTINUED)));
        // SAFETY: write reads one byte.
        assert_eq!(unsafe { libc::write(wake_w, b"x".as_ptr().cast(), 1) }, 1);
        let status = wait(pid, 0);
        [ready, wake, wake_w].into_iter().for_each(close);
        assert_eq!(exited(status), Some(0), "0, or poll's errno");
    }

    /// Plain futex operations work; the priority-inheriting ones are refused.
    #[test]
    fn priority_inheriting_futexes_are_refused() {
        let status = in_filtered_child(|| {
            let word = std::sync::atomic::AtomicU32::new(0);
            let futex = |op: i32| {
                // SAFETY: the futex calls read and write `word` only; the timeouts are null.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        word.as_ptr(),
                        op | libc::FUTEX_PRIVATE_FLAG,
                        1,
                        std::ptr::null::<libc::timespec>(),
                        word.as_ptr(),
                        0,
                    )
                }
            };
            if futex(libc::FUTEX_WAKE) != 0
                || futex(libc::FUTEX_WAIT) != -1
                || errno() != libc::EAGAIN
            {
                return 1;
            }
            for (i, op) in [
                libc::FUTEX_LOCK_PI,
                libc::FUTEX_LOCK_PI2,
                libc::FUTEX_UNLOCK_PI,
                libc::FUTEX_TRYLOCK_PI,
                libc::FUTEX_WAIT_REQUEUE_PI,
                libc::FUTEX_CMP_REQUEUE_PI,
            ]
            .into_iter()
            .enumerate()
            {
                if futex(op) != -1 || errno() != libc::EPERM {
                    return 2 + i as i32;
                }
            }
            0
        });
        assert_eq!(
            exited(status),
            Some(0),
            "0, or 2 + the PI operation allowed"
        );
    }

    /// The agent-watch thread's `poll` failing for good (EFAULT) ends the worker rather
    /// than spinning until its CPU limit (here 1 s: SIGXCPU).
    #[test]
    fn a_watch_whose_poll_fails_ends_the_worker() {
        let status = in_filtered_child(|| {
            let second = libc::rlimit {
                rlim_cur: 1,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit reads one rlimit; the pollfd pointer is invalid on purpose.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CPU, &second);
                crate::js::worker::watch_for_the_end(std::ptr::dangling_mut())
            }
        });
        assert_eq!(exited(status), Some(1), "status {status:#x}");
    }

    /// Files, paths, processes, other processes' signals and limits, executable memory and
    /// the kernel's riskier interfaces: all fail, the worker goes on.
    fn refused() -> i32 {
        let existing: &CStr = c"/proc/self/status";
        // i64: a call's `c_int` or `c_long` (which is 32 bits on 32-bit ARM).
        fn fails_with(result: impl Into<i64>, expected: i32) -> bool {
            result.into() == -1 && errno() == expected
        }
        // SAFETY: syscalls that the filter refuses (had it not, their effects stay in this
        // child: a fork's child exits at once; the file unlinked is this test's own).
        unsafe {
            if !fails_with(libc::open(existing.as_ptr(), libc::O_RDONLY), libc::ENOSYS)
                || !fails_with(
                    libc::openat(libc::AT_FDCWD, existing.as_ptr(), libc::O_RDONLY),
                    libc::ENOSYS,
                )
            {
                return 1;
            }
            let parent = libc::getppid();
            if !fails_with(libc::kill(parent, 0), libc::ENOSYS)
                || !fails_with(
                    libc::syscall(libc::SYS_tgkill, parent, parent, 0),
                    libc::EPERM,
                )
            {
                return 2;
            }
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if !fails_with(
                libc::prlimit(parent, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit),
                libc::EPERM,
            ) {
                return 3;
            }
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            if pid != -1 || errno() != libc::ENOSYS {
                return 4;
            }
            if !fails_with(libc::syscall(libc::SYS_clone3, 0, 0), libc::ENOSYS) {
                return 5;
            }
            let map = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if map != libc::MAP_FAILED || errno() != libc::EPERM {
                return 6;
            }
            for nr in [
                libc::SYS_io_uring_setup,
                libc::SYS_bpf,
                libc::SYS_userfaultfd,
                libc::SYS_perf_event_open,
                libc::SYS_keyctl,
                libc::SYS_unlinkat,
                libc::SYS_renameat2,
                libc::SYS_mkdirat,
                libc::SYS_fchmodat,
                libc::SYS_truncate,
                libc::SYS_close,
            ] {
                if !fails_with(libc::syscall(nr, 0, 0, 0, 0, 0), libc::ENOSYS) {
                    return 7;
                }
            }
            0
        }
    }

    #[test]
    fn files_processes_and_other_processes_are_out_of_reach() {
        assert_eq!(exited(in_filtered_child(refused)), Some(0));
    }

    /// An existing file the child tries to unlink by its path: it stays.
    #[test]
    fn a_path_cannot_be_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        let status = in_filtered_child(|| {
            // SAFETY: unlink reads one C string, which `path` is.
            let r = unsafe { libc::unlink(path.as_ptr()) };
            i32::from(!(r == -1 && errno() == libc::ENOSYS))
        });
        assert_eq!(exited(status), Some(0));
        assert!(file.exists());
    }

    /// Calls only an attacker makes end the process (SIGSYS).
    #[test]
    fn a_new_program_a_socket_or_ptrace_ends_it() {
        let attempts: [(&str, fn()); 3] = [
            ("execve", || {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                // SAFETY: execve reads a C string and a null-terminated list of them.
                unsafe { libc::execv(argv[0], argv.as_ptr()) };
            }),
            ("socket", || {
                // SAFETY: socket takes plain integers.
                unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            }),
            ("ptrace", || {
                // SAFETY: ptrace(PTRACE_ATTACH) takes the parent's pid and no pointers.
                unsafe {
                    libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0);
                }
            }),
        ];
        for (name, attempt) in attempts {
            let status = in_filtered_child(|| {
                attempt();
                0
            });
            assert_eq!(
                signal(status),
                Some(libc::SIGSYS),
                "{name}: status {status:#x}"
            );
        }
    }

    /// A call of another ABI than the build's ends it: the i386 one (`int 0x80`, getpid)
    /// and x32's (the x86-64 number with bit 30 set). A kernel without IA32 emulation
    /// (`CONFIG_IA32_EMULATION=n`, `ia32_emulation=0`) ends `int 0x80` by SIGSEGV before the
    /// filter sees it: the same call unfiltered tells which kernel this is.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn another_abis_call_ends_it() {
        let i386_getpid = || {
            let nr: i64 = 20;
            // SAFETY: i386's getpid takes no argument and changes nothing.
            unsafe { std::arch::asm!("int 0x80", inout("rax") nr => _) };
            0
        };
        let unfiltered = wait(fork_child(false, i386_getpid), 0);
        let i386 = in_filtered_child(i386_getpid);
        match exited(unfiltered) {
            Some(0) => assert_eq!(
                signal(i386),
                Some(libc::SIGSYS),
                "i386 with IA32 emulation: status {i386:#x}"
            ),
            _ => {
                assert_eq!(
                    signal(unfiltered),
                    Some(libc::SIGSEGV),
                    "i386 unfiltered: status {unfiltered:#x}"
                );
                assert_eq!(
                    signal(i386),
                    Some(libc::SIGSEGV),
                    "i386 without IA32 emulation: status {i386:#x}"
                );
            }
        }
        let x32 = in_filtered_child(|| {
            // SAFETY: getpid takes no argument.
            unsafe { libc::syscall(libc::SYS_getpid | 0x4000_0000) };
            0
        });
        assert_eq!(signal(x32), Some(libc::SIGSYS), "x32: status {x32:#x}");
    }

    /// `abort` (a panic in the worker, a QuickJS assert) still ends it by SIGABRT, which
    /// the agent reports as such.
    #[test]
    fn abort_still_ends_it_by_sigabrt() {
        let status = in_filtered_child(|| std::process::abort());
        assert_eq!(signal(status), Some(libc::SIGABRT), "status {status:#x}");
    }
}
