//! [`E2bBackend`] over burrow's sandbox service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use burrow_e2b::{
    BackendError, ConnectOptions, ConnectOutcome, CreateSandbox, E2bBackend, ListFilter, LogLevel,
    NewTemplateBuild, Order, Principal, SandboxInfo, SandboxMetric, SandboxPage,
    SandboxState as E2bState, TemplateAlias, TemplateBuildCreated, TemplateBuildSpec,
    TemplateBuildStatus,
};
use burrow_runtime::SandboxHandle;
use burrow_store::{SandboxFilter, SandboxRecord};
use burrow_types::{CreateSandboxRequest, SandboxState, codes};
use chrono::{DateTime, Utc};

use super::lifecycle::{Lifecycle, Lifecycles, TimeoutAction, after};
use super::metrics::{Limits, MIN_CPU_WINDOW, MetricsRing};
use super::template_builds::TemplateBuilds;
use crate::error::HttpError;
use crate::state::AppState;
use burrow_core::sandboxes;

pub struct E2bService {
    state: AppState,
    lifecycles: Arc<Lifecycles>,
    metrics: Arc<MetricsRing>,
    /// Idempotency key → sandbox id; the lock also serialises creates that carry a key.
    idempotency: tokio::sync::Mutex<HashMap<String, String>>,
    /// E2B template builds (`Template.build`), in memory.
    builds: Arc<TemplateBuilds>,
}

impl E2bService {
    pub fn new(state: AppState) -> Self {
        Self {
            lifecycles: state.e2b_lifecycles.clone(),
            metrics: state.e2b_metrics.clone(),
            state,
            idempotency: tokio::sync::Mutex::default(),
            builds: Arc::default(),
        }
    }

