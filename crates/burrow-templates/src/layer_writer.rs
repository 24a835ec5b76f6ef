//! Writes entries into a layer directory without ever following a symlink.
//!
//! Every path is first reduced to plain relative components (`..` is refused, a leading `/` is
//! dropped); each parent is then opened component by component with `O_NOFOLLOW | O_DIRECTORY`
//! relative to the layer's root fd, and the final name is created relative to that parent fd. A
//! symlink (absolute or relative) in the way therefore fails with a clear error instead of
//! redirecting the write outside the layer.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timestamps, Uid};
use rustix::io::Errno;

use crate::TemplateError;
use crate::error::IoContext;

/// Limits for untrusted input.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// Total bytes of file contents.
    pub max_total_bytes: u64,
    /// Number of entries (files, dirs, links, …).
    pub max_entries: u64,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_total_bytes: 64 << 30,
            max_entries: 5_000_000,
        }
    }
}

/// Ownership, permission bits (including setuid/setgid/sticky) and mtime of an entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, if known.
    pub mtime: Option<i64>,
}

impl EntryMeta {
    /// root-owned with `mode`.
    pub fn root(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
            mtime: None,
        }
    }
}

/// A path reduced to plain components; empty means the layer root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(PathBuf);

impl RelPath {
    /// Sanitises an untrusted path: drops a leading `/` and `.` components, refuses `..` (it
    /// could only be meant to escape) and NUL bytes.
    pub fn parse(raw: &Path) -> Result<Self, TemplateError> {
        use std::os::unix::ffi::OsStrExt;
        if raw.as_os_str().as_bytes().contains(&0) {
            return Err(TemplateError::unsafe_entry(
                raw.display(),
                "path contains a NUL byte",
            ));
        }
        let mut clean = PathBuf::new();
        for component in raw.components() {
            match component {
                Component::Normal(part) => clean.push(part),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(TemplateError::unsafe_entry(
                        raw.display(),
                        "path contains '..' (path traversal)",
                    ));
                }
                Component::Prefix(_) => {
                    return Err(TemplateError::unsafe_entry(
                        raw.display(),
                        "unsupported path prefix",
                    ));
                }
            }
        }
        Ok(Self(clean))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }

    pub fn join(&self, name: &std::ffi::OsStr) -> Self {
        Self(self.0.join(name))
    }

    /// Parent path and final name; `None` for the root.
    fn split(&self) -> Option<(&Path, &std::ffi::OsStr)> {
        Some((self.0.parent()?, self.0.file_name()?))
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0.display())
    }
}

/// Writes entries into one layer directory.
pub struct LayerWriter {
    root: OwnedFd,
    limits: ImportLimits,
    bytes_written: u64,
    entries: u64,
}

