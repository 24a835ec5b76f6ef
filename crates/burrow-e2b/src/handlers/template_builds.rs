//! E2B's template build API, as `Template.build` of the SDKs drives it: `POST /v3/templates`
//! (a build waiting for its steps), `GET /templates/{id}/files/{hash}` (upload handshake per COPY
//! source), the upload itself (`PUT` to the URL that handshake returned), `POST
//! /v2/templates/{id}/builds/{buildID}` (steps; the build runs in the background) and `GET
//! /templates/{id}/builds/{buildID}/status` (polled for state and logs).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::uri::Scheme;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use crate::backend::{
    BuildState, E2bBackend, LogLevel, NewTemplateBuild, TemplateBuildSpec, TemplateStep,
};
use crate::error::ApiError;
use crate::extract::{Caller, RequiredJson};

/// Path of the upload URLs [`files`] hands out (the token follows).
pub const UPLOAD_PATH: &str = "/e2b/template-uploads";

/// The only image burrow can build from: E2B's default base image, which is burrow's `base`.
const BASE_IMAGE: &str = "e2bdev/base";
const BASE_TEMPLATE: &str = "base";
/// E2B's status endpoint returns at most this many log entries per call.
const MAX_LOG_ENTRIES: usize = 100;

/// `TemplateBuildRequestV3`. Unknown fields (`teamID`, `minFreeDiskMb`, …) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequestV3 {
    name: Option<String>,
    /// Deprecated spelling of `name`.
    alias: Option<String>,
    tags: Option<Vec<String>>,
    cpu_count: Option<u32>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<u64>,
}

/// `TemplateRequestResponseV3`.
#[derive(Debug, Serialize)]
pub struct BuildRequestResponse {
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(rename = "buildID")]
    build_id: String,
    public: bool,
    names: Vec<String>,
    tags: Vec<String>,
    aliases: Vec<String>,
}

/// `POST /v3/templates` → 202.
pub async fn request<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    RequiredJson(body): RequiredJson<BuildRequestV3>,
) -> Result<(StatusCode, Json<BuildRequestResponse>), ApiError> {
    let name = body
        .name
        .or(body.alias)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    // burrow templates have no tags: one name, one template.
    if name.contains(':') || body.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "template tags are not supported by burrow: build '{}' without ':tag' and tags",
            name.split(':').next().unwrap_or_default().escape_debug()
        )));
    }
    let created = backend
        .request_template_build(
            &principal,
            NewTemplateBuild {
                name: name.clone(),
                cpu_count: body.cpu_count,
                memory_mb: body.memory_mb,
            },
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BuildRequestResponse {
            template_id: created.template_id,
            build_id: created.build_id,
            public: false,
            names: vec![name.clone()],
            tags: Vec::new(),
            aliases: vec![name],
        }),
    ))
}

/// `TemplateBuildFileUpload`.
#[derive(Debug, Serialize)]
pub struct FileUpload {
    present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// `GET /templates/{templateID}/files/{hash}` → 201 `{present, url?}`.
pub async fn files<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    scheme: Option<axum::Extension<Scheme>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<FileUpload>), ApiError> {
    let Path((template_id, hash)) = path.map_err(bad_path)?;
    if !is_files_hash(&hash) {
        return Err(ApiError::bad_request(format!(
            "invalid files hash '{}': expected 64 lowercase hex digits",
            hash.escape_debug()
        )));
    }
    let token = backend
        .template_files(&principal, &template_id, &hash)
        .await?;
    let url = match token {
        None => None,
        Some(token) => Some(format!(
            "{}{UPLOAD_PATH}/{token}",
            origin(scheme.map(|s| s.0), &uri, &headers)?
        )),
    };
    Ok((
        StatusCode::CREATED,
        Json(FileUpload {
            present: url.is_none(),
            url,
        }),
    ))
}

