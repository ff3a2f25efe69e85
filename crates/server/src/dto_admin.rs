//! The client JSON of the admin read API (SPEC §7): query strings (unknown parameters refused,
//! so a misspelt filter cannot silently widen an answer) and response bodies, converted
//! explicitly from the domain's read models. Money goes out as exact JSON numbers from
//! [`Quota::to_usd`], next to the integer quota it comes from. Every type derives its OpenAPI
//! schema or parameters (`utoipa`) for `/openapi.json`.

use crate::dto::{LogView, ModelUsageView, TokenView, Usd};
use serde::{Deserialize, Serialize};
use serde_json::Number;
use std::collections::BTreeMap;
use std::str::FromStr;
use tollgate_domain::Quota;
use tollgate_domain::admin_read::{
    AdminLogEntry, AdminLogQueryInput, AdminLogs, AdminUser, Counted, HoldsInFlight,
    UsageQueryInput, UsageReport, UsageTotals, UserDetail, UserList, UserSearchInput,
};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::logs::LogQueryInput;
use tollgate_domain::time::UnixTime;
use utoipa::{IntoParams, ToSchema};

/// USD of `q` as an exact JSON number.
#[expect(
    clippy::expect_used,
    reason = "a normalised Decimal prints plain digits, always valid JSON number text; \
              a silent fallback would show a wrong amount"
)]
fn usd(q: Quota) -> Usd {
    Usd::from(
        Number::from_str(&q.to_usd().normalize().to_string())
            .expect("decimal text is a JSON number"),
    )
}

/// `GET /api/admin/users` query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// Part of an external user id or username.
    query: Option<String>,
    /// From 1 (default 1).
    #[param(value_type = Option<u64>)]
    page: Option<String>,
    /// 1 to 100 (default 20).
    #[param(value_type = Option<u64>)]
    page_size: Option<String>,
}

impl From<UsersQuery> for UserSearchInput {
    fn from(q: UsersQuery) -> Self {
        UserSearchInput {
            query: q.query,
            page: q.page,
            page_size: q.page_size,
        }
    }
}

/// `GET /api/admin/logs` query string: the filters of SPEC §3.5 plus `user_id`, `channel_id`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminLogsQuery {
    /// `YYYY-MM-DD` (UTC), inclusive.
    start_date: Option<String>,
    /// `YYYY-MM-DD` (UTC), inclusive.
    end_date: Option<String>,
    /// A substring of the model name (`%` and `_` are literal).
    model_name: Option<String>,
    /// `consume` or `topup`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// From 1 (default 1).
    #[param(value_type = Option<u64>)]
    page: Option<String>,
    /// 1 to 100 (default 20).
    #[param(value_type = Option<u64>)]
    page_size: Option<String>,
    /// Tollgate's user id.
    #[param(value_type = Option<i64>)]
    user_id: Option<String>,
    #[param(value_type = Option<i64>)]
    channel_id: Option<String>,
}

impl From<AdminLogsQuery> for AdminLogQueryInput {
    fn from(q: AdminLogsQuery) -> Self {
        AdminLogQueryInput {
            log: LogQueryInput {
                start_date: q.start_date,
                end_date: q.end_date,
                model_name: q.model_name,
                kind: q.kind,
                page: q.page,
                page_size: q.page_size,
            },
            user_id: q.user_id,
            channel_id: q.channel_id,
        }
    }
}

/// `GET /api/admin/usage` query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The window in whole hours, the current one included (1–168, default 24).
    #[param(value_type = Option<u64>)]
    hours: Option<String>,
}

impl From<UsageQuery> for UsageQueryInput {
    fn from(q: UsageQuery) -> Self {
        UsageQueryInput { hours: q.hours }
    }
}

/// `pagination` of the admin listings. `total` stops at the listing window; `total_capped`
/// says that more rows match (narrow the filter to reach them).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPagination {
    page: u64,
    page_size: u64,
    total: u64,
    total_page: u64,
    total_capped: bool,
}

impl AdminPagination {
    fn new(page: u64, page_size: u64, counted: Counted) -> Self {
        AdminPagination {
            page,
            page_size,
            total: counted.total,
            total_page: counted.total_pages(page_size),
            total_capped: counted.capped,
        }
    }
}

/// A user as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    user_id: i64,
    platform: String,
    external_user_id: String,
    username: String,
    display_name: String,
    email: String,
    phone: String,
    login_type: String,
    current_quota: i64,
    current_balance: Usd,
    /// Held by calls in flight and by balance leases.
    held_quota: i64,
    held_balance: Usd,
    /// Of `held_quota`, what instances' balance leases hold.
    leased_quota: i64,
    /// What the user can still start spending: the balance minus holds.
    balance_capacity: Usd,
    used_quota: i64,
    used_balance: Usd,
    total_requests: i64,
    created_at: i64,
}

impl From<AdminUser> for AdminUserView {
    fn from(a: AdminUser) -> Self {
        let u = a.user;
        let capacity = u.spendable();
        AdminUserView {
            user_id: u.id.get(),
            platform: a.platform.as_str().to_owned(),
            external_user_id: u.external_user_id.as_str().to_owned(),
            username: u.username,
            display_name: u.display_name,
            email: u.email,
            phone: u.phone,
            login_type: u.login_type,
            current_quota: u.quota.get(),
            current_balance: usd(u.quota),
            held_quota: u.held_quota.get(),
            held_balance: usd(u.held_quota),
            leased_quota: u.leased_quota.get(),
            balance_capacity: usd(capacity),
            used_quota: u.used_quota.get(),
            used_balance: usd(u.used_quota),
            total_requests: u.total_requests,
            created_at: u.created_at.secs(),
        }
    }
}

