//! The E2B control-plane API for burrow, so the official `e2b` SDKs work unchanged.
//!
//! [`router`] serves E2B's REST endpoints (`/sandboxes`, `/v2/sandboxes`, …, authenticated by
//! `X-API-KEY`) over any [`E2bBackend`]; the server mounts it on `api.{domain}`. All E2B-specific
//! translation (field names, per-version defaults, status codes, error bodies) lives here, the
//! backend speaks burrow-native types. [`tls`] provides the wildcard certificate SDKs need for
//! `https://{port}-{id}.{domain}` and [`TlsListener`] serves an axum app over it.
//!
//! Integration sketch for the server:
//! ```ignore
//! let api = burrow_e2b::router(Arc::new(my_sandbox_service)); // impl E2bBackend
//! let ca = burrow_e2b::tls::LocalCa::load_or_create(&data_dir.join("tls"))?;
//! let config = burrow_e2b::tls::server_config(ca.issue_wildcard("burrow.example.com")?)?;
//! let listener = burrow_e2b::TlsListener::new(TcpListener::bind("0.0.0.0:443").await?, config)?;
//! axum::serve(listener, host_dispatch(api, port_proxy)).await?; // api.{domain} → `api`
//! ```

pub mod backend;
mod create_request;
pub mod error;
mod extract;
mod handlers;
mod list_query;
mod network_config;
pub mod tls;
mod tls_listener;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

pub use backend::{
    BackendError, BuildLogEntry, BuildState, ConnectOptions, ConnectOutcome, CreateSandbox,
    DEFAULT_ENVD_VERSION, E2bBackend, ListFilter, LogLevel, NewTemplateBuild, OnTimeout, Order,
    Principal, SandboxInfo, SandboxMetric, SandboxPage, SandboxState, TemplateAlias,
    TemplateBuildCreated, TemplateBuildSpec, TemplateBuildStatus, TemplateStep,
};
pub use error::ApiError;
pub use tls_listener::{
    HANDSHAKE_TIMEOUT, MAX_CONCURRENT_HANDSHAKES, TlsConnection, TlsLimits, TlsListener,
};

use handlers::{lifecycle, sandboxes, template_builds, templates, unimplemented};

/// First path segments of E2B's API (every route of [`router`] is under one of them), for servers
/// that serve E2B's paths next to their own on a shared host.
pub const PATH_PREFIXES: &[&str] = &[
    "/sandboxes",
    "/v2/sandboxes",
    "/snapshots",
    "/volumes",
    "/volumecontent",
    "/secrets",
    "/templates",
    "/v2/templates",
    "/v3/templates",
    "/default-templates",
    "/unstable",
    // burrow's own: the upload URLs of the template build API (`handlers::template_builds`).
    "/e2b",
];

/// The E2B API routes, ready to be mounted at the root of `api.{domain}`. E2B routes burrow does
/// not implement answer 501 with a message; only paths E2B does not have answer 404.
pub fn router<S: E2bBackend>(backend: Arc<S>) -> Router {
    let routes = Router::new()
        .route(
            "/sandboxes",
            post(sandboxes::create_v1::<S>).get(sandboxes::list_v1::<S>),
        )
        .route(
            "/v2/sandboxes",
            post(sandboxes::create_v2::<S>).get(sandboxes::list_v2::<S>),
        )
        .route(
            "/sandboxes/{id}",
            get(sandboxes::get::<S>).delete(sandboxes::kill::<S>),
        )
        .route("/sandboxes/{id}/timeout", post(lifecycle::set_timeout::<S>))
        .route("/sandboxes/{id}/refreshes", post(lifecycle::refresh::<S>))
        .route("/sandboxes/{id}/pause", post(lifecycle::pause::<S>))
        .route("/sandboxes/{id}/resume", post(lifecycle::resume::<S>))
        .route("/sandboxes/{id}/connect", post(lifecycle::connect_v1::<S>))
        .route(
            "/v2/sandboxes/{id}/connect",
            post(lifecycle::connect_v2::<S>),
        )
        .route("/sandboxes/{id}/metrics", get(lifecycle::metrics::<S>))
        .route("/templates/aliases/{alias}", get(templates::alias::<S>))
        .route("/v3/templates", post(template_builds::request::<S>))
        .route(
            "/templates/{id}/files/{build}",
            get(template_builds::files::<S>),
        )
        .route(
            "/v2/templates/{id}/builds/{build}",
            post(template_builds::start::<S>),
        )
        .route(
            "/templates/{id}/builds/{build}/status",
            get(template_builds::status::<S>),
        )
        .route(
            &format!("{}/{{token}}", template_builds::UPLOAD_PATH),
            put(template_builds::upload::<S>),
        );
    unimplemented::add(routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(backend)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint in burrow's E2B API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}
