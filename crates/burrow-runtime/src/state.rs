//! `sandboxes/<id>/runtime.json` and the uid-range numbering.

use std::path::{Path, PathBuf};

use crate::SandboxHandle;
use crate::error::{RuntimeError, io_err};

/// First host uid of sandbox range 0; range n starts at `UID_BASE0 + n * RANGE`.
pub const UID_BASE0: u32 = 0x1000_0000;
pub const RANGE: u32 = 0x1_0000;
/// Range indexes handed out: 1.. (0 would be XFS's default project). 61439 ranges fit in u32.
pub const MAX_INDEX: u32 = (u32::MAX - UID_BASE0) / RANGE;

pub fn uid_base(index: u32) -> u32 {
    UID_BASE0 + index * RANGE
}

pub fn index_of(uid_base: u32) -> Option<u32> {
    let off = uid_base.checked_sub(UID_BASE0)?;
    (off % RANGE == 0 && off / RANGE > 0 && off / RANGE < MAX_INDEX).then_some(off / RANGE)
}

pub fn runtime_json(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("runtime.json")
}

/// Writes the handle atomically (temp file + rename).
pub fn save(sandbox_dir: &Path, handle: &SandboxHandle) -> Result<(), RuntimeError> {
    let path = runtime_json(sandbox_dir);
    let tmp = sandbox_dir.join("runtime.json.tmp");
    let text = serde_json::to_vec_pretty(handle)
        .map_err(|e| RuntimeError::Launch(format!("encode handle: {e}")))?;
    std::fs::write(&tmp, text).map_err(io_err(format!("write {tmp:?}")))?;
    std::fs::rename(&tmp, &path).map_err(io_err(format!("rename {tmp:?}")))
}

pub fn load(sandbox_dir: &Path) -> Option<SandboxHandle> {
    let text = std::fs::read(runtime_json(sandbox_dir)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_ranges_follow_the_contract() {
        assert_eq!(uid_base(1), 0x1001_0000);
        assert_eq!(index_of(0x1001_0000), Some(1));
        assert_eq!(index_of(0x1000_0000), None);
        assert_eq!(index_of(0x1001_0001), None);
        assert!(uid_base(MAX_INDEX - 1).checked_add(RANGE - 1).is_some());
    }
}
