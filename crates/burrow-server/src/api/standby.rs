//! `/v1/sandboxes/{id}/standby`, `/resume` and `/leases`: explicit sleep and wake, and leases
//! that keep a sandbox awake.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use burrow_types::{ApiError, CreateLeaseRequest, Lease, Sandbox, StandbyRequest, codes};

use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use burrow_core::power::{self, is_valid_lease_id};
use burrow_core::sandboxes;

/// Longest lease (one day): a forgotten lease must not keep a sandbox awake forever.
const MAX_LEASE_SECS: u64 = 86_400;
const MAX_REASON_CHARS: usize = 200;

/// Put the sandbox to standby now: warm (frozen, memory in zram) or, with `{"deep": true}`,
/// deep (CRIU checkpoint to disk, no process left; from awake or warm). A no-op if it already
/// sleeps in that tier.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/standby", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Option<StandbyRequest>, description = "Optional; `{\"deep\":true}` asks for a CRIU checkpoint"),
    responses(
        (status = 200, description = "The sandbox sleeps", body = Sandbox),
        (status = 400, description = "`invalid_json`", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`sandbox_not_running`", body = ApiError),
        (status = 500, description = "`standby_failed`", body = ApiError),
        (status = 501, description = "`standby_failed`: deep standby is not available (runtime or sandbox under `BURROW_NETNS_MODE=host`)", body = ApiError),
    ))]
pub async fn standby(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Sandbox>, HttpError> {
    let req: StandbyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StandbyRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                codes::INVALID_JSON,
                format!("invalid standby request: {e}; send {{}} or {{\"deep\": true}}"),
            )
        })?
    };
    sandboxes::standby(&state, &id, req.deep).await?;
    Ok(Json(sandboxes::describe(
        &state,
        sandboxes::get(&state, &id).await?,
    )))
}

/// Wake the sandbox (thaw, or CRIU restore from deep standby; a no-op if it is awake); counts
/// as activity.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox is awake", body = Sandbox),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`sandbox_not_running`", body = ApiError),
        (status = 500, description = "`standby_failed`", body = ApiError),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, HttpError> {
    sandboxes::resume(&state, &id).await?;
    Ok(Json(sandboxes::describe(
        &state,
        sandboxes::get(&state, &id).await?,
    )))
}

/// Keep the sandbox awake for `ttl_seconds` (or until the lease is deleted). Wakes it if it sleeps.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/leases", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = CreateLeaseRequest,
    responses(
        (status = 201, description = "The lease", body = Lease),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`sandbox_not_running`", body = ApiError),
    ))]
pub async fn create_lease(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CreateLeaseRequest>,
) -> Result<(StatusCode, Json<Lease>), HttpError> {
    if !(1..=MAX_LEASE_SECS).contains(&req.ttl_seconds) {
        return Err(HttpError::bad_request(format!(
            "ttl_seconds must be 1..={MAX_LEASE_SECS}, got {}",
            req.ttl_seconds
        )));
    }
    if req.reason.chars().count() > MAX_REASON_CHARS || req.reason.chars().any(char::is_control) {
        return Err(HttpError::bad_request(format!(
            "reason must be at most {MAX_REASON_CHARS} characters without control characters"
        )));
    }
    let sandbox = sandboxes::running_as(&state, &id, "lease").await?;
    let power = sandbox
        .activity
        .power()
        .ok_or_else(|| HttpError::internal("sandbox has no power state"))?;
    let ttl = std::time::Duration::from_secs(req.ttl_seconds);
    let lease_id = power.add_lease(ttl, req.reason.clone());
    Ok((
        StatusCode::CREATED,
        Json(Lease {
            id: lease_id,
            reason: req.reason,
            expires_at: Some(power::rfc3339(std::time::SystemTime::now() + ttl)),
        }),
    ))
}

/// Release a lease.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/leases/{lease}", tag = "sandboxes",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("lease" = String, Path, description = "Lease id"),
    ),
    responses(
        (status = 204, description = "Released"),
        (status = 404, description = "`sandbox_not_found`, `lease_not_found`", body = ApiError),
    ))]
pub async fn delete_lease(
    State(state): State<AppState>,
    Path((id, lease)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    sandboxes::get(&state, &id).await?;
    let released = is_valid_lease_id(&lease)
        && state
            .power
            .get(&id)
            .is_some_and(|power| power.remove_lease(&lease));
    if released {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::new(
            StatusCode::NOT_FOUND,
            codes::LEASE_NOT_FOUND,
            format!(
                "sandbox {id} has no lease '{}' (it may have expired)",
                lease.escape_debug()
            ),
        ))
    }
}

/// Restart from files: a sandbox in `error` (its processes are gone and no checkpoint can bring
/// them back, e.g. after a host crash) starts again with the same id, access token, files,
/// limits, env, labels and policy, and fresh processes (the template's start command runs as
/// at create). E2B's filesystem-only resume.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/restart", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox runs again over its files", body = Sandbox),
        (status = 400, description = "`invalid_request`: the runtime cannot restart it (e.g. its files are missing)", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`restart_refused`: it is being created, or it runs or sleeps (only a sandbox in `error` restarts), or its template is gone", body = ApiError),
        (status = 502, description = "`start_failed`: the template's start command failed (the sandbox is `error` again, files kept)", body = ApiError),
    ))]
pub async fn restart(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, HttpError> {
    Ok(Json(sandboxes::restart(&state, &id).await?))
}
