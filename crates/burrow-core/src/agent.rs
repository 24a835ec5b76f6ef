//! Talking to the agent (envd) of a running sandbox, and mapping its errors to API errors.

use std::time::Duration;

use burrow_envd::proto::process::{ProcessEvent, StartRequest};
use burrow_envd::{Code, EnvdClient, EnvdError, ProcessEventStream};
use futures::StreamExt;

use crate::sandboxes::RunningSandbox;
use crate::{AgentFailure, CoreError};

pub fn client(sandbox: &RunningSandbox) -> Result<EnvdClient, CoreError> {
    EnvdClient::new(
        sandbox.handle.agent_addr(),
        sandbox.access_token().map(str::to_string),
    )
    .map_err(|e| CoreError::internal(format!("cannot create the agent client: {e}")))
}

/// Starts a process and waits for its `start` event, so a process that cannot start is a plain
/// plain error rather than a stream, and the caller knows the pid before accepting input.
pub async fn start_process(
    client: &EnvdClient,
    start: StartRequest,
    user: Option<&str>,
    timeout: Option<Duration>,
    sandbox_id: &str,
) -> Result<(u32, ProcessEventStream), CoreError> {
    let mut events = client
        .start(start, user, timeout)
        .await
        .map_err(|e| error(e, sandbox_id))?;
    loop {
        match events.next().await {
            Some(Ok(ProcessEvent::Start(start))) => return Ok((start.pid, events)),
            Some(Ok(ProcessEvent::Keepalive(_))) => continue,
            Some(Ok(other)) => {
                return Err(CoreError::agent(format!(
                    "agent sent {other:?} before the process started"
                )));
            }
            Some(Err(e)) => return Err(error(e, sandbox_id)),
            None => {
                return Err(CoreError::agent(
                    "agent closed the stream before the process started",
                ));
            }
        }
    }
}

/// Classifies an agent error: caller mistakes (bad path, unknown user, missing file) keep
/// their meaning, anything else is [`AgentFailure::Other`].
pub fn error(e: EnvdError, sandbox_id: &str) -> CoreError {
    let message = match &e {
        EnvdError::Rpc(rpc) => rpc.message.clone(),
        EnvdError::Http { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let kind = match e.code() {
        Code::NotFound => AgentFailure::FileNotFound,
        Code::AlreadyExists => AgentFailure::FileExists,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            AgentFailure::Invalid
        }
        // envd answers 401 for unknown users (the access token is always ours and right).
        Code::Unauthenticated => AgentFailure::Invalid,
        // The agent acts with the selected user's permissions.
        Code::PermissionDenied => AgentFailure::PermissionDenied,
        Code::ResourceExhausted => {
            return CoreError::Agent {
                kind: AgentFailure::NoSpace,
                message: format!("sandbox {sandbox_id}: {message}"),
            };
        }
        _ => return CoreError::agent(format!("agent of sandbox {sandbox_id}: {e}")),
    };
    CoreError::Agent { kind, message }
}

/// A user name as envd accepts it.
pub fn validate_user(user: &str) -> Result<(), CoreError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(format!(
            "invalid user name '{}'",
            user.escape_debug()
        )))
    }
}
