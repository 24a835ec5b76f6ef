//! `burrow-launch`: reads a LaunchSpec on stdin, builds the sandbox, prints one LaunchReport
//! line on stdout, exits 0 on success and 1 on failure. The sandbox keeps running.

use std::io::{Read, Write};

use burrow_launch::{LaunchReport, LaunchSpec, launch};

fn main() {
    let report = match read_spec() {
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
