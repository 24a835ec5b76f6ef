//! Warm standby: push the memory of every process in a (frozen) cgroup out to swap.
//!
//! For each process we open a pidfd and call `process_madvise(MADV_PAGEOUT)` over the ranges of
//! its anonymous and private file mappings (from `/proc/<pid>/maps`), up to `IOV_MAX` ranges per
//! call. The sandbox should be frozen first so the mappings cannot change underneath us.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroup::{self, CgroupError};

/// `MADV_PAGEOUT` (Linux 5.4); spelled out because not every libc target exports it.
const MADV_PAGEOUT: libc::c_int = 21;
/// The kernel's `UIO_MAXIOV`: the most ranges one `process_madvise` call accepts.
const MAX_IOVECS: usize = 1024;

/// Why a page-out could not run at all (per-process problems are counted in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum PageoutError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("reading {path}: {source}")]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed line in {path}: {line:?}")]
    MapsFormat { path: PathBuf, line: String },
}

/// One memory range to page out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

/// Per-process memory figures from `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss: u64,
    pub rss_anon: u64,
    pub swap: u64,
}

impl std::ops::AddAssign for ProcessMemory {
    fn add_assign(&mut self, other: Self) {
        self.rss += other.rss;
        self.rss_anon += other.rss_anon;
        self.swap += other.swap;
    }
}

/// What a page-out did.
#[derive(Debug, Clone, Default)]
pub struct PageoutReport {
    /// Processes paged out.
    pub processes: usize,
    /// Processes that vanished or refused (pidfd or madvise failed with ESRCH/EPERM).
    pub processes_skipped: usize,
    /// Ranges advised, and ranges the kernel rejected (e.g. VM_PFNMAP/VM_IO areas).
    pub ranges: usize,
    pub ranges_skipped: usize,
    /// Bytes covered by the advised ranges (not bytes actually swapped).
    pub bytes_advised: u64,
    /// Summed `/proc/<pid>/status` figures before and after.
    pub before: ProcessMemory,
    pub after: ProcessMemory,
    /// `memory.usage_in_bytes` before and after, when a memory cgroup was given.
    pub memcg_before: Option<u64>,
    pub memcg_after: Option<u64>,
    pub elapsed: Duration,
}

/// Pages out every process listed in `pids_cgroup/cgroup.procs` (any v1 controller dir works, e.g.
/// the freezer dir). `memcg` (the sandbox's memory cgroup dir) is only read for the report.
pub fn pageout_cgroup(
    pids_cgroup: &Path,
    memcg: Option<&Path>,
) -> Result<PageoutReport, PageoutError> {
    let start = Instant::now();
    let mut report = PageoutReport {
        memcg_before: memcg.map(cgroup::memory_usage).transpose()?,
        ..Default::default()
    };
    for pid in cgroup::procs(pids_cgroup)? {
        let Ok(before) = process_memory(pid) else {
            report.processes_skipped += 1;
            continue;
        };
        report.before += before;
        match pageout_process(pid) {
            Ok(p) => {
                report.processes += 1;
                report.ranges += p.ranges;
                report.ranges_skipped += p.ranges_skipped;
                report.bytes_advised += p.bytes_advised;
            }
            Err(ProcessPageoutError::Gone) => report.processes_skipped += 1,
            Err(ProcessPageoutError::Fatal(e)) => return Err(e),
        }
        if let Ok(after) = process_memory(pid) {
            report.after += after;
        }
    }
    report.memcg_after = memcg.map(cgroup::memory_usage).transpose()?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Result of paging out one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessPageout {
    pub ranges: usize,
    pub ranges_skipped: usize,
    pub bytes_advised: u64,
}

/// Per-process failure: the process is gone (skip it) or something is really wrong.
#[derive(Debug)]
pub enum ProcessPageoutError {
    Gone,
    Fatal(PageoutError),
}

/// Pages out the anonymous and private file mappings of one process.
pub fn pageout_process(pid: i32) -> Result<ProcessPageout, ProcessPageoutError> {
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let maps = match fs::read_to_string(&maps_path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(ProcessPageoutError::Gone);
        }
        Err(source) => {
            return Err(ProcessPageoutError::Fatal(PageoutError::Proc {
                path: maps_path,
                source,
            }));
        }
    };
    let ranges = pageable_ranges(&maps).map_err(|line| {
        ProcessPageoutError::Fatal(PageoutError::MapsFormat {
            path: maps_path,
            line,
        })
    })?;
    let pidfd = pidfd_open(pid).map_err(|_| ProcessPageoutError::Gone)?;
    let mut result = ProcessPageout::default();
    let mut rest: &[Range] = &ranges;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(MAX_IOVECS)];
        match process_madvise_pageout(&pidfd, batch) {
            Ok(advised) => {
                // The kernel may stop early; count the fully covered ranges and resume after them.
                let (done, bytes) = covered_ranges(batch, advised);
                result.ranges += done;
                result.bytes_advised += bytes;
                if done == 0 {
                    // Nothing was advised but no error either: skip the head range to make progress.
                    result.ranges_skipped += 1;
                    rest = &rest[1..];
                } else {
                    rest = &rest[done..];
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(ProcessPageoutError::Gone);
            }
            Err(_) => {
                // The first range of the batch was rejected (EINVAL on special mappings, ENOMEM if
                // it vanished): skip it and carry on with the rest.
                result.ranges_skipped += 1;
                rest = &rest[1..];
            }
        }
    }
    Ok(result)
}

