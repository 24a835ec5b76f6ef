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

/// The data dir for tests that need the real `base` template: `BURROW_TEST_DATA_DIR`, or
/// `/var/tmp/burrow-test-data`. Builds `base` there once (later runs reuse it); seeds the
/// debootstrap cache from `/var/lib/burrow/cache` when that has it, so no network is needed.
pub async fn store_with_base() -> TemplateStore {
    static BUILD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let data_dir = std::env::var_os("BURROW_TEST_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/burrow-test-data".into());
    let store = TemplateStore::open(&data_dir).unwrap();
    let _guard = BUILD_LOCK.lock().await;
    if store.get(burrow_templates::BASE_TEMPLATE).is_err() {
        let cache_name = burrow_templates::debootstrap_cache_name(
            burrow_templates::BASE_SUITE,
            burrow_templates::BASE_VARIANT,
            burrow_templates::BASE_PACKAGES,
        );
        let shared = Path::new("/var/lib/burrow/cache").join(&cache_name);
        let ours = store.cache_dir().join(&cache_name);
        if shared.exists() && !ours.exists() && std::fs::hard_link(&shared, &ours).is_err() {
            std::fs::copy(&shared, &ours).unwrap();
        }
        store
            .build_base(|p| eprintln!("[base] {}: {}", p.phase, p.message))
            .await
            .unwrap();
    }
    store
}

use burrow_templates::TemplateStore;
