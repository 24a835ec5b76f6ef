//! A real `burrow serve` in a temporary data dir, driven through the real `burrow` CLI.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the `base` template lives (built by `scripts/test.sh` / `scripts/setup.sh`).
pub fn base_template_dir() -> PathBuf {
    std::env::var_os("BURROW_TEST_TEMPLATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/burrow-test-data/templates/base"))
}

/// Why sandbox tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("sandbox tests need root".into());
    }
    let template = base_template_dir();
    if !template.join("template.json").is_file() {
        return Some(format!(
            "no base template at {} (run scripts/test.sh, which builds it)",
            template.display()
        ));
    }
    None
}

/// Skips the calling test (returns from it) with a printed reason when sandboxes can't run here.
#[macro_export]
macro_rules! require_sandboxes {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}

pub struct TestServer {
    pub url: String,
    pub key: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl TestServer {
    pub fn start() -> Self {
        let data_dir = tempdir("burrow-cli-test");
        // Templates are read-only layers: the test server shares the prebuilt base's layers.
        let template_dir = data_dir.join("templates/base");
        std::fs::create_dir_all(&template_dir).unwrap();
        std::fs::copy(
            base_template_dir().join("template.json"),
            template_dir.join("template.json"),
        )
        .unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let bin = burrow_bin();
        let log = std::fs::File::create(data_dir.join("server.log")).unwrap();
        let child = Command::new(&bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--lib-dir")
            .arg(bin.parent().unwrap())
            .env("BURROW_INSTANCE", format!("t{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting burrow serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        let key_path = data_dir.join("client.key");
        loop {
            if key_path.is_file() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start; log:\n{}",
                read_log(&data_dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let key = std::fs::read_to_string(&key_path)
            .unwrap()
            .trim()
            .to_string();
        TestServer {
            url,
            key,
            data_dir,
            child,
        }
    }

    /// Runs `burrow ARGS` against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(burrow_bin());
        cmd.args(args)
            .env("BURROW_URL", &self.url)
            .env("BURROW_API_KEY", &self.key)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running burrow");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs `burrow ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "burrow {args:?} failed ({}): {}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            read_log(&self.data_dir)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        read_log(&self.data_dir)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Delete what the test left, then stop the server gracefully.
        if let Ok(out) = Command::new(burrow_bin())
            .args(["ls", "--json"])
            .env("BURROW_URL", &self.url)
            .env("BURROW_API_KEY", &self.key)
            .output()
            && let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            for sb in list.as_array().into_iter().flatten() {
                if let Some(id) = sb.get("id").and_then(|v| v.as_str()) {
                    let _ = self.cli(&["rm", id]);
                }
            }
        }
        // SAFETY: kill with a pid we own; SIGTERM asks for a graceful shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The runtime loop-mounts its quota filesystem at <data>/sandboxes; release it with the dir.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.data_dir.join("sandboxes"))
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn burrow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_burrow"))
}

pub fn read_log(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_u64() -> u128 {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    u64::from_le_bytes(buf) as u128
}
