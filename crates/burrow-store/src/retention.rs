//! Expiry policies, tombstones and metered usage.

use burrow_types::{ErasureRecord, Expiration, Tombstone, Usage};
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// A sandbox's retention settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxPolicy {
    pub expiration: Expiration,
    pub zdr: bool,
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serialises")
}

/// The start of `at`'s hour, as stored in `usage_hours.hour` (sorts as text).
fn hour_of(at: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    at.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(*at)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn usage_from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Usage> {
    Ok(Usage {
        active_gb_seconds: r.get(first)?,
        cpu_seconds: r.get(first + 1)?,
        standby_storage_gb_seconds: r.get(first + 2)?,
        running_seconds: r.get(first + 3)?,
        standby_seconds: r.get(first + 4)?,
    })
}

impl Store {
    /// Sets (replaces) a sandbox's policy. Returns false if the sandbox row does not exist.
    pub async fn set_sandbox_policy(
        &self,
        id: &str,
        policy: &SandboxPolicy,
    ) -> Result<bool, StoreError> {
        let (id, json, zdr) = (id.to_string(), to_json(&policy.expiration), policy.zdr);
        self.call(move |c| {
            if !crate::sandboxes::exists(c, &id)? {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO sandbox_policies (id, expiration_json, zdr) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET expiration_json = ?2, zdr = ?3",
                params![id, json, zdr],
            )?;
            Ok(true)
        })
        .await
    }

    /// A sandbox's policy (the default, no expiry and not ZDR, if none was set).
    pub async fn sandbox_policy(&self, id: &str) -> Result<SandboxPolicy, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            let row: Option<(String, bool)> = c
                .query_row(
                    "SELECT expiration_json, zdr FROM sandbox_policies WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match row {
                None => Ok(SandboxPolicy::default()),
                Some((json, zdr)) => Ok(SandboxPolicy {
                    expiration: serde_json::from_str(&json)
                        .map_err(|e| corrupt(&format!("sandbox {id}: expiration"), e))?,
                    zdr,
                }),
            }
        })
        .await
    }

    /// Every stored policy, by sandbox id.
    pub async fn sandbox_policies(&self) -> Result<Vec<(String, SandboxPolicy)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, expiration_json, zdr FROM sandbox_policies")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, json, zdr) = row?;
                let expiration = serde_json::from_str(&json)
                    .map_err(|e| corrupt(&format!("sandbox {id}: expiration"), e))?;
                out.push((id, SandboxPolicy { expiration, zdr }));
            }
            Ok(out)
        })
        .await
    }

    /// Adds `delta` to a sandbox's accumulated usage and to its current hour (for reports over
    /// a time range), in one transaction; the sandbox's workspace is taken from its row.
    pub async fn add_usage(&self, id: &str, delta: &Usage) -> Result<(), StoreError> {
        let (id, d) = (id.to_string(), delta.clone());
        let hour = hour_of(&chrono::Utc::now());
        self.call(move |c| {
            let tx = c.transaction()?;
            let workspace: String = tx
                .query_row("SELECT workspace_id FROM sandboxes WHERE id = ?1", [&id], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or_else(|| crate::DEFAULT_WORKSPACE_ID.to_string());
            let values = params![
                id,
                d.active_gb_seconds,
                d.cpu_seconds,
                d.standby_storage_gb_seconds,
                d.running_seconds,
                d.standby_seconds,
                workspace,
                hour
            ];
            let lifetime = &values[..7];
            tx.execute(
                "INSERT INTO usage (id, active_gb_seconds, cpu_seconds, standby_storage_gb_seconds, \
                 running_seconds, standby_seconds, workspace_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT(id) DO UPDATE SET \
                 active_gb_seconds = active_gb_seconds + ?2, cpu_seconds = cpu_seconds + ?3, \
                 standby_storage_gb_seconds = standby_storage_gb_seconds + ?4, \
                 running_seconds = running_seconds + ?5, standby_seconds = standby_seconds + ?6",
                lifetime,
            )?;
            tx.execute(
                "INSERT INTO usage_hours (sandbox_id, active_gb_seconds, cpu_seconds, \
                 standby_storage_gb_seconds, running_seconds, standby_seconds, workspace_id, hour) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT(sandbox_id, hour) DO UPDATE SET \
                 active_gb_seconds = active_gb_seconds + ?2, cpu_seconds = cpu_seconds + ?3, \
                 standby_storage_gb_seconds = standby_storage_gb_seconds + ?4, \
                 running_seconds = running_seconds + ?5, standby_seconds = standby_seconds + ?6",
                values,
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Usage per sandbox of workspace `workspace_id` (every workspace if `None`) in the hours
    /// from `since` to before `until` (RFC 3339, UTC; hours are whole: an hour counts when it
    /// starts in the range). Rows: `(workspace_id, sandbox_id, usage)`, by workspace then sandbox.
    pub async fn usage_between(
        &self,
        workspace_id: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<(String, String, Usage)>, StoreError> {
        let ws = workspace_id.map(str::to_string);
        let since = since.map(str::to_string);
        let until = until.map(str::to_string);
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT workspace_id, sandbox_id, sum(active_gb_seconds), sum(cpu_seconds), \
                 sum(standby_storage_gb_seconds), sum(running_seconds), sum(standby_seconds) \
                 FROM usage_hours WHERE (?1 IS NULL OR workspace_id = ?1) \
                 AND (?2 IS NULL OR hour >= ?2) AND (?3 IS NULL OR hour < ?3) \
                 GROUP BY workspace_id, sandbox_id ORDER BY workspace_id, sandbox_id",
            )?;
            let rows = stmt.query_map(params![ws, since, until], |r| {
                Ok((r.get(0)?, r.get(1)?, usage_from_row(r, 2)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Lifetime usage totals per workspace, live and deleted sandboxes together.
    pub async fn usage_by_workspace(&self) -> Result<Vec<(String, Usage)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT workspace_id, sum(active_gb_seconds), sum(cpu_seconds), \
                 sum(standby_storage_gb_seconds), sum(running_seconds), sum(standby_seconds) \
                 FROM usage GROUP BY workspace_id ORDER BY workspace_id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, usage_from_row(r, 1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// A sandbox's accumulated usage (zero if never metered).
    pub async fn usage(&self, id: &str) -> Result<Usage, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT active_gb_seconds, cpu_seconds, standby_storage_gb_seconds, \
                 running_seconds, standby_seconds FROM usage WHERE id = ?1",
                [id],
                |r| usage_from_row(r, 0),
            )
            .optional()?
            .unwrap_or_default())
        })
        .await
    }

    /// The sum of every sandbox's usage, live and deleted: of workspace `workspace_id`, or of
    /// all if `None`.
    pub async fn usage_total(&self, workspace_id: Option<&str>) -> Result<Usage, StoreError> {
        let ws = workspace_id.map(str::to_string);
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT coalesce(sum(active_gb_seconds), 0), coalesce(sum(cpu_seconds), 0), \
                 coalesce(sum(standby_storage_gb_seconds), 0), coalesce(sum(running_seconds), 0), \
                 coalesce(sum(standby_seconds), 0) FROM usage WHERE (?1 IS NULL OR workspace_id = ?1)",
                [ws],
                |r| usage_from_row(r, 0),
            )?)
        })
        .await
    }

    /// Records a tombstone (replacing one with the same id).
    pub async fn insert_tombstone(&self, t: &Tombstone) -> Result<(), StoreError> {
        let t = t.clone();
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO tombstones (id, template, created_at, deleted_at, reason, \
                 deleted_by, zdr, erased_json, usage_json, workspace_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    t.id,
                    t.template,
                    t.created_at,
                    t.deleted_at,
                    t.reason,
                    t.deleted_by,
                    t.zdr,
                    to_json(&t.erased),
                    to_json(&t.usage),
                    t.workspace_id
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Tombstones of sandboxes deleted at or after `since` (RFC 3339, UTC), oldest first; of
    /// workspace `workspace_id` only, unless `None`.
    pub async fn tombstones(
        &self,
        workspace_id: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<Tombstone>, StoreError> {
        let since = since.map(str::to_string);
        let ws = workspace_id.map(str::to_string);
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, template, created_at, deleted_at, reason, deleted_by, zdr, erased_json, \
                 usage_json, workspace_id FROM tombstones WHERE (?1 IS NULL OR deleted_at >= ?1) \
                 AND (?2 IS NULL OR workspace_id = ?2) ORDER BY deleted_at, id",
            )?;
            let rows = stmt.query_map(params![since, ws], |r| {
                Ok((
                    Tombstone {
                        id: r.get(0)?,
                        template: r.get(1)?,
                        created_at: r.get(2)?,
                        deleted_at: r.get(3)?,
                        reason: r.get(4)?,
                        deleted_by: r.get(5)?,
                        zdr: r.get(6)?,
                        erased: ErasureRecord::default(),
                        usage: Usage::default(),
                        workspace_id: r.get(9)?,
                    },
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (mut t, erased, usage) = row?;
                t.erased = serde_json::from_str(&erased)
                    .map_err(|e| corrupt(&format!("tombstone {}: erased", t.id), e))?;
                t.usage = serde_json::from_str(&usage)
                    .map_err(|e| corrupt(&format!("tombstone {}: usage", t.id), e))?;
                out.push(t);
            }
            Ok(out)
        })
        .await
    }
}
