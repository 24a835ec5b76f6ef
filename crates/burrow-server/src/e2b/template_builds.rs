//! E2B's template build API over burrow's native builds: a build the SDK requested waits here (in
//! memory: a pending or running build does not survive a daemon restart, the templates it made
//! do) for its uploads and steps; then its steps become burrow build steps, its uploads one build
//! context, and it runs through the same code as `POST /v1/templates`. The result is an
//! ordinary burrow template, owned by the workspace whose key built it.
//!
//! Uploads: the SDK uploads each COPY source as a tar to a URL this server hands out (like a
//! presigned URL: a random single-use token bound to the workspace and the files hash, valid for
//! an hour, is its only authorization). They are stored with the workspace's uploads, named by
//! E2B's `filesHash` (which hashes the files, not the tar), so a later build of the same files
//! skips the upload.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use burrow_e2b::{
    BackendError, BuildLogEntry, BuildState, LogLevel, TemplateBuildCreated, TemplateBuildSpec,
    TemplateBuildStatus, TemplateStep,
};
use burrow_types::{BuildStepSpec, TemplateBuildEvent, TemplateBuildRequest, TemplateSource};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::error::HttpError;
use crate::state::AppState;

/// How long an upload URL is good for (E2B's SDKs allow an upload an hour).
const UPLOAD_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Finished builds (and builds never started) are forgotten after this long.
const KEEP_BUILDS: Duration = Duration::from_secs(24 * 3600);

/// The E2B builds this daemon knows, and the upload URLs it handed out.
#[derive(Default)]
pub struct TemplateBuilds {
    builds: Mutex<HashMap<String, Build>>,
    tokens: Mutex<HashMap<String, UploadToken>>,
}

struct Build {
    /// The workspace that requested it (`None`: the operator).
    owner: Option<String>,
    template: String,
    state: BuildState,
    entries: Vec<BuildLogEntry>,
    reason: Option<String>,
    created: Instant,
}

struct UploadToken {
    owner: Option<String>,
    files_hash: String,
    expires: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// Where an E2B upload of `owner` is stored: in the uploads directory, apart from the native
/// uploads (which are named by their bytes' sha256) by an `e2b` in the name.
fn e2b_upload_path(
    state: &AppState,
    owner: Option<&str>,
    files_hash: &str,
) -> Result<PathBuf, BackendError> {
    let namespace = match owner {
        Some(workspace) => format!("{workspace}-e2b"),
        None => "e2b".to_string(),
    };
    state
        .uploads
        .path(Some(&namespace), files_hash)
        .map_err(|e| http_error(e, ""))
}

/// Maps the native API's errors; `name` names the template of a 404.
fn http_error(e: impl Into<HttpError>, name: &str) -> BackendError {
    let e: HttpError = e.into();
    let message = e.body.message;
    match e.status {
        StatusCode::NOT_FOUND => BackendError::TemplateNotFound(name.to_string()),
        StatusCode::BAD_REQUEST => BackendError::InvalidRequest(message),
        StatusCode::CONFLICT => BackendError::Conflict(message),
        StatusCode::FORBIDDEN => BackendError::Forbidden(message),
        StatusCode::PAYLOAD_TOO_LARGE => BackendError::TooLarge(message),
        _ => BackendError::Internal(message),
    }
}

impl TemplateBuilds {
    /// `POST /v3/templates`: checks the name and registers a waiting build.
    pub async fn request(
        &self,
        state: &AppState,
        owner: Option<&str>,
        name: &str,
    ) -> Result<TemplateBuildCreated, BackendError> {
        burrow_core::validate::template_name(name).map_err(|e| http_error(e, name))?;
        let taken = || {
            BackendError::Conflict(format!(
                "template '{name}' already exists: burrow does not rebuild a template in place; \
                 delete it first (burrow template rm {name}) or build under another name"
            ))
        };
        let held = state
            .store
            .template_owner(name)
            .await
            .map_err(|e| BackendError::Internal(format!("state database: {e}")))?;
        if held.is_some_and(|o| Some(o.as_str()) != owner) {
            return Err(taken());
        }
        let templates = state.templates.clone();
        let lookup = name.to_string();
        let exists = tokio::task::spawn_blocking(move || templates.get(&lookup).is_ok())
            .await
            .map_err(|e| BackendError::Internal(format!("template lookup task: {e}")))?;
        if exists {
            return Err(taken());
        }
        let build_id = random_hex(16);
        let mut builds = lock(&self.builds);
        builds.retain(|_, b| b.state == BuildState::Building || b.created.elapsed() < KEEP_BUILDS);
        builds.insert(
            build_id.clone(),
            Build {
                owner: owner.map(str::to_string),
                template: name.to_string(),
                state: BuildState::Waiting,
                entries: Vec::new(),
                reason: None,
                created: Instant::now(),
            },
        );
        Ok(TemplateBuildCreated {
            template_id: name.to_string(),
            build_id,
        })
    }

