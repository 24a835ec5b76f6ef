//! The `sandboxes` table.

use std::collections::BTreeMap;

use burrow_types::SandboxState;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Store, StoreError, now_rfc3339};

/// A sandbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub template: String,
    pub state: SandboxState,
    pub cpus: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// envd access token of the sandbox's agent.
    pub access_token: Option<String>,
    /// The runtime's handle, as JSON (opaque to the store).
    pub handle_json: Option<String>,
    pub ip: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The owning workspace (`ws_…`).
    pub workspace_id: String,
}

/// A sandbox's size, for quota accounting.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSize {
    pub id: String,
    /// As stored (`creating`, `running`, `error`, …).
    pub state: String,
    pub cpus: f64,
    pub memory_mb: u64,
    pub disk_mb: u64,
}

/// Which sandboxes [`Store::list_sandboxes`] returns: all conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    /// Only this workspace's (`None`: every workspace, for the operator and the server itself).
    pub workspace_id: Option<String>,
    pub state: Option<SandboxState>,
    /// Each label must be present with exactly this value.
    pub labels: Vec<(String, String)>,
}

const COLUMNS: &str = "id, template, state, cpus, memory_mb, disk_mb, env_json, labels_json, \
                       access_token, handle_json, ip, error, created_at, updated_at, workspace_id";

fn from_row(r: &Row<'_>) -> Result<SandboxRecord, StoreError> {
    let id: String = r.get(0)?;
    // State, env and labels are read in place (borrowed from SQLite's row buffer): lists decode
    // them for thousands of rows, and an owned copy of each text would only be parsed and freed.
    let state_text = text(r, 2)?;
    let state = SandboxState::parse(state_text).ok_or_else(|| {
        StoreError::Corrupt(format!("sandbox {id}: unknown state '{state_text}'"))
    })?;
    let env = serde_json::from_str(text(r, 6)?)
        .map_err(|e| StoreError::Corrupt(format!("sandbox {id}: env: {e}")))?;
    let labels = serde_json::from_str(text(r, 7)?)
        .map_err(|e| StoreError::Corrupt(format!("sandbox {id}: labels: {e}")))?;
    Ok(SandboxRecord {
        template: r.get(1)?,
        state,
        cpus: r.get(3)?,
        memory_mb: r.get::<_, i64>(4)? as u64,
        disk_mb: r.get::<_, i64>(5)? as u64,
        env,
        labels,
        access_token: r.get(8)?,
        handle_json: r.get(9)?,
        ip: r.get(10)?,
        error: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        workspace_id: r.get(14)?,
        id,
    })
}

/// Column `i` of `r` as text, borrowed.
fn text<'r>(r: &'r Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    let value = r.get_ref(i)?;
    value.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e)).into()
    })
}

/// Calls `each` with every sandbox matching `filter`, oldest first, until it returns `false`.
fn for_each_sandbox(
    c: &Connection,
    filter: &SandboxFilter,
    mut each: impl FnMut(SandboxRecord) -> bool,
) -> Result<(), StoreError> {
    // `workspace_id = ?2` only when filtering: an `?2 IS NULL OR …` condition would keep
    // SQLite from using the (workspace_id, created_at, id) index (a scan and a sort of
    // every row instead).
    let workspace = if filter.workspace_id.is_some() {
        "workspace_id = ?2"
    } else {
        "?2 IS NULL"
    };
    let mut stmt = c.prepare(&format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE (?1 IS NULL OR state = ?1) \
         AND {workspace} ORDER BY created_at, id"
    ))?;
    let state = filter.state.map(|s| s.as_str());
    let mut rows = stmt.query(params![state, filter.workspace_id])?;
    while let Some(row) = rows.next()? {
        let rec = from_row(row)?;
        if filter
            .labels
            .iter()
            .all(|(k, v)| rec.labels.get(k) == Some(v))
            && !each(rec)
        {
            break;
        }
    }
    Ok(())
}

/// What [`Store::list_sandboxes_batched`] returns: the matching sandboxes, a batch at a time.
pub struct SandboxBatches {
    rx: mpsc::UnboundedReceiver<Vec<SandboxRecord>>,
    /// The query's thread: its result tells a complete list from one cut short by an error.
    task: Option<JoinHandle<Result<(), StoreError>>>,
}

impl SandboxBatches {
    /// The next batch (never empty), `None` once every matching row was returned, or the error
    /// that ended the query (after the batches read before it).
    pub async fn next(&mut self) -> Option<Result<Vec<SandboxRecord>, StoreError>> {
        if let Some(batch) = self.rx.recv().await {
            return Some(Ok(batch));
        }
        // The sender is gone: the query ended. Only its result says whether it ended well (a
        // closed channel looks the same after the last row as after an error or a panic).
        match self.task.take()?.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(StoreError::Task(e.to_string()))),
        }
    }
}

impl SandboxRecord {
    /// A new row in state `creating`, timestamps set to now.
    pub fn new_creating(id: String, template: String) -> Self {
        let now = now_rfc3339();
        Self {
            id,
            template,
            state: SandboxState::Creating,
            cpus: 1.0,
            memory_mb: 512,
            disk_mb: 4096,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            access_token: None,
            handle_json: None,
            ip: None,
            error: None,
            created_at: now.clone(),
            updated_at: now,
            workspace_id: crate::DEFAULT_WORKSPACE_ID.to_string(),
        }
    }
}

