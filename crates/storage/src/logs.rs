//! [`LogRepository`] on SeaORM: filtered, newest-first pages with totals over the whole filter,
//! and per-model aggregates. Sums are cast to integers on MySQL, where `SUM(BIGINT)` is DECIMAL.

use crate::SeaStore;
use crate::admin_read::{kind_arms, newest, of_kind};
use crate::entity::log;
use crate::error::{Result, StorageError, corrupt};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, Statement,
};
use tollgate_domain::ids::{ChannelId, LogId, TokenId, UserId};
use tollgate_domain::logs::{
    LogEntry, LogKind, LogPage, LogQuery, LogSummary, ModelUsage, NewLogEntry,
};
use tollgate_domain::repository::LogRepository;
use tollgate_domain::time::UnixTime;
use tollgate_domain::{Quota, RepoError};

fn to_entry(m: log::Model) -> Result<LogEntry> {
    Ok(LogEntry {
        id: LogId::new(m.id),
        user_id: UserId::new(m.user_id),
        kind: LogKind::from_code(m.kind).ok_or_else(|| corrupt("log kind", m.id))?,
        created_at: UnixTime::from_secs(m.created_at),
        model: m.model,
        token_id: m.token_id.map(TokenId::new),
        token_name: m.token_name,
        prompt_tokens: m.prompt_tokens,
        completion_tokens: m.completion_tokens,
        quota: Quota::new(m.quota),
        request_id: m.request_id,
        is_stream: m.is_stream,
        latency_ms: m.latency_ms,
    })
}

/// `SUM(expr)` as a 64-bit integer, 0 over no rows. `expr` is a fixed SQL fragment of this file.
pub(crate) fn sum(backend: DbBackend, expr: &str) -> Expr {
    match backend {
        DbBackend::MySql => Expr::cust(format!("CAST(COALESCE(SUM({expr}), 0) AS SIGNED)")),
        _ => Expr::cust(format!("COALESCE(SUM({expr}), 0)")),
    }
}

/// Where a column is split for summing.
const SPLIT: i64 = 1 << 32;

/// The sum of a 64-bit `column` (over rows where `when` holds, if given) as two sums that
/// cannot overflow: of `column / 2^32` and of `column % 2^32` (both truncating, on both
/// backends), joined again by [`join`]. A plain `SUM` of large values fails on SQLite
/// ("integer overflow") and MySQL (out of range), which would make one hostile row break a
/// user's stats and logs for good.
pub(crate) fn split_sum(backend: DbBackend, column: &str, when: Option<&str>) -> (Expr, Expr) {
    let div = match backend {
        DbBackend::MySql => "DIV",
        _ => "/",
    };
    let part = |e: String| match when {
        Some(c) => format!("CASE WHEN {c} THEN {e} ELSE 0 END"),
        None => e,
    };
    (
        sum(backend, &part(format!("{column} {div} {SPLIT}"))),
        sum(backend, &part(format!("{column} % {SPLIT}"))),
    )
}

