//! The contract between the E2B API layer and burrow's sandbox service.
//!
//! Types here are burrow-native and small; every E2B-specific detail (JSON field names, default
//! timeouts, status codes, error bodies) is handled by the router in this crate.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The envd version advertised to SDKs unless the backend says otherwise. SDKs gate features on
/// it (≥ 0.1.5 metrics, ≥ 0.6.4 current process/filesystem features).
pub const DEFAULT_ENVD_VERSION: &str = "0.6.13";

/// Who is calling, as established by [`E2bBackend::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Stable id of the API key (or team) the request is made for.
    pub id: String,
    /// The team (burrow: workspace) whose sandboxes the caller sees; `None` = every team (the
    /// server operator).
    pub team_id: Option<String>,
    /// A read-only key: the router refuses every call but reads with 403.
    pub read_only: bool,
}

/// Lifecycle state of a sandbox as E2B exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    Running,
    Paused,
}

/// What happens when a sandbox's end time is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Kill,
    /// Pause; `keep_memory: false` means a filesystem-only pause (processes are not preserved).
    Pause {
        keep_memory: bool,
    },
}

/// A validated request to create a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSandbox {
    /// Template name as given by the client (E2B `templateID`, which may be an alias).
    pub template: String,
    /// Time to live from now; the sandbox's end time becomes `now + timeout`.
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
    /// Wake a paused sandbox on traffic (only ever set together with `OnTimeout::Pause`).
    pub auto_resume: bool,
    pub metadata: BTreeMap<String, String>,
    /// Environment variables for every process in the sandbox.
    pub env_vars: BTreeMap<String, String>,
    /// `None` = the server's default policy.
    pub allow_internet_access: Option<bool>,
    /// `network.allowPublicTraffic`: false = the sandbox's URLs need its traffic access token.
    pub public_traffic: bool,
    /// Client-chosen idempotency key (`[a-z0-9-]{1,255}`): a retried create with the same key and
    /// principal should return the sandbox created the first time instead of a new one.
    pub idempotency_key: Option<String>,
}

/// Everything the E2B API reports about a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    pub state: SandboxState,
    pub started_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub cpu_count: u32,
    pub memory_mb: u64,
    pub disk_size_mb: u64,
    pub metadata: BTreeMap<String, String>,
    /// Token envd requires in `X-Access-Token`; `None` if the sandbox's envd is unauthenticated.
    pub envd_access_token: Option<String>,
    /// Token the sandbox's URLs require in `e2b-traffic-access-token`; `None`: public. Reported
    /// by create and connect (E2B's `Sandbox`).
    pub traffic_access_token: Option<String>,
    pub on_timeout: OnTimeout,
    pub auto_resume: bool,
    pub allow_internet_access: Option<bool>,
}

/// Sort order for listings, by start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// A template found by [`E2bBackend::resolve_template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateAlias {
    /// The template's id, as sandboxes created from it report in `templateID`.
    pub template_id: String,
    /// Usable by every team (E2B's public templates). burrow has no teams: `false`.
    pub public: bool,
}

/// Filters and pagination for [`E2bBackend::list`]. All filters must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// States to include; never empty.
    pub states: Vec<SandboxState>,
    /// Every pair must be present in the sandbox's metadata.
    pub metadata: BTreeMap<String, String>,
    pub template: Option<String>,
    pub started_after: Option<DateTime<Utc>>,
    pub order: Order,
    /// 1..=100.
    pub limit: u32,
    /// Opaque cursor from a previous [`SandboxPage::next_cursor`].
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPage {
    pub sandboxes: Vec<SandboxInfo>,
    /// Cursor for the next page (`None` on the last page). Must be printable ASCII (it travels in
    /// the `x-next-token` header).
    pub next_cursor: Option<String>,
}

/// Options of a connect / resume call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Running: end time becomes `max(end, now + timeout)` (never shortened).
    /// Paused: resumed with end time `now + timeout`.
    pub timeout: Duration,
    /// Resume from the memory snapshot (`true`, default) or cold-boot from disk (`false`).
    pub restore_memory: bool,
}

/// Whether a connect found the sandbox running or had to resume it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    AlreadyRunning,
    Resumed,
}

/// One resource usage sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxMetric {
    pub at: DateTime<Utc>,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used_bytes: u64,
    pub mem_total_bytes: u64,
    pub mem_cache_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

