//! `/v1/templates`: list, delete, build.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use burrow_templates::Template;
use burrow_types::{
    ApiError, TemplateBuildEvent, TemplateBuildRequest, TemplateInfo, TemplateList, codes,
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::exec::{NDJSON, ndjson_line};
use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::{build, validate};

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
    }
}

/// List templates.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = TemplateList)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<TemplateList>, HttpError> {
    let templates = state.templates.clone();
    let list = tokio::task::spawn_blocking(move || templates.list())
        .await
        .map_err(|e| HttpError::internal(format!("template list task: {e}")))??;
    Ok(Json(TemplateList {
        templates: list.into_iter().map(to_info).collect(),
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
    Path(name): Path<String>,
) -> Result<StatusCode, HttpError> {
    validate::template_name(&name)?;
    let users = state.store.count_sandboxes_using(&name).await?;
    let templates = state.templates.clone();
    tokio::task::spawn_blocking(move || templates.remove(&name, users > 0))
        .await
        .map_err(|e| HttpError::internal(format!("template remove task: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Build or import a template; the response streams progress.
#[utoipa::path(post, path = "/v1/templates", tag = "templates",
    request_body = TemplateBuildRequest,
    responses(
        (status = 200, description = "NDJSON stream of `TemplateBuildEvent` lines: `progress`…, then `done` or `error`",
            content_type = "application/x-ndjson", body = TemplateBuildEvent),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ApiError),
        (status = 404, description = "`template_not_found` (the parent)", body = ApiError),
        (status = 409, description = "`template_exists`", body = ApiError),
    ))]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<TemplateBuildRequest>,
) -> Result<Response, HttpError> {
    build::check_request(&state, &req).await?;
    let (tx, rx) = mpsc::channel::<TemplateBuildEvent>(64);
    tokio::spawn(async move {
        let progress = tx.clone();
        let outcome = build::run(&state, req, progress).await;
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
    let lines = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|event| Ok::<Bytes, std::convert::Infallible>(ndjson_line(&event)));
    let mut response = Response::new(Body::from_stream(lines));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}
