//! Billing's one home: the [`Ledger`] port through which a call's money moves, and
//! [`ExactLedger`], the implementation that writes every step to the book of record as it
//! happens.
//!
//! A call asks the ledger for a [`Reservation`] (the hold). The reservation ends exactly one of
//! two ways: [`Reservation::settle`] with what the call delivered, or being dropped — an early
//! return, an upstream that failed before answering, a client that went away before the first
//! byte — which releases it. The type makes a third way (forgetting) impossible without an
//! explicit `mem::forget`. A ledger may be *durable* ([`Reservation::durable`]): the gateway
//! then waits for the settlement's commit before the call's last byte goes out. The ledger
//! also owns what happens around calls: the sweep that
//! releases holds a dead process left, the backlog that refuses new calls while settlements
//! cannot be written, and the drain at shutdown. Start-up builds one ledger and injects it into
//! the gateway, so another implementation (leases, group commit) can replace this one and be
//! tested by the same suite.

use crate::metrics;
use crate::settle::{Batching, Finished, Settler, now};
use async_trait::async_trait;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tollgate_domain::RepoError;
use tollgate_domain::billing::{Hold, HoldRefusal};
use tollgate_domain::repository::BillingRepository;
use tracing::Instrument;

/// Where a reservation's ending goes: settlement or release, both written in the background.
pub(crate) trait Book: Send + Sync {
    /// Writes the settlement of a finished call; with `confirm`, the receiver hears once it is
    /// written.
    fn settle(self: Arc<Self>, finished: Finished, confirm: bool) -> Option<oneshot::Receiver<()>>;
    /// Gives the reservation of `request_id` back in full, logging in the call's `span`.
    fn release(self: Arc<Self>, request_id: String, span: tracing::Span);
}

/// Money held for one call. Settle it with [`Reservation::settle`]; dropping it unsettled
/// releases the hold (in the background, never delaying the caller).
#[must_use = "dropping a reservation releases its hold"]
pub struct Reservation {
    request_id: String,
    book: Arc<dyn Book>,
    open: bool,
    /// Whether a settlement is written before the call's last byte is sent.
    durable: bool,
    /// The call's span (current when the hold was taken): a release is logged in it even
    /// when the drop happens elsewhere.
    span: tracing::Span,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("request_id", &self.request_id)
            .field("open", &self.open)
            .finish()
    }
}

impl Reservation {
    pub(crate) fn new(request_id: String, book: Arc<dyn Book>, durable: bool) -> Self {
        Reservation {
            request_id,
            book,
            open: true,
            durable,
            span: tracing::Span::current(),
        }
    }

    /// The call's request id (the hold's key).
    #[must_use]
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Whether the ledger writes a settlement before the call's last byte goes out: then the
    /// caller awaits [`Settled::written`] before sending it.
    #[must_use]
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Ends the reservation with the call's charge. The settlement is written in the
    /// background; await [`Settled::written`] to wait for it where the ledger is durable
    /// (dropping it waits for nothing, and the settlement is written all the same).
    pub(crate) fn settle(mut self, finished: Finished) -> Settled {
        self.open = false;
        Settled(Arc::clone(&self.book).settle(finished, self.durable))
    }
}

/// How long a call's last byte waits for its settlement: past this (the database is slow or
/// down) the answer goes out and the settlement is still retried in the background.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// A settlement handed to the ledger.
#[derive(Debug)]
pub(crate) struct Settled(Option<oneshot::Receiver<()>>);

impl Settled {
    /// Waits until the settlement is written (at most [`DURABLE_WAIT`]); at once unless the
    /// ledger is durable. Whether it is known to be written.
    pub(crate) async fn written(self) -> bool {
        match self.0 {
            None => false,
            Some(rx) => matches!(tokio::time::timeout(DURABLE_WAIT, rx).await, Ok(Ok(()))),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.open {
            let span = std::mem::replace(&mut self.span, tracing::Span::none());
            Arc::clone(&self.book).release(std::mem::take(&mut self.request_id), span);
        }
    }
}

/// The state of the settlements not yet written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Settlements and releases not finished yet.
    pub pending: usize,
    /// Those failing and being retried (the database is down).
    pub failing: usize,
    /// Whether new calls should be refused until the backlog shrinks.
    pub full: bool,
    /// Whether the settlements have fallen behind the calls: a new call waits for room
    /// ([`Ledger::wait_for_room`]) before it goes on.
    pub behind: bool,
}

/// The port through which every call's money moves (see the module documentation).
#[async_trait]
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Holds `hold.amount` for a call if the user's balance and the key's cap both cover it
    /// (and the key is usable at `hold.created_at`); nothing is held when it is refused.
    async fn reserve(&self, hold: &Hold) -> Result<Result<Reservation, HoldRefusal>, RepoError>;

    /// Settlements not written yet.
    fn backlog(&self) -> Backlog;

    /// Waits, at most `within`, while the settlements are falling behind the calls (see
    /// [`Settler::wait_for_room`]); whether there is room. Ask [`Backlog::behind`] first: it
    /// says so without waiting.
    async fn wait_for_room(&self, within: Duration) -> bool;

    /// Releases holds past their expiry (left by a process that died mid-call); how many.
    async fn sweep(&self) -> Result<u64, RepoError>;

    /// Waits until every settlement handed to the ledger is written, or `timeout` passes;
    /// whether everything was written (shutdown).
    async fn drain(&self, timeout: Duration) -> bool;
}

