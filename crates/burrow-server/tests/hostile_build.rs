//! Template builds from a hostile API client: an API build reads no file of the server (COPY
//! sources, rootfs and OCI imports come from uploads, `PUT /v1/templates/uploads/{sha256}`),
//! uploads are checked (hash, size, tar), and build contexts cannot escape on extraction.

mod common;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use common::{TestServer, expect_error, install_test_template};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One tar entry, written with a raw name (the tar crate refuses `..` and absolute names, which
/// is exactly what a hostile client sends).
enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (name, data, kind, mode, link): (&str, &[u8], tar::EntryType, u32, Option<&str>) =
            match entry {
                Entry::File(name, data, mode) => (name, data, tar::EntryType::Regular, *mode, None),
                Entry::Dir(name) => (name, &[], tar::EntryType::Directory, 0o755, None),
                Entry::Symlink(name, target) => {
                    (name, &[], tar::EntryType::Symlink, 0o777, Some(target))
                }
                Entry::HardLink(name, target) => {
                    (name, &[], tar::EntryType::Link, 0o644, Some(target))
                }
            };
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

async fn upload(server: &TestServer, bytes: &[u8]) -> String {
    let hash = sha256(bytes);
    let resp = server
        .put(&format!("/v1/templates/uploads/{hash}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == 201 || resp.status() == 200,
        "{}",
        resp.text().await.unwrap()
    );
    hash
}

async fn build_request(server: &TestServer, body: Value) -> reqwest::Response {
    server
        .post("/v1/templates")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Message of the 400 an API build gets.
async fn refused(server: &TestServer, body: Value) -> String {
    expect_error(build_request(server, body).await, 400, "invalid_request").await
}

#[tokio::test]
async fn api_builds_never_read_server_paths() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let client_key = dir.path().join(burrow_server::CLIENT_KEY_FILE);
    assert!(client_key.exists());
    let key_path = client_key.to_str().unwrap();

    // The old shape: a COPY of the admin key by its server path.
    let message = refused(
        &server,
        json!({"name": "stolen", "from": {"type": "template", "parent": "base", "steps": [
            {"type": "copy", "src": key_path, "dest": "/tmp/key"}]}}),
    )
    .await;
    assert!(
        message.contains("path on the server") && message.contains("--local"),
        "{message}"
    );
    // Also with a (valid) context: an absolute source still names a server path.
    let context = upload(&server, &tar_of(&[Entry::File("a.txt", b"a\n", 0o644)])).await;
    let message = refused(
        &server,
        json!({"name": "stolen", "from": {"type": "template", "parent": "base", "context": context,
            "steps": [{"type": "copy", "src": key_path, "dest": "/tmp/key"}]}}),
    )
    .await;
    assert!(message.contains("path on the server"), "{message}");
    // A relative COPY without a context has nothing to read.
    let message = refused(
        &server,
        json!({"name": "stolen", "from": {"type": "template", "parent": "base", "steps": [
            {"type": "copy", "src": "client.key", "dest": "/tmp/key"}]}}),
    )
    .await;
    assert!(message.contains("context"), "{message}");
    // `..` out of the context.
    let message = refused(
        &server,
        json!({"name": "stolen", "from": {"type": "template", "parent": "base", "context": context,
            "steps": [{"type": "copy", "src": "../../client.key", "dest": "/tmp/key"}]}}),
    )
    .await;
    assert!(message.contains(".."), "{message}");
    // Imports by server path: the data dir as a "rootfs", an OCI layout path.
    for from in [
        json!({"type": "rootfs", "path": dir.path()}),
        json!({"type": "oci", "path": dir.path()}),
    ] {
        let message = refused(&server, json!({"name": "stolen", "from": from})).await;
        assert!(
            message.contains("path on the server") && message.contains("--local"),
            "{message}"
        );
    }
    // Nothing was built, nothing is left in the uploads dir but the upload.
    let list: Value = server
        .get("/v1/templates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["templates"].as_array().unwrap().len(), 1, "{list}");
    server.stop().await;
}

#[tokio::test]
async fn uploads_are_checked_and_unsafe_contexts_refused() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let mut config = common::config(dir.path());
    config.max_build_upload_bytes = 64 << 10;
    let server = TestServer::start_with(config).await;
    let uploads = dir.path().join("uploads");
    assert_eq!(
        std::fs::metadata(&uploads).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let context = tar_of(&[Entry::File("a.txt", b"a\n", 0o644)]);
    let hash = sha256(&context);
    // Not there yet.
    let status: Value = server
        .get(&format!("/v1/templates/uploads/{hash}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["present"], false, "{status}");
    let head = server
        .http
        .head(server.url(&format!("/v1/templates/uploads/{hash}")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    // A body that does not hash to the name.
    let other = sha256(b"something else");
    let message = expect_error(
        server
            .put(&format!("/v1/templates/uploads/{other}"))
            .body(context.clone())
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert!(message.contains("sha256"), "{message}");
    // Not a sha256 at all.
    expect_error(
        server
            .put("/v1/templates/uploads/client.key")
            .body(context.clone())
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    // Over the limit: 413, and nothing stored.
    let big = tar_of(&[Entry::File("big", &vec![7u8; 100 << 10], 0o644)]);
    let big_hash = sha256(&big);
    let message = expect_error(
        server
            .put(&format!("/v1/templates/uploads/{big_hash}"))
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    assert!(message.contains("limit"), "{message}");
    // Not a tar.
    let junk = b"just some text".to_vec();
    expect_error(
        server
            .put(&format!("/v1/templates/uploads/{}", sha256(&junk)))
            .body(junk)
            .send()
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    // The good one: stored 0600, present afterwards, a second PUT is a no-op.
    assert_eq!(upload(&server, &context).await, hash);
    let stored = uploads.join(format!("{hash}.tar"));
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let status: Value = server
        .get(&format!("/v1/templates/uploads/{hash}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["present"], true, "{status}");
    assert_eq!(status["size_bytes"], context.len() as u64, "{status}");
    let again = server
        .put(&format!("/v1/templates/uploads/{hash}"))
        .body(context.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let names: Vec<String> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![format!("{hash}.tar")],
        "no partial uploads left"
    );

    // Build contexts that try to escape: each is a 400 naming the entry, before any build.
    let unsafe_contexts = [
        ("../", tar_of(&[Entry::File("../escape", b"x", 0o644)])),
        (
            "absolute",
            tar_of(&[Entry::File("/etc/escape", b"x", 0o644)]),
        ),
        (
            "symlink",
            tar_of(&[Entry::Symlink("key", "/var/lib/burrow/client.key")]),
        ),
        (
            "symlink",
            tar_of(&[Entry::Dir("d"), Entry::Symlink("d/up", "../../..")]),
        ),
        (
            "write through a symlink",
            tar_of(&[
                Entry::Symlink("etc", "d"),
                Entry::Dir("d"),
                Entry::File("etc/../../x", b"x", 0o644),
            ]),
        ),
        (
            "hard link",
            tar_of(&[Entry::HardLink("key", "/var/lib/burrow/client.key")]),
        ),
        ("hard link ..", tar_of(&[Entry::HardLink("key", "../x")])),
    ];
    for (what, archive) in unsafe_contexts {
        let context = upload(&server, &archive).await;
        let message = refused(
            &server,
            json!({"name": "escape", "from": {"type": "template", "parent": "base",
                "context": context, "steps": [{"type": "copy", "src": ".", "dest": "/ctx/"}]}}),
        )
        .await;
        assert!(message.contains("unsafe"), "{what}: {message}");
    }
    // A COPY source that walks through a symlink inside the context is refused too.
    let context = upload(
        &server,
        &tar_of(&[Entry::Dir("real"), Entry::Symlink("link", "real")]),
    )
    .await;
    let message = refused(
        &server,
        json!({"name": "escape", "from": {"type": "template", "parent": "base",
            "context": context, "steps": [{"type": "copy", "src": "link/x", "dest": "/x"}]}}),
    )
    .await;
    assert!(message.contains("symlink"), "{message}");
    // An OCI layout may hold no symlink at all.
    let layout = upload(
        &server,
        &tar_of(&[Entry::Symlink("oci-layout", "../../client.key")]),
    )
    .await;
    let message = refused(
        &server,
        json!({"name": "escape", "from": {"type": "oci", "upload": layout}}),
    )
    .await;
    assert!(message.contains("symlink"), "{message}");
    // A build naming an upload the server does not have.
    let message = refused(
        &server,
        json!({"name": "escape", "from": {"type": "rootfs", "upload": sha256(b"absent")}}),
    )
    .await;
    assert!(message.contains("not on the server"), "{message}");
    // No extraction scratch is left behind by the refused builds.
    let scratch: Vec<String> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(scratch.is_empty(), "{scratch:?}");
    server.stop().await;
}

async fn exec_stdout(server: &TestServer, id: &str, command: &str) -> (String, i64) {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": command}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut code = None;
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        match event["type"].as_str().unwrap() {
            "stdout" | "stderr" => out.extend(b64.decode(event["data"].as_str().unwrap()).unwrap()),
            "exit" => code = event["exit_code"].as_i64(),
            "error" => panic!("exec error: {event}"),
            _ => {}
        }
    }
    (String::from_utf8(out).unwrap(), code.expect("exit event"))
}

async fn last_event(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    serde_json::from_str(text.lines().last().expect("an event")).unwrap()
}

#[tokio::test]
async fn copy_from_an_uploaded_context_and_imports_from_uploads() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    // A context with a nested file, an in-context symlink and a setuid-root file: it is only
    // ever unpacked inside the 0700 uploads dir, and removed after the build.
    let context = tar_of(&[
        Entry::Dir("app"),
        Entry::File("app/hello.txt", b"from the context\n", 0o644),
        Entry::Symlink("app/link", "hello.txt"),
        Entry::File("app/suid", b"#!/bin/sh\n", 0o4755),
    ]);
    let hash = upload(&server, &context).await;
    let resp = build_request(
        &server,
        json!({"name": "withctx", "from": {"type": "template", "parent": "base",
        "context": hash, "steps": [
            {"type": "copy", "src": "app", "dest": "/opt/app"},
            {"type": "copy", "src": "./app/hello.txt", "dest": "/etc/"},
        ]}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    // Progress names the sources as the client knows them, not by a server path.
    assert!(text.contains("COPY app /opt/app"), "{text}");
    assert!(!text.contains("uploads"), "{text}");
    let done: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(done["type"], "done", "{done}");
    let scratch: Vec<String> = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(scratch.is_empty(), "extracted context left: {scratch:?}");

    let created: Value = server
        .post("/v1/sandboxes")
        .json(&json!({"template": "withctx"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created").to_string();
    let (out, code) = exec_stdout(
        &server,
        &id,
        "cat /opt/app/hello.txt /etc/hello.txt; readlink /opt/app/link; stat -c %U /opt/app/hello.txt",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "from the context\nfrom the context\nhello.txt\nroot\n");
    assert_eq!(
        server
            .delete(&format!("/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    // A rootfs import from an uploaded tarball.
    let rootfs = tar_of(&[
        Entry::Dir("etc"),
        Entry::File("etc/hello", b"tiny\n", 0o644),
    ]);
    let hash = upload(&server, &rootfs).await;
    let done = last_event(
        build_request(
            &server,
            json!({"name": "tiny", "from": {"type": "rootfs", "upload": hash}}),
        )
        .await,
    )
    .await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["template"]["source"], "rootfs");
    let layer = dir.path().join("templates/tiny/layers/0/etc/hello");
    assert_eq!(std::fs::read_to_string(layer).unwrap(), "tiny\n");
    server.stop().await;
}
