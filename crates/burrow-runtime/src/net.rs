//! Sandbox networking: one network namespace per slot (`/run/netns/burrow-<k>`) with a veth
//! pair (`bw<k>` on the host, `eth0` inside) on the k-th /30 of 10.200.0.0/16, plus the
//! `inet burrow` nftables table (NAT out, isolation in).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::RuntimeError;
use crate::host::run_command;
use crate::instance::Naming;

/// Number of /30 slots in an instance's /16.
pub const MAX_SLOTS: u32 = 16_384;

/// Addresses and names of slot `k` of an instance (see [`crate::instance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub naming: Naming,
    pub k: u32,
}

impl Slot {
    pub fn new(naming: Naming, k: u32) -> Self {
        Self { naming, k }
    }
    fn net_base(self) -> u32 {
        u32::from_be_bytes([10, self.naming.subnet_octet(), 0, 0])
    }
    pub fn host_ip(self) -> Ipv4Addr {
        Ipv4Addr::from(self.net_base() + 4 * self.k + 1)
    }
    pub fn sandbox_ip(self) -> Ipv4Addr {
        Ipv4Addr::from(self.net_base() + 4 * self.k + 2)
    }
    pub fn netns_name(self) -> String {
        format!("{}{}", self.naming.netns_prefix(), self.k)
    }
    pub fn netns_path(self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns_name())
    }
    pub fn host_veth(self) -> String {
        self.naming.veth(self.k)
    }
    /// Slot from a netns name `<prefix><k>` of this instance.
    pub fn from_netns_name(naming: Naming, name: &str) -> Option<Self> {
        let k: u32 = name.strip_prefix(&naming.netns_prefix())?.parse().ok()?;
        (k < MAX_SLOTS).then_some(Self::new(naming, k))
    }
}

/// What a slot holds ahead of demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// The netns with the veth pair, `eth0` configured inside: sandboxes join that netns (host
    /// netns mode), and a restore moves a parked `eth0` from it.
    Full,
    /// The netns only: the launcher creates the veth pair with `eth0` directly in the sandbox's
    /// own netns (sandbox netns mode). Moving a pooled `eth0` there instead cost ~30 ms per
    /// create (the kernel waits for an RCU grace period when a device changes netns).
    NetnsOnly,
}

/// Builds the namespaces (and for [`SlotKind::Full`] the veths, addresses and routes) of
/// `slots` (blocking, 1 `ip` run, + 1 per slot for `Full`).
pub fn create_slots(slots: &[Slot], kind: SlotKind) -> Result<(), RuntimeError> {
    if slots.is_empty() {
        return Ok(());
    }
    if kind == SlotKind::NetnsOnly {
        let batch: String = slots
            .iter()
            .map(|s| format!("netns add {}\n", s.netns_name()))
            .collect();
        return run_command("ip", &["-batch", "-"], Some(&batch));
    }
    run_command("ip", &["-batch", "-"], Some(&host_commands(slots)))?;
    for s in slots {
        if let Err(first) = configure_inside(*s) {
            // Seen once right after mass deletion of namespaces: rebuild this slot and retry.
            tracing::warn!(slot = s.k, error = %first, "network slot set-up failed; rebuilding it");
            delete_slot(*s)?;
            run_command("ip", &["-batch", "-"], Some(&host_commands(&[*s])))?;
            configure_inside(*s)?;
        }
    }
    Ok(())
}

fn host_commands(slots: &[Slot]) -> String {
    let mut host = String::new();
    for s in slots {
        let (name, veth) = (s.netns_name(), s.host_veth());
        host += &format!("netns add {name}\n");
        host += &format!("link add {veth} type veth peer name eth0 netns {name}\n");
        host += &format!("addr add {}/30 dev {veth}\n", s.host_ip());
        host += &format!("link set {veth} up\n");
    }
    host
}

fn configure_inside(s: Slot) -> Result<(), RuntimeError> {
    let inside = format!(
        "link set lo up\naddr add {}/30 dev eth0\nlink set eth0 up\nroute add default via {}\n",
        s.sandbox_ip(),
        s.host_ip()
    );
    run_command("ip", &["-n", &s.netns_name(), "-batch", "-"], Some(&inside))
}

/// Deletes slot `s`'s namespace (its veth pair goes with it). Missing is fine.
pub fn delete_slot(s: Slot) -> Result<(), RuntimeError> {
    // Deleting the host end removes the pair at once; a dropped netns is torn down
    // asynchronously and would leave `bw<k>` around for a moment.
    delete_host_veth(s)?;
    if !s.netns_path().exists() {
        return Ok(());
    }
    run_command("ip", &["netns", "del", &s.netns_name()], None)
}

/// Deletes slot `s`'s veth pair by its host end `bw<k>`, if there is one (over netlink; a pair
/// that vanishes meanwhile with the sandbox-owned netns it belongs to is fine).
pub fn delete_host_veth(s: Slot) -> Result<(), RuntimeError> {
    crate::checkpoint::eth0::delete_link(&s.host_veth())
}

/// Whether the host has a network interface called `link`.
pub fn link_exists(link: &str) -> bool {
    Path::new("/sys/class/net").join(link).exists()
}

/// Whether the kernel has brought `link` fully up (`operstate` "up"). A veth gets its carrier
/// when its peer comes up, but the kernel attaches its transmit queue asynchronously (link
/// watch, under the rtnl lock); what is sent before that is dropped and costs ARP or TCP a 1 s
/// retransmission.
pub fn link_is_up(link: &str) -> bool {
    std::fs::read_to_string(
        std::path::Path::new("/sys/class/net")
            .join(link)
            .join("operstate"),
    )
    .is_ok_and(|state| state.trim() == "up")
}

