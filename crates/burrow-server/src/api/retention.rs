//! Expiry policies, tombstones, usage and Prometheus metrics.

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use burrow_core::Principal;
use burrow_types::{ApiError, Expiration, Sandbox, SandboxUsage, TombstoneList, UsageReport};
use serde::Serialize;

use super::{only_params, query_pairs, single_param, workspace_filter};
use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use burrow_core::sandboxes;

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
        sandboxes::set_expiration(&state, &id, expiration).await?,
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
    sandboxes::get(&state, &id).await?;
    let usage = state.store.usage(&id).await?;
    Ok(Json(SandboxUsage { id, usage }))
}

/// Usage of every live sandbox and the total over all sandboxes ever metered, of the caller's
/// workspace (the operator: all, or `?workspace=`). With `since`/`until` (RFC 3339), usage per
/// sandbox (deleted ones included) in whole hours from `since` to before `until`, from the
/// hourly records; `format=jsonl` or `format=csv` exports those rows for billing.
#[utoipa::path(get, path = "/v1/usage", tag = "retention",
    responses((status = 200, body = UsageReport)))]
pub async fn usage_report(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let pairs = query_pairs(query.as_deref());
    only_params(
        &pairs,
        &["workspace", "since", "until", "format"],
        "use workspace, since, until, format",
    )?;
    let filter = workspace_filter(&state, &principal, &pairs).await?;
    let since = time_param(&pairs, "since")?;
    let until = time_param(&pairs, "until")?;
    let format = single_param(&pairs, "format")?.unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "jsonl" | "csv") {
        return Err(HttpError::bad_request(format!(
            "format '{format}' is not json, jsonl or csv"
        )));
    }
    if since.is_none() && until.is_none() && format == "json" {
        let mut sandboxes = Vec::new();
        let list = burrow_store::SandboxFilter {
            workspace_id: filter.clone(),
            ..Default::default()
        };
        for record in state.store.list_sandboxes(list).await? {
            let usage = state.store.usage(&record.id).await?;
            sandboxes.push(SandboxUsage {
                id: record.id,
                usage,
            });
        }
        let total = state.store.usage_total(filter.as_deref()).await?;
        return Ok(Json(UsageReport { total, sandboxes }).into_response());
    }
    let rows = state
        .store
        .usage_between(filter.as_deref(), since.as_deref(), until.as_deref())
        .await?;
    let names: std::collections::HashMap<String, String> = state
        .store
        .list_workspaces()
        .await?
        .into_iter()
        .map(|w| (w.id, w.name))
        .collect();
    let rows: Vec<UsageRow> = rows
        .into_iter()
        .map(|(ws, id, usage)| UsageRow {
            workspace: names.get(&ws).cloned().unwrap_or_else(|| ws.clone()),
            workspace_id: ws,
            sandbox_id: id,
            since: since.clone(),
            until: until.clone(),
            usage,
        })
        .collect();
    Ok(match format.as_str() {
        "jsonl" => {
            let mut text = String::new();
            for row in &rows {
                text.push_str(&serde_json::to_string(row).expect("rows serialise"));
                text.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response()
        }
        "csv" => {
            let mut text = String::from(
                "workspace,workspace_id,sandbox_id,active_gb_seconds,cpu_seconds,\
                 standby_storage_gb_seconds,running_seconds,standby_seconds\n",
            );
            for r in &rows {
                // Names and ids are [a-z0-9_-]: nothing to quote.
                text.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\n",
                    r.workspace,
                    r.workspace_id,
                    r.sandbox_id,
                    r.usage.active_gb_seconds,
                    r.usage.cpu_seconds,
                    r.usage.standby_storage_gb_seconds,
                    r.usage.running_seconds,
                    r.usage.standby_seconds
                ));
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
        }
        _ => {
            let mut total = burrow_types::Usage::default();
            for r in &rows {
                total.active_gb_seconds += r.usage.active_gb_seconds;
                total.cpu_seconds += r.usage.cpu_seconds;
                total.standby_storage_gb_seconds += r.usage.standby_storage_gb_seconds;
                total.running_seconds += r.usage.running_seconds;
                total.standby_seconds += r.usage.standby_seconds;
            }
            Json(serde_json::json!({"since": since, "until": until, "total": total, "rows": rows}))
                .into_response()
        }
    })
}

/// One sandbox's usage over a time range.
#[derive(Debug, Serialize)]
struct UsageRow {
    workspace: String,
    workspace_id: String,
    sandbox_id: String,
    since: Option<String>,
    until: Option<String>,
    #[serde(flatten)]
    usage: burrow_types::Usage,
}

