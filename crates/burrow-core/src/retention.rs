//! Retention: expiry policies and the loop that enforces them, and the erasure record of a
//! deletion (what was there, measured just before it was destroyed; freed blocks discarded after).

use std::path::Path;
use std::time::{Duration, SystemTime};

use burrow_types::{ErasureRecord, Expiration};
use chrono::{DateTime, Utc};

use crate::Core;
use crate::CoreError;

/// How often the expiry loop checks every sandbox.
pub const EXPIRY_TICK: Duration = Duration::from_secs(1);
/// Longest TTL a policy may name (10 years).
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Longest wait for each step of discarding a deleted sandbox's blocks.
const DISCARD_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Reasons recorded in tombstones.
pub mod reasons {
    pub const API: &str = "api";
    pub const TTL_IDLE: &str = "ttl-idle";
    pub const TTL_MAX_AGE: &str = "ttl-max-age";
    pub const DATE: &str = "date";
    pub const MAX_SANDBOX_AGE: &str = "max-sandbox-age";
    pub const ZDR_IDLE: &str = "zdr-idle";
    /// Older than its workspace tier's `max_standby_age`, and asleep.
    pub const WORKSPACE_STANDBY_AGE: &str = "workspace-standby-age";
    /// Its workspace was removed with `--force`.
    pub const WORKSPACE_REMOVED: &str = "workspace-removed";
}

/// Checks a policy a client sent: TTLs in 1..=10 years, `expires_at` RFC 3339 and in the future.
pub fn validate(expiration: &Expiration) -> Result<(), CoreError> {
    for (name, value) in [
        ("ttl_idle", expiration.ttl_idle),
        ("ttl_max_age", expiration.ttl_max_age),
    ] {
        if let Some(secs) = value
            && !(1..=MAX_TTL_SECS).contains(&secs)
        {
            return Err(CoreError::invalid(format!(
                "expiration.{name} must be 1..={MAX_TTL_SECS} seconds (10 years), got {secs}; \
                 leave it out for no limit"
            )));
        }
    }
    if let Some(text) = &expiration.expires_at {
        let at = parse_time(text).ok_or_else(|| {
            CoreError::invalid(format!(
                "expiration.expires_at '{text}' is not an RFC 3339 time (e.g. 2030-01-31T12:00:00Z)"
            ))
        })?;
        if at <= Utc::now() {
            return Err(CoreError::invalid(format!(
                "expiration.expires_at '{text}' is in the past"
            )));
        }
    }
    Ok(())
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What the expiry check knows about one sandbox.
pub struct ExpiryInput<'a> {
    pub expiration: &'a Expiration,
    pub created_at: DateTime<Utc>,
    /// Time since the last activity (0 while something holds it awake); standby counts as idle.
    pub idle_for: Duration,
    /// The server's cap on every sandbox's age.
    pub max_sandbox_age: Option<Duration>,
}

/// The first expiry condition met at `now`, as a tombstone reason.
pub fn due(input: &ExpiryInput<'_>, now: DateTime<Utc>) -> Option<&'static str> {
    let age = (now - input.created_at).to_std().unwrap_or_default();
    let e = input.expiration;
    if e.ttl_idle
        .is_some_and(|t| input.idle_for >= Duration::from_secs(t))
    {
        return Some(reasons::TTL_IDLE);
    }
    if e.ttl_max_age.is_some_and(|t| age >= Duration::from_secs(t)) {
        return Some(reasons::TTL_MAX_AGE);
    }
    if e.expires_at
        .as_deref()
        .and_then(parse_time)
        .is_some_and(|at| now >= at)
    {
        return Some(reasons::DATE);
    }
    if input.max_sandbox_age.is_some_and(|cap| age >= cap) {
        return Some(reasons::MAX_SANDBOX_AGE);
    }
    None
}

/// Deletes every sandbox whose policy (or the server's maximum age) has been met. Runs until
/// aborted.
pub async fn expiry_loop(core: Core) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = expire_due(&core).await {
            tracing::warn!("expiry check failed: {e}");
        }
    }
}

