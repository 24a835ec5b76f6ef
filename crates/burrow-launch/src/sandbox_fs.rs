//! The sandbox's own mounts, made by its init (pid 1, root of the sandbox's user namespace)
//! on top of the overlay root, followed by pivot_root.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::Path;

use crate::sys::{self, LaunchError, Result, check, cstr};

/// Host device nodes bind-mounted into the sandbox's /dev (all world-usable, nothing host-specific).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Mounts /proc, /dev (+pts, shm), /sys on `root`, then makes `root` the process's `/`.
///
/// `/dev` and `/dev/shm` are binds of directories of the root itself (`/.burrow/dev`,
/// `/.burrow/shm`), not tmpfs mounts: a checkpoint then needs nothing of them but the root
/// (CRIU packs and unpacks a tmpfs with a `tar` run each way, ~4 ms per mount of every
/// deep-standby restore). So `/dev/shm` lives on the sandbox's disk, within its disk quota.
pub fn setup_and_pivot(root: &Path) -> Result<()> {
    // Our mount namespace is a copy: nothing we do below may propagate anywhere.
    sys::make_mounts_private()?;
    // Mounts copied into a namespace of a less privileged user namespace are locked, and
    // pivot_root refuses a locked new root: a recursive self-bind gives us an unlocked one.
    let root_str = root
        .to_str()
        .ok_or_else(|| LaunchError(format!("{root:?} is not UTF-8")))?;
    sys::mount(
        Some(root_str),
        root,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

    let proc_dir = ensure_dir(root, "proc")?;
    sys::mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;

    let private_dev = ensure_dir(root, ".burrow/dev")?;
    let dev = ensure_dir(root, "dev")?;
    sys::bind_mount(&private_dev, &dev, false)?;
    sys::remount_bind(&dev, nosuid_nodev_noexec)?;
    for name in DEVICES {
        let target = dev.join(name);
        fs::File::create(&target).map_err(|e| LaunchError(format!("create {target:?}: {e}")))?;
        sys::bind_mount(&Path::new("/dev").join(name), &target, false)?;
    }
    let pts = ensure_dir(root, "dev/pts")?;
    sys::mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let private_shm = ensure_dir(root, ".burrow/shm")?;
    fs::set_permissions(&private_shm, fs::Permissions::from_mode(0o1777))
        .map_err(|e| LaunchError(format!("chmod /.burrow/shm: {e}")))?;
    let shm = ensure_dir(root, "dev/shm")?;
    sys::bind_mount(&private_shm, &shm, false)?;
    sys::remount_bind(&shm, nosuid_nodev_noexec)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        match symlink(target, dev.join(link)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(LaunchError(format!("symlink /dev/{link}: {e}")));
            }
            _ => {}
        }
    }

    // /sys: an empty read-only tmpfs. A real sysfs would need the netns's owner (host) and
    // would expose host hardware; nothing a sandbox runs needs it.
    let sys_dir = ensure_dir(root, "sys")?;
    sys::mount(
        Some("sysfs"),
        &sys_dir,
        Some("tmpfs"),
        nosuid_nodev_noexec | libc::MS_RDONLY,
        Some("mode=555,size=4k"),
    )?;
    mask_host_information(root, &sys_dir)?;

    pivot(root)
}

/// Files of `/proc` that tell about the host (kernel memory, its boot command line and build
/// configuration, timers and interrupts of every process, other users' keys): Docker's masked
/// paths plus `cmdline` and `config.gz`. Each is covered by the host's `/dev/null` (reads
/// give nothing). A checkpoint names each one an external mount given back as `/dev/null`
/// (CRIU 4.2 cannot restore them as binds of the sandbox's `/dev/null`: it binds a file's
/// path with a trailing slash, ENOTDIR).
pub const MASKED_FILES: [&str; 9] = [
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/cmdline",
    "proc/config.gz",
    "proc/sysrq-trigger",
];
/// Directories of `/proc` masked (Docker's list): covered by the sandbox's empty read-only
/// `/sys` (a bind of it, not a new tmpfs that a checkpoint would have to pack and unpack).
const MASKED_DIRS: [&str; 3] = ["proc/acpi", "proc/scsi", "proc/asound"];
/// Directories of `/proc` made read-only (Docker's list). Their files are mostly owned by the
/// host's root, which the sandbox's root is not, but namespaced sysctls belong to it.
const READ_ONLY_DIRS: [&str; 4] = ["proc/bus", "proc/fs", "proc/irq", "proc/sys"];

/// Covers the host information in `/proc` (see [`MASKED_FILES`], [`MASKED_DIRS`],
/// [`READ_ONLY_DIRS`]); paths this kernel does not have are skipped. `/sys` needs nothing:
/// it is an empty tmpfs (no `/sys/firmware`, no `/sys/devices/virtual/powercap`).
fn mask_host_information(root: &Path, empty_dir: &Path) -> Result<()> {
    let locked = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for rel in MASKED_FILES {
        let target = root.join(rel);
        if target.exists() {
            sys::bind_mount(Path::new("/dev/null"), &target, false)?;
        }
    }
    for rel in MASKED_DIRS {
        let target = root.join(rel);
        if target.is_dir() {
            sys::bind_mount(empty_dir, &target, false)?;
            sys::remount_bind(&target, locked | libc::MS_RDONLY)?;
        }
    }
    for rel in READ_ONLY_DIRS {
        let target = root.join(rel);
        if target.is_dir() {
            sys::bind_mount(&target, &target, false)?;
            sys::remount_bind(&target, locked | libc::MS_RDONLY)?;
        }
    }
    Ok(())
}

fn ensure_dir(root: &Path, rel: &str) -> Result<std::path::PathBuf> {
    let path = root.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Ok(path),
        Ok(_) => Err(LaunchError(format!(
            "/{rel} in the template is not a directory"
        ))),
        Err(_) => {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .map_err(|e| LaunchError(format!("mkdir /{rel}: {e}")))?;
            Ok(path)
        }
    }
}

fn pivot(root: &Path) -> Result<()> {
    let c = cstr(root)?;
    // SAFETY: `c` is a valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) } as _, || {
        format!("chdir {root:?}")
    })?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching "." then
    // removes it without needing a directory for it inside the sandbox.
    // SAFETY: both arguments are valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    check(r, || "pivot_root".into())?;
    // SAFETY: valid C string.
    let r = unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) };
    check(r as _, || "detach old root".into())?;
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(c"/".as_ptr()) } as _, || {
        "chdir /".into()
    })?;
    Ok(())
}
