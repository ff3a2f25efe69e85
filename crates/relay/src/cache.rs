//! In-memory caches on the request path: keys by hash, and the catalog (channels and prices)
//! as one immutable snapshot swapped whole when anything changes. A request reads them without
//! touching the database; the admin API and the external API invalidate them on every change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tollgate_domain::RepoError;
use tollgate_domain::channel::{Channel, served_models};
use tollgate_domain::ids::{ChannelId, TokenId};
use tollgate_domain::pricing::Price;
use tollgate_domain::repository::RelayStore;
use tollgate_domain::token::{KeyHash, Token};

/// How long a cached key is trusted before its next use reads it again. Every change made
/// through an API reaches the cache at once through the change feed; this bounds how long a
/// change written to the database by hand (a key switched off, which no API does) goes
/// unseen — the per-call hold no longer reads the key's row when it comes from a balance lease.
pub const KEY_RECHECK: Duration = Duration::from_secs(1);

/// Keys seen recently, by the hash of the key. Only keys that exist are cached, so a key
/// created a moment ago is found on its first use.
#[derive(Debug, Default)]
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, (Arc<Token>, Instant)>>,
}

impl KeyCache {
    /// The cached token for a key hash, if it was read from the database within
    /// [`KEY_RECHECK`].
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<Token>> {
        self.by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash.as_str())
            .filter(|(_, read)| read.elapsed() < KEY_RECHECK)
            .map(|(t, _)| Arc::clone(t))
    }

    /// Caches a token found in the database.
    pub fn put(&self, hash: &KeyHash, token: Token) -> Arc<Token> {
        let token = Arc::new(token);
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                hash.as_str().to_owned(),
                (Arc::clone(&token), Instant::now()),
            );
        token
    }

    /// Drops a token (deleted or changed) so the next request sees the database's word.
    pub fn forget(&self, id: TokenId) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (t, _)| t.id != id);
    }
}

/// Channels and prices as of one moment, with what derives from them computed once per
/// change rather than per request.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    channels: Vec<Channel>,
    prices: HashMap<String, Price>,
    served: BTreeMap<String, Price>,
}

impl Catalog {
    /// A snapshot of these channels and prices.
    #[must_use]
    pub fn new(channels: Vec<Channel>, prices: HashMap<String, Price>) -> Self {
        let served = served_models(&channels, &prices);
        Catalog {
            channels,
            prices,
            served,
        }
    }

    /// Every channel, by id.
    #[must_use]
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// A channel by id.
    #[must_use]
    pub fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    /// The price of a model.
    #[must_use]
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied()
    }

    /// Models served by an enabled channel, with prices, by name.
    #[must_use]
    pub fn served(&self) -> &BTreeMap<String, Price> {
        &self.served
    }
}

/// The current catalog snapshot.
#[derive(Debug, Default)]
pub struct CatalogCache {
    current: RwLock<Arc<Catalog>>,
}

impl CatalogCache {
    /// The snapshot in force (cheap: one `Arc` clone).
    #[must_use]
    pub fn snapshot(&self) -> Arc<Catalog> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads channels and prices from the store and swaps the snapshot.
    pub async fn reload(&self, store: &dyn RelayStore) -> Result<Arc<Catalog>, RepoError> {
        let channels = store.list_channels().await?;
        let prices = store.list_prices().await?.into_iter().collect();
        let fresh = Arc::new(Catalog::new(channels, prices));
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        Ok(fresh)
    }
}
