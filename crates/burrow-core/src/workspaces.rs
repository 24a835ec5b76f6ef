//! Workspaces: create, list, inspect, change and remove them; their quotas (a tier plus
//! overrides) and the check every create goes through.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::quota::{self, Ask, Load, Quotas, Tiers};
use crate::{CoreError, Principal, workspace};
use burrow_store::{StoreError, WorkspaceRecord};
use burrow_types::SandboxState;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::Core;

/// Reads `<data_dir>/tiers.toml` and `<data_dir>/prices.toml` if present; a bad file stops the
/// start with a message naming it.
pub fn load_tiers_and_prices(data_dir: &Path) -> Result<(Tiers, crate::cost::Prices), CoreError> {
    let read = |name: &str| -> Result<Option<String>, CoreError> {
        let path = data_dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CoreError::Invalid(format!("{}: {e}", path.display()))),
        }
    };
    let tiers = match read(crate::config::TIERS_FILE)? {
        Some(text) => Tiers::with_file(&text).map_err(|e| {
            CoreError::Invalid(format!("{}: {e}", data_dir.join("tiers.toml").display()))
        })?,
        None => Tiers::default(),
    };
    let prices = match read(crate::config::PRICES_FILE)? {
        Some(text) => crate::cost::Prices::from_toml(&text).map_err(|e| {
            CoreError::Invalid(format!("{}: {e}", data_dir.join("prices.toml").display()))
        })?,
        None => crate::cost::Prices::default(),
    };
    Ok((tiers, prices))
}

/// A workspace as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceInfo {
    pub id: String,
    pub name: String,
    pub tier: String,
    /// The limits in force: the tier's, with the overrides applied.
    pub quotas: Quotas,
    /// Only the fields set for this workspace.
    pub overrides: Quotas,
    pub created_at: String,
    pub sandboxes: u64,
    pub templates: u64,
    pub keys: u64,
    /// What counts against the quotas now.
    pub in_use: InUse,
}

/// A workspace's current use, as its quotas count it.
#[derive(Debug, Clone, Serialize)]
pub struct InUse {
    pub sandboxes: u64,
    pub awake_sandboxes: u64,
    pub awake_vcpus: f64,
    pub awake_memory_mb: u64,
    pub disk_mb: u64,
    pub creates_last_minute: u32,
}

/// `POST /v1/workspaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

/// `PATCH /v1/workspaces/{name}`: fields left out stay as they are; `quotas` replaces the
/// overrides (an empty object clears them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

fn overrides_of(rec: &WorkspaceRecord) -> Quotas {
    // Written by this server from a validated `Quotas`; unreadable only if edited by hand.
    serde_json::from_str(&rec.overrides_json).unwrap_or_default()
}

/// The quotas in force for a workspace: its tier's (an unknown tier, e.g. removed from
/// tiers.toml, falls back to the default tier's) with its overrides.
pub fn quotas_of(tiers: &Tiers, rec: &WorkspaceRecord) -> Quotas {
    let base = tiers
        .get(&rec.tier)
        .or_else(|| tiers.get(quota::DEFAULT_TIER))
        .cloned()
        .unwrap_or_default();
    base.with(&overrides_of(rec))
}

async fn info(core: &Core, rec: WorkspaceRecord) -> Result<WorkspaceInfo, CoreError> {
    let counts = core.store.workspace_counts(&rec.id).await?;
    let load = load_of(core, &rec.id).await?;
    Ok(WorkspaceInfo {
        in_use: InUse {
            sandboxes: load.sandboxes,
            awake_sandboxes: load.awake,
            awake_vcpus: load.awake_vcpus,
            awake_memory_mb: load.awake_memory_mb,
            disk_mb: load.disk_mb,
            creates_last_minute: load.creates_last_minute,
        },
        quotas: quotas_of(&core.tiers, &rec),
        overrides: overrides_of(&rec),
        id: rec.id,
        name: rec.name,
        tier: rec.tier,
        created_at: rec.created_at,
        sandboxes: counts.sandboxes,
        templates: counts.templates,
        keys: counts.keys,
    })
}

fn not_found(name: &str) -> CoreError {
    CoreError::NotFound {
        kind: "workspace",
        id: name.to_string(),
    }
}

/// The workspace named `name` if the principal may see it (its own, or any for the operator).
pub async fn find(
    core: &Core,
    principal: &Principal,
    name: &str,
) -> Result<WorkspaceRecord, CoreError> {
    let rec = core
        .store
        .workspace_by_name(name)
        .await?
        .ok_or_else(|| not_found(name))?;
    if !principal.sees(&rec.id) {
        return Err(not_found(name));
    }
    Ok(rec)
}

