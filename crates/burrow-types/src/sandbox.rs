//! Sandboxes: what a client creates, lists and inspects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Running,
    /// Asleep (frozen, memory paged out); any request wakes it.
    Standby,
    Stopped,
    Error,
}

impl SandboxState {
    pub const ALL: [SandboxState; 5] = [
        SandboxState::Creating,
        SandboxState::Running,
        SandboxState::Standby,
        SandboxState::Stopped,
        SandboxState::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Standby => "standby",
            SandboxState::Stopped => "stopped",
            SandboxState::Error => "error",
        }
    }

    /// Parses the wire name (`running`, …).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sandbox as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    /// `i` + 19 characters `[a-z0-9]`.
    #[schema(example = "i0a1b2c3d4e5f6g7h8j9")]
    pub id: String,
    pub template: String,
    pub state: SandboxState,
    /// CPU limit in cores (fractions allowed).
    pub cpus: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Environment every process in the sandbox starts with (template env + request env).
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The sandbox's IP address on the host, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Why the sandbox is in state `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Token the agent (envd, port 49983) requires in `X-Access-Token`; use it with the E2B SDKs
    /// or the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    /// The token the proxy requires in the `e2b-traffic-access-token` header on every port but
    /// the agent's, for a sandbox created with `public_traffic: false` (shown by create, get and
    /// lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_access_token: Option<String>,
    /// The workspace (`ws_…`) that owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// Why the sandbox is awake, or since when it sleeps (running and standby sandboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<crate::standby::PowerInfo>,
    /// Its expiry policy, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<crate::retention::Expiration>,
    /// Zero data retention sandbox.
    #[serde(default)]
    pub zdr: bool,
}

/// `GET /v1/sandboxes` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
}

/// `POST /v1/sandboxes` body. Every field is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Template name.
    #[serde(default = "default_template")]
    #[schema(default = "base")]
    pub template: String,
    /// CPU limit in cores: 0.1 up to the host's core count.
    #[serde(default = "default_cpus")]
    #[schema(default = 1.0, minimum = 0.1)]
    pub cpus: f64,
    /// Memory limit in MiB: 64..=65536.
    #[serde(default = "default_memory_mb")]
    #[schema(default = 512, minimum = 64, maximum = 65536)]
    pub memory_mb: u64,
    /// Limit on what the sandbox may write to disk, in MiB: 16..=1048576.
    #[serde(default = "default_disk_mb")]
    #[schema(default = 4096, minimum = 16, maximum = 1048576)]
    pub disk_mb: u64,
    /// Extra environment (merged over the template's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Free-form labels for filtering (`GET /v1/sandboxes?label=k=v`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds without activity before the sandbox goes to standby by itself; 0 = never.
    /// Default: the server's (15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 15)]
    pub idle_timeout: Option<u64>,
    /// When the sandbox deletes itself (any combination; the first met wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<crate::retention::Expiration>,
    /// Zero data retention: never paged out or checkpointed; standby is refused and the idle
    /// timeout deletes it instead (see docs/retention.md for what is still on disk).
    #[serde(default)]
    pub zdr: bool,
    /// Whether the proxy serves the sandbox's ports (`{port}-{id}.{domain}`) to anyone who knows
    /// its id (default) or only to requests carrying its traffic access token
    /// (`e2b-traffic-access-token` header; E2B's `allowPublicTraffic: false`).
    #[serde(default = "default_public_traffic")]
    #[schema(default = true)]
    pub public_traffic: bool,
}

fn default_public_traffic() -> bool {
    true
}

impl Default for CreateSandboxRequest {
    fn default() -> Self {
        Self {
            template: default_template(),
            cpus: default_cpus(),
            memory_mb: default_memory_mb(),
            disk_mb: default_disk_mb(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            idle_timeout: None,
            expiration: None,
            zdr: false,
            public_traffic: true,
        }
    }
}

pub const MIN_CPUS: f64 = 0.1;
pub const MIN_MEMORY_MB: u64 = 64;
pub const MAX_MEMORY_MB: u64 = 65536;
pub const MIN_DISK_MB: u64 = 16;
pub const MAX_DISK_MB: u64 = 1_048_576;

fn default_template() -> String {
    "base".to_string()
}
fn default_cpus() -> f64 {
    1.0
}
fn default_memory_mb() -> u64 {
    512
}
fn default_disk_mb() -> u64 {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_gets_defaults() {
        let req: CreateSandboxRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, CreateSandboxRequest::default());
        assert_eq!(req.template, "base");
        assert_eq!(req.memory_mb, 512);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<CreateSandboxRequest>(r#"{"cpu": 2}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `cpu`"), "{err}");
    }

    #[test]
    fn state_round_trips() {
        for s in SandboxState::ALL {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(SandboxState::parse("paused"), None);
    }
}