/// `POST /v3/templates`: a new build of template `name` (E2B's `templateID` is the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTemplateBuild {
    pub name: String,
    /// Requested sandbox resources; a backend may ignore them.
    pub cpu_count: Option<u32>,
    pub memory_mb: Option<u64>,
}

/// A build waiting for its steps ([`E2bBackend::start_template_build`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateBuildCreated {
    pub template_id: String,
    pub build_id: String,
}

/// One step of an E2B template build, its arguments already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateStep {
    /// A shell command, as `user` if given (else the build's current user).
    Run {
        command: String,
        user: Option<String>,
    },
    /// Files of the client's upload `files_hash` (paths relative to the client's context) to
    /// `dest`; owned by `user` (`user` or `user:group`) and with `mode` if given.
    Copy {
        src: String,
        dest: String,
        user: Option<String>,
        mode: Option<u32>,
        files_hash: String,
    },
    Env {
        vars: Vec<(String, String)>,
    },
    Workdir {
        path: String,
    },
    User {
        name: String,
    },
}

/// `POST /v2/templates/{id}/builds/{buildID}`, translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateBuildSpec {
    /// The template to build on (`fromTemplate`, or the template a supported `fromImage` maps to).
    pub parent: String,
    pub steps: Vec<TemplateStep>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
}

/// State of an E2B template build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildState {
    Waiting,
    Building,
    Ready,
    Error,
}

/// Level of a build log entry, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLogEntry {
    pub timestamp: DateTime<Utc>,
    pub message: String,
    pub level: LogLevel,
}

/// A build's state and its log entries from the requested offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateBuildStatus {
    pub state: BuildState,
    pub entries: Vec<BuildLogEntry>,
    /// Why the build failed (set with [`BuildState::Error`]).
    pub reason: Option<String>,
}

