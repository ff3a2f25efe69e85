//! The ledger conformance suite: what every [`Ledger`] must do, run against each
//! implementation on every configured database (SQLite always, MariaDB when
//! `TOLLGATE_TEST_MYSQL_URL` is set), with real concurrency where it matters.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use super::*;
use crate::lease::{LeaseLedger, LeaseLedgerConfig};
use crate::settle::{Delivered, Ticket};
use std::time::Instant;
use tollgate_domain::Quota;
use tollgate_domain::billing::{ReportedUsage, UsageBounds};
use tollgate_domain::billing::{SettleOutcome, Settlement};
use tollgate_domain::cluster::InstanceId;
use tollgate_domain::ids::{ExternalUserId, PlatformId, TokenId, UserId};
use tollgate_domain::logs::LogQueryInput;
use tollgate_domain::pricing::Price;
use tollgate_domain::repository::{LogRepository, UserRepository};
use tollgate_domain::time::UnixTime;
use tollgate_domain::user::User;
use tollgate_storage::{SeaStore, testing};

/// The instance the suite's ledgers run as.
fn instance() -> InstanceId {
    InstanceId::from_random([1; 12])
}

/// A lease ledger over `store` with a settlement window of `window`, running as `instance`.
fn lease_ledger(
    store: &Arc<SeaStore>,
    window: Duration,
    instance: InstanceId,
    config: LeaseLedgerConfig,
) -> Arc<LeaseLedger> {
    let exact = ExactLedger::start(
        store.clone(),
        ExactLedgerConfig {
            settlement_window: window,
            settlement_batch: 3,
            ..ExactLedgerConfig::default()
        },
    );
    LeaseLedger::start(exact, store.clone(), instance, config)
}

/// Every implementation under test, built over one store.
fn ledgers(store: &Arc<SeaStore>) -> Vec<(&'static str, Arc<dyn Ledger>)> {
    let billing: Arc<dyn BillingRepository> = store.clone();
    let lease = |window| {
        lease_ledger(store, window, instance(), LeaseLedgerConfig::default()) as Arc<dyn Ledger>
    };
    let per_call = ExactLedgerConfig {
        settlement_window: Duration::ZERO,
        ..ExactLedgerConfig::default()
    };
    let grouped = ExactLedgerConfig {
        settlement_window: Duration::from_millis(20),
        settlement_batch: 3,
        ..ExactLedgerConfig::default()
    };
    vec![
        (
            "per-call",
            ExactLedger::start(Arc::clone(&billing), per_call) as Arc<dyn Ledger>,
        ),
        (
            "grouped",
            ExactLedger::start(billing, grouped) as Arc<dyn Ledger>,
        ),
        ("lease-per-call", lease(Duration::ZERO)),
        ("lease-grouped", lease(Duration::from_millis(20))),
    ]
}

/// One implementation on one database, with a fresh user (`usd` credited) and key.
struct Case {
    name: &'static str,
    ledger: Arc<dyn Ledger>,
    store: Arc<SeaStore>,
    external_id: String,
    user: UserId,
    token: TokenId,
    /// Whether the key has a cap of its own.
    capped: bool,
}

impl Case {
    /// The user as stored now.
    async fn user(&self) -> User {
        self.store
            .find_user(
                &PlatformId::from_secret("platform-a"),
                &ExternalUserId::parse(&self.external_id).expect("id"),
            )
            .await
            .expect("find")
            .expect("user")
    }

    /// (balance, held) of the user.
    async fn balance(&self) -> (i64, i64) {
        let u = self.user().await;
        (u.quota.get(), u.held_quota.get())
    }

    /// Consume rows logged for the user.
    async fn logged(&self) -> u64 {
        let query = LogQueryInput {
            kind: Some("consume".into()),
            ..Default::default()
        }
        .into_query()
        .expect("query");
        self.store
            .log_page(self.user, &query)
            .await
            .expect("logs")
            .total
    }

    /// A request id of this case's own (request ids are unique per database).
    fn id(&self, request: &str) -> String {
        format!("{}-{request}", self.name)
    }

    async fn reserve(&self, request: &str, amount: i64) -> Result<Reservation, HoldRefusal> {
        let mut h = hold(&self.id(request), self.user, self.token, amount, 3600);
        h.capped_key = self.capped;
        self.ledger.reserve(&h).await.expect("database")
    }

