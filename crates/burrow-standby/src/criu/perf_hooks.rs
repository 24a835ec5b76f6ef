//! Keeps the kernel's perf scheduling hooks switched on while burrow can restore.
//!
//! At the end of a restore CRIU stops every restored task on a hardware breakpoint (ptrace sets a
//! debug register, which the kernel backs with a per-task perf event). The first per-task perf
//! event on a host switches the perf scheduling hooks on, and that waits for an RCU grace period
//! (`account_event` → `synchronize_rcu`, ~10 ms here); the hooks go off again one second after the
//! last such event is gone. So every restore that came after a quiet second paid the grace period
//! once per restored process tree — measured: a sandbox woken 2 s after its checkpoint took
//! 34 ms instead of 23. Holding one disabled per-task dummy event open for the life of the daemon
//! keeps the hooks on; the cost is a cheap check on every context switch of the host.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// `PERF_TYPE_SOFTWARE`.
const TYPE_SOFTWARE: u32 = 1;
/// `PERF_COUNT_SW_DUMMY`: counts nothing.
const COUNT_SW_DUMMY: u64 = 9;
/// `PERF_ATTR_SIZE_VER0`: the first 64 bytes of `struct perf_event_attr` are all we set.
const ATTR_SIZE_VER0: u32 = 64;
/// `disabled`, bit 0 of the flags word.
const FLAG_DISABLED: u64 = 1;
/// `PERF_FLAG_FD_CLOEXEC`.
const FLAG_FD_CLOEXEC: libc::c_ulong = 8;

static HOLD: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Opens the event once per process (later calls do nothing). Without perf events (a kernel
/// without them, a seccomp policy, `perf_event_paranoid` for a non-root caller) restores still
/// work, only slower after a quiet second: logged, not an error.
pub fn hold_perf_sched_hooks() {
    HOLD.get_or_init(|| match open_dummy_task_event() {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::info!(
                "cannot hold a perf event open ({e}): restores after a quiet second wait for an RCU grace period"
            );
            None
        }
    });
}

/// A disabled dummy software event on the calling process (a per-task event, which is what
/// keeps the hooks on), for any CPU.
fn open_dummy_task_event() -> std::io::Result<OwnedFd> {
    // struct perf_event_attr, version 0, as 8 little words: type | size << 32, config,
    // sample_period, sample_type, read_format, flags, wakeup_events | bp_type << 32, bp_addr.
    let mut attr = [0u64; 8];
    attr[0] = u64::from(TYPE_SOFTWARE) | (u64::from(ATTR_SIZE_VER0) << 32);
    attr[1] = COUNT_SW_DUMMY;
    attr[5] = FLAG_DISABLED;
    // SAFETY: perf_event_open reads `size` (64) bytes of `attr`, which lives across the call; the
    // other arguments are plain integers (pid 0 = this process, cpu -1 = any, no group).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_event_opens_as_root() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED: needs root");
            return;
        }
        let fd = open_dummy_task_event().expect("perf_event_open of a dummy task event");
        // The fd is a perf event (its /proc link names the anon inode).
        let link = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap();
        assert_eq!(link.to_string_lossy(), "anon_inode:[perf_event]");
    }
}
