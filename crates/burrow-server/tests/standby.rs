//! Perpetual standby through the real daemon with real sandboxes: explicit standby/resume cycles
//! (pids, memory, files, sockets, envd's process table and the clock survive), requests that wake
//! a sleeping sandbox (shared wake), the idle timer with API and in-sandbox leases and the
//! pre-standby hook (postpone, killed after the grace), adoption of a
//! frozen sandbox after a daemon restart, and deleting a sleeping sandbox. Needs root and the base
//! template (skipped otherwise). One test function: the runtime's host state is global.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use burrow_envd::EnvdClient;
use burrow_envd::proto::process::{ProcessConfig, ProcessEvent, StartRequest};
use common::{TestServer, expect_error, install_test_template};
use futures::StreamExt;
use serde_json::{Value, json};

/// A process with state in memory (a counter thread) and a listening socket that reports it.
const COUNTER_PY: &str = r#"
import http.server, os, threading, time
n = 0
def tick():
    global n
    while True:
        n += 1
        time.sleep(0.02)
threading.Thread(target=tick, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.getpid()} {n}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

/// A request to a sleeping sandbox that is not woken would hang: fail instead.
const WAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn exec(server: &TestServer, id: &str, command: &str) -> (String, i64) {
    exec_with(server, id, json!({"command": command})).await
}

async fn exec_as_root(server: &TestServer, id: &str, command: &str) -> (String, i64) {
    exec_with(server, id, json!({"command": command, "user": "root"})).await
}

async fn exec_with(server: &TestServer, id: &str, body: Value) -> (String, i64) {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&body)
        .timeout(WAKE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let text = resp.text().await.unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut code = None;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        match event["type"].as_str().unwrap() {
            "stdout" => out.extend(b64.decode(event["data"].as_str().unwrap()).unwrap()),
            "exit" => code = event["exit_code"].as_i64(),
            "error" => panic!("exec error: {event}"),
            _ => {}
        }
    }
    (String::from_utf8(out).unwrap(), code.expect("exit event"))
}

