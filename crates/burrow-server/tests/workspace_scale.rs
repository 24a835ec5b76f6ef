//! Authorisation must not show in listings: 10,000 sandboxes of one workspace among 50,000 rows
//! (rows, not real sandboxes) are listed through the real API, and another workspace's key
//! lists none of them. Prints the timings; `docs/performance.md` has the release numbers.

mod common;

use std::time::{Duration, Instant};

use burrow_store::Store;
use common::TestServer;
use serde_json::{Value, json};

const ROWS: u32 = 50_000;
const MINE: usize = 10_000;

#[tokio::test]
async fn listing_one_workspace_among_many_rows_is_fast_and_walled() {
    let dir = common::TestEnv::without_runtime_lock();
    {
        let store = Store::open(&dir.path().join("burrow.db")).await.unwrap();
        store
            .execute_raw(&format!(
                "INSERT INTO workspaces (id, name, tier, created_at) VALUES \
                   ('ws_big', 'big', 'unlimited', '2026-01-01T00:00:00.000Z'), \
                   ('ws_other', 'other', 'unlimited', '2026-01-01T00:00:00.000Z'); \
                 WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO sandboxes (id, template, state, cpus, memory_mb, disk_mb, env_json, \
                   labels_json, created_at, updated_at, workspace_id) \
                 SELECT printf('i%019d', i), 'base', 'stopped', 1, 512, 4096, '{{}}', \
                   '{{\"team\":\"x\"}}', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', \
                   CASE WHEN i % 5 = 0 THEN 'ws_big' ELSE 'ws_default' END FROM n;",
                last = ROWS - 1
            ))
            .await
            .unwrap();
    }
    let server = TestServer::start(dir.path()).await;
    let key_for = |workspace: &'static str| {
        let server = &server;
        async move {
            let created: Value = server
                .post("/v1/api-keys")
                .json(&json!({"name": "k", "workspace": workspace, "role": "viewer"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            created["key"].as_str().unwrap().to_string()
        }
    };
    let big = key_for("big").await;
    let other = key_for("other").await;
    let list = |key: String| {
        let server = &server;
        async move {
            let started = Instant::now();
            let resp = server
                .http
                .get(server.url("/v1/sandboxes"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            // The answer is complete when its last byte is in; parsing it is the client's time.
            let bytes = resp.bytes().await.unwrap();
            let took = started.elapsed();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            (took, body["sandboxes"].as_array().unwrap().len())
        }
    };
    let mut times = Vec::new();
    for _ in 0..7 {
        let (took, n) = list(big.clone()).await;
        assert_eq!(n, MINE);
        times.push(took);
    }
    times.sort();
    let p50 = times[times.len() / 2];
    println!(
        "list {MINE} of {ROWS} rows (one workspace): p50 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3
    );
    let (_, n) = list(other).await;
    assert_eq!(n, 0, "another workspace's key lists none of them");
    // Debug builds are several times slower than release; the bound is for regressions (an
    // authorisation check per row, a query per row), the target is in docs/performance.md.
    let bound = if cfg!(debug_assertions) {
        Duration::from_millis(1500)
    } else {
        // The target is 50 ms on a quiet machine (docs/performance.md); the test machine
        // runs other tests beside this one.
        Duration::from_millis(150)
    };
    assert!(p50 <= bound, "p50 {p50:?} above {bound:?}");
    server.stop().await;
}
