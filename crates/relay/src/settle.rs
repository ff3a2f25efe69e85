//! Settlement: turning a finished call into its charge, and the background worker that writes
//! it. Settling and releasing are sent to a background task instead of being awaited on the
//! reply path, so a reply (or the end of a stream, or a client that went away) never waits for
//! the database.
//!
//! A settlement is never dropped while the process lives: a job that fails (the database is
//! down, say) is retried with capped exponential backoff until it succeeds, and the backlog is
//! logged while it lasts. The database makes every job idempotent, so a retry after an unclear
//! failure cannot charge twice. Memory stays bounded because the gateway refuses new calls
//! (before any hold) while the backlog is at its capacity. `drain` waits for the queue at
//! shutdown; a job still unfinished when the process exits is logged with its request id.

use crate::limits::LimitTicket;
use crate::metrics;
use crate::tokenizer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, mpsc, oneshot};
use tollgate_domain::billing::{
    BatchAttempt, LeaseId, ReportedUsage, SettleOutcome, Settlement, UsageBounds,
};
use tollgate_domain::ids::{ChannelId, TokenId, UserId};
use tollgate_domain::pricing::{Price, Usage};
use tollgate_domain::repository::BillingRepository;
use tollgate_domain::time::UnixTime;
use tracing::Instrument;

/// Longest wait between two attempts of a failing job.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The backlog, in batches, above which new calls wait for room ([`Settler::wait_for_room`]).
const SLACK_BATCHES: usize = 8;
/// How often the backlog is logged while jobs are failing.
const BACKLOG_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Delivered text up to this size is counted on the worker itself; more goes to the blocking
/// pool.
const INLINE_COUNT_BYTES: usize = 4 * 1024;

/// The wall clock as unix seconds.
pub(crate) fn now() -> UnixTime {
    UnixTime::from_system(SystemTime::now())
}

/// Everything needed to settle a call once it is over.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub(crate) request_id: String,
    pub(crate) user_id: UserId,
    pub(crate) token_id: TokenId,
    pub(crate) token_name: String,
    pub(crate) model: String,
    pub(crate) price: Price,
    pub(crate) prompt_estimate: u64,
    pub(crate) bounds: UsageBounds,
    pub(crate) is_stream: bool,
    pub(crate) started: Instant,
    /// Its place in rate limits (key and channel windows).
    pub(crate) limit: Option<LimitTicket>,
    /// The channel that answered (set once one did).
    pub(crate) channel: Option<ChannelId>,
    /// The call's span. Its settlement is logged inside it when the settlement's lines are
    /// logged at all ([`Settler::settle`] lets go of it otherwise).
    pub(crate) span: tracing::Span,
}

impl Ticket {
    /// The call is over: what the upstream reported (if anything) and what reached the client.
    pub(crate) fn finish(self, reported: Option<ReportedUsage>, delivered: Delivered) -> Finished {
        // The call's last byte: its concurrency slot is free now, not when it is settled.
        if let Some(limit) = &self.limit {
            limit.release();
        }
        Finished {
            latency_ms: i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
            ended_at: now(),
            ticket: self,
            reported,
            delivered,
        }
    }
}

/// Generated text handed to the client, kept only as far as the tokenizer would read it
/// exactly: past [`tokenizer::TOKENIZE_BUDGET_BYTES`] only its length is kept, so a long stream
/// costs no more memory than a short one.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    text: String,
    bytes: usize,
}

impl Delivered {
    /// Adds text that reached the client.
    pub(crate) fn push(&mut self, s: &str) {
        self.bytes = self.bytes.saturating_add(s.len());
        if self.bytes <= tokenizer::TOKENIZE_BUDGET_BYTES {
            self.text.push_str(s);
        } else if !self.text.is_empty() {
            self.text = String::new();
        }
    }

    /// Its tokens: counted exactly within the budget, estimated from the bytes beyond it.
    pub(crate) fn tokens(&self) -> u64 {
        if self.bytes > tokenizer::TOKENIZE_BUDGET_BYTES {
            tokenizer::estimate(self.bytes)
        } else {
            tokenizer::count(&self.text)
        }
    }
}

/// A finished call, not yet priced.
#[derive(Debug)]
pub(crate) struct Finished {
    ticket: Ticket,
    reported: Option<ReportedUsage>,
    delivered: Delivered,
    ended_at: UnixTime,
    latency_ms: i64,
}