    async fn drained(&self) {
        assert!(
            self.ledger.drain(Duration::from_secs(30)).await,
            "{}: settlements written",
            self.name
        );
    }
}

/// Every implementation on every configured database, each with a fresh user (`who` plus the
/// implementation's name) credited `usd`, and a key capped at `cap`.
async fn cases(who: &str, usd: &str, cap: Option<Quota>) -> Vec<Case> {
    let mut out = Vec::new();
    for store in testing::shared_stores().await {
        for (fill, (name, ledger)) in (9u8..).zip(ledgers(&store)) {
            let external_id = format!("{who}-{name}");
            // Keys are unique per database: each case's key has bytes of its own.
            let (user, token) = testing::funded(&store, &external_id, usd, cap, fill, now()).await;
            out.push(Case {
                name,
                ledger,
                store: store.clone(),
                external_id,
                user,
                token,
                capped: cap.is_some(),
            });
        }
    }
    out
}

fn hold(request_id: &str, user: UserId, token: TokenId, amount: i64, ttl_secs: i64) -> Hold {
    let at = now();
    Hold {
        request_id: request_id.to_owned(),
        user_id: user,
        token_id: token,
        amount: Quota::new(amount),
        created_at: at,
        expires_at: UnixTime::from_secs(at.secs() + ttl_secs),
        instance: instance(),
        capped_key: false,
    }
}

/// A finished call of `prompt` + `completion` tokens at $2/$6 per 1M tokens (so
/// `(prompt × 2 + completion × 6) / 2` quota).
fn finished(
    request_id: &str,
    user: UserId,
    token: TokenId,
    prompt: u64,
    completion: u64,
) -> Finished {
    Ticket {
        request_id: request_id.into(),
        user_id: user,
        token_id: token,
        token_name: "key".into(),
        model: "m".into(),
        price: Price::new(2.into(), 6.into(), 1.into()).expect("price"),
        prompt_estimate: prompt,
        bounds: UsageBounds::for_request(1_000_000, 0, Some(1_000_000), 1),
        is_stream: false,
        started: Instant::now(),
        limit: None,
        channel: None,
        span: tracing::Span::none(),
    }
    .finish(
        Some(ReportedUsage::counts(prompt, completion, 0)),
        Delivered::default(),
    )
}

#[tokio::test]
async fn reserves_only_what_the_balance_covers_and_a_drop_gives_it_back() {
    // $1 = 500,000 quota.
    for c in cases("cover", "1", None).await {
        let first = c.reserve("cover-1", 400_000).await.expect("fits");
        assert_eq!(first.request_id(), c.id("cover-1"));
        assert_eq!(
            c.reserve("cover-2", 200_000).await.err(),
            Some(HoldRefusal::InsufficientUserQuota),
            "{}",
            c.name
        );
        assert_eq!(c.balance().await, (500_000, 400_000), "{}", c.name);
        drop(first);
        c.drained().await;
        assert_eq!(c.balance().await, (500_000, 0), "{}: released", c.name);
        let second = c
            .reserve("cover-3", 200_000)
            .await
            .expect("fits after release");
        drop(second);
        c.drained().await;
        assert_eq!(c.logged().await, 0, "{}: nothing charged", c.name);
        assert_eq!(c.ledger.backlog(), Backlog::default(), "{}", c.name);
    }
}

#[tokio::test]
async fn a_key_cap_is_a_limit_of_its_own() {
    for c in cases("cap", "1", Some(Quota::new(1_000))).await {
        assert_eq!(
            c.reserve("cap-1", 1_001).await.err(),
            Some(HoldRefusal::InsufficientKeyQuota),
            "{}",
            c.name
        );
        let r = c.reserve("cap-2", 1_000).await.expect("fits the cap");
        drop(r);
        c.drained().await;
        assert_eq!(c.balance().await, (500_000, 0), "{}", c.name);
    }
}

