//! Talking to the agent (envd) of a running sandbox, and mapping its errors to API errors.

use axum::http::StatusCode;
use burrow_envd::{Code, EnvdClient, EnvdError};
use burrow_types::codes;

use crate::error::HttpError;
use crate::service::RunningSandbox;

pub fn client(sandbox: &RunningSandbox) -> Result<EnvdClient, HttpError> {
    EnvdClient::new(
        sandbox.handle.agent_addr(),
        sandbox.access_token().map(str::to_string),
    )
    .map_err(|e| HttpError::internal(format!("cannot create the agent client: {e}")))
}

/// Maps an agent error to the API: caller mistakes (bad path, unknown user, missing file) keep
/// their meaning, anything else is a 502 `agent_error`.
pub fn error(e: EnvdError, sandbox_id: &str) -> HttpError {
    let message = match &e {
        EnvdError::Rpc(rpc) => rpc.message.clone(),
        EnvdError::Http { message, .. } => message.clone(),
        other => other.to_string(),
    };
    match e.code() {
        Code::NotFound => HttpError::new(StatusCode::NOT_FOUND, codes::FILE_NOT_FOUND, message),
        Code::AlreadyExists => HttpError::new(StatusCode::CONFLICT, codes::FILE_EXISTS, message),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            HttpError::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
        }
        // envd answers 401 for unknown users (the access token is always ours and right).
        Code::Unauthenticated | Code::PermissionDenied => {
            HttpError::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
        }
        Code::ResourceExhausted => HttpError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            codes::AGENT_ERROR,
            format!("sandbox {sandbox_id}: {message}"),
        ),
        _ => HttpError::agent(format!("agent of sandbox {sandbox_id}: {e}")),
    }
}

/// A user name as envd accepts it.
pub fn validate_user(user: &str) -> Result<(), HttpError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(HttpError::bad_request(format!(
            "invalid user name '{}'",
            user.escape_debug()
        )))
    }
}
