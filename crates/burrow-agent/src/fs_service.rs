//! Handlers of `filesystem.Filesystem`.

use std::path::{Path, PathBuf};

use axum::response::Response;
use burrow_envd::proto::filesystem::{
    CreateWatcherRequest, CreateWatcherResponse, Empty, EntryInfo, EntryResponse,
    GetWatcherEventsRequest, GetWatcherEventsResponse, ListDirRequest, ListDirResponse,
    MoveRequest, PathRequest, RemoveResponse, RemoveWatcherRequest, RemoveWatcherResponse,
    WatchDirRequest, WatchDirResponse,
};
use burrow_envd::{Code, ConnectError};
use tokio::sync::mpsc;

use crate::entry::{create_dirs, entry_info, io_error};
use crate::paths;
use crate::rpc::{CallContext, spawn_stream, stream_error};
use crate::state::SharedState;
use crate::users::{Names, User};
use crate::watch::{WatchOptions, Watcher, stream_watch};

fn resolve(
    state: &SharedState,
    ctx: &CallContext,
    path: &str,
) -> Result<(User, PathBuf), ConnectError> {
    let user = ctx.user(state)?;
    let resolved = paths::resolve(path, &user, None)?;
    Ok((user, resolved))
}

/// Runs blocking filesystem work off the async thread, with `user`'s permissions.
async fn blocking<T: Send + 'static>(
    user: User,
    work: impl FnOnce() -> Result<T, ConnectError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(move || {
        crate::creds::as_user(&user, work).map_err(|e| ConnectError::internal(e.to_string()))?
    })
    .await
    .map_err(|e| ConnectError::internal(format!("filesystem task failed: {e}")))?
}

fn stat_entry(path: &Path) -> Result<EntryInfo, ConnectError> {
    entry_info(path, &Names::load()).map_err(|e| io_error(path, &e))
}

pub async fn stat(
    state: &SharedState,
    ctx: &CallContext,
    req: PathRequest,
) -> Result<EntryResponse, ConnectError> {
    let (user, path) = resolve(state, ctx, &req.path)?;
    blocking(user, move || {
        Ok(EntryResponse {
            entry: Some(stat_entry(&path)?),
        })
    })
    .await
}

pub async fn make_dir(
    state: &SharedState,
    ctx: &CallContext,
    req: PathRequest,
) -> Result<EntryResponse, ConnectError> {
    let (user, path) = resolve(state, ctx, &req.path)?;
    blocking(user, move || {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(ConnectError::new(
                    Code::AlreadyExists,
                    format!("directory '{}' already exists", path.display()),
                ));
            }
            Ok(_) => {
                return Err(ConnectError::invalid_argument(format!(
                    "path '{}' already exists and is not a directory",
                    path.display()
                )));
            }
            Err(_) => {}
        }
        create_dirs(&path).map_err(|e| io_error(&path, &e))?;
        Ok(EntryResponse {
            entry: Some(stat_entry(&path)?),
        })
    })
    .await
}

pub async fn move_entry(
    state: &SharedState,
    ctx: &CallContext,
    req: MoveRequest,
) -> Result<EntryResponse, ConnectError> {
    let (user, source) = resolve(state, ctx, &req.source)?;
    let destination = paths::resolve(&req.destination, &user, None)?;
    blocking(user, move || {
        std::fs::symlink_metadata(&source).map_err(|e| io_error(&source, &e))?;
        if let Some(parent) = destination.parent() {
            create_dirs(parent).map_err(|e| io_error(parent, &e))?;
        }
        std::fs::rename(&source, &destination).map_err(|e| io_error(&destination, &e))?;
        Ok(EntryResponse {
            entry: Some(stat_entry(&destination)?),
        })
    })
    .await
}

pub async fn list_dir(
    state: &SharedState,
    ctx: &CallContext,
    req: ListDirRequest,
) -> Result<ListDirResponse, ConnectError> {
    let (user, path) = resolve(state, ctx, &req.path)?;
    let depth = req.depth.max(1);
    blocking(user, move || {
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, &e))?;
        if !meta.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "path '{}' is not a directory",
                path.display()
            )));
        }
        let names = Names::load();
        let mut entries = Vec::new();
        walk(&path, 1, depth, &names, &mut entries)?;
        Ok(ListDirResponse { entries })
    })
    .await
}

