//! The domain's errors. Each transport maps them to its own status codes and error bodies (the
//! REST and E2B APIs in `burrow-server`'s `error.rs`); nothing here knows HTTP.

use burrow_runtime::RuntimeError;
use burrow_store::StoreError;
use burrow_templates::TemplateError;

/// What went wrong, in terms of the domain.
#[derive(Debug, thiserror::Error)]
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
    /// A path inside a sandbox is malformed (relative where it must be absolute, NUL, …).
    #[error("{0}")]
    InvalidPath(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The sandbox's state does not allow the call; `code` names the refusal
    /// (`restart_refused`, `standby_refused`, `sandbox_not_running`).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// This host cannot do it at all (deep standby without a usable CRIU).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// An operation on a sandbox failed on the server's side (`standby_failed`).
    #[error("{message}")]
    Failed { code: &'static str, message: String },
    /// The template's start command or ready check failed.
    #[error("{0}")]
    StartFailed(String),
    /// The sandbox's agent answered an error, or could not be reached.
    #[error("{message}")]
    Agent { kind: AgentFailure, message: String },
    /// A bug or a broken host: nothing the caller can change.
    #[error("{0}")]
    Internal(String),
    #[error("state database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// How a call to a sandbox's agent failed, as far as the caller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentFailure {
    /// The file or directory does not exist.
    FileNotFound,
    /// The file or directory exists already.
    FileExists,
    /// The caller asked for something the agent refuses (bad path, unknown user, …).
    Invalid,
    /// The selected user may not do it.
    PermissionDenied,
    /// The sandbox's disk is full.
    NoSpace,
    /// Anything else: the agent misbehaved or could not be reached.
    Other,
}

impl CoreError {
    pub fn sandbox_not_found(id: &str) -> Self {
        Self::NotFound {
            kind: "sandbox",
            id: id.to_string(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub fn invalid_path(message: impl Into<String>) -> Self {
        Self::InvalidPath(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    pub fn agent(message: impl Into<String>) -> Self {
        Self::Agent {
            kind: AgentFailure::Other,
            message: message.into(),
        }
    }
}
