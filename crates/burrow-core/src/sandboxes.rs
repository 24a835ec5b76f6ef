//! The sandbox service: create, delete, look up and reconcile sandboxes, keeping the store and the
//! runtime consistent. The REST and E2B handlers stay thin on top of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use burrow_runtime::{SandboxHandle, SandboxSpec};
use burrow_store::{SandboxRecord, StoreError};
use burrow_types::{CreateSandboxRequest, Sandbox, SandboxState, codes};

use burrow_types::StandbyTier;

use crate::Core;
use crate::CoreError;
use crate::power::{ActivityGuard, DeepClaim, Entry, Power, SandboxPower, SleepClaim};
use crate::{ids, keys, retention, standby, validate};

/// Longest idle timeout a create request may ask for (30 days).
const MAX_IDLE_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Per-sandbox standby settings, next to `runtime.json`.
const STANDBY_FILE: &str = "standby.json";

/// Max processes per sandbox.
const PIDS_MAX: u64 = 4096;

/// What the rest of the server needs to talk to a running sandbox.
#[derive(Debug, Clone)]
pub struct RunningSandbox {
    pub record: SandboxRecord,
    pub handle: SandboxHandle,
    /// Keeps the sandbox awake (an open stream) while any clone of it lives: move it into the
    /// task that streams the response.
    pub activity: Arc<ActivityGuard>,
}

impl RunningSandbox {
    pub fn access_token(&self) -> Option<&str> {
        self.record.access_token.as_deref()
    }
}

pub fn to_api(rec: SandboxRecord) -> Sandbox {
    Sandbox {
        id: rec.id,
        template: rec.template,
        state: rec.state,
        cpus: rec.cpus,
        memory_mb: rec.memory_mb,
        disk_mb: rec.disk_mb,
        env: rec.env,
        labels: rec.labels,
        created_at: rec.created_at,
        ip: rec.ip,
        error: rec.error,
        envd_access_token: rec.access_token,
        traffic_access_token: None,
        workspace_id: Some(rec.workspace_id),
        power: None,
        expiration: None,
        zdr: false,
    }
}

/// The API view of a sandbox with its power state (`standby` while asleep).
pub fn describe(core: &Core, rec: SandboxRecord) -> Sandbox {
    let power = (rec.state == SandboxState::Running)
        .then(|| core.power.get(&rec.id))
        .flatten()
        .map(|p| p.info());
    let memory = power
        .as_ref()
        .map(|_| standby::memcg_bytes(&core.runtime, &rec.id));
    let mut sandbox = to_api(rec);
    if let Some(mut info) = power {
        if !info.awake {
            sandbox.state = SandboxState::Standby;
        }
        if let Some(Some((memory, swap))) = memory {
            info.memory_bytes = Some(memory);
            info.swap_bytes = Some(swap);
        }
        sandbox.power = Some(info);
    }
    sandbox
}

