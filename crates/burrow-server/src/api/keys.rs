//! `POST /v1/api-keys`: issues an API key (shown once; only its hash is stored).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::error::HttpError;
use crate::extract::JsonBody;
use crate::keys;
use crate::state::AppState;

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
}

#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub format: KeyFormat,
    pub created_at: String,
    /// The key itself; it cannot be shown again.
    pub key: String,
}

const MAX_NAME_LEN: usize = 64;

pub async fn create(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<CreateApiKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), HttpError> {
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
    let record = state.store.insert_api_key(name, &key).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id: record.id,
            name: record.name,
            format: req.format,
            created_at: record.created_at,
            key,
        }),
    ))
}
