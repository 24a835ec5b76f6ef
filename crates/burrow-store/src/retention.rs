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
            let exists: bool = c.query_row(
                "SELECT count(*) > 0 FROM sandboxes WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )?;
            if !exists {
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

    /// Adds `delta` to a sandbox's accumulated usage.
    pub async fn add_usage(&self, id: &str, delta: &Usage) -> Result<(), StoreError> {
        let (id, d) = (id.to_string(), delta.clone());
        self.call(move |c| {
            c.execute(
                "INSERT INTO usage (id, active_gb_seconds, cpu_seconds, standby_storage_gb_seconds, \
                 running_seconds, standby_seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(id) DO UPDATE SET \
                 active_gb_seconds = active_gb_seconds + ?2, cpu_seconds = cpu_seconds + ?3, \
                 standby_storage_gb_seconds = standby_storage_gb_seconds + ?4, \
                 running_seconds = running_seconds + ?5, standby_seconds = standby_seconds + ?6",
                params![
                    id,
                    d.active_gb_seconds,
                    d.cpu_seconds,
                    d.standby_storage_gb_seconds,
                    d.running_seconds,
                    d.standby_seconds
                ],
            )?;
            Ok(())
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

    /// The sum of every sandbox's usage, live and deleted.
    pub async fn usage_total(&self) -> Result<Usage, StoreError> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT coalesce(sum(active_gb_seconds), 0), coalesce(sum(cpu_seconds), 0), \
                 coalesce(sum(standby_storage_gb_seconds), 0), coalesce(sum(running_seconds), 0), \
                 coalesce(sum(standby_seconds), 0) FROM usage",
                [],
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
                 deleted_by, zdr, erased_json, usage_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    t.id,
                    t.template,
                    t.created_at,
                    t.deleted_at,
                    t.reason,
                    t.deleted_by,
                    t.zdr,
                    to_json(&t.erased),
                    to_json(&t.usage)
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Tombstones of sandboxes deleted at or after `since` (RFC 3339, UTC), oldest first.
    pub async fn tombstones(&self, since: Option<&str>) -> Result<Vec<Tombstone>, StoreError> {
        let since = since.map(str::to_string);
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, template, created_at, deleted_at, reason, deleted_by, zdr, erased_json, \
                 usage_json FROM tombstones WHERE (?1 IS NULL OR deleted_at >= ?1) \
                 ORDER BY deleted_at, id",
            )?;
            let rows = stmt.query_map([since], |r| {
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
