//! cgroup v1 freezer: stop every task of a sandbox at once (zero CPU) and resume it.
//!
//! Freezing is asynchronous in the kernel: writing `FROZEN` to `freezer.state` starts it and the
//! state reads `FREEZING` until every task has stopped, so we poll until `FROZEN` with a deadline.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why freezing or thawing failed.
#[derive(Debug, thiserror::Error)]
pub enum FreezerError {
    #[error(
        "{path}: {source} (is it a cgroup v1 freezer directory, e.g. /sys/fs/cgroup/freezer/<name>?)"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cgroup {dir} did not freeze within {timeout:?} (state still {state:?}); it was thawed again. \
         A task stuck in an uninterruptible sleep (D state, e.g. on a hung NFS/FUSE mount) blocks freezing"
    )]
    Timeout {
        dir: PathBuf,
        timeout: Duration,
        state: String,
    },
    #[error("cgroup {dir} reports unexpected freezer state {state:?}")]
    UnexpectedState { dir: PathBuf, state: String },
}

/// The state in `freezer.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    Thawed,
    Freezing,
    Frozen,
}

/// A cgroup v1 freezer directory.
#[derive(Debug, Clone)]
pub struct Freezer {
    dir: PathBuf,
}

impl Freezer {
    /// Wraps an existing freezer cgroup directory; fails if it has no `freezer.state`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, FreezerError> {
        let dir = dir.into();
        let state = dir.join("freezer.state");
        fs::metadata(&state).map_err(|source| FreezerError::Io {
            path: state,
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the current state.
    pub fn state(&self) -> Result<FreezerState, FreezerError> {
        let path = self.dir.join("freezer.state");
        let text = fs::read_to_string(&path).map_err(|source| FreezerError::Io { path, source })?;
        match text.trim() {
            "THAWED" => Ok(FreezerState::Thawed),
            "FREEZING" => Ok(FreezerState::Freezing),
            "FROZEN" => Ok(FreezerState::Frozen),
            other => Err(FreezerError::UnexpectedState {
                dir: self.dir.clone(),
                state: other.to_string(),
            }),
        }
    }

    fn write_state(&self, value: &str) -> Result<(), FreezerError> {
        let path = self.dir.join("freezer.state");
        fs::write(&path, value).map_err(|source| FreezerError::Io { path, source })
    }

    /// Freezes every task and waits until the kernel reports `FROZEN`. On timeout the cgroup is
    /// thawed again, so a failed freeze never leaves a half-frozen sandbox behind.
    pub fn freeze(&self, timeout: Duration) -> Result<(), FreezerError> {
        let start = Instant::now();
        self.write_state("FROZEN")?;
        let mut polls = 0u32;
        loop {
            let state = self.state()?;
            if state == FreezerState::Frozen {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                let state = format!("{state:?}").to_uppercase();
                let _ = self.write_state("THAWED");
                return Err(FreezerError::Timeout {
                    dir: self.dir.clone(),
                    timeout,
                    state,
                });
            }
            // Freezing usually completes within a millisecond: spin briefly, then back off.
            polls += 1;
            if polls < 20 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(100));
            }
            // The kernel re-evaluates FREEZING -> FROZEN when the state is written again.
            if polls.is_multiple_of(50) {
                self.write_state("FROZEN")?;
            }
        }
    }

    /// Thaws every task; returns once the state reads `THAWED`.
    pub fn thaw(&self) -> Result<(), FreezerError> {
        self.write_state("THAWED")?;
        match self.state()? {
            FreezerState::Thawed => Ok(()),
            other => Err(FreezerError::UnexpectedState {
                dir: self.dir.clone(),
                state: format!("{other:?}").to_uppercase(),
            }),
        }
    }
}
