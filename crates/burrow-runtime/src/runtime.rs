//! The [`Runtime`]: allocation of uid ranges and network slots, create/destroy/reconcile.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, chown};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use burrow_launch::{LaunchReport, LaunchSpec, OwnNetns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::binaries;
use crate::cgroup::{Cgroups, Limits};
use crate::checkpoint::{self, CheckpointInfo, RestorePlan};
use crate::error::{RuntimeError, io_err};
use crate::host::{host_ca_bundle, host_nameservers, process_matches, process_start_time};
use crate::instance::{Instance, Naming};
use crate::net::{self, MAX_SLOTS, Slot};
use crate::quota::{self, QuotaFs};
use crate::ram_dir;
use crate::state;
use crate::{
    AGENT_PORT, ReconcileReport, RuntimeConfig, SandboxHandle, SandboxSpec, SandboxUsage,
    validate_id,
};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const DEFAULT_IMAGE_GB: u64 = 64;
/// How long the agent may take to signal readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent may take to accept TCP after signalling readiness.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a restore's used images stay before they are deleted.
const USED_IMAGES_GRACE: Duration = Duration::from_secs(1);

/// Who holds what. Guarded by one std mutex, never held across an await.
#[derive(Default)]
struct Allocations {
    /// uid-range indexes in use (by live, creating, or not-yet-reconciled sandboxes).
    indexes: BTreeSet<u32>,
    /// Slots held by sandboxes.
    slots_in_use: BTreeSet<u32>,
    /// Slots whose netns is built and free.
    ready: VecDeque<u32>,
    /// Slots being built by the pool filler.
    building: BTreeSet<u32>,
    /// Live sandboxes this runtime created or adopted.
    sandboxes: HashMap<String, SandboxHandle>,
    /// Ids being created or destroyed right now.
    busy: BTreeSet<String>,
    /// Roots of checkpointed sandboxes, mounted ahead of their restore.
    held_roots: HashMap<String, checkpoint::HeldRoot>,
    /// Checkpointed sandboxes whose root the start-up re-hold is mounting right now: a restore
    /// or a destroy of one waits (a few ms) instead of racing it for the upper dir.
    holding: BTreeSet<String>,
}

impl Allocations {
    fn free_slot_numbers(&self, n: usize) -> Vec<u32> {
        (0..MAX_SLOTS)
            .filter(|k| {
                !self.slots_in_use.contains(k)
                    && !self.building.contains(k)
                    && !self.ready.contains(k)
            })
            .take(n)
            .collect()
    }
}

/// Who owns a sandbox's network namespace (`BURROW_NETNS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsMode {
    /// `host`: the sandbox joins the slot's pre-built netns (owned by the host's user
    /// namespace). CRIU cannot checkpoint such a sandbox (no deep standby).
    Host,
    /// `sandbox` (default): the launcher creates the netns inside the sandbox's user namespace
    /// and moves the slot's `eth0` into it. Needed for [`Runtime::checkpoint`] (deep standby).
    /// Costs two `ip` runs per create (no measurable create latency: `burrow bench create`
    /// p50 6.9 ms vs 7.1 ms for `host`) and a slot rebuild per destroy; sandbox root has
    /// CAP_NET_ADMIN in its netns, so the firewall drops packets whose source address does not
    /// belong to their veth.
    Sandbox,
}

impl NetnsMode {
    /// Reads `BURROW_NETNS_MODE` (`host` or `sandbox`; unset = `sandbox`).
    pub fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var("BURROW_NETNS_MODE").as_deref() {
            Err(_) | Ok("") | Ok("sandbox") => Ok(Self::Sandbox),
            Ok("host") => Ok(Self::Host),
            Ok(other) => Err(RuntimeError::Unsupported(format!(
                "BURROW_NETNS_MODE={other:?}: expected \"host\" or \"sandbox\""
            ))),
        }
    }
}

struct Shared {
    config: RuntimeConfig,
    netns_mode: NetnsMode,
    sandboxes_dir: PathBuf,
    cgroup_root: PathBuf,
    /// This runtime's claim on its host-global names (netns, veths, subnet, cgroups, uids);
    /// held, never read, for as long as the runtime lives.
    _instance: Instance,
    naming: Naming,
    quota: QuotaFs,
    nameservers: Vec<Ipv4Addr>,
    /// The host's CA bundle given to every sandbox, if the host trusts CAs of its own.
    ca_bundle: Option<PathBuf>,
    alloc: Mutex<Allocations>,
    refill: Arc<Notify>,
}

/// The runtime. Cheap to share behind an `Arc`.
pub struct Runtime {
    shared: Arc<Shared>,
}