/// The workspace a call acts in: the caller's own; for the operator, the one it names, or
/// `default`.
pub async fn acting_in(
    core: &Core,
    principal: &Principal,
    named: Option<&str>,
) -> Result<WorkspaceRecord, CoreError> {
    match (principal.workspace_name(), named) {
        (Some(own), Some(name)) if own != name => Err(not_found(name)),
        (Some(own), _) => find(core, principal, own).await,
        (None, Some(name)) => find(core, principal, name).await,
        (None, None) => find(core, principal, workspace::DEFAULT_WORKSPACE_NAME).await,
    }
}

/// The workspace filter of a list: the caller's own; for the operator, the one it names or all.
pub async fn list_filter(
    core: &Core,
    principal: &Principal,
    named: Option<&str>,
) -> Result<Option<String>, CoreError> {
    if principal.is_operator() && named.is_none() {
        return Ok(None);
    }
    Ok(Some(acting_in(core, principal, named).await?.id))
}

pub async fn create(core: &Core, req: CreateWorkspace) -> Result<WorkspaceInfo, CoreError> {
    workspace::validate_name(&req.name)?;
    let tier = req.tier.unwrap_or_else(|| quota::DEFAULT_TIER.to_string());
    core.tiers.require(&tier)?;
    let overrides = req.quotas.unwrap_or_default();
    overrides.validate()?;
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    let id = format!("ws_{}", hex::encode(bytes));
    let rec = match core.store.insert_workspace(&id, &req.name, &tier).await {
        Ok(rec) => rec,
        Err(StoreError::DuplicateName(name)) => {
            return Err(CoreError::Conflict(format!(
                "a workspace named '{name}' exists"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if overrides != Quotas::default() {
        let json = serde_json::to_string(&overrides).expect("quotas serialise");
        core.store.update_workspace(&id, &tier, &json).await?;
    }
    let rec = core.store.workspace(&id).await?.unwrap_or(rec);
    info(core, rec).await
}

pub async fn list(core: &Core, principal: &Principal) -> Result<Vec<WorkspaceInfo>, CoreError> {
    let mut out = Vec::new();
    for rec in core.store.list_workspaces().await? {
        if principal.sees(&rec.id) {
            out.push(info(core, rec).await?);
        }
    }
    Ok(out)
}

pub async fn get(
    core: &Core,
    principal: &Principal,
    name: &str,
) -> Result<WorkspaceInfo, CoreError> {
    info(core, find(core, principal, name).await?).await
}

/// Changes a workspace's tier or overrides. New limits apply to new work (and to the
/// standby-age cap); awake sandboxes are never stopped by it.
pub async fn update(
    core: &Core,
    principal: &Principal,
    name: &str,
    req: UpdateWorkspace,
) -> Result<WorkspaceInfo, CoreError> {
    let rec = find(core, principal, name).await?;
    let tier = req.tier.unwrap_or(rec.tier.clone());
    core.tiers.require(&tier)?;
    let overrides = match req.quotas {
        Some(q) => {
            q.validate()?;
            q
        }
        None => overrides_of(&rec),
    };
    let json = serde_json::to_string(&overrides).expect("quotas serialise");
    core.store.update_workspace(&rec.id, &tier, &json).await?;
    let rec = core
        .store
        .workspace(&rec.id)
        .await?
        .ok_or_else(|| not_found(name))?;
    info(core, rec).await
}

/// Removes a workspace. Refused (`Conflict`) while it owns sandboxes or templates, unless `force`:
/// then its sandboxes are deleted (each with its erasure record, reason `workspace-removed`) and
/// its templates removed first. Its keys are revoked. The `default` workspace stays.
pub async fn remove(
    core: &Core,
    principal: &Principal,
    name: &str,
    force: bool,
) -> Result<(), CoreError> {
    let rec = find(core, principal, name).await?;
    if rec.id == workspace::DEFAULT_WORKSPACE_ID {
        return Err(CoreError::Invalid(
            "the default workspace cannot be removed (it holds everything made before \
             workspaces, and the operator's sandboxes)"
                .into(),
        ));
    }
    let counts = core.store.workspace_counts(&rec.id).await?;
    if !force && (counts.sandboxes > 0 || counts.templates > 0) {
        return Err(CoreError::Conflict(format!(
            "workspace '{name}' owns {} sandboxes and {} templates; delete them first, or \
             remove it with force (its sandboxes are deleted with erasure records)",
            counts.sandboxes, counts.templates
        )));
    }
    if force {
        let filter = burrow_store::SandboxFilter {
            workspace_id: Some(rec.id.clone()),
            ..Default::default()
        };
        for sandbox in core.store.list_sandboxes(filter).await? {
            crate::sandboxes::delete_because(
                core,
                &sandbox.id,
                crate::retention::reasons::WORKSPACE_REMOVED,
                &principal.key_id,
            )
            .await?;
        }
        for (template, owner) in core.store.template_owners().await? {
            if owner == rec.id {
                crate::templates::remove_template(core, &template).await?;
            }
        }
    }
    core.store.delete_workspace(&rec.id).await?;
    Ok(())
}

/// Serialises quota checks with the creates they admit, per workspace, and remembers each
/// workspace's creates of the last minute.
#[derive(Debug, Default)]
pub struct QuotaGate {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

impl QuotaGate {
    fn lock_for(&self, workspace_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(workspace_id.to_string())
            .or_default()
            .clone()
    }

    fn creates_last_minute(&self, workspace_id: &str) -> u32 {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(times) = recent.get_mut(workspace_id) else {
            return 0;
        };
        while times.front().is_some_and(|t| t.elapsed() >= RATE_WINDOW) {
            times.pop_front();
        }
        times.len() as u32
    }

    fn record_create(&self, workspace_id: &str) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(workspace_id.to_string())
            .or_default()
            .push_back(Instant::now());
    }
}

/// Admission of one create: hold it until the sandbox's row is in the store, so the next
/// check counts it.
pub struct Admitted {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// What a workspace holds now (its rows; awake = not asleep per the power registry).
pub async fn load_of(core: &Core, workspace_id: &str) -> Result<Load, CoreError> {
    let mut load = Load::default();
    for s in core.store.workspace_sandbox_sizes(workspace_id).await? {
        load.sandboxes += 1;
        load.disk_mb += s.disk_mb;
        let awake = match SandboxState::parse(&s.state) {
            Some(SandboxState::Creating) => true,
            Some(SandboxState::Running) => !core.power.is_asleep(&s.id),
            _ => false,
        };
        if awake {
            load.awake += 1;
            load.awake_vcpus += s.cpus;
            load.awake_memory_mb += s.memory_mb;
        }
    }
    load.creates_last_minute = core.quotas.creates_last_minute(workspace_id);
    Ok(load)
}

/// Admits a create of size `ask` in workspace `rec`, or refuses it with a `Quota` error naming the limit.
pub async fn admit_create(
    core: &Core,
    rec: &WorkspaceRecord,
    ask: Ask,
) -> Result<Admitted, CoreError> {
    let guard = core.quotas.lock_for(&rec.id).lock_owned().await;
    let quotas = quotas_of(&core.tiers, rec);
    let load = load_of(core, &rec.id).await?;
    quota::check_create(&rec.name, &quotas, &load, &ask)?;
    core.quotas.record_create(&rec.id);
    Ok(Admitted { _guard: guard })
}

/// Standby-age caps per workspace id (`None`: indefinite).
pub async fn standby_age_caps(core: &Core) -> Result<HashMap<String, Option<Duration>>, CoreError> {
    let mut caps = HashMap::new();
    for rec in core.store.list_workspaces().await? {
        let cap = quotas_of(&core.tiers, &rec).standby_age().unwrap_or(None);
        caps.insert(rec.id, cap);
    }
    Ok(caps)
}

/// Least time without activity before the awake cap may put a sandbox to sleep: one that just
/// answered a request is likely to get the next one.
const CAP_MIN_IDLE: Duration = Duration::from_secs(1);

/// After a wake: if the sandbox's workspace now has more sandboxes awake than its
/// `max_awake_sandboxes`, the ones idle longest go to warm standby (a wake itself is never
/// refused: a request to a sleeping sandbox is held, never failed). Sandboxes with work in
/// flight (a stream, a lease) or active within the last second are left awake, so the cap may
/// be exceeded until they go idle; nothing awake is ever killed.
pub async fn enforce_awake_cap(core: Core, woken: String) {
    let Ok(Some(workspace)) = crate::owners::sandbox_owner(&core, &woken).await else {
        return;
    };
    let Ok(Some(rec)) = core.store.workspace(&workspace).await else {
        return;
    };
    let Some(cap) = quotas_of(&core.tiers, &rec).max_awake_sandboxes else {
        return;
    };
    let Ok(sizes) = core.store.workspace_sandbox_sizes(&workspace).await else {
        return;
    };
    let mut awake: Vec<(Duration, String)> = Vec::new();
    let mut awake_count = 0u64;
    for s in sizes {
        match SandboxState::parse(&s.state) {
            Some(SandboxState::Creating) => awake_count += 1,
            Some(SandboxState::Running) => {
                let Some(power) = core.power.get(&s.id) else {
                    continue;
                };
                if power.is_asleep() {
                    continue;
                }
                awake_count += 1;
                let idle = power.idle_for();
                if s.id != woken && idle >= CAP_MIN_IDLE {
                    awake.push((idle, s.id));
                }
            }
            _ => {}
        }
    }
    // Longest idle first.
    awake.sort_by_key(|(idle, _)| std::cmp::Reverse(*idle));
    for (_, id) in awake {
        if awake_count <= cap {
            break;
        }
        tracing::info!(
            sandbox = id,
            workspace = rec.name,
            cap,
            "over the workspace's max_awake_sandboxes after a wake: to standby"
        );
        match crate::sandboxes::standby(&core, &id, false).await {
            Ok(()) => awake_count -= 1,
            Err(e) => tracing::warn!(sandbox = id, "awake cap standby: {e}"),
        }
    }
}