/// Settings of [`ExactLedger`].
#[derive(Debug, Clone, Copy)]
pub struct ExactLedgerConfig {
    /// Settlements waiting for the database at which new calls are refused.
    pub backlog_capacity: usize,
    /// How often holds past their expiry are looked for.
    pub sweep_every: Duration,
    /// Most holds released by one sweep.
    pub sweep_batch: u64,
    /// Group commit: how long a settlement waits for others to share its transaction. Zero:
    /// each is written on its own, at once, and before the call's last byte goes out (a crash
    /// after a client got its whole answer cannot lose its charge).
    pub settlement_window: Duration,
    /// Most settlements in one transaction.
    pub settlement_batch: usize,
}

impl Default for ExactLedgerConfig {
    fn default() -> Self {
        ExactLedgerConfig {
            backlog_capacity: 100_000,
            sweep_every: Duration::from_secs(30),
            sweep_batch: 500,
            settlement_window: Duration::from_millis(10),
            settlement_batch: 256,
        }
    }
}

/// Today's ledger: each hold is one conditional transaction on the database, each settlement
/// and release one more, written by a background worker that retries until the database takes
/// it.
pub struct ExactLedger {
    billing: Arc<dyn BillingRepository>,
    pub(crate) settler: Settler,
    book: Arc<dyn Book>,
    config: ExactLedgerConfig,
}

impl std::fmt::Debug for ExactLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactLedger")
            .field("settler", &self.settler)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Book for Settler {
    fn settle(self: Arc<Self>, finished: Finished, confirm: bool) -> Option<oneshot::Receiver<()>> {
        Settler::settle(&self, finished, None, confirm)
    }

    fn release(self: Arc<Self>, request_id: String, span: tracing::Span) {
        Settler::release(&self, request_id, span);
    }
}

impl ExactLedger {
    /// Whether settlements are written before the call's last byte (a window of zero).
    pub(crate) fn durable(&self) -> bool {
        self.config.settlement_window.is_zero()
    }

    /// Starts the settlement worker and the expiry sweep on the current tokio runtime (the
    /// sweep stops when the ledger is dropped).
    #[must_use]
    pub fn start(billing: Arc<dyn BillingRepository>, config: ExactLedgerConfig) -> Arc<Self> {
        let settler = Settler::start(
            Arc::clone(&billing),
            config.backlog_capacity,
            Batching {
                window: config.settlement_window,
                max: config.settlement_batch,
            },
        );
        let ledger = Arc::new(ExactLedger {
            book: Arc::new(settler.clone()),
            settler,
            billing,
            config,
        });
        tokio::spawn(sweep_forever(Arc::downgrade(&ledger), config.sweep_every));
        ledger
    }
}

/// Runs the expiry sweep every `every` for as long as the ledger lives.
async fn sweep_forever(ledger: Weak<ExactLedger>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        match ledger.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(released = n, "released expired holds"),
            Err(e) => tracing::warn!(error = %e, detail = e.detail(), "hold expiry sweep failed"),
        }
    }
}

#[async_trait]
impl Ledger for ExactLedger {
    async fn reserve(&self, hold: &Hold) -> Result<Result<Reservation, HoldRefusal>, RepoError> {
        // The hold runs on a task of its own: a caller that goes away while it is being
        // written (a client that hangs up) must not leave a committed hold with no reservation
        // to release it (it would lock the money until the expiry sweep). Its reservation is
        // then dropped here, which releases it.
        let billing = Arc::clone(&self.billing);
        let book = Arc::clone(&self.book);
        let durable = self.config.settlement_window.is_zero();
        let hold = hold.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(
            async move {
                let taken = billing.hold(&hold, hold.created_at).await.map(|taken| {
                    taken.map(|()| {
                        metrics::holds(1.0);
                        Reservation::new(hold.request_id.clone(), book, durable)
                    })
                });
                // Refused only when the caller is gone: the reservation in it is dropped.
                let _ = tx.send(taken);
            }
            .in_current_span(),
        );
        rx.await.map_err(|_| RepoError::Failure {
            detail: "the hold task stopped".into(),
        })?
    }

    async fn wait_for_room(&self, within: Duration) -> bool {
        self.settler.wait_for_room(within).await
    }

    fn backlog(&self) -> Backlog {
        Backlog {
            pending: self.settler.pending(),
            failing: self.settler.failing(),
            full: self.settler.is_full(),
            behind: !self.settler.has_room(),
        }
    }

    async fn sweep(&self) -> Result<u64, RepoError> {
        self.billing
            .expire_holds(now(), self.config.sweep_batch)
            .await
    }

    async fn drain(&self, timeout: Duration) -> bool {
        self.settler.drain(timeout).await
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
