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
}

impl From<StorageError> for RepoError {
    fn from(e: StorageError) -> Self {
        let unavailable = matches!(
            &e,
            StorageError::Connect(_)
                | StorageError::Db(DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
        );
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
