/// Errors of the template store and builders.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template '{0}' not found")]
    NotFound(String),
    #[error("template '{0}' already exists")]
    AlreadyExists(String),
    #[error("invalid template name '{0}': use 1-63 characters a-z, 0-9, '-', '_', starting with a letter or digit")]
    InvalidName(String),
    #[error("template '{0}' is used by running sandboxes")]
    InUse(String),
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
