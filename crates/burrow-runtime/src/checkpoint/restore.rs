//! Restore side of deep standby: re-mount the sandbox's root, restore the tree with a
//! pre-spawned criu worker, give `eth0` back.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use burrow_launch::{LaunchReport, LaunchSpec};
use burrow_standby::criu::{RestoreRequest, Worker};

use super::{DEVICES, LAUNCH_SPEC_FILE, checkpoint_dir, criu_err, eth0, log_level, workers};
use crate::error::{RuntimeError, io_err};

/// The launcher's own binds in the restore root (burrow-launch's overlay::mount_root).
const AGENT_BIND: &str = ".burrow/agent";
const INIT_BIND: &str = ".burrow/init";

/// Everything a restore needs from the runtime.
pub struct RestorePlan<'a> {
    pub sandbox_dir: &'a Path,
    /// The runtime's launcher, for sandboxes whose `launch.json` does not record theirs (the
    /// agent always comes from `launch.json`).
    pub launcher: &'a Path,
    /// Name of the slot's pool netns, where `eth0` waits.
    pub slot_netns: &'a str,
    /// `eth0`'s address (`<ip>/30`) and the default gateway.
    pub address: String,
    pub gateway: String,
    /// The host end of the veth (`bw<k>`).
    pub host_veth: &'a str,
    /// The sandbox's cgroup dirs; CRIU's worker joins them so restored tasks start inside.
    pub cgroup_dirs: Vec<PathBuf>,
}

/// Restore-side: where each external mount comes from.
fn restore_externals(sources: &ExternalSources) -> Vec<String> {
    let mut ext = vec![
        format!("mnt[agent]:{}", sources.agent.display()),
        format!("mnt[init]:{}", sources.init.display()),
        // Unused by images dumped before /sys became external (CRIU ignores it then).
        format!("mnt[sys]:{}", sources.sys.display()),
    ];
    ext.extend(DEVICES.iter().map(|d| format!("mnt[dev-{d}]:/dev/{d}")));
    ext
}

