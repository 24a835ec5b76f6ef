//! A JSON body extractor whose errors are [`HttpError`]s: 400 `invalid_json` with serde's message,
//! 413 when the body is over the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use burrow_types::codes;
use serde::de::DeserializeOwned;

use crate::error::HttpError;

/// Like `axum::Json`, but any content type is accepted and errors follow the API's format.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                payload_too_large()
            } else {
                HttpError::bad_request(format!("cannot read the request body: {rejection}"))
            }
        })?;
        // An empty body means "all defaults" for requests whose fields are all optional.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                codes::INVALID_JSON,
                format!("invalid JSON body: {e}"),
            )
        })
    }
}

pub fn payload_too_large() -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        codes::PAYLOAD_TOO_LARGE,
        "request body is larger than the server accepts",
    )
}
