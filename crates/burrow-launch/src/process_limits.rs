//! Per-process limits the launcher gives the sandbox before it forks anything of it, so that
//! every sandbox process inherits them: resource limits of the sandbox's own (not the daemon's,
//! which may have been raised for the server) and an OOM score that keeps init and the agent
//! alive when the sandbox runs out of memory.

use crate::sys::{LaunchError, Result};

/// `RLIMIT_NOFILE` soft limit: the kernel's and systemd's default, what `select()` users expect.
pub const NOFILE_SOFT: u64 = 1024;
/// `RLIMIT_NOFILE` hard limit: systemd's and containerd's default (a program that needs more
/// descriptors raises its soft limit up to this, as Go and Node do at start).
pub const NOFILE_HARD: u64 = 524_288;
const MIB: u64 = 1024 * 1024;

/// Resource limits of every sandbox process, (resource, soft, hard). The rest (stack, cpu,
/// data, ...) stay as the kernel sets them: unlimited or sized by the memory cgroup anyway.
const SANDBOX_RLIMITS: [(libc::__rlimit_resource_t, u64, u64); 5] = [
    (libc::RLIMIT_NOFILE, NOFILE_SOFT, NOFILE_HARD),
    // The kernel's default; locked pages are charged to the sandbox's memory cgroup too.
    (libc::RLIMIT_MEMLOCK, 8 * MIB, 8 * MIB),
    // No real-time scheduling and no raised priority, whatever the daemon was allowed.
    (libc::RLIMIT_RTPRIO, 0, 0),
    (libc::RLIMIT_NICE, 0, 0),
    // No core files by default (a process may raise it for debugging).
    (libc::RLIMIT_CORE, 0, libc::RLIM_INFINITY),
];

/// Sets [`SANDBOX_RLIMITS`] on the calling process. Raising a hard limit needs
/// CAP_SYS_RESOURCE; without it (a host root that lacks it) a hard limit stays at the
/// launcher's, and the soft limit goes no higher: lower is only safer.
pub fn set_sandbox_rlimits() -> Result<()> {
    for (resource, soft, hard) in SANDBOX_RLIMITS {
        let mut limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `limit` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            continue;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EPERM) {
            return Err(LaunchError(format!(
                "setrlimit({resource}, {soft}, {hard}): {error}"
            )));
        }
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `current` is a valid out-pointer.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            return Err(LaunchError::os(format!("getrlimit({resource})")));
        }
        limit.rlim_max = hard.min(current.rlim_max);
        limit.rlim_cur = soft.min(limit.rlim_max);
        // SAFETY: as above.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(LaunchError::os(format!(
                "setrlimit({resource}, {}, {})",
                limit.rlim_cur, limit.rlim_max
            )));
        }
    }
    Ok(())
}

/// Makes the calling process (and what it forks: helper A, init, the agent) exempt from the
/// OOM killer (`oom_score_adj` -1000) while its *minimum* stays 0, so a sandbox process can
/// raise its score but never lower it below 0 again: the agent resets the processes it starts
/// to 0, and they cannot make themselves unkillable.
///
/// Writing `oom_score_adj` with CAP_SYS_RESOURCE would also set the minimum to the value
/// written (inherited by every descendant); the legacy `oom_adj` file does not touch the
/// minimum (-17 there is -1000 in `oom_score_adj`). So: 0 through `oom_score_adj` (minimum 0,
/// whatever the daemon's was), then -17 through `oom_adj`.
///
/// Both need CAP_SYS_RESOURCE: a host root without it gets an error here, and its sandboxes
/// run unshielded (the runtime logs it).
pub fn shield_from_oom(pid: &str) -> Result<()> {
    write_proc(pid, "oom_score_adj", "0")?;
    write_proc(pid, "oom_adj", "-17")
}

fn write_proc(pid: &str, file: &str, value: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, value).map_err(|e| LaunchError(format!("write {value} to {path}: {e}")))
}

/// Whether [`shield_from_oom`] took effect on `pid` (`oom_score_adj` is -1000).
pub fn is_shielded_from_oom(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).is_ok_and(|v| v.trim() == "-1000")
}
