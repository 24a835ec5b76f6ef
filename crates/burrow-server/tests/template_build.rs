//! `POST /v1/templates` building `base` for real (from the cached debootstrap tarball), with its
//! NDJSON progress stream. Needs root and the debootstrap tarball that building the test data
//! dir's base left (`scripts/test.sh`); it is copied, so a failed build cannot harm it.

mod common;

use common::TestServer;
use serde_json::{Value, json};

/// The test data dir's debootstrap cache (`BURROW_TEST_DATA_DIR`, as `scripts/test.sh` sets).
fn shared_cache() -> std::path::PathBuf {
    std::env::var_os("BURROW_TEST_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/burrow-test-data".into())
        .join("cache")
}

#[tokio::test]
#[ignore = "slow (about 80 s): builds a whole template; run with --ignored"]
async fn build_base_streams_progress_then_done() {
    let cache = shared_cache();
    let tarballs: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("debootstrap-"))
                .collect()
        })
        .unwrap_or_default();
    if tarballs.is_empty() || !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED: needs root and a debootstrap tarball in {}",
            cache.display()
        );
        return;
    }
    let dir = common::TestEnv::new();
    // Reuse the tarball instead of downloading (the store's cache is `<data_dir>/cache`): a
    // copy, never a link, so this build cannot write into the shared file.
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    for tarball in tarballs {
        std::fs::copy(
            tarball.path(),
            dir.path().join("cache").join(tarball.file_name()),
        )
        .unwrap();
    }
    let server = TestServer::start(dir.path()).await;
    let resp = server
        .post("/v1/templates")
        .json(&json!({"name": "base", "from": {"type": "debootstrap"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "done", "{text}");
    assert_eq!(last["template"]["name"], "base");
    assert!(events.iter().any(|e| e["type"] == "progress"), "{text}");
    let list: Value = server
        .get("/v1/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["templates"][0]["name"], "base");
    server.stop().await;
}
