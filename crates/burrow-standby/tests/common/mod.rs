//! Real test sandboxes for the standby tests and the bench: a pre-created network namespace,
//! freezer + memory cgroups, an overlayfs root holding `standby-testee`, and pid/mnt/uts/ipc
//! namespaces. Needs root.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The testee binary.
pub fn testee_path() -> PathBuf {
    crate_binary(
        option_env!("CARGO_BIN_EXE_standby-testee"),
        "standby-testee",
    )
}

/// A binary of this crate: where cargo says (tests), else in the test/example binary's
/// parent dir (target/<profile>/; the bench needs `cargo build -p burrow-standby --bins`).
fn crate_binary(from_cargo: Option<&str>, name: &str) -> PathBuf {
    if let Some(p) = from_cargo {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join(name)
}

/// A network namespace made with `ip netns add`, loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn create(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run("ip", &["netns", "add", name]);
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
        Self {
            name: name.to_string(),
            path: PathBuf::from(format!("/run/netns/{name}")),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// freezer + memory cgroup v1 dirs, removed on drop (after the tasks are gone).
pub struct Cgroups {
    pub freezer: PathBuf,
    pub memory: PathBuf,
}

impl Cgroups {
    pub fn create(name: &str) -> Self {
        let freezer = PathBuf::from(format!("/sys/fs/cgroup/freezer/{name}"));
        let memory = PathBuf::from(format!("/sys/fs/cgroup/memory/{name}"));
        for d in [&freezer, &memory] {
            if d.exists() {
                let _ = fs::remove_dir(d);
            }
            fs::create_dir_all(d).unwrap();
        }
        Self { freezer, memory }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = fs::write(self.freezer.join("freezer.state"), "THAWED");
        for d in [&self.freezer, &self.memory] {
            for _ in 0..200 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Dirs of one sandbox: lower (binary + libs), upper, work, rootfs mount point.
pub struct Rootfs {
    pub base: tempfile::TempDir,
}

impl Rootfs {
    pub fn prepare() -> Self {
        let base = tempfile::Builder::new()
            .prefix("standby-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let lower = base.path().join("lower");
        for d in ["lower/proc", "lower/.oldroot", "upper", "work", "rootfs"] {
            fs::create_dir_all(base.path().join(d)).unwrap();
        }
        fs::create_dir_all(lower.join("dev")).unwrap();
        run(
            "mknod",
            &[
                "-m",
                "666",
                lower.join("dev/null").to_str().unwrap(),
                "c",
                "1",
                "3",
            ],
        );
        let testee = testee_path();
        fs::copy(&testee, lower.join("standby-testee")).unwrap();
        let ldd = Command::new("ldd").arg(&testee).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = line.split_ascii_whitespace().find(|w| w.starts_with('/'));
            if let Some(path) = path {
                let target = lower.join(path.trim_start_matches('/'));
                fs::create_dir_all(target.parent().unwrap()).unwrap();
                fs::copy(path, &target).unwrap();
            }
        }
        Self { base }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    /// Mounts the overlay at `rootfs/` in the host mount namespace (for a CRIU restore).
    pub fn mount_on_host(&self) {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.dir("lower").display(),
            self.dir("upper").display(),
            self.dir("work").display()
        );
        run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &opts,
                self.dir("rootfs").to_str().unwrap(),
            ],
        );
    }

    pub fn unmount_on_host(&self) {
        let _ = Command::new("umount")
            .args(["-l", self.dir("rootfs").to_str().unwrap()])
            .output();
    }
}

/// A running test sandbox.
pub struct Sandbox {
    pub netns: Netns,
    pub cgroups: Cgroups,
    pub rootfs: Rootfs,
    pub init_pid: i32,
    pub port: u16,
    pinger: mpsc::Sender<PingJob>,
}

impl Sandbox {
    pub fn launch(name: &str, mem_mib: usize) -> Self {
        Self::launch_with(name, mem_mib, None)
    }

    /// `userns_base`: run in a user namespace mapping 0..65536 to host base.. (like burrow), with
    /// /dev/null bind-mounted from the host (device nodes do not work on a userns-owned overlay).
    pub fn launch_with(name: &str, mem_mib: usize, userns_base: Option<u32>) -> Self {
        Self::launch_full(name, mem_mib, userns_base, false)
    }

    /// `own_netns`: the sandbox creates its netns inside its user namespace (owned by it, as
    /// CRIU requires for userns sandboxes); it is then bind-mounted at /run/netns/<name>.
    pub fn launch_full(
        name: &str,
        mem_mib: usize,
        userns_base: Option<u32>,
        own_netns: bool,
    ) -> Self {
        let netns = if own_netns {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            Netns {
                name: name.to_string(),
                path: PathBuf::from(format!("/run/netns/{name}")),
            }
        } else {
            Netns::create(name)
        };
        let cgroups = Cgroups::create(name);
        let rootfs = Rootfs::prepare();
        let mut extra = Vec::new();
        if let Some(base) = userns_base {
            let null = rootfs.dir("lower/dev/null");
            fs::remove_file(&null).unwrap();
            fs::write(&null, b"").unwrap();
            let owner = format!("{base}:{base}");
            for d in ["upper", "work"] {
                run("chown", &[&owner, rootfs.dir(d).to_str().unwrap()]);
            }
            extra = vec!["--userns".to_string(), base.to_string()];
        }
        let port = 7000;
        let out = Command::new(testee_path())
            .arg("launch")
            .args([
                "--netns",
                if own_netns {
                    "new"
                } else {
                    netns.path.to_str().unwrap()
                },
            ])
            .args(["--lower", rootfs.dir("lower").to_str().unwrap()])
            .args(["--upper", rootfs.dir("upper").to_str().unwrap()])
            .args(["--work", rootfs.dir("work").to_str().unwrap()])
            .args(["--rootfs", rootfs.dir("rootfs").to_str().unwrap()])
            .args(["--mem", &mem_mib.to_string(), "--port", &port.to_string()])
            .args(["--cgroup", cgroups.freezer.to_str().unwrap()])
            .args(["--cgroup", cgroups.memory.to_str().unwrap()])
            .args(&extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "launch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let init_pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        if own_netns {
            fs::create_dir_all("/run/netns").unwrap();
            fs::write(&netns.path, b"").unwrap();
            run(
                "mount",
                &[
                    "--bind",
                    &format!("/proc/{init_pid}/ns/net"),
                    netns.path.to_str().unwrap(),
                ],
            );
        }
        let pinger = spawn_pinger(&netns.path, port);
        let sandbox = Self {
            netns,
            cgroups,
            rootfs,
            init_pid,
            port,
            pinger,
        };
        sandbox.wait_ready(Duration::from_secs(10));
        sandbox
    }

    /// Sends one command; the answer line, or an error (refused, timed out).
    pub fn request(&self, command: &str, timeout: Duration) -> Result<String, String> {
        let (tx, rx) = mpsc::channel();
        self.pinger
            .send((command.to_string(), timeout, tx))
            .unwrap();
        rx.recv().unwrap()
    }

    /// `(counter, pid in sandbox, ppid in sandbox)`.
    pub fn ping(&self) -> Result<(u64, u32, u32), String> {
        let line = self.request("ping", Duration::from_secs(5))?;
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        match f.as_slice() {
            ["pong", c, p, pp] => Ok((c.parse().unwrap(), p.parse().unwrap(), pp.parse().unwrap())),
            _ => Err(format!("bad answer {line:?}")),
        }
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.request("ping", Duration::from_secs(1)).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "sandbox did not answer within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Polls until ping answers; returns the time it took.
    pub fn time_to_pong(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.request("ping", Duration::from_millis(500)).is_ok() {
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "no pong within {timeout:?}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Host pids of the tree (from the freezer cgroup).
    pub fn pids(&self) -> Vec<i32> {
        burrow_standby::cgroup::procs(&self.cgroups.freezer).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = fs::write(self.cgroups.freezer.join("freezer.state"), "THAWED");
        for pid in burrow_standby::cgroup::procs(&self.cgroups.freezer).unwrap_or_default() {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.rootfs.unmount_on_host();
    }
}

type PingJob = (String, Duration, mpsc::Sender<Result<String, String>>);

/// A thread living in the sandbox's netns that talks to 127.0.0.1:<port> for us.
fn spawn_pinger(netns: &Path, port: u16) -> mpsc::Sender<PingJob> {
    let (tx, rx) = mpsc::channel::<PingJob>();
    let ns = fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on an open nsfs fd; only this thread changes network namespace.
        let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
        for (command, timeout, reply) in rx {
            let _ = reply.send(talk(port, &command, timeout));
        }
    });
    tx
}

fn talk(port: u16, command: &str, timeout: Duration) -> Result<String, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    Ok(line.trim().to_string())
}

/// CRIU settings for tests: `BURROW_CRIU_BINARY` overrides the default wrapper.
pub fn criu_config() -> burrow_standby::criu::CriuConfig {
    let mut config = burrow_standby::criu::CriuConfig {
        helper: vec![
            crate_binary(
                option_env!("CARGO_BIN_EXE_criu-worker-helper"),
                "criu-worker-helper",
            )
            .into(),
        ],
        ..Default::default()
    };
    if let Some(binary) = std::env::var_os("BURROW_CRIU_BINARY") {
        config.binary = binary.into();
    }
    if let Some(dir) = std::env::var_os("BURROW_CRIU_KDAT_TMPFS") {
        let dir = PathBuf::from(dir);
        burrow_standby::criu::ensure_kdat_tmpfs(&dir).unwrap();
        config.kdat_tmpfs = Some(dir);
    }
    config
}

/// Waits until a pid is gone (killed and reaped by its parent, usually host init).
pub fn wait_gone(pid: i32, timeout: Duration) {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < timeout,
            "pid {pid} still exists after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
