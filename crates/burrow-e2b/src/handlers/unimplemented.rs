//! E2B API routes burrow does not implement yet. Each answers 501 with a message saying what is
//! missing, so an SDK reports "not supported" instead of reading a 404 as "sandbox not found".

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use serde::Serialize;

use crate::backend::E2bBackend;
use crate::error::ApiError;
use crate::extract::Caller;

/// One path of E2B's API, the methods on it burrow lacks, and what they are for.
struct Unimplemented {
    path: &'static str,
    methods: &'static [Method],
    feature: &'static str,
}

const TEMPLATE_BUILDS: &str = "this part of E2B's template API (Template.build works; burrow also \
     builds templates with `burrow template build` or POST /v1/templates; use them by name in \
     templateID)";
const SNAPSHOTS: &str =
    "snapshots (pause and connect keep a sandbox's files, memory and processes)";

/// E2B's control-plane routes (e2b SDK 2.64 generated client, `spec/openapi.yml`) that burrow does
/// not serve. `{id}`/`{build}` name every parameter at their position: the router needs one name
/// per position.
const CONTROL_PLANE: &[Unimplemented] = &[
    route(
        "/sandboxes/metrics",
        &[Method::GET],
        "metrics of several sandboxes at once (GET /sandboxes/{id}/metrics works)",
    ),
    route("/sandboxes/{id}/logs", &[Method::GET], "sandbox logs"),
    route("/v2/sandboxes/{id}/logs", &[Method::GET], "sandbox logs"),
    route("/sandboxes/{id}/snapshots", &[Method::POST], SNAPSHOTS),
    route("/snapshots", &[Method::GET], SNAPSHOTS),
    route("/sandboxes/{id}/fork", &[Method::POST], "forking sandboxes"),
    route(
        "/sandboxes/{id}/network",
        &[Method::PUT],
        "network egress rules (every sandbox has unrestricted egress)",
    ),
    route(
        "/unstable/sandboxes/{id}/record",
        &[Method::GET],
        "sandbox records",
    ),
    route("/volumes", &[Method::GET, Method::POST], "volumes"),
    route("/volumes/{id}", &[Method::GET, Method::DELETE], "volumes"),
    route("/secrets", &[Method::GET, Method::POST], "secrets"),
    route(
        "/secrets/{id}",
        &[Method::GET, Method::POST, Method::DELETE],
        "secrets",
    ),
    route("/templates", &[Method::GET, Method::POST], TEMPLATE_BUILDS),
    route("/v2/templates", &[Method::GET], TEMPLATE_BUILDS),
    route("/default-templates", &[Method::GET], TEMPLATE_BUILDS),
    route(
        "/templates/{id}",
        &[Method::GET, Method::POST, Method::PATCH, Method::DELETE],
        TEMPLATE_BUILDS,
    ),
    route("/v2/templates/{id}", &[Method::PATCH], TEMPLATE_BUILDS),
    route(
        "/templates/{id}/builds/{build}",
        &[Method::POST],
        TEMPLATE_BUILDS,
    ),
    route(
        "/templates/{id}/builds/{build}/logs",
        &[Method::GET],
        TEMPLATE_BUILDS,
    ),
    route(
        "/templates/tags",
        &[Method::POST, Method::DELETE],
        "template tags",
    ),
    route("/templates/{id}/tags", &[Method::GET], "template tags"),
    route(
        "/templates/{id}/tags/count",
        &[Method::GET],
        "template tags",
    ),
    route(
        "/templates/{id}/tags/exists",
        &[Method::GET],
        "template tags",
    ),
    route(
        "/templates/{id}/tags/groups",
        &[Method::GET],
        "template tags",
    ),
    route(
        "/templates/{id}/tags/{build}/assignments",
        &[Method::GET],
        "template tags",
    ),
];

/// E2B's volume content API (`spec/openapi-volumecontent.yml`): authenticated by a volume token
/// burrow never issues, and its error `code` is a string.
const VOLUME_CONTENT: &[Unimplemented] = &[
    route(
        "/volumecontent/{id}/path",
        &[Method::GET, Method::PATCH, Method::DELETE],
        "volumes",
    ),
    route(
        "/volumecontent/{id}/dir",
        &[Method::GET, Method::POST],
        "volumes",
    ),
    route(
        "/volumecontent/{id}/file",
        &[Method::GET, Method::PUT],
        "volumes",
    ),
];

const fn route(
    path: &'static str,
    methods: &'static [Method],
    feature: &'static str,
) -> Unimplemented {
    Unimplemented {
        path,
        methods,
        feature,
    }
}

/// Adds every unimplemented route to `router`.
pub fn add<S: E2bBackend>(mut router: Router<Arc<S>>) -> Router<Arc<S>> {
    for entry in CONTROL_PLANE {
        let (path, feature) = (entry.path, entry.feature);
        let handler = move |method: Method, Caller(_): Caller| async move {
            ApiError::not_implemented(message(&method, path, feature))
        };
        router = router.route(entry.path, on_methods(entry.methods, handler));
    }
    for entry in VOLUME_CONTENT {
        let (path, feature) = (entry.path, entry.feature);
        let handler = move |method: Method| async move {
            volume_content_error(message(&method, path, feature))
        };
        router = router.route(entry.path, on_methods(entry.methods, handler));
    }
    router
}

fn message(method: &Method, path: &str, feature: &str) -> String {
    format!("{method} {path} is not supported by burrow yet: {feature}")
}

fn on_methods<H, T, S>(methods: &[Method], handler: H) -> MethodRouter<S>
where
    H: axum::handler::Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    methods.iter().fold(MethodRouter::new(), |router, method| {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| unreachable!("the tables above name standard methods only"));
        router.on(filter, handler.clone())
    })
}

/// The volume content API's `Error`: `{"code": "<string>", "message": "…"}`.
#[derive(Serialize)]
struct VolumeContentError {
    code: &'static str,
    message: String,
}

fn volume_content_error(message: String) -> Response {
    let body = VolumeContentError {
        code: "not_implemented",
        message,
    };
    let mut response = (StatusCode::NOT_IMPLEMENTED, Json(body)).into_response();
    response.headers_mut().insert(
        crate::error::SHOULD_RETRY,
        axum::http::HeaderValue::from_static("false"),
    );
    response
}
