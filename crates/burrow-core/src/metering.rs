//! Metering: a sampler that accumulates each sandbox's usage in the store (active GB-seconds,
//! CPU-seconds, standby storage GB-seconds, split by state), and the daemon's Prometheus metrics.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burrow_runtime::SandboxHandle;
use burrow_types::{SandboxState, Usage};

use crate::Core;
use crate::power::Power;

const GB: f64 = 1e9;

/// One sandbox's meter: where the last sample left off, and the awake/asleep seconds since then.
/// Power transitions split the time ([`power_changed`]), so the state at sample time never
/// gets credited with the whole interval.
#[derive(Debug, Clone, Copy)]
struct Meter {
    /// When the seconds below were last brought up to date.
    at: Instant,
    /// CPU seconds at the last sample.
    cpu: f64,
    /// The state since `at`, as of the last transition the meter was told about.
    asleep: bool,
    awake_secs: f64,
    asleep_secs: f64,
}

impl Meter {
    fn new(at: Instant, cpu: f64, asleep: bool) -> Self {
        Self {
            at,
            cpu,
            asleep,
            awake_secs: 0.0,
            asleep_secs: 0.0,
        }
    }

    /// Credits the time since `at` to the current state.
    fn advance(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        if self.asleep {
            self.asleep_secs += secs;
        } else {
            self.awake_secs += secs;
        }
        self.at = now;
    }

    /// The (awake, asleep) seconds accumulated so far; the meter starts again from zero.
    fn take(&mut self, now: Instant) -> (f64, f64) {
        self.advance(now);
        let taken = (self.awake_secs, self.asleep_secs);
        self.awake_secs = 0.0;
        self.asleep_secs = 0.0;
        taken
    }
}

/// The meters of every sandbox (one short std mutex; no I/O under it).
#[derive(Debug, Default)]
pub struct Sampler {
    meters: Mutex<HashMap<String, Meter>>,
}

impl Sampler {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Meter>> {
        self.meters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the power state counts as standby for metering: from the end of the freeze (or
/// checkpoint) to the end of the thaw (or restore).
fn is_asleep(core: &Core, id: &str) -> bool {
    core.power
        .get(id)
        .is_some_and(|p| matches!(p.power(), Power::Asleep { .. } | Power::Waking))
}

/// Starts metering a sandbox that was just created (awake, no CPU time yet).
pub fn started(core: &Core, id: &str) {
    core.sampler
        .lock()
        .entry(id.to_string())
        .or_insert_with(|| Meter::new(Instant::now(), 0.0, false));
}

/// Call right after a power transition of `id` ended (successfully or not): the time until now
/// is credited to the state before it, the time from now to the state after it. Cheap (no I/O),
/// for the sleep and wake paths.
pub fn power_changed(core: &Core, id: &str) {
    let asleep = is_asleep(core, id);
    let now = Instant::now();
    let mut meters = core.sampler.lock();
    match meters.get_mut(id) {
        Some(meter) => {
            meter.advance(now);
            meter.asleep = asleep;
        }
        // Not sampled since the daemon started: the next sample counts all its CPU time.
        None => {
            meters.insert(id.to_string(), Meter::new(now, 0.0, asleep));
        }
    }
}

/// Samples every sandbox every `meter_interval`. Runs until aborted.
pub async fn meter_loop(core: Core) {
    let mut tick = tokio::time::interval(core.config.meter_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let records = match core
            .store
            .list_sandboxes(burrow_store::SandboxFilter {
                state: Some(SandboxState::Running),
                labels: Vec::new(),
                workspace_id: None,
            })
            .await
        {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!("metering: listing sandboxes: {e}");
                continue;
            }
        };
        for record in records {
            sample(&core, &record.id, record.handle_json.as_deref()).await;
        }
    }
}

/// Adds the usage since the previous sample of one sandbox to the store: its awake and asleep
/// seconds as split by the power transitions in between. A sandbox first seen (adopted after a
/// daemon restart) counts one interval in its current state, and all CPU time used so far.
pub async fn sample(core: &Core, id: &str, handle_json: Option<&str>) {
    let Some(handle) = handle_json.and_then(|j| serde_json::from_str::<SandboxHandle>(j).ok())
    else {
        return;
    };
    let Ok(now_usage) = core.runtime.usage(&handle).await else {
        return;
    };
    let asleep_now = is_asleep(core, id);
    let now = Instant::now();
    let (awake_secs, asleep_secs, cpu_delta) = {
        let mut meters = core.sampler.lock();
        match meters.get_mut(id) {
            Some(meter) => {
                let (awake, asleep) = meter.take(now);
                let cpu = (now_usage.cpu_seconds - meter.cpu).max(0.0);
                meter.cpu = now_usage.cpu_seconds;
                (awake, asleep, cpu)
            }
            None => {
                meters.insert(
                    id.to_string(),
                    Meter::new(now, now_usage.cpu_seconds, asleep_now),
                );
                let secs = core.config.meter_interval.as_secs_f64();
                let (awake, asleep) = if asleep_now { (0.0, secs) } else { (secs, 0.0) };
                (awake, asleep, now_usage.cpu_seconds)
            }
        }
    };
    let mut delta = Usage {
        cpu_seconds: cpu_delta,
        running_seconds: awake_secs,
        active_gb_seconds: now_usage.memory_limit_bytes as f64 / GB * awake_secs,
        standby_seconds: asleep_secs,
        ..Usage::default()
    };
    if asleep_secs > 0.0 {
        let swapped = crate::standby::memcg_bytes(&core.runtime, id).map_or(0, |(_, swap)| swap);
        delta.standby_storage_gb_seconds =
            (now_usage.disk_bytes + swapped) as f64 / GB * asleep_secs;
    }
    if let Err(e) = core.store.add_usage(id, &delta).await {
        tracing::warn!(sandbox = id, "metering: storing usage: {e}");
    }
}

/// Forgets a deleted sandbox's meter.
pub fn forget(core: &Core, id: &str) {
    core.sampler.lock().remove(id);
}

/// Latency histogram buckets, in seconds.
const BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The daemon's counters. Labels come from small fixed sets (state, deletion reason): never a
/// sandbox id.
#[derive(Debug, Default)]
pub struct Metrics {
    creates: AtomicU64,
    idle_standby_failures: AtomicU64,
    deletes: Mutex<BTreeMap<&'static str, u64>>,
    standby: Histogram,
    resume: Histogram,
}

impl Metrics {
    pub fn created(&self) {
        self.creates.fetch_add(1, Ordering::Relaxed);
    }

