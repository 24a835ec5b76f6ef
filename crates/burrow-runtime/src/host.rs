//! Small helpers for host facts and host commands (blocking; call from spawn_blocking or at start).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::RuntimeError;

/// Runs `program args`, feeding `stdin` if given; a non-zero exit becomes an error with stderr.
pub fn run_command(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), RuntimeError> {
    let describe = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::Command(format!("{}: cannot run {program}: {e}", describe())))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| RuntimeError::Command(format!("{}: write stdin: {e}", describe())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RuntimeError::Command(format!("{}: {e}", describe())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(RuntimeError::Command(format!(
            "{} failed ({}): {}",
            describe(),
            out.status,
            stderr.trim()
        )));
    }
    Ok(())
}

/// IPv4 nameservers of the host (`/etc/resolv.conf`), skipping loopback ones, which a sandbox
/// cannot reach.
pub fn host_nameservers() -> Vec<std::net::Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ns| ns.trim().parse::<std::net::Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// The host's CA bundle, when the host trusts CAs of its own (`/usr/local/share/ca-certificates`,
/// e.g. a TLS-intercepting egress proxy): sandboxes then get the same bundle, so `pip install`
/// and `curl https://…` work wherever they work on the host. `BURROW_TRUST_HOST_CAS=0` turns it off.
pub fn host_ca_bundle() -> Option<std::path::PathBuf> {
    if std::env::var("BURROW_TRUST_HOST_CAS").is_ok_and(|v| v == "0") {
        return None;
    }
    let has_local_cas = std::fs::read_dir("/usr/local/share/ca-certificates")
        .ok()?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".crt"));
    let bundle = std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    (has_local_cas && bundle.is_file()).then_some(bundle)
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/pid/stat).
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// Field `n` (1-based, as in proc(5): 4 = ppid, 22 = starttime) of `/proc/<pid>/stat`, for
/// `n` ≥ 3: the command name (field 2) may contain spaces, so fields are counted from the last
/// `)`.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(n.checked_sub(3)?).map(str::to_owned)
}

/// True if `pid` is alive (not a zombie) and started at `start_time`.
pub fn process_matches(pid: i32, start_time: u64) -> bool {
    if pid <= 0 || process_start_time(pid) != Some(start_time) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
    !matches!(state, Some("Z" | "X") | None)
}

/// Kernel memory an open file costs the opener's memory cgroup at least (`struct file` and its
/// fd-table slot; measured ~215 bytes on cgroup v1 with kmem accounting).
const KMEM_PER_OPEN_FILE: u64 = 200;

/// Whether the host-wide open-file counter `fs.file-max` could run out before the memory that
/// sandboxes may be given does: sandboxes (no CAP_SYS_ADMIN) get ENFILE once it is reached, so
/// one sandbox with a large memory limit could starve the others. systemd raises it to the
/// maximum at boot; the kernel's own default is about memory / 10 KiB.
fn file_max_is_low(file_max: u64, mem_total_bytes: u64) -> bool {
    file_max < mem_total_bytes / KMEM_PER_OPEN_FILE
}

/// Logs a warning when [`file_max_is_low`] (see docs/isolation.md, "Resource limits").
pub fn warn_if_file_max_low() {
    let file_max = std::fs::read_to_string("/proc/sys/fs/file-max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    if let (Some(file_max), Some(mem_total)) = (file_max, mem_total)
        && file_max_is_low(file_max, mem_total)
    {
        tracing::warn!(
            file_max,
            "fs.file-max is below what sandboxes' memory can hold in open files: one sandbox \
             could make the others fail with ENFILE; raise it (sysctl \
             fs.file-max=9223372036854775807, as systemd does)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::file_max_is_low;

    #[test]
    fn file_max_is_low_below_memory_over_file_cost() {
        let gib = 1 << 30;
        // The kernel's default on a 24 GiB host (this VM): 2.47 M files, ~10 KiB each.
        assert!(file_max_is_low(2_466_239, 24 * gib));
        // systemd's LONG_MAX, or anything memory runs out before.
        assert!(!file_max_is_low(i64::MAX as u64, 24 * gib));
        assert!(!file_max_is_low(24 * gib / 200, 24 * gib));
    }
}
