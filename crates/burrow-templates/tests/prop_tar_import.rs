//! Property tests of rootfs tarball import, the parser a template archive from anyone goes
//! through: random archives of hostile entries (`..`, absolute paths, symlinks and hard links
//! pointing out, device nodes, very long names, duplicates) never write outside the template
//! store, never panic, and leave no half-imported template behind; random bytes never panic.
//!
//! Bounded: 64 archives per property by default; `PROPTEST_CASES=10000` for a longer local run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use burrow_templates::{ImportLimits, TemplateError, TemplateStore};
use common::{gzip, leftovers, no_progress};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

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

/// Where a link points, resolved against the test's scratch root when the archive is written.
#[derive(Debug, Clone)]
enum Target {
    /// A path in the archive's own namespace (may contain `..` or be absolute).
    Inside(String),
    /// The absolute path of the scratch dir outside the store.
    OutsideAbsolute,
    /// `../` repeated, then `outside/victim`: climbs out of the layer.
    OutsideRelative(usize),
}

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Target),
    Hardlink(Target),
    CharDevice,
    BlockDevice,
    Fifo,
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "etc", "bin", "x y", ".wh.a", "é"]).prop_map(String::from),
        1 => prop::sample::select(vec![".wh..wh..opq", ".wh.", ".wh..", ".wh.etc"]).prop_map(String::from),
        2 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just(String::new()),
        1 => "[a-z]{100,180}".prop_map(String::from),
    ]
}

fn entry_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(component(), 1..4)).prop_map(|(absolute, parts)| {
        format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
    })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => entry_path().prop_map(Target::Inside),
        1 => Just(Target::OutsideAbsolute),
        2 => (1usize..8).prop_map(Target::OutsideRelative),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Kind::File),
        3 => Just(Kind::Dir),
        2 => target().prop_map(Kind::Symlink),
        2 => target().prop_map(Kind::Hardlink),
        1 => Just(Kind::CharDevice),
        1 => Just(Kind::BlockDevice),
        1 => Just(Kind::Fifo),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        entry_path(),
        kind(),
        prop_oneof![
            Just(0o644u32),
            Just(0o755),
            Just(0o4755),
            Just(0o000),
            0u32..0o10000
        ],
        prop_oneof![Just(0u64), Just(1000), Just(65534)],
    )
        .prop_map(|(path, kind, mode, uid)| Entry {
            path,
            kind,
            mode,
            uid,
        })
}

/// Writes `value` into a fixed-size header field; a longer value needs a GNU long-name entry.
fn set_field(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// A GNU `././@LongLink` entry carrying a name longer than the header's 100-byte field.
fn long_name_entry(builder: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &[u8]) {
    let mut header = tar::Header::new_gnu();
    set_field(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_entry_type(kind);
    let mut data = name.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &data[..]).unwrap();
}

/// The archive, byte for byte as described (no sanitising: hostile names stay hostile).
fn build_archive(entries: &[Entry], outside: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (kind, data): (tar::EntryType, &[u8]) = match &entry.kind {
            Kind::File(data) => (tar::EntryType::Regular, data),
            Kind::Dir => (tar::EntryType::Directory, b""),
            Kind::Symlink(_) => (tar::EntryType::Symlink, b""),
            Kind::Hardlink(_) => (tar::EntryType::Link, b""),
            Kind::CharDevice => (tar::EntryType::Char, b""),
            Kind::BlockDevice => (tar::EntryType::Block, b""),
            Kind::Fifo => (tar::EntryType::Fifo, b""),
        };
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.uid);
        header.set_mtime(1_700_000_000);
        let name = entry.path.as_bytes();
        if name.len() >= 100 {
            long_name_entry(&mut builder, tar::EntryType::GNULongName, name);
            set_field(&mut header.as_old_mut().name, &name[..99]);
        } else {
            set_field(&mut header.as_old_mut().name, name);
        }
        if let Kind::Symlink(target) | Kind::Hardlink(target) = &entry.kind {
            let target = match target {
                Target::Inside(path) => path.clone(),
                Target::OutsideAbsolute => outside.join("victim").display().to_string(),
                Target::OutsideRelative(depth) => format!("{}outside/victim", "../".repeat(*depth)),
            };
            let target = target.as_bytes();
            if target.len() >= 100 {
                long_name_entry(&mut builder, tar::EntryType::GNULongLink, target);
                set_field(&mut header.as_old_mut().linkname, &target[..99]);
            } else {
                set_field(&mut header.as_old_mut().linkname, target);
            }
        }
        if matches!(entry.kind, Kind::CharDevice | Kind::BlockDevice) {
            header.set_device_major(8).unwrap();
            header.set_device_minor(0).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Every path under `root` (not following symlinks) with its kind, size, inode and content hash.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, u64, u64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, (meta.mode(), meta.len(), meta.ino(), content));
        }
    }
    out
}

