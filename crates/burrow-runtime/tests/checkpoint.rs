//! Deep standby of a real sandbox (base template, real launcher, netns owned by the sandbox's
//! user namespace): create → state → checkpoint → processes gone → restore → same pids, memory,
//! files, agent answering; 3 cycles; then destroy leaves nothing behind.
//! Needs root, the base template (/var/lib/burrow/templates/base, else BURROW_TEST_ROOTFS) and CRIU
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
    // The base template of the host's daemon, else the test template (BURROW_TEST_ROOTFS).
    let layer = [Some(PathBuf::from(BASE_LAYER)), common::rootfs()]
        .into_iter()
        .flatten()
        .find(|l| l.join("usr/bin/python3").exists());
    let Some(layer) = layer else {
        eprintln!(
            "SKIPPED: no base template at {BASE_LAYER} (burrow template build base) and no \
             BURROW_TEST_ROOTFS with python3"
        );
        return None;
    };
    let criu = std::env::var_os("BURROW_CRIU_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/burrow/criu/criu"));
    if !criu.exists() {
        eprintln!("SKIPPED: no CRIU at {criu:?} (scripts/install-criu.sh)");
        return None;
    }
    Some(layer)
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
        // Mounted ahead, so the restore only attaches it (the fallback, a mount at restore
        // time, runs after a restart: deep_standby's end_to_end in burrow-server).
        assert!(
            rt.holds_root(&handle.id),
            "root not held after cycle {cycle}'s dump"
        );
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
        assert!(!rt.holds_root(&handle.id), "the restore used the held root");
        assert!(rt.is_alive(&restored));
        let (n, pid) = counter(&restored);
        assert_eq!(pid, py_pid, "python keeps its in-sandbox pid");
        assert!(n >= last, "counter went back: {n} < {last}");
        // It did not tick while checkpointed (300 ms = ~30 ticks), only a little since restore.
        let (_, file) = common::sh(&restored, "cat /root/file");
        assert_eq!(file.trim(), "kept");
        let (_, again) = common::sh(&restored, "cat /proc/1/status | grep ^Pid; hostname");
        assert_eq!(again, agent_pids);
        // One bind of the agent, however many cycles: restores must not stack mounts.
        let (_, binds) = common::sh(&restored, "grep -c ' /.burrow/agent ' /proc/self/mountinfo");
        assert_eq!(binds.trim(), "1", "agent binds after cycle {cycle}");
        // /sys (given back as a read-only bind of an empty host dir) is still empty and
        // read-only, even for the sandbox's root.
        let (_, sys) = common::sh(
            &restored,
            "ls -A /sys | wc -l; awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo; \
             touch /sys/x 2>/dev/null && echo writable || echo refused",
        );
        let sys: Vec<&str> = sys.split_whitespace().collect();
        assert_eq!(sys.first(), Some(&"0"), "/sys not empty: {sys:?}");
        assert!(
            sys.get(1).is_some_and(|o| o.split(',').any(|f| f == "ro")),
            "/sys not read-only: {sys:?}"
        );
        assert_eq!(sys.last(), Some(&"refused"), "/sys: {sys:?}");
        // eth0 is back, addressed, with the default route; lo is up.
        let (_, net) = common::sh(&restored, "ip -4 -o addr; ip route");
        assert!(
            net.contains(&format!("eth0    inet {}/30", restored.ip)),
            "{net}"
        );
        assert!(
            net.contains("127.0.0.1/8") && net.contains("default via"),
            "{net}"
        );
        let saved: SandboxHandle = serde_json::from_slice(
            &std::fs::read(data_dir.join("sandboxes/ckpt1/runtime.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(saved.init_pid, restored.init_pid, "runtime.json updated");
        // The used images are gone: `checkpoint/` at once, the dir it was renamed to (deleted
        // in the background, after the restore returned) shortly after.
        let sandbox_dir = data_dir.join("sandboxes/ckpt1");
        assert!(!sandbox_dir.join("checkpoint").exists(), "checkpoint/ kept");
        let used_left = || {
            std::fs::read_dir(&sandbox_dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint."))
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while used_left() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(used_left(), 0, "used images not deleted");
        last = n;
        handle = restored;
    }
    restore_ms.sort_by(f64::total_cmp);
    eprintln!(
        "restore (request → agent answering) ms: {restore_ms:?}, p50 {:.1}",
        restore_ms[restore_ms.len() / 2]
    );
    // A restart (the daemon's shutdown checkpoints, a new runtime adopts): the new runtime
    // mounts the root ahead again in the background, and the restore uses it.
    rt.checkpoint(&handle.id)
        .await
        .expect("checkpoint before the restart");
    drop(rt);
    let rt = burrow_runtime::Runtime::new(common::config(&data_dir))
        .await
        .expect("restart");
    let report = rt.reconcile(&[handle.id.clone()]).await.expect("reconcile");
    assert_eq!(report.checkpointed.len(), 1, "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.holds_root(&handle.id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rt.holds_root(&handle.id),
        "root not held again after the restart"
    );
    let handle = rt
        .restore(&handle.id)
        .await
        .expect("restore after the restart");
    assert!(
        !rt.holds_root(&handle.id),
        "the restore used the re-held root"
    );
    let (n, pid) = counter(&handle);
    assert_eq!(pid, py_pid);
    assert!(
        n >= last,
        "counter went back after the restart: {n} < {last}"
    );
    // A sandbox deleted in deep standby lets go of its held root (its overlay, upper dir).
    rt.checkpoint(&handle.id).await.expect("last checkpoint");
    assert!(rt.holds_root(&handle.id));
    rt.destroy(&handle.id).await.expect("destroy");
    assert!(!rt.holds_root(&handle.id), "held root outlived the sandbox");
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

/// A TCP server holding `MIB` MiB of random (incompressible, all-present) memory; it answers
/// every connection with "<count> <pid>".
const HOLDER: &str = r#"
import os, socket, sys
held = bytearray(os.urandom(int(sys.argv[1]) * 1048576))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(64)
n = 0
while True:
    c, _ = s.accept(); n += 1; c.sendall(f"{n} {os.getpid()}".encode()); c.close()
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One request to the holder over the sandbox's network (host → veth → eth0), as the proxy
/// would send it: returns the answer.
fn ask(ip: std::net::Ipv4Addr) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&(ip, 7000).into(), Duration::from_secs(5))
        .expect("connect to the holder");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("holder answer");
    out
}

/// Deep-standby restore benchmark (not part of CI): `BURROW_BENCH_CYCLES` (default 100)
/// checkpoint → restore cycles of a sandbox whose python server holds `BURROW_BENCH_MIB`
/// (default 16) MiB; restore latency = from `Runtime::restore` to the python server's answer
/// over the network. `BURROW_BENCH_COLD=1` drops the page cache before every restore;
/// `BURROW_BENCH_PAUSE_MS` (default 100) is how long the sandbox stays checkpointed.
/// Run: `cargo test --release -p burrow-runtime --test checkpoint deep_restore_bench -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of checkpoint/restore cycles"]
async fn deep_restore_bench() {
    let Some(layer) = prerequisites() else { return };
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (cycles, mib) = (env("BURROW_BENCH_CYCLES", 100), env("BURROW_BENCH_MIB", 16));
    let cold = std::env::var("BURROW_BENCH_COLD").is_ok_and(|v| v == "1");
    let pause_ms = env("BURROW_BENCH_PAUSE_MS", 100) as u64;
    // RUST_LOG=burrow_runtime=debug shows each restore's phases.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // SAFETY: set before the runtime (or any other thread of this test binary) reads it.
    unsafe { std::env::set_var("BURROW_NETNS_MODE", "sandbox") };
    let (rt, data_dir) = common::runtime("deepbench").await;
    let mut spec = common::spec("deepbench1", &layer);
    spec.disk_mb = 2048;
    spec.memory_mb = 512;
    let h = rt.create(spec).await.expect("create");
    let (code, out) = common::sh(
        &h,
        &format!(
            "printf '%b' '{}' > /root/holder.py && \
             (setsid python3 /root/holder.py {mib} </dev/null >/dev/null 2>&1 &) && sleep 1",
            HOLDER.replace('\n', "\\n")
        ),
    );
    assert_eq!(code, 0, "{out}");
    let first = ask(h.ip);
    let holder_pid = first.split_whitespace().nth(1).unwrap().to_owned();
    let mut handle = h.clone();
    let (mut restore_ms, mut answer_ms, mut dump_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut image_bytes = 0;
    // Let the restore worker pool fill before the first measured cycle.
    std::thread::sleep(Duration::from_secs(1));
    let mut dump_failures = Vec::new();
    for _ in 0..cycles {
        let info = match rt.checkpoint(&handle.id).await {
            Ok(info) => info,
            // The dump gives the sandbox back running on failure: count it and go on.
            Err(e) => {
                dump_failures.push(e.to_string());
                continue;
            }
        };
        dump_ms.push(info.duration.as_secs_f64() * 1e3);
        image_bytes = info.image_bytes;
        if cold {
            std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
        }
        // Workers refill in the background between standby and wake, as in real use.
        std::thread::sleep(Duration::from_millis(pause_ms));
        let t = Instant::now();
        let restored = rt.restore(&handle.id).await.expect("restore");
        restore_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let answer = ask(restored.ip);
        answer_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // At BURROW_CRIU_LOG_LEVEL >= 3 the runtime keeps the last restore.log: collect them.
        let log = data_dir.join("sandboxes/deepbench1/restore.log");
        if let Ok(dest) = std::env::var("BURROW_BENCH_LOG_DIR") {
            let _ = std::fs::copy(
                &log,
                Path::new(&dest).join(format!("restore-{}.log", answer_ms.len())),
            );
        }
        assert_eq!(answer.split_whitespace().nth(1), Some(holder_pid.as_str()));
        handle = restored;
    }
    assert!(
        dump_failures.len() * 10 <= cycles,
        "too many failed checkpoints: {dump_failures:?}"
    );
    for v in [&mut restore_ms, &mut answer_ms, &mut dump_ms] {
        v.sort_by(f64::total_cmp);
    }
    let stats = |v: &[f64]| {
        format!(
            "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            v[v.len() - 1]
        )
    };
    eprintln!(
        "BENCH deep restore: {cycles} cycles, holder {mib} MiB, {} page cache, image {:.1} MiB\n  \
         restore → python answers: {}\n  restore → agent accepts: {}\n  checkpoint (criu dump): {}\n  \
         failed checkpoints: {dump_failures:?}",
        if cold { "cold" } else { "warm" },
        image_bytes as f64 / 1048576.0,
        stats(&answer_ms),
        stats(&restore_ms),
        stats(&dump_ms)
    );
    rt.destroy(&handle.id).await.expect("destroy");
    drop(rt);
    common::remove_data_dir(&data_dir);
}
