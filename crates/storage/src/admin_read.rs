//! [`AdminReadRepository`] on SeaORM: users across platforms, the log across users and the
//! hourly usage, each read bounded so that no request walks a large table.
//!
//! Which index each log read walks (named to MySQL with `FORCE INDEX`; SQLite's planner picks
//! the same by itself). [`SeaStore::admin_read_plans`] shows the database's plans; the tests
//! check that SQLite's never scans or sorts `logs`, and, on 300,000 rows, that MySQL's do not
//! either; `scripts/bench/admin-read.sh` prints them on 1,000,000 rows:
//!
//! | filter | index | checked on the entries it yields |
//! |---|---|---|
//! | `user_id` (+ `type`) | `ix_logs_user_kind_time`: one range per kind merged newest first without `type` | `channel_id`, `model_name` |
//! | `channel_id` | `ix_logs_channel_time` | `model_name` |
//! | `type` | `ix_logs_kind_time` | `model_name` |
//! | dates only, or nothing | `ix_logs_kind_time`: one range per kind merged newest first | `model_name` |
//!
//! Dates are the index's range. Rows come newest first in index order, so a page reads at most
//! `offset + page_size` matching entries of the index (the page is at most the window), and
//! the count stops one row past the window. A filter the index does not answer is checked
//! on the newest [`Limits::scan`] entries of the indexed range only: the `created_at` of the
//! last of those bounds the walk, and the page reports it as `searched_from`. Each index
//! carries the columns those filters check (migration `m20261203_000007`), so the check, the
//! count and the page's ids come from the index alone; only the page's rows and their owners
//! are then read by primary key.
//!
//! The usage buckets read the consume rows of the window from `ix_logs_kind_time` alone (it
//! carries the channel and the summed columns), so their cost follows the calls in the window
//! (at most 168 hours), never the table; a user's usage per model reads their consume rows
//! from `ix_logs_user_kind_time` the same way. Holds in flight are read through `holds`'
//! `(state, expires_at)` index, and failed calls through the `call_errors` primary key
//! `(hour_start, channel_id, kind)` (at most hours × channels × kinds rows; see
//! `call_errors.rs`). Users are listed newest first by primary key; a search is a
//! substring match, which no B-tree index answers, so it checks `users` rows (never `logs`)
//! until the page is full, and counts up to the window.

use crate::SeaStore;
use crate::billing::HELD;
use crate::call_errors::errors_query;
use crate::entity::{hold, log, user};
use crate::error::{Result, StorageError, corrupt};
use crate::logs::{join, usage_by_model_query, with_sums};
use crate::tokens::user_tokens_query;
use crate::users::to_user;
use async_trait::async_trait;
use sea_orm::sea_query::extension::mysql::{IndexHintScope, MySqlSelectStatementExt};
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Select, Statement,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tollgate_domain::admin_read::{
    AdminLogEntry, AdminLogPage, AdminLogQuery, AdminReadRepository, AdminUser, Counted, ErrorCell,
    HOUR, HoldsInFlight, Limits, LogOwner, PlatformTag, UsageCell, UsageTotals, UserPage,
    UserSearch,
};
use tollgate_domain::ids::{ChannelId, ExternalUserId, LogId, TokenId, UserId};
use tollgate_domain::logs::{LogEntry, LogKind};
use tollgate_domain::time::UnixTime;
use tollgate_domain::{Quota, RepoError};

/// `logs.channel_id` (added by the admin-read migration; the ledger's entity predates it).
const CHANNEL: &str = "channel_id";

/// `INSTR(column, needle) > 0`: a literal, byte-exact substring test on both backends (`LIKE`
/// would treat `%` and `_` as wildcards, and SQLite's would fold ASCII case).
fn contains(column: impl sea_orm::sea_query::IntoColumnRef, needle: &str) -> Expr {
    Expr::expr(Func::cust("INSTR").arg(Expr::col(column)).arg(needle)).gt(0)
}

/// One statement an admin read issues, with the database's plan for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPlan {
    /// Which statement of the read (`count`, `page`, `usage`, …).
    pub name: &'static str,
    /// Its SQL with the values written in, as built by the code that runs it.
    pub sql: String,
    /// One line per row of `EXPLAIN QUERY PLAN` (SQLite) or of `EXPLAIN` (MySQL: table, access
    /// type, key, extra).
    pub plan: Vec<String>,
}

