//! The sandbox service: create, delete, look up and reconcile sandboxes, keeping the store and the
//! runtime consistent. HTTP handlers stay thin on top of it.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use burrow_runtime::{SandboxHandle, SandboxSpec};
use burrow_store::{SandboxRecord, StoreError};
use burrow_types::{CreateSandboxRequest, Sandbox, SandboxState, codes};

use crate::error::HttpError;
use crate::state::AppState;
use crate::{ids, keys, validate};

/// Max processes per sandbox.
const PIDS_MAX: u64 = 4096;

/// What the rest of the server needs to talk to a running sandbox.
#[derive(Debug, Clone)]
pub struct RunningSandbox {
    pub record: SandboxRecord,
    pub handle: SandboxHandle,
}

impl RunningSandbox {
    pub fn access_token(&self) -> Option<&str> {
        self.record.access_token.as_deref()
    }
}

pub fn to_api(rec: SandboxRecord) -> Sandbox {
    Sandbox {
        id: rec.id,
        template: rec.template,
        state: rec.state,
        cpus: rec.cpus,
        memory_mb: rec.memory_mb,
        disk_mb: rec.disk_mb,
        env: rec.env,
        labels: rec.labels,
        created_at: rec.created_at,
        ip: rec.ip,
        error: rec.error,
        envd_access_token: rec.access_token,
    }
}

fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// Validates, creates and starts a sandbox. On any failure nothing is left behind: the runtime's
/// partial work is destroyed and the row is deleted.
pub async fn create(state: &AppState, req: CreateSandboxRequest) -> Result<Sandbox, HttpError> {
    validate::template_name(&req.template)?;
    validate::limits(&req, host_cpus())?;
    validate::env(&req.env)?;
    validate::labels(&req.labels)?;
    let template = {
        let templates = state.templates.clone();
        let name = req.template.clone();
        tokio::task::spawn_blocking(move || templates.get(&name))
            .await
            .map_err(|e| HttpError::internal(format!("template lookup task: {e}")))??
    };

    let mut env: BTreeMap<String, String> = template.env.clone();
    env.extend(req.env.clone());
    let access_token = keys::generate_access_token();

    let mut record = SandboxRecord::new_creating(ids::new_sandbox_id(), req.template.clone());
    record.cpus = req.cpus;
    record.memory_mb = req.memory_mb;
    record.disk_mb = req.disk_mb;
    record.env = env.clone();
    record.labels = req.labels;
    record.access_token = Some(access_token.clone());
    // A duplicate id is a 1-in-2^98 event; retry once rather than fail.
    if let Err(StoreError::DuplicateSandbox(_)) = state.store.insert_sandbox(&record).await {
        record.id = ids::new_sandbox_id();
        state.store.insert_sandbox(&record).await?;
    }

    let spec = SandboxSpec {
        id: record.id.clone(),
        template: template.name.clone(),
        layers: template.layers.clone(),
        cpus: req.cpus,
        memory_mb: req.memory_mb,
        disk_mb: req.disk_mb,
        pids_max: PIDS_MAX,
        env,
        access_token: Some(access_token),
        default_user: template.user.clone(),
        default_workdir: template.workdir.clone(),
    };
    let handle = match state.runtime.create(spec).await {
        Ok(handle) => handle,
        Err(e) => {
            abandon(state, &record.id).await;
            return Err(e.into());
        }
    };
    let handle_json = serde_json::to_string(&handle).expect("a handle always serialises");
    let ip = handle.ip.to_string();
    match state
        .store
        .mark_sandbox_running(&record.id, &handle_json, &ip)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // Deleted while being created: honour the delete.
            let _ = state.runtime.destroy(&record.id).await;
            return Err(HttpError::sandbox_not_found(&record.id));
        }
        Err(e) => {
            abandon(state, &record.id).await;
            return Err(e.into());
        }
    }
    record.state = SandboxState::Running;
    record.handle_json = Some(handle_json);
    record.ip = Some(ip);
    Ok(to_api(record))
}

/// Undoes a failed create: runtime resources first, then the row.
async fn abandon(state: &AppState, id: &str) {
    if let Err(e) = state.runtime.destroy(id).await {
        tracing::error!(sandbox = id, "cleanup after a failed create: {e}");
    }
    if let Err(e) = state.store.delete_sandbox(id).await {
        tracing::error!(sandbox = id, "removing the row of a failed create: {e}");
    }
}

