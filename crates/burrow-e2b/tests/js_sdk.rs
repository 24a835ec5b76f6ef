//! The official `e2b` JS SDK (pinned in tests/e2b-control/js/package.json + package-lock.json)
//! against the E2B router on a real HTTP server, with the in-memory test double of
//! burrow-server's sandbox service as backend (see common/). No envd runs behind it.
//!
//! The SDK is installed once with `npm ci` into `<target>/tmp/e2b-control-js/` (registry access
//! needed the first time); `BURROW_E2B_JS_DIR` overrides the directory.

mod common;

use std::path::{Path, PathBuf};

use common::sdk::{
    assert_contains_in_order, assert_every_request_authenticated, create_body, failed, normalized,
    ok, parse_steps, steps_id,
};
use common::{DOMAIN, MemoryBackend, TestServer, new_api_key};
use serde_json::json;
use tokio::process::Command;

const JS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2b-control/js");

/// The installed SDK's ESM entry point, installing it first if needed.
async fn sdk_module() -> PathBuf {
    let dir = std::env::var_os("BURROW_E2B_JS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2b-control-js"));
    let module = dir.join("node_modules/e2b/dist/index.mjs");
    let marker = dir.join(".burrow-installed");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(Path::new(JS_DIR).join(file), dir.join(file)).unwrap();
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .await
            .expect("npm is required to run the e2b JS SDK test");
        assert!(status.success(), "npm ci in {} failed", dir.display());
        std::fs::write(&marker, "").unwrap();
    }
    module
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_2_51_control_plane() {
    let module = sdk_module().await;
    let key = new_api_key();
    let server = TestServer::start(MemoryBackend::new(&[(&key, "team")])).await;
    let output = Command::new("node")
        .arg(Path::new(JS_DIR).join("control_plane.mjs"))
        .env("E2B_JS_MODULE", format!("file://{}", module.display()))
        .env("E2B_API_URL", format!("http://{}", server.addr))
        .env("E2B_DOMAIN", DOMAIN)
        .env("E2B_API_KEY", &key)
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_SANDBOX_URL")
        .output()
        .await
        .expect("node is required to run the e2b JS SDK test");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "driver failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("--- e2b JS ---\n{stdout}");
    let steps = parse_steps(&stdout);
    let wire = server.take_wire();
    for r in &wire {
        eprintln!("{} {} {}", r.method, r.target, r.body);
    }
    assert_eq!(ok(&steps, "sdk"), "2.51.0");
    let id = steps_id(&steps);

    assert_eq!(ok(&steps, "ids")["domain"], DOMAIN);
    let info = ok(&steps, "get_info");
    assert_eq!(info["state"], "running");
    assert_eq!(info["metadata"], json!({"a": "b"}));
    let left = info["seconds_left"].as_i64().unwrap();
    assert!((110..=120).contains(&left), "{left}");
    let left = ok(&steps, "get_info_after_set_timeout")["seconds_left"]
        .as_i64()
        .unwrap();
    assert!((590..=600).contains(&left), "{left}");
    assert!(ok(&steps, "get_metrics").as_i64().unwrap() >= 1);
    assert_eq!(ok(&steps, "list"), json!([id]));
    assert_eq!(ok(&steps, "pause"), true);
    assert_eq!(
        ok(&steps, "pause_again"),
        false,
        "409 already paused → false"
    );
    assert_eq!(ok(&steps, "get_info_paused"), "paused");
    let running = json!({"sandbox_id": id, "state": "running"});
    assert_eq!(ok(&steps, "connect_resumes"), running);
    assert_eq!(ok(&steps, "connect_running"), running);
    for step in [
        "needs_envd_is_running",
        "needs_envd_commands_run",
        "needs_envd_files_read",
    ] {
        failed(&steps, step);
    }
    assert_eq!(ok(&steps, "kill"), true);
    assert_eq!(ok(&steps, "kill_again"), false);
    let gone = failed(&steps, "get_info_killed");
    assert!(
        gone["message"].as_str().unwrap().contains("not found"),
        "{gone}"
    );
    let unknown = failed(&steps, "create_unknown_template");
    assert!(
        unknown["message"].as_str().unwrap().contains("nope"),
        "{unknown}"
    );
    assert_eq!(
        failed(&steps, "list_bad_key")["error"],
        "AuthenticationError"
    );

    assert_eq!(
        create_body(&wire, "/v2/sandboxes"),
        json!({"templateID":"base","timeout":120,"autoPause":true,"autoResume":{"enabled":true},
               "metadata":{"a":"b"},"envVars":{"X":"1"}})
    );
    assert_contains_in_order(
        &normalized(&wire, &id),
        &[
            "POST /v2/sandboxes",
            r#"POST /sandboxes/{id}/timeout {"timeout":600}"#,
            "POST /sandboxes/{id}/pause",
            r#"POST /v2/sandboxes/{id}/connect {"timeout":300}"#,
            "DELETE /sandboxes/{id}",
        ],
    );
    assert_every_request_authenticated(&wire, "e2b_");
}
