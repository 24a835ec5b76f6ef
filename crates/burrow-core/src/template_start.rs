//! A template's start command (Burrowfile `START` / `READY`): started in the background through
//! the agent right after a sandbox is created; create answers only once it is ready.
//!
//! Failure (the command exits before it is ready, the check does not pass within
//! [`READY_TIMEOUT`], the agent fails) is a `start_failed` error; the caller destroys the sandbox.

use std::net::SocketAddr;
use std::time::Duration;

use burrow_envd::EnvdClient;
use burrow_envd::proto::process::{DataEvent, ProcessConfig, ProcessEvent, StartRequest};
use burrow_runtime::SandboxHandle;
use burrow_templates::{ReadyCheck, StartCommand};
use futures::StreamExt;
use tokio::time::Instant;

use crate::CoreError;
use crate::agent;

/// How long a start command may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Bound of one probe (a TCP connect, or one run of a READY CMD).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the start command's output an error message quotes (its end).
const OUTPUT_TAIL_BYTES: usize = 2048;
/// The process tag, so `commands.list()` shows what it is.
const START_TAG: &str = "template-start";

/// Starts `start` in the sandbox and waits until it is ready.
pub async fn run(
    sandbox_id: &str,
    handle: &SandboxHandle,
    access_token: &str,
    start: &StartCommand,
) -> Result<(), CoreError> {
    run_with_timeout(sandbox_id, handle, access_token, start, READY_TIMEOUT).await
}

async fn run_with_timeout(
    sandbox_id: &str,
    handle: &SandboxHandle,
    access_token: &str,
    start: &StartCommand,
    timeout: Duration,
) -> Result<(), CoreError> {
    let client = EnvdClient::new(handle.agent_addr(), Some(access_token.to_string()))
        .map_err(|e| CoreError::internal(format!("cannot create the agent client: {e}")))?;
    let request = StartRequest {
        process: shell(&start.command, start.workdir.clone()),
        pty: None,
        tag: Some(START_TAG.to_string()),
        stdin: Some(false),
    };
    let (pid, mut events) =
        agent::start_process(&client, request, Some(&start.user), None, sandbox_id)
            .await
            .map_err(|e| failed(format!("the start command could not start: {e}")))?;
    tracing::debug!(sandbox = sandbox_id, pid, "start command running");
    let Some(check) = &start.ready else {
        return Ok(());
    };
    let deadline = Instant::now() + timeout;
    let mut output = OutputTail::default();
    loop {
        if probe(&client, handle, check, &start.user, sandbox_id).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "the start command `{}` was not ready after {} s ({}){}",
                start.command,
                timeout.as_secs(),
                describe(check),
                output.quoted()
            )));
        }
        // Sleep until the next probe, but notice at once if the start command exits.
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(ProcessEvent::Data(data))) => output.push(&data),
                Some(Ok(ProcessEvent::End(end))) => {
                    return Err(failed(format!(
                        "the start command `{}` exited before it was ready ({}){}",
                        start.command,
                        end.status,
                        output.quoted()
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(failed(format!("lost the start command's event stream: {e}")));
                }
                None => {
                    return Err(failed(
                        "the agent closed the start command's event stream".to_string(),
                    ));
                }
            },
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// One readiness probe.
async fn probe(
    client: &EnvdClient,
    handle: &SandboxHandle,
    check: &ReadyCheck,
    user: &str,
    sandbox_id: &str,
) -> bool {
    match check {
        ReadyCheck::Port { port } => {
            let addr = SocketAddr::from((handle.ip, *port));
            matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        }
        ReadyCheck::Command { command } => {
            let request = StartRequest {
                process: shell(command, None),
                pty: None,
                tag: None,
                stdin: Some(false),
            };
            let Ok(mut events) = client.start(request, Some(user), Some(PROBE_TIMEOUT)).await
            else {
                return false;
            };
            while let Some(event) = events.next().await {
                match event {
                    Ok(ProcessEvent::End(end)) => return end.exited && end.exit_code == 0,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(sandbox = sandbox_id, "READY CMD probe: {e}");
                        return false;
                    }
                }
            }
            false
        }
    }
}

fn shell(command: &str, cwd: Option<String>) -> ProcessConfig {
    ProcessConfig {
        cmd: "/bin/sh".to_string(),
        args: vec!["-c".to_string(), command.to_string()],
        envs: Default::default(),
        cwd,
    }
}

fn describe(check: &ReadyCheck) -> String {
    match check {
        ReadyCheck::Port { port } => format!("nothing accepted connections on port {port}"),
        ReadyCheck::Command { command } => format!("`{command}` did not exit with 0"),
    }
}

fn failed(message: String) -> CoreError {
    CoreError::StartFailed(message)
}

/// The last bytes the start command wrote (stdout and stderr interleaved), for error messages.
#[derive(Default)]
struct OutputTail(Vec<u8>);

impl OutputTail {
    fn push(&mut self, data: &DataEvent) {
        let (DataEvent::Stdout(bytes) | DataEvent::Stderr(bytes) | DataEvent::Pty(bytes)) = data;
        self.0.extend_from_slice(bytes);
        if self.0.len() > OUTPUT_TAIL_BYTES {
            self.0.drain(..self.0.len() - OUTPUT_TAIL_BYTES);
        }
    }

    fn quoted(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!("; its output ends with:\n{text}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tail_keeps_the_end() {
        let mut tail = OutputTail::default();
        assert_eq!(tail.quoted(), "");
        tail.push(&DataEvent::Stdout(vec![b'a'; OUTPUT_TAIL_BYTES].into()));
        tail.push(&DataEvent::Stderr(b"Traceback: boom\n".to_vec().into()));
        let quoted = tail.quoted();
        assert!(quoted.ends_with("Traceback: boom"), "{quoted}");
        assert!(tail.0.len() == OUTPUT_TAIL_BYTES);
    }
}
