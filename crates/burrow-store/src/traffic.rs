//! Traffic access tokens: a sandbox whose ports are private has one; the proxy requires it.

use rusqlite::OptionalExtension;

use crate::{Store, StoreError};

impl Store {
    /// Makes sandbox `id`'s ports private behind `token`. Returns false if the sandbox row does
    /// not exist.
    pub async fn set_traffic_token(&self, id: &str, token: &str) -> Result<bool, StoreError> {
        let (id, token) = (id.to_string(), token.to_string());
        self.call(move |c| {
            if !crate::sandboxes::exists(c, &id)? {
                return Ok(false);
            }
            c.execute(
                "INSERT INTO sandbox_traffic_tokens (id, token) VALUES (?1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET token = ?2",
                [&id, &token],
            )?;
            Ok(true)
        })
        .await
    }

    /// Sandbox `id`'s traffic token; `None` if its ports are public (or it does not exist).
    pub async fn traffic_token(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT token FROM sandbox_traffic_tokens WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    /// Every traffic token, by sandbox id (lists show them without a query per sandbox).
    pub async fn traffic_tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, token FROM sandbox_traffic_tokens")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
