//! `/v1/sandboxes`: create, list, inspect, delete.

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use burrow_core::Principal;
use burrow_store::SandboxFilter;
use burrow_types::{ApiError, CreateSandboxRequest, Sandbox, SandboxList, SandboxState};

use super::{query_pairs, single_param};
use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use burrow_core::sandboxes;
use burrow_core::validate;

/// Create a sandbox from a template and wait until it runs.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateSandboxRequest,
    responses(
        (status = 201, description = "The sandbox is running", body = Sandbox),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ApiError),
        (status = 404, description = "`template_not_found`", body = ApiError),
        (status = 500, description = "`runtime_error`", body = ApiError),
        (status = 503, description = "`capacity_exhausted`", body = ApiError),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
    JsonBody(req): JsonBody<CreateSandboxRequest>,
) -> Result<(StatusCode, Json<Sandbox>), HttpError> {
    let pairs = query_pairs(query.as_deref());
    super::only_params(
        &pairs,
        &["workspace"],
        "use workspace=<name> (operator key only)",
    )?;
    let named = single_param(&pairs, "workspace")?;
    let workspace =
        burrow_core::workspaces::acting_in(&state, &principal, named.as_deref()).await?;
    let sandbox = sandboxes::create(&state, &principal, &workspace, req).await?;
    Ok((StatusCode::CREATED, Json(sandbox)))
}

/// List sandboxes, oldest first.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(
        ("label" = Option<Vec<String>>, Query, description = "`key=value`; repeat for several (all must match)"),
        ("state" = Option<SandboxState>, Query, description = "Only sandboxes in this state"),
    ),
    responses(
        (status = 200, body = SandboxList),
        (status = 400, description = "`invalid_request`", body = ApiError),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<SandboxList>, HttpError> {
    let pairs = query_pairs(query.as_deref());
    let mut filter = SandboxFilter {
        workspace_id: super::workspace_filter(&state, &principal, &pairs).await?,
        ..SandboxFilter::default()
    };
    for (key, value) in &pairs {
        match key.as_str() {
            "workspace" => {}
            "label" => {
                let Some((k, v)) = value.split_once('=') else {
                    return Err(HttpError::bad_request(format!(
                        "label filter '{value}' must be key=value"
                    )));
                };
                validate::label_pair(k, v)?;
                filter.labels.push((k.to_string(), v.to_string()));
            }
            "state" => {}
            other => {
                return Err(HttpError::bad_request(format!(
                    "unknown query parameter '{other}'; use label=key=value, state=<state> or \
                     workspace=<name>"
                )));
            }
        }
    }
    if let Some(text) = single_param(&pairs, "state")? {
        filter.state = Some(SandboxState::parse(&text).ok_or_else(|| {
            HttpError::bad_request(format!(
                "unknown state '{text}'; use creating, running, standby, stopped or error"
            ))
        })?);
    }
    let wanted_state = filter.state;
    // Sleeping sandboxes are `running` in the store; their power state tells them apart.
    if filter.state == Some(SandboxState::Standby) {
        filter.state = Some(SandboxState::Running);
    }
    let mut sandboxes = Vec::new();
    // One query for every policy rather than one per sandbox: lists of thousands stay fast.
    let mut policies: std::collections::HashMap<String, burrow_store::SandboxPolicy> =
        state.store.sandbox_policies().await?.into_iter().collect();
    for record in state.store.list_sandboxes(filter).await? {
        let record = sandboxes::observe(&state, record).await?;
        let policy = policies.remove(&record.id).unwrap_or_default();
        let mut sandbox = sandboxes::describe(&state, record);
        sandboxes::with_policy(&mut sandbox, policy);
        // A sandbox found dead just now no longer matches `state=running`.
        if wanted_state.is_none_or(|s| s == sandbox.state) {
            sandboxes.push(sandbox);
        }
    }
    Ok(Json(SandboxList { sandboxes }))
}

/// One sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, body = Sandbox),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Sandbox>, HttpError> {
    Ok(Json(
        sandboxes::describe_full(&state, sandboxes::get(&state, &id).await?).await?,
    ))
}

/// Kill every process of the sandbox and delete it with its files.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 500, description = "`runtime_error`", body = ApiError),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(principal): Extension<Principal>,
) -> Result<StatusCode, HttpError> {
    sandboxes::delete_because(
        &state,
        &id,
        burrow_core::retention::reasons::API,
        &principal.key_id,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
