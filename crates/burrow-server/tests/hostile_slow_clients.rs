//! Slow and stalled clients against a real server (issue 12 item 8): half-sent request heads,
//! trickling connections, the connection cap, idle keep-alive connections (HTTP/1.1 and h2c),
//! a client that never reads its response, and the TLS listener. No sandbox needed.
//!
//! Every wait has a client-side bound, so a server that never closes a connection fails an
//! assertion instead of hanging the test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestEnv, TestServer};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The short bound the tests configure for the timeout under test.
const SHORT: Duration = Duration::from_secs(2);
/// How long a test waits for the server to close a connection before calling it a failure.
const PATIENCE: Duration = Duration::from_secs(12);
/// A bound no test waits for (keeps the other timeouts out of the way).
const LONG: Duration = Duration::from_secs(300);

fn config(dir: &TestEnv) -> burrow_server::ServerConfig {
    burrow_server::ServerConfig {
        http_header_timeout: LONG,
        http_idle_timeout: LONG,
        http_stall_timeout: LONG,
        ..common::config(dir.path())
    }
}

/// Reads (and discards) until EOF or a reset, up to `PATIENCE`; returns the bytes read and when
/// the connection ended, or panics if it stayed open.
async fn wait_closed(mut stream: impl AsyncRead + Unpin, what: &str) -> (usize, Instant) {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection open for {PATIENCE:?}"));
    (total, Instant::now())
}

/// One HTTP/1.1 GET on a fresh connection; the status line, or why there was none in `within`.
async fn get_status(addr: SocketAddr, within: Duration) -> Result<String, String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        tcp.read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.lines().next().unwrap_or_default().to_string())
    };
    tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no response within {within:?}")))
}

/// Sends one keep-alive GET /healthz and reads its complete response (a short JSON body).
async fn keep_alive_request(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let read_response = async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the response");
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                if body.len() >= length {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_response)
        .await
        .expect("a response to the keep-alive request");
}

#[tokio::test]
async fn half_sent_request_head_is_closed_after_the_header_timeout() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_header_timeout: SHORT,
        ..config(&dir)
    })
    .await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let sent = Instant::now();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed) = wait_closed(tcp, "half-sent request head").await;
    let after = closed - sent;
    assert!(
        after >= SHORT - Duration::from_millis(200),
        "closed too early: {after:?}"
    );

    // The server itself is fine.
    assert_eq!(
        get_status(server.addr, PATIENCE).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    server.stop().await;
}

#[tokio::test]
async fn silent_clients_and_half_h2_prefaces_are_closed_after_the_header_timeout() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_header_timeout: SHORT,
        ..config(&dir)
    })
    .await;

    let silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half_preface = TcpStream::connect(server.addr).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let opened = Instant::now();
    let silent = tokio::spawn(wait_closed(silent, "client that sent nothing"));
    let (_, closed) = wait_closed(half_preface, "half HTTP/2 preface").await;
    assert!(closed - opened >= SHORT - Duration::from_millis(200));
    let (_, closed) = silent.await.unwrap();
    assert!(closed - opened >= SHORT - Duration::from_millis(200));
    server.stop().await;
}

