//! Real sandboxes through the real daemon: create, exec, files (hostile paths too), labels,
//! restart with adoption, dead-sandbox handling, delete and cleanup. Needs root and the base
//! template (skipped with a message otherwise). One test function: the runtime's host state
//! (network pool, nftables, cgroup roots) is global, so sandbox tests must not run in parallel.

mod common;

use std::time::Duration;

use base64::Engine;
use burrow_runtime::SandboxHandle;
use burrow_store::Store;
use common::{TestServer, expect_error, install_test_template};
use serde_json::{Value, json};

async fn exec_stdout(server: &TestServer, id: &str, command: &str) -> (String, i64) {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": command}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
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

#[tokio::test]
async fn sandbox_lifecycle_end_to_end() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;

    // Create.
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({"env": {"GREETING": "hi"}, "labels": {"suite": "e2e"}, "cpus": 0.5, "memory_mb": 256}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let sandbox: Value = resp.json().await.unwrap();
    let id = sandbox["id"].as_str().unwrap().to_string();
    assert!(
        burrow_types::is_valid_sandbox_id(&id) && id.len() == 20,
        "{id}"
    );
    assert_eq!(sandbox["state"], "running");
    assert_eq!(sandbox["env"]["GREETING"], "hi");
    let ip: std::net::Ipv4Addr = sandbox["ip"].as_str().unwrap().parse().unwrap();
    assert!(ip.is_private(), "{ip}");

    // Exec as the template's default user, with the sandbox env.
    let (out, code) = exec_stdout(&server, &id, "echo $GREETING; id -un; hostname").await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["hi", "user"], "{out}");

    // Files, including paths that try to leave the sandbox.
    let put = server
        .put(&format!("/v1/sandboxes/{id}/files?path=notes/a.txt"))
        .body("hello file")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got = server
        .get(&format!(
            "/v1/sandboxes/{id}/files?path=/home/user/notes/a.txt"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "hello file");
    let marker = format!("burrow-escape-{id}");
    for hostile in [
        format!("../../../../../../tmp/{marker}"),
        format!("/tmp/../../../tmp/{marker}"),
        format!("/proc/1/root/tmp/{marker}"),
    ] {
        let resp = server
            .put(&format!(
                "/v1/sandboxes/{id}/files?path={}",
                url::form_urlencoded::byte_serialize(hostile.as_bytes()).collect::<String>()
            ))
            .body("x")
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            !std::path::Path::new("/tmp").join(&marker).exists(),
            "{hostile} escaped the sandbox ({status})"
        );
    }
    let host_only = server
        .get(&format!(
            "/v1/sandboxes/{id}/files?path={}",
            dir.path().join("burrow.db").display()
        ))
        .send()
        .await
        .unwrap();
    expect_error(host_only, 404, "file_not_found").await;

    // Listing by label and state.
    let listed: Value = server
        .get("/v1/sandboxes?label=suite=e2e&state=running")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 1);
    let none: Value = server
        .get("/v1/sandboxes?label=suite=other")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["sandboxes"], json!([]));

    // Restart: the running sandbox is adopted and still works.
    let key = server.key.clone();
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    assert_eq!(server.key, key);
    let again: Value = server
        .get(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["state"], "running", "{again}");
    let (out, _) = exec_stdout(&server, &id, "cat ~/notes/a.txt").await;
    assert_eq!(out, "hello file");

    // A sandbox whose processes die while the daemon is down is marked `error`.
    let doomed: Value = server
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doomed_id = doomed["id"].as_str().unwrap().to_string();
    server.stop().await;
    let store = Store::open(&dir.path().join("burrow.db")).await.unwrap();
    let rec = store.get_sandbox(&doomed_id).await.unwrap().unwrap();
    let handle: SandboxHandle = serde_json::from_str(rec.handle_json.as_deref().unwrap()).unwrap();
    drop(store);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(handle.init_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = TestServer::start(dir.path()).await;
    let dead: Value = server
        .get(&format!("/v1/sandboxes/{doomed_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["state"], "error", "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .starts_with("sandbox processes were gone after a restart; its files are kept"),
        "{dead}"
    );
    assert!(
        dir.path()
            .join("sandboxes")
            .join(&doomed_id)
            .join("upper")
            .is_dir(),
        "a dead sandbox keeps its files until it is deleted"
    );
    let exec = server
        .post(&format!("/v1/sandboxes/{doomed_id}/exec"))
        .json(&json!({"command": "true"}))
        .send()
        .await
        .unwrap();
    expect_error(exec, 409, "sandbox_not_running").await;
    assert_eq!(
        server
            .delete(&format!("/v1/sandboxes/{doomed_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let (_, code) = exec_stdout(&server, &id, "true").await;
    assert_eq!(code, 0, "the live sandbox survived the second restart");

    // A sandbox whose processes die while the daemon runs is reported as `error` at once.
    let victim: Value = server
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let victim_id = victim["id"].as_str().unwrap().to_string();
    let store = Store::open(&dir.path().join("burrow.db")).await.unwrap();
    let rec = store.get_sandbox(&victim_id).await.unwrap().unwrap();
    let handle: SandboxHandle = serde_json::from_str(rec.handle_json.as_deref().unwrap()).unwrap();
    drop(store);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(handle.init_pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running: Value = server
        .get("/v1/sandboxes?state=running")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = running["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [id.as_str()],
        "the dead sandbox is not listed as running"
    );
    let dead: Value = server
        .get(&format!("/v1/sandboxes/{victim_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["state"], "error");
    assert_eq!(dead["error"], "sandbox processes exited unexpectedly");
    assert_eq!(
        server
            .delete(&format!("/v1/sandboxes/{victim_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(!dir.path().join("sandboxes").join(&victim_id).exists());

    // Templates: listed, not rebuilt over, not deleted while in use.
    let templates: Value = server
        .get("/v1/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(templates["templates"][0]["name"], "base", "{templates}");
    assert_eq!(templates["templates"][0]["user"], "user");
    let rebuild = server
        .post("/v1/templates")
        .json(&json!({"name": "base", "from": {"type": "debootstrap"}}));
    expect_error(rebuild.send().await.unwrap(), 409, "template_exists").await;
    expect_error(
        server.delete("/v1/templates/base").send().await.unwrap(),
        409,
        "template_in_use",
    )
    .await;

    // Delete: gone from the API, the proxy and the disk.
    assert_eq!(
        server
            .delete(&format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    expect_error(
        server
            .get(&format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        "sandbox_not_found",
    )
    .await;
    let proxied = server
        .http
        .get(server.url("/health"))
        .header("Host", format!("49983-{id}.burrow.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 502);
    assert!(
        !dir.path().join("sandboxes").join(&id).exists(),
        "sandbox dir left behind"
    );
    let all: Value = server
        .get("/v1/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["sandboxes"], json!([]));
    server.stop().await;
}

/// Reads an NDJSON build response; returns the final event.
async fn build(server: &TestServer, body: Value) -> Value {
    let resp = server
        .post("/v1/templates")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let text = resp.text().await.unwrap();
    let last = text.lines().last().expect("at least one event");
    serde_json::from_str(last).unwrap()
}

#[tokio::test]
async fn templates_built_with_run_steps_and_imported_from_a_rootfs() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;

    // Build steps on base: RUN goes through a real temporary sandbox.
    let done = build(
        &server,
        json!({"name": "withfile", "from": {"type": "template", "parent": "base", "steps": [
            {"type": "run", "command": "echo built-by-run > /etc/built.txt && useradd -m extra"},
            {"type": "env", "key": "FROM_BUILD", "value": "yes"},
            {"type": "workdir", "path": "/tmp"},
        ]}}),
    )
    .await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["template"]["env"]["FROM_BUILD"], "yes");
    let created: Value = server
        .post("/v1/sandboxes")
        .json(&json!({"template": "withfile"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created").to_string();
    let (out, code) = exec_stdout(
        &server,
        &id,
        "cat /etc/built.txt; echo $FROM_BUILD; pwd; id -u extra; stat -c %U /etc/built.txt",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "built-by-run\nyes\n/tmp\n1001\nroot\n");
    // The build's temporary sandboxes are gone: only ours is left.
    let on_disk: Vec<_> = std::fs::read_dir(dir.path().join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| burrow_types::is_valid_sandbox_id(n))
        .collect();
    assert_eq!(on_disk, std::slice::from_ref(&id));
    assert_eq!(
        server
            .delete(&format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    // A failing RUN step fails the build and leaves no template.
    let failed = build(
        &server,
        json!({"name": "broken", "from": {"type": "template", "parent": "base", "steps": [
            {"type": "run", "command": "exit 3"}]}}),
    )
    .await;
    assert_eq!(failed["type"], "error", "{failed}");
    expect_error(
        server
            .post("/v1/sandboxes")
            .json(&json!({"template": "broken"}))
            .send()
            .await
            .unwrap(),
        404,
        "template_not_found",
    )
    .await;

    // Import a tiny root file system, uploaded as a tarball (API builds read no server path).
    let rootfs = dir.path().join("tiny-rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), "tiny\n").unwrap();
    let mut tarball = tar::Builder::new(Vec::new());
    tarball.append_dir_all(".", &rootfs).unwrap();
    let tarball = tarball.into_inner().unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tarball));
    let put = server
        .put(&format!("/v1/templates/uploads/{hash}"))
        .body(tarball)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let done = build(
        &server,
        json!({"name": "tiny", "from": {"type": "rootfs", "upload": hash}}),
    )
    .await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["template"]["source"], "rootfs");
    let list: Value = server
        .get("/v1/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"tiny") && names.contains(&"withfile"),
        "{names:?}"
    );
    assert_eq!(
        server
            .delete("/v1/templates/tiny")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        server
            .delete("/v1/templates/withfile")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    server.stop().await;
}

/// One value of the server's Prometheus text (`GET /metrics`).
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// The E2B API (Host `api.{domain}`, `X-API-Key`).
fn e2b_request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    server
        .http
        .request(method, server.url(path))
        .header("host", "api.burrow.test")
        .header("x-api-key", &server.key)
}

/// Requests that wake and use the sandbox, in a loop, until it is gone: they race with its
/// delete (the way an SDK's in-flight calls do when it kills a sandbox).
fn hammer(server: &TestServer, id: &str) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|_| {
            let http = server.http.clone();
            let url = server.url(&format!("/v1/sandboxes/{id}/files?path=/etc/hostname"));
            let key = server.key.clone();
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while std::time::Instant::now() < deadline {
                    let status = http
                        .get(&url)
                        .bearer_auth(&key)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    if status == 404 {
                        return;
                    }
                }
                panic!("{url} still answers after 60 s");
            })
        })
        .collect()
}

/// Waits until the sandbox's row is gone (a delete removes it last, after the tombstone).
async fn wait_gone(server: &TestServer, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server
        .get(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .status()
        != 404
    {
        assert!(std::time::Instant::now() < deadline, "{id} not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tombstones_of(server: &TestServer, id: &str) -> usize {
    let list: Value = server
        .get("/v1/tombstones")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"] == id)
        .count()
}

/// Issue 12 items 12 and 13: every delete path (native DELETE, E2B kill, E2B timeout, expiry)
/// forgets the sandbox's power state even with requests racing the delete, so the idle timer
/// never retries a deleted sandbox; and concurrent deletes of one sandbox all succeed, with one
/// tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_forget_the_sandbox_and_are_idempotent() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let mut config = common::config(dir.path());
    config.default_idle_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(config).await;
    let create_native = |body: Value| {
        let server = &server;
        async move {
            let resp = server
                .post("/v1/sandboxes")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            let sb: Value = resp.json().await.unwrap();
            sb["id"].as_str().unwrap().to_string()
        }
    };
    let create_e2b = |timeout: u64| {
        let server = &server;
        async move {
            let resp = e2b_request(server, reqwest::Method::POST, "/sandboxes")
                .json(&json!({"templateID": "base", "timeout": timeout}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            let sb: Value = resp.json().await.unwrap();
            sb["sandboxID"].as_str().unwrap().to_string()
        }
    };

    // Each delete path, with requests racing it.
    let native = create_native(json!({})).await;
    let racing = hammer(&server, &native);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let resp = server
        .delete(&format!("/v1/sandboxes/{native}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let delete_takes = started.elapsed();
    for task in racing {
        task.await.unwrap();
    }

    let killed = create_native(json!({})).await;
    let racing = hammer(&server, &killed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = e2b_request(
        &server,
        reqwest::Method::DELETE,
        &format!("/sandboxes/{killed}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 204);
    for task in racing {
        task.await.unwrap();
    }

    let timed_out = create_e2b(2).await;
    let expired = create_native(json!({"expiration": {"ttl_max_age": 2}})).await;
    let racing: Vec<_> = hammer(&server, &timed_out)
        .into_iter()
        .chain(hammer(&server, &expired))
        .collect();
    for task in racing {
        task.await.unwrap();
    }
    for id in [&native, &killed, &timed_out, &expired] {
        // The racing requests see 404 as soon as the delete has begun; its row goes last.
        wait_gone(&server, id).await;
        assert_eq!(tombstones_of(&server, id).await, 1, "{id}");
    }
    // Nothing is tracked any more, and over several idle periods (1 s) the idle timer tries
    // nothing.
    assert_eq!(metric(&server, "burrow_power_tracked_sandboxes").await, 0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(metric(&server, "burrow_power_tracked_sandboxes").await, 0.0);
    assert_eq!(
        metric(&server, "burrow_idle_standby_failures_total").await,
        0.0
    );

    // Concurrent deletes: native + native, E2B + E2B, native + E2B; the second one comes while
    // the first is under way (a quarter into a delete's usual time), or at the very same time.
    // Both succeed, and the one tombstone is the first's (it measured live processes; a second
    // erasure would have found none). A delete of a deleted sandbox stays a 404 on both APIs.
    for (first_e2b, second_e2b, stagger) in [
        (false, false, delete_takes / 4),
        (true, true, delete_takes / 4),
        (false, true, delete_takes / 4),
        (true, false, Duration::ZERO),
    ] {
        let id = create_native(json!({})).await;
        let delete = |e2b: bool, after: Duration| {
            let path = if e2b {
                format!("/sandboxes/{id}")
            } else {
                format!("/v1/sandboxes/{id}")
            };
            let request = if e2b {
                e2b_request(&server, reqwest::Method::DELETE, &path)
            } else {
                server.delete(&path)
            };
            async move {
                tokio::time::sleep(after).await;
                let resp = request.send().await.unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            }
        };
        let (a, b) = tokio::join!(
            delete(first_e2b, Duration::ZERO),
            delete(second_e2b, stagger)
        );
        assert_eq!(
            (a.0, b.0),
            (204, 204),
            "e2b: {first_e2b} {second_e2b}, second after {stagger:?}: {a:?} {b:?}"
        );
        let list: Value = server
            .get("/v1/tombstones")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tombstones: Vec<&Value> = list["tombstones"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["id"] == id.as_str())
            .collect();
        assert_eq!(tombstones.len(), 1, "{tombstones:?}");
        assert!(
            tombstones[0]["erased"]["processes_killed"]
                .as_u64()
                .unwrap()
                > 0,
            "the tombstone is the first delete's: {}",
            tombstones[0]
        );
        assert_eq!(delete(false, Duration::ZERO).await.0, 404);
        assert_eq!(delete(true, Duration::ZERO).await.0, 404);
    }
    assert_eq!(metric(&server, "burrow_power_tracked_sandboxes").await, 0.0);
    server.stop().await;
}

/// A directory's size is whole blocks, at least one (4096 for a new directory), as envd reports on
/// E2B's ext4, although the sandbox's btrfs says 0 for an empty directory; files keep their size.
#[tokio::test]
async fn directories_report_their_size_in_blocks() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let sandbox: Value = resp.json().await.unwrap();
    let id = sandbox["id"].as_str().unwrap().to_string();

    let resp = server
        .post(&format!(
            "/v1/sandboxes/{id}/files/mkdir?path=/home/user/sized/empty"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = server
        .put(&format!(
            "/v1/sandboxes/{id}/files?path=/home/user/sized/a.txt"
        ))
        .body("12345")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let list: Vec<Value> = server
        .get(&format!(
            "/v1/sandboxes/{id}/files/list?path=/home/user/sized"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size = |name: &str| {
        list.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {list:?}"))["size"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(size("empty"), 4096, "{list:?}");
    assert_eq!(size("a.txt"), 5, "{list:?}");

    let resp = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    server.stop().await;
}
