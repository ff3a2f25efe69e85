//! In-memory caches on the request path: keys by hash, and the catalog (channels and prices)
//! as one immutable snapshot swapped whole when anything changes. A request reads them without
//! touching the database; the admin API and the external API invalidate them on every change.

use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tollgate_domain::RepoError;
use tollgate_domain::channel::{Channel, served_models};
use tollgate_domain::ids::{ChannelId, TokenId};
use tollgate_domain::pricing::Price;
use tollgate_domain::repository::{RelayStore, TokenRepository};
use tollgate_domain::token::{KeyHash, Token};

/// How often the change feed's listener reads every cached key again, in one query (see
/// [`KeyCache::refresh`]). Every change made through an API reaches the cache at once through
/// the change feed; this bounds how long a change written to the database by hand (a key
/// switched off, which no API does) goes unseen — the per-call hold no longer reads the key's
/// row when it comes from a balance lease. The request path never waits for it.
pub const KEY_REFRESH: Duration = Duration::from_millis(500);

/// A cached key not refreshed for this long (the refresh is failing or not running) is read
/// again by its next use, and one not used for this long leaves the cache at the next refresh.
pub const KEY_RECHECK: Duration = Duration::from_secs(1);

/// One cached key.
#[derive(Debug)]
struct Entry {
    token: Arc<Token>,
    /// When the database last gave this token.
    read: Instant,
    /// When a request last used it, in milliseconds after the cache's `epoch`.
    used_ms: AtomicU64,
}

/// Keys seen recently, by the hash of the key. Only keys that exist are cached, so a key
/// created a moment ago is found on its first use.
#[derive(Debug)]
pub struct KeyCache {
    /// Fx, not SipHash: the keys are SHA-256 digests of keys that exist (a lookup of an
    /// unknown key inserts nothing), so no client can crowd a bucket; SipHash over the
    /// 64-character digest was a measurable part of a call.
    by_hash: RwLock<FxHashMap<String, Entry>>,
    epoch: Instant,
    /// Counts [`KeyCache::forget`]s: a refresh that read the database before a change was
    /// announced must not put the old token back.
    forgets: AtomicU64,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            by_hash: RwLock::default(),
            epoch: Instant::now(),
            forgets: AtomicU64::new(0),
        }
    }
}

impl KeyCache {
    /// `at` in milliseconds after the cache's epoch.
    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The cached token for a key hash, if the database gave it within [`KEY_RECHECK`].
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<Token>> {
        let now = Instant::now();
        let map = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let entry = map
            .get(hash.as_str())
            .filter(|e| now.duration_since(e.read) < KEY_RECHECK)?;
        entry.used_ms.store(self.ms(now), Ordering::Relaxed);
        Some(Arc::clone(&entry.token))
    }

    /// Caches a token found in the database.
    pub fn put(&self, hash: &KeyHash, token: Token) -> Arc<Token> {
        let token = Arc::new(token);
        let now = Instant::now();
        let entry = Entry {
            token: Arc::clone(&token),
            read: now,
            used_ms: AtomicU64::new(self.ms(now)),
        };
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash.as_str().to_owned(), entry);
        token
    }

    /// Drops a token (deleted or changed) so the next request sees the database's word.
    pub fn forget(&self, id: TokenId) {
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        self.forgets.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, e| e.token.id != id);
    }

    /// Keys in the cache.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Reads every key used within [`KEY_RECHECK`] again from `tokens` (one read for all of
    /// them), and drops the others and those the database no longer has. Run every
    /// [`KEY_REFRESH`] by the change feed's listener, so a busy key is never read on the
    /// request path. Returns how many keys it read.
    pub async fn refresh(&self, tokens: &dyn TokenRepository) -> Result<usize, RepoError> {
        let recent = self
            .ms(Instant::now())
            .saturating_sub(u64::try_from(KEY_RECHECK.as_millis()).unwrap_or(u64::MAX));
        let forgets = self.forgets.load(Ordering::Acquire);
        let ids: HashSet<TokenId> = {
            let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
            map.retain(|_, e| e.used_ms.load(Ordering::Relaxed) >= recent);
            map.values().map(|e| e.token.id).collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let list: Vec<TokenId> = ids.iter().copied().collect();
        let mut fresh: HashMap<TokenId, Token> = tokens
            .find_tokens(&list)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let read = Instant::now();
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        if self.forgets.load(Ordering::Acquire) != forgets {
            // A change was announced while the database was read: what was read may predate
            // it. The entries stay as they are (the changed one is gone); the next round reads.
            return Ok(ids.len());
        }
        map.retain(|_, e| match fresh.remove(&e.token.id) {
            Some(t) => {
                e.token = Arc::new(t);
                e.read = read;
                true
            }
            // Deleted, or cached after this refresh began (read again next round).
            None => !ids.contains(&e.token.id),
        });
        Ok(ids.len())
    }
}

/// Channels and prices as of one moment, with what derives from them computed once per
/// change rather than per request.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    channels: Vec<Channel>,
    /// Fx, not SipHash: only the catalog's own models are in it (a request's model name is
    /// looked up, never inserted).
    prices: FxHashMap<String, Price>,
    served: BTreeMap<String, Price>,
}

