//! burrow-agent: serves envd (Connect-RPC + /files, /health, /envs, /metrics) inside a sandbox.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::Context;
use burrow_agent::{AgentState, Config, router};

fn main() -> anyhow::Result<()> {
    let config = Config::from_env().context("invalid agent configuration")?;
    // The sandbox's soft RLIMIT_NOFILE (1024, see burrow-launch's process_limits) is for the
    // programs it runs; the agent serves many streams at once and takes up to the hard limit.
    // The processes it starts get the soft limit back (process/spawn.rs).
    burrow_agent::process::raise_nofile_soft_limit();
    // One thread keeps the idle footprint small; blocking file work uses spawn_blocking.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(5))
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    if let Some(fd) = config.ready_fd {
        signal_ready(fd).with_context(|| format!("cannot signal readiness on fd {fd}"))?;
    }
    eprintln!("burrow-agent listening on {}", config.listen);
    if config.forward_localhost {
        // Services bound to localhost become reachable through the port proxy (eth0).
        tokio::spawn(burrow_agent::port_forward::run(config.listen.port()));
    }
    let app = router(AgentState::new(config));
    // Small request/response exchanges must not wait for Nagle + delayed ACK (40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.context("server failed")
}

/// Writes one byte to the readiness fd and closes it.
fn signal_ready(fd: i32) -> std::io::Result<()> {
    rustix::io::fcntl_getfd(
        // SAFETY: only borrowed for the duration of this call to check the fd is open.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )?;
    // SAFETY: the launcher passed this fd for us to own; nothing else in the agent uses it,
    // and we just checked it is open.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(b"1")?;
    Ok(())
}
