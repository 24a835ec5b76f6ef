//! Deep standby of a whole sandbox with CRIU (only for sandboxes whose network namespace is
//! owned by their user namespace, [`crate::NetnsMode::Sandbox`]): dump the process tree into
//! `<sandbox_dir>/checkpoint/`, and restore it on the sandbox's overlay root.
//!
//! What CRIU must be told: the agent binary and the host device nodes are bind mounts from the
//! host (external mounts); the overlay root is given back with `--root` (mounted ahead by
//! `burrow-launch --detach-root` right after the dump, see [`HeldRoot`], or at restore time by
//! `burrow-launch --mount-root`). The sandbox's veth pair is *deleted* before the dump and
//! created anew (host end `bw<k>` in the host netns, `eth0` directly in the restored netns) while
//! CRIU restores: CRIU 4.2.1 cannot recreate a veth from inside a user namespace on this kernel
//! (`couldn't restore veth interface eth0 via usernsd`, netlink EOPNOTSUPP), and creating a pair
//! in place costs ~1 ms where moving a parked `eth0` between namespaces waited 10-30 ms for RCU.
//! The network namespace itself is restored empty (`--empty-ns net`): the sandbox cannot change
//! its links, addresses, routes, sysctls or firewall (its root has no CAP_NET_ADMIN over it).
//! Everything else (user/pid/mount/uts/ipc namespaces, memory, fds, listening sockets) is in
//! the images. Established TCP connections over `eth0` do not survive (the address leaves with
//! the interface).

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burrow_launch::LaunchSpec;
use burrow_standby::criu::{self, CriuError, DumpRequest};

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
/// The sandbox's `/sys`: an empty read-only tmpfs (burrow-launch's sandbox_fs). Dumped as an
/// external mount and given back as a read-only bind of an empty host dir: CRIU would otherwise
/// pack and unpack its (empty) contents with a `tar` run each way (~3 ms of every restore).
const SYS_IN_SANDBOX: &str = "/sys";

/// What a checkpoint produced.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    /// Total size of the image files.
    pub image_bytes: u64,
    /// From the dump request to CRIU's answer (processes frozen, dumped and killed).
    pub duration: Duration,
}

/// The sandbox's end of the network: the veth pair `host_veth` / `eth0` and `eth0`'s address.
#[derive(Debug, Clone)]
pub struct SandboxLink {
    /// The host end, `bw<k>`: addressed as the gateway.
    pub host_veth: String,
    /// `eth0`'s address, `<ip>/<prefix length>`.
    pub address: String,
    pub gateway: String,
}

impl SandboxLink {
    pub fn of_slot(slot: crate::net::Slot) -> Self {
        Self {
            host_veth: slot.host_veth(),
            address: format!("{}/30", slot.sandbox_ip()),
            gateway: slot.host_ip().to_string(),
        }
    }

    fn eth0_config(&self, loopback_up: bool) -> Result<eth0::Eth0Config, RuntimeError> {
        Ok(eth0::Eth0Config {
            loopback_up,
            ..eth0::Eth0Config::parse(&self.address, &self.gateway)?
        })
    }
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
        criu::external_mount(SYS_IN_SANDBOX, "sys"),
    ];
    ext.extend(
        DEVICES
            .iter()
            .map(|d| criu::external_mount(&format!("/dev/{d}"), &format!("dev-{d}"))),
    );
    // The /proc files masked with the host's /dev/null (CRIU ignores those the kernel lacks).
    ext.extend(
        burrow_launch::MASKED_FILES
            .iter()
            .map(|rel| criu::external_mount(&format!("/{rel}"), &mask_key(rel))),
    );
    ext
}

