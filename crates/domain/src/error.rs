//! Errors of the domain layer. Storage failures arrive as [`RepoError`], whose text is safe to
//! show (it never carries SQL or driver detail); the detail is kept apart for logs.

use crate::validation::ValidationErrors;

/// A repository could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database could not be reached or timed out.
    #[error("storage unavailable")]
    Unavailable {
        /// Driver detail, for logs only.
        detail: String,
    },
    /// Any other storage failure.
    #[error("storage failure")]
    Failure {
        /// Driver detail, for logs only.
        detail: String,
    },
}

impl RepoError {
    /// Detail for logs (never for clients).
    #[must_use]
    pub fn detail(&self) -> &str {
        match self {
            RepoError::Unavailable { detail } | RepoError::Failure { detail } => detail,
        }
    }
}

/// Why a domain operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request broke a validation rule.
    #[error("{0}")]
    Validation(#[from] ValidationErrors),
    /// No such user under this platform.
    #[error("user not found")]
    UserNotFound,
    /// No such token for this user.
    #[error("token not found")]
    TokenNotFound,
    /// No such channel.
    #[error("channel not found")]
    ChannelNotFound,
    /// The payment id was already used with another user or amount.
    #[error("payment id already processed with different data")]
    PaymentIdConflict,
    /// Storage failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
}