/// The sandbox's record, or 404.
pub async fn get(state: &AppState, id: &str) -> Result<SandboxRecord, HttpError> {
    if !burrow_types::is_valid_sandbox_id(id) {
        return Err(HttpError::sandbox_not_found(id));
    }
    let record = state
        .store
        .get_sandbox(id)
        .await?
        .ok_or_else(|| HttpError::sandbox_not_found(id))?;
    observe(state, record).await
}

/// Reason recorded for sandboxes whose init died while the daemon was running.
pub const EXITED: &str = "sandbox processes exited unexpectedly";

/// A `running` record whose init is gone (killed, OOM, crashed) is marked `error`, so clients see
/// the truth instead of agent timeouts. Its resources are released when it is deleted.
pub async fn observe(
    state: &AppState,
    mut record: SandboxRecord,
) -> Result<SandboxRecord, HttpError> {
    if record.state != SandboxState::Running {
        return Ok(record);
    }
    let Some(handle) = record
        .handle_json
        .as_deref()
        .and_then(|json| serde_json::from_str::<SandboxHandle>(json).ok())
    else {
        return Ok(record);
    };
    if state.runtime.is_alive(&handle) {
        return Ok(record);
    }
    state.store.mark_sandbox_error(&record.id, EXITED).await?;
    record.state = SandboxState::Error;
    record.error = Some(EXITED.to_string());
    record.handle_json = None;
    record.ip = None;
    Ok(record)
}

/// The sandbox and its runtime handle, or 404 / 409 if it is not running.
pub async fn running(state: &AppState, id: &str) -> Result<RunningSandbox, HttpError> {
    let record = get(state, id).await?;
    let handle = match (&record.state, &record.handle_json) {
        (SandboxState::Running, Some(json)) => serde_json::from_str::<SandboxHandle>(json)
            .map_err(|e| HttpError::internal(format!("stored handle of {id} is invalid: {e}")))?,
        _ => {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                codes::SANDBOX_NOT_RUNNING,
                format!(
                    "sandbox '{id}' is {}{}; delete it and create a new one",
                    record.state,
                    record
                        .error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            ));
        }
    };
    Ok(RunningSandbox { record, handle })
}

/// Destroys a sandbox's processes and resources, then deletes its row.
pub async fn delete(state: &AppState, id: &str) -> Result<(), HttpError> {
    get(state, id).await?;
    state.runtime.destroy(id).await?;
    state.store.delete_sandbox(id).await?;
    Ok(())
}

/// Reason recorded for sandboxes whose processes died while the daemon was down.
pub const GONE_AFTER_RESTART: &str = "sandbox processes were gone after a restart";

/// After a start: rows left in `creating` by a crash are destroyed and removed; the runtime adopts
/// live sandboxes and releases dead ones, which are marked `error`.
pub async fn reconcile(state: &AppState) -> Result<(), crate::error::ServeError> {
    let creating = state
        .store
        .list_sandboxes(burrow_store::SandboxFilter {
            state: Some(SandboxState::Creating),
            labels: Vec::new(),
        })
        .await?;
    for rec in creating {
        tracing::warn!(
            sandbox = rec.id,
            "removing a sandbox whose creation was interrupted"
        );
        state.runtime.destroy(&rec.id).await?;
        state.store.delete_sandbox(&rec.id).await?;
    }
    let known = state.store.sandbox_ids().await?;
    let report = state.runtime.reconcile(&known).await?;
    for id in &report.dead {
        if let Some(rec) = state.store.get_sandbox(id).await?
            && rec.state == SandboxState::Running
        {
            state
                .store
                .mark_sandbox_error(id, GONE_AFTER_RESTART)
                .await?;
        }
    }
    // A running row the runtime neither adopted nor reported dead has nothing behind it.
    let adopted: std::collections::HashSet<&str> =
        report.adopted.iter().map(|h| h.id.as_str()).collect();
    let running = state
        .store
        .list_sandboxes(burrow_store::SandboxFilter {
            state: Some(SandboxState::Running),
            labels: Vec::new(),
        })
        .await?;
    for rec in running {
        if !adopted.contains(rec.id.as_str()) {
            state
                .store
                .mark_sandbox_error(&rec.id, GONE_AFTER_RESTART)
                .await?;
        }
    }
    tracing::info!(
        adopted = report.adopted.len(),
        dead = report.dead.len(),
        orphans = report.orphans_removed.len(),
        "reconciled sandboxes"
    );
    Ok(())
}
