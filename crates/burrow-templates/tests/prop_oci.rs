//! Property tests of OCI image layout import: mutated index / manifest / config JSON never panics
//! and never leaves a half-imported template; every blob's digest is verified (any changed byte
//! of any blob the import uses refuses the import).
//!
//! Bounded: 64 cases per property by default; `PROPTEST_CASES=10000` for a longer local run.

mod common;

use std::path::Path;

use burrow_templates::{TemplateError, TemplateStore};
use common::{Entry, Kind, gzip, leftovers, no_progress, raw_tar};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn config(default_cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: None,
        ..Config::default()
    }
}

fn write_blob(layout: &Path, media_type: &str, data: &[u8]) -> Value {
    let hex = hex::encode(Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// The JSON documents of a small valid layout, before they are written.
struct Documents {
    config: Value,
    manifest: Value,
    index: Value,
}

fn valid_documents(layout: &Path) -> (Documents, Vec<Value>) {
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
    ]));
    let upper = raw_tar(&[
        Entry::new("etc/.wh.gone", Kind::File(b"")),
        Entry::new("new", Kind::File(b"new")),
    ]);
    let layers = vec![
        write_blob(
            layout,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &lower,
        ),
        write_blob(layout, "application/vnd.oci.image.layer.v1.tar", &upper),
    ];
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "A=1"], "WorkingDir": "/app", "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let documents = Documents {
        config,
        manifest: json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": layers}),
        index: json!({"schemaVersion": 2, "manifests": []}),
    };
    (documents, layers)
}

/// Writes config and manifest as blobs (so their digests are right) and the index pointing at
/// the manifest.
fn write_documents(layout: &Path, mut documents: Documents) {
    let config = write_blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        documents.config.to_string().as_bytes(),
    );
    if let Some(manifest) = documents.manifest.as_object_mut() {
        manifest.entry("config").or_insert(config);
    }
    let mut descriptor = write_blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        documents.manifest.to_string().as_bytes(),
    );
    descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    if let Some(manifests) = documents
        .index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        && manifests.is_empty()
    {
        manifests.push(descriptor);
    }
    std::fs::write(layout.join("index.json"), documents.index.to_string()).unwrap();
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "sha256:[0-9a-f]{0,70}".prop_map(Value::from),
        "sha256:\\.\\./\\.\\./[a-z]{1,8}".prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    prop::sample::select(vec![
                        "mediaType",
                        "digest",
                        "size",
                        "manifests",
                        "layers",
                        "config",
                        "Env",
                        "WorkingDir",
                        "User",
                        "platform",
                        "annotations",
                    ])
                    .prop_map(String::from),
                    ".{0,6}".prop_map(String::from),
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One mutation of a JSON document: replace the node at a random path, or delete a key there.
#[derive(Debug, Clone)]
struct Mutation {
    path: Vec<usize>,
    replacement: Option<Value>,
}

