//! Async client for an envd agent at a socket address (used by the burrow server).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connect::{
    CONTENT_TYPE_STREAM_JSON, CONTENT_TYPE_UNARY_JSON, Code, ConnectError, HEADER_TIMEOUT_MS,
    MAX_MESSAGE_BYTES, decode_frames, encode_message,
};
use crate::proto::filesystem::{
    EntryInfo, EntryResponse, ListDirRequest, ListDirResponse, MoveRequest, PathRequest,
};
use crate::proto::process::{
    CloseStdinRequest, ConnectRequest, ListRequest, ListResponse, ProcessEvent,
    ProcessEventResponse, ProcessInfo, ProcessInput, ProcessSelector, Pty, PtySize,
    SendInputRequest, SendSignalRequest, Signal, StartRequest, UpdateRequest,
};

/// Errors of [`EnvdClient`] calls.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    /// The agent answered with a Connect error (RPCs) or end-stream error.
    #[error("envd error {0}")]
    Rpc(#[from] ConnectError),
    /// A plain HTTP endpoint (`/files`, `/health`) answered with an error status.
    #[error("envd HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// The agent could not be reached or the connection broke.
    #[error("cannot reach envd: {0}")]
    Transport(#[from] reqwest::Error),
    /// The agent sent something that does not follow the protocol.
    #[error("envd protocol violation: {0}")]
    Protocol(String),
}

impl EnvdError {
    /// The Connect code this error corresponds to (HTTP errors are mapped like Connect clients do).
    pub fn code(&self) -> Code {
        match self {
            EnvdError::Rpc(e) => e.code,
            EnvdError::Http { status, .. } => Code::from_http_status(*status),
            EnvdError::Transport(e) if e.is_timeout() => Code::DeadlineExceeded,
            EnvdError::Transport(_) => Code::Unavailable,
            EnvdError::Protocol(_) => Code::Internal,
        }
    }
}

/// Stream of process events from `Start`/`Connect`; ends after the `end` event.
pub type ProcessEventStream = Pin<Box<dyn Stream<Item = Result<ProcessEvent, EnvdError>> + Send>>;
/// Stream of file bytes from `GET /files`.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, EnvdError>> + Send>>;

/// Result entry of `POST /files`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct WrittenFile {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub file_type: String,
}

/// Default deadline for unary calls and file transfers' connection setup.
const UNARY_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read of an error body; the rest is not read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A pooled client for one agent.
#[derive(Debug, Clone)]
pub struct EnvdClient {
    http: reqwest::Client,
    base: String,
    access_token: Option<String>,
}

