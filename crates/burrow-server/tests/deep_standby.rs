//! Deep standby (CRIU checkpoint to disk) through the real daemon with real sandboxes: a stateful
//! sandbox (python counter in memory, a child process, a listening socket, a file, started
//! through envd) goes deep and comes back with the same pids, memory, files, socket and envd
//! process table, from awake and from warm standby; concurrent requests share one restore; a
//! graceful daemon stop sends warm sandboxes deep and the next daemon restores them, also after a
//! simulated host reboot (netns, veth and cgroups gone); the deep-after timer; `kill -9` of the
//! daemon in the middle of a checkpoint. Needs root, the base template and CRIU (skipped
//! otherwise).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::deep::{
    Api, CHILD_DIR_VAR, ChildDaemon, cgroup_dirs, criu_available, freezer_state, processes,
    start_counter,
};
use common::{TestServer, install_test_template};
use serde_json::{Value, json};

/// After a wake: same processes, counter continued from `last` (and did not run while
/// checkpointed), file intact, clock right, envd still lists the process.
async fn check_intact(
    api: &Api,
    id: &str,
    token: &str,
    envd_pid: u64,
    expected: (u32, u32),
    last: u64,
) -> u64 {
    let (pid, n, child) = api.counter(id).await;
    assert_eq!((pid, child), expected, "the processes changed");
    assert!(n >= last, "counter went back ({n} < {last})");
    assert!(n < last + 100, "counter ran while asleep? ({last} -> {n})");
    let (out, code) = api
        .exec(
            id,
            &format!(
                "cat /home/user/state.txt /dev/shm/state; date +%s; kill -0 {child} && echo child-alive"
            ),
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("kept"));
    assert_eq!(lines.next(), Some("in-shm"), "/dev/shm lost its file");
    let inside: i64 = lines.next().unwrap().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (inside - host).abs() <= 2,
        "clock inside {inside}, host {host}"
    );
    assert_eq!(lines.next(), Some("child-alive"));
    assert!(api.envd_pids(id, token).await.contains(&envd_pid));
    n
}

fn assert_deep(sb: &Value) {
    assert_eq!(sb["state"], "standby", "{sb}");
    assert_eq!(sb["power"]["awake"], false, "{sb}");
    assert_eq!(sb["power"]["tier"], "deep", "{sb}");
    let image = sb["power"]["image_bytes"].as_u64().unwrap_or(0);
    // At least the agent's memory (a bare sandbox's image is ~1 MiB).
    assert!(image > 512 << 10, "image of {image} bytes: {sb}");
}

