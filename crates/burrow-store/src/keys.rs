//! API keys: only their sha256 is stored. A key is revoked, never deleted: audit records
//! (tombstones) name keys by id.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::{Store, StoreError, now_rfc3339};

/// An API key's stored record (never the key, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public: `key_` + the first 12 hex digits of the key's sha256.
    pub id: String,
    pub name: String,
    /// The key's format: `burrow` (`bw_…`) or `e2b` (`e2b_…`). Keys made before this was
    /// recorded are `burrow`.
    pub kind: String,
    pub created_at: String,
    /// Written at most every few seconds (the server batches uses in memory).
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key's workspace; `None` for the operator key.
    pub workspace_id: Option<String>,
    /// The workspace's name (joined in for display and principals).
    pub workspace_name: Option<String>,
    /// `viewer`, `member` or `admin` (meaningless for the operator key, which has every role).
    pub role: String,
}

/// What [`Store::revoke_api_key`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    Revoked,
    /// No such key, or it is revoked already.
    NotFound,
    /// The first key (the operator's, also in `<data_dir>/client.key`) is never revoked, so
    /// nobody locks themselves out.
    OperatorKey,
}

/// Lowercase hex sha256 of a key, as stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

const COLUMNS: &str = "k.id, k.name, k.kind, k.created_at, k.last_used_at, k.revoked_at, \
                       k.workspace_id, w.name, k.role";
const FROM: &str = "api_keys k LEFT JOIN workspaces w ON w.id = k.workspace_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        created_at: r.get(3)?,
        last_used_at: r.get(4)?,
        revoked_at: r.get(5)?,
        workspace_id: r.get(6)?,
        workspace_name: r.get(7)?,
        role: r.get(8)?,
    })
}

/// The operator key: the first one created.
const OPERATOR_KEY_ID: &str =
    "SELECT id FROM api_keys WHERE workspace_id IS NULL ORDER BY created_at, rowid LIMIT 1";

impl Store {
    /// Stores the hash of `key` under `name`; `kind` is its format (`burrow` or `e2b`);
    /// `workspace_id` `None` makes an operator key (only the first key is one).
    pub async fn insert_api_key(
        &self,
        name: &str,
        kind: &str,
        key: &str,
        workspace_id: Option<&str>,
        role: &str,
    ) -> Result<ApiKeyRecord, StoreError> {
        let hash = hash_api_key(key);
        let record = ApiKeyRecord {
            // The id is public (listable) so it must not reveal the key: a prefix of its hash is
            // fine because sha256 preimages are infeasible.
            id: format!("key_{}", &hash[..12]),
            name: name.to_string(),
            kind: kind.to_string(),
            created_at: now_rfc3339(),
            last_used_at: None,
            revoked_at: None,
            workspace_id: workspace_id.map(str::to_string),
            workspace_name: None,
            role: role.to_string(),
        };
        let rec = record.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, name, kind, key_sha256, created_at, workspace_id, role) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    rec.id,
                    rec.name,
                    rec.kind,
                    hash,
                    rec.created_at,
                    rec.workspace_id,
                    rec.role
                ],
            )?;
            let mut rec = rec;
            rec.workspace_name = match &rec.workspace_id {
                Some(ws) => c
                    .query_row("SELECT name FROM workspaces WHERE id = ?1", [ws], |r| {
                        r.get(0)
                    })
                    .optional()?,
                None => None,
            };
            Ok(rec)
        })
        .await
    }

    /// The record of `key` if it is a known API key that is not revoked.
    pub async fn find_api_key(&self, key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash_api_key(key);
        self.call(move |c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM {FROM} WHERE k.key_sha256 = ?1 AND k.revoked_at IS NULL"
                ),
                [hash],
                from_row,
            )
            .optional()?)
        })
        .await
    }

    /// `(id, workspace_id)` of the key with sha256 `hash`, revoked or not (audit entries name
    /// the key that made a call even if it was revoked since).
    pub async fn api_key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let hash = hash.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, workspace_id FROM api_keys WHERE key_sha256 = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
        .await
    }

    /// Every key that is not revoked, oldest first: of workspace `workspace_id`, or every key
    /// if `None`.
    pub async fn list_api_keys(
        &self,
        workspace_id: Option<&str>,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let ws = workspace_id.map(str::to_string);
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM {FROM} WHERE k.revoked_at IS NULL \
                 AND (?1 IS NULL OR k.workspace_id = ?1) ORDER BY k.created_at, k.rowid"
            ))?;
            let rows = stmt.query_map([ws], from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The id of the operator key (the first key created), if there is a key.
    pub async fn operator_key_id(&self) -> Result<Option<String>, StoreError> {
        self.call(|c| Ok(c.query_row(OPERATOR_KEY_ID, [], |r| r.get(0)).optional()?))
            .await
    }

    /// Revokes key `id`: it authenticates nothing from now on. With `workspace_id`, only a key
    /// of that workspace (another's is `NotFound`).
    pub async fn revoke_api_key(
        &self,
        id: &str,
        workspace_id: Option<&str>,
    ) -> Result<Revoke, StoreError> {
        let id = id.to_string();
        let ws = workspace_id.map(str::to_string);
        self.call(move |c| {
            let tx = c.transaction()?;
            let operator: Option<String> =
                tx.query_row(OPERATOR_KEY_ID, [], |r| r.get(0)).optional()?;
            if operator.as_deref() == Some(id.as_str()) {
                return Ok(Revoke::OperatorKey);
            }
            let changed = tx.execute(
                "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL \
                 AND (?3 IS NULL OR workspace_id = ?3)",
                params![id, now_rfc3339(), ws],
            )?;
            tx.commit()?;
            Ok(if changed == 1 {
                Revoke::Revoked
            } else {
                Revoke::NotFound
            })
        })
        .await
    }

    /// Records when keys were last used: `(id, rfc3339 time)` pairs, in one transaction.
    pub async fn record_api_key_uses(&self, uses: Vec<(String, String)>) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?;
                for (id, at) in uses {
                    stmt.execute(params![id, at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Keys ever created, revoked ones included.
    pub async fn api_key_count(&self) -> Result<u64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?))
            .await
    }
}
