//! Deep standby: checkpoint/restore through CRIU's RPC mode.
//!
//! `criu swrk <fd>` serves exactly one request on a `SOCK_SEQPACKET` socket. Starting criu costs
//! ~7 ms (exec + dynamic linking through the trixie loader) plus its kernel-feature probe (~30 ms
//! when `/run` is not tmpfs), so [`WorkerPool`] keeps a few workers started ahead of time and
//! refills in the background. A restore that needs files passed in (the sandbox's pre-created
//! network namespace, as `inherit_fd`) needs a worker spawned with those fds: CRIU only accepts
//! fds it inherited, so use [`Worker::spawn`] with them, ideally right after the dump.

mod helper;
mod perf_hooks;
mod pool;
mod request;
pub mod rpc;
mod worker;

use std::io;
use std::path::PathBuf;

pub use helper::helper_main;
pub use perf_hooks::hold_perf_sched_hooks;
pub use pool::{Refill, WorkerPool};
pub use request::{
    DumpOutcome, DumpRequest, RestoreOutcome, RestoreRequest, external_mount, external_netns,
};
pub use rpc::JoinNamespace;
pub use worker::{CriuConfig, InheritFd, Worker, ensure_kdat_tmpfs};

/// Why a CRIU operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error("cannot start {binary} (install it with scripts/install-criu.sh): {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the criu worker helper {program}: {source}")]
    Helper {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to criu swrk (pid {pid}): {source}")]
    Socket {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("criu swrk (pid {pid}) closed the connection without answering; it exited: {status}")]
    WorkerDied { pid: u32, status: String },
    #[error("criu sent a malformed response: {0}")]
    Protocol(String),
    #[error("criu {op} failed{errno}: {message}")]
    Failed {
        op: &'static str,
        errno: String,
        message: String,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("moving criu worker {pid} into cgroup: {source}")]
    Cgroup {
        pid: u32,
        #[source]
        source: crate::cgroup::CgroupError,
    },
}
