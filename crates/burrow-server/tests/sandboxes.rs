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
    assert_eq!(dead["error"], "sandbox processes were gone after a restart");
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
