//! A deep-standby sandbox's root, mounted ahead of its restore: right after the dump, the
//! launcher (`--detach-root`) mounts the root as for a restore, but in a private mount
//! namespace of its own, and hands it over as a *detached* mount tree (an `open_tree` clone),
//! which the runtime takes with `pidfd_getfd` and keeps as one fd per sandbox. A restore then
//! attaches that tree in the criu worker's mount namespace (`move_mount`, ~0.1 ms) instead of
//! running the launcher (2.7-6 ms: exec, a helper user namespace, the overlay mount).
//!
//! What it holds: the staging tmpfs, the idmapped layers, the overlay (which keeps its upper
//! dir marked in use) and the agent/launcher binds, a few KiB of kernel memory and no process.
//! Not persistent: after a daemon restart a restore mounts the root the slow way.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use burrow_launch::{LaunchReport, LaunchSpec};

use crate::error::RuntimeError;

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// How long the launcher may take to mount the root (normally ~5 ms).
const HOLD_TIMEOUT: Duration = Duration::from_secs(10);

/// A detached mount tree rooted at the sandbox's staging tmpfs (`<rootfs_dir>`, the overlay at
/// `<rootfs_dir>/root`); unmounted when dropped.
#[derive(Debug)]
pub struct HeldRoot(OwnedFd);

impl HeldRoot {
    /// Runs `launcher --detach-root` for `spec` and takes the tree over. Blocking.
    pub fn mount(launcher: &Path, spec: &LaunchSpec) -> Result<Self, RuntimeError> {
        let launch_err = |what: String| RuntimeError::Launch(format!("holding the root: {what}"));
        let mut line =
            serde_json::to_vec(spec).map_err(|e| launch_err(format!("encode spec: {e}")))?;
        line.push(b'\n');
        let mut child = Command::new(launcher)
            .arg("--detach-root")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| launch_err(format!("cannot run {launcher:?} --detach-root: {e}")))?;
        // A launcher that does not answer in time is killed (its read end then sees EOF).
        let (answered, watch) = std::sync::mpsc::channel::<()>();
        let pid = child.id() as libc::pid_t;
        let watchdog = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = watch.recv_timeout(HOLD_TIMEOUT) {
                // SAFETY: kill on our own child, not yet reaped (so the pid is still its).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        // The launcher stays until its stdin closes: the fd must still be there to be taken.
        let taken = (|| {
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| launch_err("no stdin".into()))?;
            stdin
                .write_all(&line)
                .map_err(|e| launch_err(format!("write spec to launcher: {e}")))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| launch_err("no stdout".into()))?;
            let mut answer = String::new();
            BufReader::new(stdout)
                .read_line(&mut answer)
                .map_err(|e| launch_err(format!("read launcher's report: {e}")))?;
            let report: LaunchReport = serde_json::from_str(answer.trim())
                .map_err(|e| launch_err(format!("launcher answered {answer:?}: {e}")))?;
            match (report.ok, report.tree_fd) {
                (true, Some(fd)) => take_fd(child.id(), fd).map_err(|e| {
                    launch_err(format!("pidfd_getfd of the launcher's tree fd {fd}: {e}"))
                }),
                _ => Err(launch_err(report.error.unwrap_or_else(|| answer.clone()))),
            }
        })();
        drop(answered);
        let _ = watchdog.join();
        // Closing stdin (dropped above, or now) lets the launcher exit.
        drop(child.stdin.take());
        let _ = child.wait();
        taken.map(Self)
    }

    /// Attaches the tree at `target` (a directory) in the calling thread's mount namespace.
    pub(super) fn attach(self, target: &std::ffi::CStr) -> std::io::Result<()> {
        // SAFETY: a detached mount fd, an empty path with MOVE_MOUNT_F_EMPTY_PATH, a
        // NUL-terminated target path.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                self.0.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A duplicate of fd number `fd` of process `pid` (our child).
fn take_fd(pid: u32, fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a fresh descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd with a valid pidfd, a target fd number and no flags.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pidfd_getfd returned a fresh (close-on-exec) descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            id: "held1".into(),
            layers: vec!["/t/l0".into()],
            upper_dir: "/d/upper".into(),
            work_dir: "/d/work".into(),
            rootfs_dir: "/d/rootfs".into(),
            uid_base: 0x1001_0000,
            netns_path: "/run/netns/burrow-0".into(),
            cgroup_procs: Vec::new(),
            agent_path: "/usr/bin/agent".into(),
            agent_env: Default::default(),
            nameservers: Vec::new(),
            agent_log: None,
            ready_timeout_ms: None,
            own_netns: None,
            ca_bundle: None,
            launcher_path: None,
        }
    }

    /// A stand-in launcher: a shell script.
    fn launcher(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("launcher");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_refusal_is_an_error_with_the_launchers_words() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"read spec; echo '{"ok":false,"error":"no overlay today"}'; cat >/dev/null"#;
        let err = HeldRoot::mount(&launcher(dir.path(), script), &spec()).unwrap_err();
        assert!(err.to_string().contains("no overlay today"), "{err}");
    }

    #[test]
    fn a_success_without_a_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let script = r#"read spec; echo '{"ok":true}'; cat >/dev/null"#;
        assert!(HeldRoot::mount(&launcher(dir.path(), script), &spec()).is_err());
    }

    /// E.g. a launcher that reads its spec to EOF (one from before `--detach-root`): the hold
    /// gives up after HOLD_TIMEOUT instead of blocking the dump forever.
    #[test]
    fn a_launcher_that_never_answers_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = HeldRoot::mount(&launcher(dir.path(), "cat >/dev/null"), &spec()).unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= HOLD_TIMEOUT && took < HOLD_TIMEOUT * 2,
            "took {took:?}: {err}"
        );
    }
}
