//! What the daemon tells the launcher, and what the launcher answers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the launcher needs to build one sandbox. Written as JSON on the launcher's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Sandbox id (lowercase alphanumeric); also the hostname inside.
    pub id: String,
    /// Template layers, top-most first, canonical ownership (root = uid 0).
    pub layers: Vec<PathBuf>,
    /// Overlay upper dir (owned by `uid_base`).
    pub upper_dir: PathBuf,
    /// Overlay work dir (owned by `uid_base`).
    pub work_dir: PathBuf,
    /// Mount point for the overlay inside the launcher's private mount namespace.
    pub rootfs_dir: PathBuf,
    /// First host uid/gid of the sandbox's 65536-id range; root inside maps to it.
    pub uid_base: u32,
    /// Bind-mounted network namespace to join (`/run/netns/burrow-<slot>`).
    pub netns_path: PathBuf,
    /// cgroup.procs files to join before anything else (one per cgroup v1 controller).
    pub cgroup_procs: Vec<PathBuf>,
    /// Host path of the agent binary; bind-mounted read-only at `/.burrow/agent` inside.
    pub agent_path: PathBuf,
    /// Environment for the agent (its configuration, see docs/ARCHITECTURE.md).
    pub agent_env: BTreeMap<String, String>,
    /// Nameservers written to the sandbox's /etc/resolv.conf.
    pub nameservers: Vec<String>,
    /// Host file that receives the agent's stdout and stderr (created/appended by the launcher,
    /// outside the sandbox). `None` sends them to /dev/null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_log: Option<PathBuf>,
    /// How long to wait for the agent's readiness byte, in milliseconds (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_ms: Option<u64>,
    /// When set, the sandbox gets a network namespace of its own user namespace (so CRIU can
    /// checkpoint it) instead of joining `netns_path`: the launcher moves `eth0` from
    /// `netns_path` into it and configures it. `None`: join `netns_path` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_netns: Option<OwnNetns>,
    /// Host CA bundle to install as the sandbox's `/etc/ssl/certs/ca-certificates.crt`, so
    /// sandboxes trust what the host trusts (e.g. a TLS-intercepting egress proxy's CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// The launcher binary that started this sandbox (its init re-execs it as `/.burrow/init`).
    /// Not used by the launcher itself: recorded so a CRIU restore maps exactly the same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_path: Option<PathBuf>,
}

/// Addresses of a sandbox-owned network namespace's `eth0`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnNetns {
    /// The sandbox's address on `eth0`.
    pub address: std::net::Ipv4Addr,
    /// Prefix length of `address`'s subnet (30 for burrow's slots).
    pub prefix_len: u8,
    /// Default gateway (the host end of the veth).
    pub gateway: std::net::Ipv4Addr,
    /// When set, the launcher creates the veth pair itself: this host end (in the launcher's
    /// original netns, addressed `gateway/prefix_len`) with `eth0` made directly in the
    /// sandbox's netns. `None`: move the `eth0` waiting in `netns_path` (~30 ms of the kernel
    /// waiting for an RCU grace period, which creating it in place does not pay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
}

/// Largest uid_base the 32-bit id space allows for a 65536-id range.
const MAX_UID_BASE: u32 = u32::MAX - 0x1_0000;

