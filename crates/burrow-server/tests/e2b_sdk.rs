//! The official E2B SDKs end to end against a real burrow server: Python `e2b` 2.64.0 (latest),
//! 2.63.0, 2.50.0, 2.31.0 and 2.5.0 (pinned in
//! crates/burrow-e2b/tests/e2b-control/requirements-*.txt) and the JS `e2b` 2.51.0 (pinned in
//! crates/burrow-e2b/tests/e2b-control/js/). One server, HTTPS
//! on 127.0.0.1:443 with burrow's local CA and domain `burrow.localhost` (SDKs always use port 443
//! for sandbox URLs), real sandboxes, real envd through the port proxy. The drivers
//! (tests/e2b/sdk_e2e.{py,mjs}) run one scenario each, concurrently.
//!
//! Needs root, the base template, python3, node/npm and (the first time) PyPI and npm access;
//! the installs are shared with burrow-e2b's tests (`<target>/tmp/e2b-control-venvs/` or
//! `BURROW_E2B_VENVS`, `<target>/tmp/e2b-control-js/` or `BURROW_E2B_JS_DIR`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burrow_server::{ServerConfig, TlsConfig};
use common::{TestEnv, TestServer, install_test_template};
use serde_json::{Value, json};
use tokio::process::Command;

const DOMAIN: &str = "burrow.localhost";
/// Python SDK versions of the matrix: latest, the previous one, the last before
/// `/v2/sandboxes`, the one the OpenAI Agents SDK's E2B extra pins, and the last of the oldest
/// connect generation (`/timeout` + `/resume`).
const PYTHON_SDKS: [&str; 5] = ["2.64.0", "2.63.0", "2.50.0", "2.31.0", "2.5.0"];
const JS_SDK: &str = "2.51.0";
const PY_DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2b/sdk_e2e.py");
const JS_DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2b/sdk_e2e.mjs");
const REQUIREMENTS_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../burrow-e2b/tests/e2b-control"
);

fn venvs_dir() -> PathBuf {
    std::env::var_os("BURROW_E2B_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2b-control-venvs"))
}

