//! The operator's read view across users and platforms (SPEC §7): the validated queries of
//! `GET /api/admin/users`, `/users/{id}`, `/logs` and `/usage`, the read models they return,
//! the [`AdminReadRepository`] port that storage implements, and [`AdminReadService`], which
//! composes them.
//!
//! Listings are bounded so that no request costs a walk over a large table: a listing counts
//! and pages through at most [`Limits::window`] rows (newest first), and a filter that no index
//! answers (a model substring; a channel together with a user) is checked against at most
//! [`Limits::scan`] rows of the range the index does answer — the page then says how far back
//! it searched ([`AdminLogPage::searched_from`]).

use crate::error::{DomainError, RepoError};
use crate::ids::{ChannelId, ExternalUserId, UserId};
use crate::logs::{LogEntry, LogKind, LogQuery, LogQueryInput, ModelUsage};
use crate::quota::Quota;
use crate::repository::{LogRepository, TokenRepository};
use crate::time::UnixTime;
use crate::token::Token;
use crate::user::User;
use crate::validation::ValidationErrors;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Seconds in an hour.
pub const HOUR: i64 = 3_600;
/// Hours `GET /usage` covers when `hours` is absent.
pub const DEFAULT_HOURS: u64 = 24;
/// Most hours `GET /usage` covers (a week).
pub const MAX_HOURS: u64 = 168;
/// Longest `query` of `GET /users`: the longest identifier it can match.
pub const MAX_QUERY_CHARS: usize = ExternalUserId::MAX_CHARS;
/// Largest id filter (ids are positive 64-bit integers).
const MAX_ID: u64 = i64::MAX.unsigned_abs();

/// How much of a table one listing may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows a listing counts and lets pages reach, newest first. Past it the total reads
    /// "at least" and a narrower filter is the way further back (search engines cap result
    /// windows the same way, e.g. Elasticsearch's `max_result_window` of 10,000).
    pub window: u64,
    /// Rows of the indexed range that a filter no index answers is checked against.
    pub scan: u64,
}

impl Limits {
    /// The limits of the admin API.
    pub const DEFAULT: Limits = Limits {
        window: 10_000,
        scan: 50_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A count that stops at the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// Matching rows, at most the window.
    pub total: u64,
    /// More rows match than the window holds.
    pub capped: bool,
}

impl Counted {
    /// From a count that went up to one row past `window`.
    #[must_use]
    pub fn of(counted: u64, window: u64) -> Self {
        Counted {
            total: counted.min(window),
            capped: counted > window,
        }
    }