/// How many leading ranges `advised` bytes cover entirely, and their byte count.
fn covered_ranges(batch: &[Range], advised: usize) -> (usize, u64) {
    let mut left = advised as u64;
    let mut done = 0;
    let mut bytes = 0;
    for r in batch {
        let len = r.end - r.start;
        if left < len {
            break;
        }
        left -= len;
        bytes += len;
        done += 1;
    }
    (done, bytes)
}

/// Parses `/proc/<pid>/maps` and keeps the ranges worth paging out: every private mapping (anon,
/// heap, stack, private file / CoW pages) and shared anonymous memory, but not the kernel's
/// special areas. Returns the offending line on a parse error.
pub fn pageable_ranges(maps: &str) -> Result<Vec<Range>, String> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            return Err(line.to_string());
        };
        let path = fields.nth(3).unwrap_or("");
        let (Some((start, end)), true) = (range.split_once('-'), perms.len() == 4) else {
            return Err(line.to_string());
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            return Err(line.to_string());
        };
        if matches!(path, "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]") || end <= start {
            continue;
        }
        let private = perms.as_bytes()[3] == b'p';
        let shared_anon =
            path.is_empty() || path.starts_with("/dev/zero") || path.starts_with("/SYSV");
        if private || shared_anon {
            out.push(Range { start, end });
        }
    }
    Ok(out)
}

/// Reads VmRSS, RssAnon and VmSwap of a process.
pub fn process_memory(pid: i32) -> io::Result<ProcessMemory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut mem = ProcessMemory::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = || {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                * 1024
        };
        match key {
            "VmRSS" => mem.rss = kib(),
            "RssAnon" => mem.rss_anon = kib(),
            "VmSwap" => mem.swap = kib(),
            _ => {}
        }
    }
    Ok(mem)
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn process_madvise_pageout(pidfd: &OwnedFd, ranges: &[Range]) -> io::Result<usize> {
    let iovecs: Vec<libc::iovec> = ranges
        .iter()
        .map(|r| libc::iovec {
            iov_base: r.start as *mut libc::c_void,
            iov_len: (r.end - r.start) as usize,
        })
        .collect();
    // SAFETY: the iovecs describe ranges in the *target* process; the kernel only reads the iovec
    // array itself from our memory, which stays alive for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            iovecs.as_ptr(),
            iovecs.len(),
            MADV_PAGEOUT,
            0u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_private_and_anon_skips_special() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:00 123  /usr/bin/x
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 rw-s 00000000 fd:00 99   /data/shared.db
7f0000200000-7f0000300000 rw-s 00000000 00:01 5    /dev/zero (deleted)
7ffd00000000-7ffd00002000 r--p 00000000 00:00 0    [vvar]
7ffd00002000-7ffd00004000 r-xp 00000000 00:00 0    [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";
        let r = pageable_ranges(maps).unwrap();
        assert_eq!(
            r,
            vec![
                Range {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0001000
                },
                Range {
                    start: 0x7f0000000000,
                    end: 0x7f0000100000
                },
                Range {
                    start: 0x7f0000200000,
                    end: 0x7f0000300000
                },
            ]
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(pageable_ranges("zzz-1 rw-p").unwrap_err(), "zzz-1 rw-p");
        assert!(pageable_ranges("1000-2000").is_err());
    }

    #[test]
    fn partial_advice_counts_whole_ranges_only() {
        let b = [
            Range {
                start: 0,
                end: 4096,
            },
            Range {
                start: 8192,
                end: 16384,
            },
        ];
        assert_eq!(covered_ranges(&b, 4096), (1, 4096));
        assert_eq!(covered_ranges(&b, 6000), (1, 4096));
        assert_eq!(covered_ranges(&b, 12288), (2, 12288));
        assert_eq!(covered_ranges(&b, 0), (0, 0));
    }
}
