//! Property tests of `POST /files` multipart uploads (multer), against the real agent over real
//! HTTP: random bodies and boundaries never get a server error and never write anywhere but the
//! upload's target; each part's filename lands exactly where path resolution says, and nowhere
//! else.
//!
//! The agent here runs on the host as root (see `common`), so every generated target stays
//! inside a scratch dir by construction: `..` components never outnumber the scratch prefix's
//! depth. Inside a sandbox the sandbox's root is the boundary (docs/envd.md).
//!
//! Bounded: 48 cases per property by default; `PROPTEST_CASES=10000` for a longer local run.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{Agent, AgentOptions, scratch};
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

/// Every file (not dir) under `root`.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            } else {
                out.insert(path);
            }
        }
    }
    out
}

/// Lexical normalisation as the agent documents it (`.`/`..`/`//`), for the expected targets.
fn normalize(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            name => out.push(name),
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Part {
    name: String,
    filename: Option<String>,
    data: Vec<u8>,
}

fn multipart_body(boundary: &str, parts: &[Part], epilogue: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let filename = part
            .filename
            .as_ref()
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        body.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"{filename}\r\nContent-Type: application/octet-stream\r\n\r\n",
                part.name
            )
            .as_bytes(),
        );
        body.extend_from_slice(&part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body.extend_from_slice(epilogue);
    body
}

fn boundary() -> impl Strategy<Value = String> {
    "[A-Za-z0-9'()+_,./:=?-]{1,70}".prop_map(String::from)
}

/// A random upload: structured parts (file or other fields) with random data, then optionally
/// corrupted by overwriting a byte range with random bytes; the header's boundary is usually
/// the body's.
#[derive(Debug, Clone)]
struct Upload {
    header_boundary: String,
    body: Vec<u8>,
}

fn upload() -> impl Strategy<Value = Upload> {
    let part = (
        prop_oneof![3 => Just("file".to_string()), 1 => "[a-z]{0,6}".prop_map(String::from)],
        prop::option::of("[a-z.]{0,10}".prop_map(String::from)),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(name, filename, data)| Part {
            name,
            filename,
            data,
        });
    (
        boundary(),
        prop::option::weighted(0.2, boundary()),
        prop::collection::vec(part, 0..4),
        prop::option::weighted(
            0.5,
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40)),
        ),
        prop::option::weighted(0.2, any::<usize>()),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(boundary, other_boundary, parts, corruption, cut, epilogue)| {
                let mut body = multipart_body(&boundary, &parts, &epilogue);
                if let Some((at, junk)) = corruption {
                    let at = at % (body.len() + 1);
                    let end = (at + junk.len()).min(body.len());
                    body.splice(at..end, junk);
                }
                if let Some(cut) = cut {
                    body.truncate(cut % (body.len() + 1));
                }
                Upload {
                    header_boundary: other_boundary.unwrap_or(boundary),
                    body,
                }
            },
        )
}

/// Random multipart bodies with a `path` parameter: the answer is 200 or a 400 with a JSON
/// error, never a server error; nothing is written but the target; and a 200 wrote the target.
#[test]
fn random_multipart_bodies_only_ever_write_the_target() {
    let agent = Agent::start(AgentOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = PathBuf::from(scratch(&agent, "prop-multipart-random"));
    std::fs::create_dir_all(&root).unwrap();
    own_by_test_user(&agent, &root);
    let target = root.join("target.bin");
    let mut runner = TestRunner::new(config(48));
    let (accepted, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&upload(), |upload| {
            let _ = std::fs::remove_file(&target);
            let (status, body) = rt.block_on(async {
                let response = agent
                    .http
                    .post(agent.url("/files"))
                    .query(&[("path", target.to_str().unwrap())])
                    .header(
                        "content-type",
                        format!(
                            "multipart/form-data; boundary=\"{}\"",
                            upload.header_boundary
                        ),
                    )
                    .body(upload.body.clone())
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .expect("agent answers");
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap())
            });
            let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                TestCaseError::fail(format!("{status} without JSON ({e}): {body:?}"))
            })?;
            match status {
                200 => {
                    prop_assert_eq!(json[0]["path"].as_str(), target.to_str());
                    prop_assert!(target.exists());
                    accepted.set(accepted.get() + 1);
                }
                400 => {
                    prop_assert_eq!(json["code"].as_u64(), Some(400));
                    prop_assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
                    refused.set(refused.get() + 1);
                }
                other => prop_assert!(false, "status {other}: {json}"),
            }
            let written = files_under(&root);
            prop_assert!(
                written.iter().all(|p| p == &target),
                "unexpected files {written:?}"
            );
            Ok(())
        })
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    rt.block_on(agent.client.health()).unwrap();
    // Both outcomes were exercised, not only refusals.
    assert!(
        accepted.get() > 0 && refused.get() > 0,
        "{accepted:?} {refused:?}"
    );
}

