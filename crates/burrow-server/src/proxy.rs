//! The port proxy: requests for `{port}-{id}.{domain}`, or carrying `E2b-Sandbox-Id` and
//! `E2b-Sandbox-Port` (on a `localhost`/IP/`sandbox.{domain}` host), go to `sandbox_ip:port`.
//!
//! No API key is needed: the agent on 49983 checks its own access token, and other ports are
//! public like E2B's (anyone who can reach the daemon and knows the id can reach them) unless
//! the sandbox was created with private ports: then a request needs the sandbox's traffic
//! access token in `e2b-traffic-access-token` (checked before anything wakes the sandbox; the
//! header is not passed on to the sandbox).

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use burrow_types::is_valid_sandbox_id;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::error::HttpError;
use crate::state::AppState;
use burrow_core::power::ActivityGuard;
use burrow_core::traffic::{self, Admission};
use burrow_envd::signature::{constant_time_eq, file_signature};

pub const HEADER_SANDBOX_ID: &str = "e2b-sandbox-id";
pub const HEADER_SANDBOX_PORT: &str = "e2b-sandbox-port";

/// Connection pool for proxied requests (HTTP/1.1 to the sandbox).
pub type ProxyClient = Client<HttpConnector, Body>;

pub fn new_client() -> ProxyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Where a proxied request goes.
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    pub sandbox_id: String,
    pub port: u16,
}

/// Host name of a request without its port, lowercased (h2 requests carry it in the URI).
pub(crate) fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let raw = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// Decides whether a request is for the proxy. `Err` is a malformed proxy request.
pub fn route(
    headers: &HeaderMap,
    uri: &Uri,
    domain: &str,
) -> Result<Option<ProxyTarget>, HttpError> {
    let Some(host) = request_host(headers, uri) else {
        return Ok(None);
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if is_shared_host(&host, &domain) {
        let id = headers.get(HEADER_SANDBOX_ID).and_then(|v| v.to_str().ok());
        let port = headers
            .get(HEADER_SANDBOX_PORT)
            .and_then(|v| v.to_str().ok());
        return match (id, port) {
            (None, None) => Ok(None),
            (Some(id), Some(port)) => {
                let port = parse_port(port).ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "invalid E2b-Sandbox-Port '{port}': use 1-65535"
                    ))
                })?;
                Ok(Some(ProxyTarget {
                    sandbox_id: id.trim().to_string(),
                    port,
                }))
            }
            _ => Err(HttpError::bad_request(
                "send both E2b-Sandbox-Id and E2b-Sandbox-Port to reach a sandbox port",
            )),
        };
    }
    let Some(label) = host.strip_suffix(&format!(".{domain}")) else {
        return Ok(None);
    };
    let Some((port, id)) = label.split_once('-') else {
        return Ok(None);
    };
    match parse_port(port) {
        Some(port) if is_valid_sandbox_id(id) => Ok(Some(ProxyTarget {
            sandbox_id: id.to_string(),
            port,
        })),
        _ => Ok(None),
    }
}

/// A signed `/files` URL that names no sandbox: what E2B's SDKs make for `download_url` and
/// `upload_url` when `E2B_SANDBOX_URL` points every envd call at one address (the SDK adds its
/// routing headers to its own calls, but a signed URL is for anyone, a browser included). The
/// signature is a hash over the path, operation, user, expiration and the sandbox's envd access
/// token, so the sandbox it was made for is the one whose token reproduces it; the agent then
/// checks it again (and its expiration) as for any signed URL. Only on the shared hosts (where
/// header routing applies), only for GET (read) and POST (write) `/files` with a `signature`.
pub(crate) fn signed_files_url(domain: &str, request: &Request) -> Option<SignedFilesUrl> {
    if request.uri().path() != "/files" {
        return None;
    }
    let operation = match *request.method() {
        axum::http::Method::GET => "read",
        axum::http::Method::POST => "write",
        _ => return None,
    };
    let host = request_host(request.headers(), request.uri())?;
    if !is_shared_host(&host, &domain.trim_end_matches('.').to_ascii_lowercase()) {
        return None;
    }
    let mut url = SignedFilesUrl {
        operation,
        ..SignedFilesUrl::default()
    };
    let mut signature = None;
    for (key, value) in url::form_urlencoded::parse(request.uri().query()?.as_bytes()) {
        match &*key {
            "path" => url.path = value.into_owned(),
            "username" => url.username = value.into_owned(),
            "signature" => signature = Some(value.into_owned()),
            "signature_expiration" if !value.is_empty() => {
                url.expiration = Some(value.parse().ok()?);
            }
            _ => {}
        }
    }
    url.signature = signature?;
    Some(url)
}

