//! Warm standby, second step: reclaim everything reclaimable that is still charged to a frozen
//! sandbox's memory cgroup.
//!
//! [`crate::pageout`] pushes the processes' private memory to swap, but the page cache charged to
//! the cgroup (files the sandbox read: its interpreter's modules, libraries, logs) is not mapped
//! privately and stays resident. cgroup v1 has no `memory.reclaim` (that is v2), but writing to
//! `memory.force_empty` of a *populated* cgroup makes the kernel reclaim the cgroup's pages until
//! nothing more can go: clean page cache is dropped, dirty page cache is written back, anonymous
//! pages left over go to swap. What stays is unreclaimable kernel memory (page tables, kernel
//! stacks, slab), which v1 counts in `memory.usage_in_bytes` too.
//!
//! Measured on kernel 6.18: ~2–5 ms on an already small cgroup (the kernel drains the per-CPU LRU
//! caches and retries reclaim a few times), ~180 ms for 550 MiB of page cache. The sandbox must be
//! frozen first, or it would fault its pages straight back in.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroup::{self, CgroupError};

/// What a reclaim did, in bytes of `memory.usage_in_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    pub before: u64,
    pub after: u64,
    pub elapsed: Duration,
}

/// Reclaims every reclaimable page charged to the memory cgroup `memcg_dir` (cgroup v1) through
/// `memory.force_empty`. The processes stay in the cgroup; their pages come back on demand (from
/// zram or from the files) when they run again.
pub fn reclaim_memcg(memcg_dir: &Path) -> Result<ReclaimReport, CgroupError> {
    let start = Instant::now();
    let before = cgroup::memory_usage(memcg_dir)?;
    let path = memcg_dir.join("memory.force_empty");
    fs::write(&path, "0").map_err(|source| CgroupError {
        path: path.clone(),
        source: if source.raw_os_error() == Some(libc::EINVAL) {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the kernel refused force_empty (root memory cgroup?)",
            )
        } else {
            source
        },
    })?;
    let after = cgroup::memory_usage(memcg_dir)?;
    Ok(ReclaimReport {
        before,
        after,
        elapsed: start.elapsed(),
    })
}

/// Host RAM a memory cgroup's processes hold, counted the way burrow reports it for a sleeping
/// sandbox: what is charged to the cgroup (resident memory, page cache, kernel memory) plus the
/// host RAM its swapped-out pages take in zram (its swap bytes × zram's compression ratio).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemcgFootprint {
    /// `memory.usage_in_bytes`.
    pub charged: u64,
    /// `swap` of `memory.stat`: the cgroup's pages in swap, uncompressed.
    pub swapped: u64,
}

impl MemcgFootprint {
    /// Reads both figures of a memory cgroup v1 dir.
    pub fn read(memcg_dir: &Path) -> Result<Self, CgroupError> {
        let charged = cgroup::memory_usage(memcg_dir)?;
        let path = memcg_dir.join("memory.stat");
        let stat = fs::read_to_string(&path).map_err(|source| CgroupError {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            charged,
            swapped: stat_value(&stat, "swap").unwrap_or(0),
        })
    }

    /// Host bytes: charged + swapped × `zram_ratio` (zram's `mem_used_total / orig_data_size`).
    pub fn host_bytes(&self, zram_ratio: f64) -> u64 {
        self.charged + (self.swapped as f64 * zram_ratio).round() as u64
    }
}

/// One `key value` line of a `memory.stat` file.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exact_stat_keys() {
        let stat = "cache 8192\nrss 0\nswap 23244800\ntotal_swap 99\n";
        assert_eq!(stat_value(stat, "swap"), Some(23244800));
        assert_eq!(stat_value(stat, "cache"), Some(8192));
        assert_eq!(stat_value(stat, "mapped_file"), None);
        assert_eq!(stat_value("swap x\n", "swap"), None);
    }

    #[test]
    fn host_bytes_applies_the_zram_ratio() {
        let f = MemcgFootprint {
            charged: 1 << 20,
            swapped: 8 << 20,
        };
        assert_eq!(f.host_bytes(0.25), 3 << 20);
        assert_eq!(f.host_bytes(0.0), 1 << 20);
    }

    #[test]
    fn missing_cgroup_is_an_error_naming_the_file() {
        let err = reclaim_memcg(Path::new("/sys/fs/cgroup/memory/no-such-sandbox")).unwrap_err();
        assert!(
            err.to_string()
                .contains("no-such-sandbox/memory.usage_in_bytes"),
            "{err}"
        );
    }
}
