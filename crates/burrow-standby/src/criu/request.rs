//! Dump and restore requests: burrow's choice of CRIU options, and the calls themselves.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::rpc::{
    CgMode, CriuOpts, CriuReq, CriuResp, InheritFd, JoinNamespace, NetworkLockMethod, ReqType,
    Version,
};
use super::{CriuError, Worker};
use crate::cgroup;

const DUMP_LOG: &str = "dump.log";
const RESTORE_LOG: &str = "restore.log";
/// How many error lines of criu's log go into an error message.
const LOG_LINES_IN_ERROR: usize = 8;

/// `net[<inode>]:<key>`: marks the sandbox's pre-created network namespace as external, so a
/// restore re-enters the same netns (passed as `inherit_fd`) instead of rebuilding it.
pub fn external_netns(netns_path: &Path, key: &str) -> Result<String, CriuError> {
    let meta = fs::metadata(netns_path).map_err(|source| CriuError::Io {
        path: netns_path.to_path_buf(),
        source,
    })?;
    Ok(format!("net[{}]:{key}", meta.ino()))
}

/// `mnt[<mountpoint>]:<key>` (dump side) for a bind mount from the host, e.g. the agent binary;
/// on restore pass `mnt[<key>]:<host path>` in [`RestoreRequest::external`].
pub fn external_mount(mountpoint_in_sandbox: &str, key: &str) -> String {
    format!("mnt[{mountpoint_in_sandbox}]:{key}")
}

/// A checkpoint of a sandbox's process tree.
#[derive(Debug)]
pub struct DumpRequest<'a> {
    /// Where the images go (an open directory; criu opens it through /proc/<our pid>/fd).
    pub images_dir: BorrowedFd<'a>,
    /// Host pid of the tree's root (the sandbox's init). It must be a session leader.
    pub pid: i32,
    /// External resources (see [`external_netns`], [`external_mount`]).
    pub external: Vec<String>,
    /// Let the tree run on after the dump (default false: criu kills it once dumped).
    pub leave_running: bool,
    pub tcp_established: bool,
    /// Drop connections not yet accepted (a frozen listener's kernel still completes
    /// handshakes; CRIU refuses them otherwise: "In-flight connection"). Default true.
    pub tcp_skip_in_flight: bool,
    pub ext_unix_sk: bool,
    pub file_locks: bool,
    /// Freezer cgroup criu should freeze the tree with (more reliable than seizing task by task
    /// while processes fork); may already be frozen.
    pub freeze_cgroup: Option<PathBuf>,
    /// criu log level 0..=4 for `dump.log` in the images dir.
    pub log_level: i32,
    /// Directories (inside the dumped mount namespace) CRIU searches for the path of an
    /// inotify-watched inode it cannot open by file handle (e.g. on overlayfs).
    pub irmap_scan_paths: Vec<String>,
    /// The cgroup controllers (their names in `/proc/<pid>/cgroup`, e.g. `memory`) whose paths
    /// the image records; empty: all of them. A restore with cgroups managed moves every
    /// restored task into each recorded one (and re-creates a cgroup namespace from them).
    pub cgroup_controllers: Vec<String>,
}

impl<'a> DumpRequest<'a> {
    /// burrow's defaults: kill after dump, keep established TCP, external unix sockets and file locks.
    pub fn new(images_dir: BorrowedFd<'a>, pid: i32) -> Self {
        Self {
            images_dir,
            pid,
            external: Vec::new(),
            leave_running: false,
            tcp_established: true,
            tcp_skip_in_flight: true,
            ext_unix_sk: true,
            file_locks: true,
            freeze_cgroup: None,
            log_level: 2,
            irmap_scan_paths: Vec::new(),
            cgroup_controllers: Vec::new(),
        }
    }

    fn to_opts(&self) -> Result<CriuOpts, CriuError> {
        if self.pid <= 1 {
            return Err(CriuError::Invalid(format!(
                "pid {} cannot be dumped",
                self.pid
            )));
        }
        check_log_level(self.log_level)?;
        Ok(CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            pid: Some(self.pid),
            leave_running: Some(self.leave_running),
            tcp_established: Some(self.tcp_established),
            tcp_skip_in_flight: Some(self.tcp_skip_in_flight),
            irmap_scan_paths: self.irmap_scan_paths.clone(),
            ext_unix_sk: Some(self.ext_unix_sk),
            file_locks: Some(self.file_locks),
            shell_job: Some(false),
            log_level: Some(self.log_level),
            log_file: Some(DUMP_LOG.into()),
            // burrow-runtime owns the cgroups: it recreates them and we start the restore inside.
            manage_cgroups: Some(false),
            manage_cgroups_mode: Some(CgMode::Ignore as i32),
            // The netns is external and stays; the sandbox is frozen, no traffic to fence off.
            network_lock: Some(NetworkLockMethod::Skip as i32),
            external: self.external.clone(),
            freeze_cgroup: self
                .freeze_cgroup
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            cgroup_dump_controller: self.cgroup_controllers.clone(),
            ..Default::default()
        })
    }
}

