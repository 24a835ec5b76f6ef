//! What sandboxed code can and cannot do. Every check runs as root inside a real sandbox.

mod common;

use std::net::TcpListener;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_isolation() {
    let Some(rootfs) = rootfs() else { return };
    let (rt, data_dir) = runtime("isolation").await;
    let mut small = spec("iso-a", &rootfs);
    small.memory_mb = 64;
    small.pids_max = 48;
    small.disk_mb = 32;
    let a = rt.create(small).await.expect("create a");
    let b = rt.create(spec("iso-b", &rootfs)).await.expect("create b");

    // pid namespace: only the sandbox's own processes are visible; pid 1 is init.
    let (code, out) = sh(&a, "ls /proc | grep -c '^[0-9]'");
    assert_eq!(code, 0);
    let visible: u32 = out.trim().parse().unwrap();
    assert!(visible < 10, "sandbox sees {visible} processes");

    // Root inside is an unprivileged host uid from the sandbox's own range.
    let procs =
        std::fs::read_to_string(rt.cgroup_dir("freezer", "iso-a").join("cgroup.procs")).unwrap();
    let pids: Vec<&str> = procs.lines().collect();
    assert!(
        pids.len() >= 2 && pids.contains(&a.init_pid.to_string().as_str()),
        "{pids:?}"
    );
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_owned();
        assert!(uid_line.contains(&a.uid_base.to_string()), "{uid_line}");
    }
    assert_eq!(sh(&a, "id -u").1, "0\n");
    assert_eq!(sh(&a, "touch /root/owned").0, 0);
    let meta = std::fs::metadata(data_dir.join("sandboxes/iso-a/upper/root/owned")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), a.uid_base);
    assert_ne!(a.uid_base, b.uid_base);
    assert_eq!(sh(&a, "cat /etc/hostname; hostname").1, "iso-a\niso-a\n");

    // Capabilities: Docker's default bounding set; sudo works for `user`.
    assert!(
        sh(&a, "grep CapBnd /proc/self/status")
            .1
            .contains("00000000a80425fb")
    );
    let (code, out) = sh(
        &a,
        "runuser -u user -- id -u && runuser -u user -- sudo -n id -u",
    );
    assert_eq!((code, out.as_str()), (0, "1000\n0\n"), "{out}");

    // No mounts, no new namespaces, no keyctl/bpf (seccomp → EPERM), no network admin.
    let (code, out) = sh(&a, "mount -t tmpfs none /mnt");
    assert_ne!(code, 0, "mount succeeded: {out}");
    let (code, _) = sh(&a, "unshare -U true");
    assert_ne!(code, 0, "unshare succeeded");
    // perl's syscall(): keyctl = 250, bpf = 321, unshare = 272; prints errno (EPERM = 1).
    let (_, out) = sh(
        &a,
        "perl -e 'for $n (250, 321, 272) { $! = 0; syscall($n, 0, 0, 0); print $!+0, \" \" }'",
    );
    assert_eq!(out.trim(), "1 1 1", "keyctl/bpf/unshare errnos: {out}");
    // /dev and /dev/shm are binds of the sandbox's own /.burrow/{dev,shm}: writable where they
    // must be, but no device node made there works (nodev) and nothing there runs (noexec).
    let (code, out) = sh(
        &a,
        "runuser -u user -- sh -c 'echo shared > /dev/shm/f && cat /dev/shm/f' \
         && cp /bin/true /dev/shm/t && ( (/dev/shm/t) 2>/dev/null && echo ran || echo refused) \
         && (mknod /dev/mem2 c 1 1 2>/dev/null && echo made || echo no-mknod) \
         && grep -E ' /dev(/shm)? ' /proc/self/mountinfo | grep -c 'nosuid,nodev,noexec'",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "shared\nrefused\nno-mknod\n2\n"),
        "{out}"
    );
    let (code, out) = sh(&a, "ip link set eth0 down");
    assert_ne!(code, 0, "the sandbox could change its netns: {out}");
    assert!(sh(&a, "ip -4 addr show eth0").1.contains(&a.ip.to_string()));

    // Network: another sandbox and the host's veth side are unreachable; the host reaches both.
    let probe = |ip: String, port: u16| {
        format!("timeout 3 bash -c 'echo > /dev/tcp/{ip}/{port}' && echo open || echo closed")
    };
    assert_eq!(
        sh(&a, &probe(b.ip.to_string(), 49983)).1,
        "closed\n",
        "sandbox a reached sandbox b"
    );
    let host_listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host_listener.local_addr().unwrap().port();
    let host_side = std::net::Ipv4Addr::from(u32::from(a.ip) - 1);
    assert!(
        std::net::TcpStream::connect((host_side, port)).is_ok(),
        "control: host reaches its own veth address"
    );
    assert_eq!(
        sh(&a, &probe(host_side.to_string(), port)).1,
        "closed\n",
        "sandbox reached a host service"
    );
    // DNS through the host's nameserver and NAT to the outside work (registries are reachable here).
    let (code, out) = sh(&a, "getent hosts deb.debian.org");
    assert_eq!(code, 0, "DNS failed inside the sandbox: {out}");
    assert_eq!(
        sh(&a, &probe("deb.debian.org".into(), 80)).1,
        "open\n",
        "no outbound TCP via NAT"
    );

    // Disk limit: writes beyond disk_mb fail inside; the sandbox keeps working.
    let (code, out) = sh(&a, "dd if=/dev/zero of=/root/big bs=1M count=64 2>&1");
    assert_ne!(code, 0, "wrote 64 MiB with a 32 MiB limit: {out}");
    assert!(out.contains("quota") || out.contains("space"), "{out}");
    let usage = rt.usage(&a).await.unwrap();
    assert!(
        usage.disk_bytes > 16 << 20 && usage.disk_bytes <= 33 << 20,
        "{usage:?}"
    );
    assert_eq!(sh(&a, "rm /root/big && echo ok").1, "ok\n");

    // Memory limit: the hog is OOM-killed inside; the sandbox (and host) carry on.
    let (code, _) = sh(
        &a,
        "python3 -c 'b = bytearray(256 * 1024 * 1024); print(len(b))'",
    );
    assert_eq!(
        code, 137,
        "the 256 MiB allocation was not OOM-killed (64 MiB limit)"
    );
    assert_eq!(sh(&a, "echo alive").1, "alive\n");
    assert!(rt.is_alive(&a));

    // pids limit: a fork bomb stops at pids_max.
    // (one line: the test agent reads one command line)
    let bomb = r#"python3 -c 'exec("import os, time\nn = 0\ntry:\n  while True:\n    if os.fork() == 0:\n      time.sleep(2); os._exit(0)\n    n += 1\nexcept OSError as e:\n  print(n, e.errno)")'"#;
    let (_, out) = sh(&a, bomb);
    let mut fields = out.split_whitespace();
    let forked: u64 = fields
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        forked < 48,
        "forked {forked} processes with pids_max 48: {out}"
    );
    assert_eq!(
        fields.next(),
        Some("11"),
        "fork did not fail with EAGAIN: {out}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(sh(&a, "echo alive").1, "alive\n");

    for (id, h) in [("iso-a", &a), ("iso-b", &b)] {
        rt.destroy(id).await.expect("destroy");
        assert_no_leftovers(&data_dir, id, h.uid_base);
    }
    drop(rt);
    remove_data_dir(&data_dir);
}
