//! Warm standby on a real sandbox: freeze, page out to burrow's zram swap, thaw, and check that
//! the memory comes back intact. Also the zram device's idempotent set-up.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use burrow_standby::freezer::Freezer;
use burrow_standby::pageout::{self, pageout_cgroup};
use burrow_standby::reclaim;
use burrow_standby::zram::{self, EnsureOutcome, ZramConfig, ZramError};
use common::Sandbox;

/// The zram device is host-wide: tests touching it take turns.
static ZRAM: Mutex<()> = Mutex::new(());

/// 1 GiB, or the size of the zram swap already active (e.g. one a running burrow set up: the
/// tests never reset a device that may hold someone's pages).
fn zram_config() -> ZramConfig {
    let disksize = match zram::active_swap_size(0).unwrap() {
        Some(active) => active + 4096, // /proc/swaps excludes the swap header page
        None => 1 << 30,
    };
    ZramConfig {
        disksize,
        ..Default::default()
    }
}

#[test]
fn zram_setup_is_idempotent_and_reports_stats() {
    let _guard = ZRAM.lock().unwrap_or_else(|p| p.into_inner());
    let config = zram_config();
    let was_active = zram::active_swap_size(0).unwrap().is_some();
    let outcome = zram::ensure(&config).unwrap();
    if was_active {
        assert_eq!(outcome, EnsureOutcome::AlreadyActive);
    } else {
        assert_eq!(
            outcome,
            EnsureOutcome::Activated {
                algorithm: "lz4".into()
            }
        );
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap();
        let line = swaps
            .lines()
            .find(|l| l.starts_with("/dev/zram0"))
            .expect("zram0 in /proc/swaps");
        assert!(line.ends_with("32000"), "priority: {line}");
    }
    assert_eq!(zram::ensure(&config).unwrap(), EnsureOutcome::AlreadyActive);
    let size = zram::active_swap_size(0).unwrap().unwrap();
    assert!(
        size.abs_diff(config.disksize) <= 64 << 10,
        "{size} vs {}",
        config.disksize
    );
    // A different size is refused with an explanation instead of silently resetting.
    let bigger = ZramConfig {
        disksize: config.disksize * 2,
        ..Default::default()
    };
    let err = zram::ensure(&bigger).unwrap_err();
    assert!(matches!(err, ZramError::SizeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("zram::reset"), "{err}");
    let err = zram::ensure(&ZramConfig {
        disksize: 4096,
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, ZramError::Config(_)), "{err}");
    zram::stats(0).unwrap();
}

#[test]
fn pageout_moves_a_frozen_sandbox_to_zram_and_back() {
    let _guard = ZRAM.lock().unwrap_or_else(|p| p.into_inner());
    zram::ensure(&zram_config()).unwrap();
    let sb = Sandbox::launch("bstb-pgo", 64);
    let sum_before = sb.request("touch", Duration::from_secs(5)).unwrap();
    let (c1, ..) = sb.ping().unwrap();
    let freezer = Freezer::open(&sb.cgroups.freezer).unwrap();
    freezer.freeze(Duration::from_secs(2)).unwrap();
    let zram_before = zram::stats(0).unwrap();

    let report = pageout_cgroup(&sb.cgroups.freezer, Some(&sb.cgroups.memory)).unwrap();
    eprintln!("{report:#?}");
    let zram_after = zram::stats(0).unwrap();
    assert_eq!(report.processes, 2);
    assert!(
        report.before.rss_anon > 60 << 20,
        "ballast resident before: {:?}",
        report.before
    );
    assert!(
        report.after.rss_anon < 4 << 20,
        "anon memory left resident: {:?}",
        report.after
    );
    assert!(report.after.swap > 60 << 20, "swapped: {:?}", report.after);
    let memcg_after = report.memcg_after.unwrap();
    assert!(
        memcg_after < 8 << 20,
        "memcg still charged {memcg_after} bytes"
    );
    let stored =
        zram_after.orig_data_size - zram_before.orig_data_size.min(zram_after.orig_data_size);
    assert!(stored > 60 << 20, "zram stored only {stored} bytes");
    // Half the ballast is random: compression cannot go below ~half.
    eprintln!("zram: {zram_before:?} -> {zram_after:?}");

    freezer.thaw().unwrap();
    let (c2, ..) = sb.ping().unwrap();
    assert_eq!(c2, c1 + 1);
    assert_eq!(
        sb.request("touch", Duration::from_secs(10)).unwrap(),
        sum_before,
        "ballast intact after swap-in"
    );
    let back = pageout::process_memory(sb.pids()[1]).unwrap();
    assert!(back.rss_anon > 60 << 20, "ballast back in RAM: {back:?}");
}

#[test]
fn pageout_of_a_missing_cgroup_is_an_error() {
    let err = pageout_cgroup(
        std::path::Path::new("/sys/fs/cgroup/freezer/no-such-sandbox"),
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no-such-sandbox/cgroup.procs"),
        "{err}"
    );
}

/// Page-out leaves the page cache charged to the sandbox's memory cgroup; reclaim drops it too,
/// and the sandbox still works afterwards.
#[test]
fn reclaim_drops_the_page_cache_charged_to_a_frozen_sandbox() {
    let _guard = ZRAM.lock().unwrap_or_else(|p| p.into_inner());
    zram::ensure(&zram_config()).unwrap();
    let sb = Sandbox::launch("bstb-rcl", 16);
    let sum_before = sb.request("touch", Duration::from_secs(5)).unwrap();
    // A short-lived process in the sandbox's memory cgroup writes 32 MiB: that page cache is
    // charged to the cgroup and outlives the writer.
    let file = sb.rootfs.dir("upper/cache-ballast");
    common::run(
        "sh",
        &[
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && head -c 33554432 /dev/urandom > {} && sync",
                sb.cgroups.memory.display(),
                file.display()
            ),
        ],
    );
    let freezer = Freezer::open(&sb.cgroups.freezer).unwrap();
    freezer.freeze(Duration::from_secs(2)).unwrap();
    let paged = pageout_cgroup(&sb.cgroups.freezer, Some(&sb.cgroups.memory)).unwrap();
    let after_pageout = paged.memcg_after.unwrap();
    assert!(
        after_pageout > 32 << 20,
        "page cache still charged after page-out: {after_pageout}"
    );
    let report = reclaim::reclaim_memcg(&sb.cgroups.memory).unwrap();
    eprintln!("{paged:#?}\n{report:#?}");
    assert_eq!(report.before, after_pageout);
    assert!(
        report.after < 2 << 20,
        "still charged after reclaim: {report:?}"
    );
    let footprint = reclaim::MemcgFootprint::read(&sb.cgroups.memory).unwrap();
    assert!(footprint.swapped > 16 << 20, "{footprint:?}");

    freezer.thaw().unwrap();
    assert_eq!(
        sb.request("touch", Duration::from_secs(10)).unwrap(),
        sum_before,
        "ballast intact after reclaim"
    );
}
