//! HTTP handlers of the native API, one module per resource.

pub mod exec;
pub mod files;
pub mod health;
pub mod keys;
pub mod pty;
pub mod retention;
pub mod sandboxes;
pub mod standby;
pub mod templates;
pub mod tunnel;
pub mod workspaces;

use axum::http::StatusCode;
use burrow_types::codes;

use crate::error::HttpError;

/// JSON 404 for unknown routes.
pub async fn route_not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        "no such endpoint; the API is described at GET /openapi.json",
    )
}

/// JSON 405 for known routes called with the wrong method.
pub async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "this endpoint does not support this HTTP method; see GET /openapi.json",
    )
}

/// Decoded `key=value` pairs of a query string (repeated keys kept, in order).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// 400 naming the first query parameter not in `allowed`, with `hint` (what to use instead).
pub fn only_params(
    pairs: &[(String, String)],
    allowed: &[&str],
    hint: &str,
) -> Result<(), HttpError> {
    match pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((other, _)) => Err(HttpError::bad_request(format!(
            "unknown query parameter '{other}'; {hint}"
        ))),
        None => Ok(()),
    }
}

/// The workspace filter named by `?workspace=` (see [`burrow_core::workspaces::list_filter`]).
pub async fn workspace_filter(
    state: &crate::state::AppState,
    principal: &burrow_core::Principal,
    pairs: &[(String, String)],
) -> Result<Option<String>, HttpError> {
    let named = single_param(pairs, "workspace")?;
    Ok(burrow_core::workspaces::list_filter(state, principal, named.as_deref()).await?)
}

/// The single value of query parameter `name`; 400 if given more than once.
pub fn single_param(pairs: &[(String, String)], name: &str) -> Result<Option<String>, HttpError> {
    let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = values.next().cloned();
    if values.next().is_some() {
        return Err(HttpError::bad_request(format!(
            "query parameter '{name}' was given more than once"
        )));
    }
    Ok(first)
}
