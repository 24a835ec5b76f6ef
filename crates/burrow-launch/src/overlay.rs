//! Host-side filesystem work, done by the launcher as host root in its private mount namespace:
//! files seeded into the upper dir, idmapped template layers, the overlay root, the agent bind.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::spec::LaunchSpec;
use crate::sys::{self, LaunchError, Result, check, cstr};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` from linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Writes the files burrow owns inside every sandbox straight into the upper dir (before the
/// overlay exists), owned by the sandbox's root: /etc/{resolv.conf,hostname,hosts}, the host's CA
/// bundle when the runtime passes one, and the mount point for the agent binary.
pub fn seed_upper(spec: &LaunchSpec) -> Result<()> {
    let owner = spec.uid_base;
    let dir = |rel: &str| -> Result<PathBuf> {
        let path = spec.upper_dir.join(rel);
        // symlink_metadata: never follow a link a previous run of the sandbox may have left.
        let existing = fs::symlink_metadata(&path).ok();
        if existing.as_ref().is_some_and(|m| !m.is_dir()) {
            return Err(LaunchError(format!(
                "{path:?} exists and is not a directory"
            )));
        }
        if existing.is_none() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .map_err(|e| LaunchError(format!("create {path:?}: {e}")))?;
        }
        chown(&path, owner)?;
        Ok(path)
    };
    let file = |path: PathBuf, text: &str, mode: u32| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| LaunchError(format!("create {path:?}: {e}")))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .map_err(|e| LaunchError(format!("write {path:?}: {e}")))?;
        chown(&path, owner)
    };
    let etc = dir("etc")?;
    let resolv: String = spec
        .nameservers
        .iter()
        .map(|ns| format!("nameserver {ns}\n"))
        .collect();
    file(etc.join("resolv.conf"), &resolv, 0o644)?;
    file(etc.join("hostname"), &format!("{}\n", spec.id), 0o644)?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        spec.id
    );
    file(etc.join("hosts"), &hosts, 0o644)?;
    if let Some(bundle) = &spec.ca_bundle {
        let pem = fs::read_to_string(bundle)
            .map_err(|e| LaunchError(format!("read host CA bundle {bundle:?}: {e}")))?;
        dir("etc/ssl")?;
        let certs = dir("etc/ssl/certs")?;
        file(certs.join("ca-certificates.crt"), &pem, 0o644)?;
    }
    let burrow = dir(".burrow")?;
    file(burrow.join("agent"), "", 0o755)?;
    if spec.own_netns.is_some() {
        file(burrow.join("init"), "", 0o755)?;
    }
    Ok(())
}

fn chown(path: &Path, id: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(id), Some(id))
        .map_err(|e| LaunchError(format!("chown {path:?} to {id}: {e}")))
}

/// Mounts the tmpfs staging area at `spec.rootfs_dir` and returns an fd to it. The sandbox's
/// init starts from this fd (fchdir), so it never has to walk the host path to it, whose parent
/// dirs an unprivileged uid may not be allowed to traverse.
pub fn mount_stage(spec: &LaunchSpec) -> Result<OwnedFd> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys::mount(
        Some("burrow-stage"),
        &spec.rootfs_dir,
        Some("tmpfs"),
        flags,
        Some("mode=755,size=64k"),
    )?;
    sys::open_path(&spec.rootfs_dir, libc::O_PATH | libc::O_DIRECTORY)
}

/// In the staging area: each layer idmapped to the sandbox's user namespace, the overlay at
/// `<rootfs_dir>/root` and the agent bind. Returns the overlay root.
pub fn mount_root(spec: &LaunchSpec, userns: &OwnedFd) -> Result<PathBuf> {
    let stage = &spec.rootfs_dir;
    let mut lowers = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        let target = stage.join(format!("l{i}"));
        mkdir(&target)?;
        idmap_into(layer, &target, userns)?;
        lowers.push(target.to_str().unwrap_or_default().to_owned());
    }
    let root = stage.join("root");
    mkdir(&root)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        spec.upper_dir.display(),
        spec.work_dir.display()
    );
    sys::mount(Some("burrow"), &root, Some("overlay"), 0, Some(&options))?;
    let agent_target = root.join(".burrow/agent");
    sys::bind_mount(&spec.agent_path, &agent_target, true)?;
    if spec.own_netns.is_some() {
        // The launcher itself, for init's re-exec (see launch::sandbox_init).
        let me = std::env::current_exe()
            .map_err(|e| LaunchError(format!("locate the launcher binary: {e}")))?;
        sys::bind_mount(&me, &root.join(".burrow/init"), true)?;
    }
    Ok(root)
}

/// A detached copy (`open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`) of the mount tree at `path`;
/// it exists as long as the returned fd (or until it is attached somewhere).
pub fn clone_tree(path: &Path) -> Result<OwnedFd> {
    open_tree_clone(path, AT_RECURSIVE)
}

/// `open_tree(path, OPEN_TREE_CLONE | extra)`: a detached copy of the mount at `path`.
fn open_tree_clone(path: &Path, extra: libc::c_uint) -> Result<OwnedFd> {
    let src = cstr(path)?;
    // SAFETY: open_tree takes a dirfd, a NUL-terminated path and flags; all valid.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | extra | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    check(fd, || format!("open_tree(OPEN_TREE_CLONE) of {path:?}"))?;
    // SAFETY: open_tree succeeded and returned a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn mkdir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|e| LaunchError(format!("mkdir {path:?}: {e}")))
}

/// Clones `layer` as a detached mount, idmaps it through `userns` (host 0 shows as the
/// sandbox's root) read-only, and attaches it at `target`.
fn idmap_into(layer: &Path, target: &Path, userns: &OwnedFd) -> Result<()> {
    let tree = open_tree_clone(layer, 0)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr whose size we pass; the path is an empty C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r, || {
        format!("mount_setattr(MOUNT_ATTR_IDMAP) on layer {layer:?}")
    })?;
    let dst = cstr(target)?;
    // SAFETY: both paths are valid C strings; `tree` is a detached mount fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(r, || {
        format!("move_mount of idmapped layer {layer:?} to {target:?}")
    })?;
    Ok(())
}
