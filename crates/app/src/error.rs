//! The application's one error type. Use cases answer it; each wire contract (the data API,
//! the report interface, the REST reads, TAXII) converts it once into its own answer.

use br_cti_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is wrong; the message names the field, value or rule.
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request presents no credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are known but do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the state (a job already running, a name taken).
    #[error("{0}")]
    Conflict(String),
    /// The storage is full: the same request may succeed once space is freed.
    #[error("the node's disk is full ({context} failed)")]
    StorageFull {
        context: &'static str,
        cause: StoreError,
    },
    /// The database was deleted or replaced while the node ran: nothing more is written.
    #[error("{cause}")]
    StoreReplaced { cause: StoreError },
    /// An internal fault: `context` says what failed; the cause is for the log, never for
    /// clients.
    #[error("internal error while {context}: {cause}")]
    Internal {
        context: &'static str,
        cause: String,
    },
}

impl AppError {
    /// A storage error met while doing `context` (what failed, in words a client may read).
    pub fn store(context: &'static str, e: StoreError) -> Self {
        if e.is_full() {
            return AppError::StorageFull { context, cause: e };
        }
        match e {
            StoreError::TaskConflict { .. } | StoreError::Conflict(_) => {
                AppError::Conflict(e.to_string())
            }
            StoreError::Replaced(_) => AppError::StoreReplaced { cause: e },
            StoreError::Unstorable(why) => AppError::Invalid(why),
            other => AppError::internal(context, other),
        }
    }

    pub fn internal(context: &'static str, cause: impl std::fmt::Display) -> Self {
        AppError::Internal {
            context,
            cause: cause.to_string(),
        }
    }
}
