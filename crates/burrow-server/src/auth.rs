//! API key authentication (`Authorization: Bearer <key>` or `X-API-Key: <key>`) and the wall
//! between workspaces for the native API: one middleware every native route goes through. It
//! resolves the key to a [`Principal`], refuses calls the key's role does not allow (403, inside
//! its own workspace only), and answers 404 for any sandbox, template or workspace named in the
//! path that belongs to another workspace, before a handler runs. Lists filter by the principal
//! in their handlers; the E2B API goes through `E2bService::visible` the same way.

use axum::RequestExt;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use burrow_core::{CoreError, Principal, Role, Scope};
use burrow_store::ApiKeyRecord;
use burrow_types::codes;

use crate::error::HttpError;
use crate::state::AppState;

/// Routes anyone may call.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/openapi.json"];

/// The key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get("x-api-key") {
        return value.to_str().ok().map(str::trim);
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The principal a stored key stands for.
pub fn principal_of(record: &ApiKeyRecord) -> Principal {
    let scope = match (&record.workspace_id, &record.workspace_name) {
        (Some(id), Some(name)) => Scope::Workspace {
            id: id.clone(),
            name: name.clone(),
            // Stored roles are written by this server; an unknown one gets the least.
            role: Role::parse(&record.role).unwrap_or(Role::Viewer),
        },
        _ => Scope::Operator,
    };
    Principal {
        key_id: record.id.clone(),
        scope,
    }
}

/// Resolves `key` to its principal (and records the use), or `None` if it is unknown or revoked.
pub async fn authenticate(state: &AppState, key: &str) -> Result<Option<Principal>, HttpError> {
    // Lookup is by sha256 of the presented key, so timing reveals nothing about stored keys.
    let Some(record) = state.store.find_api_key(key).await? else {
        return Ok(None);
    };
    state.key_uses.used(&record.id);
    Ok(Some(principal_of(&record)))
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Role(Role),
    Operator,
}

/// The one table of what each native route needs. Reads need `viewer`; anything that changes
/// state or opens a shell or a tunnel needs `member`; keys and the audit log need `admin`;
/// creating, changing and removing workspaces needs the operator key.
fn need(method: &Method, route: &str) -> Need {
    let read = method == Method::GET || method == Method::HEAD;
    if route == "/v1/workspaces" || route.starts_with("/v1/workspaces/") {
        return if read {
            Need::Role(Role::Viewer)
        } else {
            Need::Operator
        };
    }
    if route.starts_with("/v1/api-keys") || route == "/v1/audit" {
        return Need::Role(Role::Admin);
    }
    if route.ends_with("/pty") || route.ends_with("/tunnel") {
        return Need::Role(Role::Member);
    }
    if read {
        Need::Role(Role::Viewer)
    } else {
        Need::Role(Role::Member)
    }
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
    let Some(principal) = authenticate(&state, key).await? else {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "invalid API key",
        ));
    };
    let mut request = request;
    // Unknown routes (no matched path) fall through to the 404 handler.
    if let Some(route) = request.extensions().get::<MatchedPath>().cloned() {
        match need(request.method(), route.as_str()) {
            Need::Role(role) => principal.require(role)?,
            Need::Operator => principal.require_operator()?,
        }
        let params = request
            .extract_parts::<RawPathParams>()
            .await
            .map_err(|e| HttpError::bad_request(format!("path: {e}")))?;
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wall(&state, &principal, route.as_str(), &params).await?;
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// 404 for any object named in the path that the principal may not see.
async fn wall(
    state: &AppState,
    principal: &Principal,
    route: &str,
    params: &[(String, String)],
) -> Result<(), HttpError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if route.starts_with("/v1/sandboxes/{id}")
        && let Some(id) = param("id")
    {
        // A missing sandbox is a 404 here too, before any extractor of the handler (a
        // WebSocket upgrade's, a body's) could answer differently for it than for another
        // workspace's.
        check_sandbox(state, principal, id).await?;
    }
    if principal.is_operator() {
        return Ok(());
    }
    if route.starts_with("/v1/templates/{name}")
        && let Some(name) = param("name")
        && let Some(owner) = state.store.template_owner(name).await?
    {
        principal.check_sees(&owner, "template", name)?;
    }
    if route.starts_with("/v1/workspaces/{name}")
        && let Some(name) = param("name")
        && principal.workspace_name() != Some(name)
    {
        return Err(CoreError::NotFound {
            kind: "workspace",
            id: name.to_string(),
        }
        .into());
    }
    Ok(())
}

/// The one check of a sandbox named by a caller (see [`burrow_core::owners::check_sandbox`]).
pub async fn check_sandbox(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(), HttpError> {
    Ok(burrow_core::owners::check_sandbox(state, principal, id).await?)
}

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
        let now = burrow_core::retention::now_rfc3339();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_gives_each_route_its_role() {
        let m = |m: &str| Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(need(&m("GET"), "/v1/sandboxes"), Need::Role(Role::Viewer));
        assert_eq!(need(&m("POST"), "/v1/sandboxes"), Need::Role(Role::Member));
        assert_eq!(
            need(&m("POST"), "/v1/sandboxes/{id}/exec"),
            Need::Role(Role::Member)
        );
        assert_eq!(
            need(&m("GET"), "/v1/sandboxes/{id}/pty"),
            Need::Role(Role::Member)
        );
        assert_eq!(
            need(&m("GET"), "/v1/sandboxes/{id}/ports/{port}/tunnel"),
            Need::Role(Role::Member)
        );
        assert_eq!(need(&m("GET"), "/v1/api-keys"), Need::Role(Role::Admin));
        assert_eq!(need(&m("GET"), "/v1/audit"), Need::Role(Role::Admin));
        assert_eq!(need(&m("POST"), "/v1/workspaces"), Need::Operator);
        assert_eq!(need(&m("DELETE"), "/v1/workspaces/{name}"), Need::Operator);
        assert_eq!(need(&m("GET"), "/v1/workspaces"), Need::Role(Role::Viewer));
    }
}
