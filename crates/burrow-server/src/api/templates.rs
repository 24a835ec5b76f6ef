//! `/v1/templates`: list, delete, build.

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use burrow_core::Principal;
use burrow_templates::Template;
use burrow_types::{
    ApiError, TemplateBuildEvent, TemplateBuildRequest, TemplateInfo, TemplateList, TemplateUpload,
    codes,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::exec::{NDJSON, ndjson_line};
use crate::build;
use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;

pub fn to_info(t: Template) -> TemplateInfo {
    TemplateInfo {
        name: t.name,
        source: t.source,
        created_at: t.created_at,
        size_bytes: t.size_bytes,
        layers: t.layers.len(),
        env: t.env,
        workdir: t.workdir,
        user: t.user,
        workspace_id: None,
    }
}

/// List templates.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = TemplateList)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<TemplateList>, HttpError> {
    let templates = state.templates.clone();
    let list = tokio::task::spawn_blocking(move || templates.list())
        .await
        .map_err(|e| HttpError::internal(format!("template list task: {e}")))??;
    let owners: std::collections::HashMap<String, String> =
        state.store.template_owners().await?.into_iter().collect();
    // Server-wide templates (no owner) and the caller's own; the operator sees all.
    let visible = |t: &Template| owners.get(&t.name).is_none_or(|o| principal.sees(o));
    Ok(Json(TemplateList {
        templates: list
            .into_iter()
            .filter(visible)
            .map(|t| {
                let owner = owners.get(&t.name).cloned();
                let mut info = to_info(t);
                info.workspace_id = owner;
                info
            })
            .collect(),
    }))
}