impl Runtime {
    /// Prepares the host (quota filesystem, cgroup roots, nftables table, network slot pool)
    /// and returns the runtime. Needs root.
    pub async fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(RuntimeError::Unsupported(
                "the linux runtime must run as root".into(),
            ));
        }
        for (what, path) in [
            ("launcher", &config.launcher_path),
            ("agent", &config.agent_path),
        ] {
            if !path.is_absolute() || !path.is_file() {
                return Err(RuntimeError::Unsupported(format!(
                    "{what} binary {path:?} is not an existing absolute path"
                )));
            }
        }
        // Sandbox inits outlive their launcher; as subreaper the daemon inherits them and can
        // reap them at destroy (a zombie init keeps its cgroups busy until someone reaps it).
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let image_gb = match std::env::var("BURROW_SANDBOXES_IMAGE_GB") {
            Ok(v) => v.parse().ok().filter(|gb| *gb >= 1).ok_or_else(|| {
                RuntimeError::Unsupported(format!(
                    "BURROW_SANDBOXES_IMAGE_GB={v:?} is not a whole number of GiB >= 1"
                ))
            })?,
            Err(_) => DEFAULT_IMAGE_GB,
        };
        let netns_mode = NetnsMode::from_env()?;
        checkpoint::set_criu_helper(&config.launcher_path);
        // Sandboxes map these files, and a restore needs the very same ones: use pinned copies.
        let mut config = config;
        config = tokio::task::spawn_blocking(move || {
            config.launcher_path =
                binaries::pin(&config.data_dir, &config.launcher_path, "burrow-launch")?;
            config.agent_path =
                binaries::pin(&config.data_dir, &config.agent_path, "burrow-agent")?;
            Ok::<_, RuntimeError>(config)
        })
        .await
        .map_err(|e| RuntimeError::Launch(format!("pinning binaries panicked: {e}")))??;
        let shared =
            tokio::task::spawn_blocking(move || prepare_host(config, image_gb, netns_mode))
                .await
                .map_err(|e| RuntimeError::Launch(format!("host preparation panicked: {e}")))??;
        let shared = Arc::new(shared);
        if netns_mode == NetnsMode::Sandbox {
            // Deep standby is possible: get criu restore workers ready (runs `criu check`).
            std::thread::spawn(checkpoint::start_restore_workers);
        }
        tokio::spawn(fill_pool_forever(Arc::downgrade(&shared)));
        shared.refill.notify_one();
        Ok(Self { shared })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Creates a sandbox and returns once its agent is listening.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle, RuntimeError> {
        spec.validate()?;
        let started = Instant::now();
        let (index, slot) = self.reserve(&spec.id).await?;
        let reserved = started.elapsed();
        let result = self.build(&spec, index, slot, Over::NewFiles).await;
        let outcome = match result {
            Ok(handle) => {
                let mut alloc = self.shared.lock_alloc();
                alloc.sandboxes.insert(spec.id.clone(), handle.clone());
                alloc.busy.remove(&spec.id);
                tracing::info!(id = %spec.id, total_ms = started.elapsed().as_secs_f64() * 1e3,
                    reserve_ms = reserved.as_secs_f64() * 1e3, "sandbox created");
                Ok(handle)
            }
            Err(e) => {
                tracing::warn!(id = %spec.id, error = %e, "sandbox create failed; cleaning up");
                let shared = self.shared.clone();
                let id = spec.id.clone();
                let cleanup = tokio::task::spawn_blocking(move || {
                    teardown(&shared, &id, Some((index, slot)))
                })
                .await;
                if let Ok(Err(ce)) = cleanup {
                    tracing::error!(id = %spec.id, error = %ce, "cleanup after failed create failed");
                }
                Err(e)
            }
        };
        self.shared.refill.notify_one();
        outcome
    }

    /// Kills every process of the sandbox and releases everything it held (cgroups, network slot,
    /// upper dir, runtime state). Idempotent: destroying an unknown id is not an error.
    pub async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        if !self.claim_busy(id).await {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {id} is being created or destroyed right now"
            )));
        }
        let shared = self.shared.clone();
        let owned = id.to_owned();
        let result = tokio::task::spawn_blocking(move || teardown(&shared, &owned, None))
            .await
            .map_err(|e| RuntimeError::Launch(format!("destroy panicked: {e}")))?;
        self.shared.refill.notify_one();
        result
    }

    /// Restart from files: starts sandbox `spec.id`, whose processes are gone (it is not
    /// running, adopted or checkpointed), afresh over the files it kept (same dir, upper dir,
    /// uid range and network slot, so the same address). A new init and agent; cgroups and the
    /// network namespace are made anew with the spec's limits. On failure the files are kept
    /// and the kernel resources released again.
    pub async fn restart_from_files(
        &self,
        spec: SandboxSpec,
    ) -> Result<SandboxHandle, RuntimeError> {
        spec.validate()?;
        if !self.claim_busy(&spec.id).await {
            return Err(RuntimeError::Busy(format!(
                "sandbox {} is being created, destroyed, checkpointed or restored right now",
                spec.id
            )));
        }
        let result = self.restart_claimed(&spec).await;
        let mut alloc = self.shared.lock_alloc();
        alloc.busy.remove(&spec.id);
        if let Ok(handle) = &result {
            alloc.sandboxes.insert(spec.id.clone(), handle.clone());
        }
        drop(alloc);
        self.shared.refill.notify_one();
        result
    }

    async fn restart_claimed(&self, spec: &SandboxSpec) -> Result<SandboxHandle, RuntimeError> {
        let dir = self.sandbox_dir(&spec.id);
        let known = self.shared.lock_alloc().sandboxes.get(&spec.id).cloned();
        if let Some(h) = &known
            && self.is_alive(h)
        {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {} is running: only a sandbox whose processes are gone can be \
                 restarted from its files",
                spec.id
            )));
        }
        if checkpoint::checkpoint_dir(&dir).exists() {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {} is in deep standby: wake it instead (its processes come back)",
                spec.id
            )));
        }
        let Some(old) = known.or_else(|| state::load(&dir)) else {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {} has no runtime state (runtime.json) to restart from",
                spec.id
            )));
        };
        let index = state::index_of(old.uid_base).ok_or_else(|| {
            RuntimeError::Invalid(format!("sandbox {}: bad uid base in runtime.json", spec.id))
        })?;
        let slot = Slot::new(self.shared.naming, old.slot);
        {
            let mut alloc = self.shared.lock_alloc();
            alloc.indexes.insert(index);
            alloc.slots_in_use.insert(slot.k);
            alloc.sandboxes.remove(&spec.id);
        }
        let shared = self.shared.clone();
        let id = spec.id.clone();
        // Old processes (an init that exited leaves none, but be sure), then a clean slot.
        tokio::task::spawn_blocking(move || {
            release_kernel_resources(&shared, &id, Some(&old))?;
            net::create_slots(&[slot], shared.slot_kind())
        })
        .await
        .map_err(|e| RuntimeError::Launch(format!("restart preparation panicked: {e}")))??;
        let result = self.build(spec, index, slot, Over::ExistingFiles).await;
        if let Err(e) = &result {
            tracing::warn!(id = %spec.id, error = %e, "restart from files failed; keeping the files");
            let shared = self.shared.clone();
            let id = spec.id.clone();
            let placeholder = SandboxHandle {
                id: spec.id.clone(),
                slot: slot.k,
                uid_base: state::uid_base(index),
                ip: slot.sandbox_ip(),
                init_pid: 0,
                init_start_time: 0,
            };
            let cleanup =
                tokio::task::spawn_blocking(move || release_dead(&shared, &id, Some(&placeholder)))
                    .await;
            if let Ok(Err(ce)) = cleanup {
                tracing::error!(id = %spec.id, error = %ce, "cleanup after a failed restart failed");
            }
        } else {
            tracing::info!(id = %spec.id, "sandbox restarted from its files");
        }
        result
    }

    /// Kills the sandbox's processes and releases its kernel resources (cgroups, network
    /// namespace) but keeps its files, uid range and slot: it can be restarted from its files
    /// ([`Runtime::restart_from_files`]) or destroyed later.
    pub async fn stop_keeping_files(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        if !self.claim_busy(id).await {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {id} is being created or destroyed right now"
            )));
        }
        let shared = self.shared.clone();
        let owned = id.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let dir = shared.sandboxes_dir.join(&owned);
            let known = shared.lock_alloc().sandboxes.get(&owned).cloned();
            let handle = known.or_else(|| state::load(&dir));
            release_dead(&shared, &owned, handle.as_ref())
        })
        .await
        .map_err(|e| RuntimeError::Launch(format!("stop panicked: {e}")));
        self.end_power_change(id);
        result?
    }

    /// Deep standby: checkpoints every process of the sandbox with CRIU into
    /// `<sandbox_dir>/checkpoint/`; the processes are gone afterwards (files, cgroups and the
    /// network slot stay). Needs `BURROW_NETNS_MODE=sandbox` (the default) when the sandbox was
    /// created. The images dir appears only once complete (see [`checkpoint::dump`]).
    pub async fn checkpoint(&self, id: &str) -> Result<CheckpointInfo, RuntimeError> {
        let handle = self.begin_power_change(id).await?;
        let shared = self.shared.clone();
        let owned = id.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            let dir = shared.sandboxes_dir.join(&owned);
            refuse_if_zdr(&dir, &owned)?;
            if !dir.join(checkpoint::LAUNCH_SPEC_FILE).exists() {
                return Err(RuntimeError::Unsupported(format!(
                    "sandbox {owned} was created with BURROW_NETNS_MODE=host (its network \
                     namespace belongs to the host): it cannot be checkpointed"
                )));
            }
            // A restore after a host reboot recreates the cgroups with these.
            save_limits(&dir, &shared, &owned)?;
            let freezer = shared
                .cgroup_root
                .join("freezer")
                .join(shared.naming.cgroup_parent())
                .join(&owned);
            let slot = Slot::new(shared.naming, handle.slot);
            let info = checkpoint::dump(
                &dir,
                handle.init_pid,
                handle.uid_base,
                &freezer,
                &checkpoint::SandboxLink::of_slot(slot),
            )?;
            // CRIU killed the tree; make sure nothing is left and reap init (we are subreaper).
            shared.cgroups(&owned).kill_all()?;
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer.
            unsafe { libc::waitpid(handle.init_pid, &mut status, 0) };
            // The next restore only attaches it. Best effort: it mounts the root itself.
            match checkpoint::hold_root(&dir, &shared.config.launcher_path) {
                Ok(held) => {
                    shared.lock_alloc().held_roots.insert(owned.clone(), held);
                }
                Err(e) => tracing::warn!(id = %owned, error = %e, "cannot hold the root"),
            }
            Ok(info)
        })
        .await
        .map_err(|e| RuntimeError::Checkpoint(format!("checkpoint panicked: {e}")));
        self.end_power_change(id);
        let info = result??;
        tracing::info!(
            id,
            image_bytes = info.image_bytes,
            ms = info.duration.as_secs_f64() * 1e3,
            "sandbox checkpointed"
        );
        Ok(info)
    }

    /// Restores a sandbox checkpointed by [`Runtime::checkpoint`] (same in-sandbox pids, memory,
    /// sockets) and returns once its agent accepts TCP again. Its init has a new host pid:
    /// `runtime.json` and the returned handle say which.
    pub async fn restore(&self, id: &str) -> Result<SandboxHandle, RuntimeError> {
        let handle = self.begin_power_change(id).await?;
        let result = self.restore_inner(handle).await;
        self.end_power_change(id);
        result
    }

    async fn restore_inner(&self, old: SandboxHandle) -> Result<SandboxHandle, RuntimeError> {
        if self.is_alive(&old) {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {} is running: only a checkpointed sandbox can be restored",
                old.id
            )));
        }
        let shared = self.shared.clone();
        let id = old.id.clone();
        let slot = Slot::new(self.shared.naming, old.slot);
        let init_pid = tokio::task::spawn_blocking(move || {
            let cgroups = shared.cgroups(&id);
            let dir = shared.sandboxes_dir.join(&id);
            recreate_after_reboot(&dir, &cgroups, slot)?;
            // A dump leaves the freezer as it found it; restored tasks must not start frozen.
            cgroups.thaw()?;
            let plan = RestorePlan {
                sandbox_dir: &dir,
                launcher: &shared.config.launcher_path,
                link: checkpoint::SandboxLink::of_slot(slot),
                cgroup_dirs: cgroups
                    .procs_files()
                    .iter()
                    .filter_map(|p| p.parent().map(Path::to_path_buf))
                    .collect(),
            };
            let held = shared.lock_alloc().held_roots.remove(&id);
            let init_pid = checkpoint::restore(&plan, held)?;
            shield_init_and_agent(init_pid);
            Ok::<_, RuntimeError>(init_pid)
        })
        .await
        .map_err(|e| RuntimeError::Checkpoint(format!("restore panicked: {e}")))??;
        let init_start_time = process_start_time(init_pid).ok_or_else(|| {
            RuntimeError::Checkpoint(format!("restored init (pid {init_pid}) died at once"))
        })?;
        let t = Instant::now();
        wait_for_tcp(old.agent_addr()).await?;
        tracing::debug!(id = %old.id, connect_ms = t.elapsed().as_secs_f64() * 1e3, "restored agent accepts TCP");
        let handle = SandboxHandle {
            init_pid,
            init_start_time,
            ..old
        };
        let dir = self.sandbox_dir(&handle.id);
        state::save(&dir, &handle)?;
        // Renamed away now (a live init next to `checkpoint/` would read as a crashed restore),
        // deleted in the background a little later: freeing its page cache costs CPU that the
        // request that woke the sandbox needs now. A dump or a deletion meanwhile removes it too.
        if let Some(used) = checkpoint::set_aside_used_images(&dir) {
            tokio::spawn(async move {
                tokio::time::sleep(USED_IMAGES_GRACE).await;
                let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&used) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(path = %used.display(), error = %e, "cannot remove the used checkpoint");
                    }
                    _ => {}
                })
                .await;
            });
        }
        self.shared
            .lock_alloc()
            .sandboxes
            .insert(handle.id.clone(), handle.clone());
        Ok(handle)
    }

    /// Whether the root of checkpointed sandbox `id` is mounted ahead of its restore (see
    /// [`checkpoint::HeldRoot`]); not after a restart of the runtime.
    pub fn holds_root(&self, id: &str) -> bool {
        self.shared.lock_alloc().held_roots.contains_key(id)
    }

    /// Marks `id` busy, after waiting for the start-up re-hold of its root if that is under way
    /// (see [`Runtime::hold_checkpointed_roots`]). False if it is busy already.
    async fn claim_busy(&self, id: &str) -> bool {
        loop {
            {
                let mut alloc = self.shared.lock_alloc();
                if !alloc.holding.contains(id) {
                    return alloc.busy.insert(id.to_owned());
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Mounts the roots of the checkpointed sandboxes in `ids` ahead of their restore, in the
    /// background, one after another (after a restart the runtime holds none, and each first
    /// wake would mount its own: ~3 ms more). Skips a sandbox that is busy or already held; a
    /// restore or destroy that comes meanwhile waits for that sandbox's hold to finish.
    pub fn hold_checkpointed_roots(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut held = 0;
            for id in ids {
                {
                    let mut alloc = shared.lock_alloc();
                    if alloc.busy.contains(&id)
                        || alloc.held_roots.contains_key(&id)
                        || !alloc.sandboxes.contains_key(&id)
                    {
                        continue;
                    }
                    alloc.holding.insert(id.clone());
                }
                let dir = shared.sandboxes_dir.join(&id);
                let result = if checkpoint::checkpoint_dir(&dir).is_dir() {
                    checkpoint::hold_root(&dir, &shared.config.launcher_path).map(Some)
                } else {
                    Ok(None)
                };
                let mut alloc = shared.lock_alloc();
                alloc.holding.remove(&id);
                match result {
                    Ok(Some(root)) => {
                        alloc.held_roots.insert(id, root);
                        held += 1;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%id, error = %e, "cannot hold the root"),
                }
            }
            tracing::info!(
                held,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "roots of checkpointed sandboxes mounted ahead"
            );
        });
    }

    /// Marks `id` busy for a checkpoint/restore and returns its handle.
    async fn begin_power_change(&self, id: &str) -> Result<SandboxHandle, RuntimeError> {
        validate_id(id)?;
        if self.shared.netns_mode != NetnsMode::Sandbox {
            return Err(RuntimeError::Unsupported(
                "checkpoint/restore needs the sandbox-owned network namespace: start the runtime \
                 with BURROW_NETNS_MODE=sandbox (and create the sandbox under it)"
                    .into(),
            ));
        }
        if !self.claim_busy(id).await {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {id} is being created, destroyed, checkpointed or restored right now"
            )));
        }
        let handle = self.shared.lock_alloc().sandboxes.get(id).cloned();
        handle.ok_or_else(|| {
            self.end_power_change(id);
            RuntimeError::NotFound(id.to_owned())
        })
    }

    fn end_power_change(&self, id: &str) {
        let mut alloc = self.shared.lock_alloc();
        alloc.busy.remove(id);
    }

    /// Whether [`Runtime::checkpoint`] can work for `id`; the error says why not.
    pub fn can_checkpoint(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id)?;
        if self.shared.netns_mode != NetnsMode::Sandbox {
            return Err(RuntimeError::Unsupported(
                "deep standby (CRIU) needs the sandbox-owned network namespace, but this runtime \
                 runs with BURROW_NETNS_MODE=host; restart it without that setting"
                    .into(),
            ));
        }
        if !self
            .sandbox_dir(id)
            .join(checkpoint::LAUNCH_SPEC_FILE)
            .exists()
        {
            return Err(RuntimeError::Unsupported(format!(
                "sandbox {id} was created with BURROW_NETNS_MODE=host (its network namespace \
                 belongs to the host): it cannot be checkpointed"
            )));
        }
        refuse_if_zdr(&self.sandbox_dir(id), id)
    }

    /// Who owns sandbox network namespaces in this runtime (deep standby needs `Sandbox`).
    pub fn netns_mode(&self) -> NetnsMode {
        self.shared.netns_mode
    }

    /// True if the sandbox's init is still alive.
    pub fn is_alive(&self, handle: &SandboxHandle) -> bool {
        process_matches(handle.init_pid, handle.init_start_time)
    }

    /// Reads current usage from the sandbox's cgroups and upper dir.
    pub async fn usage(&self, handle: &SandboxHandle) -> Result<SandboxUsage, RuntimeError> {
        let cg = self.shared.cgroups(&handle.id);
        if !cg.exists() {
            return Err(RuntimeError::NotFound(handle.id.clone()));
        }
        let dir = self.sandbox_dir(&handle.id);
        let disk_bytes = tokio::task::spawn_blocking(move || {
            if ram_dir::is_ram(&dir) {
                ram_dir::usage(&dir)
            } else {
                quota::usage(&dir)
            }
        })
        .await
        .map_err(|e| RuntimeError::Launch(format!("usage panicked: {e}")))??;
        Ok(SandboxUsage {
            cpu_seconds: cg.cpu_seconds(),
            memory_bytes: cg.memory_bytes(),
            memory_limit_bytes: cg.memory_limit_bytes(),
            disk_bytes,
            pids: cg.pids_current(),
        })
    }

    /// After a daemon start: adopts sandboxes in `known` whose processes still run, releases the
    /// resources of those that died, and removes anything burrow left behind that `known` does not
    /// name.
    pub async fn reconcile(&self, known: &[String]) -> Result<ReconcileReport, RuntimeError> {
        let shared = self.shared.clone();
        let known: BTreeSet<String> = known.iter().cloned().collect();
        let report = tokio::task::spawn_blocking(move || reconcile_blocking(&shared, &known))
            .await
            .map_err(|e| RuntimeError::Launch(format!("reconcile panicked: {e}")))??;
        self.shared.refill.notify_one();
        self.hold_checkpointed_roots(report.checkpointed.iter().map(|h| h.id.clone()).collect());
        Ok(report)
    }

    /// Number of network slots built and waiting for a sandbox.
    pub fn ready_slots(&self) -> usize {
        self.shared.lock_alloc().ready.len()
    }

    /// The cgroup v1 directory of sandbox `id` for `controller` (e.g. `freezer`).
    pub fn cgroup_dir(&self, controller: &str, id: &str) -> PathBuf {
        self.shared
            .cgroup_root
            .join(controller)
            .join(self.shared.naming.cgroup_parent())
            .join(id)
    }

    /// Directory of sandbox `id` (`<data_dir>/sandboxes/<id>`).
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.shared.sandboxes_dir.join(id)
    }

    /// Picks a uid range and a network slot for `id` (building a slot now if the pool is empty).
    async fn reserve(&self, id: &str) -> Result<(u32, Slot), RuntimeError> {
        let sandbox_dir = self.sandbox_dir(id);
        let (index, slot) = {
            let mut alloc = self.shared.lock_alloc();
            if alloc.sandboxes.contains_key(id) || alloc.busy.contains(id) || sandbox_dir.exists() {
                return Err(RuntimeError::Invalid(format!(
                    "sandbox {id} already exists"
                )));
            }
            let index = self
                .shared
                .naming
                .uid_indexes()
                .find(|i| !alloc.indexes.contains(i))
                .ok_or(RuntimeError::Exhausted)?;
            let slot = match alloc.ready.pop_front() {
                Some(k) => Some(k),
                None => alloc.free_slot_numbers(1).first().copied(),
            };
            let Some(slot) = slot else {
                return Err(RuntimeError::Exhausted);
            };
            alloc.indexes.insert(index);
            alloc.slots_in_use.insert(slot);
            alloc.busy.insert(id.to_owned());
            (index, Slot::new(self.shared.naming, slot))
        };
        if !slot.netns_path().exists() {
            tracing::debug!(
                slot = slot.k,
                "network pool empty: building a slot on the create path"
            );
            let kind = self.shared.slot_kind();
            let built = tokio::task::spawn_blocking(move || net::create_slots(&[slot], kind)).await;
            let built = built
                .map_err(|e| RuntimeError::Launch(format!("slot build panicked: {e}")))
                .and_then(|r| r);
            if let Err(e) = built {
                let mut alloc = self.shared.lock_alloc();
                alloc.indexes.remove(&index);
                alloc.slots_in_use.remove(&slot.k);
                alloc.busy.remove(id);
                let _ = net::delete_slot(slot);
                return Err(e);
            }
        }
        Ok((index, slot))
    }

    async fn build(
        &self,
        spec: &SandboxSpec,
        index: u32,
        slot: Slot,
        over: Over,
    ) -> Result<SandboxHandle, RuntimeError> {
        let t = Instant::now();
        let shared = self.shared.clone();
        let owned = spec.clone();
        let launch_spec = tokio::task::spawn_blocking(move || {
            prepare_sandbox(&shared, &owned, index, slot, over)
        })
        .await
        .map_err(|e| RuntimeError::Launch(format!("prepare panicked: {e}")))??;
        if self.shared.netns_mode == NetnsMode::Sandbox {
            checkpoint::save_launch_spec(&self.sandbox_dir(&spec.id), &launch_spec)?;
            // The launcher creates the host end: one left from a Full slot would be in the way.
            net::delete_host_veth(slot)?;
        }
        let prepared = t.elapsed();
        let report = run_launcher(&self.shared.config.launcher_path, &launch_spec).await?;
        let launched = t.elapsed();
        let init_pid = report
            .init_pid
            .ok_or_else(|| RuntimeError::Launch("report without init_pid".into()))?;
        let addr = std::net::SocketAddr::from((slot.sandbox_ip(), AGENT_PORT));
        wait_for_link_up(&slot.host_veth()).await;
        wait_for_tcp(addr).await?;
        let connected = t.elapsed();
        let init_start_time = process_start_time(init_pid).ok_or_else(|| {
            RuntimeError::Launch(format!(
                "sandbox init (pid {init_pid}) died right after start"
            ))
        })?;
        if !burrow_launch::process_limits::is_shielded_from_oom(&init_pid.to_string()) {
            warn_unshielded_once("the launcher could not set it");
        }
        let handle = SandboxHandle {
            id: spec.id.clone(),
            slot: slot.k,
            uid_base: state::uid_base(index),
            ip: slot.sandbox_ip(),
            init_pid,
            init_start_time,
        };
        state::save(&self.sandbox_dir(&spec.id), &handle)?;
        let phases: Vec<String> = report
            .phases_us
            .iter()
            .map(|(n, us)| format!("{n}={:.2}", *us as f64 / 1e3))
            .collect();
        tracing::debug!(id = %spec.id,
            prepare_ms = prepared.as_secs_f64() * 1e3,
            launch_ms = (launched - prepared).as_secs_f64() * 1e3,
            connect_ms = (connected - launched).as_secs_f64() * 1e3,
            launcher_phases_ms = %phases.join(" "),
            "sandbox create phases");
        Ok(handle)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Wake the pool filler so it notices the runtime is gone and exits.
        self.shared.refill.notify_one();
    }
}