impl Store {
    /// Inserts a new sandbox row; fails with [`StoreError::DuplicateSandbox`] if the id exists.
    pub async fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let rec = rec.clone();
        self.call(move |c| {
            let env = serde_json::to_string(&rec.env).expect("a string map always serialises");
            let labels =
                serde_json::to_string(&rec.labels).expect("a string map always serialises");
            let result = c.execute(
                &format!("INSERT INTO sandboxes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
                params![
                    rec.id,
                    rec.template,
                    rec.state.as_str(),
                    rec.cpus,
                    rec.memory_mb as i64,
                    rec.disk_mb as i64,
                    env,
                    labels,
                    rec.access_token,
                    rec.handle_json,
                    rec.ip,
                    rec.error,
                    rec.created_at,
                    rec.updated_at,
                    rec.workspace_id
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::DuplicateSandbox(rec.id))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"))?;
            let row = stmt.query_row([id], |r| Ok(from_row(r))).optional()?;
            row.transpose()
        })
        .await
    }

    /// The workspace owning sandbox `id`, if it exists.
    pub async fn sandbox_workspace(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT workspace_id FROM sandboxes WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Sandboxes matching `filter`, oldest first.
    pub async fn list_sandboxes(
        &self,
        filter: SandboxFilter,
    ) -> Result<Vec<SandboxRecord>, StoreError> {
        self.call(move |c| {
            let mut out = Vec::new();
            for_each_sandbox(c, &filter, |rec| {
                out.push(rec);
                true
            })?;
            Ok(out)
        })
        .await
    }

    /// Like [`Store::list_sandboxes`], but the rows come in batches of `batch` (the last one
    /// may be shorter, none is empty) while the query still runs, so the caller can work on
    /// (encode, send) the first ones meanwhile and need not hold them all at once.
    ///
    /// The channel is unbounded on purpose: the query holds the store's one connection, so it
    /// must never wait for the reader (a slow HTTP client would stall every other store call,
    /// and a reader that itself needs the store would deadlock). At worst the batches queue up,
    /// which is the memory [`Store::list_sandboxes`] takes anyway. The query stops early when
    /// the receiver is dropped.
    pub fn list_sandboxes_batched(&self, filter: SandboxFilter, batch: usize) -> SandboxBatches {
        let batch = batch.max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = std::sync::Arc::clone(&self.conn);
        let task = tokio::task::spawn_blocking(move || {
            // A poisoned lock is safe to reuse: see `Store::call`.
            let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut pending = Vec::with_capacity(batch);
            let mut open = true;
            for_each_sandbox(&guard, &filter, |rec| {
                pending.push(rec);
                if pending.len() == batch {
                    let full = std::mem::replace(&mut pending, Vec::with_capacity(batch));
                    open = tx.send(full).is_ok();
                }
                open
            })?;
            if open && !pending.is_empty() {
                // The reader may be gone by now; then nobody wants these.
                let _ = tx.send(pending);
            }
            Ok(())
        });
        SandboxBatches {
            rx,
            task: Some(task),
        }
    }

    /// The size of every sandbox of workspace `workspace_id` (for its quotas): id, state, cpus,
    /// memory_mb, disk_mb.
    pub async fn workspace_sandbox_sizes(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<SandboxSize>, StoreError> {
        let ws = workspace_id.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, state, cpus, memory_mb, disk_mb FROM sandboxes WHERE workspace_id = ?1",
            )?;
            let rows = stmt.query_map([ws], |r| {
                Ok(SandboxSize {
                    id: r.get(0)?,
                    state: r.get(1)?,
                    cpus: r.get(2)?,
                    memory_mb: r.get::<_, i64>(3)? as u64,
                    disk_mb: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// `(id, workspace_id, created_at)` of every sandbox, oldest first (for the standby-age cap).
    pub async fn sandbox_ages(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT id, workspace_id, created_at FROM sandboxes ORDER BY created_at",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Ids of every sandbox in the store.
    pub async fn sandbox_ids(&self) -> Result<Vec<String>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id FROM sandboxes ORDER BY id")?;
            let ids = stmt.query_map([], |r| r.get(0))?;
            Ok(ids.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    /// Marks a sandbox `running` with its runtime handle. Returns false if the row is gone.
    pub async fn mark_sandbox_running(
        &self,
        id: &str,
        handle_json: &str,
        ip: &str,
    ) -> Result<bool, StoreError> {
        let (id, handle, ip) = (id.to_string(), handle_json.to_string(), ip.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sandboxes SET state = 'running', handle_json = ?2, ip = ?3, error = NULL, updated_at = ?4 WHERE id = ?1",
                params![id, handle, ip, now_rfc3339()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Marks a sandbox `error` with a reason; its handle and IP are cleared since its processes
    /// and resources are gone. Returns false if the row is gone.
    pub async fn mark_sandbox_error(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sandboxes SET state = 'error', error = ?2, handle_json = NULL, ip = NULL, updated_at = ?3 WHERE id = ?1",
                params![id, reason, now_rfc3339()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Deletes a sandbox row. Returns false if there was none.
    pub async fn delete_sandbox(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM sandboxes WHERE id = ?1", [id])? == 1))
            .await
    }

    /// Number of sandboxes (in any state) created from `template`.
    pub async fn count_sandboxes_using(&self, template: &str) -> Result<u64, StoreError> {
        let template = template.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT count(*) FROM sandboxes WHERE template = ?1",
                [template],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

/// Whether sandbox row `id` exists (for rows that hang off it).
pub(crate) fn exists(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT count(*) > 0 FROM sandboxes WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
}