#[tokio::test]
async fn trickling_connections_neither_starve_others_nor_stay_open() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_header_timeout: Duration::from_secs(4),
        ..config(&dir)
    })
    .await;

    // 500 clients each send a request head one byte every 200 ms (never finishing in time).
    let opened = Instant::now();
    let mut tricklers = Vec::new();
    for _ in 0..500 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        tricklers.push(tokio::spawn(async move {
            let mut tcp = tcp;
            let head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Trickle: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for byte in head.iter().cycle() {
                if tcp.write_all(&[*byte]).await.is_err() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if opened.elapsed() > PATIENCE * 2 {
                    panic!("a trickling connection was still open after {:?}", PATIENCE * 2);
                }
            }
            unreachable!()
        }));
    }

    // A normal client is served at once meanwhile.
    let started = Instant::now();
    assert_eq!(
        get_status(server.addr, Duration::from_secs(2))
            .await
            .unwrap(),
        "HTTP/1.1 200 OK"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // And the header timeout ends every trickling connection (a write then fails).
    for trickler in tricklers {
        let closed = trickler.await.expect("trickler task");
        assert!(closed - opened < PATIENCE * 2);
    }
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_one_closes() {
    let dir = TestEnv::without_runtime_lock();
    let cap = 4;
    let server = TestServer::start_with(burrow_server::ServerConfig {
        max_connections: cap,
        ..config(&dir)
    })
    .await;

    // `cap` keep-alive connections, each having been served once, so each holds a slot.
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        keep_alive_request(&mut tcp).await;
        held.push(tcp);
    }

    // One more waits in the backlog: no answer while the cap is reached...
    let waiting = tokio::spawn(get_status(server.addr, PATIENCE));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "a connection over the cap was served: {:?}",
        waiting.await
    );

    // ...and it is served as soon as a slot frees up.
    let freed = Instant::now();
    drop(held.pop());
    let status = waiting.await.unwrap().expect("served once a slot is free");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        freed.elapsed() < Duration::from_secs(3),
        "{:?}",
        freed.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_http1_keep_alive_connection_is_closed() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        // HTTP/1.1 waits for the next request head under the header timeout.
        http_header_timeout: SHORT,
        ..config(&dir)
    })
    .await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    keep_alive_request(&mut tcp).await;
    let idle_from = Instant::now();
    let (_, closed) = wait_closed(tcp, "idle HTTP/1.1 keep-alive connection").await;
    assert!(closed - idle_from >= SHORT - Duration::from_millis(200));
    server.stop().await;
}

#[tokio::test]
async fn idle_h2c_connection_is_closed_with_goaway() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_idle_timeout: SHORT,
        ..config(&dir)
    })
    .await;

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get(format!("http://{}/healthz", server.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let idle_from = Instant::now();
    // The client connection ends once the server has sent GOAWAY and closed.
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the server kept an idle h2c connection open")
        .unwrap()
        .ok();
    let after = idle_from.elapsed();
    assert!(
        after >= SHORT - Duration::from_millis(200),
        "closed too early: {after:?}"
    );
    assert!(sender.is_closed() || sender.ready().await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn client_that_never_reads_its_responses_is_dropped() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_stall_timeout: SHORT,
        ..config(&dir)
    })
    .await;
    let document_len = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();

    // Far more response bytes than the socket buffers hold: pipelined requests, never read
    // (a small receive buffer fills up sooner).
    let requests = (256 << 20) / document_len;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.addr).await.unwrap();
    let pipelined = b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(requests);
    // The server stops reading requests once its writes block; that is fine.
    let _ = tokio::time::timeout(SHORT, tcp.write_all(&pipelined)).await;

    // Reading would let the server go on, so watch the socket's TCP state instead: the server's
    // FIN (CLOSE_WAIT) or reset (CLOSE) shows it gave up on the client.
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let state = tcp_state(&tcp);
        if state != TCP_ESTABLISHED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server kept a client that reads nothing for {:?}",
            PATIENCE * 2
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (read, _) = wait_closed(&mut tcp, "client that stopped reading").await;
    assert!(
        read < requests * document_len,
        "all {requests} responses were delivered; the connection was not dropped"
    );
    server.stop().await;
}

/// `TCP_ESTABLISHED` of the kernel's `enum tcp_state` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;

/// The kernel's TCP state of a socket (`TCP_ESTABLISHED`, `TCP_CLOSE_WAIT`, …).
fn tcp_state(tcp: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes, and the fd stays open while `tcp`
    // is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // SAFETY: getsockopt succeeded and filled (a prefix of) the zero-initialised struct.
    unsafe { info.assume_init() }.tcpi_state
}

