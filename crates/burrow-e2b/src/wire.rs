//! E2B's JSON shapes, field names exactly as on the wire (see docs/e2b-compatibility.md).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::backend::{OnTimeout, SandboxInfo, SandboxMetric, SandboxState};

/// `clientID` is deprecated in E2B but required by SDK response parsers; any constant works.
pub const CLIENT_ID: &str = "burrow";

/// `POST /sandboxes` (`NewSandbox`) and `POST /v2/sandboxes` (`NewSandboxV2`).
///
/// Unknown fields are ignored, notably v1's `secure`: every burrow sandbox is secured (envd
/// requires the access token) regardless.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub timeout: Option<i64>,
    pub auto_pause: Option<bool>,
    pub auto_pause_memory: Option<bool>,
    pub auto_resume: Option<AutoResume>,
    /// The one snake_case field of the E2B API.
    #[serde(rename = "allow_internet_access")]
    pub allow_internet_access: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Checked by `network_config`: only settings burrow provides anyway are accepted.
    pub network: Option<serde_json::Value>,
    /// Accepted only when absent/null/empty: burrow does not implement these yet, and silently
    /// ignoring them would give a sandbox the client did not ask for.
    pub mcp: Option<serde_json::Value>,
    pub iam: Option<serde_json::Value>,
    pub volume_mounts: Option<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub struct AutoResume {
    pub enabled: bool,
}

/// `POST /sandboxes/{id}/timeout`.
#[derive(Debug, Deserialize)]
pub struct SetTimeout {
    pub timeout: i64,
}

/// `POST /sandboxes/{id}/refreshes`.
#[derive(Debug, Deserialize, Default)]
pub struct Refresh {
    pub duration: Option<i64>,
}

/// `POST /sandboxes/{id}/pause` (`SandboxPauseRequest`).
#[derive(Debug, Deserialize, Default)]
pub struct PauseRequest {
    pub memory: Option<bool>,
    // `requireHealthyGuest` is ignored: burrow's pause never needs the guest's cooperation.
}

/// `POST /sandboxes/{id}/connect`, `POST /v2/sandboxes/{id}/connect`, `POST /sandboxes/{id}/resume`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectRequest {
    pub timeout: Option<i64>,
    pub memory: Option<bool>,
    // `/resume`'s deprecated `autoPause` is ignored, like E2B does: the create-time setting wins.
}

/// `Sandbox`: the create / connect / resume response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub alias: String,
    pub envd_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    pub traffic_access_token: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    pub auto_resume: bool,
    pub on_timeout: &'static str,
}

/// `SandboxDetail` (`GET /sandboxes/{id}`) and `ListedSandbox` (lists; the detail-only fields are
/// harmless extras there).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub alias: String,
    pub started_at: String,
    pub end_at: String,
    pub envd_version: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u64,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub state: &'static str,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    pub allow_internet_access: Option<bool>,
    pub domain: Option<String>,
    pub lifecycle: Lifecycle,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_mode: Option<&'static str>,
}

/// `SandboxMetric`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// `TemplateAliasResponse` (`GET /templates/aliases/{alias}`).
#[derive(Debug, Serialize)]
pub struct TemplateAliasResponse {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub public: bool,
}

/// E2B's `Error`: `code` always equals the HTTP status (the JS SDK branches on it).
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: u16,
    pub message: String,
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn state_name(state: SandboxState) -> &'static str {
    match state {
        SandboxState::Running => "running",
        SandboxState::Paused => "paused",
    }
}

impl Sandbox {
    pub fn from_info(info: SandboxInfo, envd_version: String, domain: Option<String>) -> Self {
        Self {
            alias: info.template.clone(),
            template_id: info.template,
            sandbox_id: info.id,
            client_id: CLIENT_ID,
            envd_version,
            envd_access_token: info.envd_access_token,
            traffic_access_token: info.traffic_access_token,
            domain,
        }
    }
}

impl SandboxDetail {
    pub fn from_info(info: SandboxInfo, envd_version: String, domain: Option<String>) -> Self {
        let (on_timeout, pause_mode) = match info.on_timeout {
            OnTimeout::Kill => ("kill", None),
            OnTimeout::Pause { keep_memory: true } => ("pause", Some("full")),
            OnTimeout::Pause { keep_memory: false } => ("pause", Some("filesystem")),
        };
        Self {
            alias: info.template.clone(),
            template_id: info.template,
            sandbox_id: info.id,
            client_id: CLIENT_ID,
            started_at: rfc3339(info.started_at),
            end_at: rfc3339(info.end_at),
            envd_version,
            cpu_count: info.cpu_count,
            memory_mb: info.memory_mb,
            disk_size_mb: info.disk_size_mb,
            state: state_name(info.state),
            metadata: info.metadata,
            envd_access_token: info.envd_access_token,
            allow_internet_access: info.allow_internet_access,
            domain,
            lifecycle: Lifecycle {
                auto_resume: info.auto_resume,
                on_timeout,
            },
            pause_mode,
        }
    }
}

impl From<SandboxMetric> for Metric {
    fn from(m: SandboxMetric) -> Self {
        Self {
            timestamp: rfc3339(m.at),
            timestamp_unix: m.at.timestamp(),
            cpu_count: m.cpu_count,
            cpu_used_pct: m.cpu_used_pct,
            mem_used: m.mem_used_bytes,
            mem_total: m.mem_total_bytes,
            mem_cache: m.mem_cache_bytes,
            disk_used: m.disk_used_bytes,
            disk_total: m.disk_total_bytes,
        }
    }
}
