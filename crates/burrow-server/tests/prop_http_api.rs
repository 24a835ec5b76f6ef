//! Property tests of the daemon's request parsing end to end, against a real `burrow serve` over
//! real HTTP: arbitrary JSON (and non-JSON) bodies on the native and E2B endpoints that take one,
//! and arbitrary Host headers, never get a server error and always get a JSON answer a person can
//! act on. The data dir has no template, so no request can start a sandbox or a build.
//!
//! Bounded: 64 requests per property by default; `PROPTEST_CASES=10000` for a longer local run.

mod common;

use common::{TestEnv, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

fn config(default_cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: None,
        ..Config::default()
    }
}

/// An id of the right shape that no sandbox has.
const MISSING: &str = "i0000000000000000000";

/// (method, path, E2B API?) of every endpoint that reads a JSON body, template builds excepted
/// (an accepted build would import or build for real); `{id}` is replaced per request.
const ENDPOINTS: &[(&str, &str, bool)] = &[
    ("POST", "/v1/sandboxes", false),
    ("POST", "/v1/sandboxes/{id}/exec", false),
    ("POST", "/v1/sandboxes/{id}/leases", false),
    ("POST", "/v1/sandboxes/{id}/standby", false),
    ("PUT", "/v1/sandboxes/{id}/expiration", false),
    ("POST", "/v1/api-keys", false),
    ("POST", "/sandboxes", true),
    ("POST", "/v2/sandboxes", true),
    ("POST", "/sandboxes/{id}/timeout", true),
    ("POST", "/sandboxes/{id}/connect", true),
    ("POST", "/v2/sandboxes/{id}/connect", true),
];

/// Sandbox ids in URL paths: the well-formed missing one, or anything URL-safe, including
/// percent-encoded dots, slashes and NUL.
fn path_id() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(MISSING.to_string()),
        2 => "[a-zA-Z0-9._~-]{1,70}".prop_map(String::from),
        1 => prop::collection::vec(
            prop::sample::select(vec!["%2e", "%2E%2e", "%2F", "%00", "%ff", "%20", "i", "..", "A"]),
            1..6,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..100_000).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        "[a-z0-9_-]{1,10}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 20, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "template", "cpus", "memory_mb", "disk_mb", "env", "labels", "idle_timeout",
            "expiration", "zdr", "ttl_idle", "ttl_max_age", "expires_at", "command", "args",
            "cwd", "user", "timeout", "deep", "ttl", "reason", "name", "e2b", "templateID",
            "autoPause", "autoResume", "metadata", "envVars", "network",
        ])
        .prop_map(String::from),
        1 => ".{0,8}".prop_map(String::from),
    ];
    prop_oneof![
        4 => prop::collection::btree_map(key, value.clone(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => value,
    ]
}

/// A body: JSON, raw bytes, or JSON cut short.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => arbitrary_json().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (arbitrary_json(), any::<usize>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            text[..cut % (text.len() + 1)].to_vec()
        }),
    ]
}

/// Checks an error answer: JSON with a non-empty message.
fn check_error_body(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!("{status} without a JSON body ({e}): {body:?}"))
    })?;
    prop_assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status} without a message: {json}"
    );
    Ok(())
}

/// One server (and one wait for the host-wide runtime test lock) for both properties.
#[test]
fn request_parsing_properties() {
    let env = TestEnv::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(env.path()));
    arbitrary_bodies_get_client_errors_never_server_errors(&rt, &server);
    arbitrary_hosts_never_get_internal_errors(&rt, &server);
    rt.block_on(server.stop());
}

/// Arbitrary bodies on every JSON endpoint: a JSON 4xx, never a 5xx.
fn arbitrary_bodies_get_client_errors_never_server_errors(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
) {
    let mut runner = TestRunner::new(config(64));
    let strategy = (0..ENDPOINTS.len(), path_id(), body(), any::<bool>());
    runner
        .run(&strategy, |(which, id, body, json_type)| {
            let (method, path, e2b) = ENDPOINTS[which];
            let path = path.replace("{id}", &id);
            let (status, answer) = rt.block_on(async {
                let mut request = server
                    .http
                    .request(method.parse().unwrap(), server.url(&path))
                    .body(body.clone())
                    .timeout(std::time::Duration::from_secs(30));
                request = if e2b {
                    request.header("x-api-key", &server.key)
                } else {
                    request.bearer_auth(&server.key)
                };
                if json_type {
                    request = request.header("content-type", "application/json");
                }
                let response = request.send().await.expect("server answers");
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap())
            });
            prop_assert!(status < 500, "{method} {path}: {status} {answer:?}");
            if status >= 400 {
                check_error_body(status, &answer)?;
            } else {
                // Only an API key can be created from nothing.
                prop_assert_eq!(path.as_str(), "/v1/api-keys", "{} {:?}", status, answer);
            }
            Ok(())
        })
        .unwrap();
    // An oversized body is a 413, not a buffer without bound.
    let big = vec![b' '; 200 << 10];
    let status = rt.block_on(async {
        server
            .post("/v1/sandboxes")
            .body(big)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 413);
    let health = rt.block_on(async { server.get("/healthz").send().await.unwrap().status() });
    assert!(health.is_success());
}

/// Arbitrary Host headers on an API request: never a panic or an internal error; the only
/// server-side status is the proxy's 502 for a sandbox that does not exist, with E2B's body.
fn arbitrary_hosts_never_get_internal_errors(rt: &tokio::runtime::Runtime, server: &TestServer) {
    let host = prop_oneof![
        "[ -~]{0,60}".prop_map(String::from),
        (
            "[0-9]{0,6}",
            "[a-zA-Z0-9-]{0,22}",
            prop::sample::select(vec![
                ".burrow.test",
                ".BURROW.test.",
                ".burrow.test:7420",
                ".x.burrow.test",
                "",
            ])
        )
            .prop_map(|(port, id, suffix)| format!("{port}-{id}{suffix}")),
        prop::sample::select(vec![
            "localhost",
            "127.0.0.1",
            "sandbox.burrow.test",
            "api.burrow.test"
        ])
        .prop_map(String::from),
    ];
    let e2b_headers = prop::option::of(("[ -~]{0,24}", "[ -~]{0,8}"));
    let mut runner = TestRunner::new(config(64));
    runner
        .run(&(host, e2b_headers), |(host, e2b_headers)| {
            let (status, answer) = rt.block_on(async {
                let mut request = server
                    .get("/v1/sandboxes")
                    .header("host", host.as_str())
                    .timeout(std::time::Duration::from_secs(30));
                if let Some((id, port)) = &e2b_headers {
                    request = request
                        .header("e2b-sandbox-id", id.as_str())
                        .header("e2b-sandbox-port", port.as_str());
                }
                let response = request.send().await.expect("server answers");
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap())
            });
            if status >= 400 {
                check_error_body(status, &answer)?;
            }
            if status >= 500 {
                prop_assert_eq!(status, 502, "{:?}", answer);
                let json: Value = serde_json::from_slice(&answer).unwrap();
                prop_assert_eq!(json["message"].as_str(), Some("The sandbox was not found"));
            }
            Ok(())
        })
        .unwrap();
}