/// Removes what a host reboot removes for a sandbox in deep standby: its network slot (netns
/// with the parked eth0, host veth), its cgroups, and the loop mount of the quota filesystem
/// holding its files and image.
fn simulate_reboot(data_dir: &Path, ids: &[&str]) {
    let n: u32 = std::fs::read_to_string(data_dir.join("instance"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for id in ids {
        let handle: Value = serde_json::from_str(
            &std::fs::read_to_string(data_dir.join("sandboxes").join(id).join("runtime.json"))
                .unwrap(),
        )
        .unwrap();
        let k = handle["slot"].as_u64().unwrap();
        let netns = if n == 0 {
            format!("burrow-{k}")
        } else {
            format!("burrow{n}-{k}")
        };
        let status = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns del {netns}");
        for dir in cgroup_dirs(id) {
            std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {dir:?}: {e}"));
        }
        assert!(cgroup_dirs(id).is_empty());
    }
    let sandboxes = data_dir.join("sandboxes");
    let status = std::process::Command::new("umount")
        .arg(&sandboxes)
        .status()
        .unwrap();
    assert!(status.success(), "umount {sandboxes:?}");
    assert!(ids.iter().all(|id| !sandboxes.join(id).exists()));
}

/// A copy of `binary` with one byte appended: still runs, but is a different file (an upgrade).
fn upgraded_copy(binary: &Path, dir: &Path) -> PathBuf {
    let mut content = std::fs::read(binary).unwrap();
    content.push(0);
    let copy = dir.join(binary.file_name().unwrap());
    std::fs::write(&copy, content).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    copy
}

#[tokio::test]
async fn deep_standby_end_to_end() {
    if std::env::var_os(CHILD_DIR_VAR).is_some() {
        return;
    }
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) || !criu_available() {
        return;
    }
    let mut config = common::config(dir.path());
    config.deep_after = Duration::ZERO;
    config.deep_on_shutdown = burrow_server::DeepOnShutdown::All;
    let server = TestServer::start_with(config.clone()).await;
    let api = Api::of(&server);

    let sb = api.create(json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap().to_string();
    let token = sb["envd_access_token"].as_str().unwrap().to_string();
    let (envd_pid, (pid, mut last, child)) = start_counter(&api, &sb).await;
    // Stays awake until the graceful stop below (`--deep-on-shutdown all`).
    let busy = api.create(json!({"idle_timeout": 0})).await;
    let busy_id = busy["id"].as_str().unwrap().to_string();
    let (_, (busy_pid, _, busy_child)) = start_counter(&api, &busy).await;
    let (_, code) = api
        .exec(
            &id,
            "echo kept > /home/user/state.txt && echo in-shm > /dev/shm/state",
        )
        .await;
    assert_eq!(code, 0);

    // An envd inotify watcher (the agent's inotify instance must survive the checkpoints).
    let watcher = api
        .envd_call(
            &id,
            &token,
            "filesystem.Filesystem/CreateWatcher",
            json!({"path": "/home/user", "recursive": false}),
        )
        .await["watcherId"]
        .as_str()
        .unwrap()
        .to_string();

    // Two idle client connections to the (single-threaded) python server: it accepts the first
    // and blocks reading it, the second waits in its accept queue. A checkpoint cuts both (the
    // clients see a reset or EOF) and drops the queued one instead of failing on it.
    let ip: std::net::Ipv4Addr = sb["ip"].as_str().unwrap().parse().unwrap();
    let mut idle_clients = Vec::new();
    for _ in 0..2 {
        idle_clients.push(tokio::net::TcpStream::connect((ip, 8080)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two deep cycles from awake, then warm, then deep from warm standby.
    for cycle in 0..2 {
        let started = Instant::now();
        let slept = api.standby(&id, true).await;
        eprintln!(
            "cycle {cycle}: deep standby took {:?}: {}",
            started.elapsed(),
            slept["power"]
        );
        assert_deep(&slept);
        assert_deep(&api.sandbox(&id).await);
        assert_eq!(processes(&id), 0, "cycle {cycle}: processes left");
        // Deep standby of a sandbox in deep standby is a no-op; metadata does not wake it.
        assert_deep(&api.standby(&id, true).await);
        assert_eq!(processes(&id), 0);
        let started = Instant::now();
        last = check_intact(&api, &id, &token, envd_pid, (pid, child), last).await;
        eprintln!(
            "cycle {cycle}: woken and checked in {:?}",
            started.elapsed()
        );
        let woke = api.sandbox(&id).await;
        assert_eq!(woke["state"], "running", "{woke}");
        assert!(woke["power"]["image_bytes"].is_null());
        for mut client in idle_clients.drain(..) {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0)) | Ok(Err(_))),
                "a client connection survived the checkpoint: {read:?}"
            );
        }
    }
    // The watcher made before two checkpoints still reports changes.
    api.exec(&id, "touch /home/user/after-deep").await;
    let events = api
        .envd_call(
            &id,
            &token,
            "filesystem.Filesystem/GetWatcherEvents",
            json!({"watcherId": watcher}),
        )
        .await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"].as_str().unwrap_or("").ends_with("after-deep")),
        "{events}"
    );
    let warm = api.standby(&id, false).await;
    assert_eq!(warm["power"]["tier"], "warm");
    assert_eq!(freezer_state(&id), "FROZEN");
    last = check_intact(&api, &id, &token, envd_pid, (pid, child), last).await;
    api.standby(&id, false).await;
    assert_deep(&api.standby(&id, true).await);
    last = check_intact(&api, &id, &token, envd_pid, (pid, child), last).await;

    // Concurrent requests during a restore share it and all succeed.
    api.standby(&id, true).await;
    let answers = futures::future::join_all((0..6).map(|_| api.exec(&id, "echo ok"))).await;
    assert!(
        answers
            .iter()
            .all(|(out, code)| out == "ok\n" && *code == 0),
        "{answers:?}"
    );
    last = check_intact(&api, &id, &token, envd_pid, (pid, child), last).await;

    // A graceful stop (`--deep-on-shutdown all`) sends warm and awake sandboxes deep; after a
    // (simulated) host reboot the next daemon adopts them in deep standby: it restores the one
    // that was awake at once, the other when a request comes.
    api.standby(&id, false).await;
    let (_, busy_last, _) = api.counter(&busy_id).await;
    server.stop().await;
    let images = dir.path().join("sandboxes").join(&id).join("checkpoint");
    assert!(images.is_dir(), "no checkpoint after a graceful stop");
    assert_eq!(processes(&id), 0);
    let busy_dir = dir.path().join("sandboxes").join(&busy_id);
    assert!(
        busy_dir.join("checkpoint").is_dir(),
        "awake sandbox not checkpointed"
    );
    assert!(busy_dir.join("resume-on-start").exists());
    assert_eq!(processes(&busy_id), 0);
    simulate_reboot(dir.path(), &[&id, &busy_id]);
    config.deep_after = Duration::from_secs(2);
    // ...and burrow was upgraded meanwhile: the new daemon runs other launcher and agent
    // binaries. The sandbox must come back on the files it was checkpointed with.
    let upgrade = tempfile::tempdir().unwrap();
    config.launcher_path = upgraded_copy(&config.launcher_path, upgrade.path());
    config.agent_path = upgraded_copy(&config.agent_path, upgrade.path());
    let server = TestServer::start_with(config.clone()).await;
    let api = Api::of(&server);
    assert_deep(&api.sandbox(&id).await);
    // Reading metadata never wakes a sandbox: the awake one comes back by itself.
    let start = Instant::now();
    while api.sandbox(&busy_id).await["power"]["awake"] != true {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the sandbox awake at shutdown was not restored on start: {}",
            api.sandbox(&busy_id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!busy_dir.join("resume-on-start").exists());
    let (pid_now, n, child_now) = api.counter(&busy_id).await;
    assert_eq!((pid_now, child_now), (busy_pid, busy_child));
    assert!(n >= busy_last, "counter went back ({n} < {busy_last})");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.counter(&busy_id).await.1 > n, "its thread does not run");
    api.delete(&busy_id).await;
    assert_deep(&api.sandbox(&id).await);
    last = check_intact(&api, &id, &token, envd_pid, (pid, child), last).await;
    assert!(!images.exists(), "the used checkpoint is removed");
    eprintln!("restored after a simulated reboot; count {last}");

    // The deep-after timer: idle → warm standby → deep standby after 2 s.
    let idle = api.create(json!({"idle_timeout": 1})).await;
    let idle_id = idle["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let sb = api.sandbox(&idle_id).await;
        if sb["power"]["tier"] == "deep" {
            assert_eq!(processes(&idle_id), 0);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never went deep: {sb}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api.exec(&idle_id, "echo up").await, ("up\n".to_string(), 0));

    // Deleting a sandbox in deep standby removes it and its image.
    api.standby(&id, true).await;
    api.delete(&id).await;
    assert!(!dir.path().join("sandboxes").join(&id).exists());
    assert!(cgroup_dirs(&id).is_empty());
    server.stop().await;
}

/// The daemon of [`kill_9_during_checkpoint`], in a child process of this test binary: binds,
/// writes its address to `<dir>/addr`, serves until killed.
#[tokio::test]
#[ignore = "run by kill_9_during_checkpoint in a child process"]
async fn child_daemon() {
    common::deep::run_child_daemon().await;
}

#[tokio::test]
async fn kill_9_during_checkpoint() {
    if std::env::var_os(CHILD_DIR_VAR).is_some() {
        return;
    }
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) || !criu_available() {
        return;
    }
    let t0 = Instant::now();
    let child =
        ChildDaemon::start(dir.path(), &[("BURROW_TEST_CHECKPOINT_PAUSE_MS", "60000")]).await;
    eprintln!("child daemon up after {:?}", t0.elapsed());
    let api = child.api.clone();
    let sb = api.create(json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap().to_string();
    let token = sb["envd_access_token"].as_str().unwrap().to_string();
    let (envd_pid, (pid, last, child_pid)) = start_counter(&api, &sb).await;
    let (_, code) = api
        .exec(
            &id,
            "echo kept > /home/user/state.txt && echo in-shm > /dev/shm/state",
        )
        .await;
    assert_eq!(code, 0);

    // Start a deep standby; the test hook stalls it with the sandbox frozen and eth0 parked.
    let pending = {
        let api = api.clone();
        let id = id.clone();
        tokio::spawn(async move {
            api.post(&format!("/v1/sandboxes/{id}/standby"))
                .json(&json!({"deep": true}))
                .send()
                .await
        })
    };
    let partial = dir
        .path()
        .join("sandboxes")
        .join(&id)
        .join("checkpoint.partial");
    let start = Instant::now();
    while !(partial.exists() && freezer_state(&id) == "FROZEN") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "checkpoint did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("checkpoint stalled after {:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill_9();
    assert!(
        pending.await.unwrap().is_err(),
        "the request died with the daemon"
    );

    // The next daemon finds the sandbox frozen (not checkpointed), discards the partial image,
    // gives eth0 back, and a request wakes it intact.
    let mut config = common::config(dir.path());
    // The second half needs the sandbox to stay in warm standby across the stop.
    config.deep_on_shutdown = burrow_server::DeepOnShutdown::Off;
    let server = TestServer::start_with(config.clone()).await;
    let api = Api::of(&server);
    let adopted = api.sandbox(&id).await;
    assert_eq!(adopted["state"], "standby", "{adopted}");
    assert_eq!(adopted["power"]["tier"], "warm", "{adopted}");
    assert!(!partial.exists(), "the partial image is discarded");
    eprintln!("adopted after {:?}", t0.elapsed());
    check_intact(&api, &id, &token, envd_pid, (pid, child_pid), last).await;

    // Processes gone and no complete image (e.g. killed while the daemon was down): `error`
    // with a message, never a restore from a half image, and the files are kept.
    api.standby(&id, false).await;
    server.stop().await;
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("inventory.img"), b"half").unwrap();
    for d in cgroup_dirs(&id)
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
    let _ = std::fs::write(
        cgroup_dirs(&id)
            .into_iter()
            .find(|d| d.starts_with("/sys/fs/cgroup/freezer"))
            .unwrap()
            .join("freezer.state"),
        "THAWED",
    );
    let start = Instant::now();
    while processes(&id) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "processes survived kill -9"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = TestServer::start_with(config).await;
    let api = Api::of(&server);
    let gone = api.sandbox(&id).await;
    eprintln!(
        "restarted after a crash without image after {:?}",
        t0.elapsed()
    );
    assert_eq!(gone["state"], "error", "{gone}");
    assert!(gone["error"].as_str().unwrap().contains("gone"), "{gone}");
    let files = dir.path().join("sandboxes").join(&id);
    assert!(!partial.exists(), "the half image is discarded");
    assert!(
        files.join("upper/home/user/state.txt").is_file(),
        "the sandbox's files are kept"
    );
    assert!(cgroup_dirs(&id).is_empty(), "its cgroups are released");
    // Deleting it erases the files.
    api.delete(&id).await;
    assert!(
        !files.exists(),
        "deleting an error sandbox erases its files"
    );
    server.stop().await;
}

#[tokio::test]
async fn host_netns_mode_refuses_deep_standby() {
    if std::env::var_os(CHILD_DIR_VAR).is_some() {
        return;
    }
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) || !criu_available() {
        return;
    }
    // SAFETY: the other tests of this binary read the variable only while holding the TestEnv
    // lock (taken above), in Runtime::new; it is removed again before the lock is released.
    unsafe { std::env::set_var("BURROW_NETNS_MODE", "host") };
    let server = TestServer::start(dir.path()).await;
    // SAFETY: as above.
    unsafe { std::env::remove_var("BURROW_NETNS_MODE") };
    let api = Api::of(&server);
    let sb = api.create(json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap();
    let resp = api
        .post(&format!("/v1/sandboxes/{id}/standby"))
        .json(&json!({"deep": true}))
        .send()
        .await
        .unwrap();
    let message = common::expect_error(resp, 501, "standby_failed").await;
    assert!(message.contains("BURROW_NETNS_MODE=host"), "{message}");
    // Nothing changed: still awake and working; warm standby still works.
    assert_eq!(api.sandbox(id).await["state"], "running");
    assert_eq!(api.standby(id, false).await["power"]["tier"], "warm");
    assert_eq!(api.exec(id, "echo ok").await, ("ok\n".to_string(), 0));
    server.stop().await;
}

/// Under host memory pressure (here: a threshold above any host's MemAvailable) a sandbox in
/// warm standby goes deep at once, although `deep_after` is "never"; it restores intact.
#[tokio::test]
async fn memory_pressure_sends_warm_sandboxes_deep() {
    if std::env::var_os(CHILD_DIR_VAR).is_some() {
        return;
    }
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) || !criu_available() {
        return;
    }
    let mut config = common::config(dir.path());
    config.deep_after = Duration::ZERO;
    config.deep_below_available = u64::MAX;
    let server = TestServer::start_with(config).await;
    let api = Api::of(&server);
    let sb = api.create(json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap().to_string();
    let (_, code) = api
        .exec(&id, "echo 'under pressure' > /home/user/p.txt")
        .await;
    assert_eq!(code, 0);
    // Awake sandboxes are left alone: pressure only moves sleeping ones to disk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.sandbox(&id).await["state"], "running");
    api.standby(&id, false).await;
    let start = Instant::now();
    loop {
        let sb = api.sandbox(&id).await;
        if sb["power"]["tier"] == "deep" {
            assert_deep(&sb);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still not deep under memory pressure: {sb}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(processes(&id), 0);
    assert_eq!(
        api.exec(&id, "cat /home/user/p.txt").await,
        ("under pressure\n".to_string(), 0)
    );
    server.stop().await;
}