/// Restores the checkpoint; returns the restored init's host pid. Blocking.
pub fn restore(plan: &RestorePlan<'_>) -> Result<i32, RuntimeError> {
    let started = Instant::now();
    tracing::debug!(dir = %plan.sandbox_dir.display(), "restore starts");
    // lo too: its link and config images are skipped (see `skip_netns_config`).
    let eth0_config = eth0::Eth0Config {
        loopback_up: true,
        ..eth0::Eth0Config::parse(&plan.address, &plan.gateway)?
    };
    let images = checkpoint_dir(plan.sandbox_dir);
    let spec_path = plan.sandbox_dir.join(LAUNCH_SPEC_FILE);
    let text = std::fs::read(&spec_path).map_err(io_err(format!("read {spec_path:?}")))?;
    let spec: LaunchSpec = serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::Checkpoint(format!("{spec_path:?} is not a LaunchSpec: {e}")))?;
    let dir = File::open(&images).map_err(io_err(format!(
        "open checkpoint {images:?} (was the sandbox checkpointed?)"
    )))?;
    let worker = workers::take(&images).map_err(criu_err)?;
    let got_worker = started.elapsed();
    // A pooled worker lives in its own mount namespace: the root goes there (and vanishes
    // with it). Otherwise it goes into the host's and is detached after the restore.
    let worker_mntns = workers::has_own_mount_ns(&worker)
        .then(|| {
            File::open(format!("/proc/{}/ns/mnt", worker.pid()))
                .map(OwnedFd::from)
                .map_err(io_err(format!(
                    "open mount ns of criu worker {}",
                    worker.pid()
                )))
        })
        .transpose()?;
    mount_root(recorded_launcher(plan, &spec), &spec, worker_mntns.as_ref())?;
    // Where criu finds the agent and launcher files to bind into the sandbox. It binds them
    // from inside the sandbox's user namespace, which may not traverse the data dir (it may be
    // 0700): in a pooled worker they are bind-mounted onto files of its `/run` first.
    let mut sources = ExternalSources {
        agent: spec.agent_path.clone(),
        init: recorded_launcher(plan, &spec).to_path_buf(),
        sys: workers::empty_sys_dir_on_host()?,
    };
    if let Some(ns) = &worker_mntns {
        let rebind = workers::reachable_external_files();
        prepare_worker_mounts(ns, &spec.rootfs_dir.join("root"), &sources, rebind.as_ref())?;
        if let Some(rebound) = rebind {
            sources = rebound;
        }
    }
    skip_netns_config(&images)?;
    let mounted = started.elapsed();
    // eth0 joins the restored netns as soon as criu has created it (its "setup-namespaces"
    // notification), in parallel with the mount namespace's restore: moving a netdev between
    // namespaces costs 10-17 ms of kernel time (RCU grace periods) here. It must be addressed
    // before criu restores sockets bound to its address, so criu waits for it at
    // "post-setup-namespaces".
    let slot_netns = eth0::open_netns(&Path::new("/run/netns").join(plan.slot_netns))?;
    let mut early: Option<EarlyAttach> = None;
    let mut attached: Option<(File, Result<(), RuntimeError>)> = None;
    let result = restore_tree(
        &spec,
        &sources,
        &plan.cgroup_dirs,
        &dir,
        worker,
        &mut |script, pid| match script {
            "setup-namespaces" if early.is_none() && attached.is_none() => {
                if let Some(pid) = pid {
                    early = EarlyAttach::start(&slot_netns, pid, eth0_config, plan.host_veth);
                }
            }
            "post-setup-namespaces" => {
                if let Some(moving) = early.take() {
                    attached = Some(moving.join());
                }
            }
            _ => {}
        },
    );
    if worker_mntns.is_none() {
        // The restored mount namespace holds its own reference to the root; the host's goes.
        detach(&spec.rootfs_dir);
    }
    let restored = started.elapsed();
    if let Some(moving) = early.take() {
        attached = Some(moving.join());
    }
    let pid = match (result, attached) {
        (Ok(pid), Some((_, attach))) => {
            attach?;
            pid
        }
        (Ok(pid), None) => {
            let sandbox_netns = eth0::open_netns(Path::new(&format!("/proc/{pid}/ns/net")))?;
            eth0::move_eth0_between(&slot_netns, &sandbox_netns, Some(eth0_config))?;
            eth0::forget_neighbour(plan.host_veth, eth0_config.address)?;
            pid
        }
        (Err(e), attached) => {
            // The restored netns dies with the failed tree; eth0 (kept alive by our netns
            // fd) goes back to the slot for the next attempt.
            if let Some((netns, _)) = attached
                && let Err(back) = eth0::move_eth0_between(&netns, &slot_netns, None)
            {
                tracing::error!(error = %back, "cannot park eth0 again after a failed restore");
            }
            return Err(e);
        }
    };
    keep_debug_log(plan.sandbox_dir, &images);
    tracing::info!(
        worker_ms = ms(got_worker),
        mount_root_ms = ms(mounted - got_worker),
        criu_ms = ms(restored - mounted),
        eth0_wait_ms = ms(started.elapsed() - restored),
        "sandbox restored"
    );
    Ok(pid)
}

