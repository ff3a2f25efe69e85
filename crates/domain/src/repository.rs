//! Repository traits in domain terms. `storage` implements them on SeaORM; tests may implement
//! them in memory. Every method that changes a balance is one atomic statement or transaction in
//! its implementation; callers never read-modify-write quota.

use crate::billing::{
    BatchAttempt, Hold, HoldRefusal, Lease, LeaseGrowth, LeaseId, SettleOutcome, Settlement,
};
use crate::call_errors::FailedCall;
use crate::channel::{Channel, ChannelSpec, ChannelStatus};
use crate::error::RepoError;
use crate::ids::{ChannelId, ExternalUserId, PlatformId, TokenId, UserId};
use crate::logs::{LogEntry, LogPage, LogQuery, ModelUsage, NewLogEntry};
use crate::pricing::Price;
use crate::quota::Quota;
use crate::time::UnixTime;
use crate::token::{KeyHash, Token, TokenRecord};
use crate::topup::{TopUp, TopUpOutcome};
use crate::user::{SyncOutcome, SyncUser, User};
use async_trait::async_trait;

pub use crate::admin_read::AdminReadRepository;

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

    /// The token whose key has this hash (the relay's key lookup on a cache miss).
    async fn find_token_by_hash(&self, hash: &KeyHash) -> Result<Option<Token>, RepoError>;

    /// The tokens of these ids that exist, however many ids (the relay's key cache reading its
    /// keys again).
    async fn find_tokens(&self, ids: &[TokenId]) -> Result<Vec<Token>, RepoError>;
}

/// Holds and settlements: the only statements on the relay's request path.
#[async_trait]
pub trait BillingRepository: Send + Sync {
    /// Takes the hold in one transaction of conditional statements: the user's balance minus
    /// holds in flight, and the key's cap minus its holds, must each cover the amount, and the
    /// key must be enabled and unexpired at `now`. Nothing changes when it is refused.
    async fn hold(&self, hold: &Hold, now: UnixTime) -> Result<Result<(), HoldRefusal>, RepoError>;

    /// Replaces the hold of `s.request_id` by the charge, adds the log row, `used_quota` and
    /// `total_requests`, all in one transaction, at most once per request id (a call from a
    /// lease is proved by its [`BatchReceipt`] as a batch of one).
    ///
    /// [`BatchReceipt`]: crate::billing::BatchReceipt
    async fn settle(&self, s: &Settlement) -> Result<SettleOutcome, RepoError>;

    /// Settles several calls at once, each at most once as [`BillingRepository::settle`] does;
    /// the outcome of each, in order. Stores write the batch as one transaction (one balance
    /// update per user and per key, one multi-row log insert); this default settles them one by
    /// one. Either way a retry after an unclear failure — the same calls in the same order,
    /// made with [`BatchAttempt::Retry`] — charges nothing twice: a call with a hold row is
    /// proved by that row, a batch with calls from leases by its [`BatchReceipt`] (kept
    /// [`KEPT_SECS`] after its first call ended). A call is settled in one batch: listed again
    /// in another batch, a lease call would be charged again. [`BatchAttempt::First`] promises
    /// that no call of the batch was written before.
    ///
    /// [`BatchReceipt`]: crate::billing::BatchReceipt
    /// [`KEPT_SECS`]: crate::billing::BatchReceipt::KEPT_SECS
    async fn settle_batch(
        &self,
        batch: &[Settlement],
        _attempt: BatchAttempt,
    ) -> Result<Vec<SettleOutcome>, RepoError> {
        let mut out = Vec::with_capacity(batch.len());
        for s in batch {
            out.push(self.settle(s).await?);
        }
        Ok(out)
    }

    /// Releases the hold in full (the call failed before any answer); `false` when it was not
    /// in flight any more.
    async fn release(&self, request_id: &str) -> Result<bool, RepoError>;

    /// Releases up to `limit` holds whose expiry is before `now`; returns how many. Also
    /// forgets (some of) the [`BatchReceipt`]s older than [`KEPT_SECS`] at `now`.
    ///
    /// [`BatchReceipt`]: crate::billing::BatchReceipt
    /// [`KEPT_SECS`]: crate::billing::BatchReceipt::KEPT_SECS
    async fn expire_holds(&self, now: UnixTime, limit: u64) -> Result<u64, RepoError>;
}

