//! Deep standby of a whole sandbox with CRIU (only for sandboxes whose network namespace is
//! owned by their user namespace, [`crate::NetnsMode::Sandbox`]): dump the process tree into
//! `<sandbox_dir>/checkpoint/`, and restore it on the sandbox's overlay root.
//!
//! What CRIU must be told: the agent binary and the host device nodes are bind mounts from the
//! host (external mounts); the overlay root is given back with `--root` (re-mounted by
//! `burrow-launch --mount-root`). The sandbox's `eth0` is *parked* in the slot's pool netns for
//! the checkpoint and moved back into the restored netns afterwards: CRIU 4.2.1 cannot recreate
//! a veth from inside a user namespace on this kernel (`couldn't restore veth interface eth0 via
//! usernsd`, netlink EOPNOTSUPP), and parking keeps the host end `bw<k>` and its address as
//! they are. Everything else (user/pid/mount/uts/ipc/net namespaces, memory, fds, listening
//! sockets) is in the images. Established TCP connections over `eth0` do not survive (the
//! address leaves with the interface).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burrow_launch::{LaunchReport, LaunchSpec};
use burrow_standby::criu::{self, CriuConfig, CriuError, DumpRequest, RestoreRequest, Worker};

use crate::error::{RuntimeError, io_err};

/// Images dir inside the sandbox dir.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The sandbox's LaunchSpec, kept (0600, root) so a restore can re-mount the same root.
pub const LAUNCH_SPEC_FILE: &str = "launch.json";
/// Host device nodes the launcher bind-mounts into /dev (see burrow-launch's sandbox_fs).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
const AGENT_IN_SANDBOX: &str = "/.burrow/agent";
/// The launcher binary, bind-mounted for init's re-exec (burrow-launch's `INIT_IN_SANDBOX`).
const INIT_IN_SANDBOX: &str = "/.burrow/init";

/// What a checkpoint produced.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// Total size of the image files.
    pub image_bytes: u64,
    /// From the dump request to CRIU's answer (processes frozen, dumped and killed).
    pub duration: Duration,
}

fn criu_config() -> CriuConfig {
    let mut config = CriuConfig::default();
    if let Some(binary) = std::env::var_os("BURROW_CRIU_BINARY") {
        config.binary = binary.into();
    }
    config
}

/// `BURROW_CRIU_LOG_LEVEL` (0..=4, default 2) for dump.log / restore.log in the images dir.
fn log_level() -> i32 {
    std::env::var("BURROW_CRIU_LOG_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|l| (0..=4).contains(l))
        .unwrap_or(2)
}

fn criu_err(e: CriuError) -> RuntimeError {
    RuntimeError::Checkpoint(e.to_string())
}

/// Dump-side names of the external bind mounts.
fn dump_externals() -> Vec<String> {
    let mut ext = vec![
        criu::external_mount(AGENT_IN_SANDBOX, "agent"),
        criu::external_mount(INIT_IN_SANDBOX, "init"),
    ];
    ext.extend(
        DEVICES
            .iter()
            .map(|d| criu::external_mount(&format!("/dev/{d}"), &format!("dev-{d}"))),
    );
    ext
}

/// Restore-side: where each external mount comes from.
fn restore_externals(agent_path: &Path, launcher: &Path) -> Vec<String> {
    let mut ext = vec![
        format!("mnt[agent]:{}", agent_path.display()),
        format!("mnt[init]:{}", launcher.display()),
    ];
    ext.extend(DEVICES.iter().map(|d| format!("mnt[dev-{d}]:/dev/{d}")));
    ext
}

pub fn checkpoint_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join(CHECKPOINT_DIR)
}

