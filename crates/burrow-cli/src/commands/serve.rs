//! `burrow serve`: the daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ServeArgs {
    /// Address of the HTTP API and proxy.
    #[arg(long, env = "BURROW_LISTEN", default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,
    /// Domain for preview hosts `{port}-{id}.{domain}`.
    #[arg(long, env = "BURROW_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Directory holding `burrow-agent` and `burrow-launch` (default: next to this binary, then
    /// ../lib/burrow).
    #[arg(long, env = "BURROW_LIB_DIR")]
    pub lib_dir: Option<PathBuf>,
    /// Network slots kept ready ahead of demand.
    #[arg(long, default_value_t = 8)]
    pub net_pool: usize,
    /// Also serve HTTPS here (same routes), e.g. 127.0.0.1:443: E2B SDKs need
    /// `https://api.{domain}` and `https://{port}-{id}.{domain}` on port 443.
    #[arg(long, env = "BURROW_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for `{domain}` and `*.{domain}` (default: burrow's local CA in
    /// `<data_dir>/tls/` issues one). Needs --tls-key.
    #[arg(
        long,
        env = "BURROW_TLS_CERT",
        requires = "tls_key",
        requires = "tls_listen"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "BURROW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Idle time before a sandbox goes to standby when it was created without --idle-timeout
    /// (`15s`, `2m`, plain seconds; 0 = never).
    #[arg(long, env = "BURROW_IDLE_TIMEOUT", default_value = "15s", value_parser = crate::args::duration)]
    pub idle_timeout: std::time::Duration,
    /// Size of burrow's zram swap, where warm standby pages sandbox memory out, in MiB
    /// (default: a quarter of the host's RAM; 0 = no page-out, standby only freezes).
    #[arg(long, env = "BURROW_ZRAM_MB")]
    pub zram_mb: Option<u64>,
    /// Largest template build upload (a build context, rootfs tarball or OCI layout tar) the
    /// API accepts, in MiB.
    #[arg(long, env = "BURROW_MAX_BUILD_UPLOAD_MB", default_value_t = 1024)]
    pub max_build_upload_mb: u64,
    /// Longest any sandbox may live (`7d`, `12h`): a cap enforced on every sandbox whatever its
    /// own expiry policy. Default: no cap.
    #[arg(long, env = "BURROW_MAX_SANDBOX_AGE", value_parser = crate::args::duration)]
    pub max_sandbox_age: Option<std::time::Duration>,
    /// How long audit log entries are kept (`90d`, `1y`).
    #[arg(long, env = "BURROW_AUDIT_RETENTION", default_value = "90d", value_parser = crate::args::duration)]
    pub audit_retention: std::time::Duration,
    /// Time in warm standby after which a sandbox goes to deep standby (CRIU checkpoint to disk,
    /// no RAM held; `10m`, plain seconds; 0 = never).
    #[arg(long, env = "BURROW_DEEP_AFTER", default_value = "600", value_parser = crate::args::duration)]
    pub deep_after: std::time::Duration,
    /// On SIGTERM/SIGINT, checkpoint sandboxes to disk (deep standby) so they survive a host
    /// reboot: `warm` = those in warm standby (awake ones keep running and are adopted by the
    /// next start); `all` = awake ones too, restored by the next start without waiting for a
    /// request; `off` = none (`true`/`false` mean warm/off).
    #[arg(
        long,
        env = "BURROW_DEEP_ON_SHUTDOWN",
        default_value = "warm",
        value_name = "off|warm|all"
    )]
    pub deep_on_shutdown: burrow_server::DeepOnShutdown,
    /// Memory pressure: while the host's MemAvailable is below this many MiB, sandboxes in warm
    /// standby go to deep standby, longest asleep first (default: 5 % of RAM; 0 = never).
    #[arg(long, env = "BURROW_DEEP_BELOW_AVAILABLE_MB")]
    pub deep_below_available_mb: Option<u64>,
    /// Warm standby also evicts the page cache charged to the sandbox (files it read): fewer MiB
    /// held per sleeping sandbox, but the wake reads them again (clean page cache is
    /// reclaimable by the kernel anyway).
    #[arg(long, env = "BURROW_STANDBY_DROP_CACHE", default_value_t = false, action = clap::ArgAction::Set)]
    pub standby_drop_cache: bool,
    /// How long an idle sandbox's pre-standby hook (`/etc/burrow/pre-standby`, run before the
    /// idle timer freezes it) may take before it is killed (`10s`, plain seconds; 0 = never run
    /// hooks).
    #[arg(long, env = "BURROW_STANDBY_GRACE", default_value = "10", value_parser = crate::args::duration)]
    pub standby_grace: std::time::Duration,
    /// Open connections per listener (HTTP and HTTPS each); beyond it, new connections wait in
    /// the kernel's accept backlog until one closes.
    #[arg(long, env = "BURROW_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Time a client gets for a TLS handshake, for its first request after connecting and, on
    /// HTTP/1.1, for each complete request head (counted from when the server starts waiting
    /// for it, so idle HTTP/1.1 keep-alive connections close after it too; `30s`, plain
    /// seconds).
    #[arg(long, env = "BURROW_HTTP_HEADER_TIMEOUT", default_value = "30", value_parser = positive_duration)]
    pub http_header_timeout: std::time::Duration,
    /// A connection with no request in flight this long is closed (HTTP/2: GOAWAY; `60s`,
    /// plain seconds).
    #[arg(long, env = "BURROW_HTTP_IDLE_TIMEOUT", default_value = "60", value_parser = positive_duration)]
    pub http_idle_timeout: std::time::Duration,
    /// A client that reads nothing of a response, stream or WebSocket for this long is
    /// disconnected, and one that stops sending a request body the API is reading gets an error
    /// (`60s`, plain seconds).
    #[arg(long, env = "BURROW_HTTP_STALL_TIMEOUT", default_value = "60", value_parser = positive_duration)]
    pub http_stall_timeout: std::time::Duration,
}