/// How a log query walks the table.
struct Plan {
    /// The index it walks.
    index: &'static str,
    /// What that index answers: equality on its leading columns, the date range.
    indexed: Condition,
    /// What is checked on the rows the index yields.
    residual: Option<Condition>,
    /// Rows of every kind, a user's or everyone's: no index leads with the user alone, nor
    /// with the time alone (each an index entry fewer written by every call,
    /// docs/benchmarks.md), so `ix_logs_user_kind_time` or `ix_logs_kind_time` is walked once
    /// per kind ([`Plan::arms`]) and the walks merged newest first ([`newest`]).
    per_kind: bool,
}

impl Plan {
    /// One condition per range of the index the read walks.
    fn arms(&self, cond: &Condition) -> Vec<Condition> {
        if self.per_kind {
            kind_arms(cond, None)
        } else {
            vec![cond.clone()]
        }
    }

    /// `cond` for a read that may take the entries in any order (a count): every range.
    fn any_order(&self, cond: Condition) -> Condition {
        if self.per_kind {
            cond.add(of_kind(None))
        } else {
            cond
        }
    }
}

/// `kind = …`, or with no kind every kind named (`kind IN (…)`): on `ix_logs_user_kind_time`
/// or `ix_logs_kind_time`, one index range per kind, in any order.
pub(crate) fn of_kind(kind: Option<LogKind>) -> Expr {
    match kind {
        Some(kind) => log::Column::Kind.eq(kind.code()),
        None => log::Column::Kind.is_in(LogKind::ALL.map(LogKind::code)),
    }
}

/// `cond` once per kind (`kind`, or with none every kind): the ranges of
/// `ix_logs_user_kind_time` or `ix_logs_kind_time` that [`newest`] merges newest first.
pub(crate) fn kind_arms(cond: &Condition, kind: Option<LogKind>) -> Vec<Condition> {
    let kinds = kind.map_or(LogKind::ALL.to_vec(), |k| vec![k]);
    kinds
        .into_iter()
        .map(|k| cond.clone().add(log::Column::Kind.eq(k.code())))
        .collect()
}

/// The plan of `q`; `floor` is the boundary of a bounded search (see [`boundary_query`]), which
/// replaces the start date as the range's lower bound.
fn plan(q: &AdminLogQuery, floor: Option<i64>) -> Plan {
    let f = &q.filter;
    let mut indexed = Condition::all();
    let mut residual = Condition::all();
    let mut has_residual = false;
    // The index, and whether it is walked once per kind (see `Plan::per_kind`).
    let (index, per_kind) = match (q.user, q.channel) {
        (Some(user), channel) => {
            indexed = indexed.add(log::Column::UserId.eq(user.get()));
            if let Some(kind) = f.kind {
                indexed = indexed.add(log::Column::Kind.eq(kind.code()));
            }
            if let Some(channel) = channel {
                // Wrapped so that no index answers it: the planner must walk the user's rows
                // (bounded below) rather than the channel's, which may be far more.
                residual = residual.add(Expr::cust_with_values(
                    "COALESCE(channel_id, 0) = ?",
                    [channel.get()],
                ));
                has_residual = true;
            }
            ("ix_logs_user_kind_time", f.kind.is_none())
        }
        // Only consume rows carry a channel, so `type=consume` is implied here (and
        // `type=topup` with a channel never reaches storage).
        (None, Some(channel)) => {
            indexed = indexed.add(Expr::col(CHANNEL).eq(channel.get()));
            ("ix_logs_channel_time", false)
        }
        // Without a type, one range per kind, merged newest first: the whole log's own time
        // index cost every call's log row one B-tree more (`m20261205_000012`).
        (None, None) => {
            if let Some(kind) = f.kind {
                indexed = indexed.add(log::Column::Kind.eq(kind.code()));
            }
            ("ix_logs_kind_time", f.kind.is_none())
        }
    };
    // One lower bound, the later one: given two on the same column, SQLite's planner walks
    // from whichever it picks, which may be the start date, far below a bounded search's
    // boundary. The boundary lies in the range, so it is never the earlier of the two.
    let from = match (f.from.map(UnixTime::secs), floor) {
        (Some(date), Some(floor)) => Some(std::cmp::max(date, floor)),
        (date, floor) => date.or(floor),
    };
    if let Some(from) = from {
        indexed = indexed.add(log::Column::CreatedAt.gte(from));
    }
    if let Some(until) = f.until {
        indexed = indexed.add(log::Column::CreatedAt.lt(until.secs()));
    }
    if let Some(m) = &f.model_contains {
        residual = residual.add(contains(log::Column::Model, m));
        has_residual = true;
    }
    Plan {
        index,
        indexed,
        residual: has_residual.then_some(residual),
        per_kind,
    }
}

