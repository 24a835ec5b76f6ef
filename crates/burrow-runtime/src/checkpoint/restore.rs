//! Restore side of deep standby: re-mount the sandbox's root, restore the tree with a
//! pre-spawned criu worker, give `eth0` back.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use burrow_launch::{LaunchReport, LaunchSpec};
use burrow_standby::criu::{RestoreRequest, Worker};

use super::held_root::HeldRoot;
use super::{
    DEVICES, LAUNCH_SPEC_FILE, SandboxLink, checkpoint_dir, criu_err, eth0, log_level, mask_key,
    workers,
};
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
    /// The veth pair to create for the restored sandbox.
    pub link: SandboxLink,
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
    ext.extend(
        burrow_launch::MASKED_FILES
            .iter()
            .map(|rel| format!("mnt[{}]:/dev/null", mask_key(rel))),
    );
    ext
}

/// Restores the checkpoint; returns the restored init's host pid. Blocking.
///
/// The root is mounted in the worker's mount namespace first: criu copies that namespace
/// early (before any notification), so a root mounted while criu runs would be missing in its
/// copy. The veth pair is created while criu restores the mount namespace: as soon as the
/// restored netns exists ("setup-namespaces"); criu needs `eth0`'s address before it restores
/// sockets bound to it and waits for it at "post-setup-namespaces". A failed veth aborts.
///
/// `held` is the root mounted ahead by [`hold_root`], if the runtime has it: attached in the
/// worker's mount namespace instead of being mounted now.
pub fn restore(plan: &RestorePlan<'_>, held: Option<HeldRoot>) -> Result<i32, RuntimeError> {
    let started = Instant::now();
    tracing::debug!(dir = %plan.sandbox_dir.display(), held = held.is_some(), "restore starts");
    // lo too: the netns is restored empty.
    let eth0_config = plan.link.eth0_config(true)?;
    // A leftover pair (checkpoints from before veths were deleted at dump time kept `eth0`
    // parked in the slot's netns; a failed restore's pair may still be dying) blocks the new one.
    eth0::delete_link(&plan.link.host_veth)?;
    let images = checkpoint_dir(plan.sandbox_dir);
    let spec = load_launch_spec(plan.sandbox_dir)?;
    if !images.is_dir() {
        return Err(RuntimeError::Checkpoint(format!(
            "no checkpoint {images:?} (was the sandbox checkpointed?)"
        )));
    }
    // Kept until criu has answered (see `WorkerPool::take`).
    let (worker, refill) = workers::take(&images).map_err(criu_err)?;
    // Opened through the worker's root when it has its own mount namespace: criu works in
    // the images dir and mounts its cgroup yard there (to re-create the sandbox's cgroup
    // namespace), which must be a mount of the worker's namespace (EINVAL otherwise).
    let in_worker = PathBuf::from(format!("/proc/{}/root", worker.pid()))
        .join(images.strip_prefix("/").unwrap_or(&images));
    let dir = match workers::has_own_mount_ns(&worker) {
        true => File::open(&in_worker),
        false => File::open(&images),
    }
    .map_err(io_err(format!("open checkpoint {images:?}")))?;
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
    // Where criu finds the agent and launcher files to bind into the sandbox. It binds them
    // from inside the sandbox's user namespace, which may not traverse the data dir (it may be
    // 0700): in a pooled worker they are bind-mounted onto files of its `/run` first.
    let host_sources = ExternalSources {
        agent: spec.agent_path.clone(),
        init: recorded_launcher(plan.launcher, &spec).to_path_buf(),
        sys: workers::empty_sys_dir_on_host()?,
    };
    let rebind = worker_mntns
        .as_ref()
        .and_then(|_| workers::reachable_external_files());
    let sources = rebind.as_ref().unwrap_or(&host_sources);
    // The worker is not reaped before criu answers, so its pid names its namespace meanwhile.
    let worker_mntns_path = worker_mntns
        .as_ref()
        .map(|_| PathBuf::from(format!("/proc/{}/ns/mnt", worker.pid())));
    let mount_root = || mount_root(plan.launcher, &spec, worker_mntns_path.as_deref());
    // A held root comes without the launcher's binds of the agent and the launcher.
    let launch_binds = match (held, &worker_mntns) {
        (Some(held), Some(ns)) => match attach_held_root(ns, held, &spec.rootfs_dir) {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot attach the held root; mounting it anew");
                mount_root()?;
                true
            }
        },
        // Dropped first: the held overlay keeps the upper dir busy.
        (held, _) => {
            drop(held);
            mount_root()?;
            true
        }
    };
    if let Some(ns) = &worker_mntns {
        let root = spec.rootfs_dir.join("root");
        let binds_at = launch_binds.then_some(root.as_path());
        prepare_worker_mounts(ns, binds_at, &host_sources, rebind.as_ref())?;
    }
    let mounted_at = started.elapsed();
    let link = |pid: i32| {
        let netns = eth0::open_netns(Path::new(&format!("/proc/{pid}/ns/net")))?;
        eth0::create_veth_into(&plan.link.host_veth, &netns, eth0_config)
    };
    let (restored, linked) = std::thread::scope(|scope| {
        let mut linking = None;
        let mut linked = None;
        let restored = restore_tree(
            &spec,
            sources,
            &plan.cgroup_dirs,
            &dir,
            worker,
            &mut |script, pid| match script {
                "setup-namespaces" => {
                    if let (Some(pid), None, None) = (pid, &linking, &linked) {
                        linking = Some(scope.spawn(move || link(pid)));
                    }
                    true
                }
                "post-setup-namespaces" => {
                    linked = linked.take().or_else(|| joined(linking.take()));
                    matches!(linked, Some(Ok(())))
                }
                _ => true,
            },
        );
        // Whatever criu did, no thread outlives the restore.
        (restored, linked.or_else(|| joined(linking.take())))
    });
    drop(refill);
    if worker_mntns.is_none() {
        // The restored mount namespace holds its own reference to the root; the host's goes.
        detach(&spec.rootfs_dir);
    }
    let restored_at = started.elapsed();
    let pid = match (restored, linked) {
        (Ok(pid), Some(Ok(()))) => pid,
        (Ok(pid), None) => {
            // No "setup-namespaces" notification (never seen with criu 4.x): link it now.
            link(pid)?;
            pid
        }
        // A missing eth0 explains criu's failure (a socket bound to its address).
        (_, Some(Err(e))) | (Err(e), _) => return Err(e),
    };
    keep_debug_log(plan.sandbox_dir, &images);
    tracing::info!(
        mounted_ms = ms(mounted_at),
        criu_ms = ms(restored_at - mounted_at),
        total_ms = ms(started.elapsed()),
        "sandbox restored"
    );
    Ok(pid)
}

