//! Shared state of all handlers: the domain's [`Core`] plus what only the HTTP surfaces keep.

use std::sync::Arc;

use burrow_core::Core;

/// What every handler gets: the domain's [`Core`] (reached through `Deref`, so `state.store`,
/// `state.power`… read as before) and the HTTP side's own parts.
#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    /// Template build uploads (`<data_dir>/uploads`): the only files API builds read.
    pub uploads: crate::uploads::UploadStore,
    pub proxy_client: crate::proxy::ProxyClient,
    /// E2B end times and pause state; the proxy asks it whether traffic may wake a sandbox
    /// (E2B's `autoResume`).
    pub e2b_lifecycles: Arc<crate::e2b::lifecycle::Lifecycles>,
    /// E2B's per-sandbox metric samples (`GET /sandboxes/{id}/metrics`).
    pub e2b_metrics: Arc<crate::e2b::metrics::MetricsRing>,
    /// API key uses not yet written to the store (`last_used_at`).
    pub key_uses: Arc<crate::auth::KeyUses>,
    /// Mutating calls not yet written to the audit log.
    pub audit: Arc<crate::audit::AuditLog>,
}

impl std::ops::Deref for AppState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
