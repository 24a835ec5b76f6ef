//! `POST /v1/templates` building `base` for real (from the cached debootstrap tarball), with its
//! NDJSON progress stream. Needs root and the cache that building /var/lib/burrow's base left.

mod common;

use common::TestServer;
use serde_json::{Value, json};

const CACHE: &str = "/var/lib/burrow/cache";

#[tokio::test]
#[ignore = "slow (about 80 s): builds a whole template; run with --ignored"]
async fn build_base_streams_progress_then_done() {
    let cached = std::fs::read_dir(CACHE)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("debootstrap-"))
        })
        .unwrap_or(false);
    if !cached || !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: needs root and a debootstrap tarball in {CACHE}");
        return;
    }
    let dir = common::TestEnv::new();
    // Reuse the tarball instead of downloading (the store's cache is `<data_dir>/cache`).
    std::os::unix::fs::symlink(CACHE, dir.path().join("cache")).unwrap();
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
