//! Shared state of all handlers.

use std::sync::Arc;

use burrow_runtime::Runtime;
use burrow_store::Store;
use burrow_templates::TemplateStore;

use crate::ServerConfig;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub templates: TemplateStore,
    /// Template build uploads (`<data_dir>/uploads`): the only files API builds read.
    pub uploads: crate::uploads::UploadStore,
    pub proxy_client: crate::proxy::ProxyClient,
    /// Every sandbox's power state (awake, asleep, leases, activity).
    pub power: Arc<crate::power::PowerRegistry>,
    /// Whether warm standby pages memory out to zram.
    pub swap: Arc<crate::standby::SwapTarget>,
    /// Prometheus counters (`GET /metrics`).
    pub metrics: Arc<crate::metering::Metrics>,
    /// The usage sampler's last readings.
    pub sampler: Arc<crate::metering::Sampler>,
    /// E2B end times and pause state; the proxy asks it whether traffic may wake a sandbox
    /// (E2B's `autoResume`).
    pub e2b_lifecycles: Arc<crate::e2b::lifecycle::Lifecycles>,
    /// E2B's per-sandbox metric samples (`GET /sandboxes/{id}/metrics`).
    pub e2b_metrics: Arc<crate::e2b::metrics::MetricsRing>,
    /// Deletes in flight, one per sandbox: a second delete waits for the first.
    pub deletes: Arc<crate::service::DeletesInFlight>,
    /// API key uses not yet written to the store (`last_used_at`).
    pub key_uses: Arc<crate::auth::KeyUses>,
    /// Sandbox → owning workspace, for the wall between workspaces.
    pub sandbox_owners: Arc<crate::auth::SandboxOwners>,
    /// Mutating calls not yet written to the audit log.
    pub audit: Arc<crate::audit::AuditLog>,
    /// The tiers workspaces may be on (built in + `<data_dir>/tiers.toml`).
    pub tiers: Arc<burrow_core::quota::Tiers>,
    /// Prices for cost projections (`<data_dir>/prices.toml` or the built-in default).
    pub prices: Arc<burrow_core::cost::Prices>,
    /// Quota checks and creates, serialised per workspace, and each workspace's recent creates.
    pub quotas: Arc<crate::workspaces::QuotaGate>,
}
