//! [`UserRepository`] on SeaORM. Creation races are settled by the unique index on
//! `(platform_id, external_user_id)`: the loser of a concurrent insert updates instead.

use crate::SeaStore;
use crate::entity::{hold, user};
use crate::error::{Result, StorageError, corrupt};
use crate::retry::{ATTEMPTS, backoff, is_transient, is_unique_violation};
use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect,
};
use tollgate_domain::ids::{ExternalUserId, PlatformId, UserId};
use tollgate_domain::repository::UserRepository;
use tollgate_domain::time::UnixTime;
use tollgate_domain::user::{SyncOutcome, SyncUser, User};
use tollgate_domain::{Quota, RepoError};

pub(crate) fn to_user(m: user::Model) -> Result<User> {
    Ok(User {
        id: UserId::new(m.id),
        external_user_id: ExternalUserId::parse(m.external_user_id)
            .ok_or_else(|| corrupt("external_user_id", m.id))?,
        username: m.username,
        display_name: m.display_name,
        email: m.email,
        phone: m.phone,
        login_type: m.login_type,
        quota: Quota::new(m.quota),
        held_quota: Quota::new(m.held_quota),
        leased_quota: Quota::ZERO,
        used_quota: Quota::new(m.used_quota),
        total_requests: m.total_requests,
        created_at: UnixTime::from_secs(m.created_at),
    })
}

/// What the user's balance leases hold (their hold rows without a key).
pub(crate) async fn leased(db: &impl ConnectionTrait, user: UserId) -> Result<Quota> {
    let sum: Option<i64> = hold::Entity::find()
        .select_only()
        .column_as(
            crate::logs::sum(db.get_database_backend(), "amount"),
            "leased",
        )
        .filter(hold::Column::UserId.eq(user.get()))
        .filter(hold::Column::TokenId.eq(crate::billing::LEASE_TOKEN))
        .filter(hold::Column::State.eq(crate::billing::HELD))
        .into_tuple()
        .one(db)
        .await?;
    Ok(Quota::new(sum.unwrap_or(0)))
}

pub(crate) async fn find_model(
    db: &impl ConnectionTrait,
    platform: &PlatformId,
    id: &ExternalUserId,
) -> Result<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::PlatformId.eq(platform.as_str()))
        .filter(user::Column::ExternalUserId.eq(id.as_str()))
        .one(db)
        .await?)
}

impl SeaStore {
    /// Inserts a new user with zero balance; returns the stored row.
    async fn insert_user(
        &self,
        platform: &PlatformId,
        cmd: &SyncUser,
        now: UnixTime,
    ) -> std::result::Result<user::Model, DbErr> {
        let p = cmd.profile();
        let model = user::Model {
            id: 0,
            platform_id: platform.as_str().to_owned(),
            external_user_id: cmd.external_user_id().as_str().to_owned(),
            username: cmd.username().to_owned(),
            display_name: p.display_name.clone().unwrap_or_default(),
            email: p.email.clone().unwrap_or_default(),
            phone: p.phone.clone().unwrap_or_default(),
            login_type: p.login_type.clone().unwrap_or_default(),
            quota: 0,
            held_quota: 0,
            used_quota: 0,
            total_requests: 0,
            created_at: now.secs(),
            updated_at: now.secs(),
        };
        let mut row = model.clone().into_active_model();
        row.id = NotSet;
        let id = user::Entity::insert(row)
            .exec(&self.db)
            .await?
            .last_insert_id;
        Ok(user::Model { id, ..model })
    }

    /// Updates only the profile fields the command carries; quota and usage are not named.
    async fn update_profile(&self, row: i64, cmd: &SyncUser, now: UnixTime) -> Result<()> {
        let p = cmd.profile();
        let mut update = user::Entity::update_many()
            .col_expr(user::Column::Username, Expr::value(cmd.username()))
            .col_expr(user::Column::UpdatedAt, Expr::value(now.secs()));
        for (column, value) in [
            (user::Column::DisplayName, &p.display_name),
            (user::Column::Email, &p.email),
            (user::Column::Phone, &p.phone),
            (user::Column::LoginType, &p.login_type),
        ] {
            if let Some(v) = value {
                update = update.col_expr(column, Expr::value(v.as_str()));
            }
        }
        update
            .filter(user::Column::Id.eq(row))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl UserRepository for SeaStore {
    async fn sync_user(
        &self,
        platform: &PlatformId,
        cmd: &SyncUser,
        now: UnixTime,
    ) -> std::result::Result<SyncOutcome, RepoError> {
        for attempt in 1..=ATTEMPTS {
            if let Some(existing) = find_model(&self.db, platform, cmd.external_user_id()).await? {
                match self.update_profile(existing.id, cmd, now).await {
                    Err(StorageError::Db(e)) if is_transient(&e) => {
                        backoff(attempt).await;
                        continue;
                    }
                    other => other?,
                }
                let row = user::Entity::find_by_id(existing.id)
                    .one(&self.db)
                    .await
                    .map_err(StorageError::from)?
                    .ok_or_else(|| corrupt("vanished user", existing.id))?;
                return Ok(SyncOutcome {
                    user: to_user(row)?,
                    created: false,
                });
            }
            match self.insert_user(platform, cmd, now).await {
                Ok(row) => {
                    return Ok(SyncOutcome {
                        user: to_user(row)?,
                        created: true,
                    });
                }
                // Another sync created it first: take the update path on the next turn.
                Err(e) if is_unique_violation(&e) => {}
                Err(e) if is_transient(&e) => backoff(attempt).await,
                Err(e) => return Err(StorageError::from(e).into()),
            }
        }
        Err(StorageError::Contention("sync").into())
    }

    async fn find_user(
        &self,
        platform: &PlatformId,
        id: &ExternalUserId,
    ) -> std::result::Result<Option<User>, RepoError> {
        let Some(mut user) = find_model(&self.db, platform, id)
            .await?
            .map(to_user)
            .transpose()?
        else {
            return Ok(None);
        };
        if user.held_quota.get() > 0 {
            user.leased_quota = leased(&self.db, user.id).await?;
        }
        Ok(Some(user))
    }
}
