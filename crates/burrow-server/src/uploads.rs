//! Content-addressed uploads for template builds (`<data_dir>/uploads/`): build contexts, rootfs
//! tarballs and OCI layout tars, named by the sha256 of their bytes. API builds read files only
//! from here, never from a path on the server's host.
//!
//! The directory is 0700 and every file in it 0600: an upload or an extracted context may hold
//! setuid-root files (tar headers carry owner and mode), which must never be reachable by host
//! users. Extracted contexts live in per-build scratch dirs here and are removed after the build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use burrow_types::is_valid_sha256_hex;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{HttpError, ServeError};
use crate::extract::payload_too_large;

/// Uploads no build has used for this long are removed (at start and on each new upload).
const KEEP_UNUSED: Duration = Duration::from_secs(24 * 3600);
const UPLOAD_SUFFIX: &str = ".tar";
/// Scratch entries (partial uploads, extracted contexts) start with a dot.
pub const SCRATCH_PREFIX: &str = ".";

#[derive(Debug, Clone)]
pub struct UploadStore {
    dir: PathBuf,
}

impl UploadStore {
    /// Opens `<data_dir>/uploads` (0700), removing scratch left by a crash and stale uploads.
    pub fn open(data_dir: &Path) -> Result<Self, ServeError> {
        let dir = data_dir.join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(ServeError::io(format!("creating {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(ServeError::io(format!("chmod 0700 {}", dir.display())))?;
        let store = Self { dir };
        store.remove_stale(true);
        Ok(store)
    }

    /// Where upload `sha256` of workspace `owner` (`None`: the operator's, server-wide) is (or
    /// would be) stored; 400 for a malformed hash. Each workspace has its own uploads: another
    /// workspace cannot learn whether some content was uploaded (by asking for its hash), nor
    /// build from it without sending the bytes itself.
    pub fn path(&self, owner: Option<&str>, sha256: &str) -> Result<PathBuf, HttpError> {
        if !is_valid_sha256_hex(sha256) {
            return Err(HttpError::bad_request(format!(
                "'{sha256}' is not a sha256: uploads are named by 64 lowercase hex digits"
            )));
        }
        Ok(match owner {
            // Workspace ids are `ws_` + [a-z0-9]: safe in a file name, never a hash.
            Some(owner) => self.dir.join(format!("{owner}-{sha256}{UPLOAD_SUFFIX}")),
            None => self.dir.join(format!("{sha256}{UPLOAD_SUFFIX}")),
        })
    }

    /// Size of upload `sha256` of `owner`, if the server has it.
    pub fn size(&self, owner: Option<&str>, sha256: &str) -> Result<Option<u64>, HttpError> {
        match std::fs::metadata(self.path(owner, sha256)?) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HttpError::internal(format!("reading upload {sha256}: {e}"))),
        }
    }

    /// Stores `body` as upload `sha256`, streamed to a 0600 file in a scratch dir and renamed
    /// into place only once it hashed to `sha256` (else 400) and looks like a tar or tar.gz;
    /// over `limit` bytes it is dropped with a 413. Returns its size.
    pub async fn store<E: std::fmt::Display>(
        &self,
        owner: Option<&str>,
        sha256: &str,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<u64, HttpError> {
        let target = self.path(owner, sha256)?;
        self.write(&target, Some(sha256), body, limit).await
    }

    /// Stores `body` at `target` (a path this store gave out) like [`Self::store`], without
    /// checking its hash: for uploads named by something else than their bytes' sha256 (E2B's
    /// `filesHash` hashes the files' metadata and contents, not the tar).
    pub async fn store_at<E: std::fmt::Display>(
        &self,
        target: &Path,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<u64, HttpError> {
        self.write(target, None, body, limit).await
    }

    async fn write<E: std::fmt::Display>(
        &self,
        target: &Path,
        sha256: Option<&str>,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        limit: u64,
    ) -> Result<u64, HttpError> {
        let scratch = self.scratch()?;
        let partial = scratch.path().join("upload");
        let io = |what: &'static str| {
            move |e: std::io::Error| HttpError::internal(format!("{what} the upload: {e}"))
        };
        let mut file = tokio::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .await
            .map_err(io("creating"))?;
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(512);
        let mut total: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| HttpError::bad_request(format!("reading the upload body: {e}")))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_large(limit));
            }
            if head.len() < 512 {
                let take = (512 - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io("writing"))?;
        }
        file.sync_all().await.map_err(io("syncing"))?;
        drop(file);
        let got = hex::encode(hasher.finalize());
        if let Some(sha256) = sha256
            && got != sha256
        {
            return Err(HttpError::bad_request(format!(
                "the body's sha256 is {got}, not the {sha256} in the URL (truncated or changed upload?)"
            )));
        }
        burrow_templates::detect_format(&head)
            .map_err(|e| HttpError::bad_request(format!("the upload is not usable: {e}")))?;
        tokio::fs::rename(&partial, target)
            .await
            .map_err(io("storing"))?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.remove_stale(false);
            drop(scratch);
        });
        Ok(total)
    }

    /// A fresh scratch dir (0700) for a partial upload or an extracted context; removed on drop.
    pub fn scratch(&self) -> Result<tempfile::TempDir, HttpError> {
        tempfile::Builder::new()
            .prefix(".scratch-")
            .tempdir_in(&self.dir)
            .map_err(|e| HttpError::internal(format!("creating a scratch dir in uploads: {e}")))
    }

    /// Marks an upload as just used, so it is kept another [`KEEP_UNUSED`].
    pub fn touch(&self, path: &Path) {
        if let Ok(file) = std::fs::File::options().append(true).open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Removes uploads unused for [`KEEP_UNUSED`], and (at start, when no build runs) scratch.
    pub fn remove_stale(&self, with_scratch: bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let removed = if name.starts_with(SCRATCH_PREFIX) {
                if !with_scratch {
                    continue;
                }
                match entry.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                    _ => std::fs::remove_file(&path),
                }
            } else {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > KEEP_UNUSED);
                if !old {
                    continue;
                }
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), "removing a stale upload: {e}");
            }
        }
    }
}

/// 413 for an upload over the build upload limit.
pub fn too_large(limit: u64) -> HttpError {
    let mut error = payload_too_large();
    error.body.message = format!(
        "the upload is larger than the server's build upload limit of {limit} bytes (burrow serve --max-build-upload-mb)"
    );
    error
}