/// Balance leases ([`LeaseId`]): how an instance reserves a slice of a user's balance at once
/// and gives it back. Settling a call taken from a lease goes through
/// [`BillingRepository::settle_batch`] with [`Settlement::lease`] set: the charge leaves the
/// balance and joins the spent quota, and the lease's row is not changed — it goes on holding
/// the charge (counted in the user's holds) until the instance *folds* it: gives it back with
/// the lease's next growth or shrink (`fold` / `amount` below), or all at once when the lease
/// ends. Until then the user's free balance (balance minus holds) reads lower by what the
/// lease's calls spent, never higher, so instances can never overspend together; and a lease
/// returned by the instance registry (its instance dead) gives back everything its row holds,
/// which is right whether or not its charges were folded. A retry of a batch that did commit
/// ([`BatchAttempt::Retry`]) charges nothing again (the batch's [`BatchReceipt`] is found
/// written).
///
/// [`BatchReceipt`]: crate::billing::BatchReceipt
#[async_trait]
pub trait LeaseRepository: Send + Sync {
    /// Adds `amount` to the lease and folds `fold` of its spent charges (gives them back from
    /// the row and the user's holds: the row changes by `amount − fold`) in one transaction,
    /// only if the user's balance minus everything held, plus `fold`, is at least
    /// `amount × headroom`; nothing changes otherwise. `create`: a new lease, whose row is
    /// inserted (`fold` is then zero). `fold` never exceeds what the lease's calls were
    /// charged since its last fold, so never what the row holds.
    async fn grow_lease(
        &self,
        lease: &Lease,
        amount: Quota,
        fold: Quota,
        headroom: u32,
        create: bool,
        now: UnixTime,
    ) -> Result<LeaseGrowth, RepoError>;

    /// Gives back `amount` of the lease (at most what it holds) — its unused part and its
    /// spent charges not yet folded; whether its row was there.
    async fn shrink_lease(&self, lease: &LeaseId, amount: Quota) -> Result<bool, RepoError>;

    /// Deletes the lease's row and gives back all it holds; what it held (`None`: it was gone).
    async fn end_lease(&self, lease: &LeaseId) -> Result<Option<Quota>, RepoError>;

    /// Whether the database answers (leases are used only while it does).
    async fn ping_leases(&self) -> Result<(), RepoError>;
}

/// Upstream channels.
#[async_trait]
pub trait ChannelRepository: Send + Sync {
    /// Every channel, by id.
    async fn list_channels(&self) -> Result<Vec<Channel>, RepoError>;

    /// Stores a new, enabled channel.
    async fn insert_channel(&self, spec: &ChannelSpec, now: UnixTime)
    -> Result<Channel, RepoError>;

    /// Replaces a channel's settings; `None` when there is no such channel.
    async fn update_channel(
        &self,
        id: ChannelId,
        spec: &ChannelSpec,
        now: UnixTime,
    ) -> Result<Option<Channel>, RepoError>;

    /// Deletes a channel; `false` when there is none.
    async fn delete_channel(&self, id: ChannelId) -> Result<bool, RepoError>;

    /// Switches a channel on or off, with the reason when Tollgate does it. With `only_from`,
    /// only a channel currently in that status changes (so Tollgate's automatic switches never
    /// override an admin's). `false` when no channel changed (or, without `only_from`, when
    /// there is none).
    async fn set_channel_status(
        &self,
        id: ChannelId,
        status: ChannelStatus,
        reason: &str,
        now: UnixTime,
        only_from: Option<ChannelStatus>,
    ) -> Result<bool, RepoError>;
}

/// Model prices.
#[async_trait]
pub trait PriceRepository: Send + Sync {
    /// Every price.
    async fn list_prices(&self) -> Result<Vec<(String, Price)>, RepoError>;

    /// Creates or replaces the price of a model.
    async fn put_price(&self, model: &str, price: &Price, now: UnixTime) -> Result<(), RepoError>;
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

/// Failed calls, counted per hour for the usage report (SPEC §7; what counts as one:
/// [`crate::call_errors`]).
#[async_trait]
pub trait CallErrorRepository: Send + Sync {
    /// Counts `failures` in the hours they happened, per channel and kind: the whole batch or,
    /// when this returns an error, none of it (so a failed batch can be retried as it is).
    /// Concurrent batches, from this instance or others, add up exactly. An empty batch does
    /// nothing.
    async fn record_call_errors(&self, failures: &[FailedCall]) -> Result<(), RepoError>;
}

/// Everything the relay and the admin API need.
pub trait RelayStore:
    TokenRepository + BillingRepository + ChannelRepository + PriceRepository + CallErrorRepository
{
}

impl<
    T: TokenRepository + BillingRepository + ChannelRepository + PriceRepository + CallErrorRepository,
> RelayStore for T
{
}

/// Everything the external user service needs.
pub trait Store: UserRepository + TopUpRepository + TokenRepository + LogRepository {}

impl<T: UserRepository + TopUpRepository + TokenRepository + LogRepository> Store for T {}