/// The parts of a signed `/files` URL that its signature covers.
#[derive(Debug, Default)]
pub(crate) struct SignedFilesUrl {
    pub(crate) operation: &'static str,
    pub(crate) path: String,
    pub(crate) username: String,
    pub(crate) signature: String,
    pub(crate) expiration: Option<i64>,
}

impl SignedFilesUrl {
    /// The agent of the running (or sleeping) sandbox whose envd token makes this signature.
    async fn target(&self, state: &AppState) -> Option<ProxyTarget> {
        let filter = burrow_store::SandboxFilter {
            state: Some(burrow_types::SandboxState::Running),
            ..Default::default()
        };
        let sandboxes = state.store.list_sandboxes(filter).await.ok()?;
        sandboxes.into_iter().find_map(|record| {
            let token = record.access_token.as_deref()?;
            let expected = file_signature(
                &self.path,
                self.operation,
                &self.username,
                token,
                self.expiration,
            );
            constant_time_eq(expected.as_bytes(), self.signature.as_bytes()).then_some(
                ProxyTarget {
                    sandbox_id: record.id,
                    port: burrow_types::ENVD_PORT,
                },
            )
        })
    }
}

/// A host that names no sandboxes (`localhost`, an IP address, `sandbox.{domain}`; `host` and
/// `domain` lowercase, without a trailing dot): requests on it are routed by E2B's headers, and
/// signed `/files` URLs on it by their signature.
fn is_shared_host(host: &str, domain: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok() || host == format!("sandbox.{domain}")
}

fn parse_port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// Middleware: forwards proxy requests, passes everything else on to the API.
pub async fn proxy_or_api(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match route(request.headers(), request.uri(), &state.config.domain) {
        Ok(None) => {
            let signed = signed_files_url(&state.config.domain, &request);
            match signed {
                Some(signed) => match signed.target(&state).await {
                    Some(target) => forward(&state, target, request).await,
                    None => next.run(request).await,
                },
                None => next.run(request).await,
            }
        }
        Ok(Some(target)) => forward(&state, target, request).await,
        Err(e) => e.into_response(),
    }
}

