//! Sandbox dirs of zero-data-retention sandboxes: a tmpfs mounted at `sandboxes/<id>/` instead of
//! a btrfs subvolume, so the overlay upper/work dirs (and `runtime.json`) only ever live in RAM.
//! Its `size=` is the sandbox's disk limit (writes beyond it fail with ENOSPC); after a host
//! reboot the mount is gone and the dir is an empty mount point, which reconcile treats as dead.

use std::ffi::CString;
use std::path::Path;

use crate::error::{RuntimeError, io_err};

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn c_path(dir: &Path) -> Result<CString, RuntimeError> {
    CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::Invalid(format!("{dir:?} contains NUL")))
}

/// Mounts a tmpfs of `size_bytes` (root-owned, 0700 like every sandbox dir) on the existing,
/// empty directory `dir`.
pub fn mount(dir: &Path, size_bytes: u64) -> Result<(), RuntimeError> {
    let target = c_path(dir)?;
    let data = CString::new(format!("size={size_bytes},mode=0700,uid=0,gid=0"))
        .map_err(|_| RuntimeError::Invalid("tmpfs options contain NUL".into()))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: valid NUL-terminated strings for source, target, type and data.
    let r = unsafe {
        libc::mount(
            c"burrow-zdr".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io_err(format!("mount tmpfs on {dir:?}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// True if a tmpfs is mounted at `dir` (`dir` is on a tmpfs and on another device than its
/// parent): sandbox dirs live on btrfs, so only a ZDR sandbox's own mount makes this true.
pub fn is_ram(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.dev()).ok();
    let mount_point = match dir.parent() {
        Some(parent) => dev(dir).is_some() && dev(dir) != dev(parent),
        None => false,
    };
    mount_point && on_tmpfs(dir)
}

fn on_tmpfs(dir: &Path) -> bool {
    let Ok(target) = c_path(dir) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed libc::statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let r = unsafe { libc::statfs(target.as_ptr(), &mut st) };
    r == 0 && st.f_type == TMPFS_MAGIC
}

/// Unmounts the tmpfs at `dir` if there is one (its pages are freed once the last mount
/// namespace holding it is gone: the sandbox's, which died with its processes).
pub fn unmount_if_mounted(dir: &Path) -> Result<(), RuntimeError> {
    if !is_ram(dir) {
        return Ok(());
    }
    let target = c_path(dir)?;
    // SAFETY: valid C string; MNT_DETACH has no memory-safety preconditions.
    let r = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        return Err(io_err(format!("unmount tmpfs at {dir:?}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Bytes used in the tmpfs at `dir`.
pub fn usage(dir: &Path) -> Result<u64, RuntimeError> {
    let target = c_path(dir)?;
    // SAFETY: statvfs fills a zeroed libc::statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statvfs(target.as_ptr(), &mut st) } != 0 {
        return Err(io_err(format!("statvfs {dir:?}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_limits_size_and_unmounts() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("burrow-ram-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        mount(&dir, 1 << 20).unwrap();
        assert!(is_ram(&dir));
        let full = std::fs::write(dir.join("big"), vec![7u8; 2 << 20]).unwrap_err();
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
        assert!(usage(&dir).unwrap() >= 1 << 19);
        unmount_if_mounted(&dir).unwrap();
        assert!(!dir.join("big").exists(), "the file lived in the tmpfs");
        assert!(!is_ram(&dir));
        // Unmounting a plain dir is a no-op.
        unmount_if_mounted(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}
