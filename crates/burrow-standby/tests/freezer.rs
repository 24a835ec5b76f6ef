//! Freezer on a real sandbox: frozen means no answers and no CPU; thawed answers again.

mod common;

use std::time::Duration;

use burrow_standby::freezer::{Freezer, FreezerError, FreezerState};
use common::Sandbox;

fn cpu_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
            let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = after_comm.split(' ').collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn freeze_stops_the_sandbox_and_thaw_resumes_it() {
    let sb = Sandbox::launch("bstb-frz", 1);
    let freezer = Freezer::open(&sb.cgroups.freezer).unwrap();
    let (c1, ..) = sb.ping().unwrap();
    assert_eq!(freezer.state().unwrap(), FreezerState::Thawed);

    freezer.freeze(Duration::from_secs(2)).unwrap();
    assert_eq!(freezer.state().unwrap(), FreezerState::Frozen);
    let pids = sb.pids();
    assert_eq!(pids.len(), 2, "init + server");
    let ticks = cpu_ticks(&pids);
    // The kernel queues the connection, but nobody answers while frozen.
    assert!(sb.request("ping", Duration::from_millis(300)).is_err());
    assert_eq!(cpu_ticks(&pids), ticks, "a frozen sandbox used CPU");

    freezer.thaw().unwrap();
    assert_eq!(freezer.state().unwrap(), FreezerState::Thawed);
    // The ping queued while frozen is answered first, then ours.
    let (c2, ..) = sb.ping().unwrap();
    assert!(c2 > c1, "counter went from {c1} to {c2}");
}

#[test]
fn not_a_freezer_dir_is_a_clear_error() {
    let err = Freezer::open("/sys/fs/cgroup/memory").unwrap_err();
    assert!(matches!(err, FreezerError::Io { .. }));
    assert!(err.to_string().contains("freezer.state"), "{err}");
}
