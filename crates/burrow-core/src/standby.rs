//! Warm standby on the host: freeze a sandbox's freezer cgroup, page its memory out to burrow's
//! zram swap, thaw it again; the zram device set-up; the idle timer; in-sandbox leases.

use std::path::Path;
use std::time::Duration;

use burrow_runtime::Runtime;
use burrow_standby::{freezer, pageout, zram};

use crate::Core;
use crate::power::Power;

/// How long a freeze may take before it is abandoned (and the sandbox thawed again).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle timer looks at every sandbox.
pub const IDLE_TICK: Duration = Duration::from_millis(250);
/// Inside the sandbox: any file in this directory keeps the sandbox awake.
pub const SANDBOX_LEASE_DIR: &str = "run/burrow/leases";
/// Device index of burrow's zram swap.
pub const ZRAM_DEVICE: u32 = 0;

/// Why a standby or resume failed.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    #[error(transparent)]
    Freezer(#[from] freezer::FreezerError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// What the host offers for paging out: set once at start.
#[derive(Debug, Clone)]
pub struct SwapTarget {
    /// Page-out is on only when burrow's zram is the only active swap (never plain disk swap).
    pub pageout: bool,
    /// After page-out, also evict the page cache charged to the sandbox (`--standby-drop-cache`).
    pub drop_cache: bool,
}

/// Makes sure burrow's zram swap is active (`bytes` = 0 disables page-out). A zram swap that is
/// already active is used as it is, whatever its size. Any other active swap disables page-out:
/// sandbox memory must never be written in clear text to a shared disk.
pub fn setup_swap(bytes: u64) -> SwapTarget {
    if bytes == 0 {
        tracing::info!("page-out disabled (zram size 0): warm standby only freezes");
        return SwapTarget {
            pageout: false,
            drop_cache: false,
        };
    }
    let others = other_swaps();
    if !others.is_empty() {
        tracing::warn!(
            "swap {others:?} is active besides zram; page-out is disabled so sandbox memory never reaches it"
        );
        return SwapTarget {
            pageout: false,
            drop_cache: false,
        };
    }
    match zram::active_swap_size(ZRAM_DEVICE) {
        Ok(Some(size)) => {
            tracing::info!(size, "using the active zram swap /dev/zram{ZRAM_DEVICE}");
            return SwapTarget {
                pageout: true,
                drop_cache: false,
            };
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("cannot read /proc/swaps ({e}); page-out disabled");
            return SwapTarget {
                pageout: false,
                drop_cache: false,
            };
        }
    }
    let config = zram::ZramConfig {
        device: ZRAM_DEVICE,
        disksize: bytes & !0xfff,
        ..zram::ZramConfig::default()
    };
    match zram::ensure(&config) {
        Ok(outcome) => {
            tracing::info!(bytes, ?outcome, "zram swap ready for warm standby");
            SwapTarget {
                pageout: true,
                drop_cache: false,
            }
        }
        Err(e) => {
            tracing::warn!("zram swap unavailable ({e}); warm standby only freezes");
            SwapTarget {
                pageout: false,
                drop_cache: false,
            }
        }
    }
}

/// Active swap areas that are not zram devices.
fn other_swaps() -> Vec<String> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_ascii_whitespace().next())
        .filter(|dev| !dev.starts_with("/dev/zram"))
        .map(str::to_string)
        .collect()
}

/// A quarter of the host's RAM: the default zram size.
pub fn default_zram_bytes() -> u64 {
    host_ram_bytes().map_or(1 << 30, |ram| ram / 4)
}

/// The default `--deep-below-available-mb`: 5 % of the host's RAM.
pub fn default_deep_below_available() -> u64 {
    host_ram_bytes().map_or(256 << 20, |ram| ram / 20)
}

