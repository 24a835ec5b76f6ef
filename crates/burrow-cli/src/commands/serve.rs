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
    burrow_server::serve(config, shutdown).await?;
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