/// `select` walking `index` on MySQL. Its optimiser may pick a table scan and a sort for
/// `ORDER BY … LIMIT` with a large offset when the limit is a sizeable share of the table; the
/// hint keeps every plan an index walk. Other backends ignore it (SQLite's planner picks the
/// same indexes, as the tests check).
fn hinted(mut select: Select<log::Entity>, index: &'static str) -> Select<log::Entity> {
    QueryTrait::query(&mut select).force_index(index, IndexHintScope::All);
    select
}

/// Newest first, the order of every `(…, created_at, id)` index.
fn newest_first(select: Select<log::Entity>) -> Select<log::Entity> {
    select
        .order_by_desc(log::Column::CreatedAt)
        .order_by_desc(log::Column::Id)
}

/// The newest entries of `arms` (each a condition on one range of `index`), as `select` reads
/// them, newest first, `offset` skipped, at most `limit`. With one arm, that range walked; with
/// several, their walks merged newest first in one statement: SQLite merges them as it reads
/// (`MERGE (UNION ALL)`: no more entries read than the page needs), MySQL takes at most
/// `offset + limit` of each, newest first, and sorts those.
pub(crate) fn newest(
    backend: DbBackend,
    index: &'static str,
    arms: &[Condition],
    select: impl Fn() -> Select<log::Entity>,
    offset: u64,
    limit: u64,
) -> Statement {
    if let [only] = arms {
        return newest_first(hinted(select().filter(only.clone()), index))
            .offset(offset)
            .limit(limit)
            .build(backend);
    }
    let mysql = backend == DbBackend::MySql;
    let mut parts = Vec::with_capacity(arms.len());
    let mut values = Vec::new();
    for cond in arms {
        let arm = hinted(select().filter(cond.clone()), index);
        let built = if mysql {
            newest_first(arm)
                .limit(offset.saturating_add(limit))
                .build(backend)
        } else {
            // A compound SELECT's arms take no ORDER BY on SQLite; it merges them in the
            // compound's order, each walked down its index.
            arm.build(backend)
        };
        values.extend(built.values.map(|v| v.0).unwrap_or_default());
        parts.push(if mysql {
            format!("({})", built.sql)
        } else {
            built.sql
        });
    }
    let sql = format!(
        "{} ORDER BY created_at DESC, id DESC LIMIT {limit} OFFSET {offset}",
        parts.join(" UNION ALL ")
    );
    Statement::from_sql_and_values(backend, sql, values)
}

/// The ids and times of entries, for [`newest`].
fn ids_and_times() -> Select<log::Entity> {
    log::Entity::find()
        .select_only()
        .column(log::Column::Id)
        .column(log::Column::CreatedAt)
}

/// The `created_at` of the last row a residual filter may look at (first column).
fn boundary_query(
    backend: DbBackend,
    plan: &Plan,
    indexed: &Condition,
    limits: Limits,
) -> Statement {
    newest(
        backend,
        plan.index,
        &plan.arms(indexed),
        || {
            log::Entity::find()
                .select_only()
                .column(log::Column::CreatedAt)
                .column(log::Column::Id)
        },
        limits.scan.saturating_sub(1),
        1,
    )
}

/// `SELECT COUNT(*) FROM (<inner> LIMIT window + 1)`: stops one row past the window. The inner
/// select walks the page's index in the page's order, so both read the same entries.
fn count_query(mut inner: SelectStatement, window: u64) -> SelectStatement {
    inner.limit(window.saturating_add(1));
    Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from_subquery(inner, "counted")
        .to_owned()
}