/// Blocking host preparation for [`Runtime::new`].
fn prepare_host(
    config: RuntimeConfig,
    image_gb: u64,
    netns_mode: NetnsMode,
) -> Result<Shared, RuntimeError> {
    let sandboxes_dir = config.data_dir.join("sandboxes");
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io_err(format!("create {:?}", config.data_dir)))?;
    // No host user but root may reach anything a sandbox stores (see the server's data dir).
    set_mode(&config.data_dir, 0o700)?;
    let quota = QuotaFs::ensure(
        &sandboxes_dir,
        &config.data_dir.join("sandboxes.img"),
        image_gb,
    )?;
    // Only root needs in: sandbox inits reach their root through an fd, never by this path.
    set_mode(&sandboxes_dir, 0o700)?;
    let instance = Instance::claim(&config.data_dir)?;
    // This data dir is ours now: pinned binaries of earlier versions no checkpoint needs go.
    binaries::collect_unused(
        &config.data_dir,
        &sandboxes_dir,
        &[&config.launcher_path, &config.agent_path],
    );
    let naming = instance.naming();
    tracing::info!(instance = naming.0, "runtime instance claimed");
    let cgroup_root = PathBuf::from(CGROUP_ROOT);
    Cgroups::ensure_parents(&cgroup_root, &naming.cgroup_parent())?;
    crate::cgroup::favor_dynamic_moves();
    let nameservers = host_nameservers();
    if nameservers.is_empty() {
        tracing::warn!(
            "no non-loopback IPv4 nameserver in /etc/resolv.conf: sandboxes will have no DNS"
        );
    }
    net::install_firewall(naming, &nameservers, netns_mode == NetnsMode::Sandbox)?;
    crate::host::warn_if_file_max_low();

    // Everything a previous daemon left on disk stays reserved until reconcile decides.
    let mut alloc = Allocations::default();
    for entry in std::fs::read_dir(&sandboxes_dir)
        .map_err(io_err(format!("read {sandboxes_dir:?}")))?
        .flatten()
    {
        if let Some(handle) = state::load(&entry.path()) {
            if let Some(index) = state::index_of(handle.uid_base) {
                alloc.indexes.insert(index);
            }
            alloc.slots_in_use.insert(handle.slot);
        }
    }
    // The instance lock makes this runtime the only owner of its cgroup parent: groups there
    // with no sandbox dir here were left by an earlier owner of the instance (another data dir
    // whose server is gone). Kill them now, before their uid range could be handed out again.
    let parent = naming.cgroup_parent();
    for id in crate::cgroup::existing_ids(&cgroup_root, &parent) {
        if !sandboxes_dir.join(&id).exists() {
            tracing::warn!(
                id,
                "removing a sandbox cgroup left by an earlier owner of this instance"
            );
            let cg = Cgroups::new(&cgroup_root, &parent, &id);
            cg.kill_all()?;
            cg.remove()?;
        }
    }
    // Namespaces nobody claims are in an unknown state: rebuild rather than reuse.
    for slot in net::existing_slots(naming) {
        if !alloc.slots_in_use.contains(&slot.k) {
            net::delete_slot(slot)?;
        }
    }
    let ready_now = alloc.free_slot_numbers(config.net_pool_size);
    net::create_slots(
        &ready_now
            .iter()
            .map(|k| Slot::new(naming, *k))
            .collect::<Vec<_>>(),
        slot_kind(netns_mode),
    )?;
    alloc.ready.extend(ready_now);
    Ok(Shared {
        netns_mode,
        config,
        sandboxes_dir,
        cgroup_root,
        _instance: instance,
        naming,
        quota,
        nameservers,
        ca_bundle: host_ca_bundle(),
        alloc: Mutex::new(alloc),
        refill: Arc::new(Notify::new()),
    })
}

