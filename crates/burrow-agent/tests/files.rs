//! Filesystem service and /files against the real agent binary.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

use burrow_envd::Code;
use burrow_envd::proto::filesystem::FileType;
use bytes::Bytes;
use common::{Agent, AgentOptions, scratch};
use futures::StreamExt;

async fn read_all(agent: &Agent, path: &str) -> Result<Vec<u8>, burrow_envd::EnvdError> {
    let mut stream = agent.client.read_file(path, None).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn write(agent: &Agent, path: &str, data: &'static [u8]) -> Vec<burrow_envd::WrittenFile> {
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(data))]);
    agent.client.write_file(path, None, body).await.unwrap()
}

#[tokio::test]
async fn write_read_round_trip_with_parents_owned_by_user() {
    let agent = Agent::start(AgentOptions::default());
    let dir = scratch(&agent, "rw");
    let path = format!("{dir}/a/b/c.txt");
    let written = write(&agent, &path, b"hello").await;
    assert_eq!(written[0].path, path);
    assert_eq!(written[0].name, "c.txt");
    assert_eq!(written[0].file_type, "file");
    assert_eq!(read_all(&agent, &path).await.unwrap(), b"hello");
    for p in [format!("{dir}/a"), format!("{dir}/a/b"), path.clone()] {
        assert_eq!(
            std::fs::metadata(&p).unwrap().uid(),
            agent.user.uid,
            "{p} not owned by the user"
        );
    }
    // Overwrite truncates.
    write(&agent, &path, b"hi").await;
    assert_eq!(read_all(&agent, &path).await.unwrap(), b"hi");

    // A multi-MiB streamed upload.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..64)
        .map(|i| Ok(Bytes::from(vec![i as u8; 65536])))
        .collect();
    let big = format!("{dir}/big.bin");
    agent
        .client
        .write_file(&big, None, futures::stream::iter(chunks))
        .await
        .unwrap();
    let data = read_all(&agent, &big).await.unwrap();
    assert_eq!(data.len(), 64 * 65536);
    assert!(data[65536 * 63..].iter().all(|b| *b == 63));

    // Relative paths resolve against the user's home.
    let rel = format!(
        "{}/rel.txt",
        dir.trim_start_matches(&format!("{}/", agent.user.home))
    );
    write(&agent, &rel, b"rel").await;
    assert_eq!(std::fs::read(format!("{dir}/rel.txt")).unwrap(), b"rel");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn hostile_and_odd_paths() {
    let agent = Agent::start(AgentOptions::default());
    let dir = scratch(&agent, "odd");
    for name in [
        "spaces in name.txt",
        "ünïcödé.txt",
        "semi;colon&amp%20.txt",
        "quote\"'.txt",
        "new\nline.txt",
        "..dots..",
        "#hash?q=1",
    ] {
        let path = format!("{dir}/{name}");
        let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(
            name.as_bytes().to_vec(),
        ))]);
        agent.client.write_file(&path, None, body).await.unwrap();
        assert_eq!(
            read_all(&agent, &path).await.unwrap(),
            name.as_bytes(),
            "{name:?}"
        );
        assert_eq!(agent.client.stat(&path, None).await.unwrap().name, name);
    }
    // `..` is resolved lexically and stays a plain path.
    write(&agent, &format!("{dir}/x/../y.txt"), b"y").await;
    assert!(std::path::Path::new(&format!("{dir}/y.txt")).exists());

    let err = read_all(&agent, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = read_all(&agent, "/tmp/a\0b").await.unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
    let err = agent.client.stat("bad\0path", None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = agent.client.list_dir("", 1, None).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = read_all(&agent, &format!("{dir}/missing"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.to_string().contains("does not exist"));
    let err = read_all(&agent, &dir).await.unwrap_err();
    assert!(
        matches!(err, burrow_envd::EnvdError::Http { status: 400, .. }),
        "{err}"
    );
    // Writing over a directory or below a file is a 400, not a crash.
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let err = agent.client.write_file(&dir, None, body).await.unwrap_err();
    assert!(
        matches!(err, burrow_envd::EnvdError::Http { status: 400, .. }),
        "{err}"
    );
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
    let err = agent
        .client
        .write_file(&format!("{dir}/y.txt/below"), None, body)
        .await
        .unwrap_err();
    assert!(
        matches!(err, burrow_envd::EnvdError::Http { status: 400, .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn filesystem_rpcs() {
    let agent = Agent::start(AgentOptions::default());
    let dir = scratch(&agent, "fs");
    let made = agent
        .client
        .make_dir(&format!("{dir}/d1/d2"), None)
        .await
        .unwrap();
    assert_eq!(made.file_type, FileType::Directory);
    assert_eq!(made.permissions, "drwxr-xr-x");
    assert_eq!(made.owner, agent.user.name);
    let err = agent
        .client
        .make_dir(&format!("{dir}/d1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    write(&agent, &format!("{dir}/d1/f.txt"), b"12345").await;
    let err = agent
        .client
        .make_dir(&format!("{dir}/d1/f.txt"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let st = agent
        .client
        .stat(&format!("{dir}/d1/f.txt"), None)
        .await
        .unwrap();
    assert_eq!((st.file_type, st.size, st.mode), (FileType::File, 5, 0o644));
    assert_eq!(
        (st.owner.as_str(), st.group.as_str()),
        (agent.user.name.as_str(), agent.user.name.as_str())
    );
    assert_eq!(st.permissions, "-rw-r--r--");
    assert!(st.modified_time.unwrap().ends_with('Z'));
    assert_eq!(
        agent
            .client
            .stat(&format!("{dir}/nope"), None)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    std::os::unix::fs::symlink("f.txt", format!("{dir}/d1/link")).unwrap();
    let link = agent
        .client
        .stat(&format!("{dir}/d1/link"), None)
        .await
        .unwrap();
    assert_eq!((link.file_type, link.is_symlink), (FileType::File, true));
    assert_eq!(link.symlink_target, Some(format!("{dir}/d1/f.txt")));
    // A symlink loop is listed but never followed.
    std::os::unix::fs::symlink(&dir, format!("{dir}/d1/d2/loop")).unwrap();
    let looped = agent
        .client
        .stat(&format!("{dir}/d1/d2/loop"), None)
        .await
        .unwrap();
    assert_eq!(
        (looped.file_type, looped.is_symlink),
        (FileType::Directory, true)
    );

    let top = agent.client.list_dir(&dir, 1, None).await.unwrap();
    assert_eq!(
        top.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["d1"]
    );
    let deep = agent.client.list_dir(&dir, 0, None).await.unwrap();
    assert_eq!(deep.len(), 1, "depth 0 means 1");
    let mut all: Vec<String> = agent
        .client
        .list_dir(&dir, 5, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            format!("{dir}/d1"),
            format!("{dir}/d1/d2"),
            format!("{dir}/d1/d2/loop"),
            format!("{dir}/d1/f.txt"),
            format!("{dir}/d1/link")
        ]
    );
    assert_eq!(
        agent
            .client
            .list_dir(&format!("{dir}/d1/f.txt"), 1, None)
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        agent
            .client
            .list_dir(&format!("{dir}/none"), 1, None)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let moved = agent
        .client
        .rename(&format!("{dir}/d1"), &format!("{dir}/new/parent/d1"), None)
        .await
        .unwrap();
    assert_eq!(moved.path, format!("{dir}/new/parent/d1"));
    assert_eq!(
        std::fs::metadata(format!("{dir}/new/parent"))
            .unwrap()
            .uid(),
        agent.user.uid
    );
    assert_eq!(
        agent
            .client
            .rename(&format!("{dir}/gone"), &format!("{dir}/x"), None)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    agent
        .client
        .remove(&format!("{dir}/new"), None)
        .await
        .unwrap();
    assert!(!std::path::Path::new(&format!("{dir}/new")).exists());
    agent
        .client
        .remove(&format!("{dir}/never"), None)
        .await
        .unwrap();
    assert_eq!(
        agent.client.remove("/", None).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn multipart_gzip_and_metadata() {
    let agent = Agent::start(AgentOptions::default());
    let dir = scratch(&agent, "mp");
    // Multipart without `path`: each part's filename (with directories) is the target.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"one".to_vec()).file_name(format!("{dir}/m1.txt")),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"two".to_vec())
                .file_name(format!("{dir}/sub/dir/m2.txt")),
        );
    let resp = agent
        .http
        .post(agent.url("/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let entries: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(entries[1]["path"], format!("{dir}/sub/dir/m2.txt"));
    assert_eq!(entries[1]["type"], "file");
    assert_eq!(
        std::fs::read(format!("{dir}/sub/dir/m2.txt")).unwrap(),
        b"two"
    );

    // Duplicate targets are rejected.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"a".to_vec()).file_name(format!("{dir}/dup")),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"b".to_vec()).file_name(format!("{dir}/dup")),
        );
    let resp = agent
        .http
        .post(agent.url("/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Multipart with `path` (what the SDK's files.write sends).
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"p".to_vec()).file_name("ignored.txt"),
    );
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&[("path", format!("{dir}/by-path.txt"))])
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(format!("{dir}/by-path.txt")).unwrap(), b"p");

    // Octet-stream with Content-Encoding: gzip and metadata headers.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&b"zipped ".repeat(1000)).unwrap();
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&[("path", format!("{dir}/gz.txt"))])
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .header("X-Metadata-Owner-Team", "core")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let written: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(written[0]["metadata"]["owner-team"], "core");
    assert_eq!(
        std::fs::read(format!("{dir}/gz.txt")).unwrap(),
        b"zipped ".repeat(1000)
    );
    let st = agent
        .client
        .stat(&format!("{dir}/gz.txt"), None)
        .await
        .unwrap();
    assert_eq!(
        st.metadata.get("owner-team").map(String::as_str),
        Some("core")
    );
    // Overwriting without metadata headers clears the old metadata (E2B semantics).
    write(&agent, &format!("{dir}/meta.txt"), b"m").await;
    rustix::fs::setxattr(
        format!("{dir}/meta.txt").as_str(),
        "user.e2b.stale",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(
        agent
            .client
            .stat(&format!("{dir}/meta.txt"), None)
            .await
            .unwrap()
            .metadata
            .len(),
        1
    );
    write(&agent, &format!("{dir}/meta.txt"), b"m2").await;
    assert!(
        agent
            .client
            .stat(&format!("{dir}/meta.txt"), None)
            .await
            .unwrap()
            .metadata
            .is_empty()
    );

    // A corrupt gzip body is a 400, and leaves a clear message.
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&[("path", format!("{dir}/bad.txt"))])
        .header("content-type", "application/octet-stream")
        .header("content-encoding", "gzip")
        .body(b"not gzip at all".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&[("path", format!("{dir}/bad.txt"))])
        .header("content-encoding", "br")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    // Download with Accept-Encoding: gzip.
    let resp = agent
        .http
        .get(agent.url("/files"))
        .query(&[("path", format!("{dir}/gz.txt"))])
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let compressed = resp.bytes().await.unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, b"zipped ".repeat(1000));
    let resp = agent
        .http
        .get(agent.url("/files"))
        .query(&[("path", format!("{dir}/gz.txt"))])
        .header("accept-encoding", "br, identity;q=0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 406);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": 406, "message": "no acceptable encoding found, supported: [identity, gzip]"})
    );

    // username selects the owner of new files.
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&[
            ("path", format!("{dir}/rootfile")),
            ("username", "root".into()),
        ])
        .header("content-type", "application/octet-stream")
        .body(b"r".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        std::fs::metadata(format!("{dir}/rootfile")).unwrap().uid(),
        0
    );
    let resp = agent
        .http
        .get(agent.url("/files"))
        .query(&[("path", "/etc/hostname"), ("username", "nobody-here")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Root-owned fixtures inside the test user's home: `locked/` (0755, a 0644 file the user
/// can read but not remove), `private/` (0700, a 0600 secret), and `mine/` owned by the user.
fn permission_fixtures(agent: &Agent, name: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch(agent, name);
    let _ = std::fs::remove_dir_all(&dir);
    for (sub, mode) in [("locked", 0o755), ("private", 0o700), ("mine", 0o755)] {
        std::fs::create_dir_all(format!("{dir}/{sub}")).unwrap();
        std::fs::set_permissions(
            format!("{dir}/{sub}"),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
    }
    std::fs::write(format!("{dir}/locked/file"), b"public").unwrap();
    std::fs::write(format!("{dir}/private/secret"), b"secret").unwrap();
    std::fs::set_permissions(
        format!("{dir}/private/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::chown(format!("{dir}/mine"), Some(agent.user.uid), None).unwrap();
    dir
}

async fn http_write(agent: &Agent, path: &str, user: Option<&str>) -> u16 {
    let mut query = vec![("path", path.to_string())];
    query.extend(user.map(|u| ("username", u.to_string())));
    let resp = agent
        .http
        .post(agent.url("/files"))
        .query(&query)
        .header("content-type", "application/octet-stream")
        .body(b"data".to_vec())
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

async fn http_read(agent: &Agent, path: &str, user: Option<&str>) -> (u16, String) {
    let mut query = vec![("path", path.to_string())];
    query.extend(user.map(|u| ("username", u.to_string())));
    let resp = agent
        .http
        .get(agent.url("/files"))
        .query(&query)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The selected user's permissions apply to `/files` (issue 12, item 11): the default user
/// cannot read a root-only file or write into a root-owned directory; root can.
#[tokio::test]
async fn files_http_runs_with_the_users_permissions() {
    let agent = Agent::start(AgentOptions::default());
    let dir = permission_fixtures(&agent, "perm-http");

    let (status, body) = http_read(&agent, &format!("{dir}/private/secret"), None).await;
    assert_eq!(status, 403, "the user read a root-only file: {body}");
    assert!(body.contains("permission denied"), "{body}");
    assert_eq!(
        http_write(&agent, &format!("{dir}/locked/planted"), None).await,
        403
    );
    assert!(!std::path::Path::new(&format!("{dir}/locked/planted")).exists());
    // Parents the user may not create are refused too, and nothing is left behind.
    assert_eq!(
        http_write(&agent, &format!("{dir}/locked/sub/planted"), None).await,
        403
    );
    assert!(!std::path::Path::new(&format!("{dir}/locked/sub")).exists());
    // A client-side read error, as the E2B SDK's files.read raises.
    let err = read_all(&agent, &format!("{dir}/private/secret"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    // Where the user may write, the file and new parents are theirs.
    assert_eq!(
        http_write(&agent, &format!("{dir}/mine/a/b/f"), None).await,
        200
    );
    for p in ["mine/a", "mine/a/b", "mine/a/b/f"] {
        let meta = std::fs::metadata(format!("{dir}/{p}")).unwrap();
        assert_eq!((meta.uid(), meta.gid() != 0), (agent.user.uid, true), "{p}");
    }
    let (status, _) = http_read(&agent, &format!("{dir}/locked/file"), None).await;
    assert_eq!(status, 200);

    // root keeps root's reach.
    let (status, body) = http_read(&agent, &format!("{dir}/private/secret"), Some("root")).await;
    assert_eq!((status, body.as_str()), (200, "secret"));
    assert_eq!(
        http_write(&agent, &format!("{dir}/locked/sub/by-root"), Some("root")).await,
        200
    );
    let meta = std::fs::metadata(format!("{dir}/locked/sub/by-root")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));

    // The agent's own threads went back to root after the refused operations.
    let (status, _) = http_read(&agent, &format!("{dir}/private/secret"), Some("root")).await;
    assert_eq!(status, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The selected user's permissions apply to the filesystem RPCs (issue 12, item 11).
#[tokio::test]
async fn filesystem_rpcs_run_with_the_users_permissions() {
    let agent = Agent::start(AgentOptions::default());
    let dir = permission_fixtures(&agent, "perm-rpc");
    let c = &agent.client;
    let denied = |r: Result<_, burrow_envd::EnvdError>, what: &str| match r {
        Ok(_) => panic!("{what}: allowed for the user"),
        Err(e) => assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e}"),
    };

    denied(
        c.stat(&format!("{dir}/private/secret"), None)
            .await
            .map(|_| ()),
        "stat",
    );
    denied(
        c.list_dir(&format!("{dir}/private"), 1, None)
            .await
            .map(|_| ()),
        "list_dir",
    );
    denied(
        c.make_dir(&format!("{dir}/locked/d/e"), None)
            .await
            .map(|_| ()),
        "make_dir",
    );
    denied(
        c.remove(&format!("{dir}/locked/file"), None).await,
        "remove",
    );
    denied(
        c.rename(
            &format!("{dir}/locked/file"),
            &format!("{dir}/mine/x"),
            None,
        )
        .await
        .map(|_| ()),
        "move",
    );
    assert!(std::path::Path::new(&format!("{dir}/locked/file")).exists());
    assert!(!std::path::Path::new(&format!("{dir}/locked/d")).exists());
    let watch = agent
        .http
        .post(agent.url("/filesystem.Filesystem/CreateWatcher"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"path": format!("{dir}/private")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 403);

    // The user's own directory works, and what they create is theirs.
    let made = c.make_dir(&format!("{dir}/mine/d/e"), None).await.unwrap();
    assert_eq!(made.owner, agent.user.name);
    assert_eq!(
        std::fs::metadata(format!("{dir}/mine/d")).unwrap().uid(),
        agent.user.uid
    );
    c.rename(&format!("{dir}/mine/d"), &format!("{dir}/mine/n/d"), None)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(format!("{dir}/mine/n")).unwrap().uid(),
        agent.user.uid
    );
    c.remove(&format!("{dir}/mine/n"), None).await.unwrap();

    // root: everything is allowed.
    let root = Some("root");
    assert_eq!(
        c.stat(&format!("{dir}/private/secret"), root)
            .await
            .unwrap()
            .size,
        6
    );
    assert_eq!(
        c.list_dir(&format!("{dir}/private"), 1, root)
            .await
            .unwrap()
            .len(),
        1
    );
    c.make_dir(&format!("{dir}/locked/d"), root).await.unwrap();
    c.rename(
        &format!("{dir}/locked/file"),
        &format!("{dir}/locked/d/file"),
        root,
    )
    .await
    .unwrap();
    c.remove(&format!("{dir}/locked/d"), root).await.unwrap();
    assert!(!std::path::Path::new(&format!("{dir}/locked/d")).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn rpc(agent: &Agent, method: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = agent
        .http
        .post(agent.url(&format!("/filesystem.Filesystem/{method}")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A user's recursive watcher does not reach into a directory the user cannot read, even
/// when it appears inside the watched tree later (the watcher adds new directories itself).
#[tokio::test]
async fn watchers_see_only_what_the_user_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let agent = Agent::start(AgentOptions::default());
    let dir = permission_fixtures(&agent, "perm-watch");
    let (status, body) = rpc(
        &agent,
        "CreateWatcher",
        serde_json::json!({"path": format!("{dir}/mine"), "recursive": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["watcherId"].as_str().unwrap().to_string();
    // root makes a private directory with a secret in the user's watched tree.
    std::fs::create_dir(format!("{dir}/mine/priv")).unwrap();
    std::fs::set_permissions(
        format!("{dir}/mine/priv"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(format!("{dir}/mine/priv/secret-name"), b"x").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, events) = rpc(
        &agent,
        "GetWatcherEvents",
        serde_json::json!({"watcherId": id}),
    )
    .await;
    assert_eq!(status, 200, "{events}");
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"priv"), "{events}");
    assert!(
        !names.iter().any(|n| n.contains("secret-name")),
        "the user's watcher saw inside a root-only directory: {events}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
