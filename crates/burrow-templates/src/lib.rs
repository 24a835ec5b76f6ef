//! Templates: read-only root filesystems sandboxes are created from.
//!
//! A template is a stack of layer directories under `<data_dir>/templates/<name>/layers/`, with
//! canonical ownership (root = uid 0), plus `template.json` (its [`Template`] record).

mod base;
mod build;
mod command;
mod context;
mod error;
mod fsutil;
mod import;
mod layer_writer;
mod merged_view;
mod name;
mod normalize;
mod oci;
mod store;
mod tar_import;
mod tree_copy;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use base::{
    BASE_MIRROR, BASE_PACKAGES, BASE_SUITE, BASE_USER, BASE_VARIANT, DebootstrapProgress,
    debootstrap_cache_name,
};
pub use build::{RUNTIME_OWNED_PATHS, copy_destination, strip_runtime_files, validate_steps};
pub use context::{ContextKind, extract_context, resolve_in_context, stays_inside};
pub use error::TemplateError;
pub use fsutil::disk_usage;
pub use layer_writer::{ImportLimits, OPAQUE_XATTRS};
pub use name::validate_name;
pub use normalize::{canonical_id, normalize_upper};
pub use store::TemplateStore;
pub use tar_import::{ArchiveFormat, detect_format};

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
    /// A background process every sandbox of this template starts with (START/READY steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartCommand>,
}

/// A template's start command: run in the background right after a sandbox is created, which is
/// ready (and its create answered) once `ready` passes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StartCommand {
    /// Shell command (`/bin/sh -c`).
    pub command: String,
    /// User it runs as: the template's user at the START step.
    pub user: String,
    /// Working directory: the template's WORKDIR at the START step, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// How to tell it is ready; `None`: as soon as it has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadyCheck>,
}

/// Readiness check of a start command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ReadyCheck {
    /// The sandbox accepts TCP connections on this port.
    Port { port: u16 },
    /// This shell command (run as the start command's user) exits with 0.
    Command { command: String },
}

/// One step of a template build on top of an existing template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BuildStep {
    /// Run a shell command (`/bin/sh -c`) as root in a sandbox of the template built so far.
    Run {
        command: String,
    },
    Env {
        key: String,
        value: String,
    },
    Workdir {
        path: String,
    },
    /// Copy a host file or directory into the template at `dest`.
    Copy {
        src: PathBuf,
        dest: String,
    },
    User {
        name: String,
    },
    /// Set the template's start command (replaces an earlier or inherited one).
    Start {
        command: String,
    },
    /// Set the start command's readiness check; must follow a START (here or in the parent).
    #[serde(rename = "ready_port")]
    ReadyPort {
        port: u16,
    },
    #[serde(rename = "ready_command")]
    ReadyCommand {
        command: String,
    },
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
