//! Build contexts uploaded by (untrusted) API clients: a tar of the files COPY steps name, or of an
//! OCI image layout. They are checked entry by entry before anything is written, then extracted
//! through [`LayerWriter`] (which never follows a symlink), and COPY sources are resolved inside
//! the extracted tree without following symlinks either.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::TemplateError;
use crate::layer_writer::{ImportLimits, LayerWriter, RelPath};
use crate::tar_import::{Whiteouts, extract_tar, open_archive};

/// What an uploaded archive holds, which decides the symlinks it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    /// Files for COPY steps: symlinks must point inside the context (relative, never above it).
    Copy,
    /// An OCI image layout, whose files the importer opens by path: no symlinks at all.
    OciLayout,
}

/// Checks every entry of the archive at `archive` and extracts it into `dest` (created; should be
/// a fresh directory only the server can reach). Refuses absolute paths, `..`, hard links that
/// leave the context, and symlinks `kind` does not allow, naming the entry.
pub fn extract_context(
    archive: &Path,
    dest: &Path,
    kind: ContextKind,
    limits: ImportLimits,
) -> Result<u64, TemplateError> {
    check_context(archive, kind, limits)?;
    let mut writer = LayerWriter::open(dest, limits)?;
    extract_tar(
        open_archive(archive)?,
        &mut writer,
        Whiteouts::Literal,
        &|message: &str| tracing::debug!(message, "build context"),
    )
}

/// The first pass: every entry's path and link target, before anything is written.
fn check_context(
    archive: &Path,
    kind: ContextKind,
    limits: ImportLimits,
) -> Result<(), TemplateError> {
    // A malformed archive is the client's mistake (400), not the server's.
    let unreadable = |e: std::io::Error| {
        TemplateError::Invalid(format!("the upload is not a readable tar: {e}"))
    };
    let mut tar = tar::Archive::new(open_archive(archive)?);
    // Bounded here too: a gzip bomb must not keep this pass reading for hours.
    let (mut bytes, mut entries) = (0u64, 0u64);
    for entry in tar.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        bytes = bytes.saturating_add(entry.size());
        entries += 1;
        if bytes > limits.max_total_bytes || entries > limits.max_entries {
            return Err(TemplateError::Invalid(format!(
                "the build context is over the limit of {} bytes or {} entries once unpacked",
                limits.max_total_bytes, limits.max_entries
            )));
        }
        let kind_of_entry = entry.header().entry_type();
        if matches!(
            kind_of_entry,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            continue;
        }
        let raw = entry.path_bytes();
        let path = Path::new(OsStr::from_bytes(&raw));
        let shown = path.display();
        if path.has_root() {
            return Err(TemplateError::unsafe_entry(
                shown,
                "absolute path in the build context (entries must be relative to its root)",
            ));
        }
        let rel = RelPath::parse(path)?;
        let link = entry.link_name_bytes();
        let link = link.as_deref().map(|l| Path::new(OsStr::from_bytes(l)));
        match (kind_of_entry, link) {
            (EntryType::Link, Some(target)) => {
                if target.has_root() {
                    return Err(TemplateError::unsafe_entry(
                        shown,
                        "hard link to an absolute path",
                    ));
                }
                RelPath::parse(target)?;
            }
            (EntryType::Symlink, Some(target)) => match kind {
                ContextKind::OciLayout => {
                    return Err(TemplateError::unsafe_entry(
                        shown,
                        "symlink in an OCI layout (layouts have none; pack the files themselves)",
                    ));
                }
                ContextKind::Copy => {
                    if !stays_inside(rel.as_path().parent().unwrap_or(Path::new("")), target) {
                        return Err(TemplateError::unsafe_entry(
                            shown,
                            format!(
                                "symlink to '{}' points outside the build context",
                                target.display()
                            ),
                        ));
                    }
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Whether `target`, read from directory `dir` (relative to the context root), stays inside the
/// root: not absolute, and no `..` climbing above it. Lexical only; the server never follows
/// symlinks in a context (see [`resolve_in_context`]), this keeps contexts self-contained.
pub fn stays_inside(dir: &Path, target: &Path) -> bool {
    if target.has_root() || target.as_os_str().is_empty() {
        return false;
    }
    let mut depth = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

/// The path of COPY source `src` inside the extracted context `root`. `src` must be relative
/// without `..`; every directory on the way must be a real directory (never a symlink), so the
/// result cannot lead out of `root`. The source itself may be a symlink: COPY copies the link.
pub fn resolve_in_context(root: &Path, src: &str) -> Result<PathBuf, TemplateError> {
    let raw = Path::new(src);
    if raw.has_root() || src.contains('\0') {
        return Err(TemplateError::Invalid(format!(
            "COPY source '{src}' must be a relative path inside the build context"
        )));
    }
    let rel = RelPath::parse(raw).map_err(|_| {
        TemplateError::Invalid(format!(
            "COPY source '{src}' must not contain '..': it names a path inside the build context"
        ))
    })?;
    let mut path = root.to_path_buf();
    let components: Vec<_> = rel.as_path().components().collect();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TemplateError::Invalid(format!(
                    "COPY source '{src}' is not in the uploaded build context"
                ))
            } else {
                TemplateError::io(format!("reading COPY source '{src}'"), e)
            }
        })?;
        let last = i + 1 == components.len();
        if !last && !meta.is_dir() {
            return Err(TemplateError::Invalid(format!(
                "COPY source '{src}': '{}' on its path is a symlink or not a directory",
                component.as_os_str().display()
            )));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_must_stay_inside() {
        let ok = |dir: &str, target: &str| stays_inside(Path::new(dir), Path::new(target));
        assert!(ok("", "a/b"));
        assert!(ok("a/b", "../c"));
        assert!(ok("a/b", "../../c"));
        assert!(!ok("a/b", "../../../c"));
        assert!(!ok("", "../x"));
        assert!(!ok("a", "/etc/passwd"));
        assert!(!ok("a", ""));
    }

    #[test]
    fn contexts_over_the_limits_are_refused_before_extraction() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("ctx.tar");
        let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        for name in ["a", "b"] {
            let mut header = tar::Header::new_gnu();
            header.set_size(600);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, name, &[0u8; 600][..]).unwrap();
        }
        tar.into_inner().unwrap();
        let dest = dir.path().join("out");
        let limits = |max_total_bytes, max_entries| ImportLimits {
            max_total_bytes,
            max_entries,
        };
        let err = extract_context(&archive, &dest, ContextKind::Copy, limits(1000, 10))
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
        assert!(!dest.exists(), "nothing extracted");
        assert!(extract_context(&archive, &dest, ContextKind::Copy, limits(1000, 1)).is_err());
        assert_eq!(
            extract_context(&archive, &dest, ContextKind::Copy, limits(2000, 10)).unwrap(),
            2
        );
    }

    #[test]
    fn resolves_copy_sources_without_following_symlinks() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dir")).unwrap();
        std::fs::write(root.path().join("dir/file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("up")).unwrap();
        assert_eq!(
            resolve_in_context(root.path(), "dir/file").unwrap(),
            root.path().join("dir/file")
        );
        assert_eq!(
            resolve_in_context(root.path(), "./dir").unwrap(),
            root.path().join("dir")
        );
        // The link itself may be copied, never walked through.
        assert!(resolve_in_context(root.path(), "up").is_ok());
        for bad in ["up/passwd", "/etc/passwd", "../x", "dir/../../x", "missing"] {
            assert!(resolve_in_context(root.path(), bad).is_err(), "{bad}");
        }
    }
}