/// `GET /api/admin/users` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsersData {
    users: Vec<AdminUserView>,
    pagination: AdminPagination,
}

impl From<UserList> for UsersData {
    fn from(l: UserList) -> Self {
        UsersData {
            pagination: AdminPagination::new(l.search.page, l.search.page_size, l.page.counted),
            users: l.page.users.into_iter().map(AdminUserView::from).collect(),
        }
    }
}

/// `GET /api/admin/users/{user_id}` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetailData {
    user: AdminUserView,
    tokens: Vec<TokenView>,
    model_usage: BTreeMap<String, ModelUsageView>,
}

impl UserDetailData {
    /// The detail at `now` (token status and what each key can still spend).
    #[must_use]
    pub fn new(d: UserDetail, now: UnixTime) -> Self {
        let capacity = d.user.user.spendable();
        UserDetailData {
            tokens: d
                .tokens
                .into_iter()
                .map(|t| TokenView::new(t, capacity, now))
                .collect(),
            model_usage: d
                .usage
                .iter()
                .map(|m| (m.model.clone(), ModelUsageView::from(m)))
                .collect(),
            user: AdminUserView::from(d.user),
        }
    }
}

/// A row of the cross-user log: the external log's row with its user and channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminLogView {
    #[serde(flatten)]
    row: LogView,
    user_id: i64,
    external_user_id: Option<String>,
    username: Option<String>,
    platform: Option<String>,
    channel_id: Option<i64>,
}

impl From<AdminLogEntry> for AdminLogView {
    fn from(e: AdminLogEntry) -> Self {
        let user_id = e.entry.user_id.get();
        let (external_user_id, username, platform) = match e.owner {
            Some(o) => (
                Some(o.external_user_id.as_str().to_owned()),
                Some(o.username),
                Some(o.platform.as_str().to_owned()),
            ),
            None => (None, None, None),
        };
        AdminLogView {
            row: LogView::from(e.entry),
            user_id,
            external_user_id,
            username,
            platform,
            channel_id: e.channel.map(ChannelId::get),
        }
    }
}

/// `GET /api/admin/logs` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminLogsData {
    logs: Vec<AdminLogView>,
    pagination: AdminPagination,
    /// When a filter no index answers was checked only back to this time
    /// (`YYYY-MM-DD HH:MM:SS`, UTC): older matches need an earlier `end_date`.
    searched_from: Option<String>,
}

impl From<AdminLogs> for AdminLogsData {
    fn from(l: AdminLogs) -> Self {
        let f = &l.query.filter;
        AdminLogsData {
            pagination: AdminPagination::new(f.page, f.page_size, l.page.counted),
            searched_from: l.page.searched_from.map(|t| t.to_string()),
            logs: l.page.entries.into_iter().map(AdminLogView::from).collect(),
        }
    }
}

/// Consumption totals with their USD.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotalsView {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    tokens: i64,
    quota: i64,
    spend: Usd,
}

impl From<&UsageTotals> for TotalsView {
    fn from(t: &UsageTotals) -> Self {
        TotalsView {
            requests: t.requests,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            tokens: t.tokens(),
            quota: t.quota.get(),
            spend: usd(t.quota),
        }
    }
}

/// One hourly bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketView {
    start: i64,
    time: String,
    #[serde(flatten)]
    totals: TotalsView,
    /// Failed calls in the hour (`null` on a store that does not record them).
    errors: Option<i64>,
}

/// One channel's consumption over the report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelUsageView {
    /// `null` for calls settled before channels were recorded.
    channel_id: Option<i64>,
    #[serde(flatten)]
    totals: TotalsView,
}

/// Holds in flight.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldsView {
    count: i64,
    quota: i64,
    amount: Usd,
}

impl From<HoldsInFlight> for HoldsView {
    fn from(h: HoldsInFlight) -> Self {
        HoldsView {
            count: h.count,
            quota: h.quota.get(),
            amount: usd(h.quota),
        }
    }
}

/// `GET /api/admin/usage` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageData {
    hours: u64,
    from: i64,
    until: i64,
    buckets: Vec<BucketView>,
    totals: TotalsView,
    errors: Option<i64>,
    channels: Vec<ChannelUsageView>,
    holds: HoldsView,
}

impl From<UsageReport> for UsageData {
    fn from(r: UsageReport) -> Self {
        UsageData {
            hours: r.query.hours,
            from: r.from.secs(),
            until: r.until.secs(),
            buckets: r
                .hours
                .iter()
                .map(|h| BucketView {
                    start: h.start.secs(),
                    time: h.start.to_string(),
                    totals: TotalsView::from(&h.totals),
                    errors: h.errors,
                })
                .collect(),
            totals: TotalsView::from(&r.total),
            errors: r.errors,
            channels: r
                .channels
                .iter()
                .map(|c| ChannelUsageView {
                    channel_id: c.channel.map(ChannelId::get),
                    totals: TotalsView::from(&c.totals),
                })
                .collect(),
            holds: HoldsView::from(r.holds),
        }
    }
}