/// CRIU's key of the external mount that masks `/<rel>` (a [`burrow_launch::MASKED_FILES`]).
fn mask_key(rel: &str) -> String {
    format!("mask-{}", rel.replace('/', "-"))
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

/// Where a dump writes its images until CRIU has answered OK; renamed to [`CHECKPOINT_DIR`]
/// only then, so `checkpoint/` always holds a complete image (a crash mid-dump leaves at most
/// this dir, which reconcile discards).
pub const PARTIAL_DIR: &str = "checkpoint.partial";
/// Where inotify-watched directories and files are searched for (recursively) when a sandbox
/// with watches is dumped; a watch outside them makes the dump fail.
const IRMAP_SCAN_PATHS: [&str; 6] = ["/home", "/root", "/tmp", "/workspace", "/code", "/app"];
/// How long the freeze before a dump may take.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// CRIU's words when a task it must seize is in uninterruptible sleep (a transient failure).
const UNSEIZABLE: &str = "Unseizable non-zombie";
/// Pause before the one retry of such a dump.
const RETRY_DELAY: Duration = Duration::from_millis(20);
/// Prefix of an images dir already restored from, renamed away so it can be deleted after
/// the request that woke the sandbox has been answered (see [`set_aside_used_images`]).
const USED_PREFIX: &str = "checkpoint.used-";

/// Dumps the tree of `init_pid` (CRIU kills it once dumped) into `checkpoint/`. Blocking.
///
/// Order: freeze the sandbox (nothing may open a connection after the next step), cut its TCP
/// connections that leave the sandbox (`ss -K`: the peers, e.g. the daemon's pooled proxy
/// connections, get a RST and reconnect later; loopback connections inside stay and are
/// dumped), delete its veth pair, dump, then rename the images dir into place. On failure
/// everything is given back: a new veth pair, and the sandbox is thawed unless it was frozen
/// before (warm standby stays warm standby).
pub fn dump(
    sandbox_dir: &Path,
    init_pid: i32,
    uid_base: u32,
    freezer_dir: &Path,
    link: &SandboxLink,
) -> Result<CheckpointInfo, RuntimeError> {
    let images = checkpoint_dir(sandbox_dir);
    let partial = sandbox_dir.join(PARTIAL_DIR);
    remove_used_images(sandbox_dir);
    if images.exists() {
        std::fs::remove_dir_all(&images).map_err(io_err(format!("remove {images:?}")))?;
    }
    let mut attempt = 1;
    let outcome = loop {
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io_err(format!("remove {partial:?}")))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&partial)
            .map_err(io_err(format!("create {partial:?}")))?;
        match dump_into(&partial, init_pid, freezer_dir, link) {
            Ok(outcome) => break outcome,
            // A task caught in uninterruptible sleep (`Unseizable non-zombie ... state D`,
            // ~1 dump in 100) is transient: the sandbox was given back intact, try once more.
            Err(e) if attempt == 1 && e.to_string().contains(UNSEIZABLE) => {
                tracing::warn!(error = %e, "criu met a task in state D; retrying the dump once");
                attempt += 1;
                std::thread::sleep(RETRY_DELAY);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        }
    };
    // CRIU reads the images partly from inside the restored user namespace (as the sandbox's
    // root = uid_base on the host). Only root can reach the dir by path (sandboxes/ is 0700),
    // and the sandbox's mounts never include it.
    chown_tree(&partial, uid_base)?;
    // The restored root task opens its first images right after clone(CLONE_NEWUSER), before
    // its uid map is written, i.e. as the overflow uid: it needs "others" search permission
    // (the images are 0644). Host users still cannot reach them: sandboxes/ is 0700.
    set_mode(&partial, 0o711)?;
    // The images must be on disk before they are declared complete (a host crash right after
    // would otherwise leave a complete-looking, truncated image).
    sync_filesystem(&partial)?;
    std::fs::rename(&partial, &images)
        .map_err(io_err(format!("rename {partial:?} to {images:?}")))?;
    sync_filesystem(sandbox_dir)?;
    Ok(CheckpointInfo {
        image_bytes: dir_size(&images),
        duration: outcome.elapsed,
    })
}

/// Written by CRIU into the images dir only after a dump succeeded, i.e. once every image
/// is complete and the dumped tree has been killed (`cr_dump_finish` → `write_stats`).
const DUMP_STATS_FILE: &str = "stats-dump";
/// How long reconcile waits for a `criu` orphaned by a daemon crash to finish its dump or
/// restore (a 4 GiB sandbox dumps in well under a minute).
const ORPHANED_CRIU_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the dump in `partial` ran to completion: CRIU finished (and killed the tree) but
/// the daemon died before it could declare the image complete.
pub fn dump_completed(partial: &Path) -> bool {
    partial.join(DUMP_STATS_FILE).is_file()
}

/// Finishes, after a daemon crash, what [`dump`] does after CRIU answered OK: ownership and
/// mode for the restore, on disk, then renamed to `checkpoint/`. Only for a
/// [`dump_completed`] image whose tree is gone.
pub fn complete_interrupted_dump(sandbox_dir: &Path, uid_base: u32) -> Result<(), RuntimeError> {
    let partial = sandbox_dir.join(PARTIAL_DIR);
    let images = checkpoint_dir(sandbox_dir);
    chown_tree(&partial, uid_base)?;
    set_mode(&partial, 0o711)?;
    sync_filesystem(&partial)?;
    std::fs::rename(&partial, &images)
        .map_err(io_err(format!("rename {partial:?} to {images:?}")))?;
    sync_filesystem(sandbox_dir)
}

