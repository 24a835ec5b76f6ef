//! Handlers of `process.Process`.

use std::path::Path;

use axum::body::Body;
use axum::response::Response;
use burrow_envd::connect::{CONTENT_TYPE_STREAM_JSON, decode_frames};
use burrow_envd::proto::process::{
    CloseStdinRequest, CloseStdinResponse, ConnectRequest, KeepAlive, ListRequest, ListResponse,
    ProcessEvent, ProcessEventResponse, SendInputRequest, SendInputResponse, SendSignalRequest,
    SendSignalResponse, StartEvent, StartRequest, StreamInputRequest, StreamInputResponse,
    UpdateRequest, UpdateResponse,
};
use burrow_envd::{Code, ConnectError};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::paths;
use crate::process::{SpawnSpec, Subscription, process_env, signal_number, spawn, validate_env};
use crate::rpc::{CallContext, error_response, spawn_stream, stream_error};
use crate::state::SharedState;

fn keepalive() -> ProcessEventResponse {
    ProcessEventResponse {
        event: ProcessEvent::Keepalive(KeepAlive {}),
    }
}

/// Streams `start{pid}`, then the subscription's events through `end`.
fn event_stream(ctx: &CallContext, pid: u32, subscription: Subscription) -> Response {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let start = ProcessEvent::Start(StartEvent { pid });
        if tx
            .send(Ok(ProcessEventResponse { event: start }))
            .await
            .is_err()
        {
            return;
        }
        match subscription {
            Subscription::Ended(end) => {
                let _ = tx
                    .send(Ok(ProcessEventResponse {
                        event: ProcessEvent::End(end),
                    }))
                    .await;
            }
            Subscription::Live(mut events) => {
                while let Some(event) = events.recv().await {
                    let is_end = matches!(event, ProcessEvent::End(_));
                    if tx.send(Ok(ProcessEventResponse { event })).await.is_err() || is_end {
                        return;
                    }
                }
            }
        }
    });
    spawn_stream(ctx, rx, keepalive)
}

pub async fn start(state: &SharedState, ctx: CallContext, req: StartRequest) -> Response {
    match start_process(state, &ctx, req) {
        Ok((pid, subscription)) => event_stream(&ctx, pid, subscription),
        Err(e) => stream_error(&e),
    }
}

fn start_process(
    state: &SharedState,
    ctx: &CallContext,
    req: StartRequest,
) -> Result<(u32, Subscription), ConnectError> {
    let user = ctx.user(state)?;
    if req.process.cmd.is_empty() {
        return Err(ConnectError::invalid_argument(
            "process.cmd must not be empty",
        ));
    }
    if req.process.cmd.contains('\0') || req.process.args.iter().any(|a| a.contains('\0')) {
        return Err(ConnectError::invalid_argument(
            "cmd and args must not contain NUL bytes",
        ));
    }
    validate_env(&req.process.envs)?;
    let workdir = state.config.default_workdir.as_deref();
    let cwd = match req.process.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(cwd) => paths::resolve(cwd, &user, workdir)?,
        None => match workdir {
            Some(dir) => paths::resolve(dir, &user, None)?,
            None => Path::new(&user.home).to_path_buf(),
        },
    };
    if !cwd.is_dir() {
        return Err(ConnectError::invalid_argument(format!(
            "cwd '{}' does not exist or is not a directory",
            cwd.display()
        )));
    }
    let env = process_env(&user, &state.config.global_env, &req.process.envs);
    let pty_size = req.pty.as_ref().map(|p| {
        let size = p.size.clone().unwrap_or_default();
        let clamp = |v: u32, default: u16| {
            if v == 0 {
                default
            } else {
                u16::try_from(v).unwrap_or(u16::MAX)
            }
        };
        (clamp(size.cols, 80), clamp(size.rows, 24))
    });
    let spec = SpawnSpec {
        config: req.process,
        tag: req.tag,
        pty_size,
        stdin: req.stdin.unwrap_or(true),
        user,
        cwd,
        env,
        deadline: ctx.deadline,
    };
    let (handle, subscription) = spawn(&state.processes, spec)?;
    Ok((handle.pid, subscription))
}