fn apply(document: &mut Value, mutation: &Mutation) {
    let mut node = document;
    for (depth, step) in mutation.path.iter().enumerate() {
        let last = depth + 1 == mutation.path.len();
        let child_count = match node {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if child_count == 0 {
            break;
        }
        let index = step % child_count;
        if last && mutation.replacement.is_none() {
            match node {
                Value::Object(m) => {
                    let key = m.keys().nth(index).cloned().unwrap();
                    m.remove(&key);
                }
                Value::Array(a) => {
                    a.remove(index);
                }
                _ => {}
            }
            return;
        }
        node = match node {
            Value::Object(m) => m.values_mut().nth(index).unwrap(),
            Value::Array(a) => &mut a[index],
            _ => unreachable!(),
        };
    }
    if let Some(value) = &mutation.replacement {
        *node = value.clone();
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec(any::<usize>(), 0..5),
        prop::option::weighted(0.8, arbitrary_json()),
    )
        .prop_map(|(path, replacement)| Mutation { path, replacement })
}

fn assert_nothing_left(store: &TemplateStore) -> Result<(), TestCaseError> {
    prop_assert!(matches!(store.get("img"), Err(TemplateError::NotFound(_))));
    prop_assert!(
        leftovers(store.root()).is_empty(),
        "{:?}",
        leftovers(store.root())
    );
    Ok(())
}

/// Mutated index, manifest and config documents (written with correct digests, so the parsers
/// get to see them): never a panic; either a valid template or an error with nothing left.
#[test]
fn mutated_documents_never_panic() {
    let mut runner = TestRunner::new(config(64));
    let strategy = (
        prop::collection::vec((0u8..3, mutation()), 1..4),
        prop::option::of(prop::sample::select(vec!["v1", "other"])),
    );
    runner
        .run(&strategy, |(mutations, reference)| {
            let data = tempfile::tempdir().unwrap();
            let layout = tempfile::tempdir().unwrap();
            let (mut documents, _) = valid_documents(layout.path());
            for (which, mutation) in &mutations {
                let document = match which {
                    0 => &mut documents.config,
                    1 => &mut documents.manifest,
                    _ => &mut documents.index,
                };
                apply(document, mutation);
            }
            write_documents(layout.path(), documents);
            let store = TemplateStore::open(data.path()).unwrap();
            match store.import_oci("img", layout.path(), reference, no_progress) {
                Ok(template) => {
                    prop_assert!(template.layers[0].starts_with(store.root()));
                    prop_assert!(
                        template
                            .workdir
                            .as_deref()
                            .is_none_or(|w| w.starts_with('/'))
                    );
                    prop_assert!(template.env.keys().all(|k| !k.is_empty()));
                }
                Err(_) => assert_nothing_left(&store)?,
            }
            Ok(())
        })
        .unwrap();
}

/// Any blob the import reads (config, manifest, either layer), with one byte changed, cut short
/// or grown: the import is refused, naming that blob's digest, and nothing is left behind.
#[test]
fn every_blob_digest_is_verified() {
    let mut runner = TestRunner::new(config(64));
    let strategy = (0usize..4, any::<usize>(), 1u8..=255, 0u8..3);
    runner
        .run(&strategy, |(blob_index, position, xor, how)| {
            let data = tempfile::tempdir().unwrap();
            let layout = tempfile::tempdir().unwrap();
            let (documents, layers) = valid_documents(layout.path());
            write_documents(layout.path(), documents);
            let index: Value =
                serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap())
                    .unwrap();
            let manifest_digest = index["manifests"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string();
            let manifest_path = layout
                .path()
                .join("blobs/sha256")
                .join(&manifest_digest[7..]);
            let manifest: Value =
                serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
            let digests = [
                manifest_digest.clone(),
                manifest["config"]["digest"].as_str().unwrap().to_string(),
                layers[0]["digest"].as_str().unwrap().to_string(),
                layers[1]["digest"].as_str().unwrap().to_string(),
            ];
            let target = &digests[blob_index];
            let path = layout.path().join("blobs/sha256").join(&target[7..]);
            let mut bytes = std::fs::read(&path).unwrap();
            match how {
                0 => {
                    let at = position % bytes.len();
                    bytes[at] ^= xor;
                }
                1 => bytes.truncate(position % bytes.len()),
                _ => bytes.push(xor),
            }
            std::fs::write(&path, &bytes).unwrap();
            let store = TemplateStore::open(data.path()).unwrap();
            let err = store
                .import_oci("img", layout.path(), Some("v1"), no_progress)
                .expect_err("a changed blob must be refused");
            prop_assert!(matches!(err, TemplateError::Invalid(_)), "{err}");
            prop_assert!(err.to_string().contains(target.as_str()), "{err}");
            assert_nothing_left(&store)
        })
        .unwrap();
}

/// Arbitrary bytes as `index.json` or `oci-layout`: never a panic, nothing left behind.
#[test]
fn random_layout_files_never_panic() {
    let mut runner = TestRunner::new(config(64));
    let strategy = (any::<bool>(), prop::collection::vec(any::<u8>(), 0..512));
    runner
        .run(&strategy, |(index_file, bytes)| {
            let data = tempfile::tempdir().unwrap();
            let layout = tempfile::tempdir().unwrap();
            let (documents, _) = valid_documents(layout.path());
            write_documents(layout.path(), documents);
            let file = if index_file {
                "index.json"
            } else {
                "oci-layout"
            };
            std::fs::write(layout.path().join(file), &bytes).unwrap();
            let store = TemplateStore::open(data.path()).unwrap();
            if store
                .import_oci("img", layout.path(), None, no_progress)
                .is_err()
            {
                assert_nothing_left(&store)?;
            }
            Ok(())
        })
        .unwrap();
}