/// `high × 2^32 + low`, saturated to 64 bits.
pub(crate) fn join(high: i64, low: i64) -> i64 {
    let v = i128::from(high) * i128::from(SPLIT) + i128::from(low);
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// `q`'s conditions on `user`'s rows but the kind (see [`filter`]).
fn filter_but_kind(user: UserId, q: &LogQuery) -> Condition {
    let mut c = Condition::all().add(log::Column::UserId.eq(user.get()));
    if let Some(from) = q.from {
        c = c.add(log::Column::CreatedAt.gte(from.secs()));
    }
    if let Some(until) = q.until {
        c = c.add(log::Column::CreatedAt.lt(until.secs()));
    }
    if let Some(m) = &q.model_contains {
        // INSTR, not LIKE: `%` and `_` stay literal and matching stays byte-exact on both
        // backends (SQLite's LIKE would fold ASCII case).
        c = c.add(
            Expr::expr(
                Func::cust("INSTR")
                    .arg(Expr::col(log::Column::Model))
                    .arg(m.as_str()),
            )
            .gt(0),
        );
    }
    c
}

/// `q`'s conditions on `user`'s rows. Without a kind, every kind is named: the user's rows
/// are found through `ix_logs_user_kind_time`, one range per kind (no index leads with the
/// user alone).
fn filter(user: UserId, q: &LogQuery) -> Condition {
    filter_but_kind(user, q).add(of_kind(q.kind))
}

/// Rows in one of SQLite's multi-row log INSERTs at most.
const SQLITE_ROWS_PER_INSERT: usize = 256;

/// The columns a new log row is given, in the order [`push_log_values`] binds them (the rest
/// take their defaults: `id`).
const LOG_COLUMNS: [log::Column; 13] = [
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
    log::Column::ChannelId,
];

/// `INSERT INTO logs (…) VALUES (?, …), …` for `rows` rows (both backends take `?`); on
/// SQLite `INSERT OR FAIL`, see [`crate::SQLITE_OR_FAIL`].
fn insert_logs_sql(backend: DbBackend, rows: usize) -> String {
    use sea_orm::Iden as _;
    static COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns: Vec<String> = LOG_COLUMNS.iter().map(|c| c.to_string()).collect();
        format!("INTO logs ({}) VALUES ", columns.join(", "))
    });
    static ROW: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("({})", ["?"; LOG_COLUMNS.len()].join(", ")));
    let mut sql = String::with_capacity(32 + COLUMNS.len() + rows * (ROW.len() + 2));
    sql.push_str("INSERT ");
    if backend == DbBackend::Sqlite {
        sql.push_str(crate::SQLITE_OR_FAIL);
        sql.push(' ');
    }
    sql.push_str(&COLUMNS);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&ROW);
    }
    sql
}

/// `e`'s values in the order of [`LOG_COLUMNS`], with the types the entity gives them.
fn push_log_values(values: &mut Vec<sea_orm::Value>, e: &NewLogEntry) {
    use sea_orm::Value;
    values.extend([
        Value::BigInt(Some(e.user_id.get())),
        Value::SmallInt(Some(e.kind.code())),
        Value::BigInt(Some(e.created_at.secs())),
        Value::String(Some(e.model.clone())),
        Value::BigInt(e.token_id.map(TokenId::get)),
        Value::String(Some(e.token_name.clone())),
        Value::BigInt(Some(e.prompt_tokens)),
        Value::BigInt(Some(e.completion_tokens)),
        Value::BigInt(Some(e.quota.get())),
        Value::String(Some(e.request_id.clone())),
        Value::Bool(Some(e.is_stream)),
        Value::BigInt(Some(e.latency_ms)),
        Value::BigInt(e.channel_id.map(ChannelId::get)),
    ]);
}

/// Inserts several log rows on `db` (a transaction, in practice), in the order given: one
/// multi-row INSERT on MySQL; on SQLite, one a power of two of rows (200 rows: 128, 64, 8).
///
/// SQLite compiles each statement text into a program kept in the connection's statement
/// cache (100 statements), and a `VALUES` list of thirteen placeholders a row is a new text
/// for every batch size: a busy instance kept dozens of those programs, each hundreds of KB
/// for a 256-row batch, long after its load (docs/benchmarks.md, ninth session). With sizes
/// drawn from nine, the cache keeps at most nine such programs, all reused. MySQL keeps the
/// one statement: its prepared statements live in the server, and each statement more would
/// be a round trip more per batch.
///
/// The statement is written here, its values bound as they are, rather than built by SeaORM's
/// `insert_many` from a model a row: that built a query tree of thirteen expressions a row,
/// copying each value twice, only to print the same text — about a fifth of a settled call's
/// instructions in the settlement batch for one busy user (docs/benchmarks.md, tenth session).
pub(crate) async fn insert_logs(
    db: &impl ConnectionTrait,
    entries: &[NewLogEntry],
) -> std::result::Result<(), DbErr> {
    if entries.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let chunks: Vec<&[NewLogEntry]> = if backend == DbBackend::Sqlite {
        power_of_two_chunks(entries, SQLITE_ROWS_PER_INSERT).collect()
    } else {
        vec![entries]
    };
    for chunk in chunks {
        let mut values = Vec::with_capacity(chunk.len() * LOG_COLUMNS.len());
        for e in chunk {
            push_log_values(&mut values, e);
        }
        db.execute_raw(Statement::from_sql_and_values(
            backend,
            insert_logs_sql(backend, chunk.len()),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// `items` in order, cut into runs whose lengths are powers of two no larger than `max` (a
/// power of two), longest first: 200 with a `max` of 256 gives 128, 64, 8.
fn power_of_two_chunks<T>(mut items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let len = if items.len() >= max {
            max
        } else {
            // The largest power of two not above the length.
            1 << items.len().ilog2()
        };
        let (chunk, rest) = items.split_at(len);
        items = rest;
        Some(chunk)
    })
}

/// Inserts a log row on `db` (a connection or an open transaction); returns its id. The same
/// statement as [`insert_logs`]' for one row: one place maps an entry to its columns.
pub(crate) async fn insert_log(
    db: &impl ConnectionTrait,
    e: &NewLogEntry,
) -> std::result::Result<i64, DbErr> {
    let mut values = Vec::with_capacity(LOG_COLUMNS.len());
    push_log_values(&mut values, e);
    let backend = db.get_database_backend();
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            insert_logs_sql(backend, 1),
            values,
        ))
        .await?;
    i64::try_from(done.last_insert_id())
        .map_err(|_| DbErr::Custom(format!("log id {} out of range", done.last_insert_id())))
}