async fn expire_due(core: &Core) -> Result<(), CoreError> {
    let policies: std::collections::HashMap<String, Expiration> = core
        .store
        .sandbox_policies()
        .await?
        .into_iter()
        .map(|(id, p)| (id, p.expiration))
        .collect();
    let max_sandbox_age = core.config.max_sandbox_age;
    let caps = crate::workspaces::standby_age_caps(core).await?;
    if policies.is_empty() && max_sandbox_age.is_none() && caps.values().all(Option::is_none) {
        return Ok(());
    }
    let none = Expiration::default();
    let now = Utc::now();
    // Only sandboxes that could be due are read in full: those with a policy, and those older
    // than a cap (from a light id/workspace/created_at scan), so a server with tens of thousands
    // of sandboxes does not decode every row every second.
    let mut candidates: std::collections::BTreeSet<String> = policies.keys().cloned().collect();
    let least_cap = caps
        .values()
        .flatten()
        .chain(max_sandbox_age.iter())
        .min()
        .copied();
    if let Some(least_cap) = least_cap {
        for (id, workspace, created) in core.store.sandbox_ages().await? {
            let Some(age) = parse_time(&created).and_then(|c| (now - c).to_std().ok()) else {
                continue;
            };
            if age < least_cap {
                // Oldest first: the rest are younger still.
                break;
            }
            let cap = caps.get(&workspace).copied().flatten();
            if cap.is_some_and(|c| age >= c) || max_sandbox_age.is_some_and(|c| age >= c) {
                candidates.insert(id);
            }
        }
    }
    for id in candidates {
        let Some(record) = core.store.get_sandbox(&id).await? else {
            continue;
        };
        if record.state == burrow_types::SandboxState::Creating {
            continue;
        }
        let Some(created_at) = parse_time(&record.created_at) else {
            continue;
        };
        let idle_for = core
            .power
            .get(&record.id)
            .map_or(Duration::ZERO, |p| p.idle_for());
        let input = ExpiryInput {
            expiration: policies.get(&record.id).unwrap_or(&none),
            created_at,
            idle_for,
            max_sandbox_age,
        };
        // The workspace's standby-age cap takes sandboxes that sleep (or whose processes are
        // gone); awake work is never cut: an awake sandbox past the cap goes once it sleeps.
        let over_workspace_cap = caps
            .get(&record.workspace_id)
            .copied()
            .flatten()
            .is_some_and(|cap| (now - created_at).to_std().unwrap_or_default() >= cap)
            && (record.state == burrow_types::SandboxState::Error
                || core.power.is_asleep(&record.id));
        let reason =
            due(&input, now).or(over_workspace_cap.then_some(reasons::WORKSPACE_STANDBY_AGE));
        if let Some(reason) = reason {
            tracing::info!(sandbox = record.id, reason, "expired: deleting");
            if let Err(e) =
                crate::sandboxes::delete_because(core, &record.id, reason, "system").await
            {
                tracing::warn!(sandbox = record.id, "expiry delete failed: {e}");
            }
        }
    }
    Ok(())
}

/// Measures what a sandbox holds on disk and in swap, just before it is destroyed.
pub fn measure(sandbox_dir: &Path, swapped_bytes: u64, processes: u64) -> ErasureRecord {
    let mut record = ErasureRecord {
        upper_dir_bytes: tree_bytes(&sandbox_dir.join("upper")),
        agent_log_bytes: std::fs::symlink_metadata(sandbox_dir.join("agent.log"))
            .map_or(0, |m| m.len()),
        swapped_bytes,
        processes_killed: processes,
        ..ErasureRecord::default()
    };
    // Anything besides the runtime's known entries is a checkpoint (deep standby images).
    const KNOWN: &[&str] = &[
        "upper",
        "work",
        "rootfs",
        "agent.log",
        "runtime.json",
        "standby.json",
        "launch.json",
        "limits.json",
    ];
    if let Ok(entries) = std::fs::read_dir(sandbox_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !KNOWN.iter().any(|k| name == *k) {
                record.checkpoint_bytes += tree_bytes(&entry.path());
            }
        }
    }
    record.notes.push(
        "processes killed (SIGKILL, frozen ones too); their zram swap slots are freed by the \
         kernel as their memory is torn down"
            .to_string(),
    );
    record
}

/// Bytes of regular files under `path` (symlinks not followed).
pub fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries.flatten().map(|e| tree_bytes(&e.path())).sum()
}

/// After a subvolume is deleted: waits until btrfs has really dropped it, then discards the free
/// space (`fstrim`), which punches holes in a loop-mounted `sandboxes.img` so the deleted blocks
/// do not linger in the image file. Returns a note for the erasure record.
pub async fn discard_freed_blocks(sandboxes_dir: &Path) -> Result<String, String> {
    // A commit wakes btrfs' cleaner, which drops deleted subvolumes (otherwise it waits for the
    // next periodic commit, up to 30 s); the second commit makes the freed extents free space.
    run("btrfs", &["filesystem", "sync"], sandboxes_dir).await?;
    run("btrfs", &["subvolume", "sync"], sandboxes_dir).await?;
    run("btrfs", &["filesystem", "sync"], sandboxes_dir).await?;
    run("fstrim", &[], sandboxes_dir).await?;
    Ok(format!(
        "free space of {} discarded (btrfs subvolume sync + fstrim)",
        sandboxes_dir.display()
    ))
}

