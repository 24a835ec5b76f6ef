//! Content-addressed copies of the launcher and agent binaries under `<data_dir>/bin/`.
//!
//! Every sandbox maps both files (init re-execs `/.burrow/init`, the agent runs from
//! `/.burrow/agent`), and a CRIU restore must find exactly the file that was mapped when the
//! checkpoint was taken (`File .burrow/init has bad size` otherwise). An upgrade of burrow, or a
//! rebuild in development, must therefore never change the file under a running or checkpointed
//! sandbox: each binary is copied once to `bin/<name>-<sha256 prefix>` and never overwritten, and
//! sandboxes record which copy they use (`launch.json`).

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{RuntimeError, io_err};

/// Directory of the pinned binaries inside the data dir.
pub const BIN_DIR: &str = "bin";

/// Returns the pinned copy of `source` (`<data_dir>/bin/<name>-<16 hex>`), creating it if this
/// content was not pinned before. Blocking.
pub fn pin(data_dir: &Path, source: &Path, name: &str) -> Result<PathBuf, RuntimeError> {
    let content = read_all(source)?;
    let digest = hex::encode(Sha256::digest(&content));
    let dir = data_dir.join(BIN_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(io_err(format!("create {dir:?}")))?;
    let pinned = dir.join(format!("{name}-{}", &digest[..16]));
    if std::fs::metadata(&pinned).is_ok_and(|m| m.len() == content.len() as u64) {
        return Ok(pinned);
    }
    // Write under a temporary name and rename: a crash never leaves a truncated pinned binary.
    let partial = dir.join(format!(".{name}-{}.partial", &digest[..16]));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&partial)
        .map_err(io_err(format!("create {partial:?}")))?;
    file.write_all(&content)
        .and_then(|()| file.sync_all())
        .map_err(io_err(format!("write {partial:?}")))?;
    std::fs::rename(&partial, &pinned).map_err(io_err(format!("rename to {pinned:?}")))?;
    Ok(pinned)
}

/// Removes pinned binaries that are neither `keep` nor recorded in any sandbox's `launch.json`
/// under `sandboxes_dir` (older versions a checkpoint no longer needs). Running sandboxes keep
/// their mapped file alive by inode, and only a restore needs the path, which `launch.json`
/// records. Conservative: an unreadable `launch.json` or sandboxes dir removes nothing.
/// Returns how many files were removed. Blocking; call before any sandbox is created.
pub fn collect_unused(data_dir: &Path, sandboxes_dir: &Path, keep: &[&Path]) -> usize {
    let Some(mut referenced) = recorded_binaries(sandboxes_dir) else {
        return 0;
    };
    referenced.extend(keep.iter().map(|p| p.to_path_buf()));
    let Ok(entries) = std::fs::read_dir(data_dir.join(BIN_DIR)) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !referenced.contains(&path) && std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed a pinned binary no sandbox uses");
            removed += 1;
        }
    }
    removed
}

/// The agent and launcher paths of every `sandboxes/<id>/launch.json`; `None` if one cannot be
/// read or parsed.
fn recorded_binaries(sandboxes_dir: &Path) -> Option<std::collections::HashSet<PathBuf>> {
    let mut paths = std::collections::HashSet::new();
    let entries = match std::fs::read_dir(sandboxes_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(paths),
        Err(_) => return None,
    };
    for entry in entries {
        let spec_path = entry.ok()?.path().join(crate::checkpoint::LAUNCH_SPEC_FILE);
        let text = match std::fs::read(&spec_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        let spec: burrow_launch::LaunchSpec = serde_json::from_slice(&text).ok()?;
        paths.insert(spec.agent_path);
        paths.extend(spec.launcher_path);
    }
    Some(paths)
}

fn read_all(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    let mut content = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut content))
        .map_err(io_err(format!("read {path:?}")))?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_copy_new_content_new_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("tool");
        std::fs::write(&source, b"version 1").unwrap();
        let first = pin(tmp.path(), &source, "tool").unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), b"version 1");
        assert_eq!(pin(tmp.path(), &source, "tool").unwrap(), first);
        // An upgrade replaces the source: the old copy stays as it was.
        std::fs::write(&source, b"version 2, longer").unwrap();
        let second = pin(tmp.path(), &source, "tool").unwrap();
        assert_ne!(second, first);
        assert_eq!(std::fs::read(&first).unwrap(), b"version 1");
        assert_eq!(std::fs::read(&second).unwrap(), b"version 2, longer");
    }

    #[test]
    fn unused_copies_are_collected_recorded_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("tool");
        std::fs::write(&source, b"old").unwrap();
        let old_recorded = pin(tmp.path(), &source, "agent").unwrap();
        std::fs::write(&source, b"older, unused").unwrap();
        let unused = pin(tmp.path(), &source, "agent").unwrap();
        std::fs::write(&source, b"current").unwrap();
        let current = pin(tmp.path(), &source, "agent").unwrap();
        let sandboxes = tmp.path().join("sandboxes");
        std::fs::create_dir_all(sandboxes.join("i1")).unwrap();
        let spec = serde_json::json!({
            "id": "i1", "layers": [], "upper_dir": "/u", "work_dir": "/w", "rootfs_dir": "/r",
            "uid_base": 0x1001_0000u32, "netns_path": "/n", "cgroup_procs": [],
            "agent_path": old_recorded, "agent_env": {}, "nameservers": [], "shm_mb": 1,
        });
        std::fs::write(
            sandboxes
                .join("i1")
                .join(crate::checkpoint::LAUNCH_SPEC_FILE),
            spec.to_string(),
        )
        .unwrap();
        assert_eq!(collect_unused(tmp.path(), &sandboxes, &[&current]), 1);
        assert!(old_recorded.exists() && current.exists() && !unused.exists());
        // An unreadable record: nothing is removed.
        std::fs::write(
            sandboxes
                .join("i1")
                .join(crate::checkpoint::LAUNCH_SPEC_FILE),
            "{",
        )
        .unwrap();
        std::fs::remove_file(&current).unwrap();
        assert_eq!(collect_unused(tmp.path(), &sandboxes, &[]), 0);
        assert!(old_recorded.exists());
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = pin(tmp.path(), &tmp.path().join("nope"), "tool").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