#[derive(Debug, FromQueryResult)]
struct SummaryRow {
    prompt_hi: i64,
    prompt_lo: i64,
    completion_hi: i64,
    completion_lo: i64,
    consumed_hi: i64,
    consumed_lo: i64,
    topped_up_hi: i64,
    topped_up_lo: i64,
}

#[derive(Debug, FromQueryResult)]
struct UsageRow {
    model: String,
    requests: i64,
    prompt_hi: i64,
    prompt_lo: i64,
    completion_hi: i64,
    completion_lo: i64,
    quota_hi: i64,
    quota_lo: i64,
}

/// Adds the two halves of each of `sums` to `query` as `<alias>_hi` and `<alias>_lo`.
pub(crate) fn with_sums<Q: QuerySelect>(
    mut query: Q,
    backend: DbBackend,
    sums: &[(&str, &str, Option<&str>)],
) -> Q {
    for (alias, column, when) in sums {
        let (hi, lo) = split_sum(backend, column, *when);
        query = query
            .column_as(hi, format!("{alias}_hi"))
            .column_as(lo, format!("{alias}_lo"));
    }
    query
}

/// A user's consumption grouped by model, by model name; the admin read plans show it too.
pub(crate) fn usage_by_model_query(backend: DbBackend, user: UserId) -> Select<log::Entity> {
    let query = log::Entity::find()
        .select_only()
        .column(log::Column::Model)
        .column_as(Expr::cust("COUNT(*)"), "requests");
    with_sums(
        query,
        backend,
        &[
            ("prompt", "prompt_tokens", None),
            ("completion", "completion_tokens", None),
            ("quota", "quota", None),
        ],
    )
    .filter(log::Column::UserId.eq(user.get()))
    .filter(log::Column::Kind.eq(LogKind::Consume.code()))
    .group_by(log::Column::Model)
    .order_by_asc(log::Column::Model)
}

#[async_trait]
impl LogRepository for SeaStore {
    async fn append_log(&self, e: &NewLogEntry) -> std::result::Result<LogEntry, RepoError> {
        let id = insert_log(&self.db, e).await.map_err(StorageError::from)?;
        Ok(e.clone().stored(LogId::new(id)))
    }

