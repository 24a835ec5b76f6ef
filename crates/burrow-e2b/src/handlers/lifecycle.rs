//! Timeouts, pause, connect / resume and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::sandbox_response;
use crate::backend::{ConnectOptions, ConnectOutcome, E2bBackend, SandboxState};
use crate::create_request::{MAX_TIMEOUT_SECS, V1_DEFAULT_TIMEOUT_SECS, V2_DEFAULT_TIMEOUT_SECS};
use crate::error::ApiError;
use crate::extract::{Caller, JsonBody, RequiredJson, SandboxId};
use crate::wire::{ConnectRequest, Metric, PauseRequest, Refresh, SetTimeout};

/// E2B caps a refresh at one hour.
const MAX_REFRESH_SECS: i64 = 3600;

/// `POST /sandboxes/{id}/timeout`: end = now + timeout; may shorten; `<= 0` fires now.
pub async fn set_timeout<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    RequiredJson(body): RequiredJson<SetTimeout>,
) -> Result<StatusCode, ApiError> {
    if body.timeout > MAX_TIMEOUT_SECS {
        return Err(ApiError::bad_request(format!(
            "invalid timeout {}: at most {MAX_TIMEOUT_SECS} seconds",
            body.timeout
        )));
    }
    let timeout = Duration::from_secs(body.timeout.max(0).unsigned_abs());
    backend.set_timeout(&principal, &id, timeout).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/refreshes`: extend the end time by up to an hour (never shortens).
pub async fn refresh<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    JsonBody(body): JsonBody<Refresh>,
) -> Result<StatusCode, ApiError> {
    let secs = match body.duration {
        None | Some(0) => V1_DEFAULT_TIMEOUT_SECS,
        Some(d) if (1..=MAX_REFRESH_SECS).contains(&d) => d,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "invalid duration {d}: expected 0 to {MAX_REFRESH_SECS} seconds"
            )));
        }
    };
    backend
        .refresh(&principal, &id, Duration::from_secs(secs.unsigned_abs()))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/pause`: 204; 409 if already paused.
pub async fn pause<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    JsonBody(body): JsonBody<PauseRequest>,
) -> Result<StatusCode, ApiError> {
    backend
        .pause(&principal, &id, body.memory.unwrap_or(true))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/sandboxes/{id}/connect` (body optional, timeout default 300 s).
pub async fn connect_v2<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    JsonBody(body): JsonBody<ConnectRequest>,
) -> Result<Response, ApiError> {
    let options = connect_options(body.timeout.unwrap_or(V2_DEFAULT_TIMEOUT_SECS), body.memory)?;
    connect(&*backend, &principal, &id, options).await
}

/// `POST /sandboxes/{id}/connect` (SDK 2.6–2.50; timeout required).
pub async fn connect_v1<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    RequiredJson(body): RequiredJson<ConnectRequest>,
) -> Result<Response, ApiError> {
    let timeout = body
        .timeout
        .ok_or_else(|| ApiError::bad_request("timeout is required"))?;
    let options = connect_options(timeout, body.memory)?;
    connect(&*backend, &principal, &id, options).await
}

async fn connect<S: E2bBackend>(
    backend: &S,
    principal: &crate::backend::Principal,
    id: &str,
    options: ConnectOptions,
) -> Result<Response, ApiError> {
    let (info, outcome) = backend.connect(principal, id, options).await?;
    let status = match outcome {
        ConnectOutcome::AlreadyRunning => StatusCode::OK,
        ConnectOutcome::Resumed => StatusCode::CREATED,
    };
    Ok((status, Json(sandbox_response(backend, info))).into_response())
}

/// `POST /sandboxes/{id}/resume` (SDK ≤ 2.5): 201 when resumed, 409 when it was running.
pub async fn resume<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    JsonBody(body): JsonBody<ConnectRequest>,
) -> Result<Response, ApiError> {
    let options = connect_options(body.timeout.unwrap_or(V1_DEFAULT_TIMEOUT_SECS), body.memory)?;
    // Checked first so a 409 does not extend the running sandbox's end time as a side effect.
    if backend.get(&principal, &id).await?.state == SandboxState::Running {
        return Err(ApiError::conflict(format!(
            "sandbox {id} is already running"
        )));
    }
    let (info, _) = backend.connect(&principal, &id, options).await?;
    Ok((StatusCode::CREATED, Json(sandbox_response(&*backend, info))).into_response())
}

fn connect_options(timeout: i64, memory: Option<bool>) -> Result<ConnectOptions, ApiError> {
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout) {
        return Err(ApiError::bad_request(format!(
            "invalid timeout {timeout}: expected a number of seconds from 1 to {MAX_TIMEOUT_SECS}"
        )));
    }
    Ok(ConnectOptions {
        timeout: Duration::from_secs(timeout.unsigned_abs()),
        restore_memory: memory.unwrap_or(true),
    })
}

/// `GET /sandboxes/{id}/metrics?start=&end=` (unix seconds, both optional).
pub async fn metrics<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut start = None;
    let mut end = None;
    for (name, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "start" => start = Some(unix_seconds("start", &value)?),
            "end" => end = Some(unix_seconds("end", &value)?),
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(ApiError::bad_request("start must not be after end"));
    }
    let samples = backend.metrics(&principal, &id, start, end).await?;
    let body: Vec<Metric> = samples.into_iter().map(Metric::from).collect();
    Ok(Json(body).into_response())
}

fn unix_seconds(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(|| {
            ApiError::bad_request(format!("invalid {name} {value:?}: expected unix seconds"))
        })
}
