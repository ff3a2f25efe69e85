//! The ledger conformance suite: what every [`Ledger`] must do, run against each
//! implementation on every configured database (SQLite always, MariaDB when
//! `TOLLGATE_TEST_MYSQL_URL` is set), with real concurrency where it matters.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use super::*;
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

/// Every implementation under test, built over one store.
fn ledgers(store: &Arc<SeaStore>) -> Vec<(&'static str, Arc<dyn Ledger>)> {
    let billing: Arc<dyn BillingRepository> = store.clone();
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
        self.ledger
            .reserve(&hold(
                &self.id(request),
                self.user,
                self.token,
                amount,
                3600,
            ))
            .await
            .expect("database")
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
        instance: InstanceId::from_random([1; 12]),
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
        assert_eq!(durable, c.name == "per-call", "{}", c.name);
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
    for c in cases("sweep", "1", None).await {
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
