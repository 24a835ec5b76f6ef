//! Route handlers, grouped by concern.

pub mod lifecycle;
pub mod sandboxes;
pub mod template_builds;
pub mod templates;
pub mod unimplemented;

use crate::backend::{E2bBackend, SandboxInfo};
use crate::wire::{Sandbox, SandboxDetail};

fn sandbox_response<S: E2bBackend>(backend: &S, info: SandboxInfo) -> Sandbox {
    Sandbox::from_info(info, backend.envd_version(), backend.sandbox_domain())
}

fn detail_response<S: E2bBackend>(backend: &S, info: SandboxInfo) -> SandboxDetail {
    SandboxDetail::from_info(info, backend.envd_version(), backend.sandbox_domain())
}
