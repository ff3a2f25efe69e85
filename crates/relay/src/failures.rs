//! Failed calls, counted off the request path (SPEC §7's "errors"; what counts as one:
//! [`tollgate_domain::call_errors`]).
//!
//! The gateway reports each failed call once to a [`FailureLog`]; the log queues it (bounded,
//! never waiting) and a background task writes the queue in batches through the domain's
//! [`CallErrorRepository`], one transaction a batch. A call never waits for this bookkeeping
//! and never fails because of it: these are counts for the operator's chart, not money, so when
//! the queue is full (the database has been down for a long time) a report is dropped and said
//! so in a log line and a metric, and a batch the database refuses is retried a few times and
//! then dropped the same way.

use crate::metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tollgate_domain::call_errors::FailedCall;
use tollgate_domain::repository::CallErrorRepository;

/// How the log batches its writes.
#[derive(Debug, Clone, Copy)]
pub struct FailureLogConfig {
    /// Reports that wait in memory at most; more are dropped (and counted as dropped).
    pub capacity: usize,
    /// How long the first report of a batch waits for others.
    pub window: Duration,
    /// The most reports in one transaction.
    pub batch: usize,
    /// Attempts at writing one batch before it is dropped.
    pub attempts: u32,
    /// Pause between attempts (doubled each time).
    pub retry_pause: Duration,
}

impl Default for FailureLogConfig {
    fn default() -> Self {
        FailureLogConfig {
            capacity: 10_000,
            window: Duration::from_millis(200),
            batch: 1_000,
            attempts: 5,
            retry_pause: Duration::from_millis(200),
        }
    }
}

enum Message {
    Failed(FailedCall),
    /// Write everything queued before this message, then answer.
    Flush(oneshot::Sender<()>),
}

/// The queue of failed calls and the handle on its writer.
#[derive(Debug, Clone)]
pub struct FailureLog {
    tx: mpsc::Sender<Message>,
}

impl FailureLog {
    /// Starts the writer over `store`.
    #[must_use]
    pub fn start(store: Arc<dyn CallErrorRepository>, config: FailureLogConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        tokio::spawn(write_batches(store, rx, config));
        FailureLog { tx }
    }

    /// Counts one failed call (never waits).
    pub fn record(&self, failure: FailedCall) {
        metrics::failed_call(failure.kind);
        match self.tx.try_send(Message::Failed(failure)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::failed_call_dropped();
                tracing::warn!(
                    kind = failure.kind.name(),
                    "failed-call queue full; this failure is not counted in the usage report"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::failed_call_dropped();
                tracing::error!(
                    kind = failure.kind.name(),
                    "failed-call writer is gone; this failure is not counted in the usage report"
                );
            }
        }
    }

    /// Waits until every failure reported before this call has been written (or dropped after
    /// its attempts), or `within` has passed; whether it finished in time.
    pub async fn flush(&self, within: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let asked =
            async { self.tx.send(Message::Flush(done)).await.is_ok() && wait.await.is_ok() };
        tokio::time::timeout(within, asked).await.unwrap_or(false)
    }
}

