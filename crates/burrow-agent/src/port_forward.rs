//! Makes services that listen only on loopback inside the sandbox reachable through burrow's
//! port proxy, which connects to the sandbox's `eth0` address (E2B's envd does the same).
//!
//! Every [`POLL_INTERVAL`] the agent reads `/proc/net/tcp{,6}` (its own network namespace) for
//! LISTEN sockets. For each port listened on only on a loopback address (`127.0.0.0/8`, `::1`)
//! it listens on `eth0`'s address, same port, and copies each connection to and from the
//! loopback listener (half-closes included). Not on `0.0.0.0`: that would collide with the
//! service. The forwarder stops when the service's socket goes away.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How often listening sockets are looked for.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a forwarded connection may take to reach the loopback service.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `TCP_LISTEN` in `/proc/net/tcp`'s `st` column.
const TCP_LISTEN: &str = "0A";

/// LISTEN sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`. Lines that do not parse
/// are skipped (the header, or a format this code does not know).
pub fn parse_listeners(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _slot = fields.next()?;
            let local = fields.next()?;
            let _remote = fields.next()?;
            (fields.next()? == TCP_LISTEN).then_some(())?;
            parse_address(local)
        })
        .collect()
}

/// `0100007F:1F40` (IPv4) or 32 hex digits `:port` (IPv6). The address is printed as the raw
/// 32-bit words of the network-order address, each read in host order.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<[u8; 4]> = (0..addr.len() / 8)
        .map(|i| {
            let word = addr.get(i * 8..i * 8 + 8)?;
            u32::from_str_radix(word, 16).ok().map(u32::to_ne_bytes)
        })
        .collect::<Option<_>>()?;
    let ip = match (addr.len(), words.as_slice()) {
        (8, [w]) => IpAddr::V4(Ipv4Addr::from(*w)),
        (32, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (chunk, w) in bytes.chunks_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(w);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A loopback address, with IPv4-mapped IPv6 addresses given as IPv4.
fn loopback(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(ip),
        IpAddr::V6(v6) if v6.is_loopback() => Some(ip),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .filter(Ipv4Addr::is_loopback)
            .map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// Ports to forward, each with the loopback address to forward to: ports listened on loopback
/// and not on a wildcard address (a wildcard listener is reachable already). IPv4 targets win
/// over IPv6 ones. `skip`: the agent's own port.
pub fn loopback_only(listeners: &[SocketAddr], skip: u16) -> BTreeMap<u16, SocketAddr> {
    let wildcard: Vec<u16> = listeners
        .iter()
        .filter(|a| a.ip().is_unspecified())
        .map(SocketAddr::port)
        .collect();
    let mut ports = BTreeMap::new();
    for addr in listeners {
        let Some(ip) = loopback(addr.ip()) else {
            continue;
        };
        if addr.port() == skip || wildcard.contains(&addr.port()) {
            continue;
        }
        let target = SocketAddr::new(ip, addr.port());
        ports
            .entry(addr.port())
            .and_modify(|t: &mut SocketAddr| {
                if t.is_ipv6() && target.is_ipv4() {
                    *t = target;
                }
            })
            .or_insert(target);
    }
    ports
}

/// The address of the interface the default route leaves by (`eth0`): connecting a UDP socket
/// sends nothing, it only picks the source address.
fn public_ipv4() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// One forwarded port: accepts on `bind`, connects each connection to `target`.
#[derive(Debug)]
pub struct Forwarder {
    target: SocketAddr,
    bound: SocketAddr,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `bind` and forwards every connection to `target`.
    pub async fn start(bind: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let bound = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, target));
        Ok(Self {
            target,
            bound,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.bound
    }
}

impl Drop for Forwarder {
    /// Stops accepting; connections already forwarded run until either side closes.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((inbound, _)) => {
                tokio::spawn(forward(inbound, target));
            }
            Err(e) => {
                // Out of fds or similar: back off instead of spinning.
                eprintln!("port forward to {target}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Copies both ways until both directions are done; an EOF on one side is passed on as a
/// half-close (`shutdown(SHUT_WR)`) to the other, which may still answer.
async fn forward(mut inbound: TcpStream, target: SocketAddr) {
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let mut outbound = match outbound {
        Ok(Ok(stream)) => stream,
        // The caller sees the connection close, like a refused connection.
        Ok(Err(_)) | Err(_) => return,
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// The forwarders of the sandbox, kept in line with its listening sockets.
#[derive(Debug, Default)]
struct Forwarders {
    active: HashMap<u16, Forwarder>,
    /// Ports whose forwarder could not listen (e.g. a port below 1024 in a host-owned network
    /// namespace), with the target it was for: not retried while that stays so.
    refused: HashMap<u16, SocketAddr>,
}

impl Forwarders {
    async fn update(&mut self, wanted: &BTreeMap<u16, SocketAddr>, public: Option<IpAddr>) {
        self.active
            .retain(|port, f| wanted.get(port) == Some(&f.target) && public == Some(f.bound.ip()));
        self.refused
            .retain(|port, target| wanted.get(port) == Some(target));
        let Some(public) = public else {
            return;
        };
        for (&port, &target) in wanted {
            if self.active.contains_key(&port) || self.refused.contains_key(&port) {
                continue;
            }
            match Forwarder::start(SocketAddr::new(public, port), target).await {
                Ok(f) => {
                    self.active.insert(port, f);
                }
                Err(e) => {
                    eprintln!("cannot forward {public}:{port} to {target}: {e}");
                    self.refused.insert(port, target);
                }
            }
        }
    }
}

fn read_listeners() -> Vec<SocketAddr> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| parse_listeners(&text))
        .collect()
}

/// Forwards loopback-only services to `eth0` for as long as the agent runs. `agent_port` is
/// never forwarded.
pub async fn run(agent_port: u16) {
    let mut forwarders = Forwarders::default();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let wanted = loopback_only(&read_listeners(), agent_port);
        forwarders.update(&wanted, public_ipv4()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 00000000:C2CF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200C80A:C2CF 0100C80A:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   4: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";
    const PROC_NET_TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0FA0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 7 1 0 100 0 0 10 0
   2: 00000000000000000000000001000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 8 1 0 100 0 0 10 0
";

    #[test]
    fn parses_listen_sockets_of_both_families() {
        let v4 = parse_listeners(PROC_NET_TCP);
        assert_eq!(
            v4,
            vec![
                "127.0.0.1:8000".parse().unwrap(),
                "0.0.0.0:49871".parse().unwrap(),
                "127.0.0.1:80".parse().unwrap(),
                "0.0.0.0:80".parse().unwrap(),
            ],
            "the established connection (st 01) is not a listener"
        );
        let v6 = parse_listeners(PROC_NET_TCP6);
        assert_eq!(
            v6,
            vec![
                "[::1]:3000".parse().unwrap(),
                "[::ffff:127.0.0.1]:4000".parse().unwrap(),
                "[::1]:8000".parse().unwrap(),
            ]
        );
        assert!(parse_listeners("garbage\n 0: zz:zz 0 0A").is_empty());
    }

    #[test]
    fn picks_loopback_only_ports() {
        let mut all = parse_listeners(PROC_NET_TCP);
        all.extend(parse_listeners(PROC_NET_TCP6));
        all.push("127.0.0.1:49983".parse().unwrap());
        let wanted = loopback_only(&all, 49983);
        let expected: BTreeMap<u16, SocketAddr> = [
            (3000, "[::1]:3000".parse().unwrap()),
            (4000, "127.0.0.1:4000".parse().unwrap()),
            // Both families on loopback: IPv4 is the target.
            (8000, "127.0.0.1:8000".parse().unwrap()),
        ]
        .into();
        // Port 80 has a wildcard listener (reachable already); 49983 is the agent's.
        assert_eq!(wanted, expected);
    }

    #[tokio::test]
    async fn forwards_both_ways_with_half_close() {
        // The service: reads until EOF (the client's half-close), then answers and closes.
        let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = service.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut conn, _) = service.accept().await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            let reply = format!("got {} bytes", got.len());
            conn.write_all(reply.as_bytes()).await.unwrap();
        });
        // 127.0.0.2 stands in for eth0's address: another address, same port.
        let forwarder = Forwarder::start(
            SocketAddr::new([127, 0, 0, 2].into(), target.port()),
            target,
        )
        .await
        .unwrap();
        assert_eq!(forwarder.local_addr().port(), target.port());

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut client = TcpStream::connect(forwarder.local_addr()).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).await.unwrap();
        assert_eq!(reply, "got 5 bytes");

        // Stopped: nothing listens there any more.
        let bound = forwarder.local_addr();
        drop(forwarder);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(bound).await.is_err());
    }

    #[tokio::test]
    async fn forwarders_follow_the_listeners() {
        let service = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = service.local_addr().unwrap();
        let public = Some(IpAddr::from([127, 0, 0, 3]));
        let mut forwarders = Forwarders::default();
        let wanted: BTreeMap<u16, SocketAddr> = [(target.port(), target)].into();
        forwarders.update(&wanted, public).await;
        assert_eq!(forwarders.active.len(), 1);
        // A port already taken on the public address is remembered, not retried every poll.
        let taken = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let busy = taken.local_addr().unwrap().port();
        let other: SocketAddr = ([127, 0, 0, 1], busy).into();
        let both: BTreeMap<u16, SocketAddr> = [(target.port(), target), (busy, other)].into();
        forwarders.update(&both, public).await;
        assert_eq!(forwarders.active.len(), 1);
        assert!(forwarders.refused.contains_key(&busy));
        // The service is gone: its forwarder stops.
        forwarders.update(&BTreeMap::new(), public).await;
        assert!(forwarders.active.is_empty() && forwarders.refused.is_empty());
    }
}