fn log_ids(index: &'static str, cond: Condition) -> Select<log::Entity> {
    hinted(
        log::Entity::find()
            .select_only()
            .column(log::Column::Id)
            .filter(cond),
        index,
    )
}

/// Rows of a page that lie within the window.
fn within_window(page_size: u64, offset: u64, limits: Limits) -> u64 {
    std::cmp::min(page_size, limits.window.saturating_sub(offset))
}

/// The page's ids (first column); never past the window, whatever the page.
fn page_query(backend: DbBackend, plan: &Plan, cond: &Condition, q: &AdminLogQuery) -> Statement {
    let offset = q.filter.offset();
    newest(
        backend,
        plan.index,
        &plan.arms(cond),
        ids_and_times,
        offset,
        within_window(q.filter.page_size, offset, q.limits),
    )
}

/// What [`SeaStore::log_page`] counts: up to one past the window, of the entries the page
/// walks (for every kind, in any order: the count is the same).
fn log_count_query(plan: &Plan, cond: &Condition, window: u64) -> SelectStatement {
    let inner = if plan.per_kind {
        log_ids(plan.index, plan.any_order(cond.clone())).into_query()
    } else {
        newest_first(log_ids(plan.index, cond.clone())).into_query()
    };
    count_query(inner, window)
}

fn rows_query(ids: Vec<i64>) -> Select<log::Entity> {
    log::Entity::find()
        .select_only()
        .columns([
            log::Column::Id,
            log::Column::UserId,
            log::Column::Kind,
            log::Column::CreatedAt,
            log::Column::Model,
            log::Column::TokenId,
            log::Column::TokenName,
            log::Column::PromptTokens,
            log::Column::CompletionTokens,
            log::Column::Quota,
            log::Column::RequestId,
            log::Column::IsStream,
            log::Column::LatencyMs,
        ])
        .column_as(Expr::col(CHANNEL), CHANNEL)
        .filter(log::Column::Id.is_in(ids))
}

/// The hour of `created_at` (whole hours since the epoch), as an integer on both backends.
fn hour_expr(backend: DbBackend) -> Expr {
    Expr::cust(match backend {
        DbBackend::MySql => "created_at DIV 3600",
        _ => "created_at / 3600",
    })
}

fn usage_query(backend: DbBackend, from: UnixTime, until: UnixTime) -> Select<log::Entity> {
    let select = hinted(log::Entity::find(), "ix_logs_kind_time")
        .select_only()
        .column_as(hour_expr(backend), "hour")
        .column_as(Expr::col(CHANNEL), CHANNEL)
        .column_as(Expr::cust("COUNT(*)"), "requests");
    with_sums(
        select,
        backend,
        &[
            ("prompt", "prompt_tokens", None),
            ("completion", "completion_tokens", None),
            ("quota", "quota", None),
        ],
    )
    .filter(log::Column::Kind.eq(LogKind::Consume.code()))
    .filter(log::Column::CreatedAt.gte(from.secs()))
    .filter(log::Column::CreatedAt.lt(until.secs()))
    .group_by(hour_expr(backend))
    .group_by(Expr::col(CHANNEL))
}

fn user_filter(search: &UserSearch) -> Condition {
    match &search.contains {
        Some(q) => Condition::any()
            .add(contains(user::Column::ExternalUserId, q))
            .add(contains(user::Column::Username, q)),
        None => Condition::all(),
    }
}

/// The users a search counts, up to one past the window.
fn users_count_query(search: &UserSearch) -> SelectStatement {
    count_query(
        user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(user_filter(search))
            .into_query(),
        search.limits.window,
    )
}

/// A page of users, newest first by primary key.
fn users_page_query(search: &UserSearch) -> Select<user::Entity> {
    user::Entity::find()
        .filter(user_filter(search))
        .order_by_desc(user::Column::Id)
        .offset(search.offset())
        .limit(within_window(
            search.page_size,
            search.offset(),
            search.limits,
        ))
}

/// The owners of a page's rows, by primary key.
fn owners_query(ids: Vec<i64>) -> Select<user::Entity> {
    user::Entity::find()
        .select_only()
        .columns([
            user::Column::Id,
            user::Column::PlatformId,
            user::Column::ExternalUserId,
            user::Column::Username,
        ])
        .filter(user::Column::Id.is_in(ids))
}