/// At `BURROW_CRIU_LOG_LEVEL` >= 3 the runtime keeps the last `restore.log` next to the
/// sandbox (the images dir, where criu writes it, is deleted after a restore).
fn keep_debug_log(sandbox_dir: &Path, images: &Path) {
    if log_level() >= 3 {
        let _ = std::fs::copy(images.join("restore.log"), sandbox_dir.join("restore.log"));
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `eth0` on its way into a netns criu is still restoring (see [`restore`]).
struct EarlyAttach {
    /// Held so the netns (and eth0 in it) outlives a failed restore: eth0 can then go back.
    netns: File,
    mover: std::thread::JoinHandle<Result<(), RuntimeError>>,
}

impl EarlyAttach {
    fn start(
        slot_netns: &File,
        pid: i32,
        config: eth0::Eth0Config,
        host_veth: &str,
    ) -> Option<Self> {
        let opened = (|| {
            let netns = eth0::open_netns(Path::new(&format!("/proc/{pid}/ns/net")))?;
            let theirs = netns.try_clone().map_err(io_err("dup netns fd"))?;
            let slot = slot_netns.try_clone().map_err(io_err("dup netns fd"))?;
            Ok::<_, RuntimeError>((netns, theirs, slot))
        })();
        let (netns, theirs, slot) = match opened {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e, "cannot attach eth0 early; will after the restore");
                return None;
            }
        };
        let host_veth = host_veth.to_owned();
        let mover = std::thread::Builder::new()
            .name("eth0-attach".into())
            .spawn(move || {
                eth0::move_eth0_between(&slot, &theirs, Some(config))?;
                eth0::forget_neighbour(&host_veth, config.address)
            })
            .ok()?;
        Some(Self { netns, mover })
    }

    fn join(self) -> (File, Result<(), RuntimeError>) {
        let result = self
            .mover
            .join()
            .unwrap_or_else(|_| Err(RuntimeError::Checkpoint("eth0 thread panicked".into())));
        (self.netns, result)
    }
}

/// The launcher binary the sandbox was started from (a pinned copy that an upgrade leaves in
/// place); the runtime's current one only for sandboxes that predate the record.
fn recorded_launcher<'a>(plan: &'a RestorePlan<'_>, spec: &'a LaunchSpec) -> &'a Path {
    spec.launcher_path.as_deref().unwrap_or(plan.launcher)
}

/// The files criu binds at the sandbox's `/.burrow/agent` and `/.burrow/init`, as paths in
/// the worker's mount namespace.
pub(super) struct ExternalSources {
    pub agent: PathBuf,
    pub init: PathBuf,
    /// An empty directory nobody but host root can write to, bound read-only at `/sys`.
    pub sys: PathBuf,
}

fn restore_tree(
    spec: &LaunchSpec,
    sources: &ExternalSources,
    cgroup_dirs: &[PathBuf],
    images: &File,
    worker: Worker,
    on_notify: &mut dyn FnMut(&str, Option<i32>),
) -> Result<i32, RuntimeError> {
    let mut req = RestoreRequest::new(images.as_fd(), spec.rootfs_dir.join("root"));
    req.external = restore_externals(sources);
    req.join_cgroups = cgroup_dirs.to_vec();
    req.log_level = log_level();
    // The default (v2) mount engine fails to bind the overlay root from usernsd: "Unable to
    // mount /proc/self/fd/9: Invalid argument" (CRIU 4.2.1, kernel 6.18).
    req.mntns_compat_mode = true;
    Ok(worker
        .restore_notified(&req, on_notify)
        .map_err(criu_err)?
        .pid)
}

