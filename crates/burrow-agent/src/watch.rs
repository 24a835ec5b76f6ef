//! Directory watchers on inotify: streamed (`WatchDir`) or buffered for polling
//! (`CreateWatcher`/`GetWatcherEvents`). Recursive watchers add directories created later
//! and report what was already inside them when the watch was added.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burrow_envd::proto::filesystem::{EventType, FilesystemEvent};
use burrow_envd::{Code, ConnectError};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::entry::entry_info;
use crate::users::{Names, User};

/// Buffered events per polling watcher; older events are dropped beyond this.
const MAX_BUFFERED_EVENTS: usize = 10_000;
/// Polling watchers alive at once (each holds an inotify fd until RemoveWatcher).
const MAX_POLLING_WATCHERS: usize = 256;
/// Directories a recursive watcher will add watches for.
const MAX_WATCHED_DIRS: usize = 8_192;

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DONT_FOLLOW
}

pub struct WatchOptions {
    pub root: PathBuf,
    /// Whose permissions the watches are added (and entries read) with.
    pub user: User,
    pub recursive: bool,
    pub include_entry: bool,
}

fn watch_error(root: &Path, e: io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::NotFound => {
            ConnectError::not_found(format!("path '{}' does not exist", root.display()))
        }
        io::ErrorKind::PermissionDenied => ConnectError::new(
            Code::PermissionDenied,
            format!("permission denied for '{}'", root.display()),
        ),
        _ if e.raw_os_error() == Some(libc::ENOSPC) => ConnectError::new(
            Code::ResourceExhausted,
            "inotify watch limit reached (raise fs.inotify.max_user_watches)",
        ),
        _ => ConnectError::internal(format!("cannot watch '{}': {e}", root.display())),
    }
}

/// One inotify instance plus the directory each watch descriptor stands for. Reading is
/// non-blocking, so a poll sees every change that completed before it.
pub struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    opts: WatchOptions,
    buffer: Vec<u8>,
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }
}

impl Watcher {
    pub fn new(opts: WatchOptions) -> Result<Self, ConnectError> {
        let meta = std::fs::metadata(&opts.root).map_err(|e| watch_error(&opts.root, e))?;
        if !meta.is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "path '{}' is not a directory",
                opts.root.display()
            )));
        }
        let inotify = Inotify::init().map_err(|e| watch_error(&opts.root, e))?;
        let mut watcher = Self {
            inotify,
            dirs: HashMap::new(),
            opts,
            buffer: vec![0u8; 16 * 1024],
        };
        let root = watcher.opts.root.clone();
        watcher.add_dir(&root, None)?;
        Ok(watcher)
    }

    /// Watches `dir` (and, when recursive, its subdirectories). With `found`, entries
    /// already present are reported as created (and written, for non-empty files): they
    /// appeared before the watch could see them.
    fn add_dir(
        &mut self,
        dir: &Path,
        mut found: Option<&mut Vec<FilesystemEvent>>,
    ) -> Result<(), ConnectError> {
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            if self.dirs.len() >= MAX_WATCHED_DIRS {
                break;
            }
            let wd = self
                .inotify
                .watches()
                .add(&dir, mask())
                .map_err(|e| watch_error(&dir, e))?;
            self.dirs.insert(wd, dir.clone());
            if !self.opts.recursive {
                continue;
            }
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for child in read.flatten() {
                let Ok(kind) = child.file_type() else {
                    continue;
                };
                let path = child.path();
                if let Some(out) = found.as_deref_mut() {
                    out.push(self.event(&path, EventType::Create));
                    let non_empty = child.metadata().is_ok_and(|m| m.is_file() && m.len() > 0);
                    if non_empty {
                        out.push(self.event(&path, EventType::Write));
                    }
                }
                if kind.is_dir() {
                    pending.push(path);
                }
            }
        }
        Ok(())
    }

    fn event(&self, full: &Path, event_type: EventType) -> FilesystemEvent {
        let name = full
            .strip_prefix(&self.opts.root)
            .unwrap_or(full)
            .to_string_lossy()
            .into_owned();
        let wants_entry = self.opts.include_entry
            && event_type != EventType::Remove
            && event_type != EventType::Rename;
        FilesystemEvent {
            name,
            event_type,
            entry: wants_entry
                .then(|| entry_info(full, &Names::load()).ok())
                .flatten(),
        }
    }

    /// Reads every queued inotify event without blocking. New subdirectories are watched
    /// and entries read with the watching user's permissions.
    pub fn poll(&mut self) -> io::Result<Vec<FilesystemEvent>> {
        let user = self.opts.user.clone();
        crate::creds::as_user(&user, || self.poll_queue())?
    }

    fn poll_queue(&mut self) -> io::Result<Vec<FilesystemEvent>> {
        let mut out = Vec::new();
        loop {
            let mut buffer = std::mem::take(&mut self.buffer);
            let raw: Vec<(WatchDescriptor, EventMask, Option<std::ffi::OsString>)> =
                match self.inotify.read_events(&mut buffer) {
                    Ok(events) => events
                        .map(|e| (e.wd, e.mask, e.name.map(|n| n.to_os_string())))
                        .collect(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.buffer = buffer;
                        return Ok(out);
                    }
                    Err(e) => {
                        self.buffer = buffer;
                        return Err(e);
                    }
                };
            self.buffer = buffer;
            for (wd, mask, name) in raw {
                self.handle(wd, mask, name, &mut out);
            }
        }
    }

    fn handle(
        &mut self,
        wd: WatchDescriptor,
        mask: EventMask,
        name: Option<std::ffi::OsString>,
        out: &mut Vec<FilesystemEvent>,
    ) {
        if mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&wd);
            return;
        }
        let (Some(dir), Some(name)) = (self.dirs.get(&wd), name) else {
            return;
        };
        let full = dir.join(name);
        let event_type = if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            EventType::Create
        } else if mask.contains(EventMask::MODIFY) {
            EventType::Write
        } else if mask.contains(EventMask::DELETE) {
            EventType::Remove
        } else if mask.contains(EventMask::MOVED_FROM) {
            EventType::Rename
        } else if mask.contains(EventMask::ATTRIB) {
            EventType::Chmod
        } else {
            return;
        };
        out.push(self.event(&full, event_type));
        let new_dir = self.opts.recursive
            && event_type == EventType::Create
            && mask.contains(EventMask::ISDIR);
        if new_dir {
            // A directory that vanished again is simply not watched.
            let _ = self.add_dir(&full, Some(out));
        }
    }
}

