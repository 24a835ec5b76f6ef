//! `GET /files` (download, optional gzip) and `POST /files` (multipart or octet-stream
//! upload, optional gzip, X-Metadata-* xattrs), with token-or-signature auth.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth::FileAccess;
use crate::creds::as_user;
use crate::entry::{METADATA_XATTR_PREFIX, create_dirs};
use crate::state::SharedState;
use crate::users::User;

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    signature_expiration: Option<String>,
}

#[derive(Serialize)]
struct WrittenEntry {
    path: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

/// Error body `{"code": <status>, "message": …}`.
pub fn http_error_response(status: StatusCode, message: impl Into<String>) -> Response {
    http_error(status, message).into_response()
}

/// An HTTP error on /files, rendered as `{"code": <status>, "message": …}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

pub fn http_error(status: StatusCode, message: impl Into<String>) -> HttpError {
    HttpError {
        status,
        message: message.into(),
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, message) = (self.status, self.message);
        let body = serde_json::json!({ "code": status.as_u16(), "message": message });
        let content_type = [(header::CONTENT_TYPE, "application/json")];
        (status, content_type, body.to_string()).into_response()
    }
}

fn authorize(
    state: &SharedState,
    headers: &HeaderMap,
    q: &FilesQuery,
    operation: &str,
) -> Result<User, HttpError> {
    let access = FileAccess {
        token: state.config.access_token.as_deref(),
        path: q.path.as_deref().unwrap_or(""),
        operation,
        username: q.username.as_deref().unwrap_or(""),
        signature: q.signature.as_deref(),
        expiration: q.signature_expiration.as_deref(),
    };
    let now = chrono::Utc::now().timestamp();
    access
        .check(headers, now)
        .map_err(|msg| http_error(StatusCode::UNAUTHORIZED, msg))?;
    state
        .user(q.username.as_deref())
        .map_err(|e| http_error(StatusCode::UNAUTHORIZED, e.message))
}

fn resolve(path: &str, user: &User) -> Result<PathBuf, HttpError> {
    crate::paths::resolve(path, user, None)
        .map_err(|e| http_error(StatusCode::BAD_REQUEST, e.message))
}

/// Which encoding the client accepts: Some(true)=gzip, Some(false)=identity, None=neither.
fn negotiate_gzip(headers: &HeaderMap) -> Option<bool> {
    let Some(value) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(false);
    };
    let mut identity_ok = true;
    let mut gzip_ok = false;
    let mut star: Option<bool> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        match name.as_str() {
            "gzip" | "x-gzip" => gzip_ok = q > 0.0,
            "identity" => identity_ok = q > 0.0,
            "*" => star = Some(q > 0.0),
            _ => {}
        }
    }
    if star == Some(false) && !value.contains("identity") {
        identity_ok = false;
    }
    if gzip_ok || star == Some(true) && !value.contains("gzip") {
        Some(true)
    } else if identity_ok {
        Some(false)
    } else {
        None
    }
}

