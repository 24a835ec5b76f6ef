//! API key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use burrow_types::codes;

use crate::error::HttpError;
use crate::state::AppState;

/// Routes anyone may call.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json"];

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-api-key") {
        return value.to_str().ok().map(str::trim);
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if PUBLIC_PATHS.contains(&request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let Some(key) = presented_key(request.headers()) else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' \
             (the first key is in <data_dir>/client.key)",
        ));
    };
    // Lookup is by sha256 of the presented key, so timing reveals nothing about stored keys.
    let Some(record) = state.store.find_api_key(key).await? else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "invalid API key",
        ));
    };
    state.key_uses.used(&record.id);
    let mut request = request;
    request.extensions_mut().insert(Caller(record.id));
    Ok(next.run(request).await)
}

/// The id (`key_…`) of the API key that authenticated a request; audit records name it.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// When each API key was last used, kept in memory and written to the store in batches (every
/// [`KEY_USE_FLUSH`] and before keys are listed), so a request costs no extra write.
#[derive(Debug, Default)]
pub struct KeyUses {
    pending: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// How often key uses are written to the store.
pub const KEY_USE_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

impl KeyUses {
    pub fn used(&self, key_id: &str) {
        let now = crate::retention::now_rfc3339();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(key_id) {
            Some(at) => *at = now,
            None => {
                pending.insert(key_id.to_string(), now);
            }
        }
    }

    /// Writes the uses seen since the last flush.
    pub async fn flush(&self, store: &burrow_store::Store) -> Result<(), burrow_store::StoreError> {
        let uses: Vec<(String, String)> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .collect();
        store.record_api_key_uses(uses).await
    }
}

/// Flushes key uses every [`KEY_USE_FLUSH`]. Runs until aborted.
pub async fn key_use_loop(state: AppState) {
    let mut tick = tokio::time::interval(KEY_USE_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = state.key_uses.flush(&state.store).await {
            tracing::warn!("recording API key uses: {e}");
        }
    }
}
