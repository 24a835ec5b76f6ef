//! The error body every failing API call returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of every non-2xx response of the native API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// Stable snake_case code; see [`codes`].
    #[schema(example = "sandbox_not_found")]
    pub code: String,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// The stable error codes. Clients match on these, never on messages.
pub mod codes {
    /// 401: no API key, or an unknown one.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 400: the body is not valid JSON or does not match the schema.
    pub const INVALID_JSON: &str = "invalid_json";
    /// 400: a field, query parameter or path is out of range or malformed.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// 400: a file path inside a sandbox is not acceptable.
    pub const INVALID_PATH: &str = "invalid_path";
    /// 413: the request body is larger than the server accepts.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 404: no sandbox with this id.
    pub const SANDBOX_NOT_FOUND: &str = "sandbox_not_found";
    /// 409: the sandbox exists but is not running.
    pub const SANDBOX_NOT_RUNNING: &str = "sandbox_not_running";
    /// 404: no template with this name.
    pub const TEMPLATE_NOT_FOUND: &str = "template_not_found";
    /// 409: a template with this name already exists.
    pub const TEMPLATE_EXISTS: &str = "template_exists";
    /// 409: the template is used by sandboxes.
    pub const TEMPLATE_IN_USE: &str = "template_in_use";
    /// 409: the file or directory already exists.
    pub const FILE_EXISTS: &str = "file_exists";
    /// 403: the sandbox user the request acts as may not do this to the file or directory.
    pub const PERMISSION_DENIED: &str = "permission_denied";
    /// 404: the file or directory does not exist in the sandbox.
    pub const FILE_NOT_FOUND: &str = "file_not_found";
    /// 404: no such route.
    pub const NOT_FOUND: &str = "not_found";
    /// 405: the route exists but not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 503: no capacity left (network slots, uid ranges).
    pub const CAPACITY_EXHAUSTED: &str = "capacity_exhausted";
    /// 500: the runtime failed to create or destroy a sandbox.
    pub const RUNTIME_ERROR: &str = "runtime_error";
    /// 502: the agent inside the sandbox failed or could not be reached.
    pub const AGENT_ERROR: &str = "agent_error";
    /// 500: a template build failed.
    pub const BUILD_FAILED: &str = "build_failed";
    /// 500: a bug or an unexpected host failure; see the server log.
    pub const INTERNAL: &str = "internal";
    /// Freezing, paging out or thawing a sandbox failed.
    pub const STANDBY_FAILED: &str = "standby_failed";
    /// No such lease on this sandbox.
    pub const LEASE_NOT_FOUND: &str = "lease_not_found";
    /// Standby of a zero-data-retention sandbox (its memory must never leave RAM).
    pub const STANDBY_REFUSED: &str = "standby_refused";
    /// 502: the template's start command exited, or was not ready in time (the sandbox is gone).
    pub const START_FAILED: &str = "start_failed";
    /// 409: a restart from files was asked of a sandbox that is not in `error` (it is being
    /// created, or its processes run or sleep).
    pub const RESTART_REFUSED: &str = "restart_refused";
    /// 403: the key's role in its workspace does not allow the call (or it needs the operator
    /// key). Only for calls inside the key's own workspace: another workspace's objects are 404.
    pub const FORBIDDEN: &str = "forbidden";
    /// 429: a quota of the workspace is exhausted; the message names the limit and the use.
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    /// 404: no such workspace (for this key).
    pub const WORKSPACE_NOT_FOUND: &str = "workspace_not_found";
    /// 409: a workspace or template name is taken, or a workspace still owns objects.
    pub const CONFLICT: &str = "conflict";
}