fn host_ram_bytes() -> Option<u64> {
    let mut info = std::mem::MaybeUninit::<libc::sysinfo>::uninit();
    // SAFETY: sysinfo only writes into the struct we pass.
    let rc = unsafe { libc::sysinfo(info.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: sysinfo returned 0, so it filled the struct.
    let info = unsafe { info.assume_init() };
    Some(info.totalram.saturating_mul(u64::from(info.mem_unit)))
}

/// Freezes the sandbox and, if enabled, pages its memory out. A failed freeze leaves it thawed.
pub async fn freeze(runtime: &Runtime, id: &str, swap: &SwapTarget) -> Result<(), StandbyError> {
    let freezer_dir = runtime.cgroup_dir("freezer", id);
    let memcg = runtime.cgroup_dir("memory", id);
    let pageout_on = swap.pageout;
    let drop_cache = swap.drop_cache;
    let id = id.to_string();
    tokio::task::spawn_blocking(move || {
        freezer::Freezer::open(&freezer_dir)?.freeze(FREEZE_TIMEOUT)?;
        if pageout_on {
            match pageout::pageout_cgroup(&freezer_dir, Some(&memcg)) {
                Ok(report) => tracing::debug!(
                    sandbox = id,
                    before = ?report.memcg_before,
                    after = ?report.memcg_after,
                    elapsed = ?report.elapsed,
                    "paged out"
                ),
                // Still a valid (frozen) standby, only with more resident memory.
                Err(e) => tracing::warn!(sandbox = id, "page-out failed: {e}"),
            }
        }
        // Only with page-out on: force_empty also swaps what anonymous memory is left, and
        // that must only ever go to burrow's zram.
        if pageout_on && drop_cache {
            // The page cache still charged to it (files it read), which page-out leaves. Clean
            // cache is reclaimable anyway, and much of it is template files shared with other
            // sandboxes: dropping it costs the wake re-reading them (~10 ms for python).
            match burrow_standby::reclaim::reclaim_memcg(&memcg) {
                Ok(report) => tracing::debug!(sandbox = id, ?report, "reclaimed"),
                Err(e) => tracing::warn!(sandbox = id, "reclaim failed: {e}"),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| StandbyError::Task(e.to_string()))?
}

/// Thaws the sandbox; its pages fault back in from zram as they are touched. (A bulk
/// `MADV_WILLNEED` prefetch was measured: no faster on 2 cores, and it left pages in the swap
/// cache that the next page-out did not reclaim.)
pub async fn thaw(runtime: &Runtime, id: &str) -> Result<(), StandbyError> {
    let freezer_dir = runtime.cgroup_dir("freezer", id);
    tokio::task::spawn_blocking(move || freezer::Freezer::open(&freezer_dir)?.thaw())
        .await
        .map_err(|e| StandbyError::Task(e.to_string()))?
        .map_err(StandbyError::from)
}

/// The freezer state of a sandbox (reconcile adopts frozen sandboxes as asleep).
pub fn freezer_state(runtime: &Runtime, id: &str) -> Option<freezer::FreezerState> {
    freezer::Freezer::open(runtime.cgroup_dir("freezer", id))
        .and_then(|f| f.state())
        .ok()
}

/// Host RAM a sleeping sandbox holds: its memory cgroup's usage (resident, page cache included)
/// and its bytes in swap (`memory.stat` `swap`; in zram these are stored compressed).
pub fn memcg_bytes(runtime: &Runtime, id: &str) -> Option<(u64, u64)> {
    let footprint =
        burrow_standby::reclaim::MemcgFootprint::read(&runtime.cgroup_dir("memory", id)).ok()?;
    Some((footprint.charged, footprint.swapped))
}

/// Creates `/run/burrow/leases` (mode 1777, owned by the sandbox's root) in the sandbox's upper
/// dir right after create, so any user inside can take a lease with `touch`.
pub fn create_lease_dir(sandbox_dir: &Path, uid_base: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let upper = sandbox_dir.join("upper");
    let mut dir = upper.clone();
    for (part, mode) in [("run", 0o755), ("burrow", 0o755), ("leases", 0o1777)] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => continue,
            // Something else already there (the sandbox made it): leave it alone.
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::lchown(&dir, Some(uid_base), Some(uid_base))?;
    }
    Ok(())
}

/// Counts the entries of the sandbox's lease dir without following symlinks the sandbox may
/// have planted (0 if it is missing or not a plain directory).
pub fn count_sandbox_leases(sandbox_dir: &Path) -> u32 {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let upper = sandbox_dir.join("upper");
    let Ok(root) = rustix::fs::open(
        &upper,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return 0;
    };
    let Ok(fd) = rustix::fs::openat2(
        &root,
        SANDBOX_LEASE_DIR,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH | ResolveFlags::NO_XDEV,
    ) else {
        return 0;
    };
    let Ok(dir) = rustix::fs::Dir::read_from(&fd) else {
        return 0;
    };
    let count = dir
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .take(10_000)
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Reads every awake sandbox's lease dir, then puts idle ones to sleep. Runs until aborted.
pub async fn idle_loop(core: Core) {
    let mut tick = tokio::time::interval(IDLE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let awake: Vec<_> = core
            .power
            .all()
            .into_iter()
            .filter(|(_, p)| p.power() == Power::Awake && !p.idle_timeout().is_zero())
            .collect();
        let dirs: Vec<_> = awake
            .iter()
            .map(|(id, p)| (core.runtime.sandbox_dir(id), p.clone()))
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for (dir, power) in dirs {
                power.set_sandbox_leases(count_sandbox_leases(&dir));
            }
        })
        .await;
        for (id, power) in awake {
            if power.idle_due() {
                let core = core.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::sandboxes::standby_if_idle(&core, &id).await {
                        core.metrics.idle_standby_failed();
                        tracing::warn!(sandbox = id, "idle standby failed: {e}");
                    }
                });
            }
        }
        deep_after_tick(&core);
    }
}

/// Sends a sandbox from warm to deep standby, one at a time (a checkpoint takes a core for
/// ~0.1 s); the next tick takes the next one. Which one: under host memory pressure
/// (`MemAvailable` below `--deep-below-available-mb`) the one asleep the longest, whatever
/// `--deep-after` says; otherwise one that has been in warm standby for `--deep-after`.
fn deep_after_tick(core: &Core) {
    if core.runtime.netns_mode() != burrow_runtime::NetnsMode::Sandbox {
        return;
    }
    let all = core.power.all();
    if all.iter().any(|(_, p)| p.power() == Power::FallingAsleep) {
        return;
    }
    let mut warm: Vec<_> = all
        .into_iter()
        .filter_map(|(id, p)| match p.power() {
            Power::Asleep {
                since,
                tier: burrow_types::StandbyTier::Warm,
            } if p.deep_due(Duration::ZERO) => Some((since, id, p)),
            _ => None,
        })
        .collect();
    if warm.is_empty() {
        return;
    }
    let after = core.config.deep_after;
    let (wanted_warm_for, why) = if under_memory_pressure(core.config.deep_below_available) {
        warm.sort_by_key(|(since, _, _)| *since);
        (Duration::ZERO, "host memory pressure")
    } else if after.is_zero() {
        return;
    } else {
        (after, "deep-after")
    };
    let Some((_, id, _)) = warm
        .into_iter()
        .find(|(_, id, p)| p.deep_due(wanted_warm_for) && core.runtime.can_checkpoint(id).is_ok())
    else {
        return;
    };
    let core = core.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::sandboxes::deep_standby(&core, &id, Some(wanted_warm_for)).await {
            tracing::warn!(sandbox = id, "deep standby ({why}) failed: {e}");
        }
    });
}

/// Whether the host's `MemAvailable` is below `threshold` bytes (0 = never).
fn under_memory_pressure(threshold: u64) -> bool {
    threshold > 0
        && burrow_standby::meminfo::Meminfo::read()
            .ok()
            .and_then(|m| m.bytes("MemAvailable"))
            .is_some_and(|available| available < threshold)
}
