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
}
