//! Host side of the `linux` runtime: everything the daemon does on the host to create, watch,
//! and destroy sandboxes. The daemon never forks: each sandbox is built by an exec'd
//! `burrow-launch` process (see the `burrow-launch` crate for the contract).

mod error;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::RuntimeError;

/// Port of the in-sandbox agent (E2B's envd port).
pub const AGENT_PORT: u16 = 49983;

/// How the runtime is set up. Built by the server from its configuration.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Root of burrow's data dir; the runtime uses `<data_dir>/sandboxes/<id>/`.
    pub data_dir: PathBuf,
    /// Path of the `burrow-launch` binary.
    pub launcher_path: PathBuf,
    /// Path of the `burrow-agent` binary (bind-mounted into every sandbox).
    pub agent_path: PathBuf,
    /// Number of network slots kept ready ahead of demand.
    pub net_pool_size: usize,
}

/// What a caller asks for when creating a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: String,
    pub template: String,
    /// Template layers, top-most first.
    pub layers: Vec<PathBuf>,
    /// CPU limit in cores (fractions allowed).
    pub cpus: f64,
    pub memory_mb: u64,
    /// Limit on the overlay upper dir's disk usage.
    pub disk_mb: u64,
    pub pids_max: u64,
    /// Global environment for every process in the sandbox (template env + request env).
    pub env: BTreeMap<String, String>,
    /// envd access token; `None` means unauthenticated envd.
    pub access_token: Option<String>,
    /// Default user for commands (`user` in `base`).
    pub default_user: String,
    /// Default working directory for commands, if the template sets one.
    pub default_workdir: Option<String>,
}

/// A running sandbox as the runtime knows it. Persisted as `runtime.json` for reconcile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxHandle {
    pub id: String,
    pub slot: u32,
    pub uid_base: u32,
    pub ip: Ipv4Addr,
    /// Host pid of the sandbox's init.
    pub init_pid: i32,
    /// Start time of `init_pid` (field 22 of /proc/pid/stat) so a recycled pid is never mistaken for it.
    pub init_start_time: u64,
}

impl SandboxHandle {
    /// Address of the agent (envd) inside the sandbox.
    pub fn agent_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, AGENT_PORT))
    }
}

/// Live resource usage read from the sandbox's cgroups.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxUsage {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u64,
}

/// What reconcile found after a daemon restart.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    /// Sandboxes whose init is still alive: adopted as they are.
    pub adopted: Vec<SandboxHandle>,
    /// Known sandboxes whose processes are gone: their resources were released.
    pub dead: Vec<String>,
    /// Leftovers (dirs, cgroups, slots) that belonged to no known sandbox and were removed.
    pub orphans_removed: Vec<String>,
}

/// The runtime. Cheap to share behind an `Arc`.
pub struct Runtime {
    config: RuntimeConfig,
}

impl Runtime {
    /// Prepares the host (cgroup roots, nftables table, network slot pool) and returns the runtime.
    pub async fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        Ok(Self { config })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Creates a sandbox and returns once its agent is listening.
    pub async fn create(&self, spec: SandboxSpec) -> Result<SandboxHandle, RuntimeError> {
        let _ = spec;
        Err(RuntimeError::Unsupported("create is not implemented yet".into()))
    }

    /// Kills every process of the sandbox and releases everything it held (cgroups, network slot,
    /// upper dir, runtime state). Idempotent: destroying an unknown id is not an error.
    pub async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        let _ = id;
        Ok(())
    }

    /// True if the sandbox's init is still alive.
    pub fn is_alive(&self, handle: &SandboxHandle) -> bool {
        let _ = handle;
        false
    }

    /// Reads current usage from the sandbox's cgroups and upper dir.
    pub async fn usage(&self, handle: &SandboxHandle) -> Result<SandboxUsage, RuntimeError> {
        let _ = handle;
        Ok(SandboxUsage::default())
    }

    /// After a daemon start: adopts sandboxes in `known` whose processes still run, releases the
    /// resources of those that died, and removes anything burrow left behind that `known` does not
    /// name.
    pub async fn reconcile(&self, known: &[String]) -> Result<ReconcileReport, RuntimeError> {
        let _ = known;
        Ok(ReconcileReport::default())
    }
}
