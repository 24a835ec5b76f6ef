//! The server against the real `burrow-agent` binary running on the host (on a private loopback
//! address) instead of inside a sandbox: exercises exec, files, PTY, tunnel and proxy end to end
//! through real HTTP, without needing the runtime. The sandbox row is inserted into the server's
//! real database the way `create` would leave it.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use burrow_runtime::SandboxHandle;
use burrow_store::{SandboxRecord, Store};
use common::{TestServer, expect_error};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "test-access-token";

struct HostAgent {
    _child: tokio::process::Child,
    ip: Ipv4Addr,
    id: String,
}

fn agent_binary() -> Option<PathBuf> {
    let path = std::env::var("BURROW_TEST_BURROW_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/burrow-agent")
        });
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} not built (cargo build -p burrow-agent)",
            path.display()
        );
        None
    }
}

/// Starts the agent on a random 127.x.y.z:49983 and registers it as a running sandbox.
async fn start_agent(server: &TestServer) -> Option<HostAgent> {
    let binary = agent_binary()?;
    // Unique per test process and per agent, so parallel tests never share an address.
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let ip = Ipv4Addr::new(
        127,
        91 + (pid >> 16) as u8 % 64,
        (pid >> 8) as u8,
        pid as u8 ^ n,
    );
    let id = format!("ihost{}", hex::encode(ip.octets()));
    let child = tokio::process::Command::new(binary)
        .env("BURROW_LISTEN", format!("{ip}:49983"))
        .env("BURROW_ACCESS_TOKEN", TOKEN)
        .env("BURROW_DEFAULT_USER", "root")
        .env("BURROW_SANDBOX_ID", &id)
        .env("BURROW_TEMPLATE", "base")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    let addr = SocketAddr::from((ip, 49983));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "agent did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = Store::open(&server.data_dir.join("burrow.db"))
        .await
        .unwrap();
    let mut rec = SandboxRecord::new_creating(id.clone(), "base".into());
    rec.access_token = Some(TOKEN.into());
    store.insert_sandbox(&rec).await.unwrap();
    let handle = SandboxHandle {
        id: id.clone(),
        slot: 0,
        uid_base: 0,
        ip,
        init_pid: child.id().unwrap() as i32,
        init_start_time: start_time(child.id().unwrap()),
    };
    store
        .mark_sandbox_running(
            &id,
            &serde_json::to_string(&handle).unwrap(),
            &ip.to_string(),
        )
        .await
        .unwrap();
    Some(HostAgent {
        _child: child,
        ip,
        id,
    })
}

/// Field 22 of /proc/<pid>/stat, which the runtime checks so a recycled pid never passes as alive.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(19).unwrap().parse().unwrap()
}

