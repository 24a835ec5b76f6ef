//! The audit log: every mutating call — on the native API and the E2B API alike — with its time,
//! key, workspace, action (method and path, never the query string or body), object, outcome
//! and client address. Never secrets or file contents: paths carry ids and names only (file
//! paths travel in the query string, which is not recorded).
//!
//! Recording costs a request nothing but a push to memory: entries are written in batches every
//! [`FLUSH_EVERY`] (and before the log is read), and the key is resolved to its id and workspace
//! then, from the sha256 of the presented key. A crash loses at most the last batch.

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use burrow_store::{AuditEntry, Store, StoreError};

use crate::http_server::PeerAddr;
use crate::state::AppState;

/// How often recorded calls are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often entries older than the retention period are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Longest path recorded (longer ones are cut).
const MAX_ACTION_LEN: usize = 256;

/// A call not yet written.
#[derive(Debug, Clone)]
struct Pending {
    at: String,
    key_sha256: Option<String>,
    action: String,
    object: Option<String>,
    status: u16,
    source: Option<String>,
}

/// Calls recorded in memory, waiting for the next flush.
#[derive(Debug, Default)]
pub struct AuditLog {
    pending: Mutex<Vec<Pending>>,
}

impl AuditLog {
    fn push(&self, entry: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    /// Writes the calls recorded so far.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return Ok(());
        }
        let mut keys = std::collections::HashMap::new();
        for p in &pending {
            if let Some(hash) = &p.key_sha256
                && !keys.contains_key(hash)
            {
                keys.insert(hash.clone(), store.api_key_by_hash(hash).await?);
            }
        }
        let entries = pending
            .into_iter()
            .map(|p| {
                let key = p.key_sha256.and_then(|h| keys.get(&h).cloned().flatten());
                AuditEntry {
                    seq: 0,
                    at: p.at,
                    workspace_id: key.as_ref().and_then(|(_, ws)| ws.clone()),
                    key_id: key.map(|(id, _)| id),
                    action: p.action,
                    object: p.object,
                    status: p.status,
                    source: p.source,
                }
            })
            .collect();
        store.append_audit(entries).await
    }
}

/// Whether a call is recorded: anything but a read; and opening a shell or a tunnel, which are
/// reads on the wire (WebSocket upgrades) but give control of a sandbox.
fn is_recorded(method: &Method, path: &str) -> bool {
    let read = method == Method::GET || method == Method::HEAD || method == Method::OPTIONS;
    !read || path.ends_with("/pty") || path.ends_with("/tunnel")
}

/// The object a path names: the segment after the resource (`/v1/sandboxes/{id}/exec` → id,
/// `/sandboxes/{id}` → id, `/v1/api-keys/{id}` → id).
fn object_of(path: &str) -> Option<String> {
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .skip_while(|s| matches!(*s, "v1" | "v2" | "v3"));
    segments.next()?;
    segments
        .next()
        .map(|s| s.chars().take(MAX_ACTION_LEN).collect())
}

/// Middleware: records each mutating call once its answer is known.
pub async fn record_calls(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    if !is_recorded(&method, &path) {
        return next.run(request).await;
    }
    let key_sha256 = crate::auth::presented_key(request.headers()).map(burrow_store::hash_api_key);
    let source = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_string());
    let at = burrow_core::retention::now_rfc3339();
    let response = next.run(request).await;
    let mut action = format!("{method} {path}");
    if action.len() > MAX_ACTION_LEN {
        let mut cut = MAX_ACTION_LEN;
        while !action.is_char_boundary(cut) {
            cut -= 1;
        }
        action.truncate(cut);
    }
    state.audit.push(Pending {
        at,
        key_sha256,
        action,
        object: object_of(&path),
        status: response.status().as_u16(),
        source,
    });
    response
}

/// Writes recorded calls every [`FLUSH_EVERY`] and prunes entries older than the configured
/// retention every hour. Runs until aborted.
pub async fn audit_loop(state: AppState) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        if let Err(e) = state.audit.flush(&state.store).await {
            tracing::warn!("writing the audit log: {e}");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            // A retention reaching before the earliest representable time keeps everything (a
            // plain `-` would panic on `--audit-retention 1000000y` and stop this loop).
            let before = chrono::Duration::from_std(state.config.audit_retention)
                .ok()
                .and_then(|keep| chrono::Utc::now().checked_sub_signed(keep))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            let before = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            match state.store.prune_audit(&before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("audit log: pruned {n} entries older than {before}"),
                Err(e) => tracing::warn!("pruning the audit log: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_recorded_calls() {
        assert_eq!(
            object_of("/v1/sandboxes/sb_1/exec").as_deref(),
            Some("sb_1")
        );
        assert_eq!(object_of("/sandboxes/sb_1").as_deref(), Some("sb_1"));
        assert_eq!(object_of("/v2/sandboxes").as_deref(), None);
        assert_eq!(object_of("/v1/api-keys/key_1").as_deref(), Some("key_1"));
        assert!(is_recorded(&Method::POST, "/v1/sandboxes"));
        assert!(is_recorded(&Method::GET, "/v1/sandboxes/x/pty"));
        assert!(!is_recorded(&Method::GET, "/v1/sandboxes"));
    }
}