    async fn log_page(
        &self,
        user: UserId,
        q: &LogQuery,
    ) -> std::result::Result<LogPage, RepoError> {
        let backend = self.db.get_database_backend();
        let cond = filter(user, q);
        let total = log::Entity::find()
            .filter(cond.clone())
            .count(&self.db)
            .await
            .map_err(StorageError::from)?;
        let consume = format!("kind = {}", LogKind::Consume.code());
        let topup = format!("kind = {}", LogKind::TopUp.code());
        let summary = with_sums(
            log::Entity::find().select_only(),
            backend,
            &[
                ("prompt", "prompt_tokens", Some(&consume)),
                ("completion", "completion_tokens", Some(&consume)),
                ("consumed", "quota", Some(&consume)),
                ("topped_up", "quota", Some(&topup)),
            ],
        )
        .filter(cond.clone())
        .into_model::<SummaryRow>()
        .one(&self.db)
        .await
        .map_err(StorageError::from)?
        .map_or_else(LogSummary::default, |r| LogSummary {
            total_tokens: join(r.prompt_hi, r.prompt_lo)
                .saturating_add(join(r.completion_hi, r.completion_lo)),
            consumed: Quota::new(join(r.consumed_hi, r.consumed_lo)),
            topped_up: Quota::new(join(r.topped_up_hi, r.topped_up_lo)),
        });
        // Newest first: one kind's range, or every kind's merged.
        let page = newest(
            backend,
            "ix_logs_user_kind_time",
            &kind_arms(&filter_but_kind(user, q), q.kind),
            log::Entity::find,
            q.offset(),
            q.page_size,
        );
        let rows = self
            .db
            .query_all_raw(page)
            .await
            .map_err(StorageError::from)?
            .iter()
            .map(|r| log::Model::from_query_result(r, ""))
            .collect::<std::result::Result<Vec<_>, DbErr>>()
            .map_err(StorageError::from)?;
        let entries = rows.into_iter().map(to_entry).collect::<Result<Vec<_>>>()?;
        Ok(LogPage {
            entries,
            total,
            summary,
        })
    }

    async fn recent_consumption(
        &self,
        user: UserId,
        limit: u64,
    ) -> std::result::Result<Vec<LogEntry>, RepoError> {
        let rows = log::Entity::find()
            .filter(log::Column::UserId.eq(user.get()))
            .filter(log::Column::Kind.eq(LogKind::Consume.code()))
            .order_by_desc(log::Column::CreatedAt)
            .order_by_desc(log::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(rows.into_iter().map(to_entry).collect::<Result<Vec<_>>>()?)
    }

    async fn usage_by_model(
        &self,
        user: UserId,
    ) -> std::result::Result<Vec<ModelUsage>, RepoError> {
        let backend = self.db.get_database_backend();
        let rows = usage_by_model_query(backend, user)
            .into_model::<UsageRow>()
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(rows
            .into_iter()
            .map(|r| ModelUsage {
                model: r.model,
                requests: r.requests,
                prompt_tokens: join(r.prompt_hi, r.prompt_lo),
                completion_tokens: join(r.completion_hi, r.completion_lo),
                quota: Quota::new(join(r.quota_hi, r.quota_lo)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{SPLIT, join, power_of_two_chunks};

    #[test]
    fn split_sums_join_exactly_and_saturate() {
        for v in [
            0i64,
            1,
            -1,
            SPLIT - 1,
            SPLIT,
            i64::MAX,
            i64::MIN,
            -SPLIT - 5,
        ] {
            // What both backends compute: truncating division and remainder.
            assert_eq!(join(v / SPLIT, v % SPLIT), v, "{v}");
        }
        // Two rows of i64::MAX: the halves fit, the total saturates.
        let (hi, lo) = (i64::MAX / SPLIT, i64::MAX % SPLIT);
        assert_eq!(join(2 * hi, 2 * lo), i64::MAX);
        assert_eq!(join(-2 * hi, -2 * lo), i64::MIN);
    }

    #[test]
    fn chunks_are_powers_of_two_longest_first_in_order() {
        let lens = |n: usize, max: usize| {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = power_of_two_chunks(&items, max).collect();
            // In order, nothing lost or repeated.
            assert_eq!(chunks.concat(), items);
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert!(lens(0, 256).is_empty());
        assert_eq!(lens(1, 256), [1]);
        assert_eq!(lens(200, 256), [128, 64, 8]);
        assert_eq!(lens(255, 256), [128, 64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(lens(256, 256), [256]);
        assert_eq!(lens(600, 256), [256, 256, 64, 16, 8]);
    }
}
