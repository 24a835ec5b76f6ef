//! The way down and the way back up: which sandboxes a graceful shutdown checkpoints to disk
//! (`--deep-on-shutdown`), and, at the next start, the ones that were awake then, restored at once.

use std::path::Path;
use std::time::{Duration, Instant};

use burrow_types::StandbyTier;

use crate::Core;
use crate::config::DeepOnShutdown;
use crate::power::Power;
use crate::sandboxes;

/// Marker in a sandbox's dir: it was awake when a shutdown checkpointed it, so the next start
/// restores it without waiting for a request.
pub const RESUME_ON_START: &str = "resume-on-start";

/// On graceful shutdown: sends sandboxes to deep standby, one after the other, within `budget`:
/// with [`DeepOnShutdown::All`] the awake ones first (their processes are doing something; each
/// gets the marker), then those in warm standby. Zero-data-retention sandboxes are never
/// written to disk: they stay awake and do not survive a host reboot.
pub async fn deep_on_shutdown(core: &Core, mode: DeepOnShutdown, budget: Duration) {
    if mode == DeepOnShutdown::Off
        || core.runtime.netns_mode() != burrow_runtime::NetnsMode::Sandbox
    {
        return;
    }
    let deadline = Instant::now() + budget;
    let mut awake = Vec::new();
    let mut warm = Vec::new();
    for (id, power) in core.power.all() {
        match power.power() {
            Power::Awake if mode == DeepOnShutdown::All => awake.push(id),
            Power::Asleep {
                tier: StandbyTier::Warm,
                ..
            } => warm.push(id),
            _ => {}
        }
    }
    let total = awake.len() + warm.len();
    let order = awake
        .into_iter()
        .map(|id| (id, true))
        .chain(warm.into_iter().map(|id| (id, false)));
    let mut checkpointed = 0;
    for (done, (id, was_awake)) in order.enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                left = total - done,
                "shutdown: no time left; the remaining sandboxes stay as they are"
            );
            break;
        }
        if was_awake && is_zdr(core, &id).await {
            continue;
        }
        // From awake: any state; from warm: only if it is still in warm standby.
        let only_if_warm_for = (!was_awake).then_some(Duration::ZERO);
        match tokio::time::timeout(left, sandboxes::deep_standby(core, &id, only_if_warm_for)).await
        {
            Ok(Ok(())) => {
                checkpointed += 1;
                if was_awake {
                    mark_resume_on_start(&core.runtime.sandbox_dir(&id));
                }
            }
            Ok(Err(e)) => tracing::warn!(sandbox = id, "shutdown: deep standby failed: {e}"),
            Err(_) => tracing::warn!(sandbox = id, "shutdown: deep standby took too long"),
        }
    }
    if total > 0 {
        tracing::info!(
            checkpointed,
            of = total,
            ?mode,
            "shutdown: sandboxes went to deep standby"
        );
    }
}

async fn is_zdr(core: &Core, id: &str) -> bool {
    match core.store.sandbox_policy(id).await {
        Ok(policy) => policy.zdr,
        // Unknown policy: never risk writing a ZDR sandbox's memory to disk.
        Err(e) => {
            tracing::warn!(sandbox = id, "shutdown: no policy ({e}); left awake");
            true
        }
    }
}

fn mark_resume_on_start(dir: &Path) {
    // Synced: the point is to survive a reboot that follows right away.
    let written = std::fs::File::create(dir.join(RESUME_ON_START)).and_then(|f| f.sync_all());
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), "shutdown: cannot mark for a restore on start: {e}");
    }
}

/// After a start: restores, one after the other, the sandboxes a shutdown checkpointed while
/// they were awake. Each marker is removed before its restore is tried, so a sandbox that
/// cannot be restored is not retried at every start (it stays in deep standby; a request
/// tries again and reports the error).
pub async fn resume_marked(core: Core) {
    let mut resumed = 0;
    for (id, power) in core.power.all() {
        let marker = core.runtime.sandbox_dir(&id).join(RESUME_ON_START);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(sandbox = id, "cannot remove {}: {e}", marker.display());
                continue;
            }
        }
        if !matches!(
            power.power(),
            Power::Asleep {
                tier: StandbyTier::Deep,
                ..
            }
        ) {
            continue;
        }
        match sandboxes::resume(&core, &id).await {
            Ok(_) => resumed += 1,
            Err(e) => tracing::warn!(
                sandbox = id,
                "restoring a sandbox that was awake at shutdown failed: {e}"
            ),
        }
    }
    if resumed > 0 {
        tracing::info!(
            sandboxes = resumed,
            "restored the sandboxes that were awake at shutdown"
        );
    }
}