    /// The sandbox as E2B sees it: running or paused; anything else (failed, being created) is
    /// absent.
    /// Another team's (workspace's) sandbox is absent too: this is the E2B API's one lookup,
    /// so the wall between workspaces is here.
    async fn visible(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<SandboxRecord, BackendError> {
        crate::auth::check_sandbox(&self.state, &caller(principal), id)
            .await
            .map_err(|e| backend_error(e, id))?;
        let record = sandboxes::get(&self.state, id)
            .await
            .map_err(|e| backend_error(e, id))?;
        match self.e2b_state(&record) {
            Some(_) => Ok(record),
            None => Err(BackendError::SandboxNotFound(id.to_string())),
        }
    }

    /// E2B's view: paused = paused through the E2B API (pause or on-timeout pause) and not
    /// resumed since (connect, or traffic when `autoResume` is set). A sandbox burrow's idle timer
    /// (or the native API) put to standby stays `running`: traffic wakes it transparently, which
    /// is what `running` promises an E2B client.
    fn e2b_state(&self, record: &SandboxRecord) -> Option<E2bState> {
        match record.state {
            SandboxState::Running | SandboxState::Standby if self.is_paused(&record.id) => {
                Some(E2bState::Paused)
            }
            SandboxState::Running | SandboxState::Standby => Some(E2bState::Running),
            _ => None,
        }
    }

    fn is_paused(&self, id: &str) -> bool {
        self.lifecycles.get(id).is_some_and(|l| l.paused)
    }

    /// Marks the sandbox paused (so the proxy stops waking it unless `autoResume`), stops its
    /// clock and puts it to standby; E2B reports it paused until a connect (or an auto-resume).
    async fn pause_sandbox(&self, id: &str) -> Result<(), BackendError> {
        // Marked first: traffic racing with the pause must not wake a sandbox that E2B pauses.
        let was_tracked = self.lifecycles.update(id, |l| l.paused = true).is_some();
        if !was_tracked {
            self.lifecycles.insert(
                id,
                Lifecycle {
                    end_at: Utc::now(),
                    on_timeout: TimeoutAction::Kill,
                    auto_resume: false,
                    allow_internet_access: None,
                    timeout_secs: 0,
                    paused: true,
                },
            );
        }
        if let Err(e) = sandboxes::standby(&self.state, id, false).await {
            if was_tracked {
                self.lifecycles.update(id, |l| l.paused = false);
            } else {
                self.lifecycles.remove(id);
            }
            return Err(backend_error(e, id));
        }
        Ok(())
    }

    /// The caller as the sandbox service knows it.
    async fn core_principal(
        &self,
        principal: &Principal,
    ) -> Result<(burrow_core::Principal, burrow_store::WorkspaceRecord), BackendError> {
        let internal =
            |e: burrow_store::StoreError| BackendError::Internal(format!("state database: {e}"));
        let workspace_id = principal
            .team_id
            .clone()
            .unwrap_or_else(|| burrow_core::workspace::DEFAULT_WORKSPACE_ID.to_string());
        let workspace = self
            .state
            .store
            .workspace(&workspace_id)
            .await
            .map_err(internal)?
            .ok_or(BackendError::Unauthorized)?;
        let mut core = caller(principal);
        if let burrow_core::Scope::Workspace { name, .. } = &mut core.scope {
            name.clone_from(&workspace.name);
        }
        Ok((core, workspace))
    }

    fn info(&self, record: SandboxRecord) -> SandboxInfo {
        let lifecycle = self.lifecycles.get(&record.id);
        let started_at = parse_time(&record.created_at);
        SandboxInfo {
            state: self.e2b_state(&record).unwrap_or(E2bState::Running),
            started_at,
            // Native sandboxes have no end time; E2B needs one, so report a distant one.
            end_at: lifecycle
                .as_ref()
                .map_or_else(|| after(started_at, NATIVE_END_AFTER), |l| l.end_at),
            cpu_count: record.cpus.ceil().max(1.0) as u32,
            memory_mb: record.memory_mb,
            disk_size_mb: record.disk_mb,
            metadata: record.labels,
            envd_access_token: record.access_token,
            traffic_access_token: None,
            on_timeout: lifecycle
                .as_ref()
                .map_or(burrow_e2b::OnTimeout::Kill, |l| l.on_timeout.into()),
            auto_resume: lifecycle.as_ref().is_some_and(|l| l.auto_resume),
            allow_internet_access: lifecycle.and_then(|l| l.allow_internet_access),
            template: record.template,
            id: record.id,
        }
    }

    /// [`Self::info`] with the sandbox's traffic access token: E2B's create and connect
    /// responses carry it.
    async fn info_with_token(&self, record: SandboxRecord) -> Result<SandboxInfo, BackendError> {
        let token = self
            .state
            .store
            .traffic_token(&record.id)
            .await
            .map_err(|e| backend_error(burrow_core::CoreError::from(e), ""))?;
        let mut info = self.info(record);
        info.traffic_access_token = token;
        Ok(info)
    }

    async fn create_sandbox(
        &self,
        principal: &Principal,
        request: CreateSandbox,
    ) -> Result<SandboxInfo, BackendError> {
        if request.allow_internet_access == Some(false) {
            return Err(BackendError::NotSupported(
                "allow_internet_access=false is not supported by burrow yet: every sandbox has \
                 outbound internet access"
                    .to_string(),
            ));
        }
        let native = CreateSandboxRequest {
            template: burrow_template_name(&request.template).to_string(),
            env: request.env_vars,
            labels: request.metadata,
            public_traffic: request.public_traffic,
            ..CreateSandboxRequest::default()
        };
        let (core, workspace) = self.core_principal(principal).await?;
        let sandbox = sandboxes::create(&self.state, &core, &workspace, native)
            .await
            .map_err(|e| {
                let e = HttpError::from(e);
                match (e.status, e.body.code.as_str()) {
                    (StatusCode::NOT_FOUND, codes::TEMPLATE_NOT_FOUND) => {
                        // Names the burrow template, the one an operator has to build.
                        BackendError::TemplateNotFound(
                            burrow_template_name(&request.template).to_string(),
                        )
                    }
                    _ => backend_error(e, ""),
                }
            })?;
        self.lifecycles.insert(
            &sandbox.id,
            Lifecycle {
                end_at: after(Utc::now(), request.timeout),
                on_timeout: request.on_timeout.into(),
                auto_resume: request.auto_resume,
                allow_internet_access: request.allow_internet_access,
                timeout_secs: request.timeout.as_secs(),
                paused: false,
            },
        );
        let record = self.visible(principal, &sandbox.id).await?;
        self.info_with_token(record).await
    }

    /// Kills now or pauses, whichever the sandbox's on-timeout action says.
    pub(super) async fn expire(&self, id: &str, action: TimeoutAction) {
        match action {
            TimeoutAction::Kill => {
                tracing::info!(sandbox = id, "E2B timeout reached: killing");
                match sandboxes::delete(&self.state, id)
                    .await
                    .map_err(HttpError::from)
                {
                    Ok(()) => {}
                    Err(e) if e.status == StatusCode::NOT_FOUND => {}
                    Err(e) => {
                        tracing::error!(sandbox = id, "killing a timed-out sandbox: {e}");
                        self.retry_later(id);
                        return;
                    }
                }
                // Also after a 404: its lifecycle entry must not outlive it.
                sandboxes::forget(&self.state, id);
            }
            TimeoutAction::Pause { .. } => {
                tracing::info!(sandbox = id, "E2B timeout reached: pausing");
                if let Err(e) = self.pause_sandbox(id).await {
                    match e {
                        BackendError::SandboxNotFound(_) => sandboxes::forget(&self.state, id),
                        // Retried later; never kill instead of pausing.
                        e => {
                            tracing::error!(sandbox = id, "pausing a timed-out sandbox: {e}");
                            self.retry_later(id);
                        }
                    }
                }
            }
        }
    }

    /// Moves a failed on-timeout action's end time a little ahead, so it is retried without
    /// flooding the log every tick.
    fn retry_later(&self, id: &str) {
        let retry_at = after(Utc::now(), EXPIRY_RETRY);
        self.lifecycles.update(id, |l| l.end_at = retry_at);
    }
}

/// E2B template names that are burrow templates under another name: `code-interpreter-v1` is
/// the e2b-code-interpreter SDK's default template.
const TEMPLATE_ALIASES: &[(&str, &str)] = &[("code-interpreter-v1", "code-interpreter")];

/// The burrow template an E2B `templateID` names.
fn burrow_template_name(e2b_template: &str) -> &str {
    TEMPLATE_ALIASES
        .iter()
        .find(|(alias, _)| *alias == e2b_template)
        .map_or(e2b_template, |(_, name)| name)
}

/// Delay before a failed kill / pause at the end time is tried again.
const EXPIRY_RETRY: Duration = Duration::from_secs(30);

/// How far in the future a native sandbox's end time is reported.
const NATIVE_END_AFTER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc))
}