    /// Pages of `page_size` rows needed for the counted rows.
    #[must_use]
    pub fn total_pages(&self, page_size: u64) -> u64 {
        self.total.div_ceil(page_size.max(1))
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// A query-string integer in `1..=max`: the tags of the log query (`number`, `min`, `max`).
fn positive(
    v: Option<String>,
    fail: impl Fn(&'static str) -> ValidationErrors,
    max: u64,
) -> Result<Option<u64>, ValidationErrors> {
    let Some(s) = non_empty(v) else {
        return Ok(None);
    };
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(if s.starts_with('-') { "min" } else { "number" }));
    }
    match s.parse::<u64>() {
        Ok(0) => Err(fail("min")),
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(fail("max")),
    }
}

/// The log query's failure under another struct name (the log query reports one field).
fn renamed(e: ValidationErrors, struct_name: &'static str) -> ValidationErrors {
    match e.fields().first() {
        Some(f) => ValidationErrors::single(struct_name, f.field, &f.tag),
        None => e,
    }
}

/// The page of a listing, checked against the window: a page past it is a 400, not an
/// expensive empty answer.
fn paging(
    page: Option<String>,
    page_size: Option<String>,
    limits: Limits,
    struct_name: &'static str,
) -> Result<(u64, u64), ValidationErrors> {
    // The page rules of the external log query, reused as they are.
    let q = LogQueryInput {
        page,
        page_size,
        ..LogQueryInput::default()
    }
    .into_query()
    .map_err(|e| renamed(e, struct_name))?;
    if q.offset().saturating_add(q.page_size) > limits.window {
        return Err(ValidationErrors::single(struct_name, "Page", "max"));
    }
    Ok((q.page, q.page_size))
}

/// `GET /api/admin/users` query string as received.
#[derive(Debug, Default, Clone)]
pub struct UserSearchInput {
    /// `query`: part of an external user id or username.
    pub query: Option<String>,
    /// `page` (from 1).
    pub page: Option<String>,
    /// `page_size` (1–100).
    pub page_size: Option<String>,
}

/// A validated user search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSearch {
    /// External user id or username contains this, byte for byte (`%` and `_` are plain
    /// characters).
    pub contains: Option<String>,
    /// Page, from 1.
    pub page: u64,
    /// Rows per page.
    pub page_size: u64,
    /// How much the listing may touch.
    pub limits: Limits,
}

impl UserSearchInput {
    /// Validates the query (`AdminUsersQuery`).
    pub fn into_search(self) -> Result<UserSearch, ValidationErrors> {
        const S: &str = "AdminUsersQuery";
        let contains = non_empty(self.query);
        if contains
            .as_ref()
            .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
        {
            return Err(ValidationErrors::single(S, "Query", "max"));
        }
        let limits = Limits::DEFAULT;
        let (page, page_size) = paging(self.page, self.page_size, limits, S)?;
        Ok(UserSearch {
            contains,
            page,
            page_size,
            limits,
        })
    }
}

impl UserSearch {
    /// Rows to skip.
    #[must_use]
    pub fn offset(&self) -> u64 {
        (self.page - 1) * self.page_size
    }
}

/// Which platform a user belongs to, shown as the first 8 hex digits of the platform's stored
/// digest: enough to tell platforms apart, no more of the digest than that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformTag(String);

impl PlatformTag {
    /// Characters shown.
    pub const CHARS: usize = 8;

    /// The tag of a stored platform id.
    #[must_use]
    pub fn of(stored: &str) -> Self {
        PlatformTag(stored.chars().take(Self::CHARS).collect())
    }

    /// The tag.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user as the operator sees it: with the platform it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    /// The user.
    pub user: User,
    /// Its platform.
    pub platform: PlatformTag,
}

/// One page of users, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// Users.
    pub users: Vec<AdminUser>,
    /// Matching users, up to the window.
    pub counted: Counted,
}

/// A user search and its page.
#[derive(Debug, Clone)]
pub struct UserList {
    /// The validated search (for the pagination echo).
    pub search: UserSearch,
    /// The page.
    pub page: UserPage,
}

/// Everything the console shows of one user.
#[derive(Debug, Clone)]
pub struct UserDetail {
    /// The user, with balance and holds in flight (`held_quota`).
    pub user: AdminUser,
    /// Their keys (masked when shown).
    pub tokens: Vec<Token>,
    /// Consumption per model.
    pub usage: Vec<ModelUsage>,
}

/// `GET /api/admin/logs` query string as received: the filters of SPEC §3.5 plus owner and
/// channel.
#[derive(Debug, Default, Clone)]
pub struct AdminLogQueryInput {
    /// Dates, model, type and page, with the rules of the external log query.
    pub log: LogQueryInput,
    /// `user_id`: Tollgate's user id.
    pub user_id: Option<String>,
    /// `channel_id`.
    pub channel_id: Option<String>,
}

/// A validated cross-user log query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLogQuery {
    /// Dates, model substring, kind and page.
    pub filter: LogQuery,
    /// Only this user's rows.
    pub user: Option<UserId>,
    /// Only rows of calls this channel answered.
    pub channel: Option<ChannelId>,
    /// How much the listing may touch.
    pub limits: Limits,
}

