//! [`CallErrorRepository`] on SeaORM: failed calls counted in `call_errors`, one row per hour,
//! channel and kind (see the migration `m20261203_000008_call_errors`), and the hourly reads of
//! the usage report.
//!
//! A batch is tallied in the domain first ([`tally`]), then each count is one upsert
//! (`INSERT … ON DUPLICATE KEY UPDATE calls = calls + ?` on MySQL, `INSERT … ON CONFLICT …
//! DO UPDATE SET calls = calls + ?` on SQLite): the database adds to the stored count, so
//! concurrent batches from any number of instances add up exactly. The upserts of a batch
//! share one transaction (all counted or none) and take their row locks in key order; a lock
//! conflict rolls the transaction back whole and it is retried.

use crate::SeaStore;
use crate::entity::call_error;
use crate::error::{Result, StorageError};
use crate::logs::{join, with_sums};
use crate::retry::{ATTEMPTS, backoff, is_transient};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Select, TransactionTrait,
};
use tollgate_domain::RepoError;
use tollgate_domain::admin_read::ErrorCell;
use tollgate_domain::call_errors::{ErrorTally, FailedCall, tally};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::repository::CallErrorRepository;
use tollgate_domain::time::UnixTime;

/// `channel_id` of failed calls that tried no channel (the column is part of the key, so it
/// cannot be NULL; channel ids start at 1).
const NO_CHANNEL: i64 = 0;

#[derive(Debug, FromQueryResult)]
struct HourRow {
    hour_start: i64,
    calls_hi: i64,
    calls_lo: i64,
}

/// Failed calls per hour that starts in `[from, until)`: a range of the primary key.
pub(crate) fn errors_query(
    backend: DbBackend,
    from: UnixTime,
    until: UnixTime,
) -> Select<call_error::Entity> {
    let select = call_error::Entity::find()
        .select_only()
        .column(call_error::Column::HourStart);
    with_sums(select, backend, &[("calls", "calls", None)])
        .filter(call_error::Column::HourStart.gte(from.secs()))
        .filter(call_error::Column::HourStart.lt(until.secs()))
        .group_by(call_error::Column::HourStart)
        .order_by_asc(call_error::Column::HourStart)
}

impl SeaStore {
    async fn record_once(&self, tallies: &[ErrorTally]) -> std::result::Result<(), DbErr> {
        let txn = self.db.begin().await?;
        for t in tallies {
            let row = call_error::ActiveModel {
                hour_start: Set(t.hour.secs()),
                channel_id: Set(t.channel.map_or(NO_CHANNEL, ChannelId::get)),
                kind: Set(t.kind.code()),
                calls: Set(t.calls),
            };
            call_error::Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([
                        call_error::Column::HourStart,
                        call_error::Column::ChannelId,
                        call_error::Column::Kind,
                    ])
                    .value(
                        call_error::Column::Calls,
                        Expr::col(call_error::Column::Calls).add(t.calls),
                    )
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await
    }

    /// Failed calls per hour that starts in `[from, until)`, every kind and channel counted.
    pub(crate) async fn error_hours(
        &self,
        from: UnixTime,
        until: UnixTime,
    ) -> Result<Vec<ErrorCell>> {
        let backend = self.db.get_database_backend();
        let rows = errors_query(backend, from, until)
            .into_model::<HourRow>()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| ErrorCell {
                hour: UnixTime::from_secs(r.hour_start),
                errors: join(r.calls_hi, r.calls_lo),
            })
            .collect())
    }
}

#[async_trait]
impl CallErrorRepository for SeaStore {
    async fn record_call_errors(
        &self,
        failures: &[FailedCall],
    ) -> std::result::Result<(), RepoError> {
        let tallies = tally(failures);
        if tallies.is_empty() {
            return Ok(());
        }
        for attempt in 1..=ATTEMPTS {
            match self.record_once(&tallies).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => backoff(attempt).await,
                Err(e) => return Err(StorageError::from(e).into()),
            }
        }
        Err(StorageError::Contention("record call errors").into())
    }
}