impl Finished {
    /// The settlement: the reported usage where it is plausible, Tollgate's own count (prompt
    /// estimate, delivered text) where it is absent or not believable.
    pub(crate) fn into_settlement(self) -> Settlement {
        let Finished {
            ticket: t,
            reported,
            delivered,
            ended_at,
            latency_ms,
        } = self;
        let report = reported.unwrap_or_default();
        let (usage, fault) = t.bounds.settle_usage(&report, || {
            Usage::new(t.prompt_estimate, delivered.tokens())
        });
        if fault.any() {
            tracing::warn!(
                request_id = %t.request_id,
                model = %t.model,
                reported = ?report,
                billed = ?usage,
                max_prompt = t.bounds.max_prompt(),
                max_completion = t.bounds.max_completion(),
                "upstream fault: implausible usage reported; billed by Tollgate's own count"
            );
        }
        Settlement {
            quota: t.price.quota_for(&usage),
            request_id: t.request_id,
            user_id: t.user_id,
            token_id: t.token_id,
            token_name: t.token_name,
            model: t.model,
            usage,
            is_stream: t.is_stream,
            latency_ms,
            at: ended_at,
            channel_id: t.channel,
            lease: None,
        }
    }

    fn counts_much(&self) -> bool {
        self.delivered.bytes > INLINE_COUNT_BYTES
    }
}

/// Told once a settlement is written (when its caller waits for that).
type Ack = Option<oneshot::Sender<()>>;

/// A call whose hold was taken from a balance lease: the lease hears how its settlement ended.
pub(crate) trait Funded: Send + Sync {
    /// The lease the call's hold was taken from.
    fn lease(&self) -> &LeaseId;
    /// The settlement is over: `Some((charge, outcome))` once written; `None` when it was
    /// given up before any write (its count failed), so the whole hold goes back to the lease.
    fn finished(&self, written: Option<(i64, SettleOutcome)>);
}

/// Where a settlement's hold lives: `None`, a hold row of its own; else a lease.
pub(crate) type Funding = Option<Arc<dyn Funded>>;

enum Job {
    Settle(Box<Finished>, Funding, Ack),
    Release(String, tracing::Span),
}