impl AdminLogQueryInput {
    /// Validates the query (`AdminLogsQuery`).
    pub fn into_query(self) -> Result<AdminLogQuery, ValidationErrors> {
        const S: &str = "AdminLogsQuery";
        let filter = self.log.into_query().map_err(|e| renamed(e, S))?;
        let limits = Limits::DEFAULT;
        if filter.offset().saturating_add(filter.page_size) > limits.window {
            return Err(ValidationErrors::single(S, "Page", "max"));
        }
        let id = |v, field| {
            positive(v, |tag| ValidationErrors::single(S, field, tag), MAX_ID)
                // At most i64::MAX by the bound above.
                .map(|n| n.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
        };
        Ok(AdminLogQuery {
            filter,
            user: id(self.user_id, "UserId")?.map(UserId::new),
            channel: id(self.channel_id, "ChannelId")?.map(ChannelId::new),
            limits,
        })
    }
}

impl AdminLogQuery {
    /// Whether no row can match: only consume rows carry a channel, so top-ups of a channel
    /// are none (and storage need not look).
    #[must_use]
    pub fn matches_nothing(&self) -> bool {
        self.channel.is_some() && self.filter.kind == Some(LogKind::TopUp)
    }

    /// The same query with other limits (tests and benchmarks use small ones).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Who a log row belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOwner {
    /// The platform's id for the user.
    pub external_user_id: ExternalUserId,
    /// Username.
    pub username: String,
    /// The user's platform.
    pub platform: PlatformTag,
}

/// A log row with what the operator needs around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLogEntry {
    /// The row.
    pub entry: LogEntry,
    /// The channel that answered (consume rows written since channels were recorded).
    pub channel: Option<ChannelId>,
    /// Its user (`None` only if the user row is gone).
    pub owner: Option<LogOwner>,
}

/// One page of the cross-user log, newest first (time, then id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminLogPage {
    /// Rows.
    pub entries: Vec<AdminLogEntry>,
    /// Matching rows, up to the window.
    pub counted: Counted,
    /// Set when a filter no index answers was checked only against rows at or after this
    /// instant (the newest [`Limits::scan`] rows of the indexed range): older matches need an
    /// earlier `end_date`.
    pub searched_from: Option<UnixTime>,
}

/// A cross-user log query and its page.
#[derive(Debug, Clone)]
pub struct AdminLogs {
    /// The validated query (for the pagination echo).
    pub query: AdminLogQuery,
    /// The page.
    pub page: AdminLogPage,
}

/// `GET /api/admin/usage` query string as received.
#[derive(Debug, Default, Clone)]
pub struct UsageQueryInput {
    /// `hours` (1–168, default 24).
    pub hours: Option<String>,
}

/// A validated usage query: the last `hours` whole hours, the current one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    /// Buckets.
    pub hours: u64,
}

impl UsageQueryInput {
    /// Validates the query (`AdminUsageQuery`).
    pub fn into_query(self) -> Result<UsageQuery, ValidationErrors> {
        let fail = |tag| ValidationErrors::single("AdminUsageQuery", "Hours", tag);
        Ok(UsageQuery {
            hours: positive(self.hours, fail, MAX_HOURS)?.unwrap_or(DEFAULT_HOURS),
        })
    }
}

impl UsageQuery {
    /// `[from, until)`: from the start of the hour `hours - 1` before the current one to the
    /// end of the current hour.
    #[must_use]
    pub fn range(&self, now: UnixTime) -> (UnixTime, UnixTime) {
        let current = now.secs() - now.secs().rem_euclid(HOUR);
        // hours ≤ 168, so these products are small.
        let hours = i64::try_from(self.hours).unwrap_or(1);
        (
            UnixTime::from_secs(current - (hours - 1) * HOUR),
            UnixTime::from_secs(current + HOUR),
        )
    }
}

/// Consumption totals; sums saturate instead of overflowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageTotals {
    /// Settled calls.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Quota charged.
    pub quota: Quota,
}

impl UsageTotals {
    /// Adds `other` (saturating).
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.quota = Quota::new(self.quota.get().saturating_add(other.quota.get()));
    }

    /// Prompt plus completion tokens.
    #[must_use]
    pub fn tokens(&self) -> i64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Consumption of one hour on one channel, as storage groups it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageCell {
    /// Start of the hour.
    pub hour: UnixTime,
    /// The channel (`None` for rows written before channels were recorded).
    pub channel: Option<ChannelId>,
    /// Totals.
    pub totals: UsageTotals,
}

