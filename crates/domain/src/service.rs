//! The external user service: the operations of SPEC §3, each a validated command against the
//! repositories. Handlers call one method and map its result; nothing here knows HTTP.

use crate::cluster::{CacheChange, ChangeFeed};
use crate::error::DomainError;
use crate::ids::{ExternalUserId, PlatformId, TokenId};
use crate::logs::{LogEntry, LogPage, LogQuery, LogQueryInput, ModelUsage};
use crate::pricing::Price;
use crate::quota::Quota;
use crate::ratelimit::RateLimits;
use crate::repository::Store;
use crate::time::UnixTime;
use crate::token::{AccessKey, DeleteTokenInput, IssuedToken, Token, TokenInput, TokenRecord};
use crate::topup::{TopUpInput, TopUpOutcome, TopUpResult};
use crate::user::{SyncOutcome, SyncUserInput, User};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows of `recent_logs` in stats.
pub const RECENT_LOGS: u64 = 10;

/// A source of random bytes for new keys (the OS generator in production).
pub trait Entropy: Send + Sync {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// Everything `GET /{id}/stats` shows.
#[derive(Debug, Clone)]
pub struct UserStats {
    /// The user.
    pub user: User,
    /// Their tokens.
    pub tokens: Vec<Token>,
    /// Newest consume rows.
    pub recent_logs: Vec<LogEntry>,
    /// Consumption per model.
    pub model_usage: Vec<ModelUsage>,
}

impl UserStats {
    /// Quota the user can still start spending: [`User::spendable`].
    #[must_use]
    pub fn balance_capacity(&self) -> Quota {
        self.user.spendable()
    }

    /// Per served model, how many input or output tokens the balance capacity buys.
    #[must_use]
    pub fn model_capacity(
        &self,
        served: &BTreeMap<String, Price>,
    ) -> BTreeMap<String, (Option<u64>, Option<u64>)> {
        let capacity = self.balance_capacity();
        served
            .iter()
            .map(|(m, p)| (m.clone(), p.capacity(capacity)))
            .collect()
    }
}

/// One page of logs for a user.
#[derive(Debug, Clone)]
pub struct UserLogs {
    /// The validated query (for pagination echo).
    pub query: LogQuery,
    /// The page.
    pub page: LogPage,
}

/// The operations of the external user API.
#[derive(Clone)]
pub struct ExternalUserService {
    store: Arc<dyn Store>,
    entropy: Arc<dyn Entropy>,
    feed: Arc<dyn ChangeFeed>,
    default_limits: RateLimits,
}

impl ExternalUserService {
    /// Builds the service over a store, a random source and the feed that key changes go to
    /// (so every instance's key cache drops a deleted key).
    pub fn new(
        store: Arc<dyn Store>,
        entropy: Arc<dyn Entropy>,
        feed: Arc<dyn ChangeFeed>,
    ) -> Self {
        ExternalUserService {
            store,
            entropy,
            feed,
            default_limits: RateLimits::default(),
        }
    }

    /// The rate limits of keys created without their own (`TOLLGATE_DEFAULT_RPM`, `_TPM`,
    /// `_CONCURRENCY`).
    #[must_use]
    pub fn with_default_limits(mut self, limits: RateLimits) -> Self {
        self.default_limits = limits;
        self
    }

    async fn user(&self, platform: &PlatformId, id: &ExternalUserId) -> Result<User, DomainError> {
        self.store
            .find_user(platform, id)
            .await?
            .ok_or(DomainError::UserNotFound)
    }

    /// `POST /sync`.
    pub async fn sync(
        &self,
        platform: &PlatformId,
        input: SyncUserInput,
        now: UnixTime,
    ) -> Result<SyncOutcome, DomainError> {
        let cmd = input.into_command()?;
        Ok(self.store.sync_user(platform, &cmd, now).await?)
    }

    /// `POST /topup`: credits once per `payment_id`; a repeat with the same user and amount
    /// answers the original receipt, any other repeat is a conflict.
    pub async fn top_up(
        &self,
        platform: &PlatformId,
        input: TopUpInput,
        now: UnixTime,
    ) -> Result<TopUpResult, DomainError> {
        let cmd = input.into_command()?;
        match self.store.credit(platform, &cmd, now).await? {
            TopUpOutcome::Credited(receipt) => Ok(TopUpResult {
                receipt,
                replay: false,
            }),
            TopUpOutcome::AlreadyProcessed(receipt) if receipt.is_replay_of(&cmd) => {
                Ok(TopUpResult {
                    receipt,
                    replay: true,
                })
            }
            TopUpOutcome::AlreadyProcessed(_) => Err(DomainError::PaymentIdConflict),
            TopUpOutcome::UserNotFound => Err(DomainError::UserNotFound),
        }
    }

    /// `POST /token`.
    pub async fn create_token(
        &self,
        platform: &PlatformId,
        input: TokenInput,
        now: UnixTime,
    ) -> Result<IssuedToken, DomainError> {
        let cmd = input.into_command()?;
        let user = self.user(platform, &cmd.external_user_id).await?;
        let key = AccessKey::generate(|buf| self.entropy.fill(buf));
        let record = TokenRecord {
            user_id: user.id,
            name: cmd.name,
            key_hash: key.hash(),
            hint: key.hint(),
            created_at: now,
            expires_at: now.plus_days(cmd.valid_days),
            quota_limit: cmd.quota_limit,
            limits: cmd.limits.or(self.default_limits),
        };
        let token = self.store.insert_token(&record).await?;
        self.feed.publish(CacheChange::Token(token.id)).await;
        let remain_quota = token.remain_quota(user.spendable());
        Ok(IssuedToken {
            token,
            key,
            remain_quota,
        })
    }

    /// `DELETE /token`.
    pub async fn delete_token(
        &self,
        platform: &PlatformId,
        input: DeleteTokenInput,
    ) -> Result<(ExternalUserId, TokenId), DomainError> {
        let cmd = input.into_command()?;
        // An unknown user and a token of someone else answer alike: nothing to delete here.
        let user = match self
            .store
            .find_user(platform, &cmd.external_user_id)
            .await?
        {
            Some(u) => u,
            None => return Err(DomainError::TokenNotFound),
        };
        if self.store.delete_token(user.id, cmd.token_id).await? {
            self.feed.publish(CacheChange::Token(cmd.token_id)).await;
            Ok((cmd.external_user_id, cmd.token_id))
        } else {
            Err(DomainError::TokenNotFound)
        }
    }

    /// `GET /{id}/stats`.
    pub async fn stats(&self, platform: &PlatformId, id: &str) -> Result<UserStats, DomainError> {
        let id = ExternalUserId::parse(id).ok_or(DomainError::UserNotFound)?;
        let user = self.user(platform, &id).await?;
        let tokens = self.store.list_tokens(user.id).await?;
        let recent_logs = self.store.recent_consumption(user.id, RECENT_LOGS).await?;
        let model_usage = self.store.usage_by_model(user.id).await?;
        Ok(UserStats {
            user,
            tokens,
            recent_logs,
            model_usage,
        })
    }

    /// `GET /{id}/logs`. The query is validated before the user is looked up, so bad input is
    /// a 400 whoever asks.
    pub async fn logs(
        &self,
        platform: &PlatformId,
        id: &str,
        input: LogQueryInput,
    ) -> Result<UserLogs, DomainError> {
        let query = input.into_query()?;
        let id = ExternalUserId::parse(id).ok_or(DomainError::UserNotFound)?;
        let user = self.user(platform, &id).await?;
        let page = self.store.log_page(user.id, &query).await?;
        Ok(UserLogs { query, page })
    }
}