impl EnvdClient {
    pub fn new(addr: SocketAddr, access_token: Option<String>) -> Result<Self, EnvdError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            base: format!("http://{addr}"),
            access_token,
        })
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.access_token {
            req = req.header("X-Access-Token", token);
        }
        if let Some(user) = user {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
            req = req.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        req
    }

    /// `GET /health`: Ok when the agent answers 2xx.
    pub async fn health(&self) -> Result<(), EnvdError> {
        let resp = self
            .request(reqwest::Method::GET, "/health", None)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        check_http(resp).await.map(|_| ())
    }

    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        body: &Req,
        user: Option<&str>,
    ) -> Result<Resp, EnvdError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| EnvdError::Protocol(format!("cannot encode request: {e}")))?;
        let resp = self
            .request(reqwest::Method::POST, &format!("/{method}"), user)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE_UNARY_JSON)
            .header("Connect-Protocol-Version", "1")
            .header(HEADER_TIMEOUT_MS, UNARY_TIMEOUT.as_millis().to_string())
            .timeout(UNARY_TIMEOUT)
            .body(json)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = read_error_body(resp).await;
            return Err(rpc_error(status.as_u16(), &bytes));
        }
        let bytes = read_body(resp, MAX_MESSAGE_BYTES).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EnvdError::Protocol(format!("invalid {method} response: {e}")))
    }

    async fn server_stream<Req: Serialize>(
        &self,
        method: &str,
        body: &Req,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<ProcessEventStream, EnvdError> {
        let mut req = self
            .request(reqwest::Method::POST, &format!("/{method}"), user)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE_STREAM_JSON)
            .header("Connect-Protocol-Version", "1")
            .body(encode_message(body));
        if let Some(timeout) = timeout {
            req = req.header(HEADER_TIMEOUT_MS, timeout.as_millis().max(1).to_string());
        }
        let resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = read_error_body(resp).await;
            return Err(rpc_error(status.as_u16(), &bytes));
        }
        let frames = decode_frames(resp.bytes_stream().boxed());
        let events = futures::stream::unfold(
            (Box::pin(frames), false),
            |(mut frames, finished)| async move {
                if finished {
                    return None;
                }
                match frames.next().await {
                    None => Some((
                        Err(EnvdError::Protocol(
                            "stream ended without an end-stream frame".into(),
                        )),
                        (frames, true),
                    )),
                    Some(Err(e)) => Some((Err(EnvdError::Rpc(e)), (frames, true))),
                    Some(Ok(frame)) if frame.is_end_stream() => match frame.end_stream_result() {
                        Ok(()) => None,
                        Err(e) => Some((Err(EnvdError::Rpc(e)), (frames, true))),
                    },
                    Some(Ok(frame)) => match frame.parse::<ProcessEventResponse>() {
                        Ok(resp) => Some((Ok(resp.event), (frames, false))),
                        Err(e) => Some((
                            Err(EnvdError::Protocol(format!("invalid event: {}", e.message))),
                            (frames, true),
                        )),
                    },
                }
            },
        );
        Ok(Box::pin(events))
    }

    /// `process.Process/Start`. `timeout` is sent as `Connect-Timeout-Ms`: the agent kills the
    /// process when it elapses. The first event is `Start{pid}`.
    pub async fn start(
        &self,
        req: StartRequest,
        user: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<ProcessEventStream, EnvdError> {
        self.server_stream("process.Process/Start", &req, user, timeout)
            .await
    }

    /// `process.Process/Connect`: reattach to a running (or recently finished) process.
    pub async fn connect(
        &self,
        process: ProcessSelector,
        timeout: Option<Duration>,
    ) -> Result<ProcessEventStream, EnvdError> {
        let req = ConnectRequest {
            process: Some(process),
        };
        self.server_stream("process.Process/Connect", &req, None, timeout)
            .await
    }

    pub async fn send_input(
        &self,
        process: ProcessSelector,
        input: ProcessInput,
    ) -> Result<(), EnvdError> {
        let req = SendInputRequest {
            process: Some(process),
            input: Some(input),
        };
        self.unary::<_, serde_json::Value>("process.Process/SendInput", &req, None)
            .await
            .map(|_| ())
    }

    pub async fn close_stdin(&self, process: ProcessSelector) -> Result<(), EnvdError> {
        let req = CloseStdinRequest {
            process: Some(process),
        };
        self.unary::<_, serde_json::Value>("process.Process/CloseStdin", &req, None)
            .await
            .map(|_| ())
    }

    pub async fn send_signal(
        &self,
        process: ProcessSelector,
        signal: Signal,
    ) -> Result<(), EnvdError> {
        let req = SendSignalRequest {
            process: Some(process),
            signal,
        };
        self.unary::<_, serde_json::Value>("process.Process/SendSignal", &req, None)
            .await
            .map(|_| ())
    }

    /// `process.Process/Update`: resizes a PTY process's terminal.
    pub async fn resize_pty(
        &self,
        process: ProcessSelector,
        cols: u32,
        rows: u32,
    ) -> Result<(), EnvdError> {
        let req = UpdateRequest {
            process: Some(process),
            pty: Some(Pty {
                size: Some(PtySize { cols, rows }),
            }),
        };
        self.unary::<_, serde_json::Value>("process.Process/Update", &req, None)
            .await
            .map(|_| ())
    }

    pub async fn list(&self) -> Result<Vec<ProcessInfo>, EnvdError> {
        let resp: ListResponse = self
            .unary("process.Process/List", &ListRequest {}, None)
            .await?;
        Ok(resp.processes)
    }

    pub async fn stat(&self, path: &str, user: Option<&str>) -> Result<EntryInfo, EnvdError> {
        let req = PathRequest { path: path.into() };
        let resp: EntryResponse = self.unary("filesystem.Filesystem/Stat", &req, user).await?;
        resp.entry
            .ok_or_else(|| EnvdError::Protocol("Stat response without entry".into()))
    }

    pub async fn list_dir(
        &self,
        path: &str,
        depth: u32,
        user: Option<&str>,
    ) -> Result<Vec<EntryInfo>, EnvdError> {
        let req = ListDirRequest {
            path: path.into(),
            depth,
        };
        let resp: ListDirResponse = self
            .unary("filesystem.Filesystem/ListDir", &req, user)
            .await?;
        Ok(resp.entries)
    }

    /// Creates a directory and its parents. Fails with `already_exists` if it exists.
    pub async fn make_dir(&self, path: &str, user: Option<&str>) -> Result<EntryInfo, EnvdError> {
        let req = PathRequest { path: path.into() };
        let resp: EntryResponse = self
            .unary("filesystem.Filesystem/MakeDir", &req, user)
            .await?;
        resp.entry
            .ok_or_else(|| EnvdError::Protocol("MakeDir response without entry".into()))
    }

    /// Removes recursively; a missing path is not an error.
    pub async fn remove(&self, path: &str, user: Option<&str>) -> Result<(), EnvdError> {
        let req = PathRequest { path: path.into() };
        self.unary::<_, serde_json::Value>("filesystem.Filesystem/Remove", &req, user)
            .await
            .map(|_| ())
    }

    pub async fn rename(
        &self,
        source: &str,
        destination: &str,
        user: Option<&str>,
    ) -> Result<EntryInfo, EnvdError> {
        let req = MoveRequest {
            source: source.into(),
            destination: destination.into(),
        };
        let resp: EntryResponse = self.unary("filesystem.Filesystem/Move", &req, user).await?;
        resp.entry
            .ok_or_else(|| EnvdError::Protocol("Move response without entry".into()))
    }

    fn files_url(&self, path: &str, user: Option<&str>) -> Result<url::Url, EnvdError> {
        let mut url = url::Url::parse(&format!("{}/files", self.base))
            .map_err(|e| EnvdError::Protocol(format!("bad agent address: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("path", path);
            if let Some(user) = user {
                query.append_pair("username", user);
            }
        }
        Ok(url)
    }

    /// `GET /files`: the file's bytes as a stream.
    pub async fn read_file(&self, path: &str, user: Option<&str>) -> Result<ByteStream, EnvdError> {
        let url = self.files_url(path, user)?;
        let mut req = self.http.get(url);
        if let Some(token) = &self.access_token {
            req = req.header("X-Access-Token", token);
        }
        let resp = check_http(req.send().await?).await?;
        Ok(Box::pin(
            resp.bytes_stream().map(|r| r.map_err(EnvdError::from)),
        ))
    }

    /// `POST /files` with an `application/octet-stream` body: creates parents, overwrites.
    pub async fn write_file<S>(
        &self,
        path: &str,
        user: Option<&str>,
        body: S,
    ) -> Result<Vec<WrittenFile>, EnvdError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let url = self.files_url(path, user)?;
        let mut req = self
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(token) = &self.access_token {
            req = req.header("X-Access-Token", token);
        }
        let resp = check_http(req.send().await?).await?;
        let bytes = read_body(resp, MAX_MESSAGE_BYTES).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| EnvdError::Protocol(format!("invalid /files response: {e}")))
    }
}

