//! Starting a user process (as the selected user, in its own session/process group)
//! and the tasks that pump its output and wait for its exit.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use burrow_envd::ConnectError;
use burrow_envd::proto::process::{DataEvent, EndEvent, ProcessConfig, ProcessEvent};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::pty::{PtyMaster, open_pty};
use super::{Fanout, OUTPUT_DRAIN_GRACE, ProcessHandle, ProcessTable, Subscription, status};
use crate::users::User;

const READ_CHUNK: usize = 32 * 1024;

pub struct SpawnSpec {
    pub config: ProcessConfig,
    pub tag: Option<String>,
    pub pty_size: Option<(u16, u16)>,
    pub stdin: bool,
    pub user: User,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Connect-Timeout-Ms: the process is killed at this instant.
    pub deadline: Option<Instant>,
}

/// OOM score of every process the agent starts. Above init's and the agent's own (-1000 where
/// the host could exempt them, else 0), so the sandbox's OOM killer takes a command first, even
/// thousands of tiny ones; host-wide, sandbox commands go before host services (score 0).
/// Raising a score needs no privilege, so this holds on hosts whose root lacks
/// CAP_SYS_RESOURCE too. A command may lower its own score back to the minimum, 0 (never
/// below: burrow-launch's process_limits): that only ever exposes its own sandbox's init.
pub const COMMAND_OOM_SCORE_ADJ: &[u8] = b"500";

/// In a freshly forked child (before exec, still root): gives up the agent's standing with the
/// sandbox's OOM killer for [`COMMAND_OOM_SCORE_ADJ`].
fn reset_oom_score() -> std::io::Result<()> {
    // SAFETY: open/write/close of a NUL-terminated literal path and a static buffer; all
    // async-signal-safe.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let len = COMMAND_OOM_SCORE_ADJ.len();
        let written = libc::write(fd, COMMAND_OOM_SCORE_ADJ.as_ptr().cast(), len);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != len as isize {
            return Err(error);
        }
    }
    Ok(())
}

/// The soft `RLIMIT_NOFILE` the agent found at start, which the processes it starts get back
/// (the agent raises its own, see [`raise_nofile_soft_limit`]).
static INHERITED_NOFILE_SOFT: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(libc::RLIM_INFINITY);

/// Raises the agent's soft `RLIMIT_NOFILE` to its hard limit (many concurrent streams, PTYs and
/// watches), remembering the soft limit for the processes it starts. Best effort.
pub fn raise_nofile_soft_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    INHERITED_NOFILE_SOFT.store(limit.rlim_cur, std::sync::atomic::Ordering::Relaxed);
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
}

