//! Template builds and imports requested through the API.

use std::path::{Path, PathBuf};

use burrow_templates::{BuildProgress, BuildStep, Template, TemplateError};
use burrow_types::{BuildStepSpec, TemplateBuildEvent, TemplateBuildRequest, TemplateSource};
use tokio::sync::mpsc;

use crate::error::HttpError;
use crate::state::AppState;
use crate::step_runner::BuildSandboxes;
use crate::validate;

/// Checks done before the response starts streaming, so they are plain HTTP errors.
pub async fn check_request(state: &AppState, req: &TemplateBuildRequest) -> Result<(), HttpError> {
    validate::template_name(&req.name)?;
    let templates = state.templates.clone();
    let name = req.name.clone();
    let parent = match &req.from {
        TemplateSource::Template { parent, steps } => {
            validate::template_name(parent)?;
            if steps.is_empty() {
                return Err(HttpError::bad_request(
                    "a template build needs at least one step",
                ));
            }
            Some(parent.clone())
        }
        TemplateSource::Rootfs { path } | TemplateSource::Oci { path, .. } => {
            if !std::path::Path::new(path).is_absolute() {
                return Err(HttpError::bad_request(format!(
                    "source path '{path}' must be absolute (it is a path on the daemon's host)"
                )));
            }
            None
        }
        TemplateSource::Debootstrap {} => {
            if req.name != burrow_templates::BASE_TEMPLATE {
                return Err(HttpError::bad_request(format!(
                    "debootstrap builds the '{}' template only; build other templates from it with {{\"type\":\"template\"}}",
                    burrow_templates::BASE_TEMPLATE
                )));
            }
            None
        }
    };
    tokio::task::spawn_blocking(move || -> Result<(), HttpError> {
        match templates.get(&name) {
            Ok(_) => return Err(TemplateError::AlreadyExists(name).into()),
            Err(TemplateError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(parent) = parent {
            templates.get(&parent)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| HttpError::internal(format!("template check task: {e}")))?
}

/// Runs a build, sending progress events; returns the new template.
pub async fn run(
    state: &AppState,
    req: TemplateBuildRequest,
    progress: mpsc::Sender<TemplateBuildEvent>,
) -> Result<Template, HttpError> {
    // Progress is best effort: a slow client loses lines, never stalls the build.
    let report = move |p: BuildProgress| {
        let _ = progress.try_send(TemplateBuildEvent::Progress {
            phase: p.phase,
            message: p.message,
            fraction: p.fraction,
        });
    };
    let templates = state.templates.clone();
    let name = req.name;
    let blocking = |f: Box<dyn FnOnce() -> Result<Template, TemplateError> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| HttpError::internal(format!("template import task: {e}")))?
            .map_err(HttpError::from)
    };
    match req.from {
        TemplateSource::Debootstrap {} => Ok(templates.build_base(report).await?),
        TemplateSource::Rootfs { path } => {
            blocking(Box::new(move || {
                templates.import_rootfs(&name, Path::new(&path), report)
            }))
            .await
        }
        TemplateSource::Oci { path, reference } => {
            blocking(Box::new(move || {
                templates.import_oci(&name, Path::new(&path), reference.as_deref(), report)
            }))
            .await
        }
        TemplateSource::Template { parent, steps } => {
            let steps = steps.into_iter().map(to_step).collect();
            let runner = BuildSandboxes::new(state.clone());
            let built = templates
                .build(&name, &parent, steps, &runner, report)
                .await;
            runner.destroy_all().await;
            Ok(built?)
        }
    }
}

fn to_step(step: BuildStepSpec) -> BuildStep {
    match step {
        BuildStepSpec::Run { command } => BuildStep::Run { command },
        BuildStepSpec::Env { key, value } => BuildStep::Env { key, value },
        BuildStepSpec::Workdir { path } => BuildStep::Workdir { path },
        BuildStepSpec::Copy { src, dest } => BuildStep::Copy {
            src: PathBuf::from(src),
            dest,
        },
        BuildStepSpec::User { name } => BuildStep::User { name },
        BuildStepSpec::Start { command } => BuildStep::Start { command },
        BuildStepSpec::ReadyPort { port } => BuildStep::ReadyPort { port },
        BuildStepSpec::ReadyCommand { command } => BuildStep::ReadyCommand { command },
    }
}
