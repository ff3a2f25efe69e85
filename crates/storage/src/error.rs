//! Errors of the storage crate and their conversion to the domain's [`RepoError`], which keeps
//! driver text out of anything a client sees.

use sea_orm::DbErr;
use tollgate_domain::RepoError;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Could not connect.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A transaction still met lock conflicts after every retry.
    #[error("database contention: {0}")]
    Contention(&'static str),
    /// A stored row cannot be a valid domain value.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A channel key cannot be encrypted, or a stored one cannot be decrypted (no secret, or
    /// another one). The text names the channel and the setting, never a key.
    #[error("{0}")]
    SecretKey(String),
}

/// Whether a failed statement means the database could not be reached (the connection was
/// refused, broke or timed out), rather than that it refused the statement.
fn is_unreachable(e: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => matches!(
            &**s,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
        ),
        _ => false,
    }
}

impl From<StorageError> for RepoError {
    fn from(e: StorageError) -> Self {
        let unavailable = match &e {
            StorageError::Connect(_) => true,
            StorageError::Db(db) => is_unreachable(db),
            _ => false,
        };
        let detail = e.to_string();
        if unavailable {
            RepoError::Unavailable { detail }
        } else {
            RepoError::Failure { detail }
        }
    }
}

/// Shorthand for repository results.
pub(crate) type Result<T> = std::result::Result<T, StorageError>;

pub(crate) fn corrupt(what: &str, id: i64) -> StorageError {
    StorageError::Corrupt(format!("{what} of row {id}"))
}
