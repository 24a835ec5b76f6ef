//! Property tests of the agent's Connect-RPC request parsing, against the real agent over real
//! HTTP: whatever a client sends (framing, JSON, content type, deadline header), the agent
//! answers a well-formed Connect response and keeps serving.
//!
//! Bounded: 48 cases per property (each is an HTTP exchange); `PROPTEST_CASES=10000` for a longer
//! local run.

mod common;

use burrow_envd::connect::{Code, ConnectError, EnvelopeDecoder, Frame, encode_envelope};
use bytes::Bytes;
use common::{Agent, AgentOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

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

/// A JSON value shaped like a request message: an object whose keys are mostly the ones envd
/// messages use, with arbitrary values.
fn json_message() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z/._~-]{0,12}".prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        Just("path".to_string()),
        Just("recursive".to_string()),
        Just("depth".to_string()),
        Just("pid".to_string()),
        ".{0,8}".prop_map(String::from),
    ];
    prop_oneof![
        prop::collection::btree_map(key, value.clone(), 0..4)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        value,
    ]
}

/// A payload: JSON (valid UTF-8) or raw bytes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_message().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// A request body: envelopes with arbitrary flags and payloads, optionally a raw length field
/// (possibly huge), optionally trailing junk.
#[derive(Debug, Clone)]
struct StreamBody {
    frames: Vec<(u8, Vec<u8>)>,
    raw_header: Option<(u8, u32)>,
    trailing: Vec<u8>,
    cuts: Vec<usize>,
}

impl StreamBody {
    fn bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (flags, payload) in &self.frames {
            body.extend_from_slice(&encode_envelope(*flags, payload));
        }
        if let Some((flags, len)) = self.raw_header {
            body.push(flags);
            body.extend_from_slice(&len.to_be_bytes());
        }
        body.extend_from_slice(&self.trailing);
        body
    }

    /// True if the framing alone makes this an invalid server-streaming request: anything but
    /// exactly one complete data frame (no end-stream or compressed flag) and nothing else.
    fn framing_is_invalid(&self) -> bool {
        let body = self.bytes();
        let mut decoder = EnvelopeDecoder::new();
        decoder.push(&body);
        let mut frames = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return true,
            }
        }
        decoder.finish().is_err() || frames.len() != 1 || frames[0].flags & 0x03 != 0
    }
}

fn stream_body() -> impl Strategy<Value = StreamBody> {
    (
        prop::collection::vec(
            (
                prop_oneof![4 => Just(0u8), 1 => Just(2u8), 1 => Just(1u8), 1 => any::<u8>()],
                payload(),
            ),
            0..3,
        ),
        prop::option::weighted(0.2, (any::<u8>(), any::<u32>())),
        prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 0..16)],
        prop::collection::vec(any::<usize>(), 0..6),
    )
        .prop_map(|(frames, raw_header, trailing, cuts)| StreamBody {
            frames,
            raw_header,
            trailing,
            cuts,
        })
}

