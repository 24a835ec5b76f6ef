//! Property tests of the daemon's request parsing end to end, against a real `burrow serve` over
//! real HTTP: arbitrary JSON (and non-JSON) bodies on the native and E2B endpoints that take one,
//! arbitrary query strings on the list, usage, report and audit endpoints, arbitrary workspace
//! names in paths, and arbitrary Host headers never get a server error and always get a JSON
//! answer a person can act on. And the wall between workspaces: a key of one workspace asking
//! for another's (by path, `?workspace=` or a body) gets exactly the answer it gets for a
//! workspace that does not exist, never the other's data. The data dir has no template, so no
//! request can start a sandbox or a build.
//!
//! Bounded: 64 cases per property by default; `PROPTEST_CASES=10000` for a longer local run.

mod common;

use common::{TestEnv, TestServer};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

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

/// The workspaces the properties set up: `A` with a key of each role, `B` another tenant (a key,
/// audit entries, no sandboxes), and a name no workspace has.
const A: &str = "alpha-ws";
const B: &str = "bravo-ws";
const NOWHERE: &str = "zulu-none";
/// The name of B's key: no answer to A's keys may contain it.
const B_KEY_NAME: &str = "bravo-secret";

/// (method, path, E2B API?) of every endpoint that reads a JSON body, native template builds
/// excepted (an accepted build would import or build for real; E2B's are in: an accepted
/// `POST /v3/templates` only records a build waiting for its start, and the start names a build
/// that does not exist); `{id}` is replaced per request by a sandbox id, `{name}` by a workspace
/// name.
const ENDPOINTS: &[(&str, &str, bool)] = &[
    ("POST", "/v1/sandboxes", false),
    ("POST", "/v1/sandboxes/{id}/exec", false),
    ("POST", "/v1/sandboxes/{id}/leases", false),
    ("POST", "/v1/sandboxes/{id}/standby", false),
    ("PUT", "/v1/sandboxes/{id}/expiration", false),
    ("POST", "/v1/api-keys", false),
    ("POST", "/v1/workspaces", false),
    ("PATCH", "/v1/workspaces/{name}", false),
    ("POST", "/sandboxes", true),
    ("POST", "/v2/sandboxes", true),
    ("POST", "/sandboxes/{id}/timeout", true),
    ("POST", "/sandboxes/{id}/connect", true),
    ("POST", "/v2/sandboxes/{id}/connect", true),
    ("POST", "/v3/templates", true),
    ("POST", "/v2/templates/{id}/builds/{id}", true),
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

/// Workspace names in URL paths: existing ones, one that does not exist, valid-looking ones, and
/// junk (percent-encoded bytes, dots, unicode).
fn path_name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["default", NOWHERE]).prop_map(String::from),
        1 => "[a-z0-9-]{1,70}".prop_map(String::from),
        2 => path_id(),
        1 => ".{1,12}".prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
    ]
}

/// Words the request types know (tiers, roles, formats, workspaces, durations).
#[rustfmt::skip]
const KNOWN_WORDS: &[&str] = &[
    "free", "team", "unlimited", "viewer", "member", "admin", "operator", "burrow", "e2b",
    "default", A, NOWHERE, "7d", "30d", "indefinite", "base",
];

