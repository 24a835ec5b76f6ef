//! Services bound to localhost inside a sandbox are reachable through the port proxy: the agent
//! forwards them from eth0 (the same port) while they listen, and stops when they go away.
//! Needs root and the base template (skipped otherwise).

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, install_test_template};
use serde_json::{Value, json};

async fn exec_ok(server: &TestServer, id: &str, command: &str) {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": command, "user": "user"}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let text = resp.text().await.unwrap();
    let exit = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "exit")
        .expect("exit event");
    assert_eq!(exit["exit_code"], 0, "{command}: {text}");
}

/// Status of `GET /` on `port` of the sandbox through the proxy, with the body.
async fn proxied_get(server: &TestServer, id: &str, port: u16) -> (u16, String) {
    let resp = server
        .http
        .get(server.url("/"))
        .header("Host", format!("{port}-{id}.burrow.test"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Polls until the proxied status is `want` (the agent looks for listeners once a second).
async fn wait_for_status(server: &TestServer, id: &str, port: u16, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = proxied_get(server, id, port).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "port {port}: still {status}, want {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localhost_services_are_reachable_through_the_proxy() {
    let env = common::TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    let server = TestServer::start(env.path()).await;
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let sb: Value = resp.json().await.unwrap();
    let id = sb["id"].as_str().unwrap().to_string();

    // Nothing listens on 8000 yet: the proxy cannot connect.
    assert_eq!(proxied_get(&server, &id, 8000).await.0, 502);
    exec_ok(
        &server,
        &id,
        "cd /tmp && echo forwarded > hello.txt; setsid python3 -m http.server --bind 127.0.0.1 8000 \
         >/dev/null 2>&1 </dev/null & echo $! > /tmp/http.pid",
    )
    .await;
    let listing = wait_for_status(&server, &id, 8000, 200).await;
    assert!(listing.contains("hello.txt"), "{listing}");

    // The service stops: so does its forwarder.
    exec_ok(&server, &id, "kill $(cat /tmp/http.pid)").await;
    wait_for_status(&server, &id, 8000, 502).await;

    let resp = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    server.stop().await;
}
