//! Runtime instances: several burrow servers (say, the host's daemon and a test suite's servers)
//! may share one host. Each data dir owns one instance number `n`, claimed with a lock file and
//! remembered in `<data_dir>/instance`; everything host-global is named after it, so runtimes never
//! touch each other's network namespaces, nftables table, cgroups, subnets or uid ranges.
//!
//! | what | instance 0 | instance n ≥ 1 |
//! |---|---|---|
//! | netns | `burrow-<k>` | `burrow<n>-<k>` |
//! | host veth | `bw<k>` | `bw<n>x<k>` |
//! | subnet | 10.200.0.0/16 | 10.(200+n).0.0/16 |
//! | nftables table | `inet burrow` | `inet burrow<n>` |
//! | cgroup parent | `<controller>/burrow` | `<controller>/burrow<n>` |
//! | uid-range indexes | 1 ..= 40000 | 40000 + (n-1)·300 + 1 ..= +300 |

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{RuntimeError, io_err};

/// Highest instance number: 10.(200+n) must stay a valid octet.
pub const MAX_INSTANCE: u8 = 55;
const LOCK_DIR: &str = "/run/burrow";
const DEFAULT_DATA_DIR: &str = "/var/lib/burrow";
const DEFAULT_RANGES: u32 = 40_000;
const TEST_RANGES: u32 = 300;

/// A claimed instance number; the claim lasts as long as this value.
#[derive(Debug)]
pub struct Instance {
    n: u8,
    _lock: File,
}

impl Instance {
    /// Claims the instance recorded in `data_dir`, or the lowest free one for a new data dir.
    pub fn claim(data_dir: &Path) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(LOCK_DIR).map_err(io_err(format!("create {LOCK_DIR}")))?;
        let record = data_dir.join("instance");
        if let Ok(text) = std::fs::read_to_string(&record) {
            let n: u8 = text
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= MAX_INSTANCE)
                .ok_or_else(|| {
                    RuntimeError::Invalid(format!("{record:?} does not hold an instance number"))
                })?;
            // A runtime being torn down (a restart in the same process) may hold it a moment longer.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            let mut lock = try_lock(n)?;
            while lock.is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
                lock = try_lock(n)?;
            }
            return match lock {
                Some(lock) => {
                    record_owner(n, data_dir)?;
                    Ok(Self { n, _lock: lock })
                }
                None => Err(RuntimeError::Invalid(format!(
                    "runtime instance {n} (recorded in {record:?}) is held by another running burrow server"
                ))),
            };
        }
        // Instance 0 keeps the plain names (`burrow-<k>`, `bw<k>`, …) for the default data dir;
        // other data dirs (tests, second servers) take the lowest free number above it.
        let first = if data_dir == Path::new(DEFAULT_DATA_DIR) {
            0
        } else {
            1
        };
        for n in first..=MAX_INSTANCE {
            let Some(lock) = try_lock(n)? else { continue };
            // Free of a running server, but maybe another data dir's whose server is down: its
            // sandboxes' cgroups and namespaces carry this number, and a new owner's start-up
            // would remove them as leftovers.
            if owned_by_another(n, data_dir) {
                continue;
            }
            let mut f = File::create(&record).map_err(io_err(format!("create {record:?}")))?;
            writeln!(f, "{n}").map_err(io_err(format!("write {record:?}")))?;
            record_owner(n, data_dir)?;
            return Ok(Self { n, _lock: lock });
        }
        Err(RuntimeError::Exhausted)
    }

    pub fn naming(&self) -> Naming {
        Naming(self.n)
    }
}

/// The host-global names of one instance (cheap to copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Naming(pub u8);

impl Naming {
    pub fn netns_prefix(self) -> String {
        match self.0 {
            0 => "burrow-".into(),
            n => format!("burrow{n}-"),
        }
    }
    pub fn veth(self, k: u32) -> String {
        match self.0 {
            0 => format!("bw{k}"),
            n => format!("bw{n}x{k}"),
        }
    }
    pub fn subnet_octet(self) -> u8 {
        200 + self.0
    }
    pub fn nft_table(self) -> String {
        match self.0 {
            0 => "burrow".into(),
            n => format!("burrow{n}"),
        }
    }
    pub fn cgroup_parent(self) -> String {
        self.nft_table()
    }
    /// uid-range indexes this instance may hand out.
    pub fn uid_indexes(self) -> std::ops::RangeInclusive<u32> {
        match u32::from(self.0) {
            0 => 1..=DEFAULT_RANGES,
            n => {
                let first = DEFAULT_RANGES + (n - 1) * TEST_RANGES + 1;
                first..=first + TEST_RANGES - 1
            }
        }
    }
}