/// Field names of the request bodies (sandboxes, exec, leases, expiry, keys, workspaces and
/// their quotas, E2B).
#[rustfmt::skip]
const KNOWN_KEYS: &[&str] = &[
    "template", "cpus", "memory_mb", "disk_mb", "env", "labels", "idle_timeout", "expiration",
    "zdr", "ttl_idle", "ttl_max_age", "expires_at", "command", "args", "cwd", "user", "timeout",
    "deep", "ttl", "reason", "name", "e2b", "templateID", "autoPause", "autoResume", "metadata",
    "envVars", "network", "workspace", "role", "format", "tier", "quotas", "max_awake_sandboxes",
    "max_sandboxes", "max_vcpus_per_sandbox", "max_memory_mb_per_sandbox", "max_awake_vcpus",
    "max_awake_memory_mb", "max_disk_mb", "max_standby_age", "creates_per_minute",
    "public_traffic", "allowPublicTraffic", "tags", "cpuCount", "memoryMB", "fromTemplate",
    "fromImage", "fromImageRegistry", "steps", "type", "filesHash", "force", "startCmd", "readyCmd",
];

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_KEYS).prop_map(String::from),
        1 => ".{0,8}".prop_map(String::from),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        prop::sample::select(KNOWN_WORDS).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
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
            // Known keys nested too: `quotas` holds an object of quota fields.
            prop::collection::btree_map(json_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => prop::collection::btree_map(json_key(), value.clone(), 0..6)
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

/// Checks an error answer: JSON with a code (a word on the native API, E2B's numeric status on
/// the E2B API) and a non-empty message.
fn check_error_body(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!("{status} without a JSON body ({e}): {body:?}"))
    })?;
    prop_assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status} without a message: {json}"
    );
    prop_assert!(
        json["code"].as_str().is_some_and(|c| !c.is_empty()) || json["code"].is_u64(),
        "{status} without a code: {json}"
    );
    Ok(())
}

/// Sends one request and returns its status, content type and body.
fn send(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, String, Vec<u8>) {
    rt.block_on(async {
        let mut request = server
            .http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(key)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            status,
            content_type,
            response.bytes().await.unwrap().to_vec(),
        )
    })
}

/// Sends one request that must succeed; its JSON answer.
fn ok_json(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Value,
) -> Value {
    let (status, _, answer) = send(rt, server, key, method, path, Some(body.to_string().into()));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    serde_json::from_slice(&answer).unwrap()
}

/// What the properties set up: workspace A's keys by role, and what no answer to them may
/// contain (B's id and its key's id and name).
struct Tenants {
    /// (role, key) of A: viewer, member, admin, in that order.
    a_keys: Vec<(&'static str, String)>,
    b_secrets: Vec<String>,
}

fn set_up_tenants(rt: &tokio::runtime::Runtime, server: &TestServer) -> Tenants {
    let op = &server.key;
    ok_json(
        rt,
        server,
        op,
        "POST",
        "/v1/workspaces",
        json!({ "name": A }),
    );
    let b = ok_json(
        rt,
        server,
        op,
        "POST",
        "/v1/workspaces",
        json!({ "name": B, "tier": "team", "quotas": { "max_awake_sandboxes": 3 } }),
    );
    let a_keys = ["viewer", "member", "admin"]
        .into_iter()
        .map(|role| {
            let created = ok_json(
                rt,
                server,
                op,
                "POST",
                "/v1/api-keys",
                json!({ "name": format!("{A}-{role}"), "workspace": A, "role": role }),
            );
            (role, created["key"].as_str().unwrap().to_string())
        })
        .collect();
    let b_key = ok_json(
        rt,
        server,
        op,
        "POST",
        "/v1/api-keys",
        json!({ "name": B_KEY_NAME, "workspace": B, "role": "admin" }),
    );
    // B's own calls, so B has audit entries and more than one key.
    let b_second = ok_json(
        rt,
        server,
        b_key["key"].as_str().unwrap(),
        "POST",
        "/v1/api-keys",
        json!({ "name": "bravo-second", "role": "viewer" }),
    );
    Tenants {
        a_keys,
        b_secrets: vec![
            b["id"].as_str().unwrap().to_string(),
            b_key["id"].as_str().unwrap().to_string(),
            b_second["id"].as_str().unwrap().to_string(),
            B_KEY_NAME.to_string(),
            "bravo-second".to_string(),
        ],
    }
}

/// One server (and one wait for the host-wide runtime test lock) for every property. The wall
/// comes first (it needs A and B as set up), then paths and queries, then bodies (which may
/// create workspaces and keys, and change A's tier).
#[test]
fn request_parsing_properties() {
    let env = TestEnv::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start(env.path()));
    let tenants = set_up_tenants(&rt, &server);
    another_workspace_is_answered_as_one_that_does_not_exist(&rt, &server, &tenants);
    arbitrary_workspace_paths_get_client_errors(&rt, &server);
    arbitrary_queries_get_client_errors_never_server_errors(&rt, &server, &tenants);
    arbitrary_bodies_get_client_errors_never_server_errors(&rt, &server, &tenants);
    arbitrary_hosts_never_get_internal_errors(&rt, &server);
    rt.block_on(server.stop());
}