/// A duration above zero (a zero client timeout would close every connection at once).
fn positive_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let duration = crate::args::duration(text)?;
    anyhow::ensure!(!duration.is_zero(), "must be above zero");
    Ok(duration)
}

pub async fn run(args: ServeArgs, data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BURROW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let lib_dir = match args.lib_dir {
        Some(dir) => dir,
        None => find_lib_dir()?,
    };
    let config = burrow_server::ServerConfig {
        listen: args.listen,
        data_dir,
        domain: args.domain,
        launcher_path: lib_dir.join("burrow-launch"),
        agent_path: lib_dir.join("burrow-agent"),
        net_pool_size: args.net_pool,
        tls: args.tls_listen.map(|listen| burrow_server::TlsConfig {
            listen,
            cert_and_key: args.tls_cert.zip(args.tls_key),
        }),
        default_idle_timeout: args.idle_timeout,
        zram_bytes: args
            .zram_mb
            .map(|mb| mb.saturating_mul(1 << 20))
            .unwrap_or_else(|| burrow_server::ServerConfig::default().zram_bytes),
        max_build_upload_bytes: args.max_build_upload_mb.saturating_mul(1 << 20),
        max_sandbox_age: args.max_sandbox_age.filter(|age| !age.is_zero()),
        audit_retention: args.audit_retention,
        deep_after: args.deep_after,
        deep_on_shutdown: args.deep_on_shutdown,
        standby_drop_cache: args.standby_drop_cache,
        standby_grace: args.standby_grace,
        max_connections: args.max_connections as usize,
        http_header_timeout: args.http_header_timeout,
        http_idle_timeout: args.http_idle_timeout,
        http_stall_timeout: args.http_stall_timeout,
        deep_below_available: args
            .deep_below_available_mb
            .map(|mb| mb.saturating_mul(1 << 20))
            .unwrap_or_else(|| burrow_server::ServerConfig::default().deep_below_available),
        ..burrow_server::ServerConfig::default()
    };
    let shutdown = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stop the server with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let server = burrow_server::Server::bind(config).await?;
    if let Some(addr) = server.tls_addr() {
        println!("burrow: HTTPS on {addr}");
    }
    if let Some(ca) = server.ca_cert_path() {
        println!(
            "burrow: clients must trust the local CA {} (Python: SSL_CERT_FILE, Node: NODE_EXTRA_CA_CERTS)",
            ca.display()
        );
    }
    server.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// The helper binaries live next to `burrow` (a cargo build) or in `../lib/burrow` (an install).
fn find_lib_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the burrow binary")?;
    let bin_dir = exe
        .parent()
        .context("the burrow binary has no parent dir")?;
    let candidates = [bin_dir.to_path_buf(), bin_dir.join("../lib/burrow")];
    candidates
        .iter()
        .find(|dir| has_helpers(dir))
        .cloned()
        .with_context(|| {
            format!(
                "burrow-agent and burrow-launch not found next to {} or in ../lib/burrow; pass --lib-dir",
                exe.display()
            )
        })
}

fn has_helpers(dir: &Path) -> bool {
    dir.join("burrow-agent").is_file() && dir.join("burrow-launch").is_file()
}
