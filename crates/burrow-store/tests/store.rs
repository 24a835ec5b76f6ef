//! The store against a real SQLite file in a temp dir.

use burrow_store::{Revoke, SandboxFilter, SandboxRecord, Store, StoreError, hash_api_key};
use burrow_types::SandboxState;

async fn open_temp() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("burrow.db")).await.unwrap();
    (dir, store)
}

fn record(id: &str, template: &str, labels: &[(&str, &str)]) -> SandboxRecord {
    let mut rec = SandboxRecord::new_creating(id.into(), template.into());
    rec.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    rec.env.insert("A".into(), "1".into());
    rec.cpus = 0.5;
    rec.access_token = Some("tok".into());
    rec
}

#[tokio::test]
async fn migrations_are_applied_once_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burrow.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    store
        .insert_sandbox(&record("iaaa", "base", &[]))
        .await
        .unwrap();
    drop(store);
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    assert_eq!(store.sandbox_ids().await.unwrap(), vec!["iaaa".to_string()]);
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burrow.db");
    drop(Store::open(&path).await.unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    let err = Store::open(&path).await.err().expect("must refuse");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("upgrade burrow"), "{err}");
}

#[tokio::test]
async fn sandbox_lifecycle() {
    let (_dir, store) = open_temp().await;
    let rec = record("ione", "base", &[("team", "a")]);
    store.insert_sandbox(&rec).await.unwrap();
    let dup = store.insert_sandbox(&rec).await.unwrap_err();
    assert!(matches!(dup, StoreError::DuplicateSandbox(ref id) if id == "ione"));

    let got = store.get_sandbox("ione").await.unwrap().unwrap();
    assert_eq!(got, rec);

    assert!(
        store
            .mark_sandbox_running("ione", "{\"slot\":1}", "10.200.0.2")
            .await
            .unwrap()
    );
    let got = store.get_sandbox("ione").await.unwrap().unwrap();
    assert_eq!(got.state, SandboxState::Running);
    assert_eq!(got.handle_json.as_deref(), Some("{\"slot\":1}"));
    assert_eq!(got.ip.as_deref(), Some("10.200.0.2"));

    assert!(store.mark_sandbox_error("ione", "gone").await.unwrap());
    let got = store.get_sandbox("ione").await.unwrap().unwrap();
    assert_eq!(got.state, SandboxState::Error);
    assert_eq!(got.error.as_deref(), Some("gone"));
    assert_eq!(got.handle_json, None);

    assert!(store.delete_sandbox("ione").await.unwrap());
    assert!(!store.delete_sandbox("ione").await.unwrap());
    assert!(store.get_sandbox("ione").await.unwrap().is_none());
    assert!(!store.mark_sandbox_running("ione", "{}", "x").await.unwrap());
}

#[tokio::test]
async fn list_filters_by_state_and_every_label() {
    let (_dir, store) = open_temp().await;
    store
        .insert_sandbox(&record("ia", "base", &[("team", "a"), ("env", "dev")]))
        .await
        .unwrap();
    store
        .insert_sandbox(&record("ib", "base", &[("team", "a")]))
        .await
        .unwrap();
    store
        .insert_sandbox(&record("ic", "other", &[("team", "b")]))
        .await
        .unwrap();
    store
        .mark_sandbox_running("ib", "{}", "10.0.0.1")
        .await
        .unwrap();

    let ids = |v: Vec<SandboxRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = store
        .list_sandboxes(SandboxFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(all), ["ia", "ib", "ic"]);
    let team_a = SandboxFilter {
        labels: vec![("team".into(), "a".into())],
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_sandboxes(team_a.clone()).await.unwrap()),
        ["ia", "ib"]
    );
    let both = SandboxFilter {
        labels: vec![("team".into(), "a".into()), ("env".into(), "dev".into())],
        ..Default::default()
    };
    assert_eq!(ids(store.list_sandboxes(both).await.unwrap()), ["ia"]);
    let running_a = SandboxFilter {
        state: Some(SandboxState::Running),
        ..team_a
    };
    assert_eq!(ids(store.list_sandboxes(running_a).await.unwrap()), ["ib"]);
    assert_eq!(store.count_sandboxes_using("base").await.unwrap(), 2);
    assert_eq!(store.count_sandboxes_using("nope").await.unwrap(), 0);
}