pub async fn get_files(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<FilesQuery>,
) -> Response {
    let user = match authorize(&state, &headers, &q, "read") {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let Some(raw_path) = q.path.as_deref().filter(|p| !p.is_empty()) else {
        return http_error_response(
            StatusCode::BAD_REQUEST,
            "query parameter 'path' is required",
        );
    };
    let path = match resolve(raw_path, &user) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let Some(gzip) = negotiate_gzip(&headers) else {
        return http_error_response(
            StatusCode::NOT_ACCEPTABLE,
            "no acceptable encoding found, supported: [identity, gzip]",
        );
    };
    // Opened with the user's permissions; reading the open file needs none.
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || as_user(&user, || std::fs::File::open(&path))?)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    let file = match opened {
        Ok(f) => tokio::fs::File::from_std(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return http_error_response(
                StatusCode::NOT_FOUND,
                format!("path '{}' does not exist", path.display()),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return http_error_response(
                StatusCode::FORBIDDEN,
                format!("permission denied reading '{}'", path.display()),
            );
        }
        Err(e) => {
            return http_error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot open '{}': {e}", path.display()),
            );
        }
    };
    match file.metadata().await {
        Ok(m) if m.is_dir() => {
            return http_error_response(
                StatusCode::BAD_REQUEST,
                format!("path '{}' is a directory", path.display()),
            );
        }
        Ok(_) => {}
        Err(e) => return http_error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disposition = format!(
        "inline; filename=\"{}\"",
        name.replace(['"', '\\', '\r', '\n'], "_")
    );
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::VARY, "Accept-Encoding");
    let body = if gzip {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        Body::from_stream(gzip_stream(file.into_std().await))
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024))
    };
    builder
        .body(body)
        .unwrap_or_else(|e| http_error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Writer that forwards everything written into a channel (used from blocking threads).
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn gzip_stream(mut file: std::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let mut encoder = flate2::write::GzEncoder::new(
            std::io::BufWriter::with_capacity(64 * 1024, ChannelWriter(tx)),
            flate2::Compression::fast(),
        );
        let result = std::io::copy(&mut file, &mut encoder).and_then(|_| encoder.finish()?.flush());
        if let Err(e) = result {
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// X-Metadata-<key>: <value> headers → xattr key/value pairs, validated.
fn metadata_headers(headers: &HeaderMap) -> Result<BTreeMap<String, String>, HttpError> {
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix("x-metadata-") else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| {
                http_error(
                    StatusCode::BAD_REQUEST,
                    format!("metadata '{key}' must be printable ASCII"),
                )
            })?;
        if key.is_empty() || METADATA_XATTR_PREFIX.len() + key.len() > 255 {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                format!("metadata key '{key}' is empty or too long"),
            ));
        }
        total += key.len() + value.len();
        if total > 4096 {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                "metadata exceeds 4096 bytes in total",
            ));
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Replaces the file's metadata: an upload without X-Metadata-* headers clears it (E2B).
fn apply_metadata(path: &Path, metadata: &BTreeMap<String, String>) -> std::io::Result<()> {
    for old in crate::entry::read_metadata_xattrs(path).keys() {
        let _ = rustix::fs::lremovexattr(path, format!("{METADATA_XATTR_PREFIX}{old}").as_str());
    }
    for (k, v) in metadata {
        rustix::fs::lsetxattr(
            path,
            format!("{METADATA_XATTR_PREFIX}{k}").as_str(),
            v.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

enum Chunk {
    Data(Bytes),
}

/// Receives the body chunks on a blocking thread and writes (optionally gunzipping) them.
struct FileSink {
    tx: mpsc::Sender<Chunk>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Everything runs with the user's permissions, so parents and the file are created by (and
/// belong to) the user; an existing file keeps its owner.
fn open_sink(path: PathBuf, user: &User, gzip: bool) -> FileSink {
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let user = user.clone();
    let done =
        tokio::task::spawn_blocking(move || as_user(&user, || write_chunks(&path, gzip, rx))?);
    FileSink { tx, done }
}

fn write_chunks(path: &Path, gzip: bool, mut rx: mpsc::Receiver<Chunk>) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "path is a directory",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let buffered = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut writer: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    while let Some(Chunk::Data(data)) = rx.blocking_recv() {
        writer.write_all(&data)?;
    }
    writer.flush()?;
    Ok(())
}

fn write_error(path: &Path, e: &std::io::Error) -> HttpError {
    let shown = path.display();
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => http_error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("not enough disk space to write '{shown}'"),
        ),
        _ => match e.kind() {
            std::io::ErrorKind::IsADirectory => http_error(
                StatusCode::BAD_REQUEST,
                format!("path '{shown}' is a directory"),
            ),
            std::io::ErrorKind::NotADirectory => http_error(
                StatusCode::BAD_REQUEST,
                format!("a parent of '{shown}' is not a directory"),
            ),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => http_error(
                StatusCode::BAD_REQUEST,
                format!("invalid upload body for '{shown}': {e}"),
            ),
            std::io::ErrorKind::PermissionDenied => http_error(
                StatusCode::FORBIDDEN,
                format!("permission denied writing '{shown}'"),
            ),
            _ => http_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("writing '{shown}' failed: {e}"),
            ),
        },
    }
}

/// Streams `chunks` into `path`; returns the written entry.
async fn write_one<S, E>(
    path: PathBuf,
    user: &User,
    gzip: bool,
    metadata: &BTreeMap<String, String>,
    mut chunks: S,
) -> Result<WrittenEntry, HttpError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let sink = open_sink(path.clone(), user, gzip);
    let mut body_error = None;
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(data) => {
                if sink.tx.send(Chunk::Data(data)).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(sink.tx);
    let written = sink
        .done
        .await
        .map_err(|e| http_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = written {
        return Err(write_error(&path, &e));
    }
    if let Some(e) = body_error {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            format!("reading the upload failed: {e}"),
        ));
    }
    let applied = {
        let (path, metadata, user) = (path.clone(), metadata.clone(), user.clone());
        tokio::task::spawn_blocking(move || as_user(&user, || apply_metadata(&path, &metadata))?)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    applied.map_err(|e| write_error(&path, &e))?;
    Ok(WrittenEntry {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_string_lossy().into_owned(),
        kind: "file",
        metadata: metadata.clone(),
    })
}

