//! `GET /v1/sandboxes/{id}/pty` (WebSocket): an interactive login shell for `burrow shell`.
//! Binary frames carry raw terminal bytes both ways; text frames carry [`PtyControl`] JSON.

use std::collections::BTreeMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use burrow_envd::EnvdClient;
use burrow_envd::proto::process::{
    DataEvent, ProcessConfig, ProcessEvent, ProcessInput, ProcessSelector, Pty, PtySize, Signal,
    StartRequest,
};
use burrow_types::{ApiError, PtyControl};
use futures::StreamExt;

use super::{query_pairs, single_param};
use crate::error::HttpError;
use crate::state::AppState;
use burrow_core::{agent, sandboxes};

fn dimension(pairs: &[(String, String)], name: &str, default: u16) -> Result<u16, HttpError> {
    match single_param(pairs, name)? {
        None => Ok(default),
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                HttpError::bad_request(format!("{name} must be 1..=1000, got '{text}'"))
            }),
    }
}

/// Open an interactive shell (WebSocket upgrade).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/pty", tag = "sandboxes",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("cols" = Option<u16>, Query, description = "Terminal columns (default 80)"),
        ("rows" = Option<u16>, Query, description = "Terminal rows (default 24)"),
        ("user" = Option<String>, Query, description = "Log in as this user (default: the template's)"),
    ),
    responses(
        (status = 101, description = "WebSocket: binary frames = terminal bytes both ways; text frames = `PtyControl` JSON (`{\"resize\":{\"cols\",\"rows\"}}` from the client, `{\"exit\":{\"exit_code\"}}` from the server before it closes)"),
        (status = 400, description = "`invalid_request`", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`sandbox_not_running`", body = ApiError),
    ))]
pub async fn pty(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Result<Response, HttpError> {
    let pairs = query_pairs(query.as_deref());
    let cols = dimension(&pairs, "cols", 80)?;
    let rows = dimension(&pairs, "rows", 24)?;
    let user = single_param(&pairs, "user")?;
    if let Some(user) = &user {
        agent::validate_user(user)?;
    }
    let sandbox = sandboxes::running_as(&state, &id, "pty").await?;
    let client = agent::client(&sandbox)?;
    let envs: BTreeMap<String, String> = [
        ("TERM", "xterm-256color"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let start = StartRequest {
        process: ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-i".into(), "-l".into()],
            envs,
            cwd: None,
        },
        pty: Some(Pty {
            size: Some(PtySize {
                cols: cols.into(),
                rows: rows.into(),
            }),
        }),
        tag: None,
        stdin: Some(true),
    };
    // The pid is needed for input, so wait for `start` before accepting any.
    let (pid, events) = agent::start_process(&client, start, user.as_deref(), None, &id).await?;
    let activity = sandbox.activity.clone();
    Ok(upgrade.on_upgrade(move |socket| async move {
        session(socket, client, pid, events).await;
        drop(activity);
    }))
}

async fn session(
    mut socket: WebSocket,
    client: EnvdClient,
    pid: u32,
    mut events: burrow_envd::ProcessEventStream,
) {
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(ProcessEvent::Data(DataEvent::Pty(data) | DataEvent::Stdout(data) | DataEvent::Stderr(data)))) => {
                    if socket.send(Message::Binary(data)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(ProcessEvent::End(end))) => {
                    let exit = PtyControl::Exit { exit_code: end.exit_code };
                    let text = serde_json::to_string(&exit).expect("control frames serialise");
                    let _ = socket.send(Message::Text(text.into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Some(Ok(ProcessEvent::Keepalive(_) | ProcessEvent::Start(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!("pty stream from the agent broke: {e}");
                    break;
                }
                None => break,
            },
            message = socket.recv() => {
                let Some(Ok(message)) = message else { break };
                match message {
                    Message::Binary(data) => {
                        let input = ProcessInput::Pty(data);
                        if let Err(e) = client.send_input(ProcessSelector::Pid(pid), input).await {
                            tracing::debug!("pty input failed: {e}");
                            break;
                        }
                    }
                    Message::Text(text) => match serde_json::from_str::<PtyControl>(&text) {
                        Ok(PtyControl::Resize(size)) => resize(&client, pid, size).await,
                        _ => tracing::debug!("ignoring unknown pty control frame"),
                    },
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
        }
    }
    // The terminal is gone: nobody can use the shell any more.
    let _ = client
        .send_signal(ProcessSelector::Pid(pid), Signal::Sigkill)
        .await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn resize(client: &EnvdClient, pid: u32, size: burrow_types::PtySize) {
    if size.cols == 0 || size.rows == 0 {
        return;
    }
    let selector = ProcessSelector::Pid(pid);
    if let Err(e) = client
        .resize_pty(selector, size.cols.into(), size.rows.into())
        .await
    {
        tracing::debug!(pid, "pty resize failed: {e}");
    }
}