/// An RFC 3339 query parameter, normalised to the stored format (UTC, milliseconds, `Z`).
fn time_param(pairs: &[(String, String)], name: &str) -> Result<Option<String>, HttpError> {
    match single_param(pairs, name)? {
        Some(text) => {
            let at = burrow_core::retention::parse_time(&text).ok_or_else(|| {
                HttpError::bad_request(format!(
                    "{name} '{text}' is not an RFC 3339 time (e.g. 2026-01-31T00:00:00Z)"
                ))
            })?;
            Ok(Some(
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ))
        }
        None => Ok(None),
    }
}

/// Projects the monthly cost of `sandboxes` sandboxes awake `active_ratio` of the time, from
/// this server's measured figures (of the caller's workspace when it has usage, else of the
/// whole server) and the price list; every input is in the answer.
pub async fn projection(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, HttpError> {
    let pairs = query_pairs(query.as_deref());
    only_params(
        &pairs,
        &["workspace", "sandboxes", "active_ratio"],
        "use sandboxes, active_ratio, workspace",
    )?;
    let filter = workspace_filter(&state, &principal, &pairs).await?;
    let sandboxes: u64 = match single_param(&pairs, "sandboxes")? {
        Some(t) => t
            .parse()
            .ok()
            .filter(|n| *n <= 100_000_000)
            .ok_or_else(|| {
                HttpError::bad_request(format!("sandboxes '{t}' is not a count (0-100000000)"))
            })?,
        None => 1000,
    };
    let measured = burrow_core::retention::measured_figures(&state, filter.as_deref()).await?;
    let active_ratio: f64 = match single_param(&pairs, "active_ratio")? {
        Some(t) => t.parse().map_err(|_| {
            HttpError::bad_request(format!(
                "active_ratio '{t}' is not a number between 0 and 1"
            ))
        })?,
        None => measured.active_ratio.unwrap_or(0.05),
    };
    let projection = burrow_core::cost::project(
        sandboxes,
        active_ratio,
        measured.per_sandbox.clone(),
        (*state.prices).clone(),
    )?;
    Ok(Json(serde_json::json!({
        "projection": projection,
        "measured": measured,
    })))
}

/// "Was every sandbox of this workspace older than the window deleted, and what was erased?"
pub async fn retention_report(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<burrow_core::retention::RetentionReport>, HttpError> {
    let pairs = query_pairs(query.as_deref());
    only_params(
        &pairs,
        &["workspace", "window"],
        "use workspace=<name> and window=<duration, e.g. 30d>",
    )?;
    let filter = workspace_filter(&state, &principal, &pairs).await?;
    let window = match single_param(&pairs, "window")? {
        Some(t) => humantime::parse_duration(&t).map_err(|e| {
            HttpError::bad_request(format!(
                "window '{t}' is not a duration like 30d or 12h: {e}"
            ))
        })?,
        None => std::time::Duration::from_secs(30 * 86400),
    };
    Ok(Json(
        burrow_core::retention::report(&state, filter.as_deref(), window).await?,
    ))
}

/// The audit log, most recent first: the caller's workspace (the operator: all, or
/// `?workspace=`), optionally since a time, at most `limit` entries (default 1000).
pub async fn audit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, HttpError> {
    let pairs = query_pairs(query.as_deref());
    only_params(
        &pairs,
        &["workspace", "since", "limit"],
        "use workspace, since, limit",
    )?;
    let filter = workspace_filter(&state, &principal, &pairs).await?;
    let limit = match single_param(&pairs, "limit")? {
        Some(t) => t
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| {
                HttpError::bad_request(format!("limit '{t}' is not a number in 1-100000"))
            })?,
        None => 1000,
    };
    // Calls of the last second are still in memory.
    state.audit.flush(&state.store).await?;
    let entries = state
        .store
        .audit(burrow_store::AuditQuery {
            workspace_id: filter,
            since: time_param(&pairs, "since")?,
            limit,
        })
        .await?;
    let entries: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "seq": e.seq, "at": e.at, "key_id": e.key_id, "workspace_id": e.workspace_id,
                "action": e.action, "object": e.object, "status": e.status, "source": e.source,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries })))
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
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<TombstoneList>, HttpError> {
    let pairs = query_pairs(query.as_deref());
    only_params(
        &pairs,
        &["since", "workspace"],
        "use since=<RFC 3339 time> or workspace=<name>",
    )?;
    let filter = workspace_filter(&state, &principal, &pairs).await?;
    let since = time_param(&pairs, "since")?;
    let tombstones = state
        .store
        .tombstones(filter.as_deref(), since.as_deref())
        .await?;
    Ok(Json(TombstoneList { tombstones }))
}

/// Prometheus metrics (text format 0.0.4). Requires an API key like the rest of the API.
pub async fn metrics(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, HttpError> {
    let text = burrow_core::metering::render(&state, principal.workspace_id()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