async fn run(program: &str, args: &[&str], dir: &Path) -> Result<(), String> {
    let command = tokio::process::Command::new(program)
        .args(args)
        .arg(dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DISCARD_STEP_TIMEOUT, command)
        .await
        .map_err(|_| {
            format!(
                "{program} {} {} took longer than {DISCARD_STEP_TIMEOUT:?}",
                args.join(" "),
                dir.display()
            )
        })?
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

pub fn now_rfc3339() -> String {
    crate::power::rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(e: &Expiration, age_secs: i64, idle_secs: u64) -> (ExpiryInput<'_>, DateTime<Utc>) {
        let now = Utc::now();
        (
            ExpiryInput {
                expiration: e,
                created_at: now - chrono::Duration::seconds(age_secs),
                idle_for: Duration::from_secs(idle_secs),
                max_sandbox_age: None,
            },
            now,
        )
    }

    #[test]
    fn first_condition_met_wins() {
        let e = Expiration {
            ttl_idle: Some(60),
            ttl_max_age: Some(3600),
            expires_at: Some("2000-01-01T00:00:00Z".into()),
        };
        let (i, now) = input(&e, 10, 61);
        assert_eq!(due(&i, now), Some(reasons::TTL_IDLE));
        let (i, now) = input(&e, 3600, 0);
        assert_eq!(due(&i, now), Some(reasons::TTL_MAX_AGE));
        let (i, now) = input(&e, 10, 0);
        assert_eq!(due(&i, now), Some(reasons::DATE));
        let none = Expiration::default();
        let (mut i, now) = input(&none, 100, 100);
        assert_eq!(due(&i, now), None);
        i.max_sandbox_age = Some(Duration::from_secs(100));
        assert_eq!(due(&i, now), Some(reasons::MAX_SANDBOX_AGE));
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |e: Expiration| validate(&e).unwrap_err().to_string();
        assert!(
            bad(Expiration {
                ttl_idle: Some(0),
                ..Default::default()
            })
            .contains("ttl_idle")
        );
        assert!(
            bad(Expiration {
                expires_at: Some("tomorrow".into()),
                ..Default::default()
            })
            .contains("RFC 3339")
        );
        assert!(
            bad(Expiration {
                expires_at: Some("2001-01-01T00:00:00Z".into()),
                ..Default::default()
            })
            .contains("past")
        );
        validate(&Expiration {
            ttl_max_age: Some(7 * 86400),
            ..Default::default()
        })
        .unwrap();
    }
}

/// The figures a cost projection scales up, measured on this server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MeasuredFigures {
    /// `workspace` (the caller's own usage) or `server` (the workspace had none yet).
    pub scope: &'static str,
    /// Share of metered time sandboxes were awake; `None` before anything was metered.
    pub active_ratio: Option<f64>,
    pub per_sandbox: crate::cost::PerSandbox,
    /// The usage totals they come from.
    pub usage: burrow_types::Usage,
    /// Live sandboxes the allocation averages come from.
    pub live_sandboxes: u64,
}

/// Averages from the usage records (lifetime, deleted sandboxes included) and the live
/// sandboxes' sizes: memory GB while awake = active GB-s / awake s (metering counts the memory
/// limit); storage GB while asleep = standby GB-s / asleep s; vCPUs = the live sandboxes' mean
/// allocation (1 if none).
pub async fn measured_figures(
    core: &Core,
    workspace: Option<&str>,
) -> Result<MeasuredFigures, CoreError> {
    let mut scope = if workspace.is_some() {
        "workspace"
    } else {
        "server"
    };
    let mut usage = core.store.usage_total(workspace).await?;
    let mut live_filter = workspace.map(str::to_string);
    if usage.running_seconds + usage.standby_seconds <= 0.0 && workspace.is_some() {
        usage = core.store.usage_total(None).await?;
        scope = "server";
        live_filter = None;
    }
    let live = core
        .store
        .list_sandboxes(burrow_store::SandboxFilter {
            workspace_id: live_filter,
            ..Default::default()
        })
        .await?;
    let n = live.len() as f64;
    let mean = |f: &dyn Fn(&burrow_store::SandboxRecord) -> f64, default: f64| {
        if live.is_empty() {
            default
        } else {
            live.iter().map(f).sum::<f64>() / n
        }
    };
    let vcpus = mean(&|r| r.cpus, 1.0);
    let memory_gb = if usage.running_seconds > 0.0 {
        usage.active_gb_seconds / usage.running_seconds
    } else {
        mean(
            &|r| r.memory_mb as f64 * 1_048_576.0 / 1e9,
            0.512 * 1.048_576,
        )
    };
    let standby_storage_gb = if usage.standby_seconds > 0.0 {
        usage.standby_storage_gb_seconds / usage.standby_seconds
    } else {
        0.0
    };
    let metered = usage.running_seconds + usage.standby_seconds;
    Ok(MeasuredFigures {
        scope,
        active_ratio: (metered > 0.0).then(|| usage.running_seconds / metered),
        per_sandbox: crate::cost::PerSandbox {
            vcpus,
            memory_gb,
            standby_storage_gb,
        },
        usage,
        live_sandboxes: live.len() as u64,
    })
}

