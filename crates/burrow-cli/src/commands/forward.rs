//! `burrow forward ID PORT`: a local TCP port that tunnels to a port inside a sandbox through the
//! server (HTTP Upgrade to a raw TCP stream), e.g. to point E2B's SDK debug mode
//! (`localhost:49983`) at a burrow sandbox.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use reqwest::header::{CONNECTION, UPGRADE};
use tokio::net::{TcpListener, TcpStream};

use crate::client::ApiClient;

#[derive(Args)]
pub struct ForwardArgs {
    pub id: String,
    /// Port inside the sandbox.
    pub port: u16,
    /// Local address to listen on (default 127.0.0.1:<port>).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

pub async fn run(api: &ApiClient, args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port)));
    // Fail early with the server's message if the sandbox does not exist.
    let _: serde_json::Value = api.get_json(&format!("/v1/sandboxes/{}", args.id)).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "forwarding {listen} -> {}:{} (Ctrl-C to stop)",
        args.id, args.port
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (conn, peer) = accepted.context("accepting a connection")?;
                let api = api.clone();
                let id = args.id.clone();
                tokio::spawn(async move {
                    if let Err(e) = tunnel(&api, &id, args.port, conn).await {
                        eprintln!("burrow: forward from {peer}: {e:#}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

async fn tunnel(api: &ApiClient, id: &str, port: u16, mut conn: TcpStream) -> anyhow::Result<()> {
    conn.set_nodelay(true).ok();
    let resp = api
        .send(
            api.request(
                reqwest::Method::GET,
                &format!("/v1/sandboxes/{id}/ports/{port}/tunnel"),
            )
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "tcp"),
        )
        .await?;
    let mut upstream = resp.upgrade().await.context("upgrading to a tunnel")?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream)
        .await
        .ok();
    Ok(())
}
