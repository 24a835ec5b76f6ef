//! `/v1/api-keys`: issue an API key (shown once; only its hash is stored), list keys (never the
//! key nor its hash), revoke one. The first key (the operator key, in `<data_dir>/client.key`)
//! cannot be revoked. A revoked key is refused from the next request on, on every surface.

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use burrow_core::{Principal, Role};
use serde::{Deserialize, Serialize};

use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::state::AppState;
use burrow_core::keys;

/// The shape of a new key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    /// `bw_` + 40 hex.
    #[default]
    Burrow,
    /// `e2b_` + 40 hex: E2B SDKs (older ones check `^e2b_[0-9a-f]+$`).
    E2b,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: String,
    #[serde(default)]
    pub format: KeyFormat,
    /// The key's workspace: a workspace admin's own (the default); the operator names any
    /// (default `default`).
    #[serde(default)]
    pub workspace: Option<String>,
    /// `viewer`, `member` (the default) or `admin`.
    #[serde(default)]
    pub role: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub format: KeyFormat,
    pub created_at: String,
    pub workspace: String,
    pub role: String,
    /// The key itself; it cannot be shown again.
    pub key: String,
}

const MAX_NAME_LEN: usize = 64;

pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(req): JsonBody<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), HttpError> {
    let workspace =
        burrow_core::workspaces::acting_in(&state, &principal, req.workspace.as_deref()).await?;
    let role = match req.role.as_deref() {
        Some(text) => Role::parse(text)?,
        None => Role::Member,
    };
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(HttpError::bad_request(format!(
            "invalid key name '{}': use 1-{MAX_NAME_LEN} characters without control characters",
            req.name.escape_debug()
        )));
    }
    let key = match req.format {
        KeyFormat::Burrow => keys::generate_api_key(),
        KeyFormat::E2b => keys::generate_e2b_api_key(),
    };
    let kind = match req.format {
        KeyFormat::Burrow => "burrow",
        KeyFormat::E2b => "e2b",
    };
    let record = state
        .store
        .insert_api_key(name, kind, &key, Some(&workspace.id), role.as_str())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id: record.id,
            name: record.name,
            format: req.format,
            created_at: record.created_at,
            workspace: workspace.name,
            role: role.as_str().to_string(),
            key,
        }),
    ))
}

/// A key as listed.
#[derive(Debug, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub name: String,
    /// `burrow` or `e2b` (the key's format).
    pub kind: String,
    pub created_at: String,
    /// Up to ~10 s late; null if never used.
    pub last_used_at: Option<String>,
    /// The first key: it cannot be revoked, and it manages every workspace.
    pub operator: bool,
    /// The key's workspace (absent for the operator key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// `viewer`, `member` or `admin` (the operator key has every role).
    pub role: String,
}

#[derive(Debug, Serialize)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKeyInfo>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<ApiKeyList>, HttpError> {
    let pairs = super::query_pairs(query.as_deref());
    super::only_params(&pairs, &["workspace"], "use workspace=<name>")?;
    let filter = super::workspace_filter(&state, &principal, &pairs).await?;
    // Up to date: uses batched in memory are written first.
    state.key_uses.flush(&state.store).await?;
    let operator = state.store.operator_key_id().await?;
    let keys = state
        .store
        .list_api_keys(filter.as_deref())
        .await?
        .into_iter()
        .map(|k| ApiKeyInfo {
            operator: operator.as_deref() == Some(k.id.as_str()),
            workspace: k.workspace_name,
            role: if k.workspace_id.is_none() {
                "operator".to_string()
            } else {
                k.role
            },
            id: k.id,
            name: k.name,
            kind: k.kind,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        })
        .collect();
    Ok(Json(ApiKeyList { keys }))
}

/// Revokes a key (the calling key too, if asked: this request still completes).
pub async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    // Another workspace's key is "not found", like one that does not exist.
    match state
        .store
        .revoke_api_key(&id, principal.workspace_id())
        .await?
    {
        burrow_store::Revoke::Revoked => Ok(StatusCode::NO_CONTENT),
        burrow_store::Revoke::NotFound => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            burrow_types::codes::NOT_FOUND,
            format!(
                "no API key '{}' (or it is revoked already); list keys with GET /v1/api-keys",
                id.escape_debug()
            ),
        )),
        burrow_store::Revoke::OperatorKey => Err(HttpError::bad_request(format!(
            "the operator key cannot be deleted: '{id}' is the first key (in \
             <data_dir>/client.key); revoke other keys instead"
        ))),
    }
}