/// Failed calls in one hour, every kind counted (see [`crate::call_errors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCell {
    /// Start of the hour.
    pub hour: UnixTime,
    /// Failed calls.
    pub errors: i64,
}

/// One hour of the usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlyUsage {
    /// Start of the hour.
    pub start: UnixTime,
    /// Consumption.
    pub totals: UsageTotals,
    /// Failed calls; `None` when the store does not record them.
    pub errors: Option<i64>,
}

/// One channel's consumption over the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelUsage {
    /// The channel (`None`: rows without one).
    pub channel: Option<ChannelId>,
    /// Totals.
    pub totals: UsageTotals,
}

/// Holds of calls in flight, across users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldsInFlight {
    /// Calls in flight.
    pub count: i64,
    /// Quota they reserve.
    pub quota: Quota,
}

/// What the overview shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The query.
    pub query: UsageQuery,
    /// Start of the first hour.
    pub from: UnixTime,
    /// End of the last (current) hour.
    pub until: UnixTime,
    /// One bucket per hour, oldest first, empty hours included.
    pub hours: Vec<HourlyUsage>,
    /// Totals over the report.
    pub total: UsageTotals,
    /// Failed calls over the report; `None` when the store does not record them.
    pub errors: Option<i64>,
    /// Per channel, by id (rows without a channel last).
    pub channels: Vec<ChannelUsage>,
    /// Holds in flight now.
    pub holds: HoldsInFlight,
}

impl UsageReport {
    /// Folds storage's cells into hourly buckets and channel totals over `[from, until)`.
    #[must_use]
    pub fn build(
        query: UsageQuery,
        (from, until): (UnixTime, UnixTime),
        cells: &[UsageCell],
        errors: Option<&[ErrorCell]>,
        holds: HoldsInFlight,
    ) -> Self {
        let slot = |t: UnixTime| {
            let i = (t.secs() - from.secs()).div_euclid(HOUR);
            usize::try_from(i).ok()
        };
        let count = usize::try_from(query.hours).unwrap_or(0);
        let mut hours: Vec<HourlyUsage> = (0..count)
            .map(|i| HourlyUsage {
                start: UnixTime::from_secs(from.secs() + HOUR * i64::try_from(i).unwrap_or(0)),
                totals: UsageTotals::default(),
                errors: errors.map(|_| 0),
            })
            .collect();
        let mut total = UsageTotals::default();
        let mut channels: BTreeMap<Option<ChannelId>, UsageTotals> = BTreeMap::new();
        for cell in cells.iter().filter(|c| c.hour >= from && c.hour < until) {
            if let Some(h) = slot(cell.hour).and_then(|i| hours.get_mut(i)) {
                h.totals.add(&cell.totals);
            }
            total.add(&cell.totals);
            channels.entry(cell.channel).or_default().add(&cell.totals);
        }
        let mut error_total = errors.map(|_| 0i64);
        for cell in errors.unwrap_or_default() {
            if let Some(h) = slot(cell.hour).and_then(|i| hours.get_mut(i)) {
                h.errors = Some(h.errors.unwrap_or(0).saturating_add(cell.errors));
                error_total = Some(error_total.unwrap_or(0).saturating_add(cell.errors));
            }
        }
        // Channels by id; rows without a channel (`None` sorts first) go last.
        let mut channels: Vec<ChannelUsage> = channels
            .into_iter()
            .map(|(channel, totals)| ChannelUsage { channel, totals })
            .collect();
        channels.sort_by_key(|c| (c.channel.is_none(), c.channel));
        UsageReport {
            query,
            from,
            until,
            hours,
            total,
            errors: error_total,
            channels,
            holds,
        }
    }
}

/// What the admin read API needs from storage. Every method is bounded: see the module doc.
#[async_trait]
pub trait AdminReadRepository: Send + Sync {
    /// One page of users across platforms, newest first, with the count up to the window.
    async fn user_page(&self, search: &UserSearch) -> Result<UserPage, RepoError>;

    /// The user with this id, whatever its platform.
    async fn user_by_id(&self, id: UserId) -> Result<Option<AdminUser>, RepoError>;

