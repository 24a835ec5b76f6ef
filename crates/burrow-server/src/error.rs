//! Errors: [`HttpError`] for request handling (status + JSON body), [`ServeError`] for start-up.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use burrow_runtime::RuntimeError;
use burrow_store::StoreError;
use burrow_templates::TemplateError;
use burrow_types::{ApiError, codes};

/// A failed request: the status and the JSON body the client gets.
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub body: ApiError,
}

impl HttpError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError::new(code, message),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }

    pub fn sandbox_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::SANDBOX_NOT_FOUND,
            format!("sandbox '{id}' does not exist; list sandboxes with GET /v1/sandboxes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
    }

    pub fn agent(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, codes::AGENT_ERROR, message)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.body)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = %self.body.code, "{}", self.body.message);
        }
        (self.status, Json(self.body)).into_response()
    }
}

impl From<burrow_core::CoreError> for HttpError {
    fn from(e: burrow_core::CoreError) -> Self {
        use burrow_core::{AgentFailure, CoreError as E};
        let e = match e {
            E::Runtime(e) => return e.into(),
            E::Template(e) => return e.into(),
            other => other,
        };
        let (status, code) = match &e {
            E::NotFound {
                kind: "sandbox",
                id,
            } => return Self::sandbox_not_found(id),
            E::NotFound {
                kind: "workspace", ..
            } => (StatusCode::NOT_FOUND, codes::WORKSPACE_NOT_FOUND),
            E::NotFound {
                kind: "template", ..
            } => (StatusCode::NOT_FOUND, codes::TEMPLATE_NOT_FOUND),
            E::NotFound { .. } => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            E::Forbidden { .. } | E::OperatorOnly => (StatusCode::FORBIDDEN, codes::FORBIDDEN),
            E::Quota { .. } => (StatusCode::TOO_MANY_REQUESTS, codes::QUOTA_EXCEEDED),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            E::InvalidPath(_) => (StatusCode::BAD_REQUEST, codes::INVALID_PATH),
            E::Conflict(_) => (StatusCode::CONFLICT, codes::CONFLICT),
            E::Refused { code, .. } => (StatusCode::CONFLICT, *code),
            E::Unavailable { code, .. } => (StatusCode::NOT_IMPLEMENTED, *code),
            E::Failed { code, .. } => (StatusCode::INTERNAL_SERVER_ERROR, *code),
            E::StartFailed(_) => (StatusCode::BAD_GATEWAY, codes::START_FAILED),
            E::Agent { kind, .. } => match kind {
                AgentFailure::FileNotFound => (StatusCode::NOT_FOUND, codes::FILE_NOT_FOUND),
                AgentFailure::FileExists => (StatusCode::CONFLICT, codes::FILE_EXISTS),
                AgentFailure::Invalid => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
                AgentFailure::PermissionDenied => (StatusCode::FORBIDDEN, codes::PERMISSION_DENIED),
                AgentFailure::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, codes::AGENT_ERROR),
                AgentFailure::Other => (StatusCode::BAD_GATEWAY, codes::AGENT_ERROR),
            },
            E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
            E::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
            // Taken apart before this match, each with its own mapping.
            E::Runtime(_) | E::Template(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        Self::internal(format!("state database: {e}"))
    }
}

impl From<TemplateError> for HttpError {
    fn from(e: TemplateError) -> Self {
        let (status, code) = match &e {
            TemplateError::NotFound(_) => (StatusCode::NOT_FOUND, codes::TEMPLATE_NOT_FOUND),
            TemplateError::AlreadyExists(_) => (StatusCode::CONFLICT, codes::TEMPLATE_EXISTS),
            TemplateError::InUse(_) | TemplateError::HasDependents { .. } => {
                (StatusCode::CONFLICT, codes::TEMPLATE_IN_USE)
            }
            TemplateError::InvalidName(_)
            | TemplateError::Invalid(_)
            | TemplateError::UnsafeEntry { .. } => {
                (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST)
            }
            TemplateError::BuildFailed(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, codes::BUILD_FAILED)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<RuntimeError> for HttpError {
    fn from(e: RuntimeError) -> Self {
        match &e {
            RuntimeError::Exhausted => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::CAPACITY_EXHAUSTED,
                format!("{e}; delete sandboxes you no longer need and retry"),
            ),
            RuntimeError::NotFound(id) => Self::sandbox_not_found(id),
            RuntimeError::Invalid(msg) => Self::bad_request(msg.clone()),
            RuntimeError::Busy(msg) => Self::new(
                StatusCode::CONFLICT,
                codes::INVALID_REQUEST,
                format!("{msg}; retry when it is done"),
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::RUNTIME_ERROR,
                e.to_string(),
            ),
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("templates: {0}")]
    Templates(#[from] TemplateError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Core(#[from] burrow_core::CoreError),
}

impl ServeError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