/// Holds of calls in flight, through `holds`' `(state, expires_at)` index.
fn holds_query(backend: DbBackend) -> Select<hold::Entity> {
    let select = hold::Entity::find()
        .select_only()
        .column_as(Expr::cust("COUNT(*)"), "count");
    with_sums(select, backend, &[("amount", "amount", None)]).filter(hold::Column::State.eq(HELD))
}

#[derive(Debug, FromQueryResult)]
struct LogRow {
    id: i64,
    user_id: i64,
    kind: i16,
    created_at: i64,
    model: String,
    token_id: Option<i64>,
    token_name: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    quota: i64,
    request_id: String,
    is_stream: bool,
    latency_ms: i64,
    channel_id: Option<i64>,
}

impl LogRow {
    fn entry(self) -> Result<(LogEntry, Option<ChannelId>)> {
        let entry = LogEntry {
            id: LogId::new(self.id),
            user_id: UserId::new(self.user_id),
            kind: LogKind::from_code(self.kind).ok_or_else(|| corrupt("log kind", self.id))?,
            created_at: UnixTime::from_secs(self.created_at),
            model: self.model,
            token_id: self.token_id.map(TokenId::new),
            token_name: self.token_name,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            quota: Quota::new(self.quota),
            request_id: self.request_id,
            is_stream: self.is_stream,
            latency_ms: self.latency_ms,
        };
        Ok((entry, self.channel_id.map(ChannelId::new)))
    }
}

#[derive(Debug, FromQueryResult)]
struct OwnerRow {
    id: i64,
    platform_id: String,
    external_user_id: String,
    username: String,
}

#[derive(Debug, FromQueryResult)]
struct CellRow {
    hour: i64,
    channel_id: Option<i64>,
    requests: i64,
    prompt_hi: i64,
    prompt_lo: i64,
    completion_hi: i64,
    completion_lo: i64,
    quota_hi: i64,
    quota_lo: i64,
}

#[derive(Debug, FromQueryResult)]
struct HoldsRow {
    count: i64,
    amount_hi: i64,
    amount_lo: i64,
}

impl SeaStore {
    /// Runs a [`count_query`] built for `window`.
    async fn counted(&self, count: &SelectStatement, window: u64) -> Result<Counted> {
        let n = self
            .db
            .query_one(count)
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        Ok(Counted::of(u64::try_from(n).unwrap_or(0), window))
    }

    /// The plan and conditions of the page and count queries, and how far back a residual
    /// filter looked.
    async fn bounded(&self, q: &AdminLogQuery) -> Result<(Plan, Condition, Option<UnixTime>)> {
        let first = plan(q, None);
        let Some(residual) = first.residual.clone() else {
            let cond = first.indexed.clone();
            return Ok((first, cond, None));
        };
        let backend = self.db.get_database_backend();
        let boundary: Option<i64> = self
            .db
            .query_one_raw(boundary_query(backend, &first, &first.indexed, q.limits))
            .await?
            .map(|r| r.try_get_by_index::<i64>(0))
            .transpose()?;
        let bounded = plan(q, boundary);
        let cond = bounded.indexed.clone().add(residual);
        Ok((bounded, cond, boundary.map(UnixTime::from_secs)))
    }

