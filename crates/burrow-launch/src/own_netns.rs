//! A network namespace owned by the sandbox's user namespace: helper A creates it together with
//! the user namespace; the launcher (still in the slot's pool netns) moves the slot's `eth0`
//! into it and configures it. CRIU can only checkpoint namespaces owned by the dumped tree's
//! user namespace, which a host-made netns is not.
//!
//! Cost: two `ip` runs (~2-4 ms) on the create path; netlink from the launcher would avoid them.
//! With `host_veth` set the pair is created in place instead of moving a pooled `eth0`: a move
//! between namespaces waits for an RCU grace period (~30 ms on this host), a creation does not.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::spec::OwnNetns;
use crate::sys::{self, LaunchError, Result, check};

/// Moves `eth0` of the launcher's current netns into `pid`'s netns, then enters that netns and
/// sets up loopback, the address and the default route. Leaves the launcher in `pid`'s netns.
pub fn move_eth0_into(pid: libc::pid_t, net: &OwnNetns) -> Result<()> {
    match &net.host_veth {
        Some(veth) => create_veth_into(pid, net, veth)?,
        None => run_ip(&["link", "set", "eth0", "netns", &pid.to_string()], None)?,
    }
    let target = sys::open_path(Path::new(&format!("/proc/{pid}/ns/net")), libc::O_RDONLY)?;
    // SAFETY: `target` is an open namespace fd; the launcher is single-threaded.
    let r = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    check(r as _, || {
        "setns into the sandbox's network namespace".into()
    })?;
    let batch = format!(
        "link set lo up\naddr add {}/{} dev eth0\nlink set eth0 up\nroute add default via {}\n",
        net.address, net.prefix_len, net.gateway
    );
    run_ip(&["-batch", "-"], Some(&batch))
}

/// The launcher's netns before it joined the slot's: where the host end of a veth belongs.
static HOST_NETNS: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Remembers the launcher's current netns as the host's; call before joining the slot's netns.
pub fn remember_host_netns() -> Result<()> {
    let fd = sys::open_path(Path::new("/proc/self/ns/net"), libc::O_RDONLY)?;
    let _ = HOST_NETNS.set(fd);
    Ok(())
}

/// Creates the veth pair `host_veth` (host netns, addressed as the gateway, up) / `eth0` (made
/// directly in `pid`'s netns). Leaves the launcher in the host netns.
fn create_veth_into(pid: libc::pid_t, net: &OwnNetns, host_veth: &str) -> Result<()> {
    let host = HOST_NETNS
        .get()
        .ok_or_else(|| LaunchError("the host network namespace was not remembered".into()))?;
    // SAFETY: `host` is an open namespace fd; the launcher is single-threaded.
    let r = unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) };
    check(r as _, || {
        "setns back into the host network namespace".into()
    })?;
    let batch = format!(
        "link add {host_veth} type veth peer name eth0 netns {pid}\naddr add {}/{} dev {host_veth}\nlink set {host_veth} up\n",
        net.gateway, net.prefix_len
    );
    run_ip(&["-batch", "-"], Some(&batch))
}

fn run_ip(args: &[&str], input: Option<&str>) -> Result<()> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LaunchError(format!("run ip {}: {e}", args.join(" "))))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| LaunchError(format!("write to ip: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LaunchError(format!("wait for ip: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LaunchError(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
