//! The change feed: the one path by which every cache — this instance's and every other's — learns
//! of a write it depends on.
//!
//! [`Feed::publish`] applies a change to this instance's caches before it returns (so an admin's
//! change holds from the next request here), appends it to the database's change log and rings
//! the doorbell (Redis, when configured). [`Feed::listen`] runs on every instance: it reads the
//! log after each ring, and at least every [`POLL_EVERY`] without one, and applies what other
//! instances published; every [`FULL_RELOAD_EVERY`] it also reloads the catalog whole, which
//! repairs a change whose log entry could not be written. So Redis makes propagation fast, and
//! the database makes it correct: a lost message, a Redis restart or no Redis at all still
//! converges within a second. The listener also reads the cached keys again every
//! [`KEY_REFRESH`] (a change written to the database by hand has no log entry).

use crate::cache::{CatalogCache, KEY_REFRESH, KeyCache};
use crate::settle::now;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tollgate_domain::RepoError;
use tollgate_domain::cluster::{CacheChange, ChangeFeed, ChangeLog, Doorbell, InstanceId};
use tollgate_domain::repository::RelayStore;

/// Longest time between two reads of the change log.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often the catalog is reloaded whole whatever the log says.
pub const FULL_RELOAD_EVERY: Duration = Duration::from_secs(10);
/// How long changes stay in the log.
pub const KEEP_CHANGES: Duration = Duration::from_secs(3600);
/// Most log entries read at once.
const BATCH: u64 = 1000;

/// The caches on the request path, and the store they reload from.
pub struct Caches {
    /// Keys by hash.
    pub keys: KeyCache,
    /// Channels and prices.
    pub catalog: CatalogCache,
    store: Arc<dyn RelayStore>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    /// Empty caches over `store`, with the catalog loaded.
    pub async fn load(store: Arc<dyn RelayStore>) -> Result<Self, RepoError> {
        let caches = Caches {
            keys: KeyCache::default(),
            catalog: CatalogCache::default(),
            store,
        };
        caches.catalog.reload(&*caches.store).await?;
        Ok(caches)
    }

    /// Applies the changes in `batch` (the catalog is reloaded once, however many of its
    /// changes there are).
    async fn apply(&self, batch: &[CacheChange]) {
        let mut catalog = false;
        for change in batch {
            match change {
                CacheChange::Token(id) => self.keys.forget(*id),
                CacheChange::Channels | CacheChange::Prices => catalog = true,
            }
        }
        if catalog {
            self.reload_catalog().await;
        }
    }

    async fn reload_catalog(&self) {
        if let Err(e) = self.catalog.reload(&*self.store).await {
            tracing::error!(error = %e, detail = e.detail(), "could not reload channels and prices; the next change or full reload retries");
        }
    }
}

/// The change feed of this instance.
pub struct Feed {
    me: InstanceId,
    log: Arc<dyn ChangeLog>,
    bell: Option<Arc<dyn Doorbell>>,
    caches: Arc<Caches>,
    /// The newest log position applied here.
    seen: AtomicI64,
    rung: Notify,
    bell_up: AtomicBool,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("me", &self.me)
            .field("seen", &self.seen.load(Ordering::Relaxed))
            .field("redis", &self.bell.is_some())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// The feed of instance `me`; it starts reading the log from its current end (the caches
    /// were just loaded).
    pub async fn new(
        me: InstanceId,
        log: Arc<dyn ChangeLog>,
        bell: Option<Arc<dyn Doorbell>>,
        caches: Arc<Caches>,
    ) -> Result<Arc<Self>, RepoError> {
        let seen = log.last_change_id().await?;
        Ok(Arc::new(Feed {
            me,
            log,
            bell,
            caches,
            seen: AtomicI64::new(seen),
            rung: Notify::new(),
            bell_up: AtomicBool::new(false),
        }))
    }

    /// The caches this feed keeps.
    #[must_use]
    pub fn caches(&self) -> &Arc<Caches> {
        &self.caches
    }

    /// Whether Redis is configured.
    #[must_use]
    pub fn has_redis(&self) -> bool {
        self.bell.is_some()
    }

