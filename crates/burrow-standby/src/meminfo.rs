//! The host's `/proc/meminfo`: what memory-pressure decisions and the density benchmark read.

use std::io;

/// One read of `/proc/meminfo`.
#[derive(Debug, Clone)]
pub struct Meminfo(String);

impl Meminfo {
    pub fn read() -> io::Result<Self> {
        std::fs::read_to_string("/proc/meminfo").map(Self)
    }

    /// A field in bytes (`MemAvailable`, `SUnreclaim`, …; the name without its colon), or
    /// `None` if this kernel does not report it.
    pub fn bytes(&self, key: &str) -> Option<u64> {
        self.0.lines().find_map(|l| {
            let kib: u64 = l
                .strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kib * 1024)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_bytes_by_exact_name() {
        let m = Meminfo("MemTotal:       24000 kB\nMemAvailable:    1000 kB\nMem:  1 kB\n".into());
        assert_eq!(m.bytes("MemTotal"), Some(24000 * 1024));
        assert_eq!(m.bytes("MemAvailable"), Some(1000 * 1024));
        assert_eq!(m.bytes("Mem"), Some(1024));
        assert_eq!(m.bytes("SUnreclaim"), None);
    }

    #[test]
    fn the_host_reports_available_memory() {
        let m = Meminfo::read().unwrap();
        assert!(m.bytes("MemAvailable").unwrap() <= m.bytes("MemTotal").unwrap());
    }
}
