//! The settlement worker. Settling and releasing are sent to a background task instead of
//! being awaited on the reply path, so a reply (or the end of a stream, or a client that went
//! away) never waits for the database. Each job is retried with backoff; the database makes
//! every job idempotent, so a retry after an unclear failure cannot charge twice. `drain`
//! waits for the queue at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tollgate_domain::billing::Settlement;
use tollgate_domain::repository::BillingRepository;

const ATTEMPTS: u32 = 8;

enum Job {
    Settle(Settlement),
    Release(String),
}

#[derive(Debug, Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

/// Sends settlements and releases to the background worker.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Job>,
    pending: Arc<Pending>,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("pending", &self.pending.count.load(Ordering::Relaxed))
            .finish()
    }
}

impl Settler {
    /// Starts the worker on the current tokio runtime.
    #[must_use]
    pub fn start(billing: Arc<dyn BillingRepository>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let pending = Arc::new(Pending::default());
        let done = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let billing = Arc::clone(&billing);
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    run(&*billing, job).await;
                    if done.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                        done.idle.notify_waiters();
                    }
                });
            }
        });
        Settler { tx, pending }
    }

    fn submit(&self, job: Job) {
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).is_err() {
            self.pending.count.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("settlement worker is gone; the hold will expire instead");
        }
    }

    /// Settles a finished call (in the background).
    pub fn settle(&self, s: Settlement) {
        self.submit(Job::Settle(s));
    }

    /// Releases the hold of a call that failed before answering (in the background).
    pub fn release(&self, request_id: String) {
        self.submit(Job::Release(request_id));
    }

    /// Jobs not finished yet.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.count.load(Ordering::Acquire)
    }

    /// Waits until every submitted job is done, or `timeout` passes.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.pending.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

async fn run(billing: &dyn BillingRepository, job: Job) {
    for attempt in 1..=ATTEMPTS {
        let result = match &job {
            Job::Settle(s) => billing.settle(s).await.map(|o| {
                tracing::debug!(request_id = %s.request_id, quota = s.quota.get(), outcome = ?o, "settled");
            }),
            Job::Release(id) => billing.release(id).await.map(|_| ()),
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(attempt, error = %e, detail = e.detail(), "settlement failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 * (1 << attempt.min(8)))).await;
            }
        }
    }
    match job {
        Job::Settle(s) => tracing::error!(
            request_id = %s.request_id,
            quota = s.quota.get(),
            "settlement gave up; the hold will expire and the call stays unbilled"
        ),
        Job::Release(id) => {
            tracing::error!(request_id = %id, "release gave up; the hold will expire")
        }
    }
}