fn host_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// Validates, creates and starts a sandbox. On any failure nothing is left behind: the runtime's
/// partial work is destroyed and the row is deleted.
pub async fn create(
    core: &Core,
    principal: &crate::Principal,
    workspace: &burrow_store::WorkspaceRecord,
    req: CreateSandboxRequest,
) -> Result<Sandbox, CoreError> {
    validate::template_name(&req.template)?;
    crate::templates::check_visible(core, principal, &req.template).await?;
    validate::limits(&req, host_cpus())?;
    validate::env(&req.env)?;
    validate::labels(&req.labels)?;
    if let Some(expiration) = &req.expiration {
        retention::validate(expiration)?;
    }
    let policy = burrow_store::SandboxPolicy {
        expiration: req.expiration.clone().unwrap_or_default(),
        zdr: req.zdr,
    };
    let idle_timeout = match req.idle_timeout {
        Some(secs) if secs > MAX_IDLE_TIMEOUT_SECS => {
            return Err(CoreError::invalid(format!(
                "idle_timeout {secs} is above {MAX_IDLE_TIMEOUT_SECS} seconds (30 days); use 0 to never sleep"
            )));
        }
        Some(secs) => Duration::from_secs(secs),
        None => core.config.default_idle_timeout,
    };
    let template = {
        let templates = core.templates.clone();
        let name = req.template.clone();
        tokio::task::spawn_blocking(move || templates.get(&name))
            .await
            .map_err(|e| CoreError::internal(format!("template lookup task: {e}")))??
    };

    let mut env: BTreeMap<String, String> = template.env.clone();
    env.extend(req.env.clone());
    let access_token = keys::generate_access_token();

    // Held until the row is in the store, so the next create of the workspace counts this one.
    let admitted = crate::workspaces::admit_create(
        core,
        workspace,
        crate::quota::Ask {
            cpus: req.cpus,
            memory_mb: req.memory_mb,
            disk_mb: req.disk_mb,
        },
    )
    .await?;
    let mut record = SandboxRecord::new_creating(ids::new_sandbox_id(), req.template.clone());
    record.workspace_id = workspace.id.clone();
    record.cpus = req.cpus;
    record.memory_mb = req.memory_mb;
    record.disk_mb = req.disk_mb;
    record.env = env.clone();
    record.labels = req.labels;
    record.access_token = Some(access_token.clone());
    // A duplicate id is a 1-in-2^98 event; retry once rather than fail.
    if let Err(StoreError::DuplicateSandbox(_)) = core.store.insert_sandbox(&record).await {
        record.id = ids::new_sandbox_id();
        core.store.insert_sandbox(&record).await?;
    }
    drop(admitted);
    core.sandbox_owners.insert(&record.id, &record.workspace_id);
    // Stored before the sandbox starts, so its ports are never public for a moment.
    let traffic_token = (!req.public_traffic).then(keys::generate_access_token);
    if let Some(token) = &traffic_token
        && let Err(e) = core.store.set_traffic_token(&record.id, token).await
    {
        abandon(core, &record.id).await;
        return Err(e.into());
    }
    core.traffic_tokens
        .insert(&record.id, traffic_token.clone());
    if policy != burrow_store::SandboxPolicy::default()
        && let Err(e) = core.store.set_sandbox_policy(&record.id, &policy).await
    {
        abandon(core, &record.id).await;
        return Err(e.into());
    }

    let spec = SandboxSpec {
        id: record.id.clone(),
        template: template.name.clone(),
        layers: template.layers.clone(),
        cpus: req.cpus,
        memory_mb: req.memory_mb,
        disk_mb: req.disk_mb,
        pids_max: PIDS_MAX,
        env,
        access_token: Some(access_token),
        default_user: template.user.clone(),
        default_workdir: template.workdir.clone(),
        zdr: req.zdr,
    };
    let handle = match core.runtime.create(spec).await {
        Ok(handle) => handle,
        Err(e) => {
            abandon(core, &record.id).await;
            return Err(e.into());
        }
    };
    let handle_json = serde_json::to_string(&handle).expect("a handle always serialises");
    let ip = handle.ip.to_string();
    match core
        .store
        .mark_sandbox_running(&record.id, &handle_json, &ip)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // Deleted while being created: honour the delete.
            let _ = core.runtime.destroy(&record.id).await;
            forget(core, &record.id);
            return Err(CoreError::sandbox_not_found(&record.id));
        }
        Err(e) => {
            abandon(core, &record.id).await;
            return Err(e.into());
        }
    }
    if let Some(start) = &template.start {
        let token = record.access_token.as_deref().unwrap_or_default();
        if let Err(e) = crate::template_start::run(&record.id, &handle, token, start).await {
            abandon(core, &record.id).await;
            return Err(e);
        }
    }
    let sandbox_dir = core.runtime.sandbox_dir(&record.id);
    if let Err(e) = save_idle_timeout(&sandbox_dir, idle_timeout) {
        tracing::warn!(sandbox = record.id, "saving {STANDBY_FILE}: {e}");
    }
    if let Err(e) = standby::create_lease_dir(&sandbox_dir, handle.uid_base) {
        tracing::warn!(sandbox = record.id, "creating /run/burrow/leases: {e}");
    }
    core.power
        .insert(&record.id, SandboxPower::new(idle_timeout, Power::Awake));
    record.state = SandboxState::Running;
    record.handle_json = Some(handle_json);
    record.ip = Some(ip);
    core.metrics.created();
    crate::metering::started(core, &record.id);
    let mut sandbox = describe(core, record);
    with_policy(&mut sandbox, policy);
    sandbox.traffic_access_token = traffic_token;
    Ok(sandbox)
}