#[tokio::test]
async fn a_settlement_charges_exactly_once_and_logs_one_row() {
    for c in cases("settle", "1", None).await {
        let r = c.reserve("settle-1", 10_000).await.expect("fits");
        // (100 × 2 + 50 × 6) / 2 = 250.
        let id = r.request_id().to_owned();
        r.settle(finished(&id, c.user, c.token, 100, 50));
        c.drained().await;
        assert_eq!(c.balance().await, (500_000 - 250, 0), "{}", c.name);
        let u = c.user().await;
        assert_eq!(
            (u.used_quota.get(), u.total_requests),
            (250, 1),
            "{}",
            c.name
        );
        assert_eq!(c.logged().await, 1, "{}", c.name);
    }
}

/// The store, with every hold answered 100 ms after it is written; `written` is told at once.
struct SlowHolds(Arc<SeaStore>, Arc<tokio::sync::Notify>);

#[async_trait]
impl BillingRepository for SlowHolds {
    async fn hold(&self, hold: &Hold, now: UnixTime) -> Result<Result<(), HoldRefusal>, RepoError> {
        let taken = self.0.hold(hold, now).await;
        self.1.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        taken
    }
    async fn settle(&self, s: &Settlement) -> Result<SettleOutcome, RepoError> {
        self.0.settle(s).await
    }
    async fn release(&self, request_id: &str) -> Result<bool, RepoError> {
        self.0.release(request_id).await
    }
    async fn expire_holds(&self, now: UnixTime, limit: u64) -> Result<u64, RepoError> {
        self.0.expire_holds(now, limit).await
    }
}