    /// One page of the log across users, newest first (time, then id).
    async fn admin_log_page(&self, query: &AdminLogQuery) -> Result<AdminLogPage, RepoError>;

    /// Consumption over `[from, until)` grouped by hour and channel.
    async fn usage_cells(
        &self,
        from: UnixTime,
        until: UnixTime,
    ) -> Result<Vec<UsageCell>, RepoError>;

    /// Failed calls over `[from, until)` per hour (every kind of
    /// [`CallFailure`](crate::call_errors::CallFailure) counts); `None` when this store does
    /// not record them. A store that implements
    /// [`CallErrorRepository`](crate::repository::CallErrorRepository) overrides this.
    async fn error_cells(
        &self,
        _from: UnixTime,
        _until: UnixTime,
    ) -> Result<Option<Vec<ErrorCell>>, RepoError> {
        Ok(None)
    }

    /// Holds of calls in flight now.
    async fn holds_in_flight(&self) -> Result<HoldsInFlight, RepoError>;
}

/// Everything the admin read service needs.
pub trait AdminReadStore: AdminReadRepository + TokenRepository + LogRepository {}

impl<T: AdminReadRepository + TokenRepository + LogRepository> AdminReadStore for T {}

/// The admin read API: each method validates its input, then reads.
#[derive(Clone)]
pub struct AdminReadService {
    store: Arc<dyn AdminReadStore>,
}

impl AdminReadService {
    /// Builds the service over a store.
    pub fn new(store: Arc<dyn AdminReadStore>) -> Self {
        AdminReadService { store }
    }

    /// `GET /users`.
    pub async fn users(&self, input: UserSearchInput) -> Result<UserList, DomainError> {
        let search = input.into_search()?;
        let page = self.store.user_page(&search).await?;
        Ok(UserList { search, page })
    }

    /// `GET /users/{user_id}`; an id that is not a positive integer names no user.
    pub async fn user(&self, id: &str) -> Result<UserDetail, DomainError> {
        let id = id
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(UserId::new)
            .ok_or(DomainError::UserNotFound)?;
        let user = self
            .store
            .user_by_id(id)
            .await?
            .ok_or(DomainError::UserNotFound)?;
        let tokens = self.store.list_tokens(id).await?;
        let usage = self.store.usage_by_model(id).await?;
        Ok(UserDetail {
            user,
            tokens,
            usage,
        })
    }

    /// `GET /logs`.
    pub async fn logs(&self, input: AdminLogQueryInput) -> Result<AdminLogs, DomainError> {
        let query = input.into_query()?;
        let page = if query.matches_nothing() {
            AdminLogPage::default()
        } else {
            self.store.admin_log_page(&query).await?
        };
        Ok(AdminLogs { query, page })
    }

