//! What the real agent's commands inherit in a real sandbox through the daemon (security
//! review, issue 12, items 6, 9, 10): an ordinary OOM score (the agent itself is exempt), the
//! sandbox's bounded `RLIMIT_NOFILE` (the agent raises only its own soft limit), a cgroup
//! namespace, and masked host information. The runtime-level checks, with a hostile root and a
//! deep-standby cycle, are in burrow-runtime's `tests/hostile_launcher.rs`. Needs root and the
//! base template (skipped with a message otherwise).

mod common;

use base64::Engine;
use common::{TestServer, install_test_template};
use serde_json::{Value, json};

async fn exec_stdout(server: &TestServer, id: &str, command: &str) -> String {
    let resp = server
        .post(&format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": command}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for line in resp.text().await.unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        match event["type"].as_str().unwrap() {
            "stdout" | "stderr" => out.extend(b64.decode(event["data"].as_str().unwrap()).unwrap()),
            "error" => panic!("exec error: {event}"),
            _ => {}
        }
    }
    String::from_utf8(out).unwrap()
}

/// Whether this process (root) has CAP_SYS_RESOURCE: without it the launcher can neither
/// exempt init and the agent from the OOM killer nor raise a hard limit past its own.
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[tokio::test]
async fn real_agent_commands_get_the_sandbox_limits_and_view() {
    let dir = common::TestEnv::new();
    if !install_test_template(dir.path()) {
        return;
    }
    let server = TestServer::start(dir.path()).await;
    let resp = server
        .post("/v1/sandboxes")
        .json(&json!({"memory_mb": 256}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

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
    };

    // A command (as the default user): the sandbox's limits, an OOM score above init's, its
    // cgroups at the namespace's root, the host's kernel command line masked.
    let out = exec_stdout(
        &server,
        &id,
        "ulimit -Sn; ulimit -Hn; cat /proc/self/oom_score_adj; \
         grep -vc ':/$' /proc/self/cgroup; wc -c < /proc/cmdline",
    )
    .await;
    assert_eq!(out, format!("1024\n{hard}\n500\n0\n0\n"), "{out}");

    // The agent (init's child) took its own soft limit up to the hard one; with
    // CAP_SYS_RESOURCE on the host it is exempt from the sandbox's OOM killer.
    let out = exec_stdout(
        &server,
        &id,
        "agent=$(cut -d' ' -f1 /proc/1/task/1/children); \
         grep 'open files' /proc/$agent/limits | awk '{print $4, $5}'; \
         cat /proc/$agent/oom_score_adj /proc/1/oom_score_adj",
    )
    .await;
    let shield = if has_cap_sys_resource() { "-1000" } else { "0" };
    assert_eq!(
        out,
        format!("{hard} {hard}\n{shield}\n{shield}\n"),
        "agent's limits and scores"
    );

    let resp = server
        .delete(&format!("/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    server.stop().await;
}
