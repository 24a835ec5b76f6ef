//! `GET /v1/sandboxes/{id}/ports/{port}/tunnel` with `Upgrade: tcp`: after `101`, the connection
//! carries raw bytes to and from `sandbox_ip:port` (used by `burrow forward`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use burrow_types::{ApiError, codes};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::HttpError;
use crate::state::AppState;
use burrow_core::sandboxes;

/// Open a raw TCP tunnel to a port inside the sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports/{port}/tunnel", tag = "sandboxes",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("port" = u16, Path, description = "TCP port inside the sandbox (1-65535)"),
        ("Upgrade" = String, Header, description = "Must be `tcp` (with `Connection: Upgrade`)"),
    ),
    responses(
        (status = 101, description = "Switched to a raw TCP stream"),
        (status = 400, description = "`invalid_request`: bad port or missing upgrade headers", body = ApiError),
        (status = 404, description = "`sandbox_not_found`", body = ApiError),
        (status = 409, description = "`sandbox_not_running`", body = ApiError),
        (status = 502, description = "`agent_error`: nothing listens on the port", body = ApiError),
    ))]
pub async fn tunnel(
    State(state): State<AppState>,
    Path((id, port)): Path<(String, String)>,
    mut request: Request,
) -> Result<Response, HttpError> {
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| HttpError::bad_request(format!("invalid port '{port}': use 1-65535")))?;
    let wants_tcp = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    if !wants_tcp {
        return Err(HttpError::bad_request(
            "send 'Connection: Upgrade' and 'Upgrade: tcp' (HTTP/1.1) to open a tunnel",
        ));
    }
    let sandbox = sandboxes::running_as(&state, &id, "tunnel").await?;
    let target = SocketAddr::from((sandbox.handle.ip, port));
    // Connect before answering 101 so a closed port is a clear error, not a dead tunnel.
    let upstream = TcpStream::connect(target).await.map_err(|e| {
        HttpError::new(
            StatusCode::BAD_GATEWAY,
            codes::AGENT_ERROR,
            format!("cannot connect to port {port} in sandbox {id}: {e}; is a server listening on it (on 0.0.0.0)?"),
        )
    })?;
    let _ = upstream.set_nodelay(true);
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Err(HttpError::bad_request(
            "this connection cannot be upgraded; use HTTP/1.1 with 'Connection: Upgrade'",
        ));
    };
    let activity = sandbox.activity.clone();
    tokio::spawn(async move {
        let _activity = activity;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(sandbox = id, port, "tunnel closed: {e}");
                }
            }
            Err(e) => tracing::debug!(sandbox = id, port, "tunnel upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    Ok(response)
}