/// `body` as the request body: whole (with a Content-Length) if `cuts` is empty, else streamed
/// (chunked transfer encoding) in chunks cut at `cuts`.
fn request_body(body: Vec<u8>, cuts: &[usize]) -> reqwest::Body {
    if cuts.is_empty() {
        return reqwest::Body::from(body);
    }
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.extend([0, body.len()]);
    points.sort_unstable();
    points.dedup();
    let chunks: Vec<Result<Bytes, std::io::Error>> = points
        .windows(2)
        .map(|w| Ok(Bytes::copy_from_slice(&body[w[0]..w[1]])))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// Decodes a whole Connect stream response: it must frame cleanly and end with exactly one
/// end-stream frame. Returns the end-stream frame's result.
fn parse_stream_response(body: &[u8]) -> Result<Result<(), ConnectError>, String> {
    let mut decoder = EnvelopeDecoder::new();
    decoder.push(body);
    let mut frames: Vec<Frame> = Vec::new();
    while let Some(frame) = decoder
        .next_frame()
        .map_err(|e| format!("bad framing: {e}"))?
    {
        frames.push(frame);
    }
    decoder
        .finish()
        .map_err(|e| format!("response ends inside a frame: {e}"))?;
    let Some((last, data)) = frames.split_last() else {
        return Err("empty stream response".into());
    };
    if !last.is_end_stream() {
        return Err("stream response has no end-stream frame".into());
    }
    for frame in data {
        if frame.is_end_stream() {
            return Err("end-stream frame before the end".into());
        }
        frame
            .parse::<serde_json::Value>()
            .map_err(|e| format!("data frame is not JSON: {e}"))?;
    }
    Ok(last.end_stream_result())
}

const STREAM_CONTENT_TYPES: &[&str] = &[
    "application/connect+json",
    "application/connect+json; charset=utf-8",
    "application/connect+proto",
    "application/json",
    "",
];

/// Server-streaming calls: the request's single enveloped message is parsed from whatever the
/// client sends, split at arbitrary chunk boundaries. The answer is always a well-formed Connect
/// stream (HTTP 200, clean framing, one end-stream frame last), and a request whose framing is
/// invalid always ends in an error of the right kind.
#[test]
fn stream_requests_get_well_formed_streams() {
    let agent = Agent::start(AgentOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(config(48));
    let strategy = (stream_body(), prop::sample::select(STREAM_CONTENT_TYPES));
    runner
        .run(&strategy, |(body, content_type)| {
            let (status, response) = rt.block_on(async {
                let response = agent
                    .http
                    .post(agent.url("/filesystem.Filesystem/WatchDir"))
                    .header("content-type", content_type)
                    // A valid request for an existing dir watches until this deadline.
                    .header("connect-timeout-ms", "300")
                    .body(request_body(body.bytes(), &body.cuts))
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .expect("agent answers");
                let status = response.status().as_u16();
                (status, response.bytes().await.expect("response body"))
            });
            prop_assert_eq!(status, 200, "Connect streams report errors in the stream");
            let result = parse_stream_response(&response)
                .map_err(|e| TestCaseError::fail(format!("{e}: {response:?}")))?;
            let stream_type = content_type.starts_with("application/connect+json");
            if !stream_type {
                prop_assert_eq!(result.unwrap_err().code, Code::Unimplemented);
            } else if body.framing_is_invalid() {
                let code = result.expect_err("invalid framing must fail").code;
                prop_assert!(
                    matches!(
                        code,
                        Code::InvalidArgument | Code::ResourceExhausted | Code::Unimplemented
                    ),
                    "unexpected code {code:?}"
                );
            }
            Ok(())
        })
        .unwrap();
    // Still serving after all of that.
    rt.block_on(agent.client.health()).unwrap();
}

/// A `StreamInput` message: `start` (for a process that does not exist), `data`, `keepalive`,
/// or anything else.
fn stream_input_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<u32>().prop_map(|pid| {
            serde_json::json!({"start": {"process": {"pid": pid}}})
                .to_string()
                .into_bytes()
        }),
        "[A-Za-z0-9+/=]{0,12}".prop_map(|b64| {
            serde_json::json!({"data": {"input": {"stdin": b64}}})
                .to_string()
                .into_bytes()
        }),
        Just(br#"{"keepalive":{}}"#.to_vec()),
        payload(),
    ]
}

/// Client-streaming `StreamInput`: any sequence of messages (with arbitrary flags), streamed in
/// arbitrary chunks, gets a well-formed Connect stream answer; it never reaches a process.
#[test]
fn client_streams_get_well_formed_answers() {
    let agent = Agent::start(AgentOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(config(48));
    let strategy = (
        prop::collection::vec(
            (
                prop_oneof![6 => Just(0u8), 1 => Just(2u8), 1 => any::<u8>()],
                stream_input_message(),
            ),
            0..5,
        ),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::collection::vec(any::<usize>(), 0..6),
    );
    runner
        .run(&strategy, |(frames, trailing, cuts)| {
            let mut body = Vec::new();
            for (flags, payload) in &frames {
                body.extend_from_slice(&encode_envelope(*flags, payload));
            }
            body.extend_from_slice(&trailing);
            let (status, response) = rt.block_on(async {
                let response = agent
                    .http
                    .post(agent.url("/process.Process/StreamInput"))
                    .header("content-type", "application/connect+json")
                    .header("connect-timeout-ms", "2000")
                    .body(request_body(body, &cuts))
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .expect("agent answers");
                let status = response.status().as_u16();
                (status, response.bytes().await.expect("response body"))
            });
            prop_assert_eq!(status, 200);
            let result = parse_stream_response(&response)
                .map_err(|e| TestCaseError::fail(format!("{e}: {response:?}")))?;
            // No process exists, so a `start` that parses can only fail with not_found.
            if let Err(e) = &result {
                prop_assert!(
                    matches!(
                        e.code,
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::ResourceExhausted
                            | Code::Unimplemented
                    ),
                    "{e:?}"
                );
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(agent.client.health()).unwrap();
}

const UNARY_CONTENT_TYPES: &[&str] = &["application/json", "", "application/proto", "text/plain"];
const UNARY_PROCEDURES: &[&str] = &[
    "filesystem.Filesystem/Stat",
    "process.Process/List",
    "filesystem.Filesystem/GetWatcherEvents",
    "nope.Nope/Nothing",
];

/// Unary calls with arbitrary bodies (whole or streamed in chunks), content types and
/// `Connect-Timeout-Ms` headers: the answer is JSON, either a 200 message or a Connect error whose code maps to the HTTP status.
#[test]
fn unary_requests_answer_json_with_a_consistent_status() {
    let agent = Agent::start(AgentOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(config(64));
    let timeout_header = prop::option::of(prop_oneof![
        "[0-9]{1,12}".prop_map(String::from),
        "[ -~]{0,12}".prop_map(String::from),
    ]);
    let strategy = (
        payload(),
        prop::sample::select(UNARY_CONTENT_TYPES),
        prop::sample::select(UNARY_PROCEDURES),
        timeout_header,
        prop::collection::vec(any::<usize>(), 0..4),
    );
    runner
        .run(
            &strategy,
            |(body, content_type, procedure, timeout, cuts)| {
                let (status, response) = rt.block_on(async {
                    let mut request = agent
                        .http
                        .post(agent.url(&format!("/{procedure}")))
                        .header("content-type", content_type)
                        .body(request_body(body.clone(), &cuts))
                        .timeout(std::time::Duration::from_secs(10));
                    if let Some(timeout) = &timeout {
                        request = request.header("connect-timeout-ms", timeout.as_str());
                    }
                    let response = request.send().await.expect("agent answers");
                    let status = response.status().as_u16();
                    (status, response.bytes().await.expect("response body"))
                });
                let timeout_ok = timeout.as_deref().is_none_or(|t| {
                    t.trim()
                        .parse::<u64>()
                        .is_ok_and(|ms| ms > 0 && ms < 10_000_000_000)
                });
                if status == 200 {
                    prop_assert!(timeout_ok, "a bad Connect-Timeout-Ms was accepted");
                    serde_json::from_slice::<serde_json::Value>(&response)
                        .map_err(|e| TestCaseError::fail(format!("200 without JSON: {e}")))?;
                } else {
                    let error: ConnectError = serde_json::from_slice(&response).map_err(|e| {
                        TestCaseError::fail(format!(
                            "{status} without a Connect error body ({e}): {response:?}"
                        ))
                    })?;
                    prop_assert_eq!(error.code.http_status(), status, "{:?}", error);
                    prop_assert!(
                        status < 500 || error.code == Code::Unimplemented,
                        "server error for client input: {:?}",
                        error
                    );
                    if !timeout_ok {
                        prop_assert_eq!(error.code, Code::InvalidArgument);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    rt.block_on(agent.client.health()).unwrap();
}
