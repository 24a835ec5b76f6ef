//! The official `e2b` Python SDK (2.63.0, pinned in crates/burrow-e2b/tests/e2b-control/) end to
//! end against a real burrow server: HTTPS on 127.0.0.1:443 with burrow's local CA and domain
//! `burrow.localhost` (the SDK resolves `*.localhost` to loopback itself and always uses port 443
//! for sandbox URLs), real sandboxes, real envd through the port proxy.
//!
//! Needs root, the base template, python3 and (the first time) PyPI access for the venv, which is
//! shared with burrow-e2b's tests (`<target>/tmp/e2b-control-venvs/`, or `BURROW_E2B_VENVS`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burrow_server::{ServerConfig, TlsConfig};
use common::{TestEnv, TestServer, install_test_template};
use serde_json::{Value, json};
use tokio::process::Command;

const DOMAIN: &str = "burrow.localhost";
const SDK_VERSION: &str = "2.63.0";
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2b/sdk_e2e.py");
const REQUIREMENTS_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../burrow-e2b/tests/e2b-control"
);

fn venvs_dir() -> PathBuf {
    std::env::var_os("BURROW_E2B_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2b-control-venvs"))
}

/// The venv's python for the pinned SDK, created from the pinned requirements if needed.
async fn sdk_python() -> PathBuf {
    let venv = venvs_dir().join(format!("e2b-{SDK_VERSION}"));
    let python = venv.join("bin/python");
    if venv.join(".burrow-installed").exists() {
        return python;
    }
    // burrow-e2b's tests install into the same directory: one installer at a time.
    std::fs::create_dir_all(venvs_dir()).unwrap();
    let lock = std::fs::File::create(venvs_dir().join(".install.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if venv.join(".burrow-installed").exists() {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .await
        .expect("python3 is required to run the e2b SDK tests");
    assert!(status.success(), "python3 -m venv failed");
    let requirements = Path::new(REQUIREMENTS_DIR).join(format!("requirements-{SDK_VERSION}.txt"));
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(&requirements)
        .status()
        .await
        .unwrap();
    assert!(
        status.success(),
        "pip install -r {} failed",
        requirements.display()
    );
    std::fs::write(venv.join(".burrow-installed"), SDK_VERSION).unwrap();
    python
}

/// Port 443 is host-wide: only one test may serve on it at a time (TestEnv's lock covers burrow
/// runtime tests; this one also covers anything else burrow's tests bind to 443).
fn lock_port_443() -> std::fs::File {
    let lock = std::fs::File::create("/run/lock/burrow-tls-443.lock").unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    lock
}

fn tls_config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        domain: DOMAIN.to_string(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:443".parse().unwrap(),
            cert_and_key: None,
        }),
        ..common::config(data_dir)
    }
}

