//! The official `e2b` Python SDK (pinned versions, tests/e2b-control/requirements-*.txt) against
//! the E2B router on a real HTTP server. The backend is the in-memory test double of
//! burrow-server's sandbox service (see common/); there is no envd behind it, so the calls that
//! need a live sandbox are checked to fail and listed in docs/e2b-compatibility.md.
//!
//! The SDKs are installed once per version into `<target>/tmp/e2b-control-venvs/` with pip
//! (registry access needed the first time). `BURROW_E2B_VENVS` overrides the directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::sdk::{
    assert_contains_in_order, assert_every_request_authenticated, create_body, failed, normalized,
    ok, parse_steps, steps_id,
};
use common::{DOMAIN, MemoryBackend, TestServer, WireRequest, new_api_key};
use serde_json::{Value, json};
use tokio::process::Command;

const TEST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2b-control");

fn venvs_dir() -> PathBuf {
    std::env::var_os("BURROW_E2B_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2b-control-venvs"))
}

/// The venv's python for `version`, creating the venv from the pinned requirements if needed.
async fn sdk_python(version: &str) -> PathBuf {
    // Tests of one binary run in parallel and two of them use 2.63.0: install one at a time.
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _installing = INSTALL.lock().await;
    let venv = venvs_dir().join(format!("e2b-{version}"));
    let python = venv.join("bin/python");
    let marker = venv.join(".burrow-installed");
    if marker.exists() {
        return python;
    }
    let requirements = Path::new(TEST_DIR).join(format!("requirements-{version}.txt"));
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .await
        .expect("python3 is required to run the e2b SDK tests");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
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
    std::fs::write(&marker, version).unwrap();
    python
}

