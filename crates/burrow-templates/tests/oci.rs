//! Importing OCI image layouts built in the test: digests, config, and whiteouts across layers.

mod common;

use std::path::Path;

use burrow_templates::{TemplateError, TemplateStore};
use common::{Entry, Kind, gzip, leftovers, no_progress, raw_tar};
use sha2::{Digest, Sha256};

/// Writes a blob, returning its descriptor JSON.
fn blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let hex = hex::encode(Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// Two layers: the second deletes /etc/gone and makes /dir opaque.
fn write_layout(layout: &Path) -> String {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let lower = gzip(&raw_tar(&[
        Entry::new("etc/", Kind::Dir),
        Entry::new("etc/keep", Kind::File(b"keep")),
        Entry::new("etc/gone", Kind::File(b"gone")),
        Entry::new("dir/a", Kind::File(b"a")),
        Entry::new("dir/sub/b", Kind::File(b"b")),
        Entry::new("app/run.sh", Kind::File(b"#!/bin/sh")).mode(0o755),
    ]));
    let upper = raw_tar(&[
        Entry::new("dir/c", Kind::File(b"c")),
        Entry::new("etc/.wh.gone", Kind::File(b"")),
        Entry::new("dir/.wh..wh..opq", Kind::File(b"")),
        Entry::new("new", Kind::File(b"new")),
    ]);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "APP_MODE=test"], "WorkingDir": "/app", "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let config = blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let layers = vec![
        blob(
            layout,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &lower,
        ),
        blob(layout, "application/vnd.oci.image.layer.v1.tar", &upper),
    ];
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers});
    let mut manifest = blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    manifest["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    layers[0]["digest"].as_str().unwrap().to_string()
}

#[test]
fn imports_layers_applying_whiteouts_and_config() {
    let data = tempfile::tempdir().unwrap();
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path());
    let store = TemplateStore::open(data.path()).unwrap();
    let template = store
        .import_oci("img", layout.path(), Some("v1"), no_progress)
        .unwrap();
    let layer = &template.layers[0];
    assert_eq!(template.source, "oci");
    assert_eq!(template.env["APP_MODE"], "test");
    assert_eq!(template.env["PATH"], "/usr/bin:/bin");
    assert_eq!(template.workdir.as_deref(), Some("/app"));
    assert_eq!(template.user, "1000");
    assert_eq!(
        std::fs::read_to_string(layer.join("etc/keep")).unwrap(),
        "keep"
    );
    assert!(
        !layer.join("etc/gone").exists(),
        "whiteout deletes the lower file"
    );
    assert!(
        !layer.join("dir/a").exists() && !layer.join("dir/sub").exists(),
        "opaque dir hides lower contents"
    );
    assert_eq!(
        std::fs::read_to_string(layer.join("dir/c")).unwrap(),
        "c",
        "same-layer entries survive"
    );
    assert_eq!(std::fs::read_to_string(layer.join("new")).unwrap(), "new");
    assert!(!layer.join("etc/.wh.gone").exists() && !layer.join("dir/.wh..wh..opq").exists());
    // The only image is also found without a reference.
    store
        .import_oci("img2", layout.path(), None, no_progress)
        .unwrap();
}

#[test]
fn refuses_corrupt_blobs_and_unknown_references() {
    let data = tempfile::tempdir().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let lower_digest = write_layout(layout.path());
    let store = TemplateStore::open(data.path()).unwrap();

    let err = store
        .import_oci("img", layout.path(), Some("v2"), no_progress)
        .unwrap_err();
    assert!(
        err.to_string().contains("no image 'v2'") && err.to_string().contains("v1"),
        "{err}"
    );

    // Same size, different content: the digest check must catch it.
    let blob = layout
        .path()
        .join("blobs/sha256")
        .join(lower_digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let err = store
        .import_oci("img", layout.path(), Some("v1"), no_progress)
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(matches!(store.get("img"), Err(TemplateError::NotFound(_))));
    assert!(leftovers(store.root()).is_empty());

    let not_a_layout = tempfile::tempdir().unwrap();
    let err = store
        .import_oci("img", not_a_layout.path(), None, no_progress)
        .unwrap_err();
    assert!(err.to_string().contains("oci-layout"), "{err}");
}
