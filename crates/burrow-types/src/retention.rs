//! Expiry policies, tombstones of deleted sandboxes (what was erased, why) and usage metering.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// When a sandbox is deleted by itself. Any combination; the first one met wins. A server-wide
/// maximum age (`burrow serve --max-sandbox-age`) applies on top of every sandbox's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expiration {
    /// Delete after this many seconds without activity (time in standby counts as idle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_idle: Option<u64>,
    /// Delete this many seconds after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_max_age: Option<u64>,
    /// Delete at this RFC 3339 wall-clock time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Expiration {
    pub fn is_empty(&self) -> bool {
        self.ttl_idle.is_none() && self.ttl_max_age.is_none() && self.expires_at.is_none()
    }
}

/// What a sandbox's deletion erased, measured just before it happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErasureRecord {
    /// Bytes of files in the overlay upper dir (everything the sandbox wrote), removed with its
    /// btrfs subvolume.
    pub upper_dir_bytes: u64,
    /// Bytes of the agent's log (`agent.log`), removed with the subvolume.
    pub agent_log_bytes: u64,
    /// Bytes of a CRIU checkpoint (deep standby) removed with the subvolume; 0 if there was none.
    pub checkpoint_bytes: u64,
    /// Bytes of the sandbox's memory that sat in burrow's zram swap; the kernel frees those
    /// slots when the processes are killed.
    pub swapped_bytes: u64,
    /// Processes killed.
    pub processes_killed: u64,
    /// Whether freed blocks of the sandboxes filesystem were discarded (`fstrim`), so deleted
    /// data does not linger in `sandboxes.img`.
    pub blocks_discarded: bool,
    /// Plain-language notes (what was done, what could not be measured).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What remains of a deleted sandbox: ids, times, who or which policy deleted it, what was erased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tombstone {
    pub id: String,
    pub template: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub deleted_at: String,
    /// `api` (a caller), `ttl-idle`, `ttl-max-age`, `date`, `max-sandbox-age`, `zdr-idle`.
    pub reason: String,
    /// The id (`key_…`) of the API key that deleted it, `api` (through the E2B API) or `system`
    /// (a policy).
    pub deleted_by: String,
    pub zdr: bool,
    pub erased: ErasureRecord,
    /// Usage accumulated over the sandbox's life.
    pub usage: Usage,
    /// The workspace (`ws_…`) that owned the sandbox.
    #[serde(default)]
    pub workspace_id: String,
}

/// `GET /v1/tombstones` response, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TombstoneList {
    pub tombstones: Vec<Tombstone>,
}

/// Metered usage, accumulated by the server's sampler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Memory limit (GB = 10^9 bytes) × seconds awake.
    pub active_gb_seconds: f64,
    /// CPU time used by the sandbox's processes, in seconds.
    pub cpu_seconds: f64,
    /// Stored bytes (upper dir + memory in swap, in GB) × seconds asleep.
    pub standby_storage_gb_seconds: f64,
    /// Seconds awake (state `running`).
    pub running_seconds: f64,
    /// Seconds asleep (state `standby`).
    pub standby_seconds: f64,
}

/// `GET /v1/sandboxes/{id}/usage` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxUsage {
    pub id: String,
    pub usage: Usage,
}

/// `GET /v1/usage` response: every sandbox's usage, live and deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// Sum over every sandbox ever metered (live and deleted).
    pub total: Usage,
    /// Live sandboxes.
    pub sandboxes: Vec<SandboxUsage>,
}
