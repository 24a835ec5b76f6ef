//! Connect-RPC plumbing on axum: request parsing, unary and streaming responses,
//! deadlines and keepalives, and dispatch to the service handlers.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use burrow_envd::connect::{
    CONTENT_TYPE_STREAM_JSON, CONTENT_TYPE_UNARY_JSON, HEADER_KEEPALIVE_INTERVAL,
    HEADER_TIMEOUT_MS, MAX_MESSAGE_BYTES, decode_frames, encode_message, end_stream_frame,
};
use burrow_envd::{Code, ConnectError};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::state::SharedState;
use crate::{fs_service, process_service};

/// Default seconds between keepalive events when the client sends no interval.
const DEFAULT_KEEPALIVE_SECS: u64 = 90;

pub fn error_response(err: &ConnectError) -> Response {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE_UNARY_JSON)],
        err.to_json(),
    )
        .into_response()
}

pub fn unary_response<T: Serialize>(result: Result<T, ConnectError>) -> Response {
    match result {
        Ok(message) => match serde_json::to_vec(&message) {
            Ok(json) => ([(header::CONTENT_TYPE, CONTENT_TYPE_UNARY_JSON)], json).into_response(),
            Err(e) => error_response(&ConnectError::internal(format!("encoding response: {e}"))),
        },
        Err(e) => error_response(&e),
    }
}

/// A streaming response fed by a channel of already-framed messages.
pub fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>),
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE_STREAM_JSON)], body).into_response()
}

/// A stream that fails before any message: a single end-stream frame with the error.
pub fn stream_error(err: &ConnectError) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE_STREAM_JSON)],
        end_stream_frame(Some(err)),
    )
        .into_response()
}

/// Per-request Connect parameters.
pub struct CallContext {
    pub headers: HeaderMap,
    pub deadline: Option<Instant>,
    pub keepalive: Duration,
}

impl CallContext {
    pub fn from_headers(headers: HeaderMap) -> Result<Self, ConnectError> {
        let deadline = match headers.get(HEADER_TIMEOUT_MS) {
            None => None,
            Some(v) => {
                let ms: u64 = v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .filter(|ms| *ms > 0 && *ms < 10_000_000_000)
                    .ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "Connect-Timeout-Ms must be a positive integer (milliseconds)",
                        )
                    })?;
                Some(Instant::now() + Duration::from_millis(ms))
            }
        };
        let keepalive_secs = headers
            .get(HEADER_KEEPALIVE_INTERVAL)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_KEEPALIVE_SECS);
        Ok(Self {
            headers,
            deadline,
            keepalive: Duration::from_secs(keepalive_secs),
        })
    }

    pub fn user(&self, state: &SharedState) -> Result<crate::users::User, ConnectError> {
        let name = crate::auth::basic_auth_user(&self.headers)?;
        state.user(name.as_deref())
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

fn parse_unary<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ConnectError> {
    let ct = content_type(headers);
    if ct != CONTENT_TYPE_UNARY_JSON && !ct.is_empty() {
        return Err(ConnectError::new(
            Code::Unimplemented,
            format!(
                "content type {ct:?} is not supported; envd speaks Connect with JSON (application/json)"
            ),
        ));
    }
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ConnectError::invalid_argument(format!("invalid request message: {e}")))
}

/// Most of a rejected stream request's body that is read and dropped before the error answer.
const DRAIN_LIMIT_BYTES: usize = 1 << 20;
/// Longest wait for the rest of a rejected stream request's body.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Parses the single enveloped request message of a server-streaming call.
///
/// A rejected request's body is read on (boundedly) before the error is answered: hyper closes
/// a connection whose request body was left unread, and closing a socket with unread input
/// resets it, which can destroy the error response before the client reads it.
async fn parse_stream_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ConnectError> {
    let mut data = body.into_data_stream();
    let parsed = parse_stream_message(headers, &mut data).await;
    if parsed.is_err() {
        drain_rejected(data).await;
    }
    parsed
}

/// Reads and drops what is left of a rejected request's body, up to [`DRAIN_LIMIT_BYTES`] and
/// [`DRAIN_TIMEOUT`], so the error answer is not lost to a connection reset (see
/// [`parse_stream_request`]).
pub(crate) async fn drain_rejected<S, E>(mut data: S)
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut drained = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while drained <= DRAIN_LIMIT_BYTES {
            match data.next().await {
                Some(Ok(chunk)) => drained += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}

async fn parse_stream_message<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &mut axum::body::BodyDataStream,
) -> Result<T, ConnectError> {
    let ct = content_type(headers);
    if ct != CONTENT_TYPE_STREAM_JSON {
        return Err(ConnectError::new(
            Code::Unimplemented,
            format!(
                "content type {ct:?} is not supported for streams; use application/connect+json"
            ),
        ));
    }
    let mut frames = Box::pin(decode_frames(body));
    let request = match frames.next().await {
        Some(Ok(frame)) if !frame.is_end_stream() => frame.parse()?,
        Some(Err(e)) => return Err(e),
        _ => {
            return Err(ConnectError::invalid_argument(
                "stream request carries no message",
            ));
        }
    };
    // Read the body to its end (e.g. the final empty chunk of a chunked HTTP/1.1 body):
    // hyper only reuses a keep-alive connection whose request body was fully consumed,
    // and clients that already queued the next request on it would see it closed.
    if frames.next().await.is_some() {
        return Err(ConnectError::invalid_argument(
            "a server-streaming request must carry exactly one message",
        ));
    }
    Ok(request)
}

