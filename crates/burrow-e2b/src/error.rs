//! Errors as E2B clients expect them: `{"code": <status>, "message": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backend::BackendError;
use crate::wire::ErrorBody;

/// Python SDKs retry 502/503/504 responses that lack this header. burrow's creates are not
/// retried blindly: a failed create may have consumed resources, and the SDK passes an
/// `Idempotency-Key` only when the user asks for one.
pub(crate) const SHOULD_RETRY: &str = "should-retry";

/// An error response of the E2B API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 501: valid E2B input for a feature burrow does not implement (yet).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl From<BackendError> for ApiError {
    fn from(err: BackendError) -> Self {
        let status = match &err {
            BackendError::Unauthorized => StatusCode::UNAUTHORIZED,
            BackendError::SandboxNotFound(_)
            | BackendError::TemplateNotFound(_)
            | BackendError::BuildNotFound(_)
            | BackendError::NotRunning(_) => StatusCode::NOT_FOUND,
            BackendError::AlreadyPaused(_) | BackendError::Conflict(_) => StatusCode::CONFLICT,
            BackendError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            BackendError::Forbidden(_) => StatusCode::FORBIDDEN,
            BackendError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BackendError::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %err, "E2B API request failed");
        }
        Self::new(status, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status.is_server_error() {
            response
                .headers_mut()
                .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        response
    }
}
