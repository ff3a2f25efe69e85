//! [`LeaseRepository`] on SeaORM. A lease is a hold row keyed by the lease's id, with no key
//! (`token_id` 0), so everything that reads holds counts it: the user's `held_quota`, the
//! instance registry that returns a dead instance's holds, the console's holds in flight.
//! Growing one is the same conditional UPDATE on the user as a call's hold, with a headroom
//! factor: an instance only leases when the free balance is several times the slice. Settled
//! calls' charges stay in the row until a growth or shrink folds them (see
//! [`LeaseRepository`]), so a settlement batch never writes a lease's row. Lock order as
//! everywhere: hold row, then user.

use crate::SeaStore;
use crate::billing::{HELD, LEASE_TOKEN, shrink, take, unreserve};
use crate::entity::{hold, user};
use crate::retry::retrying;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, Statement, TransactionTrait,
};
use tollgate_domain::Quota;
use tollgate_domain::RepoError;
use tollgate_domain::billing::{Lease, LeaseGrowth, LeaseId};
use tollgate_domain::repository::LeaseRepository;
use tollgate_domain::time::UnixTime;

/// What a growth of `amount` needs free: `amount × headroom` (at least once).
fn needed(amount: i64, headroom: u32) -> i64 {
    amount.saturating_mul(i64::from(Ord::max(headroom, 1)))
}

/// The lease's row while it is held.
async fn held_row(
    conn: &impl ConnectionTrait,
    lease: &LeaseId,
) -> Result<Option<hold::Model>, DbErr> {
    hold::Entity::find()
        .filter(hold::Column::RequestId.eq(lease.as_str()))
        .filter(hold::Column::State.eq(HELD))
        .one(conn)
        .await
}

