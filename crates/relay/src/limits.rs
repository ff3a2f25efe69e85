//! Rate limits on the request path: the in-memory limiter (per instance), and the limiter the
//! gateway uses, which asks the shared one (Redis, when configured) and falls back to the
//! in-memory one — with a warning and a metric, never a failed call — while Redis is down.
//! Calls holding a concurrency slot are renewed every few seconds, so their leases outlive long
//! streams but not a dead instance.

use crate::metrics;
use async_trait::async_trait;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tollgate_domain::RepoError;
use tollgate_domain::ratelimit::{
    Headroom, LEASE_MS, RateLimiter, RateLimits, Refusal, Subject, Window,
};
use tollgate_domain::time::unix_millis;

fn now_ms() -> i64 {
    unix_millis(SystemTime::now())
}

/// Windows in this process's memory: exact for this instance alone.
#[derive(Debug, Default)]
pub struct LocalLimiter {
    windows: RwLock<FxHashMap<Subject, Arc<Mutex<Window>>>>,
}

impl LocalLimiter {
    fn window(&self, subject: Subject) -> Arc<Mutex<Window>> {
        if let Some(w) = self
            .windows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&subject)
        {
            return Arc::clone(w);
        }
        Arc::clone(
            self.windows
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(subject)
                .or_default(),
        )
    }

    fn with<T>(&self, subject: Subject, f: impl FnOnce(&mut Window) -> T) -> T {
        let w = self.window(subject);
        let mut w = w.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut w)
    }

    /// Forgets windows with nothing in them (bounded memory for keys seen once).
    pub fn sweep(&self) {
        let now = now_ms();
        self.windows
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, w| {
                !w.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_idle(now)
            });
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn admit(
        &self,
        subject: Subject,
        limits: &RateLimits,
        call: u64,
        tokens: u64,
    ) -> Result<Result<Headroom, Refusal>, RepoError> {
        Ok(self.with(subject, |w| w.admit(now_ms(), limits, call, tokens)))
    }

    async fn settle(&self, subject: Subject, call: u64, tokens: u64) -> Result<(), RepoError> {
        self.with(subject, |w| w.settle(call, tokens));
        Ok(())
    }

    async fn release(&self, subject: Subject, call: u64) -> Result<(), RepoError> {
        self.with(subject, |w| w.release(call));
        Ok(())
    }

    async fn renew(&self, calls: &[(Subject, u64)]) -> Result<(), RepoError> {
        let now = now_ms();
        for (subject, call) in calls {
            self.with(*subject, |w| w.renew(*call, now));
        }
        Ok(())
    }
}

/// The gateway's limiter: shared through Redis when configured, per instance otherwise or
/// while Redis is down.
pub struct Limiter {
    shared: Option<Arc<dyn RateLimiter>>,
    local: LocalLimiter,
    degraded: AtomicBool,
    /// Calls holding a concurrency slot, renewed until they end.
    leases: Mutex<FxHashMap<u64, Subject>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter over `shared` (Redis), or in memory only.
    #[must_use]
    pub fn new(shared: Option<Arc<dyn RateLimiter>>) -> Arc<Self> {
        let limiter = Arc::new(Limiter {
            shared,
            local: LocalLimiter::default(),
            degraded: AtomicBool::new(false),
            leases: Mutex::new(FxHashMap::default()),
        });
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let every = Duration::from_millis(u64::try_from(LEASE_MS / 3).unwrap_or(10_000));
            loop {
                tokio::time::sleep(every).await;
                let Some(l) = weak.upgrade() else { return };
                l.renew_all().await;
                l.local.sweep();
            }
        });
        limiter
    }

    /// Runs `op` on the shared limiter, or on the local one when there is none or it fails.
    async fn run<T, F>(&self, op: F) -> T
    where
        F: for<'a> Fn(
            &'a dyn RateLimiter,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, RepoError>> + Send + 'a>,
        >,
        T: Default,
    {
        if let Some(shared) = &self.shared {
            match op(&**shared).await {
                Ok(v) => {
                    if self.degraded.swap(false, Ordering::AcqRel) {
                        tracing::info!("rate limits shared through Redis again");
                    }
                    return v;
                }
                Err(e) => {
                    metrics::rate_limit_fallback();
                    if !self.degraded.swap(true, Ordering::AcqRel) {
                        tracing::warn!(error = %e, detail = e.detail(), "redis unreachable: rate limits now count per instance");
                    }
                }
            }
        }
        op(&self.local).await.unwrap_or_default()
    }

    /// Admits a call of `subject` with `tokens` estimated, or refuses it.
    pub async fn admit(
        &self,
        subject: Subject,
        limits: RateLimits,
        call: u64,
        tokens: u64,
    ) -> Result<Headroom, Refusal> {
        let verdict = self
            .run(|l| {
                Box::pin(async move { l.admit(subject, &limits, call, tokens).await.map(Some) })
            })
            .await
            .unwrap_or(Ok(Headroom::default()));
        if verdict.is_ok() && limits.concurrency.is_some() {
            self.leases
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(call, subject);
        }
        verdict
    }

    /// The call's real tokens.
    pub async fn settle(&self, subject: Subject, call: u64, tokens: u64) {
        self.run(|l| Box::pin(async move { l.settle(subject, call, tokens).await }))
            .await;
    }

    /// The call ended.
    pub async fn release(&self, subject: Subject, call: u64) {
        self.leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&call);
        self.run(|l| Box::pin(async move { l.release(subject, call).await }))
            .await;
    }

    async fn renew_all(&self) {
        let calls: Vec<(Subject, u64)> = self
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(c, s)| (*s, *c))
            .collect();
        if calls.is_empty() {
            return;
        }
        let calls = Arc::new(calls);
        self.run(|l| {
            let calls = Arc::clone(&calls);
            Box::pin(async move { l.renew(&calls).await })
        })
        .await;
    }
}