    async fn owners(&self, ids: Vec<i64>) -> Result<HashMap<i64, LogOwner>> {
        let rows = owners_query(ids)
            .into_model::<OwnerRow>()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|r| {
                let owner = LogOwner {
                    external_user_id: ExternalUserId::parse(r.external_user_id)
                        .ok_or_else(|| corrupt("external_user_id", r.id))?,
                    username: r.username,
                    platform: PlatformTag::of(&r.platform_id),
                };
                Ok((r.id, owner))
            })
            .collect()
    }

    async fn log_page(&self, q: &AdminLogQuery) -> Result<AdminLogPage> {
        let (plan, cond, searched_from) = self.bounded(q).await?;
        let counted = self
            .counted(
                &log_count_query(&plan, &cond, q.limits.window),
                q.limits.window,
            )
            .await?;
        let backend = self.db.get_database_backend();
        let ids: Vec<i64> = self
            .db
            .query_all_raw(page_query(backend, &plan, &cond, q))
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<i64>(0))
            .collect::<std::result::Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(AdminLogPage {
                entries: Vec::new(),
                counted,
                searched_from,
            });
        }
        let rows = rows_query(ids).into_model::<LogRow>().all(&self.db).await?;
        let mut entries = rows
            .into_iter()
            .map(LogRow::entry)
            .collect::<Result<Vec<_>>>()?;
        // `IN` returns rows in any order: newest first again.
        entries.sort_by_key(|(e, _)| std::cmp::Reverse((e.created_at, e.id)));
        let mut user_ids: Vec<i64> = entries.iter().map(|(e, _)| e.user_id.get()).collect();
        user_ids.sort_unstable();
        user_ids.dedup();
        let owners = self.owners(user_ids).await?;
        let entries = entries
            .into_iter()
            .map(|(entry, channel)| AdminLogEntry {
                owner: owners.get(&entry.user_id.get()).cloned(),
                entry,
                channel,
            })
            .collect();
        Ok(AdminLogPage {
            entries,
            counted,
            searched_from,
        })
    }

    async fn users(&self, search: &UserSearch) -> Result<UserPage> {
        let counted = self
            .counted(&users_count_query(search), search.limits.window)
            .await?;
        let rows = users_page_query(search).all(&self.db).await?;
        let users = rows
            .into_iter()
            .map(|m| {
                let platform = PlatformTag::of(&m.platform_id);
                Ok(AdminUser {
                    user: to_user(m)?,
                    platform,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(UserPage { users, counted })
    }

    async fn cells(&self, from: UnixTime, until: UnixTime) -> Result<Vec<UsageCell>> {
        let backend = self.db.get_database_backend();
        let rows = usage_query(backend, from, until)
            .into_model::<CellRow>()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| UsageCell {
                hour: UnixTime::from_secs(r.hour.saturating_mul(HOUR)),
                channel: r.channel_id.map(ChannelId::new),
                totals: UsageTotals {
                    requests: r.requests,
                    prompt_tokens: join(r.prompt_hi, r.prompt_lo),
                    completion_tokens: join(r.completion_hi, r.completion_lo),
                    quota: Quota::new(join(r.quota_hi, r.quota_lo)),
                },
            })
            .collect())
    }

    async fn holds(&self) -> Result<HoldsInFlight> {
        let row = holds_query(self.db.get_database_backend())
            .into_model::<HoldsRow>()
            .one(&self.db)
            .await?;
        Ok(row.map_or_else(HoldsInFlight::default, |r| HoldsInFlight {
            count: r.count,
            quota: Quota::new(join(r.amount_hi, r.amount_lo)),
        }))
    }

    /// The database's plan for each statement of `GET /logs` with `query`, and of `GET /usage`
    /// over `[from, until)`: `boundary` (only when a filter needs it), `count`, `page`, `rows`,
    /// `owners`, `usage`, `holds` and `errors`.
    /// Tests and benchmarks use it to check that no read scans the table.
    pub async fn admin_read_plans(
        &self,
        query: &AdminLogQuery,
        from: UnixTime,
        until: UnixTime,
    ) -> std::result::Result<Vec<StatementPlan>, StorageError> {
        let backend = self.db.get_database_backend();
        let first = plan(query, None);
        let (bounded, cond, _) = self.bounded(query).await?;
        let mut statements = Vec::new();
        // The boundary is read only when a filter needs it, as in `log_page`.
        if first.residual.is_some() {
            statements.push((
                "boundary",
                boundary_query(backend, &first, &first.indexed, query.limits),
            ));
        }
        statements.extend([
            (
                "count",
                backend.build(&log_count_query(&bounded, &cond, query.limits.window)),
            ),
            ("page", page_query(backend, &bounded, &cond, query)),
            ("rows", rows_query(vec![1, 2]).build(backend)),
            ("owners", owners_query(vec![1, 2]).build(backend)),
            ("usage", usage_query(backend, from, until).build(backend)),
            ("holds", holds_query(backend).build(backend)),
            ("errors", errors_query(backend, from, until).build(backend)),
        ]);
        self.explain_all(statements).await
    }

    /// The database's plan for each statement of `GET /users` with `search` (`users.count`,
    /// `users.page`) and of `GET /users/{user}` (`user`, `tokens`, `usage_by_model`), built by
    /// the same functions the reads run, as [`SeaStore::admin_read_plans`] does for the log.
    pub async fn admin_user_plans(
        &self,
        search: &UserSearch,
        user: UserId,
    ) -> std::result::Result<Vec<StatementPlan>, StorageError> {
        let backend = self.db.get_database_backend();
        self.explain_all(vec![
            ("users.count", backend.build(&users_count_query(search))),
            ("users.page", users_page_query(search).build(backend)),
            ("user", user::Entity::find_by_id(user.get()).build(backend)),
            ("tokens", user_tokens_query(user).build(backend)),
            (
                "usage_by_model",
                usage_by_model_query(backend, user).build(backend),
            ),
        ])
        .await
    }

    async fn explain_all(
        &self,
        statements: Vec<(&'static str, Statement)>,
    ) -> Result<Vec<StatementPlan>> {
        let mut out = Vec::new();
        for (name, s) in statements {
            out.push(StatementPlan {
                name,
                sql: s.to_string(),
                plan: self.explain(s).await?,
            });
        }
        Ok(out)
    }

    /// The database's plan of `s`: one line per row of `EXPLAIN QUERY PLAN` (SQLite) or of
    /// `EXPLAIN` (MySQL: `table=… type=… key=… Extra=…`).
    pub(crate) async fn explain(&self, s: Statement) -> Result<Vec<String>> {
        let mysql = s.db_backend == DbBackend::MySql;
        let prefix = if mysql {
            // A text of its own each time: the driver keeps prepared statements per
            // connection, and MariaDB (10.11) explains a re-executed prepared statement
            // without `Using index` although it still reads only the index.
            static EXPLAINED: AtomicU64 = AtomicU64::new(0);
            let n = EXPLAINED.fetch_add(1, Ordering::Relaxed);
            format!("EXPLAIN /* plan {n} */ ")
        } else {
            "EXPLAIN QUERY PLAN ".to_owned()
        };
        let explained = Statement {
            sql: format!("{prefix}{}", s.sql),
            ..s
        };
        let rows = self.db.query_all_raw(explained).await?;
        rows.iter()
            .map(|r| {
                if mysql {
                    let get = |c: &str| {
                        r.try_get::<Option<String>>("", c)
                            .map(|v| format!("{c}={}", v.unwrap_or_default()))
                    };
                    Ok([get("table")?, get("type")?, get("key")?, get("Extra")?].join(" "))
                } else {
                    Ok(r.try_get::<String>("", "detail")?)
                }
            })
            .collect()
    }
}

#[async_trait]
impl AdminReadRepository for SeaStore {
    async fn user_page(&self, search: &UserSearch) -> std::result::Result<UserPage, RepoError> {
        Ok(self.users(search).await?)
    }

    async fn user_by_id(&self, id: UserId) -> std::result::Result<Option<AdminUser>, RepoError> {
        let row = user::Entity::find_by_id(id.get())
            .one(&self.db)
            .await
            .map_err(StorageError::from)?;
        let Some(m) = row else { return Ok(None) };
        let platform = PlatformTag::of(&m.platform_id);
        let mut user = to_user(m)?;
        if user.held_quota.get() > 0 {
            user.leased_quota = crate::users::leased(&self.db, user.id).await?;
        }
        Ok(Some(AdminUser { user, platform }))
    }

    async fn admin_log_page(
        &self,
        query: &AdminLogQuery,
    ) -> std::result::Result<AdminLogPage, RepoError> {
        Ok(self.log_page(query).await?)
    }

    async fn usage_cells(
        &self,
        from: UnixTime,
        until: UnixTime,
    ) -> std::result::Result<Vec<UsageCell>, RepoError> {
        Ok(self.cells(from, until).await?)
    }

    async fn error_cells(
        &self,
        from: UnixTime,
        until: UnixTime,
    ) -> std::result::Result<Option<Vec<ErrorCell>>, RepoError> {
        Ok(Some(self.error_hours(from, until).await?))
    }

    async fn holds_in_flight(&self) -> std::result::Result<HoldsInFlight, RepoError> {
        Ok(self.holds().await?)
    }
}