pub async fn connect(state: &SharedState, ctx: CallContext, req: ConnectRequest) -> Response {
    match state.processes.find(req.process.as_ref(), true) {
        Ok(handle) => event_stream(&ctx, handle.pid, handle.subscribe()),
        Err(e) => stream_error(&e),
    }
}

pub async fn list(
    state: &SharedState,
    _ctx: &CallContext,
    _req: ListRequest,
) -> Result<ListResponse, ConnectError> {
    Ok(ListResponse {
        processes: state.processes.list(),
    })
}

pub async fn send_input(
    state: &SharedState,
    _ctx: &CallContext,
    req: SendInputRequest,
) -> Result<SendInputResponse, ConnectError> {
    let handle = state.processes.find(req.process.as_ref(), false)?;
    let input = req
        .input
        .ok_or_else(|| ConnectError::invalid_argument("input (stdin or pty) is required"))?;
    handle.send_input(input).await?;
    Ok(SendInputResponse {})
}

pub async fn send_signal(
    state: &SharedState,
    _ctx: &CallContext,
    req: SendSignalRequest,
) -> Result<SendSignalResponse, ConnectError> {
    let signal = signal_number(req.signal)?;
    let handle = state.processes.find(req.process.as_ref(), false)?;
    handle.signal(signal)?;
    Ok(SendSignalResponse {})
}

pub async fn close_stdin(
    state: &SharedState,
    _ctx: &CallContext,
    req: CloseStdinRequest,
) -> Result<CloseStdinResponse, ConnectError> {
    let handle = state.processes.find(req.process.as_ref(), false)?;
    handle.close_stdin().await?;
    Ok(CloseStdinResponse {})
}

pub async fn update(
    state: &SharedState,
    _ctx: &CallContext,
    req: UpdateRequest,
) -> Result<UpdateResponse, ConnectError> {
    let handle = state.processes.find(req.process.as_ref(), false)?;
    if let Some(size) = req.pty.and_then(|p| p.size) {
        handle.resize(size.cols, size.rows)?;
    }
    Ok(UpdateResponse {})
}

/// Client-streaming: `start{process}` first, then `data{input}`/`keepalive` messages.
pub async fn stream_input(state: &SharedState, ctx: CallContext, body: Body) -> Response {
    let ct = ctx
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with(CONTENT_TYPE_STREAM_JSON) {
        return error_response(&ConnectError::new(
            Code::Unimplemented,
            "StreamInput needs content type application/connect+json",
        ));
    }
    let mut data = body.into_data_stream();
    let result = async {
        let mut frames = Box::pin(decode_frames(&mut data));
        let mut handle = None;
        while let Some(frame) = frames.next().await {
            let frame = frame?;
            if frame.is_end_stream() {
                break;
            }
            let msg: StreamInputRequest = frame.parse()?;
            match msg {
                StreamInputRequest::Start(start) => {
                    handle = Some(state.processes.find(start.process.as_ref(), false)?);
                }
                StreamInputRequest::Data(data) => {
                    let h = handle.as_ref().ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "StreamInput: the first message must be `start`",
                        )
                    })?;
                    if let Some(input) = data.input {
                        h.send_input(input).await?;
                    }
                }
                StreamInputRequest::Keepalive(_) => {}
            }
        }
        Ok::<_, ConnectError>(StreamInputResponse {})
    }
    .await;
    // Read what is left: an error, or an end-stream frame, may stop reading before the body's
    // end, and an unread body gets the connection closed under the client (see rpc.rs).
    crate::rpc::drain_rejected(data).await;
    // Client-streaming responses are a single enveloped message plus end-stream.
    let (tx, rx) = mpsc::channel(2);
    let _ = tx.try_send(result);
    drop(tx);
    spawn_stream(&ctx, rx, StreamInputResponse::default)
}