/// Bringing a checkpoint back.
#[derive(Debug)]
pub struct RestoreRequest<'a> {
    pub images_dir: BorrowedFd<'a>,
    /// The sandbox's root filesystem, mounted where the worker sees it (its mount namespace).
    pub root: PathBuf,
    /// `mnt[<key>]:<host path>` entries for external bind mounts.
    pub external: Vec<String>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub file_locks: bool,
    /// Restore the root as a child of *our* process (CLONE_PARENT) instead of the worker's; the
    /// caller must then reap it. Default false: the tree is re-parented to init when swrk exits.
    pub rst_sibling: bool,
    /// Fault memory in lazily (needs a running `criu lazy-pages` daemon on the images dir).
    pub lazy_pages: bool,
    /// Namespaces to restore into instead of creating them (`ns`: "user", "uts", "ipc", ...;
    /// `ns_file`: e.g. a bind mount of /proc/<pid>/ns/user kept from before the dump; for "user"
    /// `extra_opt` is "<uid>,<gid>" inside it).
    pub join_ns: Vec<JoinNamespace>,
    /// Create the network namespace empty (no links, addresses, routes, sysctls or firewall
    /// rules restored: `--empty-ns net`); the caller configures it, e.g. at the
    /// "setup-namespaces" notification, before criu restores sockets.
    pub empty_netns: bool,
    /// cgroup dirs (any v1 controller) the worker joins before restoring, so every restored task
    /// starts there, charges included.
    pub join_cgroups: Vec<PathBuf>,
    /// Use CRIU's older mount engine (`--mntns-compat-mode`).
    pub mntns_compat_mode: bool,
    pub log_level: i32,
}

impl<'a> RestoreRequest<'a> {
    pub fn new(images_dir: BorrowedFd<'a>, root: impl Into<PathBuf>) -> Self {
        Self {
            images_dir,
            root: root.into(),
            external: Vec::new(),
            tcp_established: true,
            ext_unix_sk: true,
            file_locks: true,
            rst_sibling: false,
            lazy_pages: false,
            empty_netns: false,
            join_cgroups: Vec::new(),
            join_ns: Vec::new(),
            mntns_compat_mode: false,
            log_level: 2,
        }
    }

    fn to_opts(&self, worker: &Worker) -> Result<CriuOpts, CriuError> {
        check_log_level(self.log_level)?;
        // Checked where criu will look: the worker may live in a mount namespace of its own.
        let in_worker = Path::new(&format!("/proc/{}/root", worker.pid()))
            .join(self.root.strip_prefix("/").unwrap_or(&self.root));
        if !self.root.is_absolute() || !in_worker.is_dir() {
            return Err(CriuError::Invalid(format!(
                "restore root {} must be an existing absolute directory (in the mount \
                 namespace of criu worker {})",
                self.root.display(),
                worker.pid()
            )));
        }
        Ok(CriuOpts {
            images_dir_fd: self.images_dir.as_raw_fd(),
            root: Some(self.root.to_string_lossy().into_owned()),
            tcp_established: Some(self.tcp_established),
            ext_unix_sk: Some(self.ext_unix_sk),
            file_locks: Some(self.file_locks),
            shell_job: Some(false),
            rst_sibling: Some(self.rst_sibling),
            lazy_pages: Some(self.lazy_pages),
            log_level: Some(self.log_level),
            log_file: Some(RESTORE_LOG.into()),
            // The cgroups exist (burrow-runtime creates them and the worker joined them), but
            // CRIU must still walk the dumped cgroup paths: that is how it re-creates the
            // sandbox's cgroup namespace (rooted at the sandbox's groups). `none` changes no
            // cgroup property.
            manage_cgroups: Some(true),
            manage_cgroups_mode: Some(CgMode::CgNone as i32),
            network_lock: Some(NetworkLockMethod::Skip as i32),
            inherit_fd: worker
                .inherited()
                .iter()
                .map(|(key, fd)| InheritFd {
                    key: key.clone(),
                    fd: *fd,
                })
                .collect(),
            external: self.external.clone(),
            join_ns: self.join_ns.clone(),
            empty_ns: self.empty_netns.then_some(libc::CLONE_NEWNET as u32),
            mntns_compat_mode: self.mntns_compat_mode.then_some(true),
            ..Default::default()
        })
    }
}

/// A finished dump.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    /// From sending the request to criu's answer.
    pub elapsed: Duration,
}

/// A finished restore.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// Host pid of the restored root task.
    pub pid: i32,
    pub elapsed: Duration,
}