/// Runs control_plane.py with `version` against a fresh server; returns step → result and the
/// requests the server received.
async fn drive_sdk(version: &str) -> (BTreeMap<String, Value>, Vec<WireRequest>, String) {
    let python = sdk_python(version).await;
    let key = new_api_key();
    let server = TestServer::start(MemoryBackend::new(&[(&key, "team")])).await;
    let output = Command::new(python)
        .arg(Path::new(TEST_DIR).join("control_plane.py"))
        .env("E2B_API_URL", format!("http://{}", server.addr))
        .env("E2B_DOMAIN", DOMAIN)
        .env("E2B_API_KEY", &key)
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_SANDBOX_URL")
        .env_remove("E2B_ACCESS_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "driver failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("--- e2b {version} ---\n{stdout}");
    let steps = parse_steps(&stdout);
    let wire = server.take_wire();
    for r in &wire {
        eprintln!("{} {} {}", r.method, r.target, r.body);
    }
    let id = steps_id(&steps);
    (steps, wire, id)
}

/// Checks the SDK-side outcome of every step, common to all versions.
fn check_common_outcomes(steps: &BTreeMap<String, Value>, id: &str) {
    assert_eq!(ok(steps, "ids")["domain"], DOMAIN);
    let info = ok(steps, "get_info");
    assert_eq!(info["state"], "running");
    assert_eq!(info["template_id"], "base");
    assert_eq!(info["metadata"], json!({"a": "b"}));
    let left = info["seconds_left"].as_i64().unwrap();
    assert!((110..=120).contains(&left), "{left}");
    ok(steps, "set_timeout");
    let left = ok(steps, "get_info_after_set_timeout")["seconds_left"]
        .as_i64()
        .unwrap();
    assert!((590..=600).contains(&left), "{left}");
    assert!(ok(steps, "get_metrics").as_i64().unwrap() >= 1);
    assert_eq!(ok(steps, "list"), json!([id]));
    ok(steps, "pause");
    ok(steps, "pause_again");
    assert_eq!(ok(steps, "get_info_paused"), "paused");
    assert_eq!(
        ok(steps, "connect_resumes"),
        json!({"sandbox_id": id, "state": "running"})
    );
    assert_eq!(
        ok(steps, "connect_running"),
        json!({"sandbox_id": id, "state": "running"})
    );
    assert_eq!(ok(steps, "kill"), true);
    assert_eq!(ok(steps, "kill_again"), false);
    let gone = failed(steps, "get_info_killed");
    assert!(
        gone["message"].as_str().unwrap().contains("not found"),
        "{gone}"
    );
    let unknown = failed(steps, "create_unknown_template");
    assert!(
        unknown["message"].as_str().unwrap().contains("nope"),
        "{unknown}"
    );
    assert_eq!(
        failed(steps, "list_bad_key")["error"],
        "AuthenticationException"
    );
    // No envd behind the test server: these need a live sandbox.
    for step in [
        "needs_envd_is_running",
        "needs_envd_commands_run",
        "needs_envd_files_read",
    ] {
        failed(steps, step);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_63_control_plane() {
    let (steps, wire, id) = drive_sdk("2.63.0").await;
    assert_eq!(ok(&steps, "sdk"), "2.63.0");
    check_common_outcomes(&steps, &id);
    // Golden wire requests, as captured from E2B in research e2b.md §1.8.
    assert_eq!(
        create_body(&wire, "/v2/sandboxes"),
        json!({"templateID":"base","timeout":120,"autoPause":true,"autoResume":{"enabled":true},
               "metadata":{"a":"b"},"envVars":{"X":"1"}})
    );
    assert_contains_in_order(
        &normalized(&wire, &id),
        &[
            "POST /v2/sandboxes",
            "GET /sandboxes/{id}",
            r#"POST /sandboxes/{id}/timeout {"timeout":600}"#,
            "GET /sandboxes/{id}/metrics",
            "GET /v2/sandboxes?metadata=a%3Db&state=running%2Cpaused&limit=10",
            "POST /sandboxes/{id}/pause {}",
            "POST /sandboxes/{id}/pause {}",
            r#"POST /v2/sandboxes/{id}/connect {"timeout":300}"#,
            r#"POST /v2/sandboxes/{id}/connect {"timeout":300}"#,
            "DELETE /sandboxes/{id}",
            "DELETE /sandboxes/{id}",
        ],
    );
    assert_every_request_authenticated(&wire, "e2b_");
    // network={"allow_public_traffic": True} is what burrow provides: created.
    assert_eq!(ok(&steps, "create_public_network"), true);
    assert!(
        wire.iter().any(|r| r.target == "/v2/sandboxes"
            && r.body.contains(r#""network":{"allowPublicTraffic":true}"#)),
        "the SDK sends network.allowPublicTraffic"
    );
    // Network policies, snapshots: a clear "not supported", not "not found".
    for step in ["create_deny_out", "create_snapshot"] {
        let failure = failed(&steps, step);
        assert!(
            failure["message"]
                .as_str()
                .unwrap()
                .contains("not supported by burrow"),
            "{step}: {failure}"
        );
    }
    assert_eq!(ok(&steps, "template_exists_base"), true);
    assert_eq!(ok(&steps, "template_exists_nope"), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_50_control_plane() {
    let (steps, wire, id) = drive_sdk("2.50.0").await;
    assert_eq!(ok(&steps, "sdk"), "2.50.0");
    check_common_outcomes(&steps, &id);
    let body = create_body(&wire, "/sandboxes");
    assert_eq!(body["templateID"], "base");
    assert_eq!(body["timeout"], 120);
    assert_eq!(body["autoPause"], true);
    assert_contains_in_order(
        &normalized(&wire, &id),
        &[
            "POST /sandboxes",
            r#"POST /sandboxes/{id}/timeout {"timeout":600}"#,
            "GET /v2/sandboxes?metadata=a%3Db&state=running%2Cpaused&limit=10",
            "POST /sandboxes/{id}/pause",
            r#"POST /sandboxes/{id}/connect {"timeout":300}"#,
            "DELETE /sandboxes/{id}",
        ],
    );
    assert_every_request_authenticated(&wire, "e2b_");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_5_control_plane() {
    let (steps, wire, id) = drive_sdk("2.5.0").await;
    assert_eq!(ok(&steps, "sdk"), "2.5.0");
    check_common_outcomes(&steps, &id);
    let body = create_body(&wire, "/sandboxes");
    assert_eq!(body["templateID"], "base");
    assert_eq!(body["secure"], true);
    // Old connect: set_timeout first; on a paused sandbox that 404s and the SDK resumes.
    assert_contains_in_order(
        &normalized(&wire, &id),
        &[
            "POST /sandboxes",
            "POST /sandboxes/{id}/pause",
            r#"POST /sandboxes/{id}/timeout {"timeout":300}"#,
            r#"POST /sandboxes/{id}/resume {"timeout":300}"#,
            "GET /sandboxes/{id}",
            r#"POST /sandboxes/{id}/timeout {"timeout":300}"#,
            "DELETE /sandboxes/{id}",
        ],
    );
    assert_every_request_authenticated(&wire, "e2b_");
}

/// The 2.63 SDK reaches envd over TLS with burrow's wildcard certificate, trusting the local CA
/// through `SSL_CERT_FILE` (its reqwest/rustls transport reads it via the platform verifier).
/// `E2B_SANDBOX_URL` points envd traffic at a stub `/health` on a random port; routing headers
/// carry the sandbox id. Without the CA the same call must fail (the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_2_63_trusts_the_local_ca_for_envd_over_tls() {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use burrow_e2b::TlsListener;
    use burrow_e2b::tls::{self, LocalCa};

    let python = sdk_python("2.63.0").await;
    let key = new_api_key();
    let api = TestServer::start(MemoryBackend::new(&[(&key, "team")])).await;

    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("tls")).unwrap();
    let config = tls::server_config(ca.issue_wildcard(DOMAIN).unwrap()).unwrap();
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = seen.clone();
    let envd = axum::Router::new().route(
        "/health",
        axum::routing::get(move |headers: HeaderMap| {
            log.lock().unwrap().push(headers);
            async { StatusCode::NO_CONTENT }
        }),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TlsListener::new(tcp, config).unwrap();
    let port = axum::serve::Listener::local_addr(&listener).unwrap().port();
    tokio::spawn(async move { axum::serve(listener, envd).await.unwrap() });

    let script = "from e2b import Sandbox\n\
                  s = Sandbox.create('base')\n\
                  print(s.sandbox_id)\n\
                  print(s.is_running(request_timeout=5))\n";
    let run = |trust_ca: bool| {
        let mut cmd = Command::new(&python);
        cmd.args(["-c", script])
            .env("E2B_API_URL", format!("http://{}", api.addr))
            .env("E2B_DOMAIN", DOMAIN)
            .env("E2B_API_KEY", &key)
            .env(
                "E2B_SANDBOX_URL",
                format!("https://sandbox.{DOMAIN}:{port}"),
            )
            .env_remove("E2B_DEBUG")
            .env_remove("SSL_CERT_DIR");
        if trust_ca {
            cmd.env("SSL_CERT_FILE", ca.cert_path());
        } else {
            cmd.env_remove("SSL_CERT_FILE");
        }
        cmd.output()
    };

    let out = run(true).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.get(1), Some(&"True"), "{stdout}");
    let headers = seen
        .lock()
        .unwrap()
        .pop()
        .expect("envd stub saw the health check");
    assert_eq!(headers["e2b-sandbox-id"], lines[0]);
    assert_eq!(headers["e2b-sandbox-port"], "49983");
    assert!(headers.contains_key("x-access-token"));

    let out = run(false).await.unwrap();
    assert!(
        !out.status.success(),
        "an untrusted CA must make the TLS handshake fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
