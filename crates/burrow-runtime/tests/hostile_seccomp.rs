//! The seccomp allowlist seen from inside a real sandbox (as its root): what it refuses, with
//! which errno, and that ordinary work (Python multiprocessing, threads, git, pip, sudo, iproute2)
//! keeps working under it.

mod common;

use common::*;

/// Runs a Python script inside the sandbox (hex-encoded: the test agent takes one command line).
fn python(handle: &burrow_runtime::SandboxHandle, script: &str) -> (i32, String) {
    let encoded = hex::encode(script);
    sh(
        handle,
        &format!("python3 -c \"exec(bytes.fromhex('{encoded}'))\" 2>&1"),
    )
}

/// Each probe prints `name result`, where result is `ok` or the errno's symbolic name.
const PROBES: &str = r#"
import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a & (2**64 - 1)) for a in args])
    if r == 0 and nr == 56:
        os._exit(0)  # a clone child, should the clone ever succeed
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]

def sock(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]

me = os.getpid()
results = {
    # refused with EPERM (they exist; a sandbox may not use them)
    "io_uring_setup": sc(425, 1, 0),
    "io_uring_enter": sc(426, 2**32 - 1, 0, 0, 0, 0, 0),
    "io_uring_register": sc(427, 2**32 - 1, 0, 0, 0),
    "kcmp": sc(312, me, me, 0, 0, 0),  # KCMP_FILE of fd 0 with itself
    "pidfd_getfd": sc(438, 2**32 - 1, 0, 0),
    "process_madvise": sc(440, 2**32 - 1, 0, 0, 0, 0),
    "mbind": sc(237, 0, 0, 0, 0, 0, 0),
    "set_mempolicy": sc(238, 0, 0, 0),
    "move_pages": sc(279, 0, 0, 0, 0, 0, 0),
    "fanotify_init": sc(300, 0x200, 0),  # FAN_REPORT_FID works unprivileged since 5.13
    "keyctl": sc(250, 0, 0, 0),
    "unshare": sc(272, 0x10000000),
    "clone_newuser": sc(56, 0x10000000 | 17, 0, 0, 0, 0),
    "personality_read_implies_exec": sc(135, 0x0400000),
    "personality_addr_no_randomize": sc(135, 0x0040000),  # refused by Docker's list too
    # not in the allowlist: ENOSYS, like a kernel without them
    "clone3": sc(435, 0, 0),
    "unknown_1000": sc(1000),
    "x32_getpid": sc(0x40000000 | 39),
    "sysfs": sc(139, 3),
    "statmount": sc(457, 0, 0, 0, 0),
    "listmount": sc(458, 0, 0, 0, 0),
    # socket families
    "af_vsock": sock(40, socket.SOCK_STREAM),
    "af_vsock_high_bits": sc(41, (1 << 32) | 40, 1, 0),
    "af_packet": sock(17, socket.SOCK_RAW),
    "af_alg": sock(38, socket.SOCK_SEQPACKET),
    "af_netlink_generic": sock(16, socket.SOCK_RAW, 16),
    "af_netlink_kobject_uevent": sock(16, socket.SOCK_RAW, 15),
    "socketpair_inet": sc(53, 2, 1, 0, 0),
    # allowed
    "af_unix": sock(1, socket.SOCK_STREAM),
    "af_inet": sock(2, socket.SOCK_STREAM),
    "af_inet6": sock(10, socket.SOCK_DGRAM),
    "af_inet_raw_icmp": sock(2, socket.SOCK_RAW, 1),
    "af_netlink_route": sock(16, socket.SOCK_RAW, 0),
    "af_netlink_sock_diag": sock(16, socket.SOCK_RAW, 4),
    "af_netlink_audit": sock(16, socket.SOCK_RAW, 9),
    "socketpair_unix": "ok" if socket.socketpair() else "?",
    "personality_query": sc(135, 2**32 - 1),
    "personality_linux32": sc(135, 0x0008),
    "personality_uname26": sc(135, 0x0020000),
    "personality_linux": sc(135, 0),
    "getpid": sc(39),
    "sched_getaffinity_ok": "ok" if os.sched_getaffinity(0) else "?",
}
for name, result in results.items():
    print(name, result)
"#;

