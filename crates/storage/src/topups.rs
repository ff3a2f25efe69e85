//! [`TopUpRepository`] on SeaORM: the receipt (unique per platform and `payment_id`), the
//! balance increment and the log row commit in one transaction. A concurrent repeat of the same
//! `payment_id` loses on the unique index and is answered from the winner's receipt.

use crate::SeaStore;
use crate::entity::{topup, user};
use crate::error::{Result, StorageError, corrupt};
use crate::logs::insert_log;
use crate::retry::{ATTEMPTS, backoff, is_transient, is_unique_violation};
use crate::users::{find_model, to_user};
use async_trait::async_trait;
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
};
use std::str::FromStr;
use tollgate_domain::ids::{ExternalUserId, PaymentId, PlatformId, UserId};
use tollgate_domain::logs::NewLogEntry;
use tollgate_domain::repository::TopUpRepository;
use tollgate_domain::time::UnixTime;
use tollgate_domain::topup::{TopUp, TopUpOutcome, TopUpReceipt};
use tollgate_domain::user::User;
use tollgate_domain::{Quota, RepoError};

impl SeaStore {
    async fn find_topup(
        &self,
        platform: &PlatformId,
        payment: &PaymentId,
    ) -> Result<Option<topup::Model>> {
        Ok(topup::Entity::find()
            .filter(topup::Column::PlatformId.eq(platform.as_str()))
            .filter(topup::Column::PaymentId.eq(payment.as_str()))
            .one(&self.db)
            .await?)
    }

    /// The receipt of a stored top-up, with its user's external id.
    async fn receipt(&self, row: topup::Model) -> Result<TopUpReceipt> {
        let owner: String = user::Entity::find_by_id(row.user_id)
            .select_only()
            .column(user::Column::ExternalUserId)
            .into_tuple()
            .one(&self.db)
            .await?
            .ok_or_else(|| corrupt("topup user", row.id))?;
        Ok(TopUpReceipt {
            user_id: UserId::new(row.user_id),
            external_user_id: ExternalUserId::parse(owner)
                .ok_or_else(|| corrupt("topup user id", row.id))?,
            amount_usd: Decimal::from_str(&row.amount_usd)
                .map_err(|_| corrupt("amount_usd", row.id))?,
            quota_added: Quota::new(row.quota_added),
            quota_after: Quota::new(row.quota_after),
            payment_id: PaymentId::parse(row.payment_id)
                .ok_or_else(|| corrupt("payment_id", row.id))?,
        })
    }

    /// One attempt. The balance increment comes first: its row lock serialises every credit of
    /// this user, so the receipt (whose foreign key would otherwise take a shared lock on the
    /// same row first) cannot deadlock with a concurrent credit, and the balance read next is
    /// exactly the one this credit produced.
    async fn credit_once(
        &self,
        platform: &PlatformId,
        owner: &User,
        cmd: &TopUp,
        now: UnixTime,
    ) -> std::result::Result<Quota, DbErr> {
        let txn = self.db.begin().await?;
        let quota = cmd.amount.quota().get();
        let updated = user::Entity::update_many()
            .col_expr(
                user::Column::Quota,
                Expr::col(user::Column::Quota).add(quota),
            )
            .col_expr(user::Column::UpdatedAt, Expr::value(now.secs()))
            .filter(user::Column::Id.eq(owner.id.get()))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(DbErr::RecordNotUpdated);
        }
        let after: i64 = user::Entity::find_by_id(owner.id.get())
            .select_only()
            .column(user::Column::Quota)
            .into_tuple()
            .one(&txn)
            .await?
            .ok_or(DbErr::RecordNotFound("user".into()))?;
        let receipt = topup::ActiveModel {
            platform_id: Set(platform.as_str().to_owned()),
            payment_id: Set(cmd.payment_id.as_str().to_owned()),
            user_id: Set(owner.id.get()),
            amount_usd: Set(cmd.amount.value().to_string()),
            quota_added: Set(quota),
            quota_after: Set(after),
            created_at: Set(now.secs()),
            ..Default::default()
        };
        // A duplicate payment id fails here and rolls the increment back with the transaction.
        topup::Entity::insert(receipt).exec(&txn).await?;
        insert_log(
            &txn,
            &NewLogEntry::top_up(owner.id, cmd.amount.quota(), cmd.payment_id.as_str(), now),
        )
        .await?;
        txn.commit().await?;
        Ok(Quota::new(after))
    }
}

#[async_trait]
impl TopUpRepository for SeaStore {
    async fn credit(
        &self,
        platform: &PlatformId,
        cmd: &TopUp,
        now: UnixTime,
    ) -> std::result::Result<TopUpOutcome, RepoError> {
        let Some(owner) = find_model(&self.db, platform, &cmd.external_user_id).await? else {
            return Ok(TopUpOutcome::UserNotFound);
        };
        let owner = to_user(owner)?;
        for attempt in 1..=ATTEMPTS {
            if let Some(existing) = self.find_topup(platform, &cmd.payment_id).await? {
                return Ok(TopUpOutcome::AlreadyProcessed(
                    self.receipt(existing).await?,
                ));
            }
            match self.credit_once(platform, &owner, cmd, now).await {
                Ok(after) => {
                    return Ok(TopUpOutcome::Credited(TopUpReceipt {
                        user_id: owner.id,
                        external_user_id: owner.external_user_id.clone(),
                        amount_usd: cmd.amount.value(),
                        quota_added: cmd.amount.quota(),
                        quota_after: after,
                        payment_id: cmd.payment_id.clone(),
                    }));
                }
                // A concurrent request with this payment id committed first: the next turn
                // finds its receipt.
                Err(e) if is_unique_violation(&e) => {}
                Err(e) if is_transient(&e) => backoff(attempt).await,
                Err(e) => return Err(StorageError::from(e).into()),
            }
        }
        Err(StorageError::Contention("top-up").into())
    }
}
