//! [`ChangeLog`] and [`InstanceRegistry`] on SeaORM: the `cache_changes` log every instance
//! polls, and the `instances` registry whose stale members' holds any live instance releases.

use crate::SeaStore;
use crate::billing::{HELD, LEASE_TOKEN};
use crate::entity::{cache_change, hold, instance};
use crate::error::StorageError;
use crate::retry::retrying;
use async_trait::async_trait;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::HashSet;
use tollgate_domain::RepoError;
use tollgate_domain::cluster::{
    CacheChange, ChangeLog, Instance, InstanceId, InstanceRegistry, LoggedChange, Reaped,
};
use tollgate_domain::time::UnixTime;

#[async_trait]
impl ChangeLog for SeaStore {
    async fn append_change(
        &self,
        change: CacheChange,
        origin: &InstanceId,
        at: UnixTime,
    ) -> Result<i64, RepoError> {
        let (kind, subject) = change.code();
        let row = cache_change::ActiveModel {
            kind: Set(kind),
            subject: Set(subject),
            origin: Set(origin.as_str().to_owned()),
            created_at: Set(at.secs()),
            ..Default::default()
        };
        Ok(cache_change::Entity::insert(row)
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?
            .last_insert_id)
    }

    async fn changes_since(&self, after: i64, limit: u64) -> Result<Vec<LoggedChange>, RepoError> {
        let rows = cache_change::Entity::find()
            .filter(cache_change::Column::Id.gt(after))
            .order_by_asc(cache_change::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                // A kind this build does not know (written by a newer version) is skipped; the
                // periodic full reload still picks up what it changed.
                CacheChange::from_code(r.kind, r.subject).map(|change| LoggedChange {
                    id: r.id,
                    change,
                    origin: r.origin,
                })
            })
            .collect())
    }

    async fn last_change_id(&self) -> Result<i64, RepoError> {
        let last: Option<i64> = cache_change::Entity::find()
            .select_only()
            .column(cache_change::Column::Id)
            .order_by_desc(cache_change::Column::Id)
            .limit(1)
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(last.unwrap_or(0))
    }

    async fn prune_changes(&self, before: UnixTime) -> Result<u64, RepoError> {
        Ok(cache_change::Entity::delete_many()
            .filter(cache_change::Column::CreatedAt.lt(before.secs()))
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?
            .rows_affected)
    }
}

#[async_trait]
impl InstanceRegistry for SeaStore {
    async fn heartbeat(&self, me: &Instance, now: UnixTime) -> Result<(), RepoError> {
        let row = instance::ActiveModel {
            id: Set(me.id.as_str().to_owned()),
            name: Set(me.name.clone()),
            started_at: Set(now.secs()),
            heartbeat_at: Set(now.secs()),
        };
        // An upsert: the first heartbeat registers, and an instance reaped while the database
        // was out of its reach comes back by itself.
        instance::Entity::insert(row)
            .on_conflict(
                OnConflict::column(instance::Column::Id)
                    .update_columns([instance::Column::Name, instance::Column::HeartbeatAt])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(())
    }

    async fn deregister(&self, me: &InstanceId) -> Result<(), RepoError> {
        instance::Entity::delete_by_id(me.as_str().to_owned())
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(())
    }

    async fn reap(&self, me: &Instance, stale_before: UnixTime) -> Result<Reaped, RepoError> {
        // Holds first, then the registry: a hold is taken only after its instance registered,
        // so every hold read here belongs to an instance the registry read below can see. The
        // other order could miss an instance that registered in between and take its holds for
        // orphans.
        let open: Vec<(String, String, i64)> = hold::Entity::find()
            .select_only()
            .column(hold::Column::RequestId)
            .column(hold::Column::InstanceId)
            .column(hold::Column::TokenId)
            .filter(hold::Column::State.eq(HELD))
            .filter(hold::Column::InstanceId.ne(""))
            .filter(hold::Column::InstanceId.ne(me.id.as_str()))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        let registered = instance::Entity::find()
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        let (dead, live): (Vec<_>, Vec<_>) = registered.into_iter().partition(|i| {
            i.id != me.id.as_str() && (i.heartbeat_at < stale_before.secs() || i.name == me.name)
        });
        let live: HashSet<String> = live.into_iter().map(|i| i.id).collect();
        let mut reaped = Reaped::default();
        for (request_id, owner, token_id) in open {
            if live.contains(&owner) {
                continue;
            }
            // The same conditional expiry as the TTL sweep: a settle that races it wins or
            // loses cleanly, and a late one still charges, once. A balance lease is deleted
            // instead (its calls' late settlements charge the balance, once). Retried while
            // it races another finish (two survivors reaping at once, the owner ending its
            // lease meanwhile).
            if retrying("reap", || {
                self.finish_once(&request_id, token_id != LEASE_TOKEN)
            })
            .await?
            {
                reaped.holds += 1;
            }
        }
        for i in dead {
            let gone = instance::Entity::delete_many()
                .filter(instance::Column::Id.eq(i.id.as_str()))
                .filter(instance::Column::HeartbeatAt.eq(i.heartbeat_at))
                .exec(&self.db)
                .await
                .map_err(StorageError::from)?;
            reaped.instances += gone.rows_affected;
        }
        Ok(reaped)
    }
}