/// In the worker's mount namespace, by a short-lived thread with its own fs context (setns into
/// a mount namespace needs one; the tokio thread is never touched):
/// - `--mount-root` also bind-mounts the agent and the launcher into the root, as for a fresh
///   start; CRIU restores the sandbox's own binds of them (external mounts) on top, so kept,
///   every checkpoint → restore cycle would stack one more of each: unmounted;
/// - given `rebind`, the agent and launcher files are bind-mounted onto its (reachable) paths.
fn prepare_worker_mounts(
    mntns: &OwnedFd,
    root: &Path,
    sources: &ExternalSources,
    rebind: Option<&ExternalSources>,
) -> Result<(), RuntimeError> {
    let c_path = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
    let targets: Vec<std::ffi::CString> = [AGENT_BIND, INIT_BIND]
        .iter()
        .filter_map(|rel| c_path(&root.join(rel)))
        .collect();
    let binds: Vec<(std::ffi::CString, std::ffi::CString)> = rebind
        .map(|to| {
            [(&sources.agent, &to.agent), (&sources.init, &to.init)]
                .into_iter()
                .filter_map(|(from, to)| Some((c_path(from)?, c_path(to)?)))
                .collect()
        })
        .unwrap_or_default();
    let raw = mntns.as_raw_fd();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<()> {
                // SAFETY: unshare with a flag constant; gives only this thread a private fs
                // context, which setns into a mount namespace requires.
                if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: setns on a valid mount namespace fd; changes only this thread.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNS) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for target in &targets {
                    // SAFETY: a NUL-terminated path; EINVAL (not a mount point: the init bind
                    // exists only for sandbox-owned netns) is fine.
                    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                        let e = std::io::Error::last_os_error();
                        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                            return Err(e);
                        }
                    }
                }
                for (from, to) in &binds {
                    // SAFETY: NUL-terminated paths; a plain bind mount in this thread's (the
                    // worker's private) mount namespace.
                    let ret = unsafe {
                        libc::mount(
                            from.as_ptr(),
                            to.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        )
                    };
                    if ret != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("umount thread panicked")))
    });
    result.map_err(|e| {
        RuntimeError::Checkpoint(format!(
            "prepare the criu worker's mounts for the restore: {e}"
        ))
    })
}

/// Removes the images of the sandbox netns's links, sysctls, addresses, routes and rules
/// before a restore, so CRIU rebuilds none of it. The sandbox cannot change any of them (its
/// root has no CAP_NET_ADMIN), so a fresh netns already has the same defaults; `eth0`, the
/// only configured interface, is parked during the dump and configured by [`eth0::move_eth0`]
/// together with `lo` (up; the kernel addresses and routes it). CRIU treats a missing image as
/// empty: this skips its `ip addr/route/rule` runs (~22 ms) and its sysctl writes, which
/// otherwise wait for the rtnl lock held while `eth0` moves (10-35 ms).
fn skip_netns_config(images: &Path) -> Result<(), RuntimeError> {
    const SKIPPED: [&str; 6] = ["netns-", "netdev-", "ifaddr-", "route-", "route6-", "rule-"];
    for entry in std::fs::read_dir(images).map_err(io_err(format!("list {images:?}")))? {
        let entry = entry.map_err(io_err(format!("list {images:?}")))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".img") && SKIPPED.iter().any(|p| name.starts_with(p)) {
            std::fs::remove_file(entry.path()).map_err(io_err(format!("remove {name}")))?;
        }
    }
    Ok(())
}

fn detach(path: &Path) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: `c` is a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        tracing::warn!(path = %path.display(), error = %std::io::Error::last_os_error(),
            "cannot detach the restore root");
    }
}

/// `burrow-launch --mount-root`: the overlay root at `<rootfs_dir>/root`, in `mntns` (a criu
/// worker's mount namespace) or else in the host's.
fn mount_root(
    launcher: &Path,
    spec: &LaunchSpec,
    mntns: Option<&OwnedFd>,
) -> Result<(), RuntimeError> {
    let input =
        serde_json::to_vec(spec).map_err(|e| RuntimeError::Launch(format!("encode spec: {e}")))?;
    let mut command = Command::new(launcher);
    command
        .arg("--mount-root")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ns) = mntns {
        let raw = ns.as_raw_fd();
        // SAFETY: runs in the forked, single-threaded child before exec and only calls setns
        // (allowed there: the child shares no fs_struct) on an fd the parent keeps open.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| RuntimeError::Launch(format!("cannot run {launcher:?} --mount-root: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, &input)
            .map_err(|e| RuntimeError::Launch(format!("write spec to launcher: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RuntimeError::Launch(format!("wait for launcher: {e}")))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let report: LaunchReport = serde_json::from_str(line.trim()).map_err(|e| {
        RuntimeError::Launch(format!("launcher --mount-root answered {line:?}: {e}"))
    })?;
    if !report.ok {
        return Err(RuntimeError::Launch(format!(
            "re-mounting the root for restore: {}",
            report.error.unwrap_or_default()
        )));
    }
    Ok(())
}