/// Runs an exec and returns its NDJSON events.
async fn exec(server: &TestServer, id: &str, body: Value) -> Vec<Value> {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn output(events: &[Value], kind: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes: Vec<u8> = events
        .iter()
        .filter(|e| e["type"] == kind)
        .flat_map(|e| b64.decode(e["data"].as_str().unwrap()).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn exec_streams_output_and_exit_status() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let id = &agent.id;

    let events = exec(
        &server,
        id,
        json!({"command": "echo out; echo err >&2; exit 3"}),
    )
    .await;
    assert_eq!(events[0]["type"], "start", "{events:?}");
    assert!(events[0]["pid"].as_u64().unwrap() > 0);
    assert_eq!(output(&events, "stdout"), "out\n");
    assert_eq!(output(&events, "stderr"), "err\n");
    assert_eq!(
        events.last().unwrap(),
        &json!({"type": "exit", "exit_code": 3})
    );

    let events = exec(&server, id, json!({"cmd": ["cat"], "stdin": "piped\n"})).await;
    assert_eq!(output(&events, "stdout"), "piped\n");
    let events = exec(&server, id, json!({"cmd": ["cat"], "stdin_base64": "AAEC"})).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(events[1]["data"], b64.encode([0u8, 1, 2]));

    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let events = exec(
        &server,
        id,
        json!({"cmd": ["sh", "-c", "echo $FOO; pwd"], "env": {"FOO": "bar"}, "cwd": work}),
    )
    .await;
    assert_eq!(
        output(&events, "stdout"),
        format!("bar\n{}\n", work.display())
    );

    // Output is streamed as it is produced, not buffered until exit.
    let started = Instant::now();
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo first; sleep 1; echo second"}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"stdout\"") {
        seen.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "first line came late: {:?}",
        started.elapsed()
    );
    while let Some(chunk) = body.next().await {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(seen.contains("\"exit_code\":0"), "{seen}");

    // A command that cannot start is an HTTP error, not a stream.
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"cmd": ["/nonexistent/program"]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(
        status >= 400 || text.contains("\"exit_code\":127") || text.contains("\"type\":\"error\""),
        "{status} {text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn disconnecting_kills_the_process() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let marker = dir.path().join("marker");
    let resp = server
        .post(&format!("/v1/sandboxes/{}/exec", agent.id))
        .json(&json!({"command": format!("echo go; sleep 1.5; touch {}", marker.display())}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"stdout\"") {
        seen.push_str(std::str::from_utf8(&body.next().await.unwrap().unwrap()).unwrap());
    }
    drop(body);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!marker.exists(), "the process outlived its client");
    server.stop().await;
}

#[tokio::test]
async fn files_round_trip_with_limits_and_errors() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let id = &agent.id;
    let root = dir.path().join("files");
    let file = root.join("sub/dir/data.bin");
    let q = |p: &std::path::Path| format!("path={}", url_encode(&p.display().to_string()));

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let resp = server
        .put(&format!("/v1/sandboxes/{id}/files?{}", q(&file)))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let entry: Value = resp.json().await.unwrap();
    assert_eq!(entry["type"], "file");
    assert_eq!(entry["size"], data.len());
    assert_eq!(std::fs::read(&file).unwrap(), data);

    let resp = server
        .get(&format!("/v1/sandboxes/{id}/files?{}", q(&file)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);

    let list: Vec<Value> = server
        .get(&format!(
            "/v1/sandboxes/{id}/files/list?{}&depth=2",
            q(&root.join("sub"))
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"dir") && names.contains(&"data.bin"),
        "{list:?}"
    );

    let made = root.join("new/deep");
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/files/mkdir?{}", q(&made)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(made.is_dir());
    let again = server
        .post(&format!("/v1/sandboxes/{id}/files/mkdir?{}", q(&made)))
        .send()
        .await
        .unwrap();
    expect_error(again, 409, "file_exists").await;

    // Over the 1 MiB limit of the test server: declared, and streamed without a length.
    let big = vec![0u8; (1 << 20) + 1];
    let resp = server
        .put(&format!(
            "/v1/sandboxes/{id}/files?{}",
            q(&root.join("big"))
        ))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    expect_error(resp, 413, "payload_too_large").await;
    let chunks = futures::stream::iter(
        big.chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = server
        .put(&format!(
            "/v1/sandboxes/{id}/files?{}",
            q(&root.join("big2"))
        ))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(resp, 413, "payload_too_large").await;
    assert!(
        !root.join("big2").exists(),
        "a partial upload was left behind"
    );
    assert!(!root.join("big").exists());

    let resp = server
        .delete(&format!(
            "/v1/sandboxes/{id}/files?{}",
            q(&root.join("sub"))
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(!file.exists());
    let gone = server
        .get(&format!("/v1/sandboxes/{id}/files?{}", q(&file)))
        .send()
        .await
        .unwrap();
    expect_error(gone, 404, "file_not_found").await;
    let bad_user = server
        .get(&format!(
            "/v1/sandboxes/{id}/files?{}&user=no%2Fbody",
            q(&file)
        ))
        .send()
        .await
        .unwrap();
    expect_error(bad_user, 400, "invalid_request").await;
    server.stop().await;
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn proxy_reaches_the_agent_and_reports_closed_ports() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let id = &agent.id;
    let host = format!("49983-{id}.burrow.test");

    let health = server
        .http
        .get(server.url("/health"))
        .header("Host", &host)
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success(), "{}", health.status());
    let envs = server
        .http
        .get(server.url("/envs"))
        .header("Host", &host)
        .header("X-Access-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(envs.status(), 200);
    let envs: Value = envs.json().await.unwrap();
    assert_eq!(envs["E2B_SANDBOX_ID"], id.as_str());
    let no_token = server
        .http
        .get(server.url("/envs"))
        .header("Host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_token.status(),
        401,
        "the agent's own token check applies through the proxy"
    );

    let by_headers = server
        .http
        .get(server.url("/envs"))
        .header("E2b-Sandbox-Id", id.as_str())
        .header("E2b-Sandbox-Port", "49983")
        .header("X-Access-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(by_headers.status(), 200);

    // An h2 (prior knowledge) client: the host comes from :authority, upstream is HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve(&host, server.addr)
        .build()
        .unwrap();
    let resp = h2
        .get(format!("http://{host}:{}/envs", server.addr.port()))
        .header("X-Access-Token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let envs: Value = resp.json().await.unwrap();
    assert_eq!(envs["E2B_SANDBOX_ID"], id.as_str());

    let closed = server
        .http
        .get(server.url("/"))
        .header("Host", format!("1-{id}.burrow.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 502);
    let body: Value = closed.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sandboxId": id, "message": "The sandbox is running but port is not open", "port": 1, "code": 502})
    );
    server.stop().await;
}

/// A WebSocket echo server on the agent's IP, standing in for a user's service in the sandbox.
async fn websocket_echo(ip: Ipv4Addr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn proxy_passes_websocket_upgrades_through() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let port = websocket_echo(agent.ip).await;
    let mut request = format!("ws://{}/socket", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "host",
        format!("{port}-{}.burrow.test", agent.id).parse().unwrap(),
    );
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    ws.send(Message::text("hello through the proxy"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "hello through the proxy"
    );
    server.stop().await;
}

#[tokio::test]
async fn tunnel_splices_raw_tcp() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let listener = TcpListener::bind((agent.ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.unwrap();
        conn.write_all(&buf[..n].to_ascii_uppercase())
            .await
            .unwrap();
    });

    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /v1/sandboxes/{}/ports/{port}/tunnel HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
        agent.id, server.key
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await.unwrap();
        response.push(byte[0]);
    }
    let response = String::from_utf8(response).unwrap();
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    conn.write_all(b"ping").await.unwrap();
    let mut reply = [0u8; 4];
    conn.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"PING");

    // A closed port is refused before switching protocols.
    let closed = server
        .get(&format!("/v1/sandboxes/{}/ports/1/tunnel", agent.id))
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .send()
        .await
        .unwrap();
    expect_error(closed, 502, "agent_error").await;
    server.stop().await;
}

#[tokio::test]
async fn pty_websocket_runs_an_interactive_shell() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let mut request = format!(
        "ws://{}/v1/sandboxes/{}/pty?cols=100&rows=30",
        server.addr, agent.id
    )
    .into_client_request()
    .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.key).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::binary(
        b"echo marker-$((40+2)); stty size\n".to_vec(),
    ))
    .await
    .unwrap();
    let mut screen = Vec::new();
    // Reads binary frames into `screen` until `until` appears; returns a text frame if one comes.
    async fn read_until(
        ws: &mut (
                 impl futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
                 + Unpin
             ),
        screen: &mut Vec<u8>,
        until: &str,
    ) -> Option<String> {
        let read = async {
            while let Some(msg) = ws.next().await {
                match msg.unwrap() {
                    Message::Binary(data) => {
                        screen.extend_from_slice(&data);
                        if !until.is_empty() && String::from_utf8_lossy(screen).contains(until) {
                            return None;
                        }
                    }
                    Message::Text(text) => return Some(text.to_string()),
                    Message::Close(_) => return None,
                    _ => {}
                }
            }
            None
        };
        match tokio::time::timeout(Duration::from_secs(20), read).await {
            Ok(text) => text,
            Err(_) => panic!(
                "no {until:?} in time; screen: {}",
                String::from_utf8_lossy(screen)
            ),
        }
    }
    read_until(&mut ws, &mut screen, "30 100").await;
    ws.send(Message::text(r#"{"resize":{"cols":120,"rows":40}}"#))
        .await
        .unwrap();
    ws.send(Message::binary(b"stty size; exit 7\n".to_vec()))
        .await
        .unwrap();
    let exit = read_until(&mut ws, &mut screen, "").await;
    let screen = String::from_utf8_lossy(&screen);
    assert!(screen.contains("marker-42"), "{screen}");
    assert!(screen.contains("30 100"), "pty size not applied: {screen}");
    assert!(screen.contains("40 120"), "resize not applied: {screen}");
    assert_eq!(exit.as_deref(), Some(r#"{"exit":{"exit_code":7}}"#));
    server.stop().await;
}

#[tokio::test]
async fn deleted_sandbox_is_gone_everywhere() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let id = &agent.id;
    let got: Value = server
        .get(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["state"], "running");
    assert_eq!(got["ip"], agent.ip.to_string());
    let resp = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    expect_error(
        server
            .get(&format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        "sandbox_not_found",
    )
    .await;
    let proxied = server
        .http
        .get(server.url("/health"))
        .header("Host", format!("49983-{id}.burrow.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 502);
    assert!(proxied.text().await.unwrap().contains("was not found"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_open_streams() {
    let dir = common::TestEnv::new();
    let server = TestServer::start(dir.path()).await;
    let Some(agent) = start_agent(&server).await else {
        return;
    };
    let resp = server
        .post(&format!("/v1/sandboxes/{}/exec", agent.id))
        .json(&json!({"command": "echo up; sleep 60"}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took >= burrow_server::SHUTDOWN_GRACE
            && took < burrow_server::SHUTDOWN_GRACE + Duration::from_secs(3),
        "shutdown took {took:?}"
    );
    drop(body);
}