/// A filename's path components: names (with spaces, dots, non-ASCII), `.` and `..`.
fn name_component() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => "[a-zA-Z0-9 _.,;=+-]{1,12}".prop_map(String::from),
        1 => "[a-zé日本]{1,6}".prop_map(String::from),
        2 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
    ]
}

/// Depth of the scratch prefix under which every generated filename stays.
const PREFIX_DEPTH: usize = 6;

/// Multipart parts without a `path` parameter: each part's filename is its target. With up to
/// `PREFIX_DEPTH` `..` after a `PREFIX_DEPTH`-deep prefix, every file must land exactly at the
/// lexically normalised filename, with its data, and no other file appears anywhere in scratch.
#[test]
fn part_filenames_land_exactly_where_they_resolve() {
    let agent = Agent::start(AgentOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = PathBuf::from(scratch(&agent, "prop-multipart-names"));
    let prefix: PathBuf = (0..PREFIX_DEPTH).fold(root.clone(), |p, i| p.join(format!("d{i}")));
    let part = (
        prop::collection::vec(name_component(), 1..PREFIX_DEPTH),
        prop::collection::vec(any::<u8>(), 0..100),
    );
    let strategy = (boundary(), prop::collection::vec(part, 1..4));
    let mut runner = TestRunner::new(config(48));
    runner
        .run(&strategy, |(boundary, parts)| {
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            own_by_test_user(&agent, &root);
            let parts: Vec<Part> = parts
                .into_iter()
                .map(|(components, data)| Part {
                    name: "file".into(),
                    filename: Some(format!("{}/{}", prefix.display(), components.join("/"))),
                    data,
                })
                .collect();
            let expected: Vec<PathBuf> = parts
                .iter()
                .map(|p| normalize(p.filename.as_deref().unwrap()))
                .collect();
            let body = multipart_body(&boundary, &parts, b"");
            let (status, response) = rt.block_on(async {
                let response = agent
                    .http
                    .post(agent.url("/files"))
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary=\"{boundary}\""),
                    )
                    .body(body)
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .expect("agent answers");
                let status = response.status().as_u16();
                (status, response.bytes().await.unwrap())
            });
            let json: serde_json::Value = serde_json::from_slice(&response).unwrap();
            for path in &expected {
                prop_assert!(
                    path.starts_with(&root),
                    "generator escaped: {}",
                    path.display()
                );
            }
            // The same target twice, or a target that another part needs as a directory (scratch
            // starts empty), cannot be written as files: a 400 that says why.
            let distinct: BTreeSet<&PathBuf> = expected.iter().collect();
            let clash = distinct.len() != expected.len()
                || expected
                    .iter()
                    .any(|a| expected.iter().any(|b| a != b && b.starts_with(a)));
            let written = files_under(&root);
            if clash {
                prop_assert!(status == 400, "status {status}: {json}");
                prop_assert!(written.iter().all(|p| expected.contains(p)), "{written:?}");
                return Ok(());
            }
            prop_assert_eq!(status, 200, "{}", json);
            let answered: Vec<PathBuf> = json
                .as_array()
                .unwrap()
                .iter()
                .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
                .collect();
            prop_assert_eq!(&answered, &expected);
            for (path, part) in expected.iter().zip(&parts) {
                prop_assert_eq!(
                    &std::fs::read(path).unwrap(),
                    &part.data,
                    "{}",
                    path.display()
                );
            }
            let expected_set: BTreeSet<PathBuf> = expected.iter().cloned().collect();
            prop_assert_eq!(written, expected_set);
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(&root);
    rt.block_on(agent.client.health()).unwrap();
}

/// Arbitrary `Accept-Encoding` on downloads and `X-Metadata-*` headers on uploads: a download
/// answers 200 with the file (gunzipped when gzip was chosen) or 406; an upload answers 200 or a
/// JSON 400, and an accepted upload reports exactly the metadata it was sent.
#[test]
fn encoding_and_metadata_headers_are_parsed_safely() {
    let agent = Agent::start(AgentOptions::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = PathBuf::from(scratch(&agent, "prop-headers"));
    std::fs::create_dir_all(&root).unwrap();
    own_by_test_user(&agent, &root);
    let file = root.join("f.bin");
    let accept = prop::option::of(prop_oneof![
        "[ -~]{0,30}".prop_map(String::from),
        prop::collection::vec(
            (
                prop::sample::select(vec!["gzip", "x-gzip", "identity", "*", "br", "GZIP"]),
                prop::option::of(prop_oneof![
                    Just("0".to_string()),
                    Just("1".to_string()),
                    "[0-9.]{0,4}".prop_map(String::from),
                ]),
            ),
            0..4,
        )
        .prop_map(|items| {
            items
                .into_iter()
                .map(|(name, q)| match q {
                    Some(q) => format!("{name};q={q}"),
                    None => name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }),
    ]);
    let metadata = prop::collection::btree_map(
        "[a-z0-9-]{0,12}",
        prop_oneof![
            "[ -~]{0,30}".prop_map(String::from),
            "[a-zé]{1,4}".prop_map(String::from)
        ],
        0..4,
    );
    let content = prop::collection::vec(any::<u8>(), 0..2000);
    let mut runner = TestRunner::new(config(48));
    runner
        .run(
            &(accept, metadata, content),
            |(accept, metadata, content)| {
                let (status, answer) = rt.block_on(async {
                    let mut request = agent
                        .http
                        .post(agent.url("/files"))
                        .query(&[("path", file.to_str().unwrap())])
                        .header("content-type", "application/octet-stream")
                        .body(content.clone());
                    for (key, value) in &metadata {
                        request = request.header(format!("x-metadata-{key}"), value.as_bytes());
                    }
                    let response = request.send().await.expect("agent answers");
                    (response.status().as_u16(), response.bytes().await.unwrap())
                });
                let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                let printable = metadata
                    .iter()
                    .all(|(k, v)| !k.is_empty() && v.bytes().all(|b| (0x20..0x7f).contains(&b)));
                let total: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
                match status {
                    200 => {
                        prop_assert!(printable && total <= 4096, "{metadata:?}");
                        let reported = json[0]["metadata"].as_object().cloned().unwrap_or_default();
                        let reported: std::collections::BTreeMap<String, String> = reported
                            .into_iter()
                            .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
                            .collect();
                        // HTTP drops a header value's surrounding whitespace.
                        let sent: std::collections::BTreeMap<String, String> = metadata
                            .iter()
                            .map(|(k, v)| (k.clone(), v.trim_matches([' ', '\t']).to_string()))
                            .collect();
                        prop_assert_eq!(reported, sent);
                    }
                    400 => {
                        prop_assert!(!printable, "{metadata:?}: {json}");
                        prop_assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
                        return Ok(());
                    }
                    other => prop_assert!(false, "upload status {other}: {json}"),
                }
                let (status, encoding, body) = rt.block_on(async {
                    let mut request = agent
                        .http
                        .get(agent.url("/files"))
                        .query(&[("path", file.to_str().unwrap())]);
                    if let Some(accept) = &accept {
                        request = request.header("accept-encoding", accept.as_str());
                    }
                    let response = request.send().await.expect("agent answers");
                    let encoding = response
                        .headers()
                        .get("content-encoding")
                        .map(|v| v.to_str().unwrap().to_string());
                    (
                        response.status().as_u16(),
                        encoding,
                        response.bytes().await.unwrap(),
                    )
                });
                match status {
                    200 => {
                        let data = if encoding.as_deref() == Some("gzip") {
                            use std::io::Read;
                            let mut out = Vec::new();
                            flate2::read::GzDecoder::new(&body[..])
                                .read_to_end(&mut out)
                                .unwrap();
                            out
                        } else {
                            prop_assert_eq!(encoding, None);
                            body.to_vec()
                        };
                        prop_assert_eq!(data, content);
                    }
                    406 => prop_assert!(accept.is_some()),
                    other => prop_assert!(false, "download status {other}: {body:?}"),
                }
                Ok(())
            },
        )
        .unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

/// File operations run as the requesting user (the test user): the scratch dir is theirs.
fn own_by_test_user(agent: &Agent, dir: &std::path::Path) {
    std::os::unix::fs::chown(dir, Some(agent.user.uid), Some(agent.user.gid)).unwrap();
}