/// Streams a watcher's events until the receiver is dropped.
pub fn stream_watch(watcher: Watcher) -> Result<mpsc::Receiver<FilesystemEvent>, ConnectError> {
    // SAFETY: the Watcher owns its inotify fd, which stays open and unchanged for as long
    // as the AsyncFd owns the Watcher.
    let mut fd = unsafe { AsyncFd::register(watcher) }.map_err(|e| {
        ConnectError::internal(format!("cannot poll inotify: {}", io::Error::from(e)))
    })?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let events = tokio::select! {
                ready = fd.readable_mut() => {
                    let Ok(mut guard) = ready else { return };
                    // poll() reads until the kernel queue is empty, so readiness can be
                    // cleared afterwards (tokio keeps any readiness that arrived since).
                    let polled = guard.get_inner_mut().poll();
                    guard.clear_ready();
                    match polled {
                        Ok(events) => events,
                        Err(_) => return,
                    }
                }
                _ = tx.closed() => return,
            };
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

struct PollingWatcher {
    watcher: Watcher,
    events: Vec<FilesystemEvent>,
}

/// Watchers created by `CreateWatcher`, drained by `GetWatcherEvents`.
#[derive(Default)]
pub struct WatcherTable {
    watchers: Mutex<HashMap<String, PollingWatcher>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl WatcherTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PollingWatcher>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails when no further watcher may be created (checked again by [`Self::insert`]).
    pub fn check_capacity(&self) -> Result<(), ConnectError> {
        if self.lock().len() >= MAX_POLLING_WATCHERS {
            return Err(too_many_watchers());
        }
        Ok(())
    }

    /// Keeps `watcher` for polling; returns its id.
    pub fn insert(&self, watcher: Watcher) -> Result<String, ConnectError> {
        let n = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("w{n}-{:x}", rand_suffix());
        let polling = PollingWatcher {
            watcher,
            events: Vec::new(),
        };
        let mut table = self.lock();
        if table.len() >= MAX_POLLING_WATCHERS {
            return Err(too_many_watchers());
        }
        table.insert(id.clone(), polling);
        Ok(id)
    }

    /// Everything that happened since the last call.
    pub fn drain(&self, id: &str) -> Result<Vec<FilesystemEvent>, ConnectError> {
        let mut table = self.lock();
        let polling = table
            .get_mut(id)
            .ok_or_else(|| ConnectError::not_found(format!("watcher '{id}' not found")))?;
        let fresh = polling
            .watcher
            .poll()
            .map_err(|e| ConnectError::internal(format!("reading watcher events failed: {e}")))?;
        polling.events.extend(fresh);
        let overflow = polling.events.len().saturating_sub(MAX_BUFFERED_EVENTS);
        polling.events.drain(..overflow);
        Ok(std::mem::take(&mut polling.events))
    }

    pub fn remove(&self, id: &str) -> Result<(), ConnectError> {
        match self.lock().remove(id) {
            Some(_) => Ok(()),
            None => Err(ConnectError::not_found(format!("watcher '{id}' not found"))),
        }
    }
}

fn too_many_watchers() -> ConnectError {
    ConnectError::new(
        Code::ResourceExhausted,
        format!(
            "too many watchers ({MAX_POLLING_WATCHERS}); remove unused ones with RemoveWatcher"
        ),
    )
}

/// Unpredictable ids so one client cannot guess another's watcher.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