/// What a native route needs of its caller (`auth::need` on the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Viewer,
    Member,
    Admin,
    Operator,
}

/// A call naming a workspace `{ws}` (in the path, the query or the body), what it needs, and
/// its status when a key of that workspace with the role makes it.
struct Call {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    need: Need,
    own: u16,
}

const fn call(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    need: Need,
    own: u16,
) -> Call {
    Call {
        method,
        path,
        body,
        need,
        own,
    }
}

const WALL_CALLS: &[Call] = &[
    call("GET", "/v1/workspaces/{ws}", None, Need::Viewer, 200),
    call(
        "PATCH",
        "/v1/workspaces/{ws}",
        Some("{}"),
        Need::Operator,
        0,
    ),
    call(
        "PATCH",
        "/v1/workspaces/{ws}",
        Some(r#"{"tier":"unlimited","quotas":{"max_awake_sandboxes":1000}}"#),
        Need::Operator,
        0,
    ),
    // No such route: the middleware's table still answers first (403), as for any name.
    call("PUT", "/v1/workspaces/{ws}", Some("{}"), Need::Operator, 0),
    call(
        "DELETE",
        "/v1/workspaces/{ws}?force=true",
        None,
        Need::Operator,
        0,
    ),
    call(
        "POST",
        "/v1/workspaces",
        Some(r#"{"name":"{ws}"}"#),
        Need::Operator,
        0,
    ),
    call(
        "GET",
        "/v1/sandboxes?workspace={ws}",
        None,
        Need::Viewer,
        200,
    ),
    call(
        "GET",
        "/v1/tombstones?workspace={ws}",
        None,
        Need::Viewer,
        200,
    ),
    call("GET", "/v1/usage?workspace={ws}", None, Need::Viewer, 200),
    call(
        "GET",
        "/v1/usage?format=csv&since=2020-01-01T00:00:00Z&workspace={ws}",
        None,
        Need::Viewer,
        200,
    ),
    call(
        "GET",
        "/v1/usage/projection?sandboxes=10&workspace={ws}",
        None,
        Need::Viewer,
        200,
    ),
    call(
        "GET",
        "/v1/retention/report?workspace={ws}&window=1h",
        None,
        Need::Viewer,
        200,
    ),
    call(
        "GET",
        "/v1/audit?workspace={ws}&limit=5",
        None,
        Need::Admin,
        200,
    ),
    call("GET", "/v1/api-keys?workspace={ws}", None, Need::Admin, 200),
    call(
        "POST",
        "/v1/api-keys",
        Some(r#"{"name":"probe","workspace":"{ws}","role":"viewer"}"#),
        Need::Admin,
        201,
    ),
    // The data dir has no template: in its own workspace, the create finds no `base`.
    call(
        "POST",
        "/v1/sandboxes?workspace={ws}",
        Some(r#"{"template":"base"}"#),
        Need::Member,
        404,
    ),
];

/// A's keys, of every role, asking for B (in the path, `?workspace=` or a body) get exactly the
/// answer they get for a workspace that does not exist — 403 naming the role when the route
/// needs more than the key has (the role check comes first and does not look at the name),
/// else 404 `workspace_not_found` — and never any of B's ids or key names. The same calls for
/// A itself succeed when the role allows, so the 404s are the wall, not a broken request.
fn another_workspace_is_answered_as_one_that_does_not_exist(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    tenants: &Tenants,
) {
    let mut runner = TestRunner::new(config(64));
    let strategy = (0..tenants.a_keys.len(), 0..WALL_CALLS.len());
    runner
        .run(&strategy, |(which_key, which_call)| {
            let (role, key) = &tenants.a_keys[which_key];
            let has = match *role {
                "viewer" => Need::Viewer,
                "member" => Need::Member,
                _ => Need::Admin,
            };
            let call = &WALL_CALLS[which_call];
            let ask = |ws: &str| {
                let path = call.path.replace("{ws}", ws);
                let body = call.body.map(|b| b.replace("{ws}", ws).into_bytes());
                let (status, _, answer) = send(rt, server, key, call.method, &path, body);
                (path, status, String::from_utf8_lossy(&answer).into_owned())
            };
            let (path, status, answer) = ask(B);
            let (_, missing_status, missing_answer) = ask(NOWHERE);
            let (_, own_status, own_answer) = ask(A);
            let what = format!("{role} key: {} {path}", call.method);
            for secret in &tenants.b_secrets {
                prop_assert!(!answer.contains(secret.as_str()), "{what}: {answer}");
                prop_assert!(
                    !own_answer.contains(secret.as_str()),
                    "{what}: {own_answer}"
                );
            }
            prop_assert_eq!(
                status,
                missing_status,
                "{}: {} / {}",
                what,
                answer,
                missing_answer
            );
            prop_assert_eq!(
                answer.replace(B, "{ws}"),
                missing_answer.replace(NOWHERE, "{ws}"),
                "{}",
                what
            );
            let error: Value = serde_json::from_str(&answer)
                .map_err(|e| TestCaseError::fail(format!("{what}: not JSON ({e}): {answer}")))?;
            check_error_body(status, answer.as_bytes())?;
            if has < call.need {
                prop_assert_eq!(status, 403, "{}: {}", what, answer);
                prop_assert_eq!(&error["code"], "forbidden", "{}", what);
                prop_assert_eq!(own_status, 403, "{}: {}", what, own_answer);
            } else {
                prop_assert_eq!(status, 404, "{}: {}", what, answer);
                prop_assert_eq!(&error["code"], "workspace_not_found", "{}", what);
                prop_assert_eq!(own_status, call.own, "{}: {}", what, own_answer);
            }
            Ok(())
        })
        .unwrap();
    // Lists without a filter: A's keys see nothing of B.
    for (role, key) in &tenants.a_keys {
        for path in [
            "/v1/workspaces",
            "/v1/sandboxes",
            "/v1/api-keys",
            "/v1/audit",
            "/v1/usage",
            "/v1/usage?format=jsonl&since=2020-01-01T00:00:00Z",
            "/v1/tombstones",
            "/v1/retention/report",
            "/metrics",
        ] {
            let (status, _, answer) = send(rt, server, key, "GET", path, None);
            let answer = String::from_utf8_lossy(&answer);
            assert!(
                status == 200 || status == 403,
                "{role} {path}: {status} {answer}"
            );
            for secret in &tenants.b_secrets {
                assert!(!answer.contains(secret.as_str()), "{role} {path}: {answer}");
            }
            // The audit log holds A's own calls naming B's path (`PATCH /v1/workspaces/…`).
            if path != "/v1/audit" {
                assert!(!answer.contains(B), "{role} {path}: {answer}");
            }
        }
    }
}

/// Arbitrary workspace names in `/v1/workspaces/{name}` (GET, PATCH, DELETE; PATCH with an empty
/// or an arbitrary body): a JSON 400 or 404, never a 5xx; only `default` exists among them (it
/// can be read and changed, not removed).
fn arbitrary_workspace_paths_get_client_errors(rt: &tokio::runtime::Runtime, server: &TestServer) {
    let mut runner = TestRunner::new(config(64));
    let method = prop::sample::select(vec!["GET", "PATCH", "DELETE"]);
    let patch = prop_oneof![Just(json!({})), arbitrary_json()];
    runner
        .run(&(method, path_name(), patch), |(method, name, patch)| {
            let path = format!("/v1/workspaces/{name}");
            let body = (method == "PATCH").then(|| patch.to_string().into_bytes());
            let (status, _, answer) = send(rt, server, &server.key, method, &path, body);
            let text = String::from_utf8_lossy(&answer);
            prop_assert!(status < 500, "{method} {path}: {status} {text}");
            if status >= 400 {
                check_error_body(status, &answer)?;
            }
            if name == "default" {
                match method {
                    "GET" => prop_assert_eq!(status, 200, "{}", text),
                    "PATCH" => prop_assert!(status == 200 || status == 400, "{status} {text}"),
                    _ => prop_assert_eq!(status, 400, "{}", text),
                }
            } else {
                prop_assert!(
                    status == 400 || status == 404,
                    "{method} {path}: {status} {text}"
                );
            }
            Ok(())
        })
        .unwrap();
}

/// (method, path) of the endpoints that read a query string.
const QUERY_ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/v1/usage"),
    ("GET", "/v1/usage/projection"),
    ("GET", "/v1/retention/report"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/sandboxes"),
    ("GET", "/v1/api-keys"),
    ("GET", "/v1/tombstones"),
    ("GET", "/v1/workspaces"),
    ("DELETE", "/v1/workspaces/zulu-none"),
];

/// Query strings: pairs of known and arbitrary keys (repeats included) with values that are
/// valid, out of range (huge counts and durations, times past year 9999), malformed or unicode,
/// form-encoded; or raw junk (bad percent escapes, bare `=` and `&`).
fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(vec![
            "workspace", "since", "until", "format", "sandboxes", "active_ratio", "window",
            "limit", "label", "state", "force",
        ])
        .prop_map(String::from),
        1 => ".{0,6}".prop_map(String::from),
    ];
    let value = prop_oneof![
        4 => prop::sample::select(vec![
            A, B, NOWHERE, "default", "", "30d", "0s", "1h", "1000000y", "99999999999999999999d",
            "584542046091y", "18446744073709551615", "18446744073709551616", "-1", "0", "1",
            "100000", "100001", "100000000", "100000001", "0.5", "1e400", "-0", "NaN", "inf",
            "json", "jsonl", "csv", "xml", "true", "false", "2026-01-31T00:00:00Z",
            "2026-13-45T99:99:99Z", "0000-01-01T00:00:00-23:59",
            "9999-12-31T23:59:59.999999999-23:59", "+275760-09-13T00:00:00Z", "k=v", "running",
            "standby",
        ])
        .prop_map(String::from),
        2 => ".{0,16}".prop_map(String::from),
        1 => "[0-9]{1,30}".prop_map(String::from),
        1 => "[0-9]{1,22}(ns|ms|s|m|h|d|w|y)".prop_map(String::from),
    ];
    prop_oneof![
        4 => prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
        }),
        1 => prop::collection::vec(
            prop::sample::select(vec![
                "workspace=", "since=", "limit=", "window=", "&", "=", "%", "%ff", "%00", "%2",
                "+", "%26", "%3D", "a", "9", "%C3%A9", "%E2%80%AE",
            ]),
            0..8,
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Arbitrary query strings on the usage, projection, report, audit and list endpoints, with the
/// operator key and A's admin and viewer keys: a JSON 4xx with a code and a message or a 2xx
/// (JSON unless CSV or JSON lines were asked for), never a 5xx; A's keys never get a 2xx naming
/// workspace B, nor any of B's ids.
fn arbitrary_queries_get_client_errors_never_server_errors(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    tenants: &Tenants,
) {
    // The edges first, every run: huge windows and counts, times out of range, repeats.
    for (path, status) in [
        // A window longer than representable time covers every sandbox (it was a 500).
        ("/v1/retention/report?window=1000000y", 200),
        ("/v1/retention/report?window=584542046090y", 200),
        ("/v1/retention/report?window=99999999999999999999d", 400),
        ("/v1/retention/report?window=0s", 200),
        ("/v1/retention/report?window=1h&window=2h", 400),
        (
            "/v1/usage?since=9999-12-31T23:59:59.999999999-23:59&format=csv",
            200,
        ),
        (
            "/v1/usage?since=0000-01-01T00:00:00%2B23:59&until=2026-13-45T99:99:99Z",
            400,
        ),
        ("/v1/usage?format=xml", 400),
        ("/v1/usage/projection?sandboxes=18446744073709551616", 400),
        (
            "/v1/usage/projection?sandboxes=100000000&active_ratio=1",
            200,
        ),
        ("/v1/usage/projection?active_ratio=NaN", 400),
        ("/v1/usage/projection?active_ratio=1e400", 400),
        ("/v1/audit?limit=0", 400),
        ("/v1/audit?limit=4294967296", 400),
        ("/v1/audit?since=%ff", 400),
        ("/v1/sandboxes?workspace=%00", 404),
        ("/v1/api-keys?workspace=%E2%80%AE", 404),
    ] {
        let (got, _, answer) = send(rt, server, &server.key, "GET", path, None);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(got, status, "GET {path}: {text}");
        assert!(serde_json::from_slice::<Value>(&answer).is_ok() || path.contains("csv"));
        if got >= 400 {
            check_error_body(got, &answer).unwrap();
        }
    }
    let mut runner = TestRunner::new(config(64));
    // 0: the operator; 1: A's admin; 2: A's viewer.
    let who = prop_oneof![2 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)];
    runner
        .run(
            &(0..QUERY_ENDPOINTS.len(), query(), who),
            |(which, query, who)| {
                let (method, path) = QUERY_ENDPOINTS[which];
                let path = format!("{path}?{query}");
                let key = match who {
                    0 => &server.key,
                    1 => &tenants.a_keys[2].1,
                    _ => &tenants.a_keys[0].1,
                };
                let (status, content_type, answer) = send(rt, server, key, method, &path, None);
                let text = String::from_utf8_lossy(&answer);
                prop_assert!(status < 500, "{method} {path}: {status} {text}");
                if status >= 400 {
                    check_error_body(status, &answer)?;
                } else if content_type.starts_with("application/json") {
                    prop_assert!(
                        serde_json::from_slice::<Value>(&answer).is_ok(),
                        "{method} {path}: {status} {text}"
                    );
                } else {
                    prop_assert!(
                        path.starts_with("/v1/usage?") && status == 200,
                        "{method} {path}: {status} {content_type} {text}"
                    );
                }
                if who != 0 {
                    let names_b = method == "GET"
                        && url::form_urlencoded::parse(query.as_bytes())
                            .any(|(k, v)| k == "workspace" && v == B);
                    prop_assert!(
                        !(names_b && (200..300).contains(&status)),
                        "{method} {path}: {status} {text}"
                    );
                    for secret in &tenants.b_secrets {
                        prop_assert!(!text.contains(secret.as_str()), "{method} {path}: {text}");
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Arbitrary bodies on every JSON endpoint, with the operator key or A's admin key: a JSON 4xx,
/// never a 5xx.
fn arbitrary_bodies_get_client_errors_never_server_errors(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    tenants: &Tenants,
) {
    let mut runner = TestRunner::new(config(64));
    let name = prop_oneof![
        2 => prop::sample::select(vec!["default", A, NOWHERE]).prop_map(String::from),
        1 => path_name(),
    ];
    let operator = prop_oneof![3 => Just(true), 1 => Just(false)];
    let strategy = (
        0..ENDPOINTS.len(),
        path_id(),
        name,
        body(),
        any::<bool>(),
        operator,
    );
    runner
        .run(&strategy, |(which, id, name, body, json_type, operator)| {
            let (method, route, e2b) = ENDPOINTS[which];
            let path = route.replace("{id}", &id).replace("{name}", &name);
            let key = if operator {
                &server.key
            } else {
                &tenants.a_keys[2].1
            };
            let (status, answer) = rt.block_on(async {
                let mut request = server
                    .http
                    .request(method.parse().unwrap(), server.url(&path))
                    .body(body.clone())
                    .timeout(std::time::Duration::from_secs(30));
                request = if e2b {
                    request.header("x-api-key", key)
                } else {
                    request.bearer_auth(key)
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
                // Only an API key or a workspace can be created from nothing, or a workspace
                // changed.
                prop_assert!(
                    ["/v1/api-keys", "/v1/workspaces", "/v1/workspaces/{name}"].contains(&route),
                    "{method} {path}: {status} {answer:?}"
                );
                prop_assert!(
                    serde_json::from_slice::<Value>(&answer).is_ok(),
                    "{method} {path}: {status} {answer:?}"
                );
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