pub async fn post_files(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<FilesQuery>,
    body: Body,
) -> Response {
    let user = match authorize(&state, &headers, &q, "write") {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    let metadata = match metadata_headers(&headers) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("identity") || v.is_empty() => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => true,
        Some(v) => {
            return http_error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding '{v}' is not supported; use gzip or identity"),
            );
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let path_param = q.path.as_deref().filter(|p| !p.is_empty());
    let result = if content_type.starts_with("multipart/form-data") {
        let boundary = match multer::parse_boundary(&content_type) {
            Ok(b) => b,
            Err(e) => {
                return http_error_response(
                    StatusCode::BAD_REQUEST,
                    format!("invalid multipart content type: {e}"),
                );
            }
        };
        let stream = body.into_data_stream();
        let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>> =
            if gzip {
                Box::pin(gunzip_stream(stream))
            } else {
                Box::pin(stream.map(|r| r.map_err(std::io::Error::other)))
            };
        write_multipart(
            multer::Multipart::new(stream, boundary),
            path_param,
            &user,
            &metadata,
        )
        .await
    } else {
        let Some(raw) = path_param else {
            return http_error_response(
                StatusCode::BAD_REQUEST,
                "query parameter 'path' is required for non-multipart uploads",
            );
        };
        let path = match resolve(raw, &user) {
            Ok(p) => p,
            Err(r) => return r.into_response(),
        };
        write_one(path, &user, gzip, &metadata, body.into_data_stream())
            .await
            .map(|e| vec![e])
    };
    match result {
        Ok(entries) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&entries).unwrap_or_else(|_| "[]".into()),
        )
            .into_response(),
        Err(r) => r.into_response(),
    }
}

/// Decompresses a gzip body stream (multipart uploads with Content-Encoding: gzip).
fn gunzip_stream<S, E>(body: S) -> impl Stream<Item = std::io::Result<Bytes>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let (in_tx, mut in_rx) = mpsc::channel::<Result<Bytes, String>>(8);
    tokio::spawn(async move {
        let mut body = Box::pin(body);
        while let Some(chunk) = body.next().await {
            if in_tx.send(chunk.map_err(|e| e.to_string())).await.is_err() {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let mut decoder = flate2::write::GzDecoder::new(ChannelWriter(tx));
        let result = (|| -> std::io::Result<()> {
            while let Some(chunk) = in_rx.blocking_recv() {
                let chunk = chunk.map_err(std::io::Error::other)?;
                decoder.write_all(&chunk)?;
            }
            decoder.finish()?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ =
                err_tx.blocking_send(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn write_multipart(
    mut multipart: multer::Multipart<'static>,
    path_param: Option<&str>,
    user: &User,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<WrittenEntry>, HttpError> {
    let mut written = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid multipart body: {e}"),
                ));
            }
        };
        if field.name() != Some("file") {
            continue;
        }
        let target = match path_param {
            Some(p) if written.is_empty() => p.to_string(),
            Some(_) => {
                return Err(http_error(
                    StatusCode::BAD_REQUEST,
                    "several file parts with a 'path' parameter; omit 'path' and name each part with its target path",
                ));
            }
            None => match field.file_name().filter(|n| !n.is_empty()) {
                Some(name) => name.to_string(),
                None => {
                    return Err(http_error(
                        StatusCode::BAD_REQUEST,
                        "multipart file part has no filename",
                    ));
                }
            },
        };
        let path = resolve(&target, user)?;
        if !seen.insert(path.clone()) {
            return Err(http_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "path '{}' appears more than once in the upload",
                    path.display()
                ),
            ));
        }
        written.push(write_one(path, user, false, metadata, field).await?);
    }
    if written.is_empty() {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            "multipart body has no 'file' part",
        ));
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Option<bool> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
        negotiate_gzip(&h)
    }

    #[test]
    fn accept_encoding_negotiation() {
        assert_eq!(negotiate_gzip(&HeaderMap::new()), Some(false));
        assert_eq!(accept("gzip, deflate"), Some(true));
        assert_eq!(accept("br"), Some(false));
        assert_eq!(accept("identity;q=0"), None);
        assert_eq!(accept("br, *;q=0"), None);
    }
}
