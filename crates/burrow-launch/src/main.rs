//! `burrow-launch`: reads a LaunchSpec on stdin, builds the sandbox, prints one LaunchReport
//! line on stdout, exits 0 on success and 1 on failure. The sandbox keeps running.

use std::io::{Read, Write};

use burrow_launch::{LaunchReport, LaunchSpec, launch};

fn main() {
    // pid 1 of a sandbox with its own netns, re-exec'd from /.burrow/init (see launch.rs).
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some("--sandbox-init") {
        let agent_pid = args.next().and_then(|p| p.parse().ok()).unwrap_or(-1);
        launch::sandbox_init(agent_pid);
    }
    // `--mount-root`: only mount the sandbox's root at <rootfs_dir>/root in the host mount
    // namespace (for a CRIU restore) and exit.
    let mount_root_only = std::env::args().nth(1).as_deref() == Some("--mount-root");
    let report = match read_spec() {
        Ok(spec) if mount_root_only => match launch::mount_root_for_restore(&spec) {
            Ok(()) => LaunchReport {
                ok: true,
                init_pid: None,
                error: None,
                phases_us: Vec::new(),
            },
            Err(e) => LaunchReport {
                ok: false,
                init_pid: None,
                error: Some(e.0),
                phases_us: Vec::new(),
            },
        },
        Ok(spec) => launch::launch(&spec),
        Err(error) => LaunchReport {
            ok: false,
            init_pid: None,
            error: Some(error),
            phases_us: Vec::new(),
        },
    };
    let line = serde_json::to_string(&report)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode report"}"#.to_owned());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    std::process::exit(if report.ok { 0 } else { 1 });
}

fn read_spec() -> Result<LaunchSpec, String> {
    let mut input = String::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_string(&mut input)
        .map_err(|e| format!("read LaunchSpec from stdin: {e}"))?;
    serde_json::from_str(&input).map_err(|e| format!("invalid LaunchSpec JSON: {e}"))
}
