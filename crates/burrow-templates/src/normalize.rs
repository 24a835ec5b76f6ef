//! Turns a RUN step's overlay upper dir into a layer with canonical ownership.
//!
//! Files in the upper dir are owned by host ids `uid_base + n` (the sandbox's user namespace);
//! the layer must hold `n`. Overlay bookkeeping xattrs are dropped, except that an opaque dir
//! stays opaque (written in both the `trusted.` and `user.` forms; see [`OPAQUE_XATTRS`]).

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Gid, Uid};

use crate::TemplateError;
use crate::error::IoContext;
use crate::layer_writer::OPAQUE_XATTRS;

/// Size of a sandbox's id range.
pub const ID_RANGE: u32 = 0x1_0000;

/// Maps a host id of the sandbox back to its in-sandbox id.
pub fn canonical_id(host_id: u32, uid_base: u32) -> Option<u32> {
    host_id.checked_sub(uid_base).filter(|id| *id < ID_RANGE)
}

/// Rewrites ownership under `upper` from host ids to canonical ids, in place, never following
/// symlinks. Fails on ids outside `[uid_base, uid_base + 65536)`.
pub fn normalize_upper(upper: &Path, uid_base: u32) -> Result<(), TemplateError> {
    let mut seen = HashSet::new();
    let mut stack = vec![upper.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta =
            std::fs::symlink_metadata(&path).ctx(|| format!("reading {}", path.display()))?;
        if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let shown = path
            .strip_prefix(upper)
            .unwrap_or(&path)
            .display()
            .to_string();
        let is_whiteout = meta.file_type().is_char_device_whiteout(meta.rdev());
        let map = |id: u32, what: &str| -> Result<u32, TemplateError> {
            // Overlay may create whiteouts with the mounter's (init namespace) root ids.
            if is_whiteout && id == 0 {
                return Ok(0);
            }
            canonical_id(id, uid_base).ok_or_else(|| {
                TemplateError::BuildFailed(format!(
                    "/{shown} is owned by host {what} {id}, outside the sandbox's range starting at {uid_base}"
                ))
            })
        };
        let (uid, gid) = (map(meta.uid(), "uid")?, map(meta.gid(), "gid")?);
        rustix::fs::chownat(
            rustix::fs::CWD,
            &path,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("changing owner of /{shown}"))?;
        if !meta.file_type().is_symlink() {
            // chown cleared setuid/setgid: put the mode back.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .ctx(|| format!("restoring mode of /{shown}"))?;
        }
        // On every entry: a sandbox can set `user.overlay.*` on its own files (e.g. a crafted
        // `user.overlay.whiteout`), which an overlay mounted with `userxattr` would obey later.
        if !is_whiteout {
            clean_overlay_xattrs(&path, meta.is_dir())
                .ctx(|| format!("rewriting xattrs of /{shown}"))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).ctx(|| format!("listing /{shown}"))? {
                stack.push(entry.ctx(|| format!("listing /{shown}"))?.path());
            }
        }
    }
    Ok(())
}

trait WhiteoutCheck {
    fn is_char_device_whiteout(&self, rdev: u64) -> bool;
}

impl WhiteoutCheck for std::fs::FileType {
    fn is_char_device_whiteout(&self, rdev: u64) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device() && rdev == 0
    }
}

/// Drops overlay's private xattrs (origin, impure, redirect, …), keeping a directory's opacity.
fn clean_overlay_xattrs(dir: &Path, is_dir: bool) -> rustix::io::Result<()> {
    let mut small = [0u8; 1024];
    let mut large = Vec::new();
    let (names, len) = match rustix::fs::llistxattr(dir, &mut small[..]) {
        Ok(len) => (&small[..], len),
        Err(rustix::io::Errno::RANGE) => {
            large.resize(64 * 1024, 0);
            let len = rustix::fs::llistxattr(dir, &mut large[..])?;
            (&large[..], len)
        }
        Err(e) => return Err(e),
    };
    let mut opaque = false;
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !(name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")) {
            continue;
        }
        if is_dir && name.ends_with(b".overlay.opaque") {
            let mut value = [0u8; 8];
            if let Ok(n) = rustix::fs::lgetxattr(dir, name, &mut value[..]) {
                opaque |= &value[..n] == b"y";
            }
        }
        rustix::fs::lremovexattr(dir, name)?;
    }
    if opaque {
        for name in OPAQUE_XATTRS {
            rustix::fs::lsetxattr(dir, name, b"y", rustix::fs::XattrFlags::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids() {
        assert_eq!(canonical_id(0x1000_0000, 0x1000_0000), Some(0));
        assert_eq!(canonical_id(0x1000_0000 + 1000, 0x1000_0000), Some(1000));
        assert_eq!(canonical_id(0x1000_0000 + 0x10000, 0x1000_0000), None);
        assert_eq!(canonical_id(5, 0x1000_0000), None);
    }
}