/// The writer: takes a first report, gathers more for `window` (or until `batch` are
/// waiting), writes them in one go.
async fn write_batches(
    store: Arc<dyn CallErrorRepository>,
    mut rx: mpsc::Receiver<Message>,
    config: FailureLogConfig,
) {
    let mut batch: Vec<FailedCall> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        take(first, &mut batch, &mut flushes);
        if flushes.is_empty() {
            let deadline = tokio::time::Instant::now() + config.window;
            while batch.len() < config.batch && flushes.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) => take(m, &mut batch, &mut flushes),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        // A flush also covers what was queued before it.
        while batch.len() < config.batch {
            match rx.try_recv() {
                Ok(m) => take(m, &mut batch, &mut flushes),
                Err(_) => break,
            }
        }
        write(store.as_ref(), &batch, config).await;
        batch.clear();
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

fn take(m: Message, batch: &mut Vec<FailedCall>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match m {
        Message::Failed(f) => batch.push(f),
        Message::Flush(f) => flushes.push(f),
    }
}

async fn write(store: &dyn CallErrorRepository, batch: &[FailedCall], config: FailureLogConfig) {
    if batch.is_empty() {
        return;
    }
    let mut pause = config.retry_pause;
    for attempt in 1..=config.attempts.max(1) {
        match store.record_call_errors(batch).await {
            Ok(()) => return,
            Err(e) if attempt < config.attempts => {
                tracing::warn!(error = %e, detail = e.detail(), attempt, calls = batch.len(), "could not count failed calls; retrying");
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
            Err(e) => {
                tracing::error!(error = %e, detail = e.detail(), calls = batch.len(), "could not count failed calls; these are not in the usage report");
                for _ in batch {
                    metrics::failed_call_dropped();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use tollgate_domain::RepoError;
    use tollgate_domain::call_errors::CallFailure;
    use tollgate_domain::ids::ChannelId;
    use tollgate_domain::time::UnixTime;

    /// Records each batch; refuses the first `fail` writes.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<FailedCall>>>,
        fail: Mutex<u32>,
    }

    #[async_trait]
    impl CallErrorRepository for Recorder {
        async fn record_call_errors(&self, failures: &[FailedCall]) -> Result<(), RepoError> {
            let mut fail = self
                .fail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *fail > 0 {
                *fail -= 1;
                return Err(RepoError::Unavailable {
                    detail: "down".into(),
                });
            }
            self.batches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(failures.to_vec());
            Ok(())
        }
    }

    impl Recorder {
        fn batches(&self) -> Vec<Vec<FailedCall>> {
            self.batches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    fn failed(n: i64) -> FailedCall {
        FailedCall {
            at: UnixTime::from_secs(1_000 + n),
            channel: Some(ChannelId::new(n)),
            kind: CallFailure::Upstream,
        }
    }

    fn config() -> FailureLogConfig {
        FailureLogConfig {
            capacity: 100,
            window: Duration::from_secs(60),
            batch: 4,
            attempts: 3,
            retry_pause: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn reports_are_written_in_batches_in_order_and_a_flush_covers_all_before_it() {
        let store = Arc::new(Recorder::default());
        let log = FailureLog::start(store.clone(), config());
        for n in 1..=6 {
            log.record(failed(n));
        }
        assert!(log.flush(Duration::from_secs(5)).await);
        let batches = store.batches();
        let all: Vec<FailedCall> = batches.iter().flatten().copied().collect();
        assert_eq!(all, (1..=6).map(failed).collect::<Vec<_>>());
        assert!(
            batches.iter().all(|b| !b.is_empty() && b.len() <= 4),
            "{batches:?}"
        );
        // Nothing queued: a flush writes nothing.
        assert!(log.flush(Duration::from_secs(5)).await);
        assert_eq!(store.batches().len(), batches.len());
    }

    #[tokio::test]
    async fn a_batch_the_database_refuses_is_retried_whole() {
        let store = Arc::new(Recorder {
            fail: Mutex::new(2),
            ..Recorder::default()
        });
        let log = FailureLog::start(store.clone(), config());
        log.record(failed(1));
        log.record(failed(2));
        assert!(log.flush(Duration::from_secs(5)).await);
        assert_eq!(store.batches(), vec![vec![failed(1), failed(2)]]);
    }

    #[tokio::test]
    async fn a_batch_still_refused_after_its_attempts_is_dropped_and_the_writer_goes_on() {
        let store = Arc::new(Recorder {
            fail: Mutex::new(3),
            ..Recorder::default()
        });
        let log = FailureLog::start(store.clone(), config());
        log.record(failed(1));
        assert!(log.flush(Duration::from_secs(5)).await);
        assert!(store.batches().is_empty());
        log.record(failed(2));
        assert!(log.flush(Duration::from_secs(5)).await);
        assert_eq!(store.batches(), vec![vec![failed(2)]]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_reports_instead_of_waiting() {
        /// Never answers, so the queue fills.
        struct Stuck;
        #[async_trait]
        impl CallErrorRepository for Stuck {
            async fn record_call_errors(&self, _: &[FailedCall]) -> Result<(), RepoError> {
                std::future::pending().await
            }
        }
        let log = FailureLog::start(
            Arc::new(Stuck),
            FailureLogConfig {
                capacity: 2,
                window: Duration::ZERO,
                ..config()
            },
        );
        // The writer takes one batch and hangs on it; then the queue holds two. Recording many
        // more returns at once.
        let started = std::time::Instant::now();
        for n in 0..1_000 {
            log.record(failed(n));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!log.flush(Duration::from_millis(50)).await);
    }
}
