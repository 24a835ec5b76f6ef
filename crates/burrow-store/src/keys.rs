//! API keys: only their sha256 is stored.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::{Store, StoreError, now_rfc3339};

/// An API key's stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

/// Lowercase hex sha256 of a key, as stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Store {
    /// Stores the hash of `key` under `name`; returns the key's record.
    pub async fn insert_api_key(&self, name: &str, key: &str) -> Result<ApiKeyRecord, StoreError> {
        let hash = hash_api_key(key);
        let record = ApiKeyRecord {
            // The id is public (listable) so it must not reveal the key: a prefix of its hash is
            // fine because sha256 preimages are infeasible.
            id: format!("key_{}", &hash[..12]),
            name: name.to_string(),
            created_at: now_rfc3339(),
        };
        let rec = record.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, name, key_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![rec.id, rec.name, hash, rec.created_at],
            )?;
            Ok(())
        })
        .await?;
        Ok(record)
    }

    /// The record of `key` if it is a known API key.
    pub async fn find_api_key(&self, key: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let hash = hash_api_key(key);
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT id, name, created_at FROM api_keys WHERE key_sha256 = ?1",
                [hash],
                |r| {
                    Ok(ApiKeyRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn api_key_count(&self) -> Result<u64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0))?))
            .await
    }
}