/// Holds an exclusive lock on `dir/.install.lock` (other test binaries install there too).
fn install_lock(dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(dir).unwrap();
    let lock = std::fs::File::create(dir.join(".install.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    lock
}

/// The venv's python for SDK `version`, created from the pinned requirements if needed.
async fn sdk_python(version: &str) -> PathBuf {
    let venv = venvs_dir().join(format!("e2b-{version}"));
    let python = venv.join("bin/python");
    if venv.join(".burrow-installed").exists() {
        return python;
    }
    let _lock = install_lock(&venvs_dir());
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
    let requirements = Path::new(REQUIREMENTS_DIR).join(format!("requirements-{version}.txt"));
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
    std::fs::write(venv.join(".burrow-installed"), version).unwrap();
    python
}

/// The pinned JS SDK's ESM entry point, installed with `npm ci` if needed.
async fn sdk_js_module() -> PathBuf {
    let dir = std::env::var_os("BURROW_E2B_JS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2b-control-js"));
    let module = dir.join("node_modules/e2b/dist/index.mjs");
    if dir.join(".burrow-installed").exists() {
        return module;
    }
    let _lock = install_lock(&dir);
    if dir.join(".burrow-installed").exists() {
        return module;
    }
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(
            Path::new(REQUIREMENTS_DIR).join("js").join(file),
            dir.join(file),
        )
        .unwrap();
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .await
        .expect("npm is required to run the e2b JS SDK test");
    assert!(status.success(), "npm ci in {} failed", dir.display());
    std::fs::write(dir.join(".burrow-installed"), "").unwrap();
    module
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

/// One SDK of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    Python(&'static str),
    Js(&'static str),
}

impl Sdk {
    fn version(self) -> &'static str {
        match self {
            Sdk::Python(v) | Sdk::Js(v) => v,
        }
    }

    /// The SDK's exception class for `kind` (the two languages name them differently).
    fn error(self, kind: &str) -> String {
        match self {
            Sdk::Python(_) => format!("{kind}Exception"),
            Sdk::Js(_) => format!("{kind}Error"),
        }
    }

    /// `lifecycle.auto_resume` and `pause()` exist from Python 2.6 on (and in every JS 2.x).
    fn has_auto_resume(self) -> bool {
        self != Sdk::Python("2.5.0")
    }
}

/// Runs `sdk`'s driver against the server and returns its steps.
async fn drive(sdk: Sdk, server: &TestServer, key: &str, ca: &Path) -> BTreeMap<String, Value> {
    let mut command = match sdk {
        Sdk::Python(version) => {
            let mut c = Command::new(sdk_python(version).await);
            c.arg(PY_DRIVER).env("SSL_CERT_FILE", ca);
            c
        }
        Sdk::Js(_) => {
            let module = sdk_js_module().await;
            let mut c = Command::new("node");
            c.arg(JS_DRIVER)
                .env("E2B_JS_MODULE", format!("file://{}", module.display()))
                .env("NODE_EXTRA_CA_CERTS", ca);
            c
        }
    };
    let out = command
        .env("E2B_DOMAIN", DOMAIN)
        .env("E2B_API_KEY", key)
        .env("BURROW_URL", format!("http://{}", server.addr))
        .env("BURROW_KEY", &server.key)
        .env_remove("E2B_API_URL")
        .env_remove("E2B_SANDBOX_URL")
        .env_remove("E2B_DEBUG")
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .unwrap_or_else(|e| panic!("starting the {sdk:?} driver: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{sdk:?} driver failed:\n{stdout}\n{stderr}"
    );
    eprintln!("--- {sdk:?} ---\n{stdout}");
    parse_steps(&stdout)
}

/// Checks every step of the shared scenario; `sdk` names the failing SDK in messages.
fn check_scenario(sdk: Sdk, steps: &BTreeMap<String, Value>) {
    let ok = |step: &str| -> Value {
        let s = steps
            .get(step)
            .unwrap_or_else(|| panic!("{sdk:?}: step {step} missing: {steps:#?}"));
        assert_eq!(s["ok"], true, "{sdk:?}: step {step} failed: {s}");
        s["value"].clone()
    };
    let failed = |step: &str| -> Value {
        let s = steps
            .get(step)
            .unwrap_or_else(|| panic!("{sdk:?}: step {step} missing"));
        assert_eq!(s["ok"], false, "{sdk:?}: step {step} should fail: {s}");
        s.clone()
    };
    assert_eq!(ok("sdk"), sdk.version(), "the pinned SDK ran");

    let id = ok("create").as_str().unwrap().to_string();
    assert!(
        id.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id}"
    );

    let run = ok("run");
    assert_eq!(run["stdout"], "hi\nbye\n", "{sdk:?} {run}");
    assert_eq!(run["stderr"], "oops\n", "{sdk:?} {run}");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(
        run["streamed_stdout"], "hi\nbye\n",
        "{sdk:?}: callbacks see the output: {run}"
    );
    assert_eq!(run["streamed_stderr"], "oops\n");

    let failing = ok("run_failing");
    assert_eq!(failing["type"], sdk.error("CommandExit"), "{failing}");
    assert_eq!(failing["exit_code"], 3);

    let bg = ok("background_kill");
    assert_eq!(bg["pid_listed"], true, "{sdk:?} {bg}");
    assert_eq!(bg["killed"], true, "{sdk:?} {bg}");
    assert_eq!(bg["wait"], sdk.error("CommandExit"), "{sdk:?} {bg}");

    assert_eq!(ok("stdin"), "from stdin\n", "{sdk:?}");
    let timeout = ok("command_timeout");
    assert_eq!(timeout["type"], sdk.error("Timeout"), "{sdk:?} {timeout}");
    assert!(timeout["after_s"].as_f64().unwrap() < 10.0, "{timeout}");

    let files = ok("files");
    assert_eq!(files["read"], "hello from the SDK");
    assert_eq!(files["names"], json!(["hello.txt"]));
    assert_eq!(files["missing_exists"], false);
    let watched = ok("watch");
    assert!(
        watched.as_array().unwrap().contains(&json!("new.txt")),
        "{sdk:?}: watch_dir sees the new file: {watched}"
    );

    let signed = ok("signed_urls");
    assert_eq!(signed["signed"], true, "{sdk:?} {signed}");
    assert_eq!(signed["host"], format!("49983-{id}.{DOMAIN}"), "{signed}");
    assert_eq!(signed["upload"], 200, "{sdk:?} {signed}");
    assert_eq!(signed["download"], 200, "{sdk:?} {signed}");
    assert_eq!(signed["text"], "uploaded by URL", "{signed}");
    assert_eq!(signed["read_back"], "uploaded by URL", "{signed}");
    assert_eq!(signed["tampered"], 401, "{sdk:?} {signed}");
    assert_eq!(signed["unsigned"], 401, "{sdk:?} {signed}");

    let host = ok("get_host");
    assert_eq!(host["host"], format!("8001-{id}.{DOMAIN}"), "{host}");
    assert_eq!(host["status"], 200, "{sdk:?} {host}");
    assert_eq!(host["text"], "hello from the SDK", "{host}");
    assert_eq!(host["closed"], 502, "{sdk:?} {host}");
    assert!(
        host["closed_body"]
            .as_str()
            .unwrap()
            .contains("port is not open"),
        "{host}"
    );

    let list = ok("list");
    assert_eq!(list["ids"], json!([id]), "{sdk:?} {list}");
    assert_eq!(list["other"], 0);

    let timeout = ok("set_timeout");
    let before = timeout["before"].as_i64().unwrap();
    let after = timeout["after"].as_i64().unwrap();
    assert!((30..=120).contains(&before), "{sdk:?} {timeout}");
    assert!(
        (25..=30).contains(&after),
        "{sdk:?}: set_timeout may shorten: {timeout}"
    );

    let info = ok("get_info");
    assert_eq!(info["sandbox_id"], id.as_str());
    assert_eq!(info["template_id"], "base");
    assert_eq!(
        info["metadata"],
        json!({"suite": format!("e2e-{}{}", if matches!(sdk, Sdk::Js(_)) { "js-" } else { "" }, sdk.version())})
    );
    assert_eq!(info["state"], "running");
    assert_eq!(info["running"], true);

    let metrics = ok("metrics");
    assert!(metrics["count"].as_u64().unwrap() >= 1, "{metrics}");
    assert_eq!(metrics["mem_total"], 512 << 20, "{sdk:?} {metrics}");

    let pause = ok("pause_connect");
    // 2.5's `beta_pause` returns nothing; later SDKs return true, then false on the 409.
    let (paused, paused_again) = if sdk.has_auto_resume() {
        (json!(true), json!(false))
    } else {
        (Value::Null, Value::Null)
    };
    assert_eq!(pause["paused"], paused, "{sdk:?} {pause}");
    assert_eq!(pause["state_paused"], "paused", "{sdk:?} {pause}");
    assert_eq!(pause["native_paused"], "standby", "really frozen: {pause}");
    assert_eq!(
        pause["running_while_paused"], false,
        "{sdk:?}: no autoResume: envd traffic gets 502 'was not found': {pause}"
    );
    assert_eq!(
        pause["native_after_traffic"], "standby",
        "{sdk:?}: traffic did not wake it: {pause}"
    );
    assert_eq!(pause["native_after"], "running", "{pause}");
    assert_eq!(
        pause["pause_again"], paused_again,
        "409 already paused: {pause}"
    );
    assert_eq!(pause["same_id"], true);
    assert_eq!(pause["state_after"], "running", "{pause}");
    assert_eq!(pause["file"], "kept");
    assert_eq!(pause["process_kept"], true, "{sdk:?} {pause}");
    assert_eq!(pause["echo"], "awake\n");

    assert_eq!(ok("kill"), true);
    assert_eq!(ok("kill_again"), false, "a killed sandbox is gone");
    let unknown = failed("unknown_template");
    assert!(
        unknown["message"]
            .as_str()
            .unwrap()
            .contains("no-such-template"),
        "{unknown}"
    );
    let alias = failed("code_interpreter_alias");
    assert!(
        alias["message"]
            .as_str()
            .unwrap()
            .contains("template 'code-interpreter' not found"),
        "{sdk:?}: code-interpreter-v1 names burrow's code-interpreter template: {alias}"
    );

    let expired = ok("timeout_kills");
    let gone = expired["gone_after_s"]
        .as_f64()
        .expect("the timed-out sandbox is killed");
    assert!(gone < 10.0, "{sdk:?} {expired}");

    let auto = ok("timeout_pauses");
    assert_eq!(auto["state"], "paused", "{sdk:?} {auto}");
    assert!(auto["paused_after_s"].as_f64().unwrap() < 10.0, "{auto}");
    assert_eq!(auto["mark"], "before\n", "{auto}");
    assert_eq!(auto["state_after"], "running", "{auto}");
    let left = auto["seconds_left"].as_i64().unwrap();
    assert!(
        (50..=60).contains(&left),
        "{sdk:?}: a resume sets now + timeout: {auto}"
    );

    if sdk.has_auto_resume() {
        let resumed = ok("auto_resume");
        assert_eq!(resumed["state"], "paused", "{sdk:?} {resumed}");
        assert_eq!(resumed["native_paused"], "standby", "{resumed}");
        assert_eq!(
            resumed["mark"], "before\n",
            "{sdk:?}: traffic woke it: {resumed}"
        );
        assert_eq!(resumed["state_after"], "running", "{resumed}");
        let left = resumed["seconds_left"].as_i64().unwrap();
        assert!(
            (280..=300).contains(&left),
            "{sdk:?}: an auto-resume grants max(timeout, 5 min): {resumed}"
        );
    } else {
        assert!(!steps.contains_key("auto_resume"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2b_sdks_end_to_end_over_tls() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let _port = lock_port_443();
    // Installs first (a no-op once cached), so the drivers' timings do not include them.
    for version in PYTHON_SDKS {
        sdk_python(version).await;
    }
    sdk_js_module().await;
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

    // Every SDK at once against the one server: the matrix costs one scenario's time.
    let sdks = PYTHON_SDKS
        .map(Sdk::Python)
        .into_iter()
        .chain([Sdk::Js(JS_SDK)]);
    let runs = sdks.map(|sdk| {
        let (server, key, ca) = (&server, &key, &ca);
        async move { (sdk, drive(sdk, server, key, ca).await) }
    });
    for (sdk, steps) in futures::future::join_all(runs).await {
        check_scenario(sdk, &steps);
    }

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

    // An E2B pause without autoResume: proxied traffic gets E2B's 502 "was not found" and does
    // not wake it; only connect does (201 resumed, then 200 already running). `memory: false`
    // is accepted on pause (memory is kept) and refused on a resume (no cold boot in burrow).
    let native_state = |id: String| {
        let request = server.get(&format!("/v1/sandboxes/{id}"));
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["state"].as_str().unwrap().to_string()
        }
    };
    let proxied_health = |id: &str| {
        server
            .http
            .get(server.url("/health"))
            .header("e2b-sandbox-id", id)
            .header("e2b-sandbox-port", "49983")
            .send()
    };
    let e2b_post = |path: String, body: Value| {
        e2b(&server, reqwest::Method::POST, &path)
            .json(&body)
            .send()
    };
    let paused = &ids[1];
    let resp = e2b_post(
        format!("/sandboxes/{paused}/pause"),
        json!({"memory": false}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = proxied_health(paused).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("was not found"), "{body}");
    assert_eq!(native_state(paused.clone()).await, "standby", "not woken");
    let resp = e2b_post(
        format!("/v2/sandboxes/{paused}/connect"),
        json!({"memory": false}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 501, "a cold-boot resume is refused loudly");
    let resp = e2b_post(format!("/v2/sandboxes/{paused}/connect"), json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "resumed");
    let resp = e2b_post(format!("/v2/sandboxes/{paused}/connect"), json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "already running");
    assert_eq!(proxied_health(paused).await.unwrap().status(), 204);

    // burrow's own standby (idle timer or native API) is invisible to E2B: `running`, since
    // traffic wakes it; an E2B pause of it is a real pause (204, not 409), and then it is paused.
    let sleeper = &ids[2];
    let resp = server
        .post(&format!("/v1/sandboxes/{sleeper}/standby"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(native_state(sleeper.clone()).await, "standby");
    let e2b_state = |id: String| {
        let request = e2b(&server, reqwest::Method::GET, &format!("/sandboxes/{id}"));
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["state"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(e2b_state(sleeper.clone()).await, "running");
    let resp = e2b(&server, reqwest::Method::GET, "/v2/sandboxes?state=paused")
        .send()
        .await
        .unwrap();
    let listed: Vec<Value> = resp.json().await.unwrap();
    assert!(listed.is_empty(), "standby is not an E2B pause: {listed:?}");
    let resp = e2b_post(format!("/sandboxes/{sleeper}/pause"), json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(e2b_state(sleeper.clone()).await, "paused");
    let resp = e2b_post(format!("/v2/sandboxes/{sleeper}/connect"), json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // A native sandbox asleep by burrow's standby wakes on proxied traffic, as before.
    let resp = server
        .post(&format!("/v1/sandboxes/{native_id}/standby"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(proxied_health(&native_id).await.unwrap().status(), 204);
    assert_eq!(native_state(native_id.clone()).await, "running");

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
        let status = resp.status();
        assert_eq!(status, 204, "{id}: {}", resp.text().await.unwrap());
    }
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Runs a Python `script` with the SDK against the plain listener at `base` (`E2B_API_URL` and
/// `E2B_SANDBOX_URL`), as `key`; asserts it succeeded and returns its stdout.
async fn run_python(python: &Path, script: &str, base: &str, key: &str) -> String {
    let out = Command::new(python)
        .args(["-c", script])
        .env("E2B_API_URL", base)
        .env("E2B_SANDBOX_URL", base)
        .env("E2B_API_KEY", key)
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Without DNS or TLS: `E2B_API_URL` and `E2B_SANDBOX_URL` both point at the plain listener; the
/// E2B API is found by path, envd traffic by the SDK's `E2b-Sandbox-Id`/`-Port` headers, signed
/// file URLs (which carry no sandbox id in this mode) by their signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_plain_http_with_api_and_sandbox_urls() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let python = sdk_python(PYTHON_SDKS[0]).await;
    let server = TestServer::start(env.path()).await;
    // Signed file URLs name no sandbox in this mode (the SDK builds them on E2B_SANDBOX_URL):
    // the server finds the sandbox whose envd token made the signature.
    let script = r#"
import urllib.request, urllib.error
from e2b import Sandbox
other = Sandbox.create('base', timeout=60)
s = Sandbox.create('base', timeout=60)
print(s.commands.run('echo plain-$((6*7))').stdout.strip())
s.files.write('/tmp/f.txt', 'data')
print(s.files.read('/tmp/f.txt'))
def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=10).read().decode()
    except urllib.error.HTTPError as e:
        return str(e.code)
url = s.download_url('/tmp/f.txt')
print('signed', fetch(url))
print('expiring', fetch(s.download_url('/tmp/f.txt', use_signature_expiration=60)))
print('tampered', fetch(url.replace('f.txt', 'g.txt')))
print('expired', fetch(s.download_url('/tmp/f.txt', use_signature_expiration=-10)))
other.kill()
print(s.kill())
"#;
    let base = format!("http://{}", server.addr);
    let stdout = run_python(&python, script, &base, &server.key).await;
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "plain-42",
            "data",
            "signed data",
            "expiring data",
            "tampered 401",
            "expired 401",
            "True"
        ]
    );
    server.stop().await;
}

/// `network={"allow_public_traffic": False}` with the real SDK: the sandbox has a traffic access
/// token, and its ports answer (E2B's header routing, on the plain listener) only to requests
/// that carry it in `e2b-traffic-access-token`; a public sandbox has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_private_sandbox_urls_need_the_traffic_token() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let python = sdk_python(PYTHON_SDKS[0]).await;
    let server = TestServer::start(env.path()).await;
    let script = r#"
import os, time, urllib.request, urllib.error
from e2b import Sandbox
public = Sandbox.create('base', timeout=60)
print('public token', public.traffic_access_token)
public.kill()
s = Sandbox.create('base', timeout=60, network={'allow_public_traffic': False})
token = s.traffic_access_token
print('private token', bool(token) and len(token) >= 32)
s.commands.run('python3 -m http.server 8080 --directory /tmp', background=True)
def get(headers):
    request = urllib.request.Request(os.environ['E2B_API_URL'] + '/', headers={
        'E2b-Sandbox-Id': s.sandbox_id, 'E2b-Sandbox-Port': '8080', **headers})
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
for _ in range(100):
    if get({'e2b-traffic-access-token': token}) == 200:
        break
    time.sleep(0.1)
print('with token', get({'e2b-traffic-access-token': token}))
print('without token', get({}))
print('wrong token', get({'e2b-traffic-access-token': 'x' + token}))
print(s.kill())
"#;
    let base = format!("http://{}", server.addr);
    let stdout = run_python(&python, script, &base, &server.key).await;
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "public token None",
            "private token True",
            "with token 200",
            "without token 401",
            "wrong token 401",
            "True"
        ]
    );
    server.stop().await;
}

/// `Template.exists` (`GET /templates/aliases/{alias}`) with the real SDK, on the plain listener:
/// True for burrow's `base` and for `code-interpreter-v1` (burrow's `code-interpreter`), False for
/// an unknown name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_template_exists() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    // `code-interpreter`: the base template under that name (only its existence matters here).
    let templates = env.path().join("templates");
    std::os::unix::fs::symlink(
        std::fs::canonicalize(templates.join("base")).unwrap(),
        templates.join("code-interpreter"),
    )
    .unwrap();
    let python = sdk_python(PYTHON_SDKS[0]).await;
    let server = TestServer::start(env.path()).await;
    let script = "from e2b import Template\n\
                  for name in ['base', 'no-such-template', 'code-interpreter-v1']:\n\
                  \x20   print(name, Template.exists(name))\n";
    let base = format!("http://{}", server.addr);
    let stdout = run_python(&python, script, &base, &server.key).await;
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "base True",
            "no-such-template False",
            "code-interpreter-v1 True"
        ]
    );
    server.stop().await;
}

/// A workspace quota reaches the real SDK as its rate-limit error (E2B's 429), with burrow's
/// message naming the limit; another workspace's key finds nothing of this one's sandboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_surfaces_a_workspace_quota_as_its_rate_limit_error() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let python = sdk_python(PYTHON_SDKS[0]).await;
    let server = TestServer::start(env.path()).await;
    let key = server
        .workspace_key(
            json!({"name": "capped", "quotas": {"max_sandboxes": 0}}),
            json!({"name": "sdk", "workspace": "capped", "format": "e2b"}),
        )
        .await;
    let key = key.as_str();
    let script = "from e2b import Sandbox, RateLimitException\n\
                  try:\n\
                  \x20   Sandbox.create('base', timeout=60)\n\
                  \x20   print('created')\n\
                  except RateLimitException as e:\n\
                  \x20   print('rate-limited', 'max_sandboxes' in str(e))\n\
                  print(len(Sandbox.list().next_items()))\n";
    let base = format!("http://{}", server.addr);
    let stdout = run_python(&python, script, &base, key).await;
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["rate-limited True", "0"]
    );
    server.stop().await;
}

/// Creates workspace `name` with the operator key and returns an E2B-format key of it.
async fn workspace_e2b_key(server: &TestServer, name: &str) -> String {
    server
        .workspace_key(
            json!({"name": name}),
            json!({"name": "sdk", "workspace": name, "format": "e2b"}),
        )
        .await
}

/// `Template.build` of the real SDK against burrow: COPY (uploaded through the URL burrow hands
/// out, skipped the second time: same files, same destination), RUN as the template's user, ENV,
/// USER, a start and ready command, `from_base_image`, a failing step; the
/// result is an ordinary burrow template of the building workspace, which another workspace
/// cannot see. Bad input is refused with a message the SDK raises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_template_build() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let python = sdk_python(PYTHON_SDKS[0]).await;
    let server = TestServer::start(env.path()).await;
    let key_a = workspace_e2b_key(&server, "team-a").await;
    let key_b = workspace_e2b_key(&server, "team-b").await;
    let base = format!("http://{}", server.addr);
    let script = r#"
import os, tempfile
from e2b import Template, Sandbox
ctx = tempfile.mkdtemp()
with open(os.path.join(ctx, 'hello.txt'), 'w') as f:
    f.write('hello from the context\n')
logs = []
t = (Template(file_context_path=ctx).from_template('base')
     .copy('hello.txt', '/home/user/hello.txt')
     .run_cmd('echo built > /home/user/built.txt')
     .set_envs({'GREETING': 'hi'}))
info = Template.build(t, 'mytpl', on_build_logs=lambda e: logs.append(e.message))
print('build', info.template_id, info.build_id)
print('logged', any('echo built' in m for m in logs))
print('exists', Template.exists('mytpl'))
s = Sandbox.create('mytpl', timeout=60)
print(s.files.read('/home/user/hello.txt').strip())
print(s.files.read('/home/user/built.txt').strip())
print(' '.join(s.commands.run('echo $GREETING; stat -c %U /home/user/hello.txt /home/user/built.txt').stdout.split()))
s.kill()
logs.clear()
t2 = (Template(file_context_path=ctx).from_base_image()
      .copy('hello.txt', '/home/user/hello.txt').set_user('root').run_cmd('whoami > /tmp/who')
      .set_start_cmd('echo started > /tmp/started; sleep 1000', 'test -f /tmp/started'))
Template.build(t2, 'mytpl2', on_build_logs=lambda e: logs.append(e.message))
print('cached', any("Skipping upload of 'hello.txt'" in m for m in logs))
s = Sandbox.create('mytpl2', timeout=60)
print(s.files.read('/tmp/who').strip(), s.files.read('/home/user/hello.txt').strip(), s.files.read('/tmp/started').strip())
s.kill()
for name, tpl in [
    ('Bad_Name', Template().from_template('base').run_cmd('true')),
    ('other', Template().from_image('ubuntu:22.04').run_cmd('true')),
    ('mytpl', Template().from_template('base').run_cmd('true')),
    ('failing', Template().from_template('base').run_cmd('exit 3')),
]:
    try:
        Template.build(tpl, name)
        print('built', name)
    except Exception as e:
        print('refused', name, type(e).__name__, str(e).replace('\n', ' '))
"#;
    let started = std::time::Instant::now();
    let stdout = run_python(&python, script, &base, &key_a).await;
    eprintln!("{stdout}\nSDK script took {:?}", started.elapsed());
    let lines: Vec<&str> = stdout.lines().collect();
    let build_id = lines[0].strip_prefix("build mytpl ").unwrap();
    assert_eq!(
        lines[1..9],
        [
            "logged True",
            "exists True",
            "hello from the context",
            "built",
            "hi user user",
            "cached True",
            "root hello from the context started",
            lines[8],
        ]
    );
    assert!(
        lines[8].starts_with("refused Bad_Name BuildException") && lines[8].contains("a-z"),
        "{}",
        lines[8]
    );
    assert!(
        lines[9].starts_with("refused other BuildException")
            && lines[9].contains("e2bdev/base")
            && lines[9].contains("fromTemplate"),
        "{}",
        lines[9]
    );
    assert!(
        lines[10].starts_with("refused mytpl") && lines[10].contains("already exists"),
        "{}",
        lines[10]
    );
    // A build that fails: status error, its reason raised by the SDK; the name is free again.
    assert!(
        lines[11].starts_with("refused failing BuildException") && lines[11].contains("code 3"),
        "{}",
        lines[11]
    );

    // An ordinary burrow template of team-a.
    let listed: Value = server
        .get("/v1/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mytpl = listed["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "mytpl")
        .expect("mytpl is listed");
    assert_eq!(mytpl["source"], "build:base");
    assert!(mytpl["workspace_id"].as_str().is_some());

    // Another workspace sees neither the template nor its build.
    let script_b = r#"
from e2b import Template, Sandbox
print(Template.exists('mytpl'))
try:
    Sandbox.create('mytpl', timeout=30)
    print('created')
except Exception as e:
    print('not found' in str(e).lower())
"#;
    let stdout = run_python(&python, script_b, &base, &key_b).await;
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["False", "True"]);
    let http = reqwest::Client::new();
    let status = |key: &str| {
        http.get(format!(
            "{base}/templates/mytpl/builds/{build_id}/status?logsOffset=0"
        ))
        .header("X-API-KEY", key)
        .send()
    };
    let resp = status(&key_b).await.unwrap();
    assert_eq!(resp.status(), 404);
    let own: Value = status(&key_a).await.unwrap().json().await.unwrap();
    assert_eq!(own["status"], "ready");
    assert!(own["logEntries"].as_array().unwrap().len() <= 100);
    // An upload URL is its own authorization: an unknown token gets nothing stored.
    let resp = http
        .put(format!("{base}/e2b/template-uploads/{}", "0".repeat(64)))
        .body("not a tar")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(format!("{base}/templates/mytpl/files/NOTAHASH"))
        .header("X-API-KEY", &key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.stop().await;
}