/// Maps the sandbox service's errors to E2B's. `id` names the sandbox for a 404.
fn backend_error(e: impl Into<HttpError>, id: &str) -> BackendError {
    let e: HttpError = e.into();
    let message = e.body.message;
    match e.status {
        StatusCode::NOT_FOUND => BackendError::SandboxNotFound(id.to_string()),
        StatusCode::BAD_REQUEST => BackendError::InvalidRequest(message),
        StatusCode::CONFLICT => BackendError::Conflict(message),
        StatusCode::SERVICE_UNAVAILABLE => BackendError::Unavailable(message),
        StatusCode::TOO_MANY_REQUESTS => BackendError::LimitExceeded(message),
        _ => BackendError::Internal(message),
    }
}

/// Orders records by start time (then id, for a stable order) in the requested direction.
fn sort_key(record: &SandboxRecord) -> (DateTime<Utc>, String) {
    (parse_time(&record.created_at), record.id.clone())
}

/// Cursor `<rfc3339 start>|<id>` of the last sandbox of a page.
fn cursor_of(record: &SandboxRecord) -> String {
    let (at, id) = sort_key(record);
    format!(
        "{}|{id}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), BackendError> {
    let invalid = || {
        BackendError::InvalidRequest(format!(
            "invalid nextToken '{}': pass the x-next-token of the previous page unchanged",
            cursor.escape_debug()
        ))
    };
    let (at, id) = cursor.split_once('|').ok_or_else(invalid)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| invalid())?;
    Ok((at.with_timezone(&Utc), id.to_string()))
}

