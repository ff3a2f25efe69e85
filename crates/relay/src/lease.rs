//! [`LeaseLedger`]: the [`Ledger`] that takes calls' holds from *balance leases* in memory
//! instead of writing a hold row per call (issue 9).
//!
//! A lease is a slice of one user's spendable balance that this instance reserved with one
//! conditional statement (the same rule as a call's hold, so instances can never overspend
//! together: the database counts every lease in the user's `held_quota`). A call whose key has
//! no cap of its own takes its hold from the user's lease under a mutex, in nanoseconds. When
//! less than half of its growth is left free, a background task tops it up by a slice worth
//! many such calls, so calls rarely wait for the database; a lease that needs a top-up
//! again within [`LeaseLedgerConfig::boost_within`] grows by twice as many slices as the time
//! before (up to [`LeaseLedgerConfig::max_boost`]), so a busy user's lease is grown a few
//! times a second, not hundreds of times (each growth is a database write); when the lease
//! cannot cover a call, that call's task grows it (one task per user at a time). Either grows
//! only while the user's free balance is several times the growth
//! ([`LeaseLedgerConfig::headroom`]). Below that the user's balance is *small* compared with a
//! call: the lease's unused part is given back and the call takes today's exact per-call hold,
//! so a call is refused only when the balance really cannot cover it (or another instance
//! holds a lease, which is at most a fraction of what was free and comes back after a second
//! idle).
//!
//! Settlements go through the same group-commit worker as [`ExactLedger`]'s: each batch takes
//! its calls' charges out of their users' balances in one transaction and leaves the lease
//! rows alone. A lease's row keeps holding what its calls spent (`unfolded` here) until the
//! lease's next growth or shrink gives it back in the same statement ("folds" it), or the
//! lease ends: a settled lease call changes its user's and key's rows, not a third, and until
//! the fold the user's free balance reads lower by those charges, never higher (docs/relay.md).
//! A lease's in-memory `remaining` changes only when the database has changed it (a batch
//! written, a slice added or given back), so memory and the book of record agree; where a
//! step's outcome is unknown (the database failed mid-commit), memory is kept the smaller — a
//! fold is taken as done, so the row never holds less than memory counts on — and ending the
//! lease — which deletes its row and returns what the *row* holds — settles the difference.
//!
//! A lease ends when it has had no call for [`LeaseLedgerConfig::idle`], at shutdown
//! ([`Ledger::drain`]), or, when its instance dies, through the instance registry (which
//! deletes the row and returns its amount; settlements that arrive later are charged to the
//! balance, once, and their batch reports the lease gone — it reads, never writes, its
//! leases' rows). A lease found gone (by a batch, a growth or a shrink) is never used again.

use crate::ledger::{Backlog, Book, ExactLedger, Ledger, Reservation};
use crate::metrics;
use crate::settle::{Finished, Funded, Settler, now};
use async_trait::async_trait;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tollgate_domain::billing::{Hold, HoldRefusal, Lease, LeaseGrowth, LeaseId, SettleOutcome};
use tollgate_domain::cluster::InstanceId;
use tollgate_domain::ids::UserId;
use tollgate_domain::repository::LeaseRepository;
use tollgate_domain::{Quota, RepoError};
use tracing::Instrument;

/// Settings of [`LeaseLedger`].
#[derive(Debug, Clone, Copy)]
pub struct LeaseLedgerConfig {
    /// A lease grows by enough for this many calls like the one that asked.
    pub slice_calls: u32,
    /// A lease grows only while the user's free balance is at least this many times the
    /// growth; below, calls take exact per-call holds.
    pub headroom: u32,
    /// A lease with no call for this long is given back.
    pub idle: Duration,
    /// A lease topped up again within this time grows by twice as many slices as the time
    /// before: its calls spend a slice faster than that. Each four times this without a top-up
    /// halves the number again.
    pub boost_within: Duration,
    /// The most slices a lease grows by at once. The headroom rule applies to the whole
    /// growth, so a user whose balance is not several times that gets plain slices.
    pub max_boost: u32,
}