/// Lexical pre-order walk (like Go's filepath.WalkDir), `depth` levels deep.
/// Symlinked directories are listed but not entered, so links cannot loop.
fn walk(
    dir: &Path,
    level: u32,
    depth: u32,
    names: &Names,
    entries: &mut Vec<EntryInfo>,
) -> Result<(), ConnectError> {
    let read = std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))?;
    let mut children: Vec<_> = read.flatten().map(|e| e.path()).collect();
    children.sort();
    for child in children {
        let Ok(info) = entry_info(&child, names) else {
            continue;
        };
        let descend = level < depth
            && !info.is_symlink
            && info.file_type == burrow_envd::proto::filesystem::FileType::Directory;
        entries.push(info);
        if descend {
            // A subdirectory that vanished or is unreadable is skipped, not fatal.
            let _ = walk(&child, level + 1, depth, names, entries);
        }
    }
    Ok(())
}

pub async fn remove(
    state: &SharedState,
    ctx: &CallContext,
    req: PathRequest,
) -> Result<RemoveResponse, ConnectError> {
    let (user, path) = resolve(state, ctx, &req.path)?;
    if path == Path::new("/") {
        return Err(ConnectError::invalid_argument("refusing to remove '/'"));
    }
    blocking(user, move || {
        let result = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        result.map_err(|e| io_error(&path, &e))?;
        Ok(RemoveResponse {})
    })
    .await
}

fn watch_options(
    state: &SharedState,
    ctx: &CallContext,
    req: &WatchDirRequest,
) -> Result<WatchOptions, ConnectError> {
    let (user, root) = resolve(state, ctx, &req.path)?;
    Ok(WatchOptions {
        root,
        user,
        recursive: req.recursive,
        include_entry: req.include_entry,
    })
}

/// Adds the watches (a recursive walk) on a blocking thread with the user's permissions.
async fn new_watcher(opts: WatchOptions) -> Result<Watcher, ConnectError> {
    blocking(opts.user.clone(), move || Watcher::new(opts)).await
}

pub async fn watch_dir(state: &SharedState, ctx: CallContext, req: WatchDirRequest) -> Response {
    let watcher = match watch_options(state, &ctx, &req) {
        Ok(opts) => new_watcher(opts).await,
        Err(e) => Err(e),
    };
    let mut events = match watcher.and_then(stream_watch) {
        Ok(rx) => rx,
        Err(e) => return stream_error(&e),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let start = WatchDirResponse::Start(Empty {});
        if tx.send(Ok(start)).await.is_err() {
            return;
        }
        while let Some(ev) = events.recv().await {
            let msg = WatchDirResponse::Filesystem(Box::new(ev));
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    });
    spawn_stream(&ctx, rx, || WatchDirResponse::Keepalive(Empty {}))
}

pub async fn create_watcher(
    state: &SharedState,
    ctx: &CallContext,
    req: CreateWatcherRequest,
) -> Result<CreateWatcherResponse, ConnectError> {
    let opts = watch_options(state, ctx, &req)?;
    state.watchers.check_capacity()?;
    let watcher = new_watcher(opts).await?;
    let watcher_id = state.watchers.insert(watcher)?;
    Ok(CreateWatcherResponse { watcher_id })
}

pub async fn get_watcher_events(
    state: &SharedState,
    _ctx: &CallContext,
    req: GetWatcherEventsRequest,
) -> Result<GetWatcherEventsResponse, ConnectError> {
    Ok(GetWatcherEventsResponse {
        events: state.watchers.drain(&req.watcher_id)?,
    })
}

pub async fn remove_watcher(
    state: &SharedState,
    _ctx: &CallContext,
    req: RemoveWatcherRequest,
) -> Result<RemoveWatcherResponse, ConnectError> {
    state.watchers.remove(&req.watcher_id)?;
    Ok(RemoveWatcherResponse {})
}
