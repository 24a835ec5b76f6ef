//! Templates: read-only root filesystems sandboxes are created from.
//!
//! A template is a stack of layer directories under `<data_dir>/templates/<name>/layers/`, with
//! canonical ownership (root = uid 0), plus `template.json` (its [`Template`] record).

mod error;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::TemplateError;

/// Name of the default template.
pub const BASE_TEMPLATE: &str = "base";

/// A template as stored in `template.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Template {
    pub name: String,
    /// Absolute paths of the layers, top-most first.
    pub layers: Vec<PathBuf>,
    /// Environment every sandbox of this template starts with (ENV steps, OCI config).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default working directory for commands (WORKDIR), if any.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Default user for commands.
    pub user: String,
    /// Where it came from: `debootstrap`, `rootfs`, `oci`, or `build:<parent>`.
    pub source: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Total bytes on disk of the layers this template owns.
    pub size_bytes: u64,
}

/// One step of a template build on top of an existing template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BuildStep {
    /// Run a shell command (`/bin/sh -c`) as root in a sandbox of the template built so far.
    Run { command: String },
    Env { key: String, value: String },
    Workdir { path: String },
    /// Copy a host file or directory into the template at `dest`.
    Copy { src: PathBuf, dest: String },
    User { name: String },
}

/// Progress of a long build, for a progress indicator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildProgress {
    /// Short phase name (`download`, `extract`, `configure`, `step 2/5`, …).
    pub phase: String,
    /// A line of build output, if any.
    pub message: String,
    /// Fraction done in 0..=1, if known.
    pub fraction: Option<f32>,
}

/// Runs RUN steps for a build: the server implements it with a real sandbox of the template built so
/// far (network on), and returns the sandbox's overlay upper dir once the command has exited and the
/// sandbox's processes are stopped. `uid_base` is the host uid root had in it, so the builder can
/// normalise ownership back to canonical.
pub trait StepRunner: Send + Sync {
    fn run(
        &self,
        layers: &[PathBuf],
        env: &BTreeMap<String, String>,
        workdir: Option<&str>,
        command: &str,
        output: &(dyn Fn(&str) + Send + Sync),
    ) -> impl std::future::Future<Output = Result<StepOutcome, TemplateError>> + Send;
}

/// The result of one RUN step.
#[derive(Debug)]
pub struct StepOutcome {
    pub exit_code: i32,
    pub upper_dir: PathBuf,
    pub uid_base: u32,
}

/// The template store under `<data_dir>/templates`.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    root: PathBuf,
}

impl TemplateStore {
    pub fn open(data_dir: &Path) -> Result<Self, TemplateError> {
        Ok(Self {
            root: data_dir.join("templates"),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The template called `name`, or [`TemplateError::NotFound`].
    pub fn get(&self, name: &str) -> Result<Template, TemplateError> {
        Err(TemplateError::NotFound(name.to_string()))
    }

    pub fn list(&self) -> Result<Vec<Template>, TemplateError> {
        Ok(Vec::new())
    }

    /// Removes a template. Refuses while `in_use` says sandboxes still use it.
    pub fn remove(&self, name: &str, in_use: bool) -> Result<(), TemplateError> {
        let _ = (name, in_use);
        Err(TemplateError::NotFound(name.to_string()))
    }
}
