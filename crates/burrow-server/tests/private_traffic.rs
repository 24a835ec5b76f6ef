//! Private sandbox ports through the real daemon, real sandboxes and the real proxy: a sandbox
//! created with `public_traffic: false` (E2B: `allowPublicTraffic: false`) answers on
//! `{port}-{id}.{domain}` and through E2B's header routing only to requests carrying its traffic
//! access token; without it (or with another sandbox's) the proxy answers 401 and does not wake
//! a sleeping sandbox; the token holds across warm and deep standby and a daemon restart; the
//! agent's port keeps its own token; another workspace's key cannot read the token. Needs root
//! and the base template (skipped otherwise; the deep standby part needs CRIU).

mod common;

use std::time::Duration;

use common::deep::{Api, WAKE_TIMEOUT, criu_available, start_counter};
use common::{TestServer, install_test_template};
use serde_json::{Value, json};

const HEADER: &str = "e2b-traffic-access-token";

/// `GET /` of port 8080 through the proxy, by host name, with `token` if given.
async fn get(api: &Api, id: &str, token: Option<&str>) -> (u16, String) {
    let mut request = api
        .http
        .get(format!("{}/", api.base))
        .header("Host", format!("8080-{id}.burrow.test"))
        .timeout(WAKE_TIMEOUT);
    if let Some(token) = token {
        request = request.header(HEADER, token);
    }
    let resp = request.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn asleep(sb: &Value) -> bool {
    sb["state"] == "standby" && sb["power"]["awake"] == false
}

async fn refused_without_waking(api: &Api, id: &str, token: &str) {
    let (status, body) = get(api, id, None).await;
    assert_eq!(status, 401, "no token: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], 401, "{body}");
    assert_eq!(body["sandboxId"], id, "{body}");
    assert!(body["message"].as_str().unwrap().contains(HEADER), "{body}");
    let (status, body) = get(api, id, Some(&format!("{token}x"))).await;
    assert_eq!(status, 401, "a wrong token: {body}");
    assert!(
        asleep(&api.sandbox(id).await),
        "a refused request woke the sandbox"
    );
}

#[tokio::test]
async fn private_ports_need_the_traffic_token_across_standby_and_restarts() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let api = Api::of(&server);

    let private = api
        .create(json!({"public_traffic": false, "idle_timeout": 0}))
        .await;
    let id = private["id"].as_str().unwrap().to_string();
    let token = private["traffic_access_token"]
        .as_str()
        .expect("a private sandbox has a traffic token")
        .to_string();
    assert!(token.len() >= 32, "{token}");
    assert_eq!(
        api.sandbox(&id).await["traffic_access_token"],
        token.as_str(),
        "get shows the token"
    );
    let listed: Value = api
        .request(reqwest::Method::GET, "/v1/sandboxes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = listed["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        entry["traffic_access_token"],
        token.as_str(),
        "the list shows it too"
    );
    let public = api.create(json!({"idle_timeout": 0})).await;
    let public_id = public["id"].as_str().unwrap().to_string();
    assert!(public.get("traffic_access_token").is_none(), "{public}");

    start_counter(&api, &private).await;
    start_counter(&api, &public).await;

    // Awake: the token opens the port, nothing else does; public sandboxes need none.
    let (status, body) = get(&api, &id, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(&api, &id, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&api, &public_id, None).await;
    assert_eq!(status, 200, "{body}");
    // A token of another sandbox is no token for this one.
    let other = api.create(json!({"public_traffic": false})).await;
    let other_token = other["traffic_access_token"].as_str().unwrap();
    assert_ne!(other_token, token);
    let (status, _) = get(&api, &id, Some(other_token)).await;
    assert_eq!(status, 401);
    api.delete(other["id"].as_str().unwrap()).await;
    // E2B's header routing is held to the same rule.
    let by_headers = |token: Option<&str>| {
        let mut request = api
            .http
            .get(format!("{}/", api.base))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", "8080");
        if let Some(token) = token {
            request = request.header(HEADER, token);
        }
        request.timeout(WAKE_TIMEOUT).send()
    };
    assert_eq!(by_headers(None).await.unwrap().status(), 401);
    assert_eq!(by_headers(Some(&token)).await.unwrap().status(), 200);
    // The agent's port has its own token (X-Access-Token), not the traffic token.
    let health = api
        .http
        .get(format!("{}/health", api.base))
        .header("Host", format!("49983-{id}.burrow.test"))
        .timeout(WAKE_TIMEOUT)
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success(), "{}", health.status());

    // Warm standby: refused requests do not wake it; the token does.
    assert!(asleep(&api.standby(&id, false).await));
    refused_without_waking(&api, &id, &token).await;
    let (status, body) = get(&api, &id, Some(&token)).await;
    assert_eq!(status, 200, "{body}");

    // Deep standby (CRIU): the same.
    if criu_available() {
        assert!(asleep(&api.standby(&id, true).await));
        refused_without_waking(&api, &id, &token).await;
        let (status, body) = get(&api, &id, Some(&token)).await;
        assert_eq!(status, 200, "after deep standby: {body}");
    }

    // Another workspace's key cannot read the token (the sandbox does not exist for it).
    let key = server
        .workspace_key(
            json!({"name": "other"}),
            json!({"name": "other", "workspace": "other", "role": "admin"}),
        )
        .await;
    let foreign = api
        .http
        .get(format!("{}/v1/sandboxes/{id}", api.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    assert!(!foreign.text().await.unwrap().contains(&token));

    // A daemon restart keeps the token (it is in the store, not only in memory).
    server.stop().await;
    let server = TestServer::start(dir.path()).await;
    let api = Api::of(&server);
    let mut ready = false;
    for _ in 0..50 {
        if get(&api, &id, Some(&token)).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the private port does not answer after a restart");
    assert_eq!(get(&api, &id, None).await.0, 401);
    assert_eq!(get(&api, &public_id, None).await.0, 200);

    api.delete(&id).await;
    api.delete(&public_id).await;
    // Deleted: "not found" as for any other id, token or not.
    let (status, body) = get(&api, &id, Some(&token)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("was not found"), "{body}");
    server.stop().await;
}
