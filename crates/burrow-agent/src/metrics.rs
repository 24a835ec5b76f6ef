//! `GET /metrics`: CPU, memory and root-disk usage, in E2B's snake_case shape.

use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Metrics {
    pub ts: i64,
    pub cpu_count: usize,
    pub cpu_used_pct: f32,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_cache: u64,
    pub mem_total_mib: u64,
    pub mem_used_mib: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

/// Keeps the previous /proc/stat reading so each call reports usage since the last one.
#[derive(Default)]
pub struct CpuSampler {
    last: Mutex<Option<(u64, u64)>>,
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((values.iter().sum(), idle))
}

impl CpuSampler {
    fn used_pct(&self) -> f32 {
        let Some(now) = cpu_times() else { return 0.0 };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let pct = match *last {
            Some((total, idle)) if now.0 > total => {
                let busy = (now.0 - total).saturating_sub(now.1.saturating_sub(idle));
                busy as f32 * 100.0 / (now.0 - total) as f32
            }
            _ => 0.0,
        };
        *last = Some(now);
        (pct * 100.0).round() / 100.0
    }
}

fn meminfo() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = field("MemTotal:");
    let available = field("MemAvailable:");
    let cache = field("Cached:") + field("Buffers:");
    (total, total.saturating_sub(available), cache)
}

pub fn collect(sampler: &CpuSampler) -> Metrics {
    let (mem_total, mem_used, mem_cache) = meminfo();
    let (disk_total, disk_used) = match rustix::fs::statvfs("/") {
        Ok(s) => {
            let total = s.f_blocks * s.f_frsize;
            (total, total.saturating_sub(s.f_bfree * s.f_frsize))
        }
        Err(_) => (0, 0),
    };
    Metrics {
        ts: chrono::Utc::now().timestamp(),
        cpu_count: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_used_pct: sampler.used_pct(),
        mem_total,
        mem_used,
        mem_cache,
        mem_total_mib: mem_total / (1024 * 1024),
        mem_used_mib: mem_used / (1024 * 1024),
        disk_used,
        disk_total,
    }
}
