//! Security suite, host side: what a hostile tenant (an API key, a sandbox's root) and an
//! unprivileged user on the host must not get. Needs root and the base template.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{TestEnv, TestServer, install_test_template};
use serde_json::{Value, json};

/// Runs `argv` as the host's `nobody` (`runuser`), returning (success, stdout + stderr).
fn as_nobody(argv: &[&str]) -> (bool, String) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .args(argv)
        .output()
        .expect("runuser");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A `RUN` step (root inside the build sandbox) makes a setuid-root copy of python. The layer
/// keeps it as host uid 0 with the setuid bit; before the fix the data dir was world-traversable
/// (0755 as created under /var/lib), so any host user ran it as host root. Now the data dir is
/// root-only on every start, whatever mode it had.
#[tokio::test]
async fn a_setuid_file_from_a_build_gives_host_users_nothing() {
    let env = TestEnv::new();
    if !install_test_template(env.path()) {
        return;
    }
    // As an operator's /var/lib/burrow would be: created 0755 inside world-traversable parents.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (reachable, _) = as_nobody(&["ls", env.path().to_str().unwrap()]);
    assert!(reachable, "the test's data dir must start world-readable");

    let server = TestServer::start(env.path()).await;
    let resp = server
        .post("/v1/templates")
        .json(&json!({
            "name": "rootpy",
            "from": {"type": "template", "parent": "base", "steps": [{
                "type": "run",
                "command": "cp /usr/bin/python3.11 /usr/local/bin/rootpy && chmod 4755 /usr/local/bin/rootpy"
            }]}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let done: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(done["type"], "done", "{text}");

    let layer = env.path().join("templates/rootpy/layers/0");
    let rootpy = layer.join("usr/local/bin/rootpy");
    let meta = std::fs::metadata(&rootpy).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o4000,
        0o4000,
        "the layer keeps the build's setuid bit (inside sandboxes it is root of the sandbox)"
    );
    let (ran, output) = as_nobody(&[
        rootpy.to_str().unwrap(),
        "-c",
        "import os; print(os.geteuid())",
    ]);
    assert!(
        !ran && !output.trim().ends_with('0'),
        "a host user ran the layer's setuid-root python: {output}"
    );
    assert!(output.contains("Permission denied"), "{output}");
    assert_eq!(mode(env.path()), 0o700);
    for dir in ["templates", "cache", "sandboxes"] {
        assert_eq!(mode(&env.path().join(dir)), 0o700, "{dir}");
    }
    let (listed, output) = as_nobody(&["ls", env.path().to_str().unwrap()]);
    assert!(!listed, "a host user listed the data dir: {output}");
    server.stop().await;

    // Loosened by hand (or by an old version) while stopped: the next start closes it again.
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = TestServer::start(env.path()).await;
    assert_eq!(mode(env.path()), 0o700);
    server.stop().await;
}
