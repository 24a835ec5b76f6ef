//! Standby: why a sandbox is awake or asleep, leases that keep it awake, explicit standby.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How deeply a sandbox sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StandbyTier {
    /// Frozen (zero CPU) with memory paged out to zram; resumes in milliseconds.
    Warm,
    /// Checkpointed to disk with CRIU; no processes left.
    Deep,
}

/// The power side of a sandbox: awake and why, or asleep and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PowerInfo {
    /// True while the sandbox runs; false in standby.
    pub awake: bool,
    /// Standby tier while asleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<StandbyTier>,
    /// RFC 3339 time the sandbox went to standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asleep_since: Option<String>,
    /// RFC 3339 time of the last activity (request, stream, lease) seen.
    pub last_activity_at: String,
    /// What that activity was: `create`, `exec`, `files`, `pty`, `tunnel`, `proxy`, `resume`, `lease`…
    pub last_activity_source: String,
    /// Streams open right now (exec, PTY, tunnel, proxied connections): each keeps it awake.
    pub open_streams: u32,
    /// Leases keeping it awake (API leases and exec `keep_alive`).
    pub leases: Vec<Lease>,
    /// Files in `/run/burrow/leases/` inside the sandbox: any file there keeps it awake.
    pub sandbox_leases: u32,
    /// Seconds without activity before standby; 0 = never.
    pub idle_timeout: u64,
    /// Seconds until the sandbox goes to standby if nothing happens (awake, idle, no lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_in: Option<f64>,
    /// The idle timer is running the sandbox's pre-standby hook (`/etc/burrow/pre-standby`)
    /// and waits for it before the standby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_standby_hook: bool,
    /// Host RAM charged to the sandbox's memory cgroup now, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Bytes of the sandbox's memory in swap (burrow's zram, where they sit compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    /// In deep standby: size of the checkpoint image on disk (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
}

/// Something that keeps a sandbox awake until it is released or expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    pub id: String,
    pub reason: String,
    /// RFC 3339 expiry; absent for leases that last as long as a request (exec `keep_alive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `POST /v1/sandboxes/{id}/leases` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLeaseRequest {
    /// Lifetime in seconds: 1..=86400.
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_seconds: u64,
    /// Free text shown in `burrow info` (at most 200 characters).
    #[serde(default)]
    pub reason: String,
}

/// `POST /v1/sandboxes/{id}/standby` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StandbyRequest {
    /// Checkpoint with CRIU instead of freezing (deep standby).
    #[serde(default)]
    pub deep: bool,
}
