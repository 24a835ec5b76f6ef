//! The daemon over real HTTP: auth, validation, OpenAPI, proxy routing errors. No sandbox needed.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TestServer, expect_error};
use serde_json::{Value, json};

#[tokio::test]
async fn public_endpoints_need_no_key() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let health: Value = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let resp = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn openapi_documents_every_route_and_schema() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let doc: Value = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes = [
        ("/healthz", "get"),
        ("/v1/sandboxes", "post"),
        ("/v1/sandboxes", "get"),
        ("/v1/sandboxes/{id}", "get"),
        ("/v1/sandboxes/{id}", "delete"),
        ("/v1/sandboxes/{id}/exec", "post"),
        ("/v1/sandboxes/{id}/files", "get"),
        ("/v1/sandboxes/{id}/files", "put"),
        ("/v1/sandboxes/{id}/files", "delete"),
        ("/v1/sandboxes/{id}/files/list", "get"),
        ("/v1/sandboxes/{id}/files/mkdir", "post"),
        ("/v1/sandboxes/{id}/pty", "get"),
        ("/v1/sandboxes/{id}/ports/{port}/tunnel", "get"),
        ("/v1/sandboxes/{id}/standby", "post"),
        ("/v1/sandboxes/{id}/resume", "post"),
        ("/v1/sandboxes/{id}/restart", "post"),
        ("/v1/sandboxes/{id}/leases", "post"),
        ("/v1/sandboxes/{id}/leases/{lease}", "delete"),
        ("/v1/templates", "get"),
        ("/v1/templates", "post"),
        ("/v1/templates/{name}", "delete"),
        ("/v1/templates/uploads/{sha256}", "get"),
        ("/v1/templates/uploads/{sha256}", "put"),
        ("/v1/sandboxes/{id}/expiration", "put"),
        ("/v1/sandboxes/{id}/usage", "get"),
        ("/v1/usage", "get"),
        ("/v1/tombstones", "get"),
    ];
    for (path, method) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, routes.len(), "undocumented or untested routes");
    for schema in [
        "ApiError",
        "Sandbox",
        "CreateSandboxRequest",
        "ExecRequest",
        "ExecEvent",
        "FileEntry",
        "TemplateInfo",
        "TemplateBuildRequest",
        "TemplateBuildEvent",
        "TemplateUpload",
        "PtyControl",
        "PowerInfo",
        "Lease",
        "CreateLeaseRequest",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    server.stop().await;
}

#[tokio::test]
async fn first_start_creates_one_key_file_and_restart_keeps_it() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let key = server.key.clone();
    assert!(key.starts_with("bw_") && key.len() == 43, "{key}");
    let meta = std::fs::metadata(dir.path().join("client.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    assert_eq!(server.key, key, "a restart must not replace the key");
    let resp = server.get("/v1/sandboxes").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let url = server.url("/v1/sandboxes");

    let missing = server.http.get(&url).send().await.unwrap();
    let msg = expect_error(missing, 401, "unauthorized").await;
    assert!(msg.contains("Authorization"), "{msg}");

    let wrong = server
        .http
        .get(&url)
        .bearer_auth("bw_nope")
        .send()
        .await
        .unwrap();
    expect_error(wrong, 401, "unauthorized").await;
    let wrong_header = server
        .http
        .get(&url)
        .header("X-API-Key", "bw_nope")
        .send()
        .await
        .unwrap();
    expect_error(wrong_header, 401, "unauthorized").await;
    let basic = server
        .http
        .get(&url)
        .header("Authorization", format!("Basic {}", server.key))
        .send()
        .await
        .unwrap();
    expect_error(basic, 401, "unauthorized").await;
    // Unknown routes are not revealed without a key either.
    let unknown = server
        .http
        .get(server.url("/v1/nope"))
        .send()
        .await
        .unwrap();
    expect_error(unknown, 401, "unauthorized").await;

    let bearer = server
        .http
        .get(&url)
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let body: Value = bearer.json().await.unwrap();
    assert_eq!(body, json!({"sandboxes": []}));
    let header = server
        .http
        .get(&url)
        .header("x-api-key", &server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), 200);
    server.stop().await;
}