/// `/run/burrow/instance-<n>.owner`: the data dir that claimed instance `n` since the host
/// booted (the same lifetime as the cgroups and namespaces named after it).
fn owner_file(n: u8) -> std::path::PathBuf {
    Path::new(LOCK_DIR).join(format!("instance-{n}.owner"))
}

fn record_owner(n: u8, data_dir: &Path) -> Result<(), RuntimeError> {
    let path = owner_file(n);
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    std::fs::write(&path, dir.as_os_str().as_bytes()).map_err(io_err(format!("write {path:?}")))
}

/// Whether instance `n` belongs to another data dir that still exists and still records `n`
/// (a server of it may start again and expect its sandboxes' host resources intact).
fn owned_by_another(n: u8, data_dir: &Path) -> bool {
    let Ok(owner) = std::fs::read(owner_file(n)) else {
        return false;
    };
    let owner = Path::new(std::ffi::OsStr::from_bytes(&owner));
    let ours = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if owner == ours {
        return false;
    }
    std::fs::read_to_string(owner.join("instance"))
        .ok()
        .and_then(|t| t.trim().parse::<u8>().ok())
        == Some(n)
}

/// Takes the instance's lock without waiting; `None` if another process holds it.
fn try_lock(n: u8) -> Result<Option<File>, RuntimeError> {
    let path = Path::new(LOCK_DIR).join(format!("instance-{n}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {path:?}")))?;
    // SAFETY: flock on a valid, owned descriptor; LOCK_NB never blocks.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((rc == 0).then_some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_zero_keeps_the_documented_names() {
        let n = Naming(0);
        assert_eq!(n.netns_prefix(), "burrow-");
        assert_eq!(n.veth(12), "bw12");
        assert_eq!(n.nft_table(), "burrow");
        assert_eq!(n.subnet_octet(), 200);
        assert_eq!(n.uid_indexes(), 1..=40_000);
    }

    #[test]
    fn other_instances_never_overlap() {
        let (a, b) = (Naming(1), Naming(2));
        assert_ne!(a.netns_prefix(), b.netns_prefix());
        assert!(a.uid_indexes().end() < b.uid_indexes().start());
        assert!(Naming(0).uid_indexes().end() < a.uid_indexes().start());
        assert!(*Naming(MAX_INSTANCE).uid_indexes().end() < crate::state::MAX_INDEX);
        assert!(
            Naming(MAX_INSTANCE).veth(16_383).len() <= 15,
            "interface names are at most 15 bytes"
        );
        assert!(!"burrow12-3".starts_with(&Naming(1).netns_prefix()));
    }

    /// A data dir whose server is down keeps its number: a new data dir does not take it (its
    /// start-up would remove the sandboxes' cgroups as leftovers). Once the old data dir is
    /// gone, its number is free again.
    #[test]
    fn a_stopped_servers_instance_is_not_taken_by_a_new_data_dir() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root (/run/burrow)");
            return;
        }
        let a = tempfile::tempdir().unwrap();
        let n = Instance::claim(a.path()).unwrap().naming().0; // claimed, then released
        let b = tempfile::tempdir().unwrap();
        let taken = Instance::claim(b.path()).unwrap();
        assert_ne!(
            taken.naming().0,
            n,
            "the stopped server's instance was taken"
        );
        let again = Instance::claim(a.path()).unwrap();
        assert_eq!(
            again.naming().0,
            n,
            "the old data dir gets its own number back"
        );
        drop(again);
        drop(a);
        let c = tempfile::tempdir().unwrap();
        let reused = Instance::claim(c.path()).unwrap();
        assert!(
            reused.naming().0 <= n,
            "a removed data dir's number is free again"
        );
    }
}
