//! Create, inspect, list and kill.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{detail_response, sandbox_response};
use crate::backend::E2bBackend;
use crate::create_request::{CreateVersion, to_create_sandbox};
use crate::error::ApiError;
use crate::extract::{Caller, RequiredJson, SandboxId};
use crate::list_query::{ListVersion, parse_list_query};
use crate::wire::NewSandbox;

const NEXT_TOKEN_HEADER: HeaderName = HeaderName::from_static("x-next-token");

/// `POST /sandboxes` (SDK ≤ 2.50).
pub async fn create_v1<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RequiredJson(body): RequiredJson<NewSandbox>,
) -> Result<Response, ApiError> {
    create(&*backend, &principal, &headers, body, CreateVersion::V1).await
}

/// `POST /v2/sandboxes` (SDK ≥ 2.51).
pub async fn create_v2<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RequiredJson(body): RequiredJson<NewSandbox>,
) -> Result<Response, ApiError> {
    create(&*backend, &principal, &headers, body, CreateVersion::V2).await
}

async fn create<S: E2bBackend>(
    backend: &S,
    principal: &crate::backend::Principal,
    headers: &HeaderMap,
    body: NewSandbox,
    version: CreateVersion,
) -> Result<Response, ApiError> {
    let request = to_create_sandbox(body, headers, version)?;
    let info = backend.create(principal, request).await?;
    Ok((StatusCode::CREATED, Json(sandbox_response(backend, info))).into_response())
}

/// `GET /sandboxes/{id}`: running or paused.
pub async fn get<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
) -> Result<Response, ApiError> {
    let info = backend.get(&principal, &id).await?;
    Ok(Json(detail_response(&*backend, info)).into_response())
}

/// `GET /sandboxes`: running only (deprecated E2B endpoint).
pub async fn list_v1<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    list(&*backend, &principal, query.as_deref(), ListVersion::V1).await
}

/// `GET /v2/sandboxes`: filters, state selection and `x-next-token` pagination.
pub async fn list_v2<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    list(&*backend, &principal, query.as_deref(), ListVersion::V2).await
}

async fn list<S: E2bBackend>(
    backend: &S,
    principal: &crate::backend::Principal,
    query: Option<&str>,
    version: ListVersion,
) -> Result<Response, ApiError> {
    let mut filter = parse_list_query(query, version)?;
    let mut page = backend.list(principal, filter.clone()).await?;
    // v1 has no pagination: it returns every match, so follow the backend's cursor to the end.
    while version == ListVersion::V1
        && let Some(cursor) = page.next_cursor.take()
    {
        filter.cursor = Some(cursor);
        let next = backend.list(principal, filter.clone()).await?;
        page.sandboxes.extend(next.sandboxes);
        page.next_cursor = next.next_cursor;
    }
    let items: Vec<_> = page
        .sandboxes
        .into_iter()
        .map(|info| {
            let mut detail = detail_response(backend, info);
            // Listings never carry secrets; get_info/connect hand out the envd token.
            detail.envd_access_token = None;
            detail
        })
        .collect();
    let mut response = Json(items).into_response();
    if version == ListVersion::V2
        && let Some(cursor) = page.next_cursor
    {
        let value = HeaderValue::from_str(&cursor).map_err(|_| {
            ApiError::from(crate::backend::BackendError::Internal(
                "backend returned a pagination cursor that is not a valid header value".into(),
            ))
        })?;
        response.headers_mut().insert(NEXT_TOKEN_HEADER, value);
    }
    Ok(response)
}

/// `DELETE /sandboxes/{id}`: 204, or 404 (the SDK then returns `false`).
pub async fn kill<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    SandboxId(id): SandboxId,
) -> Result<StatusCode, ApiError> {
    backend.kill(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
