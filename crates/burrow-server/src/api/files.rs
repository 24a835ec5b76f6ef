//! `/v1/sandboxes/{id}/files`: read, write, delete, list and create directories.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use burrow_envd::proto::filesystem::{EntryInfo, FileType as EnvdFileType};
use burrow_types::{ApiError, FileEntry, FileType};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{query_pairs, single_param};
use crate::error::HttpError;
use crate::extract::payload_too_large;
use crate::state::AppState;
use burrow_core::{agent, sandboxes, validate};

/// Deepest listing allowed.
const MAX_LIST_DEPTH: u32 = 16;

/// `path` (required) and `user` (optional) of a files request.
struct FileQuery {
    path: String,
    user: Option<String>,
    depth: Option<u32>,
}

fn parse_query(query: Option<&str>) -> Result<FileQuery, HttpError> {
    let pairs = query_pairs(query);
    for (key, _) in &pairs {
        if !["path", "user", "depth"].contains(&key.as_str()) {
            return Err(HttpError::bad_request(format!(
                "unknown query parameter '{key}'; use path=, user= (and depth= for listings)"
            )));
        }
    }
    let path = single_param(&pairs, "path")?.unwrap_or_default();
    validate::sandbox_path(&path)?;
    let user = single_param(&pairs, "user")?;
    if let Some(user) = &user {
        agent::validate_user(user)?;
    }
    let depth = single_param(&pairs, "depth")?
        .map(|d| {
            d.parse::<u32>()
                .ok()
                .filter(|d| (1..=MAX_LIST_DEPTH).contains(d))
                .ok_or_else(|| {
                    HttpError::bad_request(format!("depth must be 1..={MAX_LIST_DEPTH}, got '{d}'"))
                })
        })
        .transpose()?;
    Ok(FileQuery { path, user, depth })
}

pub fn to_entry(info: EntryInfo) -> FileEntry {
    FileEntry {
        file_type: match info.file_type {
            EnvdFileType::File => FileType::File,
            EnvdFileType::Directory => FileType::Dir,
            EnvdFileType::Symlink => FileType::Symlink,
            _ => FileType::Other,
        },
        name: info.name,
        path: info.path,
        size: u64::try_from(info.size).unwrap_or(0),
        mode: info.mode & 0o7777,
        owner: Some(info.owner).filter(|s| !s.is_empty()),
        group: Some(info.group).filter(|s| !s.is_empty()),
        modified_time: info.modified_time,
        symlink_target: info.symlink_target,
    }
}

/// Download a file.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Query, description = "File path (absolute, or relative to the user's home)"),
        ("user" = Option<String>, Query, description = "Read as this user (default: the template's)"),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`invalid_path`, `invalid_request` (e.g. a directory)", body = ApiError),
        (status = 403, description = "`permission_denied`: the user may not do this to the path", body = ApiError),
        (status = 404, description = "`sandbox_not_found`, `file_not_found`", body = ApiError),
    ))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let q = parse_query(query.as_deref())?;
    let sandbox = sandboxes::running_as(&state, &id, "files").await?;
    let client = agent::client(&sandbox)?;
    let stream = client
        .read_file(&q.path, q.user.as_deref())
        .await
        .map_err(|e| agent::error(e, &id))?;
    let body = Body::from_stream(stream);
    let mut response = Response::new(crate::activity::body_with_activity(
        body,
        sandbox.activity.clone(),
    ));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Upload a file (the raw request body); parents are created, an existing file is replaced.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Query, description = "File path (absolute, or relative to the user's home)"),
        ("user" = Option<String>, Query, description = "Write as this user (default: the template's)"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = FileEntry),
        (status = 400, description = "`invalid_path`, `invalid_request`", body = ApiError),
        (status = 403, description = "`permission_denied`: the user may not do this to the path", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 413, description = "`payload_too_large`", body = ApiError),
    ))]
