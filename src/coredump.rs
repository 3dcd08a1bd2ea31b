//! No core dumps: a dump of the agent would hold the connection string, the MQTT password
//! and the session keys in clear, written wherever the system's core pattern says.

/// Set the core size limit to 0 and mark the process not dumpable (which also keeps other
/// processes of the same user from reading its memory through `/proc` or ptrace). The unit
/// says `LimitCORE=0` too; this covers runs outside systemd.
pub fn disable() -> std::io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid pointer and constant arguments.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &zero) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// In a child process of its own, so the test process keeps its settings.
    #[test]
    fn the_process_ends_up_without_core_dumps() {
        // SAFETY: the child only makes syscalls and exits; no locks or allocation.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let ok = super::disable().is_ok();
                let mut core = libc::rlimit {
                    rlim_cur: 1,
                    rlim_max: 1,
                };
                let limited = libc::getrlimit(libc::RLIMIT_CORE, &mut core) == 0
                    && core.rlim_cur == 0
                    && core.rlim_max == 0;
                let dumpable = libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0);
                libc::_exit(if ok && limited && dumpable == 0 { 0 } else { 1 });
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
    }
}
