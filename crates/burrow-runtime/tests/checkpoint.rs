//! Deep standby of a real sandbox (base template, real launcher, netns owned by the sandbox's
//! user namespace): create → state → checkpoint → processes gone → restore → same pids, memory,
//! files, agent answering; 3 cycles; then destroy leaves nothing behind.
//! Needs root, the base template (/var/lib/burrow/templates/base) and CRIU
//! (/opt/burrow/criu/criu or BURROW_CRIU_BINARY); skipped with a message otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burrow_runtime::SandboxHandle;

const BASE_LAYER: &str = "/var/lib/burrow/templates/base/layers/0";

/// A python counter that ticks every 10 ms in memory only; it answers on TCP 127.0.0.1:7000 with "<count> <pid>".
const COUNTER: &str = r#"
import socket, threading, time, os
n = 0
def tick():
    global n
    while True:
        n += 1
        time.sleep(0.01)
threading.Thread(target=tick, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 7000)); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(f"{n} {os.getpid()}".encode()); c.close()
"#;

fn prerequisites() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: deep standby tests need root");
        return None;
    }
    if !Path::new(BASE_LAYER).join("usr/bin/python3").exists() {
        eprintln!("SKIPPED: no base template at {BASE_LAYER} (burrow template build base)");
        return None;
    }
    let criu = std::env::var_os("BURROW_CRIU_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/burrow/criu/criu"));
    if !criu.exists() {
        eprintln!("SKIPPED: no CRIU at {criu:?} (scripts/install-criu.sh)");
        return None;
    }
    Some(PathBuf::from(BASE_LAYER))
}

