//! Request extractors that turn bad input into E2B-shaped 400/401 errors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::backend::{E2bBackend, Principal};
use crate::error::ApiError;

const API_KEY_HEADER: &str = "x-api-key";
const MAX_API_KEY_LEN: usize = 512;

/// The caller, authenticated by the `X-API-KEY` header.
#[derive(Debug)]
pub struct Caller(pub Principal);

impl<S: E2bBackend> FromRequestParts<Arc<S>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, backend: &Arc<S>) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(API_KEY_HEADER) else {
            return Err(ApiError::unauthorized("missing X-API-KEY header"));
        };
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= MAX_API_KEY_LEN)
            .ok_or_else(|| ApiError::unauthorized("malformed X-API-KEY header"))?;
        let principal = backend.authenticate(key).await?;
        if principal.read_only
            && parts.method != axum::http::Method::GET
            && parts.method != axum::http::Method::HEAD
        {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "this API key is read-only (role viewer): it cannot create, change or kill \
                 sandboxes",
            ));
        }
        Ok(Caller(principal))
    }
}

/// A sandbox id from the path: `^[a-z0-9]+$`, at most 63 characters (it is a DNS label part).
/// The legacy `{id}-{clientID}` form is accepted and the suffix dropped.
#[derive(Debug)]
pub struct SandboxId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SandboxId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid path: {e}")))?;
        parse_sandbox_id(&raw).map(SandboxId)
    }
}

/// See [`SandboxId`].
pub fn parse_sandbox_id(raw: &str) -> Result<String, ApiError> {
    let id = raw.split_once('-').map_or(raw, |(id, _client_id)| id);
    let valid = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(id.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid sandbox id {raw:?}: expected lowercase letters and digits"
        )))
    }
}

/// A JSON body parsed without trusting the content type; an empty body reads as `{}` when `T`
/// has a default (E2B clients send no body to some endpoints).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(T::default()));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`] but the body is required.
#[derive(Debug)]
pub struct RequiredJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for RequiredJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "request body is required (JSON object)",
            ));
        }
        parse_json(&bytes).map(RequiredJson)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e| ApiError::new(e.status(), format!("cannot read request body: {e}")))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_are_lowercase_alphanumeric_with_optional_legacy_suffix() {
        assert_eq!(parse_sandbox_id("iabc123").unwrap(), "iabc123");
        assert_eq!(parse_sandbox_id("iabc123-6532622b").unwrap(), "iabc123");
        assert!(parse_sandbox_id("").is_err());
        assert!(parse_sandbox_id("-abc").is_err());
        assert!(parse_sandbox_id("iABC").is_err());
        assert!(parse_sandbox_id("..").is_err());
        assert!(parse_sandbox_id("a/b").is_err());
        assert!(parse_sandbox_id(&"a".repeat(64)).is_err());
    }
}