/// A scratch root holding the store's data dir, an `outside/` dir with a victim file, and the
/// archive file.
struct Scratch {
    root: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("outside")).unwrap();
        std::fs::write(root.path().join("outside/victim"), b"untouched").unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        Self { root }
    }

    fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
    }

    fn store(&self) -> TemplateStore {
        TemplateStore::open(&self.root.path().join("data")).unwrap()
    }

    fn archive_file(&self, bytes: &[u8]) -> PathBuf {
        let path = self.root.path().join("archive");
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn limits() -> ImportLimits {
    ImportLimits {
        max_total_bytes: 1 << 20,
        max_entries: 1000,
    }
}

/// What must hold after any import attempt: nothing outside the store's templates dir changed,
/// an error left nothing behind, and a success produced a layer with no device nodes and no
/// file shared (hard-linked) with anything outside it.
fn check_confinement(
    scratch: &Scratch,
    store: &TemplateStore,
    before: &BTreeMap<PathBuf, (u32, u64, u64, Vec<u8>)>,
    result: &Result<burrow_templates::Template, TemplateError>,
) -> Result<(), TestCaseError> {
    let templates = store.root().to_path_buf();
    let after = snapshot(scratch.root.path());
    let outside_store = |m: &BTreeMap<PathBuf, _>| -> Vec<PathBuf> {
        m.keys()
            .filter(|p| !p.starts_with(&templates))
            .cloned()
            .collect()
    };
    prop_assert_eq!(
        outside_store(before),
        outside_store(&after),
        "paths outside the store changed"
    );
    for (path, state) in before {
        if !path.starts_with(&templates) {
            prop_assert_eq!(Some(state), after.get(path), "{} changed", path.display());
        }
    }
    prop_assert!(
        leftovers(&templates).is_empty(),
        "leftovers: {:?}",
        leftovers(&templates)
    );
    match result {
        Err(_) => {
            prop_assert!(matches!(store.get("t"), Err(TemplateError::NotFound(_))));
            let names: Vec<_> = std::fs::read_dir(&templates).unwrap().collect();
            prop_assert!(names.is_empty(), "a failed import left {names:?}");
        }
        Ok(template) => {
            let layer = &template.layers[0];
            prop_assert!(layer.starts_with(&templates));
            let outside_inodes: Vec<u64> = after
                .iter()
                .filter(|(p, _)| !p.starts_with(&templates))
                .map(|(_, s)| s.2)
                .collect();
            let mut links_in_layer: HashMap<u64, u64> = HashMap::new();
            for (path, _) in after.iter().filter(|(p, _)| p.starts_with(layer)) {
                let meta = std::fs::symlink_metadata(path).unwrap();
                let kind = meta.file_type();
                prop_assert!(
                    !kind.is_char_device() && !kind.is_block_device(),
                    "device node {} imported",
                    path.display()
                );
                prop_assert!(
                    !outside_inodes.contains(&meta.ino()),
                    "{} links outside",
                    path.display()
                );
                if meta.is_file() {
                    *links_in_layer.entry(meta.ino()).or_default() += 1;
                }
            }
            // Every hard link of a layer file is inside the layer.
            for (path, _) in after.iter().filter(|(p, _)| p.starts_with(layer)) {
                let meta = std::fs::symlink_metadata(path).unwrap();
                if meta.is_file() {
                    prop_assert_eq!(
                        meta.nlink(),
                        links_in_layer[&meta.ino()],
                        "{}",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

fn has_parent_component(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// Random archives of hostile entries, plain and gzipped.
#[test]
fn hostile_archives_never_write_outside_the_store() {
    let mut runner = TestRunner::new(config(64));
    let strategy = (prop::collection::vec(entry(), 1..10), any::<bool>());
    let imported = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |(entries, gzipped)| {
            let scratch = Scratch::new();
            let store = scratch.store();
            let mut archive = build_archive(&entries, &scratch.outside());
            if gzipped {
                archive = gzip(&archive);
            }
            let file = scratch.archive_file(&archive);
            let before = snapshot(scratch.root.path());
            let result = store.import_rootfs_with_limits("t", &file, limits(), no_progress);
            check_confinement(&scratch, &store, &before, &result)?;
            imported.set(imported.get() + u32::from(result.is_ok()));
            // `..` in a path can only be meant to escape: the whole import is refused.
            let traversal = entries.iter().any(|e| {
                has_parent_component(&e.path)
                    || matches!(&e.kind, Kind::Hardlink(Target::Inside(t)) if has_parent_component(t))
                    || matches!(&e.kind, Kind::Hardlink(Target::OutsideRelative(_)))
            });
            if traversal {
                prop_assert!(
                    matches!(result, Err(TemplateError::UnsafeEntry { .. })),
                    "{result:?}"
                );
            }
            Ok(())
        })
        .unwrap();
    // Not only refusals: the properties were checked on layers that were actually written.
    assert!(imported.get() > 0, "no random archive was imported");
}

/// Random bytes (raw, behind a tar or gzip magic, or a cut-short real archive) as an archive:
/// never a panic, and a refusal leaves nothing behind.
#[test]
fn random_bytes_never_panic() {
    let mut runner = TestRunner::new(config(128));
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..4096),
        0u8..4,
        prop::collection::vec(entry(), 0..4),
        any::<usize>(),
    );
    runner
        .run(&strategy, |(bytes, shape, entries, cut)| {
            let scratch = Scratch::new();
            let store = scratch.store();
            let archive = match shape {
                0 => bytes,
                // ustar magic at 257 so the bytes are parsed as tar headers.
                1 => {
                    let mut b = bytes;
                    b.resize(b.len().max(512), 0);
                    b[257..262].copy_from_slice(b"ustar");
                    b
                }
                2 => gzip(&bytes),
                _ => {
                    let real = gzip(&build_archive(&entries, &scratch.outside()));
                    real[..cut % (real.len() + 1)].to_vec()
                }
            };
            let file = scratch.archive_file(&archive);
            let before = snapshot(scratch.root.path());
            let result = store.import_rootfs_with_limits("t", &file, limits(), no_progress);
            check_confinement(&scratch, &store, &before, &result)
        })
        .unwrap();
}

fn write_blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// The hostile entries as the layers of an OCI image (whiteouts of lower entries, opaque markers
/// and malformed whiteout names included): same confinement properties as a rootfs archive.
#[test]
fn hostile_oci_layers_never_write_outside_the_store() {
    let mut runner = TestRunner::new(config(48));
    let strategy =
        prop::collection::vec((prop::collection::vec(entry(), 1..6), any::<bool>()), 1..4);
    let imported = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |layers| {
            let scratch = Scratch::new();
            let store = scratch.store();
            let layout = scratch.root.path().join("layout");
            std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
            std::fs::write(
                layout.join("oci-layout"),
                r#"{"imageLayoutVersion":"1.0.0"}"#,
            )
            .unwrap();
            let descriptors: Vec<serde_json::Value> = layers
                .iter()
                .map(|(entries, gzipped)| {
                    let tar = build_archive(entries, &scratch.outside());
                    if *gzipped {
                        write_blob(
                            &layout,
                            "application/vnd.oci.image.layer.v1.tar+gzip",
                            &gzip(&tar),
                        )
                    } else {
                        write_blob(&layout, "application/vnd.oci.image.layer.v1.tar", &tar)
                    }
                })
                .collect();
            let config = write_blob(
                &layout,
                "application/vnd.oci.image.config.v1+json",
                br#"{"architecture":"amd64","os":"linux","config":{}}"#,
            );
            let manifest =
                serde_json::json!({"schemaVersion": 2, "config": config, "layers": descriptors});
            let manifest = write_blob(
                &layout,
                "application/vnd.oci.image.manifest.v1+json",
                manifest.to_string().as_bytes(),
            );
            let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest]});
            std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
            let before = snapshot(scratch.root.path());
            let result = store.import_oci("t", &layout, None, no_progress);
            imported.set(imported.get() + u32::from(result.is_ok()));
            check_confinement(&scratch, &store, &before, &result)
        })
        .unwrap();
    assert!(imported.get() > 0, "no random image was imported");
}
