//! [`TokenRepository`] on SeaORM. Only the key's hash and masking hint are stored.

use crate::SeaStore;
use crate::entity::token;
use crate::error::{Result, StorageError};
use async_trait::async_trait;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Select};
use tollgate_domain::ids::{TokenId, UserId};
use tollgate_domain::ratelimit::RateLimits;
use tollgate_domain::repository::TokenRepository;
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::{KeyHash, KeyHint, Token, TokenRecord};
use tollgate_domain::{Quota, RepoError};

/// Stored status codes.
pub(crate) const ENABLED: i16 = 1;
pub(crate) const DISABLED: i16 = 2;

/// A user's tokens, oldest first (through `ix_tokens_user`); the admin read plans show it too.
pub(crate) fn user_tokens_query(user: UserId) -> Select<token::Entity> {
    token::Entity::find()
        .filter(token::Column::UserId.eq(user.get()))
        .order_by_asc(token::Column::Id)
}

fn to_token(m: token::Model) -> Token {
    Token {
        id: TokenId::new(m.id),
        user_id: UserId::new(m.user_id),
        name: m.name,
        hint: KeyHint {
            prefix: m.key_prefix,
            suffix: m.key_suffix,
        },
        disabled: m.status == DISABLED,
        created_at: UnixTime::from_secs(m.created_at),
        expires_at: UnixTime::from_secs(m.expires_at),
        quota_limit: m.quota_limit.map(Quota::new),
        used_quota: Quota::new(m.used_quota),
        limits: RateLimits {
            rpm: m.rpm_limit.and_then(|n| u32::try_from(n).ok()),
            tpm: m.tpm_limit.and_then(|n| u64::try_from(n).ok()),
            concurrency: m.max_concurrency.and_then(|n| u32::try_from(n).ok()),
        },
    }
}

#[async_trait]
impl TokenRepository for SeaStore {
    async fn insert_token(&self, r: &TokenRecord) -> std::result::Result<Token, RepoError> {
        let row = token::ActiveModel {
            user_id: Set(r.user_id.get()),
            name: Set(r.name.clone()),
            key_hash: Set(r.key_hash.as_str().to_owned()),
            key_prefix: Set(r.hint.prefix.clone()),
            key_suffix: Set(r.hint.suffix.clone()),
            status: Set(ENABLED),
            created_at: Set(r.created_at.secs()),
            expires_at: Set(r.expires_at.secs()),
            quota_limit: Set(r.quota_limit.map(Quota::get)),
            used_quota: Set(0),
            held_quota: Set(0),
            rpm_limit: Set(r.limits.rpm.map(i64::from)),
            tpm_limit: Set(r.limits.tpm.and_then(|n| i64::try_from(n).ok())),
            max_concurrency: Set(r.limits.concurrency.map(i64::from)),
            ..Default::default()
        };
        let id = token::Entity::insert(row)
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?
            .last_insert_id;
        Ok(Token {
            id: TokenId::new(id),
            user_id: r.user_id,
            name: r.name.clone(),
            hint: r.hint.clone(),
            disabled: false,
            created_at: r.created_at,
            expires_at: r.expires_at,
            quota_limit: r.quota_limit,
            used_quota: Quota::ZERO,
            limits: r.limits,
        })
    }

    async fn list_tokens(&self, user: UserId) -> std::result::Result<Vec<Token>, RepoError> {
        let rows: Result<Vec<token::Model>> = user_tokens_query(user)
            .all(&self.db)
            .await
            .map_err(StorageError::from);
        Ok(rows?.into_iter().map(to_token).collect())
    }

    async fn delete_token(
        &self,
        user: UserId,
        id: TokenId,
    ) -> std::result::Result<bool, RepoError> {
        let done = token::Entity::delete_many()
            .filter(token::Column::Id.eq(id.get()))
            .filter(token::Column::UserId.eq(user.get()))
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(done.rows_affected == 1)
    }

    async fn find_token_by_hash(
        &self,
        hash: &KeyHash,
    ) -> std::result::Result<Option<Token>, RepoError> {
        let row = token::Entity::find()
            .filter(token::Column::KeyHash.eq(hash.as_str()))
            .one(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(row.map(to_token))
    }

    async fn find_tokens(&self, ids: &[TokenId]) -> std::result::Result<Vec<Token>, RepoError> {
        let mut found = Vec::with_capacity(ids.len());
        // One query per 500 ids: far below SQLite's limit on bound parameters.
        for chunk in ids.chunks(500) {
            let rows = token::Entity::find()
                .filter(token::Column::Id.is_in(chunk.iter().map(|id| id.get())))
                .all(&self.db)
                .await
                .map_err(StorageError::from)?;
            found.extend(rows.into_iter().map(to_token));
        }
        Ok(found)
    }
}