/// Waits until no other process has the sandbox's images dirs (`checkpoint.partial/`,
/// `checkpoint/`) open or as its working directory: a `criu swrk` worker whose daemon was
/// killed goes on with the dump or restore it was asked for (and a dump ends by killing the
/// sandbox's processes), so what is on disk and in `/proc` is only final once it has exited.
/// Criu is never killed here: in the middle of a dump its parasite code runs inside the
/// sandbox's processes. Returns false on timeout.
pub fn wait_for_orphaned_criu(sandbox_dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let targets: Vec<(u64, u64)> = [sandbox_dir.join(PARTIAL_DIR), checkpoint_dir(sandbox_dir)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if targets.is_empty() {
        return true;
    }
    let deadline = std::time::Instant::now() + ORPHANED_CRIU_TIMEOUT;
    let mut logged = false;
    loop {
        let Some(pid) = process_using(&targets) else {
            return true;
        };
        if !logged {
            tracing::warn!(dir = %sandbox_dir.display(), pid,
                "a criu left by a crashed daemon is still working on this sandbox: waiting for it");
            logged = true;
        }
        if std::time::Instant::now() > deadline {
            tracing::error!(dir = %sandbox_dir.display(), pid, "criu did not finish in time");
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process (not this one) with an open fd or working directory on one of `targets`
/// (device, inode).
fn process_using(targets: &[(u64, u64)]) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let own = std::process::id() as i32;
    let matches = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .is_some_and(|m| targets.contains(&(m.dev(), m.ino())))
    };
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let proc_dir = entry.path();
        if matches(&proc_dir.join("cwd")) {
            return Some(pid);
        }
        let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
            continue;
        };
        if fds.flatten().any(|fd| matches(&fd.path())) {
            return Some(pid);
        }
    }
    None
}

/// The one cgroup controller a dump records: the hierarchy of the sandbox's memory cgroup, named
/// as in init's `/proc/<pid>/cgroup` (`memory`, or e.g. `cpu,memory` where co-mounted); `None`
/// (record all) if init shows none.
///
/// What a restore needs of the recorded paths is the sandbox's cgroup namespace: CRIU moves the
/// root task into the recorded groups up to the namespace's root and unshares a cgroup namespace
/// there, which roots it at the task's current group in *every* hierarchy. The restored tasks
/// already start in the sandbox's groups (the worker joined them, `join_cgroups`) and cannot
/// leave them, so one recorded controller in which the sandbox has a group of its own suffices.
/// Recording all of them cost every restore a usernsd round trip per controller for each task:
/// CRIU 4.2 gives each non-root task a cgroup set of its own (it compares a task's set with the
/// known ones before copying the namespace prefix into it), so each was moved one by one into
/// all 12 hierarchies of a cgroup v1 host (~40 round trips for init, agent and one process).
fn recorded_cgroup_controller(init_pid: i32) -> Option<String> {
    let cgroups = std::fs::read_to_string(format!("/proc/{init_pid}/cgroup")).ok()?;
    cgroups.lines().find_map(|line| {
        let names = line.split(':').nth(1)?;
        names
            .split(',')
            .any(|name| name == "memory")
            .then(|| names.to_owned())
    })
}

/// The dump proper (see [`dump`]); leaves the sandbox running as it was found on failure.
fn dump_into(
    images: &Path,
    init_pid: i32,
    freezer_dir: &Path,
    link: &SandboxLink,
) -> Result<criu::DumpOutcome, RuntimeError> {
    let dir = File::open(images).map_err(io_err(format!("open {images:?}")))?;
    // A pre-spawned worker (kdat cache kept, no exec on the critical path): ~40 ms less.
    // The refill ticket goes at once: a dump is not on a request's critical path.
    let (worker, _) = workers::take(images).map_err(criu_err)?;
    let freezer = burrow_standby::freezer::Freezer::open(freezer_dir).map_err(freezer_err)?;
    let was_frozen =
        freezer.state().map_err(freezer_err)? == burrow_standby::freezer::FreezerState::Frozen;
    if !was_frozen {
        freezer.freeze(FREEZE_TIMEOUT).map_err(freezer_err)?;
    }
    let give_back = |eth0_gone: bool| {
        if eth0_gone && let Err(back) = reconnect_eth0(link, init_pid) {
            tracing::error!(error = %back, "cannot give eth0 back after a failed dump");
        }
        if !was_frozen && let Err(e) = freezer.thaw() {
            tracing::error!(error = %e, "cannot thaw the sandbox after a failed dump");
        }
    };
    let sandbox_netns = format!("--net=/proc/{init_pid}/ns/net");
    // The kernel still completes handshakes for a frozen listener: connections that arrive
    // until eth0 is gone sit in an accept queue; CRIU drops them (`tcp_skip_in_flight`) and
    // their clients get a RST from the restored sandbox.
    if let Err(e) = cut_connections(&sandbox_netns) {
        give_back(false);
        return Err(e);
    }
    // CRIU cannot dump a veth whose peer is outside the dumped namespaces.
    if let Err(e) = eth0::delete_link(&link.host_veth) {
        give_back(false);
        return Err(e);
    }
    test_pause();
    let mut req = DumpRequest::new(dir.as_fd(), init_pid);
    req.external = dump_externals();
    req.freeze_cgroup = Some(freezer_dir.to_path_buf());
    req.log_level = log_level();
    // envd's file watchers are inotify watches on the overlay root, whose inodes CRIU cannot
    // open by handle ("Can't dump that handle"): it finds their paths by scanning these.
    req.irmap_scan_paths = IRMAP_SCAN_PATHS.iter().map(|p| p.to_string()).collect();
    req.cgroup_controllers = recorded_cgroup_controller(init_pid).into_iter().collect();
    match worker.dump(&req) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // The sandbox still runs (criu kills only after a complete dump).
            give_back(true);
            Err(criu_err(e))
        }
    }
}