impl Default for LeaseLedgerConfig {
    fn default() -> Self {
        LeaseLedgerConfig {
            slice_calls: 32,
            headroom: 4,
            idle: Duration::from_secs(1),
            boost_within: Duration::from_millis(250),
            // 2,048 calls' holds with 32-call slices: a fraction of a second of one busy
            // user's calls on one instance.
            max_boost: 64,
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every update below is
/// a few integer assignments that cannot panic half-way).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A lease in use.
#[derive(Debug)]
struct Open {
    lease: Arc<Lease>,
    /// What the lease can still cover: what its row holds, as far as this instance knows, less
    /// `unfolded`.
    remaining: i64,
    /// Charges of its calls written (they left the user's balance) and still held by its row:
    /// given back with its next growth or shrink ("folded"), or when it ends.
    unfolded: i64,
    /// Held by calls in flight (their settlements not yet written).
    reserved: i64,
    /// Calls in flight.
    calls: usize,
    last_used: Instant,
    /// A top-up was refused (the balance is small): calls that do not fit take the slow path,
    /// which gives the lease back for exact holds.
    no_top_up: bool,
    /// The lease grew by this many slices the last time it was topped up (see
    /// [`LeaseLedgerConfig::next_boost`]).
    boost: u32,
    /// When it was last topped up.
    topped_at: Option<Instant>,
}

impl Open {
    /// What calls can still take from it.
    fn free(&self) -> i64 {
        self.remaining - self.reserved
    }

    /// `fold` of its charges went with a growth that answered `grown`: they are no longer to
    /// fold unless it was refused (which changed nothing). An error counts as folded — it may
    /// have failed at COMMIT, and folding twice could give back more than the row holds for
    /// calls; a fold that did not happen is given back when the lease ends.
    fn folded_with(&mut self, fold: i64, grown: &Result<LeaseGrowth, RepoError>) {
        if !matches!(grown, Ok(LeaseGrowth::Refused)) {
            self.unfolded -= fold;
        }
    }

    /// Whether a top-up is due at `now`: less than half of a growth is free — `slice` times
    /// the last growth's slices, halved for each calm period since (a user whose calls slowed
    /// down does not keep a large lease topped up early) — and the last top-up was not
    /// refused.
    fn wants_top_up(&self, slice: i64, config: &LeaseLedgerConfig, now: Instant) -> bool {
        let since = self.topped_at.map(|t| now.saturating_duration_since(t));
        let boost = decayed(self.boost, since, config.calm());
        !self.no_top_up && self.free() < slice.saturating_mul(i64::from(boost)) / 2
    }
}

impl LeaseLedgerConfig {
    /// Each such period without a top-up halves the slices a lease grows by, down to one.
    fn calm(&self) -> Duration {
        self.boost_within.saturating_mul(4)
    }

    /// How many slices a lease grows by next, given its `boost` last time and the time since
    /// that top-up (`None`: this is its first).
    fn next_boost(&self, boost: u32, since_last: Option<Duration>) -> u32 {
        let max = self.max_boost.max(1);
        match since_last {
            Some(t) if t < self.boost_within => boost.saturating_mul(2).min(max),
            since => decayed(boost, since, self.calm()).min(max),
        }
    }
}

/// `boost` halved once for every `calm` in `since` (at least one).
fn decayed(boost: u32, since: Option<Duration>, calm: Duration) -> u32 {
    let periods = since.map_or(0, |t| t.as_millis() / calm.as_millis().max(1));
    boost
        .checked_shr(u32::try_from(periods).unwrap_or(u32::MAX))
        .unwrap_or(0)
        .max(1)
}

/// One user's lease (at most one at a time) and the lock that lets one task at a time grow it.
#[derive(Debug)]
struct UserLeases {
    refill: tokio::sync::Mutex<()>,
    /// A top-up task runs for this user.
    topping: AtomicBool,
    open: Mutex<Option<Open>>,
}

/// What the ledger's tasks share.
struct Core {
    repo: Arc<dyn LeaseRepository>,
    settler: Settler,
    instance: InstanceId,
    config: LeaseLedgerConfig,
    durable: bool,
    users: Mutex<FxHashMap<UserId, Arc<UserLeases>>>,
    generation: AtomicU64,
    /// Leases taken out of use whose rows could not be ended yet (the database failed).
    unended: Mutex<Vec<Arc<Lease>>>,
    /// Settlements of lease calls handed to the worker and not written yet.
    unwritten: AtomicUsize,
    /// When the worker last wrote one, or, if later, when the first of those not yet written
    /// was handed over.
    last_written: Mutex<Instant>,
    /// When the database last answered (a write of the ledger's or a ping).
    reached_at: Mutex<Instant>,
}

/// Settlements waiting this long with none written mean the database is not taking them; a
/// database that has not answered for [`UNREACHED`] is taken for down. Either way calls stop
/// taking holds from leases (they take exact holds, which fail fast with 503) until it answers
/// again, so an outage never runs up charges that cannot be written, and a lease is never used
/// while its instance may look dead to the others.
const STALLED: Duration = Duration::from_millis(500);
/// See [`STALLED`].
const UNREACHED: Duration = Duration::from_millis(750);
/// How often the database is pinged while leases are open.
const PING_EVERY: Duration = Duration::from_millis(250);

/// One call's hold taken from a lease.
struct LeaseCall {
    core: Arc<Core>,
    user: Arc<UserLeases>,
    lease: Arc<Lease>,
    amount: i64,
}

impl LeaseCall {
    /// The call is over: its hold leaves the lease, and `charged` (once written) what the lease
    /// can cover, becoming a charge to fold; a lease found gone is taken out of use.
    fn done(&self, charged: Option<(i64, SettleOutcome)>) {
        let mut open = lock(&self.user.open);
        let Some(o) = open.as_mut().filter(|o| o.lease.id == self.lease.id) else {
            return;
        };
        o.reserved -= self.amount;
        o.calls = o.calls.saturating_sub(1);
        match charged {
            Some((_, SettleOutcome::SettledAfterExpiry)) => *open = None,
            Some((charge, _)) => {
                // What the lease covers of the charge (a call can cost more than its hold: the
                // rest is charged to the balance alone and was never in the row).
                let covered = charge.clamp(0, o.remaining.max(0));
                o.remaining -= covered;
                o.unfolded += covered;
            }
            None => {}
        }
    }
}

impl Book for LeaseCall {
    fn settle(self: Arc<Self>, finished: Finished, confirm: bool) -> Option<oneshot::Receiver<()>> {
        if self.core.unwritten.fetch_add(1, Ordering::AcqRel) == 0 {
            // Waiting from now: an old write says nothing about this settlement.
            *lock(&self.core.last_written) = Instant::now();
        }
        let core = Arc::clone(&self.core);
        core.settler
            .settle(finished, Some(self as Arc<dyn Funded>), confirm)
    }

    fn release(self: Arc<Self>, _request_id: String, _span: tracing::Span) {
        metrics::holds(-1.0);
        self.done(None);
    }
}

impl Funded for LeaseCall {
    fn lease(&self) -> &LeaseId {
        &self.lease.id
    }

    fn finished(&self, written: Option<(i64, SettleOutcome)>) {
        self.core.unwritten.fetch_sub(1, Ordering::AcqRel);
        // The settler counts the end of the holds it wrote.
        if written.is_none() {
            metrics::holds(-1.0);
        } else {
            self.core.reached();
        }
        self.done(written);
    }
}

impl Core {
    fn user(&self, id: UserId) -> Arc<UserLeases> {
        Arc::clone(lock(&self.users).entry(id).or_insert_with(|| {
            Arc::new(UserLeases {
                refill: tokio::sync::Mutex::new(()),
                topping: AtomicBool::new(false),
                open: Mutex::new(None),
            })
        }))
    }

    /// Whether settlements are not being written or the database does not answer (it is down
    /// or stuck).
    fn stalled(&self) -> bool {
        self.settling_stalled() || lock(&self.reached_at).elapsed() >= UNREACHED
    }

    /// Whether settlements are failing or waiting with none written.
    fn settling_stalled(&self) -> bool {
        self.settler.failing() > 0
            || (self.unwritten.load(Ordering::Acquire) > 0
                && lock(&self.last_written).elapsed() >= STALLED)
    }

    /// The database just answered.
    fn reached(&self) {
        let at = Instant::now();
        *lock(&self.last_written) = at;
        *lock(&self.reached_at) = at;
    }

    /// Takes `hold` from the user's lease if it covers it (and settlements are being written).
    fn take(self: &Arc<Self>, user: &Arc<UserLeases>, hold: &Hold) -> Option<Reservation> {
        if self.stalled() {
            return None;
        }
        let amount = hold.amount.get();
        let slice = self.slice(amount);
        let (lease, low) = {
            let mut open = lock(&user.open);
            let o = open.as_mut()?;
            if o.free() < amount {
                return None;
            }
            o.reserved += amount;
            o.calls += 1;
            let now = Instant::now();
            o.last_used = now;
            (
                Arc::clone(&o.lease),
                o.wants_top_up(slice, &self.config, now),
            )
        };
        if low && !user.topping.swap(true, Ordering::AcqRel) {
            let (core, user) = (Arc::clone(self), Arc::clone(user));
            tokio::spawn(async move { core.top_up(&user, slice).await }.in_current_span());
        }
        metrics::holds(1.0);
        let call = LeaseCall {
            core: Arc::clone(self),
            user: Arc::clone(user),
            lease,
            amount,
        };
        Some(Reservation::new(
            hold.request_id.clone(),
            Arc::new(call),
            self.durable,
        ))
    }

    /// What a lease grows by for calls holding `amount`.
    fn slice(&self, amount: i64) -> i64 {
        amount.saturating_mul(i64::from(self.config.slice_calls.max(1)))
    }

    /// Grows `lease`'s row by `amount` under the headroom rule and folds `fold` of its
    /// charges (`create`: the row is new); a database that answered counts as reached.
    async fn grow_row(
        &self,
        lease: &Lease,
        amount: i64,
        fold: i64,
        create: bool,
    ) -> Result<LeaseGrowth, RepoError> {
        let growth = self
            .repo
            .grow_lease(
                lease,
                Quota::new(amount),
                Quota::new(fold),
                self.config.headroom,
                create,
                now(),
            )
            .await?;
        self.reached();
        Ok(growth)
    }

    /// Grows the user's lease in the background while less than half of its slice (`slice`,
    /// times its boost) is free, so calls find it covered instead of waiting for the database
    /// (one task per user; the slow path below still serves a call the lease cannot cover).
    /// A boosted growth the headroom rule refuses is tried again as one slice before the lease
    /// is marked as not growing.
    async fn top_up(self: Arc<Self>, user: &Arc<UserLeases>, slice: i64) {
        let one = user.refill.lock().await;
        // The boost changes only with a growth that happened (not while the database is away).
        let due = if self.stalled() {
            None
        } else {
            let now = Instant::now();
            lock(&user.open).as_ref().and_then(|o| {
                o.wants_top_up(slice, &self.config, now).then(|| {
                    let since = o.topped_at.map(|t| now.saturating_duration_since(t));
                    (
                        Arc::clone(&o.lease),
                        self.config.next_boost(o.boost, since),
                        o.unfolded,
                    )
                })
            })
        };
        if let Some((lease, mut boost, fold)) = due {
            let mut growth = slice.saturating_mul(i64::from(boost));
            let mut grown = self.grow_row(&lease, growth, fold, false).await;
            if boost > 1 && matches!(grown, Ok(LeaseGrowth::Refused)) {
                growth = slice;
                grown = self.grow_row(&lease, growth, fold, false).await;
                // Half of the refused boost next time in quick succession.
                boost = (boost / 2).max(1);
            }
            let mut open = lock(&user.open);
            if let Some(o) = open.as_mut().filter(|o| o.lease.id == lease.id) {
                o.folded_with(fold, &grown);
            }
            match (grown, open.as_mut().filter(|o| o.lease.id == lease.id)) {
                (Ok(LeaseGrowth::Grown), Some(o)) => {
                    o.remaining += growth;
                    o.boost = boost;
                    o.topped_at = Some(Instant::now());
                }
                (Ok(LeaseGrowth::Refused), Some(o)) => {
                    o.no_top_up = true;
                    o.boost = 1;
                }
                (Ok(LeaseGrowth::Lost), Some(_)) => *open = None,
                // Grown, but the lease was ended meanwhile: ending its row returned this growth
                // too.
                (Ok(_), None) => {}
                // The database failed, perhaps at COMMIT (the fold is taken as done, see
                // `Open::folded_with`): the slow path tries again.
                (Err(e), _) => {
                    tracing::debug!(error = %e, lease = %lease.id, "topping up a lease failed");
                }
            }
        }
        drop(one);
        user.topping.store(false, Ordering::Release);
    }

    /// The slow path (one task per user at a time): grow the lease and take from it, or, when
    /// the balance is small, give the lease's unused part back and take an exact hold.
    async fn refill(
        self: &Arc<Self>,
        exact: &ExactLedger,
        user: &Arc<UserLeases>,
        hold: &Hold,
    ) -> Result<Result<Reservation, HoldRefusal>, RepoError> {
        let amount = hold.amount.get();
        {
            let _one = user.refill.lock().await;
            // A lease found gone, then a fresh one: at most a few rounds.
            for _ in 0..3 {
                // (A database not heard from lately is tried by growing the lease below.)
                if self.settling_stalled() {
                    break;
                }
                if let Some(r) = self.take(user, hold) {
                    return Ok(Ok(r));
                }
                let (lease, create, free, fold) = match lock(&user.open).as_ref() {
                    Some(o) => (Arc::clone(&o.lease), false, o.free(), o.unfolded),
                    None => {
                        let n = self.generation.fetch_add(1, Ordering::Relaxed);
                        let lease = Lease::new(self.instance.clone(), hold.user_id, n);
                        (Arc::new(lease), true, 0, 0)
                    }
                };
                let grow = self.slice(amount).max(amount.saturating_sub(free.max(0)));
                let growth = self.grow_row(&lease, grow, fold, create).await;
                let mut open = lock(&user.open);
                if let Some(o) = open.as_mut().filter(|o| o.lease.id == lease.id) {
                    o.folded_with(fold, &growth);
                }
                match (growth?, open.as_mut()) {
                    (LeaseGrowth::Grown, Some(o)) if o.lease.id == lease.id => {
                        o.remaining += grow;
                        o.no_top_up = false;
                    }
                    (LeaseGrowth::Grown, None) if create => {
                        *open = Some(Open {
                            lease,
                            remaining: grow,
                            unfolded: 0,
                            reserved: 0,
                            calls: 0,
                            last_used: Instant::now(),
                            no_top_up: false,
                            boost: 1,
                            topped_at: None,
                        });
                    }
                    // Grown, but the lease was ended meanwhile (idle): ending its row
                    // returned this growth too.
                    (LeaseGrowth::Grown, _) => {}
                    (LeaseGrowth::Lost, Some(o)) if o.lease.id == lease.id => *open = None,
                    (LeaseGrowth::Lost, _) => {}
                    (LeaseGrowth::Refused, _) => break,
                }
            }
            // The balance is small compared with the call: what the lease does not use goes
            // back first, with the charges it still holds, so it can cover this call's exact
            // hold. Memory gives them up first: a shrink whose outcome is unknown is taken as
            // done (ending the lease returns the rest).
            let unused = {
                let mut open = lock(&user.open);
                open.as_mut().and_then(|o| {
                    let unused = o.free().max(0);
                    let back = unused.saturating_add(o.unfolded);
                    (back > 0).then(|| {
                        o.remaining -= unused;
                        o.unfolded = 0;
                        (Arc::clone(&o.lease), back)
                    })
                })
            };
            if let Some((lease, unused)) = unused {
                match self.repo.shrink_lease(&lease.id, Quota::new(unused)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let mut open = lock(&user.open);
                        if open.as_ref().is_some_and(|o| o.lease.id == lease.id) {
                            *open = None;
                        }
                    }
                    // Memory already holds less than the row: ending the lease returns it.
                    Err(e) => {
                        tracing::warn!(error = %e, lease = %lease.id, "giving back part of a lease failed")
                    }
                }
            }
        }
        exact.reserve(hold).await
    }

    /// Takes out of use the leases idle for `idle` (all unused ones when `idle` is zero) and
    /// ends their rows; whether every lease taken out of use is ended.
    async fn end_idle(&self, idle: Duration) -> bool {
        let mut ending: Vec<Arc<Lease>> = std::mem::take(&mut *lock(&self.unended));
        {
            let mut users = lock(&self.users);
            users.retain(|_, u| {
                let mut open = lock(&u.open);
                if let Some(o) = open.as_ref()
                    && o.calls == 0
                    && o.last_used.elapsed() >= idle
                {
                    ending.push(Arc::clone(&o.lease));
                    *open = None;
                }
                // A user with no lease and nobody else holding the entry is forgotten.
                open.is_some() || Arc::strong_count(u) > 1
            });
        }
        let mut all = true;
        for lease in ending {
            match self.repo.end_lease(&lease.id).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %lease.id, "ending a lease failed; retrying");
                    lock(&self.unended).push(lease);
                    all = false;
                }
            }
        }
        all
    }
}