/// Restart from files: a sandbox in `error` (its processes are gone, e.g. after a crash that
/// left no complete checkpoint) starts again with the same id, envd access token, files (its
/// upper dir), limits, env, labels and policy; fresh processes (init, agent, then the
/// template's start command, as at create). E2B's filesystem-only resume.
pub async fn restart(core: &Core, id: &str) -> Result<Sandbox, CoreError> {
    let record = get(core, id).await?;
    match record.state {
        SandboxState::Error => {}
        SandboxState::Creating => {
            return Err(restart_refused(id, "it is being created"));
        }
        other => {
            return Err(restart_refused(
                id,
                &format!(
                    "it is {} (its processes exist or sleep); restart is for a sandbox in `error`",
                    other.as_str()
                ),
            ));
        }
    }
    let template = {
        let templates = core.templates.clone();
        let name = record.template.clone();
        tokio::task::spawn_blocking(move || templates.get(&name))
            .await
            .map_err(|e| CoreError::internal(format!("template lookup task: {e}")))?
            .map_err(|e| CoreError::Refused {
                code: codes::RESTART_REFUSED,
                message: format!(
                    "sandbox {id} cannot restart: its template {:?} is not available ({e}); \
                         its files stay until you delete it",
                    record.template
                ),
            })?
    };
    let policy = core.store.sandbox_policy(id).await?;
    let spec = SandboxSpec {
        id: record.id.clone(),
        template: template.name.clone(),
        layers: template.layers.clone(),
        cpus: record.cpus,
        memory_mb: record.memory_mb,
        disk_mb: record.disk_mb,
        pids_max: PIDS_MAX,
        env: record.env.clone(),
        access_token: record.access_token.clone(),
        default_user: template.user.clone(),
        default_workdir: template.workdir.clone(),
        zdr: policy.zdr,
    };
    let handle = match core.runtime.restart_from_files(spec).await {
        Ok(handle) => handle,
        Err(burrow_runtime::RuntimeError::Busy(why)) => {
            return Err(restart_refused(id, &why));
        }
        Err(e) => return Err(e.into()),
    };
    let handle_json = serde_json::to_string(&handle).expect("a handle always serialises");
    let ip = handle.ip.to_string();
    if !core
        .store
        .mark_sandbox_running(id, &handle_json, &ip)
        .await?
    {
        // Deleted meanwhile: honour the delete.
        let _ = core.runtime.destroy(id).await;
        return Err(CoreError::sandbox_not_found(id));
    }
    let sandbox_dir = core.runtime.sandbox_dir(id);
    let idle_timeout = load_idle_timeout(&sandbox_dir).unwrap_or(core.config.default_idle_timeout);
    core.power
        .insert(id, SandboxPower::new(idle_timeout, Power::Awake));
    if let Some(start) = &template.start {
        let token = record.access_token.as_deref().unwrap_or_default();
        if let Err(e) = crate::template_start::run(id, &handle, token, start).await {
            // Keep the files: back to `error`, with the reason, restartable again.
            core.power.remove(id);
            let _ = core.runtime.stop_keeping_files(id).await;
            core.store
                .mark_sandbox_error(id, &format!("restart: {e}"))
                .await?;
            return Err(e);
        }
    }
    if let Err(e) = standby::create_lease_dir(&sandbox_dir, handle.uid_base) {
        tracing::warn!(sandbox = id, "creating /run/burrow/leases: {e}");
    }
    crate::metering::started(core, id);
    tracing::info!(sandbox = id, "sandbox restarted from its files");
    describe_full(core, get(core, id).await?).await
}

fn restart_refused(id: &str, why: &str) -> CoreError {
    CoreError::Refused {
        code: codes::RESTART_REFUSED,
        message: format!("sandbox {id} cannot be restarted: {why}"),
    }
}

/// Fills the retention fields of an API sandbox.
pub fn with_policy(sandbox: &mut Sandbox, policy: burrow_store::SandboxPolicy) {
    sandbox.expiration = (!policy.expiration.is_empty()).then_some(policy.expiration);
    sandbox.zdr = policy.zdr;
}

/// The API view of a sandbox including its retention policy.
pub async fn describe_full(core: &Core, rec: SandboxRecord) -> Result<Sandbox, CoreError> {
    let policy = core.store.sandbox_policy(&rec.id).await?;
    let traffic_token = core.store.traffic_token(&rec.id).await?;
    let mut sandbox = describe(core, rec);
    with_policy(&mut sandbox, policy);
    sandbox.traffic_access_token = traffic_token;
    Ok(sandbox)
}

/// Replaces a sandbox's expiry policy (ZDR is fixed at creation).
pub async fn set_expiration(
    core: &Core,
    id: &str,
    expiration: burrow_types::Expiration,
) -> Result<Sandbox, CoreError> {
    retention::validate(&expiration)?;
    let record = get(core, id).await?;
    let mut policy = core.store.sandbox_policy(id).await?;
    policy.expiration = expiration;
    if !core.store.set_sandbox_policy(id, &policy).await? {
        return Err(CoreError::sandbox_not_found(id));
    }
    describe_full(core, record).await
}

fn save_idle_timeout(sandbox_dir: &std::path::Path, timeout: Duration) -> std::io::Result<()> {
    let json = serde_json::json!({ "idle_timeout": timeout.as_secs() });
    std::fs::write(sandbox_dir.join(STANDBY_FILE), json.to_string())
}