    /// `GET /templates/{id}/files/{hash}`: `None` if `owner` has these files, else a token for
    /// the upload URL.
    pub fn files(
        &self,
        state: &AppState,
        owner: Option<&str>,
        template_id: &str,
        files_hash: &str,
    ) -> Result<Option<String>, BackendError> {
        let known = lock(&self.builds)
            .values()
            .any(|b| b.template == template_id && b.owner.as_deref() == owner);
        if !known {
            return Err(BackendError::TemplateNotFound(template_id.to_string()));
        }
        let path = e2b_upload_path(state, owner, files_hash)?;
        if path.exists() {
            state.uploads.touch(&path);
            return Ok(None);
        }
        let token = random_hex(32);
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, t| t.expires > Instant::now());
        tokens.insert(
            token.clone(),
            UploadToken {
                owner: owner.map(str::to_string),
                files_hash: files_hash.to_string(),
                expires: Instant::now() + UPLOAD_TOKEN_TTL,
            },
        );
        Ok(Some(token))
    }

    /// The `PUT` to an upload URL: stores the tar (or tar.gz) under the token's workspace and
    /// files hash. The token is used up by the attempt.
    pub async fn receive(
        &self,
        state: &AppState,
        token: &str,
        content_length: Option<u64>,
        body: axum::body::Body,
    ) -> Result<(), BackendError> {
        let grant = lock(&self.tokens)
            .remove(token)
            .filter(|t| t.expires > Instant::now())
            .ok_or_else(|| {
                BackendError::Forbidden(
                    "this upload URL is unknown, used or expired: ask for a new one \
                     (GET /templates/{templateID}/files/{hash})"
                        .to_string(),
                )
            })?;
        let limit = state.config.max_build_upload_bytes;
        if content_length.is_some_and(|len| len > limit) {
            return Err(http_error(crate::uploads::too_large(limit), ""));
        }
        let target = e2b_upload_path(state, grant.owner.as_deref(), &grant.files_hash)?;
        state
            .uploads
            .store_at(&target, body.into_data_stream(), limit)
            .await
            .map_err(|e| http_error(e, ""))?;
        Ok(())
    }

    /// `POST /v2/templates/{id}/builds/{buildID}`: translates the steps, merges the uploads into
    /// one build context and starts the native build; its progress becomes the build's log.
    pub async fn start(
        self: &Arc<Self>,
        state: &AppState,
        principal: &burrow_core::Principal,
        template_id: &str,
        build_id: &str,
        spec: TemplateBuildSpec,
    ) -> Result<(), BackendError> {
        let owner = principal.workspace_id().map(str::to_string);
        {
            let mut builds = lock(&self.builds);
            let build = builds
                .get_mut(build_id)
                .filter(|b| b.template == template_id && b.owner == owner)
                .ok_or_else(|| BackendError::BuildNotFound(build_id.to_string()))?;
            if build.state != BuildState::Waiting {
                return Err(BackendError::InvalidRequest(
                    "build is not in waiting state".to_string(),
                ));
            }
            build.state = BuildState::Building;
        }
        match self
            .launch(state, principal, owner.as_deref(), template_id, spec)
            .await
        {
            Ok(events) => {
                let builds = self.clone();
                let build_id = build_id.to_string();
                tokio::spawn(async move { builds.follow(&build_id, events).await });
                Ok(())
            }
            Err(e) => {
                self.finish(build_id, Some(e.to_string()));
                Err(e)
            }
        }
    }

