//! Disk limit of each sandbox: `<data_dir>/sandboxes` is a btrfs filesystem with quotas; each
//! sandbox dir is a subvolume with a qgroup limit on referenced bytes, so writes beyond it fail
//! with EDQUOT inside the sandbox.
//!
//! Why btrfs: this kernel has neither XFS quota (CONFIG_XFS_QUOTA) nor ext4 quota
//! (CONFIG_QFMT_V2) support; btrfs qgroups are built in and need no extra daemon. Creating a
//! subvolume and setting its limit are two ioctls (well under a millisecond).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::error::{RuntimeError, io_err};
use crate::host::run_command;

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)` (4096 bytes).
const BTRFS_IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940e;
/// `_IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)` (16 bytes).
const BTRFS_IOC_QUOTA_CTL: libc::c_ulong = 0xc010_9428;
/// `_IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)` (48 bytes).
const BTRFS_IOC_QGROUP_LIMIT: libc::c_ulong = 0x8030_942b;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA: u64 = 4;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// The quota-enabled btrfs filesystem holding every sandbox dir.
#[derive(Debug)]
pub struct QuotaFs {
    root_fd: OwnedFd,
}

impl QuotaFs {
    /// Makes sure `dir` is a btrfs mount with quotas enabled. If `dir` is not btrfs, creates a
    /// sparse image of `image_gb` GiB at `image` (once), formats it and loop-mounts it on `dir`.
    pub fn ensure(dir: &Path, image: &Path, image_gb: u64) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {dir:?}")))?;
        if fs_type(dir)? != BTRFS_SUPER_MAGIC {
            let non_empty = std::fs::read_dir(dir)
                .map_err(io_err(format!("read {dir:?}")))?
                .next()
                .is_some();
            if non_empty {
                return Err(RuntimeError::Unsupported(format!(
                    "{dir:?} is not on btrfs and not empty; move its contents away so burrow can mount its quota filesystem there"
                )));
            }
            if !image.exists() {
                let file =
                    std::fs::File::create(image).map_err(io_err(format!("create {image:?}")))?;
                file.set_len(image_gb << 30)
                    .map_err(io_err(format!("size {image:?}")))?;
                if let Err(e) = run_command("mkfs.btrfs", &["-q", path_str(image)?], None) {
                    let _ = std::fs::remove_file(image);
                    return Err(RuntimeError::Unsupported(format!(
                        "{e} (is btrfs-progs installed? burrow needs mkfs.btrfs for its sandbox disk quota)"
                    )));
                }
            }
            run_command(
                "mount",
                &["-o", "loop,discard=async", path_str(image)?, path_str(dir)?],
                None,
            )?;
        }
        let root_fd = open_dir(dir)?;
        let qs = Self { root_fd };
        qs.enable_quota()?;
        Ok(qs)
    }

    fn enable_quota(&self) -> Result<(), RuntimeError> {
        // Simple quotas (kernel 6.7+) account at extent creation, much cheaper than full qgroups.
        let mut last = None;
        for cmd in [BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA, BTRFS_QUOTA_CTL_ENABLE] {
            let mut args = QuotaCtlArgs { cmd, status: 0 };
            // SAFETY: BTRFS_IOC_QUOTA_CTL reads/writes a `btrfs_ioctl_quota_ctl_args`, which `args` is.
            let r = unsafe {
                libc::ioctl(
                    self.root_fd.as_raw_fd(),
                    BTRFS_IOC_QUOTA_CTL,
                    &mut args as *mut QuotaCtlArgs,
                )
            };
            if r == 0 {
                return Ok(());
            }
            last = Some(std::io::Error::last_os_error());
        }
        Err(io_err("enable btrfs quotas on the sandboxes filesystem")(
            last.unwrap_or_else(std::io::Error::last_os_error),
        ))
    }

    /// Creates the sandbox dir `name` (under the quota filesystem's root) as a subvolume and
    /// limits it to `limit_bytes`.
    pub fn create_limited_dir(&self, name: &str, limit_bytes: u64) -> Result<(), RuntimeError> {
        let mut args = VolArgs {
            fd: 0,
            name: [0; 4088],
        };
        if name.is_empty() || name.len() >= args.name.len() || name.contains(['/', '\0']) {
            return Err(RuntimeError::Invalid(format!(
                "{name:?} is not a valid subvolume name"
            )));
        }
        args.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: BTRFS_IOC_SUBVOL_CREATE reads a `btrfs_ioctl_vol_args`, which `args` is.
        let r = unsafe {
            libc::ioctl(
                self.root_fd.as_raw_fd(),
                BTRFS_IOC_SUBVOL_CREATE,
                &args as *const VolArgs,
            )
        };
        if r != 0 {
            return Err(io_err(format!("create subvolume {name}"))(
                std::io::Error::last_os_error(),
            ));
        }
        let sub = self.open_child(name)?;
        let limit = QgroupLimitArgs {
            qgroupid: 0, // 0 = the qgroup of the subvolume the fd is in
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: limit_bytes,
            max_excl: 0,
            rsv_rfer: 0,
            rsv_excl: 0,
        };
        // SAFETY: BTRFS_IOC_QGROUP_LIMIT reads a `btrfs_ioctl_qgroup_limit_args`, which `limit` is.
        let r = unsafe {
            libc::ioctl(
                sub.as_raw_fd(),
                BTRFS_IOC_QGROUP_LIMIT,
                &limit as *const QgroupLimitArgs,
            )
        };
        if r != 0 {
            return Err(io_err(format!("set disk limit of {name}"))(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn open_child(&self, name: &str) -> Result<OwnedFd, RuntimeError> {
        let c = CString::new(name)
            .map_err(|_| RuntimeError::Invalid(format!("{name:?} contains NUL")))?;
        // SAFETY: openat with a valid dirfd and C string.
        let fd = unsafe {
            libc::openat(
                self.root_fd.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(io_err(format!("open {name}"))(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: openat returned a fresh descriptor.
        Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }
}

/// Bytes the subvolume at `dir` references, from `btrfs qgroup show` (blocking; not a hot path).
pub fn usage(dir: &Path) -> Result<u64, RuntimeError> {
    let out = std::process::Command::new("btrfs")
        .args(["qgroup", "show", "--raw", "-f"])
        .arg(dir)
        .output()
        .map_err(|e| RuntimeError::Command(format!("btrfs qgroup show: {e}")))?;
    if !out.status.success() {
        return Err(RuntimeError::Command(format!(
            "btrfs qgroup show {dir:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?;
            id.starts_with("0/")
                .then(|| f.next()?.parse::<u64>().ok())?
        })
        .next_back()
        .ok_or_else(|| RuntimeError::Command(format!("no qgroup listed for {dir:?}")))
}

/// Drops qgroups of deleted subvolumes (best effort; they only hold bookkeeping).
pub fn clear_stale(root: &Path) {
    if let Some(p) = root.to_str() {
        let _ = run_command("btrfs", &["qgroup", "clear-stale", p], None);
    }
}

fn fs_type(dir: &Path) -> Result<i64, RuntimeError> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::Invalid(format!("{dir:?} contains NUL")))?;
    // SAFETY: statfs fills a zeroed libc::statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err(format!("statfs {dir:?}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.f_type)
}

fn path_str(p: &Path) -> Result<&str, RuntimeError> {
    p.to_str()
        .ok_or_else(|| RuntimeError::Unsupported(format!("{p:?} is not UTF-8")))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, RuntimeError> {
    std::fs::File::open(dir)
        .map(OwnedFd::from)
        .map_err(io_err(format!("open {dir:?}")))
}
