//! [`LogRepository`] on SeaORM: filtered, newest-first pages with totals over the whole filter,
//! and per-model aggregates. Sums are cast to integers on MySQL, where `SUM(BIGINT)` is DECIMAL.

use crate::SeaStore;
use crate::entity::log;
use crate::error::{Result, StorageError, corrupt};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tollgate_domain::ids::{LogId, TokenId, UserId};
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
fn sum(backend: DbBackend, expr: &str) -> Expr {
    match backend {
        DbBackend::MySql => Expr::cust(format!("CAST(COALESCE(SUM({expr}), 0) AS SIGNED)")),
        _ => Expr::cust(format!("COALESCE(SUM({expr}), 0)")),
    }
}

fn filter(user: UserId, q: &LogQuery) -> Condition {
    let mut c = Condition::all().add(log::Column::UserId.eq(user.get()));
    if let Some(from) = q.from {
        c = c.add(log::Column::CreatedAt.gte(from.secs()));
    }
    if let Some(until) = q.until {
        c = c.add(log::Column::CreatedAt.lt(until.secs()));
    }
    if let Some(kind) = q.kind {
        c = c.add(log::Column::Kind.eq(kind.code()));
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

/// Inserts a log row on `db` (a connection or an open transaction); returns its id.
pub(crate) async fn insert_log(
    db: &impl ConnectionTrait,
    e: &NewLogEntry,
) -> std::result::Result<i64, DbErr> {
    let row = log::ActiveModel {
        user_id: Set(e.user_id.get()),
        kind: Set(e.kind.code()),
        created_at: Set(e.created_at.secs()),
        model: Set(e.model.clone()),
        token_id: Set(e.token_id.map(TokenId::get)),
        token_name: Set(e.token_name.clone()),
        prompt_tokens: Set(e.prompt_tokens),
        completion_tokens: Set(e.completion_tokens),
        quota: Set(e.quota.get()),
        request_id: Set(e.request_id.clone()),
        is_stream: Set(e.is_stream),
        latency_ms: Set(e.latency_ms),
        ..Default::default()
    };
    Ok(log::Entity::insert(row).exec(db).await?.last_insert_id)
}

#[derive(Debug, FromQueryResult)]
struct SummaryRow {
    total_tokens: i64,
    consumed: i64,
    topped_up: i64,
}

#[derive(Debug, FromQueryResult)]
struct UsageRow {
    model: String,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    quota: i64,
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
        let consume = LogKind::Consume.code();
        let topup = LogKind::TopUp.code();
        let summary = log::Entity::find()
            .select_only()
            .column_as(sum(backend, &format!("CASE WHEN kind = {consume} THEN prompt_tokens + completion_tokens ELSE 0 END")), "total_tokens")
            .column_as(sum(backend, &format!("CASE WHEN kind = {consume} THEN quota ELSE 0 END")), "consumed")
            .column_as(sum(backend, &format!("CASE WHEN kind = {topup} THEN quota ELSE 0 END")), "topped_up")
            .filter(cond.clone())
            .into_model::<SummaryRow>()
            .one(&self.db)
            .await
            .map_err(StorageError::from)?
            .map_or_else(LogSummary::default, |r| LogSummary {
                total_tokens: r.total_tokens,
                consumed: Quota::new(r.consumed),
                topped_up: Quota::new(r.topped_up),
            });
        let rows = log::Entity::find()
            .filter(cond)
            .order_by_desc(log::Column::CreatedAt)
            .order_by_desc(log::Column::Id)
            .offset(q.offset())
            .limit(q.page_size)
            .all(&self.db)
            .await
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
        let rows = log::Entity::find()
            .select_only()
            .column(log::Column::Model)
            .column_as(Expr::cust("COUNT(*)"), "requests")
            .column_as(sum(backend, "prompt_tokens"), "prompt_tokens")
            .column_as(sum(backend, "completion_tokens"), "completion_tokens")
            .column_as(sum(backend, "quota"), "quota")
            .filter(log::Column::UserId.eq(user.get()))
            .filter(log::Column::Kind.eq(LogKind::Consume.code()))
            .group_by(log::Column::Model)
            .order_by_asc(log::Column::Model)
            .into_model::<UsageRow>()
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(rows
            .into_iter()
            .map(|r| ModelUsage {
                model: r.model,
                requests: r.requests,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                quota: Quota::new(r.quota),
            })
            .collect())
    }
}