fn counter(h: &SandboxHandle) -> (u64, u32) {
    let (code, out) = common::sh(
        h,
        "python3 -c 'import socket; s=socket.create_connection((\"127.0.0.1\",7000)); print(s.recv(100).decode())'",
    );
    assert_eq!(code, 0, "{out}");
    let mut it = out.split_whitespace();
    let n = it.next().and_then(|v| v.parse().ok()).expect("count");
    let pid = it.next().and_then(|v| v.parse().ok()).expect("pid");
    (n, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_restore_three_cycles_keep_pids_memory_files() {
    let Some(layer) = prerequisites() else { return };
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    // SAFETY: set before the runtime (or any other thread of this test binary) reads it.
    unsafe { std::env::set_var("BURROW_NETNS_MODE", "sandbox") };
    let (rt, data_dir) = common::runtime("checkpoint").await;
    let mut spec = common::spec("ckpt1", &layer);
    spec.disk_mb = 512;
    let h = rt.create(spec).await.expect("create");
    let (code, out) = common::sh(
        &h,
        &format!(
            "printf '%b' '{}' > /root/counter.py && echo kept > /root/file && \
             (setsid python3 /root/counter.py </dev/null >/dev/null 2>&1 &) && sleep 0.5",
            // The stand-in agent reads one line per command: newlines travel as `\n` escapes.
            COUNTER.replace('\n', "\\n")
        ),
    );
    assert_eq!(code, 0, "{out}");
    let (mut last, py_pid) = counter(&h);
    let (_, agent_pids) = common::sh(&h, "cat /proc/1/status | grep ^Pid; hostname");
    let mut handle = h.clone();
    let mut restore_ms = Vec::new();
    for cycle in 0..3 {
        let info = rt.checkpoint(&handle.id).await.expect("checkpoint");
        eprintln!(
            "cycle {cycle}: checkpoint {:.1} ms, image {} KiB",
            info.duration.as_secs_f64() * 1e3,
            info.image_bytes / 1024
        );
        assert!(info.image_bytes > 0);
        assert!(!rt.is_alive(&handle), "init survived the checkpoint");
        assert!(
            std::net::TcpStream::connect_timeout(&handle.agent_addr(), Duration::from_millis(200))
                .is_err(),
            "agent still answers after checkpoint"
        );
        let procs = std::fs::read_to_string(rt.cgroup_dir("pids", &handle.id).join("cgroup.procs"))
            .unwrap();
        assert!(procs.trim().is_empty(), "processes left: {procs}");
        std::thread::sleep(Duration::from_millis(300));

        let t = Instant::now();
        let restored = rt.restore(&handle.id).await.expect("restore");
        restore_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_ne!(restored.init_pid, handle.init_pid, "new host pid expected");
        assert!(rt.is_alive(&restored));
        let (n, pid) = counter(&restored);
        assert_eq!(pid, py_pid, "python keeps its in-sandbox pid");
        assert!(n >= last, "counter went back: {n} < {last}");
        // It did not tick while checkpointed (300 ms = ~30 ticks), only a little since restore.
        let (_, file) = common::sh(&restored, "cat /root/file");
        assert_eq!(file.trim(), "kept");
        let (_, again) = common::sh(&restored, "cat /proc/1/status | grep ^Pid; hostname");
        assert_eq!(again, agent_pids);
        let saved: SandboxHandle = serde_json::from_slice(
            &std::fs::read(data_dir.join("sandboxes/ckpt1/runtime.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(saved.init_pid, restored.init_pid, "runtime.json updated");
        last = n;
        handle = restored;
    }
    restore_ms.sort_by(f64::total_cmp);
    eprintln!(
        "restore (request → agent answering) ms: {restore_ms:?}, p50 {:.1}",
        restore_ms[restore_ms.len() / 2]
    );
    rt.destroy(&handle.id).await.expect("destroy");
    common::assert_no_leftovers(&data_dir, &handle.id, handle.uid_base);
    drop(rt);
    common::remove_data_dir(&data_dir);
}

/// Sandbox root owns its netns in this mode and may set any address on eth0: the firewall must
/// drop what it sends from an address that is not its own (checked with a TCP connection to
/// the outside), while its own address still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_source_addresses_are_dropped() {
    let Some(layer) = prerequisites() else { return };
    // An outside address the sandbox may reach (package registries are reachable here).
    let Some(target) = std::net::ToSocketAddrs::to_socket_addrs(&("pypi.org", 443))
        .ok()
        .and_then(|mut addrs| addrs.find(|a| a.is_ipv4()))
    else {
        eprintln!("SKIPPED: cannot resolve pypi.org on the host");
        return;
    };
    let target_ip = target.ip();
    // SAFETY: set before the runtime (or any other thread of this test binary) reads it.
    unsafe { std::env::set_var("BURROW_NETNS_MODE", "sandbox") };
    let (rt, data_dir) = common::runtime("antispoof").await;
    let h = rt
        .create(common::spec("spoof1", &layer))
        .await
        .expect("create");
    let [a, b, c, d] = h.ip.octets();
    let spoofed = std::net::Ipv4Addr::new(a, b, c, d ^ 0x40);
    // First layer: the sandbox's root has no CAP_NET_ADMIN (capability bounding set).
    let (code, out) = common::sh(&h, &format!("ip addr add {spoofed}/32 dev eth0"));
    assert_ne!(code, 0, "sandbox root must not configure its netns: {out}");
    // Second layer, for a process that got CAP_NET_ADMIN there anyway: host root plays it.
    let netns = format!("--net=/proc/{}/ns/net", h.init_pid);
    let in_netns = |args: &[&str]| {
        let out = std::process::Command::new("nsenter")
            .arg(&netns)
            .args(args)
            .output()
            .expect("run nsenter");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let connect_from = |src: String| {
        in_netns(&[
            "python3",
            "-c",
            &format!(
                "import socket; s=socket.socket(); s.bind((\"{src}\", 0)); s.settimeout(2)\n\
                 try:\n    s.connect((\"{target_ip}\", 443)); print(\"connected\")\n\
                 except OSError as e:\n    print(\"failed\", e)"
            ),
        ])
    };
    let own = connect_from(h.ip.to_string());
    assert_eq!(
        own.trim(),
        "connected",
        "from the sandbox's own address: {own}"
    );
    let added = in_netns(&["ip", "addr", "add", &format!("{spoofed}/32"), "dev", "eth0"]);
    assert!(added.trim().is_empty(), "ip addr add: {added}");
    // Forget entries an earlier run may have left for this address (exits 1 if none).
    let _ = std::process::Command::new("conntrack")
        .args(["-D", "-s", &spoofed.to_string()])
        .output();
    let forged = connect_from(spoofed.to_string());
    assert!(
        forged.contains("timed out"),
        "a connection from a forged address must not be answered: {forged}"
    );
    // The reply could be lost on its way back anyway; what shows the firewall dropped the
    // forged SYN is that it never became a (confirmed) conntrack entry on the host.
    let tracked = std::process::Command::new("conntrack")
        .args(["-L", "-s", &spoofed.to_string()])
        .output()
        .expect("run conntrack");
    let tracked = String::from_utf8_lossy(&tracked.stdout);
    assert!(
        !tracked.contains(&spoofed.to_string()),
        "the forged SYN passed the host's forward chain: {tracked}"
    );
    rt.destroy(&h.id).await.expect("destroy");
    common::assert_no_leftovers(&data_dir, &h.id, h.uid_base);
    drop(rt);
    common::remove_data_dir(&data_dir);
}