    /// `GET /usage` at `now`.
    pub async fn usage(
        &self,
        input: UsageQueryInput,
        now: UnixTime,
    ) -> Result<UsageReport, DomainError> {
        let query = input.into_query()?;
        let (from, until) = query.range(now);
        let cells = self.store.usage_cells(from, until).await?;
        let errors = self.store.error_cells(from, until).await?;
        let holds = self.store.holds_in_flight().await?;
        Ok(UsageReport::build(
            query,
            (from, until),
            &cells,
            errors.as_deref(),
            holds,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(f: impl FnOnce(&mut AdminLogQueryInput)) -> Result<AdminLogQuery, String> {
        let mut i = AdminLogQueryInput::default();
        f(&mut i);
        i.into_query().map_err(|e| e.to_string())
    }

    #[test]
    fn log_filters_reuse_the_external_rules_under_their_own_name() {
        let d = logs(|_| {}).expect("valid");
        assert_eq!((d.filter.page, d.filter.page_size), (1, 20));
        assert_eq!((d.user, d.channel), (None, None));
        assert_eq!(
            logs(|i| i.log.page_size = Some("101".into())),
            Err("请求参数错误: Key: 'AdminLogsQuery.PageSize' Error:Field validation for 'PageSize' failed on the 'max' tag".into())
        );
        let tag = |f: fn(&mut AdminLogQueryInput)| {
            let mut i = AdminLogQueryInput::default();
            f(&mut i);
            i.into_query().expect_err("invalid").fields()[0].clone()
        };
        let e = tag(|i| i.log.start_date = Some("2024-13-01".into()));
        assert_eq!((e.field, e.tag.as_str()), ("StartDate", "datetime"));
        let e = tag(|i| i.log.kind = Some("refund".into()));
        assert_eq!((e.field, e.tag.as_str()), ("Type", "oneof"));
        let e = tag(|i| i.user_id = Some("abc".into()));
        assert_eq!((e.field, e.tag.as_str()), ("UserId", "number"));
        let e = tag(|i| i.user_id = Some("0".into()));
        assert_eq!((e.field, e.tag.as_str()), ("UserId", "min"));
        let e = tag(|i| i.channel_id = Some("-3".into()));
        assert_eq!((e.field, e.tag.as_str()), ("ChannelId", "min"));
        let e = tag(|i| i.channel_id = Some("9223372036854775808".into()));
        assert_eq!((e.field, e.tag.as_str()), ("ChannelId", "max"));
        let ok = logs(|i| {
            i.user_id = Some("9223372036854775807".into());
            i.channel_id = Some("7".into());
        })
        .expect("valid");
        assert_eq!(
            (ok.user, ok.channel),
            (Some(UserId::new(i64::MAX)), Some(ChannelId::new(7)))
        );
        let empty = logs(|i| i.user_id = Some(String::new())).expect("empty is absent");
        assert_eq!(empty.user, None);
    }

    #[test]
    fn pages_stop_at_the_window() {
        let last = logs(|i| {
            i.log.page = Some("100".into());
            i.log.page_size = Some("100".into());
        });
        assert!(last.is_ok());
        let e = logs(|i| {
            i.log.page = Some("101".into());
            i.log.page_size = Some("100".into());
        })
        .expect_err("past the window");
        assert!(
            e.contains("'AdminLogsQuery.Page'") && e.contains("'max'"),
            "{e}"
        );
        let users = UserSearchInput {
            page: Some("501".into()),
            ..UserSearchInput::default()
        }
        .into_search()
        .expect_err("past the window");
        assert_eq!(users.fields()[0].field, "Page");
    }

    #[test]
    fn user_search_is_kept_byte_for_byte_and_bounded() {
        let s = UserSearchInput {
            query: Some(" A%_b ".into()),
            ..UserSearchInput::default()
        }
        .into_search()
        .expect("valid");
        assert_eq!(s.contains.as_deref(), Some(" A%_b "));
        assert_eq!((s.page, s.page_size, s.offset()), (1, 20, 0));
        let long = UserSearchInput {
            query: Some("字".repeat(101)),
            ..UserSearchInput::default()
        }
        .into_search()
        .expect_err("too long");
        assert_eq!(
            (long.fields()[0].field, long.fields()[0].tag.as_str()),
            ("Query", "max")
        );
        let empty = UserSearchInput {
            query: Some(String::new()),
            ..UserSearchInput::default()
        };
        assert_eq!(empty.into_search().expect("valid").contains, None);
    }

    #[test]
    fn hours_are_one_to_a_week() {
        let h = |v: &str| {
            UsageQueryInput {
                hours: Some(v.into()),
            }
            .into_query()
            .map(|q| q.hours)
            .map_err(|e| e.fields()[0].tag.clone())
        };
        assert_eq!(
            UsageQueryInput::default().into_query().map(|q| q.hours),
            Ok(24)
        );
        assert_eq!(h("1"), Ok(1));
        assert_eq!(h("168"), Ok(168));
        assert_eq!(h("169"), Err("max".into()));
        assert_eq!(h("0"), Err("min".into()));
        assert_eq!(h("1.5"), Err("number".into()));
    }

    #[test]
    fn a_channel_has_no_top_ups() {
        let q = logs(|i| {
            i.channel_id = Some("1".into());
            i.log.kind = Some("topup".into());
        })
        .expect("valid");
        assert!(q.matches_nothing());
        let q = logs(|i| i.log.kind = Some("topup".into())).expect("valid");
        assert!(!q.matches_nothing());
    }

    fn totals(requests: i64, quota: i64) -> UsageTotals {
        UsageTotals {
            requests,
            prompt_tokens: requests * 10,
            completion_tokens: requests * 5,
            quota: Quota::new(quota),
        }
    }

    #[test]
    fn usage_buckets_cover_every_hour_oldest_first() {
        let now = UnixTime::from_secs(10 * HOUR + 125);
        let q = UsageQuery { hours: 3 };
        let (from, until) = q.range(now);
        assert_eq!(
            (from.secs(), until.secs()),
            (8 * HOUR, 11 * HOUR),
            "the current hour is the last bucket"
        );
        let cell = |h: i64, c: Option<i64>, n| UsageCell {
            hour: UnixTime::from_secs(h * HOUR),
            channel: c.map(ChannelId::new),
            totals: totals(n, n * 100),
        };
        let cells = [
            cell(8, Some(2), 1),
            cell(10, Some(1), 2),
            cell(10, None, 4),
            cell(10, Some(2), 3),
            // Outside the range: ignored.
            cell(11, Some(1), 50),
        ];
        let r = UsageReport::build(
            q,
            (from, until),
            &cells,
            None,
            HoldsInFlight {
                count: 2,
                quota: Quota::new(9),
            },
        );
        let per_hour: Vec<(i64, i64)> = r
            .hours
            .iter()
            .map(|h| (h.start.secs() / HOUR, h.totals.requests))
            .collect();
        assert_eq!(per_hour, vec![(8, 1), (9, 0), (10, 9)]);
        assert!(r.hours.iter().all(|h| h.errors.is_none()));
        assert_eq!(r.errors, None);
        assert_eq!(r.total.requests, 10);
        assert_eq!(r.total.quota, Quota::new(1_000));
        assert_eq!(r.total.tokens(), 150);
        let channels: Vec<(Option<i64>, i64)> = r
            .channels
            .iter()
            .map(|c| (c.channel.map(ChannelId::get), c.totals.requests))
            .collect();
        assert_eq!(channels, vec![(Some(1), 2), (Some(2), 4), (None, 4)]);
        assert_eq!(r.holds.count, 2);
    }

    #[test]
    fn recorded_errors_fill_their_hours_and_sums_saturate() {
        let q = UsageQuery { hours: 2 };
        let range = (UnixTime::from_secs(0), UnixTime::from_secs(2 * HOUR));
        let big = UsageCell {
            hour: UnixTime::from_secs(0),
            channel: None,
            totals: UsageTotals {
                requests: i64::MAX,
                prompt_tokens: i64::MAX,
                completion_tokens: 1,
                quota: Quota::new(i64::MAX),
            },
        };
        let errors = [ErrorCell {
            hour: UnixTime::from_secs(HOUR),
            errors: 3,
        }];
        let r = UsageReport::build(
            q,
            range,
            &[big, big],
            Some(&errors),
            HoldsInFlight::default(),
        );
        assert_eq!(r.total.requests, i64::MAX);
        assert_eq!(r.total.tokens(), i64::MAX);
        assert_eq!(r.total.quota, Quota::new(i64::MAX));
        assert_eq!(
            r.hours.iter().map(|h| h.errors).collect::<Vec<_>>(),
            vec![Some(0), Some(3)]
        );
        assert_eq!(r.errors, Some(3));
    }

    #[test]
    fn counts_stop_at_the_window() {
        assert_eq!(
            Counted::of(10_001, 10_000),
            Counted {
                total: 10_000,
                capped: true
            }
        );
        assert_eq!(
            Counted::of(41, 10_000),
            Counted {
                total: 41,
                capped: false
            }
        );
        assert_eq!(Counted::of(41, 10_000).total_pages(20), 3);
    }

    #[test]
    fn platform_tags_show_eight_characters() {
        assert_eq!(
            PlatformTag::of("0123456789abcdef0123456789abcdef").as_str(),
            "01234567"
        );
        assert_eq!(PlatformTag::of("ab").as_str(), "ab");
    }
}