impl Job {
    fn span(&self) -> tracing::Span {
        match self {
            Job::Settle(f, _, _) => f.ticket.span.clone(),
            Job::Release(_, span) => span.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Jobs submitted and not finished.
    count: AtomicUsize,
    /// Jobs that failed at least once and are still retrying.
    failing: AtomicUsize,
    idle: Notify,
    /// The backlog above which new calls wait for room ([`Settler::wait_for_room`]).
    slack: usize,
    /// Woken when the backlog falls below `slack`.
    room: Notify,
}

/// Sends settlements and releases to the background worker.
#[derive(Clone)]
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<Job>,
    pending: Arc<Pending>,
    capacity: usize,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("pending", &self.pending())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// How the worker groups settlements into database transactions (group commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batching {
    /// How long the first settlement of a batch waits for others; zero writes each settlement
    /// on its own, at once.
    pub(crate) window: Duration,
    /// Most settlements in one transaction.
    pub(crate) max: usize,
}

impl Pending {
    /// `n` jobs are done.
    fn finished(&self, n: usize) {
        let left = self.count.fetch_sub(n, Ordering::AcqRel) - n;
        metrics::settlements(left, self.failing.load(Ordering::Acquire));
        if left < self.slack {
            self.room.notify_waiters();
        }
        if left == 0 {
            self.idle.notify_waiters();
        }
    }
}

/// Runs one job on a task of its own (releases always; settlements when not batched).
fn spawn_one(billing: &Arc<dyn BillingRepository>, pending: &Arc<Pending>, job: Job) {
    let billing = Arc::clone(billing);
    let done = Arc::clone(pending);
    let span = job.span();
    tokio::spawn(
        async move {
            run(&*billing, job, &done).await;
            done.finished(1);
        }
        .instrument(span),
    );
}

impl Settler {
    /// Starts the worker on the current tokio runtime; `capacity` is the backlog at which
    /// [`Settler::is_full`] turns true.
    #[must_use]
    pub fn start(billing: Arc<dyn BillingRepository>, capacity: usize, batching: Batching) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let pending = Arc::new(Pending {
            slack: batching.max.max(1).saturating_mul(SLACK_BATCHES),
            ..Pending::default()
        });
        let done = Arc::clone(&pending);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                if batching.window.is_zero() {
                    spawn_one(&billing, &done, job);
                    continue;
                }
                // Group commit: settlements arriving within the window share one transaction;
                // batches are written one after another, so a batch never waits on its
                // predecessor's locks.
                let deadline = tokio::time::Instant::now() + batching.window;
                let mut batch = Vec::new();
                let mut next = Some(job);
                let mut slept = false;
                loop {
                    match next.take() {
                        Some(Job::Settle(f, fund, ack)) => {
                            batch.push((*f, fund, ack));
                            if batch.len() >= batching.max.max(1) {
                                break;
                            }
                        }
                        Some(release) => spawn_one(&billing, &done, release),
                        // The window is slept out, then what arrived meanwhile is taken at
                        // once: a sender wakes this task only while it waits on the channel,
                        // so the settlements in between cost no thread wake-up each.
                        None if !slept => {
                            tokio::time::sleep_until(deadline).await;
                            slept = true;
                        }
                        None => break,
                    }
                    next = rx.try_recv().ok();
                }
                if !batch.is_empty() {
                    let n = batch.len();
                    run_batch(&*billing, batch, &done).await;
                    done.finished(n);
                }
            }
        });
        tokio::spawn(report_backlog(Arc::downgrade(&pending)));
        Settler {
            tx,
            pending,
            capacity: capacity.max(1),
        }
    }

    fn submit(&self, job: Job) {
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        metrics::settlements(self.pending(), self.failing());
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            self.pending.count.fetch_sub(1, Ordering::AcqRel);
            let what = match &job {
                Job::Settle(f, _, _) => f.ticket.request_id.clone(),
                Job::Release(id, _) => id.clone(),
            };
            tracing::error!(request_id = %what, "settlement worker is gone; the hold will expire instead");
        }
    }

    /// Settles a finished call (in the background) whose hold is `funding`; with `confirm`,
    /// the receiver hears once it is written (never, if the process stops first).
    ///
    /// The settlement lets go of the call's span unless its `settled` line is logged (at
    /// `debug`): a queued settlement holding the span kept it — and its request's span — alive
    /// in the log registry until written, and the registry keeps the room it once grew to. A
    /// backlog of some 30,000 settlements (a 1,000-user run on MariaDB) left the instance
    /// 25–45 MB larger for the rest of its life (docs/benchmarks.md, ninth session). Without
    /// the span, the lines about the settlement name the call by request id, model and
    /// channel.
    pub(crate) fn settle(
        &self,
        mut finished: Finished,
        funding: Funding,
        confirm: bool,
    ) -> Option<oneshot::Receiver<()>> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            finished.ticket.span = tracing::Span::none();
        }
        if confirm {
            let (ack, written) = oneshot::channel();
            self.submit(Job::Settle(Box::new(finished), funding, Some(ack)));
            Some(written)
        } else {
            self.submit(Job::Settle(Box::new(finished), funding, None));
            None
        }
    }

    /// Releases the hold of a call that failed before answering (in the background), logged
    /// in `span`.
    pub(crate) fn release(&self, request_id: String, span: tracing::Span) {
        self.submit(Job::Release(request_id, span));
    }

    /// Jobs not finished yet.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.count.load(Ordering::Acquire)
    }

    /// Jobs that are failing and being retried (the database is down or refusing them).
    #[must_use]
    pub fn failing(&self) -> usize {
        self.pending.failing.load(Ordering::Acquire)
    }

    /// Whether the backlog has reached its capacity (new calls should wait).
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.pending() >= self.capacity
    }

    /// Waits while the settlements waiting to be written are more than a few batches' worth
    /// ([`SLACK_BATCHES`]) and none is failing, at most `within`; whether there is room.
    ///
    /// A call admitted while the settlement worker falls behind only makes its backlog longer:
    /// on MariaDB with 1,000 users, whose server shares the gateway's core, the request path
    /// answered faster than the batches were written until the backlog reached its capacity
    /// and most calls were refused (docs/benchmarks.md, ninth session). Waiting here instead
    /// holds the calls to the rate at which they are settled. While the database is failing
    /// no call waits: they are answered and their settlements kept until the capacity, as
    /// before.
    pub async fn wait_for_room(&self, within: Duration) -> bool {
        let wait = async {
            loop {
                let woken = self.pending.room.notified();
                if self.has_room() {
                    return;
                }
                woken.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Whether a new call may go on without waiting ([`Settler::wait_for_room`]).
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.pending() < self.pending.slack || self.failing() > 0
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

/// Logs the backlog every few seconds while jobs are failing; ends with the settler.
async fn report_backlog(pending: Weak<Pending>) {
    loop {
        tokio::time::sleep(BACKLOG_REPORT_EVERY).await;
        let Some(p) = pending.upgrade() else { return };
        let failing = p.failing.load(Ordering::Acquire);
        if failing > 0 {
            tracing::warn!(
                failing,
                pending = p.count.load(Ordering::Acquire),
                "settlement backlog: jobs waiting for the database, still retrying"
            );
        }
    }
}

/// Backoff before retry `attempt` (1-based): doubling from 100 ms up to [`MAX_BACKOFF`], with
/// a little jitter from the attempt number so failing jobs do not retry in lockstep.
#[must_use]
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(9));
    let jitter = Duration::from_millis(u64::from(attempt.wrapping_mul(37) % 50));
    base.min(MAX_BACKOFF).saturating_add(jitter)
}

/// Logs a job that the process gave up on by exiting (its runtime dropped it unfinished).
struct Unfinished<'a> {
    what: &'a str,
    request_id: &'a str,
    quota: i64,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            tracing::error!(
                request_id = %self.request_id,
                quota = self.quota,
                what = self.what,
                "process stopping with this job unfinished; the hold will expire unbilled"
            );
        }
    }
}

