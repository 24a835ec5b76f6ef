//! Ordered schema migrations. Append new ones; never edit an applied one.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    r#"
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        key_sha256  TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE sandboxes (
        id            TEXT PRIMARY KEY,
        template      TEXT NOT NULL,
        state         TEXT NOT NULL,
        cpus          REAL NOT NULL,
        memory_mb     INTEGER NOT NULL,
        disk_mb       INTEGER NOT NULL,
        env_json      TEXT NOT NULL,
        labels_json   TEXT NOT NULL,
        access_token  TEXT,
        handle_json   TEXT,
        ip            TEXT,
        error         TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE INDEX sandboxes_template ON sandboxes(template);
    "#,
    // 2: expiry policies, tombstones of deleted sandboxes, usage metering
    r#"
    CREATE TABLE sandbox_policies (
        id               TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
        expiration_json  TEXT NOT NULL,
        zdr              INTEGER NOT NULL
    );
    CREATE TABLE tombstones (
        id           TEXT PRIMARY KEY,
        template     TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        deleted_at   TEXT NOT NULL,
        reason       TEXT NOT NULL,
        deleted_by   TEXT NOT NULL,
        zdr          INTEGER NOT NULL,
        erased_json  TEXT NOT NULL,
        usage_json   TEXT NOT NULL
    );
    CREATE INDEX tombstones_deleted_at ON tombstones(deleted_at);
    CREATE TABLE usage (
        id                          TEXT PRIMARY KEY,
        active_gb_seconds           REAL NOT NULL,
        cpu_seconds                 REAL NOT NULL,
        standby_storage_gb_seconds  REAL NOT NULL,
        running_seconds             REAL NOT NULL,
        standby_seconds             REAL NOT NULL
    );
    "#,
    // 3: API key kind, last use and revocation (revoked keys stay, for audit records naming them)
    r#"
    ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'burrow';
    ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
    ALTER TABLE api_keys ADD COLUMN revoked_at TEXT;
    "#,
];

pub(crate) fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?)
}

/// Applies every migration newer than the database, each in its own transaction.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let rows: u32 = conn.query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))?;
    if rows == 0 {
        conn.execute("INSERT INTO schema_version (version) VALUES (0)", [])?;
    }
    let version = current_version(conn)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this burrow ({}); upgrade burrow",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("UPDATE schema_version SET version = ?1", [index as u32 + 1])?;
        tx.commit()?;
    }
    Ok(())
}