async fn sandbox(server: &TestServer, id: &str) -> Value {
    let resp = server
        .get(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn create(server: &TestServer, body: Value) -> Value {
    let resp = server
        .post("/v1/sandboxes")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn standby(server: &TestServer, id: &str) -> Value {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/standby"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

fn freezer_state(id: &str) -> String {
    // Tests run one runtime at a time; its cgroup parent is `burrow` or `burrow-<n>`.
    for entry in std::fs::read_dir("/sys/fs/cgroup/freezer")
        .unwrap()
        .flatten()
    {
        let path = entry.path().join(id).join("freezer.state");
        if let Ok(state) = std::fs::read_to_string(path) {
            return state.trim().to_string();
        }
    }
    panic!("no freezer cgroup for {id}")
}

fn zram_swap_active() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.contains("/dev/zram"))
}

/// `GET /` of the counter through the proxy: (pid, counter).
async fn counter(server: &TestServer, id: &str) -> (u32, u64) {
    let resp = server
        .http
        .get(server.url("/"))
        .header("Host", format!("8080-{id}.burrow.test"))
        .timeout(WAKE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let (pid, n) = text.split_once(' ').unwrap();
    (pid.parse().unwrap(), n.parse().unwrap())
}

/// envd's process table through the proxy (a request that wakes the sandbox too).
async fn envd_pids(server: &TestServer, id: &str, token: &str) -> Vec<u64> {
    let resp = server
        .http
        .post(server.url("/process.Process/List"))
        .header("Host", format!("49983-{id}.burrow.test"))
        .header("X-Access-Token", token)
        .header("Content-Type", "application/json")
        .body("{}")
        .timeout(WAKE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

async fn wait_for_state(server: &TestServer, id: &str, want: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let sb = sandbox(server, id).await;
        if sb["state"] == want {
            return sb;
        }
        assert!(
            start.elapsed() < within,
            "sandbox {id} not {want} within {within:?}: {sb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn standby_and_resume_end_to_end() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let mut config = common::config(dir.path());
    config.default_idle_timeout = Duration::from_secs(1);
    config.standby_grace = Duration::from_secs(2);
    // Warm standby only: a stop must leave the frozen sandbox frozen (not checkpointed).
    config.deep_on_shutdown = burrow_server::DeepOnShutdown::Off;
    let server = TestServer::start_with(config.clone()).await;

    // A sandbox that never sleeps by itself, with a stateful background process started through
    // envd (so envd's process table knows it).
    let sb = create(&server, json!({"idle_timeout": 0})).await;
    let id = sb["id"].as_str().unwrap().to_string();
    let token = sb["envd_access_token"].as_str().unwrap().to_string();
    assert_eq!(sb["power"]["idle_timeout"], 0);
    let put = server
        .put(&format!(
            "/v1/sandboxes/{id}/files?path=/home/user/counter.py"
        ))
        .body(COUNTER_PY)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let ip: std::net::Ipv4Addr = sb["ip"].as_str().unwrap().parse().unwrap();
    let envd = EnvdClient::new((ip, 49983).into(), Some(token.clone())).unwrap();
    let mut events = envd
        .start(
            StartRequest {
                process: ProcessConfig {
                    cmd: "python3".into(),
                    args: vec!["/home/user/counter.py".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
    let envd_pid = loop {
        match events.next().await {
            Some(Ok(ProcessEvent::Start(s))) => break u64::from(s.pid),
            Some(Ok(_)) => continue,
            other => panic!("no start event: {other:?}"),
        }
    };
    // Keep the stream (the process runs as long as it is open); the server must not see it.
    let start = Instant::now();
    let (pid, mut last) = loop {
        let resp = server
            .http
            .get(server.url("/"))
            .header("Host", format!("8080-{id}.burrow.test"))
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break counter(&server, &id).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "counter never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for cycle in 0..3 {
        let slept = standby(&server, &id).await;
        assert_eq!(slept["state"], "standby", "cycle {cycle}: {slept}");
        assert_eq!(slept["power"]["awake"], false);
        assert_eq!(slept["power"]["tier"], "warm");
        if cycle == 0 {
            eprintln!("asleep: {}", slept["power"]);
        }
        if zram_swap_active() {
            // Paged out: most of python's memory left the cgroup for zram.
            let swapped = slept["power"]["swap_bytes"].as_u64().unwrap();
            assert!(
                swapped > 1 << 20,
                "cycle {cycle}: only {swapped} bytes paged out"
            );
        }
        assert_eq!(freezer_state(&id), "FROZEN");
        // Standby of a sleeping sandbox is a no-op; reading metadata never wakes it.
        assert_eq!(standby(&server, &id).await["state"], "standby");
        let listed: Value = server
            .get("/v1/sandboxes?state=standby")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["sandboxes"][0]["id"], id.as_str());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sandbox(&server, &id).await["state"], "standby");
        assert_eq!(freezer_state(&id), "FROZEN");

        // A proxied request wakes it and is answered by the same process, whose memory kept
        // counting from where it was (it did not count while frozen).
        let (now_pid, n) = counter(&server, &id).await;
        assert_eq!(now_pid, pid, "cycle {cycle}: the process changed");
        assert!(n >= last, "cycle {cycle}: counter went back ({n} < {last})");
        assert!(
            n < last + 40,
            "cycle {cycle}: counter ran while frozen ({last} -> {n})"
        );
        last = n;
        let woke = sandbox(&server, &id).await;
        assert_eq!(woke["state"], "running");
        assert_eq!(woke["power"]["last_activity_source"], "proxy");
        assert_eq!(freezer_state(&id), "THAWED");

        // Files intact, clock right, envd still knows the process.
        standby(&server, &id).await;
        let (out, code) = exec(&server, &id, "cat /home/user/counter.py | wc -c; date +%s").await;
        assert_eq!(code, 0);
        let mut lines = out.lines();
        assert_eq!(lines.next().unwrap().trim(), COUNTER_PY.len().to_string());
        let inside: i64 = lines.next().unwrap().parse().unwrap();
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (inside - host).abs() <= 2,
            "clock inside {inside}, host {host}"
        );
        standby(&server, &id).await;
        assert!(envd_pids(&server, &id, &token).await.contains(&envd_pid));
        let (_, n) = counter(&server, &id).await;
        assert!(
            n > last,
            "cycle {cycle}: background process does not continue"
        );
        last = n;
    }

    // Concurrent requests to a sleeping sandbox share one wake and all succeed.
    standby(&server, &id).await;
    let answers = futures::future::join_all((0..6).map(|_| exec(&server, &id, "echo ok"))).await;
    assert!(
        answers
            .iter()
            .all(|(out, code)| out == "ok\n" && *code == 0)
    );

    // Explicit resume: 200, says running (deep standby: tests/deep_standby.rs).
    standby(&server, &id).await;
    let resumed = server
        .post(&format!("/v1/sandboxes/{id}/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    assert_eq!(resumed.json::<Value>().await.unwrap()["state"], "running");
    let bad = server
        .post(&format!("/v1/sandboxes/{id}/standby"))
        .body("{\"deeep\": 1}")
        .send()
        .await
        .unwrap();
    expect_error(bad, 400, "invalid_json").await;

    // The idle timer: a sandbox with a 1 s timeout sleeps by itself.
    let idle = create(&server, json!({"idle_timeout": 1})).await;
    let idle_id = idle["id"].as_str().unwrap().to_string();
    let mut slept = wait_for_state(&server, &idle_id, "standby", Duration::from_secs(5)).await;
    // `standby` shows from the moment the sleep is claimed; `asleep_since` once it is frozen
    // (a loaded machine can be seen in between).
    let start = Instant::now();
    while !slept["power"]["asleep_since"].is_string() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        slept = sandbox(&server, &idle_id).await;
    }
    assert!(slept["power"]["asleep_since"].is_string(), "{slept}");

    // An API lease keeps it awake; releasing it lets it sleep again.
    let lease = server
        .post(&format!("/v1/sandboxes/{idle_id}/leases"))
        .json(&json!({"ttl_seconds": 60, "reason": "build"}))
        .send()
        .await
        .unwrap();
    assert_eq!(lease.status(), 201);
    let lease: Value = lease.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let held = sandbox(&server, &idle_id).await;
    assert_eq!(held["state"], "running", "{held}");
    assert_eq!(held["power"]["leases"][0]["reason"], "build");
    let lease_id = lease["id"].as_str().unwrap();
    let released = server
        .delete(&format!("/v1/sandboxes/{idle_id}/leases/{lease_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 204);
    let again = server
        .delete(&format!("/v1/sandboxes/{idle_id}/leases/{lease_id}"))
        .send()
        .await
        .unwrap();
    expect_error(again, 404, "lease_not_found").await;
    let bad_ttl = server
        .post(&format!("/v1/sandboxes/{idle_id}/leases"))
        .json(&json!({"ttl_seconds": 0}))
        .send()
        .await
        .unwrap();
    expect_error(bad_ttl, 400, "invalid_request").await;
    wait_for_state(&server, &idle_id, "standby", Duration::from_secs(5)).await;

    // A file in /run/burrow/leases inside the sandbox holds it awake.
    let (_, code) = exec(&server, &idle_id, "touch /run/burrow/leases/job").await;
    assert_eq!(code, 0);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let held = sandbox(&server, &idle_id).await;
    assert_eq!(held["state"], "running", "{held}");
    assert_eq!(held["power"]["sandbox_leases"], 1);
    let (_, code) = exec(&server, &idle_id, "rm /run/burrow/leases/job").await;
    assert_eq!(code, 0);
    wait_for_state(&server, &idle_id, "standby", Duration::from_secs(5)).await;

    // The grace signal: before the idle timer freezes it, the sandbox's pre-standby hook runs
    // (as root, told its grace). Exit 75 postpones the standby once; the next run lets it go.
    let hook = "mkdir -p /etc/burrow && cat > /etc/burrow/pre-standby <<'HOOK'
#!/bin/sh
echo \"grace $BURROW_STANDBY_GRACE uid $(id -u)\" >> /root/hook.log
[ -e /root/postponed ] || { touch /root/postponed; exit 75; }
[ -e /root/hang ] && sleep 60
exit 0
HOOK
chmod 755 /etc/burrow/pre-standby";
    let (out, code) = exec_as_root(&server, &idle_id, hook).await;
    assert_eq!(code, 0, "{out}");
    wait_for_state(&server, &idle_id, "standby", Duration::from_secs(10)).await;
    let (log, _) = exec_as_root(&server, &idle_id, "cat /root/hook.log").await;
    assert_eq!(
        log, "grace 2 uid 0\ngrace 2 uid 0\n",
        "the hook ran twice (postponed once)"
    );
    // A hook that outlives the grace (2 s here) is killed and the sandbox sleeps anyway.
    let started = Instant::now();
    exec_as_root(&server, &idle_id, "touch /root/hang").await;
    // `burrow info` says why it is still awake meanwhile.
    let mut seen_hook = false;
    while !seen_hook && started.elapsed() < Duration::from_secs(5) {
        seen_hook = sandbox(&server, &idle_id).await["power"]["pre_standby_hook"] == true;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen_hook,
        "power.pre_standby_hook never showed the running hook"
    );
    wait_for_state(&server, &idle_id, "standby", Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "did not wait for the hook: {waited:?}"
    );
    let (left, _) = exec_as_root(
        &server,
        &idle_id,
        "pgrep -x sleep || echo none; rm /etc/burrow/pre-standby",
    )
    .await;
    assert_eq!(left, "none\n", "the hung hook was not killed");

    // An open exec stream is activity even without output.
    let (out, code) = exec(&server, &idle_id, "sleep 2.5; echo done").await;
    assert_eq!((out.as_str(), code), ("done\n", 0));

    // A daemon restart adopts the frozen sandbox: still standby, woken by the next request.
    standby(&server, &id).await;
    server.stop().await;
    assert_eq!(freezer_state(&id), "FROZEN");
    let server = TestServer::start_with(config).await;
    let adopted = sandbox(&server, &id).await;
    assert_eq!(adopted["state"], "standby", "{adopted}");
    let (now_pid, n) = counter(&server, &id).await;
    assert_eq!(now_pid, pid);
    assert!(n >= last);
    drop(events);

    // Deleting a sleeping sandbox works.
    standby(&server, &id).await;
    let deleted = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let deleted = server
        .delete(&format!("/v1/sandboxes/{idle_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    server.stop().await;
}
