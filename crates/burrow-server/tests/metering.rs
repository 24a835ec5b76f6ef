//! Metering splits time exactly at power transitions: with a sampling interval far longer than
//! the test, a sandbox awake ~2 s, in standby ~3 s, awake ~1 s shows those seconds in its
//! tombstone's lifetime usage (a per-sample split would credit one state with everything).
//! Needs root and the base template (skipped otherwise).

mod common;

use std::time::Duration;

use common::{TestServer, install_test_template};
use serde_json::{Value, json};

async fn post_ok(server: &TestServer, path: &str) {
    let resp = server.post(path).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_seconds_are_split_at_transitions() {
    let env = common::TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let mut config = common::config(env.path());
    config.default_idle_timeout = Duration::ZERO;
    // No periodic sample during the test: only transitions and the delete split the time.
    config.meter_interval = Duration::from_secs(3600);
    let server = TestServer::start_with(config).await;

    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let sb: Value = resp.json().await.unwrap();
    let id = sb["id"].as_str().unwrap().to_string();

    tokio::time::sleep(Duration::from_secs(2)).await;
    post_ok(&server, &format!("/v1/sandboxes/{id}/standby")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    post_ok(&server, &format!("/v1/sandboxes/{id}/resume")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resp = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let list: Value = server
        .get("/v1/tombstones")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tombstone = list["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .cloned()
        .expect("tombstone");
    let usage = &tombstone["usage"];
    let secs = |k: &str| usage[k].as_f64().unwrap();
    // Freeze/thaw take milliseconds; the margins cover slow CI, not a 5 s sampling error.
    assert!(
        (2.8..3.6).contains(&secs("standby_seconds")),
        "standby ~3 s: {usage}"
    );
    assert!(
        (2.8..3.8).contains(&secs("running_seconds")),
        "running ~2 s + ~1 s: {usage}"
    );
    assert!(secs("standby_storage_gb_seconds") > 0.0, "{usage}");
    server.stop().await;
}