/// A finished call priced (counted on the blocking pool when its text is long), its rate-limit
/// windows given the real tokens.
async fn price(f: Finished) -> Option<Settlement> {
    let limit = f.ticket.limit.clone();
    let s = if f.counts_much() {
        let request_id = f.ticket.request_id.clone();
        match tokio::task::spawn_blocking(move || f.into_settlement()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(request_id, error = %e, "counting a settlement failed");
                return None;
            }
        }
    } else {
        f.into_settlement()
    };
    if let Some(limit) = limit {
        limit.settle(s.usage.total()).await;
    }
    Some(s)
}

/// Writes a batch of settlements in one transaction, retrying the whole batch until the
/// database takes it (each settlement still moves money at most once).
async fn run_batch(
    billing: &dyn BillingRepository,
    batch: Vec<(Finished, Funding, Ack)>,
    pending: &Pending,
) {
    let mut settlements = Vec::with_capacity(batch.len());
    let mut spans = Vec::with_capacity(batch.len());
    let mut funds = Vec::with_capacity(batch.len());
    let mut acks = Vec::new();
    for (f, fund, ack) in batch {
        let span = f.ticket.span.clone();
        let id = f.ticket.request_id.clone();
        if let Some(mut s) = price(f).await {
            s.lease = fund.as_ref().map(|l| l.lease().clone());
            settlements.push(s);
            spans.push(span);
            funds.push(fund);
            acks.extend(ack);
        } else if let Some(fund) = fund {
            fund.finished(None);
        } else {
            // Counting failed: the hold is given back rather than left locked until the
            // expiry sweep.
            run(billing, Job::Release(id, span), pending).await;
        }
    }
    let mut attempt = 0u32;
    let outcomes = loop {
        // After a failed attempt the batch may have committed all the same (an answer lost at
        // its COMMIT): the store then finds its receipt rather than charge its calls twice.
        let this = if attempt == 0 {
            BatchAttempt::First
        } else {
            BatchAttempt::Retry
        };
        match billing.settle_batch(&settlements, this).await {
            Ok(o) => break o,
            Err(e) => {
                attempt = attempt.saturating_add(1);
                if attempt == 1 {
                    pending
                        .failing
                        .fetch_add(settlements.len(), Ordering::AcqRel);
                    // Calls waiting for room go on: the database is failing, not slow.
                    pending.room.notify_waiters();
                }
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(
                        calls = settlements.len(),
                        attempt,
                        error = %e,
                        detail = e.detail(),
                        "settlement batch failed; retrying until the database answers"
                    );
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    };
    for (((s, o), span), fund) in settlements.iter().zip(&outcomes).zip(&spans).zip(&funds) {
        log_settled(span, s, *o, settlements.len());
        if let Some(fund) = fund {
            fund.finished(Some((s.quota.get(), *o)));
        }
        if *o != SettleOutcome::AlreadyFinished {
            metrics::charged(&s.model, s.quota.get());
        }
        metrics::holds(-1.0);
    }
    for ack in acks {
        let _ = ack.send(());
    }
    if attempt > 0 {
        pending
            .failing
            .fetch_sub(settlements.len(), Ordering::AcqRel);
        tracing::info!(
            calls = settlements.len(),
            attempts = attempt + 1,
            "settlement batch done after retries"
        );
    }
}

async fn run(billing: &dyn BillingRepository, job: Job, pending: &Pending) {
    let (what, settlement, request_id, fund, ack) = match job {
        Job::Settle(f, fund, ack) => {
            let id = f.ticket.request_id.clone();
            match price(*f).await {
                Some(mut s) => {
                    s.lease = fund.as_ref().map(|l| l.lease().clone());
                    ("settle", Some(s), id, fund, ack)
                }
                None => {
                    if let Some(fund) = fund {
                        // The hold goes back to its lease: nothing to write.
                        fund.finished(None);
                        return;
                    }
                    // Counting failed: the hold is given back rather than left locked until
                    // the expiry sweep.
                    ("release", None, id, None, None)
                }
            }
        }
        Job::Release(id, _) => ("release", None, id, None, None),
    };
    let mut guard = Unfinished {
        what,
        request_id: &request_id,
        quota: settlement.as_ref().map_or(0, |s| s.quota.get()),
        done: false,
    };
    let mut attempt = 0u32;
    loop {
        let result = match &settlement {
            Some(s) => billing.settle(s).await.map(|o| {
                log_settled(&tracing::Span::current(), s, o, 1);
                if o != SettleOutcome::AlreadyFinished {
                    metrics::charged(&s.model, s.quota.get());
                }
                if let Some(fund) = &fund {
                    fund.finished(Some((s.quota.get(), o)));
                }
            }),
            None => billing.release(&request_id).await.map(|_| ()),
        };
        match result {
            Ok(()) => break,
            Err(e) => {
                attempt = attempt.saturating_add(1);
                if attempt == 1 {
                    pending.failing.fetch_add(1, Ordering::AcqRel);
                }
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(
                        request_id = %request_id,
                        what,
                        attempt,
                        error = %e,
                        detail = e.detail(),
                        "settlement job failed; retrying until the database answers"
                    );
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
    metrics::holds(-1.0);
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
    if attempt > 0 {
        pending.failing.fetch_sub(1, Ordering::AcqRel);
        tracing::info!(request_id = %request_id, what, attempts = attempt + 1, "settlement job done after retries");
    }
    guard.done = true;
}

/// The settlement's line: at `debug` when it went as it should (the book of record is the
/// call's log row; a line per call at `info` would double the logging of a busy gateway), at
/// `info` when the hold had expired or the call was already settled. In the call's `span` when
/// the settlement kept it; otherwise (`Span::none()`) the line names the call itself.
fn log_settled(span: &tracing::Span, s: &Settlement, outcome: SettleOutcome, batch: usize) {
    let quota = s.quota.get();
    // Fields left `None` are not written: in the span, the span names the call.
    let named = span.is_none();
    let request_id = named.then_some(s.request_id.as_str());
    let model = named.then_some(s.model.as_str());
    let channel_id = s.channel_id.filter(|_| named).map(ChannelId::get);
    span.in_scope(|| {
        if outcome == SettleOutcome::Settled {
            tracing::debug!(
                request_id,
                model,
                channel_id,
                quota,
                ?outcome,
                batch,
                "settled"
            );
        } else {
            tracing::info!(
                request_id,
                model,
                channel_id,
                quota,
                ?outcome,
                batch,
                "settled"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;
    use tollgate_domain::RepoError;
    use tollgate_domain::billing::{Hold, HoldRefusal};
    use tollgate_domain::quota::Quota;

    /// A billing store that is down for its first `down_for` calls.
    #[derive(Default)]
    struct Flaky {
        down_for: usize,
        calls: AtomicUsize,
        settled: Mutex<Vec<Settlement>>,
        released: Mutex<Vec<String>>,
        /// Sizes of the batches written.
        batches: Mutex<Vec<usize>>,
        /// Each batch write tried, written or not: its first call and the attempt it was told.
        attempts: Mutex<Vec<(String, BatchAttempt)>>,
        /// When set, each settlement write first waits for one of its permits.
        gate: Option<tokio::sync::Semaphore>,
    }

    impl Flaky {
        async fn pass_gate(&self) {
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("open").forget();
            }
        }
        fn up(&self) -> Result<(), RepoError> {
            if self.calls.fetch_add(1, Ordering::AcqRel) < self.down_for {
                Err(RepoError::Unavailable {
                    detail: "connection refused".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl BillingRepository for Flaky {
        async fn hold(&self, _: &Hold, _: UnixTime) -> Result<Result<(), HoldRefusal>, RepoError> {
            self.up().map(Ok)
        }
        async fn settle(&self, s: &Settlement) -> Result<SettleOutcome, RepoError> {
            self.pass_gate().await;
            self.up()?;
            self.settled.lock().expect("lock").push(s.clone());
            Ok(SettleOutcome::Settled)
        }
        async fn settle_batch(
            &self,
            batch: &[Settlement],
            attempt: BatchAttempt,
        ) -> Result<Vec<SettleOutcome>, RepoError> {
            self.pass_gate().await;
            let first = batch
                .first()
                .map(|s| s.request_id.clone())
                .unwrap_or_default();
            self.attempts.lock().expect("lock").push((first, attempt));
            self.up()?;
            self.batches.lock().expect("lock").push(batch.len());
            self.settled.lock().expect("lock").extend_from_slice(batch);
            Ok(vec![SettleOutcome::Settled; batch.len()])
        }
        async fn release(&self, id: &str) -> Result<bool, RepoError> {
            self.up()?;
            self.released.lock().expect("lock").push(id.to_owned());
            Ok(true)
        }
        async fn expire_holds(&self, _: UnixTime, _: u64) -> Result<u64, RepoError> {
            Ok(0)
        }
    }

    /// A settler over `store`: a backlog of `capacity`, batches of at most `max` gathered for
    /// `window`.
    fn start_settler(store: &Arc<Flaky>, capacity: usize, window: Duration, max: usize) -> Settler {
        Settler::start(store.clone(), capacity, Batching { window, max })
    }

    /// Settles `t` for 10 prompt and 20 completion tokens, not waiting for the write.
    fn settle_usual(settler: &Settler, t: Ticket) {
        let _ = settler.settle(
            t.finish(Some(ReportedUsage::counts(10, 20, 0)), Delivered::default()),
            None,
            false,
        );
    }

    fn ticket(id: &str) -> Ticket {
        Ticket {
            request_id: id.into(),
            user_id: UserId::new(1),
            token_id: TokenId::new(2),
            token_name: "k".into(),
            model: "m".into(),
            price: Price::new(2.into(), 6.into(), 1.into()).expect("price"),
            prompt_estimate: 10,
            bounds: UsageBounds::for_request(1_000, 0, Some(100), 1),
            is_stream: true,
            started: Instant::now(),
            limit: None,
            channel: None,
            span: tracing::Span::none(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_settlement_outlives_a_long_outage_and_is_written_once() {
        // 60 failed attempts span well over ten minutes of backoff: more than any fixed retry
        // count would wait.
        let store = Arc::new(Flaky {
            down_for: 60,
            ..Flaky::default()
        });
        let settler = start_settler(&store, 10, Duration::ZERO, 1);
        settle_usual(&settler, ticket("r1"));
        assert!(!settler.drain(Duration::from_secs(60)).await, "still down");
        assert_eq!(settler.failing(), 1);
        assert_eq!(settler.pending(), 1);
        assert!(
            settler.drain(Duration::from_secs(3600)).await,
            "written once the store is back"
        );
        let settled = store.settled.lock().expect("lock").clone();
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].usage, Usage::new(10, 20));
        // (10 × 2 + 20 × 6) / 2 = 70.
        assert_eq!(settled[0].quota, Quota::new(70));
        assert_eq!((settler.failing(), settler.pending()), (0, 0));
    }

    /// A subscriber that counts the spans still referenced and lets events and spans through
    /// up to `max` (no registry, no output).
    struct LiveSpans {
        max: tracing::Level,
        next: std::sync::atomic::AtomicU64,
        refs: Mutex<std::collections::HashMap<u64, usize>>,
    }

    impl LiveSpans {
        fn new(max: tracing::Level) -> Arc<Self> {
            Arc::new(LiveSpans {
                max,
                next: std::sync::atomic::AtomicU64::new(1),
                refs: Mutex::default(),
            })
        }
        fn live(&self) -> usize {
            self.refs.lock().expect("lock").len()
        }
    }

    impl tracing::Subscriber for LiveSpans {
        fn register_callsite(
            &self,
            _: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            // Asked again each time: tests with other subscribers run alongside.
            tracing::subscriber::Interest::sometimes()
        }
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            *metadata.level() <= self.max
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let id = self.next.fetch_add(1, Ordering::AcqRel);
            self.refs.lock().expect("lock").insert(id, 1);
            tracing::span::Id::from_u64(id)
        }
        fn clone_span(&self, id: &tracing::span::Id) -> tracing::span::Id {
            *self
                .refs
                .lock()
                .expect("lock")
                .entry(id.into_u64())
                .or_default() += 1;
            id.clone()
        }
        fn try_close(&self, id: tracing::span::Id) -> bool {
            let mut refs = self.refs.lock().expect("lock");
            let n = refs.entry(id.into_u64()).or_default();
            *n = n.saturating_sub(1);
            let closed = *n == 0;
            if closed {
                refs.remove(&id.into_u64());
            }
            closed
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {}
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_settlement_keeps_its_calls_span_only_while_its_line_is_logged() {
        for (level, kept) in [(tracing::Level::INFO, 0), (tracing::Level::DEBUG, 1)] {
            let spans = LiveSpans::new(level);
            let _default = tracing::subscriber::set_default(Arc::clone(&spans));
            // The store is down: the settlement waits in the backlog.
            let store = Arc::new(Flaky {
                down_for: 5,
                ..Flaky::default()
            });
            let settler = start_settler(&store, 10, Duration::from_millis(10), 16);
            let mut t = ticket("r1");
            t.span = tracing::info_span!("request", request_id = "r1");
            assert_eq!(spans.live(), 1);
            settle_usual(&settler, t);
            assert!(
                !settler.drain(Duration::from_millis(50)).await,
                "still down"
            );
            assert_eq!(settler.pending(), 1);
            assert_eq!(
                spans.live(),
                kept,
                "spans alive while waiting, up to {level}"
            );
            assert!(settler.drain(Duration::from_secs(3600)).await);
            assert_eq!(store.settled.lock().expect("lock").len(), 1, "written once");
            assert_eq!(spans.live(), 0, "none once written");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_wait_for_room_while_the_settlements_fall_behind_not_while_they_fail() {
        let store = Arc::new(Flaky {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Flaky::default()
        });
        // Batches of two: room below 8 × 2 waiting settlements.
        let settler = start_settler(&store, 1_000, Duration::from_millis(1), 2);
        assert!(settler.wait_for_room(Duration::ZERO).await, "empty");
        for i in 0..20 {
            settle_usual(&settler, ticket(&format!("r{i}")));
        }
        assert!(
            !settler.wait_for_room(Duration::from_secs(1)).await,
            "20 waiting"
        );
        // Five batches written: 10 left, below 16.
        let gate = store.gate.as_ref().expect("gated");
        gate.add_permits(5);
        assert!(settler.wait_for_room(Duration::from_secs(1)).await);
        assert!(settler.pending() < 16, "{}", settler.pending());
        assert!(settler.pending() >= 10, "{}", settler.pending());
        gate.add_permits(1_000);
        assert!(settler.drain(Duration::from_secs(60)).await);
        assert_eq!(store.settled.lock().expect("lock").len(), 20);

        // A failing database makes no call wait: the backlog is kept up to its capacity.
        let failing = Arc::new(Flaky {
            down_for: 1_000,
            ..Flaky::default()
        });
        let settler = start_settler(&failing, 1_000, Duration::from_millis(1), 2);
        for i in 0..20 {
            settle_usual(&settler, ticket(&format!("f{i}")));
        }
        assert!(settler.wait_for_room(Duration::from_secs(1)).await);
        assert!(settler.failing() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn releases_are_retried_too_and_the_backlog_has_a_capacity() {
        let store = Arc::new(Flaky {
            down_for: 30,
            ..Flaky::default()
        });
        let settler = start_settler(&store, 2, Duration::ZERO, 1);
        assert!(!settler.is_full());
        settler.release("a".into(), tracing::Span::none());
        settler.release("b".into(), tracing::Span::none());
        assert!(settler.is_full(), "two jobs fill a backlog of two");
        assert!(settler.drain(Duration::from_secs(3600)).await);
        let mut released = store.released.lock().expect("lock").clone();
        released.sort();
        assert_eq!(released, ["a", "b"]);
        assert!(!settler.is_full());
    }

    #[tokio::test(start_paused = true)]
    async fn settlements_within_the_window_share_one_write_and_a_failed_batch_is_retried_whole() {
        let store = Arc::new(Flaky {
            down_for: 3,
            ..Flaky::default()
        });
        let settler = start_settler(&store, 100, Duration::from_millis(5), 4);
        for n in 0..6 {
            settle_usual(&settler, ticket(&format!("b{n}")));
        }
        settler.release("gone".into(), tracing::Span::none());
        assert!(settler.drain(Duration::from_secs(60)).await);
        // Six settlements, at most four a batch: 4 + 2, each batch written once it got through
        // (the store was down for the first three calls, whoever made them).
        let batches = store.batches.lock().expect("lock").clone();
        assert_eq!(batches.iter().sum::<usize>(), 6, "{batches:?}");
        assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
        assert_eq!(batches.len(), 2, "{batches:?}");
        let mut ids: Vec<String> = store
            .settled
            .lock()
            .expect("lock")
            .iter()
            .map(|s| s.request_id.clone())
            .collect();
        ids.sort();
        assert_eq!(ids, ["b0", "b1", "b2", "b3", "b4", "b5"]);
        assert_eq!(*store.released.lock().expect("lock"), ["gone"]);
        assert_eq!((settler.pending(), settler.failing()), (0, 0));
        // A batch's first write is told so; every write after a failure is a retry, which may
        // find the batch committed (the store finds its receipt).
        let attempts = store.attempts.lock().expect("lock").clone();
        let mut tried = std::collections::HashSet::new();
        for (first, attempt) in &attempts {
            let expected = if tried.insert(first.clone()) {
                BatchAttempt::First
            } else {
                BatchAttempt::Retry
            };
            assert_eq!(*attempt, expected, "{attempts:?}");
        }
        assert!(
            attempts.iter().any(|(_, a)| *a == BatchAttempt::Retry),
            "{attempts:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert!(
            backoff(1) >= Duration::from_millis(200) && backoff(1) < Duration::from_millis(250)
        );
        assert!(
            backoff(2) >= Duration::from_millis(400) && backoff(2) < Duration::from_millis(450)
        );
        for n in [9, 10, 100, u32::MAX] {
            assert!(
                backoff(n) >= MAX_BACKOFF && backoff(n) < MAX_BACKOFF + Duration::from_millis(50)
            );
        }
    }

    #[test]
    fn delivered_text_is_kept_only_as_far_as_it_is_counted() {
        let mut d = Delivered::default();
        d.push("hello ");
        d.push("world");
        assert_eq!(d.tokens(), 2);
        let big = "a".repeat(tokenizer::TOKENIZE_BUDGET_BYTES);
        d.push(&big);
        assert!(d.text.is_empty(), "past the budget only the length is kept");
        assert_eq!(
            d.tokens(),
            tokenizer::estimate(11 + tokenizer::TOKENIZE_BUDGET_BYTES)
        );
    }

    #[test]
    fn implausible_reports_are_billed_by_our_own_count() {
        let mut d = Delivered::default();
        d.push("hello world");
        let hostile = ReportedUsage::counts(u64::MAX, 1_000_000_000_000_000, 0);
        let s = ticket("r").finish(Some(hostile), d).into_settlement();
        // Prompt estimate 10, "hello world" 2 tokens: (10 × 2 + 2 × 6) / 2 = 16.
        assert_eq!(s.usage, Usage::new(10, 2));
        assert_eq!(s.quota, Quota::new(16));
        let none = ticket("r")
            .finish(None, Delivered::default())
            .into_settlement();
        assert_eq!(none.usage, Usage::new(10, 0));
    }
}