/// The E2B caller as the wall knows it: its team is its workspace (the name is not needed to
/// check ownership).
fn caller(principal: &Principal) -> burrow_core::Principal {
    burrow_core::Principal {
        key_id: principal.id.clone(),
        scope: match &principal.team_id {
            None => burrow_core::Scope::Operator,
            Some(team) => burrow_core::Scope::Workspace {
                id: team.clone(),
                name: String::new(),
                role: if principal.read_only {
                    burrow_core::Role::Viewer
                } else {
                    burrow_core::Role::Member
                },
            },
        },
    }
}

impl E2bBackend for E2bService {
    async fn authenticate(&self, api_key: &str) -> Result<Principal, BackendError> {
        // The native API's authentication, so both read keys and roles the same way.
        match crate::auth::authenticate(&self.state, api_key).await {
            Ok(Some(principal)) => Ok(Principal {
                read_only: matches!(
                    principal.scope,
                    burrow_core::Scope::Workspace {
                        role: burrow_core::Role::Viewer,
                        ..
                    }
                ),
                team_id: principal.workspace_id().map(str::to_string),
                id: principal.key_id,
            }),
            Ok(None) => Err(BackendError::Unauthorized),
            Err(e) => Err(BackendError::Internal(e.body.message)),
        }
    }

    async fn create(
        &self,
        principal: &Principal,
        request: CreateSandbox,
    ) -> Result<SandboxInfo, BackendError> {
        let Some(key) = request.idempotency_key.clone() else {
            return self.create_sandbox(principal, request).await;
        };
        // Idempotency keys are per team: another team's key never finds this team's sandbox.
        let key = format!("{}/{key}", principal.team_id.as_deref().unwrap_or("*"));
        let mut keys = self.idempotency.lock().await;
        if let Some(id) = keys.get(&key)
            && let Ok(record) = self.visible(principal, id).await
        {
            return self.info_with_token(record).await;
        }
        let info = self.create_sandbox(principal, request).await?;
        keys.insert(key, info.id.clone());
        Ok(info)
    }

    async fn get(&self, principal: &Principal, id: &str) -> Result<SandboxInfo, BackendError> {
        let record = self.visible(principal, id).await?;
        Ok(self.info(record))
    }

    async fn list(
        &self,
        principal: &Principal,
        filter: ListFilter,
    ) -> Result<SandboxPage, BackendError> {
        let after_cursor = filter.cursor.as_deref().map(parse_cursor).transpose()?;
        let records = self
            .state
            .store
            .list_sandboxes(SandboxFilter {
                state: None,
                labels: filter.metadata.clone().into_iter().collect(),
                workspace_id: principal.team_id.clone(),
            })
            .await
            .map_err(|e| BackendError::Internal(format!("state database: {e}")))?;
        let mut matching = Vec::new();
        for record in records {
            let record = sandboxes::observe(&self.state, record)
                .await
                .map_err(|e| backend_error(e, ""))?;
            let Some(state) = self.e2b_state(&record) else {
                continue;
            };
            let started = parse_time(&record.created_at);
            let wanted = filter.states.contains(&state)
                && filter
                    .template
                    .as_ref()
                    .is_none_or(|t| burrow_template_name(t) == record.template)
                && filter.started_after.is_none_or(|a| started >= a)
                && filter
                    .metadata
                    .iter()
                    .all(|(k, v)| record.labels.get(k) == Some(v));
            if wanted {
                matching.push(record);
            }
        }
        matching.sort_by_key(sort_key);
        if filter.order == Order::Desc {
            matching.reverse();
        }
        if let Some(cursor) = after_cursor {
            matching.retain(|r| match filter.order {
                Order::Asc => sort_key(r) > cursor,
                Order::Desc => sort_key(r) < cursor,
            });
        }
        let limit = filter.limit.max(1) as usize;
        let next_cursor = (matching.len() > limit).then(|| cursor_of(&matching[limit - 1]));
        matching.truncate(limit);
        Ok(SandboxPage {
            sandboxes: matching.into_iter().map(|r| self.info(r)).collect(),
            next_cursor,
        })
    }

