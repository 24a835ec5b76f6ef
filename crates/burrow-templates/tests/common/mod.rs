//! Helpers shared by the integration tests: raw tar archives (including hostile ones the `tar`
//! crate's own builder would refuse to write) and scratch data dirs.

#![allow(dead_code)]

use std::path::Path;

pub enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Hardlink(&'a str),
    CharDevice,
    Fifo,
}

pub struct Entry<'a> {
    pub path: &'a str,
    pub kind: Kind<'a>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl<'a> Entry<'a> {
    pub fn new(path: &'a str, kind: Kind<'a>) -> Self {
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        Self {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    pub fn owned(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
}

fn set_bytes(field: &mut [u8], value: &str) {
    assert!(
        value.len() < field.len(),
        "test path too long for a raw header: {value}"
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

/// A tar archive with exactly these names (no sanitising: `..` and absolute paths stay).
pub fn raw_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (kind, data): (tar::EntryType, &[u8]) = match entry.kind {
            Kind::File(data) => (tar::EntryType::Regular, data),
            Kind::Dir => (tar::EntryType::Directory, b""),
            Kind::Symlink(_) => (tar::EntryType::Symlink, b""),
            Kind::Hardlink(_) => (tar::EntryType::Link, b""),
            Kind::CharDevice => (tar::EntryType::Char, b""),
            Kind::Fifo => (tar::EntryType::Fifo, b""),
        };
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(1_700_000_000);
        set_bytes(&mut header.as_old_mut().name, entry.path);
        if let Kind::Symlink(target) | Kind::Hardlink(target) = entry.kind {
            set_bytes(&mut header.as_old_mut().linkname, target);
        }
        if let Kind::CharDevice = entry.kind {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Templates directory entries other than real templates (leftover staging dirs, trash).
pub fn leftovers(templates_root: &Path) -> Vec<String> {
    std::fs::read_dir(templates_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect()
}

pub fn no_progress(_: burrow_templates::BuildProgress) {}

/// The shared data dir holding the real `base` template: `BURROW_TEST_DATA_DIR`, or
/// `/var/tmp/burrow-test-data` (what `scripts/test.sh` builds before the tests run).
pub fn shared_data_dir() -> std::path::PathBuf {
    std::env::var_os("BURROW_TEST_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/burrow-test-data".into())
}

/// A store of the test's own, in a fresh data dir under `/var/tmp` (overlayfs and trusted
/// xattrs need a real filesystem), whose `base` is a symlink to the shared real `base`.
/// Concurrent test processes never build into one store: the shared `base` is built at most
/// once, under a lock held across processes (nextest runs each test as a process), and each
/// test's own builds, staging dirs and leftovers stay in its own dir. The debootstrap cache is
/// seeded by a *copy* of an installed server's tarball: a hard link would let a failed build
/// truncate the operator's file.
pub async fn store_with_base() -> TestStore {
    let shared = shared_data_dir();
    tokio::task::spawn_blocking(move || ensure_shared_base(&shared))
        .await
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("burrow-templates-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let store = TemplateStore::open(dir.path()).unwrap();
    std::os::unix::fs::symlink(
        shared_data_dir()
            .join("templates")
            .join(burrow_templates::BASE_TEMPLATE),
        store.root().join(burrow_templates::BASE_TEMPLATE),
    )
    .unwrap();
    TestStore { store, _dir: dir }
}

/// A test's template store; its data dir is removed on drop.
pub struct TestStore {
    store: TemplateStore,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestStore {
    type Target = TemplateStore;
    fn deref(&self) -> &TemplateStore {
        &self.store
    }
}

fn ensure_shared_base(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let lock = std::fs::File::create(data_dir.join(".base-build.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let store = TemplateStore::open(data_dir).unwrap();
    if store.get(burrow_templates::BASE_TEMPLATE).is_ok() {
        return;
    }
    let cache_name = burrow_templates::debootstrap_cache_name(
        burrow_templates::BASE_SUITE,
        burrow_templates::BASE_VARIANT,
        burrow_templates::BASE_PACKAGES,
    );
    let installed = Path::new("/var/lib/burrow/cache").join(&cache_name);
    let ours = store.cache_dir().join(&cache_name);
    if installed.exists() && !ours.exists() {
        let partial = ours.with_extension("copying");
        std::fs::copy(&installed, &partial).unwrap();
        std::fs::rename(&partial, &ours).unwrap();
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store.build_base(|p| eprintln!("[base] {}: {}", p.phase, p.message)))
        .unwrap();
}

use burrow_templates::TemplateStore;
