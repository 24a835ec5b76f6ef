//! Connect framing, auth, keepalives, client streaming, watchers and the small HTTP
//! endpoints, spoken on the wire against the real agent binary.

mod common;

use std::time::Duration;

use base64::Engine;
use burrow_envd::connect::{EnvelopeDecoder, Frame, encode_envelope, encode_message};
use burrow_envd::proto::process::{ProcessEvent, ProcessEventResponse, ProcessSelector};
use burrow_envd::{Code, EnvdClient};
use common::{Agent, AgentOptions, scratch};
use serde_json::{Value, json};
use sha2::Digest;

const UNAUTHORIZED: &str =
    "unauthorized access, please provide a valid access token or method signing if supported";

fn decode_all(body: &[u8]) -> Vec<Frame> {
    let mut d = EnvelopeDecoder::new();
    d.push(body);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        out.push(f);
    }
    d.finish().unwrap();
    out
}

async fn unary(agent: &Agent, method: &str, body: Value) -> (u16, Value) {
    let resp = agent
        .http
        .post(agent.url(&format!("/{method}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn sign(path: &str, op: &str, user: &str, token: &str, exp: Option<i64>) -> String {
    let raw = match exp {
        Some(e) => format!("{path}:{op}:{user}:{token}:{e}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(raw))
    )
}

#[tokio::test]
async fn access_token_and_file_signatures() {
    let token = "secret-token";
    let agent = Agent::start(AgentOptions {
        access_token: Some(token.into()),
        ..Default::default()
    });
    // /health needs nothing.
    let resp = agent.http.get(agent.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    // RPC without / with a wrong token → 401 with E2B's body.
    for header in [None, Some("wrong")] {
        let mut req = agent
            .http
            .post(agent.url("/process.Process/List"))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(h) = header {
            req = req.header("X-Access-Token", h);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"code": 401, "message": UNAUTHORIZED}));
    }
    for path in ["/envs", "/metrics"] {
        assert_eq!(
            agent
                .http
                .get(agent.url(path))
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "{path}"
        );
    }
    // The client with the token works.
    agent.client.list().await.unwrap();
    let anonymous = EnvdClient::new(agent.addr, None).unwrap();
    assert_eq!(
        anonymous.list().await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // /files: signature instead of the header.
    std::fs::write("/tmp/burrow-signed.txt", b"signed").unwrap();
    let path = "/tmp/burrow-signed.txt";
    let get = |query: Vec<(&'static str, String)>| {
        agent.http.get(agent.url("/files")).query(&query).send()
    };
    let resp = get(vec![
        ("path", path.into()),
        ("signature", sign(path, "read", "", token, None)),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"signed");
    let future = chrono::Utc::now().timestamp() + 60;
    let resp = get(vec![
        ("path", path.into()),
        ("signature", sign(path, "read", "", token, Some(future))),
        ("signature_expiration", future.to_string()),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let past = chrono::Utc::now().timestamp() - 5;
    let resp = get(vec![
        ("path", path.into()),
        ("signature", sign(path, "read", "", token, Some(past))),
        ("signature_expiration", past.to_string()),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"code": 401, "message": "signature is already expired"})
    );
    // A write signature does not allow reads; a missing signature is refused.
    let resp = get(vec![
        ("path", path.into()),
        ("signature", sign(path, "write", "", token, None)),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = get(vec![("path", path.into())]).await.unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"code": 401, "message": UNAUTHORIZED})
    );
    // Upload with a write signature for a named user.
    let target = "/tmp/burrow-signed-upload.txt";
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&[
            ("path", target),
            ("username", "root"),
            ("signature", &sign(target, "write", "root", token, None)),
        ])
        .header("content-type", "application/octet-stream")
        .body("up")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(target).unwrap(), b"up");
    // The header token also works for /files; a wrong header is refused even with a signature.
    let resp = agent
        .http
        .get(agent.url("/files"))
        .query(&[("path", path)])
        .header("X-Access-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = agent
        .http
        .get(agent.url("/files"))
        .query(&[
            ("path", path),
            ("signature", &sign(path, "read", "", token, None)),
        ])
        .header("X-Access-Token", "bad")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(target);
}

#[tokio::test]
async fn keepalives_are_sent_during_silence() {
    let agent = Agent::start(AgentOptions::default());
    let req = json!({"process": {"cmd": "/bin/sh", "args": ["-c", "sleep 2.5; echo done"]}, "stdin": false});
    let resp = agent
        .http
        .post(agent.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .header("connect-protocol-version", "1")
        .header("keepalive-ping-interval", "1")
        .body(encode_envelope(0, req.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+json");
    let body = resp.bytes().await.unwrap();
    let frames = decode_all(&body);
    let events: Vec<ProcessEvent> = frames[..frames.len() - 1]
        .iter()
        .map(|f| f.parse::<ProcessEventResponse>().unwrap().event)
        .collect();
    assert!(matches!(events[0], ProcessEvent::Start(_)));
    let keepalives = events
        .iter()
        .filter(|e| matches!(e, ProcessEvent::Keepalive(_)))
        .count();
    assert!((1..=3).contains(&keepalives), "{events:?}");
    assert!(matches!(events.last(), Some(ProcessEvent::End(_))));
    let last = frames.last().unwrap();
    assert!(last.is_end_stream());
    assert_eq!(&last.payload[..], b"{}");
}

#[tokio::test]
async fn stream_input_over_chunked_http1() {
    let agent = Agent::start(AgentOptions::default());
    let mut stream = agent
        .client
        .start(
            burrow_envd::proto::process::StartRequest {
                process: burrow_envd::proto::process::ProcessConfig {
                    cmd: "/bin/cat".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            None,
            None,
        )
        .await
        .unwrap();
    use futures::StreamExt;
    let Some(Ok(ProcessEvent::Start(start))) = stream.next().await else {
        panic!("no start")
    };
    let msgs = [
        json!({"start": {"process": {"pid": start.pid}}}),
        json!({"data": {"input": {"stdin": base64::engine::general_purpose::STANDARD.encode("first ")}}}),
        json!({"keepalive": {}}),
        json!({"data": {"input": {"stdin": base64::engine::general_purpose::STANDARD.encode("second")}}}),
    ];
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        msgs.iter().map(|m| Ok(encode_message(m))).collect();
    let resp = agent
        .http
        .post(agent.url("/process.Process/StreamInput"))
        .header("content-type", "application/connect+json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let frames = decode_all(&resp.bytes().await.unwrap());
    assert!(frames.last().unwrap().end_stream_result().is_ok());
    agent
        .client
        .close_stdin(ProcessSelector::Pid(start.pid))
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(Ok(ev)) = stream.next().await {
        if let ProcessEvent::Data(burrow_envd::proto::process::DataEvent::Stdout(b)) = ev {
            out.extend_from_slice(&b);
        }
    }
    assert_eq!(out, b"first second");

    // StreamInput whose first message is not `start` ends with invalid_argument.
    let bad = encode_message(&json!({"data": {"input": {"stdin": "eA=="}}}));
    let resp = agent
        .http
        .post(agent.url("/process.Process/StreamInput"))
        .header("content-type", "application/connect+json")
        .body(bad)
        .send()
        .await
        .unwrap();
    let frames = decode_all(&resp.bytes().await.unwrap());
    assert_eq!(
        frames.last().unwrap().end_stream_result().unwrap_err().code,
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn malformed_requests_get_connect_errors() {
    let agent = Agent::start(AgentOptions::default());
    let resp = agent
        .http
        .post(agent.url("/process.Process/List"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "invalid_argument"
    );
    let (status, body) = unary(&agent, "process.Process/Nope", json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (501, Some("unimplemented"))
    );
    let (status, body) = unary(
        &agent,
        "process.Process/SendSignal",
        json!({"process": {"pid": 1}, "signal": "SIGNAL_BOGUS"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, body) = unary(
        &agent,
        "process.Process/SendSignal",
        json!({"signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (status, _) = unary(
        &agent,
        "process.Process/SendSignal",
        json!({"process": {"pid": 4_000_000}, "signal": "SIGNAL_SIGKILL"}),
    )
    .await;
    assert_eq!(status, 404);
    let resp = agent
        .http
        .post(agent.url("/process.Process/List"))
        .header("content-type", "application/proto")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);
    // A streaming call with a truncated envelope ends with an error frame, not a hang.
    let resp = agent
        .http
        .post(agent.url("/process.Process/Start"))
        .header("content-type", "application/connect+json")
        .body(vec![0u8, 0, 0, 0, 50, b'{'])
        .send()
        .await
        .unwrap();
    let frames = decode_all(&resp.bytes().await.unwrap());
    assert_eq!(
        frames.last().unwrap().end_stream_result().unwrap_err().code,
        Code::InvalidArgument
    );
    // Bad Authorization header.
    let resp = agent
        .http
        .post(agent.url("/filesystem.Filesystem/Stat"))
        .header("content-type", "application/json")
        .header("authorization", "Basic !!!")
        .body(r#"{"path":"/"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "unauthenticated"
    );
}

#[tokio::test]
async fn polling_and_streaming_watchers() {
    let agent = Agent::start(AgentOptions::default());
    let dir = scratch(&agent, "watch");
    std::fs::create_dir_all(format!("{dir}/existing")).unwrap();
    let (status, body) = unary(
        &agent,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": dir, "recursive": true, "includeEntry": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["watcherId"].as_str().unwrap().to_string();
    std::fs::write(format!("{dir}/new.txt"), b"x").unwrap();
    std::fs::write(format!("{dir}/existing/inner.txt"), b"x").unwrap();
    std::fs::create_dir(format!("{dir}/later")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(format!("{dir}/later/deep.txt"), b"x").unwrap();
    std::fs::remove_file(format!("{dir}/new.txt")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, events) = unary(
        &agent,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": id}),
    )
    .await;
    let seen: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("new.txt", "EVENT_TYPE_CREATE"),
        ("new.txt", "EVENT_TYPE_WRITE"),
        ("existing/inner.txt", "EVENT_TYPE_CREATE"),
        ("later/deep.txt", "EVENT_TYPE_CREATE"),
        ("new.txt", "EVENT_TYPE_REMOVE"),
    ] {
        assert!(
            seen.iter().any(|(n, t)| n == expected.0 && t == expected.1),
            "{expected:?} missing in {seen:?}"
        );
    }
    let created = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "later")
        .unwrap();
    assert_eq!(created["entry"]["type"], "FILE_TYPE_DIRECTORY");
    let (_, again) = unary(
        &agent,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": id}),
    )
    .await;
    assert_eq!(again, json!({"events": []}), "events are drained");
    // No sleeping: a poll sees everything that completed before it, including files
    // written into a directory created an instant earlier.
    std::fs::create_dir(format!("{dir}/fast")).unwrap();
    std::fs::write(format!("{dir}/fast/quick.txt"), b"q").unwrap();
    let (_, events) = unary(
        &agent,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": id}),
    )
    .await;
    let names: Vec<(&str, &str)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert!(names.contains(&("fast", "EVENT_TYPE_CREATE")), "{names:?}");
    assert!(
        names.contains(&("fast/quick.txt", "EVENT_TYPE_WRITE")),
        "{names:?}"
    );
    let (status, _) = unary(
        &agent,
        "filesystem.Filesystem/RemoveWatcher",
        json!({"watcherId": id}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = unary(
        &agent,
        "filesystem.Filesystem/GetWatcherEvents",
        json!({"watcherId": id}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = unary(
        &agent,
        "filesystem.Filesystem/CreateWatcher",
        json!({"path": format!("{dir}/missing")}),
    )
    .await;
    assert_eq!(status, 404);

    // WatchDir streams start, then events.
    let resp = agent
        .http
        .post(agent.url("/filesystem.Filesystem/WatchDir"))
        .header("content-type", "application/connect+json")
        .header("connect-timeout-ms", "800")
        .body(encode_message(&json!({"path": dir})))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(format!("{dir}/streamed.txt"), b"x").unwrap();
    let frames = decode_all(&resp.bytes().await.unwrap());
    let first: Value = frames[0].parse().unwrap();
    assert_eq!(first, json!({"start": {}}));
    let second: Value = frames[1].parse().unwrap();
    assert_eq!(second["filesystem"]["name"], "streamed.txt");
    assert_eq!(
        frames.last().unwrap().end_stream_result().unwrap_err().code,
        Code::DeadlineExceeded
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn health_envs_metrics() {
    let agent = Agent::start(AgentOptions {
        env_json: Some(r#"{"A":"1"}"#.into()),
        ..Default::default()
    });
    agent.client.health().await.unwrap();
    let envs: Value = agent
        .http
        .get(agent.url("/envs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(envs["A"], "1");
    assert_eq!(envs["E2B_SANDBOX"], "true");
    assert_eq!(envs["E2B_SANDBOX_ID"], "sbxtest");
    let m: Value = agent
        .http
        .get(agent.url("/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in [
        "ts",
        "cpu_count",
        "cpu_used_pct",
        "mem_total",
        "mem_used",
        "mem_cache",
        "mem_total_mib",
        "mem_used_mib",
        "disk_used",
        "disk_total",
    ] {
        assert!(m[key].is_number(), "{key} missing in {m}");
    }
    assert!(m["mem_total"].as_u64().unwrap() > 0 && m["disk_total"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn agent_rss_stays_small() {
    let agent = Agent::start(AgentOptions::default());
    agent.client.health().await.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("idle agent VmRSS: {rss_kib} KiB");
    assert!(rss_kib < 9 * 1024, "idle RSS {rss_kib} KiB");
}
