//! The sandbox launcher: the daemon execs `burrow-launch` for every sandbox, writes a
//! [`LaunchSpec`] as JSON on its stdin and reads one [`LaunchReport`] line from its stdout.
//! The launcher is synchronous and single-threaded on purpose: it forks.

pub mod caps;
pub mod launch;
mod overlay;
mod own_netns;
pub mod process_limits;
mod sandbox_fs;
pub mod seccomp;
pub mod spec;
mod sys;

pub use sandbox_fs::MASKED_FILES;
pub use spec::{LaunchReport, LaunchSpec, OwnNetns};
pub use sys::LaunchError;