/// The ledger that takes holds from balance leases (see the module documentation); keys with a
/// cap of their own, and users whose balance is small, go through its [`ExactLedger`].
pub struct LeaseLedger {
    exact: Arc<ExactLedger>,
    core: Arc<Core>,
}

impl std::fmt::Debug for LeaseLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLedger")
            .field("exact", &self.exact)
            .field("config", &self.core.config)
            .field("users", &lock(&self.core.users).len())
            .finish_non_exhaustive()
    }
}

impl LeaseLedger {
    /// Builds the ledger over `exact` (whose settlement worker writes every settlement),
    /// leasing as `instance`; starts the task that gives idle leases back.
    #[must_use]
    pub fn start(
        exact: Arc<ExactLedger>,
        repo: Arc<dyn LeaseRepository>,
        instance: InstanceId,
        config: LeaseLedgerConfig,
    ) -> Arc<Self> {
        let core = Arc::new(Core {
            repo,
            settler: exact.settler.clone(),
            instance,
            config,
            durable: exact.durable(),
            users: Mutex::new(FxHashMap::default()),
            generation: AtomicU64::new(1),
            unended: Mutex::new(Vec::new()),
            unwritten: AtomicUsize::new(0),
            last_written: Mutex::new(Instant::now()),
            reached_at: Mutex::new(Instant::now()),
        });
        tokio::spawn(end_idle_forever(Arc::downgrade(&core)));
        tokio::spawn(ping_forever(Arc::downgrade(&core)));
        Arc::new(LeaseLedger { exact, core })
    }