/// E2B's body for a sandbox that does not exist or does not run (SDKs match "was not found").
fn sandbox_not_found(id: &str) -> Response {
    let body = json!({"sandboxId": id, "message": "The sandbox was not found", "code": 502});
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

/// E2B's body for a closed port (SDKs match "port is not open").
fn port_not_open(id: &str, port: u16) -> Response {
    let body = json!({
        "sandboxId": id,
        "message": "The sandbox is running but port is not open",
        "port": port,
        "code": 502,
    });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

/// The sandbox's IP, waking it if it sleeps, and the activity guard that keeps it awake while
/// the proxied exchange lasts.
async fn sandbox_ip(state: &AppState, id: &str) -> Option<(Ipv4Addr, Arc<ActivityGuard>)> {
    if !is_valid_sandbox_id(id) {
        return None;
    }
    // E2B: a sandbox paused through the E2B API without autoResume is not woken by traffic.
    if !state.e2b_lifecycles.admit_traffic(id, chrono::Utc::now()) {
        tracing::debug!(
            sandbox = id,
            "proxy: E2B-paused without autoResume, not waking"
        );
        return None;
    }
    match burrow_core::sandboxes::running_as(state, id, "proxy").await {
        Ok(sandbox) => Some((sandbox.handle.ip, sandbox.activity)),
        Err(e) => {
            tracing::debug!(sandbox = id, "proxy target unavailable: {e}");
            None
        }
    }
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// E2B's shape for a refused request to a private sandbox's port: 401.
fn traffic_token_refused(id: &str, admission: &Admission) -> Response {
    let message = match admission {
        Admission::MissingToken => format!(
            "The sandbox's ports are private: send its traffic access token in the {} header",
            traffic::TRAFFIC_TOKEN_HEADER
        ),
        _ => "The traffic access token is not this sandbox's".to_string(),
    };
    let body = json!({"sandboxId": id, "message": message, "code": 401});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

async fn forward(state: &AppState, target: ProxyTarget, mut request: Request) -> Response {
    let ProxyTarget { sandbox_id, port } = target;
    // The token is ours, not the sandbox's app's: never passed on.
    let presented = request.headers_mut().remove(traffic::TRAFFIC_TOKEN_HEADER);
    if port != burrow_types::ENVD_PORT && is_valid_sandbox_id(&sandbox_id) {
        match traffic::admit(state, &sandbox_id, presented.as_ref().map(|v| v.as_bytes())).await {
            Ok(Admission::Admit) => {}
            Ok(refused) => return traffic_token_refused(&sandbox_id, &refused),
            Err(e) => return HttpError::from(e).into_response(),
        }
    }
    let Some((ip, activity)) = sandbox_ip(state, &sandbox_id).await else {
        return sandbox_not_found(&sandbox_id);
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let uri: Uri = match format!("http://{ip}:{port}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => {
            return HttpError::bad_request(format!("invalid request path: {e}")).into_response();
        }
    };
    let host = request_host(request.headers(), request.uri());
    let upgrade = upgrade_protocol(request.headers());
    let client_upgrade = upgrade.as_ref().and_then(|_| {
        request
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
    });

    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(protocol) = &upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    if !headers.contains_key(header::HOST)
        && let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok())
    {
        headers.insert(header::HOST, host);
    }
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;

    let mut response = match state.proxy_client.request(request).await {
        Ok(response) => response,
        Err(e) if e.is_connect() => return port_not_open(&sandbox_id, port),
        Err(e) => {
            tracing::debug!(sandbox = sandbox_id, port, "proxy request failed: {e:?}");
            let body = json!({
                "sandboxId": sandbox_id,
                "message": format!("The sandbox did not answer on port {port}: {e}"),
                "port": port,
                "code": 502,
            });
            return (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        match client_upgrade {
            Some(client_upgrade) => {
                tokio::spawn(async move {
                    let _activity = activity;
                    let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                        (Ok(c), Ok(u)) => (c, u),
                        _ => return,
                    };
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
            None => {
                return HttpError::agent(
                    "the sandbox switched protocols on a request that cannot be upgraded",
                )
                .into_response();
            }
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        crate::activity::body_with_activity(Body::new(body), activity),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn target(id: &str, port: u16) -> Option<ProxyTarget> {
        Some(ProxyTarget {
            sandbox_id: id.into(),
            port,
        })
    }

    #[test]
    fn host_routing() {
        let uri = Uri::from_static("/x");
        let r = |host: &str| route(&headers(&[("host", host)]), &uri, "example.com").unwrap();
        assert_eq!(r("49983-iabc.example.com"), target("iabc", 49983));
        assert_eq!(r("8080-iabc.EXAMPLE.com:443"), target("iabc", 8080));
        assert_eq!(r("example.com"), None);
        assert_eq!(r("api.example.com"), None);
        assert_eq!(r("0-iabc.example.com"), None);
        assert_eq!(r("70000-iabc.example.com"), None);
        assert_eq!(r("80-i-abc.example.com"), None);
        assert_eq!(r("80-iabc.other.com"), None);
        assert_eq!(r("80-iabc.x.example.com"), None);
        assert_eq!(r("127.0.0.1:7420"), None);
    }

    #[test]
    fn header_routing_only_on_shared_hosts() {
        let uri = Uri::from_static("/x");
        let both = |host: &str| {
            route(
                &headers(&[
                    ("host", host),
                    ("e2b-sandbox-id", "iabc"),
                    ("e2b-sandbox-port", "49983"),
                ]),
                &uri,
                "example.com",
            )
        };
        assert_eq!(both("localhost:7420").unwrap(), target("iabc", 49983));
        assert_eq!(both("127.0.0.1").unwrap(), target("iabc", 49983));
        assert_eq!(both("[::1]:7420").unwrap(), target("iabc", 49983));
        assert_eq!(both("sandbox.example.com").unwrap(), target("iabc", 49983));
        assert_eq!(both("api.example.com").unwrap(), None);
        let one = route(
            &headers(&[("host", "localhost"), ("e2b-sandbox-id", "iabc")]),
            &uri,
            "example.com",
        );
        assert!(one.is_err());
        let bad_port = route(
            &headers(&[
                ("host", "localhost"),
                ("e2b-sandbox-id", "iabc"),
                ("e2b-sandbox-port", "x"),
            ]),
            &uri,
            "example.com",
        );
        assert!(bad_port.is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("x-access-token", "t"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-access-token"));
    }
}