fn check_log_level(level: i32) -> Result<(), CriuError> {
    if (0..=4).contains(&level) {
        Ok(())
    } else {
        Err(CriuError::Invalid(format!(
            "criu log level {level} is outside 0..=4"
        )))
    }
}

impl Worker {
    /// Checkpoints a process tree into `req.images_dir`.
    pub fn dump(self, req: &DumpRequest<'_>) -> Result<DumpOutcome, CriuError> {
        let opts = req.to_opts()?;
        let start = Instant::now();
        let resp = self.call(&CriuReq {
            r#type: ReqType::Dump as i32,
            opts: Some(opts),
            ..Default::default()
        })?;
        expect_success("dump", &resp, Some((req.images_dir, DUMP_LOG)))?;
        Ok(DumpOutcome {
            elapsed: start.elapsed(),
        })
    }

    /// Restores a checkpoint; returns once criu reports the tree running.
    pub fn restore(self, req: &RestoreRequest<'_>) -> Result<RestoreOutcome, CriuError> {
        self.restore_notified(req, &mut |_, _| true)
    }

    /// [`Worker::restore`] with criu's notifications: `on_notify(script, pid)` runs at each
    /// stage (`"setup-namespaces"` with the root task's host pid once its namespaces exist,
    /// `"post-restore"`, ...) while criu waits, and says whether criu may go on (false: criu
    /// aborts the restore).
    pub fn restore_notified(
        self,
        req: &RestoreRequest<'_>,
        on_notify: &mut dyn FnMut(&str, Option<i32>) -> bool,
    ) -> Result<RestoreOutcome, CriuError> {
        let mut opts = req.to_opts(&self)?;
        opts.notify_scripts = Some(true);
        for dir in &req.join_cgroups {
            cgroup::add_proc(dir, self.pid() as i32).map_err(|source| CriuError::Cgroup {
                pid: self.pid(),
                source,
            })?;
        }
        let start = Instant::now();
        let resp = self.call_notified(
            &CriuReq {
                r#type: ReqType::Restore as i32,
                opts: Some(opts),
                ..Default::default()
            },
            on_notify,
        )?;
        expect_success("restore", &resp, Some((req.images_dir, RESTORE_LOG)))?;
        let pid = resp
            .restore
            .map(|r| r.pid)
            .ok_or_else(|| CriuError::Protocol("successful restore without a pid".into()))?;
        Ok(RestoreOutcome {
            pid,
            elapsed: start.elapsed(),
        })
    }

    /// `criu check`: are the kernel and criu fit for checkpoint/restore?
    /// `work_dir` receives `check.log`.
    pub fn check(self, work_dir: BorrowedFd<'_>) -> Result<(), CriuError> {
        let opts = CriuOpts {
            images_dir_fd: work_dir.as_raw_fd(),
            log_file: Some("check.log".into()),
            log_level: Some(4),
            ..Default::default()
        };
        let resp = self.call(&CriuReq {
            r#type: ReqType::Check as i32,
            opts: Some(opts),
            ..Default::default()
        })?;
        expect_success("check", &resp, Some((work_dir, "check.log")))
    }

    /// criu's version, e.g. (4, 1, Some(1)).
    pub fn version(self) -> Result<Version, CriuError> {
        let resp = self.call(&CriuReq {
            r#type: ReqType::Version as i32,
            ..Default::default()
        })?;
        expect_success("version", &resp, None)?;
        resp.version
            .ok_or_else(|| CriuError::Protocol("VERSION answer without a version".into()))
    }
}

fn expect_success(
    op: &'static str,
    resp: &CriuResp,
    log: Option<(BorrowedFd<'_>, &str)>,
) -> Result<(), CriuError> {
    if resp.success {
        return Ok(());
    }
    // criu reports its last error; on hosts without CAP_SYS_RESOURCE that is a harmless rlimit one.
    let mut message = resp
        .cr_errmsg
        .clone()
        .filter(|m| !m.contains("RLIMIT_NOFILE"))
        .unwrap_or_default();
    message = message.trim().to_string();
    if let Some((dir, name)) = log {
        let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()));
        let errors = log_errors(&path).unwrap_or_default();
        if !errors.is_empty() {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&format!("{name} says: {}", errors.join(" | ")));
        }
    }
    if message.is_empty() {
        message = "no details (raise log_level and read the log in the images dir)".into();
    }
    let errno = match resp.cr_errno {
        Some(e) if e != 0 => format!(" ({})", io::Error::from_raw_os_error(e)),
        _ => String::new(),
    };
    Err(CriuError::Failed { op, errno, message })
}

/// The last error lines of a criu log, skipping the harmless RLIMIT_NOFILE complaint of hosts
/// without CAP_SYS_RESOURCE.
fn log_errors(path: &Path) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(path)?;
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .map(|l| l.trim().to_string())
        .collect();
    Ok(errors[errors.len().saturating_sub(LOG_LINES_IN_ERROR)..].to_vec())
}
