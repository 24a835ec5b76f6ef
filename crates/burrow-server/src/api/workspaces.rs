//! `/v1/workspaces`: the operator creates, changes and removes workspaces; every key may read
//! its own.

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use burrow_core::Principal;

use super::{query_pairs, single_param};
use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use burrow_core::workspaces::{self, CreateWorkspace, UpdateWorkspace, WorkspaceInfo};

pub async fn create(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), HttpError> {
    Ok((
        StatusCode::CREATED,
        Json(workspaces::create(&state, req).await?),
    ))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, HttpError> {
    // As every other list: a filter this list does not have is an error, not ignored.
    super::only_params(
        &query_pairs(query.as_deref()),
        &[],
        "this list takes none (GET /v1/workspaces/{name} shows one workspace)",
    )?;
    let list = workspaces::list(&state, &principal).await?;
    Ok(Json(serde_json::json!({
        "workspaces": list,
        "tiers": state.tiers.all(),
    })))
}

pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<WorkspaceInfo>, HttpError> {
    Ok(Json(workspaces::get(&state, &principal, &name).await?))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<UpdateWorkspace>,
) -> Result<Json<WorkspaceInfo>, HttpError> {
    Ok(Json(
        workspaces::update(&state, &principal, &name, req).await?,
    ))
}

/// `?force=true` deletes what it owns first (sandboxes with erasure records).
pub async fn remove(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, HttpError> {
    let pairs = query_pairs(query.as_deref());
    super::only_params(&pairs, &["force"], "use force=true")?;
    let force = match single_param(&pairs, "force")?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "force '{other}' is not true or false"
            )));
        }
    };
    workspaces::remove(&state, &principal, &name, force).await?;
    Ok(StatusCode::NO_CONTENT)
}
