//! `POST /v1/sandboxes/{id}/exec`: run a command and stream its output as NDJSON.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use burrow_envd::proto::process::{
    DataEvent, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, Signal, StartRequest,
};
use burrow_envd::{EnvdClient, ProcessEventStream};
use burrow_types::{ApiError, ExecEvent, ExecRequest, codes};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use burrow_core::{agent, sandboxes, validate};

pub const NDJSON: &str = "application/x-ndjson";

/// A validated exec request, ready for envd.
struct Command {
    start: StartRequest,
    user: Option<String>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

fn prepare(req: ExecRequest) -> Result<Command, HttpError> {
    let (cmd, args) = match (req.cmd, req.command) {
        (Some(argv), None) => {
            let mut argv = argv.into_iter();
            let cmd = argv.next().filter(|c| !c.is_empty()).ok_or_else(|| {
                HttpError::bad_request("'cmd' must name a program: [\"ls\", \"-l\"]")
            })?;
            (cmd, argv.collect::<Vec<_>>())
        }
        (None, Some(line)) => (
            "/bin/bash".to_string(),
            vec!["-l".to_string(), "-c".to_string(), line],
        ),
        _ => {
            return Err(HttpError::bad_request(
                "give exactly one of 'cmd' (an argv array) and 'command' (a shell command line)",
            ));
        }
    };
    if std::iter::once(&cmd).chain(&args).any(|a| a.contains('\0')) {
        return Err(HttpError::bad_request(
            "command arguments must not contain NUL bytes",
        ));
    }
    validate::env(&req.env)?;
    if let Some(cwd) = &req.cwd {
        validate::sandbox_path(cwd)?;
    }
    if let Some(user) = &req.user {
        agent::validate_user(user)?;
    }
    let stdin = match (req.stdin, req.stdin_base64) {
        (Some(_), Some(_)) => {
            return Err(HttpError::bad_request(
                "give at most one of 'stdin' and 'stdin_base64'",
            ));
        }
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| {
                    HttpError::bad_request(format!("'stdin_base64' is not base64: {e}"))
                })?,
        ),
        (None, None) => None,
    };
    Ok(Command {
        start: StartRequest {
            process: ProcessConfig {
                cmd,
                args,
                envs: req.env,
                cwd: req.cwd,
            },
            pty: None,
            tag: None,
            stdin: Some(stdin.is_some()),
        },
        user: req.user,
        stdin,
        timeout: req
            .timeout_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis),
    })
}

