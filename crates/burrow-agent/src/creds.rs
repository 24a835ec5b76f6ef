//! File operations with the requesting user's permissions.
//!
//! The agent is root in the sandbox, but `/files` and `filesystem.Filesystem` act for a user:
//! [`as_user`] runs an operation with that user's filesystem ids and supplementary groups, so
//! the kernel checks the user's permissions and new files and directories belong to the user.
//! Only the calling *thread* changes: the raw `setfsuid`/`setfsgid`/`setgroups` syscalls are
//! per-thread on Linux (glibc's `setgroups()` wrapper would broadcast to every thread; rustix's
//! `set_thread_groups` does not). A non-zero fsuid drops the filesystem capabilities
//! (`DAC_OVERRIDE`, `FOWNER`, `CHOWN`, …) from the thread's effective set; going back to fsuid 0
//! restores them from the permitted set.

use std::io;

use rustix::process::Gid;

use crate::users::User;

/// Runs `op` on this thread with `user`'s filesystem credentials, then restores the thread's
/// own. Root (uid 0) runs `op` unchanged. Must not be held across an `.await`: call it from a
/// blocking thread, or from synchronous code that does not yield.
pub fn as_user<T>(user: &User, op: impl FnOnce() -> T) -> io::Result<T> {
    if user.uid == 0 {
        return Ok(op());
    }
    let guard = FsCredsGuard::switch_to(user)?;
    let out = op();
    drop(guard);
    Ok(out)
}

/// The thread's filesystem credentials before a switch; dropping it (also while a panic
/// unwinds) restores them, and aborts the agent if that fails, so no thread can go on with a
/// user's credentials.
struct FsCredsGuard {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<Gid>,
}

/// `setfsuid`/`setfsgid` with an invalid id change nothing and return the current id.
const QUERY: u32 = u32::MAX;

fn setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes an integer and only changes this thread's credentials.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid as libc::c_long) as u32 }
}

fn setfsgid(gid: u32) -> u32 {
    // SAFETY: setfsgid takes an integer and only changes this thread's credentials.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid as libc::c_long) as u32 }
}

fn denied(what: &str) -> io::Error {
    io::Error::other(format!("cannot switch to the user's credentials: {what}"))
}

impl FsCredsGuard {
    fn switch_to(user: &User) -> io::Result<Self> {
        let guard = Self {
            fsuid: setfsuid(QUERY),
            fsgid: setfsgid(QUERY),
            groups: rustix::process::getgroups()?,
        };
        // From here on, Drop undoes whatever part of the switch happened.
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        rustix::thread::set_thread_groups(&groups)?;
        setfsgid(user.gid);
        if setfsgid(QUERY) != user.gid {
            return Err(denied("setfsgid"));
        }
        setfsuid(user.uid);
        if setfsuid(QUERY) != user.uid {
            return Err(denied("setfsuid"));
        }
        Ok(guard)
    }
}

impl Drop for FsCredsGuard {
    fn drop(&mut self) {
        // fsuid first: back at 0 it restores the capabilities the other two calls need.
        setfsuid(self.fsuid);
        setfsgid(self.fsgid);
        let groups_restored = rustix::thread::set_thread_groups(&self.groups).is_ok();
        let restored =
            setfsuid(QUERY) == self.fsuid && setfsgid(QUERY) == self.fsgid && groups_restored;
        if !restored {
            eprintln!("burrow-agent: cannot restore a thread's filesystem credentials; aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::process::Uid;

    fn current_fsuid() -> Uid {
        Uid::from_raw(setfsuid(QUERY))
    }

    /// Needs root (the agent's own situation): runs as a throwaway uid on a fresh thread.
    #[test]
    fn switches_and_restores_this_thread_only() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        std::thread::spawn(|| {
            let user = User {
                name: "nobody-test".into(),
                uid: 64_999,
                gid: 64_999,
                home: "/".into(),
                groups: vec![64_999],
            };
            let other = std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                current_fsuid().as_raw()
            });
            let inside = as_user(&user, || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                (
                    current_fsuid().as_raw(),
                    rustix::process::getgroups().unwrap(),
                )
            })
            .unwrap();
            assert_eq!(inside.0, 64_999);
            assert_eq!(inside.1, vec![Gid::from_raw(64_999)]);
            assert_eq!(other.join().unwrap(), 0, "another thread was switched too");
            assert_eq!(current_fsuid().as_raw(), 0);
            // A panic inside the operation still restores the credentials.
            let caught = std::panic::catch_unwind(|| as_user(&user, || panic!("boom")));
            assert!(caught.is_err());
            assert_eq!(current_fsuid().as_raw(), 0);
        })
        .join()
        .unwrap();
    }
}
