//! Per-sandbox cgroup v1 groups: `/sys/fs/cgroup/<controller>/<parent>/<id>` (`<parent>` is
//! `burrow` for instance 0, see [`crate::instance`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{RuntimeError, io_err};

/// Controllers every sandbox gets a group in. The launcher joins all of them first thing.
pub const CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroups of one sandbox.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    parent: String,
    id: String,
}

/// Limits written when the cgroups are created.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpus: f64,
    pub pids_max: u64,
}

impl Cgroups {
    /// The groups of sandbox `id` under `<root>/<controller>/<parent>/`.
    pub fn new(root: &Path, parent: &str, id: &str) -> Self {
        Self {
            root: root.to_owned(),
            parent: parent.to_owned(),
            id: id.to_owned(),
        }
    }

    fn dir(&self, controller: &str) -> PathBuf {
        self.root.join(controller).join(&self.parent).join(&self.id)
    }

    /// `cgroup.procs` of each group, for the launch spec.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        CONTROLLERS
            .iter()
            .map(|c| self.dir(c).join("cgroup.procs"))
            .collect()
    }

    /// Makes sure `<controller>/<parent>` exists for every controller.
    pub fn ensure_parents(root: &Path, parent: &str) -> Result<(), RuntimeError> {
        for controller in CONTROLLERS {
            let base = root.join(controller);
            if !base.join("cgroup.procs").exists() {
                return Err(RuntimeError::Unsupported(format!(
                    "cgroup v1 controller {controller:?} is not mounted at {base:?}"
                )));
            }
            let dir = base.join(parent);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create {dir:?}")))?;
        }
        Ok(())
    }

    /// Creates the groups and writes the limits.
    pub fn create(&self, limits: Limits) -> Result<(), RuntimeError> {
        for controller in CONTROLLERS {
            let dir = self.dir(controller);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("create cgroup {dir:?}")))?;
        }
        let mem = self.dir("memory");
        write(&mem.join("memory.limit_in_bytes"), limits.memory_bytes)?;
        // No swap beyond the memory limit, when swap accounting exists.
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, limits.memory_bytes)?;
        }
        let cpu = self.dir("cpu");
        write(&cpu.join("cpu.cfs_period_us"), CPU_PERIOD_US)?;
        let quota = ((limits.cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
        write(&cpu.join("cpu.cfs_quota_us"), quota)?;
        write(&self.dir("pids").join("pids.max"), limits.pids_max)?;
        Ok(())
    }

    /// Tells the kernel never to swap this sandbox's memory (zero data retention): with
    /// `memory.swappiness=0` reclaim of the group takes only file pages, never anon or tmpfs.
    pub fn never_swap(&self) -> Result<(), RuntimeError> {
        write(&self.dir("memory").join("memory.swappiness"), 0)
    }

    /// Freezes the sandbox, SIGKILLs every task, thaws, and waits until every group is empty.
    pub fn kill_all(&self) -> Result<(), RuntimeError> {
        let freezer = self.dir("freezer");
        if !freezer.exists() {
            return Ok(());
        }
        let state = freezer.join("freezer.state");
        // Frozen tasks cannot fork while we collect and kill them.
        let _ = std::fs::write(&state, "FROZEN");
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match std::fs::read_to_string(&state) {
                Ok(s) if s.trim() == "FROZEN" => break,
                Ok(_) => std::thread::sleep(Duration::from_micros(200)),
                Err(_) => break,
            }
        }
        for pid in read_procs(&freezer) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::write(&state, "THAWED");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<i32> = CONTROLLERS
                .iter()
                .flat_map(|c| read_procs(&self.dir(c)))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Launch(format!(
                    "sandbox {}: processes {left:?} survived SIGKILL for 10 s",
                    self.id
                )));
            }
            for pid in &left {
                // SAFETY: see above.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Thaws the freezer group (a no-op if it is not frozen).
    pub fn thaw(&self) -> Result<(), RuntimeError> {
        let state = self.dir("freezer").join("freezer.state");
        std::fs::write(&state, "THAWED").map_err(io_err(format!("write {state:?}")))
    }

    /// Removes the (empty) groups. Missing groups are fine.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        for controller in CONTROLLERS {
            let dir = self.dir(controller);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // EBUSY while the last exiting task is still being released.
                    Err(e)
                        if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) =>
                    {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(io_err(format!("remove cgroup {dir:?}"))(e)),
                }
            }
        }
        Ok(())
    }

    pub fn exists(&self) -> bool {
        CONTROLLERS.iter().any(|c| self.dir(c).exists())
    }

    pub fn cpu_seconds(&self) -> f64 {
        read_u64(&self.dir("cpuacct").join("cpuacct.usage")).unwrap_or(0) as f64 / 1e9
    }
    pub fn memory_bytes(&self) -> u64 {
        read_u64(&self.dir("memory").join("memory.usage_in_bytes")).unwrap_or(0)
    }
    pub fn memory_limit_bytes(&self) -> u64 {
        read_u64(&self.dir("memory").join("memory.limit_in_bytes")).unwrap_or(0)
    }
    pub fn pids_current(&self) -> u64 {
        read_u64(&self.dir("pids").join("pids.current")).unwrap_or(0)
    }
}

/// Ids of every sandbox group under `<controller>/<parent>/` in any controller.
/// Where [`favor_dynamic_moves`] mounts its hierarchy.
const DYNMODS_MOUNT: &str = "/run/burrow/cgroup-dynmods";

/// Makes moving a process between cgroups cheap: mounts an empty named v1 hierarchy with
/// `favordynmods` (Linux >= 6.1), which keeps the kernel's global cgroup threadgroup lock in
/// its writer-friendly mode. Without it the first move after a quiet spell waits for an RCU
/// grace period, ~10 ms here, on the path of every create (the launcher joins the sandbox's
/// cgroups) and every deep-standby restore (the criu worker does); with it ~0.3 ms. The price
/// is a slightly slower fork/exit host-wide. Idempotent; a kernel without the option only
/// costs those milliseconds (logged).
pub fn favor_dynamic_moves() {
    let target = Path::new(DYNMODS_MOUNT);
    let mounted = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split(' ').nth(1) == Some(DYNMODS_MOUNT))
    });
    if mounted {
        return;
    }
    let result = std::fs::create_dir_all(target)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::host::run_command(
                "mount",
                &[
                    "-t",
                    "cgroup",
                    "-o",
                    "none,name=burrow-dynmods,favordynmods",
                    "burrow-dynmods",
                    DYNMODS_MOUNT,
                ],
                None,
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot mount a favordynmods cgroup hierarchy: joining a \
            cgroup may wait ~10 ms for RCU");
    }
}

pub fn existing_ids(root: &Path, parent: &str) -> Vec<String> {
    let mut ids: Vec<String> = CONTROLLERS
        .iter()
        .filter_map(|c| std::fs::read_dir(root.join(c).join(parent)).ok())
        .flat_map(|dir| dir.flatten())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn write(path: &Path, value: u64) -> Result<(), RuntimeError> {
    std::fs::write(path, value.to_string()).map_err(io_err(format!("write {value} to {path:?}")))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