/// Run a command in the sandbox; the response streams its output.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "NDJSON stream of `ExecEvent` lines: `start`, `stdout`/`stderr`…, then `exit` or `error`. If the client disconnects before `exit`, the process is killed.",
            content_type = "application/x-ndjson", body = ExecEvent),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_path`", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`sandbox_not_running`", body = ApiError),
        (status = 502, description = "`agent_error`", body = ApiError),
    ))]
pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ExecRequest>,
) -> Result<Response, HttpError> {
    let keep_alive = req.keep_alive;
    let command = prepare(req)?;
    let sandbox = sandboxes::running_as(&state, &id, "exec").await?;
    let client = agent::client(&sandbox)?;
    let (pid, events) = agent::start_process(
        &client,
        command.start,
        command.user.as_deref(),
        command.timeout,
        &id,
    )
    .await?;
    if let Some(input) = command.stdin {
        let selector = ProcessSelector::Pid(pid);
        let sent = async {
            if !input.is_empty() {
                client
                    .send_input(selector.clone(), ProcessInput::Stdin(Bytes::from(input)))
                    .await?;
            }
            client.close_stdin(selector).await
        };
        if let Err(e) = sent.await {
            let _ = client
                .send_signal(ProcessSelector::Pid(pid), Signal::Sigkill)
                .await;
            return Err(agent::error(e, &id).into());
        }
    }

    let (tx, rx) = mpsc::channel::<Bytes>(32);
    // The sandbox stays awake (and holds a visible lease with `keep_alive`) while it runs.
    let activity = sandbox.activity.clone();
    let lease = keep_alive
        .then(|| activity.power().map(|p| p.hold("exec keep_alive")))
        .flatten();
    tokio::spawn(async move {
        pump(client, pid, events, tx).await;
        drop((activity, lease));
    });
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

pub fn ndjson_line<T: serde::Serialize>(event: &T) -> Bytes {
    let mut line = serde_json::to_vec(event).expect("API events always serialise");
    line.push(b'\n');
    Bytes::from(line)
}

/// Converts an envd end event into the API's exit event.
pub fn exit_event(end: &burrow_envd::proto::process::EndEvent) -> ExecEvent {
    let signal = (!end.exited)
        .then(|| end.status.strip_prefix("signal: ").map(str::to_string))
        .flatten();
    ExecEvent::Exit {
        exit_code: end.exit_code,
        signal,
    }
}

/// Forwards envd events to the client until the process ends. If the client goes away first, the
/// process is killed: nobody could read its output any more.
async fn pump(
    client: EnvdClient,
    pid: u32,
    mut events: ProcessEventStream,
    tx: mpsc::Sender<Bytes>,
) {
    let send = |event: ExecEvent| {
        let tx = tx.clone();
        async move { tx.send(ndjson_line(&event)).await.is_ok() }
    };
    if !send(ExecEvent::Start { pid }).await {
        let _ = client
            .send_signal(ProcessSelector::Pid(pid), Signal::Sigkill)
            .await;
        return;
    }
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            // The client went away while the process was quiet.
            () = tx.closed() => {
                let _ = client.send_signal(ProcessSelector::Pid(pid), Signal::Sigkill).await;
                return;
            }
        };
        let event = match next {
            Some(Ok(ProcessEvent::Data(DataEvent::Stdout(data) | DataEvent::Pty(data)))) => {
                ExecEvent::Stdout {
                    data: data.to_vec(),
                }
            }
            Some(Ok(ProcessEvent::Data(DataEvent::Stderr(data)))) => ExecEvent::Stderr {
                data: data.to_vec(),
            },
            Some(Ok(ProcessEvent::End(end))) => {
                send(exit_event(&end)).await;
                return;
            }
            Some(Ok(ProcessEvent::Keepalive(_) | ProcessEvent::Start(_))) => continue,
            Some(Err(e)) => {
                send(ExecEvent::Error {
                    code: codes::AGENT_ERROR.to_string(),
                    message: format!("output stream from the agent broke: {e}"),
                })
                .await;
                return;
            }
            None => {
                send(ExecEvent::Error {
                    code: codes::AGENT_ERROR.to_string(),
                    message: "the agent ended the stream without an exit status".to_string(),
                })
                .await;
                return;
            }
        };
        if !send(event).await {
            let _ = client
                .send_signal(ProcessSelector::Pid(pid), Signal::Sigkill)
                .await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_cmd_and_command() {
        assert!(prepare(ExecRequest::default()).is_err());
        let both = ExecRequest {
            cmd: Some(vec!["ls".into()]),
            command: Some("ls".into()),
            ..Default::default()
        };
        assert!(prepare(both).is_err());
        let empty = ExecRequest {
            cmd: Some(vec![]),
            ..Default::default()
        };
        assert!(prepare(empty).is_err());
        let line = prepare(ExecRequest {
            command: Some("echo hi".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(line.start.process.cmd, "/bin/bash");
        assert_eq!(line.start.process.args, ["-l", "-c", "echo hi"]);
        assert_eq!(line.start.stdin, Some(false));
    }

    #[test]
    fn stdin_forms() {
        let b64 = prepare(ExecRequest {
            cmd: Some(vec!["cat".into()]),
            stdin_base64: Some("aGkK".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(b64.stdin.as_deref(), Some(&b"hi\n"[..]));
        assert_eq!(b64.start.stdin, Some(true));
        let bad = ExecRequest {
            cmd: Some(vec!["cat".into()]),
            stdin_base64: Some("!!".into()),
            ..Default::default()
        };
        assert!(prepare(bad).is_err());
    }
}