fn parse_steps(stdout: &str) -> BTreeMap<String, Value> {
    stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn ok(steps: &BTreeMap<String, Value>, step: &str) -> Value {
    let s = steps
        .get(step)
        .unwrap_or_else(|| panic!("step {step} missing: {steps:#?}"));
    assert_eq!(s["ok"], true, "step {step} failed: {s}");
    s["value"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_end_to_end_over_tls() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let _port = lock_port_443();
    let python = sdk_python().await;
    let server = TestServer::start_with(tls_config(env.path())).await;
    let ca = env.path().join("tls/ca.pem");
    assert!(
        ca.exists(),
        "the local CA is exported at <data_dir>/tls/ca.pem"
    );

    // An E2B-format key, issued through the native API.
    let resp = server
        .post("/v1/api-keys")
        .json(&json!({"name": "sdk", "format": "e2b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let issued: Value = resp.json().await.unwrap();
    let key = issued["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("e2b_") && key.len() == 44, "{issued}");

    // The E2B API answers on `api.{domain}` on the plain listener too, with its own auth.
    let e2b_api = |path: &str, key: &str| {
        server
            .http
            .get(server.url(path))
            .header("host", format!("api.{DOMAIN}"))
            .header("x-api-key", key)
    };
    let resp = e2b_api(
        "/v2/sandboxes",
        "e2b_0000000000000000000000000000000000000000",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = e2b_api("/v2/sandboxes", &server.key).send().await.unwrap();
    assert_eq!(resp.status(), 200, "burrow keys work on the E2B API too");

    let out = Command::new(&python)
        .arg(DRIVER)
        .env("E2B_DOMAIN", DOMAIN)
        .env("E2B_API_KEY", &key)
        .env("SSL_CERT_FILE", &ca)
        .env("BURROW_URL", format!("http://{}", server.addr))
        .env("BURROW_KEY", &server.key)
        .env_remove("E2B_API_URL")
        .env_remove("E2B_SANDBOX_URL")
        .env_remove("E2B_DEBUG")
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "driver failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    let steps = parse_steps(&stdout);

    let id = ok(&steps, "create").as_str().unwrap().to_string();
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );

    let run = ok(&steps, "run");
    assert_eq!(run["stdout"], "hi\nbye\n", "{run}");
    assert_eq!(run["stderr"], "oops\n", "{run}");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(
        run["streamed_stdout"], "hi\nbye\n",
        "callbacks see the output: {run}"
    );
    assert_eq!(run["streamed_stderr"], "oops\n");

    let failing = ok(&steps, "run_failing");
    assert_eq!(failing["type"], "CommandExitException", "{failing}");
    assert_eq!(failing["exit_code"], 3);

    let bg = ok(&steps, "background_kill");
    assert_eq!(bg["pid_listed"], true, "{bg}");
    assert_eq!(bg["killed"], true, "{bg}");
    assert_eq!(bg["wait"], "CommandExitException", "{bg}");

    let files = ok(&steps, "files");
    assert_eq!(files["read"], "hello from the SDK");
    assert_eq!(files["names"], json!(["hello.txt"]));
    assert_eq!(files["missing_exists"], false);

    let list = ok(&steps, "list");
    assert_eq!(list["ids"], json!([id]), "{list}");
    assert_eq!(list["other"], 0);

    let timeout = ok(&steps, "set_timeout");
    let before = timeout["before"].as_i64().unwrap();
    let after = timeout["after"].as_i64().unwrap();
    assert!((100..=120).contains(&before), "{timeout}");
    assert!(
        (25..=30).contains(&after),
        "set_timeout may shorten: {timeout}"
    );

    let info = ok(&steps, "get_info");
    assert_eq!(info["sandbox_id"], id.as_str());
    assert_eq!(info["template_id"], "base");
    assert_eq!(info["metadata"], json!({"suite": "e2e"}));
    assert_eq!(info["state"], "running");
    assert_eq!(info["running"], true);

    let metrics = ok(&steps, "metrics");
    assert!(metrics["count"].as_u64().unwrap() >= 1, "{metrics}");
    assert_eq!(metrics["mem_total"], 512 << 20, "{metrics}");

    let pause = ok(&steps, "pause_connect");
    assert_eq!(pause["paused"], true, "{pause}");
    assert_eq!(pause["state_paused"], "paused", "{pause}");
    assert_eq!(pause["native_paused"], "standby", "really frozen: {pause}");
    assert_eq!(pause["native_after"], "running", "{pause}");
    assert_eq!(pause["pause_again"], false, "409 already paused: {pause}");
    assert_eq!(pause["same_id"], true);
    assert_eq!(pause["state_after"], "running", "{pause}");
    assert_eq!(pause["file"], "kept");
    assert_eq!(pause["process_kept"], true, "{pause}");
    assert_eq!(pause["echo"], "awake\n");

    assert_eq!(ok(&steps, "kill"), true);
    assert_eq!(ok(&steps, "kill_again"), false, "a killed sandbox is gone");
    let unknown = &steps["unknown_template"];
    assert_eq!(unknown["ok"], false, "{unknown}");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("no-such-template"),
        "{unknown}"
    );

    let expired = ok(&steps, "timeout_kills");
    let gone = expired["gone_after_s"]
        .as_f64()
        .expect("the timed-out sandbox is killed");
    assert!(gone < 10.0, "{expired}");

    let auto = ok(&steps, "timeout_pauses");
    assert_eq!(auto["state"], "paused", "{auto}");
    assert!(auto["paused_after_s"].as_f64().unwrap() < 10.0, "{auto}");
    assert_eq!(auto["mark"], "before\n", "{auto}");
    assert_eq!(auto["state_after"], "running", "{auto}");
    let left = auto["seconds_left"].as_i64().unwrap();
    assert!(
        (50..=60).contains(&left),
        "a resume sets now + timeout: {auto}"
    );

    // Nothing is left: the killed and the timed-out sandboxes are gone from burrow as well.
    let resp = server.get("/v1/sandboxes").send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["sandboxes"], json!([]), "{body}");
    server.stop().await;
}

/// The E2B API on the plain listener (Host `api.{domain}`), without an SDK: pagination, filters,
/// end times that survive a daemon restart, `timeout 0` = kill now, native sandboxes untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2b_api_pages_filters_and_keeps_end_times_across_restarts() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let config = ServerConfig {
        domain: DOMAIN.to_string(),
        ..common::config(env.path())
    };
    let server = TestServer::start_with(config.clone()).await;
    let e2b = |server: &TestServer, method: reqwest::Method, path: &str| {
        server
            .http
            .request(method, server.url(path))
            .header("host", format!("api.{DOMAIN}"))
            .header("x-api-key", &server.key)
    };

    let mut ids = Vec::new();
    for n in 0..3 {
        let resp = e2b(&server, reqwest::Method::POST, "/v2/sandboxes")
            .json(&json!({"templateID": "base", "timeout": 600, "metadata": {"n": n.to_string()}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["domain"], DOMAIN, "{body}");
        assert!(
            body["envdAccessToken"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        ids.push(body["sandboxID"].as_str().unwrap().to_string());
    }
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({"labels": {"kind": "native"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let native: Value = resp.json().await.unwrap();
    let native_id = native["id"].as_str().unwrap().to_string();

    let resp = e2b(&server, reqwest::Method::POST, "/v2/sandboxes")
        .json(&json!({"templateID": "no-such-template"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Two pages of two, newest first by default.
    let resp = e2b(&server, reqwest::Method::GET, "/v2/sandboxes?limit=2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token = resp.headers()["x-next-token"].to_str().unwrap().to_string();
    let first: Vec<Value> = resp.json().await.unwrap();
    let resp = e2b(
        &server,
        reqwest::Method::GET,
        &format!("/v2/sandboxes?limit=2&nextToken={}", urlencode(&token)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-next-token").is_none(), "last page");
    let second: Vec<Value> = resp.json().await.unwrap();
    let listed: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.push(&native_id);
    expected.reverse();
    assert_eq!(listed, expected, "newest first, each sandbox once");

    let resp = e2b(
        &server,
        reqwest::Method::GET,
        "/v2/sandboxes?metadata=n%3D1",
    )
    .send()
    .await
    .unwrap();
    let filtered: Vec<Value> = resp.json().await.unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["sandboxID"], ids[1].as_str());
    let resp = e2b(
        &server,
        reqwest::Method::GET,
        "/v2/sandboxes?nextToken=garbage",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);

    let end_at = |body: &Value| body["endAt"].as_str().unwrap().to_string();
    let resp = e2b(
        &server,
        reqwest::Method::GET,
        &format!("/sandboxes/{}", ids[0]),
    )
    .send()
    .await
    .unwrap();
    let before: Value = resp.json().await.unwrap();

    // A restart keeps the end times (and the sandboxes).
    server.stop().await;
    let server = TestServer::start_with(config).await;
    let resp = e2b(
        &server,
        reqwest::Method::GET,
        &format!("/sandboxes/{}", ids[0]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let after: Value = resp.json().await.unwrap();
    assert_eq!(end_at(&after), end_at(&before));

    // timeout 0 kills now; the native sandbox has no E2B end time and stays.
    let resp = e2b(
        &server,
        reqwest::Method::POST,
        &format!("/sandboxes/{}/timeout", ids[0]),
    )
    .json(&json!({"timeout": 0}))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = e2b(
        &server,
        reqwest::Method::GET,
        &format!("/sandboxes/{}", ids[0]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = server
        .get(&format!("/v1/sandboxes/{}", ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "killed for real, not just hidden");
    let resp = e2b(
        &server,
        reqwest::Method::GET,
        &format!("/sandboxes/{native_id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let native: Value = resp.json().await.unwrap();
    assert!(end_at(&native).as_str() > "2030", "{native}");

    for id in ids.iter().skip(1).chain([&native_id]) {
        let resp = e2b(
            &server,
            reqwest::Method::DELETE,
            &format!("/sandboxes/{id}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 204);
    }
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Without DNS or TLS: `E2B_API_URL` and `E2B_SANDBOX_URL` both point at the plain listener; the
/// E2B API is found by path, envd traffic by the SDK's `E2b-Sandbox-Id`/`-Port` headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_plain_http_with_api_and_sandbox_urls() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let python = sdk_python().await;
    let server = TestServer::start(env.path()).await;
    let script = "from e2b import Sandbox\n\
                  s = Sandbox.create('base', timeout=60)\n\
                  print(s.commands.run('echo plain-$((6*7))').stdout.strip())\n\
                  s.files.write('/tmp/f.txt', 'data')\n\
                  print(s.files.read('/tmp/f.txt'))\n\
                  print(s.kill())\n";
    let base = format!("http://{}", server.addr);
    let out = Command::new(&python)
        .args(["-c", script])
        .env("E2B_API_URL", &base)
        .env("E2B_SANDBOX_URL", &base)
        .env("E2B_API_KEY", &server.key)
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["plain-42", "data", "True"]
    );
    server.stop().await;
}