/// In a freshly forked child: the soft `RLIMIT_NOFILE` the agent was started with (a no-op if
/// it never raised its own). Async-signal-safe.
fn restore_nofile_soft_limit() -> std::io::Result<()> {
    let soft = INHERITED_NOFILE_SOFT.load(std::sync::atomic::Ordering::Relaxed);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer; async-signal-safe syscalls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if soft < limit.rlim_cur {
            limit.rlim_cur = soft;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Spawns the process and returns its handle plus a subscription taken before any output.
pub fn spawn(
    table: &Arc<ProcessTable>,
    spec: SpawnSpec,
) -> Result<(Arc<ProcessHandle>, Subscription), ConnectError> {
    let mut cmd = tokio::process::Command::new(&spec.config.cmd);
    cmd.args(&spec.config.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .kill_on_drop(false);

    let mut pty_master: Option<PtyMaster> = None;
    if let Some((cols, rows)) = spec.pty_size {
        let (master, slave) = open_pty(cols, rows)
            .map_err(|e| ConnectError::internal(format!("cannot open a PTY: {e}")))?;
        let clone = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(|e| ConnectError::internal(format!("cannot duplicate PTY fd: {e}")))
        };
        cmd.stdin(clone(&slave)?)
            .stdout(clone(&slave)?)
            .stderr(Stdio::from(slave));
        pty_master = Some(master);
    } else {
        cmd.stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }

    let with_tty = pty_master.is_some();
    let (uid, gid) = (spec.user.uid, spec.user.gid);
    let groups: Vec<libc::gid_t> = spec.user.groups.clone();
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe syscalls (prctl/open/write/close/getrlimit/setrlimit/setsid/setpgid/ioctl/
    // setgroups/setgid/setuid) on data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // The agent's file operations switch a thread's fsuid (creds.rs), which makes the
            // whole agent non-dumpable; a non-dumpable process's /proc/self files belong to
            // root of its mm's user namespace, which after a CRIU restore is the host's (criu
            // forked the tree), so this child could not open its own oom_score_adj. Dumpable
            // again for the moment before exec (which sets it from the new credentials anyway).
            if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            reset_oom_score()?;
            restore_nofile_soft_limit()?;
            if with_tty {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let mut child = cmd.spawn().map_err(|e| {
        ConnectError::invalid_argument(format!(
            "failed to start {:?} as user '{}': {e}",
            spec.config.cmd, spec.user.name
        ))
    })?;
    drop(cmd); // closes our copies of the PTY slave
    let pid = child
        .id()
        .ok_or_else(|| ConnectError::internal("process exited before it got a pid"))?;

    let handle = Arc::new(ProcessHandle {
        pid,
        tag: spec.tag,
        config: spec.config,
        fanout: Mutex::new(Fanout::default()),
        stdin: tokio::sync::Mutex::new(child.stdin.take()),
        pty: pty_master,
    });
    let subscription = handle.subscribe();
    table.insert(handle.clone());

    let mut pumps = Vec::new();
    if handle.pty.is_some() {
        let h = handle.clone();
        pumps.push(tokio::spawn(async move { pump_pty(&h).await }));
    }
    if let Some(out) = child.stdout.take() {
        let h = handle.clone();
        pumps.push(tokio::spawn(async move {
            pump(&h, out, DataEvent::Stdout).await
        }));
    }
    if let Some(err) = child.stderr.take() {
        let h = handle.clone();
        pumps.push(tokio::spawn(async move {
            pump(&h, err, DataEvent::Stderr).await
        }));
    }

    let table = table.clone();
    let waiter_handle = handle.clone();
    let deadline = spec.deadline;
    tokio::spawn(async move {
        let handle = waiter_handle;
        let status = match deadline {
            Some(at) => tokio::select! {
                status = child.wait() => status,
                _ = tokio::time::sleep_until(at) => {
                    let _ = handle.signal(libc::SIGKILL);
                    let _ = child.start_kill();
                    child.wait().await
                }
            },
            None => child.wait().await,
        };
        let grace = tokio::time::sleep(OUTPUT_DRAIN_GRACE);
        tokio::pin!(grace);
        for mut pump in pumps {
            tokio::select! {
                _ = &mut pump => {}
                _ = &mut grace => pump.abort(),
            }
        }
        let end = match status {
            Ok(status) => status::end_event(status),
            Err(e) => EndEvent {
                exit_code: -1,
                exited: false,
                status: "unknown".into(),
                error: Some(format!("waiting for the process failed: {e}")),
            },
        };
        table.mark_finished(handle.pid);
        handle.finish(end).await;
    });

    Ok((handle, subscription))
}

async fn pump<R: AsyncRead + Unpin>(
    handle: &ProcessHandle,
    mut reader: R,
    wrap: fn(Bytes) -> DataEvent,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                handle.publish(ProcessEvent::Data(wrap(data))).await;
            }
        }
    }
}

async fn pump_pty(handle: &ProcessHandle) {
    let Some(pty) = &handle.pty else { return };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match pty.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                handle
                    .publish(ProcessEvent::Data(DataEvent::Pty(data)))
                    .await;
            }
        }
    }
}

/// Builds the environment: base user variables, then global, then per-command (last wins).
pub fn process_env(
    user: &User,
    global: &BTreeMap<String, String>,
    per_command: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    env.insert("HOME".into(), user.home.clone());
    env.insert("USER".into(), user.name.clone());
    env.insert("LOGNAME".into(), user.name.clone());
    env.extend(global.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(per_command.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Rejects env entries that exec cannot represent.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ConnectError> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || CString::new(k.as_str()).is_err() {
            return Err(ConnectError::invalid_argument(format!(
                "invalid environment variable name {k:?}"
            )));
        }
        if v.contains('\0') {
            return Err(ConnectError::invalid_argument(format!(
                "environment variable {k} contains a NUL byte"
            )));
        }
    }
    Ok(())
}