/// The result of a helper thread of [`restore`], if it was started.
fn joined<T>(
    handle: Option<std::thread::ScopedJoinHandle<'_, Result<T, RuntimeError>>>,
) -> Option<Result<T, RuntimeError>> {
    handle.map(|h| {
        h.join()
            .unwrap_or_else(|_| Err(RuntimeError::Checkpoint("restore helper panicked".into())))
    })
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

/// The launcher binary the sandbox was started from (a pinned copy that an upgrade leaves in
/// place); the runtime's current one (`current`) only for sandboxes that predate the record.
fn recorded_launcher<'a>(current: &'a Path, spec: &'a LaunchSpec) -> &'a Path {
    spec.launcher_path.as_deref().unwrap_or(current)
}

fn load_launch_spec(sandbox_dir: &Path) -> Result<LaunchSpec, RuntimeError> {
    let spec_path = sandbox_dir.join(LAUNCH_SPEC_FILE);
    let text = std::fs::read(&spec_path).map_err(io_err(format!("read {spec_path:?}")))?;
    serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::Checkpoint(format!("{spec_path:?} is not a LaunchSpec: {e}")))
}

/// Mounts the root of the checkpointed sandbox in `sandbox_dir` ahead of its restore (see
/// [`HeldRoot`]) with the runtime's current `launcher`: not the sandbox's pinned one, which may
/// predate `--detach-root` (it would take the spec for a launch). The held tree does not include
/// the launcher's own binds, so which launcher mounted it does not matter to CRIU. Blocking.
pub fn hold_root(sandbox_dir: &Path, launcher: &Path) -> Result<HeldRoot, RuntimeError> {
    let spec = load_launch_spec(sandbox_dir)?;
    HeldRoot::mount(launcher, &spec)
}

