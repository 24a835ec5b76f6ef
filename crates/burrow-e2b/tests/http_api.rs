//! The E2B router over real HTTP (a real axum server on 127.0.0.1:0, reqwest as the client).
//! The backend is the in-memory test double of burrow-server's sandbox service (see common/).

mod common;

use chrono::{DateTime, Utc};
use common::{DOMAIN, MemoryBackend, TestServer, UNAVAILABLE_TEMPLATE, new_api_key};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Client {
    server: TestServer,
    http: reqwest::Client,
    key: String,
    other_key: String,
}

impl Client {
    async fn start() -> Self {
        let key = new_api_key();
        let other_key = new_api_key();
        let backend = MemoryBackend::new(&[(&key, "team-a"), (&other_key, "team-b")]);
        Self {
            server: TestServer::start(backend).await,
            http: reqwest::Client::new(),
            key,
            other_key,
        }
    }

    async fn call_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, self.server.url(path));
        if let Some(key) = key {
            req = req.header("X-API-KEY", key);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, headers, json)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let (status, _, json) = self.call_as(Some(&self.key), method, path, body).await;
        (status, json)
    }

    async fn create(&self, body: Value) -> Value {
        let (status, json) = self
            .call(Method::POST, "/v2/sandboxes", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
        json
    }

    async fn info(&self, id: &str) -> Value {
        let (status, json) = self
            .call(Method::GET, &format!("/sandboxes/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        body["code"],
        json!(expected.as_u16()),
        "code must equal the status: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn lifetime_secs(info: &Value) -> i64 {
    (time(&info["endAt"]) - time(&info["startedAt"])).num_seconds()
}

#[tokio::test]
async fn create_v2_returns_the_e2b_sandbox_shape() {
    let c = Client::start().await;
    let sbx = c
        .create(json!({"templateID": "base", "metadata": {"a": "b"}, "envVars": {"X": "1"}}))
        .await;
    let id = sbx["sandboxID"].as_str().unwrap();
    assert!(id.starts_with('i') && id.len() == 20, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(sbx["templateID"], "base");
    assert_eq!(sbx["clientID"], "burrow");
    assert_eq!(sbx["envdVersion"], burrow_e2b::DEFAULT_ENVD_VERSION);
    assert_eq!(sbx["domain"], DOMAIN);
    assert!(
        sbx["envdAccessToken"]
            .as_str()
            .is_some_and(|t| t.len() == 32)
    );
    assert!(sbx.as_object().unwrap().contains_key("trafficAccessToken"));

    let info = c.info(id).await;
    assert_eq!(info["state"], "running");
    assert_eq!(info["metadata"], json!({"a": "b"}));
    assert_eq!(
        info["lifecycle"],
        json!({"autoResume": false, "onTimeout": "kill"})
    );
    assert_eq!(info["envdAccessToken"], sbx["envdAccessToken"]);
    for field in [
        "cpuCount",
        "memoryMB",
        "diskSizeMB",
        "envdVersion",
        "clientID",
    ] {
        assert!(!info[field].is_null(), "missing {field}: {info}");
    }
    assert!(
        (299..=300).contains(&lifetime_secs(&info)),
        "v2 default timeout is 300 s"
    );
}

#[tokio::test]
async fn create_v1_defaults_to_15_seconds_and_accepts_secure() {
    let c = Client::start().await;
    let (status, sbx) = c
        .call(
            Method::POST,
            "/sandboxes",
            Some(r#"{"templateID":"base","secure":true,"allow_internet_access":true,"mcp":null}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sbx}");
    let info = c.info(sbx["sandboxID"].as_str().unwrap()).await;
    assert!((14..=15).contains(&lifetime_secs(&info)), "{info}");
    assert_eq!(info["allowInternetAccess"], true);
}

#[tokio::test]
async fn auto_pause_and_resume_are_reported_in_lifecycle() {
    let c = Client::start().await;
    let sbx = c
        .create(json!({"templateID": "base", "timeout": 120, "autoPause": true, "autoResume": {"enabled": true}}))
        .await;
    let info = c.info(sbx["sandboxID"].as_str().unwrap()).await;
    assert_eq!(
        info["lifecycle"],
        json!({"autoResume": true, "onTimeout": "pause"})
    );
    assert_eq!(info["pauseMode"], "full");
    assert!((119..=120).contains(&lifetime_secs(&info)));
}

#[tokio::test]
async fn unknown_template_is_404_and_bad_input_is_400() {
    let c = Client::start().await;
    let (status, body) = c
        .call(
            Method::POST,
            "/v2/sandboxes",
            Some(r#"{"templateID":"nope"}"#),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().unwrap().contains("nope"));

    for bad in [
        "{not json",
        "",
        r#"{"timeout": 10}"#,
        r#"{"templateID": 5}"#,
        r#"{"templateID":"base","timeout":"soon"}"#,
        r#"{"templateID":"base","autoResume":{"enabled":true}}"#,
    ] {
        let (status, body) = c.call(Method::POST, "/v2/sandboxes", Some(bad)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
    assert!(c.server.backend.peek("none").is_none());
}

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let c = Client::start().await;
    for key in [None, Some("e2b_0000"), Some("")] {
        let (status, _, body) = c.call_as(key, Method::GET, "/v2/sandboxes", None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn sandboxes_are_isolated_between_principals() {
    let c = Client::start().await;
    let id = c.create(json!({"templateID": "base"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let other = Some(c.other_key.as_str());
    let (status, _, body) = c
        .call_as(other, Method::GET, &format!("/sandboxes/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, _, body) = c
        .call_as(other, Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (_, _, list) = c.call_as(other, Method::GET, "/v2/sandboxes", None).await;
    assert_eq!(list, json!([]));
    c.info(&id).await;
}

#[tokio::test]
async fn sandbox_ids_are_validated_and_legacy_suffix_is_stripped() {
    let c = Client::start().await;
    let id = c.create(json!({"templateID": "base"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let info = c.info(&format!("{id}-6532622b")).await;
    assert_eq!(info["sandboxID"], json!(id));
    for bad in ["IABC", "a%2Fb", "abc%00", "i%20x", "i.x"] {
        let (status, body) = c
            .call(Method::GET, &format!("/sandboxes/{bad}"), None)
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST);
    }
    let (status, body) = c.call(Method::GET, "/sandboxes/iunknown", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_filters_by_state_and_metadata_and_paginates() {
    let c = Client::start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let sbx = c
            .create(json!({"templateID": "base", "metadata": {"n": i.to_string(), "group": "x"}}))
            .await;
        ids.push(sbx["sandboxID"].as_str().unwrap().to_string());
    }
    let (status, _) = c
        .call(
            Method::POST,
            &format!("/sandboxes/{}/pause", ids[0]),
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let ids_of = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sandboxID"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let (_, all) = c.call(Method::GET, "/v2/sandboxes", None).await;
    assert_eq!(
        ids_of(&all).len(),
        3,
        "v2 lists running and paused by default"
    );
    assert!(
        all[0].get("envdAccessToken").is_none(),
        "lists carry no secrets"
    );

    let (_, paused) = c
        .call(Method::GET, "/v2/sandboxes?state=paused", None)
        .await;
    assert_eq!(ids_of(&paused), vec![ids[0].clone()]);
    assert_eq!(paused[0]["state"], "paused");

    let (_, both) = c
        .call(
            Method::GET,
            "/v2/sandboxes?state=running%2Cpaused&metadata=n%3D2%26group%3Dx",
            None,
        )
        .await;
    assert_eq!(ids_of(&both), vec![ids[2].clone()]);

    let (_, v1) = c.call(Method::GET, "/sandboxes", None).await;
    assert_eq!(ids_of(&v1).len(), 2, "v1 lists running only: {v1}");

    // Two pages of two, chained through x-next-token.
    let key = c.key.clone();
    let (_, headers, page1) = c
        .call_as(Some(&key), Method::GET, "/v2/sandboxes?limit=2", None)
        .await;
    let token = headers["x-next-token"].to_str().unwrap().to_string();
    let (_, headers, page2) = c
        .call_as(
            Some(&key),
            Method::GET,
            &format!("/v2/sandboxes?limit=2&nextToken={token}"),
            None,
        )
        .await;
    assert!(
        headers.get("x-next-token").is_none(),
        "last page has no token"
    );
    let mut seen = ids_of(&page1);
    seen.extend(ids_of(&page2));
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);

    let (status, body) = c
        .call(Method::GET, "/v2/sandboxes?state=asleep", None)
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn set_timeout_replaces_the_end_time_and_zero_fires_the_action() {
    let c = Client::start().await;
    let id = c
        .create(json!({"templateID": "base", "timeout": 600}))
        .await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/sandboxes/{id}/timeout");
    let (status, _) = c.call(Method::POST, &path, Some(r#"{"timeout":30}"#)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let end = time(&c.info(&id).await["endAt"]);
    let left = (end - Utc::now()).num_seconds();
    assert!((28..=30).contains(&left), "timeout may shorten: {left}");

    let (status, body) = c.call(Method::POST, &path, Some("{}")).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);

    let (status, _) = c.call(Method::POST, &path, Some(r#"{"timeout":0}"#)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c.call(Method::GET, &format!("/sandboxes/{id}"), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);

    // With autoPause, firing the timeout pauses instead; a paused sandbox has no timeout to set.
    let id = c
        .create(json!({"templateID": "base", "autoPause": true}))
        .await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/sandboxes/{id}/timeout");
    let (status, _) = c.call(Method::POST, &path, Some(r#"{"timeout":0}"#)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(c.info(&id).await["state"], "paused");
    let (status, body) = c.call(Method::POST, &path, Some(r#"{"timeout":10}"#)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pause_then_connect_resumes_with_201_and_running_connect_only_extends() {
    let c = Client::start().await;
    let id = c
        .create(json!({"templateID": "base", "timeout": 600}))
        .await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();

    // Running: 200, end time not shortened by a smaller timeout; body optional.
    let before = time(&c.info(&id).await["endAt"]);
    let (status, sbx) = c
        .call(
            Method::POST,
            &format!("/v2/sandboxes/{id}/connect"),
            Some(r#"{"timeout":10}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sbx}");
    assert_eq!(sbx["sandboxID"], json!(id));
    assert!(sbx["envdAccessToken"].is_string());
    assert_eq!(time(&c.info(&id).await["endAt"]), before);
    let (status, _) = c
        .call(Method::POST, &format!("/v2/sandboxes/{id}/connect"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Pause: 204, then 409.
    let pause = format!("/sandboxes/{id}/pause");
    let (status, _) = c.call(Method::POST, &pause, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c.call(Method::POST, &pause, Some("{}")).await;
    assert_error(status, &body, StatusCode::CONFLICT);
    assert_eq!(c.info(&id).await["state"], "paused");

    // v1 connect needs a timeout; v2 connect resumes with 201.
    let (status, body) = c
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/connect"),
            Some("{}"),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, body) = c
        .call(
            Method::POST,
            &format!("/v2/sandboxes/{id}/connect"),
            Some(r#"{"timeout":0}"#),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
    let (status, sbx) = c
        .call(
            Method::POST,
            &format!("/v2/sandboxes/{id}/connect"),
            Some(r#"{"timeout":60}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sbx}");
    let info = c.info(&id).await;
    assert_eq!(info["state"], "running");
    let left = (time(&info["endAt"]) - Utc::now()).num_seconds();
    assert!(
        (58..=60).contains(&left),
        "resume sets end = now + timeout: {left}"
    );

    // Old-SDK resume: 409 while running, 201 after a pause.
    let resume = format!("/sandboxes/{id}/resume");
    let (status, body) = c
        .call(Method::POST, &resume, Some(r#"{"timeout":60}"#))
        .await;
    assert_error(status, &body, StatusCode::CONFLICT);
    c.call(Method::POST, &pause, None).await;
    let (status, sbx) = c
        .call(Method::POST, &resume, Some(r#"{"timeout":60}"#))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sbx}");
    let (status, sbx) = c
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/connect"),
            Some(r#"{"timeout":60}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sbx}");
}

#[tokio::test]
async fn kill_is_204_then_404() {
    let c = Client::start().await;
    let id = c.create(json!({"templateID": "base"})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = c
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c
        .call(Method::DELETE, &format!("/sandboxes/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    assert!(c.server.backend.peek(&id).is_none());
}

#[tokio::test]
async fn metrics_and_refreshes() {
    let c = Client::start().await;
    let id = c.create(json!({"templateID": "base", "timeout": 20})).await["sandboxID"]
        .as_str()
        .unwrap()
        .to_string();
    let now = Utc::now().timestamp();
    let (status, metrics) = c
        .call(
            Method::GET,
            &format!(
                "/sandboxes/{id}/metrics?start={}&end={}",
                now - 10,
                now + 10
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    let m = &metrics[0];
    for field in [
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    ] {
        assert!(!m[field].is_null(), "missing {field}: {m}");
    }
    let (_, empty) = c
        .call(
            Method::GET,
            &format!("/sandboxes/{id}/metrics?end={}", now - 100),
            None,
        )
        .await;
    assert_eq!(empty, json!([]));
    let (status, body) = c
        .call(
            Method::GET,
            &format!("/sandboxes/{id}/metrics?start=yesterday"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);

    let (status, _) = c
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/refreshes"),
            Some(r#"{"duration":600}"#),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left = (time(&c.info(&id).await["endAt"]) - Utc::now()).num_seconds();
    assert!((598..=600).contains(&left), "{left}");
    let (status, body) = c
        .call(
            Method::POST,
            &format!("/sandboxes/{id}/refreshes"),
            Some(r#"{"duration":3601}"#),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_sandbox() {
    let c = Client::start().await;
    let send = |key: &'static str| {
        c.http
            .post(c.server.url("/v2/sandboxes"))
            .header("X-API-KEY", &c.key)
            .header("Idempotency-Key", key)
            .body(r#"{"templateID":"base"}"#)
            .send()
    };
    let first: Value = send("retry-1").await.unwrap().json().await.unwrap();
    let again: Value = send("retry-1").await.unwrap().json().await.unwrap();
    let other: Value = send("retry-2").await.unwrap().json().await.unwrap();
    assert_eq!(first["sandboxID"], again["sandboxID"]);
    assert_ne!(first["sandboxID"], other["sandboxID"]);
    let bad = send("Not Valid!").await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn server_errors_tell_the_python_sdk_not_to_retry() {
    let c = Client::start().await;
    let body = json!({"templateID": UNAVAILABLE_TEMPLATE}).to_string();
    let key = c.key.clone();
    let (status, headers, body) = c
        .call_as(Some(&key), Method::POST, "/v2/sandboxes", Some(&body))
        .await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["should-retry"], "false");
    let (_, headers, _) = c
        .call_as(
            Some(&key),
            Method::POST,
            "/v2/sandboxes",
            Some(r#"{"templateID":"nope"}"#),
        )
        .await;
    assert!(
        headers.get("should-retry").is_none(),
        "4xx are never retried anyway"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_e2b_error_bodies() {
    let c = Client::start().await;
    let (status, body) = c.call(Method::GET, "/teams", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
    let (status, body) = c.call(Method::PUT, "/v2/sandboxes", None).await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn v1_list_returns_every_running_sandbox_and_v2_pages_at_100() {
    let c = Client::start().await;
    for _ in 0..101 {
        c.create(json!({"templateID": "base"})).await;
    }
    let (status, v1) = c.call(Method::GET, "/sandboxes", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v1.as_array().unwrap().len(), 101, "v1 has no pagination");

    let key = c.key.clone();
    let (_, headers, page) = c
        .call_as(Some(&key), Method::GET, "/v2/sandboxes", None)
        .await;
    assert_eq!(page.as_array().unwrap().len(), 100);
    assert!(headers.contains_key("x-next-token"));
}

#[tokio::test]
async fn network_config_burrow_provides_is_accepted_and_the_rest_is_501() {
    let c = Client::start().await;
    // What burrow does (public sandbox URLs, open egress): accepted.
    // `{"allowPublicTraffic": true}` is what the OpenAI Agents SDK's E2B provider sends.
    for network in [
        json!({"allowPublicTraffic": true}),
        json!({}),
        json!(null),
        json!({"allowPublicTraffic": null, "allowOut": [], "denyOut": [], "rules": {}, "httpsPorts": [], "egressProxy": null}),
    ] {
        let body = json!({"templateID": "base", "network": network});
        let (status, json) = c
            .call(Method::POST, "/v2/sandboxes", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{network}: {json}");
        let (status, json) = c
            .call(Method::POST, "/sandboxes", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::CREATED, "v1 {network}: {json}");
        assert!(json["trafficAccessToken"].is_null(), "public: {json}");
    }
    // Private sandbox URLs: created with a traffic access token.
    let body = json!({"templateID": "base", "network": {"allowPublicTraffic": false}});
    let (status, json) = c
        .call(Method::POST, "/v2/sandboxes", Some(&body.to_string()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert!(
        json["trafficAccessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "private: {json}"
    );
    // Valid E2B network settings burrow does not implement: 501 naming the field.
    for (network, field) in [
        (json!({"denyOut": ["0.0.0.0/0"]}), "denyOut"),
        (json!({"allowOut": ["10.0.0.0/8"]}), "allowOut"),
        (
            json!({"allowOut": ["example.com"], "denyOut": ["0.0.0.0/0"]}),
            "allowOut",
        ),
        (json!({"dnsServers": ["1.1.1.1"]}), "dnsServers"),
        (json!({"dnsServers": []}), "dnsServers"),
        (
            json!({"egressProxy": {"address": "proxy:1080"}}),
            "egressProxy",
        ),
        (
            json!({"maskRequestHost": "${PORT}-x.example.com"}),
            "maskRequestHost",
        ),
        (json!({"httpsPorts": [8443]}), "httpsPorts"),
        (
            json!({"rules": {"api.example.com": [{"transform": {"headers": {"A": "b"}}}]}}),
            "rules",
        ),
        (
            json!({"allowPublicTraffic": true, "futureField": 1}),
            "futureField",
        ),
    ] {
        let body = json!({"templateID": "base", "network": network});
        let (status, json) = c
            .call(Method::POST, "/v2/sandboxes", Some(&body.to_string()))
            .await;
        assert_error(status, &json, StatusCode::NOT_IMPLEMENTED);
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(field), "{network}: {message}");
    }
    // Invalid input: 400, even when an unimplemented field is present too.
    for network in [
        json!("open"),
        json!({"allowPublicTraffic": "yes"}),
        json!({"allowOut": "10.0.0.0/8"}),
        json!({"denyOut": ["example.com"]}),
        json!({"denyOut": ["10.0.0.0/33"]}),
        json!({"allowOut": ["example.com"]}),
        json!({"httpsPorts": [0]}),
    ] {
        let body = json!({"templateID": "base", "network": network});
        let (status, json) = c
            .call(Method::POST, "/v2/sandboxes", Some(&body.to_string()))
            .await;
        assert_error(status, &json, StatusCode::BAD_REQUEST);
    }
    // Other create fields burrow does not implement yet answer 501 as well.
    for (field, value) in [
        ("mcp", json!({"server": {}})),
        (
            "iam",
            json!({"tokens": {"aws": {"audience": "sts.amazonaws.com", "tokenType": "JWT-SVID"}}}),
        ),
        ("volumeMounts", json!([{"name": "v", "path": "/data"}])),
    ] {
        let body = json!({"templateID": "base", field: value});
        let (status, json) = c
            .call(Method::POST, "/v2/sandboxes", Some(&body.to_string()))
            .await;
        assert_error(status, &json, StatusCode::NOT_IMPLEMENTED);
        assert!(json["message"].as_str().unwrap().contains(field), "{json}");
    }
}

/// Every route of E2B's control plane (e2b SDK 2.63/2.64 generated clients; research e2b.md §1.4,
/// §1.6, next.md §1): burrow serves it, or answers 501 with a message. Never the router's 404,
/// which SDKs read as "sandbox not found".
const E2B_ROUTES: &[(&str, &str, bool)] = &[
    // (method, path, implemented by burrow)
    ("POST", "/sandboxes", true),
    ("GET", "/sandboxes", true),
    ("POST", "/v2/sandboxes", true),
    ("GET", "/v2/sandboxes", true),
    ("GET", "/sandboxes/inosuch", true),
    ("DELETE", "/sandboxes/inosuch", true),
    ("POST", "/sandboxes/inosuch/timeout", true),
    ("POST", "/sandboxes/inosuch/refreshes", true),
    ("POST", "/sandboxes/inosuch/pause", true),
    ("POST", "/sandboxes/inosuch/resume", true),
    ("POST", "/sandboxes/inosuch/connect", true),
    ("POST", "/v2/sandboxes/inosuch/connect", true),
    ("GET", "/sandboxes/inosuch/metrics", true),
    ("GET", "/templates/aliases/base", true),
    ("GET", "/sandboxes/metrics", false),
    ("GET", "/sandboxes/inosuch/logs", false),
    ("GET", "/v2/sandboxes/inosuch/logs", false),
    ("POST", "/sandboxes/inosuch/snapshots", false),
    ("GET", "/snapshots", false),
    ("POST", "/sandboxes/inosuch/fork", false),
    ("PUT", "/sandboxes/inosuch/network", false),
    ("GET", "/unstable/sandboxes/inosuch/record", false),
    ("GET", "/volumes", false),
    ("POST", "/volumes", false),
    ("GET", "/volumes/vol-1", false),
    ("DELETE", "/volumes/vol-1", false),
    ("GET", "/secrets", false),
    ("POST", "/secrets", false),
    ("GET", "/secrets/sec_1", false),
    ("POST", "/secrets/sec_1", false),
    ("DELETE", "/secrets/sec_1", false),
    ("GET", "/templates", false),
    ("POST", "/templates", false),
    ("GET", "/v2/templates", false),
    ("POST", "/v3/templates", true),
    ("GET", "/default-templates", false),
    ("GET", "/templates/tpl1", false),
    ("POST", "/templates/tpl1", false),
    ("PATCH", "/templates/tpl1", false),
    ("DELETE", "/templates/tpl1", false),
    // delete_snapshot: the id is path-encoded and may contain '/' and ':'.
    ("DELETE", "/templates/team%2Fsnap%3Adefault", false),
    ("PATCH", "/v2/templates/tpl1", false),
    ("POST", "/templates/tpl1/builds/b1", false),
    ("POST", "/v2/templates/tpl1/builds/b1", true),
    ("GET", "/templates/tpl1/builds/b1/status", true),
    ("GET", "/templates/tpl1/builds/b1/logs", false),
    (
        "GET",
        "/templates/tpl1/files/0000000000000000000000000000000000000000000000000000000000000000",
        true,
    ),
    ("POST", "/templates/tags", false),
    ("DELETE", "/templates/tags", false),
    ("GET", "/templates/tpl1/tags", false),
    ("GET", "/templates/tpl1/tags/count", false),
    ("GET", "/templates/tpl1/tags/exists?tag=v1", false),
    ("GET", "/templates/tpl1/tags/groups", false),
    ("GET", "/templates/tpl1/tags/v1/assignments", false),
];

/// The volume content API (Bearer volume token, string error codes).
const E2B_VOLUME_CONTENT_ROUTES: &[(&str, &str)] = &[
    ("GET", "/volumecontent/vol-1/path?path=/a"),
    ("PATCH", "/volumecontent/vol-1/path?path=/a"),
    ("DELETE", "/volumecontent/vol-1/path?path=/a"),
    ("GET", "/volumecontent/vol-1/dir?path=/"),
    ("POST", "/volumecontent/vol-1/dir?path=/a"),
    ("GET", "/volumecontent/vol-1/file?path=/a"),
    ("PUT", "/volumecontent/vol-1/file?path=/a"),
];

#[tokio::test]
async fn every_e2b_route_is_served_or_answers_501_with_a_message() {
    let c = Client::start().await;
    for &(method, path, implemented) in E2B_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = c.call(method.clone(), path, Some("{}")).await;
        if implemented {
            assert_ne!(
                status,
                StatusCode::NOT_IMPLEMENTED,
                "{method} {path}: {body}"
            );
            assert!(
                !body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no such endpoint")),
                "{method} {path}: {body}"
            );
            continue;
        }
        assert_error(status, &body, StatusCode::NOT_IMPLEMENTED);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("not supported by burrow"),
            "{method} {path}: {body}"
        );
        // Like every E2B route, they need a valid API key first.
        let (status, _, body) = c.call_as(None, method.clone(), path, None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED);
    }
    for &(method, path) in E2B_VOLUME_CONTENT_ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, _, body) = c.call_as(None, method.clone(), path, None).await;
        assert_eq!(
            status,
            StatusCode::NOT_IMPLEMENTED,
            "{method} {path}: {body}"
        );
        assert_eq!(body["code"], "not_implemented", "string code: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("volumes"),
            "{body}"
        );
    }
    // Paths E2B does not have are still 404.
    let (status, body) = c
        .call(Method::GET, "/sandboxes/inosuch/nothing", None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn template_alias_lookup_answers_e2b_shapes() {
    let c = Client::start().await;
    let (status, body) = c.call(Method::GET, "/templates/aliases/base", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"templateID": "base", "public": false}));
    // Unknown, and names no burrow template can have (the SDK path-encodes `team/name:tag`).
    for alias in ["nope", "team%2Fbase%3Av1"] {
        let (status, body) = c
            .call(Method::GET, &format!("/templates/aliases/{alias}"), None)
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND);
    }
    let (status, _, body) = c
        .call_as(None, Method::GET, "/templates/aliases/base", None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED);
}
