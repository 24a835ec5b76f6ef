//! The files APIs act with the selected user's permissions inside a real sandbox (issue 12,
//! item 11): as `user` (the template's default) neither the native `/v1/.../files` API nor
//! envd's `/files` and `filesystem.Filesystem` on the agent read `/etc/shadow`, write
//! `/etc/sudoers.d/`, list `/root` or change root's files; `user=root` can do all of it.
//! Needs root and the base template (skipped with a message otherwise).

mod common;

use burrow_envd::{Code, EnvdClient, EnvdError};
use bytes::Bytes;
use common::{TestServer, expect_error, install_test_template};
use futures::StreamExt;
use serde_json::{Value, json};

fn q(path: &str) -> String {
    url::form_urlencoded::byte_serialize(path.as_bytes()).collect()
}

async fn read_envd(
    envd: &EnvdClient,
    path: &str,
    user: Option<&str>,
) -> Result<Vec<u8>, EnvdError> {
    let mut stream = envd.read_file(path, user).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn write_envd(envd: &EnvdClient, path: &str, user: Option<&str>) -> Result<(), EnvdError> {
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(
        b"user ALL=(ALL) NOPASSWD:ALL\n",
    ))]);
    envd.write_file(path, user, body).await.map(|_| ())
}

fn assert_denied<T: std::fmt::Debug>(result: Result<T, EnvdError>, what: &str) {
    match result {
        Ok(v) => panic!("{what}: allowed for user: {v:?}"),
        Err(e) => assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e}"),
    }
}

/// The native API, as the default user and as root.
async fn native_api(server: &TestServer, id: &str) {
    let files = format!("/v1/sandboxes/{id}/files");
    let get = |path: &str, user: &str| server.get(&format!("{files}?path={}{user}", q(path)));

    let shadow = get("/etc/shadow", "").send().await.unwrap();
    expect_error(shadow, 403, "permission_denied").await;
    let planted = server
        .put(&format!(
            "{files}?path={}",
            q("/etc/sudoers.d/burrow-planted")
        ))
        .body("user ALL=(ALL) NOPASSWD:ALL\n")
        .send()
        .await
        .unwrap();
    expect_error(planted, 403, "permission_denied").await;
    let listed = server
        .get(&format!("{files}/list?path=/root"))
        .send()
        .await
        .unwrap();
    expect_error(listed, 403, "permission_denied").await;
    let made = server
        .post(&format!("{files}/mkdir?path=/root/planted"))
        .send()
        .await
        .unwrap();
    expect_error(made, 403, "permission_denied").await;
    let removed = server
        .delete(&format!("{files}?path=/etc/passwd"))
        .send()
        .await
        .unwrap();
    expect_error(removed, 403, "permission_denied").await;

    // In the user's home: works, and the new file and its parents are the user's.
    let put = server
        .put(&format!("{files}?path=mine/new/a.txt"))
        .body("mine")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let entry: Value = put.json().await.unwrap();
    assert_eq!(
        (&entry["owner"], &entry["group"]),
        (&json!("user"), &json!("user"))
    );
    let list: Vec<Value> = server
        .get(&format!("{files}/list?path=/home/user/mine"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["name"], "new");
    assert_eq!(list[0]["owner"], "user");

    // root: everything works.
    let shadow = get("/etc/shadow", "&user=root").send().await.unwrap();
    assert_eq!(shadow.status(), 200);
    assert!(shadow.text().await.unwrap().starts_with("root:"));
    let put = server
        .put(&format!(
            "{files}?path={}&user=root",
            q("/etc/sudoers.d/burrow-root")
        ))
        .body("# by root\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let entry: Value = put.json().await.unwrap();
    assert_eq!(entry["owner"], "root");
    let listed = server
        .get(&format!("{files}/list?path=/root&user=root"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let made = server
        .post(&format!("{files}/mkdir?path=/root/made&user=root"))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let removed = server
        .delete(&format!(
            "{files}?path={}&user=root",
            q("/etc/sudoers.d/burrow-root")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let gone = get("/etc/sudoers.d/burrow-planted", "&user=root")
        .send()
        .await
        .unwrap();
    expect_error(gone, 404, "file_not_found").await;
}

/// envd's own API on the agent (what the E2B SDKs call), as the default user and as root.
async fn envd_api(envd: &EnvdClient) {
    assert_denied(
        read_envd(envd, "/etc/shadow", None).await,
        "GET /files /etc/shadow",
    );
    assert_denied(
        write_envd(envd, "/etc/sudoers.d/burrow-envd", None).await,
        "POST /files /etc/sudoers.d",
    );
    assert_denied(envd.stat("/root/.profile", None).await, "Stat in /root");
    assert_denied(envd.list_dir("/root", 1, None).await, "ListDir /root");
    assert_denied(
        envd.make_dir("/root/planted", None).await,
        "MakeDir in /root",
    );
    assert_denied(envd.remove("/etc/passwd", None).await, "Remove /etc/passwd");
    assert_denied(
        envd.rename("/etc/passwd", "/home/user/passwd", None).await,
        "Move /etc/passwd",
    );

    let made = envd.make_dir("envd/dir", None).await.unwrap();
    assert_eq!((made.owner.as_str(), made.group.as_str()), ("user", "user"));
    let moved = envd
        .rename("envd/dir", "envd/moved/dir", None)
        .await
        .unwrap();
    assert_eq!(moved.path, "/home/user/envd/moved/dir");
    assert_eq!(envd.stat("envd/moved", None).await.unwrap().owner, "user");
    write_envd(envd, "envd/f", None).await.unwrap();
    assert_eq!(envd.stat("envd/f", None).await.unwrap().owner, "user");
    envd.remove("envd", None).await.unwrap();

    let root = Some("root");
    let shadow = read_envd(envd, "/etc/shadow", root).await.unwrap();
    assert!(shadow.starts_with(b"root:"));
    assert_eq!(
        envd.stat("/root/.profile", root).await.unwrap().owner,
        "root"
    );
    assert!(!envd.list_dir("/root", 1, root).await.unwrap().is_empty());
    write_envd(envd, "/etc/sudoers.d/burrow-envd-root", root)
        .await
        .unwrap();
    envd.remove("/etc/sudoers.d/burrow-envd-root", root)
        .await
        .unwrap();
    // Nothing the user tried is there.
    for path in ["/etc/sudoers.d/burrow-envd", "/root/planted"] {
        let err = envd.stat(path, root).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{path}: {err}");
    }
    assert!(envd.stat("/etc/passwd", root).await.is_ok());
}

#[tokio::test]
async fn files_apis_act_with_the_users_permissions() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let sandbox: Value = resp.json().await.unwrap();
    let id = sandbox["id"].as_str().unwrap().to_string();
    let ip: std::net::Ipv4Addr = sandbox["ip"].as_str().unwrap().parse().unwrap();
    let token = sandbox["envd_access_token"].as_str().map(String::from);
    let envd = EnvdClient::new((ip, burrow_types::ENVD_PORT).into(), token).unwrap();

    native_api(&server, &id).await;
    envd_api(&envd).await;

    let resp = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    server.stop().await;
}