/// Destroys (`ss -K`, SOCK_DESTROY) the sandbox's TCP sockets that are connected, connecting or
/// queued for accept to anything but loopback; their peers get a RST if `eth0` is still there.
fn cut_connections(sandbox_netns: &str) -> Result<(), RuntimeError> {
    crate::host::run_command(
        "nsenter",
        &[
            sandbox_netns,
            "ss",
            "-K",
            "-tn",
            "state",
            "connected",
            "( not dst 127.0.0.0/8 and not dst [::1] )",
        ],
        None,
    )
}

/// Test hook: `BURROW_TEST_CHECKPOINT_PAUSE_MS` stalls a dump right before CRIU runs (the
/// sandbox frozen, its `eth0` parked), so a test can kill the daemon mid-checkpoint.
fn test_pause() {
    if let Some(ms) = std::env::var("BURROW_TEST_CHECKPOINT_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!(ms, "BURROW_TEST_CHECKPOINT_PAUSE_MS: stalling the dump");
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn freezer_err(e: burrow_standby::freezer::FreezerError) -> RuntimeError {
    RuntimeError::Checkpoint(e.to_string())
}

/// `syncfs` of the filesystem holding `path`.
fn sync_filesystem(path: &Path) -> Result<(), RuntimeError> {
    use std::os::fd::AsRawFd;
    let file = File::open(path).map_err(io_err(format!("open {path:?}")))?;
    // SAFETY: syncfs on a file descriptor we own and keep open for the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io_err(format!("syncfs {path:?}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
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

/// After a restore: renames `checkpoint/` out of the way (instant) so the sandbox is no longer
/// "checkpointed" on disk, and returns the new path, to be deleted off the request's critical
/// path. A crash before the deletion leaves a `checkpoint.used-*` dir that the next dump (or
/// the sandbox's deletion) removes; a rename failure falls back to deleting it here.
pub fn set_aside_used_images(sandbox_dir: &Path) -> Option<PathBuf> {
    let images = checkpoint_dir(sandbox_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let used = sandbox_dir.join(format!("{USED_PREFIX}{nanos}"));
    match std::fs::rename(&images, &used) {
        Ok(()) => Some(used),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set the used checkpoint aside; deleting it now");
            if let Err(e) = std::fs::remove_dir_all(&images) {
                tracing::warn!(error = %e, "cannot remove the used checkpoint");
            }
            None
        }
    }
}

/// Deletes the images dirs set aside by [`set_aside_used_images`] (best effort).
pub fn remove_used_images(sandbox_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(sandbox_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(USED_PREFIX) {
            // NotFound: a background deletion got there first.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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

pub(crate) mod eth0;
mod held_root;
mod restore;
mod workers;

pub use held_root::HeldRoot;
pub use restore::{RestorePlan, hold_root, restore};
pub use workers::{set_helper as set_criu_helper, start as start_restore_workers};

/// Gives the running sandbox `pid` a new veth pair (`eth0` configured inside), replacing the
/// one it has, if any: after a failed dump, or for a sandbox a daemon crash left in the
/// middle of a checkpoint.
pub(crate) fn reconnect_eth0(link: &SandboxLink, pid: i32) -> Result<(), RuntimeError> {
    eth0::delete_link(&link.host_veth)?;
    let netns = eth0::open_netns(Path::new(&format!("/proc/{pid}/ns/net")))?;
    eth0::create_veth_into(&link.host_veth, &netns, link.eth0_config(false)?)
}