    /// Leases in use (for tests and the debug output).
    #[must_use]
    pub fn leases(&self) -> usize {
        lock(&self.core.users)
            .values()
            .filter(|u| lock(&u.open).is_some())
            .count()
    }
}

/// Pings the database every [`PING_EVERY`] while leases are open, for as long as the ledger
/// lives (see [`STALLED`]).
async fn ping_forever(core: Weak<Core>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(core) = core.upgrade() else { return };
        if lock(&core.users).is_empty() {
            continue;
        }
        if core.repo.ping_leases().await.is_ok() {
            *lock(&core.reached_at) = Instant::now();
        }
    }
}

/// Gives idle leases back every half `idle` for as long as the ledger lives.
async fn end_idle_forever(core: Weak<Core>) {
    let Some(every) = core
        .upgrade()
        .map(|c| (c.config.idle / 2).max(Duration::from_millis(50)))
    else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(core) = core.upgrade() else { return };
        core.end_idle(core.config.idle).await;
    }
}

#[async_trait]
impl Ledger for LeaseLedger {
    async fn reserve(&self, hold: &Hold) -> Result<Result<Reservation, HoldRefusal>, RepoError> {
        if hold.capped_key {
            return self.exact.reserve(hold).await;
        }
        let user = self.core.user(hold.user_id);
        if let Some(r) = self.core.take(&user, hold) {
            return Ok(Ok(r));
        }
        // On a task of its own: a caller that goes away mid-way must not leave a lease grown
        // in the database but not in memory, nor an exact hold with no reservation.
        let core = Arc::clone(&self.core);
        let exact = Arc::clone(&self.exact);
        let hold = hold.clone();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(
            async move {
                let _ = tx.send(core.refill(&exact, &user, &hold).await);
            }
            .in_current_span(),
        );
        rx.await.map_err(|_| RepoError::Failure {
            detail: "the lease task stopped".into(),
        })?
    }