impl Shared {
    /// The allocations (a poisoned lock is taken over: every update keeps them consistent).
    fn lock_alloc(&self) -> std::sync::MutexGuard<'_, Allocations> {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cgroups(&self, id: &str) -> Cgroups {
        Cgroups::new(&self.cgroup_root, &self.naming.cgroup_parent(), id)
    }

    fn slot_kind(&self) -> net::SlotKind {
        slot_kind(self.netns_mode)
    }
}

/// After a restore: exempts the sandbox's init and agent from its OOM killer again. CRIU
/// cannot: it restores a score from inside the sandbox's user namespace, without
/// CAP_SYS_RESOURCE over the minimum of 0 (see burrow-launch's process_limits). The agent is
/// init's child running `/.burrow/agent`; a process that only pretends to be it gains nothing
/// beyond its own sandbox (its memory cgroup is the same). Failures are logged: the sandbox
/// works, only less robustly under its own memory pressure.
fn shield_init_and_agent(init_pid: i32) {
    let children = std::fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children"))
        .unwrap_or_default();
    let agents = children.split_whitespace().filter(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|argv| argv.split(|b| *b == 0).next() == Some(b"/.burrow/agent"))
    });
    for pid in std::iter::once(init_pid.to_string()).chain(agents.map(str::to_owned)) {
        if let Err(e) = burrow_launch::process_limits::shield_from_oom(&pid) {
            warn_unshielded_once(&e.0);
        }
    }
}

