use std::io;

/// Errors of the host-side runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("launcher failed: {0}")]
    Launch(String),
    #[error("no free network slot or uid range")]
    Exhausted,
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Unsupported(String),
    /// The caller asked for something invalid (bad id, limits out of range, duplicate id).
    #[error("invalid sandbox request: {0}")]
    Invalid(String),
    /// The sandbox is being created, destroyed, checkpointed or restored right now.
    #[error("{0}")]
    Busy(String),
    /// A host command (ip, nft, mkfs.btrfs, mount, btrfs) failed.
    #[error("{0}")]
    Command(String),
    /// A CRIU checkpoint or restore failed (the message carries criu's own error lines).
    #[error("{0}")]
    Checkpoint(String),
}

/// Builds a `map_err` closure that wraps an `io::Error` with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}
