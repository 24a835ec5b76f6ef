//! Deep standby on a real sandbox: dump and restore through pre-spawned `criu swrk` workers,
//! three cycles, checking that the memory counter continues and pids are kept.

mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use burrow_standby::criu::{
    self, CriuConfig, CriuError, DumpRequest, InheritFd, RestoreRequest, Worker, WorkerPool,
};
use common::Sandbox;

const NETNS_KEY: &str = "sbxnet";

#[test]
fn version_and_check() {
    let config = common::criu_config();
    let v = Worker::spawn(&config, &[]).unwrap().version().unwrap();
    // CRIU < 4.2 cannot dump any INET socket on Linux >= 6.16 ("Can't get 1:16 opt: Operation
    // not supported", criu issue #2718), and every sandbox listens on TCP.
    assert!(
        (v.major_number, v.minor_number) >= (4, 2),
        "criu {}.{} cannot checkpoint TCP sockets on this kernel: install criu >= 4.2 (Debian sid)",
        v.major_number,
        v.minor_number
    );
    let dir = tempfile::tempdir().unwrap();
    let fd = File::open(dir.path()).unwrap();
    Worker::spawn(&config, &[])
        .unwrap()
        .check(fd.as_fd())
        .unwrap();
}

#[test]
fn missing_binary_is_a_clear_error() {
    let config = CriuConfig {
        binary: "/nonexistent/criu".into(),
        ..common::criu_config()
    };
    let err = Worker::spawn(&config, &[]).unwrap_err();
    assert!(matches!(err, CriuError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("install-criu.sh"), "{err}");
}

#[test]
fn missing_helper_is_a_clear_error() {
    let config = CriuConfig {
        helper: vec!["/nonexistent/helper".into()],
        ..common::criu_config()
    };
    let err = Worker::spawn(&config, &[]).unwrap_err();
    assert!(matches!(err, CriuError::Helper { .. }), "{err}");
    let unset = CriuConfig {
        helper: Vec::new(),
        ..common::criu_config()
    };
    let err = Worker::spawn(&unset, &[]).unwrap_err();
    assert!(err.to_string().contains("--criu-worker"), "{err}");
}

#[test]
fn dump_of_a_missing_pid_reports_criu_error_text() {
    let images = tempfile::tempdir().unwrap();
    let dir = File::open(images.path()).unwrap();
    let err = Worker::spawn(&common::criu_config(), &[])
        .unwrap()
        .dump(&DumpRequest::new(dir.as_fd(), 999_999))
        .unwrap_err();
    assert!(matches!(err, CriuError::Failed { op: "dump", .. }), "{err}");
}

#[test]
fn dump_and_restore_three_cycles_keep_state_and_pids() {
    let pool = WorkerPool::start(common::criu_config(), 2).unwrap();
    assert!(pool.wait_full(Duration::from_secs(10)));
    let sb = Sandbox::launch("bstb-criu", 8);
    let netns = File::open(&sb.netns.path).unwrap();
    let external_net = criu::external_netns(&sb.netns.path, NETNS_KEY).unwrap();

    let (mut last_counter, server_pid, server_ppid) = sb.ping().unwrap();
    assert_eq!(
        (server_pid, server_ppid),
        (2, 1),
        "server is pid 2 under the sandbox's init"
    );
    let mut init_pid = sb.init_pid;
    for cycle in 0..3 {
        let images = tempfile::Builder::new()
            .prefix("criu-img-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let dir = File::open(images.path()).unwrap();
        let mut dump = DumpRequest::new(dir.as_fd(), init_pid);
        dump.external.push(external_net.clone());
        let dumped = pool.take().unwrap().0.dump(&dump).unwrap();
        // The tree is gone after a dump.
        common::wait_gone(init_pid, Duration::from_secs(5));
        assert!(sb.request("ping", Duration::from_millis(200)).is_err());

        // Deep-standby prep: mount the root, then pre-spawn a restore worker bound to this
        // sandbox's netns (a kdat_tmpfs worker only sees mounts older than itself).
        sb.rootfs.mount_on_host();
        let worker = Worker::spawn(
            pool.config(),
            &[InheritFd {
                key: NETNS_KEY.into(),
                fd: netns.as_fd(),
            }],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut restore = RestoreRequest::new(dir.as_fd(), sb.rootfs.dir("rootfs"));
        restore.join_cgroups = vec![sb.cgroups.freezer.clone(), sb.cgroups.memory.clone()];
        let start = Instant::now();
        let mut notified = Vec::new();
        let restored = worker
            .restore_notified(&restore, &mut |script, pid| {
                notified.push((script.to_owned(), pid));
                true
            })
            .unwrap();
        let to_pong = sb.time_to_pong(Duration::from_secs(5));
        // The runtime creates the veth pair into the new netns at "setup-namespaces" and waits at
        // "post-setup-namespaces": both must come, in order, naming the restored root task.
        let at = |name: &str| notified.iter().position(|(s, _)| s == name);
        let (setup, post) = (at("setup-namespaces"), at("post-setup-namespaces"));
        assert!(
            setup.is_some() && post.is_some() && setup < post,
            "criu notifications: {notified:?}"
        );
        assert_eq!(
            notified[setup.unwrap()].1,
            Some(restored.pid),
            "{notified:?}"
        );
        let total = start.elapsed();
        sb.rootfs.unmount_on_host();
        // In-sandbox pids are restored exactly; the host pid of the sandbox's init is new.
        assert!(std::path::Path::new(&format!("/proc/{}", restored.pid)).exists());
        let (counter, pid, ppid) = sb.ping().unwrap();
        // time_to_pong's ping counted too.
        assert_eq!(counter, last_counter + 2, "counter continues from memory");
        assert_eq!((pid, ppid), (2, 1), "pids inside the sandbox are kept");
        let pids = sb.pids();
        assert_eq!(
            pids.len(),
            2,
            "restored tasks are in the sandbox's cgroups: {pids:?}"
        );
        eprintln!(
            "cycle {cycle}: dump {:?}, restore {:?}, restore->pong {:?} (pong wait {:?})",
            dumped.elapsed, restored.elapsed, total, to_pong
        );
        last_counter = counter;
        init_pid = restored.pid;
    }
}

/// burrow's real shape: the tree in a user namespace (0 -> 268435456, 65536 ids) with a host bind
/// mount (/dev/null) passed as an external mount.
#[test]
#[ignore = "CRIU refuses: the pre-created netns is owned by the init userns (docs/standby.md)"]
fn dump_and_restore_in_a_user_namespace_with_host_owned_netns() {
    userns_cycle(false);
}

#[test]
#[ignore = "restore into held namespaces: CRIU 4.2.1 still creates a new userns, which may not setns into the held netns (EPERM); docs/standby.md"]
fn dump_and_restore_in_a_user_namespace_with_userns_owned_netns() {
    userns_cycle(true);
}

fn userns_cycle(own_netns: bool) {
    let config = common::criu_config();
    let sb = Sandbox::launch_full("bstb-criu-us", 4, Some(0x1000_0000), own_netns);
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.pids()[1])).unwrap();
    assert!(
        status.contains("Uid:\t268435456"),
        "server runs as host uid 268435456"
    );
    let netns = File::open(&sb.netns.path).unwrap();
    let (c1, ..) = sb.ping().unwrap();
    let images = tempfile::Builder::new()
        .prefix("criu-us-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let dir = File::open(images.path()).unwrap();
    let mut dump = DumpRequest::new(dir.as_fd(), sb.init_pid);
    dump.external
        .push(criu::external_netns(&sb.netns.path, NETNS_KEY).unwrap());
    dump.external
        .push(criu::external_mount("/dev/null", "devnull"));
    // Keep the user namespace alive past the dump, to restore into it.
    let userns_file = format!("/run/netns/{}.user", sb.netns.name);
    std::fs::write(&userns_file, b"").unwrap();
    common::run(
        "mount",
        &[
            "--bind",
            &format!("/proc/{}/ns/user", sb.init_pid),
            &userns_file,
        ],
    );
    Worker::spawn(&config, &[]).unwrap().dump(&dump).unwrap();
    common::wait_gone(sb.init_pid, Duration::from_secs(5));
    sb.rootfs.mount_on_host();
    let worker = Worker::spawn(
        &config,
        &[InheritFd {
            key: NETNS_KEY.into(),
            fd: netns.as_fd(),
        }],
    )
    .unwrap();
    let mut restore = RestoreRequest::new(dir.as_fd(), sb.rootfs.dir("rootfs"));
    restore.external.push("mnt[devnull]:/dev/null".into());
    restore.join_ns.push(criu::JoinNamespace {
        ns: "user".into(),
        ns_file: userns_file.clone(),
        extra_opt: Some("0,0".into()),
    });
    restore.join_cgroups = vec![sb.cgroups.freezer.clone(), sb.cgroups.memory.clone()];
    let restored = worker.restore(&restore);
    sb.rootfs.unmount_on_host();
    let _ = std::process::Command::new("umount")
        .arg(&userns_file)
        .status();
    let _ = std::fs::remove_file(&userns_file);
    let restored = restored.unwrap();
    let (c2, pid, _) = sb.ping().unwrap();
    assert_eq!((c2, pid), (c1 + 1, 2));
    let status = std::fs::read_to_string(format!("/proc/{}/status", restored.pid)).unwrap();
    assert!(
        status.contains("Uid:\t268435456"),
        "restored init keeps the uid mapping"
    );
}
