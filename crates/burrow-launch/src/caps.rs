//! Capability bounding set of the sandbox: Docker's default set, so root inside (and `sudo`)
//! can do ordinary administration but nothing Docker would refuse a container.

use crate::sys::{LaunchError, Result};

/// Docker's default capabilities (capability numbers from linux/capability.h).
pub const KEPT: &[(u32, &str)] = &[
    (0, "CHOWN"),
    (1, "DAC_OVERRIDE"),
    (3, "FOWNER"),
    (4, "FSETID"),
    (5, "KILL"),
    (6, "SETGID"),
    (7, "SETUID"),
    (8, "SETPCAP"),
    (10, "NET_BIND_SERVICE"),
    (13, "NET_RAW"),
    (18, "SYS_CHROOT"),
    (27, "MKNOD"),
    (29, "AUDIT_WRITE"),
    (31, "SETFCAP"),
];

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// A capability only the sandbox's init holds (on top of [`KEPT`]); init drops it from the
/// bounding set of every child before its exec. ptrace (and reading `/proc/1/mem`, `environ`,
/// `fd/`) needs the tracer to hold every capability of the target's permitted set or
/// CAP_SYS_PTRACE, so no other sandbox process can ptrace init, while init stays dumpable
/// for CRIU. WAKE_ALARM because it grants nothing in a user namespace (the kernel checks it
/// in the initial one only).
pub const INIT_ONLY: (u32, &str) = (35, "WAKE_ALARM");

/// Drops every capability not in [`KEPT`] (nor [`INIT_ONLY`]) from the bounding set and
/// clears the ambient set. Must run before /proc disappears from view (reads cap_last_cap)
/// or falls back to 63.
pub fn restrict_bounding_set() -> Result<()> {
    let last = last_cap();
    for cap in 0..=last {
        if KEPT.iter().any(|(c, _)| *c == cap) || cap == INIT_ONLY.0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: the kernel does not know this capability; nothing to drop.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(LaunchError(format!(
                    "drop capability {cap} from the bounding set: {err}"
                )));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// In a child of init before its exec: gives up [`INIT_ONLY`] for good (bounding set), so
/// nothing but init holds it. Async-signal-safe (one prctl); an error (EINVAL: a kernel
/// without it) leaves nothing to drop.
pub fn drop_init_only() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, INIT_ONLY.0 as libc::c_ulong, 0, 0, 0) };
}
