//! A hostile sandbox against what the launcher sets up (security review, issue 12, items 6, 7,
//! 9, 10): its root cannot get init or the agent killed by the sandbox's own OOM, cannot
//! ptrace init, inherits bounded resource limits (not the daemon's), sees its cgroups as `/`
//! and none of the host information Docker masks in `/proc`; all of it still holds after a
//! deep-standby checkpoint and restore. Every command runs as the sandbox's root.

mod common;

use std::path::PathBuf;

use burrow_runtime::SandboxHandle;
use common::*;

/// Where CRIU is (the deep-standby part is skipped without it).
fn criu_present() -> bool {
    std::env::var_os("BURROW_CRIU_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/burrow/criu/criu"))
        .exists()
}

/// Host pids of init's children running `/.burrow/agent` (the stand-in agent is mapped there).
fn agent_pids(h: &SandboxHandle) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", h.init_pid))
        .unwrap()
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|argv| argv.split(|b| *b == 0).next() == Some(b"/.burrow/agent"))
        })
        .map(str::to_owned)
        .collect()
}

fn oom_score_adj(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Whether this process (root) has CAP_SYS_RESOURCE, which exempting init and the agent from
/// the OOM killer takes (some hosts' root lacks it, e.g. a restricted container).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Item 6: init and the agent are exempt from the sandbox's OOM killer (set from the host),
/// the processes the agent starts are not and cannot exempt themselves.
fn assert_oom_shield(h: &SandboxHandle) {
    let agents = agent_pids(h);
    assert_eq!(agents.len(), 1, "one agent child of init: {agents:?}");
    if has_cap_sys_resource() {
        assert_eq!(oom_score_adj(&h.init_pid.to_string()), "-1000", "init");
        assert_eq!(oom_score_adj(&agents[0]), "-1000", "agent");
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: init and the agent keep score 0, not -1000");
    }
    let shield = if has_cap_sys_resource() { "-1000" } else { "0" };
    let (_, out) = sh(h, "cat /proc/1/oom_score_adj /proc/self/oom_score_adj");
    assert_eq!(
        out,
        format!("{shield}\n500\n"),
        "init's, then a command's own score"
    );
    // Neither root nor `user` may lower a score below 0 (the minimum is 0: only the host's
    // CAP_SYS_RESOURCE goes lower), through either interface.
    let (_, out) = sh(
        h,
        "for v in -1 -1000; do (echo $v > /proc/self/oom_score_adj) 2>/dev/null && echo lowered; done; \
         (echo -17 > /proc/self/oom_adj) 2>/dev/null && echo lowered-legacy; \
         runuser -u user -- sh -c '(echo -1000 > /proc/self/oom_score_adj) 2>/dev/null && echo user-lowered'; \
         echo checked",
    );
    assert_eq!(out, "checked\n", "a sandbox process lowered its OOM score");
}

/// Item 7: the sandbox's root can neither ptrace nor read init. (The agent stays dumpable,
/// see docs/isolation.md: ptracing it harms only its own sandbox.)
fn assert_init_untouchable(h: &SandboxHandle) {
    // PTRACE_ATTACH = 16, PTRACE_SEIZE = 0x4206; prints the result and errno (EPERM = 1) of
    // each. One command line: the python program goes through exec() with `\n` escapes.
    let (code, out) = sh(
        h,
        r#"python3 -c 'exec("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nfor req in (16, 0x4206):\n  r = libc.ptrace(req, 1, 0, 0)\n  print(r, ctypes.get_errno(), end=\" \")")'"#,
    );
    assert_eq!(
        (code, out.trim()),
        (0, "-1 1 -1 1"),
        "ptrace of init did not fail with EPERM"
    );
    let (_, out) = sh(
        h,
        "for f in /proc/1/mem /proc/1/environ; do head -c1 $f >/dev/null 2>&1 && echo read $f; done; \
         readlink /proc/1/fd/0 /proc/1/exe /proc/1/root >/dev/null 2>&1 && echo resolved; \
         echo checked",
    );
    assert_eq!(
        out, "checked\n",
        "init's memory, environment or fds are readable"
    );
}

/// Item 9: bounded resource limits of the sandbox's own, whatever the daemon has.
fn assert_rlimits(h: &SandboxHandle) {
    // 524288, or this process's hard limit if lower and root here lacks CAP_SYS_RESOURCE.
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `own` is a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
    let hard = if has_cap_sys_resource() {
        524_288
    } else {
        own.rlim_max.min(524_288)
    }
    .to_string();
    let (_, out) = sh(
        h,
        "ulimit -Sn; ulimit -Hn; grep 'open files' /proc/1/limits",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1024", hard.as_str()], "{out}");
    assert!(
        lines[2].split_whitespace().collect::<Vec<_>>()[3..5] == ["1024", hard.as_str()],
        "init's limits: {out}"
    );
    let (code, _) = sh(h, "ulimit -Hn 600000");
    assert_ne!(code, 0, "the sandbox raised its hard RLIMIT_NOFILE");
    let (_, out) = sh(
        h,
        "grep -E '^Max (nice|realtime) priority' /proc/self/limits",
    );
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[3..5], ["0", "0"], "{out}");
    }
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// Item 10: a cgroup namespace rooted at the sandbox's groups; Docker's masked paths of /proc
/// plus the host's kernel command line and configuration show nothing; /proc/sys is read-only.
fn assert_host_information_hidden(h: &SandboxHandle) {
    let (_, cgroups) = sh(h, "cat /proc/self/cgroup");
    assert!(!cgroups.is_empty());
    for line in cgroups.lines() {
        assert!(line.ends_with(":/"), "host cgroup path visible: {cgroups}");
    }
    let host_cmdline = std::fs::read_to_string("/proc/cmdline").unwrap();
    assert!(!host_cmdline.trim().is_empty());
    // Each of these that the host has shows nothing inside (the host's kernel may lack some).
    let files = [
        "cmdline",
        "kcore",
        "keys",
        "timer_list",
        "config.gz",
        "sysrq-trigger",
    ];
    let present: Vec<&str> = files
        .into_iter()
        .filter(|f| std::path::Path::new("/proc").join(f).exists())
        .collect();
    assert!(present.contains(&"cmdline") && present.contains(&"keys"));
    let (_, out) = sh(
        h,
        &format!(
            "for f in {}; do printf '%s:%s ' $f $(cat /proc/$f 2>/dev/null | wc -c); done",
            present.join(" ")
        ),
    );
    let expected: Vec<String> = present.iter().map(|f| format!("{f}:0")).collect();
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        expected,
        "not masked"
    );
    let (_, out) = sh(h, "ls -A /proc/acpi | wc -l; ls -A /sys | wc -l");
    assert_eq!(out, "0\n0\n", "/proc/acpi or /sys not empty");
    let (code, out) = sh(h, "echo burrow > /proc/sys/kernel/domainname");
    assert_ne!(code, 0, "/proc/sys is writable");
    assert!(out.contains("Read-only file system"), "{out}");
    // The masks cannot be taken off (no CAP_SYS_ADMIN, umount denied by seccomp).
    let (code, _) = sh(h, "umount /proc/cmdline || umount -l /proc/cmdline");
    assert_ne!(code, 0, "a mask was unmounted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_root_cannot_reach_init_or_host_information() {
    let Some(rootfs) = rootfs() else { return };
    // SAFETY: set before the runtime (or any other thread of this test binary) reads it.
    unsafe { std::env::set_var("BURROW_NETNS_MODE", "sandbox") };
    let (rt, data_dir) = runtime("hostile-launcher").await;
    let mut spec = spec("hostile-a", &rootfs);
    spec.disk_mb = 512;
    let h = rt.create(spec).await.expect("create");
    assert_oom_shield(&h);
    assert_init_untouchable(&h);
    assert_rlimits(&h);
    assert_host_information_hidden(&h);

    if criu_present() {
        // Deep standby still works with all of it, and all of it survives the restore.
        rt.checkpoint(&h.id).await.expect("checkpoint");
        let h = rt.restore(&h.id).await.expect("restore");
        assert_oom_shield(&h);
        assert_init_untouchable(&h);
        assert_rlimits(&h);
        assert_host_information_hidden(&h);
        rt.destroy(&h.id).await.expect("destroy");
        assert_no_leftovers(&data_dir, &h.id, h.uid_base);
    } else {
        eprintln!("no CRIU: the deep-standby part is skipped");
        rt.destroy(&h.id).await.expect("destroy");
    }
    drop(rt);
    remove_data_dir(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_agent_survive_the_sandboxs_oom() {
    // Runs with and without the host's CAP_SYS_RESOURCE: without it init and the agent are at
    // 0 rather than -1000, and commands' score of 500 alone must keep them alive.
    let Some(rootfs) = rootfs() else { return };
    let (rt, data_dir) = runtime("oom-survival").await;
    let mut spec = spec("hostile-oom", &rootfs);
    spec.memory_mb = 64;
    spec.pids_max = 4096;
    let h = rt.create(spec).await.expect("create");
    let agents = agent_pids(&h);
    assert_eq!(agents.len(), 1);
    let memcg = rt.cgroup_dir("memory", &h.id);
    let ooms_before = oom_kills(&memcg);

    // The review's reproduction: thousands of tiny processes fill the memory limit, so the OOM
    // killer must choose among processes as small as init and the agent; then a memory hog
    // as `user` on top. (Without the exemption the agent died here: the next command could
    // not connect.)
    let (_, out) = sh(
        &h,
        "for i in $(seq 3000); do sleep 1000 >/dev/null 2>&1 & done 2>/dev/null; echo started",
    );
    eprintln!("fork bomb: {out}");
    assert!(rt.is_alive(&h), "init was killed by the fork bomb's OOM");
    assert_eq!(
        agent_pids(&h),
        agents,
        "the agent was killed by the fork bomb's OOM"
    );
    let _ = sh(
        &h,
        "runuser -u user -- python3 -c 'b = bytearray(256 * 1024 * 1024)' 2>&1; echo hog done",
    );
    assert!(
        oom_kills(&memcg) > ooms_before,
        "no OOM kill happened: the test proves nothing"
    );
    assert!(rt.is_alive(&h), "init was killed");
    assert_eq!(
        agent_pids(&h),
        agents,
        "the agent was killed (and restarted)"
    );

    // Reachable, and it can be cleaned up from inside.
    // The memory cgroup is still full of sleeps, so a new command may itself be the OOM
    // killer's choice (a forked child counts the pages it shares): try again, as a user would.
    let mut attempts = Vec::new();
    for _ in 0..20 {
        let (code, out) = sh(
            &h,
            "echo 0 > /proc/self/oom_score_adj; pkill -9 -x sleep; echo cleaned",
        );
        attempts.push(code);
        if (code, out.as_str()) == (0, "cleaned\n") {
            break;
        }
    }
    eprintln!("cleanup attempts (exit codes): {attempts:?}");
    assert_eq!(attempts.last(), Some(&0), "never cleaned up: {attempts:?}");
    assert_eq!(sh(&h, "echo alive").1, "alive\n");
    rt.destroy(&h.id).await.expect("destroy");
    assert_no_leftovers(&data_dir, &h.id, h.uid_base);
    drop(rt);
    remove_data_dir(&data_dir);
}

/// OOM kills in the sandbox's memory cgroup so far (`memory.oom_control`'s `oom_kill`).
fn oom_kills(memcg: &std::path::Path) -> u64 {
    std::fs::read_to_string(memcg.join("memory.oom_control"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
