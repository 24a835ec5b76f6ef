//! A daemon killed (`kill -9`) in the middle of a deep standby or of a wake must never cost a
//! sandbox its files, and a sandbox whose checkpoint completed keeps its processes: the next
//! daemon adopts it (processes still there), keeps it deep (complete image, also one CRIU
//! finished after the daemon died), or marks it `error` with its files kept, from which
//! `POST /v1/sandboxes/{id}/restart` starts it again. Needs root, the base template and CRIU
//! (skipped otherwise).

mod common;

use std::time::{Duration, Instant};

use common::deep::{
    Api, ChildDaemon, cgroup_dirs, criu_available, init_pid, is_traced, processes, start_counter,
    wake,
};
use common::{TestServer, expect_error, install_test_template};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The daemon of the tests below, in a child process of this test binary.
#[tokio::test]
#[ignore = "run by the kill -9 tests in a child process"]
async fn child_daemon() {
    common::deep::run_child_daemon().await;
}

fn in_child() -> bool {
    std::env::var_os(common::deep::CHILD_DIR_VAR).is_some()
}

const MARKER: &str = "upper/home/user/marker.txt";

/// Sends `POST /standby {"deep":true}` (or a wake, `POST /resume`) without waiting for it.
fn send(api: &Api, id: &str, deep_standby: bool) -> tokio::task::JoinHandle<()> {
    let api = api.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let req = if deep_standby {
            api.post(&format!("/v1/sandboxes/{id}/standby"))
                .json(&json!({"deep": true}))
        } else {
            api.post(&format!("/v1/sandboxes/{id}/resume"))
                .json(&json!({}))
        };
        let _ = req.send().await;
    })
}

fn is_deep(sb: &Value) -> bool {
    sb["power"]["tier"] == "deep" && sb["power"]["awake"] == false
}