/// `scheme://host[:port]` the client reached this server at, for URLs it can use: the listener's
/// scheme (the TLS listener marks its requests) and the request's Host.
fn origin(scheme: Option<Scheme>, uri: &Uri, headers: &HeaderMap) -> Result<String, ApiError> {
    let scheme = scheme
        .or_else(|| uri.scheme().cloned())
        .unwrap_or(Scheme::HTTP);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .filter(|h| h.parse::<axum::http::uri::Authority>().is_ok() && !h.contains('@'))
        .ok_or_else(|| {
            ApiError::bad_request("a Host header is needed to hand out an upload URL")
        })?;
    Ok(format!("{scheme}://{host}"))
}

/// `PUT {UPLOAD_PATH}/{token}`: the upload of one COPY source's tar, authorized by its token.
pub async fn upload<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Path(token) = path.map_err(bad_path)?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    backend.receive_template_files(&token, length, body).await?;
    Ok(StatusCode::OK)
}

/// `TemplateBuildStartV2`. Unknown fields are ignored; `fromImageRegistry` is only checked for
/// presence (its credentials are never parsed, logged or echoed).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStartV2 {
    from_image: Option<String>,
    from_template: Option<String>,
    from_image_registry: Option<serde_json::Value>,
    #[serde(default)]
    steps: Vec<StepV2>,
    start_cmd: Option<String>,
    ready_cmd: Option<String>,
}

/// `TemplateStep`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepV2 {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    args: Vec<String>,
    files_hash: Option<String>,
}

/// `POST /v2/templates/{templateID}/builds/{buildID}` → 202; the build runs in the background.
pub async fn start<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    RequiredJson(body): RequiredJson<BuildStartV2>,
) -> Result<StatusCode, ApiError> {
    let Path((template_id, build_id)) = path.map_err(bad_path)?;
    let spec = build_spec(body)?;
    backend
        .start_template_build(&principal, &template_id, &build_id, spec)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// E2B's build request as burrow steps on a burrow template.
fn build_spec(body: BuildStartV2) -> Result<TemplateBuildSpec, ApiError> {
    const SUPPORTED: &str = "burrow builds only on its own templates: use fromTemplate (a burrow \
        template name) or fromImage \"e2bdev/base\" (E2B's default, which is burrow's 'base'); \
        burrow pulls no images from registries";
    if body.from_image_registry.is_some() {
        return Err(ApiError::bad_request(format!(
            "fromImageRegistry is not supported: {SUPPORTED}"
        )));
    }
    let parent = match (body.from_template, body.from_image) {
        (Some(template), None) => template,
        (None, Some(image)) if is_base_image(&image) => BASE_TEMPLATE.to_string(),
        (None, Some(image)) => {
            return Err(ApiError::bad_request(format!(
                "fromImage '{}' is not supported: {SUPPORTED}",
                image.escape_debug()
            )));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give fromTemplate or fromImage, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "fromTemplate or fromImage is required: {SUPPORTED}"
            )));
        }
    };
    let steps = body
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            to_step(step).map_err(|e| ApiError::bad_request(format!("step {}: {e}", i + 1)))
        })
        .collect::<Result<_, _>>()?;
    Ok(TemplateBuildSpec {
        parent,
        steps,
        start_cmd: body.start_cmd.filter(|c| !c.trim().is_empty()),
        ready_cmd: body.ready_cmd.filter(|c| !c.trim().is_empty()),
    })
}

/// `e2bdev/base`, with any tag or digest (and Docker Hub's implicit `docker.io/`).
fn is_base_image(image: &str) -> bool {
    let image = image.strip_prefix("docker.io/").unwrap_or(image);
    let image = image.split('@').next().unwrap_or(image);
    let repository = match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => image,
    };
    repository == BASE_IMAGE
}

