//! The daemon's envd client reads answers from an agent inside a sandbox, which a sandbox's
//! root can replace with anything listening on the agent's port. These tests put a hostile
//! HTTP server on loopback in the agent's place: response bodies are read up to a bound (never
//! buffered whole), and whatever arrives in arbitrary chunks within the bound parses as sent.
//!
//! Bounded: 32 exchanges for the property (`PROPTEST_CASES` overrides).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burrow_envd::connect::MAX_MESSAGE_BYTES;
use burrow_envd::{EnvdClient, EnvdError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a fake agent answers every request.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// `Some(n)`: a Content-Length of n (possibly a lie); `None`: chunked.
    content_length: Option<u64>,
    /// The body, sent in these chunks.
    chunks: Vec<Vec<u8>>,
    /// After the chunks, this many filler spaces (JSON whitespace), in 1 MiB writes.
    filler_after: u64,
}

async fn read_request_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    // The requests these tests make carry small bodies with a Content-Length.
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body).await;
}

/// Serves `answer` on every connection; counts the body bytes it managed to write.
async fn fake_agent(answer: Answer) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                read_request_head(&mut stream).await;
                let framing = match answer.content_length {
                    Some(n) => format!("Content-Length: {n}"),
                    None => "Transfer-Encoding: chunked".to_string(),
                };
                let head = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\n{framing}\r\n\r\n",
                    answer.status
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunked = answer.content_length.is_none();
                let filler = vec![b' '; 1 << 20];
                let mut left = answer.filler_after;
                let pieces = answer
                    .chunks
                    .iter()
                    .map(Vec::as_slice)
                    .chain(std::iter::from_fn(|| {
                        let n = left.min(filler.len() as u64) as usize;
                        left -= n as u64;
                        (n > 0).then(|| &filler[..n])
                    }));
                for piece in pieces {
                    if piece.is_empty() {
                        continue;
                    }
                    let result = if chunked {
                        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                        framed.extend_from_slice(piece);
                        framed.extend_from_slice(b"\r\n");
                        stream.write_all(&framed).await
                    } else {
                        stream.write_all(piece).await
                    };
                    if result.is_err() {
                        return;
                    }
                    counter.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
                if chunked {
                    let _ = stream.write_all(b"0\r\n\r\n").await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, written)
}

/// A body far over the limit (4× the 16 MiB message limit, then valid JSON): the client gives
/// up with a protocol error instead of buffering it, on the success path and the error path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_are_refused_not_buffered() {
    let over = 4 * MAX_MESSAGE_BYTES as u64;
    for status in [200, 500] {
        let (addr, written) = fake_agent(Answer {
            status,
            content_length: None,
            chunks: vec![b"{".to_vec()],
            filler_after: over,
        })
        .await;
        // ... and the JSON closes only after the filler: a client that buffers everything
        // would parse it successfully.
        let client = EnvdClient::new(addr, None).unwrap();
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(60), client.list())
            .await
            .expect("bounded time");
        let err = result.expect_err("an oversized answer must fail");
        assert!(
            matches!(err, EnvdError::Protocol(_)) || status == 500,
            "{err:?}"
        );
        assert!(err.to_string().contains("limit") || status == 500, "{err}");
        // The fake agent could write little more than the limit (plus socket buffers) before
        // the client stopped reading.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = written.load(Ordering::Relaxed);
        assert!(
            sent < over,
            "the client read all {sent} bytes of a {over}-byte answer (status {status})"
        );
        eprintln!(
            "status {status}: refused after {sent} bytes in {:?}",
            started.elapsed()
        );
    }
    // A Content-Length over the limit is refused before reading the body.
    let (addr, _) = fake_agent(Answer {
        status: 200,
        content_length: Some(1 << 40),
        chunks: vec![b"{}".to_vec()],
        filler_after: 0,
    })
    .await;
    let err = EnvdClient::new(addr, None)
        .unwrap()
        .list()
        .await
        .unwrap_err();
    assert!(matches!(err, EnvdError::Protocol(_)), "{err:?}");
}

/// Valid answers within the limit, cut into arbitrary chunks, chunked or with a length: they
/// parse exactly as sent.
#[test]
fn answers_within_the_limit_parse_however_chunked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec((1u32..100_000, "[a-z /._-]{0,40}"), 0..20),
        prop::collection::vec(any::<usize>(), 0..8),
        any::<bool>(),
        0usize..100_000,
    );
    runner
        .run(&strategy, |(processes, cuts, chunked, padding)| {
            let list: Vec<serde_json::Value> = processes
                .iter()
                .map(|(pid, cmd)| {
                    serde_json::json!({"pid": pid, "config": {"cmd": cmd, "args": [], "envs": {}}})
                })
                .collect();
            let mut body = serde_json::json!({ "processes": list })
                .to_string()
                .into_bytes();
            body.extend(std::iter::repeat_n(b' ', padding));
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            points.extend([0, body.len()]);
            points.sort_unstable();
            points.dedup();
            let chunks = points
                .windows(2)
                .map(|w| body[w[0]..w[1]].to_vec())
                .collect();
            let answer = Answer {
                status: 200,
                content_length: (!chunked).then_some(body.len() as u64),
                chunks,
                filler_after: 0,
            };
            let got = rt.block_on(async {
                let (addr, _) = fake_agent(answer).await;
                EnvdClient::new(addr, None).unwrap().list().await
            });
            let got = got.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let pids: Vec<u32> = got.iter().map(|p| p.pid).collect();
            let expected: Vec<u32> = processes.iter().map(|(pid, _)| *pid).collect();
            prop_assert_eq!(pids, expected);
            Ok(())
        })
        .unwrap();
}