/// Writes the LaunchSpec next to the sandbox (root only: it holds the envd token).
pub fn save_launch_spec(sandbox_dir: &Path, spec: &LaunchSpec) -> Result<(), RuntimeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = sandbox_dir.join(LAUNCH_SPEC_FILE);
    let text = serde_json::to_vec(spec)
        .map_err(|e| RuntimeError::Launch(format!("encode launch spec: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(format!("create {path:?}")))?;
    std::io::Write::write_all(&mut file, &text).map_err(io_err(format!("write {path:?}")))
}

/// Dumps the tree of `init_pid` (CRIU kills it once dumped). Blocking.
pub fn dump(
    sandbox_dir: &Path,
    init_pid: i32,
    uid_base: u32,
    freezer_dir: &Path,
    slot_netns: &str,
) -> Result<CheckpointInfo, RuntimeError> {
    let images = checkpoint_dir(sandbox_dir);
    if images.exists() {
        std::fs::remove_dir_all(&images).map_err(io_err(format!("remove {images:?}")))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&images)
        .map_err(io_err(format!("create {images:?}")))?;
    let dir = File::open(&images).map_err(io_err(format!("open {images:?}")))?;
    let worker = Worker::spawn(&criu_config(), &[]).map_err(criu_err)?;
    let mut req = DumpRequest::new(dir.as_fd(), init_pid);
    req.external = dump_externals();
    req.freeze_cgroup = Some(freezer_dir.to_path_buf());
    req.log_level = log_level();
    let sandbox_netns = format!("--net=/proc/{init_pid}/ns/net");
    crate::host::run_command(
        "nsenter",
        &[
            &sandbox_netns,
            "ip",
            "link",
            "set",
            "eth0",
            "netns",
            slot_netns,
        ],
        None,
    )?;
    let outcome = match worker.dump(&req) {
        Ok(outcome) => outcome,
        Err(e) => {
            // The sandbox still runs (criu kills only after a complete dump): give eth0 back.
            if let Err(back) = attach_eth0(slot_netns, init_pid, None) {
                tracing::error!(error = %back, "cannot give eth0 back after a failed dump");
            }
            return Err(criu_err(e));
        }
    };
    // CRIU reads the images partly from inside the restored user namespace (as the sandbox's
    // root = uid_base on the host). Only root can reach the dir by path (sandboxes/ is 0700),
    // and the sandbox's mounts never include it.
    chown_tree(&images, uid_base)?;
    // The restored root task opens its first images right after clone(CLONE_NEWUSER), before
    // its uid map is written, i.e. as the overflow uid: it needs "others" search permission
    // (the images are 0644). Host users still cannot reach them: sandboxes/ is 0700.
    set_mode(&images, 0o711)?;
    Ok(CheckpointInfo {
        image_bytes: dir_size(&images),
        duration: outcome.elapsed,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {path:?}")))
}

fn chown_tree(dir: &Path, uid: u32) -> Result<(), RuntimeError> {
    let chown = |p: &Path| {
        std::os::unix::fs::lchown(p, Some(uid), Some(uid)).map_err(io_err(format!("chown {p:?}")))
    };
    chown(dir)?;
    for entry in std::fs::read_dir(dir).map_err(io_err(format!("list {dir:?}")))? {
        chown(&entry.map_err(io_err(format!("list {dir:?}")))?.path())?;
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Everything a restore needs from the runtime.
pub struct RestorePlan<'a> {
    pub sandbox_dir: &'a Path,
    pub launcher: &'a Path,
    pub agent_path: &'a Path,
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

/// Restores the checkpoint; returns the restored init's host pid. Blocking.
pub fn restore(plan: &RestorePlan<'_>) -> Result<i32, RuntimeError> {
    let images = checkpoint_dir(plan.sandbox_dir);
    let spec_path = plan.sandbox_dir.join(LAUNCH_SPEC_FILE);
    let text = std::fs::read(&spec_path).map_err(io_err(format!("read {spec_path:?}")))?;
    let spec: LaunchSpec = serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::Checkpoint(format!("{spec_path:?} is not a LaunchSpec: {e}")))?;
    let dir = File::open(&images).map_err(io_err(format!(
        "open checkpoint {images:?} (was the sandbox checkpointed?)"
    )))?;
    let started = Instant::now();
    mount_root(plan.launcher, &spec)?;
    let mounted = started.elapsed();
    let result = (|| {
        let worker = Worker::spawn(&criu_config(), &[]).map_err(criu_err)?;
        let mut req = RestoreRequest::new(dir.as_fd(), spec.rootfs_dir.join("root"));
        req.external = restore_externals(plan.agent_path, plan.launcher);
        req.join_cgroups = plan.cgroup_dirs.clone();
        req.log_level = log_level();
        // The default (v2) mount engine fails to bind the overlay root from usernsd: "Unable to
        // mount /proc/self/fd/9: Invalid argument" (CRIU 4.2.1, kernel 6.18).
        req.mntns_compat_mode = true;
        worker.restore(&req).map_err(criu_err)
    })();
    // The restored mount namespace holds its own reference to the root; the host's goes.
    detach(&spec.rootfs_dir);
    let outcome = result?;
    let restored = started.elapsed();
    attach_eth0(
        plan.slot_netns,
        outcome.pid,
        Some((&plan.address, &plan.gateway, plan.host_veth)),
    )?;
    tracing::info!(
        mount_root_ms = mounted.as_secs_f64() * 1e3,
        criu_ms = outcome.elapsed.as_secs_f64() * 1e3,
        criu_total_ms = (restored - mounted).as_secs_f64() * 1e3,
        eth0_ms = (started.elapsed() - restored).as_secs_f64() * 1e3,
        "sandbox restored"
    );
    Ok(outcome.pid)
}

/// Moves `eth0` from the slot's netns into `pid`'s and, given `(address, gateway)`, configures
/// it (an interface loses its addresses and routes when it changes netns).
fn attach_eth0(
    slot_netns: &str,
    pid: i32,
    config: Option<(&str, &str, &str)>,
) -> Result<(), RuntimeError> {
    let pid_text = pid.to_string();
    crate::host::run_command(
        "ip",
        &["-n", slot_netns, "link", "set", "eth0", "netns", &pid_text],
        None,
    )?;
    let Some((address, gateway, host_veth)) = config else {
        return Ok(());
    };
    let batch =
        format!("addr add {address} dev eth0\nlink set eth0 up\nroute add default via {gateway}\n");
    let netns = format!("--net=/proc/{pid}/ns/net");
    crate::host::run_command("nsenter", &[&netns, "ip", "-batch", "-"], Some(&batch))?;
    // While eth0 was parked, anything sent to the sandbox left a FAILED neighbour entry on the
    // host's veth; unflushed, the first connection after restore waits ~400 ms for it to age.
    crate::host::run_command("ip", &["neigh", "flush", "dev", host_veth], None)
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

/// `burrow-launch --mount-root`: the overlay root at `<rootfs_dir>/root` in the host mount ns.
fn mount_root(launcher: &Path, spec: &LaunchSpec) -> Result<(), RuntimeError> {
    let input =
        serde_json::to_vec(spec).map_err(|e| RuntimeError::Launch(format!("encode spec: {e}")))?;
    let mut child = Command::new(launcher)
        .arg("--mount-root")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| RuntimeError::Launch(format!("cannot run {launcher:?}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, &input)
            .map_err(|e| RuntimeError::Launch(format!("write spec to launcher: {e}")))?;
    }
    let started = Instant::now();
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
    tracing::debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "restore root mounted"
    );
    Ok(())
}
