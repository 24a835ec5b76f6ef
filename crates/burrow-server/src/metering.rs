//! Metering: a sampler that accumulates each sandbox's usage in the store (active GB-seconds,
//! CPU-seconds, standby storage GB-seconds, split by state), and the daemon's Prometheus metrics.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burrow_runtime::SandboxHandle;
use burrow_types::{SandboxState, Usage};

use crate::state::AppState;

const GB: f64 = 1e9;

/// What the sampler saw last time, per sandbox.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, (Instant, f64)>>,
}

impl Sampler {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, f64)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Samples every sandbox every `meter_interval`. Runs until aborted.
pub async fn meter_loop(state: AppState) {
    let mut tick = tokio::time::interval(state.config.meter_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let records = match state
            .store
            .list_sandboxes(burrow_store::SandboxFilter {
                state: Some(SandboxState::Running),
                labels: Vec::new(),
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
            sample(&state, &record.id, record.handle_json.as_deref()).await;
        }
    }
}

/// Adds the usage since the previous sample of one sandbox to the store. The first sample counts
/// one interval (and all CPU time used so far).
pub async fn sample(state: &AppState, id: &str, handle_json: Option<&str>) {
    let Some(handle) = handle_json.and_then(|j| serde_json::from_str::<SandboxHandle>(j).ok())
    else {
        return;
    };
    let Ok(now_usage) = state.runtime.usage(&handle).await else {
        return;
    };
    let asleep = state.power.get(id).is_some_and(|p| !p.info().awake);
    let now = Instant::now();
    let (dt, cpu_delta) = {
        let mut last = state.sampler.lock();
        let previous = last.insert(id.to_string(), (now, now_usage.cpu_seconds));
        match previous {
            Some((at, cpu)) => (
                now.duration_since(at),
                (now_usage.cpu_seconds - cpu).max(0.0),
            ),
            None => (state.config.meter_interval, now_usage.cpu_seconds),
        }
    };
    let secs = dt.as_secs_f64();
    let mut delta = Usage {
        cpu_seconds: cpu_delta,
        ..Usage::default()
    };
    if asleep {
        let swapped = crate::standby::memcg_bytes(&state.runtime, id).map_or(0, |(_, swap)| swap);
        delta.standby_seconds = secs;
        delta.standby_storage_gb_seconds = (now_usage.disk_bytes + swapped) as f64 / GB * secs;
    } else {
        delta.running_seconds = secs;
        delta.active_gb_seconds = now_usage.memory_limit_bytes as f64 / GB * secs;
    }
    if let Err(e) = state.store.add_usage(id, &delta).await {
        tracing::warn!(sandbox = id, "metering: storing usage: {e}");
    }
}

/// Forgets a deleted sandbox's sampler state.
pub fn forget(state: &AppState, id: &str) {
    state.sampler.lock().remove(id);
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

    pub fn slept(&self, elapsed: Duration) {
        self.standby.observe(elapsed);
    }

    pub fn woke(&self, elapsed: Duration) {
        self.resume.observe(elapsed);
    }
}

/// The Prometheus text exposition (format 0.0.4).
pub async fn render(state: &AppState) -> Result<String, crate::error::HttpError> {
    let m = &state.metrics;
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
    let mut by_state: BTreeMap<&'static str, u64> =
        SandboxState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for record in state.store.list_sandboxes(Default::default()).await? {
        let asleep = record.state == SandboxState::Running
            && state.power.get(&record.id).is_some_and(|p| !p.info().awake);
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
    let total = state.store.usage_total().await?;
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
    Ok(out)
}
