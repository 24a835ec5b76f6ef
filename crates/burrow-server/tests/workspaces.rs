//! Workspaces as a hostile tenant would test them: another workspace's key must find nothing of
//! A's on any surface (native REST, E2B API, metrics, usage, tombstones, audit), roles hold
//! inside a workspace, quotas refuse with 429 naming the limit, the standby-age cap deletes with
//! an erasure record, and the audit log records every call without a secret.

mod common;

use std::time::Duration;

use common::{TestServer, expect_error, install_test_template};
use serde_json::{Value, json};

/// A client acting with one key.
struct As<'a> {
    server: &'a TestServer,
    key: String,
}

impl As<'_> {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.server
            .http
            .request(method, self.server.url(path))
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(60))
    }
    async fn status(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap().status().as_u16()
    }
    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
    /// An E2B API call (`X-API-KEY`).
    fn e2b(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.server
            .http
            .request(method, self.server.url(path))
            .header("X-API-KEY", &self.key)
            .timeout(Duration::from_secs(60))
    }
}

use reqwest::Method as M;

async fn new_key(op: &As<'_>, workspace: &str, role: &str, format: &str) -> (String, String) {
    let created = op
        .json(
            M::POST,
            "/v1/api-keys",
            Some(
                json!({"name": format!("{workspace}-{role}"), "workspace": workspace,
                        "role": role, "format": format}),
            ),
        )
        .await;
    assert_eq!(created["workspace"], workspace);
    assert_eq!(created["role"], role);
    (
        created["key"].as_str().unwrap().to_string(),
        created["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn workspaces_are_walled_roled_and_quota_bound() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let mut config = common::config(dir.path());
    config.meter_interval = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let op = As {
        server: &server,
        key: server.key.clone(),
    };

    // Bad input first: nothing half-created.
    let bad = op
        .req(M::POST, "/v1/workspaces")
        .json(&json!({"name": "Bad Name"}))
        .send()
        .await
        .unwrap();
    let msg = expect_error(bad, 400, "invalid_request").await;
    assert!(msg.contains("a-z, 0-9"), "{msg}");
    let bad = op
        .req(M::POST, "/v1/workspaces")
        .json(&json!({"name": "x", "tier": "gold"}))
        .send()
        .await
        .unwrap();
    assert!(
        expect_error(bad, 400, "invalid_request")
            .await
            .contains("free")
    );
    let bad = op
        .req(M::DELETE, "/v1/workspaces/default")
        .send()
        .await
        .unwrap();
    expect_error(bad, 400, "invalid_request").await;

    let acme = op
        .json(
            M::POST,
            "/v1/workspaces",
            Some(json!({"name": "acme", "tier": "free"})),
        )
        .await;
    op.json(M::POST, "/v1/workspaces", Some(json!({"name": "bravo"})))
        .await;
    let dup = op
        .req(M::POST, "/v1/workspaces")
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    expect_error(dup, 409, "conflict").await;
    let (a_admin, a_admin_id) = new_key(&op, "acme", "admin", "burrow").await;
    let (a_viewer, _) = new_key(&op, "acme", "viewer", "burrow").await;
    let (b_member, b_member_id) = new_key(&op, "bravo", "member", "burrow").await;
    let (b_e2b, _) = new_key(&op, "bravo", "member", "e2b").await;
    let a = As {
        server: &server,
        key: a_admin.clone(),
    };
    let av = As {
        server: &server,
        key: a_viewer.clone(),
    };
    let b = As {
        server: &server,
        key: b_member.clone(),
    };
    let be = As {
        server: &server,
        key: b_e2b.clone(),
    };

    // A's sandbox belongs to acme.
    let sa = a
        .json(M::POST, "/v1/sandboxes", Some(json!({"memory_mb": 256})))
        .await;
    let sa_id = sa["id"].as_str().unwrap().to_string();
    assert_eq!(sa["workspace_id"], acme["id"]);
    let token = sa["envd_access_token"].as_str().unwrap().to_string();

    // B finds nothing of it, on every route that names it, with the body a missing sandbox
    // gets (existence is not leaked).
    let missing = "izzzzzzzzzzzzzzzzzzz";
    let routes: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, "/v1/sandboxes/{}".to_string(), None),
        (M::DELETE, "/v1/sandboxes/{}".to_string(), None),
        (
            M::POST,
            "/v1/sandboxes/{}/exec".to_string(),
            Some(json!({"cmd": ["true"]})),
        ),
        (
            M::GET,
            "/v1/sandboxes/{}/files?path=/etc/hostname".to_string(),
            None,
        ),
        (
            M::GET,
            "/v1/sandboxes/{}/files/list?path=/".to_string(),
            None,
        ),
        (
            M::POST,
            "/v1/sandboxes/{}/files/mkdir?path=/tmp/x".to_string(),
            None,
        ),
        (
            M::DELETE,
            "/v1/sandboxes/{}/files?path=/tmp".to_string(),
            None,
        ),
        (
            M::POST,
            "/v1/sandboxes/{}/standby".to_string(),
            Some(json!({})),
        ),
        (M::POST, "/v1/sandboxes/{}/resume".to_string(), None),
        (M::POST, "/v1/sandboxes/{}/restart".to_string(), None),
        (
            M::POST,
            "/v1/sandboxes/{}/leases".to_string(),
            Some(json!({"ttl_seconds": 10, "reason": "x"})),
        ),
        (
            M::PUT,
            "/v1/sandboxes/{}/expiration".to_string(),
            Some(json!({})),
        ),
        (M::GET, "/v1/sandboxes/{}/usage".to_string(), None),
        (M::GET, "/v1/sandboxes/{}/pty".to_string(), None),
        (
            M::GET,
            "/v1/sandboxes/{}/ports/8080/tunnel".to_string(),
            None,
        ),
    ];
    for (method, path, body) in &routes {
        let theirs = path.replace("{}", &sa_id);
        let mut req = b.req(method.clone(), &theirs);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 404, "{method} {theirs}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            error["code"], "sandbox_not_found",
            "{method} {theirs}: {text}"
        );
        assert_eq!(
            text.replace(&sa_id, missing),
            {
                let nobody = path.replace("{}", missing);
                let mut req = b.req(method.clone(), &nobody);
                if let Some(body) = body {
                    req = req.json(body);
                }
                req.send().await.unwrap().text().await.unwrap()
            },
            "{method} {theirs}: another workspace's sandbox answers like a missing one"
        );
    }
    // Lists, usage, metrics, tombstones: nothing of acme's.
    let listed = b.json(M::GET, "/v1/sandboxes", None).await;
    assert_eq!(listed["sandboxes"].as_array().unwrap().len(), 0);
    let usage = b.json(M::GET, "/v1/usage", None).await;
    assert!(!usage.to_string().contains(&sa_id));
    let metrics = b.req(M::GET, "/metrics").send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("burrow_sandboxes{state=\"running\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("burrow_sandbox_creates_total"),
        "{metrics}"
    );
    let mine = a.req(M::GET, "/metrics").send().await.unwrap();
    assert!(
        mine.text()
            .await
            .unwrap()
            .contains("burrow_sandboxes{state=\"running\"} 1")
    );
    assert_eq!(
        b.status(M::GET, "/v1/sandboxes?workspace=acme", None).await,
        404
    );
    assert_eq!(b.status(M::GET, "/v1/workspaces/acme", None).await, 404);
    assert_eq!(b.status(M::GET, "/v1/workspaces/bravo", None).await, 200);
    assert_eq!(
        b.json(M::GET, "/v1/workspaces", None).await["workspaces"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Keys: B is a member (403 naming the role); B's admin could not revoke A's key either.
    let resp = b.req(M::GET, "/v1/api-keys").send().await.unwrap();
    assert!(expect_error(resp, 403, "forbidden").await.contains("admin"));
    let resp = a
        .req(M::DELETE, &format!("/v1/api-keys/{b_member_id}"))
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "not_found").await;
    let a_keys = a.json(M::GET, "/v1/api-keys", None).await;
    assert_eq!(a_keys["keys"].as_array().unwrap().len(), 2, "{a_keys}");
    let resp = b
        .req(M::POST, "/v1/workspaces")
        .json(&json!({"name": "mine"}))
        .send()
        .await
        .unwrap();
    assert!(
        expect_error(resp, 403, "forbidden")
            .await
            .contains("operator")
    );

    // The E2B API, with B's E2B key.
    for (method, path) in [
        (M::GET, format!("/sandboxes/{sa_id}")),
        (M::DELETE, format!("/sandboxes/{sa_id}")),
        (M::POST, format!("/sandboxes/{sa_id}/pause")),
        (M::POST, format!("/sandboxes/{sa_id}/connect")),
        (M::POST, format!("/sandboxes/{sa_id}/timeout")),
        (M::GET, format!("/sandboxes/{sa_id}/metrics")),
    ] {
        let resp = be
            .e2b(method.clone(), &path)
            .json(&json!({"timeout": 30}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "E2B {method} {path}");
    }
    let e2b_list: Value = be
        .e2b(M::GET, "/v2/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e2b_list.as_array().map(Vec::len), Some(0), "{e2b_list}");
    // Still there, untouched, for A.
    let resp = a
        .req(M::POST, &format!("/v1/sandboxes/{sa_id}/exec"))
        .json(&json!({"cmd": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out = resp.text().await.unwrap();
    assert!(out.contains("\"exit_code\":0"), "{out}");

    // Roles inside acme: the viewer reads, nothing more.
    assert_eq!(
        av.status(M::GET, &format!("/v1/sandboxes/{sa_id}"), None)
            .await,
        200
    );
    for (method, path) in [
        (M::POST, format!("/v1/sandboxes/{sa_id}/exec")),
        (M::DELETE, format!("/v1/sandboxes/{sa_id}")),
        (M::GET, format!("/v1/sandboxes/{sa_id}/pty")),
        (M::POST, "/v1/sandboxes".to_string()),
        (M::GET, "/v1/audit".to_string()),
    ] {
        let resp = av
            .req(method.clone(), &path)
            .json(&json!({"cmd": ["true"]}))
            .send()
            .await
            .unwrap();
        let msg = expect_error(resp, 403, "forbidden").await;
        assert!(msg.contains("role"), "{method} {path}: {msg}");
    }
    let resp = av
        .e2b(M::POST, "/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Quotas: bravo may hold one sandbox; the second create is a 429 naming the limit, on the
    // native API and the E2B API alike; and per-sandbox memory above the tier's is refused.
    op.json(
        M::PATCH,
        "/v1/workspaces/bravo",
        Some(json!({"quotas": {"max_sandboxes": 1}})),
    )
    .await;
    let sb = b
        .json(M::POST, "/v1/sandboxes", Some(json!({"memory_mb": 256})))
        .await;
    let sb_id = sb["id"].as_str().unwrap().to_string();
    let resp = b
        .req(M::POST, "/v1/sandboxes")
        .json(&json!({"memory_mb": 256}))
        .send()
        .await
        .unwrap();
    let msg = expect_error(resp, 429, "quota_exceeded").await;
    assert!(msg.contains("max_sandboxes"), "{msg}");
    assert!(msg.contains("1 sandboxes exist, 1 allowed"), "{msg}");
    let resp = be
        .e2b(M::POST, "/sandboxes")
        .json(&json!({"templateID": "base"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("max_sandboxes"),
        "{body}"
    );
    let resp = a
        .req(M::POST, "/v1/sandboxes")
        .json(&json!({"memory_mb": 8192}))
        .send()
        .await
        .unwrap();
    let msg = expect_error(resp, 429, "quota_exceeded").await;
    assert!(msg.contains("max_memory_mb_per_sandbox"), "{msg}");

    // A template of acme is acme's: bravo cannot create from it, build on it, see it, or delete
    // it; and no workspace may delete a server-wide template (base).
    let build = a
        .req(M::POST, "/v1/templates")
        .json(
            &json!({"name": "acme-tools", "from": {"type": "template", "parent": "base",
                      "steps": [{"type": "run", "command": "touch /acme"}]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(build.status(), 200);
    let events = build.text().await.unwrap();
    assert!(events.contains("\"done\""), "{events}");
    let theirs = b.json(M::GET, "/v1/templates", None).await.to_string();
    assert!(
        theirs.contains("\"base\"") && !theirs.contains("acme-tools"),
        "{theirs}"
    );
    let ours = a.json(M::GET, "/v1/templates", None).await.to_string();
    assert!(ours.contains("acme-tools"), "{ours}");
    let resp = b
        .req(M::POST, "/v1/sandboxes")
        .json(&json!({"template": "acme-tools"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "template_not_found").await;
    let resp = b
        .req(M::POST, "/v1/templates")
        .json(
            &json!({"name": "mine", "from": {"type": "template", "parent": "acme-tools",
                      "steps": [{"type": "run", "command": "true"}]}}),
        )
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "template_not_found").await;
    let resp = b
        .req(M::DELETE, "/v1/templates/acme-tools")
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "template_not_found").await;
    let resp = b.req(M::DELETE, "/v1/templates/base").send().await.unwrap();
    assert!(
        expect_error(resp, 403, "forbidden")
            .await
            .contains("operator")
    );
    // A name held by another workspace is taken (409), and stays acme's.
    let resp = b
        .req(M::POST, "/v1/templates")
        .json(
            &json!({"name": "acme-tools", "from": {"type": "template", "parent": "base",
                      "steps": [{"type": "run", "command": "true"}]}}),
        )
        .send()
        .await
        .unwrap();
    expect_error(resp, 409, "template_exists").await;
    assert_eq!(
        a.status(M::DELETE, "/v1/templates/acme-tools", None).await,
        204
    );

    // Usage and its projection for acme: the inputs are the measured figures.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let proj = a
        .json(
            M::GET,
            "/v1/usage/projection?sandboxes=100&active_ratio=0.1",
            None,
        )
        .await;
    let p = &proj["projection"];
    let m = &proj["measured"];
    assert_eq!(m["scope"], "workspace", "{proj}");
    let running = m["usage"]["running_seconds"].as_f64().unwrap();
    let active = m["usage"]["active_gb_seconds"].as_f64().unwrap();
    assert!(running > 0.0, "{proj}");
    let memory_gb = p["per_sandbox"]["memory_gb"].as_f64().unwrap();
    assert!((memory_gb - active / running).abs() < 1e-9, "{proj}");
    // 256 MiB awake = 0.268 GB (metering counts the limit).
    assert!(
        (memory_gb - 256.0 * 1_048_576.0 / 1e9).abs() < 1e-6,
        "{proj}"
    );
    let prices = &p["prices"];
    let per_second = p["per_sandbox"]["vcpus"].as_f64().unwrap()
        * prices["vcpu_second"].as_f64().unwrap()
        + memory_gb * prices["gb_second"].as_f64().unwrap();
    let by_hand = 100.0 * 0.1 * 30.0 * 86400.0 * per_second;
    assert!(
        (p["active_cost"].as_f64().unwrap() - by_hand).abs() < 1e-6,
        "{proj}"
    );
    let ranged = a
        .json(M::GET, "/v1/usage?since=2000-01-01T00:00:00Z", None)
        .await;
    assert_eq!(ranged["rows"].as_array().unwrap().len(), 1, "{ranged}");
    assert_eq!(ranged["rows"][0]["sandbox_id"], sa_id.as_str());
    let csv = a
        .req(M::GET, "/v1/usage?since=2000-01-01T00:00:00Z&format=csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("workspace,workspace_id,sandbox_id,"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!("acme,{},{sa_id},", acme["id"].as_str().unwrap())),
        "{csv}"
    );

    // Removing a workspace that owns things needs force; then its sandboxes are deleted with
    // erasure records and its keys stop working.
    let resp = op
        .req(M::DELETE, "/v1/workspaces/bravo")
        .send()
        .await
        .unwrap();
    expect_error(resp, 409, "conflict").await;
    assert_eq!(
        op.status(M::DELETE, "/v1/workspaces/bravo?force=true", None)
            .await,
        204
    );
    assert_eq!(b.status(M::GET, "/v1/sandboxes", None).await, 401);
    let tombs = op.json(M::GET, "/v1/tombstones", None).await;
    let tomb = tombs["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == sb_id.as_str())
        .cloned()
        .expect("a tombstone for bravo's sandbox");
    assert_eq!(tomb["reason"], "workspace-removed");
    assert!(
        tomb["erased"]["processes_killed"].as_u64().unwrap() > 0,
        "{tomb}"
    );
    // acme's admin sees no tombstone of bravo's.
    let a_tombs = a.json(M::GET, "/v1/tombstones", None).await;
    assert!(!a_tombs.to_string().contains(&sb_id));

    // The audit log: acme's admin sees acme's calls (its create, with its key id) and none of
    // bravo's; the operator sees bravo's refused attempts on acme's sandbox. No secret anywhere.
    let audit = a.json(M::GET, "/v1/audit", None).await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "POST /v1/sandboxes"
            && e["status"] == 201
            && e["key_id"] == a_admin_id.as_str()
            && e["source"] == "127.0.0.1"),
        "{audit}"
    );
    assert!(
        entries.iter().all(|e| e["workspace_id"] == acme["id"]),
        "{audit}"
    );
    let all = op.json(M::GET, "/v1/audit?limit=10000", None).await;
    assert!(
        all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |e| e["action"] == format!("DELETE /v1/sandboxes/{sa_id}").as_str()
                    && e["status"] == 404
                    && e["key_id"] == b_member_id.as_str()
            ),
        "bravo's refused delete is recorded"
    );
    let text = all.to_string();
    for secret in [&a_admin, &a_viewer, &b_member, &b_e2b, &server.key, &token] {
        assert!(!text.contains(secret.as_str()), "a secret in the audit log");
    }

    assert_eq!(
        a.status(M::DELETE, &format!("/v1/sandboxes/{sa_id}"), None)
            .await,
        204
    );
    server.stop().await;
}

/// A tier's standby-age cap deletes sandboxes older than it once they sleep (with an erasure
/// record); an awake one is kept, and the retention report says why.
#[tokio::test]
async fn the_standby_age_cap_deletes_sleeping_sandboxes_only() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let op = As {
        server: &server,
        key: server.key.clone(),
    };
    op.json(
        M::POST,
        "/v1/workspaces",
        Some(json!({"name": "brief", "tier": "unlimited",
                    "quotas": {"max_standby_age": "3s"}})),
    )
    .await;
    let (key, _) = new_key(&op, "brief", "member", "burrow").await;
    let w = As {
        server: &server,
        key,
    };
    let sleeper = w
        .json(M::POST, "/v1/sandboxes", Some(json!({"idle_timeout": 0})))
        .await;
    let sleeper = sleeper["id"].as_str().unwrap().to_string();
    let awake = w
        .json(M::POST, "/v1/sandboxes", Some(json!({"idle_timeout": 0})))
        .await;
    let awake = awake["id"].as_str().unwrap().to_string();
    w.json(
        M::POST,
        &format!("/v1/sandboxes/{sleeper}/standby"),
        Some(json!({})),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = w
            .status(M::GET, &format!("/v1/sandboxes/{sleeper}"), None)
            .await;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sleeping sandbox past the cap was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let tombs = w.json(M::GET, "/v1/tombstones", None).await;
    let tomb = tombs["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == sleeper.as_str())
        .cloned()
        .unwrap();
    assert_eq!(tomb["reason"], "workspace-standby-age");
    assert_eq!(tomb["deleted_by"], "system");
    assert!(tomb["erased"]["upper_dir_bytes"].is_u64());
    assert_eq!(
        w.status(M::GET, &format!("/v1/sandboxes/{awake}"), None)
            .await,
        200,
        "awake work is never cut"
    );
    let report = w.json(M::GET, "/v1/retention/report?window=3s", None).await;
    assert_eq!(report["all_deleted"], false, "{report}");
    assert!(
        report["deleted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == sleeper.as_str()),
        "{report}"
    );
    let exception = &report["exceptions"][0];
    assert_eq!(exception["id"], awake.as_str());
    assert!(
        exception["why"].as_str().unwrap().contains("awake"),
        "{report}"
    );
    assert_eq!(
        w.status(M::DELETE, &format!("/v1/sandboxes/{awake}"), None)
            .await,
        204
    );
    server.stop().await;
}

/// `max_awake_sandboxes` after a wake: the wake is served, and the workspace's sandbox idle
/// longest goes to standby, so the cap holds again (nothing is killed).
#[tokio::test]
async fn a_wake_over_the_awake_cap_puts_the_idlest_to_sleep() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let op = As {
        server: &server,
        key: server.key.clone(),
    };
    op.json(
        M::POST,
        "/v1/workspaces",
        Some(json!({"name": "one-awake", "tier": "unlimited",
                    "quotas": {"max_awake_sandboxes": 1}})),
    )
    .await;
    let (key, _) = new_key(&op, "one-awake", "member", "burrow").await;
    let w = As {
        server: &server,
        key,
    };
    let create = || async {
        w.json(M::POST, "/v1/sandboxes", Some(json!({"idle_timeout": 0})))
            .await["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = create().await;
    // A second one while the first is awake is over the cap.
    let resp = w
        .req(M::POST, "/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        expect_error(resp, 429, "quota_exceeded")
            .await
            .contains("max_awake_sandboxes")
    );
    w.json(
        M::POST,
        &format!("/v1/sandboxes/{first}/standby"),
        Some(json!({})),
    )
    .await;
    let second = create().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Waking the first is served; then the second (idle longest) goes to sleep.
    let resp = w
        .req(M::POST, &format!("/v1/sandboxes/{first}/exec"))
        .json(&json!({"cmd": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("\"exit_code\":0"));
    let state_of = |id: String| {
        let w = &w;
        async move {
            w.json(M::GET, &format!("/v1/sandboxes/{id}"), None).await["state"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while state_of(second.clone()).await != "standby" {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle sandbox stayed awake over the cap"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state_of(first.clone()).await, "running");
    for id in [first, second] {
        assert_eq!(
            w.status(M::DELETE, &format!("/v1/sandboxes/{id}"), None)
                .await,
            204
        );
    }
    server.stop().await;
}