/// Delete a template no sandbox uses.
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_request`", body = ApiError),
        (status = 404, description = "`template_not_found`", body = ApiError),
        (status = 409, description = "`template_in_use`", body = ApiError),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    // The wall (auth) already answered 404 for another workspace's template. A server-wide one
    // (`base`, the operator's builds) is every workspace's to use and only the operator's to
    // remove: 403 (it is visible to the caller, so nothing is leaked).
    if !principal.is_operator() && state.store.template_owner(&name).await?.is_none() {
        return Err(burrow_core::CoreError::OperatorOnly.into());
    }
    burrow_core::templates::remove_template(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Build or import a template; the response streams progress.
#[utoipa::path(post, path = "/v1/templates", tag = "templates",
    request_body = TemplateBuildRequest,
    responses(
        (status = 200, description = "NDJSON stream of `TemplateBuildEvent` lines: `progress`…, then `done` or `error`",
            content_type = "application/x-ndjson", body = TemplateBuildEvent),
        (status = 400, description = "`invalid_json`, `invalid_request` (also: a server path instead of an upload, an unsafe build context, a missing upload)", body = ApiError),
        (status = 404, description = "`template_not_found` (the parent)", body = ApiError),
        (status = 409, description = "`template_exists`", body = ApiError),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<TemplateBuildRequest>,
) -> Result<Response, HttpError> {
    let rx = start_build(&state, &principal, req).await?;
    let lines = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|event| Ok::<Bytes, std::convert::Infallible>(ndjson_line(&event)));
    let mut response = Response::new(Body::from_stream(lines));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// Checks a build request, claims its name for the caller's workspace and runs it in the
/// background: the native API and E2B's template API both build through here. Errors before
/// the build starts are returned; then the receiver gets progress…, then `done` or `error`.
pub async fn start_build(
    state: &AppState,
    principal: &Principal,
    req: TemplateBuildRequest,
) -> Result<mpsc::Receiver<TemplateBuildEvent>, HttpError> {
    let state = state.clone();
    if let burrow_types::TemplateSource::Template { parent, .. } = &req.from {
        burrow_core::templates::check_visible(&state, principal, parent).await?;
    }
    // A workspace key's template belongs to its workspace; the operator's are server-wide.
    let owner = principal.workspace_id().map(str::to_string);
    let name = req.name.clone();
    let prepared = build::prepare(&state, owner.as_deref(), req).await?;
    // The name is claimed for the owner before the build starts (so the template is never
    // visible to others, even for a moment) and released if the build fails.
    let claimed = match &owner {
        Some(owner) => {
            let templates = state.templates.clone();
            let exists_name = name.clone();
            let exists = tokio::task::spawn_blocking(move || templates.get(&exists_name).is_ok())
                .await
                .map_err(|e| HttpError::internal(format!("template lookup task: {e}")))?;
            if exists || !state.store.claim_template_name(&name, owner).await? {
                return Err(burrow_templates::TemplateError::AlreadyExists(name).into());
            }
            true
        }
        None => false,
    };
    let (tx, rx) = mpsc::channel::<TemplateBuildEvent>(64);
    tokio::spawn(async move {
        let progress = tx.clone();
        let outcome = build::run(&state, prepared, progress).await;
        if outcome.is_err()
            && claimed
            && let Err(e) = state.store.remove_template_owner(&name).await
        {
            tracing::warn!(template = name, "releasing the name of a failed build: {e}");
        }
        let last = match outcome {
            Ok(template) => TemplateBuildEvent::Done {
                template: to_info(template),
            },
            Err(e) => TemplateBuildEvent::Error {
                code: if e.body.code == codes::INTERNAL {
                    codes::BUILD_FAILED.to_string()
                } else {
                    e.body.code
                },
                message: e.body.message,
            },
        };
        let _ = tx.send(last).await;
    });
    Ok(rx)
}

/// Whether the server holds upload `sha256` (a client skips uploading what is present).
#[utoipa::path(get, path = "/v1/templates/uploads/{sha256}", tag = "templates",
    params(("sha256" = String, Path, description = "sha256 of the upload, 64 lowercase hex digits")),
    responses(
        (status = 200, body = TemplateUpload),
        (status = 400, description = "`invalid_request`: not a sha256", body = ApiError),
    ))]
pub async fn upload_status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sha256): Path<String>,
) -> Result<Json<TemplateUpload>, HttpError> {
    let size_bytes = state.uploads.size(principal.workspace_id(), &sha256)?;
    Ok(Json(TemplateUpload {
        sha256,
        present: size_bytes.is_some(),
        size_bytes,
    }))
}

/// `HEAD`: 200 if the server holds upload `sha256`, else 404 (no body).
pub async fn upload_head(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sha256): Path<String>,
) -> Result<StatusCode, HttpError> {
    Ok(
        match state.uploads.size(principal.workspace_id(), &sha256)? {
            Some(_) => StatusCode::OK,
            None => StatusCode::NOT_FOUND,
        },
    )
}

/// Upload a template build input: a tar (or tar.gz) of a build context (COPY sources), of a
/// root file system, or of an OCI image layout. Stored under its sha256, which the body must
/// hash to; builds name it (`context`, `upload`).
#[utoipa::path(put, path = "/v1/templates/uploads/{sha256}", tag = "templates",
    params(("sha256" = String, Path, description = "sha256 of the body, 64 lowercase hex digits")),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses(
        (status = 200, description = "Already present (the body is not read)", body = TemplateUpload),
        (status = 201, description = "Stored", body = TemplateUpload),
        (status = 400, description = "`invalid_request`: not a sha256, the body hashes to something else, or is not a tar / tar.gz", body = ApiError),
        (status = 413, description = "`payload_too_large`: over the server's build upload limit", body = ApiError),
    ))]
pub async fn upload_put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sha256): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<TemplateUpload>), HttpError> {
    let uploads = &state.uploads;
    let owner = principal.workspace_id();
    let target = uploads.path(owner, &sha256)?;
    if let Some(size) = uploads.size(owner, &sha256)? {
        uploads.touch(&target);
        return Ok((
            StatusCode::OK,
            Json(TemplateUpload {
                sha256,
                present: true,
                size_bytes: Some(size),
            }),
        ));
    }
    let limit = state.config.max_build_upload_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(crate::uploads::too_large(limit));
    }
    let body = request.into_body().into_data_stream();
    let total = uploads.store(owner, &sha256, body, limit).await?;
    Ok((
        StatusCode::CREATED,
        Json(TemplateUpload {
            sha256,
            present: true,
            size_bytes: Some(total),
        }),
    ))
}