    async fn kill(&self, principal: &Principal, id: &str) -> Result<(), BackendError> {
        // Any state may be killed, including failed sandboxes E2B does not list. A kill racing
        // with another delete of the same sandbox waits for it and succeeds too.
        crate::auth::check_sandbox(&self.state, &caller(principal), id)
            .await
            .map_err(|e| backend_error(e, id))?;
        sandboxes::delete_because(
            &self.state,
            id,
            burrow_core::retention::reasons::API,
            &principal.id,
        )
        .await
        .map_err(|e| backend_error(e, id))
    }

    async fn set_timeout(
        &self,
        principal: &Principal,
        id: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let record = self.visible(principal, id).await?;
        if self.e2b_state(&record) != Some(E2bState::Running) {
            return Err(BackendError::NotRunning(id.to_string()));
        }
        let end_at = after(Utc::now(), timeout);
        if self.lifecycles.update(id, |l| l.end_at = end_at).is_none() {
            // A native sandbox gets an E2B end time (and so a timeout) once asked for one.
            self.lifecycles.insert(
                id,
                Lifecycle {
                    end_at,
                    on_timeout: TimeoutAction::Kill,
                    auto_resume: false,
                    allow_internet_access: None,
                    timeout_secs: timeout.as_secs(),
                    paused: false,
                },
            );
        }
        if timeout.is_zero() {
            let action = self
                .lifecycles
                .get(id)
                .map_or(TimeoutAction::Kill, |l| l.on_timeout);
            self.expire(id, action).await;
        }
        Ok(())
    }

    async fn refresh(
        &self,
        principal: &Principal,
        id: &str,
        duration: Duration,
    ) -> Result<(), BackendError> {
        let record = self.visible(principal, id).await?;
        if self.e2b_state(&record) != Some(E2bState::Running) {
            return Err(BackendError::NotRunning(id.to_string()));
        }
        let end_at = after(Utc::now(), duration);
        self.lifecycles
            .update(id, |l| l.end_at = l.end_at.max(end_at));
        Ok(())
    }

    async fn pause(
        &self,
        principal: &Principal,
        id: &str,
        _keep_memory: bool,
    ) -> Result<(), BackendError> {
        let record = self.visible(principal, id).await?;
        if self.e2b_state(&record) == Some(E2bState::Paused) {
            return Err(BackendError::AlreadyPaused(id.to_string()));
        }
        // Warm standby keeps memory either way; a filesystem-only pause loses nothing by it.
        self.pause_sandbox(id).await
    }

    async fn connect(
        &self,
        principal: &Principal,
        id: &str,
        options: ConnectOptions,
    ) -> Result<(SandboxInfo, ConnectOutcome), BackendError> {
        let record = self.visible(principal, id).await?;
        let end_at = after(Utc::now(), options.timeout);
        if self.e2b_state(&record) == Some(E2bState::Paused) {
            if !options.restore_memory {
                return Err(BackendError::NotSupported(
                    "resuming without memory (memory: false, on_resume=\"reboot\") is not \
                     supported by burrow: a paused sandbox always resumes with its memory and \
                     processes; connect without it"
                        .to_string(),
                ));
            }
            sandboxes::resume(&self.state, id)
                .await
                .map_err(|e| backend_error(e, id))?;
            self.lifecycles.update(id, |l| {
                l.paused = false;
                l.end_at = end_at;
            });
            let record = self.visible(principal, id).await?;
            return Ok((self.info_with_token(record).await?, ConnectOutcome::Resumed));
        }
        self.lifecycles
            .update(id, |l| l.end_at = l.end_at.max(end_at));
        Ok((
            self.info_with_token(record).await?,
            ConnectOutcome::AlreadyRunning,
        ))
    }