/// Attaches `held` at `rootfs_dir` in the worker's mount namespace.
fn attach_held_root(
    mntns: &OwnedFd,
    held: HeldRoot,
    rootfs_dir: &Path,
) -> Result<(), RuntimeError> {
    let target = std::ffi::CString::new(rootfs_dir.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::Checkpoint(format!("{rootfs_dir:?} contains a NUL byte")))?;
    in_mount_ns(mntns, move || held.attach(&target))
        .map_err(|e| RuntimeError::Checkpoint(format!("attach the held root: {e}")))
}

/// Runs `work` in a short-lived thread that joins the mount namespace `mntns` with an fs
/// context of its own (setns into a mount namespace needs one; no tokio thread is touched).
fn in_mount_ns<T: Send>(
    mntns: &OwnedFd,
    work: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let raw = mntns.as_raw_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> std::io::Result<T> {
                // SAFETY: unshare with a flag constant; gives only this thread a private fs
                // context, which setns into a mount namespace requires.
                if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: setns on a valid mount namespace fd; changes only this thread.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNS) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("mount namespace thread panicked")))
    })
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
    on_notify: &mut dyn FnMut(&str, Option<i32>) -> bool,
) -> Result<i32, RuntimeError> {
    let mut req = RestoreRequest::new(images.as_fd(), spec.rootfs_dir.join("root"));
    req.external = restore_externals(sources);
    req.join_cgroups = cgroup_dirs.to_vec();
    req.log_level = log_level();
    req.empty_netns = true;
    // The default (v2) mount engine fails to bind the overlay root from usernsd: "Unable to
    // mount /proc/self/fd/9: Invalid argument" (CRIU 4.2.1, kernel 6.18).
    req.mntns_compat_mode = true;
    Ok(worker
        .restore_notified(&req, on_notify)
        .map_err(criu_err)?
        .pid)
}

/// In the worker's mount namespace (see [`in_mount_ns`]):
/// - `--mount-root` also bind-mounts the agent and the launcher into the root (`launch_binds`
///   is then the root), as for a fresh start; CRIU restores the sandbox's own binds of them
///   (external mounts) on top, so kept, every checkpoint → restore cycle would stack one more
///   of each: unmounted;
/// - given `rebind`, the agent and launcher files are bind-mounted onto its (reachable) paths.
fn prepare_worker_mounts(
    mntns: &OwnedFd,
    launch_binds: Option<&Path>,
    sources: &ExternalSources,
    rebind: Option<&ExternalSources>,
) -> Result<(), RuntimeError> {
    let c_path = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
    let targets: Vec<std::ffi::CString> = launch_binds
        .into_iter()
        .flat_map(|root| [AGENT_BIND, INIT_BIND].map(|rel| root.join(rel)))
        .filter_map(|path| c_path(&path))
        .collect();
    let binds: Vec<(std::ffi::CString, std::ffi::CString)> = rebind
        .map(|to| {
            [(&sources.agent, &to.agent), (&sources.init, &to.init)]
                .into_iter()
                .filter_map(|(from, to)| Some((c_path(from)?, c_path(to)?)))
                .collect()
        })
        .unwrap_or_default();
    let result = in_mount_ns(mntns, || {
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
    });
    result.map_err(|e| {
        RuntimeError::Checkpoint(format!(
            "prepare the criu worker's mounts for the restore: {e}"
        ))
    })
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

/// `burrow-launch --mount-root`: the overlay root at `<rootfs_dir>/root`, in the mount
/// namespace at `mntns` (a criu worker's, which the launcher joins itself: the daemon does not
/// fork to do it) or else in the host's. With the runtime's current launcher, as for
/// [`hold_root`]: a sandbox's pinned one may predate `--mount-ns`.
fn mount_root(
    launcher: &Path,
    spec: &LaunchSpec,
    mntns: Option<&Path>,
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
        command.arg("--mount-ns").arg(ns);
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
