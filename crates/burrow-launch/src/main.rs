//! `burrow-launch`: reads a LaunchSpec on stdin, builds the sandbox, prints one LaunchReport
//! line on stdout, exits 0 on success and 1 on failure. The sandbox keeps running.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;

use burrow_launch::{LaunchError, LaunchReport, LaunchSpec, launch};

fn main() {
    // pid 1 of a sandbox with its own netns, re-exec'd from /.burrow/init (see launch.rs).
    let mut args = std::env::args();
    let mode = args.nth(1);
    if mode.as_deref() == Some("--sandbox-init") {
        let agent_pid = args.next().and_then(|p| p.parse().ok()).unwrap_or(-1);
        launch::sandbox_init(agent_pid);
    }
    match mode.as_deref() {
        // Become a `criu swrk` worker for the daemon (which never forks to set one up).
        Some("--criu-worker") => burrow_standby::criu::helper_main(std::env::args_os().skip(2)),
        // Only mount the sandbox's root at <rootfs_dir>/root (for a CRIU restore) and exit: in
        // the current mount namespace, or with `--mount-ns PATH` in that one (a criu worker's).
        Some("--mount-root") => {
            let mount_ns = match (args.next().as_deref(), args.next()) {
                (None, _) => Ok(None),
                (Some("--mount-ns"), Some(path)) => Ok(Some(path)),
                (other, _) => Err(format!(
                    "--mount-root takes only `--mount-ns PATH`, not {other:?}"
                )),
            };
            let report = match (mount_ns, read_spec()) {
                (Ok(ns), Ok(spec)) => failed_or(
                    ns.as_deref()
                        .map_or(Ok(()), |ns| {
                            launch::enter_mount_ns(std::path::Path::new(ns))
                        })
                        .and_then(|()| launch::mount_root_for_restore(&spec))
                        .map(|()| None),
                ),
                (Err(error), _) | (_, Err(error)) => failed(error),
            };
            finish(&report)
        }
        // Mount the root in a private mount namespace and hand it over as a detached tree:
        // the spec is one line on stdin; the launcher reports the tree's fd and stays until
        // its stdin closes (the caller takes the fd over meanwhile).
        Some("--detach-root") => {
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            let report = match (&mut stdin).take(1 << 20).read_line(&mut line) {
                Ok(_) => match serde_json::from_str::<LaunchSpec>(&line) {
                    Ok(spec) => failed_or(launch::mount_root_detached(&spec).map(Some)),
                    Err(e) => failed(format!("invalid LaunchSpec JSON: {e}")),
                },
                Err(e) => failed(format!("read LaunchSpec from stdin: {e}")),
            };
            write_report(&report);
            let _ = std::io::copy(&mut stdin, &mut std::io::sink());
            std::process::exit(if report.ok { 0 } else { 1 });
        }
        _ => {
            let report = match read_spec() {
                Ok(spec) => launch::launch(&spec),
                Err(error) => failed(error),
            };
            finish(&report)
        }
    }
}

fn failed(error: String) -> LaunchReport {
    LaunchReport {
        error: Some(error),
        ..LaunchReport::default()
    }
}

/// Success (with the detached tree's fd, leaked on purpose: it must outlive the report) or
/// the error.
fn failed_or(result: Result<Option<std::os::fd::OwnedFd>, LaunchError>) -> LaunchReport {
    match result {
        Ok(tree) => LaunchReport {
            ok: true,
            tree_fd: tree.map(|fd| {
                let raw = fd.as_raw_fd();
                std::mem::forget(fd);
                raw
            }),
            ..LaunchReport::default()
        },
        Err(e) => failed(e.0),
    }
}

fn write_report(report: &LaunchReport) {
    let line = serde_json::to_string(report)
        .unwrap_or_else(|_| r#"{"ok":false,"error":"cannot encode report"}"#.to_owned());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn finish(report: &LaunchReport) -> ! {
    write_report(report);
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