/// A sandbox older than the window that still exists, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetentionException {
    pub id: String,
    pub workspace_id: String,
    pub created_at: String,
    pub state: String,
    pub why: String,
}

/// The answer to "was every sandbox older than the window deleted, and what was erased?".
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetentionReport {
    /// The workspace asked about (`None`: every workspace).
    pub workspace_id: Option<String>,
    pub window_seconds: u64,
    /// Sandboxes created before this are older than the window.
    pub cutoff: String,
    pub generated_at: String,
    /// True when no sandbox older than the window exists.
    pub all_deleted: bool,
    /// Deleted sandboxes that were created before the cutoff, with their erasure records.
    pub deleted: Vec<burrow_types::Tombstone>,
    /// Sandboxes created before the cutoff that still exist.
    pub exceptions: Vec<RetentionException>,
}

pub async fn report(
    core: &Core,
    workspace: Option<&str>,
    window: Duration,
) -> Result<RetentionReport, CoreError> {
    let now = Utc::now();
    // A window reaching before the earliest representable time covers every sandbox (a
    // plain `-` would panic on it: `?window=1000000y` was a 500).
    let cutoff = chrono::Duration::from_std(window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let cutoff_text = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let deleted: Vec<burrow_types::Tombstone> = core
        .store
        .tombstones(workspace, None)
        .await?
        .into_iter()
        .filter(|t| parse_time(&t.created_at).is_some_and(|c| c < cutoff))
        .collect();
    let caps = crate::workspaces::standby_age_caps(core).await?;
    let policies: std::collections::HashMap<String, Expiration> = core
        .store
        .sandbox_policies()
        .await?
        .into_iter()
        .map(|(id, p)| (id, p.expiration))
        .collect();
    let mut exceptions = Vec::new();
    let live = core
        .store
        .list_sandboxes(burrow_store::SandboxFilter {
            workspace_id: workspace.map(str::to_string),
            ..Default::default()
        })
        .await?;
    for record in live {
        if parse_time(&record.created_at).is_none_or(|c| c >= cutoff) {
            continue;
        }
        let awake = !core.power.is_asleep(&record.id);
        let cap = caps.get(&record.workspace_id).copied().flatten();
        let policy = policies.get(&record.id);
        let why = match cap {
            Some(cap) if cap <= window && awake => format!(
                "awake: its workspace's standby-age cap ({}) deletes it once it sleeps",
                humantime::format_duration(cap)
            ),
            Some(cap) if cap <= window => {
                "past its workspace's standby-age cap: due at the next expiry check".to_string()
            }
            Some(cap) => format!(
                "its workspace's standby-age cap ({}) is longer than the window",
                humantime::format_duration(cap)
            ),
            None if policy.is_some_and(|p| *p != Expiration::default()) => {
                "kept by its expiry policy, which has not been met".to_string()
            }
            None => "its workspace's tier keeps sandboxes indefinitely and it has no expiry \
                     policy"
                .to_string(),
        };
        exceptions.push(RetentionException {
            id: record.id,
            workspace_id: record.workspace_id,
            created_at: record.created_at,
            state: record.state.as_str().to_string(),
            why,
        });
    }
    Ok(RetentionReport {
        workspace_id: workspace.map(str::to_string),
        window_seconds: window.as_secs(),
        cutoff: cutoff_text,
        generated_at: now_rfc3339(),
        all_deleted: exceptions.is_empty(),
        deleted,
        exceptions,
    })
}
