//! The daemon's configuration. The listener fields are plain data read by the HTTP layer
//! (`burrow-server`); the domain reads the rest.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Default listen address: loopback only, since the API key is the only protection.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
    burrow_types::DEFAULT_PORT,
);

/// Everything `burrow serve` can configure.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the HTTP listener (API and proxy). Default `127.0.0.1:7420`.
    pub listen: SocketAddr,
    /// burrow's data dir. Default `/var/lib/burrow`.
    pub data_dir: PathBuf,
    /// Domain for proxy host routing: `{port}-{id}.{domain}`. Default `localhost`.
    pub domain: String,
    /// Path of `burrow-launch`. Default: next to the running executable.
    pub launcher_path: PathBuf,
    /// Path of `burrow-agent`. Default: next to the running executable.
    pub agent_path: PathBuf,
    /// Network slots kept ready ahead of demand.
    pub net_pool_size: usize,
    /// Largest file upload (`PUT /v1/sandboxes/{id}/files`), in bytes. Default 1 GiB.
    pub max_upload_bytes: u64,
    /// Largest template build upload (`PUT /v1/templates/uploads/{sha256}`: a build context, a
    /// rootfs tarball or an OCI layout tar), in bytes. Default 1 GiB.
    pub max_build_upload_bytes: u64,
    /// Largest JSON request body, in bytes. Default 1 MiB.
    pub max_json_bytes: usize,
    /// Print a newly created API key to stdout (the first start only). Default true.
    pub print_new_key: bool,
    /// An HTTPS listener serving the same routes (E2B SDKs need `https://api.{domain}` and
    /// `https://{port}-{id}.{domain}`). Default none.
    pub tls: Option<TlsConfig>,
    /// Idle time before a sandbox goes to standby when its create request names none
    /// (0 = never). Default 15 s.
    pub default_idle_timeout: std::time::Duration,
    /// Size of burrow's zram swap for warm standby page-out, in bytes; 0 disables page-out.
    /// Default: a quarter of the host's RAM.
    pub zram_bytes: u64,
    /// Server-wide cap on every sandbox's age (a tier limit); `None` = no cap. Default none.
    pub max_sandbox_age: Option<std::time::Duration>,
    /// How often usage is sampled into the store. Default 5 s.
    pub meter_interval: std::time::Duration,
    /// A sandbox in warm standby this long goes to deep standby (CRIU checkpoint to disk);
    /// zero = never. Default 600 s.
    pub deep_after: std::time::Duration,
    /// Which sandboxes a graceful shutdown checkpoints to disk (deep standby), so they survive a
    /// host reboot. Default [`DeepOnShutdown::Warm`].
    pub deep_on_shutdown: DeepOnShutdown,
    /// While the host's `MemAvailable` is below this many bytes, sandboxes in warm standby go
    /// to deep standby (longest asleep first) without waiting for `deep_after`; 0 = never.
    /// Default 5 % of RAM.
    pub deep_below_available: u64,
    /// Warm standby also evicts the page cache charged to the sandbox's memory cgroup (fewer
    /// MiB held, slower wake: the files are read again). Default false.
    pub standby_drop_cache: bool,
    /// How long the idle timer waits for a sandbox's pre-standby hook (`/etc/burrow/pre-standby`)
    /// before it is killed and the standby goes ahead; zero = hooks are never run. Default 10 s.
    pub standby_grace: std::time::Duration,
    /// Open connections per listener (HTTP and HTTPS each); beyond it, new connections wait in
    /// the kernel's accept backlog until one closes. Default 4096.
    pub max_connections: usize,
    /// Time a client gets for a TLS handshake, for its first request after connecting and, on
    /// HTTP/1.1, for each complete request head, counted from when the server starts waiting
    /// for it (so an idle HTTP/1.1 keep-alive connection is closed after it too). Default 30 s.
    pub http_header_timeout: std::time::Duration,
    /// A connection with no request in flight this long is closed (HTTP/2: GOAWAY). Default 60 s.
    pub http_idle_timeout: std::time::Duration,
    /// A client that reads nothing of what it is sent for this long is disconnected (responses,
    /// exec streams, WebSockets, proxied traffic); a request body of the API or the E2B API that
    /// brings nothing for this long while it is read fails. Default 60 s.
    pub http_stall_timeout: std::time::Duration,
    /// How long audit log entries are kept. Default 90 days.
    pub audit_retention: std::time::Duration,
}

/// Tiers beyond the built-in ones (TOML, one table per tier), in the data dir.
pub const TIERS_FILE: &str = "tiers.toml";
/// Prices for cost projections (TOML), in the data dir; default: [`crate::cost::Prices`].
pub const PRICES_FILE: &str = "prices.toml";

/// Which sandboxes a graceful shutdown sends to deep standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeepOnShutdown {
    /// None: sandboxes in warm standby stay frozen in RAM (lost if the host reboots).
    Off,
    /// Those in warm standby. Awake ones keep running: they outlive the daemon and the next
    /// start adopts them, untouched (a host reboot ends their processes; their files stay).
    Warm,
    /// Awake ones too: each is checkpointed, and the next start restores it at once, without
    /// waiting for a request, so its processes go on after a host reboot as well. Costs a
    /// checkpoint and a restore per awake sandbox on every restart of the daemon.
    All,
}

impl std::str::FromStr for DeepOnShutdown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" | "false" => Ok(Self::Off),
            "warm" | "true" => Ok(Self::Warm),
            "all" => Ok(Self::All),
            _ => Err(format!(
                "'{s}' is not a deep-on-shutdown mode: use off, warm or all"
            )),
        }
    }
}

/// The HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Address, e.g. `127.0.0.1:443` (E2B SDKs always use port 443 for sandbox URLs).
    pub listen: SocketAddr,
    /// Operator-provided PEM certificate chain and key for `{domain}`, `*.{domain}`; `None` = a
    /// wildcard certificate from burrow's local CA in `<data_dir>/tls/` (created on first use).
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from("/var/lib/burrow"),
            domain: "localhost".to_string(),
            launcher_path: sibling_binary("burrow-launch"),
            agent_path: sibling_binary("burrow-agent"),
            net_pool_size: 4,
            max_upload_bytes: 1 << 30,
            max_build_upload_bytes: 1 << 30,
            max_json_bytes: 1 << 20,
            print_new_key: true,
            tls: None,
            default_idle_timeout: std::time::Duration::from_secs(15),
            zram_bytes: crate::standby::default_zram_bytes(),
            max_sandbox_age: None,
            meter_interval: std::time::Duration::from_secs(5),
            deep_after: std::time::Duration::from_secs(600),
            deep_on_shutdown: DeepOnShutdown::Warm,
            deep_below_available: crate::standby::default_deep_below_available(),
            standby_drop_cache: false,
            standby_grace: std::time::Duration::from_secs(10),
            max_connections: 4096,
            http_header_timeout: std::time::Duration::from_secs(30),
            http_idle_timeout: std::time::Duration::from_secs(60),
            http_stall_timeout: std::time::Duration::from_secs(60),
            audit_retention: std::time::Duration::from_secs(90 * 86400),
        }
    }
}

/// `name` in the directory of the running executable (falls back to a bare name).
fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}
