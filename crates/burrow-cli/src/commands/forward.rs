//! `burrow forward ID PORT`: a local port that reaches a port inside a sandbox through the server.
//!
//! Two modes:
//! - raw TCP (default for most ports): each local connection becomes an HTTP Upgrade tunnel to
//!   `sandbox_ip:port` (`GET /v1/sandboxes/{id}/ports/{port}/tunnel`);
//! - HTTP (`--http`, the default for the agent's port 49983): each local HTTP request is sent to the
//!   server's port proxy with the routing headers (`E2b-Sandbox-Id/Port`) set to this sandbox and
//!   its envd access token added. This is what lets E2B's SDK in debug mode (which talks to
//!   `localhost:49983` without a token) drive a burrow sandbox.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::header::{CONNECTION, HOST, UPGRADE};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::client::ApiClient;

/// The in-sandbox agent's port (E2B's envd port).
const AGENT_PORT: u16 = 49983;

#[derive(Args)]
pub struct ForwardArgs {
    pub id: String,
    /// Port inside the sandbox.
    pub port: u16,
    /// Local address to listen on (default 127.0.0.1:<port>).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Forward HTTP requests through the server's port proxy (adds the envd access token on
    /// port 49983). Default for port 49983; other ports default to a raw TCP tunnel.
    #[arg(long, conflicts_with = "tcp")]
    pub http: bool,
    /// Forward raw TCP even for port 49983.
    #[arg(long)]
    pub tcp: bool,
}

pub async fn run(api: &ApiClient, args: ForwardArgs) -> anyhow::Result<ExitCode> {
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], args.port)));
    // Fail early with the server's message if the sandbox does not exist.
    let sandbox: Value = api.get_json(&format!("/v1/sandboxes/{}", args.id)).await?;
    let http_mode = args.http || (args.port == AGENT_PORT && !args.tcp);
    let token = sandbox
        .get("envd_access_token")
        .and_then(Value::as_str)
        .map(str::to_string);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let mode = if http_mode { "http" } else { "tcp" };
    eprintln!(
        "forwarding {listen} -> {}:{} ({mode}; Ctrl-C to stop)",
        args.id, args.port
    );
    let target = Arc::new(Target {
        api: api.clone(),
        id: args.id.clone(),
        port: args.port,
        token: if args.port == AGENT_PORT { token } else { None },
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (conn, peer) = accepted.context("accepting a connection")?;
                conn.set_nodelay(true).ok();
                let target = target.clone();
                tokio::spawn(async move {
                    let result = if http_mode {
                        serve_http(target, conn).await
                    } else {
                        tunnel(&target, conn).await
                    };
                    if let Err(e) = result {
                        eprintln!("burrow: forward from {peer}: {e:#}");
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

struct Target {
    api: ApiClient,
    id: String,
    port: u16,
    token: Option<String>,
}

async fn tunnel(target: &Target, mut conn: TcpStream) -> anyhow::Result<()> {
    let api = &target.api;
    let path = format!("/v1/sandboxes/{}/ports/{}/tunnel", target.id, target.port);
    let resp = api
        .send(
            api.request(reqwest::Method::GET, &path)
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

async fn serve_http(target: Arc<Target>, conn: TcpStream) -> anyhow::Result<()> {
    let service = service_fn(move |req| {
        let target = target.clone();
        async move { Ok::<_, Infallible>(relay(&target, req).await) }
    });
    match hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .await
    {
        // A client that hangs up mid-request (a cancelled stream) is normal, not an error.
        Err(e) if e.is_incomplete_message() || e.is_canceled() => Ok(()),
        other => other.context("serving a forwarded HTTP connection"),
    }
}

type RelayBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// Sends one request through the server's port proxy and streams the answer back.
async fn relay(target: &Target, req: Request<Incoming>) -> Response<RelayBody> {
    match try_relay(target, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let body =
                serde_json::json!({"code": 502, "message": format!("burrow forward: {e:#}")});
            let bytes = bytes::Bytes::from(body.to_string());
            let mut resp = Response::new(
                http_body_util::Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY;
            resp
        }
    }
}

async fn try_relay(target: &Target, req: Request<Incoming>) -> anyhow::Result<Response<RelayBody>> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = parts.headers.clone();
    for hop in [
        HOST,
        CONNECTION,
        reqwest::header::TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(hop);
    }
    headers.insert("e2b-sandbox-id", target.id.parse()?);
    headers.insert("e2b-sandbox-port", target.port.to_string().parse()?);
    if let Some(token) = &target.token
        && !headers.contains_key("x-access-token")
    {
        headers.insert("x-access-token", token.parse()?);
    }
    let body_stream = body.into_data_stream().map_err(std::io::Error::other);
    let url = format!("{}{}", target.api.base(), path);
    // The API key must never travel into the sandbox: use the client without credentials.
    let resp = target
        .api
        .http()
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body_stream))
        .send()
        .await
        .context("reaching the burrow server")?;
    let mut builder = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k != CONNECTION && k != reqwest::header::TRANSFER_ENCODING {
            builder = builder.header(k, v);
        }
    }
    let stream = resp
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    Ok(builder.body(BodyExt::boxed(StreamBody::new(stream)))?)
}
