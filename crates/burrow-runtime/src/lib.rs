//! Host side of the `linux` runtime: everything the daemon does on the host to create, watch,
//! and destroy sandboxes. The daemon never forks: each sandbox is built by an exec'd
//! `burrow-launch` process (see the `burrow-launch` crate for the contract).

mod binaries;
mod cgroup;
mod checkpoint;
mod error;
mod host;
mod instance;
mod net;
mod quota;
mod ram_dir;
mod runtime;
mod state;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::RuntimeError;

/// Port of the in-sandbox agent (E2B's envd port).
pub const AGENT_PORT: u16 = 49983;

/// How the runtime is set up. Built by the server from its configuration.
///
/// The size of the sparse btrfs image `<data_dir>/sandboxes.img` backing `<data_dir>/sandboxes`
/// (created only when that dir is not on btrfs) comes from `BURROW_SANDBOXES_IMAGE_GB` (default 64).
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
    /// Zero data retention: the sandbox's files (overlay upper dir) live in a tmpfs of
    /// `disk_mb` instead of on disk, the agent's output is discarded, its memory is never
    /// swapped (`memory.swappiness=0`), and it cannot be checkpointed.
    pub zdr: bool,
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
    /// Sandboxes whose processes are gone but which have a complete checkpoint (deep standby):
    /// adopted; [`Runtime::restore`] brings them back.
    pub checkpointed: Vec<SandboxHandle>,
    /// Known sandboxes whose processes are gone: their resources were released.
    pub dead: Vec<String>,
    /// Leftovers (dirs, cgroups, slots) that belonged to no known sandbox and were removed.
    pub orphans_removed: Vec<String>,
}

pub use checkpoint::{CHECKPOINT_DIR, CheckpointInfo};
pub use runtime::{NetnsMode, Runtime};

/// Validates a sandbox id: 1-63 chars of `[a-z0-9-]`, not starting with `-`.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "sandbox id {id:?} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

impl SandboxSpec {
    /// Checks limits and paths; the error says which value is wrong and what is allowed.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        validate_id(&self.id)?;
        let bad = |msg: String| Err(RuntimeError::Invalid(msg));
        if !(self.cpus.is_finite() && self.cpus >= 0.01 && self.cpus <= 256.0) {
            return bad(format!("cpus = {} must be between 0.01 and 256", self.cpus));
        }
        if !(16..=1 << 20).contains(&self.memory_mb) {
            return bad(format!(
                "memory_mb = {} must be between 16 and 1048576",
                self.memory_mb
            ));
        }
        if !(1..=1 << 24).contains(&self.disk_mb) {
            return bad(format!(
                "disk_mb = {} must be between 1 and 16777216",
                self.disk_mb
            ));
        }
        if !(8..=1 << 22).contains(&self.pids_max) {
            return bad(format!(
                "pids_max = {} must be between 8 and 4194304",
                self.pids_max
            ));
        }
        if self.layers.is_empty() {
            return bad("the template has no layers".into());
        }
        for layer in &self.layers {
            if !layer.is_absolute() || !layer.is_dir() {
                return bad(format!(
                    "template layer {layer:?} is not an existing absolute directory"
                ));
            }
        }
        if self.default_user.is_empty() || self.default_user.contains(['\0', '/']) {
            return bad(format!(
                "default_user {:?} is not a valid user name",
                self.default_user
            ));
        }
        Ok(())
    }
}
