/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database content is invalid: {0}")]
    Corrupt(String),
    #[error("a sandbox with id {0} already exists")]
    DuplicateSandbox(String),
    #[error("the name '{0}' is taken")]
    DuplicateName(String),
    #[error("database task failed: {0}")]
    Task(String),
}
