//! Templates: listing and building.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A template as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateInfo {
    pub name: String,
    /// `debootstrap`, `rootfs`, `oci`, or `build:<parent>`.
    pub source: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Bytes on disk of the layers this template owns.
    pub size_bytes: u64,
    /// Number of layers (its own plus inherited).
    pub layers: usize,
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    pub user: String,
    /// The workspace that built it; absent for server-wide templates (`base`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

/// `GET /v1/templates` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateInfo>,
}

/// `POST /v1/templates` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBuildRequest {
    /// Name of the new template: 1-63 characters a-z, 0-9, '-', '_'.
    pub name: String,
    pub from: TemplateSource,
}

/// Where a new template comes from. Files come from the client: an upload made with
/// `PUT /v1/templates/uploads/{sha256}`, named by its sha256. The server never reads a path of its
/// own host for an API build (only `burrow template build --local`, run as root on the server,
/// does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TemplateSource {
    /// A fresh Debian bookworm via debootstrap: how `base` is made (name must be `base`).
    Debootstrap {},
    /// A root file system: an uploaded tarball (.tar or .tar.gz).
    Rootfs {
        /// sha256 (hex) of the uploaded tarball.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload: Option<String>,
        /// Refused with a 400: a path on the server. Only there so an old client learns why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(deprecated)]
        path: Option<String>,
    },
    /// An OCI image layout, uploaded as a tar (.tar or .tar.gz) of the layout directory.
    Oci {
        /// sha256 (hex) of the uploaded tar of the layout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload: Option<String>,
        /// Refused with a 400: a path on the server. Only there so an old client learns why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(deprecated)]
        path: Option<String>,
        /// Tag or digest inside the layout (default: the only image).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Build steps on an existing template.
    Template {
        parent: String,
        steps: Vec<BuildStepSpec>,
        /// sha256 (hex) of the uploaded build context (a tar): COPY sources are paths inside it.
        /// Needed when a step is a COPY.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<String>,
    },
}

/// One build step, like a Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BuildStepSpec {
    /// Run a shell command as root (network on).
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
    /// Copy a file or directory of the build context (`context` of the source) into the
    /// template. `src` is relative to the context's root.
    Copy {
        src: String,
        dest: String,
    },
    User {
        name: String,
    },
    /// Start this command (`/bin/sh -c`, as the current USER, in the current WORKDIR) in the
    /// background in every new sandbox; create returns once its READY check passes.
    Start {
        command: String,
    },
    /// READY PORT: the start command is ready once the sandbox accepts TCP on this port.
    ReadyPort {
        port: u16,
    },
    /// READY CMD: the start command is ready once this command exits with 0.
    ReadyCommand {
        command: String,
    },
}

/// One line of the `POST /v1/templates` response (NDJSON). Ends with `done` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TemplateBuildEvent {
    Progress {
        phase: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fraction: Option<f32>,
    },
    Done {
        template: TemplateInfo,
    },
    Error {
        code: String,
        message: String,
    },
}

/// `GET`/`PUT /v1/templates/uploads/{sha256}` response: whether the server holds that upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateUpload {
    /// sha256 (64 lowercase hex digits) of the uploaded bytes.
    pub sha256: String,
    pub present: bool,
    /// Size of the stored upload, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// Whether `s` is a sha256 in lowercase hex, the way uploads are named.
pub fn is_valid_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
