//! Expiry policies, tombstones, usage and Prometheus metrics.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use burrow_types::{ApiError, Expiration, Sandbox, SandboxUsage, TombstoneList, UsageReport};

use super::{query_pairs, single_param};
use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::service;
use crate::state::AppState;

/// Replace a sandbox's expiry policy (an empty object removes it).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/expiration", tag = "retention",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = Expiration,
    responses(
        (status = 200, description = "The sandbox with its new policy", body = Sandbox),
        (status = 400, description = "`invalid_request`", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
    ))]
pub async fn set_expiration(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(expiration): JsonBody<Expiration>,
) -> Result<Json<Sandbox>, HttpError> {
    Ok(Json(
        service::set_expiration(&state, &id, expiration).await?,
    ))
}

/// A sandbox's metered usage so far.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/usage", tag = "retention",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, body = SandboxUsage),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
    ))]
pub async fn sandbox_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<SandboxUsage>, HttpError> {
    service::get(&state, &id).await?;
    let usage = state.store.usage(&id).await?;
    Ok(Json(SandboxUsage { id, usage }))
}

/// Usage of every live sandbox and the total over all sandboxes ever metered.
#[utoipa::path(get, path = "/v1/usage", tag = "retention",
    responses((status = 200, body = UsageReport)))]
pub async fn usage_report(State(state): State<AppState>) -> Result<Json<UsageReport>, HttpError> {
    let mut sandboxes = Vec::new();
    for id in state.store.sandbox_ids().await? {
        let usage = state.store.usage(&id).await?;
        sandboxes.push(SandboxUsage { id, usage });
    }
    let total = state.store.usage_total().await?;
    Ok(Json(UsageReport { total, sandboxes }))
}

/// Tombstones of deleted sandboxes (what was erased, when, why), oldest first.
#[utoipa::path(get, path = "/v1/tombstones", tag = "retention",
    params(("since" = Option<String>, Query, description = "RFC 3339: only deletions at or after it")),
    responses(
        (status = 200, body = TombstoneList),
        (status = 400, description = "`invalid_request`", body = ApiError),
    ))]
pub async fn tombstones(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<TombstoneList>, HttpError> {
    let pairs = query_pairs(query.as_deref());
    if let Some((other, _)) = pairs.iter().find(|(k, _)| k != "since") {
        return Err(HttpError::bad_request(format!(
            "unknown query parameter '{other}'; use since=<RFC 3339 time>"
        )));
    }
    let since = match single_param(&pairs, "since")? {
        Some(text) => {
            let at = crate::retention::parse_time(&text).ok_or_else(|| {
                HttpError::bad_request(format!(
                    "since '{text}' is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z)"
                ))
            })?;
            // Stored times are UTC with milliseconds and a `Z`: compare in the same format.
            Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
        None => None,
    };
    let tombstones = state.store.tombstones(since.as_deref()).await?;
    Ok(Json(TombstoneList { tombstones }))
}

/// Prometheus metrics (text format 0.0.4). Requires an API key like the rest of the API.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, HttpError> {
    let text = crate::metering::render(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