    async fn metrics(
        &self,
        principal: &Principal,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<Vec<SandboxMetric>, BackendError> {
        let record = self.visible(principal, id).await?;
        if self.e2b_state(&record) == Some(E2bState::Running) {
            // Read the cgroups without waking a sleeping sandbox (a metrics poll is no activity).
            let handle = record
                .handle_json
                .as_deref()
                .and_then(|json| serde_json::from_str::<SandboxHandle>(json).ok())
                .ok_or_else(|| {
                    BackendError::Internal(format!("sandbox {id} has no runtime handle"))
                })?;
            let read = || async {
                let usage =
                    self.state.runtime.usage(&handle).await.map_err(|e| {
                        BackendError::Internal(format!("reading usage of {id}: {e}"))
                    })?;
                Ok::<_, BackendError>((Instant::now(), usage))
            };
            let base = match self.metrics.cpu_base(id) {
                Some(base) => base,
                None => {
                    // First sample: a CPU rate needs a second reading a moment later.
                    let (taken, usage) = read().await?;
                    tokio::time::sleep(MIN_CPU_WINDOW).await;
                    (taken, usage.cpu_seconds)
                }
            };
            let (taken, usage) = read().await?;
            let limits = Limits {
                cpu_count: record.cpus.ceil().max(1.0) as u32,
                disk_total_bytes: record.disk_mb.saturating_mul(1 << 20),
            };
            self.metrics.record(id, base, taken, &usage, limits);
        }
        Ok(self.metrics.window(id, start, end))
    }

    async fn resolve_template(
        &self,
        principal: &Principal,
        alias: &str,
    ) -> Result<TemplateAlias, BackendError> {
        let name = burrow_template_name(alias).to_string();
        if let Ok(Some(owner)) = self.state.store.template_owner(&name).await
            && !caller(principal).sees(&owner)
        {
            return Err(BackendError::TemplateNotFound(name));
        }
        let templates = self.state.templates.clone();
        let lookup = name.clone();
        let exists = tokio::task::spawn_blocking(move || templates.exists(&lookup))
            .await
            .map_err(|e| BackendError::Internal(format!("template lookup task: {e}")))?;
        match exists {
            Ok(true) => Ok(TemplateAlias {
                template_id: name,
                // burrow has no teams: its templates are not "public" in E2B's sense.
                public: false,
            }),
            // A name burrow cannot store (`team/name:tag`, …) names no burrow template either.
            Ok(false) | Err(burrow_templates::TemplateError::InvalidName(_)) => {
                Err(BackendError::TemplateNotFound(name))
            }
            Err(e) => Err(BackendError::Internal(format!(
                "looking up template {name}: {e}"
            ))),
        }
    }

    async fn request_template_build(
        &self,
        principal: &Principal,
        request: NewTemplateBuild,
    ) -> Result<TemplateBuildCreated, BackendError> {
        // cpuCount / memoryMB are not kept: burrow templates carry no resources (sandboxes get
        // them at create).
        self.builds
            .request(&self.state, principal.team_id.as_deref(), &request.name)
            .await
    }

    async fn template_files(
        &self,
        principal: &Principal,
        template_id: &str,
        files_hash: &str,
    ) -> Result<Option<String>, BackendError> {
        self.builds.files(
            &self.state,
            principal.team_id.as_deref(),
            template_id,
            files_hash,
        )
    }

    async fn receive_template_files(
        &self,
        token: &str,
        content_length: Option<u64>,
        body: axum::body::Body,
    ) -> Result<(), BackendError> {
        self.builds
            .receive(&self.state, token, content_length, body)
            .await
    }

    async fn start_template_build(
        &self,
        principal: &Principal,
        template_id: &str,
        build_id: &str,
        spec: TemplateBuildSpec,
    ) -> Result<(), BackendError> {
        let (core, _) = self.core_principal(principal).await?;
        self.builds
            .start(&self.state, &core, template_id, build_id, spec)
            .await
    }

    async fn template_build_status(
        &self,
        principal: &Principal,
        template_id: &str,
        build_id: &str,
        offset: usize,
        limit: usize,
        min_level: LogLevel,
    ) -> Result<TemplateBuildStatus, BackendError> {
        self.builds.status(
            principal.team_id.as_deref(),
            template_id,
            build_id,
            offset,
            limit,
            min_level,
        )
    }

    fn sandbox_domain(&self) -> Option<String> {
        Some(self.state.config.domain.clone())
    }
}