fn to_step(step: StepV2) -> Result<TemplateStep, String> {
    let args = step.args;
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(match step.kind.as_str() {
        "RUN" => match args.as_slice() {
            [command] => TemplateStep::Run {
                command: command.clone(),
                user: None,
            },
            [command, user] => TemplateStep::Run {
                command: command.clone(),
                user: non_empty(user),
            },
            _ => return Err("RUN takes [command, user?]".to_string()),
        },
        "COPY" => {
            let (src, dest, user, mode) = match args.as_slice() {
                [src, dest] => (src, dest, None, None),
                [src, dest, user] => (src, dest, non_empty(user), None),
                [src, dest, user, mode] => (src, dest, non_empty(user), non_empty(mode)),
                _ => return Err("COPY takes [src, dest, user?, mode?]".to_string()),
            };
            let mode = mode
                .map(|m| {
                    u32::from_str_radix(&m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            format!("COPY mode '{}' is not an octal file mode", m.escape_debug())
                        })
                })
                .transpose()?;
            let files_hash = step
                .files_hash
                .filter(|h| is_files_hash(h))
                .ok_or("COPY needs filesHash (64 lowercase hex digits)")?;
            TemplateStep::Copy {
                src: src.clone(),
                dest: dest.clone(),
                user,
                mode,
                files_hash,
            }
        }
        "ENV" => {
            if args.is_empty() || !args.len().is_multiple_of(2) {
                return Err("ENV takes [key, value, key, value…]".to_string());
            }
            TemplateStep::Env {
                vars: args
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            }
        }
        "WORKDIR" => match args.as_slice() {
            [path] => TemplateStep::Workdir { path: path.clone() },
            _ => return Err("WORKDIR takes [dir]".to_string()),
        },
        "USER" => match args.as_slice() {
            [name] => TemplateStep::User { name: name.clone() },
            _ => return Err("USER takes [user]".to_string()),
        },
        other => {
            return Err(format!(
                "step type '{}' is not supported (RUN, COPY, ENV, WORKDIR, USER are)",
                other.escape_debug()
            ));
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusQuery {
    logs_offset: Option<usize>,
    limit: Option<usize>,
    level: Option<String>,
}

/// `TemplateBuildInfo`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(rename = "buildID")]
    build_id: String,
    status: &'static str,
    /// Deprecated in E2B, always empty; `logEntries` carries the logs.
    logs: Vec<String>,
    log_entries: Vec<LogEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
}

#[derive(Debug, Serialize)]
struct LogEntry {
    timestamp: String,
    message: String,
    level: &'static str,
}

#[derive(Debug, Serialize)]
struct Reason {
    message: String,
}

/// `GET /templates/{templateID}/builds/{buildID}/status?logsOffset&limit&level` → 200.
pub async fn status<S: E2bBackend>(
    State(backend): State<Arc<S>>,
    Caller(principal): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<BuildInfo>, ApiError> {
    let Path((template_id, build_id)) = path.map_err(bad_path)?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let limit = query
        .limit
        .unwrap_or(MAX_LOG_ENTRIES)
        .clamp(0, MAX_LOG_ENTRIES);
    let min_level = match query.level.as_deref() {
        None | Some("debug") => LogLevel::Debug,
        Some("info") => LogLevel::Info,
        Some("warn") => LogLevel::Warn,
        Some("error") => LogLevel::Error,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid level '{}': debug, info, warn or error",
                other.escape_debug()
            )));
        }
    };
    let found = backend
        .template_build_status(
            &principal,
            &template_id,
            &build_id,
            query.logs_offset.unwrap_or(0),
            limit,
            min_level,
        )
        .await?;
    Ok(Json(BuildInfo {
        template_id,
        build_id,
        status: match found.state {
            BuildState::Waiting => "waiting",
            BuildState::Building => "building",
            BuildState::Ready => "ready",
            BuildState::Error => "error",
        },
        logs: Vec::new(),
        log_entries: found
            .entries
            .into_iter()
            .map(|e| LogEntry {
                timestamp: e.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
                message: e.message,
                level: match e.level {
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "warn",
                    LogLevel::Error => "error",
                },
            })
            .collect(),
        reason: found.reason.map(|message| Reason { message }),
    }))
}

