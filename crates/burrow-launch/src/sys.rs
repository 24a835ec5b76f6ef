//! Thin, checked wrappers over the raw syscalls the launcher needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// A launch failure, with the step that failed and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LaunchError(pub String);

impl LaunchError {
    /// Wraps the current `errno` with a description of what was attempted.
    pub fn os(what: impl std::fmt::Display) -> Self {
        Self(format!("{what}: {}", io::Error::last_os_error()))
    }
}

pub type Result<T> = std::result::Result<T, LaunchError>;

/// Returns `Err` with `what` and errno when a libc call returned -1.
pub fn check(ret: libc::c_long, what: impl FnOnce() -> String) -> Result<libc::c_long> {
    if ret == -1 {
        Err(LaunchError::os(what()))
    } else {
        Ok(ret)
    }
}

pub fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| LaunchError(format!("path {path:?} contains a NUL byte")))
}

/// A pipe whose both ends are close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid 2-element array for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(r as _, || "pipe2".into())?;
    // SAFETY: pipe2 succeeded, so both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice of the given length.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LaunchError::os("write to pipe"));
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes, waiting at most until `deadline`. Returns the byte count
/// (0 = EOF, fewer than asked = EOF reached early).
pub fn read_until(fd: &OwnedFd, buf: &mut [u8], deadline: Instant, what: &str) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left == Duration::ZERO {
            return Err(LaunchError(format!("timed out waiting for {what}")));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LaunchError::os(format!("poll while waiting for {what}")));
        }
        if r == 0 {
            continue;
        }
        let rest = &mut buf[got..];
        // SAFETY: `rest` is a valid writable slice of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LaunchError::os(format!("read while waiting for {what}")));
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// Reads everything until EOF or `deadline` (whichever first), lossily as text.
pub fn read_text(fd: &OwnedFd, deadline: Instant, what: &str) -> Result<String> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = read_until(fd, &mut chunk[..1], deadline, what)?;
        if n == 0 {
            break;
        }
        out.push(chunk[0]);
        if out.len() > 4096 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let what = || {
        format!(
            "mount {} on {target:?} ({fstype:?}, {data:?})",
            source.unwrap_or("none")
        )
    };
    let src = source.map(|s| CString::new(s).map_err(|_| LaunchError(what())));
    let src = src.transpose()?;
    let fs = fstype.map(|s| CString::new(s).map_err(|_| LaunchError(what())));
    let fs = fs.transpose()?;
    let data_c = data.map(|s| CString::new(s).map_err(|_| LaunchError(what())));
    let data_c = data_c.transpose()?;
    let tgt = cstr(target)?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call, or null.
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data_c
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check(r as _, what).map(drop)
}

pub fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    let src = source
        .to_str()
        .ok_or_else(|| LaunchError(format!("{source:?} is not UTF-8")))?;
    mount(Some(src), target, None, libc::MS_BIND, None)?;
    if read_only {
        let flags =
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        mount(None, target, None, flags, None)?;
    }
    Ok(())
}

/// Sets `flags` (MS_NOSUID, MS_NODEV, ...) on the bind mount at `target`.
pub fn remount_bind(target: &Path, flags: libc::c_ulong) -> Result<()> {
    mount(
        None,
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | flags,
        None,
    )
}

pub fn open_path(path: &Path, flags: libc::c_int) -> Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    check(fd as _, || format!("open {path:?}"))?;
    // SAFETY: open succeeded and returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Waits for `pid` and returns its raw wait status.
pub fn wait_pid(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

/// Writes `msg` to `fd` and exits the current (forked) process with status 1. Used by the
/// forked helpers, which must never return into the launcher's code.
pub fn die(fd: Option<&OwnedFd>, msg: &str) -> ! {
    if let Some(fd) = fd {
        let _ = write_all(fd, msg.as_bytes());
    }
    // SAFETY: _exit is always safe; it skips destructors and atexit handlers on purpose
    // (we are a forked copy of the launcher).
    unsafe { libc::_exit(1) }
}

/// Makes every mount of the current mount namespace private (the mounts of a copied namespace
/// are peers of the original's): nothing mounted afterwards propagates anywhere.
pub fn make_mounts_private() -> Result<()> {
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
}

/// Moves this (single-threaded) process into a new mount namespace of private mounts.
pub fn private_mount_ns() -> Result<()> {
    // SAFETY: unshare with a flag constant.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) } as _, || {
        "unshare(CLONE_NEWNS)".into()
    })?;
    make_mounts_private()
}

/// Moves this (single-threaded) process into the mount namespace at `path` (e.g.
/// `/proc/PID/ns/mnt`).
pub fn enter_mount_ns(path: &Path) -> Result<()> {
    let ns = open_path(path, libc::O_RDONLY | libc::O_CLOEXEC)?;
    // SAFETY: setns on an fd we own, with a flag constant.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) };
    check(r as _, || format!("enter the mount namespace {path:?}")).map(drop)
}

/// Lazily and recursively detaches the mount at `path`.
pub fn detach(path: &Path) -> Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid C string.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    check(r as _, || format!("detach {path:?}")).map(drop)
}
