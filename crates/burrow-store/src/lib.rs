//! burrow's persistent state in SQLite (WAL): sandboxes and API keys (sha256 hashes only).
//!
//! All calls are async: each runs on tokio's blocking pool against one shared connection, which
//! SQLite serialises anyway.

mod error;
mod keys;
mod migrations;
mod retention;
mod sandboxes;
mod traffic;
mod workspaces;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

pub use error::StoreError;
pub use keys::{ApiKeyRecord, Revoke, hash_api_key};
pub use retention::SandboxPolicy;
pub use sandboxes::{SandboxFilter, SandboxRecord, SandboxSize};
pub use workspaces::{AuditEntry, AuditQuery, WorkspaceCounts, WorkspaceRecord};

/// The workspace of everything made before workspaces existed (migration 4).
pub const DEFAULT_WORKSPACE_ID: &str = "ws_default";

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_at(path, usize::MAX).await
    }

    /// Like [`Store::open`] but applies migrations only up to `version`: for upgrade tests,
    /// which need a database as an older burrow left it.
    #[doc(hidden)]
    pub async fn open_at(path: &Path, version: usize) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = Connection::open(&path).map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // journal_mode returns the resulting mode as a row.
            let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Corrupt(format!(
                    "could not switch {} to WAL mode (got {mode})",
                    path.display()
                )));
            }
            conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")?;
            // Up to 64 MiB of page cache (SQLite's default is 2 MiB), taken only as pages are
            // read: listing 10,000 sandboxes of 50,000 touches most of a 13 MB database, which
            // otherwise is read again from the OS on every list (p50 ~2 ms faster, A/B measured;
            // docs/performance.md, session 9).
            conn.execute_batch("PRAGMA cache_size=-65536;")?;
            migrations::apply(&mut conn, version)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (statements are
            // atomic), so a poisoned lock is safe to reuse.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs raw SQL: for upgrade tests, which write rows as an older burrow did.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_string();
        self.call(move |c| Ok(c.execute_batch(&sql)?)).await
    }

    /// Current schema version (number of applied migrations).
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.call(|c| migrations::current_version(c)).await
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