/// Errors a backend reports; the router maps each to E2B's status code and error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// 401.
    #[error("invalid API key")]
    Unauthorized,
    /// 404: no such sandbox for this principal.
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    /// 404: unknown template.
    #[error("template '{0}' not found")]
    TemplateNotFound(String),
    /// 404: no such template build for this principal.
    #[error("template build {0} not found")]
    BuildNotFound(String),
    /// 403: a credential that is not (or no longer) good for this (e.g. a used upload token).
    #[error("{0}")]
    Forbidden(String),
    /// 413: a request body over the server's limit.
    #[error("{0}")]
    TooLarge(String),
    /// 409 on pause.
    #[error("sandbox {0} is already paused")]
    AlreadyPaused(String),
    /// 404 on set_timeout / refresh, which only apply to running sandboxes (E2B treats a paused
    /// sandbox as absent from the running set there).
    #[error("sandbox {0} is paused")]
    NotRunning(String),
    /// 409: the sandbox is in a state that does not allow the operation (e.g. being killed).
    #[error("{0}")]
    Conflict(String),
    /// 400: a request the backend cannot satisfy (timeout above the maximum, unsupported mode…).
    #[error("{0}")]
    InvalidRequest(String),
    /// 429: a quota (e.g. concurrent sandboxes) is exhausted.
    #[error("{0}")]
    LimitExceeded(String),
    /// 503: temporarily unable to serve (e.g. no free network slot).
    #[error("{0}")]
    Unavailable(String),
    /// 501: a feature this burrow build does not provide (e.g. pause without standby support).
    #[error("{0}")]
    NotSupported(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

/// burrow's sandbox service, as seen by the E2B API.
///
/// Every method except `authenticate` receives the authenticated principal; a sandbox that exists
/// but belongs to another principal must be reported as [`BackendError::SandboxNotFound`].
pub trait E2bBackend: Send + Sync + 'static {
    /// Resolves an API key (`X-API-KEY`) to a principal, or [`BackendError::Unauthorized`].
    fn authenticate(
        &self,
        api_key: &str,
    ) -> impl Future<Output = Result<Principal, BackendError>> + Send;

    /// Creates and starts a sandbox. Returns it once envd is reachable.
    fn create(
        &self,
        principal: &Principal,
        request: CreateSandbox,
    ) -> impl Future<Output = Result<SandboxInfo, BackendError>> + Send;

    /// A running or paused sandbox.
    fn get(
        &self,
        principal: &Principal,
        id: &str,
    ) -> impl Future<Output = Result<SandboxInfo, BackendError>> + Send;

    fn list(
        &self,
        principal: &Principal,
        filter: ListFilter,
    ) -> impl Future<Output = Result<SandboxPage, BackendError>> + Send;

    /// Kills a running or paused sandbox and deletes its state.
    fn kill(
        &self,
        principal: &Principal,
        id: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Sets the end time to `now + timeout` (may shorten). A zero timeout fires the on-timeout
    /// action (kill or pause) right away.
    fn set_timeout(
        &self,
        principal: &Principal,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Extends the end time to at least `now + duration` (never shortens).
    fn refresh(
        &self,
        principal: &Principal,
        id: &str,
        duration: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Pauses a running sandbox; [`BackendError::AlreadyPaused`] if it is paused.
    fn pause(
        &self,
        principal: &Principal,
        id: &str,
        keep_memory: bool,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Makes sure the sandbox runs: extends a running one, resumes a paused one.
    fn connect(
        &self,
        principal: &Principal,
        id: &str,
        options: ConnectOptions,
    ) -> impl Future<Output = Result<(SandboxInfo, ConnectOutcome), BackendError>> + Send;

    /// Samples taken between `start` and `end` (inclusive; `None` = unbounded), oldest first.
    fn metrics(
        &self,
        principal: &Principal,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<SandboxMetric>, BackendError>> + Send;

    /// The template an E2B template name or alias (as in `templateID`) resolves to, for
    /// `Template.exists`; [`BackendError::TemplateNotFound`] if there is none.
    fn resolve_template(
        &self,
        principal: &Principal,
        alias: &str,
    ) -> impl Future<Output = Result<TemplateAlias, BackendError>> + Send;

    /// Registers a build of template `request.name` for the caller (`POST /v3/templates`); its
    /// steps come later with [`Self::start_template_build`]. By default builds are not
    /// supported (501), so the other build methods find no build, upload URL or template (404,
    /// 403).
    fn request_template_build(
        &self,
        _principal: &Principal,
        _request: NewTemplateBuild,
    ) -> impl Future<Output = Result<TemplateBuildCreated, BackendError>> + Send {
        async {
            Err(BackendError::NotSupported(
                "template builds are not supported by this backend".to_string(),
            ))
        }
    }

    /// Whether the caller already uploaded the files named by `files_hash` for template
    /// `template_id`: `Ok(None)` when present, else `Some(token)` for a one-time upload URL
    /// ([`Self::receive_template_files`]).
    fn template_files(
        &self,
        _principal: &Principal,
        template_id: &str,
        _files_hash: &str,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send {
        let missing = BackendError::TemplateNotFound(template_id.to_string());
        async { Err(missing) }
    }

    /// Stores an upload made to the URL [`Self::template_files`] handed out. The token is the
    /// only authorization (like a presigned URL): no API key comes with it.
    fn receive_template_files(
        &self,
        _token: &str,
        _content_length: Option<u64>,
        _body: axum::body::Body,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Err(BackendError::Forbidden("unknown upload URL".to_string())) }
    }

    /// Starts a waiting build in the background.
    fn start_template_build(
        &self,
        _principal: &Principal,
        _template_id: &str,
        build_id: &str,
        _spec: TemplateBuildSpec,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        let missing = BackendError::BuildNotFound(build_id.to_string());
        async { Err(missing) }
    }

    /// A build's state and at most `limit` of its log entries from `offset` on, of level `min_level`
    /// or above.
    fn template_build_status(
        &self,
        _principal: &Principal,
        _template_id: &str,
        build_id: &str,
        _offset: usize,
        _limit: usize,
        _min_level: LogLevel,
    ) -> impl Future<Output = Result<TemplateBuildStatus, BackendError>> + Send {
        let missing = BackendError::BuildNotFound(build_id.to_string());
        async { Err(missing) }
    }

    /// The domain SDKs use to build `{port}-{id}.{domain}` sandbox URLs (the `domain` response
    /// field). `None` lets the SDK fall back to its own `E2B_DOMAIN`.
    fn sandbox_domain(&self) -> Option<String> {
        None
    }

    /// The envd version advertised in `envdVersion`.
    fn envd_version(&self) -> String {
        DEFAULT_ENVD_VERSION.to_owned()
    }
}
