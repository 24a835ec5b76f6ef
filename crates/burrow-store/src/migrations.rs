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
    // 4: workspaces. Everything existing becomes workspace `default` (tier `unlimited`, so an
    // upgraded server keeps behaving as before); the first key stays the operator key (no
    // workspace), every other key becomes an admin of `default`.
    r#"
    CREATE TABLE workspaces (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        tier            TEXT NOT NULL,
        overrides_json  TEXT NOT NULL DEFAULT '{}',
        created_at      TEXT NOT NULL
    );
    INSERT INTO workspaces (id, name, tier, created_at)
        VALUES ('ws_default', 'default', 'unlimited', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
    ALTER TABLE api_keys ADD COLUMN workspace_id TEXT REFERENCES workspaces(id);
    ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
    UPDATE api_keys SET workspace_id = 'ws_default'
        WHERE id <> (SELECT id FROM api_keys ORDER BY created_at, rowid LIMIT 1);
    ALTER TABLE sandboxes ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'ws_default';
    -- Lists of one workspace read this index in order: no scan, no sort.
    CREATE INDEX sandboxes_workspace ON sandboxes(workspace_id, created_at, id);
    ALTER TABLE tombstones ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'ws_default';
    CREATE INDEX tombstones_workspace ON tombstones(workspace_id, deleted_at);
    ALTER TABLE usage ADD COLUMN workspace_id TEXT NOT NULL DEFAULT 'ws_default';
    -- Usage by hour, for reports over a time range (the usage table keeps lifetime totals).
    CREATE TABLE usage_hours (
        sandbox_id                  TEXT NOT NULL,
        hour                        TEXT NOT NULL,
        workspace_id                TEXT NOT NULL,
        active_gb_seconds           REAL NOT NULL,
        cpu_seconds                 REAL NOT NULL,
        standby_storage_gb_seconds  REAL NOT NULL,
        running_seconds             REAL NOT NULL,
        standby_seconds             REAL NOT NULL,
        PRIMARY KEY (sandbox_id, hour)
    );
    CREATE INDEX usage_hours_workspace ON usage_hours(workspace_id, hour);
    -- Templates built by a workspace; a template without a row is server-wide (public).
    CREATE TABLE template_owners (
        name          TEXT PRIMARY KEY,
        workspace_id  TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        at            TEXT NOT NULL,
        key_id        TEXT,
        workspace_id  TEXT,
        action        TEXT NOT NULL,
        object        TEXT,
        status        INTEGER NOT NULL,
        source        TEXT
    );
    CREATE INDEX audit_log_at ON audit_log(at);
    CREATE INDEX audit_log_workspace ON audit_log(workspace_id, at);
    "#,
    // 5: private sandbox ports: the token the proxy requires (E2B's traffic access token)
    r#"
    CREATE TABLE sandbox_traffic_tokens (
        id     TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
        token  TEXT NOT NULL
    );
    "#,
];

pub(crate) fn current_version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?)
}

/// Applies every migration newer than the database (up to `up_to`), each in its own
/// transaction.
pub(crate) fn apply(conn: &mut Connection, up_to: usize) -> Result<(), StoreError> {
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
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(version)
        .take(up_to.saturating_sub(version))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("UPDATE schema_version SET version = ?1", [index as u32 + 1])?;
        tx.commit()?;
    }
    Ok(())
}