#[tokio::test]
async fn tls_listener_bounds_handshakes_and_request_heads() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_header_timeout: SHORT,
        tls: Some(burrow_server::TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_and_key: None,
        }),
        ..config(&dir)
    })
    .await;
    let tls_addr = server.tls_addr.expect("HTTPS listener");
    let ca_pem = std::fs::read(server.data_dir.join("tls/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = ServerName::try_from("api.burrow.test").unwrap();

    // A client that opens TCP and never sends a ClientHello...
    let silent = TcpStream::connect(tls_addr).await.unwrap();
    let silent_from = Instant::now();
    let silent = tokio::spawn(async move { wait_closed(silent, "silent TLS client").await });
    // ...and one that completes the handshake but sends half a request head.
    let mut half = connector
        .connect(name.clone(), TcpStream::connect(tls_addr).await.unwrap())
        .await
        .unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let half_from = Instant::now();
    let half = tokio::spawn(async move { wait_closed(half, "half-sent HTTPS request").await });

    // Meanwhile another client is served at once.
    let exchange = async {
        let tcp = TcpStream::connect(tls_addr).await.unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        let _ = tls.read_to_string(&mut response).await;
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .expect("stalled TLS clients must not hold up others");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let (_, closed) = silent.await.unwrap();
    assert!(closed - silent_from >= SHORT - Duration::from_millis(200));
    let (_, closed) = half.await.unwrap();
    assert!(closed - half_from >= SHORT - Duration::from_millis(200));
    server.stop().await;
}

#[tokio::test]
async fn request_body_that_stops_half_way_is_answered_and_closed() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_stall_timeout: SHORT,
        ..config(&dir)
    })
    .await;

    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"template\":",
        server.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let sent = Instant::now();
    let mut response = Vec::new();
    let read_all = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut response)).await;
    let after = sent.elapsed();
    assert!(
        read_all.is_ok(),
        "the server kept waiting for the rest of the body for {PATIENCE:?}"
    );
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("no request body data"), "{response}");
    assert!(
        after >= SHORT - Duration::from_millis(200),
        "answered too early: {after:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn h2_client_that_keeps_its_window_closed_is_dropped() {
    let dir = TestEnv::without_runtime_lock();
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_idle_timeout: SHORT,
        http_stall_timeout: SHORT,
        ..config(&dir)
    })
    .await;

    // A 1 KiB stream window the client never reopens: it does not read the body.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(1024)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = http::Request::get(format!("http://{}/openapi.json", server.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let stalled_from = Instant::now();
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(
        ended.is_ok(),
        "the server kept a connection whose client reads nothing open for {PATIENCE:?}"
    );
    assert!(stalled_from.elapsed() >= SHORT - Duration::from_millis(200));
    drop(response);
    server.stop().await;
}

#[tokio::test]
async fn h2_client_that_stops_taking_an_exec_stream_is_dropped() {
    let dir = TestEnv::new();
    if !common::install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_stall_timeout: SHORT,
        ..config(&dir)
    })
    .await;
    let created = server
        .post("/v1/sandboxes")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The stream stays open (the command runs for minutes) while the client keeps its 1 KiB
    // window closed: the socket never stalls, only the stream does.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(1024)
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let body = serde_json::json!({"command": "yes | head -c 1000000000"}).to_string();
    let request = http::Request::post(format!("http://{}/v1/sandboxes/{id}/exec", server.addr))
        .header("authorization", format!("Bearer {}", server.key))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let stalled_from = Instant::now();
    let ended = tokio::time::timeout(PATIENCE, conn).await;
    assert!(
        ended.is_ok(),
        "the server kept streaming to a client that takes nothing for {PATIENCE:?}"
    );
    assert!(stalled_from.elapsed() >= SHORT - Duration::from_millis(200));
    drop(response);

    let deleted = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    server.stop().await;
}

#[tokio::test]
async fn websocket_client_that_stops_reading_is_dropped() {
    let dir = TestEnv::new();
    if !common::install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start_with(burrow_server::ServerConfig {
        http_stall_timeout: SHORT,
        ..config(&dir)
    })
    .await;
    let created = server
        .post("/v1/sandboxes")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A shell that prints without end to a client that reads none of it: after the upgrade only
    // the connection's IO bound can notice.
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/v1/sandboxes/{id}/pty?cols=80&rows=24", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.key).parse().unwrap(),
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::binary(
        b"yes\n".to_vec(),
    ))
    .await
    .unwrap();
    // The server's FIN would queue behind the unread output, so the client pings now and then:
    // a socket the server has closed answers that with a reset.
    let deadline = Instant::now() + PATIENCE * 2;
    while tcp_state(ws.get_ref()) == TCP_ESTABLISHED {
        assert!(
            Instant::now() < deadline,
            "the server kept a WebSocket whose client reads nothing for {:?}",
            PATIENCE * 2
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ping = tokio_tungstenite::tungstenite::Message::Ping(bytes::Bytes::from_static(b"?"));
        if tokio::time::timeout(Duration::from_secs(1), ws.send(ping))
            .await
            .is_ok_and(|sent| sent.is_err())
        {
            break;
        }
    }
    drop(ws);

    let deleted = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    server.stop().await;
}