const MISSING_PARENT: &str = "a parent directory is missing";

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl LayerWriter {
    /// Opens (creating if needed) the layer directory `root`.
    pub fn open(root: &Path, limits: ImportLimits) -> Result<Self, TemplateError> {
        std::fs::create_dir_all(root).ctx(|| format!("creating {}", root.display()))?;
        let fd = rustix::fs::open(root, DIR_FLAGS, Mode::empty())
            .ctx(|| format!("opening {}", root.display()))?;
        Ok(Self {
            root: fd,
            limits,
            bytes_written: 0,
            entries: 0,
        })
    }

    fn count_entry(&mut self, path: &RelPath) -> Result<(), TemplateError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(TemplateError::unsafe_entry(
                path,
                format!("more than {} entries", self.limits.max_entries),
            ));
        }
        Ok(())
    }

    /// Opens directory `dir` (relative), creating missing components root-owned 0755 when
    /// `create` is set. Refuses symlinks and non-directories on the way.
    fn open_dir(
        &self,
        dir: &Path,
        create: bool,
        entry: &RelPath,
    ) -> Result<OwnedFd, TemplateError> {
        let mut current = rustix::io::dup(&self.root).ctx(|| "duplicating layer fd".to_string())?;
        for component in dir.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            let opened = match rustix::fs::openat(&current, name, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&current, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(TemplateError::io(
                                format!("creating parent of {entry}"),
                                e,
                            ));
                        }
                    }
                    rustix::fs::openat(&current, name, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            current = match opened {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(TemplateError::unsafe_entry(
                        entry,
                        format!(
                            "'{}' on its path is a symlink or not a directory; refusing to write through it",
                            Path::new(name).display()
                        ),
                    ));
                }
                Err(Errno::NOENT) => {
                    return Err(TemplateError::unsafe_entry(
                        entry,
                        "a parent directory is missing",
                    ));
                }
                Err(e) => return Err(TemplateError::io(format!("opening parent of {entry}"), e)),
            };
        }
        Ok(current)
    }

    /// Parent fd and final name of `path`, with the final name cleared out of the way unless it
    /// is a directory and `keep_dir` is set. Returns whether a directory was kept.
    fn prepare(
        &mut self,
        path: &RelPath,
        keep_dir: bool,
    ) -> Result<(OwnedFd, std::ffi::OsString, bool), TemplateError> {
        self.count_entry(path)?;
        let (parent, name) = path.split().ok_or_else(|| {
            TemplateError::unsafe_entry(path, "only a directory can replace the root")
        })?;
        let parent_fd = self.open_dir(parent, true, path)?;
        let name = name.to_os_string();
        let kept = match rustix::fs::statat(&parent_fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
                if is_dir && keep_dir {
                    true
                } else {
                    remove_at(parent_fd.as_fd(), &name)
                        .ctx(|| format!("replacing existing {path}"))?;
                    false
                }
            }
            Err(Errno::NOENT) => false,
            Err(e) => return Err(TemplateError::io(format!("checking {path}"), e)),
        };
        Ok((parent_fd, name, kept))
    }

    /// Creates (or updates the metadata of) a directory.
    pub fn dir(&mut self, path: &RelPath, meta: EntryMeta) -> Result<(), TemplateError> {
        let fd = if path.is_root() {
            self.count_entry(path)?;
            rustix::io::dup(&self.root).ctx(|| "duplicating layer fd".to_string())?
        } else {
            let (parent, name, kept) = self.prepare(path, true)?;
            if !kept {
                rustix::fs::mkdirat(&parent, &name, Mode::from_raw_mode(0o700))
                    .ctx(|| format!("creating {path}"))?;
            }
            rustix::fs::openat(&parent, &name, DIR_FLAGS, Mode::empty())
                .ctx(|| format!("opening {path}"))?
        };
        apply_meta_fd(&fd, meta).ctx(|| format!("setting owner/mode of {path}"))
    }

    /// Creates a regular file with the contents of `reader` (exactly `size` bytes expected).
    pub fn file(
        &mut self,
        path: &RelPath,
        meta: EntryMeta,
        reader: &mut dyn Read,
        size: u64,
    ) -> Result<(), TemplateError> {
        if self.bytes_written.saturating_add(size) > self.limits.max_total_bytes {
            return Err(TemplateError::unsafe_entry(
                path,
                format!(
                    "contents exceed the limit of {} bytes",
                    self.limits.max_total_bytes
                ),
            ));
        }
        let (parent, name, _) = self.prepare(path, false)?;
        let fd = rustix::fs::openat(
            &parent,
            &name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .ctx(|| format!("creating {path}"))?;
        let mut file = std::fs::File::from(fd);
        let copied =
            std::io::copy(&mut reader.take(size), &mut file).ctx(|| format!("writing {path}"))?;
        if copied != size {
            return Err(TemplateError::Invalid(format!(
                "{path}: expected {size} bytes, got {copied} (truncated input?)"
            )));
        }
        file.flush().ctx(|| format!("writing {path}"))?;
        self.bytes_written += copied;
        apply_meta_fd(&file, meta).ctx(|| format!("setting owner/mode of {path}"))
    }

    /// Creates a symlink. The target is stored as is (absolute targets resolve inside the
    /// sandbox's own root at run time) and never followed here.
    pub fn symlink(
        &mut self,
        path: &RelPath,
        target: &Path,
        meta: EntryMeta,
    ) -> Result<(), TemplateError> {
        let (parent, name, _) = self.prepare(path, false)?;
        rustix::fs::symlinkat(target, &parent, &name).ctx(|| format!("creating symlink {path}"))?;
        rustix::fs::chownat(
            &parent,
            &name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("setting owner of {path}"))?;
        set_mtime_at(&parent, &name, meta.mtime).ctx(|| format!("setting mtime of {path}"))
    }

    /// Creates a hard link to `target`, an entry already written inside this layer.
    pub fn hardlink(&mut self, path: &RelPath, target: &RelPath) -> Result<(), TemplateError> {
        let (target_parent, target_name) = target
            .split()
            .ok_or_else(|| TemplateError::unsafe_entry(path, "hard link to the root directory"))?;
        let not_earlier = || {
            TemplateError::unsafe_entry(
                path,
                format!("hard link target {target} is not an earlier entry of the archive"),
            )
        };
        let target_dir = match self.open_dir(target_parent, false, path) {
            Err(TemplateError::UnsafeEntry { reason, .. }) if reason == MISSING_PARENT => {
                return Err(not_earlier());
            }
            other => other?,
        };
        match rustix::fs::statat(&target_dir, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(TemplateError::unsafe_entry(
                    path,
                    "hard link to a directory",
                ));
            }
            Ok(_) => {}
            Err(_) => return Err(not_earlier()),
        }
        if path == target {
            return Ok(());
        }
        let (parent, name, _) = self.prepare(path, false)?;
        rustix::fs::linkat(&target_dir, target_name, &parent, &name, AtFlags::empty())
            .ctx(|| format!("creating hard link {path} -> {target}"))
    }

    /// Creates a named pipe.
    pub fn fifo(&mut self, path: &RelPath, meta: EntryMeta) -> Result<(), TemplateError> {
        self.special(path, FileType::Fifo, 0, meta)
    }

    fn special(
        &mut self,
        path: &RelPath,
        kind: FileType,
        dev: u64,
        meta: EntryMeta,
    ) -> Result<(), TemplateError> {
        let (parent, name, _) = self.prepare(path, false)?;
        rustix::fs::mknodat(
            &parent,
            &name,
            kind,
            Mode::from_raw_mode(meta.mode & 0o7777),
            dev,
        )
        .ctx(|| format!("creating {path}"))?;
        // Opening a fifo would block; chown/chmod it by name (just created, cannot be a symlink).
        rustix::fs::chownat(
            &parent,
            &name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("setting owner of {path}"))?;
        rustix::fs::chmodat(
            &parent,
            &name,
            Mode::from_raw_mode(meta.mode & 0o7777),
            AtFlags::empty(),
        )
        .ctx(|| format!("setting mode of {path}"))?;
        set_mtime_at(&parent, &name, meta.mtime).ctx(|| format!("setting mtime of {path}"))
    }

    /// Deletes `path` (recursively) if present; missing is fine.
    pub fn remove(&mut self, path: &RelPath) -> Result<(), TemplateError> {
        let Some((parent, name)) = path.split() else {
            return self.clear_dir(&RelPath(PathBuf::new()), |_| false);
        };
        let parent_fd = match self.open_dir(parent, false, path) {
            Ok(fd) => fd,
            // Nothing to delete below a missing (or non-directory) parent.
            Err(TemplateError::UnsafeEntry { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match remove_at(parent_fd.as_fd(), name) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(TemplateError::io(format!("deleting {path}"), e)),
        }
    }

    /// Deletes the children of directory `dir` for which `keep` is false.
    pub fn clear_dir(
        &mut self,
        dir: &RelPath,
        keep: impl Fn(&RelPath) -> bool,
    ) -> Result<(), TemplateError> {
        let fd = match self.open_dir(dir.as_path(), false, dir) {
            Ok(fd) => fd,
            Err(TemplateError::UnsafeEntry { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in list_dir(fd.as_fd()).ctx(|| format!("listing {dir}"))? {
            if !keep(&dir.join(&name)) {
                remove_at(fd.as_fd(), &name).ctx(|| format!("deleting {}", dir.join(&name)))?;
            }
        }
        Ok(())
    }
}

/// Names in a directory, without `.` and `..`.
fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<std::ffi::OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `name` in `dir`, recursing into directories without following symlinks.
fn remove_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> rustix::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        other => return other,
    }
    let child = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    for entry in list_dir(child.as_fd())? {
        remove_at(child.as_fd(), &entry)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// chown then chmod (chown clears setuid/setgid, so the mode must come second), then mtime.
fn apply_meta_fd(fd: impl AsFd, meta: EntryMeta) -> rustix::io::Result<()> {
    rustix::fs::fchown(
        &fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode & 0o7777))?;
    if let Some(mtime) = meta.mtime {
        rustix::fs::futimens(&fd, &timestamps(mtime))?;
    }
    Ok(())
}

fn set_mtime_at(
    dir: impl AsFd,
    name: &std::ffi::OsStr,
    mtime: Option<i64>,
) -> rustix::io::Result<()> {
    match mtime {
        Some(mtime) => {
            rustix::fs::utimensat(dir, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW)
        }
        None => Ok(()),
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let time = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// The xattrs that make a directory opaque. Both are set: `trusted.` is what a root-mounted
/// overlay reads, `user.` what an overlay mounted with `userxattr` inside a user namespace reads.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

#[cfg(test)]
pub fn set_opaque(fd: impl AsFd) -> rustix::io::Result<()> {
    for name in OPAQUE_XATTRS {
        rustix::fs::fsetxattr(&fd, name, b"y", rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sanitises_paths() {
        assert_eq!(
            RelPath::parse(Path::new("/abs/path")).unwrap().as_path(),
            Path::new("abs/path")
        );
        assert_eq!(
            RelPath::parse(Path::new("./a/./b/")).unwrap().as_path(),
            Path::new("a/b")
        );
        assert!(RelPath::parse(Path::new("./")).unwrap().is_root());
        assert!(RelPath::parse(Path::new("../../etc/passwd")).is_err());
        assert!(RelPath::parse(Path::new("a/../../b")).is_err());
    }

    #[test]
    fn refuses_to_write_through_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let layer = tempfile::tempdir().unwrap();
        let mut writer = LayerWriter::open(layer.path(), ImportLimits::default()).unwrap();
        let link = RelPath::parse(Path::new("escape")).unwrap();
        writer
            .symlink(&link, outside.path(), EntryMeta::root(0o777))
            .unwrap();
        let through = RelPath::parse(Path::new("escape/pwned")).unwrap();
        let err = writer
            .file(&through, EntryMeta::root(0o644), &mut &b"x"[..], 1)
            .unwrap_err();
        assert!(matches!(err, TemplateError::UnsafeEntry { .. }), "{err}");
        assert!(!outside.path().join("pwned").exists());
        // The symlink itself stays a symlink to the (absolute) target.
        assert_eq!(
            std::fs::read_link(layer.path().join("escape")).unwrap(),
            outside.path()
        );
    }

    #[test]
    fn replacing_a_symlink_does_not_touch_its_target() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "keep").unwrap();
        let layer = tempfile::tempdir().unwrap();
        let mut writer = LayerWriter::open(layer.path(), ImportLimits::default()).unwrap();
        let path = RelPath::parse(Path::new("f")).unwrap();
        writer
            .symlink(
                &path,
                &outside.path().join("victim"),
                EntryMeta::root(0o777),
            )
            .unwrap();
        writer
            .file(&path, EntryMeta::root(0o644), &mut &b"new"[..], 3)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_to_string(layer.path().join("f")).unwrap(),
            "new"
        );
    }

    #[test]
    fn size_and_entry_limits() {
        let layer = tempfile::tempdir().unwrap();
        let limits = ImportLimits {
            max_total_bytes: 10,
            max_entries: 2,
        };
        let mut writer = LayerWriter::open(layer.path(), limits).unwrap();
        let big = RelPath::parse(Path::new("big")).unwrap();
        assert!(
            writer
                .file(&big, EntryMeta::root(0o644), &mut &[0u8; 11][..], 11)
                .is_err()
        );
        assert!(!layer.path().join("big").exists());
        for name in ["a", "b"] {
            writer
                .dir(
                    &RelPath::parse(Path::new(name)).unwrap(),
                    EntryMeta::root(0o755),
                )
                .unwrap();
        }
        assert!(
            writer
                .dir(
                    &RelPath::parse(Path::new("c")).unwrap(),
                    EntryMeta::root(0o755)
                )
                .is_err()
        );
    }

    #[test]
    fn keeps_setuid_and_ownership() {
        use std::os::unix::fs::MetadataExt;
        let layer = tempfile::tempdir().unwrap();
        let mut writer = LayerWriter::open(layer.path(), ImportLimits::default()).unwrap();
        let path = RelPath::parse(Path::new("usr/bin/sudo")).unwrap();
        let meta = EntryMeta {
            mode: 0o4755,
            uid: 0,
            gid: 0,
            mtime: Some(1_000_000),
        };
        writer.file(&path, meta, &mut &b"#!"[..], 2).unwrap();
        let owned = RelPath::parse(Path::new("home/user/x")).unwrap();
        writer
            .file(
                &owned,
                EntryMeta {
                    mode: 0o600,
                    uid: 1000,
                    gid: 1000,
                    mtime: None,
                },
                &mut &b""[..],
                0,
            )
            .unwrap();
        let sudo = std::fs::metadata(layer.path().join("usr/bin/sudo")).unwrap();
        assert_eq!(sudo.mode() & 0o7777, 0o4755);
        assert_eq!(sudo.mtime(), 1_000_000);
        let x = std::fs::metadata(layer.path().join("home/user/x")).unwrap();
        assert_eq!((x.uid(), x.gid(), x.mode() & 0o777), (1000, 1000, 0o600));
    }
}