const EXPECTED: &[(&str, &str)] = &[
    ("io_uring_setup", "EPERM"),
    ("io_uring_enter", "EPERM"),
    ("io_uring_register", "EPERM"),
    ("kcmp", "EPERM"),
    ("pidfd_getfd", "EPERM"),
    ("process_madvise", "EPERM"),
    ("mbind", "EPERM"),
    ("set_mempolicy", "EPERM"),
    ("move_pages", "EPERM"),
    ("fanotify_init", "EPERM"),
    ("keyctl", "EPERM"),
    ("unshare", "EPERM"),
    ("clone_newuser", "EPERM"),
    ("personality_read_implies_exec", "EPERM"),
    ("personality_addr_no_randomize", "EPERM"),
    ("clone3", "ENOSYS"),
    ("unknown_1000", "ENOSYS"),
    ("x32_getpid", "ENOSYS"),
    ("sysfs", "ENOSYS"),
    ("statmount", "ENOSYS"),
    ("listmount", "ENOSYS"),
    ("af_vsock", "EAFNOSUPPORT"),
    ("af_vsock_high_bits", "EAFNOSUPPORT"),
    ("af_packet", "EAFNOSUPPORT"),
    ("af_alg", "EAFNOSUPPORT"),
    ("af_netlink_generic", "EPROTONOSUPPORT"),
    ("af_netlink_kobject_uevent", "EPROTONOSUPPORT"),
    ("socketpair_inet", "EAFNOSUPPORT"),
    ("af_unix", "ok"),
    ("af_inet", "ok"),
    ("af_inet6", "ok"),
    ("af_inet_raw_icmp", "ok"),
    ("af_netlink_route", "ok"),
    ("af_netlink_sock_diag", "ok"),
    ("af_netlink_audit", "ok"),
    ("socketpair_unix", "ok"),
    ("personality_query", "ok"),
    ("personality_linux32", "ok"),
    ("personality_uname26", "ok"),
    ("personality_linux", "ok"),
    ("getpid", "ok"),
    ("sched_getaffinity_ok", "ok"),
];

/// i386 `getpid` through `int 0x80` from a 64-bit process: the filter's architecture check
/// kills the process (SIGSYS) instead of letting the compat syscall table past an x86_64 list.
const INT80: &str = r#"
import ctypes, mmap
code = bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20; int 0x80; ret
buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
print("i386 getpid returned", ctypes.CFUNCTYPE(ctypes.c_int)(addr)(), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_allowlist_refuses_and_allows() {
    let Some(rootfs) = rootfs() else { return };
    let (rt, data_dir) = runtime("hostile-seccomp").await;
    let mut spec = spec("seccomp-a", &rootfs);
    spec.memory_mb = 512;
    spec.disk_mb = 256;
    let a = rt.create(spec).await.expect("create");

    let (code, out) = python(&a, PROBES);
    assert_eq!(code, 0, "probe script failed: {out}");
    let mut wrong = Vec::new();
    for (name, expected) in EXPECTED {
        let got = out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or("<missing>");
        if got != *expected {
            wrong.push(format!("{name}: expected {expected}, got {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nfull output:\n{out}",
        wrong.join("\n")
    );

    let (code, out) = python(&a, INT80);
    assert_eq!(
        code,
        128 + libc::SIGSYS,
        "an i386 syscall was not killed: {out}"
    );

    // The positive side: what agents run every day.
    let pool =
        "python3 -c 'import multiprocessing as m; print(sum(m.Pool(4).map(abs, range(-100, 0))))'";
    assert_eq!(sh(&a, pool), (0, "5050\n".into()));
    let threads = "python3 -c 'import concurrent.futures as f; print(sum(f.ThreadPoolExecutor(8).map(abs, range(-100, 0))))'";
    assert_eq!(sh(&a, threads), (0, "5050\n".into()));
    let (code, out) = sh(
        &a,
        "cd /root && git init -q repo && cd repo && echo hi > f && git add f \
         && git -c user.name=t -c user.email=t@t commit -qm first && git log --oneline | wc -l",
    );
    assert_eq!((code, out.as_str()), (0, "1\n"), "{out}");
    let (code, out) = sh(
        &a,
        "cd /root && python3 -m venv v 2>&1 && v/bin/pip --version",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("pip "), "{out}");
    let (code, out) = sh(
        &a,
        "runuser -u user -- sudo -n id -u && ip -4 addr show eth0 | grep -c inet && ss -tln | grep -c 49983 \
         && setarch linux32 uname -m && echo done",
    );
    assert_eq!((code, out.as_str()), (0, "0\n1\n1\ni686\ndone\n"), "{out}");

    rt.destroy("seccomp-a").await.expect("destroy");
    assert_no_leftovers(&data_dir, "seccomp-a", a.uid_base);
    drop(rt);
    remove_data_dir(&data_dir);
}