    async fn launch(
        &self,
        state: &AppState,
        principal: &burrow_core::Principal,
        owner: Option<&str>,
        name: &str,
        spec: TemplateBuildSpec,
    ) -> Result<tokio::sync::mpsc::Receiver<TemplateBuildEvent>, BackendError> {
        let parent = spec.parent.clone();
        burrow_core::validate::template_name(&parent).map_err(|e| http_error(e, &parent))?;
        burrow_core::templates::check_visible(state, principal, &parent)
            .await
            .map_err(|e| http_error(e, &parent))?;
        let templates = state.templates.clone();
        let lookup = parent.clone();
        let parent_user = tokio::task::spawn_blocking(move || templates.get(&lookup))
            .await
            .map_err(|e| BackendError::Internal(format!("template lookup task: {e}")))?
            .map_err(|e| http_error(e, &parent))?
            .user;
        let mut hashes: Vec<String> = spec
            .steps
            .iter()
            .filter_map(|s| match s {
                TemplateStep::Copy { files_hash, .. } => Some(files_hash.clone()),
                _ => None,
            })
            .collect();
        hashes.sort();
        hashes.dedup();
        let (context, listings) = if hashes.is_empty() {
            (None, HashMap::new())
        } else {
            let (sha, listings) = merge_uploads(state, owner, &hashes).await?;
            (Some(sha), listings)
        };
        let steps = to_native_steps(spec, &parent_user, &listings)?;
        let request = TemplateBuildRequest {
            name: name.to_string(),
            from: TemplateSource::Template {
                parent: parent.clone(),
                steps,
                context,
            },
        };
        crate::api::templates::start_build(state, principal, request)
            .await
            .map_err(|e| http_error(e, &parent))
    }

    /// Records the native build's events as log entries until it ends.
    async fn follow(
        &self,
        build_id: &str,
        mut events: tokio::sync::mpsc::Receiver<TemplateBuildEvent>,
    ) {
        let mut outcome = Some("the build ended without a result".to_string());
        while let Some(event) = events.recv().await {
            let (level, message) = match event {
                TemplateBuildEvent::Progress { phase, message, .. } => {
                    (LogLevel::Info, format!("[{phase}] {message}"))
                }
                TemplateBuildEvent::Done { template } => {
                    outcome = None;
                    (
                        LogLevel::Info,
                        format!("template {} is ready", template.name),
                    )
                }
                TemplateBuildEvent::Error { message, .. } => {
                    outcome = Some(message.clone());
                    (LogLevel::Error, message)
                }
            };
            if let Some(build) = lock(&self.builds).get_mut(build_id) {
                build.entries.push(BuildLogEntry {
                    timestamp: Utc::now(),
                    message,
                    level,
                });
            }
        }
        self.finish(build_id, outcome);
    }

    /// Ends a build: ready, or failed with `error`.
    fn finish(&self, build_id: &str, error: Option<String>) {
        if let Some(build) = lock(&self.builds).get_mut(build_id) {
            build.state = match error {
                None => BuildState::Ready,
                Some(_) => BuildState::Error,
            };
            build.reason = error;
        }
    }

    /// `GET /templates/{id}/builds/{buildID}/status`.
    pub fn status(
        &self,
        owner: Option<&str>,
        template_id: &str,
        build_id: &str,
        offset: usize,
        limit: usize,
        min_level: LogLevel,
    ) -> Result<TemplateBuildStatus, BackendError> {
        let builds = lock(&self.builds);
        let build = builds
            .get(build_id)
            .filter(|b| b.template == template_id && b.owner.as_deref() == owner)
            .ok_or_else(|| BackendError::BuildNotFound(build_id.to_string()))?;
        Ok(TemplateBuildStatus {
            state: build.state,
            entries: build
                .entries
                .iter()
                .skip(offset)
                .filter(|e| e.level >= min_level)
                .take(limit)
                .cloned()
                .collect(),
            reason: build.reason.clone(),
        })
    }
}

/// The paths of one upload's tar (relative, normalized) and whether each is a directory.
type Listing = BTreeMap<String, bool>;

