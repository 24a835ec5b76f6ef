//! Resource usage samples for E2B's `GET /sandboxes/{id}/metrics`, taken on demand from the
//! runtime's cgroup readings and kept in a small ring per sandbox so repeated calls show history.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burrow_e2b::SandboxMetric;
use burrow_runtime::SandboxUsage;
use chrono::{DateTime, Utc};

/// Samples kept per sandbox.
pub const RING_SIZE: usize = 120;
/// A CPU percentage needs two readings at least this far apart.
pub const MIN_CPU_WINDOW: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
struct Sample {
    taken: Instant,
    cpu_seconds: f64,
    metric: SandboxMetric,
}

/// The limits a sample is reported against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub cpu_count: u32,
    pub disk_total_bytes: u64,
}

#[derive(Debug, Default)]
pub struct MetricsRing {
    rings: Mutex<HashMap<String, VecDeque<Sample>>>,
}

impl MetricsRing {
    /// The last reading of `id`, if it is older than [`MIN_CPU_WINDOW`]: the base for a CPU rate.
    pub fn cpu_base(&self, id: &str) -> Option<(Instant, f64)> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let last = rings.get(id)?.back()?;
        (last.taken.elapsed() >= MIN_CPU_WINDOW).then_some((last.taken, last.cpu_seconds))
    }

    /// Records a reading taken at `taken`, with the CPU rate measured since `base`.
    pub fn record(
        &self,
        id: &str,
        base: (Instant, f64),
        taken: Instant,
        usage: &SandboxUsage,
        limits: Limits,
    ) {
        let metric = to_metric(Utc::now(), base, taken, usage, limits);
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let ring = rings.entry(id.to_string()).or_default();
        if ring.len() == RING_SIZE {
            ring.pop_front();
        }
        ring.push_back(Sample {
            taken,
            cpu_seconds: usage.cpu_seconds,
            metric,
        });
    }

    /// Samples of `id` within `[start, end]`, oldest first.
    pub fn window(
        &self,
        id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Vec<SandboxMetric> {
        let rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings
            .get(id)
            .into_iter()
            .flatten()
            .map(|s| s.metric.clone())
            .filter(|m| start.is_none_or(|s| m.at >= s) && end.is_none_or(|e| m.at <= e))
            .collect()
    }

    pub fn forget(&self, id: &str) {
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        rings.remove(id);
    }
}

/// One E2B metric from a cgroup reading. CPU % is relative to the sandbox's CPU count, like E2B.
fn to_metric(
    at: DateTime<Utc>,
    (base_taken, base_cpu): (Instant, f64),
    taken: Instant,
    usage: &SandboxUsage,
    limits: Limits,
) -> SandboxMetric {
    let wall = taken.saturating_duration_since(base_taken).as_secs_f64();
    let cpu_used_pct = if wall > 0.0 {
        let busy = (usage.cpu_seconds - base_cpu).max(0.0);
        (busy / wall / f64::from(limits.cpu_count.max(1)) * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    SandboxMetric {
        at,
        cpu_count: limits.cpu_count,
        cpu_used_pct,
        mem_used_bytes: usage.memory_bytes,
        mem_total_bytes: usage.memory_limit_bytes,
        mem_cache_bytes: 0,
        disk_used_bytes: usage.disk_bytes,
        disk_total_bytes: limits.disk_total_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_seconds: f64) -> SandboxUsage {
        SandboxUsage {
            cpu_seconds,
            memory_bytes: 10,
            memory_limit_bytes: 100,
            disk_bytes: 5,
            pids: 1,
        }
    }

    const LIMITS: Limits = Limits {
        cpu_count: 2,
        disk_total_bytes: 1000,
    };

    #[test]
    fn cpu_percentage_is_relative_to_the_cpu_count() {
        let base = Instant::now();
        let later = base + Duration::from_secs(2);
        // 2 s of CPU in 2 s of wall time on 2 CPUs = 50 %.
        let m = to_metric(Utc::now(), (base, 1.0), later, &usage(3.0), LIMITS);
        assert!((m.cpu_used_pct - 50.0).abs() < 1e-9, "{}", m.cpu_used_pct);
        assert_eq!(m.mem_total_bytes, 100);
        assert_eq!(m.disk_total_bytes, 1000);
        // A counter that went backwards (cgroup recreated) never yields a negative rate.
        let m = to_metric(Utc::now(), (base, 9.0), later, &usage(3.0), LIMITS);
        assert_eq!(m.cpu_used_pct, 0.0);
    }

    #[test]
    fn the_ring_is_bounded_and_windows_filter_by_time() {
        let ring = MetricsRing::default();
        let base = (Instant::now(), 0.0);
        for _ in 0..RING_SIZE + 5 {
            ring.record("a", base, Instant::now(), &usage(0.0), LIMITS);
        }
        assert_eq!(ring.window("a", None, None).len(), RING_SIZE);
        let future = Utc::now() + chrono::Duration::seconds(60);
        assert!(ring.window("a", Some(future), None).is_empty());
        assert!(ring.window("b", None, None).is_empty());
        ring.forget("a");
        assert!(ring.window("a", None, None).is_empty());
    }
}
