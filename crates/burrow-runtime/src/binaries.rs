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
    fn a_missing_source_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = pin(tmp.path(), &tmp.path().join("nope"), "tool").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