fn load_idle_timeout(sandbox_dir: &std::path::Path) -> Option<Duration> {
    let text = std::fs::read_to_string(sandbox_dir.join(STANDBY_FILE)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["idle_timeout"].as_u64().map(Duration::from_secs)
}

/// Undoes a failed create: runtime resources first, then the row.
async fn abandon(core: &Core, id: &str) {
    if let Err(e) = core.runtime.destroy(id).await {
        tracing::error!(sandbox = id, "cleanup after a failed create: {e}");
    }
    if let Err(e) = core.store.delete_sandbox(id).await {
        tracing::error!(sandbox = id, "removing the row of a failed create: {e}");
    }
    forget(core, id);
}

/// The sandbox's record, or `NotFound`.
pub async fn get(core: &Core, id: &str) -> Result<SandboxRecord, CoreError> {
    if !burrow_types::is_valid_sandbox_id(id) {
        return Err(CoreError::sandbox_not_found(id));
    }
    let record = core
        .store
        .get_sandbox(id)
        .await?
        .ok_or_else(|| CoreError::sandbox_not_found(id))?;
    observe(core, record).await
}

/// Reason recorded for sandboxes whose init died while the daemon was running.
pub const EXITED: &str = "sandbox processes exited unexpectedly";

/// A `running` record whose init is gone (killed, OOM, crashed) is marked `error`, so clients see
/// the truth instead of agent timeouts. Its resources are released when it is deleted.
pub async fn observe(core: &Core, mut record: SandboxRecord) -> Result<SandboxRecord, CoreError> {
    if record.state != SandboxState::Running {
        return Ok(record);
    }
    // In deep standby (or on the way in or out of it) no process runs, by design.
    if core
        .power
        .get(&record.id)
        .is_some_and(|p| p.power() != Power::Awake)
    {
        return Ok(record);
    }
    let Some(handle) = record
        .handle_json
        .as_deref()
        .and_then(|json| serde_json::from_str::<SandboxHandle>(json).ok())
    else {
        return Ok(record);
    };
    if core.runtime.is_alive(&handle) {
        return Ok(record);
    }
    core.store.mark_sandbox_error(&record.id, EXITED).await?;
    record.state = SandboxState::Error;
    record.error = Some(EXITED.to_string());
    record.handle_json = None;
    record.ip = None;
    Ok(record)
}

/// The sandbox and its runtime handle, or `NotFound` / `Refused` if it is not running. A sleeping sandbox is
/// woken first. The returned `activity` keeps it awake until dropped; `source` (`exec`, `files`,
/// `pty`, `tunnel`, `proxy`) is recorded as the sandbox's last activity.
pub async fn running_as(
    core: &Core,
    id: &str,
    source: &'static str,
) -> Result<RunningSandbox, CoreError> {
    let (mut record, mut handle) = running_record(core, id).await?;
    let (guard, restored) = enter(core, id, source).await?;
    if restored {
        // A restore gave init a new host pid.
        (record, handle) = running_record(core, id).await?;
    }
    let activity = Arc::new(guard);
    Ok(RunningSandbox {
        record,
        handle,
        activity,
    })
}

/// The power state of a running sandbox. Create and reconcile register one; a running row
/// without one (a row written by another process, a state this daemon did not track) gets an
/// awake one here. A delete forgets it, and a request that raced with a delete must not bring
/// it back (the idle timer would then try to freeze a sandbox that no longer exists, forever):
/// so no entry while a delete is in flight, and a new entry stays only if the row is still
/// there after it was inserted (a delete that finished before has forgotten the sandbox and
/// would never remove it; one that removes the row later forgets it after).
async fn power_of(core: &Core, id: &str) -> Result<Arc<SandboxPower>, CoreError> {
    if let Some(power) = core.power.get(id) {
        return Ok(power);
    }
    if core.deletes.in_flight(id) {
        return Err(CoreError::sandbox_not_found(id));
    }
    let fresh = SandboxPower::new(core.config.default_idle_timeout, Power::Awake);
    let power = core.power.get_or_insert(id, fresh);
    match core.store.get_sandbox(id).await? {
        Some(rec) if rec.state == SandboxState::Running => Ok(power),
        _ => {
            core.power.remove_if(id, &power);
            Err(CoreError::sandbox_not_found(id))
        }
    }
}

/// Opens a stream on the sandbox, waking it first if it sleeps. Concurrent callers share one
/// wake: the first claims it, the others wait for it to settle. Also says whether the sandbox
/// was restored from deep standby meanwhile (its handle changed).
async fn enter(
    core: &Core,
    id: &str,
    source: &'static str,
) -> Result<(ActivityGuard, bool), CoreError> {
    let power = power_of(core, id).await?;
    let mut restored = false;
    loop {
        match power.enter(source) {
            Entry::Awake(guard) => return Ok((guard, restored)),
            Entry::Wait => {
                // Whoever holds the transition may be restoring it.
                restored = true;
                power.settled().await;
            }
            Entry::MustWake(tier) => {
                restored |= tier == StandbyTier::Deep;
                wake(core, id, &power, tier).await?;
            }
        }
    }
}

/// Wakes a sandbox whose wake this caller claimed: thaw (warm) or CRIU restore (deep).
async fn wake(
    core: &Core,
    id: &str,
    power: &SandboxPower,
    tier: StandbyTier,
) -> Result<(), CoreError> {
    let started = std::time::Instant::now();
    let woke = match tier {
        StandbyTier::Warm => standby::thaw(&core.runtime, id)
            .await
            .map_err(|e| standby_failed(id, "resume", &e)),
        StandbyTier::Deep => restore(core, id).await,
    };
    power.finish_wake(woke.is_ok());
    crate::metering::power_changed(core, id);
    woke?;
    core.metrics.woke(started.elapsed());
    // Off the wake's path: the request goes on while the cap is enforced.
    tokio::spawn(crate::workspaces::enforce_awake_cap(
        core.clone(),
        id.to_string(),
    ));
    tracing::debug!(sandbox = id, ?tier, elapsed = ?started.elapsed(), "resumed");
    Ok(())
}

/// Restores a checkpointed sandbox and records its new handle (init has a new host pid).
async fn restore(core: &Core, id: &str) -> Result<(), CoreError> {
    let handle = core
        .runtime
        .restore(id)
        .await
        .map_err(|e| standby_failed(id, "restore from deep standby", &e))?;
    let json = serde_json::to_string(&handle).expect("a handle always serialises");
    core.store
        .mark_sandbox_running(id, &json, &handle.ip.to_string())
        .await?;
    Ok(())
}

fn standby_failed(id: &str, what: &str, e: &dyn std::fmt::Display) -> CoreError {
    CoreError::Failed {
        code: codes::STANDBY_FAILED,
        message: format!("{what} of sandbox {id} failed: {e}"),
    }
}

/// Puts a sandbox to standby. Already asleep (warm for a warm request, deep for a deep one):
/// nothing to do. Open streams do not prevent an explicit warm standby: they pause with the
/// sandbox and continue when it wakes; a deep standby cuts them (no process is left).
pub async fn standby(core: &Core, id: &str, deep: bool) -> Result<(), CoreError> {
    running_record(core, id).await?;
    refuse_if_zdr(core, id).await?;
    if deep {
        return deep_standby(core, id, None).await;
    }
    let power = power_of(core, id).await?;
    loop {
        match power.begin_sleep(false) {
            SleepClaim::Claimed => break,
            SleepClaim::AlreadyAsleep => return Ok(()),
            SleepClaim::InTransition | SleepClaim::Busy => power.settled().await,
        }
    }
    sleep(core, id, &power).await
}

/// Deep standby: CRIU checkpoint to `<sandbox_dir>/checkpoint/`, from awake or from warm
/// standby. `only_if_warm_for`: the deep-after timer's call (only a sandbox that has been in
/// warm standby that long; anything else is left alone). `Unavailable` if the runtime cannot checkpoint
/// this sandbox (host netns mode); 500 if CRIU fails (the sandbox stays as it was).
pub async fn deep_standby(
    core: &Core,
    id: &str,
    only_if_warm_for: Option<Duration>,
) -> Result<(), CoreError> {
    if let Err(e) = core.runtime.can_checkpoint(id) {
        return Err(CoreError::Unavailable {
            code: codes::STANDBY_FAILED,
            message: format!("deep standby of sandbox {id} is not available: {e}"),
        });
    }
    let power = power_of(core, id).await?;
    loop {
        match power.begin_deep(only_if_warm_for) {
            DeepClaim::FromAwake | DeepClaim::FromWarm => break,
            DeepClaim::AlreadyDeep => return Ok(()),
            DeepClaim::Busy if only_if_warm_for.is_some() => return Ok(()),
            DeepClaim::InTransition if only_if_warm_for.is_some() => return Ok(()),
            DeepClaim::InTransition | DeepClaim::Busy => power.settled().await,
        }
    }
    let started = std::time::Instant::now();
    match core.runtime.checkpoint(id).await {
        Ok(info) => {
            power.finish_deep(Some(info.image_bytes));
            crate::metering::power_changed(core, id);
            core.metrics.slept(started.elapsed());
            tracing::info!(sandbox = id, image_bytes = info.image_bytes,
                elapsed = ?started.elapsed(), "deep standby");
            Ok(())
        }
        Err(e) => {
            power.finish_deep(None);
            Err(standby_failed(id, "deep standby", &e))
        }
    }
}

/// The idle timer's standby: only if the sandbox is still idle when the claim is made.
pub async fn standby_if_idle(core: &Core, id: &str) -> Result<(), CoreError> {
    let Some(power) = core.power.get(id) else {
        return Ok(());
    };
    if core.deletes.in_flight(id) {
        return Ok(());
    }
    match core.store.get_sandbox(id).await? {
        Some(record) if record.state == SandboxState::Running => {}
        // Failed (its processes died): nothing to freeze; it stays until deleted.
        Some(_) => {
            core.power.remove(id);
            return Ok(());
        }
        // A delete forgets the sandbox itself; this is the backstop, so the timer can never
        // retry a sandbox that is gone, forever.
        None => {
            if !core.deletes.in_flight(id) {
                tracing::warn!(
                    sandbox = id,
                    "idle timer: the sandbox is gone; forgetting it"
                );
                forget(core, id);
            }
            return Ok(());
        }
    }
    if core.store.sandbox_policy(id).await?.zdr {
        // Its memory must never leave RAM: at idle timeout a ZDR sandbox is deleted instead.
        if power.idle_due() {
            tracing::info!(sandbox = id, "zero-data-retention sandbox idle: deleting");
            return delete_because(core, id, retention::reasons::ZDR_IDLE, "system").await;
        }
        return Ok(());
    }
    if !core.config.standby_grace.is_zero() && power.begin_grace() {
        let postpone = crate::pre_standby::run_hook(core, id).await;
        power.end_grace(postpone);
    }
    // Atomically re-checks idleness: activity or a lease during the hook keeps it awake.
    if power.begin_sleep(true) != SleepClaim::Claimed {
        return Ok(());
    }
    tracing::debug!(sandbox = id, "idle: going to standby");
    sleep(core, id, &power).await
}

/// `Refused` for zero-data-retention sandboxes: standby would page their memory out.
async fn refuse_if_zdr(core: &Core, id: &str) -> Result<(), CoreError> {
    if core.store.sandbox_policy(id).await?.zdr {
        return Err(CoreError::Refused {
            code: codes::STANDBY_REFUSED,
            message: format!(
                "sandbox '{id}' is zero-data-retention: standby is refused because it would move                  its memory out of RAM; it is deleted at its idle timeout instead"
            ),
        });
    }
    Ok(())
}

async fn sleep(core: &Core, id: &str, power: &SandboxPower) -> Result<(), CoreError> {
    let started = std::time::Instant::now();
    let frozen = standby::freeze(&core.runtime, id, &core.swap).await;
    power.finish_sleep(frozen.is_ok(), StandbyTier::Warm);
    crate::metering::power_changed(core, id);
    if frozen.is_ok() {
        core.metrics.slept(started.elapsed());
    }
    frozen.map_err(|e| standby_failed(id, "standby", &e))
}

/// Wakes a sleeping sandbox; returns whether it was asleep. Counts as activity.
pub async fn resume(core: &Core, id: &str) -> Result<bool, CoreError> {
    running_record(core, id).await?;
    let power = power_of(core, id).await?;
    let mut was_asleep = false;
    loop {
        match power.enter("resume") {
            Entry::Awake(_guard) => return Ok(was_asleep),
            Entry::Wait => {
                was_asleep = true;
                power.settled().await;
            }
            Entry::MustWake(tier) => {
                was_asleep = true;
                wake(core, id, &power, tier).await?;
            }
        }
    }
}

/// A running sandbox's record and handle (asleep or awake), or `NotFound` / `Refused`.
pub(crate) async fn running_record(
    core: &Core,
    id: &str,
) -> Result<(SandboxRecord, SandboxHandle), CoreError> {
    let record = get(core, id).await?;
    let handle = match (&record.state, &record.handle_json) {
        (SandboxState::Running, Some(json)) => serde_json::from_str::<SandboxHandle>(json)
            .map_err(|e| CoreError::internal(format!("stored handle of {id} is invalid: {e}")))?,
        _ => {
            return Err(CoreError::Refused {
                code: codes::SANDBOX_NOT_RUNNING,
                message: format!(
                    "sandbox '{id}' is {}{}; delete it and create a new one",
                    record.state,
                    record
                        .error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ),
            });
        }
    };
    Ok((record, handle))
}

/// Destroys a sandbox's processes and resources at a caller's request (see [`delete_because`]).
pub async fn delete(core: &Core, id: &str) -> Result<(), CoreError> {
    delete_because(core, id, retention::reasons::API, "api").await
}

/// Destroys a sandbox's processes and resources, discards the freed blocks, deletes its row and
/// leaves a tombstone: when, why (`reason`), by whom, and what was erased. Every delete (API,
/// E2B kill and timeout, expiry, ZDR idle) comes here, and ends with [`forget`].
///
/// Idempotent under concurrency: a delete of a sandbox that is being deleted waits for that delete
/// and then succeeds as if it had done it; a delete of a sandbox that is already gone is `NotFound`.
pub async fn delete_because(
    core: &Core,
    id: &str,
    reason: &'static str,
    deleted_by: &str,
) -> Result<(), CoreError> {
    if !burrow_types::is_valid_sandbox_id(id) {
        return Err(CoreError::sandbox_not_found(id));
    }
    let turn = core.deletes.wait_turn(id).await;
    if turn.waited && core.store.get_sandbox(id).await?.is_none() {
        // The delete we waited for did it.
        return Ok(());
    }
    let record = get(core, id).await?;
    let policy = core.store.sandbox_policy(id).await?;
    // The last usage sample covers the time up to the delete.
    crate::metering::sample(core, id, record.handle_json.as_deref()).await;
    let swapped = standby::memcg_bytes(&core.runtime, id).map_or(0, |(_, swap)| swap);
    let processes =
        std::fs::read_to_string(core.runtime.cgroup_dir("pids", id).join("pids.current"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
    let dir = core.runtime.sandbox_dir(id);
    let mut erased =
        tokio::task::spawn_blocking(move || retention::measure(&dir, swapped, processes))
            .await
            .map_err(|e| CoreError::internal(format!("measuring the sandbox: {e}")))?;
    // From here on the timers leave it alone (a request racing with the delete cannot register
    // it again: see `power_of`).
    core.power.remove(id);
    // The runtime kills frozen sandboxes too (it freezes, kills, then thaws).
    core.runtime.destroy(id).await?;
    let sandboxes_dir = core.config.data_dir.join("sandboxes");
    match retention::discard_freed_blocks(&sandboxes_dir).await {
        Ok(note) => {
            erased.blocks_discarded = true;
            erased.notes.push(note);
        }
        Err(e) => {
            tracing::warn!(sandbox = id, "discarding freed blocks: {e}");
            erased
                .notes
                .push(format!("freed blocks NOT discarded: {e}"));
        }
    }
    let usage = core.store.usage(id).await?;
    let tombstone = burrow_types::Tombstone {
        id: id.to_string(),
        template: record.template,
        created_at: record.created_at,
        deleted_at: retention::now_rfc3339(),
        reason: reason.to_string(),
        deleted_by: deleted_by.to_string(),
        zdr: policy.zdr,
        erased,
        usage,
        workspace_id: record.workspace_id.clone(),
    };
    // The tombstone first: a crash in between leaves a record, never an unrecorded deletion.
    core.store.insert_tombstone(&tombstone).await?;
    core.store.delete_sandbox(id).await?;
    forget(core, id);
    core.metrics.deleted(reason);
    drop(turn);
    Ok(())
}

/// Drops everything kept in memory about a sandbox that no longer exists: its power state (so the
/// idle and deep-after timers stop looking at it), its usage meter, its E2B lifecycle (end time)
/// and E2B metric samples. Every path that removes a sandbox's row calls it.
pub fn forget(core: &Core, id: &str) {
    core.power.remove(id);
    core.sandbox_owners.remove(id);
    core.traffic_tokens.remove(id);
    crate::metering::forget(core, id);
    for hook in core.forget_hooks.iter() {
        hook(id);
    }
}

/// The deletes in flight, one per sandbox id, so that concurrent deletes of one sandbox run one
/// after the other: the later ones find it gone and succeed without touching the runtime (whose
/// destroy refuses a sandbox that is already being destroyed).
#[derive(Debug, Default)]
pub struct DeletesInFlight {
    map: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A delete's turn on one sandbox; the next waiting delete goes when it is dropped.
pub struct DeleteTurn<'a> {
    deletes: &'a DeletesInFlight,
    id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Another delete of this sandbox ran first.
    pub waited: bool,
}

impl DeletesInFlight {
    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no other delete of `id` runs, and claims the turn.
    pub async fn wait_turn(&self, id: &str) -> DeleteTurn<'_> {
        let lock = self.lock_map().entry(id.to_string()).or_default().clone();
        // The turn exists before the wait, so a cancelled waiter still cleans up (Drop).
        let mut turn = DeleteTurn {
            deletes: self,
            id: id.to_string(),
            lock: lock.clone(),
            guard: None,
            waited: false,
        };
        turn.guard = Some(match lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                turn.waited = true;
                lock.lock_owned().await
            }
        });
        turn
    }

    /// Whether a delete of `id` is running or waiting.
    pub fn in_flight(&self, id: &str) -> bool {
        self.lock_map().contains_key(id)
    }
}

