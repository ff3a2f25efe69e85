//! The [`Doorbell`] on Redis: commands through a deadpool-redis pool (`PUBLISH`, `PING`), and
//! one dedicated pub/sub connection (pub/sub cannot share pooled connections) on which the
//! listener waits. Every call is bounded by a short timeout, so a Redis that hangs or is down
//! costs a request nothing: the change log in the database still carries every change.

use crate::error::StorageError;
use async_trait::async_trait;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::Mutex;
use tollgate_domain::RepoError;
use tollgate_domain::cluster::Doorbell;

/// The pub/sub channel every instance listens on.
pub const CHANNEL: &str = "tollgate:cache-changes";
/// Longest wait for Redis on any one call.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(1000);

type Messages = Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>;

/// Redis as the doorbell between instances.
pub struct RedisBus {
    pool: Pool,
    client: redis::Client,
    subscription: Mutex<Option<Messages>>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> RepoError {
    RepoError::Unavailable {
        detail: format!("redis {what}: {e}"),
    }
}

/// A deadpool-redis pool of `size` connections to `url` whose every wait (for a connection, to
/// connect, to recycle) is bounded by `timeout`: Redis must never hold a request up.
pub(crate) fn pool(url: &str, size: usize, timeout: Duration) -> Result<Pool, StorageError> {
    let mut pool = PoolConfig::new(size);
    pool.timeouts = Timeouts {
        wait: Some(timeout),
        create: Some(timeout),
        recycle: Some(timeout),
    };
    let mut config = Config::from_url(url);
    config.pool = Some(pool);
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| StorageError::Connect(format!("TOLLGATE_REDIS_URL: {e}")))
}

impl RedisBus {
    /// A bus on `url` (`redis://…`). Nothing connects yet: a Redis that is down at start-up
    /// only delays the first ring.
    pub fn new(url: &str) -> Result<Self, StorageError> {
        let client = redis::Client::open(url)
            .map_err(|e| StorageError::Connect(format!("TOLLGATE_REDIS_URL: {e}")))?;
        let pool = pool(url, 16, REDIS_TIMEOUT)?;
        Ok(RedisBus {
            pool,
            client,
            subscription: Mutex::new(None),
        })
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RepoError> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(|e| unavailable("pool", e))?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| unavailable("command", e))
        };
        tokio::time::timeout(REDIS_TIMEOUT, call)
            .await
            .map_err(|_| unavailable("command", "timed out"))?
    }

    async fn subscribe(&self) -> Result<Messages, RepoError> {
        let connect = async {
            let mut pubsub = self
                .client
                .get_async_pubsub()
                .await
                .map_err(|e| unavailable("subscribe", e))?;
            pubsub
                .subscribe(CHANNEL)
                .await
                .map_err(|e| unavailable("subscribe", e))?;
            Ok::<Messages, RepoError>(Box::pin(pubsub.into_on_message()))
        };
        tokio::time::timeout(REDIS_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable("subscribe", "timed out"))?
    }
}

#[async_trait]
impl Doorbell for RedisBus {
    async fn ring(&self) -> Result<(), RepoError> {
        self.command::<i64>(redis::cmd("PUBLISH").arg(CHANNEL).arg("1"))
            .await
            .map(|_| ())
    }

    async fn wait(&self) -> Result<(), RepoError> {
        // One waiter (the feed's listener) holds the subscription; a closed one is dropped so
        // the next call subscribes afresh (Redis restarted, say).
        let mut slot = self.subscription.lock().await;
        let messages = match slot.as_mut() {
            Some(m) => m,
            None => slot.insert(self.subscribe().await?),
        };
        match messages.next().await {
            Some(_) => Ok(()),
            None => {
                *slot = None;
                Err(unavailable("subscription", "closed"))
            }
        }
    }

    async fn ping(&self) -> Result<(), RepoError> {
        self.command::<String>(&redis::cmd("PING"))
            .await
            .map(|_| ())
    }
}