#[tokio::test]
async fn api_keys_are_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burrow.db");
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.api_key_count().await.unwrap(), 0);
    let key = "bw_0123456789abcdef0123456789abcdef01234567";
    let rec = store
        .insert_api_key("default", "burrow", key, None, "admin")
        .await
        .unwrap();
    assert_eq!(store.api_key_count().await.unwrap(), 1);
    assert_eq!(store.find_api_key(key).await.unwrap(), Some(rec));
    assert_eq!(store.find_api_key("bw_wrong").await.unwrap(), None);

    let raw = std::fs::read(&path).unwrap();
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for bytes in [&raw, &wal] {
        assert!(!contains(bytes, key.as_bytes()), "plaintext key on disk");
    }
    assert!(
        contains(&wal, hash_api_key(key).as_bytes())
            || contains(&raw, hash_api_key(key).as_bytes())
    );
}

#[tokio::test]
async fn api_keys_are_listed_used_and_revoked_but_never_the_first() {
    let (_dir, store) = open_temp().await;
    let operator = store
        .insert_api_key("default", "burrow", "bw_operator", None, "admin")
        .await
        .unwrap();
    let e2b = store
        .insert_api_key("sdk", "e2b", "e2b_other", Some("ws_default"), "member")
        .await
        .unwrap();
    assert_eq!(
        store.operator_key_id().await.unwrap(),
        Some(operator.id.clone())
    );
    store
        .record_api_key_uses(vec![(e2b.id.clone(), "2030-01-01T00:00:00.000Z".into())])
        .await
        .unwrap();
    let listed = store.list_api_keys(None).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, operator.id);
    assert_eq!(listed[0].last_used_at, None);
    assert_eq!(listed[1].kind, "e2b");
    assert_eq!(
        listed[1].last_used_at.as_deref(),
        Some("2030-01-01T00:00:00.000Z")
    );

    assert_eq!(
        store.revoke_api_key(&operator.id, None).await.unwrap(),
        Revoke::OperatorKey
    );
    assert_eq!(
        store.revoke_api_key(&e2b.id, None).await.unwrap(),
        Revoke::Revoked
    );
    assert_eq!(
        store.revoke_api_key(&e2b.id, None).await.unwrap(),
        Revoke::NotFound
    );
    assert_eq!(
        store.revoke_api_key("key_nosuch", None).await.unwrap(),
        Revoke::NotFound
    );
    assert_eq!(store.find_api_key("e2b_other").await.unwrap(), None);
    assert!(store.find_api_key("bw_operator").await.unwrap().is_some());
    let listed = store.list_api_keys(None).await.unwrap();
    assert_eq!(listed.len(), 1, "revoked keys are not listed");
    assert_eq!(store.api_key_count().await.unwrap(), 2, "but kept");
}

#[tokio::test]
async fn keys_of_a_version_2_database_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burrow.db");
    {
        let old = Store::open_at(&path, 2).await.unwrap();
        old.execute_raw(&format!(
            "INSERT INTO api_keys VALUES ('key_old', 'default', '{}', '2026-01-01T00:00:00.000Z');",
            hash_api_key("bw_old")
        ))
        .await
        .unwrap();
    }
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 5);
    let found = store
        .find_api_key("bw_old")
        .await
        .unwrap()
        .expect("still valid");
    assert_eq!(found.id, "key_old");
    assert_eq!(found.kind, "burrow");
    assert_eq!(
        store.operator_key_id().await.unwrap().as_deref(),
        Some("key_old")
    );
}

