//! [`Core`]: everything the domain works on, shared by every transport.

use std::sync::Arc;

use burrow_runtime::Runtime;
use burrow_store::Store;
use burrow_templates::TemplateStore;

use crate::ServerConfig;

/// Called with a sandbox's id when it is forgotten (deleted), so a transport can drop what it
/// keeps per sandbox (the E2B API's end times and metric samples).
pub type ForgetHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The domain's state: the store, the runtime, templates, every sandbox's power state, usage
/// meters, workspaces' quotas. Cheap to clone (every part is shared).
#[derive(Clone)]
pub struct Core {
    pub config: Arc<ServerConfig>,
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub templates: TemplateStore,
    /// Every sandbox's power state (awake, asleep, leases, activity).
    pub power: Arc<crate::power::PowerRegistry>,
    /// Whether warm standby pages memory out to zram.
    pub swap: Arc<crate::standby::SwapTarget>,
    /// Prometheus counters (`GET /metrics`).
    pub metrics: Arc<crate::metering::Metrics>,
    /// The usage sampler's last readings.
    pub sampler: Arc<crate::metering::Sampler>,
    /// Deletes in flight, one per sandbox: a second delete waits for the first.
    pub deletes: Arc<crate::sandboxes::DeletesInFlight>,
    /// Sandbox → owning workspace, for the wall between workspaces.
    pub sandbox_owners: Arc<crate::owners::SandboxOwners>,
    /// Each sandbox's traffic access token (private ports), as the proxy asks for it.
    pub traffic_tokens: Arc<crate::traffic::TrafficTokens>,
    /// The tiers workspaces may be on (built in + `<data_dir>/tiers.toml`).
    pub tiers: Arc<crate::quota::Tiers>,
    /// Prices for cost projections (`<data_dir>/prices.toml` or the built-in default).
    pub prices: Arc<crate::cost::Prices>,
    /// Quota checks and creates, serialised per workspace, and each workspace's recent creates.
    pub quotas: Arc<crate::workspaces::QuotaGate>,
    /// What transports want to hear of deleted sandboxes.
    pub forget_hooks: Arc<Vec<ForgetHook>>,
}
