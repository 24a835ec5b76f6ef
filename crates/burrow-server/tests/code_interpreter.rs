//! Template start commands (Burrowfile START / READY) and the `code-interpreter` template.
//!
//! - `start_commands_gate_create`: small templates on `base` with START + READY PORT / READY CMD:
//!   create answers only once the start command is ready; a start command that dies fails the
//!   create with `start_failed`, its output in the message, and leaves no sandbox. Seconds.
//! - `code_interpreter_with_the_e2b_sdk`: builds templates/code-interpreter with the `burrow` CLI
//!   (pip installs from PyPI inside the build sandbox: 35-75 s), then drives the official
//!   `e2b-code-interpreter` Python SDK (pinned in tests/code_interpreter/requirements.txt, cached
//!   venv) over E2B's API and TLS on 127.0.0.1:443: `run_code` state, streams, errors, env vars,
//!   contexts, timeout, a dying kernel, and state kept across pause (warm standby) and across
//!   burrow's deep standby (CRIU), each followed by an SDK connect. Runs only with
//!   BURROW_TEST_CODE_INTERPRETER=1 (it prints SKIPPED otherwise).
//!
//! Both need root and the base template (see tests/common).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use burrow_server::{ServerConfig, TlsConfig};
use common::{TestEnv, TestServer, expect_error, install_test_template};
use serde_json::{Value, json};
use tokio::process::Command;

const DOMAIN: &str = "burrow.localhost";
const BURROWFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../templates/code-interpreter/Burrowfile"
);
const DRIVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/code_interpreter/driver.py"
);
const SDK_REQUIREMENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/code_interpreter/requirements.txt"
);

