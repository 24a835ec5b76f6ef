//! Talking to the agent (envd) of a running sandbox, and mapping its errors to API errors.

use std::time::Duration;

use axum::http::StatusCode;
use burrow_envd::proto::process::{ProcessEvent, StartRequest};
use burrow_envd::{Code, EnvdClient, EnvdError, ProcessEventStream};
use burrow_types::codes;
use futures::StreamExt;

use crate::error::HttpError;
use crate::service::RunningSandbox;

pub fn client(sandbox: &RunningSandbox) -> Result<EnvdClient, HttpError> {
    EnvdClient::new(
        sandbox.handle.agent_addr(),
        sandbox.access_token().map(str::to_string),
    )
    .map_err(|e| HttpError::internal(format!("cannot create the agent client: {e}")))
}

/// Starts a process and waits for its `start` event, so a process that cannot start is a plain
/// HTTP error rather than a 200 stream, and the caller knows the pid before accepting input.
pub async fn start_process(
    client: &EnvdClient,
    start: StartRequest,
    user: Option<&str>,
    timeout: Option<Duration>,
    sandbox_id: &str,
) -> Result<(u32, ProcessEventStream), HttpError> {
    let mut events = client
        .start(start, user, timeout)
        .await
        .map_err(|e| error(e, sandbox_id))?;
    loop {
        match events.next().await {
            Some(Ok(ProcessEvent::Start(start))) => return Ok((start.pid, events)),
            Some(Ok(ProcessEvent::Keepalive(_))) => continue,
            Some(Ok(other)) => {
                return Err(HttpError::agent(format!(
                    "agent sent {other:?} before the process started"
                )));
            }
            Some(Err(e)) => return Err(error(e, sandbox_id)),
            None => {
                return Err(HttpError::agent(
                    "agent closed the stream before the process started",
                ));
            }
        }
    }
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
        Code::Unauthenticated => {
            HttpError::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
        }
        // The agent acts with the selected user's permissions.
        Code::PermissionDenied => {
            HttpError::new(StatusCode::FORBIDDEN, codes::PERMISSION_DENIED, message)
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
