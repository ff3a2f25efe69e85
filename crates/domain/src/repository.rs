//! Repository traits in domain terms. `storage` implements them on SeaORM; tests may implement
//! them in memory. Every method that changes a balance is one atomic statement or transaction in
//! its implementation; callers never read-modify-write quota.

use crate::error::RepoError;
use crate::ids::{ExternalUserId, PlatformId, TokenId, UserId};
use crate::logs::{LogEntry, LogPage, LogQuery, ModelUsage, NewLogEntry};
use crate::time::UnixTime;
use crate::token::{Token, TokenRecord};
use crate::topup::{TopUp, TopUpOutcome};
use crate::user::{SyncOutcome, SyncUser, User};
use async_trait::async_trait;

/// Users of a platform.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates the user or updates the profile fields the command carries, never touching
    /// quota, usage or tokens. Concurrent syncs of one new id create exactly one user.
    async fn sync_user(
        &self,
        platform: &PlatformId,
        cmd: &SyncUser,
        now: UnixTime,
    ) -> Result<SyncOutcome, RepoError>;

    /// The user with this external id under this platform.
    async fn find_user(
        &self,
        platform: &PlatformId,
        id: &ExternalUserId,
    ) -> Result<Option<User>, RepoError>;
}

/// Credits.
#[async_trait]
pub trait TopUpRepository: Send + Sync {
    /// Credits the top-up unless its `payment_id` was seen before on this platform: the receipt,
    /// the balance change and the log row commit together or not at all.
    async fn credit(
        &self,
        platform: &PlatformId,
        cmd: &TopUp,
        now: UnixTime,
    ) -> Result<TopUpOutcome, RepoError>;
}

/// API keys.
#[async_trait]
pub trait TokenRepository: Send + Sync {
    /// Stores a new token.
    async fn insert_token(&self, record: &TokenRecord) -> Result<Token, RepoError>;

    /// Tokens of a user, oldest first.
    async fn list_tokens(&self, user: UserId) -> Result<Vec<Token>, RepoError>;

    /// Deletes a token of this user; `false` when the user has no such token.
    async fn delete_token(&self, user: UserId, token: TokenId) -> Result<bool, RepoError>;
}

/// The log.
#[async_trait]
pub trait LogRepository: Send + Sync {
    /// Appends a row (consume rows come from settled calls; top-up rows are written by
    /// [`TopUpRepository::credit`] inside its transaction).
    async fn append_log(&self, entry: &NewLogEntry) -> Result<LogEntry, RepoError>;

    /// One page of the filtered log, newest first (time, then id), with totals over the filter.
    async fn log_page(&self, user: UserId, query: &LogQuery) -> Result<LogPage, RepoError>;

    /// The newest `limit` consume rows.
    async fn recent_consumption(
        &self,
        user: UserId,
        limit: u64,
    ) -> Result<Vec<LogEntry>, RepoError>;

    /// Consumption grouped by model.
    async fn usage_by_model(&self, user: UserId) -> Result<Vec<ModelUsage>, RepoError>;
}

/// Everything the external user service needs.
pub trait Store: UserRepository + TopUpRepository + TokenRepository + LogRepository {}

impl<T: UserRepository + TopUpRepository + TokenRepository + LogRepository> Store for T {}
