//! The admin operations of SPEC §5 on channels and prices, each a validated command against the
//! repositories. Every successful change is published on the change feed, which updates this
//! instance's caches before the call returns and every other instance's within a second.

use crate::channel::{Channel, ChannelInput, ChannelKind, ChannelSpec, ChannelStatus};
use crate::cluster::{CacheChange, ChangeFeed};
use crate::error::DomainError;
use crate::ids::ChannelId;
use crate::pricing::{ModelName, Price, PriceInput};
use crate::repository::RelayStore;
use crate::time::UnixTime;
use crate::validation::ValidationErrors;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Channels and prices.
#[derive(Clone)]
pub struct AdminService {
    store: Arc<dyn RelayStore>,
    feed: Arc<dyn ChangeFeed>,
}

impl AdminService {
    /// Builds the service over a store and the feed its changes go to.
    pub fn new(store: Arc<dyn RelayStore>, feed: Arc<dyn ChangeFeed>) -> Self {
        AdminService { store, feed }
    }

    async fn priced_models(&self) -> Result<HashSet<String>, DomainError> {
        Ok(self
            .store
            .list_prices()
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }

    /// Every channel.
    pub async fn channels(&self) -> Result<Vec<Channel>, DomainError> {
        Ok(self.store.list_channels().await?)
    }

    /// One channel.
    pub async fn channel(&self, id: ChannelId) -> Result<Channel, DomainError> {
        self.store
            .list_channels()
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or(DomainError::ChannelNotFound)
    }

    /// `POST /channels`.
    pub async fn create_channel(
        &self,
        input: ChannelInput,
        now: UnixTime,
    ) -> Result<Channel, DomainError> {
        let priced = self.priced_models().await?;
        let spec = input.into_spec(|m| priced.contains(m))?;
        let channel = self.store.insert_channel(&spec, now).await?;
        self.feed.publish(CacheChange::Channels).await;
        Ok(channel)
    }

    /// `PUT /channels/{id}`: absent fields keep their value.
    pub async fn update_channel(
        &self,
        id: ChannelId,
        input: ChannelInput,
        now: UnixTime,
    ) -> Result<Channel, DomainError> {
        let current = self.channel(id).await?;
        let priced = self.priced_models().await?;
        let spec = input.merge(Some(&current.spec), |m| priced.contains(m))?;
        let channel = self
            .store
            .update_channel(id, &spec, now)
            .await?
            .ok_or(DomainError::ChannelNotFound)?;
        self.feed.publish(CacheChange::Channels).await;
        Ok(channel)
    }

    /// `DELETE /channels/{id}`.
    pub async fn delete_channel(&self, id: ChannelId) -> Result<(), DomainError> {
        if self.store.delete_channel(id).await? {
            self.feed.publish(CacheChange::Channels).await;
            Ok(())
        } else {
            Err(DomainError::ChannelNotFound)
        }
    }

    /// `POST /channels/{id}/enable|disable`.
    pub async fn set_enabled(
        &self,
        id: ChannelId,
        enabled: bool,
        now: UnixTime,
    ) -> Result<Channel, DomainError> {
        let (status, reason) = if enabled {
            (ChannelStatus::Enabled, "")
        } else {
            (ChannelStatus::Disabled, "disabled by an admin")
        };
        if !self
            .store
            .set_channel_status(id, status, reason, now, None)
            .await?
        {
            return Err(DomainError::ChannelNotFound);
        }
        self.feed.publish(CacheChange::Channels).await;
        self.channel(id).await
    }

    /// `GET /pricing`.
    pub async fn prices(&self) -> Result<BTreeMap<String, Price>, DomainError> {
        Ok(self.store.list_prices().await?.into_iter().collect())
    }

    /// `PUT /pricing/{model}`.
    pub async fn put_price(
        &self,
        model: &str,
        input: PriceInput,
        now: UnixTime,
    ) -> Result<(ModelName, Price), DomainError> {
        let name = ModelName::parse(model)
            .ok_or_else(|| ValidationErrors::single("PriceRequest", "Model", "max"))?;
        let price = input.into_price()?;
        self.store.put_price(name.as_str(), &price, now).await?;
        self.feed.publish(CacheChange::Prices).await;
        Ok((name, price))
    }

    /// Creates a channel of `kind` with `key` serving the kind's default models (those with a
    /// price) unless a channel of that kind exists (the `TOLLGATE_*_API_KEY` start-up
    /// channels). `true` when it created one.
    pub async fn ensure_provider_channel(
        &self,
        kind: ChannelKind,
        key: &str,
        now: UnixTime,
    ) -> Result<bool, DomainError> {
        if self
            .store
            .list_channels()
            .await?
            .iter()
            .any(|c| c.spec.kind == kind)
        {
            return Ok(false);
        }
        let priced = self.priced_models().await?;
        let spec: ChannelSpec = ChannelInput {
            name: Some(format!("{kind} (from environment)")),
            kind: Some(kind.as_str().to_owned()),
            key: Some(key.to_owned()),
            models: Some(
                kind.default_models()
                    .iter()
                    .filter(|m| priced.contains(**m))
                    .map(|m| (*m).to_owned())
                    .collect(),
            ),
            ..Default::default()
        }
        .into_spec(|m| priced.contains(m))?;
        self.store.insert_channel(&spec, now).await?;
        self.feed.publish(CacheChange::Channels).await;
        Ok(true)
    }
}
