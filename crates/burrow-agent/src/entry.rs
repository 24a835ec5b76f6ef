//! EntryInfo for a path: type, Go-style permission string, owner names, mtime, xattr metadata.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use burrow_envd::ConnectError;
use burrow_envd::proto::filesystem::{EntryInfo, FileType};

use crate::users::Names;

/// Extended attributes with this prefix are the entry's metadata (prefix stripped).
pub const METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// Go's `fs.FileMode.String()` for the type character(s) plus `rwxrwxrwx`.
pub fn permissions_string(meta: &std::fs::Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "d"
    } else if ft.is_symlink() {
        "L"
    } else if ft.is_block_device() {
        "D"
    } else if ft.is_char_device() {
        "Dc"
    } else if ft.is_fifo() {
        "p"
    } else if ft.is_socket() {
        "S"
    } else {
        "-"
    };
    let mode = meta.mode();
    let mut out = String::from(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

pub fn read_metadata_xattrs(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 4096];
    let Ok(len) = rustix::fs::llistxattr(path, &mut names) else {
        return out;
    };
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let Some(key) = name.strip_prefix(METADATA_XATTR_PREFIX) else {
            continue;
        };
        let mut value = vec![0u8; 4096];
        if let Ok(n) = rustix::fs::lgetxattr(path, name, &mut value) {
            out.insert(
                key.to_string(),
                String::from_utf8_lossy(&value[..n]).into_owned(),
            );
        }
    }
    out
}

fn rfc3339(meta: &std::fs::Metadata) -> Option<String> {
    let time = chrono::DateTime::from_timestamp(meta.mtime(), meta.mtime_nsec() as u32)?;
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn file_type_of(ft: std::fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else {
        FileType::File
    }
}

/// Block size assumed when the filesystem reports none.
const DEFAULT_BLOCK_SIZE: u64 = 4096;

/// `st_size`, except that a directory reports whole blocks, at least one: what envd reports on
/// E2B's ext4 (4096 for a small directory; E2B's SDK tests expect a directory's size > 0).
/// Sandboxes write to btrfs, whose directory size counts name bytes (0 when empty).
fn reported_size(meta: &std::fs::Metadata) -> i64 {
    let size = meta.size();
    let size = if meta.is_dir() {
        let block = match meta.blksize() {
            0 => DEFAULT_BLOCK_SIZE,
            block => block,
        };
        size.max(1).div_ceil(block).saturating_mul(block)
    } else {
        size
    };
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// Builds the EntryInfo of `path`. A symlink is described by its own metadata, except
/// `type` (the target's type; `FILE_TYPE_SYMLINK` when dangling) and `symlinkTarget`
/// (the absolute resolved target), like current E2B envd.
pub fn entry_info(path: &Path, names: &Names) -> io::Result<EntryInfo> {
    let meta = std::fs::symlink_metadata(path)?;
    let is_symlink = meta.file_type().is_symlink();
    let (file_type, symlink_target) = if is_symlink {
        match (std::fs::metadata(path), std::fs::canonicalize(path)) {
            (Ok(target), Ok(resolved)) => (
                file_type_of(target.file_type()),
                Some(resolved.to_string_lossy().into_owned()),
            ),
            _ => (
                FileType::Symlink,
                std::fs::read_link(path)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned()),
            ),
        }
    } else {
        (file_type_of(meta.file_type()), None)
    };
    Ok(EntryInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        file_type,
        path: path.to_string_lossy().into_owned(),
        size: reported_size(&meta),
        mode: meta.mode() & 0o7777,
        permissions: permissions_string(&meta),
        owner: names.user(meta.uid()),
        group: names.group(meta.gid()),
        modified_time: rfc3339(&meta),
        symlink_target,
        metadata: read_metadata_xattrs(path),
        is_symlink,
    })
}

/// Maps an I/O error on `path` to the Connect error a client can act on.
pub fn io_error(path: &Path, err: &io::Error) -> ConnectError {
    let shown = path.display();
    match err.kind() {
        io::ErrorKind::NotFound => {
            ConnectError::not_found(format!("path '{shown}' does not exist"))
        }
        io::ErrorKind::PermissionDenied => ConnectError::new(
            burrow_envd::Code::PermissionDenied,
            format!("permission denied for '{shown}'"),
        ),
        io::ErrorKind::AlreadyExists => ConnectError::new(
            burrow_envd::Code::AlreadyExists,
            format!("path '{shown}' already exists"),
        ),
        io::ErrorKind::NotADirectory => {
            ConnectError::invalid_argument(format!("a component of '{shown}' is not a directory"))
        }
        _ => ConnectError::internal(format!("'{shown}': {err}")),
    }
}

/// Creates `dir` and missing parents. Called under [`crate::creds::as_user`], so new
/// directories belong to the requesting user and need their permission on the parent.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(p) = cursor {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cursor = p.parent();
    }
    for p in missing.iter().rev() {
        match std::fs::create_dir(p) {
            // Created concurrently: fine, as long as it is a directory.
            Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && p.is_dir()) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entry_info_of_file_dir_and_symlink() {
        let dir = std::env::temp_dir().join(format!("burrow-entry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
        let names = Names::load();
        let f = entry_info(&file, &names).unwrap();
        assert_eq!((f.file_type, f.size, f.mode), (FileType::File, 5, 0o644));
        assert_eq!(f.permissions, "-rw-r--r--");
        assert!(f.modified_time.unwrap().ends_with('Z'));
        let d = entry_info(&dir, &names).unwrap();
        assert_eq!(d.permissions, "drwxr-xr-x");
        let l = entry_info(&dir.join("link"), &names).unwrap();
        assert_eq!((l.file_type, l.is_symlink), (FileType::File, true));
        let resolved = std::fs::canonicalize(&file).unwrap();
        assert_eq!(l.symlink_target.as_deref(), resolved.to_str());
        std::os::unix::fs::symlink("missing", dir.join("dangling")).unwrap();
        let d = entry_info(&dir.join("dangling"), &names).unwrap();
        assert_eq!((d.file_type, d.is_symlink), (FileType::Symlink, true));
        assert_eq!(d.symlink_target.as_deref(), Some("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
