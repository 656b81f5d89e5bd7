//! The ledger's one error type. Recording never fails (it cannot: a record is never
//! dropped); these are the errors of starting a ledger, of queries and of shutdown.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database URL is neither `postgres://` nor `sqlite:`.
    #[error("unsupported database url (expected postgres:// or sqlite:)")]
    UnsupportedUrl,
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("spill directory {path}: {source}")]
    Spill {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another ledger (in this or another process) holds the spill directory's lock: two
    /// writers replaying the same files would race over deleting them.
    #[error("spill directory {0} is in use by another ledger")]
    SpillDirInUse(PathBuf),
    /// The writer task ended abnormally (it panicked or was cancelled).
    #[error("the ledger's writer task failed: {0}")]
    Writer(String),
}
