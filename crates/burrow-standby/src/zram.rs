//! The zram swap device burrow manages.
//!
//! Paged-out sandbox memory must never sit in clear text on a shared disk, and this kernel has no
//! device-mapper (so no dm-crypt swap): we use a compressed RAM block device as swap. Pages in
//! zram are still host RAM (compressed), which is why [`ZramStats`] is reported alongside the
//! per-sandbox figures.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::Command;

/// Where and how big the swap device is.
#[derive(Debug, Clone)]
pub struct ZramConfig {
    /// Device index: `/dev/zram<N>` and `/sys/block/zram<N>`.
    pub device: u32,
    /// Uncompressed capacity in bytes (rounded down to 4 KiB pages by mkswap).
    pub disksize: u64,
    /// Preferred algorithms, first available wins (lz4 decompresses fastest).
    pub algorithms: Vec<String>,
    /// Swap priority (0..=32767); higher than any disk swap so zram is used first.
    pub priority: u16,
}

impl Default for ZramConfig {
    fn default() -> Self {
        Self {
            device: 0,
            disksize: 4 << 30,
            algorithms: vec!["lz4".into(), "lzo-rle".into(), "lzo".into()],
            priority: 32000,
        }
    }
}

/// Why the zram device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ZramError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "/sys/block/zram{0} does not exist: load the zram module (modprobe zram num_devices=1) or pick another device"
    )]
    NoDevice(u32),
    #[error(
        "none of the compression algorithms {wanted:?} is offered by this kernel (it has {available:?})"
    )]
    NoAlgorithm {
        wanted: Vec<String>,
        available: Vec<String>,
    },
    #[error("invalid zram config: {0}")]
    Config(String),
    #[error(
        "/dev/zram{device} is already swap with {active} bytes but {wanted} were asked; \
         run zram::reset (swapoff + reset, which swaps everything back in) to resize"
    )]
    SizeMismatch {
        device: u32,
        active: u64,
        wanted: u64,
    },
    #[error(
        "/dev/zram{0} is initialised but holds no swap signature: something else uses it \
         (check mounts); burrow will not overwrite it"
    )]
    InUse(u32),
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
}

/// zram's `mm_stat` counters, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZramStats {
    /// Uncompressed bytes stored.
    pub orig_data_size: u64,
    /// Compressed bytes stored.
    pub compr_data_size: u64,
    /// Host RAM the device uses, allocator overhead included: the honest "RAM held" figure.
    pub mem_used_total: u64,
    pub same_pages: u64,
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureOutcome {
    AlreadyActive,
    Activated { algorithm: String },
}

fn sys_path(device: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/sys/block/zram{device}/{file}"))
}

fn dev_path(device: u32) -> String {
    format!("/dev/zram{device}")
}

fn read_sys(device: u32, file: &str) -> Result<String, ZramError> {
    let path = sys_path(device, file);
    fs::read_to_string(&path).map_err(|source| ZramError::Io { path, source })
}

fn write_sys(device: u32, file: &str, value: &str) -> Result<(), ZramError> {
    let path = sys_path(device, file);
    fs::write(&path, value).map_err(|source| ZramError::Io { path, source })
}

/// Size in bytes of an active swap area on `/dev/zram<device>`, from `/proc/swaps`.
pub fn active_swap_size(device: u32) -> Result<Option<u64>, ZramError> {
    let path = PathBuf::from("/proc/swaps");
    let swaps = fs::read_to_string(&path).map_err(|source| ZramError::Io { path, source })?;
    let dev = dev_path(device);
    Ok(swaps.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        (f.first() == Some(&dev.as_str()))
            .then(|| f.get(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 1024)
    }))
}

/// Makes sure `/dev/zram<N>` is active swap of the configured size. Idempotent: an active device
/// of the right size is left alone; a half-set-up device (ours, with a swap signature) is resumed.
pub fn ensure(config: &ZramConfig) -> Result<EnsureOutcome, ZramError> {
    if config.disksize < (16 << 20) {
        return Err(ZramError::Config(format!(
            "disksize {} is below 16 MiB",
            config.disksize
        )));
    }
    if config.priority > 32767 {
        return Err(ZramError::Config(format!(
            "priority {} is above 32767",
            config.priority
        )));
    }
    let dev = config.device;
    if !sys_path(dev, "disksize").exists() {
        return Err(ZramError::NoDevice(dev));
    }
    // Swap areas lose one header page, so compare in whole pages with that slack.
    if let Some(active) = active_swap_size(dev)? {
        if active.abs_diff(config.disksize) > 64 << 10 {
            return Err(ZramError::SizeMismatch {
                device: dev,
                active,
                wanted: config.disksize,
            });
        }
        return Ok(EnsureOutcome::AlreadyActive);
    }
    let current: u64 = read_sys(dev, "disksize")?.trim().parse().unwrap_or(0);
    let algorithm = current_algorithm(dev)?;
    if current != 0 {
        // Initialised but not swapped on: ours if it has our size and a swap signature.
        if current != config.disksize || !has_swap_signature(dev)? {
            return Err(ZramError::InUse(dev));
        }
        swapon(dev, config.priority)?;
        return Ok(EnsureOutcome::Activated { algorithm });
    }
    let algorithm = choose_algorithm(dev, &config.algorithms)?;
    write_sys(dev, "comp_algorithm", &algorithm)?;
    write_sys(dev, "disksize", &config.disksize.to_string())?;
    let result = mkswap(dev).and_then(|()| swapon(dev, config.priority));
    if result.is_err() {
        // Leave no half-initialised device behind.
        let _ = write_sys(dev, "reset", "1");
    }
    result.map(|()| EnsureOutcome::Activated { algorithm })
}

