//! Shared set-up for the root-only integration tests. Commands run inside sandboxes through
//! `burrow-test-agent` (this crate's stand-in agent, launched by the real launcher as the
//! sandbox's root): one TCP connection per shell command.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use burrow_runtime::{Runtime, RuntimeConfig, SandboxHandle, SandboxSpec};

/// The template rootfs from `BURROW_TEST_ROOTFS`, or `None` (test skipped) with a message.
pub fn rootfs() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: burrow-runtime integration tests need root");
        return None;
    }
    match std::env::var_os("BURROW_TEST_ROOTFS").map(PathBuf::from) {
        Some(p) if p.join("bin/sh").exists() => Some(p),
        _ => {
            eprintln!(
                "SKIPPED: set BURROW_TEST_ROOTFS to a Debian rootfs with a `user` (uid 1000) and sudo, e.g. \
                 debootstrap --variant=minbase --include=python3-minimal,procps,sudo bookworm /var/tmp/burrow-dev/rootfs"
            );
            None
        }
    }
}

fn launcher_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BURROW_TEST_LAUNCHER") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/burrow-launch
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("burrow-launch");
    assert!(
        path.exists(),
        "{path:?} missing: run `cargo build -p burrow-launch` first (or set BURROW_TEST_LAUNCHER)"
    );
    path
}

/// A runtime on a fresh data dir `/var/tmp/burrow-test/<name>`.
pub async fn runtime(name: &str) -> (Runtime, PathBuf) {
    let data_dir = PathBuf::from("/var/tmp/burrow-test").join(name);
    remove_data_dir(&data_dir);
    std::fs::create_dir_all(&data_dir).unwrap();
    // Private data dir: sandboxes must not depend on traversing it as their host uid.
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let rt = Runtime::new(config(&data_dir)).await.expect("Runtime::new");
    (rt, data_dir)
}

pub fn config(data_dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: data_dir.to_owned(),
        launcher_path: launcher_path(),
        // BURROW_TEST_AGENT: run with another agent (e.g. the real burrow-agent; only the perf
        // test works with it, the others speak the stand-in's protocol).
        agent_path: std::env::var_os("BURROW_TEST_AGENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_burrow-test-agent"))),
        net_pool_size: 4,
    }
}

/// Unmounts the data dir's quota filesystem and deletes it.
pub fn remove_data_dir(data_dir: &Path) {
    let sandboxes = data_dir.join("sandboxes");
    // The runtime's pool filler may hold the filesystem open for a few seconds after drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&format!(" {} ", sandboxes.display()))
    {
        let ok = std::process::Command::new("umount")
            .arg(&sandboxes)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok && std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(data_dir);
}

pub fn spec(id: &str, rootfs: &Path) -> SandboxSpec {
    SandboxSpec {
        id: id.to_owned(),
        template: "test".to_owned(),
        layers: vec![rootfs.to_owned()],
        cpus: 1.0,
        memory_mb: 256,
        disk_mb: 64,
        pids_max: 128,
        env: BTreeMap::new(),
        access_token: None,
        default_user: "user".to_owned(),
        default_workdir: None,
        zdr: false,
    }
}

/// Runs `/bin/sh -c command` as root inside the sandbox; returns (exit code, stdout+stderr).
pub fn sh(handle: &SandboxHandle, command: &str) -> (i32, String) {
    let mut stream = TcpStream::connect_timeout(&handle.agent_addr(), Duration::from_secs(5))
        .expect("connect agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    eprintln!("[{}]$ {command}", handle.id);
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    if let Err(e) = stream.read_to_string(&mut reply) {
        panic!("no reply from the agent to {command:?}: {e}");
    }
    let (code, output) = reply.split_once('\n').unwrap_or((&reply, ""));
    (code.trim().parse().unwrap_or(-1), output.to_owned())
}

/// Asserts nothing of sandbox `id` (uid range `uid_base`) is left on the host.
pub fn assert_no_leftovers(data_dir: &Path, id: &str, uid_base: u32) {
    // Any runtime instance's parent (`burrow`, `burrow<n>`): the id must be gone from all of them.
    for ctrl in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
        let base = Path::new("/sys/fs/cgroup").join(ctrl);
        let parents = std::fs::read_dir(&base)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("burrow"));
        for parent in parents {
            let dir = parent.path().join(id);
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
    }
    assert!(
        !data_dir.join("sandboxes").join(id).exists(),
        "sandbox dir still exists"
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&format!("/{id}/")),
        "a mount mentions {id}"
    );
    let range = uid_base..uid_base + 0x10000;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let uid: Option<u32> = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok());
        if let Some(uid) = uid {
            assert!(
                !range.contains(&uid),
                "process {pid} still runs as sandbox uid {uid}"
            );
        }
    }
}