/// Issue 12 item 14: keys are listed (never the key or its hash) with their last use, revoked
/// keys are refused at once on the native and the E2B API, and the operator key stays.
#[tokio::test]
async fn api_keys_are_listed_with_last_use_and_revoked_at_once() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let mut issued = Vec::new();
    for (name, format) in [("worker", "burrow"), ("sdk", "e2b")] {
        let resp = server
            .post("/v1/api-keys")
            .json(&json!({"name": name, "format": format}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let created: Value = resp.json().await.unwrap();
        issued.push((
            created["id"].as_str().unwrap().to_string(),
            created["key"].as_str().unwrap().to_string(),
        ));
    }
    let (worker_id, worker_key) = issued[0].clone();
    let (sdk_id, sdk_key) = issued[1].clone();
    let native = |key: &str| {
        server
            .http
            .get(server.url("/v1/sandboxes"))
            .bearer_auth(key)
            .send()
    };
    let e2b = |key: &str| {
        server
            .http
            .get(server.url("/v2/sandboxes"))
            .header("host", "api.burrow.test")
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(e2b(&sdk_key).await.unwrap().status(), 200);

    let resp = server.get("/v1/api-keys").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for (_, key) in &issued {
        assert!(!text.contains(key.as_str()), "a key is listed: {text}");
        assert!(
            !text.contains(&burrow_store::hash_api_key(key)[12..]),
            "a hash is listed: {text}"
        );
    }
    let list: Value = serde_json::from_str(&text).unwrap();
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "{list}");
    let find = |id: &str| keys.iter().find(|k| k["id"] == id).unwrap().clone();
    let operator = keys[0].clone();
    assert_eq!(operator["operator"], true, "{list}");
    assert!(
        operator["last_used_at"].is_string(),
        "it listed the keys: {list}"
    );
    assert_eq!(find(&sdk_id)["kind"], "e2b");
    assert!(find(&sdk_id)["last_used_at"].is_string(), "{list}");
    assert_eq!(find(&worker_id)["kind"], "burrow");
    assert!(
        find(&worker_id)["last_used_at"].is_null(),
        "never used: {list}"
    );
    assert_eq!(find(&worker_id)["operator"], false);

    // Revoked: refused at once, on both APIs; the other keys still work.
    assert_eq!(native(&worker_key).await.unwrap().status(), 200);
    for id in [&worker_id, &sdk_id] {
        let resp = server
            .delete(&format!("/v1/api-keys/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
    for key in [&worker_key, &sdk_key] {
        expect_error(native(key).await.unwrap(), 401, "unauthorized").await;
        assert_eq!(e2b(key).await.unwrap().status(), 401);
    }
    assert_eq!(native(&server.key).await.unwrap().status(), 200);
    assert_eq!(e2b(&server.key).await.unwrap().status(), 200);
    let resp = server
        .delete(&format!("/v1/api-keys/{worker_id}"))
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "not_found").await;
    let resp = server
        .delete("/v1/api-keys/key_nosuch")
        .send()
        .await
        .unwrap();
    expect_error(resp, 404, "not_found").await;
    let operator_id = operator["id"].as_str().unwrap();
    let resp = server
        .delete(&format!("/v1/api-keys/{operator_id}"))
        .send()
        .await
        .unwrap();
    let msg = expect_error(resp, 400, "invalid_request").await;
    assert!(msg.contains("operator key cannot be deleted"), "{msg}");
    let list: Value = server
        .get("/v1/api-keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 1, "{list}");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_exact_status_and_code() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let create = |body: &str| {
        server
            .post("/v1/sandboxes")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };

    let msg = expect_error(create("{not json").await.unwrap(), 400, "invalid_json").await;
    assert!(
        msg.contains("line 1"),
        "serde's position should be in: {msg}"
    );
    let msg = expect_error(create(r#"{"cpu": 2}"#).await.unwrap(), 400, "invalid_json").await;
    assert!(msg.contains("unknown field `cpu`"), "{msg}");
    expect_error(
        create(r#"{"memory_mb": "lots"}"#).await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    let msg = expect_error(
        create(r#"{"cpus": 0}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(msg.contains("cpus"), "{msg}");
    expect_error(
        create(r#"{"cpus": 1000}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        create(r#"{"memory_mb": 1}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        create(r#"{"memory_mb": 70000}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        create(r#"{"disk_mb": 0}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        create(r#"{"env": {"1BAD": "x"}}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        create(r#"{"labels": {"bad key": "x"}}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        create(r#"{"template": "../etc"}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    let msg = expect_error(
        create(r#"{"template": "nosuch"}"#).await.unwrap(),
        404,
        "template_not_found",
    )
    .await;
    assert!(msg.contains("nosuch"), "{msg}");
    // Nothing half-created.
    let list: Value = server
        .get("/v1/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sandboxes"], json!([]));

    let big = format!(r#"{{"labels": {{"a": "{}"}}}}"#, "x".repeat(100 << 10));
    expect_error(create(&big).await.unwrap(), 413, "payload_too_large").await;

    expect_error(
        server
            .get("/v1/sandboxes?state=paused")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        server
            .get("/v1/sandboxes?label=novalue")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        server.get("/v1/sandboxes?colour=red").send().await.unwrap(),
        400,
        "invalid_request",
    )
    .await;

    for path in [
        "/v1/sandboxes/inosuch",
        "/v1/sandboxes/NOT-AN-ID",
        "/v1/sandboxes/inosuch/files?path=/etc/hostname",
        "/v1/sandboxes/inosuch/files/list?path=/",
    ] {
        expect_error(
            server.get(path).send().await.unwrap(),
            404,
            "sandbox_not_found",
        )
        .await;
    }
    expect_error(
        server.delete("/v1/sandboxes/inosuch").send().await.unwrap(),
        404,
        "sandbox_not_found",
    )
    .await;
    let exec = server
        .post("/v1/sandboxes/inosuch/exec")
        .json(&json!({"command": "true"}))
        .send();
    expect_error(exec.await.unwrap(), 404, "sandbox_not_found").await;
    // The sandbox is looked up before the body or the query is read (the wall between
    // workspaces answers first), so a missing one is a 404 whatever else is wrong with the
    // request: an answer that told bad input from a missing sandbox would also tell another
    // workspace's sandbox from a missing one.
    let exec = server
        .post("/v1/sandboxes/inosuch/exec")
        .json(&json!({}))
        .send();
    expect_error(exec.await.unwrap(), 404, "sandbox_not_found").await;
    let exec = server
        .post("/v1/sandboxes/inosuch/exec")
        .json(&json!({"cmd": "ls"}))
        .send();
    expect_error(exec.await.unwrap(), 404, "sandbox_not_found").await;
    for path in [
        "/v1/sandboxes/inosuch/files",
        "/v1/sandboxes/inosuch/files?path=a%00b",
        "/v1/sandboxes/inosuch/ports/0/tunnel",
    ] {
        expect_error(
            server.get(path).send().await.unwrap(),
            404,
            "sandbox_not_found",
        )
        .await;
    }

    expect_error(
        server.get("/v1/nope").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    expect_error(
        server.put("/v1/sandboxes").send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    expect_error(
        server.delete("/v1/templates/nosuch").send().await.unwrap(),
        404,
        "template_not_found",
    )
    .await;
    expect_error(
        server
            .delete("/v1/templates/x%2F..%2Fetc")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    let build = server.post("/v1/templates").json(&json!({"name": "x", "from": {"type": "template", "parent": "nosuch", "steps": [{"type": "run", "command": "true"}]}}));
    expect_error(build.send().await.unwrap(), 404, "template_not_found").await;
    let build = server
        .post("/v1/templates")
        .json(&json!({"name": "x", "from": {"type": "rootfs", "path": "relative/dir"}}));
    expect_error(build.send().await.unwrap(), 400, "invalid_request").await;
    server.stop().await;
}

#[tokio::test]
async fn proxy_routes_by_host_and_headers_with_e2b_errors() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;

    // No API key: the proxy does not use it.
    let by_host = server
        .http
        .get(server.url("/health"))
        .header("Host", "49983-inosuch.burrow.test")
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.status(), 502);
    let body: Value = by_host.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sandboxId": "inosuch", "message": "The sandbox was not found", "code": 502})
    );

    let by_headers = server
        .http
        .get(server.url("/health"))
        .header("E2b-Sandbox-Id", "inosuch")
        .header("E2b-Sandbox-Port", "49983")
        .send()
        .await
        .unwrap();
    assert_eq!(by_headers.status(), 502);
    let body: Value = by_headers.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("was not found"));

    let half = server
        .http
        .get(server.url("/health"))
        .header("E2b-Sandbox-Id", "inosuch")
        .send()
        .await
        .unwrap();
    expect_error(half, 400, "invalid_request").await;

    // A host that is not a sandbox host reaches the API.
    let api = server
        .http
        .get(server.url("/healthz"))
        .header("Host", "api.burrow.test")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn failed_create_leaves_nothing_behind() {
    let dir = common::TestEnv::new();
    // A template whose layer does not exist: the runtime refuses it.
    let broken = dir.path().join("templates/broken");
    std::fs::create_dir_all(&broken).unwrap();
    let template = json!({
        "name": "broken", "layers": [dir.path().join("no/such/layer")], "env": {},
        "user": "user", "source": "rootfs", "created_at": "2026-01-01T00:00:00Z", "size_bytes": 0,
    });
    std::fs::write(broken.join("template.json"), template.to_string()).unwrap();
    let server = TestServer::start(dir.path()).await;
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({"template": "broken"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(status >= 400, "{status} {body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
    let list: Value = server
        .get("/v1/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sandboxes"], json!([]), "a failed create left a row");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sandboxes"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "a failed create left {leftovers:?}");
    server.stop().await;
}

#[tokio::test]
async fn start_reconciles_rows_left_by_a_crash() {
    use burrow_store::{SandboxRecord, Store};
    let dir = common::TestEnv::new();
    // First start creates the database; then simulate what a crash could leave behind.
    TestServer::start(dir.path()).await.stop().await;
    let store = Store::open(&dir.path().join("burrow.db")).await.unwrap();
    store
        .insert_sandbox(&SandboxRecord::new_creating(
            "ihalfmade".into(),
            "base".into(),
        ))
        .await
        .unwrap();
    store
        .insert_sandbox(&SandboxRecord::new_creating(
            "ivanished".into(),
            "base".into(),
        ))
        .await
        .unwrap();
    let handle = json!({"id": "ivanished", "slot": 0, "uid_base": 268435456, "ip": "10.200.0.2",
        "init_pid": 999999, "init_start_time": 1});
    store
        .mark_sandbox_running("ivanished", &handle.to_string(), "10.200.0.2")
        .await
        .unwrap();
    drop(store);

    let server = TestServer::start(dir.path()).await;
    expect_error(
        server.get("/v1/sandboxes/ihalfmade").send().await.unwrap(),
        404,
        "sandbox_not_found",
    )
    .await;
    let vanished: Value = server
        .get("/v1/sandboxes/ivanished")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(vanished["state"], "error");
    assert!(
        vanished["error"]
            .as_str()
            .unwrap()
            .starts_with("sandbox processes were gone after a restart"),
        "{vanished}"
    );
    assert!(vanished.get("ip").is_none(), "{vanished}");
    assert_eq!(
        server
            .delete("/v1/sandboxes/ivanished")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    server.stop().await;
}

/// E2B routes burrow does not implement answer E2B's 501 on the plain listener too (where E2B's
/// paths are recognised by prefix), never the native API's 404 with a string code.
#[tokio::test]
async fn e2b_routes_burrow_lacks_answer_501_on_any_host() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    for (method, path) in [
        ("POST", "/sandboxes/inosuch/snapshots"),
        ("GET", "/snapshots"),
        ("POST", "/sandboxes/inosuch/fork"),
        ("PUT", "/sandboxes/inosuch/network"),
        ("GET", "/volumes"),
        ("GET", "/secrets"),
        ("GET", "/v2/templates"),
        ("POST", "/templates/tags"),
        ("GET", "/default-templates"),
        ("GET", "/unstable/sandboxes/inosuch/record"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for host in [None, Some("api.burrow.test")] {
            let mut request = server
                .http
                .request(method.clone(), server.url(path))
                .header("X-API-KEY", &server.key)
                .json(&json!({}));
            if let Some(host) = host {
                request = request.header("Host", host);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 501, "{method} {path} ({host:?})");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], 501, "{method} {path}: {body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("not supported by burrow"),
                "{body}"
            );
        }
    }
    // The native API's own paths are untouched.
    let native = server.get("/v1/templates").send().await.unwrap();
    assert_eq!(native.status(), 200);
    server.stop().await;
}
