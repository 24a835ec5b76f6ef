//! What the daemon tells the launcher, and what the launcher answers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the launcher needs to build one sandbox. Written as JSON on the launcher's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Sandbox id (lowercase alphanumeric); also the hostname inside.
    pub id: String,
    /// Template layers, top-most first, canonical ownership (root = uid 0).
    pub layers: Vec<PathBuf>,
    /// Overlay upper dir (owned by `uid_base`).
    pub upper_dir: PathBuf,
    /// Overlay work dir (owned by `uid_base`).
    pub work_dir: PathBuf,
    /// Mount point for the overlay inside the launcher's private mount namespace.
    pub rootfs_dir: PathBuf,
    /// First host uid/gid of the sandbox's 65536-id range; root inside maps to it.
    pub uid_base: u32,
    /// Bind-mounted network namespace to join (`/run/netns/burrow-<slot>`).
    pub netns_path: PathBuf,
    /// cgroup.procs files to join before anything else (one per cgroup v1 controller).
    pub cgroup_procs: Vec<PathBuf>,
    /// Host path of the agent binary; bind-mounted read-only at `/.burrow/agent` inside.
    pub agent_path: PathBuf,
    /// Environment for the agent (its configuration, see docs/ARCHITECTURE.md).
    pub agent_env: BTreeMap<String, String>,
    /// Nameservers written to the sandbox's /etc/resolv.conf.
    pub nameservers: Vec<String>,
    /// Size of the /dev/shm and /tmp-like tmpfs mounts, in MiB.
    pub shm_mb: u64,
}

/// The one JSON line the launcher writes on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchReport {
    pub ok: bool,
    /// Host pid of the sandbox's init (pid 1 inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
