//! Moving the sandbox's `eth0` between its slot's pool netns and the sandbox's own netns, over
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
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
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

/// Moves `eth0` from the netns at `from` into the one at `to`; with `config`, addresses it,
/// brings it up and adds the default route there (an interface loses all of that when it
/// changes netns).
pub fn move_eth0(from: &Path, to: &Path, config: Option<Eth0Config>) -> Result<(), RuntimeError> {
    let from_ns = open_netns(from)?;
    let to_ns = open_netns(to)?;
    move_eth0_between(&from_ns, &to_ns, config)
}

pub fn open_netns(path: &Path) -> Result<File, RuntimeError> {
    File::open(path).map_err(|e| RuntimeError::Checkpoint(format!("open netns {path:?}: {e}")))
}

/// [`move_eth0`] between open netns files.
pub fn move_eth0_between(
    from: &File,
    to: &File,
    config: Option<Eth0Config>,
) -> Result<(), RuntimeError> {
    let context = |step: &str, e: io::Error| RuntimeError::Checkpoint(format!("{step}: {e}"));
    let from_fd = from.as_fd();
    let to_fd = to.as_fd();
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<(), RuntimeError> {
                enter_netns(from_fd).map_err(|e| context("enter the source netns", e))?;
                let mut source = RouteSocket::open().map_err(|e| context("netlink socket", e))?;
                source
                    .move_link(SANDBOX_IF, to_fd)
                    .map_err(|e| context("move eth0", e))?;
                let Some(config) = config else {
                    return Ok(());
                };
                enter_netns(to_fd).map_err(|e| context("enter the target netns", e))?;
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
            })
            .join()
            .unwrap_or_else(|_| Err(RuntimeError::Checkpoint("netlink thread panicked".into())))
    })
}

/// Forgets the host's neighbour entry for `ip` on `host_if` (in the caller's netns). While
/// `eth0` was parked, traffic to the sandbox left a FAILED entry; kept, the first connection
/// after a restore waits ~400 ms for it to age out. No entry is fine.
pub fn forget_neighbour(host_if: &str, ip: Ipv4Addr) -> Result<(), RuntimeError> {
    let err =
        |e: io::Error| RuntimeError::Checkpoint(format!("forget neighbour {ip} on {host_if}: {e}"));
    let index = if_index(host_if).map_err(err)?;
    let mut socket = RouteSocket::open().map_err(err)?;
    match socket.delete_neighbour(index, ip) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map_err(err),
    }
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

    fn move_link(&mut self, name: &str, netns: BorrowedFd<'_>) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::NetNsFd(netns.as_raw_fd()),
        ];
        self.ack(RouteNetlinkMessage::SetLink(link), 0)
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

    fn delete_neighbour(&mut self, index: u32, ip: Ipv4Addr) -> io::Result<()> {
        let mut neighbour = NeighbourMessage::default();
        neighbour.header.family = AddressFamily::Inet;
        neighbour.header.ifindex = index;
        neighbour.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip))];
        self.ack(RouteNetlinkMessage::DelNeighbour(neighbour), 0)
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