/// Combines the uploads `hashes` of `owner` into one build context (each under a directory named
/// by its hash), stored as a native upload; returns its sha256 and each upload's listing.
async fn merge_uploads(
    state: &AppState,
    owner: Option<&str>,
    hashes: &[String],
) -> Result<(String, HashMap<String, Listing>), BackendError> {
    let mut sources = Vec::new();
    for hash in hashes {
        let path = e2b_upload_path(state, owner, hash)?;
        if !path.exists() {
            return Err(BackendError::InvalidRequest(format!(
                "the files of a COPY step (filesHash {hash}) were not uploaded: upload them to \
                 the URL GET /templates/{{templateID}}/files/{hash} returns"
            )));
        }
        state.uploads.touch(&path);
        sources.push((hash.clone(), path));
    }
    let uploads = state.uploads.clone();
    let owner = owner.map(str::to_string);
    // As for a native build's context: unpacked, at most 8 times the upload limit, so a
    // compression bomb cannot fill the disk before the build's own extraction checks it.
    let limits = MergeLimits {
        max_bytes: state.config.max_build_upload_bytes.saturating_mul(8),
        max_entries: 1_000_000,
    };
    tokio::task::spawn_blocking(move || {
        let scratch = uploads.scratch().map_err(|e| http_error(e, ""))?;
        let merged = scratch.path().join("context.tar");
        let listings =
            write_merged(&sources, &merged, limits).map_err(BackendError::InvalidRequest)?;
        let sha = file_sha256(&merged)
            .map_err(|e| BackendError::Internal(format!("hashing the build context: {e}")))?;
        let target = uploads
            .path(owner.as_deref(), &sha)
            .map_err(|e| http_error(e, ""))?;
        std::fs::rename(&merged, &target)
            .map_err(|e| BackendError::Internal(format!("storing the build context: {e}")))?;
        Ok((sha, listings))
    })
    .await
    .map_err(|e| BackendError::Internal(format!("build context task: {e}")))?
}

/// Bounds on what the uploads of one build may unpack to.
#[derive(Clone, Copy)]
struct MergeLimits {
    max_bytes: u64,
    max_entries: u64,
}

fn write_merged(
    sources: &[(String, PathBuf)],
    out: &Path,
    limits: MergeLimits,
) -> Result<HashMap<String, Listing>, String> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| format!("creating the build context: {e}"))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    let mut listings = HashMap::new();
    for (hash, path) in sources {
        let bad = |e: std::io::Error| format!("upload {hash}: {e}");
        let mut archive = tar::Archive::new(open_maybe_gzip(path).map_err(bad)?);
        let mut listing = Listing::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let mut header = entry.header().clone();
            let kind = header.entry_type();
            if matches!(kind, tar::EntryType::XGlobalHeader) {
                continue;
            }
            entries += 1;
            bytes = bytes.saturating_add(header.size().map_err(bad)?);
            if bytes > limits.max_bytes || entries > limits.max_entries {
                return Err(format!(
                    "the uploaded files unpack to more than {} bytes or {} entries (8 times \
                     --max-build-upload-mb): upload less",
                    limits.max_bytes, limits.max_entries
                ));
            }
            let raw = entry.path().map_err(bad)?.into_owned();
            let rel = relative(&raw)
                .ok_or_else(|| format!("upload {hash}: '{}' leaves the context", raw.display()))?;
            listing.insert(rel.to_string_lossy().into_owned(), kind.is_dir());
            let at = Path::new(hash).join(&rel);
            match kind {
                tar::EntryType::Link => {
                    // A hard link names another entry of the same upload: moved along with it.
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .and_then(|t| relative(&t))
                        .ok_or_else(|| {
                            format!(
                                "upload {hash}: hard link '{}' leaves the context",
                                rel.display()
                            )
                        })?;
                    builder
                        .append_link(&mut header, &at, Path::new(hash).join(target))
                        .map_err(bad)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    // Checked when the build extracts the context: it must stay inside.
                    builder.append_link(&mut header, &at, target).map_err(bad)?;
                }
                _ => builder.append_data(&mut header, &at, entry).map_err(bad)?,
            }
        }
        listings.insert(hash.clone(), listing);
    }
    builder
        .into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(|e| format!("writing the build context: {e}"))?;
    Ok(listings)
}

