//! The codec worker's system-call allowlist (seccomp-BPF), installed once its set-up is done
//! ([`super::worker`]): what a QuickJS escape in a vendor codec can then do is read and write
//! the descriptors the worker has (its socket, `/dev/null`, the agent's standard error),
//! manage its own memory, read clocks, wait on its own futexes and the socket, lower its
//! own limits, signal its own threads (`abort`) and exit. It cannot open a file (the Event
//! Hubs connection string), a socket, create a process, signal or trace another one, nor
//! touch a path or use io_uring, bpf, userfaultfd, perf or keys; nor make memory executable.
//!
//! The list comes from `strace -f` of the worker under the library's and `js_isolation`'s
//! JavaScript tests on x86-64 (loads, decodes, throws, out of memory, deadlines, large
//! answers), from its first request on, plus the paths those tests do not reach: the CPU
//! backstop's move (`setrlimit`/`prlimit64`), a log line (`write` to standard error) and
//! `abort` (a panic, a QuickJS assert: `rt_sigprocmask`, `rt_sigaction`, `tgkill`). Names
//! that differ on aarch64 and 32-bit ARM are mapped by hand: those lists are only
//! compile-checked.
//!
//! What is not listed fails with ENOSYS rather than killing the worker: glibc falls back to
//! an older call on ENOSYS (the 32-bit time calls on ARM, `clone` for `clone3`), and its
//! `malloc` opens `/proc/sys/vm/overcommit_memory` when it gives memory back and goes on
//! without it, so a call missed on an architecture that was not traced costs an error, not
//! every decode. Calls no worker ever makes and only an attacker would (a new program,
//! `ptrace`, a socket, `fork`) end it at once (SIGSYS): the agent reports the call as
//! `js_crashed` with the signal, and the attacker gets no second try in that process. A
//! system call of another ABI (i386 or x32 on x86-64, AArch32 on aarch64) ends it too: the
//! numbers below only mean what they say for the build's own.

use std::io;

use libc::{c_long, sock_filter};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
compile_error!("the codec worker's system-call allowlist knows x86_64, aarch64 and arm only");

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
/// in the agent-watch thread); memory (`malloc`, QuickJS's heap); `futex` and `sched_yield`
/// (locks, the start-up channel); clocks (`clock_gettime` for the CPU limits, `gettimeofday`
/// for `Date` where the vDSO does not answer); `getrandom` (the worker's `HashMap` keys);
/// `abort`'s signal mask and handler; a thread's signal stack, given up at its end; its own
/// limits; the exits. `mmap`, `mprotect`, `prlimit64` and `tgkill` are allowed below with
/// checks.
const ALLOWED: &[c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_ppoll,
    libc::SYS_futex,
    libc::SYS_sched_yield,
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
    #[cfg(target_arch = "arm")]
    arm::SYS_FUTEX_TIME64,
];

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

/// Room for the program: each list's entries take two or five instructions.
const ROOM: usize = 128;

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
        // Its own limits only (pid 0): another process of the same user's are within reach
        // of prlimit64 without privileges (the agent's). The kernel reads a pid as 32 bits.
        p.on_arg(libc::SYS_prlimit64, 0, libc::BPF_JEQ, 0, true);
        p.on_arg(libc::SYS_tgkill, 0, libc::BPF_JEQ, pid as u32, true);
        p.ret(DENY);
        p
    }
}

/// Install the filter on every thread of this process (SECCOMP_FILTER_FLAG_TSYNC: the
/// agent-watch thread runs already). Needs no privileges once PR_SET_NO_NEW_PRIVS is set.
pub fn install() -> io::Result<()> {
    // SAFETY: getpid takes nothing.
    let program = Program::build(unsafe { libc::getpid() });
    let fprog = libc::sock_fprog {
        len: program.len as u16,
        filter: program.ops.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp reads one sock_fprog, which `fprog` is, and the program it points to,
    // which lives until the call returns (the kernel keeps a copy).
    let done = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &fprog,
        )
    };
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

    /// Runs `f` in a forked child under the worker's filter (the test process keeps none);
    /// its wait status. `f` answers 0, or the number of the first check that failed.
    fn in_filtered_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child makes syscalls, builds the filter without allocating, runs `f`
        // (syscalls, and one allocation: glibc's malloc is usable after fork) and exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || super::install().is_err()
                {
                    libc::_exit(100);
                }
                libc::_exit(f());
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
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
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors, which `fds` holds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let status = in_filtered_child(|| allowed(fds));
        for fd in fds {
            // SAFETY: the pipe's descriptors are this test's, used no more.
            unsafe { libc::close(fd) };
        }
        assert_eq!(exited(status), Some(0));
    }

    /// Files, paths, processes, other processes' signals and limits, executable memory and
    /// the kernel's riskier interfaces: all fail, the worker goes on.
    fn refused() -> i32 {
        let existing: &CStr = c"/proc/self/status";
        let refused = |result: libc::c_long, expected: i32| result == -1 && errno() == expected;
        // SAFETY: syscalls that the filter refuses (had it not, their effects stay in this
        // child: a fork's child exits at once; the file unlinked is this test's own).
        unsafe {
            if !refused(
                libc::open(existing.as_ptr(), libc::O_RDONLY).into(),
                libc::ENOSYS,
            ) || !refused(
                libc::openat(libc::AT_FDCWD, existing.as_ptr(), libc::O_RDONLY).into(),
                libc::ENOSYS,
            ) {
                return 1;
            }
            let parent = libc::getppid();
            if !refused(libc::kill(parent, 0).into(), libc::ENOSYS)
                || !refused(
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
            if !refused(
                libc::prlimit(parent, libc::RLIMIT_NOFILE, std::ptr::null(), &mut limit).into(),
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
            if !refused(libc::syscall(libc::SYS_clone3, 0, 0), libc::ENOSYS) {
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
                if !refused(libc::syscall(nr, 0, 0, 0, 0, 0), libc::ENOSYS) {
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
    /// and x32's (the x86-64 number with bit 30 set).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn another_abis_call_ends_it() {
        let i386 = in_filtered_child(|| {
            let nr: i64 = 20;
            // SAFETY: i386's getpid takes no argument and changes nothing.
            unsafe { std::arch::asm!("int 0x80", inout("rax") nr => _) };
            0
        });
        assert_eq!(signal(i386), Some(libc::SIGSYS), "i386: status {i386:#x}");
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