    pub fn deleted(&self, reason: &'static str) {
        *self
            .deletes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn idle_standby_failed(&self) {
        self.idle_standby_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn slept(&self, elapsed: Duration) {
        self.standby.observe(elapsed);
    }

    pub fn woke(&self, elapsed: Duration) {
        self.resume.observe(elapsed);
    }
}

/// Most workspaces given their own label value in per-workspace metrics; the rest are summed
/// under `workspace="other"`, so a server with many workspaces keeps a bounded series count.
const MAX_WORKSPACE_LABELS: usize = 200;

/// The Prometheus text exposition (format 0.0.4). With `workspace` (a workspace key's call),
/// only that workspace's sandboxes and usage: server-wide counters would show other tenants'
/// activity.
pub async fn render(core: &Core, workspace: Option<&str>) -> Result<String, crate::CoreError> {
    if let Some(ws) = workspace {
        let mut out = String::new();
        render_sandboxes(core, Some(ws), &mut out).await?;
        render_usage(core, Some(ws), &mut out).await?;
        return Ok(out);
    }
    let m = &core.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP burrow_sandbox_creates_total Sandboxes created.\n\
         # TYPE burrow_sandbox_creates_total counter\n\
         burrow_sandbox_creates_total {}",
        m.creates.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP burrow_sandbox_deletes_total Sandboxes deleted, by reason (api or an expiry policy).\n\
         # TYPE burrow_sandbox_deletes_total counter"
    );
    for (reason, n) in m.deletes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(
            out,
            "burrow_sandbox_deletes_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP burrow_idle_standby_failures_total Standbys started by the idle timer that failed.\n\
         # TYPE burrow_idle_standby_failures_total counter\n\
         burrow_idle_standby_failures_total {}",
        m.idle_standby_failures.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP burrow_power_tracked_sandboxes Sandboxes whose power state the idle and deep-after \
         timers track (one per existing running sandbox).\n\
         # TYPE burrow_power_tracked_sandboxes gauge\n\
         burrow_power_tracked_sandboxes {}",
        core.power.len()
    );
    m.standby.render(
        &mut out,
        "burrow_standby_seconds",
        "Time to put a sandbox to standby (freeze + page-out).",
    );
    m.resume.render(
        &mut out,
        "burrow_resume_seconds",
        "Time to wake a sandbox from standby.",
    );
    render_sandboxes(core, None, &mut out).await?;
    render_usage(core, None, &mut out).await?;
    // Per workspace (bounded label cardinality: see MAX_WORKSPACE_LABELS).
    let names: HashMap<String, String> = core
        .store
        .list_workspaces()
        .await?
        .into_iter()
        .map(|w| (w.id, w.name))
        .collect();
    let mut per: BTreeMap<String, burrow_types::Usage> = BTreeMap::new();
    for (ws, usage) in core.store.usage_by_workspace().await? {
        let label = match names.get(&ws) {
            Some(name) if per.len() < MAX_WORKSPACE_LABELS || per.contains_key(name) => {
                name.clone()
            }
            Some(_) => "other".to_string(),
            None => "removed".to_string(),
        };
        let entry = per.entry(label).or_default();
        entry.active_gb_seconds += usage.active_gb_seconds;
        entry.cpu_seconds += usage.cpu_seconds;
        entry.standby_storage_gb_seconds += usage.standby_storage_gb_seconds;
    }
    for (name, help, pick) in [
        (
            "burrow_workspace_active_gb_seconds_total",
            "Memory limit (GB) x seconds awake, per workspace.",
            (|u: &burrow_types::Usage| u.active_gb_seconds) as fn(&burrow_types::Usage) -> f64,
        ),
        (
            "burrow_workspace_cpu_seconds_total",
            "CPU seconds used, per workspace.",
            |u| u.cpu_seconds,
        ),
        (
            "burrow_workspace_standby_storage_gb_seconds_total",
            "Stored GB x seconds in standby, per workspace.",
            |u| u.standby_storage_gb_seconds,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (ws, usage) in &per {
            let _ = writeln!(out, "{name}{{workspace=\"{ws}\"}} {}", pick(usage));
        }
    }
    Ok(out)
}

async fn render_sandboxes(
    core: &Core,
    workspace: Option<&str>,
    out: &mut String,
) -> Result<(), crate::CoreError> {
    let mut by_state: BTreeMap<&'static str, u64> =
        SandboxState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    let filter = burrow_store::SandboxFilter {
        workspace_id: workspace.map(str::to_string),
        ..Default::default()
    };
    for record in core.store.list_sandboxes(filter).await? {
        let asleep = record.state == SandboxState::Running
            && core.power.get(&record.id).is_some_and(|p| !p.info().awake);
        let shown = if asleep {
            SandboxState::Standby
        } else {
            record.state
        };
        *by_state.entry(shown.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "# HELP burrow_sandboxes Sandboxes by state.\n# TYPE burrow_sandboxes gauge"
    );
    for (s, n) in by_state {
        let _ = writeln!(out, "burrow_sandboxes{{state=\"{s}\"}} {n}");
    }
    Ok(())
}

async fn render_usage(
    core: &Core,
    workspace: Option<&str>,
    out: &mut String,
) -> Result<(), crate::CoreError> {
    let total = core.store.usage_total(workspace).await?;
    for (name, help, value) in [
        (
            "burrow_usage_active_gb_seconds_total",
            "Memory limit (GB) x seconds awake, all sandboxes.",
            total.active_gb_seconds,
        ),
        (
            "burrow_usage_cpu_seconds_total",
            "CPU seconds used, all sandboxes.",
            total.cpu_seconds,
        ),
        (
            "burrow_usage_standby_storage_gb_seconds_total",
            "Stored GB x seconds in standby, all sandboxes.",
            total.standby_storage_gb_seconds,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_split_the_interval() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0, 0.0, false);
        // awake 2 s, asleep 3 s, awake 1 s: a transition at 2 s and at 5 s, a sample at 6 s.
        meter.advance(t0 + Duration::from_secs(2));
        meter.asleep = true;
        meter.advance(t0 + Duration::from_secs(5));
        meter.asleep = false;
        assert_eq!(meter.take(t0 + Duration::from_secs(6)), (3.0, 3.0));
        // The next sample starts from zero.
        assert_eq!(meter.take(t0 + Duration::from_secs(7)), (1.0, 0.0));
    }
}