/// Logs (once per daemon) that sandboxes run without init's and the agent's exemption from
/// their OOM killer: the daemon lacks CAP_SYS_RESOURCE.
fn warn_unshielded_once(why: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            error = why,
            "sandbox init and agent are not exempt from their sandbox's OOM killer \
             (oom_score_adj -1000 needs CAP_SYS_RESOURCE): a sandbox that runs out of memory \
             may lose them"
        );
    });
}

/// Pool slots of sandbox netns mode hold no veth: the launcher creates it in place.
fn slot_kind(mode: NetnsMode) -> net::SlotKind {
    match mode {
        NetnsMode::Host => net::SlotKind::Full,
        NetnsMode::Sandbox => net::SlotKind::NetnsOnly,
    }
}

/// Keeps `net_pool_size` slots built ahead of demand until the runtime is dropped.
async fn fill_pool_forever(shared: Weak<Shared>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let wanted = {
            let mut alloc = strong.lock_alloc();
            let missing = strong
                .config
                .net_pool_size
                .saturating_sub(alloc.ready.len() + alloc.building.len());
            let numbers = alloc.free_slot_numbers(missing);
            alloc.building.extend(numbers.iter().copied());
            numbers
        };
        if !wanted.is_empty() {
            let slots: Vec<Slot> = wanted
                .iter()
                .map(|k| Slot::new(strong.naming, *k))
                .collect();
            let build = slots.clone();
            let kind = strong.slot_kind();
            let result = tokio::task::spawn_blocking(move || net::create_slots(&build, kind)).await;
            let ok = matches!(result, Ok(Ok(())));
            if !ok {
                tracing::error!(?result, "building network slots failed");
                for s in &slots {
                    let _ = net::delete_slot(*s);
                }
            }
            {
                let mut alloc = strong.lock_alloc();
                for k in wanted {
                    alloc.building.remove(&k);
                    if ok {
                        alloc.ready.push_back(k);
                    }
                }
            }
            if !ok {
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // Wait for a create/destroy to ask for more, without keeping the runtime alive.
        let refill = strong.refill.clone();
        drop(strong);
        let _ = tokio::time::timeout(Duration::from_secs(5), refill.notified()).await;
    }
}

/// What a launch starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    /// A new sandbox: its dir, quota, upper and work dirs are made.
    NewFiles,
    /// A restart from files: the sandbox's dir and upper dir exist and are kept.
    ExistingFiles,
}

