//! `/v1/sandboxes`: create, list, inspect, delete.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use burrow_core::Principal;
use burrow_store::{SandboxFilter, SandboxPolicy, SandboxRecord};
use burrow_types::{ApiError, CreateSandboxRequest, Sandbox, SandboxList, SandboxState};
use futures::StreamExt;

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
) -> Result<Response, HttpError> {
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
    // One query for every policy rather than one per sandbox: lists of thousands stay fast.
    let policies = state.store.sandbox_policies().await?.into_iter().collect();
    let traffic_tokens = state.store.traffic_tokens().await?.into_iter().collect();
    let mut batches = state.store.list_sandboxes_batched(filter, LIST_BATCH);
    let mut list = ListEncoder {
        state,
        policies,
        traffic_tokens,
        wanted_state,
        written: 0,
    };
    // The first batch is read and encoded before the response starts, so an error in it (the
    // query failing, say) is still a proper error response.
    let first = batches.next().await.transpose()?.unwrap_or_default();
    let last = first.len() < LIST_BATCH;
    let mut head = b"{\"sandboxes\":[".to_vec();
    list.encode(first, &mut head).await?;
    if last {
        // Only the final batch is short: the whole list is here (unless the query failed after
        // it, which `next` reports). A small list goes out in one piece, with its length.
        if let Some(Err(e)) = batches.next().await {
            return Err(e.into());
        }
        head.extend_from_slice(b"]}");
        return Ok(([(header::CONTENT_TYPE, "application/json")], head).into_response());
    }
    // The rest is encoded batch by batch while the store reads the next rows on its own thread
    // (both cores busy, and neither all the records nor all the JSON in memory at once). The
    // bytes are the same as `Json(SandboxList { .. })`'s. An error from here on can only cut
    // the response: hyper closes the connection without the final chunk, so a client sees a
    // truncated body (an incomplete-transfer error), never a shorter list that parses.
    let head = futures::stream::once(std::future::ready(Ok(Bytes::from(head))));
    let rest = futures::stream::unfold(Some((list, batches)), |step| async move {
        let (mut list, mut batches) = step?;
        match batches.next().await {
            Some(Ok(batch)) => {
                let mut chunk = Vec::new();
                match list.encode(batch, &mut chunk).await {
                    Ok(()) => Some((Ok(Bytes::from(chunk)), Some((list, batches)))),
                    Err(e) => Some((Err(list_cut(e.to_string())), None)),
                }
            }
            Some(Err(e)) => Some((Err(list_cut(e.to_string())), None)),
            None => Some((Ok(Bytes::from_static(b"]}")), None)),
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(head.chain(rest)),
    )
        .into_response())
}

/// Sandboxes per batch of a streamed list: large enough that the per-batch overhead (a channel
/// message, a body chunk) is small, small enough that the store and the encoder overlap.
const LIST_BATCH: usize = 256;

/// Turns the store's records into the list's JSON elements.
struct ListEncoder {
    state: AppState,
    policies: HashMap<String, SandboxPolicy>,
    /// Private sandboxes' traffic tokens, shown as `get` shows them.
    traffic_tokens: HashMap<String, String>,
    wanted_state: Option<SandboxState>,
    /// Elements written so far (all but the first follow a comma).
    written: usize,
}

impl ListEncoder {
    /// Appends the sandboxes of `records` that still match to `out`, each as in [`Sandbox`]'s
    /// JSON, after a comma unless it is the list's first.
    async fn encode(
        &mut self,
        records: Vec<SandboxRecord>,
        out: &mut Vec<u8>,
    ) -> Result<(), HttpError> {
        // About 230 bytes per sandbox with few labels; more only costs a reallocation.
        out.reserve(records.len() * 256);
        for record in records {
            let record = sandboxes::observe(&self.state, record).await?;
            let policy = self.policies.remove(&record.id).unwrap_or_default();
            let traffic_token = self.traffic_tokens.remove(&record.id);
            let mut sandbox = sandboxes::describe(&self.state, record);
            sandboxes::with_policy(&mut sandbox, policy);
            sandbox.traffic_access_token = traffic_token;
            // A sandbox found dead just now no longer matches `state=running`.
            if self.wanted_state.is_some_and(|s| s != sandbox.state) {
                continue;
            }
            if self.written > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, &sandbox).map_err(|e| {
                HttpError::internal(format!("encoding sandbox {}: {e}", sandbox.id))
            })?;
            self.written += 1;
        }
        Ok(())
    }
}

/// The error that ends a list already under way (the connection is cut; see [`list`]).
fn list_cut(reason: String) -> std::io::Error {
    tracing::warn!("GET /v1/sandboxes cut short: {reason}");
    std::io::Error::other(reason)
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
