//! Zero-data-retention sandboxes: files on a tmpfs of the disk limit, no agent log, never
//! swapped, never checkpointed; destroy unmounts; after a reboot (RAM gone) reconcile reports
//! them dead and leaves nothing.

mod common;

use std::path::Path;

use common::*;

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&format!(" {} ", dir.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zdr_sandboxes_live_in_ram() {
    let Some(rootfs) = rootfs() else { return };
    let (rt, data_dir) = runtime("zdr").await;
    let mut zdr = spec("zdr1", &rootfs);
    zdr.zdr = true;
    zdr.disk_mb = 16;
    let handle = rt.create(zdr.clone()).await.expect("create");
    let dir = rt.sandbox_dir("zdr1");
    let fs = statfs_type(&dir.join("upper"));
    assert_eq!(fs, TMPFS_MAGIC, "the upper dir is not on tmpfs");
    let (code, out) = sh(&handle, "echo kept > /root/f && cat /root/f");
    assert_eq!((code, out.as_str()), (0, "kept\n"));
    assert!(
        dir.join("upper/root/f").exists(),
        "the write went to the tmpfs upper dir"
    );
    // The disk limit is the tmpfs size.
    let (code, out) = sh(&handle, "head -c 20000000 /dev/zero > /root/big");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        !dir.join("agent.log").exists(),
        "no agent log for a ZDR sandbox"
    );
    let swappiness =
        std::fs::read_to_string(rt.cgroup_dir("memory", "zdr1").join("memory.swappiness")).unwrap();
    assert_eq!(swappiness.trim(), "0");
    let usage = rt.usage(&handle).await.expect("usage of a tmpfs sandbox");
    assert!(usage.disk_bytes > 1 << 20, "{usage:?}");
    let refused = rt.can_checkpoint("zdr1").unwrap_err().to_string();
    if rt.netns_mode() == burrow_runtime::NetnsMode::Sandbox {
        assert!(refused.contains("zero-data-retention"), "{refused}");
    }

    rt.destroy("zdr1").await.expect("destroy");
    assert!(!is_mounted(&dir), "tmpfs left mounted");
    assert_no_leftovers(&data_dir, "zdr1", handle.uid_base);

    // A reboot: the processes and the tmpfs are gone, the (empty) mount point stays.
    let lost = rt.create(zdr.clone()).await.expect("create again");
    drop(rt);
    // SAFETY: plain kill of the sandbox init we created (its pid namespace dies with it).
    unsafe { libc::kill(lost.init_pid, libc::SIGKILL) };
    for _ in 0..100 {
        if !is_alive(lost.init_pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("umount")
        .args(["-l"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.exists() && std::fs::read_dir(&dir).unwrap().next().is_none());
    let rt = burrow_runtime::Runtime::new(config(&data_dir))
        .await
        .expect("restart");
    let report = rt.reconcile(&["zdr1".to_owned()]).await.expect("reconcile");
    assert_eq!(report.dead, vec!["zdr1".to_owned()], "{report:?}");
    assert_no_leftovers(&data_dir, "zdr1", lost.uid_base);
    drop(rt);
    remove_data_dir(&data_dir);
}

fn statfs_type(path: &Path) -> i64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills a zeroed libc::statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statfs {path:?}");
    st.f_type
}

/// True while `pid` exists and is not a zombie waiting for us.
fn is_alive(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid with a valid out-pointer (reaps it if it is our child; we are subreaper).
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
