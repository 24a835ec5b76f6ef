//! A real burrow server on 127.0.0.1:0 with a temp data dir, and a small client for it.

#![allow(dead_code)]

pub mod deep;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use burrow_server::{CLIENT_KEY_FILE, Server, ServerConfig};
use tokio::sync::oneshot;

/// A data dir for one test, holding a host-wide lock: the linux runtime's host state (network
/// namespaces `burrow-<k>`, cgroups, nftables) is global, so only one runtime may exist at a
/// time, across test threads and test binaries. On drop the runtime's quota filesystem
/// (`<dir>/sandboxes`, a loop mount) is unmounted before the dir is removed.
pub struct TestEnv {
    dir: tempfile::TempDir,
    _lock: Option<std::fs::File>,
}

impl TestEnv {
    pub fn new() -> Self {
        let lock = std::fs::File::create("/run/lock/burrow-runtime-tests.lock").expect("lock file");
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
        Self {
            dir: tempfile::tempdir().unwrap(),
            _lock: Some(lock),
        }
    }

    /// A data dir without the host-wide lock, for tests that start a server but no sandbox:
    /// the server's runtime instance (claimed per data dir) keeps its host state apart.
    pub fn without_runtime_lock() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            _lock: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let sandboxes = self.dir.path().join("sandboxes");
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&sandboxes)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// The HTTPS listener, when the config has one.
    pub tls_addr: Option<SocketAddr>,
    pub key: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `target/debug` of this workspace, where burrow-launch and burrow-agent are built.
fn target_bin(name: &str) -> PathBuf {
    let var = format!("BURROW_TEST_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(var) {
        return PathBuf::from(path);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../../target"));
    target.join("debug").join(name)
}

pub fn config(data_dir: &Path) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        domain: "burrow.test".to_string(),
        launcher_path: target_bin("burrow-launch"),
        agent_path: target_bin("burrow-agent"),
        net_pool_size: 1,
        max_upload_bytes: 1 << 20,
        max_json_bytes: 64 << 10,
        print_new_key: false,
        // Fields added later (TLS, standby tuning) keep their defaults unless a test sets them.
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(config(data_dir)).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let data_dir = config.data_dir.clone();
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let tls_addr = server.tls_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        let key = std::fs::read_to_string(data_dir.join(CLIENT_KEY_FILE))
            .expect("client.key written")
            .trim()
            .to_string();
        Self {
            addr,
            tls_addr,
            key,
            data_dir,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.key)
    }
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(&self.key)
    }
    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.put(self.url(path)).bearer_auth(&self.key)
    }
    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&self.key)
    }

    /// Creates a workspace (`workspace`: the `POST /v1/workspaces` body) with the operator key,
    /// then a key of it (`key`: the `POST /v1/api-keys` body, naming that workspace); returns
    /// the new key.
    pub async fn workspace_key(
        &self,
        workspace: serde_json::Value,
        key: serde_json::Value,
    ) -> String {
        let resp = self
            .post("/v1/workspaces")
            .json(&workspace)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let resp = self.post("/v1/api-keys").json(&key).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let created: serde_json::Value = resp.json().await.unwrap();
        created["key"].as_str().unwrap().to_string()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Asserts status and error code of a failed response; returns the message.
pub async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(body["code"], code, "body: {text}");
    let message = body["message"].as_str().expect("message").to_string();
    assert!(!message.is_empty());
    message
}

/// Makes template `base` available in `data_dir`: a symlink to the real base template
/// (`BURROW_TEST_TEMPLATE_DIR`, default `/var/tmp/burrow-test-data/templates/base`, which `scripts/test.sh` builds), or else a template
/// whose single layer is the Debian rootfs in `BURROW_TEST_ROOTFS` (the runtime tests' rootfs).
/// Returns false, with a printed reason, when neither exists or we are not root.
pub fn install_test_template(data_dir: &Path) -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: sandbox tests need root");
        return false;
    }
    let templates = data_dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let dir = std::env::var("BURROW_TEST_TEMPLATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/burrow-test-data/templates/base"));
    if dir.join("template.json").exists() {
        std::os::unix::fs::symlink(&dir, templates.join("base")).unwrap();
        return true;
    }
    if let Some(rootfs) = std::env::var_os("BURROW_TEST_ROOTFS").map(PathBuf::from)
        && rootfs.join("bin/sh").exists()
    {
        let base = templates.join("base");
        std::fs::create_dir_all(&base).unwrap();
        let template = serde_json::json!({
            "name": "base",
            "layers": [rootfs],
            "env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            "workdir": "/home/user",
            "user": "user",
            "source": "rootfs",
            "created_at": "2026-01-01T00:00:00Z",
            "size_bytes": 0,
        });
        std::fs::write(base.join("template.json"), template.to_string()).unwrap();
        return true;
    }
    eprintln!(
        "SKIPPED: no base template at {} (set BURROW_TEST_TEMPLATE_DIR, or BURROW_TEST_ROOTFS to a Debian rootfs)",
        dir.display()
    );
    false
}