#[tokio::test]
async fn a_caller_that_goes_away_while_its_hold_is_written_leaves_nothing_held() {
    for store in testing::shared_stores().await {
        let (user, token) =
            testing::funded(&store, "gone-while-holding", "1", None, 7, now()).await;
        let written = Arc::new(tokio::sync::Notify::new());
        let ledger = ExactLedger::start(
            Arc::new(SlowHolds(Arc::clone(&store), Arc::clone(&written))),
            ExactLedgerConfig::default(),
        );
        let h = hold(&format!("gone-{}", now().secs()), user, token, 5_000, 60);
        let find = || async {
            store
                .find_user(
                    &PlatformId::from_secret("platform-a"),
                    &ExternalUserId::parse("gone-while-holding").expect("id"),
                )
                .await
                .expect("find")
                .expect("user")
        };
        // The hold is committed, then the caller gives up before it hears so.
        {
            let reserving = ledger.reserve(&h);
            tokio::pin!(reserving);
            tokio::select! {
                _ = &mut reserving => panic!("answered before the caller gave up"),
                () = written.notified() => {}
            }
        }
        assert_eq!(find().await.held_quota.get(), 5_000, "committed");
        // Given back, without the expiry sweep.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let u = find().await;
            if u.held_quota.get() == 0 {
                assert_eq!(u.quota.get(), 500_000);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still held: {}",
                u.held_quota.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_durable_ledger_has_written_the_settlement_when_settle_returns() {
    for c in cases("durable", "1", None).await {
        let r = c.reserve("durable-1", 10_000).await.expect("fits");
        let id = r.request_id().to_owned();
        let durable = r.durable();
        // Only the per-call setting (window 0) commits before the last byte.
        assert_eq!(durable, c.name.ends_with("per-call"), "{}", c.name);
        let written = r
            .settle(finished(&id, c.user, c.token, 100, 50))
            .written()
            .await;
        assert_eq!(written, durable, "{}", c.name);
        if durable {
            // Not drained: already in the database.
            assert_eq!(c.balance().await, (500_000 - 250, 0), "{}", c.name);
            assert_eq!(c.logged().await, 1, "{}", c.name);
        }
        c.drained().await;
        assert_eq!(c.balance().await, (500_000 - 250, 0), "{}", c.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_concurrent_reservations_exactly_those_that_fit_are_taken() {
    // 500,000 quota covers exactly five holds of 100,000.
    for c in cases("race", "1", None).await {
        let c = Arc::new(c);
        let mut tasks = Vec::new();
        for n in 0..20 {
            let c = Arc::clone(&c);
            tasks.push(tokio::spawn(async move {
                c.reserve(&format!("race-{n}"), 100_000).await.ok()
            }));
        }
        let mut taken = Vec::new();
        for t in tasks {
            taken.extend(t.await.expect("task"));
        }
        assert_eq!(taken.len(), 5, "{}", c.name);
        assert_eq!(c.balance().await, (500_000, 500_000), "{}", c.name);
        for (n, r) in taken.into_iter().enumerate() {
            let id = r.request_id().to_owned();
            if n % 2 == 0 {
                r.settle(finished(&id, c.user, c.token, 1_000, 0));
            }
        }
        c.drained().await;
        // Three settled at (1,000 × 2) / 2 = 1,000 each; two released.
        assert_eq!(c.balance().await, (497_000, 0), "{}", c.name);
        assert_eq!(c.logged().await, 3, "{}", c.name);
    }
}

#[tokio::test]
async fn the_sweep_releases_expired_holds_only() {
    // A lease's calls have no hold rows to expire: a dead instance's leases come back through
    // the registry (tested below).
    for c in cases("sweep", "1", None)
        .await
        .into_iter()
        .filter(|c| !c.name.starts_with("lease"))
    {
        let stale = c
            .ledger
            .reserve(&hold(&c.id("sweep-old"), c.user, c.token, 3_000, -5))
            .await
            .expect("database")
            .expect("fits");
        let live = c.reserve("sweep-new", 2_000).await.expect("fits");
        // A process that died leaves its reservation neither settled nor dropped.
        std::mem::forget(stale);
        assert_eq!(c.ledger.sweep().await.expect("sweep"), 1, "{}", c.name);
        assert_eq!(c.balance().await, (500_000, 2_000), "{}", c.name);
        assert_eq!(c.ledger.sweep().await.expect("sweep"), 0, "{}", c.name);
        drop(live);
        c.drained().await;
        assert_eq!(c.balance().await, (500_000, 0), "{}", c.name);
    }
}

/// (balance, held) of the user `external_id` in `store`.
async fn balance_of(store: &SeaStore, external_id: &str) -> (i64, i64) {
    let u = store
        .find_user(
            &PlatformId::from_secret("platform-a"),
            &ExternalUserId::parse(external_id).expect("id"),
        )
        .await
        .expect("find")
        .expect("user");
    (u.quota.get(), u.held_quota.get())
}

/// The settlement windows every lease test runs with: written before the last byte, and
/// grouped.
const WINDOWS: [Duration; 2] = [Duration::ZERO, Duration::from_millis(20)];

/// Holds of 1,000 for the calls `{who}-{n}`, `n` in `calls`, taken one after the other; each
/// must fit.
async fn take_holds(
    ledger: &LeaseLedger,
    who: &str,
    (user, token): (UserId, TokenId),
    calls: std::ops::Range<u32>,
) -> Vec<Reservation> {
    let mut taken = Vec::new();
    for n in calls {
        let h = hold(&format!("{who}-{n}"), user, token, 1_000, 60);
        taken.push(ledger.reserve(&h).await.expect("db").expect("fits"));
    }
    taken
}

/// Waits until the user `who` has `held` quota held, or fails.
async fn wait_held(store: &SeaStore, who: &str, held: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance_of(store, who).await.1 != held {
        assert!(
            Instant::now() < deadline,
            "held {:?}, waited for {held}",
            balance_of(store, who).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the user `who` has `balance` (quota, held quota), or fails: a grouped window
/// writes settlements after the call is over.
async fn wait_balance(store: &SeaStore, who: &str, balance: (i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while balance_of(store, who).await != balance {
        assert!(
            Instant::now() < deadline,
            "balance {:?}, waited for {balance:?}",
            balance_of(store, who).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Settles every call of `taken` as 100 prompt and 50 completion tokens (250 quota each) and
/// waits for each to be written.
async fn settle_each(taken: Vec<Reservation>, (user, token): (UserId, TokenId)) {
    for r in taken {
        let id = r.request_id().to_owned();
        r.settle(finished(&id, user, token, 100, 50))
            .written()
            .await;
    }
}

#[tokio::test]
async fn calls_on_a_large_balance_take_their_holds_from_one_lease_and_settle_exactly() {
    for store in testing::shared_stores().await {
        for (fill, window) in (40u8..).zip(WINDOWS) {
            let who = format!("lease-share-{fill}");
            // $100 = 50,000,000 quota.
            let (user, token) = testing::funded(&store, &who, "100", None, fill, now()).await;
            let ledger = lease_ledger(&store, window, instance(), LeaseLedgerConfig::default());
            let taken = take_holds(&ledger, &who, (user, token), 0..10).await;
            // One lease of 32 calls' worth holds all ten.
            assert_eq!(ledger.leases(), 1);
            assert_eq!(balance_of(&store, &who).await, (50_000_000, 32_000));
            for (n, r) in taken.into_iter().enumerate() {
                let id = r.request_id().to_owned();
                if n % 2 == 0 {
                    // (100 × 2 + 50 × 6) / 2 = 250 each.
                    r.settle(finished(&id, user, token, 100, 50))
                        .written()
                        .await;
                }
            }
            assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
            assert_eq!(ledger.leases(), 0, "given back at shutdown");
            assert_eq!(balance_of(&store, &who).await, (50_000_000 - 5 * 250, 0));
            let u = store
                .find_user(
                    &PlatformId::from_secret("platform-a"),
                    &ExternalUserId::parse(&who).expect("id"),
                )
                .await
                .expect("find")
                .expect("user");
            assert_eq!((u.used_quota.get(), u.total_requests), (1_250, 5));
        }
    }
}

#[tokio::test]
async fn a_lease_running_low_is_topped_up_in_the_background_and_settles_exactly() {
    for store in testing::shared_stores().await {
        for (fill, window) in (50u8..).zip(WINDOWS) {
            let who = format!("lease-topup-{fill}");
            let (user, token) = testing::funded(&store, &who, "100", None, fill, now()).await;
            let ledger = lease_ledger(&store, window, instance(), LeaseLedgerConfig::default());
            // A slice is 32 calls of 1,000; the 17th leaves less than half of it free.
            let mut taken = take_holds(&ledger, &who, (user, token), 0..17).await;
            wait_held(&store, &who, 64_000).await;
            assert_eq!(ledger.leases(), 1, "the same lease, grown");
            // More calls, from what is free now.
            taken.extend(take_holds(&ledger, &who, (user, token), 17..40).await);
            settle_each(taken, (user, token)).await;
            assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
            assert_eq!(ledger.leases(), 0);
            // 40 calls of 250 each, and nothing held.
            assert_eq!(balance_of(&store, &who).await, (50_000_000 - 40 * 250, 0));
        }
    }
}

/// A lease config whose top-ups always count as in quick succession (the test does not race
/// the clock).
fn boosting() -> LeaseLedgerConfig {
    LeaseLedgerConfig {
        boost_within: Duration::from_secs(600),
        ..LeaseLedgerConfig::default()
    }
}

#[tokio::test]
async fn a_lease_topped_up_again_soon_grows_by_twice_the_slices_and_settles_exactly() {
    for store in testing::shared_stores().await {
        for (fill, window) in (70u8..).zip(WINDOWS) {
            let who = format!("lease-boost-{fill}");
            let (user, token) = testing::funded(&store, &who, "100", None, fill, now()).await;
            let ledger = lease_ledger(&store, window, instance(), boosting());
            // A slice is 32 calls of 1,000: created with one, topped up by one at the 17th call.
            let mut taken = take_holds(&ledger, &who, (user, token), 0..17).await;
            wait_held(&store, &who, 64_000).await;
            // The 49th call leaves less than half a slice free: the next top-up is two slices.
            taken.extend(take_holds(&ledger, &who, (user, token), 17..49).await);
            wait_held(&store, &who, 128_000).await;
            assert_eq!(ledger.leases(), 1, "the same lease, grown");
            settle_each(taken, (user, token)).await;
            assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
            assert_eq!(balance_of(&store, &who).await, (50_000_000 - 49 * 250, 0));
        }
    }
}

#[tokio::test]
async fn a_boosted_top_up_the_headroom_refuses_grows_by_one_slice() {
    for store in testing::shared_stores().await {
        let who = "lease-boost-headroom";
        // $1 = 500,000: free balance must stay at least 4 × a growth.
        let (user, token) = testing::funded(&store, who, "1", None, 72, now()).await;
        let ledger = lease_ledger(&store, WINDOWS[1], instance(), boosting());
        let mut taken = take_holds(&ledger, who, (user, token), 0..17).await;
        wait_held(&store, who, 64_000).await;
        // Two slices: 436,000 free ≥ 4 × 64,000.
        taken.extend(take_holds(&ledger, who, (user, token), 17..49).await);
        wait_held(&store, who, 128_000).await;
        // Four slices would need 512,000 free of 372,000: one slice instead.
        taken.extend(take_holds(&ledger, who, (user, token), 49..97).await);
        wait_held(&store, who, 160_000).await;
        settle_each(taken, (user, token)).await;
        assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
        assert_eq!(balance_of(&store, who).await, (500_000 - 97 * 250, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_leases_of_many_concurrent_calls_exactly_those_that_fit_are_taken() {
    // 500,000 quota covers exactly 500 holds of 1,000: leases while the balance is large,
    // exact holds once it is small, and never one call more.
    for store in testing::shared_stores().await {
        for (fill, window) in (50u8..).zip(WINDOWS) {
            let who = format!("lease-race-{fill}");
            let (user, token) = testing::funded(&store, &who, "1", None, fill, now()).await;
            let ledger = lease_ledger(&store, window, instance(), LeaseLedgerConfig::default());
            let mut tasks = Vec::new();
            for n in 0..600 {
                let ledger = Arc::clone(&ledger);
                let h = hold(&format!("{who}-{n}"), user, token, 1_000, 60);
                tasks.push(tokio::spawn(async move {
                    ledger.reserve(&h).await.expect("db").ok()
                }));
            }
            let mut taken = Vec::new();
            for t in tasks {
                taken.extend(t.await.expect("task"));
            }
            assert_eq!(taken.len(), 500, "{who}");
            assert_eq!(balance_of(&store, &who).await, (500_000, 500_000), "{who}");
            for (n, r) in taken.into_iter().enumerate() {
                let id = r.request_id().to_owned();
                if n % 2 == 0 {
                    r.settle(finished(&id, user, token, 1_000, 0));
                }
            }
            assert!(ledger.drain(Duration::from_secs(60)).await, "drained");
            // 250 settled at 1,000 each; 250 released.
            assert_eq!(balance_of(&store, &who).await, (250_000, 0), "{who}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_leasing_one_balance_never_admit_more_than_it_covers() {
    for store in testing::shared_stores().await {
        let who = "lease-two";
        let (user, token) = testing::funded(&store, who, "1", None, 60, now()).await;
        let ledgers = [
            lease_ledger(&store, WINDOWS[1], instance(), LeaseLedgerConfig::default()),
            lease_ledger(
                &store,
                WINDOWS[1],
                InstanceId::from_random([2; 12]),
                LeaseLedgerConfig::default(),
            ),
        ];
        let mut tasks = Vec::new();
        for n in 0..800 {
            let ledger = Arc::clone(&ledgers[n % 2]);
            let h = hold(&format!("{who}-{n}"), user, token, 1_000, 60);
            tasks.push(tokio::spawn(async move {
                ledger.reserve(&h).await.expect("db").ok()
            }));
        }
        let mut taken = Vec::new();
        for t in tasks {
            taken.extend(t.await.expect("task"));
        }
        // Money in one instance's lease can refuse a call on the other, never admit one
        // too many.
        assert!(taken.len() <= 500, "{} admitted", taken.len());
        assert!(taken.len() >= 400, "only {} admitted", taken.len());
        let admitted = i64::try_from(taken.len()).expect("count");
        let (quota, held) = balance_of(&store, who).await;
        assert_eq!(quota, 500_000);
        assert!(held >= admitted * 1_000 && held <= 500_000, "held {held}");
        for r in taken {
            let id = r.request_id().to_owned();
            r.settle(finished(&id, user, token, 1_000, 0));
        }
        for l in &ledgers {
            assert!(l.drain(Duration::from_secs(60)).await, "drained");
        }
        assert_eq!(
            balance_of(&store, who).await,
            (500_000 - admitted * 1_000, 0)
        );
    }
}

#[tokio::test]
async fn a_small_balance_gives_the_unused_lease_back_for_an_exact_hold() {
    for store in testing::shared_stores().await {
        let who = "lease-small";
        let (user, token) = testing::funded(&store, who, "1", None, 61, now()).await;
        let ledger = lease_ledger(&store, WINDOWS[1], instance(), LeaseLedgerConfig::default());
        let small = ledger
            .reserve(&hold("lease-small-1", user, token, 1_000, 60))
            .await
            .expect("db")
            .expect("fits");
        assert_eq!(balance_of(&store, who).await, (500_000, 32_000), "leased");
        // 480,000 fits only if the lease's unused 31,000 comes back first.
        let big = ledger
            .reserve(&hold("lease-small-2", user, token, 480_000, 60))
            .await
            .expect("db")
            .expect("fits once the lease gave back what it did not use");
        assert_eq!(balance_of(&store, who).await, (500_000, 481_000));
        assert_eq!(
            ledger
                .reserve(&hold("lease-small-3", user, token, 19_001, 60))
                .await
                .expect("db")
                .err(),
            Some(HoldRefusal::InsufficientUserQuota)
        );
        drop(big);
        drop(small);
        assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
        assert_eq!(balance_of(&store, who).await, (500_000, 0));
    }
}

#[tokio::test]
async fn a_small_balance_gets_back_the_lease_s_unused_part_and_its_unfolded_charges() {
    for store in testing::shared_stores().await {
        for (fill, window) in (62u8..).zip(WINDOWS) {
            let who = format!("lease-fold-{fill}");
            let (user, token) = testing::funded(&store, &who, "1", None, fill, now()).await;
            let ledger = lease_ledger(&store, window, instance(), LeaseLedgerConfig::default());
            let first = take_holds(&ledger, &who, (user, token), 0..1).await;
            settle_each(first, (user, token)).await;
            // Charged 250 (once written: a grouped window does not wait); the lease's row
            // still holds it: free 499,750 − 32,000.
            wait_balance(&store, &who, (499_750, 32_000)).await;
            // 499,600 fits only if the lease gives back its unused 31,750 and folds the 250.
            let big = ledger
                .reserve(&hold(&format!("{who}-big"), user, token, 499_600, 60))
                .await
                .expect("db")
                .expect("fits once the lease gave back all it holds");
            assert_eq!(balance_of(&store, &who).await, (499_750, 499_600));
            drop(big);
            assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
            assert_eq!(balance_of(&store, &who).await, (499_750, 0));
        }
    }
}

#[tokio::test]
async fn an_idle_lease_is_given_back_after_its_idle_time() {
    for store in testing::shared_stores().await {
        let who = "lease-idle";
        let (user, token) = testing::funded(&store, who, "100", None, 62, now()).await;
        let config = LeaseLedgerConfig {
            idle: Duration::from_millis(100),
            ..LeaseLedgerConfig::default()
        };
        let ledger = lease_ledger(&store, WINDOWS[1], instance(), config);
        let r = ledger
            .reserve(&hold("lease-idle-1", user, token, 1_000, 60))
            .await
            .expect("db")
            .expect("fits");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A call in flight keeps its lease.
        assert_eq!(ledger.leases(), 1);
        let id = r.request_id().to_owned();
        assert!(
            !r.settle(finished(&id, user, token, 100, 50))
                .written()
                .await
        );
        // The idle lease is given back.
        wait_balance(&store, who, (50_000_000 - 250, 0)).await;
        assert_eq!(ledger.leases(), 0);
    }
}

#[tokio::test]
async fn a_dead_instances_lease_comes_back_through_the_registry_and_its_late_calls_charge_once() {
    use tollgate_domain::cluster::{Instance, InstanceRegistry};
    for store in testing::shared_stores().await {
        let who = "lease-dead";
        let (user, token) = testing::funded(&store, who, "100", None, 63, now()).await;
        let dead = InstanceId::from_random([3; 12]);
        let ledger = lease_ledger(&store, WINDOWS[1], dead, LeaseLedgerConfig::default());
        let r = ledger
            .reserve(&hold("lease-dead-1", user, token, 1_000, 60))
            .await
            .expect("db")
            .expect("fits");
        assert_eq!(balance_of(&store, who).await, (50_000_000, 32_000));
        // Another instance finds the lease's owner unregistered and returns the lease.
        let me = Instance::new(InstanceId::from_random([4; 12]), "other");
        store.heartbeat(&me, now()).await.expect("heartbeat");
        let reaped = store.reap(&me, now()).await.expect("reap");
        assert_eq!(reaped.holds, 1);
        assert_eq!(balance_of(&store, who).await, (50_000_000, 0));
        // The call was not dead after all: its settlement charges, once, and the lease it came
        // from is never used again (see the next test).
        let id = r.request_id().to_owned();
        r.settle(finished(&id, user, token, 100, 50));
        assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
        assert_eq!(balance_of(&store, who).await, (50_000_000 - 250, 0));
        assert_eq!(ledger.leases(), 0);
        let again = ledger
            .reserve(&hold("lease-dead-2", user, token, 1_000, 60))
            .await
            .expect("db")
            .expect("fits");
        assert_eq!(balance_of(&store, who).await, (50_000_000 - 250, 32_000));
        drop(again);
        assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
        assert_eq!(balance_of(&store, who).await, (50_000_000 - 250, 0));
    }
}

#[tokio::test]
async fn a_lease_the_registry_returned_is_dropped_once_a_batch_finds_it_gone() {
    use tollgate_domain::cluster::{Instance, InstanceRegistry};
    for store in testing::shared_stores().await {
        for (fill, window) in (65u8..).zip(WINDOWS) {
            let who = format!("lease-returned-{fill}");
            let (user, token) = testing::funded(&store, &who, "100", None, fill, now()).await;
            let me = InstanceId::from_random([5; 12]);
            // Never given back for being idle during the test: only the batch can drop it.
            let config = LeaseLedgerConfig {
                idle: Duration::from_secs(600),
                ..LeaseLedgerConfig::default()
            };
            let ledger = lease_ledger(&store, window, me, config);
            let first = take_holds(&ledger, &who, (user, token), 0..1).await;
            assert_eq!(balance_of(&store, &who).await, (50_000_000, 32_000));
            // Taken for dead (cut off longer than the registry's timeout, say): another
            // instance returns its lease while it still has a call in flight.
            let other = Instance::new(InstanceId::from_random([6; 12]), "other");
            store.heartbeat(&other, now()).await.expect("heartbeat");
            assert_eq!(store.reap(&other, now()).await.expect("reap").holds, 1);
            assert_eq!(balance_of(&store, &who).await, (50_000_000, 0));
            // The call's settlement is charged, once, and its batch reports the lease gone.
            settle_each(first, (user, token)).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            while ledger.leases() > 0 {
                assert!(
                    Instant::now() < deadline,
                    "the returned lease is still in use"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(balance_of(&store, &who).await, (50_000_000 - 250, 0));
            // The next call takes a new lease, which the database counts.
            let again = take_holds(&ledger, &who, (user, token), 1..2).await;
            assert_eq!(balance_of(&store, &who).await, (50_000_000 - 250, 32_000));
            settle_each(again, (user, token)).await;
            assert!(ledger.drain(Duration::from_secs(30)).await, "drained");
            assert_eq!(balance_of(&store, &who).await, (50_000_000 - 500, 0));
        }
    }
}

#[tokio::test]
async fn a_lease_settlement_retried_after_it_committed_charges_nothing_again() {
    use tollgate_domain::billing::{BatchAttempt, Lease};
    use tollgate_domain::repository::LeaseRepository;
    for store in testing::shared_stores().await {
        let who = "lease-retry";
        let (user, token) = testing::funded(&store, who, "100", None, 64, now()).await;
        let lease = Lease::new(instance(), user, 1);
        assert_eq!(
            store
                .grow_lease(&lease, Quota::new(10_000), Quota::ZERO, 4, true, now())
                .await
                .expect("grow"),
            tollgate_domain::billing::LeaseGrowth::Grown
        );
        let mut s = finished("lease-retry-1", user, token, 100, 50).into_settlement();
        s.lease = Some(lease.id.clone());
        let first = store
            .settle_batch(std::slice::from_ref(&s), BatchAttempt::First)
            .await
            .expect("settle");
        let again = store
            .settle_batch(std::slice::from_ref(&s), BatchAttempt::Retry)
            .await
            .expect("settle");
        assert_eq!(first, vec![SettleOutcome::Settled]);
        assert_eq!(again, vec![SettleOutcome::AlreadyFinished]);
        // Charged once; the lease's row holds the charge until it is folded or ends.
        assert_eq!(balance_of(&store, who).await, (50_000_000 - 250, 10_000));
        assert_eq!(
            store.end_lease(&lease.id).await.expect("end"),
            Some(Quota::new(10_000))
        );
        assert_eq!(store.end_lease(&lease.id).await.expect("end"), None);
        assert_eq!(balance_of(&store, who).await, (50_000_000 - 250, 0));
    }
}
