//! Template builds and imports requested through the API.

use std::path::{Path, PathBuf};

use burrow_templates::{
    BuildProgress, BuildStep, ContextKind, ImportLimits, Template, TemplateError, extract_context,
    resolve_in_context,
};
use burrow_types::{BuildStepSpec, TemplateBuildEvent, TemplateBuildRequest, TemplateSource};
use tokio::sync::mpsc;

use crate::error::HttpError;
use crate::state::AppState;
use crate::step_runner::BuildSandboxes;
use burrow_core::validate;

/// Why an API build never reads a path of the server's host.
pub const SERVER_PATHS_REFUSED: &str = "an API build reads no file of the server: the build context must be uploaded (PUT /v1/templates/uploads/{sha256}, which `burrow template build` does) and named by its sha256; server paths are only read by `burrow template build --local` run as root on the server";

/// A checked build request, its inputs claimed and extracted; ready to run.
pub struct PreparedBuild {
    name: String,
    plan: Plan,
    /// Holds the claimed upload and the extracted context (0700, under `<data_dir>/uploads`);
    /// removed once the build is over.
    scratch: Option<tempfile::TempDir>,
}

enum Plan {
    Debootstrap,
    Rootfs {
        archive: PathBuf,
    },
    Oci {
        layout: PathBuf,
        reference: Option<String>,
    },
    Steps {
        parent: String,
        steps: Vec<BuildStep>,
    },
}

fn server_path(what: &str, path: &str) -> HttpError {
    HttpError::bad_request(format!(
        "{what} '{path}' is a path on the server: {SERVER_PATHS_REFUSED}"
    ))
}

fn needs_upload(what: &str) -> HttpError {
    HttpError::bad_request(format!(
        "{what} needs \"upload\": the sha256 of a tar uploaded with PUT /v1/templates/uploads/{{sha256}}"
    ))
}