fn bad_path(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {e}"))
}

/// E2B's `filesHash`: `^[0-9a-f]{64}$`.
fn is_files_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_body(json: serde_json::Value) -> Result<TemplateBuildSpec, ApiError> {
        build_spec(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn base_image_maps_to_base_and_other_images_are_refused() {
        for image in [
            "e2bdev/base",
            "e2bdev/base:latest",
            "docker.io/e2bdev/base:1.2",
            "e2bdev/base@sha256:00",
        ] {
            let spec = start_body(serde_json::json!({"fromImage": image, "steps": []})).unwrap();
            assert_eq!(spec.parent, "base", "{image}");
        }
        for image in ["ubuntu:22.04", "e2bdev/base2", "evil/e2bdev/base"] {
            let err = start_body(serde_json::json!({"fromImage": image})).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains("e2bdev/base"), "{}", err.message);
        }
        let err = start_body(serde_json::json!({
            "fromImage": "e2bdev/base",
            "fromImageRegistry": {"type": "registry", "username": "u", "password": "hunter2"}
        }))
        .unwrap_err();
        assert!(err.message.contains("fromImageRegistry"));
        assert!(!err.message.contains("hunter2"));
    }

    #[test]
    fn steps_are_translated_with_their_arguments() {
        let hash = "a".repeat(64);
        let spec = start_body(serde_json::json!({
            "fromTemplate": "base",
            "steps": [
                {"type": "RUN", "args": ["echo hi && true"], "force": null},
                {"type": "RUN", "args": ["id", "root"]},
                {"type": "COPY", "args": ["a.txt", "/x/", "", ""], "filesHash": hash},
                {"type": "COPY", "args": ["b", "/y", "user:user", "0755"], "filesHash": hash},
                {"type": "ENV", "args": ["A", "1", "B", "2"]},
                {"type": "WORKDIR", "args": ["/app"]},
                {"type": "USER", "args": ["user"]}
            ],
            "startCmd": "serve", "readyCmd": "true"
        }))
        .unwrap();
        assert_eq!(spec.steps.len(), 7);
        assert_eq!(
            spec.steps[1],
            TemplateStep::Run {
                command: "id".into(),
                user: Some("root".into())
            }
        );
        assert_eq!(
            spec.steps[3],
            TemplateStep::Copy {
                src: "b".into(),
                dest: "/y".into(),
                user: Some("user:user".into()),
                mode: Some(0o755),
                files_hash: hash.clone()
            }
        );
        assert_eq!(
            spec.steps[4],
            TemplateStep::Env {
                vars: vec![("A".into(), "1".into()), ("B".into(), "2".into())]
            }
        );
        assert_eq!(spec.start_cmd.as_deref(), Some("serve"));
        for bad in [
            serde_json::json!({"type": "COPY", "args": ["a", "/b"]}),
            serde_json::json!({"type": "COPY", "args": ["a", "/b", "", "9"], "filesHash": hash}),
            serde_json::json!({"type": "ENV", "args": ["A"]}),
            serde_json::json!({"type": "ARG", "args": ["A"]}),
        ] {
            let err = start_body(serde_json::json!({"fromTemplate": "base", "steps": [bad]}))
                .unwrap_err();
            assert!(err.message.starts_with("step 1: "), "{}", err.message);
        }
    }

    #[test]
    fn upload_urls_use_the_listener_scheme_and_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:7420".parse().unwrap());
        let uri: Uri = "/templates/x/files/y".parse().unwrap();
        assert_eq!(
            origin(None, &uri, &headers).unwrap(),
            "http://127.0.0.1:7420"
        );
        assert_eq!(
            origin(Some(Scheme::HTTPS), &uri, &headers).unwrap(),
            "https://127.0.0.1:7420"
        );
        headers.insert(header::HOST, "a/b".parse().unwrap());
        assert!(origin(None, &uri, &headers).is_err());
    }
}