/// Blocking part of create (and of a restart from files): dirs, quota, cgroups, and the
/// launch spec.
fn prepare_sandbox(
    shared: &Shared,
    spec: &SandboxSpec,
    index: u32,
    slot: Slot,
    over: Over,
) -> Result<LaunchSpec, RuntimeError> {
    let dir = shared.sandboxes_dir.join(&spec.id);
    if over == Over::ExistingFiles {
        // A restart from files: the dir, its quota and its upper dir are kept as they are.
        let upper = dir.join("upper");
        if !upper.is_dir() {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {} has no files to restart from ({upper:?} is missing)",
                spec.id
            )));
        }
    } else if spec.zdr {
        // Zero data retention: a tmpfs of the disk limit, so upper and work never touch the disk.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(format!("create {dir:?}")))?;
        ram_dir::mount(&dir, spec.disk_mb << 20)?;
    } else {
        // A btrfs subvolume carrying the disk limit (upper and work live in it).
        shared
            .quota
            .create_limited_dir(&spec.id, spec.disk_mb << 20)?;
    }
    set_mode(&dir, 0o700)?;
    let uid_base = state::uid_base(index);
    // A placeholder handle (init_pid 0) so a crash from here on is found and cleaned by reconcile.
    let placeholder = SandboxHandle {
        id: spec.id.clone(),
        slot: slot.k,
        uid_base,
        ip: slot.sandbox_ip(),
        init_pid: 0,
        init_start_time: 0,
    };
    state::save(&dir, &placeholder)?;
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work] {
        match std::fs::DirBuilder::new().mode(0o755).create(d) {
            Err(e)
                if over == Over::ExistingFiles && e.kind() == std::io::ErrorKind::AlreadyExists => {
            }
            r => r.map_err(io_err(format!("create {d:?}")))?,
        }
        chown(d, Some(uid_base), Some(uid_base)).map_err(io_err(format!("chown {d:?}")))?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(&rootfs) {
        Err(e) if over == Over::ExistingFiles && e.kind() == std::io::ErrorKind::AlreadyExists => {}
        r => r.map_err(io_err(format!("create {rootfs:?}")))?,
    }
    let cgroups = shared.cgroups(&spec.id);
    if over == Over::ExistingFiles {
        // Whatever a dead init left in them goes; they are made anew with the spec's limits.
        cgroups.kill_all()?;
        cgroups.remove()?;
    }
    cgroups.create(Limits {
        memory_bytes: spec.memory_mb << 20,
        cpus: spec.cpus,
        pids_max: spec.pids_max,
    })?;
    if spec.zdr {
        cgroups.never_swap()?;
    }

    let mut agent_env = BTreeMap::new();
    agent_env.insert("BURROW_SANDBOX_ID".to_owned(), spec.id.clone());
    // The launcher passes the readiness pipe as fd 3 (ARCHITECTURE.md); the agent reads this.
    agent_env.insert("BURROW_READY_FD".to_owned(), "3".to_owned());
    agent_env.insert("BURROW_TEMPLATE".to_owned(), spec.template.clone());
    agent_env.insert("BURROW_DEFAULT_USER".to_owned(), spec.default_user.clone());
    // Loopback-only services reachable through the port proxy, like E2B's envd.
    agent_env.insert("BURROW_FORWARD_LOCALHOST".to_owned(), "1".to_owned());
    let env_json =
        serde_json::to_string(&spec.env).map_err(|e| RuntimeError::Invalid(format!("env: {e}")))?;
    agent_env.insert("BURROW_ENV_JSON".to_owned(), env_json);
    if let Some(token) = &spec.access_token {
        agent_env.insert("BURROW_ACCESS_TOKEN".to_owned(), token.clone());
    }
    if let Some(workdir) = &spec.default_workdir {
        agent_env.insert("BURROW_DEFAULT_WORKDIR".to_owned(), workdir.clone());
    }
    Ok(LaunchSpec {
        id: spec.id.clone(),
        layers: spec.layers.clone(),
        upper_dir: upper,
        work_dir: work,
        rootfs_dir: rootfs,
        uid_base,
        netns_path: slot.netns_path(),
        cgroup_procs: cgroups.procs_files(),
        agent_path: shared.config.agent_path.clone(),
        agent_env,
        nameservers: shared.nameservers.iter().map(|n| n.to_string()).collect(),
        // A ZDR sandbox's output could hold its data: it goes to /dev/null, never to disk.
        agent_log: (!spec.zdr).then(|| dir.join("agent.log")),
        ready_timeout_ms: Some(READY_TIMEOUT.as_millis() as u64),
        own_netns: (shared.netns_mode == NetnsMode::Sandbox).then(|| OwnNetns {
            address: slot.sandbox_ip(),
            prefix_len: 30,
            gateway: slot.host_ip(),
            host_veth: Some(slot.host_veth()),
        }),
        ca_bundle: shared.ca_bundle.clone(),
        launcher_path: Some(shared.config.launcher_path.clone()),
    })
}

async fn run_launcher(launcher: &Path, spec: &LaunchSpec) -> Result<LaunchReport, RuntimeError> {
    let input =
        serde_json::to_vec(spec).map_err(|e| RuntimeError::Launch(format!("encode spec: {e}")))?;
    let mut child = tokio::process::Command::new(launcher)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RuntimeError::Launch(format!("cannot run {launcher:?}: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| RuntimeError::Launch("no stdin pipe".into()))?;
    stdin
        .write_all(&input)
        .await
        .map_err(|e| RuntimeError::Launch(format!("write spec to launcher: {e}")))?;
    drop(stdin);
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| RuntimeError::Launch("no stdout pipe".into()))?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        READY_TIMEOUT + Duration::from_secs(5),
        stdout.read_to_end(&mut out),
    )
    .await;
    let status = child.wait().await;
    if read.is_err() {
        return Err(RuntimeError::Launch(
            "launcher did not answer in time".into(),
        ));
    }
    let line = String::from_utf8_lossy(&out);
    let report: LaunchReport = serde_json::from_str(line.trim()).map_err(|e| {
        RuntimeError::Launch(format!(
            "unreadable launcher report {:?} (exit {status:?}): {e}",
            line.trim()
        ))
    })?;
    if !report.ok {
        if let Some(pid) = report.init_pid {
            // The launcher killed the init it started; as subreaper we inherited and must reap it.
            let reap = move || {
                let mut status = 0;
                // SAFETY: waitpid with a valid out-pointer; the SIGKILLed init exits promptly.
                unsafe { libc::waitpid(pid, &mut status, 0) }
            };
            let _ = tokio::task::spawn_blocking(reap).await;
        }
        return Err(RuntimeError::Launch(
            report.error.unwrap_or_else(|| "unknown error".into()),
        ));
    }
    Ok(report)
}

/// Waits (up to [`CONNECT_TIMEOUT`]) until the host end of a new sandbox's veth can transmit, so
/// the first ARP request and SYN are not lost (see [`net::link_is_up`]).
async fn wait_for_link_up(veth: &str) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while !net::link_is_up(veth) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_for_tcp(addr: std::net::SocketAddr) -> Result<(), RuntimeError> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%addr, error = %e, "agent not accepting yet");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(Err(e)) => {
                return Err(RuntimeError::Launch(format!(
                    "agent at {addr} does not accept TCP: {e}"
                )));
            }
            Err(_) => {
                return Err(RuntimeError::Launch(format!(
                    "agent at {addr} did not accept TCP within 2 s"
                )));
            }
        }
    }
}

/// Kills and removes everything of sandbox `id`, then releases its allocations. `reserved` is
/// the (index, slot) of a failed create whose runtime.json may not say so.
fn teardown(shared: &Shared, id: &str, reserved: Option<(u32, Slot)>) -> Result<(), RuntimeError> {
    let dir = shared.sandboxes_dir.join(id);
    // Unmounted before the upper dir goes.
    drop(shared.lock_alloc().held_roots.remove(id));
    let known = shared.lock_alloc().sandboxes.get(id).cloned();
    let handle = known.or_else(|| state::load(&dir));
    let mut result = teardown_resources(shared, id, handle.as_ref());
    let slot_number = reserved
        .map(|r| r.1.k)
        .or_else(|| handle.as_ref().map(|h| h.slot));
    if result.is_ok()
        && shared.netns_mode == NetnsMode::Sandbox
        && let Some(k) = slot_number
    {
        // The slot's eth0 went into the sandbox's own netns and died with it (or, after a
        // restore, CRIU made a new veth): the slot is rebuilt from scratch by the pool.
        result = net::delete_slot(Slot::new(shared.naming, k));
    }
    if result.is_ok()
        && let Some(h) = &handle
    {
        // Forget NAT state of the old sandbox before its address is handed to a new one.
        // Best effort: conntrack exits 1 when there was nothing to delete.
        let ip = h.ip.to_string();
        let _ = crate::host::run_command("conntrack", &["-D", "-s", &ip], None);
    }
    let mut alloc = shared.lock_alloc();
    alloc.busy.remove(id);
    alloc.sandboxes.remove(id);
    if result.is_ok() {
        let index = reserved
            .map(|r| r.0)
            .or_else(|| handle.as_ref().and_then(|h| state::index_of(h.uid_base)));
        let slot = reserved
            .map(|r| r.1.k)
            .or_else(|| handle.as_ref().map(|h| h.slot));
        if let Some(index) = index {
            alloc.indexes.remove(&index);
        }
        if let Some(slot) = slot
            && alloc.slots_in_use.remove(&slot)
            && shared.netns_mode == NetnsMode::Host
        {
            // Nothing in the sandbox could change its netns (no CAP_NET_ADMIN over it), so the
            // slot goes straight back to the pool if its namespace is still there.
            if Slot::new(shared.naming, slot).netns_path().exists() {
                alloc.ready.push_back(slot);
            }
        }
    }
    result
}