impl Drop for DeleteTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.deletes.lock_map();
        // Only the map and this turn hold the lock: no delete of this id waits any more.
        if Arc::strong_count(&self.lock) == 2
            && map
                .get(&self.id)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock))
        {
            map.remove(&self.id);
        }
    }
}

/// Reason recorded for sandboxes whose processes died while the daemon was down.
pub const GONE_AFTER_RESTART: &str = "sandbox processes were gone after a restart; its files are kept: restart it (POST /v1/sandboxes/{id}/restart, `burrow restart ID`) or delete it";

/// After a start: rows left in `creating` by a crash are destroyed and removed; the runtime adopts
/// live sandboxes and releases dead ones, which are marked `error`.
pub async fn reconcile(core: &Core) -> Result<(), CoreError> {
    let creating = core
        .store
        .list_sandboxes(burrow_store::SandboxFilter {
            state: Some(SandboxState::Creating),
            labels: Vec::new(),
            workspace_id: None,
        })
        .await?;
    for rec in creating {
        tracing::warn!(
            sandbox = rec.id,
            "removing a sandbox whose creation was interrupted"
        );
        core.runtime.destroy(&rec.id).await?;
        core.store.delete_sandbox(&rec.id).await?;
        forget(core, &rec.id);
    }
    let known = core.store.sandbox_ids().await?;
    let report = core.runtime.reconcile(&known).await?;
    for id in &report.dead {
        if let Some(rec) = core.store.get_sandbox(id).await?
            && rec.state == SandboxState::Running
        {
            core.store
                .mark_sandbox_error(id, GONE_AFTER_RESTART)
                .await?;
        }
    }
    // A running row the runtime neither adopted nor reported dead has nothing behind it.
    let adopted: std::collections::HashSet<&str> = report
        .adopted
        .iter()
        .chain(&report.checkpointed)
        .map(|h| h.id.as_str())
        .collect();
    let running = core
        .store
        .list_sandboxes(burrow_store::SandboxFilter {
            state: Some(SandboxState::Running),
            labels: Vec::new(),
            workspace_id: None,
        })
        .await?;
    for rec in running {
        if !adopted.contains(rec.id.as_str()) {
            core.store
                .mark_sandbox_error(&rec.id, GONE_AFTER_RESTART)
                .await?;
        }
    }
    for handle in &report.adopted {
        // A restore that finished while the daemon was down gave init a new host pid: the
        // row must name it, or the first look at the sandbox would find the old init gone.
        let json = serde_json::to_string(handle)
            .map_err(|e| CoreError::internal(format!("sandbox handle: {e}")))?;
        if let Some(rec) = core.store.get_sandbox(&handle.id).await?
            && rec.state == SandboxState::Running
            && rec.handle_json.as_deref() != Some(json.as_str())
        {
            core.store
                .mark_sandbox_running(&handle.id, &json, &handle.ip.to_string())
                .await?;
        }
        adopt_power(core, &handle.id).await;
    }
    for handle in &report.checkpointed {
        adopt_deep(core, &handle.id);
    }
    tracing::info!(
        adopted = report.adopted.len(),
        deep = report.checkpointed.len(),
        dead = report.dead.len(),
        orphans = report.orphans_removed.len(),
        "reconciled sandboxes"
    );
    Ok(())
}

