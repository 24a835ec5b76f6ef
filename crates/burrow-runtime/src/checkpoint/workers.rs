//! Pre-spawned `criu swrk` workers for restores, so a restore pays neither criu's start (~7 ms
//! of exec and dynamic linking through the sid loader) nor its kernel-feature probe (~25 ms: the
//! host's `/run` is not tmpfs, so criu cannot keep `/run/criu.kdat` there).
//!
//! Each worker runs in a private mount namespace whose `/run` is a small tmpfs shared by all
//! workers ([`KDAT_DIR`]), where criu keeps its kdat cache. Such a worker only sees mounts that
//! existed when it was spawned, so the restore root is mounted *inside its mount namespace*
//! (see `restore::mount_root`), and a worker that cannot see the sandbox's directory (spawned
//! before that runtime's quota filesystem was mounted) is replaced by a fresh one.
//!
//! One pool per process: the daemon has one runtime; test binaries with several runtimes share
//! it (the visibility check covers their different data dirs).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burrow_standby::criu::{CriuConfig, CriuError, Refill, Worker, WorkerPool, ensure_kdat_tmpfs};

/// tmpfs for criu's kernel-feature cache, bind-mounted over `/run` in each worker.
const KDAT_DIR: &str = "/run/burrow/criu-kdat";
/// Where the kdat tmpfs appears inside a worker.
const WORKER_RUN: &str = "/run";
/// Empty files in the kdat tmpfs onto which a restore binds the sandbox's agent and launcher,
/// in its worker's mount namespace only (see `restore::prepare_worker_mounts`).
const EXT_AGENT: &str = "ext-agent";
const EXT_INIT: &str = "ext-init";
/// Empty directory (0555, host root) in the kdat tmpfs, bound read-only at a sandbox's `/sys`.
const EXT_SYS: &str = "ext-sys";
/// Idle workers kept ready. Each is a sleeping process (~3 MiB RSS); restores are serialised
/// per sandbox and rarely concurrent across sandboxes on a small host.
const POOL_SIZE: usize = 2;

static POOL: OnceLock<Option<WorkerPool>> = OnceLock::new();
/// The launcher whose `--criu-worker` mode execs each worker (the daemon never forks to set
/// one up); the first runtime of the process sets it.
static HELPER: OnceLock<PathBuf> = OnceLock::new();

/// Workers are exec'd through `launcher --criu-worker`. The first call wins: test binaries
/// with several runtimes share one pool. Pass the launcher as installed, not a pinned copy
/// (that lives in one runtime's data dir).
pub fn set_helper(launcher: &Path) {
    let _ = HELPER.set(launcher.to_path_buf());
}

/// `BURROW_CRIU_BINARY` (default `/opt/burrow/criu/criu`), run through [`set_helper`]'s
/// launcher.
pub fn base_config() -> CriuConfig {
    let mut config = CriuConfig::default();
    if let Some(launcher) = HELPER.get() {
        config.helper = vec![launcher.into(), "--criu-worker".into()];
    }
    if let Some(binary) = std::env::var_os("BURROW_CRIU_BINARY") {
        config.binary = binary.into();
    }
    config
}

/// Config of restore workers: `base_config` + the kdat tmpfs (None if it cannot be mounted:
/// workers then run in the host mount namespace and pay the probe).
fn restore_config() -> CriuConfig {
    // Mounted once per process (two racing first calls would stack two tmpfs).
    static KDAT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let kdat = KDAT.get_or_init(|| match ensure_kdat_tmpfs(Path::new(KDAT_DIR)) {
        Ok(()) => {
            if let Err(e) = make_external_files(Path::new(KDAT_DIR)) {
                tracing::warn!(error = %e, "no bind targets for criu's external mounts");
            }
            Some(PathBuf::from(KDAT_DIR))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no kdat tmpfs for criu; restores will be slower");
            None
        }
    });
    CriuConfig {
        kdat_tmpfs: kdat.clone(),
        ..base_config()
    }
}

