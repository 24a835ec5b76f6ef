//! Small cgroup v1 helpers shared by the standby mechanisms.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A cgroup file could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup file {path}: {source}")]
pub struct CgroupError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err(path: &Path, source: io::Error) -> CgroupError {
    CgroupError {
        path: path.to_path_buf(),
        source,
    }
}

/// The process ids (thread-group ids) in a cgroup directory, from `cgroup.procs`.
pub fn procs(cgroup_dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = cgroup_dir.join("cgroup.procs");
    let text = fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<i32>().map_err(|_| {
                err(
                    &path,
                    io::Error::new(io::ErrorKind::InvalidData, format!("not a pid: {l:?}")),
                )
            })
        })
        .collect()
}

/// Moves a process into a cgroup (`cgroup.procs`).
pub fn add_proc(cgroup_dir: &Path, pid: i32) -> Result<(), CgroupError> {
    let path = cgroup_dir.join("cgroup.procs");
    fs::write(&path, pid.to_string()).map_err(|e| err(&path, e))
}

/// Reads a file holding one unsigned integer (e.g. `memory.usage_in_bytes`).
pub fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let text = fs::read_to_string(path).map_err(|e| err(path, e))?;
    text.trim().parse::<u64>().map_err(|_| {
        err(
            path,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a number: {:?}", text.trim()),
            ),
        )
    })
}

/// Bytes charged to a memory cgroup v1 (`memory.usage_in_bytes`).
pub fn memory_usage(memcg_dir: &Path) -> Result<u64, CgroupError> {
    read_u64(&memcg_dir.join("memory.usage_in_bytes"))
}