/// The review's finding, made deterministic: the daemon is killed while CRIU is dumping the
/// sandbox (its init is being traced). CRIU finishes the dump after the daemon is gone and
/// kills the processes; the old reconcile then discarded the complete image as "partial" and
/// deleted the sandbox's dir, files included. Now the image is completed and the sandbox
/// wakes with its processes. Then: processes gone with no image → `error`, files kept, and a
/// restart from files (API) brings it back with them.
#[tokio::test]
async fn kill_9_while_criu_dumps_keeps_files_and_processes() {
    if in_child() {
        return;
    }
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) || !criu_available() {
        return;
    }
    let daemon = ChildDaemon::start(dir.path(), &[]).await;
    let api = daemon.api.clone();
    let sb = api.create(json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap().to_string();
    let token = sb["envd_access_token"].as_str().unwrap().to_string();
    let (_, (pid, last, child_pid)) = start_counter(&api, &sb).await;
    let (_, code) = api.exec(&id, "echo kept > /home/user/marker.txt").await;
    assert_eq!(code, 0);
    let files = dir.path().join("sandboxes").join(&id);

    let init = init_pid(dir.path(), &id);
    let pending = send(&api, &id, true);
    let start = Instant::now();
    while !is_traced(init) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "criu never seized the sandbox"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let lock = daemon.kill_9_keeping_instance(dir.path());
    let _ = pending.await;
    assert!(files.join(MARKER).is_file());

    drop(lock);
    let mut config = common::config(dir.path());
    config.deep_on_shutdown = burrow_server::DeepOnShutdown::Off;
    let server = TestServer::start_with(config.clone()).await;
    let api = Api::of(&server);
    let after = api.sandbox(&id).await;
    eprintln!("after the crash: {after}");
    assert_ne!(after["state"], "error", "{after}");
    assert!(files.join(MARKER).is_file(), "the sandbox lost its files");
    assert!(!files.join("checkpoint.partial").exists());
    wake(&api, &id).await;
    let (pid2, n, child2) = api.counter(&id).await;
    assert_eq!((pid2, child2), (pid, child_pid), "the processes changed");
    assert!(n >= last);

    // Processes gone and no image (killed while no daemon ran): error, files kept, restart.
    server.stop().await;
    kill_sandbox_processes(&id).await;
    let server = TestServer::start_with(config).await;
    let api = Api::of(&server);
    let gone = api.sandbox(&id).await;
    assert_eq!(gone["state"], "error", "{gone}");
    assert!(
        gone["error"].as_str().unwrap().contains("restart"),
        "{gone}"
    );
    assert!(
        files.join(MARKER).is_file(),
        "an error sandbox keeps its files"
    );
    assert!(cgroup_dirs(&id).is_empty(), "its cgroups are released");

    let resp = api
        .post(&format!("/v1/sandboxes/{id}/restart"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let restarted: Value = resp.json().await.unwrap();
    assert_eq!(restarted["state"], "running", "{restarted}");
    assert_eq!(restarted["id"], id.as_str());
    assert_eq!(restarted["envd_access_token"], token.as_str());
    assert_eq!(restarted["ip"], sb["ip"], "same network slot");
    assert!(restarted["error"].is_null(), "{restarted}");
    let (out, code) = api.exec(&id, "cat /home/user/marker.txt; id -un").await;
    assert_eq!((out.as_str(), code), ("kept\nuser\n", 0));
    // envd answers with the same token.
    let envd = api
        .envd_call(&id, &token, "process.Process/List", json!({}))
        .await;
    assert!(envd["processes"].is_array(), "{envd}");

    // Not for a running sandbox; unknown ids are 404.
    let resp = api
        .post(&format!("/v1/sandboxes/{id}/restart"))
        .send()
        .await
        .unwrap();
    expect_error(resp, 409, "restart_refused").await;
    let resp = api
        .post("/v1/sandboxes/i0000000000000000000/restart")
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "sandbox_not_found").await;

    api.delete(&id).await;
    assert!(!files.exists(), "deleting erases the files");
    server.stop().await;
}

/// Kills every process of sandbox `id` (no daemon running) and waits until none is left.
async fn kill_sandbox_processes(id: &str) {
    for d in cgroup_dirs(id)
        .iter()
        .filter(|d| d.starts_with("/sys/fs/cgroup/pids"))
    {
        for p in std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap()
            .lines()
        {
            let _ = std::process::Command::new("kill").args(["-9", p]).status();
        }
    }
    if let Some(freezer) = cgroup_dirs(id)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/freezer"))
    {
        let _ = std::fs::write(freezer.join("freezer.state"), "THAWED");
    }
    let start = Instant::now();
    while processes(id) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "processes survived kill -9"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 20 `kill -9` of the daemon at random moments (0-150 ms) after a deep standby or a wake
/// request: after each restart the marker file is there; a sandbox not in `error` has the same
/// processes (and a sandbox whose `checkpoint/` was complete before the kill is never in
/// `error`); one in `error` restarts from its files. `BURROW_TEST_SEED` replays a run.
#[tokio::test]
async fn kill_9_at_random_moments_of_checkpoints_and_restores() {
    if in_child() {
        return;
    }
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) || !criu_available() {
        return;
    }
    let seed: u64 = std::env::var("BURROW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("BURROW_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut daemon = ChildDaemon::start(dir.path(), &[]).await;
    let sb = daemon.api.create(json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap().to_string();
    let (_, (mut pid, _, _)) = start_counter(&daemon.api, &sb).await;
    let (_, code) = daemon
        .api
        .exec(&id, "echo kept > /home/user/marker.txt")
        .await;
    assert_eq!(code, 0);
    let files = dir.path().join("sandboxes").join(&id);
    let mut outcomes: std::collections::BTreeMap<String, u32> = Default::default();
    for round in 0..20 {
        let before = daemon.api.sandbox(&id).await;
        let waking = is_deep(&before);
        let delay = Duration::from_millis(rng.random_range(0..=150));
        let pending = send(&daemon.api, &id, !waking);
        tokio::time::sleep(delay).await;
        let complete_before_kill = files.join("checkpoint").is_dir();
        let lock = daemon.kill_9_keeping_instance(dir.path());
        let _ = pending.await;
        drop(lock);
        daemon = ChildDaemon::start(dir.path(), &[]).await;
        let after = daemon.api.sandbox(&id).await;
        assert!(
            files.join(MARKER).is_file(),
            "round {round} (seed {seed}): the sandbox lost its files: {after}"
        );
        let outcome = if after["state"] == "error" {
            if complete_before_kill || waking {
                let log =
                    std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(80).collect();
                eprintln!(
                    "daemon log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
            assert!(
                !complete_before_kill && !waking,
                "round {round} (seed {seed}): a complete checkpoint lost its processes: {after}"
            );
            let resp = daemon
                .api
                .post(&format!("/v1/sandboxes/{id}/restart"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let restarted: Value = resp.json().await.unwrap();
            let (out, _) = daemon.api.exec(&id, "cat /home/user/marker.txt").await;
            assert_eq!(out, "kept\n");
            let (_, (new_pid, _, _)) = start_counter(&daemon.api, &restarted).await;
            pid = new_pid;
            "error, restarted"
        } else if is_deep(&after) {
            // Checked at the next wake (the next round, or the end).
            "deep"
        } else {
            let (now, _, _) = daemon.api.counter(&id).await;
            assert_eq!(
                now, pid,
                "round {round} (seed {seed}): the processes changed: {after}"
            );
            "adopted"
        };
        eprintln!(
            "round {round}: {} after {delay:?} (checkpoint complete at the kill: \
             {complete_before_kill}) -> {outcome}",
            if waking { "wake" } else { "deep standby" }
        );
        *outcomes.entry(outcome.to_string()).or_default() += 1;
    }
    wake(&daemon.api, &id).await;
    let (now, _, _) = daemon.api.counter(&id).await;
    assert_eq!(now, pid, "seed {seed}: the processes changed");
    let (out, _) = daemon.api.exec(&id, "cat /home/user/marker.txt").await;
    assert_eq!(out, "kept\n");
    eprintln!("outcomes {outcomes:?} in {:?}", t0.elapsed());
    let lock = daemon.kill_9_keeping_instance(dir.path());
    drop(lock);
    let server = TestServer::start(dir.path()).await;
    Api::of(&server).delete(&id).await;
    server.stop().await;
}
