//! Read-only lookups in the overlay view of a layer stack (top-most first), as a sandbox would
//! see it, without mounting: honours whiteouts and opaque dirs, never follows symlinks.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::TemplateError;
use crate::layer_writer::{EntryMeta, OPAQUE_XATTRS};

fn is_opaque(dir: &Path) -> bool {
    OPAQUE_XATTRS.iter().any(|name| {
        let mut value = [0u8; 8];
        matches!(rustix::fs::lgetxattr(dir, *name, &mut value[..]), Ok(1) if value[0] == b'y')
    })
}

/// For each directory from the root down to `dir` (excluded root), its metadata in the merged
/// view, or `None` from the first one that does not exist. Fails if a component is a symlink or
/// a non-directory (a COPY through it would not land where the user expects).
pub fn directory_chain(
    layers: &[PathBuf],
    dir: &Path,
) -> Result<Vec<(PathBuf, Option<EntryMeta>)>, TemplateError> {
    let mut active: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    let mut prefix = PathBuf::new();
    let mut chain = Vec::new();
    for component in dir.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        prefix.push(name);
        let mut found = None;
        let mut next_active = Vec::new();
        for layer in &active {
            let candidate = layer.join(&prefix);
            let Ok(meta) = std::fs::symlink_metadata(&candidate) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                break; // whiteout: hidden from here down
            }
            if !kind.is_dir() {
                if found.is_none() {
                    return Err(TemplateError::Invalid(format!(
                        "/{} is {} in the template, not a directory; COPY to its real path instead",
                        prefix.display(),
                        if kind.is_symlink() {
                            "a symlink"
                        } else {
                            "a file"
                        }
                    )));
                }
                break;
            }
            found.get_or_insert(EntryMeta {
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: None,
            });
            next_active.push(*layer);
            if is_opaque(&candidate) {
                break;
            }
        }
        chain.push((prefix.clone(), found));
        if found.is_none() {
            active.clear();
        } else {
            active = next_active;
        }
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn follows_overlay_rules() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bottom.path().join("home/user/deep")).unwrap();
        std::fs::set_permissions(
            bottom.path().join("home/user"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::os::unix::fs::chown(bottom.path().join("home/user"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::symlink("/usr/bin", bottom.path().join("bin")).unwrap();
        std::fs::create_dir_all(top.path().join("home")).unwrap();
        let layers = vec![top.path().to_path_buf(), bottom.path().to_path_buf()];

        let chain = directory_chain(&layers, Path::new("home/user/new")).unwrap();
        assert_eq!(chain[1].1.unwrap().uid, 1000);
        assert_eq!(chain[1].1.unwrap().mode, 0o750);
        assert!(chain[2].1.is_none());

        assert!(
            directory_chain(&layers, Path::new("bin/x"))
                .unwrap_err()
                .to_string()
                .contains("symlink")
        );

        // An opaque /home in the top layer hides the bottom layer's /home/user.
        crate::layer_writer::set_opaque(std::fs::File::open(top.path().join("home")).unwrap())
            .unwrap();
        assert!(
            directory_chain(&layers, Path::new("home/user")).unwrap()[1]
                .1
                .is_none()
        );
    }
}
