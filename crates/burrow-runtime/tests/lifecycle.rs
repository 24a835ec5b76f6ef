//! Create → use → destroy leaves nothing behind; reconcile after a simulated daemon crash.

mod common;

use std::time::Instant;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_destroy_reconcile() {
    let Some(rootfs) = rootfs() else { return };
    let (rt, data_dir) = runtime("lifecycle").await;

    // Plain create/destroy, and timing over a few rounds.
    let mut times = Vec::new();
    for i in 0..10 {
        let id = format!("life{i}");
        let t = Instant::now();
        let handle = rt.create(spec(&id, &rootfs)).await.expect("create");
        times.push(t.elapsed());
        assert!(rt.is_alive(&handle));
        let (code, out) = sh(&handle, "echo hello > /root/f && cat /root/f");
        assert_eq!((code, out.as_str()), (0, "hello\n"));
        let usage = rt.usage(&handle).await.expect("usage");
        assert!(
            usage.pids >= 2 && usage.memory_bytes > 0 && usage.memory_limit_bytes == 256 << 20,
            "{usage:?}"
        );
        rt.destroy(&id).await.expect("destroy");
        assert!(!rt.is_alive(&handle));
        assert_no_leftovers(&data_dir, &id, handle.uid_base);
        rt.destroy(&id).await.expect("destroy is idempotent");
    }
    times.sort();
    eprintln!(
        "create (until agent accepts TCP) x10: min {:?} median {:?} max {:?}",
        times[0], times[5], times[9]
    );

    // Bad input is refused without leaving anything behind.
    let mut bad = spec("Bad_Id", &rootfs);
    assert!(rt.create(bad.clone()).await.is_err());
    bad.id = "okid".into();
    bad.memory_mb = 1;
    assert!(
        rt.create(bad)
            .await
            .unwrap_err()
            .to_string()
            .contains("memory_mb")
    );
    assert!(!data_dir.join("sandboxes/okid").exists());

    // Daemon crash: create two, drop the runtime, start a new one that only knows one of them.
    let kept = rt.create(spec("keep", &rootfs)).await.expect("create keep");
    let lost = rt.create(spec("lost", &rootfs)).await.expect("create lost");
    let gone = rt.create(spec("gone", &rootfs)).await.expect("create gone");
    assert_eq!(sh(&gone, "echo kept > /root/f && cat /root/f").1, "kept\n");
    drop(rt);
    // `gone` dies while the daemon is down.
    // SAFETY: plain kill of a pid we just created.
    unsafe { libc::kill(gone.init_pid, libc::SIGKILL) };
    let rt = burrow_runtime::Runtime::new(config(&data_dir))
        .await
        .expect("restart");
    let report = rt
        .reconcile(&["keep".to_owned(), "gone".to_owned()])
        .await
        .expect("reconcile");
    assert_eq!(report.adopted, vec![kept.clone()]);
    assert_eq!(report.dead, vec!["gone".to_owned()]);
    assert!(
        report.orphans_removed.iter().any(|o| o == "sandbox lost"),
        "{report:?}"
    );
    assert_no_leftovers(&data_dir, "lost", lost.uid_base);
    // `gone` keeps its files (only its kernel resources are released) and starts again from
    // them: same uid range and slot, a new init.
    assert!(
        data_dir.join("sandboxes/gone/upper/root/f").is_file(),
        "a dead sandbox keeps its files"
    );
    assert!(!rt.cgroup_dir("freezer", "gone").exists());
    let restarted = rt
        .restart_from_files(spec("gone", &rootfs))
        .await
        .expect("restart gone from its files");
    assert_eq!(
        (restarted.uid_base, restarted.slot),
        (gone.uid_base, gone.slot)
    );
    assert_ne!(restarted.init_pid, gone.init_pid);
    assert_eq!(sh(&restarted, "cat /root/f").1, "kept\n");
    assert!(
        rt.restart_from_files(spec("gone", &rootfs)).await.is_err(),
        "a running sandbox does not restart"
    );
    rt.destroy("gone").await.expect("destroy gone");
    assert_no_leftovers(&data_dir, "gone", gone.uid_base);
    // The adopted sandbox still works and can be destroyed normally.
    assert_eq!(sh(&kept, "cat /etc/hostname").1, "keep\n");

    // init restarts a dead agent.
    let procs =
        std::fs::read_to_string(rt.cgroup_dir("freezer", "keep").join("cgroup.procs")).unwrap();
    let agent_pid: i32 = procs
        .lines()
        .map(|l| l.parse().unwrap())
        .find(|p| *p != kept.init_pid)
        .unwrap();
    // SAFETY: plain kill of the sandbox's agent.
    unsafe { libc::kill(agent_pid, libc::SIGKILL) };
    let mut answered = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        if std::net::TcpStream::connect(kept.agent_addr()).is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered, "agent was not restarted");
    assert_eq!(sh(&kept, "echo back").1, "back\n");
    rt.destroy("keep").await.expect("destroy keep");
    assert_no_leftovers(&data_dir, "keep", kept.uid_base);
    drop(rt);

    // A launch that fails half-way (the agent cannot be executed) reports why and leaves nothing.
    let mut cfg = config(&data_dir);
    cfg.agent_path = "/etc/hostname".into();
    let rt = burrow_runtime::Runtime::new(cfg)
        .await
        .expect("runtime with a broken agent");
    let err = rt
        .create(spec("broken", &rootfs))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("exec /.burrow/agent"), "{err}");
    assert_no_leftovers(&data_dir, "broken", 0x1001_0000);
    drop(rt);
    remove_data_dir(&data_dir);
}