fn teardown_resources(
    shared: &Shared,
    id: &str,
    handle: Option<&SandboxHandle>,
) -> Result<(), RuntimeError> {
    if let Some(h) = handle
        && process_matches(h.init_pid, h.init_start_time)
    {
        // SAFETY: kill has no memory-safety preconditions; pid and start time were checked.
        unsafe { libc::kill(h.init_pid, libc::SIGKILL) };
    }
    let cgroups = shared.cgroups(id);
    cgroups.kill_all()?;
    if let Some(h) = handle
        && h.init_pid > 0
    {
        // Reap init if it is our child (we are subreaper); ECHILD otherwise, which is fine.
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        unsafe { libc::waitpid(h.init_pid, &mut status, 0) };
    }
    cgroups.remove()?;
    let dir = shared.sandboxes_dir.join(id);
    ram_dir::unmount_if_mounted(&dir)?;
    let mut attempt = 0;
    loop {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => return Ok(()),
            // An entry deleted meanwhile by someone else (the background deletion of a restore's
            // used images): go again, the tree must be gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 5 => attempt += 1,
            // Still in use for a moment: a CRIU worker whose restore just failed may hold the
            // tree in its mount namespace until it has exited. Wait for it (up to ~2 s) rather
            // than fail the delete.
            Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy && attempt < 40 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(io_err(format!("remove {dir:?}"))(e)),
        }
    }
}

/// Kills what is left of sandbox `id`'s processes and removes its cgroups and network
/// namespace (the slot number stays reserved for a restart). Files are not touched.
fn release_kernel_resources(
    shared: &Shared,
    id: &str,
    handle: Option<&SandboxHandle>,
) -> Result<(), RuntimeError> {
    drop(shared.lock_alloc().held_roots.remove(id));
    if let Some(h) = handle
        && process_matches(h.init_pid, h.init_start_time)
    {
        // SAFETY: kill has no memory-safety preconditions; pid and start time were checked.
        unsafe { libc::kill(h.init_pid, libc::SIGKILL) };
    }
    let cgroups = shared.cgroups(id);
    cgroups.kill_all()?;
    if let Some(h) = handle
        && h.init_pid > 0
    {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer; ECHILD if it is not our child.
        unsafe { libc::waitpid(h.init_pid, &mut status, libc::WNOHANG) };
    }
    cgroups.remove()?;
    if let Some(h) = handle {
        net::delete_slot(Slot::new(shared.naming, h.slot))?;
        let _ = crate::host::run_command("conntrack", &["-D", "-s", &h.ip.to_string()], None);
    }
    Ok(())
}

/// A sandbox whose processes are gone and which has no complete image: the kernel resources
/// go, its files stay (upper dir, logs, launch spec) for a restart from files or a deletion.
/// `runtime.json` keeps its uid range (which owns the files) and slot, with no init.
fn release_dead(
    shared: &Shared,
    id: &str,
    handle: Option<&SandboxHandle>,
) -> Result<(), RuntimeError> {
    release_kernel_resources(shared, id, handle)?;
    let dir = shared.sandboxes_dir.join(id);
    let partial = dir.join(checkpoint::PARTIAL_DIR);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(format!("remove {partial:?}")))?;
    }
    checkpoint::remove_used_images(&dir);
    let mut alloc = shared.lock_alloc();
    alloc.sandboxes.remove(id);
    if let Some(h) = handle {
        let dead = SandboxHandle {
            init_pid: 0,
            init_start_time: 0,
            ..h.clone()
        };
        state::save(&dir, &dead)?;
        if let Some(index) = state::index_of(h.uid_base) {
            alloc.indexes.insert(index);
        }
        alloc.slots_in_use.insert(h.slot);
    }
    Ok(())
}

