//! Small filesystem helpers: disk usage, unique scratch names, tearing down build dirs safely.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::TemplateError;
use crate::error::IoContext;

/// Bytes on disk under `path` (allocated blocks), counting hard-linked inodes once and never
/// following symlinks.
pub fn disk_usage(path: &Path) -> Result<u64, TemplateError> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(current) = stack.pop() {
        let meta =
            std::fs::symlink_metadata(&current).ctx(|| format!("reading {}", current.display()))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&current).ctx(|| format!("listing {}", current.display()))?
            {
                let entry = entry.ctx(|| format!("listing {}", current.display()))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// A name no other build in this process or another one uses: `<prefix>-<pid>-<nanos>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// Mount points at or below `path` (deepest first), from `/proc/self/mountinfo`.
fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(path))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| matches!(b, b'0'..=b'7'))
        {
            let octal = &bytes[i + 1..i + 4];
            out.push(((octal[0] - b'0') << 6) | ((octal[1] - b'0') << 3) | (octal[2] - b'0'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes a build dir: first detaches anything still mounted below it (a failed debootstrap can
/// leave `/proc` or `/sys` mounted in the target; deleting through those would touch the host).
pub fn remove_tree(path: &Path) -> Result<(), TemplateError> {
    for mount in mounts_below(path) {
        rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH)
            .ctx(|| format!("unmounting {}", mount.display()))?;
    }
    if !mounts_below(path).is_empty() {
        return Err(TemplateError::BuildFailed(format!(
            "{} still has mounts below it; not deleting it",
            path.display()
        )));
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TemplateError::io(format!("removing {}", path.display()), e)),
    }
}

/// Removes `path` when dropped unless [`ScratchDir::keep`] was called: cleans up half-built
/// templates on every error path.
pub struct ScratchDir {
    path: PathBuf,
    armed: bool,
}

impl ScratchDir {
    pub fn create(path: PathBuf) -> Result<Self, TemplateError> {
        std::fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
        Ok(Self { path, armed: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The dir has been renamed away (or must stay): do not delete on drop.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = remove_tree(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not clean up build dir");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/x\"), r"/x\");
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![7u8; 64 * 1024]).unwrap();
        let single = disk_usage(dir.path()).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_usage(dir.path()).unwrap(), single);
        assert!(single >= 64 * 1024);
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
