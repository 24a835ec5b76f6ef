//! The `sandboxes` table.

use std::collections::BTreeMap;

use burrow_types::SandboxState;
use rusqlite::{OptionalExtension, Row, params};

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
    let state_text: String = r.get(2)?;
    let env_json: String = r.get(6)?;
    let labels_json: String = r.get(7)?;
    let id: String = r.get(0)?;
    let state = SandboxState::parse(&state_text).ok_or_else(|| {
        StoreError::Corrupt(format!("sandbox {id}: unknown state '{state_text}'"))
    })?;
    let env = serde_json::from_str(&env_json)
        .map_err(|e| StoreError::Corrupt(format!("sandbox {id}: env: {e}")))?;
    let labels = serde_json::from_str(&labels_json)
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
            let rows = stmt.query_map(params![state, filter.workspace_id], |r| Ok(from_row(r)))?;
            let mut out = Vec::new();
            for row in rows {
                let rec = row??;
                if filter
                    .labels
                    .iter()
                    .all(|(k, v)| rec.labels.get(k) == Some(v))
                {
                    out.push(rec);
                }
            }
            Ok(out)
        })
        .await
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
