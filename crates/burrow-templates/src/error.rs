/// Errors of the template store and builders.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{0}' not found")]
    NotFound(String),
    #[error("template '{0}' already exists")]
    AlreadyExists(String),
    #[error(
        "invalid template name '{0}': use 1-63 characters a-z, 0-9, '-', '_', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("template '{0}' is used by running sandboxes")]
    InUse(String),
    /// Other templates were built on this one and still use its layers.
    #[error("template '{name}' is the parent of {dependents:?}: remove those first")]
    HasDependents {
        name: String,
        dependents: Vec<String>,
    },
    #[error("unsafe archive entry '{path}': {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("build failed: {0}")]
    BuildFailed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl TemplateError {
    pub(crate) fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    pub(crate) fn unsafe_entry(path: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Self::UnsafeEntry {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

/// Adds a context message to I/O results (`std::io::Error` and `rustix::io::Errno`).
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, TemplateError>;
}

impl<T, E: Into<std::io::Error>> IoContext<T> for Result<T, E> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, TemplateError> {
        self.map_err(|e| TemplateError::io(context(), e))
    }
}
