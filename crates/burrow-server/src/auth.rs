//! API key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use burrow_types::codes;

use crate::error::HttpError;
use crate::state::AppState;

/// Routes anyone may call.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json"];

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-api-key") {
        return value.to_str().ok().map(str::trim);
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let Some(key) = presented_key(request.headers()) else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' \
             (the first key is in <data_dir>/client.key)",
        ));
    };
    // Lookup is by sha256 of the presented key, so timing reveals nothing about stored keys.
    let Some(record) = state.store.find_api_key(key).await? else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "invalid API key",
        ));
    };
    let mut request = request;
    request.extensions_mut().insert(Caller(record.id));
    Ok(next.run(request).await)
}

/// The id (`key_…`) of the API key that authenticated a request; audit records name it.
#[derive(Debug, Clone)]
pub struct Caller(pub String);
