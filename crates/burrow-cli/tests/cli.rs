//! End-to-end: the real `burrow serve` with real sandboxes, driven by the real `burrow` CLI.

mod common;

use common::TestServer;

fn is_sandbox_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[test]
fn create_exec_list_info_rm() {
    require_sandboxes!();
    let server = TestServer::start();
    let id = server
        .ok(&["create", "--label", "suite=cli", "--env", "GREETING=hi"])
        .trim()
        .to_string();
    assert!(
        is_sandbox_id(&id),
        "id {id:?} must be lowercase alphanumeric"
    );

    // Output streams through; the exit code is the command's.
    assert_eq!(
        server.ok(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo err >&2"
        ]),
        "hi\n"
    );
    let out = server.cli(&["exec", &id, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));

    // Default user is `user` with home /home/user; sudo works without a password.
    assert_eq!(server.ok(&["exec", &id, "--", "whoami"]), "user\n");
    assert_eq!(server.ok(&["exec", &id, "--", "pwd"]), "/home/user\n");
    assert_eq!(
        server.ok(&["exec", &id, "--", "sudo", "-n", "id", "-u"]),
        "0\n"
    );

    // stdin reaches the command.
    let out = server.cli_with_stdin(&["exec", "-i", &id, "--", "cat"], Some(b"piped input\n"));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"piped input\n");

    let listed = server.ok(&["ls", "--label", "suite=cli", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == id.as_str())
    );
    // The template the sandbox was made from is listed.
    let templates: serde_json::Value =
        serde_json::from_str(&server.ok(&["template", "ls", "--json"])).unwrap();
    assert!(
        templates
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "base"),
        "{templates}"
    );
    assert!(server.ok(&["template", "ls"]).contains("base"));
    // Output into a closed pipe (`burrow ls | head -1` once head has exited) ends the CLI by
    // SIGPIPE, like any Unix tool: no panic message on stderr.
    let mut child = std::process::Command::new(common::burrow_bin())
        .args(["info", &id])
        .env("BURROW_URL", &server.url)
        .env("BURROW_API_KEY", &server.key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGPIPE),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let none = server.ok(&["ls", "--label", "suite=other", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&none).unwrap(),
        serde_json::json!([])
    );

    let info: serde_json::Value =
        serde_json::from_str(&server.ok(&["info", &id, "--json"])).unwrap();
    assert_eq!(info["state"], "running");
    assert_eq!(info["template"], "base");

    server.ok(&["rm", &id]);
    let out = server.cli(&["info", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404") || err.contains("not found"),
        "unexpected error: {err}"
    );
}

