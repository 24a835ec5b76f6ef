//! The sandbox's veth pair for a restore (and after a failed or interrupted dump), over
//! rtnetlink (no `ip`/`nsenter` processes: 4 of them cost 21–48 ms of every restore).
//!
//! A netlink socket talks to the network namespace it was created in, whatever thread uses it
//! later. Sockets for other namespaces are therefore opened by a short-lived thread that
//! `setns`-es first (only that thread changes namespace; the caller's, a tokio blocking thread,
//! never does).

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::RuntimeError;

/// The sandbox-side name of the veth.
const SANDBOX_IF: &str = "eth0";

/// How `eth0` is configured inside the sandbox once it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Eth0Config {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Also bring `lo` up (the kernel then gives it 127.0.0.1/8 and ::1 by itself).
    pub loopback_up: bool,
}

impl Eth0Config {
    /// From the runtime's text form: `"10.200.0.2/30"`, `"10.200.0.1"`.
    pub fn parse(address: &str, gateway: &str) -> Result<Self, RuntimeError> {
        let bad = |what: &str, v: &str| RuntimeError::Checkpoint(format!("bad {what} {v:?}"));
        let (ip, len) = address
            .split_once('/')
            .ok_or_else(|| bad("eth0 address (want a.b.c.d/len)", address))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| bad("eth0 prefix length", address))?;
        Ok(Self {
            address: ip.parse().map_err(|_| bad("eth0 address", address))?,
            prefix_len,
            gateway: gateway.parse().map_err(|_| bad("gateway", gateway))?,
            loopback_up: false,
        })
    }
}

pub fn open_netns(path: &Path) -> Result<File, RuntimeError> {
    File::open(path).map_err(|e| RuntimeError::Checkpoint(format!("open netns {path:?}: {e}")))
}

/// Creates the veth pair `host_if` (in the caller's netns, addressed as the gateway with
/// `eth0`'s prefix, up) / `eth0` (made directly in `netns`), then configures `eth0` (and `lo`)
/// there. No link changes namespace: a move waits for RCU grace periods (10-30 ms on this
/// host), a creation does not (~1 ms).
pub fn create_veth_into(
    host_if: &str,
    netns: &File,
    config: Eth0Config,
) -> Result<(), RuntimeError> {
    let mut host = RouteSocket::open().map_err(|e| context("netlink socket", e))?;
    host.add_veth(host_if, SANDBOX_IF, netns.as_fd())
        .map_err(|e| context(&format!("create veth {host_if}/{SANDBOX_IF}"), e))?;
    let index = if_index(host_if).map_err(|e| context(&format!("find {host_if}"), e))?;
    host.add_address(index, config.gateway, config.prefix_len)
        .map_err(|e| context(&format!("address {host_if}"), e))?;
    host.set_up(index)
        .map_err(|e| context(&format!("bring {host_if} up"), e))?;
    let target = netns.as_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || configure_inside(target, config))
            .join()
            .unwrap_or_else(|_| Err(RuntimeError::Checkpoint("netlink thread panicked".into())))
    })
}

/// Deletes link `name` of the caller's netns (a veth takes its peer along). Missing is fine.
pub fn delete_link(name: &str) -> Result<(), RuntimeError> {
    let index = match if_index(name) {
        Ok(index) => index,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
        Err(e) => return Err(context(&format!("find {name}"), e)),
    };
    let mut socket = RouteSocket::open().map_err(|e| context("netlink socket", e))?;
    match socket.delete_link(index) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other.map_err(|e| context(&format!("delete {name}"), e)),
    }
}

fn context(step: &str, e: io::Error) -> RuntimeError {
    RuntimeError::Checkpoint(format!("{step}: {e}"))
}

/// Enters `netns` (the calling thread must be a dedicated one) and configures `lo` (if asked)
/// and `eth0` there: address, up, default route.
fn configure_inside(netns: BorrowedFd<'_>, config: Eth0Config) -> Result<(), RuntimeError> {
    enter_netns(netns).map_err(|e| context("enter the target netns", e))?;
    let mut target = RouteSocket::open().map_err(|e| context("netlink socket", e))?;
    if config.loopback_up {
        let lo = if_index("lo").map_err(|e| context("find lo", e))?;
        target.set_up(lo).map_err(|e| context("bring lo up", e))?;
    }
    let index = if_index(SANDBOX_IF).map_err(|e| context("find eth0", e))?;
    target
        .add_address(index, config.address, config.prefix_len)
        .map_err(|e| context("address eth0", e))?;
    target
        .set_up(index)
        .map_err(|e| context("bring eth0 up", e))?;
    target
        .add_default_route(config.gateway)
        .map_err(|e| context("default route", e))
}

fn enter_netns(netns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns on a valid namespace fd; it only changes this (dedicated) thread.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The index of interface `name` in the calling thread's netns.
fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// A NETLINK_ROUTE socket for requests that only expect an acknowledgement.
struct RouteSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl RouteSocket {
    /// In the calling thread's network namespace.
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// A veth pair: `name` here, `peer` created directly in `peer_netns`.
    fn add_veth(&mut self, name: &str, peer: &str, peer_netns: BorrowedFd<'_>) -> io::Result<()> {
        let mut peer_link = LinkMessage::default();
        peer_link.attributes = vec![
            LinkAttribute::IfName(peer.to_owned()),
            LinkAttribute::NetNsFd(peer_netns.as_raw_fd()),
        ];
        let mut link = LinkMessage::default();
        link.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_link))),
            ]),
        ];
        self.ack(
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(link), 0)
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(link), 0)
    }

    fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut addr = AddressMessage::default();
        addr.header.family = AddressFamily::Inet;
        addr.header.prefix_len = prefix_len;
        addr.header.index = index;
        addr.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
        ];
        self.ack(
            RouteNetlinkMessage::NewAddress(addr),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.header.protocol = RouteProtocol::Boot;
        route.header.scope = RouteScope::Universe;
        route.header.kind = RouteType::Unicast;
        route.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway))];
        self.ack(
            RouteNetlinkMessage::NewRoute(route),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    /// Sends one request and waits for the kernel's acknowledgement (or its errno).
    fn ack(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            self.buffer.clear();
            self.socket.recv(&mut self.buffer, 0)?;
            let mut rest = self.buffer.as_slice();
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    break;
                }
                rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                if let NetlinkPayload::Error(error) = reply.payload {
                    return match error.code {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_runtime_text_form() {
        let c = Eth0Config::parse("10.200.0.2/30", "10.200.0.1").unwrap();
        assert_eq!(c.address, Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(c.prefix_len, 30);
        assert_eq!(c.gateway, Ipv4Addr::new(10, 200, 0, 1));
        for (a, g) in [
            ("10.200.0.2", "10.200.0.1"),
            ("10.200.0.2/33", "10.200.0.1"),
            ("x/30", "10.200.0.1"),
            ("10.200.0.2/30", "gw"),
        ] {
            assert!(Eth0Config::parse(a, g).is_err(), "{a} {g}");
        }
    }
}