pub async fn write(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Json<FileEntry>, HttpError> {
    let q = parse_query(query.as_deref())?;
    let limit = state.config.max_upload_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(payload_too_large());
    }
    let sandbox = sandboxes::running_as(&state, &id, "files").await?;
    let client = agent::client(&sandbox)?;

    // envd's client needs a Sync stream; a channel gives one and lets us count bytes on the way.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&too_large);
    let mut body = request.into_body().into_data_stream();
    let pump = tokio::spawn(async move {
        let mut total: u64 = 0;
        while let Some(chunk) = body.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    if total > limit {
                        // End the upload cleanly instead of failing it: a failed request stream
                        // aborts the agent request, and the agent could still be writing the
                        // prefix when the removal below ran. Ended, the agent answers once the
                        // prefix is written, and the removal comes after.
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Ok(bytes)
                }
                Err(e) => Err(std::io::Error::other(e)),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let result = client
        .write_file(
            &q.path,
            q.user.as_deref(),
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )
        .await;
    pump.abort();
    if too_large.load(Ordering::SeqCst) {
        // The agent wrote the prefix sent so far; a partial file is worse than none.
        if let Err(e) = client.remove(&q.path, q.user.as_deref()).await {
            tracing::warn!(
                sandbox = id,
                path = q.path,
                "removing a partial upload: {e}"
            );
        }
        return Err(payload_too_large());
    }
    let written = result.map_err(|e| agent::error(e, &id))?;
    let path = written
        .first()
        .map_or_else(|| q.path.clone(), |w| w.path.clone());
    let info = client
        .stat(&path, q.user.as_deref())
        .await
        .map_err(|e| agent::error(e, &id))?;
    Ok(Json(to_entry(info)))
}

/// Delete a file or a directory (recursively). Deleting a missing path succeeds.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Query, description = "Path to delete"),
        ("user" = Option<String>, Query, description = "Delete as this user"),
    ),
    responses(
        (status = 204, description = "Deleted (or was not there)"),
        (status = 400, description = "`invalid_path`, `invalid_request`", body = ApiError),
        (status = 403, description = "`permission_denied`: the user may not do this to the path", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, HttpError> {
    let q = parse_query(query.as_deref())?;
    let sandbox = sandboxes::running_as(&state, &id, "files").await?;
    agent::client(&sandbox)?
        .remove(&q.path, q.user.as_deref())
        .await
        .map_err(|e| agent::error(e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a directory.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Query, description = "Directory path"),
        ("depth" = Option<u32>, Query, description = "Levels to descend, 1-16 (default 1)"),
        ("user" = Option<String>, Query, description = "List as this user"),
    ),
    responses(
        (status = 200, body = Vec<FileEntry>),
        (status = 400, description = "`invalid_path`, `invalid_request`", body = ApiError),
        (status = 403, description = "`permission_denied`: the user may not do this to the path", body = ApiError),
        (status = 404, description = "`sandbox_not_found`, `file_not_found`", body = ApiError),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<FileEntry>>, HttpError> {
    let q = parse_query(query.as_deref())?;
    let sandbox = sandboxes::running_as(&state, &id, "files").await?;
    let entries = agent::client(&sandbox)?
        .list_dir(&q.path, q.depth.unwrap_or(1), q.user.as_deref())
        .await
        .map_err(|e| agent::error(e, &id))?;
    Ok(Json(entries.into_iter().map(to_entry).collect()))
}

/// Create a directory and its parents.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Query, description = "Directory to create"),
        ("user" = Option<String>, Query, description = "Create as this user"),
    ),
    responses(
        (status = 201, description = "Created", body = FileEntry),
        (status = 400, description = "`invalid_path`, `invalid_request`", body = ApiError),
        (status = 403, description = "`permission_denied`: the user may not do this to the path", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`file_exists`", body = ApiError),
    ))]
pub async fn mkdir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<(StatusCode, Json<FileEntry>), HttpError> {
    let q = parse_query(query.as_deref())?;
    let sandbox = sandboxes::running_as(&state, &id, "files").await?;
    let info = agent::client(&sandbox)?
        .make_dir(&q.path, q.user.as_deref())
        .await
        .map_err(|e| agent::error(e, &id))?;
    Ok((StatusCode::CREATED, Json(to_entry(info))))
}