#[test]
fn cp_round_trip_and_paths_stay_inside() {
    require_sandboxes!();
    let server = TestServer::start();
    let id = server.ok(&["create"]).trim().to_string();
    let dir = common::tempdir("burrow-cp");
    let src = dir.join("blob.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();

    server.ok(&[
        "cp",
        src.to_str().unwrap(),
        &format!("{id}:/home/user/blob.bin"),
    ]);
    let back = dir.join("back.bin");
    server.ok(&[
        "cp",
        &format!("{id}:/home/user/blob.bin"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // `..` cannot climb out of the sandbox's root: this lands in the sandbox's /tmp, not the host's.
    let marker = format!("burrow-escape-{}", std::process::id());
    let src_small = dir.join("small");
    std::fs::write(&src_small, b"x").unwrap();
    server.ok(&[
        "cp",
        src_small.to_str().unwrap(),
        &format!("{id}:/../../../../tmp/{marker}"),
    ]);
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "a sandbox path escaped onto the host"
    );
    assert_eq!(
        server.ok(&["exec", &id, "--", "cat", &format!("/tmp/{marker}")]),
        "x"
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    require_sandboxes!();
    let server = TestServer::start();
    let out = server.cli(&["create", "--template", "no-such-template"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-template"),
        "error should name the template: {err}"
    );

    let out = server.cli(&["exec", "nosuchsandbox", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404") && err.contains("nosuchsandbox"),
        "unexpected error: {err}"
    );

    let out = server.cli(&["create", "--env", "NOEQUALS"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));

    let mut cmd = std::process::Command::new(common::burrow_bin());
    let out = cmd
        .args(["ls"])
        .env("BURROW_URL", &server.url)
        .env("BURROW_API_KEY", "bw_wrongkey")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn key_create_ls_rm() {
    require_sandboxes!();
    let server = TestServer::start();
    let created: serde_json::Value =
        serde_json::from_str(&server.ok(&["key", "create", "--name", "ci", "--e2b", "--json"]))
            .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let key = created["key"].as_str().unwrap().to_string();

    let table = server.ok(&["key", "ls"]);
    assert!(
        table.contains("LAST USED") && table.contains(&id),
        "{table}"
    );
    assert!(
        !table.contains(&key),
        "the key itself is never listed: {table}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&server.ok(&["key", "ls", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let operator = listed.iter().find(|k| k["operator"] == true).unwrap();
    let ci = listed.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(ci["kind"], "e2b");
    assert_eq!(ci["name"], "ci");

    // The new key works until it is revoked, then it is refused.
    let as_ci = || {
        std::process::Command::new(common::burrow_bin())
            .args(["ls"])
            .env("BURROW_URL", &server.url)
            .env("BURROW_API_KEY", &key)
            .output()
            .unwrap()
    };
    assert!(as_ci().status.success());
    server.ok(&["key", "rm", &id]);
    let out = as_ci();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // The operator key stays; a key (not an id) is refused before it reaches a URL.
    let out = server.cli(&["key", "rm", operator["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("operator key cannot be deleted"), "{err}");
    let out = server.cli(&["key", "rm", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a key id"));
    let out = server.cli(&["key", "rm", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[test]
fn standby_resume_and_idle_timeout() {
    require_sandboxes!();
    let server = TestServer::start();
    let id = server
        .ok(&["create", "--idle-timeout", "1s"])
        .trim()
        .to_string();
    let info = |id: &str| -> serde_json::Value {
        serde_json::from_str(&server.ok(&["info", id, "--json"])).unwrap()
    };
    assert_eq!(info(&id)["power"]["idle_timeout"], 1);

    // The idle timer puts it to sleep; `info` says since when, and does not wake it.
    let start = std::time::Instant::now();
    while info(&id)["state"] != "standby" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(6),
            "not asleep after 6 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let human = server.ok(&["info", &id]);
    assert!(human.contains("standby  warm since"), "{human}");
    assert_eq!(info(&id)["state"], "standby");

    // A request wakes it; explicit standby and resume print the new state.
    assert_eq!(server.ok(&["exec", &id, "--", "echo", "hi"]), "hi\n");
    assert_eq!(server.ok(&["standby", &id]), format!("{id}  standby\n"));
    assert_eq!(server.ok(&["standby", &id]), format!("{id}  standby\n"));
    assert_eq!(server.ok(&["resume", &id]), format!("{id}  running\n"));
    let human = server.ok(&["info", &id]);
    assert!(human.contains("activity last resume"), "{human}");

    let bad = server.cli(&["create", "--idle-timeout", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a duration"));
    // Deep standby (CRIU): `info` shows the image; the next request restores it.
    if std::path::Path::new("/opt/burrow/criu/criu").exists() {
        assert_eq!(
            server.ok(&["standby", "--deep", &id]),
            format!("{id}  standby\n")
        );
        let human = server.ok(&["info", &id]);
        assert!(human.contains("standby  deep since"), "{human}");
        assert!(human.contains("MiB on disk (CRIU checkpoint"), "{human}");
        assert_eq!(server.ok(&["exec", &id, "--", "echo", "back"]), "back\n");
    }
    let missing = server.cli(&["resume", "inosuchsandbox000000"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    server.ok(&["rm", &id]);
}

#[test]
fn shell_is_an_interactive_pty_that_exits_with_the_shells_code() {
    require_sandboxes!();
    let server = TestServer::start();
    let id = server.ok(&["create"]).trim().to_string();
    // `script` gives `burrow shell` a real terminal; we type into it through script's stdin.
    let mut child = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} shell {id}", common::burrow_bin().display()),
            "/dev/null",
        ])
        .env("BURROW_URL", &server.url)
        .env("BURROW_API_KEY", &server.key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running script(1)");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        stdin
            .write_all(b"echo shell-$((6*7)); tty; whoami\r")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(800));
        stdin.write_all(b"exit 5\r").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shell-42"), "{text}");
    assert!(
        text.contains("/dev/pts/"),
        "the shell must have a terminal: {text}"
    );
    assert!(text.contains("user"), "{text}");
    assert_eq!(
        out.status.code(),
        Some(5),
        "burrow shell exits with the shell's code: {text}"
    );
}

#[test]
fn expiry_zdr_retention_report_and_usage() {
    require_sandboxes!();
    let server = TestServer::start();
    let out = server.cli(&["create", "--ttl-idle", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl-idle"));

    let id = server
        .ok(&["create", "--ttl-idle", "1h", "--ttl-max-age", "7d", "--zdr"])
        .trim()
        .to_string();
    let info: serde_json::Value =
        serde_json::from_str(&server.ok(&["info", &id, "--json"])).unwrap();
    assert_eq!(
        info["expiration"],
        serde_json::json!({"ttl_idle": 3600, "ttl_max_age": 604800})
    );
    assert_eq!(info["zdr"], true);
    let out = server.cli(&["standby", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("zero-data-retention"));

    let changed = server.ok(&["expire", &id, "--expires-at", "2099-01-01T00:00:00Z"]);
    assert!(changed.contains("2099-01-01T00:00:00Z"), "{changed}");
    let out = server.cli(&["expire", &id, "--expires-at", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));

    let usage = server.ok(&["usage", &id, "--json"]);
    assert!(usage.contains("active_gb_seconds"), "{usage}");
    server.ok(&["rm", &id]);

    let report = server.ok(&["retention", "report", "--since", "1h", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let tomb = report
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("tombstone in the report");
    assert_eq!(tomb["reason"], "api");
    assert_eq!(tomb["zdr"], true);
    assert_eq!(tomb["erased"]["blocks_discarded"], true);
    let table = server.ok(&["retention", "report"]);
    assert!(table.contains(&id), "{table}");
    let totals = server.ok(&["usage"]);
    assert!(totals.contains("TOTAL"), "{totals}");
}

#[test]
fn pip_reaches_the_package_index_from_inside() {
    require_sandboxes!();
    // The issue's promise: outbound access through NAT, so `pip install` works wherever the host
    // has network (here: the host reaches PyPI, possibly through a TLS-intercepting proxy whose CA
    // the host trusts; burrow gives sandboxes the host's CA bundle).
    let host_pip = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            "-q",
            "-d",
        ])
        .arg(common::tempdir("burrow-pip-host"))
        .arg("six==1.16.0")
        .output();
    if !host_pip.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: the host itself cannot download from PyPI");
        return;
    }
    let server = TestServer::start();
    let id = server.ok(&["create"]).trim().to_string();
    let out = server.cli(&[
        "exec",
        &id,
        "--",
        "python3",
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "-q",
        "-d",
        "/tmp/wheels",
        "six==1.16.0",
    ]);
    assert!(
        out.status.success(),
        "pip inside the sandbox failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server
            .ok(&["exec", &id, "--", "ls", "/tmp/wheels"])
            .contains("six-1.16.0")
    );
}

#[test]
fn template_build_file_copies_through_an_upload() {
    require_sandboxes!();
    let server = TestServer::start();
    // The build context lives outside the server's data dir; the server never reads it there.
    let context = common::tempdir("burrow-cli-context");
    std::fs::create_dir_all(context.join("app")).unwrap();
    std::fs::write(context.join("app/hello.txt"), "hello from the context\n").unwrap();
    std::fs::write(
        context.join("Burrowfile"),
        "FROM base\nCOPY app /opt/app\nCOPY app/hello.txt /etc/\n",
    )
    .unwrap();
    let burrowfile = context.join("Burrowfile");
    let burrowfile = burrowfile.to_str().unwrap();
    server.ok(&["template", "build", "withctx", "-f", burrowfile]);
    // The context went through the upload store (kept, named by its sha256).
    let uploads: Vec<String> = std::fs::read_dir(server.data_dir.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        uploads.len() == 1 && uploads[0].ends_with(".tar") && uploads[0].len() == 68,
        "{uploads:?}"
    );
    // The same context again: the server has it, the build still works.
    server.ok(&["template", "build", "withctx2", "-f", burrowfile]);
    let id = server
        .ok(&["create", "--template", "withctx"])
        .trim()
        .to_string();
    assert_eq!(
        server.ok(&[
            "exec",
            &id,
            "--",
            "cat",
            "/opt/app/hello.txt",
            "/etc/hello.txt"
        ]),
        "hello from the context\nhello from the context\n"
    );
    server.ok(&["rm", &id]);

    // A COPY source outside the build file's directory is refused by the CLI itself.
    std::fs::write(
        context.join("Evil"),
        "FROM base\nCOPY ../../etc/passwd /x\n",
    )
    .unwrap();
    let out = server.cli(&[
        "template",
        "build",
        "evil",
        "-f",
        context.join("Evil").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inside the build file's directory"), "{err}");
    std::fs::remove_dir_all(&context).unwrap();
}

/// Writes a blob into an OCI layout, returning its descriptor.
fn oci_blob(layout: &std::path::Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

#[test]
fn template_imports_upload_rootfs_and_oci_dirs() {
    require_sandboxes!();
    let server = TestServer::start();
    let work = common::tempdir("burrow-cli-imports");
    // A rootfs directory: packed and uploaded by the CLI.
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), "from a rootfs dir\n").unwrap();
    std::os::unix::fs::symlink("/etc/hello", rootfs.join("abs-link")).unwrap();
    server.ok(&[
        "template",
        "build",
        "fromdir",
        "--from-rootfs",
        rootfs.to_str().unwrap(),
    ]);
    let layer = server.data_dir.join("templates/fromdir/layers/0");
    assert_eq!(
        std::fs::read_to_string(layer.join("etc/hello")).unwrap(),
        "from a rootfs dir\n"
    );
    // Absolute symlinks of a rootfs are data (they resolve inside the sandbox).
    assert_eq!(
        std::fs::read_link(layer.join("abs-link")).unwrap(),
        std::path::Path::new("/etc/hello")
    );

    // An OCI layout directory with one layer.
    let layout = work.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut layer_tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(8);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    layer_tar
        .append_data(&mut header, "etc/oci", &b"from oci"[..])
        .unwrap();
    let layer_tar = layer_tar.into_inner().unwrap();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]}, "rootfs": {"type": "layers", "diff_ids": []}});
    let config = oci_blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let layer = oci_blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        &layer_tar,
    );
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer]});
    let manifest = oci_blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    server.ok(&[
        "template",
        "build",
        "fromoci",
        "--from-oci",
        layout.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(server.data_dir.join("templates/fromoci/layers/0/etc/oci"))
            .unwrap(),
        "from oci"
    );
    let listed = server.ok(&["template", "ls", "--json"]);
    assert!(
        listed.contains("fromdir") && listed.contains("fromoci"),
        "{listed}"
    );
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn restart_brings_an_error_sandbox_back_with_its_files() {
    require_sandboxes!();
    let server = TestServer::start();
    let id = server
        .ok(&["create", "--idle-timeout", "0"])
        .trim()
        .to_string();
    server.ok(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo kept > /home/user/marker",
    ]);
    let info = |id: &str| -> serde_json::Value {
        serde_json::from_str(&server.ok(&["info", id, "--json"])).unwrap()
    };
    let token = info(&id)["envd_access_token"].clone();
    // Its init dies (killed from the host): the sandbox is `error`, its files stay.
    let runtime: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            server
                .data_dir
                .join("sandboxes")
                .join(&id)
                .join("runtime.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let init = runtime["init_pid"].as_i64().unwrap() as i32;
    // SAFETY: kill with the pid of the sandbox's init, which this test owns.
    unsafe { libc::kill(init, libc::SIGKILL) };
    let start = std::time::Instant::now();
    while info(&id)["state"] != "error" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "not error after its init was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = server.cli(&["exec", &id, "--", "true"]);
    assert_eq!(refused.status.code(), Some(1));

    assert_eq!(server.ok(&["restart", &id]), format!("{id}  running\n"));
    assert_eq!(
        server.ok(&["exec", &id, "--", "cat", "/home/user/marker"]),
        "kept\n"
    );
    assert_eq!(info(&id)["envd_access_token"], token);
    // Only a sandbox in `error` restarts; an unknown one is a 404.
    let running = server.cli(&["restart", &id]);
    assert_eq!(running.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&running.stderr).contains("restart_refused"),
        "{}",
        String::from_utf8_lossy(&running.stderr)
    );
    let missing = server.cli(&["restart", "inosuchsandbox000000"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    server.ok(&["rm", &id]);
}

#[test]
fn workspaces_keys_usage_retention_and_audit_through_the_cli() {
    require_sandboxes!();
    let server = TestServer::start();
    assert_eq!(
        server
            .ok(&["workspace", "create", "acme", "--tier", "team"])
            .trim(),
        "acme"
    );
    server.ok(&["workspace", "create", "bravo"]);
    let key_of = |workspace: &str| {
        let out = server.ok(&["key", "create", "--workspace", workspace, "--role", "admin"]);
        out.lines().last().unwrap().trim().to_string()
    };
    let (acme, bravo) = (key_of("acme"), key_of("bravo"));
    let as_key = |key: &str, args: &[&str]| {
        std::process::Command::new(common::burrow_bin())
            .args(args)
            .env("BURROW_URL", &server.url)
            .env("BURROW_API_KEY", key)
            .output()
            .unwrap()
    };
    let out = as_key(&acme, &["create"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let listed = String::from_utf8_lossy(&as_key(&acme, &["ls"]).stdout).to_string();
    assert!(listed.contains(&id), "{listed}");
    // bravo finds nothing of acme's.
    let out = as_key(&bravo, &["info", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let listed = String::from_utf8_lossy(&as_key(&bravo, &["ls", "--json"]).stdout).to_string();
    assert_eq!(listed.trim(), "[]");
    assert!(!server.ok(&["ls", "--workspace", "default"]).contains(&id));
    let info: serde_json::Value =
        serde_json::from_str(&server.ok(&["workspace", "info", "acme", "--json"])).unwrap();
    assert_eq!(info["sandboxes"], 1);
    assert_eq!(info["quotas"]["max_awake_sandboxes"], 50);
    assert_eq!(info["in_use"]["awake_sandboxes"], 1, "{info}");

    let csv = server.ok(&[
        "usage",
        "--workspace",
        "acme",
        "--since",
        "1h",
        "--format",
        "csv",
    ]);
    assert!(
        csv.starts_with("workspace,workspace_id,sandbox_id,"),
        "{csv}"
    );
    let projection: serde_json::Value = serde_json::from_str(&server.ok(&[
        "usage",
        "project",
        "--sandboxes",
        "10",
        "--active-ratio",
        "0.5",
        "--json",
    ]))
    .unwrap();
    assert_eq!(projection["projection"]["sandboxes"], 10);
    let text = server.ok(&["usage", "project", "--sandboxes", "10"]);
    assert!(text.contains("always on"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&server.ok(&[
        "retention",
        "report",
        "--workspace",
        "acme",
        "--window",
        "1d",
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["all_deleted"], true, "{report}");
    let audit = String::from_utf8_lossy(&as_key(&acme, &["audit", "--json"]).stdout).to_string();
    assert!(audit.contains("POST /v1/sandboxes"), "{audit}");
    assert!(
        !audit.contains(&acme) && !audit.contains(&bravo),
        "no key in the audit log"
    );

    let out = server.cli(&["workspace", "rm", "acme"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    server.ok(&["workspace", "rm", "acme", "--force"]);
    let out = as_key(&acme, &["ls"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert!(
        server
            .ok(&["retention", "report"])
            .contains("workspace-removed")
    );
}
