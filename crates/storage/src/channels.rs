//! [`ChannelRepository`] and [`PriceRepository`] on SeaORM. Prices are kept as exact decimal
//! text; channel model lists and mappings as JSON text.

use crate::SeaStore;
use crate::entity::{channel, price};
use crate::error::{StorageError, corrupt};
use async_trait::async_trait;
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use std::collections::BTreeMap;
use std::str::FromStr;
use tollgate_domain::RepoError;
use tollgate_domain::channel::{Channel, ChannelKey, ChannelKind, ChannelSpec, ChannelStatus};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::pricing::{ModelName, Price};
use tollgate_domain::repository::{ChannelRepository, PriceRepository};
use tollgate_domain::time::UnixTime;

fn to_channel(m: channel::Model) -> Result<Channel, StorageError> {
    let models: Vec<String> =
        serde_json::from_str(&m.models).map_err(|_| corrupt("channel models", m.id))?;
    let models = models
        .iter()
        .map(|s| ModelName::parse(s))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("channel model name", m.id))?;
    let model_mapping: BTreeMap<String, String> = serde_json::from_str(&m.model_mapping)
        .map_err(|_| corrupt("channel model mapping", m.id))?;
    Ok(Channel {
        id: ChannelId::new(m.id),
        spec: ChannelSpec {
            name: m.name,
            kind: ChannelKind::parse(&m.kind).ok_or_else(|| corrupt("channel kind", m.id))?,
            base_url: m.base_url,
            key: ChannelKey::new(m.api_key),
            models,
            model_mapping,
            priority: m.priority,
            weight: u32::try_from(m.weight).map_err(|_| corrupt("channel weight", m.id))?,
        },
        status: ChannelStatus::from_code(m.status),
        disabled_reason: m.disabled_reason,
        created_at: UnixTime::from_secs(m.created_at),
        updated_at: UnixTime::from_secs(m.updated_at),
    })
}

fn spec_columns(spec: &ChannelSpec, row: &mut channel::ActiveModel) -> Result<(), StorageError> {
    let models: Vec<&str> = spec.models.iter().map(ModelName::as_str).collect();
    let json = |e: serde_json::Error| StorageError::Corrupt(format!("channel json: {e}"));
    row.name = Set(spec.name.clone());
    row.kind = Set(spec.kind.as_str().to_owned());
    row.base_url = Set(spec.base_url.clone());
    row.api_key = Set(spec.key.expose().to_owned());
    row.models = Set(serde_json::to_string(&models).map_err(json)?);
    row.model_mapping = Set(serde_json::to_string(&spec.model_mapping).map_err(json)?);
    row.priority = Set(spec.priority);
    row.weight = Set(i64::from(spec.weight));
    Ok(())
}

#[async_trait]
impl ChannelRepository for SeaStore {
    async fn list_channels(&self) -> Result<Vec<Channel>, RepoError> {
        let rows = channel::Entity::find()
            .order_by_asc(channel::Column::Id)
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(rows
            .into_iter()
            .map(to_channel)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn insert_channel(
        &self,
        spec: &ChannelSpec,
        now: UnixTime,
    ) -> Result<Channel, RepoError> {
        let mut row = channel::ActiveModel {
            status: Set(ChannelStatus::Enabled.code()),
            disabled_reason: Set(String::new()),
            created_at: Set(now.secs()),
            updated_at: Set(now.secs()),
            ..Default::default()
        };
        spec_columns(spec, &mut row)?;
        let id = channel::Entity::insert(row)
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?
            .last_insert_id;
        Ok(Channel {
            id: ChannelId::new(id),
            spec: spec.clone(),
            status: ChannelStatus::Enabled,
            disabled_reason: String::new(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn update_channel(
        &self,
        id: ChannelId,
        spec: &ChannelSpec,
        now: UnixTime,
    ) -> Result<Option<Channel>, RepoError> {
        let mut row = channel::ActiveModel {
            updated_at: Set(now.secs()),
            ..Default::default()
        };
        spec_columns(spec, &mut row)?;
        channel::Entity::update_many()
            .set(row)
            .filter(channel::Column::Id.eq(id.get()))
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        let found = channel::Entity::find_by_id(id.get())
            .one(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(found.map(to_channel).transpose()?)
    }

    async fn delete_channel(&self, id: ChannelId) -> Result<bool, RepoError> {
        let done = channel::Entity::delete_by_id(id.get())
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(done.rows_affected == 1)
    }

    async fn set_channel_status(
        &self,
        id: ChannelId,
        status: ChannelStatus,
        reason: &str,
        now: UnixTime,
        only_from: Option<ChannelStatus>,
    ) -> Result<bool, RepoError> {
        let reason: String = reason.chars().take(500).collect();
        let mut update = channel::Entity::update_many()
            .col_expr(channel::Column::Status, Expr::value(status.code()))
            .col_expr(channel::Column::DisabledReason, Expr::value(reason))
            .col_expr(channel::Column::UpdatedAt, Expr::value(now.secs()))
            .filter(channel::Column::Id.eq(id.get()));
        if let Some(from) = only_from {
            update = update.filter(channel::Column::Status.eq(from.code()));
        }
        let done = update.exec(&self.db).await.map_err(StorageError::from)?;
        if only_from.is_some() {
            // The status itself changes, so the row counts as changed on MySQL too.
            return Ok(done.rows_affected == 1);
        }
        // MySQL counts only changed rows, so existence is checked apart.
        let exists = channel::Entity::find_by_id(id.get())
            .one(&self.db)
            .await
            .map_err(StorageError::from)?
            .is_some();
        Ok(exists)
    }
}

#[async_trait]
impl PriceRepository for SeaStore {
    async fn list_prices(&self) -> Result<Vec<(String, Price)>, RepoError> {
        let rows = price::Entity::find()
            .order_by_asc(price::Column::Model)
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let d = |s: &str| Decimal::from_str(s).ok();
            let p = match (d(&r.input), d(&r.output), d(&r.cached_input)) {
                (Some(i), Some(o), Some(c)) => Price::new(i, o, c).ok(),
                _ => None,
            }
            .ok_or_else(|| StorageError::Corrupt(format!("price of {}", r.model)))?;
            out.push((r.model, p));
        }
        Ok(out)
    }

    async fn put_price(&self, model: &str, p: &Price, now: UnixTime) -> Result<(), RepoError> {
        let row = price::ActiveModel {
            model: Set(model.to_owned()),
            input: Set(p.input().to_string()),
            output: Set(p.output().to_string()),
            cached_input: Set(p.cached_input().to_string()),
            updated_at: Set(now.secs()),
        };
        price::Entity::insert(row)
            .on_conflict(
                OnConflict::column(price::Column::Model)
                    .update_columns([
                        price::Column::Input,
                        price::Column::Output,
                        price::Column::CachedInput,
                        price::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(())
    }
}