/// Checks a request and prepares its inputs, before the response starts streaming, so every
/// problem with it is a plain HTTP error: a server path (400, [`SERVER_PATHS_REFUSED`]), an
/// unknown upload, an unsafe build context, a taken name or a missing parent.
/// `owner`: the workspace whose uploads the build reads (`None`: the operator's).
pub async fn prepare(
    state: &AppState,
    owner: Option<&str>,
    req: TemplateBuildRequest,
) -> Result<PreparedBuild, HttpError> {
    validate::template_name(&req.name)?;
    // The upload each source reads, and how it is unpacked.
    let (parent, upload) = match &req.from {
        TemplateSource::Template {
            parent,
            steps,
            context,
        } => {
            validate::template_name(parent)?;
            if steps.is_empty() {
                return Err(HttpError::bad_request(
                    "a template build needs at least one step",
                ));
            }
            let mut copies = false;
            for step in steps {
                if let BuildStepSpec::Copy { src, .. } = step {
                    if Path::new(src).has_root() {
                        return Err(server_path("COPY source", src));
                    }
                    copies = true;
                }
            }
            let upload = match context {
                Some(hash) => Some((hash.clone(), Some(ContextKind::Copy))),
                None if copies => {
                    return Err(HttpError::bad_request(format!(
                        "COPY needs \"context\": the sha256 of an uploaded tar holding its sources (paths inside it); {SERVER_PATHS_REFUSED}"
                    )));
                }
                None => None,
            };
            (Some(parent.clone()), upload)
        }
        TemplateSource::Rootfs {
            path: Some(path), ..
        } => {
            return Err(server_path("rootfs path", path));
        }
        TemplateSource::Oci {
            path: Some(path), ..
        } => {
            return Err(server_path("OCI layout path", path));
        }
        TemplateSource::Rootfs { upload, .. } => {
            let hash = upload
                .clone()
                .ok_or_else(|| needs_upload("a rootfs import"))?;
            (None, Some((hash, None)))
        }
        TemplateSource::Oci { upload, .. } => {
            let hash = upload
                .clone()
                .ok_or_else(|| needs_upload("an OCI import"))?;
            (None, Some((hash, Some(ContextKind::OciLayout))))
        }
        TemplateSource::Debootstrap {} => {
            if req.name != burrow_templates::BASE_TEMPLATE {
                return Err(HttpError::bad_request(format!(
                    "debootstrap builds the '{}' template only; build other templates from it with {{\"type\":\"template\"}}",
                    burrow_templates::BASE_TEMPLATE
                )));
            }
            (None, None)
        }
    };
    let upload_path = match &upload {
        Some((hash, _)) => Some(state.uploads.path(owner, hash)?),
        None => None,
    };
    let templates = state.templates.clone();
    let uploads = state.uploads.clone();
    let name = req.name.clone();
    let limit = state.config.max_build_upload_bytes;
    let extract_kind = upload.as_ref().and_then(|(_, kind)| *kind);
    let hash = upload.map(|(hash, _)| hash);
    let (scratch, unpacked) = tokio::task::spawn_blocking(
        move || -> Result<(Option<tempfile::TempDir>, Option<PathBuf>), HttpError> {
            match templates.get(&name) {
                Ok(_) => return Err(TemplateError::AlreadyExists(name).into()),
                Err(TemplateError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(parent) = parent {
                templates.get(&parent)?;
            }
            let (Some(source), Some(hash)) = (upload_path, hash) else {
                return Ok((None, None));
            };
            // A hard link claims the upload: pruning cannot take it away mid-build.
            let scratch = uploads.scratch()?;
            let claimed = scratch.path().join("upload");
            match std::fs::hard_link(&source, &claimed) {
                Ok(()) => uploads.touch(&claimed),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(HttpError::bad_request(format!(
                        "upload {hash} is not on the server: PUT /v1/templates/uploads/{hash} first"
                    )));
                }
                Err(e) => return Err(HttpError::internal(format!("claiming upload {hash}: {e}"))),
            }
            let Some(kind) = extract_kind else {
                return Ok((Some(scratch), Some(claimed)));
            };
            let dest = scratch.path().join("context");
            // Decompressed, a context may be bigger than its upload, within reason.
            let limits = ImportLimits {
                max_total_bytes: limit.saturating_mul(8),
                max_entries: 1_000_000,
            };
            extract_context(&claimed, &dest, kind, limits).map_err(|e| {
                let mut error = HttpError::from(e);
                error.body.message = format!("upload {hash}: {}", error.body.message);
                error
            })?;
            Ok((Some(scratch), Some(dest)))
        },
    )
    .await
    .map_err(|e| HttpError::internal(format!("template check task: {e}")))??;
    let unpacked = || unpacked.clone().unwrap_or_default();
    let plan = match req.from {
        TemplateSource::Debootstrap {} => Plan::Debootstrap,
        TemplateSource::Rootfs { .. } => Plan::Rootfs {
            archive: unpacked(),
        },
        TemplateSource::Oci { reference, .. } => Plan::Oci {
            layout: unpacked(),
            reference,
        },
        TemplateSource::Template { parent, steps, .. } => {
            let context = unpacked();
            let steps = steps
                .into_iter()
                .map(|step| to_step(step, &context))
                .collect::<Result<_, _>>()?;
            Plan::Steps { parent, steps }
        }
    };
    Ok(PreparedBuild {
        name: req.name,
        plan,
        scratch,
    })
}

/// Runs a prepared build, sending progress events; returns the new template. Its scratch
/// (claimed upload, extracted context) is removed at the end, whatever the outcome.
pub async fn run(
    state: &AppState,
    build: PreparedBuild,
    progress: mpsc::Sender<TemplateBuildEvent>,
) -> Result<Template, HttpError> {
    let PreparedBuild {
        name,
        plan,
        scratch,
    } = build;
    // Messages name the context by its path on the server; the client knows it as "./".
    let scratch_prefix = scratch
        .as_ref()
        .map(|dir| format!("{}/", dir.path().join("context").display()));
    let outcome = run_plan(state, name, plan, progress, scratch_prefix.clone()).await;
    let outcome = outcome.map_err(|mut e| {
        if let Some(prefix) = &scratch_prefix {
            e.body.message = e.body.message.replace(prefix, "");
        }
        e
    });
    if let Some(scratch) = scratch {
        let _ = tokio::task::spawn_blocking(move || drop(scratch)).await;
    }
    outcome
}

async fn run_plan(
    state: &AppState,
    name: String,
    plan: Plan,
    progress: mpsc::Sender<TemplateBuildEvent>,
    hidden_prefix: Option<String>,
) -> Result<Template, HttpError> {
    // Progress is best effort: a slow client loses lines, never stalls the build.
    let report = move |p: BuildProgress| {
        let message = match &hidden_prefix {
            Some(prefix) => p.message.replace(prefix.as_str(), ""),
            None => p.message,
        };
        let _ = progress.try_send(TemplateBuildEvent::Progress {
            phase: p.phase,
            message,
            fraction: p.fraction,
        });
    };
    let templates = state.templates.clone();
    let blocking = |f: Box<dyn FnOnce() -> Result<Template, TemplateError> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| HttpError::internal(format!("template import task: {e}")))?
            .map_err(HttpError::from)
    };
    match plan {
        Plan::Debootstrap => Ok(templates.build_base(report).await?),
        Plan::Rootfs { archive } => {
            blocking(Box::new(move || {
                templates.import_rootfs(&name, &archive, report)
            }))
            .await
        }
        Plan::Oci { layout, reference } => {
            blocking(Box::new(move || {
                templates.import_oci(&name, &layout, reference.as_deref(), report)
            }))
            .await
        }
        Plan::Steps { parent, steps } => {
            let runner = BuildSandboxes::new(state.clone());
            let built = templates
                .build(&name, &parent, steps, &runner, report)
                .await;
            runner.destroy_all().await;
            Ok(built?)
        }
    }
}

/// The builder's step; a COPY source becomes its path in the extracted `context`.
fn to_step(step: BuildStepSpec, context: &Path) -> Result<BuildStep, HttpError> {
    Ok(match step {
        BuildStepSpec::Run { command } => BuildStep::Run { command },
        BuildStepSpec::Env { key, value } => BuildStep::Env { key, value },
        BuildStepSpec::Workdir { path } => BuildStep::Workdir { path },
        BuildStepSpec::Copy { src, dest } => BuildStep::Copy {
            src: resolve_in_context(context, &src)?,
            dest,
        },
        BuildStepSpec::User { name } => BuildStep::User { name },
        BuildStepSpec::Start { command } => BuildStep::Start { command },
        BuildStepSpec::ReadyPort { port } => BuildStep::ReadyPort { port },
        BuildStepSpec::ReadyCommand { command } => BuildStep::ReadyCommand { command },
    })
}