/// Routes `POST /{service}/{method}`.
pub async fn dispatch(
    state: SharedState,
    service: &str,
    method: &str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = match CallContext::from_headers(headers) {
        Ok(ctx) => ctx,
        Err(e) => {
            drain_rejected(body.into_data_stream()).await;
            return error_response(&e);
        }
    };
    macro_rules! unary {
        ($handler:path) => {{
            let bytes = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
                Ok(b) => b,
                Err(e) => {
                    return error_response(&ConnectError::invalid_argument(format!(
                        "reading request body: {e}"
                    )));
                }
            };
            match parse_unary(&ctx.headers, &bytes) {
                Ok(req) => unary_response($handler(&state, &ctx, req).await),
                Err(e) => error_response(&e),
            }
        }};
    }
    macro_rules! server_stream {
        ($handler:path) => {{
            match parse_stream_request(&ctx.headers, body).await {
                Ok(req) => $handler(&state, ctx, req).await,
                Err(e) => stream_error(&e),
            }
        }};
    }
    match (service, method) {
        ("process.Process", "Start") => server_stream!(process_service::start),
        ("process.Process", "Connect") => server_stream!(process_service::connect),
        ("process.Process", "List") => unary!(process_service::list),
        ("process.Process", "SendInput") => unary!(process_service::send_input),
        ("process.Process", "SendSignal") => unary!(process_service::send_signal),
        ("process.Process", "CloseStdin") => unary!(process_service::close_stdin),
        ("process.Process", "Update") => unary!(process_service::update),
        ("process.Process", "StreamInput") => {
            process_service::stream_input(&state, ctx, body).await
        }
        ("filesystem.Filesystem", "Stat") => unary!(fs_service::stat),
        ("filesystem.Filesystem", "MakeDir") => unary!(fs_service::make_dir),
        ("filesystem.Filesystem", "Move") => unary!(fs_service::move_entry),
        ("filesystem.Filesystem", "ListDir") => unary!(fs_service::list_dir),
        ("filesystem.Filesystem", "Remove") => unary!(fs_service::remove),
        ("filesystem.Filesystem", "CreateWatcher") => unary!(fs_service::create_watcher),
        ("filesystem.Filesystem", "GetWatcherEvents") => unary!(fs_service::get_watcher_events),
        ("filesystem.Filesystem", "RemoveWatcher") => unary!(fs_service::remove_watcher),
        ("filesystem.Filesystem", "WatchDir") => server_stream!(fs_service::watch_dir),
        _ => {
            drain_rejected(body.into_data_stream()).await;
            error_response(&ConnectError::new(
                Code::Unimplemented,
                format!("unknown procedure /{service}/{method}"),
            ))
        }
    }
}

/// Drives one outgoing stream: forwards `source` messages, sends `keepalive()` after
/// `ctx.keepalive` of silence, ends with `deadline_exceeded` at the deadline. `source`
/// returning `None` ends the stream successfully; `Some(Err)` ends it with that error.
pub fn spawn_stream<T, F>(
    ctx: &CallContext,
    mut source: mpsc::Receiver<Result<T, ConnectError>>,
    keepalive: F,
) -> Response
where
    T: Serialize + Send + 'static,
    F: Fn() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let deadline = ctx.deadline;
    let interval = ctx.keepalive;
    tokio::spawn(async move {
        let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let deadline_sleep = tokio::time::sleep_until(deadline.unwrap_or(far_future));
        tokio::pin!(deadline_sleep);
        let outcome: Option<ConnectError> = loop {
            let quiet = tokio::time::sleep(interval);
            tokio::select! {
                biased;
                item = source.recv() => match item {
                    Some(Ok(msg)) => {
                        if tx.send(encode_message(&msg)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => break Some(e),
                    None => break None,
                },
                _ = &mut deadline_sleep => {
                    break Some(ConnectError::new(Code::DeadlineExceeded, "the operation timed out (Connect-Timeout-Ms elapsed)"));
                }
                _ = quiet => {
                    if tx.send(encode_message(&keepalive())).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        };
        let _ = tx.send(end_stream_frame(outcome.as_ref())).await;
    });
    stream_response(rx)
}