impl Catalog {
    /// A snapshot of these channels and prices.
    #[must_use]
    pub fn new(channels: Vec<Channel>, prices: HashMap<String, Price>) -> Self {
        let served = served_models(&channels, &prices);
        Catalog {
            channels,
            prices: prices.into_iter().collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use tollgate_domain::Quota;
    use tollgate_domain::ids::UserId;
    use tollgate_domain::ratelimit::RateLimits;
    use tollgate_domain::time::UnixTime;
    use tollgate_domain::token::{AccessKey, TokenRecord};

    /// Tokens by id, and how many times `find_tokens` ran.
    #[derive(Default)]
    struct Tokens {
        rows: Mutex<HashMap<TokenId, Token>>,
        reads: Mutex<usize>,
    }

    #[async_trait]
    impl TokenRepository for Tokens {
        async fn insert_token(&self, _: &TokenRecord) -> Result<Token, RepoError> {
            unreachable!("not used by the cache")
        }
        async fn list_tokens(&self, _: UserId) -> Result<Vec<Token>, RepoError> {
            unreachable!("not used by the cache")
        }
        async fn delete_token(&self, _: UserId, _: TokenId) -> Result<bool, RepoError> {
            unreachable!("not used by the cache")
        }
        async fn find_token_by_hash(&self, _: &KeyHash) -> Result<Option<Token>, RepoError> {
            unreachable!("not used by the cache")
        }
        async fn find_tokens(&self, ids: &[TokenId]) -> Result<Vec<Token>, RepoError> {
            *self.reads.lock().expect("reads") += 1;
            let rows = self.rows.lock().expect("rows");
            Ok(ids.iter().filter_map(|id| rows.get(id).cloned()).collect())
        }
    }

    fn token(id: i64) -> (KeyHash, Token) {
        let mut n = id as u8;
        let key = AccessKey::generate(|b| {
            for x in b.iter_mut() {
                n = n.wrapping_mul(31).wrapping_add(7);
                *x = n;
            }
        });
        let t = Token {
            id: TokenId::new(id),
            user_id: UserId::new(1),
            name: format!("k{id}"),
            hint: key.hint(),
            disabled: false,
            created_at: UnixTime::from_secs(0),
            expires_at: UnixTime::from_secs(i64::MAX),
            quota_limit: None,
            used_quota: Quota::ZERO,
            limits: RateLimits::default(),
        };
        (key.hash(), t)
    }

    #[tokio::test]
    async fn a_refresh_reads_every_used_key_in_one_query_and_sees_changes_made_by_hand() {
        let cache = KeyCache::default();
        let repo = Tokens::default();
        let (h1, t1) = token(1);
        let (h2, t2) = token(2);
        for (h, t) in [(&h1, &t1), (&h2, &t2)] {
            repo.rows.lock().expect("rows").insert(t.id, t.clone());
            cache.put(h, t.clone());
        }
        // Switched off by hand, and the second key deleted by hand: no change feed entry.
        repo.rows
            .lock()
            .expect("rows")
            .get_mut(&t1.id)
            .expect("t1")
            .disabled = true;
        repo.rows.lock().expect("rows").remove(&t2.id);
        assert!(!cache.get(&h1).expect("cached").disabled, "not seen yet");
        assert_eq!(cache.refresh(&repo).await.expect("refresh"), 2);
        assert_eq!(*repo.reads.lock().expect("reads"), 1, "one query for both");
        assert!(cache.get(&h1).expect("still cached").disabled);
        assert!(cache.get(&h2).is_none(), "a deleted key leaves the cache");
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn a_refresh_that_raced_a_forget_does_not_put_the_old_token_back() {
        /// Forgets the key while its row is being read, as the change feed would.
        struct Racing<'a> {
            inner: Tokens,
            cache: &'a KeyCache,
        }
        #[async_trait]
        impl TokenRepository for Racing<'_> {
            async fn insert_token(&self, r: &TokenRecord) -> Result<Token, RepoError> {
                self.inner.insert_token(r).await
            }
            async fn list_tokens(&self, u: UserId) -> Result<Vec<Token>, RepoError> {
                self.inner.list_tokens(u).await
            }
            async fn delete_token(&self, u: UserId, t: TokenId) -> Result<bool, RepoError> {
                self.inner.delete_token(u, t).await
            }
            async fn find_token_by_hash(&self, h: &KeyHash) -> Result<Option<Token>, RepoError> {
                self.inner.find_token_by_hash(h).await
            }
            async fn find_tokens(&self, ids: &[TokenId]) -> Result<Vec<Token>, RepoError> {
                let read = self.inner.find_tokens(ids).await;
                self.cache.forget(TokenId::new(1));
                read
            }
        }
        let cache = KeyCache::default();
        let (h1, t1) = token(1);
        let repo = Racing {
            inner: Tokens::default(),
            cache: &cache,
        };
        repo.inner
            .rows
            .lock()
            .expect("rows")
            .insert(t1.id, t1.clone());
        cache.put(&h1, t1);
        cache.refresh(&repo).await.expect("refresh");
        assert!(cache.get(&h1).is_none(), "the forget wins");
    }

    #[tokio::test]
    async fn keys_unused_for_a_recheck_leave_the_cache_and_stale_ones_are_not_served() {
        let cache = KeyCache::default();
        let repo = Tokens::default();
        let (h1, t1) = token(1);
        repo.rows.lock().expect("rows").insert(t1.id, t1.clone());
        cache.put(&h1, t1);
        std::thread::sleep(KEY_RECHECK + Duration::from_millis(20));
        assert!(
            cache.get(&h1).is_none(),
            "not refreshed for a recheck: read again"
        );
        assert_eq!(cache.refresh(&repo).await.expect("refresh"), 0);
        assert_eq!(cache.len(), 0, "unused for a recheck: dropped");
        assert_eq!(*repo.reads.lock().expect("reads"), 0);
    }
}
