//! Sends E2B API requests to the E2B router: everything for `api.{domain}` except the native API's
//! own paths (`/v1/…`, `/healthz`, `/openapi.json`), and E2B's paths (`/sandboxes…`,
//! `/v2/sandboxes…`, `/templates…`, …: [`burrow_e2b::PATH_PREFIXES`]) on any other host, so
//! `E2B_API_URL=http://127.0.0.1:7420` works without DNS or TLS. The two APIs' paths never overlap. Requests for the port proxy are routed before this
//! layer and never get here.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

/// The E2B router and the host name it answers on.
#[derive(Clone)]
pub struct E2bRouter {
    pub api_host: String,
    pub router: Router,
}

impl E2bRouter {
    pub fn new(domain: &str, router: Router) -> Self {
        Self {
            api_host: format!("api.{}", domain.trim_end_matches('.').to_ascii_lowercase()),
            router,
        }
    }

    fn handles(&self, host: Option<&str>, path: &str) -> bool {
        (host == Some(self.api_host.as_str()) && !is_native_path(path)) || is_e2b_path(path)
    }
}

/// Paths of burrow's native API.
fn is_native_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/") || path == "/healthz" || path == "/openapi.json"
}

/// Paths of E2B's control plane (served, or answered 501 where burrow lacks the feature).
fn is_e2b_path(path: &str) -> bool {
    burrow_e2b::PATH_PREFIXES.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Middleware: the E2B API for its host and paths, the rest to `next`.
pub async fn route_e2b_api(State(e2b): State<E2bRouter>, request: Request, next: Next) -> Response {
    let host = crate::proxy::request_host(request.headers(), request.uri());
    if !e2b.handles(host.as_deref(), request.uri().path()) {
        return next.run(request).await;
    }
    match e2b.router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2b_host_and_paths_are_recognised() {
        let e2b = E2bRouter::new("Burrow.Localhost.", Router::new());
        assert!(e2b.handles(Some("api.burrow.localhost"), "/teams"));
        assert!(!e2b.handles(Some("api.burrow.localhost"), "/v1/sandboxes"));
        assert!(!e2b.handles(Some("api.burrow.localhost"), "/healthz"));
        assert!(e2b.handles(Some("127.0.0.1"), "/sandboxes"));
        assert!(e2b.handles(None, "/sandboxes/abc/timeout"));
        assert!(e2b.handles(Some("localhost"), "/v2/sandboxes"));
        assert!(!e2b.handles(Some("localhost"), "/v1/sandboxes"));
        assert!(!e2b.handles(Some("localhost"), "/sandboxesx"));
        assert!(e2b.handles(Some("127.0.0.1"), "/templates/aliases/base"));
        assert!(e2b.handles(Some("127.0.0.1"), "/v3/templates"));
        assert!(e2b.handles(Some("127.0.0.1"), "/volumes"));
        assert!(!e2b.handles(Some("127.0.0.1"), "/metrics"));
        assert!(!e2b.handles(Some("x.burrow.localhost"), "/healthz"));
    }
}