/// Moves `amount` between the user's free balance and their holds (`amount` may be negative).
async fn hold_more(txn: &DatabaseTransaction, user_id: i64, amount: i64) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(
            user::Column::HeldQuota,
            Expr::col(user::Column::HeldQuota).add(amount),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

impl SeaStore {
    /// Grows `lease` by `amount` and folds `fold` of its charges (see
    /// [`LeaseRepository::grow_lease`]).
    async fn grow_once(
        &self,
        lease: &Lease,
        amount: i64,
        fold: i64,
        headroom: u32,
        create: bool,
        now: UnixTime,
    ) -> Result<LeaseGrowth, DbErr> {
        if !create && self.db.get_database_backend() == DbBackend::MySql {
            return self
                .grow_in_one_statement(lease, amount, fold, headroom)
                .await;
        }
        // A new lease has spent nothing.
        let fold = if create { 0 } else { fold };
        let change = amount.saturating_sub(fold);
        let txn = self.db.begin().await?;
        if create {
            hold::Entity::insert(hold::ActiveModel {
                request_id: Set(lease.id.as_str().to_owned()),
                user_id: Set(lease.user_id.get()),
                token_id: Set(LEASE_TOKEN),
                amount: Set(amount),
                state: Set(HELD),
                created_at: Set(now.secs()),
                // Never swept by age: returned when idle, at shutdown, or by the registry.
                expires_at: Set(i64::MAX),
                instance_id: Set(lease.instance.as_str().to_owned()),
                ..Default::default()
            })
            .exec(&txn)
            .await?;
        } else {
            let grown = hold::Entity::update_many()
                .col_expr(
                    hold::Column::Amount,
                    Expr::col(hold::Column::Amount).add(change),
                )
                .filter(hold::Column::RequestId.eq(lease.id.as_str()))
                .filter(hold::Column::State.eq(HELD))
                .exec(&txn)
                .await?;
            if grown.rows_affected != 1 {
                txn.rollback().await?;
                return Ok(LeaseGrowth::Lost);
            }
        }
        // The charges folded are already out of the balance: they leave the holds too, so the
        // free balance the headroom rule sees is larger by them.
        let need = needed(amount, headroom).saturating_sub(fold);
        let taken = user::Entity::update_many()
            .col_expr(
                user::Column::HeldQuota,
                Expr::col(user::Column::HeldQuota).add(change),
            )
            .filter(user::Column::Id.eq(lease.user_id.get()))
            .filter(
                Expr::col(user::Column::Quota)
                    .sub(Expr::col(user::Column::HeldQuota))
                    .gte(need),
            )
            .exec(&txn)
            .await?;
        if taken.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(LeaseGrowth::Refused);
        }
        txn.commit().await?;
        Ok(LeaseGrowth::Grown)
    }

    /// [`Self::grow_once`] of an existing lease on MySQL/MariaDB: the lease row and the
    /// user's holds change in one multi-table UPDATE under the same headroom condition, so a
    /// top-up is one round trip instead of four (BEGIN, two UPDATEs, COMMIT). With 1,000 busy
    /// users top-ups were about half of the database's transactions (docs/benchmarks.md).
    /// Both rows change or neither; `STRAIGHT_JOIN` keeps the lock order of every billing
    /// statement, hold row first, then user. Only when nothing changed is the lease row read again, to
    /// tell a lease that is gone from a balance that refused.
    async fn grow_in_one_statement(
        &self,
        lease: &Lease,
        amount: i64,
        fold: i64,
        headroom: u32,
    ) -> Result<LeaseGrowth, DbErr> {
        let need = needed(amount, headroom).saturating_sub(fold);
        let change = amount.saturating_sub(fold);
        let grown = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::MySql,
                "UPDATE holds h STRAIGHT_JOIN users u ON u.id = h.user_id \
                 SET h.amount = h.amount + ?, u.held_quota = u.held_quota + ? \
                 WHERE h.request_id = ? AND h.state = ? AND u.quota - u.held_quota >= ?",
                [
                    change.into(),
                    change.into(),
                    lease.id.as_str().into(),
                    HELD.into(),
                    need.into(),
                ],
            ))
            .await?;
        // The connection reports matched rows (CLIENT_FOUND_ROWS): the lease row and its user.
        if grown.rows_affected() == 2 {
            return Ok(LeaseGrowth::Grown);
        }
        Ok(if held_row(&self.db, &lease.id).await?.is_some() {
            LeaseGrowth::Refused
        } else {
            LeaseGrowth::Lost
        })
    }

    async fn shrink_once(&self, lease: &LeaseId, amount: i64) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        let Some(row) = held_row(&txn, lease).await? else {
            txn.rollback().await?;
            return Ok(false);
        };
        let taken = shrink(&txn, &row, amount).await?;
        hold_more(&txn, row.user_id, -taken).await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn end_once(&self, lease: &LeaseId) -> Result<Option<Quota>, DbErr> {
        let txn = self.db.begin().await?;
        let Some(row) = take(&txn, lease.as_str(), HELD).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        unreserve(&txn, &row).await?;
        txn.commit().await?;
        Ok(Some(Quota::new(row.amount)))
    }
}

#[async_trait]
impl LeaseRepository for SeaStore {
    async fn grow_lease(
        &self,
        lease: &Lease,
        amount: Quota,
        fold: Quota,
        headroom: u32,
        create: bool,
        now: UnixTime,
    ) -> Result<LeaseGrowth, RepoError> {
        retrying("grow lease", || {
            self.grow_once(lease, amount.get(), fold.get(), headroom, create, now)
        })
        .await
    }

    async fn shrink_lease(&self, lease: &LeaseId, amount: Quota) -> Result<bool, RepoError> {
        retrying("shrink lease", || self.shrink_once(lease, amount.get())).await
    }

    async fn end_lease(&self, lease: &LeaseId) -> Result<Option<Quota>, RepoError> {
        retrying("end lease", || self.end_once(lease)).await
    }

    async fn ping_leases(&self) -> Result<(), RepoError> {
        Ok(self.ping().await?)
    }
}