impl LaunchSpec {
    /// Checks everything the launcher relies on before it touches the system, so bad input is
    /// refused with a message instead of half-building a sandbox.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 63
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.id.starts_with('-');
        if !id_ok {
            return Err(format!(
                "invalid sandbox id {:?}: expected 1-63 chars of [a-z0-9-], not starting with '-'",
                self.id
            ));
        }
        if self.layers.is_empty() {
            return Err("no template layers given".into());
        }
        let mut paths: Vec<(&str, &PathBuf)> = vec![
            ("upper_dir", &self.upper_dir),
            ("work_dir", &self.work_dir),
            ("rootfs_dir", &self.rootfs_dir),
            ("netns_path", &self.netns_path),
            ("agent_path", &self.agent_path),
        ];
        paths.extend(self.layers.iter().map(|l| ("layer", l)));
        paths.extend(self.cgroup_procs.iter().map(|c| ("cgroup_procs", c)));
        if let Some(log) = &self.agent_log {
            paths.push(("agent_log", log));
        }
        if let Some(bundle) = &self.ca_bundle {
            paths.push(("ca_bundle", bundle));
        }
        for (what, path) in paths {
            let text = path
                .to_str()
                .ok_or_else(|| format!("{what} {path:?} is not UTF-8"))?;
            if !path.is_absolute() {
                return Err(format!("{what} {path:?} must be an absolute path"));
            }
            // Overlay mount options are comma/colon separated: these would be misparsed.
            if text.contains([',', ':', '\\', '\n'])
                || text.contains("/../")
                || text.ends_with("/..")
            {
                return Err(format!(
                    "{what} {path:?} contains a character or component burrow does not accept"
                ));
            }
        }
        if self.uid_base == 0
            || self.uid_base > MAX_UID_BASE
            || !self.uid_base.is_multiple_of(0x1_0000)
        {
            return Err(format!(
                "uid_base {:#x} must be a non-zero multiple of 0x10000 below {MAX_UID_BASE:#x}",
                self.uid_base
            ));
        }
        for ns in &self.nameservers {
            if ns.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("nameserver {ns:?} is not an IP address"));
            }
        }
        for (key, value) in &self.agent_env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(format!(
                    "agent_env entry {key:?} is not a valid environment variable"
                ));
            }
        }
        if let Some(veth) = self.own_netns.as_ref().and_then(|n| n.host_veth.as_ref())
            && !(1..=15).contains(&veth.len())
                | !veth
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(format!(
                "own_netns.host_veth {veth:?} must be 1-15 characters of [A-Za-z0-9_.-]"
            ));
        }
        if let Some(net) = &self.own_netns
            && !(1..=31).contains(&net.prefix_len)
        {
            return Err(format!(
                "own_netns.prefix_len {} must be between 1 and 31",
                net.prefix_len
            ));
        }
        Ok(())
    }
}

/// The one JSON line the launcher writes on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LaunchReport {
    pub ok: bool,
    /// Host pid of the sandbox's init (pid 1 inside). On failure: the init that was started
    /// and killed, if any (the caller, as subreaper, should reap it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Duration of each launch phase in microseconds, in order (for the daemon's timing logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases_us: Vec<(String, u64)>,
    /// `--detach-root`: the launcher's fd number of the detached root tree, for the caller to
    /// take over with `pidfd_getfd` before closing the launcher's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_fd: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> LaunchSpec {
        LaunchSpec {
            id: "abc1".into(),
            layers: vec!["/t/l0".into()],
            upper_dir: "/d/upper".into(),
            work_dir: "/d/work".into(),
            rootfs_dir: "/d/rootfs".into(),
            uid_base: 0x1001_0000,
            netns_path: "/run/netns/burrow-0".into(),
            cgroup_procs: vec!["/sys/fs/cgroup/pids/burrow/abc1/cgroup.procs".into()],
            agent_path: "/usr/bin/agent".into(),
            agent_env: BTreeMap::new(),
            nameservers: vec!["10.0.0.53".into()],
            agent_log: None,
            ready_timeout_ms: None,
            own_netns: None,
            ca_bundle: None,
            launcher_path: None,
        }
    }

    #[test]
    fn accepts_a_valid_spec() {
        valid().validate().unwrap();
    }

    #[test]
    fn rejects_bad_input_with_the_field_named() {
        type Mutation = fn(&mut LaunchSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.id = "Bad_Id".into(), "sandbox id"),
            (|s| s.id = String::new(), "sandbox id"),
            (|s| s.layers.clear(), "no template layers"),
            (|s| s.layers = vec!["relative/dir".into()], "absolute"),
            (|s| s.upper_dir = "/d/up,per".into(), "upper_dir"),
            (|s| s.work_dir = "/d/../etc".into(), "work_dir"),
            (|s| s.uid_base = 0, "uid_base"),
            (|s| s.uid_base = 0x1001_0001, "uid_base"),
            (|s| s.nameservers = vec!["dns.example".into()], "nameserver"),
            (
                |s| {
                    s.own_netns = Some(OwnNetns {
                        address: [10, 0, 0, 2].into(),
                        prefix_len: 0,
                        gateway: [10, 0, 0, 1].into(),
                        host_veth: None,
                    })
                },
                "prefix_len",
            ),
            (
                |s| {
                    s.agent_env.insert("A=B".into(), "x".into());
                },
                "agent_env",
            ),
        ];
        for (mutate, expected) in cases {
            let mut spec = valid();
            mutate(&mut spec);
            let err = spec.validate().unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