/// A call's place in the limits it passed: released when the call ends, settled with its real
/// tokens. Cheap to clone into the settlement.
#[derive(Clone)]
pub(crate) struct LimitTicket {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) call: u64,
    /// The key, when it has limits.
    pub(crate) key: Option<Subject>,
    /// The channel that answered, when it has limits.
    pub(crate) channel: Option<Subject>,
    pub(crate) concurrency: bool,
}

impl std::fmt::Debug for LimitTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitTicket")
            .field("call", &self.call)
            .field("key", &self.key)
            .field("channel", &self.channel)
            .finish()
    }
}

impl LimitTicket {
    /// The call ended: its concurrency slot is free (in the background: never delays a reply).
    pub(crate) fn release(&self) {
        if let (true, Some(key)) = (self.concurrency, self.key) {
            let limiter = Arc::clone(&self.limiter);
            let call = self.call;
            tokio::spawn(async move { limiter.release(key, call).await });
        }
    }

    /// The call's real tokens replace its estimate in the windows it counts in.
    pub(crate) async fn settle(&self, tokens: u64) {
        for subject in [self.key, self.channel].into_iter().flatten() {
            self.limiter.settle(subject, self.call, tokens).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared limiter that is down.
    struct Down;

    #[async_trait]
    impl RateLimiter for Down {
        async fn admit(
            &self,
            _: Subject,
            _: &RateLimits,
            _: u64,
            _: u64,
        ) -> Result<Result<Headroom, Refusal>, RepoError> {
            Err(RepoError::Unavailable {
                detail: "redis down".into(),
            })
        }
        async fn settle(&self, _: Subject, _: u64, _: u64) -> Result<(), RepoError> {
            Err(RepoError::Unavailable {
                detail: "redis down".into(),
            })
        }
        async fn release(&self, _: Subject, _: u64) -> Result<(), RepoError> {
            Err(RepoError::Unavailable {
                detail: "redis down".into(),
            })
        }
        async fn renew(&self, _: &[(Subject, u64)]) -> Result<(), RepoError> {
            Err(RepoError::Unavailable {
                detail: "redis down".into(),
            })
        }
    }

    #[tokio::test]
    async fn redis_down_falls_back_to_counting_here_and_never_fails_a_call() {
        let limiter = Limiter::new(Some(Arc::new(Down)));
        let limits = RateLimits {
            rpm: Some(3),
            ..RateLimits::default()
        };
        let key = Subject::Key(1);
        let admitted = (0..10u64)
            .filter_map(|c| futures_util::FutureExt::now_or_never(limiter.admit(key, limits, c, 1)))
            .filter(Result::is_ok)
            .count();
        assert_eq!(admitted, 3, "the per-instance window still limits");
        assert!(limiter.degraded.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn concurrency_slots_come_back_when_calls_end() {
        let limiter = Limiter::new(None);
        let limits = RateLimits {
            concurrency: Some(1),
            ..RateLimits::default()
        };
        let key = Subject::Key(2);
        assert!(limiter.admit(key, limits, 1, 0).await.is_ok());
        assert!(limiter.admit(key, limits, 2, 0).await.is_err());
        limiter.release(key, 1).await;
        assert!(limiter.admit(key, limits, 3, 0).await.is_ok());
    }
}