#[tokio::test]
async fn policies_usage_and_tombstones() {
    use burrow_store::SandboxPolicy;
    use burrow_types::{ErasureRecord, Expiration, Tombstone, Usage};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("burrow.db")).await.unwrap();
    let policy = SandboxPolicy {
        expiration: Expiration {
            ttl_idle: Some(60),
            ..Expiration::default()
        },
        zdr: true,
    };
    assert!(!store.set_sandbox_policy("inope", &policy).await.unwrap());
    store
        .insert_sandbox(&SandboxRecord::new_creating("ia".into(), "base".into()))
        .await
        .unwrap();
    assert!(store.set_sandbox_policy("ia", &policy).await.unwrap());
    assert_eq!(store.sandbox_policy("ia").await.unwrap(), policy);
    assert_eq!(store.sandbox_policies().await.unwrap().len(), 1);
    // The policy goes with the row.
    store.delete_sandbox("ia").await.unwrap();
    assert_eq!(
        store.sandbox_policy("ia").await.unwrap(),
        SandboxPolicy::default()
    );

    let delta = Usage {
        active_gb_seconds: 1.5,
        cpu_seconds: 0.25,
        running_seconds: 3.0,
        ..Usage::default()
    };
    store.add_usage("ia", &delta).await.unwrap();
    store.add_usage("ia", &delta).await.unwrap();
    store.add_usage("ib", &delta).await.unwrap();
    assert_eq!(store.usage("ia").await.unwrap().active_gb_seconds, 3.0);
    assert_eq!(store.usage_total(None).await.unwrap().running_seconds, 9.0);
    assert_eq!(store.usage("inone").await.unwrap(), Usage::default());

    let tomb = |id: &str, at: &str| Tombstone {
        id: id.into(),
        template: "base".into(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        deleted_at: at.into(),
        reason: "ttl-idle".into(),
        deleted_by: "system".into(),
        zdr: false,
        erased: ErasureRecord {
            upper_dir_bytes: 42,
            ..ErasureRecord::default()
        },
        usage: delta.clone(),
        workspace_id: "ws_default".into(),
    };
    store
        .insert_tombstone(&tomb("ia", "2026-02-01T00:00:00.000Z"))
        .await
        .unwrap();
    store
        .insert_tombstone(&tomb("ib", "2026-03-01T00:00:00.000Z"))
        .await
        .unwrap();
    assert_eq!(store.tombstones(None, None).await.unwrap().len(), 2);
    let recent = store
        .tombstones(None, Some("2026-02-15T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(recent, vec![tomb("ib", "2026-03-01T00:00:00.000Z")]);
}

/// A data dir made before workspaces (schema 3) upgrades to workspace `default`: its sandboxes,
/// tombstones and usage belong to it, the first key stays the operator's, the others become
/// admins of `default`.
#[tokio::test]
async fn a_single_tenant_database_upgrades_to_the_default_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burrow.db");
    {
        let old = Store::open_at(&path, 3).await.unwrap();
        assert_eq!(old.schema_version().await.unwrap(), 3);
        let erased = serde_json::to_string(&burrow_types::ErasureRecord::default()).unwrap();
        let usage = serde_json::to_string(&burrow_types::Usage::default()).unwrap();
        old.execute_raw(&format!(
            "INSERT INTO api_keys (id, name, key_sha256, created_at) VALUES \
               ('key_op', 'default', 'h1', '2026-01-01T00:00:00.000Z'), \
               ('key_two', 'ci', 'h2', '2026-01-02T00:00:00.000Z'); \
             INSERT INTO sandboxes (id, template, state, cpus, memory_mb, disk_mb, env_json, \
               labels_json, created_at, updated_at) VALUES \
               ('iold1', 'base', 'running', 1, 512, 4096, '{{}}', '{{}}', \
                '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z'); \
             INSERT INTO tombstones (id, template, created_at, deleted_at, reason, deleted_by, \
               zdr, erased_json, usage_json) VALUES ('igone', 'base', '2026-01-01T00:00:00.000Z', \
               '2026-01-02T00:00:00.000Z', 'api', 'key_op', 0, '{erased}', '{usage}');",
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let store = Store::open(&path).await.unwrap();
    assert!(store.schema_version().await.unwrap() >= 4);
    let default = store.workspace_by_name("default").await.unwrap().unwrap();
    assert_eq!(default.id, "ws_default");
    assert_eq!(default.tier, "unlimited");
    let sandbox = store.get_sandbox("iold1").await.unwrap().unwrap();
    assert_eq!(sandbox.workspace_id, "ws_default");
    let keys = store.list_api_keys(None).await.unwrap();
    assert_eq!(keys[0].id, "key_op");
    assert_eq!(
        keys[0].workspace_id, None,
        "the first key stays the operator's"
    );
    assert_eq!(keys[1].workspace_id.as_deref(), Some("ws_default"));
    assert_eq!(keys[1].workspace_name.as_deref(), Some("default"));
    assert_eq!(keys[1].role, "admin");
    assert_eq!(
        store.operator_key_id().await.unwrap().as_deref(),
        Some("key_op")
    );
    let tombs = store.tombstones(Some("ws_default"), None).await.unwrap();
    assert_eq!(tombs.len(), 1);
    assert_eq!(tombs[0].workspace_id, "ws_default");
}

#[tokio::test]
async fn workspaces_scope_keys_sandboxes_templates_usage_and_audit() {
    let (_dir, store) = open_temp().await;
    let a = store
        .insert_workspace("ws_a", "acme", "free")
        .await
        .unwrap();
    assert!(matches!(
        store.insert_workspace("ws_x", "acme", "free").await,
        Err(burrow_store::StoreError::DuplicateName(_))
    ));
    store
        .insert_workspace("ws_b", "bravo", "team")
        .await
        .unwrap();
    let ka = store
        .insert_api_key("a", "burrow", "bw_a", Some("ws_a"), "member")
        .await
        .unwrap();
    assert_eq!(ka.workspace_name.as_deref(), Some("acme"));
    store
        .insert_api_key("b", "burrow", "bw_b", Some("ws_b"), "viewer")
        .await
        .unwrap();
    assert_eq!(store.list_api_keys(Some("ws_a")).await.unwrap().len(), 1);
    // B cannot revoke A's key: it is "not found" for B.
    assert_eq!(
        store.revoke_api_key(&ka.id, Some("ws_b")).await.unwrap(),
        Revoke::NotFound
    );
    assert!(store.find_api_key("bw_a").await.unwrap().is_some());

    let mut rec = burrow_store::SandboxRecord::new_creating("iaaa".into(), "base".into());
    rec.workspace_id = "ws_a".into();
    store.insert_sandbox(&rec).await.unwrap();
    assert_eq!(
        store.sandbox_workspace("iaaa").await.unwrap().as_deref(),
        Some("ws_a")
    );
    let only_b = burrow_store::SandboxFilter {
        workspace_id: Some("ws_b".into()),
        ..Default::default()
    };
    assert!(store.list_sandboxes(only_b).await.unwrap().is_empty());
    let delta = burrow_types::Usage {
        running_seconds: 5.0,
        active_gb_seconds: 2.5,
        ..Default::default()
    };
    store.add_usage("iaaa", &delta).await.unwrap();
    store.add_usage("iaaa", &delta).await.unwrap();
    assert_eq!(
        store
            .usage_total(Some("ws_a"))
            .await
            .unwrap()
            .running_seconds,
        10.0
    );
    assert_eq!(
        store
            .usage_total(Some("ws_b"))
            .await
            .unwrap()
            .running_seconds,
        0.0
    );
    let rows = store.usage_between(Some("ws_a"), None, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2.active_gb_seconds, 5.0);
    assert!(
        store
            .usage_between(Some("ws_a"), Some("2999-01-01T00:00:00.000Z"), None)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.claim_template_name("py", "ws_a").await.unwrap());
    assert!(!store.claim_template_name("py", "ws_b").await.unwrap());
    assert_eq!(
        store.template_owner("py").await.unwrap().as_deref(),
        Some("ws_a")
    );
    let counts = store.workspace_counts("ws_a").await.unwrap();
    assert_eq!((counts.sandboxes, counts.templates, counts.keys), (1, 1, 1));

    store
        .append_audit(vec![burrow_store::AuditEntry {
            seq: 0,
            at: "2026-06-01T00:00:00.000Z".into(),
            key_id: Some(ka.id.clone()),
            workspace_id: Some("ws_a".into()),
            action: "POST /v1/sandboxes".into(),
            object: None,
            status: 201,
            source: Some("127.0.0.1".into()),
        }])
        .await
        .unwrap();
    let q = |ws: &str| burrow_store::AuditQuery {
        workspace_id: Some(ws.into()),
        since: None,
        limit: 10,
    };
    assert_eq!(store.audit(q("ws_a")).await.unwrap().len(), 1);
    assert!(store.audit(q("ws_b")).await.unwrap().is_empty());
    assert_eq!(
        store.prune_audit("2026-07-01T00:00:00.000Z").await.unwrap(),
        1
    );

    store.delete_sandbox("iaaa").await.unwrap();
    store.remove_template_owner("py").await.unwrap();
    assert!(store.delete_workspace(&a.id).await.unwrap());
    assert!(
        store.find_api_key("bw_a").await.unwrap().is_none(),
        "its keys are revoked"
    );
    assert!(store.workspace_by_name("acme").await.unwrap().is_none());
}

#[tokio::test]
async fn traffic_tokens_belong_to_their_sandbox_and_go_with_it() {
    let (_dir, store) = open_temp().await;
    assert!(!store.set_traffic_token("inope", "t").await.unwrap());
    store
        .insert_sandbox(&SandboxRecord::new_creating("ia".into(), "base".into()))
        .await
        .unwrap();
    store
        .insert_sandbox(&SandboxRecord::new_creating("ib".into(), "base".into()))
        .await
        .unwrap();
    assert_eq!(store.traffic_token("ia").await.unwrap(), None);
    assert!(store.set_traffic_token("ia", "secret-a").await.unwrap());
    assert_eq!(
        store.traffic_token("ia").await.unwrap().as_deref(),
        Some("secret-a")
    );
    assert_eq!(store.traffic_token("ib").await.unwrap(), None);
    store.delete_sandbox("ia").await.unwrap();
    assert_eq!(store.traffic_token("ia").await.unwrap(), None);
}
