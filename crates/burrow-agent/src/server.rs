//! The HTTP router: Connect-RPC services plus /health, /files, /envs, /metrics,
//! behind the access-token check.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, Method, StatusCode, header};

use crate::auth::{UNAUTHORIZED_MESSAGE, has_valid_token};
use crate::files_http::{get_files, http_error_response, post_files};
use crate::state::SharedState;

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/files", get(get_files).post(post_files))
        .route("/envs", get(envs))
        .route("/metrics", get(metrics))
        .route("/{service}/{method}", post(rpc))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Everything but `GET /health` and `/files` (which also accepts signatures) needs the token.
async fn require_token(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let exempt = (path == "/health" && req.method() == Method::GET) || path == "/files";
    if exempt || has_valid_token(state.config.access_token.as_deref(), req.headers()) {
        next.run(req).await
    } else {
        http_error_response(StatusCode::UNAUTHORIZED, UNAUTHORIZED_MESSAGE)
    }
}

async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn envs(State(state): State<SharedState>) -> Response {
    axum::Json(&state.config.global_env).into_response()
}

async fn metrics(State(state): State<SharedState>) -> Response {
    let m = crate::metrics::collect(&state.cpu);
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(m)).into_response()
}

async fn rpc(
    State(state): State<SharedState>,
    Path((service, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::rpc::dispatch(state, &service, &method, headers, body).await
}