/// Turns the swap off (pages come back into RAM) and resets the device.
pub fn reset(device: u32) -> Result<(), ZramError> {
    if active_swap_size(device)?.is_some() {
        let dev = std::ffi::CString::new(dev_path(device))
            .map_err(|e| ZramError::Config(e.to_string()))?;
        // SAFETY: swapoff reads a NUL-terminated path that lives for the duration of the call.
        if unsafe { libc::swapoff(dev.as_ptr()) } != 0 {
            return Err(ZramError::Io {
                path: dev_path(device).into(),
                source: io::Error::last_os_error(),
            });
        }
    }
    write_sys(device, "reset", "1")
}

/// Reads `mm_stat`.
pub fn stats(device: u32) -> Result<ZramStats, ZramError> {
    parse_mm_stat(&read_sys(device, "mm_stat")?).ok_or_else(|| ZramError::Io {
        path: sys_path(device, "mm_stat"),
        source: io::Error::new(io::ErrorKind::InvalidData, "unexpected mm_stat format"),
    })
}

fn parse_mm_stat(text: &str) -> Option<ZramStats> {
    let v: Vec<u64> = text
        .split_ascii_whitespace()
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    Some(ZramStats {
        orig_data_size: *v.first()?,
        compr_data_size: *v.get(1)?,
        mem_used_total: *v.get(2)?,
        same_pages: *v.get(5)?,
    })
}

/// The algorithms offered, with the active one in brackets (e.g. `[lzo-rle] lzo lz4`).
fn algorithms(dev: u32) -> Result<(Vec<String>, String), ZramError> {
    let text = read_sys(dev, "comp_algorithm")?;
    let mut active = String::new();
    let names = text
        .split_ascii_whitespace()
        .map(|w| {
            if let Some(name) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                active = name.to_string();
                name.to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    Ok((names, active))
}

fn current_algorithm(dev: u32) -> Result<String, ZramError> {
    Ok(algorithms(dev)?.1)
}

fn choose_algorithm(dev: u32, wanted: &[String]) -> Result<String, ZramError> {
    let (available, _) = algorithms(dev)?;
    wanted
        .iter()
        .find(|w| available.contains(w))
        .cloned()
        .ok_or_else(|| ZramError::NoAlgorithm {
            wanted: wanted.to_vec(),
            available,
        })
}

/// mkswap writes "SWAPSPACE2" at the end of the first 4 KiB page.
fn has_swap_signature(dev: u32) -> Result<bool, ZramError> {
    let path = PathBuf::from(dev_path(dev));
    let mut page = vec![0u8; 4096];
    File::open(&path)
        .and_then(|mut f| f.read_exact(&mut page))
        .map_err(|source| ZramError::Io { path, source })?;
    Ok(&page[4086..] == b"SWAPSPACE2")
}

fn mkswap(dev: u32) -> Result<(), ZramError> {
    let out = Command::new("mkswap")
        .arg(dev_path(dev))
        .output()
        .map_err(|source| ZramError::Io {
            path: "mkswap".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ZramError::Command {
            command: format!("mkswap {}", dev_path(dev)),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn swapon(dev: u32, priority: u16) -> Result<(), ZramError> {
    let path =
        std::ffi::CString::new(dev_path(dev)).map_err(|e| ZramError::Config(e.to_string()))?;
    // <linux/swap.h>: SWAP_FLAG_PREFER | (prio & SWAP_FLAG_PRIO_MASK).
    const SWAP_FLAG_PREFER: libc::c_int = 0x8000;
    const SWAP_FLAG_PRIO_MASK: libc::c_int = 0x7fff;
    let flags = SWAP_FLAG_PREFER | ((priority as libc::c_int) & SWAP_FLAG_PRIO_MASK);
    // SAFETY: swapon reads a NUL-terminated path that lives for the duration of the call.
    if unsafe { libc::swapon(path.as_ptr(), flags) } != 0 {
        return Err(ZramError::Io {
            path: dev_path(dev).into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mm_stat() {
        let s = parse_mm_stat("  4096  1024  8192  0  8192  3  0  0  0\n").unwrap();
        assert_eq!(s.orig_data_size, 4096);
        assert_eq!(s.compr_data_size, 1024);
        assert_eq!(s.mem_used_total, 8192);
        assert_eq!(s.same_pages, 3);
        assert!(parse_mm_stat("1 2").is_none());
        assert!(parse_mm_stat("a b c d e f").is_none());
    }
}