/// Slots of this instance whose namespace currently exists.
pub fn existing_slots(naming: Naming) -> Vec<Slot> {
    let mut slots: Vec<Slot> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| Slot::from_netns_name(naming, &e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    slots.sort_by_key(|s| s.k);
    slots
}

/// Ranges a sandbox may never reach (besides the nameservers): private, shared, link-local
/// (cloud metadata), loopback, multicast, reserved.
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// The instance's `inet burrow<n>` ruleset. `host_subnets` are the host's own directly connected
/// IPv4 networks (blocked too: a sandbox has no business on the host's LAN).
/// `anti_spoof`: drop packets from a veth whose source address is not routed back through that
/// veth (sandboxes with their own netns can set any address on their eth0).
pub fn ruleset(
    naming: Naming,
    nameservers: &[Ipv4Addr],
    host_subnets: &[String],
    anti_spoof: bool,
) -> String {
    let mut blocked: Vec<String> = BLOCKED.iter().map(|s| s.to_string()).collect();
    blocked.extend(host_subnets.iter().cloned());
    let dns = if nameservers.is_empty() {
        String::new()
    } else {
        let list = nameservers
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        format!("elements = {{ {list} }}")
    };
    let spoof = if anti_spoof {
        r#"iifname "bw*" fib saddr . iif oif missing drop"#
    } else {
        ""
    };
    format!(
        r#"table inet {table}
delete table inet {table}
table inet {table} {{
    set dns {{ type ipv4_addr; {dns} }}
    set blocked {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {blocked} }} }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        oifname "bw*" ct state established,related accept
        oifname "bw*" drop
        {spoof}
        iifname "bw*" ct state established,related accept
        iifname "bw*" meta nfproto ipv6 drop
        iifname "bw*" ip daddr @dns udp dport 53 accept
        iifname "bw*" ip daddr @dns tcp dport 53 accept
        iifname "bw*" ip daddr @blocked drop
    }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        {spoof}
        iifname "bw*" ct state established,related accept
        iifname "bw*" ip daddr @dns udp dport 53 accept
        iifname "bw*" ip daddr @dns tcp dport 53 accept
        iifname "bw*" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.{octet}.0.0/16 oifname != "bw*" masquerade
    }}
}}
"#,
        blocked = blocked.join(", "),
        table = naming.nft_table(),
        octet = naming.subnet_octet(),
    )
}

/// Installs (atomically replaces) the instance's nftables table and enables forwarding.
pub fn install_firewall(
    naming: Naming,
    nameservers: &[Ipv4Addr],
    anti_spoof: bool,
) -> Result<(), RuntimeError> {
    let rules = ruleset(naming, nameservers, &host_subnets(), anti_spoof);
    run_command("nft", &["-f", "-"], Some(&rules))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| RuntimeError::Command(format!("enable net.ipv4.ip_forward: {e}")))?;
    raise_neighbour_limits()
}

/// Neighbour (ARP) entries every sandbox needs: the host's for the sandbox and the sandbox's
/// for its gateway. The ARP table is one for all network namespaces.
const NEIGHBOURS_PER_SANDBOX: u64 = 2;

/// Raises the kernel's ARP table limits so that every slot fits. The defaults (soft 512, hard
/// 1024 entries for the whole host) stop new sandboxes from reaching their agent at ~510
/// sandboxes ("neighbor table overflow"). Limits already higher are left alone.
fn raise_neighbour_limits() -> Result<(), RuntimeError> {
    let needed = u64::from(MAX_SLOTS) * NEIGHBOURS_PER_SANDBOX;
    // gc_thresh2: above it stale entries are collected eagerly; gc_thresh3: the hard limit.
    for (name, floor) in [("gc_thresh2", needed), ("gc_thresh3", needed * 2)] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let current: u64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if current < floor {
            std::fs::write(&path, floor.to_string()).map_err(|e| {
                RuntimeError::Command(format!("raise net.ipv4.neigh.default.{name}: {e}"))
            })?;
        }
    }
    Ok(())
}

/// The host's directly connected IPv4 networks (excluding loopback and burrow's veths).
fn host_subnets() -> Vec<String> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-4", "-o", "route", "show", "scope", "link"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" dev bw") && !l.contains(" dev lo"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|net| net.contains('/'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_addresses_follow_the_contract() {
        let n0 = Naming(0);
        assert_eq!(Slot::new(n0, 0).host_ip(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(Slot::new(n0, 0).sandbox_ip(), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(Slot::new(n0, 64).sandbox_ip(), Ipv4Addr::new(10, 200, 1, 2));
        assert_eq!(
            Slot::new(n0, MAX_SLOTS - 1).host_ip(),
            Ipv4Addr::new(10, 200, 255, 253)
        );
        assert_eq!(
            Slot::from_netns_name(n0, "burrow-12"),
            Some(Slot::new(n0, 12))
        );
        assert_eq!(Slot::from_netns_name(n0, "burrow-x"), None);
        assert_eq!(Slot::from_netns_name(n0, "burrow-99999"), None);
        assert_eq!(Slot::from_netns_name(n0, "burrow3-1"), None);
        let n3 = Naming(3);
        assert_eq!(
            Slot::from_netns_name(n3, "burrow3-1"),
            Some(Slot::new(n3, 1))
        );
        assert_eq!(Slot::new(n3, 1).sandbox_ip(), Ipv4Addr::new(10, 203, 0, 6));
        assert_eq!(Slot::new(n3, 1).host_veth(), "bw3x1");
    }
}