/// After a daemon crash in the middle of a restore, CRIU may have brought the tree back
/// although `runtime.json` still names the init of before the checkpoint: the live init in
/// the sandbox's cgroup (pid 1 of a pid namespace) is adopted, and the used images go.
fn adopt_restored_tree(
    shared: &Shared,
    dir: &Path,
    old: &SandboxHandle,
) -> Result<Option<SandboxHandle>, RuntimeError> {
    let mut pids = BTreeSet::new();
    for procs in shared.cgroups(&old.id).procs_files() {
        if let Ok(text) = std::fs::read_to_string(&procs) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    let inits: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|pid| is_pid_namespace_init(*pid) && !pids.contains(&parent_pid(*pid)))
        .collect();
    let [init_pid] = inits[..] else {
        return Ok(None);
    };
    // CRIU may still hold the tree (its tasks ptrace-seized until it resumes them) or be about
    // to abandon it: wait until no task of it is traced, then give it a moment. A tree that
    // dies meanwhile was never really restored; the images, still complete, keep the sandbox
    // deep (the caller deletes them only for a tree adopted here).
    let deadline = Instant::now() + RESTORED_TREE_SETTLE_TIMEOUT;
    while pids.iter().any(|pid| is_traced(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(RESTORED_TREE_SETTLE);
    let Some(init_start_time) = process_start_time(init_pid) else {
        tracing::warn!(id = %old.id, init_pid, "a tree restored while the daemon was down died");
        shared.cgroups(&old.id).kill_all()?;
        return Ok(None);
    };
    if pids.iter().any(|pid| is_traced(*pid)) {
        tracing::warn!(id = %old.id, init_pid, "a restored tree is still traced: not adopted");
        shared.cgroups(&old.id).kill_all()?;
        return Ok(None);
    }
    tracing::warn!(id = %old.id, init_pid, "adopting a sandbox restored while the daemon was down");
    let handle = SandboxHandle {
        init_pid,
        init_start_time,
        ..old.clone()
    };
    state::save(dir, &handle)?;
    Ok(Some(handle))
}

/// How long reconcile waits for an orphaned CRIU to let go of a tree it restored.
const RESTORED_TREE_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a tree restored while the daemon was down must stay alive to be adopted.
const RESTORED_TREE_SETTLE: Duration = Duration::from_millis(300);

/// Whether `pid` is being ptraced (`TracerPid` in its status).
fn is_traced(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .is_some_and(|v| v.trim() != "0")
}

/// Whether `pid` is pid 1 of a pid namespace below ours (`NSpid: <host pid> ... 1`).
fn is_pid_namespace_init(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| v.split_whitespace().collect::<Vec<_>>())
        .is_some_and(|ids| ids.len() >= 2 && ids.last() == Some(&"1"))
}

fn parent_pid(pid: i32) -> i32 {
    crate::host::stat_field(pid, 4)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn reconcile_blocking(
    shared: &Shared,
    known: &BTreeSet<String>,
) -> Result<ReconcileReport, RuntimeError> {
    let mut report = ReconcileReport::default();
    let mut on_disk = BTreeSet::new();
    let entries = std::fs::read_dir(&shared.sandboxes_dir).map_err(io_err("read sandboxes dir"))?;
    for entry in entries.flatten() {
        let Ok(id) = entry.file_name().into_string() else {
            continue;
        };
        if validate_id(&id).is_err() || !entry.path().is_dir() {
            continue;
        }
        {
            let alloc = shared.lock_alloc();
            if alloc.busy.contains(&id) || alloc.sandboxes.contains_key(&id) {
                on_disk.insert(id);
                continue;
            }
        }
        on_disk.insert(id.clone());
        let dir = entry.path();
        if !known.contains(&id) {
            // No row: what is left of a deleted sandbox (or of a create that never got one).
            checkpoint::wait_for_orphaned_criu(&dir);
            teardown(shared, &id, None)?;
            report.orphans_removed.push(format!("sandbox {id}"));
            continue;
        }
        // A criu orphaned by a daemon crash may still be dumping (and will then kill the
        // sandbox's processes) or restoring (and will then start them): judge its outcome.
        checkpoint::wait_for_orphaned_criu(&dir);
        let mut handle = state::load(&dir);
        let mut alive = handle
            .as_ref()
            .is_some_and(|h| process_matches(h.init_pid, h.init_start_time));
        if !alive
            && let Some(h) = &handle
            && let Some(restored) = adopt_restored_tree(shared, &dir, h)?
        {
            handle = Some(restored);
            alive = true;
        }
        let partial = dir.join(checkpoint::PARTIAL_DIR);
        let interrupted_dump = partial.exists();
        let images = checkpoint::checkpoint_dir(&dir);
        if interrupted_dump {
            match &handle {
                // CRIU finished the dump (and killed the processes) after the daemon died.
                Some(h) if !alive && !images.exists() && checkpoint::dump_completed(&partial) => {
                    tracing::warn!(%id, "completing a checkpoint whose daemon died after the dump");
                    checkpoint::complete_interrupted_dump(&dir, h.uid_base)?;
                }
                // A dump that did not finish: never a valid image.
                _ => std::fs::remove_dir_all(&partial)
                    .map_err(io_err(format!("remove {partial:?}")))?,
            }
        }
        let checkpointed = !alive && images.is_dir();
        match handle {
            Some(h) if alive || checkpointed => {
                {
                    let mut alloc = shared.lock_alloc();
                    if let Some(index) = state::index_of(h.uid_base) {
                        alloc.indexes.insert(index);
                    }
                    alloc.slots_in_use.insert(h.slot);
                    alloc.sandboxes.insert(id.clone(), h.clone());
                }
                if checkpointed {
                    report.checkpointed.push(h);
                } else {
                    if images.exists() {
                        // Left by a restore that finished but crashed before deleting it.
                        std::fs::remove_dir_all(&images)
                            .map_err(io_err(format!("remove {images:?}")))?;
                    }
                    if shared.netns_mode == NetnsMode::Sandbox
                        && (interrupted_dump
                            || !net::link_exists(&Slot::new(shared.naming, h.slot).host_veth()))
                    {
                        reconnect_after_interrupted_checkpoint(shared, &h);
                    }
                    report.adopted.push(h);
                }
            }
            handle if handle.is_none() && !dir.join("upper").is_dir() => {
                // Nothing to keep (a ZDR sandbox's tmpfs after a host reboot is an empty dir).
                teardown(shared, &id, None)?;
                report.dead.push(id);
            }
            handle => {
                // Processes gone and no image: the files stay (a restart from them, or a
                // deletion, decides their fate); only what lived in the kernel goes.
                release_dead(shared, &id, handle.as_ref())?;
                report.dead.push(id);
            }
        }
    }
    for id in known {
        if !on_disk.contains(id) {
            report.dead.push(id.clone());
        }
    }
    // cgroups without a sandbox dir (a crash between cgroup creation and dir removal).
    for id in crate::cgroup::existing_ids(&shared.cgroup_root, &shared.naming.cgroup_parent()) {
        let held = shared.lock_alloc().sandboxes.contains_key(&id);
        if !held && !on_disk.contains(&id) {
            let cg = shared.cgroups(&id);
            cg.kill_all()?;
            cg.remove()?;
            report.orphans_removed.push(format!("cgroup {id}"));
        }
    }
    // Namespaces no sandbox holds and the pool does not know.
    let stray: Vec<Slot> = {
        let alloc = shared.lock_alloc();
        net::existing_slots(shared.naming)
            .into_iter()
            .filter(|s| {
                !alloc.slots_in_use.contains(&s.k)
                    && !alloc.ready.contains(&s.k)
                    && !alloc.building.contains(&s.k)
            })
            .collect()
    };
    for slot in stray {
        net::delete_slot(slot)?;
        report
            .orphans_removed
            .push(format!("netns {}", slot.netns_name()));
    }
    quota::clear_stale(&shared.sandboxes_dir);
    Ok(report)
}

/// A zero-data-retention sandbox's memory must never leave RAM: no checkpoint images.
fn refuse_if_zdr(dir: &Path, id: &str) -> Result<(), RuntimeError> {
    if ram_dir::is_ram(dir) {
        return Err(RuntimeError::Unsupported(format!(
            "sandbox {id} is zero-data-retention: it cannot be checkpointed (its memory would \
             be written to disk)"
        )));
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {path:?}")))
}

/// Limits of a checkpointed sandbox, for [`recreate_after_reboot`].
const LIMITS_FILE: &str = "limits.json";

/// Records the sandbox's cgroup limits (memory, CPU, pids) next to it.
fn save_limits(dir: &Path, shared: &Shared, id: &str) -> Result<(), RuntimeError> {
    let group = |controller: &str| {
        shared
            .cgroup_root
            .join(controller)
            .join(shared.naming.cgroup_parent())
            .join(id)
    };
    let read = |path: PathBuf| -> Result<String, RuntimeError> {
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(io_err(format!("read {path:?}")))
    };
    let number = |path: PathBuf| -> Result<u64, RuntimeError> {
        let text = read(path.clone())?;
        text.parse()
            .map_err(|_| RuntimeError::Checkpoint(format!("{path:?} holds {text:?}")))
    };
    let memory_bytes = number(group("memory").join("memory.limit_in_bytes"))?;
    let period = number(group("cpu").join("cpu.cfs_period_us"))?.max(1);
    // -1 = no quota: keep it unlimited (as many CPUs as the host has).
    let quota = read(group("cpu").join("cpu.cfs_quota_us"))?
        .parse::<i64>()
        .ok()
        .and_then(|q| u64::try_from(q).ok())
        .unwrap_or_else(|| {
            period * std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
        });
    let pids_max = match read(group("pids").join("pids.max"))?.as_str() {
        "max" => u64::from(u32::MAX),
        text => text
            .parse()
            .map_err(|_| RuntimeError::Checkpoint(format!("pids.max holds {text:?}")))?,
    };
    let json = serde_json::json!({
        "memory_bytes": memory_bytes,
        "cpus": quota as f64 / period as f64,
        "pids_max": pids_max,
    });
    let path = dir.join(LIMITS_FILE);
    std::fs::write(&path, json.to_string()).map_err(io_err(format!("write {path:?}")))
}

fn load_limits(dir: &Path) -> Result<Limits, RuntimeError> {
    let path = dir.join(LIMITS_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(format!("read {path:?}")))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| RuntimeError::Checkpoint(format!("{path:?} is not JSON: {e}")))?;
    let field = |name: &str| {
        json.get(name)
            .ok_or_else(|| RuntimeError::Checkpoint(format!("{path:?} has no {name:?}")))
    };
    let bad = |name: &str| RuntimeError::Checkpoint(format!("{path:?}: bad {name:?}"));
    Ok(Limits {
        memory_bytes: field("memory_bytes")?
            .as_u64()
            .ok_or_else(|| bad("memory_bytes"))?,
        cpus: field("cpus")?.as_f64().ok_or_else(|| bad("cpus"))?,
        pids_max: field("pids_max")?.as_u64().ok_or_else(|| bad("pids_max"))?,
    })
}

/// Before a restore: after a host reboot the sandbox's cgroups and its network slot's netns
/// (which marks the slot as taken) are gone; they are made again, the same as at create. The
/// veth pair is the restore's job.
fn recreate_after_reboot(dir: &Path, cgroups: &Cgroups, slot: Slot) -> Result<(), RuntimeError> {
    if !cgroups.exists() {
        tracing::info!(dir = %dir.display(), "restoring after a reboot: recreating the cgroups");
        cgroups.create(load_limits(dir)?)?;
    }
    if !slot.netns_path().exists() {
        tracing::info!(
            slot = slot.k,
            "restoring after a reboot: rebuilding the network slot"
        );
        net::create_slots(&[slot], net::SlotKind::NetnsOnly)?;
    }
    Ok(())
}

/// An adopted sandbox whose daemon died in the middle of a checkpoint may have lost its veth
/// pair (deleted before the dump) or, with older daemons, have its `eth0` parked in the slot's
/// netns: it gets a new pair either way (it is still frozen; the wake finds it connected).
fn reconnect_after_interrupted_checkpoint(shared: &Shared, h: &SandboxHandle) {
    let link = checkpoint::SandboxLink::of_slot(Slot::new(shared.naming, h.slot));
    tracing::warn!(id = %h.id, "a checkpoint was interrupted: giving the sandbox a new veth pair");
    if let Err(e) = checkpoint::reconnect_eth0(&link, h.init_pid) {
        tracing::error!(id = %h.id, error = %e, "cannot give eth0 back");
    }
}