    fn backlog(&self) -> Backlog {
        self.exact.backlog()
    }

    async fn wait_for_room(&self, within: Duration) -> bool {
        self.exact.wait_for_room(within).await
    }

    async fn sweep(&self) -> Result<u64, RepoError> {
        self.exact.sweep().await
    }

    async fn drain(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        let written = self.exact.drain(timeout).await;
        // Every settlement is written: what the leases still hold goes back.
        let ended = tokio::time::timeout(
            timeout.saturating_sub(started.elapsed()),
            self.core.end_idle(Duration::ZERO),
        )
        .await
        .unwrap_or(false);
        written && ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_ups_in_quick_succession_double_the_growth_up_to_the_limit_and_calm_ones_halve_it() {
        let config = LeaseLedgerConfig::default();
        let quick = Some(Duration::from_millis(10));
        assert_eq!(config.next_boost(1, None), 1, "a first top-up is one slice");
        assert_eq!(config.next_boost(1, quick), 2);
        assert_eq!(config.next_boost(16, quick), 32);
        assert_eq!(config.next_boost(64, quick), 64, "capped");
        assert_eq!(config.next_boost(8, Some(Duration::from_millis(500))), 8);
        assert_eq!(config.next_boost(8, Some(config.calm())), 4);
        assert_eq!(
            config.next_boost(64, Some(3 * config.calm())),
            8,
            "halved each calm period"
        );
        assert_eq!(config.next_boost(64, Some(Duration::from_secs(3600))), 1);
        assert_eq!(config.next_boost(1, Some(Duration::from_secs(60))), 1);
        let off = LeaseLedgerConfig {
            max_boost: 0,
            ..config
        };
        assert_eq!(
            off.next_boost(1, quick),
            1,
            "no boost when the limit is one or less"
        );
    }
}