/// Reads a whole response body of at most `limit` bytes. The agent lives in a sandbox whose root
/// can replace it, so an answer is never buffered without bound: a longer body (or a
/// Content-Length over the limit) is a protocol error, and the rest is not read.
async fn read_body(resp: reqwest::Response, limit: usize) -> Result<Bytes, EnvdError> {
    let too_long = || EnvdError::Protocol(format!("response body exceeds the {limit} byte limit"));
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_long());
    }
    let mut body = bytes::BytesMut::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The start of an error response's body (at most [`MAX_ERROR_BODY_BYTES`]), for its message.
async fn read_error_body(resp: reqwest::Response) -> Bytes {
    let mut body = bytes::BytesMut::new();
    let mut chunks = resp.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ERROR_BODY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    body.freeze()
}

/// Error from a non-2xx RPC response: a Connect error body, else mapped from the status.
fn rpc_error(status: u16, body: &[u8]) -> EnvdError {
    match serde_json::from_slice::<ConnectError>(body) {
        Ok(err) => EnvdError::Rpc(err),
        Err(_) => EnvdError::Rpc(ConnectError::new(
            Code::from_http_status(status),
            String::from_utf8_lossy(body).into_owned(),
        )),
    }
}

async fn check_http(resp: reqwest::Response) -> Result<reqwest::Response, EnvdError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    #[derive(serde::Deserialize)]
    struct HttpErrorBody {
        message: String,
    }
    let bytes = read_error_body(resp).await;
    let message = serde_json::from_slice::<HttpErrorBody>(&bytes)
        .map(|b| b.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    Err(EnvdError::Http {
        status: status.as_u16(),
        message,
    })
}