fn open_maybe_gzip(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.rewind()?;
    let file = std::io::BufReader::new(file);
    Ok(if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// `path` without `.` components; `None` if it is absolute or climbs with `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn is_root(user: &str) -> bool {
    matches!(user, "" | "root" | "0")
}

/// A RUN command as `user`: burrow's build runs RUN as root, E2B's as the build's user.
fn run_as(user: &str, command: &str) -> String {
    if is_root(user) {
        command.to_string()
    } else {
        format!(
            "runuser -u {} -- /bin/sh -c {}",
            sh_quote(user),
            sh_quote(command)
        )
    }
}

/// E2B's steps as burrow's. E2B runs RUN and owns COPY'd files as the build's current user (the
/// parent template's, then the last USER), unless the step names another; burrow's builder does
/// both as root, so non-root steps are wrapped in `runuser` and followed by a `chown`.
fn to_native_steps(
    spec: TemplateBuildSpec,
    parent_user: &str,
    listings: &HashMap<String, Listing>,
) -> Result<Vec<BuildStepSpec>, BackendError> {
    let mut user = parent_user.to_string();
    let mut steps = Vec::new();
    for (index, step) in spec.steps.into_iter().enumerate() {
        let invalid = |m: String| BackendError::InvalidRequest(format!("step {}: {m}", index + 1));
        match step {
            TemplateStep::Run {
                command,
                user: as_user,
            } => steps.push(BuildStepSpec::Run {
                command: run_as(as_user.as_deref().unwrap_or(&user), &command),
            }),
            TemplateStep::Copy {
                src,
                dest,
                user: owner,
                mode,
                files_hash,
            } => {
                if src.contains(['*', '?', '[']) {
                    return Err(invalid(format!(
                        "COPY '{src}': glob patterns are not supported by burrow; name the \
                         file or directory"
                    )));
                }
                let rel = relative(Path::new(&src))
                    .ok_or_else(|| invalid(format!("COPY '{src}' must be a relative path")))?;
                let rel_text = rel.to_string_lossy().into_owned();
                let listing = listings.get(&files_hash).cloned().unwrap_or_default();
                let is_dir = *listing.get(&rel_text).ok_or_else(|| {
                    invalid(format!(
                        "COPY '{src}': not in its upload (filesHash {files_hash})"
                    ))
                })?;
                steps.push(BuildStepSpec::Copy {
                    src: format!("{files_hash}/{rel_text}"),
                    dest: dest.clone(),
                });
                // What the copy created: the file, or the directory's top-level entries.
                let targets: Vec<String> = if is_dir {
                    let prefix = format!("{rel_text}/");
                    listing
                        .keys()
                        .filter_map(|p| p.strip_prefix(&prefix))
                        .filter(|child| !child.contains('/'))
                        .map(|child| Path::new(&dest).join(child).to_string_lossy().into_owned())
                        .collect()
                } else if dest.ends_with('/') {
                    let name = rel.file_name().unwrap_or_default().to_string_lossy();
                    vec![format!("{dest}{name}")]
                } else {
                    vec![dest.clone()]
                };
                if targets.is_empty() {
                    continue;
                }
                let quoted = targets
                    .iter()
                    .map(|t| sh_quote(t))
                    .collect::<Vec<_>>()
                    .join(" ");
                let owner = owner.unwrap_or_else(|| user.clone());
                if !is_root(&owner) {
                    steps.push(BuildStepSpec::Run {
                        command: format!("chown -R -- {} {quoted}", sh_quote(&owner)),
                    });
                }
                if let Some(mode) = mode {
                    // The mode is for the copied files; directories keep theirs (a file mode
                    // like 0644 would make them untraversable).
                    steps.push(BuildStepSpec::Run {
                        command: format!("find {quoted} -type f -exec chmod {mode:o} {{}} +"),
                    });
                }
            }
            TemplateStep::Env { vars } => {
                for (key, value) in vars {
                    steps.push(BuildStepSpec::Env { key, value });
                }
            }
            TemplateStep::Workdir { path } => steps.push(BuildStepSpec::Workdir { path }),
            TemplateStep::User { name } => {
                user.clone_from(&name);
                steps.push(BuildStepSpec::User { name });
            }
        }
    }
    if let Some(command) = spec.start_cmd {
        steps.push(BuildStepSpec::Start { command });
    }
    if let Some(command) = spec.ready_cmd {
        steps.push(BuildStepSpec::ReadyCommand { command });
    }
    if steps.is_empty() {
        // A template that is its parent under another name: burrow's builder wants a step.
        steps.push(BuildStepSpec::Run {
            command: "true".to_string(),
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(entries: &[(&str, bool)]) -> Listing {
        entries.iter().map(|(p, d)| (p.to_string(), *d)).collect()
    }

    #[test]
    fn steps_run_as_the_build_user_and_copies_are_owned_by_it() {
        let hash = "a".repeat(64);
        let listings = HashMap::from([(
            hash.clone(),
            listing(&[
                ("hello.txt", false),
                ("dir", true),
                ("dir/a", false),
                ("dir/s", true),
                ("dir/s/b", false),
            ]),
        )]);
        let copy =
            |src: &str, dest: &str, user: Option<&str>, mode: Option<u32>| TemplateStep::Copy {
                src: src.into(),
                dest: dest.into(),
                user: user.map(str::to_string),
                mode,
                files_hash: hash.clone(),
            };
        let spec = TemplateBuildSpec {
            parent: "base".into(),
            steps: vec![
                copy("hello.txt", "/home/user/", None, None),
                TemplateStep::Run {
                    command: "echo 'x'".into(),
                    user: None,
                },
                TemplateStep::Run {
                    command: "apt-get update".into(),
                    user: Some("root".into()),
                },
                TemplateStep::User {
                    name: "root".into(),
                },
                copy("./dir", "/app", None, Some(0o755)),
                TemplateStep::Env {
                    vars: vec![("A".into(), "1".into())],
                },
            ],
            start_cmd: Some("serve".into()),
            ready_cmd: None,
        };
        let steps = to_native_steps(spec, "user", &listings).unwrap();
        let run = |c: &str| BuildStepSpec::Run { command: c.into() };
        assert_eq!(
            steps,
            vec![
                BuildStepSpec::Copy {
                    src: format!("{hash}/hello.txt"),
                    dest: "/home/user/".into()
                },
                run("chown -R -- 'user' '/home/user/hello.txt'"),
                run(r"runuser -u 'user' -- /bin/sh -c 'echo '\''x'\'''"),
                run("apt-get update"),
                BuildStepSpec::User {
                    name: "root".into()
                },
                BuildStepSpec::Copy {
                    src: format!("{hash}/dir"),
                    dest: "/app".into()
                },
                run("find '/app/a' '/app/s' -type f -exec chmod 755 {} +"),
                BuildStepSpec::Env {
                    key: "A".into(),
                    value: "1".into()
                },
                BuildStepSpec::Start {
                    command: "serve".into()
                },
            ]
        );
        for bad in ["*.txt", "missing", "../x", "/etc/passwd"] {
            let spec = TemplateBuildSpec {
                parent: "base".into(),
                steps: vec![copy(bad, "/x", None, None)],
                start_cmd: None,
                ready_cmd: None,
            };
            assert!(to_native_steps(spec, "user", &listings).is_err(), "{bad}");
        }
    }

    #[test]
    fn merged_uploads_are_bounded_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        // 4 MiB of zeros, gzipped to a few KiB: a small upload that unpacks big.
        let upload = dir.path().join("bomb.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&upload).unwrap(),
            flate2::Compression::best(),
        );
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(4 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "zeros", std::io::repeat(0).take(4 << 20))
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        assert!(std::fs::metadata(&upload).unwrap().len() < 64 << 10);
        let sources = [("a".repeat(64), upload)];
        let limits = |max_bytes| MergeLimits {
            max_bytes,
            max_entries: 10,
        };
        let err =
            write_merged(&sources, &dir.path().join("small.tar"), limits(1 << 20)).unwrap_err();
        assert!(err.contains("unpack to more than"), "{err}");
        write_merged(&sources, &dir.path().join("fits.tar"), limits(8 << 20)).unwrap();
    }

    #[test]
    fn relative_paths_stay_inside() {
        assert_eq!(relative(Path::new("./a/b")), Some(PathBuf::from("a/b")));
        assert_eq!(relative(Path::new("a/../b")), None);
        assert_eq!(relative(Path::new("/a")), None);
        assert_eq!(relative(Path::new(".")), None);
    }
}