/// The kdat tmpfs is searchable by anyone (the restored sandbox's root must reach the files
/// bound onto [`EXT_AGENT`] / [`EXT_INIT`]); it holds only criu's kernel-feature cache.
fn make_external_files(kdat: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(kdat, std::fs::Permissions::from_mode(0o711))?;
    for name in [EXT_AGENT, EXT_INIT] {
        let path = kdat.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    empty_sys_dir(kdat)?;
    Ok(())
}

fn empty_sys_dir(kdat: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = kdat.join(EXT_SYS);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))?;
    Ok(dir)
}

/// The empty `/sys` source as a host path (for a worker in the host's mount namespace); made
/// if missing (the kdat dir exists even where its tmpfs could not be mounted).
pub(super) fn empty_sys_dir_on_host() -> Result<PathBuf, crate::error::RuntimeError> {
    let kdat = Path::new(KDAT_DIR);
    let dir = kdat.join(EXT_SYS);
    if dir.is_dir() {
        return Ok(dir);
    }
    empty_sys_dir(kdat).map_err(crate::error::io_err(format!("create {dir:?}")))
}

/// Where a pooled worker sees the bind targets for the agent and the launcher, if they exist.
pub(super) fn reachable_external_files() -> Option<super::restore::ExternalSources> {
    let kdat = Path::new(KDAT_DIR);
    if !(kdat.join(EXT_AGENT).is_file()
        && kdat.join(EXT_INIT).is_file()
        && kdat.join(EXT_SYS).is_dir())
    {
        return None;
    }
    Some(super::restore::ExternalSources {
        agent: Path::new(WORKER_RUN).join(EXT_AGENT),
        init: Path::new(WORKER_RUN).join(EXT_INIT),
        sys: Path::new(WORKER_RUN).join(EXT_SYS),
    })
}

/// Starts the pool (blocking: runs `criu check` once). Idempotent; a failure is logged and
/// restores spawn their workers on demand.
pub fn start() {
    POOL.get_or_init(|| match WorkerPool::start(restore_config(), POOL_SIZE) {
        Ok(pool) => Some(pool),
        Err(e) => {
            tracing::warn!(error = %e, "criu restore worker pool not started");
            None
        }
    });
}

/// A worker that can see `must_see` (a host path the restore needs, e.g. the images dir), and
/// the pool's refill ticket (drop it once the worker's request is answered). Starts the pool
/// in the background on first use.
pub fn take(must_see: &Path) -> Result<(Worker, Option<Refill>), CriuError> {
    let Some(pool) = POOL.get() else {
        std::thread::Builder::new()
            .name("criu-pool-start".into())
            .spawn(start)
            .ok();
        return Ok((Worker::spawn(&restore_config(), &[])?, None));
    };
    let Some(pool) = pool else {
        return Ok((Worker::spawn(&base_config(), &[])?, None));
    };
    let (worker, refill) = pool.take()?;
    if sees(&worker, must_see) {
        return Ok((worker, Some(refill)));
    }
    tracing::debug!(path = %must_see.display(), "pooled criu worker predates this mount; respawning");
    drop(worker);
    Ok((Worker::spawn(pool.config(), &[])?, Some(refill)))
}

/// True if `path` exists in the worker's mount namespace.
fn sees(worker: &Worker, path: &Path) -> bool {
    let relative = path.strip_prefix("/").unwrap_or(path);
    Path::new(&format!("/proc/{}/root", worker.pid()))
        .join(relative)
        .exists()
}

/// True if workers run in a mount namespace of their own (then the restore root must be
/// mounted there, not in the host's).
pub fn has_own_mount_ns(worker: &Worker) -> bool {
    let ours = std::fs::metadata("/proc/self/ns/mnt");
    let theirs = std::fs::metadata(format!("/proc/{}/ns/mnt", worker.pid()));
    match (ours, theirs) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            (a.dev(), a.ino()) != (b.dev(), b.ino())
        }
        _ => false,
    }
}
