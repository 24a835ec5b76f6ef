//! The domain's errors. Each transport maps them to its own status codes (404, 403, 429, 400,
//! 409) and error bodies.

/// What went wrong, in terms of the domain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The object does not exist **for this caller**: one of another workspace is reported the
    /// same way, so existence is never leaked.
    #[error("{kind} '{id}' not found")]
    NotFound { kind: &'static str, id: String },
    /// The caller's role in its own workspace does not allow the call.
    #[error("this call needs the {needed} role; this key has the {has} role")]
    Forbidden {
        needed: &'static str,
        has: &'static str,
    },
    /// Only the operator key (the server's first key) may do this.
    #[error("this call needs the operator key (the server's first key, in <data_dir>/client.key)")]
    OperatorOnly,
    /// A quota of the caller's workspace is exhausted.
    #[error("{message}")]
    Quota {
        /// The limit's name as in tiers.toml (`max_awake_sandboxes`, …).
        limit: &'static str,
        message: String,
    },
    /// The request is malformed or asks for something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
}
