//! Workspaces, the owners of templates, and the audit log.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, now_rfc3339};

/// A workspace row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    /// `ws_…`.
    pub id: String,
    pub name: String,
    pub tier: String,
    /// Per-workspace quota overrides, JSON (the server parses them).
    pub overrides_json: String,
    pub created_at: String,
}

/// What a workspace owns (it cannot be removed without `--force` while any is non-zero).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkspaceCounts {
    pub sandboxes: u64,
    pub templates: u64,
    /// Keys not revoked.
    pub keys: u64,
}

/// One audit log entry: a mutating call. Never secrets or file contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned by the store, increasing.
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    /// The key that made the call (`None`: no valid key was presented).
    pub key_id: Option<String>,
    pub workspace_id: Option<String>,
    /// `METHOD /route/{pattern}` (or the E2B route).
    pub action: String,
    /// The object the call named (sandbox id, key id, template or workspace name), if any.
    pub object: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The client's address.
    pub source: Option<String>,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub workspace_id: Option<String>,
    /// RFC 3339: at or after.
    pub since: Option<String>,
    /// Most recent first, at most this many.
    pub limit: u32,
}

const WS_COLUMNS: &str = "id, name, tier, overrides_json, created_at";

fn ws_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        tier: r.get(2)?,
        overrides_json: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl Store {
    /// Creates a workspace; [`StoreError::DuplicateName`] if the name is taken.
    pub async fn insert_workspace(
        &self,
        id: &str,
        name: &str,
        tier: &str,
    ) -> Result<WorkspaceRecord, StoreError> {
        let rec = WorkspaceRecord {
            id: id.to_string(),
            name: name.to_string(),
            tier: tier.to_string(),
            overrides_json: "{}".to_string(),
            created_at: now_rfc3339(),
        };
        let r = rec.clone();
        self.call(move |c| {
            match c.execute(
                &format!("INSERT INTO workspaces ({WS_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![r.id, r.name, r.tier, r.overrides_json, r.created_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::DuplicateName(r.name)),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        Ok(rec)
    }

    pub async fn workspace_by_name(
        &self,
        name: &str,
    ) -> Result<Option<WorkspaceRecord>, StoreError> {
        let name = name.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {WS_COLUMNS} FROM workspaces WHERE name = ?1"),
                [name],
                ws_from_row,
            )
            .optional()?)
        })
        .await
    }

    pub async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRecord>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                &format!("SELECT {WS_COLUMNS} FROM workspaces WHERE id = ?1"),
                [id],
                ws_from_row,
            )
            .optional()?)
        })
        .await
    }

    /// Every workspace, by name.
    pub async fn list_workspaces(&self) -> Result<Vec<WorkspaceRecord>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {WS_COLUMNS} FROM workspaces ORDER BY name"
            ))?;
            let rows = stmt.query_map([], ws_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Sets a workspace's tier and quota overrides. Returns false if it does not exist.
    pub async fn update_workspace(
        &self,
        id: &str,
        tier: &str,
        overrides_json: &str,
    ) -> Result<bool, StoreError> {
        let (id, tier, o) = (id.to_string(), tier.to_string(), overrides_json.to_string());
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE workspaces SET tier = ?2, overrides_json = ?3 WHERE id = ?1",
                params![id, tier, o],
            )? == 1)
        })
        .await
    }

    pub async fn workspace_counts(&self, id: &str) -> Result<WorkspaceCounts, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let count =
                |sql: &str| -> rusqlite::Result<u64> { c.query_row(sql, [&id], |r| r.get(0)) };
            Ok(WorkspaceCounts {
                sandboxes: count("SELECT count(*) FROM sandboxes WHERE workspace_id = ?1")?,
                templates: count("SELECT count(*) FROM template_owners WHERE workspace_id = ?1")?,
                keys: count(
                    "SELECT count(*) FROM api_keys WHERE workspace_id = ?1 AND revoked_at IS NULL",
                )?,
            })
        })
        .await
    }

    /// Removes an empty workspace (the caller deleted its sandboxes and templates first): its
    /// keys are revoked (kept, as audit records name them) and its row deleted. Tombstones,
    /// usage and audit entries keep its id. Returns false if it did not exist.
    pub async fn delete_workspace(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE workspace_id = ?1 AND revoked_at IS NULL",
                params![id, now_rfc3339()],
            )?;
            // The keys' workspace reference must go before the row (foreign key); `role`
            // 'revoked' marks them (a NULL workspace alone would read as the operator's).
            tx.execute(
                "UPDATE api_keys SET workspace_id = NULL, role = 'revoked' WHERE workspace_id = ?1",
                [&id],
            )?;
            let n = tx.execute("DELETE FROM workspaces WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    /// Claims template name `name` for workspace `workspace_id`; false if it is claimed already.
    pub async fn claim_template_name(
        &self,
        name: &str,
        workspace_id: &str,
    ) -> Result<bool, StoreError> {
        let (name, ws) = (name.to_string(), workspace_id.to_string());
        self.call(move |c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO template_owners (name, workspace_id) VALUES (?1, ?2)",
                params![name, ws],
            )? == 1)
        })
        .await
    }

    /// Records that workspace `workspace_id` owns template `name`.
    pub async fn set_template_owner(
        &self,
        name: &str,
        workspace_id: &str,
    ) -> Result<(), StoreError> {
        let (name, ws) = (name.to_string(), workspace_id.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO template_owners (name, workspace_id) VALUES (?1, ?2)",
                params![name, ws],
            )?;
            Ok(())
        })
        .await
    }

    /// The workspace owning template `name`; `None` = server-wide.
    pub async fn template_owner(&self, name: &str) -> Result<Option<String>, StoreError> {
        let name = name.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT workspace_id FROM template_owners WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Every owned template: `(name, workspace_id)`.
    pub async fn template_owners(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT name, workspace_id FROM template_owners")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub async fn remove_template_owner(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.call(move |c| {
            c.execute("DELETE FROM template_owners WHERE name = ?1", [name])?;
            Ok(())
        })
        .await
    }

    /// Appends audit entries (their `seq` is ignored), in one transaction.
    pub async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO audit_log (at, key_id, workspace_id, action, object, status, source) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in entries {
                    stmt.execute(params![
                        e.at,
                        e.key_id,
                        e.workspace_id,
                        e.action,
                        e.object,
                        e.status,
                        e.source
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Audit entries matching `query`, most recent first.
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, key_id, workspace_id, action, object, status, source FROM audit_log \
                 WHERE (?1 IS NULL OR workspace_id = ?1) AND (?2 IS NULL OR at >= ?2) \
                 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![query.workspace_id, query.since, query.limit],
                |r| {
                    Ok(AuditEntry {
                        seq: r.get(0)?,
                        at: r.get(1)?,
                        key_id: r.get(2)?,
                        workspace_id: r.get(3)?,
                        action: r.get(4)?,
                        object: r.get(5)?,
                        status: r.get(6)?,
                        source: r.get(7)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Deletes audit entries older than `before` (RFC 3339). Returns how many.
    pub async fn prune_audit(&self, before: &str) -> Result<u64, StoreError> {
        let before = before.to_string();
        self.call(move |c| Ok(c.execute("DELETE FROM audit_log WHERE at < ?1", [before])? as u64))
            .await
    }
}