/// Builds `name` from `base` plus `steps`; returns the final NDJSON event.
async fn build(server: &TestServer, name: &str, steps: Value) -> Value {
    let resp = server
        .post("/v1/templates")
        .json(
            &json!({"name": name, "from": {"type": "template", "parent": "base", "steps": steps}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    serde_json::from_str(text.lines().last().expect("an event")).unwrap()
}

/// Runs `command` (bash) in the sandbox; returns (stdout, exit code).
async fn exec(server: &TestServer, id: &str, command: &str) -> (String, i64) {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({ "command": command }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let mut out = Vec::new();
    let mut code = None;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        match event["type"].as_str().unwrap() {
            "stdout" => out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(event["data"].as_str().unwrap())
                    .unwrap(),
            ),
            "exit" => code = event["exit_code"].as_i64(),
            _ => {}
        }
    }
    (
        String::from_utf8(out).unwrap(),
        code.expect("an exit event"),
    )
}

async fn sandbox_ids(server: &TestServer) -> Vec<String> {
    let body: Value = server
        .get("/v1/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_commands_gate_create() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let server = TestServer::start(env.path()).await;

    // READY PORT: the server binds only after 1 s, so a create that did not wait would race it.
    let done = build(
        &server,
        "port-ready",
        json!([
            {"type": "workdir", "path": "/tmp"},
            {"type": "start", "command": "sleep 1; exec python3 -m http.server 8000"},
            {"type": "ready_port", "port": 8000},
        ]),
    )
    .await;
    assert_eq!(done["type"], "done", "{done}");
    let began = Instant::now();
    let created: Value = server
        .post("/v1/sandboxes")
        .json(&json!({"template": "port-ready"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "create waited for READY"
    );
    let id = created["id"].as_str().expect("created").to_string();
    let (out, code) = exec(
        &server,
        &id,
        "curl -sf -o /dev/null -w '%{http_code}' localhost:8000/ && ps -o user=,args= -C python3",
    )
    .await;
    assert_eq!(code, 0, "the server answers at once: {out}");
    assert!(out.starts_with("200"), "{out}");
    assert!(
        out.contains("user ") && out.contains("http.server"),
        "runs as the template's user: {out}"
    );
    let (cwd, _) = exec(
        &server,
        &id,
        "readlink /proc/$(pgrep -f http.server | head -1)/cwd",
    )
    .await;
    assert_eq!(cwd.trim(), "/tmp", "in the WORKDIR of the START step");

    // READY CMD, and a child template inherits the start command.
    let done = build(
        &server,
        "cmd-ready",
        json!([
            {"type": "start", "command": "sleep 1; echo up > /tmp/ready; exec sleep infinity"},
            {"type": "ready_command", "command": "test -s /tmp/ready"},
        ]),
    )
    .await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(
        done["template"]["name"], "cmd-ready",
        "the build answered: {done}"
    );
    let created: Value = server
        .post("/v1/sandboxes")
        .json(&json!({"template": "cmd-ready"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cmd_id = created["id"].as_str().expect("created").to_string();
    let (out, code) = exec(&server, &cmd_id, "cat /tmp/ready").await;
    assert_eq!((out.as_str(), code), ("up\n", 0));

    // A start command that dies before it is ready: a clear error and no sandbox left.
    let done = build(
        &server,
        "dies",
        json!([
            {"type": "start", "command": "echo 'cannot open the model file' >&2; exit 3"},
            {"type": "ready_port", "port": 8000},
        ]),
    )
    .await;
    assert_eq!(done["type"], "done", "{done}");
    let before = sandbox_ids(&server).await;
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({"template": "dies"}))
        .send()
        .await
        .unwrap();
    let message = expect_error(resp, 502, "start_failed").await;
    assert!(
        message.contains("exited before it was ready")
            && message.contains("exit status 3")
            && message.contains("cannot open the model file"),
        "{message}"
    );
    assert_eq!(
        sandbox_ids(&server).await,
        before,
        "the failed sandbox is gone"
    );

    // READY without a START is refused before any work.
    let done = build(
        &server,
        "no-start",
        json!([{"type": "ready_port", "port": 80}]),
    )
    .await;
    assert_eq!(done["type"], "error", "{done}");
    assert!(
        done["message"].as_str().unwrap().contains("START"),
        "{done}"
    );

    for id in [id, cmd_id] {
        let resp = server
            .delete(&format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    server.stop().await;
}

/// `target/debug/<name>` of this workspace (or `BURROW_TEST_<NAME>`).
fn target_bin(name: &str) -> PathBuf {
    let var = format!("BURROW_TEST_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug").join(name)
}

/// The cached venv with the pinned `e2b-code-interpreter` (shared with the e2b SDK venvs' dir).
async fn sdk_python() -> PathBuf {
    let dir = std::env::var_os("BURROW_E2B_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2b-control-venvs"));
    let venv = dir.join("e2b-code-interpreter");
    let python = venv.join("bin/python");
    let requirements = std::fs::read_to_string(SDK_REQUIREMENTS).unwrap();
    let marker = venv.join(".burrow-installed");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".install.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .await
        .expect("python3 is required");
    assert!(status.success(), "python3 -m venv failed");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r", SDK_REQUIREMENTS])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "pip install -r {SDK_REQUIREMENTS} failed");
    std::fs::write(&marker, requirements).unwrap();
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_interpreter_with_the_e2b_sdk() {
    if std::env::var("BURROW_TEST_CODE_INTERPRETER").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: set BURROW_TEST_CODE_INTERPRETER=1 to build the code-interpreter template (pip from PyPI, minutes) and drive e2b-code-interpreter"
        );
        return;
    }
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let python = sdk_python().await;
    let _port = {
        let lock = std::fs::File::create("/run/lock/burrow-tls-443.lock").unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
        lock
    };
    let server = TestServer::start_with(ServerConfig {
        domain: DOMAIN.to_string(),
        tls: Some(TlsConfig {
            listen: "127.0.0.1:443".parse().unwrap(),
            cert_and_key: None,
        }),
        ..common::config(env.path())
    })
    .await;

    // The template, built from its Burrowfile by the CLI like an operator would.
    let began = Instant::now();
    let out = Command::new(target_bin("burrow"))
        .args(["template", "build", "code-interpreter", "-f", BURROWFILE])
        .env("BURROW_URL", format!("http://{}", server.addr))
        .env("BURROW_API_KEY", &server.key)
        .output()
        .await
        .expect("the burrow CLI is built (cargo build -p burrow-cli)");
    assert!(
        out.status.success(),
        "template build failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = server
        .get("/v1/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let built = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "code-interpreter")
        .expect("the template exists");
    eprintln!(
        "code-interpreter template built in {:.0} s, {} MB of its own layers",
        began.elapsed().as_secs_f64(),
        built["size_bytes"].as_u64().unwrap() >> 20
    );

    let issued: Value = server
        .post("/v1/api-keys")
        .json(&json!({"name": "sdk", "format": "e2b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = issued["key"].as_str().unwrap();
    let out = Command::new(&python)
        .arg(DRIVER)
        .env("E2B_DOMAIN", DOMAIN)
        .env("E2B_API_KEY", key)
        .env("SSL_CERT_FILE", env.path().join("tls/ca.pem"))
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
    assert!(
        out.status.success(),
        "driver failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let steps: std::collections::BTreeMap<String, Value> = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let ok = |step: &str| -> Value {
        let s = steps
            .get(step)
            .unwrap_or_else(|| panic!("step {step} missing: {steps:#?}"));
        assert_eq!(s["ok"], true, "step {step} failed: {s}");
        s["value"].clone()
    };

    ok("create");
    let state = ok("state");
    assert_eq!(state["text"], "42", "{state}");
    assert_eq!(state["first_results"], 0, "an assignment has no result");
    assert_eq!(state["count"], 2, "{state}");
    let streams = ok("streams");
    assert_eq!(streams["stdout"], json!(["to stdout\n"]), "{streams}");
    assert_eq!(streams["stderr"], json!(["to stderr\n"]), "{streams}");
    assert_eq!(streams["logs_stdout"], json!(["to stdout\n"]), "{streams}");
    let error = ok("error");
    assert_eq!(error["name"], "ZeroDivisionError", "{error}");
    assert_eq!(error["value"], "division by zero", "{error}");
    assert_eq!(error["traceback_mentions"], true, "{error}");
    assert_eq!(error["callback"], 1, "{error}");
    assert_eq!(ok("envs"), "hello", "a string result is its text (E2B)");
    assert_eq!(
        ok("create_envs"),
        "yes",
        "the kernel sees the sandbox's env"
    );
    assert_eq!(ok("envs_restored"), "unset", "env_vars last one execution");
    assert_eq!(
        ok("chart")["png"],
        true,
        "matplotlib figures come back as PNG"
    );
    assert_eq!(ok("pandas"), "3");
    let contexts = ok("contexts");
    assert_eq!(contexts["cwd"], "/tmp", "{contexts}");
    assert_eq!(
        contexts["isolated"], "NameError",
        "contexts are separate kernels"
    );
    assert_eq!(contexts["listed"], true);
    assert_eq!(contexts["restart_clears"], "NameError", "{contexts}");
    assert_eq!(contexts["removed"], true);
    // A cwd the kernel's user cannot enter, or that does not exist: a 400 saying so, not a 500.
    let refused = &contexts["refused"];
    assert!(
        refused["/root"]
            .as_str()
            .is_some_and(|m| m.contains("not accessible")),
        "{refused}"
    );
    assert!(
        refused["/no/such/dir"]
            .as_str()
            .is_some_and(|m| m.contains("not a directory")),
        "{refused}"
    );
    let timeout = ok("timeout");
    assert_eq!(timeout["outcome"], "TimeoutException", "{timeout}");
    assert_eq!(
        timeout["x"], "41",
        "the timed-out cell was interrupted: {timeout}"
    );
    assert!(timeout["next_s"].as_f64().unwrap() < 10.0, "{timeout}");
    let pause = ok("pause_connect");
    assert_eq!(pause["native_paused"], "standby", "really paused: {pause}");
    assert_eq!(pause["x"], "41", "kernel state survives standby: {pause}");
    assert_eq!(pause["native_after"], "running", "{pause}");
    let deep = ok("deep_standby");
    assert_eq!(deep["tier"], "deep", "CRIU checkpoint: {deep}");
    assert_eq!(
        deep["x"], "41",
        "kernel state survives a CRIU checkpoint/restore: {deep}"
    );
    let death = ok("kernel_death");
    assert_eq!(death["error"], "KernelDied", "{death}");
    assert_eq!(death["after"], "fresh kernel", "restarted: {death}");
    ok("kill");
    server.stop().await;
}