    /// Whether Redis answers a `PING` now (`None` without Redis).
    pub async fn redis_up(&self) -> Option<bool> {
        let bell = self.bell.as_ref()?;
        Some(bell.ping().await.is_ok())
    }

    /// Reads the log after the last position applied and applies what other instances
    /// published; how many entries it read.
    pub async fn catch_up(&self) -> Result<usize, RepoError> {
        let mut read = 0;
        loop {
            let after = self.seen.load(Ordering::Acquire);
            let entries = self.log.changes_since(after, BATCH).await?;
            let Some(last) = entries.last().map(|e| e.id) else {
                return Ok(read);
            };
            read += entries.len();
            let theirs: Vec<CacheChange> = entries
                .iter()
                .filter(|e| e.origin != self.me.as_str())
                .map(|e| e.change)
                .collect();
            self.caches.apply(&theirs).await;
            self.seen.fetch_max(last, Ordering::AcqRel);
            if (entries.len() as u64) < BATCH {
                return Ok(read);
            }
        }
    }

    /// Runs the listener until the process ends: after each ring of the doorbell, and at least
    /// every [`POLL_EVERY`], it catches up with the log; every [`FULL_RELOAD_EVERY`] it reloads
    /// the catalog whole and prunes old log entries.
    pub fn listen(self: &Arc<Self>) {
        if let Some(bell) = self.bell.clone() {
            let feed = Arc::clone(self);
            tokio::spawn(async move { feed.watch_bell(&*bell).await });
        }
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            let mut last_full = tokio::time::Instant::now();
            let mut last_keys = tokio::time::Instant::now();
            let mut failing = false;
            loop {
                tokio::select! {
                    () = feed.rung.notified() => {}
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
                match feed.catch_up().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("change log readable again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, detail = e.detail(), "cannot read the change log; retrying");
                    }
                    Err(_) => {}
                }
                if last_keys.elapsed() >= KEY_REFRESH {
                    last_keys = tokio::time::Instant::now();
                    if let Err(e) = feed.caches.keys.refresh(&*feed.caches.store).await {
                        // Keys not refreshed are read again on their next use.
                        tracing::debug!(error = %e, "could not read the cached keys again");
                    }
                }
                if last_full.elapsed() >= FULL_RELOAD_EVERY {
                    last_full = tokio::time::Instant::now();
                    feed.caches.reload_catalog().await;
                    let before = tollgate_domain::time::UnixTime::from_secs(
                        now().secs().saturating_sub(KEEP_CHANGES.as_secs() as i64),
                    );
                    if let Err(e) = feed.log.prune_changes(before).await {
                        tracing::debug!(error = %e, "could not prune the change log");
                    }
                }
            }
        });
    }

    /// Waits on the doorbell and wakes the listener on every ring; while Redis is unreachable
    /// it retries every second (the listener polls meanwhile).
    async fn watch_bell(&self, bell: &dyn Doorbell) {
        loop {
            match bell.wait().await {
                Ok(()) => {
                    if !self.bell_up.swap(true, Ordering::AcqRel) {
                        tracing::info!("redis: listening for changes from other instances");
                    }
                    self.rung.notify_one();
                }
                Err(e) => {
                    if self.bell_up.swap(false, Ordering::AcqRel) {
                        tracing::warn!(error = %e, detail = e.detail(), "redis unreachable: changes from other instances now arrive by polling the database");
                    }
                    // A reconnect may have missed rings: look at the log now.
                    self.rung.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[async_trait]
impl ChangeFeed for Feed {
    async fn publish(&self, change: CacheChange) {
        self.caches.apply(&[change]).await;
        if let Err(e) = self.log.append_change(change, &self.me, now()).await {
            tracing::error!(?change, error = %e, detail = e.detail(), "could not log a cache change; other instances see it at their next full reload");
            return;
        }
        if let Some(bell) = self.bell.clone() {
            // Not awaited on the caller's path: a slow Redis must not slow an admin's call.
            tokio::spawn(async move {
                if let Err(e) = bell.ring().await {
                    tracing::debug!(error = %e, "could not ring the other instances; they poll the change log");
                }
            });
        }
    }
}
