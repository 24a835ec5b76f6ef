//! Runs the real `burrow-agent` binary on 127.0.0.1:<free port> as root, with a real
//! unprivileged user from this host's /etc/passwd as the default user.

#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use burrow_envd::EnvdClient;

pub const TEST_USER: &str = "burrowtest";

pub struct TestUser {
    pub name: String,
    pub home: String,
    pub uid: u32,
    pub gid: u32,
}

/// Creates the test user with `useradd` if it is missing (tests must run as root).
pub fn test_user() -> TestUser {
    assert!(
        rustix::process::geteuid().is_root(),
        "burrow-agent integration tests need root (they start processes as another user)"
    );
    let lookup = || {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == TEST_USER).then(|| TestUser {
                name: f[0].into(),
                uid: f[2].parse().unwrap(),
                gid: f[3].parse().unwrap(),
                home: f[5].into(),
            })
        })
    };
    let user = match lookup() {
        Some(u) => u,
        None => {
            let status = Command::new("useradd")
                .args(["-m", "-s", "/bin/bash", TEST_USER])
                .status()
                .expect("run useradd");
            // Another test may have created it concurrently; only the lookup result matters.
            let _ = status;
            lookup().expect("test user exists after useradd")
        }
    };
    own_home(&user);
    user
}

/// The agent writes in the user's home with the user's permissions, so the home must be
/// theirs (a home left behind by an earlier user of the same name may have another owner).
fn own_home(user: &TestUser) {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(&user.home).unwrap();
    let meta = std::fs::metadata(&user.home).unwrap();
    if meta.uid() != user.uid || meta.gid() != user.gid {
        std::os::unix::fs::chown(&user.home, Some(user.uid), Some(user.gid)).unwrap();
    }
}

#[derive(Default)]
pub struct AgentOptions {
    pub access_token: Option<String>,
    pub env_json: Option<String>,
    pub default_workdir: Option<String>,
}

pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    pub client: EnvdClient,
    pub user: TestUser,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Agent {
    pub fn start(opts: AgentOptions) -> Agent {
        let user = test_user();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (ready_read, ready_write) = rustix::pipe::pipe().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_burrow-agent"));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("BURROW_LISTEN", addr.to_string())
            .env("BURROW_DEFAULT_USER", &user.name)
            .env("BURROW_SANDBOX_ID", "sbxtest")
            .env("BURROW_TEMPLATE", "tpl")
            .env("BURROW_READY_FD", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(t) = &opts.access_token {
            cmd.env("BURROW_ACCESS_TOKEN", t);
        }
        if let Some(j) = &opts.env_json {
            cmd.env("BURROW_ENV_JSON", j);
        }
        if let Some(w) = &opts.default_workdir {
            cmd.env("BURROW_DEFAULT_WORKDIR", w);
        }
        let write_fd = ready_write.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it only installs the pipe's write end as fd 3
        // in the forked child before exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn burrow-agent");
        drop(ready_write);
        let mut byte = [0u8; 1];
        let n = std::fs::File::from(ready_read).read(&mut byte).unwrap();
        assert_eq!(n, 1, "agent exited before signalling readiness on fd 3");
        let client = EnvdClient::new(addr, opts.access_token.clone()).unwrap();
        Agent {
            child,
            addr,
            client,
            user,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique scratch directory inside the test user's home, owned by root until used.
pub fn scratch(agent: &Agent, name: &str) -> String {
    format!(
        "{}/agent-test-{}-{}",
        agent.user.home,
        name,
        std::process::id()
    )
}