/// Registers a sandbox adopted in deep standby: asleep until a request restores it.
fn adopt_deep(core: &Core, id: &str) {
    let dir = core.runtime.sandbox_dir(id);
    let timeout = load_idle_timeout(&dir).unwrap_or(core.config.default_idle_timeout);
    let since = std::fs::metadata(dir.join(burrow_runtime::CHECKPOINT_DIR))
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| std::time::SystemTime::now());
    let power = SandboxPower::new(
        timeout,
        Power::Asleep {
            since,
            tier: StandbyTier::Deep,
        },
    );
    power.set_image_bytes(image_size(&dir.join(burrow_runtime::CHECKPOINT_DIR)));
    core.power.insert(id, power);
}

fn image_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Registers an adopted sandbox's power state: frozen ones stay asleep until a request wakes
/// them; one caught half-frozen by a crash is thawed.
async fn adopt_power(core: &Core, id: &str) {
    let dir = core.runtime.sandbox_dir(id);
    let timeout = load_idle_timeout(&dir).unwrap_or(core.config.default_idle_timeout);
    let power = match standby::freezer_state(&core.runtime, id) {
        Some(burrow_standby::freezer::FreezerState::Frozen) => Power::Asleep {
            since: std::time::SystemTime::now(),
            tier: StandbyTier::Warm,
        },
        Some(burrow_standby::freezer::FreezerState::Freezing) => {
            if let Err(e) = standby::thaw(&core.runtime, id).await {
                tracing::warn!(sandbox = id, "thawing a half-frozen sandbox: {e}");
            }
            Power::Awake
        }
        _ => Power::Awake,
    };
    core.power.insert(id, SandboxPower::new(timeout, power));
}
